#include "fwd_args.h"

#include <cmath>
#include <cstdint>
#include <string>

#include "../kernels/fwd_config.cuh"
#include "status.h"

namespace fdma {

namespace {

constexpr float kLog2e = 1.4426950408889634f;

std::string str(long long v) { return std::to_string(v); }

// Byte range a tensor may touch, for the overlap checks.
struct Extent {
    const char* begin = nullptr;
    const char* end = nullptr;
    const char* name = "";
    bool written = false;
};

bool overlaps(const Extent& a, const Extent& b) {
    return a.begin != nullptr && b.begin != nullptr && a.begin < b.end && b.begin < a.end;
}

// Last element offset + 1 of a tensor with the given sizes and strides (elements), or -1 on
// int64 overflow.
long long span_elements(const long long* sizes, const long long* strides, int rank, long long inner) {
    long long total = inner;
    for (int i = 0; i < rank; ++i) {
        long long step;
        if (__builtin_mul_overflow(sizes[i] - 1, strides[i], &step) || __builtin_add_overflow(total, step, &total))
            return -1;
    }
    return total;
}

fdma_status check_device_pointer(const void* ptr, const char* name) {
    cudaPointerAttributes attr{};
    const cudaError_t err = cudaPointerGetAttributes(&attr, ptr);
    if (err != cudaSuccess) {
        cudaGetLastError();  // not sticky: clear it so the next call starts clean
        return fail_cuda(err, (std::string("querying the memory type of ") + name).c_str());
    }
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
        return fail(FDMA_STATUS_INVALID_ARGUMENT,
                    std::string(name) + " is not device memory (" +
                        (attr.type == cudaMemoryTypeHost ? "pinned host memory" : "host memory") +
                        "); a device pointer is required");
    int device = -1;
    if (cudaGetDevice(&device) != cudaSuccess) return fail_cuda(cudaGetLastError(), "cudaGetDevice");
    if (attr.device != device)
        return fail(FDMA_STATUS_INVALID_ARGUMENT, std::string(name) + " lives on device " + str(attr.device) +
                                                      " but the current device is " + str(device));
    return FDMA_STATUS_SUCCESS;
}

struct TensorCheck {
    const char* name;
    long long sizes[3];  // batch, seq, heads
    bool is_output;
};

fdma_status check_tensor(const fdma_tensor& t, const TensorCheck& c, int head_dim, Extent& extent) {
    const std::string name = std::string("params.") + c.name;
    if (t.data == nullptr) return fail(FDMA_STATUS_INVALID_ARGUMENT, name + ".data is null");
    if (reinterpret_cast<std::uintptr_t>(t.data) % 16 != 0)
        return fail(FDMA_STATUS_MISALIGNED, name + ".data must be 16-byte aligned; got address " +
                                                str(static_cast<long long>(reinterpret_cast<std::uintptr_t>(t.data))));
    const long long strides[3] = {t.stride_batch, t.stride_seq, t.stride_head};
    const char* stride_names[3] = {"stride_batch", "stride_seq", "stride_head"};
    for (int i = 0; i < 3; ++i) {
        if (c.sizes[i] == 1) continue;  // a stride of a size-1 dimension is never used
        if (strides[i] < 0 || (c.is_output && strides[i] == 0))
            return fail(FDMA_STATUS_INVALID_ARGUMENT, name + "." + stride_names[i] + " must be " +
                                                          (c.is_output ? "> 0" : ">= 0") + "; got " + str(strides[i]));
        if (strides[i] % 8 != 0)
            return fail(FDMA_STATUS_MISALIGNED, name + "." + stride_names[i] +
                                                    " must be a multiple of 8 elements (16 bytes); got " + str(strides[i]));
    }
    const long long elements = span_elements(c.sizes, strides, 3, head_dim);
    if (elements < 0 || elements > (1LL << 62) / 2)
        return fail(FDMA_STATUS_INVALID_ARGUMENT, name + ": the sizes and strides address more than 2^62 bytes");
    if (c.is_output) {
        // The output must not write one element twice: each dimension, in order of stride, has
        // to step past everything the smaller ones span.
        long long order[3][2];
        int n = 0;
        for (int i = 0; i < 3; ++i)
            if (c.sizes[i] > 1) order[n][0] = strides[i], order[n][1] = c.sizes[i], ++n;
        for (int i = 0; i < n; ++i)
            for (int j = i + 1; j < n; ++j)
                if (order[j][0] < order[i][0]) std::swap(order[i], order[j]);
        long long covered = head_dim;
        for (int i = 0; i < n; ++i) {
            if (order[i][0] < covered)
                return fail(FDMA_STATUS_INVALID_ARGUMENT,
                            name + ": strides (" + str(t.stride_batch) + ", " + str(t.stride_seq) + ", " +
                                str(t.stride_head) + ") make output elements overlap");
            covered = order[i][0] * order[i][1];
        }
    }
    extent = {static_cast<const char*>(t.data), static_cast<const char*>(t.data) + 2 * elements, c.name, c.is_output};
    return check_device_pointer(t.data, (name + ".data").c_str());
}

fdma_status check_broadcast(const fdma_broadcast_tensor& t, const char* field, const fdma_fwd_params& p,
                            bool is_bias, BroadcastOperand& out, Extent& extent) {
    out = BroadcastOperand{};
    if (t.data == nullptr) return FDMA_STATUS_SUCCESS;
    const std::string name = std::string("params.") + field;
    if (t.batch != 1 && t.batch != p.batch)
        return fail(FDMA_STATUS_INVALID_ARGUMENT,
                    name + ".batch must be 1 or batch (" + str(p.batch) + "); got " + str(t.batch));
    if (t.heads != 1 && t.heads != p.heads_kv && t.heads != p.heads_q)
        return fail(FDMA_STATUS_INVALID_ARGUMENT, name + ".heads must be 1, heads_kv (" + str(p.heads_kv) +
                                                      ") or heads_q (" + str(p.heads_q) + "); got " + str(t.heads));
    if (t.rows != 1 && t.rows != p.seqlen_q)
        return fail(FDMA_STATUS_INVALID_ARGUMENT,
                    name + ".rows must be 1 or seqlen_q (" + str(p.seqlen_q) + "); got " + str(t.rows));
    int element_size = 1;
    if (is_bias) {
        if (t.dtype != FDMA_DTYPE_FLOAT16 && t.dtype != FDMA_DTYPE_BFLOAT16 && t.dtype != FDMA_DTYPE_FLOAT32)
            return fail(FDMA_STATUS_INVALID_ARGUMENT,
                        name + ".dtype must be FLOAT16 (1), BFLOAT16 (2) or FLOAT32 (3); got " + str(t.dtype));
        element_size = t.dtype == FDMA_DTYPE_FLOAT32 ? 4 : 2;
        if (reinterpret_cast<std::uintptr_t>(t.data) % element_size != 0)
            return fail(FDMA_STATUS_MISALIGNED, name + ".data must be aligned to its " + str(element_size) +
                                                    "-byte element");
    }
    const long long sizes[3] = {t.batch, t.heads, t.rows};
    const long long strides[3] = {t.batch == 1 ? 0 : t.stride_batch, t.heads == 1 ? 0 : t.stride_head,
                                  t.rows == 1 ? 0 : t.stride_row};
    const char* stride_names[3] = {"stride_batch", "stride_head", "stride_row"};
    for (int i = 0; i < 3; ++i)
        if (strides[i] < 0)
            return fail(FDMA_STATUS_INVALID_ARGUMENT, name + "." + stride_names[i] + " must be >= 0; got " + str(strides[i]));
    const long long elements = span_elements(sizes, strides, 3, p.seqlen_k);
    if (elements < 0 || elements > (1LL << 62) / element_size)
        return fail(FDMA_STATUS_INVALID_ARGUMENT, name + ": the sizes and strides address more than 2^62 bytes");

    out.data = t.data;
    out.stride_batch = strides[0];
    out.stride_head = strides[1];
    out.stride_row = strides[2];
    // heads == heads_q: one per query head; heads == heads_kv: one per group of query heads.
    out.head_group = (t.heads == p.heads_q || t.heads == 1) ? 1 : p.heads_q / p.heads_kv;
    out.batches = t.batch;
    out.heads = t.heads;
    out.type = is_bias ? t.dtype : 0;
    extent = {static_cast<const char*>(t.data), static_cast<const char*>(t.data) + element_size * elements, field};
    return check_device_pointer(t.data, (name + ".data").c_str());
}

fdma_status check_shape(const fdma_fwd_params* in) {
    if (in == nullptr) return fail(FDMA_STATUS_INVALID_ARGUMENT, "params is null");
    const fdma_fwd_params& p = *in;
    if (p.struct_size != sizeof(fdma_fwd_params))
        return fail(FDMA_STATUS_STRUCT_SIZE, "params.struct_size is " + str(p.struct_size) + "; this library (ABI " +
                                                 str(FDMA_ABI_VERSION) + ") expects " + str(sizeof(fdma_fwd_params)));
    for (uint64_t r : p.reserved)
        if (r != 0) return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.reserved must be zero");
    if (p.dtype == FDMA_DTYPE_FLOAT32)
        return fail(FDMA_STATUS_UNSUPPORTED, "params.dtype FLOAT32 is not supported for q, k, v and out; "
                                             "expected FLOAT16 (1) or BFLOAT16 (2)");
    if (p.dtype != FDMA_DTYPE_FLOAT16 && p.dtype != FDMA_DTYPE_BFLOAT16)
        return fail(FDMA_STATUS_INVALID_ARGUMENT,
                    "params.dtype must be FLOAT16 (1) or BFLOAT16 (2); got " + str(p.dtype));

    const struct { const char* name; int value; } sizes[] = {
        {"batch", p.batch},       {"seqlen_q", p.seqlen_q}, {"seqlen_k", p.seqlen_k},
        {"heads_q", p.heads_q},   {"heads_kv", p.heads_kv}, {"head_dim", p.head_dim}};
    for (const auto& s : sizes)
        if (s.value < 1) return fail(FDMA_STATUS_INVALID_ARGUMENT, std::string("params.") + s.name + " must be >= 1; got " + str(s.value));
    if (!is_supported_head_dim(p.head_dim))
        return fail(FDMA_STATUS_UNSUPPORTED,
                    "params.head_dim must be one of 32, 64, 96, 128, 192, 256; got " + str(p.head_dim));
    if (p.heads_q % p.heads_kv != 0)
        return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.heads_q (" + str(p.heads_q) +
                                                      ") must be a multiple of params.heads_kv (" + str(p.heads_kv) + ")");
    if (p.batch > 65535 || p.heads_q > 65535)
        return fail(FDMA_STATUS_UNSUPPORTED, "params.batch and params.heads_q must be <= 65535; got " + str(p.batch) +
                                                 " and " + str(p.heads_q));
    if (p.mask.data != nullptr && static_cast<long long>(p.mask.batch) * p.mask.heads > 65535)
        return fail(FDMA_STATUS_UNSUPPORTED, "params.mask.batch * params.mask.heads must be <= 65535");
    return FDMA_STATUS_SUCCESS;
}

uint64_t workspace_bytes_unchecked(const fdma_fwd_params& p) {
    if (p.mask.data == nullptr) return 0;
    return 2 * bitmap_words(p) * sizeof(uint32_t);  // occupied and full bitmaps
}

}  // namespace

uint64_t bitmap_words(const fdma_fwd_params& p) {
    const FwdTile tile = fwd_tile(p.head_dim);
    const uint64_t m_tiles = (p.seqlen_q + tile.block_m - 1) / tile.block_m;
    const uint64_t n_tiles = (p.seqlen_k + tile.block_n - 1) / tile.block_n;
    return static_cast<uint64_t>(p.mask.batch) * p.mask.heads * m_tiles * ((n_tiles + 31) / 32);
}

fdma_status fwd_workspace_bytes(const fdma_fwd_params* in, uint64_t& bytes) {
    if (const fdma_status st = check_shape(in)) return st;
    bytes = workspace_bytes_unchecked(*in);
    return FDMA_STATUS_SUCCESS;
}

fdma_status make_fwd_params(const fdma_fwd_params* in, FwdParams& out) {
    if (const fdma_status st = check_shape(in)) return st;
    const fdma_fwd_params& p = *in;
    if (!(std::isfinite(p.softmax_scale) && p.softmax_scale > 0.f))
        return fail(FDMA_STATUS_INVALID_ARGUMENT,
                    "params.softmax_scale must be finite and > 0; got " + std::to_string(p.softmax_scale));
    if (!(std::isfinite(p.softcap) && p.softcap >= 0.f))
        return fail(FDMA_STATUS_INVALID_ARGUMENT,
                    "params.softcap must be 0 (off) or finite and > 0; got " + std::to_string(p.softcap));
    if (p.is_causal != 0 && p.is_causal != 1)
        return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.is_causal must be 0 or 1; got " + str(p.is_causal));
    if (reinterpret_cast<std::uintptr_t>(p.lse) % 4 != 0)
        return fail(FDMA_STATUS_MISALIGNED, "params.lse must be 4-byte aligned");
    if (reinterpret_cast<std::uintptr_t>(p.tile_stats) % 8 != 0)
        return fail(FDMA_STATUS_MISALIGNED, "params.tile_stats must be 8-byte aligned");

    Extent extents[9];
    fdma_status st;
    if ((st = check_tensor(p.q, {"q", {p.batch, p.seqlen_q, p.heads_q}, false}, p.head_dim, extents[0])) ||
        (st = check_tensor(p.k, {"k", {p.batch, p.seqlen_k, p.heads_kv}, false}, p.head_dim, extents[1])) ||
        (st = check_tensor(p.v, {"v", {p.batch, p.seqlen_k, p.heads_kv}, false}, p.head_dim, extents[2])) ||
        (st = check_tensor(p.out, {"out", {p.batch, p.seqlen_q, p.heads_q}, true}, p.head_dim, extents[3])) ||
        (st = check_broadcast(p.mask, "mask", p, false, out.mask, extents[4])) ||
        (st = check_broadcast(p.bias, "bias", p, true, out.bias, extents[5])))
        return st;
    if (p.lse != nullptr) {
        if ((st = check_device_pointer(p.lse, "params.lse"))) return st;
        const char* lse = reinterpret_cast<const char*>(p.lse);
        extents[6] = {lse, lse + 4LL * p.batch * p.heads_q * p.seqlen_q, "lse", true};
    }
    if (p.tile_stats != nullptr) {
        if ((st = check_device_pointer(p.tile_stats, "params.tile_stats"))) return st;
        const char* stats = reinterpret_cast<const char*>(p.tile_stats);
        extents[7] = {stats, stats + 16, "tile_stats", true};
    }
    const uint64_t workspace_needed = workspace_bytes_unchecked(p);
    if (p.workspace != nullptr && workspace_needed > 0) {
        if (p.workspace_bytes < workspace_needed)
            return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.workspace_bytes is " + str(p.workspace_bytes) +
                                                          "; this call needs " + str(workspace_needed));
        if (reinterpret_cast<std::uintptr_t>(p.workspace) % 16 != 0)
            return fail(FDMA_STATUS_MISALIGNED, "params.workspace must be 16-byte aligned");
        if ((st = check_device_pointer(p.workspace, "params.workspace"))) return st;
        const char* ws = static_cast<const char*>(p.workspace);
        extents[8] = {ws, ws + workspace_needed, "workspace", true};
    }
    for (int w = 0; w < 9; ++w)
        for (int i = 0; i < 9; ++i)
            if (extents[w].written && i != w && overlaps(extents[w], extents[i]))
                return fail(FDMA_STATUS_INVALID_ARGUMENT, std::string("params.") + extents[w].name +
                                                              " overlaps params." + extents[i].name);

    out.q = p.q.data;
    out.k = p.k.data;
    out.v = p.v.data;
    out.o = p.out.data;
    out.q_strides = {p.q.stride_batch, p.q.stride_seq, p.q.stride_head};
    out.k_strides = {p.k.stride_batch, p.k.stride_seq, p.k.stride_head};
    out.v_strides = {p.v.stride_batch, p.v.stride_seq, p.v.stride_head};
    out.o_strides = {p.out.stride_batch, p.out.stride_seq, p.out.stride_head};
    out.lse = p.lse;
    out.tile_stats = reinterpret_cast<unsigned long long*>(p.tile_stats);
    out.seqlen_q = p.seqlen_q;
    out.seqlen_k = p.seqlen_k;
    out.heads_q = p.heads_q;
    out.kv_group = p.heads_q / p.heads_kv;
    out.is_causal = p.is_causal;
    if (p.softcap > 0.f) {
        out.qk_scale = p.softmax_scale / p.softcap;
        out.bias_scale = 1.f / p.softcap;
        out.softcap_out = p.softcap * kLog2e;
    } else {
        out.qk_scale = p.softmax_scale * kLog2e;
        out.bias_scale = kLog2e;
        out.softcap_out = 0.f;
    }
    return FDMA_STATUS_SUCCESS;
}

}  // namespace fdma

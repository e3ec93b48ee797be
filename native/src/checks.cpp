#include "checks.h"

#include <cstdint>
#include <utility>

#include "status.h"

namespace fdma {

std::string str(long long v) { return std::to_string(v); }


static bool overlaps(const Extent& a, const Extent& b) {
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

bool is_disjoint(const long long* sizes, const long long* strides, int rank, long long inner) {
    // Each dimension, in order of stride, has to step past everything the smaller ones span.
    long long order[4][2];
    int n = 0;
    for (int i = 0; i < rank; ++i)
        if (sizes[i] > 1) order[n][0] = strides[i], order[n][1] = sizes[i], ++n;
    for (int i = 0; i < n; ++i)
        for (int j = i + 1; j < n; ++j)
            if (order[j][0] < order[i][0]) std::swap(order[i], order[j]);
    long long covered = inner;
    for (int i = 0; i < n; ++i) {
        if (order[i][0] < covered) return false;
        covered = order[i][0] * order[i][1];
    }
    return true;
}

fdma_status check_device_pointer(const void* ptr, FieldName name, const char* member) {
    cudaPointerAttributes attr{};
    const cudaError_t err = cudaPointerGetAttributes(&attr, ptr);
    if (err != cudaSuccess) return fail_cuda(err, ("querying the memory type of " + name.str() + member).c_str());
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
        return fail(FDMA_STATUS_INVALID_ARGUMENT,
                    name.str() + member + " is not device memory (" +
                        (attr.type == cudaMemoryTypeHost ? "pinned host memory" : "host memory") +
                        "); a device pointer is required");
    int device = -1;
    if (cudaGetDevice(&device) != cudaSuccess) return fail_cuda(cudaGetLastError(), "cudaGetDevice");
    if (attr.device != device)
        return fail(FDMA_STATUS_INVALID_ARGUMENT, name.str() + member + " lives on device " + str(attr.device) +
                                                      " but the current device is " + str(device));
    return FDMA_STATUS_SUCCESS;
}

fdma_status check_tensor(const fdma_tensor& t, const TensorCheck& c, int head_dim, Extent& extent) {
    const FieldName field{c.prefix, c.name};
    const auto name = [&] { return field.str(); };
    if (t.data == nullptr) return fail(FDMA_STATUS_INVALID_ARGUMENT, name() + ".data is null");
    if (reinterpret_cast<std::uintptr_t>(t.data) % 16 != 0)
        return fail(FDMA_STATUS_MISALIGNED, name() + ".data must be 16-byte aligned; got address " +
                                                str(static_cast<long long>(reinterpret_cast<std::uintptr_t>(t.data))));
    const long long strides[3] = {t.stride_batch, t.stride_seq, t.stride_head};
    const char* stride_names[3] = {"stride_batch", "stride_seq", "stride_head"};
    for (int i = 0; i < 3; ++i) {
        if (c.sizes[i] == 1) continue;  // a stride of a size-1 dimension is never used
        if (strides[i] < 0 || (c.is_output && strides[i] == 0))
            return fail(FDMA_STATUS_INVALID_ARGUMENT, name() + "." + stride_names[i] + " must be " +
                                                          (c.is_output ? "> 0" : ">= 0") + "; got " + str(strides[i]));
        if (strides[i] % 8 != 0)
            return fail(FDMA_STATUS_MISALIGNED, name() + "." + stride_names[i] +
                                                    " must be a multiple of 8 elements (16 bytes); got " + str(strides[i]));
    }
    const long long elements = span_elements(c.sizes, strides, 3, head_dim);
    if (elements < 0 || elements > (1LL << 62) / 2)
        return fail(FDMA_STATUS_INVALID_ARGUMENT, name() + ": the sizes and strides address more than 2^62 bytes");
    if (c.is_output && !is_disjoint(c.sizes, strides, 3, head_dim))
        return fail(FDMA_STATUS_INVALID_ARGUMENT, name() + ": strides (" + str(t.stride_batch) + ", " + str(t.stride_seq) +
                                                      ", " + str(t.stride_head) + ") make output elements overlap");
    extent = {static_cast<const char*>(t.data), static_cast<const char*>(t.data) + 2 * elements, field, c.is_output};
    return check_device_pointer(t.data, field, ".data");
}

// The sizes, strides and extent of a present broadcast operand of element_size-byte elements (its element
// type already checked); fills the kernels' view of it.
static fdma_status check_broadcast_layout(const fdma_broadcast_tensor& t, FieldName field, const fdma_problem& p,
                                          int element_size, bool written, BroadcastOperand& out, Extent& extent) {
    const auto name = [&] { return field.str(); };
    if (t.batch != 1 && t.batch != p.batch)
        return fail(FDMA_STATUS_INVALID_ARGUMENT,
                    name() + ".batch must be 1 or batch (" + str(p.batch) + "); got " + str(t.batch));
    if (t.heads != 1 && t.heads != p.heads_kv && t.heads != p.heads_q)
        return fail(FDMA_STATUS_INVALID_ARGUMENT, name() + ".heads must be 1, heads_kv (" + str(p.heads_kv) +
                                                      ") or heads_q (" + str(p.heads_q) + "); got " + str(t.heads));
    if (t.rows != 1 && t.rows != p.seqlen_q)
        return fail(FDMA_STATUS_INVALID_ARGUMENT,
                    name() + ".rows must be 1 or seqlen_q (" + str(p.seqlen_q) + "); got " + str(t.rows));
    // A dimension of size 1 is broadcast: its stride is never used.
    const long long sizes[4] = {t.batch, t.heads, t.rows, p.seqlen_k};
    const long long strides[4] = {t.batch == 1 ? 0 : t.stride_batch, t.heads == 1 ? 0 : t.stride_head,
                                  t.rows == 1 ? 0 : t.stride_row, p.seqlen_k == 1 ? 1 : t.stride_key};
    const char* stride_names[3] = {"stride_batch", "stride_head", "stride_row"};
    for (int i = 0; i < 3; ++i)
        if (strides[i] < 0)
            return fail(FDMA_STATUS_INVALID_ARGUMENT, name() + "." + stride_names[i] + " must be >= 0; got " + str(strides[i]));
    if (strides[3] < 1)
        return fail(FDMA_STATUS_INVALID_ARGUMENT, name() + ".stride_key must be >= 1 (1: contiguous keys); got " + str(strides[3]));
    const long long elements = span_elements(sizes, strides, 4, 1);
    if (elements < 0 || elements > (1LL << 62) / element_size)
        return fail(FDMA_STATUS_INVALID_ARGUMENT, name() + ": the sizes and strides address more than 2^62 bytes");
    if (written && !is_disjoint(sizes, strides, 4, 1))
        return fail(FDMA_STATUS_INVALID_ARGUMENT, name() + ": strides make output elements overlap");

    out.data = t.data;
    out.stride_batch = strides[0];
    out.stride_head = strides[1];
    out.stride_row = strides[2];
    out.stride_key = strides[3];
    // heads == heads_q: one per query head; heads == heads_kv: one per group of query heads.
    out.head_group = (t.heads == p.heads_q || t.heads == 1) ? 1 : p.heads_q / p.heads_kv;
    out.batches = t.batch;
    out.heads = t.heads;
    out.rows = t.rows;
    extent = {static_cast<const char*>(t.data), static_cast<const char*>(t.data) + element_size * elements, field, written};
    return check_device_pointer(t.data, field, ".data");
}

fdma_status check_broadcast(const fdma_broadcast_tensor& t, const char* prefix, const char* field,
                            const fdma_problem& p, bool is_bias, bool written, BroadcastOperand& out, Extent& extent) {
    out = BroadcastOperand{};
    if (t.data == nullptr) return FDMA_STATUS_SUCCESS;
    const FieldName name{prefix, field};
    int element_size = 1;
    if (is_bias) {
        if (t.dtype != FDMA_DTYPE_FLOAT16 && t.dtype != FDMA_DTYPE_BFLOAT16 && t.dtype != FDMA_DTYPE_FLOAT32)
            return fail(FDMA_STATUS_INVALID_ARGUMENT,
                        name.str() + ".dtype must be FLOAT16 (1), BFLOAT16 (2) or FLOAT32 (3); got " + str(t.dtype));
        element_size = t.dtype == FDMA_DTYPE_FLOAT32 ? 4 : 2;
        if (reinterpret_cast<std::uintptr_t>(t.data) % element_size != 0)
            return fail(FDMA_STATUS_MISALIGNED, name.str() + ".data must be aligned to its " + str(element_size) +
                                                    "-byte element");
    }
    if (const fdma_status st = check_broadcast_layout(t, name, p, element_size, written, out, extent)) return st;
    out.type = is_bias ? t.dtype : 0;
    return FDMA_STATUS_SUCCESS;
}

fdma_status check_lifetimes(const fdma_broadcast_tensor& t, const char* prefix, const fdma_problem& p,
                            BroadcastOperand& out, Extent& extent) {
    out = BroadcastOperand{};
    if (t.data == nullptr) return FDMA_STATUS_SUCCESS;
    const FieldName name{prefix, "lifetimes"};
    if (p.mask.data != nullptr)
        return fail(FDMA_STATUS_INVALID_ARGUMENT,
                    name.str() + " and " + prefix + "mask are both given; a problem takes one mask form (or neither)");
    if (t.rows != 1)
        return fail(FDMA_STATUS_INVALID_ARGUMENT,
                    name.str() + ".rows must be 1 (one lifetime per key serves every query); got " + str(t.rows));
    if (reinterpret_cast<std::uintptr_t>(t.data) % 8 != 0)
        return fail(FDMA_STATUS_MISALIGNED, name.str() + ".data must be aligned to its 8-byte element (an int32 pair); got address " +
                                                str(static_cast<long long>(reinterpret_cast<std::uintptr_t>(t.data))));
    return check_broadcast_layout(t, name, p, 8, false, out, extent);
}

fdma_status check_no_overlaps(const Extent* extents, int count) {
    for (int w = 0; w < count; ++w)
        for (int i = 0; i < count; ++i)
            if (extents[w].written && i != w && overlaps(extents[w], extents[i]))
                return fail(FDMA_STATUS_INVALID_ARGUMENT, extents[w].name.str() + " overlaps " + extents[i].name.str());
    return FDMA_STATUS_SUCCESS;
}

}  // namespace fdma

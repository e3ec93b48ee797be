#include "fwd_args.h"

#include <cmath>
#include <cstdint>
#include <string>

#include "../kernels/fwd_config.cuh"
#include "checks.h"
#include "status.h"

namespace fdma {

namespace {

constexpr float kLog2e = 1.4426950408889634f;

fdma_status check_shape(const fdma_fwd_params* in, const std::string& prefix) {
    if (in == nullptr) return fail(FDMA_STATUS_INVALID_ARGUMENT, prefix.substr(0, prefix.size() - 1) + " is null");
    const fdma_fwd_params& p = *in;
    if (p.struct_size != sizeof(fdma_fwd_params))
        return fail(FDMA_STATUS_STRUCT_SIZE, prefix + "struct_size is " + str(p.struct_size) + "; this library (ABI " +
                                                 str(FDMA_ABI_VERSION) + ") expects " + str(sizeof(fdma_fwd_params)));
    for (uint64_t r : p.reserved)
        if (r != 0) return fail(FDMA_STATUS_INVALID_ARGUMENT, prefix + "reserved must be zero");
    if (p.dtype == FDMA_DTYPE_FLOAT32)
        return fail(FDMA_STATUS_UNSUPPORTED, prefix + "dtype FLOAT32 is not supported for q, k, v and out; "
                                             "expected FLOAT16 (1) or BFLOAT16 (2)");
    if (p.dtype != FDMA_DTYPE_FLOAT16 && p.dtype != FDMA_DTYPE_BFLOAT16)
        return fail(FDMA_STATUS_INVALID_ARGUMENT,
                    prefix + "dtype must be FLOAT16 (1) or BFLOAT16 (2); got " + str(p.dtype));

    const struct { const char* name; int value; } sizes[] = {
        {"batch", p.batch},       {"seqlen_q", p.seqlen_q}, {"seqlen_k", p.seqlen_k},
        {"heads_q", p.heads_q},   {"heads_kv", p.heads_kv}, {"head_dim", p.head_dim}};
    for (const auto& s : sizes)
        if (s.value < 1) return fail(FDMA_STATUS_INVALID_ARGUMENT, (prefix + "") + s.name + " must be >= 1; got " + str(s.value));
    if (!is_supported_head_dim(p.head_dim))
        return fail(FDMA_STATUS_UNSUPPORTED,
                    prefix + "head_dim must be one of 32, 64, 96, 128, 192, 256; got " + str(p.head_dim));
    if (p.heads_q % p.heads_kv != 0)
        return fail(FDMA_STATUS_INVALID_ARGUMENT, prefix + "heads_q (" + str(p.heads_q) +
                                                      ") must be a multiple of " + prefix + "heads_kv (" + str(p.heads_kv) + ")");
    if (p.batch > 65535 || p.heads_q > 65535)
        return fail(FDMA_STATUS_UNSUPPORTED, prefix + "batch and params.heads_q must be <= 65535; got " + str(p.batch) +
                                                 " and " + str(p.heads_q));
    if (p.mask.data != nullptr && static_cast<long long>(p.mask.batch) * p.mask.heads > 65535)
        return fail(FDMA_STATUS_UNSUPPORTED, prefix + "mask.batch * params.mask.heads must be <= 65535");
    return FDMA_STATUS_SUCCESS;
}

// The layout of a call whose shapes are checked.
FwdScratch scratch_layout(const fdma_fwd_params& p) {
    FwdScratch s;
    const FwdTile tile = fwd_tile(p.head_dim);
    const uint64_t m_tiles = (p.seqlen_q + tile.block_m - 1) / tile.block_m;
    const uint64_t n_tiles = (p.seqlen_k + tile.block_n - 1) / tile.block_n;
    s.kv_splits = fwd_kv_splits(static_cast<long long>(m_tiles) * p.heads_q * p.batch, static_cast<int>(n_tiles));
    if (s.kv_splits > 1) {
        const uint64_t rows = static_cast<uint64_t>(s.kv_splits) * p.batch * p.heads_q * p.seqlen_q;
        s.o_partial = s.total;
        s.total += align256(rows * p.head_dim * 4);
        s.lse_partial = s.total;
        s.total += align256(rows * 4);
    }
    if (p.mask.data != nullptr) {
        s.bitmaps = s.total;
        s.bitmap_words = static_cast<uint64_t>(p.mask.batch) * p.mask.heads * m_tiles * ((n_tiles + 31) / 32);
        s.total += align256(2 * s.bitmap_words * 4);  // occupied and full
    }
    return s;
}

}  // namespace

fdma_status check_fwd_shape(const fdma_fwd_params* in, const std::string& prefix) { return check_shape(in, prefix); }

fdma_status fwd_scratch_layout(const fdma_fwd_params* in, FwdScratch& scratch) {
    if (const fdma_status st = check_shape(in, "params.")) return st;
    scratch = scratch_layout(*in);
    return FDMA_STATUS_SUCCESS;
}

void place_fwd_scratch(FwdParams& params, const FwdScratch& s, void* base) {
    char* b = static_cast<char*>(base);
    params.kv_splits = s.kv_splits;
    if (s.kv_splits > 1) {
        params.o_partial = reinterpret_cast<float*>(b + s.o_partial);
        params.lse_partial = reinterpret_cast<float*>(b + s.lse_partial);
    }
    if (s.bitmap_words > 0) {
        params.occupancy = reinterpret_cast<unsigned int*>(b + s.bitmaps);
        params.full_tiles = params.occupancy + s.bitmap_words;
    }
}

fdma_status check_fwd_problem(const fdma_fwd_params* in, const std::string& prefix, FwdParams& out,
                              Extent* extents) {
    if (const fdma_status st = check_shape(in, prefix)) return st;
    const fdma_fwd_params& p = *in;
    if (!(std::isfinite(p.softmax_scale) && p.softmax_scale > 0.f))
        return fail(FDMA_STATUS_INVALID_ARGUMENT,
                    prefix + "softmax_scale must be finite and > 0; got " + std::to_string(p.softmax_scale));
    if (!(std::isfinite(p.softcap) && p.softcap >= 0.f))
        return fail(FDMA_STATUS_INVALID_ARGUMENT,
                    prefix + "softcap must be 0 (off) or finite and > 0; got " + std::to_string(p.softcap));
    if (p.is_causal != 0 && p.is_causal != 1)
        return fail(FDMA_STATUS_INVALID_ARGUMENT, prefix + "is_causal must be 0 or 1; got " + str(p.is_causal));
    if (reinterpret_cast<std::uintptr_t>(p.lse) % 4 != 0)
        return fail(FDMA_STATUS_MISALIGNED, prefix + "lse must be 4-byte aligned");
    if (reinterpret_cast<std::uintptr_t>(p.tile_stats) % 8 != 0)
        return fail(FDMA_STATUS_MISALIGNED, prefix + "tile_stats must be 8-byte aligned");

    fdma_status st;
    if ((st = check_tensor(p.q, {prefix, "q", {p.batch, p.seqlen_q, p.heads_q}, false}, p.head_dim, extents[0])) ||
        (st = check_tensor(p.k, {prefix, "k", {p.batch, p.seqlen_k, p.heads_kv}, false}, p.head_dim, extents[1])) ||
        (st = check_tensor(p.v, {prefix, "v", {p.batch, p.seqlen_k, p.heads_kv}, false}, p.head_dim, extents[2])) ||
        (st = check_tensor(p.out, {prefix, "out", {p.batch, p.seqlen_q, p.heads_q}, true}, p.head_dim, extents[3])) ||
        (st = check_broadcast(p.mask, prefix, "mask", p, false, out.mask, extents[4])) ||
        (st = check_broadcast(p.bias, prefix, "bias", p, true, out.bias, extents[5])))
        return st;
    if (p.lse != nullptr) {
        if ((st = check_device_pointer(p.lse, (prefix + "lse").c_str()))) return st;
        const char* lse = reinterpret_cast<const char*>(p.lse);
        extents[6] = {lse, lse + 4LL * p.batch * p.heads_q * p.seqlen_q, "lse", true};
    }
    if (p.tile_stats != nullptr) {
        if ((st = check_device_pointer(p.tile_stats, (prefix + "tile_stats").c_str()))) return st;
        const char* stats = reinterpret_cast<const char*>(p.tile_stats);
        extents[7] = {stats, stats + 16, "tile_stats", true};
    }

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
    out.batch = p.batch;
    out.kv_splits = 1;
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

fdma_status check_workspace(const void* workspace, uint64_t workspace_bytes, uint64_t needed,
                            const std::string& prefix, Extent& extent) {
    if (workspace == nullptr || needed == 0) return FDMA_STATUS_SUCCESS;
    if (workspace_bytes < needed)
        return fail(FDMA_STATUS_INVALID_ARGUMENT, prefix + "workspace_bytes is " + str(workspace_bytes) +
                                                      "; this call needs " + str(needed));
    if (reinterpret_cast<std::uintptr_t>(workspace) % 16 != 0)
        return fail(FDMA_STATUS_MISALIGNED, prefix + "workspace must be 16-byte aligned");
    if (const fdma_status st = check_device_pointer(workspace, (prefix + "workspace").c_str())) return st;
    const char* ws = static_cast<const char*>(workspace);
    extent = {ws, ws + needed, "workspace", true};
    return FDMA_STATUS_SUCCESS;
}

fdma_status make_fwd_params(const fdma_fwd_params* in, FwdParams& out, FwdScratch& scratch) {
    const std::string prefix = "params.";
    Extent extents[kFwdExtents + 1];
    if (const fdma_status st = check_fwd_problem(in, prefix, out, extents)) return st;
    scratch = scratch_layout(*in);
    if (const fdma_status st = check_workspace(in->workspace, in->workspace_bytes, scratch.total, prefix, extents[kFwdExtents]))
        return st;
    return check_no_overlaps(extents, kFwdExtents + 1, prefix);
}

}  // namespace fdma

#include "bwd_args.h"

#include <cstdint>
#include <string>

#include "../kernels/fwd_config.cuh"
#include "checks.h"
#include "fwd_args.h"
#include "status.h"

namespace fdma {

namespace {

fdma_status check_header(const fdma_bwd_params* in) {
    if (in == nullptr) return fail(FDMA_STATUS_INVALID_ARGUMENT, "params is null");
    if (in->struct_size != sizeof(fdma_bwd_params))
        return fail(FDMA_STATUS_STRUCT_SIZE, "params.struct_size is " + str(in->struct_size) + "; this library (ABI " +
                                                 str(FDMA_ABI_VERSION) + ") expects " + str(sizeof(fdma_bwd_params)));
    for (uint64_t r : in->reserved)
        if (r != 0) return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.reserved must be zero");
    if (in->deterministic != 0 && in->deterministic != 1)
        return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.deterministic must be 0 or 1; got " + str(in->deterministic));
    return check_fwd_shape(&in->forward, "params.forward.");
}

}  // namespace

fdma_status bwd_scratch_layout(const fdma_bwd_params* in, BwdScratch& s) {
    if (const fdma_status st = check_header(in)) return st;
    const fdma_fwd_params& p = in->forward;
    const FwdTile tile = bwd_tile(p.head_dim);
    const uint64_t m_tiles = (p.seqlen_q + tile.block_m - 1) / tile.block_m;
    const uint64_t n_tiles = (p.seqlen_k + tile.block_n - 1) / tile.block_n;
    const uint64_t rows = static_cast<uint64_t>(p.batch) * p.heads_q * p.seqlen_q;
    s = BwdScratch{};
    s.delta = 0;
    uint64_t end = align256(rows * 4);
    if (!in->deterministic) {
        s.d_q_accum = end;
        s.d_q_accum_bytes = rows * p.head_dim * 4;
        end += align256(s.d_q_accum_bytes);
    }
    if (in->d_bias.data != nullptr && p.bias.data != nullptr) {
        s.d_bias_accum = end;
        s.d_bias_accum_bytes = static_cast<uint64_t>(p.bias.batch) * p.bias.heads * p.bias.rows * p.seqlen_k * 4;
        end += align256(s.d_bias_accum_bytes);
    }
    if (p.mask.data != nullptr) {
        const uint64_t masks = static_cast<uint64_t>(p.mask.batch) * p.mask.heads;
        s.bitmaps = end;
        s.bitmap_words = masks * m_tiles * ((n_tiles + 31) / 32);
        s.bitmap_t_words = masks * n_tiles * ((m_tiles + 31) / 32);
        end += align256(2 * (s.bitmap_words + s.bitmap_t_words) * 4);
    }
    s.total = end;
    return FDMA_STATUS_SUCCESS;
}

void place_bwd_scratch(BwdParams& bp, const BwdScratch& s, void* base) {
    char* b = static_cast<char*>(base);
    bp.delta = reinterpret_cast<float*>(b + s.delta);
    bp.d_q_accum = s.d_q_accum_bytes > 0 ? reinterpret_cast<float*>(b + s.d_q_accum) : nullptr;
    bp.d_bias_accum = s.d_bias_accum_bytes > 0 ? reinterpret_cast<float*>(b + s.d_bias_accum) : nullptr;
    if (s.bitmap_words > 0) {
        unsigned int* words = reinterpret_cast<unsigned int*>(b + s.bitmaps);
        bp.fwd.occupancy = words;
        bp.fwd.full_tiles = words + s.bitmap_words;
        bp.fwd.occupancy_t = words + 2 * s.bitmap_words;  // the two key-major bitmaps are adjacent: one memset
        bp.fwd.full_tiles_t = words + 2 * s.bitmap_words + s.bitmap_t_words;
    }
}

fdma_status make_bwd_params(const fdma_bwd_params* in, BwdParams& out, BwdScratch& scratch) {
    if (const fdma_status st = bwd_scratch_layout(in, scratch)) return st;
    const std::string prefix = "params.";
    const fdma_fwd_params& p = in->forward;
    constexpr int kExtents = kFwdExtents + 6;  // + d_out, d_q, d_k, d_v, d_bias, workspace
    Extent extents[kExtents];
    fdma_status st;
    if ((st = check_fwd_problem(&p, prefix + "forward.", out.fwd, extents))) return st;
    if (p.lse == nullptr) return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.forward.lse is null; the backward reads the forward's LSE");
    extents[6].written = false;  // the forward's outputs are the backward's inputs
    extents[3].written = false;
    if ((st = check_tensor(in->d_out, {prefix, "d_out", {p.batch, p.seqlen_q, p.heads_q}, false}, p.head_dim, extents[8])) ||
        (st = check_tensor(in->d_q, {prefix, "d_q", {p.batch, p.seqlen_q, p.heads_q}, true}, p.head_dim, extents[9])) ||
        (st = check_tensor(in->d_k, {prefix, "d_k", {p.batch, p.seqlen_k, p.heads_kv}, true}, p.head_dim, extents[10])) ||
        (st = check_tensor(in->d_v, {prefix, "d_v", {p.batch, p.seqlen_k, p.heads_kv}, true}, p.head_dim, extents[11])))
        return st;

    const fdma_broadcast_tensor& db = in->d_bias;
    if (db.data != nullptr) {
        if (p.bias.data == nullptr)
            return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.d_bias is set but params.forward.bias is not");
        if (db.batch != p.bias.batch || db.heads != p.bias.heads || db.rows != p.bias.rows)
            return fail(FDMA_STATUS_INVALID_ARGUMENT,
                        "params.d_bias must have the bias's shape (" + str(p.bias.batch) + ", " + str(p.bias.heads) + ", " +
                            str(p.bias.rows) + ", Lk); got (" + str(db.batch) + ", " + str(db.heads) + ", " + str(db.rows) + ", Lk)");
        if (db.dtype != p.bias.dtype && db.dtype != FDMA_DTYPE_FLOAT32)
            return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.d_bias.dtype must be the bias's (" + str(p.bias.dtype) +
                                                          ") or FLOAT32 (3); got " + str(db.dtype));
        const int element_size = db.dtype == FDMA_DTYPE_FLOAT32 ? 4 : 2;
        if (reinterpret_cast<std::uintptr_t>(db.data) % element_size != 0)
            return fail(FDMA_STATUS_MISALIGNED, "params.d_bias.data must be aligned to its " + str(element_size) + "-byte element");
        const long long sizes[3] = {db.batch, db.heads, db.rows};
        const long long strides[3] = {db.batch == 1 ? 0 : db.stride_batch, db.heads == 1 ? 0 : db.stride_head,
                                      db.rows == 1 ? 0 : db.stride_row};
        for (long long stride : strides)
            if (stride < 0) return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.d_bias strides must be >= 0");
        if (!is_disjoint(sizes, strides, 3, p.seqlen_k))
            return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.d_bias: strides make output elements overlap");
        const long long elements = span_elements(sizes, strides, 3, p.seqlen_k);
        if (elements < 0 || elements > (1LL << 62) / element_size)
            return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.d_bias: the sizes and strides address more than 2^62 bytes");
        if ((st = check_device_pointer(db.data, "params.d_bias.data"))) return st;
        const char* d = static_cast<const char*>(db.data);
        extents[12] = {d, d + element_size * elements, "d_bias", true};
        out.d_bias = const_cast<void*>(db.data);
        out.d_bias_type = db.dtype;
        out.d_bias_strides = {strides[0], strides[2], strides[1]};
    }
    if ((st = check_workspace(p.workspace, p.workspace_bytes, scratch.total, prefix + "forward.", extents[13])) ||
        (st = check_no_overlaps(extents, kExtents, prefix)))
        return st;

    out.d_o = in->d_out.data;
    out.d_q = in->d_q.data;
    out.d_k = in->d_k.data;
    out.d_v = in->d_v.data;
    out.d_o_strides = {in->d_out.stride_batch, in->d_out.stride_seq, in->d_out.stride_head};
    out.d_q_strides = {in->d_q.stride_batch, in->d_q.stride_seq, in->d_q.stride_head};
    out.d_k_strides = {in->d_k.stride_batch, in->d_k.stride_seq, in->d_k.stride_head};
    out.d_v_strides = {in->d_v.stride_batch, in->d_v.stride_seq, in->d_v.stride_head};
    out.softmax_scale = p.softmax_scale;
    out.heads_kv = p.heads_kv;
    const bool owns_d_bias = out.d_bias != nullptr;
    out.owner_heads = owns_d_bias && p.bias.heads == 1 ? 1 : p.heads_kv;
    out.owner_batches = owns_d_bias && p.bias.batch == 1 ? 1 : p.batch;
    return FDMA_STATUS_SUCCESS;
}

}  // namespace fdma

#include "bwd_args.h"

#include <cstdint>
#include <string>

#include "bwd_launch.h"
#include "checks.h"
#include "fwd_args.h"
#include "problem.h"
#include "status.h"

namespace fdma {

fdma_status plan_bwd_call(const fdma_bwd_params* in, BwdPlan& plan) {
    if (const fdma_status st = check_params_header(in)) return st;
    if (in->deterministic != 0 && in->deterministic != 1)
        return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.deterministic must be 0 or 1; got " + str(in->deterministic));
    const bool with_d_bias = in->d_bias.data != nullptr && in->problem.bias.data != nullptr;
    plan = plan_bwd(problem_shape(in->problem), in->deterministic != 0, with_d_bias, select_bwd_wgmma(in->problem.head_dim));
    return FDMA_STATUS_SUCCESS;
}

fdma_status make_bwd_call(const fdma_bwd_params* in, BwdParams& out, BwdPlan& plan) {
    if (const fdma_status st = plan_bwd_call(in, plan)) return st;
    const fdma_bwd_params& p = *in;
    const fdma_problem& problem = p.problem;
    constexpr int kExtents = kProblemExtents + 9;  // + out, lse, d_out, d_q, d_k, d_v, d_bias, tile_stats, workspace
    Extent extents[kExtents];
    Extent* const own = extents + kProblemExtents;
    const long long q_sizes[3] = {problem.batch, problem.seqlen_q, problem.heads_q};
    const long long kv_sizes[3] = {problem.batch, problem.seqlen_k, problem.heads_kv};
    auto tensor = [&](const fdma_tensor& t, const char* name, const long long (&sizes)[3], bool written, Extent& extent) {
        return check_tensor(t, {"params.", name, {sizes[0], sizes[1], sizes[2]}, written}, problem.head_dim, extent);
    };
    fdma_status st;
    if ((st = check_problem(problem, "params.problem.", out.attn, extents)) ||
        (st = tensor(p.out, "out", q_sizes, false, own[0])))
        return st;
    if (p.lse == nullptr) return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.lse is null; the backward reads the forward's LSE");
    if (reinterpret_cast<std::uintptr_t>(p.lse) % 4 != 0) return fail(FDMA_STATUS_MISALIGNED, "params.lse must be 4-byte aligned");
    if ((st = check_device_pointer(p.lse, {"params.", "lse"}))) return st;
    const char* lse = reinterpret_cast<const char*>(p.lse);
    own[1] = {lse, lse + 4LL * problem.batch * problem.heads_q * problem.seqlen_q, {"params.", "lse"}, false};
    if ((st = tensor(p.d_out, "d_out", q_sizes, false, own[2])) || (st = tensor(p.d_q, "d_q", q_sizes, true, own[3])) ||
        (st = tensor(p.d_k, "d_k", kv_sizes, true, own[4])) || (st = tensor(p.d_v, "d_v", kv_sizes, true, own[5])))
        return st;

    const fdma_broadcast_tensor& db = p.d_bias;
    const fdma_broadcast_tensor& bias = problem.bias;
    if (db.data != nullptr) {
        if (bias.data == nullptr)
            return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.d_bias is set but params.problem.bias is not");
        if (db.batch != bias.batch || db.heads != bias.heads || db.rows != bias.rows)
            return fail(FDMA_STATUS_INVALID_ARGUMENT,
                        "params.d_bias must have the bias's shape (" + str(bias.batch) + ", " + str(bias.heads) + ", " +
                            str(bias.rows) + ", Lk); got (" + str(db.batch) + ", " + str(db.heads) + ", " + str(db.rows) + ", Lk)");
        if (db.dtype != bias.dtype && db.dtype != FDMA_DTYPE_FLOAT32)
            return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.d_bias.dtype must be the bias's (" + str(bias.dtype) +
                                                          ") or FLOAT32 (3); got " + str(db.dtype));
        if ((st = check_broadcast(db, "params.", "d_bias", problem, true, true, out.d_bias, own[6]))) return st;
    }
    if (reinterpret_cast<std::uintptr_t>(p.tile_stats) % 8 != 0)
        return fail(FDMA_STATUS_MISALIGNED, "params.tile_stats must be 8-byte aligned");
    if (p.tile_stats != nullptr) {
        if ((st = check_device_pointer(p.tile_stats, {"params.", "tile_stats"}))) return st;
        const char* stats = reinterpret_cast<const char*>(p.tile_stats);
        own[7] = {stats, stats + kBwdStatCounters * 8, {"params.", "tile_stats"}, true};
    }
    if ((st = check_workspace(p.workspace, p.workspace_bytes, plan.workspace_bytes, own[8])) ||
        (st = check_no_overlaps(extents, kExtents)))
        return st;

    out.o = p.out.data;
    out.o_strides = strides_of(p.out);
    out.lse = p.lse;
    out.d_o = p.d_out.data;
    out.d_q = p.d_q.data;
    out.d_k = p.d_k.data;
    out.d_v = p.d_v.data;
    out.d_o_strides = strides_of(p.d_out);
    out.d_q_strides = strides_of(p.d_q);
    out.d_k_strides = strides_of(p.d_k);
    out.d_v_strides = strides_of(p.d_v);
    out.tile_stats = reinterpret_cast<u64*>(p.tile_stats);
    out.owner_heads = plan.owner_heads;
    out.owner_batches = plan.owner_batches;
    return FDMA_STATUS_SUCCESS;
}

void place_bwd_scratch(BwdParams& bp, const BwdPlan& plan, void* base) {
    char* b = static_cast<char*>(base);
    bp.delta = reinterpret_cast<float*>(b + plan.delta);
    bp.d_q_accum = plan.d_q_accum_bytes > 0 ? reinterpret_cast<float*>(b + plan.d_q_accum) : nullptr;
    bp.d_bias_accum = plan.d_bias_accum_bytes > 0 ? reinterpret_cast<float*>(b + plan.d_bias_accum) : nullptr;
    bp.d_k_accum = plan.gathered_dkdv ? reinterpret_cast<float*>(b + plan.d_k_accum) : nullptr;
    bp.d_v_accum = plan.gathered_dkdv ? reinterpret_cast<float*>(b + plan.d_v_accum) : nullptr;
    if (plan.bitmap_words > 0) {
        u32* words = reinterpret_cast<u32*>(b + plan.bitmaps);
        bp.attn.occupancy = words;
        bp.attn.full_tiles = words + plan.bitmap_words;
        bp.attn.occupancy_t = words + 2 * plan.bitmap_words;  // the two key-major bitmaps are adjacent: one memset
        bp.attn.full_tiles_t = words + 2 * plan.bitmap_words + plan.bitmap_t_words;
    }
}

}  // namespace fdma

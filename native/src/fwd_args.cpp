#include "fwd_args.h"

#include <cstdint>
#include <string>

#include "checks.h"
#include "fwd_launch.h"
#include "problem.h"
#include "status.h"

namespace fdma {

fdma_status plan_fwd_call(const fdma_fwd_params* in, FwdPlan& plan) {
    if (const fdma_status st = check_params_header(in)) return st;
    plan = plan_fwd(problem_shape(in->problem), select_fwd_kernel(in->problem.head_dim));
    return FDMA_STATUS_SUCCESS;
}

fdma_status check_workspace(const void* workspace, uint64_t workspace_bytes, uint64_t needed, Extent& extent) {
    if (workspace == nullptr || needed == 0) return FDMA_STATUS_SUCCESS;
    if (workspace_bytes < needed)
        return fail(FDMA_STATUS_INVALID_ARGUMENT,
                    "params.workspace_bytes is " + str(workspace_bytes) + "; this call needs " + str(needed));
    if (reinterpret_cast<std::uintptr_t>(workspace) % 16 != 0)
        return fail(FDMA_STATUS_MISALIGNED, "params.workspace must be 16-byte aligned");
    if (const fdma_status st = check_device_pointer(workspace, {"params.", "workspace"})) return st;
    const char* ws = static_cast<const char*>(workspace);
    extent = {ws, ws + needed, {"params.", "workspace"}, true};
    return FDMA_STATUS_SUCCESS;
}

fdma_status make_fwd_call(const fdma_fwd_params* in, FwdParams& out, FwdPlan& plan) {
    if (const fdma_status st = plan_fwd_call(in, plan)) return st;
    const fdma_fwd_params& p = *in;
    const fdma_problem& problem = p.problem;
    constexpr int kExtents = kProblemExtents + 4;  // + out, lse, tile_stats, workspace
    Extent extents[kExtents];
    fdma_status st;
    if ((st = check_problem(problem, "params.problem.", out.attn, extents)) ||
        (st = check_tensor(p.out, {"params.", "out", {problem.batch, problem.seqlen_q, problem.heads_q}, true},
                           problem.head_dim, extents[kProblemExtents])))
        return st;
    if (reinterpret_cast<std::uintptr_t>(p.lse) % 4 != 0)
        return fail(FDMA_STATUS_MISALIGNED, "params.lse must be 4-byte aligned");
    if (reinterpret_cast<std::uintptr_t>(p.tile_stats) % 8 != 0)
        return fail(FDMA_STATUS_MISALIGNED, "params.tile_stats must be 8-byte aligned");
    if (p.lse != nullptr) {
        if ((st = check_device_pointer(p.lse, {"params.", "lse"}))) return st;
        const char* lse = reinterpret_cast<const char*>(p.lse);
        extents[kProblemExtents + 1] = {lse, lse + 4LL * problem.batch * problem.heads_q * problem.seqlen_q, {"params.", "lse"}, true};
    }
    if (p.tile_stats != nullptr) {
        if ((st = check_device_pointer(p.tile_stats, {"params.", "tile_stats"}))) return st;
        const char* stats = reinterpret_cast<const char*>(p.tile_stats);
        extents[kProblemExtents + 2] = {stats, stats + kFwdStatCounters * 8, {"params.", "tile_stats"}, true};
    }
    if ((st = check_workspace(p.workspace, p.workspace_bytes, plan.workspace_bytes, extents[kProblemExtents + 3])) ||
        (st = check_no_overlaps(extents, kExtents)))
        return st;

    out.o = p.out.data;
    out.o_strides = strides_of(p.out);
    out.lse = p.lse;
    out.tile_stats = reinterpret_cast<u64*>(p.tile_stats);
    out.kv_splits = plan.kv_splits;
    out.packed_heads = plan.packed_heads;
    return FDMA_STATUS_SUCCESS;
}

void place_fwd_scratch(FwdParams& params, const FwdPlan& plan, void* base) {
    char* b = static_cast<char*>(base);
    if (plan.kv_splits > 1) {
        params.o_partial = reinterpret_cast<float*>(b + plan.o_partial);
        params.lse_partial = reinterpret_cast<float*>(b + plan.lse_partial);
    }
    if (plan.bitmap_words > 0) {
        params.attn.occupancy = reinterpret_cast<u32*>(b + plan.bitmaps);
        params.attn.full_tiles = params.attn.occupancy + plan.bitmap_words;
    }
}

}  // namespace fdma

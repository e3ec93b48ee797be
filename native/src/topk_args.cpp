// Checks of the top-k lifetime builder's parameters (fdma_topk_params) and their resolution into the kernel's
// arguments.
#include <cstdint>
#include <string>

#include "checks.h"
#include "fwd_args.h"
#include "problem.h"
#include "status.h"
#include "topk.h"

namespace fdma {

fdma_status plan_topk_call(const fdma_topk_params* in, uint64_t& workspace_bytes) {
    if (const fdma_status st = check_struct_header(in)) return st;
    if (in->selection != FDMA_SELECT_TOPK && in->selection != FDMA_SELECT_POSITIVE)
        return fail(FDMA_STATUS_INVALID_ARGUMENT,
                    "params.selection must be FDMA_SELECT_TOPK (0) or FDMA_SELECT_POSITIVE (1); got " + str(in->selection));
    const struct { const char* name; int value; } sizes[] = {
        {"batch", in->batch}, {"heads", in->heads}, {"seqlen_q", in->seqlen_q}, {"seqlen_k", in->seqlen_k}};
    for (const auto& s : sizes)
        if (s.value < 1) return fail(FDMA_STATUS_INVALID_ARGUMENT, std::string("params.") + s.name + " must be >= 1; got " + str(s.value));
    // Grid y enumerates the (batch, head) segments.
    const long long segments = static_cast<long long>(in->batch) * in->heads;
    if (segments > 65535)
        return fail(FDMA_STATUS_UNSUPPORTED, "params.batch * params.heads must be <= 65535; got " + str(segments));
    workspace_bytes = plan_topk(segments, in->seqlen_k, in->selection == FDMA_SELECT_TOPK).workspace_bytes;
    return FDMA_STATUS_SUCCESS;
}

// An int32 output of `elements` elements (pairs count as two) at `ptr`: alignment, device memory, extent.
static fdma_status check_output(const int32_t* ptr, long long elements, int alignment, FieldName name, Extent& extent) {
    if (reinterpret_cast<std::uintptr_t>(ptr) % alignment != 0)
        return fail(FDMA_STATUS_MISALIGNED, name.str() + " must be " + str(alignment) + "-byte aligned; got address " +
                                                str(static_cast<long long>(reinterpret_cast<std::uintptr_t>(ptr))));
    if (const fdma_status st = check_device_pointer(ptr, name)) return st;
    const char* begin = reinterpret_cast<const char*>(ptr);
    extent = {begin, begin + 4 * elements, name, true};
    return FDMA_STATUS_SUCCESS;
}

fdma_status make_topk_call(const fdma_topk_params* in, TopkArgs& out, uint64_t& workspace_bytes) {
    if (const fdma_status st = plan_topk_call(in, workspace_bytes)) return st;
    const fdma_topk_params& p = *in;
    const bool topk = p.selection == FDMA_SELECT_TOPK;
    if ((topk || p.survivors != nullptr) && p.window < 1)
        return fail(FDMA_STATUS_INVALID_ARGUMENT,
                    std::string("params.window must be >= 1 ") + (topk ? "for FDMA_SELECT_TOPK" : "when params.survivors is given") +
                        "; got " + str(p.window));
    if (p.is_causal != 0 && p.is_causal != 1)
        return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.is_causal must be 0 or 1; got " + str(p.is_causal));
    if (p.scores.data == nullptr) return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.scores.data is null");
    const struct { const char* name; int value, expected; } dims[] = {
        {"batch", p.scores.batch, p.batch}, {"heads", p.scores.heads, p.heads}, {"rows", p.scores.rows, 1}};
    for (const auto& dim : dims)
        if (dim.value != dim.expected)
            return fail(FDMA_STATUS_INVALID_ARGUMENT, std::string("params.scores.") + dim.name + " must be " +
                                                          str(dim.expected) + " (no broadcast); got " + str(dim.value));

    enum { kScores, kLifetimes, kSurvivors, kWorkspace, kExtents };
    Extent extents[kExtents];
    // The scores seen as the bias of a problem of these sizes: dtype, alignment, strides, extent, device memory.
    fdma_problem shape{};
    shape.batch = p.batch;
    shape.seqlen_q = p.seqlen_q;
    shape.seqlen_k = p.seqlen_k;
    shape.heads_q = shape.heads_kv = p.heads;
    BroadcastOperand scores;
    fdma_status st;
    if ((st = check_broadcast(p.scores, "params.", "scores", shape, true, false, scores, extents[kScores])))
        return st;
    if (p.lifetimes == nullptr) return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.lifetimes is null");
    const long long batch_heads = static_cast<long long>(p.batch) * p.heads;
    if ((st = check_output(p.lifetimes, 2 * batch_heads * p.seqlen_k, 8, {"params.", "lifetimes"}, extents[kLifetimes])) ||
        (p.survivors != nullptr &&
         (st = check_output(p.survivors, batch_heads * p.window, 4, {"params.", "survivors"}, extents[kSurvivors]))) ||
        (st = check_workspace(p.workspace, p.workspace_bytes, workspace_bytes, extents[kWorkspace])) ||
        (st = check_no_overlaps(extents, kExtents)))
        return st;

    out = TopkArgs{};
    out.scores = scores.data;
    out.stride_batch = scores.stride_batch;
    out.stride_head = scores.stride_head;
    out.stride_key = scores.stride_key;
    out.score_type = scores.type;
    out.batch = p.batch;
    out.heads = p.heads;
    out.seqlen_q = p.seqlen_q;
    out.seqlen_k = p.seqlen_k;
    out.window = p.window;
    out.is_causal = p.is_causal;
    out.selection = p.selection;
    out.lifetimes = p.lifetimes;
    out.survivors = p.survivors;
    return FDMA_STATUS_SUCCESS;
}

}  // namespace fdma

// Checks of the attention problem both directions share (fdma_problem) and its resolution into the kernels'
// form; what each direction adds is checked by fwd_args.cpp and bwd_args.cpp.
#pragma once

#include <string>

#include "../kernels/params.cuh"
#include "../kernels/plan.cuh"
#include "checks.h"
#include "flash_dmattn.h"
#include "status.h"

namespace fdma {

// The tensors of a problem, for the callers' overlap checks: q, k, v, mask, lifetimes, bias.
constexpr int kProblemExtents = 6;

// Dtype and sizes, the fields a plan (and a workspace-size query) reads; prefix: "params.problem.".
fdma_status check_problem_shape(const fdma_problem& p, const char* prefix);

// What a plan depends on, of a problem whose shape is checked.
ProblemShape problem_shape(const fdma_problem& p);

// Checks everything and resolves it for the kernels (bitmap pointers left null for the caller's
// scratch); fills extents[0, kProblemExtents).
fdma_status check_problem(const fdma_problem& p, const char* prefix, AttentionParams& out, Extent* extents);

// Checks that params is not null and its struct_size and reserved fields (Params: any of the ABI's parameter
// structs with both).
template <typename Params>
fdma_status check_struct_header(const Params* params) {
    if (params == nullptr) return fail(FDMA_STATUS_INVALID_ARGUMENT, "params is null");
    if (params->struct_size != sizeof(Params))
        return fail(FDMA_STATUS_STRUCT_SIZE, "params.struct_size is " + str(params->struct_size) + "; this library (ABI " +
                                                 str(FDMA_ABI_VERSION) + ") expects " + str(sizeof(Params)));
    for (uint64_t r : params->reserved)
        if (r != 0) return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.reserved must be zero");
    return FDMA_STATUS_SUCCESS;
}

// Checks the struct header of a direction's parameters (fdma_fwd_params or fdma_bwd_params), then the
// problem's shape.
template <typename Params>
fdma_status check_params_header(const Params* params) {
    if (const fdma_status st = check_struct_header(params)) return st;
    return check_problem_shape(params->problem, "params.problem.");
}

}  // namespace fdma

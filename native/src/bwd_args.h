// Checks every field of the ABI's backward parameters and resolves them, with the call's plan, into the
// kernels' form.
#pragma once

#include "../kernels/params.cuh"
#include "../kernels/plan.cuh"
#include "flash_dmattn.h"

namespace fdma {

// Checks the fields a plan reads (struct size, reserved fields, mode, the problem's shape, the bias
// gradient's presence) and plans the call.
fdma_status plan_bwd_call(const fdma_bwd_params* params, BwdPlan& plan);

// Checks everything; on failure returns the status, records the message, and leaves nothing
// launched. The scratch pointers of `out` are left for place_bwd_scratch.
fdma_status make_bwd_call(const fdma_bwd_params* params, BwdParams& out, BwdPlan& plan);

// Points the scratch fields of `params` into `base`, laid out as `plan` says.
void place_bwd_scratch(BwdParams& params, const BwdPlan& plan, void* base);

}  // namespace fdma

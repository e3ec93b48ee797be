// Checks every field of the ABI's forward parameters and resolves them, with the call's plan, into the
// kernels' form.
#pragma once

#include "../kernels/params.cuh"
#include "../kernels/plan.cuh"
#include "checks.h"
#include "flash_dmattn.h"

namespace fdma {

// Checks the fields a plan reads (struct size, reserved fields, the problem's shape) and plans the call.
fdma_status plan_fwd_call(const fdma_fwd_params* params, FwdPlan& plan);

// Scratch given by the caller: enough bytes, aligned, device memory; fills its extent.
fdma_status check_workspace(const void* workspace, uint64_t workspace_bytes, uint64_t needed, Extent& extent);

// Checks everything; on failure returns the status, records the message, and leaves nothing
// launched. The scratch pointers of `out` are left for place_fwd_scratch.
fdma_status make_fwd_call(const fdma_fwd_params* params, FwdParams& out, FwdPlan& plan);

// Points the scratch fields of `params` into `base`, laid out as `plan` says.
void place_fwd_scratch(FwdParams& params, const FwdPlan& plan, void* base);

}  // namespace fdma

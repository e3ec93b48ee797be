// Checks every field of the ABI's backward parameters and resolves them into the kernels' form.
#pragma once

#include "../kernels/bwd_params.cuh"
#include "bwd_launch.h"
#include "flash_dmattn.h"

namespace fdma {

// Checks what sizing the scratch needs (struct sizes, shapes) and lays the scratch out.
fdma_status bwd_scratch_layout(const fdma_bwd_params* params, BwdScratch& scratch);

// Checks everything; on failure returns the status, records the message, and leaves nothing
// launched. The scratch pointers of `out` are left for the caller to set from `scratch`.
fdma_status make_bwd_params(const fdma_bwd_params* params, BwdParams& out, BwdScratch& scratch);

// Points the scratch fields of `params` into `base` laid out as `scratch`.
void place_bwd_scratch(BwdParams& params, const BwdScratch& scratch, void* base);

}  // namespace fdma

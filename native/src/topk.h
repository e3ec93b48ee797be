// The top-k lifetime builder's host side: its argument checks (topk_args.cpp) and its launch
// (topk_kernels.cu, compiled once); the exports are in api.cpp.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../kernels/topk_plan.cuh"
#include "flash_dmattn.h"

namespace fdma {

// Checks the fields the scratch size reads (struct size, reserved fields, selection, sizes) and computes it.
fdma_status plan_topk_call(const fdma_topk_params* params, uint64_t& workspace_bytes);

// Checks everything; on failure returns the status, records the message, and leaves nothing launched. The
// scratch pointer of `out` is left for the caller.
fdma_status make_topk_call(const fdma_topk_params* params, TopkArgs& out, uint64_t& workspace_bytes);

cudaError_t launch_topk_lifetimes(const TopkArgs& args, cudaStream_t stream);

}  // namespace fdma

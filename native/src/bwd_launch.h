// Host entry to the backward kernels: one instantiation per (dtype, head dim), compiled in parallel from
// files CMake generates (bwd_instance.cu.in), dispatched at run time (dispatch.cpp).
#pragma once

#include <cuda_runtime.h>

#include "../kernels/params.cuh"
#include "../kernels/plan.cuh"

namespace fdma {

template <int kElementType, int kHeadDim>
cudaError_t launch_bwd(const BwdParams& params, const BwdPlan& plan, cudaStream_t stream);

cudaError_t dispatch_bwd(const BwdParams& params, const BwdPlan& plan, int dtype, int head_dim, cudaStream_t stream);

}  // namespace fdma

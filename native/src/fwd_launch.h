// Host entry to the forward kernels: one instantiation per (dtype, head dim), compiled in parallel from
// files CMake generates (fwd_instance.cu.in), dispatched at run time (dispatch.cpp).
#pragma once

#include <cuda_runtime.h>

#include "../kernels/params.cuh"
#include "../kernels/plan.cuh"

namespace fdma {

template <int kElementType, int kHeadDim>
cudaError_t launch_fwd(const FwdParams& params, const FwdPlan& plan, cudaStream_t stream);

// dtype: fdma_dtype (fp16 or bf16); head_dim: a supported one (checked by the caller).
cudaError_t dispatch_fwd(const FwdParams& params, const FwdPlan& plan, int dtype, int head_dim, cudaStream_t stream);

}  // namespace fdma

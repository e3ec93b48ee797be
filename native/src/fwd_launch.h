// Host entry to the forward kernels: one instantiation per (dtype, head dim), compiled in parallel from
// files CMake generates (fwd_instance.cu.in), dispatched at run time (dispatch.cpp).
#pragma once

#include <cuda_runtime.h>

#include "../kernels/params.cuh"
#include "../kernels/plan.cuh"

namespace fdma {

template <int kElementType, int kHeadDim>
cudaError_t launch_fwd(const FwdParams& params, const FwdPlan& plan, cudaStream_t stream);

// Whether this build has the forward's wgmma kernels (sm_90a; native/CMakeLists.txt decides).
#ifndef FDMA_WGMMA_FORWARD
#define FDMA_WGMMA_FORWARD 0
#endif
constexpr bool kWgmmaForwardBuilt = FDMA_WGMMA_FORWARD != 0;

// The wgmma main kernel of one (dtype, head dim, visibility policy), specialized in the sm_90a translation units
// (fwd_wgmma_instance.cu.in) for the head dims has_wgmma_forward names.
template <int kElementType, int kHeadDim, typename Visibility>
cudaError_t launch_fwd_wgmma(const FwdParams& params, const FwdPlan& plan, cudaStream_t stream);

// The forward's main kernel for calls of this head dim (longer than decode) on the current device:
// device_fwd_kernel (plan.cuh) with wgmma available where this build has its sm_90a code and the environment does not
// set FDMA_FWD_KERNEL=mma_sync (read once per process). Each device's compute capability is asked once.
FwdKernel select_fwd_kernel(int head_dim);

// dtype: fdma_dtype (fp16 or bf16); head_dim: a supported one (checked by the caller).
cudaError_t dispatch_fwd(const FwdParams& params, const FwdPlan& plan, int dtype, int head_dim, cudaStream_t stream);

}  // namespace fdma

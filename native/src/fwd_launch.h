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

// The forward's main kernel for a call of this head dim on the current device: wgmma where this build has it, the
// head dim is one it covers, the device is compute capability 9.0 and the environment sets FDMA_FWD_KERNEL=wgmma
// (read once); else mma.sync. The switch stays until the wgmma path wins the benchmark and passes every test.
FwdKernel select_fwd_kernel(int head_dim);

// dtype: fdma_dtype (fp16 or bf16); head_dim: a supported one (checked by the caller).
cudaError_t dispatch_fwd(const FwdParams& params, const FwdPlan& plan, int dtype, int head_dim, cudaStream_t stream);

}  // namespace fdma

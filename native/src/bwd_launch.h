// Host entry to the backward kernels: one instantiation per (dtype, head dim), compiled in parallel from
// files CMake generates (bwd_instance.cu.in), dispatched at run time (dispatch.cpp).
#pragma once

#include <cuda_runtime.h>

#include "../kernels/params.cuh"
#include "../kernels/plan.cuh"

namespace fdma {

template <int kElementType, int kHeadDim>
cudaError_t launch_bwd(const BwdParams& params, const BwdPlan& plan, cudaStream_t stream);

// The kernels a wgmma plan (plan_bwd's wgmma) runs in place of the mma.sync ones, specialized in the sm_90a translation
// units (bwd_wgmma_instance.cu.in) for the head dims has_wgmma_backward names.
enum BwdWgmmaStep { kBwdWgmmaDelta, kBwdWgmmaDkdv, kBwdWgmmaDq };
template <int kElementType, int kHeadDim, typename Visibility>
cudaError_t launch_bwd_wgmma(BwdWgmmaStep step, const BwdParams& params, const BwdPlan& plan, cudaStream_t stream);

// Whether this call's backward may run the wgmma kernels (plan_bwd's wgmma_available): a build with sm_90a code, a device
// of compute capability 9.0, a head dim has_wgmma_backward names, and FDMA_BWD_KERNEL=wgmma set (read once per process):
// an opt-in until the whole GPU suite has run with it, README "Hopper backward (sm_90)".
bool select_bwd_wgmma(int head_dim);

cudaError_t dispatch_bwd(const BwdParams& params, const BwdPlan& plan, int dtype, int head_dim, cudaStream_t stream);

}  // namespace fdma

// Definition of launch_fwd, included only by the generated per-head-dim instantiation files. Everything it
// launches with (kernel, grids, threads, shared memory, splits) comes from the call's plan (plan.cuh).
#pragma once

#include "../kernels/fwd_combine.cuh"
#include "../kernels/fwd_decode.cuh"
#include "../kernels/fwd_kernel.cuh"
#include "fwd_launch.h"
#include "shared_kernels.h"

namespace fdma {

// Launches a forward main kernel with the plan's grid and shared memory (its limit set to the plan's).
template <typename Kernel>
cudaError_t launch_fwd_main(Kernel kernel, const FwdParams& params, const FwdPlan& plan, cudaStream_t stream) {
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, plan.smem_limit);
    if (err != cudaSuccess) return err;
    kernel<<<dim3(plan.grid.x, plan.grid.y, plan.grid.z), plan.threads, plan.smem_bytes, stream>>>(params);
    return cudaGetLastError();
}

template <int kElementType, int kHeadDim, typename Visibility>
cudaError_t launch_fwd_kernels(const FwdParams& params, const FwdPlan& plan, cudaStream_t stream) {
    cudaError_t err = cudaErrorNotSupported;  // a wgmma plan where the library has no wgmma kernel: never planned
    if (plan.kernel == kFwdMmaSync)
        err = launch_fwd_main(dmattn_fwd_kernel<kElementType, kHeadDim, Visibility>, params, plan, stream);
    else if (plan.kernel == kFwdDecode)
        err = launch_fwd_main(dmattn_fwd_decode_kernel<kElementType, kHeadDim, Visibility>, params, plan, stream);
    else if constexpr (kWgmmaForwardBuilt && has_wgmma_forward(kHeadDim))
        err = launch_fwd_wgmma<kElementType, kHeadDim, Visibility>(params, plan, stream);
    if (err != cudaSuccess) return err;
    if (plan.kv_splits > 1)
        fwd_combine_kernel<kElementType, kHeadDim><<<plan.combine_blocks, kCombineThreads, 0, stream>>>(params);
    return cudaGetLastError();
}

// The mask form picks the visibility policy: key lifetimes, or the dense mask (none included), whose
// pre-pass builds the tile bitmaps first.
template <int kElementType, int kHeadDim>
cudaError_t launch_fwd(const FwdParams& params, const FwdPlan& plan, cudaStream_t stream) {
    if (params.attn.lifetimes.data != nullptr) return launch_fwd_kernels<kElementType, kHeadDim, KeyLifetimes>(params, plan, stream);
    if (params.attn.mask.data != nullptr)
        if (const cudaError_t err = launch_tile_occupancy(params.attn, plan.tile, plan.occupancy_grid, stream)) return err;
    return launch_fwd_kernels<kElementType, kHeadDim, DenseMask>(params, plan, stream);
}

}  // namespace fdma

#define FDMA_INSTANTIATE_FWD(HEAD_DIM)                                                                                    \
    template cudaError_t fdma::launch_fwd<fdma::kFloat16, HEAD_DIM>(const FwdParams&, const FwdPlan&, cudaStream_t); \
    template cudaError_t fdma::launch_fwd<fdma::kBFloat16, HEAD_DIM>(const FwdParams&, const FwdPlan&, cudaStream_t);

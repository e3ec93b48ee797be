// Definition of launch_fwd, included only by the generated per-head-dim instantiation files.
#pragma once

#include "../kernels/fwd_kernel.cuh"
#include "fwd_launch.h"

namespace fdma {

template <int kElementType, int kHeadDim>
cudaError_t launch_fwd(const FwdParams& params, int batch, cudaStream_t stream) {
    using Traits = FwdTraits<kHeadDim>;
    const int m_tiles = (params.seqlen_q + Traits::kBlockM - 1) / Traits::kBlockM;
    if (params.mask.data != nullptr) {
        const int n_tiles = (params.seqlen_k + Traits::kBlockN - 1) / Traits::kBlockN;
        const dim3 grid(m_tiles, occupancy_words(n_tiles), params.mask.batches * params.mask.heads);
        tile_occupancy_kernel<Traits::kBlockM, Traits::kBlockN><<<grid, kOccupancyThreads, 0, stream>>>(params);
        if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
    }
    const auto kernel = dmattn_fwd_kernel<kElementType, kHeadDim>;
    const int smem_bytes = Traits::kSmemBytes + fwd_bias_stage_bytes(Traits::kTile, params.bias);
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
    if (err != cudaSuccess) return err;
    const dim3 grid(m_tiles, params.heads_q, batch);
    kernel<<<grid, Traits::kThreads, smem_bytes, stream>>>(params);
    return cudaGetLastError();
}

}  // namespace fdma

#define FDMA_INSTANTIATE_FWD(HEAD_DIM)                                                                  \
    template cudaError_t fdma::launch_fwd<fdma::kFloat16, HEAD_DIM>(const FwdParams&, int, cudaStream_t); \
    template cudaError_t fdma::launch_fwd<fdma::kBFloat16, HEAD_DIM>(const FwdParams&, int, cudaStream_t);

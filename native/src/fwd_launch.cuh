// Definition of launch_fwd, included only by the generated per-head-dim instantiation files.
#pragma once

#include "../kernels/fwd_combine.cuh"
#include "../kernels/fwd_kernel.cuh"
#include "fwd_launch.h"

namespace fdma {

template <int kElementType, int kHeadDim>
cudaError_t launch_fwd(const FwdParams& params, cudaStream_t stream) {
    using Traits = FwdTraits<kHeadDim>;
    const int m_tiles = (params.seqlen_q + Traits::kBlockM - 1) / Traits::kBlockM;
    if (params.mask.data != nullptr) {
        const int n_tiles = (params.seqlen_k + Traits::kBlockN - 1) / Traits::kBlockN;
        const dim3 grid(m_tiles, occupancy_words(n_tiles), params.mask.batches * params.mask.heads);
        tile_occupancy_kernel<Traits::kBlockM, Traits::kBlockN><<<grid, kOccupancyThreads, 0, stream>>>(params);
        if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;
    }
    const auto kernel = dmattn_fwd_kernel<kElementType, kHeadDim>;
    // The limit is the same for every call: set per call, a smaller one could land between another
    // thread's setting and its launch.
    const int smem_limit = Traits::kSmemBytes + fwd_max_bias_stage_bytes(Traits::kTile);
    const int smem_bytes = Traits::kSmemBytes + fwd_bias_stage_bytes(Traits::kTile, params.bias);
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_limit);
    if (err != cudaSuccess) return err;
    const dim3 grid(m_tiles, params.heads_q, params.batch * params.kv_splits);
    kernel<<<grid, Traits::kThreads, smem_bytes, stream>>>(params);
    if (params.kv_splits > 1) {
        const long long rows = static_cast<long long>(params.batch) * params.heads_q * params.seqlen_q;
        const unsigned blocks = static_cast<unsigned>((rows + kCombineThreads / 32 - 1) / (kCombineThreads / 32));
        fwd_combine_kernel<kElementType, kHeadDim><<<blocks, kCombineThreads, 0, stream>>>(params);
    }
    return cudaGetLastError();
}

}  // namespace fdma

#define FDMA_INSTANTIATE_FWD(HEAD_DIM)                                                                  \
    template cudaError_t fdma::launch_fwd<fdma::kFloat16, HEAD_DIM>(const FwdParams&, cudaStream_t); \
    template cudaError_t fdma::launch_fwd<fdma::kBFloat16, HEAD_DIM>(const FwdParams&, cudaStream_t);

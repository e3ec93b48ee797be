// Definition of launch_bwd, included only by the generated per-head-dim instantiation files.
#pragma once

#include "../kernels/bwd_kernel.cuh"
#include "../kernels/bwd_prepost.cuh"
#include "bwd_launch.h"

namespace fdma {

template <int kElementType, int kHeadDim>
cudaError_t launch_bwd(const BwdParams& params, const BwdScratch& scratch, cudaStream_t stream) {
    using Traits = BwdTraits<kHeadDim>;
    const FwdParams& p = params.fwd;
    const int m_tiles = (p.seqlen_q + Traits::kBlockM - 1) / Traits::kBlockM;
    const int n_tiles = (p.seqlen_k + Traits::kBlockN - 1) / Traits::kBlockN;
    cudaError_t err = cudaSuccess;
    auto zero = [&](void* ptr, uint64_t bytes) {
        if (err == cudaSuccess && ptr != nullptr && bytes > 0) err = cudaMemsetAsync(ptr, 0, bytes, stream);
    };
    zero(params.d_q_accum, scratch.d_q_accum_bytes);
    zero(params.d_bias_accum, scratch.d_bias_accum_bytes);
    zero(p.occupancy_t, 2 * scratch.bitmap_t_words * sizeof(uint32_t));  // both key-major bitmaps
    zero(p.tile_stats, 2 * sizeof(unsigned long long));
    if (err != cudaSuccess) return err;

    if (p.mask.data != nullptr) {
        const dim3 grid(m_tiles, occupancy_words(n_tiles), p.mask.batches * p.mask.heads);
        tile_occupancy_kernel<Traits::kBlockM, Traits::kBlockN><<<grid, kOccupancyThreads, 0, stream>>>(p);
    }
    const long long rows = static_cast<long long>(p.batch) * p.heads_q * p.seqlen_q;
    const unsigned row_blocks = static_cast<unsigned>((rows + kRowPassThreads / 32 - 1) / (kRowPassThreads / 32));
    const dim3 query_tiles(m_tiles, p.heads_q, p.batch);
    // The query-major kernels stage the bias after their tiles; their limit is the same for every
    // call (see launch_fwd).
    const int dq_smem_limit = Traits::kDqSmemBytes + fwd_max_bias_stage_bytes(Traits::kTile);
    const int dq_smem_bytes = Traits::kDqSmemBytes + fwd_bias_stage_bytes(Traits::kTile, p.bias);
    if (kElementType == kBFloat16) {  // Delta from P and dP: see dmattn_bwd_dq_kernel
        const auto delta = dmattn_bwd_dq_kernel<kElementType, kHeadDim, true>;
        if ((err = cudaFuncSetAttribute(delta, cudaFuncAttributeMaxDynamicSharedMemorySize, dq_smem_limit)))
            return err;
        delta<<<query_tiles, Traits::kThreads, dq_smem_bytes, stream>>>(params);
    } else {
        bwd_delta_kernel<kElementType><<<row_blocks, kRowPassThreads, 0, stream>>>(params, kHeadDim);
    }

    const auto dkdv = dmattn_bwd_dkdv_kernel<kElementType, kHeadDim>;
    if ((err = cudaFuncSetAttribute(dkdv, cudaFuncAttributeMaxDynamicSharedMemorySize, Traits::kDkdvSmemBytes)))
        return err;
    dkdv<<<dim3(n_tiles * Traits::kSlices, params.owner_heads, params.owner_batches), Traits::kThreads,
           Traits::kDkdvSmemBytes, stream>>>(params);

    if (params.d_q_accum == nullptr) {
        const auto dq = dmattn_bwd_dq_kernel<kElementType, kHeadDim, false>;
        if ((err = cudaFuncSetAttribute(dq, cudaFuncAttributeMaxDynamicSharedMemorySize, dq_smem_limit)))
            return err;
        dq<<<query_tiles, Traits::kThreads, dq_smem_bytes, stream>>>(params);
    } else {
        bwd_convert_dq_kernel<kElementType><<<row_blocks, kRowPassThreads, 0, stream>>>(params, kHeadDim);
    }
    if (params.d_bias != nullptr) {
        const long long elements = static_cast<long long>(p.bias.batches) * p.bias.heads * p.bias.rows * p.seqlen_k;
        const unsigned blocks = static_cast<unsigned>((elements + 255) / 256);
        if (params.d_bias_type == kFloat32) bwd_convert_dbias_kernel<kFloat32><<<blocks, 256, 0, stream>>>(params);
        else if (params.d_bias_type == kFloat16) bwd_convert_dbias_kernel<kFloat16><<<blocks, 256, 0, stream>>>(params);
        else bwd_convert_dbias_kernel<kBFloat16><<<blocks, 256, 0, stream>>>(params);
    }
    return cudaGetLastError();
}

}  // namespace fdma

#define FDMA_INSTANTIATE_BWD(HEAD_DIM)                                                                              \
    template cudaError_t fdma::launch_bwd<fdma::kFloat16, HEAD_DIM>(const BwdParams&, const BwdScratch&, cudaStream_t); \
    template cudaError_t fdma::launch_bwd<fdma::kBFloat16, HEAD_DIM>(const BwdParams&, const BwdScratch&, cudaStream_t);

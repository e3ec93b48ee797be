// Definition of launch_bwd, included only by the generated per-head-dim instantiation files. Everything it
// launches with comes from the call's plan (plan.cuh); the element type picks its Delta pass at compile time,
// so that each instantiation holds only the kernels it runs.
#pragma once

#include "../kernels/bwd_kernel.cuh"
#include "bwd_launch.h"
#include "fwd_launch.h"
#include "shared_kernels.h"

namespace fdma {

template <int kElementType, int kHeadDim, typename Visibility>
cudaError_t launch_bwd_kernels(const BwdParams& params, const BwdPlan& plan, cudaStream_t stream) {
    const AttentionParams& attn = params.attn;
    cudaError_t err = cudaSuccess;
    auto zero = [&](void* ptr, u64 bytes) {
        if (err == cudaSuccess && ptr != nullptr && bytes > 0) err = cudaMemsetAsync(ptr, 0, bytes, stream);
    };
    zero(params.d_q_accum, plan.d_q_accum_bytes);
    zero(params.d_bias_accum, plan.d_bias_accum_bytes);
    zero(params.d_k_accum, plan.d_kv_accum_bytes);
    zero(params.d_v_accum, plan.d_kv_accum_bytes);
    zero(attn.occupancy_t, 2 * plan.bitmap_t_words * sizeof(u32));  // both key-major bitmaps
    zero(params.tile_stats, kBwdStatCounters * sizeof(u64));
    if (err != cudaSuccess) return err;

    if (attn.mask.data != nullptr && (err = launch_tile_occupancy(attn, plan.tile, plan.occupancy_grid, stream))) return err;
    const dim3 threads(plan.threads);
    const dim3 query_tiles(plan.query_tile_grid.x, plan.query_tile_grid.y, plan.query_tile_grid.z);
    // The wgmma plan's kernels, in the sm_90a translation units (bwd_wgmma_instance.cu.in).
    auto wgmma = [&](BwdWgmmaStep step) {
        if constexpr (kWgmmaForwardBuilt && has_wgmma_backward(kHeadDim))
            return launch_bwd_wgmma<kElementType, kHeadDim, Visibility>(step, params, plan, stream);
        else return cudaErrorNotSupported;  // never planned: select_bwd_wgmma asks for the build's sm_90a code
    };
    auto query_major = [&](auto kernel) {  // dmattn_bwd_dq_kernel on mma.sync
        const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, plan.dq_smem_limit);
        if (e == cudaSuccess) kernel<<<query_tiles, threads, plan.dq_smem_bytes, stream>>>(params);
        return e;
    };
    if constexpr (kElementType == kBFloat16) {  // Delta from P and dP: see dmattn_bwd_dq_kernel
        err = plan.wgmma ? wgmma(kBwdWgmmaDelta) : query_major(dmattn_bwd_dq_kernel<kElementType, kHeadDim, Visibility, true>);
    } else {
        err = launch_bwd_delta_fp16(params, plan, kHeadDim, stream);
    }
    if (err != cudaSuccess) return err;

    const dim3 dkdv_grid(plan.dkdv_grid.x, plan.dkdv_grid.y, plan.dkdv_grid.z);
    if (plan.wgmma) {
        err = wgmma(kBwdWgmmaDkdv);
        if (err != cudaSuccess) return err;
    } else if (plan.gathered_dkdv) {
        if constexpr (Visibility::kGathers) {
            const auto dkdv = dmattn_bwd_dkdv_gathered_kernel<kElementType, kHeadDim>;
            if ((err = cudaFuncSetAttribute(dkdv, cudaFuncAttributeMaxDynamicSharedMemorySize, plan.dkdv_smem_bytes))) return err;
            dkdv<<<dkdv_grid, plan.dkdv_threads, plan.dkdv_smem_bytes, stream>>>(params);
        } else {
            return cudaErrorInvalidValue;  // a plan gathers only with key lifetimes, whose policy gathers
        }
    } else {
        const auto dkdv = dmattn_bwd_dkdv_kernel<kElementType, kHeadDim, Visibility>;
        if ((err = cudaFuncSetAttribute(dkdv, cudaFuncAttributeMaxDynamicSharedMemorySize, plan.dkdv_smem_bytes))) return err;
        dkdv<<<dkdv_grid, plan.dkdv_threads, plan.dkdv_smem_bytes, stream>>>(params);
    }

    if (params.d_q_accum == nullptr) {
        err = plan.wgmma ? wgmma(kBwdWgmmaDq) : query_major(dmattn_bwd_dq_kernel<kElementType, kHeadDim, Visibility, false>);
        if (err != cudaSuccess) return err;
    } else if ((err = launch_bwd_convert_rows(params.d_q_accum, params.d_q, params.d_q_strides, attn.batch, attn.seqlen_q,
                                              attn.heads_q, kHeadDim, plan.row_blocks, kElementType, stream))) {
        return err;
    }
    if (plan.gathered_dkdv &&
        ((err = launch_bwd_convert_rows(params.d_k_accum, params.d_k, params.d_k_strides, attn.batch, attn.seqlen_k,
                                        attn.heads_kv, kHeadDim, plan.kv_row_blocks, kElementType, stream)) ||
         (err = launch_bwd_convert_rows(params.d_v_accum, params.d_v, params.d_v_strides, attn.batch, attn.seqlen_k,
                                        attn.heads_kv, kHeadDim, plan.kv_row_blocks, kElementType, stream))))
        return err;
    if (params.d_bias.data != nullptr && (err = launch_bwd_convert_dbias(params, plan, stream))) return err;
    return cudaGetLastError();
}

// The mask form picks the visibility policy (see launch_fwd).
template <int kElementType, int kHeadDim>
cudaError_t launch_bwd(const BwdParams& params, const BwdPlan& plan, cudaStream_t stream) {
    return params.attn.lifetimes.data != nullptr ? launch_bwd_kernels<kElementType, kHeadDim, KeyLifetimes>(params, plan, stream)
                                                 : launch_bwd_kernels<kElementType, kHeadDim, DenseMask>(params, plan, stream);
}

}  // namespace fdma

#define FDMA_INSTANTIATE_BWD(HEAD_DIM)                                                                                     \
    template cudaError_t fdma::launch_bwd<fdma::kFloat16, HEAD_DIM>(const BwdParams&, const BwdPlan&, cudaStream_t); \
    template cudaError_t fdma::launch_bwd<fdma::kBFloat16, HEAD_DIM>(const BwdParams&, const BwdPlan&, cudaStream_t);

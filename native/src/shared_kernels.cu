// The small kernels, compiled once (not again in every per-head-dim translation unit).
#include "../kernels/bwd_prepost.cuh"
#include "../kernels/tile_occupancy.cuh"
#include "shared_kernels.h"

namespace fdma {

cudaError_t launch_tile_occupancy(const AttentionParams& attn, Tile tile, Dim3 grid, cudaStream_t stream) {
    const int threads = occupancy_threads(grid, attn.seqlen_q < tile.block_m ? attn.seqlen_q : tile.block_m);
    tile_occupancy_kernel<<<dim3(grid.x, grid.y, grid.z), threads, 0, stream>>>(attn, tile.block_m);
    return cudaGetLastError();
}

cudaError_t launch_bwd_delta_fp16(const BwdParams& params, const BwdPlan& plan, int head_dim, cudaStream_t stream) {
    bwd_delta_kernel<kFloat16><<<plan.row_blocks, kRowPassThreads, 0, stream>>>(params, head_dim);
    return cudaGetLastError();
}

cudaError_t launch_bwd_convert_rows(const float* accum, void* out, Strides strides, int batch, int seqlen, int heads,
                                    int head_dim, unsigned blocks, int dtype, cudaStream_t stream) {
    if (dtype == kFloat16)
        bwd_convert_rows_kernel<kFloat16><<<blocks, kRowPassThreads, 0, stream>>>(accum, out, strides, batch, seqlen, heads, head_dim);
    else
        bwd_convert_rows_kernel<kBFloat16><<<blocks, kRowPassThreads, 0, stream>>>(accum, out, strides, batch, seqlen, heads, head_dim);
    return cudaGetLastError();
}

cudaError_t launch_bwd_convert_dbias(const BwdParams& params, const BwdPlan& plan, cudaStream_t stream) {
    const unsigned blocks = plan.convert_d_bias_blocks;
    switch (params.d_bias.type) {
        case kFloat32: bwd_convert_dbias_kernel<kFloat32><<<blocks, kConvertDBiasThreads, 0, stream>>>(params); break;
        case kFloat16: bwd_convert_dbias_kernel<kFloat16><<<blocks, kConvertDBiasThreads, 0, stream>>>(params); break;
        default: bwd_convert_dbias_kernel<kBFloat16><<<blocks, kConvertDBiasThreads, 0, stream>>>(params); break;
    }
    return cudaGetLastError();
}

}  // namespace fdma

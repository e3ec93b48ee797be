// The small kernels both directions or every head dim share (the mask pre-pass, the backward's row passes
// and conversions), compiled once, in shared_kernels.cu, and launched through these functions.
#pragma once

#include <cuda_runtime.h>

#include "../kernels/params.cuh"
#include "../kernels/plan.cuh"

namespace fdma {

// The dense mask's pre-pass (tile_occupancy.cuh) for a direction's tile, over its plan's occupancy grid.
cudaError_t launch_tile_occupancy(const AttentionParams& attn, Tile tile, Dim3 grid, cudaStream_t stream);

// fp16's Delta = rowsum(dO * O) (bf16 takes Delta from P and dP in dmattn_bwd_dq_kernel).
cudaError_t launch_bwd_delta_fp16(const BwdParams& params, const BwdPlan& plan, int head_dim, cudaStream_t stream);

// An fp32 [batch, seqlen, heads, head_dim] accumulator (the default mode's dQ; the gathered dK and dV) to a
// tensor of the element type `dtype`, over `blocks` blocks of the plan.
cudaError_t launch_bwd_convert_rows(const float* accum, void* out, Strides strides, int batch, int seqlen, int heads,
                                    int head_dim, unsigned blocks, int dtype, cudaStream_t stream);

// The fp32 dBias accumulator to dBias, of the type params.d_bias.type.
cudaError_t launch_bwd_convert_dbias(const BwdParams& params, const BwdPlan& plan, cudaStream_t stream);

}  // namespace fdma

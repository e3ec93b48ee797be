// The backward's small passes around the main kernels: Delta = rowsum(dO * O) before them, and
// the fp32 accumulators of dQ, dBias (and the gathered dK and dV) converted to their output types after them.
// Device-only, no host headers.
#pragma once

#include "mma_tile.cuh"
#include "params.cuh"
#include "plan.cuh"
#include "ptx.cuh"

namespace fdma {

template <int kElementType>
__device__ __forceinline__ float2 unpack2(u32 pair) {
    if (kElementType == kFloat16) return float2{cvt_f32_f16(pair & 0xffffu), cvt_f32_f16(pair >> 16)};
    return float2{cvt_f32_bf16(pair & 0xffffu), cvt_f32_bf16(pair >> 16)};
}

// Rows are (batch, query head, query), one warp each (kRowPassThreads in plan.cuh).
template <int kElementType>
__global__ void __launch_bounds__(kRowPassThreads) bwd_delta_kernel(const BwdParams bp, int head_dim) {
    const AttentionParams& p = bp.attn;
    const i64 row = static_cast<i64>(blockIdx.x) * (kRowPassThreads / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= static_cast<i64>(p.batch) * p.heads_q * p.seqlen_q) return;
    const int query = static_cast<int>(row % p.seqlen_q);
    const int head = static_cast<int>(row / p.seqlen_q % p.heads_q);
    const int batch = static_cast<int>(row / p.seqlen_q / p.heads_q);
    const u32* o = reinterpret_cast<const u32*>(static_cast<const char*>(bp.o) +
        2 * (batch * bp.o_strides.batch + query * bp.o_strides.seq + head * bp.o_strides.head));
    const u32* d_o = reinterpret_cast<const u32*>(static_cast<const char*>(bp.d_o) +
        2 * (batch * bp.d_o_strides.batch + query * bp.d_o_strides.seq + head * bp.d_o_strides.head));
    float sum = 0.f;
    for (int i = lane; i < head_dim / 2; i += 32) {
        const float2 a = unpack2<kElementType>(__ldg(o + i));
        const float2 b = unpack2<kElementType>(__ldg(d_o + i));
        sum += a.x * b.x + a.y * b.y;
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (lane == 0) bp.delta[row] = sum;
}

// An fp32 [B, L, H, D] accumulator (dQ; dK and dV when gathered) to a 16-bit (B, L, H, D) tensor: one warp per
// (batch, position, head) row.
template <int kElementType>
__global__ void __launch_bounds__(kRowPassThreads) bwd_convert_rows_kernel(const float* accum, void* out, Strides strides,
                                                                           int batch, int seqlen, int heads, int head_dim) {
    const i64 row = static_cast<i64>(blockIdx.x) * (kRowPassThreads / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= static_cast<i64>(batch) * seqlen * heads) return;
    const int head = static_cast<int>(row % heads);
    const int position = static_cast<int>(row / heads % seqlen);
    const int b = static_cast<int>(row / heads / seqlen);
    const float2* src = reinterpret_cast<const float2*>(accum + row * head_dim);
    u32* dst = reinterpret_cast<u32*>(static_cast<char*>(out) + 2 * (b * strides.batch + position * strides.seq + head * strides.head));
    for (int i = lane; i < head_dim / 2; i += 32) {
        const float2 v = src[i];
        dst[i] = ElementOps<kElementType>::pack(v.x, v.y);
    }
}

// One thread per element of the contiguous [batches][heads][rows][Lk] accumulator
// (kConvertDBiasThreads a block); kDBiasType is bp.d_bias.type.
template <int kDBiasType>
__global__ void __launch_bounds__(kConvertDBiasThreads) bwd_convert_dbias_kernel(const BwdParams bp) {
    const AttentionParams& p = bp.attn;
    const i64 index = static_cast<i64>(blockIdx.x) * kConvertDBiasThreads + threadIdx.x;
    const int Lk = p.seqlen_k;
    if (index >= static_cast<i64>(p.bias.batches) * p.bias.heads * p.bias.rows * Lk) return;
    const int key = static_cast<int>(index % Lk);
    const i64 row = index / Lk % p.bias.rows;
    const i64 head = index / Lk / p.bias.rows % p.bias.heads;
    const i64 batch = index / Lk / p.bias.rows / p.bias.heads;
    const float v = bp.d_bias_accum[index];
    const BroadcastOperand& d = bp.d_bias;
    const i64 offset = batch * d.stride_batch + head * d.stride_head + row * d.stride_row + key * d.stride_key;
    if constexpr (kDBiasType == kFloat32) {
        static_cast<float*>(const_cast<void*>(d.data))[offset] = v;
    } else {
        const u32 packed = ElementOps<kDBiasType>::pack(v, 0.f);
        static_cast<u16*>(const_cast<void*>(d.data))[offset] = static_cast<u16>(packed & 0xffffu);
    }
}

}  // namespace fdma

// The split-KV forward's second pass: merges the normalised partial outputs and LSEs of a row's
// key splits (fwd_kv_splits, fwd_kernel.cuh) into its output and LSE,
//     lse = log2(sum_s 2^lse_s),   o = sum_s 2^(lse_s - lse) * o_s,
// in fp32. A row no split saw a visible key of gets zeros and LSE -inf, as without splits.
// Device-only, no host headers.
#pragma once

#include "fwd_params.cuh"
#include "mma_tile.cuh"
#include "ptx.cuh"

namespace fdma {

constexpr int kCombineThreads = 128;  // one warp per (batch, query head, query) row

template <int kElementType, int kHeadDim>
__global__ void __launch_bounds__(kCombineThreads) fwd_combine_kernel(const FwdParams p) {
    const i64 rows = static_cast<i64>(p.batch) * p.heads_q * p.seqlen_q;
    const i64 row = static_cast<i64>(blockIdx.x) * (kCombineThreads / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const int query = static_cast<int>(row % p.seqlen_q);
    const int head = static_cast<int>(row / p.seqlen_q % p.heads_q);
    const int batch = static_cast<int>(row / p.seqlen_q / p.heads_q);

    // The partials of split s sit `rows` rows after those of split s - 1 ([split][B][Hq][Lq]).
    float max_lse = neg_inf();
    for (int s = lane; s < p.kv_splits; s += 32) max_lse = fmaxf(max_lse, p.lse_partial[s * rows + row]);
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) max_lse = fmaxf(max_lse, __shfl_xor_sync(0xffffffffu, max_lse, offset));
    const float base = max_lse == neg_inf() ? 0.f : max_lse;  // no split saw a key: every weight is 0
    float sum = 0.f;
    for (int s = lane; s < p.kv_splits; s += 32) sum += ex2_approx(p.lse_partial[s * rows + row] - base);
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    const float inv = sum > 0.f ? 1.f / sum : 0.f;

    constexpr int kPairs = kHeadDim / 2;
    constexpr int kPairsPerLane = (kPairs + 31) / 32;
    float2 acc[kPairsPerLane];
#pragma unroll
    for (int i = 0; i < kPairsPerLane; ++i) acc[i] = float2{0.f, 0.f};
    for (int s = 0; s < p.kv_splits; ++s) {
        const float weight = ex2_approx(p.lse_partial[s * rows + row] - base) * inv;
        const float2* o_s = reinterpret_cast<const float2*>(p.o_partial + (s * rows + row) * kHeadDim);
#pragma unroll
        for (int i = 0; i < kPairsPerLane; ++i) {
            const int pair = lane + 32 * i;
            if (pair < kPairs) {
                const float2 v = o_s[pair];
                acc[i].x += weight * v.x;
                acc[i].y += weight * v.y;
            }
        }
    }

    u32* o_row = reinterpret_cast<u32*>(static_cast<char*>(p.o) +
        2 * (batch * p.o_strides.batch + query * p.o_strides.seq + head * p.o_strides.head));
#pragma unroll
    for (int i = 0; i < kPairsPerLane; ++i)
        if (lane + 32 * i < kPairs) o_row[lane + 32 * i] = ElementOps<kElementType>::pack(acc[i].x, acc[i].y);
    if (p.lse != nullptr && lane == 0)
        p.lse[(static_cast<i64>(batch) * p.heads_q + head) * p.seqlen_q + query] = sum > 0.f ? (base + __log2f(sum)) * kLn2 : neg_inf();
}

}  // namespace fdma

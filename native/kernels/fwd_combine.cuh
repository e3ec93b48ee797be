// The split-KV forward's second pass: merges the normalised partial outputs and LSEs of a row's
// key splits (fwd_kv_splits in plan.cuh, fwd_kernel.cuh) into its output and LSE,
//     lse = log2(sum_s 2^lse_s),   o = sum_s 2^(lse_s - lse) * o_s,
// in fp32. A row no split saw a visible key of gets zeros and LSE -inf, as without splits. A split that saw no visible
// key of a row writes only its LSE (-inf, weight 0); its partial output is neither written nor read.
// Device-only, no host headers.
#pragma once

#include "mma_tile.cuh"
#include "params.cuh"
#include "plan.cuh"
#include "ptx.cuh"

namespace fdma {

// combine_warps_per_row(kv_splits) warps per (batch, query head, query) row (plan.cuh), each reading every
// such-th split's partial output, kCombineBatch of them in flight per lane; their sums meet in shared memory.
constexpr int kCombineBatch = 8;

template <int kElementType, int kHeadDim>
__global__ void __launch_bounds__(kCombineThreads) fwd_combine_kernel(const FwdParams p) {
    constexpr int kWarps = kCombineThreads / 32;
    constexpr int kPairs = kHeadDim / 2;
    constexpr int kPairsPerLane = (kPairs + 31) / 32;
    __shared__ float2 partial_sums[kWarps][kPairs];
    __shared__ float split_weights[kWarps][kKvSplitMax];  // each warp's copy of its row's weights

    const AttentionParams& a = p.attn;
    const i64 rows = static_cast<i64>(a.batch) * a.heads_q * a.seqlen_q;
    const int row_warps = combine_warps_per_row(p.kv_splits);  // divides kWarps
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int part = warp % row_warps;  // which of the row's warps this is
    const i64 row = static_cast<i64>(blockIdx.x) * (kWarps / row_warps) + warp / row_warps;
    const bool active = row < rows;  // no early return: the block meets at a barrier

    // The partials of split s sit `rows` rows after those of split s - 1 ([split][B][Hq][Lq]). Each
    // lane reads the LSEs of splits lane, lane + 32, ...; the weights they give go to shared memory, so that the
    // loop over splits issues only independent loads of the partial outputs, a batch at a time.
    constexpr int kSplitsPerLane = kKvSplitMax / 32;
    float lse[kSplitsPerLane];
    float max_lse = neg_inf();
#pragma unroll
    for (int i = 0; i < kSplitsPerLane; ++i) {
        const int s = lane + 32 * i;
        lse[i] = active && s < p.kv_splits ? p.lse_partial[s * rows + row] : neg_inf();
        max_lse = fmaxf(max_lse, lse[i]);
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) max_lse = fmaxf(max_lse, __shfl_xor_sync(0xffffffffu, max_lse, offset));
    const float base = max_lse == neg_inf() ? 0.f : max_lse;  // no split saw a key: every weight is 0
    float weight[kSplitsPerLane];
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < kSplitsPerLane; ++i) {
        weight[i] = ex2_approx(lse[i] - base);
        sum += weight[i];
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
#pragma unroll
    for (int i = 0; i < kSplitsPerLane; ++i) split_weights[warp][lane + 32 * i] = weight[i] * inv;
    __syncwarp();

    float2 acc[kPairsPerLane];
#pragma unroll
    for (int i = 0; i < kPairsPerLane; ++i) acc[i] = float2{0.f, 0.f};
    const int splits = active ? p.kv_splits : 0;  // warp-uniform
    for (int first = part; first < splits; first += kCombineBatch * row_warps) {
        float w[kCombineBatch];
        float2 v[kCombineBatch][kPairsPerLane];
#pragma unroll
        for (int u = 0; u < kCombineBatch; ++u) {
            const int s = first + u * row_warps;
            w[u] = s < splits ? split_weights[warp][s] : 0.f;
            const bool here = w[u] != 0.f;  // a split that saw no key of the row wrote no partial output
            const float2* o_s = reinterpret_cast<const float2*>(p.o_partial + (static_cast<i64>(here ? s : 0) * rows + row) * kHeadDim);
#pragma unroll
            for (int j = 0; j < kPairsPerLane; ++j) {
                const int pair = lane + 32 * j;
                v[u][j] = here && pair < kPairs ? o_s[pair] : float2{0.f, 0.f};
            }
        }
#pragma unroll
        for (int u = 0; u < kCombineBatch; ++u)
#pragma unroll
            for (int j = 0; j < kPairsPerLane; ++j) {
                acc[j].x += w[u] * v[u][j].x;
                acc[j].y += w[u] * v[u][j].y;
            }
    }
    if (row_warps > 1) {  // block-uniform
#pragma unroll
        for (int j = 0; j < kPairsPerLane; ++j)
            if (lane + 32 * j < kPairs) partial_sums[warp][lane + 32 * j] = acc[j];
        __syncthreads();
        if (part == 0)
            for (int other = warp + 1; other < warp + row_warps; ++other)
#pragma unroll
                for (int j = 0; j < kPairsPerLane; ++j)
                    if (lane + 32 * j < kPairs) {
                        const float2 v = partial_sums[other][lane + 32 * j];
                        acc[j].x += v.x;
                        acc[j].y += v.y;
                    }
    }
    if (!active || part != 0) return;

    const int query = static_cast<int>(row % a.seqlen_q);
    const int head = static_cast<int>(row / a.seqlen_q % a.heads_q);
    const int batch = static_cast<int>(row / a.seqlen_q / a.heads_q);
    u32* o_row = reinterpret_cast<u32*>(static_cast<char*>(p.o) +
        2 * (batch * p.o_strides.batch + query * p.o_strides.seq + head * p.o_strides.head));
#pragma unroll
    for (int i = 0; i < kPairsPerLane; ++i)
        if (lane + 32 * i < kPairs) o_row[lane + 32 * i] = ElementOps<kElementType>::pack(acc[i].x, acc[i].y);
    if (p.lse != nullptr && lane == 0)
        p.lse[(static_cast<i64>(batch) * a.heads_q + head) * a.seqlen_q + query] = sum > 0.f ? (base + __log2f(sum)) * kLn2 : neg_inf();
}

}  // namespace fdma

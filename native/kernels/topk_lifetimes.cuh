// DMA's top-k mask as key lifetimes (flash_dmattn.h, fdma_topk_lifetimes; shared/DMA-TOPK.md), exact, O(Lk)
// memory, over every SM: a (batch, head) is a segment of Lk keys.
//
// With d = Lk - Lq, key j becomes eligible at query first_j = max(0, j - d). Let O_j be the selectable keys that
// outrank j, and t the w-th smallest index in O_j: w eligible keys outrank j from the query at which t becomes
// eligible, so end_j = max(first_j, t - d), or Lq when |O_j| < w. Sorted best first, O_j is the set of keys ranked
// before j.
//
// 1. Ranks: a stable least-significant-digit radix sort of the scores' sort keys (ties keep index order), each
//    pass a digit histogram per tile, a scan per segment and an in-order scatter per tile by one warp.
// 2. Ends (causal): the ranks fall in chunks; each chunk gets the bitmap of the keys ranked before it (a bit per
//    key: the chunks' own keys, then a prefix OR over chunks), and one warp walks the chunk in rank order. The
//    w-th smallest index of the set only moves down as keys join it, so the walk keeps its word and the count
//    below that word, and each key costs a bit select plus the moves it causes.
// Device-only, no host headers.
#pragma once

#include "topk_plan.cuh"

namespace fdma {

// ---- scores as sort keys ----

// fp32, fp16 and bf16 are all sign-magnitude IEEE formats: only the width and +inf's bits differ.
__device__ inline int score_width(int score_type) { return score_type == kFloat32 ? 32 : 16; }
__device__ inline u32 infinity_bits(int score_type) {
    return score_type == kFloat32 ? 0x7f800000u : score_type == kFloat16 ? 0x7c00u : 0x7f80u;
}
__device__ inline u32 all_ones(int width) { return width == 32 ? 0xffffffffu : (1u << width) - 1u; }

// Score j's bits, zero-extended.
__device__ inline u32 load_score(const TopkArgs& a, const char* head_scores, int j) {
    const long long offset = j * a.stride_key;
    if (a.score_type == kFloat32) return reinterpret_cast<const u32*>(head_scores)[offset];
    return reinterpret_cast<const u16*>(head_scores)[offset];
}

// Ascending sort key of "best first": smaller key = higher score. -inf and NaN (never selected) take the
// largest key, all_ones(width), which no selectable score reaches (it would be the bits of a negative NaN).
// -0 becomes +0: equal scores must have equal keys, so that the stable sort breaks the tie by index.
__device__ inline u32 descending_key(u32 raw, int score_type) {
    const int width = score_width(score_type);
    const u32 sign = 1u << (width - 1), inf = infinity_bits(score_type), all = all_ones(width);
    const u32 magnitude = raw & ~sign;
    if (magnitude > inf || raw == (sign | inf)) return all;
    if (magnitude == 0) raw = 0;
    const u32 ascending = (raw & sign) ? (~raw & all) : (raw | sign);
    return ~ascending & all;
}

__device__ inline bool is_positive(u32 raw, int score_type) {
    return (raw & (1u << (score_width(score_type) - 1))) == 0 && raw != 0 && raw <= infinity_bits(score_type);
}

// ---- block-wide primitives ----

// Exclusive prefix sum of `value` over the block; `total` receives the sum. `smem`: 2 * kTopkThreads words.
__device__ inline u32 block_exclusive_scan(u32 value, u32* smem, u32& total) {
    const int t = threadIdx.x;
    u32* in = smem;
    u32* out = smem + kTopkThreads;
    in[t] = value;
    __syncthreads();
    for (int offset = 1; offset < kTopkThreads; offset <<= 1) {
        out[t] = t >= offset ? in[t] + in[t - offset] : in[t];
        __syncthreads();
        u32* swap = in;
        in = out;
        out = swap;
    }
    const u32 inclusive = in[t];
    total = in[kTopkThreads - 1];
    __syncthreads();  // the next scan overwrites smem
    return inclusive - value;
}

// The first query that may see key j: query i sits at position i + d (d = Lk - Lq).
__device__ inline int first_query(int j, int d, int is_causal) { return is_causal && j > d ? j - d : 0; }

// Writes survivors: the keys alive after the last query (end == Lq, first < end) in increasing index order,
// the first w of them (only FDMA_SELECT_POSITIVE can have more), then -1.
__device__ inline void write_survivors(const int* lifetimes, int n, int seqlen_q, int window, int* survivors,
                                       u32* smem) {
    const int per_thread = (n + kTopkThreads - 1) / kTopkThreads;
    const int begin = min(n, static_cast<int>(threadIdx.x) * per_thread), end = min(n, begin + per_thread);
    auto alive = [&](long long j) { return lifetimes[2 * j + 1] == seqlen_q && lifetimes[2 * j] < seqlen_q; };
    u32 count = 0;
    for (int j = begin; j < end; ++j) count += alive(j);
    u32 total;
    u32 slot = block_exclusive_scan(count, smem, total);
    for (int j = begin; j < end && slot < static_cast<u32>(window); ++j)
        if (alive(j)) survivors[slot++] = static_cast<int>(j);
    for (long long s = total + threadIdx.x; s < window; s += kTopkThreads) survivors[s] = -1;
}

// ---- the rank sort ----

// One segment's view of the scratch sections.
__device__ inline u32* segment_column(const TopkArgs& a, u64 offset, long long segment) {
    return reinterpret_cast<u32*>(static_cast<char*>(a.scratch) + offset) + segment * a.seqlen_k;
}

// Sort keys and indices of every (segment, key); grid (key blocks, segments).
__global__ void __launch_bounds__(kTopkRowThreads) topk_keys_kernel(const TopkArgs a, const TopkPlan plan) {
    const long long segment = blockIdx.y;
    const int j = blockIdx.x * kTopkRowThreads + threadIdx.x;
    if (j >= a.seqlen_k) return;
    const char* head_scores = static_cast<const char*>(a.scores) +
                              element_size(a.score_type) * ((segment / a.heads) * a.stride_batch + (segment % a.heads) * a.stride_head);
    segment_column(a, plan.keys, segment)[j] = descending_key(load_score(a, head_scores, j), a.score_type);
    segment_column(a, plan.order, segment)[j] = j;
}

// Digit counts of one tile, written [segment][digit][tile]; grid (tiles, segments).
__global__ void __launch_bounds__(kTopkRowThreads) topk_histogram_kernel(const TopkArgs a, const TopkPlan plan, u64 keys_offset,
                                                                        int shift) {
    __shared__ u32 bins[kRadixBins];
    const long long segment = blockIdx.y;
    const u32* keys = segment_column(a, keys_offset, segment);
    for (int b = threadIdx.x; b < kRadixBins; b += kTopkRowThreads) bins[b] = 0;
    __syncthreads();
    const int begin = blockIdx.x * kSortTileKeys, end = min(begin + kSortTileKeys, a.seqlen_k);
    for (int i = begin + threadIdx.x; i < end; i += kTopkRowThreads) atomicAdd(&bins[(keys[i] >> shift) & (kRadixBins - 1)], 1u);
    __syncthreads();
    u32* counts = reinterpret_cast<u32*>(static_cast<char*>(a.scratch) + plan.counts) + segment * kRadixBins * plan.sort_tiles;
    for (int b = threadIdx.x; b < kRadixBins; b += kTopkRowThreads) counts[b * plan.sort_tiles + blockIdx.x] = bins[b];
}

// The counts of a segment, digit-major, to exclusive offsets: where each (digit, tile) run starts; grid (segments).
__global__ void __launch_bounds__(kScanThreads) topk_offsets_kernel(const TopkArgs a, const TopkPlan plan) {
    __shared__ u32 smem[2 * kScanThreads];
    u32* counts = reinterpret_cast<u32*>(static_cast<char*>(a.scratch) + plan.counts) + blockIdx.x * kRadixBins * plan.sort_tiles;
    const int n = kRadixBins * plan.sort_tiles;
    const int per_thread = (n + kScanThreads - 1) / kScanThreads;
    const int begin = min(n, static_cast<int>(threadIdx.x) * per_thread), end = min(n, begin + per_thread);
    u32 sum = 0;
    for (int i = begin; i < end; ++i) sum += counts[i];
    u32 total;
    u32 running = block_exclusive_scan(sum, smem, total);
    for (int i = begin; i < end; ++i) {
        const u32 count = counts[i];
        counts[i] = running;
        running += count;
    }
}

// Scatters one tile's keys and indices to their places, in order (stable); grid (tiles, segments), one warp. The
// tile is staged in shared memory first (independent loads in flight), so that the in-order rounds wait on no
// global load.
__global__ void __launch_bounds__(32) topk_scatter_kernel(const TopkArgs a, const TopkPlan plan, u64 keys_in, u64 order_in,
                                                         u64 keys_out, u64 order_out, int shift) {
    __shared__ u32 next[kRadixBins];  // where the tile's next key of each digit goes
    __shared__ u32 tile_keys[kSortTileKeys], tile_order[kSortTileKeys];
    const long long segment = blockIdx.y;
    const int lane = threadIdx.x;
    const u32* offsets = reinterpret_cast<const u32*>(static_cast<const char*>(a.scratch) + plan.counts) +
                         segment * kRadixBins * plan.sort_tiles;
    for (int b = lane; b < kRadixBins; b += 32) next[b] = offsets[b * plan.sort_tiles + blockIdx.x];
    const u32* k_in = segment_column(a, keys_in, segment);
    const u32* o_in = segment_column(a, order_in, segment);
    u32* k_out = segment_column(a, keys_out, segment);
    u32* o_out = segment_column(a, order_out, segment);
    const int begin = blockIdx.x * kSortTileKeys, count = min(kSortTileKeys, a.seqlen_k - begin);
#pragma unroll 8
    for (int i = lane; i < count; i += 32) {
        tile_keys[i] = k_in[begin + i];
        tile_order[i] = o_in[begin + i];
    }
    __syncwarp();
    for (int base = 0; base < count; base += 32) {
        const int i = base + lane;
        const bool valid = i < count;
        const u32 key = valid ? tile_keys[i] : 0u;
        const u32 digit = valid ? (key >> shift) & (kRadixBins - 1) : kRadixBins + lane;  // a lane past the end is alone
        const u32 peers = __match_any_sync(0xffffffffu, digit);
        const u32 place = valid ? next[digit] + __popc(peers & ((1u << lane) - 1u)) : 0u;
        __syncwarp();
        if (valid && __ffs(peers) - 1 == lane) next[digit] += __popc(peers);  // one lane per digit
        if (valid) {
            k_out[place] = key;
            o_out[place] = tile_order[i];
        }
        __syncwarp();
    }
}

// ---- the ends ----

// Marks, in the bitmap of the chunk holding each selectable key's rank, that key; grid (rank blocks, segments).
__global__ void __launch_bounds__(kTopkRowThreads) topk_chunk_bits_kernel(const TopkArgs a, const TopkPlan plan, u64 keys_offset,
                                                                         u64 order_offset) {
    const long long segment = blockIdx.y;
    const int r = blockIdx.x * kTopkRowThreads + threadIdx.x;
    if (r >= a.seqlen_k) return;
    if (segment_column(a, keys_offset, segment)[r] == all_ones(score_width(a.score_type))) return;  // never selected
    const u32 j = segment_column(a, order_offset, segment)[r];
    u32* bitmaps = reinterpret_cast<u32*>(static_cast<char*>(a.scratch) + plan.bitmaps);
    atomicOr(bitmaps + (segment * plan.chunks + r / plan.chunk_ranks) * plan.bitmap_words + j / 32, 1u << (j % 32));
}

// Each chunk's bitmap becomes that of the keys ranked before it: an exclusive prefix OR over the chunks; grid
// (word blocks, segments).
__global__ void __launch_bounds__(kTopkRowThreads) topk_chunk_prefix_kernel(const TopkArgs a, const TopkPlan plan) {
    const int word = blockIdx.x * kTopkRowThreads + threadIdx.x;
    if (word >= plan.bitmap_words) return;
    u32* column = reinterpret_cast<u32*>(static_cast<char*>(a.scratch) + plan.bitmaps) +
                  static_cast<long long>(blockIdx.y) * plan.chunks * plan.bitmap_words + word;
    // Batches of loads in flight: the chunks' words are independent until they are ORed.
    constexpr int kBatch = 16;
    u32 before = 0;
    for (int c0 = 0; c0 < plan.chunks; c0 += kBatch) {
        u32 own[kBatch];
#pragma unroll
        for (int i = 0; i < kBatch; ++i) own[i] = c0 + i < plan.chunks ? column[static_cast<long long>(c0 + i) * plan.bitmap_words] : 0u;
#pragma unroll
        for (int i = 0; i < kBatch; ++i) {
            if (c0 + i < plan.chunks) column[static_cast<long long>(c0 + i) * plan.bitmap_words] = before;
            before |= own[i];
        }
    }
}

// Position of the (k+1)-th set bit of word (k < popc(word)).
__device__ inline int select_bit(u32 word, int k) {
    int position = 0;
#pragma unroll
    for (int width = 16; width > 0; width /= 2) {
        const int low = __popc(word & ((1u << width) - 1u));
        if (k >= low) {
            k -= low;
            word >>= width;
            position += width;
        }
    }
    return position;
}

// Walks one chunk of ranks in order: each selectable key's end from the w-th smallest index among the keys ranked
// before it, then the key joins that set. Grid (chunks, segments), one warp; dynamic shared memory: the chunk's
// bitmap when it has at most kWalkSmemWords words (else the walk works on it in place).
__global__ void __launch_bounds__(32) topk_chunk_walk_kernel(const TopkArgs a, const TopkPlan plan, u64 keys_offset,
                                                            u64 order_offset) {
    extern __shared__ u32 walk_smem[];
    constexpr int kStage = 256;  // ranks staged in shared memory at a time: their loads in flight together
    __shared__ u32 batch_key[kStage], batch_index[kStage];
    const long long segment = blockIdx.y;
    const int lane = threadIdx.x;
    const int W = plan.bitmap_words, w = a.window, d = a.seqlen_k - a.seqlen_q;
    u32* own = reinterpret_cast<u32*>(static_cast<char*>(a.scratch) + plan.bitmaps) +
               (segment * plan.chunks + blockIdx.x) * static_cast<long long>(W);
    u32* words = own;
    if (W <= kWalkSmemWords) {
        for (int i = lane; i < W; i += 32) walk_smem[i] = own[i];
        words = walk_smem;
        __syncwarp();
    }

    // Where the w-th smallest index of the set sits: word `at` (W while the set has fewer than w keys), and
    // `below`, the set's keys in the words before it.
    const int per_lane = (W + 31) / 32;
    const int lo = min(W, lane * per_lane), hi = min(W, lo + per_lane);
    u32 mine = 0;
    for (int i = lo; i < hi; ++i) mine += __popc(words[i]);
    u32 inclusive = mine;
#pragma unroll
    for (int offset = 1; offset < 32; offset *= 2) {
        const u32 other = __shfl_up_sync(0xffffffffu, inclusive, offset);
        if (lane >= offset) inclusive += other;
    }
    const u32 total = __shfl_sync(0xffffffffu, inclusive, 31);
    int at = W;
    u32 below = total;
    const bool holds = inclusive >= static_cast<u32>(w) && inclusive - mine < static_cast<u32>(w);
    if (holds) {
        below = inclusive - mine;
        for (at = lo; below + __popc(words[at]) < static_cast<u32>(w); ++at) below += __popc(words[at]);
    }
    const u32 holder = __ballot_sync(0xffffffffu, holds);
    if (holder != 0) {
        at = __shfl_sync(0xffffffffu, at, __ffs(holder) - 1);
        below = __shfl_sync(0xffffffffu, below, __ffs(holder) - 1);
    }

    const u32* keys = segment_column(a, keys_offset, segment);
    const u32* order = segment_column(a, order_offset, segment);
    int2* lifetimes = reinterpret_cast<int2*>(a.lifetimes) + segment * a.seqlen_k;
    const u32 unselectable = all_ones(score_width(a.score_type));
    const int r_begin = blockIdx.x * plan.chunk_ranks, r_end = min(r_begin + plan.chunk_ranks, a.seqlen_k);
    for (int base = r_begin; base < r_end; base += kStage) {
#pragma unroll
        for (int i = lane; i < kStage; i += 32) {
            if (base + i < r_end) {
                batch_key[i] = keys[base + i];
                batch_index[i] = order[base + i];
            }
        }
        __syncwarp();
        if (lane == 0) {
            for (int i = 0; i < kStage && base + i < r_end; ++i) {
                const int j = static_cast<int>(batch_index[i]);
                const int first = first_query(j, d, 1);
                if (batch_key[i] == unselectable) {
                    lifetimes[j] = make_int2(first, first);
                    continue;
                }
                int end = a.seqlen_q;  // fewer than w keys outrank j
                if (at < W) {
                    const int t = at * 32 + select_bit(words[at], w - 1 - static_cast<int>(below));
                    end = t - d > first ? t - d : first;
                }
                lifetimes[j] = make_int2(first, end);
                words[j / 32] |= 1u << (j % 32);
                if (j / 32 < at) {
                    ++below;
                    while (below >= static_cast<u32>(w)) below -= __popc(words[--at]);
                }
            }
        }
        __syncwarp();
    }
}

// Without causality every query has the same eligible keys: the w best-ranked selectable ones are visible to all;
// grid (rank blocks, segments).
__global__ void __launch_bounds__(kTopkRowThreads) topk_global_kernel(const TopkArgs a, const TopkPlan plan, u64 keys_offset,
                                                                     u64 order_offset) {
    const long long segment = blockIdx.y;
    const int r = blockIdx.x * kTopkRowThreads + threadIdx.x;
    if (r >= a.seqlen_k) return;
    const bool selected = r < a.window && segment_column(a, keys_offset, segment)[r] != all_ones(score_width(a.score_type));
    const u32 j = segment_column(a, order_offset, segment)[r];
    reinterpret_cast<int2*>(a.lifetimes)[segment * a.seqlen_k + j] = make_int2(0, selected ? a.seqlen_q : 0);
}

// FDMA_SELECT_POSITIVE: element by element; grid (key blocks, segments).
__global__ void __launch_bounds__(kTopkRowThreads) topk_positive_kernel(const TopkArgs a) {
    const long long segment = blockIdx.y;
    const int j = blockIdx.x * kTopkRowThreads + threadIdx.x;
    if (j >= a.seqlen_k) return;
    const char* head_scores = static_cast<const char*>(a.scores) +
                              element_size(a.score_type) * ((segment / a.heads) * a.stride_batch + (segment % a.heads) * a.stride_head);
    const int first = first_query(j, a.seqlen_k - a.seqlen_q, a.is_causal);
    reinterpret_cast<int2*>(a.lifetimes)[segment * a.seqlen_k + j] =
        make_int2(first, is_positive(load_score(a, head_scores, j), a.score_type) ? a.seqlen_q : first);
}

// Survivors of every segment; grid (segments), kTopkThreads.
__global__ void __launch_bounds__(kTopkThreads) topk_survivors_kernel(const TopkArgs a) {
    __shared__ u32 smem[2 * kTopkThreads];
    const long long segment = blockIdx.x;
    write_survivors(a.lifetimes + 2 * segment * a.seqlen_k, a.seqlen_k, a.seqlen_q, a.window, a.survivors + segment * a.window,
                    smem);
}

}  // namespace fdma

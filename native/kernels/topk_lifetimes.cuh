// DMA's top-k mask as key lifetimes (flash_dmattn.h, fdma_topk_lifetimes; shared/DMA-TOPK.md): one block per
// (batch, head), exact by construction, O(Lk) memory.
//
// With d = Lk - Lq, key j becomes eligible at query first_j = max(0, j - d). Let O_j be the selectable keys that
// outrank j, and t the w-th smallest index in O_j: w eligible keys outrank j from the query at which t becomes
// eligible, so end_j = max(first_j, t - d), or Lq when |O_j| < w. Sorted best first, O_j is the prefix before
// j's rank position r, so t is the w-th smallest value of sorted_index[0, r): a quantile query on a wavelet
// matrix over sorted_index, O(log Lk) per key.
//
// Both the sort (least significant bit first) and the wavelet matrix (most significant bit first) are stable
// partitions by one bit, so one block-wide partition does all the work: each thread owns a run of whole rank
// words, counts its ones, and a block scan gives every thread where its zeros and ones go. Only __syncthreads
// and shared memory, no warp intrinsics: the block's logic can be replayed one thread at a time on a CPU.
//
// Cost per (batch, head): (16 or 32 sort bits, uniform bits skipped) + log2(Lk) passes of O(Lk) on one SM, then
// O(log Lk) per key. Written without a GPU and not timed yet: one block per head bounds a single long head by
// one SM's bandwidth to L2 (the 512K target needs the passes split over blocks); many heads fill the GPU.
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

// The rank words [word_begin, word_end) a thread owns in a pass over n elements: whole words, so that a
// wavelet level's words and counts have a single writer.
struct WordRun {
    long long word_begin, word_end;
};

__device__ inline WordRun word_run(int n) {
    const long long words = rank_words(n), per_thread = (words + kTopkThreads - 1) / kTopkThreads;
    const long long begin = threadIdx.x * per_thread;
    return {begin < words ? begin : words, begin + per_thread < words ? begin + per_thread : words};
}

__device__ inline long long min_ll(long long a, long long b) { return a < b ? a : b; }

// Stably partitions values[0, n) (and payload alongside, if given) by bit `bit` of the values: zeros first,
// into out and payload_out. With `words`, also records the level's bits and, in ones_before, the ones before
// each word. Returns whether the order changed (the sort skips uniform bits; a wavelet level never does).
__device__ inline bool partition_by_bit(const u32* values, u32* out, const u32* payload, u32* payload_out, int n,
                                        int bit, u32* words, u32* ones_before, u32* smem) {
    const WordRun run = word_run(n);
    const long long begin = min_ll(run.word_begin * 32, n), end = min_ll(run.word_end * 32, n);
    u32 ones = 0;
    for (long long i = begin; i < end; ++i) ones += (values[i] >> bit) & 1u;
    u32 total_ones;
    const u32 ones_ahead = block_exclusive_scan(ones, smem, total_ones);
    if (words == nullptr && (total_ones == 0 || total_ones == static_cast<u32>(n))) return false;
    u32 next_zero = static_cast<u32>(begin) - ones_ahead, next_one = static_cast<u32>(n) - total_ones + ones_ahead;
    u32 ones_so_far = ones_ahead;
    for (long long w = run.word_begin; w < run.word_end; ++w) {
        u32 word = 0;
        const long long word_end = min_ll(w * 32 + 32, n);
        for (long long i = w * 32; i < word_end; ++i) {
            const u32 v = values[i], b = (v >> bit) & 1u;
            const u32 dst = b ? next_one++ : next_zero++;
            out[dst] = v;
            if (payload != nullptr) payload_out[dst] = payload[i];
            word |= b << (i & 31);
        }
        if (words != nullptr) {
            words[w] = word;
            ones_before[w] = ones_so_far;
        }
        ones_so_far += __popc(word);
    }
    __syncthreads();  // the next pass reads what the others wrote
    return true;
}

// Ones among a level's bits [0, i).
__device__ inline u32 rank_ones(const u32* words, const u32* ones_before, u32 i) {
    const u32 below = (1u << (i & 31)) - 1u;
    return ones_before[i >> 5] + __popc(words[i >> 5] & below);
}

// The (k+1)-th smallest value of sorted_index[0, r) (k < r), from the wavelet matrix built over it.
__device__ inline u32 wavelet_quantile(const u32* words, const u32* ones_before, long long level_words, int levels,
                                       int n, u32 r, u32 k) {
    u32 lo = 0, hi = r, value = 0;
    for (int level = 0; level < levels; ++level) {
        const u32* w = words + level * level_words;
        const u32* c = ones_before + level * level_words;
        const u32 ones_lo = rank_ones(w, c, lo), ones_hi = rank_ones(w, c, hi);
        const u32 zeros_in_range = (hi - ones_hi) - (lo - ones_lo);
        if (k < zeros_in_range) {
            lo -= ones_lo;
            hi -= ones_hi;
        } else {
            const u32 zeros = static_cast<u32>(n) - rank_ones(w, c, static_cast<u32>(n));
            k -= zeros_in_range;
            lo = zeros + ones_lo;
            hi = zeros + ones_hi;
            value |= 1u << (levels - 1 - level);
        }
    }
    return value;
}

// ---- the kernel ----

// The first query that may see key j: query i sits at position i + d (d = Lk - Lq).
__device__ inline int first_query(int j, int d, int is_causal) { return is_causal && j > d ? j - d : 0; }

// Writes survivors: the keys alive after the last query (end == Lq, first < end) in increasing index order,
// the first w of them (only FDMA_SELECT_POSITIVE can have more), then -1.
__device__ inline void write_survivors(const int* lifetimes, int n, int seqlen_q, int window, int* survivors,
                                       u32* smem) {
    const WordRun run = word_run(n);
    const long long begin = min_ll(run.word_begin * 32, n), end = min_ll(run.word_end * 32, n);
    auto alive = [&](long long j) { return lifetimes[2 * j + 1] == seqlen_q && lifetimes[2 * j] < seqlen_q; };
    u32 count = 0;
    for (long long j = begin; j < end; ++j) count += alive(j);
    u32 total;
    u32 slot = block_exclusive_scan(count, smem, total);
    for (long long j = begin; j < end && slot < static_cast<u32>(window); ++j)
        if (alive(j)) survivors[slot++] = static_cast<int>(j);
    for (long long s = total + threadIdx.x; s < window; s += kTopkThreads) survivors[s] = -1;
}

__global__ void __launch_bounds__(kTopkThreads) topk_lifetimes_kernel(const TopkArgs a) {
    __shared__ u32 smem[2 * kTopkThreads];
    const int n = a.seqlen_k, d = a.seqlen_k - a.seqlen_q;
    const int levels = index_bits(n);
    const long long level_words = rank_words(n);
    for (long long bh = blockIdx.x; bh < static_cast<long long>(a.batch) * a.heads; bh += gridDim.x) {
        const char* head_scores = static_cast<const char*>(a.scores) +
                                  element_size(a.score_type) * ((bh / a.heads) * a.stride_batch +
                                                                (bh % a.heads) * a.stride_head);
        int2* const lifetimes = reinterpret_cast<int2*>(a.lifetimes) + bh * n;

        if (a.selection == kSelectPositive) {
            for (int j = threadIdx.x; j < n; j += kTopkThreads) {
                const int first = first_query(j, d, a.is_causal);
                lifetimes[j] = make_int2(first, is_positive(load_score(a, head_scores, j), a.score_type) ? a.seqlen_q : first);
            }
        } else {
            u32* const scratch = a.scratch + blockIdx.x * topk_scratch_words(n);
            u32 *keys = scratch, *keys_alt = scratch + n, *order = scratch + 2LL * n, *order_alt = scratch + 3LL * n;
            u32* const words = scratch + 4LL * n;
            u32* const ones_before = words + levels * level_words;
            for (int j = threadIdx.x; j < n; j += kTopkThreads) {
                keys[j] = descending_key(load_score(a, head_scores, j), a.score_type);
                order[j] = j;
            }
            __syncthreads();
            const int width = score_width(a.score_type);
            for (int bit = 0; bit < width; ++bit) {  // least significant first, stable: ties stay in index order
                if (partition_by_bit(keys, keys_alt, order, order_alt, n, bit, nullptr, nullptr, smem)) {
                    u32* swap = keys;
                    keys = keys_alt;
                    keys_alt = swap;
                    swap = order;
                    order = order_alt;
                    order_alt = swap;
                }
            }
            // order[r]: the key at rank position r; rank_of inverts it. The unselectable keys rank last.
            u32* const rank_of = keys_alt;
            u32 selectable_here = 0;
            for (int r = threadIdx.x; r < n; r += kTopkThreads) {
                rank_of[order[r]] = r;
                selectable_here += keys[r] != all_ones(width);
            }
            u32 selectable;
            block_exclusive_scan(selectable_here, smem, selectable);  // its barriers also publish rank_of
            if (a.is_causal) {  // the wavelet matrix over order; its levels overwrite order and order_alt
                for (int level = 0; level < levels; ++level) {
                    partition_by_bit(order, order_alt, nullptr, nullptr, n, levels - 1 - level,
                                     words + level * level_words, ones_before + level * level_words, smem);
                    u32* swap = order;
                    order = order_alt;
                    order_alt = swap;
                }
            }
            for (int j = threadIdx.x; j < n; j += kTopkThreads) {
                const u32 r = rank_of[j];
                const int first = first_query(j, d, a.is_causal);
                int end = first;
                if (r < selectable && r < static_cast<u32>(a.window)) {
                    end = a.seqlen_q;  // fewer than w keys outrank j, ever
                } else if (r < selectable && a.is_causal) {
                    const int t = static_cast<int>(
                        wavelet_quantile(words, ones_before, level_words, levels, n, r, static_cast<u32>(a.window - 1)));
                    end = t - d > first ? t - d : first;
                }
                lifetimes[j] = make_int2(first, end);
            }
        }
        if (a.survivors != nullptr) {
            __syncthreads();  // the lifetimes other threads wrote
            write_survivors(reinterpret_cast<const int*>(lifetimes), n, a.seqlen_q, a.window,
                            a.survivors + bh * a.window, smem);
        }
        __syncthreads();  // the next (batch, head) reuses scratch and smem
    }
}

}  // namespace fdma

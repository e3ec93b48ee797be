// The DMA decode cache (flash_dmattn.h, fdma_dma_cache_*): the append and reset kernels. One block per
// (batch, kv head) runs a step's tokens in order, since each token's fate depends on every earlier one; the
// slots' scores, positions and lifetimes stay in global memory (a window of 8K slots would not fit shared memory)
// and shared memory holds only the block's reductions and a batch of free slots. Device-only, no host headers.
#pragma once

#include "dma_cache_params.cuh"
#include "mma_tile.cuh"

namespace fdma {

// One block per cache runs a decode step alone on its SM: the most threads shorten the passes over the slots.
constexpr int kDmaThreads = 1024;
constexpr int kDmaWarps = kDmaThreads / 32;

// A non-NaN score as an unsigned integer of the same order; -0 and +0 compare equal as floats, so they map to
// one value.
__device__ __forceinline__ u32 ordered_bits(float score) {
    const u32 bits = __float_as_uint(score == 0.f ? 0.f : score);
    return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// Smaller key = lower rank: the lower score, and among equal scores the later position (the earlier one wins
// ties). Positions are distinct within a cache, so so are the keys of its slots.
__device__ __forceinline__ u64 rank_key(float score, int position) {
    return (static_cast<u64>(ordered_bits(score)) << 32) | static_cast<u32>(0x7fffffff - position);
}

constexpr u64 kNoKey = ~0ull;
constexpr int kNoSlot = 0x7fffffff;

// What one pass over the slots learns: the lowest-ranked alive key, the first free slot, the alive count.
struct SlotSweep {
    u64 key;
    int slot;
    int first_free;
    int alive;
};

__device__ __forceinline__ void merge(SlotSweep& s, const SlotSweep& o) {
    if (o.key < s.key) s.key = o.key, s.slot = o.slot;
    s.first_free = min(s.first_free, o.first_free);
    s.alive += o.alive;
}

__device__ __forceinline__ SlotSweep warp_merge(SlotSweep s) {
    for (int offset = 16; offset > 0; offset /= 2) {
        SlotSweep o;
        o.key = __shfl_xor_sync(0xffffffffu, s.key, offset);
        o.slot = __shfl_xor_sync(0xffffffffu, s.slot, offset);
        o.first_free = __shfl_xor_sync(0xffffffffu, s.first_free, offset);
        o.alive = __shfl_xor_sync(0xffffffffu, s.alive, offset);
        merge(s, o);
    }
    return s;
}

// The block's merged sweep, returned to every thread. partial: kDmaWarps + 1 entries of shared memory.
__device__ __forceinline__ SlotSweep block_merge(SlotSweep s, SlotSweep* partial) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    s = warp_merge(s);
    if (lane == 0) partial[warp] = s;
    __syncthreads();
    if (warp == 0) {
        s = lane < kDmaWarps ? partial[lane] : SlotSweep{kNoKey, kNoSlot, kNoSlot, 0};
        s = warp_merge(s);
        if (lane == 0) partial[kDmaWarps] = s;
    }
    __syncthreads();
    return partial[kDmaWarps];
}

// Writes into list, in increasing order, the first `target` free slots (position -1) at or after `from`; returns
// how many it found (target, unless fewer are free). A pass of one slot per thread, stopped once enough are found.
__device__ int collect_free_slots(const int* positions, int slots, int from, int target, int* list,
                                  int* warp_counts) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int found = 0;
    for (int base = from; base < slots && found < target; base += kDmaThreads) {
        const int slot = base + threadIdx.x;
        const bool is_free = slot < slots && positions[slot] < 0;
        const u32 ballot = __ballot_sync(0xffffffffu, is_free);
        if (lane == 0) warp_counts[warp] = __popc(ballot);
        __syncthreads();
        int before = 0, total = 0;
        for (int w = 0; w < kDmaWarps; ++w) {
            before += w < warp ? warp_counts[w] : 0;
            total += warp_counts[w];
        }
        const int rank = found + before + __popc(ballot & ((1u << lane) - 1u));
        if (is_free && rank < target) list[rank] = slot;
        found = min(found + total, target);
        __syncthreads();  // the list complete; warp_counts free for the next chunk
    }
    return found;
}

// Copies one token's K and V rows (16-byte vectors; D / 8 per row) into a slot.
__device__ __forceinline__ void copy_token(const DmaAppendParams& p, int batch, int head, int token, int slot) {
    const int vectors = p.cache.head_dim / 8;
    if (static_cast<int>(threadIdx.x) >= 2 * vectors) return;
    const bool is_v = static_cast<int>(threadIdx.x) >= vectors;
    const int part = is_v ? threadIdx.x - vectors : threadIdx.x;
    const Strides& from = is_v ? p.v_strides : p.k_strides;
    const Strides& to = is_v ? p.cache.v_strides : p.cache.k_strides;
    const i64 from_offset = batch * from.batch + token * from.seq + head * from.head;
    const i64 to_offset = batch * to.batch + slot * to.seq + head * to.head;
    const uint4* src = reinterpret_cast<const uint4*>(static_cast<const u16*>(is_v ? p.v : p.k) + from_offset) + part;
    uint4* dst = reinterpret_cast<uint4*>(static_cast<u16*>(is_v ? p.cache.v : p.cache.k) + to_offset) + part;
    *dst = __ldg(src);
}

// One block per (batch, kv head), kDmaThreads threads. The cache's own arrays are written during the kernel and
// read back by other threads of the block, so they are read with plain loads (never the read-only path).
__global__ void __launch_bounds__(kDmaThreads) dma_cache_append_kernel(const DmaAppendParams p) {
    __shared__ SlotSweep partial[kDmaWarps + 1];
    __shared__ int warp_counts[kDmaWarps];
    __shared__ int free_list[kDmaThreads];

    const DmaCacheView& c = p.cache;
    const int batch = blockIdx.x / c.heads_kv, head = blockIdx.x % c.heads_kv;
    const i64 base = static_cast<i64>(blockIdx.x) * c.slots;
    float* scores = c.scores + base;
    int* positions = c.positions + base;
    int2* lifetimes = reinterpret_cast<int2*>(c.lifetimes) + base;
    int* state = c.state + 4 * static_cast<i64>(blockIdx.x);
    const int previous_tokens = state[1], appended = state[2];
    const int S = p.tokens;

    // Free the slots of the keys the last step's tokens replaced (end < the last step's S); the alive keys are
    // visible to every query of this step until a token of it replaces them.
    SlotSweep sweep{kNoKey, kNoSlot, kNoSlot, 0};
    for (int slot = threadIdx.x; slot < c.slots; slot += kDmaThreads) {
        const int position = positions[slot];
        const int2 lifetime = lifetimes[slot];
        if (position >= 0 && lifetime.y < previous_tokens) {
            positions[slot] = -1;
            scores[slot] = neg_inf();
            lifetimes[slot] = make_int2(0, 0);
        } else if (position >= 0) {
            if (lifetime.x != 0 || lifetime.y != S) lifetimes[slot] = make_int2(0, S);  // decode: already {0, 1}
            const u64 key = rank_key(scores[slot], position);
            if (key < sweep.key) sweep.key = key, sweep.slot = slot;
            ++sweep.alive;
            continue;
        }
        sweep.first_free = min(sweep.first_free, slot);
    }
    sweep = block_merge(sweep, partial);
    // Uniform over the block from here on: every thread takes the same decisions.
    u64 lowest_key = sweep.key;
    int lowest_slot = sweep.slot, alive = sweep.alive;
    // The sweep found the first free slot (all a decode step needs); collect_free_slots lists the following ones.
    int first_free = sweep.first_free, scan_from = sweep.first_free + 1, listed = 0, next_listed = 0;

    const unsigned char* token_scores = static_cast<const unsigned char*>(p.scores.data) +
        element_size(p.scores.type) * (batch * p.scores.stride_batch + head * p.scores.stride_head);
    int* slot_of_token = p.slot_of_token != nullptr ? p.slot_of_token + static_cast<i64>(blockIdx.x) * S : nullptr;

    for (int u = 0; u < S; ++u) {
        const float score = load_bias(token_scores, u * p.scores.stride_key, p.scores.type);
        const bool full = alive >= c.window;
        // NaN and -inf are never selected; a full cache takes only a token that outranks its lowest key, and the
        // token's later position loses ties.
        const bool take = score > neg_inf() && (!full || ordered_bits(score) > static_cast<u32>(lowest_key >> 32));
        if (!take) {
            if (slot_of_token != nullptr && threadIdx.x == 0) slot_of_token[u] = -1;
            continue;
        }
        int slot = first_free;
        if (first_free != kNoSlot) {
            first_free = kNoSlot;
        } else {
            if (next_listed == listed) {
                // At most w + S keys are stored during a step, so S - u free slots remain.
                listed = collect_free_slots(positions, c.slots, scan_from, min(S - u, kDmaThreads), free_list, warp_counts);
                next_listed = 0;
                scan_from = free_list[listed - 1] + 1;
            }
            slot = free_list[next_listed++];
        }
        const int position = appended + u;
        if (threadIdx.x == 0) {
            positions[slot] = position;
            scores[slot] = score;
            lifetimes[slot] = make_int2(u, S);
            if (full) lifetimes[lowest_slot].y = u;  // replaced: still visible to the queries before u
            if (slot_of_token != nullptr) slot_of_token[u] = slot;
        }
        copy_token(p, batch, head, u, slot);
        if (!full) {
            ++alive;
            const u64 key = rank_key(score, position);
            if (key < lowest_key) lowest_key = key, lowest_slot = slot;
        } else if (u + 1 < S) {
            // The next lowest key can be anywhere: sweep the alive slots (end == S) again.
            __syncthreads();  // thread 0's writes above
            SlotSweep lowest{kNoKey, kNoSlot, kNoSlot, 0};
            for (int s = threadIdx.x; s < c.slots; s += kDmaThreads) {
                if (lifetimes[s].y != S) continue;
                const u64 key = rank_key(scores[s], positions[s]);
                if (key < lowest.key) lowest.key = key, lowest.slot = s;
            }
            lowest = block_merge(lowest, partial);
            lowest_key = lowest.key;
            lowest_slot = lowest.slot;
        }
    }
    if (threadIdx.x == 0) {
        state[0] = alive;
        state[1] = S;
        state[2] = appended + S;
        state[3] = 0;
    }
}

// Empties `caches` caches of `slots` slots each: every slot free, every counter zero, and K and V zeroed, since the
// forward reads a free slot's rows with zero weight and garbage NaN there would still poison its sums. A
// grid-stride loop over the slots, the counters and the 16-byte vectors of the K and V rows.
__global__ void dma_cache_reset_kernel(const DmaCacheView c, i64 caches) {
    const int vectors = c.head_dim / 8;  // per row
    const i64 slots = caches * c.slots, counters = 4 * caches, row_vectors = slots * vectors;
    const i64 stride = static_cast<i64>(gridDim.x) * blockDim.x;
    for (i64 i = blockIdx.x * static_cast<i64>(blockDim.x) + threadIdx.x; i < row_vectors; i += stride) {
        if (i < slots) {
            c.positions[i] = -1;
            c.scores[i] = neg_inf();
            reinterpret_cast<int2*>(c.lifetimes)[i] = make_int2(0, 0);
        }
        if (i < counters) c.state[i] = 0;
        // Row (batch, slot, head) of the [B, slots, Hkv, D] tensors; slots enumerate (batch, head, slot).
        const i64 row = i / vectors;
        const int part = static_cast<int>(i - row * vectors);
        const i64 batch = row / (static_cast<i64>(c.heads_kv) * c.slots);
        const int head = static_cast<int>(row / c.slots % c.heads_kv), slot = static_cast<int>(row % c.slots);
        const i64 k_offset = batch * c.k_strides.batch + slot * c.k_strides.seq + head * c.k_strides.head;
        const i64 v_offset = batch * c.v_strides.batch + slot * c.v_strides.seq + head * c.v_strides.head;
        reinterpret_cast<uint4*>(static_cast<u16*>(c.k) + k_offset)[part] = make_uint4(0, 0, 0, 0);
        reinterpret_cast<uint4*>(static_cast<u16*>(c.v) + v_offset)[part] = make_uint4(0, 0, 0, 0);
    }
}

}  // namespace fdma

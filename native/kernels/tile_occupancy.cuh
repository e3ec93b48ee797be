// Pre-pass over the mask: two bits per (query tile, key tile), with mask, causality and both
// lengths applied:
//   occupied: some pair of the tile is visible (the forward visits only these tiles);
//   full:     every in-range, causally visible pair is unmasked (the forward then skips the
//             tile's mask bytes and keeps only the causal and length bounds).
// The kernels never read K, V, bias or mask bytes of an empty tile. Reading the mask once here,
// with every SM, costs what one pass over it costs at memory speed. The DenseMask visibility
// policy (visibility.cuh) walks these bitmaps.
// Device-only, no host headers.
#pragma once

#include "mma_tile.cuh"
#include "params.cuh"
#include "plan.cuh"
#include "ptx.cuh"
#include "visibility.cuh"

namespace fdma {

// A block fills one bitmap word: a row of 8 warps of 4 key tiles side by side covers its 32 tiles, and the block's
// rows of warps (occupancy_threads in plan.cuh: 1 or kOccupancyMaxRowGroups) share the query tile's rows: row group g
// takes rows g, g + groups, ... (two rows at a time on the aligned path).
constexpr int kOccupancyTilesPerWarp = 4;
constexpr int kOccupancyTileWarps = 32 / kOccupancyTilesPerWarp;
static_assert(kOccupancyTileWarps * 32 == kOccupancyThreads, "a row of warps fills one bitmap word");

// 0xff in each of the first `count` bytes (count clamped to [0, 4]).
__device__ __forceinline__ u32 first_bytes(int count) {
    return count >= 4 ? 0xffffffffu : count <= 0 ? 0u : (1u << (8 * count)) - 1u;
}

// Folds up to four mask bytes into (any visible, all visible); `selected` marks with 0xff the
// bytes whose pairs are in range and causally visible.
__device__ __forceinline__ void fold(u32 bytes, u32 selected, bool& any, bool& all) {
    any |= (bytes & selected) != 0;
    const u32 x = bytes | ~selected;                    // unselected bytes count as nonzero
    all &= ((x - 0x01010101u) & ~x & 0x80808080u) == 0;  // no zero byte
}

// Grid: (query tiles, bitmap words, mask batches x mask heads) (FwdPlan/BwdPlan::occupancy_grid).
// Each bitmap has the layout [mask batches][mask heads][query tiles][words], tile n at bit n % 32
// of word n / 32. With occupancy_t set (the backward), also [..][key tiles][query-tile words],
// zeroed beforehand.
// The pre-pass's key tiles: a warp row covers 64 keys (32 lanes x 2, or 16 lanes x 16 bytes x 4 tiles). Every
// direction's tiles are that wide; their query rows (block_m) are the kernel's argument.
constexpr int kOccupancyBlockN = 64;

FDMA_HOST_DEVICE constexpr bool every_tile_is_occupancy_wide() {
    for (int d : kHeadDims)
        if (fwd_tile(d).block_n != kOccupancyBlockN || bwd_tile(d).block_n != kOccupancyBlockN) return false;
    return true;
}
static_assert(every_tile_is_occupancy_wide(), "the pre-pass builds the bitmaps of 64-key tiles");

__global__ void __launch_bounds__(kOccupancyMaxRowGroups * kOccupancyThreads) tile_occupancy_kernel(const AttentionParams p, int block_m) {
    constexpr int kBlockN = kOccupancyBlockN;
    // The row groups' tiles meet here: a tile is occupied if some group saw a visible pair, and full unless some group
    // saw a masked one (partial_word; full = its complement).
    __shared__ u32 occupied_word, partial_word;
    if (threadIdx.x == 0) occupied_word = partial_word = 0;
    __syncthreads();

    const int m_tile = blockIdx.x;
    const int bh = blockIdx.z;
    const int word_tile0 = threadIdx.x / 32 % kOccupancyTileWarps * kOccupancyTilesPerWarp;  // the warp's first tile in the word
    const int row_group = threadIdx.x / kOccupancyThreads;
    const int row_groups = blockDim.x / kOccupancyThreads;
    const int lane = threadIdx.x % 32;
    const int Lq = p.seqlen_q;
    const int Lk = p.seqlen_k;
    const TileBounds bounds(p);
    const int m0 = m_tile * block_m;
    const int last_row = min(m0 + block_m, Lq) - 1;
    const u8* mask = static_cast<const u8*>(p.mask.data) + (bh / p.mask.heads) * p.mask.stride_batch +
                     (bh % p.mask.heads) * p.mask.stride_head;
    const i64 stride_key = p.mask.stride_key;
    const int warp_tile0 = blockIdx.y * 32 + word_tile0;

    u32 occupied_bits = 0, partial_bits = 0;
    if (stride_key == 1 && ((reinterpret_cast<u64>(mask) | static_cast<u64>(p.mask.stride_row)) & 15) == 0) {
        // 16-byte loads: lane = (row parity, 16-key chunk of the warp's 4 tiles).
        const int c = warp_tile0 * kBlockN + (lane % 16) * 16;
        bool any = false, all = true;
#pragma unroll 4
        for (int r = m0 + 2 * row_group + lane / 16; r <= last_row; r += 2 * row_groups) {
            const int limit = bounds.last_key(r);
            if (c > limit) continue;
            const u8* src = mask + r * p.mask.stride_row + c;
            u32 w[4];
            if (c + 16 <= Lk) {
                const uint4 v = __ldg(reinterpret_cast<const uint4*>(src));
                w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
            } else {  // the row's last, partial chunk: no read past Lk
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    w[i] = 0;
#pragma unroll
                    for (int b = 0; b < 4; ++b)
                        if (c + 4 * i + b < Lk) w[i] |= static_cast<u32>(__ldg(src + 4 * i + b)) << (8 * b);
                }
            }
#pragma unroll
            for (int i = 0; i < 4; ++i) fold(w[i], first_bytes(limit - (c + 4 * i) + 1), any, all);
        }
        const u32 any_lanes = __ballot_sync(0xffffffffu, any);
        const u32 partial_lanes = __ballot_sync(0xffffffffu, !all);
#pragma unroll
        for (int t = 0; t < kOccupancyTilesPerWarp; ++t) {
            const u32 tile_lanes = (0xfu << (4 * t)) | (0xfu << (16 + 4 * t));
            const u32 bit = 1u << (word_tile0 + t);
            if (any_lanes & tile_lanes) occupied_bits |= bit;
            if (partial_lanes & tile_lanes) partial_bits |= bit;
        }
    } else {
        // Unaligned or strided mask: lane = two neighbouring keys of one tile, tiles in turn.
#pragma unroll 1
        for (int t = 0; t < kOccupancyTilesPerWarp; ++t) {
            const int c = (warp_tile0 + t) * kBlockN + 2 * lane;
            bool any = false, all = true;
#pragma unroll 8
            for (int r = m0 + row_group; r <= last_row; r += row_groups) {
                const int limit = bounds.last_key(r);
                const u8* src = mask + r * p.mask.stride_row + c * stride_key;
                const u32 bytes = (c <= limit ? __ldg(src) : 0u) | (c + 1 <= limit ? static_cast<u32>(__ldg(src + stride_key)) << 8 : 0u);
                fold(bytes, first_bytes(min(limit - c + 1, 2)), any, all);
            }
            const u32 bit = 1u << (word_tile0 + t);
            if (__any_sync(0xffffffffu, any)) occupied_bits |= bit;
            if (!__all_sync(0xffffffffu, all)) partial_bits |= bit;
        }
    }
    if (lane == 0) {
        if (occupied_bits) atomicOr(&occupied_word, occupied_bits);
        if (partial_bits) atomicOr(&partial_word, partial_bits);
    }
    __syncthreads();
    const u32 full_word = ~partial_word;
    if (threadIdx.x == 0) {
        const i64 index = (static_cast<i64>(bh) * gridDim.x + m_tile) * gridDim.y + blockIdx.y;
        p.occupancy[index] = occupied_word;
        p.full_tiles[index] = full_word;
    }
    if (p.occupancy_t != nullptr && threadIdx.x < 32) {  // transposed copy: bit m_tile of each key tile's row
        const int n_tile = blockIdx.y * 32 + threadIdx.x;
        const int n_tiles = tiles_of(Lk, kBlockN);
        if (n_tile < n_tiles) {
            const int m_words = occupancy_words(gridDim.x);
            const i64 index = (static_cast<i64>(bh) * n_tiles + n_tile) * m_words + m_tile / 32;
            const u32 bit = 1u << (m_tile % 32);
            if ((occupied_word >> threadIdx.x) & 1u) atomicOr(p.occupancy_t + index, bit);
            if ((full_word >> threadIdx.x) & 1u) atomicOr(p.full_tiles_t + index, bit);
        }
    }
}

}  // namespace fdma

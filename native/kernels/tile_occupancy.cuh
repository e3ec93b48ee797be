// Pre-pass over the mask: one bit per (query tile, key tile) pair saying whether any pair in it
// is visible (mask, causal and both lengths applied). The forward kernel then walks the set bits
// and never reads K, V, bias or the mask of an empty tile. Reading the mask once here, fully
// parallel, costs what one pass over it costs at memory speed.
// Device-only, no host headers.
#pragma once

#include "fwd_params.cuh"
#include "ptx.cuh"

namespace fdma {

constexpr int kOccupancyThreads = 256;     // 8 warps
constexpr int kOccupancyTilesPerWarp = 4;  // 8 warps x 4 tiles = one 32-bit word per block

// Words of the bitmap row of one query tile.
__host__ __device__ constexpr int occupancy_words(int n_tiles) { return (n_tiles + 31) / 32; }

// Grid: (query tiles, bitmap words, mask batches x mask heads). Bitmap layout:
// [mask batches][mask heads][query tiles][words], tile n at bit n % 32 of word n / 32.
template <int kBlockM, int kBlockN>
__global__ void __launch_bounds__(kOccupancyThreads) tile_occupancy_kernel(const FwdParams p) {
    static_assert(kBlockN == 64, "one lane covers two neighbouring keys of a tile");
    __shared__ u32 word;
    if (threadIdx.x == 0) word = 0;
    __syncthreads();

    const int m_tile = blockIdx.x;
    const int bh = blockIdx.z;
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int Lq = p.seqlen_q;
    const int Lk = p.seqlen_k;
    const int shift = Lk - Lq;
    const int m0 = m_tile * kBlockM;
    const int last_row = min(m0 + kBlockM, Lq) - 1;
    const u8* mask = static_cast<const u8*>(p.mask.data) + (bh / p.mask.heads) * p.mask.stride_batch +
                     (bh % p.mask.heads) * p.mask.stride_head;
    const bool paired = ((reinterpret_cast<u64>(mask) | static_cast<u64>(p.mask.stride_row)) & 1) == 0;

    u32 bits = 0;
#pragma unroll 1
    for (int t = 0; t < kOccupancyTilesPerWarp; ++t) {
        const int n_tile = (blockIdx.y * 32) + warp * kOccupancyTilesPerWarp + t;
        const int n0 = n_tile * kBlockN;
        if (n0 >= Lk || (p.is_causal && n0 > last_row + shift)) continue;  // warp-uniform
        const int col = n0 + 2 * lane;
        // Rows from which each of the two keys is causally visible.
        const int first_row0 = p.is_causal ? col - shift : 0;
        const int first_row1 = p.is_causal ? col + 1 - shift : 0;
        bool any = false;
#pragma unroll 8
        for (int r = m0; r <= last_row; ++r) {
            const u8* row = mask + r * p.mask.stride_row;
            const bool in0 = col < Lk && r >= first_row0;
            const bool in1 = col + 1 < Lk && r >= first_row1;
            u32 pair;
            if (paired && col + 1 < Lk) {
                pair = (in0 | in1) ? __ldg(reinterpret_cast<const u16*>(row + col)) : 0u;
            } else {
                pair = (in0 ? __ldg(row + col) : 0u) | (in1 ? static_cast<u32>(__ldg(row + col + 1)) << 8 : 0u);
            }
            any |= (in0 && (pair & 0xffu)) || (in1 && (pair >> 8));
        }
        if (__any_sync(0xffffffffu, any)) bits |= 1u << (warp * kOccupancyTilesPerWarp + t);
    }
    if (lane == 0 && bits != 0) atomicOr(&word, bits);
    __syncthreads();
    if (threadIdx.x == 0) p.occupancy[(static_cast<i64>(bh) * gridDim.x + m_tile) * gridDim.y + blockIdx.y] = word;
}

}  // namespace fdma

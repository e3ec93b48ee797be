// Which (query, key) pairs of a tile are visible: inside both lengths, not causally hidden
// (bottom-right aligned), and not masked. Which tiles hold any visible pair comes from the
// occupancy bitmap (tile_occupancy.cuh); this file handles the pairs inside a computed tile.
// Device-only, no host headers.
#pragma once

#include "fwd_params.cuh"
#include "ptx.cuh"

namespace fdma {

template <typename Traits>
struct ThreadRows {
    // Row (within the block) of accumulator half `half` (0: c0/c1, 1: c2/c3) of MMA row tile mi.
    static __device__ __forceinline__ int of(int warp, int lane, int mi, int half) {
        return warp * (Traits::kBlockM / Traits::kWarps) + mi * 16 + lane / 4 + half * 8;
    }
};

template <typename Traits>
struct TileVisibility {
    // One register per (mi, half, ni): the mask bytes of this thread's two neighbouring keys.
    static constexpr int kMaskRegs = Traits::kMTiles * 2 * Traits::kNTiles;

    const FwdParams& p;
    const u8* mask;  // this (batch, head)'s mask, or nullptr
    int m0;
    int warp;
    int lane;

    // Issues this thread's mask loads for the tile at n0; called a tile ahead, so that their
    // latency hides behind the current tile's math.
    __device__ __forceinline__ void load_mask(int n0, u32 (&raw)[kMaskRegs]) const {
        const int Lq = p.seqlen_q;
        const int Lk = p.seqlen_k;
        // Two neighbouring keys in one 16-bit load where the tile's keys are whole and aligned.
        const bool paired = n0 + Traits::kBlockN <= Lk &&
                            ((reinterpret_cast<u64>(mask) | static_cast<u64>(p.mask.stride_row)) & 1) == 0;
        if (paired) {
            for_each_pair(n0, [&](int row, int col, const u8* mask_row, u32& r) {
                r = row < Lq ? __ldg(reinterpret_cast<const u16*>(mask_row + col)) : 0u;
            }, raw);
        } else {
            for_each_pair(n0, [&](int row, int col, const u8* mask_row, u32& r) {
                r = (row < Lq && col < Lk ? __ldg(mask_row + col) : 0u) |
                    (row < Lq && col + 1 < Lk ? static_cast<u32>(__ldg(mask_row + col + 1)) << 8 : 0u);
            }, raw);
        }
    }

    template <typename F>
    __device__ __forceinline__ void for_each_pair(int n0, F&& load, u32 (&raw)[kMaskRegs]) const {
#pragma unroll
        for (int mi = 0; mi < Traits::kMTiles; ++mi) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int row = m0 + ThreadRows<Traits>::of(warp, lane, mi, half);
                const u8* mask_row = mask + row * p.mask.stride_row;
#pragma unroll
                for (int ni = 0; ni < Traits::kNTiles; ++ni)
                    load(row, n0 + ni * 8 + (lane % 4) * 2, mask_row, raw[(mi * 2 + half) * Traits::kNTiles + ni]);
            }
        }
    }

    // Sets bit (ni * 4 + e) of visible[mi] when score register s[mi][ni][e] of this thread is
    // visible in the tile at n0; with use_mask, given the mask bytes load_mask fetched for it.
    __device__ __forceinline__ void compute(int n0, bool use_mask, const u32 (&raw)[kMaskRegs],
                                            u32 (&visible)[Traits::kMTiles]) const {
        const int Lq = p.seqlen_q;
        const int Lk = p.seqlen_k;
        const int shift = Lk - Lq;
        const bool interior = n0 + Traits::kBlockN <= Lk && m0 + Traits::kBlockM <= Lq &&
                              (!p.is_causal || n0 + Traits::kBlockN - 1 <= m0 + shift);
        if (interior && !use_mask) {
#pragma unroll
            for (int mi = 0; mi < Traits::kMTiles; ++mi) visible[mi] = 0xffffffffu;
            return;
        }
#pragma unroll
        for (int mi = 0; mi < Traits::kMTiles; ++mi) {
            u32 bits = 0;
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int row = m0 + ThreadRows<Traits>::of(warp, lane, mi, half);
#pragma unroll
                for (int ni = 0; ni < Traits::kNTiles; ++ni) {
                    const int col = n0 + ni * 8 + (lane % 4) * 2;
                    bool v0 = (row < Lq) & (col < Lk) & (!p.is_causal | (col <= row + shift));
                    bool v1 = (row < Lq) & (col + 1 < Lk) & (!p.is_causal | (col + 1 <= row + shift));
                    if (use_mask) {
                        const u32 r = raw[(mi * 2 + half) * Traits::kNTiles + ni];
                        v0 &= (r & 0xffu) != 0;
                        v1 &= (r >> 8) != 0;
                    }
                    bits |= (static_cast<u32>(v0) | static_cast<u32>(v1) << 1) << (ni * 4 + half * 2);
                }
            }
            visible[mi] = bits;
        }
    }
};

}  // namespace fdma

// Which (query, key) pairs are visible, and which tiles hold any: the one answer every kernel's main loop
// asks for. The forward and the dQ kernel walk the key tiles of a query tile; the dK/dV kernel walks the
// query tiles of a key tile. A mask form is a visibility policy: it bounds and walks the tiles, says which
// tiles need per-element tests, and answers those tests. The main loops never read a mask themselves, so a
// new mask form is a new policy type, passed to the kernels as their Visibility template argument.
//
// Every policy keeps to TileBounds (both lengths, bottom-right causal alignment). DenseMask is the 8-bit
// mask broadcast over batches, heads and rows, with the tile bitmaps its pre-pass builds
// (tile_occupancy.cuh); with no mask it is every pair inside the bounds.
// Device-only, no host headers.
#pragma once

#include "mma_tile.cuh"
#include "params.cuh"
#include "plan.cuh"
#include "ptx.cuh"

namespace fdma {

// Both lengths and causality: query i sees key j only if j < Lk, i < Lq and, with causal,
// j <= i + (Lk - Lq) (bottom-right alignment, as in FlashAttention). It reads the kernel's parameters
// where they lie rather than copying them into registers.
struct TileBounds {
    const AttentionParams& a;

    __device__ __forceinline__ explicit TileBounds(const AttentionParams& a_) : a(a_) {}

    __device__ __forceinline__ int seqlen_q() const { return a.seqlen_q; }
    __device__ __forceinline__ int seqlen_k() const { return a.seqlen_k; }
    __device__ __forceinline__ int shift() const { return a.seqlen_k - a.seqlen_q; }
    __device__ __forceinline__ bool causal() const { return a.is_causal != 0; }

    // Key tiles [0, end) can hold a key visible to some row of the query tile at m0; the rest are
    // causally hidden and skipped without a look.
    template <int kBlockM, int kBlockN>
    __device__ __forceinline__ int key_tile_end(int m0) const {
        const int n_tiles = tiles_of(seqlen_k(), kBlockN);
        if (!causal()) return n_tiles;
        const int last_key = min(m0 + kBlockM, seqlen_q()) - 1 + shift();
        return last_key < 0 ? 0 : min(n_tiles, last_key / kBlockN + 1);
    }

    // The first query tile with a row that sees the key tile at n0.
    template <int kBlockM>
    __device__ __forceinline__ int query_tile_begin(int n0) const { return causal() ? max(0, n0 - shift()) / kBlockM : 0; }

    // The last key query row r sees: the causal bound, clamped to the keys that exist.
    __device__ __forceinline__ int last_key(int r) const {
        return causal() ? min(seqlen_k() - 1, r + shift()) : seqlen_k() - 1;
    }

    // Every pair of the tile at (m0, n0) is inside both lengths and causally visible.
    template <int kBlockM, int kBlockN>
    __device__ __forceinline__ bool interior(int m0, int n0) const {
        return n0 + kBlockN <= seqlen_k() && m0 + kBlockM <= seqlen_q() && (!causal() || n0 + kBlockN - 1 <= m0 + shift());
    }

    __device__ __forceinline__ bool visible(int query, int key) const {
        return (query < seqlen_q()) & (key < seqlen_k()) & (!a.is_causal | (key <= query + shift()));
    }
};

// First tile in [n, end) whose bit is set in a bitmap row (bit n % 32 of word n / 32), else end.
__device__ __forceinline__ int next_set_tile(const u32* row, int n, int end) {
    while (n < end) {
        const u32 word = __ldg(row + n / 32) >> (n % 32);
        if (word != 0) return min(n + __ffs(word) - 1, end);
        n = (n / 32 + 1) * 32;
    }
    return end;
}

// The 8-bit mask (nonzero = visible), bound to one (batch, query head) and to the row of tiles one
// block walks: the key tiles of a query tile, or the query tiles of a key tile.
struct DenseMask {
    const AttentionParams& a;
    const u8* mask;       // this (batch, head)'s [rows, Lk] slice; nullptr without a mask
    const u32* occupied;  // the walk's bitmap row: tiles holding a visible pair
    const u32* full;      // tiles whose in-bound pairs are all unmasked
    int end;              // the walk stops here

    // The key tiles [.., n_end) of query tile m_tile, for (batch, head).
    template <int kBlockM, int kBlockN>
    __device__ __forceinline__ static DenseMask by_query_tile(const AttentionParams& a, int batch, int head, int m_tile,
                                                              int n_end) {
        const i64 row = (mask_slot(a.mask, batch, head) * tiles_of(a.seqlen_q, kBlockM) + m_tile) *
                        occupancy_words(tiles_of(a.seqlen_k, kBlockN));
        return DenseMask(a, batch, head, a.occupancy + row, a.full_tiles + row, n_end);
    }

    // The query tiles [.., m_tiles) of key tile n_tile, for (batch, head).
    template <int kBlockM, int kBlockN>
    __device__ __forceinline__ static DenseMask by_key_tile(const AttentionParams& a, int batch, int head, int n_tile) {
        const int m_tiles = tiles_of(a.seqlen_q, kBlockM);
        const i64 column = (mask_slot(a.mask, batch, head) * tiles_of(a.seqlen_k, kBlockN) + n_tile) * occupancy_words(m_tiles);
        return DenseMask(a, batch, head, a.occupancy_t + column, a.full_tiles_t + column, m_tiles);
    }

    __device__ __forceinline__ DenseMask(const AttentionParams& a_, int batch, int head, const u32* occupied_, const u32* full_, int end_)
        : a(a_), mask(reinterpret_cast<const u8*>(broadcast_slice(a_.mask, 1, batch, head))), occupied(occupied_), full(full_),
          end(end_) {}

    // The first tile >= t holding a visible pair, else end.
    __device__ __forceinline__ int next(int t) const { return mask == nullptr ? min(t, end) : next_set_tile(occupied, t, end); }

    // Whether tile t needs per-element tests beyond the bounds: some in-bound pair of it is masked.
    __device__ __forceinline__ bool elementwise(int t) const {
        return mask != nullptr && ((__ldg(full + t / 32) >> (t % 32)) & 1u) == 0;
    }

    // Whether load_pair<true> may fetch the pairs of a tile: its keys all exist (`whole`), and two
    // neighbouring keys' bytes are one aligned 16-bit load.
    __device__ __forceinline__ bool paired_loads(bool whole) const {
        return whole && a.mask.stride_key == 1 && ((reinterpret_cast<u64>(mask) | static_cast<u64>(a.mask.stride_row)) & 1) == 0;
    }

    // The mask bytes of keys key and key + 1 of query row `query` in bytes 0 and 1 (0 outside both
    // lengths); kPaired: in one load (paired_loads). Issued a tile ahead by the forward, which keeps
    // the raw bytes in registers until pair_bit.
    template <bool kPaired>
    __device__ __forceinline__ u32 load_pair(int query, int key) const {
        const u8* row = mask + query * a.mask.stride_row;
        if (kPaired) return query < a.seqlen_q ? __ldg(reinterpret_cast<const u16*>(row + key)) : 0u;
        return (query < a.seqlen_q && key < a.seqlen_k ? __ldg(row + key * a.mask.stride_key) : 0u) |
               (query < a.seqlen_q && key + 1 < a.seqlen_k ? static_cast<u32>(__ldg(row + (key + 1) * a.mask.stride_key)) << 8 : 0u);
    }

    // Element e (0: key, 1: key + 1) of a pair load_pair fetched.
    __device__ __forceinline__ static bool pair_bit(u32 raw, int e) { return e == 0 ? (raw & 0xffu) != 0 : (raw >> 8) != 0; }

    // Whether pair (query, key), in_bounds when the bounds admit it, is visible: its mask byte, read only
    // then, is nonzero. (Written as the select of the loaded byte: the form that kept the dK/dV kernel's
    // spills where they were.)
    __device__ __forceinline__ bool admits(bool in_bounds, int query, int key) const {
        return in_bounds & ((in_bounds ? __ldg(mask + query * a.mask.stride_row + key * a.mask.stride_key) : 0) != 0);
    }
};

// Row (within the block) of accumulator half `half` (0: c0/c1, 1: c2/c3) of MMA row tile mi, in the
// forward's layout (Traits: kBlockM rows over kWarps warps).
template <typename Traits>
struct ThreadRows {
    static __device__ __forceinline__ int of(int warp, int lane, int mi, int half) {
        return warp * (Traits::kBlockM / Traits::kWarps) + mi * 16 + lane / 4 + half * 8;
    }
};

// The forward's per-element visibility of a computed tile: one bit per score register of this
// thread, from the bounds and, where the policy says the tile needs them, the per-element tests,
// whose loads are issued a tile ahead (load) so that their latency hides behind the current tile.
template <typename Traits, typename Visibility>
struct TileVisibility {
    // One register per (mi, half, ni): the raw element data of this thread's two neighbouring keys.
    static constexpr int kRawRegs = Traits::kMTiles * 2 * Traits::kNTiles;

    Visibility policy;
    TileBounds bounds;
    int m0;
    int warp;
    int lane;

    __device__ __forceinline__ void load(int n0, u32 (&raw)[kRawRegs]) const {
        if (policy.paired_loads(n0 + Traits::kBlockN <= bounds.seqlen_k())) load<true>(n0, raw);
        else load<false>(n0, raw);
    }

    template <bool kPaired>
    __device__ __forceinline__ void load(int n0, u32 (&raw)[kRawRegs]) const {
#pragma unroll
        for (int mi = 0; mi < Traits::kMTiles; ++mi) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int row = m0 + ThreadRows<Traits>::of(warp, lane, mi, half);
#pragma unroll
                for (int ni = 0; ni < Traits::kNTiles; ++ni)
                    raw[(mi * 2 + half) * Traits::kNTiles + ni] = policy.template load_pair<kPaired>(row, n0 + ni * 8 + (lane % 4) * 2);
            }
        }
    }

    // Sets bit (ni * 4 + e) of visible[mi] when score register s[mi][ni][e] of this thread is
    // visible in the tile at n0; with elementwise, given the raw data load fetched for it.
    __device__ __forceinline__ void compute(int n0, bool elementwise, const u32 (&raw)[kRawRegs],
                                            u32 (&visible)[Traits::kMTiles]) const {
        if (!elementwise && bounds.template interior<Traits::kBlockM, Traits::kBlockN>(m0, n0)) {
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
                    bool v0 = bounds.visible(row, col);
                    bool v1 = bounds.visible(row, col + 1);
                    if (elementwise) {
                        const u32 r = raw[(mi * 2 + half) * Traits::kNTiles + ni];
                        v0 &= Visibility::pair_bit(r, 0);
                        v1 &= Visibility::pair_bit(r, 1);
                    }
                    bits |= (static_cast<u32>(v0) | static_cast<u32>(v1) << 1) << (ni * 4 + half * 2);
                }
            }
            visible[mi] = bits;
        }
    }
};

}  // namespace fdma

// Forward kernel of Dynamic Mask Attention: flash-style online softmax over key tiles, scores in
// registers only, Q, K and V staged in shared memory by cp.async, tensor-core MMA (m16n8k16) fed by
// ldmatrix (sm_80 and later). The pieces of a forward step (score modification, online softmax, epilogue,
// statistics) are shared with the Hopper kernel (fwd_wgmma.cuh), which keeps a warp's scores in the same
// m16n8 accumulator layout over 16 rows.
//
// One block computes block_m query rows of one (batch, query head). It visits only the key tiles
// its visibility policy walks (visibility.cuh): below the causal bound and, with a mask, marked in
// the occupancy bitmap a pre-pass built (tile_occupancy.cuh); with key lifetimes, tiles of the keys
// alive in the block's rows, gathered. A skipped tile costs no K, V, mask or bias traffic and no math;
// the per-element data of the next visited tile loads during the current one.
//
// Device-only, no host headers: compiled by nvcc (native library) and NVRTC (fallback) alike.
#pragma once

#include "mma_tile.cuh"
#include "params.cuh"
#include "plan.cuh"
#include "ptx.cuh"
#include "score_mod.cuh"
#include "visibility.cuh"

namespace fdma {

template <bool kSwizzled>
struct LayoutOf {
    template <int kHeadDim>
    using Rows = PaddedRows<kHeadDim>;
};
template <>
struct LayoutOf<true> {
    template <int>
    using Rows = Swizzle128Rows;
};

// The forward's tile: fwd_tile of the head dim and main kernel; its shared-memory tiles in padded rows for ldmatrix
// (mma.sync, decode) or 128-byte swizzled rows for wgmma's descriptors. A warp owns 16-row MMA tiles of the block's
// rows and all keys of a tile; in the decode kernel the warps share the rows and split the keys instead, and a row
// may be a (query, head) pair (ThreadRows).
template <int kHeadDim, FwdKernel kKernel = kFwdMmaSync>
struct FwdTraits {
    static constexpr Tile kTile = fwd_tile(kHeadDim, kKernel);
    static constexpr int kBlockM = kTile.block_m;
    static constexpr int kBlockN = kTile.block_n;
    static constexpr int kWarps = kTile.warps;
    static constexpr int kThreads = kWarps * 32;
    static constexpr int kKeyWarps = kKernel == kFwdDecode ? kWarps : 1;  // warps side by side along a tile's keys
    static constexpr int kRowWarps = kWarps / kKeyWarps;
    static constexpr int kWarpKeys = kBlockN / kKeyWarps;                 // keys of a tile each warp computes
    static constexpr bool kPacksHeads = kKernel == kFwdDecode;
    static constexpr int kMTiles = kBlockM / kRowWarps / 16;  // 16-row MMA tiles per warp
    static constexpr int kNTiles = kWarpKeys / 8;             // 8-key score tiles per warp
    static constexpr int kDTiles = kHeadDim / 8;           // 8-wide output tiles
    static constexpr int kChunks = kHeadDim / 8;           // 16-byte chunks per row
    static constexpr int kRowElems = padded_row_elems(kHeadDim);  // mma.sync
    using Layout = typename LayoutOf<kKernel == kFwdWgmma>::template Rows<kHeadDim>;

    static_assert(kBlockM % (kRowWarps * 16) == 0, "each warp owns whole 16-row MMA tiles");
    static_assert(kWarpKeys % 16 == 0 && kBlockN <= 64, "visibility bits: one u32 per MMA row tile");
    static_assert(kHeadDim % 16 == 0, "head dim is a multiple of the MMA k");
};

// Turns raw q.k products into log2-space scores (score_mod.cuh; kBiasType 0: no bias). Without a bias or a softcap
// the score is qk * qk_scale alone: the products stay raw here and the softmax scales them in the same fused
// multiply-add that subtracts the row maximum (kScaledBySoftmax), one instruction per score fewer.
template <int kBiasType, bool kSoftcap>
constexpr bool kScaledBySoftmax = kBiasType == 0 && !kSoftcap;

template <typename Traits, int kBiasType, bool kSoftcap>
__device__ __forceinline__ void apply_score_mod(float (&s)[Traits::kMTiles][Traits::kNTiles][4], const ScoreModParams& m,
                                                const BiasStage<Traits>& bias, int pack, int warp, int lane) {
    if constexpr (!kScaledBySoftmax<kBiasType, kSoftcap>) {
#pragma unroll
        for (int mi = 0; mi < Traits::kMTiles; ++mi) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int row = ThreadRows<Traits>::query(ThreadRows<Traits>::of(warp, lane, mi, half), pack);
#pragma unroll
                for (int ni = 0; ni < Traits::kNTiles; ++ni) {
                    float b[2] = {0.f, 0.f};
                    if (kBiasType != 0)
                        bias.template pair<kBiasType>(row, first_key_column<Traits>(warp) + ni * 8 + (lane % 4) * 2, b[0], b[1]);
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        float& x = s[mi][ni][half * 2 + e];
                        float slope;
                        x = modified_score<kBiasType != 0, kSoftcap>(m, x, b[e], slope);
                    }
                }
            }
        }
    }
}

// Returns the factor the softmax still applies to the scores (online_softmax's score_scale).
template <typename Traits, int kBiasType>
__device__ __forceinline__ float apply_score_mod(float (&s)[Traits::kMTiles][Traits::kNTiles][4], const ScoreModParams& m,
                                                 const BiasStage<Traits>& bias, int pack, int warp, int lane) {
    if (m.softcap_out == 0.f) {
        apply_score_mod<Traits, kBiasType, false>(s, m, bias, pack, warp, lane);
        return kScaledBySoftmax<kBiasType, false> ? m.qk_scale : 1.f;
    }
    apply_score_mod<Traits, kBiasType, true>(s, m, bias, pack, warp, lane);
    return 1.f;
}

// Hidden pairs' scores to -inf (bit ni * 4 + half * 2 + e of visible[mi] clear: s[mi][ni][half * 2 + e] hidden).
template <typename Traits>
__device__ __forceinline__ void hide_scores(float (&s)[Traits::kMTiles][Traits::kNTiles][4], const u32 (&visible)[Traits::kMTiles]) {
#pragma unroll
    for (int mi = 0; mi < Traits::kMTiles; ++mi)
#pragma unroll
        for (int ni = 0; ni < Traits::kNTiles; ++ni)
#pragma unroll
            for (int k = 0; k < 4; ++k)
                if (((visible[mi] >> (ni * 4 + k)) & 1u) == 0) s[mi][ni][k] = neg_inf();
}

// Scores to log2 space with bias and softcap, hidden ones to -inf: one straight-line variant per feature set
// (per-element branches would serialise the warp). bias_type: the bias's DType, 0 without one; pack: the block's
// heads per query (ThreadRows); every_visible: TileVisibility::compute found no hidden pair in the tile, so no score
// needs hiding (the interior of the causal triangle: most tiles). Returns the factor the softmax still applies (1,
// or qk_scale without bias or softcap).
template <typename Traits>
__device__ __forceinline__ float score_mod_tile(float (&s)[Traits::kMTiles][Traits::kNTiles][4],
                                                const u32 (&visible)[Traits::kMTiles], bool every_visible,
                                                const ScoreModParams& m, const BiasStage<Traits>& bias, int bias_type,
                                                int pack, int warp, int lane) {
    float score_scale;
    switch (bias_type) {
        case 0: score_scale = apply_score_mod<Traits, 0>(s, m, bias, pack, warp, lane); break;
        case kFloat16: score_scale = apply_score_mod<Traits, kFloat16>(s, m, bias, pack, warp, lane); break;
        case kBFloat16: score_scale = apply_score_mod<Traits, kBFloat16>(s, m, bias, pack, warp, lane); break;
        default: score_scale = apply_score_mod<Traits, kFloat32>(s, m, bias, pack, warp, lane); break;
    }
    if (!every_visible) hide_scores<Traits>(s, visible);
    return score_scale;
}

// The rows' softmax state before the first key tile: no output, maximum -inf (no visible key yet), sum 0.
template <typename Traits>
__device__ __forceinline__ void start_softmax(float (&acc_o)[Traits::kMTiles][Traits::kDTiles][4],
                                              float (&row_max)[Traits::kMTiles][2], float (&row_sum)[Traits::kMTiles][2]) {
#pragma unroll
    for (int mi = 0; mi < Traits::kMTiles; ++mi) {
#pragma unroll
        for (int d = 0; d < Traits::kDTiles; ++d) acc_o[mi][d][0] = acc_o[mi][d][1] = acc_o[mi][d][2] = acc_o[mi][d][3] = 0.f;
        row_max[mi][0] = row_max[mi][1] = neg_inf();
        row_sum[mi][0] = row_sum[mi][1] = 0.f;
    }
}

// The online softmax step of one key tile: the running maximum and sum of each of the thread's rows take in
// the tile's scores, the scores become the unnormalised probabilities P (in place), and `rescale` says by what
// the output accumulators must be multiplied to meet the new maximum (rescale_output; the wgmma forward does it
// once the product in flight on them has finished). score_scale (> 0; score_mod_tile's result) turns the tile's
// values into log2-space scores: scaling preserves order, so the maximum is taken first and each score scaled in
// the multiply-add that subtracts it.
template <typename Traits>
__device__ __forceinline__ void online_softmax(float (&s)[Traits::kMTiles][Traits::kNTiles][4],
                                               float (&row_max)[Traits::kMTiles][2], float (&row_sum)[Traits::kMTiles][2],
                                               float (&rescale)[Traits::kMTiles][2], float score_scale) {
#pragma unroll
    for (int mi = 0; mi < Traits::kMTiles; ++mi) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            float tile_max = neg_inf();
#pragma unroll
            for (int ni = 0; ni < Traits::kNTiles; ++ni)
                tile_max = fmaxf(tile_max, fmaxf(s[mi][ni][half * 2], s[mi][ni][half * 2 + 1]));
            tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
            tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
            const float new_max = fmaxf(row_max[mi][half], tile_max * score_scale);
            const float base = new_max == neg_inf() ? 0.f : new_max;  // all hidden so far: p = 0, no NaN
            rescale[mi][half] = ex2_approx(row_max[mi][half] - base);
            row_max[mi][half] = new_max;
            float sum = 0.f;
#pragma unroll
            for (int ni = 0; ni < Traits::kNTiles; ++ni) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float& x = s[mi][ni][half * 2 + e];
                    x = ex2_approx(fmaf(x, score_scale, -base));
                    sum += x;
                }
            }
            row_sum[mi][half] = row_sum[mi][half] * rescale[mi][half] + sum;
        }
    }
}

// The output accumulators to the rows' new maxima.
template <typename Traits>
__device__ __forceinline__ void rescale_output(float (&acc_o)[Traits::kMTiles][Traits::kDTiles][4],
                                               const float (&rescale)[Traits::kMTiles][2]) {
    // Past a row's first tiles its maximum seldom moves: where no row of the warp's moved (every factor exactly 1),
    // the products would leave every accumulator as it is (x * 1 == x, NaN included), so the warp skips them.
    bool unchanged = true;
#pragma unroll
    for (int mi = 0; mi < Traits::kMTiles; ++mi) unchanged &= rescale[mi][0] == 1.f && rescale[mi][1] == 1.f;
    if (__all_sync(0xffffffffu, unchanged)) return;
#pragma unroll
    for (int mi = 0; mi < Traits::kMTiles; ++mi)
#pragma unroll
        for (int d = 0; d < Traits::kDTiles; ++d) {
            acc_o[mi][d][0] *= rescale[mi][0];
            acc_o[mi][d][1] *= rescale[mi][0];
            acc_o[mi][d][2] *= rescale[mi][1];
            acc_o[mi][d][3] *= rescale[mi][1];
        }
}

// Where a forward block works: its query tile (m_tile; m0: its first query), (batch, first query head) and its
// heads (pack: FwdParams::packed_heads, 1 but in decode), split of the key tiles, and the KV head it reads. Blocks
// start in launch order, so the query tile is the slowest-varying index of the launch, last tile first: under
// causal the last query tiles hold the most key tiles, and started first they do not leave a tail of long blocks
// behind the short ones (most of a wave when heads x batch is small).
struct FwdPlace {
    int m_tile, m0, head, pack, batch, split, kv_head;

    template <int kBlockM>
    __device__ __forceinline__ static FwdPlace of_block(const FwdParams& p) {
        const u64 others = static_cast<u64>(gridDim.y) * gridDim.z;  // (heads, batch x split) pairs per query tile
        const u64 launch = blockIdx.x + gridDim.x * (blockIdx.y + static_cast<u64>(gridDim.y) * blockIdx.z);
        const int m_tile = static_cast<int>(gridDim.x - 1 - launch / others);
        const int head = static_cast<int>(launch % others % gridDim.y) * p.packed_heads;
        const int z = static_cast<int>(launch % others / gridDim.y);
        return {m_tile, m_tile * kBlockM, head, p.packed_heads, z / p.kv_splits, z % p.kv_splits, head / p.attn.kv_group};
    }
};

// Epilogue: normalise, write O (zeros on empty rows) and LSE (natural log; -inf on empty rows); a split writes
// its fp32 partial and log2 LSE for fwd_combine_kernel instead.
template <typename Traits, int kElementType, int kHeadDim>
__device__ __forceinline__ void write_fwd_output(const FwdParams& p, const FwdPlace& at,
                                                 const float (&acc_o)[Traits::kMTiles][Traits::kDTiles][4],
                                                 const float (&row_max)[Traits::kMTiles][2],
                                                 const float (&row_sum)[Traits::kMTiles][2], int warp, int lane) {
    using Ops = ElementOps<kElementType>;
    const AttentionParams& a = p.attn;
    const int Lq = a.seqlen_q;
    const bool partial = p.kv_splits > 1;
#pragma unroll
    for (int mi = 0; mi < Traits::kMTiles; ++mi) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            float sum = row_sum[mi][half];
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            const int block_row = ThreadRows<Traits>::of(warp, lane, mi, half);
            const int row = at.m0 + ThreadRows<Traits>::query(block_row, at.pack);  // the query
            const int head = at.head + ThreadRows<Traits>::head(block_row, at.pack);
            if (row >= Lq) continue;
            const i64 partial_rows = (static_cast<i64>(at.split) * a.batch + at.batch) * a.heads_q + head;  // * Lq + row
            char* o_g = static_cast<char*>(p.o) + 2 * (at.batch * p.o_strides.batch + head * p.o_strides.head);
            const float inv = sum > 0.f ? 1.f / sum : 0.f;
            const float lse_log2 = sum > 0.f ? row_max[mi][half] + __log2f(sum) : neg_inf();
            if (partial) {  // the output only where the split saw a key of the row: the combine reads no other
                const i64 slot = partial_rows * Lq + row;
                float2* o_row = reinterpret_cast<float2*>(p.o_partial + slot * kHeadDim);
                if (sum > 0.f)
#pragma unroll
                    for (int d = 0; d < Traits::kDTiles; ++d)
                        o_row[d * 4 + lane % 4] = float2{acc_o[mi][d][half * 2] * inv, acc_o[mi][d][half * 2 + 1] * inv};
                if (lane % 4 == 0) p.lse_partial[slot] = lse_log2;
                continue;
            }
            u32* o_row = reinterpret_cast<u32*>(o_g + 2 * (row * p.o_strides.seq));
#pragma unroll
            for (int d = 0; d < Traits::kDTiles; ++d)
                o_row[d * 4 + lane % 4] = Ops::pack(acc_o[mi][d][half * 2] * inv, acc_o[mi][d][half * 2 + 1] * inv);
            if (p.lse != nullptr && lane % 4 == 0)
                p.lse[(static_cast<i64>(at.batch) * a.heads_q + head) * Lq + row] = lse_log2 * kLn2;
        }
    }
}

// A forward block's setup, one for both forward kernels: where it works (FwdPlace), the (batch, head) slices of Q, K
// and V it reads, the bias's DType (0 without one), and its share of the key tiles with the visibility policy that
// walks them. Key tiles [0, causal_end) can hold a visible key for some row of the block; the rest are causally
// hidden, skipped without a look. A split takes its share of them, as the policy shares them out. Block-wide: every
// one of the block's kBlockThreads threads (a producer warpgroup's too) constructs it (the share's search
// synchronizes the block).
template <typename Traits, typename Visibility, int kBlockThreads = Traits::kThreads>
struct FwdBlock {
    const FwdPlace at;
    const char* const q;
    const char* const k;
    const char* const v;
    const int bias_type;
    const TileBounds bounds;
    const int causal_end;
    const SplitTiles share;
    const TileVisibility<Traits, Visibility> visibility;

    __device__ __forceinline__ FwdBlock(const FwdParams& p, int warp, int lane)
        : at(FwdPlace::of_block<Traits::kBlockM>(p)),
          q(head_slice(p.attn.q, p.attn.q_strides, at.batch, at.head)),
          k(head_slice(p.attn.k, p.attn.k_strides, at.batch, at.kv_head)),
          v(head_slice(p.attn.v, p.attn.v_strides, at.batch, at.kv_head)),
          bias_type(p.attn.bias.data == nullptr ? 0 : p.attn.bias.type),
          bounds(p.attn),
          causal_end(bounds.template key_tile_end<Traits::kBlockM, Traits::kBlockN>(at.m0)),
          share(Visibility::template split_tiles<Traits::kBlockM, Traits::kBlockN, kBlockThreads>(
              p.attn, at.batch, at.head, at.m_tile, at.split, p.kv_splits, causal_end)),
          visibility{Visibility::template by_query_tile<Traits::kBlockM, Traits::kBlockN>(p.attn, at.batch, at.head, at.m_tile,
                                                                                          share.begin, share.end),
                     bounds, at.m0, at.pack, warp, lane} {}

    // The tiles the block accounts for in the statistics: its share, and for split 0 the causally hidden ones too,
    // so that the splits add up to n_tiles.
    __device__ __forceinline__ int owned_tiles() const {
        return share.owned + (at.split == 0 ? tiles_of(bounds.seqlen_k(), Traits::kBlockN) - causal_end : 0);
    }
};

// The statistics: tiles computed and skipped (owned - computed), and this thread's visible score registers.
__device__ __forceinline__ void count_fwd_tiles(const FwdParams& p, u32 visible_pairs, int computed, int owned, int lane) {
    if (p.tile_stats == nullptr) return;
    // Bits of rows past Lq are clear: the bounds hide them.
    for (int offset = 16; offset > 0; offset /= 2) visible_pairs += __shfl_xor_sync(0xffffffffu, visible_pairs, offset);
    if (lane == 0) atomicAdd(p.tile_stats + 2, static_cast<u64>(visible_pairs));
    if (threadIdx.x == 0) {
        atomicAdd(p.tile_stats, static_cast<u64>(computed));
        atomicAdd(p.tile_stats + 1, static_cast<u64>(owned - computed));
    }
}

// The forward's matrix products on mma.sync: Q, K and V in padded rows, each operand fragment read by ldmatrix
// when a product needs it; a warp's keys are the tile's (kFwdMmaSync) or its share of them (kFwdDecode).
template <int kElementType, int kHeadDim, FwdKernel kKernel>
struct MmaSyncForward {
    using Traits = FwdTraits<kHeadDim, kKernel>;
    using Ops = ElementOps<kElementType>;
    static constexpr int kMTiles = Traits::kMTiles;
    static constexpr int kNTiles = Traits::kNTiles;
    static constexpr int kDTiles = Traits::kDTiles;
    static constexpr int kRowElems = Traits::kRowElems;

    static constexpr int kKeyTileBytes = Traits::kBlockN * kRowElems * 2;
    static constexpr int kSlots = fwd_key_slots(kKernel);  // as many V slots (fwd_value_slots)

    // Q, then the slots of K and V in turn ([kBlockM | kBlockN, kRowElems] each), then the bias stages.
    u32 sQ, sK, sV;                // Q, slot 0's K and V
    unsigned char* bias_smem;      // BiasStage
    int warp, lane;
    int key0;                      // the warp's first key column

    __device__ __forceinline__ explicit MmaSyncForward(unsigned char* smem)
        : sQ(smem_addr(smem)), sK(sQ + Traits::kBlockM * kRowElems * 2), sV(sK + kKeyTileBytes),
          bias_smem(smem + Traits::kBlockM * kRowElems * 2 + 2 * kSlots * kKeyTileBytes), warp(threadIdx.x / 32),
          lane(threadIdx.x % 32), key0(first_key_column<Traits>(warp)) {}

    __device__ __forceinline__ u32 key_slot(int slot) const { return sK + slot * 2 * kKeyTileBytes; }
    __device__ __forceinline__ u32 value_slot(int slot) const { return sV + slot * 2 * kKeyTileBytes; }

    // S = Q K^T for this warp's rows and keys, K from the tile at k_tile.
    __device__ __forceinline__ void scores(float (&s)[kMTiles][kNTiles][4], u32 k_tile) const {
#pragma unroll
        for (int mi = 0; mi < kMTiles; ++mi)
#pragma unroll
            for (int ni = 0; ni < kNTiles; ++ni) s[mi][ni][0] = s[mi][ni][1] = s[mi][ni][2] = s[mi][ni][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < kHeadDim / 16; ++kk) {
            u32 a[kMTiles][4];
#pragma unroll
            for (int mi = 0; mi < kMTiles; ++mi) {
                const int row = ThreadRows<Traits>::of(warp, 0, mi, 0) + lane % 16;
                ldmatrix_x4(a[mi], sQ + (row * kRowElems + kk * 16 + (lane / 16) * 8) * 2);
            }
#pragma unroll
            for (int nj = 0; nj < kNTiles / 2; ++nj) {
                u32 b[4];
                const int key = key0 + nj * 16 + lane % 8 + (lane / 16) * 8;
                ldmatrix_x4(b, k_tile + (key * kRowElems + kk * 16 + ((lane / 8) % 2) * 8) * 2);
#pragma unroll
                for (int mi = 0; mi < kMTiles; ++mi) {
                    Ops::mma(s[mi][2 * nj], a[mi], b[0], b[1]);
                    Ops::mma(s[mi][2 * nj + 1], a[mi], b[2], b[3]);
                }
            }
        }
    }

    // O += P V, P (the softmax numerators) taken from the score registers in the A-fragment layout, V from the tile
    // at v_tile.
    __device__ __forceinline__ void accumulate(float (&acc_o)[kMTiles][kDTiles][4], const float (&s)[kMTiles][kNTiles][4],
                                               u32 v_tile) const {
#pragma unroll
        for (int kk = 0; kk < Traits::kWarpKeys / 16; ++kk) {
            u32 a[kMTiles][4];
#pragma unroll
            for (int mi = 0; mi < kMTiles; ++mi) pack_p<Ops>(a[mi], s[mi], kk);
#pragma unroll
            for (int dj = 0; dj < kDTiles / 2; ++dj) {
                u32 b[4];
                const int key = key0 + kk * 16 + lane % 8 + ((lane / 8) % 2) * 8;
                ldmatrix_x4_trans(b, v_tile + (key * kRowElems + dj * 16 + (lane / 16) * 8) * 2);
#pragma unroll
                for (int mi = 0; mi < kMTiles; ++mi) {
                    Ops::mma(acc_o[mi][2 * dj], a[mi], b[0], b[1]);
                    Ops::mma(acc_o[mi][2 * dj + 1], a[mi], b[2], b[3]);
                }
            }
        }
    }
};

// The forward kernel: one K and one V tile in shared memory, the products of MmaSyncForward.
template <int kElementType, int kHeadDim, typename Visibility>
__global__ void __launch_bounds__(FwdTraits<kHeadDim>::kThreads) dmattn_fwd_kernel(const FwdParams p) {
    using Mma = MmaSyncForward<kElementType, kHeadDim, kFwdMmaSync>;
    using Traits = typename Mma::Traits;
    const AttentionParams& a = p.attn;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kMTiles = Traits::kMTiles;
    constexpr int kNTiles = Traits::kNTiles;
    constexpr int kDTiles = Traits::kDTiles;

    extern __shared__ __align__(16) unsigned char smem[];
    Mma mma(smem);
    const u32 sQ = mma.sQ, sK = mma.sK, sV = mma.sV;
    unsigned char* const bias_smem = mma.bias_smem;

    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const FwdBlock<Traits, Visibility> block(p, warp, lane);
    const FwdPlace& at = block.at;
    const int m0 = at.m0, Lq = a.seqlen_q;
    const char *k_g = block.k, *v_g = block.v;
    const int bias_type = block.bias_type;
    const BiasStage<Traits> bias{bias_smem, a.bias, at.batch, at.head};
    const int n_begin = block.share.begin, n_end = block.share.end;
    int computed = 0;

    load_tile_async<Traits, kBlockM>(sQ, block.q, 2 * a.q_strides.seq, m0, Lq);
    cp_async_commit();

    // The policy walks the tiles of [n_begin, n_end) that hold a visible pair, and says which need
    // per-element tests.
    const TileVisibility<Traits, Visibility>& visibility = block.visibility;
    const Visibility& policy = visibility.policy;
    u32 raw[TileVisibility<Traits, Visibility>::kRawRegs];
    int n = policy.next(n_begin);
    bool elementwise = n < n_end && policy.elementwise(n);
    if (n < n_end) {
        policy.template load_keys<Traits>(sK, k_g, 2 * a.k_strides.seq, n);
        if (bias_type != 0) policy.stage_bias(bias, m0, n);
        cp_async_commit();
        if (elementwise) visibility.load(n, raw);
    }
    u32 visible_pairs = 0;  // this thread's visible score registers, for the statistics

    float acc_o[kMTiles][kDTiles][4];
    float row_max[kMTiles][2];  // log2 domain; -inf until a visible key is seen
    float row_sum[kMTiles][2];  // this thread's share; the quad is summed at the end
    start_softmax<Traits>(acc_o, row_max, row_sum);

    cp_async_wait<0>();
    __syncthreads();

    while (n < n_end) {
        policy.template load_keys<Traits>(sV, v_g, 2 * a.v_strides.seq, n);
        cp_async_commit();
        u32 visible[kMTiles];
        const bool every_visible = visibility.compute(n, elementwise, raw, visible);
#pragma unroll
        for (int mi = 0; mi < kMTiles; ++mi) visible_pairs += __popc(visible[mi]);
        const int n_next = policy.next(n + 1);
        elementwise = n_next < n_end && policy.elementwise(n_next);
        if (elementwise) visibility.load(n_next, raw);

        float s[kMTiles][kNTiles][4];
        mma.scores(s, sK);

        const float score_scale = score_mod_tile<Traits>(s, visible, every_visible, a.score, bias, bias_type, at.pack, warp, lane);
        float rescale[kMTiles][2];
        online_softmax<Traits>(s, row_max, row_sum, rescale, score_scale);
        rescale_output<Traits>(acc_o, rescale);

        cp_async_wait<0>();
        __syncthreads();  // V landed; every warp is done reading K and the bias
        if (n_next < n_end) {
            policy.template load_keys<Traits>(sK, k_g, 2 * a.k_strides.seq, n_next);
            if (bias_type != 0) policy.stage_bias(bias, m0, n_next);
            cp_async_commit();
        }

        mma.accumulate(acc_o, s, sV);
        ++computed;

        cp_async_wait<0>();
        __syncthreads();  // next K landed; every warp is done reading V
        n = n_next;
    }

    write_fwd_output<Traits, kElementType, kHeadDim>(p, at, acc_o, row_max, row_sum, warp, lane);
    count_fwd_tiles(p, visible_pairs, computed, block.owned_tiles(), lane);
}

}  // namespace fdma

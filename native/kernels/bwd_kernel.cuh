// Backward kernels of Dynamic Mask Attention (FlashAttention-2 style: P recomputed from the
// forward's LSE, no score matrix in memory), skipping the tiles that hold no visible pair.
//
// dmattn_bwd_dkdv_kernel: one block per (key tile, head-dim slice, dBias owner). It walks the
// query tiles its visibility policy gives (causal bound, key-major occupancy bitmap) for every query head
// of its key/value head and accumulates dK and dV in registers, so GQA sums need no atomics.
// Above D = 128 the block keeps the whole rows of K, V, Q and dO (every dot product needs them)
// but accumulates only its half of dK, dV and dQ. dQ goes to an fp32 buffer with atomics; in
// deterministic mode dmattn_bwd_dq_kernel computes it instead, one block per query tile.
//
// Element layout: in the dK/dV kernel a warp owns 16 keys and holds S^T (keys x queries) in MMA
// accumulator layout; in the dQ kernel a warp owns 16 queries and holds S (queries x keys).
// Device-only, no host headers.
#pragma once

#include "mma_tile.cuh"
#include "params.cuh"
#include "plan.cuh"
#include "ptx.cuh"
#include "score_mod.cuh"
#include "visibility.cuh"

namespace fdma {

template <int kHeadDim>
struct BwdTraits {
    static constexpr Tile kTile = bwd_tile(kHeadDim);
    static constexpr int kBlockM = kTile.block_m;  // query tile
    static constexpr int kBlockN = kTile.block_n;  // key tile
    static constexpr int kWarps = kTile.warps;
    static constexpr int kThreads = kWarps * 32;
    static constexpr int kMTiles = 1;                   // 16-row MMA tiles per warp
    static constexpr int kNTiles = 8;                   // 8-wide score tiles per warp row (64 / 8)
    static constexpr int kDSlice = bwd_d_slice(kHeadDim);
    static constexpr int kSlices = kHeadDim / kDSlice;
    static constexpr int kSliceTiles = kDSlice / 8;
    static constexpr int kDTiles = kHeadDim / 8;
    static constexpr int kChunks = kHeadDim / 8;
    static constexpr int kRowElems = padded_row_elems(kHeadDim);
    using Layout = PaddedRows<kHeadDim>;
    static constexpr int kSRowElems = kBlockM + 8;      // dS^T rows (queries), padded likewise
    static constexpr int kTileBytes = bwd_tile_bytes(kHeadDim);
    // K, V, Q, dO, dS^T, LSE and Delta (bwd_dkdv_smem_bytes). (Two stages of Q and dO, loading the next
    // query tile during this one, measured no faster on the H100: 8K causal fwd+bwd 2.03 against 1.89 ms.)
    static constexpr int kDkdvSmemBytes = bwd_dkdv_smem_bytes(kHeadDim);
    static constexpr int kDqSmemBytes = bwd_dq_smem_bytes(kHeadDim);  // Q, dO, K and V; then the bias stage

    static_assert(kBlockM == kBlockN && kBlockM == 16 * kWarps, "one 16-row MMA tile per warp, square tiles");
    static_assert(kDSlice % 16 == 0, "slices hold whole pairs of 8-wide MMA tiles");
    static_assert(kDkdvSmemBytes == 4 * kTileBytes + kBlockN * kSRowElems * 2 + 2 * kBlockM * 4, "the layout below");
};

// Where score register (ni, e) of this thread sits, and its row's softmax statistics.
struct ScoreCoords {
    int query;
    int key;
    float lse_log2;  // the forward's LSE, in log2 units
    float delta;     // rowsum(dO * O)
};

// Where score_grads finds the bias of score register (ni, e) at coords c. Loads of hidden pairs
// are discarded (they may hold anything, -inf and NaN included).
struct NoBias {
    static constexpr bool kPresent = false;
    __device__ __forceinline__ float operator()(int, int, const ScoreCoords&) const { return 0.f; }
};

// The dK/dV kernel's bias when it broadcasts over queries: this thread's two keys never change, so
// their values sit in registers for the whole walk over query tiles.
struct KeyBias {
    static constexpr bool kPresent = true;
    float key[2];  // keys key_row and key_row + 8 of the tile
    __device__ __forceinline__ float operator()(int, int e, const ScoreCoords&) const { return key[e / 2]; }
};

// The dK/dV kernel's bias with a row per query: element by element from global memory.
struct GlobalBias {
    static constexpr bool kPresent = true;
    const BroadcastOperand& op;
    const char* bias;  // this (batch, head)'s slice
    __device__ __forceinline__ float operator()(int, int, const ScoreCoords& c) const {
        return load_bias(bias + element_size(op.type) * (c.query * op.stride_row), c.key * op.stride_key, op.type);
    }
};

// The dQ kernel's bias: the key tile's stage in shared memory (kBiasType: its DType), read as in
// the forward, a pair of neighbouring keys per load.
template <typename Traits, int kBiasType>
struct StagedBias {
    static constexpr bool kPresent = true;
    const BiasStage<Traits>& stage;
    int warp;
    int lane;
    __device__ __forceinline__ float operator()(int ni, int e, const ScoreCoords&) const {
        float pair[2];
        stage.template pair<kBiasType>(warp * 16 + lane / 4 + (e / 2) * 8, ni * 8 + (lane % 4) * 2, pair[0], pair[1]);
        return pair[e % 2];
    }
};

// From raw q.k (s) and dO.v (dp) products: P in place of s and, with kWithGrad, dX (the gradient
// of the pre-softcap score x = scale * q.k + bias) in place of dp; hidden pairs get 0. The pairs the
// bounds admit are tested against the visibility policy where it says the tile needs it
// (kElementwise). One straight-line variant per feature set, as in the forward.
template <bool kWithGrad, bool kSoftcap, bool kElementwise, typename Visibility, typename Bias, typename Coords>
__device__ __forceinline__ void score_grads(const AttentionParams& a, float (&s)[8][4], float (&dp)[8][4], const TileBounds& bounds,
                                            const Visibility& policy, const Bias& bias, Coords&& coords) {
#pragma unroll
    for (int ni = 0; ni < 8; ++ni) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const ScoreCoords c = coords(ni, e);
            bool visible = bounds.visible(c.query, c.key);
            if (kElementwise) visible = policy.admits(visible, c.query, c.key);
            float slope;
            const float score = modified_score<Bias::kPresent, kSoftcap>(a.score, s[ni][e], visible ? bias(ni, e, c) : 0.f, slope);
            const float prob = visible ? ex2_approx(score - c.lse_log2) : 0.f;
            s[ni][e] = prob;
            if (kWithGrad) dp[ni][e] = prob * (dp[ni][e] - c.delta) * slope;
        }
    }
}

// Picks the score_grads variant for this call and tile (uniform branches only).
template <bool kWithGrad = true, typename Visibility, typename Bias, typename Coords>
__device__ __forceinline__ void score_grads(const AttentionParams& a, float (&s)[8][4], float (&dp)[8][4], const TileBounds& bounds,
                                            const Visibility& policy, bool elementwise, const Bias& bias, Coords&& coords) {
    if (a.score.softcap_out != 0.f) {
        if (elementwise) score_grads<kWithGrad, true, true>(a, s, dp, bounds, policy, bias, coords);
        else score_grads<kWithGrad, true, false>(a, s, dp, bounds, policy, bias, coords);
    } else {
        if (elementwise) score_grads<kWithGrad, false, true>(a, s, dp, bounds, policy, bias, coords);
        else score_grads<kWithGrad, false, false>(a, s, dp, bounds, policy, bias, coords);
    }
}

// S = A1 B1^T and dP = A2 B2^T for this warp's 16 rows of the A tiles against the 64 rows of the
// B tiles (dK/dV kernel: A = K, V and B = Q, dO; dQ kernel: A = Q, dO and B = K, V).
template <typename Traits, typename Ops>
__device__ __forceinline__ void two_products(float (&s)[8][4], float (&dp)[8][4], u32 a1, u32 a2, u32 b1, u32 b2,
                                             int warp, int lane) {
    constexpr int kRowElems = Traits::kRowElems;
#pragma unroll
    for (int ni = 0; ni < 8; ++ni)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[ni][e] = dp[ni][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < Traits::kDTiles / 2; ++kk) {
        u32 a_1[4], a_2[4];
        const u32 a_off = ((warp * 16 + lane % 16) * kRowElems + kk * 16 + (lane / 16) * 8) * 2;
        ldmatrix_x4(a_1, a1 + a_off);
        ldmatrix_x4(a_2, a2 + a_off);
#pragma unroll
        for (int nj = 0; nj < 4; ++nj) {
            u32 b_1[4], b_2[4];
            const u32 b_off = ((nj * 16 + lane % 8 + (lane / 16) * 8) * kRowElems + kk * 16 + ((lane / 8) % 2) * 8) * 2;
            ldmatrix_x4(b_1, b1 + b_off);
            ldmatrix_x4(b_2, b2 + b_off);
            Ops::mma(s[2 * nj], a_1, b_1[0], b_1[1]);
            Ops::mma(s[2 * nj + 1], a_1, b_1[2], b_1[3]);
            Ops::mma(dp[2 * nj], a_2, b_2[0], b_2[1]);
            Ops::mma(dp[2 * nj + 1], a_2, b_2[2], b_2[3]);
        }
    }
}

// The dBias accumulator rows a (batch, query head) adds to: contiguous [batches][heads][rows][Lk]; nullptr without dBias.
__device__ __forceinline__ float* d_bias_rows(const BwdParams& bp, int batch, int head) {
    const BroadcastOperand& bias = bp.attn.bias;
    if (bp.d_bias_accum == nullptr) return nullptr;
    return bp.d_bias_accum + ((static_cast<i64>(bias.batches == 1 ? 0 : batch) * bias.heads +
                               (bias.heads == 1 ? 0 : head / bias.head_group)) * bias.rows) * bp.attn.seqlen_k;
}

// dBias of one (key tile, query tile) step of a dK/dV kernel, from dX^T (dp): with a row-broadcast bias into this
// thread's per-key sums (dbias_sum), with a row per query into the accumulator rows (dbias_g, [Lq][Lk]) -- with
// kAtomic, atomically, where blocks share keys. key_of(e): the key of score register e.
template <bool kAtomic, typename KeyOf>
__device__ __forceinline__ void dkdv_dbias(const AttentionParams& p, const float (&dp)[8][4], float* dbias_g, float (&dbias_sum)[2],
                                           int m0, KeyOf key_of, int lane) {
    if (p.bias.rows == 1) {
#pragma unroll
        for (int ni = 0; ni < 8; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) dbias_sum[e / 2] += dp[ni][e];
        return;
    }
#pragma unroll
    for (int ni = 0; ni < 8; ++ni) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int query = m0 + ni * 8 + (lane % 4) * 2 + e % 2;
            const int key = key_of(e);
            if (query >= p.seqlen_q || key >= p.seqlen_k) continue;
            float* at = dbias_g + static_cast<i64>(query) * p.seqlen_k + key;
            if (kAtomic) {
                if (dp[ni][e] != 0.f) atomicAdd(at, dp[ni][e]);
            } else {
                *at += dp[ni][e];
            }
        }
    }
}

// dV += P^T dO and dK += dX^T Q over the head-dim slice at d0, for this warp's 16 keys; with_dq also leaves dX^T in
// shared memory (sdS_words) for dkdv_dq.
template <typename Traits, typename Ops>
__device__ __forceinline__ void dkdv_accumulate(const float (&s)[8][4], const float (&dp)[8][4], u32 sQ, u32 sdO, u32* sdS_words,
                                                int d0, bool with_dq, float (&acc_dk)[Traits::kSliceTiles][4],
                                                float (&acc_dv)[Traits::kSliceTiles][4], int warp, int lane) {
    constexpr int kRowElems = Traits::kRowElems;
#pragma unroll
    for (int kk = 0; kk < Traits::kBlockM / 16; ++kk) {
        u32 a_p[4], a_dx[4];
        a_p[0] = Ops::pack(s[2 * kk][0], s[2 * kk][1]);
        a_p[1] = Ops::pack(s[2 * kk][2], s[2 * kk][3]);
        a_p[2] = Ops::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        a_p[3] = Ops::pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
        a_dx[0] = Ops::pack(dp[2 * kk][0], dp[2 * kk][1]);
        a_dx[1] = Ops::pack(dp[2 * kk][2], dp[2 * kk][3]);
        a_dx[2] = Ops::pack(dp[2 * kk + 1][0], dp[2 * kk + 1][1]);
        a_dx[3] = Ops::pack(dp[2 * kk + 1][2], dp[2 * kk + 1][3]);
        if (with_dq) {  // dX^T for the dQ product
            const int row = warp * 16 + lane / 4;
            const int col = kk * 16 + (lane % 4) * 2;
            sdS_words[(row * Traits::kSRowElems + col) / 2] = a_dx[0];
            sdS_words[((row + 8) * Traits::kSRowElems + col) / 2] = a_dx[1];
            sdS_words[(row * Traits::kSRowElems + col + 8) / 2] = a_dx[2];
            sdS_words[((row + 8) * Traits::kSRowElems + col + 8) / 2] = a_dx[3];
        }
#pragma unroll
        for (int dj = 0; dj < Traits::kSliceTiles / 2; ++dj) {
            u32 b_do[4], b_q[4];
            const u32 off = ((kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kRowElems + d0 + dj * 16 + (lane / 16) * 8) * 2;
            ldmatrix_x4_trans(b_do, sdO + off);
            ldmatrix_x4_trans(b_q, sQ + off);
            Ops::mma(acc_dv[2 * dj], a_p, b_do[0], b_do[1]);
            Ops::mma(acc_dv[2 * dj + 1], a_p, b_do[2], b_do[3]);
            Ops::mma(acc_dk[2 * dj], a_dx, b_q[0], b_q[1]);
            Ops::mma(acc_dk[2 * dj + 1], a_dx, b_q[2], b_q[3]);
        }
    }
}

// dQ += dX K for this warp's 16 queries of the tile at m0 (the slice at d0), added to the fp32 buffer; dX^T of every
// warp is in shared memory (sdS) after the barrier.
template <typename Traits, typename Ops>
__device__ __forceinline__ void dkdv_dq(const BwdParams& bp, u32 sdS, u32 sK, int m0, int batch, int head, int d0, int warp,
                                        int lane) {
    constexpr int kRowElems = Traits::kRowElems;
    constexpr int kSliceTiles = Traits::kSliceTiles;
    const AttentionParams& p = bp.attn;
    __syncthreads();
    float acc_dq[kSliceTiles][4];
#pragma unroll
    for (int d = 0; d < kSliceTiles; ++d)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc_dq[d][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < Traits::kBlockN / 16; ++kk) {
        u32 a[4];
        ldmatrix_x4_trans(a, sdS + ((kk * 16 + lane % 8 + (lane / 16) * 8) * Traits::kSRowElems + warp * 16 + ((lane / 8) % 2) * 8) * 2);
#pragma unroll
        for (int dj = 0; dj < kSliceTiles / 2; ++dj) {
            u32 b[4];
            ldmatrix_x4_trans(b, sK + ((kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kRowElems + d0 + dj * 16 + (lane / 16) * 8) * 2);
            Ops::mma(acc_dq[2 * dj], a, b[0], b[1]);
            Ops::mma(acc_dq[2 * dj + 1], a, b[2], b[3]);
        }
    }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const int query = m0 + warp * 16 + lane / 4 + half * 8;
        if (query >= p.seqlen_q) continue;
        float* dq_row = bp.d_q_accum + ((static_cast<i64>(batch) * p.seqlen_q + query) * p.heads_q + head) * (Traits::kDTiles * 8) + d0;
#pragma unroll
        for (int d = 0; d < kSliceTiles; ++d) {
            atomicAdd(dq_row + d * 8 + (lane % 4) * 2, acc_dq[d][half * 2] * p.softmax_scale);
            atomicAdd(dq_row + d * 8 + (lane % 4) * 2 + 1, acc_dq[d][half * 2 + 1] * p.softmax_scale);
        }
    }
}

// The (batch, kv head) pairs a key-major dK/dV block walks: its own (grid z, y), or every one along an axis the dBias
// broadcasts over (BwdParams' owner_batches, owner_heads), so that one block adds up each key's dBias.
struct DkdvOwners {
    int batch_first, batch_last, kv_head_first, kv_head_last;
    __device__ __forceinline__ explicit DkdvOwners(const BwdParams& bp)
        : batch_first(bp.owner_batches == 1 ? 0 : blockIdx.z), batch_last(bp.owner_batches == 1 ? bp.attn.batch - 1 : blockIdx.z),
          kv_head_first(bp.owner_heads == 1 ? 0 : blockIdx.y), kv_head_last(bp.owner_heads == 1 ? bp.attn.heads_kv - 1 : blockIdx.y) {}
};

template <int kElementType, int kHeadDim, typename Visibility>
__global__ void __launch_bounds__(BwdTraits<kHeadDim>::kThreads)
    dmattn_bwd_dkdv_kernel(const BwdParams bp) {
    using Traits = BwdTraits<kHeadDim>;
    using Ops = ElementOps<kElementType>;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kSliceTiles = Traits::kSliceTiles;
    const AttentionParams& p = bp.attn;

    extern __shared__ __align__(16) unsigned char smem[];
    const u32 sK = smem_addr(smem);                  // [kBlockN, kRowElems]
    const u32 sV = sK + Traits::kTileBytes;          // [kBlockN, kRowElems]
    const u32 sQ = sV + Traits::kTileBytes;          // [kBlockM, kRowElems]
    const u32 sdO = sQ + Traits::kTileBytes;         // [kBlockM, kRowElems]
    const u32 sdS = sdO + Traits::kTileBytes;        // [kBlockN, kSRowElems]: dX^T as elements
    u32* sdS_words = reinterpret_cast<u32*>(smem + 4 * Traits::kTileBytes);
    float* sLse = reinterpret_cast<float*>(smem + 4 * Traits::kTileBytes + kBlockN * Traits::kSRowElems * 2);  // [kBlockM], log2
    float* sDelta = sLse + kBlockM;                                                                            // [kBlockM]

    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int n_tile = blockIdx.x / Traits::kSlices;
    const int d0 = (blockIdx.x % Traits::kSlices) * Traits::kDSlice;
    const bool first_slice = d0 == 0;  // owns dBias and the tile statistics
    const int n0 = n_tile * kBlockN;
    const int Lq = p.seqlen_q;
    const int Lk = p.seqlen_k;
    const int m_tiles = tiles_of(Lq, kBlockM);
    const TileBounds bounds(p);
    const int m_begin = bounds.template query_tile_begin<kBlockM>(n0);
    const int bias_size = element_size(p.bias.type);
    const int key_row = warp * 16 + lane / 4;  // + 8 * half: this thread's keys within the tile

    long long computed = 0, skipped = 0;
    const DkdvOwners owners(bp);

    for (int batch = owners.batch_first; batch <= owners.batch_last; ++batch) {
        for (int kv_head = owners.kv_head_first; kv_head <= owners.kv_head_last; ++kv_head) {
            const char* k_g = head_slice(p.k, p.k_strides, batch, kv_head);
            const char* v_g = head_slice(p.v, p.v_strides, batch, kv_head);
            load_tile_async<Traits, kBlockN>(sK, k_g, 2 * p.k_strides.seq, n0, Lk);
            load_tile_async<Traits, kBlockN>(sV, v_g, 2 * p.v_strides.seq, n0, Lk);
            cp_async_commit();

            float acc_dk[kSliceTiles][4], acc_dv[kSliceTiles][4];
#pragma unroll
            for (int d = 0; d < kSliceTiles; ++d)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc_dk[d][e] = acc_dv[d][e] = 0.f;

            for (int head = kv_head * p.kv_group; head < (kv_head + 1) * p.kv_group; ++head) {
                const char* q_g = head_slice(p.q, p.q_strides, batch, head);
                const char* do_g = head_slice(bp.d_o, bp.d_o_strides, batch, head);
                const float* lse_g = bp.lse + (static_cast<i64>(batch) * p.heads_q + head) * Lq;
                const float* delta_g = bp.delta + (static_cast<i64>(batch) * p.heads_q + head) * Lq;
                const char* bias_g = broadcast_slice(p.bias, bias_size, batch, head);
                float* dbias_g = d_bias_rows(bp, batch, head);
                const Visibility policy = Visibility::template by_key_tile<kBlockM, kBlockN>(p, batch, head, n_tile);

                KeyBias key_bias{};
                if (bias_g != nullptr && p.bias.stride_row == 0) {
#pragma unroll
                    for (int half = 0; half < 2; ++half) {
                        const int key = n0 + key_row + half * 8;
                        key_bias.key[half] = key < Lk ? load_bias(bias_g, key * p.bias.stride_key, p.bias.type) : 0.f;
                    }
                }
                float dbias_sum[2] = {0.f, 0.f};  // row-broadcast dBias: this thread's share per key
                int visited = 0;
                for (int m_tile = policy.next(m_begin); m_tile < m_tiles; m_tile = policy.next(m_tile + 1)) {
                    const int m0 = m_tile * kBlockM;
                    ++visited;
                    load_tile_async<Traits, kBlockM>(sQ, q_g, 2 * p.q_strides.seq, m0, Lq);
                    load_tile_async<Traits, kBlockM>(sdO, do_g, 2 * bp.d_o_strides.seq, m0, Lq);
                    cp_async_commit();
                    if (threadIdx.x < kBlockM) {
                        const int row = m0 + threadIdx.x;
                        sLse[threadIdx.x] = row < Lq ? lse_g[row] * kLog2e : 0.f;
                        sDelta[threadIdx.x] = row < Lq ? delta_g[row] : 0.f;
                    }
                    const bool elementwise = policy.elementwise(m_tile);
                    cp_async_wait<0>();
                    __syncthreads();

                    // S^T = K Q^T and dP^T = V dO^T for this warp's 16 keys.
                    float s[8][4], dp[8][4];
                    two_products<Traits, Ops>(s, dp, sK, sV, sQ, sdO, warp, lane);

                    // P^T in place of s, dX^T in place of dP^T.
                    auto coords = [&](int ni, int e) {
                        const int q_local = ni * 8 + (lane % 4) * 2 + e % 2;
                        return ScoreCoords{m0 + q_local, n0 + key_row + (e / 2) * 8, sLse[q_local], sDelta[q_local]};
                    };
                    if (bias_g == nullptr) score_grads(p, s, dp, bounds, policy, elementwise, NoBias{}, coords);
                    else if (p.bias.stride_row == 0) score_grads(p, s, dp, bounds, policy, elementwise, key_bias, coords);
                    else score_grads(p, s, dp, bounds, policy, elementwise, GlobalBias{p.bias, bias_g}, coords);
                    if (dbias_g != nullptr && first_slice)
                        dkdv_dbias<false>(p, dp, dbias_g, dbias_sum, m0, [&](int e) { return n0 + key_row + (e / 2) * 8; }, lane);
                    dkdv_accumulate<Traits, Ops>(s, dp, sQ, sdO, sdS_words, d0, bp.d_q_accum != nullptr, acc_dk, acc_dv, warp, lane);
                    if (bp.d_q_accum != nullptr) dkdv_dq<Traits, Ops>(bp, sdS, sK, m0, batch, head, d0, warp, lane);
                    __syncthreads();  // every warp is done with sQ, sdO, sdS, sLse, sDelta
                }
                if (dbias_g != nullptr && first_slice && p.bias.rows == 1) {
#pragma unroll
                    for (int half = 0; half < 2; ++half) {
                        float sum = dbias_sum[half];
                        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
                        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
                        const int key = n0 + key_row + half * 8;
                        if (lane % 4 == 0 && key < Lk) dbias_g[key] += sum;
                    }
                }
                computed += visited;
                skipped += m_tiles - visited;
            }

            // dK (with the softmax scale of q.k) and dV of this (batch, kv head), this slice.
            char* dk_g = static_cast<char*>(bp.d_k) + 2 * (batch * bp.d_k_strides.batch + kv_head * bp.d_k_strides.head);
            char* dv_g = static_cast<char*>(bp.d_v) + 2 * (batch * bp.d_v_strides.batch + kv_head * bp.d_v_strides.head);
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int key = n0 + key_row + half * 8;
                if (key >= Lk) continue;
                u32* dk_row = reinterpret_cast<u32*>(dk_g + 2 * (key * bp.d_k_strides.seq + d0));
                u32* dv_row = reinterpret_cast<u32*>(dv_g + 2 * (key * bp.d_v_strides.seq + d0));
#pragma unroll
                for (int d = 0; d < kSliceTiles; ++d) {
                    dk_row[d * 4 + lane % 4] = Ops::pack(acc_dk[d][half * 2] * p.softmax_scale, acc_dk[d][half * 2 + 1] * p.softmax_scale);
                    dv_row[d * 4 + lane % 4] = Ops::pack(acc_dv[d][half * 2], acc_dv[d][half * 2 + 1]);
                }
            }
            cp_async_wait<0>();  // a (batch, kv head) with no visited tile never waited for its K and V
            __syncthreads();     // every warp is done with sK and sV
        }
    }

    if (bp.tile_stats != nullptr && first_slice && threadIdx.x == 0) {
        atomicAdd(bp.tile_stats, static_cast<u64>(computed));
        atomicAdd(bp.tile_stats + 1, static_cast<u64>(skipped));
    }
}

// The lifetimes of this thread's two keys in a gathered dK/dV tile (rows key_row and key_row + 8), in registers:
// the elementwise test of score_grads without a load.
struct ThreadKeyLifetimes {
    int key0;     // the key of row key_row
    int2 life[2];
    __device__ __forceinline__ bool admits(bool in_bounds, int query, int key) const {
        const int2 l = key == key0 ? life[0] : life[1];
        return in_bounds & (l.x <= query) & (query < l.y);
    }
};

// A gathered dK/dV block's place in the plan's grid (x: query range, key slot, head-dim slice, the slice fastest;
// y: query head; z: batch), its range's rows [r0, r1) and the key tiles [0, n_end) its walk gathers from.
template <int kBlockM, int kBlockN, int kSlices>
struct GatheredRange {
    static constexpr int kRangeRows = kGatherRangeTiles * kBlockM;
    int slice, slot, range, head, batch, kv_head, r0, r1, n_end;

    __device__ __forceinline__ GatheredRange(const AttentionParams& p, const TileBounds& bounds)
        : slice(blockIdx.x % kSlices), slot(blockIdx.x / kSlices % kGatherKeySlots), range(blockIdx.x / kSlices / kGatherKeySlots),
          head(blockIdx.y), batch(blockIdx.z), kv_head(head / p.kv_group), r0(range * kRangeRows),
          r1(min(r0 + kRangeRows, p.seqlen_q)), n_end(bounds.template key_tile_end<kRangeRows, kBlockN>(r0)) {}

    // The walk over the keys alive in the range's rows, kBlockN at a time.
    __device__ __forceinline__ KeyLifetimes walk(const AttentionParams& p) const {
        return KeyLifetimes::by_query_tile<kRangeRows, kBlockN>(p, batch, head, range, 0, n_end);
    }
    // The range's (query tile, key tile) pairs, computed or not: the statistics' total.
    __device__ __forceinline__ u64 tiles(int seqlen_k) const {
        return static_cast<u64>(tiles_of(r1 - r0, kBlockM)) * tiles_of(seqlen_k, kBlockN);
    }
};

// The query tiles [x, y) of the rows [r0, r1) that some key of a gathered tile lives in (and, with causal, that see its
// first key, the tile's keys ascending).
template <int kBlockM, int kBlockN>
__device__ __forceinline__ int2 gathered_query_tiles(const int* tile_keys, const int2* tile_lifetimes, int r0, int r1,
                                                     const TileBounds& bounds) {
    int lo = r1, hi = r0;
    for (int c = 0; c < kBlockN; ++c) {
        const int2 life = tile_lifetimes[c];
        const int first = max(life.x, r0), stop = min(life.y, r1);
        if (first < stop) lo = min(lo, first), hi = max(hi, stop);
    }
    if (bounds.causal()) lo = max(lo, tile_keys[0] - bounds.shift());
    const int begin = lo / kBlockM;
    return int2{begin, lo < hi ? tiles_of(hi, kBlockM) : begin};
}

// dK and dV with key lifetimes, outside the deterministic mode. A key that stays selected for a long run of queries
// would serialise the key-major kernel's block, and a key tile of neighbouring keys would compute every query its
// longest-lived key sees for all 64 keys. So the work goes query-major, as in the forward: one block per (range of
// kGatherRangeTiles query tiles, key slot, head-dim slice) of a (batch, query head) gathers the keys alive in the
// range's rows (KeyLifetimes), takes every kGatherKeySlots-th gathered tile, walks the range's query tiles that its
// keys live in, and adds its dK, dV (fp32 atomics, once per tile and range) and dBias to the accumulators; dQ goes
// to its buffer as in the key-major kernel.
template <int kElementType, int kHeadDim>
__global__ void __launch_bounds__(BwdTraits<kHeadDim>::kThreads)
    dmattn_bwd_dkdv_gathered_kernel(const BwdParams bp) {
    using Traits = BwdTraits<kHeadDim>;
    using Ops = ElementOps<kElementType>;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kSliceTiles = Traits::kSliceTiles;
    const AttentionParams& p = bp.attn;

    extern __shared__ __align__(16) unsigned char smem[];
    const u32 sK = smem_addr(smem);                  // the dK/dV kernel's layout
    const u32 sV = sK + Traits::kTileBytes;
    const u32 sQ = sV + Traits::kTileBytes;
    const u32 sdO = sQ + Traits::kTileBytes;
    const u32 sdS = sdO + Traits::kTileBytes;
    u32* sdS_words = reinterpret_cast<u32*>(smem + 4 * Traits::kTileBytes);
    float* sLse = reinterpret_cast<float*>(smem + 4 * Traits::kTileBytes + kBlockN * Traits::kSRowElems * 2);
    float* sDelta = sLse + kBlockM;

    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const TileBounds bounds(p);
    const GatheredRange<kBlockM, kBlockN, Traits::kSlices> at(p, bounds);
    const int d0 = at.slice * Traits::kDSlice;
    const bool first_slice = d0 == 0;
    const int slot = at.slot, head = at.head, batch = at.batch, kv_head = at.kv_head, r0 = at.r0, r1 = at.r1, n_end = at.n_end;
    const int Lq = p.seqlen_q;
    const int Lk = p.seqlen_k;
    const int key_row = warp * 16 + lane / 4;  // + 8 * half: this thread's keys within the tile
    const KeyLifetimes walk = at.walk(p);

    const char* q_g = head_slice(p.q, p.q_strides, batch, head);
    const char* do_g = head_slice(bp.d_o, bp.d_o_strides, batch, head);
    const char* k_g = head_slice(p.k, p.k_strides, batch, kv_head);
    const char* v_g = head_slice(p.v, p.v_strides, batch, kv_head);
    const float* lse_g = bp.lse + (static_cast<i64>(batch) * p.heads_q + head) * Lq;
    const float* delta_g = bp.delta + (static_cast<i64>(batch) * p.heads_q + head) * Lq;
    const char* bias_g = broadcast_slice(p.bias, element_size(p.bias.type), batch, head);
    float* dbias_g = d_bias_rows(bp, batch, head);

    long long computed = 0;
    int index = 0;  // of the gathered tile, among the range's
    for (int t = walk.next(0); t < n_end; t = walk.next(t + 1), ++index) {
        if (index % kGatherKeySlots != slot) continue;
        walk.load_keys<Traits>(sK, k_g, 2 * p.k_strides.seq, t);
        walk.load_keys<Traits>(sV, v_g, 2 * p.v_strides.seq, t);
        cp_async_commit();

        // This thread's keys, their lifetimes and bias.
        const int* tile_keys = walk.tile_keys(t);
        const int2* tile_lifetimes = walk.tile_lifetimes(t);
        const int keys[2] = {tile_keys[key_row], tile_keys[key_row + 8]};
        const ThreadKeyLifetimes mine{keys[0], {tile_lifetimes[key_row], tile_lifetimes[key_row + 8]}};
        KeyBias key_bias{};
#pragma unroll
        for (int half = 0; half < 2; ++half)
            key_bias.key[half] = bias_g != nullptr && p.bias.stride_row == 0 && keys[half] < Lk
                ? load_bias(bias_g, keys[half] * p.bias.stride_key, p.bias.type) : 0.f;

        const int2 span = gathered_query_tiles<kBlockM, kBlockN>(tile_keys, tile_lifetimes, r0, r1, bounds);
        const int m_begin = span.x, m_stop = span.y;

        float acc_dk[kSliceTiles][4], acc_dv[kSliceTiles][4];
#pragma unroll
        for (int d = 0; d < kSliceTiles; ++d)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc_dk[d][e] = acc_dv[d][e] = 0.f;
        float dbias_sum[2] = {0.f, 0.f};
        for (int m_tile = m_begin; m_tile < m_stop; ++m_tile) {
            const int m0 = m_tile * kBlockM;
            load_tile_async<Traits, kBlockM>(sQ, q_g, 2 * p.q_strides.seq, m0, Lq);
            load_tile_async<Traits, kBlockM>(sdO, do_g, 2 * bp.d_o_strides.seq, m0, Lq);
            cp_async_commit();
            if (threadIdx.x < kBlockM) {
                const int row = m0 + threadIdx.x;
                sLse[threadIdx.x] = row < Lq ? lse_g[row] * kLog2e : 0.f;
                sDelta[threadIdx.x] = row < Lq ? delta_g[row] : 0.f;
            }
            cp_async_wait<0>();
            __syncthreads();

            float s[8][4], dp[8][4];
            two_products<Traits, Ops>(s, dp, sK, sV, sQ, sdO, warp, lane);
            auto coords = [&](int ni, int e) {
                const int q_local = ni * 8 + (lane % 4) * 2 + e % 2;
                return ScoreCoords{m0 + q_local, keys[e / 2], sLse[q_local], sDelta[q_local]};
            };
            if (bias_g == nullptr) score_grads(p, s, dp, bounds, mine, true, NoBias{}, coords);
            else if (p.bias.stride_row == 0) score_grads(p, s, dp, bounds, mine, true, key_bias, coords);
            else score_grads(p, s, dp, bounds, mine, true, GlobalBias{p.bias, bias_g}, coords);
            if (dbias_g != nullptr && first_slice) dkdv_dbias<true>(p, dp, dbias_g, dbias_sum, m0, [&](int e) { return keys[e / 2]; }, lane);
            dkdv_accumulate<Traits, Ops>(s, dp, sQ, sdO, sdS_words, d0, bp.d_q_accum != nullptr, acc_dk, acc_dv, warp, lane);
            if (bp.d_q_accum != nullptr) dkdv_dq<Traits, Ops>(bp, sdS, sK, m0, batch, head, d0, warp, lane);
            __syncthreads();  // every warp is done with sQ, sdO, sdS, sLse, sDelta
        }
        computed += m_stop - m_begin;

        // This tile's share of dK (with the softmax scale of q.k), dV and the row-broadcast dBias.
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int key = keys[half];
            if (dbias_g != nullptr && first_slice && p.bias.rows == 1) {
                float sum = dbias_sum[half];
                sum += __shfl_xor_sync(0xffffffffu, sum, 1);
                sum += __shfl_xor_sync(0xffffffffu, sum, 2);
                if (lane % 4 == 0 && key < Lk && sum != 0.f) atomicAdd(dbias_g + key, sum);
            }
            if (key >= Lk || m_stop == m_begin) continue;
            const i64 row = ((static_cast<i64>(batch) * Lk + key) * p.heads_kv + kv_head) * kHeadDim + d0;
#pragma unroll
            for (int d = 0; d < kSliceTiles; ++d) {
                const int col = d * 8 + (lane % 4) * 2;
                atomicAdd(bp.d_k_accum + row + col, acc_dk[d][half * 2] * p.softmax_scale);
                atomicAdd(bp.d_k_accum + row + col + 1, acc_dk[d][half * 2 + 1] * p.softmax_scale);
                atomicAdd(bp.d_v_accum + row + col, acc_dv[d][half * 2]);
                atomicAdd(bp.d_v_accum + row + col + 1, acc_dv[d][half * 2 + 1]);
            }
        }
        cp_async_wait<0>();  // a tile with no query tile never waited for its K and V
    }

    // Computed and skipped add up to the tile count over every block of a (batch, head): slot 0 of the first slice
    // adds the range's tiles, every first-slice block takes its computed ones off (modulo 2^64).
    if (bp.tile_stats != nullptr && first_slice && threadIdx.x == 0) {
        atomicAdd(bp.tile_stats, static_cast<u64>(computed));
        const u64 range_tiles = slot == 0 ? at.tiles(Lk) : 0;
        atomicAdd(bp.tile_stats + 1, range_tiles - static_cast<u64>(computed));
    }
}

// The query-major kernel's matrix products on mma.sync (every architecture): Q, dO, K and V in padded rows, each
// operand fragment read by ldmatrix. (bwd_wgmma.cuh has the sm_90a ones, DqWgmma.)
template <int kElementType, int kHeadDim>
struct DqMmaSync {
    using Traits = BwdTraits<kHeadDim>;  // the tiles' layout and copies, and the bias stage
    using Ops = ElementOps<kElementType>;
    static constexpr int kDTiles = kHeadDim / 8;

    // Tile i (Q, dO, K, V) of the kernel's shared memory at `base`.
    static __device__ __forceinline__ u32 tile(u32 base, int i) { return base + i * Traits::kTileBytes; }
    // Between the copies' wait and the block barrier that shows them to the products: nothing to add for ldmatrix.
    static __device__ __forceinline__ void publish_copies() {}

    // S = Q K^T and dP = dO V^T for this warp's 16 queries.
    static __device__ __forceinline__ void scores(float (&s)[8][4], float (&dp)[8][4], u32 sQ, u32 sdO, u32 sK, u32 sV, int warp,
                                                  int lane) {
        two_products<Traits, Ops>(s, dp, sQ, sdO, sK, sV, warp, lane);
    }

    // dQ += dX K (dX in dp), K at sK.
    static __device__ __forceinline__ void accumulate_dq(float (&acc_dq)[kDTiles][4], const float (&dp)[8][4], u32 sK, int lane) {
#pragma unroll
        for (int kk = 0; kk < Traits::kBlockN / 16; ++kk) {
            u32 a[4];
            pack_p<Ops>(a, dp, kk);
#pragma unroll
            for (int dj = 0; dj < kDTiles / 2; ++dj) {
                u32 b[4];
                ldmatrix_x4_trans(b, sK + ((kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * Traits::kRowElems + dj * 16 + (lane / 16) * 8) * 2);
                Ops::mma(acc_dq[2 * dj], a, b[0], b[1]);
                Ops::mma(acc_dq[2 * dj + 1], a, b[2], b[3]);
            }
        }
    }
};

// Deterministic dQ: one block per (query tile, query head, batch) walks its key tiles like the
// forward and accumulates dQ = dX K in registers. With kDeltaPass it instead writes
// Delta = rowsum(P * dP) exactly, for bf16 where dO . O (O rounded to 8 bits) is too coarse: the
// error of Delta moves every dX of a row alike, and dQ = sum_j dX_j k_j then keeps it in full
// wherever the keys are not centred on zero. Products: the matrix products and the tiles' layout (DqMmaSync, or
// DqWgmma on sm_90a).
template <int kElementType, int kHeadDim, typename Visibility, bool kDeltaPass, typename Products = DqMmaSync<kElementType, kHeadDim>>
__global__ void __launch_bounds__(BwdTraits<kHeadDim>::kThreads)
    dmattn_bwd_dq_kernel(const BwdParams bp) {
    using Traits = typename Products::Traits;
    using Ops = ElementOps<kElementType>;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kDTiles = kHeadDim / 8;
    static_assert(Traits::kThreads == BwdTraits<kHeadDim>::kThreads, "the launch's threads");
    const AttentionParams& p = bp.attn;

    extern __shared__ __align__(16) unsigned char smem[];
    const u32 sQ = Products::tile(smem_addr(smem), 0);
    const u32 sdO = Products::tile(smem_addr(smem), 1);
    const u32 sK = Products::tile(smem_addr(smem), 2);
    const u32 sV = Products::tile(smem_addr(smem), 3);

    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int m0 = blockIdx.x * kBlockM;
    const int head = blockIdx.y;
    const int batch = blockIdx.z;
    const int kv_head = head / p.kv_group;
    const int Lq = p.seqlen_q;
    const TileBounds bounds(p);
    const int n_end = bounds.template key_tile_end<kBlockM, kBlockN>(m0);
    const char* q_g = head_slice(p.q, p.q_strides, batch, head);
    const char* do_g = head_slice(bp.d_o, bp.d_o_strides, batch, head);
    const char* k_g = head_slice(p.k, p.k_strides, batch, kv_head);
    const char* v_g = head_slice(p.v, p.v_strides, batch, kv_head);
    const int bias_type = p.bias.data == nullptr ? 0 : p.bias.type;
    const BiasStage<Traits> bias{smem + 4 * bwd_tile_bytes(kHeadDim), p.bias, batch, head};
    const Visibility policy = Visibility::template by_query_tile<kBlockM, kBlockN>(p, batch, head, blockIdx.x, 0, n_end);

    load_tile_async<Traits, kBlockM>(sQ, q_g, 2 * p.q_strides.seq, m0, Lq);
    load_tile_async<Traits, kBlockM>(sdO, do_g, 2 * bp.d_o_strides.seq, m0, Lq);
    cp_async_commit();

    float lse_log2[2], delta[2];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const int query = m0 + warp * 16 + lane / 4 + half * 8;
        const i64 row = (static_cast<i64>(batch) * p.heads_q + head) * Lq + query;
        lse_log2[half] = query < Lq ? bp.lse[row] * kLog2e : 0.f;
        delta[half] = query < Lq && !kDeltaPass ? bp.delta[row] : 0.f;
    }

    float acc_dq[kDTiles][4];
#pragma unroll
    for (int d = 0; d < kDTiles; ++d)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc_dq[d][e] = 0.f;

    for (int n = policy.next(0); n < n_end; n = policy.next(n + 1)) {
        policy.template load_keys<Traits>(sK, k_g, 2 * p.k_strides.seq, n);
        policy.template load_keys<Traits>(sV, v_g, 2 * p.v_strides.seq, n);
        if (bias_type != 0) policy.stage_bias(bias, m0, n);
        cp_async_commit();
        const bool elementwise = policy.elementwise(n);
        cp_async_wait<0>();
        Products::publish_copies();
        __syncthreads();

        float s[8][4], dp[8][4];
        Products::scores(s, dp, sQ, sdO, sK, sV, warp, lane);

        auto coords = [&](int ni, int e) {
            return ScoreCoords{m0 + warp * 16 + lane / 4 + (e / 2) * 8, policy.template key<kBlockN>(n, ni * 8 + (lane % 4) * 2 + e % 2),
                               lse_log2[e / 2], delta[e / 2]};
        };
        constexpr bool kWithGrad = !kDeltaPass;
        switch (bias_type) {
            case 0: score_grads<kWithGrad>(p, s, dp, bounds, policy, elementwise, NoBias{}, coords); break;
            case kFloat16: score_grads<kWithGrad>(p, s, dp, bounds, policy, elementwise, StagedBias<Traits, kFloat16>{bias, warp, lane}, coords); break;
            case kBFloat16: score_grads<kWithGrad>(p, s, dp, bounds, policy, elementwise, StagedBias<Traits, kBFloat16>{bias, warp, lane}, coords); break;
            default: score_grads<kWithGrad>(p, s, dp, bounds, policy, elementwise, StagedBias<Traits, kFloat32>{bias, warp, lane}, coords); break;
        }
        if constexpr (kDeltaPass) {
#pragma unroll
            for (int ni = 0; ni < 8; ++ni)
#pragma unroll
                for (int e = 0; e < 4; ++e) delta[e / 2] += s[ni][e] * dp[ni][e];
        } else {
            Products::accumulate_dq(acc_dq, dp, sK, lane);
        }
        __syncthreads();  // every warp is done with sK, sV and the bias
    }
    cp_async_wait<0>();  // Q and dO of a tile with no visited key tile

    if constexpr (kDeltaPass) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            float sum = delta[half];
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            const int query = m0 + warp * 16 + lane / 4 + half * 8;
            if (lane % 4 == 0 && query < Lq) bp.delta[(static_cast<i64>(batch) * p.heads_q + head) * Lq + query] = sum;
        }
        return;
    }

    char* dq_g = static_cast<char*>(bp.d_q) + 2 * (batch * bp.d_q_strides.batch + head * bp.d_q_strides.head);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const int query = m0 + warp * 16 + lane / 4 + half * 8;
        if (query >= Lq) continue;
        u32* dq_row = reinterpret_cast<u32*>(dq_g + 2 * (query * bp.d_q_strides.seq));
#pragma unroll
        for (int d = 0; d < kDTiles; ++d)
            dq_row[d * 4 + lane % 4] = Ops::pack(acc_dq[d][half * 2] * p.softmax_scale, acc_dq[d][half * 2 + 1] * p.softmax_scale);
    }
}

}  // namespace fdma

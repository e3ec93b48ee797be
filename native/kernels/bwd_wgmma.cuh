// The backward on Hopper's warpgroup MMA (sm_90a), which compute capability 9.0 runs at the head dims
// has_wgmma_backward names: dmattn_bwd_dkdv_wgmma_kernel in place of dmattn_bwd_dkdv_kernel (bwd_kernel.cuh),
// dmattn_bwd_dkdv_gathered_wgmma_kernel in place of dmattn_bwd_dkdv_gathered_kernel, and dmattn_bwd_dq_kernel (Delta,
// deterministic dQ) with DqWgmma's products. They compute what the mma.sync kernels compute, from the same pieces
// (visibility policy, score_grads, dBias); the dK/dV schedule differs:
//
// - A block owns a 64-key tile, K and V in shared memory while it lasts (key-major: a (batch, kv head)'s contiguous
//   keys; gathered: a tile of the keys alive in a range of query tiles), and two warpgroups that take every other query
//   tile of its walk each, with their own Q, dO, LSE and Delta in two stages (the next tile copies while this one
//   computes) and their own named barrier: neither waits for the other, and one's score pass overlaps the other's
//   products on the tensor cores.
// - Per query tile a warpgroup computes S^T = K Q^T and dP^T = V dO^T (m64n64k16, both operands from shared memory),
//   P^T and dX^T in registers (score_grads, in the m16n8 accumulator layout the mma.sync kernel has), dV += P^T dO and
//   dK += dX^T Q (m64nDk16, A from registers, B N-major), then dQ = dX K (A: dX^T written to shared memory, read
//   M-major; B N-major), added to the fp32 buffer by float4 atomics.
// - Key-major, the two warpgroups' dK and dV are summed through shared memory at the end of a (batch, kv head);
//   gathered, each adds its own to the fp32 accumulators.
//
// Device-only, no host headers; sm_90a only (wgmma.cuh).
#pragma once

#include "bwd_kernel.cuh"
#include "wgmma.cuh"

namespace fdma {

// A warpgroup's tiles: 64 rows of the head dim in 128-byte swizzled rows, copied by the warpgroup's 128 threads.
template <int kHeadDim>
struct BwdWgmmaTraits {
    static constexpr int kBlockM = 64;  // query tile
    static constexpr int kBlockN = 64;  // key tile
    static constexpr int kThreads = 128;
    static constexpr int kChunks = kHeadDim / 8;
    using Layout = Swizzle128Rows;
    static_assert(bwd_tile(kHeadDim).block_m == kBlockM && bwd_tile(kHeadDim).block_n == kBlockN,
                  "the plan's tiles: its bitmaps and tile counts");
};

// The kernel's shared memory (bwd_wgmma_smem_bytes): K, V, then per warpgroup Q and dO in two stages, dX^T, and
// LSE (log2 units not yet applied) and Delta in two stages. Tiles start on 1024-byte boundaries.
template <int kHeadDim>
struct WgmmaBackwardSmem {
    static constexpr u32 kTileBytes = 64 * kHeadDim * 2;
    static constexpr u32 kScoreBytes = 64 * 64 * 2;
    static constexpr u32 kGroupBytes = 4 * kTileBytes + kScoreBytes + 4 * 64 * 4;
    static_assert(kGroupBytes % 1024 == 0, "every warpgroup's tiles aligned");

    u32 k, v, group;  // group: this warpgroup's area

    __device__ __forceinline__ WgmmaBackwardSmem(unsigned char* smem, int warpgroup) {
        k = (smem_addr(smem) + 1023) & ~1023u;
        v = k + kTileBytes;
        group = v + kTileBytes + warpgroup * kGroupBytes;
    }
    __device__ __forceinline__ u32 q(int stage) const { return group + stage * kTileBytes; }
    __device__ __forceinline__ u32 d_o(int stage) const { return group + (2 + stage) * kTileBytes; }
    __device__ __forceinline__ u32 d_s() const { return group + 4 * kTileBytes; }
    __device__ __forceinline__ u32 lse(int stage) const { return d_s() + kScoreBytes + stage * 512; }
    __device__ __forceinline__ u32 delta(int stage) const { return lse(stage) + 256; }
    // Where the warpgroups exchange their dK and dV partial sums at the end (fp32, over Q and dO of warpgroup g).
    __device__ __forceinline__ u32 exchange(int warpgroup) const { return v + kTileBytes + warpgroup * kGroupBytes; }
    // Where group 1 hands group 0 its row-broadcast dBias sums of a head (64 floats): its LSE stage 0, free once its
    // tiles of the head are done.
    __device__ __forceinline__ u32 key_sums() const { return exchange(1) + 4 * kTileBytes + kScoreBytes; }
};

// Adds this thread's accumulator registers of 8-column tile d (the m16n8 layout: registers 0, 1 in one row, 2, 3 in
// the row 8 below), times scale, to fp32 rows row_lo and row_hi (nullptr: that row is left out), one float4 atomic
// per thread: lanes 2j and 2j + 1 swap halves, so that each holds four neighbouring columns of one row.
__device__ __forceinline__ void add_quads(float* row_lo, float* row_hi, int d, const float (&acc)[4], float scale, int lane) {
    const bool even = (lane & 1) == 0;
    const float give0 = even ? acc[2] : acc[0], give1 = even ? acc[3] : acc[1];
    const float got0 = __shfl_xor_sync(0xffffffffu, give0, 1), got1 = __shfl_xor_sync(0xffffffffu, give1, 1);
    float* row = even ? row_lo : row_hi;
    if (row == nullptr) return;
    const float4 quad = even ? float4{acc[0] * scale, acc[1] * scale, got0 * scale, got1 * scale}
                             : float4{got0 * scale, got1 * scale, acc[2] * scale, acc[3] * scale};
    atomicAdd(reinterpret_cast<float4*>(row + d * 8 + (lane & 2) * 2), quad);
}

// S = A1 B1^T and dP = A2 B2^T over the head dim (m64n64k16 steps), the four 64-row tiles K-major in shared memory;
// waited for. The dK/dV kernels' A are K and V, B are Q and dO; the query-major kernel's the other way round.
template <int kElementType, int kHeadDim>
__device__ __forceinline__ void wgmma_two_products(float (&s)[8][4], float (&dp)[8][4], u32 a1, u32 b1, u32 a2, u32 b2) {
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk) wgmma_ss<kElementType, 64>(s, k_major_descriptor<64>(a1, kk), k_major_descriptor<64>(b1, kk), kk > 0);
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk) wgmma_ss<kElementType, 64>(dp, k_major_descriptor<64>(a2, kk), k_major_descriptor<64>(b2, kk), kk > 0);
    wgmma_commit();
    wgmma_wait<0>();
    fence_accumulators(s);
    fence_accumulators(dp);
}

// One warpgroup's 64 keys (a block's key tile, K and V in shared memory) through its query tiles: dK and dV in
// registers. Per query tile: products(), then the caller's score_grads (its visibility and bias), then accumulate().
template <int kElementType, int kHeadDim>
struct WgmmaKeyRows {
    using Ops = ElementOps<kElementType>;
    static constexpr int kBlockM = 64;
    static constexpr int kBlockN = 64;
    static constexpr int kDTiles = kHeadDim / 8;

    float acc_dk[kDTiles][4], acc_dv[kDTiles][4];

    __device__ __forceinline__ WgmmaKeyRows() {
#pragma unroll
        for (int d = 0; d < kDTiles; ++d)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc_dk[d][e] = acc_dv[d][e] = 0.f;
    }

    // S^T = K Q^T and dP^T = V dO^T, the query tile's Q and dO in stage `stage`.
    __device__ __forceinline__ static void products(float (&s)[8][4], float (&dp)[8][4], const WgmmaBackwardSmem<kHeadDim>& smem,
                                                    int stage) {
        wgmma_two_products<kElementType, kHeadDim>(s, dp, smem.k, smem.q(stage), smem.v, smem.d_o(stage));
    }

    // From P^T (s) and dX^T (dp): dV += P^T dO and dK += dX^T Q; with dq_rows (this (batch, head)'s rows of the fp32 dQ
    // buffer, row stride heads_q * D), dQ += dX K for the tile's queries from m0 on, through dX^T in shared memory.
    // group_sync: the warpgroup's barrier.
    template <typename GroupSync>
    __device__ __forceinline__ void accumulate(const float (&s)[8][4], const float (&dp)[8][4], const WgmmaBackwardSmem<kHeadDim>& smem,
                                               int stage, float* dq_rows, int dq_row_stride, int m0, int Lq, float scale,
                                               int key_row, int warp, int lane, GroupSync group_sync) {
        u32 a_p[kBlockM / 16][4], a_dx[kBlockM / 16][4];
#pragma unroll
        for (int kk = 0; kk < kBlockM / 16; ++kk) {
            pack_p<Ops>(a_p[kk], s, kk);
            pack_p<Ops>(a_dx[kk], dp, kk);
        }
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < kBlockM / 16; ++kk)
            wgmma_rs<kElementType, kHeadDim, 1>(acc_dv, a_p[kk], mn_major_descriptor<kBlockM>(smem.d_o(stage), kk), 1);
#pragma unroll
        for (int kk = 0; kk < kBlockM / 16; ++kk)
            wgmma_rs<kElementType, kHeadDim, 1>(acc_dk, a_dx[kk], mn_major_descriptor<kBlockM>(smem.q(stage), kk), 1);
        wgmma_commit();
        if (dq_rows != nullptr) {
            // dX^T as [key][query] rows: the A operand of dQ = dX K, read M-major.
#pragma unroll
            for (int kk = 0; kk < kBlockM / 16; ++kk)
#pragma unroll
                for (int w = 0; w < 4; ++w) {
                    const u32 row = key_row + (w % 2) * 8, col = kk * 16 + (w / 2) * 8 + (lane % 4) * 2;
                    st_shared_u32(smem.d_s() + Swizzle128Rows::offset<kBlockN>(row, col / 8) + (col % 8) * 2, a_dx[kk][w]);
                }
            fence_proxy_async_shared();
            group_sync();  // the warpgroup's dX^T written
        }
        wgmma_wait<0>();
        fence_accumulators(acc_dv);
        fence_accumulators(acc_dk);
        fence_operands(a_p);
        fence_operands(a_dx);
        if (dq_rows == nullptr) return;

        float acc_dq[kDTiles][4];
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk)
            wgmma_ss<kElementType, kHeadDim, 1, 1>(acc_dq, mn_major_descriptor<kBlockN>(smem.d_s(), kk),
                                                   mn_major_descriptor<kBlockN>(smem.k, kk), kk > 0);
        wgmma_commit();
        wgmma_wait<0>();
        fence_accumulators(acc_dq);
        const int query = m0 + (warp % 4) * 16 + lane / 4;
        float* row_lo = query < Lq ? dq_rows + static_cast<i64>(query) * dq_row_stride : nullptr;
        float* row_hi = query + 8 < Lq ? dq_rows + static_cast<i64>(query + 8) * dq_row_stride : nullptr;
#pragma unroll
        for (int d = 0; d < kDTiles; ++d) add_quads(row_lo, row_hi, d, acc_dq[d], scale, lane);
    }
};

// The query-major kernel's (dmattn_bwd_dq_kernel: Delta, deterministic dQ) matrix products on sm_90a: one warpgroup,
// S = Q K^T and dP = dO V^T as m64n64k16 from shared memory, dQ += dX K as m64nDk16 with dX from registers and K
// read N-major; the tiles in 128-byte swizzled rows.
template <int kElementType, int kHeadDim>
struct DqWgmma {
    using Traits = BwdWgmmaTraits<kHeadDim>;
    using Ops = ElementOps<kElementType>;
    static constexpr int kDTiles = kHeadDim / 8;
    static_assert(3 * bwd_tile_bytes(kHeadDim) + 64 * kHeadDim * 2 + 1023 <= 4 * bwd_tile_bytes(kHeadDim) &&
                      bwd_tile_bytes(kHeadDim) % 1024 == 0,
                  "the four tiles from the first 1024-byte boundary fit the plan's padded ones, the bias stage after them");

    static __device__ __forceinline__ u32 tile(u32 base, int i) { return ((base + 1023) & ~1023u) + i * bwd_tile_bytes(kHeadDim); }
    // What cp.async wrote, made visible to wgmma's operand reads (the block barrier after it: to every thread's).
    static __device__ __forceinline__ void publish_copies() { fence_proxy_async_shared(); }

    static __device__ __forceinline__ void scores(float (&s)[8][4], float (&dp)[8][4], u32 sQ, u32 sdO, u32 sK, u32 sV, int, int) {
        wgmma_two_products<kElementType, kHeadDim>(s, dp, sQ, sK, sdO, sV);
    }

    static __device__ __forceinline__ void accumulate_dq(float (&acc_dq)[kDTiles][4], const float (&dp)[8][4], u32 sK, int) {
        u32 a[Traits::kBlockN / 16][4];
#pragma unroll
        for (int kk = 0; kk < Traits::kBlockN / 16; ++kk) pack_p<Ops>(a[kk], dp, kk);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < Traits::kBlockN / 16; ++kk)
            wgmma_rs<kElementType, kHeadDim, 1>(acc_dq, a[kk], mn_major_descriptor<Traits::kBlockN>(sK, kk), 1);
        wgmma_commit();
        wgmma_wait<0>();
        fence_accumulators(acc_dq);
        fence_operands(a);
    }
};

// A (batch, query head)'s query tiles as a warpgroup streams them through its two stages: Q, dO, LSE and Delta of
// tile m_tile into stage `stage` (cp.async, one commit group per call), and the walk over them.
template <int kHeadDim>
struct QueryTileStream {
    using Traits = BwdWgmmaTraits<kHeadDim>;
    const BwdParams& bp;
    const WgmmaBackwardSmem<kHeadDim>& smem;
    const char* q_g;
    const char* do_g;
    const float* lse_g;
    const float* delta_g;
    float* dq_rows;  // the fp32 dQ buffer's rows of this (batch, head); nullptr in deterministic mode

    __device__ __forceinline__ QueryTileStream(const BwdParams& bp_, const WgmmaBackwardSmem<kHeadDim>& smem_, int batch, int head)
        : bp(bp_), smem(smem_), q_g(head_slice(bp_.attn.q, bp_.attn.q_strides, batch, head)),
          do_g(head_slice(bp_.d_o, bp_.d_o_strides, batch, head)),
          lse_g(bp_.lse + (static_cast<i64>(batch) * bp_.attn.heads_q + head) * bp_.attn.seqlen_q),
          delta_g(bp_.delta + (static_cast<i64>(batch) * bp_.attn.heads_q + head) * bp_.attn.seqlen_q),
          dq_rows(bp_.d_q_accum == nullptr ? nullptr
                                           : bp_.d_q_accum + (static_cast<i64>(batch) * bp_.attn.seqlen_q * bp_.attn.heads_q + head) * kHeadDim) {}

    __device__ __forceinline__ void load(int m_tile, int stage) const {
        const int m0 = m_tile * Traits::kBlockM, Lq = bp.attn.seqlen_q;
        load_tile_async<Traits, Traits::kBlockM>(smem.q(stage), q_g, 2 * bp.attn.q_strides.seq, m0, Lq);
        load_tile_async<Traits, Traits::kBlockM>(smem.d_o(stage), do_g, 2 * bp.d_o_strides.seq, m0, Lq);
        const u32 t = copy_thread<Traits>();
        if (t < Traits::kBlockM) {
            const int row = m0 + static_cast<int>(t);
            cp_async_4(smem.lse(stage) + 4 * t, row < Lq ? lse_g + row : lse_g, row < Lq ? 4 : 0);
            cp_async_4(smem.delta(stage) + 4 * t, row < Lq ? delta_g + row : delta_g, row < Lq ? 4 : 0);
        }
        cp_async_commit();
    }

    // body(m_tile, stage) for tiles first, after(first), after(after(first)), ... below m_tiles, each landed in its
    // stage (tile i in stage i % 2) while the one after copies into the other; group_sync: the warpgroup's barrier.
    // Returns the number of tiles.
    template <typename After, typename Body, typename GroupSync>
    __device__ __forceinline__ int for_each(int first, int m_tiles, After after, Body body, GroupSync group_sync) const {
        int count = 0;
        group_sync();  // every thread of the group is done with the stages' last tiles (of another head or key tile)
        if (first < m_tiles) load(first, 0);
        for (int m_tile = first, stage = 0; m_tile < m_tiles; stage ^= 1, ++count) {
            const int m_next = after(m_tile);
            cp_async_wait<0>();
            fence_proxy_async_shared();
            group_sync();  // this tile landed; every thread of the group is done with the other stage and dX^T
            if (m_next < m_tiles) load(m_next, stage ^ 1);
            body(m_tile, stage);
            m_tile = m_next;
        }
        return count;
    }

    // score_grads' coordinates of this thread's score registers (ni, e) in the tile at m0 whose Q and dO are in stage
    // `stage`: S^T's rows are the keys key0 (registers 0, 1) and key1 (2, 3), its columns the queries; the LSE (in log2
    // units) and Delta from the stage.
    __device__ __forceinline__ auto coords(unsigned char* smem_bytes, int stage, int m0, int key0, int key1, int lane) const {
        const float* lse = reinterpret_cast<const float*>(smem_bytes + (smem.lse(stage) - smem_addr(smem_bytes)));
        const float* delta = reinterpret_cast<const float*>(smem_bytes + (smem.delta(stage) - smem_addr(smem_bytes)));
        return [lse, delta, m0, key0, key1, lane](int ni, int e) {
            const int q_local = ni * 8 + (lane % 4) * 2 + e % 2;
            return ScoreCoords{m0 + q_local, e < 2 ? key0 : key1, lse[q_local] * kLog2e, delta[q_local]};
        };
    }
};

// Where a thread of a wgmma dK/dV block stands: its warpgroup, the group's barrier and shared memory, its keys' rows.
template <int kHeadDim>
struct WgmmaBwdThread {
    int warp, lane;
    int group;     // 0 or 1; read through a shuffle so that the compiler knows it is warp-uniform
    u32 group_thread;
    int key_row;   // + 8 * half: this thread's keys within the key tile
    WgmmaBackwardSmem<kHeadDim> smem;

    __device__ __forceinline__ explicit WgmmaBwdThread(unsigned char* smem_bytes)
        : warp(threadIdx.x / 32), lane(threadIdx.x % 32), group(__shfl_sync(0xffffffffu, threadIdx.x / 128, 0)),
          group_thread(threadIdx.x % 128), key_row((warp % 4) * 16 + lane / 4), smem(smem_bytes, group) {}

    __device__ __forceinline__ void group_sync() const { named_barrier_sync(1 + group, 128); }
};

// The score pass of one query tile for the caller's bias form (uniform branches): P^T and dX^T in place of s and dp.
template <typename Visibility, typename Coords>
__device__ __forceinline__ void wgmma_score_grads(const AttentionParams& p, float (&s)[8][4], float (&dp)[8][4], const TileBounds& bounds,
                                                  const Visibility& policy, bool elementwise, const char* bias_g,
                                                  const KeyBias& key_bias, Coords coords) {
    if (bias_g == nullptr) score_grads(p, s, dp, bounds, policy, elementwise, NoBias{}, coords);
    else if (p.bias.stride_row == 0) score_grads(p, s, dp, bounds, policy, elementwise, key_bias, coords);
    else score_grads(p, s, dp, bounds, policy, elementwise, GlobalBias{p.bias, bias_g}, coords);
}

// This thread's two keys' row-broadcast bias (0 where a key is past Lk or there is none).
__device__ __forceinline__ KeyBias thread_key_bias(const AttentionParams& p, const char* bias_g, int key0, int key1) {
    KeyBias b{};
    if (bias_g == nullptr || p.bias.stride_row != 0) return b;
    b.key[0] = key0 < p.seqlen_k ? load_bias(bias_g, key0 * p.bias.stride_key, p.bias.type) : 0.f;
    b.key[1] = key1 < p.seqlen_k ? load_bias(bias_g, key1 * p.bias.stride_key, p.bias.type) : 0.f;
    return b;
}

// The row-broadcast dBias shares of this thread's keys (dbias_sum), summed over the quad (every lane gets the sums).
__device__ __forceinline__ void quad_key_sums(float (&sum)[2], const float (&dbias_sum)[2]) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        sum[half] = dbias_sum[half];
        sum[half] += __shfl_xor_sync(0xffffffffu, sum[half], 1);
        sum[half] += __shfl_xor_sync(0xffffffffu, sum[half], 2);
    }
}

// Contiguous key tiles: one block per (64-key tile, owner heads, owner batches), as dmattn_bwd_dkdv_kernel.
template <int kElementType, int kHeadDim, typename Visibility>
__global__ void __launch_bounds__(kBwdWgmmaThreads, 1) dmattn_bwd_dkdv_wgmma_kernel(const BwdParams bp) {
    using Traits = BwdWgmmaTraits<kHeadDim>;
    using BlockCopy = CopiedBy<Traits, kBwdWgmmaThreads>;
    using Ops = ElementOps<kElementType>;
    using Rows = WgmmaKeyRows<kElementType, kHeadDim>;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kDTiles = kHeadDim / 8;
    static_assert(kBwdWgmmaThreads == 2 * Traits::kThreads, "two warpgroups");
    const AttentionParams& p = bp.attn;

    extern __shared__ __align__(16) unsigned char smem_bytes[];
    const WgmmaBwdThread<kHeadDim> me(smem_bytes);
    const WgmmaBackwardSmem<kHeadDim>& smem = me.smem;
    const int n_tile = blockIdx.x;
    const int n0 = n_tile * kBlockN;
    const int Lq = p.seqlen_q;
    const int Lk = p.seqlen_k;
    const int m_tiles = tiles_of(Lq, kBlockM);
    const TileBounds bounds(p);
    const int m_begin = bounds.template query_tile_begin<kBlockM>(n0);
    const int key0 = n0 + me.key_row, key1 = key0 + 8;

    long long computed = 0, walked = 0;
    const DkdvOwners owners(bp);

    for (int batch = owners.batch_first; batch <= owners.batch_last; ++batch) {
        for (int kv_head = owners.kv_head_first; kv_head <= owners.kv_head_last; ++kv_head) {
            load_tile_async<BlockCopy, kBlockN>(smem.k, head_slice(p.k, p.k_strides, batch, kv_head), 2 * p.k_strides.seq, n0, Lk);
            load_tile_async<BlockCopy, kBlockN>(smem.v, head_slice(p.v, p.v_strides, batch, kv_head), 2 * p.v_strides.seq, n0, Lk);
            cp_async_commit();
            cp_async_wait<0>();
            fence_proxy_async_shared();
            __syncthreads();  // K and V landed, from both warpgroups' copies

            Rows rows;
            for (int head = kv_head * p.kv_group; head < (kv_head + 1) * p.kv_group; ++head) {
                const QueryTileStream<kHeadDim> stream(bp, smem, batch, head);
                const char* bias_g = broadcast_slice(p.bias, element_size(p.bias.type), batch, head);
                float* dbias_g = d_bias_rows(bp, batch, head);
                const Visibility policy = Visibility::template by_key_tile<kBlockM, kBlockN>(p, batch, head, n_tile);
                const KeyBias key_bias = thread_key_bias(p, bias_g, key0, key1);
                float dbias_sum[2] = {0.f, 0.f};

                // Every other tile of the walk, from the first (warpgroup head % 2) or the second: the two groups share
                // each head's tiles and, over heads, the odd one out.
                auto step = [&](int t) { return t < m_tiles ? policy.next(t + 1) : m_tiles; };
                const int first = me.group == (head & 1) ? policy.next(m_begin) : step(policy.next(m_begin));
                computed += stream.for_each(first, m_tiles, [&](int t) { return step(step(t)); }, [&](int m_tile, int stage) {
                    const int m0 = m_tile * kBlockM;
                    float s[8][4], dp[8][4];
                    Rows::products(s, dp, smem, stage);
                    const auto coords = stream.coords(smem_bytes, stage, m0, key0, key1, me.lane);
                    wgmma_score_grads(p, s, dp, bounds, policy, policy.elementwise(m_tile), bias_g, key_bias, coords);
                    // Not atomic with a row per query: within a head a (query, key) pair is one group's, and the heads
                    // that share the bias's rows follow each other a block barrier apart (below).
                    if (dbias_g != nullptr) dkdv_dbias<false>(p, dp, dbias_g, dbias_sum, m0, [&](int e) { return e < 2 ? key0 : key1; }, me.lane);
                    rows.accumulate(s, dp, smem, stage, stream.dq_rows, p.heads_q * kHeadDim, m0, Lq, p.softmax_scale, me.key_row,
                                    me.warp, me.lane, [&] { me.group_sync(); });
                }, [&] { me.group_sync(); });
                if (dbias_g != nullptr) {
                    // The head's row-broadcast dBias: group 1's sums handed to group 0, added to its own in that order;
                    // with the barriers that keep the heads apart, dBias has the same bits every call.
                    float* key_sums = reinterpret_cast<float*>(smem_bytes + (smem.key_sums() - smem_addr(smem_bytes)));
                    const bool broadcast_rows = p.bias.rows == 1;
                    float sum[2];
                    quad_key_sums(sum, dbias_sum);
                    if (broadcast_rows && me.group == 1 && me.lane % 4 == 0) key_sums[me.key_row] = sum[0], key_sums[me.key_row + 8] = sum[1];
                    __syncthreads();
                    if (broadcast_rows && me.group == 0 && me.lane % 4 == 0) {
                        if (key0 < Lk) dbias_g[key0] += sum[0] + key_sums[me.key_row];
                        if (key1 < Lk) dbias_g[key1] += sum[1] + key_sums[me.key_row + 8];
                    }
                    __syncthreads();
                }
                walked += m_tiles;
            }

            // The two groups' sums: group 1 hands its dK to group 0, group 0 its dV to group 1 (fp32, over the
            // receiver's Q and dO stages); group 0 writes dK (with the softmax scale of q.k), group 1 dV.
            __syncthreads();  // both groups done with their stages
            float* exchange = reinterpret_cast<float*>(smem_bytes + (smem.exchange(me.group) - smem_addr(smem_bytes)));
            float* handed = reinterpret_cast<float*>(smem_bytes + (smem.exchange(1 - me.group) - smem_addr(smem_bytes)));
            auto hand_over = [&](const float (&acc)[kDTiles][4]) {
#pragma unroll
                for (int d = 0; d < kDTiles; ++d)
#pragma unroll
                    for (int e = 0; e < 4; ++e) handed[(d * 4 + e) * Traits::kThreads + me.group_thread] = acc[d][e];
            };
            auto take_and_write = [&](const float (&acc)[kDTiles][4], void* out, const Strides& strides, float scale) {
                char* out_g = static_cast<char*>(out) + 2 * (batch * strides.batch + kv_head * strides.head);
#pragma unroll
                for (int half = 0; half < 2; ++half) {
                    const int key = half == 0 ? key0 : key1;
                    u32* row = reinterpret_cast<u32*>(out_g + 2 * (key * strides.seq));
#pragma unroll
                    for (int d = 0; d < kDTiles; ++d) {
                        const float lo = acc[d][half * 2] + exchange[(d * 4 + half * 2) * Traits::kThreads + me.group_thread];
                        const float hi = acc[d][half * 2 + 1] + exchange[(d * 4 + half * 2 + 1) * Traits::kThreads + me.group_thread];
                        if (key < Lk) row[d * 4 + me.lane % 4] = Ops::pack(lo * scale, hi * scale);
                    }
                }
            };
            if (me.group == 0) hand_over(rows.acc_dv);
            else hand_over(rows.acc_dk);
            __syncthreads();
            if (me.group == 0) take_and_write(rows.acc_dk, bp.d_k, bp.d_k_strides, p.softmax_scale);
            else take_and_write(rows.acc_dv, bp.d_v, bp.d_v_strides, 1.f);
            __syncthreads();  // the exchange read before the next (batch, kv head) copies over it
        }
    }

    // Each group adds its computed tiles; group 0 the skipped ones of every walk (modulo 2^64).
    if (bp.tile_stats != nullptr && me.group_thread == 0) {
        atomicAdd(bp.tile_stats, static_cast<u64>(computed));
        atomicAdd(bp.tile_stats + 1, static_cast<u64>(me.group == 0 ? walked : 0) - static_cast<u64>(computed));
    }
}

// Key lifetimes, outside the deterministic mode: dmattn_bwd_dkdv_gathered_kernel's work (one block per (range of query
// tiles, key slot) of a (batch, query head); see there), each gathered key tile's query tiles shared by the two groups
// as above, each adding its dK and dV to the fp32 accumulators.
template <int kElementType, int kHeadDim>
__global__ void __launch_bounds__(kBwdWgmmaThreads, 1) dmattn_bwd_dkdv_gathered_wgmma_kernel(const BwdParams bp) {
    using Traits = BwdWgmmaTraits<kHeadDim>;
    using BlockCopy = CopiedBy<Traits, kBwdWgmmaThreads>;
    using Rows = WgmmaKeyRows<kElementType, kHeadDim>;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kDTiles = kHeadDim / 8;
    const AttentionParams& p = bp.attn;

    extern __shared__ __align__(16) unsigned char smem_bytes[];
    const WgmmaBwdThread<kHeadDim> me(smem_bytes);
    const WgmmaBackwardSmem<kHeadDim>& smem = me.smem;
    const TileBounds bounds(p);
    static_assert(BwdTraits<kHeadDim>::kSlices == 1, "a block takes the whole head dim");
    const GatheredRange<kBlockM, kBlockN, BwdTraits<kHeadDim>::kSlices> at(p, bounds);
    const int slot = at.slot, head = at.head, batch = at.batch, kv_head = at.kv_head, r0 = at.r0, r1 = at.r1, n_end = at.n_end;
    const int Lq = p.seqlen_q;
    const int Lk = p.seqlen_k;
    const KeyLifetimes walk = at.walk(p);

    const QueryTileStream<kHeadDim> stream(bp, smem, batch, head);
    const char* k_g = head_slice(p.k, p.k_strides, batch, kv_head);
    const char* v_g = head_slice(p.v, p.v_strides, batch, kv_head);
    const char* bias_g = broadcast_slice(p.bias, element_size(p.bias.type), batch, head);
    float* dbias_g = d_bias_rows(bp, batch, head);

    long long computed = 0;
    int index = 0;  // of the gathered tile, among the range's
    for (int t = walk.next(0); t < n_end; t = walk.next(t + 1), ++index) {
        if (index % kGatherKeySlots != slot) continue;
        walk.load_keys<BlockCopy>(smem.k, k_g, 2 * p.k_strides.seq, t);
        walk.load_keys<BlockCopy>(smem.v, v_g, 2 * p.v_strides.seq, t);
        cp_async_commit();

        // This thread's keys, their lifetimes and bias; the range's query tiles some key of the tile lives in (and,
        // with causal, sees its first key).
        const int* tile_keys = walk.tile_keys(t);
        const int2* tile_lifetimes = walk.tile_lifetimes(t);
        const int key0 = tile_keys[me.key_row], key1 = tile_keys[me.key_row + 8];
        const ThreadKeyLifetimes mine{key0, {tile_lifetimes[me.key_row], tile_lifetimes[me.key_row + 8]}};
        const KeyBias key_bias = thread_key_bias(p, bias_g, key0, key1);
        const int2 span = gathered_query_tiles<kBlockM, kBlockN>(tile_keys, tile_lifetimes, r0, r1, bounds);
        const int m_begin = span.x, m_stop = span.y;
        cp_async_wait<0>();
        fence_proxy_async_shared();
        __syncthreads();  // K and V landed, from both groups' copies

        Rows rows;
        float dbias_sum[2] = {0.f, 0.f};
        const int tiles = stream.for_each(m_begin + me.group, m_stop, [](int m) { return m + 2; }, [&](int m_tile, int stage) {
            const int m0 = m_tile * kBlockM;
            float s[8][4], dp[8][4];
            Rows::products(s, dp, smem, stage);
            const auto coords = stream.coords(smem_bytes, stage, m0, key0, key1, me.lane);
            wgmma_score_grads(p, s, dp, bounds, mine, true, bias_g, key_bias, coords);
            if (dbias_g != nullptr) dkdv_dbias<true>(p, dp, dbias_g, dbias_sum, m0, [&](int e) { return e < 2 ? key0 : key1; }, me.lane);
            rows.accumulate(s, dp, smem, stage, stream.dq_rows, p.heads_q * kHeadDim, m0, Lq, p.softmax_scale, me.key_row, me.warp,
                            me.lane, [&] { me.group_sync(); });
        }, [&] { me.group_sync(); });
        computed += tiles;

        // This group's share of the tile's dK (with the softmax scale of q.k), dV and row-broadcast dBias.
        if (dbias_g != nullptr && p.bias.rows == 1) {
            float sum[2];
            quad_key_sums(sum, dbias_sum);
            if (me.lane % 4 == 0 && key0 < Lk && sum[0] != 0.f) atomicAdd(dbias_g + key0, sum[0]);
            if (me.lane % 4 == 0 && key1 < Lk && sum[1] != 0.f) atomicAdd(dbias_g + key1, sum[1]);
        }
        if (tiles > 0) {
            const i64 row_stride = static_cast<i64>(p.heads_kv) * kHeadDim;
            const i64 base = (static_cast<i64>(batch) * Lk * p.heads_kv + kv_head) * kHeadDim;
            float* dk_lo = key0 < Lk ? bp.d_k_accum + base + key0 * row_stride : nullptr;
            float* dk_hi = key1 < Lk ? bp.d_k_accum + base + key1 * row_stride : nullptr;
            float* dv_lo = key0 < Lk ? bp.d_v_accum + base + key0 * row_stride : nullptr;
            float* dv_hi = key1 < Lk ? bp.d_v_accum + base + key1 * row_stride : nullptr;
#pragma unroll
            for (int d = 0; d < kDTiles; ++d) {
                add_quads(dk_lo, dk_hi, d, rows.acc_dk[d], p.softmax_scale, me.lane);
                add_quads(dv_lo, dv_hi, d, rows.acc_dv[d], 1.f, me.lane);
            }
        }
    }

    // Computed and skipped add up to the tile count over every block of a (batch, head): slot 0's group 0 adds the
    // range's tiles, every group takes its computed ones off (modulo 2^64).
    if (bp.tile_stats != nullptr && me.group_thread == 0) {
        atomicAdd(bp.tile_stats, static_cast<u64>(computed));
        const u64 range_tiles = slot == 0 && me.group == 0 ? at.tiles(Lk) : 0;
        atomicAdd(bp.tile_stats + 1, range_tiles - static_cast<u64>(computed));
    }
}

}  // namespace fdma

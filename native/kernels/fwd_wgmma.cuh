// The forward on Hopper's warpgroup MMA (sm_90a): dmattn_fwd_wgmma_kernel, which compute capability 9.0 runs in
// place of dmattn_fwd_kernel (fwd_kernel.cuh) for the head dims has_wgmma_forward names. It computes what that
// kernel computes, from the same pieces (visibility policy, score modification, online softmax, epilogue,
// statistics); what differs is a schedule that keeps the tensor cores busy through the softmax:
//
// - A block computes with two warpgroups of 64 query rows; a warp still owns 16 rows in the m16n8 accumulator layout,
//   as the visibility, bias and softmax code expects. Q, K and V lie in shared memory in 128-byte swizzled rows.
// - S = Q K^T: m64n64k16 steps over the head dim, A (Q) and B (K) read from shared memory through descriptors.
//   O += P V: m64nDk16 steps over the tile's keys, A (P) from the score registers, B (V) read N-major.
// - While the scores of tile i go through visibility, bias and softmax, O += P V of tile i - 1 runs on the tensor
//   cores; the accumulators are rescaled to the new row maxima once it has finished (WgmmaRows).
// - Tiles i + 1 and i + 2 load while tile i computes: K and the bias in kFwdKeySlots slots, V in kFwdValueSlots
//   (tile i - 1's V is still read by the product in flight).
//
// Warp-specialized: a producer warpgroup after the two computing ones walks the tiles and copies Q and each tile
// (cp.async), and publishes it on a shared-memory barrier once it has landed; each computing warpgroup waits for the
// tile it needs and frees the slots it has read on barriers of their own, so neither waits for the other and none of
// them spends instructions on copies or, with key lifetimes, on the gathering walk.
//
// Device-only, no host headers; sm_90a only (wgmma.cuh).
#pragma once

#include "fwd_kernel.cuh"
#include "wgmma.cuh"

namespace fdma {

// The wgmma forward's shared memory: Q, the K slots and the V slots (Swizzle128Rows tiles from a 1024-byte
// boundary), then the bias slots (BiasStage::slot).
template <int kHeadDim>
struct WgmmaForwardSmem {
    using Traits = FwdTraits<kHeadDim, kFwdWgmma>;
    static constexpr u32 kKeyTileBytes = Traits::kBlockN * kHeadDim * 2;
    static_assert(kFwdKeySlots == 2 && kFwdValueSlots == 3, "the schedules below");

    u32 q, k, v;
    unsigned char* bias;

    __device__ __forceinline__ explicit WgmmaForwardSmem(unsigned char* smem) {
        const u32 start = smem_addr(smem);
        q = (start + 1023) & ~1023u;
        k = q + Traits::kBlockM * kHeadDim * 2;
        v = k + kFwdKeySlots * kKeyTileBytes;
        bias = smem + (v + kFwdValueSlots * kKeyTileBytes - start);
    }
    __device__ __forceinline__ u32 key_slot(int slot) const { return k + slot * kKeyTileBytes; }
    __device__ __forceinline__ u32 value_slot(int slot) const { return v + slot * kKeyTileBytes; }
};

// One warpgroup's 64 rows through the key tiles: their output accumulators and softmax state, the two matrix
// products of a tile and the softmax between them. A schedule calls compute_tile per tile, then accumulate_last for
// the last one's O += P V.
template <int kElementType, int kHeadDim, typename Visibility>
struct WgmmaRows {
    using Traits = FwdTraits<kHeadDim, kFwdWgmma>;
    using Ops = ElementOps<kElementType>;
    static constexpr int kBlockN = Traits::kBlockN;
    static constexpr int kNTiles = Traits::kNTiles;
    static constexpr int kDTiles = Traits::kDTiles;
    static_assert(Traits::kWarps == 8 && Traits::kMTiles == 1, "two warpgroups of 64 rows, 16 per warp");
    static_assert(kBlockN == 64, "S is one m64n64 product per warpgroup");
    static_assert(kHeadDim == 64 || kHeadDim == 128, "O is one m64n64 or m64n128 product per warpgroup");

    float acc_o[1][kDTiles][4];
    float row_max[1][2];       // log2 domain; -inf until a visible key is seen
    float row_sum[1][2];       // this thread's share; the quad is summed at the end
    u32 p_prev[kBlockN / 16][4];  // P of the tile before, packed: the A operand of its O += P V
    u32 visible_pairs = 0;     // this thread's visible score registers, for the statistics
    u32 q_rows;                // this warpgroup's 64 rows of Q

    // The warpgroup's index is read through a shuffle from lane 0: the compiler then knows it is the same across the
    // warp and builds the Q descriptors in uniform registers, where the MMAs read them, instead of moving them there
    // from per-thread registers before each MMA.
    __device__ __forceinline__ WgmmaRows(u32 sQ, int warp) : q_rows(sQ + __shfl_sync(0xffffffffu, warp / 4, 0) * 64 * 128) {
        start_softmax<Traits>(acc_o, row_max, row_sum);
    }

    // S = Q K^T for the tile whose K is at k_tile: one commit group.
    __device__ __forceinline__ void issue_scores(float (&s)[1][kNTiles][4], u32 k_tile) {
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < kHeadDim / 16; ++kk)
            wgmma_ss<kElementType, kBlockN>(s[0], k_major_descriptor<Traits::kBlockM>(q_rows, kk),
                                          k_major_descriptor<kBlockN>(k_tile, kk), kk > 0);
        wgmma_commit();
    }

    // O += P V of the tile before, its V at v_tile: one commit group.
    __device__ __forceinline__ void issue_accumulate(u32 v_tile) {
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk)
            wgmma_rs<kElementType, kHeadDim, 1>(acc_o[0], p_prev[kk], mn_major_descriptor<kBlockN>(v_tile, kk), 1);
        wgmma_commit();
    }

    // O += P V of the last tile, its V at v_tile, waited for.
    __device__ __forceinline__ void accumulate_last(u32 v_tile) {
        wgmma_fence();
        issue_accumulate(v_tile);
        retire_accumulate();
    }

    // Waits for the products in flight; their operands (the tile before's V and P) are free after it.
    __device__ __forceinline__ void retire_accumulate() {
        wgmma_wait<0>();
        fence_accumulators(acc_o[0]);
        fence_operands(p_prev);
    }

    // One tile: S = Q K^T from its K at k_tile and, when accumulating, O += P V of the tile before (its V at
    // last_v_tile) behind it on the tensor cores; then visibility, score modification with the bias staged at `bias`
    // and softmax, the tile's P ending packed in p_prev. keys_read() runs once the tile's K and bias are no longer
    // read, values_read() once the tile before's V is not. The schedules pass `accumulating` as a constant and the
    // call is inlined, so each keeps only its branch.
    template <typename KeysRead, typename ValuesRead>
    __device__ __forceinline__ void compute_tile(bool accumulating, u32 k_tile, u32 last_v_tile, const u32 (&visible)[1],
                                                 bool every_visible, const ScoreModParams& m, const BiasStage<Traits>& bias,
                                                 int bias_type, int pack, int warp, int lane, KeysRead keys_read,
                                                 ValuesRead values_read) {
        float s[1][kNTiles][4];
        issue_scores(s, k_tile);
        visible_pairs += __popc(visible[0]);
        if (accumulating) {
            issue_accumulate(last_v_tile);
            wgmma_wait<1>();  // S done; O += P V may still run
        } else {
            wgmma_wait<0>();
        }
        fence_accumulators(s[0]);
        const float score_scale = score_mod_tile<Traits>(s, visible, every_visible, m, bias, bias_type, pack, warp, lane);
        keys_read();
        float rescale[1][2];
        online_softmax<Traits>(s, row_max, row_sum, rescale, score_scale);
        if (accumulating) {
            fence_accumulators(s[0]);  // the softmax done before the wait, not moved behind it by the compiler
            retire_accumulate();
            values_read();
        }
        rescale_output<Traits>(acc_o, rescale);
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk) pack_p<Ops>(p_prev[kk], s[0], kk);
    }

    __device__ __forceinline__ void write(const FwdParams& p, const FwdPlace& at, int computed, int owned_tiles, int warp,
                                          int lane) const {
        write_fwd_output<Traits, kElementType, kHeadDim>(p, at, acc_o, row_max, row_sum, warp, lane);
        count_fwd_tiles(p, visible_pairs, computed, owned_tiles, lane);
    }
};

// The walk's next tile at or after t, as a warp-specialized kernel's producer warpgroup (its threads after the
// computing ones) steps it alone: gathered tiles are found by a block-wide step, which its threads take among
// themselves on named barrier 1.
template <typename Traits, typename Visibility>
__device__ __forceinline__ int producer_next(const Visibility& policy, int t) {
    if constexpr (Visibility::kGathers) return policy.template next<Traits::kThreads, 1>(t);
    else return policy.next(t);
}

// The warp-specialized forward. The shared-memory barriers: a tile's K (with its bias) and V land in
// their slots in two copy groups, each published on its slot's `full` barrier by the producer's threads once it has
// landed (cp.async wait, then the proxy fence that lets the tensor cores read what cp.async wrote); every thread of
// the computing warpgroups arrives on the slot's `free` barrier once it no longer reads it. Phase k of a slot's
// barriers is its k-th tile. With contiguous tiles the computing warpgroups walk the tiles too (reading only the
// tile bitmaps); gathered tiles they take from the producer: a key slot says which tile it holds, or that the walk
// has ended, and the gathered keys' lists stay until the tiles' slots are free (KeyLifetimes::kLists).
template <int kElementType, int kHeadDim, typename Visibility>
__device__ __forceinline__ void fwd_wgmma_warp_specialized(const FwdParams& p) {
    using Traits = FwdTraits<kHeadDim, kFwdWgmma>;
    using Copy = CopiedBy<Traits, kFwdProducerThreads>;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockThreads = Traits::kThreads + kFwdProducerThreads;
    // Registers: the producer's copies need few, the MMA accumulators and softmax many (the block's 65536 at most).
    constexpr int kProducerRegs = 56, kConsumerRegs = 224;
    static_assert(kProducerRegs * kFwdProducerThreads + kConsumerRegs * Traits::kThreads <= 65536, "registers");
    const AttentionParams& a = p.attn;

    extern __shared__ __align__(16) unsigned char smem_bytes[];
    const WgmmaForwardSmem<kHeadDim> smem(smem_bytes);
    // q_full, then key_full, key_free, value_full, value_free per slot.
    __shared__ __align__(8) u64 barriers[1 + 2 * kFwdKeySlots + 2 * kFwdValueSlots];
    __shared__ int tile_in_slot[kFwdKeySlots];  // the tile whose K a key slot holds; n_end: the walk ended
    const u32 q_full = smem_addr(barriers);
    auto key_full = [&](int slot) { return q_full + 8 * (1 + slot); };
    auto key_free = [&](int slot) { return q_full + 8 * (1 + kFwdKeySlots + slot); };
    auto value_full = [&](int slot) { return q_full + 8 * (1 + 2 * kFwdKeySlots + slot); };
    auto value_free = [&](int slot) { return q_full + 8 * (1 + 2 * kFwdKeySlots + kFwdValueSlots + slot); };
    if (threadIdx.x == 0) {
        mbarrier_init(q_full, kFwdProducerThreads);
        for (int slot = 0; slot < kFwdKeySlots; ++slot) {
            mbarrier_init(key_full(slot), kFwdProducerThreads);
            mbarrier_init(key_free(slot), Traits::kThreads);
        }
        for (int slot = 0; slot < kFwdValueSlots; ++slot) {
            mbarrier_init(value_full(slot), kFwdProducerThreads);
            mbarrier_init(value_free(slot), Traits::kThreads);
        }
        mbarrier_init_fence();
    }

    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const FwdBlock<Traits, Visibility, kBlockThreads> block(p, warp, lane);
    const FwdPlace& at = block.at;
    const int m0 = at.m0;
    const int bias_type = block.bias_type;
    const int n_begin = block.share.begin, n_end = block.share.end;
    const TileVisibility<Traits, Visibility>& visibility = block.visibility;
    const Visibility& policy = visibility.policy;
    __syncthreads();  // the barriers initialized

    if (warp >= Traits::kWarps) {  // the producer warpgroup
        setmaxnreg_dec<kProducerRegs>();
        const BiasStage<Copy> bias{smem.bias, a.bias, at.batch, at.head};
        load_tile_async<Copy, kBlockM>(smem.q, block.q, 2 * a.q_strides.seq, m0, a.seqlen_q);
        cp_async_commit();
        // A group is published once the group after it is under way: the barrier of the newest one waits here.
        u32 newest = q_full;
        auto publish_previous = [&](u32 next) {
            cp_async_wait<1>();
            fence_proxy_async_shared();
            mbarrier_arrive(newest);
            newest = next;
        };
        int i = 0;  // the tile's index in the walk: its K in key slot i % 2, its V in value slot i % 3
        for (int n = producer_next<Traits>(policy, n_begin); n < n_end; n = producer_next<Traits>(policy, n + 1), ++i) {
            const int key_slot = i % kFwdKeySlots, value_slot = i % kFwdValueSlots;
            if (i >= kFwdKeySlots) mbarrier_wait(key_free(key_slot), (i / kFwdKeySlots - 1) & 1);
            if (copy_thread<Copy>() == 0) tile_in_slot[key_slot] = n;
            policy.template load_keys<Copy>(smem.key_slot(key_slot), block.k, 2 * a.k_strides.seq, n);
            if (bias_type != 0) policy.stage_bias(bias.slot(key_slot), m0, n);
            cp_async_commit();
            publish_previous(key_full(key_slot));
            if (i >= kFwdValueSlots) mbarrier_wait(value_free(value_slot), (i / kFwdValueSlots - 1) & 1);
            policy.template load_keys<Copy>(smem.value_slot(value_slot), block.v, 2 * a.v_strides.seq, n);
            cp_async_commit();
            publish_previous(value_full(value_slot));
        }
        cp_async_wait<0>();
        fence_proxy_async_shared();
        mbarrier_arrive(newest);
        if (Visibility::kGathers) {  // the end of the walk, in the key slot a next tile would have taken
            const int key_slot = i % kFwdKeySlots;
            if (i >= kFwdKeySlots) mbarrier_wait(key_free(key_slot), (i / kFwdKeySlots - 1) & 1);
            if (copy_thread<Copy>() == 0) tile_in_slot[key_slot] = n_end;
            mbarrier_arrive(key_full(key_slot));
        }
        return;
    }

    setmaxnreg_inc<kConsumerRegs>();
    const BiasStage<Traits> bias{smem.bias, a.bias, at.batch, at.head};
    WgmmaRows<kElementType, kHeadDim, Visibility> rows(smem.q, warp);
    // The tiles in walk order: contiguous ones the computing warpgroups walk themselves, a tile ahead, so that a
    // tile's mask bytes load while the tile before computes; gathered ones (their walk is the producer's) as the key
    // slots say, once they have landed.
    auto landed_tile = [&](int index) {
        const int slot = index % kFwdKeySlots;
        mbarrier_wait(key_full(slot), (index / kFwdKeySlots) & 1);
        return tile_in_slot[slot];
    };
    u32 raw[TileVisibility<Traits, Visibility>::kRawRegs];
    int n = Visibility::kGathers ? landed_tile(0) : policy.next(n_begin);
    bool elementwise = n < n_end && policy.elementwise(n);
    if (elementwise) visibility.load(n, raw);
    if (n < n_end) mbarrier_wait(q_full, 0);
    int computed = 0;  // tiles computed; tile i's K in key slot i % 2, its V in value slot i % 3
    // The tile at n, the block's computed-th: S, with O += P V of the tile before in flight behind it (accumulating).
    // Not a generic lambda: NVRTC takes one for host code. Both calls pass a constant and are inlined, so each keeps
    // only its branch.
    auto compute_tile = [&](const bool accumulating) {
        const int key_slot = computed % kFwdKeySlots, last_value_slot = (computed + kFwdValueSlots - 1) % kFwdValueSlots;
        u32 visible[1];
        const bool every_visible = visibility.compute(n, elementwise, raw, visible);
        int n_next = n_end;
        bool next_elementwise = false;
        if (!Visibility::kGathers) {
            n_next = policy.next(n + 1);
            next_elementwise = n_next < n_end && policy.elementwise(n_next);
            if (next_elementwise) visibility.load(n_next, raw);
        }

        mbarrier_wait(key_full(key_slot), (computed / kFwdKeySlots) & 1);
        if (accumulating) mbarrier_wait(value_full(last_value_slot), ((computed - 1) / kFwdValueSlots) & 1);
        rows.compute_tile(accumulating, smem.key_slot(key_slot), smem.value_slot(last_value_slot), visible, every_visible, a.score,
                          bias.slot(key_slot), bias_type, at.pack, warp, lane, [&] { mbarrier_arrive(key_free(key_slot)); },
                          [&] { mbarrier_arrive(value_free(last_value_slot)); });
        ++computed;
        if (Visibility::kGathers) {
            n_next = landed_tile(computed);
            next_elementwise = n_next < n_end && policy.elementwise(n_next);
            if (next_elementwise) visibility.load(n_next, raw);
        }
        n = n_next;
        elementwise = next_elementwise;
    };
    if (n < n_end) {
        compute_tile(false);
        while (n < n_end) compute_tile(true);
        const int last_value_slot = (computed - 1) % kFwdValueSlots;
        mbarrier_wait(value_full(last_value_slot), ((computed - 1) / kFwdValueSlots) & 1);
        rows.accumulate_last(smem.value_slot(last_value_slot));
    }
    rows.write(p, at, computed, block.owned_tiles(), warp, lane);
}

template <int kElementType, int kHeadDim, typename Visibility>
__global__ void __launch_bounds__(FwdTraits<kHeadDim, kFwdWgmma>::kThreads + fwd_producer_threads(kFwdWgmma), 1)
    dmattn_fwd_wgmma_kernel(const FwdParams p) {
    fwd_wgmma_warp_specialized<kElementType, kHeadDim, Visibility>(p);
}

}  // namespace fdma

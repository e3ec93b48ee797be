// The forward on Hopper's warpgroup MMA (sm_90a): dmattn_fwd_wgmma_kernel, which compute capability 9.0 runs in
// place of dmattn_fwd_kernel (fwd_kernel.cuh) for the head dims has_wgmma_forward names. It computes what that
// kernel computes, from the same pieces (visibility policy, score modification, online softmax, epilogue,
// statistics); what differs is a schedule that keeps the tensor cores busy through the softmax:
//
// - A block is two warpgroups of 64 query rows; a warp still owns 16 rows in the m16n8 accumulator layout, as the
//   visibility, bias and softmax code expects. Q, K and V lie in shared memory in 128-byte swizzled rows.
// - S = Q K^T: m64n64k16 steps over the head dim, A (Q) and B (K) read from shared memory through descriptors.
//   O += P V: m64nDk16 steps over the tile's keys, A (P) from the score registers, B (V) read N-major.
// - While the scores of tile i go through visibility, bias and softmax, O += P V of tile i - 1 runs on the tensor
//   cores; the accumulators are rescaled to the new row maxima once it has finished.
// - Tiles i + 1 and i + 2 load (cp.async) while tile i computes: K and the bias in kFwdKeySlots slots, V in
//   kFwdValueSlots (tile i - 1's V is still read by the product in flight). One barrier per tile publishes the
//   next tile and frees the slots the next load reuses.
//
// Device-only, no host headers; sm_90a only (wgmma.cuh).
#pragma once

#include "fwd_kernel.cuh"
#include "wgmma.cuh"

namespace fdma {

template <int kElementType, int kHeadDim, typename Visibility>
__global__ void __launch_bounds__(FwdTraits<kHeadDim, kFwdWgmma>::kThreads)
    dmattn_fwd_wgmma_kernel(const FwdParams p) {
    using Traits = FwdTraits<kHeadDim, kFwdWgmma>;
    using Ops = ElementOps<kElementType>;
    const AttentionParams& a = p.attn;
    constexpr int kBlockM = Traits::kBlockM;
    constexpr int kBlockN = Traits::kBlockN;
    constexpr int kNTiles = Traits::kNTiles;
    constexpr int kDTiles = Traits::kDTiles;
    constexpr u32 kKeyTileBytes = kBlockN * kHeadDim * 2;
    static_assert(Traits::kWarps == 8 && Traits::kMTiles == 1, "two warpgroups of 64 rows, 16 per warp");
    static_assert(kBlockN == 64, "S is one m64n64 product per warpgroup");
    static_assert(kHeadDim == 64 || kHeadDim == 128, "O is one m64n64 or m64n128 product per warpgroup");
    static_assert(kFwdKeySlots == 2 && kFwdValueSlots == 3, "the schedule below");

    // Q, the K slots and the V slots (Swizzle128Rows tiles from a 1024-byte boundary), then the bias slots.
    extern __shared__ __align__(16) unsigned char smem[];
    const u32 smem_start = smem_addr(smem);
    const u32 sQ = (smem_start + 1023) & ~1023u;
    const u32 sK = sQ + kBlockM * kHeadDim * 2;
    const u32 sV = sK + kFwdKeySlots * kKeyTileBytes;
    unsigned char* const bias_smem = smem + (sV + kFwdValueSlots * kKeyTileBytes - smem_start);

    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const FwdBlock<Traits, Visibility> block(p, warp, lane);
    const FwdPlace& at = block.at;
    const int m0 = at.m0;
    const char *k_g = block.k, *v_g = block.v;
    const int bias_type = block.bias_type;
    const BiasStage<Traits> bias{bias_smem, a.bias, at.batch, at.head};
    const int n_begin = block.share.begin, n_end = block.share.end;

    load_tile_async<Traits, kBlockM>(sQ, block.q, 2 * a.q_strides.seq, m0, a.seqlen_q);

    const TileVisibility<Traits, Visibility>& visibility = block.visibility;
    const Visibility& policy = visibility.policy;
    // Key tile n's K and bias into key slot `slot`, its V into value slot `value_slot`.
    auto load_key_tile = [&](int n, int slot, int value_slot) {
        policy.template load_keys<Traits>(sK + slot * kKeyTileBytes, k_g, 2 * a.k_strides.seq, n);
        policy.template load_keys<Traits>(sV + value_slot * kKeyTileBytes, v_g, 2 * a.v_strides.seq, n);
        if (bias_type != 0) policy.stage_bias(bias.slot(slot), m0, n);
    };

    u32 raw[TileVisibility<Traits, Visibility>::kRawRegs];
    int n = policy.next(n_begin);
    bool elementwise = n < n_end && policy.elementwise(n);
    if (n < n_end) {
        load_key_tile(n, 0, 0);
        if (elementwise) visibility.load(n, raw);
    }
    cp_async_commit();  // Q and the first tile
    int n_next = n < n_end ? policy.next(n + 1) : n_end;
    if (n_next < n_end) load_key_tile(n_next, 1, 1);
    cp_async_commit();

    float acc_o[1][kDTiles][4];
    float row_max[1][2];  // log2 domain; -inf until a visible key is seen
    float row_sum[1][2];  // this thread's share; the quad is summed at the end
    start_softmax<Traits>(acc_o, row_max, row_sum);
    u32 p_prev[kBlockN / 16][4];  // P of the tile before, packed: the A operand of its O += P V
    u32 visible_pairs = 0;        // this thread's visible score registers, for the statistics
    int computed = 0;             // tiles computed; tile i's K in key slot i % 2, its V in value slot i % 3
    int value_slot = 0;           // this tile's; the tile before's V is in the slot before it (last_value_slot)
    auto last_value_slot = [&] { return (value_slot + kFwdValueSlots - 1) % kFwdValueSlots; };

    cp_async_wait<1>();
    fence_proxy_async_shared();
    __syncthreads();  // Q and the first tile landed

    // This warpgroup's 64 rows (a multiple of the 8-row atom). Its index read through a shuffle from lane 0: the
    // compiler then knows it is the same across the warp and builds the Q descriptors in uniform registers, where
    // the MMAs read them, instead of moving them there from per-thread registers before each MMA.
    const u32 q_rows = sQ + __shfl_sync(0xffffffffu, warp / 4, 0) * 64 * 128;
    // O += P V of the tile before, its V in value slot `slot`; committed as one group.
    auto issue_accumulate = [&](int slot) {
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk)
            wgmma_rs<kElementType, kHeadDim, 1>(acc_o[0], p_prev[kk], mn_major_descriptor<kBlockN>(sV + slot * kKeyTileBytes, kk), 1);
        wgmma_commit();
    };
    // Tile n, the block's computed-th: S, with O += P V of the tile before in flight behind it (accumulating),
    // then visibility, score modification and softmax; the tile's P ends packed in p_prev. Then the next tiles
    // move along the slots.
    // Not a generic lambda: NVRTC takes one for host code. Both calls pass a constant and are inlined, so each keeps
    // only its branch.
    auto compute_tile = [&](const bool accumulating) {
        const int key_slot = computed & 1;
        u32 visible[1];
        visibility.compute(n, elementwise, raw, visible);
        visible_pairs += __popc(visible[0]);
        const bool next_elementwise = n_next < n_end && policy.elementwise(n_next);
        if (next_elementwise) visibility.load(n_next, raw);

        float s[1][kNTiles][4];
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < kHeadDim / 16; ++kk)
            wgmma_ss_m64n64<kElementType>(s[0], k_major_descriptor<kBlockM>(q_rows, kk),
                                          k_major_descriptor<kBlockN>(sK + key_slot * kKeyTileBytes, kk), kk > 0);
        wgmma_commit();
        if (accumulating) {
            issue_accumulate(last_value_slot());
            wgmma_wait<1>();  // S done; O += P V may still run
        } else {
            wgmma_wait<0>();
        }
        fence_accumulators(s[0]);
        score_mod_tile<Traits>(s, visible, a.score, bias.slot(key_slot), bias_type, at.pack, warp, lane);
        float rescale[1][2];
        online_softmax<Traits>(s, row_max, row_sum, rescale);
        if (accumulating) {
            fence_accumulators(s[0]);  // the softmax done before the wait, not moved behind it by the compiler
            wgmma_wait<0>();
            fence_accumulators(acc_o[0]);
            fence_operands(p_prev);
        }
        rescale_output<Traits>(acc_o, rescale);
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk) pack_p<Ops>(p_prev[kk], s[0], kk);
        ++computed;

        const int n_after = n_next < n_end ? policy.next(n_next + 1) : n_end;
        cp_async_wait<0>();
        fence_proxy_async_shared();
        __syncthreads();  // the next tile landed; every warp is done with this tile's K and bias and the last tile's V
        // The tile after next: into this tile's key slot and the last tile's value slot.
        if (n_after < n_end) load_key_tile(n_after, key_slot, last_value_slot());
        cp_async_commit();
        n = n_next;
        n_next = n_after;
        elementwise = next_elementwise;
        value_slot = (value_slot + 1) % kFwdValueSlots;
    };

    if (n < n_end) {
        compute_tile(false);
        while (n < n_end) compute_tile(true);
        wgmma_fence();
        issue_accumulate(last_value_slot());
        wgmma_wait<0>();
        fence_accumulators(acc_o[0]);
        fence_operands(p_prev);
    }

    write_fwd_output<Traits, kElementType, kHeadDim>(p, at, acc_o, row_max, row_sum, warp, lane);
    count_fwd_tiles(p, visible_pairs, computed, block.owned_tiles(), lane);
}

}  // namespace fdma

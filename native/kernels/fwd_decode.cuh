// The decode kernel: forward calls of at most kDecodeQueries queries (fwd_kernel_of in plan.cuh). A 64-row tile over
// one query computes 64 times the rows it needs; here a block computes 16 rows, and its four warps share them, each
// taking 16 keys of every 64-key tile, so the tensor-core work per key is that of 16 rows, not 64. With one query,
// the rows are the query heads of a GQA group that read the same K and V (and mask, lifetimes and bias): they are
// read once for all of them (FwdParams::packed_heads; ThreadRows maps rows to queries and heads). Decode is bound by
// the K and V bytes it reads, so a tile's K, V and bias load one tile ahead, in a second slot, while the tile before
// computes. At the end the warps' softmax states merge into warp 0's, which writes the rows.
//
// The pieces are the forward's (fwd_kernel.cuh): block setup, visibility policies, score modification, online
// softmax, epilogue, statistics. Device-only, no host headers.
#pragma once

#include "fwd_kernel.cuh"

namespace fdma {

// Decode: the warps side by side along the keys hold softmax states of the same rows over different keys. Each
// scales its output and sum to the rows' largest maximum, then warp 0 adds the others' (through shared memory,
// in warp order: the same bits on every run). smem: the K and V tiles' space, free after the walk.
template <typename Traits>
__device__ __forceinline__ void merge_key_warps(float* smem, float (&acc_o)[Traits::kMTiles][Traits::kDTiles][4],
                                                float (&row_max)[Traits::kMTiles][2], float (&row_sum)[Traits::kMTiles][2],
                                                int warp, int lane) {
    static_assert(Traits::kRowWarps == 1 && Traits::kMTiles == 1, "every warp holds the block's one row tile");
    constexpr int kRegs = Traits::kDTiles * 4 + 2;  // a thread's output and sums
    float* const maxima = smem;                     // [kKeyWarps][kBlockM]
    if (lane % 4 == 0)  // a row's maximum is the same in its quad
#pragma unroll
        for (int half = 0; half < 2; ++half) maxima[warp * Traits::kBlockM + ThreadRows<Traits>::of(warp, lane, 0, half)] = row_max[0][half];
    __syncthreads();
    float rescale[1][2];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const int row = ThreadRows<Traits>::of(warp, lane, 0, half);
        float block_max = neg_inf();
#pragma unroll
        for (int w = 0; w < Traits::kKeyWarps; ++w) block_max = fmaxf(block_max, maxima[w * Traits::kBlockM + row]);
        const float base = block_max == neg_inf() ? 0.f : block_max;  // no warp saw a key: all weights 0
        rescale[0][half] = ex2_approx(row_max[0][half] - base);
        row_max[0][half] = block_max;
        row_sum[0][half] *= rescale[0][half];
    }
    rescale_output<Traits>(acc_o, rescale);
    __syncthreads();  // maxima read
    float* const parts = smem;  // [kKeyWarps - 1][kRegs][32]
    auto reg = [&](int i) -> float& { return i < Traits::kDTiles * 4 ? acc_o[0][i / 4][i % 4] : row_sum[0][i - Traits::kDTiles * 4]; };
    if (warp > 0)
#pragma unroll
        for (int i = 0; i < kRegs; ++i) parts[((warp - 1) * kRegs + i) * 32 + lane] = reg(i);
    __syncthreads();
    if (warp == 0)
        for (int w = 1; w < Traits::kKeyWarps; ++w)
#pragma unroll
            for (int i = 0; i < kRegs; ++i) reg(i) += parts[((w - 1) * kRegs + i) * 32 + lane];
}

template <int kElementType, int kHeadDim, typename Visibility>
__global__ void __launch_bounds__(FwdTraits<kHeadDim, kFwdDecode>::kThreads) dmattn_fwd_decode_kernel(const FwdParams p) {
    using Mma = MmaSyncForward<kElementType, kHeadDim, kFwdDecode>;
    using Traits = typename Mma::Traits;
    static_assert(Mma::kSlots == 2, "the schedule below: one tile computes while the next loads");
    const AttentionParams& a = p.attn;
    constexpr int kMTiles = Traits::kMTiles;
    constexpr int kNTiles = Traits::kNTiles;
    constexpr int kDTiles = Traits::kDTiles;

    extern __shared__ __align__(16) unsigned char smem[];
    const Mma mma(smem);
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const FwdBlock<Traits, Visibility> block(p, warp, lane);
    const FwdPlace& at = block.at;
    const int m0 = at.m0, Lq = a.seqlen_q;
    const int bias_type = block.bias_type;
    const BiasStage<Traits> bias{mma.bias_smem, a.bias, at.batch, at.head};
    const int n_end = block.share.end;
    const TileVisibility<Traits, Visibility>& visibility = block.visibility;
    const Visibility& policy = visibility.policy;

    // Q's rows: the tile's queries; with packed heads (one query), the block's heads.
    if (at.pack > 1) load_tile_async<Traits, Traits::kBlockM>(mma.sQ, block.q, 2 * a.q_strides.head, 0, at.pack);
    else load_tile_async<Traits, Traits::kBlockM>(mma.sQ, block.q, 2 * a.q_strides.seq, m0, Lq);
    cp_async_commit();

    // Tile n's K, V and bias into slot `slot`: one commit group.
    auto load_tile = [&](int n, int slot) {
        policy.template load_keys<Traits>(mma.key_slot(slot), block.k, 2 * a.k_strides.seq, n);
        policy.template load_keys<Traits>(mma.value_slot(slot), block.v, 2 * a.v_strides.seq, n);
        if (bias_type != 0) policy.stage_bias(bias.slot(slot), m0, n);
        cp_async_commit();
    };
    u32 raw[TileVisibility<Traits, Visibility>::kRawRegs];
    int n = policy.next(block.share.begin);
    bool elementwise = n < n_end && policy.elementwise(n);
    if (n < n_end) {
        load_tile(n, 0);
        if (elementwise) visibility.load(n, raw);
    }
    int n_next = n < n_end ? policy.next(n + 1) : n_end;
    if (n_next < n_end) load_tile(n_next, 1);
    u32 visible_pairs = 0;  // this thread's visible score registers, for the statistics
    int computed = 0;

    float acc_o[kMTiles][kDTiles][4];
    float row_max[kMTiles][2];  // log2 domain; -inf until a visible key is seen
    float row_sum[kMTiles][2];  // this thread's share; the quad is summed at the end
    start_softmax<Traits>(acc_o, row_max, row_sum);

    for (int slot = 0; n < n_end; slot ^= 1) {
        if (n_next < n_end) cp_async_wait<1>();  // tile n (and Q) landed; tile n_next may still be loading
        else cp_async_wait<0>();
        __syncthreads();
        // The dense mask's walk only reads its bitmaps: the tile after next is known before this one computes. Key
        // lifetimes gather it block-wide after the tile (their walk's barrier then frees this tile's slot; a gathered
        // tile's keys stay until the third tile after it is gathered).
        int n_after = n_end;
        if (!Visibility::kGathers && n_next < n_end) n_after = policy.next(n_next + 1);
        u32 visible[kMTiles];
        const bool every_visible = visibility.compute(n, elementwise, raw, visible);
#pragma unroll
        for (int mi = 0; mi < kMTiles; ++mi) visible_pairs += __popc(visible[mi]);
        elementwise = n_next < n_end && policy.elementwise(n_next);
        if (elementwise) visibility.load(n_next, raw);

        float s[kMTiles][kNTiles][4];
        mma.scores(s, mma.key_slot(slot));
        const float score_scale = score_mod_tile<Traits>(s, visible, every_visible, a.score, bias.slot(slot), bias_type, at.pack, warp, lane);
        float rescale[kMTiles][2];
        online_softmax<Traits>(s, row_max, row_sum, rescale, score_scale);
        rescale_output<Traits>(acc_o, rescale);
        mma.accumulate(acc_o, s, mma.value_slot(slot));
        ++computed;

        if (Visibility::kGathers && n_next < n_end) n_after = policy.next(n_next + 1);
        if (n_after < n_end) {
            if (!Visibility::kGathers) __syncthreads();  // every warp is done with this slot
            load_tile(n_after, slot);
        }
        n = n_next;
        n_next = n_after;
    }

    static_assert((Traits::kKeyWarps - 1) * 32 * (kDTiles * 4 + 2) * 4 <= 2 * Mma::kKeyTileBytes,
                  "the key warps' states fit in a slot's K and V");
    cp_async_wait<0>();
    __syncthreads();  // every warp is done with the slots
    merge_key_warps<Traits>(reinterpret_cast<float*>(smem + (mma.sK - mma.sQ)), acc_o, row_max, row_sum, warp, lane);
    if (warp == 0) write_fwd_output<Traits, kElementType, kHeadDim>(p, at, acc_o, row_max, row_sum, warp, lane);
    // A block's tile covers each of its packed heads' tiles.
    count_fwd_tiles(p, visible_pairs, computed * at.pack, block.owned_tiles() * at.pack, lane);
}

}  // namespace fdma

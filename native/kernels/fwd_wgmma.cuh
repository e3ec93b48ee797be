// The forward's matrix products on Hopper's warpgroup MMA (sm_90a): the engine dmattn_fwd_kernel (fwd_kernel.cuh)
// runs with on compute capability 9.0, everything else in the kernel being the mma.sync engine's.
//
// A block is two warpgroups of 64 query rows (a warp still owns 16 rows in the m16n8 accumulator layout, as the
// visibility, bias and softmax code expects). Q, K and V lie in shared memory in 128-byte swizzled rows
// (Swizzle128Rows); Q moves to registers once, so that both products take A from registers and only B from
// shared memory: S = Q K^T as m64n64k16 steps over the head dim (K read K-major), O += P V as m64nDk16 steps
// over the tile's keys (V read N-major, transposed by the descriptor), P packed from the score registers.
// Each product waits for its MMAs (native/PERF.md has the overlapped schedule that was tried).
// Device-only, no host headers; sm_90a only (wgmma.cuh).
#pragma once

#include "fwd_kernel.cuh"
#include "wgmma.cuh"

namespace fdma {

template <int kElementType, int kHeadDim>
struct WgmmaForward {
    using Traits = FwdTraits<kHeadDim, kFwdWgmma>;
    using Ops = ElementOps<kElementType>;
    static constexpr int kBlockM = Traits::kBlockM;
    static constexpr int kBlockN = Traits::kBlockN;
    static_assert(Traits::kWarps % 4 == 0 && Traits::kMTiles == 1, "whole warpgroups of 64 rows, 16 per warp");
    static_assert(kBlockN == 64, "S is one m64n64 product per warpgroup");
    static_assert(kHeadDim == 64 || kHeadDim == 128, "O is one m64n64 or m64n128 product per warpgroup");

    u32 sQ, sK, sV;            // Swizzle128Rows tiles of kBlockM, kBlockN and kBlockN rows
    unsigned char* bias_smem;  // BiasStage
    // This warp's 16 rows of Q, as wgmma's A fragments of the head dim's 16-wide steps, held across the walk. At
    // D = 128 the SASS keeps them apart from P's registers (HGMMA A operands R124-R152 against R88-R112, nvcc 13.0);
    // at D = 64 it did not (plan.cuh, has_wgmma_forward).
    u32 q[kHeadDim / 16][4];

    __device__ __forceinline__ explicit WgmmaForward(unsigned char* smem) {
        const u32 start = smem_addr(smem);
        sQ = (start + 1023) & ~1023u;
        sK = sQ + kBlockM * kHeadDim * 2;
        sV = sK + kBlockN * kHeadDim * 2;
        bias_smem = smem + (sV + kBlockN * kHeadDim * 2 - start);
    }

    // Q has landed: this warp's rows move to registers for the whole walk.
    __device__ __forceinline__ void load_q() {
        const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
        const int row = warp * 16 + lane % 16;
#pragma unroll
        for (int kk = 0; kk < kHeadDim / 16; ++kk)
            ldmatrix_x4(q[kk], sQ + Swizzle128Rows::offset<kBlockM>(row, 2 * kk + lane / 16));
    }

    // cp.async writes through the generic proxy; wgmma reads through the async proxy.
    __device__ __forceinline__ static void tiles_landed() { fence_proxy_async_shared(); }

    // S = Q K^T for this warpgroup's 64 rows (this thread's share in s).
    __device__ __forceinline__ void scores(float (&s)[1][kBlockN / 8][4]) const {
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < kHeadDim / 16; ++kk)
            wgmma_rs<kElementType, kBlockN, 0>(s[0], q[kk], k_major_descriptor<kBlockN>(sK, kk), kk > 0);
        wgmma_commit();
        wgmma_wait<0>();
        fence_accumulators(s[0]);
    }

    // O += P V.
    __device__ __forceinline__ void accumulate(float (&acc_o)[1][kHeadDim / 8][4], const float (&s)[1][kBlockN / 8][4]) const {
        u32 p[kBlockN / 16][4];
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk) pack_p<Ops>(p[kk], s[0], kk);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk)
            wgmma_rs<kElementType, kHeadDim, 1>(acc_o[0], p[kk], mn_major_descriptor<kBlockN>(sV, kk), 1);
        wgmma_commit();
        wgmma_wait<0>();
        fence_operands(p);
        fence_accumulators(acc_o[0]);
    }
};

}  // namespace fdma

// The Hopper (sm_90a) matrix instructions the wgmma kernels use: warpgroup MMA with B (and A, or A from
// registers) from shared memory through matrix descriptors, its fences, and the 128-byte swizzled tile layout the
// descriptors describe. Device-only, no host headers; compiled only for sm_90a (nvcc's
// -gencode=arch=compute_90a,code=sm_90a, or NVRTC 12+ with --gpu-architecture=sm_90a).
#pragma once

#include "common.cuh"
#include "params.cuh"
#include "ptx.cuh"

#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "wgmma.cuh needs the sm_90a target (wgmma is not in plain sm_90 or in other architectures)"
#endif

namespace fdma {

// The shared-memory matrix descriptor of a 128-byte swizzled operand at smem address `addr`: `leading` and
// `stride` bytes are the strides between 8x(128-byte) atoms, see the two uses below. Its start field holds
// address / 16 in bits 0-13: shared addresses stay under 2^18 bytes, so a byte offset from the operand moves
// the descriptor by offset / 16 without carrying into the next field, one add per MMA step.
__device__ __forceinline__ u64 swizzle128_descriptor(u32 addr, u32 leading, u32 stride, u32 offset) {
    const u32 low = (((addr & 0x3ffff) >> 4) | (leading >> 4) << 16) + (offset >> 4);
    return static_cast<u64>(low) | static_cast<u64>((stride >> 4) | 1u << 30) << 32;
}

// A = Q or B = K^T of S = Q K^T: rows of a tile of kRows rows (Q's from a warpgroup's first row, a multiple of 8),
// K-major (the head dim contiguous). Step kk covers head-dim elements [16 kk, 16 kk + 16): 32 bytes into a
// 128-byte row, the next 64-element block (kRows rows further) after four steps. 8-row atoms lie 1024 bytes
// apart; the leading offset is unused in K-major swizzled layouts.
template <int kRows>
__device__ __forceinline__ u64 k_major_descriptor(u32 tile, int kk) {
    return swizzle128_descriptor(tile, 16, 1024, (kk / 4) * kRows * 128 + (kk % 4) * 32);
}

// B = V of O = P V: a V tile of kRows keys read N-major (transposed; the head dim, wgmma's N, contiguous).
// Step kk covers keys [16 kk, 16 kk + 16), two 8-key atoms 1024 bytes apart (the stride offset); the 64-element
// blocks of the head dim lie kRows * 128 bytes apart (the leading offset).
template <int kRows>
__device__ __forceinline__ u64 mn_major_descriptor(u32 tile, int kk) {
    return swizzle128_descriptor(tile, kRows * 128, 1024, kk * 2048);
}

// Orders this thread's earlier register and shared-memory accesses before the next wgmma reads them.
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int kPendingGroups>
__device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPendingGroups) : "memory");
}

// Makes this thread's generic-proxy shared-memory writes (stores, cp.async) visible to the async proxy
// (wgmma's operand reads); a barrier after it extends that to the other threads.
__device__ __forceinline__ void fence_proxy_async_shared() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// Shared-memory barriers (mbarrier) of a warp-specialized pipeline, at a shared address: `count` arrivals complete a
// phase; a waiter names the phase's parity (the phases of a barrier alternate 0, 1, 0, ...). An arrival releases this
// thread's earlier writes, and a wait that returns acquires the arrivals' (CTA scope).
__device__ __forceinline__ void mbarrier_init(u32 bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// Makes the initializations before it visible to the other threads' barrier operations (with a block barrier).
__device__ __forceinline__ void mbarrier_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
__device__ __forceinline__ void mbarrier_arrive(u32 bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbarrier_wait(u32 bar, u32 parity) {
    u32 done = 0;
    while (!done)  // try_wait itself waits a while (a hardware time limit) before it answers false
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done) : "r"(bar), "r"(parity) : "memory");
}

// Moves this warpgroup's register allocation to kRegs per thread (a multiple of 8 in [24, 256]): a producer warpgroup
// gives registers back (dec), the consumers take them (inc), within the block's allocation at launch.
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs)); }
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs)); }

// Called after a wgmma wait, these keep the compiler's view in step with the tensor cores': the asm statements
// that issued the MMAs do not say when the MMAs read their register operands or write their results.
// Accumulators: no access of them moves above the wait.
template <int kN>
__device__ __forceinline__ void fence_accumulators(float (&d)[kN][4]) {
#pragma unroll
    for (int i = 0; i < kN; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) asm volatile("" : "+f"(d[i][j])::"memory");
}
// Register A operands: they stay live, so that their registers are not reused, until the wait.
template <int kN>
__device__ __forceinline__ void fence_operands(u32 (&a)[kN][4]) {
#pragma unroll
    for (int i = 0; i < kN; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) asm volatile("" : "+r"(a[i][j])::"memory");
}

// The asm output operands of accumulators d[F, F + 8) (four registers each): an m64n64 D is one group, an
// m64n128 D two.
#define FDMA_WGMMA_D8(F) \
    "+f"(d[F][0]), "+f"(d[F][1]), "+f"(d[F][2]), "+f"(d[F][3]), "+f"(d[F + 1][0]), "+f"(d[F + 1][1]), "+f"(d[F + 1][2]), \
    "+f"(d[F + 1][3]), "+f"(d[F + 2][0]), "+f"(d[F + 2][1]), "+f"(d[F + 2][2]), "+f"(d[F + 2][3]), "+f"(d[F + 3][0]), \
    "+f"(d[F + 3][1]), "+f"(d[F + 3][2]), "+f"(d[F + 3][3]), "+f"(d[F + 4][0]), "+f"(d[F + 4][1]), "+f"(d[F + 4][2]), \
    "+f"(d[F + 4][3]), "+f"(d[F + 5][0]), "+f"(d[F + 5][1]), "+f"(d[F + 5][2]), "+f"(d[F + 5][3]), "+f"(d[F + 6][0]), \
    "+f"(d[F + 6][1]), "+f"(d[F + 6][2]), "+f"(d[F + 6][3]), "+f"(d[F + 7][0]), "+f"(d[F + 7][1]), "+f"(d[F + 7][2]), \
    "+f"(d[F + 7][3])

// D (64 x N, fp32, the m16n8 accumulator layout per warp and n8 tile) += A (64 x 16, registers in the m16n8k16
// A-fragment layout per warp) * B (16 x N, shared memory); accumulate 0: D = A * B. kTransB 1: B is N-major.
// One asm statement per (N, element type): the operand lists are long and regular, so a macro per N writes them.
#define FDMA_WGMMA_RS_M64N64(TYPE) \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n" \
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32." TYPE "." TYPE " " \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15," \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}" ", {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n" \
    : FDMA_WGMMA_D8(0) \
    : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(accumulate), "n"(kTransB))
#define FDMA_WGMMA_RS_M64N128(TYPE) \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n" \
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." TYPE "." TYPE " " \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15," \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31," \
    "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47," \
    "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}" ", {%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n" \
    : FDMA_WGMMA_D8(0), FDMA_WGMMA_D8(8) \
    : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(accumulate), "n"(kTransB))

// D (64 x N, fp32) += A (64 x 16) * B (16 x N), both from shared memory through descriptors; kTransA / kTransB 1:
// A M-major / B N-major, else K-major.
#define FDMA_WGMMA_SS_M64N64(TYPE) \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n" \
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32." TYPE "." TYPE " " \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15," \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}" ", %32, %33, p, 1, 1, %35, %36;\n}\n" \
    : FDMA_WGMMA_D8(0) \
    : "l"(desc_a), "l"(desc_b), "r"(accumulate), "n"(kTransA), "n"(kTransB))
#define FDMA_WGMMA_SS_M64N128(TYPE) \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n" \
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." TYPE "." TYPE " " \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15," \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31," \
    "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47," \
    "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}" ", %64, %65, p, 1, 1, %67, %68;\n}\n" \
    : FDMA_WGMMA_D8(0), FDMA_WGMMA_D8(8) \
    : "l"(desc_a), "l"(desc_b), "r"(accumulate), "n"(kTransA), "n"(kTransB))

template <int kElementType, int kN, int kTransA = 0, int kTransB = 0>
__device__ __forceinline__ void wgmma_ss(float (&d)[kN / 8][4], u64 desc_a, u64 desc_b, int accumulate) {
    static_assert(kN == 64 || kN == 128, "wgmma shapes m64n64k16 and m64n128k16");
    if constexpr (kN == 64 && kElementType == kFloat16) FDMA_WGMMA_SS_M64N64("f16");
    else if constexpr (kN == 64) FDMA_WGMMA_SS_M64N64("bf16");
    else if constexpr (kElementType == kFloat16) FDMA_WGMMA_SS_M64N128("f16");
    else FDMA_WGMMA_SS_M64N128("bf16");
}

template <int kElementType, int kN, int kTransB>
__device__ __forceinline__ void wgmma_rs(float (&d)[kN / 8][4], const u32 (&a)[4], u64 desc_b, int accumulate) {
    static_assert(kN == 64 || kN == 128, "wgmma shapes m64n64k16 and m64n128k16");
    if constexpr (kN == 64 && kElementType == kFloat16) FDMA_WGMMA_RS_M64N64("f16");
    else if constexpr (kN == 64) FDMA_WGMMA_RS_M64N64("bf16");
    else if constexpr (kElementType == kFloat16) FDMA_WGMMA_RS_M64N128("f16");
    else FDMA_WGMMA_RS_M64N128("bf16");
}

#undef FDMA_WGMMA_RS_M64N64
#undef FDMA_WGMMA_RS_M64N128
#undef FDMA_WGMMA_SS_M64N64
#undef FDMA_WGMMA_SS_M64N128
#undef FDMA_WGMMA_D8

}  // namespace fdma

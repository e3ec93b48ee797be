// Pieces shared by the forward and backward kernels: MMA per element type, cp.async tile loads
// into padded shared memory, bias element loads. Device-only, no host headers.
#pragma once

#include "fwd_params.cuh"
#include "ptx.cuh"

namespace fdma {

// The kernels keep scores and LSEs in log2 units (ex2 is one instruction); the ABI's LSE is natural.
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <int kElementType>
struct ElementOps;

template <>
struct ElementOps<kFloat16> {
    static __device__ __forceinline__ u32 pack(float lo, float hi) { return cvt_rn_f16x2(lo, hi); }
    static __device__ __forceinline__ void mma(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
        mma_m16n8k16_f16(d, a, b0, b1);
    }
};

template <>
struct ElementOps<kBFloat16> {
    static __device__ __forceinline__ u32 pack(float lo, float hi) { return cvt_rn_bf16x2(lo, hi); }
    static __device__ __forceinline__ void mma(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
        mma_m16n8k16_bf16(d, a, b0, b1);
    }
};

// Copies rows [row0, row0 + kRows) of a [seqlen, head dim] slice into padded shared memory
// (Traits: kChunks 16-byte chunks per row, kRowElems elements per padded row, kThreads);
// rows at or past seqlen are zero-filled so that no garbage (or NaN) reaches the MMAs.
template <typename Traits, int kRows>
__device__ __forceinline__ void load_tile_async(u32 smem_tile, const char* gmem, i64 row_stride_bytes,
                                                int row0, int seqlen) {
    for (int c = threadIdx.x; c < kRows * Traits::kChunks; c += Traits::kThreads) {
        const int r = c / Traits::kChunks;
        const int chunk = c % Traits::kChunks;
        const bool in_range = row0 + r < seqlen;
        const char* src = gmem + (in_range ? (row0 + r) * row_stride_bytes + chunk * 16 : 0);
        cp_async_16(smem_tile + (r * Traits::kRowElems + chunk * 8) * 2, src, in_range ? 16 : 0);
    }
}

// Start of this (batch, head)'s [seq, head dim] slice of a 16-bit tensor.
__device__ __forceinline__ const char* head_slice(const void* base, const Strides& strides, int batch, int head) {
    return static_cast<const char*>(base) + 2 * (batch * strides.batch + head * strides.head);
}

__device__ __forceinline__ int element_size(int type) { return type == kFloat32 ? 4 : 2; }

// Start of the rows a (batch, query head) reads of a mask (element size 1) or bias; nullptr when absent.
__device__ __forceinline__ const char* broadcast_slice(const BroadcastOperand& op, int bytes, int batch, int head) {
    return op.data == nullptr
        ? nullptr
        : static_cast<const char*>(op.data) + bytes * (batch * op.stride_batch + (head / op.head_group) * op.stride_head);
}

// Which (mask batch, mask head) a (batch, query head) reads: the index of its tile bitmaps; 0
// without a mask.
__device__ __forceinline__ i64 mask_slot(const BroadcastOperand& mask, int batch, int head) {
    if (mask.data == nullptr) return 0;
    return static_cast<i64>(mask.batches == 1 ? 0 : batch) * mask.heads + (mask.heads == 1 ? 0 : head / mask.head_group);
}

__device__ __forceinline__ float load_bias(const void* row, int col, int type) {
    if (type == kFloat32) return __ldg(static_cast<const float*>(row) + col);
    const u16 bits = __ldg(static_cast<const u16*>(row) + col);
    return type == kFloat16 ? cvt_f32_f16(bits) : cvt_f32_bf16(bits);
}

}  // namespace fdma

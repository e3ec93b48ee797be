// Pieces shared by the forward and backward kernels: MMA per element type, cp.async tile loads
// into padded shared memory, bias element loads and the shared-memory stage of a key tile's bias.
// Device-only, no host headers.
#pragma once

#include "params.cuh"
#include "plan.cuh"
#include "ptx.cuh"

namespace fdma {

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

// The A fragment of P for keys [16 kk, 16 kk + 16) of one 16-row MMA tile, from its score registers: the
// accumulator layout of two neighbouring 8-key tiles is the m16n8k16 A-fragment layout (for wgmma's register A too).
template <typename Ops, int kNTiles>
__device__ __forceinline__ void pack_p(u32 (&a)[4], const float (&s)[kNTiles][4], int kk) {
    a[0] = Ops::pack(s[2 * kk][0], s[2 * kk][1]);
    a[1] = Ops::pack(s[2 * kk][2], s[2 * kk][3]);
    a[2] = Ops::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    a[3] = Ops::pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
}

// A [kRows, head dim] tile of 16-bit elements in rows padded by 8 elements (padded_row_elems), the layout
// the mma.sync kernels read with ldmatrix: byte offset of 16-byte chunk `chunk` of row r.
template <int kHeadDim>
struct PaddedRows {
    template <int kRows>
    static __device__ __forceinline__ u32 offset(u32 r, u32 chunk) { return (r * padded_row_elems(kHeadDim) + chunk * 8) * 2; }
};

// A [kRows, head dim] tile of 16-bit elements in 128-byte swizzled rows, the layout the wgmma kernels read
// (wgmma.cuh has its descriptors): the head dim in blocks of 64 elements (128 bytes), each block kRows rows of
// 128 bytes, and 16-byte chunk c of row r at chunk position c ^ (r % 8). A tile starts on a 1024-byte boundary
// (the swizzle pattern's period, which the hardware applies to address bits).
struct Swizzle128Rows {
    template <int kRows>
    static __device__ __forceinline__ u32 offset(u32 r, u32 chunk) {
        return ((chunk / 8) * kRows + r) * 128 + ((chunk % 8) ^ (r % 8)) * 16;
    }
};

// The threads that copy tiles into shared memory are Traits::kThreads: a block's (threadIdx.x < kThreads), or a
// producer warpgroup's after the block's first threads (CopiedBy), this one's index among them.
template <typename Traits>
__device__ __forceinline__ u32 copy_thread() {
    static_assert((Traits::kThreads & (Traits::kThreads - 1)) == 0, "a power of two: the index is a mask");
    return threadIdx.x % Traits::kThreads;
}

// Traits whose tiles kCopyThreads threads copy (a warp-specialized kernel's producer warpgroup, the last threads of
// its block), the layout and sizes unchanged.
template <typename Traits, int kCopyThreads>
struct CopiedBy : Traits {
    static constexpr int kThreads = kCopyThreads;
};

// Copies rows [row0, row0 + kRows) of a [seqlen, head dim] slice into a shared-memory tile (Traits: kChunks
// 16-byte chunks per row, kThreads, and the tile's Layout); rows at or past seqlen are zero-filled so that no
// garbage (or NaN) reaches the MMAs. Unsigned indices: their divisions are shifts, with no sign to correct.
template <typename Traits, int kRows, typename RowOf>
__device__ __forceinline__ void load_mapped_rows_async(u32 smem_tile, const char* gmem, i64 row_stride_bytes, RowOf row_of,
                                                       int seqlen) {
    for (u32 c = copy_thread<Traits>(); c < kRows * Traits::kChunks; c += Traits::kThreads) {
        const u32 r = c / Traits::kChunks;
        const u32 chunk = c % Traits::kChunks;
        const int row = row_of(r);
        const bool in_range = row < seqlen;
        const char* src = gmem + (in_range ? row * row_stride_bytes + chunk * 16 : 0);
        cp_async_16(smem_tile + Traits::Layout::template offset<kRows>(r, chunk), src, in_range ? 16 : 0);
    }
}

// The same for contiguous rows. Where the block's threads cover whole rows (kThreads a multiple of kChunks) and the
// tile whole passes of them, a thread keeps its chunk column and moves kThreads / kChunks rows (a multiple of 8, so
// the same swizzle) per pass: its address is worked out once and then stepped, not recomputed with a 64-bit
// multiply per chunk, in a loop the compiler unrolls.
template <typename Traits, int kRows>
__device__ __forceinline__ void load_tile_async(u32 smem_tile, const char* gmem, i64 row_stride_bytes,
                                                int row0, int seqlen) {
    constexpr u32 kChunks = Traits::kChunks, kThreads = Traits::kThreads, kRowsPerPass = kThreads / kChunks;
    if constexpr (kThreads % kChunks != 0 || kRows % kRowsPerPass != 0 || kRowsPerPass % 8 != 0) {
        load_mapped_rows_async<Traits, kRows>(smem_tile, gmem, row_stride_bytes, [row0](int r) { return row0 + r; }, seqlen);
    } else {
        const u32 r = copy_thread<Traits>() / kChunks, chunk = copy_thread<Traits>() % kChunks;
        const int row = row0 + static_cast<int>(r);
        const char* src = gmem + row * row_stride_bytes + chunk * 16;
        const i64 step = kRowsPerPass * row_stride_bytes;
#pragma unroll
        for (u32 pass = 0; pass < kRows / kRowsPerPass; ++pass, src += step) {
            const bool in_range = row + static_cast<int>(pass * kRowsPerPass) < seqlen;
            cp_async_16(smem_tile + Traits::Layout::template offset<kRows>(r + pass * kRowsPerPass, chunk), in_range ? src : gmem,
                        in_range ? 16 : 0);
        }
    }
}

// Copies rows rows[0, kRows) (gathered keys; seqlen or more: a zero row) the same way.
template <typename Traits, int kRows>
__device__ __forceinline__ void load_rows_async(u32 smem_tile, const char* gmem, i64 row_stride_bytes, const int* rows,
                                                int seqlen) {
    load_mapped_rows_async<Traits, kRows>(smem_tile, gmem, row_stride_bytes, [rows](int r) { return rows[r]; }, seqlen);
}

// Start of this (batch, head)'s [seq, head dim] slice of a 16-bit tensor.
__device__ __forceinline__ const char* head_slice(const void* base, const Strides& strides, int batch, int head) {
    return static_cast<const char*>(base) + 2 * (batch * strides.batch + head * strides.head);
}

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

// The bias element `offset` elements from `row` (a key times the bias's key stride).
__device__ __forceinline__ float load_bias(const void* row, i64 offset, int type) {
    if (type == kFloat32) return __ldg(static_cast<const float*>(row) + offset);
    const u16 bits = __ldg(static_cast<const u16*>(row) + offset);
    return type == kFloat16 ? cvt_f32_f16(bits) : cvt_f32_bf16(bits);
}

// The staged bias of two neighbouring keys (kBiasType: the DType of the bias).
template <int kBiasType>
__device__ __forceinline__ void staged_bias_pair(const unsigned char* at, float& b0, float& b1) {
    if constexpr (kBiasType == kFloat32) {
        const float2 pair = *reinterpret_cast<const float2*>(at);
        b0 = pair.x, b1 = pair.y;
    } else {
        const u32 pair = *reinterpret_cast<const u32*>(at);
        b0 = kBiasType == kFloat16 ? cvt_f32_f16(static_cast<u16>(pair)) : cvt_f32_bf16(static_cast<u16>(pair));
        b1 = kBiasType == kFloat16 ? cvt_f32_f16(static_cast<u16>(pair >> 16)) : cvt_f32_bf16(static_cast<u16>(pair >> 16));
    }
}

// One key tile's bias, staged in shared memory with the tile's K (bias_stage_bytes in plan.cuh gives
// its size; Traits: kBlockM query rows, kBlockN keys, kThreads): each bias element crosses from global
// memory once per block, not once per score register, and the score pass reads neighbouring keys
// in one shared load, without bounds tests (elements outside both lengths are staged as zeros;
// they only meet hidden scores).
template <typename Traits>
struct BiasStage {
    const BroadcastOperand& op;  // the bias: strides and type read where they lie when a tile is staged
    unsigned char* smem;         // [rows][(kBlockN + 8) * element_size]
    const char* gmem;            // this (batch, head)'s bias slice
    bool per_row;                // a row per query; else one row serves every query
    bool vectorized;             // contiguous keys and every staged row 16-byte aligned: cp.async; else element copies

    // The stage of (batch, query head)'s bias at smem_.
    __device__ __forceinline__ BiasStage(unsigned char* smem_, const BroadcastOperand& bias, int batch, int head)
        : op(bias), smem(smem_), gmem(broadcast_slice(bias, fdma::element_size(bias.type), batch, head)), per_row(bias.stride_row != 0),
          vectorized(bias.stride_key == 1 &&
                     ((reinterpret_cast<u64>(gmem) | static_cast<u64>(bias.stride_row * fdma::element_size(bias.type))) & 15) == 0) {}

    __device__ __forceinline__ int element_size() const { return fdma::element_size(op.type); }
    __device__ __forceinline__ i64 row_stride() const { return op.stride_row * element_size(); }  // bytes; 0: one row for all
    __device__ __forceinline__ int row_bytes() const { return (Traits::kBlockN + 8) * element_size(); }
    __device__ __forceinline__ int rows() const { return per_row ? Traits::kBlockM : 1; }

    // The stage `index` stages further on, for kernels that keep several (bias_stage_bytes apart).
    __device__ __forceinline__ BiasStage slot(int index) const {
        BiasStage stage = *this;
        stage.smem += index * rows() * row_bytes();
        return stage;
    }

    // The staged bias of keys key and key + 1 (even) of the block's query row `row`; kBiasType, the
    // bias's DType, makes the element size a constant of the score pass.
    template <int kBiasType>
    __device__ __forceinline__ void pair(int row, int key, float& b0, float& b1) const {
        constexpr int kBytes = kBiasType == kFloat32 ? 4 : 2;
        staged_bias_pair<kBiasType>(smem + (per_row ? row * (Traits::kBlockN + 8) * kBytes : 0) + key * kBytes, b0, b1);
    }

    // Stages the tile at (m0, n0): 16-byte cp.async copies (part of the caller's next commit group)
    // where the rows are contiguous and aligned, element copies elsewhere; all visible after the
    // caller's next __syncthreads.
    __device__ __forceinline__ void load(int m0, int n0, int Lq, int Lk) const {
        const int size = element_size();
        const i64 row_stride = this->row_stride();
        if (vectorized) {
            // A row's chunks: kBlockN / 8 (16-bit) or kBlockN / 4 (fp32), a power of two, so c splits by shift and mask.
            static_assert((Traits::kBlockN & (Traits::kBlockN - 1)) == 0, "kBlockN is a power of two");
            constexpr u32 kChunkShift16 = log2_of(Traits::kBlockN / 8);  // 16-bit elements
            const u32 chunk_shift = kChunkShift16 + (size == 4 ? 1 : 0);
            const u32 chunks = 1u << chunk_shift;
            const int chunk_elements = 16 / size;
            for (u32 c = copy_thread<Traits>(); c < rows() * chunks; c += Traits::kThreads) {
                const int r = static_cast<int>(c >> chunk_shift);
                const int col = n0 + static_cast<int>(c & (chunks - 1)) * chunk_elements;
                const int valid = m0 + r < Lq ? max(0, min(chunk_elements, Lk - col)) : 0;
                unsigned char* dst = smem + r * row_bytes() + (c & (chunks - 1)) * 16;
                const char* src = gmem + (m0 + r) * row_stride + col * size;
                if (valid == chunk_elements) cp_async_16(smem_addr(dst), src, 16);
                else if (valid == 0) cp_async_16(smem_addr(dst), gmem, 0);
                else  // the chunk Lk cuts: a partial cp.async would still be a 16-byte read past the end
                    for (int e = 0; e < chunk_elements; ++e) store_element(dst + e * size, e < valid ? load_element(src + e * size) : 0u);
            }
            return;
        }
        load_elements(m0, Lq, Lk, [n0](int c) { return n0 + c; });
    }

    // Stages the bias of gathered keys keys[0, kBlockN) (Lk or more: zeros) for the rows at m0, by element copies.
    __device__ __forceinline__ void load_keys(int m0, const int* keys, int Lq, int Lk) const {
        load_elements(m0, Lq, Lk, [keys](int c) { return keys[c]; });
    }

    // Element copies of the tile's bias; key_of(c): the key of column c.
    template <typename KeyOf>
    __device__ __forceinline__ void load_elements(int m0, int Lq, int Lk, KeyOf key_of) const {
        const int size = element_size();
        const i64 row_stride = this->row_stride();
        constexpr int kBatch = 8;  // loads in flight per thread before their stores
        const i64 key_stride = op.stride_key * size;
        const int total = rows() * Traits::kBlockN;
        for (int first = static_cast<int>(copy_thread<Traits>()); first < total; first += kBatch * Traits::kThreads) {
            u32 value[kBatch];
#pragma unroll
            for (int u = 0; u < kBatch; ++u) {
                const int i = first + u * Traits::kThreads;
                const int r = i / Traits::kBlockN;
                const int col = i < total ? key_of(i % Traits::kBlockN) : Lk;
                value[u] = i < total && m0 + r < Lq && col < Lk ? load_element(gmem + (m0 + r) * row_stride + col * key_stride) : 0u;
            }
#pragma unroll
            for (int u = 0; u < kBatch; ++u) {
                const int i = first + u * Traits::kThreads;
                if (i >= total) break;
                store_element(smem + (i / Traits::kBlockN) * row_bytes() + (i % Traits::kBlockN) * size, value[u]);
            }
        }
    }

    __device__ __forceinline__ u32 load_element(const char* src) const {
        return op.type == kFloat32 ? __ldg(reinterpret_cast<const u32*>(src)) : __ldg(reinterpret_cast<const u16*>(src));
    }
    __device__ __forceinline__ void store_element(unsigned char* dst, u32 value) const {
        if (op.type == kFloat32) *reinterpret_cast<u32*>(dst) = value;
        else *reinterpret_cast<u16*>(dst) = static_cast<u16>(value);
    }
};

}  // namespace fdma

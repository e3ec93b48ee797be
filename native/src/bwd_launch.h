// Host entry to the backward kernels: one instantiation per (dtype, head dim), compiled in
// parallel from files CMake generates (bwd_instance.cu.in), dispatched here at run time.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../kernels/bwd_params.cuh"

namespace fdma {

// Byte offsets of the backward's scratch sections (each 256-byte aligned) and their sizes.
struct BwdScratch {
    uint64_t delta = 0;           // fp32 [B, Hq, Lq]
    uint64_t d_q_accum = 0;       // fp32 [B, Lq, Hq, D]; only when not deterministic
    uint64_t d_bias_accum = 0;    // fp32 [bias batches, heads, rows, Lk]; only with d_bias
    uint64_t bitmaps = 0;         // with a mask: occupied, full, occupied by key tile, full by key tile
    uint64_t d_q_accum_bytes = 0;
    uint64_t d_bias_accum_bytes = 0;
    uint64_t bitmap_words = 0;    // of each row-major bitmap
    uint64_t bitmap_t_words = 0;  // of each key-major bitmap
    uint64_t total = 0;
};

template <int kElementType, int kHeadDim>
cudaError_t launch_bwd(const BwdParams& params, const BwdScratch& scratch, cudaStream_t stream);

cudaError_t dispatch_bwd(const BwdParams& params, const BwdScratch& scratch, int dtype, int head_dim,
                         cudaStream_t stream);

}  // namespace fdma

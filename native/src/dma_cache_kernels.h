// Launches of the DMA decode cache's kernels (native/kernels/dma_cache.cuh), compiled once in
// dma_cache_kernels.cu; dma_cache.cpp checks the arguments and resolves them into these parameters.
#pragma once

#include <cuda_runtime.h>

#include "../kernels/dma_cache_params.cuh"

namespace fdma {

// One block per (batch, kv head): `caches` = B * Hkv.
cudaError_t launch_dma_cache_append(const DmaAppendParams& params, int caches, cudaStream_t stream);

cudaError_t launch_dma_cache_reset(const DmaCacheView& cache, long long caches, cudaStream_t stream);

}  // namespace fdma

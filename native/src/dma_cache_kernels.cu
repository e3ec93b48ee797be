#include "dma_cache_kernels.h"

#include "../kernels/dma_cache.cuh"

namespace fdma {

cudaError_t launch_dma_cache_append(const DmaAppendParams& params, int caches, cudaStream_t stream) {
    dma_cache_append_kernel<<<caches, kDmaThreads, 0, stream>>>(params);
    return cudaGetLastError();
}

cudaError_t launch_dma_cache_reset(const DmaCacheView& cache, long long caches, cudaStream_t stream) {
    constexpr int kThreads = 256;
    const long long work = caches * cache.slots * (cache.head_dim / 8);  // 16-byte vectors of a K or V row
    // Enough blocks to fill any GPU; the kernel's grid-stride loop covers the rest.
    const long long blocks = (work + kThreads - 1) / kThreads < 4096 ? (work + kThreads - 1) / kThreads : 4096;
    dma_cache_reset_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(cache, caches);
    return cudaGetLastError();
}

}  // namespace fdma

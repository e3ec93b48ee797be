// The top-k lifetime builder's kernel, compiled once.
#include "../kernels/topk_lifetimes.cuh"
#include "topk.h"

namespace fdma {

cudaError_t launch_topk_lifetimes(const TopkArgs& args, cudaStream_t stream) {
    const int blocks = topk_blocks(static_cast<long long>(args.batch) * args.heads);
    topk_lifetimes_kernel<<<blocks, kTopkThreads, 0, stream>>>(args);
    return cudaGetLastError();
}

}  // namespace fdma

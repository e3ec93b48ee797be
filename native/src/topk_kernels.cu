// The top-k lifetime builder's launches (topk_lifetimes.cuh), compiled once.
#include <utility>

#include "../kernels/topk_lifetimes.cuh"
#include "topk.h"

namespace fdma {

cudaError_t launch_topk_lifetimes(const TopkArgs& a, cudaStream_t stream) {
    const long long segments = static_cast<long long>(a.batch) * a.heads;
    const dim3 rows((a.seqlen_k + kTopkRowThreads - 1) / kTopkRowThreads, static_cast<unsigned>(segments));
    if (a.selection == kSelectPositive) {
        topk_positive_kernel<<<rows, kTopkRowThreads, 0, stream>>>(a);
    } else {
        const TopkPlan plan = plan_topk(segments, a.seqlen_k, true);
        topk_keys_kernel<<<rows, kTopkRowThreads, 0, stream>>>(a, plan);
        u64 keys = plan.keys, keys_alt = plan.keys_alt, order = plan.order, order_alt = plan.order_alt;
        const dim3 tiles(plan.sort_tiles, static_cast<unsigned>(segments));
        const int width = a.score_type == kFloat32 ? 32 : 16;
        for (int shift = 0; shift < width; shift += kRadixBits) {
            topk_histogram_kernel<<<tiles, kTopkRowThreads, 0, stream>>>(a, plan, keys, shift);
            topk_offsets_kernel<<<static_cast<unsigned>(segments), kScanThreads, 0, stream>>>(a, plan);
            topk_scatter_kernel<<<tiles, 32, 0, stream>>>(a, plan, keys, order, keys_alt, order_alt, shift);
            std::swap(keys, keys_alt);
            std::swap(order, order_alt);
        }
        if (a.is_causal) {
            cudaError_t err = cudaMemsetAsync(static_cast<char*>(a.scratch) + plan.bitmaps, 0, plan.bitmap_bytes, stream);
            if (err != cudaSuccess) return err;
            topk_chunk_bits_kernel<<<rows, kTopkRowThreads, 0, stream>>>(a, plan, keys, order);
            const dim3 words((plan.bitmap_words + kTopkRowThreads - 1) / kTopkRowThreads, static_cast<unsigned>(segments));
            topk_chunk_prefix_kernel<<<words, kTopkRowThreads, 0, stream>>>(a, plan);
            // The attribute covers the largest bitmap kept in shared memory, whatever this call's size.
            err = cudaFuncSetAttribute(topk_chunk_walk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kWalkSmemWords * 4);
            if (err != cudaSuccess) return err;
            const int smem = plan.bitmap_words <= kWalkSmemWords ? plan.bitmap_words * 4 : 0;
            topk_chunk_walk_kernel<<<dim3(plan.chunks, static_cast<unsigned>(segments)), 32, smem, stream>>>(a, plan, keys, order);
        } else {
            topk_global_kernel<<<rows, kTopkRowThreads, 0, stream>>>(a, plan, keys, order);
        }
    }
    if (a.survivors != nullptr) topk_survivors_kernel<<<static_cast<unsigned>(segments), kTopkThreads, 0, stream>>>(a);
    return cudaGetLastError();
}

}  // namespace fdma

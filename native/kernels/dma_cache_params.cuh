// What the DMA decode cache's kernels (dma_cache.cuh) read: the C ABI's cache and append parameters, resolved by
// native/src/dma_cache.cpp. Plain types only, so host code includes it without the device code.
#pragma once

#include "params.cuh"

namespace fdma {

// The cache's buffers (flash_dmattn.h, fdma_dma_cache); per-slot arrays are [B, Hkv, slots].
struct DmaCacheView {
    void* k;                 // [B, slots, Hkv, D]
    void* v;                 // [B, slots, Hkv, D]
    Strides k_strides, v_strides;
    float* scores;           // -inf in a free slot
    int* positions;          // token position, -1 in a free slot
    int* lifetimes;          // pairs {first, end} over the step's queries; {0, 0} in a free slot
    int* state;              // [B, Hkv, 4]: alive keys, the last step's tokens, tokens appended, unused
    int heads_kv, head_dim, window, slots;
};

struct DmaAppendParams {
    DmaCacheView cache;
    const void* k;           // [B, S, Hkv, D]
    const void* v;           // [B, S, Hkv, D]
    Strides k_strides, v_strides;
    BroadcastOperand scores; // [B, Hkv, 1, S], no broadcast (strides of size-1 dimensions zeroed)
    int* slot_of_token;      // [B, Hkv, S] or nullptr
    int tokens;              // S
};

}  // namespace fdma

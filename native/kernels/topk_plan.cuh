// The top-k lifetime builder's kernel arguments, block shape and scratch layout (topk_lifetimes.cuh), computed
// in this one place for the kernel and its host launcher. Plain constexpr C++ with no host headers and no
// device code.
#pragma once

#include "common.cuh"

namespace fdma {

constexpr int kTopkThreads = 1024;
// At most this many blocks, each over (batch, head) pairs in turn: bounds the scratch of large batches.
constexpr int kTopkMaxBlocks = 512;

// The ABI's fdma_selection.
enum Selection { kSelectTopk = 0, kSelectPositive = 1 };

struct TopkArgs {
    const void* scores;       // [B, H, Lk] of score_type at element strides below
    long long stride_batch, stride_head, stride_key;
    int score_type;           // DType
    int batch, heads, seqlen_q, seqlen_k;
    int window;               // w; sizes survivors (>= 1 when they are wanted)
    int is_causal;
    int selection;            // Selection
    int* lifetimes;           // [B, H, Lk] int2 {first, end}
    int* survivors;           // [B, H, w] or nullptr
    u32* scratch;             // topk_scratch_words(Lk) per block; only kSelectTopk reads it
};

// Bits of a key index in [0, n): the wavelet matrix's levels.
FDMA_HOST_DEVICE constexpr int index_bits(int n) {
    int bits = 1;
    while (bits < 31 && (1 << bits) < n) ++bits;
    return bits;
}

// Rank words of one level: bit i of the level sits in word i / 32, and position n (the end) needs a word too.
FDMA_HOST_DEVICE constexpr long long rank_words(int n) { return n / 32 + 1; }

// One block's scratch: four arrays of Lk (sort keys and indices, double-buffered), then per wavelet level its
// bit words and the count of ones before each word.
FDMA_HOST_DEVICE constexpr long long topk_scratch_words(int seqlen_k) {
    return 4LL * seqlen_k + 2LL * index_bits(seqlen_k) * rank_words(seqlen_k);
}

FDMA_HOST_DEVICE constexpr int topk_blocks(long long batch_heads) {
    return static_cast<int>(batch_heads < kTopkMaxBlocks ? batch_heads : kTopkMaxBlocks);
}

}  // namespace fdma

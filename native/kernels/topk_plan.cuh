// The top-k lifetime builder's kernel arguments, block shape and scratch layout (topk_lifetimes.cuh), computed
// in this one place for the kernel and its host launcher. Plain constexpr C++ with no host headers and no
// device code.
#pragma once

#include "common.cuh"

namespace fdma {

// Threads of the builder's row kernels (keys, chunk bits, global selection, positive selection).
constexpr int kTopkRowThreads = 256;
// The survivors pass: one block per (batch, head), a block-wide scan.
constexpr int kTopkThreads = 1024;

// The rank sort: least significant digit first, stable, kRadixBits a pass; a (batch, head)'s keys in tiles of
// kSortTileKeys, each histogrammed by a block and scattered in order by one warp.
constexpr int kRadixBits = 8;
constexpr int kRadixBins = 1 << kRadixBits;
constexpr int kSortTileKeys = 2048;
constexpr int kScanThreads = 1024;  // the per-(batch, head) scan of the (digit, tile) counts

// The causal end search: ranks in kRankChunks chunks, each walked in rank order by one warp from the bitmap of
// the keys ranked before it; the bitmap sits in shared memory up to kWalkSmemWords words.
constexpr int kRankChunks = 256;
constexpr int kWalkSmemWords = 16384;

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
    void* scratch;            // TopkPlan::workspace_bytes; only kSelectTopk reads it
};

// The builder's launches and scratch for (batch x heads) segments of seqlen_k keys. Every section is per
// segment, [segments][...], 256-byte aligned.
struct TopkPlan {
    long long segments;
    int sort_tiles;           // tiles of kSortTileKeys per segment
    int chunk_ranks;          // ranks per chunk of the end search
    int chunks;               // chunks per segment
    int bitmap_words;         // 32-bit words of one chunk's bitmap: a bit per key
    u64 keys, keys_alt;       // u32 sort keys, [segments][Lk], double-buffered
    u64 order, order_alt;     // u32 key indices alongside
    u64 counts;               // u32 [segments][kRadixBins][sort_tiles]: digit counts, then scatter offsets
    u64 bitmaps;              // u32 [segments][chunks][bitmap_words]: the keys ranked before each chunk
    u64 bitmap_bytes;
    u64 workspace_bytes;
};

FDMA_HOST_DEVICE constexpr u64 topk_align256(u64 bytes) { return (bytes + 255) / 256 * 256; }

// Scratch for the top-k selection only (the positive one needs none); the same for every score type and
// either causality, so that the size query reads only the shape.
FDMA_HOST_DEVICE constexpr TopkPlan plan_topk(long long segments, int seqlen_k, bool topk) {
    TopkPlan p{};
    p.segments = segments;
    p.sort_tiles = (seqlen_k + kSortTileKeys - 1) / kSortTileKeys;
    const int chunks = seqlen_k < kRankChunks ? seqlen_k : kRankChunks;
    p.chunk_ranks = (seqlen_k + chunks - 1) / chunks;
    p.chunks = (seqlen_k + p.chunk_ranks - 1) / p.chunk_ranks;
    p.bitmap_words = (seqlen_k + 31) / 32;
    if (!topk) return p;
    const u64 column = static_cast<u64>(segments) * seqlen_k * 4;
    u64 end = 0;
    p.keys = end;
    end += topk_align256(column);
    p.keys_alt = end;
    end += topk_align256(column);
    p.order = end;
    end += topk_align256(column);
    p.order_alt = end;
    end += topk_align256(column);
    p.counts = end;
    end += topk_align256(static_cast<u64>(segments) * kRadixBins * p.sort_tiles * 4);
    p.bitmaps = end;
    p.bitmap_bytes = static_cast<u64>(segments) * p.chunks * p.bitmap_words * 4;
    end += topk_align256(p.bitmap_bytes);
    p.workspace_bytes = end;
    return p;
}

}  // namespace fdma

/*
 * FlashDmAttn C ABI: Dynamic Mask Attention on CUDA.
 *
 * Every export returns an fdma_status and never prints, aborts or exits. After a failure,
 * fdma_last_error_message() returns a detailed message for the calling thread; it stays valid
 * until that thread's next call into the library.
 *
 * Tensors are given by a device pointer and element strides (int64). The head dimension is
 * always contiguous, so (B, L, H, D) and (B, H, L, D) layouts both work without copies.
 * Semantics (broadcasting, causal alignment, empty rows) are documented in README.md.
 */
#ifndef FLASH_DMATTN_H
#define FLASH_DMATTN_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(FDMA_BUILDING_LIBRARY)
#    define FDMA_API __declspec(dllexport)
#  else
#    define FDMA_API __declspec(dllimport)
#  endif
#else
#  define FDMA_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version: the one place it is written (CMake, MSBuild and fdma_version_string() read it here). */
#define FDMA_VERSION_MAJOR 0
#define FDMA_VERSION_MINOR 3
#define FDMA_VERSION_PATCH 0

/* Bumped on every incompatible change of a struct, an enum or a signature below. Version 2: the problem both
 * directions share is one embedded struct (fdma_problem); the backward has its own outputs, statistics, scratch
 * and stream; masks, biases and the bias gradient take a key stride. Version 3: the problem takes key lifetimes
 * (a mask form of two int32 per key); the forward's statistics count visible pairs; the top-k lifetime builder
 * and the DMA decode cache. */
#define FDMA_ABI_VERSION 3

typedef enum fdma_status {
    FDMA_STATUS_SUCCESS = 0,

    /* 1xx: the call itself is wrong; nothing was launched and nothing was written. */
    FDMA_STATUS_INVALID_ARGUMENT = 100, /* null pointer, bad shape, stride, value or aliasing */
    FDMA_STATUS_UNSUPPORTED = 101,      /* valid in general, not supported (head dim, dtype) */
    FDMA_STATUS_MISALIGNED = 102,       /* a pointer or stride breaks an alignment rule */
    FDMA_STATUS_STRUCT_SIZE = 103,      /* params.struct_size is not one this library knows */

    /* 2xx: the CUDA runtime or device refused. */
    FDMA_STATUS_CUDA_ERROR = 200,       /* a CUDA call failed; the message holds its text */
    FDMA_STATUS_NO_KERNEL_IMAGE = 201,  /* the library holds no code for this GPU */

    /* 3xx: a bug in the library. */
    FDMA_STATUS_INTERNAL = 300
} fdma_status;

typedef enum fdma_dtype {
    FDMA_DTYPE_FLOAT16 = 1,
    FDMA_DTYPE_BFLOAT16 = 2,
    FDMA_DTYPE_FLOAT32 = 3
} fdma_dtype;

/*
 * Optional mask or bias (or the bias gradient): logical shape (batch, heads, rows, Lk) with
 *   batch in {1, B}, heads in {1, Hkv, Hq}, rows in {1, Lq};
 * a dimension of size 1 is broadcast (its stride is ignored). With heads == Hkv, query head h reads
 * mask/bias head h / (Hq / Hkv). Element (b, h, r, j) is at data + b * stride_batch + h * stride_head +
 * r * stride_row + j * stride_key (elements), so a transposed view, such as a (B, Lk, Hkv) score seen as
 * (B, Hkv, 1, Lk) with stride_key = Hkv, needs no copy.
 */
typedef struct fdma_broadcast_tensor {
    const void* data;     /* device pointer, aligned to its element; NULL = absent */
    int32_t dtype;        /* bias: fdma_dtype; mask: ignored (8-bit, nonzero = visible) */
    int32_t batch;
    int32_t heads;
    int32_t rows;
    int64_t stride_batch; /* elements */
    int64_t stride_head;
    int64_t stride_row;
    int64_t stride_key;   /* >= 1; 1 = contiguous keys (what fdma_*_params_init sets) */
} fdma_broadcast_tensor;

/* A (batch, seq, heads, head_dim) tensor: pointer and element strides; head_dim contiguous. */
typedef struct fdma_tensor {
    void* data;           /* device pointer, 16-byte aligned; inputs are only read */
    int64_t stride_batch;
    int64_t stride_seq;
    int64_t stride_head;  /* all three strides: multiples of 8 elements (16 bytes) */
} fdma_tensor;

/* The attention problem, the same in both directions: sizes, inputs, mask, bias and score options. A backward
 * call takes its forward call's problem unchanged. */
typedef struct fdma_problem {
    int32_t dtype;          /* of q, k, v, out and their gradients: FDMA_DTYPE_FLOAT16 or FDMA_DTYPE_BFLOAT16 */

    int32_t batch;          /* B >= 1 */
    int32_t seqlen_q;       /* Lq >= 1 */
    int32_t seqlen_k;       /* Lk >= 1 */
    int32_t heads_q;        /* Hq >= 1, a multiple of heads_kv */
    int32_t heads_kv;       /* Hkv >= 1 */
    int32_t head_dim;       /* D in {32, 64, 96, 128, 192, 256} */

    fdma_tensor q;          /* (B, Lq, Hq, D), read */
    fdma_tensor k;          /* (B, Lk, Hkv, D), read */
    fdma_tensor v;          /* (B, Lk, Hkv, D), read */

    fdma_broadcast_tensor mask; /* optional, 8-bit, nonzero = visible */

    /* Optional key lifetimes, a mask form of O(Lk) memory: logical shape (batch, heads, 1, Lk) with the mask's
     * broadcast rules (rows must be 1; dtype ignored), each element a pair of int32 {first, end}, 8-byte aligned,
     * strides counted in pairs. Key j is visible to query i iff first_j <= i < end_j (and the causal bound, when
     * is_causal is set). Every pair has this meaning: first >= end is a key no query sees, and the interval is
     * clipped to [0, Lq). Not combined with mask (one of the two, or neither). fdma_topk_lifetimes builds the
     * lifetimes of DMA's top-k mask; sliding windows, prefix-LM and per-key expiry are also lifetimes (README). */
    fdma_broadcast_tensor lifetimes;
    fdma_broadcast_tensor bias; /* optional, fp16, bf16 or fp32, added to the scaled score */

    float softmax_scale;    /* finite and > 0; the usual value is 1/sqrt(head_dim) */
    float softcap;          /* 0 = off; else finite and > 0: score = c * tanh(score / c) */
    int32_t is_causal;      /* 0 or 1: key j visible to query i only if j <= i + Lk - Lq */
} fdma_problem;

typedef struct fdma_fwd_params {
    uint32_t struct_size;   /* sizeof(fdma_fwd_params): lets the struct grow compatibly */

    fdma_problem problem;

    fdma_tensor out;        /* (B, Lq, Hq, D), written; must not overlap any other tensor */
    float* lse;             /* optional (B, Hq, Lq) contiguous fp32, written: natural log, -inf on empty rows */

    /* Optional device pointer to three uint64 counters, overwritten with, over all batches and query heads:
     * [0] the (query tile, key tile) pairs computed and [1] skipped by this call (tile shape:
     * fdma_fwd_tile_shape(); computed + skipped = the tile count; with lifetimes, a computed tile is one of
     * gathered keys), and [2] the visible (query, key) pairs. Work amplification: [0] * block_m * block_n / [2]. */
    uint64_t* tile_stats;

    /* Optional device scratch of at least fdma_fwd_workspace_size() bytes, 16-byte aligned, not
     * overlapping any tensor. NULL: the library takes it from CUDA's stream-ordered allocator
     * (cudaMallocAsync) for the call. A call with a mask needs scratch for its tile bitmaps, and a
     * call split over keys (fewer than 256 blocks of query tiles x heads x batch; a one-query call's
     * packed heads count as one) for its partial outputs; fdma_fwd_workspace_size() is 0 for the others. */
    void* workspace;
    uint64_t workspace_bytes;

    void* stream;           /* cudaStream_t; NULL = the legacy default stream */

    uint64_t reserved[4];   /* must be zero */
} fdma_fwd_params;

/*
 * Backward pass: gradients of a loss L with respect to q, k, v and the bias, given dL/dout, the forward
 * call's problem and the forward's outputs.
 */
typedef struct fdma_bwd_params {
    uint32_t struct_size;   /* sizeof(fdma_bwd_params) */
    int32_t deterministic;  /* 0 or 1: 1 = identical bits on every run (no order-dependent atomics) */

    fdma_problem problem;   /* the forward call's, unchanged */

    fdma_tensor out;        /* (B, Lq, Hq, D), read: the forward's output O */
    const float* lse;       /* (B, Hq, Lq) contiguous fp32, read, required: the forward's LSE */
    fdma_tensor d_out;      /* (B, Lq, Hq, D), read: dL/dO */

    fdma_tensor d_q;        /* (B, Lq, Hq, D), written */
    fdma_tensor d_k;        /* (B, Lk, Hkv, D), written: summed over the query heads of each group */
    fdma_tensor d_v;        /* (B, Lk, Hkv, D), written: summed over the query heads of each group */

    /* Optional, only with a bias: the bias's own logical shape (batch, heads, rows as in
     * problem.bias), dtype the bias's or FDMA_DTYPE_FLOAT32; summed over every dimension the bias
     * is broadcast along. Written in full (zeros where every pair is masked). */
    fdma_broadcast_tensor d_bias;

    /* Optional: two uint64 counters, overwritten with the backward's tiles computed and skipped
     * (tile shape: fdma_bwd_tile_shape()). */
    uint64_t* tile_stats;

    /* Optional device scratch of at least fdma_bwd_workspace_size() bytes, 16-byte aligned, not
     * overlapping any tensor; NULL: taken from CUDA's stream-ordered allocator for the call. Every
     * backward call needs scratch. */
    void* workspace;
    uint64_t workspace_bytes;

    void* stream;           /* cudaStream_t; NULL = the legacy default stream */

    uint64_t reserved[4];   /* must be zero */
} fdma_bwd_params;

/*
 * DMA's top-k mask as key lifetimes (README, "Key lifetimes"). Per (batch, head): scores s_j, a window w and Lq
 * queries, query i at position p_i = i + Lk - Lq. Order: higher score first, equal scores lower index first;
 * -inf and NaN scores are never selected.
 *   FDMA_SELECT_TOPK, is_causal = 1: query i selects the w highest-ranked keys among j <= p_i (all of them when
 *     fewer are eligible): first_j = max(0, j - (Lk - Lq)), end_j = the first query at which w eligible keys
 *     outrank j (Lq if none), end_j = first_j when j is never selected. Exactly the dense per-query top-k mask.
 *   FDMA_SELECT_TOPK, is_causal = 0: one selection of the w highest-ranked keys of all Lk for every query:
 *     {0, Lq} for the selected keys, {0, 0} for the others (attend with is_causal as the model does).
 *   FDMA_SELECT_POSITIVE: the keys with s_j > 0 (window ignored): {first_j, Lq} as above with is_causal = 1,
 *     {0, Lq} with is_causal = 0; {first_j, first_j} for the others.
 * No Lq x Lk memory; asynchronous on stream.
 */
typedef enum fdma_selection {
    FDMA_SELECT_TOPK = 0,
    FDMA_SELECT_POSITIVE = 1
} fdma_selection;

typedef struct fdma_topk_params {
    uint32_t struct_size;   /* sizeof(fdma_topk_params) */
    int32_t selection;      /* fdma_selection */
    int32_t batch;          /* B >= 1 */
    int32_t heads;          /* H >= 1 (DMA: the key/value heads); B * H <= 65535 */
    int32_t seqlen_q;       /* Lq >= 1 */
    int32_t seqlen_k;       /* Lk >= 1 */
    int32_t window;         /* w >= 1 for FDMA_SELECT_TOPK */
    int32_t is_causal;      /* 0 or 1 */

    /* (B, H, 1, Lk) scores, fp16, bf16 or fp32 (the DMA bias itself; rows must be 1, batch and heads as given:
     * no broadcast); key stride >= 1, so a (B, Lk, H) tensor needs no copy. */
    fdma_broadcast_tensor scores;

    /* (B, H, Lk) int32 pairs {first, end}, written, contiguous, 8-byte aligned (the lifetimes operand of
     * fdma_problem with stride_key 1, stride_head Lk, stride_batch H * Lk). */
    int32_t* lifetimes;

    /* Optional (B, H, w) int32, 4-byte aligned, written: the keys alive after the last query (end_j = Lq and
     * first_j < Lq), in increasing index order, then -1: a DMA decode cache's content after this prefill. With
     * FDMA_SELECT_POSITIVE more than w keys can be alive: the first w of them (window >= 1 sizes the array then).
     * NULL = not wanted. */
    int32_t* survivors;

    /* Optional scratch of fdma_topk_workspace_size() bytes, 16-byte aligned, not overlapping any tensor (0 for
     * FDMA_SELECT_POSITIVE); NULL: stream-ordered allocation (cudaMallocAsync) for the call. */
    void* workspace;
    uint64_t workspace_bytes;
    void* stream;           /* cudaStream_t; NULL = the legacy default stream */
    uint64_t reserved[4];   /* must be zero */
} fdma_topk_params;

/* Sets struct_size and scores.stride_key to 1, and zeroes everything else. */
FDMA_API void fdma_topk_params_init(fdma_topk_params* params);

/* Bytes of scratch fdma_topk_lifetimes needs for these parameters. */
FDMA_API fdma_status fdma_topk_workspace_size(const fdma_topk_params* params, uint64_t* bytes);

/* Builds the lifetimes (and survivors). Checks every argument first; on any failure nothing is launched. */
FDMA_API fdma_status fdma_topk_lifetimes(const fdma_topk_params* params);

/*
 * DMA decode cache (README, "Decode cache"): per (batch, kv head) `slots` = window + max_step_tokens slots of K,
 * V, score (fp32, the attention bias) and token position, and each slot's lifetime over the current step's
 * queries. Exact: attending over the slots equals attending over the whole context with the per-query top-w
 * mask, since a key evicted from the top w never returns. The caller allocates the device buffers (sizes in
 * the field comments); fdma_dma_cache_reset empties a cache.
 *
 * A step appends S tokens at positions P .. P + S - 1 (P: the tokens appended before) with their K, V and
 * scores, and then its S queries (query u at position P + u) attend over the slots with fdma_fwd on the problem
 * fdma_dma_cache_problem fills. Token u takes a free slot while fewer than w keys are alive; else it replaces
 * the lowest-ranked alive key if it outranks it (ties: the lower position wins, so an equal score does not
 * outrank); else it is dropped: no query ever sees it. A key replaced by token u stays in its slot, visible to
 * queries < u, until the next append frees it. A token takes the lowest-numbered free slot.
 */
typedef struct fdma_dma_cache {
    uint32_t struct_size;   /* sizeof(fdma_dma_cache) */
    int32_t dtype;          /* of k and v: FDMA_DTYPE_FLOAT16 or FDMA_DTYPE_BFLOAT16 */
    int32_t batch;          /* B >= 1 */
    int32_t heads_kv;       /* Hkv >= 1 */
    int32_t head_dim;       /* D, as fdma_problem */
    int32_t window;         /* w >= 1 */
    int32_t max_step_tokens;/* S_max >= 1: the most tokens one append takes; slots = window + max_step_tokens */

    fdma_tensor k;          /* (B, slots, Hkv, D), the cache's keys */
    fdma_tensor v;          /* (B, slots, Hkv, D), the cache's values */
    float* scores;          /* (B, Hkv, slots) fp32 contiguous: each slot's score (-inf in a free slot) */
    int32_t* positions;     /* (B, Hkv, slots) int32 contiguous: each slot's token position, -1 when free (so at most
                             * 2^31 - 1 tokens between resets) */
    int32_t* lifetimes;     /* (B, Hkv, slots) int32 pairs contiguous: each slot's {first, end} over the step's queries */
    int32_t* state;         /* (B, Hkv, 4) int32 contiguous: the cache's own counters; only the library reads them */
} fdma_dma_cache;

typedef struct fdma_dma_append_params {
    uint32_t struct_size;   /* sizeof(fdma_dma_append_params) */
    int32_t tokens;         /* S, 1 <= S <= max_step_tokens */
    fdma_tensor k;          /* (B, S, Hkv, D), read */
    fdma_tensor v;          /* (B, S, Hkv, D), read */
    fdma_broadcast_tensor scores; /* (B, Hkv, 1, S) fp16, bf16 or fp32, read; no broadcast */
    int32_t* slots;         /* optional (B, Hkv, S) int32, written: the slot token u took, or -1 when dropped */
    void* stream;           /* cudaStream_t; NULL = the legacy default stream */
    uint64_t reserved[4];   /* must be zero */
} fdma_dma_append_params;

/* Sets struct_size; zeroes everything else. */
FDMA_API void fdma_dma_cache_init(fdma_dma_cache* cache);

/* Empties the cache (every slot free, with K and V zeroed: the forward reads free slots with zero weight, and NaN
 * garbage there would poison its sums; no token appended) on stream; required before a cache's first append, since
 * freshly allocated buffers are not an empty cache. */
FDMA_API fdma_status fdma_dma_cache_reset(const fdma_dma_cache* cache, void* stream);

/* Sets struct_size and scores.stride_key to 1 (contiguous tokens); zeroes everything else. */
FDMA_API void fdma_dma_append_params_init(fdma_dma_append_params* params);

/* Appends one step's tokens; frees first the slots the previous step's tokens replaced. Asynchronous on stream,
 * no host synchronisation. */
FDMA_API fdma_status fdma_dma_cache_append(const fdma_dma_cache* cache, const fdma_dma_append_params* params);

/* Fills the key-side half of an fdma_problem for the step just appended: dtype, batch, heads_kv, head_dim,
 * seqlen_k = slots, k, v, lifetimes (the slots' lifetimes), bias = the slots' scores as a (B, Hkv, 1, slots) fp32
 * bias, is_causal = 0 (the lifetimes hold causality), no mask. The caller sets seqlen_q = S, heads_q, q, the
 * scale and softcap. */
FDMA_API fdma_status fdma_dma_cache_problem(const fdma_dma_cache* cache, fdma_problem* problem);

/* Returns FDMA_ABI_VERSION as compiled into the library. */
FDMA_API int32_t fdma_abi_version(void);

/* Returns the library's version string, e.g. "0.2.0". Static storage. */
FDMA_API const char* fdma_version_string(void);

/* Fixed description of a status code. Static storage. */
FDMA_API const char* fdma_status_string(int32_t status);

/* Detailed message of the calling thread's last failure ("" if none). */
FDMA_API const char* fdma_last_error_message(void);

/* Writes up to `capacity` compute capabilities (major*10+minor) the library holds machine code
 * for into `archs`; `*count` receives the total number. */
FDMA_API fdma_status fdma_compiled_archs(int32_t* archs, int32_t capacity, int32_t* count);

/* Tile shape (query rows, key columns) the forward kernel uses for this head dim and dtype on the current device
 * (128x64 at D = 128 on compute capability 9.0, where the Hopper forward runs: README, "Hopper forward"). Calls of
 * at most 16 queries run the decode kernel's 16-row tiles; they have one query tile either way (README, "Decode"). */
FDMA_API fdma_status fdma_fwd_tile_shape(int32_t head_dim, int32_t dtype, int32_t* block_m,
                                         int32_t* block_n);

/* Bytes of scratch fdma_fwd needs for these parameters (shapes and mask fields are read); the same
 * on every GPU: it fits the plans of every main kernel (README, "Scratch"). */
FDMA_API fdma_status fdma_fwd_workspace_size(const fdma_fwd_params* params, uint64_t* bytes);

/* Sets struct_size and every stride_key to 1, and zeroes everything else. */
FDMA_API void fdma_fwd_params_init(fdma_fwd_params* params);

/* Sets struct_size and every stride_key to 1, and zeroes everything else. */
FDMA_API void fdma_bwd_params_init(fdma_bwd_params* params);

/* Bytes of scratch fdma_bwd needs for these parameters. */
FDMA_API fdma_status fdma_bwd_workspace_size(const fdma_bwd_params* params, uint64_t* bytes);

/* Tile shape (query rows, key columns) the backward kernels use for this head dim and dtype. */
FDMA_API fdma_status fdma_bwd_tile_shape(int32_t head_dim, int32_t dtype, int32_t* block_m,
                                         int32_t* block_n);

/* Backward pass. Checks every argument first; on any failure nothing is launched. Asynchronous
 * with respect to the host on params->stream. */
FDMA_API fdma_status fdma_bwd(const fdma_bwd_params* params);

/* Forward pass. Checks every argument first; on any failure nothing is launched. Asynchronous
 * with respect to the host on params->stream. */
FDMA_API fdma_status fdma_fwd(const fdma_fwd_params* params);

#ifdef __cplusplus
}
#endif

#endif /* FLASH_DMATTN_H */

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
#define FDMA_VERSION_MINOR 2
#define FDMA_VERSION_PATCH 0

/* Bumped on every incompatible change of a struct, an enum or a signature below. Version 2: the problem both
 * directions share is one embedded struct (fdma_problem); the backward has its own outputs, statistics, scratch
 * and stream; masks, biases and the bias gradient take a key stride. */
#define FDMA_ABI_VERSION 2

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

    /* Optional device pointer to two uint64 counters, overwritten with the number of
     * (query tile, key tile) pairs computed and skipped by this call, over all batches and
     * query heads. Tile shape: fdma_fwd_tile_shape(). computed + skipped = the tile count. */
    uint64_t* tile_stats;

    /* Optional device scratch of at least fdma_fwd_workspace_size() bytes, 16-byte aligned, not
     * overlapping any tensor. NULL: the library takes it from CUDA's stream-ordered allocator
     * (cudaMallocAsync) for the call. A call with a mask needs scratch for its tile bitmaps, and a
     * call split over keys (fewer than 256 blocks of query tiles x heads x batch) for its partial
     * outputs; fdma_fwd_workspace_size() is 0 for the others. */
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

/* Tile shape (query rows, key columns) the forward kernel uses for this head dim and dtype. */
FDMA_API fdma_status fdma_fwd_tile_shape(int32_t head_dim, int32_t dtype, int32_t* block_m,
                                         int32_t* block_n);

/* Bytes of scratch fdma_fwd needs for these parameters (shapes and mask fields are read); the same
 * on every GPU. */
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

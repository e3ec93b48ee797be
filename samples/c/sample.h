/*
 * The C sample's problem and its three parts: inputs and a CPU reference (reference.c, plain C), the forward call
 * through the C ABI (attention.c, needs only flash_dmattn.h) and the CUDA runtime glue (main.c).
 *
 * The problem: B = 2, Lq = 70 queries over Lk = 200 keys (causal, bottom-right aligned), Hq = 4 query heads sharing
 * Hkv = 2 key/value heads, D = 64, bf16; a sliding-window mask (1, 1, Lq, Lk) broadcast over batches and heads, and
 * a per-key fp32 bias (B, Hkv, 1, Lk). Q and O are (B, Lq, Hq, D), K and V (B, Lk, Hkv, D), all contiguous.
 */
#ifndef FDMA_SAMPLE_H
#define FDMA_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "flash_dmattn.h"

enum {
    SAMPLE_BATCH = 2,
    SAMPLE_SEQLEN_Q = 70,
    SAMPLE_SEQLEN_K = 200,
    SAMPLE_HEADS_Q = 4,
    SAMPLE_HEADS_KV = 2,
    SAMPLE_HEAD_DIM = 64,
    SAMPLE_WINDOW = 48 /* keys visible to a query: the last WINDOW up to its causal limit */
};

#define SAMPLE_Q_ELEMENTS ((size_t)SAMPLE_BATCH * SAMPLE_SEQLEN_Q * SAMPLE_HEADS_Q * SAMPLE_HEAD_DIM)
#define SAMPLE_KV_ELEMENTS ((size_t)SAMPLE_BATCH * SAMPLE_SEQLEN_K * SAMPLE_HEADS_KV * SAMPLE_HEAD_DIM)
#define SAMPLE_MASK_ELEMENTS ((size_t)SAMPLE_SEQLEN_Q * SAMPLE_SEQLEN_K)
#define SAMPLE_BIAS_ELEMENTS ((size_t)SAMPLE_BATCH * SAMPLE_HEADS_KV * SAMPLE_SEQLEN_K)

/* The forward call's tensors, in host or device memory alike; bf16 tensors as their 16-bit patterns. */
typedef struct sample_tensors {
    uint16_t* q;
    uint16_t* k;
    uint16_t* v;
    uint16_t* out;
    uint8_t* mask;
    float* bias;
} sample_tensors;

/* reference.c */
uint16_t sample_bf16_from_float(float value);
float sample_float_from_bf16(uint16_t bits);
void sample_fill_inputs(const sample_tensors* host);
void sample_reference_forward(const sample_tensors* host, float* out);

/* attention.c */
int sample_library_matches_header(void);
fdma_status sample_forward(const sample_tensors* device, uint64_t* tile_stats, void* stream);

#endif /* FDMA_SAMPLE_H */

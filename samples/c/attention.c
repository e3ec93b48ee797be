/* The forward call through the C ABI: this file needs flash_dmattn.h only (CI compiles it with no CUDA installed). */
#include <math.h>
#include <stdio.h>

#include "sample.h"

int sample_library_matches_header(void) {
    int32_t archs[8];
    int32_t count = 0;
    printf("libflash_dmattn %s, ABI %d (this program was compiled against ABI %d)\n", fdma_version_string(),
           (int)fdma_abi_version(), FDMA_ABI_VERSION);
    if (fdma_compiled_archs(archs, 8, &count) == FDMA_STATUS_SUCCESS) {
        printf("machine code for:");
        for (int32_t i = 0; i < count && i < 8; ++i) printf(" sm_%d", (int)archs[i]);
        printf("\n");
    }
    return fdma_abi_version() == FDMA_ABI_VERSION;
}

/* A contiguous (B, L, H, D) tensor. */
static fdma_tensor sequence_major(void* data, int32_t seqlen, int32_t heads) {
    fdma_tensor t;
    t.data = data;
    t.stride_head = SAMPLE_HEAD_DIM;
    t.stride_seq = (int64_t)heads * SAMPLE_HEAD_DIM;
    t.stride_batch = (int64_t)seqlen * heads * SAMPLE_HEAD_DIM;
    return t;
}

fdma_status sample_forward(const sample_tensors* device, uint64_t* tile_stats, void* stream) {
    fdma_fwd_params params;
    fdma_fwd_params_init(&params); /* zeroes every optional field, sets struct_size and the key strides to 1 */
    fdma_problem* problem = &params.problem;
    problem->dtype = FDMA_DTYPE_BFLOAT16;
    problem->batch = SAMPLE_BATCH;
    problem->seqlen_q = SAMPLE_SEQLEN_Q;
    problem->seqlen_k = SAMPLE_SEQLEN_K;
    problem->heads_q = SAMPLE_HEADS_Q;
    problem->heads_kv = SAMPLE_HEADS_KV;
    problem->head_dim = SAMPLE_HEAD_DIM;
    problem->q = sequence_major(device->q, SAMPLE_SEQLEN_Q, SAMPLE_HEADS_Q);
    problem->k = sequence_major(device->k, SAMPLE_SEQLEN_K, SAMPLE_HEADS_KV);
    problem->v = sequence_major(device->v, SAMPLE_SEQLEN_K, SAMPLE_HEADS_KV);

    /* (1, 1, Lq, Lk): one mask for every batch and head (their strides are ignored). */
    problem->mask.data = device->mask;
    problem->mask.batch = 1;
    problem->mask.heads = 1;
    problem->mask.rows = SAMPLE_SEQLEN_Q;
    problem->mask.stride_row = SAMPLE_SEQLEN_K;

    /* (B, Hkv, 1, Lk) fp32: one bias per key, shared by the queries of a batch and key/value head. */
    problem->bias.data = device->bias;
    problem->bias.dtype = FDMA_DTYPE_FLOAT32;
    problem->bias.batch = SAMPLE_BATCH;
    problem->bias.heads = SAMPLE_HEADS_KV;
    problem->bias.rows = 1;
    problem->bias.stride_batch = (int64_t)SAMPLE_HEADS_KV * SAMPLE_SEQLEN_K;
    problem->bias.stride_head = SAMPLE_SEQLEN_K;

    problem->softmax_scale = 1.0f / sqrtf((float)SAMPLE_HEAD_DIM);
    problem->is_causal = 1;

    params.out = sequence_major(device->out, SAMPLE_SEQLEN_Q, SAMPLE_HEADS_Q);
    params.tile_stats = tile_stats;
    params.stream = stream; /* scratch: none given, so the library takes it from CUDA's stream-ordered allocator */

    const fdma_status status = fdma_fwd(&params);
    if (status != FDMA_STATUS_SUCCESS)
        fprintf(stderr, "fdma_fwd: %s: %s\n", fdma_status_string(status), fdma_last_error_message());
    return status;
}

/*
 * Drives fdma_fwd and fdma_bwd through the C ABI over ragged lengths, GQA, broadcast masks and
 * biases (contiguous, or key-major with a key stride), both 16-bit dtypes and masks that leave tiles
 * empty, partly visible or fully visible, and fdma_topk_lifetimes over both selections, for
 * compute-sanitizer (memcheck, racecheck, synccheck, initcheck). Exits non-zero on any
 * failed call. Build and run on a GPU machine (the command README.md gives):
 *   nvcc -o build/sanitize tests/native/sanitize.c -Inative/include -Lbuild/native -lflash_dmattn
 *   LD_LIBRARY_PATH=build/native compute-sanitizer --tool memcheck build/sanitize
 */
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flash_dmattn.h"

static uint32_t rng = 12345u;

static float uniform(float lo, float hi) {
    rng = rng * 1664525u + 1013904223u;
    return lo + (hi - lo) * (float)(rng >> 8) / 16777216.0f;
}

/* The 16-bit pattern of f in dtype, truncated (the values only need to be finite and varied); fp16
 * flushes magnitudes below its normal range to zero. */
static uint16_t to_16bit(float f, int dtype) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if (dtype == FDMA_DTYPE_BFLOAT16) return (uint16_t)(bits >> 16);
    const uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
    const int exponent = (int)((bits >> 23) & 0xff) - 127 + 15;
    if (exponent <= 0) return sign;
    return (uint16_t)(sign | (exponent << 10) | ((bits >> 13) & 0x3ffu));
}

/* A device buffer of n uniform values in [lo, hi) of a 16-bit dtype. */
static void* device_values(size_t n, float lo, float hi, int dtype) {
    uint16_t* host = (uint16_t*)malloc(n * 2);
    for (size_t i = 0; i < n; ++i) host[i] = to_16bit(uniform(lo, hi), dtype);
    void* dev = NULL;
    cudaMalloc(&dev, n * 2);
    cudaMemcpy(dev, host, n * 2, cudaMemcpyHostToDevice);
    free(host);
    return dev;
}

static void* device_mask(size_t n, float density) {
    uint8_t* host = (uint8_t*)malloc(n);
    for (size_t i = 0; i < n; ++i) host[i] = uniform(0.f, 1.f) < density;
    void* dev = NULL;
    cudaMalloc(&dev, n);
    cudaMemcpy(dev, host, n, cudaMemcpyHostToDevice);
    free(host);
    return dev;
}

/* n random {first, end} pairs drawn past both ends of [0, lq), first > end included. */
static void* device_lifetimes(size_t n, int lq) {
    int32_t* host = (int32_t*)malloc(n * 8);
    for (size_t i = 0; i < n; ++i) {
        host[2 * i] = (int32_t)uniform(-8.f, (float)lq + 8.f);
        host[2 * i + 1] = host[2 * i] + (int32_t)uniform(-16.f, (float)lq);
    }
    void* dev = NULL;
    cudaMalloc(&dev, n * 8);
    cudaMemcpy(dev, host, n * 8, cudaMemcpyHostToDevice);
    free(host);
    return dev;
}

static void* device_zeros(size_t bytes) {
    void* dev = NULL;
    cudaMalloc(&dev, bytes);
    cudaMemset(dev, 0, bytes);
    return dev;
}

/* Waits for the device; 1 (after printing the error) if a kernel failed. */
static int synchronize(void) {
    const cudaError_t err = cudaDeviceSynchronize();
    if (err == cudaSuccess) return 0;
    fprintf(stderr, "CUDA: %s\n", cudaGetErrorString(err));
    return 1;
}

static fdma_tensor seq_major(void* data, int seqlen, int heads, int head_dim) {
    fdma_tensor t = {data, (int64_t)seqlen * heads * head_dim, (int64_t)heads * head_dim, head_dim};
    return t;
}

typedef struct {
    int batch, lq, lk, hq, hkv, d, causal, deterministic;
    int mask_heads, mask_rows; /* 0 = no mask; else heads in {1, hkv, hq}, rows in {1, lq} */
    float mask_density;        /* 1 makes every tile fully visible; 1e-4 leaves most tiles empty */
    int bias_heads, bias_rows; /* 0 = no bias */
    int key_major;             /* mask, bias and dBias stored (batch, heads, Lk, rows): key stride = rows */
    int lifetime_heads;        /* 0 = no key lifetimes; else heads in {1, hkv, hq} (not with a mask) */
} Case;

/* A (batch, heads, rows, Lk) operand, contiguous or key-major. */
static fdma_broadcast_tensor operand(void* data, int dtype, const Case* c, int heads, int rows) {
    const int64_t plane = (int64_t)rows * c->lk;
    fdma_broadcast_tensor t = {data, dtype, c->batch, heads, rows, heads * plane, plane,
                               c->key_major ? 1 : c->lk, c->key_major ? rows : 1};
    return t;
}

static int run_case(const Case* c, int dtype) {
    const size_t q_n = (size_t)c->batch * c->lq * c->hq * c->d, kv_n = (size_t)c->batch * c->lk * c->hkv * c->d;
    void *q = device_values(q_n, -0.5f, 1.5f, dtype), *k = device_values(kv_n, -0.5f, 1.5f, dtype),
         *v = device_values(kv_n, -1.f, 2.f, dtype);
    void *out = device_zeros(q_n * 2), *d_out = device_values(q_n, -1.f, 1.f, dtype);
    void *d_q = device_zeros(q_n * 2), *d_k = device_zeros(kv_n * 2), *d_v = device_zeros(kv_n * 2);
    float* lse = (float*)device_zeros((size_t)c->batch * c->hq * c->lq * 4);
    uint64_t* stats = (uint64_t*)device_zeros(24);
    void *mask = NULL, *bias = NULL, *d_bias = NULL, *lifetimes = NULL;

    fdma_problem problem;
    memset(&problem, 0, sizeof problem);
    problem.dtype = dtype;
    problem.batch = c->batch, problem.seqlen_q = c->lq, problem.seqlen_k = c->lk;
    problem.heads_q = c->hq, problem.heads_kv = c->hkv, problem.head_dim = c->d;
    problem.q = seq_major(q, c->lq, c->hq, c->d);
    problem.k = seq_major(k, c->lk, c->hkv, c->d);
    problem.v = seq_major(v, c->lk, c->hkv, c->d);
    problem.mask.stride_key = problem.lifetimes.stride_key = problem.bias.stride_key = 1;
    if (c->mask_heads) {
        mask = device_mask((size_t)c->batch * c->mask_heads * c->mask_rows * c->lk, c->mask_density);
        problem.mask = operand(mask, 0, c, c->mask_heads, c->mask_rows);
    }
    if (c->lifetime_heads) {
        lifetimes = device_lifetimes((size_t)c->batch * c->lifetime_heads * c->lk, c->lq);
        const fdma_broadcast_tensor t = {lifetimes, 0, c->batch, c->lifetime_heads, 1,
                                         (int64_t)c->lifetime_heads * c->lk, c->lk, 0, 1};
        problem.lifetimes = t;
    }
    if (c->bias_heads) {
        const size_t n = (size_t)c->batch * c->bias_heads * c->bias_rows * c->lk;
        bias = device_values(n, -2.f, 1.f, dtype);
        d_bias = device_zeros(n * 2);
        problem.bias = operand(bias, dtype, c, c->bias_heads, c->bias_rows);
    }
    problem.softmax_scale = 0.125f;
    problem.is_causal = c->causal;

    fdma_fwd_params p;
    fdma_fwd_params_init(&p);
    p.problem = problem;
    p.out = seq_major(out, c->lq, c->hq, c->d);
    p.lse = lse;
    p.tile_stats = stats;

    int failed = 0;
    int status = fdma_fwd(&p);
    if (status != FDMA_STATUS_SUCCESS) {
        fprintf(stderr, "fdma_fwd: %s\n", fdma_last_error_message());
        failed = 1;
    }
    fdma_bwd_params b;
    fdma_bwd_params_init(&b);
    b.problem = problem;
    b.deterministic = c->deterministic;
    b.out = p.out;
    b.lse = lse;
    b.tile_stats = stats;
    b.d_out = seq_major(d_out, c->lq, c->hq, c->d);
    b.d_q = seq_major(d_q, c->lq, c->hq, c->d);
    b.d_k = seq_major(d_k, c->lk, c->hkv, c->d);
    b.d_v = seq_major(d_v, c->lk, c->hkv, c->d);
    if (d_bias) b.d_bias = operand(d_bias, dtype, c, c->bias_heads, c->bias_rows);
    if (!failed && (status = fdma_bwd(&b)) != FDMA_STATUS_SUCCESS) {
        fprintf(stderr, "fdma_bwd: %s\n", fdma_last_error_message());
        failed = 1;
    }
    failed |= synchronize();
    void* buffers[] = {q, k, v, out, d_out, d_q, d_k, d_v, lse, stats, mask, bias, d_bias, lifetimes};
    for (size_t i = 0; i < sizeof(buffers) / sizeof(buffers[0]); ++i) cudaFree(buffers[i]);
    printf("%s B%d Lq%d Lk%d Hq%d Hkv%d D%d causal%d det%d mask(%d,%d,%g) lifetimes(%d) bias(%d,%d)%s: %s\n",
           dtype == FDMA_DTYPE_BFLOAT16 ? "bf16" : "fp16", c->batch, c->lq, c->lk, c->hq, c->hkv, c->d, c->causal,
           c->deterministic, c->mask_heads, c->mask_rows, c->mask_density, c->lifetime_heads, c->bias_heads, c->bias_rows,
           c->key_major ? " key-major" : "", failed ? "FAILED" : "ok");
    return failed;
}

/* fdma_topk_lifetimes over key-major (B, Lk, H) scores, with survivors, for one selection. */
static int run_topk(int batch, int heads, int lq, int lk, int window, int causal, int selection, int dtype) {
    void* scores = device_values((size_t)batch * lk * heads, -1.f, 1.f, dtype);
    int32_t* lifetimes = (int32_t*)device_zeros((size_t)batch * heads * lk * 8);
    int32_t* survivors = (int32_t*)device_zeros((size_t)batch * heads * window * 4);
    fdma_topk_params p;
    fdma_topk_params_init(&p);
    p.selection = selection, p.batch = batch, p.heads = heads, p.seqlen_q = lq, p.seqlen_k = lk;
    p.window = window, p.is_causal = causal;
    fdma_broadcast_tensor t = {scores, dtype, batch, heads, 1, (int64_t)lk * heads, 1, 0, heads};
    p.scores = t;
    p.lifetimes = lifetimes, p.survivors = survivors;
    int failed = 0;
    if (fdma_topk_lifetimes(&p) != FDMA_STATUS_SUCCESS) {
        fprintf(stderr, "fdma_topk_lifetimes: %s\n", fdma_last_error_message());
        failed = 1;
    }
    failed |= synchronize();
    cudaFree(scores), cudaFree(lifetimes), cudaFree(survivors);
    printf("topk %s B%d H%d Lq%d Lk%d w%d causal%d: %s\n", selection == FDMA_SELECT_TOPK ? "top-k" : "positive", batch,
           heads, lq, lk, window, causal, failed ? "FAILED" : "ok");
    return failed;
}

int main(void) {
    const Case cases[] = {
        {2, 97, 130, 4, 2, 64, 1, 0, 2, 97, 0.4f, 2, 1, 0},
        {1, 1, 257, 2, 1, 128, 0, 1, 1, 1, 0.4f, 1, 1, 0},
        {1, 257, 17, 2, 2, 32, 1, 1, 2, 257, 0.4f, 2, 257, 0},
        {2, 70, 150, 8, 1, 96, 0, 0, 1, 70, 0.4f, 8, 70, 0},
        {1, 130, 130, 2, 1, 192, 1, 0, 0, 0, 0.f, 1, 1, 0},
        {1, 65, 200, 2, 2, 256, 0, 1, 2, 1, 0.4f, 0, 0, 0},
        {1, 300, 330, 2, 1, 128, 1, 0, 1, 300, 1.f, 1, 300, 0},
        {1, 520, 600, 4, 2, 64, 0, 1, 2, 520, 1e-4f, 2, 1, 0},
        {2, 97, 130, 4, 2, 64, 1, 1, 2, 97, 0.4f, 2, 1, 1},
        {1, 200, 333, 4, 2, 128, 0, 0, 1, 200, 0.5f, 4, 200, 1},
        {2, 97, 130, 4, 2, 64, 1, 0, 0, 0, 0.f, 2, 1, 0, 2},
        {1, 3, 5000, 4, 2, 128, 1, 1, 0, 0, 0.f, 2, 1, 0, 1},
        {1, 257, 300, 2, 1, 256, 0, 1, 0, 0, 0.f, 1, 257, 0, 2},
        {2, 130, 70, 4, 1, 96, 1, 0, 0, 0, 0.f, 0, 0, 0, 4},
        /* decode: heads packed (mask and bias per kv head; lifetimes per kv head, a group of 6), or per query head */
        {2, 1, 3000, 8, 2, 64, 0, 0, 2, 1, 0.4f, 2, 1, 0},
        {1, 1, 4000, 12, 2, 96, 1, 1, 0, 0, 0.f, 2, 1, 0, 2},
        {1, 16, 700, 4, 2, 128, 1, 0, 4, 16, 0.4f, 4, 16, 0},
    };
    const int dtypes[] = {FDMA_DTYPE_BFLOAT16, FDMA_DTYPE_FLOAT16};
    int failed = 0;
    for (size_t t = 0; t < 2; ++t)
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) failed |= run_case(&cases[i], dtypes[t]);
    failed |= run_topk(2, 3, 1000, 4097, 64, 1, FDMA_SELECT_TOPK, FDMA_DTYPE_BFLOAT16);
    failed |= run_topk(1, 2, 300, 100, 7, 1, FDMA_SELECT_TOPK, FDMA_DTYPE_FLOAT16);
    failed |= run_topk(2, 2, 513, 513, 16, 0, FDMA_SELECT_TOPK, FDMA_DTYPE_FLOAT16);
    failed |= run_topk(1, 3, 200, 777, 5, 1, FDMA_SELECT_POSITIVE, FDMA_DTYPE_BFLOAT16);
    printf("%s\n", failed ? "FAILED" : "all cases ok");
    return failed;
}

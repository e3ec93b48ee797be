/*
 * FlashDmAttn from C: one forward call on the GPU through the installed CMake package, checked against a CPU
 * computation. Exit code 0 when every output is within the bound; 1 on a mismatch or any failure.
 *
 *   cmake -S samples/c -B build/sample-c -DCMAKE_PREFIX_PATH=<where FlashDmAttn is installed>
 *   cmake --build build/sample-c && build/sample-c/flash_dmattn_sample
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime.h>

#include "sample.h"

/* bf16 keeps 8 significant bits, and the kernel rounds the softmax weights to bf16 before P V. */
#define MAX_ABS_DIFFERENCE 2e-2

#define Q_BYTES (SAMPLE_Q_ELEMENTS * sizeof(uint16_t))
#define KV_BYTES (SAMPLE_KV_ELEMENTS * sizeof(uint16_t))
#define MASK_BYTES (SAMPLE_MASK_ELEMENTS * sizeof(uint8_t))
#define BIAS_BYTES (SAMPLE_BIAS_ELEMENTS * sizeof(float))

static int cuda_ok(cudaError_t err, const char* what) {
    if (err != cudaSuccess) fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(err));
    return err == cudaSuccess;
}

/* One tensor in host and in device memory. */
static int allocate(void** host, void** device, size_t bytes) {
    *host = malloc(bytes);
    if (*host == NULL) fprintf(stderr, "out of host memory\n");
    return *host != NULL && cuda_ok(cudaMalloc(device, bytes), "cudaMalloc");
}

static int upload(void* device, const void* host, size_t bytes) {
    return cuda_ok(cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy to the device");
}

static int download(void* host, const void* device, size_t bytes) {
    return cuda_ok(cudaMemcpy(host, device, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy from the device");
}

static void release(void* host, void* device) {
    free(host);
    cudaFree(device);
}

/* The largest |GPU - CPU| over the output; NaN if any output is NaN. */
static double max_abs_difference(const uint16_t* actual, const float* expected) {
    double max_diff = 0;
    for (size_t e = 0; e < SAMPLE_Q_ELEMENTS; ++e) {
        const double diff = fabs((double)sample_float_from_bf16(actual[e]) - expected[e]);
        if (isnan(diff) || diff > max_diff) max_diff = diff;
        if (isnan(max_diff)) break;
    }
    return max_diff;
}

int main(void) {
    int device_count = 0;
    if (!cuda_ok(cudaGetDeviceCount(&device_count), "cudaGetDeviceCount") || device_count == 0) {
        fprintf(stderr, "no usable CUDA device\n");
        return 1;
    }
    if (!sample_library_matches_header()) {
        fprintf(stderr, "the library's ABI differs from flash_dmattn.h's: rebuild against the installed header\n");
        return 1;
    }

    sample_tensors host = {0}, device = {0};
    uint64_t tiles[2] = {0, 0}; /* computed, skipped */
    uint64_t* device_tiles = NULL;
    float* expected = malloc(SAMPLE_Q_ELEMENTS * sizeof(float));
    int ok = expected != NULL && allocate((void**)&host.q, (void**)&device.q, Q_BYTES) &&
             allocate((void**)&host.k, (void**)&device.k, KV_BYTES) &&
             allocate((void**)&host.v, (void**)&device.v, KV_BYTES) &&
             allocate((void**)&host.out, (void**)&device.out, Q_BYTES) &&
             allocate((void**)&host.mask, (void**)&device.mask, MASK_BYTES) &&
             allocate((void**)&host.bias, (void**)&device.bias, BIAS_BYTES) &&
             cuda_ok(cudaMalloc((void**)&device_tiles, sizeof tiles), "cudaMalloc");
    if (ok) {
        sample_fill_inputs(&host);
        sample_reference_forward(&host, expected);
    }
    ok = ok && upload(device.q, host.q, Q_BYTES) && upload(device.k, host.k, KV_BYTES) &&
         upload(device.v, host.v, KV_BYTES) && upload(device.mask, host.mask, MASK_BYTES) &&
         upload(device.bias, host.bias, BIAS_BYTES) &&
         sample_forward(&device, device_tiles, NULL) == FDMA_STATUS_SUCCESS &&
         cuda_ok(cudaDeviceSynchronize(), "the forward kernels") && download(host.out, device.out, Q_BYTES) &&
         download(tiles, device_tiles, sizeof tiles);

    if (ok) {
        const double max_diff = max_abs_difference(host.out, expected);
        ok = max_diff <= MAX_ABS_DIFFERENCE;
        printf("tiles computed %llu, skipped %llu; max |GPU - CPU| = %.3g (bound %.3g): %s\n",
               (unsigned long long)tiles[0], (unsigned long long)tiles[1], max_diff, MAX_ABS_DIFFERENCE,
               ok ? "OK" : "MISMATCH");
    }

    release(host.q, device.q);
    release(host.k, device.k);
    release(host.v, device.v);
    release(host.out, device.out);
    release(host.mask, device.mask);
    release(host.bias, device.bias);
    cudaFree(device_tiles);
    free(expected);
    return ok ? 0 : 1;
}

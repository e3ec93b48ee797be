// The exported C ABI (flash_dmattn.h). No exception crosses it and nothing is printed.
#include <cuda_runtime.h>

#include <new>

#include "../kernels/fwd_config.cuh"
#include "flash_dmattn.h"
#include "fwd_args.h"
#include "fwd_launch.h"
#include "status.h"

namespace {

constexpr int32_t kCompiledArchs[] = {FDMA_CUDA_ARCHS};

template <typename F>
fdma_status guarded(F&& body) {
    try {
        fdma::clear_last_error();
        return body();
    } catch (const std::bad_alloc&) {
        return fdma::fail(FDMA_STATUS_INTERNAL, "out of host memory");
    } catch (...) {
        return fdma::fail(FDMA_STATUS_INTERNAL, "unexpected C++ exception");
    }
}

}  // namespace

extern "C" {

int32_t fdma_abi_version(void) { return FDMA_ABI_VERSION; }

const char* fdma_version_string(void) { return FDMA_VERSION; }

fdma_status fdma_compiled_archs(int32_t* archs, int32_t capacity, int32_t* count) {
    return guarded([&] {
        if (count == nullptr) return fdma::fail(FDMA_STATUS_INVALID_ARGUMENT, "count is null");
        if (capacity < 0 || (capacity > 0 && archs == nullptr))
            return fdma::fail(FDMA_STATUS_INVALID_ARGUMENT, "archs must hold capacity (>= 0) entries");
        const int32_t total = static_cast<int32_t>(sizeof(kCompiledArchs) / sizeof(kCompiledArchs[0]));
        for (int32_t i = 0; i < total && i < capacity; ++i) archs[i] = kCompiledArchs[i];
        *count = total;
        return FDMA_STATUS_SUCCESS;
    });
}

fdma_status fdma_fwd_tile_shape(int32_t head_dim, int32_t dtype, int32_t* block_m, int32_t* block_n) {
    return guarded([&] {
        if (block_m == nullptr || block_n == nullptr)
            return fdma::fail(FDMA_STATUS_INVALID_ARGUMENT, "block_m and block_n must not be null");
        if (!fdma::is_supported_head_dim(head_dim))
            return fdma::fail(FDMA_STATUS_UNSUPPORTED,
                              "head_dim must be one of 32, 64, 96, 128, 192, 256; got " + std::to_string(head_dim));
        if (dtype != FDMA_DTYPE_FLOAT16 && dtype != FDMA_DTYPE_BFLOAT16)
            return fdma::fail(FDMA_STATUS_UNSUPPORTED,
                              "dtype must be FLOAT16 (1) or BFLOAT16 (2); got " + std::to_string(dtype));
        const fdma::FwdTile tile = fdma::fwd_tile(head_dim);
        *block_m = tile.block_m;
        *block_n = tile.block_n;
        return FDMA_STATUS_SUCCESS;
    });
}

fdma_status fdma_fwd_workspace_size(const fdma_fwd_params* params, uint64_t* bytes) {
    return guarded([&] {
        if (bytes == nullptr) return fdma::fail(FDMA_STATUS_INVALID_ARGUMENT, "bytes is null");
        return fdma::fwd_workspace_bytes(params, *bytes);
    });
}

void fdma_fwd_params_init(fdma_fwd_params* params) {
    if (params == nullptr) return;
    *params = fdma_fwd_params{};
    params->struct_size = sizeof(fdma_fwd_params);
}

fdma_status fdma_fwd(const fdma_fwd_params* params) {
    return guarded([&] {
        fdma::FwdParams kernel_params{};
        if (const fdma_status st = fdma::make_fwd_params(params, kernel_params)) return st;
        const auto stream = static_cast<cudaStream_t>(params->stream);
        if (params->tile_stats != nullptr) {
            const cudaError_t err = cudaMemsetAsync(params->tile_stats, 0, 2 * sizeof(uint64_t), stream);
            if (err != cudaSuccess) return fdma::fail_cuda(err, "clearing tile_stats");
        }
        uint64_t scratch_bytes = 0;
        fdma::fwd_workspace_bytes(params, scratch_bytes);
        void* scratch = params->workspace;
        const bool owns_scratch = scratch_bytes > 0 && scratch == nullptr;
        if (owns_scratch) {
            const cudaError_t err = cudaMallocAsync(&scratch, scratch_bytes, stream);
            if (err != cudaSuccess) return fdma::fail_cuda(err, "allocating the forward's scratch");
        }
        kernel_params.occupancy = static_cast<unsigned int*>(scratch);
        if (scratch_bytes > 0) kernel_params.full_tiles = kernel_params.occupancy + fdma::bitmap_words(*params);
        const cudaError_t err =
            fdma::dispatch_fwd(kernel_params, params->dtype, params->head_dim, params->batch, stream);
        const cudaError_t free_err = owns_scratch ? cudaFreeAsync(scratch, stream) : cudaSuccess;
        if (err != cudaSuccess) return fdma::fail_cuda(err, "launching the forward kernel");
        if (free_err != cudaSuccess) return fdma::fail_cuda(free_err, "freeing the forward's scratch");
        return FDMA_STATUS_SUCCESS;
    });
}

}  // extern "C"

// The exported C ABI (flash_dmattn.h). No exception crosses it and nothing is printed.
#include <cuda_runtime.h>

#include "../kernels/plan.cuh"
#include "bwd_args.h"
#include "bwd_launch.h"
#include "flash_dmattn.h"
#include "fwd_args.h"
#include "fwd_launch.h"
#include "guarded.h"
#include "status.h"
#include "topk.h"

namespace {

using fdma::guarded;

constexpr int32_t kCompiledArchs[] = {FDMA_CUDA_ARCHS};

fdma_status tile_shape(fdma::Tile (*tile_of)(int), int32_t head_dim, int32_t dtype, int32_t* block_m,
                       int32_t* block_n) {
    return guarded([&] {
        if (block_m == nullptr || block_n == nullptr)
            return fdma::fail(FDMA_STATUS_INVALID_ARGUMENT, "block_m and block_n must not be null");
        if (!fdma::is_supported_head_dim(head_dim))
            return fdma::fail(FDMA_STATUS_UNSUPPORTED,
                              "head_dim must be one of 32, 64, 96, 128, 192, 256; got " + std::to_string(head_dim));
        if (dtype != FDMA_DTYPE_FLOAT16 && dtype != FDMA_DTYPE_BFLOAT16)
            return fdma::fail(FDMA_STATUS_UNSUPPORTED,
                              "dtype must be FLOAT16 (1) or BFLOAT16 (2); got " + std::to_string(dtype));
        const fdma::Tile tile = tile_of(head_dim);
        *block_m = tile.block_m;
        *block_n = tile.block_n;
        return FDMA_STATUS_SUCCESS;
    });
}

// Runs `launch(scratch)` with `given` as scratch, or with `bytes` from the stream-ordered
// allocator for the call when the caller gave none.
template <typename Launch>
fdma_status with_scratch(void* given, uint64_t bytes, cudaStream_t stream, Launch&& launch) {
    void* scratch = given;
    const bool owned = bytes > 0 && scratch == nullptr;
    if (owned) {
        const cudaError_t err = cudaMallocAsync(&scratch, bytes, stream);
        if (err != cudaSuccess) return fdma::fail_cuda(err, "allocating scratch");
    }
    const cudaError_t err = launch(scratch);
    const cudaError_t free_err = owned ? cudaFreeAsync(scratch, stream) : cudaSuccess;
    if (err != cudaSuccess) return fdma::fail_cuda(err, "launching the kernels");
    if (free_err != cudaSuccess) return fdma::fail_cuda(free_err, "freeing scratch");
    return FDMA_STATUS_SUCCESS;
}

}  // namespace

extern "C" {

int32_t fdma_abi_version(void) { return FDMA_ABI_VERSION; }

// Built once from the header's macros (thread-safe static initialization); short enough to need no heap.
const char* fdma_version_string(void) {
    static const std::string version = std::to_string(FDMA_VERSION_MAJOR) + "." + std::to_string(FDMA_VERSION_MINOR) +
                                       "." + std::to_string(FDMA_VERSION_PATCH);
    return version.c_str();
}

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
    // The kernel this head dim's calls of more than kDecodeQueries queries get on the current device
    // (select_fwd_kernel); a decode call has one query tile with this block_m as with its own.
    return tile_shape([](int d) { return fdma::fwd_tile(d, fdma::select_fwd_kernel(d)); }, head_dim, dtype, block_m, block_n);
}

fdma_status fdma_fwd_workspace_size(const fdma_fwd_params* params, uint64_t* bytes) {
    return guarded([&] {
        if (bytes == nullptr) return fdma::fail(FDMA_STATUS_INVALID_ARGUMENT, "bytes is null");
        fdma::FwdPlan plan;
        if (const fdma_status st = fdma::plan_fwd_call(params, plan)) return st;
        *bytes = plan.workspace_bytes;
        return FDMA_STATUS_SUCCESS;
    });
}

void fdma_fwd_params_init(fdma_fwd_params* params) {
    if (params == nullptr) return;
    *params = fdma_fwd_params{};
    params->struct_size = sizeof(fdma_fwd_params);
    params->problem.mask.stride_key = params->problem.lifetimes.stride_key = params->problem.bias.stride_key = 1;
}

fdma_status fdma_fwd(const fdma_fwd_params* params) {
    return guarded([&] {
        fdma::FwdParams kernel_params{};
        fdma::FwdPlan plan;
        if (const fdma_status st = fdma::make_fwd_call(params, kernel_params, plan)) return st;
        const auto stream = static_cast<cudaStream_t>(params->stream);
        if (params->tile_stats != nullptr) {
            const cudaError_t err = cudaMemsetAsync(params->tile_stats, 0, fdma::kFwdStatCounters * sizeof(uint64_t), stream);
            if (err != cudaSuccess) return fdma::fail_cuda(err, "clearing tile_stats");
        }
        return with_scratch(params->workspace, plan.workspace_bytes, stream, [&](void* base) {
            fdma::place_fwd_scratch(kernel_params, plan, base);
            return fdma::dispatch_fwd(kernel_params, plan, params->problem.dtype, params->problem.head_dim, stream);
        });
    });
}

void fdma_bwd_params_init(fdma_bwd_params* params) {
    if (params == nullptr) return;
    *params = fdma_bwd_params{};
    params->struct_size = sizeof(fdma_bwd_params);
    params->problem.mask.stride_key = params->problem.lifetimes.stride_key = params->problem.bias.stride_key =
        params->d_bias.stride_key = 1;
}

fdma_status fdma_bwd_workspace_size(const fdma_bwd_params* params, uint64_t* bytes) {
    return guarded([&] {
        if (bytes == nullptr) return fdma::fail(FDMA_STATUS_INVALID_ARGUMENT, "bytes is null");
        fdma::BwdPlan plan;
        if (const fdma_status st = fdma::plan_bwd_call(params, plan)) return st;
        *bytes = plan.workspace_bytes;
        return FDMA_STATUS_SUCCESS;
    });
}

fdma_status fdma_bwd_tile_shape(int32_t head_dim, int32_t dtype, int32_t* block_m, int32_t* block_n) {
    return tile_shape(fdma::bwd_tile, head_dim, dtype, block_m, block_n);
}

fdma_status fdma_bwd(const fdma_bwd_params* params) {
    return guarded([&] {
        fdma::BwdParams kernel_params{};
        fdma::BwdPlan plan;
        if (const fdma_status st = fdma::make_bwd_call(params, kernel_params, plan)) return st;
        const auto stream = static_cast<cudaStream_t>(params->stream);
        return with_scratch(params->workspace, plan.workspace_bytes, stream, [&](void* base) {
            fdma::place_bwd_scratch(kernel_params, plan, base);
            return fdma::dispatch_bwd(kernel_params, plan, params->problem.dtype, params->problem.head_dim, stream);
        });
    });
}

void fdma_topk_params_init(fdma_topk_params* params) {
    if (params == nullptr) return;
    *params = fdma_topk_params{};
    params->struct_size = sizeof(fdma_topk_params);
    params->scores.stride_key = 1;
}

fdma_status fdma_topk_workspace_size(const fdma_topk_params* params, uint64_t* bytes) {
    return guarded([&] {
        if (bytes == nullptr) return fdma::fail(FDMA_STATUS_INVALID_ARGUMENT, "bytes is null");
        uint64_t workspace_bytes = 0;
        if (const fdma_status st = fdma::plan_topk_call(params, workspace_bytes)) return st;
        *bytes = workspace_bytes;
        return FDMA_STATUS_SUCCESS;
    });
}

fdma_status fdma_topk_lifetimes(const fdma_topk_params* params) {
    return guarded([&] {
        fdma::TopkArgs args;
        uint64_t workspace_bytes = 0;
        if (const fdma_status st = fdma::make_topk_call(params, args, workspace_bytes)) return st;
        const auto stream = static_cast<cudaStream_t>(params->stream);
        return with_scratch(params->workspace, workspace_bytes, stream, [&](void* base) {
            args.scratch = base;
            return fdma::launch_topk_lifetimes(args, stream);
        });
    });
}

}  // extern "C"

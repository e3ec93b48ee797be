// The DMA decode cache's exports (flash_dmattn.h, fdma_dma_cache_*): argument checks, then the kernels of
// dma_cache.cuh. Every check runs before anything is launched.
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>
#include <string>

#include "../kernels/plan.cuh"
#include "checks.h"
#include "dma_cache_kernels.h"
#include "flash_dmattn.h"
#include "guarded.h"
#include "status.h"

namespace fdma {
namespace {

// The cache's buffers: k, v, scores, positions, lifetimes, state.
constexpr int kCacheExtents = 6;

// One of the per-slot arrays or the counters (`bytes` in all): not null, aligned, device memory.
fdma_status check_cache_array(const void* data, const char* name, int alignment, long long bytes, Extent& extent) {
    const FieldName field{"cache.", name};
    if (data == nullptr) return fail(FDMA_STATUS_INVALID_ARGUMENT, field.str() + " is null");
    if (reinterpret_cast<std::uintptr_t>(data) % alignment != 0)
        return fail(FDMA_STATUS_MISALIGNED, field.str() + " must be " + str(alignment) + "-byte aligned; got address " +
                                                str(static_cast<long long>(reinterpret_cast<std::uintptr_t>(data))));
    extent = {static_cast<const char*>(data), static_cast<const char*>(data) + bytes, field, true};
    return check_device_pointer(data, field);
}

// Checks a cache and resolves it for the kernels; fills extents[0, kCacheExtents).
fdma_status check_cache(const fdma_dma_cache* cache, DmaCacheView& view, Extent* extents) {
    if (cache == nullptr) return fail(FDMA_STATUS_INVALID_ARGUMENT, "cache is null");
    const fdma_dma_cache& c = *cache;
    if (c.struct_size != sizeof(fdma_dma_cache))
        return fail(FDMA_STATUS_STRUCT_SIZE, "cache.struct_size is " + str(c.struct_size) + "; this library (ABI " +
                                                 str(FDMA_ABI_VERSION) + ") expects " + str(sizeof(fdma_dma_cache)));
    if (c.dtype == FDMA_DTYPE_FLOAT32)
        return fail(FDMA_STATUS_UNSUPPORTED, "cache.dtype FLOAT32 is not supported for k and v; "
                                             "expected FLOAT16 (1) or BFLOAT16 (2)");
    if (c.dtype != FDMA_DTYPE_FLOAT16 && c.dtype != FDMA_DTYPE_BFLOAT16)
        return fail(FDMA_STATUS_INVALID_ARGUMENT, "cache.dtype must be FLOAT16 (1) or BFLOAT16 (2); got " + str(c.dtype));
    const struct { const char* name; int value; } sizes[] = {
        {"batch", c.batch}, {"heads_kv", c.heads_kv}, {"head_dim", c.head_dim}, {"window", c.window},
        {"max_step_tokens", c.max_step_tokens}};
    for (const auto& s : sizes)
        if (s.value < 1) return fail(FDMA_STATUS_INVALID_ARGUMENT, std::string("cache.") + s.name + " must be >= 1; got " + str(s.value));
    if (!is_supported_head_dim(c.head_dim))
        return fail(FDMA_STATUS_UNSUPPORTED, "cache.head_dim must be one of 32, 64, 96, 128, 192, 256; got " + str(c.head_dim));
    const long long slots = static_cast<long long>(c.window) + c.max_step_tokens;
    // int slot indices, with a block's stride past the last one, never overflow.
    if (slots > (1LL << 30))
        return fail(FDMA_STATUS_UNSUPPORTED, "cache.window + cache.max_step_tokens (the slots) must be <= 2^30; got " +
                                                 str(slots));
    // One block per (batch, kv head): grid.x's limit.
    const long long caches = static_cast<long long>(c.batch) * c.heads_kv;
    if (caches > std::numeric_limits<int32_t>::max())
        return fail(FDMA_STATUS_UNSUPPORTED, "cache.batch * cache.heads_kv must be <= 2^31 - 1; got " + str(caches));
    if (caches * slots > (1LL << 62) / 8)  // the lifetimes' bytes, the largest per-slot array
        return fail(FDMA_STATUS_INVALID_ARGUMENT, "cache: batch * heads_kv * slots pairs address more than 2^62 bytes");

    fdma_status st;
    if ((st = check_tensor(c.k, {"cache.", "k", {c.batch, slots, c.heads_kv}, true}, c.head_dim, extents[0])) ||
        (st = check_tensor(c.v, {"cache.", "v", {c.batch, slots, c.heads_kv}, true}, c.head_dim, extents[1])) ||
        (st = check_cache_array(c.scores, "scores", 4, 4 * caches * slots, extents[2])) ||
        (st = check_cache_array(c.positions, "positions", 4, 4 * caches * slots, extents[3])) ||
        (st = check_cache_array(c.lifetimes, "lifetimes", 8, 8 * caches * slots, extents[4])) ||
        (st = check_cache_array(c.state, "state", 4, 16 * caches, extents[5])))
        return st;

    view.k = c.k.data;
    view.v = c.v.data;
    view.k_strides = strides_of(c.k);
    view.v_strides = strides_of(c.v);
    view.scores = c.scores;
    view.positions = c.positions;
    view.lifetimes = c.lifetimes;
    view.state = c.state;
    view.heads_kv = c.heads_kv;
    view.head_dim = c.head_dim;
    view.window = c.window;
    view.slots = static_cast<int>(slots);
    return FDMA_STATUS_SUCCESS;
}

// Checks the step's tokens against a checked cache and resolves them; fills extents[0, 4): k, v, scores, slots.
fdma_status check_append(const fdma_dma_cache& c, const fdma_dma_append_params* params, DmaAppendParams& out,
                         Extent* extents) {
    if (params == nullptr) return fail(FDMA_STATUS_INVALID_ARGUMENT, "params is null");
    const fdma_dma_append_params& a = *params;
    if (a.struct_size != sizeof(fdma_dma_append_params))
        return fail(FDMA_STATUS_STRUCT_SIZE, "params.struct_size is " + str(a.struct_size) + "; this library (ABI " +
                                                 str(FDMA_ABI_VERSION) + ") expects " + str(sizeof(fdma_dma_append_params)));
    for (uint64_t r : a.reserved)
        if (r != 0) return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.reserved must be zero");
    if (a.tokens < 1 || a.tokens > c.max_step_tokens)
        return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.tokens must be in [1, cache.max_step_tokens (" +
                                                      str(c.max_step_tokens) + ")]; got " + str(a.tokens));
    const fdma_broadcast_tensor& s = a.scores;
    if (s.data == nullptr) return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.scores.data is null");
    if (s.batch != c.batch)
        return fail(FDMA_STATUS_INVALID_ARGUMENT,
                    "params.scores.batch must be cache.batch (" + str(c.batch) + "), no broadcast; got " + str(s.batch));
    if (s.heads != c.heads_kv)
        return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.scores.heads must be cache.heads_kv (" + str(c.heads_kv) +
                                                      "), no broadcast; got " + str(s.heads));
    if (s.rows != 1) return fail(FDMA_STATUS_INVALID_ARGUMENT, "params.scores.rows must be 1; got " + str(s.rows));

    // The scores seen as a bias of a problem whose keys are the step's tokens.
    fdma_problem tokens{};
    tokens.batch = c.batch;
    tokens.seqlen_q = 1;
    tokens.seqlen_k = a.tokens;
    tokens.heads_q = tokens.heads_kv = c.heads_kv;
    const long long caches = static_cast<long long>(c.batch) * c.heads_kv;
    fdma_status st;
    if ((st = check_tensor(a.k, {"params.", "k", {c.batch, a.tokens, c.heads_kv}, false}, c.head_dim, extents[0])) ||
        (st = check_tensor(a.v, {"params.", "v", {c.batch, a.tokens, c.heads_kv}, false}, c.head_dim, extents[1])) ||
        (st = check_broadcast(s, "params.", "scores", tokens, true, false, out.scores, extents[2])))
        return st;
    extents[3] = Extent{};
    if (a.slots != nullptr) {
        if (reinterpret_cast<std::uintptr_t>(a.slots) % 4 != 0)
            return fail(FDMA_STATUS_MISALIGNED, "params.slots must be 4-byte aligned; got address " +
                                                    str(static_cast<long long>(reinterpret_cast<std::uintptr_t>(a.slots))));
        const char* begin = reinterpret_cast<const char*>(a.slots);
        extents[3] = {begin, begin + 4 * caches * a.tokens, {"params.", "slots"}, true};
        if ((st = check_device_pointer(a.slots, {"params.", "slots"}))) return st;
    }
    out.k = a.k.data;
    out.v = a.v.data;
    out.k_strides = strides_of(a.k);
    out.v_strides = strides_of(a.v);
    out.slot_of_token = a.slots;
    out.tokens = a.tokens;
    return FDMA_STATUS_SUCCESS;
}

}  // namespace
}  // namespace fdma

// The cache's own checks, the overlaps of its buffers included (the calls that take no other tensor).
static fdma_status check_cache_alone(const fdma_dma_cache* cache, fdma::DmaCacheView& view) {
    fdma::Extent extents[fdma::kCacheExtents];
    if (const fdma_status st = fdma::check_cache(cache, view, extents)) return st;
    return fdma::check_no_overlaps(extents, fdma::kCacheExtents);
}

extern "C" {

void fdma_dma_cache_init(fdma_dma_cache* cache) {
    if (cache == nullptr) return;
    *cache = fdma_dma_cache{};
    cache->struct_size = sizeof(fdma_dma_cache);
}

void fdma_dma_append_params_init(fdma_dma_append_params* params) {
    if (params == nullptr) return;
    *params = fdma_dma_append_params{};
    params->struct_size = sizeof(fdma_dma_append_params);
    params->scores.stride_key = 1;
}

fdma_status fdma_dma_cache_reset(const fdma_dma_cache* cache, void* stream) {
    return fdma::guarded([&] {
        fdma::DmaCacheView view{};
        if (const fdma_status st = check_cache_alone(cache, view)) return st;
        const cudaError_t err = fdma::launch_dma_cache_reset(view, static_cast<long long>(cache->batch) * cache->heads_kv,
                                                             static_cast<cudaStream_t>(stream));
        return err == cudaSuccess ? FDMA_STATUS_SUCCESS : fdma::fail_cuda(err, "launching the cache reset");
    });
}

fdma_status fdma_dma_cache_append(const fdma_dma_cache* cache, const fdma_dma_append_params* params) {
    return fdma::guarded([&] {
        fdma::DmaAppendParams kernel_params{};
        constexpr int kExtents = fdma::kCacheExtents + 4;
        fdma::Extent extents[kExtents];
        fdma_status st;
        if ((st = fdma::check_cache(cache, kernel_params.cache, extents)) ||
            (st = fdma::check_append(*cache, params, kernel_params, extents + fdma::kCacheExtents)) ||
            (st = fdma::check_no_overlaps(extents, kExtents)))
            return st;
        const cudaError_t err = fdma::launch_dma_cache_append(kernel_params, cache->batch * cache->heads_kv,
                                                              static_cast<cudaStream_t>(params->stream));
        return err == cudaSuccess ? FDMA_STATUS_SUCCESS : fdma::fail_cuda(err, "launching the cache append");
    });
}

fdma_status fdma_dma_cache_problem(const fdma_dma_cache* cache, fdma_problem* problem) {
    return fdma::guarded([&] {
        fdma::DmaCacheView view{};
        if (const fdma_status st = check_cache_alone(cache, view)) return st;
        if (problem == nullptr) return fdma::fail(FDMA_STATUS_INVALID_ARGUMENT, "problem is null");
        const fdma_dma_cache& c = *cache;
        const int32_t slots = view.slots;
        problem->dtype = c.dtype;
        problem->batch = c.batch;
        problem->heads_kv = c.heads_kv;
        problem->head_dim = c.head_dim;
        problem->seqlen_k = slots;
        problem->k = c.k;
        problem->v = c.v;
        problem->mask = fdma_broadcast_tensor{};
        problem->mask.stride_key = 1;
        // The per-slot arrays as (B, Hkv, 1, slots) operands, contiguous slots.
        fdma_broadcast_tensor per_slot{};
        per_slot.batch = c.batch;
        per_slot.heads = c.heads_kv;
        per_slot.rows = 1;
        per_slot.stride_batch = static_cast<int64_t>(c.heads_kv) * slots;
        per_slot.stride_head = slots;
        per_slot.stride_row = 0;
        per_slot.stride_key = 1;
        problem->lifetimes = per_slot;
        problem->lifetimes.data = c.lifetimes;
        problem->bias = per_slot;
        problem->bias.data = c.scores;
        problem->bias.dtype = FDMA_DTYPE_FLOAT32;
        problem->is_causal = 0;
        return FDMA_STATUS_SUCCESS;
    });
}

}  // extern "C"

// Argument checks shared by the forward and backward entry points. Each failing check records
// a message naming the field, the expected and the actual value.
#pragma once

#include <cstdint>
#include <string>

#include "../kernels/fwd_params.cuh"
#include "flash_dmattn.h"

namespace fdma {

std::string str(long long v);

// Scratch regions start on 256-byte boundaries.
inline uint64_t align256(uint64_t bytes) { return (bytes + 255) / 256 * 256; }

// Byte range a tensor may touch, for the overlap checks.
struct Extent {
    const char* begin = nullptr;
    const char* end = nullptr;
    const char* name = "";
    bool written = false;
};

// Fails when a written extent overlaps any other.
fdma_status check_no_overlaps(const Extent* extents, int count, const std::string& prefix);

// Last element offset + 1 of a tensor with the given sizes and strides (elements), or -1 on
// int64 overflow.
long long span_elements(const long long* sizes, const long long* strides, int rank, long long inner);

// Whether no two elements of the layout share an address (inner: contiguous innermost extent).
bool is_disjoint(const long long* sizes, const long long* strides, int rank, long long inner);

fdma_status check_device_pointer(const void* ptr, const char* name);

struct TensorCheck {
    std::string prefix;  // "params." or "params.forward."
    const char* name;
    long long sizes[3];  // batch, seq, heads
    bool is_output;
};

// A (batch, seq, heads, head_dim) tensor: pointer, alignment, strides, extent, device memory.
fdma_status check_tensor(const fdma_tensor& t, const TensorCheck& c, int head_dim, Extent& extent);

// An optional mask (is_bias false) or bias; fills the kernel's view of it.
fdma_status check_broadcast(const fdma_broadcast_tensor& t, const std::string& prefix, const char* field,
                            const fdma_fwd_params& p, bool is_bias, BroadcastOperand& out, Extent& extent);

}  // namespace fdma

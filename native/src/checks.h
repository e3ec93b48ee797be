// Argument checks shared by the forward and backward entry points. Each failing check records
// a message naming the field, the expected and the actual value.
#pragma once

#include <cstdint>
#include <string>

#include "../kernels/params.cuh"
#include "flash_dmattn.h"

namespace fdma {

std::string str(long long v);

// A field's full name, "params.problem.q", kept as two literals and joined only when a message needs it: a call
// that passes its checks builds no string.
struct FieldName {
    const char* prefix = "";
    const char* field = "";
    std::string str() const { return std::string(prefix) + field; }
};

// Byte range a tensor may touch, for the overlap checks.
struct Extent {
    const char* begin = nullptr;
    const char* end = nullptr;
    FieldName name;
    bool written = false;
};

// Fails when a written extent overlaps any other.
fdma_status check_no_overlaps(const Extent* extents, int count);

// Last element offset + 1 of a tensor with the given sizes and strides (elements), or -1 on
// int64 overflow.
long long span_elements(const long long* sizes, const long long* strides, int rank, long long inner);

// Whether no two elements of the layout share an address (inner: contiguous innermost extent; rank <= 4).
bool is_disjoint(const long long* sizes, const long long* strides, int rank, long long inner);

// Device (or managed) memory of the current device; member: what follows the name in a message (".data").
fdma_status check_device_pointer(const void* ptr, FieldName name, const char* member = "");

struct TensorCheck {
    const char* prefix;  // "params." or "params.problem."
    const char* name;
    long long sizes[3];  // batch, seq, heads
    bool is_output;
};

// The kernels' view of a tensor's strides.
inline Strides strides_of(const fdma_tensor& t) { return {t.stride_batch, t.stride_seq, t.stride_head}; }

// A (batch, seq, heads, head_dim) tensor: pointer, alignment, strides, extent, device memory.
fdma_status check_tensor(const fdma_tensor& t, const TensorCheck& c, int head_dim, Extent& extent);

// An optional mask (is_bias false), bias or bias gradient, whose sizes must fit the problem `p`; fills
// the kernels' view of it (broadcast strides zeroed) and its extent (written: the bias gradient).
fdma_status check_broadcast(const fdma_broadcast_tensor& t, const char* prefix, const char* field,
                            const fdma_problem& p, bool is_bias, bool written, BroadcastOperand& out, Extent& extent);

// Optional key lifetimes: the mask's broadcast rules with rows 1, int32 pairs aligned to 8 bytes, not with a mask.
fdma_status check_lifetimes(const fdma_broadcast_tensor& t, const char* prefix, const fdma_problem& p,
                            BroadcastOperand& out, Extent& extent);

}  // namespace fdma

// Checks every field of the ABI's forward parameters and resolves them into the kernel's form.
#pragma once

#include <string>

#include "../kernels/fwd_params.cuh"
#include "checks.h"
#include "flash_dmattn.h"

namespace fdma {

// A forward call's scratch, as byte offsets from its start: the split-KV partials (fwd_kv_splits),
// then the two tile bitmaps (tile_occupancy.cuh) of a call with a mask.
struct FwdScratch {
    int kv_splits = 1;
    uint64_t o_partial = 0;     // with kv_splits > 1
    uint64_t lse_partial = 0;
    uint64_t bitmaps = 0;       // with a mask
    uint64_t bitmap_words = 0;  // of one bitmap; 0 without a mask
    uint64_t total = 0;
};

// Checks the fields fdma_fwd_workspace_size reads (struct size, shapes, mask shape) and lays the
// scratch out.
fdma_status fwd_scratch_layout(const fdma_fwd_params* params, FwdScratch& scratch);

// Points the scratch fields of `params` into `base` laid out as `scratch`.
void place_fwd_scratch(FwdParams& params, const FwdScratch& scratch, void* base);

// Struct size, reserved fields, dtype and sizes of a forward problem.
fdma_status check_fwd_shape(const fdma_fwd_params* params, const std::string& prefix);

// The tensors of a forward problem: q, k, v, out, mask, bias, lse, tile_stats.
constexpr int kFwdExtents = 8;

// Checks a forward problem (everything but its scratch) and resolves it for the kernels; fills
// extents[0, kFwdExtents) for the caller's overlap check. Field names start with prefix.
fdma_status check_fwd_problem(const fdma_fwd_params* params, const std::string& prefix, FwdParams& out,
                              Extent* extents);

// Scratch given by the caller: enough bytes, aligned, device memory; fills its extent.
fdma_status check_workspace(const void* workspace, uint64_t workspace_bytes, uint64_t needed,
                            const std::string& prefix, Extent& extent);

// Checks everything; on failure returns the status, records the message, and leaves nothing
// launched. The scratch fields of `out` are left for the caller to set from `scratch`.
fdma_status make_fwd_params(const fdma_fwd_params* params, FwdParams& out, FwdScratch& scratch);

}  // namespace fdma

// Checks every field of the ABI's forward parameters and resolves them into the kernel's form.
#pragma once

#include <string>

#include "../kernels/fwd_params.cuh"
#include "checks.h"
#include "flash_dmattn.h"

namespace fdma {

// Checks the fields fdma_fwd_workspace_size reads (struct size, shapes, mask shape) and returns
// the scratch bytes the call needs.
fdma_status fwd_workspace_bytes(const fdma_fwd_params* params, uint64_t& bytes);

// Words of one tile bitmap (tile_occupancy.cuh) of a call with a mask; shapes already checked.
uint64_t bitmap_words(const fdma_fwd_params& params);

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
// launched. out.occupancy is left for the caller to point at the scratch.
fdma_status make_fwd_params(const fdma_fwd_params* params, FwdParams& out);

}  // namespace fdma

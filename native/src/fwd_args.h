// Checks every field of the ABI's forward parameters and resolves them into the kernel's form.
#pragma once

#include "../kernels/fwd_params.cuh"
#include "flash_dmattn.h"

namespace fdma {

// Checks the fields fdma_fwd_workspace_size reads (struct size, shapes, mask shape) and returns
// the scratch bytes the call needs.
fdma_status fwd_workspace_bytes(const fdma_fwd_params* params, uint64_t& bytes);

// Words of one tile bitmap (tile_occupancy.cuh) of a call with a mask; shapes already checked.
uint64_t bitmap_words(const fdma_fwd_params& params);

// Checks everything; on failure returns the status, records the message, and leaves nothing
// launched. out.occupancy is left for the caller to point at the scratch.
fdma_status make_fwd_params(const fdma_fwd_params* params, FwdParams& out);

}  // namespace fdma

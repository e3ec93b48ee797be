// Checks every field of the ABI's forward parameters and resolves them into the kernel's form.
#pragma once

#include "../kernels/fwd_params.cuh"
#include "flash_dmattn.h"

namespace fdma {

// On failure returns the status, records the message, and leaves nothing launched.
fdma_status make_fwd_params(const fdma_fwd_params* params, FwdParams& out);

}  // namespace fdma

// Failure reporting of the C ABI: a status code plus the calling thread's last message.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "flash_dmattn.h"

namespace fdma {

// Records `message` as the calling thread's last error and returns `status`.
fdma_status fail(fdma_status status, std::string message);

// Maps a CUDA error to a status, recording "<what>: <cuda error name>: <cuda error text>".
fdma_status fail_cuda(cudaError_t err, const char* what);

void clear_last_error();

}  // namespace fdma

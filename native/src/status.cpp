#include "status.h"

namespace fdma {

namespace {
thread_local std::string last_error_message;
}

fdma_status fail(fdma_status status, std::string message) {
    last_error_message = std::move(message);
    return status;
}

fdma_status fail_cuda(cudaError_t err, const char* what) {
    cudaGetLastError();  // the runtime keeps a failed call's error per thread: the next call must not inherit it
    const fdma_status status = err == cudaErrorNoKernelImageForDevice || err == cudaErrorInvalidDeviceFunction
        ? FDMA_STATUS_NO_KERNEL_IMAGE
        : FDMA_STATUS_CUDA_ERROR;
    return fail(status, std::string(what) + ": " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

void clear_last_error() { last_error_message.clear(); }

}  // namespace fdma

extern "C" const char* fdma_last_error_message(void) { return fdma::last_error_message.c_str(); }

extern "C" const char* fdma_status_string(int32_t status) {
    switch (status) {
        case FDMA_STATUS_SUCCESS: return "success";
        case FDMA_STATUS_INVALID_ARGUMENT: return "invalid argument";
        case FDMA_STATUS_UNSUPPORTED: return "unsupported configuration";
        case FDMA_STATUS_MISALIGNED: return "misaligned pointer or stride";
        case FDMA_STATUS_STRUCT_SIZE: return "unknown parameter struct size";
        case FDMA_STATUS_CUDA_ERROR: return "CUDA error";
        case FDMA_STATUS_NO_KERNEL_IMAGE: return "no kernel image for this GPU";
        case FDMA_STATUS_INTERNAL: return "internal error";
        default: return "unknown status";
    }
}

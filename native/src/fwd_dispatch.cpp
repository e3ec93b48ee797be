#include "fwd_launch.h"

namespace fdma {

namespace {
template <int kElementType>
cudaError_t dispatch_head_dim(const FwdParams& params, int head_dim, int batch, cudaStream_t stream) {
    switch (head_dim) {
        case 32: return launch_fwd<kElementType, 32>(params, batch, stream);
        case 64: return launch_fwd<kElementType, 64>(params, batch, stream);
        case 96: return launch_fwd<kElementType, 96>(params, batch, stream);
        case 128: return launch_fwd<kElementType, 128>(params, batch, stream);
        case 192: return launch_fwd<kElementType, 192>(params, batch, stream);
        case 256: return launch_fwd<kElementType, 256>(params, batch, stream);
        default: return cudaErrorInvalidValue;
    }
}
}  // namespace

cudaError_t dispatch_fwd(const FwdParams& params, int dtype, int head_dim, int batch, cudaStream_t stream) {
    return dtype == kFloat16 ? dispatch_head_dim<kFloat16>(params, head_dim, batch, stream)
                             : dispatch_head_dim<kBFloat16>(params, head_dim, batch, stream);
}

}  // namespace fdma

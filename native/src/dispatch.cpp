#include <cstdlib>
#include <cstring>

#include "bwd_launch.h"
#include "fwd_launch.h"

namespace fdma {

namespace {

// Calls launch.operator()<dtype, head dim>() of the instantiation matching the run-time values.
template <int kElementType, typename Launch>
cudaError_t with_head_dim(int head_dim, Launch&& launch) {
    switch (head_dim) {
        case 32: return launch.template operator()<kElementType, 32>();
        case 64: return launch.template operator()<kElementType, 64>();
        case 96: return launch.template operator()<kElementType, 96>();
        case 128: return launch.template operator()<kElementType, 128>();
        case 192: return launch.template operator()<kElementType, 192>();
        case 256: return launch.template operator()<kElementType, 256>();
        default: return cudaErrorInvalidValue;
    }
}

template <typename Launch>
cudaError_t with_instance(int dtype, int head_dim, Launch&& launch) {
    return dtype == kFloat16 ? with_head_dim<kFloat16>(head_dim, launch) : with_head_dim<kBFloat16>(head_dim, launch);
}

struct FwdLaunch {
    const FwdParams& params;
    const FwdPlan& plan;
    cudaStream_t stream;
    template <int kElementType, int kHeadDim>
    cudaError_t operator()() const { return launch_fwd<kElementType, kHeadDim>(params, plan, stream); }
};

struct BwdLaunch {
    const BwdParams& params;
    const BwdPlan& plan;
    cudaStream_t stream;
    template <int kElementType, int kHeadDim>
    cudaError_t operator()() const { return launch_bwd<kElementType, kHeadDim>(params, plan, stream); }
};

}  // namespace

FwdKernel select_fwd_kernel(int head_dim) {
    static const bool requested = [] {
        const char* value = std::getenv("FDMA_FWD_KERNEL");
        return value != nullptr && std::strcmp(value, "wgmma") == 0;
    }();
    if (!kWgmmaForwardBuilt || !requested || !has_wgmma_forward(head_dim)) return kFwdMmaSync;
    int device = 0, major = 0, minor = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess)
        return kFwdMmaSync;
    return major == 9 && minor == 0 ? kFwdWgmma : kFwdMmaSync;
}

cudaError_t dispatch_fwd(const FwdParams& params, const FwdPlan& plan, int dtype, int head_dim, cudaStream_t stream) {
    return with_instance(dtype, head_dim, FwdLaunch{params, plan, stream});
}

cudaError_t dispatch_bwd(const BwdParams& params, const BwdPlan& plan, int dtype, int head_dim, cudaStream_t stream) {
    return with_instance(dtype, head_dim, BwdLaunch{params, plan, stream});
}

}  // namespace fdma

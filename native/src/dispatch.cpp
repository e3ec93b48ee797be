#include <atomic>
#include <cstdlib>
#include <cstring>

#include "bwd_launch.h"
#include "fwd_launch.h"

namespace fdma {

namespace {

// Devices whose compute capability select_fwd_kernel remembers; a device past them runs mma.sync.
constexpr int kMaxDevices = 64;

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
    static const bool switched_off = [] {
        const char* value = std::getenv("FDMA_FWD_KERNEL");
        return value != nullptr && std::strcmp(value, "mma_sync") == 0;
    }();
    if (!kWgmmaForwardBuilt || switched_off || !has_wgmma_forward(head_dim)) return kFwdMmaSync;
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) return kFwdMmaSync;
    // Each device's compute capability, asked once (0: not yet); a race asks twice and stores the same value.
    static std::atomic<int> archs[kMaxDevices];
    if (device < 0 || device >= kMaxDevices) return kFwdMmaSync;
    int arch = archs[device].load(std::memory_order_relaxed);
    if (arch == 0) {
        int major = 0, minor = 0;
        if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
            cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess)
            return kFwdMmaSync;
        arch = major * 10 + minor;
        archs[device].store(arch, std::memory_order_relaxed);
    }
    return device_fwd_kernel(head_dim, arch, true);
}

cudaError_t dispatch_fwd(const FwdParams& params, const FwdPlan& plan, int dtype, int head_dim, cudaStream_t stream) {
    return with_instance(dtype, head_dim, FwdLaunch{params, plan, stream});
}

cudaError_t dispatch_bwd(const BwdParams& params, const BwdPlan& plan, int dtype, int head_dim, cudaStream_t stream) {
    return with_instance(dtype, head_dim, BwdLaunch{params, plan, stream});
}

}  // namespace fdma

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "bwd_launch.h"
#include "fwd_launch.h"

namespace fdma {

namespace {

// Devices whose compute capability current_device_arch remembers; a device past them runs mma.sync.
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


// The current device's compute capability (major * 10 + minor), asked once per device; 0 where it cannot be told.
int current_device_arch() {
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) return 0;
    // Each device's compute capability, asked once (0: not yet); a race asks twice and stores the same value.
    static std::atomic<int> archs[kMaxDevices];
    int arch = archs[device].load(std::memory_order_relaxed);
    if (arch == 0) {
        int major = 0, minor = 0;
        if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
            cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess)
            return 0;
        arch = major * 10 + minor;
        archs[device].store(arch, std::memory_order_relaxed);
    }
    return arch;
}

// Whether environment variable `name` is set to `value` (read once per call site by the callers' statics).
bool environment_says(const char* name, const char* value) {
    const char* set = std::getenv(name);
    return set != nullptr && std::strcmp(set, value) == 0;
}

}  // namespace

FwdKernel select_fwd_kernel(int head_dim) {
    static const bool switched_off = environment_says("FDMA_FWD_KERNEL", "mma_sync");
    if (!kWgmmaForwardBuilt || switched_off || !has_wgmma_forward(head_dim)) return kFwdMmaSync;
    return device_fwd_kernel(head_dim, current_device_arch(), true);
}

bool select_bwd_wgmma(int head_dim) {
    static const bool switched_on = environment_says("FDMA_BWD_KERNEL", "wgmma");
    return kWgmmaForwardBuilt && switched_on && has_wgmma_backward(head_dim) && current_device_arch() == 90;
}

cudaError_t dispatch_fwd(const FwdParams& params, const FwdPlan& plan, int dtype, int head_dim, cudaStream_t stream) {
    return with_instance(dtype, head_dim, FwdLaunch{params, plan, stream});
}

cudaError_t dispatch_bwd(const BwdParams& params, const BwdPlan& plan, int dtype, int head_dim, cudaStream_t stream) {
    return with_instance(dtype, head_dim, BwdLaunch{params, plan, stream});
}

}  // namespace fdma

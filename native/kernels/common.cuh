// Types and constants every file of the library shares, device code and host code alike. Plain C++ with no
// includes: the host compiler, nvcc and NVRTC all read it.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define FDMA_HOST_DEVICE __host__ __device__
#else
#define FDMA_HOST_DEVICE
#endif

namespace fdma {

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;
typedef long long i64;
typedef unsigned long long u64;

enum DType { kFloat16 = 1, kBFloat16 = 2, kFloat32 = 3 };  // the values of fdma_dtype

FDMA_HOST_DEVICE constexpr int element_size(int type) { return type == kFloat32 ? 4 : 2; }

// log2 of a power of two.
FDMA_HOST_DEVICE constexpr int log2_of(int power_of_two) { return power_of_two <= 1 ? 0 : 1 + log2_of(power_of_two / 2); }

// The kernels keep scores and LSEs in log2 units (ex2 is one instruction); the ABI's LSE is natural.
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

}  // namespace fdma

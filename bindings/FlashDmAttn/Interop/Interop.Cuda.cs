using System.Runtime.InteropServices;

namespace FlashDmAttn;

internal static partial class Interop
{
    // The CUDA driver API (cuda.h): only the calls this library makes. CUresult and CUdevice are int,
    // CUcontext is a pointer, CUdeviceptr is a 64-bit integer.
    internal static unsafe partial class Cuda
    {
        static Cuda() => NativeLibraryResolver.Register();

        public const int CUDA_SUCCESS = 0;
        public const int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
        public const int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
        public const int CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL = 9;

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuInit(uint flags);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuDeviceGetCount(out int count);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuDeviceGet(out int device, int ordinal);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuDeviceGetAttribute(out int value, int attribute, int device);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuDevicePrimaryCtxRetain(out nint context, int device);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuDevicePrimaryCtxRelease_v2(int device);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuCtxPushCurrent_v2(nint context);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuCtxPopCurrent_v2(out nint context);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuCtxSynchronize();

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuMemAlloc_v2(out ulong pointer, nuint byteCount);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuMemFree_v2(ulong pointer);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuMemcpyHtoD_v2(ulong destination, void* source, nuint byteCount);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuMemcpyDtoH_v2(void* destination, ulong source, nuint byteCount);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuMemsetD8_v2(ulong destination, byte value, nuint count);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuPointerGetAttribute(void* data, int attribute, ulong pointer);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuGetErrorName(int error, out nint name);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuGetErrorString(int error, out nint text);
    }
}

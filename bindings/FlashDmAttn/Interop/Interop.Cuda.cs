using System.Runtime.InteropServices;

namespace FlashDmAttn;

internal static partial class Interop
{
    // The CUDA driver API (cuda.h): only the calls this library and its benchmarks make. CUresult and CUdevice are
    // int, CUcontext, CUstream and CUevent are pointers, CUdeviceptr is a 64-bit integer.
    internal static unsafe partial class Cuda
    {
        static Cuda() => NativeLibraryResolver.Register();

        public const int CUDA_SUCCESS = 0;
        public const int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
        public const int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
        public const int CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL = 9;
        public const int CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE = 38;
        public const uint CU_STREAM_NON_BLOCKING = 1;
        public const uint CU_EVENT_DEFAULT = 0;
        public const int CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
        public const int CU_STREAM_CAPTURE_MODE_GLOBAL = 0;
        public const int CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1;
        public const int CU_STREAM_CAPTURE_STATUS_NONE = 0;
        public const int CU_STREAM_CAPTURE_STATUS_ACTIVE = 1;

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
        public static partial int cuDevicePrimaryCtxGetState(int device, out uint flags, out int active);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuCtxSynchronize();

        // A context of its own, made current on the calling thread; only the tests make one, to pass the library
        // memory and streams that belong to a context other than the call's.
        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuCtxCreate_v2(out nint context, uint flags, int device);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuCtxDestroy_v2(nint context);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuCtxGetCurrent(out nint context);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuCtxGetDevice(out int device);

        // CUDA 12.0 and newer: an identifier unique to the context for the life of the process.
        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuCtxGetId(nint context, out ulong id);

        // image: a cubin, or PTX ending with a NUL byte.
        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuModuleLoadData(out nint module, void* image);

        [LibraryImport(Libraries.CudaDriver, StringMarshalling = StringMarshalling.Utf8)]
        public static partial int cuModuleGetFunction(out nint function, nint module, string name);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuFuncSetAttribute(nint function, int attribute, int value);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuLaunchKernel(
            nint function, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY, uint blockZ,
            uint sharedMemBytes, nint stream, void** kernelParams, void** extra);

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
        public static partial int cuMemsetD8Async(ulong destination, byte value, nuint count, nint stream);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuMemAllocAsync(out ulong pointer, nuint byteCount, nint stream);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuMemFreeAsync(ulong pointer, nint stream);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuPointerGetAttribute(void* data, int attribute, ulong pointer);

        // The device's default pool serves cudaMallocAsync; the tests trim it to count free memory exactly.
        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuDeviceGetDefaultMemPool(out nint pool, int device);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuMemPoolTrimTo(nint pool, nuint minBytesToKeep);

        // Streams, events and asynchronous fills: what the benchmarks (bench/FlashDmAttn.Bench) time kernels with.
        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuDeviceGetName(byte* name, int length, int device);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuCtxSetCurrent(nint context);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuMemGetInfo_v2(out nuint free, out nuint total);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuStreamCreate(out nint stream, uint flags);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuStreamDestroy_v2(nint stream);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuStreamSynchronize(nint stream);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuEventCreate(out nint cuEvent, uint flags);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuEventDestroy_v2(nint cuEvent);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuEventRecord(nint cuEvent, nint stream);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuEventSynchronize(nint cuEvent);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuEventElapsedTime(out float milliseconds, nint start, nint end);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuMemcpyDtoD_v2(ulong destination, ulong source, nuint byteCount);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuMemsetD32Async(ulong destination, uint value, nuint count, nint stream);

        // CUDA graphs: only the tests capture the device-pointer calls on a stream and replay them. CUgraph and
        // CUgraphExec are pointers, CUstreamCaptureMode and CUstreamCaptureStatus enums (int).
        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuStreamBeginCapture_v2(nint stream, int mode);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuStreamEndCapture(nint stream, out nint graph);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuStreamIsCapturing(nint stream, out int status);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuGraphInstantiateWithFlags(out nint graphExec, nint graph, ulong flags);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuGraphLaunch(nint graphExec, nint stream);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuGraphExecDestroy(nint graphExec);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuGraphDestroy(nint graph);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuGetErrorName(int error, out nint name);

        [LibraryImport(Libraries.CudaDriver)]
        public static partial int cuGetErrorString(int error, out nint text);
    }
}

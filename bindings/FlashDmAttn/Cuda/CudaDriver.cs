using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace FlashDmAttn;

// Thin helpers over the driver API: initialization once per process, queries, and CUresult to CudaException.
internal static class CudaDriver
{
    private static readonly Lazy<bool> Initialized = new(() =>
    {
        _ = NativeLibraryResolver.CudaDriver;
        ThrowIfFailed(Interop.Cuda.cuInit(0));
        return true;
    });

    public static void EnsureInitialized() => _ = Initialized.Value;

    public static int DeviceCount()
    {
        EnsureInitialized();
        ThrowIfFailed(Interop.Cuda.cuDeviceGetCount(out int count));
        return count;
    }

    public static (int Major, int Minor) ComputeCapability(int ordinal)
    {
        EnsureInitialized();
        ThrowIfFailed(Interop.Cuda.cuDeviceGet(out int device, ordinal));
        ThrowIfFailed(Interop.Cuda.cuDeviceGetAttribute(out int major, Interop.Cuda.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device));
        ThrowIfFailed(Interop.Cuda.cuDeviceGetAttribute(out int minor, Interop.Cuda.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device));
        return (major, minor);
    }

    // The ordinal of the device that owns a device pointer; an unknown pointer is the caller's argument error.
    public static unsafe int DeviceOf(nint pointer, string name)
    {
        EnsureInitialized();
        int ordinal;
        int result = Interop.Cuda.cuPointerGetAttribute(&ordinal, Interop.Cuda.CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, unchecked((ulong)pointer));
        if (result != Interop.Cuda.CUDA_SUCCESS)
        {
            throw new ArgumentException(
                $"{name}.Pointer must be CUDA device memory; got 0x{pointer:x}, which the driver rejects with {ErrorName(result)}.", name);
        }

        return ordinal;
    }

    public static void Synchronize() => ThrowIfFailed(Interop.Cuda.cuCtxSynchronize());

    public static void ThrowIfFailed(int result, [CallerArgumentExpression(nameof(result))] string call = "")
    {
        if (result == Interop.Cuda.CUDA_SUCCESS)
            return;

        // "Interop.Cuda.cuMemAlloc_v2(out ulong p, n)" is reported as "cuMemAlloc_v2".
        string function = call.Split('(')[0];
        function = function[(function.LastIndexOf('.') + 1)..];
        string text = Interop.Cuda.cuGetErrorString(result, out nint textPointer) == Interop.Cuda.CUDA_SUCCESS
            ? Marshal.PtrToStringUTF8(textPointer) ?? ""
            : "unknown error";
        throw new CudaException(function, result, ErrorName(result), text);
    }

    private static string ErrorName(int result) =>
        Interop.Cuda.cuGetErrorName(result, out nint name) == Interop.Cuda.CUDA_SUCCESS
            ? Marshal.PtrToStringUTF8(name) ?? ""
            : $"CUresult {result}";
}

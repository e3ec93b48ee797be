using System.Runtime.InteropServices;

namespace FlashDmAttn;

// A retained reference to a device's primary context, the context the CUDA runtime (and so the native library)
// uses; released when disposed or finalized, and the driver destroys the context with its last reference.
internal sealed class CudaPrimaryContext : SafeHandle
{
    private readonly int device;

    private CudaPrimaryContext(int device)
        : base(0, ownsHandle: true) => this.device = device;

    public override bool IsInvalid => handle == 0;

    public static CudaPrimaryContext Retain(int ordinal)
    {
        CudaDriver.EnsureInitialized();
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuDeviceGet(out int device, ordinal));
        var context = new CudaPrimaryContext(device);
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuDevicePrimaryCtxRetain(out nint handle, device));
        context.SetHandle(handle);
        return context;
    }

    public CudaContextScope Push() => new(this);

    protected override bool ReleaseHandle() =>
        Interop.Cuda.cuDevicePrimaryCtxRelease_v2(device) == Interop.Cuda.CUDA_SUCCESS;
}

using System.Runtime.InteropServices;

namespace FlashDmAttn;

// Device memory owned by a primary context. Every operation makes that context current itself, so a buffer works
// from any thread, and its memory is freed even when it is finalized rather than disposed.
internal sealed class DeviceBuffer : SafeHandle
{
    private readonly CudaPrimaryContext context;

    private DeviceBuffer(CudaPrimaryContext context, long byteCount)
        : base(0, ownsHandle: true)
    {
        this.context = context;
        ByteCount = byteCount;
    }

    public nint Pointer => handle;

    public long ByteCount { get; }

    public override bool IsInvalid => handle == 0;

    private ulong Address => unchecked((ulong)handle);

    public static DeviceBuffer Allocate(CudaPrimaryContext context, long byteCount)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(byteCount);
        var buffer = new DeviceBuffer(context, byteCount);
        using (context.Push())
        {
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemAlloc_v2(out ulong address, (nuint)byteCount));

            // Keeps the context alive until ReleaseHandle has freed the memory, whatever the finalization order.
            bool added = false;
            context.DangerousAddRef(ref added);
            buffer.SetHandle(unchecked((nint)address));
        }

        return buffer;
    }

    public static unsafe DeviceBuffer FromHost<T>(CudaPrimaryContext context, ReadOnlySpan<T> source)
        where T : unmanaged
    {
        fixed (T* start = source)
            return FromHost(context, start, (long)source.Length * sizeof(T));
    }

    public static unsafe DeviceBuffer FromHost(CudaPrimaryContext context, BroadcastOperand source)
    {
        fixed (byte* start = &source.Start)
            return FromHost(context, start, source.ByteLength);
    }

    public unsafe void CopyFrom<T>(ReadOnlySpan<T> source)
        where T : unmanaged
    {
        fixed (T* start = source)
            CopyFrom(start, (long)source.Length * sizeof(T));
    }

    public unsafe void CopyTo<T>(Span<T> destination)
        where T : unmanaged
    {
        long byteCount = (long)destination.Length * sizeof(T);
        ThrowIfLargerThanBuffer(byteCount, nameof(destination));
        fixed (T* start = destination)
        {
            using (context.Push())
                CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemcpyDtoH_v2(start, Address, (nuint)byteCount));
        }
    }

    public void Fill(byte value)
    {
        using (context.Push())
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemsetD8_v2(Address, value, (nuint)ByteCount));
    }

    protected override bool ReleaseHandle()
    {
        // May run on the finalizer thread: no exceptions, and the owning context is made current explicitly.
        bool freed = false;
        if (Interop.Cuda.cuCtxPushCurrent_v2(context.DangerousGetHandle()) == Interop.Cuda.CUDA_SUCCESS)
        {
            freed = Interop.Cuda.cuMemFree_v2(Address) == Interop.Cuda.CUDA_SUCCESS;
            Interop.Cuda.cuCtxPopCurrent_v2(out _);
        }

        context.DangerousRelease();
        return freed;
    }

    private static unsafe DeviceBuffer FromHost(CudaPrimaryContext context, void* source, long byteCount)
    {
        DeviceBuffer buffer = Allocate(context, byteCount);
        try
        {
            buffer.CopyFrom(source, byteCount);
            return buffer;
        }
        catch
        {
            buffer.Dispose();
            throw;
        }
    }

    private unsafe void CopyFrom(void* source, long byteCount)
    {
        ThrowIfLargerThanBuffer(byteCount, "source");
        using (context.Push())
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemcpyHtoD_v2(Address, source, (nuint)byteCount));
    }

    private void ThrowIfLargerThanBuffer(long byteCount, string name)
    {
        if (byteCount > ByteCount)
            throw new ArgumentException($"{name} must span at most the buffer's {ByteCount} bytes; got {byteCount}.", name);
    }
}

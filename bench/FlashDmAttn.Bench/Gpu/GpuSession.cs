using System.Runtime.InteropServices;
using System.Text;

namespace FlashDmAttn.Bench.Gpu;

/// <summary>
/// The GPU the suite runs on: device 0's primary context (the one the native library uses), the stream every launch
/// goes to, and the buffer whose clearing evicts L2 before each timed launch, as triton.testing.do_bench clears its
/// 256 MB buffer before each of the baselines' launches.
/// </summary>
internal sealed unsafe class GpuSession : IDisposable
{
    public const long L2ClearBytes = 256L << 20;

    private readonly DeviceBuffer l2ClearBuffer;

    private GpuSession(CudaPrimaryContext context, int device, nint stream, DeviceBuffer l2ClearBuffer, string name, long l2Bytes)
    {
        Context = context;
        Device = device;
        Stream = stream;
        this.l2ClearBuffer = l2ClearBuffer;
        Name = name;
        L2Bytes = l2Bytes;
    }

    public CudaPrimaryContext Context { get; }

    public int Device { get; }

    public nint Stream { get; }

    /// <summary>As the driver names the device, e.g. "NVIDIA H100 80GB HBM3".</summary>
    public string Name { get; }

    public long L2Bytes { get; }

    public static GpuSession Open(int device)
    {
        CudaPrimaryContext context = CudaPrimaryContext.Retain(device);
        try
        {
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuCtxSetCurrent(context.DangerousGetHandle()));
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuDeviceGet(out int handle, device));
            byte* name = stackalloc byte[256];
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuDeviceGetName(name, 256, handle));
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuDeviceGetAttribute(out int l2, Interop.Cuda.CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, handle));
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuStreamCreate(out nint stream, Interop.Cuda.CU_STREAM_NON_BLOCKING));
            DeviceBuffer clear = DeviceBuffer.Allocate(context, L2ClearBytes);
            return new GpuSession(context, device, stream, clear, Marshal.PtrToStringUTF8((nint)name) ?? $"device {device}", l2);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>Makes the context current on the calling thread (BenchmarkDotNet may run each case on its own thread).</summary>
    public void MakeCurrent() => CudaDriver.ThrowIfFailed(Interop.Cuda.cuCtxSetCurrent(Context.DangerousGetHandle()));

    /// <summary>Queues a write of the whole clearing buffer: afterwards L2 holds none of the next launch's inputs.</summary>
    public void ClearL2() => CudaDriver.ThrowIfFailed(
        Interop.Cuda.cuMemsetD32Async(unchecked((ulong)l2ClearBuffer.Pointer), 0, (nuint)(L2ClearBytes / sizeof(uint)), Stream));

    public void Synchronize() => CudaDriver.ThrowIfFailed(Interop.Cuda.cuStreamSynchronize(Stream));

    public long FreeMemory()
    {
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemGetInfo_v2(out nuint free, out _));
        return (long)free;
    }

    /// <summary>A file-name-safe short name: "NVIDIA H100 80GB HBM3" becomes "h100-80gb-hbm3".</summary>
    public string ShortName()
    {
        var builder = new StringBuilder();
        foreach (string word in Name.Split(' ', StringSplitOptions.RemoveEmptyEntries).Where(w => !w.Equals("NVIDIA", StringComparison.OrdinalIgnoreCase)))
        {
            if (builder.Length > 0)
                builder.Append('-');
            builder.Append(new string([.. word.ToLowerInvariant().Where(char.IsAsciiLetterOrDigit)]));
        }

        return builder.Length == 0 ? "gpu" : builder.ToString();
    }

    public void Dispose()
    {
        l2ClearBuffer.Dispose();
        Interop.Cuda.cuStreamDestroy_v2(Stream);
        Context.Dispose();
    }
}

namespace FlashDmAttn.Tests.Gpu;

/// <summary>Device memory as the driver counts it, and a way to leave little of it free.</summary>
internal static class DeviceMemory
{
    /// <summary>Free bytes on the device of the current context.</summary>
    public static long Free()
    {
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemGetInfo_v2(out nuint free, out _));
        return (long)free;
    }

    /// <summary>
    /// Free bytes once the device is idle and the default pool of the stream-ordered allocator (the library's scratch
    /// comes from it) caches nothing: what allocations alone account for. The driver trims that pool by itself when an
    /// allocation runs out, so an untrimmed count before a failing call reads as memory gained after it.
    /// </summary>
    public static long Settled()
    {
        CudaDriver.Synchronize();
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuCtxGetDevice(out int device));
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuDeviceGetDefaultMemPool(out nint pool, device));
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemPoolTrimTo(pool, 0));

        // The driver also holds memory of its own that it gives back only once an allocation runs out (4 MiB on an
        // H100, the first time): asking for more than is free makes it do so before the count.
        long free = Free();
        if (Interop.Cuda.cuMemAlloc_v2(out ulong address, (nuint)(free + 64 * (1L << 20))) == Interop.Cuda.CUDA_SUCCESS)
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemFree_v2(address));
        return Free();
    }

    /// <summary>Holds all but about <paramref name="leave"/> bytes of the free device memory until disposed.</summary>
    public static DeviceBuffer Hog(CudaPrimaryContext context, long leave) => DeviceBuffer.Allocate(context, Free() - leave);
}

/// <summary>A non-blocking stream of the current context, destroyed when disposed.</summary>
internal sealed class CudaStream : IDisposable
{
    public CudaStream()
    {
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuStreamCreate(out nint handle, Interop.Cuda.CU_STREAM_NON_BLOCKING));
        Handle = handle;
    }

    public nint Handle { get; private set; }

    public void Synchronize() => CudaDriver.ThrowIfFailed(Interop.Cuda.cuStreamSynchronize(Handle));

    /// <summary>Whether the stream is capturing: a CU_STREAM_CAPTURE_STATUS_* (none, active, invalidated).</summary>
    public int CaptureStatus
    {
        get
        {
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuStreamIsCapturing(Handle, out int status));
            return status;
        }
    }

    public void Dispose()
    {
        if (Handle != 0)
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuStreamDestroy_v2(Handle));
        Handle = 0;
    }
}

/// <summary>
/// What a recording queued on a stream, captured into a CUDA graph and instantiated, to be launched again and again;
/// the graph and its executable destroyed when disposed.
/// </summary>
internal sealed class CudaGraph : IDisposable
{
    private nint graph, executable;

    private CudaGraph()
    {
    }

    /// <summary>
    /// Captures what <paramref name="record"/> queues on <paramref name="stream"/> (cuStreamBeginCapture_v2 in
    /// <paramref name="mode"/>, a CU_STREAM_CAPTURE_MODE_*) and instantiates it. A recording that throws still ends the
    /// capture, so that the stream is usable again, and its exception is the one reported.
    /// </summary>
    public static CudaGraph Capture(CudaStream stream, int mode, Action record)
    {
        var captured = new CudaGraph();
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuStreamBeginCapture_v2(stream.Handle, mode));
        try
        {
            record();
        }
        catch
        {
            _ = Interop.Cuda.cuStreamEndCapture(stream.Handle, out captured.graph);
            captured.Dispose();
            throw;
        }

        try
        {
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuStreamEndCapture(stream.Handle, out captured.graph));
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuGraphInstantiateWithFlags(out captured.executable, captured.graph, 0));
        }
        catch
        {
            captured.Dispose();
            throw;
        }

        return captured;
    }

    /// <summary>Queues one run of the graph on <paramref name="stream"/>.</summary>
    public void Launch(CudaStream stream) => CudaDriver.ThrowIfFailed(Interop.Cuda.cuGraphLaunch(executable, stream.Handle));

    public void Dispose()
    {
        if (executable != 0)
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuGraphExecDestroy(executable));
        executable = 0;
        if (graph != 0)
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuGraphDestroy(graph));
        graph = 0;
    }
}

/// <summary>
/// A CUDA context of its own on device 0, beside the primary context the tests' calls run in: its memory and its
/// streams are what a caller juggling contexts could pass by mistake. Freed and destroyed when disposed.
/// </summary>
internal sealed class OtherContext : IDisposable
{
    private readonly nint context;
    private readonly List<ulong> allocations = [];
    private readonly List<nint> streams = [];

    public OtherContext()
    {
        CudaDriver.EnsureInitialized();
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuDeviceGet(out int device, 0));
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuCtxCreate_v2(out context, 0, device)); // created current: made so only while in use
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuCtxPopCurrent_v2(out _));
    }

    public nint Allocate(long byteCount) => InContext(() =>
    {
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemAlloc_v2(out ulong address, (nuint)byteCount));
        allocations.Add(address);
        return unchecked((nint)address);
    });

    public void Synchronize(nint stream) => InContext(() =>
    {
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuStreamSynchronize(stream));
        return 0;
    });

    public nint CreateStream() => InContext(() =>
    {
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuStreamCreate(out nint stream, Interop.Cuda.CU_STREAM_NON_BLOCKING));
        streams.Add(stream);
        return stream;
    });

    public void Dispose()
    {
        InContext(() =>
        {
            foreach (ulong address in allocations)
                CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemFree_v2(address));
            foreach (nint stream in streams)
                CudaDriver.ThrowIfFailed(Interop.Cuda.cuStreamDestroy_v2(stream));
            return 0;
        });
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuCtxDestroy_v2(context));
    }

    private T InContext<T>(Func<T> action)
    {
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuCtxPushCurrent_v2(context));
        try
        {
            return action();
        }
        finally
        {
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuCtxPopCurrent_v2(out _));
        }
    }
}

/// <summary>For GPU tests with a case on the NVRTC backend: skips it, with the loader's reason, where NVRTC is missing.</summary>
internal static class NvrtcAvailability
{
    public static void Require()
    {
        try
        {
            NvrtcCompiler.EnsureLoaded();
        }
        catch (NativeLibraryException e)
        {
            Assert.Ignore($"no NVRTC: {e.Message}");
        }
    }
}

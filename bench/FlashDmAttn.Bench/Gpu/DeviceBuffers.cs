namespace FlashDmAttn.Bench.Gpu;

/// <summary>The device buffers of one benchmark problem, allocated in a context and freed together.</summary>
internal sealed class DeviceBuffers(CudaPrimaryContext context) : IDisposable
{
    private readonly List<DeviceBuffer> buffers = [];

    public DeviceBuffer Allocate(long bytes)
    {
        DeviceBuffer buffer = DeviceBuffer.Allocate(context, bytes);
        buffers.Add(buffer);
        return buffer;
    }

    public void Dispose()
    {
        foreach (DeviceBuffer buffer in buffers)
            buffer.Dispose();
        buffers.Clear();
    }
}

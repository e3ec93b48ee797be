using System.Runtime.CompilerServices;

namespace FlashDmAttn;

// The GPU side of a call on host spans, the same for both directions: the device's primary context, current until
// disposed; every buffer the call uploads or allocates, freed on disposal before the context is popped and released;
// and the tile counters every call returns. Tensors are (B, L, H, D) contiguous, as the host-span API takes them.
internal readonly ref struct HostCallStaging
{
    private readonly AttentionShape shape;
    private readonly CudaPrimaryContext context;
    private readonly CudaContextScope current;
    private readonly List<DeviceBuffer> buffers = [];
    private readonly DeviceBuffer tileStats;

    // The forward writes three counters, the backward the first two (the third is then never written).
    private const int ForwardCounters = 3;
    private const int BackwardCounters = 2;

    private HostCallStaging(AttentionShape shape, CudaPrimaryContext context, CudaContextScope current)
    {
        this.shape = shape;
        this.context = context;
        this.current = current;
        tileStats = Allocate(ForwardCounters * sizeof(ulong));
    }

    // Where the call writes its counters: computed and skipped tiles, and (the forward) visible pairs.
    public nint TileStats => tileStats.Pointer;

    public static HostCallStaging Begin(int device, AttentionShape shape)
    {
        CudaPrimaryContext context = CudaPrimaryContext.Retain(device);
        CudaContextScope current = default;
        try
        {
            current = context.Push();
            return new HostCallStaging(shape, context, current);
        }
        catch
        {
            current.Dispose();
            context.Dispose();
            throw;
        }
    }

    public DeviceBuffer Upload<T>(ReadOnlySpan<T> values)
        where T : unmanaged => Track(DeviceBuffer.FromHost(context, values));

    public DeviceBuffer Allocate<T>(int length)
        where T : unmanaged => Allocate((long)length * Unsafe.SizeOf<T>());

    public DeviceBuffer Allocate(long byteCount) => Track(DeviceBuffer.Allocate(context, byteCount));

    // A tensor shaped as Q: (B, Lq, Hq, D).
    public DeviceTensor QueryShaped(DeviceBuffer buffer) =>
        DeviceTensor.SequenceMajor(buffer.Pointer, shape.SeqLenQ, shape.HeadsQ, shape.HeadDim);

    // A tensor shaped as K: (B, Lk, Hkv, D).
    public DeviceTensor KeyShaped(DeviceBuffer buffer) =>
        DeviceTensor.SequenceMajor(buffer.Pointer, shape.SeqLenK, shape.HeadsKv, shape.HeadDim);

    public DeviceBroadcastTensor Broadcast(DeviceBuffer buffer, ScalarType dtype, BroadcastShape broadcastShape) =>
        DeviceBroadcastTensor.Contiguous(buffer.Pointer, dtype, broadcastShape, shape.SeqLenK);

    // Q, K and V first, in that order: a call too large for the device fails on these copies, before any output is
    // allocated (FaultGpuTests counts on it).
    public StagedInputs UploadInputs<T>(
        ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, MaskInput mask, LifetimesInput lifetimes, BiasInput bias)
        where T : unmanaged => new(
            QueryShaped(Upload(q)),
            KeyShaped(Upload(k)),
            KeyShaped(Upload(v)),
            mask.IsPresent ? Broadcast(Track(DeviceBuffer.FromHost(context, mask.Operand)), default, mask.Shape) : null,
            lifetimes.IsPresent
                ? DeviceLifetimes.Contiguous(Upload(lifetimes.Data).Pointer, lifetimes.Shape.Batch, lifetimes.Shape.Heads, shape.SeqLenK)
                : null,
            bias.IsPresent ? Broadcast(Track(DeviceBuffer.FromHost(context, bias.Operand)), bias.DType, bias.Shape) : null);

    // Waits for the forward call, then reads the counters it wrote.
    public ForwardStats SynchronizeAndReadForwardStats()
    {
        CudaDriver.Synchronize();
        Span<ulong> counts = stackalloc ulong[ForwardCounters];
        tileStats.CopyTo(counts);
        return new ForwardStats(checked((long)counts[0]), checked((long)counts[1]), checked((long)counts[2]));
    }

    // Waits for the backward call, then reads the tile counts it wrote (not the third counter: it holds whatever the
    // allocation held).
    public TileStats SynchronizeAndReadTileStats()
    {
        CudaDriver.Synchronize();
        Span<ulong> counts = stackalloc ulong[BackwardCounters];
        tileStats.CopyTo(counts);
        return new TileStats(checked((long)counts[0]), checked((long)counts[1]));
    }

    public void Dispose()
    {
        try
        {
            for (int i = buffers.Count - 1; i >= 0; i--)
                buffers[i].Dispose();
        }
        finally
        {
            try
            {
                current.Dispose();
            }
            finally
            {
                context.Dispose();
            }
        }
    }

    private DeviceBuffer Track(DeviceBuffer buffer)
    {
        buffers.Add(buffer);
        return buffer;
    }
}

// Q, K, V, the mask or lifetimes and the bias of a host-span call, on the GPU: the inputs both directions take.
internal readonly record struct StagedInputs(
    DeviceTensor Q, DeviceTensor K, DeviceTensor V, DeviceBroadcastTensor? Mask, DeviceLifetimes? Lifetimes, DeviceBroadcastTensor? Bias);

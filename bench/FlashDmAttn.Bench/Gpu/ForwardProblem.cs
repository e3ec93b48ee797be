using System.Runtime.InteropServices;
using FlashDmAttn.Bench.Inputs;
using FlashDmAttn.Bench.Suite;

namespace FlashDmAttn.Bench.Gpu;

/// <summary>
/// What one launch with statistics found, before timing: the tiles it computed (the backward's, for the gradient rows)
/// and how far the forward's output is from SDPA's.
/// </summary>
internal sealed record ForwardCheck(long TilesComputed, long TilesSkipped, int TileM, int TileN, double? MaxDiffVsSdpa, string? Note);

/// <summary>
/// One row's tensors on the GPU: bf16 Q, K, V (B, L, H, D), the bf16 bias (B, Hkv, 1, Lk), the 8-bit mask (Bm, Hm, Lq, Lk)
/// and the output; for the gradient rows also the log-sum-exp, dO, dQ, dK, dV and the float32 bias gradient. When one set
/// of the forward's tensors fits in L2, several copies are made and forward launches rotate through them.
/// </summary>
internal sealed unsafe class ForwardProblem : IDisposable
{
    private const int MaxCopies = 8;

    private readonly GpuSession gpu;
    private readonly DeviceBuffers buffers;
    private readonly AttentionOptions options = new() { Causal = true };
    private DeviceForwardArgs[] copies = [];
    private DeviceForwardArgs? forwardWithLse;
    private DeviceBackwardArgs? backward;
    private int next;

    private ForwardProblem(GpuSession gpu, BenchCase c)
    {
        this.gpu = gpu;
        buffers = new DeviceBuffers(gpu.Context);
        Case = c;
    }

    public BenchCase Case { get; }

    public MaskStats Mask { get; private set; }

    public InputHashes Hashes { get; private set; } = new(0, 0, 0, 0);

    public int Copies => copies.Length;

    /// <summary>Builds the inputs on the host (the definition shared with bench/masks.py) and uploads them.</summary>
    public static ForwardProblem Create(GpuSession gpu, BenchCase c)
    {
        var problem = new ForwardProblem(gpu, c);
        try
        {
            problem.Upload();
            return problem;
        }
        catch
        {
            problem.Dispose();
            throw;
        }
    }

    private void Upload()
    {
        gpu.MakeCurrent();
        BenchCase c = Case;
        AttentionShape shape = c.Shape;
        RowInputs inputs = RowInputs.Create(c);
        Hashes = inputs.Hashes;

        long qBytes = inputs.Q.Length * 2L, kvBytes = inputs.K.Length * 2L, biasBytes = inputs.Bias.Length * 2L;
        long maskBytes = (long)c.SeqLenQ * c.SeqLenK * c.MaskBatch * c.MaskHeads;
        long setBytes = 2 * qBytes + 2 * kvBytes + biasBytes + maskBytes; // the output is as large as Q
        int copyCount = setBytes < gpu.L2Bytes ? (int)Math.Clamp(2 * gpu.L2Bytes / setBytes + 1, 2, MaxCopies) : 1;
        long needed = copyCount * setBytes, free = gpu.FreeMemory();
        if (needed > free - (1L << 30))
            throw new InsufficientMemoryException($"{c.Id} needs {needed >> 20} MiB of GPU memory; {free >> 20} MiB are free.");

        copies = new DeviceForwardArgs[copyCount];
        DeviceBuffer? firstMask = null;
        for (int copy = 0; copy < copyCount; copy++)
        {
            DeviceBuffer qBuffer = Upload(inputs.Q), kBuffer = Upload(inputs.K), vBuffer = Upload(inputs.V), biasBuffer = Upload(inputs.Bias);
            DeviceBuffer outBuffer = Allocate(qBytes);
            DeviceBuffer maskBuffer = Allocate(maskBytes);
            if (firstMask is null)
            {
                ulong maskAddress = unchecked((ulong)maskBuffer.Pointer);
                Mask = inputs.BuildMask(c, (head, host, bytes) => CudaDriver.ThrowIfFailed(
                    Interop.Cuda.cuMemcpyHtoD_v2(maskAddress + (ulong)(head * bytes), (void*)host, (nuint)bytes)));
                firstMask = maskBuffer;
            }
            else
            {
                CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemcpyDtoD_v2(
                    unchecked((ulong)maskBuffer.Pointer), unchecked((ulong)firstMask.Pointer), (nuint)maskBytes));
            }

            copies[copy] = new DeviceForwardArgs
            {
                Shape = shape,
                DType = ScalarType.BFloat16,
                Q = DeviceTensor.SequenceMajor(qBuffer.Pointer, c.SeqLenQ, c.HeadsQ, c.HeadDim),
                K = DeviceTensor.SequenceMajor(kBuffer.Pointer, c.SeqLenK, c.HeadsKv, c.HeadDim),
                V = DeviceTensor.SequenceMajor(vBuffer.Pointer, c.SeqLenK, c.HeadsKv, c.HeadDim),
                Output = DeviceTensor.SequenceMajor(outBuffer.Pointer, c.SeqLenQ, c.HeadsQ, c.HeadDim),
                Mask = DeviceBroadcastTensor.Contiguous(maskBuffer.Pointer, default, new BroadcastShape(c.MaskBatch, c.MaskHeads, c.SeqLenQ), c.SeqLenK),
                Bias = DeviceBroadcastTensor.Contiguous(biasBuffer.Pointer, ScalarType.BFloat16, new BroadcastShape(c.Batch, c.HeadsKv, 1), c.SeqLenK),
            };
        }

        if (c.Direction != Direction.Forward)
            AllocateGradients(inputs);

        // Pageable uploads may still be in flight on the legacy stream, which the session's stream does not wait for.
        CudaDriver.Synchronize();
        if (forwardWithLse is not null)
        {
            DynamicMaskAttention.Forward(forwardWithLse, options, gpu.Stream); // the output and LSE the backward reads
            gpu.Synchronize();
        }
    }

    // The backward's tensors, beside the first copy of the forward's.
    private void AllocateGradients(RowInputs inputs)
    {
        BenchCase c = Case;
        var dOutput = new ushort[inputs.Q.Length];
        SharedRandom.FillTensor(SharedRandom.OutputGradientTensor, dOutput);
        DeviceForwardArgs first = copies[0];
        forwardWithLse = first with { Lse = Allocate(c.Shape.LseElements * sizeof(float)).Pointer };
        var biasShape = new BroadcastShape(c.Batch, c.HeadsKv, 1);
        backward = new DeviceBackwardArgs
        {
            Forward = forwardWithLse,
            DOutput = DeviceTensor.SequenceMajor(Upload(dOutput).Pointer, c.SeqLenQ, c.HeadsQ, c.HeadDim),
            DQ = DeviceTensor.SequenceMajor(Allocate(inputs.Q.Length * 2L).Pointer, c.SeqLenQ, c.HeadsQ, c.HeadDim),
            DK = DeviceTensor.SequenceMajor(Allocate(inputs.K.Length * 2L).Pointer, c.SeqLenK, c.HeadsKv, c.HeadDim),
            DV = DeviceTensor.SequenceMajor(Allocate(inputs.V.Length * 2L).Pointer, c.SeqLenK, c.HeadsKv, c.HeadDim),
            DBias = DeviceBroadcastTensor.Contiguous(
                Allocate(biasShape.Elements(c.SeqLenK) * sizeof(float)).Pointer, ScalarType.Float32, biasShape, c.SeqLenK),
        };
    }

    /// <summary>
    /// The benchmarked call, through the public device-pointer API on the session's stream: the forward (rotating input
    /// copies), the backward (non-deterministic, the library's default), or both.
    /// </summary>
    public void Launch()
    {
        switch (Case.Direction)
        {
            case Direction.Forward:
                DynamicMaskAttention.Forward(copies[next], options, gpu.Stream);
                next = (next + 1) % copies.Length;
                break;
            case Direction.Backward:
                DynamicMaskAttention.Backward(backward!, options, deterministic: false, gpu.Stream);
                break;
            case Direction.ForwardBackward:
                DynamicMaskAttention.Forward(forwardWithLse!, options, gpu.Stream);
                DynamicMaskAttention.Backward(backward!, options, deterministic: false, gpu.Stream);
                break;
        }
    }

    /// <summary>
    /// One launch with tile statistics on the first copy; compares its output with SDPA's (bench/baselines.py writes it
    /// to <paramref name="sdpaOutput"/>, (B, Lq, Hq, D) bf16) where that file exists. SDPA's NaN rows (a query with no
    /// visible key) are skipped: we define them as zeros.
    /// </summary>
    public ForwardCheck Check(string? sdpaOutput)
    {
        gpu.MakeCurrent();
        DeviceBuffer stats = Allocate(3 * sizeof(ulong)); // the forward's three counters (the backward writes two)
        DynamicMaskAttention.Forward(copies[0] with { TileStats = stats.Pointer }, options, gpu.Stream);
        (int tileM, int tileN) = DynamicMaskAttention.ForwardTileShape(Case.HeadDim, ScalarType.BFloat16);
        if (backward is not null)
        {
            DynamicMaskAttention.Backward(backward with { TileStats = stats.Pointer }, options, deterministic: false, gpu.Stream);
            (tileM, tileN) = DynamicMaskAttention.BackwardTileShape(Case.HeadDim, ScalarType.BFloat16);
        }

        gpu.Synchronize();
        Span<ulong> tiles = stackalloc ulong[2];
        stats.CopyTo(tiles);

        double? maxDiff = null;
        string? note = null;
        if (sdpaOutput is not null && File.Exists(sdpaOutput))
        {
            var ours = new ushort[Case.Shape.QElements];
            CopyToHost(copies[0].Output.Pointer, ours);
            byte[] theirs = File.ReadAllBytes(sdpaOutput);
            if (theirs.Length != ours.Length * 2)
                note = $"SDPA output has {theirs.Length} bytes, expected {ours.Length * 2}";
            else
                (maxDiff, note) = MaxDifference(ours, MemoryMarshal.Cast<byte, ushort>(theirs));
        }

        return new ForwardCheck((long)tiles[0], (long)tiles[1], tileM, tileN, maxDiff, note);
    }

    public void Dispose() => buffers.Dispose();

    private DeviceBuffer Allocate(long bytes) => buffers.Allocate(bytes);

    private DeviceBuffer Upload(ushort[] host)
    {
        DeviceBuffer buffer = Allocate(host.Length * 2L);
        buffer.CopyFrom<ushort>(host);
        return buffer;
    }

    private static void CopyToHost(nint device, ushort[] host)
    {
        fixed (ushort* destination = host)
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemcpyDtoH_v2(destination, unchecked((ulong)device), (nuint)(host.Length * 2L)));
    }

    private static (double? Max, string? Note) MaxDifference(ushort[] ours, ReadOnlySpan<ushort> theirs)
    {
        double max = 0;
        long skipped = 0, oursNonFinite = 0;
        for (int e = 0; e < ours.Length; e++)
        {
            float reference = (float)BFloat16.FromRawValue(theirs[e]);
            float value = (float)BFloat16.FromRawValue(ours[e]);
            if (!float.IsFinite(value))
                oursNonFinite++;
            else if (!float.IsFinite(reference))
                skipped++;
            else
                max = Math.Max(max, Math.Abs(value - reference));
        }

        if (oursNonFinite > 0)
            return (double.NaN, $"{oursNonFinite} non-finite output elements");
        return (max, skipped > 0 ? $"{skipped} elements where SDPA gives NaN (rows with no visible key) not compared" : null);
    }
}

using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using FlashDmAttn.Reference;

namespace FlashDmAttn.Tests.Gpu;

/// <summary>
/// One backward problem: a forward case, the mode, and the type of the bias gradient (asked for whenever the case
/// has a bias): float, or the bias's own type.
/// </summary>
public sealed record BackwardCase(string Name, ForwardCase Forward)
{
    public bool Deterministic { get; init; }
    public bool Float32BiasGradient { get; init; }

    public ScalarType? BiasGradientType => Forward.Bias is null ? null : Float32BiasGradient ? ScalarType.Float32 : Forward.BiasType;

    /// <summary>The forward's label, under this case's name.</summary>
    public string Label => (Forward with { Name = Name }).Label;

    /// <summary>This case, forward and backward, on a backend.</summary>
    public BackwardCase On(FlashDmAttnBackend backend) => this with { Forward = Forward with { Backend = backend } };

    public override string ToString() => Name;
}

/// <summary>dQ, dK, dV as (B, L, H, D) doubles, and dBias in the bias's shape (or null).</summary>
internal sealed record BackwardGradients(double[] Q, double[] K, double[] V, double[]? Bias)
{
    public IEnumerable<(string Name, double[] Values)> Named()
    {
        yield return ("dQ", Q);
        yield return ("dK", K);
        yield return ("dV", V);
        if (Bias is not null)
            yield return ("dBias", Bias);
    }
}

/// <summary>The forward inputs of a case and a random dL/dO, rounded to what the GPU sees.</summary>
internal sealed class BackwardInputs
{
    public BackwardInputs(BackwardCase c, TestRandom random, Func<AttentionShape, BroadcastShape, byte[]>? maskFactory = null)
    {
        Case = c;
        Forward = new ForwardInputs(c.Forward, random, maskFactory);
        DOutput = Tensors.RoundTo(c.Forward.DType, random.Uniform(c.Forward.Shape.QElements, -1, 1));
    }

    public BackwardCase Case { get; }
    public ForwardInputs Forward { get; }
    public double[] DOutput { get; }

    public BackwardGradients Reference()
    {
        ForwardCase f = Case.Forward;
        AttentionShape s = f.Shape;
        var g = new BackwardGradients(new double[s.QElements], new double[s.KvElements], new double[s.KvElements],
            Forward.Bias is null ? null : new double[Forward.Bias.Length]);
        ReferenceAttention.Backward(s, Forward.Q, Forward.K, Forward.V, DOutput, g.Q, g.K, g.V, f.Options,
            Forward.Mask is null ? default : new MaskInput(Forward.Mask, f.Mask!.Value),
            Forward.Bias is null ? default : new ReferenceBias(Forward.Bias, f.Bias!.Value), g.Bias, Forward.LifetimesInput);
        return g;
    }

    /// <summary>The Span API's forward, then its backward on gradients pre-filled with NaN.</summary>
    public (BackwardGradients Gradients, TileStats Stats) RunSpanApi()
    {
        return Case.Forward.DType == ScalarType.Float16 ? Run<Half>() : Run<BFloat16>();

        (BackwardGradients, TileStats) Run<T>() where T : unmanaged
        {
            ForwardCase f = Case.Forward;
            AttentionShape s = f.Shape;
            T[] q = Tensors.Narrow<T>(Forward.Q), k = Tensors.Narrow<T>(Forward.K), v = Tensors.Narrow<T>(Forward.V);
            MaskInput mask = Forward.Mask is null ? default : new MaskInput(Forward.Mask, f.Mask!.Value);
            Array? biasValues = Forward.Bias is null ? null : HostArrays.Narrow(f.BiasType, Forward.Bias);
            BiasInput bias = biasValues is null ? default : HostArrays.Bias(biasValues, f.Bias!.Value);
            T[] output = Tensors.Filled<T>(s.QElements, double.NaN);
            float[] lse = Tensors.Filled<float>(s.LseElements, double.NaN);
            DynamicMaskAttention.Forward<T>(s, q, k, v, output, f.Options, mask, bias, lse, lifetimes: Forward.LifetimesInput);

            T[] dq = Tensors.Filled<T>(s.QElements, double.NaN);
            T[] dk = Tensors.Filled<T>(s.KvElements, double.NaN), dv = Tensors.Filled<T>(s.KvElements, double.NaN);
            Array? dBias = Case.BiasGradientType is { } type ? HostArrays.Narrow(type, Enumerable.Repeat(double.NaN, biasValues!.Length).ToArray()) : null;
            TileStats stats = DynamicMaskAttention.Backward<T>(s, q, k, v, output, lse, Tensors.Narrow<T>(DOutput), dq, dk, dv, f.Options,
                mask, bias, dBias is null ? default : HostArrays.Gradient(dBias), Case.Deterministic, lifetimes: Forward.LifetimesInput);
            return (new BackwardGradients(Tensors.Widen<T>(dq), Tensors.Widen<T>(dk), Tensors.Widen<T>(dv),
                dBias is null ? null : HostArrays.Widen(dBias)), stats);
        }
    }
}

/// <summary>Host arrays of a type chosen at run time (a bias and its gradient), and the Span API's wrappers of them.</summary>
internal static class HostArrays
{
    public static Array Narrow(ScalarType type, double[] values) => type switch
    {
        ScalarType.Float16 => Tensors.Narrow<Half>(values),
        ScalarType.BFloat16 => Tensors.Narrow<BFloat16>(values),
        _ => Tensors.Narrow<float>(values),
    };

    public static double[] Widen(Array values) => values switch
    {
        Half[] half => Tensors.Widen<Half>(half),
        BFloat16[] bf16 => Tensors.Widen<BFloat16>(bf16),
        _ => Tensors.Widen<float>((float[])values),
    };

    public static BiasInput Bias(Array values, BroadcastShape shape) => values switch
    {
        Half[] half => new BiasInput(half, shape),
        BFloat16[] bf16 => new BiasInput(bf16, shape),
        _ => new BiasInput((float[])values, shape),
    };

    public static BiasGradientOutput Gradient(Array values) => values switch
    {
        Half[] half => new BiasGradientOutput(half),
        BFloat16[] bf16 => new BiasGradientOutput(bf16),
        _ => new BiasGradientOutput((float[])values),
    };
}

/// <summary>The pass criteria of GPU gradients against the double reference.</summary>
internal static class BackwardCheck
{
    public static double Bound(ScalarType dtype) => dtype == ScalarType.BFloat16 ? 2e-2 : 5e-3;

    /// <summary>
    /// ||got - ref|| / max(||ref||, 1e-3 sqrt(n)): the floor (an RMS of 1e-3) keeps a gradient that is zero up to
    /// rounding (dQ with one visible key, where P (dP - Delta) cancels exactly) from having a meaningless ratio.
    /// </summary>
    public static double RelativeError(ReadOnlySpan<double> got, ReadOnlySpan<double> expected)
    {
        double diff = 0, reference = 0;
        for (int i = 0; i < got.Length; i++)
        {
            diff += (got[i] - expected[i]) * (got[i] - expected[i]);
            reference += expected[i] * expected[i];
        }

        return Math.Sqrt(diff) / Math.Max(Math.Sqrt(reference), 1e-3 * Math.Sqrt(got.Length));
    }

    /// <summary>
    /// Every gradient fully written (no NaN left from the pre-fill) and within the bound for the type; dQ exactly zero
    /// on query rows without a visible key.
    /// </summary>
    public static void Check(BackwardInputs inputs, BackwardGradients gpu, BackwardGradients reference)
    {
        ForwardCase f = inputs.Case.Forward;
        string context = $"{inputs.Case.Label}; {inputs.Forward.Random}";
        Assert.That(gpu.Bias is null, Is.EqualTo(reference.Bias is null), context);
        foreach (((string name, double[] got), (_, double[] expected)) in gpu.Named().Zip(reference.Named()))
        {
            Assert.That(got, Has.None.NaN, $"{name} not fully written or NaN; {context}");
            double error = RelativeError(got, expected);
            BackwardRunSummary.Record(name, f.DType, inputs.Case.Label, error);
            Assert.That(error, Is.LessThanOrEqualTo(Bound(f.DType)), $"{name}: ||g-ref||/||ref||; {context}");
        }

        (_, double[] refLse) = inputs.Forward.Reference();
        int d = f.Shape.HeadDim, lq = f.Shape.SeqLenQ, hq = f.Shape.HeadsQ;
        for (int row = 0; row < refLse.Length; row++)
        {
            if (!double.IsNegativeInfinity(refLse[row]))
                continue;
            int b = row / (hq * lq), h = row / lq % hq, i = row % lq;
            int start = ((b * lq + i) * hq + h) * d;
            Assert.That(gpu.Q[start..(start + d)], Is.All.EqualTo(0.0), $"dQ of empty row {row}; {context}");
        }
    }

    /// <summary>Two runs' gradients are the same to the bit.</summary>
    public static void AssertSameBits(BackwardGradients actual, BackwardGradients expected, string context)
    {
        foreach (((string name, double[] got), (_, double[] want)) in actual.Named().Zip(expected.Named()))
            Assert.That(got.Select(BitConverter.DoubleToInt64Bits), Is.EqualTo(want.Select(BitConverter.DoubleToInt64Bits)), $"{name}; {context}");
        Assert.That(actual.Bias is null, Is.EqualTo(expected.Bias is null), context);
    }

    /// <summary>Two device-pointer calls wrote the same bytes: every gradient and the tile counts.</summary>
    public static void AssertSameBytes(DeviceBackwardResults actual, DeviceBackwardResults expected, string context)
    {
        Assert.That(actual.DQ, Is.EqualTo(expected.DQ), $"dQ; {context}");
        Assert.That(actual.DK, Is.EqualTo(expected.DK), $"dK; {context}");
        Assert.That(actual.DV, Is.EqualTo(expected.DV), $"dV; {context}");
        Assert.That(actual.DBias, Is.EqualTo(expected.DBias), $"dBias; {context}");
        Assert.That(actual.Stats, Is.EqualTo(expected.Stats), $"tile stats; {context}");
    }

    /// <summary>Computed + skipped must count every backward (query tile, key tile) pair of every batch and query head.</summary>
    public static void CheckTileCount(BackwardCase c, TileStats stats) =>
        Assert.That(stats.Computed + stats.Skipped,
            Is.EqualTo(ForwardCheck.TileCount(c.Forward.Shape, DynamicMaskAttention.BackwardTileShape(c.Forward.Shape.HeadDim, c.Forward.DType, c.Forward.Backend))),
            $"computed {stats.Computed} + skipped {stats.Skipped}; {c.Label}");

    /// <summary>
    /// A random mask of the case's density with every fifth row and every third backward (query tile, key tile) block of
    /// the case's backend blank.
    /// </summary>
    public static Func<AttentionShape, BroadcastShape, byte[]> BlankBackwardTiles(ForwardCase c, TestRandom random) => (s, m) =>
    {
        (int blockM, int blockN) = DynamicMaskAttention.BackwardTileShape(s.HeadDim, c.DType, c.Backend);
        byte[] mask = random.Mask(m.Elements(s.SeqLenK), c.MaskDensity);
        for (int plane = 0; plane < m.Batch * m.Heads; plane++)
            for (int row = 0; row < m.Rows; row++)
                for (int j = 0; j < s.SeqLenK; j++)
                {
                    if ((m.Rows > 1 && row % 5 == 3) || (row / blockM + j / blockN + plane) % 3 == 0)
                        mask[((long)plane * m.Rows + row) * s.SeqLenK + j] = 0;
                }

        return mask;
    };
}

/// <summary>Prints the worst relative error per gradient and element type over the whole GPU run, when it ends.</summary>
[SetUpFixture]
public sealed class BackwardRunSummary
{
    private static readonly ConcurrentDictionary<(string Gradient, ScalarType DType), (double Error, string Case)> Worst = new();

    public static void Record(string gradient, ScalarType dtype, string testCase, double error) =>
        Worst.AddOrUpdate((gradient, dtype), (error, testCase), (_, worst) => error > worst.Error ? (error, testCase) : worst);

    [OneTimeTearDown]
    public void PrintWorstErrors()
    {
        string[] order = ["dQ", "dK", "dV", "dBias"];
        foreach (((string gradient, ScalarType dtype), (double error, string testCase)) in
                 Worst.OrderBy(p => p.Key.DType).ThenBy(p => Array.IndexOf(order, p.Key.Gradient)))
        {
            TestContext.Progress.WriteLine(
                $"GPU backward worst error {dtype} {gradient}: ||g-ref||/||ref|| = {error:E2} (bound {BackwardCheck.Bound(dtype):E0}, {testCase})");
        }
    }
}

/// <summary>What a device-pointer backward call left in its outputs, as raw bytes.</summary>
internal sealed record DeviceBackwardResults(byte[] DQ, byte[] DK, byte[] DV, byte[]? DBias, byte[] TileStatsBytes)
{
    public TileStats Stats => DeviceResults.StatsOf(TileStatsBytes);
}

/// <summary>
/// A backward case in GPU memory for the device-pointer API: the forward problem (Q and O in one layout, K and V in
/// another, padded mask rows and bias heads) run once for O and LSE, dO in Q's layout, dQ, dK, dV in their tensors'
/// layouts and dBias rows stored padding elements apart. Every output starts as 0xFF bytes (NaN in every type), so
/// what a call leaves unwritten shows, and the padding must stay so.
/// </summary>
internal sealed class DeviceBackwardProblem : IDisposable
{
    private readonly DeviceForwardProblem forward;
    private readonly DeviceBuffer dq, dk, dv, tileStats;
    private readonly DeviceBuffer? dBias;
    private readonly Layout qLayout, kvLayout;
    private readonly int dBiasRowStride;
    private readonly bool keyMajorOperands;

    // keyMajorOperands: mask, bias and dBias stored key-major (KeyMajorOperand), without padding.
    public DeviceBackwardProblem(BackwardInputs inputs, Layout qLayout, Layout kvLayout, int maskRowPadding = 0, int biasHeadPadding = 0,
        int dBiasRowPadding = 0, bool keyMajorOperands = false)
    {
        Inputs = inputs;
        this.qLayout = qLayout;
        this.kvLayout = kvLayout;
        this.keyMajorOperands = keyMajorOperands;
        ForwardCase f = inputs.Case.Forward;
        AttentionShape s = f.Shape;
        int elementSize = f.DType.ElementSize();
        forward = new DeviceForwardProblem(inputs.Forward, qLayout, kvLayout, maskRowPadding, biasHeadPadding, keyMajorOperands);
        try
        {
            forward.Run(forward.Args);
            DeviceBuffer dOutput = forward.Allocate(s.QElements * elementSize);
            dOutput.CopyFrom<byte>(DeviceForwardProblem.ToLayout(inputs.DOutput, s.SeqLenQ, s.HeadsQ, s.HeadDim, qLayout, f.DType));
            dq = forward.Allocate(s.QElements * elementSize);
            dk = forward.Allocate(s.KvElements * elementSize);
            dv = forward.Allocate(s.KvElements * elementSize);
            tileStats = forward.Allocate(2 * sizeof(ulong));
            DeviceBroadcastTensor? dBiasTensor = null;
            dBiasRowStride = s.SeqLenK + (keyMajorOperands ? 0 : dBiasRowPadding);
            if (inputs.Case.BiasGradientType is { } type)
            {
                BroadcastShape b = f.Bias!.Value;
                dBias = forward.Allocate((long)b.Batch * b.Heads * b.Rows * dBiasRowStride * type.ElementSize());
                dBiasTensor = keyMajorOperands
                    ? KeyMajorOperand.Of(dBias.Pointer, type, b, s.SeqLenK)
                    : new DeviceBroadcastTensor(dBias.Pointer, type, b, (long)b.Heads * b.Rows * dBiasRowStride, (long)b.Rows * dBiasRowStride, dBiasRowStride);
            }

            ClearResults();
            DeviceForwardArgs a = forward.Args;
            Args = new DeviceBackwardArgs
            {
                Forward = a,
                DOutput = DeviceForwardProblem.Tensor(dOutput.Pointer, s.SeqLenQ, s.HeadsQ, s.HeadDim, qLayout),
                DQ = DeviceForwardProblem.Tensor(dq.Pointer, s.SeqLenQ, s.HeadsQ, s.HeadDim, qLayout),
                DK = DeviceForwardProblem.Tensor(dk.Pointer, s.SeqLenK, s.HeadsKv, s.HeadDim, kvLayout),
                DV = DeviceForwardProblem.Tensor(dv.Pointer, s.SeqLenK, s.HeadsKv, s.HeadDim, kvLayout),
                DBias = dBiasTensor,
                TileStats = tileStats.Pointer,
            };
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public BackwardInputs Inputs { get; }

    /// <summary>The backward call on the forward's tensors, writing the problem's gradients and tile statistics.</summary>
    public DeviceBackwardArgs Args { get; }

    public DeviceBuffer Allocate(long byteCount) => forward.Allocate(byteCount);

    /// <summary>The problem's buffer at a device address of its arguments (see <see cref="DeviceForwardProblem.BufferAt"/>).</summary>
    public DeviceBuffer BufferAt(nint pointer) => forward.BufferAt(pointer);

    /// <summary>A forward output of this problem's shape and Q layout as (B, Lq, Hq, D) doubles.</summary>
    public double[] OutputValues(DeviceResults results) => forward.OutputValues(results);

    /// <summary>Runs the device-pointer API with the case's options and mode, and waits for it.</summary>
    public void Run(DeviceBackwardArgs args)
    {
        using CudaPrimaryContext context = CudaPrimaryContext.Retain(0); // the problem's buffers hold it too: no new context
        using CudaContextScope current = context.Push();
        DynamicMaskAttention.Backward(args, Inputs.Case.Forward.Options, Inputs.Case.Deterministic);
        CudaDriver.Synchronize();
    }

    public void ClearResults()
    {
        foreach (DeviceBuffer? buffer in new[] { dq, dk, dv, dBias, tileStats })
            buffer?.Fill(0xFF);
    }

    public DeviceBackwardResults Read() => new(
        DeviceForwardProblem.Read(dq), DeviceForwardProblem.Read(dk), DeviceForwardProblem.Read(dv),
        dBias is null ? null : DeviceForwardProblem.Read(dBias), DeviceForwardProblem.Read(tileStats));

    /// <summary>The gradients as (B, L, H, D) doubles and dBias without its padding, whatever the layouts.</summary>
    public BackwardGradients Values(DeviceBackwardResults results)
    {
        AttentionShape s = Inputs.Case.Forward.Shape;
        ScalarType dtype = Inputs.Case.Forward.DType;
        double[]? dBiasValues = null;
        if (results.DBias is { } bytes)
        {
            double[] padded = Widen(bytes, Inputs.Case.BiasGradientType!.Value);
            int lk = s.SeqLenK, rows = padded.Length / dBiasRowStride;
            dBiasValues = new double[rows * lk];
            for (int row = 0; row < rows; row++)
                Array.Copy(padded, row * dBiasRowStride, dBiasValues, row * lk, lk);
            if (keyMajorOperands)
                dBiasValues = KeyMajorOperand.Restore(dBiasValues, Inputs.Case.Forward.Bias!.Value, lk);
        }

        return new BackwardGradients(
            InSequenceMajor(Widen(results.DQ, dtype), s.SeqLenQ, s.HeadsQ, s.HeadDim, qLayout),
            InSequenceMajor(Widen(results.DK, dtype), s.SeqLenK, s.HeadsKv, s.HeadDim, kvLayout),
            InSequenceMajor(Widen(results.DV, dtype), s.SeqLenK, s.HeadsKv, s.HeadDim, kvLayout),
            dBiasValues);
    }

    /// <summary>The bytes between dBias rows, which the call must leave as 0xFF.</summary>
    public IEnumerable<byte> DBiasPadding(DeviceBackwardResults results)
    {
        if (results.DBias is not { } bytes)
            yield break;
        int elementSize = Inputs.Case.BiasGradientType!.Value.ElementSize();
        int lk = Inputs.Case.Forward.Shape.SeqLenK, rowBytes = dBiasRowStride * elementSize;
        for (int start = 0; start < bytes.Length; start += rowBytes)
            for (int n = start + lk * elementSize; n < start + rowBytes; n++)
                yield return bytes[n];
    }

    public void Dispose() => forward.Dispose();

    private static double[] Widen(byte[] bytes, ScalarType type) => type switch
    {
        ScalarType.Float16 => Tensors.Widen<Half>(MemoryMarshal.Cast<byte, Half>(bytes)),
        ScalarType.BFloat16 => Tensors.Widen<BFloat16>(MemoryMarshal.Cast<byte, BFloat16>(bytes)),
        _ => Tensors.Widen<float>(MemoryMarshal.Cast<byte, float>(bytes)),
    };

    private static double[] InSequenceMajor(double[] values, int seqLen, int heads, int headDim, Layout layout) =>
        layout == Layout.SequenceMajor ? values : DeviceForwardProblem.Transpose(values, heads, seqLen, headDim);
}

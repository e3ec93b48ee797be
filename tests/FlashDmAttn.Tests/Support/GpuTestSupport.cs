using System.Collections.Concurrent;
using FlashDmAttn.Reference;

namespace FlashDmAttn.Tests.Gpu;

/// <summary>What the forward and backward GPU suites build their matrices of cases from, and name them by.</summary>
internal static class GpuCaseMatrix
{
    public static readonly ScalarType[] DTypes = [ScalarType.Float16, ScalarType.BFloat16];
    public static readonly int[] HeadDims = [32, 64, 96, 128, 192, 256];

    /// <summary>The masks of the density sweeps: dense, sparse, and random with blank rows and tiles.</summary>
    public static readonly (string Name, double Density, bool Blank)[] MaskDensities =
        [("dense", 1, false), ("sparse 10%", 0.1, false), ("sparse 1%", 0.01, false), ("blank rows and tiles", 0.5, true)];

    /// <summary>The element types in turn, so that a sweep of another dimension still covers both.</summary>
    public static ScalarType Alternate(int n) => DTypes[n % 2];

    public static string Short(ScalarType t) => t switch { ScalarType.Float16 => "fp16", ScalarType.BFloat16 => "bf16", _ => "fp32" };
}

/// <summary>Base of every GPU test (each marked [Category("Gpu")]): skips, with the driver's reason, where no CUDA device is usable.</summary>
public abstract class GpuTest
{
    private static readonly Lazy<(bool Available, string Reason)> Cuda = new(() =>
    {
        bool available = DynamicMaskAttention.IsCudaAvailable(out string reason);
        return (available, reason);
    });

    [SetUp]
    public void RequireCuda()
    {
        if (!Cuda.Value.Available)
            Assert.Ignore($"no usable CUDA device: {Cuda.Value.Reason}");
    }
}

/// <summary>
/// Base of a GPU suite that runs once per backend: a [TestFixture] for each, the backend its argument, and every case
/// of the suite put on it (cases name no backend, so that one list serves both). The NVRTC fixture skips, with the
/// loader's reason, where NVRTC is missing.
/// </summary>
public abstract class BackendGpuTest(FlashDmAttnBackend backend) : GpuTest
{
    protected FlashDmAttnBackend Backend => backend;

    [SetUp]
    public void RequireTheBackend()
    {
        if (backend == FlashDmAttnBackend.Nvrtc)
            NvrtcAvailability.Require();
    }
}

/// <summary>Prints the worst errors seen over the whole GPU run, per element type, when the run ends.</summary>
[SetUpFixture]
public sealed class GpuRunSummary
{
    private static readonly ConcurrentDictionary<ScalarType, (double Output, string OutputCase, double Lse, string LseCase)> Worst = new();

    public static void Record(ScalarType dtype, string testCase, double outputError, double lseError) =>
        Worst.AddOrUpdate(dtype, (outputError, testCase, lseError, testCase), (_, w) => (
            outputError > w.Output ? outputError : w.Output, outputError > w.Output ? testCase : w.OutputCase,
            lseError > w.Lse ? lseError : w.Lse, lseError > w.Lse ? testCase : w.LseCase));

    [OneTimeTearDown]
    public void PrintWorstErrors()
    {
        foreach ((ScalarType dtype, var w) in Worst.OrderBy(p => p.Key))
        {
            TestContext.Progress.WriteLine(
                $"GPU worst error {dtype}: ||O-ref||/||ref|| = {w.Output:E2} (bound {ForwardCheck.OutputBound(dtype):E0}, {w.OutputCase}); "
                + $"max |LSE-ref| = {w.Lse:E2} (bound {ForwardCheck.LseBound:E0}, {w.LseCase})");
        }
    }
}

/// <summary>
/// One forward problem: its description (what a test case names) and the random inputs drawn for it, rounded to
/// the types the GPU sees, so the double reference computes from exactly the same numbers.
/// </summary>
public sealed record ForwardCase(string Name, ScalarType DType, AttentionShape Shape)
{
    public bool Causal { get; init; }
    public float Softcap { get; init; }
    public float? Scale { get; init; }
    public BroadcastShape? Mask { get; init; }
    public double MaskDensity { get; init; } = 0.5;

    /// <summary>Key lifetimes of this (batch, heads, 1) shape instead of a mask (<see cref="TestRandom.Lifetimes"/>).</summary>
    public BroadcastShape? Lifetimes { get; init; }

    /// <summary>Also blanks every fifth stored mask row and every third (query tile, key tile) block.</summary>
    public bool BlankRowsAndTiles { get; init; }

    public BroadcastShape? Bias { get; init; }
    public ScalarType BiasType { get; init; } = ScalarType.Float32;

    /// <summary>The backend to run on; <c>null</c> for the process's choice (FLASHDMATTN_BACKEND, else Auto).</summary>
    public FlashDmAttnBackend? Backend { get; init; }

    public AttentionOptions Options => new() { Causal = Causal, Softcap = Softcap, SoftmaxScale = Scale, Backend = Backend };

    /// <summary>The name, and the backend where the case sets one: what messages and the worst-error summary call the case.</summary>
    public string Label => Backend is { } backend ? $"{Name} on {backend}" : Name;

    public override string ToString() => Name;
}

internal sealed class ForwardInputs
{
    public ForwardInputs(ForwardCase c, TestRandom random, Func<AttentionShape, BroadcastShape, byte[]>? maskFactory = null)
    {
        Case = c;
        Random = random;
        AttentionShape s = c.Shape;
        Q = Tensors.RoundTo(c.DType, random.Uniform(s.QElements, -0.5, 1.5));
        K = Tensors.RoundTo(c.DType, random.Uniform(s.KvElements, -0.5, 1.5));
        V = Tensors.RoundTo(c.DType, random.Uniform(s.KvElements, -1, 2));
        if (c.Mask is { } maskShape)
        {
            Mask = maskFactory?.Invoke(s, maskShape) ?? random.Mask(maskShape.Elements(s.SeqLenK), c.MaskDensity);
            if (c.BlankRowsAndTiles)
                BlankRowsAndTiles(Mask, maskShape, s, DynamicMaskAttention.ForwardTileShape(s.HeadDim, c.DType, c.Backend));
        }

        if (c.Lifetimes is { } lifetimesShape)
            Lifetimes = random.Lifetimes(lifetimesShape, s.SeqLenQ, s.SeqLenK);
        if (c.Bias is { } biasShape)
            Bias = Tensors.RoundTo(c.BiasType, random.Uniform(biasShape.Elements(s.SeqLenK), -2, 1));
    }

    public ForwardCase Case { get; }
    public TestRandom Random { get; }
    public double[] Q { get; }
    public double[] K { get; }
    public double[] V { get; }
    public byte[]? Mask { get; }
    public KeyLifetime[]? Lifetimes { get; }
    public double[]? Bias { get; }

    /// <summary>The lifetimes as the Span API and the reference take them; default for none.</summary>
    public LifetimesInput LifetimesInput => Lifetimes is null ? default : new LifetimesInput(Lifetimes, Case.Lifetimes!.Value.Batch, Case.Lifetimes!.Value.Heads);

    public (double[] Output, double[] Lse) Reference()
    {
        AttentionShape s = Case.Shape;
        var output = new double[s.QElements];
        var lse = new double[s.LseElements];
        ReferenceAttention.Forward(s, Q, K, V, output, Case.Options,
            Mask is null ? default : new MaskInput(Mask, Case.Mask!.Value),
            Bias is null ? default : new ReferenceBias(Bias, Case.Bias!.Value), lse, LifetimesInput);
        return (output, lse);
    }

    /// <summary>The counters of the last <see cref="RunSpanApi"/>, visible pairs included.</summary>
    public ForwardStats LastStats { get; private set; }

    /// <summary>
    /// The (query, key) pairs visible under the mask or lifetimes and causality, over every batch and query head: what
    /// the forward's third counter must count.
    /// </summary>
    public long VisiblePairs()
    {
        AttentionShape s = Case.Shape;
        int lq = s.SeqLenQ, lk = s.SeqLenK, group = s.HeadsQ / s.HeadsKv;
        long count = 0;
        for (int b = 0; b < s.Batch; b++)
        for (int h = 0; h < s.HeadsQ; h++)
        for (int i = 0; i < lq; i++)
        for (int j = 0; j < lk; j++)
        {
            if (Case.Causal && j > (long)i + lk - lq)
                continue;
            if (Case.Mask is { } m && Mask![((long)Plane(m, b, h, group) * m.Rows + (m.Rows == 1 ? 0 : i)) * lk + j] == 0)
                continue;
            if (Case.Lifetimes is { } l && Lifetimes![(long)Plane(l, b, h, group) * lk + j] is var pair && !(pair.First <= i && i < pair.End))
                continue;
            count++;
        }

        return count;
    }

    // The (batch, head) plane of a broadcast operand that query head h of batch b reads.
    private int Plane(BroadcastShape operand, int b, int h, int group) =>
        (operand.Batch == 1 ? 0 : b) * operand.Heads + (operand.Heads == Case.Shape.HeadsQ ? h : operand.Heads == 1 ? 0 : h / group);

    /// <summary>Runs the Span API on these inputs, output and LSE pre-filled with NaN.</summary>
    public (double[] Output, double[] Lse, TileStats Stats) RunSpanApi()
    {
        return Case.DType == ScalarType.Float16 ? Run<Half>() : Run<BFloat16>();

        (double[], double[], TileStats) Run<T>() where T : unmanaged
        {
            AttentionShape s = Case.Shape;
            T[] output = Tensors.Filled<T>(s.QElements, double.NaN);
            float[] lse = Enumerable.Repeat(float.NaN, (int)s.LseElements).ToArray();
            T[] q = Tensors.Narrow<T>(Q), k = Tensors.Narrow<T>(K), v = Tensors.Narrow<T>(V);
            MaskInput mask = Mask is null ? default : new MaskInput(Mask, Case.Mask!.Value);
            BroadcastShape biasShape = Case.Bias ?? default;
            Array? biasValues = Bias is null ? null : HostArrays.Narrow(Case.BiasType, Bias);
            ForwardStats stats = DynamicMaskAttention.Forward<T>(s, q, k, v, output, Case.Options, mask,
                biasValues is null ? default : HostArrays.Bias(biasValues, biasShape), lse, lifetimes: LifetimesInput);
            LastStats = stats;
            return (Tensors.Widen<T>(output), lse.Select(x => (double)x).ToArray(), stats.Tiles);
        }
    }

    private static void BlankRowsAndTiles(byte[] mask, BroadcastShape m, AttentionShape s, (int BlockM, int BlockN) tile)
    {
        int lk = s.SeqLenK;
        for (int plane = 0; plane < m.Batch * m.Heads; plane++)
            for (int row = 0; row < m.Rows; row++)
                for (int j = 0; j < lk; j++)
                {
                    bool blankRow = m.Rows > 1 && row % 5 == 3;
                    bool blankTile = (row / tile.BlockM + j / tile.BlockN + plane) % 3 == 0;
                    if (blankRow || blankTile)
                        mask[((long)plane * m.Rows + row) * lk + j] = 0;
                }
    }
}

/// <summary>The pass criteria of a GPU result against the double reference.</summary>
internal static class ForwardCheck
{
    public const double LseBound = 1e-3;

    public static double OutputBound(ScalarType dtype) => dtype == ScalarType.BFloat16 ? 1e-2 : 2e-3;

    /// <summary>
    /// ||O-ref||/||ref|| within the bound for the type; every output written (no NaN left from the pre-fill) and
    /// exactly zero on empty rows; LSE within 1e-3 where finite and exactly -inf on empty rows.
    /// </summary>
    public static void Check(ForwardInputs inputs, double[] output, double[] lse, double[] refOutput, double[] refLse)
    {
        ForwardCase c = inputs.Case;
        string context = $"{c.Label}; {inputs.Random}";
        int d = c.Shape.HeadDim, lq = c.Shape.SeqLenQ, hq = c.Shape.HeadsQ;

        Assert.That(output, Has.None.NaN, $"output not fully written or NaN; {context}");
        double outputError = ErrorNorms.RelativeL2(output, refOutput);
        double lseError = ErrorNorms.MaxAbsFinite(lse, refLse);
        GpuRunSummary.Record(c.DType, c.Label, outputError, lseError);

        Assert.That(outputError, Is.LessThanOrEqualTo(OutputBound(c.DType)), $"||O-ref||/||ref||; {context}");
        Assert.That(lseError, Is.LessThanOrEqualTo(LseBound), $"max |LSE-ref| over finite rows; {context}");
        for (int row = 0; row < refLse.Length; row++)
        {
            if (!double.IsNegativeInfinity(refLse[row]))
            {
                Assert.That(double.IsFinite(lse[row]), $"LSE row {row} = {lse[row]}, reference {refLse[row]}; {context}");
                continue;
            }

            Assert.That(lse[row], Is.EqualTo(double.NegativeInfinity), $"LSE of empty row {row}; {context}");
            int b = row / (hq * lq), h = row / lq % hq, i = row % lq;
            int start = ((b * lq + i) * hq + h) * d;
            Assert.That(output[start..(start + d)], Is.All.EqualTo(0.0), $"output of empty row {row}; {context}");
        }
    }

    /// <summary>Two runs' output, LSE and tile statistics are the same to the bit.</summary>
    public static void AssertSameBits((double[] Output, double[] Lse, TileStats Stats) actual, (double[] Output, double[] Lse, TileStats Stats) expected,
        string context)
    {
        Assert.That(actual.Output.Select(BitConverter.DoubleToInt64Bits), Is.EqualTo(expected.Output.Select(BitConverter.DoubleToInt64Bits)), $"output; {context}");
        Assert.That(actual.Lse.Select(BitConverter.DoubleToInt64Bits), Is.EqualTo(expected.Lse.Select(BitConverter.DoubleToInt64Bits)), $"LSE; {context}");
        Assert.That(actual.Stats, Is.EqualTo(expected.Stats), $"tile stats; {context}");
    }

    /// <summary>Computed + skipped must count every forward (query tile, key tile) pair of every batch and query head.</summary>
    public static void CheckTileCount(ForwardCase c, TileStats stats) =>
        Assert.That(stats.Computed + stats.Skipped,
            Is.EqualTo(TileCount(c.Shape, DynamicMaskAttention.ForwardTileShape(c.Shape.HeadDim, c.DType, c.Backend))),
            $"computed {stats.Computed} + skipped {stats.Skipped}; {c.Label}");

    /// <summary>The (query tile, key tile) pairs of every batch and query head, for tiles of the given shape.</summary>
    public static long TileCount(AttentionShape s, (int BlockM, int BlockN) tile) =>
        (long)s.Batch * s.HeadsQ * ((s.SeqLenQ + tile.BlockM - 1) / tile.BlockM) * ((s.SeqLenK + tile.BlockN - 1) / tile.BlockN);
}

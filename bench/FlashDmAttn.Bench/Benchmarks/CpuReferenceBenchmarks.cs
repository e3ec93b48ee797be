using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using FlashDmAttn.Bench.Inputs;
using FlashDmAttn.Bench.Suite;
using FlashDmAttn.Bench.Timing;
using FlashDmAttn.Reference;

namespace FlashDmAttn.Bench.Benchmarks;

/// <summary>
/// Where no CUDA device exists: the double-precision CPU reference on one small row with the suite's inputs and a
/// sliding-window mask, through the same BenchmarkDotNet setup (host time per call), so the command still shows
/// the library working.
/// </summary>
public class CpuReferenceBenchmarks
{
    public static readonly BenchCase Row = new("cpu", "cpu-L256-swa", Direction.Forward, 1, 256, 256, 2, 1, 64, MaskFamily.SlidingWindow, 64);

    private RowInputs inputs = null!;
    private BFloat16[] output = [];
    private byte[] mask = [];

    /// <summary>Share of visible (query, key) pairs, for the closing line.</summary>
    internal static double VisibleShare { get; private set; }

    [GlobalSetup]
    public void Setup()
    {
        inputs = RowInputs.Create(Row);
        output = new BFloat16[Row.Shape.QElements];
        mask = new byte[Row.SeqLenQ * Row.SeqLenK];
        MaskStats stats = inputs.BuildMask(Row, (_, host, bytes) => Marshal.Copy(host, mask, 0, (int)bytes));
        VisibleShare = (double)stats.Visible / mask.Length;
        LaunchTiming.Timer = new StopwatchTimer();
    }

    [Benchmark(Description = "reference forward")]
    public void Forward() => ReferenceAttention.Forward<BFloat16>(
        Row.Shape, Bits(inputs.Q), Bits(inputs.K), Bits(inputs.V), output, new AttentionOptions { Causal = true },
        new MaskInput(mask, new BroadcastShape(1, 1, Row.SeqLenQ)),
        new BiasInput(Bits(inputs.Bias), new BroadcastShape(Row.Batch, Row.HeadsKv, 1)));

    [GlobalCleanup]
    public void Cleanup() => LaunchTiming.Timer = null;

    private static ReadOnlySpan<BFloat16> Bits(ushort[] bits) => MemoryMarshal.Cast<ushort, BFloat16>(bits);
}

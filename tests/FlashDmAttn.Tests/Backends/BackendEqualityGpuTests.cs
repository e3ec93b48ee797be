using System.Diagnostics;

namespace FlashDmAttn.Tests.Gpu;

/// <summary>
/// The NVRTC backend gives the native library's bits on the same inputs. Forward: output, LSE and tile statistics
/// through the Span and device-pointer APIs (mask, bias, causality, softcap, caller scratch) and on the 8K case.
/// Backward, on one forward result: in deterministic mode the bits of dQ, dK, dV, dBias and the tile statistics; in the
/// default mode, where dQ is summed by atomics in no fixed order, the bits of what no atomic touches (dK, dV, the
/// statistics) and every gradient within the reference's bounds. Over mask, bias broadcasts with dBias of each type,
/// causality, softcap, GQA, head dims 64, 128 and 256, both tensor layouts, caller scratch; then the refusal of too
/// small a scratch and the 8K case. Each backend against the reference is ForwardGpuTests' and BackwardGpuTests' work.
/// </summary>
[Category("Gpu")]
public class BackendEqualityGpuTests : GpuTest
{
    // ---- forward ----

    private static IEnumerable<ForwardCase> ForwardCases() =>
    [
        new("fp16 D32 plain", ScalarType.Float16, new(2, 97, 130, 4, 2, 32)),
        new("bf16 D64 causal mask bias", ScalarType.BFloat16, new(2, 97, 130, 4, 2, 64)) { Causal = true, Mask = new(2, 2, 97), Bias = new(1, 4, 97) },
        new("fp16 D96 softcap scale mask bf16 bias", ScalarType.Float16, new(2, 97, 130, 4, 4, 96))
            { Causal = true, Softcap = 2, Scale = 0.05f, Mask = new(1, 4, 97), Bias = new(2, 4, 97), BiasType = ScalarType.BFloat16 },
        new("bf16 D128 blank rows and tiles", ScalarType.BFloat16, new(2, 300, 333, 2, 1, 128))
            { Causal = true, Mask = new(2, 1, 300), BlankRowsAndTiles = true, Bias = new(1, 2, 1) },
        new("fp16 D192 fp16 bias", ScalarType.Float16, new(1, 257, 257, 2, 2, 192)) { Bias = new(1, 2, 257), BiasType = ScalarType.Float16 },
        new("bf16 D256 decode mask", ScalarType.BFloat16, new(2, 1, 1025, 4, 1, 256)) { Causal = true, Mask = new(2, 4, 1), MaskDensity = 0.3 },
        new("bf16 D128 decode, GQA heads packed, mask and bias per kv head", ScalarType.BFloat16, new(2, 1, 3000, 8, 2, 128))
            { Mask = new(2, 2, 1), MaskDensity = 0.3, Bias = new(1, 2, 1) },
        new("fp16 D64 speculative decode, 5 queries", ScalarType.Float16, new(1, 5, 700, 4, 2, 64)) { Causal = true, Bias = new(1, 4, 5) },
        new("fp16 D128 Lq > Lk causal (empty rows) shared mask", ScalarType.Float16, new(1, 130, 97, 2, 2, 128)) { Causal = true, Mask = new(1, 1, 1) },
    ];

    private static IEnumerable<TestCaseData> ForwardSpanCases() => ForwardCases().Select(c => new TestCaseData(c).SetArgDisplayNames(c.Name));

    [TestCaseSource(nameof(ForwardSpanCases))]
    public void ForwardSpanApi_GivesTheNativeLibrarysBits(ForwardCase c)
    {
        int seed = new TestRandom().Seed;
        var native = new ForwardInputs(c with { Backend = FlashDmAttnBackend.Native }, new TestRandom(seed)).RunSpanApi();
        var nvrtc = new ForwardInputs(c with { Backend = FlashDmAttnBackend.Nvrtc }, new TestRandom(seed)).RunSpanApi();

        ForwardCheck.AssertSameBits(nvrtc, native, $"{c.Name}; seed {seed}");
    }

    [TestCase(ScalarType.BFloat16, Layout.HeadMajor, Layout.SequenceMajor, false)]
    [TestCase(ScalarType.Float16, Layout.SequenceMajor, Layout.HeadMajor, true)]
    public void ForwardDeviceApi_GivesTheNativeLibrarysBits(ScalarType dtype, Layout qLayout, Layout kvLayout, bool callerWorkspace)
    {
        var c = new ForwardCase($"{dtype} device", dtype, new(2, 97, 130, 4, 2, 128))
            { Causal = true, Mask = new(2, 2, 97), Bias = new(1, 4, 97), BiasType = ScalarType.Float32 };
        int seed = new TestRandom().Seed;
        DeviceResults Run(FlashDmAttnBackend backend)
        {
            using var problem = new DeviceForwardProblem(new ForwardInputs(c with { Backend = backend }, new TestRandom(seed)),
                qLayout, kvLayout, maskRowPadding: 6, biasHeadPadding: 40);
            DeviceForwardArgs args = problem.Args;
            if (callerWorkspace)
            {
                long bytes = DynamicMaskAttention.ForwardWorkspaceSize(c.Shape, dtype, c.Mask, backend);
                DeviceBuffer workspace = problem.Allocate(bytes);
                workspace.Fill(0xA5);
                args = args with { Workspace = workspace.Pointer, WorkspaceBytes = bytes };
            }

            problem.Run(args);
            return problem.Read();
        }

        DeviceResults native = Run(FlashDmAttnBackend.Native), nvrtc = Run(FlashDmAttnBackend.Nvrtc);

        Assert.That(nvrtc.OutputBytes, Is.EqualTo(native.OutputBytes), $"output; seed {seed}");
        Assert.That(nvrtc.LseBytes, Is.EqualTo(native.LseBytes), $"LSE; seed {seed}");
        Assert.That(nvrtc.Stats, Is.EqualTo(native.Stats), $"tile stats; seed {seed}");
    }

    [Test]
    public void Forward8KCase_GivesTheNativeLibrarysBits()
    {
        ForwardCase c = EightKCase.Forward;
        int seed = new TestRandom().Seed;
        var clock = Stopwatch.StartNew();
        var native = new ForwardInputs(c with { Backend = FlashDmAttnBackend.Native }, new TestRandom(seed), EightKCase.SlidingWindow).RunSpanApi();
        double nativeMs = clock.Elapsed.TotalMilliseconds;
        clock.Restart();
        var nvrtc = new ForwardInputs(c with { Backend = FlashDmAttnBackend.Nvrtc }, new TestRandom(seed), EightKCase.SlidingWindow).RunSpanApi();
        double nvrtcMs = clock.Elapsed.TotalMilliseconds;

        ForwardCheck.AssertSameBits(nvrtc, native, $"seed {seed}");
        TestContext.Progress.WriteLine($"8K case through the Span API (inputs drawn and copied, kernels cached in-process): native {nativeMs:F0} ms, NVRTC {nvrtcMs:F0} ms; {nvrtc.Stats}");
    }

    // ---- backward ----

    // Few (type, head dim) pairs, each with several features: every one costs NVRTC a few kernels on a fresh machine.
    private static IEnumerable<(BackwardCase Case, Layout Q, Layout Kv, bool CallerWorkspace)> BackwardCases() =>
    [
        (new BackwardCase("bf16 D128 GQA 4:2 causal mask 2x2x97 bias 1x4x97 dBias fp32",
            new ForwardCase("", ScalarType.BFloat16, new(2, 97, 130, 4, 2, 128)) { Causal = true, Mask = new(2, 2, 97), Bias = new(1, 4, 97) })
            { Float32BiasGradient = true }, Layout.SequenceMajor, Layout.SequenceMajor, false),
        (new BackwardCase("bf16 D128 Lq > Lk causal (empty rows) shared mask, bias 2x1x1 bf16 dBias bf16, head-major",
            new ForwardCase("", ScalarType.BFloat16, new(2, 130, 97, 4, 2, 128))
                { Causal = true, Mask = new(1, 1, 1), MaskDensity = 0.7, Bias = new(2, 1, 1), BiasType = ScalarType.BFloat16 }),
            Layout.HeadMajor, Layout.SequenceMajor, true),
        (new BackwardCase("fp16 D64 GQA 8:1 softcap scale mask 1x1x200 bias 1x1x1 fp16 dBias fp16",
            new ForwardCase("", ScalarType.Float16, new(1, 200, 250, 8, 1, 64))
                { Softcap = 2, Scale = 0.05f, Mask = new(1, 1, 200), BlankRowsAndTiles = true, Bias = new(1, 1, 1), BiasType = ScalarType.Float16 }),
            Layout.SequenceMajor, Layout.HeadMajor, false),
        (new BackwardCase("fp16 D64 plain", new ForwardCase("", ScalarType.Float16, new(2, 65, 65, 2, 2, 64))),
            Layout.SequenceMajor, Layout.SequenceMajor, true),
        (new BackwardCase("bf16 D256 causal softcap mask 1x2x97 bias 2x2x97 fp16 dBias fp32",
            new ForwardCase("", ScalarType.BFloat16, new(2, 97, 200, 4, 2, 256))
                { Causal = true, Softcap = 5, Mask = new(1, 2, 97), Bias = new(2, 2, 97), BiasType = ScalarType.Float16 })
            { Float32BiasGradient = true }, Layout.HeadMajor, Layout.HeadMajor, false),
    ];

    private static IEnumerable<TestCaseData> DeterministicCases() =>
        BackwardCases().Select(c => new TestCaseData(c.Case with { Name = c.Case.Name + " det", Deterministic = true }, c.Q, c.Kv, c.CallerWorkspace)
            .SetArgDisplayNames(c.Case.Name + " det"));

    // The default mode at the head dims the deterministic cases cover.
    private static IEnumerable<TestCaseData> DefaultModeCases() =>
        BackwardCases().Where((_, i) => i is 0 or 2 or 4)
            .Select(c => new TestCaseData(c.Case, c.Q, c.Kv, c.CallerWorkspace).SetArgDisplayNames(c.Case.Name));

    [TestCaseSource(nameof(DeterministicCases))]
    public void BackwardDeterministic_GivesTheNativeLibrarysBits(BackwardCase c, Layout qLayout, Layout kvLayout, bool callerWorkspace)
    {
        (BackwardInputs inputs, DeviceBackwardResults native, DeviceBackwardResults nvrtc, _) = RunBoth(c, qLayout, kvLayout, callerWorkspace);

        BackwardCheck.AssertSameBytes(nvrtc, native, $"{c.Name}; {inputs.Forward.Random}");
        TestContext.Progress.WriteLine($"NVRTC backward, same bits as native: {c.Name}; {nvrtc.Stats}");
    }

    [TestCaseSource(nameof(DefaultModeCases))]
    public void BackwardDefaultMode_MatchesTheReference_AndTheNativeBitsOfWhatNoAtomicSums(BackwardCase c, Layout qLayout, Layout kvLayout, bool callerWorkspace)
    {
        (BackwardInputs inputs, DeviceBackwardResults native, DeviceBackwardResults nvrtc, BackwardGradients gradients) =
            RunBoth(c, qLayout, kvLayout, callerWorkspace);
        string context = $"{c.Name}; {inputs.Forward.Random}";

        // dQ has no bits to compare: the reference checks it (BackwardGpuTests runs no default-mode case at D256).
        BackwardCheck.Check(inputs, gradients, inputs.Reference());
        Assert.That(nvrtc.DK, Is.EqualTo(native.DK), $"dK (no atomics in either mode); {context}");
        Assert.That(nvrtc.DV, Is.EqualTo(native.DV), $"dV (no atomics in either mode); {context}");
        Assert.That(nvrtc.Stats, Is.EqualTo(native.Stats), $"tile stats; {context}");
    }

    [TestCase(ScalarType.Float16, false, 1)]
    [TestCase(ScalarType.BFloat16, true, 16)]
    public void BackwardTooSmallWorkspace_IsRefusedAsTheNativeLibraryRefusesIt_AndWritesNothing(ScalarType dtype, bool deterministic, long shortBy)
    {
        var c = new BackwardCase($"{dtype} mask 2x2x97", new ForwardCase("", dtype, new(2, 97, 130, 4, 2, 64)) { Mask = new(2, 2, 97) })
            { Deterministic = deterministic };
        using var problem = new DeviceBackwardProblem(new BackwardInputs(c.On(FlashDmAttnBackend.Native), new TestRandom()), Layout.SequenceMajor, Layout.SequenceMajor);
        long needed = DynamicMaskAttention.BackwardWorkspaceSize(c.Forward.Shape, dtype, c.Forward.Mask, null, deterministic, FlashDmAttnBackend.Nvrtc);
        DeviceBuffer workspace = problem.Allocate(needed);
        DeviceBackwardArgs args = problem.Args with { Workspace = workspace.Pointer, WorkspaceBytes = needed - shortBy };

        FlashDmAttnException Refusal(FlashDmAttnBackend backend) => Assert.Throws<FlashDmAttnException>(() => Run(problem, args, c.On(backend)))!;
        FlashDmAttnException native = Refusal(FlashDmAttnBackend.Native), nvrtc = Refusal(FlashDmAttnBackend.Nvrtc);

        Assert.That(nvrtc.Status, Is.EqualTo(native.Status));
        Assert.That(nvrtc.NativeMessage, Is.EqualTo(native.NativeMessage));
        DeviceBackwardResults results = problem.Read();
        foreach ((string name, byte[] bytes) in new[] { ("dQ", results.DQ), ("dK", results.DK), ("dV", results.DV), ("tile stats", results.TileStatsBytes) })
            Assert.That(bytes, Is.All.EqualTo((byte)0xFF), $"{name} was written");
    }

    [Test]
    public void Backward8KCase_GivesTheNativeLibrarysBits()
    {
        var c = new BackwardCase($"{EightKCase.Forward.Name} det", EightKCase.Forward) { Deterministic = true };
        int seed = new TestRandom().Seed;
        var clock = Stopwatch.StartNew();
        (BackwardGradients native, TileStats nativeStats) =
            new BackwardInputs(c.On(FlashDmAttnBackend.Native), new TestRandom(seed), EightKCase.SlidingWindow).RunSpanApi();
        double nativeMs = clock.Elapsed.TotalMilliseconds;
        clock.Restart();
        (BackwardGradients nvrtc, TileStats nvrtcStats) =
            new BackwardInputs(c.On(FlashDmAttnBackend.Nvrtc), new TestRandom(seed), EightKCase.SlidingWindow).RunSpanApi();
        double nvrtcMs = clock.Elapsed.TotalMilliseconds;

        BackwardCheck.AssertSameBits(nvrtc, native, $"seed {seed}");
        Assert.That(nvrtcStats, Is.EqualTo(nativeStats));
        TestContext.Progress.WriteLine(
            $"8K backward through the Span API (forward + backward, inputs drawn and copied; NVRTC's first call builds its kernels): native {nativeMs:F0} ms, NVRTC {nvrtcMs:F0} ms; {nvrtcStats}");
    }

    // One forward (native) and its backward by each backend, on the same tensors; the NVRTC call takes caller scratch
    // (filled with garbage) when asked.
    private static (BackwardInputs Inputs, DeviceBackwardResults Native, DeviceBackwardResults Nvrtc, BackwardGradients NvrtcValues) RunBoth(
        BackwardCase c, Layout qLayout, Layout kvLayout, bool callerWorkspace)
    {
        var random = new TestRandom();
        c = c.On(FlashDmAttnBackend.Native);
        Func<AttentionShape, BroadcastShape, byte[]>? mask = c.Forward.BlankRowsAndTiles ? BackwardCheck.BlankBackwardTiles(c.Forward, random) : null;
        var inputs = new BackwardInputs(c with { Forward = c.Forward with { BlankRowsAndTiles = false } }, random, mask);
        using var problem = new DeviceBackwardProblem(inputs, qLayout, kvLayout, maskRowPadding: 6, biasHeadPadding: 40, dBiasRowPadding: 3);

        DeviceBackwardResults native = Run(problem, problem.Args, inputs.Case);
        DeviceBackwardArgs args = problem.Args;
        if (callerWorkspace)
        {
            ForwardCase f = c.Forward;
            long bytes = DynamicMaskAttention.BackwardWorkspaceSize(f.Shape, f.DType, f.Mask, c.BiasGradientType is null ? null : f.Bias, c.Deterministic,
                FlashDmAttnBackend.Nvrtc);
            DeviceBuffer workspace = problem.Allocate(bytes);
            workspace.Fill(0xA5);
            args = args with { Workspace = workspace.Pointer, WorkspaceBytes = bytes };
        }

        DeviceBackwardResults nvrtc = Run(problem, args, inputs.Case.On(FlashDmAttnBackend.Nvrtc));
        Assert.That(problem.DBiasPadding(nvrtc), Is.All.EqualTo((byte)0xFF), $"dBias padding was written; {c.Name}");
        return (inputs, native, nvrtc, problem.Values(nvrtc));
    }

    // The backward alone, with the case's options (its backend included) and mode, on outputs reset to 0xFF.
    private static DeviceBackwardResults Run(DeviceBackwardProblem problem, DeviceBackwardArgs args, BackwardCase c)
    {
        problem.ClearResults();
        using CudaPrimaryContext context = CudaPrimaryContext.Retain(0);
        using CudaContextScope current = context.Push();
        DynamicMaskAttention.Backward(args, c.Forward.Options, c.Deterministic);
        CudaDriver.Synchronize();
        return problem.Read();
    }
}

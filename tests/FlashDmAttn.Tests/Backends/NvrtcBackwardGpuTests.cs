using System.Diagnostics;

namespace FlashDmAttn.Tests.Gpu;

/// <summary>
/// The NVRTC backend's backward on a GPU against the native library's, on one forward result: in deterministic mode
/// the same bits of dQ, dK, dV, dBias and the tile statistics; in the default mode, where dQ is summed by atomics in
/// no fixed order, the same bits of what no atomic touches (dK, dV, the statistics) and every gradient within the
/// reference's bounds. Over mask, bias broadcasts with dBias of each type, causality, softcap, GQA, head dims 64, 128
/// and 256, both tensor layouts, caller scratch; then FLASHDMATTN_BACKEND, the 8K case's bits, and the cold compile
/// and cached load times of its kernels.
/// </summary>
[Category("Gpu")]
[NonParallelizable] // sets FLASHDMATTN_BACKEND
public class NvrtcBackwardGpuTests : GpuTest
{
    // Few (type, head dim) pairs, each with several features: every one costs NVRTC a few kernels on a fresh machine.
    private static IEnumerable<(BackwardCase Case, Layout Q, Layout Kv, bool CallerWorkspace)> Cases() =>
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
        Cases().Select(c => new TestCaseData(c.Case with { Name = c.Case.Name + " det", Deterministic = true }, c.Q, c.Kv, c.CallerWorkspace)
            .SetArgDisplayNames(c.Case.Name + " det"));

    // The default mode at the head dims the deterministic cases cover.
    private static IEnumerable<TestCaseData> DefaultModeCases() =>
        Cases().Where((_, i) => i is 0 or 2 or 4)
            .Select(c => new TestCaseData(c.Case, c.Q, c.Kv, c.CallerWorkspace).SetArgDisplayNames(c.Case.Name));

    [TestCaseSource(nameof(DeterministicCases))]
    public void Deterministic_GivesTheNativeLibrarysBits(BackwardCase c, Layout qLayout, Layout kvLayout, bool callerWorkspace)
    {
        (BackwardInputs inputs, DeviceBackwardResults native, DeviceBackwardResults nvrtc, BackwardGradients gradients) =
            RunBoth(c, qLayout, kvLayout, callerWorkspace);
        string context = $"{c.Name}; {inputs.Forward.Random}";

        BackwardCheck.AssertSameBytes(nvrtc, native, context);
        BackwardCheck.Check(inputs, gradients, inputs.Reference());
        TestContext.Progress.WriteLine($"NVRTC backward, same bits as native: {c.Name}; {nvrtc.Stats}");
    }

    [TestCaseSource(nameof(DefaultModeCases))]
    public void DefaultMode_MatchesTheReference_AndTheNativeBitsOfWhatNoAtomicSums(BackwardCase c, Layout qLayout, Layout kvLayout, bool callerWorkspace)
    {
        (BackwardInputs inputs, DeviceBackwardResults native, DeviceBackwardResults nvrtc, BackwardGradients gradients) =
            RunBoth(c, qLayout, kvLayout, callerWorkspace);
        string context = $"{c.Name}; {inputs.Forward.Random}";

        BackwardCheck.Check(inputs, gradients, inputs.Reference());
        Assert.That(nvrtc.DK, Is.EqualTo(native.DK), $"dK (no atomics in either mode); {context}");
        Assert.That(nvrtc.DV, Is.EqualTo(native.DV), $"dV (no atomics in either mode); {context}");
        Assert.That(nvrtc.Stats, Is.EqualTo(native.Stats), $"tile stats; {context}");
    }

    [TestCase(ScalarType.Float16, false, 1)]
    [TestCase(ScalarType.BFloat16, true, 16)]
    public void TooSmallWorkspace_IsRefusedAsTheNativeLibraryRefusesIt_AndWritesNothing(ScalarType dtype, bool deterministic, long shortBy)
    {
        var c = new BackwardCase($"{dtype} mask 2x2x97", new ForwardCase("", dtype, new(2, 97, 130, 4, 2, 64)) { Mask = new(2, 2, 97), Backend = FlashDmAttnBackend.Native })
            { Deterministic = deterministic };
        using var problem = new DeviceBackwardProblem(new BackwardInputs(c, new TestRandom()), Layout.SequenceMajor, Layout.SequenceMajor);
        long needed = DynamicMaskAttention.BackwardWorkspaceSize(c.Forward.Shape, dtype, c.Forward.Mask, null, deterministic, FlashDmAttnBackend.Nvrtc);
        DeviceBuffer workspace = problem.Allocate(needed);
        DeviceBackwardArgs args = problem.Args with { Workspace = workspace.Pointer, WorkspaceBytes = needed - shortBy };

        FlashDmAttnException Refusal(FlashDmAttnBackend backend) =>
            Assert.Throws<FlashDmAttnException>(() => Run(problem, args, c with { Forward = c.Forward with { Backend = backend } }))!;
        FlashDmAttnException native = Refusal(FlashDmAttnBackend.Native), nvrtc = Refusal(FlashDmAttnBackend.Nvrtc);

        Assert.That(nvrtc.Status, Is.EqualTo(native.Status));
        Assert.That(nvrtc.NativeMessage, Is.EqualTo(native.NativeMessage));
        DeviceBackwardResults results = problem.Read();
        foreach ((string name, byte[] bytes) in new[] { ("dQ", results.DQ), ("dK", results.DK), ("dV", results.DV), ("tile stats", results.TileStatsBytes) })
            Assert.That(bytes, Is.All.EqualTo((byte)0xFF), $"{name} was written");
    }

    [Test]
    public void EnvironmentVariable_ForcesNvrtc_ForTheSpanApi()
    {
        var c = new BackwardCase("fp16 D64 env", new ForwardCase("", ScalarType.Float16, new(1, 200, 250, 4, 2, 64))
            { Causal = true, Mask = new(1, 2, 200), Bias = new(1, 2, 1), BiasType = ScalarType.Float16 }) { Deterministic = true };
        int seed = new TestRandom().Seed;
        BackwardGradients native = new BackwardInputs(c with { Forward = c.Forward with { Backend = FlashDmAttnBackend.Native } }, new TestRandom(seed))
            .RunSpanApi().Gradients;
        string? saved = Environment.GetEnvironmentVariable("FLASHDMATTN_BACKEND");
        try
        {
            Environment.SetEnvironmentVariable("FLASHDMATTN_BACKEND", "nvrtc");
            Assert.That(DynamicMaskAttention.SelectBackend(0), Is.EqualTo(new BackendSelection(FlashDmAttnBackend.Nvrtc, null)));
            BackwardGradients nvrtc = new BackwardInputs(c, new TestRandom(seed)).RunSpanApi().Gradients;

            AssertSameBits(nvrtc, native, $"seed {seed}");
        }
        finally
        {
            Environment.SetEnvironmentVariable("FLASHDMATTN_BACKEND", saved);
        }
    }

    // ---- the 8K case ----

    private const int Length = NvrtcGpuTestSupport.EightKLength;

    private static BackwardCase EightK(bool deterministic) =>
        new($"bf16 8K causal sliding-window mask{(deterministic ? " det" : "")}",
            new ForwardCase("", ScalarType.BFloat16, new(1, Length, Length, 2, 1, 128)) { Causal = true, Mask = new(1, 1, Length) })
            { Deterministic = deterministic };

    [Test]
    public void The8KCase_GivesTheNativeLibrarysBits()
    {
        BackwardCase c = EightK(deterministic: true);
        int seed = new TestRandom().Seed;
        var clock = Stopwatch.StartNew();
        (BackwardGradients native, TileStats nativeStats) =
            new BackwardInputs(c with { Forward = c.Forward with { Backend = FlashDmAttnBackend.Native } }, new TestRandom(seed), NvrtcGpuTestSupport.EightKSlidingWindow).RunSpanApi();
        double nativeMs = clock.Elapsed.TotalMilliseconds;
        clock.Restart();
        (BackwardGradients nvrtc, TileStats nvrtcStats) =
            new BackwardInputs(c with { Forward = c.Forward with { Backend = FlashDmAttnBackend.Nvrtc } }, new TestRandom(seed), NvrtcGpuTestSupport.EightKSlidingWindow).RunSpanApi();
        double nvrtcMs = clock.Elapsed.TotalMilliseconds;

        AssertSameBits(nvrtc, native, $"seed {seed}");
        Assert.That(nvrtcStats, Is.EqualTo(nativeStats));
        TestContext.Progress.WriteLine(
            $"8K backward through the Span API (forward + backward, inputs drawn and copied; NVRTC's first call builds its kernels): native {nativeMs:F0} ms, NVRTC {nvrtcMs:F0} ms; {nvrtcStats}");
    }

    [Test]
    public void ColdCompileAndCachedLoad_OfThe8KCasesBackwardKernels()
    {
        AttentionShape shape = EightK(true).Forward.Shape;
        BackwardPlan plan = LaunchPlan.PlanBwd(ProblemShape.Of(shape, new BroadcastShape(1, 1, Length), null, default), deterministic: true, withDBias: false);
        BackwardKernels deterministic = NvrtcBackend.BackwardKernels(ScalarType.BFloat16, shape.HeadDim, deterministic: true);
        BackwardKernels defaultMode = NvrtcBackend.BackwardKernels(ScalarType.BFloat16, shape.HeadDim, deterministic: false);
        (KernelVariant Variant, int SharedBytes)[] kernels =
        [
            (KernelVariant.Occupancy(plan.Tile), 0), (deterministic.Delta, plan.DqSmemLimit), (deterministic.DkDv, plan.DkdvSmemBytes),
            (deterministic.Dq, plan.DqSmemLimit), (defaultMode.Dq, 0),
        ];
        CompileTarget target = KernelModules.TargetOf(0);
        using CudaPrimaryContext context = CudaPrimaryContext.Retain(0);
        using CudaContextScope current = context.Push();
        ((double cold, string coldParts), (double cached, string cachedParts)) = NvrtcGpuTestSupport.TimeColdAndCached(kernels, target);

        // What a first call of a process with an empty cache waits for: its four kernels, compiled in parallel.
        var parallel = new NvrtcKernelBuilder(KernelSources.Embedded, diskCache: null);
        var clock = Stopwatch.StartNew();
        Task.WaitAll(kernels.Take(4).Select(k => Task.Run(() => parallel.GetImage(k.Variant, target))).ToArray());
        double parallelMs = clock.Elapsed.TotalMilliseconds;

        TestContext.Progress.WriteLine(
            $"NVRTC {NvrtcCompiler.Version} {target}, 8K backward (bf16 D128 + mask pre-pass): cold compile + load, one at a time, {cold:F0} ms ({coldParts}); " +
            $"cached read + load {cached:F1} ms ({cachedParts}); a first deterministic call's four compiled in parallel: {parallelMs:F0} ms");
        Assert.That(cached, Is.LessThan(cold));
    }

    // ---- helpers ----

    // One forward (native) and its backward by each backend, on the same tensors; the NVRTC call takes caller scratch
    // (filled with garbage) when asked.
    private static (BackwardInputs Inputs, DeviceBackwardResults Native, DeviceBackwardResults Nvrtc, BackwardGradients NvrtcValues) RunBoth(
        BackwardCase c, Layout qLayout, Layout kvLayout, bool callerWorkspace)
    {
        var random = new TestRandom();
        Func<AttentionShape, BroadcastShape, byte[]>? mask = c.Forward.BlankRowsAndTiles
            ? BackwardCheck.BlankBackwardTiles(c.Forward, random)
            : null;
        var inputs = new BackwardInputs(c with { Forward = c.Forward with { BlankRowsAndTiles = false, Backend = FlashDmAttnBackend.Native } }, random, mask);
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

        DeviceBackwardResults nvrtc = Run(problem, args, inputs.Case with { Forward = inputs.Case.Forward with { Backend = FlashDmAttnBackend.Nvrtc } });
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

    private static void AssertSameBits(BackwardGradients actual, BackwardGradients expected, string context)
    {
        foreach (((string name, double[] got), (_, double[] want)) in actual.Named().Zip(expected.Named()))
            Assert.That(got.Select(BitConverter.DoubleToInt64Bits), Is.EqualTo(want.Select(BitConverter.DoubleToInt64Bits)), $"{name}; {context}");
        Assert.That(actual.Bias is null, Is.EqualTo(expected.Bias is null), context);
    }
}

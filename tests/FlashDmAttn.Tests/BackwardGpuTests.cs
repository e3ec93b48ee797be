using static FlashDmAttn.Tests.Gpu.GpuCaseMatrix;

namespace FlashDmAttn.Tests.Gpu;

/// <summary>
/// The backward kernels against the double reference on fresh random inputs, the forward's matrix of cases at sizes
/// the CPU reference affords: through the Span API every element type and head dimension, grouped-query ratios, odd
/// and unequal lengths, every mask and bias broadcast shape, bias and bias-gradient types, mask densities with blank
/// rows and tiles, causal, softcap and scale, in both modes; then the device-pointer API over both tensor layouts with
/// strided masks, biases and bias gradients; deterministic bits; caller scratch. Once per backend.
/// </summary>
[TestFixture(FlashDmAttnBackend.Native)]
[TestFixture(FlashDmAttnBackend.Nvrtc)]
[Category("Gpu")]
public class BackwardGpuTests(FlashDmAttnBackend backend) : BackendGpuTest(backend)
{
    private static string Mode(bool deterministic) => deterministic ? " det" : "";

    private static IEnumerable<BackwardCase> DTypeAndHeadDimCases() =>
        from dtype in DTypes
        from d in HeadDims
        let n = Array.IndexOf(HeadDims, d)
        let biasType = (ScalarType)(n % 3 + 1)
        select new BackwardCase($"{Short(dtype)} D{d} Lq97 Lk130 Hq4 Hkv2 bias {Short(biasType)}{Mode(n % 2 == 1)}",
            new ForwardCase("", dtype, new(2, 97, 130, 4, 2, d))
            {
                Causal = d % 64 == 0,
                Mask = new(2, 2, 97),
                MaskDensity = 0.3,
                Bias = new(1, 4, 97),
                BiasType = biasType,
            })
        {
            Deterministic = n % 2 == 1,
            Float32BiasGradient = n < 3,
        };

    private static IEnumerable<BackwardCase> GroupedQueryCases() =>
        from dtype in DTypes
        from ratio in new[] { 1, 2, 8 }
        select new BackwardCase($"{Short(dtype)} GQA ratio {ratio}{Mode(ratio == 2)}", new ForwardCase("", dtype, new(1, 130, 130, 8, 8 / ratio, 64))
        {
            Causal = true,
            Mask = new(1, 8 / ratio, 130),
            Bias = new(1, 8 / ratio, 1), // the paper's (B, Hkv, 1, Lk) bias: dBias sums over queries and the heads of a group
            BiasType = dtype,
        })
        {
            Deterministic = ratio == 2,
        };

    private static IEnumerable<BackwardCase> LengthCases()
    {
        (int Lq, int Lk)[] lengths = [(1, 1), (1, 17), (1, 300), (17, 17), (17, 257), (97, 130), (130, 97), (257, 17), (300, 300)];
        int n = 0;
        foreach ((int lq, int lk) in lengths)
            foreach (bool causal in new[] { false, true })
            {
                ScalarType dtype = Alternate(n);
                bool deterministic = n++ % 3 == 2;
                yield return new BackwardCase($"{Short(dtype)} Lq{lq} Lk{lk}{(causal ? " causal" : "")}{Mode(deterministic)}",
                    new ForwardCase("", dtype, new(1, lq, lk, 2, 1, 128)) { Causal = causal, Bias = causal ? new(1, 1, 1) : null })
                {
                    Deterministic = deterministic,
                };
            }
    }

    private static IEnumerable<BroadcastShape> BroadcastShapes(int batch, int headsQ, int headsKv, int lq) =>
        from b in new[] { 1, batch }
        from h in new[] { 1, headsKv, headsQ }
        from r in new[] { 1, lq }
        select new BroadcastShape(b, h, r);

    // Bias shape n with mask shape 11 - n: each shape once as a bias (whose gradient sums over what it broadcasts) and
    // once as a mask.
    private static IEnumerable<BackwardCase> BroadcastCases()
    {
        BroadcastShape[] shapes = BroadcastShapes(2, 4, 2, 97).ToArray();
        for (int n = 0; n < shapes.Length; n++)
        {
            BroadcastShape bias = shapes[n], mask = shapes[shapes.Length - 1 - n];
            ScalarType dtype = Alternate(n), biasType = (ScalarType)(n % 3 + 1);
            yield return new BackwardCase(
                $"{Short(dtype)} bias {bias.Batch}x{bias.Heads}x{bias.Rows} {Short(biasType)} mask {mask.Batch}x{mask.Heads}x{mask.Rows}{Mode(n % 3 == 0)}",
                new ForwardCase("", dtype, new(2, 97, 130, 4, 2, 64)) { Bias = bias, BiasType = biasType, Mask = mask, MaskDensity = 0.4, Causal = n % 4 == 1 })
            {
                Deterministic = n % 3 == 0,
                Float32BiasGradient = n % 2 == 0,
            };
        }
    }

    private static IEnumerable<BackwardCase> MaskDensityCases()
    {
        int n = 0;
        foreach ((string name, double density, bool blank) in MaskDensities)
            foreach (bool causal in new[] { false, true })
            {
                ScalarType dtype = Alternate(n++);
                yield return new BackwardCase($"{Short(dtype)} mask {name}{(causal ? " causal" : "")}{Mode(n % 2 == 0)}",
                    new ForwardCase("", dtype, new(2, 257, 300, 2, 1, 128))
                    {
                        Causal = causal,
                        Mask = new(2, 1, 257),
                        MaskDensity = density,
                        BlankRowsAndTiles = blank,
                        Bias = new(1, 2, 1),
                        BiasType = dtype,
                    })
                {
                    Deterministic = n % 2 == 0,
                };
            }
    }

    private static IEnumerable<BackwardCase> SoftcapAndScaleCases() =>
        from softcap in new[] { 0f, 2f }
        from scale in new float?[] { null, 0.05f }
        let dtype = Alternate((int)softcap / 2 + (scale is null ? 0 : 1))
        select new BackwardCase($"{Short(dtype)} softcap {softcap} scale {scale?.ToString() ?? "default"}{Mode(softcap > 0)}",
            new ForwardCase("", dtype, new(2, 97, 130, 4, 4, 96))
            {
                Softcap = softcap,
                Scale = scale,
                Causal = true,
                Mask = new(1, 4, 97),
                Bias = new(2, 4, 97),
            })
        {
            Deterministic = softcap > 0,
            Float32BiasGradient = true,
        };

    // The one case past L ~ 300: long enough for many tiles per row and column, sparse enough for the reference.
    private static IEnumerable<BackwardCase> LargeCases() =>
    [
        new("bf16 L1024 causal sparse", new ForwardCase("", ScalarType.BFloat16, new(1, 1024, 1024, 2, 1, 128))
        {
            Causal = true,
            Mask = new(1, 1, 1024),
            MaskDensity = 0.2,
            BlankRowsAndTiles = true,
            Bias = new(1, 1, 1),
            BiasType = ScalarType.BFloat16,
        }),
    ];

    private static IEnumerable<TestCaseData> AllSpanCases() =>
        new[] { DTypeAndHeadDimCases(), GroupedQueryCases(), LengthCases(), BroadcastCases(), MaskDensityCases(), SoftcapAndScaleCases(), LargeCases() }
            .SelectMany(cases => cases)
            .Select(c => new TestCaseData(c).SetArgDisplayNames(c.Name));

    [TestCaseSource(nameof(AllSpanCases))]
    public void SpanApi_GradientsMatchTheReference(BackwardCase c)
    {
        c = c.On(Backend);
        var random = new TestRandom();
        Func<AttentionShape, BroadcastShape, byte[]>? mask = c.Forward.BlankRowsAndTiles ? BackwardCheck.BlankBackwardTiles(c.Forward, random) : null;
        var inputs = new BackwardInputs(c with { Forward = c.Forward with { BlankRowsAndTiles = false } }, random, mask);

        (BackwardGradients gpu, TileStats stats) = inputs.RunSpanApi();

        BackwardCheck.Check(inputs, gpu, inputs.Reference());
        BackwardCheck.CheckTileCount(c, stats);
        if (c.Forward.BlankRowsAndTiles)
            Assert.That(stats.Skipped, Is.Positive, $"no tile skipped; {c.Label}; {random}");
    }

    [TestCase(ScalarType.Float16)]
    [TestCase(ScalarType.BFloat16)]
    public void Deterministic_GivesIdenticalBitsOnEveryRun(ScalarType dtype)
    {
        var c = new BackwardCase($"{Short(dtype)} det bits", new ForwardCase("", dtype, new(2, 513, 513, 4, 2, 64))
        {
            Causal = true,
            Mask = new(2, 1, 513),
            MaskDensity = 0.6,
            Bias = new(2, 1, 1),
            BiasType = dtype,
        }) { Deterministic = true };
        var inputs = new BackwardInputs(c.On(Backend), new TestRandom());

        BackwardGradients[] runs = Enumerable.Range(0, 3).Select(_ => inputs.RunSpanApi().Gradients).ToArray();

        foreach (BackwardGradients other in runs[1..])
            BackwardCheck.AssertSameBits(other, runs[0], $"differs between runs; {inputs.Forward.Random}");
    }

    // ---- the device-pointer API ----

    private static IEnumerable<TestCaseData> LayoutCases()
    {
        (Layout Q, Layout Kv)[] layouts = [(Layout.SequenceMajor, Layout.SequenceMajor), (Layout.HeadMajor, Layout.HeadMajor),
            (Layout.HeadMajor, Layout.SequenceMajor), (Layout.SequenceMajor, Layout.HeadMajor)];
        int n = 0;
        foreach ((Layout q, Layout kv) in layouts)
        {
            ScalarType dtype = Alternate(n++);
            var c = new BackwardCase($"{Short(dtype)} device q/o {q} k/v {kv}{Mode(n > 2)}", new ForwardCase("", dtype, new(2, 97, 130, 4, 2, 128))
            {
                Causal = n % 2 == 0,
                Mask = new(2, 2, 97),
                Bias = new(1, 4, 97),
                BiasType = n > 2 ? ScalarType.Float32 : ScalarType.BFloat16,
            })
            {
                Deterministic = n > 2,
                Float32BiasGradient = n % 2 == 1,
            };
            yield return new TestCaseData(c, q, kv).SetArgDisplayNames(c.Name);
        }
    }

    [TestCaseSource(nameof(LayoutCases))]
    public void DeviceApi_WithEitherLayoutAndStridedMaskBiasAndBiasGradient_MatchesTheReference(BackwardCase c, Layout qLayout, Layout kvLayout)
    {
        c = c.On(Backend);
        var inputs = new BackwardInputs(c, new TestRandom());
        using var problem = new DeviceBackwardProblem(inputs, qLayout, kvLayout, maskRowPadding: 6, biasHeadPadding: 40, dBiasRowPadding: 3);

        problem.Run(problem.Args);
        DeviceBackwardResults results = problem.Read();

        BackwardCheck.Check(inputs, problem.Values(results), inputs.Reference());
        BackwardCheck.CheckTileCount(c, results.Stats);
        Assert.That(problem.DBiasPadding(results), Is.All.EqualTo((byte)0xFF), $"dBias padding was written; {c.Label}");
    }

    private static IEnumerable<TestCaseData> KeyMajorCases() =>
        new[]
        {
            // The paper's bias: a (B, Lk, Hkv) score seen as (B, Hkv, 1, Lk), key stride Hkv; its gradient the same way.
            new BackwardCase("bf16 D128 paper bias (B, Lk, Hkv) key stride 2, fp32 dBias", new ForwardCase("", ScalarType.BFloat16, new(2, 150, 150, 4, 2, 128))
                { Causal = true, Bias = new(2, 2, 1), BiasType = ScalarType.Float32 }) { Float32BiasGradient = true },
            // A full mask and bias stored key-major: key stride Hq * Lq, row stride 1.
            new BackwardCase("fp16 D64 mask and bias (B, Lk, Hq, Lq) det", new ForwardCase("", ScalarType.Float16, new(1, 97, 130, 2, 1, 64))
                { Mask = new(1, 2, 97), MaskDensity = 0.5, Bias = new(1, 2, 97), BiasType = ScalarType.Float16 }) { Deterministic = true },
        }.Select(c => new TestCaseData(c).SetArgDisplayNames(c.Name));

    [TestCaseSource(nameof(KeyMajorCases))]
    public void DeviceApi_WithKeyStridedMaskBiasAndBiasGradient_MatchesTheReference(BackwardCase c)
    {
        c = c.On(Backend);
        var inputs = new BackwardInputs(c, new TestRandom());
        using var problem = new DeviceBackwardProblem(inputs, Layout.SequenceMajor, Layout.HeadMajor, keyMajorOperands: true);

        problem.Run(problem.Args);
        DeviceBackwardResults results = problem.Read();

        Assert.That(problem.Args.Forward.Bias!.Value.StrideKey, Is.GreaterThan(1), "the operands are key-strided");
        BackwardCheck.Check(inputs, problem.Values(results), inputs.Reference());
        BackwardCheck.CheckTileCount(c, results.Stats);
    }

    [Test]
    public void BackwardWorkspaceSize_IsPositiveAndGrowsWithTheMaskTheBiasGradientAndTheDefaultMode()
    {
        AttentionShape s = new(2, 300, 333, 4, 2, 128);

        long plain = DynamicMaskAttention.BackwardWorkspaceSize(s, ScalarType.BFloat16, null, null, deterministic: true, Backend);
        long masked = DynamicMaskAttention.BackwardWorkspaceSize(s, ScalarType.BFloat16, new(2, 4, 300), null, deterministic: true, Backend);
        long withBiasGradient = DynamicMaskAttention.BackwardWorkspaceSize(s, ScalarType.BFloat16, new(2, 4, 300), new(1, 2, 1), deterministic: true, Backend);
        long defaultMode = DynamicMaskAttention.BackwardWorkspaceSize(s, ScalarType.BFloat16, new(2, 4, 300), new(1, 2, 1), deterministic: false, Backend);

        Assert.That(plain, Is.Positive);
        Assert.That(masked, Is.GreaterThan(plain));
        Assert.That(withBiasGradient, Is.GreaterThan(masked));
        Assert.That(defaultMode, Is.GreaterThanOrEqualTo(withBiasGradient));
    }

    private static IEnumerable<TestCaseData> WorkspaceCases() =>
        new[]
        {
            (new BackwardCase("fp16 D64 mask 2x2x97 bias 1x4x97 det", new ForwardCase("", ScalarType.Float16, new(2, 97, 130, 4, 2, 64))
                { Mask = new(2, 2, 97), Bias = new(1, 4, 97), BiasType = ScalarType.Float16 }) { Deterministic = true }, 0L),
            (new BackwardCase("bf16 D128 causal no mask det", new ForwardCase("", ScalarType.BFloat16, new(1, 200, 250, 2, 1, 128)) { Causal = true })
                { Deterministic = true }, 4096L),
        }.Select(c => new TestCaseData(c.Item1, c.Item2).SetArgDisplayNames(c.Item1.Name, $"+{c.Item2} bytes"));

    [TestCaseSource(nameof(WorkspaceCases))]
    public void DeviceApi_WithCallerWorkspace_GivesTheSameBitsAsLibraryScratch(BackwardCase c, long extraBytes)
    {
        c = c.On(Backend);
        var inputs = new BackwardInputs(c, new TestRandom());
        using var problem = new DeviceBackwardProblem(inputs, Layout.SequenceMajor, Layout.SequenceMajor);
        problem.Run(problem.Args);
        DeviceBackwardResults libraryScratch = problem.Read();

        ForwardCase f = c.Forward;
        long bytes = DynamicMaskAttention.BackwardWorkspaceSize(f.Shape, f.DType, f.Mask, c.BiasGradientType is null ? null : f.Bias, c.Deterministic, Backend,
            lifetimes: f.Lifetimes is not null) + extraBytes;
        DeviceBuffer workspace = problem.Allocate(bytes);
        workspace.Fill(0xA5); // fresh stream-ordered memory holds garbage too
        problem.ClearResults();
        problem.Run(problem.Args with { Workspace = workspace.Pointer, WorkspaceBytes = bytes });
        DeviceBackwardResults callerScratch = problem.Read();

        string context = $"{c.Label}; {inputs.Forward.Random}";
        BackwardCheck.AssertSameBytes(callerScratch, libraryScratch, context);
        BackwardCheck.Check(inputs, problem.Values(callerScratch), inputs.Reference());
    }

    // Key lifetimes in the default mode: the gathered dK/dV sums into fp32 accumulators in the caller's scratch, of
    // exactly the size asked (atomics: checked against the reference, not bit for bit against library scratch).
    [Test]
    public void DeviceApi_WithLifetimes_DefaultMode_RunsInTheCallersWorkspaceOfTheSizeAsked()
    {
        var c = new BackwardCase("bf16 D64 lifetimes 2x2 bias 1x4x97", new ForwardCase("", ScalarType.BFloat16, new(2, 97, 130, 4, 2, 64))
            { Lifetimes = new(2, 2, 1), Bias = new(1, 4, 97), BiasType = ScalarType.BFloat16 }).On(Backend);
        var inputs = new BackwardInputs(c, new TestRandom());
        using var problem = new DeviceBackwardProblem(inputs, Layout.SequenceMajor, Layout.SequenceMajor);
        ForwardCase f = c.Forward;
        long bytes = DynamicMaskAttention.BackwardWorkspaceSize(f.Shape, f.DType, null, f.Bias, deterministic: false, Backend, lifetimes: true);
        Assert.That(bytes, Is.GreaterThan(DynamicMaskAttention.BackwardWorkspaceSize(f.Shape, f.DType, null, f.Bias, deterministic: false, Backend)));
        DeviceBuffer workspace = problem.Allocate(bytes);
        workspace.Fill(0xA5);

        problem.Run(problem.Args with { Workspace = workspace.Pointer, WorkspaceBytes = bytes });

        BackwardCheck.Check(inputs, problem.Values(problem.Read()), inputs.Reference());
    }

    [TestCase(ScalarType.Float16, false, 1)]
    [TestCase(ScalarType.BFloat16, true, 16)]
    public void DeviceApi_WithTooSmallWorkspace_IsRefusedAndWritesNothing(ScalarType dtype, bool deterministic, long shortBy)
    {
        var c = new BackwardCase($"{dtype} mask 2x2x97", new ForwardCase("", dtype, new(2, 97, 130, 4, 2, 64)) { Mask = new(2, 2, 97) })
            { Deterministic = deterministic };
        using var problem = new DeviceBackwardProblem(new BackwardInputs(c.On(Backend), new TestRandom()), Layout.SequenceMajor, Layout.SequenceMajor);
        long needed = DynamicMaskAttention.BackwardWorkspaceSize(c.Forward.Shape, dtype, c.Forward.Mask, null, deterministic, Backend);
        DeviceBuffer workspace = problem.Allocate(needed);

        var thrown = Assert.Throws<FlashDmAttnException>(() =>
            problem.Run(problem.Args with { Workspace = workspace.Pointer, WorkspaceBytes = needed - shortBy }))!;

        Assert.That(thrown.Status, Is.EqualTo(FlashDmAttnStatus.InvalidArgument));
        Assert.That(thrown.NativeMessage, Does.Contain("workspace_bytes").And.Contain($"{needed - shortBy}").And.Contain($"{needed}"));
        DeviceBackwardResults results = problem.Read();
        foreach ((string name, byte[] bytes) in new[] { ("dQ", results.DQ), ("dK", results.DK), ("dV", results.DV), ("tile stats", results.TileStatsBytes) })
            Assert.That(bytes, Is.All.EqualTo((byte)0xFF), $"{name} was written");
    }

    [Test]
    public void BackwardTileShape_IsPositiveForEverySupportedHeadDimAndType()
    {
        foreach (ScalarType dtype in DTypes)
            foreach (int d in HeadDims)
            {
                (int blockM, int blockN) = DynamicMaskAttention.BackwardTileShape(d, dtype, Backend);
                Assert.That(blockM > 0 && blockN > 0, $"{dtype} D{d}: {blockM}x{blockN}");
            }
    }
}

using static FlashDmAttn.Tests.Gpu.GpuCaseMatrix;

namespace FlashDmAttn.Tests.Gpu;

/// <summary>
/// The kernel against the double reference on fresh random inputs, through the Span API: every element type and
/// head dimension, grouped-query ratios, odd and unequal lengths, every mask and bias broadcast shape, bias types,
/// mask densities with blank rows and tiles, causal, softcap and scale; then the device-pointer API over both
/// tensor layouts and strided masks and biases. Once per backend.
/// </summary>
[TestFixture(FlashDmAttnBackend.Native)]
[TestFixture(FlashDmAttnBackend.Nvrtc)]
[Category("Gpu")]
public class ForwardGpuTests(FlashDmAttnBackend backend) : BackendGpuTest(backend)
{
    private static IEnumerable<ForwardCase> DTypeAndHeadDimCases() =>
        from dtype in DTypes
        from d in HeadDims
        select new ForwardCase($"{Short(dtype)} D{d} Lq97 Lk130 Hq4 Hkv2 {(d % 64 == 0 ? "causal" : "full")}", dtype, new(2, 97, 130, 4, 2, d))
        {
            Causal = d % 64 == 0,
            Mask = new(2, 2, 97),
            MaskDensity = 0.3,
            Bias = new(1, 4, 97),
        };

    private static IEnumerable<ForwardCase> GroupedQueryCases() =>
        from dtype in DTypes
        from ratio in new[] { 1, 2, 8 }
        select new ForwardCase($"{Short(dtype)} GQA ratio {ratio}", dtype, new(1, 130, 130, 8, 8 / ratio, 64))
        {
            Causal = true,
            Mask = new(1, 8 / ratio, 130),
            Bias = new(1, 8 / ratio, 1),
        };

    private static IEnumerable<ForwardCase> LengthCases()
    {
        (int Lq, int Lk)[] lengths = [(1, 1), (1, 17), (1, 1025), (17, 17), (17, 257), (97, 130), (130, 97), (257, 17), (257, 1025), (1025, 1025)];
        int n = 0;
        foreach ((int lq, int lk) in lengths)
            foreach (bool causal in new[] { false, true })
            {
                ScalarType dtype = Alternate(n++);
                yield return new ForwardCase($"{Short(dtype)} Lq{lq} Lk{lk}{(causal ? " causal" : "")}", dtype, new(1, lq, lk, 2, 1, 128)) { Causal = causal };
            }
    }

    private static IEnumerable<BroadcastShape> BroadcastShapes(int batch, int headsQ, int headsKv, int lq) =>
        from b in new[] { 1, batch }
        from h in new[] { 1, headsKv, headsQ }
        from r in new[] { 1, lq }
        select new BroadcastShape(b, h, r);

    private static IEnumerable<ForwardCase> MaskBroadcastCases() =>
        BroadcastShapes(2, 4, 2, 97).Select((m, n) => new ForwardCase(
            $"{Short(Alternate(n))} mask {m.Batch}x{m.Heads}x{m.Rows}", Alternate(n), new(2, 97, 130, 4, 2, 64)) { Mask = m, MaskDensity = 0.4 });

    private static IEnumerable<ForwardCase> BiasBroadcastCases() =>
        BroadcastShapes(2, 4, 2, 97).Select((b, n) => new ForwardCase(
            $"{Short(Alternate(n))} bias {b.Batch}x{b.Heads}x{b.Rows} {Short((ScalarType)(n % 3 + 1))}", Alternate(n), new(2, 97, 130, 4, 2, 64))
        {
            Bias = b,
            BiasType = (ScalarType)(n % 3 + 1),
            Causal = n % 4 == 1,
        });

    private static IEnumerable<ForwardCase> BiasTypeCases() =>
        from dtype in DTypes
        from biasType in new[] { ScalarType.Float16, ScalarType.BFloat16, ScalarType.Float32 }
        select new ForwardCase($"{Short(dtype)} bias {Short(biasType)} full", dtype, new(2, 257, 257, 2, 2, 128))
        {
            Causal = true,
            Bias = new(2, 2, 257),
            BiasType = biasType,
        };

    private static IEnumerable<ForwardCase> MaskDensityCases()
    {
        int n = 0;
        foreach ((string name, double density, bool blank) in MaskDensities)
            foreach (bool causal in new[] { false, true })
            {
                ScalarType dtype = Alternate(n++);
                yield return new ForwardCase($"{Short(dtype)} mask {name}{(causal ? " causal" : "")}", dtype, new(2, 300, 333, 2, 1, 128))
                {
                    Causal = causal,
                    Mask = new(2, 1, 300),
                    MaskDensity = density,
                    BlankRowsAndTiles = blank,
                    Bias = new(1, 2, 1),
                };
            }
    }

    private static IEnumerable<ForwardCase> SoftcapAndScaleCases() =>
        from softcap in new[] { 0f, 2f }
        from scale in new float?[] { null, 0.05f }
        select new ForwardCase($"{Short(Alternate((int)softcap))} softcap {softcap} scale {scale?.ToString() ?? "default"}",
            Alternate((int)softcap), new(2, 97, 130, 4, 4, 96))
        {
            Softcap = softcap,
            Scale = scale,
            Causal = true,
            Mask = new(1, 4, 97),
            Bias = new(2, 4, 97),
        };

    private static IEnumerable<ForwardCase> LargeCases() =>
        from dtype in DTypes
        select new ForwardCase($"{Short(dtype)} L2048 causal sparse", dtype, new(1, 2048, 2048, 2, 1, 128))
        {
            Causal = true,
            Mask = new(1, 1, 2048),
            MaskDensity = 0.2,
            BlankRowsAndTiles = true,
            Bias = new(1, 1, 1),
        };

    private static IEnumerable<TestCaseData> AllSpanCases() =>
        new[] { DTypeAndHeadDimCases(), GroupedQueryCases(), LengthCases(), MaskBroadcastCases(), BiasBroadcastCases(),
                BiasTypeCases(), MaskDensityCases(), SoftcapAndScaleCases(), LargeCases() }
            .SelectMany(cases => cases)
            .Select(c => new TestCaseData(c).SetArgDisplayNames(c.Name));

    [TestCaseSource(nameof(AllSpanCases))]
    public void SpanApi_MatchesTheReference(ForwardCase c)
    {
        c = c with { Backend = Backend };
        var inputs = new ForwardInputs(c, new TestRandom());

        (double[] output, double[] lse, TileStats stats) = inputs.RunSpanApi();
        (double[] refOutput, double[] refLse) = inputs.Reference();

        ForwardCheck.Check(inputs, output, lse, refOutput, refLse);
        ForwardCheck.CheckTileCount(c, stats);
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
            yield return new TestCaseData(new ForwardCase($"{Short(dtype)} device q/o {q} k/v {kv}", dtype, new(2, 97, 130, 4, 2, 128))
            {
                Causal = n % 2 == 0,
                Mask = new(2, 2, 97),
                Bias = new(1, 4, 97),
                BiasType = n > 2 ? ScalarType.Float32 : ScalarType.BFloat16,
            }, q, kv).SetArgDisplayNames(dtype.ToString(), q.ToString(), kv.ToString());
        }
    }

    [TestCaseSource(nameof(LayoutCases))]
    public void DeviceApi_WithEitherLayoutAndStridedMaskAndBias_MatchesTheReference(ForwardCase c, Layout qLayout, Layout kvLayout)
    {
        c = c with { Backend = Backend };
        var inputs = new ForwardInputs(c, new TestRandom());
        using var problem = new DeviceForwardProblem(inputs, qLayout, kvLayout, maskRowPadding: 6, biasHeadPadding: 40); // strides that are not the contiguous ones

        problem.Run(problem.Args);
        DeviceResults results = problem.Read();
        (double[] refOutput, double[] refLse) = inputs.Reference();

        ForwardCheck.Check(inputs, problem.OutputValues(results), results.Lse, refOutput, refLse);
        ForwardCheck.CheckTileCount(c, results.Stats);
    }

    private static IEnumerable<TestCaseData> KeyMajorCases() =>
        new[]
        {
            // The paper's bias: a (B, Lk, Hkv) score seen as (B, Hkv, 1, Lk) with key stride Hkv and head stride 1.
            new ForwardCase("bf16 D128 paper bias (B, Lk, Hkv) key stride 2", ScalarType.BFloat16, new(2, 300, 333, 4, 2, 128))
                { Causal = true, Bias = new(2, 2, 1), BiasType = ScalarType.BFloat16 },
            new ForwardCase("fp16 D64 fp32 bias (B, Lk, Hkv) and mask (B, Lk, Hq, Lq)", ScalarType.Float16, new(1, 97, 130, 4, 2, 64))
                { Mask = new(1, 4, 97), MaskDensity = 0.3, BlankRowsAndTiles = true, Bias = new(1, 2, 1), BiasType = ScalarType.Float32 },
            new ForwardCase("bf16 D256 decode, mask and bias key-strided (split-KV)", ScalarType.BFloat16, new(1, 1, 2049, 4, 1, 256))
                { Causal = true, Mask = new(1, 1, 1), MaskDensity = 0.3, Bias = new(1, 4, 1), BiasType = ScalarType.Float16 },
        }.Select(c => new TestCaseData(c).SetArgDisplayNames(c.Name));

    [TestCaseSource(nameof(KeyMajorCases))]
    public void DeviceApi_WithKeyStridedMaskAndBias_MatchesTheReference(ForwardCase c)
    {
        c = c with { Backend = Backend };
        var inputs = new ForwardInputs(c, new TestRandom());
        using var problem = new DeviceForwardProblem(inputs, Layout.SequenceMajor, Layout.HeadMajor, keyMajorOperands: true);

        problem.Run(problem.Args);
        DeviceResults results = problem.Read();
        (double[] refOutput, double[] refLse) = inputs.Reference();

        Assert.That(problem.Args.Bias!.Value.StrideKey, Is.GreaterThan(1), "the operands are key-strided");
        ForwardCheck.Check(inputs, problem.OutputValues(results), results.Lse, refOutput, refLse);
        ForwardCheck.CheckTileCount(c, results.Stats);
    }
}

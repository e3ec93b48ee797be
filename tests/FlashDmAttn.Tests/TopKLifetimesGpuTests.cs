using FlashDmAttn.Reference;

namespace FlashDmAttn.Tests.Gpu;

/// <summary>
/// The top-k lifetime builder (native library) against a brute-force top-k (<see cref="TopKReference"/>): scores on a
/// coarse grid, so that ties are frequent, with -inf and NaN; w = 1, w &gt;= Lk, Lq &lt; Lk and Lq &gt; Lk; causal or
/// not; both selections; each score type; the survivors; the device form on key-strided scores with caller scratch;
/// and attention with the built lifetimes against the reference with the dense per-query top-k mask.
/// </summary>
[Category("Gpu")]
public class TopKLifetimesGpuTests : GpuTest
{
    public sealed record TopKCase(string Name, TopKProblem Problem, ScalarType ScoresType = ScalarType.Float32)
    {
        public override string ToString() => Name;
    }

    private static IEnumerable<TopKCase> Cases()
    {
        yield return new("topk causal B2 H3 L64 w8", new(2, 3, 64, 64, KeySelection.TopK, 8, true));
        yield return new("topk causal w1", new(1, 2, 100, 100, KeySelection.TopK, 1, true));
        yield return new("topk causal w>=Lk", new(1, 2, 50, 50, KeySelection.TopK, 64, true));
        yield return new("topk causal w=Lk", new(1, 1, 33, 33, KeySelection.TopK, 33, true));
        yield return new("topk causal Lq<Lk", new(1, 2, 17, 300, KeySelection.TopK, 16, true));
        yield return new("topk causal Lq>Lk", new(1, 2, 300, 17, KeySelection.TopK, 4, true));
        yield return new("topk causal Lq1 decode", new(2, 2, 1, 4097, KeySelection.TopK, 128, true));
        yield return new("topk causal L1024 w64", new(1, 2, 1024, 1024, KeySelection.TopK, 64, true));
        yield return new("topk full Lq<Lk", new(2, 2, 40, 100, KeySelection.TopK, 10, false));
        yield return new("topk full w>=Lk", new(1, 1, 9, 7, KeySelection.TopK, 100, false));
        yield return new("positive causal", new(2, 2, 70, 90, KeySelection.Positive, 0, true));
        yield return new("positive full", new(1, 3, 90, 70, KeySelection.Positive, 5, false));
        yield return new("topk causal fp16 scores", new(1, 2, 129, 129, KeySelection.TopK, 16, true), ScalarType.Float16);
        yield return new("topk causal bf16 scores", new(1, 2, 129, 257, KeySelection.TopK, 16, true), ScalarType.BFloat16);
    }

    private static IEnumerable<TestCaseData> AllCases() => Cases().Select(c => new TestCaseData(c).SetArgDisplayNames(c.Name));

    // Multiples of 1/8 in [-4, 4] (exact in every score type: many ties), with about 3% -inf and 2% NaN.
    private static float[] Scores(TestRandom random, long count)
    {
        var scores = new float[count];
        for (long e = 0; e < count; e++)
        {
            double u = random.NextDouble();
            scores[e] = u < 0.03 ? float.NegativeInfinity : u < 0.05 ? float.NaN : random.Next(-32, 33) / 8f;
        }

        return scores;
    }

    [TestCaseSource(nameof(AllCases))]
    public void HostForm_IsTheBruteForceTopK(TopKCase c)
    {
        var random = new TestRandom();
        TopKProblem p = c.Problem;
        float[] scores = Scores(random, p.LifetimeElements);
        (KeyLifetime[] expected, int[] expectedSurvivors) = TopKReference.Build(p, scores);
        int[] survivors = Enumerable.Repeat(int.MinValue, expectedSurvivors.Length).ToArray();

        KeyLifetime[] lifetimes = c.ScoresType switch
        {
            ScalarType.Float16 => DynamicMaskAttention.TopKLifetimes<Half>(p, scores.Select(s => (Half)s).ToArray(), survivors),
            ScalarType.BFloat16 => DynamicMaskAttention.TopKLifetimes<BFloat16>(p, scores.Select(s => (BFloat16)s).ToArray(), survivors),
            _ => DynamicMaskAttention.TopKLifetimes<float>(p, scores, survivors),
        };

        AssertSameLifetimes(lifetimes, expected, p, $"{c}; {random}");
        Assert.That(survivors, Is.EqualTo(expectedSurvivors), $"survivors; {c}; {random}");
    }

    [Test]
    public void DeviceForm_ReadsKeyStridedScores_IntoCallerScratch()
    {
        var random = new TestRandom();
        var p = new TopKProblem(2, 4, 300, 500, KeySelection.TopK, 32, true);
        float[] scores = Scores(random, p.LifetimeElements);
        (KeyLifetime[] expected, int[] expectedSurvivors) = TopKReference.Build(p, scores);
        float[] keyMajor = new float[scores.Length]; // (B, Lk, H), the paper's layout of the score
        for (int b = 0; b < p.Batch; b++)
            for (int h = 0; h < p.Heads; h++)
                for (int j = 0; j < p.SeqLenK; j++)
                    keyMajor[((long)b * p.SeqLenK + j) * p.Heads + h] = scores[((long)b * p.Heads + h) * p.SeqLenK + j];
        long workspaceBytes = DynamicMaskAttention.TopKWorkspaceSize(p, ScalarType.Float32);

        using CudaPrimaryContext context = CudaPrimaryContext.Retain(0);
        using DeviceBuffer scoresBuffer = DeviceBuffer.FromHost<float>(context, keyMajor);
        using DeviceBuffer lifetimesBuffer = DeviceBuffer.Allocate(context, p.LifetimeElements * 8);
        using DeviceBuffer survivorsBuffer = DeviceBuffer.Allocate(context, p.SurvivorElements * sizeof(int));
        using DeviceBuffer workspace = DeviceBuffer.Allocate(context, Math.Max(workspaceBytes, 16));
        lifetimesBuffer.Fill(0xFF);
        survivorsBuffer.Fill(0xFF);
        using (context.Push())
        {
            DynamicMaskAttention.TopKLifetimes(new DeviceTopKArgs
            {
                Problem = p,
                Scores = new DeviceBroadcastTensor(scoresBuffer.Pointer, ScalarType.Float32, new(p.Batch, p.Heads, 1),
                    (long)p.SeqLenK * p.Heads, 1, 0, StrideKey: p.Heads),
                Lifetimes = lifetimesBuffer.Pointer,
                Survivors = survivorsBuffer.Pointer,
                Workspace = workspaceBytes > 0 ? workspace.Pointer : 0,
                WorkspaceBytes = workspaceBytes,
            });
            CudaDriver.Synchronize();
        }

        var lifetimes = new KeyLifetime[p.LifetimeElements];
        var survivors = new int[p.SurvivorElements];
        lifetimesBuffer.CopyTo<KeyLifetime>(lifetimes);
        survivorsBuffer.CopyTo<int>(survivors);
        AssertSameLifetimes(lifetimes, expected, p, random.ToString());
        Assert.That(survivors, Is.EqualTo(expectedSurvivors), $"survivors; {random}");
    }

    // Attention with the built lifetimes is DMA's attention with the dense per-query top-k mask.
    [TestCase(ScalarType.Float16)]
    [TestCase(ScalarType.BFloat16)]
    public void BuiltLifetimes_AttendAsTheDenseTopKMask(ScalarType dtype)
    {
        var random = new TestRandom();
        var shape = new AttentionShape(1, 150, 400, 4, 2, 64);
        var p = new TopKProblem(shape.Batch, shape.HeadsKv, shape.SeqLenQ, shape.SeqLenK, KeySelection.TopK, 48, true);
        float[] scores = Scores(random, p.LifetimeElements).Select(s => float.IsNaN(s) ? 0f : s).ToArray(); // the bias: no NaN
        KeyLifetime[] lifetimes = DynamicMaskAttention.TopKLifetimes<float>(p, scores);

        var c = new ForwardCase($"{GpuCaseMatrix.Short(dtype)} top-k attention", dtype, shape)
        {
            Causal = true,
            Mask = new(1, shape.HeadsKv, shape.SeqLenQ),
            Backend = FlashDmAttnBackend.Native,
        };
        byte[] dense = DenseTopKMask(p, scores);
        var inputs = new ForwardInputs(c, random, (_, _) => dense);
        double[] bias = scores.Select(s => (double)s).ToArray();
        var biasShape = new BroadcastShape(1, shape.HeadsKv, 1);

        var refOutput = new double[shape.QElements];
        var refLse = new double[shape.LseElements];
        ReferenceAttention.Forward(shape, inputs.Q, inputs.K, inputs.V, refOutput, c.Options, new MaskInput(dense, c.Mask!.Value),
            new ReferenceBias(bias, biasShape), refLse);
        Half[] output = Tensors.Filled<Half>(shape.QElements, double.NaN);
        BFloat16[] outputBf16 = Tensors.Filled<BFloat16>(shape.QElements, double.NaN);
        float[] lse = Tensors.Filled<float>(shape.LseElements, double.NaN);
        var lifetimesInput = new LifetimesInput(lifetimes, p.Batch, p.Heads);
        var biasInput = new BiasInput(scores, biasShape);
        if (dtype == ScalarType.Float16)
            DynamicMaskAttention.Forward<Half>(shape, Tensors.Narrow<Half>(inputs.Q), Tensors.Narrow<Half>(inputs.K), Tensors.Narrow<Half>(inputs.V),
                output, c.Options, default, biasInput, lse, lifetimes: lifetimesInput);
        else
            DynamicMaskAttention.Forward<BFloat16>(shape, Tensors.Narrow<BFloat16>(inputs.Q), Tensors.Narrow<BFloat16>(inputs.K),
                Tensors.Narrow<BFloat16>(inputs.V), outputBf16, c.Options, default, biasInput, lse, lifetimes: lifetimesInput);

        double[] got = dtype == ScalarType.Float16 ? Tensors.Widen<Half>(output) : Tensors.Widen<BFloat16>(outputBf16);
        ForwardCheck.Check(inputs, got, lse.Select(x => (double)x).ToArray(), refOutput, refLse);
    }

    // (B, H, Lq, Lk): key j visible to query i iff j is among the top w of the keys at or before i's position.
    private static byte[] DenseTopKMask(TopKProblem p, float[] scores)
    {
        int lq = p.SeqLenQ, lk = p.SeqLenK;
        var mask = new byte[(long)p.Batch * p.Heads * lq * lk];
        for (int plane = 0; plane < p.Batch * p.Heads; plane++)
            for (int i = 0; i < lq; i++)
                foreach (int j in TopKReference.Top(scores.AsSpan(plane * lk, lk), Enumerable.Range(0, Math.Clamp(i + lk - lq + 1, 0, lk)), p.Window))
                    mask[((long)plane * lq + i) * lk + j] = 1;
        return mask;
    }

    private static void AssertSameLifetimes(KeyLifetime[] actual, KeyLifetime[] expected, TopKProblem p, string context)
    {
        for (int e = 0; e < expected.Length; e++)
        {
            int plane = e / p.SeqLenK;
            string where = $"batch {plane / p.Heads}, head {plane % p.Heads}, key {e % p.SeqLenK}; {context}";
            // The header gives an unselected key of the non-causal positive selection no exact pair: only "never visible".
            if (p.Selection == KeySelection.Positive && !p.Causal && expected[e].First == expected[e].End)
                Assert.That(actual[e].First, Is.GreaterThanOrEqualTo(actual[e].End), where);
            else
                Assert.That(actual[e], Is.EqualTo(expected[e]), where);
        }
    }
}

using static FlashDmAttn.Tests.Gpu.GpuCaseMatrix;

namespace FlashDmAttn.Tests.Gpu;

/// <summary>
/// Key lifetimes against the double reference (whose visibility they define), once per backend: forward and backward
/// through the Span API on NaN-filled outputs, every broadcast of batch and heads, causal or not, with a bias, odd and
/// unequal lengths (Lq &lt; Lk and Lq &gt; Lk), every head dimension; the forward's visible-pair counter; the
/// device-pointer API with key-strided lifetimes; and lifetimes giving what the equivalent dense mask gives.
/// </summary>
[TestFixture(FlashDmAttnBackend.Native)]
[TestFixture(FlashDmAttnBackend.Nvrtc)]
[Category("Gpu")]
public class LifetimesGpuTests(FlashDmAttnBackend backend) : BackendGpuTest(backend)
{
    private static IEnumerable<ForwardCase> Cases()
    {
        int n = 0;
        foreach (int d in HeadDims)
        {
            ScalarType dtype = Alternate(n++);
            yield return new ForwardCase($"{Short(dtype)} D{d} Lq97 Lk130 lifetimes 2x2", dtype, new(2, 97, 130, 4, 2, d))
            {
                Lifetimes = new(2, 2, 1),
                Causal = d % 64 == 0,
                Bias = new(1, 4, 1),
            };
        }

        foreach (BroadcastShape l in new BroadcastShape[] { new(1, 1, 1), new(2, 1, 1), new(1, 2, 1), new(1, 4, 1), new(2, 4, 1) })
        {
            foreach (bool causal in new[] { false, true })
            {
                ScalarType dtype = Alternate(n++);
                yield return new ForwardCase($"{Short(dtype)} lifetimes {l.Batch}x{l.Heads}{(causal ? " causal" : "")}", dtype, new(2, 130, 257, 4, 2, 64))
                {
                    Lifetimes = l,
                    Causal = causal,
                    Bias = new(2, 2, 1),
                    BiasType = (ScalarType)(n % 3 + 1),
                };
            }
        }

        foreach ((int lq, int lk) in new[] { (1, 1), (1, 1025), (17, 300), (300, 17), (257, 1025), (1025, 257) })
        {
            ScalarType dtype = Alternate(n++);
            yield return new ForwardCase($"{Short(dtype)} lifetimes Lq{lq} Lk{lk} causal", dtype, new(1, lq, lk, 2, 1, 128))
            {
                Lifetimes = new(1, 1, 1),
                Causal = true,
                Softcap = n % 2 == 0 ? 30 : 0,
            };
        }
    }

    private static IEnumerable<TestCaseData> ForwardCases() => Cases().Select(c => new TestCaseData(c).SetArgDisplayNames(c.Name));

    private static IEnumerable<TestCaseData> BackwardCases() =>
        Cases().SelectMany(c => new[] { false, true }.Select(deterministic => new BackwardCase($"{c.Name}{(deterministic ? " det" : "")}", c)
        {
            Deterministic = deterministic,
            Float32BiasGradient = deterministic,
        })).Select(c => new TestCaseData(c).SetArgDisplayNames(c.Name));

    [TestCaseSource(nameof(ForwardCases))]
    public void SpanApiForward_MatchesTheReference_AndCountsTheVisiblePairs(ForwardCase c)
    {
        c = c with { Backend = Backend };
        var inputs = new ForwardInputs(c, new TestRandom());

        (double[] output, double[] lse, _) = inputs.RunSpanApi();
        (double[] refOutput, double[] refLse) = inputs.Reference();

        ForwardCheck.Check(inputs, output, lse, refOutput, refLse);
        Assert.That(inputs.LastStats.VisiblePairs, Is.EqualTo(inputs.VisiblePairs()), $"visible pairs; {c.Label}; {inputs.Random}");
    }

    [TestCaseSource(nameof(BackwardCases))]
    public void SpanApiBackward_GradientsMatchTheReference(BackwardCase c)
    {
        c = c.On(Backend);
        var inputs = new BackwardInputs(c, new TestRandom());

        (BackwardGradients gpu, _) = inputs.RunSpanApi();

        BackwardCheck.Check(inputs, gpu, inputs.Reference());
    }

    [TestCase(ScalarType.Float16, false)]
    [TestCase(ScalarType.BFloat16, true)]
    public void DeviceApi_KeyStridedLifetimes_MatchTheReference(ScalarType dtype, bool causal)
    {
        var c = new ForwardCase($"{Short(dtype)} key-major lifetimes", dtype, new(2, 97, 130, 4, 2, 64))
        {
            Lifetimes = new(2, 2, 1),
            Causal = causal,
            Bias = new(2, 2, 1),
            Backend = Backend,
        };
        var inputs = new ForwardInputs(c, new TestRandom());
        using var problem = new DeviceForwardProblem(inputs, keyMajorOperands: true);

        problem.Run(problem.Args);
        DeviceResults results = problem.Read();
        (double[] refOutput, double[] refLse) = inputs.Reference();

        ForwardCheck.Check(inputs, problem.OutputValues(results), results.Lse, refOutput, refLse);
    }

    // Lifetimes and the dense mask they stand for select the same pairs: the two runs agree to rounding (the lifetimes
    // path may gather keys, so not to the bit).
    [TestCase(ScalarType.Float16)]
    [TestCase(ScalarType.BFloat16)]
    public void Lifetimes_GiveWhatTheirDenseMaskGives(ScalarType dtype)
    {
        var withLifetimes = new ForwardCase($"{Short(dtype)} lifetimes vs mask", dtype, new(1, 200, 333, 2, 1, 128))
        {
            Lifetimes = new(1, 1, 1),
            Causal = true,
            Backend = Backend,
        };
        var random = new TestRandom();
        var inputs = new ForwardInputs(withLifetimes, random);
        byte[] dense = DenseMask(inputs.Lifetimes!, withLifetimes.Shape.SeqLenQ, withLifetimes.Shape.SeqLenK);
        var masked = new ForwardInputs(withLifetimes with { Lifetimes = null, Mask = new(1, 1, withLifetimes.Shape.SeqLenQ) }, new TestRandom(random.Seed),
            (_, _) => dense);

        (double[] output, double[] lse, _) = inputs.RunSpanApi();
        (double[] maskOutput, double[] maskLse, _) = masked.RunSpanApi();

        Assert.That(ErrorNorms.RelativeL2(output, maskOutput), Is.LessThanOrEqualTo(ForwardCheck.OutputBound(dtype)), $"output; {random}");
        Assert.That(ErrorNorms.MaxAbsFinite(lse, maskLse), Is.LessThanOrEqualTo(ForwardCheck.LseBound), $"LSE; {random}");
        Assert.That(lse.Select(double.IsNegativeInfinity), Is.EqualTo(maskLse.Select(double.IsNegativeInfinity)), $"empty rows; {random}");
    }

    // One (1, 1, Lq, Lk) byte mask: key j visible to query i iff First <= i < End.
    private static byte[] DenseMask(KeyLifetime[] pairs, int lq, int lk)
    {
        var mask = new byte[(long)lq * lk];
        for (int j = 0; j < lk; j++)
            for (int i = pairs[j].First; i < pairs[j].End; i++)
                mask[(long)i * lk + j] = 1;
        return mask;
    }
}

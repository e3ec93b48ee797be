using FlashDmAttn.Reference;

namespace FlashDmAttn.Tests;

/// <summary>
/// The reference's analytic gradients of L = sum(O * dO) against central finite differences of the reference forward,
/// in double, element by element, on tiny cases: every bias broadcast shape, grouped-query heads, softcap, scale,
/// causal with Lq &lt; Lk and Lq &gt; Lk (empty rows), masks with empty rows and never-visible keys. Then the contract's
/// exact zeros: rows without a visible key, masked bias entries, scores of -inf.
/// </summary>
public class ReferenceBackwardTests
{
    private const double Step = 1e-5;

    // Central differences with this step are good to ~1e-9 here; an analytic mistake is off by far more.
    private const double Tolerance = 1e-6;

    public sealed record GradientCase(string Name, AttentionShape Shape)
    {
        public bool Causal { get; init; }
        public float Softcap { get; init; }
        public float? Scale { get; init; }
        public BroadcastShape? Mask { get; init; }
        public double MaskDensity { get; init; } = 0.7;

        /// <summary>Blanks query row 1 of every mask plane and key 2 of every mask row.</summary>
        public bool BlankRowAndKey { get; init; }

        public BroadcastShape? Bias { get; init; }

        public AttentionOptions Options => new() { Causal = Causal, Softcap = Softcap, SoftmaxScale = Scale };

        public override string ToString() => Name;
    }

    private static IEnumerable<GradientCase> Cases()
    {
        yield return new("one head", new(1, 3, 4, 1, 1, 32));
        yield return new("GQA 4/2 full bias and mask", new(2, 3, 5, 4, 2, 32)) { Bias = new(2, 4, 3), Mask = new(2, 2, 3) };
        yield return new("MQA 4/1 causal softcap", new(2, 4, 4, 4, 1, 32)) { Causal = true, Softcap = 1, Scale = 0.5f, Bias = new(1, 1, 4) };
        yield return new("softcap and scale", new(1, 4, 6, 2, 1, 32)) { Softcap = 1, Scale = 0.5f, Bias = new(1, 2, 4), Mask = new(1, 1, 4) };
        yield return new("causal Lq<Lk", new(1, 3, 6, 2, 2, 32)) { Causal = true, Bias = new(1, 1, 1) };
        yield return new("causal Lq>Lk (empty rows)", new(1, 6, 3, 2, 1, 32)) { Causal = true, Bias = new(1, 2, 6) };
        yield return new("mask with an empty row and a never-visible key", new(2, 4, 5, 2, 1, 32))
            { Mask = new(2, 2, 4), BlankRowAndKey = true, Bias = new(2, 1, 4), Softcap = 2 };
        foreach (int batch in new[] { 1, 2 })
            foreach (int heads in new[] { 1, 2, 4 })
                foreach (int rows in new[] { 1, 3 })
                {
                    yield return new($"bias {batch}x{heads}x{rows}", new(2, 3, 5, 4, 2, 32))
                    {
                        Bias = new(batch, heads, rows),
                        Mask = new(1, 1, 3),
                        Causal = heads == 2,
                    };
                }
    }

    [TestCaseSource(nameof(Cases))]
    public void AnalyticGradients_MatchCentralFiniteDifferences(GradientCase c)
    {
        var random = new TestRandom();
        Problem p = Problem.Draw(c, random);

        Gradients analytic = p.Backward();

        CheckAgainstFiniteDifferences(p, p.Q, analytic.Q, "dq", random);
        CheckAgainstFiniteDifferences(p, p.K, analytic.K, "dk", random);
        CheckAgainstFiniteDifferences(p, p.V, analytic.V, "dv", random);
        if (p.Bias is not null)
            CheckAgainstFiniteDifferences(p, p.Bias, analytic.Bias!, "dbias", random);
    }

    [Test]
    public void RowsWithoutVisibleKey_AndMaskedBiasEntries_GetExactlyZeroGradient()
    {
        var c = new GradientCase("empty rows", new(1, 6, 3, 2, 2, 32)) { Causal = true, Mask = new(1, 2, 6), MaskDensity = 0.5, Bias = new(1, 2, 6), Softcap = 3 };
        var random = new TestRandom();
        Problem p = Problem.Draw(c, random);

        Gradients g = p.Backward();

        int d = 32, lq = 6, lk = 3, hq = 2;
        foreach (double[] gradient in new[] { g.Q, g.K, g.V, g.Bias! })
            Assert.That(gradient, Has.None.NaN, random.ToString());
        for (int h = 0; h < hq; h++)
            for (int i = 0; i < lq; i++)
            {
                bool anyVisible = false;
                for (int j = 0; j < lk; j++)
                {
                    int pair = (h * lq + i) * lk + j;
                    bool visible = j <= i + lk - lq && p.Mask![pair] != 0;
                    anyVisible |= visible;
                    if (!visible)
                        Assert.That(g.Bias![pair], Is.EqualTo(0.0), $"dbias of hidden pair h{h} i{i} j{j}; {random}");
                }

                int row = (i * hq + h) * d;
                if (!anyVisible)
                    Assert.That(g.Q[row..(row + d)], Is.All.EqualTo(0.0), $"dq of empty row h{h} i{i}; {random}");
            }
    }

    [Test]
    public void ScoresOfMinusInfinity_AreEmptyRowsWithoutNaN()
    {
        // Row 0 sees keys whose bias is -inf only: an empty row (zeros, LSE -inf); row 1 sees key 1 only.
        var c = new GradientCase("-inf bias", new(1, 2, 3, 1, 1, 32)) { Bias = new(1, 1, 2) };
        Problem p = Problem.Draw(c, new TestRandom());
        double inf = double.PositiveInfinity;
        double[] bias = [-inf, -inf, -inf, -inf, 0.5, -inf];
        p = p with { Bias = bias };
        var output = new double[p.Q.Length];
        var lse = new double[2];

        ReferenceAttention.Forward(c.Shape, p.Q, p.K, p.V, output, c.Options, default, new ReferenceBias(bias, c.Bias!.Value), lse);
        Gradients g = p.Backward();

        Assert.That(lse[0], Is.EqualTo(double.NegativeInfinity));
        Assert.That(output[..32], Is.All.EqualTo(0.0));
        Assert.That(output[32..], Is.EqualTo(p.V[32..64]));
        foreach (double[] gradient in new[] { g.Q, g.K, g.V, g.Bias! })
        {
            Assert.That(gradient.All(double.IsFinite), string.Join(", ", gradient));
        }

        Assert.That(g.V[32..64], Is.EqualTo(p.DOutput[32..64]), "row 1's weight on key 1 is 1");
        Assert.That(g.Bias![..3], Is.All.EqualTo(0.0));
    }

    [Test]
    public void ReferenceBackward_WritesEveryElementOfItsOutputs()
    {
        var c = new GradientCase("sentinels", new(2, 3, 5, 4, 2, 32)) { Bias = new(2, 2, 1), Mask = new(1, 1, 3), MaskDensity = 0.3 };
        Problem p = Problem.Draw(c, new TestRandom());
        Gradients fresh = p.Backward();
        double[] dq = Filled(p.Q.Length), dk = Filled(p.K.Length), dv = Filled(p.V.Length), dBias = Filled(p.Bias!.Length);

        ReferenceAttention.Backward(c.Shape, p.Q, p.K, p.V, p.DOutput, dq, dk, dv, c.Options,
            new MaskInput(p.Mask, c.Mask!.Value), new ReferenceBias(p.Bias, c.Bias!.Value), dBias);

        Assert.That(dq, Is.EqualTo(fresh.Q));
        Assert.That(dk, Is.EqualTo(fresh.K));
        Assert.That(dv, Is.EqualTo(fresh.V));
        Assert.That(dBias, Is.EqualTo(fresh.Bias));

        static double[] Filled(int length) => Enumerable.Repeat(double.NaN, length).ToArray();
    }

    private static void CheckAgainstFiniteDifferences(Problem p, double[] input, double[] analytic, string name, TestRandom random)
    {
        double worst = 0, norm = 0;
        int worstIndex = -1;
        for (int n = 0; n < input.Length; n++)
        {
            double x = input[n];
            input[n] = x + Step;
            double above = p.Loss();
            input[n] = x - Step;
            double below = p.Loss();
            input[n] = x;
            double numeric = (above - below) / (2 * Step);
            double error = Math.Abs(numeric - analytic[n]) / (1 + Math.Abs(analytic[n]));
            if (error > worst)
                (worst, worstIndex) = (error, n);
            norm += analytic[n] * analytic[n];
        }

        Assert.That(worst, Is.LessThanOrEqualTo(Tolerance), $"{name}[{worstIndex}]: analytic vs central difference; {p.Case}; {random}");
        Assert.That(Math.Sqrt(norm), Is.GreaterThan(1e-3), $"{name} is all but zero: the case tests nothing; {p.Case}; {random}");
    }

    private sealed record Gradients(double[] Q, double[] K, double[] V, double[]? Bias);

    private sealed record Problem(GradientCase Case, double[] Q, double[] K, double[] V, double[] DOutput, byte[]? Mask, double[]? Bias)
    {
        public static Problem Draw(GradientCase c, TestRandom random)
        {
            AttentionShape s = c.Shape;
            byte[]? mask = null;
            if (c.Mask is { } m)
            {
                mask = random.Mask(m.Elements(s.SeqLenK), c.MaskDensity);
                if (c.BlankRowAndKey)
                {
                    for (int row = 0; row < m.Batch * m.Heads * m.Rows; row++)
                        for (int j = 0; j < s.SeqLenK; j++)
                            if (row % m.Rows == 1 || j == 2)
                                mask[row * s.SeqLenK + j] = 0;
                }
            }

            return new Problem(c,
                random.Uniform(s.QElements, -0.5, 1.5), random.Uniform(s.KvElements, -0.5, 1.5), random.Uniform(s.KvElements, -1, 2),
                random.Uniform(s.QElements, -1, 1), mask, c.Bias is { } b ? random.Uniform(b.Elements(s.SeqLenK), -2, 1) : null);
        }

        private MaskInput MaskInput => Mask is null ? default : new MaskInput(Mask, Case.Mask!.Value);

        private ReferenceBias BiasInput => Bias is null ? default : new ReferenceBias(Bias, Case.Bias!.Value);

        public double Loss()
        {
            var output = new double[Q.Length];
            ReferenceAttention.Forward(Case.Shape, Q, K, V, output, Case.Options, MaskInput, BiasInput);
            double loss = 0;
            for (int n = 0; n < output.Length; n++)
                loss += output[n] * DOutput[n];
            return loss;
        }

        public Gradients Backward()
        {
            var g = new Gradients(new double[Q.Length], new double[K.Length], new double[V.Length], Bias is null ? null : new double[Bias.Length]);
            ReferenceAttention.Backward(Case.Shape, Q, K, V, DOutput, g.Q, g.K, g.V, Case.Options, MaskInput, BiasInput, g.Bias);
            return g;
        }
    }
}

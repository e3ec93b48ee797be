using FlashDmAttn.Reference;

namespace FlashDmAttn.Tests;

/// <summary>
/// The CPU reference against hand-computed cases, against a plainly written naive implementation, and against
/// every sentence of the contract (broadcasting, grouped-query mapping, causal alignment, empty rows, softcap,
/// default scale).
/// </summary>
public class ReferenceAttentionTests
{
    private const double Exact = 1e-13;

    // ---- hand-computed cases (D = 32; only the first components are nonzero) ----

    [Test]
    public void TwoQueriesTwoKeys_MatchHandComputedSoftmax()
    {
        var shape = new AttentionShape(1, 2, 2, 1, 1, 32);
        double[] q = Rows(32, [Math.Log(3), 0], [0, 0]);
        double[] k = Rows(32, [1, 0], [0, 0]);
        double[] v = Rows(32, [4, 0, 8], [0, 4, 0]);
        var lse = new double[2];

        double[] o = Run(shape, q, k, v, new AttentionOptions { SoftmaxScale = 1 }, lse: lse);

        // Row 0: scores (ln 3, 0) -> weights (3/4, 1/4); row 1: scores (0, 0) -> (1/2, 1/2).
        Assert.That(o[..3], Is.EqualTo(new[] { 3.0, 1.0, 6.0 }).Within(Exact));
        Assert.That(o[32..35], Is.EqualTo(new[] { 2.0, 2.0, 4.0 }).Within(Exact));
        Assert.That(lse, Is.EqualTo(new[] { Math.Log(4), Math.Log(2) }).Within(Exact));
    }

    [Test]
    public void SingleVisibleKey_OutputIsItsValueAndLseItsScore()
    {
        var shape = new AttentionShape(1, 1, 1, 1, 1, 32);
        double[] q = Rows(32, [0.5, 2]);
        double[] k = Rows(32, [3, -1]);
        double[] v = Rows(32, [7, -3, 0.25]);
        var lse = new double[1];

        double[] o = Run(shape, q, k, v, new AttentionOptions { SoftmaxScale = 2 }, lse: lse);

        Assert.That(o, Is.EqualTo(v));
        Assert.That(lse[0], Is.EqualTo(2 * (0.5 * 3 + 2 * -1)).Within(Exact));
    }

    [Test]
    public void LargeScores_AreComputedStably()
    {
        var shape = new AttentionShape(1, 1, 2, 1, 1, 32);
        double[] q = Rows(32, [100]);
        double[] k = Rows(32, [100], [99.9]);
        double[] v = Rows(32, [1, 0], [0, 1]);
        var lse = new double[1];

        double[] o = Run(shape, q, k, v, new AttentionOptions { SoftmaxScale = 1 }, lse: lse);

        // Scores 10000 and 9990: exp overflows unless the maximum is subtracted first.
        double p1 = 1 / (1 + Math.Exp(10));
        Assert.That(o[..2], Is.EqualTo(new[] { 1 - p1, p1 }).Within(Exact));
        Assert.That(lse[0], Is.EqualTo(10000 + Math.Log(1 + Math.Exp(-10))).Within(1e-9));
    }

    [Test]
    public void Softcap_IsAppliedAfterTheBiasIsAdded()
    {
        var shape = new AttentionShape(1, 1, 2, 1, 1, 32);
        double[] q = Rows(32, [1]);
        double[] k = Rows(32, [2], [-1]);
        double[] v = Rows(32, [1, 0], [0, 1]);
        double[] bias = [0.3, -0.2];
        const double scale = 0.5, cap = 0.75; // exact in float, as the options hold them
        var lse = new double[1];

        double[] o = Run(shape, q, k, v, new AttentionOptions { SoftmaxScale = (float)scale, Softcap = (float)cap },
            bias: bias, biasShape: new BroadcastShape(1, 1, 1), lse: lse);

        double s0 = cap * Math.Tanh((scale * 2 + 0.3) / cap), s1 = cap * Math.Tanh((scale * -1 - 0.2) / cap);
        double sum = Math.Exp(s0) + Math.Exp(s1);
        Assert.That(o[..2], Is.EqualTo(new[] { Math.Exp(s0) / sum, Math.Exp(s1) / sum }).Within(Exact));
        Assert.That(lse[0], Is.EqualTo(Math.Log(sum)).Within(Exact));
    }

    [Test]
    public void GroupedQueryHeads_ReadKvHeadAndMaskHeadHDividedByGroupSize()
    {
        // Hq = 4, Hkv = 2: query heads 0, 1 read kv head 0 and heads 2, 3 read kv head 1 (not h % Hkv).
        var shape = new AttentionShape(1, 1, 2, 4, 2, 32);
        var random = new TestRandom();
        double[] q = random.Uniform(shape.QElements, -0.5, 1.5);
        double[] k = random.Uniform(shape.KvElements, -0.5, 1.5);
        double[] v = random.Uniform(shape.KvElements, -0.5, 1.5);
        byte[] mask = [1, 0, /* mask head 1: */ 0, 1]; // mask head 0 shows key 0 only, head 1 key 1 only

        double[] o = Run(shape, q, k, v, mask: mask, maskShape: new BroadcastShape(1, 2, 1));

        for (int h = 0; h < 4; h++)
        {
            int g = h / 2, key = h / 2;
            int start = (key * 2 + g) * 32;
            double[] expected = v[start..(start + 32)];
            Assert.That(o[(h * 32)..((h + 1) * 32)], Is.EqualTo(expected), $"query head {h}; {random}");
        }
    }

    // ---- causal alignment and empty rows ----

    [TestCase(2, 4, TestName = "Causal_LqBelowLk_IsBottomRightAligned")]
    [TestCase(3, 3, TestName = "Causal_LqEqualsLk_IsLowerTriangular")]
    [TestCase(5, 2, TestName = "Causal_LqAboveLk_LeavesTopRowsEmpty")]
    public void Causal_EqualsTheMaskJNotAboveIPlusLkMinusLq(int lq, int lk)
    {
        var shape = new AttentionShape(2, lq, lk, 2, 1, 32);
        var random = new TestRandom();
        (double[] q, double[] k, double[] v) = RandomQkv(shape, random);
        var mask = new byte[lq * lk];
        for (int i = 0; i < lq; i++)
            for (int j = 0; j < lk; j++)
                mask[i * lk + j] = j <= i + lk - lq ? (byte)1 : (byte)0;
        var causalLse = new double[shape.LseElements];
        var maskedLse = new double[shape.LseElements];

        double[] causal = Run(shape, q, k, v, new AttentionOptions { Causal = true }, lse: causalLse);
        double[] masked = Run(shape, q, k, v, mask: mask, maskShape: new BroadcastShape(1, 1, lq), lse: maskedLse);

        Assert.That(causal, Is.EqualTo(masked), random.ToString());
        Assert.That(causalLse, Is.EqualTo(maskedLse), random.ToString());
        int emptyRows = Math.Max(0, lq - lk);
        for (int b = 0; b < 2; b++)
            for (int h = 0; h < 2; h++)
                for (int i = 0; i < lq; i++)
                    Assert.That(double.IsNegativeInfinity(causalLse[(b * 2 + h) * lq + i]), Is.EqualTo(i < emptyRows), $"row {i}");
    }

    [Test]
    public void RowWithoutVisibleKey_GivesZerosAndNegativeInfinityNeverNaN()
    {
        var shape = new AttentionShape(1, 3, 4, 1, 1, 32);
        var random = new TestRandom();
        (double[] q, double[] k, double[] v) = RandomQkv(shape, random);
        byte[] mask = [1, 0, 1, 1, /* empty: */ 0, 0, 0, 0, 0, 0, 0, 9];
        double[] bias = random.Uniform(12, -1, 1);
        var lse = new double[3];

        double[] o = Run(shape, q, k, v, new AttentionOptions { Softcap = 2 }, mask, new BroadcastShape(1, 1, 3),
            bias, new BroadcastShape(1, 1, 3), lse);

        Assert.That(o[32..64], Is.All.EqualTo(0.0));
        Assert.That(lse[1], Is.EqualTo(double.NegativeInfinity));
        Assert.That(o, Has.None.NaN);
        Assert.That(double.IsFinite(lse[0]) && double.IsFinite(lse[2]), random.ToString());
        Assert.That(o[64..96], Is.EqualTo(v[(3 * 32)..(4 * 32)]), "row 2 sees key 3 only");
    }

    [Test]
    public void EverythingMaskedOrCausallyHidden_GivesAllZeros()
    {
        var shape = new AttentionShape(2, 4, 2, 2, 2, 64);
        var random = new TestRandom();
        (double[] q, double[] k, double[] v) = RandomQkv(shape, random);
        var lse = new double[shape.LseElements];

        double[] o = Run(shape, q, k, v, new AttentionOptions { Causal = true }, mask: new byte[2], maskShape: new BroadcastShape(1, 1, 1), lse: lse);

        Assert.That(o, Is.All.EqualTo(0.0));
        Assert.That(lse, Is.All.EqualTo(double.NegativeInfinity));
    }

    [Test]
    public void AnyNonzeroMaskByte_MeansVisible()
    {
        var shape = new AttentionShape(1, 3, 5, 1, 1, 32);
        var random = new TestRandom();
        (double[] q, double[] k, double[] v) = RandomQkv(shape, random);
        byte[] ones = random.Mask(15, 0.6);
        byte[] various = ones.Select((m, i) => m == 0 ? (byte)0 : (byte)(i % 3 == 0 ? 255 : i % 3 == 1 ? 1 : 128)).ToArray();
        var maskShape = new BroadcastShape(1, 1, 3);

        Assert.That(Run(shape, q, k, v, mask: various, maskShape: maskShape),
            Is.EqualTo(Run(shape, q, k, v, mask: ones.Select(m => m == 0 ? (byte)0 : (byte)1).ToArray(), maskShape: maskShape)),
            random.ToString());
    }

    // ---- scale and bias ----

    [Test]
    public void DefaultScale_IsOneOverSqrtHeadDim()
    {
        var shape = new AttentionShape(1, 4, 6, 2, 2, 64);
        var random = new TestRandom();
        (double[] q, double[] k, double[] v) = RandomQkv(shape, random);

        double[] byDefault = Run(shape, q, k, v);
        double[] explicitScale = Run(shape, q, k, v, new AttentionOptions { SoftmaxScale = 0.125f }); // 1/sqrt(64), exact
        double[] unitScale = Run(shape, q, k, v, new AttentionOptions { SoftmaxScale = 1 });

        Assert.That(byDefault, Is.EqualTo(explicitScale), random.ToString());
        Assert.That(ErrorNorms.RelativeL2(unitScale, byDefault), Is.GreaterThan(1e-6), random.ToString());
    }

    [Test]
    public void ScaleMultipliesTheDotProductButNotTheBias()
    {
        var shape = new AttentionShape(1, 1, 2, 1, 1, 32);
        double[] q = Rows(32, [1]);
        double[] k = Rows(32, [1], [0]);
        double[] v = Rows(32, [1, 0], [0, 1]);
        var lse = new double[1];

        Run(shape, q, k, v, new AttentionOptions { SoftmaxScale = 3 }, bias: [0.5, 2], biasShape: new BroadcastShape(1, 1, 1), lse: lse);

        Assert.That(lse[0], Is.EqualTo(Math.Log(Math.Exp(3 * 1 + 0.5) + Math.Exp(3 * 0 + 2))).Within(Exact));
    }

    [Test]
    public void AddingAConstantToARowOfBias_ShiftsLseAndKeepsTheOutput()
    {
        var shape = new AttentionShape(2, 5, 9, 2, 1, 32);
        var random = new TestRandom();
        (double[] q, double[] k, double[] v) = RandomQkv(shape, random);
        var biasShape = new BroadcastShape(2, 2, 5);
        double[] bias = random.Uniform(biasShape.Elements(9), -2, 1);
        double[] shifted = bias.Select(b => b + 3.5).ToArray();
        var lse = new double[shape.LseElements];
        var shiftedLse = new double[shape.LseElements];

        double[] o = Run(shape, q, k, v, bias: bias, biasShape: biasShape, lse: lse);
        double[] shiftedO = Run(shape, q, k, v, bias: shifted, biasShape: biasShape, lse: shiftedLse);

        Assert.That(shiftedO, Is.EqualTo(o).Within(1e-12), random.ToString());
        Assert.That(shiftedLse, Is.EqualTo(lse.Select(l => l + 3.5).ToArray()).Within(1e-12), random.ToString());
    }

    // ---- broadcasting and grouped-query attention, against expanded operands and the naive implementation ----

    private static IEnumerable<TestCaseData> BroadcastShapes()
    {
        // B = 2, Hq = 4, Hkv = 2, Lq = 5: every allowed (batch, heads, rows).
        foreach (int batch in new[] { 1, 2 })
            foreach (int heads in new[] { 1, 2, 4 })
                foreach (int rows in new[] { 1, 5 })
                    yield return new TestCaseData(new BroadcastShape(batch, heads, rows)).SetArgDisplayNames($"{batch}x{heads}x{rows}");
    }

    [TestCaseSource(nameof(BroadcastShapes))]
    public void BroadcastMask_EqualsTheExpandedMask(BroadcastShape maskShape)
    {
        var shape = new AttentionShape(2, 5, 7, 4, 2, 32);
        var random = new TestRandom();
        (double[] q, double[] k, double[] v) = RandomQkv(shape, random);
        byte[] mask = random.Mask(maskShape.Elements(7), 0.5);
        byte[] expanded = Expand(mask, maskShape, shape);
        var full = new BroadcastShape(2, 4, 5);
        var options = new AttentionOptions { Causal = true };

        double[] o = Run(shape, q, k, v, options, mask, maskShape);

        Assert.That(o, Is.EqualTo(Run(shape, q, k, v, options, expanded, full)), random.ToString());
        Assert.That(ErrorNorms.RelativeL2(o, Naive(shape, q, k, v, options, expanded, null).Output), Is.LessThan(1e-12), random.ToString());
    }

    [TestCaseSource(nameof(BroadcastShapes))]
    public void BroadcastBias_EqualsTheExpandedBias(BroadcastShape biasShape)
    {
        var shape = new AttentionShape(2, 5, 7, 4, 2, 32);
        var random = new TestRandom();
        (double[] q, double[] k, double[] v) = RandomQkv(shape, random);
        double[] bias = random.Uniform(biasShape.Elements(7), -2, 1);
        double[] expanded = Expand(bias, biasShape, shape);
        var full = new BroadcastShape(2, 4, 5);

        double[] o = Run(shape, q, k, v, bias: bias, biasShape: biasShape);

        Assert.That(o, Is.EqualTo(Run(shape, q, k, v, bias: expanded, biasShape: full)), random.ToString());
        Assert.That(ErrorNorms.RelativeL2(o, Naive(shape, q, k, v, null, null, expanded).Output), Is.LessThan(1e-12), random.ToString());
    }

    [TestCase(4, 4)]
    [TestCase(4, 2)]
    [TestCase(8, 1)]
    public void GroupedQueryAttention_EqualsMultiHeadWithRepeatedKvHeads(int headsQ, int headsKv)
    {
        var shape = new AttentionShape(2, 3, 6, headsQ, headsKv, 32);
        var random = new TestRandom();
        (double[] q, double[] k, double[] v) = RandomQkv(shape, random);
        var multiHead = shape with { HeadsKv = headsQ };
        double[] kRepeated = RepeatKvHeads(k, shape), vRepeated = RepeatKvHeads(v, shape);

        Assert.That(Run(shape, q, k, v), Is.EqualTo(Run(multiHead, q, kRepeated, vRepeated)), random.ToString());
    }

    public sealed record NaiveCase(
        AttentionShape Shape, bool Causal = false, float Softcap = 0, float? Scale = null,
        BroadcastShape? Mask = null, BroadcastShape? Bias = null, double Density = 0.6)
    {
        public override string ToString() =>
            $"B{Shape.Batch} Lq{Shape.SeqLenQ} Lk{Shape.SeqLenK} Hq{Shape.HeadsQ} Hkv{Shape.HeadsKv} D{Shape.HeadDim}"
            + (Causal ? " causal" : "") + (Softcap > 0 ? $" cap{Softcap}" : "") + (Scale is float s ? $" scale{s}" : "")
            + (Mask is { } m ? $" mask{m.Batch}x{m.Heads}x{m.Rows}" : "") + (Bias is { } b ? $" bias{b.Batch}x{b.Heads}x{b.Rows}" : "");
    }

    private static IEnumerable<TestCaseData> NaiveCases() => new NaiveCase[]
    {
        new(new AttentionShape(1, 1, 1, 1, 1, 32)),
        new(new AttentionShape(2, 5, 7, 4, 2, 32), Causal: true, Mask: new(2, 4, 5), Bias: new(2, 4, 5)),
        new(new AttentionShape(1, 7, 3, 8, 1, 64), Causal: true, Bias: new(1, 1, 7)),
        new(new AttentionShape(2, 3, 9, 2, 2, 96), Softcap: 5, Scale: 0.3f, Mask: new(1, 2, 1), Density: 0.3),
        new(new AttentionShape(1, 9, 9, 6, 3, 128), Causal: true, Mask: new(1, 3, 9), Bias: new(1, 3, 9), Softcap: 1.5f),
        new(new AttentionShape(1, 4, 17, 2, 1, 256), Mask: new(1, 1, 4), Density: 0.05),
        new(new AttentionShape(3, 2, 5, 3, 3, 192), Causal: true, Bias: new(3, 1, 1), Scale: 2f),
    }.Select(c => new TestCaseData(c).SetArgDisplayNames(c.ToString()));

    [TestCaseSource(nameof(NaiveCases))]
    public void RandomInputs_MatchTheNaiveImplementation(NaiveCase c)
    {
        AttentionShape shape = c.Shape;
        var random = new TestRandom();
        (double[] q, double[] k, double[] v) = RandomQkv(shape, random);
        byte[]? mask = c.Mask is { } ms ? random.Mask(ms.Elements(shape.SeqLenK), c.Density) : null;
        double[]? bias = c.Bias is { } bs ? random.Uniform(bs.Elements(shape.SeqLenK), -2, 1) : null;
        var options = new AttentionOptions { Causal = c.Causal, Softcap = c.Softcap, SoftmaxScale = c.Scale };
        var lse = new double[shape.LseElements];

        double[] o = Run(shape, q, k, v, options, mask, c.Mask ?? default, bias, c.Bias ?? default, lse);
        (double[] naiveO, double[] naiveLse) = Naive(shape, q, k, v, options,
            mask is null ? null : Expand(mask, c.Mask!.Value, shape), bias is null ? null : Expand(bias, c.Bias!.Value, shape));

        Assert.That(ErrorNorms.RelativeL2(o, naiveO), Is.LessThan(1e-12), random.ToString());
        for (int i = 0; i < lse.Length; i++)
        {
            if (double.IsNegativeInfinity(naiveLse[i]))
                Assert.That(lse[i], Is.EqualTo(double.NegativeInfinity), $"row {i}; {random}");
            else
                Assert.That(lse[i], Is.EqualTo(naiveLse[i]).Within(1e-12), $"row {i}; {random}");
        }
    }

    // ---- the Half / BFloat16 overload ----

    [TestCase(typeof(Half), ScalarType.Float32)]
    [TestCase(typeof(Half), ScalarType.Float16)]
    [TestCase(typeof(BFloat16), ScalarType.BFloat16)]
    [TestCase(typeof(BFloat16), ScalarType.Float32)]
    public void GenericOverload_IsTheDoubleResultRoundedOnce(Type elementType, ScalarType biasType)
    {
        if (elementType == typeof(Half))
            CheckGenericOverload<Half>(biasType);
        else
            CheckGenericOverload<BFloat16>(biasType);
    }

    private static void CheckGenericOverload<T>(ScalarType biasType) where T : unmanaged
    {
        var shape = new AttentionShape(2, 6, 11, 4, 2, 64);
        var random = new TestRandom();
        T[] q = Tensors.Narrow<T>(random.Uniform(shape.QElements, -0.5, 1.5));
        T[] k = Tensors.Narrow<T>(random.Uniform(shape.KvElements, -0.5, 1.5));
        T[] v = Tensors.Narrow<T>(random.Uniform(shape.KvElements, -1, 2));
        var maskShape = new BroadcastShape(2, 2, 6);
        byte[] mask = random.Mask(maskShape.Elements(11), 0.5);
        var biasShape = new BroadcastShape(1, 4, 1);
        double[] biasValues = Tensors.RoundTo(biasType, random.Uniform(biasShape.Elements(11), -2, 1));
        var options = new AttentionOptions { Causal = true, Softcap = 3 };
        T[] output = Tensors.Filled<T>(shape.QElements, double.NaN);
        var lse = new float[shape.LseElements];

        switch (biasType)
        {
            case ScalarType.Float16:
                ReferenceAttention.Forward<T>(shape, q, k, v, output, options, new MaskInput(mask, maskShape),
                    new BiasInput(Tensors.Narrow<Half>(biasValues), biasShape), lse);
                break;
            case ScalarType.BFloat16:
                ReferenceAttention.Forward<T>(shape, q, k, v, output, options, new MaskInput(mask, maskShape),
                    new BiasInput(Tensors.Narrow<BFloat16>(biasValues), biasShape), lse);
                break;
            default:
                ReferenceAttention.Forward<T>(shape, q, k, v, output, options, new MaskInput(mask, maskShape),
                    new BiasInput(Tensors.Narrow<float>(biasValues), biasShape), lse);
                break;
        }

        var wideLse = new double[shape.LseElements];
        double[] wide = Run(shape, Tensors.Widen<T>(q), Tensors.Widen<T>(k), Tensors.Widen<T>(v), options,
            mask, maskShape, biasValues, biasShape, wideLse);
        Assert.That(output, Is.EqualTo(Tensors.Narrow<T>(wide)), random.ToString());
        Assert.That(lse, Is.EqualTo(wideLse.Select(l => (float)l).ToArray()), random.ToString());
    }

    [TestCase(1 + 1.0 / 256 + 1.0 / (1L << 40), (ushort)0x3F81, TestName = "RoundToBFloat16_JustAboveATie_RoundsUp")]
    [TestCase(1 + 1.0 / 256 - 1.0 / (1L << 40), (ushort)0x3F80, TestName = "RoundToBFloat16_JustBelowATie_RoundsDown")]
    [TestCase(1 + 1.0 / 256, (ushort)0x3F80, TestName = "RoundToBFloat16_TieWithEvenBelow_RoundsDown")]
    [TestCase(1 + 3.0 / 256, (ushort)0x3F82, TestName = "RoundToBFloat16_TieWithOddBelow_RoundsUp")]
    [TestCase(-(1 + 1.0 / 256 + 1.0 / (1L << 40)), (ushort)0xBF81, TestName = "RoundToBFloat16_NegativeJustAboveATie_RoundsAway")]
    public void RoundToBFloat16_RoundsOnceFromDouble(double value, ushort expectedBits)
    {
        // A float-first rounding would turn the first two values into exact ties and get them wrong.
        Assert.That(ReferenceAttention.RoundToBFloat16(value).RawValue, Is.EqualTo(expectedBits));
    }

    // ---- helpers ----

    private static double[] Run(
        AttentionShape shape, double[] q, double[] k, double[] v, AttentionOptions? options = null,
        byte[]? mask = null, BroadcastShape maskShape = default, double[]? bias = null, BroadcastShape biasShape = default,
        double[]? lse = null)
    {
        var output = new double[shape.QElements];
        Array.Fill(output, double.NaN);
        ReferenceAttention.Forward(shape, q, k, v, output, options,
            mask is null ? default : new MaskInput(mask, maskShape),
            bias is null ? default : new ReferenceBias(bias, biasShape),
            lse);
        return output;
    }

    /// <summary>A (1, L, 1, D) tensor whose rows start with the given values and are zero after.</summary>
    private static double[] Rows(int headDim, params double[][] leading)
    {
        var tensor = new double[leading.Length * headDim];
        for (int row = 0; row < leading.Length; row++)
            leading[row].CopyTo(tensor, row * headDim);
        return tensor;
    }

    private static (double[] Q, double[] K, double[] V) RandomQkv(AttentionShape shape, TestRandom random) =>
        (random.Uniform(shape.QElements, -0.5, 1.5), random.Uniform(shape.KvElements, -0.5, 1.5), random.Uniform(shape.KvElements, -1, 2));

    /// <summary>The (B, Hq, Lq, Lk) operand a broadcast operand stands for, written out element by element.</summary>
    private static TElement[] Expand<TElement>(TElement[] data, BroadcastShape from, AttentionShape shape)
    {
        int lk = shape.SeqLenK, groupSize = shape.HeadsQ / shape.HeadsKv;
        var full = new TElement[shape.Batch * shape.HeadsQ * shape.SeqLenQ * lk];
        for (int b = 0; b < shape.Batch; b++)
            for (int h = 0; h < shape.HeadsQ; h++)
                for (int i = 0; i < shape.SeqLenQ; i++)
                    for (int j = 0; j < lk; j++)
                    {
                        int sourceHead = from.Heads == 1 ? 0 : from.Heads == shape.HeadsQ ? h : h / groupSize;
                        int source = (((from.Batch == 1 ? 0 : b) * from.Heads + sourceHead) * from.Rows + (from.Rows == 1 ? 0 : i)) * lk + j;
                        full[((b * shape.HeadsQ + h) * shape.SeqLenQ + i) * lk + j] = data[source];
                    }

        return full;
    }

    private static double[] RepeatKvHeads(double[] kv, AttentionShape shape)
    {
        int d = shape.HeadDim, groupSize = shape.HeadsQ / shape.HeadsKv;
        var repeated = new double[shape.Batch * shape.SeqLenK * shape.HeadsQ * d];
        for (int b = 0; b < shape.Batch; b++)
            for (int j = 0; j < shape.SeqLenK; j++)
                for (int h = 0; h < shape.HeadsQ; h++)
                    Array.Copy(kv, ((b * shape.SeqLenK + j) * shape.HeadsKv + h / groupSize) * d,
                        repeated, ((b * shape.SeqLenK + j) * shape.HeadsQ + h) * d, d);
        return repeated;
    }

    /// <summary>
    /// Attention written as plainly as possible, from the formulas: expanded (B, Hq, Lq, Lk) mask and bias,
    /// a list of the visible scores per row, then softmax of that list.
    /// </summary>
    private static (double[] Output, double[] Lse) Naive(
        AttentionShape shape, double[] q, double[] k, double[] v, AttentionOptions? options, byte[]? fullMask, double[]? fullBias)
    {
        int B = shape.Batch, Lq = shape.SeqLenQ, Lk = shape.SeqLenK, Hq = shape.HeadsQ, Hkv = shape.HeadsKv, D = shape.HeadDim;
        double scale = options?.SoftmaxScale ?? 1 / Math.Sqrt(D);
        double cap = options?.Softcap ?? 0;
        bool causal = options?.Causal ?? false;
        var output = new double[B * Lq * Hq * D];
        var lse = new double[B * Hq * Lq];
        for (int b = 0; b < B; b++)
            for (int h = 0; h < Hq; h++)
                for (int i = 0; i < Lq; i++)
                {
                    int kvHead = h / (Hq / Hkv);
                    var keys = new List<int>();
                    var scores = new List<double>();
                    for (int j = 0; j < Lk; j++)
                    {
                        int at = ((b * Hq + h) * Lq + i) * Lk + j;
                        if (causal && j > i + Lk - Lq) continue;
                        if (fullMask != null && fullMask[at] == 0) continue;
                        double s = 0;
                        for (int x = 0; x < D; x++)
                            s += q[((b * Lq + i) * Hq + h) * D + x] * k[((b * Lk + j) * Hkv + kvHead) * D + x];
                        s *= scale;
                        if (fullBias != null) s += fullBias[at];
                        if (cap > 0) s = cap * Math.Tanh(s / cap);
                        keys.Add(j);
                        scores.Add(s);
                    }

                    if (keys.Count == 0)
                    {
                        lse[(b * Hq + h) * Lq + i] = double.NegativeInfinity;
                        continue; // output row stays 0
                    }

                    double max = scores.Max();
                    double[] weights = scores.Select(s => Math.Exp(s - max)).ToArray();
                    double total = weights.Sum();
                    for (int n = 0; n < keys.Count; n++)
                        for (int x = 0; x < D; x++)
                            output[((b * Lq + i) * Hq + h) * D + x] += weights[n] / total * v[((b * Lk + keys[n]) * Hkv + kvHead) * D + x];
                    lse[(b * Hq + h) * Lq + i] = max + Math.Log(total);
                }

        return (output, lse);
    }
}

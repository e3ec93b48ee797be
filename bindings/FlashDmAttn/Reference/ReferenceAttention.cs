using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace FlashDmAttn.Reference;

/// <summary>
/// CPU reference of the Dynamic Mask Attention forward pass, accumulating in double. It follows the same
/// contract as <see cref="DynamicMaskAttention"/> (broadcasting, grouped-query head mapping, bottom-right causal
/// alignment, softcap after bias, empty rows giving zeros and -inf) and validates its arguments with the same
/// rules, so one test suite can run against both. Tensors are (B, L, H, D) contiguous; LSE is (B, Hq, Lq).
/// It is meant for tests and small problems: its cost is O(B * Hq * Lq * Lk * D).
/// </summary>
public static partial class ReferenceAttention
{
    /// <summary>
    /// Computes the attention output (and optionally the log-sum-exp of the scores) in double precision.
    /// </summary>
    /// <param name="shape">Batch, sequence lengths, head counts and head dimension.</param>
    /// <param name="q">Queries, (B, Lq, Hq, D) contiguous.</param>
    /// <param name="k">Keys, (B, Lk, Hkv, D) contiguous.</param>
    /// <param name="v">Values, (B, Lk, Hkv, D) contiguous.</param>
    /// <param name="output">Receives the output, (B, Lq, Hq, D) contiguous.</param>
    /// <param name="options">Scale (default 1/sqrt(D)), softcap and causality; <c>null</c> for the defaults.</param>
    /// <param name="mask">Optional mask; nonzero = visible.</param>
    /// <param name="bias">Optional bias added to the scaled score.</param>
    /// <param name="lse">Optional, receives the natural-log log-sum-exp per (B, Hq, Lq); -inf on empty rows.</param>
    /// <param name="lifetimes">Optional key lifetimes, instead of a mask.</param>
    public static void Forward(
        AttentionShape shape,
        ReadOnlySpan<double> q,
        ReadOnlySpan<double> k,
        ReadOnlySpan<double> v,
        Span<double> output,
        AttentionOptions? options = null,
        MaskInput mask = default,
        ReferenceBias bias = default,
        Span<double> lse = default,
        LifetimesInput lifetimes = default)
    {
        ArgumentValidation.ValidateHostForward<double, double>(shape, q, k, v, output, options, mask.Operand, lifetimes.Operand, bias.Operand, lse);
        if (lifetimes.IsPresent)
            mask = lifetimes.AsDenseMask(shape); // the visibility they define, as a dense mask
        options ??= AttentionOptions.Default;
        int lq = shape.SeqLenQ, lk = shape.SeqLenK, hq = shape.HeadsQ, hkv = shape.HeadsKv, d = shape.HeadDim;
        int groupSize = hq / hkv;
        var scores = new double[lk];
        var visible = new bool[lk];

        for (int b = 0; b < shape.Batch; b++)
        for (int h = 0; h < hq; h++)
        {
            int g = h / groupSize;
            for (int i = 0; i < lq; i++)
            {
                double max = ScoreRow(shape, options, q, k, mask, bias, b, h, i, scores, visible);
                Span<double> oi = output.Slice(Index(b, i, h, lq, hq, d), d);
                oi.Clear();
                double rowLse = double.NegativeInfinity;
                if (max > double.NegativeInfinity) // some key is visible with a score above -inf
                {
                    double sum = 0;
                    for (int j = 0; j < lk; j++)
                    {
                        if (!visible[j])
                            continue;
                        double p = Math.Exp(scores[j] - max); // max-subtraction keeps every term <= 1
                        sum += p;
                        ReadOnlySpan<double> vj = v.Slice(Index(b, j, g, lk, hkv, d), d);
                        for (int x = 0; x < d; x++)
                            oi[x] += p * vj[x];
                    }

                    for (int x = 0; x < d; x++)
                        oi[x] /= sum;
                    rowLse = max + Math.Log(sum);
                }

                if (!lse.IsEmpty)
                    lse[(b * hq + h) * lq + i] = rowLse;
            }
        }
    }

    /// <summary>
    /// The same computation over <see cref="Half"/> or <see cref="BFloat16"/> tensors, with exactly the parameters
    /// of the Span API (less the device): inputs are widened to double, the output is rounded once (to nearest even).
    /// </summary>
    /// <typeparam name="T"><see cref="Half"/> or <see cref="BFloat16"/>.</typeparam>
    /// <param name="shape">Batch, sequence lengths, head counts and head dimension.</param>
    /// <param name="q">Queries, (B, Lq, Hq, D) contiguous.</param>
    /// <param name="k">Keys, (B, Lk, Hkv, D) contiguous.</param>
    /// <param name="v">Values, (B, Lk, Hkv, D) contiguous.</param>
    /// <param name="output">Receives the output, (B, Lq, Hq, D) contiguous.</param>
    /// <param name="options">Scale (default 1/sqrt(D)), softcap and causality; <c>null</c> for the defaults.</param>
    /// <param name="mask">Optional mask; nonzero = visible.</param>
    /// <param name="bias">Optional bias (float, half or bfloat16) added to the scaled score.</param>
    /// <param name="lse">Optional, receives the natural-log log-sum-exp per (B, Hq, Lq); -inf on empty rows.</param>
    /// <param name="lifetimes">Optional key lifetimes, instead of a mask.</param>
    public static void Forward<T>(
        AttentionShape shape,
        ReadOnlySpan<T> q,
        ReadOnlySpan<T> k,
        ReadOnlySpan<T> v,
        Span<T> output,
        AttentionOptions? options = null,
        MaskInput mask = default,
        BiasInput bias = default,
        Span<float> lse = default,
        LifetimesInput lifetimes = default)
        where T : unmanaged
    {
        _ = ArgumentValidation.ScalarTypeOf<T>(); // refuses a T other than Half or BFloat16
        ArgumentValidation.ValidateHostForward<T, float>(shape, q, k, v, output, options, mask.Operand, lifetimes.Operand, bias.Operand, lse);
        var result = new double[output.Length];
        double[] lseValues = lse.IsEmpty ? [] : new double[lse.Length];
        Forward(shape, Widen(q), Widen(k), Widen(v), result, options, mask,
            bias.IsPresent ? new ReferenceBias(Widen(bias), bias.Shape) : default, lseValues, lifetimes);
        Narrow(result, output);
        for (int i = 0; i < lseValues.Length; i++)
            lse[i] = (float)lseValues[i];
    }

    private static double[] Widen<T>(ReadOnlySpan<T> values) where T : unmanaged
    {
        var wide = new double[values.Length];
        if (typeof(T) == typeof(Half))
        {
            ReadOnlySpan<Half> half = MemoryMarshal.Cast<T, Half>(values);
            for (int i = 0; i < wide.Length; i++)
                wide[i] = (double)half[i];
        }
        else if (typeof(T) == typeof(BFloat16))
        {
            ReadOnlySpan<BFloat16> bf16 = MemoryMarshal.Cast<T, BFloat16>(values);
            for (int i = 0; i < wide.Length; i++)
                wide[i] = (double)bf16[i];
        }
        else // float: a bias only (the tensors' T was validated)
        {
            ReadOnlySpan<float> single = MemoryMarshal.Cast<T, float>(values);
            for (int i = 0; i < wide.Length; i++)
                wide[i] = single[i];
        }

        return wide;
    }

    private static double[] Widen(BiasInput bias) => bias.DType switch
    {
        ScalarType.Float16 => Widen(bias.Operand.As<Half>()),
        ScalarType.BFloat16 => Widen(bias.Operand.As<BFloat16>()),
        _ => Widen(bias.Operand.As<float>()),
    };

    private static void Narrow<T>(ReadOnlySpan<double> values, Span<T> output) where T : unmanaged
    {
        if (typeof(T) == typeof(Half))
        {
            Span<Half> half = MemoryMarshal.Cast<T, Half>(output);
            for (int i = 0; i < values.Length; i++)
                half[i] = (Half)values[i]; // correctly rounded from double
        }
        else
        {
            Span<BFloat16> bf16 = MemoryMarshal.Cast<T, BFloat16>(output);
            for (int i = 0; i < values.Length; i++)
                bf16[i] = RoundToBFloat16(values[i]);
        }
    }

    /// <summary>
    /// Rounds a double to the nearest bfloat16, ties to even, in one rounding: the double is first rounded to a
    /// float with round-to-odd, which cannot create a false tie for the second rounding (16 bits narrower).
    /// </summary>
    internal static BFloat16 RoundToBFloat16(double value)
    {
        float nearest = (float)value;
        if (!float.IsFinite(nearest) || nearest == value)
            return (BFloat16)nearest;
        uint bits = BitConverter.SingleToUInt32Bits(nearest);
        if ((bits & 1) == 0)
            bits = Math.Abs(value) > Math.Abs(nearest) ? bits + 1 : bits - 1; // the odd neighbour on value's side
        return (BFloat16)BitConverter.UInt32BitsToSingle(bits);
    }

    /// <summary>
    /// The scores of query i of head h in batch b against every key: <paramref name="visible"/>[j] says whether key j
    /// is visible (mask, as dense bytes, and causality), <paramref name="scores"/>[j] holds its score, scaled, biased and softcapped,
    /// where it is. Returns the largest visible score, -inf when there is none.
    /// </summary>
    private static double ScoreRow(
        AttentionShape shape, AttentionOptions options, ReadOnlySpan<double> q, ReadOnlySpan<double> k, MaskInput mask, ReferenceBias bias,
        int b, int h, int i, Span<double> scores, Span<bool> visible)
    {
        int lq = shape.SeqLenQ, lk = shape.SeqLenK, d = shape.HeadDim;
        int g = h / (shape.HeadsQ / shape.HeadsKv);
        double scale = Scale(options, d);
        double softcap = options.Softcap;
        ReadOnlySpan<byte> maskData = mask.Data;
        ReadOnlySpan<double> biasData = bias.Data;
        ReadOnlySpan<double> qi = q.Slice(Index(b, i, h, lq, shape.HeadsQ, d), d);
        long maskRow = mask.IsPresent ? RowOffset(mask.Shape, shape, b, h, g, i) : 0;
        long biasRow = bias.IsPresent ? RowOffset(bias.Shape, shape, b, h, g, i) : 0;
        long lastCausalKey = (long)i + lk - lq; // bottom-right alignment
        double max = double.NegativeInfinity;
        for (int j = 0; j < lk; j++)
        {
            visible[j] = (!options.Causal || j <= lastCausalKey) && (!mask.IsPresent || maskData[(int)(maskRow + j)] != 0);
            if (!visible[j])
                continue;
            double score = scale * Dot(qi, k.Slice(Index(b, j, g, lk, shape.HeadsKv, d), d));
            if (bias.IsPresent)
                score += biasData[(int)(biasRow + j)];
            if (softcap > 0)
                score = softcap * Math.Tanh(score / softcap);
            scores[j] = score;
            max = Math.Max(max, score);
        }

        return max;
    }

    private static double Scale(AttentionOptions options, int headDim) => options.SoftmaxScale is float s ? s : 1.0 / Math.Sqrt(headDim);

    /// <summary>Offset of key 0 of the row of a mask or bias that query head h (kv head g), query i of batch b reads.</summary>
    private static long RowOffset(BroadcastShape operand, AttentionShape attention, int b, int h, int g, int i)
    {
        int batch = operand.Batch == 1 ? 0 : b;
        int head = operand.Heads == attention.HeadsQ ? h : operand.Heads == attention.HeadsKv ? g : 0;
        int row = operand.Rows == 1 ? 0 : i;
        return (((long)batch * operand.Heads + head) * operand.Rows + row) * attention.SeqLenK;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Index(int b, int position, int head, int seqLen, int heads, int headDim) =>
        ((b * seqLen + position) * heads + head) * headDim;

    private static double Dot(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        double sum = 0;
        for (int x = 0; x < a.Length; x++)
            sum += a[x] * b[x];
        return sum;
    }
}

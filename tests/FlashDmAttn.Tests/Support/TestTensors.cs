using System.Runtime.InteropServices;

namespace FlashDmAttn.Tests;

/// <summary>
/// Random test inputs from a fresh seed on every run; <see cref="ToString"/> gives the seed, which every failure
/// message carries so that a failing case can be replayed with <c>new TestRandom(seed)</c>.
/// </summary>
internal sealed class TestRandom
{
    private readonly Random random;

    public TestRandom()
        : this(Random.Shared.Next())
    {
    }

    public TestRandom(int seed)
    {
        Seed = seed;
        random = new Random(seed);
    }

    public int Seed { get; }

    public double[] Uniform(long count, double low, double high)
    {
        var values = new double[count];
        for (long i = 0; i < count; i++)
            values[i] = low + (high - low) * random.NextDouble();
        return values;
    }

    /// <summary>Bytes that are visible (a random nonzero value) with probability <paramref name="density"/>.</summary>
    public byte[] Mask(long count, double density)
    {
        var mask = new byte[count];
        for (long i = 0; i < count; i++)
            mask[i] = random.NextDouble() < density ? (byte)random.Next(1, 256) : (byte)0;
        return mask;
    }

    public double NextDouble() => random.NextDouble();

    public int Next(int low, int high) => random.Next(low, high);

    /// <summary>
    /// (batch, heads, Lk) key lifetimes, every pair valid for the Span API (0 &lt;= First &lt;= End &lt;= Lq), mixing the
    /// forms of real use: sliding windows, open-ended keys, keys no query sees, every query, and random intervals.
    /// </summary>
    public KeyLifetime[] Lifetimes(BroadcastShape shape, int seqLenQ, int seqLenK)
    {
        var pairs = new KeyLifetime[shape.Elements(seqLenK)];
        for (int e = 0; e < pairs.Length; e++)
        {
            int j = e % seqLenK, first = random.Next(0, seqLenQ + 1), end = random.Next(first, seqLenQ + 1);
            int diagonal = Math.Clamp(j - (seqLenK - seqLenQ), 0, seqLenQ); // the first query whose causal bound reaches j
            pairs[e] = random.Next(5) switch
            {
                0 => new KeyLifetime(diagonal, Math.Min(seqLenQ, diagonal + random.Next(1, 64))), // a sliding window
                1 => new KeyLifetime(first, seqLenQ),                                             // never expires
                2 => new KeyLifetime(first, first),                                               // never visible
                3 => new KeyLifetime(0, seqLenQ),                                                 // always visible
                _ => new KeyLifetime(first, end),
            };
        }

        return pairs;
    }

    public void NextBytes(Span<byte> buffer) => random.NextBytes(buffer);

    public override string ToString() => $"seed {Seed}";
}

/// <summary>Conversions between double and the 16-bit element types, and filled arrays.</summary>
internal static class Tensors
{
    public static ScalarType DTypeOf<T>() =>
        typeof(T) == typeof(Half) ? ScalarType.Float16
        : typeof(T) == typeof(BFloat16) ? ScalarType.BFloat16
        : typeof(T) == typeof(float) ? ScalarType.Float32
        : throw new NotSupportedException(typeof(T).Name);

    /// <summary>Rounds to <typeparamref name="T"/> (Half, BFloat16 or float), to nearest even.</summary>
    public static T[] Narrow<T>(ReadOnlySpan<double> values) where T : unmanaged
    {
        var narrow = new T[values.Length];
        for (int i = 0; i < values.Length; i++)
            narrow[i] = FromDouble<T>(values[i]);
        return narrow;
    }

    public static double[] Widen<T>(ReadOnlySpan<T> values) where T : unmanaged
    {
        var wide = new double[values.Length];
        for (int i = 0; i < values.Length; i++)
            wide[i] = ToDouble(values[i]);
        return wide;
    }

    /// <summary>The values as a kernel working in <typeparamref name="T"/> sees them.</summary>
    public static double[] RoundTo<T>(ReadOnlySpan<double> values) where T : unmanaged => Widen<T>(Narrow<T>(values));

    public static double[] RoundTo(ScalarType dtype, ReadOnlySpan<double> values) => dtype switch
    {
        ScalarType.Float16 => RoundTo<Half>(values),
        ScalarType.BFloat16 => RoundTo<BFloat16>(values),
        _ => RoundTo<float>(values),
    };

    public static T[] Filled<T>(long count, double value) where T : unmanaged
    {
        var filled = new T[count];
        Array.Fill(filled, FromDouble<T>(value));
        return filled;
    }

    public static T FromDouble<T>(double value) where T : unmanaged
    {
        if (typeof(T) == typeof(Half))
            return (T)(object)(Half)value;
        if (typeof(T) == typeof(BFloat16))
            return (T)(object)Reference.ReferenceAttention.RoundToBFloat16(value); // one rounding: via float would be two
        if (typeof(T) == typeof(float))
            return (T)(object)(float)value;
        return (T)(object)value;
    }

    public static double ToDouble<T>(T value) where T : unmanaged
    {
        if (typeof(T) == typeof(Half))
            return (double)(Half)(object)value;
        if (typeof(T) == typeof(BFloat16))
            return (double)(BFloat16)(object)value;
        if (typeof(T) == typeof(float))
            return (float)(object)value;
        return (double)(object)value;
    }

    public static byte[] Bytes<T>(T[] values) where T : unmanaged => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
}

/// <summary>Error measures between a result and its reference.</summary>
internal static class ErrorNorms
{
    /// <summary>||actual - expected||2 / ||expected||2 (the absolute norm when the reference is all zeros).</summary>
    public static double RelativeL2(ReadOnlySpan<double> actual, ReadOnlySpan<double> expected)
    {
        Assert.That(actual.Length, Is.EqualTo(expected.Length));
        double diff = 0, reference = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            double d = actual[i] - expected[i];
            diff += d * d;
            reference += expected[i] * expected[i];
        }

        return reference == 0 ? Math.Sqrt(diff) : Math.Sqrt(diff / reference);
    }

    /// <summary>Largest |actual - expected| over the finite expected values; NaN if any actual is NaN.</summary>
    public static double MaxAbsFinite(ReadOnlySpan<double> actual, ReadOnlySpan<double> expected)
    {
        double worst = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            if (double.IsNaN(actual[i]))
                return double.NaN;
            if (double.IsFinite(expected[i]))
                worst = Math.Max(worst, Math.Abs(actual[i] - expected[i]));
        }

        return worst;
    }
}

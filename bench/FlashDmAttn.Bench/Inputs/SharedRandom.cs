namespace FlashDmAttn.Bench.Inputs;

/// <summary>
/// The benchmark inputs, defined by integer hashing so that this file and bench/masks.py produce the same bits
/// (the report checks their hashes on every row). Every value is exactly representable in bf16, so no rounding
/// mode can make the two sides differ:
/// <list type="bullet">
/// <item>draw(t, e) = hash32(key(e) ^ hash32(t)) for tensor t (Q 1, K 2, V 3, bias 4, dO 5) and flat index e of its
/// canonical layout: Q and dO (B, Lq, Hq, D), K and V (B, Lk, Hkv, D), bias (B, Hkv, Lk).</item>
/// <item>Q, K, V, dO: ((draw &amp; 255) * 2 - 255) / 256, odd multiples of 1/256 in (-1, 1): random and never zero.</item>
/// <item>bias: code = draw &amp; 511, value (code - 256) / 128 in [-2, 2); masks rank keys by code (ties: lower
/// index first), never by a rounded float.</item>
/// </list>
/// </summary>
internal static class SharedRandom
{
    public const uint QueryTensor = 1, KeyTensor = 2, ValueTensor = 3, BiasTensor = 4, OutputGradientTensor = 5;

    /// <summary>Chris Wellons' lowbias32: a bijection on 32 bits with good avalanche.</summary>
    public static uint Hash32(uint x)
    {
        x ^= x >> 16;
        x *= 0x7feb352du;
        x ^= x >> 15;
        x *= 0x846ca68bu;
        x ^= x >> 16;
        return x;
    }

    /// <summary>A 32-bit key of a 64-bit flat index: the unit both the inputs and the hashes are built from.</summary>
    public static uint IndexKey(long index) => Hash32((uint)index ^ Hash32((uint)(index >> 32) + 0x632be5abu));

    public static uint Draw(uint tensor, long index) => Hash32(IndexKey(index) ^ Hash32(tensor));

    public static float Value(uint draw) => ((int)(draw & 255) * 2 - 255) / 256f;

    public static int BiasCode(uint draw) => (int)(draw & 511);

    public static float BiasValue(int code) => (code - 256) / 128f;

    /// <summary>The hash of a tensor's bf16 bits: sum over e of hash32(bits(e) ^ key(e)), modulo 2^64.</summary>
    public static ulong ElementHash(ushort bits, long index) => Hash32(bits ^ IndexKey(index));

    /// <summary>Fills a Q, K, V or dO tensor (bf16 bits) in parallel and returns its hash.</summary>
    public static ulong FillTensor(uint tensor, Span<ushort> destination)
    {
        unsafe
        {
            fixed (ushort* start = destination)
            {
                nint address = (nint)start;
                return ParallelSum(destination.Length, (from, to) =>
                {
                    ushort* pointer = (ushort*)address;
                    ulong hash = 0;
                    for (long e = from; e < to; e++)
                    {
                        ushort bits = BFloat16Bits(Value(Draw(tensor, e)));
                        pointer[e] = bits;
                        hash += ElementHash(bits, e);
                    }

                    return hash;
                });
            }
        }
    }

    /// <summary>The bf16 bits of a float that bf16 holds exactly (all the values above).</summary>
    public static ushort BFloat16Bits(float value) => ((BFloat16)value).RawValue;

    /// <summary>Sums (modulo 2^64) a function of index ranges computed in parallel over [0, count).</summary>
    public static ulong ParallelSum(long count, Func<long, long, ulong> range)
    {
        const long Chunk = 1 << 20;
        long chunks = (count + Chunk - 1) / Chunk;
        ulong total = 0;
        Parallel.For(0, chunks, () => 0ul,
            (chunk, _, local) => local + range(chunk * Chunk, Math.Min(count, (chunk + 1) * Chunk)),
            local => Interlocked.Add(ref total, local));
        return total;
    }
}

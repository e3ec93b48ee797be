using System.Runtime.InteropServices;
using FlashDmAttn.Bench.Suite;

namespace FlashDmAttn.Bench.Inputs;

/// <summary>The hashes of one row's inputs: what bench/masks.py computes for the same row to prove it used the same.</summary>
internal sealed record InputHashes(ulong Q, ulong K, ulong V, ulong Bias);

/// <summary>One row's inputs on the host, as bf16 bits, with their hashes.</summary>
internal sealed record RowInputs(ushort[] Q, ushort[] K, ushort[] V, ushort[] Bias, int[][] BiasCodes, InputHashes Hashes)
{
    public static RowInputs Create(BenchCase c)
    {
        AttentionShape shape = c.Shape;
        var q = new ushort[shape.QElements];
        var k = new ushort[shape.KvElements];
        var v = new ushort[shape.KvElements];
        ulong qHash = SharedRandom.FillTensor(SharedRandom.QueryTensor, q);
        ulong kHash = SharedRandom.FillTensor(SharedRandom.KeyTensor, k);
        ulong vHash = SharedRandom.FillTensor(SharedRandom.ValueTensor, v);

        // The bias (B, Hkv, Lk) and its codes per (b, kv head).
        int heads = c.Batch * c.HeadsKv, lk = c.SeqLenK;
        var codes = new int[heads][];
        var bias = new ushort[(long)heads * lk];
        ulong biasHash = 0;
        for (int head = 0; head < heads; head++)
        {
            codes[head] = new int[lk];
            for (int j = 0; j < lk; j++)
            {
                long e = (long)head * lk + j;
                int code = SharedRandom.BiasCode(SharedRandom.Draw(SharedRandom.BiasTensor, e));
                codes[head][j] = code;
                bias[e] = SharedRandom.BFloat16Bits(SharedRandom.BiasValue(code));
                biasHash += SharedRandom.ElementHash(bias[e], e);
            }
        }

        return new RowInputs(q, k, v, bias, codes, new InputHashes(qHash, kHash, vHash, biasHash));
    }

    /// <summary>
    /// Builds the stored mask (Bm, Hm, Lq, Lk) one head at a time (a head is up to 1 GiB) and hands each to
    /// <paramref name="store"/> with its index; returns the stats over all heads.
    /// </summary>
    public unsafe MaskStats BuildMask(BenchCase c, Action<int, nint, long> store)
    {
        long headBytes = (long)c.SeqLenQ * c.SeqLenK;
        byte* host = (byte*)NativeMemory.Alloc((nuint)headBytes);
        try
        {
            MaskStats total = default;
            for (int head = 0; head < c.MaskBatch * c.MaskHeads; head++)
            {
                // A stored head (b, h) follows the bias of (b, h); a broadcast mask (one head) reads no bias.
                total += MaskBuilder.BuildHead(c, BiasCodes[head % BiasCodes.Length], head, host);
                store(head, (nint)host, headBytes);
            }

            return total;
        }
        finally
        {
            NativeMemory.Free(host);
        }
    }
}

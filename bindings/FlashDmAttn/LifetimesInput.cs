namespace FlashDmAttn;

/// <summary>
/// Optional host key lifetimes for the Span API and the CPU reference, a mask form of O(Lk) memory: one
/// <see cref="KeyLifetime"/> per (batch, head, key), contiguous with the key index fastest, batch and heads broadcast
/// as a mask's (1 or B; 1, Hkv or Hq). Every pair must satisfy 0 &lt;= First &lt;= End &lt;= SeqLenQ: the Span API
/// refuses any other before it copies anything. Not combined with a mask. <c>default</c> means none.
/// </summary>
public readonly ref struct LifetimesInput
{
    /// <summary>Wraps lifetimes laid out as (batch, heads, Lk).</summary>
    /// <param name="data">Exactly batch * heads * Lk pairs.</param>
    /// <param name="batch">1 (broadcast) or the batch B.</param>
    /// <param name="heads">1 (broadcast), Hkv (one per group of query heads) or Hq.</param>
    public LifetimesInput(ReadOnlySpan<KeyLifetime> data, int batch, int heads) =>
        Operand = BroadcastOperand.Of(data, new BroadcastShape(batch, heads, 1));

    /// <summary>The pairs.</summary>
    public ReadOnlySpan<KeyLifetime> Data => Operand.As<KeyLifetime>();

    /// <summary>The logical (batch, heads) extent, as a shape of one row.</summary>
    public BroadcastShape Shape => Operand.Shape;

    /// <summary>False for <c>default</c>: no lifetimes.</summary>
    public bool IsPresent => Operand.IsPresent;

    internal BroadcastOperand Operand { get; }

    // The same visibility as a dense (batch, heads, Lq, Lk) byte mask: what the CPU reference attends with.
    internal MaskInput AsDenseMask(AttentionShape shape) =>
        new(ToDenseMask(shape.SeqLenQ, shape.SeqLenK), Shape with { Rows = shape.SeqLenQ });

    // 1 where First <= i < End, clipped to the queries as the device clips them.
    private byte[] ToDenseMask(int seqLenQ, int seqLenK)
    {
        ReadOnlySpan<KeyLifetime> pairs = Data;
        BroadcastShape s = Shape;
        var mask = new byte[checked((long)s.Batch * s.Heads * seqLenQ * seqLenK)];
        for (int plane = 0; plane < s.Batch * s.Heads; plane++)
        {
            for (int j = 0; j < seqLenK; j++)
            {
                KeyLifetime pair = pairs[plane * seqLenK + j];
                for (int i = Math.Max(pair.First, 0); i < Math.Min(pair.End, seqLenQ); i++)
                    mask[((long)plane * seqLenQ + i) * seqLenK + j] = 1;
            }
        }

        return mask;
    }
}

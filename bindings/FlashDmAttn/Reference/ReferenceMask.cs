namespace FlashDmAttn.Reference;

/// <summary>
/// An optional mask for <see cref="ReferenceAttention"/>: contiguous bytes of logical shape
/// (<see cref="BroadcastShape.Batch"/>, <see cref="BroadcastShape.Heads"/>, <see cref="BroadcastShape.Rows"/>, Lk);
/// a nonzero byte makes the key visible. <c>default</c> means no mask.
/// </summary>
public readonly ref struct ReferenceMask
{
    /// <summary>Wraps mask bytes laid out as (batch, heads, rows, Lk), key index fastest.</summary>
    public ReferenceMask(ReadOnlySpan<byte> data, BroadcastShape shape)
    {
        Data = data;
        Shape = shape;
        IsPresent = true;
    }

    /// <summary>The mask bytes, (batch, heads, rows, Lk) contiguous.</summary>
    public ReadOnlySpan<byte> Data { get; }

    /// <summary>The logical (batch, heads, rows) extent; size-1 dimensions broadcast.</summary>
    public BroadcastShape Shape { get; }

    /// <summary>False for <c>default</c>: every key is visible (up to causality).</summary>
    public bool IsPresent { get; }
}

/// <summary>
/// An optional additive bias for <see cref="ReferenceAttention"/>, in double: contiguous values of logical
/// shape (batch, heads, rows, Lk), added to the scaled score before softcapping. <c>default</c> means no bias.
/// </summary>
public readonly ref struct ReferenceBias
{
    /// <summary>Wraps bias values laid out as (batch, heads, rows, Lk), key index fastest.</summary>
    public ReferenceBias(ReadOnlySpan<double> data, BroadcastShape shape)
    {
        Data = data;
        Shape = shape;
        IsPresent = true;
    }

    /// <summary>The bias values, (batch, heads, rows, Lk) contiguous.</summary>
    public ReadOnlySpan<double> Data { get; }

    /// <summary>The logical (batch, heads, rows) extent; size-1 dimensions broadcast.</summary>
    public BroadcastShape Shape { get; }

    /// <summary>False for <c>default</c>: no bias is added.</summary>
    public bool IsPresent { get; }
}

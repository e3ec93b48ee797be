namespace FlashDmAttn.Reference;

/// <summary>
/// An optional additive bias for <see cref="ReferenceAttention"/>, in double: contiguous values of logical
/// shape (batch, heads, rows, Lk), added to the scaled score before softcapping. <c>default</c> means no bias.
/// </summary>
public readonly ref struct ReferenceBias
{
    /// <summary>Wraps bias values laid out as (batch, heads, rows, Lk), key index fastest.</summary>
    /// <param name="data">Exactly shape.Batch * shape.Heads * shape.Rows * Lk values.</param>
    /// <param name="shape">The logical (batch, heads, rows) extent; size-1 dimensions broadcast.</param>
    public ReferenceBias(ReadOnlySpan<double> data, BroadcastShape shape) => Operand = BroadcastOperand.Of(data, shape);

    /// <summary>The bias values, (batch, heads, rows, Lk) contiguous.</summary>
    public ReadOnlySpan<double> Data => Operand.As<double>();

    /// <summary>The logical (batch, heads, rows) extent; size-1 dimensions broadcast.</summary>
    public BroadcastShape Shape => Operand.Shape;

    /// <summary>False for <c>default</c>: no bias is added.</summary>
    public bool IsPresent => Operand.IsPresent;

    internal BroadcastOperand Operand { get; }
}

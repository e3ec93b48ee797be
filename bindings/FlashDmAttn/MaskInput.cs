namespace FlashDmAttn;

/// <summary>
/// An optional host mask for the Span API and the CPU reference: bytes of logical shape (batch, heads, rows, Lk),
/// contiguous with the key index fastest; a nonzero byte makes the key visible. <c>default</c> means no mask.
/// </summary>
public readonly ref struct MaskInput
{
    /// <summary>Wraps mask bytes laid out as (shape.Batch, shape.Heads, shape.Rows, Lk).</summary>
    /// <param name="data">Exactly shape.Batch * shape.Heads * shape.Rows * Lk bytes.</param>
    /// <param name="shape">The logical (batch, heads, rows) extent; size-1 dimensions broadcast.</param>
    public MaskInput(ReadOnlySpan<byte> data, BroadcastShape shape) => Operand = BroadcastOperand.Of(data, shape);

    /// <summary>The mask bytes.</summary>
    public ReadOnlySpan<byte> Data => Operand.As<byte>();

    /// <summary>The logical (batch, heads, rows) extent.</summary>
    public BroadcastShape Shape => Operand.Shape;

    /// <summary>False for <c>default</c>: every key is visible (up to causality).</summary>
    public bool IsPresent => Operand.IsPresent;

    internal BroadcastOperand Operand { get; }
}

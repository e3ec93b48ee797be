namespace FlashDmAttn;

/// <summary>
/// An optional host bias for the Span API, added to the scaled score before softcapping: values of logical
/// shape (batch, heads, rows, Lk), contiguous with the key index fastest, in float, half or bfloat16
/// (independent of the element type of Q, K and V). <c>default</c> means no bias.
/// </summary>
public readonly ref struct BiasInput
{
    /// <summary>Wraps a float bias laid out as (shape.Batch, shape.Heads, shape.Rows, Lk).</summary>
    /// <param name="data">Exactly shape.Batch * shape.Heads * shape.Rows * Lk values.</param>
    /// <param name="shape">The logical (batch, heads, rows) extent; size-1 dimensions broadcast.</param>
    public BiasInput(ReadOnlySpan<float> data, BroadcastShape shape)
        : this(BroadcastOperand.Of(data, shape), ScalarType.Float32)
    {
    }

    /// <summary>Wraps a half-precision bias laid out as (shape.Batch, shape.Heads, shape.Rows, Lk).</summary>
    /// <param name="data">Exactly shape.Batch * shape.Heads * shape.Rows * Lk values.</param>
    /// <param name="shape">The logical (batch, heads, rows) extent; size-1 dimensions broadcast.</param>
    public BiasInput(ReadOnlySpan<Half> data, BroadcastShape shape)
        : this(BroadcastOperand.Of(data, shape), ScalarType.Float16)
    {
    }

    /// <summary>Wraps a bfloat16 bias laid out as (shape.Batch, shape.Heads, shape.Rows, Lk).</summary>
    /// <param name="data">Exactly shape.Batch * shape.Heads * shape.Rows * Lk values.</param>
    /// <param name="shape">The logical (batch, heads, rows) extent; size-1 dimensions broadcast.</param>
    public BiasInput(ReadOnlySpan<BFloat16> data, BroadcastShape shape)
        : this(BroadcastOperand.Of(data, shape), ScalarType.BFloat16)
    {
    }

    private BiasInput(BroadcastOperand operand, ScalarType dtype)
    {
        Operand = operand;
        DType = dtype;
    }

    /// <summary>The element type of the values.</summary>
    public ScalarType DType { get; }

    /// <summary>The logical (batch, heads, rows) extent.</summary>
    public BroadcastShape Shape => Operand.Shape;

    /// <summary>Number of values.</summary>
    public int Length => Operand.Length;

    /// <summary>False for <c>default</c>: no bias is added.</summary>
    public bool IsPresent => Operand.IsPresent;

    internal BroadcastOperand Operand { get; }
}

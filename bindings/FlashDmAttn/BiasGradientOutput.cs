using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace FlashDmAttn;

/// <summary>
/// Where the Span API's backward writes dL/dBias: values in the bias's own logical shape and layout (those of the
/// call's <see cref="BiasInput"/>), in float or in the bias's element type. <c>default</c> means the bias gradient
/// is not computed.
/// </summary>
public readonly ref struct BiasGradientOutput
{
    private readonly ref byte start;

    /// <summary>Receives the bias gradient in float, whatever the bias's element type.</summary>
    /// <param name="data">Exactly as many values as the bias.</param>
    public BiasGradientOutput(Span<float> data)
        : this(ref As(data), data.Length, ScalarType.Float32)
    {
    }

    /// <summary>Receives the bias gradient in half precision; the bias must be half precision too.</summary>
    /// <param name="data">Exactly as many values as the bias.</param>
    public BiasGradientOutput(Span<Half> data)
        : this(ref As(data), data.Length, ScalarType.Float16)
    {
    }

    /// <summary>Receives the bias gradient in bfloat16; the bias must be bfloat16 too.</summary>
    /// <param name="data">Exactly as many values as the bias.</param>
    public BiasGradientOutput(Span<BFloat16> data)
        : this(ref As(data), data.Length, ScalarType.BFloat16)
    {
    }

    private BiasGradientOutput(ref byte start, int length, ScalarType dtype)
    {
        this.start = ref start;
        Length = length;
        DType = dtype;
        IsPresent = true;
    }

    /// <summary>The element type of the values.</summary>
    public ScalarType DType { get; }

    /// <summary>Number of values.</summary>
    public int Length { get; }

    /// <summary>False for <c>default</c>: no bias gradient is written.</summary>
    public bool IsPresent { get; }

    // A read-only view in the bias's shape, for the checks shared with the other host operands.
    internal BroadcastOperand AsOperand(BroadcastShape shape) => DType switch
    {
        ScalarType.Float32 => BroadcastOperand.Of<float>(As<float>(), shape),
        ScalarType.Float16 => BroadcastOperand.Of<Half>(As<Half>(), shape),
        _ => BroadcastOperand.Of<BFloat16>(As<BFloat16>(), shape),
    };

    internal Span<TElement> As<TElement>() where TElement : unmanaged
    {
        if (!IsPresent)
            return default;
        if (Unsafe.SizeOf<TElement>() != DType.ElementSize())
            throw new InvalidOperationException($"Elements are {DType}; {typeof(TElement)} is {Unsafe.SizeOf<TElement>()} bytes.");
        return MemoryMarshal.CreateSpan(ref Unsafe.As<byte, TElement>(ref start), Length);
    }

    private static ref byte As<TElement>(Span<TElement> data) where TElement : unmanaged =>
        ref Unsafe.As<TElement, byte>(ref MemoryMarshal.GetReference(data));
}

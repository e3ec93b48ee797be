using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace FlashDmAttn;

// A host mask or bias of any element type, seen as raw memory with its logical shape, so that validation and copies
// need no per-type variant. Holds a reference rather than a byte span: a large bias can exceed int.MaxValue bytes.
internal readonly ref struct BroadcastOperand
{
    private readonly ref readonly byte start;

    private BroadcastOperand(ref readonly byte start, int length, int elementSize, BroadcastShape shape)
    {
        this.start = ref start;
        Length = length;
        ElementSize = elementSize;
        Shape = shape;
        IsPresent = true;
    }

    public static BroadcastOperand Of<TElement>(ReadOnlySpan<TElement> data, BroadcastShape shape)
        where TElement : unmanaged =>
        new(ref Unsafe.As<TElement, byte>(ref MemoryMarshal.GetReference(data)), data.Length, Unsafe.SizeOf<TElement>(), shape);

    public ref readonly byte Start => ref start;

    public int Length { get; }

    public int ElementSize { get; }

    public long ByteLength => (long)Length * ElementSize;

    public BroadcastShape Shape { get; }

    public bool IsPresent { get; }

    public ReadOnlySpan<TElement> As<TElement>() where TElement : unmanaged
    {
        if (!IsPresent)
            return default;
        if (Unsafe.SizeOf<TElement>() != ElementSize)
            throw new InvalidOperationException($"Elements are {ElementSize} bytes; {typeof(TElement)} is {Unsafe.SizeOf<TElement>()}.");
        return MemoryMarshal.CreateReadOnlySpan(ref Unsafe.As<byte, TElement>(ref Unsafe.AsRef(in start)), Length);
    }
}

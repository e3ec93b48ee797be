namespace FlashDmAttn;

/// <summary>
/// A (batch, sequence, heads, head dimension) tensor in GPU memory: a device pointer and element strides.
/// The head dimension is contiguous; the pointer must be 16-byte aligned and every stride a non-negative
/// multiple of 8 elements.
/// </summary>
/// <param name="Pointer">Device address of element (0, 0, 0, 0).</param>
/// <param name="StrideBatch">Elements between consecutive batches.</param>
/// <param name="StrideSeq">Elements between consecutive sequence positions.</param>
/// <param name="StrideHead">Elements between consecutive heads.</param>
public readonly record struct DeviceTensor(nint Pointer, long StrideBatch, long StrideSeq, long StrideHead)
{
    /// <summary>A contiguous (B, L, H, D) tensor, the layout of the Span API.</summary>
    /// <param name="pointer">Device address of the first element.</param>
    /// <param name="seqLen">Sequence length L.</param>
    /// <param name="heads">Number of heads H.</param>
    /// <param name="headDim">Head dimension D.</param>
    public static DeviceTensor SequenceMajor(nint pointer, int seqLen, int heads, int headDim) =>
        new(pointer, checked((long)seqLen * heads * headDim), (long)heads * headDim, headDim);

    /// <summary>A contiguous (B, H, L, D) tensor, addressed without a copy.</summary>
    /// <param name="pointer">Device address of the first element.</param>
    /// <param name="seqLen">Sequence length L.</param>
    /// <param name="heads">Number of heads H.</param>
    /// <param name="headDim">Head dimension D.</param>
    public static DeviceTensor HeadMajor(nint pointer, int seqLen, int heads, int headDim) =>
        new(pointer, checked((long)heads * seqLen * headDim), headDim, (long)seqLen * headDim);
}

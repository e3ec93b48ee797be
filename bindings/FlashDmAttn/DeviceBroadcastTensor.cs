namespace FlashDmAttn;

/// <summary>
/// A mask or bias (or the bias gradient) in GPU memory: logical shape (Shape.Batch, Shape.Heads, Shape.Rows, Lk), an
/// element stride for each of the four dimensions (the stride of a size-1 dimension is ignored). Element (b, h, r, j)
/// is at Pointer + b * StrideBatch + h * StrideHead + r * StrideRow + j * StrideKey elements, so a transposed view,
/// such as a (B, Lk, Hkv) score seen as (B, Hkv, 1, Lk) with StrideKey = Hkv, needs no copy.
/// </summary>
/// <param name="Pointer">Device address of element (0, 0, 0, 0), aligned to the element size.</param>
/// <param name="DType">
/// For a bias: <see cref="ScalarType.Float16"/>, <see cref="ScalarType.BFloat16"/> or <see cref="ScalarType.Float32"/>.
/// Ignored for a mask, whose elements are always bytes (nonzero = visible).
/// </param>
/// <param name="Shape">The logical (batch, heads, rows) extent.</param>
/// <param name="StrideBatch">Elements between consecutive batches.</param>
/// <param name="StrideHead">Elements between consecutive heads.</param>
/// <param name="StrideRow">Elements between consecutive rows.</param>
/// <param name="StrideKey">Elements between consecutive keys: 1 (the default) for contiguous keys; at least 1.</param>
public readonly record struct DeviceBroadcastTensor(
    nint Pointer, ScalarType DType, BroadcastShape Shape, long StrideBatch, long StrideHead, long StrideRow, long StrideKey = 1)
{
    /// <summary>A contiguous (batch, heads, rows, Lk) tensor.</summary>
    /// <param name="pointer">Device address of the first element.</param>
    /// <param name="dtype">Element type (ignored for a mask).</param>
    /// <param name="shape">The logical (batch, heads, rows) extent.</param>
    /// <param name="seqLenK">Number of keys Lk, the length of a row.</param>
    public static DeviceBroadcastTensor Contiguous(nint pointer, ScalarType dtype, BroadcastShape shape, int seqLenK) =>
        new(pointer, dtype, shape,
            checked((long)shape.Heads * shape.Rows * seqLenK), checked((long)shape.Rows * seqLenK), seqLenK);
}

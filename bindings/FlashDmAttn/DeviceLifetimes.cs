namespace FlashDmAttn;

/// <summary>
/// Key lifetimes in GPU memory (see <see cref="KeyLifetime"/>): logical shape (Batch, Heads, Lk), one pair of int32
/// {first, end} per element, strides counted in pairs. Element (b, h, j) is at Pointer + (b * StrideBatch +
/// h * StrideHead + j * StrideKey) * 8 bytes. Batch and heads broadcast as a mask's. On the device every pair has a
/// meaning: first &gt;= end is a key no query sees, and the interval is clipped to the queries [0, Lq).
/// </summary>
/// <param name="Pointer">Device address of element (0, 0, 0), 8-byte aligned.</param>
/// <param name="Batch">1 (broadcast) or the batch B.</param>
/// <param name="Heads">1 (broadcast), Hkv (one per group of query heads) or Hq.</param>
/// <param name="StrideBatch">Pairs between consecutive batches.</param>
/// <param name="StrideHead">Pairs between consecutive heads.</param>
/// <param name="StrideKey">Pairs between consecutive keys: 1 (the default) for contiguous keys; at least 1.</param>
public readonly record struct DeviceLifetimes(nint Pointer, int Batch, int Heads, long StrideBatch, long StrideHead, long StrideKey = 1)
{
    // A pair of int32.
    internal const int PairBytes = 8;

    /// <summary>Contiguous (batch, heads, Lk) lifetimes, the layout the top-k builder writes.</summary>
    /// <param name="pointer">Device address of the first pair.</param>
    /// <param name="batch">1 or B.</param>
    /// <param name="heads">1, Hkv or Hq.</param>
    /// <param name="seqLenK">Number of keys Lk.</param>
    public static DeviceLifetimes Contiguous(nint pointer, int batch, int heads, int seqLenK) =>
        new(pointer, batch, heads, checked((long)heads * seqLenK), seqLenK);

    // The (batch, heads, 1) shape of the C ABI's operand.
    internal BroadcastShape Shape => new(Batch, Heads, 1);

    // The operand as the C ABI and the kernels take it: a broadcast tensor of one row, strides in pairs.
    internal DeviceBroadcastTensor AsBroadcast() => new(Pointer, default, Shape, StrideBatch, StrideHead, 0, StrideKey);
}

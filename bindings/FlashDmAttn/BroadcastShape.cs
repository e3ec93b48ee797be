namespace FlashDmAttn;

/// <summary>
/// The logical shape (Batch, Heads, Rows, Lk) of a mask or a bias; a dimension of size 1 is broadcast.
/// Batch is 1 or B, Heads is 1, Hkv or Hq, Rows is 1 or Lq. With Heads == Hkv (and Hkv != Hq), query head h
/// reads head h / (Hq / Hkv).
/// </summary>
/// <param name="Batch">1 (shared by every batch) or B.</param>
/// <param name="Heads">1 (shared by every head), Hkv (one per key/value head) or Hq (one per query head).</param>
/// <param name="Rows">1 (shared by every query) or Lq (one row per query).</param>
public readonly record struct BroadcastShape(int Batch, int Heads, int Rows)
{
    /// <summary>Elements of a contiguous (Batch, Heads, Rows, <paramref name="seqLenK"/>) tensor.</summary>
    /// <param name="seqLenK">The number of keys Lk.</param>
    /// <exception cref="OverflowException">The count does not fit in an <see cref="long"/>.</exception>
    public long Elements(int seqLenK) => checked((long)Batch * Heads * Rows * seqLenK);
}

using System.Text;

namespace FlashDmAttn;

/// <summary>
/// The sizes of one attention call: Q is (Batch, SeqLenQ, HeadsQ, HeadDim), K and V are
/// (Batch, SeqLenK, HeadsKv, HeadDim), the output is shaped like Q and the log-sum-exp is (Batch, HeadsQ, SeqLenQ).
/// Query head h reads key/value head h / (HeadsQ / HeadsKv) (grouped-query attention).
/// </summary>
/// <param name="Batch">Batch size B, at least 1.</param>
/// <param name="SeqLenQ">Number of queries Lq, at least 1.</param>
/// <param name="SeqLenK">Number of keys Lk, at least 1.</param>
/// <param name="HeadsQ">Number of query heads Hq, a multiple of <paramref name="HeadsKv"/>.</param>
/// <param name="HeadsKv">Number of key/value heads Hkv, at least 1.</param>
/// <param name="HeadDim">Head dimension D: 32, 64, 96, 128, 192 or 256.</param>
public readonly record struct AttentionShape(int Batch, int SeqLenQ, int SeqLenK, int HeadsQ, int HeadsKv, int HeadDim)
{
    /// <summary>Elements of Q or of the output: B * Lq * Hq * D.</summary>
    /// <exception cref="OverflowException">The count does not fit in an <see cref="long"/>.</exception>
    public long QElements => checked((long)Batch * SeqLenQ * HeadsQ * HeadDim);

    /// <summary>Elements of K or of V: B * Lk * Hkv * D.</summary>
    /// <exception cref="OverflowException">The count does not fit in an <see cref="long"/>.</exception>
    public long KvElements => checked((long)Batch * SeqLenK * HeadsKv * HeadDim);

    /// <summary>Elements of the log-sum-exp: B * Hq * Lq.</summary>
    /// <exception cref="OverflowException">The count does not fit in an <see cref="long"/>.</exception>
    public long LseElements => checked((long)Batch * HeadsQ * SeqLenQ);

    // The generated ToString would also print the element counts, and throw for a shape whose counts overflow.
    private bool PrintMembers(StringBuilder builder)
    {
        builder.Append($"Batch = {Batch}, SeqLenQ = {SeqLenQ}, SeqLenK = {SeqLenK}, ");
        builder.Append($"HeadsQ = {HeadsQ}, HeadsKv = {HeadsKv}, HeadDim = {HeadDim}");
        return true;
    }
}

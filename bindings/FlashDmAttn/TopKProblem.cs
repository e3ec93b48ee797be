namespace FlashDmAttn;

/// <summary>
/// The sizes and the selection of a top-k lifetime build: per (batch, head), Lk scores and Lq queries, query i at
/// position i + Lk - Lq (bottom-right alignment, as causal attention aligns them).
/// </summary>
/// <param name="Batch">B &gt;= 1.</param>
/// <param name="Heads">H &gt;= 1 (DMA: the key/value heads).</param>
/// <param name="SeqLenQ">Lq &gt;= 1.</param>
/// <param name="SeqLenK">Lk &gt;= 1.</param>
/// <param name="Selection">Top-k or positive scores.</param>
/// <param name="Window">w &gt;= 1 for <see cref="KeySelection.TopK"/> (and whenever survivors are asked for); ignored by
/// <see cref="KeySelection.Positive"/> otherwise.</param>
/// <param name="Causal">
/// True: a query selects among the keys at or before its position (the lifetimes then hold causality). False: one
/// selection for every query.
/// </param>
public readonly record struct TopKProblem(int Batch, int Heads, int SeqLenQ, int SeqLenK, KeySelection Selection, int Window, bool Causal)
{
    /// <summary>Pairs the build writes: B * H * Lk.</summary>
    public long LifetimeElements => checked((long)Batch * Heads * SeqLenK);

    /// <summary>Survivor slots the build can write: B * H * w.</summary>
    public long SurvivorElements => checked((long)Batch * Heads * Window);
}

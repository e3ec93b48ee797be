namespace FlashDmAttn;

/// <summary>Which keys the top-k lifetime builder selects (README, "Key lifetimes").</summary>
public enum KeySelection
{
    /// <summary>
    /// The <see cref="TopKProblem.Window"/> highest-ranked keys: per query among its causal keys when
    /// <see cref="TopKProblem.Causal"/> is set (DMA's per-query top-k mask), else one selection for every query. Higher
    /// score first, equal scores lower index first; -inf and NaN scores are never selected.
    /// </summary>
    TopK = 0,

    /// <summary>The keys whose score is greater than 0; the window is ignored.</summary>
    Positive = 1,
}

namespace FlashDmAttn;

/// <summary>Options of the forward pass; the defaults give plain softmax attention.</summary>
public sealed record AttentionOptions
{
    internal static AttentionOptions Default { get; } = new();

    /// <summary>
    /// Factor applied to q·k before the bias is added: finite and greater than 0, or <c>null</c> for
    /// 1 / sqrt(HeadDim).
    /// </summary>
    public float? SoftmaxScale { get; init; }

    /// <summary>
    /// Softcap c: 0 turns it off; otherwise finite and greater than 0, and each score s (bias included)
    /// becomes c * tanh(s / c).
    /// </summary>
    public float Softcap { get; init; }

    /// <summary>
    /// Causal masking aligned to the bottom-right corner: query i sees key j only if j &lt;= i + Lk - Lq.
    /// </summary>
    public bool Causal { get; init; }

    /// <summary>
    /// The backend this call runs on; <c>null</c> takes the environment variable <c>FLASHDMATTN_BACKEND</c>, else
    /// <see cref="FlashDmAttnBackend.Auto"/>. Every backend gives the same results.
    /// </summary>
    public FlashDmAttnBackend? Backend { get; init; }

    internal float ResolveSoftmaxScale(int headDim) => SoftmaxScale ?? 1f / MathF.Sqrt(headDim);
}

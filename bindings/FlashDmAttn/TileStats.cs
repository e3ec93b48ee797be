namespace FlashDmAttn;

/// <summary>
/// How many (query tile, key tile) pairs a backward call computed and how many it skipped because the mask, the key
/// lifetimes (or causality) left them without a visible element, over all batches and query heads. The tile shape is
/// <see cref="DynamicMaskAttention.BackwardTileShape(int, ScalarType, FlashDmAttnBackend?)"/>. The forward reports more:
/// <see cref="ForwardStats"/>.
/// </summary>
/// <param name="Computed">Tiles whose scores were computed.</param>
/// <param name="Skipped">Tiles skipped without loading K or V.</param>
public readonly record struct TileStats(long Computed, long Skipped);

/// <summary>
/// What a forward call counted, over all batches and query heads: the (query tile, key tile) pairs it computed and
/// skipped (tiles of <see cref="DynamicMaskAttention.ForwardTileShape(int, ScalarType, FlashDmAttnBackend?)"/>; with key
/// lifetimes a computed tile is one of gathered keys), and the visible (query, key) pairs.
/// </summary>
/// <param name="Computed">Tiles whose scores were computed.</param>
/// <param name="Skipped">Tiles skipped without loading K or V.</param>
/// <param name="VisiblePairs">(query, key) pairs visible under the mask or lifetimes and causality.</param>
public readonly record struct ForwardStats(long Computed, long Skipped, long VisiblePairs)
{
    /// <summary>The tile counts alone.</summary>
    public TileStats Tiles => new(Computed, Skipped);

    /// <summary>
    /// Scores computed per visible pair: <see cref="Computed"/> * blockM * blockN / <see cref="VisiblePairs"/>, 1 when no
    /// work is wasted on invisible pairs; infinity when tiles were computed but no pair is visible, NaN when neither.
    /// </summary>
    /// <param name="blockM">The forward tile's query rows (<see cref="DynamicMaskAttention.ForwardTileShape"/>).</param>
    /// <param name="blockN">The forward tile's key columns.</param>
    /// <returns>The work amplification.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="blockM"/> or <paramref name="blockN"/> is less than 1.</exception>
    public double WorkAmplification(int blockM, int blockN)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(blockM, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(blockN, 1);
        return (double)Computed * blockM * blockN / VisiblePairs;
    }
}

namespace FlashDmAttn;

/// <summary>
/// How many (query tile, key tile) pairs a forward call computed and how many it skipped because the mask
/// (or causality) left them without a visible element, over all batches and query heads. The tile shape is
/// <see cref="DynamicMaskAttention.ForwardTileShape(int, ScalarType, FlashDmAttnBackend?)"/>.
/// </summary>
/// <param name="Computed">Tiles whose scores were computed.</param>
/// <param name="Skipped">Tiles skipped without loading K or V.</param>
public readonly record struct TileStats(long Computed, long Skipped);

using System.Text.Json.Serialization;

namespace FlashDmAttn.Bench.Suite;

/// <summary>The benchmark's mask families; bench/masks.py defines the same ones under the same names.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<MaskFamily>))]
public enum MaskFamily
{
    /// <summary>Per query, the top-w keys by bias among the causal ones, then 64-key blocks kept where more than half was selected.</summary>
    [JsonStringEnumMemberName("smoothed")] Smoothed,

    /// <summary>Per query, the top-w keys by bias among the causal ones.</summary>
    [JsonStringEnumMemberName("topk_fine")] TopKFine,

    /// <summary>Sliding window: key j visible to query i when i - w &lt; j &lt;= i (bottom-right aligned).</summary>
    [JsonStringEnumMemberName("swa")] SlidingWindow,

    /// <summary>Per 64-query block, the top w/64 causal 64-key blocks by bias, plus the diagonal block; causal inside.</summary>
    [JsonStringEnumMemberName("block_topk")] BlockTopK,

    /// <summary>An all-ones mask, causal.</summary>
    [JsonStringEnumMemberName("dense_causal")] DenseCausal,
}

/// <summary>What a row times.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<Direction>))]
public enum Direction
{
    /// <summary>The forward pass.</summary>
    [JsonStringEnumMemberName("fwd")] Forward,

    /// <summary>The backward pass (dQ, dK, dV and the bias gradient), given the forward's output and log-sum-exp.</summary>
    [JsonStringEnumMemberName("bwd")] Backward,

    /// <summary>The forward pass then the backward pass.</summary>
    [JsonStringEnumMemberName("fwdbwd")] ForwardBackward,
}

/// <summary>
/// One row of the suite: shapes, mask family and window. Every causal row is bottom-right aligned
/// (key j visible to query i only when j &lt;= i + Lk - Lq), bf16 Q, K, V, and a bias of shape (B, Hkv, 1, Lk).
/// </summary>
public sealed record BenchCase(
    string Section,
    string Id,
    Direction Direction,
    int Batch,
    int SeqLenQ,
    int SeqLenK,
    int HeadsQ,
    int HeadsKv,
    int HeadDim,
    MaskFamily Family,
    int Window) : IComparable
{
    /// <summary>Position in the run: BenchmarkDotNet orders parameter values through IComparable, so rows run and
    /// print in the suite's order.</summary>
    [JsonIgnore]
    public int Order { get; init; }

    public int CompareTo(object? obj) => obj is BenchCase other ? Order.CompareTo(other.Order) : 1;

    /// <summary>Whether the mask depends on the bias, and so has one head per (batch, key/value head).</summary>
    [JsonIgnore]
    public bool MaskFollowsBias => Family is MaskFamily.Smoothed or MaskFamily.TopKFine or MaskFamily.BlockTopK;

    /// <summary>Batches of the stored mask: B when it follows the bias, else 1 (broadcast).</summary>
    [JsonIgnore]
    public int MaskBatch => MaskFollowsBias ? Batch : 1;

    /// <summary>Heads of the stored mask: Hkv when it follows the bias, else 1 (broadcast).</summary>
    [JsonIgnore]
    public int MaskHeads => MaskFollowsBias ? HeadsKv : 1;

    [JsonIgnore]
    public AttentionShape Shape => new(Batch, SeqLenQ, SeqLenK, HeadsQ, HeadsKv, HeadDim);

    /// <summary>BenchmarkDotNet shows parameters through ToString: the id names the row.</summary>
    public override string ToString() => Id;
}

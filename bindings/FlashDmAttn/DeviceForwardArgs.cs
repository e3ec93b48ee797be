namespace FlashDmAttn;

/// <summary>
/// The tensors of a device-pointer forward call (<see cref="DynamicMaskAttention.Forward(DeviceForwardArgs, AttentionOptions?, nint)"/>).
/// Every pointer is a device address on the same GPU; inputs are only read.
/// </summary>
public sealed record DeviceForwardArgs
{
    /// <summary>Sizes of the call.</summary>
    public required AttentionShape Shape { get; init; }

    /// <summary>Element type of Q, K, V and the output: <see cref="ScalarType.Float16"/> or <see cref="ScalarType.BFloat16"/>.</summary>
    public required ScalarType DType { get; init; }

    /// <summary>Queries, (B, Lq, Hq, D).</summary>
    public required DeviceTensor Q { get; init; }

    /// <summary>Keys, (B, Lk, Hkv, D).</summary>
    public required DeviceTensor K { get; init; }

    /// <summary>Values, (B, Lk, Hkv, D).</summary>
    public required DeviceTensor V { get; init; }

    /// <summary>Receives the output, (B, Lq, Hq, D); must not overlap any other tensor.</summary>
    public required DeviceTensor Output { get; init; }

    /// <summary>Optional byte mask, nonzero = visible; <c>null</c> for none. Not combined with <see cref="Lifetimes"/>.</summary>
    public DeviceBroadcastTensor? Mask { get; init; }

    /// <summary>
    /// Optional key lifetimes, the mask form of O(Lk) memory: key j is visible to query i iff first_j &lt;= i &lt; end_j
    /// (and the causal bound); <c>null</c> for none. Not combined with <see cref="Mask"/>.
    /// </summary>
    public DeviceLifetimes? Lifetimes { get; init; }

    /// <summary>Optional bias added to the scaled score; <c>null</c> for none.</summary>
    public DeviceBroadcastTensor? Bias { get; init; }

    /// <summary>
    /// Optional device pointer receiving the log-sum-exp, (B, Hq, Lq) contiguous float, natural log, -inf on rows
    /// without a visible key; 4-byte aligned; 0 for none.
    /// </summary>
    public nint Lse { get; init; }

    /// <summary>
    /// Optional device pointer to three 8-byte-aligned unsigned 64-bit counters, overwritten with the computed and
    /// skipped tile counts and the visible pairs (see <see cref="ForwardStats"/>); 0 for none.
    /// </summary>
    public nint TileStats { get; init; }

    /// <summary>
    /// Optional device scratch of at least <see cref="DynamicMaskAttention.ForwardWorkspaceSize"/> bytes, 16-byte
    /// aligned, not overlapping any tensor; 0 lets the library take stream-ordered scratch itself (cudaMallocAsync)
    /// for the call. A call with a mask uses it for its tile bitmaps, a call split over keys (a grid of fewer than 256
    /// blocks) for its partial outputs.
    /// </summary>
    public nint Workspace { get; init; }

    /// <summary>
    /// Bytes at <see cref="Workspace"/>: greater than 0 when it is set (the call is refused when fewer than
    /// <see cref="DynamicMaskAttention.ForwardWorkspaceSize"/> bytes), ignored when it is 0; never negative.
    /// </summary>
    public long WorkspaceBytes { get; init; }
}

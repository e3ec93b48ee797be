namespace FlashDmAttn;

/// <summary>
/// The tensors of a device-pointer backward call
/// (<see cref="DynamicMaskAttention.Backward(DeviceBackwardArgs, AttentionOptions?, bool, nint)"/>): the forward
/// call's tensors as it had them, its output and log-sum-exp now read, the gradient of the loss with respect to the
/// output, and the gradients written. Every pointer is a device address on the same GPU.
/// </summary>
public sealed record DeviceBackwardArgs
{
    /// <summary>Sizes of the call, those of the forward call.</summary>
    public required AttentionShape Shape { get; init; }

    /// <summary>
    /// Element type of Q, K, V, the output and every gradient but the bias's: <see cref="ScalarType.Float16"/> or
    /// <see cref="ScalarType.BFloat16"/>.
    /// </summary>
    public required ScalarType DType { get; init; }

    /// <summary>Queries, (B, Lq, Hq, D).</summary>
    public required DeviceTensor Q { get; init; }

    /// <summary>Keys, (B, Lk, Hkv, D).</summary>
    public required DeviceTensor K { get; init; }

    /// <summary>Values, (B, Lk, Hkv, D).</summary>
    public required DeviceTensor V { get; init; }

    /// <summary>
    /// The forward call's output O, (B, Lq, Hq, D); read. Checked as the forward checks it: it overlaps no other tensor.
    /// </summary>
    public required DeviceTensor Output { get; init; }

    /// <summary>
    /// The forward call's log-sum-exp, (B, Hq, Lq) contiguous float, 4-byte aligned; read, and never 0.
    /// </summary>
    public required nint Lse { get; init; }

    /// <summary>The forward call's byte mask, nonzero = visible; <c>null</c> for none.</summary>
    public DeviceBroadcastTensor? Mask { get; init; }

    /// <summary>The forward call's bias; <c>null</c> for none.</summary>
    public DeviceBroadcastTensor? Bias { get; init; }

    /// <summary>dL/dO, the gradient of the loss with respect to the output, (B, Lq, Hq, D); read.</summary>
    public required DeviceTensor DOutput { get; init; }

    /// <summary>Receives dL/dQ, (B, Lq, Hq, D).</summary>
    public required DeviceTensor DQ { get; init; }

    /// <summary>Receives dL/dK, (B, Lk, Hkv, D): with grouped-query heads, the sum over the query heads of each group.</summary>
    public required DeviceTensor DK { get; init; }

    /// <summary>Receives dL/dV, (B, Lk, Hkv, D): with grouped-query heads, the sum over the query heads of each group.</summary>
    public required DeviceTensor DV { get; init; }

    /// <summary>
    /// Optional, only with a <see cref="Bias"/>: receives dL/dBias in the bias's own logical shape (the same
    /// <see cref="DeviceBroadcastTensor.Shape"/>), summed over every dimension the bias is broadcast along, zero where
    /// every pair it reaches is masked. Its <see cref="DeviceBroadcastTensor.DType"/> is the bias's or
    /// <see cref="ScalarType.Float32"/>; its strides may differ from the bias's. <c>null</c> for none.
    /// </summary>
    public DeviceBroadcastTensor? DBias { get; init; }

    /// <summary>
    /// Optional device pointer to two 8-byte-aligned unsigned 64-bit counters, overwritten with the backward's computed
    /// and skipped tile counts (tiles of <see cref="DynamicMaskAttention.BackwardTileShape"/>); 0 for none.
    /// </summary>
    public nint TileStats { get; init; }

    /// <summary>
    /// Optional device scratch of at least <see cref="DynamicMaskAttention.BackwardWorkspaceSize"/> bytes, 16-byte
    /// aligned, not overlapping any tensor; 0 lets the library take stream-ordered scratch itself (cudaMallocAsync)
    /// for the call. Every backward call uses scratch.
    /// </summary>
    public nint Workspace { get; init; }

    /// <summary>
    /// Bytes at <see cref="Workspace"/>: greater than 0 when it is set (the call is refused when fewer than
    /// <see cref="DynamicMaskAttention.BackwardWorkspaceSize"/> bytes), ignored when it is 0; never negative.
    /// </summary>
    public long WorkspaceBytes { get; init; }

    // The forward call these tensors came from, for the checks and the native parameters the two directions share.
    internal DeviceForwardArgs Forward => new()
    {
        Shape = Shape,
        DType = DType,
        Q = Q,
        K = K,
        V = V,
        Output = Output,
        Mask = Mask,
        Bias = Bias,
        Lse = Lse,
        TileStats = TileStats,
        Workspace = Workspace,
        WorkspaceBytes = WorkspaceBytes,
    };
}

namespace FlashDmAttn;

/// <summary>
/// The tensors of a device-pointer backward call
/// (<see cref="DynamicMaskAttention.Backward(DeviceBackwardArgs, AttentionOptions?, bool, nint)"/>): the forward call's
/// arguments as it ran, whose output and log-sum-exp the backward now reads, the gradient of the loss with respect to
/// the output, and the gradients written. Every pointer is a device address on the same GPU.
/// </summary>
public sealed record DeviceBackwardArgs
{
    /// <summary>
    /// The forward call's arguments, unchanged: its shape, element type, Q, K, V, mask or lifetimes and bias, and its
    /// <see cref="DeviceForwardArgs.Output"/> and <see cref="DeviceForwardArgs.Lse"/>, which the backward reads (the
    /// log-sum-exp is required here). Its <see cref="DeviceForwardArgs.TileStats"/>, <see cref="DeviceForwardArgs.Workspace"/>
    /// and <see cref="DeviceForwardArgs.WorkspaceBytes"/> belong to the forward call: the backward neither reads nor
    /// writes them, and uses its own below.
    /// </summary>
    public required DeviceForwardArgs Forward { get; init; }

    /// <summary>dL/dO, the gradient of the loss with respect to the output, (B, Lq, Hq, D); read.</summary>
    public required DeviceTensor DOutput { get; init; }

    /// <summary>Receives dL/dQ, (B, Lq, Hq, D).</summary>
    public required DeviceTensor DQ { get; init; }

    /// <summary>Receives dL/dK, (B, Lk, Hkv, D): with grouped-query heads, the sum over the query heads of each group.</summary>
    public required DeviceTensor DK { get; init; }

    /// <summary>Receives dL/dV, (B, Lk, Hkv, D): with grouped-query heads, the sum over the query heads of each group.</summary>
    public required DeviceTensor DV { get; init; }

    /// <summary>
    /// Optional, only with a bias: receives dL/dBias in the bias's own logical shape (the same
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
}

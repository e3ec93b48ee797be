namespace FlashDmAttn;

/// <summary>
/// The tensors of a device-pointer top-k lifetime build
/// (<see cref="DynamicMaskAttention.TopKLifetimes(DeviceTopKArgs, nint)"/>). Every pointer is a device address on the
/// same GPU.
/// </summary>
public sealed record DeviceTopKArgs
{
    /// <summary>Sizes and selection.</summary>
    public required TopKProblem Problem { get; init; }

    /// <summary>
    /// The scores, (B, H, 1, Lk) in <see cref="ScalarType.Float16"/>, <see cref="ScalarType.BFloat16"/> or
    /// <see cref="ScalarType.Float32"/> (DMA: the bias itself): shape exactly (Problem.Batch, Problem.Heads, 1), no
    /// broadcast; any key stride &gt;= 1, so a (B, Lk, H) tensor is read without a copy (StrideKey = H).
    /// </summary>
    public required DeviceBroadcastTensor Scores { get; init; }

    /// <summary>
    /// Receives the lifetimes, (B, H, Lk) contiguous pairs, 8-byte aligned: the lifetimes operand of an attention call,
    /// <see cref="DeviceLifetimes.Contiguous"/>(Lifetimes, B, H, Lk).
    /// </summary>
    public required nint Lifetimes { get; init; }

    /// <summary>
    /// Optional, receives (B, H, w) int32: the keys alive after the last query, in increasing index order, then -1
    /// (a decode cache's content after this prefill); 4-byte aligned; 0 for none.
    /// </summary>
    public nint Survivors { get; init; }

    /// <summary>
    /// Optional device scratch of at least <see cref="DynamicMaskAttention.TopKWorkspaceSize"/> bytes, 16-byte aligned;
    /// 0 lets the library take stream-ordered scratch itself.
    /// </summary>
    public nint Workspace { get; init; }

    /// <summary>Bytes at <see cref="Workspace"/>: greater than 0 when it is set, ignored when it is 0; never negative.</summary>
    public long WorkspaceBytes { get; init; }
}

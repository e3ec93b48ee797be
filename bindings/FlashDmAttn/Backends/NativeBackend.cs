namespace FlashDmAttn;

// The prebuilt native library, called through its C ABI: the arguments marshalled into its parameter structs, its
// status turned into a FlashDmAttnException.
internal sealed partial class NativeBackend : IAttentionBackend
{
    public static readonly NativeBackend Instance = new();

    private NativeBackend()
    {
    }

    public FlashDmAttnBackend Kind => FlashDmAttnBackend.Native;

    public unsafe void Forward(DeviceForwardArgs args, AttentionOptions options, nint stream, int device)
    {
        var parameters = new Interop.FlashDmAttn.FwdParams
        {
            StructSize = (uint)sizeof(Interop.FlashDmAttn.FwdParams),
            Problem = Problem(args, options),
            Out = ToNative(args.Output),
            Lse = args.Lse,
            TileStats = args.TileStats,
            Workspace = args.Workspace,
            WorkspaceBytes = (ulong)args.WorkspaceBytes,
            Stream = stream,
        };
        FlashDmAttnLibrary.ThrowIfFailed(Interop.FlashDmAttn.fdma_fwd(&parameters), "fdma_fwd");
    }

    public unsafe void Backward(DeviceBackwardArgs args, AttentionOptions options, bool deterministic, nint stream, int device)
    {
        var parameters = new Interop.FlashDmAttn.BwdParams
        {
            StructSize = (uint)sizeof(Interop.FlashDmAttn.BwdParams),
            Deterministic = deterministic ? 1 : 0,
            Problem = Problem(args.Forward, options),
            Out = ToNative(args.Forward.Output),
            Lse = args.Forward.Lse,
            DOut = ToNative(args.DOutput),
            DQ = ToNative(args.DQ),
            DK = ToNative(args.DK),
            DV = ToNative(args.DV),
            DBias = ToNative(args.DBias),
            TileStats = args.TileStats,
            Workspace = args.Workspace,
            WorkspaceBytes = (ulong)args.WorkspaceBytes,
            Stream = stream,
        };
        FlashDmAttnLibrary.ThrowIfFailed(Interop.FlashDmAttn.fdma_bwd(&parameters), "fdma_bwd");
    }

    public (int BlockM, int BlockN) ForwardTileShape(int headDim, ScalarType dtype)
    {
        FlashDmAttnLibrary.EnsureLoaded();
        FlashDmAttnLibrary.ThrowIfFailed(
            Interop.FlashDmAttn.fdma_fwd_tile_shape(headDim, (int)dtype, out int blockM, out int blockN), "fdma_fwd_tile_shape");
        return (blockM, blockN);
    }

    public (int BlockM, int BlockN) BackwardTileShape(int headDim, ScalarType dtype)
    {
        FlashDmAttnLibrary.EnsureLoaded();
        FlashDmAttnLibrary.ThrowIfFailed(
            Interop.FlashDmAttn.fdma_bwd_tile_shape(headDim, (int)dtype, out int blockM, out int blockN), "fdma_bwd_tile_shape");
        return (blockM, blockN);
    }

    public unsafe long ForwardWorkspaceSize(AttentionShape shape, ScalarType dtype, BroadcastShape? mask)
    {
        FlashDmAttnLibrary.EnsureLoaded();
        var parameters = new Interop.FlashDmAttn.FwdParams
        {
            StructSize = (uint)sizeof(Interop.FlashDmAttn.FwdParams),
            Problem = SizeQueryProblem(shape, dtype, mask, bias: null),
        };
        FlashDmAttnLibrary.ThrowIfFailed(Interop.FlashDmAttn.fdma_fwd_workspace_size(&parameters, out ulong bytes), "fdma_fwd_workspace_size");
        return checked((long)bytes);
    }

    public unsafe long BackwardWorkspaceSize(
        AttentionShape shape, ScalarType dtype, BroadcastShape? mask, BroadcastShape? biasGradient, bool deterministic, bool lifetimes)
    {
        FlashDmAttnLibrary.EnsureLoaded();
        var parameters = new Interop.FlashDmAttn.BwdParams
        {
            StructSize = (uint)sizeof(Interop.FlashDmAttn.BwdParams),
            Deterministic = deterministic ? 1 : 0,
            // problem_shape reads only whether the lifetimes are present.
            Problem = SizeQueryProblem(shape, dtype, mask, biasGradient) with { Lifetimes = lifetimes ? SizeQueryOperand(new BroadcastShape(1, 1, 1)) : default },
            DBias = SizeQueryOperand(biasGradient),
        };
        FlashDmAttnLibrary.ThrowIfFailed(Interop.FlashDmAttn.fdma_bwd_workspace_size(&parameters, out ulong bytes), "fdma_bwd_workspace_size");
        return checked((long)bytes);
    }

    // The problem both directions share: sizes, inputs, mask or lifetimes, bias and score options.
    internal static Interop.FlashDmAttn.Problem Problem(DeviceForwardArgs args, AttentionOptions options) =>
        Sizes(args.Shape, args.DType) with
        {
            Q = ToNative(args.Q),
            K = ToNative(args.K),
            V = ToNative(args.V),
            Mask = ToNative(args.Mask),
            Lifetimes = ToNative(args.Lifetimes?.AsBroadcast()),
            Bias = ToNative(args.Bias),
            SoftmaxScale = options.ResolveSoftmaxScale(args.Shape.HeadDim),
            Softcap = options.Softcap,
            IsCausal = options.Causal ? 1 : 0,
        };

    private static Interop.FlashDmAttn.Problem Sizes(AttentionShape shape, ScalarType dtype) => new()
    {
        DType = (int)dtype,
        Batch = shape.Batch,
        SeqLenQ = shape.SeqLenQ,
        SeqLenK = shape.SeqLenK,
        HeadsQ = shape.HeadsQ,
        HeadsKv = shape.HeadsKv,
        HeadDim = shape.HeadDim,
    };

    // What a workspace-size query reads: the sizes, and of the mask and bias only their shapes and whether their
    // pointers are null, never what they point to.
    private static Interop.FlashDmAttn.Problem SizeQueryProblem(AttentionShape shape, ScalarType dtype, BroadcastShape? mask, BroadcastShape? bias) =>
        Sizes(shape, dtype) with { Mask = SizeQueryOperand(mask), Bias = SizeQueryOperand(bias) };

    private static Interop.FlashDmAttn.BroadcastTensor SizeQueryOperand(BroadcastShape? shape, ScalarType dtype = ScalarType.Float32) =>
        shape is not { } s ? default : new()
        {
            Data = 1,
            DType = (int)dtype,
            Batch = s.Batch,
            Heads = s.Heads,
            Rows = s.Rows,
            StrideKey = 1,
        };

    internal static Interop.FlashDmAttn.Tensor ToNative(DeviceTensor tensor) => new()
    {
        Data = tensor.Pointer,
        StrideBatch = tensor.StrideBatch,
        StrideSeq = tensor.StrideSeq,
        StrideHead = tensor.StrideHead,
    };

    internal static Interop.FlashDmAttn.BroadcastTensor ToNative(DeviceBroadcastTensor? tensor) => tensor is not { } t ? default : new()
    {
        Data = t.Pointer,
        DType = (int)t.DType,
        Batch = t.Shape.Batch,
        Heads = t.Shape.Heads,
        Rows = t.Shape.Rows,
        StrideBatch = t.StrideBatch,
        StrideHead = t.StrideHead,
        StrideRow = t.StrideRow,
        StrideKey = t.StrideKey,
    };
}

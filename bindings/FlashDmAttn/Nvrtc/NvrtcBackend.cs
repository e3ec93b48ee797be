namespace FlashDmAttn;

// The same kernel sources as the native library, compiled at run time by NVRTC (KernelModules) and launched through
// the driver API with the plan of LaunchPlan: what native/src does, in the same order, with the same checks that
// ArgumentValidation leaves to the native library, refused with the same statuses and messages.
internal sealed partial class NvrtcBackend : IAttentionBackend
{
    public static readonly NvrtcBackend Instance = new();

    private NvrtcBackend()
    {
    }

    public FlashDmAttnBackend Kind => FlashDmAttnBackend.Nvrtc;

    // The tile of calls longer than decode on the device a call would run on now: the current context's, else device 0;
    // without a usable driver, the mma.sync tile (as on every device but compute capability 9.0).
    public (int BlockM, int BlockN) ForwardTileShape(int headDim, ScalarType dtype)
    {
        Tile tile = LaunchPlan.FwdTile(headDim, LaunchPlan.HasWgmmaForward(headDim) ? HostQueryFwdKernel(headDim) : FwdKernel.MmaSync);
        return (tile.BlockM, tile.BlockN);
    }

    // FDMA_FWD_KERNEL=mma_sync switches the wgmma forward off, read once per process as the native library reads it.
    private static readonly bool WgmmaSwitchedOff = Environment.GetEnvironmentVariable("FDMA_FWD_KERNEL") == "mma_sync";

    // The forward's kernel for calls longer than decode on `device` (LaunchPlan.DeviceFwdKernel): wgmma is available
    // where NVRTC compiles sm_90a (version 12 or later) and the environment does not switch it off.
    public static FwdKernel DeviceFwdKernel(int device, int headDim)
    {
        if (!LaunchPlan.HasWgmmaForward(headDim) || WgmmaSwitchedOff || !NvrtcCompiler.CompilesSm90a)
            return FwdKernel.MmaSync;
        (int major, int minor) = KernelModules.ComputeCapability(device);
        return LaunchPlan.DeviceFwdKernel(headDim, major * 10 + minor, wgmmaAvailable: true);
    }

    private static FwdKernel HostQueryFwdKernel(int headDim)
    {
        try
        {
            CudaDriver.EnsureInitialized();
            int device = 0;
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuCtxGetCurrent(out nint context));
            if (context != 0)
            {
                CudaDriver.ThrowIfFailed(Interop.Cuda.cuCtxGetDevice(out int current));
                int count = CudaDriver.DeviceCount();
                for (int ordinal = 0; ordinal < count; ordinal++)
                {
                    CudaDriver.ThrowIfFailed(Interop.Cuda.cuDeviceGet(out int handle, ordinal));
                    if (handle == current)
                        device = ordinal;
                }
            }

            return DeviceFwdKernel(device, headDim);
        }
        catch (Exception e) when (e is NativeLibraryException or CudaException or DllNotFoundException)
        {
            return FwdKernel.MmaSync;
        }
    }

    public (int BlockM, int BlockN) BackwardTileShape(int headDim, ScalarType dtype)
    {
        Tile tile = LaunchPlan.BwdTile(headDim);
        return (tile.BlockM, tile.BlockN);
    }

    public long ForwardWorkspaceSize(AttentionShape shape, ScalarType dtype, BroadcastShape? mask) =>
        checked((long)LaunchPlan.PlanFwd(ProblemShape.Of(shape, mask, bias: null, default)).WorkspaceBytes);

    public long BackwardWorkspaceSize(AttentionShape shape, ScalarType dtype, BroadcastShape? mask, BroadcastShape? biasGradient, bool deterministic, bool lifetimes) =>
        checked((long)LaunchPlan.PlanBwd(ProblemShape.Of(shape, mask, biasGradient, ScalarType.Float32, lifetimes), deterministic, withDBias: biasGradient is not null)
            .WorkspaceBytes);

    // The problem both directions share, in the kernels' form (check_problem in native/src/problem.cpp): broadcasts as
    // zero strides, scales folded into log2 space; the bitmap pointers are left for the scratch.
    private static KernelParams.Attention Attention(DeviceForwardArgs args, AttentionOptions options)
    {
        const float Log2e = 1.4426950408889634f; // kLog2e in native/kernels/common.cuh
        AttentionShape shape = args.Shape;
        float scale = options.ResolveSoftmaxScale(shape.HeadDim);
        float softcap = options.Softcap;
        return new KernelParams.Attention
        {
            Q = args.Q.Pointer,
            K = args.K.Pointer,
            V = args.V.Pointer,
            QStrides = Strides(args.Q),
            KStrides = Strides(args.K),
            VStrides = Strides(args.V),
            Mask = Broadcast(args.Mask, shape) with { Type = 0 }, // a mask has no element type (8-bit)
            Lifetimes = Broadcast(args.Lifetimes?.AsBroadcast(), shape) with { Type = 0 }, // pairs of int32, strides in pairs
            Bias = Broadcast(args.Bias, shape),
            Batch = shape.Batch,
            SeqLenQ = shape.SeqLenQ,
            SeqLenK = shape.SeqLenK,
            HeadsQ = shape.HeadsQ,
            HeadsKv = shape.HeadsKv,
            KvGroup = shape.HeadsQ / shape.HeadsKv,
            IsCausal = options.Causal ? 1 : 0,
            SoftmaxScale = scale,
            Score = softcap > 0
                ? new KernelParams.ScoreMod { QkScale = scale / softcap, BiasScale = 1f / softcap, SoftcapOut = softcap * Log2e }
                : new KernelParams.ScoreMod { QkScale = scale * Log2e, BiasScale = Log2e, SoftcapOut = 0f },
        };
    }

    private static KernelParams.Strides Strides(DeviceTensor t) => new() { Batch = t.StrideBatch, Seq = t.StrideSeq, Head = t.StrideHead };

    // check_broadcast: the strides of broadcast dimensions zeroed, the type a bias's (or its gradient's).
    private static KernelParams.BroadcastOperand Broadcast(DeviceBroadcastTensor? tensor, AttentionShape shape)
    {
        if (tensor is not { } t)
            return default;
        BroadcastShape b = t.Shape;
        return new KernelParams.BroadcastOperand
        {
            Data = t.Pointer,
            StrideBatch = b.Batch == 1 ? 0 : t.StrideBatch,
            StrideHead = b.Heads == 1 ? 0 : t.StrideHead,
            StrideRow = b.Rows == 1 ? 0 : t.StrideRow,
            StrideKey = shape.SeqLenK == 1 ? 1 : t.StrideKey,
            // One per query head, or (heads == Hkv) one per group of query heads.
            HeadGroup = b.Heads == shape.HeadsQ || b.Heads == 1 ? 1 : shape.HeadsQ / shape.HeadsKv,
            Batches = b.Batch,
            Heads = b.Heads,
            Rows = b.Rows,
            Type = (int)t.DType,
        };
    }

    private static unsafe void Launch<TParams>(nint function, Dim3 grid, int threads, int sharedBytes, nint stream, TParams* parameters)
        where TParams : unmanaged
    {
        void* argument = parameters;
        NvrtcLaunch.Kernel(function, (grid.X, grid.Y, grid.Z), threads, sharedBytes, stream, &argument);
    }

    // tile_occupancy_kernel(params, block_m): the dense mask's pre-pass for a direction's tile.
    private static unsafe void LaunchOccupancy(nint function, Dim3 grid, Tile tile, nint stream, KernelParams.Attention* attention)
    {
        int blockM = tile.BlockM;
        void** arguments = stackalloc void*[] { attention, &blockM };
        int threads = LaunchPlan.OccupancyThreadsOf(grid, Math.Min(attention->SeqLenQ, blockM));
        NvrtcLaunch.Kernel(function, (grid.X, grid.Y, grid.Z), threads, 0, stream, arguments);
    }

    private static nint Pointer(ulong address) => unchecked((nint)address);
}

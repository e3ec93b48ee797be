namespace FlashDmAttn;

// The forward pass of the NVRTC backend: what native/src/api.cpp, fwd_args.cpp and fwd_launch.cuh do on the native
// side, with the driver API. Arguments arrive validated by ArgumentValidation; the checks below are the rest of the
// native library's, refused with the same statuses and messages.
internal static class NvrtcForward
{
    private const float Log2e = 1.4426950408889634f; // kLog2e in fwd_args.cpp
    private const string Function = "NVRTC forward";

    // device: the ordinal Q lives on.
    public static unsafe void Launch(DeviceForwardArgs args, AttentionOptions options, nint stream, int device)
    {
        AttentionShape shape = args.Shape;
        KernelParams.Forward parameters = Resolve(args, options);
        ForwardLaunchPlan plan = ForwardLaunchPlan.For(shape, args.Mask?.Shape, parameters.Bias);
        CheckNativeOnlyRules(args, plan, device);

        // Like the CUDA runtime: the caller's current context, else the device's primary one.
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuCtxGetCurrent(out nint current));
        using CudaContextScope scope = current == 0 ? KernelModules.PrimaryContext(device).Push() : default;
        if (current != 0)
            NvrtcLaunch.CheckCurrentContextDevice(device, "params.q.data", Function);

        nint forward = KernelModules.GetFunction(KernelVariant.Forward(args.DType, shape.HeadDim), device, plan.ForwardSharedMemoryLimit);
        nint occupancy = plan.MaskPlanes > 0 ? KernelModules.GetFunction(KernelVariant.Occupancy(plan.Tile), device, 0) : 0;
        nint combine = plan.KvSplits > 1 ? KernelModules.GetFunction(KernelVariant.ForwardCombine(args.DType, shape.HeadDim), device, 0) : 0;

        if (args.TileStats != 0)
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemsetD8Async(Address(args.TileStats), 0, 2 * sizeof(ulong), stream));

        ulong scratch = Address(args.Workspace);
        bool ownsScratch = plan.WorkspaceBytes > 0 && scratch == 0;
        if (ownsScratch)
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemAllocAsync(out scratch, (nuint)plan.WorkspaceBytes, stream));
        try
        {
            Place(ref parameters, plan, scratch);
            if (plan.MaskPlanes > 0)
                LaunchKernel(occupancy, plan.OccupancyGrid, ForwardLaunchPlan.OccupancyThreads, 0, stream, &parameters);
            LaunchKernel(forward, plan.ForwardGrid, plan.Tile.Threads, plan.ForwardSharedMemoryBytes, stream, &parameters);
            if (plan.KvSplits > 1)
                LaunchKernel(combine, (plan.CombineBlocks, 1, 1), ForwardLaunchPlan.CombineThreads, 0, stream, &parameters);
        }
        catch
        {
            if (ownsScratch)
                _ = Interop.Cuda.cuMemFreeAsync(scratch, stream); // the launch failure is the one to report
            throw;
        }

        if (ownsScratch)
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemFreeAsync(scratch, stream));
    }

    // place_fwd_scratch: the split-KV partials and the bitmaps in the call's scratch.
    private static void Place(ref KernelParams.Forward parameters, ForwardLaunchPlan plan, ulong scratch)
    {
        parameters.KvSplits = plan.KvSplits;
        if (plan.KvSplits > 1)
        {
            parameters.OPartial = (nint)scratch;
            parameters.LsePartial = (nint)(scratch + (ulong)plan.LsePartialOffset);
        }

        if (plan.MaskPlanes > 0)
        {
            parameters.Occupancy = (nint)(scratch + (ulong)plan.BitmapsOffset);
            parameters.FullTiles = parameters.Occupancy + (nint)(plan.BitmapWords * sizeof(uint));
        }
    }

    // make_fwd_params: the ABI's fields in the kernel's form, broadcasts as zero strides and scales in log2 space.
    internal static KernelParams.Forward Resolve(DeviceForwardArgs args, AttentionOptions options)
    {
        AttentionShape shape = args.Shape;
        float scale = options.ResolveSoftmaxScale(shape.HeadDim);
        float softcap = options.Softcap;
        return new KernelParams.Forward
        {
            Q = args.Q.Pointer,
            K = args.K.Pointer,
            V = args.V.Pointer,
            O = args.Output.Pointer,
            QStrides = Strides(args.Q),
            KStrides = Strides(args.K),
            VStrides = Strides(args.V),
            OStrides = Strides(args.Output),
            Mask = Broadcast(args.Mask, shape, isBias: false),
            Bias = Broadcast(args.Bias, shape, isBias: true),
            Lse = args.Lse,
            TileStats = args.TileStats,
            SeqLenQ = shape.SeqLenQ,
            SeqLenK = shape.SeqLenK,
            HeadsQ = shape.HeadsQ,
            KvGroup = shape.HeadsQ / shape.HeadsKv,
            IsCausal = options.Causal ? 1 : 0,
            QkScale = softcap > 0 ? scale / softcap : scale * Log2e,
            BiasScale = softcap > 0 ? 1f / softcap : Log2e,
            SoftcapOut = softcap > 0 ? softcap * Log2e : 0f,
            KvSplits = 1,
            Batch = shape.Batch,
        };
    }

    internal static KernelParams.Strides Strides(DeviceTensor t) => new() { Batch = t.StrideBatch, Seq = t.StrideSeq, Head = t.StrideHead };

    internal static KernelParams.BroadcastOperand Broadcast(DeviceBroadcastTensor? tensor, AttentionShape shape, bool isBias)
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
            // One per query head, or (heads == Hkv) one per group of query heads.
            HeadGroup = b.Heads == shape.HeadsQ || b.Heads == 1 ? 1 : shape.HeadsQ / shape.HeadsKv,
            Batches = b.Batch,
            Heads = b.Heads,
            Rows = b.Rows,
            Type = isBias ? (int)t.DType : 0,
        };
    }

    private static void CheckNativeOnlyRules(DeviceForwardArgs args, ForwardLaunchPlan plan, int device)
    {
        AttentionShape shape = args.Shape;
        NvrtcLaunch.CheckGridLimits(shape, plan.MaskPlanes, "params.", Function);
        NvrtcLaunch.CheckTensorIsDisjoint(args.Output, shape.SeqLenQ, shape.HeadsQ, shape, "params.out", Function);
        if (args.Workspace != 0 && plan.WorkspaceBytes > 0 && args.WorkspaceBytes < plan.WorkspaceBytes)
            throw Refused(FlashDmAttnStatus.InvalidArgument, $"params.workspace_bytes is {args.WorkspaceBytes}; this call needs {plan.WorkspaceBytes}");

        NvrtcLaunch.CheckSameDevice(
        [
            (args.K.Pointer, "args.K"), (args.V.Pointer, "args.V"), (args.Output.Pointer, "args.Output"),
            (args.Mask?.Pointer ?? 0, "args.Mask"), (args.Bias?.Pointer ?? 0, "args.Bias"), (args.Lse, "args.Lse"),
            (args.TileStats, "args.TileStats"), (args.Workspace, "args.Workspace"),
        ], device, Function);
    }

    private static unsafe void LaunchKernel(nint function, (uint X, uint Y, uint Z) grid, int threads, int sharedBytes, nint stream, KernelParams.Forward* parameters)
    {
        void* argument = parameters;
        NvrtcLaunch.Kernel(function, grid, threads, sharedBytes, stream, &argument);
    }

    private static ulong Address(nint pointer) => NvrtcLaunch.Address(pointer);

    private static FlashDmAttnException Refused(FlashDmAttnStatus status, string message) => NvrtcLaunch.Refused(Function, status, message);
}

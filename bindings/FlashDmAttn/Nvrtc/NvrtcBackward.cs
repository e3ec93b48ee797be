using System.Collections.Concurrent;

namespace FlashDmAttn;

// The backward pass of the NVRTC backend: what native/src/api.cpp (fdma_bwd), bwd_args.cpp and bwd_launch.cuh do on
// the native side, with the driver API, in the same order. Arguments arrive validated by ArgumentValidation; the
// checks below are the rest of the native library's, refused with the same statuses and messages.
internal static class NvrtcBackward
{
    private const string Function = "NVRTC backward";

    // The (variant, target) pairs whose images this process already holds: a call that needs no new one spends
    // nothing on compiling.
    private static readonly ConcurrentDictionary<(KernelVariant, CompileTarget), byte> Built = new();

    // device: the ordinal Q lives on.
    public static unsafe void Launch(DeviceBackwardArgs args, AttentionOptions options, bool deterministic, nint stream, int device)
    {
        AttentionShape shape = args.Shape;
        BackwardLaunchPlan plan = BackwardLaunchPlan.For(
            shape, args.DType, args.Mask?.Shape, args.DBias is null ? null : args.Bias?.Shape, args.DBias?.DType, deterministic);
        CheckNativeOnlyRules(args, plan, device);
        KernelParams.Backward parameters = Resolve(args, options, plan);

        // Like the CUDA runtime: the caller's current context, else the device's primary one.
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuCtxGetCurrent(out nint current));
        using CudaContextScope scope = current == 0 ? KernelModules.PrimaryContext(device).Push() : default;
        if (current != 0)
            NvrtcLaunch.CheckCurrentContextDevice(device, "params.forward.q.data", Function);

        // Every kernel of the call, compiled or loaded before anything is queued: a compilation failure leaves the
        // outputs untouched. Those not yet built are compiled at once, in parallel (seconds each).
        BuildImages([plan.OccupancyKernel, plan.DeltaKernel, plan.DkDvKernel, plan.DqKernel, plan.ConvertDBiasKernel], KernelModules.TargetOf(device));
        BackwardTraits traits = plan.Traits;
        nint occupancy = plan.OccupancyKernel is { } o ? KernelModules.GetFunction(o, device, 0) : 0;
        nint delta = KernelModules.GetFunction(plan.DeltaKernel, device, plan.DeltaIsRowPass ? 0 : traits.DqSharedMemoryLimit);
        nint dkdv = KernelModules.GetFunction(plan.DkDvKernel, device, traits.DkDvSharedMemoryBytes);
        nint dq = KernelModules.GetFunction(plan.DqKernel, device, plan.Deterministic ? traits.DqSharedMemoryLimit : 0);
        int dqSharedBytes = traits.DqLaunchSharedMemoryBytes(parameters.Fwd.Bias);
        nint convertDBias = plan.ConvertDBiasKernel is { } c ? KernelModules.GetFunction(c, device, 0) : 0;

        // Every backward call needs scratch (Delta at least): the caller's, else stream-ordered for the call.
        ulong scratch = NvrtcLaunch.Address(args.Workspace);
        bool ownsScratch = scratch == 0;
        if (ownsScratch)
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemAllocAsync(out scratch, (nuint)plan.Scratch.Total, stream));
        try
        {
            Place(ref parameters, plan.Scratch, scratch);
            int headDim = shape.HeadDim;
            KernelParams.Backward* bp = &parameters;
            void** tileArguments = stackalloc void*[] { bp };
            void** rowArguments = stackalloc void*[] { bp, &headDim };
            void** forwardArguments = stackalloc void*[] { &bp->Fwd };

            // launch_bwd: the accumulators, the key-major bitmaps (both: adjacent) and the statistics start at zero.
            Zero(parameters.DQAccum, plan.Scratch.DqAccumBytes, stream);
            Zero(parameters.DBiasAccum, plan.Scratch.DBiasAccumBytes, stream);
            Zero(parameters.Fwd.OccupancyT, 2 * plan.Scratch.BitmapTWords * sizeof(uint), stream);
            Zero(parameters.Fwd.TileStats, 2 * sizeof(ulong), stream);

            if (occupancy != 0)
                NvrtcLaunch.Kernel(occupancy, plan.OccupancyGrid, BackwardLaunchPlan.OccupancyThreads, 0, stream, forwardArguments);
            if (plan.DeltaIsRowPass)
                NvrtcLaunch.Kernel(delta, (plan.RowBlocks, 1, 1), BackwardLaunchPlan.RowPassThreads, 0, stream, rowArguments);
            else
                NvrtcLaunch.Kernel(delta, plan.QueryTileGrid, traits.Threads, dqSharedBytes, stream, tileArguments);
            NvrtcLaunch.Kernel(dkdv, plan.DkDvGrid, traits.Threads, traits.DkDvSharedMemoryBytes, stream, tileArguments);
            if (plan.Deterministic)
                NvrtcLaunch.Kernel(dq, plan.QueryTileGrid, traits.Threads, dqSharedBytes, stream, tileArguments);
            else
                NvrtcLaunch.Kernel(dq, (plan.RowBlocks, 1, 1), BackwardLaunchPlan.RowPassThreads, 0, stream, rowArguments);
            if (convertDBias != 0)
                NvrtcLaunch.Kernel(convertDBias, (plan.ConvertDBiasBlocks, 1, 1), BackwardLaunchPlan.ConvertDBiasThreads, 0, stream, tileArguments);
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

    // make_bwd_params: the forward's fields as the forward resolves them, then the gradients'; the scratch pointers are
    // left for Place.
    internal static KernelParams.Backward Resolve(DeviceBackwardArgs args, AttentionOptions options, BackwardLaunchPlan plan)
    {
        var parameters = new KernelParams.Backward
        {
            Fwd = NvrtcForward.Resolve(args.Forward, options),
            DO = args.DOutput.Pointer,
            DQ = args.DQ.Pointer,
            DK = args.DK.Pointer,
            DV = args.DV.Pointer,
            DOStrides = NvrtcForward.Strides(args.DOutput),
            DQStrides = NvrtcForward.Strides(args.DQ),
            DKStrides = NvrtcForward.Strides(args.DK),
            DVStrides = NvrtcForward.Strides(args.DV),
            SoftmaxScale = options.ResolveSoftmaxScale(args.Shape.HeadDim),
            HeadsKv = args.Shape.HeadsKv,
            OwnerHeads = plan.OwnerHeads,
            OwnerBatches = plan.OwnerBatches,
        };
        if (args.DBias is { } d)
        {
            BroadcastShape b = d.Shape;
            parameters.DBias = d.Pointer;
            parameters.DBiasType = (int)d.DType;
            parameters.DBiasStrides = new()
            {
                Batch = b.Batch == 1 ? 0 : d.StrideBatch,
                Seq = b.Rows == 1 ? 0 : d.StrideRow,
                Head = b.Heads == 1 ? 0 : d.StrideHead,
            };
        }

        return parameters;
    }

    // place_bwd_scratch: the sections of the scratch at `scratch`, laid out as BackwardScratch.
    internal static void Place(ref KernelParams.Backward parameters, BackwardScratch layout, ulong scratch)
    {
        parameters.Delta = Pointer(scratch + layout.Delta);
        parameters.DQAccum = layout.DqAccumBytes > 0 ? Pointer(scratch + layout.DqAccum) : 0;
        parameters.DBiasAccum = layout.DBiasAccumBytes > 0 ? Pointer(scratch + layout.DBiasAccum) : 0;
        if (layout.BitmapWords > 0)
        {
            ulong words = scratch + layout.Bitmaps;
            parameters.Fwd.Occupancy = Pointer(words);
            parameters.Fwd.FullTiles = Pointer(words + layout.BitmapWords * sizeof(uint));
            parameters.Fwd.OccupancyT = Pointer(words + 2 * layout.BitmapWords * sizeof(uint)); // the two key-major bitmaps are adjacent
            parameters.Fwd.FullTilesT = Pointer(words + (2 * layout.BitmapWords + layout.BitmapTWords) * sizeof(uint));
        }
    }

    private static void CheckNativeOnlyRules(DeviceBackwardArgs args, BackwardLaunchPlan plan, int device)
    {
        AttentionShape shape = args.Shape;
        NvrtcLaunch.CheckGridLimits(shape, plan.MaskPlanes, "params.forward.", Function);
        NvrtcLaunch.CheckTensorIsDisjoint(args.Output, shape.SeqLenQ, shape.HeadsQ, shape, "params.forward.out", Function);
        NvrtcLaunch.CheckTensorIsDisjoint(args.DQ, shape.SeqLenQ, shape.HeadsQ, shape, "params.d_q", Function);
        NvrtcLaunch.CheckTensorIsDisjoint(args.DK, shape.SeqLenK, shape.HeadsKv, shape, "params.d_k", Function);
        NvrtcLaunch.CheckTensorIsDisjoint(args.DV, shape.SeqLenK, shape.HeadsKv, shape, "params.d_v", Function);
        if (args.DBias is { } d)
        {
            BroadcastShape b = d.Shape;
            if (!NvrtcLaunch.IsDisjoint([(d.StrideBatch, b.Batch), (d.StrideHead, b.Heads), (d.StrideRow, b.Rows)], shape.SeqLenK))
                throw Refused(FlashDmAttnStatus.InvalidArgument, "params.d_bias: strides make output elements overlap");
        }

        if (args.Workspace != 0 && args.WorkspaceBytes < plan.WorkspaceBytes)
            throw Refused(FlashDmAttnStatus.InvalidArgument, $"params.forward.workspace_bytes is {args.WorkspaceBytes}; this call needs {plan.WorkspaceBytes}");

        NvrtcLaunch.CheckSameDevice(
        [
            (args.K.Pointer, "args.K"), (args.V.Pointer, "args.V"), (args.Output.Pointer, "args.Output"),
            (args.Mask?.Pointer ?? 0, "args.Mask"), (args.Bias?.Pointer ?? 0, "args.Bias"), (args.Lse, "args.Lse"),
            (args.DOutput.Pointer, "args.DOutput"), (args.DQ.Pointer, "args.DQ"), (args.DK.Pointer, "args.DK"), (args.DV.Pointer, "args.DV"),
            (args.DBias?.Pointer ?? 0, "args.DBias"), (args.TileStats, "args.TileStats"), (args.Workspace, "args.Workspace"),
        ], device, Function);
    }

    private static void BuildImages(ReadOnlySpan<KernelVariant?> variants, CompileTarget target)
    {
        var missing = new List<KernelVariant>();
        foreach (KernelVariant? variant in variants)
        {
            if (variant is { } v && !Built.ContainsKey((v, target)))
                missing.Add(v);
        }

        if (missing.Count > 1)
        {
            // The first failure is the one reported, as a sequential build would report it.
            Task.WhenAll(missing.Select(v => Task.Run(() => NvrtcKernelBuilder.Default.GetImage(v, target)))).GetAwaiter().GetResult();
        }

        foreach (KernelVariant variant in missing)
        {
            _ = NvrtcKernelBuilder.Default.GetImage(variant, target); // built above, or the one missing
            Built.TryAdd((variant, target), 0);
        }
    }

    private static void Zero(nint pointer, ulong bytes, nint stream)
    {
        if (pointer != 0 && bytes > 0)
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemsetD8Async(NvrtcLaunch.Address(pointer), 0, (nuint)bytes, stream));
    }

    private static nint Pointer(ulong address) => unchecked((nint)address);

    private static FlashDmAttnException Refused(FlashDmAttnStatus status, string message) => NvrtcLaunch.Refused(Function, status, message);
}

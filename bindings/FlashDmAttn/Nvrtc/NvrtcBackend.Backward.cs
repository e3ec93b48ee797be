using System.Collections.Concurrent;

namespace FlashDmAttn;

// The backward pass: fdma_bwd (native/src/api.cpp, bwd_args.cpp, bwd_launch.cuh) with the driver API.
internal sealed partial class NvrtcBackend
{
    private const string BackwardFunction = "NVRTC backward";

    // The (variant, target) pairs whose images this process already holds: a call that needs no new one spends
    // nothing on compiling.
    private static readonly ConcurrentDictionary<(KernelVariant, CompileTarget), byte> Built = new();

    // The kernels a backward call runs, as launch_bwd picks them (native/src/bwd_launch.cuh): Delta from P and dP by the
    // query-major kernel for bf16, dO . O by a row pass for fp16; dK/dV, gathered with key lifetimes outside the
    // deterministic mode (plan_bwd's gathered_dkdv); dQ by the query-major kernel when deterministic, else the
    // conversion of the atomics' fp32 sum by a row pass, which also converts the gathered dK and dV.
    // lifetimes: the tile kernels take the key-lifetimes visibility policy rather than the dense mask's; wgmma: the
    // tile kernels are the sm_90a ones (the plan's Wgmma).
    public static BackwardKernels BackwardKernels(ScalarType dtype, int headDim, bool deterministic, bool lifetimes, bool wgmma = false)
    {
        bool gathered = lifetimes && !deterministic;
        return new(
            dtype == ScalarType.BFloat16 ? KernelVariant.BackwardDq(dtype, headDim, lifetimes, deltaPass: true, wgmma) : KernelVariant.BackwardDelta(dtype),
            gathered ? KernelVariant.BackwardDkDvGathered(dtype, headDim, wgmma) : KernelVariant.BackwardDkDv(dtype, headDim, lifetimes, wgmma),
            deterministic ? KernelVariant.BackwardDq(dtype, headDim, lifetimes, deltaPass: false, wgmma) : KernelVariant.BackwardConvertRows(dtype),
            gathered);
    }

    // FDMA_BWD_KERNEL=wgmma switches the wgmma backward on (an opt-in for now), read once per process as the native
    // library reads it.
    private static readonly bool BwdWgmmaSwitchedOn = Environment.GetEnvironmentVariable("FDMA_BWD_KERNEL") == "wgmma";

    // plan_bwd's wgmma_available on `device` (select_bwd_wgmma): a device of compute capability 9.0, NVRTC 12 or later
    // (sm_90a), a head dim that has the kernels, and the environment switching them on.
    public static bool DeviceBwdWgmma(int device, int headDim)
    {
        if (!LaunchPlan.HasWgmmaBackward(headDim) || !BwdWgmmaSwitchedOn || !NvrtcCompiler.CompilesSm90a)
            return false;
        (int major, int minor) = KernelModules.ComputeCapability(device);
        return major * 10 + minor == 90;
    }

    public unsafe void Backward(DeviceBackwardArgs args, AttentionOptions options, bool deterministic, nint stream, int device)
    {
        DeviceForwardArgs forward = args.Forward;
        AttentionShape shape = forward.Shape;
        BackwardPlan plan = LaunchPlan.PlanBwd(ProblemShape.Of(forward), deterministic, args.DBias is not null, DeviceBwdWgmma(device, shape.HeadDim));
        CheckBackward(args, plan, device);
        var parameters = new KernelParams.Backward
        {
            Attn = Attention(forward, options),
            O = forward.Output.Pointer,
            OStrides = Strides(forward.Output),
            Lse = forward.Lse,
            DO = args.DOutput.Pointer,
            DQ = args.DQ.Pointer,
            DK = args.DK.Pointer,
            DV = args.DV.Pointer,
            DOStrides = Strides(args.DOutput),
            DQStrides = Strides(args.DQ),
            DKStrides = Strides(args.DK),
            DVStrides = Strides(args.DV),
            DBias = Broadcast(args.DBias, shape),
            TileStats = args.TileStats,
            OwnerHeads = plan.OwnerHeads,
            OwnerBatches = plan.OwnerBatches,
        };

        using CudaContextScope scope = NvrtcLaunch.EnterContext(device, BackwardFunction);

        // Every kernel of the call, compiled or loaded before anything is queued: a compilation failure leaves the
        // outputs untouched. Those not yet built are compiled at once, in parallel (seconds each).
        BackwardKernels kernels = BackwardKernels(forward.DType, shape.HeadDim, deterministic, forward.Lifetimes is not null, plan.Wgmma);
        if (kernels.GatheredDkDv != plan.GatheredDkdv)
            throw new InvalidOperationException($"{BackwardFunction}: the kernels ({kernels.DkDv}) and the plan disagree on the gathered dK/dV.");
        KernelVariant? occupancyKernel = forward.Mask is null ? null : KernelVariant.Occupancy;
        KernelVariant? convertDBiasKernel = args.DBias is { } dBias ? KernelVariant.BackwardConvertDBias(dBias.DType) : null;
        BuildImages([occupancyKernel, kernels.Delta, kernels.DkDv, kernels.Dq, convertDBiasKernel], device);
        nint occupancy = occupancyKernel is { } o ? KernelModules.GetFunction(o, device, 0) : 0;
        nint delta = KernelModules.GetFunction(kernels.Delta, device, kernels.DeltaIsRowPass ? 0 : plan.DqSmemLimit);
        nint dkdv = KernelModules.GetFunction(kernels.DkDv, device, plan.DkdvSmemBytes);
        nint dq = KernelModules.GetFunction(kernels.Dq, device, kernels.DqIsRowPass ? 0 : plan.DqSmemLimit);
        nint convertDBias = convertDBiasKernel is { } c ? KernelModules.GetFunction(c, device, 0) : 0;

        CallScratch scratch = NvrtcLaunch.TakeScratch(args.Workspace, plan.WorkspaceBytes, stream);
        try
        {
            PlaceScratch(ref parameters, plan, scratch.Address);
            int headDim = shape.HeadDim;
            KernelParams.Backward* bp = &parameters;
            void** deltaArguments = stackalloc void*[] { bp, &headDim };

            // launch_bwd: the accumulators, the key-major bitmaps (both: adjacent) and the statistics start at zero.
            Zero(parameters.DQAccum, plan.DQAccumBytes, stream);
            Zero(parameters.DBiasAccum, plan.DBiasAccumBytes, stream);
            Zero(parameters.DKAccum, plan.DKvAccumBytes, stream);
            Zero(parameters.DVAccum, plan.DKvAccumBytes, stream);
            Zero(parameters.Attn.OccupancyT, 2 * plan.BitmapTWords * sizeof(uint), stream);
            Zero(parameters.TileStats, KernelParams.BackwardStatCounters * sizeof(ulong), stream);

            if (occupancy != 0)
                LaunchOccupancy(occupancy, plan.OccupancyGrid, plan.Tile, stream, &bp->Attn);
            if (kernels.DeltaIsRowPass)
                NvrtcLaunch.Kernel(delta, (plan.RowBlocks, 1, 1), LaunchPlan.RowPassThreads, 0, stream, deltaArguments);
            else
                Launch(delta, plan.QueryTileGrid, plan.Threads, plan.DqSmemBytes, stream, bp);
            Launch(dkdv, plan.DkdvGrid, plan.DkdvThreads, plan.DkdvSmemBytes, stream, bp);
            if (kernels.DqIsRowPass)
                LaunchConvertRows(dq, parameters.DQAccum, parameters.DQ, parameters.DQStrides, shape.Batch, shape.SeqLenQ, shape.HeadsQ, headDim, plan.RowBlocks, stream);
            else
                Launch(dq, plan.QueryTileGrid, plan.Threads, plan.DqSmemBytes, stream, bp);
            if (plan.GatheredDkdv)
            {
                // dq is the rows' conversion here: gathered only outside the deterministic mode.
                LaunchConvertRows(dq, parameters.DKAccum, parameters.DK, parameters.DKStrides, shape.Batch, shape.SeqLenK, shape.HeadsKv, headDim, plan.KvRowBlocks, stream);
                LaunchConvertRows(dq, parameters.DVAccum, parameters.DV, parameters.DVStrides, shape.Batch, shape.SeqLenK, shape.HeadsKv, headDim, plan.KvRowBlocks, stream);
            }

            if (convertDBias != 0)
                Launch(convertDBias, new Dim3(plan.ConvertDBiasBlocks, 1, 1), LaunchPlan.ConvertDBiasThreads, 0, stream, bp);
        }
        catch
        {
            scratch.Abandon();
            throw;
        }

        scratch.Release();
    }

    // place_bwd_scratch: the sections of the call's scratch, laid out as the plan says.
    private static void PlaceScratch(ref KernelParams.Backward parameters, BackwardPlan plan, ulong scratch)
    {
        parameters.Delta = Pointer(scratch + plan.Delta);
        parameters.DQAccum = plan.DQAccumBytes > 0 ? Pointer(scratch + plan.DQAccum) : 0;
        parameters.DBiasAccum = plan.DBiasAccumBytes > 0 ? Pointer(scratch + plan.DBiasAccum) : 0;
        parameters.DKAccum = plan.GatheredDkdv ? Pointer(scratch + plan.DKAccum) : 0;
        parameters.DVAccum = plan.GatheredDkdv ? Pointer(scratch + plan.DVAccum) : 0;
        if (plan.BitmapWords > 0)
        {
            ulong words = scratch + plan.Bitmaps;
            parameters.Attn.Occupancy = Pointer(words);
            parameters.Attn.FullTiles = Pointer(words + plan.BitmapWords * sizeof(uint));
            parameters.Attn.OccupancyT = Pointer(words + 2 * plan.BitmapWords * sizeof(uint)); // the two key-major bitmaps are adjacent
            parameters.Attn.FullTilesT = Pointer(words + (2 * plan.BitmapWords + plan.BitmapTWords) * sizeof(uint));
        }
    }

    // bwd_convert_rows_kernel(accum, out, strides, batch, seqlen, heads, head_dim): an fp32 [B, L, H, D] accumulator
    // to its 16-bit tensor (launch_bwd_convert_rows).
    private static unsafe void LaunchConvertRows(
        nint function, nint accum, nint output, KernelParams.Strides strides, int batch, int seqLen, int heads, int headDim, uint blocks, nint stream)
    {
        void** arguments = stackalloc void*[] { &accum, &output, &strides, &batch, &seqLen, &heads, &headDim };
        NvrtcLaunch.Kernel(function, (blocks, 1, 1), LaunchPlan.RowPassThreads, 0, stream, arguments);
    }

    private static void CheckBackward(DeviceBackwardArgs args, BackwardPlan plan, int device)
    {
        DeviceForwardArgs forward = args.Forward;
        AttentionShape shape = forward.Shape;
        NvrtcLaunch.CheckGridLimits(shape, forward.Mask?.Shape, BackwardFunction);
        NvrtcLaunch.CheckTensorIsDisjoint(args.DQ, shape.SeqLenQ, shape.HeadsQ, shape, "params.d_q", BackwardFunction);
        NvrtcLaunch.CheckTensorIsDisjoint(args.DK, shape.SeqLenK, shape.HeadsKv, shape, "params.d_k", BackwardFunction);
        NvrtcLaunch.CheckTensorIsDisjoint(args.DV, shape.SeqLenK, shape.HeadsKv, shape, "params.d_v", BackwardFunction);
        if (args.DBias is { } d)
        {
            BroadcastShape b = d.Shape;
            long keyStride = shape.SeqLenK == 1 ? 1 : d.StrideKey;
            if (!NvrtcLaunch.IsDisjoint([(d.StrideBatch, b.Batch), (d.StrideHead, b.Heads), (d.StrideRow, b.Rows), (keyStride, shape.SeqLenK)], 1))
                throw NvrtcLaunch.Refused(BackwardFunction, FlashDmAttnStatus.InvalidArgument, "params.d_bias: strides make output elements overlap");
        }

        NvrtcLaunch.CheckWorkspace(args.Workspace, args.WorkspaceBytes, plan.WorkspaceBytes, BackwardFunction);
        NvrtcLaunch.CheckSameDevice(
        [
            (forward.K.Pointer, "args.Forward.K"), (forward.V.Pointer, "args.Forward.V"), (forward.Output.Pointer, "args.Forward.Output"),
            (forward.Mask?.Pointer ?? 0, "args.Forward.Mask"), (forward.Lifetimes?.Pointer ?? 0, "args.Forward.Lifetimes"),
            (forward.Bias?.Pointer ?? 0, "args.Forward.Bias"),
            (forward.Lse, "args.Forward.Lse"), (args.DOutput.Pointer, "args.DOutput"), (args.DQ.Pointer, "args.DQ"),
            (args.DK.Pointer, "args.DK"), (args.DV.Pointer, "args.DV"), (args.DBias?.Pointer ?? 0, "args.DBias"),
            (args.TileStats, "args.TileStats"), (args.Workspace, "args.Workspace"),
        ], device, BackwardFunction);
    }

    private static void BuildImages(ReadOnlySpan<KernelVariant?> variants, int device)
    {
        // Each variant for its own target on the device (sm_90a for the wgmma ones).
        var missing = new List<(KernelVariant Variant, CompileTarget Target)>();
        foreach (KernelVariant? variant in variants)
        {
            if (variant is { } v && KernelModules.TargetOf(v, device) is var target && !Built.ContainsKey((v, target)))
                missing.Add((v, target));
        }

        if (missing.Count > 1)
        {
            // The first failure is the one reported, as a sequential build would report it.
            Task.WhenAll(missing.Select(m => Task.Run(() => NvrtcKernelBuilder.Default.GetImage(m.Variant, m.Target)))).GetAwaiter().GetResult();
        }

        foreach ((KernelVariant variant, CompileTarget target) in missing)
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
}

// The three tile-or-row kernels of a backward call (NvrtcBackend.BackwardKernels); GatheredDkDv: DkDv is the gathered
// kernel, whose fp32 dK and dV the row pass Dq converts too.
internal readonly record struct BackwardKernels(KernelVariant Delta, KernelVariant DkDv, KernelVariant Dq, bool GatheredDkDv)
{
    // Whether Delta and dQ are row passes (bwd_prepost.cuh: Delta's taking (params, head_dim), dQ's the rows'
    // conversion) rather than tile kernels.
    public bool DeltaIsRowPass => Delta.Header == "bwd_prepost.cuh";

    public bool DqIsRowPass => Dq.Header == "bwd_prepost.cuh";

    public IEnumerable<KernelVariant> All => [Delta, DkDv, Dq];
}

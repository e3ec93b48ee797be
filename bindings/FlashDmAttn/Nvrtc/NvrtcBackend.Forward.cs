namespace FlashDmAttn;

// The forward pass: fdma_fwd (native/src/api.cpp, fwd_args.cpp, fwd_launch.cuh) with the driver API.
internal sealed partial class NvrtcBackend
{
    private const string ForwardFunction = "NVRTC forward";

    public unsafe void Forward(DeviceForwardArgs args, AttentionOptions options, nint stream, int device)
    {
        AttentionShape shape = args.Shape;
        ForwardPlan plan = LaunchPlan.PlanFwd(ProblemShape.Of(args), DeviceFwdKernel(device, shape.HeadDim));
        CheckForward(args, plan, device);
        var parameters = new KernelParams.Forward
        {
            Attn = Attention(args, options),
            O = args.Output.Pointer,
            OStrides = Strides(args.Output),
            Lse = args.Lse,
            TileStats = args.TileStats,
            KvSplits = plan.KvSplits,
            PackedHeads = plan.PackedHeads,
        };

        using CudaContextScope scope = NvrtcLaunch.EnterContext(device, ForwardFunction);
        nint forward = KernelModules.GetFunction(KernelVariant.Forward(args.DType, shape.HeadDim, args.Lifetimes is not null, plan.Kernel), device, plan.SmemLimit);
        nint occupancy = args.Mask is null ? 0 : KernelModules.GetFunction(KernelVariant.Occupancy, device, 0);
        nint combine = plan.KvSplits > 1 ? KernelModules.GetFunction(KernelVariant.ForwardCombine(args.DType, shape.HeadDim), device, 0) : 0;

        if (args.TileStats != 0)
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemsetD8Async(NvrtcLaunch.Address(args.TileStats), 0, KernelParams.ForwardStatCounters * sizeof(ulong), stream));
        CallScratch scratch = NvrtcLaunch.TakeScratch(args.Workspace, plan.WorkspaceBytes, stream);
        try
        {
            PlaceScratch(ref parameters, plan, scratch.Address);
            if (occupancy != 0)
                LaunchOccupancy(occupancy, plan.OccupancyGrid, plan.Tile, stream, &parameters.Attn);
            Launch(forward, plan.Grid, plan.Threads, plan.SmemBytes, stream, &parameters);
            if (combine != 0)
                Launch(combine, new Dim3(plan.CombineBlocks, 1, 1), LaunchPlan.CombineThreads, 0, stream, &parameters);
        }
        catch
        {
            scratch.Abandon();
            throw;
        }

        scratch.Release();
    }

    // place_fwd_scratch: the split-KV partials and the bitmaps in the call's scratch.
    private static void PlaceScratch(ref KernelParams.Forward parameters, ForwardPlan plan, ulong scratch)
    {
        if (plan.KvSplits > 1)
        {
            parameters.OPartial = Pointer(scratch + plan.OPartial);
            parameters.LsePartial = Pointer(scratch + plan.LsePartial);
        }

        if (plan.BitmapWords > 0)
        {
            parameters.Attn.Occupancy = Pointer(scratch + plan.Bitmaps);
            parameters.Attn.FullTiles = Pointer(scratch + plan.Bitmaps + plan.BitmapWords * sizeof(uint));
        }
    }

    private static void CheckForward(DeviceForwardArgs args, ForwardPlan plan, int device)
    {
        AttentionShape shape = args.Shape;
        NvrtcLaunch.CheckGridLimits(shape, args.Mask?.Shape, ForwardFunction);
        NvrtcLaunch.CheckTensorIsDisjoint(args.Output, shape.SeqLenQ, shape.HeadsQ, shape, "params.out", ForwardFunction);
        NvrtcLaunch.CheckWorkspace(args.Workspace, args.WorkspaceBytes, plan.WorkspaceBytes, ForwardFunction);
        NvrtcLaunch.CheckSameDevice(
        [
            (args.K.Pointer, "args.K"), (args.V.Pointer, "args.V"), (args.Output.Pointer, "args.Output"),
            (args.Mask?.Pointer ?? 0, "args.Mask"), (args.Lifetimes?.Pointer ?? 0, "args.Lifetimes"), (args.Bias?.Pointer ?? 0, "args.Bias"),
            (args.Lse, "args.Lse"),
            (args.TileStats, "args.TileStats"), (args.Workspace, "args.Workspace"),
        ], device, ForwardFunction);
    }
}

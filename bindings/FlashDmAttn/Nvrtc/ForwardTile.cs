namespace FlashDmAttn;

// The forward's tile shape for a head dim, mirrored from fwd_tile() in native/kernels/fwd_config.cuh, with what the
// kernel's FwdTraits derive from it (fwd_kernel.cuh): the NVRTC backend's one source of launch shapes.
// NvrtcMirrorTests compiles these numbers against the headers with NVRTC, and against the native library's answers
// where it exists.
internal readonly record struct ForwardTile(int BlockM, int BlockN, int Warps)
{
    public static readonly int[] HeadDims = [32, 64, 96, 128, 192, 256];

    public static ForwardTile For(int headDim) => headDim <= 64 ? new(128, 64, 4) : new(64, 64, 4);

    public int Threads => Warps * 32;

    // FwdTraits::kSmemBytes: Q, K and V tiles of 16-bit elements, each row padded by 8 elements.
    public int SharedMemoryBytes(int headDim) => (BlockM + 2 * BlockN) * (headDim + 8) * 2;

    // fwd_bias_stage_bytes(): one key tile's bias rows (one when the bias broadcasts over queries), padded by 8 elements.
    public int BiasStageBytes(KernelParams.BroadcastOperand bias) =>
        bias.Data == 0 ? 0 : (bias.StrideRow == 0 ? 1 : BlockM) * (BlockN + 8) * ((ScalarType)bias.Type).ElementSize();

    // fwd_max_bias_stage_bytes(): BlockM rows of fp32, the most a launch stages.
    public int MaxBiasStageBytes => BlockM * (BlockN + 8) * 4;

    // The most a launch asks for: the limit a loaded forward kernel is given.
    public int SharedMemoryLimit(int headDim) => SharedMemoryBytes(headDim) + MaxBiasStageBytes;
}

// Everything the NVRTC backend launches for one call, computed in this one place the way native/src/fwd_launch.cuh
// and fwd_args.cpp compute it: grids, blocks, dynamic shared memory and scratch.
internal readonly record struct ForwardLaunchPlan
{
    public const int OccupancyThreads = 256; // kOccupancyThreads in tile_occupancy.cuh
    public const int CombineThreads = 128;   // kCombineThreads in fwd_combine.cuh

    // fwd_kv_splits() in fwd_config.cuh and its constants.
    public const int KvSplitTargetBlocks = 512;
    public const int KvSplitMinTiles = 2;
    public const int KvSplitMax = 256;

    private ForwardLaunchPlan(AttentionShape shape, BroadcastShape? mask, KernelParams.BroadcastOperand bias)
    {
        Tile = ForwardTile.For(shape.HeadDim);
        QueryTiles = (shape.SeqLenQ + Tile.BlockM - 1) / Tile.BlockM;
        KeyTiles = (shape.SeqLenK + Tile.BlockN - 1) / Tile.BlockN;
        BitmapRowWords = (KeyTiles + 31) / 32; // occupancy_words()
        MaskPlanes = mask is { } m ? m.Batch * m.Heads : 0;
        KvSplits = KvSplitsFor((long)QueryTiles * shape.HeadsQ * shape.Batch, KeyTiles);
        ForwardGrid = ((uint)QueryTiles, (uint)shape.HeadsQ, (uint)(shape.Batch * KvSplits));
        ForwardSharedMemoryBytes = Tile.SharedMemoryBytes(shape.HeadDim) + Tile.BiasStageBytes(bias);
        ForwardSharedMemoryLimit = Tile.SharedMemoryLimit(shape.HeadDim);
        OccupancyGrid = ((uint)QueryTiles, (uint)BitmapRowWords, (uint)MaskPlanes);

        // fwd_scratch_layout(): the split-KV partials, then the two bitmaps, each from a 256-byte boundary.
        long rows = (long)shape.Batch * shape.HeadsQ * shape.SeqLenQ;
        CombineBlocks = (uint)((rows + CombineThreads / 32 - 1) / (CombineThreads / 32));
        long end = 0;
        if (KvSplits > 1)
        {
            end += Align256(KvSplits * rows * shape.HeadDim * sizeof(float));
            LsePartialOffset = end;
            end += Align256(KvSplits * rows * sizeof(float));
        }

        BitmapsOffset = end;
        if (MaskPlanes > 0)
            end += Align256(2 * BitmapWords * sizeof(uint));
        WorkspaceBytes = end;
    }

    public ForwardTile Tile { get; }

    public int QueryTiles { get; }

    public int KeyTiles { get; }

    public int BitmapRowWords { get; }

    // Distinct (batch, head) planes of the mask; 0 without one, and then no pre-pass and no bitmaps.
    public int MaskPlanes { get; }

    // Blocks sharing each query tile's key tiles; 1 (no combine pass) unless the grid is small.
    public int KvSplits { get; }

    public (uint X, uint Y, uint Z) ForwardGrid { get; }

    public int ForwardSharedMemoryBytes { get; }

    public int ForwardSharedMemoryLimit { get; }

    public (uint X, uint Y, uint Z) OccupancyGrid { get; }

    // fwd_combine_kernel: one warp per (batch, query head, query) row.
    public uint CombineBlocks { get; }

    // Words of one bitmap, [mask planes][query tiles][row words].
    public long BitmapWords => (long)MaskPlanes * QueryTiles * BitmapRowWords;

    // Scratch offsets: the partial outputs at 0, their LSEs, then the occupied and the full bitmap one after the other.
    public long LsePartialOffset { get; }

    public long BitmapsOffset { get; }

    public long WorkspaceBytes { get; }

    // bias: as the kernel gets it (NvrtcForward.Broadcast); it decides the shared memory the bias is staged in.
    public static ForwardLaunchPlan For(AttentionShape shape, BroadcastShape? mask, KernelParams.BroadcastOperand bias = default) =>
        new(shape, mask, bias);

    public static int KvSplitsFor(long blocks, int keyTiles)
    {
        long byBlocks = 2 * blocks >= KvSplitTargetBlocks ? 1 : (KvSplitTargetBlocks + blocks - 1) / blocks;
        long splits = Math.Min(byBlocks, keyTiles / KvSplitMinTiles);
        return splits < 2 ? 1 : (int)Math.Min(splits, KvSplitMax);
    }

    private static long Align256(long bytes) => (bytes + 255) / 256 * 256;
}

namespace FlashDmAttn;

// The C# port of native/kernels/plan.cuh, the one plan of each direction, for the NVRTC backend: tiles, key splits,
// grids, shared memory and scratch layout of a call. Function for function and field for field as the header has
// them (PascalCase for snake_case), so that NvrtcMirrorTests can have NVRTC evaluate the header's plan_fwd and
// plan_bwd and compare every field over many shapes. It is a port, not a call into the header, because the plan
// answers host queries (tile shapes, workspace sizes) that need no GPU and no compilation.
internal static class LaunchPlan
{
    public static readonly int[] HeadDims = [32, 64, 96, 128, 192, 256];

    public const int OccupancyThreads = 256;
    public const int OccupancyMaxRowGroups = 4;
    public const long OccupancySmallGrid = 1024;
    public const int OccupancyGroupRows = 64;
    public const int CombineThreads = 256;
    public const int CombineSplitsPerWarp = 16;
    public const int RowPassThreads = 128;
    public const int ConvertDBiasThreads = 256;

    public const int KvSplitTargetBlocks = 512;
    public const int KvSplitMinTiles = 2;
    public const int KvSplitMax = 256;

    // The backward's gathered dK/dV (key lifetimes, not deterministic): a block of dmattn_bwd_dkdv_gathered_kernel takes
    // the keys alive in a range of GatherRangeTiles query tiles, and every GatherKeySlots-th of their gathered tiles.
    public const int GatherRangeTiles = 8;
    public const int GatherKeySlots = 4;

    public static bool IsSupportedHeadDim(int headDim) => Array.IndexOf(HeadDims, headDim) >= 0;

    public static bool HasWgmmaForward(int headDim) => headDim == 128;

    // arch: the device's compute capability, major * 10 + minor; wgmmaAvailable: NVRTC 12 or later (sm_90a) and
    // FDMA_FWD_KERNEL=mma_sync not set (NvrtcBackend.DeviceFwdKernel).
    public static FwdKernel DeviceFwdKernel(int headDim, int arch, bool wgmmaAvailable) =>
        wgmmaAvailable && arch == 90 && HasWgmmaForward(headDim) ? FwdKernel.Wgmma : FwdKernel.MmaSync;

    public static Tile FwdTile(int headDim, FwdKernel kernel = FwdKernel.MmaSync) => kernel switch
    {
        FwdKernel.Wgmma => new(128, 64, 8),
        FwdKernel.Decode => new(16, 64, 4),
        _ => headDim <= 64 ? new(128, 64, 4) : new(64, 64, 4),
    };

    public const int DecodeQueries = 16;

    public static FwdKernel FwdKernelOf(ProblemShape s, FwdKernel deviceKernel) => s.SeqLenQ <= DecodeQueries ? FwdKernel.Decode : deviceKernel;

    public static int FwdMaxPackedHeads(ProblemShape s)
    {
        if (s.SeqLenQ != 1)
            return 1;
        int heads = FwdTile(s.HeadDim, FwdKernel.Decode).BlockM;
        while (s.HeadsQ / s.HeadsKv % heads != 0)
            heads--;
        return heads;
    }

    public static bool PerQueryHead(int operandHeads, ProblemShape s) => operandHeads == s.HeadsQ && s.HeadsQ != s.HeadsKv;

    public static int FwdPackedHeads(ProblemShape s) =>
        PerQueryHead(s.MaskHeads, s) || PerQueryHead(s.BiasHeads, s) || PerQueryHead(s.LifetimeHeads, s) ? 1 : FwdMaxPackedHeads(s);

    public static Tile BwdTile(int headDim) => new(64, 64, 4);

    public static int TilesOf(int length, int block) => (length + block - 1) / block;

    public static int OccupancyWords(int tiles) => (tiles + 31) / 32;

    public static uint WarpRowBlocks(long rows, int threads) => unchecked((uint)((rows + threads / 32 - 1) / (threads / 32)));

    public static int CombineWarpsPerRow(int kvSplits)
    {
        int warps = 1;
        while (warps < CombineThreads / 32 && warps * CombineSplitsPerWarp < kvSplits)
            warps *= 2;
        return warps;
    }

    public static int PaddedRowElems(int headDim) => headDim + 8;

    // The wgmma forward's K (and bias) and V slots (kFwdKeySlots, kFwdValueSlots); the decode kernel's (kFwdDecodeSlots).
    public const int FwdWgmmaKeySlots = 2;
    public const int FwdWgmmaValueSlots = 3;
    public const int FwdDecodeSlots = 2;

    // The warp-specialized wgmma forward's producer warpgroup (kFwdProducerThreads, fwd_producer_threads).
    public const int FwdWgmmaProducerThreads = 128;

    public static int FwdProducerThreads(FwdKernel kernel) => kernel == FwdKernel.Wgmma ? FwdWgmmaProducerThreads : 0;

    public static int FwdKeySlots(FwdKernel kernel) =>
        kernel == FwdKernel.Wgmma ? FwdWgmmaKeySlots : kernel == FwdKernel.Decode ? FwdDecodeSlots : 1;

    public static int FwdValueSlots(FwdKernel kernel) =>
        kernel == FwdKernel.Wgmma ? FwdWgmmaValueSlots : kernel == FwdKernel.Decode ? FwdDecodeSlots : 1;

    public static int FwdTilesSmemBytes(int headDim, FwdKernel kernel = FwdKernel.MmaSync) =>
        (kernel == FwdKernel.Wgmma ? 1024 : 0) +
        (FwdTile(headDim, kernel).BlockM + (FwdKeySlots(kernel) + FwdValueSlots(kernel)) * FwdTile(headDim, kernel).BlockN) *
        (kernel == FwdKernel.Wgmma ? headDim : PaddedRowElems(headDim)) * 2;

    // biasType: a ScalarType's value, 0 without a bias.
    public static int BiasStageBytes(Tile tile, int biasType, bool biasPerRow) =>
        biasType == 0 ? 0 : (biasPerRow ? tile.BlockM : 1) * (tile.BlockN + 8) * ((ScalarType)biasType).ElementSize();

    public static int MaxBiasStageBytes(Tile tile) => BiasStageBytes(tile, (int)ScalarType.Float32, biasPerRow: true);

    public static int BwdDSlice(int headDim) => headDim <= 128 ? headDim : headDim / 2;

    public static int BwdTileBytes(int headDim) => BwdTile(headDim).BlockM * PaddedRowElems(headDim) * 2;

    public static int BwdDkdvSmemBytes(int headDim) =>
        4 * BwdTileBytes(headDim) + BwdTile(headDim).BlockN * (BwdTile(headDim).BlockM + 8) * 2 + 2 * BwdTile(headDim).BlockM * 4;

    public static int BwdDqSmemBytes(int headDim) => 4 * BwdTileBytes(headDim);

    // The backward's wgmma kernels (has_wgmma_backward, kBwdWgmmaThreads, bwd_wgmma_smem_bytes): sm_90a, compute
    // capability 9.0, where the backend can compile them and FDMA_BWD_KERNEL=mma_sync is not set.
    public static bool HasWgmmaBackward(int headDim) => headDim == 128;

    public const int BwdWgmmaThreads = 256;

    public static int BwdWgmmaSmemBytes(int headDim) => 1024 + 2 * 64 * headDim * 2 + 2 * (4 * 64 * headDim * 2 + 64 * 64 * 2 + 4 * 64 * 4);

    public static int FwdKvSplits(long blocks, int keyTiles)
    {
        long byBlocks = 2 * blocks >= KvSplitTargetBlocks ? 1 : (KvSplitTargetBlocks + blocks - 1) / blocks;
        long splits = Math.Min(byBlocks, keyTiles / KvSplitMinTiles);
        return splits < 2 ? 1 : (int)Math.Min(splits, KvSplitMax);
    }

    public static ulong Align256(ulong bytes) => (bytes + 255) / 256 * 256;

    public static int OccupancyThreadsOf(Dim3 grid, int tileRows) =>
        (long)grid.X * grid.Y * grid.Z <= OccupancySmallGrid && tileRows >= OccupancyGroupRows ? OccupancyMaxRowGroups * OccupancyThreads : OccupancyThreads;

    public static int FwdSplitsOn(ProblemShape s, FwdKernel kernel, int packedHeads)
    {
        Tile tile = FwdTile(s.HeadDim, kernel);
        return FwdKvSplits((long)TilesOf(s.SeqLenQ, tile.BlockM) * s.Batch * (s.HeadsQ / packedHeads), TilesOf(s.SeqLenK, tile.BlockN));
    }

    public static int FwdWorkspaceSplits(ProblemShape s)
    {
        int packed = FwdMaxPackedHeads(s);
        int mmaSync = FwdSplitsOn(s, FwdKernelOf(s, FwdKernel.MmaSync), packed);
        int wgmma = HasWgmmaForward(s.HeadDim) ? FwdSplitsOn(s, FwdKernelOf(s, FwdKernel.Wgmma), packed) : 1;
        return Math.Max(mmaSync, wgmma);
    }

    public static int FwdWorkspaceQueryTiles(ProblemShape s)
    {
        int mmaSync = TilesOf(s.SeqLenQ, FwdTile(s.HeadDim, FwdKernelOf(s, FwdKernel.MmaSync)).BlockM);
        int wgmma = HasWgmmaForward(s.HeadDim) ? TilesOf(s.SeqLenQ, FwdTile(s.HeadDim, FwdKernelOf(s, FwdKernel.Wgmma)).BlockM) : 1;
        return Math.Max(mmaSync, wgmma);
    }

    // deviceKernel: the device's kernel for calls longer than decode (DeviceFwdKernel).
    public static ForwardPlan PlanFwd(ProblemShape s, FwdKernel deviceKernel = FwdKernel.MmaSync)
    {
        FwdKernel kernel = FwdKernelOf(s, deviceKernel);
        Tile tile = FwdTile(s.HeadDim, kernel);
        int packedHeads = FwdPackedHeads(s);
        int mTiles = TilesOf(s.SeqLenQ, tile.BlockM);
        int nTiles = TilesOf(s.SeqLenK, tile.BlockN);
        int kvSplits = FwdSplitsOn(s, kernel, packedHeads);
        int workspaceSplits = FwdWorkspaceSplits(s);
        int maskPlanes = s.MaskBatch * s.MaskHeads;
        ulong rows = (ulong)s.Batch * (ulong)s.HeadsQ * (ulong)s.SeqLenQ;
        ulong end = 0, oPartial = 0, lsePartial = 0, bitmaps = 0, bitmapWords = 0;
        if (workspaceSplits > 1)
        {
            oPartial = end;
            end += Align256((ulong)workspaceSplits * rows * (ulong)s.HeadDim * 4);
            lsePartial = end;
            end += Align256((ulong)workspaceSplits * rows * 4);
        }

        if (maskPlanes > 0)
        {
            bitmaps = end;
            bitmapWords = (ulong)maskPlanes * (ulong)mTiles * (ulong)OccupancyWords(nTiles);
            end += Align256(2 * (ulong)maskPlanes * (ulong)FwdWorkspaceQueryTiles(s) * (ulong)OccupancyWords(nTiles) * 4);
        }

        return new ForwardPlan
        {
            Kernel = kernel,
            Tile = tile,
            PackedHeads = packedHeads,
            MTiles = mTiles,
            NTiles = nTiles,
            KvSplits = kvSplits,
            WorkspaceSplits = workspaceSplits,
            Grid = new((uint)mTiles, (uint)(s.HeadsQ / packedHeads), (uint)(s.Batch * kvSplits)),
            Threads = tile.Warps * 32 + FwdProducerThreads(kernel),
            SmemBytes = FwdTilesSmemBytes(s.HeadDim, kernel) + FwdKeySlots(kernel) * BiasStageBytes(tile, s.BiasType, s.BiasRows > 1),
            SmemLimit = FwdTilesSmemBytes(s.HeadDim, kernel) + FwdKeySlots(kernel) * MaxBiasStageBytes(tile),
            OccupancyGrid = new((uint)mTiles, (uint)OccupancyWords(nTiles), (uint)maskPlanes),
            CombineBlocks = WarpRowBlocks((long)rows * CombineWarpsPerRow(kvSplits), CombineThreads),
            OPartial = oPartial,
            LsePartial = lsePartial,
            Bitmaps = bitmaps,
            BitmapWords = bitmapWords,
            WorkspaceBytes = end,
        };
    }

    // wgmmaAvailable: the device is of compute capability 9.0 and the backend can run the backward's wgmma kernels.
    public static BackwardPlan PlanBwd(ProblemShape s, bool deterministic, bool withDBias, bool wgmmaAvailable = false)
    {
        Tile tile = BwdTile(s.HeadDim);
        int mTiles = TilesOf(s.SeqLenQ, tile.BlockM);
        int nTiles = TilesOf(s.SeqLenK, tile.BlockN);
        int slices = s.HeadDim / BwdDSlice(s.HeadDim);
        int ownerHeads = withDBias && s.BiasHeads == 1 ? 1 : s.HeadsKv;
        int ownerBatches = withDBias && s.BiasBatch == 1 ? 1 : s.Batch;
        int maskPlanes = s.MaskBatch * s.MaskHeads;
        ulong rows = (ulong)s.Batch * (ulong)s.HeadsQ * (ulong)s.SeqLenQ;
        ulong dBiasElements = withDBias ? (ulong)s.BiasBatch * (ulong)s.BiasHeads * (ulong)s.BiasRows * (ulong)s.SeqLenK : 0;
        bool gatheredDkdv = s.LifetimeHeads != 0 && !deterministic;
        bool wgmma = wgmmaAvailable && HasWgmmaBackward(s.HeadDim);
        ulong kvRows = (ulong)s.Batch * (ulong)s.SeqLenK * (ulong)s.HeadsKv;
        ulong end = 0, dqAccum = 0, dqAccumBytes = 0, dBiasAccum = 0, dBiasAccumBytes = 0, bitmaps = 0, bitmapWords = 0, bitmapTWords = 0;
        ulong dkAccum = 0, dvAccum = 0, dkvAccumBytes = 0;
        ulong delta = end;
        end += Align256(rows * 4);
        if (!deterministic)
        {
            dqAccum = end;
            dqAccumBytes = rows * (ulong)s.HeadDim * 4;
            end += Align256(dqAccumBytes);
        }

        if (withDBias)
        {
            dBiasAccum = end;
            dBiasAccumBytes = dBiasElements * 4;
            end += Align256(dBiasAccumBytes);
        }

        if (gatheredDkdv)
        {
            dkvAccumBytes = kvRows * (ulong)s.HeadDim * 4;
            dkAccum = end;
            end += Align256(dkvAccumBytes);
            dvAccum = end;
            end += Align256(dkvAccumBytes);
        }

        if (maskPlanes > 0)
        {
            bitmaps = end;
            bitmapWords = (ulong)maskPlanes * (ulong)mTiles * (ulong)OccupancyWords(nTiles);
            bitmapTWords = (ulong)maskPlanes * (ulong)nTiles * (ulong)OccupancyWords(mTiles);
            end += Align256(2 * (bitmapWords + bitmapTWords) * 4);
        }

        return new BackwardPlan
        {
            Tile = tile,
            MTiles = mTiles,
            NTiles = nTiles,
            Slices = slices,
            OwnerHeads = ownerHeads,
            OwnerBatches = ownerBatches,
            Threads = tile.Warps * 32,
            OccupancyGrid = new((uint)mTiles, (uint)OccupancyWords(nTiles), (uint)maskPlanes),
            QueryTileGrid = new((uint)mTiles, (uint)s.HeadsQ, (uint)s.Batch),
            GatheredDkdv = gatheredDkdv,
            Wgmma = wgmma,
            DkdvGrid = gatheredDkdv
                ? new((uint)(TilesOf(mTiles, GatherRangeTiles) * GatherKeySlots * slices), (uint)s.HeadsQ, (uint)s.Batch)
                : new((uint)(nTiles * slices), (uint)ownerHeads, (uint)ownerBatches),
            RowBlocks = WarpRowBlocks((long)rows, RowPassThreads),
            KvRowBlocks = gatheredDkdv ? WarpRowBlocks((long)kvRows, RowPassThreads) : 0,
            ConvertDBiasBlocks = (uint)((dBiasElements + ConvertDBiasThreads - 1) / ConvertDBiasThreads),
            DkdvThreads = wgmma ? BwdWgmmaThreads : tile.Warps * 32,
            DkdvSmemBytes = wgmma ? BwdWgmmaSmemBytes(s.HeadDim) : BwdDkdvSmemBytes(s.HeadDim),
            DqSmemBytes = BwdDqSmemBytes(s.HeadDim) + BiasStageBytes(tile, s.BiasType, s.BiasRows > 1),
            DqSmemLimit = BwdDqSmemBytes(s.HeadDim) + MaxBiasStageBytes(tile),
            Delta = delta,
            DQAccum = dqAccum,
            DQAccumBytes = dqAccumBytes,
            DBiasAccum = dBiasAccum,
            DBiasAccumBytes = dBiasAccumBytes,
            DKAccum = dkAccum,
            DVAccum = dvAccum,
            DKvAccumBytes = dkvAccumBytes,
            Bitmaps = bitmaps,
            BitmapWords = bitmapWords,
            BitmapTWords = bitmapTWords,
            WorkspaceBytes = end,
        };
    }
}

// fdma::Tile.
internal readonly record struct Tile(int BlockM, int BlockN, int Warps);

// fdma::FwdKernel.
internal enum FwdKernel
{
    MmaSync = 0,
    Wgmma = 1, // sm_90a: NVRTC 12 or later
    Decode = 2,
}

// fdma::Dim3.
internal readonly record struct Dim3(uint X, uint Y, uint Z);

// fdma::ProblemShape: what a plan depends on.
internal readonly record struct ProblemShape(
    int Batch, int SeqLenQ, int SeqLenK, int HeadsQ, int HeadsKv, int HeadDim,
    int MaskBatch, int MaskHeads, int BiasType, int BiasBatch, int BiasHeads, int BiasRows, int LifetimeHeads)
{
    // mask, bias, lifetimes: the logical shapes, null when absent; biasType: the bias's element type.
    public static ProblemShape Of(AttentionShape shape, BroadcastShape? mask, BroadcastShape? bias, ScalarType biasType, BroadcastShape? lifetimes) => new(
        shape.Batch, shape.SeqLenQ, shape.SeqLenK, shape.HeadsQ, shape.HeadsKv, shape.HeadDim,
        mask?.Batch ?? 0, mask?.Heads ?? 0, bias is null ? 0 : (int)biasType, bias?.Batch ?? 0, bias?.Heads ?? 0, bias?.Rows ?? 0,
        lifetimes?.Heads ?? 0);

    // For what depends on the lifetimes' presence only (the workspaces, the backward's plan): broadcast lifetimes.
    public static ProblemShape Of(AttentionShape shape, BroadcastShape? mask, BroadcastShape? bias, ScalarType biasType, bool lifetimes = false) =>
        Of(shape, mask, bias, biasType, lifetimes ? new BroadcastShape(1, 1, 1) : null);

    // The shape of a call's problem.
    public static ProblemShape Of(DeviceForwardArgs args) =>
        Of(args.Shape, args.Mask?.Shape, args.Bias?.Shape, args.Bias?.DType ?? default, args.Lifetimes?.Shape);
}

// fdma::FwdPlan.
internal readonly record struct ForwardPlan
{
    public FwdKernel Kernel { get; init; }
    public Tile Tile { get; init; }
    public int PackedHeads { get; init; }
    public int MTiles { get; init; }
    public int NTiles { get; init; }
    public int KvSplits { get; init; }
    public int WorkspaceSplits { get; init; }
    public Dim3 Grid { get; init; }
    public int Threads { get; init; }
    public int SmemBytes { get; init; }
    public int SmemLimit { get; init; }
    public Dim3 OccupancyGrid { get; init; }
    public uint CombineBlocks { get; init; }
    public ulong OPartial { get; init; }
    public ulong LsePartial { get; init; }
    public ulong Bitmaps { get; init; }
    public ulong BitmapWords { get; init; }
    public ulong WorkspaceBytes { get; init; }
}

// fdma::BwdPlan.
internal readonly record struct BackwardPlan
{
    public Tile Tile { get; init; }
    public int MTiles { get; init; }
    public int NTiles { get; init; }
    public int Slices { get; init; }
    public int OwnerHeads { get; init; }
    public int OwnerBatches { get; init; }
    public int Threads { get; init; }
    public Dim3 OccupancyGrid { get; init; }
    public Dim3 QueryTileGrid { get; init; }
    public bool GatheredDkdv { get; init; }
    public bool Wgmma { get; init; }
    public Dim3 DkdvGrid { get; init; }
    public uint RowBlocks { get; init; }
    public uint KvRowBlocks { get; init; }
    public uint ConvertDBiasBlocks { get; init; }
    public int DkdvThreads { get; init; }
    public int DkdvSmemBytes { get; init; }
    public int DqSmemBytes { get; init; }
    public int DqSmemLimit { get; init; }
    public ulong Delta { get; init; }
    public ulong DQAccum { get; init; }
    public ulong DQAccumBytes { get; init; }
    public ulong DBiasAccum { get; init; }
    public ulong DBiasAccumBytes { get; init; }
    public ulong DKAccum { get; init; }
    public ulong DVAccum { get; init; }
    public ulong DKvAccumBytes { get; init; }
    public ulong Bitmaps { get; init; }
    public ulong BitmapWords { get; init; }
    public ulong BitmapTWords { get; init; }
    public ulong WorkspaceBytes { get; init; }
}

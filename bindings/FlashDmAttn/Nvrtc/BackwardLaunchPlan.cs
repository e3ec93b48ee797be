namespace FlashDmAttn;

// The backward's tile shape for a head dim, mirrored from bwd_tile() in native/kernels/fwd_config.cuh, with what the
// kernels' BwdTraits derive from it (bwd_kernel.cuh): the NVRTC backend's one source of the backward's launch shapes.
// NvrtcMirrorTests compiles these numbers against the headers with NVRTC, and against the native library's answers
// where it exists.
internal readonly record struct BackwardTraits(int HeadDim, int BlockM, int BlockN, int Warps)
{
    // bwd_tile(): 64 x 64 with 4 warps for every head dim.
    public static BackwardTraits For(int headDim) => new(headDim, 64, 64, 4);

    public int Threads => Warps * 32;

    // kDSlice: the head-dim slice one dK/dV block accumulates (registers bound dK + dV above 128); kSlices of them.
    public int DSlice => HeadDim <= 128 ? HeadDim : HeadDim / 2;

    public int Slices => HeadDim / DSlice;

    // kRowElems, kSRowElems: rows padded by 8 elements.
    public int RowElems => HeadDim + 8;

    public int SRowElems => BlockM + 8;

    // kTileBytes: one padded [BlockM, HeadDim] tile of 16-bit elements.
    public int TileBytes => BlockM * RowElems * 2;

    // kDkdvSmemBytes: K, V, Q, dO, dS^T, LSE and Delta.
    public int DkDvSharedMemoryBytes => 4 * TileBytes + BlockN * SRowElems * 2 + 2 * BlockM * 4;

    // kDqSmemBytes: Q, dO, K and V.
    public int DqSharedMemoryBytes => 4 * TileBytes;

    // The query-major kernels (deterministic dQ, bf16's Delta pass) stage the bias after their tiles, as the forward
    // does (fwd_bias_stage_bytes with bwd_tile); their limit is the same for every call.
    public int DqLaunchSharedMemoryBytes(KernelParams.BroadcastOperand bias) => DqSharedMemoryBytes + Tile.BiasStageBytes(bias);

    public int DqSharedMemoryLimit => DqSharedMemoryBytes + Tile.MaxBiasStageBytes;

    private ForwardTile Tile => new(BlockM, BlockN, Warps);
}

// fdma::BwdScratch of native/src/bwd_launch.h, laid out as bwd_scratch_layout() in bwd_args.cpp lays it out: byte
// offsets of the sections, each 256-byte aligned, in the order Delta, the dQ accumulator (default mode only), the
// dBias accumulator (with a bias gradient only) and the four bitmaps (with a mask only); 0 and 0 bytes for a section
// that is absent.
internal readonly record struct BackwardScratch(
    ulong Delta,
    ulong DqAccum,
    ulong DBiasAccum,
    ulong Bitmaps,
    ulong DqAccumBytes,
    ulong DBiasAccumBytes,
    ulong BitmapWords,
    ulong BitmapTWords,
    ulong Total)
{
    public static BackwardScratch For(AttentionShape shape, BroadcastShape? mask, BroadcastShape? biasGradient, bool deterministic)
    {
        BackwardTraits traits = BackwardTraits.For(shape.HeadDim);
        ulong mTiles = (ulong)((shape.SeqLenQ + traits.BlockM - 1) / traits.BlockM);
        ulong nTiles = (ulong)((shape.SeqLenK + traits.BlockN - 1) / traits.BlockN);
        ulong rows = (ulong)shape.Batch * (ulong)shape.HeadsQ * (ulong)shape.SeqLenQ;
        ulong end = Align256(rows * 4);
        ulong dqAccum = 0, dqAccumBytes = 0, dBiasAccum = 0, dBiasAccumBytes = 0, bitmaps = 0, bitmapWords = 0, bitmapTWords = 0;
        if (!deterministic)
        {
            dqAccum = end;
            dqAccumBytes = rows * (ulong)shape.HeadDim * 4;
            end += Align256(dqAccumBytes);
        }

        if (biasGradient is { } b)
        {
            dBiasAccum = end;
            dBiasAccumBytes = (ulong)b.Batch * (ulong)b.Heads * (ulong)b.Rows * (ulong)shape.SeqLenK * 4;
            end += Align256(dBiasAccumBytes);
        }

        if (mask is { } m)
        {
            ulong planes = (ulong)m.Batch * (ulong)m.Heads;
            bitmaps = end;
            bitmapWords = planes * mTiles * ((nTiles + 31) / 32);
            bitmapTWords = planes * nTiles * ((mTiles + 31) / 32);
            end += Align256(2 * (bitmapWords + bitmapTWords) * 4);
        }

        return new BackwardScratch(0, dqAccum, dBiasAccum, bitmaps, dqAccumBytes, dBiasAccumBytes, bitmapWords, bitmapTWords, end);
    }

    private static ulong Align256(ulong bytes) => (bytes + 255) / 256 * 256;
}

// Everything the NVRTC backend launches for one backward call, computed in this one place the way
// native/src/bwd_launch.cuh and bwd_args.cpp compute it: the kernels, grids, blocks, dynamic shared memory and scratch.
internal readonly record struct BackwardLaunchPlan
{
    public const int OccupancyThreads = ForwardLaunchPlan.OccupancyThreads; // kOccupancyThreads
    public const int RowPassThreads = 128;                                  // kRowPassThreads in bwd_prepost.cuh: a warp per row
    public const int ConvertDBiasThreads = 256;                             // bwd_convert_dbias_kernel's block

    // dBiasType: the bias gradient's type, or null without one; biasGradient: its shape (the bias's), or null.
    private BackwardLaunchPlan(AttentionShape shape, ScalarType dtype, BroadcastShape? mask, BroadcastShape? biasGradient, ScalarType? dBiasType,
        bool deterministic)
    {
        Traits = BackwardTraits.For(shape.HeadDim);
        Deterministic = deterministic;
        QueryTiles = (shape.SeqLenQ + Traits.BlockM - 1) / Traits.BlockM;
        KeyTiles = (shape.SeqLenK + Traits.BlockN - 1) / Traits.BlockN;
        MaskPlanes = mask is { } m ? m.Batch * m.Heads : 0;
        Scratch = BackwardScratch.For(shape, mask, biasGradient, deterministic);

        // make_bwd_params: with a bias gradient, the dK/dV grid's y and z enumerate its owners.
        OwnerHeads = biasGradient is { Heads: 1 } ? 1 : shape.HeadsKv;
        OwnerBatches = biasGradient is { Batch: 1 } ? 1 : shape.Batch;

        OccupancyGrid = ((uint)QueryTiles, (uint)((KeyTiles + 31) / 32), (uint)MaskPlanes);
        long rows = (long)shape.Batch * shape.HeadsQ * shape.SeqLenQ;
        RowBlocks = unchecked((uint)((rows + RowPassThreads / 32 - 1) / (RowPassThreads / 32)));
        QueryTileGrid = ((uint)QueryTiles, (uint)shape.HeadsQ, (uint)shape.Batch);
        DkDvGrid = ((uint)(KeyTiles * Traits.Slices), (uint)OwnerHeads, (uint)OwnerBatches);
        if (biasGradient is { } b)
        {
            long elements = (long)b.Batch * b.Heads * b.Rows * shape.SeqLenK;
            ConvertDBiasBlocks = unchecked((uint)((elements + ConvertDBiasThreads - 1) / ConvertDBiasThreads));
        }

        OccupancyKernel = mask is null ? null : KernelVariant.Occupancy(Traits.BlockM, Traits.BlockN);
        (DeltaKernel, DkDvKernel, DqKernel) = Kernels(dtype, shape.HeadDim, deterministic);
        ConvertDBiasKernel = dBiasType is { } t ? KernelVariant.BackwardConvertDBias(t) : null;
    }

    public BackwardTraits Traits { get; }

    public bool Deterministic { get; }

    public int QueryTiles { get; }

    public int KeyTiles { get; }

    // Distinct (batch, head) planes of the mask; 0 without one, and then no pre-pass and no bitmaps.
    public int MaskPlanes { get; }

    public BackwardScratch Scratch { get; }

    public int OwnerHeads { get; }

    public int OwnerBatches { get; }

    // tile_occupancy_kernel<BlockM, BlockN>: (query tiles, bitmap words, mask planes) x OccupancyThreads.
    public (uint X, uint Y, uint Z) OccupancyGrid { get; }

    // bwd_delta_kernel and bwd_convert_dq_kernel: one warp per row of B * Hq * Lq, RowPassThreads a block.
    public uint RowBlocks { get; }

    // dmattn_bwd_dq_kernel (either pass): (query tiles, Hq, B) x Threads.
    public (uint X, uint Y, uint Z) QueryTileGrid { get; }

    // dmattn_bwd_dkdv_kernel: (key tiles x slices, owner heads, owner batches) x Threads.
    public (uint X, uint Y, uint Z) DkDvGrid { get; }

    // bwd_convert_dbias_kernel: one thread per dBias element; 0 without a bias gradient.
    public uint ConvertDBiasBlocks { get; }

    public KernelVariant? OccupancyKernel { get; }

    // Delta: dmattn_bwd_dq_kernel<E, D, true> for bf16 (exact, from P and dP), bwd_delta_kernel<E> (dO . O) for fp16.
    public KernelVariant DeltaKernel { get; }

    public KernelVariant DkDvKernel { get; }

    // dmattn_bwd_dq_kernel<E, D, false> when deterministic, else bwd_convert_dq_kernel<E> of the atomics' sum.
    public KernelVariant DqKernel { get; }

    public KernelVariant? ConvertDBiasKernel { get; }

    // Whether the Delta kernel takes the row pass's (params, head_dim) rather than the tile kernels' (params).
    public bool DeltaIsRowPass => DeltaKernel.Header == "bwd_prepost.cuh";

    public long WorkspaceBytes => checked((long)Scratch.Total);

    public static BackwardLaunchPlan For(AttentionShape shape, ScalarType dtype, BroadcastShape? mask, BroadcastShape? biasGradient,
        ScalarType? dBiasType, bool deterministic) => new(shape, dtype, mask, biasGradient, dBiasType, deterministic);

    // Delta, dK/dV and dQ kernels of a call of this element type, head dim and mode.
    public static (KernelVariant Delta, KernelVariant DkDv, KernelVariant Dq) Kernels(ScalarType dtype, int headDim, bool deterministic) =>
    (
        dtype == ScalarType.BFloat16 ? KernelVariant.BackwardDq(dtype, headDim, deltaPass: true) : KernelVariant.BackwardDelta(dtype),
        KernelVariant.BackwardDkDv(dtype, headDim),
        deterministic ? KernelVariant.BackwardDq(dtype, headDim, deltaPass: false) : KernelVariant.BackwardConvertDq(dtype)
    );

    // The tile kernels of an element type and head dim in either mode (the conversions are per type only).
    public static IEnumerable<KernelVariant> Kernels(ScalarType dtype, int headDim)
    {
        (KernelVariant delta, KernelVariant dkdv, KernelVariant dq) = Kernels(dtype, headDim, deterministic: true);
        return [delta, dkdv, dq];
    }
}

namespace FlashDmAttn.Tests.Nvrtc;

/// <summary>
/// The plan of a call, worked by hand from native/kernels/plan.cuh and native/src/bwd_launch.cuh: the scratch layout,
/// the grids and the backward's kernels. Needs neither a GPU nor NVRTC. (NvrtcMirrorTests has NVRTC check LaunchPlan
/// against the header field by field, and NvrtcNativeAgreementTests the sizes against the native library.)
/// </summary>
public class LaunchPlanTests
{
    // B 2, Lq 300, Lk 333, Hq 4, Hkv 2, D 128: 2400 rows, 5 query tiles and 6 key tiles of 64.
    private static readonly AttentionShape Shape = new(2, 300, 333, 4, 2, 128);

    private static BackwardPlan Backward(AttentionShape shape, BroadcastShape? mask, BroadcastShape? biasGradient, bool deterministic) =>
        LaunchPlan.PlanBwd(ProblemShape.Of(shape, mask, biasGradient, ScalarType.BFloat16), deterministic, withDBias: biasGradient is not null);

    [Test]
    public void BackwardScratch_DefaultMode_HoldsEverySectionIn256ByteAlignedOrder()
    {
        BackwardPlan s = Backward(Shape, mask: new(2, 2, 300), biasGradient: new(1, 4, 1), deterministic: false);

        Assert.That(s.Delta, Is.Zero);
        Assert.That(s.DQAccum, Is.EqualTo(9728), "Delta: 2400 floats, 9600 bytes, rounded up to 256");
        Assert.That(s.DQAccumBytes, Is.EqualTo(2400L * 128 * 4));
        Assert.That(s.DBiasAccum, Is.EqualTo(9728 + 1228800));
        Assert.That(s.DBiasAccumBytes, Is.EqualTo(4 * 333 * 4));
        Assert.That(s.Bitmaps, Is.EqualTo(9728 + 1228800 + 5376), "dBias: 5328 bytes, rounded up to 256");
        Assert.That(s.BitmapWords, Is.EqualTo(4 * 5 * 1), "4 mask planes x 5 query tiles x 1 word of key tiles");
        Assert.That(s.BitmapTWords, Is.EqualTo(4 * 6 * 1), "4 mask planes x 6 key tiles x 1 word of query tiles");
        Assert.That(s.WorkspaceBytes, Is.EqualTo(9728 + 1228800 + 5376 + 512), "the four bitmaps: 352 bytes, rounded up to 256");
    }

    [Test]
    public void BackwardScratch_Deterministic_HasNoDqAccumulator_AndWithoutMaskOrBiasGradientOnlyDelta()
    {
        BackwardPlan s = Backward(Shape, mask: new(2, 2, 300), biasGradient: new(1, 4, 1), deterministic: true);
        BackwardPlan plain = Backward(Shape, mask: null, biasGradient: null, deterministic: true);

        Assert.That((s.DQAccum, s.DQAccumBytes), Is.EqualTo((0UL, 0UL)));
        Assert.That(s.DBiasAccum, Is.EqualTo(9728));
        Assert.That(s.Bitmaps, Is.EqualTo(9728 + 5376));
        Assert.That(s.WorkspaceBytes, Is.EqualTo(9728 + 5376 + 512));
        Assert.That((plain.DQAccumBytes, plain.DBiasAccumBytes, plain.BitmapWords, plain.BitmapTWords, plain.WorkspaceBytes),
            Is.EqualTo((0UL, 0UL, 0UL, 0UL, 9728UL)));
    }

    [Test]
    public void BackwardGrids_SplitTheHeadDimAbove128AndFollowTheBiasGradientsOwners()
    {
        BackwardPlan plan = Backward(new AttentionShape(2, 300, 333, 4, 2, 256), new BroadcastShape(2, 2, 300), new BroadcastShape(1, 4, 1),
            deterministic: false);

        Assert.That(plan.OccupancyGrid, Is.EqualTo(new Dim3(5, 1, 4)));
        Assert.That(plan.QueryTileGrid, Is.EqualTo(new Dim3(5, 4, 2)));
        Assert.That(plan.DkdvGrid, Is.EqualTo(new Dim3(12, 2, 1)), "6 key tiles x 2 head-dim slices; dBias owners: every kv head, one batch");
        Assert.That(plan.RowBlocks, Is.EqualTo(600u), "2400 rows, 4 a block");
        Assert.That(plan.ConvertDBiasBlocks, Is.EqualTo(6u), "1332 dBias elements, 256 a block");
        Assert.That(plan.DkdvSmemBytes, Is.EqualTo(4 * 64 * 264 * 2 + 64 * 72 * 2 + 2 * 64 * 4));
        Assert.That(plan.DqSmemBytes, Is.EqualTo(4 * 64 * 264 * 2 + 72 * 2), "the tiles and one staged bf16 bias row");
        Assert.That(plan.DqSmemLimit, Is.EqualTo(4 * 64 * 264 * 2 + 64 * 72 * 4), "the tiles and the most any call stages: 64 fp32 rows");
    }

    [TestCase(1, 1, 1, 1)]
    [TestCase(2, 1, 1, 2)]
    [TestCase(1, 2, 2, 1)]
    [TestCase(2, 4, 2, 2)]
    public void DkDvGrid_OwnersOfTheBiasGradient(int biasBatch, int biasHeads, int ownerHeads, int ownerBatches)
    {
        BackwardPlan plan = Backward(Shape, null, new BroadcastShape(biasBatch, biasHeads, 1), deterministic: true);

        Assert.That((plan.OwnerHeads, plan.OwnerBatches), Is.EqualTo((ownerHeads, ownerBatches)));
        Assert.That(plan.DkdvGrid, Is.EqualTo(new Dim3(6, (uint)ownerHeads, (uint)ownerBatches)));
        Assert.That(Backward(Shape, null, null, deterministic: true).DkdvGrid, Is.EqualTo(new Dim3(6, 2, 2)), "without dBias every (kv head, batch) has a block");
    }

    [Test]
    public void BackwardPlan_WithLifetimes_DefaultMode_GathersDkDvIntoAccumulatorsAfterTheBiasGradients()
    {
        BackwardPlan s = LaunchPlan.PlanBwd(ProblemShape.Of(Shape, null, new(1, 4, 1), ScalarType.BFloat16, lifetimes: true), deterministic: false, withDBias: true);

        Assert.That(s.GatheredDkdv, Is.True);
        Assert.That(s.DQAccum, Is.EqualTo(9728));
        Assert.That(s.DBiasAccum, Is.EqualTo(9728 + 1228800));
        Assert.That(s.DKAccum, Is.EqualTo(9728 + 1228800 + 5376), "after dBias: 5328 bytes, rounded up to 256");
        Assert.That(s.DKvAccumBytes, Is.EqualTo(1332UL * 128 * 4), "B 2 x Lk 333 x Hkv 2 rows of 128 fp32");
        Assert.That(s.DVAccum, Is.EqualTo(9728 + 1228800 + 5376 + 681984));
        Assert.That(s.WorkspaceBytes, Is.EqualTo(9728 + 1228800 + 5376 + 2 * 681984), "no mask: no bitmaps");
        Assert.That(s.DkdvGrid, Is.EqualTo(new Dim3(4, 4, 2)), "1 range of 8 query tiles (5) x 4 key slots x 1 slice; Hq; B");
        Assert.That(s.KvRowBlocks, Is.EqualTo(333u), "1332 rows, 4 a block");
        Assert.That(s.RowBlocks, Is.EqualTo(600u));
    }

    [Test]
    public void BackwardPlan_WithLifetimes_Deterministic_IsTheKeyMajorPlan()
    {
        BackwardPlan lifetimes = LaunchPlan.PlanBwd(ProblemShape.Of(Shape, null, new(1, 4, 1), ScalarType.BFloat16, lifetimes: true), deterministic: true, withDBias: true);
        BackwardPlan plain = LaunchPlan.PlanBwd(ProblemShape.Of(Shape, null, new(1, 4, 1), ScalarType.BFloat16), deterministic: true, withDBias: true);

        Assert.That(lifetimes.GatheredDkdv, Is.False);
        Assert.That((lifetimes.DKAccum, lifetimes.DVAccum, lifetimes.DKvAccumBytes, lifetimes.KvRowBlocks), Is.EqualTo((0UL, 0UL, 0UL, 0u)));
        Assert.That(lifetimes, Is.EqualTo(plain));
        Assert.That(lifetimes.DkdvGrid, Is.EqualTo(new Dim3(6, 2, 1)));
    }

    [Test]
    public void BackwardGrids_Gathered_SplitTheHeadDimAbove128AndCountRangesOfEightQueryTiles()
    {
        // Lq 1000: 16 query tiles, 2 ranges; D 256: 2 slices.
        BackwardPlan plan = LaunchPlan.PlanBwd(ProblemShape.Of(new(3, 1000, 333, 8, 2, 256), null, null, default, lifetimes: true), deterministic: false, withDBias: false);
        BackwardPlan cut = LaunchPlan.PlanBwd(ProblemShape.Of(new(3, 1025, 333, 8, 2, 256), null, null, default, lifetimes: true), deterministic: false, withDBias: false);

        Assert.That(plan.DkdvGrid, Is.EqualTo(new Dim3(2 * 4 * 2, 8, 3)));
        Assert.That(cut.DkdvGrid, Is.EqualTo(new Dim3(3 * 4 * 2, 8, 3)), "17 query tiles: a third range, cut short");
    }

    [TestCase(false, false)]
    [TestCase(false, true)]
    [TestCase(true, false)]
    [TestCase(true, true)]
    public void BackwardKernels_GatherDkDvWhereThePlanDoes(bool deterministic, bool lifetimes)
    {
        BackwardPlan plan = LaunchPlan.PlanBwd(ProblemShape.Of(Shape, null, null, default, lifetimes), deterministic, withDBias: false);
        BackwardKernels kernels = NvrtcBackend.BackwardKernels(ScalarType.Float16, 128, deterministic, lifetimes);

        Assert.That(kernels.GatheredDkDv, Is.EqualTo(plan.GatheredDkdv));
        Assert.That(kernels.DkDv.NameExpression, Is.EqualTo(plan.GatheredDkdv
            ? "fdma::dmattn_bwd_dkdv_gathered_kernel<fdma::kFloat16, 128>"
            : $"fdma::dmattn_bwd_dkdv_kernel<fdma::kFloat16, 128, fdma::{(lifetimes ? "KeyLifetimes" : "DenseMask")}>"));
        Assert.That(kernels.DqIsRowPass, Is.EqualTo(!deterministic), "the rows' conversion converts the gathered dK and dV too");
    }

    [Test]
    public void BackwardOnWgmma_IsTheSm90aKernels_WhereTheHeadDimHasThem()
    {
        BackwardKernels keyMajor = NvrtcBackend.BackwardKernels(ScalarType.BFloat16, 128, deterministic: true, lifetimes: false, wgmma: true);
        BackwardKernels gathered = NvrtcBackend.BackwardKernels(ScalarType.Float16, 128, deterministic: false, lifetimes: true, wgmma: true);
        BackwardPlan plan = LaunchPlan.PlanBwd(ProblemShape.Of(Shape, null, null, default), deterministic: true, withDBias: false, wgmmaAvailable: true);
        BackwardPlan d64 = LaunchPlan.PlanBwd(ProblemShape.Of(Shape with { HeadDim = 64 }, null, null, default), deterministic: true, withDBias: false, wgmmaAvailable: true);

        Assert.That(keyMajor.Delta.NameExpression, Is.EqualTo("fdma::dmattn_bwd_dq_kernel<fdma::kBFloat16, 128, fdma::DenseMask, true, fdma::DqWgmma<fdma::kBFloat16, 128>>"));
        Assert.That(keyMajor.DkDv.NameExpression, Is.EqualTo("fdma::dmattn_bwd_dkdv_wgmma_kernel<fdma::kBFloat16, 128, fdma::DenseMask>"));
        Assert.That(keyMajor.Dq.NameExpression, Is.EqualTo("fdma::dmattn_bwd_dq_kernel<fdma::kBFloat16, 128, fdma::DenseMask, false, fdma::DqWgmma<fdma::kBFloat16, 128>>"));
        Assert.That(keyMajor.All.Select(v => (v.Header, v.Sm90a)), Is.All.EqualTo(("bwd_wgmma.cuh", true)));
        Assert.That(keyMajor.All.Select(v => v.Slug), Is.EqualTo(new[] { "bwd_dq_delta_bf16_d128_wgmma", "bwd_dkdv_bf16_d128_wgmma", "bwd_dq_bf16_d128_wgmma" }));
        Assert.That(gathered.DkDv.NameExpression, Is.EqualTo("fdma::dmattn_bwd_dkdv_gathered_wgmma_kernel<fdma::kFloat16, 128>"));
        Assert.That(gathered.Delta.Sm90a || gathered.Dq.Sm90a, Is.False, "fp16's Delta and the rows' conversion are row passes");
        Assert.That((plan.Wgmma, plan.DkdvThreads, plan.DkdvSmemBytes), Is.EqualTo((true, LaunchPlan.BwdWgmmaThreads, LaunchPlan.BwdWgmmaSmemBytes(128))));
        Assert.That((d64.Wgmma, d64.DkdvThreads, d64.DkdvSmemBytes), Is.EqualTo((false, d64.Threads, LaunchPlan.BwdDkdvSmemBytes(64))));
        Assert.Throws<ArgumentOutOfRangeException>(() => KernelVariant.BackwardDkDv(ScalarType.Float16, 64, lifetimes: false, wgmma: true));
    }

    [Test]
    public void Kernels_WithLifetimes_TakeTheKeyLifetimesPolicy_UnderTheirOwnSlug()
    {
        BackwardKernels bf16 = NvrtcBackend.BackwardKernels(ScalarType.BFloat16, 64, deterministic: true, lifetimes: true);
        KernelVariant forward = KernelVariant.Forward(ScalarType.Float16, 128, lifetimes: true);

        Assert.That(forward.NameExpression, Is.EqualTo("fdma::dmattn_fwd_kernel<fdma::kFloat16, 128, fdma::KeyLifetimes>"));
        Assert.That(forward.Slug, Is.EqualTo("fwd_fp16_d128_lifetimes"));
        Assert.That(KernelVariant.Forward(ScalarType.Float16, 128, lifetimes: false).NameExpression, Is.EqualTo("fdma::dmattn_fwd_kernel<fdma::kFloat16, 128, fdma::DenseMask>"));
        Assert.That(bf16.Delta.NameExpression, Is.EqualTo("fdma::dmattn_bwd_dq_kernel<fdma::kBFloat16, 64, fdma::KeyLifetimes, true>"));
        Assert.That(bf16.DkDv.NameExpression, Is.EqualTo("fdma::dmattn_bwd_dkdv_kernel<fdma::kBFloat16, 64, fdma::KeyLifetimes>"));
        Assert.That(bf16.Dq.NameExpression, Is.EqualTo("fdma::dmattn_bwd_dq_kernel<fdma::kBFloat16, 64, fdma::KeyLifetimes, false>"));
        Assert.That(bf16.All.Select(v => v.Slug), Is.EqualTo(new[] { "bwd_dq_delta_bf16_d64_lifetimes", "bwd_dkdv_bf16_d64_lifetimes", "bwd_dq_bf16_d64_lifetimes" }));
    }

    [Test]
    public void BackwardKernels_Bf16TakesDqsDeltaPass_Fp16TheRowPass_AndTheModeTheDqKernel()
    {
        BackwardKernels bf16 = NvrtcBackend.BackwardKernels(ScalarType.BFloat16, 256, deterministic: false, lifetimes: false);
        BackwardKernels fp16 = NvrtcBackend.BackwardKernels(ScalarType.Float16, 128, deterministic: true, lifetimes: false);

        Assert.That(bf16.Delta.NameExpression, Is.EqualTo("fdma::dmattn_bwd_dq_kernel<fdma::kBFloat16, 256, fdma::DenseMask, true>"));
        Assert.That(bf16.DeltaIsRowPass, Is.False);
        Assert.That(bf16.DkDv.NameExpression, Is.EqualTo("fdma::dmattn_bwd_dkdv_kernel<fdma::kBFloat16, 256, fdma::DenseMask>"));
        Assert.That(bf16.Dq.NameExpression, Is.EqualTo("fdma::bwd_convert_rows_kernel<fdma::kBFloat16>"));
        Assert.That(bf16.DqIsRowPass, Is.True);
        Assert.That(fp16.Delta.NameExpression, Is.EqualTo("fdma::bwd_delta_kernel<fdma::kFloat16>"));
        Assert.That(fp16.DeltaIsRowPass, Is.True);
        Assert.That(fp16.Dq.NameExpression, Is.EqualTo("fdma::dmattn_bwd_dq_kernel<fdma::kFloat16, 128, fdma::DenseMask, false>"));
        Assert.That(fp16.DqIsRowPass, Is.False);
    }

    [Test]
    public void ForwardPlan_SplitsSmallGridsOverKeysAndLaysOutThePartialsBeforeTheBitmaps()
    {
        // Decode: 1 query tile x 2 heads x 1 batch = 2 blocks, 8192 key tiles: 256 splits (the most); both heads of the
        // GQA group in one block.
        ForwardPlan decode = LaunchPlan.PlanFwd(ProblemShape.Of(new(1, 1, 524288, 2, 1, 128), new(1, 1, 1), null, default));
        ForwardPlan training = LaunchPlan.PlanFwd(ProblemShape.Of(new(1, 8192, 8192, 2, 1, 128), new(1, 1, 8192), new(1, 1, 1), ScalarType.BFloat16));

        Assert.That(decode.KvSplits, Is.EqualTo(256));
        Assert.That(decode.Grid, Is.EqualTo(new Dim3(1, 1, 256)));
        Assert.That(decode.LsePartial, Is.EqualTo(256UL * 2 * 128 * 4), "256 splits x 2 rows x 128 fp32");
        Assert.That(decode.Bitmaps, Is.EqualTo(256UL * 2 * 128 * 4 + 2048), "their LSEs: 2048 bytes");
        Assert.That(decode.BitmapWords, Is.EqualTo(256UL), "1 query tile x 8192 key tiles / 32");
        Assert.That(training.KvSplits, Is.EqualTo(1));
        Assert.That(training.Grid, Is.EqualTo(new Dim3(128, 2, 1)));
        Assert.That(training.SmemBytes, Is.EqualTo((64 + 2 * 64) * 136 * 2 + 72 * 2), "Q, K, V and one bf16 bias row");
        // The workspace fits the wgmma plan too (compute capability 9.0): 64 query tiles of 128 rows x 2 heads = 128
        // blocks, so 4 splits, whose partials come first; the bitmaps keep room for mma.sync's 128 query tiles.
        ForwardPlan hopper = LaunchPlan.PlanFwd(ProblemShape.Of(new(1, 8192, 8192, 2, 1, 128), new(1, 1, 8192), new(1, 1, 1), ScalarType.BFloat16), FwdKernel.Wgmma);
        Assert.That(hopper.KvSplits, Is.EqualTo(4));
        Assert.That(hopper.Grid, Is.EqualTo(new Dim3(64, 2, 4)));
        Assert.That(hopper.BitmapWords, Is.EqualTo(64UL * 4));
        ulong partials = 4UL * 2 * 8192 * 128 * 4 + 4UL * 2 * 8192 * 4;
        Assert.That(training.WorkspaceSplits, Is.EqualTo(4));
        Assert.That(training.Bitmaps, Is.EqualTo(partials));
        Assert.That(training.WorkspaceBytes, Is.EqualTo(partials + 2UL * 128 * 4 * 4), "the partials, then two bitmaps of 128 query tiles x 4 words of 128 key tiles");
        Assert.That(hopper.WorkspaceBytes, Is.EqualTo(training.WorkspaceBytes), "one workspace size whatever the device");
    }

    [Test]
    public void HostQueries_AreAnsweredByTheNvrtcBackendWithoutAnyLibrary()
    {
        Assert.That(DynamicMaskAttention.BackwardTileShape(96, ScalarType.Float16, FlashDmAttnBackend.Nvrtc), Is.EqualTo((64, 64)));
        Assert.That(DynamicMaskAttention.ForwardTileShape(64, ScalarType.Float16, FlashDmAttnBackend.Nvrtc), Is.EqualTo((128, 64)));
        Assert.That(DynamicMaskAttention.BackwardWorkspaceSize(Shape, ScalarType.BFloat16, new(2, 2, 300), new(1, 4, 1), deterministic: false,
            FlashDmAttnBackend.Nvrtc), Is.EqualTo(9728 + 1228800 + 5376 + 512));
    }

    [Test]
    public void BackwardWorkspaceSize_WithLifetimes_IsThePlansWithTheGatheredAccumulatorsInTheDefaultModeOnly()
    {
        foreach (bool deterministic in new[] { false, true })
        {
            BackwardPlan plan = LaunchPlan.PlanBwd(ProblemShape.Of(Shape, null, new(1, 4, 1), ScalarType.Float32, lifetimes: true), deterministic, withDBias: true);

            Assert.That(DynamicMaskAttention.BackwardWorkspaceSize(Shape, ScalarType.Float16, null, new(1, 4, 1), deterministic, FlashDmAttnBackend.Nvrtc, lifetimes: true),
                Is.EqualTo((long)plan.WorkspaceBytes), $"deterministic {deterministic}");
        }

        long withoutLifetimes = DynamicMaskAttention.BackwardWorkspaceSize(Shape, ScalarType.Float16, null, new(1, 4, 1), deterministic: false, FlashDmAttnBackend.Nvrtc);
        Assert.That(DynamicMaskAttention.BackwardWorkspaceSize(Shape, ScalarType.Float16, null, new(1, 4, 1), deterministic: false, FlashDmAttnBackend.Nvrtc, lifetimes: true),
            Is.EqualTo(withoutLifetimes + 2 * 681984), "dK and dV: 1332 rows of 128 fp32 each");
        Assert.That(DynamicMaskAttention.BackwardWorkspaceSize(Shape, ScalarType.Float16, null, null, deterministic: true, FlashDmAttnBackend.Nvrtc, lifetimes: true),
            Is.EqualTo(DynamicMaskAttention.BackwardWorkspaceSize(Shape, ScalarType.Float16, null, null, deterministic: true, FlashDmAttnBackend.Nvrtc)),
            "deterministic: dK/dV key-major, no accumulators");
    }

    [Test]
    public void BackwardWorkspaceSize_RefusesAMaskWithLifetimes()
    {
        Assert.That(() => DynamicMaskAttention.BackwardWorkspaceSize(Shape, ScalarType.Float16, new(2, 2, 300), null, backend: FlashDmAttnBackend.Nvrtc, lifetimes: true),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("lifetimes").And.Message.Contains("one mask form or neither"));
    }

    [Test]
    public void UndefinedBackend_IsRefusedByTheHostQueries()
    {
        Assert.That(() => DynamicMaskAttention.BackwardTileShape(64, ScalarType.Float16, (FlashDmAttnBackend)7),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("backend"));
        Assert.That(() => DynamicMaskAttention.BackwardWorkspaceSize(Shape, ScalarType.Float16, null, null, backend: (FlashDmAttnBackend)7),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("backend"));
        Assert.That(() => DynamicMaskAttention.ForwardWorkspaceSize(Shape, ScalarType.Float16, null, backend: (FlashDmAttnBackend)7),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("backend"));
    }

    // Decode (at most 16 queries): 16-row tiles; with one query a block takes the heads of a GQA group (those dividing
    // it, up to 16) unless the mask, bias or lifetimes differ by query head. Splits follow the blocks; the workspace
    // holds the partials of the most packed grid the sizes allow, whatever the mask, bias and lifetimes.
    [TestCase(1, 16, 4, null, 4)]
    [TestCase(1, 12, 2, null, 6)]
    [TestCase(1, 64, 2, null, 16)]
    [TestCase(1, 16, 4, "mask", 1)]
    [TestCase(1, 16, 4, "bias", 1)]
    [TestCase(1, 16, 4, "lifetimes", 1)]
    [TestCase(1, 16, 16, "mask", 1)]
    [TestCase(5, 16, 4, null, 1)]
    public void Decode_PacksTheHeadsOfAGqaGroup_WhenTheyReadTheSameMaskBiasAndLifetimes(int seqLenQ, int headsQ, int headsKv, string? perQueryHead, int packed)
    {
        var shape = new AttentionShape(2, seqLenQ, 3000, headsQ, headsKv, 128);
        BroadcastShape? perHead = new BroadcastShape(2, headsQ, 1), shared = new BroadcastShape(2, headsKv, 1);
        ProblemShape problem = ProblemShape.Of(shape, perQueryHead == "mask" ? perHead : shared, perQueryHead == "bias" ? perHead : shared,
            ScalarType.Float32, perQueryHead == "lifetimes" ? perHead : shared);
        ForwardPlan plan = LaunchPlan.PlanFwd(problem);
        ForwardPlan unpacked = LaunchPlan.PlanFwd(problem with { SeqLenQ = 17 });

        Assert.That(plan.Kernel, Is.EqualTo(FwdKernel.Decode));
        Assert.That(plan.Tile, Is.EqualTo(new Tile(16, 64, 4)));
        Assert.That(plan.PackedHeads, Is.EqualTo(packed));
        Assert.That(plan.Grid, Is.EqualTo(new Dim3(1, (uint)(headsQ / packed), (uint)(2 * plan.KvSplits))));
        Assert.That(plan.KvSplits, Is.EqualTo(LaunchPlan.FwdKvSplits(2L * headsQ / packed, 47)), "47 key tiles");
        int mostPacked = seqLenQ == 1 ? Math.Min(headsQ / headsKv, 16) : 1;  // these groups divide by their packing
        Assert.That(plan.WorkspaceSplits, Is.EqualTo(LaunchPlan.FwdKvSplits(2L * headsQ / mostPacked, 47)));
        Assert.That(plan.WorkspaceBytes, Is.EqualTo(LaunchPlan.PlanFwd(problem with { BiasHeads = headsQ, LifetimeHeads = headsQ }).WorkspaceBytes),
            "the bias and lifetimes heads that decide the packing leave the workspace as it is");
        Assert.That(plan.SmemLimit, Is.EqualTo((16 + 4 * 64) * 136 * 2 + 2 * 16 * 72 * 4), "Q, two slots of K and V, two fp32 bias stages");
        Assert.That(unpacked.Kernel, Is.EqualTo(FwdKernel.MmaSync));
        Assert.That((unpacked.PackedHeads, unpacked.Tile.BlockM), Is.EqualTo((1, 64)));
    }

    // The split-KV partials a call writes ([kv splits][B][Hq][Lq][D] and the LSEs) fit the workspace it asks for, over
    // decode and longer shapes, GQA groups that pack or not, and mask, bias and lifetimes heads that allow or forbid
    // the packing (the workspace is sized for the most packed grid; the call's splits follow its own grid).
    [Test]
    public void ForwardPartials_FitTheWorkspace_WhateverTheHeadsPackAndTheDevicesKernel()
    {
        int checkedPlans = 0;
        foreach (FwdKernel deviceKernel in new[] { FwdKernel.MmaSync, FwdKernel.Wgmma })
        foreach (int seqLenQ in new[] { 1, 2, 16, 17, 300 })
        foreach (int headsKv in new[] { 1, 2, 8 })
        foreach (int group in new[] { 1, 2, 3, 4, 6, 8, 16, 32, 64 })
        foreach (int seqLenK in new[] { 1, 64, 65, 3000, 524288 })
        foreach (int perHead in new[] { 0, 1, 2, 3 })  // none; mask, bias or lifetimes per query head
        {
            int headsQ = headsKv * group;
            var shape = new AttentionShape(2, seqLenQ, seqLenK, headsQ, headsKv, 128);
            BroadcastShape perQuery = new(2, headsQ, 1), shared = new(1, headsKv, 1);
            ProblemShape problem = ProblemShape.Of(shape, perHead == 1 ? perQuery : null, perHead == 2 ? perQuery : shared,
                ScalarType.BFloat16, perHead == 3 ? perQuery : null);
            ForwardPlan plan = LaunchPlan.PlanFwd(problem, deviceKernel);
            ulong rows = 2UL * (ulong)headsQ * (ulong)seqLenQ;

            Assert.That(plan.WorkspaceBytes, Is.EqualTo(LaunchPlan.PlanFwd(problem).WorkspaceBytes), $"{problem}: one size whatever the device");
            Assert.That(plan.WorkspaceSplits, Is.GreaterThanOrEqualTo(plan.KvSplits), $"{problem}");
            Assert.That(plan.Grid.Y * plan.PackedHeads, Is.EqualTo((uint)headsQ), $"{problem}");
            if (plan.KvSplits > 1)
            {
                Assert.That(plan.OPartial + (ulong)plan.KvSplits * rows * 128 * 4, Is.LessThanOrEqualTo(plan.LsePartial), $"{problem}");
                Assert.That(plan.LsePartial + (ulong)plan.KvSplits * rows * 4, Is.LessThanOrEqualTo(plan.Bitmaps > 0 ? plan.Bitmaps : plan.WorkspaceBytes), $"{problem}");
            }

            if (plan.BitmapWords > 0)
                Assert.That(plan.Bitmaps + 2 * plan.BitmapWords * 4, Is.LessThanOrEqualTo(plan.WorkspaceBytes), $"{problem}");

            checkedPlans++;
        }

        Assert.That(checkedPlans, Is.EqualTo(2 * 5 * 3 * 9 * 5 * 4));
    }
}

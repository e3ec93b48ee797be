namespace FlashDmAttn.Tests.Nvrtc;

/// <summary>
/// The NVRTC backend's plan of a backward call, worked by hand from native/src/bwd_args.cpp and bwd_launch.cuh: the
/// scratch layout, the grids and the kernels. Needs neither a GPU nor NVRTC. (NvrtcMirrorTests checks the tile
/// constants against the headers, and NvrtcNativeAgreementTests the scratch sizes against the native library.)
/// </summary>
public class NvrtcBackwardPlanTests
{
    // B 2, Lq 300, Lk 333, Hq 4, Hkv 2, D 128: 2400 rows, 5 query tiles and 6 key tiles of 64.
    private static readonly AttentionShape Shape = new(2, 300, 333, 4, 2, 128);

    [Test]
    public void Scratch_DefaultMode_HoldsEverySectionIn256ByteAlignedOrder()
    {
        BackwardScratch s = BackwardScratch.For(Shape, mask: new(2, 2, 300), biasGradient: new(1, 4, 1), deterministic: false);

        Assert.That(s.Delta, Is.Zero);
        Assert.That(s.DqAccum, Is.EqualTo(9728), "Delta: 2400 floats, 9600 bytes, rounded up to 256");
        Assert.That(s.DqAccumBytes, Is.EqualTo(2400L * 128 * 4));
        Assert.That(s.DBiasAccum, Is.EqualTo(9728 + 1228800));
        Assert.That(s.DBiasAccumBytes, Is.EqualTo(4 * 333 * 4));
        Assert.That(s.Bitmaps, Is.EqualTo(9728 + 1228800 + 5376), "dBias: 5328 bytes, rounded up to 256");
        Assert.That(s.BitmapWords, Is.EqualTo(4 * 5 * 1), "4 mask planes x 5 query tiles x 1 word of key tiles");
        Assert.That(s.BitmapTWords, Is.EqualTo(4 * 6 * 1), "4 mask planes x 6 key tiles x 1 word of query tiles");
        Assert.That(s.Total, Is.EqualTo(9728 + 1228800 + 5376 + 512), "the four bitmaps: 352 bytes, rounded up to 256");
    }

    [Test]
    public void Scratch_Deterministic_HasNoDqAccumulator_AndWithoutMaskOrBiasGradientOnlyDelta()
    {
        BackwardScratch s = BackwardScratch.For(Shape, mask: new(2, 2, 300), biasGradient: new(1, 4, 1), deterministic: true);
        BackwardScratch plain = BackwardScratch.For(Shape, mask: null, biasGradient: null, deterministic: true);

        Assert.That((s.DqAccum, s.DqAccumBytes), Is.EqualTo((0UL, 0UL)));
        Assert.That(s.DBiasAccum, Is.EqualTo(9728));
        Assert.That(s.Bitmaps, Is.EqualTo(9728 + 5376));
        Assert.That(s.Total, Is.EqualTo(9728 + 5376 + 512));
        Assert.That(plain, Is.EqualTo(new BackwardScratch(0, 0, 0, 0, 0, 0, 0, 0, 9728)));
    }

    [Test]
    public void Plan_Bf16DefaultMode_TakesDqsDeltaPassAndTheDqConversion()
    {
        BackwardLaunchPlan plan = BackwardLaunchPlan.For(new AttentionShape(2, 300, 333, 4, 2, 256), ScalarType.BFloat16,
            new BroadcastShape(2, 2, 300), new BroadcastShape(1, 4, 1), ScalarType.Float32, deterministic: false);

        Assert.That(plan.OccupancyKernel?.NameExpression, Is.EqualTo("fdma::tile_occupancy_kernel<64, 64>"));
        Assert.That(plan.OccupancyGrid, Is.EqualTo((5u, 1u, 4u)));
        Assert.That(plan.DeltaKernel.NameExpression, Is.EqualTo("fdma::dmattn_bwd_dq_kernel<fdma::kBFloat16, 256, true>"));
        Assert.That(plan.DeltaIsRowPass, Is.False);
        Assert.That(plan.QueryTileGrid, Is.EqualTo((5u, 4u, 2u)));
        Assert.That(plan.DkDvKernel.NameExpression, Is.EqualTo("fdma::dmattn_bwd_dkdv_kernel<fdma::kBFloat16, 256>"));
        Assert.That(plan.DkDvGrid, Is.EqualTo((12u, 2u, 1u)), "6 key tiles x 2 head-dim slices; dBias owners: every kv head, one batch");
        Assert.That(plan.DqKernel.NameExpression, Is.EqualTo("fdma::bwd_convert_dq_kernel<fdma::kBFloat16>"));
        Assert.That(plan.RowBlocks, Is.EqualTo(600u), "2400 rows, 4 a block");
        Assert.That(plan.ConvertDBiasKernel?.NameExpression, Is.EqualTo("fdma::bwd_convert_dbias_kernel<fdma::kFloat32>"));
        Assert.That(plan.ConvertDBiasBlocks, Is.EqualTo(6u), "1332 dBias elements, 256 a block");
        Assert.That(plan.Traits.DkDvSharedMemoryBytes, Is.EqualTo(4 * 64 * 264 * 2 + 64 * 72 * 2 + 2 * 64 * 4));
    }

    [Test]
    public void Plan_Fp16Deterministic_TakesTheRowDeltaPassAndDqsKernel()
    {
        BackwardLaunchPlan plan = BackwardLaunchPlan.For(Shape, ScalarType.Float16, null, null, null, deterministic: true);

        Assert.That(plan.OccupancyKernel, Is.Null);
        Assert.That(plan.DeltaKernel.NameExpression, Is.EqualTo("fdma::bwd_delta_kernel<fdma::kFloat16>"));
        Assert.That(plan.DeltaIsRowPass, Is.True);
        Assert.That(plan.DkDvGrid, Is.EqualTo((6u, 2u, 2u)), "without dBias every (kv head, batch) has a block");
        Assert.That(plan.DqKernel.NameExpression, Is.EqualTo("fdma::dmattn_bwd_dq_kernel<fdma::kFloat16, 128, false>"));
        Assert.That(plan.ConvertDBiasKernel, Is.Null);
        Assert.That(plan.ConvertDBiasBlocks, Is.Zero);
    }

    [TestCase(1, 1, 1, 1)]
    [TestCase(2, 1, 1, 2)]
    [TestCase(1, 2, 2, 1)]
    [TestCase(2, 4, 2, 2)]
    public void DkDvGrid_OwnersOfTheBiasGradient(int biasBatch, int biasHeads, int ownerHeads, int ownerBatches)
    {
        BackwardLaunchPlan plan = BackwardLaunchPlan.For(Shape, ScalarType.BFloat16, null, new BroadcastShape(biasBatch, biasHeads, 1),
            ScalarType.BFloat16, deterministic: true);

        Assert.That((plan.OwnerHeads, plan.OwnerBatches), Is.EqualTo((ownerHeads, ownerBatches)));
        Assert.That(plan.DkDvGrid, Is.EqualTo((6u, (uint)ownerHeads, (uint)ownerBatches)));
    }

    [Test]
    public void HostQueries_AreAnsweredByTheNvrtcBackendWithoutAnyLibrary()
    {
        Assert.That(DynamicMaskAttention.BackwardTileShape(96, ScalarType.Float16, FlashDmAttnBackend.Nvrtc), Is.EqualTo((64, 64)));
        Assert.That(DynamicMaskAttention.BackwardWorkspaceSize(Shape, ScalarType.BFloat16, new(2, 2, 300), new(1, 4, 1), deterministic: false,
            FlashDmAttnBackend.Nvrtc), Is.EqualTo(9728 + 1228800 + 5376 + 512));
    }

    [Test]
    public void UndefinedBackend_IsRefusedByTheBackwardsHostQueries()
    {
        Assert.That(() => DynamicMaskAttention.BackwardTileShape(64, ScalarType.Float16, (FlashDmAttnBackend)7),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("backend"));
        Assert.That(() => DynamicMaskAttention.BackwardWorkspaceSize(Shape, ScalarType.Float16, null, null, backend: (FlashDmAttnBackend)7),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("backend"));
    }
}

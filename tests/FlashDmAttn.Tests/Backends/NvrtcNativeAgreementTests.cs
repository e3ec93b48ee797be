namespace FlashDmAttn.Tests;

/// <summary>
/// The NVRTC backend's tile shapes and scratch sizes are the native library's, over many shapes; CPU only, run where the
/// native library loads (the GPU machine), skipped elsewhere.
/// </summary>
public class NvrtcNativeAgreementTests
{
    [SetUp]
    public void RequireNativeLibrary()
    {
        try
        {
            FlashDmAttnLibrary.EnsureLoaded();
        }
        catch (NativeLibraryException e)
        {
            Assert.Ignore($"no native library to compare with: {e.Message.Split(". ")[0]}.");
        }
    }

    private static IEnumerable<TestCaseData> WorkspaceShapes()
    {
        (AttentionShape Shape, BroadcastShape? Mask)[] cases =
        [
            (new(2, 300, 333, 4, 2, 128), null),
            (new(2, 300, 333, 4, 2, 128), new(1, 1, 1)),
            (new(2, 300, 333, 4, 2, 32), new(2, 4, 300)),
            (new(1, 1, 1, 1, 1, 64), new(1, 1, 1)),
            (new(3, 8192, 8192, 8, 2, 256), new(3, 2, 8192)),
            (new(1, 97, 2049, 6, 3, 96), new(1, 3, 1)),
            (new(4, 4097, 63, 2, 2, 192), new(4, 1, 4097)),
        ];
        return cases.Select(c => new TestCaseData(c.Shape, c.Mask).SetArgDisplayNames(c.Shape.ToString(), c.Mask?.ToString() ?? "no mask"));
    }

    [TestCaseSource(nameof(WorkspaceShapes))]
    public void ScratchSize_IsTheNativeLibrarysWhereItLoads(AttentionShape shape, BroadcastShape? mask)
    {
        foreach (ScalarType dtype in new[] { ScalarType.Float16, ScalarType.BFloat16 })
        {
            Assert.That(DynamicMaskAttention.ForwardWorkspaceSize(shape, dtype, mask, FlashDmAttnBackend.Nvrtc),
                Is.EqualTo(DynamicMaskAttention.ForwardWorkspaceSize(shape, dtype, mask, FlashDmAttnBackend.Native)), $"{dtype}");
        }
    }

    private static IEnumerable<TestCaseData> BackwardWorkspaceShapes()
    {
        (AttentionShape Shape, BroadcastShape? Mask, BroadcastShape? BiasGradient)[] cases =
        [
            (new(2, 300, 333, 4, 2, 128), null, null),
            (new(2, 300, 333, 4, 2, 128), new(1, 1, 1), new(1, 2, 1)),
            (new(2, 300, 333, 4, 2, 32), new(2, 4, 300), new(2, 4, 300)),
            (new(1, 1, 1, 1, 1, 64), new(1, 1, 1), new(1, 1, 1)),
            (new(3, 8192, 8192, 8, 2, 256), new(3, 2, 8192), new(1, 8, 1)),
            (new(1, 97, 2049, 6, 3, 96), new(1, 3, 1), null),
            (new(4, 4097, 63, 2, 2, 192), new(4, 1, 4097), new(4, 1, 4097)),
            (new(3, 1000, 333, 8, 2, 256), null, new(1, 8, 1)),
        ];
        return cases.Select(c => new TestCaseData(c.Shape, c.Mask, c.BiasGradient).SetArgDisplayNames(
            c.Shape.ToString(), c.Mask?.ToString() ?? "no mask", c.BiasGradient?.ToString() ?? "no dBias"));
    }

    [TestCaseSource(nameof(BackwardWorkspaceShapes))]
    public void BackwardScratchSize_IsTheNativeLibrarysWhereItLoads(AttentionShape shape, BroadcastShape? mask, BroadcastShape? biasGradient)
    {
        // Key lifetimes (never with a mask): the default mode's gathered dK/dV adds its accumulators.
        foreach (ScalarType dtype in new[] { ScalarType.Float16, ScalarType.BFloat16 })
            foreach (bool deterministic in new[] { false, true })
                foreach (bool lifetimes in mask is null ? new[] { false, true } : [false])
                {
                    Assert.That(DynamicMaskAttention.BackwardWorkspaceSize(shape, dtype, mask, biasGradient, deterministic, FlashDmAttnBackend.Nvrtc, lifetimes),
                        Is.EqualTo(DynamicMaskAttention.BackwardWorkspaceSize(shape, dtype, mask, biasGradient, deterministic, FlashDmAttnBackend.Native, lifetimes)),
                        $"{dtype}, deterministic {deterministic}, lifetimes {lifetimes}");
                }
    }

    [Test]
    public void BackwardTileShape_IsTheNativeLibrarysWhereItLoads()
    {
        foreach (ScalarType dtype in new[] { ScalarType.Float16, ScalarType.BFloat16 })
            foreach (int d in LaunchPlan.HeadDims)
            {
                Assert.That(DynamicMaskAttention.BackwardTileShape(d, dtype, FlashDmAttnBackend.Nvrtc),
                    Is.EqualTo(DynamicMaskAttention.BackwardTileShape(d, dtype, FlashDmAttnBackend.Native)), $"{dtype} D{d}");
            }
    }

    [Test]
    public void TileShape_IsTheNativeLibrarysWhereItLoads()
    {
        foreach (ScalarType dtype in new[] { ScalarType.Float16, ScalarType.BFloat16 })
            foreach (int d in LaunchPlan.HeadDims)
            {
                Assert.That(DynamicMaskAttention.ForwardTileShape(d, dtype, FlashDmAttnBackend.Nvrtc),
                    Is.EqualTo(DynamicMaskAttention.ForwardTileShape(d, dtype, FlashDmAttnBackend.Native)), $"{dtype} D{d}");
            }
    }
}

namespace FlashDmAttn.Tests;

/// <summary>
/// How a call's backend is asked for (option, else FLASHDMATTN_BACKEND, else Auto), and the host-side queries, which
/// the NVRTC backend answers with no library at all. Needs no GPU; BackendSelectionGpuTests covers the choice on a
/// device.
/// </summary>
[NonParallelizable] // sets FLASHDMATTN_BACKEND
public class BackendSelectionTests
{
    private string? saved;

    [SetUp]
    public void SaveVariable() => saved = Environment.GetEnvironmentVariable(BackendSelector.BackendVariable);

    [TearDown]
    public void RestoreVariable() => Environment.SetEnvironmentVariable(BackendSelector.BackendVariable, saved);

    [TestCase(null, FlashDmAttnBackend.Auto)]
    [TestCase("", FlashDmAttnBackend.Auto)]
    [TestCase("auto", FlashDmAttnBackend.Auto)]
    [TestCase("Native", FlashDmAttnBackend.Native)]
    [TestCase(" NVRTC ", FlashDmAttnBackend.Nvrtc)]
    [TestCase("nvrtc", FlashDmAttnBackend.Nvrtc)]
    public void EnvironmentVariable_ChoosesWhenTheOptionIsNull(string? value, FlashDmAttnBackend expected)
    {
        Environment.SetEnvironmentVariable(BackendSelector.BackendVariable, value);

        Assert.That(BackendSelector.Requested(null), Is.EqualTo(expected));
    }

    [Test]
    public void Option_WinsOverTheEnvironmentVariable()
    {
        Environment.SetEnvironmentVariable(BackendSelector.BackendVariable, "nvrtc");

        Assert.That(BackendSelector.Requested(FlashDmAttnBackend.Native), Is.EqualTo(FlashDmAttnBackend.Native));
        Assert.That(BackendSelector.Requested(FlashDmAttnBackend.Auto), Is.EqualTo(FlashDmAttnBackend.Auto));
    }

    [TestCase("cuda")]
    [TestCase("2")]
    public void UnknownEnvironmentValue_IsRefusedWithTheVariableNamed(string value)
    {
        Environment.SetEnvironmentVariable(BackendSelector.BackendVariable, value);

        var thrown = Assert.Throws<InvalidOperationException>(() => BackendSelector.Requested(null))!;
        Assert.That(thrown.Message, Does.Contain(BackendSelector.BackendVariable).And.Contain($"'{value}'"));
    }

    [Test]
    public void UndefinedOption_IsRefused()
    {
        var thrown = Assert.Throws<ArgumentOutOfRangeException>(() => DynamicMaskAttention.ForwardTileShape(64, ScalarType.Float16, (FlashDmAttnBackend)7))!;

        Assert.That(thrown.ParamName, Is.EqualTo("backend"));
        Assert.That(thrown.Message, Does.Contain("7"));
        Assert.That(() => BackendSelector.Requested((FlashDmAttnBackend)(-1)), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("options"));
    }

    [Test]
    public void HostQueries_OfTheNvrtcBackend_NeedNoLibrary()
    {
        // 5 query tiles of 64 rows (3 of the Hopper forward's 128) x 4 heads x 32 batches: no split-KV on either kernel.
        var shape = new AttentionShape(32, 300, 333, 4, 2, 128);
        var decode = new AttentionShape(1, 1, 4096, 2, 1, 128);  // 2 blocks: 64 key tiles in 32 splits

        // D = 128: the Hopper forward's 128-row tile where device 0 (no context is current here) is compute capability
        // 9.0 and NVRTC compiles sm_90a; the mma.sync tile everywhere else, a machine without a driver included.
        Assert.That(DynamicMaskAttention.ForwardTileShape(128, ScalarType.BFloat16, FlashDmAttnBackend.Nvrtc),
            Is.EqualTo(DeviceZeroRunsTheHopperForward() ? (128, 64) : (64, 64)));
        Assert.That(DynamicMaskAttention.ForwardTileShape(64, ScalarType.Float16, FlashDmAttnBackend.Nvrtc), Is.EqualTo((128, 64)));
        Assert.That(DynamicMaskAttention.ForwardWorkspaceSize(shape, ScalarType.BFloat16, null, FlashDmAttnBackend.Nvrtc), Is.Zero);
        // 32 x 4 mask planes x 5 query tiles (the most either kernel has) x 1 word, twice (occupied and full), 4 bytes a word.
        Assert.That(DynamicMaskAttention.ForwardWorkspaceSize(shape, ScalarType.BFloat16, new(32, 4, 300), FlashDmAttnBackend.Nvrtc), Is.EqualTo(32 * 4 * 5 * 1 * 2 * 4));
        // 32 splits x 2 rows of fp32 partial outputs (128 values) and LSEs, each region rounded up to 256 bytes.
        Assert.That(DynamicMaskAttention.ForwardWorkspaceSize(decode, ScalarType.BFloat16, null, FlashDmAttnBackend.Nvrtc), Is.EqualTo(32 * 2 * 128 * 4 + 256));
    }

    private static bool DeviceZeroRunsTheHopperForward()
    {
        try
        {
            return CudaDriver.DeviceCount() > 0 && CudaDriver.ComputeCapability(0) == (9, 0) && NvrtcCompiler.CompilesSm90a &&
                Environment.GetEnvironmentVariable("FDMA_FWD_KERNEL") != "mma_sync";
        }
        catch (Exception e) when (e is NativeLibraryException or CudaException or DllNotFoundException)
        {
            return false;
        }
    }

    [Test]
    public void HostQueries_OfAuto_AreTheNativeLibrarysWhereItLoadsElseNvrtcs()
    {
        bool nativeLoads;
        try
        {
            FlashDmAttnLibrary.EnsureLoaded();
            nativeLoads = true;
        }
        catch (NativeLibraryException)
        {
            nativeLoads = false;
        }

        Environment.SetEnvironmentVariable(BackendSelector.BackendVariable, null);
        Assert.That(BackendSelector.SelectForHostQuery(null).Kind, Is.EqualTo(nativeLoads ? FlashDmAttnBackend.Native : FlashDmAttnBackend.Nvrtc));
        Assert.That(DynamicMaskAttention.ForwardTileShape(256, ScalarType.BFloat16), Is.EqualTo((64, 64)));
    }
}

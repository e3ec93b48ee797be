namespace FlashDmAttn.Tests.Gpu;

/// <summary>
/// Each way of choosing the backend on a device, with the native library's bits where NVRTC is chosen: the option,
/// FLASHDMATTN_BACKEND (forward and backward), and Auto's fallbacks, each in a fresh process (library absent, of another
/// ABI version, without code for the GPU); and the native backend forced where its library is absent, which fails
/// without falling back. BackendSelectionTests has the choice where no device is needed.
/// </summary>
[Category("Gpu")]
[NonParallelizable] // sets FLASHDMATTN_BACKEND
public class BackendSelectionGpuTests : GpuTest
{
    private string? saved;

    [SetUp]
    public void SaveVariable() => saved = Environment.GetEnvironmentVariable(BackendSelector.BackendVariable);

    [TearDown]
    public void RestoreVariable() => Environment.SetEnvironmentVariable(BackendSelector.BackendVariable, saved);

    [Test]
    public void Option_ForcesEitherBackend()
    {
        Assert.That(DynamicMaskAttention.SelectBackend(0, FlashDmAttnBackend.Nvrtc), Is.EqualTo(new BackendSelection(FlashDmAttnBackend.Nvrtc, null)));
        Assert.That(DynamicMaskAttention.SelectBackend(0, FlashDmAttnBackend.Native), Is.EqualTo(new BackendSelection(FlashDmAttnBackend.Native, null)));
        Assert.That(DynamicMaskAttention.SelectBackend(0, FlashDmAttnBackend.Auto), Is.EqualTo(new BackendSelection(FlashDmAttnBackend.Native, null)),
            "the native library of this run holds code for this GPU");
    }

    [Test]
    public void EnvironmentVariable_ForcesNvrtc_ForTheForward()
    {
        var c = new ForwardCase("bf16 D64 env", ScalarType.BFloat16, new(1, 200, 250, 4, 2, 64)) { Causal = true, Mask = new(1, 2, 200) };
        int seed = new TestRandom().Seed;
        var native = new ForwardInputs(c with { Backend = FlashDmAttnBackend.Native }, new TestRandom(seed)).RunSpanApi();

        Environment.SetEnvironmentVariable(BackendSelector.BackendVariable, "nvrtc");

        Assert.That(DynamicMaskAttention.SelectBackend(0), Is.EqualTo(new BackendSelection(FlashDmAttnBackend.Nvrtc, null)));
        ForwardCheck.AssertSameBits(new ForwardInputs(c, new TestRandom(seed)).RunSpanApi(), native, $"seed {seed}");
    }

    [Test]
    public void EnvironmentVariable_ForcesNvrtc_ForTheBackward()
    {
        var c = new BackwardCase("fp16 D64 env", new ForwardCase("", ScalarType.Float16, new(1, 200, 250, 4, 2, 64))
            { Causal = true, Mask = new(1, 2, 200), Bias = new(1, 2, 1), BiasType = ScalarType.Float16 }) { Deterministic = true };
        int seed = new TestRandom().Seed;
        BackwardGradients native = new BackwardInputs(c.On(FlashDmAttnBackend.Native), new TestRandom(seed)).RunSpanApi().Gradients;

        Environment.SetEnvironmentVariable(BackendSelector.BackendVariable, "nvrtc");

        Assert.That(DynamicMaskAttention.SelectBackend(0), Is.EqualTo(new BackendSelection(FlashDmAttnBackend.Nvrtc, null)));
        BackwardCheck.AssertSameBits(new BackwardInputs(c, new TestRandom(seed)).RunSpanApi().Gradients, native, $"seed {seed}");
    }

    // ---- Auto's fallbacks, each in a process of its own (the native library loads once per process) ----

    public enum Fault { Absent, AbiVersion2, OtherAbiVersion, NoCodeForThisGpu }

    [TestCase(Fault.Absent, "could not be loaded")]
    [TestCase(Fault.AbiVersion2, "implements ABI version 2; this binding needs ABI version 3")]
    [TestCase(Fault.OtherAbiVersion, "implements ABI version 999")]
    [TestCase(Fault.NoCodeForThisGpu, "holds code for sm_75")]
    public void Auto_FallsBackToNvrtcWithTheReason_AndGivesTheNativeBits(Fault fault, string reason)
    {
        using var folder = new ProbeFolder();
        string library = LibraryWith(fault, folder);
        var c = new ForwardCase("bf16 D64 probe", ScalarType.BFloat16, new(1, 200, 250, 4, 2, 64)) { Causal = true, Mask = new(1, 2, 200) };
        int seed = new TestRandom().Seed;
        var inputs = new ForwardInputs(c with { Backend = FlashDmAttnBackend.Native }, new TestRandom(seed));
        (double[] output, double[] lse, _) = inputs.RunSpanApi();
        folder.WriteCase(inputs);

        (int exitCode, string log) = folder.Run(new() { [NativeLibraryResolver.PathVariable] = library, [BackendSelector.BackendVariable] = null });

        Assert.That(exitCode, Is.Zero, log);
        string[] selection = folder.ReadLines("backend.txt");
        Assert.That(selection[0], Is.EqualTo("Nvrtc"));
        Assert.That(selection[1], Does.Contain(reason));
        Assert.That(File.ReadAllText(folder.At("trace.txt")), Does.Contain("using the NVRTC backend").And.Contain(reason),
            "the fallback is logged through Trace");
        Assert.That(folder.ReadOutput(c.DType), Is.EqualTo(output.Select(BitConverter.DoubleToInt64Bits)), $"output; seed {seed}");
        Assert.That(folder.ReadLse(), Is.EqualTo(lse.Select(BitConverter.DoubleToInt64Bits)), $"LSE; seed {seed}");
        TestContext.Progress.WriteLine($"NVRTC fallback ({fault}): {selection[1]}");
    }

    [Test]
    public void ForcedNative_WithTheLibraryAbsent_FailsWithoutFallingBack()
    {
        using var folder = new ProbeFolder();
        var c = new ForwardCase("bf16 D64 probe", ScalarType.BFloat16, new(1, 200, 250, 4, 2, 64)) { Mask = new(1, 2, 200) };
        folder.WriteCase(new ForwardInputs(c, new TestRandom()));

        (int exitCode, string log) = folder.Run(new()
        {
            [NativeLibraryResolver.PathVariable] = LibraryWith(Fault.Absent, folder),
            [BackendSelector.BackendVariable] = "native",
        });

        Assert.That(exitCode, Is.EqualTo(1), log);
        string[] error = folder.ReadLines("error.txt");
        Assert.That(error[0], Is.EqualTo(nameof(NativeLibraryException)));
        Assert.That(error[1], Does.Contain("could not be loaded"));
    }

    // The stand-in library's ABI version: the binding's own, but where the fault is the version.
    private static int AbiVersionOf(Fault fault) => fault switch
    {
        Fault.AbiVersion2 => 2,
        Fault.OtherAbiVersion => 999,
        _ => Interop.FlashDmAttn.AbiVersion,
    };

    // A path for FLASHDMATTN_NATIVE_LIBRARY that fails as the fault says: none, or a stand-in library built here.
    private static string LibraryWith(Fault fault, ProbeFolder folder)
    {
        if (fault == Fault.Absent)
            return folder.At(Path.Combine("absent", "libflash_dmattn.so"));
        if (!OperatingSystem.IsLinux())
            Assert.Ignore("the stand-in library is built with cc, on Linux");

        // Just what the binding reads before it launches anything: the ABI version and the architectures.
        string source = folder.At("fake.c"), library = folder.At("libflash_dmattn.so");
        File.WriteAllText(source, $$"""
            #include <stdint.h>
            int32_t fdma_abi_version(void) { return {{AbiVersionOf(fault)}}; }
            const char* fdma_version_string(void) { return "0.0.0-stand-in"; }
            const char* fdma_status_string(int32_t status) { (void)status; return "stand-in"; }
            const char* fdma_last_error_message(void) { return ""; }
            int32_t fdma_compiled_archs(int32_t* archs, int32_t capacity, int32_t* count) {
                if (capacity > 0) archs[0] = 75;
                *count = 1;
                return 0;
            }
            """);
        (int exitCode, string output) = ProbeFolder.Execute("cc", ["-shared", "-fPIC", "-o", library, source], null);
        if (exitCode != 0)
            Assert.Ignore($"no C compiler to build the stand-in library: {output}");
        return library;
    }
}

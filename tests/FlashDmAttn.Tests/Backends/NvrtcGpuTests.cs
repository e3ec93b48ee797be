using System.Diagnostics;
using System.Runtime.InteropServices;

namespace FlashDmAttn.Tests.Gpu;

/// <summary>
/// The NVRTC backend on a GPU: the same bits as the native library (Span and device-pointer APIs, with and without
/// mask, bias, causality, softcap, caller scratch), each way of choosing it (option, FLASHDMATTN_BACKEND, and Auto's
/// fallbacks, each in a fresh process: library absent, of another ABI version, without code for the GPU), and the
/// cold compile and cached load times of the 8K case's kernels.
/// </summary>
[Category("Gpu")]
[NonParallelizable] // sets FLASHDMATTN_BACKEND
public class NvrtcGpuTests : GpuTest
{
    private static IEnumerable<ForwardCase> BitCases() =>
    [
        new("fp16 D32 plain", ScalarType.Float16, new(2, 97, 130, 4, 2, 32)),
        new("bf16 D64 causal mask bias", ScalarType.BFloat16, new(2, 97, 130, 4, 2, 64)) { Causal = true, Mask = new(2, 2, 97), Bias = new(1, 4, 97) },
        new("fp16 D96 softcap scale mask bf16 bias", ScalarType.Float16, new(2, 97, 130, 4, 4, 96))
            { Causal = true, Softcap = 2, Scale = 0.05f, Mask = new(1, 4, 97), Bias = new(2, 4, 97), BiasType = ScalarType.BFloat16 },
        new("bf16 D128 blank rows and tiles", ScalarType.BFloat16, new(2, 300, 333, 2, 1, 128))
            { Causal = true, Mask = new(2, 1, 300), BlankRowsAndTiles = true, Bias = new(1, 2, 1) },
        new("fp16 D192 fp16 bias", ScalarType.Float16, new(1, 257, 257, 2, 2, 192)) { Bias = new(1, 2, 257), BiasType = ScalarType.Float16 },
        new("bf16 D256 decode mask", ScalarType.BFloat16, new(2, 1, 1025, 4, 1, 256)) { Causal = true, Mask = new(2, 4, 1), MaskDensity = 0.3 },
        new("fp16 D128 Lq > Lk causal (empty rows) shared mask", ScalarType.Float16, new(1, 130, 97, 2, 2, 128)) { Causal = true, Mask = new(1, 1, 1) },
    ];

    private static IEnumerable<TestCaseData> SpanCases() => BitCases().Select(c => new TestCaseData(c).SetArgDisplayNames(c.Name));

    [TestCaseSource(nameof(SpanCases))]
    public void SpanApi_GivesTheNativeLibrarysBits(ForwardCase c)
    {
        int seed = new TestRandom().Seed;
        var native = new ForwardInputs(c with { Backend = FlashDmAttnBackend.Native }, new TestRandom(seed)).RunSpanApi();
        var nvrtc = new ForwardInputs(c with { Backend = FlashDmAttnBackend.Nvrtc }, new TestRandom(seed)).RunSpanApi();

        AssertSameBits(nvrtc, native, $"{c.Name}; seed {seed}");
    }

    [TestCase(ScalarType.BFloat16, Layout.HeadMajor, Layout.SequenceMajor, false)]
    [TestCase(ScalarType.Float16, Layout.SequenceMajor, Layout.HeadMajor, true)]
    public void DeviceApi_GivesTheNativeLibrarysBits(ScalarType dtype, Layout qLayout, Layout kvLayout, bool callerWorkspace)
    {
        var c = new ForwardCase($"{dtype} device", dtype, new(2, 97, 130, 4, 2, 128))
            { Causal = true, Mask = new(2, 2, 97), Bias = new(1, 4, 97), BiasType = ScalarType.Float32 };
        int seed = new TestRandom().Seed;
        DeviceResults Run(FlashDmAttnBackend backend)
        {
            using var problem = new DeviceForwardProblem(new ForwardInputs(c with { Backend = backend }, new TestRandom(seed)),
                qLayout, kvLayout, maskRowPadding: 6, biasHeadPadding: 40);
            DeviceForwardArgs args = problem.Args;
            if (callerWorkspace)
            {
                long bytes = DynamicMaskAttention.ForwardWorkspaceSize(c.Shape, dtype, c.Mask, backend);
                DeviceBuffer workspace = problem.Allocate(bytes);
                workspace.Fill(0xA5);
                args = args with { Workspace = workspace.Pointer, WorkspaceBytes = bytes };
            }

            problem.Run(args);
            return problem.Read();
        }

        DeviceResults native = Run(FlashDmAttnBackend.Native), nvrtc = Run(FlashDmAttnBackend.Nvrtc);

        Assert.That(nvrtc.OutputBytes, Is.EqualTo(native.OutputBytes), $"output; seed {seed}");
        Assert.That(nvrtc.LseBytes, Is.EqualTo(native.LseBytes), $"LSE; seed {seed}");
        Assert.That(nvrtc.Stats, Is.EqualTo(native.Stats), $"tile stats; seed {seed}");
    }

    [Test]
    public void Option_ForcesEitherBackend()
    {
        Assert.That(DynamicMaskAttention.SelectBackend(0, FlashDmAttnBackend.Nvrtc), Is.EqualTo(new BackendSelection(FlashDmAttnBackend.Nvrtc, null)));
        Assert.That(DynamicMaskAttention.SelectBackend(0, FlashDmAttnBackend.Native), Is.EqualTo(new BackendSelection(FlashDmAttnBackend.Native, null)));
        Assert.That(DynamicMaskAttention.SelectBackend(0, FlashDmAttnBackend.Auto), Is.EqualTo(new BackendSelection(FlashDmAttnBackend.Native, null)),
            "the native library of this run holds code for this GPU");
    }

    [Test]
    public void EnvironmentVariable_ForcesNvrtc()
    {
        var c = new ForwardCase("bf16 D64 env", ScalarType.BFloat16, new(1, 200, 250, 4, 2, 64)) { Causal = true, Mask = new(1, 2, 200) };
        int seed = new TestRandom().Seed;
        var native = new ForwardInputs(c with { Backend = FlashDmAttnBackend.Native }, new TestRandom(seed)).RunSpanApi();
        string? saved = Environment.GetEnvironmentVariable("FLASHDMATTN_BACKEND");
        try
        {
            Environment.SetEnvironmentVariable("FLASHDMATTN_BACKEND", "nvrtc");
            Assert.That(DynamicMaskAttention.SelectBackend(0), Is.EqualTo(new BackendSelection(FlashDmAttnBackend.Nvrtc, null)));
            AssertSameBits(new ForwardInputs(c, new TestRandom(seed)).RunSpanApi(), native, $"seed {seed}");
        }
        finally
        {
            Environment.SetEnvironmentVariable("FLASHDMATTN_BACKEND", saved);
        }
    }

    // ---- Auto's fallbacks, each in a process of its own (the native library loads once per process) ----

    public enum Fault { Absent, OtherAbiVersion, NoCodeForThisGpu }

    [TestCase(Fault.Absent, "could not be loaded")]
    [TestCase(Fault.OtherAbiVersion, "implements ABI version 999")]
    [TestCase(Fault.NoCodeForThisGpu, "holds code for sm_75")]
    public void Auto_FallsBackToNvrtcWithTheReason_AndGivesTheNativeBits(Fault fault, string reason)
    {
        using var folder = new ProbeFolder();
        string library = LibraryWith(fault, folder.Path);
        var c = new ForwardCase("bf16 D64 probe", ScalarType.BFloat16, new(1, 200, 250, 4, 2, 64)) { Causal = true, Mask = new(1, 2, 200) };
        int seed = new TestRandom().Seed;
        var inputs = new ForwardInputs(c with { Backend = FlashDmAttnBackend.Native }, new TestRandom(seed));
        (double[] output, double[] lse, _) = inputs.RunSpanApi();
        folder.WriteCase(inputs);

        (int exitCode, string log) = folder.RunProbe(library, backend: null);

        Assert.That(exitCode, Is.Zero, log);
        string[] selection = File.ReadAllLines(System.IO.Path.Combine(folder.Path, "backend.txt"));
        Assert.That(selection[0], Is.EqualTo("Nvrtc"));
        Assert.That(selection[1], Does.Contain(reason));
        Assert.That(File.ReadAllText(System.IO.Path.Combine(folder.Path, "trace.txt")), Does.Contain("using the NVRTC backend").And.Contain(reason),
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

        (int exitCode, string log) = folder.RunProbe(LibraryWith(Fault.Absent, folder.Path), backend: "native");

        Assert.That(exitCode, Is.EqualTo(1), log);
        string[] error = File.ReadAllLines(System.IO.Path.Combine(folder.Path, "error.txt"));
        Assert.That(error[0], Is.EqualTo(nameof(NativeLibraryException)));
        Assert.That(error[1], Does.Contain("could not be loaded"));
    }

    // ---- timings ----

    [Test]
    public void ColdCompileAndCachedLoad_OfThe8KCasesKernels()
    {
        AttentionShape shape = new(1, 8192, 8192, 2, 1, 128);
        ForwardPlan plan = LaunchPlan.PlanFwd(ProblemShape.Of(shape, new BroadcastShape(1, 1, 8192), null, default));
        (KernelVariant Variant, int SharedBytes)[] kernels =
            [(KernelVariant.Forward(ScalarType.BFloat16, 128), plan.SmemLimit), (KernelVariant.Occupancy(plan.Tile), 0)];
        CompileTarget target = KernelModules.TargetOf(0);
        using CudaPrimaryContext context = CudaPrimaryContext.Retain(0);
        using CudaContextScope current = context.Push();
        ((double cold, string coldParts), (double cached, string cachedParts)) = NvrtcGpuTestSupport.TimeColdAndCached(kernels, target);

        TestContext.Progress.WriteLine(
            $"NVRTC {NvrtcCompiler.Version} {target}, 8K case (bf16 D128 + mask pre-pass): cold compile + load {cold:F0} ms ({coldParts}); " +
            $"cached read + load {cached:F1} ms ({cachedParts})");
        Assert.That(cached, Is.LessThan(cold));
    }

    [Test]
    public void The8KCase_GivesTheNativeLibrarysBits()
    {
        const int length = NvrtcGpuTestSupport.EightKLength;
        var c = new ForwardCase("bf16 8K causal sliding-window mask", ScalarType.BFloat16, new(1, length, length, 2, 1, 128)) { Causal = true, Mask = new(1, 1, length) };

        int seed = new TestRandom().Seed;
        var clock = Stopwatch.StartNew();
        var native = new ForwardInputs(c with { Backend = FlashDmAttnBackend.Native }, new TestRandom(seed), NvrtcGpuTestSupport.EightKSlidingWindow).RunSpanApi();
        double nativeMs = clock.Elapsed.TotalMilliseconds;
        clock.Restart();
        var nvrtc = new ForwardInputs(c with { Backend = FlashDmAttnBackend.Nvrtc }, new TestRandom(seed), NvrtcGpuTestSupport.EightKSlidingWindow).RunSpanApi();
        double nvrtcMs = clock.Elapsed.TotalMilliseconds;

        AssertSameBits(nvrtc, native, $"seed {seed}");
        TestContext.Progress.WriteLine($"8K case through the Span API (inputs drawn and copied, kernels cached in-process): native {nativeMs:F0} ms, NVRTC {nvrtcMs:F0} ms; {nvrtc.Stats}");
    }

    private static void AssertSameBits((double[] Output, double[] Lse, TileStats Stats) actual, (double[] Output, double[] Lse, TileStats Stats) expected, string context)
    {
        Assert.That(actual.Output.Select(BitConverter.DoubleToInt64Bits), Is.EqualTo(expected.Output.Select(BitConverter.DoubleToInt64Bits)), $"output; {context}");
        Assert.That(actual.Lse.Select(BitConverter.DoubleToInt64Bits), Is.EqualTo(expected.Lse.Select(BitConverter.DoubleToInt64Bits)), $"LSE; {context}");
        Assert.That(actual.Stats, Is.EqualTo(expected.Stats), $"tile stats; {context}");
    }

    // A path for FLASHDMATTN_NATIVE_LIBRARY that fails as the fault says: none, or a stand-in library built here.
    private static string LibraryWith(Fault fault, string folder)
    {
        if (fault == Fault.Absent)
            return System.IO.Path.Combine(folder, "absent", "libflash_dmattn.so");
        if (!OperatingSystem.IsLinux())
            Assert.Ignore("the stand-in library is built with cc, on Linux");

        // Just what the binding reads before it launches anything: the ABI version and the architectures.
        string source = System.IO.Path.Combine(folder, "fake.c"), library = System.IO.Path.Combine(folder, "libflash_dmattn.so");
        File.WriteAllText(source, $$"""
            #include <stdint.h>
            int32_t fdma_abi_version(void) { return {{(fault == Fault.OtherAbiVersion ? 999 : 1)}}; }
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

    /// <summary>A case written for FlashDmAttn.BackendProbe (see its Program.cs), which runs it in a fresh process.</summary>
    private sealed class ProbeFolder : IDisposable
    {
        public string Path { get; } = Directory.CreateTempSubdirectory("fdma-probe-").FullName;

        public void WriteCase(ForwardInputs inputs)
        {
            ForwardCase c = inputs.Case;
            AttentionShape s = c.Shape;
            BroadcastShape m = c.Mask!.Value;
            File.WriteAllLines(At("case.txt"),
                [c.DType.ToString(), $"{s.Batch} {s.SeqLenQ} {s.SeqLenK} {s.HeadsQ} {s.HeadsKv} {s.HeadDim}", c.Causal ? "1" : "0", $"{m.Batch} {m.Heads} {m.Rows}"]);
            foreach ((string name, double[] values) in new[] { ("q.bin", inputs.Q), ("k.bin", inputs.K), ("v.bin", inputs.V) })
            {
                File.WriteAllBytes(At(name), c.DType == ScalarType.Float16
                    ? Tensors.Bytes(Tensors.Narrow<Half>(values))
                    : Tensors.Bytes(Tensors.Narrow<BFloat16>(values)));
            }

            File.WriteAllBytes(At("mask.bin"), inputs.Mask!);
        }

        public (int ExitCode, string Log) RunProbe(string nativeLibrary, string? backend)
        {
            string probe = System.IO.Path.Combine(AppContext.BaseDirectory, "FlashDmAttn.BackendProbe.dll");
            if (!File.Exists(probe))
                Assert.Ignore($"{probe} is missing: build the solution");
            return Execute(DotnetHost(), [probe, Path], new()
            {
                ["FLASHDMATTN_NATIVE_LIBRARY"] = nativeLibrary,
                ["FLASHDMATTN_BACKEND"] = backend,
            });
        }

        public IEnumerable<long> ReadOutput(ScalarType dtype)
        {
            byte[] bytes = File.ReadAllBytes(At("out.bin"));
            double[] values = dtype == ScalarType.Float16
                ? Tensors.Widen<Half>(MemoryMarshal.Cast<byte, Half>(bytes))
                : Tensors.Widen<BFloat16>(MemoryMarshal.Cast<byte, BFloat16>(bytes));
            return values.Select(BitConverter.DoubleToInt64Bits);
        }

        public IEnumerable<long> ReadLse() =>
            Tensors.Widen<float>(MemoryMarshal.Cast<byte, float>(File.ReadAllBytes(At("lse.bin")))).Select(BitConverter.DoubleToInt64Bits);

        public void Dispose() => Directory.Delete(Path, recursive: true);

        public static (int ExitCode, string Output) Execute(string program, string[] arguments, Dictionary<string, string?>? environment)
        {
            var start = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (string argument in arguments)
                start.ArgumentList.Add(argument);
            foreach ((string name, string? value) in environment ?? [])
            {
                if (value is null)
                    start.Environment.Remove(name);
                else
                    start.Environment[name] = value;
            }

            try
            {
                using Process process = Process.Start(start)!;
                Task<string> output = process.StandardOutput.ReadToEndAsync(), error = process.StandardError.ReadToEndAsync();
                process.WaitForExit();
                return (process.ExitCode, output.Result + error.Result);
            }
            catch (System.ComponentModel.Win32Exception e)
            {
                return (-1, e.Message); // the program does not exist
            }
        }

        // The dotnet host running these tests, else the one the SDK names, else the one on PATH.
        private static string DotnetHost()
        {
            string? current = Environment.ProcessPath;
            if (current is not null && System.IO.Path.GetFileNameWithoutExtension(current) == "dotnet")
                return current;
            return Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet";
        }

        private string At(string name) => System.IO.Path.Combine(Path, name);
    }
}

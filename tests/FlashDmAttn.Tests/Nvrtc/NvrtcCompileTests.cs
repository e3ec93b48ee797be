using System.Diagnostics;
using System.Text;

namespace FlashDmAttn.Tests.Nvrtc;

/// <summary>
/// The kernel sources as they travel in the assembly compile under NVRTC, with no host headers: every variant the NVRTC
/// backend can need (forward and backward), to PTX for compute_80 and compute_90 (the sm_90a variants, wgmma, for
/// compute_90a, where NVRTC is 12 or later), through the backend's own compile path.
/// </summary>
[Parallelizable(ParallelScope.Children)]
public class NvrtcCompileTests : NvrtcTest
{
    private static IEnumerable<TestCaseData> Variants() =>
        from variant in KernelVariant.All()
        from architecture in variant.Sm90a ? ["90a"] : new[] { "80", "90" }
        select new TestCaseData(variant.Slug, architecture).SetArgDisplayNames(variant.Slug, $"compute_{architecture}");

    [TestCaseSource(nameof(Variants))]
    public void Variant_CompilesToPtxForTheArchitecture(string slug, string architecture)
    {
        KernelVariant variant = KernelVariant.All().Single(v => v.Slug == slug);
        if (variant.Sm90a)
            Assume.That(NvrtcCompiler.CompilesSm90a, $"sm_90a needs NVRTC 12 or later; this one is {NvrtcCompiler.Version}");
        var target = new CompileTarget($"compute_{architecture}");
        var clock = Stopwatch.StartNew();

        KernelImage image = NvrtcCompiler.Compile(KernelSources.Embedded, variant, target);

        string ptx = Encoding.UTF8.GetString(image.Bytes);
        Assert.That(image.Kind, Is.EqualTo(ImageKind.Ptx));
        Assert.That(image.Bytes[^1], Is.Zero, "the driver needs PTX to end with a NUL byte");
        Assert.That(ptx, Does.Contain($".target sm_{architecture}"));
        Assert.That(image.LoweredName, Does.StartWith("_ZN4fdma"));
        Assert.That(ptx, Does.Contain($".entry {image.LoweredName}("), "the kernel named by the name expression is in the PTX");
        TestContext.Out.WriteLine($"{variant.Slug} compute_{architecture}: {ptx.Length / 1024} KiB of PTX in {clock.ElapsedMilliseconds} ms with NVRTC {NvrtcCompiler.Version}");
    }

    [Test]
    public void Variants_AreEveryKernelTheNativeLibraryInstantiates()
    {
        string[] slugs = KernelVariant.All().Select(v => v.Slug).ToArray();
        string[] types = ["fp16", "bf16"];
        int[] headDims = [32, 64, 96, 128, 192, 256];
        // native/src/bwd_launch.cuh, for each (type, head dim): the dK/dV kernel, the gathered dK/dV kernel (key
        // lifetimes, default mode), dQ's deterministic kernel, and the Delta pass (dQ's kernel for bf16, the row pass
        // for fp16); the rows' conversion (dQ; gathered dK, dV) per type and dBias's per dBias type; the pre-pass of its
        // 64 x 64 tile; bwd_wgmma_instance.cu.in, for D = 128: each tile kernel on wgmma too (suffix _wgmma).
        // Each tile kernel for both mask forms: the dense mask's and (suffix _lifetimes) the key lifetimes'.
        string[] forms = ["", "_lifetimes"];
        string[] backward =
        [
            .. from t in types from d in headDims from f in forms select $"bwd_dkdv_{t}_d{d}{f}",
            .. from t in types from d in headDims select $"bwd_dkdv_gathered_{t}_d{d}",
            .. from t in types from d in headDims from f in forms select $"bwd_dq_{t}_d{d}{f}",
            .. from d in headDims from f in forms select $"bwd_dq_delta_bf16_d{d}{f}",
            .. from t in types from f in forms select $"bwd_dkdv_{t}_d128{f}_wgmma",
            .. from t in types select $"bwd_dkdv_gathered_{t}_d128_wgmma",
            .. from t in types from f in forms select $"bwd_dq_{t}_d128{f}_wgmma",
            .. from f in forms select $"bwd_dq_delta_bf16_d128{f}_wgmma",
            "bwd_delta_fp16", "bwd_convert_rows_fp16", "bwd_convert_rows_bf16",
            "bwd_convert_dbias_fp32", "bwd_convert_dbias_fp16", "bwd_convert_dbias_bf16",
        ];

        Assert.That(slugs, Is.Unique);
        Assert.That(slugs.Where(s => s.StartsWith("bwd_", StringComparison.Ordinal)), Is.EquivalentTo(backward));
        // native/src/fwd_launch.cuh, for each (type, head dim): the forward kernel of each mask form, for long calls and
        // for decode (suffix _decode), and the split-KV combine pass; fwd_wgmma_instance.cu.in, for D = 128: the wgmma
        // forward of each mask form (suffix _wgmma); with the backward's above, the sm_90a variants.
        Assert.That(slugs.Where(s => s.StartsWith("fwd_", StringComparison.Ordinal)), Is.EquivalentTo(
            (from t in types from d in headDims from f in forms from k in new[] { "", "_decode" } select $"fwd_{t}_d{d}{f}{k}")
            .Concat(from t in types from f in forms select $"fwd_{t}_d128{f}_wgmma")
            .Concat(from t in types from d in headDims select $"fwd_combine_{t}_d{d}")));
        Assert.That(KernelVariant.All().Where(v => v.Sm90a).Select(v => v.Slug), Is.EquivalentTo(slugs.Where(s => s.EndsWith("_wgmma", StringComparison.Ordinal))));
        Assert.That(slugs.Where(s => s.StartsWith("occupancy", StringComparison.Ordinal)), Is.EquivalentTo(new[] { "occupancy" }), "one pre-pass for both directions' tiles");
    }

    [Test]
    public void EmbeddedSources_AreEveryHeaderOfNativeKernels()
    {
        string kernels = Path.Combine(RepositoryRoot(), "native", "kernels");
        string[] files = Directory.GetFiles(kernels, "*.cuh").Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray()!;

        Assert.That(KernelSources.Embedded.Headers.Select(h => h.Name), Is.EqualTo(files));
        foreach (KernelHeader header in KernelSources.Embedded.Headers)
            Assert.That(header.Text, Is.EqualTo(File.ReadAllText(Path.Combine(kernels, header.Name))), $"{header.Name} is stale: rebuild");
    }

    [Test]
    public void CompileError_ThrowsWithNvrtcsLog()
    {
        var thrown = Assert.Throws<KernelCompilationException>(() => CompilePtx("#include \"params.cuh\"\nstatic_assert(sizeof(fdma::FwdParams) == 1, \"size probe\");\n", 80))!;

        Assert.That(thrown.Log, Does.Contain("size probe"));
        Assert.That(thrown.Message, Does.Contain("--gpu-architecture=compute_80").And.Contain(NvrtcCompiler.Version));
    }

    private static string RepositoryRoot()
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            if (Directory.Exists(Path.Combine(directory.FullName, "native", "kernels")))
                return directory.FullName;
        }

        Assert.Ignore("the repository (native/kernels) is not above the test assembly");
        return "";
    }
}

using System.Diagnostics;

namespace FlashDmAttn.Tests.Gpu;

/// <summary>
/// What NVRTC costs a process, per direction, on the 8K case's kernels: the cold compile and load (an empty disk cache)
/// against the cached read and load a later process pays. Printed, with the NVRTC version and target; the cached load
/// must be the faster.
/// </summary>
[Category("Gpu")]
[NonParallelizable] // times compiles: nothing else compiling beside them
public class KernelBuildTimingGpuTests : GpuTest
{
    [Test]
    public void ColdCompileAndCachedLoad_OfThe8KCasesKernels()
    {
        ForwardCase c = EightKCase.Forward;
        // The device's forward: the Hopper one (sm_90a) on compute capability 9.0 where NVRTC compiles it.
        ForwardPlan plan = LaunchPlan.PlanFwd(ProblemShape.Of(c.Shape, c.Mask, null, default), NvrtcBackend.DeviceFwdKernel(0, c.Shape.HeadDim));
        (KernelVariant Variant, int SharedBytes)[] kernels =
            [(KernelVariant.Forward(c.DType, c.Shape.HeadDim, lifetimes: false, plan.Kernel), plan.SmemLimit), (KernelVariant.Occupancy, 0)];
        CompileTarget target = KernelModules.TargetOf(0);
        using CudaPrimaryContext context = CudaPrimaryContext.Retain(0);
        using CudaContextScope current = context.Push();
        ((double cold, string coldParts), (double cached, string cachedParts)) = TimeColdAndCached(kernels, device: 0);

        TestContext.Progress.WriteLine(
            $"NVRTC {NvrtcCompiler.Version} {target}, 8K case (bf16 D128 {plan.Kernel} + mask pre-pass): cold compile + load {cold:F0} ms ({coldParts}); " +
            $"cached read + load {cached:F1} ms ({cachedParts})");
        Assert.That(cached, Is.LessThan(cold));
    }

    [Test]
    public void ColdCompileAndCachedLoad_OfThe8KCasesBackwardKernels()
    {
        ForwardCase c = EightKCase.Forward;
        BackwardPlan plan = LaunchPlan.PlanBwd(ProblemShape.Of(c.Shape, c.Mask, null, default), deterministic: true, withDBias: false);
        BackwardKernels deterministic = NvrtcBackend.BackwardKernels(c.DType, c.Shape.HeadDim, deterministic: true, lifetimes: false);
        BackwardKernels defaultMode = NvrtcBackend.BackwardKernels(c.DType, c.Shape.HeadDim, deterministic: false, lifetimes: false);
        (KernelVariant Variant, int SharedBytes)[] kernels =
        [
            (KernelVariant.Occupancy, 0), (deterministic.Delta, plan.DqSmemLimit), (deterministic.DkDv, plan.DkdvSmemBytes),
            (deterministic.Dq, plan.DqSmemLimit), (defaultMode.Dq, 0),
        ];
        CompileTarget target = KernelModules.TargetOf(0);
        using CudaPrimaryContext context = CudaPrimaryContext.Retain(0);
        using CudaContextScope current = context.Push();
        ((double cold, string coldParts), (double cached, string cachedParts)) = TimeColdAndCached(kernels, device: 0);

        // What a first call of a process with an empty cache waits for: its four kernels, compiled in parallel.
        var parallel = new NvrtcKernelBuilder(KernelSources.Embedded, diskCache: null);
        var clock = Stopwatch.StartNew();
        Task.WaitAll(kernels.Take(4).Select(k => Task.Run(() => parallel.GetImage(k.Variant, KernelModules.TargetOf(k.Variant, 0)))).ToArray());
        double parallelMs = clock.Elapsed.TotalMilliseconds;

        TestContext.Progress.WriteLine(
            $"NVRTC {NvrtcCompiler.Version} {target}, 8K backward (bf16 D128 + mask pre-pass): cold compile + load, one at a time, {cold:F0} ms ({coldParts}); " +
            $"cached read + load {cached:F1} ms ({cachedParts}); a first deterministic call's four compiled in parallel: {parallelMs:F0} ms");
        Assert.That(cached, Is.LessThan(cold));
    }

    // The build and load times of kernels with a fresh disk cache: cold (compiles them, writes the cache), then cached
    // (reads it, as a new process would), each for its target on the device (KernelModules.TargetOf).
    private static ((double Total, string Parts) Cold, (double Total, string Parts) Cached) TimeColdAndCached(
        IEnumerable<(KernelVariant Variant, int SharedBytes)> kernels, int device)
    {
        string directory = Directory.CreateTempSubdirectory("fdma-nvrtc-timing-").FullName;
        try
        {
            var cache = new KernelImageCache(directory);
            (double Total, string Parts) cold = TimeBuildAndLoad(new NvrtcKernelBuilder(KernelSources.Embedded, cache), kernels, device);
            (double Total, string Parts) cached = TimeBuildAndLoad(new NvrtcKernelBuilder(KernelSources.Embedded, cache), kernels, device);
            return (cold, cached);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    // Builds (compiles, or reads from the builder's cache) and loads each kernel in turn: the total milliseconds, and
    // for each kernel its build and load times and its image's size and kind.
    private static (double Total, string Parts) TimeBuildAndLoad(
        NvrtcKernelBuilder builder, IEnumerable<(KernelVariant Variant, int SharedBytes)> kernels, int device)
    {
        var parts = new List<string>();
        double total = 0;
        foreach ((KernelVariant variant, int sharedBytes) in kernels)
        {
            var clock = Stopwatch.StartNew();
            KernelImage image = builder.GetImage(variant, KernelModules.TargetOf(variant, device));
            double build = clock.Elapsed.TotalMilliseconds;
            KernelModules.Load(image, sharedBytes);
            double load = clock.Elapsed.TotalMilliseconds - build;
            parts.Add($"{variant.Slug}: {build:F1} + {load:F1} ms, {image.Bytes.Length / 1024} KiB {image.Kind} for {KernelModules.TargetOf(variant, device)}");
            total += clock.Elapsed.TotalMilliseconds;
        }

        return (total, string.Join("; ", parts));
    }
}

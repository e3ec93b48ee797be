using System.Diagnostics;

namespace FlashDmAttn.Tests.Gpu;

// What the NVRTC GPU tests of both directions share: the 8K case's mask, and the timing of kernel builds and loads.
internal static class NvrtcGpuTestSupport
{
    public const int EightKLength = 8192, EightKWindow = 1024;

    // The 8K case's sliding window: query i sees keys i - EightKWindow + 1 to i.
    public static byte[] EightKSlidingWindow(AttentionShape shape, BroadcastShape maskShape)
    {
        var mask = new byte[(long)EightKLength * EightKLength];
        for (int i = 0; i < EightKLength; i++)
            mask.AsSpan(i * EightKLength + Math.Max(0, i - EightKWindow + 1), Math.Min(i + 1, EightKWindow)).Fill(1);
        return mask;
    }

    // The build and load times of kernels with a fresh disk cache: cold (compiles them, writes the cache), then cached
    // (reads it, as a new process would).
    public static ((double Total, string Parts) Cold, (double Total, string Parts) Cached) TimeColdAndCached(
        IEnumerable<(KernelVariant Variant, int SharedBytes)> kernels, CompileTarget target)
    {
        string directory = Directory.CreateTempSubdirectory("fdma-nvrtc-timing-").FullName;
        try
        {
            var cache = new KernelImageCache(directory);
            (double Total, string Parts) cold = TimeBuildAndLoad(new NvrtcKernelBuilder(KernelSources.Embedded, cache), kernels, target);
            (double Total, string Parts) cached = TimeBuildAndLoad(new NvrtcKernelBuilder(KernelSources.Embedded, cache), kernels, target);
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
        NvrtcKernelBuilder builder, IEnumerable<(KernelVariant Variant, int SharedBytes)> kernels, CompileTarget target)
    {
        var parts = new List<string>();
        double total = 0;
        foreach ((KernelVariant variant, int sharedBytes) in kernels)
        {
            var clock = Stopwatch.StartNew();
            KernelImage image = builder.GetImage(variant, target);
            double build = clock.Elapsed.TotalMilliseconds;
            KernelModules.Load(image, sharedBytes);
            double load = clock.Elapsed.TotalMilliseconds - build;
            parts.Add($"{variant.Slug}: {build:F1} + {load:F1} ms, {image.Bytes.Length / 1024} KiB {image.Kind}");
            total += clock.Elapsed.TotalMilliseconds;
        }

        return (total, string.Join("; ", parts));
    }
}

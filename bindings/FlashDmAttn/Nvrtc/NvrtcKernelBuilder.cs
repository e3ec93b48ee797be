using System.Collections.Concurrent;

namespace FlashDmAttn;

// Kernel images by (variant, target), each made once per process when a call first needs it: read from the disk
// cache, or compiled by NVRTC and written there. The disk key holds everything the image depends on: the headers'
// hash, the NVRTC version, the options (target included) and the variant.
internal sealed class NvrtcKernelBuilder
{
    // Bumped when the cache file's layout or the meaning of its key changes.
    private const string CacheFormat = "1";

    private static readonly Lazy<NvrtcKernelBuilder> DefaultBuilder =
        new(() => new NvrtcKernelBuilder(KernelSources.Embedded, new KernelImageCache(KernelImageCache.DefaultDirectory())));

    private readonly ConcurrentDictionary<(KernelVariant, CompileTarget), Lazy<KernelImage>> images = new();

    public NvrtcKernelBuilder(KernelSources sources, KernelImageCache? diskCache)
    {
        Sources = sources;
        DiskCache = diskCache;
    }

    public static NvrtcKernelBuilder Default => DefaultBuilder.Value;

    public KernelSources Sources { get; }

    public KernelImageCache? DiskCache { get; }

    public KernelImage GetImage(KernelVariant variant, CompileTarget target)
    {
        Lazy<KernelImage> image = images.GetOrAdd((variant, target), key => new Lazy<KernelImage>(() => Build(key.Item1, key.Item2)));
        try
        {
            return image.Value;
        }
        catch
        {
            images.TryRemove(new((variant, target), image)); // a later call tries again rather than rethrowing this failure
            throw;
        }
    }

    public byte[] DiskKey(KernelVariant variant, CompileTarget target) =>
        KernelImageCache.Key(CacheFormat, Sources.Hash, NvrtcCompiler.Version, string.Join(' ', NvrtcCompiler.Options(target)), variant.NameExpression);

    public string DiskName(KernelVariant variant, CompileTarget target) => $"{variant.Slug}.{target}";

    private KernelImage Build(KernelVariant variant, CompileTarget target)
    {
        byte[] key = DiskKey(variant, target);
        string name = DiskName(variant, target);
        if (DiskCache?.TryRead(name, key) is { } cached && cached.Kind == target.Kind)
            return cached;

        KernelImage image = NvrtcCompiler.Compile(Sources, variant, target);
        DiskCache?.Write(name, key, image);
        return image;
    }
}

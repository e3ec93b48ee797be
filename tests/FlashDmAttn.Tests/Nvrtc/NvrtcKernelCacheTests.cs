namespace FlashDmAttn.Tests.Nvrtc;

/// <summary>
/// The NVRTC backend's disk cache: where it lives, entries that read back whole, truncated, corrupt or foreign files
/// read as misses and are rebuilt, and writers racing on one entry never leave a broken file.
/// </summary>
[NonParallelizable] // sets XDG_CACHE_HOME
public class NvrtcKernelCacheTests
{
    private static readonly KernelImage Image = new(ImageKind.Cubin, "_ZN4fdma6kernelEv", Enumerable.Range(0, 5000).Select(i => (byte)(i * 7)).ToArray());
    private string directory = "";

    [SetUp]
    public void CreateDirectory() => directory = Directory.CreateTempSubdirectory("fdma-cache-test-").FullName;

    [TearDown]
    public void DeleteDirectory() => Directory.Delete(directory, recursive: true);

    [Test]
    public void DefaultDirectory_FollowsXdgCacheHome()
    {
        if (OperatingSystem.IsWindows())
            Assert.Ignore("Windows uses LocalApplicationData");
        string? saved = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        try
        {
            Environment.SetEnvironmentVariable("XDG_CACHE_HOME", directory);
            Assert.That(KernelImageCache.DefaultDirectory(), Is.EqualTo(Path.Combine(directory, "flashdmattn")));
            Environment.SetEnvironmentVariable("XDG_CACHE_HOME", "relative/path"); // the XDG specification ignores it
            Assert.That(KernelImageCache.DefaultDirectory(),
                Is.EqualTo(Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "flashdmattn")));
        }
        finally
        {
            Environment.SetEnvironmentVariable("XDG_CACHE_HOME", saved);
        }
    }

    [Test]
    public void Key_ChangesWithEveryPart()
    {
        byte[] key = KernelImageCache.Key("1", "sources", "13.0", "--gpu-architecture=sm_90 -std=c++17", "fdma::k<1>");

        Assert.That(KernelImageCache.Key("1", "sources", "13.0", "--gpu-architecture=sm_90 -std=c++17", "fdma::k<1>"), Is.EqualTo(key));
        Assert.That(KernelImageCache.Key("1", "sources2", "13.0", "--gpu-architecture=sm_90 -std=c++17", "fdma::k<1>"), Is.Not.EqualTo(key));
        Assert.That(KernelImageCache.Key("1", "sources", "12.8", "--gpu-architecture=sm_90 -std=c++17", "fdma::k<1>"), Is.Not.EqualTo(key));
        Assert.That(KernelImageCache.Key("1", "sources", "13.0", "--gpu-architecture=sm_80 -std=c++17", "fdma::k<1>"), Is.Not.EqualTo(key));
        Assert.That(KernelImageCache.Key("1", "sources", "13.0", "--gpu-architecture=sm_90 -std=c++17", "fdma::k<2>"), Is.Not.EqualTo(key));
        Assert.That(KernelImageCache.Key("1", "sourc", "es13.0", "--gpu-architecture=sm_90 -std=c++17", "fdma::k<1>"), Is.Not.EqualTo(key));
    }

    [Test]
    public void WrittenEntry_ReadsBackWhole()
    {
        var cache = new KernelImageCache(Path.Combine(directory, "nested", "flashdmattn"));
        byte[] key = KernelImageCache.Key("entry");

        Assert.That(cache.TryRead("fwd", key), Is.Null);
        cache.Write("fwd", key, Image);
        KernelImage? read = cache.TryRead("fwd", key);

        Assert.That(read, Is.Not.Null);
        Assert.That((read!.Kind, read.LoweredName, read.Bytes), Is.EqualTo((Image.Kind, Image.LoweredName, Image.Bytes)));
        Assert.That(Directory.GetFiles(cache.Directory), Has.Length.EqualTo(1), "no temporary file is left");
    }

    private static IEnumerable<TestCaseData> Damages() => new (string Name, Func<byte[], byte[]> Damage)[]
    {
        ("empty", _ => []),
        ("header only", f => f[..80]),
        ("truncated by one byte", f => f[..^1]),
        ("truncated to half", f => f[..(f.Length / 2)]),
        ("one more byte", f => [.. f, 0]),
        ("image byte flipped", f => Flip(f, f.Length - 10)),
        ("name byte flipped", f => Flip(f, 90)),
        ("length field changed", f => Flip(f, 40)),
        ("magic changed", f => Flip(f, 0)),
        ("hash changed", f => Flip(f, 60)),
    }.Select(c => new TestCaseData(c.Damage).SetArgDisplayNames(c.Name));

    [TestCaseSource(nameof(Damages))]
    public void DamagedEntry_ReadsAsAMiss(Func<byte[], byte[]> damage)
    {
        var cache = new KernelImageCache(directory);
        byte[] key = KernelImageCache.Key("damaged");
        cache.Write("fwd", key, Image);
        string path = cache.PathOf("fwd", key);

        File.WriteAllBytes(path, damage(File.ReadAllBytes(path)));

        Assert.That(cache.TryRead("fwd", key), Is.Null);
    }

    [Test]
    public void EntryOfAnotherKey_ReadsAsAMiss()
    {
        var cache = new KernelImageCache(directory);
        byte[] key = KernelImageCache.Key("mine"), other = KernelImageCache.Key("other");
        cache.Write("fwd", other, Image);

        File.Copy(cache.PathOf("fwd", other), cache.PathOf("fwd", key)); // a file under a name whose content is another key's

        Assert.That(cache.TryRead("fwd", key), Is.Null);
    }

    [Test]
    public void RacingWritersAndReaders_NeverSeeABrokenEntry()
    {
        var cache = new KernelImageCache(directory);
        byte[] key = KernelImageCache.Key("raced");
        KernelImage[] images = Enumerable.Range(1, 4)
            .Select(n => new KernelImage(ImageKind.Ptx, $"kernel{n}", Enumerable.Repeat((byte)n, 200_000 * n).ToArray()))
            .ToArray();
        int wholeReads = 0;

        Parallel.For(0, 64, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
        {
            if (i % 2 == 0)
            {
                cache.Write("fwd", key, images[i / 2 % images.Length]);
            }
            else if (cache.TryRead("fwd", key) is { } read)
            {
                // Whatever a reader finds is one writer's whole entry.
                KernelImage expected = images.Single(image => image.LoweredName == read.LoweredName);
                Assert.That(read.Bytes, Is.EqualTo(expected.Bytes));
                Interlocked.Increment(ref wholeReads);
            }
        });

        Assert.That(cache.TryRead("fwd", key), Is.Not.Null);
        Assert.That(Directory.GetFiles(directory), Has.Length.EqualTo(1), "no temporary file is left");
        TestContext.Out.WriteLine($"{wholeReads} of 32 reads found an entry");
    }

    [Test]
    public void UnwritableDirectory_IsNotAnError()
    {
        string file = Path.Combine(directory, "a-file");
        File.WriteAllText(file, "");
        var cache = new KernelImageCache(Path.Combine(file, "flashdmattn")); // a directory under a file cannot exist

        Assert.DoesNotThrow(() => cache.Write("fwd", KernelImageCache.Key("x"), Image));
        Assert.That(cache.TryRead("fwd", KernelImageCache.Key("x")), Is.Null);
    }

    private static byte[] Flip(byte[] file, int at)
    {
        byte[] copy = (byte[])file.Clone();
        copy[at] ^= 0x5A;
        return copy;
    }
}

/// <summary>The builder compiles a variant once, writes it to the disk cache, reads it back in a new process's place, and rebuilds a damaged entry.</summary>
public class NvrtcKernelBuilderTests : NvrtcTest
{
    [Test]
    public void Variant_IsCompiledOnceCachedOnDiskAndRebuiltWhenDamaged()
    {
        string directory = Directory.CreateTempSubdirectory("fdma-builder-test-").FullName;
        try
        {
            var cache = new KernelImageCache(directory);
            KernelVariant variant = KernelVariant.Occupancy;
            var target = new CompileTarget("compute_80");
            var builder = new NvrtcKernelBuilder(KernelSources.Embedded, cache);

            KernelImage compiled = builder.GetImage(variant, target);
            Assert.That(builder.GetImage(variant, target), Is.SameAs(compiled), "once per process");
            string path = cache.PathOf(builder.DiskName(variant, target), builder.DiskKey(variant, target));
            Assert.That(File.Exists(path), path);

            // A new builder stands for a new process: it reads the entry instead of compiling.
            KernelImage read = new NvrtcKernelBuilder(KernelSources.Embedded, cache).GetImage(variant, target);
            Assert.That((read.LoweredName, read.Bytes), Is.EqualTo((compiled.LoweredName, compiled.Bytes)));

            File.WriteAllBytes(path, File.ReadAllBytes(path)[..^100]);
            KernelImage rebuilt = new NvrtcKernelBuilder(KernelSources.Embedded, cache).GetImage(variant, target);
            // Compiled anew, not read: NVRTC gives internal-linkage globals a suffix of its own on every compilation,
            // so only the kernel's name and the image's size repeat.
            Assert.That((rebuilt.LoweredName, rebuilt.Bytes.Length), Is.EqualTo((compiled.LoweredName, compiled.Bytes.Length)));
            Assert.That(cache.TryRead(builder.DiskName(variant, target), builder.DiskKey(variant, target))?.Bytes, Is.EqualTo(rebuilt.Bytes),
                "the truncated entry was replaced by a whole one");
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}

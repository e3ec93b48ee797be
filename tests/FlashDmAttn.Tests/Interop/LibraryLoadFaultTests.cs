namespace FlashDmAttn.Tests;

/// <summary>
/// A CUDA driver that cannot be used gives one exception with one clear message, and nothing printed: one that does
/// not load (absent, or a file that is not a shared library), or one with no device behind it. Each runs
/// FlashDmAttn.BackendProbe (one forward call, its failure written to error.txt) in a process of its own, since a
/// library is loaded, or found unusable, once per process. These need no GPU.
/// </summary>
public class LibraryLoadFaultTests
{
    [Test]
    public void Driver_ThatDoesNotLoad_GivesOneNativeLibraryExceptionWithTheLoadersReason()
    {
        if (!OperatingSystem.IsLinux())
            Assert.Ignore("the stand-in driver is put first on LD_LIBRARY_PATH, which is Linux's");
        using var probe = new ProbeFolder();

        // Found before any installed driver, and not loadable: what the binding sees of a missing driver too.
        string drivers = probe.Folder("drivers");
        File.WriteAllText(Path.Combine(drivers, "libcuda.so.1"), "not a shared library\n");
        string[] error = probe.Fails(new() { ["LD_LIBRARY_PATH"] = drivers });

        Assert.That(error[0], Is.EqualTo(nameof(NativeLibraryException)));
        Assert.That(error[1], Does.StartWith("The CUDA driver library libcuda.so.1 could not be loaded (is an NVIDIA driver installed?): "));
        Assert.That(error[1], Does.Contain(Path.Combine(drivers, "libcuda.so.1")), "the loader's reason, naming the file it tried");
    }

    [Test]
    public void Driver_WithNoDeviceVisible_GivesOneCudaException()
    {
        try
        {
            _ = NativeLibraryResolver.CudaDriver;
        }
        catch (NativeLibraryException e)
        {
            Assert.Ignore($"no CUDA driver loads here: {e.Message}");
        }

        using var probe = new ProbeFolder();
        string[] error = probe.Fails(new() { ["CUDA_VISIBLE_DEVICES"] = "-1" });

        Assert.That(error[0], Is.EqualTo(nameof(CudaException)));
        Assert.That(error[1], Does.StartWith("cuInit failed with CUDA_ERROR_"), "the failing call, the error's name and its text");
    }
}

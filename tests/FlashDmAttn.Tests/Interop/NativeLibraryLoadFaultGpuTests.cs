using FlashDmAttn.Tests.Gpu;

namespace FlashDmAttn.Tests;

/// <summary>
/// With the native backend forced, an unusable native library gives one exception with one clear message and no
/// fallback: absent (the message lists every place searched), or a file that is not a shared library. These need a
/// GPU: the backend is chosen for a device.
/// </summary>
[Category("Gpu")]
public class NativeLibraryLoadFaultGpuTests : GpuTest
{
    [Test]
    public void ForcedNative_WithTheLibraryNowhere_NamesEveryPlaceSearched()
    {
        string beside = Path.Combine(AppContext.BaseDirectory, Interop.Libraries.FlashDmAttnFileName);
        if (File.Exists(beside))
            Assert.Ignore($"{beside} exists: the library is not absent here");
        using var probe = new ProbeFolder();

        string[] error = probe.Fails(new()
        {
            [BackendSelector.BackendVariable] = "native",
            [NativeLibraryResolver.PathVariable] = null,
            ["LD_LIBRARY_PATH"] = null,
        });

        Assert.That(error[0], Is.EqualTo(nameof(NativeLibraryException)));
        string fileName = Interop.Libraries.FlashDmAttnFileName;
        Assert.That(error[1], Does.StartWith($"{fileName} was not found. Set {NativeLibraryResolver.PathVariable} to its full path"));
        Assert.That(error[1], Does.Contain($"{NativeLibraryResolver.PathVariable}: not set"));
        Assert.That(error[1], Does.Contain($"{beside}: not found"));
        Assert.That(error[1], Does.Contain(Path.Combine("runtimes", System.Runtime.InteropServices.RuntimeInformation.RuntimeIdentifier, "native", fileName) + ": not found"));
        Assert.That(error[1], Does.Contain($"the system search for {fileName}: "));
    }

    [Test]
    public void ForcedNative_WithAFileThatIsNotALibrary_NamesTheFileAndTheLoadersReason()
    {
        using var probe = new ProbeFolder();
        string library = Path.Combine(probe.Folder("native"), Interop.Libraries.FlashDmAttnFileName);
        File.WriteAllText(library, "not a shared library\n");

        string[] error = probe.Fails(new() { [BackendSelector.BackendVariable] = "native", [NativeLibraryResolver.PathVariable] = library });

        Assert.That(error[0], Is.EqualTo(nameof(NativeLibraryException)));
        Assert.That(error[1], Does.StartWith($"{NativeLibraryResolver.PathVariable} names '{library}', which could not be loaded: "));
        Assert.That(error[1], Does.Contain($"{library}:"), "the loader's reason");
    }
}

using System.Diagnostics;
using FlashDmAttn.Tests.Gpu;

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
        using var probe = new ProbeRun();

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

        using var probe = new ProbeRun();
        string[] error = probe.Fails(new() { ["CUDA_VISIBLE_DEVICES"] = "-1" });

        Assert.That(error[0], Is.EqualTo(nameof(CudaException)));
        Assert.That(error[1], Does.StartWith("cuInit failed with CUDA_ERROR_"), "the failing call, the error's name and its text");
    }
}

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
        using var probe = new ProbeRun();

        string[] error = probe.Fails(new()
        {
            ["FLASHDMATTN_BACKEND"] = "native",
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
        using var probe = new ProbeRun();
        string library = Path.Combine(probe.Folder("native"), Interop.Libraries.FlashDmAttnFileName);
        File.WriteAllText(library, "not a shared library\n");

        string[] error = probe.Fails(new() { ["FLASHDMATTN_BACKEND"] = "native", [NativeLibraryResolver.PathVariable] = library });

        Assert.That(error[0], Is.EqualTo(nameof(NativeLibraryException)));
        Assert.That(error[1], Does.StartWith($"{NativeLibraryResolver.PathVariable} names '{library}', which could not be loaded: "));
        Assert.That(error[1], Does.Contain($"{library}:"), "the loader's reason");
    }
}

/// <summary>
/// A run of FlashDmAttn.BackendProbe on a small case, in a temporary folder, with the test process's environment but
/// for the variables given (null removes one).
/// </summary>
internal sealed class ProbeRun : IDisposable
{
    private readonly string root = Directory.CreateTempSubdirectory("fdma-load-fault-").FullName;

    public ProbeRun() => File.WriteAllLines(Path.Combine(root, "case.txt"), ["Float16", "1 8 8 2 2 64", "0", "1 1 1"]);

    public string Folder(string name) => Directory.CreateDirectory(Path.Combine(root, name)).FullName;

    /// <summary>
    /// Runs the probe, which must fail: exit code 1, nothing on its console, and error.txt holding one exception (type,
    /// then a one-line message), returned.
    /// </summary>
    public string[] Fails(Dictionary<string, string?> environment)
    {
        string probe = Path.Combine(AppContext.BaseDirectory, "FlashDmAttn.BackendProbe.dll");
        if (!File.Exists(probe))
            Assert.Ignore($"{probe} is missing: build the solution");
        var start = new ProcessStartInfo(DotnetHost()) { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(probe);
        start.ArgumentList.Add(root);
        foreach ((string name, string? value) in environment)
        {
            if (value is null)
                start.Environment.Remove(name);
            else
                start.Environment[name] = value;
        }

        using Process process = Process.Start(start)!;
        Task<string> output = process.StandardOutput.ReadToEndAsync(), errorOutput = process.StandardError.ReadToEndAsync();
        process.WaitForExit();
        string console = output.Result + errorOutput.Result;

        Assert.That(process.ExitCode, Is.EqualTo(1), console);
        Assert.That(console, Is.Empty, "the library printed something");
        string[] error = File.ReadAllLines(Path.Combine(root, "error.txt"));
        TestContext.Progress.WriteLine($"{TestContext.CurrentContext.Test.Name}: {string.Join(": ", error)}");
        Assert.That(error, Has.Length.EqualTo(2), "one exception type and a one-line message");
        return error;
    }

    public void Dispose() => Directory.Delete(root, recursive: true);

    // The dotnet host running these tests, else the one the SDK names, else the one on PATH.
    private static string DotnetHost()
    {
        string? current = Environment.ProcessPath;
        if (current is not null && Path.GetFileNameWithoutExtension(current) == "dotnet")
            return current;
        return Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet";
    }
}

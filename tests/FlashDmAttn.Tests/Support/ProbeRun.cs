using System.Diagnostics;

namespace FlashDmAttn.Tests;

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

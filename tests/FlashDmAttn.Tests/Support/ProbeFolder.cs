using System.Diagnostics;
using System.Runtime.InteropServices;
using FlashDmAttn.Tests.Gpu;

namespace FlashDmAttn.Tests;

/// <summary>
/// A temporary case folder for FlashDmAttn.BackendProbe (see its Program.cs), which runs one forward call in a process
/// of its own: the native library loads, or is found unusable, once per process. The probe gets the test process's
/// environment but for the variables given (null removes one). The folder is deleted when disposed.
/// </summary>
internal sealed class ProbeFolder : IDisposable
{
    private readonly string root = Directory.CreateTempSubdirectory("fdma-probe-").FullName;

    /// <summary>The path of a file or folder inside this one, which need not exist.</summary>
    public string At(string name) => Path.Combine(root, name);

    /// <summary>A folder inside this one, created.</summary>
    public string Folder(string name) => Directory.CreateDirectory(At(name)).FullName;

    /// <summary>A forward case with a mask, for the probe to run and write its output and LSE.</summary>
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

    /// <summary>Runs the probe on the folder's case: its exit code, and what it printed.</summary>
    public (int ExitCode, string Console) Run(Dictionary<string, string?> environment)
    {
        string probe = Path.Combine(AppContext.BaseDirectory, "FlashDmAttn.BackendProbe.dll");
        if (!File.Exists(probe))
            Assert.Ignore($"{probe} is missing: build the solution");
        return Execute(DotnetHost(), [probe, root], environment);
    }

    /// <summary>
    /// Runs the probe on a small case of which it has only the shape, so it must fail before reading any tensor: exit
    /// code 1, nothing on its console, and error.txt holding one exception (type, then a one-line message), returned.
    /// </summary>
    public string[] Fails(Dictionary<string, string?> environment)
    {
        File.WriteAllLines(At("case.txt"), ["Float16", "1 8 8 2 2 64", "0", "1 1 1"]);
        (int exitCode, string console) = Run(environment);

        Assert.That(exitCode, Is.EqualTo(1), console);
        Assert.That(console, Is.Empty, "the library printed something");
        string[] error = ReadLines("error.txt");
        TestContext.Progress.WriteLine($"{TestContext.CurrentContext.Test.Name}: {string.Join(": ", error)}");
        Assert.That(error, Has.Length.EqualTo(2), "one exception type and a one-line message");
        return error;
    }

    /// <summary>A text file the probe wrote: backend.txt, trace.txt or error.txt.</summary>
    public string[] ReadLines(string name) => File.ReadAllLines(At(name));

    /// <summary>The probe's output, as the bits of its values widened to double.</summary>
    public IEnumerable<long> ReadOutput(ScalarType dtype)
    {
        byte[] bytes = File.ReadAllBytes(At("out.bin"));
        double[] values = dtype == ScalarType.Float16
            ? Tensors.Widen<Half>(MemoryMarshal.Cast<byte, Half>(bytes))
            : Tensors.Widen<BFloat16>(MemoryMarshal.Cast<byte, BFloat16>(bytes));
        return values.Select(BitConverter.DoubleToInt64Bits);
    }

    /// <summary>The probe's LSE, as the bits of its values widened to double.</summary>
    public IEnumerable<long> ReadLse() =>
        Tensors.Widen<float>(MemoryMarshal.Cast<byte, float>(File.ReadAllBytes(At("lse.bin")))).Select(BitConverter.DoubleToInt64Bits);

    public void Dispose() => Directory.Delete(root, recursive: true);

    /// <summary>Runs a program to its end: its exit code (-1 where it does not exist) and what it printed.</summary>
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
        if (current is not null && Path.GetFileNameWithoutExtension(current) == "dotnet")
            return current;
        return Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet";
    }
}

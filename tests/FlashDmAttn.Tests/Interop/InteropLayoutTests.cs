using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;

namespace FlashDmAttn.Tests;

/// <summary>
/// The managed mirrors of the C ABI's structs have the layout of native/include/flash_dmattn.h: a C compiler compiles
/// the header (embedded in this assembly) with a program printing every size and field offset, and each must equal the
/// mirror's. Runs wherever a C compiler is on PATH (CI included); InteropLayoutGpuTests also compares the struct sizes
/// with what the library itself writes.
/// </summary>
public class InteropLayoutTests
{
    private static readonly (Type Mirror, string CType)[] Structs =
    [
        (typeof(Interop.FlashDmAttn.Tensor), "fdma_tensor"),
        (typeof(Interop.FlashDmAttn.BroadcastTensor), "fdma_broadcast_tensor"),
        (typeof(Interop.FlashDmAttn.Problem), "fdma_problem"),
        (typeof(Interop.FlashDmAttn.FwdParams), "fdma_fwd_params"),
        (typeof(Interop.FlashDmAttn.BwdParams), "fdma_bwd_params"),
        (typeof(Interop.FlashDmAttn.TopKParams), "fdma_topk_params"),
        (typeof(Interop.FlashDmAttn.DmaCache), "fdma_dma_cache"),
        (typeof(Interop.FlashDmAttn.DmaAppendParams), "fdma_dma_append_params"),
    ];

    [Test]
    public void Mirrors_HaveTheHeadersSizesAndOffsets()
    {
        Dictionary<string, long> layout = HeaderLayout();
        foreach ((Type mirror, string cType) in Structs)
        {
            Assert.That(Marshal.SizeOf(mirror), Is.EqualTo(layout[$"sizeof {cType}"]), $"sizeof({cType})");
            foreach (FieldInfo field in Fields(mirror))
            {
                string key = $"{cType}.{CppNames.Of(field.Name)}";
                Assert.That((long)Marshal.OffsetOf(mirror, field.Name), Is.EqualTo(layout[key]), key);
            }
        }
    }

    [Test]
    public void AbiVersion_IsTheHeaders()
    {
        Assert.That(HeaderLayout()["FDMA_ABI_VERSION"], Is.EqualTo(Interop.FlashDmAttn.AbiVersion));
    }

    // Instance fields in declaration order; a fixed buffer appears as its own field.
    private static IEnumerable<FieldInfo> Fields(Type mirror) =>
        mirror.GetFields(BindingFlags.Public | BindingFlags.Instance).OrderBy(f => (long)Marshal.OffsetOf(mirror, f.Name));

    private static readonly Lazy<Dictionary<string, long>> Layout = new(Compute);

    private static Dictionary<string, long> HeaderLayout() => Layout.Value;

    private static Dictionary<string, long> Compute()
    {
        string? compiler = new[] { "cc", "gcc", "clang" }.FirstOrDefault(c => FindOnPath(c) is not null);
        if (compiler is null)
            Assert.Ignore("no C compiler (cc, gcc or clang) on PATH to read the header's layout");

        string folder = Directory.CreateTempSubdirectory("fdma-layout-").FullName;
        try
        {
            using (Stream header = typeof(InteropLayoutTests).Assembly.GetManifestResourceStream("flash_dmattn.h")!)
            using (FileStream file = File.Create(Path.Combine(folder, "flash_dmattn.h")))
                header.CopyTo(file);
            var program = new StringBuilder("#include <stddef.h>\n#include <stdio.h>\n#include \"flash_dmattn.h\"\nint main(void) {\n");
            program.AppendLine("    printf(\"FDMA_ABI_VERSION %d\\n\", FDMA_ABI_VERSION);");
            foreach ((Type mirror, string cType) in Structs)
            {
                program.AppendLine($"    printf(\"sizeof {cType} %zu\\n\", sizeof({cType}));");
                foreach (FieldInfo field in Fields(mirror))
                    program.AppendLine($"    printf(\"{cType}.{CppNames.Of(field.Name)} %zu\\n\", offsetof({cType}, {CppNames.Of(field.Name)}));");
            }

            program.AppendLine("    return 0;\n}");
            File.WriteAllText(Path.Combine(folder, "layout.c"), program.ToString());
            string executable = Path.Combine(folder, "layout");
            Run(compiler!, $"-std=c99 -Wall -Werror -pedantic -o \"{executable}\" \"{Path.Combine(folder, "layout.c")}\"");
            return Run(executable, "")
                .Split('\n', StringSplitOptions.RemoveEmptyEntries)
                .Select(line => line.Split(' '))
                .ToDictionary(parts => string.Join(' ', parts[..^1]), parts => long.Parse(parts[^1]));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    private static string Run(string file, string arguments)
    {
        using Process process = Process.Start(new ProcessStartInfo(file, arguments)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        })!;
        string output = process.StandardOutput.ReadToEnd();
        string errors = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.That(process.ExitCode, Is.Zero, $"{file} {arguments}: {errors}");
        return output;
    }

    private static string? FindOnPath(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator)
        .Select(directory => Path.Combine(directory, name))
        .FirstOrDefault(File.Exists);
}

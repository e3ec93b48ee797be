using System.Runtime.InteropServices;
using System.Text;

namespace FlashDmAttn;

internal enum ImageKind
{
    Ptx = 1,   // NUL-terminated text the driver compiles when it loads it
    Cubin = 2, // machine code for one architecture
}

// What NVRTC gives for one kernel variant: the module image and the mangled name of the kernel in it.
internal sealed record KernelImage(ImageKind Kind, string LoweredName, byte[] Bytes);

// What NVRTC compiles for: machine code (sm_XY) where it knows the device's architecture, else PTX for the newest
// architecture it knows that the device can run (compute_XY), which the driver compiles on load.
internal readonly record struct CompileTarget(string Architecture)
{
    // cp.async, ldmatrix and the bf16 MMA of the kernels (ptx.cuh).
    public const int MinimumArchitecture = 80;

    public ImageKind Kind => Architecture.StartsWith("sm_", StringComparison.Ordinal) ? ImageKind.Cubin : ImageKind.Ptx;

    // Machine code with Hopper's arch-specific instructions (wgmma): the target of KernelVariant.Sm90a variants.
    public static CompileTarget Sm90a { get; } = new("sm_90a");

    public static CompileTarget ForDevice(int major, int minor, IReadOnlyCollection<int> supported)
    {
        int arch = major * 10 + minor;
        if (arch < MinimumArchitecture)
            throw new NativeLibraryException($"The kernels need compute capability {MinimumArchitecture / 10}.{MinimumArchitecture % 10} or newer; the device has {major}.{minor}.");
        if (supported.Contains(arch))
            return new($"sm_{arch}");

        // PTX of an older architecture of the same family or below runs on newer devices; pick the newest NVRTC knows.
        int[] usable = supported.Where(a => a >= MinimumArchitecture && a <= arch).ToArray();
        if (usable.Length == 0)
        {
            throw new NativeLibraryException(
                $"NVRTC {NvrtcCompiler.Version} compiles for {string.Join(", ", supported.Select(a => $"sm_{a}"))}, none of which a device of compute capability {major}.{minor} runs.");
        }

        return new($"compute_{usable.Max()}");
    }

    public override string ToString() => Architecture;
}

// Compiles kernel variants with NVRTC: the library is loaded, and its version and architectures read, once per process.
internal static unsafe class NvrtcCompiler
{
    private static readonly Lazy<(string Version, int[] Architectures)> Library = new(Load);

    public static string Version => Library.Value.Version;

    public static IReadOnlyCollection<int> SupportedArchitectures => Library.Value.Architectures;

    // Whether this NVRTC compiles Hopper's arch-specific target sm_90a (NVRTC 12 or later), false where it cannot be
    // loaded. Asked on every forward call of the NVRTC backend: decided once.
    public static bool CompilesSm90a => Sm90a.Value;

    private static readonly Lazy<bool> Sm90a = new(() =>
    {
        try
        {
            return int.Parse(Version.Split('.')[0], System.Globalization.CultureInfo.InvariantCulture) >= 12 && SupportedArchitectures.Contains(90);
        }
        catch (NativeLibraryException)
        {
            return false;
        }
    });

    public static string Location => NativeLibraryResolver.Nvrtc.Location;

    public static void EnsureLoaded() => _ = Library.Value;

    // The options every variant compiles with: those of the native build that change code (C++17; nvcc's -O3 and
    // fmad are NVRTC's defaults too), so that both backends give the same bits.
    public static IReadOnlyList<string> Options(CompileTarget target) => [$"--gpu-architecture={target.Architecture}", "-std=c++17"];

    public static KernelImage Compile(KernelSources sources, KernelVariant variant, CompileTarget target) =>
        Compile(sources, variant.Source, variant.Slug + ".cu", variant.NameExpression, target);

    // Compiles a translation unit against the kernel headers; with a name expression, also returns the mangled name
    // of the kernel it instantiates. Failures throw KernelCompilationException with NVRTC's log.
    public static KernelImage Compile(KernelSources sources, string unitSource, string unitName, string? nameExpression, CompileTarget target)
    {
        EnsureLoaded();
        IReadOnlyList<string> options = Options(target);
        using var strings = new Utf8Strings();
        byte** headers = strings.Array(sources.Headers.Select(h => h.Text));
        byte** includeNames = strings.Array(sources.Headers.Select(h => h.Name));
        byte** optionPointers = strings.Array(options);

        ThrowIfFailed(
            Interop.Nvrtc.nvrtcCreateProgram(out nint program, strings.Add(unitSource), strings.Add(unitName), sources.Headers.Count, headers, includeNames),
            "nvrtcCreateProgram");
        try
        {
            if (nameExpression is not null)
                ThrowIfFailed(Interop.Nvrtc.nvrtcAddNameExpression(program, nameExpression), "nvrtcAddNameExpression");

            int result = Interop.Nvrtc.nvrtcCompileProgram(program, options.Count, optionPointers);
            if (result != Interop.Nvrtc.NVRTC_SUCCESS)
                throw new KernelCompilationException(nameExpression ?? unitName, Version, options, ErrorString(result), ReadLog(program));

            string loweredName = "";
            if (nameExpression is not null)
            {
                ThrowIfFailed(Interop.Nvrtc.nvrtcGetLoweredName(program, nameExpression, out nint lowered), "nvrtcGetLoweredName");
                loweredName = Marshal.PtrToStringUTF8(lowered) ?? "";
            }

            return new KernelImage(target.Kind, loweredName, target.Kind == ImageKind.Cubin ? ReadCubin(program) : ReadPtx(program));
        }
        finally
        {
            Interop.Nvrtc.nvrtcDestroyProgram(ref program);
        }
    }

    private static (string, int[]) Load()
    {
        string location = NativeLibraryResolver.Nvrtc.Location;
        try
        {
            ThrowIfFailed(Interop.Nvrtc.nvrtcVersion(out int major, out int minor), "nvrtcVersion");
            ThrowIfFailed(Interop.Nvrtc.nvrtcGetNumSupportedArchs(out int count), "nvrtcGetNumSupportedArchs");
            int[] architectures = new int[count];
            fixed (int* destination = architectures)
                ThrowIfFailed(Interop.Nvrtc.nvrtcGetSupportedArchs(destination), "nvrtcGetSupportedArchs");
            return ($"{major}.{minor}", architectures);
        }
        catch (EntryPointNotFoundException e)
        {
            throw new NativeLibraryException($"{location} is not NVRTC 11.2 or newer: {e.Message}", e);
        }
    }

    private static byte[] ReadPtx(nint program)
    {
        ThrowIfFailed(Interop.Nvrtc.nvrtcGetPTXSize(program, out nuint size), "nvrtcGetPTXSize");
        byte[] ptx = new byte[size]; // the size counts the terminating NUL the driver needs
        fixed (byte* destination = ptx)
            ThrowIfFailed(Interop.Nvrtc.nvrtcGetPTX(program, destination), "nvrtcGetPTX");
        return ptx;
    }

    private static byte[] ReadCubin(nint program)
    {
        ThrowIfFailed(Interop.Nvrtc.nvrtcGetCUBINSize(program, out nuint size), "nvrtcGetCUBINSize");
        byte[] cubin = new byte[size];
        fixed (byte* destination = cubin)
            ThrowIfFailed(Interop.Nvrtc.nvrtcGetCUBIN(program, destination), "nvrtcGetCUBIN");
        return cubin;
    }

    private static string ReadLog(nint program)
    {
        if (Interop.Nvrtc.nvrtcGetProgramLogSize(program, out nuint size) != Interop.Nvrtc.NVRTC_SUCCESS || size <= 1)
            return "";
        byte[] log = new byte[size];
        fixed (byte* destination = log)
        {
            if (Interop.Nvrtc.nvrtcGetProgramLog(program, destination) != Interop.Nvrtc.NVRTC_SUCCESS)
                return "";
        }

        return Encoding.UTF8.GetString(log, 0, log.Length - 1).TrimEnd();
    }

    private static string ErrorString(int result) => Marshal.PtrToStringUTF8(Interop.Nvrtc.nvrtcGetErrorString(result)) ?? $"nvrtcResult {result}";

    // A failing NVRTC call other than the compilation itself is a misuse or an NVRTC fault, not a source problem.
    private static void ThrowIfFailed(int result, string function)
    {
        if (result != Interop.Nvrtc.NVRTC_SUCCESS)
            throw new NativeLibraryException($"{function} of NVRTC ({NativeLibraryResolver.Nvrtc.Location}) failed with {ErrorString(result)} ({result}).");
    }

    // NUL-terminated UTF-8 copies for NVRTC, freed together.
    private sealed class Utf8Strings : IDisposable
    {
        private readonly List<nint> allocations = [];

        public byte* Add(string text)
        {
            nint copy = Marshal.StringToCoTaskMemUTF8(text);
            allocations.Add(copy);
            return (byte*)copy;
        }

        public byte** Array(IEnumerable<string> texts)
        {
            string[] items = texts.ToArray();
            nint array = Marshal.AllocCoTaskMem(Math.Max(1, items.Length) * sizeof(nint));
            allocations.Add(array);
            for (int i = 0; i < items.Length; i++)
                ((byte**)array)[i] = Add(items[i]);
            return (byte**)array;
        }

        public void Dispose()
        {
            foreach (nint allocation in allocations)
                Marshal.FreeCoTaskMem(allocation);
        }
    }
}

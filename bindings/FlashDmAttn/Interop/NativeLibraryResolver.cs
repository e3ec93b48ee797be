using System.Diagnostics.CodeAnalysis;
using System.Reflection;
using System.Runtime.InteropServices;

namespace FlashDmAttn;

internal readonly record struct LoadedLibrary(nint Handle, string Location);

// Maps the logical names of Interop.Libraries to files: each library is searched for and loaded once per process,
// and a failure becomes a NativeLibraryException that lists every place searched.
internal static class NativeLibraryResolver
{
    public const string PathVariable = "FLASHDMATTN_NATIVE_LIBRARY";
    public const string NvrtcPathVariable = "FLASHDMATTN_NVRTC";

    private static readonly Lock RegistrationLock = new();
    private static bool registered;

    private static readonly Lazy<LoadedLibrary> FlashDmAttnLoader = new(LoadFlashDmAttn);
    private static readonly Lazy<LoadedLibrary> CudaDriverLoader = new(LoadCudaDriver);
    private static readonly Lazy<LoadedLibrary> NvrtcLoader = new(LoadNvrtc);

    public static LoadedLibrary FlashDmAttn => FlashDmAttnLoader.Value;

    public static LoadedLibrary CudaDriver => CudaDriverLoader.Value;

    public static LoadedLibrary Nvrtc => NvrtcLoader.Value;

    // Called from the static constructor of each Interop class, so before any of their calls binds.
    public static void Register()
    {
        lock (RegistrationLock)
        {
            if (registered)
                return;
            NativeLibrary.SetDllImportResolver(typeof(NativeLibraryResolver).Assembly, Resolve);
            registered = true;
        }
    }

    private static nint Resolve(string libraryName, Assembly assembly, DllImportSearchPath? searchPath) => libraryName switch
    {
        Interop.Libraries.FlashDmAttn => FlashDmAttn.Handle,
        Interop.Libraries.CudaDriver => CudaDriver.Handle,
        Interop.Libraries.Nvrtc => Nvrtc.Handle,
        _ => 0,
    };

    private static LoadedLibrary LoadFlashDmAttn()
    {
        string fileName = Interop.Libraries.FlashDmAttnFileName;
        string? overridePath = Environment.GetEnvironmentVariable(PathVariable);
        if (!string.IsNullOrEmpty(overridePath))
        {
            // An explicit path is never second-guessed by a search that could find another build.
            return TryLoad(overridePath, out string? error)
                ?? throw new NativeLibraryException($"{PathVariable} names '{overridePath}', which could not be loaded: {error}");
        }

        var searched = new List<string> { $"{PathVariable}: not set" };
        string assemblyDirectory = AssemblyDirectory();
        string[] candidates =
        [
            Path.Combine(assemblyDirectory, fileName),
            Path.Combine(assemblyDirectory, "runtimes", RuntimeInformation.RuntimeIdentifier, "native", fileName),
        ];
        foreach (string candidate in candidates)
        {
            if (!File.Exists(candidate))
            {
                searched.Add($"{candidate}: not found");
                continue;
            }

            // A file that exists but does not load is reported rather than skipped: it is the build the user meant.
            return TryLoad(candidate, out string? error)
                ?? throw new NativeLibraryException(
                    $"{candidate} was found but could not be loaded: {error} Searched: {string.Join("; ", searched)}.");
        }

        return TryLoad(fileName, out string? searchError)
            ?? throw new NativeLibraryException(
                $"{fileName} was not found. Set {PathVariable} to its full path or place it in {assemblyDirectory}. " +
                $"Searched: {string.Join("; ", searched)}; the system search for {fileName}: {searchError}");
    }

    // The folder this assembly was loaded from, which a plugin's may differ from the app's; a single-file or native
    // AOT app's assemblies have no file of their own, and its native libraries lie in the app's folder.
    [UnconditionalSuppressMessage("SingleFile", "IL3000:Avoid accessing Assembly file path when publishing as a single file",
        Justification = "An empty Location (single-file, native AOT) falls back to AppContext.BaseDirectory.")]
    private static string AssemblyDirectory() =>
        Path.GetDirectoryName(typeof(NativeLibraryResolver).Assembly.Location) is { Length: > 0 } directory
            ? directory
            : AppContext.BaseDirectory;

    private static LoadedLibrary LoadCudaDriver()
    {
        string fileName = Interop.Libraries.CudaDriverFileName;
        return TryLoad(fileName, out string? error)
            ?? throw new NativeLibraryException(
                $"The CUDA driver library {fileName} could not be loaded (is an NVIDIA driver installed?): {error}");
    }

    // Like the driver, by its versioned names; first in a toolkit named by CUDA_PATH or CUDA_HOME, or at its usual
    // place on Linux, since a toolkit's lib64 is often not on the loader's path; an explicit path wins over all.
    private static LoadedLibrary LoadNvrtc()
    {
        string? overridePath = Environment.GetEnvironmentVariable(NvrtcPathVariable);
        if (!string.IsNullOrEmpty(overridePath))
        {
            return TryLoad(overridePath, out string? error)
                ?? throw new NativeLibraryException($"{NvrtcPathVariable} names '{overridePath}', which could not be loaded: {error}");
        }

        var searched = new List<string> { $"{NvrtcPathVariable}: not set" };
        var roots = new List<string>();
        foreach (string variable in new[] { "CUDA_PATH", "CUDA_HOME" })
        {
            if (Environment.GetEnvironmentVariable(variable) is { Length: > 0 } root)
                roots.Add(root);
            else
                searched.Add($"{variable}: not set");
        }

        if (!OperatingSystem.IsWindows())
            roots.Add("/usr/local/cuda");

        var candidates = new List<string>();
        foreach (string directory in roots.SelectMany(root => Interop.Libraries.NvrtcToolkitFolders.Select(folder => Path.Combine(root, folder))))
        {
            if (OperatingSystem.IsWindows() && Directory.Exists(directory))
                candidates.AddRange(Directory.GetFiles(directory, "nvrtc64_*.dll").Order(StringComparer.Ordinal).Reverse());
            else
                candidates.AddRange(Interop.Libraries.NvrtcFileNames.Select(name => Path.Combine(directory, name)));
        }

        foreach (string candidate in candidates.Distinct())
        {
            if (!File.Exists(candidate))
            {
                searched.Add($"{candidate}: not found");
                continue;
            }

            if (TryLoad(candidate, out string? error) is { } loaded)
                return loaded;
            searched.Add($"{candidate}: {error}");
        }

        foreach (string name in Interop.Libraries.NvrtcFileNames)
        {
            if (TryLoad(name, out string? error) is { } loaded)
                return loaded;
            searched.Add($"{name} (system search): {error}");
        }

        throw new NativeLibraryException(
            $"NVRTC (the CUDA runtime compiler) was not found. Install the CUDA toolkit or its NVRTC package, or set {NvrtcPathVariable} " +
            $"to the library's full path. Searched: {string.Join("; ", searched)}.");
    }

    private static LoadedLibrary? TryLoad(string pathOrName, out string? error)
    {
        try
        {
            error = null;
            return new LoadedLibrary(NativeLibrary.Load(pathOrName), pathOrName);
        }
        catch (Exception e) when (e is DllNotFoundException or BadImageFormatException)
        {
            error = LoaderReason(e.Message);
            return null;
        }
    }

    // On Linux and macOS .NET's message is a line of advice (strace, LD_DEBUG), then the system loader's own lines
    // (dlerror): those are the reason, joined into one line so that each failure reads as one message. A message of
    // one line (Windows) is the reason itself.
    private static string LoaderReason(string message)
    {
        string[] lines = message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return lines.Length > 1 ? string.Join("; ", lines[1..]) : message.Trim();
    }
}

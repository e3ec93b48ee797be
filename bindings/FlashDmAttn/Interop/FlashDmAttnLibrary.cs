using System.Collections.Concurrent;
using System.Runtime.InteropServices;

namespace FlashDmAttn;

// The checks that make a loaded libflash_dmattn safe to call: the ABI version once per process, the GPU
// architectures once per device; and the translation of its status codes into exceptions.
internal static class FlashDmAttnLibrary
{
    private static readonly Lazy<CompiledLibrary> Library = new(Load);
    private static readonly ConcurrentDictionary<int, bool> SupportedDevices = new();

    private sealed record CompiledLibrary(string Location, int[] Architectures);

    public static void EnsureLoaded() => _ = Library.Value;

    public static void EnsureSupportsDevice(int device)
    {
        CompiledLibrary library = Library.Value;
        if (SupportedDevices.ContainsKey(device))
            return;

        ThrowIfNoCodeFor(device, library);
        SupportedDevices.TryAdd(device, true);
    }

    // The check of a device not seen yet, a method of its own: in EnsureSupportsDevice, which every call forcing the
    // native backend makes, the closure over the compute capability would be allocated on entry, for every call.
    private static void ThrowIfNoCodeFor(int device, CompiledLibrary library)
    {
        // Machine code for sm_XY runs on any device of the same major version with a minor version >= Y.
        (int major, int minor) = CudaDriver.ComputeCapability(device);
        if (!library.Architectures.Any(arch => arch / 10 == major && arch % 10 <= minor))
        {
            string needed = minor == 0 ? $"sm_{major}0" : $"one of sm_{major}0 to sm_{major}{minor}";
            throw new NativeLibraryException(
                $"{library.Location} holds code for {string.Join(", ", library.Architectures.Select(arch => $"sm_{arch}"))}; " +
                $"device {device} has compute capability {major}.{minor} and needs {needed}. Rebuild the native library for this GPU.");
        }
    }

    // What only the native library implements (the top-k builder, the decode cache): loaded, with code for the device,
    // else a refusal that says so.
    public static void RequireFor(string feature, int device)
    {
        try
        {
            EnsureLoaded();
            EnsureSupportsDevice(device);
        }
        catch (NativeLibraryException e)
        {
            throw new NativeLibraryException($"{feature} runs in the native library only (the NVRTC backend has none): {e.Message}", e);
        }
    }

    public static void ThrowIfFailed(int status, string function)
    {
        if (status == 0)
            return;

        // The message is read first: it stays valid only until this thread's next call into the library.
        string message = Marshal.PtrToStringUTF8(Interop.FlashDmAttn.fdma_last_error_message()) ?? "";
        string description = Marshal.PtrToStringUTF8(Interop.FlashDmAttn.fdma_status_string(status)) ?? "";
        throw new FlashDmAttnException(function, status, description, message);
    }

    private static string ThisBindingVersion =>
        typeof(FlashDmAttnLibrary).Assembly.GetName().Version?.ToString(3) ?? "of this assembly";

    private static unsafe CompiledLibrary Load()
    {
        string location = NativeLibraryResolver.FlashDmAttn.Location;
        int abiVersion;
        try
        {
            abiVersion = Interop.FlashDmAttn.fdma_abi_version();
        }
        catch (EntryPointNotFoundException e)
        {
            throw new NativeLibraryException($"{location} does not export fdma_abi_version: it is not a FlashDmAttn library.", e);
        }

        if (abiVersion != Interop.FlashDmAttn.AbiVersion)
        {
            string version = Marshal.PtrToStringUTF8(Interop.FlashDmAttn.fdma_version_string()) ?? "";
            throw new NativeLibraryException(
                $"{location} (version {version}) implements ABI version {abiVersion}; this binding needs ABI version " +
                $"{Interop.FlashDmAttn.AbiVersion} (FlashDmAttn {ThisBindingVersion}): use the native library of the same release.");
        }

        ThrowIfFailed(Interop.FlashDmAttn.fdma_compiled_archs(null, 0, out int count), "fdma_compiled_archs");
        int[] architectures = new int[count];
        fixed (int* destination = architectures)
            ThrowIfFailed(Interop.FlashDmAttn.fdma_compiled_archs(destination, count, out _), "fdma_compiled_archs");
        return new CompiledLibrary(location, architectures);
    }
}

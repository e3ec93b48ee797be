using System.Collections.Concurrent;
using System.Diagnostics;

namespace FlashDmAttn;

// Which backend a call runs on: AttentionOptions.Backend, else FLASHDMATTN_BACKEND, else Auto. Auto's answer is
// decided once per device and process (the native library loads once per process), and a fallback is logged once,
// through System.Diagnostics.Trace.
internal static class BackendSelector
{
    public const string BackendVariable = "FLASHDMATTN_BACKEND";

    private static readonly ConcurrentDictionary<int, Lazy<BackendSelection>> AutoSelections = new();

    // A backend chosen without a fallback, shared by every call rather than made by each.
    private static readonly BackendSelection NativeSelection = new(FlashDmAttnBackend.Native, null);
    private static readonly BackendSelection NvrtcSelection = new(FlashDmAttnBackend.Nvrtc, null);

    // name: the argument the option came in, for the refusal of an undefined value.
    public static FlashDmAttnBackend Requested(FlashDmAttnBackend? option, string name = "options")
    {
        if (option is { } requested)
        {
            if (!Enum.IsDefined(requested))
                throw new ArgumentOutOfRangeException(name, $"{(name == "options" ? "options.Backend" : name)} must be Auto, Native or Nvrtc; got {requested}.");
            return requested;
        }

        // Read on every call, since the variable may change while the process runs. Compared in place, ignoring case,
        // rather than through a lower-case copy: no copy, and the same answers for every value (ToLowerInvariant and
        // OrdinalIgnoreCase agree on every character against the letters of these three words).
        string? value = Environment.GetEnvironmentVariable(BackendVariable);
        ReadOnlySpan<char> text = value.AsSpan().Trim();
        if (text.IsEmpty || text.Equals("auto", StringComparison.OrdinalIgnoreCase))
            return FlashDmAttnBackend.Auto;
        if (text.Equals("native", StringComparison.OrdinalIgnoreCase))
            return FlashDmAttnBackend.Native;
        if (text.Equals("nvrtc", StringComparison.OrdinalIgnoreCase))
            return FlashDmAttnBackend.Nvrtc;
        throw new InvalidOperationException($"{BackendVariable} must be Auto, Native or Nvrtc (any case), or unset; got '{value}'.");
    }

    // The backend calls on a device run on: throws, with the reasons, when none is usable.
    public static IAttentionBackend Select(FlashDmAttnBackend? option, int device, string name = "options") =>
        Of(Selection(option, device, name).Backend);

    // Which backend calls on a device run on, and why it is not the native library when it is not.
    public static BackendSelection Selection(FlashDmAttnBackend? option, int device, string name = "options")
    {
        switch (Requested(option, name))
        {
            case FlashDmAttnBackend.Native:
                FlashDmAttnLibrary.EnsureSupportsDevice(device);
                return NativeSelection;
            case FlashDmAttnBackend.Nvrtc:
                NvrtcCompiler.EnsureLoaded();
                _ = KernelModules.TargetOf(device);
                return NvrtcSelection;
            default:
                Lazy<BackendSelection> selection = AutoSelections.GetOrAdd(device, d => new Lazy<BackendSelection>(() => SelectAuto(d)));
                try
                {
                    return selection.Value;
                }
                catch
                {
                    AutoSelections.TryRemove(new(device, selection)); // a failure to be reported again, not remembered
                    throw;
                }
        }
    }

    // For host-side queries (tile shape, scratch size), which need no device: the native library's answers where it
    // loads, else the NVRTC backend's (the same numbers: NvrtcMirrorTests).
    public static IAttentionBackend SelectForHostQuery(FlashDmAttnBackend? option)
    {
        FlashDmAttnBackend requested = Requested(option, "backend");
        if (requested != FlashDmAttnBackend.Auto)
            return Of(requested);
        try
        {
            FlashDmAttnLibrary.EnsureLoaded();
            return NativeBackend.Instance;
        }
        catch (NativeLibraryException)
        {
            return NvrtcBackend.Instance;
        }
    }

    // The implementation of a chosen backend (Native or Nvrtc).
    private static IAttentionBackend Of(FlashDmAttnBackend backend) =>
        backend == FlashDmAttnBackend.Nvrtc ? NvrtcBackend.Instance : NativeBackend.Instance;

    private static BackendSelection SelectAuto(int device)
    {
        string reason;
        try
        {
            FlashDmAttnLibrary.EnsureSupportsDevice(device);
            return NativeSelection;
        }
        catch (NativeLibraryException e)
        {
            reason = e.Message;
        }

        try
        {
            NvrtcCompiler.EnsureLoaded();
            CompileTarget target = KernelModules.TargetOf(device);
            Trace.TraceInformation($"FlashDmAttn: device {device}: using the NVRTC backend ({NvrtcCompiler.Location}, NVRTC {NvrtcCompiler.Version}, {target}): {reason}");
        }
        catch (NativeLibraryException e)
        {
            throw new NativeLibraryException($"Neither backend is usable on device {device}. Native: {reason} NVRTC: {e.Message}", e);
        }

        return new BackendSelection(FlashDmAttnBackend.Nvrtc, reason);
    }
}

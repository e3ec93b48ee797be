using System.Collections.Concurrent;

namespace FlashDmAttn;

// Kernels of the NVRTC backend loaded into CUDA contexts: one module per (context, variant), loaded when a call on
// that context first needs it and kept for the life of the context (a module is small, and a destroyed context takes
// its modules with it). A device's primary context, once it holds modules, is retained for the life of the process,
// as the CUDA runtime retains it for the native library: otherwise the Span API's release at the end of each call
// would destroy it, and every call would create a context and load its modules anew.
internal static class KernelModules
{
    private static readonly Lock Gate = new();
    private static readonly Dictionary<(ulong Context, KernelVariant Variant), nint> Functions = [];
    private static readonly HashSet<ulong> SeenContexts = [];
    private static readonly ConcurrentDictionary<int, CudaPrimaryContext> RetainedPrimaryContexts = new();
    private static readonly ConcurrentDictionary<int, (int Major, int Minor)> ComputeCapabilities = new();
    private static readonly ConcurrentDictionary<int, CompileTarget> Targets = new();

    // The device's primary context, retained for the life of the process: where a device-pointer call runs when the
    // caller has no current context, as the CUDA runtime would run it. Threads racing to retain it first keep one
    // reference and give the others back (GetOrAdd's factory could run on each and drop all but one unreleased).
    public static CudaPrimaryContext PrimaryContext(int device)
    {
        if (RetainedPrimaryContexts.TryGetValue(device, out CudaPrimaryContext? retained))
            return retained;
        CudaPrimaryContext context = CudaPrimaryContext.Retain(device);
        if (RetainedPrimaryContexts.TryAdd(device, context))
            return context;
        context.Dispose();
        return RetainedPrimaryContexts[device];
    }

    // A device's compute capability, asked of the driver once per process.
    public static (int Major, int Minor) ComputeCapability(int device) => ComputeCapabilities.GetOrAdd(device, CudaDriver.ComputeCapability);

    // What NVRTC compiles for on a device: its exact architecture where NVRTC knows it.
    public static CompileTarget TargetOf(int device) => Targets.GetOrAdd(device, d =>
    {
        (int major, int minor) = ComputeCapability(d);
        return CompileTarget.ForDevice(major, minor, NvrtcCompiler.SupportedArchitectures);
    });

    // What NVRTC compiles a variant for on a device: sm_90a for the arch-specific ones (wgmma), else TargetOf(device).
    public static CompileTarget TargetOf(KernelVariant variant, int device) => variant.Sm90a ? CompileTarget.Sm90a : TargetOf(device);

    // The kernel of a variant in the current context, which belongs to `device`; dynamicSharedBytes is the most the
    // launches will ask for.
    public static nint GetFunction(KernelVariant variant, int device, int dynamicSharedBytes)
    {
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuCtxGetCurrent(out nint context));
        ulong contextKey = KeyOf(context);
        lock (Gate)
        {
            if (Functions.TryGetValue((contextKey, variant), out nint function))
                return function;
        }

        // Compiled (or read from disk) outside the lock: seconds, and other variants need not wait for it.
        KernelImage image = NvrtcKernelBuilder.Default.GetImage(variant, TargetOf(variant, device));
        lock (Gate)
        {
            if (Functions.TryGetValue((contextKey, variant), out nint function))
                return function;
            function = Load(image, dynamicSharedBytes);
            if (SeenContexts.Add(contextKey))
                RetainIfPrimary(context, device);
            Functions.Add((contextKey, variant), function);
            return function;
        }
    }

    // Loads an image into the current context and returns its kernel.
    public static unsafe nint Load(KernelImage image, int dynamicSharedBytes)
    {
        nint module;
        fixed (byte* bytes = image.Bytes)
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuModuleLoadData(out module, bytes));
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuModuleGetFunction(out nint function, module, image.LoweredName));
        if (dynamicSharedBytes > 0)
        {
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuFuncSetAttribute(
                function, Interop.Cuda.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, dynamicSharedBytes));
        }

        return function;
    }

    // A context's identity for the life of the process (cuCtxGetId, CUDA 12 and newer); before CUDA 12, its handle,
    // which a context created after this one's destruction may reuse.
    private static ulong KeyOf(nint context)
    {
        try
        {
            if (Interop.Cuda.cuCtxGetId(context, out ulong id) == Interop.Cuda.CUDA_SUCCESS)
                return id;
        }
        catch (EntryPointNotFoundException)
        {
        }

        return unchecked((ulong)context);
    }

    private static void RetainIfPrimary(nint context, int device)
    {
        // Only an active primary context can be the current one; retaining an inactive one would create it.
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuDeviceGet(out int handle, device));
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuDevicePrimaryCtxGetState(handle, out _, out int active));
        if (active == 0 || RetainedPrimaryContexts.ContainsKey(device))
            return;
        CudaPrimaryContext primary = CudaPrimaryContext.Retain(device);
        if (primary.DangerousGetHandle() != context || !RetainedPrimaryContexts.TryAdd(device, primary))
            primary.Dispose();
    }
}

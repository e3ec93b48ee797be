namespace FlashDmAttn;

/// <summary>
/// Dynamic Mask Attention forward pass on CUDA: softmax attention restricted by an optional mask and shifted by an
/// optional bias, skipping whole tiles the mask leaves empty. Two entry points: device pointers for engines that own
/// their memory, context and stream, and host spans that copy through the GPU for simple use.
/// </summary>
public static partial class DynamicMaskAttention
{
    /// <summary>
    /// Runs the forward pass on tensors already in GPU memory, asynchronously on <paramref name="stream"/>: no
    /// allocation, no copy, no synchronization, and no context change (the caller's current context is used).
    /// </summary>
    /// <param name="args">The tensors and their sizes.</param>
    /// <param name="options">Scale, softcap, causality and backend; <c>null</c> for the defaults.</param>
    /// <param name="stream">A <c>CUstream</c>/<c>cudaStream_t</c>; 0 for the legacy default stream.</param>
    /// <exception cref="ArgumentNullException"><paramref name="args"/> is null, or a required pointer is 0.</exception>
    /// <exception cref="ArgumentException">
    /// A shape, type, option, alignment, stride or overlap is invalid, or Q is not CUDA device memory.
    /// </exception>
    /// <exception cref="NativeLibraryException">
    /// The CUDA driver is missing, or no backend is usable: the native library is missing, incompatible or has no code
    /// for the GPU, and NVRTC is missing or cannot compile for it (or the one forced is unusable).
    /// </exception>
    /// <exception cref="CudaException">A CUDA driver call failed (with the NVRTC backend, the launch too).</exception>
    /// <exception cref="FlashDmAttnException">The backend refused the call, or the native library's launch failed.</exception>
    /// <exception cref="KernelCompilationException">NVRTC failed to compile a kernel.</exception>
    /// <exception cref="InvalidOperationException"><c>FLASHDMATTN_BACKEND</c> holds an unknown value.</exception>
    public static void Forward(DeviceForwardArgs args, AttentionOptions? options = null, nint stream = 0)
    {
        ArgumentValidation.ValidateDeviceForward(args, options);
        int device = CudaDriver.DeviceOf(args.Q.Pointer, "args.Q");
        BackendSelector.Select(options?.Backend, device).Forward(args, options ?? AttentionOptions.Default, stream, device);
    }

    /// <summary>
    /// Runs the forward pass on host tensors, synchronously: copies the inputs to GPU <paramref name="device"/>,
    /// runs, and copies the output (and the log-sum-exp if requested) back. Tensors are (B, L, H, D) contiguous.
    /// On failure nothing is written to <paramref name="output"/> or <paramref name="lse"/>.
    /// </summary>
    /// <typeparam name="T"><see cref="Half"/> or <see cref="BFloat16"/>.</typeparam>
    /// <param name="shape">Batch, sequence lengths, head counts and head dimension.</param>
    /// <param name="q">Queries, exactly B * Lq * Hq * D elements.</param>
    /// <param name="k">Keys, exactly B * Lk * Hkv * D elements.</param>
    /// <param name="v">Values, exactly B * Lk * Hkv * D elements.</param>
    /// <param name="output">Receives the output, exactly B * Lq * Hq * D elements; must not overlap any other argument.</param>
    /// <param name="options">Scale, softcap, causality and backend; <c>null</c> for the defaults.</param>
    /// <param name="mask">Optional mask; <c>default</c> for none.</param>
    /// <param name="bias">Optional bias; <c>default</c> for none.</param>
    /// <param name="lse">Empty, or receives the log-sum-exp per (B, Hq, Lq): exactly B * Hq * Lq elements.</param>
    /// <param name="device">CUDA device ordinal.</param>
    /// <param name="lifetimes">
    /// Optional key lifetimes instead of a mask; <c>default</c> for none. Every pair must satisfy
    /// 0 &lt;= First &lt;= End &lt;= SeqLenQ.
    /// </param>
    /// <returns>The numbers of tiles computed and skipped, and of visible pairs.</returns>
    /// <exception cref="ArgumentException">An argument is invalid (the message names it), or <typeparamref name="T"/> is not supported.</exception>
    /// <exception cref="NativeLibraryException">
    /// The CUDA driver is missing, or no backend is usable: the native library is missing, incompatible or has no code
    /// for the GPU, and NVRTC is missing or cannot compile for it (or the one forced is unusable).
    /// </exception>
    /// <exception cref="CudaException">A CUDA driver call (allocation, copy, synchronization; with NVRTC, the launch) failed.</exception>
    /// <exception cref="FlashDmAttnException">The backend refused the call, or the native library's kernel failed.</exception>
    /// <exception cref="KernelCompilationException">NVRTC failed to compile a kernel.</exception>
    /// <exception cref="InvalidOperationException"><c>FLASHDMATTN_BACKEND</c> holds an unknown value.</exception>
    public static ForwardStats Forward<T>(
        AttentionShape shape,
        ReadOnlySpan<T> q,
        ReadOnlySpan<T> k,
        ReadOnlySpan<T> v,
        Span<T> output,
        AttentionOptions? options = null,
        MaskInput mask = default,
        BiasInput bias = default,
        Span<float> lse = default,
        int device = 0,
        LifetimesInput lifetimes = default)
        where T : unmanaged
    {
        ScalarType dtype = ArgumentValidation.ScalarTypeOf<T>();
        ArgumentValidation.ValidateHostForward<T, float>(shape, q, k, v, output, options, mask.Operand, lifetimes.Operand, bias.Operand, lse);
        IAttentionBackend backend = SelectOnDevice(device, options?.Backend, nameof(options));

        using HostCallStaging staging = HostCallStaging.Begin(device, shape);
        StagedInputs inputs = staging.UploadInputs(q, k, v, mask, lifetimes, bias);
        DeviceBuffer outputBuffer = staging.Allocate<T>(output.Length);
        DeviceBuffer? lseBuffer = lse.IsEmpty ? null : staging.Allocate<float>(lse.Length);
        var args = new DeviceForwardArgs
        {
            Shape = shape,
            DType = dtype,
            Q = inputs.Q,
            K = inputs.K,
            V = inputs.V,
            Output = staging.QueryShaped(outputBuffer),
            Mask = inputs.Mask,
            Lifetimes = inputs.Lifetimes,
            Bias = inputs.Bias,
            Lse = lseBuffer?.Pointer ?? 0,
            TileStats = staging.TileStats,
        };
        backend.Forward(args, options ?? AttentionOptions.Default, stream: 0, device);

        ForwardStats stats = staging.SynchronizeAndReadForwardStats();
        outputBuffer.CopyTo(output);
        lseBuffer?.CopyTo(lse);
        return stats;
    }

    /// <summary>
    /// The (query rows, key columns) tile the forward kernel uses for a head dimension and element type on the device a
    /// call would run on now (the native library: the runtime's current device; the NVRTC backend: the current
    /// context's device, else device 0): 128x64 at D = 128 on compute capability 9.0, where the Hopper forward runs
    /// (README, "Hopper forward"), else the same on every device. Needs no GPU: without one, the mma.sync tile.
    /// </summary>
    /// <param name="headDim">32, 64, 96, 128, 192 or 256.</param>
    /// <param name="dtype"><see cref="ScalarType.Float16"/> or <see cref="ScalarType.BFloat16"/>.</param>
    /// <param name="backend">
    /// The backend to ask; <c>null</c> takes <c>FLASHDMATTN_BACKEND</c>, else Auto: the native library where it
    /// loads, else the NVRTC backend's table (which needs no library).
    /// </param>
    /// <returns>BlockM query rows by BlockN key columns.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The head dimension, the type or the backend is not supported.</exception>
    /// <exception cref="NativeLibraryException">The native library, forced, is missing or incompatible.</exception>
    /// <exception cref="FlashDmAttnException">The native library refused the query.</exception>
    /// <exception cref="InvalidOperationException"><c>FLASHDMATTN_BACKEND</c> holds an unknown value.</exception>
    public static (int BlockM, int BlockN) ForwardTileShape(int headDim, ScalarType dtype, FlashDmAttnBackend? backend = null)
    {
        ArgumentValidation.ValidateTileShapeQuery(headDim, dtype);
        return BackendSelector.SelectForHostQuery(backend).ForwardTileShape(headDim, dtype);
    }

    /// <summary>
    /// Bytes of device scratch a forward call of this shape, type and mask needs (0 without a mask unless the call is
    /// split over keys, see README "Split-KV"): the least
    /// <see cref="DeviceForwardArgs.WorkspaceBytes"/> a caller-provided <see cref="DeviceForwardArgs.Workspace"/> may
    /// have.
    /// </summary>
    /// <param name="shape">Batch, sequence lengths, head counts and head dimension.</param>
    /// <param name="dtype"><see cref="ScalarType.Float16"/> or <see cref="ScalarType.BFloat16"/>.</param>
    /// <param name="mask">The logical shape of the call's mask; <c>null</c> for none.</param>
    /// <param name="backend">
    /// The backend to ask; <c>null</c> takes <c>FLASHDMATTN_BACKEND</c>, else Auto: the native library where it
    /// loads, else the NVRTC backend's plan (which needs no library). Every backend answers the same.
    /// </param>
    /// <returns>The scratch size in bytes.</returns>
    /// <exception cref="ArgumentException">The shape, the type, the mask shape or the backend is invalid (the message names it).</exception>
    /// <exception cref="NativeLibraryException">The native library, forced, is missing or incompatible.</exception>
    /// <exception cref="FlashDmAttnException">The native library refused the query.</exception>
    /// <exception cref="InvalidOperationException"><c>FLASHDMATTN_BACKEND</c> holds an unknown value.</exception>
    public static long ForwardWorkspaceSize(AttentionShape shape, ScalarType dtype, BroadcastShape? mask, FlashDmAttnBackend? backend = null)
    {
        ArgumentValidation.ValidateForwardWorkspaceSize(shape, dtype, mask);
        return BackendSelector.SelectForHostQuery(backend).ForwardWorkspaceSize(shape, dtype, mask);
    }

    /// <summary>
    /// The backend forward calls on <paramref name="device"/> run with when they ask for <paramref name="requested"/>,
    /// and, when Auto fell back to NVRTC, why: the native library is missing, fails to load, has another ABI version or
    /// holds no code for the device's architecture. Auto decides once per device and process, and logs a fallback once
    /// through <see cref="System.Diagnostics.Trace"/>.
    /// </summary>
    /// <param name="device">CUDA device ordinal.</param>
    /// <param name="requested">As <see cref="AttentionOptions.Backend"/>: <c>null</c> takes <c>FLASHDMATTN_BACKEND</c>, else Auto.</param>
    /// <returns>The backend (Native or Nvrtc) and the fallback reason.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="device"/> or <paramref name="requested"/> is out of range.</exception>
    /// <exception cref="NativeLibraryException">The CUDA driver is missing, or no backend (or not the one forced) is usable.</exception>
    /// <exception cref="CudaException">The CUDA driver failed to initialize.</exception>
    /// <exception cref="InvalidOperationException"><c>FLASHDMATTN_BACKEND</c> holds an unknown value.</exception>
    public static BackendSelection SelectBackend(int device = 0, FlashDmAttnBackend? requested = null)
    {
        ThrowIfNoSuchDevice(device);
        return BackendSelector.Selection(requested, device, nameof(requested));
    }

    /// <summary>
    /// Whether the CUDA driver loads, initializes and reports at least one device; never throws.
    /// </summary>
    /// <param name="reason">Why not (or, when available, how many devices were found).</param>
    /// <returns>True when GPU calls can run.</returns>
    public static bool IsCudaAvailable(out string reason)
    {
        try
        {
            int count = CudaDriver.DeviceCount();
            reason = count == 0 ? "The CUDA driver reports no device." : $"{count} CUDA device(s) found.";
            return count > 0;
        }
        catch (Exception e) when (e is NativeLibraryException or CudaException)
        {
            reason = e.Message;
            return false;
        }
    }

    // The device check of every entry point taking an ordinal, then the backend for that device.
    private static IAttentionBackend SelectOnDevice(int device, FlashDmAttnBackend? requested, string requestedName)
    {
        ThrowIfNoSuchDevice(device);
        return BackendSelector.Select(requested, device, requestedName);
    }

    private static void ThrowIfNoSuchDevice(int device)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(device);
        int deviceCount = CudaDriver.DeviceCount();
        if (device >= deviceCount)
            throw new ArgumentOutOfRangeException(nameof(device), $"device must be less than the device count ({deviceCount}); got {device}.");
    }
}

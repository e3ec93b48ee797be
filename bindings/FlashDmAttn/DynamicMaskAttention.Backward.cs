namespace FlashDmAttn;

// The backward pass: gradients of a loss with respect to Q, K, V and the bias, given the gradient with respect to the
// output and the forward's output and log-sum-exp. It runs on the backend the options choose, as the forward does.
public static partial class DynamicMaskAttention
{
    /// <summary>
    /// Runs the backward pass on tensors already in GPU memory, asynchronously on <paramref name="stream"/>: writes
    /// dL/dQ, dL/dK, dL/dV and, when asked, dL/dBias, given dL/dO and the forward call's tensors, output and
    /// log-sum-exp. No allocation (unless <see cref="DeviceBackwardArgs.Workspace"/> is 0), no copy, no
    /// synchronization, no context change (the caller's current context is used).
    /// </summary>
    /// <param name="args">The forward call's tensors and the gradients.</param>
    /// <param name="options">The forward call's scale, softcap and causality, and the backend; <c>null</c> for the defaults.</param>
    /// <param name="deterministic">
    /// True: identical bits on every run (no order-dependent atomics). False (the default) may be faster, and the
    /// low bits of dQ and dBias may change from run to run.
    /// </param>
    /// <param name="stream">A <c>CUstream</c>/<c>cudaStream_t</c>; 0 for the legacy default stream.</param>
    /// <exception cref="ArgumentNullException"><paramref name="args"/> is null, or a required pointer (LSE included) is 0.</exception>
    /// <exception cref="ArgumentException">
    /// A shape, type, option, alignment, stride or overlap is invalid, the bias gradient does not match the bias, or
    /// Q is not CUDA device memory.
    /// </exception>
    /// <exception cref="NativeLibraryException">
    /// The CUDA driver is missing, or no backend is usable: the native library is missing, incompatible or has no code
    /// for the GPU, and NVRTC is missing or cannot compile for it (or the one forced is unusable).
    /// </exception>
    /// <exception cref="CudaException">A CUDA driver call failed (with the NVRTC backend, the launch too).</exception>
    /// <exception cref="FlashDmAttnException">The backend refused the call, or the native library's launch failed.</exception>
    /// <exception cref="KernelCompilationException">NVRTC failed to compile a kernel.</exception>
    /// <exception cref="InvalidOperationException"><c>FLASHDMATTN_BACKEND</c> holds an unknown value.</exception>
    public static void Backward(DeviceBackwardArgs args, AttentionOptions? options = null, bool deterministic = false, nint stream = 0)
    {
        ArgumentValidation.ValidateDeviceBackward(args, options);
        int device = CudaDriver.DeviceOf(args.Forward.Q.Pointer, "args.Forward.Q");
        BackendSelector.Select(options?.Backend, device).Backward(args, options ?? AttentionOptions.Default, deterministic, stream, device);
    }

    /// <summary>
    /// Runs the backward pass on host tensors, synchronously: copies the inputs to GPU <paramref name="device"/>,
    /// runs, and copies the gradients back. Tensors are (B, L, H, D) contiguous. dK and dV are summed over the query
    /// heads of each group; dBias has the bias's shape, summed over every dimension the bias is broadcast along. On
    /// failure nothing is written to <paramref name="dq"/>, <paramref name="dk"/>, <paramref name="dv"/> or
    /// <paramref name="dBias"/>.
    /// </summary>
    /// <typeparam name="T"><see cref="Half"/> or <see cref="BFloat16"/>.</typeparam>
    /// <param name="shape">Batch, sequence lengths, head counts and head dimension.</param>
    /// <param name="q">Queries, exactly B * Lq * Hq * D elements.</param>
    /// <param name="k">Keys, exactly B * Lk * Hkv * D elements.</param>
    /// <param name="v">Values, exactly B * Lk * Hkv * D elements.</param>
    /// <param name="output">The forward call's output, exactly B * Lq * Hq * D elements.</param>
    /// <param name="lse">The forward call's log-sum-exp, exactly B * Hq * Lq elements.</param>
    /// <param name="dOutput">dL/dO, exactly B * Lq * Hq * D elements.</param>
    /// <param name="dq">Receives dL/dQ, exactly B * Lq * Hq * D elements.</param>
    /// <param name="dk">Receives dL/dK, exactly B * Lk * Hkv * D elements.</param>
    /// <param name="dv">Receives dL/dV, exactly B * Lk * Hkv * D elements.</param>
    /// <param name="options">The forward call's scale, softcap and causality, and the backend; <c>null</c> for the defaults.</param>
    /// <param name="mask">The forward call's mask; <c>default</c> for none.</param>
    /// <param name="bias">The forward call's bias; <c>default</c> for none.</param>
    /// <param name="dBias">
    /// Optional, only with a bias: receives dL/dBias, as many values as the bias, in float or in the bias's type;
    /// <c>default</c> for none.
    /// </param>
    /// <param name="deterministic">True: identical bits on every run. False (the default) may be faster.</param>
    /// <param name="device">CUDA device ordinal.</param>
    /// <param name="lifetimes">The forward call's key lifetimes; <c>default</c> for none.</param>
    /// <returns>The numbers of backward tiles (<see cref="BackwardTileShape"/>) computed and skipped.</returns>
    /// <exception cref="ArgumentException">An argument is invalid (the message names it), or <typeparamref name="T"/> is not supported.</exception>
    /// <exception cref="NativeLibraryException">
    /// The CUDA driver is missing, or no backend is usable: the native library is missing, incompatible or has no code
    /// for the GPU, and NVRTC is missing or cannot compile for it (or the one forced is unusable).
    /// </exception>
    /// <exception cref="CudaException">A CUDA driver call (allocation, copy, synchronization; with NVRTC, the launch) failed.</exception>
    /// <exception cref="FlashDmAttnException">The backend refused the call, or the native library's kernel failed.</exception>
    /// <exception cref="KernelCompilationException">NVRTC failed to compile a kernel.</exception>
    /// <exception cref="InvalidOperationException"><c>FLASHDMATTN_BACKEND</c> holds an unknown value.</exception>
    public static TileStats Backward<T>(
        AttentionShape shape,
        ReadOnlySpan<T> q,
        ReadOnlySpan<T> k,
        ReadOnlySpan<T> v,
        ReadOnlySpan<T> output,
        ReadOnlySpan<float> lse,
        ReadOnlySpan<T> dOutput,
        Span<T> dq,
        Span<T> dk,
        Span<T> dv,
        AttentionOptions? options = null,
        MaskInput mask = default,
        BiasInput bias = default,
        BiasGradientOutput dBias = default,
        bool deterministic = false,
        int device = 0,
        LifetimesInput lifetimes = default)
        where T : unmanaged
    {
        ScalarType dtype = ArgumentValidation.ScalarTypeOf<T>();
        ArgumentValidation.ValidateHostBackward<T>(shape, q, k, v, output, lse, dOutput, dq, dk, dv, options, mask, lifetimes, bias, dBias);
        IAttentionBackend backend = SelectOnDevice(device, options?.Backend, nameof(options));

        using HostCallStaging staging = HostCallStaging.Begin(device, shape);
        StagedInputs inputs = staging.UploadInputs(q, k, v, mask, lifetimes, bias);
        DeviceBuffer dqBuffer = staging.Allocate<T>(dq.Length);
        DeviceBuffer dkBuffer = staging.Allocate<T>(dk.Length);
        DeviceBuffer dvBuffer = staging.Allocate<T>(dv.Length);
        DeviceBuffer? dBiasBuffer = dBias.IsPresent ? staging.Allocate((long)dBias.Length * dBias.DType.ElementSize()) : null;
        var args = new DeviceBackwardArgs
        {
            Forward = new DeviceForwardArgs
            {
                Shape = shape,
                DType = dtype,
                Q = inputs.Q,
                K = inputs.K,
                V = inputs.V,
                Output = staging.QueryShaped(staging.Upload(output)),
                Lse = staging.Upload(lse).Pointer,
                Mask = inputs.Mask,
                Lifetimes = inputs.Lifetimes,
                Bias = inputs.Bias,
            },
            DOutput = staging.QueryShaped(staging.Upload(dOutput)),
            DQ = staging.QueryShaped(dqBuffer),
            DK = staging.KeyShaped(dkBuffer),
            DV = staging.KeyShaped(dvBuffer),
            DBias = dBiasBuffer is null ? null : staging.Broadcast(dBiasBuffer, dBias.DType, bias.Shape),
            TileStats = staging.TileStats,
        };
        backend.Backward(args, options ?? AttentionOptions.Default, deterministic, stream: 0, device);

        TileStats tileStats = staging.SynchronizeAndReadTileStats();
        dqBuffer.CopyTo(dq);
        dkBuffer.CopyTo(dk);
        dvBuffer.CopyTo(dv);
        switch (dBias.DType)
        {
            case ScalarType.Float32:
                dBiasBuffer?.CopyTo(dBias.As<float>());
                break;
            case ScalarType.Float16:
                dBiasBuffer?.CopyTo(dBias.As<Half>());
                break;
            default:
                dBiasBuffer?.CopyTo(dBias.As<BFloat16>());
                break;
        }

        return tileStats;
    }

    /// <summary>
    /// The (query rows, key columns) tile the backward kernels use for a head dimension and element type: the unit of
    /// the backward's tile statistics. Needs no GPU; every backend answers the same.
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
    public static (int BlockM, int BlockN) BackwardTileShape(int headDim, ScalarType dtype, FlashDmAttnBackend? backend = null)
    {
        ArgumentValidation.ValidateTileShapeQuery(headDim, dtype);
        return BackendSelector.SelectForHostQuery(backend).BackwardTileShape(headDim, dtype);
    }

    /// <summary>
    /// Bytes of device scratch a backward call needs: the least <see cref="DeviceBackwardArgs.WorkspaceBytes"/> a
    /// caller-provided <see cref="DeviceBackwardArgs.Workspace"/> may have. Every backward call needs some.
    /// </summary>
    /// <param name="shape">Batch, sequence lengths, head counts and head dimension.</param>
    /// <param name="dtype"><see cref="ScalarType.Float16"/> or <see cref="ScalarType.BFloat16"/>.</param>
    /// <param name="mask">The logical shape of the call's mask; <c>null</c> for none.</param>
    /// <param name="biasGradient">
    /// The logical shape of the bias when the call asks for its gradient (<see cref="DeviceBackwardArgs.DBias"/> set);
    /// <c>null</c> otherwise.
    /// </param>
    /// <param name="deterministic">The call's mode: the default mode needs more scratch.</param>
    /// <param name="backend">
    /// The backend to ask; <c>null</c> takes <c>FLASHDMATTN_BACKEND</c>, else Auto: the native library where it
    /// loads, else the NVRTC backend's plan (which needs no library). Every backend answers the same.
    /// </param>
    /// <param name="lifetimes">
    /// Whether the call has key lifetimes (<see cref="DeviceForwardArgs.Lifetimes"/> set; then <paramref name="mask"/> is
    /// <c>null</c>): in the default mode their dK and dV are summed in fp32 scratch, (B, Lk, Hkv, D) each.
    /// </param>
    /// <returns>The scratch size in bytes.</returns>
    /// <exception cref="ArgumentException">The shape, the type, the mask shape, the bias shape or the backend is invalid, or a mask is given with lifetimes (the message names it).</exception>
    /// <exception cref="NativeLibraryException">The native library, forced, is missing or incompatible.</exception>
    /// <exception cref="FlashDmAttnException">The native library refused the query.</exception>
    /// <exception cref="InvalidOperationException"><c>FLASHDMATTN_BACKEND</c> holds an unknown value.</exception>
    public static long BackwardWorkspaceSize(
        AttentionShape shape, ScalarType dtype, BroadcastShape? mask, BroadcastShape? biasGradient, bool deterministic = false,
        FlashDmAttnBackend? backend = null, bool lifetimes = false)
    {
        ArgumentValidation.ValidateBackwardWorkspaceSize(shape, dtype, mask, biasGradient, lifetimes);
        return BackendSelector.SelectForHostQuery(backend).BackwardWorkspaceSize(shape, dtype, mask, biasGradient, deterministic, lifetimes);
    }
}

namespace FlashDmAttn;

// The top-k lifetime builder: DMA's top-k mask as key lifetimes, in O(Lk) memory. The native library alone implements
// it (the NVRTC backend has no builder), whatever backend the attention calls use.
public static partial class DynamicMaskAttention
{
    private const string TopKFeature = "The top-k lifetime builder";

    /// <summary>
    /// Builds key lifetimes from scores on the GPU, asynchronously on <paramref name="stream"/>, in the caller's current
    /// context: <see cref="KeySelection.TopK"/> with <see cref="TopKProblem.Causal"/> gives exactly the dense per-query
    /// top-w mask (first_j = max(0, j - (Lk - Lq)), end_j = the first query at which w eligible keys outrank j, Lq if
    /// none, first_j when j is never selected); without it one selection for every query ({0, Lq} or {0, 0});
    /// <see cref="KeySelection.Positive"/> selects the keys whose score is above 0. Higher score first, equal scores
    /// lower index first; -inf and NaN scores are never selected.
    /// </summary>
    /// <param name="args">Sizes, selection, scores and the outputs.</param>
    /// <param name="stream">A <c>CUstream</c>/<c>cudaStream_t</c>; 0 for the legacy default stream.</param>
    /// <exception cref="ArgumentNullException"><paramref name="args"/> is null, or a required pointer is 0.</exception>
    /// <exception cref="ArgumentException">A size, selection, shape, type, alignment, stride or overlap is invalid.</exception>
    /// <exception cref="NativeLibraryException">The native library is missing, incompatible or has no code for the GPU.</exception>
    /// <exception cref="FlashDmAttnException">The native library refused the call, or its launch failed.</exception>
    public static void TopKLifetimes(DeviceTopKArgs args, nint stream = 0)
    {
        ArgumentValidation.ValidateDeviceTopK(args);
        int device = CudaDriver.DeviceOf(args.Scores.Pointer, "args.Scores");
        FlashDmAttnLibrary.RequireFor(TopKFeature, device);
        NativeBackend.TopKLifetimes(args, stream);
    }

    /// <summary>
    /// Builds key lifetimes from host scores, synchronously on GPU <paramref name="device"/> (see
    /// <see cref="TopKLifetimes(DeviceTopKArgs, nint)"/>): the lifetimes to pass, as a <see cref="LifetimesInput"/> of
    /// (B, H) planes, to the attention calls.
    /// </summary>
    /// <typeparam name="TScore"><see cref="float"/>, <see cref="Half"/> or <see cref="BFloat16"/>.</typeparam>
    /// <param name="problem">Sizes and selection.</param>
    /// <param name="scores">(B, H, Lk) scores, exactly B * H * Lk values.</param>
    /// <param name="survivors">
    /// Empty, or receives (B, H, w): the keys alive after the last query in increasing index order, then -1; exactly
    /// B * H * w elements.
    /// </param>
    /// <param name="device">CUDA device ordinal.</param>
    /// <returns>(B, H, Lk) lifetimes.</returns>
    /// <exception cref="ArgumentException">An argument is invalid (the message names it), or <typeparamref name="TScore"/> is not supported.</exception>
    /// <exception cref="NativeLibraryException">The native library is missing, incompatible or has no code for the GPU.</exception>
    /// <exception cref="CudaException">A CUDA driver call (allocation, copy, synchronization) failed.</exception>
    /// <exception cref="FlashDmAttnException">The native library refused the call, or its kernel failed.</exception>
    public static KeyLifetime[] TopKLifetimes<TScore>(TopKProblem problem, ReadOnlySpan<TScore> scores, Span<int> survivors = default, int device = 0)
        where TScore : unmanaged
    {
        ScalarType scoresType = ArgumentValidation.ScoreTypeOf<TScore>();
        ArgumentValidation.ValidateHostTopK(problem, scores, survivors);
        ThrowIfNoSuchDevice(device);
        FlashDmAttnLibrary.RequireFor(TopKFeature, device);

        var lifetimes = new KeyLifetime[problem.LifetimeElements];
        using CudaPrimaryContext context = CudaPrimaryContext.Retain(device);
        using CudaContextScope current = context.Push();
        using DeviceBuffer scoresBuffer = DeviceBuffer.FromHost(context, scores);
        using DeviceBuffer lifetimesBuffer = DeviceBuffer.Allocate(context, problem.LifetimeElements * DeviceLifetimes.PairBytes);
        using DeviceBuffer? survivorsBuffer = survivors.IsEmpty ? null : DeviceBuffer.Allocate(context, (long)survivors.Length * sizeof(int));
        NativeBackend.TopKLifetimes(new DeviceTopKArgs
        {
            Problem = problem,
            Scores = DeviceBroadcastTensor.Contiguous(scoresBuffer.Pointer, scoresType, new BroadcastShape(problem.Batch, problem.Heads, 1), problem.SeqLenK),
            Lifetimes = lifetimesBuffer.Pointer,
            Survivors = survivorsBuffer?.Pointer ?? 0,
        }, stream: 0);
        CudaDriver.Synchronize();
        lifetimesBuffer.CopyTo<KeyLifetime>(lifetimes);
        survivorsBuffer?.CopyTo(survivors);
        return lifetimes;
    }

    /// <summary>
    /// Bytes of device scratch a build of this problem and score type needs: the least
    /// <see cref="DeviceTopKArgs.WorkspaceBytes"/> a caller-provided <see cref="DeviceTopKArgs.Workspace"/> may have.
    /// </summary>
    /// <param name="problem">Sizes and selection.</param>
    /// <param name="scoresType"><see cref="ScalarType.Float16"/>, <see cref="ScalarType.BFloat16"/> or <see cref="ScalarType.Float32"/>.</param>
    /// <returns>The scratch size in bytes.</returns>
    /// <exception cref="ArgumentException">A size, the selection or the type is invalid (the message names it).</exception>
    /// <exception cref="NativeLibraryException">The native library is missing or incompatible.</exception>
    /// <exception cref="FlashDmAttnException">The native library refused the query.</exception>
    public static long TopKWorkspaceSize(TopKProblem problem, ScalarType scoresType)
    {
        ArgumentValidation.ValidateTopKProblem(problem, survivors: false, nameof(problem));
        ArgumentValidation.ValidateScoresType(scoresType, nameof(scoresType));
        try
        {
            return NativeBackend.TopKWorkspaceSize(problem, scoresType);
        }
        catch (NativeLibraryException e)
        {
            throw new NativeLibraryException($"{TopKFeature} runs in the native library only (the NVRTC backend has none): {e.Message}", e);
        }
    }
}

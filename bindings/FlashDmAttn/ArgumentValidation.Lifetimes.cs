namespace FlashDmAttn;

// The checks of the top-k lifetime builder and the decode cache: the native library's rules (flash_dmattn.h), checked
// before any native call, allocation or copy, with messages that name the argument, what it must be and what it is.
internal static partial class ArgumentValidation
{
    public static ScalarType ScoreTypeOf<T>() where T : unmanaged =>
        typeof(T) == typeof(float) ? ScalarType.Float32
        : typeof(T) == typeof(Half) ? ScalarType.Float16
        : typeof(T) == typeof(BFloat16) ? ScalarType.BFloat16
        : throw new ArgumentException($"TScore must be {typeof(float)}, {typeof(Half)} or {typeof(BFloat16)}; got {typeof(T)}.", "TScore");

    public static void ValidateScoresType(ScalarType dtype, string name)
    {
        if (dtype is not (ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float32))
            throw new ArgumentOutOfRangeException(name, $"{name} must be Float16, BFloat16 or Float32; got {dtype}.");
    }

    private const int MaxTopKSegments = 65535;

    // survivors: whether the build writes (B, H, w) survivors, which need a window whatever the selection.
    public static void ValidateTopKProblem(TopKProblem problem, bool survivors, string name)
    {
        ThrowIfLessThanOne(problem.Batch, new(name, nameof(problem.Batch)));
        ThrowIfLessThanOne(problem.Heads, new(name, nameof(problem.Heads)));
        ThrowIfLessThanOne(problem.SeqLenQ, new(name, nameof(problem.SeqLenQ)));
        ThrowIfLessThanOne(problem.SeqLenK, new(name, nameof(problem.SeqLenK)));
        if (!Enum.IsDefined(problem.Selection))
        {
            throw new ArgumentOutOfRangeException($"{name}.Selection",
                $"{name}.Selection must be {KeySelection.TopK} or {KeySelection.Positive}; got {(int)problem.Selection}.");
        }

        if ((problem.Selection == KeySelection.TopK || survivors) && problem.Window < 1)
        {
            string why = problem.Selection == KeySelection.TopK ? $"for {nameof(KeySelection)}.{KeySelection.TopK}" : "when survivors are asked for";
            throw new ArgumentOutOfRangeException($"{name}.Window", $"{name}.Window must be >= 1 {why}; got {problem.Window}.");
        }

        // The builder's kernels enumerate the (batch, head) segments on grid y.
        if ((long)problem.Batch * problem.Heads > MaxTopKSegments)
        {
            throw new ArgumentOutOfRangeException(name,
                $"{name}.Batch * {name}.Heads must be <= {MaxTopKSegments}; got {problem.Batch} * {problem.Heads}.");
        }

        try
        {
            _ = problem.LifetimeElements;
            if (survivors)
                _ = problem.SurvivorElements;
        }
        catch (OverflowException)
        {
            throw new ArgumentOutOfRangeException(name, $"{name} must have at most {long.MaxValue} elements per tensor; got {problem}.");
        }
    }

    public static void ValidateHostTopK<TScore>(TopKProblem problem, ReadOnlySpan<TScore> scores, ReadOnlySpan<int> survivors)
        where TScore : unmanaged
    {
        ValidateTopKProblem(problem, !survivors.IsEmpty, nameof(problem));
        ThrowIfLengthIsNot(scores.Length, problem.LifetimeElements, "B * H * Lk", nameof(scores));
        if (!survivors.IsEmpty)
            ThrowIfLengthIsNot(survivors.Length, problem.SurvivorElements, "B * H * w, or empty for none", nameof(survivors));
    }

    public static void ValidateDeviceTopK(DeviceTopKArgs args)
    {
        ArgumentNullException.ThrowIfNull(args);
        TopKProblem problem = args.Problem;
        ValidateTopKProblem(problem, args.Survivors != 0, "args.Problem");
        DeviceBroadcastTensor scores = args.Scores;
        ValidateDeviceScores(scores, problem.Batch, problem.Heads, problem.SeqLenK, "args.Scores", "args.Problem");
        if (args.Lifetimes == 0)
            throw new ArgumentNullException("args.Lifetimes", "args.Lifetimes must be the device address of B * H * Lk pairs; got 0.");
        ThrowIfMisaligned(args.Lifetimes, DeviceLifetimes.PairBytes, "args.Lifetimes");
        ThrowIfMisaligned(args.Survivors, sizeof(int), "args.Survivors");
        ValidateWorkspace(args.Workspace, args.WorkspaceBytes, "args");

        ThrowIfOutputOverlaps(
        [
            DeviceRange("args.Scores", scores.Pointer, scores.DType.ElementSize(), written: false,
                (problem.Batch, scores.StrideBatch), (problem.Heads, scores.StrideHead), (problem.SeqLenK, scores.StrideKey)),
            FlatRange("args.Lifetimes", args.Lifetimes, (ulong)problem.LifetimeElements * DeviceLifetimes.PairBytes),
            FlatRange("args.Survivors", args.Survivors, args.Survivors == 0 ? 0 : (ulong)problem.SurvivorElements * sizeof(int)),
            FlatRange("args.Workspace", args.Workspace, (ulong)args.WorkspaceBytes),
        ]);
    }

    // Scores of exactly (batch, heads, 1, Lk), no broadcast (the builder's and the cache's): sizeName names the sizes.
    private static void ValidateDeviceScores(DeviceBroadcastTensor scores, int batch, int heads, int seqLenK, string name, string sizeName)
    {
        if (scores.Pointer == 0)
            throw new ArgumentNullException(name, $"{name}.Pointer must be a device address; got 0.");
        ValidateScoresType(scores.DType, $"{name}.DType");
        ThrowIfMisaligned(scores.Pointer, scores.DType.ElementSize(), name);
        var expected = new BroadcastShape(batch, heads, 1);
        if (scores.Shape != expected)
        {
            throw new ArgumentException(
                $"{name}.Shape must be ({sizeName} batch, heads, 1) = {expected}, without broadcast; got {scores.Shape}.", $"{name}.Shape");
        }

        ThrowIfNegativeStride(batch, scores.StrideBatch, new(name, nameof(scores.StrideBatch)));
        ThrowIfNegativeStride(heads, scores.StrideHead, new(name, nameof(scores.StrideHead)));
        if (seqLenK > 1 && scores.StrideKey < 1)
            throw new ArgumentException($"{name}.StrideKey must be >= 1 (1: contiguous keys); got {scores.StrideKey}.", $"{name}.StrideKey");
    }

    public static void ValidateDecodeCache(ScalarType dtype, int batch, int headsKv, int headDim, int window, int maxStepTokens)
    {
        ValidateTensorDType(dtype, nameof(dtype));
        ThrowIfLessThanOne(batch, nameof(batch));
        ThrowIfLessThanOne(headsKv, nameof(headsKv));
        ValidateHeadDim(headDim, nameof(headDim));
        ThrowIfLessThanOne(window, nameof(window));
        ThrowIfLessThanOne(maxStepTokens, nameof(maxStepTokens));
        // The native library's limits (native/src/dma_cache.cpp).
        const long MaxSlots = 1L << 30;
        if ((long)window + maxStepTokens > MaxSlots)
        {
            throw new ArgumentOutOfRangeException(nameof(maxStepTokens),
                $"window + maxStepTokens (the slots) must be <= {MaxSlots} (2^30); got {window} + {maxStepTokens}.");
        }

        if ((long)batch * headsKv > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(headsKv), $"batch * headsKv must be <= {int.MaxValue}; got {batch} * {headsKv}.");
    }

    // cacheRanges: the memory the cache writes, which no input may overlap.
    public static void ValidateDecodeAppend(
        DmaDecodeCache cache, DeviceTensor k, DeviceTensor v, DeviceBroadcastTensor scores, int tokens, nint slots,
        ReadOnlySpan<(string Name, nint Pointer, long Bytes)> cacheRanges)
    {
        if (tokens < 1 || tokens > cache.MaxStepTokens)
            throw new ArgumentOutOfRangeException(nameof(tokens), $"tokens must be >= 1 and <= MaxStepTokens ({cache.MaxStepTokens}); got {tokens}.");
        ValidateDeviceTensor(k, nameof(k));
        ValidateDeviceTensor(v, nameof(v));
        ValidateDeviceScores(scores, cache.Batch, cache.HeadsKv, tokens, nameof(scores), "the cache's");
        ThrowIfMisaligned(slots, sizeof(int), nameof(slots));

        var shape = new AttentionShape(cache.Batch, tokens, tokens, cache.HeadsKv, cache.HeadsKv, cache.HeadDim);
        int elementSize = cache.DType.ElementSize();
        var ranges = new List<MemoryRange>
        {
            TensorRange(k, tokens, cache.HeadsKv, shape, elementSize, nameof(k), written: false),
            TensorRange(v, tokens, cache.HeadsKv, shape, elementSize, nameof(v), written: false),
            DeviceRange(nameof(scores), scores.Pointer, scores.DType.ElementSize(), written: false,
                (cache.Batch, scores.StrideBatch), (cache.HeadsKv, scores.StrideHead), (tokens, scores.StrideKey)),
            FlatRange(nameof(slots), slots, slots == 0 ? 0 : (ulong)((long)cache.Batch * cache.HeadsKv * tokens * sizeof(int))),
        };
        foreach ((string name, nint pointer, long bytes) in cacheRanges)
            ranges.Add(FlatRange(name, pointer, (ulong)bytes));
        ThrowIfOutputOverlaps([.. ranges]);
    }
}

namespace FlashDmAttn;

// Every argument check of the forward pass, shared by the device-pointer API, the Span API and the CPU reference,
// so that all three refuse the same calls with the same messages, before any native call, allocation or copy.
internal static partial class ArgumentValidation
{
    // The kernel reads Q, K, V and writes O in 16-byte vectors along the head dimension.
    private const int TensorAlignment = 16;
    private const int TensorStrideMultiple = 8;

    // The C ABI's rule for fdma_fwd_params.workspace.
    private const int WorkspaceAlignment = 16;

    public static ScalarType ScalarTypeOf<T>() where T : unmanaged =>
        typeof(T) == typeof(Half) ? ScalarType.Float16
        : typeof(T) == typeof(BFloat16) ? ScalarType.BFloat16
        : throw new ArgumentException($"T must be {typeof(Half)} or {typeof(BFloat16)}; got {typeof(T)}.", nameof(T));

    public static void ValidateShape(AttentionShape shape, string name)
    {
        ThrowIfLessThanOne(shape.Batch, new(name, nameof(shape.Batch)));
        ThrowIfLessThanOne(shape.SeqLenQ, new(name, nameof(shape.SeqLenQ)));
        ThrowIfLessThanOne(shape.SeqLenK, new(name, nameof(shape.SeqLenK)));
        ThrowIfLessThanOne(shape.HeadsQ, new(name, nameof(shape.HeadsQ)));
        ThrowIfLessThanOne(shape.HeadsKv, new(name, nameof(shape.HeadsKv)));
        ValidateHeadDim(shape.HeadDim, new(name, nameof(shape.HeadDim)));
        if (shape.HeadsQ % shape.HeadsKv != 0)
        {
            throw new ArgumentException(
                $"{name}.HeadsQ must be a multiple of {name}.HeadsKv ({shape.HeadsKv}); got {shape.HeadsQ}.", name);
        }

        try
        {
            _ = shape.QElements;
            _ = shape.KvElements;
        }
        catch (OverflowException)
        {
            throw new ArgumentOutOfRangeException(name, $"{name} must have at most {long.MaxValue} elements per tensor; got {shape}.");
        }
    }

    private static void ValidateHeadDim(int headDim, ArgumentName name)
    {
        if (!LaunchPlan.IsSupportedHeadDim(headDim))
            throw new ArgumentOutOfRangeException(name.ToString(), $"{name} must be one of {string.Join(", ", LaunchPlan.HeadDims)}; got {headDim}.");
    }

    // The tile-shape queries of both directions.
    public static void ValidateTileShapeQuery(int headDim, ScalarType dtype)
    {
        ValidateHeadDim(headDim, nameof(headDim));
        ValidateTensorDType(dtype, nameof(dtype));
    }

    public static void ValidateTensorDType(ScalarType dtype, string name)
    {
        if (dtype is not (ScalarType.Float16 or ScalarType.BFloat16))
            throw new ArgumentOutOfRangeException(name, $"{name} must be {ScalarType.Float16} or {ScalarType.BFloat16}; got {dtype}.");
    }

    public static void ValidateOptions(AttentionOptions? options)
    {
        if (options is null)
            return;
        if (options.SoftmaxScale is float scale && !(float.IsFinite(scale) && scale > 0))
        {
            throw new ArgumentOutOfRangeException(nameof(options),
                $"options.SoftmaxScale must be null or finite and greater than 0; got {scale}.");
        }

        if (!(float.IsFinite(options.Softcap) && options.Softcap >= 0))
        {
            throw new ArgumentOutOfRangeException(nameof(options),
                $"options.Softcap must be finite and >= 0 (0 = off); got {options.Softcap}.");
        }
    }

    private static void ValidateBroadcastShape(BroadcastShape broadcast, AttentionShape shape, ArgumentName name)
    {
        if (broadcast.Batch != 1 && broadcast.Batch != shape.Batch)
            throw new ArgumentOutOfRangeException(name.ToString(), $"{name}.Batch must be 1 or Batch ({shape.Batch}); got {broadcast.Batch}.");
        if (broadcast.Heads != 1 && broadcast.Heads != shape.HeadsKv && broadcast.Heads != shape.HeadsQ)
        {
            throw new ArgumentOutOfRangeException(name.ToString(),
                $"{name}.Heads must be 1, HeadsKv ({shape.HeadsKv}) or HeadsQ ({shape.HeadsQ}); got {broadcast.Heads}.");
        }

        if (broadcast.Rows != 1 && broadcast.Rows != shape.SeqLenQ)
            throw new ArgumentOutOfRangeException(name.ToString(), $"{name}.Rows must be 1 or SeqLenQ ({shape.SeqLenQ}); got {broadcast.Rows}.");
    }

    public static unsafe void ValidateHostForward<T, TLse>(
        AttentionShape shape,
        ReadOnlySpan<T> q,
        ReadOnlySpan<T> k,
        ReadOnlySpan<T> v,
        ReadOnlySpan<T> output,
        AttentionOptions? options,
        BroadcastOperand mask,
        BroadcastOperand lifetimes,
        BroadcastOperand bias,
        ReadOnlySpan<TLse> lse)
        where T : unmanaged
        where TLse : unmanaged
    {
        ValidateShape(shape, nameof(shape));
        ValidateOptions(options);
        ThrowIfLengthIsNot(q.Length, shape.QElements, "B * Lq * Hq * D", nameof(q));
        ThrowIfLengthIsNot(k.Length, shape.KvElements, "B * Lk * Hkv * D", nameof(k));
        ThrowIfLengthIsNot(v.Length, shape.KvElements, "B * Lk * Hkv * D", nameof(v));
        ThrowIfLengthIsNot(output.Length, shape.QElements, "B * Lq * Hq * D", nameof(output));
        ValidateHostOperand(mask, shape, nameof(mask));
        ValidateHostLifetimes(lifetimes, mask, shape);
        ValidateHostOperand(bias, shape, nameof(bias));
        if (!lse.IsEmpty)
            ThrowIfLengthIsNot(lse.Length, shape.LseElements, "B * Hq * Lq, or empty for none", nameof(lse));

        // Pinned so that the addresses compared cannot move between two reads.
        fixed (T* qStart = q, kStart = k, vStart = v, outputStart = output)
        fixed (byte* maskStart = &mask.Start, lifetimesStart = &lifetimes.Start, biasStart = &bias.Start)
        fixed (TLse* lseStart = lse)
        {
            ThrowIfOutputOverlaps(
            [
                MemoryRange.Of(nameof(q), qStart, q.Length, written: false),
                MemoryRange.Of(nameof(k), kStart, k.Length, written: false),
                MemoryRange.Of(nameof(v), vStart, v.Length, written: false),
                MemoryRange.Of(nameof(mask), maskStart, (ulong)mask.ByteLength, written: false),
                MemoryRange.Of(nameof(lifetimes), lifetimesStart, (ulong)lifetimes.ByteLength, written: false),
                MemoryRange.Of(nameof(bias), biasStart, (ulong)bias.ByteLength, written: false),
                MemoryRange.Of(nameof(output), outputStart, output.Length, written: true),
                MemoryRange.Of(nameof(lse), lseStart, lse.Length, written: true),
            ]);
        }
    }

    public static void ValidateDeviceForward(DeviceForwardArgs args, AttentionOptions? options)
    {
        ArgumentNullException.ThrowIfNull(args);
        ValidateDeviceProblem(args, options, ProblemNames.OfForward);
        AttentionShape shape = args.Shape;
        ThrowIfMisaligned(args.Lse, sizeof(float), "args.Lse");
        ThrowIfMisaligned(args.TileStats, sizeof(ulong), "args.TileStats");
        ValidateWorkspace(args.Workspace, args.WorkspaceBytes, "args");

        ProblemRanges inputs = InputRanges(args, ProblemNames.OfForward);
        ThrowIfOutputOverlaps(
        [
            inputs.Q, inputs.K, inputs.V, inputs.Mask, inputs.Lifetimes, inputs.Bias,
            TensorRange(args.Output, shape.SeqLenQ, shape.HeadsQ, shape, args.DType.ElementSize(), "args.Output", written: true),
            FlatRange("args.Lse", args.Lse, (ulong)shape.LseElements * sizeof(float)),
            FlatRange("args.TileStats", args.TileStats, 3 * sizeof(ulong)),
            FlatRange("args.Workspace", args.Workspace, (ulong)args.WorkspaceBytes),
        ]);
    }

    // What both directions take alike (under "args" or "args.Forward"): shape, type, options, Q, K, V, the output's
    // pointer and strides, mask and bias.
    private static void ValidateDeviceProblem(DeviceForwardArgs args, AttentionOptions? options, ProblemNames names)
    {
        AttentionShape shape = args.Shape;
        ValidateShape(shape, names.Shape);
        ValidateTensorDType(args.DType, names.DType);
        ValidateOptions(options);
        ValidateDeviceTensor(args.Q, names.Q);
        ValidateDeviceTensor(args.K, names.K);
        ValidateDeviceTensor(args.V, names.V);
        ValidateDeviceTensor(args.Output, names.Output);
        if (args.Mask is { } mask)
            ValidateDeviceBroadcast(mask, 1, shape, names.Mask);
        if (args.Lifetimes is { } lifetimes)
            ValidateDeviceLifetimes(lifetimes, args.Mask, shape, names);
        if (args.Bias is { } bias)
        {
            if (bias.DType is not (ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float32))
                throw new ArgumentOutOfRangeException(names.Bias, $"{names.Bias}.DType must be Float16, BFloat16 or Float32; got {bias.DType}.");
            ValidateDeviceBroadcast(bias, bias.DType.ElementSize(), shape, names.Bias);
        }
    }

    // The names of the arguments both directions take alike, under "args" (a forward call) or "args.Forward" (a
    // backward call): made once, so that a call that passes its checks puts none together.
    private sealed class ProblemNames(string prefix)
    {
        public static readonly ProblemNames OfForward = new("args");
        public static readonly ProblemNames OfBackward = new("args.Forward");

        public string Shape { get; } = $"{prefix}.Shape";
        public string DType { get; } = $"{prefix}.DType";
        public string Q { get; } = $"{prefix}.Q";
        public string K { get; } = $"{prefix}.K";
        public string V { get; } = $"{prefix}.V";
        public string Output { get; } = $"{prefix}.Output";
        public string Mask { get; } = $"{prefix}.Mask";
        public string Lifetimes { get; } = $"{prefix}.Lifetimes";
        public string Bias { get; } = $"{prefix}.Bias";
    }

    // The inputs both directions read. A struct rather than an array, so that a call allocates nothing: each direction
    // lists them among its other ranges, on the stack, in the order of the first overlap it names.
    private readonly record struct ProblemRanges(
        MemoryRange Q, MemoryRange K, MemoryRange V, MemoryRange Mask, MemoryRange Lifetimes, MemoryRange Bias);

    private static ProblemRanges InputRanges(DeviceForwardArgs args, ProblemNames names)
    {
        AttentionShape shape = args.Shape;
        int elementSize = args.DType.ElementSize();
        return new(
            TensorRange(args.Q, shape.SeqLenQ, shape.HeadsQ, shape, elementSize, names.Q, written: false),
            TensorRange(args.K, shape.SeqLenK, shape.HeadsKv, shape, elementSize, names.K, written: false),
            TensorRange(args.V, shape.SeqLenK, shape.HeadsKv, shape, elementSize, names.V, written: false),
            BroadcastRange(args.Mask, 1, shape, names.Mask, written: false),
            BroadcastRange(args.Lifetimes?.AsBroadcast(), DeviceLifetimes.PairBytes, shape, names.Lifetimes, written: false),
            BroadcastRange(args.Bias, args.Bias?.DType.ElementSize() ?? 0, shape, names.Bias, written: false));
    }

    public static void ValidateForwardWorkspaceSize(AttentionShape shape, ScalarType dtype, BroadcastShape? mask)
    {
        ValidateShape(shape, nameof(shape));
        ValidateTensorDType(dtype, nameof(dtype));
        if (mask is { } maskShape)
            ValidateBroadcastShape(maskShape, shape, nameof(mask));
    }

    private static void ThrowIfLessThanOne(int value, ArgumentName name)
    {
        if (value < 1)
            throw new ArgumentOutOfRangeException(name.ToString(), $"{name} must be >= 1; got {value}.");
    }

    private static void ThrowIfLengthIsNot(int actual, long expected, string formula, string name)
    {
        if (actual != expected)
            throw new ArgumentException($"{name} must have {expected} elements ({formula}); got {actual}.", name);
    }

    // A host mask or bias; an absent one (default) passes.
    private static void ValidateHostOperand(BroadcastOperand operand, AttentionShape shape, string name,
        string formula = "Shape.Batch * Shape.Heads * Shape.Rows * Lk")
    {
        if (!operand.IsPresent)
            return;
        ValidateBroadcastShape(operand.Shape, shape, new(name, nameof(operand.Shape)));
        ThrowIfLengthIsNot(operand.Length, operand.Shape.Elements(shape.SeqLenK), formula, name);
    }

    // Host lifetimes: one mask form or the other, a mask's broadcast of one row, and, since the values are visible here,
    // every pair within 0 <= First <= End <= SeqLenQ (the device API gives every pair a meaning instead).
    private static void ValidateHostLifetimes(BroadcastOperand lifetimes, BroadcastOperand mask, AttentionShape shape)
    {
        const string name = "lifetimes";
        if (!lifetimes.IsPresent)
            return;
        if (mask.IsPresent)
        {
            throw new ArgumentException(
                $"{name} must be default (none) when mask is present (one mask form or neither); got {lifetimes.Length} pairs.", name);
        }

        ValidateHostOperand(lifetimes, shape, name, "Shape.Batch * Shape.Heads * Lk");
        ReadOnlySpan<KeyLifetime> pairs = lifetimes.As<KeyLifetime>();
        int lk = shape.SeqLenK;
        for (int e = 0; e < pairs.Length; e++)
        {
            KeyLifetime pair = pairs[e];
            if (pair.First < 0 || pair.End < pair.First || pair.End > shape.SeqLenQ)
            {
                int plane = e / lk;
                throw new ArgumentOutOfRangeException(name,
                    $"{name}[{e}] (batch {plane / lifetimes.Shape.Heads}, head {plane % lifetimes.Shape.Heads}, key {e % lk}) must satisfy " +
                    $"0 <= First <= End <= SeqLenQ ({shape.SeqLenQ}); got First = {pair.First}, End = {pair.End}.");
            }
        }
    }

    // Device lifetimes: not with a mask; a mask's broadcast of one row; strides in pairs; 8-byte pairs.
    private static void ValidateDeviceLifetimes(DeviceLifetimes lifetimes, DeviceBroadcastTensor? mask, AttentionShape shape, ProblemNames names)
    {
        string field = names.Lifetimes;
        if (mask is { } m)
        {
            throw new ArgumentException(
                $"{field} must be null when {names.Mask} is set (one mask form or neither); got lifetimes at 0x{lifetimes.Pointer:x} " +
                $"and a mask at 0x{m.Pointer:x}.", field);
        }

        if (lifetimes.Pointer == 0)
            throw new ArgumentNullException(field, $"{field}.Pointer must be a device address (use null for none); got 0.");
        ThrowIfMisaligned(lifetimes.Pointer, DeviceLifetimes.PairBytes, field);
        ValidateBroadcastShape(lifetimes.Shape, shape, field);
        ThrowIfNegativeStride(lifetimes.Batch, lifetimes.StrideBatch, new(field, nameof(lifetimes.StrideBatch)));
        ThrowIfNegativeStride(lifetimes.Heads, lifetimes.StrideHead, new(field, nameof(lifetimes.StrideHead)));
        if (shape.SeqLenK > 1 && lifetimes.StrideKey < 1)
        {
            throw new ArgumentException(
                $"{field}.StrideKey must be >= 1 pair (1: contiguous keys); got {lifetimes.StrideKey}.", $"{field}.StrideKey");
        }
    }

    private static void ValidateDeviceTensor(DeviceTensor tensor, string name)
    {
        if (tensor.Pointer == 0)
            throw new ArgumentNullException(name, $"{name}.Pointer must be a device address; got 0.");
        ThrowIfMisaligned(tensor.Pointer, TensorAlignment, name);
        ThrowIfBadTensorStride(tensor.StrideBatch, new(name, nameof(tensor.StrideBatch)));
        ThrowIfBadTensorStride(tensor.StrideSeq, new(name, nameof(tensor.StrideSeq)));
        ThrowIfBadTensorStride(tensor.StrideHead, new(name, nameof(tensor.StrideHead)));
    }

    private static void ThrowIfBadTensorStride(long stride, ArgumentName name)
    {
        if (stride < 0 || stride % TensorStrideMultiple != 0)
            throw new ArgumentException($"{name} must be a non-negative multiple of {TensorStrideMultiple} elements; got {stride}.", name.ToString());
    }

    private static void ValidateDeviceBroadcast(DeviceBroadcastTensor tensor, int elementSize, AttentionShape shape, string name)
    {
        if (tensor.Pointer == 0)
            throw new ArgumentNullException(name, $"{name}.Pointer must be a device address (use null for none); got 0.");
        ThrowIfMisaligned(tensor.Pointer, elementSize, name);
        ValidateBroadcastShape(tensor.Shape, shape, new(name, nameof(tensor.Shape)));
        ThrowIfNegativeStride(tensor.Shape.Batch, tensor.StrideBatch, new(name, nameof(tensor.StrideBatch)));
        ThrowIfNegativeStride(tensor.Shape.Heads, tensor.StrideHead, new(name, nameof(tensor.StrideHead)));
        ThrowIfNegativeStride(tensor.Shape.Rows, tensor.StrideRow, new(name, nameof(tensor.StrideRow)));
        // As for the other dimensions, the stride of a single key is never used.
        if (shape.SeqLenK > 1 && tensor.StrideKey < 1)
            throw new ArgumentException($"{name}.StrideKey must be >= 1 (1: contiguous keys); got {tensor.StrideKey}.", $"{name}.StrideKey");
    }

    private static void ThrowIfNegativeStride(int size, long stride, ArgumentName name)
    {
        // The stride of a size-1 dimension is never used, so any value is accepted there.
        if (size > 1 && stride < 0)
            throw new ArgumentException($"{name} must be >= 0; got {stride}.", name.ToString());
    }

    private static void ValidateWorkspace(nint workspace, long workspaceBytes, string name)
    {
        if (workspaceBytes < 0)
            throw new ArgumentOutOfRangeException($"{name}.WorkspaceBytes", $"{name}.WorkspaceBytes must be >= 0; got {workspaceBytes}.");
        if (workspace != 0 && workspaceBytes == 0)
        {
            throw new ArgumentOutOfRangeException($"{name}.WorkspaceBytes",
                $"{name}.WorkspaceBytes must be > 0 when {name}.Workspace is set (0x{workspace:x}); got 0.");
        }

        ThrowIfMisaligned(workspace, WorkspaceAlignment, new(name, "Workspace"));
    }

    private static void ThrowIfMisaligned(nint pointer, int alignment, ArgumentName name)
    {
        if (pointer % alignment != 0)
            throw new ArgumentException($"{name}.Pointer must be {alignment}-byte aligned; got 0x{pointer:x}.", name.ToString());
    }

    private static MemoryRange TensorRange(
        DeviceTensor tensor, int seqLen, int heads, AttentionShape shape, int elementSize, string name, bool written) =>
        DeviceRange(
            name, tensor.Pointer, elementSize, written,
            (shape.Batch, tensor.StrideBatch), (seqLen, tensor.StrideSeq), (heads, tensor.StrideHead), (shape.HeadDim, 1));

    private static MemoryRange BroadcastRange(DeviceBroadcastTensor? tensor, int elementSize, AttentionShape shape, string name, bool written) =>
        tensor is not { } t
            ? new MemoryRange(name, 0, 0, written)
            : DeviceRange(
                name, t.Pointer, elementSize, written,
                (t.Shape.Batch, t.StrideBatch), (t.Shape.Heads, t.StrideHead), (t.Shape.Rows, t.StrideRow), (shape.SeqLenK, t.StrideKey));

    // Written bytes at an optional pointer: none when it is 0.
    private static MemoryRange FlatRange(string name, nint pointer, ulong length)
    {
        ulong start = unchecked((ulong)pointer);
        if (pointer == 0)
            return new MemoryRange(name, 0, 0, Written: true);
        if (length > ulong.MaxValue - start)
            throw new ArgumentOutOfRangeException(name, $"{name} must lie within the 64-bit address space; got {length} bytes at 0x{start:x}.");
        return new MemoryRange(name, start, length, Written: true);
    }

    // From the first element to one past the last one the strides reach; a conservative range for interleaved layouts.
    private static MemoryRange DeviceRange(
        string name, nint pointer, int elementSize, bool written, params ReadOnlySpan<(int Size, long Stride)> dimensions)
    {
        ulong start = unchecked((ulong)pointer);
        try
        {
            ulong lastElement = 0;
            foreach ((int size, long stride) in dimensions)
            {
                if (size > 1)
                    lastElement = checked(lastElement + (ulong)(size - 1) * (ulong)stride);
            }

            ulong length = checked((lastElement + 1) * (ulong)elementSize);
            _ = checked(start + length);
            return new MemoryRange(name, start, length, written);
        }
        catch (OverflowException)
        {
            throw new ArgumentOutOfRangeException(name, $"{name} must lie within the 64-bit address space; its strides reach past it.");
        }
    }

    // A collection expression without a spread, passed here, is laid out on the stack: no array per call. Every range
    // has a name of its own, so a range is told from the others by its place.
    private static void ThrowIfOutputOverlaps(ReadOnlySpan<MemoryRange> ranges)
    {
        for (int i = 0; i < ranges.Length; i++)
        {
            MemoryRange output = ranges[i];
            if (!output.Written)
                continue;
            for (int j = 0; j < ranges.Length; j++)
            {
                MemoryRange other = ranges[j];
                if (j != i && output.Overlaps(other))
                {
                    throw new ArgumentException(
                        $"{output.Name} must not overlap {other.Name}; got {output} and {other}.", output.Name);
                }
            }
        }
    }

    // An argument's name as a refusal gives it, such as "args.Q.StrideSeq": an owner's name and a member's, put together
    // only when a check fails, so that a call that passes its checks builds no string.
    private readonly struct ArgumentName(string owner, string? member = null)
    {
        public static implicit operator ArgumentName(string name) => new(name);

        public override string ToString() => member is null ? owner : $"{owner}.{member}";
    }

    private readonly record struct MemoryRange(string Name, ulong Start, ulong Length, bool Written)
    {
        public static unsafe MemoryRange Of(string name, void* start, ulong length, bool written) =>
            new(name, (ulong)start, length, written);

        public static unsafe MemoryRange Of<TElement>(string name, TElement* start, int elements, bool written)
            where TElement : unmanaged => Of(name, start, (ulong)elements * (ulong)sizeof(TElement), written);

        public bool Overlaps(MemoryRange other) =>
            Length > 0 && other.Length > 0 && Start < other.Start + other.Length && other.Start < Start + Length;

        public override string ToString() => $"{Name} at [0x{Start:x}, 0x{Start + Length:x})";
    }
}

namespace FlashDmAttn;

// The checks of the backward pass. The forward's tensors are checked as the forward checks them (a backward call
// takes them exactly as its forward call had them); what is new is the gradients: their sizes and types, and that
// none of them overlaps anything else.
internal static partial class ArgumentValidation
{
    public static void ValidateDeviceBackward(DeviceBackwardArgs args, AttentionOptions? options)
    {
        ArgumentNullException.ThrowIfNull(args);
        DeviceForwardArgs forward = args.Forward ?? throw new ArgumentNullException("args.Forward", "args.Forward must be the forward call's arguments; got null.");
        ValidateDeviceProblem(forward, options, ProblemNames.OfBackward);
        ThrowIfMisaligned(forward.Lse, sizeof(float), "args.Forward.Lse");
        if (forward.Lse == 0)
            throw new ArgumentNullException("args.Forward.Lse", "args.Forward.Lse must be the device address of the forward's log-sum-exp; got 0.");

        AttentionShape shape = forward.Shape;
        int elementSize = forward.DType.ElementSize();
        ValidateDeviceTensor(args.DOutput, "args.DOutput");
        ValidateDeviceTensor(args.DQ, "args.DQ");
        ValidateDeviceTensor(args.DK, "args.DK");
        ValidateDeviceTensor(args.DV, "args.DV");
        int biasGradientElementSize = 0;
        if (args.DBias is { } dBias)
        {
            if (forward.Bias is not { } bias)
                throw new ArgumentException($"args.DBias must be null when args.Forward.Bias is; got a tensor at 0x{dBias.Pointer:x}.", "args.DBias");
            ValidateBiasGradientType(bias.DType, dBias.DType, "args.DBias");
            if (dBias.Shape != bias.Shape)
                throw new ArgumentException($"args.DBias.Shape must be args.Forward.Bias.Shape ({bias.Shape}); got {dBias.Shape}.", "args.DBias.Shape");
            biasGradientElementSize = dBias.DType.ElementSize();
            ValidateDeviceBroadcast(dBias, biasGradientElementSize, shape, "args.DBias");
        }

        ThrowIfMisaligned(args.TileStats, sizeof(ulong), "args.TileStats");
        ValidateWorkspace(args.Workspace, args.WorkspaceBytes, "args");

        // In the order the checks have always named a first overlap: the inputs, the forward's results, mask, lifetimes
        // and bias.
        ProblemRanges inputs = InputRanges(forward, ProblemNames.OfBackward);
        ThrowIfOutputOverlaps(
        [
            inputs.Q, inputs.K, inputs.V,
            TensorRange(forward.Output, shape.SeqLenQ, shape.HeadsQ, shape, elementSize, "args.Forward.Output", written: false),
            FlatRange("args.Forward.Lse", forward.Lse, (ulong)shape.LseElements * sizeof(float)) with { Written = false },
            inputs.Mask, inputs.Lifetimes, inputs.Bias,
            TensorRange(args.DOutput, shape.SeqLenQ, shape.HeadsQ, shape, elementSize, "args.DOutput", written: false),
            TensorRange(args.DQ, shape.SeqLenQ, shape.HeadsQ, shape, elementSize, "args.DQ", written: true),
            TensorRange(args.DK, shape.SeqLenK, shape.HeadsKv, shape, elementSize, "args.DK", written: true),
            TensorRange(args.DV, shape.SeqLenK, shape.HeadsKv, shape, elementSize, "args.DV", written: true),
            BroadcastRange(args.DBias, biasGradientElementSize, shape, "args.DBias", written: true),
            FlatRange("args.TileStats", args.TileStats, 2 * sizeof(ulong)),
            FlatRange("args.Workspace", args.Workspace, (ulong)args.WorkspaceBytes),
        ]);
    }

    // The Span API: the forward's tensors as its forward call took them, its output and log-sum-exp (required here),
    // then the gradients.
    public static void ValidateHostBackward<T>(
        AttentionShape shape,
        ReadOnlySpan<T> q,
        ReadOnlySpan<T> k,
        ReadOnlySpan<T> v,
        ReadOnlySpan<T> output,
        ReadOnlySpan<float> lse,
        ReadOnlySpan<T> dOutput,
        ReadOnlySpan<T> dq,
        ReadOnlySpan<T> dk,
        ReadOnlySpan<T> dv,
        AttentionOptions? options,
        MaskInput mask,
        LifetimesInput lifetimes,
        BiasInput bias,
        BiasGradientOutput dBias)
        where T : unmanaged
    {
        ValidateShape(shape, nameof(shape));
        ThrowIfLengthIsNot(lse.Length, shape.LseElements, "B * Hq * Lq, the forward's log-sum-exp", nameof(lse));
        ValidateHostForward<T, float>(shape, q, k, v, output, options, mask.Operand, lifetimes.Operand, bias.Operand, lse);
        ValidateHostGradients<T, float>(shape, q, k, v, output, lse, dOutput, dq, dk, dv, mask.Operand, lifetimes.Operand, bias.Operand,
            dBias.IsPresent ? dBias.AsOperand(bias.Shape) : default);
        if (dBias.IsPresent)
            ValidateBiasGradientType(bias.DType, dBias.DType, nameof(dBias));
    }

    // The CPU reference, which computes the forward's results itself: the forward's inputs, then the gradients.
    public static void ValidateReferenceBackward(
        AttentionShape shape,
        ReadOnlySpan<double> q,
        ReadOnlySpan<double> k,
        ReadOnlySpan<double> v,
        ReadOnlySpan<double> dOutput,
        ReadOnlySpan<double> dq,
        ReadOnlySpan<double> dk,
        ReadOnlySpan<double> dv,
        AttentionOptions? options,
        BroadcastOperand mask,
        BroadcastOperand lifetimes,
        BroadcastOperand bias,
        BroadcastOperand dBias)
    {
        ValidateShape(shape, nameof(shape));
        ValidateOptions(options);
        ThrowIfLengthIsNot(q.Length, shape.QElements, "B * Lq * Hq * D", nameof(q));
        ThrowIfLengthIsNot(k.Length, shape.KvElements, "B * Lk * Hkv * D", nameof(k));
        ThrowIfLengthIsNot(v.Length, shape.KvElements, "B * Lk * Hkv * D", nameof(v));
        ValidateHostOperand(mask, shape, nameof(mask));
        ValidateHostLifetimes(lifetimes, mask, shape);
        ValidateHostOperand(bias, shape, nameof(bias));
        ValidateHostGradients<double, double>(shape, q, k, v, default, default, dOutput, dq, dk, dv, mask, lifetimes, bias, dBias);
    }

    public static void ValidateBackwardWorkspaceSize(AttentionShape shape, ScalarType dtype, BroadcastShape? mask, BroadcastShape? biasGradient, bool lifetimes)
    {
        ValidateForwardWorkspaceSize(shape, dtype, mask);
        if (lifetimes && mask is { } m)
            throw new ArgumentException($"{nameof(lifetimes)} must be false when {nameof(mask)} is set (one mask form or neither); got a mask of {m}.", nameof(lifetimes));
        if (biasGradient is { } biasShape)
            ValidateBroadcastShape(biasShape, shape, nameof(biasGradient));
    }

    private static unsafe void ValidateHostGradients<T, TLse>(
        AttentionShape shape,
        ReadOnlySpan<T> q,
        ReadOnlySpan<T> k,
        ReadOnlySpan<T> v,
        ReadOnlySpan<T> output,
        ReadOnlySpan<TLse> lse,
        ReadOnlySpan<T> dOutput,
        ReadOnlySpan<T> dq,
        ReadOnlySpan<T> dk,
        ReadOnlySpan<T> dv,
        BroadcastOperand mask,
        BroadcastOperand lifetimes,
        BroadcastOperand bias,
        BroadcastOperand dBias)
        where T : unmanaged
        where TLse : unmanaged
    {
        ThrowIfLengthIsNot(dOutput.Length, shape.QElements, "B * Lq * Hq * D", nameof(dOutput));
        ThrowIfLengthIsNot(dq.Length, shape.QElements, "B * Lq * Hq * D", nameof(dq));
        ThrowIfLengthIsNot(dk.Length, shape.KvElements, "B * Lk * Hkv * D", nameof(dk));
        ThrowIfLengthIsNot(dv.Length, shape.KvElements, "B * Lk * Hkv * D", nameof(dv));
        if (dBias.IsPresent)
        {
            if (!bias.IsPresent)
                throw new ArgumentException($"dBias must be default (none) when there is no bias; got {dBias.Length} elements.", nameof(dBias));
            ThrowIfLengthIsNot(dBias.Length, bias.Length, "as many as the bias", nameof(dBias));
        }

        // Pinned so that the addresses compared cannot move between two reads.
        fixed (T* qStart = q, kStart = k, vStart = v, outputStart = output, dOutputStart = dOutput)
        fixed (T* dqStart = dq, dkStart = dk, dvStart = dv)
        fixed (TLse* lseStart = lse)
        fixed (byte* maskStart = &mask.Start, lifetimesStart = &lifetimes.Start, biasStart = &bias.Start, dBiasStart = &dBias.Start)
        {
            ThrowIfOutputOverlaps(
            [
                MemoryRange.Of(nameof(q), qStart, q.Length, written: false),
                MemoryRange.Of(nameof(k), kStart, k.Length, written: false),
                MemoryRange.Of(nameof(v), vStart, v.Length, written: false),
                MemoryRange.Of(nameof(output), outputStart, output.Length, written: false),
                MemoryRange.Of(nameof(lse), lseStart, lse.Length, written: false),
                MemoryRange.Of(nameof(mask), maskStart, (ulong)mask.ByteLength, written: false),
                MemoryRange.Of(nameof(lifetimes), lifetimesStart, (ulong)lifetimes.ByteLength, written: false),
                MemoryRange.Of(nameof(bias), biasStart, (ulong)bias.ByteLength, written: false),
                MemoryRange.Of(nameof(dOutput), dOutputStart, dOutput.Length, written: false),
                MemoryRange.Of(nameof(dq), dqStart, dq.Length, written: true),
                MemoryRange.Of(nameof(dk), dkStart, dk.Length, written: true),
                MemoryRange.Of(nameof(dv), dvStart, dv.Length, written: true),
                MemoryRange.Of(nameof(dBias), dBiasStart, (ulong)dBias.ByteLength, written: true),
            ]);
        }
    }

    private static void ValidateBiasGradientType(ScalarType biasType, ScalarType gradientType, string name)
    {
        if (gradientType != biasType && gradientType != ScalarType.Float32)
        {
            throw new ArgumentOutOfRangeException(name,
                $"{name}.DType must be the bias's ({biasType}) or {ScalarType.Float32}; got {gradientType}.");
        }
    }
}

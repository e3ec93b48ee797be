using System.Runtime.InteropServices;

namespace FlashDmAttn.Tests.Gpu;

/// <summary>
/// Invalid calls on real GPU memory, through the device-pointer API (forward and backward) and the Span API: each is
/// refused with its exception type and a message naming the problem, writes nothing, and a valid call right after
/// gives the bits it gave before. Unlike ArgumentValidationTests' fake addresses, these pointers can be host memory or
/// memory freed just before the call: what only the driver can tell apart from device memory.
/// </summary>
[Category("Gpu")]
public class InvalidCallGpuTests : GpuTest
{
    private static readonly Type OutOfRange = typeof(ArgumentOutOfRangeException), Invalid = typeof(ArgumentException),
        Null = typeof(ArgumentNullException), Refused = typeof(FlashDmAttnException);

    private static readonly ForwardCase Case =
        new("bf16 D64 GQA mask bias", ScalarType.BFloat16, new(2, 97, 130, 4, 2, 64)) { Mask = new(2, 2, 97), Bias = new(1, 4, 97) };

    /// <summary>
    /// One invalid call: how it differs from a valid one, and its refusal. <paramref name="Names"/> is the start of the
    /// parameter name of an <see cref="ArgumentException"/>, or what the native message of a
    /// <see cref="FlashDmAttnException"/> (status <see cref="Status"/>) holds.
    /// </summary>
    public sealed record InvalidCall<TArgs>(string Name, Func<Elsewhere, TArgs, TArgs> Change, Type Exception, string Names, params string[] MessageParts)
    {
        public AttentionOptions? Options { get; init; }
        public FlashDmAttnStatus Status { get; init; } = FlashDmAttnStatus.InvalidArgument;

        public void Check(System.Exception thrown)
        {
            Assert.That(thrown, Is.TypeOf(Exception), thrown.ToString());
            if (thrown is ArgumentException argument)
                Assert.That(argument.ParamName, Does.StartWith(Names), thrown.Message);
            if (thrown is FlashDmAttnException refused)
            {
                Assert.That(refused.Status, Is.EqualTo(Status), thrown.Message);
                Assert.That(refused.NativeMessage, Does.Contain(Names));
            }

            foreach (string part in MessageParts)
                Assert.That(thrown.Message, Does.Contain(part));
        }

        public override string ToString() => Name;
    }

    // ---- the device-pointer forward ----

    private static IEnumerable<InvalidCall<DeviceForwardArgs>> ForwardCalls() =>
    [
        // Where the pointers point: the binding asks the driver about Q (to find the device), the native library asks the
        // runtime about every pointer. (Memory of another context on the same device is no error: FaultGpuTests.)
        new("QInHostMemory", (e, a) => a with { Q = a.Q with { Pointer = e.Host } }, Invalid, "args.Q", "args.Q.Pointer must be CUDA device memory"),
        new("KInHostMemory", (e, a) => a with { K = a.K with { Pointer = e.Host } }, Refused, "params.problem.k.data", "not device memory"),
        new("OutputInHostMemory", (e, a) => a with { Output = a.Output with { Pointer = e.Host } }, Refused, "params.out.data", "not device memory"),
        new("LseInHostMemory", (e, a) => a with { Lse = e.Host }, Refused, "params.lse", "not device memory"),
        new("QFreedJustBefore", (e, a) => a with { Q = a.Q with { Pointer = e.Freed } }, Invalid, "args.Q", "args.Q.Pointer must be CUDA device memory"),
        // Freed memory is no device memory to the runtime either: the native check names it.
        new("VFreedJustBefore", (e, a) => a with { V = a.V with { Pointer = e.Freed } }, Refused, "params.problem.v.data", "not device memory"),
        // Aliasing.
        new("OutputAliasesQ", (_, a) => a with { Output = a.Q }, Invalid, "args.Output", "args.Output must not overlap args.Q"),
        new("OutputOverlapsV", (_, a) => a with { Output = a.Output with { Pointer = a.V.Pointer + 4096 } }, Invalid, "args.Output", "args.Output must not overlap args.V"),
        new("LseAliasesOutput", (_, a) => a with { Lse = a.Output.Pointer }, Invalid, "args.", "args.Output", "args.Lse"),
        new("TileStatsInsideLse", (_, a) => a with { TileStats = a.Lse + 64 }, Invalid, "args.", "args.Lse", "args.TileStats"),
        // Options.
        new("ScaleNaN", (_, a) => a, OutOfRange, "options", "SoftmaxScale", "NaN") { Options = Case.Options with { SoftmaxScale = float.NaN } },
        new("ScaleZero", (_, a) => a, OutOfRange, "options", "SoftmaxScale", "got 0") { Options = Case.Options with { SoftmaxScale = 0 } },
        new("ScaleNegative", (_, a) => a, OutOfRange, "options", "SoftmaxScale", "-0.125") { Options = Case.Options with { SoftmaxScale = -0.125f } },
        new("SoftcapNaN", (_, a) => a, OutOfRange, "options", "Softcap", "NaN") { Options = Case.Options with { Softcap = float.NaN } },
        new("SoftcapNegative", (_, a) => a, OutOfRange, "options", "Softcap", "-2") { Options = Case.Options with { Softcap = -2 } },
        // Sizes.
        new("HeadsQNotAMultipleOfHeadsKv", (_, a) => a with { Shape = a.Shape with { HeadsQ = 3 } }, Invalid, "args.Shape", "multiple of args.Shape.HeadsKv (2); got 3"),
        new("HeadDim48", (_, a) => a with { Shape = a.Shape with { HeadDim = 48 } }, OutOfRange, "args.Shape.HeadDim", "32, 64, 96, 128, 192, 256", "got 48"),
        new("Batch0", (_, a) => a with { Shape = a.Shape with { Batch = 0 } }, OutOfRange, "args.Shape.Batch", "got 0"),
        new("SeqLenKNegative", (_, a) => a with { Shape = a.Shape with { SeqLenK = -130 } }, OutOfRange, "args.Shape.SeqLenK", "got -130"),
        new("SeqLenQOverflowingTheElementCount", (_, a) => a with { Shape = a.Shape with { Batch = int.MaxValue, SeqLenQ = int.MaxValue } },
            OutOfRange, "args.Shape", "elements per tensor"),
        new("MaskRowsNeitherOneNorSeqLenQ", (_, a) => a with { Mask = a.Mask!.Value with { Shape = new(2, 2, 5) } }, OutOfRange, "args.Mask.Shape", "Rows", "got 5"),
        new("BiasHeadsNeitherOneHkvNorHq", (_, a) => a with { Bias = a.Bias!.Value with { Shape = new(1, 3, 97) } }, OutOfRange, "args.Bias.Shape", "Heads", "got 3"),
        // Types, alignment, strides.
        new("DTypeFloat32", (_, a) => a with { DType = ScalarType.Float32 }, OutOfRange, "args.DType", "got Float32"),
        new("BiasDTypeUnknown", (_, a) => a with { Bias = a.Bias!.Value with { DType = (ScalarType)7 } }, OutOfRange, "args.Bias", "got 7"),
        new("QMisaligned", (_, a) => a with { Q = a.Q with { Pointer = a.Q.Pointer + 2 } }, Invalid, "args.Q", "16-byte aligned"),
        new("LseMisaligned", (_, a) => a with { Lse = a.Lse + 2 }, Invalid, "args.Lse", "4-byte aligned"),
        new("BiasMisaligned", (_, a) => a with { Bias = a.Bias!.Value with { Pointer = a.Bias.Value.Pointer + 2 } }, Invalid, "args.Bias", "4-byte aligned"),
        new("VStrideNotAMultipleOf8", (_, a) => a with { V = a.V with { StrideSeq = 132 } }, Invalid, "args.V.StrideSeq", "got 132"),
        new("OutputStrideNegative", (_, a) => a with { Output = a.Output with { StrideSeq = -256 } }, Invalid, "args.Output.StrideSeq", "got -256"),
        new("KStridesPastTheAddressSpace", (_, a) => a with { K = a.K with { StrideSeq = 1L << 60 } }, OutOfRange, "args.K", "64-bit address space"),
        new("MaskStrideKeyZero", (_, a) => a with { Mask = a.Mask!.Value with { StrideKey = 0 } }, Invalid, "args.Mask.StrideKey", "got 0"),
        new("BiasKeyStridesPastTheAddressSpace", (_, a) => a with { Bias = a.Bias!.Value with { StrideKey = 1L << 58 } }, OutOfRange, "args.Bias", "64-bit address space"),
    ];

    private static IEnumerable<TestCaseData> ForwardCases() => ForwardCalls().Select(c => new TestCaseData(c).SetArgDisplayNames(c.Name));

    private static DeviceBackwardArgs Forward(DeviceBackwardArgs args, Func<DeviceForwardArgs, DeviceForwardArgs> change) =>
        args with { Forward = change(args.Forward) };

    [TestCaseSource(nameof(ForwardCases))]
    public void InvalidDeviceForward_IsRefused_WritesNothing_AndTheNextCallSucceeds(InvalidCall<DeviceForwardArgs> call)
    {
        var inputs = new ForwardInputs(Case, new TestRandom());
        using var problem = new DeviceForwardProblem(inputs);
        problem.Run(problem.Args);
        DeviceResults valid = problem.Read();
        problem.ClearResults();
        using CudaPrimaryContext context = CudaPrimaryContext.Retain(0);
        using CudaContextScope current = context.Push();
        using var elsewhere = new Elsewhere(context);
        DeviceForwardArgs args = call.Change(elsewhere, problem.Args);

        Exception thrown = Assert.Catch(() => DynamicMaskAttention.Forward(args, call.Options ?? Case.Options))!;

        CudaDriver.Synchronize();
        call.Check(thrown);
        DeviceResults unwritten = problem.Read();
        FaultGpuTests.AssertUnwritten(unwritten.OutputBytes, 0xFF, "output");
        FaultGpuTests.AssertUnwritten(unwritten.LseBytes, 0xFF, "LSE");
        FaultGpuTests.AssertUnwritten(unwritten.TileStatsBytes, 0xFF, "tile stats");
        problem.Run(problem.Args);
        DeviceResults next = problem.Read();
        FaultGpuTests.AssertSameOutputAndLse(next, valid, " of the next call", inputs);
        Assert.That(next.Stats, Is.EqualTo(valid.Stats), "tile stats of the next call");
    }

    // ---- the device-pointer backward ----

    private static readonly BackwardCase BackwardCase = new("bf16 D64 GQA mask bias, float dBias, deterministic", Case)
    {
        Deterministic = true,
        Float32BiasGradient = true,
    };

    private static IEnumerable<InvalidCall<DeviceBackwardArgs>> BackwardCalls() =>
    [
        new("QInHostMemory", (e, a) => Forward(a, f => f with { Q = f.Q with { Pointer = e.Host } }), Invalid, "args.Forward.Q", "args.Forward.Q.Pointer must be CUDA device memory"),
        new("DQInHostMemory", (e, a) => a with { DQ = a.DQ with { Pointer = e.Host } }, Refused, "params.d_q.data", "not device memory"),
        new("LseInHostMemory", (e, a) => Forward(a, f => f with { Lse = e.Host }), Refused, "params.lse", "not device memory"),
        new("BiasKeyStrideInHostMemory", (e, a) => Forward(a, f => f with { Bias = f.Bias!.Value with { Pointer = e.Host } }), Refused, "params.problem.bias.data", "not device memory"),
        new("DOutputFreedJustBefore", (e, a) => a with { DOutput = a.DOutput with { Pointer = e.Freed } }, Refused, "params.d_out.data", "not device memory"),
        new("DQAliasesDOutput", (_, a) => a with { DQ = a.DOutput }, Invalid, "args.DQ", "args.DQ must not overlap args.DOutput"),
        new("DKAliasesK", (_, a) => a with { DK = a.Forward.K }, Invalid, "args.DK", "args.DK must not overlap args.Forward.K"),
        new("DVOverlapsLse", (_, a) => a with { DV = a.DV with { Pointer = a.Forward.Lse + 16 } }, Invalid, "args.DV", "args.DV must not overlap args.Forward.Lse"),
        new("DBiasAliasesBias", (_, a) => a with { DBias = a.DBias!.Value with { Pointer = a.Forward.Bias!.Value.Pointer } }, Invalid, "args.DBias", "args.DBias must not overlap args.Forward.Bias"),
        new("DBiasKeyStrideOverlapsItself", (_, a) => a with { DBias = a.DBias!.Value with { StrideKey = 0 } }, Invalid, "args.DBias.StrideKey", "got 0"),
        new("LseZero", (_, a) => Forward(a, f => f with { Lse = 0 }), Null, "args.Forward.Lse", "log-sum-exp", "got 0"),
        new("DVMisaligned", (_, a) => a with { DV = a.DV with { Pointer = a.DV.Pointer + 8 } }, Invalid, "args.DV", "16-byte aligned"),
        new("DQStrideNotAMultipleOf8", (_, a) => a with { DQ = a.DQ with { StrideHead = 68 } }, Invalid, "args.DQ.StrideHead", "got 68"),
        new("ScaleNegative", (_, a) => a, OutOfRange, "options", "SoftmaxScale", "-1") { Options = Case.Options with { SoftmaxScale = -1 } },
        new("ScaleZero", (_, a) => a, OutOfRange, "options", "SoftmaxScale", "got 0") { Options = Case.Options with { SoftmaxScale = 0 } },
        new("SoftcapNaN", (_, a) => a, OutOfRange, "options", "Softcap", "NaN") { Options = Case.Options with { Softcap = float.NaN } },
        new("HeadDim48", (_, a) => Forward(a, f => f with { Shape = f.Shape with { HeadDim = 48 } }), OutOfRange, "args.Forward.Shape.HeadDim", "got 48"),
        new("HeadsQNotAMultipleOfHeadsKv", (_, a) => Forward(a, f => f with { Shape = f.Shape with { HeadsKv = 3 } }), Invalid, "args.Forward.Shape", "multiple of args.Forward.Shape.HeadsKv (3); got 4"),
        new("DBiasOfAnotherShape", (_, a) => a with { DBias = a.DBias!.Value with { Shape = new(1, 2, 97) } }, Invalid, "args.DBias.Shape", "got"),
        new("DBiasFloat16ForAFloat32Bias", (_, a) => a with { DBias = a.DBias!.Value with { DType = ScalarType.Float16 } }, OutOfRange, "args.DBias", "got Float16"),
        new("WorkspaceOneByteShort", (e, a) => a with { Workspace = e.Workspace(a), WorkspaceBytes = e.WorkspaceBytes(a) - 1 }, Refused, "workspace_bytes", "this call needs"),
    ];

    private static IEnumerable<TestCaseData> BackwardCases() => BackwardCalls().Select(c => new TestCaseData(c).SetArgDisplayNames(c.Name));

    [TestCaseSource(nameof(BackwardCases))]
    public void InvalidDeviceBackward_IsRefused_WritesNothing_AndTheNextCallSucceeds(InvalidCall<DeviceBackwardArgs> call)
    {
        var inputs = new BackwardInputs(BackwardCase, new TestRandom());
        using var problem = new DeviceBackwardProblem(inputs, Layout.SequenceMajor, Layout.HeadMajor);
        problem.Run(problem.Args);
        DeviceBackwardResults valid = problem.Read();
        problem.ClearResults();
        using CudaPrimaryContext context = CudaPrimaryContext.Retain(0);
        using CudaContextScope current = context.Push();
        using var elsewhere = new Elsewhere(context);
        DeviceBackwardArgs args = call.Change(elsewhere, problem.Args);

        Exception thrown = Assert.Catch(() => DynamicMaskAttention.Backward(args, call.Options ?? Case.Options, deterministic: true))!;

        CudaDriver.Synchronize();
        call.Check(thrown);
        DeviceBackwardResults unwritten = problem.Read();
        foreach ((string name, byte[] bytes) in new[] { ("dQ", unwritten.DQ), ("dK", unwritten.DK), ("dV", unwritten.DV), ("dBias", unwritten.DBias!), ("tile stats", unwritten.TileStatsBytes) })
            FaultGpuTests.AssertUnwritten(bytes, 0xFF, name);
        problem.Run(problem.Args);
        DeviceBackwardResults next = problem.Read();
        foreach ((string name, byte[] got, byte[] wanted) in new[] { ("dQ", next.DQ, valid.DQ), ("dK", next.DK, valid.DK), ("dV", next.DV, valid.DV), ("dBias", next.DBias!, valid.DBias!) })
            Assert.That(got, Is.EqualTo(wanted), $"{name} of the next call; {inputs.Forward.Random}");
    }

    // ---- the Span API ----

    /// <summary>One invalid Span call: made on a problem whose arrays are all compared before and after.</summary>
    public sealed record InvalidSpanCall(string Name, Action<SpanProblem> Call, Type Exception, string ParamName, params string[] MessageParts)
    {
        public override string ToString() => Name;
    }

    private static IEnumerable<InvalidSpanCall> SpanCalls() =>
    [
        new("ForwardQTooShort", p => DynamicMaskAttention.Forward<Half>(p.Shape, p.Q.AsSpan(1), p.K, p.V, p.NewOutput, lse: p.NewLse),
            Invalid, "q", $"{SpanProblem.Valid.QElements} elements", $"got {SpanProblem.Valid.QElements - 1}"),
        new("ForwardOutputTooShort", p => DynamicMaskAttention.Forward<Half>(p.Shape, p.Q, p.K, p.V, p.NewOutput.AsSpan(8), lse: p.NewLse),
            Invalid, "output", $"got {SpanProblem.Valid.QElements - 8}"),
        new("ForwardLseOneTooSmall", p => DynamicMaskAttention.Forward<Half>(p.Shape, p.Q, p.K, p.V, p.NewOutput, lse: p.NewLse.AsSpan(1)),
            Invalid, "lse", $"{SpanProblem.Valid.LseElements} elements", $"got {SpanProblem.Valid.LseElements - 1}"),
        new("ForwardOutputAliasesQ", p => DynamicMaskAttention.Forward<Half>(p.Shape, p.Q, p.K, p.V, p.Q, lse: p.NewLse),
            Invalid, "output", "output must not overlap q"),
        new("ForwardHeadDim48", p => DynamicMaskAttention.Forward<Half>(p.Shape with { HeadDim = 48 }, p.Q, p.K, p.V, p.NewOutput),
            OutOfRange, "shape.HeadDim", "got 48"),
        new("BackwardLseOneTooSmall", p => p.Backward(lse: p.Lse.AsSpan(1)), Invalid, "lse", $"got {SpanProblem.Valid.LseElements - 1}"),
        new("BackwardDqTooShort", p => p.Backward(dq: p.NewDq.AsSpan(1)), Invalid, "dq", $"got {SpanProblem.Valid.QElements - 1}"),
        new("BackwardDkAliasesDOutput", p => p.Backward(dk: p.DOutput.AsSpan(0, (int)SpanProblem.Valid.KvElements)), Invalid, "dk", "dk must not overlap dOutput"),
        new("BackwardSoftcapNegative", p => p.Backward(options: new AttentionOptions { Softcap = -1 }), OutOfRange, "options", "Softcap", "-1"),
        new("BackwardHeadsQNotAMultipleOfHeadsKv", p => p.Backward(shape: SpanProblem.Valid with { HeadsKv = 3 }), Invalid, "shape", "got 4"),
    ];

    private static IEnumerable<TestCaseData> SpanCases() => SpanCalls().Select(c => new TestCaseData(c).SetArgDisplayNames(c.Name));

    [TestCaseSource(nameof(SpanCases))]
    public void InvalidSpanCall_IsRefused_WritesNothing_AndTheNextCallSucceeds(InvalidSpanCall call)
    {
        var problem = new SpanProblem(new TestRandom());
        (byte[] Output, byte[] Lse, byte[] Dq, byte[] Dk, byte[] Dv) valid = problem.RunValid();
        byte[][] before = problem.Arrays().Select(a => a.ToArray()).ToArray();

        var thrown = (ArgumentException)Assert.Throws(call.Exception, () => call.Call(problem))!;

        Assert.That(thrown.ParamName, Does.StartWith(call.ParamName), thrown.Message);
        foreach (string part in call.MessageParts)
            Assert.That(thrown.Message, Does.Contain(part));
        byte[][] after = problem.Arrays().Select(a => a.ToArray()).ToArray();
        Assert.That(after, Is.EqualTo(before), "an array was written");
        var next = problem.RunValid();
        Assert.That(next.Output, Is.EqualTo(valid.Output), $"output of the next call; {problem.Random}");
        Assert.That(next.Lse, Is.EqualTo(valid.Lse), $"LSE of the next call; {problem.Random}");
        Assert.That(next.Dq, Is.EqualTo(valid.Dq), $"dQ of the next call; {problem.Random}");
        Assert.That(next.Dk, Is.EqualTo(valid.Dk), $"dK of the next call; {problem.Random}");
        Assert.That(next.Dv, Is.EqualTo(valid.Dv), $"dV of the next call; {problem.Random}");
    }

    /// <summary>
    /// fp16 inputs of a GQA shape with their valid forward output and LSE, and output arrays for invalid calls to leave
    /// alone (all filled with a sentinel).
    /// </summary>
    public sealed class SpanProblem
    {
        public static readonly AttentionShape Valid = new(2, 97, 130, 4, 2, 64);

        internal SpanProblem(TestRandom random)
        {
            Random = random;
            Q = Tensors.Narrow<Half>(random.Uniform(Valid.QElements, -0.5, 1.5));
            K = Tensors.Narrow<Half>(random.Uniform(Valid.KvElements, -0.5, 1.5));
            V = Tensors.Narrow<Half>(random.Uniform(Valid.KvElements, -1, 2));
            DOutput = Tensors.Narrow<Half>(random.Uniform(Valid.QElements, -1, 1));
            DynamicMaskAttention.Forward<Half>(Valid, Q, K, V, Output, lse: Lse);
        }

        internal TestRandom Random { get; }
        public AttentionShape Shape => Valid;
        public Half[] Q { get; }
        public Half[] K { get; }
        public Half[] V { get; }
        public Half[] DOutput { get; }
        public Half[] Output { get; } = new Half[Valid.QElements];
        public float[] Lse { get; } = new float[Valid.LseElements];
        public Half[] NewOutput { get; } = Tensors.Filled<Half>(Valid.QElements, 42);
        public float[] NewLse { get; } = Tensors.Filled<float>(Valid.LseElements, 42);
        public Half[] NewDq { get; } = Tensors.Filled<Half>(Valid.QElements, 42);
        public Half[] NewDk { get; } = Tensors.Filled<Half>(Valid.KvElements, 42);
        public Half[] NewDv { get; } = Tensors.Filled<Half>(Valid.KvElements, 42);

        /// <summary>The backward on this problem's arrays, with the named ones replaced.</summary>
        public void Backward(AttentionShape? shape = null, Span<float> lse = default, Span<Half> dq = default, Span<Half> dk = default, AttentionOptions? options = null) =>
            DynamicMaskAttention.Backward<Half>(shape ?? Valid, Q, K, V, Output, lse.IsEmpty ? Lse : lse, DOutput,
                dq.IsEmpty ? NewDq : dq, dk.IsEmpty ? NewDk : dk, NewDv, options, deterministic: true);

        /// <summary>Every array's bytes, inputs included.</summary>
        public IEnumerable<byte[]> Arrays() =>
        [
            Bytes(Q), Bytes(K), Bytes(V), Bytes(DOutput), Bytes(Output), Bytes(Lse), Bytes(NewOutput), Bytes(NewLse), Bytes(NewDq), Bytes(NewDk), Bytes(NewDv),
        ];

        /// <summary>The forward and the backward on fresh arrays, as bytes.</summary>
        public (byte[] Output, byte[] Lse, byte[] Dq, byte[] Dk, byte[] Dv) RunValid()
        {
            Half[] output = new Half[Valid.QElements], dq = new Half[Valid.QElements], dk = new Half[Valid.KvElements], dv = new Half[Valid.KvElements];
            float[] lse = new float[Valid.LseElements];
            DynamicMaskAttention.Forward<Half>(Valid, Q, K, V, output, lse: lse);
            DynamicMaskAttention.Backward<Half>(Valid, Q, K, V, output, lse, DOutput, dq, dk, dv, deterministic: true);
            return (Bytes(output), Bytes(lse), Bytes(dq), Bytes(dk), Bytes(dv));
        }

        private static byte[] Bytes<T>(T[] values) where T : unmanaged => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
    }
}

/// <summary>
/// What an invalid call can point at instead of a tensor of its own: ordinary host memory, device memory freed just
/// before the call, and caller scratch.
/// </summary>
public sealed class Elsewhere : IDisposable
{
    private const int Bytes = 1 << 20; // more than any tensor of the cases
    private readonly CudaPrimaryContext context;
    private readonly List<DeviceBuffer> workspaces = [];

    internal Elsewhere(CudaPrimaryContext context)
    {
        this.context = context;
        Host = Marshal.AllocHGlobal(Bytes); // malloc: 16-byte aligned, as the tensors must be
        using (DeviceBuffer freed = DeviceBuffer.Allocate(context, Bytes))
            Freed = freed.Pointer;
    }

    public nint Host { get; }

    public nint Freed { get; }

    /// <summary>Scratch of exactly the size a backward call needs.</summary>
    public nint Workspace(DeviceBackwardArgs args)
    {
        DeviceBuffer buffer = DeviceBuffer.Allocate(context, WorkspaceBytes(args));
        workspaces.Add(buffer);
        return buffer.Pointer;
    }

    public long WorkspaceBytes(DeviceBackwardArgs args) =>
        DynamicMaskAttention.BackwardWorkspaceSize(
            args.Forward.Shape, args.Forward.DType, args.Forward.Mask?.Shape, args.DBias is null ? null : args.Forward.Bias?.Shape, deterministic: true,
            lifetimes: args.Forward.Lifetimes is not null);

    public void Dispose()
    {
        Marshal.FreeHGlobal(Host);
        foreach (DeviceBuffer buffer in workspaces)
            buffer.Dispose();
    }
}

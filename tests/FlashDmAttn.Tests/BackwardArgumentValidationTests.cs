using FlashDmAttn.Reference;

namespace FlashDmAttn.Tests;

/// <summary>
/// Every argument check of the backward pass, through the double reference and the Span API (which validates before
/// touching the GPU, so these run anywhere), and through the device-pointer API with fake pointers. Each refusal:
/// the exception type, a message naming the argument and the value it got, and nothing written.
/// </summary>
public class BackwardArgumentValidationTests
{
    public enum Entry { Reference, SpanApi }

    private const double Sentinel = 42;
    private static readonly AttentionShape Valid = new(2, 5, 7, 4, 2, 32);
    private static readonly Type OutOfRange = typeof(ArgumentOutOfRangeException), Invalid = typeof(ArgumentException);

    /// <summary>One invalid call: what to change from a valid one (which has a (1, Hkv, 1) bias and its gradient).</summary>
    public sealed record HostCase(string Name, Type Exception, string ParamName, params string[] MessageParts)
    {
        public AttentionShape Shape { get; init; } = Valid;
        public AttentionOptions? Options { get; init; }

        /// <summary>Output and LSE are the Span API's parameters; the reference computes them itself.</summary>
        public bool SpanApiOnly { get; init; }

        public int? QLength { get; init; }
        public int? KLength { get; init; }
        public int? OutputLength { get; init; }
        public int? LseLength { get; init; }
        public int? DOutputLength { get; init; }
        public int? DqLength { get; init; }
        public int? DkLength { get; init; }
        public int? DvLength { get; init; }
        public BroadcastShape? MaskShape { get; init; }
        public BroadcastShape? BiasShape { get; init; } = new(1, 2, 1);
        public int? DBiasLength { get; init; }

        /// <summary>(written, other): the written argument starts 4 elements into the other one.</summary>
        public (string Written, string Other)? Overlap { get; init; }

        public override string ToString() => Name;
    }

    private static IEnumerable<HostCase> HostCases() =>
    [
        new("Batch0", OutOfRange, "shape.Batch", "0") { Shape = Valid with { Batch = 0 } },
        new("HeadDim48", OutOfRange, "shape.HeadDim", "48") { Shape = Valid with { HeadDim = 48 } },
        new("QTooShort", Invalid, "q", "1280", "1279") { QLength = 1279 },
        new("KTooLong", Invalid, "k", "896", "897") { KLength = 897 },
        new("OutputTooShort", Invalid, "output", "1280", "1279") { OutputLength = 1279, SpanApiOnly = true },
        new("LseEmpty", Invalid, "lse", "40", "log-sum-exp", "0") { LseLength = 0, SpanApiOnly = true },
        new("LseTooLong", Invalid, "lse", "40", "41") { LseLength = 41, SpanApiOnly = true },
        new("DOutputTooShort", Invalid, "dOutput", "1280", "1000") { DOutputLength = 1000 },
        new("DqTooLong", Invalid, "dq", "1280", "1281") { DqLength = 1281 },
        new("DkTooShort", Invalid, "dk", "896", "895") { DkLength = 895 },
        new("DvTooShort", Invalid, "dv", "896", "1") { DvLength = 1 },
        new("MaskRows4", OutOfRange, "mask.Shape", "mask.Shape.Rows", "4") { MaskShape = new(1, 1, 4) },
        new("BiasHeads3", OutOfRange, "bias.Shape", "bias.Shape.Heads", "3") { BiasShape = new(1, 3, 1) },
        new("SoftcapNegative", OutOfRange, "options", "Softcap", (-1f).ToString()) { Options = new() { Softcap = -1 } },
        new("DBiasWithoutBias", Invalid, "dBias", "no bias", "14") { BiasShape = null, DBiasLength = 14 },
        new("DBiasTooShort", Invalid, "dBias", "14", "13") { DBiasLength = 13 },
        new("DqOverlapsQ", Invalid, "dq", "dq must not overlap q") { Overlap = ("dq", "q") },
        new("DqOverlapsDOutput", Invalid, "dq", "dq must not overlap dOutput") { Overlap = ("dq", "dOutput") },
        new("DkOverlapsDv", Invalid, "dk", "dk must not overlap dv") { Overlap = ("dk", "dv") },
        new("DvOverlapsK", Invalid, "dv", "dv must not overlap k") { Overlap = ("dv", "k") },
        new("DvOverlapsOutput", Invalid, "dv", "dv must not overlap output") { Overlap = ("dv", "output"), SpanApiOnly = true },
        new("DBiasOverlapsBias", Invalid, "dBias", "dBias must not overlap bias") { Overlap = ("dBias", "bias") },
    ];

    private static IEnumerable<TestCaseData> HostCasesPerEntry() =>
        from entry in Enum.GetValues<Entry>()
        from c in HostCases()
        where entry == Entry.SpanApi || !c.SpanApiOnly
        select new TestCaseData(entry, c).SetArgDisplayNames(entry.ToString(), c.Name);

    [TestCaseSource(nameof(HostCasesPerEntry))]
    public void InvalidHostCall_IsRefusedAndWritesNothing(Entry entry, HostCase c)
    {
        if (entry == Entry.Reference)
        {
            CheckRefused<double, double>(c, (shape, q, k, v, output, lse, dOutput, dq, dk, dv, options, mask, bias, biasShape, dBias) =>
                ReferenceAttention.Backward(shape, q, k, v, dOutput, dq, dk, dv, options, mask,
                    c.BiasShape is null ? default : new ReferenceBias(bias, biasShape), dBias));
        }
        else
        {
            CheckRefused<Half, float>(c, (shape, q, k, v, output, lse, dOutput, dq, dk, dv, options, mask, bias, biasShape, dBias) =>
                DynamicMaskAttention.Backward<Half>(shape, q, k, v, output, lse, dOutput, dq, dk, dv, options, mask,
                    c.BiasShape is null ? default : new BiasInput(bias, biasShape), dBias.IsEmpty ? default : new BiasGradientOutput(dBias)));
        }
    }

    private delegate void HostCall<T, TBias>(
        AttentionShape shape, Span<T> q, Span<T> k, Span<T> v, Span<T> output, Span<float> lse, Span<T> dOutput,
        Span<T> dq, Span<T> dk, Span<T> dv, AttentionOptions? options, MaskInput mask, Span<TBias> bias, BroadcastShape biasShape,
        Span<TBias> dBias);

    // Every tensor is a slice of one arena (the bias and its gradient of another), so that an overlap is a moved offset
    // and "nothing written" is one check over the arenas.
    private static void CheckRefused<T, TBias>(HostCase c, HostCall<T, TBias> call) where T : unmanaged where TBias : unmanaged
    {
        int qElements = Elements(c.Shape.QElementsOrZero()), kvElements = Elements(c.Shape.KvElementsOrZero());
        (string Name, int Length)[] tensors =
        [
            ("q", c.QLength ?? qElements), ("k", c.KLength ?? kvElements), ("v", kvElements), ("output", c.OutputLength ?? qElements),
            ("dOutput", c.DOutputLength ?? qElements), ("dq", c.DqLength ?? qElements), ("dk", c.DkLength ?? kvElements), ("dv", c.DvLength ?? kvElements),
        ];
        int biasLength = c.BiasShape is { } bs ? Elements(bs.Elements(c.Shape.SeqLenK)) : 0;
        (string Name, int Length)[] biases = [("bias", biasLength), ("dBias", c.DBiasLength ?? biasLength)];
        Dictionary<string, int> offsets = Offsets(tensors, c.Overlap);
        Dictionary<string, int> biasOffsets = Offsets(biases, c.Overlap);
        T[] arena = Tensors.Filled<T>(tensors.Sum(t => t.Length) + 64, Sentinel);
        TBias[] biasArena = Tensors.Filled<TBias>(biases.Sum(t => t.Length) + 64, Sentinel);
        float[] lse = Tensors.Filled<float>(c.LseLength ?? Elements(Math.Max(0, c.Shape.Batch) * (long)Math.Max(0, c.Shape.HeadsQ) * Math.Max(0, c.Shape.SeqLenQ)), Sentinel);
        byte[]? mask = c.MaskShape is { } ms ? new byte[Elements(ms.Elements(c.Shape.SeqLenK))] : null;
        var lengths = tensors.Concat(biases).ToDictionary(t => t.Name, t => t.Length);

        Refusal.Expect(c.Exception, c.ParamName, c.MessageParts, () => call(c.Shape,
            Slice("q"), Slice("k"), Slice("v"), Slice("output"), lse, Slice("dOutput"), Slice("dq"), Slice("dk"), Slice("dv"), c.Options,
            mask is null ? default : new MaskInput(mask, c.MaskShape!.Value),
            biasArena.AsSpan(biasOffsets["bias"], lengths["bias"]), c.BiasShape ?? default, biasArena.AsSpan(biasOffsets["dBias"], lengths["dBias"])));
        Assert.That(Tensors.Widen<T>(arena), Is.All.EqualTo(Sentinel), "a tensor was written");
        Assert.That(Tensors.Widen<TBias>(biasArena), Is.All.EqualTo(Sentinel), "the bias or its gradient was written");
        Assert.That(Tensors.Widen<float>(lse), Is.All.EqualTo(Sentinel), "lse was written");

        Span<T> Slice(string name) => arena.AsSpan(offsets[name], lengths[name]);
    }

    private static Dictionary<string, int> Offsets((string Name, int Length)[] tensors, (string Written, string Other)? overlap)
    {
        var offsets = new Dictionary<string, int>();
        int next = 0;
        foreach ((string name, int length) in tensors)
        {
            offsets[name] = next;
            next += length;
        }

        if (overlap is { } o && offsets.ContainsKey(o.Written))
            offsets[o.Written] = offsets[o.Other] + 4;
        return offsets;
    }

    private static int Elements(long count) => (int)Math.Max(0, count);

    [Test]
    public void SpanApi_RefusesABiasGradientOfAnotherTypeThanTheBiasOrFloat()
    {
        var bias = new BFloat16[14];
        var dBias = Tensors.Filled<Half>(14, Sentinel);
        var dq = Tensors.Filled<Half>(Valid.QElements, Sentinel);

        var thrown = Assert.Throws<ArgumentOutOfRangeException>(() => DynamicMaskAttention.Backward<Half>(Valid,
            new Half[Valid.QElements], new Half[Valid.KvElements], new Half[Valid.KvElements], new Half[Valid.QElements],
            new float[Valid.LseElements], new Half[Valid.QElements], dq, new Half[Valid.KvElements], new Half[Valid.KvElements],
            bias: new BiasInput(bias, new BroadcastShape(1, 2, 1)), dBias: new BiasGradientOutput(dBias)))!;

        Assert.That(thrown.ParamName, Is.EqualTo("dBias"));
        Assert.That(thrown.Message, Does.Contain("BFloat16").And.Contain("Float32").And.Contain("got Float16"));
        Assert.That(Tensors.Widen<Half>(dBias), Is.All.EqualTo(Sentinel));
        Assert.That(Tensors.Widen<Half>(dq), Is.All.EqualTo(Sentinel));
    }

    [Test]
    public void SpanApi_RefusesAnElementTypeOtherThanHalfOrBFloat16()
    {
        var dq = new double[Valid.QElements];
        Refusal.ExpectExactly(typeof(ArgumentException), "T", ["System.Double"], () => DynamicMaskAttention.Backward<double>(Valid,
            new double[Valid.QElements], new double[Valid.KvElements], new double[Valid.KvElements], new double[Valid.QElements],
            new float[Valid.LseElements], new double[Valid.QElements], dq, new double[Valid.KvElements], new double[Valid.KvElements]));
    }

    [Test]
    public void SpanApi_RefusesANegativeDevice()
    {
        var q = new Half[Valid.QElements];
        var kv = new Half[Valid.KvElements];
        var thrown = Assert.Throws<ArgumentOutOfRangeException>(() => DynamicMaskAttention.Backward<Half>(Valid, q, kv, kv,
            new Half[q.Length], new float[Valid.LseElements], new Half[q.Length], new Half[q.Length], new Half[kv.Length], new Half[kv.Length], device: -1))!;

        Assert.That(thrown.ParamName, Is.EqualTo("device"));
    }

    // ---- the device-pointer API: validated before any native call, so fake addresses are safe ----

    private static readonly nint Base = unchecked((nint)0x7f00_0000_0000);
    private static readonly nint BiasAt = Base + 0x100000, DBiasAt = Base + 0x100100, LseAt = Base + 0x200000, GradientsAt = Base + 0x400000;

    private static DeviceBackwardArgs ValidDeviceArgs()
    {
        AttentionShape s = Valid;
        nint qBytes = (nint)(s.QElements * 2), kvBytes = (nint)(s.KvElements * 2);
        var biasShape = new BroadcastShape(1, 2, 1);
        return new DeviceBackwardArgs
        {
            Forward = new DeviceForwardArgs
            {
                Shape = s,
                DType = ScalarType.BFloat16,
                Q = DeviceTensor.SequenceMajor(Base, s.SeqLenQ, s.HeadsQ, s.HeadDim),
                K = DeviceTensor.SequenceMajor(Base + qBytes, s.SeqLenK, s.HeadsKv, s.HeadDim),
                V = DeviceTensor.HeadMajor(Base + qBytes + kvBytes, s.SeqLenK, s.HeadsKv, s.HeadDim),
                Output = DeviceTensor.HeadMajor(Base + qBytes + 2 * kvBytes, s.SeqLenQ, s.HeadsQ, s.HeadDim),
                Lse = LseAt,
                Bias = DeviceBroadcastTensor.Contiguous(BiasAt, ScalarType.BFloat16, biasShape, s.SeqLenK),
            },
            DOutput = DeviceTensor.SequenceMajor(GradientsAt, s.SeqLenQ, s.HeadsQ, s.HeadDim),
            DQ = DeviceTensor.HeadMajor(GradientsAt + qBytes, s.SeqLenQ, s.HeadsQ, s.HeadDim),
            DK = DeviceTensor.SequenceMajor(GradientsAt + 2 * qBytes, s.SeqLenK, s.HeadsKv, s.HeadDim),
            DV = DeviceTensor.SequenceMajor(GradientsAt + 2 * qBytes + kvBytes, s.SeqLenK, s.HeadsKv, s.HeadDim),
            DBias = DeviceBroadcastTensor.Contiguous(DBiasAt, ScalarType.Float32, biasShape, s.SeqLenK),
        };
    }

    public sealed record DeviceCase(string Name, Func<DeviceBackwardArgs, DeviceBackwardArgs?> Change, Type Exception, string ParamName, params string[] MessageParts)
    {
        public AttentionOptions? Options { get; init; }

        public override string ToString() => Name;
    }

    private static IEnumerable<TestCaseData> DeviceCases() => new DeviceCase[]
    {
        new("ArgsNull", _ => null, typeof(ArgumentNullException), "args"),
        new("ForwardNull", a => a with { Forward = null! }, typeof(ArgumentNullException), "args.Forward", "forward call's arguments"),
        new("HeadDim80", a => Forward(a, f => f with { Shape = f.Shape with { HeadDim = 80 } }), OutOfRange, "args.Forward.Shape.HeadDim", "80"),
        new("DTypeFloat32", a => Forward(a, f => f with { DType = ScalarType.Float32 }), OutOfRange, "args.Forward.DType", "Float32"),
        new("ScaleNaN", a => a, OutOfRange, "options", "SoftmaxScale") { Options = new() { SoftmaxScale = float.NaN } },
        new("KMisaligned", a => Forward(a, f => f with { K = f.K with { Pointer = f.K.Pointer + 8 } }), Invalid, "args.Forward.K", "16-byte"),
        new("LseZero", a => Forward(a, f => f with { Lse = 0 }), typeof(ArgumentNullException), "args.Forward.Lse", "log-sum-exp", "0"),
        new("LseMisaligned", a => Forward(a, f => f with { Lse = LseAt + 2 }), Invalid, "args.Forward.Lse", "4-byte"),
        new("BiasStrideKey0", a => Forward(a, f => f with { Bias = f.Bias!.Value with { StrideKey = 0 } }), Invalid, "args.Forward.Bias.StrideKey", ">= 1", "got 0"),
        new("DOutputPointerZero", a => a with { DOutput = a.DOutput with { Pointer = 0 } }, typeof(ArgumentNullException), "args.DOutput"),
        new("DQPointerZero", a => a with { DQ = a.DQ with { Pointer = 0 } }, typeof(ArgumentNullException), "args.DQ"),
        new("DKMisaligned", a => a with { DK = a.DK with { Pointer = a.DK.Pointer + 4 } }, Invalid, "args.DK", "16-byte"),
        new("DVStrideNotAMultipleOf8", a => a with { DV = a.DV with { StrideSeq = 68 } }, Invalid, "args.DV.StrideSeq", "68"),
        new("DQStrideNegative", a => a with { DQ = a.DQ with { StrideHead = -160 } }, Invalid, "args.DQ.StrideHead", "-160"),
        new("DQOverlapsQ", a => a with { DQ = a.DQ with { Pointer = a.Forward.Q.Pointer + 64 } }, Invalid, "args.DQ", "args.DQ must not overlap args.Forward.Q"),
        new("DQOverlapsOutput", a => a with { DQ = a.DQ with { Pointer = a.Forward.Output.Pointer } }, Invalid, "args.DQ", "args.DQ must not overlap args.Forward.Output"),
        new("DQOverlapsDOutput", a => a with { DQ = a.DOutput }, Invalid, "args.DQ", "args.DQ must not overlap args.DOutput"),
        new("DKOverlapsDV", a => a with { DK = a.DV }, Invalid, "args.DK", "args.DK must not overlap args.DV"),
        new("DVOverlapsLse", a => a with { DV = a.DV with { Pointer = LseAt } }, Invalid, "args.DV", "args.DV must not overlap args.Forward.Lse"),
        new("DBiasWithoutBias", a => Forward(a, f => f with { Bias = null }), Invalid, "args.DBias", "args.Forward.Bias", "0x7f0000100100"),
        new("DBiasOfAnotherShape", a => a with { DBias = a.DBias!.Value with { Shape = new(1, 4, 1) } }, Invalid, "args.DBias.Shape", "Heads = 4"),
        new("DBiasFloat16ForABFloat16Bias", a => a with { DBias = a.DBias!.Value with { DType = ScalarType.Float16 } },
            OutOfRange, "args.DBias", "BFloat16", "got Float16"),
        new("DBiasMisaligned", a => a with { DBias = a.DBias!.Value with { Pointer = DBiasAt + 2 } }, Invalid, "args.DBias", "4-byte"),
        new("DBiasStrideNegative", a => a with { DBias = a.DBias!.Value with { StrideHead = -7 } }, Invalid, "args.DBias.StrideHead", "-7"),
        new("DBiasStrideKeyNegative", a => a with { DBias = a.DBias!.Value with { StrideKey = -2 } }, Invalid, "args.DBias.StrideKey", "-2"),
        new("DBiasOverlapsBias", a => a with { DBias = a.DBias!.Value with { Pointer = BiasAt + 4 } }, Invalid, "args.DBias", "args.DBias must not overlap args.Forward.Bias"),
        new("TileStatsMisaligned", a => a with { TileStats = GradientsAt - 4 }, Invalid, "args.TileStats", "8-byte"),
        new("TileStatsOverlapsDK", a => a with { TileStats = a.DK.Pointer }, Invalid, "args.", "args.TileStats", "args.DK"),
        new("WorkspaceOverlapsDV", a => a with { Workspace = a.DV.Pointer + 16, WorkspaceBytes = 32 }, Invalid, "args.", "args.Workspace", "args.DV"),
        new("WorkspaceBytesNegative", a => a with { WorkspaceBytes = -1 }, OutOfRange, "args.WorkspaceBytes", "-1"),
    }.Select(c => new TestCaseData(c).SetArgDisplayNames(c.Name));

    private static DeviceBackwardArgs Forward(DeviceBackwardArgs args, Func<DeviceForwardArgs, DeviceForwardArgs> change) =>
        args with { Forward = change(args.Forward) };

    [TestCaseSource(nameof(DeviceCases))]
    public void InvalidDeviceCall_IsRefusedBeforeAnyNativeCall(DeviceCase c)
    {
        DeviceBackwardArgs? args = c.Change(ValidDeviceArgs());

        Refusal.Expect(c.Exception, c.ParamName, c.MessageParts, () => DynamicMaskAttention.Backward(args!, c.Options));
    }

    [Test]
    public void ValidDeviceArgs_PassValidation_WithOrWithoutBiasGradientAndWithAWorkspace()
    {
        DeviceBackwardArgs args = ValidDeviceArgs();

        Assert.DoesNotThrow(() => ArgumentValidation.ValidateDeviceBackward(args, null));
        Assert.DoesNotThrow(() => ArgumentValidation.ValidateDeviceBackward(args with { DBias = null }, null));
        Assert.DoesNotThrow(() => ArgumentValidation.ValidateDeviceBackward(
            args with { DBias = args.DBias!.Value with { DType = ScalarType.BFloat16 }, Workspace = Base + 0x800000, WorkspaceBytes = 1 << 20 }, null));
    }

    [Test]
    public void ForwardsOwnTileStatsAndWorkspace_AreNeitherCheckedNorReserved()
    {
        DeviceBackwardArgs args = ValidDeviceArgs();

        // The forward call's scratch and counters lie over the backward's gradients: the backward ignores them.
        Assert.DoesNotThrow(() => ArgumentValidation.ValidateDeviceBackward(
            Forward(args, f => f with { TileStats = args.DQ.Pointer + 2, Workspace = args.DK.Pointer + 8, WorkspaceBytes = -5 }), null));
    }

    private static IEnumerable<TestCaseData> WorkspaceSizeCases() => new (string Name, ScalarType DType, BroadcastShape? Mask, BroadcastShape? Bias, Type Exception, string ParamName, string[] MessageParts)[]
    {
        ("DTypeFloat32", ScalarType.Float32, null, null, OutOfRange, "dtype", ["Float32"]),
        ("MaskRows4", ScalarType.BFloat16, new(2, 2, 4), null, OutOfRange, "mask", ["mask.Rows", "4"]),
        ("BiasGradientHeads3", ScalarType.Float16, null, new(1, 3, 1), OutOfRange, "biasGradient", ["biasGradient.Heads", "3"]),
        ("BiasGradientBatch0", ScalarType.Float16, new(1, 1, 1), new(0, 1, 1), OutOfRange, "biasGradient", ["biasGradient.Batch", "0"]),
    }.Select(c => new TestCaseData(c.DType, c.Mask, c.Bias, c.Exception, c.ParamName, c.MessageParts).SetArgDisplayNames(c.Name));

    [TestCaseSource(nameof(WorkspaceSizeCases))]
    public void BackwardWorkspaceSize_RefusesInvalidArgumentsBeforeAnyNativeCall(
        ScalarType dtype, BroadcastShape? mask, BroadcastShape? biasGradient, Type exception, string paramName, string[] messageParts)
    {
        Refusal.ExpectExactly(exception, paramName, messageParts, () => DynamicMaskAttention.BackwardWorkspaceSize(Valid, dtype, mask, biasGradient));
    }

    [TestCase(48, ScalarType.BFloat16, "headDim", "48")]
    [TestCase(64, ScalarType.Float32, "dtype", "Float32")]
    public void BackwardTileShape_RefusesUnsupportedArguments(int headDim, ScalarType dtype, string paramName, string actual)
    {
        Refusal.ExpectExactly(typeof(ArgumentOutOfRangeException), paramName, [actual], () => DynamicMaskAttention.BackwardTileShape(headDim, dtype));
    }
}

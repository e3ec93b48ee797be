using FlashDmAttn.Reference;

namespace FlashDmAttn.Tests;

/// <summary>
/// Every argument check, through every entry point that validates host arguments (the double reference, the
/// Half reference and the Span API, which validates before touching the GPU, so these run anywhere) and through
/// the device-pointer API with fake pointers. Each refusal: the exception type, a message naming the argument
/// and the value it got, and outputs left as they were.
/// </summary>
public class ArgumentValidationTests
{
    public enum Backend { ReferenceDouble, ReferenceHalf, SpanApi }

    private const double Sentinel = 42;
    internal static readonly AttentionShape Valid = new(2, 5, 7, 4, 2, 32);

    /// <summary>One invalid call: what to change from a valid one, and the refusal expected.</summary>
    public sealed record HostCase(string Name, Type Exception, string ParamName, params string[] MessageParts)
    {
        public AttentionShape Shape { get; init; } = Valid;
        public int? QLength { get; init; }
        public int? KLength { get; init; }
        public int? VLength { get; init; }
        public int? OutputLength { get; init; }
        public int? LseLength { get; init; }
        public AttentionOptions? Options { get; init; }
        public BroadcastShape? MaskShape { get; init; }
        public int? MaskLength { get; init; }
        public BroadcastShape? BiasShape { get; init; }
        public int? BiasLength { get; init; }
        public bool OutputOverlapsQ { get; init; }

        public override string ToString() => Name;
    }

    private static readonly Type OutOfRange = typeof(ArgumentOutOfRangeException), Invalid = typeof(ArgumentException);

    private static IEnumerable<HostCase> HostCases() =>
    [
        new("Batch0", OutOfRange, "shape.Batch", "0") { Shape = Valid with { Batch = 0 } },
        new("SeqLenQ0", OutOfRange, "shape.SeqLenQ", "0") { Shape = Valid with { SeqLenQ = 0 } },
        new("SeqLenKNegative", OutOfRange, "shape.SeqLenK", "-1") { Shape = Valid with { SeqLenK = -1 } },
        new("HeadsQ0", OutOfRange, "shape.HeadsQ", "0") { Shape = Valid with { HeadsQ = 0 } },
        new("HeadsKv0", OutOfRange, "shape.HeadsKv", "0") { Shape = Valid with { HeadsKv = 0 } },
        new("HeadDim48", OutOfRange, "shape.HeadDim", "32, 64, 96, 128, 192, 256", "48") { Shape = Valid with { HeadDim = 48 } },
        new("HeadDim512", OutOfRange, "shape.HeadDim", "512") { Shape = Valid with { HeadDim = 512 } },
        new("HeadsQNotAMultipleOfHeadsKv", Invalid, "shape", "HeadsKv", "6") { Shape = Valid with { HeadsQ = 6, HeadsKv = 4 } },
        new("QTooShort", Invalid, "q", "1280", "1279") { QLength = 1279 },
        new("QTooLong", Invalid, "q", "1280", "1281") { QLength = 1281 },
        new("KTooShort", Invalid, "k", "896", "895") { KLength = 895 },
        new("VTooLong", Invalid, "v", "896", "960") { VLength = 960 },
        new("OutputTooShort", Invalid, "output", "1280", "1000") { OutputLength = 1000 },
        new("LseTooShort", Invalid, "lse", "40", "39") { LseLength = 39 },
        new("MaskBatch3", OutOfRange, "mask.Shape", "mask.Shape.Batch", "3") { MaskShape = new(3, 1, 1) },
        new("MaskHeads3", OutOfRange, "mask.Shape", "mask.Shape.Heads", "3") { MaskShape = new(1, 3, 1) },
        new("MaskRows4", OutOfRange, "mask.Shape", "mask.Shape.Rows", "4") { MaskShape = new(1, 1, 4) },
        new("MaskHeads0", OutOfRange, "mask.Shape", "mask.Shape.Heads", "0") { MaskShape = new(1, 0, 1) },
        new("MaskLengthOffByOne", Invalid, "mask", "70", "69") { MaskShape = new(2, 1, 5), MaskLength = 69 },
        new("BiasBatch0", OutOfRange, "bias.Shape", "bias.Shape.Batch", "0") { BiasShape = new(0, 1, 1) },
        new("BiasHeads8", OutOfRange, "bias.Shape", "bias.Shape.Heads", "8") { BiasShape = new(1, 8, 1) },
        new("BiasRows7", OutOfRange, "bias.Shape", "bias.Shape.Rows", "7") { BiasShape = new(2, 4, 7) },
        new("BiasLengthOffByOne", Invalid, "bias", "14", "15") { BiasShape = new(1, 2, 1), BiasLength = 15 },
        new("ScaleZero", OutOfRange, "options", "SoftmaxScale", "0") { Options = new() { SoftmaxScale = 0 } },
        new("ScaleNegative", OutOfRange, "options", "SoftmaxScale", (-1f).ToString()) { Options = new() { SoftmaxScale = -1 } },
        new("ScaleNaN", OutOfRange, "options", "SoftmaxScale", float.NaN.ToString()) { Options = new() { SoftmaxScale = float.NaN } },
        new("ScaleInfinite", OutOfRange, "options", "SoftmaxScale", float.PositiveInfinity.ToString()) { Options = new() { SoftmaxScale = float.PositiveInfinity } },
        new("SoftcapNegative", OutOfRange, "options", "Softcap", (-0.5f).ToString()) { Options = new() { Softcap = -0.5f } },
        new("SoftcapNaN", OutOfRange, "options", "Softcap", float.NaN.ToString()) { Options = new() { Softcap = float.NaN } },
        new("SoftcapInfinite", OutOfRange, "options", "Softcap", float.PositiveInfinity.ToString()) { Options = new() { Softcap = float.PositiveInfinity } },
        new("OutputOverlapsQ", Invalid, "output", "output must not overlap q") { OutputOverlapsQ = true },
    ];

    private static IEnumerable<TestCaseData> HostCasesPerBackend() =>
        from backend in Enum.GetValues<Backend>()
        from c in HostCases()
        select new TestCaseData(backend, c).SetArgDisplayNames(backend.ToString(), c.Name);

    [TestCaseSource(nameof(HostCasesPerBackend))]
    public void InvalidHostCall_IsRefusedAndWritesNothing(Backend backend, HostCase c)
    {
        switch (backend)
        {
            case Backend.ReferenceDouble:
                CheckRefused<double, double>(c, (shape, q, k, v, output, options, mask, maskShape, bias, biasShape, lse) =>
                    ReferenceAttention.Forward(shape, q, k, v, output, options,
                        mask is null ? default : new MaskInput(mask, maskShape),
                        bias is null ? default : new ReferenceBias(bias, biasShape), lse));
                break;
            case Backend.ReferenceHalf:
                CheckRefused<Half, float>(c, (shape, q, k, v, output, options, mask, maskShape, bias, biasShape, lse) =>
                    ReferenceAttention.Forward<Half>(shape, q, k, v, output, options,
                        mask is null ? default : new MaskInput(mask, maskShape),
                        bias is null ? default : new BiasInput(Tensors.Narrow<float>(bias), biasShape), lse));
                break;
            default:
                CheckRefused<Half, float>(c, (shape, q, k, v, output, options, mask, maskShape, bias, biasShape, lse) =>
                    DynamicMaskAttention.Forward<Half>(shape, q, k, v, output, options,
                        mask is null ? default : new MaskInput(mask, maskShape),
                        bias is null ? default : new BiasInput(Tensors.Narrow<float>(bias), biasShape), lse));
                break;
        }
    }

    private delegate void HostCall<T, TLse>(
        AttentionShape shape, ReadOnlySpan<T> q, ReadOnlySpan<T> k, ReadOnlySpan<T> v, Span<T> output,
        AttentionOptions? options, byte[]? mask, BroadcastShape maskShape, double[]? bias, BroadcastShape biasShape, Span<TLse> lse);

    private static void CheckRefused<T, TLse>(HostCase c, HostCall<T, TLse> call) where T : unmanaged where TLse : unmanaged
    {
        int qLength = c.QLength ?? Elements(c.Shape.QElementsOrZero());
        int kvLength = Elements(c.Shape.KvElementsOrZero());
        int outputLength = c.OutputLength ?? qLength;
        T[] buffer = Tensors.Filled<T>(c.OutputOverlapsQ ? qLength + qLength / 2 : qLength + outputLength, Sentinel);
        Memory<T> q = buffer.AsMemory(0, qLength);
        Memory<T> output = c.OutputOverlapsQ ? buffer.AsMemory(qLength / 2, outputLength) : buffer.AsMemory(qLength, outputLength);
        T[] k = Tensors.Filled<T>(c.KLength ?? kvLength, 1), v = Tensors.Filled<T>(c.VLength ?? kvLength, 1);
        TLse[] lse = Tensors.Filled<TLse>(c.LseLength ?? Elements(Valid.LseElements), Sentinel);
        byte[]? mask = c.MaskShape is { } ms ? new byte[c.MaskLength ?? Elements(ms.Batch * ms.Heads * ms.Rows * (long)c.Shape.SeqLenK)] : null;
        double[]? bias = c.BiasShape is { } bs ? new double[c.BiasLength ?? Elements(bs.Batch * bs.Heads * bs.Rows * (long)c.Shape.SeqLenK)] : null;

        Refusal.Expect(c.Exception, c.ParamName, c.MessageParts, () => call(c.Shape, q.Span, k, v, output.Span, c.Options,
            mask, c.MaskShape ?? default, bias, c.BiasShape ?? default, lse));
        Assert.That(Tensors.Widen<T>(buffer), Is.All.EqualTo(Sentinel), "output (or q) was written");
        Assert.That(Tensors.Widen<TLse>(lse), Is.All.EqualTo(Sentinel), "lse was written");
    }

    private static int Elements(long count) => (int)Math.Max(0, count);

    [Test]
    public void ReferenceGenericOverload_RefusesAnElementTypeOtherThanHalfOrBFloat16()
    {
        var output = new float[Valid.QElements];
        Refusal.ExpectExactly(typeof(ArgumentException), "T", ["System.Single"], () => ReferenceAttention.Forward<float>(
            Valid, new float[Valid.QElements], new float[Valid.KvElements], new float[Valid.KvElements], output));

        Assert.That(output, Is.All.Zero);
    }

    [Test]
    public void SpanApi_RefusesAnElementTypeOtherThanHalfOrBFloat16()
    {
        var output = new double[Valid.QElements];
        Refusal.ExpectExactly(typeof(ArgumentException), "T", ["System.Double"], () => DynamicMaskAttention.Forward<double>(
            Valid, new double[Valid.QElements], new double[Valid.KvElements], new double[Valid.KvElements], output));
    }

    [Test]
    public void SpanApi_RefusesANegativeDevice()
    {
        var q = new Half[Valid.QElements];
        var kv = new Half[Valid.KvElements];
        Assert.Throws<ArgumentOutOfRangeException>(() => DynamicMaskAttention.Forward<Half>(Valid, q, kv, kv, new Half[Valid.QElements], device: -1));
    }

    // ---- the device-pointer API: validated before any native call, so fake addresses are safe ----

    internal static readonly nint Base = unchecked((nint)0x7f00_0000_0000);

    internal static DeviceForwardArgs ValidDeviceArgs()
    {
        AttentionShape s = Valid;
        long qBytes = s.QElements * 2, kvBytes = s.KvElements * 2;
        return new DeviceForwardArgs
        {
            Shape = s,
            DType = ScalarType.BFloat16,
            Q = DeviceTensor.SequenceMajor(Base, s.SeqLenQ, s.HeadsQ, s.HeadDim),
            K = DeviceTensor.SequenceMajor(Base + (nint)qBytes, s.SeqLenK, s.HeadsKv, s.HeadDim),
            V = DeviceTensor.SequenceMajor(Base + (nint)(qBytes + kvBytes), s.SeqLenK, s.HeadsKv, s.HeadDim),
            Output = DeviceTensor.HeadMajor(Base + (nint)(qBytes + 2 * kvBytes), s.SeqLenQ, s.HeadsQ, s.HeadDim),
        };
    }

    public sealed record DeviceCase(string Name, Func<DeviceForwardArgs, DeviceForwardArgs?> Change, Type Exception, string ParamName, params string[] MessageParts)
    {
        public AttentionOptions? Options { get; init; }

        public override string ToString() => Name;
    }

    private static IEnumerable<TestCaseData> DeviceCases() => new DeviceCase[]
    {
        new("ArgsNull", _ => null, typeof(ArgumentNullException), "args"),
        new("HeadDim80", a => a with { Shape = a.Shape with { HeadDim = 80 } }, OutOfRange, "args.Shape.HeadDim", "80"),
        new("DTypeFloat32", a => a with { DType = ScalarType.Float32 }, OutOfRange, "args.DType", "Float32"),
        new("QPointerZero", a => a with { Q = a.Q with { Pointer = 0 } }, typeof(ArgumentNullException), "args.Q"),
        new("KMisaligned", a => a with { K = a.K with { Pointer = a.K.Pointer + 8 } }, Invalid, "args.K", "16-byte"),
        new("VStrideNotAMultipleOf8", a => a with { V = a.V with { StrideSeq = 68 } }, Invalid, "args.V.StrideSeq", "68"),
        new("OutputStrideNegative", a => a with { Output = a.Output with { StrideHead = -160 } }, Invalid, "args.Output.StrideHead", "-160"),
        new("OutputOverlapsQ", a => a with { Output = a.Output with { Pointer = a.Q.Pointer + 64 } }, Invalid, "args.Output", "args.Q"),
        new("MaskHeads3", a => a with { Mask = DeviceBroadcastTensor.Contiguous(Base + 0x100000, ScalarType.BFloat16, new(1, 3, 1), 7) },
            OutOfRange, "args.Mask.Shape", "Heads", "3"),
        new("MaskPointerZero", a => a with { Mask = DeviceBroadcastTensor.Contiguous(0, ScalarType.BFloat16, new(1, 1, 1), 7) },
            typeof(ArgumentNullException), "args.Mask"),
        new("BiasMisaligned", a => a with { Bias = DeviceBroadcastTensor.Contiguous(Base + 0x100002, ScalarType.Float32, new(1, 1, 1), 7) },
            Invalid, "args.Bias", "4-byte"),
        new("BiasDTypeUnknown", a => a with { Bias = DeviceBroadcastTensor.Contiguous(Base + 0x100000, (ScalarType)9, new(1, 1, 1), 7) },
            OutOfRange, "args.Bias", "9"),
        new("BiasStrideNegative", a => a with { Bias = new DeviceBroadcastTensor(Base + 0x100000, ScalarType.Float16, new(2, 1, 5), 35, 0, -7) },
            Invalid, "args.Bias.StrideRow", "-7"),
        new("MaskStrideKey0", a => a with { Mask = new DeviceBroadcastTensor(Base + 0x100000, default, new(1, 1, 5), 0, 0, 7, StrideKey: 0) },
            Invalid, "args.Mask.StrideKey", ">= 1", "got 0"),
        new("BiasStrideKeyNegative", a => a with { Bias = new DeviceBroadcastTensor(Base + 0x100000, ScalarType.Float32, new(1, 2, 1), 0, 1, 0, StrideKey: -2) },
            Invalid, "args.Bias.StrideKey", "-2"),
        new("StridedBiasOverlapsOutput", a => a with { Bias = new DeviceBroadcastTensor(a.Output.Pointer - 14, ScalarType.BFloat16, new(1, 2, 1), 0, 1, 0, StrideKey: 2) },
            Invalid, "args.Output", "args.Output must not overlap args.Bias"),
        new("LseMisaligned", a => a with { Lse = Base + 0x200002 }, Invalid, "args.Lse", "4-byte"),
        new("TileStatsMisaligned", a => a with { TileStats = Base + 0x200004 }, Invalid, "args.TileStats", "8-byte"),
        new("LseOverlapsOutput", a => a with { Lse = a.Output.Pointer }, Invalid, "args.", "args.Lse", "args.Output"),
        new("SoftcapNegative", a => a, OutOfRange, "options", "Softcap", "-1") { Options = new() { Softcap = -1 } },
        new("WorkspaceBytesNegative", a => a with { WorkspaceBytes = -1 }, OutOfRange, "args.WorkspaceBytes", "-1"),
        new("WorkspaceBytesZero", a => a with { Workspace = Base + 0x300000 }, OutOfRange, "args.WorkspaceBytes", "> 0", "0x7f0000300000"),
        new("WorkspaceMisaligned", a => a with { Workspace = Base + 0x300008, WorkspaceBytes = 64 }, Invalid, "args.Workspace", "16-byte"),
        new("WorkspaceOverlapsQ", a => a with { Workspace = a.Q.Pointer + 0x100, WorkspaceBytes = 64 }, Invalid, "args.Workspace", "args.Workspace must not overlap args.Q"),
        new("WorkspaceOverlapsMask", a => a with { Mask = DeviceBroadcastTensor.Contiguous(Base + 0x100000, default, new(1, 1, 5), 7), Workspace = Base + 0x100000 - 16, WorkspaceBytes = 17 },
            Invalid, "args.Workspace", "args.Workspace must not overlap args.Mask"),
        new("WorkspaceOverlapsOutput", a => a with { Workspace = a.Output.Pointer - 16, WorkspaceBytes = 32 }, Invalid, "args.", "args.Output", "args.Workspace"),
        new("WorkspaceOverlapsLse", a => a with { Lse = Base + 0x200000, Workspace = Base + 0x200000 + 144, WorkspaceBytes = 64 }, Invalid, "args.", "args.Lse", "args.Workspace"),
        new("WorkspacePastTheAddressSpace", a => a with { Workspace = unchecked((nint)0xffff_ffff_ffff_ff00), WorkspaceBytes = 0x100 },
            OutOfRange, "args.Workspace", "64-bit", "256"),
    }.Select(c => new TestCaseData(c).SetArgDisplayNames(c.Name));

    [TestCaseSource(nameof(DeviceCases))]
    public void InvalidDeviceCall_IsRefusedBeforeAnyNativeCall(DeviceCase c)
    {
        DeviceForwardArgs? args = c.Change(ValidDeviceArgs());

        Refusal.Expect(c.Exception, c.ParamName, c.MessageParts, () => DynamicMaskAttention.Forward(args!, c.Options));
    }

    [Test]
    public void DeviceArgs_WithWorkspaceBesideTheTensorsOrNone_PassValidation()
    {
        DeviceForwardArgs args = ValidDeviceArgs();
        long outputBytes = Valid.QElements * 2;

        Assert.DoesNotThrow(() => ArgumentValidation.ValidateDeviceForward(
            args with { Workspace = args.Output.Pointer + (nint)outputBytes, WorkspaceBytes = 1 << 20 }, null));
        Assert.DoesNotThrow(() => ArgumentValidation.ValidateDeviceForward(
            args with { Workspace = args.Q.Pointer - 4096, WorkspaceBytes = 4096 }, null));
        Assert.DoesNotThrow(() => ArgumentValidation.ValidateDeviceForward(args with { WorkspaceBytes = 4096 }, null));
    }

    [Test]
    public void DeviceArgs_WithAKeyStridedBiasOrASingleKeyOfAnyStride_PassValidation()
    {
        DeviceForwardArgs args = ValidDeviceArgs();

        // The paper's bias (B, Hkv, 1, Lk) as a view of a (B, Lk, Hkv) tensor: key stride Hkv, head stride 1.
        Assert.DoesNotThrow(() => ArgumentValidation.ValidateDeviceForward(args with
        {
            Bias = new DeviceBroadcastTensor(Base + 0x100000, ScalarType.Float32, new(2, 2, 1), 14, 1, 0, StrideKey: 2),
        }, null));
        // As for the other dimensions, the stride of a single key is never used.
        Assert.DoesNotThrow(() => ArgumentValidation.ValidateDeviceForward(args with
        {
            Shape = Valid with { SeqLenK = 1 },
            Mask = new DeviceBroadcastTensor(Base + 0x100000, default, new(1, 1, 5), 0, 0, 1, StrideKey: 0),
        }, null));
    }

    private static IEnumerable<TestCaseData> WorkspaceSizeCases() => new (string Name, AttentionShape Shape, ScalarType DType, BroadcastShape? Mask, Type Exception, string ParamName, string[] MessageParts)[]
    {
        ("HeadDim48", Valid with { HeadDim = 48 }, ScalarType.BFloat16, null, OutOfRange, "shape.HeadDim", ["48"]),
        ("HeadsQNotAMultipleOfHeadsKv", Valid with { HeadsQ = 6, HeadsKv = 4 }, ScalarType.Float16, null, Invalid, "shape", ["HeadsKv", "6"]),
        ("DTypeFloat32", Valid, ScalarType.Float32, new(1, 1, 1), OutOfRange, "dtype", ["Float32"]),
        ("MaskHeads3", Valid, ScalarType.Float16, new(1, 3, 1), OutOfRange, "mask", ["mask.Heads", "3"]),
        ("MaskRows4", Valid, ScalarType.BFloat16, new(2, 2, 4), OutOfRange, "mask", ["mask.Rows", "4"]),
    }.Select(c => new TestCaseData(c.Shape, c.DType, c.Mask, c.Exception, c.ParamName, c.MessageParts).SetArgDisplayNames(c.Name));

    [TestCaseSource(nameof(WorkspaceSizeCases))]
    public void ForwardWorkspaceSize_RefusesInvalidArgumentsBeforeAnyNativeCall(
        AttentionShape shape, ScalarType dtype, BroadcastShape? mask, Type exception, string paramName, string[] messageParts)
    {
        Refusal.ExpectExactly(exception, paramName, messageParts, () => DynamicMaskAttention.ForwardWorkspaceSize(shape, dtype, mask));
    }

    [TestCase(48, ScalarType.BFloat16, "headDim", "48")]
    [TestCase(64, ScalarType.Float32, "dtype", "Float32")]
    public void ForwardTileShape_RefusesUnsupportedArguments(int headDim, ScalarType dtype, string paramName, string actual)
    {
        Refusal.ExpectExactly(typeof(ArgumentOutOfRangeException), paramName, [actual], () => DynamicMaskAttention.ForwardTileShape(headDim, dtype));
    }
}

internal static class AttentionShapeExtensions
{
    // Element counts of a possibly invalid shape, for sizing the spans of a call that must be refused.
    public static long QElementsOrZero(this AttentionShape s) => Math.Max(0, s.Batch) * (long)Math.Max(0, s.SeqLenQ) * Math.Max(0, s.HeadsQ) * Math.Max(0, s.HeadDim);

    public static long KvElementsOrZero(this AttentionShape s) => Math.Max(0, s.Batch) * (long)Math.Max(0, s.SeqLenK) * Math.Max(0, s.HeadsKv) * Math.Max(0, s.HeadDim);
}

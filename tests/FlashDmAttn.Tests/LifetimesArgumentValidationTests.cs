using FlashDmAttn.Reference;

namespace FlashDmAttn.Tests;

/// <summary>
/// Every check that key lifetimes, the top-k builder and the decode cache add, without a GPU: host lifetimes through
/// the double reference, the Half reference and the Span API (refused before anything is written, values included);
/// device lifetimes, builder and cache arguments with fake pointers (refused before any native call). Each message
/// names the argument, what it must be and what it got.
/// </summary>
public class LifetimesArgumentValidationTests
{
    private const double Sentinel = 42;
    private static readonly AttentionShape Valid = ArgumentValidationTests.Valid;
    private static readonly Type OutOfRange = typeof(ArgumentOutOfRangeException), Invalid = typeof(ArgumentException);

    /// <summary>Invalid host lifetimes: their shape, a change to valid pairs, and the refusal expected.</summary>
    public sealed record HostCase(string Name, BroadcastShape Shape, Type Exception, string ParamName, params string[] MessageParts)
    {
        public int? Length { get; init; }
        public (int Index, KeyLifetime Pair)? Change { get; init; }
        public bool WithMask { get; init; }

        public override string ToString() => Name;
    }

    private static IEnumerable<HostCase> HostCases() =>
    [
        new("WithMask", new(1, 1, 1), Invalid, "lifetimes", "lifetimes must be default", "mask is present", "7 pairs") { WithMask = true },
        new("Batch3", new(3, 1, 1), OutOfRange, "lifetimes.Shape", "lifetimes.Shape.Batch", "1 or Batch (2)", "got 3"),
        new("Heads3", new(1, 3, 1), OutOfRange, "lifetimes.Shape", "lifetimes.Shape.Heads", "1, HeadsKv (2) or HeadsQ (4)", "got 3"),
        new("LengthOffByOne", new(2, 2, 1), Invalid, "lifetimes", "28 elements", "Shape.Batch * Shape.Heads * Lk", "got 27") { Length = 27 },
        new("FirstNegative", new(1, 1, 1), OutOfRange, "lifetimes", "lifetimes[3] (batch 0, head 0, key 3)", "0 <= First <= End <= SeqLenQ (5)", "First = -1, End = 2")
            { Change = (3, new(-1, 2)) },
        new("EndBeforeFirst", new(2, 2, 1), OutOfRange, "lifetimes", "lifetimes[22] (batch 1, head 1, key 1)", "First = 3, End = 2") { Change = (22, new(3, 2)) },
        new("EndPastSeqLenQ", new(1, 4, 1), OutOfRange, "lifetimes", "lifetimes[27] (batch 0, head 3, key 6)", "SeqLenQ (5)", "First = 0, End = 6")
            { Change = (27, new(0, 6)) },
    ];

    private static IEnumerable<TestCaseData> HostCasesPerBackend() =>
        from backend in Enum.GetValues<ArgumentValidationTests.Backend>()
        from c in HostCases()
        select new TestCaseData(backend, c).SetArgDisplayNames(backend.ToString(), c.Name);

    [TestCaseSource(nameof(HostCasesPerBackend))]
    public void InvalidHostLifetimes_AreRefusedAndNothingIsWritten(ArgumentValidationTests.Backend backend, HostCase c)
    {
        KeyLifetime[] pairs = Enumerable.Repeat(new KeyLifetime(0, Valid.SeqLenQ), c.Length ?? (int)c.Shape.Elements(Valid.SeqLenK)).ToArray();
        if (c.Change is { } change)
            pairs[change.Index] = change.Pair;
        byte[]? mask = c.WithMask ? new byte[Valid.SeqLenK] : null;
        double[] output = Enumerable.Repeat(Sentinel, (int)Valid.QElements).ToArray();
        Half[] halfOutput = Tensors.Filled<Half>(Valid.QElements, Sentinel);

        Refusal.Expect(c.Exception, c.ParamName, c.MessageParts, () =>
        {
            var lifetimes = new LifetimesInput(pairs, c.Shape.Batch, c.Shape.Heads);
            MaskInput maskInput = mask is null ? default : new MaskInput(mask, new(1, 1, 1));
            switch (backend)
            {
                case ArgumentValidationTests.Backend.ReferenceDouble:
                    ReferenceAttention.Forward(Valid, new double[Valid.QElements], new double[Valid.KvElements], new double[Valid.KvElements], output,
                        mask: maskInput, lifetimes: lifetimes);
                    break;
                case ArgumentValidationTests.Backend.ReferenceHalf:
                    ReferenceAttention.Forward<Half>(Valid, new Half[Valid.QElements], new Half[Valid.KvElements], new Half[Valid.KvElements], halfOutput,
                        mask: maskInput, lifetimes: lifetimes);
                    break;
                default:
                    DynamicMaskAttention.Forward<Half>(Valid, new Half[Valid.QElements], new Half[Valid.KvElements], new Half[Valid.KvElements], halfOutput,
                        mask: maskInput, lifetimes: lifetimes);
                    break;
            }
        });
        Assert.That(output, Is.All.EqualTo(Sentinel), "output was written");
        Assert.That(Tensors.Widen<Half>(halfOutput), Is.All.EqualTo(Sentinel), "output was written");
    }

    [Test]
    public void HostBackward_RefusesLifetimesWithAMask()
    {
        var q = new Half[Valid.QElements];
        var kv = new Half[Valid.KvElements];
        var lse = new float[Valid.LseElements];
        Half[] dq = Tensors.Filled<Half>(Valid.QElements, Sentinel);
        KeyLifetime[] pairs = new KeyLifetime[Valid.SeqLenK];

        Refusal.ExpectExactly(Invalid, "lifetimes", ["lifetimes must be default", "mask is present"], () =>
            DynamicMaskAttention.Backward<Half>(Valid, q, kv, kv, q, lse, q, dq, new Half[Valid.KvElements], new Half[Valid.KvElements],
                mask: new MaskInput(new byte[Valid.SeqLenK], new(1, 1, 1)), lifetimes: new LifetimesInput(pairs, 1, 1)));
        Assert.That(Tensors.Widen<Half>(dq), Is.All.EqualTo(Sentinel), "dq was written");
    }

    [Test]
    public void ReferenceBackward_RefusesAPairPastSeqLenQ()
    {
        KeyLifetime[] pairs = Enumerable.Repeat(new KeyLifetime(1, 3), Valid.SeqLenK).ToArray();
        pairs[4] = new KeyLifetime(2, 9);
        var dq = new double[Valid.QElements];

        Refusal.ExpectExactly(OutOfRange, "lifetimes", ["lifetimes[4]", "SeqLenQ (5)", "End = 9"], () =>
            ReferenceAttention.Backward(Valid, new double[Valid.QElements], new double[Valid.KvElements], new double[Valid.KvElements],
                new double[Valid.QElements], dq, new double[Valid.KvElements], new double[Valid.KvElements], lifetimes: new LifetimesInput(pairs, 1, 1)));
    }

    [Test]
    public void Reference_WithLifetimes_IsTheReferenceWithTheirDenseMask()
    {
        var random = new TestRandom();
        var shape = new AttentionShape(2, 9, 13, 4, 2, 32);
        var lifetimesShape = new BroadcastShape(2, 2, 1);
        KeyLifetime[] pairs = random.Lifetimes(lifetimesShape, shape.SeqLenQ, shape.SeqLenK);
        byte[] dense = new byte[lifetimesShape.Elements(shape.SeqLenK) * shape.SeqLenQ];
        for (int plane = 0; plane < 4; plane++)
            for (int i = 0; i < shape.SeqLenQ; i++)
                for (int j = 0; j < shape.SeqLenK; j++)
                    dense[(plane * shape.SeqLenQ + i) * shape.SeqLenK + j] = (byte)(pairs[plane * shape.SeqLenK + j].First <= i && i < pairs[plane * shape.SeqLenK + j].End ? 1 : 0);
        double[] q = random.Uniform(shape.QElements, -1, 1), k = random.Uniform(shape.KvElements, -1, 1), v = random.Uniform(shape.KvElements, -1, 1);
        var options = new AttentionOptions { Causal = true };

        var output = new double[shape.QElements];
        var lse = new double[shape.LseElements];
        var expected = new double[shape.QElements];
        var expectedLse = new double[shape.LseElements];
        ReferenceAttention.Forward(shape, q, k, v, output, options, lse: lse, lifetimes: new LifetimesInput(pairs, 2, 2));
        ReferenceAttention.Forward(shape, q, k, v, expected, options, new MaskInput(dense, lifetimesShape with { Rows = shape.SeqLenQ }), lse: expectedLse);

        Assert.That(output, Is.EqualTo(expected), random.ToString());
        Assert.That(lse, Is.EqualTo(expectedLse), random.ToString());
    }

    // ---- device lifetimes: fake addresses, refused before any native call ----

    private static readonly nint Base = ArgumentValidationTests.Base;
    private static readonly nint LifetimesAt = Base + 0x100000;

    private static DeviceForwardArgs ValidDeviceArgs() =>
        ArgumentValidationTests.ValidDeviceArgs() with { Lifetimes = DeviceLifetimes.Contiguous(LifetimesAt, 2, 2, Valid.SeqLenK) };

    public sealed record DeviceCase(string Name, Func<DeviceForwardArgs, DeviceForwardArgs> Change, Type Exception, string ParamName, params string[] MessageParts)
    {
        public override string ToString() => Name;
    }

    private static IEnumerable<DeviceCase> DeviceCases() =>
    [
        new("WithMask", a => a with { Mask = DeviceBroadcastTensor.Contiguous(Base + 0x200000, default, new(1, 1, 1), 7) }, Invalid, "Lifetimes",
            "Lifetimes must be null when", "Mask is set", "0x7f0000100000", "0x7f0000200000"),
        new("PointerZero", a => a with { Lifetimes = DeviceLifetimes.Contiguous(0, 1, 1, 7) }, typeof(ArgumentNullException), "Lifetimes", "Lifetimes.Pointer", "got 0"),
        new("Misaligned", a => a with { Lifetimes = DeviceLifetimes.Contiguous(LifetimesAt + 4, 1, 1, 7) }, Invalid, "Lifetimes", "8-byte aligned", "0x7f0000100004"),
        new("Batch3", a => a with { Lifetimes = DeviceLifetimes.Contiguous(LifetimesAt, 3, 1, 7) }, OutOfRange, "Lifetimes", "Lifetimes.Batch must be 1 or Batch (2)", "got 3"),
        new("Heads3", a => a with { Lifetimes = DeviceLifetimes.Contiguous(LifetimesAt, 1, 3, 7) }, OutOfRange, "Lifetimes",
            "Lifetimes.Heads must be 1, HeadsKv (2) or HeadsQ (4)", "got 3"),
        new("Heads0", a => a with { Lifetimes = DeviceLifetimes.Contiguous(LifetimesAt, 1, 0, 7) }, OutOfRange, "Lifetimes", "Lifetimes.Heads", "got 0"),
        new("StrideBatchNegative", a => a with { Lifetimes = new DeviceLifetimes(LifetimesAt, 2, 1, -7, 0) }, Invalid, "Lifetimes.StrideBatch", ">= 0", "got -7"),
        new("StrideHeadNegative", a => a with { Lifetimes = new DeviceLifetimes(LifetimesAt, 1, 4, 0, -1) }, Invalid, "Lifetimes.StrideHead", ">= 0", "got -1"),
        new("StrideKey0", a => a with { Lifetimes = new DeviceLifetimes(LifetimesAt, 1, 1, 0, 0, StrideKey: 0) }, Invalid, "Lifetimes.StrideKey",
            ">= 1 pair", "got 0"),
        new("OutputOverlapsLifetimes", a => a with { Lifetimes = DeviceLifetimes.Contiguous(a.Output.Pointer + 8, 1, 1, 7) }, Invalid, "args.Output",
            "args.Output must not overlap args.Lifetimes"),
        new("TileStatsOverlapLifetimes", a => a with { TileStats = LifetimesAt + 2 * 2 * 7 * 8 - 16 }, Invalid, "args.TileStats",
            "args.TileStats must not overlap args.Lifetimes"),
    ];

    private static IEnumerable<TestCaseData> DeviceCasesPerDirection() =>
        from backward in new[] { false, true }
        from c in DeviceCases()
        select new TestCaseData(backward, c).SetArgDisplayNames(backward ? "Backward" : "Forward", c.Name);

    [TestCaseSource(nameof(DeviceCasesPerDirection))]
    public void InvalidDeviceLifetimes_AreRefusedBeforeAnyNativeCall(bool backward, DeviceCase c)
    {
        DeviceForwardArgs forward = c.Change(ValidDeviceArgs());
        string prefix = backward ? "args.Forward." : "args.";
        string[] parts = c.MessageParts.Select(p => p.StartsWith("Lifetimes", StringComparison.Ordinal) || p.StartsWith("Mask", StringComparison.Ordinal) ? prefix + p : p).ToArray();
        if (!backward)
        {
            Refusal.Expect(c.Exception, c.ParamName.StartsWith("args.", StringComparison.Ordinal) ? c.ParamName : prefix + c.ParamName, parts,
                () => DynamicMaskAttention.Forward(forward));
            return;
        }

        // The backward reads the forward's output, which may share memory with the lifetimes; its own outputs may not.
        bool gradientOverlaps = c.Name == "OutputOverlapsLifetimes";
        if (gradientOverlaps)
            forward = ValidDeviceArgs();
        if (c.Name == "TileStatsOverlapLifetimes")
            forward = forward with { TileStats = 0 }; // the backward's own counters are checked below
        long qBytes = Valid.QElements * 2;
        nint gradients = Base + 0x400000;
        var args = new DeviceBackwardArgs
        {
            Forward = forward with { Lse = Base + 0x300000 },
            DOutput = DeviceTensor.SequenceMajor(gradients, Valid.SeqLenQ, Valid.HeadsQ, Valid.HeadDim),
            DQ = DeviceTensor.SequenceMajor(gradientOverlaps ? LifetimesAt + 16 : gradients + (nint)qBytes, Valid.SeqLenQ, Valid.HeadsQ, Valid.HeadDim),
            DK = DeviceTensor.SequenceMajor(gradients + (nint)(2 * qBytes), Valid.SeqLenK, Valid.HeadsKv, Valid.HeadDim),
            DV = DeviceTensor.SequenceMajor(gradients + (nint)(3 * qBytes), Valid.SeqLenK, Valid.HeadsKv, Valid.HeadDim),
            TileStats = c.Name == "TileStatsOverlapLifetimes" ? LifetimesAt + 2 * 2 * 7 * 8 - 8 : 0,
        };
        string paramName = c.ParamName switch
        {
            "args.Output" => "args.DQ",
            "args.TileStats" => "args.TileStats",
            _ => prefix + c.ParamName,
        };
        string[] backwardParts = c.Name switch
        {
            "OutputOverlapsLifetimes" => ["args.DQ must not overlap args.Forward.Lifetimes"],
            "TileStatsOverlapLifetimes" => ["args.TileStats must not overlap args.Forward.Lifetimes"],
            _ => parts,
        };
        Refusal.Expect(c.Exception, paramName, backwardParts, () => DynamicMaskAttention.Backward(args));
    }

    [Test]
    public void DeviceLifetimes_BroadcastKeyStridedOrOfOneKey_PassValidation()
    {
        DeviceForwardArgs args = ValidDeviceArgs();

        Assert.DoesNotThrow(() => ArgumentValidation.ValidateDeviceForward(args with { Lifetimes = DeviceLifetimes.Contiguous(LifetimesAt, 1, 1, 7) }, null));
        Assert.DoesNotThrow(() => ArgumentValidation.ValidateDeviceForward(args with { Lifetimes = DeviceLifetimes.Contiguous(LifetimesAt, 2, 4, 7) }, null));
        // (B, Lk, Hkv) pairs seen as (B, Hkv, Lk): key stride Hkv, head stride 1.
        Assert.DoesNotThrow(() => ArgumentValidation.ValidateDeviceForward(args with { Lifetimes = new DeviceLifetimes(LifetimesAt, 2, 2, 14, 1, StrideKey: 2) }, null));
        // The stride of a single key (or of a broadcast dimension) is never used.
        Assert.DoesNotThrow(() => ArgumentValidation.ValidateDeviceForward(args with
        {
            Shape = Valid with { SeqLenK = 1 },
            Lifetimes = new DeviceLifetimes(LifetimesAt, 1, 1, -3, -3, StrideKey: 0),
        }, null));
    }

    // ---- the top-k builder ----

    private static readonly TopKProblem ValidTopK = new(2, 3, 5, 11, KeySelection.TopK, 4, true);
    private static readonly nint ScoresAt = Base, LifetimesOut = Base + 0x10000, SurvivorsOut = Base + 0x20000;

    private static DeviceTopKArgs ValidTopKArgs() => new()
    {
        Problem = ValidTopK,
        Scores = DeviceBroadcastTensor.Contiguous(ScoresAt, ScalarType.Float32, new(2, 3, 1), 11),
        Lifetimes = LifetimesOut,
        Survivors = SurvivorsOut,
    };

    private static IEnumerable<TestCaseData> TopKDeviceCases() => new (string Name, Func<DeviceTopKArgs, DeviceTopKArgs> Change, Type Exception, string ParamName, string[] Parts)[]
    {
        ("Batch0", a => a with { Problem = a.Problem with { Batch = 0 } }, OutOfRange, "args.Problem.Batch", ["args.Problem.Batch must be >= 1", "got 0"]),
        ("SeqLenQ0", a => a with { Problem = a.Problem with { SeqLenQ = 0 } }, OutOfRange, "args.Problem.SeqLenQ", ["got 0"]),
        ("SeqLenKNegative", a => a with { Problem = a.Problem with { SeqLenK = -2 } }, OutOfRange, "args.Problem.SeqLenK", ["got -2"]),
        ("Window0", a => a with { Problem = a.Problem with { Window = 0 } }, OutOfRange, "args.Problem.Window", ["must be >= 1 for KeySelection.TopK", "got 0"]),
        ("PositiveWindow0WithSurvivors", a => a with { Problem = a.Problem with { Selection = KeySelection.Positive, Window = 0 } }, OutOfRange,
            "args.Problem.Window", ["must be >= 1 when survivors are asked for", "got 0"]),
        ("SelectionUnknown", a => a with { Problem = a.Problem with { Selection = (KeySelection)7 } }, OutOfRange, "args.Problem.Selection", ["TopK or Positive", "got 7"]),
        ("SegmentsPastTheGrid", a => a with { Problem = a.Problem with { Batch = 256, Heads = 257 } }, OutOfRange, "args.Problem",
            ["args.Problem.Batch * args.Problem.Heads must be <= 65535", "got 256 * 257"]),
        ("ScoresPointerZero", a => a with { Scores = a.Scores with { Pointer = 0 } }, typeof(ArgumentNullException), "args.Scores", ["args.Scores.Pointer", "got 0"]),
        ("ScoresDTypeUnknown", a => a with { Scores = a.Scores with { DType = (ScalarType)9 } }, OutOfRange, "args.Scores.DType", ["Float16, BFloat16 or Float32", "got 9"]),
        ("ScoresMisaligned", a => a with { Scores = a.Scores with { Pointer = ScoresAt + 2 } }, Invalid, "args.Scores", ["4-byte aligned", "0x7f0000000002"]),
        ("ScoresBroadcastBatch", a => a with { Scores = a.Scores with { Shape = new(1, 3, 1) } }, Invalid, "args.Scores.Shape",
            ["without broadcast", "BroadcastShape { Batch = 2, Heads = 3, Rows = 1 }", "got BroadcastShape { Batch = 1, Heads = 3, Rows = 1 }"]),
        ("ScoresRows5", a => a with { Scores = a.Scores with { Shape = new(2, 3, 5) } }, Invalid, "args.Scores.Shape", ["Rows = 5"]),
        ("ScoresStrideKey0", a => a with { Scores = a.Scores with { StrideKey = 0 } }, Invalid, "args.Scores.StrideKey", [">= 1", "got 0"]),
        ("ScoresStrideHeadNegative", a => a with { Scores = a.Scores with { StrideHead = -11 } }, Invalid, "args.Scores.StrideHead", [">= 0", "got -11"]),
        ("LifetimesZero", a => a with { Lifetimes = 0 }, typeof(ArgumentNullException), "args.Lifetimes", ["B * H * Lk pairs", "got 0"]),
        ("LifetimesMisaligned", a => a with { Lifetimes = LifetimesOut + 4 }, Invalid, "args.Lifetimes", ["8-byte aligned", "0x7f0000010004"]),
        ("SurvivorsMisaligned", a => a with { Survivors = SurvivorsOut + 2 }, Invalid, "args.Survivors", ["4-byte aligned", "0x7f0000020002"]),
        ("LifetimesOverlapScores", a => a with { Lifetimes = ScoresAt + 64 }, Invalid, "args.Lifetimes", ["args.Lifetimes must not overlap args.Scores"]),
        ("SurvivorsOverlapLifetimes", a => a with { Survivors = LifetimesOut + 8 }, Invalid, "args.", ["args.Lifetimes", "args.Survivors"]),
        ("WorkspaceBytesNegative", a => a with { WorkspaceBytes = -1 }, OutOfRange, "args.WorkspaceBytes", ["got -1"]),
        ("WorkspaceMisaligned", a => a with { Workspace = Base + 0x30008, WorkspaceBytes = 64 }, Invalid, "args.Workspace", ["16-byte"]),
    }.Select(c => new TestCaseData(c.Change, c.Exception, c.ParamName, c.Parts).SetArgDisplayNames(c.Name));

    [TestCaseSource(nameof(TopKDeviceCases))]
    public void InvalidTopKDeviceCall_IsRefusedBeforeAnyNativeCall(Func<DeviceTopKArgs, DeviceTopKArgs> change, Type exception, string paramName, string[] parts)
    {
        Refusal.Expect(exception, paramName, parts, () => DynamicMaskAttention.TopKLifetimes(change(ValidTopKArgs())));
    }

    [Test]
    public void TopKDeviceArgs_PositiveWithoutWindowOrKeyStridedScores_PassValidation()
    {
        DeviceTopKArgs args = ValidTopKArgs();

        Assert.DoesNotThrow(() => ArgumentValidation.ValidateDeviceTopK(args with
        {
            Problem = ValidTopK with { Selection = KeySelection.Positive, Window = 0 },
            Survivors = 0,
        }));
        Assert.DoesNotThrow(() => ArgumentValidation.ValidateDeviceTopK(args with
        {
            Scores = new DeviceBroadcastTensor(ScoresAt, ScalarType.BFloat16, new(2, 3, 1), 33, 1, 0, StrideKey: 3),
        }));
    }

    [Test]
    public void TopKHostForm_RefusesWrongLengthsAndScoreTypes()
    {
        Assert.Multiple(() =>
        {
            Refusal.ExpectExactly(Invalid, "scores", ["66 elements", "B * H * Lk", "got 65"], () =>
                DynamicMaskAttention.TopKLifetimes<float>(ValidTopK, new float[65]));
            Refusal.ExpectExactly(Invalid, "survivors", ["24 elements", "B * H * w", "got 25"], () =>
                DynamicMaskAttention.TopKLifetimes<float>(ValidTopK, new float[66], new int[25]));
            Refusal.ExpectExactly(Invalid, "TScore", ["System.Double"], () =>
                DynamicMaskAttention.TopKLifetimes<double>(ValidTopK, new double[66]));
            Refusal.ExpectExactly(OutOfRange, "problem.Window", ["for KeySelection.TopK", "got -1"], () =>
                DynamicMaskAttention.TopKLifetimes<Half>(ValidTopK with { Window = -1 }, new Half[66]));
            Refusal.ExpectExactly(OutOfRange, "problem.Heads", ["got 0"], () =>
                DynamicMaskAttention.TopKWorkspaceSize(ValidTopK with { Heads = 0 }, ScalarType.Float32));
            Refusal.ExpectExactly(OutOfRange, "scoresType", ["Float16, BFloat16 or Float32", "got 9"], () =>
                DynamicMaskAttention.TopKWorkspaceSize(ValidTopK, (ScalarType)9));
        });
    }

    // ---- the decode cache: refused before the GPU or the native library is touched ----

    [TestCase(ScalarType.Float32, 1, 2, 64, 16, 4, "dtype", "Float32")]
    [TestCase(ScalarType.Float16, 0, 2, 64, 16, 4, "batch", "got 0")]
    [TestCase(ScalarType.Float16, 1, -1, 64, 16, 4, "headsKv", "got -1")]
    [TestCase(ScalarType.BFloat16, 1, 2, 48, 16, 4, "headDim", "32, 64, 96, 128, 192, 256")]
    [TestCase(ScalarType.BFloat16, 1, 2, 64, 0, 4, "window", "got 0")]
    [TestCase(ScalarType.BFloat16, 1, 2, 64, 16, 0, "maxStepTokens", "got 0")]
    [TestCase(ScalarType.BFloat16, 1, 2, 64, 1 << 30, 1, "maxStepTokens", "window + maxStepTokens (the slots) must be <= 1073741824", "got 1073741824 + 1")]
    [TestCase(ScalarType.BFloat16, 65536, 65536, 64, 16, 4, "headsKv", "batch * headsKv must be <= 2147483647", "got 65536 * 65536")]
    public void DecodeCache_RefusesInvalidSizes(
        ScalarType dtype, int batch, int headsKv, int headDim, int window, int maxStepTokens, string paramName, params string[] parts)
    {
        Refusal.ExpectExactly(OutOfRange, paramName, parts, () => new DmaDecodeCache(dtype, batch, headsKv, headDim, window, maxStepTokens).Dispose());
    }

    // ---- the forward's counters ----

    [Test]
    public void ForwardStats_WorkAmplificationIsComputedScoresPerVisiblePair()
    {
        var stats = new ForwardStats(Computed: 6, Skipped: 2, VisiblePairs: 3 * 64 * 64);

        Assert.That(stats.Tiles, Is.EqualTo(new TileStats(6, 2)));
        Assert.That(stats.WorkAmplification(64, 64), Is.EqualTo(2.0));
        Assert.That(new ForwardStats(1, 0, 0).WorkAmplification(64, 64), Is.EqualTo(double.PositiveInfinity));
        Assert.That(new ForwardStats(0, 5, 0).WorkAmplification(64, 64), Is.NaN);
        Assert.Throws<ArgumentOutOfRangeException>(() => stats.WorkAmplification(0, 64));
    }
}

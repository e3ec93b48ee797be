using System.Runtime.InteropServices;

namespace FlashDmAttn.Tests.Gpu;

/// <summary>
/// The device-pointer forward and backward captured into a CUDA graph on a non-blocking stream, once per backend, and
/// the graph replayed 100 times on new inputs written into the same buffers: every replay writes, to the bit, what the
/// same calls made eagerly write into buffers of their own (the gradients of the default mode, whose atomics may change
/// the low bits, within the suite's bound), and the last replay matches the double reference. Covered: the library's
/// stream-ordered scratch allocated and freed inside the graph, the caller's workspaces, a mask with a per-key bias and
/// its gradient, key lifetimes, the tile counters; capture in thread-local and in global mode.
/// </summary>
[TestFixture(FlashDmAttnBackend.Native)]
[TestFixture(FlashDmAttnBackend.Nvrtc)]
[Category("Gpu")]
// While a capture is open, synchronizing the context (as the other GPU tests do after every call) is invalid on any
// thread, since it would wait on the capturing stream; in global mode, every potentially unsafe call (cuMemAlloc,
// cuMemFree, a synchronous copy) on any thread is refused and invalidates the capture. Nothing may run beside.
[NonParallelizable]
public class CudaGraphGpuTests(FlashDmAttnBackend backend) : BackendGpuTest(backend)
{
    private const int Replays = 100;

    private static IEnumerable<TestCaseData> Cases()
    {
        const int threadLocal = Interop.Cuda.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL, global = Interop.Cuda.CU_STREAM_CAPTURE_MODE_GLOBAL;
        (BackwardCase Case, bool CallerWorkspaces, int Mode)[] cases =
        [
            (new("fp16 D64 causal det", new ForwardCase("", ScalarType.Float16, new(2, 200, 230, 4, 2, 64)) { Causal = true })
                { Deterministic = true }, false, threadLocal),
            (new("bf16 D128 det", new ForwardCase("", ScalarType.BFloat16, new(1, 130, 257, 4, 2, 128))) { Deterministic = true }, false, global),
            (new("bf16 D128 mask 2x2x150 per-key bf16 bias 2x2x1 fp32 dBias det", new ForwardCase("", ScalarType.BFloat16, new(2, 150, 257, 4, 2, 128))
                { Mask = new(2, 2, 150), Bias = new(2, 2, 1), BiasType = ScalarType.BFloat16 }) { Deterministic = true, Float32BiasGradient = true },
                true, threadLocal),
            (new("fp16 D128 lifetimes 1x2 causal fp16 bias 1x4x1 det", new ForwardCase("", ScalarType.Float16, new(1, 257, 300, 4, 2, 128))
                { Lifetimes = new(1, 2, 1), Causal = true, Bias = new(1, 4, 1), BiasType = ScalarType.Float16 }) { Deterministic = true },
                false, threadLocal),
            // The default mode: dQ, dBias and, with lifetimes, the gathered dK and dV summed by atomics in any order.
            (new("bf16 D64 lifetimes 2x4 per-key bias 2x2x1 fp32 dBias", new ForwardCase("", ScalarType.BFloat16, new(2, 160, 220, 4, 2, 64))
                { Lifetimes = new(2, 4, 1), Bias = new(2, 2, 1) }) { Float32BiasGradient = true }, false, threadLocal),
        ];
        return cases.Select(c => new TestCaseData(c.Case, c.CallerWorkspaces, c.Mode).SetArgDisplayNames(
            $"{c.Case.Name}, {(c.CallerWorkspaces ? "caller workspaces" : "library scratch")}, {(c.Mode == global ? "global" : "thread-local")} capture"));
    }

    [TestCaseSource(nameof(Cases))]
    public void DeviceApi_CapturedInACudaGraph_EachReplayOnNewInputsWritesWhatTheEagerCallsWrite(BackwardCase c, bool callerWorkspaces, int captureMode)
    {
        c = c.On(Backend);
        int seed = new TestRandom().Seed;
        var first = new BackwardInputs(c, new TestRandom(seed));
        using var problem = new DeviceBackwardProblem(first, Layout.SequenceMajor, Layout.SequenceMajor);
        using CudaPrimaryContext context = CudaPrimaryContext.Retain(0);
        using CudaContextScope current = context.Push();
        using var stream = new CudaStream();
        (DeviceBuffer? forwardWorkspace, DeviceBuffer? backwardWorkspace) = callerWorkspaces ? Workspaces(problem, c) : (null, null);
        var replayed = new CallOutputs(problem, forwardWorkspace, backwardWorkspace);
        var eager = new CallOutputs(problem, forwardWorkspace, backwardWorkspace);

        // Once eagerly before the capture: the kernels compiled (NVRTC) and loaded, which is no work for a graph.
        Run(replayed.Args, c, stream);
        stream.Synchronize();
        if (captureMode == Interop.Cuda.CU_STREAM_CAPTURE_MODE_GLOBAL)
        {
            // Earlier tests' unreachable device buffers freed now rather than by the finalizer thread during the capture.
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }

        using CudaGraph graph = CudaGraph.Capture(stream, captureMode, () =>
        {
            Run(replayed.Args, c, stream);
            Assert.That(stream.CaptureStatus, Is.EqualTo(Interop.Cuda.CU_STREAM_CAPTURE_STATUS_ACTIVE), "the calls ended or invalidated the capture");
        });

        for (int replay = 0; replay < Replays; replay++)
        {
            BackwardInputs inputs = replay == 0 ? first : new BackwardInputs(c, new TestRandom(seed + replay));
            string where = $"{c.Label}, replay {replay}; {inputs.Forward.Random}";
            Write(problem, inputs);
            replayed.Clear();
            eager.Clear();
            CudaDriver.Synchronize(); // the copies and fills ran on the legacy stream, which a non-blocking stream does not wait for

            graph.Launch(stream);
            stream.Synchronize();
            CallResults replayResults = replayed.Read();
            Run(eager.Args, c, stream);
            stream.Synchronize();

            AssertSameResults(problem, c, replayResults, eager.Read(), where);
            if (replay == Replays - 1)
                CheckAgainstTheReference(problem, inputs, replayResults);
        }
    }

    private static void Run(DeviceBackwardArgs args, BackwardCase c, CudaStream stream)
    {
        DynamicMaskAttention.Forward(args.Forward, c.Forward.Options, stream.Handle);
        DynamicMaskAttention.Backward(args, c.Forward.Options, c.Deterministic, stream.Handle);
    }

    // Both calls' scratch from the caller, filled with garbage as fresh memory may be; none for a forward that needs none.
    private static (DeviceBuffer? Forward, DeviceBuffer Backward) Workspaces(DeviceBackwardProblem problem, BackwardCase c)
    {
        ForwardCase f = c.Forward;
        long forwardBytes = DynamicMaskAttention.ForwardWorkspaceSize(f.Shape, f.DType, f.Mask, f.Backend);
        long backwardBytes = DynamicMaskAttention.BackwardWorkspaceSize(f.Shape, f.DType, f.Mask, c.BiasGradientType is null ? null : f.Bias,
            c.Deterministic, f.Backend, lifetimes: f.Lifetimes is not null);
        DeviceBuffer? forward = forwardBytes > 0 ? problem.Allocate(forwardBytes) : null;
        DeviceBuffer backward = problem.Allocate(backwardBytes);
        forward?.Fill(0xA5);
        backward.Fill(0xA5);
        return (forward, backward);
    }

    // Another draw of the case into the problem's input buffers (contiguous, as the problem laid them out), mask and
    // lifetimes included, with synchronous copies.
    private static void Write(DeviceBackwardProblem problem, BackwardInputs inputs)
    {
        ForwardCase f = inputs.Case.Forward;
        AttentionShape s = f.Shape;
        DeviceForwardArgs a = problem.Args.Forward;
        problem.BufferAt(a.Q.Pointer).CopyFrom<byte>(DeviceForwardProblem.ToLayout(inputs.Forward.Q, s.SeqLenQ, s.HeadsQ, s.HeadDim, Layout.SequenceMajor, f.DType));
        problem.BufferAt(a.K.Pointer).CopyFrom<byte>(DeviceForwardProblem.ToLayout(inputs.Forward.K, s.SeqLenK, s.HeadsKv, s.HeadDim, Layout.SequenceMajor, f.DType));
        problem.BufferAt(a.V.Pointer).CopyFrom<byte>(DeviceForwardProblem.ToLayout(inputs.Forward.V, s.SeqLenK, s.HeadsKv, s.HeadDim, Layout.SequenceMajor, f.DType));
        problem.BufferAt(problem.Args.DOutput.Pointer).CopyFrom<byte>(
            DeviceForwardProblem.ToLayout(inputs.DOutput, s.SeqLenQ, s.HeadsQ, s.HeadDim, Layout.SequenceMajor, f.DType));
        if (a.Mask is { } mask)
            problem.BufferAt(mask.Pointer).CopyFrom<byte>(inputs.Forward.Mask!);
        if (a.Lifetimes is { } lifetimes)
            problem.BufferAt(lifetimes.Pointer).CopyFrom<KeyLifetime>(inputs.Forward.Lifetimes!);
        if (a.Bias is { } bias)
            problem.BufferAt(bias.Pointer).CopyFrom<byte>(DeviceForwardProblem.Bytes(inputs.Forward.Bias!, f.BiasType));
    }

    // Every output of the replay as the eager calls wrote it: to the bit, but for the gradients of the default mode,
    // within the suite's bound (a NaN, an element left unwritten, fails it too). Bytes are compared fast first, and
    // through NUnit, which names the first difference, only when they differ.
    private static void AssertSameResults(DeviceBackwardProblem problem, BackwardCase c, CallResults replay, CallResults eager, string where)
    {
        foreach (((string name, byte[]? got, bool gradient), (_, byte[]? expected, _)) in replay.Named().Zip(eager.Named()))
        {
            if ((c.Deterministic || !gradient) && !got.AsSpan().SequenceEqual(expected))
                Assert.That(got, Is.EqualTo(expected), $"{name}: the replay's bytes are not the eager calls'; {where}");
        }

        if (c.Deterministic)
            return;
        foreach (((string name, double[] got), (_, double[] expected)) in problem.Values(replay.Backward).Named().Zip(problem.Values(eager.Backward).Named()))
        {
            Assert.That(BackwardCheck.RelativeError(got, expected), Is.LessThanOrEqualTo(BackwardCheck.Bound(c.Forward.DType)),
                $"{name}: ||replay - eager|| / ||eager||; {where}");
        }
    }

    // What a replay wrote against the double reference: so that replays and eager calls cannot agree on garbage.
    private static void CheckAgainstTheReference(DeviceBackwardProblem problem, BackwardInputs inputs, CallResults replay)
    {
        BackwardCase c = inputs.Case;
        (double[] refOutput, double[] refLse) = inputs.Forward.Reference();
        ForwardCheck.Check(inputs.Forward, problem.OutputValues(replay.Forward), replay.Forward.Lse, refOutput, refLse);
        ForwardCheck.CheckTileCount(c.Forward, replay.Forward.Stats);
        Assert.That(checked((long)MemoryMarshal.Cast<byte, ulong>(replay.Forward.TileStatsBytes)[2]), Is.EqualTo(inputs.Forward.VisiblePairs()),
            $"visible pairs; {c.Label}; {inputs.Forward.Random}");
        BackwardCheck.Check(inputs, problem.Values(replay.Backward), inputs.Reference());
        BackwardCheck.CheckTileCount(c, replay.Backward.Stats);
    }

    /// <summary>Every byte a forward and a backward call wrote.</summary>
    private sealed record CallResults(DeviceResults Forward, DeviceBackwardResults Backward)
    {
        // Each output, and whether it is a gradient (whose low bits the default mode's atomics may change).
        public IEnumerable<(string Name, byte[]? Bytes, bool Gradient)> Named() =>
        [
            ("output", Forward.OutputBytes, false), ("LSE", Forward.LseBytes, false), ("forward counters", Forward.TileStatsBytes, false),
            ("dQ", Backward.DQ, true), ("dK", Backward.DK, true), ("dV", Backward.DV, true), ("dBias", Backward.DBias, true),
            ("backward counters", Backward.TileStatsBytes, false),
        ];
    }

    /// <summary>
    /// The buffers a forward and a backward call write, of their own (freed with the problem): O, LSE, the forward's
    /// three counters, dQ, dK, dV, dBias where the case asks for it and the backward's two counters; and the problem's
    /// calls pointed at them, with the given workspaces (null: the library's scratch).
    /// </summary>
    private sealed class CallOutputs
    {
        private readonly DeviceBuffer output, lse, forwardStats, dq, dk, dv, backwardStats;
        private readonly DeviceBuffer? dBias;

        public CallOutputs(DeviceBackwardProblem problem, DeviceBuffer? forwardWorkspace, DeviceBuffer? backwardWorkspace)
        {
            DeviceBackwardArgs a = problem.Args;
            AttentionShape s = a.Forward.Shape;
            int elementSize = a.Forward.DType.ElementSize();
            output = problem.Allocate(s.QElements * elementSize);
            lse = problem.Allocate(s.LseElements * sizeof(float));
            forwardStats = problem.Allocate(3 * sizeof(ulong));
            dq = problem.Allocate(s.QElements * elementSize);
            dk = problem.Allocate(s.KvElements * elementSize);
            dv = problem.Allocate(s.KvElements * elementSize);
            dBias = a.DBias is { } d ? problem.Allocate(d.Shape.Elements(s.SeqLenK) * d.DType.ElementSize()) : null;
            backwardStats = problem.Allocate(2 * sizeof(ulong));
            Args = a with
            {
                Forward = a.Forward with
                {
                    Output = a.Forward.Output with { Pointer = output.Pointer },
                    Lse = lse.Pointer,
                    TileStats = forwardStats.Pointer,
                    Workspace = forwardWorkspace?.Pointer ?? 0,
                    WorkspaceBytes = forwardWorkspace?.ByteCount ?? 0,
                },
                DQ = a.DQ with { Pointer = dq.Pointer },
                DK = a.DK with { Pointer = dk.Pointer },
                DV = a.DV with { Pointer = dv.Pointer },
                DBias = a.DBias is { } gradient ? gradient with { Pointer = dBias!.Pointer } : null,
                TileStats = backwardStats.Pointer,
                Workspace = backwardWorkspace?.Pointer ?? 0,
                WorkspaceBytes = backwardWorkspace?.ByteCount ?? 0,
            };
        }

        public DeviceBackwardArgs Args { get; }

        /// <summary>Every output set to 0xFF bytes (NaN in every type), so that what a call leaves unwritten shows.</summary>
        public void Clear()
        {
            foreach (DeviceBuffer? buffer in new[] { output, lse, forwardStats, dq, dk, dv, dBias, backwardStats })
                buffer?.Fill(0xFF);
        }

        public CallResults Read() => new(
            new DeviceResults(DeviceForwardProblem.Read(output), DeviceForwardProblem.Read(lse), DeviceForwardProblem.Read(forwardStats)),
            new DeviceBackwardResults(DeviceForwardProblem.Read(dq), DeviceForwardProblem.Read(dk), DeviceForwardProblem.Read(dv),
                dBias is null ? null : DeviceForwardProblem.Read(dBias), DeviceForwardProblem.Read(backwardStats)));
    }
}

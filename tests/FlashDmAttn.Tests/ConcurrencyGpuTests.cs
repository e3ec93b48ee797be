using System.Collections.Concurrent;

namespace FlashDmAttn.Tests.Gpu;

/// <summary>
/// Calls made at once from 8 threads give the bits of the same calls made one after another: through the
/// device-pointer API, each thread on a stream of its own (forward on either backend, then the backward), and through
/// the Span API. Each round starts the threads together at a barrier; three rounds.
/// </summary>
[Category("Gpu")]
[NonParallelizable] // the threads are the test
public class ConcurrencyGpuTests : GpuTest
{
    private const int Rounds = 3;

    // Eight problems of different kernels, sizes and options, every backward deterministic (bit-reproducible).
    private static readonly BackwardCase[] Cases =
    [
        new("fp16 D32 causal", new("fp16 D32", ScalarType.Float16, new(1, 200, 230, 4, 2, 32)) { Causal = true }) { Deterministic = true },
        new("bf16 D64 mask bias", new("bf16 D64", ScalarType.BFloat16, new(2, 97, 130, 4, 2, 64)) { Mask = new(2, 2, 97), Bias = new(1, 4, 97) })
            { Deterministic = true, Float32BiasGradient = true },
        new("fp16 D96 softcap scale", new("fp16 D96", ScalarType.Float16, new(1, 150, 150, 2, 2, 96)) { Softcap = 2, Scale = 0.05f }) { Deterministic = true },
        new("bf16 D128 causal blank rows and tiles", new("bf16 D128", ScalarType.BFloat16, new(1, 300, 333, 2, 1, 128))
            { Causal = true, Mask = new(1, 1, 300), BlankRowsAndTiles = true }) { Deterministic = true },
        new("fp16 D192 fp16 bias", new("fp16 D192", ScalarType.Float16, new(1, 129, 257, 2, 2, 192)) { Bias = new(1, 2, 129), BiasType = ScalarType.Float16 })
            { Deterministic = true },
        new("bf16 D256 mask", new("bf16 D256", ScalarType.BFloat16, new(1, 65, 300, 2, 1, 256)) { Mask = new(1, 2, 65) }) { Deterministic = true },
        new("fp16 D64 decode mask", new("fp16 D64 decode", ScalarType.Float16, new(2, 1, 1025, 4, 1, 64)) { Mask = new(2, 4, 1) }) { Deterministic = true },
        new("bf16 D128 Lq > Lk causal bias", new("bf16 D128 Lq > Lk", ScalarType.BFloat16, new(1, 300, 97, 4, 4, 128)) { Causal = true, Bias = new(1, 4, 300) })
            { Deterministic = true, Float32BiasGradient = true },
    ];

    // The backward runs on the native library; the forward on the backend named, both through the device-pointer API.
    [TestCase(FlashDmAttnBackend.Native)]
    [TestCase(FlashDmAttnBackend.Nvrtc)]
    public void DeviceApi_OnEightStreamsAtOnce_GivesTheBitsOfTheSameCallsOneAfterAnother(FlashDmAttnBackend forwardBackend)
    {
        if (forwardBackend == FlashDmAttnBackend.Nvrtc)
            NvrtcAvailability.Require();
        int seed = new TestRandom().Seed;
        using CudaPrimaryContext context = CudaPrimaryContext.Retain(0);
        using CudaContextScope current = context.Push();
        var problems = new List<DeviceBackwardProblem>();
        var streams = new List<CudaStream>();
        try
        {
            for (int i = 0; i < Cases.Length; i++)
            {
                problems.Add(new DeviceBackwardProblem(new BackwardInputs(Cases[i], new TestRandom(seed + i)), Layout.SequenceMajor,
                    i % 2 == 0 ? Layout.SequenceMajor : Layout.HeadMajor));
                streams.Add(new CudaStream());
            }

            var calls = problems.Select(p => new DeviceCalls(p, forwardBackend)).ToArray();
            ResultBytes[] expected = calls.Select(c =>
            {
                c.Clear();
                c.Run(stream: 0);
                CudaDriver.Synchronize();
                return c.Read();
            }).ToArray();

            for (int round = 0; round < Rounds; round++)
            {
                foreach (DeviceCalls c in calls)
                    c.Clear();
                CudaDriver.Synchronize();

                AtOnce(calls.Length, i =>
                {
                    using CudaContextScope threadContext = context.Push();
                    calls[i].Run(streams[i].Handle);
                    streams[i].Synchronize();
                });

                for (int i = 0; i < calls.Length; i++)
                    calls[i].Read().AssertEqual(expected[i], $"{Cases[i].Name}, round {round}, forward on {forwardBackend}; seed {seed + i}");
            }
        }
        finally
        {
            foreach (CudaStream stream in streams)
                stream.Dispose();
            foreach (DeviceBackwardProblem problem in problems)
                problem.Dispose();
        }
    }

    [Test]
    public void SpanApi_FromEightThreadsAtOnce_GivesTheBitsOfTheSameCallsOneAfterAnother()
    {
        int seed = new TestRandom().Seed;
        BackwardInputs[] inputs = Cases.Select((c, i) => new BackwardInputs(c, new TestRandom(seed + i))).ToArray();
        var expected = inputs.Select(i => (Forward: i.Forward.RunSpanApi(), Backward: i.RunSpanApi())).ToArray();

        for (int round = 0; round < Rounds; round++)
        {
            var results = new ((double[] Output, double[] Lse, TileStats Stats) Forward, (BackwardGradients Gradients, TileStats Stats) Backward)[inputs.Length];
            AtOnce(inputs.Length, i => results[i] = (inputs[i].Forward.RunSpanApi(), inputs[i].RunSpanApi()));

            for (int i = 0; i < inputs.Length; i++)
            {
                string context = $"{Cases[i].Name}, round {round}; seed {seed + i}";
                Assert.That(results[i].Forward.Output, Is.EqualTo(expected[i].Forward.Output), $"output; {context}");
                Assert.That(results[i].Forward.Lse, Is.EqualTo(expected[i].Forward.Lse), $"LSE; {context}");
                Assert.That(results[i].Forward.Stats, Is.EqualTo(expected[i].Forward.Stats), $"forward tile stats; {context}");
                foreach (((string name, double[] got), (_, double[] wanted)) in results[i].Backward.Gradients.Named().Zip(expected[i].Backward.Gradients.Named()))
                    Assert.That(got, Is.EqualTo(wanted), $"{name}; {context}");
                Assert.That(results[i].Backward.Stats, Is.EqualTo(expected[i].Backward.Stats), $"backward tile stats; {context}");
            }
        }
    }

    // Runs work(i) on a thread of its own for each i, all released together by a barrier; fails with every exception
    // the threads threw.
    private static void AtOnce(int count, Action<int> work)
    {
        using var barrier = new Barrier(count);
        var failures = new ConcurrentQueue<Exception>();
        Thread[] threads = Enumerable.Range(0, count).Select(i => new Thread(() =>
        {
            barrier.SignalAndWait();
            try
            {
                work(i);
            }
            catch (Exception e)
            {
                failures.Enqueue(e);
            }
        })).ToArray();
        foreach (Thread thread in threads)
            thread.Start();
        foreach (Thread thread in threads)
            thread.Join();
        Assert.That(failures, Is.Empty, string.Join("\n", failures));
    }

    /// <summary>Every byte a problem's forward and backward calls write.</summary>
    private sealed record ResultBytes(byte[] Output, byte[] Lse, DeviceBackwardResults Backward)
    {
        public void AssertEqual(ResultBytes expected, string context)
        {
            Assert.That(Output, Is.EqualTo(expected.Output), $"output; {context}");
            Assert.That(Lse, Is.EqualTo(expected.Lse), $"LSE; {context}");
            Assert.That(Backward.DQ, Is.EqualTo(expected.Backward.DQ), $"dQ; {context}");
            Assert.That(Backward.DK, Is.EqualTo(expected.Backward.DK), $"dK; {context}");
            Assert.That(Backward.DV, Is.EqualTo(expected.Backward.DV), $"dV; {context}");
            Assert.That(Backward.DBias, Is.EqualTo(expected.Backward.DBias), $"dBias; {context}");
            Assert.That(Backward.Stats, Is.EqualTo(expected.Backward.Stats), $"backward tile stats; {context}");
        }
    }

    /// <summary>
    /// A problem's forward (recomputing the output and LSE its backward reads, with no tile counts of its own) and
    /// backward through the device-pointer API; the forward's results read through copies into buffers of the test.
    /// </summary>
    private sealed class DeviceCalls(DeviceBackwardProblem problem, FlashDmAttnBackend forwardBackend)
    {
        private readonly DeviceForwardArgs forward = problem.Args.Forward with { TileStats = 0 };
        private readonly AttentionOptions forwardOptions = problem.Inputs.Case.Forward.Options with { Backend = forwardBackend };
        private readonly AttentionOptions backwardOptions = problem.Inputs.Case.Forward.Options with { Backend = FlashDmAttnBackend.Native };
        private readonly DeviceBuffer outputCopy = problem.Allocate(problem.Args.Forward.Shape.QElements * problem.Args.Forward.DType.ElementSize());
        private readonly DeviceBuffer lseCopy = problem.Allocate(problem.Args.Forward.Shape.LseElements * sizeof(float));

        public void Clear()
        {
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemsetD8_v2(Address(forward.Output.Pointer), 0xFF, (nuint)outputCopy.ByteCount));
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemsetD8_v2(Address(forward.Lse), 0xFF, (nuint)lseCopy.ByteCount));
            problem.ClearResults();
        }

        public void Run(nint stream)
        {
            DynamicMaskAttention.Forward(forward, forwardOptions, stream);
            DynamicMaskAttention.Backward(problem.Args, backwardOptions, deterministic: true, stream);
        }

        public ResultBytes Read()
        {
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemcpyDtoD_v2(Address(outputCopy.Pointer), Address(forward.Output.Pointer), (nuint)outputCopy.ByteCount));
            CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemcpyDtoD_v2(Address(lseCopy.Pointer), Address(forward.Lse), (nuint)lseCopy.ByteCount));
            CudaDriver.Synchronize();
            return new ResultBytes(DeviceForwardProblem.Read(outputCopy), DeviceForwardProblem.Read(lseCopy), problem.Read());
        }

        private static ulong Address(nint pointer) => unchecked((ulong)pointer);
    }
}

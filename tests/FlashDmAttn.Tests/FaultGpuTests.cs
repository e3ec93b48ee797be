using System.Runtime.InteropServices;

namespace FlashDmAttn.Tests.Gpu;

/// <summary>
/// Faults no argument check can rule out. Device memory running out under the Span API (in the binding's copies or in
/// the backend's scratch): an exception carrying the CUDA error, nothing written, and every byte the call took given
/// back. A launch the driver refuses: its error in the exception. After each, a valid call on the same thread gives
/// the bits it gave before: neither the process nor the context is harmed. And what another CUDA context's stream or
/// memory does, which is no error for the native library.
/// </summary>
[Category("Gpu")]
[NonParallelizable] // counts the device's free memory
public class FaultGpuTests : GpuTest
{
    private const long MiB = 1 << 20;
    private const byte Sentinel = 0x5A;

    private static readonly ForwardCase Small =
        new("bf16 D64 mask bias", ScalarType.BFloat16, new(2, 97, 130, 4, 2, 64)) { Mask = new(2, 2, 97), Bias = new(1, 4, 97) };

    private static readonly BackwardCase SmallBackward = new("bf16 D64 mask bias deterministic", Small) { Deterministic = true };

    // ---- out of device memory ----

    [Test]
    public void SpanForward_OutOfDeviceMemory_Throws_WritesNothing_AndGivesEveryByteBack()
    {
        using CudaPrimaryContext context = CudaPrimaryContext.Retain(0);
        using CudaContextScope current = context.Push();
        var small = new ForwardInputs(Small, new TestRandom());
        var before = small.RunSpanApi(); // also loads the kernels, which takes device memory once

        // 64 MiB a tensor, about 160 MiB free: Q and K are copied, V finds no room.
        AttentionShape big = new(1, 16384, 16384, 16, 16, 128);
        Half[] q = new Half[big.QElements], kv = new Half[big.KvElements], output = Filled<Half>(big.QElements);
        float[] lse = Filled<float>(big.LseElements);
        using DeviceBuffer hog = DeviceMemory.Hog(context, 160 * MiB);
        long free = DeviceMemory.Settled();

        var thrown = Assert.Throws<CudaException>(() => DynamicMaskAttention.Forward<Half>(big, q, kv, kv, output, lse: lse))!;

        Assert.That(DeviceMemory.Settled(), Is.EqualTo(free), "free device memory after the failed call");
        AssertOutOfMemory(thrown);
        AssertUnwritten(output, "output");
        AssertUnwritten(lse, "lse");
        var after = small.RunSpanApi();
        Assert.That(after.Output, Is.EqualTo(before.Output), $"output of the next call; {small.Random}");
        Assert.That(after.Lse, Is.EqualTo(before.Lse), $"LSE of the next call; {small.Random}");
    }

    [Test]
    public void SpanBackward_OutOfDeviceMemory_Throws_WritesNothing_AndGivesEveryByteBack()
    {
        using CudaPrimaryContext context = CudaPrimaryContext.Retain(0);
        using CudaContextScope current = context.Push();
        var small = new BackwardInputs(SmallBackward, new TestRandom());
        var before = small.RunSpanApi();

        // As the forward: Q and K are copied, V finds no room. The inputs' values do not matter: nothing runs.
        AttentionShape big = new(1, 16384, 16384, 16, 16, 128);
        Half[] q = new Half[big.QElements], kv = new Half[big.KvElements], output = new Half[big.QElements];
        Half[] dq = Filled<Half>(big.QElements), dk = Filled<Half>(big.KvElements), dv = Filled<Half>(big.KvElements);
        using DeviceBuffer hog = DeviceMemory.Hog(context, 160 * MiB);
        long free = DeviceMemory.Settled();

        var thrown = Assert.Throws<CudaException>(() =>
            DynamicMaskAttention.Backward<Half>(big, q, kv, kv, output, new float[big.LseElements], q, dq, dk, dv, deterministic: true))!;

        Assert.That(DeviceMemory.Settled(), Is.EqualTo(free), "free device memory after the failed call");
        AssertOutOfMemory(thrown);
        AssertUnwritten(dq, "dq");
        AssertUnwritten(dk, "dk");
        AssertUnwritten(dv, "dv");
        AssertSameGradients(small.RunSpanApi(), before, small);
    }

    // The native library reports the failing CUDA call by name and text; the NVRTC backend, which allocates through the
    // driver, the driver's error.
    [TestCase(FlashDmAttnBackend.Native)]
    [TestCase(FlashDmAttnBackend.Nvrtc)]
    public void SpanBackward_OutOfDeviceMemoryForTheScratch_SurfacesTheCudaError_AndGivesEveryByteBack(FlashDmAttnBackend backend)
    {
        if (backend == FlashDmAttnBackend.Nvrtc)
            NvrtcAvailability.Require();
        using CudaPrimaryContext context = CudaPrimaryContext.Retain(0);
        using CudaContextScope current = context.Push();
        var small = new BackwardInputs(SmallBackward with { Forward = Small with { Backend = backend } }, new TestRandom());
        var before = small.RunSpanApi();

        // 32 MiB a tensor: the binding's eight copies, the LSE and the tile counts (about 260 MiB) fit in what is left;
        // the scratch the backend then takes from the stream-ordered allocator (dQ's float accumulator, 64 MiB) does not.
        AttentionShape big = new(1, 8192, 8192, 16, 16, 128);
        long scratch = DynamicMaskAttention.BackwardWorkspaceSize(big, ScalarType.Float16, null, null, deterministic: false);
        long copies = 8 * big.QElements * sizeof(short) + 4 * MiB;
        Half[] q = new Half[big.QElements], output = new Half[big.QElements];
        Half[] dq = Filled<Half>(big.QElements), dk = Filled<Half>(big.KvElements), dv = Filled<Half>(big.KvElements);
        using DeviceBuffer hog = DeviceMemory.Hog(context, copies + scratch / 2);
        long free = DeviceMemory.Settled();

        Exception thrown = Assert.Catch(() => DynamicMaskAttention.Backward<Half>(
            big, q, q, q, output, new float[big.LseElements], q, dq, dk, dv, new AttentionOptions { Backend = backend }))!;

        Assert.That(DeviceMemory.Settled(), Is.EqualTo(free), "free device memory after the failed call");
        TestContext.Progress.WriteLine($"scratch out of memory ({backend}): {thrown.GetType().Name}: {thrown.Message}");
        if (backend == FlashDmAttnBackend.Native)
        {
            var refused = (FlashDmAttnException)thrown;
            Assert.That(refused.Status, Is.EqualTo(FlashDmAttnStatus.CudaError));
            Assert.That(refused.NativeMessage, Does.Contain("scratch").And.Contain("cudaErrorMemoryAllocation: out of memory"));
        }
        else
        {
            var failed = (CudaException)thrown;
            Assert.That(failed.ErrorName, Is.EqualTo("CUDA_ERROR_OUT_OF_MEMORY"));
            Assert.That(failed.Message, Does.StartWith("cuMemAllocAsync failed").And.Contain("out of memory"));
        }

        AssertUnwritten(dq, "dq");
        AssertUnwritten(dk, "dk");
        AssertUnwritten(dv, "dv");
        AssertSameGradients(small.RunSpanApi(), before, small);
    }

    // ---- another CUDA context's stream and memory ----

    // What happens with the stream or the memory of another context on the same device. The native library's CUDA
    // runtime launches into another context's stream (and so does the driver for the kernel's reads of this context's
    // memory, since contexts of one device share its unified address space): the call runs there, with the same bits.
    // The NVRTC backend launches through the driver's cuLaunchKernel, which refuses a stream of another context than
    // the current one: a failed launch, reported with the driver's error. Both cases start the same way: no tile counts
    // and no mask, so that the launch is the call's first use of the stream.
    private static readonly ForwardCase PlainCase = new("fp16 D64", ScalarType.Float16, new(2, 97, 130, 4, 2, 64));

    [Test]
    public void NativeForward_OnAStreamOfAnotherContext_RunsThere_WithTheSameBits()
    {
        ForwardCase c = PlainCase with { Backend = FlashDmAttnBackend.Native };
        using CudaPrimaryContext context = CudaPrimaryContext.Retain(0);
        using CudaContextScope current = context.Push();
        using var other = new OtherContext();
        nint foreignStream = other.CreateStream();
        var inputs = new ForwardInputs(c, new TestRandom());
        using var problem = new DeviceForwardProblem(inputs);
        (DeviceForwardArgs args, DeviceResults valid) = RunOnceWithoutTileStats(problem);

        DynamicMaskAttention.Forward(args, c.Options, foreignStream);

        other.Synchronize(foreignStream);
        AssertSameOutputAndLse(problem.Read(), valid, "", inputs);
    }

    [Test]
    public void NativeForward_ReadingMemoryOfAnotherContext_GivesTheSameBits()
    {
        ForwardCase c = PlainCase with { Backend = FlashDmAttnBackend.Native };
        using CudaPrimaryContext context = CudaPrimaryContext.Retain(0);
        using CudaContextScope current = context.Push();
        using var other = new OtherContext();
        var inputs = new ForwardInputs(c, new TestRandom());
        using var problem = new DeviceForwardProblem(inputs);
        (DeviceForwardArgs args, DeviceResults valid) = RunOnceWithoutTileStats(problem);
        long kBytes = c.Shape.KvElements * c.DType.ElementSize();
        nint foreignK = other.Allocate(kBytes);
        CudaDriver.ThrowIfFailed(Interop.Cuda.cuMemcpyDtoD_v2(unchecked((ulong)foreignK), unchecked((ulong)args.K.Pointer), (nuint)kBytes));

        problem.Run(args with { K = args.K with { Pointer = foreignK } });

        AssertSameOutputAndLse(problem.Read(), valid, "", inputs);
    }

    [Test]
    public void NvrtcLaunch_OnAStreamOfAnotherContext_FailsWithTheDriversError_WritesNothing_AndTheNextCallSucceeds()
    {
        NvrtcAvailability.Require();
        ForwardCase c = PlainCase with { Backend = FlashDmAttnBackend.Nvrtc };
        using CudaPrimaryContext context = CudaPrimaryContext.Retain(0);
        using CudaContextScope current = context.Push();
        using var other = new OtherContext();
        nint foreignStream = other.CreateStream();
        var inputs = new ForwardInputs(c, new TestRandom());
        using var problem = new DeviceForwardProblem(inputs);
        (DeviceForwardArgs args, DeviceResults valid) = RunOnceWithoutTileStats(problem);

        var thrown = Assert.Throws<CudaException>(() => DynamicMaskAttention.Forward(args, c.Options, foreignStream))!;

        CudaDriver.Synchronize();
        Assert.That(thrown.Message, Is.EqualTo("cuLaunchKernel failed with CUDA_ERROR_INVALID_HANDLE (400): invalid resource handle"));
        DeviceResults unwritten = problem.Read();
        AssertUnwritten(unwritten.OutputBytes, 0xFF, "output");
        AssertUnwritten(unwritten.LseBytes, 0xFF, "LSE");
        problem.Run(args);
        AssertSameOutputAndLse(problem.Read(), valid, " of the next call", inputs);
    }

    // Runs the call once with no tile counts, so that a later launch is the call's first use of its stream: the bits
    // that later call must give, then cleared from the problem's buffers.
    private static (DeviceForwardArgs Args, DeviceResults Valid) RunOnceWithoutTileStats(DeviceForwardProblem problem)
    {
        DeviceForwardArgs args = problem.Args with { TileStats = 0 };
        problem.Run(args);
        DeviceResults valid = problem.Read();
        problem.ClearResults();
        return (args, valid);
    }

    // "which" names the call in the messages: "" or " of the next call".
    internal static void AssertSameOutputAndLse(DeviceResults actual, DeviceResults expected, string which, ForwardInputs inputs)
    {
        Assert.That(actual.OutputBytes, Is.EqualTo(expected.OutputBytes), $"output{which}; {inputs.Random}");
        Assert.That(actual.LseBytes, Is.EqualTo(expected.LseBytes), $"LSE{which}; {inputs.Random}");
    }

    private static void AssertOutOfMemory(CudaException thrown)
    {
        TestContext.Progress.WriteLine($"out of device memory: {thrown.Message}");
        Assert.That(thrown.ErrorName, Is.EqualTo("CUDA_ERROR_OUT_OF_MEMORY"));
        Assert.That(thrown.Message, Does.StartWith("cuMemAlloc_v2 failed").And.Contain("out of memory"));
    }

    private static void AssertSameGradients(
        (BackwardGradients Gradients, TileStats Stats) actual, (BackwardGradients Gradients, TileStats Stats) expected, BackwardInputs inputs)
    {
        foreach (((string name, double[] got), (_, double[] wanted)) in actual.Gradients.Named().Zip(expected.Gradients.Named()))
            Assert.That(got, Is.EqualTo(wanted), $"{name} of the next call; {inputs.Forward.Random}");
        Assert.That(actual.Stats, Is.EqualTo(expected.Stats), "tile stats of the next call");
    }

    private static T[] Filled<T>(long count) where T : unmanaged
    {
        var values = new T[count];
        MemoryMarshal.AsBytes(values.AsSpan()).Fill(Sentinel);
        return values;
    }

    private static void AssertUnwritten<T>(T[] values, string name) where T : unmanaged =>
        AssertUnwritten(MemoryMarshal.AsBytes(values.AsSpan()), Sentinel, name);

    internal static void AssertUnwritten(ReadOnlySpan<byte> bytes, byte fill, string name)
    {
        int written = bytes.IndexOfAnyExcept(fill);
        Assert.That(written, Is.EqualTo(-1), $"{name} was written (byte {written} of {bytes.Length})");
    }
}

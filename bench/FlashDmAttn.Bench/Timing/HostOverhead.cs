using System.Diagnostics;
using System.Globalization;
using System.Runtime;
using FlashDmAttn.Bench.Benchmarks;
using FlashDmAttn.Bench.Gpu;
using FlashDmAttn.Bench.Report;

namespace FlashDmAttn.Bench.Timing;

/// <summary>
/// The CPU cost per call of the C# API on one small shape called again and again, timed as bench/host_overhead.cu times
/// the C ABI: each round synchronizes the stream, then times a run of calls back to back without synchronizing; a row
/// is the median round's time per call, with the fastest and slowest rounds'.
/// </summary>
internal static unsafe class HostOverhead
{
    public const int Rounds = 15;
    public const int CallsPerRound = 200;
    public const int WarmupCalls = 50;

    // After the warm-up calls, how long the JIT must have compiled nothing before timing starts, and the most time the
    // wait may take (another thread's compilations would otherwise hold it up forever).
    private const double JitQuietMs = 500;
    private const double MaxJitWaitSeconds = 10;

    private static readonly AttentionShape Shape = new(Batch: 1, SeqLenQ: 128, SeqLenK: 128, HeadsQ: 2, HeadsKv: 2, HeadDim: 64);

    /// <summary>The shape as bench/host_overhead.cu names it, e.g. "B1 Lq128 Lk128 Hq2 Hkv2 D64 bf16 causal".</summary>
    public static string ShapeText => string.Create(CultureInfo.InvariantCulture,
        $"B{Shape.Batch} Lq{Shape.SeqLenQ} Lk{Shape.SeqLenK} Hq{Shape.HeadsQ} Hkv{Shape.HeadsKv} D{Shape.HeadDim} bf16 causal");

    public static string Method => string.Create(CultureInfo.InvariantCulture,
        $"CPU time per call (Stopwatch.GetTimestamp): {Rounds} rounds, each synchronizing the stream and then timing " +
        $"{CallsPerRound} calls back to back without synchronizing; the median round's time per call, and the fastest " +
        $"and slowest rounds'. Contiguous (B, L, H, D) tensors, no mask, on a non-blocking stream of device 0's primary " +
        $"context; no workspace passed, so the backward takes its scratch from the stream-ordered allocator per call. " +
        $"Before timing, {WarmupCalls} calls (NVRTC compiles and loads its kernels in the first), then more until the JIT " +
        $"has compiled nothing for {JitQuietMs:0} ms, so that the C# rows time tier-1 code.");

    private sealed record Call(string Id, string Label, string AbiRow, Func<Action> Prepare);

    /// <summary>
    /// Times each row in turn, handing it to <paramref name="measured"/> as it is done; a row whose backend is unusable
    /// here, or whose call fails, is skipped with the reason.
    /// </summary>
    public static List<HostOverheadRow> Measure(GpuSession gpu, Action<HostOverheadRow> measured)
    {
        using var buffers = new Buffers(gpu.Context);
        AttentionShape s = Shape;
        var forward = new DeviceForwardArgs
        {
            Shape = s,
            DType = ScalarType.BFloat16,
            Q = buffers.Tensor(s.SeqLenQ, s.HeadsQ, s.HeadDim),
            K = buffers.Tensor(s.SeqLenK, s.HeadsKv, s.HeadDim),
            V = buffers.Tensor(s.SeqLenK, s.HeadsKv, s.HeadDim),
            Output = buffers.Tensor(s.SeqLenQ, s.HeadsQ, s.HeadDim),
            Lse = buffers.Allocate(s.LseElements * sizeof(float)), // as bench/host_overhead.cu's calls, and the backward reads it
        };
        var biasShape = new BroadcastShape(s.Batch, s.HeadsKv, 1);
        DeviceForwardArgs withBias = forward with
        {
            Bias = DeviceBroadcastTensor.Contiguous(
                buffers.Allocate(biasShape.Elements(s.SeqLenK) * sizeof(ushort)), ScalarType.BFloat16, biasShape, s.SeqLenK),
        };
        var backward = new DeviceBackwardArgs
        {
            Forward = forward,
            DOutput = buffers.Tensor(s.SeqLenQ, s.HeadsQ, s.HeadDim),
            DQ = buffers.Tensor(s.SeqLenQ, s.HeadsQ, s.HeadDim),
            DK = buffers.Tensor(s.SeqLenK, s.HeadsKv, s.HeadDim),
            DV = buffers.Tensor(s.SeqLenK, s.HeadsKv, s.HeadDim),
        };

        Call[] calls =
        [
            new("dotnet.pinvoke.fwd", "C ABI through P/Invoke: fdma_fwd", "abi.fwd", () => PInvokeForward(gpu, forward)),
            new("dotnet.native.fwd", "device API, native backend: Forward", "abi.fwd",
                () => DeviceForward(gpu, forward, FlashDmAttnBackend.Native)),
            new("dotnet.native.fwd.bias", "device API, native backend: Forward with a per-key bias (B, Hkv, 1, Lk)", "abi.fwd_bias",
                () => DeviceForward(gpu, withBias, FlashDmAttnBackend.Native)),
            new("dotnet.nvrtc.fwd", "device API, NVRTC backend: Forward", "abi.fwd",
                () => DeviceForward(gpu, forward, FlashDmAttnBackend.Nvrtc)),
            new("dotnet.native.bwd", "device API, native backend: Backward", "abi.bwd",
                () => DeviceBackward(gpu, backward, FlashDmAttnBackend.Native)),
            new("dotnet.nvrtc.bwd", "device API, NVRTC backend: Backward", "abi.bwd",
                () => DeviceBackward(gpu, backward, FlashDmAttnBackend.Nvrtc)),
        ];

        var rows = new List<HostOverheadRow>();
        foreach (Call call in calls)
        {
            HostOverheadRow row = Time(gpu, call);
            measured(row);
            rows.Add(row);
        }

        return rows;
    }

    private static HostOverheadRow Time(GpuSession gpu, Call call)
    {
        var row = new HostOverheadRow { Id = call.Id, Label = call.Label, AbiRow = call.AbiRow };
        try
        {
            Action run = call.Prepare();
            WarmUp(gpu, run);
            var perCallUs = new double[Rounds];
            for (int round = 0; round < Rounds; round++)
            {
                gpu.Synchronize();
                long start = Stopwatch.GetTimestamp();
                for (int i = 0; i < CallsPerRound; i++)
                    run();
                perCallUs[round] = Stopwatch.GetElapsedTime(start).TotalMicroseconds / CallsPerRound;
            }

            gpu.Synchronize();
            return row with { Us = Statistics.Median(perCallUs), MinUs = perCallUs.Min(), MaxUs = perCallUs.Max() };
        }
        catch (Exception e) when (e is NativeLibraryException or KernelCompilationException or CudaException or FlashDmAttnException
                                       or MissingMethodException)
        {
            return row with { Skipped = $"{e.GetType().Name}: {e.Message}" };
        }
    }

    // The C ABI program's warm-up, then rounds until the JIT is quiet: the runtime moves a method to tier-1 code only
    // after it has been called a while and no new method was compiled for a moment, in the background; timing tier-0
    // code would charge the API for the JIT's own warm-up.
    private static void WarmUp(GpuSession gpu, Action run)
    {
        for (int i = 0; i < WarmupCalls; i++)
            run();
        gpu.Synchronize();

        long compiled = JitInfo.GetCompiledMethodCount();
        long start = Stopwatch.GetTimestamp(), quietSince = start;
        while (Stopwatch.GetElapsedTime(quietSince).TotalMilliseconds < JitQuietMs &&
               Stopwatch.GetElapsedTime(start).TotalSeconds < MaxJitWaitSeconds)
        {
            for (int i = 0; i < CallsPerRound; i++)
                run();
            gpu.Synchronize();
            if (JitInfo.GetCompiledMethodCount() is var now && now != compiled)
            {
                compiled = now;
                quietSince = Stopwatch.GetTimestamp();
            }
        }
    }

    private static AttentionOptions Options(FlashDmAttnBackend backend) => new() { Backend = backend, Causal = true };

    // fdma_fwd with the parameters NativeBackend.Forward passes for these arguments, built once, the problem by
    // NativeBackend's own Problem so that the two cannot drift apart: the row is the interop transition and the C ABI's
    // own work, without the device API's checks, backend selection and marshalling.
    private static Action PInvokeForward(GpuSession gpu, DeviceForwardArgs args)
    {
        FlashDmAttnLibrary.EnsureSupportsDevice(gpu.Device);
        var parameters = new Interop.FlashDmAttn.FwdParams[1];
        parameters[0] = new Interop.FlashDmAttn.FwdParams
        {
            StructSize = (uint)sizeof(Interop.FlashDmAttn.FwdParams),
            Problem = NativeBackend.Problem(args, Options(FlashDmAttnBackend.Native)),
            Out = NativeBackend.ToNative(args.Output),
            Lse = args.Lse,
            Stream = gpu.Stream,
        };
        return () =>
        {
            fixed (Interop.FlashDmAttn.FwdParams* p = parameters)
                FlashDmAttnLibrary.ThrowIfFailed(Interop.FlashDmAttn.fdma_fwd(p), "fdma_fwd");
        };
    }

    private static Action DeviceForward(GpuSession gpu, DeviceForwardArgs args, FlashDmAttnBackend backend)
    {
        AttentionOptions options = Options(backend);
        nint stream = gpu.Stream;
        return () => DynamicMaskAttention.Forward(args, options, stream);
    }

    // The forward with its log-sum-exp runs once first, on the same backend: the backward reads its output and LSE.
    private static Action DeviceBackward(GpuSession gpu, DeviceBackwardArgs args, FlashDmAttnBackend backend)
    {
        AttentionOptions options = Options(backend);
        nint stream = gpu.Stream;
        DynamicMaskAttention.Forward(args.Forward, options, stream);
        return () => DynamicMaskAttention.Backward(args, options, deterministic: false, stream);
    }

    // The rows' tensors, zeroed (the values do not change the host's work).
    private sealed class Buffers(CudaPrimaryContext context) : IDisposable
    {
        private readonly DeviceBuffers buffers = new(context);

        public nint Allocate(long bytes)
        {
            DeviceBuffer buffer = buffers.Allocate(bytes);
            buffer.Fill(0);
            return buffer.Pointer;
        }

        public DeviceTensor Tensor(int seqLen, int heads, int headDim) =>
            DeviceTensor.SequenceMajor(Allocate((long)Shape.Batch * seqLen * heads * headDim * sizeof(ushort)), seqLen, heads, headDim);

        public void Dispose() => buffers.Dispose();
    }
}

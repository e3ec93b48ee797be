namespace FlashDmAttn;

/// <summary>
/// DMA's decode cache on one GPU (README, "Decode cache"), which owns its device memory: per (batch, kv head)
/// <see cref="Slots"/> = window + maxStepTokens slots of key, value, score (the attention bias, fp32) and token
/// position, and each slot's lifetime over the current step's queries. Exact: attending over the slots equals attending
/// over the whole context with the per-query top-w mask, since a key evicted from the top w never returns. Each step
/// appends its S tokens (<see cref="Append"/>), then its S queries attend over the slots (<see cref="StepArgs"/> and a
/// forward call without causality, or <see cref="Attend"/>). The native library alone implements it. Calls run in the
/// device's primary context (the CUDA runtime's), asynchronously on the stream given; not thread-safe.
/// </summary>
public sealed class DmaDecodeCache : IDisposable
{
    private const string Feature = "The DMA decode cache";
    private const int StateCounters = 4; // per (batch, kv head): the library's own

    private readonly CudaPrimaryContext context;
    private readonly DeviceBuffer[] buffers;
    private readonly Interop.FlashDmAttn.DmaCache cache;
    private bool disposed;

    /// <summary>
    /// Allocates an empty cache on GPU <paramref name="device"/> (its memory uninitialised: the constructor queues
    /// <see cref="Reset"/> on the legacy default stream and waits for it).
    /// </summary>
    /// <param name="dtype">Element type of K and V: <see cref="ScalarType.Float16"/> or <see cref="ScalarType.BFloat16"/>.</param>
    /// <param name="batch">B &gt;= 1.</param>
    /// <param name="headsKv">Hkv &gt;= 1.</param>
    /// <param name="headDim">D, one the attention supports (32, 64, 96, 128, 192 or 256).</param>
    /// <param name="window">w &gt;= 1: the keys each query sees at most (DMA's top-k).</param>
    /// <param name="maxStepTokens">S_max &gt;= 1: the most tokens one <see cref="Append"/> takes.</param>
    /// <param name="device">CUDA device ordinal.</param>
    /// <exception cref="ArgumentException">A size or the type is invalid (the message names it).</exception>
    /// <exception cref="NativeLibraryException">The native library is missing, incompatible or has no code for the GPU.</exception>
    /// <exception cref="CudaException">An allocation failed.</exception>
    /// <exception cref="FlashDmAttnException">The native library refused the cache.</exception>
    public DmaDecodeCache(ScalarType dtype, int batch, int headsKv, int headDim, int window, int maxStepTokens, int device = 0)
    {
        ArgumentValidation.ValidateDecodeCache(dtype, batch, headsKv, headDim, window, maxStepTokens);
        ArgumentOutOfRangeException.ThrowIfNegative(device);
        if (device >= CudaDriver.DeviceCount())
            throw new ArgumentOutOfRangeException(nameof(device), $"device must be less than the device count ({CudaDriver.DeviceCount()}); got {device}.");
        FlashDmAttnLibrary.RequireFor(Feature, device);

        DType = dtype;
        Batch = batch;
        HeadsKv = headsKv;
        HeadDim = headDim;
        Window = window;
        MaxStepTokens = maxStepTokens;
        Device = device;
        long slotCount = checked((long)batch * headsKv * Slots);
        long kvBytes = checked(slotCount * headDim * dtype.ElementSize());
        context = CudaPrimaryContext.Retain(device);
        var owned = new List<DeviceBuffer>();
        try
        {
            DeviceBuffer Allocate(long bytes)
            {
                DeviceBuffer buffer = DeviceBuffer.Allocate(context, bytes);
                owned.Add(buffer);
                return buffer;
            }

            DeviceBuffer k = Allocate(kvBytes), v = Allocate(kvBytes);
            DeviceBuffer scores = Allocate(slotCount * sizeof(float)), positions = Allocate(slotCount * sizeof(int));
            DeviceBuffer lifetimes = Allocate(slotCount * DeviceLifetimes.PairBytes);
            DeviceBuffer state = Allocate((long)batch * headsKv * StateCounters * sizeof(int));
            unsafe
            {
                cache = new Interop.FlashDmAttn.DmaCache
                {
                    StructSize = (uint)sizeof(Interop.FlashDmAttn.DmaCache),
                    DType = (int)dtype,
                    Batch = batch,
                    HeadsKv = headsKv,
                    HeadDim = headDim,
                    Window = window,
                    MaxStepTokens = maxStepTokens,
                    K = NativeBackend.ToNative(DeviceTensor.SequenceMajor(k.Pointer, Slots, headsKv, headDim)),
                    V = NativeBackend.ToNative(DeviceTensor.SequenceMajor(v.Pointer, Slots, headsKv, headDim)),
                    Scores = scores.Pointer,
                    Positions = positions.Pointer,
                    Lifetimes = lifetimes.Pointer,
                    State = state.Pointer,
                };
            }

            buffers = [.. owned];
            Reset();
            using (context.Push())
                CudaDriver.Synchronize();
        }
        catch
        {
            foreach (DeviceBuffer buffer in owned)
                buffer.Dispose();
            context.Dispose();
            throw;
        }
    }

    /// <summary>Element type of K and V.</summary>
    public ScalarType DType { get; }

    /// <summary>Batch B.</summary>
    public int Batch { get; }

    /// <summary>Key/value heads Hkv.</summary>
    public int HeadsKv { get; }

    /// <summary>Head dimension D.</summary>
    public int HeadDim { get; }

    /// <summary>Window w: the keys each query sees at most.</summary>
    public int Window { get; }

    /// <summary>The most tokens one <see cref="Append"/> takes.</summary>
    public int MaxStepTokens { get; }

    /// <summary>Slots per (batch, kv head): <see cref="Window"/> + <see cref="MaxStepTokens"/>; the keys of a step's attention.</summary>
    public int Slots => Window + MaxStepTokens;

    /// <summary>The CUDA device ordinal the cache lives on.</summary>
    public int Device { get; }

    /// <summary>Tokens of the last <see cref="Append"/>, the queries of the step's attention; 0 before the first one and after a reset.</summary>
    public int StepTokens { get; private set; }

    /// <summary>Empties the cache: every slot free, no token appended.</summary>
    /// <param name="stream">A <c>CUstream</c>/<c>cudaStream_t</c> of the device; 0 for the legacy default stream.</param>
    /// <exception cref="ObjectDisposedException">The cache is disposed.</exception>
    /// <exception cref="FlashDmAttnException">The native library refused the call.</exception>
    public void Reset(nint stream = 0)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        using CudaContextScope current = context.Push();
        NativeBackend.ResetCache(cache, stream);
        StepTokens = 0;
    }

    /// <summary>
    /// Appends one step's tokens at the next positions, asynchronously: each takes a free slot while fewer than w keys
    /// are alive, else replaces the lowest-ranked alive key if it outranks it (equal scores: the earlier token wins),
    /// else it is dropped and no query sees it. Frees first the slots the previous step's tokens replaced.
    /// </summary>
    /// <param name="k">The tokens' keys, (B, S, Hkv, D), on the cache's device.</param>
    /// <param name="v">The tokens' values, (B, S, Hkv, D).</param>
    /// <param name="scores">The tokens' scores (DMA: the bias), (B, Hkv, 1, S) in fp16, bf16 or fp32, no broadcast; any key stride &gt;= 1.</param>
    /// <param name="tokens">S, 1 &lt;= S &lt;= <see cref="MaxStepTokens"/>.</param>
    /// <param name="slots">Optional device pointer receiving (B, Hkv, S) int32: the slot each token took, -1 when dropped; 0 for none.</param>
    /// <param name="stream">A <c>CUstream</c>/<c>cudaStream_t</c> of the device; 0 for the legacy default stream.</param>
    /// <exception cref="ArgumentException">A tensor, the count or an alignment is invalid, or a tensor overlaps the cache (the message names it).</exception>
    /// <exception cref="ObjectDisposedException">The cache is disposed.</exception>
    /// <exception cref="FlashDmAttnException">The native library refused the call.</exception>
    public void Append(DeviceTensor k, DeviceTensor v, DeviceBroadcastTensor scores, int tokens, nint slots = 0, nint stream = 0)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        ArgumentValidation.ValidateDecodeAppend(this, k, v, scores, tokens, slots, CacheRanges());
        CheckOnDevice([(k.Pointer, nameof(k)), (v.Pointer, nameof(v)), (scores.Pointer, nameof(scores)), (slots, nameof(slots))]);
        using CudaContextScope current = context.Push();
        NativeBackend.AppendToCache(cache, tokens, k, v, scores, slots, stream);
        StepTokens = tokens;
    }

    /// <summary>
    /// The forward arguments of the step just appended, as <c>fdma_dma_cache_problem</c> fills them: Lk = <see cref="Slots"/>,
    /// the cache's K and V, the slots' lifetimes, their scores as a (B, Hkv, 1, Slots) fp32 bias; and the step's
    /// queries and output. Run it with options whose <see cref="AttentionOptions.Causal"/> is false: the lifetimes hold
    /// causality. A backward over a decode step is not meaningful (the cache's content changes with each append).
    /// </summary>
    /// <param name="q">The step's queries, (B, S, Hq, D), S = <see cref="StepTokens"/>.</param>
    /// <param name="output">Receives the step's output, (B, S, Hq, D).</param>
    /// <param name="headsQ">Hq, a multiple of <see cref="HeadsKv"/>.</param>
    /// <param name="lse">Optional device pointer receiving the log-sum-exp, (B, Hq, S); 0 for none.</param>
    /// <returns>The forward arguments.</returns>
    /// <exception cref="InvalidOperationException">No token was appended since the last reset.</exception>
    /// <exception cref="ObjectDisposedException">The cache is disposed.</exception>
    /// <exception cref="FlashDmAttnException">The native library refused the call.</exception>
    public DeviceForwardArgs StepArgs(DeviceTensor q, DeviceTensor output, int headsQ, nint lse = 0)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (StepTokens == 0)
            throw new InvalidOperationException("The cache holds no step: Append the step's tokens first (StepTokens is 0).");
        Interop.FlashDmAttn.Problem problem = NativeBackend.CacheProblem(cache);
        Interop.FlashDmAttn.BroadcastTensor l = problem.Lifetimes, b = problem.Bias;
        return new DeviceForwardArgs
        {
            Shape = new AttentionShape(problem.Batch, StepTokens, problem.SeqLenK, headsQ, problem.HeadsKv, problem.HeadDim),
            DType = (ScalarType)problem.DType,
            Q = q,
            K = FromNative(problem.K),
            V = FromNative(problem.V),
            Output = output,
            Lifetimes = new DeviceLifetimes(l.Data, l.Batch, l.Heads, l.StrideBatch, l.StrideHead, l.StrideKey),
            Bias = new DeviceBroadcastTensor(b.Data, (ScalarType)b.DType, new BroadcastShape(b.Batch, b.Heads, b.Rows),
                b.StrideBatch, b.StrideHead, b.StrideRow, b.StrideKey),
            Lse = lse,
        };
    }

    /// <summary>
    /// The step's attention: <see cref="DynamicMaskAttention.Forward(DeviceForwardArgs, AttentionOptions?, nint)"/> on
    /// <see cref="StepArgs"/>, in the cache's context, asynchronously on <paramref name="stream"/>.
    /// </summary>
    /// <param name="q">The step's queries, (B, S, Hq, D).</param>
    /// <param name="output">Receives the step's output, (B, S, Hq, D).</param>
    /// <param name="headsQ">Hq, a multiple of <see cref="HeadsKv"/>.</param>
    /// <param name="options">Scale, softcap and backend; Causal must be false; <c>null</c> for the defaults.</param>
    /// <param name="lse">Optional device pointer receiving the log-sum-exp, (B, Hq, S); 0 for none.</param>
    /// <param name="stream">A <c>CUstream</c>/<c>cudaStream_t</c> of the device; 0 for the legacy default stream.</param>
    /// <exception cref="ArgumentException">An argument is invalid, or options.Causal is true.</exception>
    /// <exception cref="InvalidOperationException">No token was appended since the last reset.</exception>
    /// <exception cref="ObjectDisposedException">The cache is disposed.</exception>
    /// <exception cref="FlashDmAttnException">The backend refused the call, or its launch failed.</exception>
    public void Attend(DeviceTensor q, DeviceTensor output, int headsQ, AttentionOptions? options = null, nint lse = 0, nint stream = 0)
    {
        if (options?.Causal == true)
        {
            throw new ArgumentException(
                "options.Causal must be false for a decode step (the slots' lifetimes hold causality); got true.", nameof(options));
        }

        DeviceForwardArgs args = StepArgs(q, output, headsQ, lse);
        using CudaContextScope current = context.Push();
        DynamicMaskAttention.Forward(args, options, stream);
    }

    /// <summary>Frees the cache's device memory (after the device's pending work on it must have finished).</summary>
    public void Dispose()
    {
        if (disposed)
            return;
        disposed = true;
        foreach (DeviceBuffer buffer in buffers)
            buffer.Dispose();
        context.Dispose();
    }

    // The memory the cache writes: each buffer, for the overlap checks of an append.
    private (string Name, nint Pointer, long Bytes)[] CacheRanges() =>
        [.. new[] { "cache K", "cache V", "cache scores", "cache positions", "cache lifetimes", "cache state" }
            .Zip(buffers, (name, buffer) => (name, buffer.Pointer, buffer.ByteCount))];

    private void CheckOnDevice(ReadOnlySpan<(nint Pointer, string Name)> pointers)
    {
        foreach ((nint pointer, string name) in pointers)
        {
            if (pointer != 0 && CudaDriver.DeviceOf(pointer, name) is int other && other != Device)
                throw new ArgumentException($"{name} must be memory of the cache's device {Device}; got memory of device {other}.", name);
        }
    }

    private static DeviceTensor FromNative(Interop.FlashDmAttn.Tensor tensor) =>
        new(tensor.Data, tensor.StrideBatch, tensor.StrideSeq, tensor.StrideHead);
}

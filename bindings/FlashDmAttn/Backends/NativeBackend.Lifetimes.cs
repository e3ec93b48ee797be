namespace FlashDmAttn;

// What only the native library implements: the top-k lifetime builder and the DMA decode cache, marshalled into their
// parameter structs as the attention calls are. Every call arrives validated by ArgumentValidation.
internal sealed partial class NativeBackend
{
    public static unsafe void TopKLifetimes(DeviceTopKArgs args, nint stream)
    {
        Interop.FlashDmAttn.TopKParams parameters = TopKParams(args.Problem, ToNative(args.Scores));
        parameters.Lifetimes = args.Lifetimes;
        parameters.Survivors = args.Survivors;
        parameters.Workspace = args.Workspace;
        parameters.WorkspaceBytes = (ulong)args.WorkspaceBytes;
        parameters.Stream = stream;
        FlashDmAttnLibrary.ThrowIfFailed(Interop.FlashDmAttn.fdma_topk_lifetimes(&parameters), "fdma_topk_lifetimes");
    }

    // Reads the sizes, the selection and the scores' type and shape, never what a pointer points to.
    public static unsafe long TopKWorkspaceSize(TopKProblem problem, ScalarType scoresType)
    {
        FlashDmAttnLibrary.EnsureLoaded();
        Interop.FlashDmAttn.TopKParams parameters = TopKParams(problem, SizeQueryOperand(new BroadcastShape(problem.Batch, problem.Heads, 1), scoresType));
        FlashDmAttnLibrary.ThrowIfFailed(Interop.FlashDmAttn.fdma_topk_workspace_size(&parameters, out ulong bytes), "fdma_topk_workspace_size");
        return checked((long)bytes);
    }

    public static unsafe void ResetCache(Interop.FlashDmAttn.DmaCache cache, nint stream) =>
        FlashDmAttnLibrary.ThrowIfFailed(Interop.FlashDmAttn.fdma_dma_cache_reset(&cache, stream), "fdma_dma_cache_reset");

    public static unsafe void AppendToCache(
        Interop.FlashDmAttn.DmaCache cache, int tokens, DeviceTensor k, DeviceTensor v, DeviceBroadcastTensor scores, nint slots, nint stream)
    {
        var parameters = new Interop.FlashDmAttn.DmaAppendParams
        {
            StructSize = (uint)sizeof(Interop.FlashDmAttn.DmaAppendParams),
            Tokens = tokens,
            K = ToNative(k),
            V = ToNative(v),
            Scores = ToNative(scores),
            Slots = slots,
            Stream = stream,
        };
        FlashDmAttnLibrary.ThrowIfFailed(Interop.FlashDmAttn.fdma_dma_cache_append(&cache, &parameters), "fdma_dma_cache_append");
    }

    // The key-side half of the step's problem, as the library fills it.
    public static unsafe Interop.FlashDmAttn.Problem CacheProblem(Interop.FlashDmAttn.DmaCache cache)
    {
        Interop.FlashDmAttn.Problem problem = default;
        FlashDmAttnLibrary.ThrowIfFailed(Interop.FlashDmAttn.fdma_dma_cache_problem(&cache, &problem), "fdma_dma_cache_problem");
        return problem;
    }

    private static unsafe Interop.FlashDmAttn.TopKParams TopKParams(TopKProblem problem, Interop.FlashDmAttn.BroadcastTensor scores) => new()
    {
        StructSize = (uint)sizeof(Interop.FlashDmAttn.TopKParams),
        Selection = (int)problem.Selection,
        Batch = problem.Batch,
        Heads = problem.Heads,
        SeqLenQ = problem.SeqLenQ,
        SeqLenK = problem.SeqLenK,
        Window = problem.Window,
        IsCausal = problem.Causal ? 1 : 0,
        Scores = scores,
    };
}

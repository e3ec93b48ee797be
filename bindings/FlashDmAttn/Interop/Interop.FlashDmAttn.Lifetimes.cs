using System.Runtime.InteropServices;

namespace FlashDmAttn;

internal static partial class Interop
{
    // The key-lifetime half of the C ABI (native/include/flash_dmattn.h, ABI 3): the top-k lifetime builder and the DMA
    // decode cache, mirrored field for field like the forward.
    internal static unsafe partial class FlashDmAttn
    {
        // fdma_topk_params: 160 bytes; offsets scores 32, lifetimes 88, stream 120, reserved 128.
        [StructLayout(LayoutKind.Sequential)]
        public struct TopKParams
        {
            public uint StructSize;
            public int Selection;
            public int Batch;
            public int Heads;
            public int SeqLenQ;
            public int SeqLenK;
            public int Window;
            public int IsCausal;
            public BroadcastTensor Scores;
            public nint Lifetimes;
            public nint Survivors;
            public nint Workspace;
            public ulong WorkspaceBytes;
            public nint Stream;
            public fixed ulong Reserved[4];
        }

        // fdma_dma_cache: 128 bytes; offsets k 32, v 64, scores 96, state 120.
        [StructLayout(LayoutKind.Sequential)]
        public struct DmaCache
        {
            public uint StructSize;
            public int DType;
            public int Batch;
            public int HeadsKv;
            public int HeadDim;
            public int Window;
            public int MaxStepTokens;
            public Tensor K;
            public Tensor V;
            public nint Scores;
            public nint Positions;
            public nint Lifetimes;
            public nint State;
        }

        // fdma_dma_append_params: 176 bytes; offsets k 8, v 40, scores 72, slots 128, reserved 144.
        [StructLayout(LayoutKind.Sequential)]
        public struct DmaAppendParams
        {
            public uint StructSize;
            public int Tokens;
            public Tensor K;
            public Tensor V;
            public BroadcastTensor Scores;
            public nint Slots;
            public nint Stream;
            public fixed ulong Reserved[4];
        }

        // The three initialisers: only the tests call them, to compare the struct_size each writes with the mirror's;
        // addresses because a mismatched native struct may be larger than its mirror.
        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial void fdma_topk_params_init(nint parameters);

        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial void fdma_dma_cache_init(nint cache);

        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial void fdma_dma_append_params_init(nint parameters);

        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial int fdma_topk_workspace_size(TopKParams* parameters, out ulong bytes);

        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial int fdma_topk_lifetimes(TopKParams* parameters);

        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial int fdma_dma_cache_reset(DmaCache* cache, nint stream);

        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial int fdma_dma_cache_append(DmaCache* cache, DmaAppendParams* parameters);

        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial int fdma_dma_cache_problem(DmaCache* cache, Problem* problem);
    }
}

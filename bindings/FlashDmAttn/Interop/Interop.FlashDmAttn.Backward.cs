using System.Runtime.InteropServices;

namespace FlashDmAttn;

internal static partial class Interop
{
    // The backward half of the C ABI (native/include/flash_dmattn.h), mirrored field for field like the forward.
    internal static unsafe partial class FlashDmAttn
    {
        // fdma_bwd_params: 608 bytes; offsets problem 8, out 320, lse 352, d_out 360, d_bias 488, tile_stats 544,
        // reserved 576.
        [StructLayout(LayoutKind.Sequential)]
        public struct BwdParams
        {
            public uint StructSize;
            public int Deterministic;
            public Problem Problem;
            public Tensor Out;
            public nint Lse;
            public Tensor DOut;
            public Tensor DQ;
            public Tensor DK;
            public Tensor DV;
            public BroadcastTensor DBias;
            public nint TileStats;
            public nint Workspace;
            public ulong WorkspaceBytes;
            public nint Stream;
            public fixed ulong Reserved[4];
        }

        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial int fdma_bwd_tile_shape(int headDim, int dtype, out int blockM, out int blockN);

        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial int fdma_bwd_workspace_size(BwdParams* parameters, out ulong bytes);

        // Only the tests call it, to compare the struct size it writes with the mirror's; an address rather than a
        // BwdParams* because a mismatched native struct may be larger than the mirror.
        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial void fdma_bwd_params_init(nint parameters);

        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial int fdma_bwd(BwdParams* parameters);
    }
}

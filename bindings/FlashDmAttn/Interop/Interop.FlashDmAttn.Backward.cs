using System.Runtime.InteropServices;

namespace FlashDmAttn;

internal static partial class Interop
{
    // The backward half of the C ABI (native/include/flash_dmattn.h), mirrored field for field like the forward.
    internal static unsafe partial class FlashDmAttn
    {
        // fdma_bwd_params: 560 bytes; offsets deterministic 4, forward 8 (344 bytes, 8-aligned), d_out 352, d_q 384,
        // d_k 416, d_v 448, d_bias 480, reserved 528. No padding anywhere.
        [StructLayout(LayoutKind.Sequential)]
        public struct BwdParams
        {
            public uint StructSize;
            public int Deterministic;
            public FwdParams Forward;
            public Tensor DOut;
            public Tensor DQ;
            public Tensor DK;
            public Tensor DV;
            public BroadcastTensor DBias;
            public fixed ulong Reserved[4];
        }

        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial int fdma_bwd_tile_shape(int headDim, int dtype, out int blockM, out int blockN);

        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial int fdma_bwd_workspace_size(BwdParams* parameters, out ulong bytes);

        // Only the tests call it, to compare the struct sizes it writes (its own and forward's) with the mirror's;
        // an address rather than a BwdParams* because a mismatched native struct may be larger than the mirror.
        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial void fdma_bwd_params_init(nint parameters);

        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial int fdma_bwd(BwdParams* parameters);
    }
}

using System.Runtime.InteropServices;

namespace FlashDmAttn;

internal static partial class Interop
{
    // The C ABI of native/include/flash_dmattn.h. Structs mirror the header field for field; the sizes in the
    // comments are those of the x86-64 SysV and Win64 layouts, which agree here.
    internal static unsafe partial class FlashDmAttn
    {
        static FlashDmAttn() => NativeLibraryResolver.Register();

        public const int AbiVersion = 3;

        // fdma_tensor: 32 bytes.
        [StructLayout(LayoutKind.Sequential)]
        public struct Tensor
        {
            public nint Data;
            public long StrideBatch;
            public long StrideSeq;
            public long StrideHead;
        }

        // fdma_broadcast_tensor: 56 bytes.
        [StructLayout(LayoutKind.Sequential)]
        public struct BroadcastTensor
        {
            public nint Data;
            public int DType;
            public int Batch;
            public int Heads;
            public int Rows;
            public long StrideBatch;
            public long StrideHead;
            public long StrideRow;
            public long StrideKey;
        }

        // fdma_problem: 312 bytes; offsets q 32, mask 128, lifetimes 184, bias 240, softmax_scale 296 (InteropLayoutTests has a C
        // compiler check every offset of these mirrors against the header).
        [StructLayout(LayoutKind.Sequential)]
        public struct Problem
        {
            public int DType;
            public int Batch;
            public int SeqLenQ;
            public int SeqLenK;
            public int HeadsQ;
            public int HeadsKv;
            public int HeadDim;
            public Tensor Q;
            public Tensor K;
            public Tensor V;
            public BroadcastTensor Mask;
            public BroadcastTensor Lifetimes;
            public BroadcastTensor Bias;
            public float SoftmaxScale;
            public float Softcap;
            public int IsCausal;
        }

        // fdma_fwd_params: 424 bytes; offsets problem 8, out 320, lse 352, reserved 392.
        [StructLayout(LayoutKind.Sequential)]
        public struct FwdParams
        {
            public uint StructSize;
            public Problem Problem;
            public Tensor Out;
            public nint Lse;
            public nint TileStats;
            public nint Workspace;
            public ulong WorkspaceBytes;
            public nint Stream;
            public fixed ulong Reserved[4];
        }

        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial int fdma_abi_version();

        // The strings below are static or thread-owned storage: returned as pointers so that no marshaller frees them.
        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial nint fdma_version_string();

        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial nint fdma_status_string(int status);

        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial nint fdma_last_error_message();

        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial int fdma_compiled_archs(int* archs, int capacity, out int count);

        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial int fdma_fwd_tile_shape(int headDim, int dtype, out int blockM, out int blockN);

        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial int fdma_fwd_workspace_size(FwdParams* parameters, out ulong bytes);

        // Only the tests call it, to compare the struct_size it writes (the native sizeof) with the mirror's;
        // untyped because a mismatched native struct may be larger than FwdParams.
        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial void fdma_fwd_params_init(void* parameters);

        [LibraryImport(Libraries.FlashDmAttn)]
        public static partial int fdma_fwd(FwdParams* parameters);
    }
}

using System.Runtime.InteropServices;

namespace FlashDmAttn;

// fdma::FwdParams of native/kernels/fwd_params.cuh, byte for byte: the forward kernel's one argument, passed by value
// to cuLaunchKernel. Field for field in the header's order; the sizes are those of NVRTC's 64-bit layout (and of the
// x86-64 and Win64 host layouts, which agree). NvrtcMirrorTests has NVRTC check every offset.
internal static class KernelParams
{
    // fdma::Strides: 24 bytes.
    [StructLayout(LayoutKind.Sequential)]
    public struct Strides
    {
        public long Batch;
        public long Seq;
        public long Head;
    }

    // fdma::BroadcastOperand: 56 bytes (4 of them tail padding).
    [StructLayout(LayoutKind.Sequential)]
    public struct BroadcastOperand
    {
        public nint Data;
        public long StrideBatch;
        public long StrideHead;
        public long StrideRow;
        public int HeadGroup;
        public int Batches;
        public int Heads;
        public int Rows;
        public int Type;
    }

    // fdma::FwdParams: 320 bytes; offsets q_strides 32, mask 128, bias 184, occupancy 240, lse 272, seqlen_q 288,
    // qk_scale 304, is_causal 316.
    [StructLayout(LayoutKind.Sequential)]
    public struct Forward
    {
        public nint Q;
        public nint K;
        public nint V;
        public nint O;
        public Strides QStrides;
        public Strides KStrides;
        public Strides VStrides;
        public Strides OStrides;
        public BroadcastOperand Mask;
        public BroadcastOperand Bias;
        public nint Occupancy;
        public nint FullTiles;
        public nint OccupancyT; // the backward's; 0 in the forward
        public nint FullTilesT;
        public nint Lse;
        public nint TileStats;
        public int SeqLenQ;
        public int SeqLenK;
        public int HeadsQ;
        public int KvGroup;
        public float QkScale;
        public float BiasScale;
        public float SoftcapOut;
        public int IsCausal;
    }
}

using System.Runtime.InteropServices;

namespace FlashDmAttn;

// fdma::FwdParams of native/kernels/fwd_params.cuh and fdma::BwdParams of bwd_params.cuh, byte for byte: the kernels'
// argument, passed by value to cuLaunchKernel. Field for field in the header's order; the sizes are those of NVRTC's 64-bit layout (and of the
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

    // fdma::FwdParams: 344 bytes; offsets q_strides 32, mask 128, bias 184, occupancy 240, lse 272, seqlen_q 288,
    // qk_scale 304, is_causal 316, o_partial 320, kv_splits 336, batch 340.
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
        public nint OPartial;   // split-KV scratch (ForwardLaunchPlan.KvSplits > 1), else 0
        public nint LsePartial;
        public int KvSplits;    // 1 without a split, and in the backward
        public int Batch;
    }

    // fdma::BwdParams of native/kernels/bwd_params.cuh: 552 bytes; offsets d_o 344, d_o_strides 376, d_bias 472,
    // d_bias_type 480, d_bias_strides 488 (after 4 bytes of padding), d_bias_accum 512, delta 520, d_q_accum 528,
    // softmax_scale 536, owner_batches 548. The backward kernels' one argument (the Delta and
    // dQ row passes take the head dim after it).
    [StructLayout(LayoutKind.Sequential)]
    public struct Backward
    {
        public Forward Fwd;
        public nint DO;
        public nint DQ;
        public nint DK;
        public nint DV;
        public Strides DOStrides;
        public Strides DQStrides;
        public Strides DKStrides;
        public Strides DVStrides;
        public nint DBias;
        public int DBiasType;
        public Strides DBiasStrides; // batch, row (as seq), head; 0 where broadcast
        public nint DBiasAccum;
        public nint Delta;
        public nint DQAccum;         // 0 when deterministic
        public float SoftmaxScale;
        public int HeadsKv;
        public int OwnerHeads;
        public int OwnerBatches;
    }
}

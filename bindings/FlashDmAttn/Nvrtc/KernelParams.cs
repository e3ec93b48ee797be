using System.Runtime.InteropServices;

namespace FlashDmAttn;

// The kernels' arguments of native/kernels/params.cuh, byte for byte, passed by value to cuLaunchKernel: field for
// field in the header's order, with NVRTC's 64-bit layout (that of x86-64 and Win64 too). NvrtcMirrorTests has NVRTC
// check every size and offset.
internal static class KernelParams
{
    // fdma::kFwdStatCounters, kBwdStatCounters: the counters behind a call's tile_stats, zeroed before its launches.
    public const int ForwardStatCounters = 3;
    public const int BackwardStatCounters = 2;

    // fdma::Strides.
    [StructLayout(LayoutKind.Sequential)]
    public struct Strides
    {
        public long Batch;
        public long Seq;
        public long Head;
    }

    // fdma::BroadcastOperand.
    [StructLayout(LayoutKind.Sequential)]
    public struct BroadcastOperand
    {
        public nint Data;
        public long StrideBatch;
        public long StrideHead;
        public long StrideRow;
        public long StrideKey;
        public int HeadGroup;
        public int Batches;
        public int Heads;
        public int Rows;
        public int Type;
    }

    // fdma::ScoreModParams.
    [StructLayout(LayoutKind.Sequential)]
    public struct ScoreMod
    {
        public float QkScale;
        public float BiasScale;
        public float SoftcapOut;
    }

    // fdma::AttentionParams: the problem both directions read.
    [StructLayout(LayoutKind.Sequential)]
    public struct Attention
    {
        public nint Q;
        public nint K;
        public nint V;
        public Strides QStrides;
        public Strides KStrides;
        public Strides VStrides;
        public BroadcastOperand Mask;
        public BroadcastOperand Lifetimes; // int2 pairs {first, end}, strides in pairs
        public BroadcastOperand Bias;
        public nint Occupancy;
        public nint FullTiles;
        public nint OccupancyT; // the backward's key-major bitmaps; 0 in the forward
        public nint FullTilesT;
        public int Batch;
        public int SeqLenQ;
        public int SeqLenK;
        public int HeadsQ;
        public int HeadsKv;
        public int KvGroup;
        public int IsCausal;
        public float SoftmaxScale;
        public ScoreMod Score;
    }

    // fdma::FwdParams.
    [StructLayout(LayoutKind.Sequential)]
    public struct Forward
    {
        public Attention Attn;
        public nint O;
        public Strides OStrides;
        public nint Lse;
        public nint TileStats;
        public nint OPartial;   // split-KV scratch (ForwardPlan.KvSplits > 1), else 0
        public nint LsePartial;
        public int KvSplits;
        public int PackedHeads; // query heads per block (ForwardPlan.PackedHeads)
    }

    // fdma::BwdParams.
    [StructLayout(LayoutKind.Sequential)]
    public struct Backward
    {
        public Attention Attn;
        public nint O;
        public Strides OStrides;
        public nint Lse;
        public nint DO;
        public nint DQ;
        public nint DK;
        public nint DV;
        public Strides DOStrides;
        public Strides DQStrides;
        public Strides DKStrides;
        public Strides DVStrides;
        public BroadcastOperand DBias;
        public nint DBiasAccum;
        public nint Delta;
        public nint DQAccum;    // 0 when deterministic
        public nint DKAccum;    // the gathered dK/dV's fp32 accumulators (BackwardPlan.GatheredDkdv), else 0
        public nint DVAccum;
        public nint TileStats;
        public int OwnerHeads;
        public int OwnerBatches;
    }
}

// What the kernels read: the C ABI's parameters, resolved by the host launcher (native/src) or the NVRTC backend
// (bindings/FlashDmAttn/Nvrtc) into the form the inner loops want (broadcasts as zero strides, scales folded into
// log2 space, scratch placed). Plain types only: NVRTC compiles this file without host headers.
#pragma once

#include "common.cuh"

namespace fdma {

struct BroadcastOperand {
    const void* data;        // nullptr = absent
    long long stride_batch;  // elements; 0 where broadcast
    long long stride_head;   // per query head group; 0 where broadcast
    long long stride_row;    // 0 where broadcast over queries
    long long stride_key;    // >= 1
    int head_group;          // query head h reads head h / head_group
    int batches;             // distinct batches (1 where broadcast)
    int heads;               // distinct heads (1 where broadcast)
    int rows;                // distinct query rows: 1 (broadcast) or Lq
    int type;                // DType of a bias or its gradient; unused for the mask
};

struct Strides {
    long long batch, seq, head;  // elements
};

// The score of a visible pair, in log2 units (score_mod.cuh applies it):
//   without softcap: qk * qk_scale + bias * bias_scale;
//   with softcap c:  tanh(qk * qk_scale + bias * bias_scale) * softcap_out.
struct ScoreModParams {
    float qk_scale;
    float bias_scale;
    float softcap_out;  // 0 = no softcap
};

// The problem both directions read: the inputs, mask and bias, the sizes and the score modification.
struct AttentionParams {
    const void* q;           // [B, Lq, Hq, D]
    const void* k;           // [B, Lk, Hkv, D]
    const void* v;           // [B, Lk, Hkv, D]
    Strides q_strides, k_strides, v_strides;

    BroadcastOperand mask;   // [B|1, Hq|Hkv|1, Lq|1, Lk] u8, nonzero = visible
    BroadcastOperand lifetimes;  // [B|1, Hq|Hkv|1, 1, Lk] int2 {first, end}: visible iff first <= query < end
    BroadcastOperand bias;   // [B|1, Hq|Hkv|1, Lq|1, Lk]

    // With a mask: bitmaps of one bit per (query tile, key tile), written by the pre-pass
    // (tile_occupancy.cuh, which gives their meaning) and read by the visibility policy: by query
    // tile, [mask batches][mask heads][query tiles][key-tile words]; and, for the backward's
    // key-major walk, by key tile, [..][key tiles][query-tile words] (nullptr in the forward).
    u32* occupancy;
    u32* full_tiles;
    u32* occupancy_t;
    u32* full_tiles_t;

    int batch, seqlen_q, seqlen_k, heads_q, heads_kv;
    int kv_group;            // Hq / Hkv
    int is_causal;
    float softmax_scale;     // natural units: the scale of dQ and dK
    ScoreModParams score;
};

// Counters behind tile_stats: computed and skipped tiles, and (the forward's) visible pairs.
constexpr int kFwdStatCounters = 3;
constexpr int kBwdStatCounters = 2;

struct FwdParams {
    AttentionParams attn;
    void* o;                 // [B, Lq, Hq, D]
    Strides o_strides;
    float* lse;              // [B, Hq, Lq] or nullptr
    u64* tile_stats;         // [kFwdStatCounters]: computed, skipped, visible pairs; or nullptr, zeroed before the launch

    // Split-KV (FwdPlan::kv_splits): blockIdx.z = batch * kv_splits + split. Each split walks its
    // share of a query tile's key tiles and writes a normalised partial output and its LSE, which
    // fwd_combine_kernel merges into o and lse; with kv_splits = 1 the forward kernel writes o and
    // lse itself.
    float* o_partial;        // fp32 [kv_splits][B][Hq][Lq][D]
    float* lse_partial;      // [kv_splits][B][Hq][Lq], log2 units; -inf where a split saw no key
    int kv_splits;
    // Query heads per block (FwdPlan::packed_heads): blockIdx.y * packed_heads is a block's first head.
    int packed_heads;
};

struct BwdParams {
    AttentionParams attn;
    const void* o;           // [B, Lq, Hq, D]: the forward's output
    Strides o_strides;
    const float* lse;        // [B, Hq, Lq]: the forward's LSE, natural log
    const void* d_o;         // [B, Lq, Hq, D]
    void* d_q;               // [B, Lq, Hq, D]
    void* d_k;               // [B, Lk, Hkv, D]
    void* d_v;               // [B, Lk, Hkv, D]
    Strides d_o_strides, d_q_strides, d_k_strides, d_v_strides;

    // dBias in the bias's logical shape (batches, heads, rows as attn.bias; type: its DType); data
    // nullptr without it.
    BroadcastOperand d_bias;
    float* d_bias_accum;     // fp32 [batches][heads][rows][Lk] contiguous, zeroed; summed into by its owners

    float* delta;            // [B, Hq, Lq]: rowsum(dO * O)
    float* d_q_accum;        // fp32 [B, Lq, Hq, D], zeroed; atomics target when not deterministic, else nullptr
    float* d_k_accum;        // fp32 [B, Lk, Hkv, D], zeroed; the gathered dK/dV's atomics target, else nullptr
    float* d_v_accum;
    u64* tile_stats;         // [kBwdStatCounters]: computed, skipped; or nullptr

    // The dK/dV kernel's grid.y / grid.z enumerate dBias owners: one block owns the dBias entries
    // of its key tile for every (batch, kv head) it loops over, so no two blocks add to one entry.
    int owner_heads;         // Hkv, or 1 when the bias is broadcast over heads
    int owner_batches;       // B, or 1 when the bias is broadcast over batches
};

}  // namespace fdma

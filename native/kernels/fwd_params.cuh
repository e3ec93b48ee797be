// What the forward kernel reads: the C ABI's fdma_fwd_params, resolved by the host launcher into
// the form the inner loop wants (broadcasts as zero strides, scales folded into log2 space).
// Plain types only: NVRTC compiles this file without host headers.
#pragma once

namespace fdma {

enum DType { kFloat16 = 1, kBFloat16 = 2, kFloat32 = 3 };  // the values of fdma_dtype

struct BroadcastOperand {
    const void* data;    // nullptr = absent
    long long stride_batch;  // 0 where broadcast
    long long stride_head;   // per query head group; 0 where broadcast
    long long stride_row;    // 0 where broadcast over queries
    int head_group;          // query head h reads head h / head_group
    int batches;             // distinct batches (1 where broadcast)
    int heads;               // distinct heads (1 where broadcast)
    int rows;                // distinct query rows: 1 (broadcast) or Lq
    int type;                // DType of the bias; unused for the mask
};

struct Strides {
    long long batch, seq, head;  // elements
};

struct FwdParams {
    const void* q;           // [B, Lq, Hq, D]
    const void* k;           // [B, Lk, Hkv, D]
    const void* v;           // [B, Lk, Hkv, D]
    void* o;                 // [B, Lq, Hq, D]
    Strides q_strides, k_strides, v_strides, o_strides;

    BroadcastOperand mask;   // [B|1, Hq|Hkv|1, Lq|1, Lk] u8, nonzero = visible
    BroadcastOperand bias;   // [B|1, Hq|Hkv|1, Lq|1, Lk]

    // With a mask: bitmaps of one bit per (query tile, key tile), written by
    // tile_occupancy_kernel and read by the forward kernel (meaning and layout there).
    unsigned int* occupancy;
    unsigned int* full_tiles;
    // The same bitmaps by key tile, [mask batches][mask heads][key tiles][query-tile words], for
    // the backward's key-major walk; nullptr in the forward.
    unsigned int* occupancy_t;
    unsigned int* full_tiles_t;

    float* lse;              // [B, Hq, Lq] or nullptr
    unsigned long long* tile_stats;  // [2]: computed, skipped; or nullptr

    int seqlen_q, seqlen_k;
    int heads_q;
    int kv_group;            // Hq / Hkv

    // Without softcap: score_log2 = qk * qk_scale + bias * bias_scale.
    // With softcap c:   score_log2 = tanh(qk * qk_scale + bias * bias_scale) * softcap_out.
    float qk_scale;
    float bias_scale;
    float softcap_out;       // 0 = no softcap
    int is_causal;

    // Split-KV (fwd_kv_splits in fwd_config.cuh): blockIdx.z = batch * kv_splits + split. Each
    // split walks its share of a query tile's key tiles and writes a normalised partial output
    // and its LSE, which fwd_combine_kernel merges into o and lse; with kv_splits = 1 the forward
    // kernel writes o and lse itself.
    float* o_partial;        // fp32 [kv_splits][B][Hq][Lq][D]
    float* lse_partial;      // [kv_splits][B][Hq][Lq], log2 units; -inf where a split saw no key
    int kv_splits;
    int batch;               // B
};

}  // namespace fdma

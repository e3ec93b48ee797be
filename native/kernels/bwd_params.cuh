// What the backward kernels read: the forward problem plus the gradients, resolved by the host
// launcher (native/src/bwd_args.cpp). Plain types only: NVRTC compiles this file too.
#pragma once

#include "fwd_params.cuh"

namespace fdma {

struct BwdParams {
    FwdParams fwd;           // the forward problem; fwd.o [B, Lq, Hq, D] and fwd.lse are inputs here
    const void* d_o;         // [B, Lq, Hq, D]
    void* d_q;               // [B, Lq, Hq, D]
    void* d_k;               // [B, Lk, Hkv, D]
    void* d_v;               // [B, Lk, Hkv, D]
    Strides d_o_strides, d_q_strides, d_k_strides, d_v_strides;

    // dBias, in the bias's logical shape [batches][heads][rows][Lk] (fwd.bias describes it).
    void* d_bias;
    int d_bias_type;         // DType
    Strides d_bias_strides;  // batch, row (as seq), head; 0 where broadcast
    float* d_bias_accum;     // fp32 [batches][heads][rows][Lk] contiguous, zeroed; summed into by its owners

    float* delta;            // [B, Hq, Lq]: rowsum(dO * O)
    float* d_q_accum;        // fp32 [B, Lq, Hq, D], zeroed; atomics target when not deterministic, else nullptr

    float softmax_scale;
    int heads_kv;
    // The dK/dV kernel's grid.y / grid.z enumerate dBias owners: one block owns the dBias entries
    // of its key tile for every (batch, kv head) it loops over, so no two blocks add to one entry.
    int owner_heads;         // Hkv, or 1 when the bias is broadcast over heads
    int owner_batches;       // B, or 1 when the bias is broadcast over batches
};

}  // namespace fdma

#include "problem.h"

#include <cmath>
#include <cstdint>
#include <string>

#include "status.h"

namespace fdma {

fdma_status check_problem_shape(const fdma_problem& p, const char* prefix_literal) {
    const std::string prefix = prefix_literal;  // "params.problem.": short enough to need no heap
    if (p.dtype == FDMA_DTYPE_FLOAT32)
        return fail(FDMA_STATUS_UNSUPPORTED, prefix + "dtype FLOAT32 is not supported for q, k, v and out; "
                                             "expected FLOAT16 (1) or BFLOAT16 (2)");
    if (p.dtype != FDMA_DTYPE_FLOAT16 && p.dtype != FDMA_DTYPE_BFLOAT16)
        return fail(FDMA_STATUS_INVALID_ARGUMENT,
                    prefix + "dtype must be FLOAT16 (1) or BFLOAT16 (2); got " + str(p.dtype));

    const struct { const char* name; int value; } sizes[] = {
        {"batch", p.batch},       {"seqlen_q", p.seqlen_q}, {"seqlen_k", p.seqlen_k},
        {"heads_q", p.heads_q},   {"heads_kv", p.heads_kv}, {"head_dim", p.head_dim}};
    for (const auto& s : sizes)
        if (s.value < 1) return fail(FDMA_STATUS_INVALID_ARGUMENT, prefix + s.name + " must be >= 1; got " + str(s.value));
    if (!is_supported_head_dim(p.head_dim))
        return fail(FDMA_STATUS_UNSUPPORTED,
                    prefix + "head_dim must be one of 32, 64, 96, 128, 192, 256; got " + str(p.head_dim));
    if (p.heads_q % p.heads_kv != 0)
        return fail(FDMA_STATUS_INVALID_ARGUMENT, prefix + "heads_q (" + str(p.heads_q) + ") must be a multiple of " +
                                                      prefix + "heads_kv (" + str(p.heads_kv) + ")");
    // Grid y and z limits: heads and batches (and mask planes) enumerate blocks.
    if (p.batch > 65535 || p.heads_q > 65535)
        return fail(FDMA_STATUS_UNSUPPORTED, prefix + "batch and " + prefix + "heads_q must be <= 65535; got " +
                                                 str(p.batch) + " and " + str(p.heads_q));
    if (p.mask.data != nullptr && static_cast<long long>(p.mask.batch) * p.mask.heads > 65535)
        return fail(FDMA_STATUS_UNSUPPORTED, prefix + "mask.batch * " + prefix + "mask.heads must be <= 65535");
    return FDMA_STATUS_SUCCESS;
}

ProblemShape problem_shape(const fdma_problem& p) {
    const bool mask = p.mask.data != nullptr, bias = p.bias.data != nullptr;
    return ProblemShape{p.batch, p.seqlen_q, p.seqlen_k, p.heads_q, p.heads_kv, p.head_dim,
                        mask ? p.mask.batch : 0, mask ? p.mask.heads : 0,
                        bias ? p.bias.dtype : 0, bias ? p.bias.batch : 0, bias ? p.bias.heads : 0, bias ? p.bias.rows : 0,
                        p.lifetimes.data != nullptr ? p.lifetimes.heads : 0};
}

fdma_status check_problem(const fdma_problem& p, const char* prefix, AttentionParams& out, Extent* extents) {
    if (const fdma_status st = check_problem_shape(p, prefix)) return st;
    if (!(std::isfinite(p.softmax_scale) && p.softmax_scale > 0.f))
        return fail(FDMA_STATUS_INVALID_ARGUMENT,
                    std::string(prefix) + "softmax_scale must be finite and > 0; got " + std::to_string(p.softmax_scale));
    if (!(std::isfinite(p.softcap) && p.softcap >= 0.f))
        return fail(FDMA_STATUS_INVALID_ARGUMENT,
                    std::string(prefix) + "softcap must be 0 (off) or finite and > 0; got " + std::to_string(p.softcap));
    if (p.is_causal != 0 && p.is_causal != 1)
        return fail(FDMA_STATUS_INVALID_ARGUMENT, std::string(prefix) + "is_causal must be 0 or 1; got " + str(p.is_causal));

    fdma_status st;
    if ((st = check_tensor(p.q, {prefix, "q", {p.batch, p.seqlen_q, p.heads_q}, false}, p.head_dim, extents[0])) ||
        (st = check_tensor(p.k, {prefix, "k", {p.batch, p.seqlen_k, p.heads_kv}, false}, p.head_dim, extents[1])) ||
        (st = check_tensor(p.v, {prefix, "v", {p.batch, p.seqlen_k, p.heads_kv}, false}, p.head_dim, extents[2])) ||
        (st = check_broadcast(p.mask, prefix, "mask", p, false, false, out.mask, extents[3])) ||
        (st = check_lifetimes(p.lifetimes, prefix, p, out.lifetimes, extents[4])) ||
        (st = check_broadcast(p.bias, prefix, "bias", p, true, false, out.bias, extents[5])))
        return st;

    out.q = p.q.data;
    out.k = p.k.data;
    out.v = p.v.data;
    out.q_strides = strides_of(p.q);
    out.k_strides = strides_of(p.k);
    out.v_strides = strides_of(p.v);
    out.batch = p.batch;
    out.seqlen_q = p.seqlen_q;
    out.seqlen_k = p.seqlen_k;
    out.heads_q = p.heads_q;
    out.heads_kv = p.heads_kv;
    out.kv_group = p.heads_q / p.heads_kv;
    out.is_causal = p.is_causal;
    out.softmax_scale = p.softmax_scale;
    if (p.softcap > 0.f) {
        out.score = {p.softmax_scale / p.softcap, 1.f / p.softcap, p.softcap * kLog2e};
    } else {
        out.score = {p.softmax_scale * kLog2e, kLog2e, 0.f};
    }
    return FDMA_STATUS_SUCCESS;
}

}  // namespace fdma

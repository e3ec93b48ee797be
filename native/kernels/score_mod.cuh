// The score modification, forward and backward in one place: a visible pair's raw q.k product and bias become
// its log2-space score (scale, bias, softcap: ScoreModParams), and the backward also takes the slope
// d score / d x of the pre-softcap score x = scale * q.k + bias. One straight-line variant per feature set
// (kBias, kSoftcap): per-element branches on them would serialise the warp.
// Device-only, no host headers.
#pragma once

#include "params.cuh"

namespace fdma {

template <bool kBias, bool kSoftcap>
__device__ __forceinline__ float modified_score(const ScoreModParams& m, float qk, float bias, float& slope) {
    float x = qk * m.qk_scale;
    if (kBias) x += m.bias_scale * bias;
    slope = 1.f;
    if (!kSoftcap) return x;
    const float t = tanhf(x);
    slope = 1.f - t * t;
    return t * m.softcap_out;
}

}  // namespace fdma

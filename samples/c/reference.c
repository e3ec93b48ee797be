/* The sample's inputs and its CPU reference: plain C, no CUDA. */
#include <math.h>
#include <string.h>

#include "sample.h"

uint16_t sample_bf16_from_float(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    bits += 0x7FFFu + ((bits >> 16) & 1u); /* round to nearest even (the inputs here are finite) */
    return (uint16_t)(bits >> 16);
}

float sample_float_from_bf16(uint16_t bits) {
    const uint32_t wide = (uint32_t)bits << 16;
    float value;
    memcpy(&value, &wide, sizeof value);
    return value;
}

/* A small integer hash (lowbias32), so the inputs need no random generator and are the same everywhere. */
static uint32_t hash32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    return x ^ (x >> 16);
}

/* Multiples of 1/64 in [-0.75, 1.25]: exact in bf16, and not centred on zero. */
static uint16_t input_value(uint32_t tensor, size_t index) {
    const int step = (int)(hash32((uint32_t)index * 4u + tensor) % 129u) - 48;
    return sample_bf16_from_float((float)step / 64.0f);
}

/* Bottom-right causal alignment: the last key query i may see. */
static int last_key(int i) { return i + SAMPLE_SEQLEN_K - SAMPLE_SEQLEN_Q; }

void sample_fill_inputs(const sample_tensors* host) {
    for (size_t e = 0; e < SAMPLE_Q_ELEMENTS; ++e) host->q[e] = input_value(1, e);
    for (size_t e = 0; e < SAMPLE_KV_ELEMENTS; ++e) host->k[e] = input_value(2, e);
    for (size_t e = 0; e < SAMPLE_KV_ELEMENTS; ++e) host->v[e] = input_value(3, e);
    for (int i = 0; i < SAMPLE_SEQLEN_Q; ++i)
        for (int j = 0; j < SAMPLE_SEQLEN_K; ++j)
            host->mask[(size_t)i * SAMPLE_SEQLEN_K + j] = j <= last_key(i) && j > last_key(i) - SAMPLE_WINDOW;
    for (size_t e = 0; e < SAMPLE_BIAS_ELEMENTS; ++e)
        host->bias[e] = (float)((int)(hash32((uint32_t)e * 4u + 4u) % 65u) - 32) / 16.0f;
}

/* softmax(Q K^T / sqrt(D) + bias) V over the visible keys, in double; one (B, Lq, Hq, D) float output. */
void sample_reference_forward(const sample_tensors* host, float* out) {
    const int group = SAMPLE_HEADS_Q / SAMPLE_HEADS_KV;
    const double scale = 1.0 / sqrt((double)SAMPLE_HEAD_DIM);
    double scores[SAMPLE_SEQLEN_K];
    for (int b = 0; b < SAMPLE_BATCH; ++b)
        for (int h = 0; h < SAMPLE_HEADS_Q; ++h)
            for (int i = 0; i < SAMPLE_SEQLEN_Q; ++i) {
                const uint16_t* qi = host->q + (((size_t)b * SAMPLE_SEQLEN_Q + i) * SAMPLE_HEADS_Q + h) * SAMPLE_HEAD_DIM;
                const int g = h / group;
                double max = -INFINITY;
                for (int j = 0; j < SAMPLE_SEQLEN_K; ++j) {
                    scores[j] = -INFINITY;
                    if (!host->mask[(size_t)i * SAMPLE_SEQLEN_K + j] || j > last_key(i)) continue;
                    const uint16_t* kj =
                        host->k + (((size_t)b * SAMPLE_SEQLEN_K + j) * SAMPLE_HEADS_KV + g) * SAMPLE_HEAD_DIM;
                    double dot = 0;
                    for (int x = 0; x < SAMPLE_HEAD_DIM; ++x)
                        dot += (double)sample_float_from_bf16(qi[x]) * sample_float_from_bf16(kj[x]);
                    scores[j] = dot * scale + host->bias[((size_t)b * SAMPLE_HEADS_KV + g) * SAMPLE_SEQLEN_K + j];
                    if (scores[j] > max) max = scores[j];
                }

                double acc[SAMPLE_HEAD_DIM] = {0};
                double sum = 0;
                for (int j = 0; j < SAMPLE_SEQLEN_K; ++j) {
                    if (scores[j] == -INFINITY) continue;
                    const double p = exp(scores[j] - max);
                    const uint16_t* vj =
                        host->v + (((size_t)b * SAMPLE_SEQLEN_K + j) * SAMPLE_HEADS_KV + g) * SAMPLE_HEAD_DIM;
                    sum += p;
                    for (int x = 0; x < SAMPLE_HEAD_DIM; ++x) acc[x] += p * sample_float_from_bf16(vj[x]);
                }
                float* oi = out + (((size_t)b * SAMPLE_SEQLEN_Q + i) * SAMPLE_HEADS_Q + h) * SAMPLE_HEAD_DIM;
                for (int x = 0; x < SAMPLE_HEAD_DIM; ++x) oi[x] = sum > 0 ? (float)(acc[x] / sum) : 0.0f;
            }
}

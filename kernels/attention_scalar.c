/* The scalar twin of attention over the KV cache: the arithmetic kernels.h states, in
 * plain loops. Every SIMD attention kernel must give these floats bit for bit. */
#include <math.h>
#include <stdbool.h>

#include "kernels/attn_exp.h"
#include "kernels/attn_q8.h"
#include "kernels/f16.h"
#include "kernels/attention.h"

static inline float cache_elem(const void *base, size_t i, bool f16)
{
    return f16 ? f16_to_f32(((const uint16_t *)base)[i]) : ((const float *)base)[i];
}

static inline float key_elem(const struct attn_group *a, int p, int i, bool f16)
{
    size_t at = (size_t)(p / ATTN_TILE) * a->d * ATTN_TILE + (size_t)i * ATTN_TILE + p % ATTN_TILE;
    return cache_elem(a->k, at, f16);
}

/* The lane sums of a softmax folded to lane[0] as kernels.h states: halves, then quarters,
 * down to one. */
static void fold_lanes(float lane[ATTN_TILE])
{
    for (int width = ATTN_TILE / 2; width >= 1; width /= 2)
        for (int j = 0; j < width; j++)
            lane[j] += lane[j + width];
}

/* A head's scores in w[0..n) become its softmax weights (e^(s - max), then e / sum);
 * max and sum go to max_sum when it is set. */
static void softmax(float *w, int n, float *max_sum)
{
    float max = -INFINITY;
    for (int p = 0; p < n; p++)
        max = fmaxf(max, w[p]);
    float lane[ATTN_TILE] = {0};
    for (int p = 0; p < n; p++) {
        w[p] = attn_exp(w[p] - max);
        lane[p % ATTN_TILE] += w[p];
    }
    fold_lanes(lane);
    if (max_sum) {
        max_sum[0] = max;
        max_sum[1] = lane[0];
    }
    float inv = 1.0f / lane[0];
    for (int p = 0; p < n; p++)
        w[p] = w[p] * inv;
}

static inline void attn_scalar(const struct attn_group *a, bool f16)
{
    int d = a->d, stride = attn_tiles_len(a->n);
    for (int h = 0; h < a->g; h++) {
        float *w = a->scratch + (size_t)h * stride, *out = a->out + (size_t)h * d;
        const float *q = a->q + (size_t)h * d;
        for (int p = 0; p < a->n; p++) {
            float dot = 0.0f;
            for (int i = 0; i < d; i++)
                dot += q[i] * key_elem(a, p, i, f16);
            w[p] = dot * a->scale;
        }
        softmax(w, a->n, a->max_sum ? a->max_sum + 2 * h : NULL);
        for (int i = 0; i < d; i++)
            out[i] = 0.0f;
        for (int p = 0; p < a->n; p++)
            for (int i = 0; i < d; i++)
                out[i] += w[p] * cache_elem(a->v, (size_t)p * d + i, f16);
    }
}

void attn_f32_scalar(const struct attn_group *a) { attn_scalar(a, false); }
void attn_f16_scalar(const struct attn_group *a) { attn_scalar(a, true); }

/* The int8 cache (kernels.h, struct attn_group_q8). */
void attn_q8_scalar(const struct attn_group_q8 *a)
{
    int d = a->d, n = a->n, stride = attn_tiles_len(n);
    for (int h = 0; h < a->g; h++) {
        float *w = a->scratch + (size_t)h * stride, *out = a->out + (size_t)h * d;
        int8_t *q = a->q8 + (size_t)h * d;
        float c = attn_q8_quantize(a->q + (size_t)h * d, d, q) * a->scale;
        float max = -INFINITY;
        for (int p = 0; p < n; p++) {
            int32_t dot = 0;
            for (int i = 0; i < d; i++)
                dot += q[i] * a->k[attn_q8_key_at(p, i, d)];
            w[p] = (float)dot * (c * a->k_scale[p]);
            /* what _mm512_max_ps(s, max) gives: a NaN score never becomes the maximum */
            max = w[p] > max ? w[p] : max;
        }
        float lane[ATTN_TILE] = {0};
        for (int p = 0; p < n; p++) {
            float e = attn_q8_exp(w[p] - max);
            lane[p % ATTN_TILE] += e;
            w[p] = e * a->v_scale[p];
        }
        fold_lanes(lane);
        for (int i = 0; i < d; i++)
            out[i] = 0.0f;
        for (int b0 = 0; b0 < n; b0 += ATTN_Q8_VBLOCK) {
            int b1 = b0 + ATTN_Q8_VBLOCK < n ? b0 + ATTN_Q8_VBLOCK : n;
            float top = 0.0f;
            for (int p = b0; p < b1; p++)
                top = w[p] > top ? w[p] : top;
            float up = ATTN_Q8_WMAX / top, down = top / ATTN_Q8_WMAX;
            int16_t wq[ATTN_Q8_VBLOCK];
            for (int p = b0; p < b1; p++)
                wq[p - b0] = attn_q8_weight(w[p] * up);
            for (int i = 0; i < d; i++) {
                int32_t acc = 0;
                for (int p = b0; p < b1; p++)
                    acc += wq[p - b0] * a->v[attn_q8_value_at(p, i, d)];
                out[i] = fmaf((float)acc, down, out[i]);
            }
        }
        if (a->max_sum) {
            a->max_sum[2 * h] = max;
            a->max_sum[2 * h + 1] = lane[0];
        }
        float inv = 1.0f / lane[0];
        for (int i = 0; i < d; i++)
            out[i] = out[i] * inv;
    }
}

/* Attention over the int8 KV cache with AVX2: the scalar twin's arithmetic (kernels.h,
 * struct attn_group_q8), in the passes of the AVX-512 kernel (attention_q8_avx512.c),
 * which says why. A key tile row is two 32-byte vectors of 8 positions x 4 elements; the
 * values' int16 weights go through pmaddwd, two positions a step.
 *
 * pmaddubsw multiplies unsigned by signed bytes and saturates its pair sums to int16:
 * with an offset key (up to 255) times a query (up to 127) a pair reaches 64770 and
 * clips. So the sign moves instead: |q| * (k * sign(q)) = q * k, with both factors at
 * most 127 in magnitude (no byte is -128, so negating never wraps) and a pair sum of at
 * most 32258; pmaddwd by ones then adds the pairs into int32 lanes, exactly. */
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "kernels/attention.h"
#include "kernels/attn_q8.h"
#include "kernels/lanes_x86.h"

#define HEADS_AT_ONCE 8  /* heads of one pass over the values */
#define SCORE_HEADS 4    /* heads of one pass over the keys: two accumulators each */
#define V_HEADS 4
#define V_CHUNKS 2       /* 8-element chunks per head in registers: 8 accumulators */
#define PF_K_BYTES 4096  /* prefetch distances (attention_q8_avx512.c says why) */
#define PF_V_ROWS 64

/* attn_q8_exp of 8 lanes, its operations in its order; lanes outside keep come out 0. */
static inline __m256 exp8(__m256 x, __m256 keep)
{
    keep = _mm256_and_ps(keep, _mm256_cmp_ps(x, _mm256_set1_ps(ATTN_Q8_EXP_MIN), _CMP_GE_OQ));
    __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(ATTN_Q8_LOG2E), _mm256_set1_ps(ATTN_Q8_ROUNDER));
    __m256 k = _mm256_sub_ps(t, _mm256_set1_ps(ATTN_Q8_ROUNDER));
    __m256 r = _mm256_fmadd_ps(k, _mm256_set1_ps(-ATTN_Q8_LN2_HI), x);
    r = _mm256_fmadd_ps(k, _mm256_set1_ps(-ATTN_Q8_LN2_LO), r);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(ATTN_Q8_EXP_C6), r, _mm256_set1_ps(ATTN_Q8_EXP_C5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(ATTN_Q8_EXP_C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(ATTN_Q8_EXP_C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(ATTN_Q8_EXP_C2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i two_k = _mm256_add_epi32(_mm256_slli_epi32(_mm256_castps_si256(t), 23),
                                     _mm256_set1_epi32(127 << 23));
    return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(two_k)), keep);
}

static inline __m256i dot4(__m256i acc, __m256i k, __m256i q4, __m256i q4_abs, __m256i ones)
{
    __m256i pairs = _mm256_maddubs_epi16(q4_abs, _mm256_sign_epi8(k, q4));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
}

/* Scores of heads [h0, h0 + HN) into their scratch rows, and their lane maxima. */
static inline __attribute__((always_inline)) void score(const struct attn_group_q8 *a, int h0,
                                                        const int HN, const float *c,
                                                        __m256 *vmax)
{
    int d = a->d, n = a->n, stride = attn_tiles_len(n);
    const int8_t *q = a->q8 + (size_t)h0 * d;
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256 neg_inf = _mm256_set1_ps(-INFINITY);
    for (int b = 0; b < stride / ATTN_TILE; b++) {
        const int8_t *tile = a->k + (size_t)b * d * ATTN_TILE;
        __m256i lo[SCORE_HEADS], hi[SCORE_HEADS];
#pragma GCC unroll 4
        for (int h = 0; h < HN; h++)
            lo[h] = hi[h] = _mm256_setzero_si256();
        for (int i = 0; i < d; i += 4) {
            _mm_prefetch((const char *)(tile + (size_t)i * ATTN_TILE) + PF_K_BYTES, _MM_HINT_T0);
            __m256i klo = _mm256_loadu_si256((const __m256i *)(tile + (size_t)i * ATTN_TILE));
            __m256i khi = _mm256_loadu_si256((const __m256i *)(tile + (size_t)i * ATTN_TILE + 32));
#pragma GCC unroll 4
            for (int h = 0; h < HN; h++) {
                int32_t q4;
                memcpy(&q4, q + (size_t)h * d + i, sizeof q4);
                __m256i qv = _mm256_set1_epi32(q4), qa = _mm256_abs_epi8(qv);
                lo[h] = dot4(lo[h], klo, qv, qa, ones);
                hi[h] = dot4(hi[h], khi, qv, qa, ones);
            }
        }
        /* keys past n may hold anything: written, for the softmax pass to mask, but -inf
         * to the maximum; max(s, max) leaves the maximum as it was for a NaN, as in the twin */
        __m256 valid_lo = _mm256_castsi256_ps(lanes_below(n - b * ATTN_TILE));
        __m256 valid_hi = _mm256_castsi256_ps(lanes_below(n - b * ATTN_TILE - 8));
        __m256 kslo = _mm256_loadu_ps(a->k_scale + (size_t)b * ATTN_TILE);
        __m256 kshi = _mm256_loadu_ps(a->k_scale + (size_t)b * ATTN_TILE + 8);
#pragma GCC unroll 4
        for (int h = 0; h < HN; h++) {
            __m256 ch = _mm256_set1_ps(c[h]);
            float *w = a->scratch + (size_t)(h0 + h) * stride + b * ATTN_TILE;
            __m256 slo = _mm256_mul_ps(_mm256_cvtepi32_ps(lo[h]), _mm256_mul_ps(ch, kslo));
            __m256 shi = _mm256_mul_ps(_mm256_cvtepi32_ps(hi[h]), _mm256_mul_ps(ch, kshi));
            _mm256_storeu_ps(w, slo);
            _mm256_storeu_ps(w + 8, shi);
            vmax[h] = _mm256_max_ps(_mm256_blendv_ps(neg_inf, slo, valid_lo), vmax[h]);
            vmax[h] = _mm256_max_ps(_mm256_blendv_ps(neg_inf, shi, valid_hi), vmax[h]);
        }
    }
}

/* A block's int16 weights from u[0..len) (0 from len up to whole tiles): wq as the
 * contract's w_p, and the scale that takes its sums back, top / 32767. */
static inline float weigh_block_of(const float *u, int len, int16_t *wq)
{
    int tiles = (len + 15) / 16;
    __m256 top = _mm256_setzero_ps();
    for (int k = 0; k < 2 * tiles; k++)
        top = _mm256_max_ps(_mm256_loadu_ps(u + 8 * k), top); /* a NaN u loses */
    float t = hmax8(top);
    __m256 up = _mm256_set1_ps(ATTN_Q8_WMAX / t), wmax = _mm256_set1_ps(ATTN_Q8_WMAX);
    for (int k = 0; k < tiles; k++) {
        __m256i w[2];
        for (int half = 0; half < 2; half++) {
            __m256 x = _mm256_mul_ps(_mm256_loadu_ps(u + 16 * k + 8 * half), up);
            __m256 ord = _mm256_cmp_ps(x, x, _CMP_ORD_Q);
            w[half] = _mm256_cvtps_epi32(_mm256_and_ps(_mm256_min_ps(x, wmax), ord));
        }
        /* packs works within 128-bit halves: the permute puts the 16 words in order */
        __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi32(w[0], w[1]), 0xD8);
        _mm256_storeu_si256((__m256i *)(wq + 16 * k), packed);
    }
    return t / ATTN_Q8_WMAX;
}

/* out_h += (float)acc_h * down[h] for the pairs of positions of block [b0, b1), heads
 * [h0, h0 + HN), 8-element chunks [j0, j0 + NJ): 16 bytes of a pair row are one chunk of
 * both positions, widened to int16, and pmaddwd adds both positions' products into each
 * element's int32 lane. FULL: every chunk has 8 elements (else the last has 4: d is a
 * multiple of 4). An odd last position pairs with what follows it, weighed 0. */
static inline __attribute__((always_inline)) void weigh_values(const struct attn_group_q8 *a,
                                                               int h0, const int HN, int b0,
                                                               int b1, int j0, const int NJ,
                                                               const bool FULL,
                                                               const int16_t (*wq)[ATTN_Q8_VBLOCK],
                                                               const float *down)
{
    int d = a->d, n = a->n;
    int count[V_CHUNKS];
    __m256i keep[V_CHUNKS], acc[V_HEADS][V_CHUNKS];
#pragma GCC unroll 2
    for (int j = 0; j < NJ; j++) {
        count[j] = FULL ? 8 : d - 8 * (j0 + j) < 8 ? d - 8 * (j0 + j) : 8;
        keep[j] = lanes_below(count[j]);
    }
#pragma GCC unroll 4
    for (int h = 0; h < HN; h++)
#pragma GCC unroll 2
        for (int j = 0; j < NJ; j++)
            acc[h][j] = _mm256_setzero_si256();
    /* a 64-byte line holds the chunks of two calls (j0 a multiple of 4 starts one) */
    int pf_end = (j0 % 4 == 0) ? (n - PF_V_ROWS < b1 ? n - PF_V_ROWS : b1) : b0;
#pragma GCC unroll 2
    for (int p = b0; p < b1; p += 2) {
        const int8_t *row = a->v + (size_t)p * d + 16 * (size_t)j0;
        if (p < pf_end)
            _mm_prefetch((const char *)(row + (size_t)PF_V_ROWS * d), _MM_HINT_T0);
        __m256i x[V_CHUNKS];
#pragma GCC unroll 2
        for (int j = 0; j < NJ; j++) {
            __m128i b = FULL || count[j] == 8 ? _mm_loadu_si128((const __m128i *)(row + 16 * j))
                                              : _mm_loadl_epi64((const __m128i *)(row + 16 * j));
            x[j] = _mm256_cvtepi8_epi16(b);
        }
#pragma GCC unroll 4
        for (int h = 0; h < HN; h++) {
            int32_t pair;
            memcpy(&pair, wq[h] + (p - b0), sizeof pair);
            __m256i wv = _mm256_set1_epi32(pair);
#pragma GCC unroll 2
            for (int j = 0; j < NJ; j++)
                acc[h][j] = _mm256_add_epi32(acc[h][j], _mm256_madd_epi16(x[j], wv));
        }
    }
#pragma GCC unroll 4
    for (int h = 0; h < HN; h++) {
        float *out = a->out + (size_t)(h0 + h) * d + 8 * (size_t)j0;
        __m256 k = _mm256_set1_ps(down[h]);
#pragma GCC unroll 2
        for (int j = 0; j < NJ; j++) {
            __m256 o = _mm256_maskload_ps(out + 8 * j, keep[j]);
            o = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[h][j]), k, o);
            _mm256_maskstore_ps(out + 8 * j, keep[j], o);
        }
    }
}

static inline __attribute__((always_inline)) void weigh_chunks(const struct attn_group_q8 *a,
                                                               int h0, const int HN, int b0,
                                                               int b1, int j0, int nj,
                                                               const int16_t (*wq)[ATTN_Q8_VBLOCK],
                                                               const float *down)
{
    if (nj == 1)
        weigh_values(a, h0, HN, b0, b1, j0, 1, false, wq, down);
    else if (8 * (j0 + 2) <= a->d)
        weigh_values(a, h0, HN, b0, b1, j0, 2, true, wq, down);
    else
        weigh_values(a, h0, HN, b0, b1, j0, 2, false, wq, down);
}

/* Every pass for heads [h0, h0 + hn). */
static void attend(const struct attn_group_q8 *a, int h0, int hn)
{
    int d = a->d, n = a->n, stride = attn_tiles_len(n), tiles = stride / ATTN_TILE;
    float c[HEADS_AT_ONCE];
    __m256 vmax[HEADS_AT_ONCE];
    for (int h = 0; h < hn; h++) {
        /* no sum: dot4's sign trick needs no offset to correct */
        c[h] = attn_q8_quantize_avx2(a->q + (size_t)(h0 + h) * d, d, a->q8 + (size_t)(h0 + h) * d,
                                     NULL) * a->scale;
        vmax[h] = _mm256_set1_ps(-INFINITY);
    }
    for (int s0 = 0; s0 < hn; s0 += SCORE_HEADS) {
        switch (hn - s0) {
        case 1: score(a, h0 + s0, 1, c + s0, vmax + s0); break;
        case 2: score(a, h0 + s0, 2, c + s0, vmax + s0); break;
        case 3: score(a, h0 + s0, 3, c + s0, vmax + s0); break;
        default: score(a, h0 + s0, 4, c + s0, vmax + s0); break;
        }
    }

    /* u_p = e_p * v_scale[p] in place of the scores, 0 past n; the first values are
     * fetched meanwhile */
    const char *v_head = (const char *)a->v;
    size_t v_head_bytes = (size_t)(n < PF_V_ROWS ? n : PF_V_ROWS) * d, fetched = 0;
    float inv[HEADS_AT_ONCE];
    for (int h = 0; h < hn; h++) {
        float *w = a->scratch + (size_t)(h0 + h) * stride;
        __m256 max = _mm256_set1_ps(hmax8(vmax[h]));
        __m256 lanes[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int b = 0; b < tiles; b++) {
            if (fetched < v_head_bytes) {
                _mm_prefetch(v_head + fetched, _MM_HINT_T0);
                fetched += 64;
            }
            for (int half = 0; half < 2; half++) {
                float *at = w + b * ATTN_TILE + 8 * half;
                __m256i valid = lanes_below(n - b * ATTN_TILE - 8 * half);
                __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(at), max), _mm256_castsi256_ps(valid));
                lanes[half] = _mm256_add_ps(lanes[half], e);
                __m256 vs = _mm256_maskload_ps(a->v_scale + b * ATTN_TILE + 8 * half, valid);
                _mm256_storeu_ps(at, _mm256_mul_ps(e, vs));
            }
        }
        float sum = fold16_256(lanes[0], lanes[1]);
        if (a->max_sum) {
            a->max_sum[2 * (h0 + h)] = _mm256_cvtss_f32(max);
            a->max_sum[2 * (h0 + h) + 1] = sum;
        }
        inv[h] = 1.0f / sum;
    }
    for (; fetched < v_head_bytes; fetched += 64)
        _mm_prefetch(v_head + fetched, _MM_HINT_T0);

    memset(a->out + (size_t)h0 * d, 0, sizeof(float) * hn * d);
    int nv = (d + 7) / 8;
    for (int b0 = 0; b0 < n; b0 += ATTN_Q8_VBLOCK) {
        int b1 = b0 + ATTN_Q8_VBLOCK < n ? b0 + ATTN_Q8_VBLOCK : n;
        int16_t wq[HEADS_AT_ONCE][ATTN_Q8_VBLOCK];
        float down[HEADS_AT_ONCE];
        for (int h = 0; h < hn; h++)
            down[h] = weigh_block_of(a->scratch + (size_t)(h0 + h) * stride + b0, b1 - b0, wq[h]);
        for (int g = 0; g < hn; g += V_HEADS)
            for (int j0 = 0; j0 < nv; j0 += V_CHUNKS) {
                int nj = nv - j0 < V_CHUNKS ? nv - j0 : V_CHUNKS;
                switch (hn - g) {
                case 1: weigh_chunks(a, h0 + g, 1, b0, b1, j0, nj, wq + g, down + g); break;
                case 2: weigh_chunks(a, h0 + g, 2, b0, b1, j0, nj, wq + g, down + g); break;
                case 3: weigh_chunks(a, h0 + g, 3, b0, b1, j0, nj, wq + g, down + g); break;
                default: weigh_chunks(a, h0 + g, 4, b0, b1, j0, nj, wq + g, down + g); break;
                }
            }
    }
    for (int h = 0; h < hn; h++) {
        float *out = a->out + (size_t)(h0 + h) * d;
        for (int i = 0; i < d; i++)
            out[i] = out[i] * inv[h];
    }
}

void attn_q8_avx2(const struct attn_group_q8 *a)
{
    for (int h0 = 0; h0 < a->g; h0 += HEADS_AT_ONCE)
        attend(a, h0, a->g - h0 < HEADS_AT_ONCE ? a->g - h0 : HEADS_AT_ONCE);
}

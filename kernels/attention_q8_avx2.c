/* Attention over the int8 KV cache with AVX2: the scalar twin's arithmetic (kernels.h,
 * struct attn_group_q8), shaped like the AVX-512 kernel (attention_q8_avx512.c), which
 * says why. A key tile row is two 32-byte vectors of 8 positions x 4 elements.
 *
 * pmaddubsw multiplies unsigned by signed bytes and saturates its pair sums to int16:
 * with an offset key (up to 255) times a query (up to 127) a pair reaches 64770 and
 * clips. So the sign moves instead: |q| * (k * sign(q)) = q * k, with both factors at
 * most 127 in magnitude (no byte is -128, so negating never wraps) and a pair sum of at
 * most 32258; pmaddwd by ones then adds the pairs into int32 lanes, exactly. */
#include <immintrin.h>
#include <string.h>

#include "kernels/attention.h"
#include "kernels/attn_q8.h"

#define HEADS_AT_ONCE 4  /* two accumulators each */
#define V_BLOCK 64
#define V_HEADS 4
#define V_CHUNKS 2       /* 8-element chunks per head in registers: 8 accumulators */
#define PREFETCH_TILES 4  /* key tiles read ahead (attention_q8_avx512.c says why) */

static inline __m256i lanes_below(int count)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline __m256i dot4(__m256i acc, __m256i k, __m256i q4, __m256i q4_abs, __m256i ones)
{
    __m256i pairs = _mm256_maddubs_epi16(q4_abs, _mm256_sign_epi8(k, q4));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
}

static inline __attribute__((always_inline)) void score(const struct attn_group_q8 *a, int h0,
                                                        const int HN, const float *qs)
{
    int d = a->d, stride = attn_tiles_len(a->n);
    const int8_t *q = a->q8 + (size_t)h0 * d;
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256 vscale = _mm256_set1_ps(a->scale);
    for (int b = 0; b < stride / ATTN_TILE; b++) {
        const int8_t *tile = a->k + (size_t)b * d * ATTN_TILE;
        __m256i lo[HEADS_AT_ONCE], hi[HEADS_AT_ONCE];
#pragma GCC unroll 4
        for (int h = 0; h < HN; h++)
            lo[h] = hi[h] = _mm256_setzero_si256();
        for (int i = 0; i < d; i += 4) {
            _mm_prefetch((const char *)(tile + (size_t)(PREFETCH_TILES * d + i) * ATTN_TILE), _MM_HINT_T0);
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
        __m256 kslo = _mm256_loadu_ps(a->k_scale + (size_t)b * ATTN_TILE);
        __m256 kshi = _mm256_loadu_ps(a->k_scale + (size_t)b * ATTN_TILE + 8);
#pragma GCC unroll 4
        for (int h = 0; h < HN; h++) {
            __m256 qsv = _mm256_set1_ps(qs[h]);
            float *w = a->scratch + (size_t)(h0 + h) * stride + b * ATTN_TILE;
            __m256 slo = _mm256_mul_ps(_mm256_cvtepi32_ps(lo[h]), _mm256_mul_ps(qsv, kslo));
            __m256 shi = _mm256_mul_ps(_mm256_cvtepi32_ps(hi[h]), _mm256_mul_ps(qsv, kshi));
            _mm256_storeu_ps(w, _mm256_mul_ps(slo, vscale));
            _mm256_storeu_ps(w + 8, _mm256_mul_ps(shi, vscale));
        }
    }
}

/* Elements [at, at + count) of values as float, zero beyond count (count is 8 or 4:
 * d is a multiple of 4). */
static inline __m256 values8(const int8_t *at, int count)
{
    __m128i b;
    if (count >= 8) {
        b = _mm_loadl_epi64((const __m128i *)at);
    } else {
        int32_t four;
        memcpy(&four, at, sizeof four);
        b = _mm_cvtsi32_si128(four);
    }
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
}

static inline __attribute__((always_inline)) void weigh_values(const struct attn_group_q8 *a,
                                                               int h0, const int HN, int p0,
                                                               int p1, int j0, const int NJ)
{
    int d = a->d, stride = attn_tiles_len(a->n);
    int count[V_CHUNKS];
    __m256i keep[V_CHUNKS];
    __m256 acc[V_HEADS][V_CHUNKS];
    const float *w[V_HEADS];
#pragma GCC unroll 2
    for (int j = 0; j < NJ; j++) {
        count[j] = d - 8 * (j0 + j) < 8 ? d - 8 * (j0 + j) : 8;
        keep[j] = lanes_below(count[j]);
    }
#pragma GCC unroll 4
    for (int h = 0; h < HN; h++) {
        w[h] = a->scratch + (size_t)(h0 + h) * stride;
#pragma GCC unroll 2
        for (int j = 0; j < NJ; j++)
            acc[h][j] = _mm256_maskload_ps(a->out + (size_t)(h0 + h) * d + 8 * (j0 + j), keep[j]);
    }
    for (int p = p0; p < p1; p++) {
        const int8_t *row = a->v + (size_t)p * d + 8 * (size_t)j0;
        __m256 x[V_CHUNKS];
#pragma GCC unroll 2
        for (int j = 0; j < NJ; j++)
            x[j] = values8(row + 8 * j, count[j]);
#pragma GCC unroll 4
        for (int h = 0; h < HN; h++) {
            __m256 wp = _mm256_broadcast_ss(w[h] + p);
#pragma GCC unroll 2
            for (int j = 0; j < NJ; j++)
                acc[h][j] = _mm256_add_ps(acc[h][j], _mm256_mul_ps(wp, x[j]));
        }
    }
#pragma GCC unroll 4
    for (int h = 0; h < HN; h++)
#pragma GCC unroll 2
        for (int j = 0; j < NJ; j++)
            _mm256_maskstore_ps(a->out + (size_t)(h0 + h) * d + 8 * (j0 + j), keep[j], acc[h][j]);
}

static inline __attribute__((always_inline)) void weigh_chunks(const struct attn_group_q8 *a,
                                                               int h0, const int HN, int p0,
                                                               int p1, int j0, int nj)
{
    if (nj == 1)
        weigh_values(a, h0, HN, p0, p1, j0, 1);
    else
        weigh_values(a, h0, HN, p0, p1, j0, 2);
}

void attn_q8_avx2(const struct attn_group_q8 *a)
{
    int d = a->d, n = a->n, g = a->g, stride = attn_tiles_len(n);
    float qs[HEADS_AT_ONCE];
    for (int h0 = 0; h0 < g; h0 += HEADS_AT_ONCE) {
        int hn = g - h0 < HEADS_AT_ONCE ? g - h0 : HEADS_AT_ONCE;
        for (int h = 0; h < hn; h++)
            qs[h] = attn_q8_quantize(a->q + (size_t)(h0 + h) * d, d, a->q8 + (size_t)(h0 + h) * d);
        switch (hn) {
        case 1: score(a, h0, 1, qs); break;
        case 2: score(a, h0, 2, qs); break;
        case 3: score(a, h0, 3, qs); break;
        default: score(a, h0, 4, qs); break;
        }
    }
    /* w_p * v_scale[p], as the twin forms it, for p < n only: the scales past n may be
     * anything, and the weights there are never read */
    for (int h = 0; h < g; h++) {
        float *w = a->scratch + (size_t)h * stride;
        attn_softmax_avx2(w, n);
        int p = 0;
        for (; p + 8 <= n; p += 8)
            _mm256_storeu_ps(w + p, _mm256_mul_ps(_mm256_loadu_ps(w + p), _mm256_loadu_ps(a->v_scale + p)));
        for (; p < n; p++)
            w[p] = w[p] * a->v_scale[p];
    }
    for (int i = 0; i < g * d; i++)
        a->out[i] = 0.0f;
    int nv = (d + 7) / 8;
    for (int p0 = 0; p0 < n; p0 += V_BLOCK) {
        int p1 = p0 + V_BLOCK < n ? p0 + V_BLOCK : n;
        const char *next = (const char *)(a->v + (size_t)p1 * d);
        size_t ahead = (size_t)(n - p1 < V_BLOCK ? n - p1 : V_BLOCK) * d;
        for (size_t at = 0; at < ahead; at += 64)
            _mm_prefetch(next + at, _MM_HINT_T0);
        for (int h0 = 0; h0 < g; h0 += V_HEADS)
            for (int j0 = 0; j0 < nv; j0 += V_CHUNKS) {
                int nj = nv - j0 < V_CHUNKS ? nv - j0 : V_CHUNKS;
                switch (g - h0 < V_HEADS ? g - h0 : V_HEADS) {
                case 1: weigh_chunks(a, h0, 1, p0, p1, j0, nj); break;
                case 2: weigh_chunks(a, h0, 2, p0, p1, j0, nj); break;
                case 3: weigh_chunks(a, h0, 3, p0, p1, j0, nj); break;
                default: weigh_chunks(a, h0, 4, p0, p1, j0, nj); break;
                }
            }
    }
}

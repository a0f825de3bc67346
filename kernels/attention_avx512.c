/* Attention with AVX-512: the scalar twin's arithmetic (kernels.h, struct attn_group)
 * done 16 positions or 16 head elements at a time. Every head of a GQA group is scored
 * from one pass over the key tiles and reads each block of values while it is in L1, so
 * the cache is streamed from memory once per KV head, not once per query head. */
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>

#include "kernels/attention.h"
#include "kernels/attn_exp.h"
#include "kernels/lanes_x86.h"

#define HEADS_AT_ONCE 8  /* heads scored together: one accumulator each */
#define V_BLOCK 32       /* positions of values read by every head while in L1 */
#define V_CHUNKS 8       /* 16-float chunks of a head accumulated in registers at once */
/* Decode reads the cache from memory, and the hardware prefetcher alone left these
 * kernels waiting on it (Zen 5: 13 GB/s where a plain read of one core gives 34): keys
 * are fetched this many bytes ahead of the row being scored, and a block of values
 * while the block before it is weighed. */
#define PF_K_BYTES 4096

static inline __m512 load16(const void *base, size_t at, __mmask16 m, bool f16)
{
    return f16 ? _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)base + at))
               : _mm512_maskz_loadu_ps(m, (const float *)base + at);
}

static inline __m512 load_whole16(const void *base, size_t at, bool f16)
{
    return f16 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)base + at)))
               : _mm512_loadu_ps((const float *)base + at);
}

/* attn_exp of 8 floats: the same double-precision operations in the same order. */
static inline __m256 exp8(__m256 xf)
{
    static const double c[ATTN_EXP_NCOEFF] = ATTN_EXP_COEFFS;
    __m512d x = _mm512_max_pd(_mm512_cvtps_pd(xf), _mm512_set1_pd(ATTN_EXP_MIN));
    __m512d k = _mm512_roundscale_pd(_mm512_mul_pd(x, _mm512_set1_pd(ATTN_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512d r = _mm512_sub_pd(x, _mm512_mul_pd(k, _mm512_set1_pd(ATTN_LN2_HI)));
    r = _mm512_sub_pd(r, _mm512_mul_pd(k, _mm512_set1_pd(ATTN_LN2_LO)));
    __m512d p = _mm512_set1_pd(c[0]);
    for (int i = 1; i < ATTN_EXP_NCOEFF; i++)
        p = _mm512_add_pd(_mm512_mul_pd(p, r), _mm512_set1_pd(c[i]));
    p = _mm512_add_pd(_mm512_mul_pd(p, r), _mm512_set1_pd(1.0));
    p = _mm512_add_pd(_mm512_mul_pd(p, r), _mm512_set1_pd(1.0));
    return _mm512_cvtpd_ps(_mm512_scalef_pd(p, k));
}

static inline __m512 exp16(__m512 x)
{
    __m256 lo = exp8(_mm512_castps512_ps256(x));
    __m256 hi = exp8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
    return _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
}

/* Scores of heads [h0, h0 + HN) for every tile, times scale, into their scratch rows. */
static inline __attribute__((always_inline)) void score(const struct attn_group *a, int h0,
                                                        const int HN, bool f16)
{
    int d = a->d, stride = attn_tiles_len(a->n);
    const float *q = a->q + (size_t)h0 * d;
    __m512 vscale = _mm512_set1_ps(a->scale);
    for (int b = 0; b < stride / ATTN_TILE; b++) {
        size_t base = (size_t)b * d * ATTN_TILE;
        __m512 acc[HEADS_AT_ONCE];
#pragma GCC unroll 8
        for (int h = 0; h < HN; h++)
            acc[h] = _mm512_setzero_ps();
        for (int i = 0; i < d; i++) {
            _mm_prefetch((const char *)a->k + (base + (size_t)i * ATTN_TILE) * (f16 ? 2 : 4) +
                             PF_K_BYTES, _MM_HINT_T0);
            __m512 k = load_whole16(a->k, base + (size_t)i * ATTN_TILE, f16);
#pragma GCC unroll 8
            for (int h = 0; h < HN; h++)
                acc[h] = _mm512_add_ps(acc[h], _mm512_mul_ps(_mm512_set1_ps(q[(size_t)h * d + i]), k));
        }
#pragma GCC unroll 8
        for (int h = 0; h < HN; h++)
            _mm512_storeu_ps(a->scratch + (size_t)(h0 + h) * stride + b * ATTN_TILE,
                             _mm512_mul_ps(acc[h], vscale));
    }
}

void attn_softmax_avx512(float *w, int n, float *max_sum)
{
    int n_tiles = (n + ATTN_TILE - 1) / ATTN_TILE;
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int b = 0; b < n_tiles; b++)
        vmax = _mm512_mask_max_ps(vmax, first_lanes(n - b * ATTN_TILE), vmax,
                                  _mm512_loadu_ps(w + b * ATTN_TILE));
    __m512 max = _mm512_set1_ps(_mm512_reduce_max_ps(vmax)), lanes = _mm512_setzero_ps();
    for (int b = 0; b < n_tiles; b++) {
        __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(w + b * ATTN_TILE), max));
        e = _mm512_maskz_mov_ps(first_lanes(n - b * ATTN_TILE), e);
        _mm512_storeu_ps(w + b * ATTN_TILE, e);
        lanes = _mm512_add_ps(lanes, e);
    }
    float sum = fold16_512(lanes);
    if (max_sum) {
        max_sum[0] = _mm512_cvtss_f32(max);
        max_sum[1] = sum;
    }
    __m512 inv = _mm512_set1_ps(1.0f / sum);
    for (int b = 0; b < n_tiles; b++)
        _mm512_storeu_ps(w + b * ATTN_TILE, _mm512_mul_ps(_mm512_loadu_ps(w + b * ATTN_TILE), inv));
}

/* out[c] += w[p] * v[p][c] for positions [p0, p1) over NJ chunks from chunk j0, kept in
 * registers across the positions. Only the head's last chunk can be short: one mask, for
 * chunk NJ - 1 (all lanes when it is whole), where a mask per chunk ran out of mask
 * registers and was reloaded from the stack at every position. */
static inline __attribute__((always_inline)) void weigh_values(const struct attn_group *a,
                                                               const float *w, float *out,
                                                               int p0, int p1, int j0,
                                                               const int NJ, bool f16, bool pf)
{
    int d = a->d, nv = (d + 15) / 16;
    __mmask16 last = j0 + NJ == nv ? first_lanes(d - 16 * (nv - 1)) : (__mmask16)0xffff;
    __m512 acc[V_CHUNKS];
#pragma GCC unroll 8
    for (int j = 0; j < NJ; j++)
        acc[j] = _mm512_maskz_loadu_ps(j == NJ - 1 ? last : (__mmask16)0xffff, out + 16 * (j0 + j));
    for (int p = p0; p < p1; p++) {
        __m512 wp = _mm512_set1_ps(w[p]);
        size_t row = (size_t)p * d + 16 * (size_t)j0;
        if (pf) /* the same chunks of the next block (past n: never read, cannot fault) */
#pragma GCC unroll 8
            for (int j = 0; j < NJ; j += f16 ? 2 : 1)
                _mm_prefetch((const char *)a->v + (row + 16 * j + (size_t)V_BLOCK * d) * (f16 ? 2 : 4),
                             _MM_HINT_T0);
#pragma GCC unroll 8
        for (int j = 0; j < NJ - 1; j++)
            acc[j] = _mm512_add_ps(acc[j],
                                   _mm512_mul_ps(wp, load_whole16(a->v, row + 16 * j, f16)));
        __m512 v_last = load16(a->v, row + 16 * (NJ - 1), last, f16);
        acc[NJ - 1] = _mm512_add_ps(acc[NJ - 1], _mm512_mul_ps(wp, v_last));
    }
#pragma GCC unroll 8
    for (int j = 0; j < NJ; j++)
        _mm512_mask_storeu_ps(out + 16 * (j0 + j), j == NJ - 1 ? last : (__mmask16)0xffff, acc[j]);
}

static inline __attribute__((always_inline)) void attn_avx512(const struct attn_group *a, bool f16)
{
    int d = a->d, n = a->n, g = a->g, stride = attn_tiles_len(n);
    for (int h0 = 0; h0 < g; h0 += HEADS_AT_ONCE) {
        switch (g - h0 < HEADS_AT_ONCE ? g - h0 : HEADS_AT_ONCE) {
        case 1: score(a, h0, 1, f16); break;
        case 2: score(a, h0, 2, f16); break;
        case 3: score(a, h0, 3, f16); break;
        case 4: score(a, h0, 4, f16); break;
        case 5: score(a, h0, 5, f16); break;
        case 6: score(a, h0, 6, f16); break;
        case 7: score(a, h0, 7, f16); break;
        default: score(a, h0, 8, f16); break;
        }
    }
    for (int h = 0; h < g; h++)
        attn_softmax_avx512(a->scratch + (size_t)h * stride, n,
                           a->max_sum ? a->max_sum + 2 * h : NULL);
    for (int i = 0; i < g * d; i++)
        a->out[i] = 0.0f;
    int nv = (d + 15) / 16;
    for (int p0 = 0; p0 < n; p0 += V_BLOCK) {
        int p1 = p0 + V_BLOCK < n ? p0 + V_BLOCK : n;
        for (int h = 0; h < g; h++) {
            const float *w = a->scratch + (size_t)h * stride;
            float *out = a->out + (size_t)h * d;
            for (int j0 = 0; j0 < nv; j0 += V_CHUNKS) {
                switch (nv - j0 < V_CHUNKS ? nv - j0 : V_CHUNKS) {
                case 1: weigh_values(a, w, out, p0, p1, j0, 1, f16, h == 0); break;
                case 2: weigh_values(a, w, out, p0, p1, j0, 2, f16, h == 0); break;
                case 3: weigh_values(a, w, out, p0, p1, j0, 3, f16, h == 0); break;
                case 4: weigh_values(a, w, out, p0, p1, j0, 4, f16, h == 0); break;
                case 5: weigh_values(a, w, out, p0, p1, j0, 5, f16, h == 0); break;
                case 6: weigh_values(a, w, out, p0, p1, j0, 6, f16, h == 0); break;
                case 7: weigh_values(a, w, out, p0, p1, j0, 7, f16, h == 0); break;
                default: weigh_values(a, w, out, p0, p1, j0, 8, f16, h == 0); break;
                }
            }
        }
    }
}

void attn_f32_avx512(const struct attn_group *a) { attn_avx512(a, false); }
void attn_f16_avx512(const struct attn_group *a) { attn_avx512(a, true); }

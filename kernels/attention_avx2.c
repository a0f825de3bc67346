/* Attention with AVX2: the scalar twin's arithmetic (kernels.h, struct attn_group) done
 * 8 lanes at a time, a tile of 16 positions as two vectors; shaped like the AVX-512
 * kernel (attention_avx512.c), which says why. */
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "kernels/attention.h"
#include "kernels/attn_exp.h"
#include "kernels/lanes_x86.h"

#define HEADS_AT_ONCE 4  /* two accumulators each */
#define V_BLOCK 32
#define V_CHUNKS 8       /* 8-float chunks of a head kept in registers at once */
/* Keys this many bytes ahead of the row being scored, and a block of values while the
 * block before it is weighed: from memory (decode), the hardware prefetcher alone left
 * the kernel waiting (as in attention_avx512.c). */
#define PF_K_BYTES 4096

/* Elements [at, at + count) widened to float, zero beyond count (count <= 8). */
static inline __m256 load8(const void *base, size_t at, int count, bool f16)
{
    if (f16) {
        if (count >= 8)
            return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + at)));
        uint16_t part[8] = {0};
        memcpy(part, (const uint16_t *)base + at, (size_t)count * sizeof *part);
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)part));
    }
    if (count >= 8)
        return _mm256_loadu_ps((const float *)base + at);
    return _mm256_maskload_ps((const float *)base + at, lanes_below(count));
}

/* attn_exp of 4 floats: the same double-precision operations in the same order. */
static inline __m128 exp4(__m128 xf)
{
    static const double c[ATTN_EXP_NCOEFF] = ATTN_EXP_COEFFS;
    __m256d x = _mm256_max_pd(_mm256_cvtps_pd(xf), _mm256_set1_pd(ATTN_EXP_MIN));
    __m256d k = _mm256_round_pd(_mm256_mul_pd(x, _mm256_set1_pd(ATTN_LOG2E)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256d r = _mm256_sub_pd(x, _mm256_mul_pd(k, _mm256_set1_pd(ATTN_LN2_HI)));
    r = _mm256_sub_pd(r, _mm256_mul_pd(k, _mm256_set1_pd(ATTN_LN2_LO)));
    __m256d p = _mm256_set1_pd(c[0]);
    for (int i = 1; i < ATTN_EXP_NCOEFF; i++)
        p = _mm256_add_pd(_mm256_mul_pd(p, r), _mm256_set1_pd(c[i]));
    p = _mm256_add_pd(_mm256_mul_pd(p, r), _mm256_set1_pd(1.0));
    p = _mm256_add_pd(_mm256_mul_pd(p, r), _mm256_set1_pd(1.0));
    /* 2^k in the exponent field: k >= -174 after the clamp, a normal double */
    __m256i e = _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(k)), _mm256_set1_epi64x(1023));
    return _mm256_cvtpd_ps(_mm256_mul_pd(p, _mm256_castsi256_pd(_mm256_slli_epi64(e, 52))));
}

static inline __m256 exp8(__m256 x)
{
    return _mm256_set_m128(exp4(_mm256_extractf128_ps(x, 1)), exp4(_mm256_castps256_ps128(x)));
}

static inline __attribute__((always_inline)) void score(const struct attn_group *a, int h0,
                                                        const int HN, bool f16)
{
    int d = a->d, stride = attn_tiles_len(a->n);
    const float *q = a->q + (size_t)h0 * d;
    __m256 vscale = _mm256_set1_ps(a->scale);
    for (int b = 0; b < stride / ATTN_TILE; b++) {
        size_t base = (size_t)b * d * ATTN_TILE;
        __m256 lo[HEADS_AT_ONCE], hi[HEADS_AT_ONCE];
#pragma GCC unroll 4
        for (int h = 0; h < HN; h++)
            lo[h] = hi[h] = _mm256_setzero_ps();
        for (int i = 0; i < d; i++) {
            _mm_prefetch((const char *)a->k + (base + (size_t)i * ATTN_TILE) * (f16 ? 2 : 4) +
                             PF_K_BYTES, _MM_HINT_T0);
            __m256 klo = load8(a->k, base + (size_t)i * ATTN_TILE, 8, f16);
            __m256 khi = load8(a->k, base + (size_t)i * ATTN_TILE + 8, 8, f16);
#pragma GCC unroll 4
            for (int h = 0; h < HN; h++) {
                __m256 qi = _mm256_set1_ps(q[(size_t)h * d + i]);
                lo[h] = _mm256_add_ps(lo[h], _mm256_mul_ps(qi, klo));
                hi[h] = _mm256_add_ps(hi[h], _mm256_mul_ps(qi, khi));
            }
        }
#pragma GCC unroll 4
        for (int h = 0; h < HN; h++) {
            float *w = a->scratch + (size_t)(h0 + h) * stride + b * ATTN_TILE;
            _mm256_storeu_ps(w, _mm256_mul_ps(lo[h], vscale));
            _mm256_storeu_ps(w + 8, _mm256_mul_ps(hi[h], vscale));
        }
    }
}

void attn_softmax_avx2(float *w, int n, float *max_sum)
{
    int n_tiles = (n + ATTN_TILE - 1) / ATTN_TILE;
    const __m256 neg_inf = _mm256_set1_ps(-INFINITY);
    __m256 vmax = neg_inf;
    for (int b = 0; b < n_tiles; b++)
        for (int half = 0; half < 2; half++) {
            __m256 valid = _mm256_castsi256_ps(lanes_below(n - b * ATTN_TILE - 8 * half));
            __m256 s = _mm256_blendv_ps(neg_inf, _mm256_loadu_ps(w + b * ATTN_TILE + 8 * half), valid);
            vmax = _mm256_max_ps(vmax, s);
        }
    __m256 max = _mm256_set1_ps(hmax8(vmax));
    __m256 lanes[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int b = 0; b < n_tiles; b++)
        for (int half = 0; half < 2; half++) {
            float *at = w + b * ATTN_TILE + 8 * half;
            __m256 valid = _mm256_castsi256_ps(lanes_below(n - b * ATTN_TILE - 8 * half));
            __m256 e = _mm256_and_ps(exp8(_mm256_sub_ps(_mm256_loadu_ps(at), max)), valid);
            _mm256_storeu_ps(at, e);
            lanes[half] = _mm256_add_ps(lanes[half], e);
        }
    float sum = fold16_256(lanes[0], lanes[1]);
    if (max_sum) {
        max_sum[0] = _mm256_cvtss_f32(max);
        max_sum[1] = sum;
    }
    __m256 inv = _mm256_set1_ps(1.0f / sum);
    for (int i = 0; i < n_tiles * ATTN_TILE; i += 8)
        _mm256_storeu_ps(w + i, _mm256_mul_ps(_mm256_loadu_ps(w + i), inv));
}

static inline __attribute__((always_inline)) void weigh_values(const struct attn_group *a,
                                                               const float *w, float *out,
                                                               int p0, int p1, int j0,
                                                               const int NJ, bool f16, bool pf)
{
    int d = a->d;
    int count[V_CHUNKS];
    __m256 acc[V_CHUNKS];
#pragma GCC unroll 8
    for (int j = 0; j < NJ; j++) {
        count[j] = d - 8 * (j0 + j) < 8 ? d - 8 * (j0 + j) : 8;
        acc[j] = load8(out, 8 * (size_t)(j0 + j), count[j], false);
    }
    for (int p = p0; p < p1; p++) {
        __m256 wp = _mm256_set1_ps(w[p]);
        size_t row = (size_t)p * d + 8 * (size_t)j0;
        if (pf) /* the same chunks of the next block (past n: never read, cannot fault) */
#pragma GCC unroll 8
            for (int j = 0; j < NJ; j += f16 ? 4 : 2)
                _mm_prefetch((const char *)a->v + (row + 8 * j + (size_t)V_BLOCK * d) * (f16 ? 2 : 4),
                             _MM_HINT_T0);
        /* only the head's last chunk can be short */
#pragma GCC unroll 8
        for (int j = 0; j < NJ - 1; j++)
            acc[j] = _mm256_add_ps(acc[j], _mm256_mul_ps(wp, load8(a->v, row + 8 * j, 8, f16)));
        acc[NJ - 1] = _mm256_add_ps(
            acc[NJ - 1], _mm256_mul_ps(wp, load8(a->v, row + 8 * (NJ - 1), count[NJ - 1], f16)));
    }
#pragma GCC unroll 8
    for (int j = 0; j < NJ; j++)
        _mm256_maskstore_ps(out + 8 * (j0 + j), lanes_below(count[j]), acc[j]);
}

static inline __attribute__((always_inline)) void attn_avx2(const struct attn_group *a, bool f16)
{
    int d = a->d, n = a->n, g = a->g, stride = attn_tiles_len(n);
    for (int h0 = 0; h0 < g; h0 += HEADS_AT_ONCE) {
        switch (g - h0 < HEADS_AT_ONCE ? g - h0 : HEADS_AT_ONCE) {
        case 1: score(a, h0, 1, f16); break;
        case 2: score(a, h0, 2, f16); break;
        case 3: score(a, h0, 3, f16); break;
        default: score(a, h0, 4, f16); break;
        }
    }
    for (int h = 0; h < g; h++)
        attn_softmax_avx2(a->scratch + (size_t)h * stride, n,
                           a->max_sum ? a->max_sum + 2 * h : NULL);
    for (int i = 0; i < g * d; i++)
        a->out[i] = 0.0f;
    int nv = (d + 7) / 8;
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

void attn_f32_avx2(const struct attn_group *a) { attn_avx2(a, false); }
void attn_f16_avx2(const struct attn_group *a) { attn_avx2(a, true); }

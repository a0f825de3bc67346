/* Attention over the int8 KV cache with AVX-512 VNNI: the scalar twin's arithmetic
 * (kernels.h, struct attn_group_q8). A 64-byte row of a key tile is 4 elements of each
 * of 16 positions, so one vpdpbusd per head adds 4 products to each position's score;
 * every head of the GQA group is scored from one pass over the tiles. */
#include <immintrin.h>
#include <string.h>

#include "kernels/attention.h"
#include "kernels/attn_q8.h"

#define HEADS_AT_ONCE 8  /* heads scored together: one accumulator each */
#define V_BLOCK 64       /* positions of values read by every head while in L1 */
#define V_HEADS 4        /* heads weighing one conversion of values to float */
#define V_CHUNKS 4       /* 16-element chunks of each of those heads kept in registers */
/* The cache streams from memory at long context, and the hardware prefetcher alone left
 * the kernel waiting on it: the scores ask for key tiles this far ahead (a prefetch past
 * the end is harmless), the values for the next block while one is weighed. */
#define PREFETCH_TILES 4

static inline __mmask16 first_lanes(int count)
{
    return count >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << count) - 1);
}

/* Scores of heads [h0, h0 + HN) for every tile, into their scratch rows. vpdpbusd wants
 * one unsigned operand: the keys become k + 128 (a flip of the top bit), and since
 * sum (k + 128) * q = dot + 128 * sum q, each head subtracts its own 128 * sum q, exactly. */
static inline __attribute__((always_inline)) void score(const struct attn_group_q8 *a, int h0,
                                                        const int HN, const float *qs,
                                                        const int32_t *qsum)
{
    int d = a->d, stride = attn_tiles_len(a->n);
    const int8_t *q = a->q8 + (size_t)h0 * d;
    const __m512i top_bit = _mm512_set1_epi8((char)0x80);
    const __m512 vscale = _mm512_set1_ps(a->scale);
    for (int b = 0; b < stride / ATTN_TILE; b++) {
        const int8_t *tile = a->k + (size_t)b * d * ATTN_TILE;
        __m512i acc[HEADS_AT_ONCE];
#pragma GCC unroll 8
        for (int h = 0; h < HN; h++)
            acc[h] = _mm512_setzero_si512();
        for (int i = 0; i < d; i += 4) {
            _mm_prefetch((const char *)(tile + (size_t)(PREFETCH_TILES * d + i) * ATTN_TILE), _MM_HINT_T0);
            __m512i k = _mm512_xor_si512(_mm512_loadu_si512(tile + (size_t)i * ATTN_TILE), top_bit);
#pragma GCC unroll 8
            for (int h = 0; h < HN; h++) {
                int32_t q4;
                memcpy(&q4, q + (size_t)h * d + i, sizeof q4);
                acc[h] = _mm512_dpbusd_epi32(acc[h], k, _mm512_set1_epi32(q4));
            }
        }
        __m512 ks = _mm512_loadu_ps(a->k_scale + (size_t)b * ATTN_TILE);
#pragma GCC unroll 8
        for (int h = 0; h < HN; h++) {
            __m512i dot = _mm512_sub_epi32(acc[h], _mm512_set1_epi32(128 * qsum[h]));
            __m512 s = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(_mm512_set1_ps(qs[h]), ks));
            _mm512_storeu_ps(a->scratch + (size_t)(h0 + h) * stride + b * ATTN_TILE,
                             _mm512_mul_ps(s, vscale));
        }
    }
}

/* out[c] += w[p] * (float)v[p][c] for heads [h0, h0 + HN), positions [p0, p1), chunks
 * [j0, j0 + NJ); w already holds w_p * v_scale[p]. Each chunk of values is converted to
 * float once for all HN heads. */
static inline __attribute__((always_inline)) void weigh_values(const struct attn_group_q8 *a,
                                                               int h0, const int HN, int p0,
                                                               int p1, int j0, const int NJ)
{
    int d = a->d, nv = (d + 15) / 16, stride = attn_tiles_len(a->n);
    __mmask16 m[V_CHUNKS];
    __m512 acc[V_HEADS][V_CHUNKS];
    const float *w[V_HEADS];
#pragma GCC unroll 4
    for (int j = 0; j < NJ; j++)
        m[j] = j0 + j == nv - 1 ? first_lanes(d - 16 * (nv - 1)) : (__mmask16)0xffff;
#pragma GCC unroll 4
    for (int h = 0; h < HN; h++) {
        w[h] = a->scratch + (size_t)(h0 + h) * stride;
#pragma GCC unroll 4
        for (int j = 0; j < NJ; j++)
            acc[h][j] = _mm512_maskz_loadu_ps(m[j], a->out + (size_t)(h0 + h) * d + 16 * (j0 + j));
    }
    for (int p = p0; p < p1; p++) {
        const int8_t *row = a->v + (size_t)p * d + 16 * (size_t)j0;
        __m512 x[V_CHUNKS];
#pragma GCC unroll 4
        for (int j = 0; j < NJ; j++)
            x[j] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m[j], row + 16 * j)));
#pragma GCC unroll 4
        for (int h = 0; h < HN; h++) {
            __m512 wp = _mm512_set1_ps(w[h][p]);
#pragma GCC unroll 4
            for (int j = 0; j < NJ; j++)
                acc[h][j] = _mm512_add_ps(acc[h][j], _mm512_mul_ps(wp, x[j]));
        }
    }
#pragma GCC unroll 4
    for (int h = 0; h < HN; h++)
#pragma GCC unroll 4
        for (int j = 0; j < NJ; j++)
            _mm512_mask_storeu_ps(a->out + (size_t)(h0 + h) * d + 16 * (j0 + j), m[j], acc[h][j]);
}

static inline __attribute__((always_inline)) void weigh_chunks(const struct attn_group_q8 *a,
                                                               int h0, const int HN, int p0,
                                                               int p1, int j0, int nj)
{
    switch (nj) {
    case 1: weigh_values(a, h0, HN, p0, p1, j0, 1); break;
    case 2: weigh_values(a, h0, HN, p0, p1, j0, 2); break;
    case 3: weigh_values(a, h0, HN, p0, p1, j0, 3); break;
    default: weigh_values(a, h0, HN, p0, p1, j0, 4); break;
    }
}

void attn_q8_avx512(const struct attn_group_q8 *a)
{
    int d = a->d, n = a->n, g = a->g, stride = attn_tiles_len(n);
    float qs[HEADS_AT_ONCE];
    int32_t qsum[HEADS_AT_ONCE];
    for (int h0 = 0; h0 < g; h0 += HEADS_AT_ONCE) {
        int hn = g - h0 < HEADS_AT_ONCE ? g - h0 : HEADS_AT_ONCE;
        for (int h = 0; h < hn; h++) {
            int8_t *q = a->q8 + (size_t)(h0 + h) * d;
            qs[h] = attn_q8_quantize(a->q + (size_t)(h0 + h) * d, d, q);
            qsum[h] = 0;
            for (int i = 0; i < d; i++)
                qsum[h] += q[i];
        }
        switch (hn) {
        case 1: score(a, h0, 1, qs, qsum); break;
        case 2: score(a, h0, 2, qs, qsum); break;
        case 3: score(a, h0, 3, qs, qsum); break;
        case 4: score(a, h0, 4, qs, qsum); break;
        case 5: score(a, h0, 5, qs, qsum); break;
        case 6: score(a, h0, 6, qs, qsum); break;
        case 7: score(a, h0, 7, qs, qsum); break;
        default: score(a, h0, 8, qs, qsum); break;
        }
    }
    /* w_p * v_scale[p] once per head and position, as the twin forms it; lanes past n
     * stay 0 whatever their scale holds */
    for (int h = 0; h < g; h++) {
        float *w = a->scratch + (size_t)h * stride;
        attn_softmax_avx512(w, n);
        for (int b = 0; b < stride; b += ATTN_TILE) {
            __mmask16 m = first_lanes(n - b);
            _mm512_storeu_ps(w + b, _mm512_maskz_mul_ps(m, _mm512_loadu_ps(w + b),
                                                        _mm512_maskz_loadu_ps(m, a->v_scale + b)));
        }
    }
    for (int i = 0; i < g * d; i++)
        a->out[i] = 0.0f;
    int nv = (d + 15) / 16;
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

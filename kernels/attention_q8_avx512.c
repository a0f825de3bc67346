/* Attention over the int8 KV cache with AVX-512 VNNI: the scalar twin's arithmetic
 * (kernels.h, struct attn_group_q8). A 64-byte row of a key tile is 4 elements of each
 * of 16 positions, so one vpdpbusd per head adds 4 products to each position's score.
 *
 * Three passes per block of up to HEADS_AT_ONCE heads, each over the whole cache of the
 * KV head only once: scores of every head from one read of the key tiles (with their
 * maximum); e^(s - max) times the value scale, in place, and the lane sums; the values,
 * each pair of positions widened to int16 once for every head that weighs it, against
 * weights rounded to int16 a block at a time (vpdpwssd). Normalization waits for
 * the end (the contract divides the accumulated sums, not the weights). At long context
 * the cache streams from memory, and both streams are prefetched ahead: the hardware
 * prefetcher alone left the kernel waiting on memory. */
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "kernels/attention.h"
#include "kernels/attn_q8.h"
#include "kernels/lanes_x86.h"

#define HEADS_AT_ONCE 8  /* heads of one pass over the cache */
/* Prefetch distances, the best of those tried on 150 calls over distinct caches (what one
 * 2B-4T token reads) at n = 4096: keys this many bytes ahead of the tiles being scored
 * (2 to 32 KB tried; farther was slower), values this many positions ahead of the one
 * being weighed (16 to 128 tried; the softmax pass fetches the first ones). */
#define PF_K_BYTES 4096
#define PF_V_ROWS 64

/* attn_q8_exp of 16 lanes, its operations in its order; lanes outside keep come out 0. */
static inline __m512 exp16(__m512 x, __mmask16 keep)
{
    keep = _mm512_mask_cmp_ps_mask(keep, x, _mm512_set1_ps(ATTN_Q8_EXP_MIN), _CMP_GE_OQ);
    __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(ATTN_Q8_LOG2E), _mm512_set1_ps(ATTN_Q8_ROUNDER));
    __m512 k = _mm512_sub_ps(t, _mm512_set1_ps(ATTN_Q8_ROUNDER));
    __m512 r = _mm512_fmadd_ps(k, _mm512_set1_ps(-ATTN_Q8_LN2_HI), x);
    r = _mm512_fmadd_ps(k, _mm512_set1_ps(-ATTN_Q8_LN2_LO), r);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(ATTN_Q8_EXP_C6), r, _mm512_set1_ps(ATTN_Q8_EXP_C5));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(ATTN_Q8_EXP_C4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(ATTN_Q8_EXP_C3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(ATTN_Q8_EXP_C2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    __m512i two_k = _mm512_add_epi32(_mm512_slli_epi32(_mm512_castps_si512(t), 23),
                                     _mm512_set1_epi32(127 << 23));
    return _mm512_maskz_mul_ps(keep, p, _mm512_castsi512_ps(two_k));
}

/* What the heads of one pass carry between the passes. */
struct heads {
    int32_t bias[HEADS_AT_ONCE];  /* -128 * sum of the quantized query */
    float c[HEADS_AT_ONCE];       /* query scale * score scale */
    __m512 max[HEADS_AT_ONCE];    /* lane maxima of the scores */
};

/* Scores of heads [h0, h0 + HN) over tiles [b, b + T), into their scratch rows. T tiles
 * at once give T * HN independent vpdpbusd chains (latency hidden) and share each query
 * broadcast. vpdpbusd wants one unsigned operand: the keys become k + 128 (a flip of the
 * top bit), and since sum (k + 128) * q = dot + 128 * sum q, each accumulator starts at
 * -128 * sum q, and the dot comes out exact. */
static inline __attribute__((always_inline)) void score_tiles(const struct attn_group_q8 *a,
                                                              int h0, const int HN, const int T,
                                                              int b, const struct heads *hs,
                                                              __m512 *max)
{
    int d = a->d, stride = attn_tiles_len(a->n);
    size_t tile_bytes = (size_t)d * ATTN_TILE;
    const int8_t *q = a->q8 + (size_t)h0 * d, *tiles = a->k + (size_t)b * tile_bytes;
    const __m512i top_bit = _mm512_set1_epi8((char)0x80);
    /* T * HN <= 16: an array no larger, or GCC leaves it in memory */
    __m512i acc[16];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++)
#pragma GCC unroll 8
        for (int h = 0; h < HN; h++)
            acc[t * HN + h] = _mm512_set1_epi32(hs->bias[h]);
    for (int i = 0; i < d; i += 4) {
        __m512i k[8];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const int8_t *at = tiles + t * tile_bytes + (size_t)i * ATTN_TILE;
            _mm_prefetch((const char *)at + PF_K_BYTES, _MM_HINT_T0);
            k[t] = _mm512_xor_si512(_mm512_loadu_si512(at), top_bit);
        }
#pragma GCC unroll 8
        for (int h = 0; h < HN; h++) {
            int32_t q4;
            memcpy(&q4, q + (size_t)h * d + i, sizeof q4);
            __m512i qv = _mm512_set1_epi32(q4);
#pragma GCC unroll 8
            for (int t = 0; t < T; t++)
                acc[t * HN + h] = dpbusd(acc[t * HN + h], k[t], qv);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        /* keys past n (in the last tile) may hold anything: their scores are written, for
         * the softmax pass to mask, but never reach the maximum */
        __mmask16 valid = first_lanes(a->n - (b + t) * ATTN_TILE);
        __m512 ks = _mm512_loadu_ps(a->k_scale + (size_t)(b + t) * ATTN_TILE);
#pragma GCC unroll 8
        for (int h = 0; h < HN; h++) {
            __m512 s = _mm512_mul_ps(_mm512_cvtepi32_ps(acc[t * HN + h]),
                                     _mm512_mul_ps(_mm512_set1_ps(hs->c[h]), ks));
            _mm512_storeu_ps(a->scratch + (size_t)(h0 + h) * stride + (size_t)(b + t) * ATTN_TILE, s);
            /* max(s, max): a NaN score leaves the maximum as it was, as in the twin */
            max[h] = _mm512_mask_max_ps(max[h], valid, s, max[h]);
        }
    }
}

static inline __attribute__((always_inline)) void score(const struct attn_group_q8 *a, int h0,
                                                        const int HN, struct heads *hs)
{
    /* 8 chains hide vpdpbusd's latency; more left GCC short of registers */
    const int T = HN >= 8 ? 1 : 8 / HN;
    int tiles = attn_tiles_len(a->n) / ATTN_TILE, b = 0;
    /* in registers: stores of scores may alias the struct (__m512 may alias anything) */
    __m512 max[HEADS_AT_ONCE];
    for (int h = 0; h < HN; h++)
        max[h] = hs->max[h];
    for (; b + T <= tiles; b += T)
        score_tiles(a, h0, HN, T, b, hs, max);
    for (; b < tiles; b++)
        score_tiles(a, h0, HN, 1, b, hs, max);
    for (int h = 0; h < HN; h++)
        hs->max[h] = max[h];
}

/* One function per head count, not inlined into attend(): in one function with every
 * other pass, GCC kept some of the accumulators in memory. */
#define SCORE_HEADS(HN)                                                                    \
    static __attribute__((noinline)) void score_##HN(const struct attn_group_q8 *a, int h0, \
                                                    struct heads *hs)                       \
    {                                                                                       \
        score(a, h0, HN, hs);                                                               \
    }
SCORE_HEADS(1)
SCORE_HEADS(2)
SCORE_HEADS(3)
SCORE_HEADS(4)
SCORE_HEADS(5)
SCORE_HEADS(6)
SCORE_HEADS(7)
SCORE_HEADS(8)

/* A block's int16 weights from u[0..len) (0 from len up to whole vectors): wq as the
 * contract's w_p, and the scale that takes its sums back, top / 32767. */
static inline float weigh_block_of(const float *u, int len, int16_t *wq)
{
    int nvec = (len + 15) / 16;
    __m512 top = _mm512_setzero_ps();
    for (int k = 0; k < nvec; k++)
        top = _mm512_max_ps(_mm512_loadu_ps(u + 16 * k), top); /* a NaN u loses */
    float t = _mm512_reduce_max_ps(top);
    __m512 up = _mm512_set1_ps(ATTN_Q8_WMAX / t), wmax = _mm512_set1_ps(ATTN_Q8_WMAX);
    for (int k = 0; k < nvec; k++) {
        __m512 x = _mm512_mul_ps(_mm512_loadu_ps(u + 16 * k), up);
        __mmask16 ord = _mm512_cmp_ps_mask(x, x, _CMP_ORD_Q);
        __m512i w = _mm512_cvtps_epi32(_mm512_maskz_min_ps(ord, x, wmax));
        _mm256_storeu_si256((__m256i *)(wq + 16 * k), _mm512_cvtepi32_epi16(w));
    }
    return t / ATTN_Q8_WMAX;
}

/* out_h += (float)acc_h * down[h] for the pairs of positions of block [b0, b1), heads
 * [h0, h0 + HN), chunks [j0, j0 + NJ) of 16 elements: a 32-byte piece of a pair row is
 * one chunk of both positions, widened to int16, and vpdpwssd adds both positions'
 * products into each element's int32 lane. Each chunk is widened once for all HN heads.
 * An odd last position pairs with what follows it, weighed 0. */
static inline __attribute__((always_inline)) void weigh_values(const struct attn_group_q8 *a,
                                                               int h0, const int HN, int b0,
                                                               int b1, int j0, const int NJ,
                                                               const int16_t (*wq)[ATTN_Q8_VBLOCK],
                                                               const float *down)
{
    int d = a->d, n = a->n, nv = (d + 15) / 16;
    /* only the head's last chunk can be short: one mask for chunk NJ - 1 (a mask per
     * chunk outnumbered the mask registers, and was reloaded at every pair) */
    int rem = j0 + NJ == nv ? d - 16 * (nv - 1) : 16;
    __mmask32 m_last = rem == 16 ? (__mmask32)0xffffffffu : (__mmask32)((1u << (2 * rem)) - 1);
    __mmask16 mo_last = first_lanes(rem);
    __m512i acc[4][8];
#pragma GCC unroll 4
    for (int h = 0; h < HN; h++)
#pragma GCC unroll 8
        for (int j = 0; j < NJ; j++)
            acc[h][j] = _mm512_setzero_si512();
    /* the lines of the pair rows PF_V_ROWS positions ahead that these chunks will read */
    int pf_end = n - PF_V_ROWS < b1 ? n - PF_V_ROWS : b1;
    for (int p = b0; p < b1; p += 2) {
        const int8_t *row = a->v + (size_t)p * d + 32 * (size_t)j0;
        if (p < pf_end) {
#pragma GCC unroll 4
            for (int j = 0; j < NJ; j += 2)
                _mm_prefetch((const char *)(row + (size_t)PF_V_ROWS * d + 32 * j), _MM_HINT_T0);
        }
        __m512i x[8];
#pragma GCC unroll 8
        for (int j = 0; j < NJ - 1; j++)
            x[j] = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(row + 32 * j)));
        x[NJ - 1] = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m_last, row + 32 * (NJ - 1)));
#pragma GCC unroll 4
        for (int h = 0; h < HN; h++) {
            int32_t pair;
            memcpy(&pair, wq[h] + (p - b0), sizeof pair);
            __m512i wv = _mm512_set1_epi32(pair);
#pragma GCC unroll 8
            for (int j = 0; j < NJ; j++)
                acc[h][j] = dpwssd(acc[h][j], x[j], wv);
        }
    }
#pragma GCC unroll 4
    for (int h = 0; h < HN; h++) {
        float *out = a->out + (size_t)(h0 + h) * d + 16 * (size_t)j0;
        __m512 k = _mm512_set1_ps(down[h]);
#pragma GCC unroll 8
        for (int j = 0; j < NJ; j++) {
            __mmask16 mo = j == NJ - 1 ? mo_last : (__mmask16)0xffff;
            __m512 o = _mm512_maskz_loadu_ps(mo, out + 16 * j);
            o = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[h][j]), k, o);
            _mm512_mask_storeu_ps(out + 16 * j, mo, o);
        }
    }
}

/* 16 accumulators and their operands fit the 32 registers: 2 heads x 8 chunks (every
 * chunk of a 128-element head, so each pair row is read once), or 4 heads x 4 chunks. */
static inline __attribute__((always_inline)) void weigh_heads(const struct attn_group_q8 *a,
                                                              int h0, const int HN, int b0,
                                                              int b1,
                                                              const int16_t (*wq)[ATTN_Q8_VBLOCK],
                                                              const float *down)
{
    const int NJ = HN <= 2 ? 8 : 4;
    int nv = (a->d + 15) / 16;
    /* the chunks left, as a constant for each case (never more than NJ) */
#define WEIGH(nj) weigh_values(a, h0, HN, b0, b1, j0, (nj) < NJ ? (nj) : NJ, wq, down)
    for (int j0 = 0; j0 < nv; j0 += NJ) {
        switch (nv - j0) {
        case 1: WEIGH(1); break;
        case 2: WEIGH(2); break;
        case 3: WEIGH(3); break;
        case 4: WEIGH(4); break;
        case 5: WEIGH(5); break;
        case 6: WEIGH(6); break;
        case 7: WEIGH(7); break;
        default: WEIGH(8); break;
        }
    }
#undef WEIGH
}

/* Every pass for heads [h0, h0 + hn). */
static void attend(const struct attn_group_q8 *a, int h0, int hn)
{
    int d = a->d, n = a->n, stride = attn_tiles_len(n), tiles = stride / ATTN_TILE;
    struct heads hs;
    for (int h = 0; h < hn; h++) {
        int32_t sum;
        hs.c[h] = attn_q8_quantize_avx2(a->q + (size_t)(h0 + h) * d, d,
                                        a->q8 + (size_t)(h0 + h) * d, &sum) * a->scale;
        hs.bias[h] = -128 * sum;
        hs.max[h] = _mm512_set1_ps(-INFINITY);
    }
    static void (*const score_heads[HEADS_AT_ONCE])(const struct attn_group_q8 *, int, struct heads *) = {
        score_1, score_2, score_3, score_4, score_5, score_6, score_7, score_8};
    score_heads[hn - 1](a, h0, &hs);

    /* u_p = e_p * v_scale[p] in place of the scores; 0 past n, whatever the scores and
     * scales there. No cache is read here, so the first values are fetched meanwhile. */
    const char *v_head = (const char *)a->v;
    size_t v_head_bytes = (size_t)(n < PF_V_ROWS ? n : PF_V_ROWS) * d, fetched = 0;
    float inv[HEADS_AT_ONCE];
    for (int h = 0; h < hn; h++) {
        float *w = a->scratch + (size_t)(h0 + h) * stride;
        __m512 max = _mm512_set1_ps(_mm512_reduce_max_ps(hs.max[h])), lanes = _mm512_setzero_ps();
        for (int b = 0; b < tiles; b++) {
            if (fetched < v_head_bytes) {
                _mm_prefetch(v_head + fetched, _MM_HINT_T0);
                fetched += 64;
            }
            __mmask16 valid = first_lanes(n - b * ATTN_TILE);
            __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(w + b * ATTN_TILE), max), valid);
            lanes = _mm512_add_ps(lanes, e);
            _mm512_storeu_ps(w + b * ATTN_TILE,
                             _mm512_maskz_mul_ps(valid, e, _mm512_maskz_loadu_ps(valid, a->v_scale + b * ATTN_TILE)));
        }
        float sum = fold16_512(lanes);
        if (a->max_sum) {
            a->max_sum[2 * (h0 + h)] = _mm512_cvtss_f32(max);
            a->max_sum[2 * (h0 + h) + 1] = sum;
        }
        inv[h] = 1.0f / sum;
    }
    for (; fetched < v_head_bytes; fetched += 64)
        _mm_prefetch(v_head + fetched, _MM_HINT_T0);

    memset(a->out + (size_t)h0 * d, 0, sizeof(float) * hn * d);
    for (int b0 = 0; b0 < n; b0 += ATTN_Q8_VBLOCK) {
        int b1 = b0 + ATTN_Q8_VBLOCK < n ? b0 + ATTN_Q8_VBLOCK : n;
        int16_t wq[HEADS_AT_ONCE][ATTN_Q8_VBLOCK];
        float down[HEADS_AT_ONCE];
        for (int h = 0; h < hn; h++)
            down[h] = weigh_block_of(a->scratch + (size_t)(h0 + h) * stride + b0, b1 - b0, wq[h]);
        for (int g = 0; g < hn; g += 4) {
            switch (hn - g) {
            case 1: weigh_heads(a, h0 + g, 1, b0, b1, wq + g, down + g); break;
            case 2: weigh_heads(a, h0 + g, 2, b0, b1, wq + g, down + g); break;
            case 3: weigh_heads(a, h0 + g, 3, b0, b1, wq + g, down + g); break;
            default: weigh_heads(a, h0 + g, 4, b0, b1, wq + g, down + g); break;
            }
        }
    }
    for (int h = 0; h < hn; h++) {
        float *out = a->out + (size_t)(h0 + h) * d;
        for (int i = 0; i < d; i += 16) {
            __mmask16 m = first_lanes(d - i);
            _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, out + i),
                                                            _mm512_set1_ps(inv[h])));
        }
    }
}

void attn_q8_avx512(const struct attn_group_q8 *a)
{
    for (int h0 = 0; h0 < a->g; h0 += HEADS_AT_ONCE)
        attend(a, h0, a->g - h0 < HEADS_AT_ONCE ? a->g - h0 : HEADS_AT_ONCE);
}

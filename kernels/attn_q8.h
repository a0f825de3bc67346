/* The int8 KV cache's rounding and key layout (the contract: kernels.h, struct
 * attn_group_q8). One inline definition serves the forward pass, which fills the cache,
 * and the scalar attention kernel, which quantizes its queries; the SIMD kernels share
 * one AVX2 twin of it (attn_q8_quantize_avx2), so that no kernel set can round a query
 * differently from another. */
#ifndef BITNET_KERNELS_ATTN_Q8_H
#define BITNET_KERNELS_ATTN_Q8_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/kernels.h"

/* Where key element i of position p lies in the tiles of a head of size d. */
static inline size_t attn_q8_key_at(int p, int i, int d)
{
    return (size_t)(p / ATTN_TILE) * d * ATTN_TILE + (size_t)(i / 4) * 4 * ATTN_TILE +
           (size_t)(p % ATTN_TILE) * 4 + (size_t)(i % 4);
}

/* Where value element i of position p lies in a head of size d. */
static inline size_t attn_q8_value_at(int p, int i, int d)
{
    return (size_t)(p / 2) * 2 * d + (size_t)i * 2 + (size_t)(p % 2);
}

/* Positions of one block of the value pass, whose weights share one int16 scale. */
#define ATTN_Q8_VBLOCK 64
#define ATTN_Q8_WMAX 32767.0f

/* w_p of the value pass from x_p = u_p * (32767 / top_B): round half to even, after
 * clamping to 32767 (the multiply may round just past it); NaN gives 0. */
static inline int16_t attn_q8_weight(float x)
{
    if (!(x == x))
        return 0;
    x = x < ATTN_Q8_WMAX ? x : ATTN_Q8_WMAX;
    return (int16_t)((x + 0x1.8p23f) - 0x1.8p23f);
}

/* q[0..d) = x[0..d) in int8; returns the scale (absmax / 127, or 0 for a zero vector). */
static inline float attn_q8_quantize(const float *x, int d, int8_t *q)
{
    float amax = 0.0f;
    /* a comparison rather than fmaxf: no libm call per element, and a NaN never wins */
    for (int i = 0; i < d; i++) {
        float a = fabsf(x[i]);
        amax = a > amax ? a : amax;
    }
    if (!(amax > 0.0f)) {
        for (int i = 0; i < d; i++)
            q[i] = 0;
        return 0.0f;
    }
    float inv = 127.0f / amax;
    for (int i = 0; i < d; i++) {
        float v = x[i] * inv;
        /* round half to even without a libm call: beyond 1.5 * 2^23 a float's step is 1,
         * so the addition rounds v (|v| <= 127 or so) to an integer the default way and
         * the subtraction is exact; -ffp-contract=off keeps the multiply and the add
         * apart. A NaN (a diverged activation) becomes 0 rather than undefined. */
        float r = (v + 0x1.8p23f) - 0x1.8p23f;
        r = r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r;
        q[i] = r == r ? (int8_t)r : 0;
    }
    return amax / 127.0f;
}

#ifdef __AVX2__
#include <immintrin.h>

#include "kernels/lanes_x86.h"

/* attn_q8_quantize with AVX2, 8 lanes at a time (d a multiple of 4), the same operations
 * lane by lane, and the sum of q into *sum unless sum is NULL: the attention kernels quantize each query
 * head once per call, and a long row makes several calls (model/attention_rows.c), where
 * the scalar loops cost as much as weighing 256 positions. */
static inline float attn_q8_quantize_avx2(const float *x, int d, int8_t *q, int32_t *sum)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 vmax = _mm256_setzero_ps();
    for (int i = 0; i < d; i += 8) {
        __m256 ax = _mm256_andnot_ps(sign, _mm256_maskload_ps(x + i, lanes_below(d - i)));
        vmax = _mm256_max_ps(ax, vmax); /* a NaN loses */
    }
    float amax = hmax8(vmax);
    if (!(amax > 0.0f)) {
        memset(q, 0, (size_t)d);
        if (sum)
            *sum = 0;
        return 0.0f;
    }
    __m256 inv = _mm256_set1_ps(127.0f / amax), rounder = _mm256_set1_ps(0x1.8p23f);
    __m256 hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
    __m256i total = _mm256_setzero_si256();
    for (int i = 0; i < d; i += 8) {
        __m256 v = _mm256_mul_ps(_mm256_maskload_ps(x + i, lanes_below(d - i)), inv);
        __m256 r = _mm256_sub_ps(_mm256_add_ps(v, rounder), rounder);
        /* clamped, and 0 where r is NaN (min/max would pass a NaN on as 127 or -127) */
        r = _mm256_and_ps(_mm256_max_ps(_mm256_min_ps(r, hi), lo), _mm256_cmp_ps(r, r, _CMP_ORD_Q));
        __m256i w = _mm256_cvtps_epi32(r);
        total = _mm256_add_epi32(total, w);
        __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(w, w), w); /* bytes 0-3 of each half */
        __m128i q8 = _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
        if (d - i >= 8)
            _mm_storel_epi64((__m128i *)(q + i), q8);
        else
            _mm_storeu_si32(q + i, q8);
    }
    if (sum) {
        __m128i t4 = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
        t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0x4e));
        t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0xb1));
        *sum = _mm_cvtsi128_si32(t4);
    }
    return amax / 127.0f;
}
#endif

/* e^x for the softmax over the int8 cache, in float: a fixed sequence of float
 * operations, fmaf for each fused step, which the SIMD kernels repeat lane by lane with
 * _mm512_fmadd_ps / _mm256_fmadd_ps (the same single rounding, whatever -ffp-contract
 * says). Within one ulp of expf, relative error below 1e-7 (test_attention measures
 * both): far under the int8 rounding of the keys and values it weighs, at a fraction of
 * the cost of attn_exp's double precision, which took a quarter of the kernel's time.
 *
 * x <= 0 here (scores minus their maximum). Below ATTN_Q8_EXP_MIN (and for NaN) the
 * result is 0: e^-87 ~ 1.6e-38 weighs nothing next to the maximum's 1, and the cut keeps
 * 2^k a normal float, built from its bits. */
#define ATTN_Q8_EXP_MIN (-87.0f)
#define ATTN_Q8_LOG2E 0x1.715476p+0f
/* ln 2 = ATTN_Q8_LN2_HI + ATTN_Q8_LN2_LO to about 2^-53 */
#define ATTN_Q8_LN2_HI 0x1.62e430p-1f
#define ATTN_Q8_LN2_LO (-0x1.05c610p-29f)
/* Adding 1.5 * 2^23 rounds a float of magnitude below 2^22 to an integer (ties to even)
 * and leaves that integer in the low mantissa bits. */
#define ATTN_Q8_ROUNDER 0x1.8p23f
/* e^r = 1 + r + r^2 (C2 + C3 r + ... + C6 r^4) on |r| <= ln2 / 2: the quartic
 * interpolates (e^r - 1 - r) / r^2 at the five Chebyshev nodes, relative error 1e-8 in
 * e^r before float rounding. */
#define ATTN_Q8_EXP_C2 0.5f
#define ATTN_Q8_EXP_C3 0x1.5554dep-3f
#define ATTN_Q8_EXP_C4 0x1.55551ap-5f
#define ATTN_Q8_EXP_C5 0x1.120b62p-7f
#define ATTN_Q8_EXP_C6 0x1.6d10fcp-10f

static inline float attn_q8_exp(float x)
{
    if (!(x >= ATTN_Q8_EXP_MIN))
        return 0.0f;
    /* k = round(x log2 e) in t's low bits, then x = k ln2 + r exactly but for r's rounding */
    float t = fmaf(x, ATTN_Q8_LOG2E, ATTN_Q8_ROUNDER);
    float k = t - ATTN_Q8_ROUNDER;
    float r = fmaf(k, -ATTN_Q8_LN2_HI, x);
    r = fmaf(k, -ATTN_Q8_LN2_LO, r);
    float p = fmaf(ATTN_Q8_EXP_C6, r, ATTN_Q8_EXP_C5);
    p = fmaf(p, r, ATTN_Q8_EXP_C4);
    p = fmaf(p, r, ATTN_Q8_EXP_C3);
    p = fmaf(p, r, ATTN_Q8_EXP_C2);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    /* 2^k from t's bits: k mod 2^9 shifted into the exponent field wraps to k << 23 mod
     * 2^32, and -126 <= k <= 0 keeps the biased exponent in 1..127 */
    uint32_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits << 23) + (127u << 23);
    float two_k;
    memcpy(&two_k, &bits, sizeof two_k);
    return p * two_k;
}

#endif

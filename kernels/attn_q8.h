/* The int8 KV cache's rounding and key layout (the contract: kernels.h, struct
 * attn_group_q8). One inline definition serves the forward pass, which fills the cache,
 * and every attention kernel, which quantizes its queries, so that no kernel set can
 * round a query differently from another. */
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

/* e^x for the attention softmax, defined so that every kernel set computes the same
 * float bit for bit: evaluated in double precision by a fixed sequence of IEEE
 * operations (no fused multiply-add: the Makefile builds with -ffp-contract=off and the
 * SIMD twins use separate multiplies and adds), then rounded to float once. Its error
 * before that rounding is below 1e-13 relative, so the float is the correctly rounded
 * e^x except within 1e-13 of a rounding boundary: what libm's expf gives, in practice.
 *
 * x <= 0 here (scores minus their maximum); below -120 the result rounds to 0 anyway,
 * so x is clamped there to keep 2^k a normal double. */
#ifndef BITNET_KERNELS_ATTN_EXP_H
#define BITNET_KERNELS_ATTN_EXP_H

#include <math.h>

#define ATTN_EXP_MIN (-120.0)
#define ATTN_LOG2E 1.4426950408889634
/* ln 2 split so that k * ATTN_LN2_HI is exact for |k| < 2^11 */
#define ATTN_LN2_HI 0x1.62e42fee00000p-1
#define ATTN_LN2_LO 0x1.a39ef35793c76p-33

/* Taylor coefficients 1/n!, n = 10 down to 2; |r| <= ln2/2 keeps the remainder below
 * 2.3e-13. */
#define ATTN_EXP_COEFFS                                                                  \
    {1.0 / 3628800, 1.0 / 362880, 1.0 / 40320, 1.0 / 5040, 1.0 / 720, 1.0 / 120,        \
     1.0 / 24, 1.0 / 6, 1.0 / 2}
#define ATTN_EXP_NCOEFF 9

static inline float attn_exp(float xf)
{
    static const double c[ATTN_EXP_NCOEFF] = ATTN_EXP_COEFFS;
    double x = (double)xf < ATTN_EXP_MIN ? ATTN_EXP_MIN : (double)xf;
    double k = nearbyint(x * ATTN_LOG2E);
    double r = x - k * ATTN_LN2_HI;
    r = r - k * ATTN_LN2_LO;
    double p = c[0];
    for (int i = 1; i < ATTN_EXP_NCOEFF; i++)
        p = p * r + c[i];
    p = p * r + 1.0;
    p = p * r + 1.0;
    return (float)ldexp(p, (int)k);
}

#endif

/* The int8 KV cache's rounding and key layout (the contract: kernels.h, struct
 * attn_group_q8). One inline definition serves the forward pass, which fills the cache,
 * and every attention kernel, which quantizes its queries, so that no kernel set can
 * round a query differently from another. */
#ifndef BITNET_KERNELS_ATTN_Q8_H
#define BITNET_KERNELS_ATTN_Q8_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

/* Where key element i of position p lies in the tiles of a head of size d. */
static inline size_t attn_q8_key_at(int p, int i, int d)
{
    return (size_t)(p / ATTN_TILE) * d * ATTN_TILE + (size_t)(i / 4) * 4 * ATTN_TILE +
           (size_t)(p % ATTN_TILE) * 4 + (size_t)(i % 4);
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

#endif

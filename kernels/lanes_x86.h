/* Lane helpers shared by the x86 kernel files: masks of the first lanes, the folding of
 * 16 lane sums that the attention contracts of kernels.h state, and vpdpbusd written out.
 * Each part exists only in files compiled for its instruction set (see the Makefile). */
#ifndef BITNET_KERNELS_LANES_X86_H
#define BITNET_KERNELS_LANES_X86_H

#include <immintrin.h>

#ifdef __AVX2__
/* All ones in lanes j < count, of 8. */
static inline __m256i lanes_below(int count)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* The largest of 8 lanes (max_ps's operand order: a NaN lane loses to a number in the
 * other operand, as in the reductions it replaced). */
static inline float hmax8(__m256 v)
{
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    return _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
}

/* Lanes 0-7 in lo and 8-15 in hi folded to one: halves, then quarters, down to one. */
static inline float fold16_256(__m256 lo, __m256 hi)
{
    __m256 s8 = _mm256_add_ps(lo, hi);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}
#endif

#ifdef __AVX512F__
/* The first count lanes of 16 (none for count <= 0). */
static inline __mmask16 first_lanes(int count)
{
    return count >= 16 ? (__mmask16)0xffff : count <= 0 ? 0 : (__mmask16)((1u << count) - 1);
}

/* 16 lanes folded as fold16_256 folds them. */
static inline float fold16_512(__m512 v)
{
    return fold16_256(_mm512_castps512_ps256(v),
                      _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}
#endif

#ifdef __AVX512VNNI__
/* acc + the u8 x s8 dot of u and s, 4 bytes to a lane. Written out because GCC 12 wraps the
 * intrinsic's tied accumulator in register copies and spills. */
static inline __m512i dpbusd(__m512i acc, __m512i u, __m512i s)
{
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u), "v"(s));
    return acc;
}

/* acc + the s16 x s16 dot of a and b, 2 words to a lane; written out for the same reason. */
static inline __m512i dpwssd(__m512i acc, __m512i a, __m512i b)
{
    __asm__("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
    return acc;
}
#endif

#endif

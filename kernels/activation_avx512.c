/* The activation kernels with AVX-512 (the residual add, the FFN gate, RMSNorm, int8
 * quantization, sums back to float): the scalar twins' arithmetic
 * (kernels/activation_scalar.c), bit for bit. Every layer runs four norms per token,
 * and in decode on one thread while the others wait, so the scalar loops (a serial chain
 * of double adds; a branchy rounding per element) cost more than their size suggests. */
#include <immintrin.h>

#include "kernels/activation.h"
#include "kernels/lanes_x86.h"

void dequant_avx512(float *out, const int32_t *in, int n, float k)
{
    const __m512 kv = _mm512_set1_ps(k);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = first_lanes(n - i);
        __m512 v = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(m, in + i));
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(v, kv));
    }
}

void add_rows_avx512(float *x, const float *y, int n)
{
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = first_lanes(n - i);
        _mm512_mask_storeu_ps(x + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, x + i),
                                                      _mm512_maskz_loadu_ps(m, y + i)));
    }
}

void relu2_mul_avx512(float *x, const float *y, int n)
{
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = first_lanes(n - i);
        /* max(x, 0) gives the second operand, 0, for NaN and for -0: the twin's x > 0 */
        __m512 r = _mm512_max_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_setzero_ps());
        _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_mul_ps(r, r), _mm512_maskz_loadu_ps(m, y + i)));
    }
}

void rmsnorm_avx512(float *out, const float *x, const float *weight, int n, float eps)
{
    /* lanes 0-7 and 8-15 of the twin: elements i..i+7 and i+8..i+15 of each 16 */
    __m512d lo = _mm512_setzero_pd(), hi = lo;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        __m512d a = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        __m512d b = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        lo = _mm512_add_pd(lo, _mm512_mul_pd(a, a));
        hi = _mm512_add_pd(hi, _mm512_mul_pd(b, b));
    }
    double lane[RMS_LANES];
    _mm512_storeu_pd(lane, lo);
    _mm512_storeu_pd(lane + 8, hi);
    for (; i < n; i++)
        lane[i % RMS_LANES] += (double)x[i] * x[i];
    __m512 scale = _mm512_set1_ps(rms_scale(lane, n, eps));
    for (i = 0; i < n; i += 16) {
        __mmask16 m = first_lanes(n - i);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), scale);
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, weight + i)));
    }
}

float quantize_act_avx512(const float *x, int n, int8_t *xq)
{
    const __m512 sign = _mm512_set1_ps(-0.0f);
    __m512 amax = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = first_lanes(n - i);
        /* max(a, amax) keeps amax when a is NaN, as the twin's comparison does */
        amax = _mm512_max_ps(_mm512_andnot_ps(sign, _mm512_maskz_loadu_ps(m, x + i)), amax);
    }
    float s = quant_scale(_mm512_reduce_max_ps(amax));
    const __m512 sv = _mm512_set1_ps(s);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = first_lanes(n - i);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), sv);
        /* the conversion rounds half to even (MXCSR's default) and saturating to int8 is
         * the clamp; NaN would come out as -128, the twin's 0 */
        __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        __m512i q = _mm512_maskz_cvtps_epi32((__mmask16)~nan, v);
        _mm_mask_storeu_epi8(xq + i, m, _mm512_cvtsepi32_epi8(q));
    }
    return s;
}

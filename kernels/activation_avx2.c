/* The activation kernels with AVX2 (the residual add, the FFN gate, RMSNorm, int8
 * quantization, sums back to float): the scalar twins' arithmetic
 * (kernels/activation_scalar.c), bit for bit; see activation_avx512.c for why. */
#include <immintrin.h>

#include "kernels/activation.h"

void dequant_avx2(float *out, const int32_t *in, int n, float k)
{
    const __m256 kv = _mm256_set1_ps(k);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(const void *)(in + i)));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(v, kv));
    }
    dequant_scalar(out + i, in + i, n - i, k);
}

void add_rows_avx2(float *x, const float *y, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    add_rows_scalar(x + i, y + i, n - i);
}

void relu2_mul_avx2(float *x, const float *y, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        /* max(x, 0) gives the second operand, 0, for NaN and for -0: the twin's x > 0 */
        __m256 r = _mm256_max_ps(_mm256_loadu_ps(x + i), _mm256_setzero_ps());
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_mul_ps(r, r), _mm256_loadu_ps(y + i)));
    }
    relu2_mul_scalar(x + i, y + i, n - i);
}

void rmsnorm_avx2(float *out, const float *x, const float *weight, int n, float eps)
{
    /* a[k] holds lanes 4k..4k+3 of the twin */
    __m256d a[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 4; k++) {
            __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4 * k));
            a[k] = _mm256_add_pd(a[k], _mm256_mul_pd(v, v));
        }
    double lane[RMS_LANES];
    for (int k = 0; k < 4; k++)
        _mm256_storeu_pd(lane + 4 * k, a[k]);
    for (; i < n; i++)
        lane[i % RMS_LANES] += (double)x[i] * x[i];
    float s = rms_scale(lane, n, eps);
    __m256 scale = _mm256_set1_ps(s);
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), scale);
        _mm256_storeu_ps(out + i, _mm256_mul_ps(v, _mm256_loadu_ps(weight + i)));
    }
    for (; i < n; i++)
        out[i] = x[i] * s * weight[i];
}

/* 8 floats times s to int32, rounded half to even; NaN lanes 0 as in the twin. */
static inline __m256i quant8(const float *x, __m256 s)
{
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x), s);
    __m256i q = _mm256_cvtps_epi32(v);
    return _mm256_andnot_si256(_mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)), q);
}

float quantize_act_avx2(const float *x, int n, int8_t *xq)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 amax = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8)
        amax = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + i)), amax);
    float m[8], top = 0.0f;
    _mm256_storeu_ps(m, amax);
    for (int k = 0; k < 8; k++)
        top = m[k] > top ? m[k] : top;
    for (; i < n; i++) {
        float a = fabsf(x[i]);
        top = a > top ? a : top;
    }
    float s = quant_scale(top);
    const __m256 sv = _mm256_set1_ps(s);
    /* the saturating packs are the clamp; they interleave 128-bit halves, which the
     * final permutation undoes */
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (i = 0; i + 32 <= n; i += 32) {
        __m256i ab = _mm256_packs_epi32(quant8(x + i, sv), quant8(x + i + 8, sv));
        __m256i cd = _mm256_packs_epi32(quant8(x + i + 16, sv), quant8(x + i + 24, sv));
        __m256i q = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), order);
        _mm256_storeu_si256((__m256i *)(xq + i), q);
    }
    for (; i < n; i++)
        xq[i] = quant_one(x[i], s);
    return s;
}

/* One attention head over an F16 KV cache with AVX2/F16C; the AVX-512 file says why it
 * is shaped this way. Head sizes that are not a multiple of 8 finish in scalar code. */
#include <immintrin.h>
#include <math.h>

#include "kernels/f16.h"
#include "kernels/kernels_x86.h"

/* e^x for x <= 0, as in attention_avx512.c; results below e^-87 are 0. */
static inline __m256 exp_neg256(__m256 x)
{
    const __m256 log2e = _mm256_set1_ps(1.44269504f);
    const __m256 ln2_hi = _mm256_set1_ps(0.693359375f), ln2_lo = _mm256_set1_ps(-2.12194440e-4f);
    __m256 tiny = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ);
    __m256 k = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, ln2_hi, x);
    r = _mm256_fnmadd_ps(k, ln2_lo, r);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    /* 2^k built in the exponent field; k >= -126 here because x >= -87 where it counts */
    __m256i ki = _mm256_cvtps_epi32(_mm256_max_ps(k, _mm256_set1_ps(-126.0f)));
    __m256 pow2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(ki, _mm256_set1_epi32(127)), 23));
    return _mm256_andnot_ps(tiny, _mm256_mul_ps(p, pow2));
}

static inline float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 8 cached F16 elements starting at element i, widened to float. */
static inline __m256 load_f16x8(const uint16_t *base, size_t i)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(base + i)));
}

void attn_head_f16_avx2(const float *q, int d, const uint16_t *k, const uint16_t *v, size_t stride,
                        int n, float scale, float *scratch, float *out)
{
    int dv = d / 8 * 8;
    float max = -INFINITY;
    for (int p = 0; p < n; p++) {
        size_t row = (size_t)p * stride;
        __m256 acc = _mm256_setzero_ps();
        for (int i = 0; i < dv; i += 8)
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load_f16x8(k, row + i), acc);
        float s = hsum256(acc);
        for (int i = dv; i < d; i++)
            s += q[i] * f16_to_f32(k[row + i]);
        s *= scale;
        scratch[p] = s;
        max = s > max ? s : max;
    }
    __m256 vmax = _mm256_set1_ps(max), vsum = _mm256_setzero_ps();
    int p = 0;
    for (; p + 8 <= n; p += 8) {
        __m256 e = exp_neg256(_mm256_sub_ps(_mm256_loadu_ps(scratch + p), vmax));
        _mm256_storeu_ps(scratch + p, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    float sum = hsum256(vsum);
    for (; p < n; p++) {
        scratch[p] = expf(scratch[p] - max);
        sum += scratch[p];
    }
    float inv = 1.0f / sum;
    for (int i0 = 0; i0 < dv; i0 += 64) {
        int nj = (dv - i0) / 8 < 8 ? (dv - i0) / 8 : 8;
        __m256 acc[8];
        for (int j = 0; j < nj; j++)
            acc[j] = _mm256_setzero_ps();
        for (int pp = 0; pp < n; pp++) {
            size_t row = (size_t)pp * stride + i0;
            __m256 a = _mm256_set1_ps(scratch[pp] * inv);
            for (int j = 0; j < nj; j++)
                acc[j] = _mm256_fmadd_ps(a, load_f16x8(v, row + 8 * j), acc[j]);
        }
        for (int j = 0; j < nj; j++)
            _mm256_storeu_ps(out + i0 + 8 * j, acc[j]);
    }
    for (int i = dv; i < d; i++) {
        float o = 0.0f;
        for (int pp = 0; pp < n; pp++)
            o += scratch[pp] * inv * f16_to_f32(v[(size_t)pp * stride + i]);
        out[i] = o;
    }
}

/* One attention head with AVX-512. Over an F16 cache: rows widened in registers and a
 * polynomial exp, so the softmax over thousands of positions costs no more than the dot
 * products. Over the F32 cache: the scalar twin's exact arithmetic (see below). */
#include <immintrin.h>
#include <math.h>

#include "kernels/kernels_x86.h"

/* e^x for x <= 0 (scores minus their max): 2^k * e^r with |r| <= ln2/2, degree-6
 * polynomial (relative error ~2e-7); below -87 the result is 0. */
static inline __m512 exp_neg512(__m512 x)
{
    const __m512 log2e = _mm512_set1_ps(1.44269504f);
    const __m512 ln2_hi = _mm512_set1_ps(0.693359375f), ln2_lo = _mm512_set1_ps(-2.12194440e-4f);
    __mmask16 tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_LT_OQ);
    __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT);
    __m512 r = _mm512_fnmadd_ps(k, ln2_hi, x);
    r = _mm512_fnmadd_ps(k, ln2_lo, r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_maskz_mov_ps((__mmask16)~tiny, _mm512_scalef_ps(p, k));
}

/* 16 cached F16 elements (those in m) starting at element i, widened to float. */
static inline __m512 load_f16x16(const uint16_t *base, size_t i, __mmask16 m)
{
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, base + i));
}

void attn_head_f16_avx512(const float *q, int d, const uint16_t *k, const uint16_t *v,
                          size_t stride, int n, float scale, float *scratch, float *out)
{
    /* q stays in registers for heads up to 256 wide; wider ones reload the rest */
    int nv = (d + 15) / 16;
    __mmask16 tail = (d % 16) ? (__mmask16)((1u << (d % 16)) - 1) : (__mmask16)0xffff;
    __m512 qv[16];
    int nq = nv < 16 ? nv : 16;
    for (int j = 0; j < nq; j++)
        qv[j] = _mm512_maskz_loadu_ps(j == nv - 1 ? tail : 0xffff, q + 16 * j);

    float max = -INFINITY;
    for (int p = 0; p < n; p++) {
        size_t row = (size_t)p * stride;
        __m512 acc = _mm512_setzero_ps();
        for (int j = 0; j < nv; j++) {
            __mmask16 m = j == nv - 1 ? tail : 0xffff;
            __m512 qj = j < 16 ? qv[j] : _mm512_maskz_loadu_ps(m, q + 16 * j);
            acc = _mm512_fmadd_ps(qj, load_f16x16(k, row + 16 * j, m), acc);
        }
        float s = _mm512_reduce_add_ps(acc) * scale;
        scratch[p] = s;
        max = s > max ? s : max;
    }

    __m512 vmax = _mm512_set1_ps(max), vsum = _mm512_setzero_ps();
    int p = 0;
    for (; p + 16 <= n; p += 16) {
        __m512 e = exp_neg512(_mm512_sub_ps(_mm512_loadu_ps(scratch + p), vmax));
        _mm512_storeu_ps(scratch + p, e);
        vsum = _mm512_add_ps(vsum, e);
    }
    if (p < n) {
        __mmask16 m = (__mmask16)((1u << (n - p)) - 1);
        __m512 e = exp_neg512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, scratch + p), vmax));
        e = _mm512_maskz_mov_ps(m, e);
        _mm512_mask_storeu_ps(scratch + p, m, e);
        vsum = _mm512_add_ps(vsum, e);
    }
    float inv = 1.0f / _mm512_reduce_add_ps(vsum);

    for (int j0 = 0; j0 < nv; j0 += 16) {
        int nj = nv - j0 < 16 ? nv - j0 : 16;
        __m512 acc[16];
        for (int j = 0; j < nj; j++)
            acc[j] = _mm512_setzero_ps();
        for (int pp = 0; pp < n; pp++) {
            size_t row = (size_t)pp * stride + 16 * j0;
            __m512 a = _mm512_set1_ps(scratch[pp] * inv);
            for (int j = 0; j < nj; j++) {
                __mmask16 m = j0 + j == nv - 1 ? tail : 0xffff;
                acc[j] = _mm512_fmadd_ps(a, load_f16x16(v, row + 16 * j, m), acc[j]);
            }
        }
        for (int j = 0; j < nj; j++)
            _mm512_mask_storeu_ps(out + 16 * (j0 + j), j0 + j == nv - 1 ? tail : 0xffff, acc[j]);
    }
}

/* The F32 cache is the default, and the third-party logits are checked through it. A
 * model with large activations puts some int8 roundings of the attention output within
 * 1e-4 of a tie, so any change of float order can flip one and move logits by more than
 * the tolerance. This kernel therefore does exactly the scalar twin's operations in the
 * scalar twin's order (products and sums rounded separately: the Makefile builds with
 * -ffp-contract=off): 16 positions at a time, one lane each, for the scores; libm expf
 * in order for the softmax; 16 head elements at a time for the weighted sum. It is
 * bit-identical to the scalar kernel and still several times faster. */
void attn_head_f32_avx512(const float *q, int d, const float *k, const float *v, size_t stride,
                          int n, float scale, float *scratch, float *out)
{
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i row_step = _mm512_mullo_epi32(lane, _mm512_set1_epi32((int)stride));
    const __m512 vscale = _mm512_set1_ps(scale);
    int p = 0;
    for (; p + 16 <= n; p += 16) {
        const float *base = k + (size_t)p * stride;
        __m512 dot = _mm512_setzero_ps();
        for (int i = 0; i < d; i++) {
            __m512 kv = _mm512_i32gather_ps(row_step, base + i, 4);
            dot = _mm512_add_ps(dot, _mm512_mul_ps(_mm512_set1_ps(q[i]), kv));
        }
        _mm512_storeu_ps(scratch + p, _mm512_mul_ps(dot, vscale));
    }
    for (; p < n; p++) {
        const float *kr = k + (size_t)p * stride;
        float dot = 0.0f;
        for (int i = 0; i < d; i++)
            dot += q[i] * kr[i];
        scratch[p] = dot * scale;
    }
    float max = -INFINITY;
    for (p = 0; p < n; p++)
        max = fmaxf(max, scratch[p]);
    float sum = 0.0f;
    for (p = 0; p < n; p++) {
        scratch[p] = expf(scratch[p] - max);
        sum += scratch[p];
    }
    float inv = 1.0f / sum;
    int nv = (d + 15) / 16;
    __mmask16 tail = (d % 16) ? (__mmask16)((1u << (d % 16)) - 1) : (__mmask16)0xffff;
    for (int j0 = 0; j0 < nv; j0 += 16) {
        int nj = nv - j0 < 16 ? nv - j0 : 16;
        __m512 acc[16];
        for (int j = 0; j < nj; j++)
            acc[j] = _mm512_setzero_ps();
        for (p = 0; p < n; p++) {
            const float *vr = v + (size_t)p * stride + 16 * j0;
            __m512 a = _mm512_set1_ps(scratch[p] * inv);
            for (int j = 0; j < nj; j++) {
                __mmask16 m = j0 + j == nv - 1 ? tail : 0xffff;
                acc[j] = _mm512_add_ps(acc[j], _mm512_mul_ps(a, _mm512_maskz_loadu_ps(m, vr + 16 * j)));
            }
        }
        for (int j = 0; j < nj; j++)
            _mm512_mask_storeu_ps(out + 16 * (j0 + j), j0 + j == nv - 1 ? tail : 0xffff, acc[j]);
    }
}

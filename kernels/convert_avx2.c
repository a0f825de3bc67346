/* Dense rows to int8 rows (the --lm-head q8 copy) with F16C: the whole 128256 x 2560
 * embedding is converted at load, so this sets the load time. Other types widen through
 * the scalar row conversion; the quantization itself is vectorized and rounds exactly as
 * the scalar twin does (half to even on the same float products). */
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>

#include "kernels/kernels_x86.h"
#include "model/ggml_types.h"

void dense_rows_to_q8_avx2(const struct dense_matrix *m, int r0, int r1, int8_t *q, float *scale,
                           int32_t *row_sum)
{
    int cols = m->cols;
    float *row = aligned_alloc(32, ((size_t)cols * sizeof(float) + 31) / 32 * 32);
    if (!row) {
        kernels_scalar.dense_rows_to_q8(m, r0, r1, q, scale, row_sum);
        return;
    }
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int r = r0; r < r1; r++) {
        const uint8_t *src = m->data + (size_t)r * m->row_bytes;
        int c = 0;
        if (m->type == GGML_TYPE_F16) {
            for (; c + 8 <= cols; c += 8)
                _mm256_store_ps(row + c, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(src + 2 * c))));
            for (; c < cols; c++)
                row[c] = _cvtsh_ss((unsigned short)(src[2 * c] | (src[2 * c + 1] << 8)));
        } else {
            dense_row_to_f32(m, r, row);
        }
        __m256 vmax = _mm256_setzero_ps();
        for (c = 0; c + 8 <= cols; c += 8)
            vmax = _mm256_max_ps(vmax, _mm256_and_ps(_mm256_load_ps(row + c), absmask));
        float lanes[8];
        _mm256_storeu_ps(lanes, vmax);
        float amax = 0.0f;
        for (int i = 0; i < 8; i++)
            amax = fmaxf(amax, lanes[i]);
        for (; c < cols; c++)
            amax = fmaxf(amax, fabsf(row[c]));
        float d = amax / 127.0f, inv = d > 0.0f ? 127.0f / amax : 0.0f;
        __m256 vinv = _mm256_set1_ps(inv);
        int8_t *qr = q + (size_t)r * cols;
        __m256i vsum = _mm256_setzero_si256();
        for (c = 0; c + 8 <= cols; c += 8) {
            __m256i qi = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_load_ps(row + c), vinv),
                                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            vsum = _mm256_add_epi32(vsum, qi);
            __m128i lo = _mm256_castsi256_si128(qi), hi = _mm256_extracti128_si256(qi, 1);
            __m128i w16 = _mm_packs_epi32(lo, hi);
            _mm_storel_epi64((__m128i *)(void *)(qr + c), _mm_packs_epi16(w16, w16));
        }
        int32_t sums[8];
        _mm256_storeu_si256((__m256i *)(void *)sums, vsum);
        int32_t sum = 0;
        for (int i = 0; i < 8; i++)
            sum += sums[i];
        for (; c < cols; c++) {
            qr[c] = (int8_t)rintf(row[c] * inv);
            sum += qr[c];
        }
        scale[r] = d;
        row_sum[r] = sum;
    }
    free(row);
}

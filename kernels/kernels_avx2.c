/* Decode kernels for AVX2 + FMA + F16C: ternary and int8 row dots, dense rows through
 * F16C conversion and FMA.
 *
 * Decode is a matrix-vector product: every weight byte is used once, so these kernels
 * only have to keep memory busy. They work on four rows at a time (one load of x serves
 * all four), on named accumulators that fit the 16 ymm registers without spilling. */
#include <immintrin.h>
#include <stdint.h>

#include "kernels/f16.h"
#include "kernels/kernels.h"
#include "kernels/kernels_x86.h"
#include "model/ggml_types.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))
#include "kernels/row_walk.h"

static int32_t hsum_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

static float hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* sum(x) over n int8 (n a multiple of 32), for the offset correction of the I2_S codes. */
static int32_t sum_i8(const int8_t *x, int n)
{
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    __m256i acc = _mm256_setzero_si256();
    for (int c = 0; c < n; c += 32) {
        __m256i p = _mm256_maddubs_epi16(ones8, _mm256_loadu_si256((const void *)(x + c)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones16));
    }
    return hsum_epi32(acc);
}

/* ---------------------------------------------------------------- I2_S */

/* One 32-byte block of codes (value + 1, in 0..2: unsigned, as vpmaddubsw wants) against
 * the four 32-byte planes of x at xb. Shifted into place, each plane's codes stay small,
 * so all four products fit one int16 accumulator: a lane moves by at most
 * 4 * 2 * 2 * 128 = 2048 a block, and I2S_FLUSH blocks stay within int16. With 16 ymm
 * registers, one accumulator per row (plus its int32 total) is what four rows afford. */
#define I2S_FLUSH 16
#define I2S_BLOCK(a, wp, xb)                                                              \
    do {                                                                                  \
        __m256i w_ = _mm256_loadu_si256((const void *)(wp));                              \
        __m256i p3_ = _mm256_maddubs_epi16(_mm256_and_si256(w_, m3),                      \
                                           _mm256_loadu_si256((const void *)((xb) + 96))); \
        __m256i p2_ = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w_, 2), m3), \
                                           _mm256_loadu_si256((const void *)((xb) + 64))); \
        __m256i p1_ = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w_, 4), m3), \
                                           _mm256_loadu_si256((const void *)((xb) + 32))); \
        __m256i p0_ = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(w_, 6), m3), \
                                           _mm256_loadu_si256((const void *)(xb)));        \
        a = _mm256_add_epi16(a, _mm256_add_epi16(_mm256_add_epi16(p0_, p1_),               \
                                                 _mm256_add_epi16(p2_, p3_)));            \
    } while (0)

#define I2S_WIDEN(acc, a) acc = _mm256_add_epi32(acc, _mm256_madd_epi16(a, ones))

static void i2s_rows4(const uint8_t *w0, const uint8_t *w1, const uint8_t *w2, const uint8_t *w3,
                      size_t rb, const int8_t *xq, int nblk, int32_t dot[4])
{
    const __m256i m3 = _mm256_set1_epi8(0x03), ones = _mm256_set1_epi16(1);
    __m256i t0 = _mm256_setzero_si256(), t1 = t0, t2 = t0, t3 = t0;
    for (int b0 = 0; b0 < nblk; b0 += I2S_FLUSH) {
        int b1 = b0 + I2S_FLUSH < nblk ? b0 + I2S_FLUSH : nblk;
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
        for (int b = b0; b < b1; b++) {
            const int8_t *xb = xq + b * 128;
            if (b % 2 == 0) {
                PF_NEXT_ROW(w0 + b * 32, rb);
                PF_NEXT_ROW(w1 + b * 32, rb);
                PF_NEXT_ROW(w2 + b * 32, rb);
                PF_NEXT_ROW(w3 + b * 32, rb);
            }
            I2S_BLOCK(a0, w0 + b * 32, xb);
            I2S_BLOCK(a1, w1 + b * 32, xb);
            I2S_BLOCK(a2, w2 + b * 32, xb);
            I2S_BLOCK(a3, w3 + b * 32, xb);
        }
        I2S_WIDEN(t0, a0);
        I2S_WIDEN(t1, a1);
        I2S_WIDEN(t2, a2);
        I2S_WIDEN(t3, a3);
    }
    dot[0] = hsum_epi32(t0);
    dot[1] = hsum_epi32(t1);
    dot[2] = hsum_epi32(t2);
    dot[3] = hsum_epi32(t3);
}

static int32_t i2s_row1(const uint8_t *w0, const int8_t *xq, int nblk)
{
    const __m256i m3 = _mm256_set1_epi8(0x03), ones = _mm256_set1_epi16(1);
    __m256i t0 = _mm256_setzero_si256();
    for (int b0 = 0; b0 < nblk; b0 += I2S_FLUSH) {
        int b1 = b0 + I2S_FLUSH < nblk ? b0 + I2S_FLUSH : nblk;
        __m256i a0 = _mm256_setzero_si256();
        for (int b = b0; b < b1; b++)
            I2S_BLOCK(a0, w0 + b * 32, xq + b * 128);
        I2S_WIDEN(t0, a0);
    }
    return hsum_epi32(t0);
}

static void i2s_dot_rows_avx2(const struct ternary_matrix *w, const int8_t *xq, int r0, int r1,
                              int32_t *out)
{
    if (r0 >= r1)
        return;
    int nblk = w->cols / 128;
    size_t rb = w->row_bytes;
    /* codes are value + 1: sum((code - 1) * x) = sum(code * x) - sum(x) */
    uint32_t sumx = (uint32_t)sum_i8(xq, nblk * 128);
    struct row_walk it;
    row_walk_init(&it, r0, r1, kops.row_streams);
    int rr[4], n;
    int32_t dot[4];
    while ((n = row_walk_next(&it, rr)) != 0) {
        if (n == 4)
            i2s_rows4(w->data + (size_t)rr[0] * rb, w->data + (size_t)rr[1] * rb,
                      w->data + (size_t)rr[2] * rb, w->data + (size_t)rr[3] * rb, rb, xq, nblk, dot);
        else
            dot[0] = i2s_row1(w->data + (size_t)rr[0] * rb, xq, nblk);
        for (int k = 0; k < n; k++)
            out[rr[k]] = (int32_t)((uint32_t)dot[k] - sumx);
    }
}

/* ---------------------------------------------------------------- Q8 (int8 x int8) */

/* Both operands are signed and may be -128, so neither the sign trick (|-128| does not
 * fit) nor an unsigned offset (255 * 128 * 2 saturates int16) is exact with vpmaddubsw.
 * Widening to int16 and vpmaddwd is: products fit int32 with room to spare. */
#define Q8_STEP(acc, p)                                                                   \
    acc = _mm256_add_epi32(                                                               \
        acc, _mm256_add_epi32(                                                            \
                 _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const void *)(p))), x0), \
                 _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const void *)((p) + 16))), x1)))

static void q8_rows4(const int8_t *q0, const int8_t *q1, const int8_t *q2, const int8_t *q3,
                     int cols, const int8_t *xq, int32_t dot[4])
{
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (int c = 0; c + 32 <= cols; c += 32) {
        __m256i x0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const void *)(xq + c)));
        __m256i x1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const void *)(xq + c + 16)));
        if (c % 64 == 0) {
            PF_NEXT_ROW(q0 + c, cols);
            PF_NEXT_ROW(q1 + c, cols);
            PF_NEXT_ROW(q2 + c, cols);
            PF_NEXT_ROW(q3 + c, cols);
        }
        Q8_STEP(a0, q0 + c);
        Q8_STEP(a1, q1 + c);
        Q8_STEP(a2, q2 + c);
        Q8_STEP(a3, q3 + c);
    }
    dot[0] = hsum_epi32(a0);
    dot[1] = hsum_epi32(a1);
    dot[2] = hsum_epi32(a2);
    dot[3] = hsum_epi32(a3);
}

static int32_t q8_row1(const int8_t *q0, int cols, const int8_t *xq)
{
    __m256i a0 = _mm256_setzero_si256();
    for (int c = 0; c + 32 <= cols; c += 32) {
        __m256i x0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const void *)(xq + c)));
        __m256i x1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const void *)(xq + c + 16)));
        Q8_STEP(a0, q0 + c);
    }
    return hsum_epi32(a0);
}

static void q8_dot_rows_avx2(const struct q8_matrix *m, const int8_t *xq, int r0, int r1,
                             int32_t *out)
{
    int cols = m->cols, main = cols / 32 * 32;
    struct row_walk it;
    row_walk_init(&it, r0, r1, kops.row_streams);
    int rr[4], n;
    int32_t dot[4];
    while ((n = row_walk_next(&it, rr)) != 0) {
        if (n == 4)
            q8_rows4(m->q + (size_t)rr[0] * cols, m->q + (size_t)rr[1] * cols,
                     m->q + (size_t)rr[2] * cols, m->q + (size_t)rr[3] * cols, cols, xq, dot);
        else
            dot[0] = q8_row1(m->q + (size_t)rr[0] * cols, cols, xq);
        for (int k = 0; k < n; k++) {
            /* uint32, so that a sum that wraps does so as the scalar twin's would; the
             * loop covers columns that are not a multiple of 32 */
            uint32_t s = (uint32_t)dot[k];
            const int8_t *q = m->q + (size_t)rr[k] * cols;
            for (int c = main; c < cols; c++)
                s += (uint32_t)(q[c] * xq[c]);
            out[rr[k]] = (int32_t)s;
        }
    }
}

/* ---------------------------------------------------------------- dense */

/* 8 weights of a F32/F16/BF16 row from column c, as floats. */
ALWAYS_INLINE __m256 dense_load8(uint32_t type, const uint8_t *row, int c)
{
    switch (type) {
    case GGML_TYPE_F32:
        return _mm256_loadu_ps((const float *)(const void *)(row + 4 * c));
    case GGML_TYPE_F16:
        return _mm256_cvtph_ps(_mm_loadu_si128((const void *)(row + 2 * c)));
    default: /* BF16: the top half of a float */
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const void *)(row + 2 * c))), 16));
    }
}

ALWAYS_INLINE float dense_scalar(uint32_t type, const uint8_t *row, int c)
{
    if (type == GGML_TYPE_F32) {
        float f;
        __builtin_memcpy(&f, row + 4 * c, 4);
        return f;
    }
    uint16_t h = (uint16_t)(row[2 * c] | row[2 * c + 1] << 8);
    return type == GGML_TYPE_F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

/* Two accumulators per row (16 columns a step): eight FMA chains over four rows. */
#define DENSE_STEP(a, b, p)                                                               \
    do {                                                                                  \
        if (esz == 4 || c % 32 == 0)                                                      \
            PF_NEXT_ROW((p) + c * esz, rb);                                               \
        a = _mm256_fmadd_ps(dense_load8(type, p, c), x0, a);                              \
        b = _mm256_fmadd_ps(dense_load8(type, p, c + 8), x1, b);                          \
    } while (0)

/* Columns past the last multiple of 8, one at a time. */
ALWAYS_INLINE float dense_tail(uint32_t type, const uint8_t *p, const float *x, int c, int cols)
{
    float s = 0.0f;
    for (; c < cols; c++)
        s += dense_scalar(type, p, c) * x[c];
    return s;
}

ALWAYS_INLINE void dense_rows4(uint32_t type, const uint8_t *p0, const uint8_t *p1,
                               const uint8_t *p2, const uint8_t *p3, size_t rb, const float *x,
                               int cols, float out[4])
{
    const int esz = type == GGML_TYPE_F32 ? 4 : 2;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    int c = 0;
    for (; c + 16 <= cols; c += 16) {
        __m256 x0 = _mm256_loadu_ps(x + c), x1 = _mm256_loadu_ps(x + c + 8);
        DENSE_STEP(a0, b0, p0);
        DENSE_STEP(a1, b1, p1);
        DENSE_STEP(a2, b2, p2);
        DENSE_STEP(a3, b3, p3);
    }
    if (c + 8 <= cols) {
        __m256 x0 = _mm256_loadu_ps(x + c);
        a0 = _mm256_fmadd_ps(dense_load8(type, p0, c), x0, a0);
        a1 = _mm256_fmadd_ps(dense_load8(type, p1, c), x0, a1);
        a2 = _mm256_fmadd_ps(dense_load8(type, p2, c), x0, a2);
        a3 = _mm256_fmadd_ps(dense_load8(type, p3, c), x0, a3);
        c += 8;
    }
    out[0] = hsum_ps(_mm256_add_ps(a0, b0)) + dense_tail(type, p0, x, c, cols);
    out[1] = hsum_ps(_mm256_add_ps(a1, b1)) + dense_tail(type, p1, x, c, cols);
    out[2] = hsum_ps(_mm256_add_ps(a2, b2)) + dense_tail(type, p2, x, c, cols);
    out[3] = hsum_ps(_mm256_add_ps(a3, b3)) + dense_tail(type, p3, x, c, cols);
}

ALWAYS_INLINE float dense_row1(uint32_t type, const uint8_t *p0, const float *x, int cols)
{
    __m256 a0 = _mm256_setzero_ps(), b0 = a0;
    int c = 0;
    for (; c + 16 <= cols; c += 16) {
        a0 = _mm256_fmadd_ps(dense_load8(type, p0, c), _mm256_loadu_ps(x + c), a0);
        b0 = _mm256_fmadd_ps(dense_load8(type, p0, c + 8), _mm256_loadu_ps(x + c + 8), b0);
    }
    if (c + 8 <= cols) {
        a0 = _mm256_fmadd_ps(dense_load8(type, p0, c), _mm256_loadu_ps(x + c), a0);
        c += 8;
    }
    return hsum_ps(_mm256_add_ps(a0, b0)) + dense_tail(type, p0, x, c, cols);
}

/* Q8_0 blocks: 32 int8 with an f16 scale. The block's dot is formed in float and scaled
 * once; dense_row_to_f32 rounds d * q first, a difference far inside the tolerance. */
ALWAYS_INLINE __m256 q8_0_block(const uint8_t *blk, const float *xb, __m256 acc)
{
    __m256 t = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        __m256 wv = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const void *)(blk + 2 + 8 * k))));
        t = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xb + 8 * k), t);
    }
    float d = _cvtsh_ss((unsigned short)(blk[0] | blk[1] << 8));
    return _mm256_fmadd_ps(t, _mm256_set1_ps(d), acc);
}

ALWAYS_INLINE void q8_0_rows4(uint32_t type, const uint8_t *p0, const uint8_t *p1,
                              const uint8_t *p2, const uint8_t *p3, size_t rb, const float *x,
                              int cols, float out[4])
{
    (void)type;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int b = 0; b < cols / QK8_0; b++) {
        size_t o = (size_t)b * Q8_0_BYTES;
        const float *xb = x + b * QK8_0;
        PF_NEXT_ROW(p0 + o, rb);
        PF_NEXT_ROW(p1 + o, rb);
        PF_NEXT_ROW(p2 + o, rb);
        PF_NEXT_ROW(p3 + o, rb);
        a0 = q8_0_block(p0 + o, xb, a0);
        a1 = q8_0_block(p1 + o, xb, a1);
        a2 = q8_0_block(p2 + o, xb, a2);
        a3 = q8_0_block(p3 + o, xb, a3);
    }
    out[0] = hsum_ps(a0);
    out[1] = hsum_ps(a1);
    out[2] = hsum_ps(a2);
    out[3] = hsum_ps(a3);
}

ALWAYS_INLINE float q8_0_row1(uint32_t type, const uint8_t *p0, const float *x, int cols)
{
    (void)type;
    __m256 a0 = _mm256_setzero_ps();
    for (int b = 0; b < cols / QK8_0; b++)
        a0 = q8_0_block(p0 + (size_t)b * Q8_0_BYTES, x + b * QK8_0, a0);
    return hsum_ps(a0);
}

/* One driver per type (kernels/row_walk.h), so the type switch in dense_load8 folds away. */
DENSE_DOT_ROWS(dense_dot_rows_avx2)

const struct kernel_ops kernels_avx2 = {
    .name = "avx2",
    .i2s_dot_rows = i2s_dot_rows_avx2,
    .dense_dot_rows = dense_dot_rows_avx2,
    .q8_dot_rows = q8_dot_rows_avx2,
};

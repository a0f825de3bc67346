/* Decode kernels for AVX-512 (F/BW/VL + VNNI): ternary and int8 row dots on vpdpbusd,
 * dense rows through 512-bit half/bfloat16 conversion and FMA.
 *
 * Decode is a matrix-vector product: every weight byte is used once, so these kernels
 * only have to keep memory busy. They work on four rows at a time (one load of x serves
 * all four), on named accumulators so that the multiply-add latency never stalls. */
#include <immintrin.h>
#include <stdint.h>

#include "kernels/kernels.h"
#include "kernels/kernels_x86.h"
#include "model/ggml_types.h"

#define ALWAYS_INLINE static inline __attribute__((always_inline))

#include "kernels/row_walk.h"
#include "kernels/lanes_x86.h"

/* The sum of n int8 activations: the kernels multiply unsigned codes (value + 1, or
 * q + 128) and take the offset times sum(x) off once per row. */
static int32_t sum_i8(const int8_t *x, int n)
{
    const __m512i ones = _mm512_set1_epi8(1);
    __m512i acc = _mm512_setzero_si512();
    int c = 0;
    for (; c + 64 <= n; c += 64)
        acc = dpbusd(acc, ones, _mm512_loadu_si512(x + c));
    if (c < n) {
        __mmask64 m = (1ull << (n - c)) - 1; /* n - c < 64 */
        acc = dpbusd(acc, ones, _mm512_maskz_loadu_epi8(m, x + c));
    }
    return _mm512_reduce_add_epi32(acc);
}

/* ---------------------------------------------------------------- I2_S */

/* Columns are taken in chunks of this many (a multiple of 256), so the arranged copy of
 * x below lives on the stack; 2B-4T rows (2560, 6912) are one chunk. */
#define I2S_CHUNK 8192

/* x arranged like 64-byte loads of codes. One load covers the block pair (b, b+1); plane
 * j (the codes of bits 7-6, 5-4, 3-2, 1-0) pairs with x[b*128 + 32j ..] in its low half
 * and x[(b+1)*128 + 32j ..] in its high half, stored at xa[pair*256 + 64j]. A lone last
 * block gets a zero high half. Done once per call, so the row loop needs one aligned
 * load per plane and no shuffles. */
static void i2s_arrange_x(const int8_t *x, int nblk, int8_t *xa)
{
    for (int b = 0; b < nblk; b += 2)
        for (int j = 0; j < 4; j++) {
            __m256i lo = _mm256_loadu_si256((const void *)(x + b * 128 + 32 * j));
            __m256i hi = b + 1 < nblk ? _mm256_loadu_si256((const void *)(x + (b + 1) * 128 + 32 * j))
                                      : _mm256_setzero_si256();
            _mm512_store_si512(xa + b * 128 + 64 * j, _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
        }
}

/* Masking a code byte with 0xc0, 0x30, 0x0c or 0x03 leaves code_j << (6 - 2j) in place,
 * so no shifts are needed: each plane gets its own accumulator, scaled down at the end
 * (exactly, since every lane is a multiple of its scale). The empty asm keeps w in a
 * register; otherwise the compiler folds the load into all four ands. Accumulators are
 * named variables, not arrays: GCC shuffles arrays of vectors between registers. */
#define I2S_STEP(a0, a1, a2, a3, wv, x0, x1, x2, x3)                                        \
    do {                                                                                  \
        __m512i w_ = (wv);                                                                \
        __asm__("" : "+v"(w_));                                                           \
        a0 = dpbusd(a0, _mm512_and_si512(w_, m0), x0);                                    \
        a1 = dpbusd(a1, _mm512_and_si512(w_, m1), x1);                                    \
        a2 = dpbusd(a2, _mm512_and_si512(w_, m2), x2);                                    \
        a3 = dpbusd(a3, _mm512_and_si512(w_, m3), x3);                                    \
    } while (0)

/* The four x planes of the block pair at xp. */
#define I2S_LOAD_X(xp)                                                                    \
    const __m512i x0 = _mm512_load_si512(xp), x1 = _mm512_load_si512((xp) + 64),          \
                  x2 = _mm512_load_si512((xp) + 128), x3 = _mm512_load_si512((xp) + 192)

#define I2S_MASKS                                                                         \
    const __m512i m0 = _mm512_set1_epi8((char)0xc0), m1 = _mm512_set1_epi8(0x30),           \
                  m2 = _mm512_set1_epi8(0x0c), m3 = _mm512_set1_epi8(0x03)

static inline int32_t i2s_finish(__m512i a0, __m512i a1, __m512i a2, __m512i a3)
{
    __m512i t = _mm512_add_epi32(_mm512_srai_epi32(a0, 6), _mm512_srai_epi32(a1, 4));
    t = _mm512_add_epi32(t, _mm512_srai_epi32(a2, 2));
    return _mm512_reduce_add_epi32(_mm512_add_epi32(t, a3));
}

/* A lone last block: loaded as 32 bytes, the high half zero (as is x's there). */
static inline __m512i i2s_load_half(const uint8_t *p)
{
    return _mm512_zextsi256_si512(_mm256_loadu_si256((const void *)p));
}

/* sum_c code[r][c] * x[c] over nblk blocks, for four rows (each also prefetching the row
 * after it). */
static void i2s_rows4(const uint8_t *w0, const uint8_t *w1, const uint8_t *w2, const uint8_t *w3,
                      size_t rb, const int8_t *xa, int nblk, int32_t dot[4])
{
    I2S_MASKS;
    __m512i a00 = _mm512_setzero_si512(), a01 = a00, a02 = a00, a03 = a00;
    __m512i a10 = a00, a11 = a00, a12 = a00, a13 = a00;
    __m512i a20 = a00, a21 = a00, a22 = a00, a23 = a00;
    __m512i a30 = a00, a31 = a00, a32 = a00, a33 = a00;
    int b = 0;
    for (; b + 2 <= nblk; b += 2) {
        I2S_LOAD_X(xa + b * 128);
        PF_NEXT_ROW(w0 + b * 32, rb);
        PF_NEXT_ROW(w1 + b * 32, rb);
        PF_NEXT_ROW(w2 + b * 32, rb);
        PF_NEXT_ROW(w3 + b * 32, rb);
        I2S_STEP(a00, a01, a02, a03, _mm512_loadu_si512(w0 + b * 32), x0, x1, x2, x3);
        I2S_STEP(a10, a11, a12, a13, _mm512_loadu_si512(w1 + b * 32), x0, x1, x2, x3);
        I2S_STEP(a20, a21, a22, a23, _mm512_loadu_si512(w2 + b * 32), x0, x1, x2, x3);
        I2S_STEP(a30, a31, a32, a33, _mm512_loadu_si512(w3 + b * 32), x0, x1, x2, x3);
    }
    if (b < nblk) {
        I2S_LOAD_X(xa + b * 128);
        I2S_STEP(a00, a01, a02, a03, i2s_load_half(w0 + b * 32), x0, x1, x2, x3);
        I2S_STEP(a10, a11, a12, a13, i2s_load_half(w1 + b * 32), x0, x1, x2, x3);
        I2S_STEP(a20, a21, a22, a23, i2s_load_half(w2 + b * 32), x0, x1, x2, x3);
        I2S_STEP(a30, a31, a32, a33, i2s_load_half(w3 + b * 32), x0, x1, x2, x3);
    }
    dot[0] = i2s_finish(a00, a01, a02, a03);
    dot[1] = i2s_finish(a10, a11, a12, a13);
    dot[2] = i2s_finish(a20, a21, a22, a23);
    dot[3] = i2s_finish(a30, a31, a32, a33);
}

/* One row (the few left over): two pairs a step on eight accumulators, so the
 * multiply-add chains overlap. */
static int32_t i2s_row1(const uint8_t *w0, const int8_t *xa, int nblk)
{
    I2S_MASKS;
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    __m512i b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    int b = 0;
    for (; b + 4 <= nblk; b += 4) {
        {
            I2S_LOAD_X(xa + b * 128);
            I2S_STEP(a0, a1, a2, a3, _mm512_loadu_si512(w0 + b * 32), x0, x1, x2, x3);
        }
        I2S_LOAD_X(xa + b * 128 + 256);
        I2S_STEP(b0, b1, b2, b3, _mm512_loadu_si512(w0 + b * 32 + 64), x0, x1, x2, x3);
    }
    if (b + 2 <= nblk) {
        I2S_LOAD_X(xa + b * 128);
        I2S_STEP(a0, a1, a2, a3, _mm512_loadu_si512(w0 + b * 32), x0, x1, x2, x3);
        b += 2;
    }
    if (b < nblk) {
        I2S_LOAD_X(xa + b * 128);
        I2S_STEP(b0, b1, b2, b3, i2s_load_half(w0 + b * 32), x0, x1, x2, x3);
    }
    return i2s_finish(_mm512_add_epi32(a0, b0), _mm512_add_epi32(a1, b1), _mm512_add_epi32(a2, b2),
                      _mm512_add_epi32(a3, b3));
}

static void i2s_dot_rows_avx512(const struct ternary_matrix *w, const int8_t *xq, int r0, int r1,
                                int32_t *out)
{
    _Alignas(64) int8_t xa[I2S_CHUNK];
    size_t rb = w->row_bytes;
    for (int c0 = 0; c0 < w->cols && r0 < r1; c0 += I2S_CHUNK) {
        int nblk = (w->cols - c0 < I2S_CHUNK ? w->cols - c0 : I2S_CHUNK) / 128;
        i2s_arrange_x(xq + c0, nblk, xa);
        /* codes are value + 1: sum((code - 1) * x) = sum(code * x) - sum(x) */
        uint32_t sumx = (uint32_t)sum_i8(xq + c0, nblk * 128);
        const uint8_t *base = w->data + (size_t)c0 / 4;
        struct row_walk it;
        row_walk_init(&it, r0, r1, kops.row_streams);
        int rr[4], n;
        int32_t dot[4];
        while ((n = row_walk_next(&it, rr)) != 0) {
            if (n == 4)
                i2s_rows4(base + (size_t)rr[0] * rb, base + (size_t)rr[1] * rb,
                          base + (size_t)rr[2] * rb, base + (size_t)rr[3] * rb, rb, xa, nblk, dot);
            else
                dot[0] = i2s_row1(base + (size_t)rr[0] * rb, xa, nblk);
            /* uint32: a later chunk adds to the earlier ones, wrapping as the scalar would */
            for (int k = 0; k < n; k++)
                out[rr[k]] = (int32_t)((c0 ? (uint32_t)out[rr[k]] : 0) + (uint32_t)dot[k] - sumx);
        }
    }
}

/* ---------------------------------------------------------------- I2_S, several vectors */

/* Plane j of the codes moved up to bits 7-6 (a 16-bit shift: what crosses into the next
 * byte is masked off), so that every plane is code * 64 and one accumulator per row and
 * vector takes all four; i2s_finish scales it down as its first plane. Three shifts more
 * than masking in place, but shared by every vector of a group, and they free the
 * registers of three accumulators per row and vector: four rows by four vectors fit.
 * A lane gains at most 16 * 3 * 64 * 128 < 2^19 per block pair, so a chunk's 32 pairs
 * stay exact in int32. */
ALWAYS_INLINE __m512i i2s_plane_hi(__m512i w, const int j)
{
    return _mm512_and_si512(j ? _mm512_slli_epi16(w, 2 * j) : w, _mm512_set1_epi8((char)0xc0));
}

/* One block pair of NR rows (their code loads in wv) against NX vectors whose arranged x
 * lie lda bytes apart from xb: each plane is made once and meets every vector. */
ALWAYS_INLINE void i2s_multi_step(__m512i a[4][4], __m512i wv[4], const int NR, const int8_t *xb,
                                  size_t lda, const int NX)
{
#pragma GCC unroll 4
    for (int k = 0; k < NR; k++)
        __asm__("" : "+v"(wv[k])); /* one load per row, not one per plane */
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
        __m512i p[4];
#pragma GCC unroll 4
        for (int k = 0; k < NR; k++)
            p[k] = i2s_plane_hi(wv[k], j);
#pragma GCC unroll 4
        for (int t = 0; t < NX; t++) {
            __m512i xv = _mm512_load_si512(xb + t * lda + 64 * j);
#pragma GCC unroll 4
            for (int k = 0; k < NR; k++)
                a[k][t] = dpbusd(a[k][t], p[k], xv);
        }
    }
}

/* sum_c code[r][c] * x_t[c] over nblk blocks for NR rows (1 or 4, each also prefetching
 * the row after it) and NX vectors (1..4). */
ALWAYS_INLINE void i2s_rows_multi(const uint8_t *const w[4], const int NR, size_t rb,
                                  const int8_t *xa, size_t lda, const int NX, int nblk,
                                  int32_t dot[4][4])
{
    __m512i a[4][4], wv[4];
#pragma GCC unroll 4
    for (int k = 0; k < NR; k++)
#pragma GCC unroll 4
        for (int t = 0; t < NX; t++)
            a[k][t] = _mm512_setzero_si512();
    int b = 0;
    for (; b + 2 <= nblk; b += 2) {
#pragma GCC unroll 4
        for (int k = 0; k < NR; k++) {
            PF_AHEAD(w[k] + b * 32, rb);
            wv[k] = _mm512_loadu_si512(w[k] + b * 32);
        }
        i2s_multi_step(a, wv, NR, xa + b * 128, lda, NX);
    }
    if (b < nblk) {
#pragma GCC unroll 4
        for (int k = 0; k < NR; k++)
            wv[k] = i2s_load_half(w[k] + b * 32);
        i2s_multi_step(a, wv, NR, xa + b * 128, lda, NX);
    }
    const __m512i z = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int k = 0; k < NR; k++)
#pragma GCC unroll 4
        for (int t = 0; t < NX; t++)
            dot[k][t] = i2s_finish(a[k][t], z, z, z);
}

/* The rows of one chunk of columns for one group of nx vectors, walked as the one-vector
 * kernel walks them. */
ALWAYS_INLINE void i2s_multi_walk(const uint8_t *base, size_t rb, int r0, int r1,
                                  const int8_t *xa, size_t lda, const int NX, int nblk,
                                  int32_t *const out[4], const uint32_t sumx[4], int first)
{
    struct row_walk it;
    row_walk_init(&it, r0, r1, kops.row_streams);
    int rr[4], n;
    while ((n = row_walk_next(&it, rr)) != 0) {
        const uint8_t *w[4];
        for (int k = 0; k < n; k++)
            w[k] = base + (size_t)rr[k] * rb;
        int32_t dot[4][4];
        if (n == 4)
            i2s_rows_multi(w, 4, rb, xa, lda, NX, nblk, dot);
        else
            i2s_rows_multi(w, 1, rb, xa, lda, NX, nblk, dot);
        /* uint32: a later chunk adds to the earlier ones, wrapping as the scalar would */
        for (int t = 0; t < NX; t++)
            for (int k = 0; k < n; k++)
                out[t][rr[k]] = (int32_t)((first ? 0 : (uint32_t)out[t][rr[k]]) +
                                          (uint32_t)dot[k][t] - sumx[t]);
    }
}

/* Several decoding streams: vectors go in groups of up to four (as even as can be), each
 * group's x arranged once per chunk; every 64 bytes of codes are loaded and split into
 * planes once per group, and each plane meets the group's vectors from L1. A later group
 * finds the rows in L2 (model/forward.c passes blocks of rows small enough). On Zen 5,
 * four rows by four vectors ran at ~92% of a bare vpdpbusd loop's rate from L2; two rows by
 * four was slower, two rows by eight no faster. */
static void i2s_dot_rows_multi_avx512(const struct ternary_matrix *w, const int8_t *xq, size_t ldx,
                                      int n_x, int r0, int r1, int32_t *out, size_t ldo)
{
    if (n_x == 1) /* nothing to share; its own kernel overlaps more chains per row */
        i2s_dot_rows_avx512(w, xq, r0, r1, out);
    if (n_x <= 1 || r0 >= r1)
        return;
    _Alignas(64) int8_t xa[4 * I2S_CHUNK];
    size_t rb = w->row_bytes;
    int groups = (n_x + 3) / 4;
    for (int c0 = 0; c0 < w->cols; c0 += I2S_CHUNK) {
        int nblk = (w->cols - c0 < I2S_CHUNK ? w->cols - c0 : I2S_CHUNK) / 128;
        const uint8_t *base = w->data + (size_t)c0 / 4;
        size_t lda = (size_t)(nblk + 1) / 2 * 256; /* what i2s_arrange_x writes */
        for (int g = 0, t0 = 0; g < groups; g++) {
            int nx = (n_x - t0) / (groups - g);
            int32_t *o[4];
            uint32_t sumx[4];
            for (int t = 0; t < nx; t++) {
                const int8_t *x = xq + (size_t)(t0 + t) * ldx + c0;
                i2s_arrange_x(x, nblk, xa + t * lda);
                /* codes are value + 1: sum((code - 1) * x) = sum(code * x) - sum(x) */
                sumx[t] = (uint32_t)sum_i8(x, nblk * 128);
                o[t] = out + (size_t)(t0 + t) * ldo;
            }
            int first = c0 == 0;
            switch (nx) {
            case 2: i2s_multi_walk(base, rb, r0, r1, xa, lda, 2, nblk, o, sumx, first); break;
            case 3: i2s_multi_walk(base, rb, r0, r1, xa, lda, 3, nblk, o, sumx, first); break;
            default: i2s_multi_walk(base, rb, r0, r1, xa, lda, 4, nblk, o, sumx, first); break;
            }
            t0 += nx;
        }
    }
}

/* ---------------------------------------------------------------- Q8 (int8 x int8) */

/* vpdpbusd wants one unsigned operand. Flipping the weight's sign bit gives q + 128 as an
 * unsigned byte; the excess 128 * sum(x) is taken off at the end. That costs one xor per
 * 64 bytes and does not depend on row_sum being filled in. */
#define Q8_STEP(acc, p, x) acc = dpbusd(acc, _mm512_xor_si512(_mm512_loadu_si512(p), flip), x)

/* cols is a multiple of 32: a 32-byte tail is zero-extended; its flipped zero half is
 * 0x80 but meets x = 0 there. */
static inline __m512i q8_load_half(const int8_t *p)
{
    return _mm512_zextsi256_si512(_mm256_loadu_si256((const void *)p));
}

static void q8_rows4(const int8_t *q0, const int8_t *q1, const int8_t *q2, const int8_t *q3,
                     int cols, const int8_t *xq, int32_t dot[4])
{
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    __m512i b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    int c = 0;
    for (; c + 128 <= cols; c += 128) {
        __m512i x = _mm512_loadu_si512(xq + c), y = _mm512_loadu_si512(xq + c + 64);
        PF_NEXT_ROW(q0 + c, cols);
        PF_NEXT_ROW(q1 + c, cols);
        PF_NEXT_ROW(q2 + c, cols);
        PF_NEXT_ROW(q3 + c, cols);
        PF_NEXT_ROW(q0 + c + 64, cols);
        PF_NEXT_ROW(q1 + c + 64, cols);
        PF_NEXT_ROW(q2 + c + 64, cols);
        PF_NEXT_ROW(q3 + c + 64, cols);
        Q8_STEP(a0, q0 + c, x);
        Q8_STEP(a1, q1 + c, x);
        Q8_STEP(a2, q2 + c, x);
        Q8_STEP(a3, q3 + c, x);
        Q8_STEP(b0, q0 + c + 64, y);
        Q8_STEP(b1, q1 + c + 64, y);
        Q8_STEP(b2, q2 + c + 64, y);
        Q8_STEP(b3, q3 + c + 64, y);
    }
    if (c + 64 <= cols) {
        __m512i x = _mm512_loadu_si512(xq + c);
        Q8_STEP(a0, q0 + c, x);
        Q8_STEP(a1, q1 + c, x);
        Q8_STEP(a2, q2 + c, x);
        Q8_STEP(a3, q3 + c, x);
        c += 64;
    }
    if (c < cols) {
        __m512i x = q8_load_half(xq + c);
        b0 = dpbusd(b0, _mm512_xor_si512(q8_load_half(q0 + c), flip), x);
        b1 = dpbusd(b1, _mm512_xor_si512(q8_load_half(q1 + c), flip), x);
        b2 = dpbusd(b2, _mm512_xor_si512(q8_load_half(q2 + c), flip), x);
        b3 = dpbusd(b3, _mm512_xor_si512(q8_load_half(q3 + c), flip), x);
    }
    dot[0] = _mm512_reduce_add_epi32(_mm512_add_epi32(a0, b0));
    dot[1] = _mm512_reduce_add_epi32(_mm512_add_epi32(a1, b1));
    dot[2] = _mm512_reduce_add_epi32(_mm512_add_epi32(a2, b2));
    dot[3] = _mm512_reduce_add_epi32(_mm512_add_epi32(a3, b3));
}

static int32_t q8_row1(const int8_t *q0, int cols, const int8_t *xq)
{
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512i a0 = _mm512_setzero_si512(), b0 = a0;
    int c = 0;
    for (; c + 128 <= cols; c += 128) {
        Q8_STEP(a0, q0 + c, _mm512_loadu_si512(xq + c));
        Q8_STEP(b0, q0 + c + 64, _mm512_loadu_si512(xq + c + 64));
    }
    if (c + 64 <= cols) {
        Q8_STEP(a0, q0 + c, _mm512_loadu_si512(xq + c));
        c += 64;
    }
    if (c < cols)
        b0 = dpbusd(b0, _mm512_xor_si512(q8_load_half(q0 + c), flip), q8_load_half(xq + c));
    return _mm512_reduce_add_epi32(_mm512_add_epi32(a0, b0));
}

static void q8_dot_rows_avx512(const struct q8_matrix *m, const int8_t *xq, int r0, int r1,
                               int32_t *out)
{
    int cols = m->cols;
    if (cols % 32) {
        /* not a shape the model produces; keep it exact the plain way */
        for (int r = r0; r < r1; r++) {
            const int8_t *q = m->q + (size_t)r * cols;
            uint32_t s = 0;
            for (int c = 0; c < cols; c++)
                s += (uint32_t)(q[c] * xq[c]);
            out[r] = (int32_t)s;
        }
        return;
    }
    if (r0 >= r1)
        return;
    /* uint32 arithmetic: exact whenever the true sum fits int32, as the scalar's is */
    uint32_t corr = 128u * (uint32_t)sum_i8(xq, cols);
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
        for (int k = 0; k < n; k++)
            out[rr[k]] = (int32_t)((uint32_t)dot[k] - corr);
    }
}

/* One step of q8_rows4_multi: 64 columns from c, or with half the last 32 (zero-extended;
 * the flipped zero half meets x = 0). */
ALWAYS_INLINE void q8_multi_step(__m512i a[4][4], const int8_t *const q[4],
                                 const int8_t *const x[4], int c, const int NX, const int half)
{
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512i w[4];
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++)
        w[k] = _mm512_xor_si512(half ? q8_load_half(q[k] + c) : _mm512_loadu_si512(q[k] + c), flip);
#pragma GCC unroll 4
    for (int t = 0; t < NX; t++) {
        __m512i xv = half ? q8_load_half(x[t] + c) : _mm512_loadu_si512(x[t] + c);
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++)
            a[k][t] = dpbusd(a[k][t], w[k], xv);
    }
}

/* Four rows against NX activation vectors (a few decoding streams): each 64 bytes of
 * weights are loaded and flipped once and meet every vector, whose 64 bytes come from
 * L1. Integer sums, so every dot equals q8_rows4's exactly. */
ALWAYS_INLINE void q8_rows4_multi(const int8_t *const q[4], const int8_t *const x[4],
                                  const int NX, int cols, int32_t dot[4][4])
{
    __m512i a[4][4];
#pragma GCC unroll 4
    for (int t = 0; t < NX; t++)
        a[0][t] = a[1][t] = a[2][t] = a[3][t] = _mm512_setzero_si512();
    int c = 0;
    for (; c + 64 <= cols; c += 64)
        q8_multi_step(a, q, x, c, NX, 0);
    if (c < cols)
        q8_multi_step(a, q, x, c, NX, 1);
#pragma GCC unroll 4
    for (int t = 0; t < NX; t++)
        for (int k = 0; k < 4; k++)
            dot[k][t] = _mm512_reduce_add_epi32(a[k][t]);
}

static void q8_dot_rows_multi_avx512(const struct q8_matrix *m, const int8_t *xq, size_t ldx,
                                     int n_x, int r0, int r1, int32_t *out, size_t ldo)
{
    int cols = m->cols;
    if (cols % 32 || r1 - r0 < 4) {
        q8_dot_rows_each(m, xq, ldx, n_x, r0, r1, out, ldo);
        return;
    }
    for (int t0 = 0; t0 < n_x; t0 += 4) {
        int nx = n_x - t0 < 4 ? n_x - t0 : 4;
        const int8_t *x[4];
        uint32_t corr[4];
        for (int t = 0; t < 4; t++) {
            x[t] = xq + (size_t)(t0 + (t < nx ? t : 0)) * ldx;
            corr[t] = 128u * (uint32_t)sum_i8(x[t], cols);
        }
        /* rows in fours; the last up to three rows as the four ending at r1 (some twice) */
        for (int r = r0; r < r1; r += 4) {
            int rb = r + 4 <= r1 ? r : r1 - 4;
            const int8_t *q[4];
            for (int k = 0; k < 4; k++)
                q[k] = m->q + (size_t)(rb + k) * cols;
            int32_t dot[4][4];
            switch (nx) {
            case 1: q8_rows4_multi(q, x, 1, cols, dot); break;
            case 2: q8_rows4_multi(q, x, 2, cols, dot); break;
            case 3: q8_rows4_multi(q, x, 3, cols, dot); break;
            default: q8_rows4_multi(q, x, 4, cols, dot); break;
            }
            for (int t = 0; t < nx; t++)
                for (int k = 0; k < 4; k++)
                    out[(size_t)(t0 + t) * ldo + rb + k] = (int32_t)((uint32_t)dot[k][t] - corr[t]);
        }
    }
}

/* ---------------------------------------------------------------- dense */

/* 16 weights of a F32/F16/BF16 row from column c as floats; lanes outside m are zero and
 * not read. */
ALWAYS_INLINE __m512 dense_load16(uint32_t type, const uint8_t *row, int c, __mmask16 m, int full)
{
    switch (type) {
    case GGML_TYPE_F32:
        return full ? _mm512_loadu_ps(row + 4 * c) : _mm512_maskz_loadu_ps(m, row + 4 * c);
    case GGML_TYPE_F16: {
        __m256i h = full ? _mm256_loadu_si256((const void *)(row + 2 * c))
                         : _mm256_maskz_loadu_epi16(m, row + 2 * c);
        return _mm512_cvtph_ps(h);
    }
    default: { /* BF16: the top half of a float */
        __m256i h = full ? _mm256_loadu_si256((const void *)(row + 2 * c))
                         : _mm256_maskz_loadu_epi16(m, row + 2 * c);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    }
}

/* Two accumulators per row (32 columns a step): four rows give eight independent FMA
 * chains, enough to cover the FMA latency on both ports. */
#define DENSE_STEP(a, b, p)                                                               \
    do {                                                                                  \
        PF_NEXT_ROW((p) + c * esz, rb);                                                   \
        if (esz == 4)                                                                     \
            PF_NEXT_ROW((p) + c * esz + 64, rb);                                          \
        a = _mm512_fmadd_ps(dense_load16(type, p, c, 0, 1), x0, a);                       \
        b = _mm512_fmadd_ps(dense_load16(type, p, c + 16, 0, 1), x1, b);                  \
    } while (0)

ALWAYS_INLINE void dense_rows4(uint32_t type, const uint8_t *p0, const uint8_t *p1,
                               const uint8_t *p2, const uint8_t *p3, size_t rb, const float *x,
                               int cols, float out[4])
{
    const int esz = type == GGML_TYPE_F32 ? 4 : 2;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    int c = 0;
    for (; c + 32 <= cols; c += 32) {
        __m512 x0 = _mm512_loadu_ps(x + c), x1 = _mm512_loadu_ps(x + c + 16);
        DENSE_STEP(a0, b0, p0);
        DENSE_STEP(a1, b1, p1);
        DENSE_STEP(a2, b2, p2);
        DENSE_STEP(a3, b3, p3);
    }
    for (; c < cols; c += 16) {
        __mmask16 m = first_lanes(cols - c);
        __m512 xv = _mm512_maskz_loadu_ps(m, x + c);
        a0 = _mm512_fmadd_ps(dense_load16(type, p0, c, m, 0), xv, a0);
        a1 = _mm512_fmadd_ps(dense_load16(type, p1, c, m, 0), xv, a1);
        a2 = _mm512_fmadd_ps(dense_load16(type, p2, c, m, 0), xv, a2);
        a3 = _mm512_fmadd_ps(dense_load16(type, p3, c, m, 0), xv, a3);
    }
    out[0] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
    out[1] = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
    out[2] = _mm512_reduce_add_ps(_mm512_add_ps(a2, b2));
    out[3] = _mm512_reduce_add_ps(_mm512_add_ps(a3, b3));
}

ALWAYS_INLINE float dense_row1(uint32_t type, const uint8_t *p0, const float *x, int cols)
{
    __m512 a0 = _mm512_setzero_ps(), b0 = a0;
    int c = 0;
    for (; c + 32 <= cols; c += 32) {
        a0 = _mm512_fmadd_ps(dense_load16(type, p0, c, 0, 1), _mm512_loadu_ps(x + c), a0);
        b0 = _mm512_fmadd_ps(dense_load16(type, p0, c + 16, 0, 1), _mm512_loadu_ps(x + c + 16), b0);
    }
    for (; c < cols; c += 16) {
        __mmask16 m = first_lanes(cols - c);
        a0 = _mm512_fmadd_ps(dense_load16(type, p0, c, m, 0), _mm512_maskz_loadu_ps(m, x + c), a0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
}

/* Q8_0 blocks: 32 int8 with an f16 scale. The block's dot is formed in float and scaled
 * once; dense_row_to_f32 rounds d * q first, a difference far inside the tolerance. */
ALWAYS_INLINE __m512 q8_0_block(const uint8_t *blk, __m512 x0, __m512 x1, __m512 acc)
{
    __m512 w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const void *)(blk + 2))));
    __m512 w1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const void *)(blk + 18))));
    __m512 t = _mm512_fmadd_ps(w1, x1, _mm512_mul_ps(w0, x0));
    float d = _cvtsh_ss((unsigned short)(blk[0] | blk[1] << 8));
    return _mm512_fmadd_ps(t, _mm512_set1_ps(d), acc);
}

ALWAYS_INLINE void q8_0_rows4(uint32_t type, const uint8_t *p0, const uint8_t *p1,
                              const uint8_t *p2, const uint8_t *p3, size_t rb, const float *x,
                              int cols, float out[4])
{
    (void)type;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int b = 0; b < cols / QK8_0; b++) {
        size_t o = (size_t)b * Q8_0_BYTES;
        __m512 x0 = _mm512_loadu_ps(x + b * QK8_0), x1 = _mm512_loadu_ps(x + b * QK8_0 + 16);
        PF_NEXT_ROW(p0 + o, rb);
        PF_NEXT_ROW(p1 + o, rb);
        PF_NEXT_ROW(p2 + o, rb);
        PF_NEXT_ROW(p3 + o, rb);
        a0 = q8_0_block(p0 + o, x0, x1, a0);
        a1 = q8_0_block(p1 + o, x0, x1, a1);
        a2 = q8_0_block(p2 + o, x0, x1, a2);
        a3 = q8_0_block(p3 + o, x0, x1, a3);
    }
    out[0] = _mm512_reduce_add_ps(a0);
    out[1] = _mm512_reduce_add_ps(a1);
    out[2] = _mm512_reduce_add_ps(a2);
    out[3] = _mm512_reduce_add_ps(a3);
}

ALWAYS_INLINE float q8_0_row1(uint32_t type, const uint8_t *p0, const float *x, int cols)
{
    (void)type;
    __m512 a0 = _mm512_setzero_ps();
    for (int b = 0; b < cols / QK8_0; b++)
        a0 = q8_0_block(p0 + (size_t)b * Q8_0_BYTES, _mm512_loadu_ps(x + b * QK8_0),
                        _mm512_loadu_ps(x + b * QK8_0 + 16), a0);
    return _mm512_reduce_add_ps(a0);
}

/* One driver per type (kernels/row_walk.h), so the type switch in dense_load16 folds away. */
DENSE_DOT_ROWS(dense_dot_rows_avx512)

/* ------------------------------------------------------- dense, several vectors */

/* Rows are multiplied in blocks of DENSE_MULTI_ROWS against column passes of
 * DENSE_MULTI_COLS: four vectors' worth of a pass (16 KB) stays in L1, where whole rows
 * of x (40 KB for four vectors of 2560) pushed each other out, and the multiply ran at
 * about half its in-L1 rate (Zen 5: 57-60 against 75-80 G multiply-adds/s on one core).
 * The block's accumulators wait in memory between passes. */
#define DENSE_MULTI_COLS 1024
#define DENSE_MULTI_ROWS 16

/* The accumulators of two rows against up to 4 vectors: chains a (columns c..c+15 of
 * every 32-column step, then the tail) and b (c+16..c+31), as dense_rows4 keeps them. */
struct dense_acc2 {
    __m512 a[2][4], b[2][4];
};

/* Columns [c0, c1) (whole 32-column steps) of two rows against NX vectors, added to
 * acc: each weight chunk is converted once and used NX times. */
ALWAYS_INLINE void dense_rows2_pass(uint32_t type, const uint8_t *p0, const uint8_t *p1,
                                    size_t rb, const float *const *x, const int NX, int c0,
                                    int c1, struct dense_acc2 *acc)
{
    const size_t esz = type == GGML_TYPE_F32 ? 4 : 2;
    __m512 a[2][4], b[2][4];
#pragma GCC unroll 4
    for (int t = 0; t < NX; t++) {
        a[0][t] = acc->a[0][t];
        a[1][t] = acc->a[1][t];
        b[0][t] = acc->b[0][t];
        b[1][t] = acc->b[1][t];
    }
    for (int c = c0; c < c1; c += 32) {
        /* the same columns of the next block's rows: over its passes a block fetches
         * all of the next one, which then starts from L2 (and the later vectors find
         * their block there too) */
        PF_AHEAD(p0 + (size_t)c * esz, DENSE_MULTI_ROWS * rb);
        PF_AHEAD(p1 + (size_t)c * esz, DENSE_MULTI_ROWS * rb);
        __m512 w00 = dense_load16(type, p0, c, 0, 1), w01 = dense_load16(type, p0, c + 16, 0, 1);
        __m512 w10 = dense_load16(type, p1, c, 0, 1), w11 = dense_load16(type, p1, c + 16, 0, 1);
#pragma GCC unroll 4
        for (int t = 0; t < NX; t++) {
            __m512 x0 = _mm512_loadu_ps(x[t] + c), x1 = _mm512_loadu_ps(x[t] + c + 16);
            /* in registers: GCC would fold each load into both rows' FMAs, and the load
             * ports, not the FMAs, would then set the pace */
            __asm__("" : "+v"(x0), "+v"(x1));
            a[0][t] = _mm512_fmadd_ps(w00, x0, a[0][t]);
            b[0][t] = _mm512_fmadd_ps(w01, x1, b[0][t]);
            a[1][t] = _mm512_fmadd_ps(w10, x0, a[1][t]);
            b[1][t] = _mm512_fmadd_ps(w11, x1, b[1][t]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < NX; t++) {
        acc->a[0][t] = a[0][t];
        acc->a[1][t] = a[1][t];
        acc->b[0][t] = b[0][t];
        acc->b[1][t] = b[1][t];
    }
}

/* The columns past the last whole 32-column step into chain a, 16 at a time, then each
 * dot: the reduction of a + b. */
ALWAYS_INLINE void dense_rows2_finish(uint32_t type, const uint8_t *p0, const uint8_t *p1,
                                      const float *const *x, const int NX, int c, int cols,
                                      struct dense_acc2 *acc, float out[2][4])
{
    for (; c < cols; c += 16) {
        __mmask16 m = first_lanes(cols - c);
        __m512 w0 = dense_load16(type, p0, c, m, 0), w1 = dense_load16(type, p1, c, m, 0);
#pragma GCC unroll 4
        for (int t = 0; t < NX; t++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, x[t] + c);
            acc->a[0][t] = _mm512_fmadd_ps(w0, xv, acc->a[0][t]);
            acc->a[1][t] = _mm512_fmadd_ps(w1, xv, acc->a[1][t]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < NX; t++) {
        out[0][t] = _mm512_reduce_add_ps(_mm512_add_ps(acc->a[0][t], acc->b[0][t]));
        out[1][t] = _mm512_reduce_add_ps(_mm512_add_ps(acc->a[1][t], acc->b[1][t]));
    }
}

/* Rows [r0, r1) (at most DENSE_MULTI_ROWS) against NX vectors. Every (row, vector) pair
 * keeps dense_rows4's arithmetic exactly (two FMA chains over 32-column steps, the tail
 * into the first, one reduction of their sum), so each dot is bit-identical to the
 * one-vector kernel's; an odd last row is computed twice and stored once. */
ALWAYS_INLINE void dense_block_multi(uint32_t type, const struct dense_matrix *m,
                                     const float *const *x, const int NX, int r0, int r1,
                                     float *out, size_t ldo)
{
    size_t rb = m->row_bytes;
    int cols = m->cols, whole = cols / 32 * 32, pairs = (r1 - r0 + 1) / 2;
    struct dense_acc2 acc[DENSE_MULTI_ROWS / 2];
    for (int i = 0; i < pairs; i++)
#pragma GCC unroll 4
        for (int t = 0; t < NX; t++)
            acc[i].a[0][t] = acc[i].a[1][t] = acc[i].b[0][t] = acc[i].b[1][t] = _mm512_setzero_ps();
    for (int c0 = 0; c0 < whole; c0 += DENSE_MULTI_COLS) {
        int c1 = c0 + DENSE_MULTI_COLS < whole ? c0 + DENSE_MULTI_COLS : whole;
        for (int i = 0; i < pairs; i++) {
            int r = r0 + 2 * i;
            const uint8_t *p0 = m->data + (size_t)r * rb, *p1 = r + 1 < r1 ? p0 + rb : p0;
            dense_rows2_pass(type, p0, p1, rb, x, NX, c0, c1, &acc[i]);
        }
    }
    for (int i = 0; i < pairs; i++) {
        int r = r0 + 2 * i;
        const uint8_t *p0 = m->data + (size_t)r * rb, *p1 = r + 1 < r1 ? p0 + rb : p0;
        float dot[2][4];
        dense_rows2_finish(type, p0, p1, x, NX, whole, cols, &acc[i], dot);
        for (int t = 0; t < NX; t++) {
            out[(size_t)t * ldo + r] = dot[0][t];
            if (r + 1 < r1)
                out[(size_t)t * ldo + r + 1] = dot[1][t];
        }
    }
}

ALWAYS_INLINE void dense_multi_typed(uint32_t type, const struct dense_matrix *m, const float *xs,
                                     size_t ldx, int n_x, int r0, int r1, float *out, size_t ldo)
{
    for (int t0 = 0; t0 < n_x; t0 += 4) {
        int nx = n_x - t0 < 4 ? n_x - t0 : 4;
        const float *x[4];
        for (int t = 0; t < 4; t++)
            x[t] = xs + (size_t)(t0 + (t < nx ? t : 0)) * ldx;
        float *o = out + (size_t)t0 * ldo;
        for (int r = r0; r < r1; r += DENSE_MULTI_ROWS) {
            int re = r + DENSE_MULTI_ROWS < r1 ? r + DENSE_MULTI_ROWS : r1;
            switch (nx) {
            case 1: dense_block_multi(type, m, x, 1, r, re, o, ldo); break;
            case 2: dense_block_multi(type, m, x, 2, r, re, o, ldo); break;
            case 3: dense_block_multi(type, m, x, 3, r, re, o, ldo); break;
            default: dense_block_multi(type, m, x, 4, r, re, o, ldo); break;
            }
        }
    }
}

static void dense_dot_rows_multi_avx512(const struct dense_matrix *m, const float *xs, size_t ldx,
                                        int n_x, int r0, int r1, float *out, size_t ldo)
{
    switch (m->type) {
    case GGML_TYPE_F32: dense_multi_typed(GGML_TYPE_F32, m, xs, ldx, n_x, r0, r1, out, ldo); break;
    case GGML_TYPE_F16: dense_multi_typed(GGML_TYPE_F16, m, xs, ldx, n_x, r0, r1, out, ldo); break;
    case GGML_TYPE_BF16: dense_multi_typed(GGML_TYPE_BF16, m, xs, ldx, n_x, r0, r1, out, ldo); break;
    default: dense_dot_rows_each(m, xs, ldx, n_x, r0, r1, out, ldo); break;
    }
}

const struct kernel_ops kernels_avx512 = {
    .name = "avx512",
    .i2s_dot_rows = i2s_dot_rows_avx512,
    .i2s_dot_rows_multi = i2s_dot_rows_multi_avx512,
    .dense_dot_rows = dense_dot_rows_avx512,
    .dense_dot_rows_multi = dense_dot_rows_multi_avx512,
    .q8_dot_rows = q8_dot_rows_avx512,
    .q8_dot_rows_multi = q8_dot_rows_multi_avx512,
};

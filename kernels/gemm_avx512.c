/* Prefill GEMM with AVX-512 VNNI.
 *
 * vpdpbusd multiplies unsigned by signed bytes, so the weights stay as their I2_S codes
 * (value + 1, unsigned) and the activations as signed int8:
 *     sum_c W[r][c] * x[c] = sum_c code[r][c] * x[c] - sum_c x[c].
 * This also reproduces the scalar kernel's reading of the unused code 3 (as +2).
 *
 * A panel of up to 32 weight rows is unpacked once per call into the layout vpdpbusd
 * wants (for each group of 4 columns, 4 code bytes of each row in turn), then every
 * token is run against it. The activations are re-laid out once per call so that a
 * token block's 4-byte groups for one column group sit side by side: the micro-kernel
 * then reads them with embedded broadcasts off a single pointer. */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gemm_scratch.h"
#include "kernels/kernels_x86.h"
#include "kernels/lanes_x86.h"

/* 12 tokens x 2 row vectors = 24 accumulators, plus 2 weight vectors: fits in the 32
 * zmm registers with room for the broadcasts. */
#define TOK_BLOCK 12
#define PANEL_ROWS 32

/* Rows [r, r + 16) of w into dst: for column group g (columns 4g..4g+3), row r + i's four
 * codes at dst + g * g_stride + 4 * i. Rows past `last` repeat row `last`, so nothing
 * outside the matrix is read; their results are never stored.
 * I2_S byte p of a 128-column block holds columns p, 32+p, 64+p, 96+p, so 4 consecutive
 * bytes hold 4 consecutive columns in each of their 2-bit fields: dword q of a block of
 * each row yields 4 column groups of the panel. The 16 rows' dwords are brought together
 * by a transposition in registers (a gather did it before, and took 96% of this
 * function's time on AMD Zen 5, whose gathers are slow). */
static void unpack16(const struct ternary_matrix *w, int r, int last, uint8_t *dst,
                     size_t g_stride)
{
    const uint8_t *row[16];
    for (int i = 0; i < 16; i++)
        row[i] = w->data + (size_t)(r + i <= last ? r + i : last) * w->row_bytes;
    const __m512i three = _mm512_set1_epi8(3);
    /* 64-bit lanes of the final step: the low 128 bits of each 256-bit half of a and b,
     * or the high ones */
    const __m512i lo_halves = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
    const __m512i hi_halves = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
    for (int b = 0; b < w->cols / 128; b++) {
        /* a[k]: the block's 8 dwords of row k (low half) and of row k + 8 (high half); an
         * 8 x 8 transposition in each half then leaves dword q of all 16 rows in o[q] */
        __m512i a[8], t[8], s2[8], o[8];
        for (int k = 0; k < 8; k++)
            a[k] = _mm512_inserti64x4(
                _mm512_castsi256_si512(_mm256_loadu_si256((const void *)(row[k] + 32 * b))),
                _mm256_loadu_si256((const void *)(row[k + 8] + 32 * b)), 1);
        for (int k = 0; k < 8; k += 2) {
            t[k] = _mm512_unpacklo_epi32(a[k], a[k + 1]);
            t[k + 1] = _mm512_unpackhi_epi32(a[k], a[k + 1]);
        }
        for (int k = 0; k < 8; k += 4) {
            s2[k] = _mm512_unpacklo_epi64(t[k], t[k + 2]);
            s2[k + 1] = _mm512_unpackhi_epi64(t[k], t[k + 2]);
            s2[k + 2] = _mm512_unpacklo_epi64(t[k + 1], t[k + 3]);
            s2[k + 3] = _mm512_unpackhi_epi64(t[k + 1], t[k + 3]);
        }
        for (int q = 0; q < 4; q++) {
            o[q] = _mm512_permutex2var_epi64(s2[q], lo_halves, s2[q + 4]);
            o[q + 4] = _mm512_permutex2var_epi64(s2[q], hi_halves, s2[q + 4]);
        }
        for (int q = 0; q < 8; q++) {
            __m512i v = o[q];
            uint8_t *d = dst + (size_t)(32 * b + q) * g_stride;
            _mm512_store_si512(d, _mm512_and_si512(_mm512_srli_epi32(v, 6), three));
            _mm512_store_si512(d + 8 * g_stride, _mm512_and_si512(_mm512_srli_epi32(v, 4), three));
            _mm512_store_si512(d + 16 * g_stride, _mm512_and_si512(_mm512_srli_epi32(v, 2), three));
            _mm512_store_si512(d + 24 * g_stride, _mm512_and_si512(v, three));
        }
    }
}

/* Tokens [t0, t0 + nt) into xr[g * nt + t] (4 bytes of token t0 + t at column group g),
 * and each token's sum of activations. */
static void relayout_block(const int8_t *xq, size_t ldx, int t0, int nt, int cols, int32_t *xr,
                           int32_t *sumx)
{
    const __m512i ones = _mm512_set1_epi8(1);
    for (int t = 0; t < nt; t++) {
        const int8_t *x = xq + (size_t)(t0 + t) * ldx;
        __m512i s = _mm512_setzero_si512();
        for (int c = 0; c < cols; c += 64) {
            __m512i v = _mm512_loadu_si512(x + c);
            s = _mm512_dpbusd_epi32(s, ones, v);
            /* scattered a dword at a time: this pass is about 3% of a call at 512
             * tokens, not worth a transposition in registers */
            int32_t d[16];
            _mm512_storeu_si512(d, v);
            int32_t *o = xr + (size_t)(c / 4) * nt + t;
            for (int i = 0; i < 16; i++)
                o[(size_t)i * nt] = d[i];
        }
        sumx[t] = _mm512_reduce_add_epi32(s);
    }
}

/* One micro-tile: NW row vectors (16 rows each) x NT tokens over all column groups. NW
 * and NT are constants from the callers below. The accumulators are named variables,
 * not an array: GCC keeps an array that is only partly used in memory, which costs a
 * store per vpdpbusd. */
#define REPEAT12(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11)
#define ACC_DECL(i) __m512i acc0_##i = _mm512_setzero_si512(), acc1_##i = acc0_##i;
#define ACC_STEP(i)                                                                        \
    if (NT > i) {                                                                          \
        const __m512i xv = _mm512_set1_epi32(x[i]);                                        \
        acc0_##i = dpbusd(acc0_##i, w0, xv);                                               \
        if (NW == 2)                                                                       \
            acc1_##i = dpbusd(acc1_##i, w1, xv);                                           \
    }
#define ACC_STORE(i)                                                                       \
    if (NT > i) {                                                                          \
        const __m512i s = _mm512_set1_epi32(sumx[i]);                                      \
        _mm512_mask_storeu_epi32(out + i * ldo, m0, _mm512_sub_epi32(acc0_##i, s));        \
        if (NW == 2)                                                                       \
            _mm512_mask_storeu_epi32(out + i * ldo + 16, m1, _mm512_sub_epi32(acc1_##i, s)); \
    }

static inline __attribute__((always_inline)) void
micro(const uint8_t *panel, const int32_t *xr, int n_groups, const int32_t *sumx, int32_t *out,
      size_t ldo, __mmask16 m0, __mmask16 m1, const int NW, const int NT)
{
    REPEAT12(ACC_DECL)
    const size_t ws = (size_t)64 * NW;
    for (int g = 0; g < n_groups; g++) {
        const __m512i w0 = _mm512_load_si512(panel + g * ws);
        const __m512i w1 = NW == 2 ? _mm512_load_si512(panel + g * ws + 64) : w0;
        const int32_t *x = xr + (size_t)g * NT;
        REPEAT12(ACC_STEP)
    }
    REPEAT12(ACC_STORE)
}

/* Every (NW, NT) pair the driver can meet, compiled with its constants and picked from a
 * table: 24 small loops rather than one with run-time trip counts. */
#define MICRO_FN(nw, nt)                                                                   \
    static void micro_##nw##_##nt(                                                         \
        const uint8_t *panel, const int32_t *xr, int n_groups, const int32_t *sumx,        \
        int32_t *out, size_t ldo, __mmask16 m0, __mmask16 m1)                              \
    {                                                                                      \
        micro(panel, xr, n_groups, sumx, out, ldo, m0, m1, nw, nt);                        \
    }
#define MICRO_FNS(M, nw)                                                                   \
    M(nw, 1) M(nw, 2) M(nw, 3) M(nw, 4) M(nw, 5) M(nw, 6) M(nw, 7) M(nw, 8) M(nw, 9)       \
    M(nw, 10) M(nw, 11) M(nw, 12)
MICRO_FNS(MICRO_FN, 1)
MICRO_FNS(MICRO_FN, 2)

typedef void (*micro_fn)(const uint8_t *panel, const int32_t *xr, int n_groups,
                         const int32_t *sumx, int32_t *out, size_t ldo, __mmask16 m0,
                         __mmask16 m1);
#define MICRO_ENTRY(nw, nt) micro_##nw##_##nt,
/* micro_table[nw - 1][nt - 1] */
static const micro_fn micro_table[2][TOK_BLOCK] = {
    {MICRO_FNS(MICRO_ENTRY, 1)},
    {MICRO_FNS(MICRO_ENTRY, 2)},
};

void i2s_gemm_avx512(const struct ternary_matrix *w, const int8_t *xq, size_t ldx, int n_tok,
                     int r0, int r1, int32_t *out, size_t ldo)
{
    if (r0 >= r1 || n_tok <= 0)
        return;
    const int cols = w->cols;
    const int n_groups = cols / 4;
    struct gemm_scratch sc;
    if (!gemm_scratch_get(&sc, xq, ldx, n_tok, cols, PANEL_ROWS, TOK_BLOCK, relayout_block)) {
        kernels_scalar.i2s_gemm(w, xq, ldx, n_tok, r0, r1, out, ldo);
        return;
    }
    const int32_t *xr = sc.xr, *sumx = sc.sumx;
    uint8_t *panel = sc.panel;
    for (int r = r0; r < r1; r += PANEL_ROWS) {
        int nr = r1 - r < PANEL_ROWS ? r1 - r : PANEL_ROWS;
        int nw = nr > 16 ? 2 : 1;
        unpack16(w, r, r1 - 1, panel, (size_t)64 * nw);
        if (nw == 2)
            unpack16(w, r + 16, r1 - 1, panel + 64, 128);
        __mmask16 m0 = first_lanes(nr), m1 = first_lanes(nr - 16);
        for (int t0 = 0; t0 < n_tok; t0 += TOK_BLOCK) {
            int nt = n_tok - t0 < TOK_BLOCK ? n_tok - t0 : TOK_BLOCK;
            micro_table[nw - 1][nt - 1](panel, xr + (size_t)t0 * n_groups, n_groups, sumx + t0,
                                        out + (size_t)t0 * ldo + r, ldo, m0, m1);
        }
    }
    gemm_scratch_free(&sc);
}

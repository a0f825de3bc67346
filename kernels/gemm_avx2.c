/* Prefill GEMM with AVX2, for CPUs without AVX-512 VNNI (before it, they ran prompts
 * through the scalar GEMM: 2 tokens/s on 2B-4T).
 *
 * The arithmetic is gemm_avx512.c's: the weights stay as their I2_S codes (value + 1,
 * unsigned) against signed int8 activations,
 *     sum_c W[r][c] * x[c] = sum_c code[r][c] * x[c] - sum_c x[c],
 * which also reads the unused code 3 as +2, as the scalar kernel does. Without vpdpbusd,
 * a group of 4 columns takes vpmaddubsw (code * x, adjacent pairs added into int16:
 * at most 2 * 3 * 128 = 768 in magnitude, far from saturating) and vpmaddwd against ones
 * (the two pairs into one int32 per row).
 *
 * A panel of 8 weight rows is unpacked once per call into the layout those want (for each
 * group of 4 columns, the 4 codes of each row in turn: one ymm), then every token is run
 * against it; the activations are re-laid out once per call so that a token block's
 * 4-byte groups for one column group sit side by side. */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gemm_scratch.h"
#include "kernels/kernels_x86.h"
#include "kernels/lanes_x86.h"

/* 5 tokens x one row vector: 5 int32 and 5 int16 accumulators, the weights, the
 * broadcast, a product and the ones fit the 16 ymm registers (6 tokens were no faster,
 * and spilled). */
#define TOK_BLOCK 5
#define PANEL_ROWS 8
#define GROUPS_PER_BLOCK 32 /* the 4-column groups of an I2_S block */

/* Rows [r, r + 8) of w into dst: for column group g (columns 4g..4g+3), row r + i's four
 * codes at dst + 32 * g + 4 * i. Rows past `last` repeat row `last`, so nothing outside
 * the matrix is read; their results are never stored.
 * I2_S byte p of a 128-column block holds columns p, 32+p, 64+p, 96+p (from the top bits
 * down), so dword q of a block of each row yields column groups q, 8+q, 16+q and 24+q;
 * an 8 x 8 transposition of the rows' dwords brings dword q of the 8 rows together. */
static void unpack8(const struct ternary_matrix *w, int r, int last, uint8_t *dst)
{
    const uint8_t *row[8];
    for (int i = 0; i < 8; i++)
        row[i] = w->data + (size_t)(r + i <= last ? r + i : last) * w->row_bytes;
    const __m256i three = _mm256_set1_epi8(3);
    for (int b = 0; b < w->cols / 128; b++) {
        __m256i a[8], t[8], s[8];
        for (int k = 0; k < 8; k++)
            a[k] = _mm256_loadu_si256((const __m256i *)(row[k] + 32 * b));
        for (int k = 0; k < 8; k += 2) {
            t[k] = _mm256_unpacklo_epi32(a[k], a[k + 1]);
            t[k + 1] = _mm256_unpackhi_epi32(a[k], a[k + 1]);
        }
        for (int k = 0; k < 8; k += 4) {
            s[k] = _mm256_unpacklo_epi64(t[k], t[k + 2]);
            s[k + 1] = _mm256_unpackhi_epi64(t[k], t[k + 2]);
            s[k + 2] = _mm256_unpacklo_epi64(t[k + 1], t[k + 3]);
            s[k + 3] = _mm256_unpackhi_epi64(t[k + 1], t[k + 3]);
        }
        /* s[k] holds, in each 128-bit half, dword q of rows 4 * (k / 4) .. + 3, with
         * q = k % 4 in the low half and q = 4 + k % 4 in the high one */
        for (int q = 0; q < 4; q++) {
            __m256i o[2] = {_mm256_permute2x128_si256(s[q], s[q + 4], 0x20),
                            _mm256_permute2x128_si256(s[q], s[q + 4], 0x31)};
            for (int h = 0; h < 2; h++) {
                uint8_t *d = dst + (size_t)(32 * b + q + 4 * h) * 32;
                _mm256_store_si256((__m256i *)d,
                                   _mm256_and_si256(_mm256_srli_epi32(o[h], 6), three));
                _mm256_store_si256((__m256i *)(d + 8 * 32),
                                   _mm256_and_si256(_mm256_srli_epi32(o[h], 4), three));
                _mm256_store_si256((__m256i *)(d + 16 * 32),
                                   _mm256_and_si256(_mm256_srli_epi32(o[h], 2), three));
                _mm256_store_si256((__m256i *)(d + 24 * 32), _mm256_and_si256(o[h], three));
            }
        }
    }
}

/* Tokens [t0, t0 + nt) into xr[g * nt + t] (4 bytes of token t0 + t at column group g),
 * and each token's sum of activations. */
static void relayout_block(const int8_t *xq, size_t ldx, int t0, int nt, int cols, int32_t *xr,
                           int32_t *sumx)
{
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    for (int t = 0; t < nt; t++) {
        const int8_t *x = xq + (size_t)(t0 + t) * ldx;
        __m256i s = _mm256_setzero_si256();
        for (int c = 0; c < cols; c += 32) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(x + c));
            s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, v), ones16));
            int32_t d[8];
            _mm256_storeu_si256((__m256i *)d, v);
            int32_t *o = xr + (size_t)(c / 4) * nt + t;
            for (int i = 0; i < 8; i++)
                o[(size_t)i * nt] = d[i];
        }
        __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
        sumx[t] = _mm_cvtsi128_si32(h);
    }
}

/* One micro-tile: the panel's 8 rows x NT tokens over all column groups (NT a constant
 * from the table below). The int16 sums of vpmaddubsw are added up over the 32 groups of
 * a 128-column block (at most 32 * 768, within int16) before one vpmaddwd takes them to
 * int32: a multiply per group instead of two, and multiplies are what bound this loop.
 * Named accumulators, not an array: GCC keeps a partly used array in memory. */
#define REPEAT5(M) M(0) M(1) M(2) M(3) M(4)
#define ACC_DECL(i) __m256i acc_##i = _mm256_setzero_si256(), sum16_##i = acc_##i;
#define ACC_ZERO(i) sum16_##i = _mm256_setzero_si256();
#define ACC_STEP(i)                                                                        \
    if (NT > i)                                                                            \
        sum16_##i = _mm256_add_epi16(sum16_##i, _mm256_maddubs_epi16(wv, _mm256_set1_epi32(x[i])));
#define ACC_WIDEN(i)                                                                       \
    if (NT > i)                                                                            \
        acc_##i = _mm256_add_epi32(acc_##i, _mm256_madd_epi16(sum16_##i, ones));
#define ACC_STORE(i)                                                                       \
    if (NT > i)                                                                            \
        _mm256_maskstore_epi32(out + i * ldo, m,                                           \
                               _mm256_sub_epi32(acc_##i, _mm256_set1_epi32(sumx[i])));

static inline __attribute__((always_inline)) void micro(const uint8_t *panel, const int32_t *xr,
                                                        int n_groups, const int32_t *sumx,
                                                        int32_t *out, size_t ldo, __m256i m,
                                                        const int NT)
{
    REPEAT5(ACC_DECL)
    const __m256i ones = _mm256_set1_epi16(1);
    for (int g0 = 0; g0 < n_groups; g0 += GROUPS_PER_BLOCK) {
        REPEAT5(ACC_ZERO)
        for (int g = g0; g < g0 + GROUPS_PER_BLOCK; g++) {
            const __m256i wv = _mm256_load_si256((const __m256i *)(panel + (size_t)g * 32));
            const int32_t *x = xr + (size_t)g * NT;
            REPEAT5(ACC_STEP)
        }
        REPEAT5(ACC_WIDEN)
    }
    REPEAT5(ACC_STORE)
}

#define MICRO_FN(nt)                                                                       \
    static void micro_##nt(const uint8_t *panel, const int32_t *xr, int n_groups,          \
                           const int32_t *sumx, int32_t *out, size_t ldo, __m256i m)       \
    {                                                                                      \
        micro(panel, xr, n_groups, sumx, out, ldo, m, nt);                                 \
    }
MICRO_FN(1) MICRO_FN(2) MICRO_FN(3) MICRO_FN(4) MICRO_FN(5)

typedef void (*micro_fn)(const uint8_t *panel, const int32_t *xr, int n_groups,
                         const int32_t *sumx, int32_t *out, size_t ldo, __m256i m);
/* micro_table[nt - 1]: a loop compiled for each token count rather than one with a
 * run-time trip count */
static const micro_fn micro_table[TOK_BLOCK] = {micro_1, micro_2, micro_3, micro_4,
                                                micro_5};

/* AVX-VNNI (Alder Lake and later Intel cores, Zen 5): vpdpbusd on ymm does a group's
 * four products and their sum in one instruction, so no int16 stage and more tokens a
 * tile. */
#ifdef __clang__ /* which ignores gcc's target pragma (the fuzz build, tests/fuzz/fuzz.mk) */
#pragma clang attribute push(__attribute__((target("avxvnni"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avxvnni")
#endif
#define VNNI_TOK_BLOCK 8
#define VACC_DECL(i) __m256i acc_##i = _mm256_setzero_si256();
#define VACC_STEP(i)                                                                       \
    if (NT > i)                                                                            \
        acc_##i = _mm256_dpbusd_avx_epi32(acc_##i, wv, _mm256_set1_epi32(x[i]));
#define REPEAT8(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)

static inline __attribute__((always_inline)) void micro_vnni(const uint8_t *panel,
                                                             const int32_t *xr, int n_groups,
                                                             const int32_t *sumx, int32_t *out,
                                                             size_t ldo, __m256i m, const int NT)
{
    REPEAT8(VACC_DECL)
    for (int g = 0; g < n_groups; g++) {
        const __m256i wv = _mm256_load_si256((const __m256i *)(panel + (size_t)g * 32));
        const int32_t *x = xr + (size_t)g * NT;
        REPEAT8(VACC_STEP)
    }
    REPEAT8(ACC_STORE)
}

#define VNNI_FN(nt)                                                                        \
    static void micro_vnni_##nt(const uint8_t *panel, const int32_t *xr, int n_groups,     \
                                const int32_t *sumx, int32_t *out, size_t ldo, __m256i m)  \
    {                                                                                      \
        micro_vnni(panel, xr, n_groups, sumx, out, ldo, m, nt);                            \
    }
VNNI_FN(1) VNNI_FN(2) VNNI_FN(3) VNNI_FN(4) VNNI_FN(5) VNNI_FN(6) VNNI_FN(7) VNNI_FN(8)
#ifdef __clang__
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

static const micro_fn vnni_table[VNNI_TOK_BLOCK] = {micro_vnni_1, micro_vnni_2, micro_vnni_3,
                                                    micro_vnni_4, micro_vnni_5, micro_vnni_6,
                                                    micro_vnni_7, micro_vnni_8};

/* rows [r0, r1) against n_tok tokens with the tiles of table, tok_block tokens a tile */
static void gemm(const struct ternary_matrix *w, const int8_t *xq, size_t ldx, int n_tok,
                 int r0, int r1, int32_t *out, size_t ldo, const micro_fn *table, int tok_block)
{
    if (r0 >= r1 || n_tok <= 0)
        return;
    const int cols = w->cols;
    const int n_groups = cols / 4;
    struct gemm_scratch sc;
    if (!gemm_scratch_get(&sc, xq, ldx, n_tok, cols, PANEL_ROWS, tok_block, relayout_block)) {
        kernels_scalar.i2s_gemm(w, xq, ldx, n_tok, r0, r1, out, ldo);
        return;
    }
    const int32_t *xr = sc.xr, *sumx = sc.sumx;
    uint8_t *panel = sc.panel;
    for (int r = r0; r < r1; r += PANEL_ROWS) {
        int nr = r1 - r < PANEL_ROWS ? r1 - r : PANEL_ROWS;
        unpack8(w, r, r1 - 1, panel);
        __m256i m = lanes_below(nr);
        for (int t0 = 0; t0 < n_tok; t0 += tok_block) {
            int nt = n_tok - t0 < tok_block ? n_tok - t0 : tok_block;
            table[nt - 1](panel, xr + (size_t)t0 * n_groups, n_groups, sumx + t0,
                          out + (size_t)t0 * ldo + r, ldo, m);
        }
    }
    gemm_scratch_free(&sc);
}

void i2s_gemm_avx2(const struct ternary_matrix *w, const int8_t *xq, size_t ldx, int n_tok,
                   int r0, int r1, int32_t *out, size_t ldo)
{
    gemm(w, xq, ldx, n_tok, r0, r1, out, ldo, micro_table, TOK_BLOCK);
}

void i2s_gemm_avxvnni(const struct ternary_matrix *w, const int8_t *xq, size_t ldx, int n_tok,
                      int r0, int r1, int32_t *out, size_t ldo)
{
    gemm(w, xq, ldx, n_tok, r0, r1, out, ldo, vnni_table, VNNI_TOK_BLOCK);
}

/* Prefill GEMM with AMX-INT8.
 *
 * TDPBSSD (signed x signed bytes) takes both operands as they are, with no offset to
 * correct afterwards, and with the activations as A the result comes out in the layout
 * of out:
 *   A (tiles 4, 5): 16 tokens x 64 columns of activations;
 *   B (tiles 6, 7): 64 columns x 16 weight rows in the 4-bytes-per-dword layout (for each
 *                   group of 4 columns, the 4 values of each row in turn);
 *   C (tiles 0-3):  16 tokens x 16 rows of int32 = out[t * ldo + r] with stride ldo,
 *                   stored in place, no transposition.
 * Weight values are code - 1, which also reproduces the scalar kernel's reading of the
 * unused code 3 (as +2).
 *
 * Blocking: a panel of 32 weight rows is unpacked into B tiles, then every pair of 16-token
 * blocks runs the whole K against it (2 x 2 tiles: each tile load feeds two products),
 * while the next panel is unpacked a piece at a time between the tile products (about 5%
 * faster than unpacking between panels). The activations are copied into contiguous,
 * aligned 1 KB A tiles, a span of tokens at a time so that the span stays in L2 while
 * every panel streams it.
 *
 * Edges: tokens past n_tok are zeros in the copied A tiles, and rows past r1 repeat the
 * last row; C tiles that reach past either are stored to a scratch tile and only their
 * valid part is copied out. One tile configuration thus serves the whole call. */
#include <immintrin.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels_x86.h"

#define PANEL_ROWS 32
#define TILE_K 64       /* columns per tile product: bytes of one A tile row */
#define TILE_BYTES 1024 /* one 16 x 64-byte tile */
/* Activations per span: half of Sapphire Rapids' 2 MB L2, leaving room for the panel
 * (32 x cols bytes) and the lines of out being written. 1 MB measured a little faster
 * than 0.75 or 1.4 MB and clearly faster than no spans (3.5 MB at 512 x 6912). */
#define ACT_SPAN_BYTES ((size_t)1 << 20)

/* The 64-byte operand of LDTILECFG (palette 1). */
struct tile_config {
    uint8_t palette;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* GCC's _tile_loadconfig tells the compiler it reads only 8 bytes of the configuration;
 * naming the whole object keeps its other 56 bytes from being optimized away. */
static inline void load_tile_config(const struct tile_config *cfg)
{
    __asm__ volatile("ldtilecfg %0" ::"m"(*cfg));
}

/* GCC's tile loads are asm statements that do not say they read memory: this keeps the
 * stores that fill the panel and the edge buffers ahead of them. */
static inline void memory_barrier(void)
{
    __asm__ volatile("" ::: "memory");
}

/* Unpacks a panel of up to 32 rows [r, r + nr) into B tiles, one unit (16 rows x 128
 * columns) at a time, so that the work can be spread between the tile products of the
 * previous panel: those leave the core's own ports mostly idle.
 * Layout: for column group g (columns 4g..4g+3), row r + 16h + i's four values at
 * dst[h] + 64 * g + 4 * i. Rows past r + nr - 1 repeat that row, so nothing outside the
 * matrix is read; their results are never stored.
 * I2_S byte p of a 128-column block holds columns p, 32+p, 64+p, 96+p, so 4 consecutive
 * bytes hold 4 consecutive columns in each of their 2-bit fields: one dword gathered from
 * each of the 16 rows yields 4 column groups. */
struct unpacker {
    const uint8_t *base[2];
    __m512i idx[2]; /* byte offsets of the 16 rows from base */
    int8_t *dst[2];
    int n_blocks;   /* 128-column blocks per row */
    int done, total;
};

static void unpacker_start(struct unpacker *u, const struct ternary_matrix *w, int r, int nr,
                           int8_t *dst0, int8_t *dst1)
{
    int halves = nr > 16 ? 2 : nr > 0 ? 1 : 0;
    for (int h = 0; h < halves; h++) {
        int first = r + 16 * h;
        int32_t off[16];
        for (int i = 0; i < 16; i++) {
            int row = first + i < r + nr ? first + i : r + nr - 1;
            off[i] = (int32_t)((size_t)(row - first) * w->row_bytes);
        }
        u->base[h] = w->data + (size_t)first * w->row_bytes;
        u->idx[h] = _mm512_loadu_si512(off);
    }
    u->dst[0] = dst0;
    u->dst[1] = dst1;
    u->n_blocks = w->cols / 128;
    u->done = 0;
    u->total = halves * u->n_blocks;
}

static void unpacker_step(struct unpacker *u)
{
    if (u->done >= u->total)
        return;
    int h = u->done / u->n_blocks, b = u->done % u->n_blocks;
    u->done++;
    const __m512i three = _mm512_set1_epi8(3), one = _mm512_set1_epi8(1);
    for (int q = 0; q < 8; q++) {
        __m512i v = _mm512_i32gather_epi32(u->idx[h], u->base[h] + 32 * b + 4 * q, 1);
        int8_t *d = u->dst[h] + (size_t)(32 * b + q) * 64;
        __m512i c0 = _mm512_and_si512(_mm512_srli_epi32(v, 6), three);
        __m512i c1 = _mm512_and_si512(_mm512_srli_epi32(v, 4), three);
        __m512i c2 = _mm512_and_si512(_mm512_srli_epi32(v, 2), three);
        __m512i c3 = _mm512_and_si512(v, three);
        _mm512_store_si512(d, _mm512_sub_epi8(c0, one));
        _mm512_store_si512(d + 8 * 64, _mm512_sub_epi8(c1, one));
        _mm512_store_si512(d + 16 * 64, _mm512_sub_epi8(c2, one));
        _mm512_store_si512(d + 24 * 64, _mm512_sub_epi8(c3, one));
    }
}

static void unpacker_finish(struct unpacker *u)
{
    while (u->done < u->total)
        unpacker_step(u);
    memory_barrier();
}

/* C[0..3] = A(a0, a1) x B(b0, b1) over n_k 64-column steps, with NA token tiles and NB row
 * tiles (1 or 2 each, constants from the callers). C tile 2 * i + j is token tile i by
 * row tile j. Every `every` steps, one unit of the next panel is unpacked meanwhile. */
static inline __attribute__((always_inline)) void
tiles_dot(const int8_t *a0, const int8_t *a1, const int8_t *b0, const int8_t *b1, int n_k,
          struct unpacker *next, int every, const int NA, const int NB)
{
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int k = 0; k < n_k; k++) {
        _tile_loadd(6, b0 + (size_t)k * TILE_BYTES, 64);
        _tile_loadd(4, a0 + (size_t)k * TILE_BYTES, 64);
        _tile_dpbssd(0, 4, 6);
        if (NB == 2) {
            _tile_loadd(7, b1 + (size_t)k * TILE_BYTES, 64);
            _tile_dpbssd(1, 4, 7);
        }
        if (NA == 2) {
            _tile_loadd(5, a1 + (size_t)k * TILE_BYTES, 64);
            _tile_dpbssd(2, 5, 6);
            if (NB == 2)
                _tile_dpbssd(3, 5, 7);
        }
        if (k % every == 0)
            unpacker_step(next);
    }
}

/* Stores C tile `c` (token rows t.., weight rows r..) when all 16 x 16 of it are wanted,
 * else goes through scratch. */
static void store_c(int c, int32_t *out, size_t ldo, int nt, int nr, int32_t *scratch)
{
    bool whole = nt >= 16 && nr >= 16;
    int32_t *dst = whole ? out : scratch;
    size_t stride = whole ? ldo * sizeof(int32_t) : 64;
    switch (c) {
    case 0: _tile_stored(0, dst, stride); break;
    case 1: _tile_stored(1, dst, stride); break;
    case 2: _tile_stored(2, dst, stride); break;
    default: _tile_stored(3, dst, stride); break;
    }
    if (whole)
        return;
    for (int t = 0; t < nt && t < 16; t++)
        memcpy(out + (size_t)t * ldo, scratch + 16 * t, (size_t)(nr < 16 ? nr : 16) * 4);
}

/* Tokens [t0, t0 + 16) of xq into dst as n_k consecutive 1 KB A tiles (tile k: the 16
 * tokens' columns 64k..64k+63), tokens at or past n_tok as zeros. Contiguous aligned
 * tiles stream through the caches at full speed whatever ldx and xq's alignment are. */
static void relayout_tokens(const int8_t *xq, size_t ldx, int t0, int n_tok, int n_k,
                            int8_t *dst)
{
    for (int m = 0; m < 16; m++) {
        int8_t *d = dst + (size_t)m * TILE_K;
        if (t0 + m >= n_tok) {
            for (int k = 0; k < n_k; k++)
                _mm512_store_si512(d + (size_t)k * TILE_BYTES, _mm512_setzero_si512());
            continue;
        }
        const int8_t *x = xq + (size_t)(t0 + m) * ldx;
        for (int k = 0; k < n_k; k++) {
            __m512i v = _mm512_loadu_si512(x + (size_t)k * TILE_K);
            _mm512_store_si512(d + (size_t)k * TILE_BYTES, v);
        }
    }
}

/* Up to 32 rows (nr; unpacked in b0, b1) times up to 32 tokens (nt; A tiles at a0 and
 * a0 + tb_bytes) into out (token 0, row 0 of the block), unpacking some of the next
 * panel on the way. */
static void block_pair(const int8_t *b0, const int8_t *b1, int nr, const int8_t *a0,
                       size_t tb_bytes, int nt, int n_k, struct unpacker *next, int every,
                       int32_t *out, size_t ldo, int32_t *scratch)
{
    const int8_t *a1 = a0 + tb_bytes;
    bool two_a = nt > 16, two_b = nr > 16;
    if (two_a && two_b)
        tiles_dot(a0, a1, b0, b1, n_k, next, every, 2, 2);
    else if (two_a)
        tiles_dot(a0, a1, b0, b1, n_k, next, every, 2, 1);
    else if (two_b)
        tiles_dot(a0, a1, b0, b1, n_k, next, every, 1, 2);
    else
        tiles_dot(a0, a1, b0, b1, n_k, next, every, 1, 1);
    store_c(0, out, ldo, nt, nr, scratch);
    if (two_b)
        store_c(1, out + 16, ldo, nt, nr - 16, scratch);
    if (two_a) {
        store_c(2, out + 16 * ldo, ldo, nt - 16, nr, scratch);
        if (two_b)
            store_c(3, out + 16 * ldo + 16, ldo, nt - 16, nr - 16, scratch);
    }
}

void i2s_gemm_amx(const struct ternary_matrix *w, const int8_t *xq, size_t ldx, int n_tok,
                  int r0, int r1, int32_t *out, size_t ldo)
{
    if (r0 >= r1 || n_tok <= 0)
        return;
    const int cols = w->cols;
    const int n_k = cols / TILE_K;
    const size_t tb_bytes = (size_t)16 * cols; /* one 16-token block of activations */
    const size_t half = (size_t)16 * cols;     /* 16 rows of a panel */
    /* Every panel streams its tokens' activations through the tiles, so those should
     * stay in L2: tokens go in spans of at most ACT_SPAN_BYTES, each relaid on its own,
     * and each span unpacks the weights again (cheap next to the tile products). */
    const int n_tb = (n_tok + 15) / 16;
    int n_spans = (int)(((size_t)n_tb * tb_bytes + ACT_SPAN_BYTES - 1) / ACT_SPAN_BYTES);
    int span_tb = (n_tb + n_spans - 1) / n_spans;
    span_tb += span_tb & 1; /* token blocks go in pairs */
    if (span_tb > n_tb)
        span_tb = n_tb;
    /* two panels: one in the tiles, the next being unpacked */
    int8_t *panels = aligned_alloc(64, (size_t)2 * PANEL_ROWS * cols);
    int8_t *acts = aligned_alloc(64, (size_t)span_tb * tb_bytes);
    int32_t *scratch = aligned_alloc(64, 16 * 16 * sizeof(int32_t));
    if (!panels || !acts || !scratch) {
        free(panels);
        free(acts);
        free(scratch);
        kernels_scalar.i2s_gemm(w, xq, ldx, n_tok, r0, r1, out, ldo);
        return;
    }

    struct tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) {
        cfg.rows[i] = 16;
        cfg.colsb[i] = 64;
    }
    load_tile_config(&cfg);

    for (int s0 = 0; s0 < n_tok; s0 += 16 * span_tb) {
        int s1 = s0 + 16 * span_tb < n_tok ? s0 + 16 * span_tb : n_tok;
        for (int b = 0; b < (s1 - s0 + 15) / 16; b++)
            relayout_tokens(xq, ldx, s0 + 16 * b, n_tok, n_k, acts + (size_t)b * tb_bytes);
        int n_pairs = (s1 - s0 + 31) / 32;
        struct unpacker next;
        int8_t *cur = panels, *spare = panels + (size_t)PANEL_ROWS * cols;
        unpacker_start(&next, w, r0, r1 - r0 < PANEL_ROWS ? r1 - r0 : PANEL_ROWS, cur,
                       cur + half);
        for (int r = r0; r < r1; r += PANEL_ROWS) {
            unpacker_finish(&next);
            int nr = r1 - r < PANEL_ROWS ? r1 - r : PANEL_ROWS;
            int rn = r + PANEL_ROWS; /* the next panel, unpacked during this one */
            int nrn = r1 - rn < PANEL_ROWS ? r1 - rn : PANEL_ROWS;
            unpacker_start(&next, w, rn, nrn, spare, spare + half);
            int every = next.total > 0 ? n_pairs * n_k / next.total : 1;
            every = every < 1 ? 1 : every;
            for (int i = 0; i < n_pairs; i++) {
                int t = s0 + 32 * i, nt = s1 - t < 32 ? s1 - t : 32;
                block_pair(cur, cur + half, nr, acts + (size_t)(2 * i) * tb_bytes, tb_bytes,
                           nt, n_k, &next, every, out + (size_t)t * ldo + r, ldo, scratch);
            }
            int8_t *t = cur;
            cur = spare;
            spare = t;
        }
    }
    _tile_release();
    free(panels);
    free(acts);
    free(scratch);
}

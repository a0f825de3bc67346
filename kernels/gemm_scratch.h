/* The scratch of one call of an x86 prefill GEMM (gemm_avx2.c, gemm_avx512.c): the
 * activations re-laid out by column group, one panel of unpacked weight rows, and each
 * token's sum of activations. */
#ifndef BITNET_GEMM_SCRATCH_H
#define BITNET_GEMM_SCRATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

struct gemm_scratch {
    int32_t *xr;
    uint8_t *panel;
    int32_t *sumx;
};

static inline void gemm_scratch_free(struct gemm_scratch *s)
{
    free(s->xr);
    free(s->panel);
    free(s->sumx);
}

/* Re-lays tokens [t0, t0 + nt) into xr[g * nt + t] (4 bytes of token t0 + t at column
 * group g) and stores each one's sum of activations: each set's own SIMD loop. */
typedef void (*gemm_relayout_fn)(const int8_t *xq, size_t ldx, int t0, int nt, int cols,
                                 int32_t *xr, int32_t *sumx);

/* Scratch for n_tok tokens of cols activations (a multiple of 128, as I2_S rows are) and
 * panels of panel_rows rows, with the activations re-laid out in blocks of tok_block
 * tokens. False, holding nothing, when memory is short: the caller then runs the scalar
 * GEMM. */
static inline bool gemm_scratch_get(struct gemm_scratch *s, const int8_t *xq, size_t ldx,
                                    int n_tok, int cols, int panel_rows, int tok_block,
                                    gemm_relayout_fn relayout)
{
    /* aligned_alloc wants sizes in multiples of the alignment */
    s->xr = aligned_alloc(64, ((size_t)n_tok * cols + 63) & ~(size_t)63);
    s->panel = aligned_alloc(64, (size_t)panel_rows * cols);
    s->sumx = malloc((size_t)n_tok * sizeof *s->sumx);
    if (!s->xr || !s->panel || !s->sumx) {
        gemm_scratch_free(s);
        return false;
    }
    for (int t0 = 0; t0 < n_tok; t0 += tok_block) {
        int nt = n_tok - t0 < tok_block ? n_tok - t0 : tok_block;
        relayout(xq, ldx, t0, nt, cols, s->xr + (size_t)t0 * (cols / 4), s->sumx + t0);
    }
    return true;
}

#endif

/* A BitNet b1.58 model bound to its GGUF mapping: hyperparameters read from the
 * metadata, every tensor found, shape-checked and typed, nothing copied. */
#ifndef BITNET_MODEL_H
#define BITNET_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/kernels.h"
#include "kernels/threadpool.h"
#include "model/errbuf.h"
#include "model/gguf.h"

#define BITNET_ARCH "bitnet-b1.58"

struct bitnet_hparams {
    uint32_t n_embd;
    uint32_t n_layer;
    uint32_t n_head;
    uint32_t n_head_kv;
    uint32_t head_dim;
    uint32_t n_ff;
    uint32_t n_vocab;
    uint32_t n_ctx_train;
    float rope_base;
    float norm_eps;
};

struct bitnet_layer {
    const float *attn_norm;     /* [n_embd] */
    const float *attn_sub_norm; /* [n_embd] */
    const float *ffn_norm;      /* [n_embd] */
    const float *ffn_sub_norm;  /* [n_ff] */
    struct ternary_matrix wq, wk, wv, wo, wgate, wup, wdown;
};

/* The ternary matrices of a layer, in one order for whoever walks them all. */
#define BITNET_LAYER_MATRICES 7
static inline void bitnet_layer_matrices(struct bitnet_layer *L,
                                         struct ternary_matrix *out[BITNET_LAYER_MATRICES])
{
    struct ternary_matrix *all[BITNET_LAYER_MATRICES] = {&L->wq,    &L->wk,  &L->wv,   &L->wo,
                                                         &L->wgate, &L->wup, &L->wdown};
    for (int i = 0; i < BITNET_LAYER_MATRICES; i++)
        out[i] = all[i];
}

struct bitnet_model {
    struct gguf_file file;
    struct bitnet_hparams hp;
    struct dense_matrix tok_embd;  /* n_vocab rows of n_embd */
    struct dense_matrix output;    /* the output projection: tok_embd when tied */
    bool tied_output;
    const float *output_norm;
    struct bitnet_layer *layers;
    /* an int8 copy of the output projection, made on request at load (q == NULL when
     * absent); the forward pass uses it instead of `output` when present */
    struct q8_matrix output_q8;
    void *output_q8_mem;
    void *repacked_mem;            /* the I2_S copies of TQ matrices (bitnet_model_repack) */
};

/* Opens path, checks it is a bitnet-b1.58 model this engine can run, binds tensors. */
int bitnet_model_load(struct bitnet_model *m, const char *path, struct errbuf *e);
void bitnet_model_free(struct bitnet_model *m);

/* Makes output_q8 from output: one scale per row (absmax / 127), values rounded to
 * nearest. Rows are converted in parallel on pool (may be NULL). */
int bitnet_model_build_q8_head(struct bitnet_model *m, struct threadpool *pool, struct errbuf *e);
/* The same for rows [r0, r1) only (a tensor-parallel rank's): the copy keeps the whole
 * head's layout, but the other rows are neither converted nor given memory. */
int bitnet_model_build_q8_head_rows(struct bitnet_model *m, struct threadpool *pool, int r0, int r1,
                                    struct errbuf *e);

/* TQ1_0 and TQ2_0 matrices of layers [l0, l1) as I2_S copies, so that they run on the
 * I2_S kernels (SIMD decode and prefill) instead of the block-scaled scalar path: exact
 * for a matrix whose blocks all have one scale, or a zero one (llama.cpp writes each
 * block's largest magnitude, the one scale of a BitNet tensor); a matrix with several
 * scales stays as it is and is counted in *kept. The pages of the sources are released.
 * Rows in parallel on pool (may be NULL). */
int bitnet_model_repack(struct bitnet_model *m, uint32_t l0, uint32_t l1, struct threadpool *pool,
                        int *kept, struct errbuf *e);

/* Bytes of all ternary weights, and of the output projection in the form the forward
 * pass reads it (the int8 copy with its row scales and sums when made), for roofline
 * figures. */
uint64_t bitnet_model_ternary_bytes(const struct bitnet_model *m);
uint64_t bitnet_model_head_bytes(const struct bitnet_model *m);

#endif

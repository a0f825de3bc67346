/* The forward pass of spec section 4, one token at a time, over a KV cache. It is split
 * into embedding, one layer, and output so that a worker can run a range of layers. */
#ifndef BITNET_FORWARD_H
#define BITNET_FORWARD_H

#include <stdint.h>

#include "model/bitnet_model.h"
#include "model/errbuf.h"

struct forward_state {
    int n_ctx;
    float *x;        /* residual stream [n_embd] */
    float *xb;       /* normed input of a bitlinear [max(n_embd, n_ff)] */
    int8_t *xq;      /* its int8 quantization */
    int32_t *acc;    /* integer row sums [max(n_embd, n_ff)] */
    float *q, *k, *v;
    float *att;      /* attention scores [n_ctx] */
    float *attn_out; /* [n_embd] */
    float *hb, *hb2; /* FFN gate and up [n_ff] */
    float *rope_cos, *rope_sin; /* [head_dim / 2] for the current position */
    float *key_cache;   /* [n_layer][n_ctx][kv_dim] */
    float *value_cache;
    float *logits;   /* [n_vocab] */
};

int forward_state_init(struct forward_state *s, const struct bitnet_hparams *hp, int n_ctx,
                       struct errbuf *e);
void forward_state_free(struct forward_state *s);

/* x = embedding row of token. */
void forward_embed(const struct bitnet_model *m, int32_t token, float *x);
/* Prepares per-position tables (RoPE angles); call once per position before the layers. */
void forward_begin_position(const struct bitnet_model *m, struct forward_state *s, int pos);
/* Runs layer il on s->x at position pos, writing this position's K and V to the cache. */
void forward_layer(const struct bitnet_model *m, struct forward_state *s, uint32_t il, int pos);
/* s->logits = output projection of the final-normed s->x. */
void forward_output(const struct bitnet_model *m, struct forward_state *s);

/* Embedding and every layer for one token, without the output projection (prompt
 * tokens whose logits nobody reads). -1 and e filled if token or pos is out of range. */
int forward_advance(const struct bitnet_model *m, struct forward_state *s, int32_t token, int pos,
                    struct errbuf *e);

/* The whole pass for one token; returns s->logits, or NULL (and fills e) if the token id
 * or position is out of range. */
const float *forward_token(const struct bitnet_model *m, struct forward_state *s, int32_t token,
                           int pos, struct errbuf *e);

#endif

/* Token sampling: repetition penalty, then top-k, top-p, min-p, temperature, and a
 * seeded draw (the order llama.cpp applies them). temp <= 0 means greedy. */
#ifndef BITNET_SAMPLE_H
#define BITNET_SAMPLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/errbuf.h"

struct sampler_params {
    float temp;
    int top_k;           /* <= 0: off */
    float top_p;         /* >= 1: off */
    float min_p;         /* <= 0: off */
    float repeat_penalty; /* 1: off */
    int repeat_last_n;   /* how many recent tokens the penalty looks at */
    uint64_t seed;
};

void sampler_params_default(struct sampler_params *p);

struct sampler_candidate {
    int32_t id;
    float logit;
    float p;
};

struct sampler {
    struct sampler_params params;
    uint64_t rng;
    size_t n_vocab;
    struct sampler_candidate *cand;
    int32_t *recent;     /* ring of the last repeat_last_n accepted tokens */
    int n_recent;
    int recent_head;
};

int sampler_init(struct sampler *s, const struct sampler_params *p, size_t n_vocab,
                 struct errbuf *e);
void sampler_free(struct sampler *s);
/* Records a token (prompt or generated) for the repetition penalty. */
void sampler_accept(struct sampler *s, int32_t id);
/* Picks the next token from logits (not modified). */
int32_t sampler_sample(struct sampler *s, const float *logits);

/* Whether the k best logits of a row, best first, decide this sampler's token: top-k on
 * (at most k), no repetition penalty (it could lift a token from below them), temp > 0.
 * Then sampler_sample_top on them gives the token sampler_sample would on the whole row,
 * with the same draw, so a remote last stage need not send 128k floats a token. */
bool sampler_top_k_suffices(const struct sampler *s, size_t k);
/* ids/logits: at least params.top_k candidates, best first (ties: lower id first). */
int32_t sampler_sample_top(struct sampler *s, const int32_t *ids, const float *logits);

/* Index of the largest logit (ties: lowest id). */
int32_t argmax_f32(const float *x, size_t n);

#endif

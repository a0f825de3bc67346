#include "model/sample.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

void sampler_params_default(struct sampler_params *p)
{
    p->temp = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.05f;
    p->repeat_penalty = 1.0f;
    p->repeat_last_n = 64;
    p->seed = 0;
}

/* splitmix64: small, seedable, and the same stream on every machine. */
static uint64_t next_u64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double next_unit(uint64_t *state)
{
    return (double)(next_u64(state) >> 11) * (1.0 / 9007199254740992.0);
}

int sampler_init(struct sampler *s, const struct sampler_params *p, size_t n_vocab,
                 struct errbuf *e)
{
    memset(s, 0, sizeof *s);
    if (p->repeat_last_n < 0)
        return err_set(e, "repeat-last-n must not be negative");
    s->params = *p;
    s->rng = p->seed;
    s->n_vocab = n_vocab;
    s->cand = malloc(n_vocab * sizeof *s->cand);
    s->recent = malloc(((size_t)p->repeat_last_n + 1) * sizeof *s->recent);
    if (!s->cand || !s->recent) {
        sampler_free(s);
        return err_set(e, "out of memory for the sampler");
    }
    return 0;
}

void sampler_free(struct sampler *s)
{
    free(s->cand);
    free(s->recent);
    memset(s, 0, sizeof *s);
}

void sampler_accept(struct sampler *s, int32_t id)
{
    int cap = s->params.repeat_last_n;
    if (cap <= 0)
        return;
    s->recent[s->recent_head] = id;
    s->recent_head = (s->recent_head + 1) % cap;
    if (s->n_recent < cap)
        s->n_recent++;
}

int32_t argmax_f32(const float *x, size_t n)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return (int32_t)best;
}

static int by_logit_desc(const void *a, const void *b)
{
    const struct sampler_candidate *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit < y->logit ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Softmax over the first n candidates (already sorted, so cand[0] has the max). */
static void cand_softmax(struct sampler_candidate *c, size_t n, float temp)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) {
        c[i].p = expf((c[i].logit - c[0].logit) / temp);
        sum += c[i].p;
    }
    for (size_t i = 0; i < n; i++)
        c[i].p = (float)(c[i].p / sum);
}

static void apply_repeat_penalty(struct sampler *s)
{
    float pen = s->params.repeat_penalty;
    if (pen == 1.0f || s->n_recent == 0)
        return;
    /* each distinct recent token is penalised once, however often it occurred */
    for (int i = 0; i < s->n_recent; i++) {
        int32_t id = s->recent[i];
        bool seen = false;
        for (int j = 0; j < i; j++)
            seen |= s->recent[j] == id;
        if (seen || id < 0 || (size_t)id >= s->n_vocab)
            continue;
        float *l = &s->cand[id].logit;
        *l = *l > 0.0f ? *l / pen : *l * pen;
    }
}

/* top-p, min-p, temperature and the seeded draw over the first keep candidates, sorted
 * best first: what follows top-k, shared by both entry points so that they give the same
 * token from the same candidates. */
static int32_t draw(struct sampler *s, size_t keep)
{
    const struct sampler_params *p = &s->params;
    cand_softmax(s->cand, keep, 1.0f);
    if (p->top_p < 1.0f) {
        double cum = 0.0;
        for (size_t i = 0; i < keep; i++) {
            cum += s->cand[i].p;
            if (cum >= p->top_p) {
                keep = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0.0f) {
        float floor_p = s->cand[0].p * p->min_p;
        size_t i = 1;
        while (i < keep && s->cand[i].p >= floor_p)
            i++;
        keep = i;
    }
    cand_softmax(s->cand, keep, p->temp);

    double r = next_unit(&s->rng), cum = 0.0;
    for (size_t i = 0; i < keep; i++) {
        cum += s->cand[i].p;
        if (r < cum)
            return s->cand[i].id;
    }
    return s->cand[keep - 1].id;
}

bool sampler_top_k_suffices(const struct sampler *s, size_t k)
{
    const struct sampler_params *p = &s->params;
    return p->temp > 0.0f && p->top_k > 0 && (size_t)p->top_k <= k &&
           (size_t)p->top_k < s->n_vocab && (p->repeat_penalty == 1.0f || p->repeat_last_n <= 0);
}

int32_t sampler_sample_top(struct sampler *s, const int32_t *ids, const float *logits)
{
    size_t keep = (size_t)s->params.top_k;
    for (size_t i = 0; i < keep; i++) {
        s->cand[i].id = ids[i];
        s->cand[i].logit = logits[i];
    }
    return draw(s, keep);
}

int32_t sampler_sample(struct sampler *s, const float *logits)
{
    const struct sampler_params *p = &s->params;
    size_t n = s->n_vocab;
    for (size_t i = 0; i < n; i++) {
        s->cand[i].id = (int32_t)i;
        s->cand[i].logit = logits[i];
    }
    apply_repeat_penalty(s);
    if (p->temp <= 0.0f) {
        size_t best = 0;
        for (size_t i = 1; i < n; i++)
            if (s->cand[i].logit > s->cand[best].logit)
                best = i;
        return s->cand[best].id;
    }

    /* top-k first keeps the sort small; without it the whole vocabulary is sorted */
    size_t keep = n;
    if (p->top_k > 0 && p->top_k <= 64 && (size_t)p->top_k < n) {
        keep = (size_t)p->top_k;
        /* small k: k passes of selection beat sorting 128k candidates */
        for (size_t i = 0; i < keep; i++) {
            size_t best = i;
            for (size_t j = i + 1; j < n; j++)
                if (by_logit_desc(&s->cand[j], &s->cand[best]) < 0)
                    best = j;
            struct sampler_candidate t = s->cand[i];
            s->cand[i] = s->cand[best];
            s->cand[best] = t;
        }
    } else {
        qsort(s->cand, n, sizeof *s->cand, by_logit_desc);
        if (p->top_k > 0 && (size_t)p->top_k < n)
            keep = (size_t)p->top_k;
    }

    return draw(s, keep);
}

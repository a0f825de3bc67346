/* Tensor parallelism's promise (model/forward.h, struct forward_tp): K states, each
 * computing its rank's rows of every matrix and its KV heads, exchanging pieces through a
 * gather, give every rank bit for bit the logits of one state computing everything. Run
 * here with one thread per rank and an in-process gather, over a prompt batch, decode
 * steps and two sequences in one batch, for every KV cache type, uneven splits and the
 * int8 head; bitnet-worker's shared-memory gather is checked end to end by t_tensor_parallel. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "model/forward.h"
#include "tests/check.h"
#include "tests/util.h"

#define MAX_RANKS 4
#define N_CTX 32
#define N_BATCH 8

static const int32_t prompt[] = {128000, 791, 6864, 315, 9822, 374};
static const int32_t decode[] = {12366, 13, 578};
#define N_PROMPT (int)(sizeof prompt / sizeof prompt[0])
#define N_DECODE (int)(sizeof decode / sizeof decode[0])
/* the logits kept: every prompt position, then each decode step's */
#define N_LOGIT_ROWS (N_PROMPT + N_DECODE)

/* The ranks' meeting place: each copies its columns in, all wait, each copies the row
 * out, all wait again before the buffer is reused. */
struct group {
    pthread_barrier_t barrier;
    float *shared;
    size_t cap; /* floats */
    int n_gathers;
};

static void group_gather(void *ctx, float *buf, int n_rows, int width, int lo, int hi)
{
    struct group *g = ctx;
    if ((size_t)n_rows * width > g->cap) {
        fprintf(stderr, "test gather of %d x %d over the buffer\n", n_rows, width);
        abort();
    }
    for (int r = 0; r < n_rows; r++)
        memcpy(g->shared + (size_t)r * width + lo, buf + (size_t)r * width + lo,
               (size_t)(hi - lo) * sizeof(float));
    pthread_barrier_wait(&g->barrier);
    for (int r = 0; r < n_rows; r++)
        memcpy(buf + (size_t)r * width, g->shared + (size_t)r * width, (size_t)width * sizeof(float));
    pthread_barrier_wait(&g->barrier);
    if (lo == 0)
        g->n_gathers++;
}

struct rank_run {
    const struct bitnet_model *m;
    struct forward_tp tp;     /* NULL gather: the whole model, alone */
    enum kv_type kv;
    float *logits;            /* [N_LOGIT_ROWS][n_vocab] */
    int failed;
    char error[sizeof(struct errbuf)];
};

/* The prompt as one batch in slot 1 beside another sequence's rows in slot 0 (so rows
 * of two sequences share every product), then one decode row at a time. */
static void *run_rank(void *arg)
{
    struct rank_run *r = arg;
    const struct bitnet_model *m = r->m;
    struct errbuf e;
    struct forward_state s;
    struct forward_config cfg = {.n_ctx = N_CTX, .n_batch = N_BATCH, .kv_type = r->kv,
                                 .n_slots = 2, .tp = r->tp.gather ? &r->tp : NULL};
    if (forward_state_init(&s, m, &cfg, &e) < 0) {
        snprintf(r->error, sizeof r->error, "%s", e.msg);
        r->failed = 1;
        return NULL;
    }
    size_t V = m->hp.n_vocab;
    int slots[N_BATCH], pos[N_BATCH], rows[N_BATCH];
    int32_t toks[N_BATCH];
    for (int t = 0; t < N_PROMPT; t++) {
        slots[t] = 1, pos[t] = t, toks[t] = prompt[t], rows[t] = t;
    }
    slots[N_PROMPT] = 0, pos[N_PROMPT] = 0, toks[N_PROMPT] = 128000;
    int n = N_PROMPT + 1;
    if (forward_set_rows(m, &s, slots, pos, n, &e) < 0 || forward_embed(m, &s, toks, n, &e) < 0) {
        snprintf(r->error, sizeof r->error, "%s", e.msg);
        r->failed = 1;
        forward_state_free(&s);
        return NULL;
    }
    for (uint32_t il = 0; il < m->hp.n_layer; il++)
        forward_layer(m, &s, il);
    forward_output_rows(m, &s, rows, N_PROMPT, r->logits);
    for (int d = 0; d < N_DECODE; d++) {
        int p = N_PROMPT + d, slot = 1;
        if (forward_set_rows(m, &s, &slot, &p, 1, &e) < 0 ||
            forward_embed(m, &s, &decode[d], 1, &e) < 0) {
            snprintf(r->error, sizeof r->error, "%s", e.msg);
            r->failed = 1;
            break;
        }
        for (uint32_t il = 0; il < m->hp.n_layer; il++)
            forward_layer(m, &s, il);
        int row = 0;
        forward_output_rows(m, &s, &row, 1, r->logits + (size_t)p * V);
    }
    forward_state_free(&s);
    return NULL;
}

static float *whole(const struct bitnet_model *m, enum kv_type kv)
{
    struct rank_run r = {.m = m, .kv = kv};
    r.logits = calloc((size_t)N_LOGIT_ROWS * m->hp.n_vocab, sizeof(float));
    run_rank(&r);
    CHECK(!r.failed, "whole model: %s", r.error);
    return r.logits;
}

static void check_split(const struct bitnet_model *m, enum kv_type kv, int size, const float *want,
                        const char *what)
{
    struct errbuf e;
    struct group g = {.cap = (size_t)N_BATCH * m->hp.n_vocab};
    g.shared = calloc(g.cap, sizeof(float));
    pthread_barrier_init(&g.barrier, NULL, (unsigned)size);
    struct rank_run runs[MAX_RANKS];
    pthread_t th[MAX_RANKS];
    size_t V = m->hp.n_vocab;
    for (int k = 0; k < size; k++) {
        runs[k] = (struct rank_run){.m = m, .kv = kv};
        CHECK(forward_tp_split(&m->hp, k, size, &runs[k].tp, &e) == 0, "%s", e.msg);
        runs[k].tp.gather = group_gather;
        runs[k].tp.gather_ctx = &g;
        runs[k].logits = calloc((size_t)N_LOGIT_ROWS * V, sizeof(float));
    }
    /* the parts tile every dimension */
    for (int k = 1; k < size; k++)
        CHECK(runs[k].tp.kvh0 == runs[k - 1].tp.kvh1 && runs[k].tp.e0 == runs[k - 1].tp.e1 &&
                  runs[k].tp.f0 == runs[k - 1].tp.f1 && runs[k].tp.v0 == runs[k - 1].tp.v1,
              "%s: rank %d does not start where rank %d ends", what, k, k - 1);
    CHECK(runs[size - 1].tp.kvh1 == (int)m->hp.n_head_kv && runs[size - 1].tp.e1 == (int)m->hp.n_embd &&
              runs[size - 1].tp.f1 == (int)m->hp.n_ff && runs[size - 1].tp.v1 == (int)V,
          "%s: the last rank does not end at the model's sizes", what);
    for (int k = 0; k < size; k++)
        pthread_create(&th[k], NULL, run_rank, &runs[k]);
    for (int k = 0; k < size; k++)
        pthread_join(th[k], NULL);
    for (int k = 0; k < size; k++) {
        CHECK(!runs[k].failed, "%s rank %d: %s", what, k, runs[k].error);
        int bad = -1;
        for (int row = 0; row < N_LOGIT_ROWS && bad < 0; row++)
            if (memcmp(runs[k].logits + (size_t)row * V, want + (size_t)row * V, V * sizeof(float)))
                bad = row;
        CHECK(bad < 0, "%s rank %d: logits of row %d differ from the whole model's", what, k, bad);
        free(runs[k].logits);
    }
    /* 4 per layer per step, and the head's after the prompt and each decode step */
    int want_gathers = (int)(4 * m->hp.n_layer + 1) * (1 + N_DECODE);
    CHECK(g.n_gathers == want_gathers, "%s: %d gathers, expected %d", what, g.n_gathers,
          want_gathers);
    pthread_barrier_destroy(&g.barrier);
    free(g.shared);
}

int main(void)
{
    kernels_init();
    struct errbuf e;
    /* 4 KV heads of 2 query heads each, so that 2, 3 and 4 ranks split them (3 unevenly) */
    const char *path = "build/test-tmp/test_forward_tp.gguf";
    CHECK(run_cmd("mkdir -p build/test-tmp && build/bitnetctl model synth --out %s --shape tiny "
                  "--heads 8 --kv-heads 4 --layers 3 --seed 7 2>/dev/null",
                  path) == 0,
          "model synth failed");
    struct bitnet_model m;
    if (bitnet_model_load(&m, path, &e) < 0) {
        CHECK(0, "%s", e.msg);
        return check_done("test_forward_tp");
    }
    struct forward_tp tp;
    CHECK(forward_tp_split(&m.hp, 0, 5, &tp, &e) < 0 && strstr(e.msg, "KV heads"),
          "5 ranks over 4 KV heads accepted");
    static const enum kv_type kinds[] = {KV_TYPE_F32, KV_TYPE_F16, KV_TYPE_Q8};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        float *want = whole(&m, kinds[i]);
        for (int size = 2; size <= 4; size++) {
            char what[64];
            snprintf(what, sizeof what, "kv %s, %d ranks", kv_type_name(kinds[i]), size);
            check_split(&m, kinds[i], size, want, what);
        }
        free(want);
    }
    /* the int8 head: each rank multiplies its rows of it */
    CHECK(bitnet_model_build_q8_head(&m, NULL, &e) == 0, "%s", e.msg);
    float *want = whole(&m, KV_TYPE_F32);
    check_split(&m, KV_TYPE_F32, 3, want, "int8 head, 3 ranks");
    free(want);
    bitnet_model_free(&m);
    return check_done("test_forward_tp");
}

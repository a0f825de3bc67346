/* The forward pass's batching contract, which the workers build on: rows of several
 * sequences in one batch (continuous batching) and a model cut into layer ranges run by
 * separate states must give exactly the logits of one sequence run alone, whole; with
 * the F32 and the int8 KV cache alike (whose scales sit beside the cache of each slot
 * and layer). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "model/forward.h"
#include "tests/check.h"

#define MODEL SHARED_DATA("xval/tiny.gguf")

static const int32_t seq_a[] = {128000, 791, 6864, 315, 9822, 374, 12366};
static const int32_t seq_b[] = {128000, 12805, 5304, 264, 892, 11};

static enum kv_type kv; /* of every state the tests make */

/* Logits of every position of one sequence, run alone through every layer. */
static float *alone(const struct bitnet_model *m, struct threadpool *pool, const int32_t *ids,
                    int n)
{
    struct forward_state s;
    struct errbuf e;
    struct forward_config cfg = {.n_ctx = 16, .n_batch = 1, .pool = pool, .kv_type = kv};
    CHECK(forward_state_init(&s, m, &cfg, &e) == 0, "%s", e.msg);
    size_t V = m->hp.n_vocab;
    float *out = malloc((size_t)n * V * sizeof(float));
    for (int p = 0; p < n; p++) {
        const float *l = forward_token(m, &s, ids[p], p, &e);
        CHECK(l, "%s", e.msg);
        memcpy(out + p * V, l, V * sizeof(float));
    }
    forward_state_free(&s);
    return out;
}

static void test_interleaved_slots(const struct bitnet_model *m, struct threadpool *pool,
                                   const float *ra, const float *rb)
{
    struct forward_state s;
    struct errbuf e;
    struct forward_config cfg = {.n_ctx = 16, .n_batch = 8, .pool = pool, .n_slots = 3,
                                 .kv_type = kv};
    CHECK(forward_state_init(&s, m, &cfg, &e) == 0, "%s", e.msg);
    size_t V = m->hp.n_vocab;
    /* step 1: a's first 3 positions (slot 2) and b's first 2 (slot 0) in one batch */
    int slots1[] = {2, 2, 2, 0, 0}, pos1[] = {0, 1, 2, 0, 1};
    int32_t tok1[] = {seq_a[0], seq_a[1], seq_a[2], seq_b[0], seq_b[1]};
    CHECK(forward_set_rows(m, &s, slots1, pos1, 5, &e) == 0, "%s", e.msg);
    CHECK(forward_embed(m, &s, tok1, 5, &e) == 0, "%s", e.msg);
    for (uint32_t il = 0; il < m->hp.n_layer; il++)
        forward_layer(m, &s, il);
    int bad = 0;
    for (int t = 0; t < 5; t++) {
        forward_output(m, &s, t);
        const float *want = slots1[t] == 2 ? ra + pos1[t] * V : rb + pos1[t] * V;
        bad += memcmp(s.logits, want, V * sizeof(float)) != 0;
    }
    /* the same rows' logits in one pass over the head, reordered and repeated */
    int pick[] = {4, 0, 2, 2, 3};
    float *many = malloc(5 * V * sizeof(float));
    forward_output_rows(m, &s, pick, 5, many);
    for (int i = 0; i < 5; i++) {
        int t = pick[i];
        const float *want = slots1[t] == 2 ? ra + pos1[t] * V : rb + pos1[t] * V;
        bad += memcmp(many + i * V, want, V * sizeof(float)) != 0;
    }
    free(many);
    /* step 2: decode-style rows, one per sequence, in the other order */
    for (int step = 0; step < 3; step++) {
        int slots2[] = {0, 2}, pos2[] = {2 + step, 3 + step};
        int32_t tok2[] = {seq_b[2 + step], seq_a[3 + step]};
        CHECK(forward_set_rows(m, &s, slots2, pos2, 2, &e) == 0, "%s", e.msg);
        CHECK(forward_embed(m, &s, tok2, 2, &e) == 0, "%s", e.msg);
        for (uint32_t il = 0; il < m->hp.n_layer; il++)
            forward_layer(m, &s, il);
        forward_output(m, &s, 0);
        bad += memcmp(s.logits, rb + pos2[0] * V, V * sizeof(float)) != 0;
        forward_output(m, &s, 1);
        bad += memcmp(s.logits, ra + pos2[1] * V, V * sizeof(float)) != 0;
    }
    CHECK(bad == 0, "kv %s: %d rows of a mixed batch differ from the sequences run alone",
          kv_type_name(kv), bad);
    int bad_slot[] = {3}, bad_pos[] = {0}, far_pos[] = {16}, zero[] = {0};
    CHECK(forward_set_rows(m, &s, bad_slot, bad_pos, 1, &e) < 0 && strstr(e.msg, "slot"),
          "slot out of range refused: %s", e.msg);
    CHECK(forward_set_rows(m, &s, zero, far_pos, 1, &e) < 0 && strstr(e.msg, "context"),
          "position out of range refused: %s", e.msg);
    forward_state_free(&s);
}

/* Two states owning layers [0, cut) and [cut, n_layer), the hidden state handed over
 * between them as a worker chain does. */
static void test_layer_split(const struct bitnet_model *m, struct threadpool *pool,
                             const float *ra, uint32_t cut)
{
    struct forward_state a, b;
    struct errbuf e;
    struct forward_config ca = {.n_ctx = 16, .n_batch = 4, .pool = pool, .layer_begin = 0,
                                .layer_end = cut, .kv_type = kv};
    struct forward_config cb = ca;
    cb.layer_begin = cut;
    cb.layer_end = m->hp.n_layer;
    CHECK(forward_state_init(&a, m, &ca, &e) == 0, "%s", e.msg);
    CHECK(forward_state_init(&b, m, &cb, &e) == 0, "%s", e.msg);
    size_t V = m->hp.n_vocab, D = m->hp.n_embd;
    int n = (int)(sizeof seq_a / sizeof seq_a[0]), bad = 0;
    for (int p0 = 0; p0 < n; p0 += 4) {
        int rows = n - p0 < 4 ? n - p0 : 4, slots[4] = {0}, pos[4];
        for (int t = 0; t < rows; t++)
            pos[t] = p0 + t;
        CHECK(forward_set_rows(m, &a, slots, pos, rows, &e) == 0, "%s", e.msg);
        CHECK(forward_embed(m, &a, seq_a + p0, rows, &e) == 0, "%s", e.msg);
        for (uint32_t il = 0; il < cut; il++)
            forward_layer(m, &a, il);
        CHECK(forward_set_rows(m, &b, slots, pos, rows, &e) == 0, "%s", e.msg);
        memcpy(b.x, a.x, (size_t)rows * D * sizeof(float));
        for (uint32_t il = cut; il < m->hp.n_layer; il++)
            forward_layer(m, &b, il);
        for (int t = 0; t < rows; t++) {
            forward_output(m, &b, t);
            bad += memcmp(b.logits, ra + (size_t)(p0 + t) * V, V * sizeof(float)) != 0;
        }
    }
    CHECK(bad == 0, "kv %s, split at layer %u: %d positions differ", kv_type_name(kv), cut, bad);
    struct forward_config bad_cfg = {.n_ctx = 4, .n_batch = 1, .layer_begin = 3, .layer_end = 9};
    struct forward_state x;
    CHECK(forward_state_init(&x, m, &bad_cfg, &e) < 0 && strstr(e.msg, "layer range"),
          "bad layer range refused: %s", e.msg);
    forward_state_free(&a);
    forward_state_free(&b);
}

/* With the int8 head too, several rows' logits in one call are each row's own. */
static void test_q8_head_rows(struct bitnet_model *m, struct threadpool *pool)
{
    struct errbuf e;
    CHECK(bitnet_model_build_q8_head(m, pool, &e) == 0, "%s", e.msg);
    struct forward_state s;
    struct forward_config cfg = {.n_ctx = 16, .n_batch = 8, .pool = pool};
    CHECK(forward_state_init(&s, m, &cfg, &e) == 0, "%s", e.msg);
    size_t V = m->hp.n_vocab;
    int n = (int)(sizeof seq_a / sizeof seq_a[0]), rows[7], bad = 0;
    CHECK(forward_batch(m, &s, seq_a, n, 0, &e) == 0, "%s", e.msg);
    for (int t = 0; t < n; t++)
        rows[t] = n - 1 - t;
    float *many = malloc((size_t)n * V * sizeof(float));
    forward_output_rows(m, &s, rows, n, many);
    for (int t = 0; t < n; t++) {
        forward_output(m, &s, rows[t]);
        bad += memcmp(many + (size_t)t * V, s.logits, V * sizeof(float)) != 0;
    }
    CHECK(bad == 0, "q8 head: %d of %d rows differ when computed together", bad, n);
    free(many);
    forward_state_free(&s);
}

int main(void)
{
    kernels_init();
    struct bitnet_model m;
    struct errbuf e;
    if (bitnet_model_load(&m, MODEL, &e) < 0) {
        CHECK(0, "%s", e.msg);
        return check_done("test_forward_rows");
    }
    struct threadpool *pool = threadpool_new(2, false, &e);
    static const enum kv_type kinds[] = {KV_TYPE_F32, KV_TYPE_Q8};
    float *f32_a = NULL;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        kv = kinds[i];
        float *ra = alone(&m, pool, seq_a, 7), *rb = alone(&m, pool, seq_b, 6);
        test_interleaved_slots(&m, pool, ra, rb);
        for (uint32_t cut = 1; cut < m.hp.n_layer; cut++)
            test_layer_split(&m, pool, ra, cut);
        if (kv == KV_TYPE_F32)
            f32_a = ra;
        else
            CHECK(memcmp(f32_a, ra, 7 * m.hp.n_vocab * sizeof(float)) != 0,
                  "kv q8 gave the f32 cache's logits");
        if (ra != f32_a)
            free(ra);
        free(rb);
    }
    free(f32_a);
    kv = KV_TYPE_F32;
    test_q8_head_rows(&m, pool);
    threadpool_free(pool);
    bitnet_model_free(&m);
    return check_done("test_forward_rows");
}

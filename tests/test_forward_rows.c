/* The forward pass's batching contract, which the workers build on: rows of several
 * sequences in one batch (continuous batching) and a model cut into layer ranges run by
 * separate states must give exactly the logits of one sequence run alone, whole; with
 * the F32 and the int8 KV cache alike (whose scales sit beside the cache of each slot
 * and layer). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "model/forward.h"
#include "tests/check.h"
#include "tests/util.h"

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

/* Logits of positions [0, n) of ids with attention cut into segments of seg positions
 * (model/attention_rows.c): in batches of batch rows, or one position per call. */
static float *segmented(const struct bitnet_model *m, struct threadpool *pool, const int32_t *ids,
                        int n, int seg, int batch)
{
    struct forward_state s;
    struct errbuf e;
    struct forward_config cfg = {.n_ctx = n, .n_batch = batch, .pool = pool, .kv_type = kv,
                                 .attn_segment = seg};
    CHECK(forward_state_init(&s, m, &cfg, &e) == 0, "%s", e.msg);
    size_t V = m->hp.n_vocab;
    float *out = malloc((size_t)n * V * sizeof(float));
    for (int p0 = 0; p0 < n; p0 += batch) {
        int k = n - p0 < batch ? n - p0 : batch;
        CHECK(forward_batch(m, &s, ids + p0, k, p0, &e) == 0, "%s", e.msg);
        for (int t = 0; t < k; t++) {
            forward_output(m, &s, t);
            memcpy(out + (size_t)(p0 + t) * V, s.logits, V * sizeof(float));
        }
    }
    forward_state_free(&s);
    return out;
}

/* Segments change a row's result by rounding only, and never with the batching or the
 * threads: a long sequence cut into segments of 16 positions, in one batch on two
 * threads and one position at a time on one, gives the same logits bit for bit, and
 * logits near those of the same sequence attended whole. Measured: 1.6e-5 with the F32
 * cache (float rounding), 0.055 with the int8 one (whose value weights are rounded to
 * int16 against each block's largest, and a segment's blocks are others), which this
 * random model's int8 activations amplify. A merge that ignored the segments' maxima,
 * dropped the last segment or weighed segments equally missed by 10 or more (tried
 * while writing this). */
#define SEG_TOL_F32 0.001f
#define SEG_TOL_Q8 0.2f
#define SEG_LEN 70
static void test_segments(const struct bitnet_model *m, struct threadpool *pool)
{
    int32_t ids[SEG_LEN];
    ids[0] = 128000;
    for (int i = 1; i < SEG_LEN; i++)
        ids[i] = (int32_t)((i * 7919) % 100000 + 100);
    size_t V = m->hp.n_vocab, all = (size_t)SEG_LEN * V;
    float *batched = segmented(m, pool, ids, SEG_LEN, 16, SEG_LEN);
    float *stepped = segmented(m, NULL, ids, SEG_LEN, 16, 1);
    float *whole = segmented(m, pool, ids, SEG_LEN, 0, SEG_LEN);
    CHECK(memcmp(batched, stepped, all * sizeof(float)) == 0,
          "kv %s: segmented logits differ between one batch on 2 threads and one row at a "
          "time on 1", kv_type_name(kv));
    float worst = 0.0f;
    for (size_t i = 0; i < all; i++) {
        float dlt = fabsf(batched[i] - whole[i]);
        worst = dlt > worst ? dlt : worst;
    }
    float tol = kv == KV_TYPE_Q8 ? SEG_TOL_Q8 : SEG_TOL_F32;
    CHECK(worst <= tol, "kv %s: segmented attention moved logits by %g (tolerance %g)",
          kv_type_name(kv), worst, tol);
    /* the cut did happen: some logit past the first segment differs */
    CHECK(memcmp(batched + 17 * V, whole + 17 * V, (SEG_LEN - 17) * V * sizeof(float)) != 0,
          "kv %s: segments of 16 gave the whole-cache logits bit for bit", kv_type_name(kv));
    printf("kv %s: %d positions in segments of 16: batch and steps identical, max |diff| from "
           "whole attention %.2e\n", kv_type_name(kv), SEG_LEN, worst);
    free(batched);
    free(stepped);
    free(whole);
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
    /* tiny.gguf is just a convenient model here: without ../shared, one of its shape
     * (whose seed keeps SEG_TOL_F32 meaningful, see tests/util.c) */
    const char *model = tiny_model_path("test_forward_rows");
    CHECK(model, "no model");
    if (!model)
        return check_done("test_forward_rows");
    if (bitnet_model_load(&m, model, &e) < 0) {
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
        test_segments(&m, pool);
    }
    free(f32_a);
    kv = KV_TYPE_F32;
    test_q8_head_rows(&m, pool);
    threadpool_free(pool);
    bitnet_model_free(&m);
    return check_done("test_forward_rows");
}

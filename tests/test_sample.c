/* The sampler from a row's k best logits (what a last stage sends for a top-k job) gives
 * the token the sampler gives from the whole row, draw for draw; and it is offered only
 * where that holds (top-k on and within k, no repetition penalty, temperature above 0). */
#include <stdlib.h>
#include <string.h>

#include "model/sample.h"
#include "tests/check.h"

#define V 5000
#define K 64

/* The k best of x, best first, ties to the lower id (the order a worker sends). */
static int by_desc(const void *a, const void *b, void *x)
{
    const float *l = x;
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    if (l[i] != l[j])
        return l[i] < l[j] ? 1 : -1;
    return i < j ? -1 : i > j;
}

static void top_list(const float *x, int32_t *ids, float *vals)
{
    static int32_t all[V];
    for (int i = 0; i < V; i++)
        all[i] = i;
    qsort_r(all, V, sizeof *all, by_desc, (void *)x);
    for (int i = 0; i < K; i++) {
        ids[i] = all[i];
        vals[i] = x[all[i]];
    }
}

static uint64_t rng = 88172645463325252ull;
static float next_logit(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    /* coarse values, so that ties happen and their order matters */
    return (float)((int)(rng % 4001) - 2000) / 100.0f;
}

int main(void)
{
    struct { float temp, top_p, min_p; int top_k; } cases[] = {
        {0.8f, 1.0f, 0.0f, 40}, {1.0f, 0.9f, 0.0f, 64}, {0.5f, 1.0f, 0.05f, 8},
        {1.5f, 0.95f, 0.1f, 1}, {0.7f, 0.5f, 0.0f, 2},
    };
    static float row[V];
    int32_t ids[K];
    float vals[K];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct sampler_params p;
        sampler_params_default(&p);
        p.temp = cases[c].temp;
        p.top_p = cases[c].top_p;
        p.min_p = cases[c].min_p;
        p.top_k = cases[c].top_k;
        p.repeat_penalty = 1.0f;
        p.seed = 1234 + c;
        struct sampler whole, top;
        struct errbuf e;
        if (sampler_init(&whole, &p, V, &e) < 0 || sampler_init(&top, &p, V, &e) < 0) {
            CHECK(0, "sampler_init: %s", e.msg);
            return check_done("test_sample");
        }
        CHECK(sampler_top_k_suffices(&top, K), "case %zu: top-k %d not offered", c, p.top_k);
        int differ = 0;
        for (int draw = 0; draw < 300; draw++) {
            for (int i = 0; i < V; i++)
                row[i] = next_logit();
            top_list(row, ids, vals);
            int32_t a = sampler_sample(&whole, row), b = sampler_sample_top(&top, ids, vals);
            differ += a != b;
        }
        CHECK(differ == 0, "case %zu: %d of 300 draws differ between the row and its top %d", c,
              differ, K);
        sampler_free(&whole);
        sampler_free(&top);
    }
    /* where the best logits do not decide: not offered */
    struct { const char *why; float temp, penalty; int top_k; } refused[] = {
        {"a repetition penalty", 0.8f, 1.1f, 40}, {"no top-k", 0.8f, 1.0f, 0},
        {"top-k above k", 0.8f, 1.0f, 65}, {"greedy (the argmax is enough there)", 0.0f, 1.0f, 40},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        struct sampler s;
        struct sampler_params p;
        struct errbuf e;
        sampler_params_default(&p);
        p.temp = refused[i].temp, p.top_k = refused[i].top_k;
        p.repeat_penalty = refused[i].penalty, p.repeat_last_n = 64;
        if (sampler_init(&s, &p, V, &e) < 0) {
            CHECK(0, "sampler_init: %s", e.msg);
            continue;
        }
        CHECK(!sampler_top_k_suffices(&s, K), "offered with %s", refused[i].why);
        sampler_free(&s);
    }
    return check_done("test_sample");
}

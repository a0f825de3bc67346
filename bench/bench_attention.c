/* Decode attention on the 2B-4T shape, one core: one token's worth of calls (30 layers x
 * 5 KV heads, each serving its 4 query heads) over 150 distinct caches, as the forward
 * pass reads them from memory, for every cache type and every kernel set this CPU runs.
 * Prints the median time of a token's attention and the cache bytes it read per second,
 * beside the read probe of one core: attention is worth what it streams.
 *
 * With `prefill N` instead: one layer's attention over a prompt of N tokens, row t of
 * each of the 5 KV heads attending over positions 0..t, one head's rows after another;
 * the cache is then in L2, and the kernels are worth the multiply-adds they do (GFLOP/s,
 * a multiply and an add each).
 *
 * usage: [BITNET_KERNEL=set] bench_attention [positions...]   (default 640 4096; pin with
 *        [BITNET_KERNEL=set] bench_attention prefill N          taskset) */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/read_bandwidth.h"
#include "bench/timing.h"
#include "kernels/attention.h"
#include "kernels/cpu_features.h"
#include "kernels/kernels.h"
#include "kernels/kernels_x86.h"
#include "model/clock.h"
#include "model/errbuf.h"

#define KV_HEADS 150 /* 30 layers x 5 */
#define GROUP 4      /* query heads per KV head */
#define HEAD_DIM 128
#define REPEATS 9

/* dispatch refers to the optimized sets weakly; naming them here links them */
static const struct kernel_ops *const linked_sets[] = {&kernels_avx2, &kernels_avx512};

enum cache { C_F32, C_F16, C_Q8 };
static const char *const cache_names[] = {"f32", "f16", "q8"};

/* Element bytes of a cache type. */
static size_t elem_bytes(enum cache c) { return c == C_F32 ? 4 : c == C_F16 ? 2 : 1; }

struct caches {
    uint8_t *k, *v;      /* KV_HEADS blocks of keys (tiles) and values */
    float *k_scale, *v_scale;
    size_t k_block, v_block; /* bytes per head */
    int n, np;
};

static int caches_make(struct caches *c, enum cache type, int n)
{
    memset(c, 0, sizeof *c);
    c->n = n;
    c->np = attn_tiles_len(n);
    c->k_block = (size_t)c->np * HEAD_DIM * elem_bytes(type);
    c->v_block = c->k_block;
    size_t kb = (c->k_block * KV_HEADS + 63) & ~(size_t)63;
    size_t sb = ((size_t)c->np * KV_HEADS * sizeof(float) + 63) & ~(size_t)63;
    c->k = aligned_alloc(64, kb);
    c->v = aligned_alloc(64, kb);
    c->k_scale = aligned_alloc(64, sb);
    c->v_scale = aligned_alloc(64, sb);
    if (!c->k || !c->v || !c->k_scale || !c->v_scale)
        return -1;
    /* small values of every type: 1/64 in F32, F16 0x2400, int8 patterns */
    for (size_t i = 0; i < kb; i++) {
        if (type == C_Q8)
            c->k[i] = (uint8_t)(i * 7), c->v[i] = (uint8_t)(i * 13);
        else if (type == C_F16)
            c->k[i] = c->v[i] = (uint8_t)(i % 2 ? 0x24 : (i * 5) & 0xff);
        else
            c->k[i] = c->v[i] = (uint8_t)(i % 4 == 3 ? 0x3c : i % 4 == 2 ? 0x80 : 0);
    }
    for (size_t i = 0; i < sb / sizeof(float); i++)
        c->k_scale[i] = c->v_scale[i] = 1.0f / 64;
    return 0;
}

static void caches_free(struct caches *c)
{
    free(c->k);
    free(c->v);
    free(c->k_scale);
    free(c->v_scale);
}

/* The queries and outputs every call shares: what is timed is the cache's reading. */
static float queries[GROUP * HEAD_DIM], outputs[GROUP * HEAD_DIM];
static int8_t queries_q8[GROUP * HEAD_DIM];

/* KV head h's attention over its first n positions. */
static void attend_head(const struct kernel_ops *set, enum cache type, const struct caches *c,
                        int h, int n, float *scratch)
{
    if (type == C_Q8) {
        struct attn_group_q8 a = {
            .q = queries, .out = outputs, .g = GROUP, .d = HEAD_DIM, .n = n, .scale = 0.088f,
            .scratch = scratch, .q8 = queries_q8,
            .k = (const int8_t *)(c->k + c->k_block * h),
            .v = (const int8_t *)(c->v + c->v_block * h),
            .k_scale = c->k_scale + (size_t)c->np * h,
            .v_scale = c->v_scale + (size_t)c->np * h,
        };
        set->attn_q8(&a);
        return;
    }
    struct attn_group a = {
        .q = queries, .out = outputs, .g = GROUP, .d = HEAD_DIM, .n = n, .scale = 0.088f,
        .scratch = scratch, .k = c->k + c->k_block * h, .v = c->v + c->v_block * h,
    };
    if (type == C_F16)
        set->attn_f16(&a);
    else
        set->attn_f32(&a);
}

#define LAYER_KV_HEADS 5

/* The median time of one token's decode attention (every KV head once, over all c->n
 * positions), or with prefill of one layer's prompt attention (row t of each of the
 * layer's KV heads over positions 0..t); -1 when out of memory. */
static double time_attention(const struct kernel_ops *set, enum cache type,
                             const struct caches *c, bool prefill)
{
    for (int i = 0; i < GROUP * HEAD_DIM; i++)
        queries[i] = (float)(i % 17) * 0.1f - 0.8f;
    float *scratch = aligned_alloc(64, (size_t)GROUP * c->np * sizeof(float));
    if (!scratch)
        return -1;
    double t[REPEATS];
    for (int r = -1; r < REPEATS; r++) { /* r = -1: warm-up */
        double t0 = clock_seconds();
        if (prefill) {
            for (int h = 0; h < LAYER_KV_HEADS; h++)
                for (int row = 0; row < c->n; row++)
                    attend_head(set, type, c, h, row + 1, scratch);
        } else {
            for (int h = 0; h < KV_HEADS; h++)
                attend_head(set, type, c, h, c->n, scratch);
        }
        if (r >= 0)
            t[r] = clock_seconds() - t0;
    }
    free(scratch);
    return bench_middle(t, REPEATS);
}

int main(int argc, char **argv)
{
    int lens[8] = {640, 4096}, n_lens = 2;
    bool prefill = argc == 3 && strcmp(argv[1], "prefill") == 0;
    if (prefill) {
        char *end;
        long v = strtol(argv[2], &end, 10);
        if (*end || v < 1 || v > 1 << 16) {
            fprintf(stderr, "usage: %s prefill N  (N 1..65536)\n", argv[0]);
            return 2;
        }
        lens[0] = (int)v;
        n_lens = 1;
    } else if (argc > 1) {
        n_lens = 0;
        for (int i = 1; i < argc && n_lens < 8; i++) {
            char *end;
            long v = strtol(argv[i], &end, 10);
            if (*end || v < 1 || v > 1 << 20) {
                fprintf(stderr, "usage: %s [positions...]  (each 1..1048576)\n", argv[0]);
                return 2;
            }
            lens[n_lens++] = (int)v;
        }
    }
    struct cpu_features f;
    cpu_features_detect(&f);
    printf("CPU: %s; linked:", f.brand);
    for (size_t i = 0; i < sizeof linked_sets / sizeof *linked_sets; i++)
        printf(" %s", linked_sets[i]->name);
    struct errbuf e;
    double probe = 0;
    if (read_bandwidth_probe_isolated((size_t)1 << 30, 1, 5, &probe, &e) < 0)
        probe = 0;
    printf("; read probe, 1 thread: %.1f GB/s\n", probe);
    if (prefill) {
        printf("one layer's prompt attention: %d KV heads x %d query heads, head size %d, "
               "%d rows each, 1 thread; median of %d\n", LAYER_KV_HEADS, GROUP, HEAD_DIM,
               lens[0], REPEATS);
        printf("%-7s %-5s %9s %10s %8s\n", "set", "cache", "rows", "ms/layer", "GFLOP/s");
    } else {
        printf("one token's decode attention: %d KV heads x %d query heads, head size %d, "
               "1 thread; median of %d\n", KV_HEADS, GROUP, HEAD_DIM, REPEATS);
        printf("%-7s %-5s %9s %10s %8s %7s\n", "set", "cache", "positions", "ms/token", "GB/s",
               "%probe");
    }

    /* BITNET_KERNEL=NAME times that set alone */
    const char *only = getenv("BITNET_KERNEL");
    char names[128];
    snprintf(names, sizeof names, "%s", only && *only ? only : kernels_supported());
    for (char *tok = strtok(names, " "); tok; tok = strtok(NULL, " ")) {
        if (strcmp(tok, "amx") == 0)
            continue; /* AMX changes only the prefill GEMM */
        setenv("BITNET_KERNEL", tok, 1);
        if (kernels_init() != 0)
            continue;
        struct kernel_ops set = kops;
        for (int li = 0; li < n_lens; li++)
            for (int ci = 0; ci < 3; ci++) {
                struct caches c;
                if (caches_make(&c, (enum cache)ci, lens[li]) < 0) {
                    fprintf(stderr, "bench_attention: out of memory\n");
                    caches_free(&c);
                    return 1;
                }
                double t = time_attention(&set, (enum cache)ci, &c, prefill);
                if (t < 0) {
                    fprintf(stderr, "bench_attention: out of memory\n");
                    caches_free(&c);
                    return 1;
                }
                if (prefill) {
                    /* per (row, query head, position): head-size products for the score
                     * and as many for the values, each a multiply and an add */
                    double n = lens[li], flops = LAYER_KV_HEADS * GROUP * n * (n + 1) / 2 *
                                                 4.0 * HEAD_DIM;
                    printf("%-7s %-5s %9d %10.2f %8.1f\n", set.name, cache_names[ci], lens[li],
                           t * 1e3, flops / t / 1e9);
                    fflush(stdout);
                    caches_free(&c);
                    continue;
                }
                /* keys and values of n positions (and the int8 cache's scales) */
                double bytes = (double)KV_HEADS * lens[li] *
                               (2.0 * HEAD_DIM * elem_bytes((enum cache)ci) +
                                (ci == C_Q8 ? 2 * sizeof(float) : 0));
                printf("%-7s %-5s %9d %10.2f %8.1f %6.0f%%\n", set.name, cache_names[ci],
                       lens[li], t * 1e3, bytes / t / 1e9,
                       probe > 0 ? 100 * bytes / t / 1e9 / probe : 0.0);
                fflush(stdout);
                caches_free(&c);
            }
    }
    return 0;
}

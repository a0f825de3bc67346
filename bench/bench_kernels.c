/* Decode kernels on the 2B-4T shapes, every kernel set this CPU runs, 1 thread and all
 * of them: median time, GB/s of weight bytes, GOPS (2 * rows * cols / time) and speed-up
 * over scalar. Decode reads each weight once per token, so GB/s against the machine's
 * read bandwidth is the figure that matters.
 *
 * "hot": the same matrix every call (small ones then sit in cache: the kernel's compute
 * limit). "stream": calls rotate through copies spanning >= 2 GB, so every call reads
 * from memory, as a forward pass does. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bench/read_bandwidth.h"
#include "bench/timing.h"
#include "kernels/cpu_features.h"
#include "kernels/f16.h"
#include "kernels/kernels.h"
#include "kernels/kernels_x86.h"
#include "kernels/threadpool.h"
#include "model/clock.h"
#include "model/errbuf.h"
#include "model/forward.h"
#include "model/ggml_types.h"

#define STREAM_BYTES (2ull << 30)
#define MAX_SETS 4

/* dispatch refers to the optimized sets weakly, which does not pull them out of
 * libbitnet.a; naming them here links them. */
static const struct kernel_ops *const linked_sets[] = {&kernels_avx2, &kernels_avx512};

enum kind { K_I2S, K_F16, K_Q8 };

struct shape {
    enum kind kind;
    const char *kernel;
    const char *what;
    int rows, cols;
};

static const struct shape shapes[] = {
    {K_I2S, "i2s_dot_rows", "attn q/o", 2560, 2560},
    {K_I2S, "i2s_dot_rows", "attn k/v", 640, 2560},
    {K_I2S, "i2s_dot_rows", "ffn up/gate", 6912, 2560},
    {K_I2S, "i2s_dot_rows", "ffn down", 2560, 6912},
    {K_F16, "dense_dot_rows", "F16 output", 128256, 2560},
    {K_Q8, "q8_dot_rows", "q8 output", 128256, 2560},
};

static size_t row_bytes(enum kind k, int cols)
{
    return k == K_I2S ? (size_t)cols / 4 : k == K_F16 ? (size_t)cols * 2 : (size_t)cols;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* I2_S bytes whose four codes are all in 0..2 (also fine as int8 for q8). */
static void fill_codes(uint8_t *p, size_t n)
{
    static const uint8_t code[4] = {0, 1, 2, 1};
    for (size_t i = 0; i < n; i += 8) {
        uint64_t r = next(), v = 0;
        for (int b = 0; b < 32; b++)
            v |= (uint64_t)code[(r >> (2 * b)) & 3] << (2 * b);
        size_t k = n - i < 8 ? n - i : 8;
        memcpy(p + i, &v, k);
    }
}

/* Halves of ordinary magnitude: no infinities, NaNs or subnormals to slow anything. */
static void fill_f16(uint8_t *p, size_t n)
{
    uint16_t table[256];
    for (int i = 0; i < 256; i++)
        table[i] = f32_to_f16(((float)i - 127.5f) / 128.0f);
    for (size_t i = 0; i + 8 <= n; i += 8) {
        uint64_t r = next();
        uint16_t h[4] = {table[r & 255], table[(r >> 8) & 255], table[(r >> 16) & 255],
                         table[(r >> 24) & 255]};
        memcpy(p + i, h, 8);
    }
}

struct job {
    const struct kernel_ops *ops;
    enum kind kind;
    struct ternary_matrix tm;
    struct dense_matrix dm;
    struct q8_matrix qm;
    const int8_t *xq;
    const float *xf;
    int32_t *oi;
    float *of;
};

static void run_part(void *ctx, int ith, int nth)
{
    struct job *j = ctx;
    int rows = j->kind == K_I2S ? j->tm.rows : j->kind == K_F16 ? j->dm.rows : j->qm.rows;
    int lo, hi;
    split_range(rows, 16, ith, nth, &lo, &hi);
    if (lo >= hi)
        return;
    switch (j->kind) {
    case K_I2S: j->ops->i2s_dot_rows(&j->tm, j->xq, lo, hi, j->oi); break;
    case K_F16: j->ops->dense_dot_rows(&j->dm, j->xf, lo, hi, j->of); break;
    case K_Q8: j->ops->q8_dot_rows(&j->qm, j->xq, lo, hi, j->oi); break;
    }
}

static void point_at(struct job *j, const uint8_t *data)
{
    j->tm.data = data;
    j->dm.data = data;
    j->qm.q = (const int8_t *)data;
}

/* Median seconds per call: at least min_calls, more while under budget seconds. */
static double time_calls(struct threadpool *pool, struct job *j, const struct shape *s,
                         const uint8_t *arena, size_t copies, int min_calls, double budget)
{
    size_t bytes = (size_t)s->rows * row_bytes(s->kind, s->cols);
    double t[200];
    int n = 0;
    size_t copy = 0;
    point_at(j, arena);
    threadpool_run(pool, run_part, j); /* warm-up: page tables, pool threads awake */
    double start = clock_seconds();
    while (n < 200 && (n < min_calls || clock_seconds() - start < budget)) {
        copy = copy + 1 < copies ? copy + 1 : 0;
        point_at(j, arena + copy * bytes);
        double t0 = clock_seconds();
        threadpool_run(pool, run_part, j);
        t[n++] = clock_seconds() - t0;
    }
    return bench_middle(t, n);
}

/* One decoded token's weight traffic, as the forward pass issues it: per layer q, k, v,
 * o, gate, up, down (I2_S), then the F16 output projection, each matrix a separate pool
 * call on its own memory. */
#define TOKEN_LAYERS 30
static const struct shape token_layer[] = {
    {K_I2S, "", "q", 2560, 2560},    {K_I2S, "", "k", 640, 2560},     {K_I2S, "", "v", 640, 2560},
    {K_I2S, "", "o", 2560, 2560},    {K_I2S, "", "gate", 6912, 2560}, {K_I2S, "", "up", 6912, 2560},
    {K_I2S, "", "down", 2560, 6912},
};
#define N_TOKEN_LAYER (sizeof token_layer / sizeof *token_layer)

static size_t token_i2s_bytes(void)
{
    size_t b = 0;
    for (size_t i = 0; i < N_TOKEN_LAYER; i++)
        b += (size_t)token_layer[i].rows * row_bytes(K_I2S, token_layer[i].cols);
    return b * TOKEN_LAYERS;
}

static double time_token(struct threadpool *pool, const struct kernel_ops *ops, const uint8_t *arena,
                         const int8_t *xq, const float *xf, int32_t *oi, float *of, int calls)
{
    double t[32];
    if (calls > 32)
        calls = 32;
    for (int n = -1; n < calls; n++) { /* n = -1: warm-up */
        double t0 = clock_seconds();
        const uint8_t *p = arena;
        for (int l = 0; l < TOKEN_LAYERS; l++)
            for (size_t i = 0; i < N_TOKEN_LAYER; i++) {
                const struct shape *s = &token_layer[i];
                struct job j = {.ops = ops, .kind = K_I2S, .xq = xq, .oi = oi};
                j.tm = (struct ternary_matrix){.type = GGML_TYPE_I2_S, .rows = s->rows,
                                               .cols = s->cols, .data = p,
                                               .row_bytes = row_bytes(K_I2S, s->cols), .scale = 1};
                threadpool_run(pool, run_part, &j);
                p += (size_t)s->rows * j.tm.row_bytes;
            }
        struct job j = {.ops = ops, .kind = K_F16, .xf = xf, .of = of};
        j.dm = (struct dense_matrix){.type = GGML_TYPE_F16, .rows = 128256, .cols = 2560,
                                     .data = p, .row_bytes = row_bytes(K_F16, 2560)};
        threadpool_run(pool, run_part, &j);
        if (n >= 0)
            t[n] = clock_seconds() - t0;
    }
    return bench_middle(t, calls);
}

/* The whole token again under each row walk the dispatch could choose (kernels/row_walk.h),
 * the walks alternated round by round so that a drift of the host's speed falls on all of
 * them: the evidence behind kernels/dispatch.c's row_streams_for. */
#define WALK_ROUNDS 7
static void bench_walk(const struct kernel_ops *set, struct threadpool *const *pools,
                       const int *tcount, int n_pools, const double *probe, const uint8_t *arena,
                       size_t total, const int8_t *xq, const float *xf, int32_t *oi, float *of)
{
    static const struct { int runs; bool prefetch; } walks[] = {
        {4, false}, {4, true}, {8, false}, {8, true}, {12, true}};
    enum { N_WALKS = sizeof walks / sizeof *walks };
    int chosen = kops.row_streams;
    bool chosen_pf = kops.row_prefetch;
    printf("\nwhole token by row walk (%s set; this CPU's dispatch uses %d runs, prefetch %s); "
           "median of %d alternated rounds, each the median of 3 tokens\n",
           set->name, chosen, chosen_pf ? "on" : "off", WALK_ROUNDS);
    printf("%-5s %-8s %3s %10s %8s %7s\n", "runs", "prefetch", "thr", "ms/token", "GB/s", "%probe");
    for (int p = 0; p < n_pools; p++) {
        double t[N_WALKS][WALK_ROUNDS];
        for (int r = 0; r < WALK_ROUNDS; r++)
            for (int w = 0; w < N_WALKS; w++) {
                kops.row_streams = walks[w].runs;
                kops.row_prefetch = walks[w].prefetch;
                t[w][r] = time_token(pools[p], set, arena, xq, xf, oi, of, 3);
            }
        for (int w = 0; w < N_WALKS; w++) {
            double med = bench_middle(t[w], WALK_ROUNDS), gbs = (double)total / med / 1e9;
            printf("%-5d %-8s %3d %10.2f %8.2f %6.0f%%\n", walks[w].runs,
                   walks[w].prefetch ? "on" : "off", tcount[p], med * 1e3, gbs,
                   probe[p] > 0 ? 100 * gbs / probe[p] : 0.0);
        }
    }
    kops.row_streams = chosen;
    kops.row_prefetch = chosen_pf;
}

/* Several decoding streams: the FFN up matrix against 8 vectors (then 2, 3 and 16), in
 * blocks of MULTI_BLOCK rows on the calling thread as model/forward.c issues it, by the
 * set's i2s_dot_rows_multi and by the per-vector default (i2s_dot_rows_each). The two
 * take turns, round after round, so that both meet the same load from anything else
 * running; every round's figures are printed, not only the best. Run alone ("multi"),
 * nothing pins the caller: taskset does. */
#define MULTI_X SMALL_BATCH
#define MULTI_BLOCK GEMV_BLOCK_ROWS
#define MULTI_ROUNDS 5
#define MULTI_CALLS 31

typedef void i2s_multi_fn(const struct ternary_matrix *w, const int8_t *xq, size_t ldx, int n_x,
                          int r0, int r1, int32_t *out, size_t ldo);

/* Median seconds for the whole matrix; copies > 1 rotates through that many copies, so
 * that the first pass over each block comes from memory. */
static double time_multi(i2s_multi_fn *fn, struct ternary_matrix *w, const uint8_t *arena,
                         size_t copies, const int8_t *xq, int n_x, int32_t *out)
{
    size_t bytes = (size_t)w->rows * w->row_bytes, copy = 0;
    double t[MULTI_CALLS];
    for (int n = -1; n < MULTI_CALLS; n++) { /* n = -1: warm-up */
        copy = copy + 1 < copies ? copy + 1 : 0;
        w->data = arena + copy * bytes;
        double t0 = clock_seconds();
        for (int b = 0; b < w->rows; b += MULTI_BLOCK) {
            int e = b + MULTI_BLOCK < w->rows ? b + MULTI_BLOCK : w->rows;
            fn(w, xq, (size_t)w->cols, n_x, b, e, out, (size_t)w->rows);
        }
        if (n >= 0)
            t[n] = clock_seconds() - t0;
    }
    return bench_middle(t, MULTI_CALLS);
}

static void bench_multi(const struct kernel_ops *sets, int n_sets)
{
    struct ternary_matrix w = {.type = GGML_TYPE_I2_S, .rows = 6912, .cols = 2560,
                               .row_bytes = 2560 / 4, .scale = 1.0f};
    size_t bytes = (size_t)w.rows * w.row_bytes, copies = (256u << 20) / bytes;
    uint8_t *arena = aligned_alloc(64, copies * bytes);
    int8_t *xq = aligned_alloc(64, (size_t)MULTI_X * w.cols);
    int32_t *out = aligned_alloc(64, sizeof(int32_t) * MULTI_X * w.rows);
    if (!arena || !xq || !out) {
        fprintf(stderr, "bench_kernels: cannot allocate the multi-vector arena\n");
        exit(1);
    }
    fill_codes(arena, copies * bytes);
    for (int i = 0; i < MULTI_X * w.cols; i++)
        xq[i] = (int8_t)(next() & 0xff);
    printf("\ni2s_dot_rows_multi: %dx%d (ffn up), blocks of %d rows, 1 thread (the caller); "
           "stream = %zu copies in turn, hot = one copy; median of %d calls\n",
           w.rows, w.cols, MULTI_BLOCK, copies, MULTI_CALLS);
    printf("%-7s %7s %5s %-6s %10s %13s %7s\n", "set", "vectors", "round", "mode", "multi ms",
           "per-vector ms", "ratio");
    static const int counts[] = {8, 2, 3, 16};
    struct kernel_ops saved = kops;
    for (int k = 0; k < n_sets; k++) {
        if (!sets[k].i2s_dot_rows_multi || sets[k].i2s_dot_rows_multi == i2s_dot_rows_each)
            continue;
        kops = sets[k]; /* the default calls kops.i2s_dot_rows */
        for (size_t ci = 0; ci < sizeof counts / sizeof *counts; ci++)
            for (int round = 0; round < MULTI_ROUNDS; round++)
                for (int mode = 0; mode < 2; mode++) {
                    int n_x = counts[ci];
                    size_t c = mode ? 1 : copies;
                    double tm, te;
                    if (round % 2) {
                        te = time_multi(i2s_dot_rows_each, &w, arena, c, xq, n_x, out);
                        tm = time_multi(sets[k].i2s_dot_rows_multi, &w, arena, c, xq, n_x, out);
                    } else {
                        tm = time_multi(sets[k].i2s_dot_rows_multi, &w, arena, c, xq, n_x, out);
                        te = time_multi(i2s_dot_rows_each, &w, arena, c, xq, n_x, out);
                    }
                    printf("%-7s %7d %5d %-6s %10.3f %13.3f %6.2fx\n", sets[k].name, n_x, round,
                           mode ? "hot" : "stream", tm * 1e3, te * 1e3, te / tm);
                    fflush(stdout);
                }
    }
    kops = saved;
    free(arena);
    free(xq);
    free(out);
}

/* Arguments: an optional filter (only the shapes whose kernel or role contains it;
 * "token" for the whole-token sequence alone, "multi" for the several-vector section
 * alone, without the read probe), and --huge to back the weights with
 * transparent huge pages (the engine maps the model file in 4 KiB pages). */
int main(int argc, char **argv)
{
    const char *only = NULL;
    bool huge = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--huge") == 0)
            huge = true;
        else
            only = argv[i];
    }
    struct cpu_features f;
    cpu_features_detect(&f);
    double load = -1;
    FILE *fp = fopen("/proc/loadavg", "r");
    if (fp) {
        if (fscanf(fp, "%lf", &load) != 1)
            load = -1;
        fclose(fp);
    }

    char names[128];
    snprintf(names, sizeof names, "%s", kernels_supported());
    struct kernel_ops sets[MAX_SETS];
    int n_sets = 0;
    for (char *tok = strtok(names, " "); tok && n_sets < MAX_SETS; tok = strtok(NULL, " ")) {
        if (strcmp(tok, "amx") == 0)
            continue; /* AMX only changes the prefill GEMM; decode is the avx512 set */
        setenv("BITNET_KERNEL", tok, 1);
        if (kernels_init() == 0)
            sets[n_sets++] = kops;
    }
    unsetenv("BITNET_KERNEL");
    if (only && strcmp(only, "multi") == 0) {
        bench_multi(sets, n_sets);
        return 0;
    }

    /* The project's read probe (the roofline bitnetctl bench reports against), run
     * before this process pins itself: a pinned parent would leave the probe's threads
     * one CPU. */
    int nthreads = cpus_available();
    int tcount[2] = {1, nthreads};
    int n_pools = nthreads > 1 ? 2 : 1;
    double probe[2] = {0, 0};
    struct errbuf e;
    for (int p = 0; p < n_pools; p++)
        if (read_bandwidth_probe_isolated(STREAM_BYTES, tcount[p], 5, &probe[p], &e) < 0)
            probe[p] = 0;

    /* One pool of all CPUs; a NULL pool runs on the caller, which that pool has pinned.
     * (A second pinned pool made after the first would see only the caller's CPU.) */
    struct threadpool *pools[2] = {NULL, threadpool_new(nthreads, true, &e)};
    if (!pools[1]) {
        fprintf(stderr, "bench_kernels: %s\n", e.msg);
        return 1;
    }

    size_t arena_bytes = token_i2s_bytes() + (size_t)128256 * row_bytes(K_F16, 2560);
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        size_t b = (size_t)shapes[i].rows * row_bytes(shapes[i].kind, shapes[i].cols);
        size_t copies = (STREAM_BYTES + b - 1) / b;
        if (copies < 2)
            copies = 2;
        if (copies * b > arena_bytes)
            arena_bytes = copies * b;
    }
    arena_bytes = (arena_bytes + (2u << 20) - 1) / (2u << 20) * (2u << 20);
    uint8_t *arena = aligned_alloc(2u << 20, arena_bytes);
    int8_t *xq = aligned_alloc(64, 8192);
    float *xf = aligned_alloc(64, 8192 * sizeof(float));
    int32_t *oi = aligned_alloc(64, 128256 * sizeof(int32_t));
    float *of = aligned_alloc(64, 128256 * sizeof(float));
    if (!arena || !xq || !xf || !oi || !of) {
        fprintf(stderr, "bench_kernels: cannot allocate %.1f GB\n", (double)arena_bytes / 1e9);
        return 1;
    }
    if (huge)
        madvise(arena, arena_bytes, MADV_HUGEPAGE);
    for (int i = 0; i < 8192; i++) {
        xq[i] = (int8_t)(next() & 0xff);
        xf[i] = (float)((int)(next() % 2001) - 1000) / 1000.0f;
    }

    printf("CPU: %s; kernel sets:", f.brand);
    for (int s = 0; s < n_sets; s++)
        printf(" %s", sets[s].name);
    printf(" (linked:");
    for (size_t i = 0; i < sizeof linked_sets / sizeof *linked_sets; i++)
        printf(" %s", linked_sets[i]->name);
    printf("); load average %.2f at start; %s pages\n", load, huge ? "huge" : "4 KiB");
    printf("read probe (bench/read_bandwidth.c, %.1f GB): %.1f GB/s with 1 thread",
           (double)STREAM_BYTES / 1e9, probe[0]);
    if (n_pools > 1)
        printf(", %.1f GB/s with %d", probe[1], nthreads);
    printf("\nstream = rotate through copies spanning >= %.1f GB; hot = one copy; "
           "%%probe = GB/s over the probe's at the same thread count\n",
           (double)STREAM_BYTES / 1e9);
    if (!only || (strcmp(only, "walk") != 0 && strcmp(only, "token") != 0))
        printf("%-15s %-12s %-11s %-7s %3s %-6s %10s %8s %7s %8s %9s  %s\n", "kernel", "shape",
               "role", "set", "thr", "mode", "median ms", "GB/s", "%probe", "GOPS", "vs scalar",
               "cpu");

    enum kind filled = (enum kind)-1;
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        const struct shape *s = &shapes[si];
        if (only && !strstr(s->kernel, only) && !strstr(s->what, only))
            continue;
        size_t bytes = (size_t)s->rows * row_bytes(s->kind, s->cols);
        size_t copies = arena_bytes / bytes;
        enum kind want = s->kind == K_F16 ? K_F16 : K_I2S;
        if (filled != want) {
            if (want == K_F16)
                fill_f16(arena, arena_bytes);
            else
                fill_codes(arena, arena_bytes);
            filled = want;
        }
        struct job j = {.kind = s->kind, .xq = xq, .xf = xf, .oi = oi, .of = of};
        j.tm = (struct ternary_matrix){.type = GGML_TYPE_I2_S, .rows = s->rows, .cols = s->cols,
                                       .row_bytes = row_bytes(K_I2S, s->cols), .scale = 1.0f};
        j.dm = (struct dense_matrix){.type = GGML_TYPE_F16, .rows = s->rows, .cols = s->cols,
                                     .row_bytes = row_bytes(K_F16, s->cols)};
        j.qm = (struct q8_matrix){.rows = s->rows, .cols = s->cols};
        for (int p = 0; p < n_pools; p++)
            for (int mode = 0; mode < 2; mode++) {
                double scalar_t = 0;
                for (int k = 0; k < n_sets; k++) {
                    j.ops = &sets[k];
                    int is_scalar = strcmp(sets[k].name, "scalar") == 0;
                    double t = time_calls(pools[p], &j, s, arena, mode ? copies : 1,
                                          is_scalar ? 3 : 20, is_scalar ? 0.5 : 0.3);
                    if (is_scalar)
                        scalar_t = t;
                    char sh[32], vs[16] = "-";
                    snprintf(sh, sizeof sh, "%dx%d", s->rows, s->cols);
                    if (scalar_t > 0 && !is_scalar)
                        snprintf(vs, sizeof vs, "%.1fx", scalar_t / t);
                    double gbs = (double)bytes / t / 1e9;
                    printf("%-15s %-12s %-11s %-7s %3d %-6s %10.3f %8.2f %6.0f%% %8.1f %9s  %s\n",
                           s->kernel, sh, s->what, sets[k].name, tcount[p],
                           mode ? "stream" : "hot", t * 1e3, gbs,
                           probe[p] > 0 ? 100 * gbs / probe[p] : 0.0,
                           2.0 * s->rows * s->cols / t / 1e9, vs, f.brand);
                    fflush(stdout);
                }
            }
    }

    if (!only || strstr("token", only)) {
        size_t i2s = token_i2s_bytes(), total = i2s + (size_t)128256 * row_bytes(K_F16, 2560);
        fill_codes(arena, i2s);
        fill_f16(arena + i2s, total - i2s);
        printf("\nwhole token: %d layers x (q k v o gate up down) I2_S + 128256x2560 F16 output, "
               "%.2f GB in %zu pool calls\n",
               TOKEN_LAYERS, (double)total / 1e9, TOKEN_LAYERS * N_TOKEN_LAYER + 1);
        printf("%-7s %3s %10s %8s %7s %8s %9s  %s\n", "set", "thr", "ms/token", "GB/s", "%probe",
               "token/s", "vs scalar", "cpu");
        for (int p = 0; p < n_pools; p++) {
            double scalar_t = 0;
            for (int k = 0; k < n_sets; k++) {
                int is_scalar = strcmp(sets[k].name, "scalar") == 0;
                double t = time_token(pools[p], &sets[k], arena, xq, xf, oi, of, is_scalar ? 1 : 9);
                if (is_scalar)
                    scalar_t = t;
                char vs[16] = "-";
                if (scalar_t > 0 && !is_scalar)
                    snprintf(vs, sizeof vs, "%.1fx", scalar_t / t);
                double gbs = (double)total / t / 1e9;
                printf("%-7s %3d %10.2f %8.2f %6.0f%% %8.2f %9s  %s\n", sets[k].name, tcount[p],
                       t * 1e3, gbs, probe[p] > 0 ? 100 * gbs / probe[p] : 0.0, 1 / t, vs,
                       f.brand);
                fflush(stdout);
            }
        }
    }
    if (!only || strcmp(only, "walk") == 0) {
        size_t i2s = token_i2s_bytes(), total = i2s + (size_t)128256 * row_bytes(K_F16, 2560);
        fill_codes(arena, i2s);
        fill_f16(arena + i2s, total - i2s);
        bench_walk(&sets[n_sets - 1], pools, tcount, n_pools, probe, arena, total, xq, xf, oi,
                   of);
    }
    if (!only)
        bench_multi(sets, n_sets);
    threadpool_free(pools[1]);
    free(arena);
    free(xq);
    free(xf);
    free(oi);
    free(of);
    return 0;
}

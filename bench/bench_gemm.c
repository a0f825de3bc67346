/* Prefill GEMM speed on the BitNet b1.58 2B-4T shapes: for each kernel variant and
 * thread count, the median time of every matrix shape at 512 tokens, its GOPS
 * (2 * rows * cols * tokens / time) and the prompt tokens/s that 30 layers of
 * Q, K, V, O, gate, up and down would allow if the GEMMs were all the work.
 * The scalar kernel runs on fewer tokens and is scaled up: its time is linear in them.
 * Threads come from a pinned pool and split the rows in multiples of 16, as the forward
 * pass does.
 *
 * usage: bench_gemm [n_tok [variant]]   (default 512 tokens, every variant) */
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/timing.h"
#include "kernels/cpu_features.h"
#include "kernels/kernels.h"
#include "kernels/kernels_x86.h"
#include "kernels/threadpool.h"
#include "model/clock.h"
#include "model/ggml_types.h"

#define N_LAYERS 30

typedef void (*gemm_fn)(const struct ternary_matrix *w, const int8_t *xq, size_t ldx, int n_tok,
                        int r0, int r1, int32_t *out, size_t ldo);

struct shape {
    int rows, cols;
    int per_layer; /* how many of the layer's matrices have this shape */
    const char *what;
};

static const struct shape shapes[] = {
    {2560, 2560, 2, "Q,O"},
    {640, 2560, 2, "K,V"},
    {6912, 2560, 2, "gate,up"},
    {2560, 6912, 1, "down"},
};
#define N_SHAPES (int)(sizeof shapes / sizeof shapes[0])

struct job {
    gemm_fn fn;
    const struct ternary_matrix *w;
    const int8_t *x;
    int n_tok;
    int32_t *out;
};

static void task(void *ctx, int ith, int nth)
{
    const struct job *j = ctx;
    int lo, hi;
    split_range(j->w->rows, 16, ith, nth, &lo, &hi);
    if (lo < hi)
        j->fn(j->w, j->x, (size_t)j->w->cols, j->n_tok, lo, hi, j->out, (size_t)j->w->rows);
}

#define MAX_REPS 32

/* Median seconds of `reps` (<= MAX_REPS) runs after one warm-up. */
static double time_gemm(struct threadpool *pool, struct job *j, int reps)
{
    double t[MAX_REPS];
    threadpool_run(pool, task, j);
    for (int i = 0; i < reps; i++) {
        double t0 = clock_seconds();
        threadpool_run(pool, task, j);
        t[i] = clock_seconds() - t0;
    }
    return bench_middle(t, reps);
}

static uint64_t rng = 88172645463325252u;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void loadavg(char *buf, size_t cap)
{
    FILE *fp = fopen("/proc/loadavg", "r");
    buf[0] = 0;
    if (fp) {
        if (!fgets(buf, (int)cap, fp))
            buf[0] = 0;
        fclose(fp);
    }
    buf[strcspn(buf, "\n")] = 0;
}

int main(int argc, char **argv)
{
    int n_tok = argc > 1 ? atoi(argv[1]) : 512;
    if (n_tok < 1) {
        fprintf(stderr, "usage: %s [n_tok [scalar|avx2|avxvnni|avx512|amx]]\n", argv[0]);
        return 2;
    }
    struct cpu_features f;
    cpu_features_detect(&f);
    const char *cpu = f.brand[0] ? f.brand : "unknown CPU";
    char load[128];
    loadavg(load, sizeof load);
    printf("CPU: %s, %d CPUs available, load average %s\n", cpu, cpus_available(), load);

    struct {
        const char *name;
        gemm_fn fn;
        int n_tok; /* tokens actually run (scalar: fewer, then scaled) */
        int reps;
        bool ok;
    } vs[] = {
        {"scalar", kernels_scalar.i2s_gemm, n_tok < 32 ? n_tok : 32, 3, true},
        {"avx2", i2s_gemm_avx2, n_tok, 5, f.avx2 && f.fma && f.f16c},
        {"avxvnni", i2s_gemm_avxvnni, n_tok, 5, f.avx2 && f.fma && f.f16c && f.avxvnni},
        {"avx512", i2s_gemm_avx512, n_tok, 11,
         f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni},
        {"amx", i2s_gemm_amx, n_tok, 21, f.amx_tile && f.amx_int8},
    };
    const char *only = argc > 2 ? argv[2] : NULL;
    int n_vs = (int)(sizeof vs / sizeof vs[0]), amx = n_vs - 1;
    for (int v = 0; v < n_vs; v++)
        if (only && strcmp(only, vs[v].name) != 0)
            vs[v].ok = false;
    if (vs[amx].ok && !amx_request()) {
        printf("amx: the kernel refused AMX tile data (arch_prctl)\n");
        vs[amx].ok = false;
    }

    /* one matrix and one output per shape; random codes, random activations */
    struct ternary_matrix w[N_SHAPES];
    int max_cols = 0;
    size_t max_out = 0;
    for (int s = 0; s < N_SHAPES; s++) {
        size_t row_bytes = (size_t)shapes[s].cols / 4;
        size_t bytes = (size_t)shapes[s].rows * row_bytes + 32;
        uint8_t *d = malloc(bytes);
        if (!d)
            return 1;
        for (size_t i = 0; i < bytes; i++) {
            uint8_t q = 0;
            for (int k = 0; k < 4; k++)
                q = (uint8_t)(q << 2 | (unsigned)(next() % 3));
            d[i] = q;
        }
        w[s] = (struct ternary_matrix){.type = GGML_TYPE_I2_S, .rows = shapes[s].rows,
                                       .cols = shapes[s].cols, .data = d, .row_bytes = row_bytes,
                                       .scale = 1.0f};
        if (shapes[s].cols > max_cols)
            max_cols = shapes[s].cols;
        if ((size_t)shapes[s].rows * (size_t)n_tok > max_out)
            max_out = (size_t)shapes[s].rows * (size_t)n_tok;
    }
    int8_t *x = malloc((size_t)n_tok * (size_t)max_cols);
    int32_t *out = malloc(max_out * sizeof *out);
    if (!x || !out)
        return 1;
    for (size_t i = 0; i < (size_t)n_tok * (size_t)max_cols; i++)
        x[i] = (int8_t)(next() & 0xff);

    printf("%d tokens per GEMM; %d layers of Q,K,V,O,gate,up,down; median of several runs\n\n",
           n_tok, N_LAYERS);
    printf("%-40s %-7s %3s %-11s %-9s %10s %8s\n", "cpu", "variant", "thr", "shape", "matrices",
           "ms", "GOPS");
    double summary_tps[5][2] = {{0}}, summary_gops[5][2] = {{0}};
    /* a pinned pool binds its caller too, and the next pool would see only that CPU */
    cpu_set_t all_cpus;
    if (sched_getaffinity(0, sizeof all_cpus, &all_cpus) != 0)
        CPU_ZERO(&all_cpus);
    for (int nth = 1; nth <= 2; nth++) {
        if (CPU_COUNT(&all_cpus) > 0)
            sched_setaffinity(0, sizeof all_cpus, &all_cpus);
        struct errbuf e;
        struct threadpool *pool = threadpool_new(nth, true, &e);
        if (!pool) {
            fprintf(stderr, "threadpool_new(%d): %s\n", nth, e.msg);
            return 1;
        }
        for (int v = 0; v < n_vs; v++) {
            if (!vs[v].ok) {
                if (!only)
                    printf("%-40s %-7s %3d skipped: not available here\n", cpu, vs[v].name, nth);
                continue;
            }
            double layer_s = 0, layer_ops = 0;
            for (int s = 0; s < N_SHAPES; s++) {
                struct job j = {vs[v].fn, &w[s], x, vs[v].n_tok, out};
                double t = time_gemm(pool, &j, vs[v].reps) * n_tok / vs[v].n_tok;
                double ops = 2.0 * shapes[s].rows * shapes[s].cols * n_tok;
                char sh[32];
                snprintf(sh, sizeof sh, "%dx%d", shapes[s].rows, shapes[s].cols);
                printf("%-40s %-7s %3d %-11s %-9s %10.2f %8.1f%s\n", cpu, vs[v].name, nth, sh,
                       shapes[s].what, t * 1e3, ops / t * 1e-9,
                       vs[v].n_tok != n_tok ? " (scaled)" : "");
                layer_s += t * shapes[s].per_layer;
                layer_ops += ops * shapes[s].per_layer;
            }
            summary_tps[v][nth - 1] = n_tok / (layer_s * N_LAYERS);
            summary_gops[v][nth - 1] = layer_ops / layer_s * 1e-9;
            char all[32];
            snprintf(all, sizeof all, "%d layers", N_LAYERS);
            printf("%-40s %-7s %3d %-11s %-9s %10.2f %8.1f  -> %.1f prompt tokens/s (GEMMs only)\n",
                   cpu, vs[v].name, nth, all, "all", layer_s * N_LAYERS * 1e3,
                   summary_gops[v][nth - 1], summary_tps[v][nth - 1]);
        }
        threadpool_free(pool);
    }
    loadavg(load, sizeof load);
    printf("\nsummary (%s; load average at the end %s):\n", cpu, load);
    for (int v = 0; v < n_vs; v++)
        if (vs[v].ok)
            printf("  %-7s 1 thread %8.1f GOPS %8.1f tok/s   2 threads %8.1f GOPS %8.1f tok/s\n",
                   vs[v].name, summary_gops[v][0], summary_tps[v][0], summary_gops[v][1],
                   summary_tps[v][1]);
    for (int s = 0; s < N_SHAPES; s++)
        free((void *)w[s].data);
    free(x);
    free(out);
    return 0;
}

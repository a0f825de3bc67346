/* The prefill GEMMs (i2s_gemm) of every kernel set this CPU can run against the scalar
 * one, bit for bit, on shapes that do not split evenly: odd row ranges, token counts
 * around the 16-token tiles, padded strides (whose padding must stay untouched), extreme
 * activations and weights, and two threads sharing one output. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu_features.h"
#include "kernels/kernels.h"
#include "kernels/kernels_x86.h"
#include "kernels/threadpool.h"
#include "kernels/ternary_formats.h"
#include "model/ggml_types.h"
#include "tests/check.h"

#define GUARD ((int32_t)0x5a5aa5a5)

typedef void (*gemm_fn)(const struct ternary_matrix *w, const int8_t *xq, size_t ldx, int n_tok,
                        int r0, int r1, int32_t *out, size_t ldo);

struct variant {
    const char *name;
    gemm_fn fn;
};

static uint64_t rng = 0x9e3779b97f4a7c15u;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static int rand_int(int lo, int hi) { return lo + (int)(next() % (uint64_t)(hi - lo + 1)); }

enum wfill { W_RANDOM, W_ALL_MINUS, W_ALL_PLUS, W_ANY_CODE };
enum xfill { X_RANDOM, X_MIN, X_MAX, X_SMALL };

/* A matrix owns its bytes; codes are written directly so that code 3 (unused by the
 * format, read as +2 by the scalar kernel) can be exercised as well. */
static struct ternary_matrix make_matrix(int rows, int cols, enum wfill f, uint8_t **buf)
{
    size_t row_bytes = (size_t)cols / 4;
    *buf = malloc((size_t)rows * row_bytes + 32);
    for (size_t i = 0; i < (size_t)rows * row_bytes; i++) {
        uint8_t q = 0;
        for (int k = 0; k < 4; k++) {
            unsigned code = f == W_ALL_MINUS ? 0 : f == W_ALL_PLUS ? 2
                          : f == W_ANY_CODE  ? (unsigned)(next() & 3)
                                             : (unsigned)(next() % 3);
            q = (uint8_t)(q << 2 | code);
        }
        (*buf)[i] = q;
    }
    float scale = 0.5f;
    memcpy(*buf + (size_t)rows * row_bytes, &scale, sizeof scale);
    return (struct ternary_matrix){.type = GGML_TYPE_I2_S, .rows = rows, .cols = cols,
                                   .data = *buf, .row_bytes = row_bytes, .scale = scale};
}

static int8_t *make_acts(int n_tok, int cols, size_t ldx, enum xfill f)
{
    int8_t *x = malloc((size_t)n_tok * ldx);
    for (size_t i = 0; i < (size_t)n_tok * ldx; i++)
        x[i] = (int8_t)(next() & 0xff); /* padding too: a kernel that reads it goes wrong */
    for (int t = 0; t < n_tok; t++)
        for (int c = 0; c < cols; c++)
            x[(size_t)t * ldx + c] = f == X_MIN ? -128 : f == X_MAX ? 127
                                   : f == X_SMALL ? (int8_t)rand_int(-2, 2)
                                                  : (int8_t)(next() & 0xff);
    return x;
}

static int32_t *guarded_out(int n_tok, size_t ldo)
{
    int32_t *o = malloc((size_t)n_tok * ldo * sizeof *o);
    for (size_t i = 0; i < (size_t)n_tok * ldo; i++)
        o[i] = GUARD;
    return o;
}

/* Counts entries of `got` that differ from `ref` inside [r0, r1) of every token, and
 * entries outside it (row padding and other threads' rows) that lost their guard. */
static void compare(const int32_t *ref, const int32_t *got, int n_tok, size_t ldo, int r0,
                    int r1, int *wrong, int *clobbered)
{
    *wrong = *clobbered = 0;
    for (int t = 0; t < n_tok; t++)
        for (size_t r = 0; r < ldo; r++) {
            size_t i = (size_t)t * ldo + r;
            if ((int)r >= r0 && (int)r < r1)
                *wrong += got[i] != ref[i];
            else
                *clobbered += got[i] != GUARD;
        }
}

static void run_case(const struct variant *vs, int nv, int rows, int cols, int r0, int r1,
                     int n_tok, size_t ldx, size_t ldo, enum wfill wf, enum xfill xf)
{
    uint8_t *wbuf;
    struct ternary_matrix w = make_matrix(rows, cols, wf, &wbuf);
    int8_t *x = make_acts(n_tok, cols, ldx, xf);
    int32_t *ref = guarded_out(n_tok, ldo);
    kernels_scalar.i2s_gemm(&w, x, ldx, n_tok, r0, r1, ref, ldo);
    for (int v = 0; v < nv; v++) {
        int32_t *got = guarded_out(n_tok, ldo);
        vs[v].fn(&w, x, ldx, n_tok, r0, r1, got, ldo);
        int wrong, clobbered;
        compare(ref, got, n_tok, ldo, r0, r1, &wrong, &clobbered);
        CHECK(wrong == 0 && clobbered == 0,
              "%s rows %d cols %d [%d,%d) n_tok %d ldx %zu ldo %zu wfill %d xfill %d: "
              "%d wrong, %d outside the range written",
              vs[v].name, rows, cols, r0, r1, n_tok, ldx, ldo, (int)wf, (int)xf, wrong,
              clobbered);
        free(got);
    }
    free(ref);
    free(x);
    free(wbuf);
}

/* The scalar GEMM itself against one exact row dot per token. */
static void test_scalar_definition(void)
{
    for (int trial = 0; trial < 6; trial++) {
        int cols = 128 * rand_int(1, 5), rows = rand_int(1, 40), n_tok = rand_int(1, 9);
        size_t ldx = (size_t)cols + (size_t)rand_int(0, 9), ldo = (size_t)rows + 3;
        uint8_t *wbuf;
        struct ternary_matrix w = make_matrix(rows, cols, trial == 5 ? W_ANY_CODE : W_RANDOM,
                                              &wbuf);
        int8_t *x = make_acts(n_tok, cols, ldx, trial == 4 ? X_MIN : X_RANDOM);
        int32_t *got = guarded_out(n_tok, ldo);
        int r0 = rand_int(0, rows - 1), r1 = rand_int(r0 + 1, rows);
        kernels_scalar.i2s_gemm(&w, x, ldx, n_tok, r0, r1, got, ldo);
        int bad = 0;
        for (int t = 0; t < n_tok; t++) {
            int32_t *row = guarded_out(1, (size_t)rows);
            kernels_scalar.i2s_dot_rows(&w, x + (size_t)t * ldx, r0, r1, row);
            for (int r = 0; r < (int)ldo; r++) {
                int32_t want = r >= r0 && r < r1 ? row[r] : GUARD;
                bad += got[(size_t)t * ldo + r] != want;
            }
            free(row);
        }
        CHECK(bad == 0, "scalar gemm vs row dots: rows %d cols %d [%d,%d) n_tok %d: %d differ",
              rows, cols, r0, r1, n_tok, bad);
        free(got);
        free(x);
        free(wbuf);
    }
}

struct split_job {
    gemm_fn fn;
    const struct ternary_matrix *w;
    const int8_t *x;
    size_t ldx;
    int n_tok;
    int r0, r1;
    int32_t *out;
    size_t ldo;
};

static void split_task(void *ctx, int ith, int nth)
{
    struct split_job *j = ctx;
    int lo, hi;
    split_range(j->r1 - j->r0, 16, ith, nth, &lo, &hi);
    if (lo < hi)
        j->fn(j->w, j->x, j->ldx, j->n_tok, j->r0 + lo, j->r0 + hi, j->out, j->ldo);
}

/* Two threads writing their halves of one output, as the forward pass does (each must
 * set up its own AMX tile configuration). */
static void test_threads(const struct variant *vs, int nv)
{
    struct errbuf e;
    struct threadpool *pool = threadpool_new(2, false, &e);
    CHECK(pool != NULL, "threadpool_new: %s", e.msg);
    if (!pool)
        return;
    int rows = 700, cols = 2560, n_tok = 37, r0 = 3, r1 = 689;
    size_t ldx = (size_t)cols + 5, ldo = (size_t)rows + 7;
    uint8_t *wbuf;
    struct ternary_matrix w = make_matrix(rows, cols, W_RANDOM, &wbuf);
    int8_t *x = make_acts(n_tok, cols, ldx, X_RANDOM);
    int32_t *ref = guarded_out(n_tok, ldo);
    kernels_scalar.i2s_gemm(&w, x, ldx, n_tok, r0, r1, ref, ldo);
    for (int v = 0; v < nv; v++) {
        int32_t *got = guarded_out(n_tok, ldo);
        struct split_job j = {vs[v].fn, &w, x, ldx, n_tok, r0, r1, got, ldo};
        for (int rep = 0; rep < 3; rep++)
            threadpool_run(pool, split_task, &j);
        int wrong, clobbered;
        compare(ref, got, n_tok, ldo, r0, r1, &wrong, &clobbered);
        CHECK(wrong == 0 && clobbered == 0, "%s on 2 threads: %d wrong, %d outside the range",
              vs[v].name, wrong, clobbered);
        free(got);
    }
    free(ref);
    free(x);
    free(wbuf);
    threadpool_free(pool);
}

int main(void)
{
    struct cpu_features f;
    cpu_features_detect(&f);
    printf("CPU: %s\n", f.brand[0] ? f.brand : "(unknown)");

    struct variant vs[5];
    int nv = 0;
    vs[nv++] = (struct variant){"scalar", kernels_scalar.i2s_gemm};
    /* the set's files are built with FMA and F16C as well, as dispatch requires */
    if (f.avx2 && f.fma && f.f16c)
        vs[nv++] = (struct variant){"avx2", i2s_gemm_avx2};
    else
        printf("avx2: skipped, this CPU lacks AVX2, FMA or F16C\n");
    if (f.avx2 && f.fma && f.f16c && f.avxvnni)
        vs[nv++] = (struct variant){"avxvnni", i2s_gemm_avxvnni};
    else
        printf("avxvnni: skipped, this CPU lacks AVX-VNNI\n");
    if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni)
        vs[nv++] = (struct variant){"avx512", i2s_gemm_avx512};
    else
        printf("avx512: skipped, this CPU lacks AVX-512 VNNI\n");
    if (f.amx_tile && f.amx_int8) {
        /* the CPU has AMX: a refusal here is a failure, not a reason to skip */
        bool granted = amx_request();
        CHECK(granted, "arch_prctl(ARCH_REQ_XCOMP_PERM) refused AMX tile data");
        if (granted)
            vs[nv++] = (struct variant){"amx", i2s_gemm_amx};
    } else {
        printf("amx: skipped, this CPU lacks AMX-INT8\n");
    }
    printf("variants:");
    for (int v = 0; v < nv; v++)
        printf(" %s", vs[v].name);
    printf("\n");

    test_scalar_definition();

    static const int col_set[] = {128, 256, 384, 2560, 6912};
    static const int tok_set[] = {1, 2, 15, 16, 17, 33, 64, 100};
    int n_cases = 0;
    /* every token count with every column count, on random row ranges */
    for (int ci = 0; ci < 5; ci++)
        for (int ti = 0; ti < 8; ti++) {
            int cols = col_set[ci], n_tok = tok_set[ti];
            /* keep the scalar reference affordable on the widest rows */
            int max_rows = cols >= 2560 && n_tok >= 33 ? 200 : 700;
            int rows = rand_int(1, max_rows);
            int r0 = rand_int(0, rows - 1), r1 = rand_int(r0 + 1, rows);
            size_t ldx = (size_t)cols + (size_t)rand_int(1, 80);
            size_t ldo = (size_t)rows + (size_t)rand_int(1, 40);
            run_case(vs, nv, rows, cols, r0, r1, n_tok, ldx, ldo, W_RANDOM, X_RANDOM);
            n_cases++;
        }
    /* the model's shapes, whole and with odd ends */
    run_case(vs, nv, 640, 2560, 0, 640, 17, 2560, 640, W_RANDOM, X_RANDOM);
    run_case(vs, nv, 640, 2560, 1, 639, 33, 2563, 645, W_RANDOM, X_RANDOM);
    run_case(vs, nv, 2560, 2560, 7, 2553, 15, 2560 + 64, 2561, W_RANDOM, X_RANDOM);
    run_case(vs, nv, 2560, 6912, 1279, 1873, 16, 6912 + 1, 2560, W_RANDOM, X_RANDOM);
    run_case(vs, nv, 6912, 2560, 6001, 6911, 2, 2561, 6913, W_RANDOM, X_RANDOM);
    n_cases += 5;
    /* enough tokens that the AMX kernel works in several spans (of about 1 MB of
     * activations), the last one short */
    run_case(vs, nv, 90, 6912, 5, 87, 300, 6912 + 9, 95, W_RANDOM, X_RANDOM);
    run_case(vs, nv, 70, 6912, 0, 70, 200, 6912, 70, W_RANDOM, X_RANDOM);
    run_case(vs, nv, 75, 2560, 3, 71, 512, 2560 + 1, 80, W_RANDOM, X_RANDOM);
    run_case(vs, nv, 33, 2560, 1, 33, 417, 2560, 33, W_ANY_CODE, X_RANDOM);
    n_cases += 4;
    /* range sizes just around the 16- and 32-row panels */
    for (int n = 1; n <= 50; n++) {
        int r0 = rand_int(0, 60) | 1;
        run_case(vs, nv, r0 + n + rand_int(0, 3), 256, r0, r0 + n, rand_int(1, 40), 256 + 3,
                 (size_t)(r0 + n + 5), W_RANDOM, X_RANDOM);
        n_cases++;
    }
    /* extremes: every product at its largest magnitude, of both signs */
    static const enum wfill wfs[] = {W_ALL_MINUS, W_ALL_PLUS, W_ANY_CODE};
    static const enum xfill xfs[] = {X_MIN, X_MAX, X_SMALL};
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            int cols = b == 2 ? 2560 : 6912;
            run_case(vs, nv, 100, cols, 1, 99, 33, (size_t)cols + 7, 101, wfs[a], xfs[b]);
            n_cases++;
        }
    /* random shapes of every kind */
    for (int trial = 0; trial < 40; trial++) {
        int cols = col_set[rand_int(0, 4)], n_tok = tok_set[rand_int(0, 7)];
        int rows = trial % 10 == 0 ? 2560 : trial % 10 == 1 ? 640 : rand_int(1, 700);
        if ((long)rows * cols * n_tok > 60000000L)
            n_tok = (int)(60000000L / ((long)rows * cols)) + 1;
        int r0 = rand_int(0, rows - 1) | 1, r1 = rand_int(r0, rows) | 1;
        if (r0 >= rows)
            r0 = rows - 1;
        if (r1 > rows)
            r1 = rows;
        if (r1 <= r0)
            r1 = r0 + 1;
        run_case(vs, nv, rows, cols, r0, r1, n_tok, (size_t)cols + (size_t)rand_int(1, 200),
                 (size_t)rows + (size_t)rand_int(1, 9), (enum wfill)(trial % 4),
                 (enum xfill)((trial / 4) % 4));
        n_cases++;
    }
    test_threads(vs, nv);
    printf("%d shapes against %d variant(s)\n", n_cases, nv);
    return check_done("test_gemm");
}

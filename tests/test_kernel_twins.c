/* Every optimized kernel set this CPU supports against the scalar twins: integer dots
 * (I2_S, q8) bit-identical, dense dots within 1e-5 of the sum of |terms|. Shapes are
 * chosen to hit every tail: blocks that do not pair, columns that are not a multiple of
 * the vector width, row ranges that start and end anywhere. Matrices and activations
 * end at a page followed by an inaccessible page, so a kernel that reads past a row
 * faults, and the output carries guard values around [r0, r1). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/f16.h"
#include "kernels/kernels.h"
#include "kernels/kernels_x86.h"
#include "kernels/ternary_formats.h"
#include "model/ggml_types.h"
#include "tests/check.h"
#include "tests/util.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static int rand_int(int lo, int hi) { return lo + (int)(next() % (uint64_t)(hi - lo + 1)); }
static float rand_float(void) { return (float)((double)(next() >> 11) / 9007199254740992.0 * 2 - 1); }

/* n bytes that end exactly where an inaccessible page begins. */
struct guarded {
    void *map;
    size_t map_len;
    uint8_t *p;
};

static uint8_t *guarded_alloc(struct guarded *g, size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t body = (n + page - 1) / page * page;
    g->map_len = body + page;
    g->map = mmap(NULL, g->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g->map == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    if (mprotect((uint8_t *)g->map + body, page, PROT_NONE) != 0) {
        perror("mprotect");
        exit(2);
    }
    g->p = (uint8_t *)g->map + body - n;
    return g->p;
}

static void guarded_free(struct guarded *g) { munmap(g->map, g->map_len); }

#define MAX_SETS 8
static struct kernel_ops sets[MAX_SETS];
static int n_sets;

/* dispatch refers to the optimized sets weakly, and a weak reference does not pull an
 * object out of libbitnet.a; naming them here does, so the sets under test are linked. */
static const struct kernel_ops *const linked_sets[] = {&kernels_avx2, &kernels_avx512};

/* The sets above scalar, each as dispatch builds it (NULL entries filled from below). */
static void load_sets(void)
{
    printf("linked:");
    for (size_t i = 0; i < sizeof linked_sets / sizeof *linked_sets; i++)
        printf(" %s", linked_sets[i]->name);
    printf("\n");
    char names[128];
    supported_kernels(names, sizeof names);
    printf("kernel sets: %s\n", names);
    for (char *tok = strtok(names, " "); tok; tok = strtok(NULL, " ")) {
        if (strcmp(tok, "scalar") == 0 || n_sets == MAX_SETS)
            continue;
        setenv("BITNET_KERNEL", tok, 1);
        int rc = kernels_init();
        CHECK(rc == 0, "kernels_init for %s", tok);
        if (rc == 0)
            sets[n_sets++] = kops;
    }
    unsetenv("BITNET_KERNEL");
    kernels_init();
}

#define GUARD 5
#define SENTINEL ((int32_t)0x5a5a5a5a)

enum pattern { PAT_RANDOM, PAT_LOW, PAT_HIGH };
static const char *const pat_names[] = {"random", "low", "high"};

static void fill_x(int8_t *x, int n, enum pattern p)
{
    for (int i = 0; i < n; i++)
        x[i] = p == PAT_LOW ? -128 : p == PAT_HIGH ? 127 : (int8_t)(next() & 0xff);
}

/* A few ranges per matrix: all rows, single rows at both ends, and random ones. */
static int pick_ranges(int rows, int r0s[], int r1s[])
{
    int n = 0;
    r0s[n] = 0, r1s[n++] = rows;
    r0s[n] = rows - 1, r1s[n++] = rows;
    r0s[n] = 0, r1s[n++] = 1;
    r0s[n] = rows / 2, r1s[n++] = rows / 2; /* empty */
    for (int i = 0; i < 3; i++) {
        int a = rand_int(0, rows - 1), b = rand_int(a + 1, rows);
        r0s[n] = a, r1s[n++] = b;
    }
    return n;
}

static int32_t *alloc_out(int rows) { return malloc(sizeof(int32_t) * (size_t)(rows + 2 * GUARD)); }

static void reset_out(int32_t *o, int rows)
{
    for (int i = 0; i < rows + 2 * GUARD; i++)
        o[i] = SENTINEL;
}

/* want: scalar results for every row. Checks [r0, r1) equal and everything else intact. */
static void compare_ints(const char *what, const char *set, int rows, int cols, int r0, int r1,
                         const int32_t *want, const int32_t *got_g)
{
    int bad = 0, first = -1, clobbered = 0;
    for (int i = 0; i < rows + 2 * GUARD; i++) {
        int r = i - GUARD;
        if (r >= r0 && r < r1) {
            if (got_g[i] != want[r] && bad++ == 0)
                first = r;
        } else {
            clobbered += got_g[i] != SENTINEL;
        }
    }
    CHECK(bad == 0, "%s %s %dx%d rows [%d,%d): %d rows differ, first %d (%d vs %d)", set, what,
          rows, cols, r0, r1, bad, first, first >= 0 ? got_g[first + GUARD] : 0,
          first >= 0 ? want[first] : 0);
    CHECK(clobbered == 0, "%s %s %dx%d rows [%d,%d): wrote %d values outside the range", set,
          what, rows, cols, r0, r1, clobbered);
}

/* ------------------------------------------------------------------ I2_S */

/* Several vectors' sums by a multi kernel (got) against want: exact for the first n_x of
 * n_vec vectors inside [r0, r1), and the fill value (-12345) left everywhere else. want
 * holds every vector's scalar sums, -12345 in the padding up to ldo. */
static void compare_multi(const char *what, const char *set, size_t rows, size_t cols, int n_x,
                          int r0, int r1, const int32_t *want, const int32_t *got, size_t ldo,
                          int n_vec)
{
    int bad = 0;
    size_t first = 0;
    for (size_t t = 0; t < (size_t)n_vec; t++)
        for (size_t r = 0; r < ldo; r++) {
            bool inside = (int)t < n_x && (int)r >= r0 && (int)r < r1;
            size_t i = t * ldo + r;
            if (got[i] != (inside ? want[i] : -12345) && bad++ == 0)
                first = i;
        }
    CHECK(bad == 0, "%s %s %zux%zu, %d vectors, rows [%d,%d): %d values wrong or written "
          "outside, first vector %zu row %zu (%d vs %d)", set, what, rows, cols, n_x, r0, r1, bad,
          first / ldo, first % ldo, got[first], want[first]);
}

/* Several activation vectors at once (a few decoding streams): every vector's sums must
 * be exactly its scalar sums, in every set, and nothing outside the rows is written.
 * Vectors are ldx > cols apart, the last one ending at an inaccessible page; outputs are
 * ldo > rows apart. kops is the set under test: the default walks it once per vector. */
#define MULTI_MAX 16
static void i2s_multi_case(const struct ternary_matrix *w, const int *r0s, const int *r1s, int nr,
                           enum pattern xp)
{
    static const int counts[] = {1, 2, 3, 4, 5, 7, 8, 9, 16};
    size_t rows = (size_t)w->rows, cols = (size_t)w->cols;
    const size_t ldx = cols + 37, ldo = rows + 3, n_out = ldo * MULTI_MAX;
    struct guarded gx;
    int8_t *xs = (int8_t *)guarded_alloc(&gx, ldx * (MULTI_MAX - 1) + cols);
    int32_t *want = malloc(sizeof(int32_t) * n_out), *got = malloc(sizeof(int32_t) * n_out);
    for (size_t t = 0; t < MULTI_MAX; t++) {
        fill_x(xs + t * ldx, (int)cols, t % 3 ? PAT_RANDOM : xp);
        for (size_t i = 0; i < ldo; i++)
            want[t * ldo + i] = -12345;
        kernels_scalar.i2s_dot_rows(w, xs + t * ldx, 0, (int)rows, want + t * ldo);
    }
    struct kernel_ops saved = kops;
    for (int s = 0; s < n_sets; s++) {
        kops = sets[s];
        for (size_t ci = 0; ci < sizeof counts / sizeof *counts; ci++)
            for (int k = 0; k < nr; k++) {
                for (size_t i = 0; i < n_out; i++)
                    got[i] = -12345;
                sets[s].i2s_dot_rows_multi(w, xs, ldx, counts[ci], r0s[k], r1s[k], got, ldo);
                compare_multi("i2s multi", sets[s].name, rows, cols, counts[ci], r0s[k], r1s[k],
                              want, got, ldo, MULTI_MAX);
            }
    }
    kops = saved;
    guarded_free(&gx);
    free(want);
    free(got);
}

/* Codes straight from random bytes, so 3 (read as +2 by the scalar twin) turns up too. */
static void i2s_multi_raw_case(int rows, int cols)
{
    size_t rb = (size_t)cols / 4;
    struct guarded gw;
    uint8_t *data = guarded_alloc(&gw, rows * rb);
    for (size_t i = 0; i < rows * rb; i++)
        data[i] = (uint8_t)next();
    struct ternary_matrix w = {.type = GGML_TYPE_I2_S, .rows = rows, .cols = cols, .data = data,
                               .row_bytes = rb, .scale = 1.0f};
    int r0s[8], r1s[8];
    int nr = pick_ranges(rows, r0s, r1s);
    i2s_multi_case(&w, r0s, r1s, nr, PAT_RANDOM);
    guarded_free(&gw);
}

static void i2s_case(int rows, int cols, enum pattern wp, enum pattern xp)
{
    size_t rb = (size_t)cols / 4;
    struct guarded gw, gx;
    uint8_t *data = guarded_alloc(&gw, rows * rb);
    int8_t *xq = (int8_t *)guarded_alloc(&gx, (size_t)cols);
    int8_t *vals = malloc((size_t)cols);
    uint8_t *packed = malloc(rb + 32);
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++)
            vals[c] = wp == PAT_LOW ? -1 : wp == PAT_HIGH ? 1 : (int8_t)(next() % 3) - 1;
        i2s_pack(vals, (size_t)cols, 1.0f, packed);
        memcpy(data + r * rb, packed, rb);
    }
    fill_x(xq, cols, xp);
    struct ternary_matrix w = {.type = GGML_TYPE_I2_S, .rows = rows, .cols = cols, .data = data,
                               .row_bytes = rb, .scale = 1.0f};
    int32_t *want = malloc(sizeof(int32_t) * (size_t)rows), *got = alloc_out(rows);
    kernels_scalar.i2s_dot_rows(&w, xq, 0, rows, want);
    int r0s[8], r1s[8];
    int nr = pick_ranges(rows, r0s, r1s);
    char what[64];
    snprintf(what, sizeof what, "i2s w=%s x=%s", pat_names[wp], pat_names[xp]);
    for (int s = 0; s < n_sets; s++)
        for (int k = 0; k < nr; k++) {
            reset_out(got, rows);
            sets[s].i2s_dot_rows(&w, xq, r0s[k], r1s[k], got + GUARD);
            compare_ints(what, sets[s].name, rows, cols, r0s[k], r1s[k], want, got);
        }
    i2s_multi_case(&w, r0s, r1s, nr, xp);
    free(want);
    free(got);
    free(vals);
    free(packed);
    guarded_free(&gw);
    guarded_free(&gx);
}

static void test_i2s(void)
{
    static const int cols_list[] = {128, 256, 384, 640, 2560, 6912};
    static const int rows_list[] = {1, 7, 37, 640};
    for (size_t ci = 0; ci < sizeof cols_list / sizeof *cols_list; ci++)
        for (size_t ri = 0; ri < sizeof rows_list / sizeof *rows_list; ri++) {
            i2s_case(rows_list[ri], cols_list[ci], PAT_RANDOM, PAT_RANDOM);
            /* the extremes are where a saturating or offset trick would break */
            if (rows_list[ri] == 7) {
                for (int wp = 0; wp < 3; wp++)
                    for (int xp = 0; xp < 3; xp++)
                        if (wp || xp)
                            i2s_case(7, cols_list[ci], (enum pattern)wp, (enum pattern)xp);
            }
        }
    /* rows longer than a kernel's x buffer, taken in column chunks */
    i2s_case(37, 8320, PAT_RANDOM, PAT_RANDOM);
    i2s_case(9, 17024, PAT_RANDOM, PAT_RANDOM);
    i2s_case(5, 17024, PAT_HIGH, PAT_LOW);
    /* code 3 too; a few rows and more than model/forward.c's blocks of 512; odd and even
     * block counts, within one column chunk and past it */
    static const int raw_cols[] = {128, 384, 640, 2560, 6912, 8320, 8448};
    for (size_t ci = 0; ci < sizeof raw_cols / sizeof *raw_cols; ci++) {
        i2s_multi_raw_case(13, raw_cols[ci]);
        i2s_multi_raw_case(530, raw_cols[ci]);
    }
}

/* ------------------------------------------------------------------ q8 */

/* Several activation vectors at once (a few decoding streams): every vector's sums must
 * be exactly its scalar sums, in every set, and nothing outside the rows is written.
 * Vector 0 is x itself (want holds its sums); the others are checked against the scalar
 * twin here. kops is the set under test: the default walks it once per vector. */
static void q8_multi_case(const struct q8_matrix *m, const int8_t *x0, const int32_t *want0,
                          const int *r0s, const int *r1s, int nr, enum pattern xp)
{
    static const int counts[] = {1, 2, 3, 4, 5, 7};
    size_t rows = (size_t)m->rows, cols = (size_t)m->cols;
    const size_t ldx = cols + 5, ldo = rows + 3;
    int8_t *xs = malloc(ldx * 7);
    int32_t *want = malloc(sizeof(int32_t) * ldo * 7), *got = malloc(sizeof(int32_t) * ldo * 7);
    struct q8_matrix ms = *m;
    int32_t *rs = malloc(sizeof(int32_t) * rows);
    for (size_t r = 0; r < rows; r++) {
        int32_t sum = 0;
        for (size_t c = 0; c < cols; c++)
            sum += m->q[r * cols + c];
        rs[r] = sum;
    }
    ms.row_sum = rs;
    for (size_t t = 0; t < 7; t++) {
        if (t == 0)
            memcpy(xs, x0, cols);
        else
            fill_x(xs + t * ldx, (int)cols, xp);
        for (size_t i = 0; i < ldo; i++)
            want[t * ldo + i] = -12345;
        if (t == 0)
            memcpy(want, want0, sizeof(int32_t) * rows);
        else
            kernels_scalar.q8_dot_rows(&ms, xs + t * ldx, 0, (int)rows, want + t * ldo);
    }
    struct kernel_ops saved = kops;
    for (int s = 0; s < n_sets; s++) {
        kops = sets[s];
        for (size_t ci = 0; ci < sizeof counts / sizeof *counts; ci++)
            for (int k = 0; k < nr; k++) {
                for (size_t i = 0; i < ldo * 7; i++)
                    got[i] = -12345;
                sets[s].q8_dot_rows_multi(m, xs, ldx, counts[ci], r0s[k], r1s[k], got, ldo);
                compare_multi("q8 multi", sets[s].name, rows, cols, counts[ci], r0s[k], r1s[k],
                              want, got, ldo, 7);
            }
    }
    kops = saved;
    free(xs);
    free(want);
    free(got);
    free(rs);
}

static void q8_case(int rows, int cols, enum pattern wp, enum pattern xp, int with_row_sum)
{
    struct guarded gq, gx;
    int8_t *q = (int8_t *)guarded_alloc(&gq, (size_t)rows * cols);
    int8_t *xq = (int8_t *)guarded_alloc(&gx, (size_t)cols);
    float *scale = malloc(sizeof(float) * (size_t)rows);
    int32_t *row_sum = malloc(sizeof(int32_t) * (size_t)rows);
    for (int r = 0; r < rows; r++) {
        int32_t s = 0;
        for (int c = 0; c < cols; c++) {
            int8_t v = wp == PAT_LOW ? -128 : wp == PAT_HIGH ? 127 : (int8_t)(next() & 0xff);
            q[(size_t)r * cols + c] = v;
            s += v;
        }
        scale[r] = 1.0f;
        row_sum[r] = s;
    }
    fill_x(xq, cols, xp);
    struct q8_matrix m = {.rows = rows, .cols = cols, .q = q, .scale = scale,
                          .row_sum = with_row_sum ? row_sum : NULL};
    struct q8_matrix ms = m;
    ms.row_sum = row_sum;
    int32_t *want = malloc(sizeof(int32_t) * (size_t)rows), *got = alloc_out(rows);
    kernels_scalar.q8_dot_rows(&ms, xq, 0, rows, want);
    int r0s[8], r1s[8];
    int nr = pick_ranges(rows, r0s, r1s);
    char what[64];
    snprintf(what, sizeof what, "q8 w=%s x=%s%s", pat_names[wp], pat_names[xp],
             with_row_sum ? "" : " no-row_sum");
    for (int s = 0; s < n_sets; s++)
        for (int k = 0; k < nr; k++) {
            reset_out(got, rows);
            sets[s].q8_dot_rows(&m, xq, r0s[k], r1s[k], got + GUARD);
            compare_ints(what, sets[s].name, rows, cols, r0s[k], r1s[k], want, got);
        }
    q8_multi_case(&m, xq, want, r0s, r1s, nr, xp);
    free(want);
    free(got);
    free(scale);
    free(row_sum);
    guarded_free(&gq);
    guarded_free(&gx);
}

static int random_cols(void) { return 32 * rand_int(1, 6912 / 32); }

static void test_q8(void)
{
    static const int cols_list[] = {32, 64, 96, 160, 224, 2560, 6912};
    static const int rows_list[] = {1, 7, 37, 640};
    for (size_t ci = 0; ci < sizeof cols_list / sizeof *cols_list; ci++)
        for (size_t ri = 0; ri < sizeof rows_list / sizeof *rows_list; ri++)
            q8_case(rows_list[ri], cols_list[ci], PAT_RANDOM, PAT_RANDOM, 1);
    for (int i = 0; i < 24; i++)
        q8_case(rand_int(1, 70), random_cols(), PAT_RANDOM, PAT_RANDOM, i & 1);
    /* not a multiple of 32: no model has it, but the contract does not forbid it */
    q8_case(9, 100, PAT_RANDOM, PAT_RANDOM, 1);
    q8_case(9, 1, PAT_LOW, PAT_LOW, 1);
    for (int ci = 0; ci < 3; ci++)
        for (int wp = 0; wp < 3; wp++)
            for (int xp = 0; xp < 3; xp++)
                q8_case(7, ci == 0 ? 32 : ci == 1 ? 96 : 6912, (enum pattern)wp, (enum pattern)xp,
                        1);
}

/* ------------------------------------------------------------------ dense */

static size_t dense_row_bytes(uint32_t type, int cols)
{
    switch (type) {
    case GGML_TYPE_F32: return (size_t)cols * 4;
    case GGML_TYPE_Q8_0: return (size_t)cols / QK8_0 * Q8_0_BYTES;
    default: return (size_t)cols * 2;
    }
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* wp: PAT_HIGH makes every weight and x positive (no cancellation), PAT_LOW mixes
 * magnitudes over many binades. */
static void fill_dense(uint32_t type, uint8_t *row, int cols, enum pattern wp)
{
    for (int c = 0; c < cols; c++) {
        float v = wp == PAT_HIGH ? fabsf(rand_float()) + 0.01f
                  : wp == PAT_LOW ? rand_float() * ldexpf(1.0f, rand_int(-20, 10))
                                  : rand_float();
        if (type == GGML_TYPE_F32) {
            memcpy(row + 4 * c, &v, 4);
        } else if (type == GGML_TYPE_F16) {
            put16(row + 2 * c, f32_to_f16(v));
        } else if (type == GGML_TYPE_BF16) {
            uint32_t bits;
            memcpy(&bits, &v, 4);
            put16(row + 2 * c, (uint16_t)(bits >> 16));
        }
    }
    if (type == GGML_TYPE_Q8_0) {
        for (int b = 0; b < cols / QK8_0; b++) {
            uint8_t *blk = row + b * Q8_0_BYTES;
            float d = wp == PAT_LOW ? ldexpf(1.0f, rand_int(-20, 0)) : 0.001f + fabsf(rand_float()) / 64;
            put16(blk, f32_to_f16(d));
            for (int i = 0; i < QK8_0; i++)
                blk[2 + i] = wp == PAT_HIGH ? (uint8_t)rand_int(1, 127) : (uint8_t)(next() & 0xff);
        }
    }
}

/* Several vectors at once must give each vector's one-vector result bit for bit, in
 * every set (kops is the set under test: the default walks it once per vector). */
static void dense_multi_case(const struct dense_matrix *m, const float *x0, const int *r0s,
                             const int *r1s, int nr)
{
    static const int counts[] = {1, 2, 3, 4, 5, 7};
    size_t rows = (size_t)m->rows, cols = (size_t)m->cols;
    const size_t ldx = cols + 3, ldo = rows + 5;
    float *xs = malloc(sizeof(float) * ldx * 7);
    float *want = malloc(sizeof(float) * ldo * 7), *got = malloc(sizeof(float) * ldo * 7);
    for (size_t t = 0; t < 7; t++)
        for (size_t c = 0; c < cols; c++)
            xs[t * ldx + c] = t == 0 ? x0[c] : rand_float();
    struct kernel_ops saved = kops;
    for (int s = 0; s < n_sets; s++) {
        kops = sets[s];
        for (size_t ci = 0; ci < sizeof counts / sizeof *counts; ci++)
            for (int k = 0; k < nr; k++) {
                int n_x = counts[ci], bad = 0;
                for (size_t i = 0; i < ldo * 7; i++)
                    want[i] = got[i] = -12345.0f;
                for (int t = 0; t < n_x; t++)
                    sets[s].dense_dot_rows(m, xs + t * ldx, r0s[k], r1s[k], want + t * ldo);
                sets[s].dense_dot_rows_multi(m, xs, ldx, n_x, r0s[k], r1s[k], got, ldo);
                bad = memcmp(want, got, sizeof(float) * ldo * 7) != 0;
                CHECK(!bad, "%s dense multi %s %zux%zu, %d vectors, rows [%d,%d): not each "
                      "vector's own result (or wrote outside)", sets[s].name,
                      ggml_type_name(m->type), rows, cols, n_x, r0s[k], r1s[k]);
            }
    }
    kops = saved;
    free(xs);
    free(want);
    free(got);
}

static void dense_case(uint32_t type, int rows, int cols, enum pattern wp)
{
    size_t rb = dense_row_bytes(type, cols);
    struct guarded gd, gx;
    uint8_t *data = guarded_alloc(&gd, rows * rb);
    float *x = (float *)guarded_alloc(&gx, sizeof(float) * (size_t)cols);
    for (int r = 0; r < rows; r++)
        fill_dense(type, data + r * rb, cols, wp);
    for (int c = 0; c < cols; c++)
        x[c] = wp == PAT_HIGH ? fabsf(rand_float()) + 0.01f : rand_float();
    struct dense_matrix m = {.type = type, .rows = rows, .cols = cols, .data = data, .row_bytes = rb};
    float *want = malloc(sizeof(float) * (size_t)rows);
    float *got = malloc(sizeof(float) * (size_t)(rows + 2 * GUARD));
    double *tol = malloc(sizeof(double) * (size_t)rows);
    float *buf = malloc(sizeof(float) * (size_t)cols);
    kernels_scalar.dense_dot_rows(&m, x, 0, rows, want);
    for (int r = 0; r < rows; r++) {
        dense_row_to_f32(&m, r, buf);
        double s = 0;
        for (int c = 0; c < cols; c++)
            s += fabs((double)buf[c] * x[c]);
        tol[r] = 1e-5 * s + 1e-30;
    }
    int r0s[8], r1s[8];
    int nr = pick_ranges(rows, r0s, r1s);
    for (int s = 0; s < n_sets; s++)
        for (int k = 0; k < nr; k++) {
            for (int i = 0; i < rows + 2 * GUARD; i++)
                got[i] = -12345.0f;
            sets[s].dense_dot_rows(&m, x, r0s[k], r1s[k], got + GUARD);
            int bad = 0, first = -1, clobbered = 0;
            for (int i = 0; i < rows + 2 * GUARD; i++) {
                int r = i - GUARD;
                if (r >= r0s[k] && r < r1s[k]) {
                    if (!(fabs((double)got[i] - want[r]) <= tol[r]) && bad++ == 0)
                        first = r;
                } else {
                    clobbered += got[i] != -12345.0f;
                }
            }
            CHECK(bad == 0, "%s dense %s w=%s %dx%d rows [%d,%d): %d rows off, first %d (%.9g vs %.9g, tol %.3g)",
                  sets[s].name, ggml_type_name(type), pat_names[wp], rows, cols, r0s[k], r1s[k],
                  bad, first, first >= 0 ? got[first + GUARD] : 0.0, first >= 0 ? want[first] : 0.0,
                  first >= 0 ? tol[first] : 0.0);
            CHECK(clobbered == 0, "%s dense %s %dx%d rows [%d,%d): wrote %d values outside",
                  sets[s].name, ggml_type_name(type), rows, cols, r0s[k], r1s[k], clobbered);
        }
    dense_multi_case(&m, x, r0s, r1s, nr);
    free(want);
    free(got);
    free(tol);
    free(buf);
    guarded_free(&gd);
    guarded_free(&gx);
}

static void test_dense(void)
{
    static const uint32_t types[] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0};
    static const int cols_list[] = {32, 96, 160, 2560, 6912};
    static const int rows_list[] = {1, 7, 37, 640};
    for (int t = 0; t < 4; t++) {
        for (size_t ci = 0; ci < sizeof cols_list / sizeof *cols_list; ci++)
            for (size_t ri = 0; ri < sizeof rows_list / sizeof *rows_list; ri++)
                if (rows_list[ri] < 640 || cols_list[ci] <= 2560)
                    dense_case(types[t], rows_list[ri], cols_list[ci], PAT_RANDOM);
        for (int i = 0; i < 8; i++)
            dense_case(types[t], rand_int(1, 40), random_cols(), PAT_RANDOM);
        for (int wp = 1; wp < 3; wp++) {
            dense_case(types[t], 7, 96, (enum pattern)wp);
            dense_case(types[t], 7, 6912, (enum pattern)wp);
        }
    }
    /* F32/F16/BF16 rows need not be a multiple of 32 long */
    static const int odd_cols[] = {1, 5, 15, 17, 31, 33, 47, 100, 2561};
    for (int t = 0; t < 3; t++)
        for (size_t ci = 0; ci < sizeof odd_cols / sizeof *odd_cols; ci++)
            dense_case(types[t], 9, odd_cols[ci], PAT_RANDOM);
}

int main(void)
{
    load_sets();
    if (n_sets == 0)
        printf("no optimized kernel set on this CPU; nothing to compare\n");
    /* the decode kernels read kops.row_streams; every walk a CPU may be given must
     * visit each row exactly once */
    static const int walks[] = {4, 8, 12};
    for (size_t i = 0; i < sizeof walks / sizeof *walks; i++) {
        kops.row_streams = walks[i];
        printf("row walk of %d runs\n", walks[i]);
        test_i2s();
        test_q8();
        test_dense();
    }
    return check_done("test_kernel_twins");
}

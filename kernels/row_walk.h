/* The order in which decode kernels visit rows, shared by the AVX2 and AVX-512 sets. */
#ifndef BITNET_ROW_WALK_H
#define BITNET_ROW_WALK_H

#include <immintrin.h>

/* What limits a decode kernel is how many cache lines are on their way from memory at
 * once. A core's own misses (a dozen or so fill buffers) cannot cover the latency, and
 * the L2 streamer runs only a few lines ahead of each sequential stream it tracks. So
 * rows [r0, r1) are walked as `streams` contiguous runs advanced together: the
 * streamer works on all of them, and every row also prefetches its successor in its run
 * (into L2, where it does not crowd x out of L1). How many runs suit is the CPU's
 * (kops.row_streams): on Sapphire Rapids 8 runs read I2_S at ~97% of a plain read of
 * the same bytes, where one run of four-row groups managed ~80%; on Zen 5, 4 runs beat
 * 8, and the prefetches cost more than they gave (kernels/dispatch.c). Rows left over go
 * in consecutive groups of four, then singly. */
struct row_walk {
    int r0, r1, q, t, steps, r, groups;
};

/* streams: a multiple of 4, since each step takes one row from each of four runs;
 * other values are rounded down, to at least 4. */
static inline void row_walk_init(struct row_walk *w, int r0, int r1, int streams)
{
    w->groups = streams >= 4 ? streams / 4 : 1;
    w->r0 = r0;
    w->r1 = r1;
    w->q = r1 > r0 ? (r1 - r0) / (4 * w->groups) : 0;
    w->t = 0;
    w->steps = w->q * w->groups;
    w->r = r0 + 4 * w->groups * w->q;
}

/* The next rows to compute (4 or 1 of them); 0 when done. */
static inline int row_walk_next(struct row_walk *w, int rr[4])
{
    if (w->t < w->steps) {
        int i = w->t / w->groups, g = w->t % w->groups;
        for (int k = 0; k < 4; k++)
            rr[k] = w->r0 + (4 * g + k) * w->q + i;
        w->t++;
        return 4;
    }
    if (w->r + 4 <= w->r1) {
        for (int k = 0; k < 4; k++)
            rr[k] = w->r + k;
        w->r += 4;
        return 4;
    }
    if (w->r < w->r1) {
        rr[0] = w->r++;
        return 1;
    }
    return 0;
}

/* The prefetch of a row's successor in its run, where the CPU gains by it
 * (kops.row_prefetch; a flag the compiler reads once per loop, not per line). */
#define PF_NEXT_ROW(p, rb)                                                                \
    do {                                                                                  \
        if (kops.row_prefetch)                                                            \
            _mm_prefetch((const char *)(p) + (rb), _MM_HINT_T1);                          \
    } while (0)

/* The prefetch of the kernels for several vectors, which revisit a block of rows once per
 * vector: without it the first pass waits on memory, on every CPU measured (Zen 5, one
 * thread: the F16 head against 4 vectors read at 10-12 GB/s without, 26-28 with). */
#define PF_AHEAD(p, dist) _mm_prefetch((const char *)(p) + (dist), _MM_HINT_T1)

/* The walk of a dense (output-head) kernel: rows4 computes four rows' dots, row1 one;
 * both are the instruction set's own, the order of rows is the walk's. */
#define DENSE_DRIVER(name, type, rows4, row1)                                             \
    static void name(const struct dense_matrix *m, const float *x, int r0, int r1,        \
                     float *out)                                                          \
    {                                                                                     \
        size_t rb = m->row_bytes;                                                         \
        struct row_walk it;                                                               \
        row_walk_init(&it, r0, r1, kops.row_streams);                                    \
        int rr[4], n;                                                                     \
        float dot[4];                                                                     \
        while ((n = row_walk_next(&it, rr)) != 0) {                                       \
            if (n == 4) {                                                                 \
                rows4(type, m->data + (size_t)rr[0] * rb, m->data + (size_t)rr[1] * rb,  \
                      m->data + (size_t)rr[2] * rb, m->data + (size_t)rr[3] * rb, rb, x,  \
                      m->cols, dot);                                                      \
                for (int k = 0; k < 4; k++)                                               \
                    out[rr[k]] = dot[k];                                                  \
            } else {                                                                      \
                out[rr[0]] = row1(type, m->data + (size_t)rr[0] * rb, x, m->cols);        \
            }                                                                             \
        }                                                                                 \
    }

/* dense_dot_rows for one instruction set: a driver per dense type over that set's
 * dense_rows4/dense_row1 and q8_0_rows4/q8_0_row1, and the switch between them. */
#define DENSE_DOT_ROWS(fn)                                                                \
    DENSE_DRIVER(dense_f32, GGML_TYPE_F32, dense_rows4, dense_row1)                       \
    DENSE_DRIVER(dense_f16, GGML_TYPE_F16, dense_rows4, dense_row1)                       \
    DENSE_DRIVER(dense_bf16, GGML_TYPE_BF16, dense_rows4, dense_row1)                     \
    DENSE_DRIVER(dense_q8_0, GGML_TYPE_Q8_0, q8_0_rows4, q8_0_row1)                       \
    static void fn(const struct dense_matrix *m, const float *x, int r0, int r1, float *out) \
    {                                                                                     \
        switch (m->type) {                                                                \
        case GGML_TYPE_F32: dense_f32(m, x, r0, r1, out); break;                          \
        case GGML_TYPE_F16: dense_f16(m, x, r0, r1, out); break;                          \
        case GGML_TYPE_BF16: dense_bf16(m, x, r0, r1, out); break;                        \
        case GGML_TYPE_Q8_0: dense_q8_0(m, x, r0, r1, out); break;                        \
        default: kernels_scalar.dense_dot_rows(m, x, r0, r1, out); break;                 \
        }                                                                                 \
    }

#endif

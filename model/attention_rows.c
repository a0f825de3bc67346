/* Causal attention of a batch's rows over their KV caches, on the thread pool.
 *
 * The positions a row attends over are cut at multiples of the state's segment length
 * (forward_state.attn_seg). A row whose cache fits one segment is one kernel call per
 * KV head, writing its output. A longer row is one call per (KV head, segment), each
 * leaving its segment's output with the max and sum of its scores; a second pass merges
 * them by softmax algebra. The cut depends on the position alone, never on the threads
 * or the batch, so a row's result is the same whoever computes it; what segments buy is
 * that the threads share one long KV head by positions instead of by query heads, which
 * made each of them read the whole head (two threads read 6 of 5 heads per layer). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "model/forward.h"

/* Each (row, query head, segment) unit weighs its positions plus this much for the call
 * itself. */
#define ATTN_UNIT_FIXED 16
/* Up to this many heads to merge (a decode step's), the caller merges them alone: a few
 * microseconds, less than waking the pool again. */
#define MERGE_ON_CALLER 64

struct attention_job {
    const struct bitnet_hparams *hp;
    struct forward_state *s;
    uint32_t il;
    int r0, r1;        /* the rows of this pass */
    int n_long;        /* of which this many have several segments (seg_row >= 0) */
};

static int segments_of(const struct forward_state *s, int t)
{
    return (s->row_pos[t] + s->attn_seg) / s->attn_seg; /* positions 0..row_pos */
}

/* Thread ith's units [lo, hi) of the pass: an even share of the work rather than of the
 * units, since units differ in positions. A unit goes to the thread whose share holds
 * its middle. Units lie in order of rows, then KV heads, then segments, then the query
 * heads of the KV head: those of one (row, KV head, segment), a group, are consecutive,
 * so a thread's share meets most groups whole. */
static void split_units(const struct attention_job *job, int ith, int nth, int *lo, int *hi)
{
    const struct forward_state *s = job->s;
    int group = s->group, n_kv = s->n_kv;
    double total = 0.0;
    for (int t = job->r0; t < job->r1; t++)
        total += (double)n_kv * group * (s->row_pos[t] + 1 + ATTN_UNIT_FIXED * segments_of(s, t));
    double begin = total * ith / nth, end = total * (ith + 1) / nth, at = 0.0;
    int u = 0;
    *lo = -1;
    for (int t = job->r0; t < job->r1; t++) {
        int n = s->row_pos[t] + 1, nseg = segments_of(s, t);
        for (int kvh = 0; kvh < n_kv; kvh++)
            for (int sg = 0; sg < nseg; sg++) {
                int len = n - sg * s->attn_seg < s->attn_seg ? n - sg * s->attn_seg : s->attn_seg;
                double c = len + ATTN_UNIT_FIXED;
                for (int j = 0; j < group; j++, u++, at += c) {
                    double mid = at + c / 2;
                    if (*lo < 0 && mid >= begin)
                        *lo = u;
                    if (mid >= end) {
                        *hi = u;
                        if (*lo < 0)
                            *lo = u;
                        return;
                    }
                }
            }
    }
    if (*lo < 0)
        *lo = u;
    *hi = u;
}

/* The query heads [j0, j1) of KV head kvh of row t over segment sg. */
static void attend_group(const struct attention_job *job, int ith, int t, int kvh, int sg,
                         int j0, int j1)
{
    const struct bitnet_hparams *hp = job->hp;
    struct forward_state *s = job->s;
    int hd = (int)hp->head_dim, group = s->group, h = kvh * group + j0, g = j1 - j0;
    int n = s->row_pos[t] + 1, p0 = sg * s->attn_seg;
    int len = n - p0 < s->attn_seg ? n - p0 : s->attn_seg;
    size_t head = kv_head_index(s, s->row_slot[t], job->il, kvh);
    /* the segment's own view of the cache: p0 is a multiple of the key tile */
    size_t off = (head * (size_t)s->n_ctx_pad + (size_t)p0) * hd; /* in elements */
    const float *q = s->q + (size_t)t * hp->n_embd + (size_t)h * hd;
    float *out = s->attn_out + (size_t)t * hp->n_embd + (size_t)h * hd, *max_sum = NULL;
    if (s->seg_row[t] >= 0) {
        size_t at = ((size_t)s->seg_row[t] * s->n_seg_max + (size_t)sg) * hp->n_head + (size_t)h;
        out = s->seg_out + at * hd;
        max_sum = s->seg_ms + at * 2;
    }
    float scale = 1.0f / sqrtf((float)hd);
    float *scratch = s->att + (size_t)ith * group * s->n_ctx_pad;
    if (s->kv_type == KV_TYPE_Q8) {
        size_t sc = head * (size_t)s->n_ctx_pad + (size_t)p0;
        struct attn_group_q8 a = {
            .q = q, .out = out, .g = g, .d = hd, .n = len, .scale = scale, .scratch = scratch,
            .k = (const int8_t *)s->key_cache + off, .v = (const int8_t *)s->value_cache + off,
            .k_scale = s->key_scale + sc, .v_scale = s->value_scale + sc,
            .q8 = s->att_q8 + (size_t)ith * group * hd, .max_sum = max_sum,
        };
        kops.attn_q8(&a);
        return;
    }
    size_t elem = s->kv_type == KV_TYPE_F16 ? sizeof(uint16_t) : sizeof(float);
    struct attn_group a = {
        .q = q, .out = out, .g = g, .d = hd, .n = len, .scale = scale, .scratch = scratch,
        .k = (const char *)s->key_cache + off * elem, .v = (const char *)s->value_cache + off * elem,
        .max_sum = max_sum,
    };
    if (s->kv_type == KV_TYPE_F16)
        kops.attn_f16(&a);
    else
        kops.attn_f32(&a);
}

/* Each thread's units, one kernel call per group they meet: the call reads that part of
 * the cache once for all of the group's heads it has. */
static void attention_task(void *ctx, int ith, int nth)
{
    const struct attention_job *job = ctx;
    const struct forward_state *s = job->s;
    int group = s->group, kv_end = s->kvh0 + s->n_kv, lo, hi, u = 0;
    split_units(job, ith, nth, &lo, &hi);
    for (int t = job->r0; t < job->r1 && u < hi; t++) {
        int nseg = segments_of(s, t);
        for (int kvh = s->kvh0; kvh < kv_end && u < hi; kvh++)
            for (int sg = 0; sg < nseg && u < hi; sg++, u += group) {
                int j0 = lo - u > 0 ? lo - u : 0, j1 = hi - u < group ? hi - u : group;
                if (j0 < j1)
                    attend_group(job, ith, t, kvh, sg, j0, j1);
            }
    }
}

typedef float vec4 __attribute__((vector_size(16)));

/* A long row's head from its segments, in segment order: with M the largest of their
 * maxima, segment i weighs w_i = sum_i * e^(max_i - M), and
 *     out = (sum over i of w_i * out_i) * (1 / sum over i of w_i)
 * where out_i is the segment's own normalized output. */
static void merge_head(const struct forward_state *s, const struct bitnet_hparams *hp, int t,
                       int h)
{
    int hd = (int)hp->head_dim, nseg = segments_of(s, t);
    size_t first = (size_t)s->seg_row[t] * s->n_seg_max * hp->n_head + (size_t)h;
    size_t step = hp->n_head; /* from one segment's entry to the next */
    float *out = s->attn_out + (size_t)t * hp->n_embd + (size_t)h * hd;
    float m = -INFINITY;
    for (int sg = 0; sg < nseg; sg++) {
        float ms = s->seg_ms[(first + sg * step) * 2];
        m = ms > m ? ms : m;
    }
    float total = 0.0f, w[nseg];
    for (int sg = 0; sg < nseg; sg++) {
        const float *ms = s->seg_ms + (first + sg * step) * 2;
        w[sg] = ms[1] * expf(ms[0] - m);
        total += w[sg];
    }
    float inv = 1.0f / total;
    /* four elements at a time in GCC's vector type (each lane's operations those of the
     * plain loop, in its order): a decode step merges every head on one thread */
    int i = 0;
    for (; i + 4 <= hd; i += 4) {
        vec4 acc = {0.0f, 0.0f, 0.0f, 0.0f}, o;
        for (int sg = 0; sg < nseg; sg++) {
            memcpy(&o, s->seg_out + (first + sg * step) * hd + i, sizeof o);
            acc += w[sg] * o;
        }
        acc *= inv;
        memcpy(out + i, &acc, sizeof acc);
    }
    for (; i < hd; i++) {
        float acc = 0.0f;
        for (int sg = 0; sg < nseg; sg++)
            acc += w[sg] * s->seg_out[(first + sg * step) * hd + i];
        out[i] = acc * inv;
    }
}

static void merge_task(void *ctx, int ith, int nth)
{
    const struct attention_job *job = ctx;
    const struct forward_state *s = job->s;
    /* the query heads of the state's KV heads */
    int h0 = s->kvh0 * s->group, n_head = s->n_kv * s->group, lo, hi;
    split_range(job->n_long * n_head, 1, ith, nth, &lo, &hi);
    /* the long rows of the pass in order, seg_row 0.. */
    for (int t = job->r0, k = 0; t < job->r1 && k < hi; t++) {
        if (s->seg_row[t] < 0)
            continue;
        for (int h = h0; h < h0 + n_head; h++, k++)
            if (k >= lo && k < hi)
                merge_head(s, job->hp, t, h);
    }
}

void forward_attention(const struct bitnet_hparams *hp, struct forward_state *s, uint32_t il)
{
    /* passes of rows holding at most seg_rows long ones: their segments' outputs wait in
     * seg_out for the merge */
    for (int r0 = 0; r0 < s->n_rows;) {
        struct attention_job job = {.hp = hp, .s = s, .il = il, .r0 = r0};
        int r1 = r0;
        for (; r1 < s->n_rows; r1++) {
            if (segments_of(s, r1) == 1) {
                s->seg_row[r1] = -1;
                continue;
            }
            if (job.n_long == s->seg_rows)
                break;
            s->seg_row[r1] = job.n_long++;
        }
        job.r1 = r1;
        threadpool_run(s->pool, attention_task, &job);
        if (job.n_long > 0) {
            if (job.n_long * s->n_kv * s->group <= MERGE_ON_CALLER)
                merge_task(&job, 0, 1);
            else
                threadpool_run(s->pool, merge_task, &job);
        }
        r0 = r1;
    }
}

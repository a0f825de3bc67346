/* Reference forward pass: plain loops for everything but the matrix products, which go
 * through the kernel table on the thread pool. Read it beside spec section 4. */
#include "model/forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kernels/attn_q8.h"
#include "kernels/f16.h"
#include "kernels/kernels.h"
#include "model/clock.h"
#include "model/ggml_types.h"

/* Rows whose int8-head sums are held at once (forward_state.head_acc). */
#define HEAD_ACC_ROWS 4
/* Bytes of attention segments' outputs waiting for their merge (forward_state.seg_out):
 * a pass of rows takes as many long rows as fit. */
#define SEG_BUDGET (16u << 20)

static int max_i(int a, int b) { return a > b ? a : b; }

const char *const forward_part_names[FP_PARTS] = {"norms", "q/k/v", "attention", "o",
                                                  "gate/up", "down", "head"};

/* The time now when the state is timed (forward_state.timing), else 0. */
static double timing_start(const struct forward_state *s)
{
    return s->timing ? clock_seconds() : 0.0;
}

/* Adds the time since *t to part p, and restarts *t. */
static void timing_lap(const struct forward_state *s, enum forward_part p, double *t)
{
    if (!s->timing)
        return;
    double now = timing_start(s);
    s->timing->seconds[p] += now - *t;
    *t = now;
}

int kv_type_parse(const char *name, enum kv_type *t)
{
    static const enum kv_type all[] = {KV_TYPE_F32, KV_TYPE_F16, KV_TYPE_Q8};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcasecmp(name, kv_type_name(all[i])) == 0) {
            *t = all[i];
            return 0;
        }
    return -1;
}

const char *kv_type_name(enum kv_type t)
{
    switch (t) {
    case KV_TYPE_F32: return "f32";
    case KV_TYPE_F16: return "f16";
    case KV_TYPE_Q8: return "q8";
    }
    return "unknown";
}

size_t kv_bytes_per_position(const struct bitnet_hparams *hp, enum kv_type t)
{
    size_t kv_dim = (size_t)hp->n_head_kv * hp->head_dim;
    switch (t) {
    case KV_TYPE_F16: return 2 * kv_dim * sizeof(uint16_t);
    case KV_TYPE_Q8: return 2 * (kv_dim + hp->n_head_kv * sizeof(float));
    default: return 2 * kv_dim * sizeof(float);
    }
}

/* Part rank of n units split in size contiguous pieces, in multiples of align where n
 * allows (the kernels take rows in sixteens; 64 keeps whole cache lines of floats). */
static void split_part(int n, int align, int rank, int size, int *lo, int *hi)
{
    int units = n / align;
    *lo = (int)((long long)units * rank / size) * align;
    *hi = rank == size - 1 ? n : (int)((long long)units * (rank + 1) / size) * align;
}

int forward_tp_split(const struct bitnet_hparams *hp, int rank, int size, struct forward_tp *tp,
                     struct errbuf *e)
{
    memset(tp, 0, sizeof *tp);
    if (size < 1 || rank < 0 || rank >= size)
        return err_set(e, "tensor-parallel rank %d of %d", rank, size);
    if ((uint32_t)size > hp->n_head_kv)
        return err_set(e, "tensor parallelism over %d ranks: the model has %u KV heads, and "
                       "each rank needs at least one", size, hp->n_head_kv);
    tp->rank = rank;
    tp->size = size;
    split_part((int)hp->n_head_kv, 1, rank, size, &tp->kvh0, &tp->kvh1);
    int hd = (int)hp->head_dim, group = (int)(hp->n_head / hp->n_head_kv);
    tp->q0 = tp->kvh0 * group * hd;
    tp->q1 = tp->kvh1 * group * hd;
    tp->k0 = tp->kvh0 * hd;
    tp->k1 = tp->kvh1 * hd;
    split_part((int)hp->n_embd, 64, rank, size, &tp->e0, &tp->e1);
    split_part((int)hp->n_ff, 64, rank, size, &tp->f0, &tp->f1);
    split_part((int)hp->n_vocab, 64, rank, size, &tp->v0, &tp->v1);
    return 0;
}

int forward_state_init(struct forward_state *s, const struct bitnet_model *m,
                       const struct forward_config *cfg, struct errbuf *e)
{
    const struct bitnet_hparams *hp = &m->hp;
    memset(s, 0, sizeof *s);
    if (cfg->n_ctx <= 0 || cfg->n_batch <= 0)
        return err_set(e, "context (%d) and batch (%d) must be positive", cfg->n_ctx,
                       cfg->n_batch);
    size_t nb = (size_t)cfg->n_batch;
    size_t embd = hp->n_embd, ff = hp->n_ff;
    size_t kv_dim = (size_t)hp->n_head_kv * hp->head_dim;
    size_t wide = (size_t)max_i((int)embd, (int)ff);
    s->layer_begin = cfg->layer_begin;
    s->layer_end = cfg->layer_end ? cfg->layer_end : hp->n_layer;
    s->n_slots = cfg->n_slots > 0 ? cfg->n_slots : 1;
    if (s->layer_begin >= s->layer_end || s->layer_end > hp->n_layer)
        return err_set(e, "layer range [%u, %u) is not within the model's %u layers",
                       s->layer_begin, s->layer_end, hp->n_layer);
    if (cfg->kv_type != KV_TYPE_F32 && cfg->kv_type != KV_TYPE_F16 && cfg->kv_type != KV_TYPE_Q8)
        return err_set(e, "KV type %d is not " KV_TYPE_NAMES, (int)cfg->kv_type);
    /* the int8 keys lie in groups of 4 elements of one position (kernels.h) */
    if (cfg->kv_type == KV_TYPE_Q8 && hp->head_dim % 4 != 0)
        return err_set(e, "KV type q8: head dimension %u is not a multiple of 4 (f32 and f16 "
                          "have no such limit)", hp->head_dim);
    s->attn_seg = cfg->attn_segment ? cfg->attn_segment : ATTN_SEGMENT;
    if (s->attn_seg < 0 || s->attn_seg % ATTN_TILE != 0)
        return err_set(e, "attention segment %d is not a positive multiple of %d",
                       cfg->attn_segment, ATTN_TILE);
    s->n_ctx = cfg->n_ctx;
    s->n_ctx_pad = attn_tiles_len(cfg->n_ctx);
    s->group = (int)(hp->n_head / hp->n_head_kv);
    s->kv_stride = (int)kv_dim;
    s->n_kv = (int)hp->n_head_kv;
    if (cfg->tp) {
        if (!cfg->tp->gather || cfg->tp->kvh0 < 0 || cfg->tp->kvh1 > (int)hp->n_head_kv ||
            cfg->tp->kvh0 >= cfg->tp->kvh1)
            return err_set(e, "tensor-parallel part without a gather or KV heads [%d, %d)",
                           cfg->tp->kvh0, cfg->tp->kvh1);
        s->tp_on = true;
        s->tp = *cfg->tp;
        s->kvh0 = cfg->tp->kvh0;
        s->n_kv = cfg->tp->kvh1 - cfg->tp->kvh0;
    }
    /* the cache holds the state's own KV heads only */
    size_t heads = (size_t)s->n_slots * (s->layer_end - s->layer_begin) * (size_t)s->n_kv;
    size_t cache = heads * (size_t)s->n_ctx_pad * hp->head_dim;
    s->n_batch = cfg->n_batch;
    s->pool = cfg->pool;
    s->nth = threadpool_size(cfg->pool);
    s->x = calloc(nb * embd, sizeof(float));
    s->xb = calloc(nb * wide, sizeof(float));
    s->xq = calloc(nb * wide, 1);
    s->xscale = calloc(nb, sizeof(float));
    s->q = calloc(nb * embd, sizeof(float));
    s->k = calloc(nb * kv_dim, sizeof(float));
    s->v = calloc(nb * kv_dim, sizeof(float));
    s->attn_out = calloc(nb * embd, sizeof(float));
    s->hb = calloc(nb * ff, sizeof(float));
    s->rope_cos = calloc(nb * hp->head_dim / 2, sizeof(float));
    s->rope_sin = calloc(nb * hp->head_dim / 2, sizeof(float));
    s->att = calloc((size_t)s->nth * s->group * s->n_ctx_pad, sizeof(float));
    s->kv_type = cfg->kv_type;
    bool q8 = cfg->kv_type == KV_TYPE_Q8;
    size_t elem = q8 ? 1 : cfg->kv_type == KV_TYPE_F16 ? sizeof(uint16_t) : sizeof(float);
    size_t scales = q8 ? heads * (size_t)s->n_ctx_pad : 0;
    s->key_cache = calloc(cache, elem);
    s->value_cache = calloc(cache, elem);
    if (q8) {
        s->key_scale = calloc(scales, sizeof(float));
        s->value_scale = calloc(scales, sizeof(float));
        s->att_q8 = calloc((size_t)s->nth * s->group * hp->head_dim, 1);
    }
    /* room for the segments of as many long rows as fit SEG_BUDGET, at least one */
    s->n_seg_max = (cfg->n_ctx + s->attn_seg - 1) / s->attn_seg;
    s->seg_row = calloc(nb, sizeof(int));
    if (s->n_seg_max > 1) {
        size_t per_row = (size_t)s->n_seg_max * hp->n_head * (hp->head_dim + 2) * sizeof(float);
        size_t rows = SEG_BUDGET / per_row;
        s->seg_rows = rows < 1 ? 1 : rows > nb ? (int)nb : (int)rows;
        size_t heads_of_rows = (size_t)s->seg_rows * s->n_seg_max * hp->n_head;
        s->seg_out = calloc(heads_of_rows * hp->head_dim, sizeof(float));
        s->seg_ms = calloc(heads_of_rows * 2, sizeof(float));
    }
    s->logits = calloc(hp->n_vocab, sizeof(float));
    s->head_xq = calloc(nb * embd, 1);
    s->head_acc = calloc((size_t)HEAD_ACC_ROWS * hp->n_vocab, sizeof(int32_t));
    s->row_slot = calloc(nb, sizeof(int));
    s->row_pos = calloc(nb, sizeof(int));
    if (!s->x || !s->xb || !s->xq || !s->xscale || !s->q || !s->k || !s->v ||
        !s->attn_out || !s->hb || !s->rope_cos || !s->rope_sin || !s->att ||
        !s->key_cache || !s->value_cache || !s->logits || !s->head_xq || !s->head_acc || !s->row_slot || !s->row_pos ||
        (q8 && (!s->key_scale || !s->value_scale || !s->att_q8)) || !s->seg_row ||
        (s->n_seg_max > 1 && (!s->seg_out || !s->seg_ms))) {
        forward_state_free(s);
        return err_set(e, "out of memory for a %d-token context (KV cache %zu MiB)", cfg->n_ctx,
                       (cache * elem + scales * sizeof(float)) * 2 >> 20);
    }
    return 0;
}

void forward_state_free(struct forward_state *s)
{
    void *bufs[] = {s->x, s->xb, s->xq, s->xscale, s->q, s->k, s->v, s->attn_out,
                    s->hb, s->rope_cos, s->rope_sin, s->att, s->key_cache,
                    s->value_cache, s->key_scale, s->value_scale, s->att_q8, s->logits,
                    s->head_xq, s->head_acc, s->row_slot, s->row_pos, s->seg_row,
                    s->seg_out, s->seg_ms};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    memset(s, 0, sizeof *s);
}

/* What a norm first does to its rows: the elementwise step between two matrix products
 * runs on the threads that start for the norm anyway. */
enum norm_prep {
    PREP_NONE,
    PREP_ADD,  /* in += other (the residual) */
    PREP_GATE, /* in = relu(in)^2 * other (squared-ReLU gate times up) */
};

/* in[t] prepared, then xb[t] = rmsnorm(in[t]) * weight, quantized to xq[t] with scale
 * xscale[t]. */
struct norm_job {
    struct forward_state *s;
    float *in;
    const float *other, *weight;
    enum norm_prep prep;
    int dim, n;
    float eps;
};

static void norm_task(void *ctx, int ith, int nth)
{
    const struct norm_job *j = ctx;
    int lo, hi;
    split_range(j->n, 1, ith, nth, &lo, &hi);
    for (int t = lo; t < hi; t++) {
        float *in = j->in + (size_t)t * j->dim, *xb = j->s->xb + (size_t)t * j->dim;
        const float *o = j->other ? j->other + (size_t)t * j->dim : NULL;
        if (j->prep == PREP_ADD)
            kops.add_rows(in, o, j->dim);
        else if (j->prep == PREP_GATE)
            kops.relu2_mul(in, o, j->dim);
        kops.rmsnorm(xb, in, j->weight, j->dim, j->eps);
        j->s->xscale[t] = kops.quantize_act(xb, j->dim, j->s->xq + (size_t)t * j->dim);
    }
}

/* A prompt's positions are normed in parallel; a single decode position is not worth
 * waking the pool for. */
static void norm_and_quantize(struct forward_state *s, float *in, enum norm_prep prep,
                              const float *other, const float *weight, int dim, int n, float eps)
{
    struct norm_job j = {.s = s, .in = in, .other = other, .weight = weight, .prep = prep,
                         .dim = dim, .n = n, .eps = eps};
    if (n == 1)
        norm_task(&j, 0, 1);
    else
        threadpool_run(s->pool, norm_task, &j);
}

/* Decode hands out weight rows in pieces of at least this many bytes (claim_range): a
 * core that memory serves more slowly than the other takes fewer rows, instead of the
 * other waiting for it at the end of every matrix. */
#define DECODE_PIECE_BYTES (32 << 10)

static int decode_piece_rows(size_t row_bytes)
{
    size_t r = DECODE_PIECE_BYTES / (row_bytes ? row_bytes : 1);
    return r < 16 ? 16 : r > (1 << 20) ? 1 << 20 : (int)r;
}

/* Up to three matrices that read the same quantized input, run in one pool call so the
 * threads meet once per group rather than once per matrix. */
struct bitlinear_job {
    const struct forward_state *s;
    int n;        /* positions */
    int n_mats;
    const struct ternary_matrix *w[3];
    int r0[3], r1[3]; /* the rows computed: all, or a tensor-parallel rank's */
    int32_t *acc[3];
    float *out[3]; /* [n][rows] */
    int total_rows;  /* of all the matrices' rows computed, one after another: what decode
                      * claims */
    _Atomic int next;
};

/* Rows [lo, hi) of matrix i for every position of the job. */
static void bitlinear_rows(const struct bitlinear_job *job, int i, int lo, int hi)
{
    const struct forward_state *s = job->s;
    const struct ternary_matrix *w = job->w[i];
    size_t rows = (size_t)w->rows;
    if (w->type == GGML_TYPE_I2_S) {
        if (job->n == 1) {
            kops.i2s_dot_rows(w, s->xq, lo, hi, job->acc[i]);
        } else if (job->n <= SMALL_BATCH) {
            /* a few rows (decode of several streams): the GEMM's set-up would cost
             * more than it saves; the decode kernel for several vectors takes blocks
             * of weight rows small enough to stay in L2 while it revisits them */
            for (int b = lo; b < hi; b += GEMV_BLOCK_ROWS) {
                int be = b + GEMV_BLOCK_ROWS < hi ? b + GEMV_BLOCK_ROWS : hi;
                kops.i2s_dot_rows_multi(w, s->xq, (size_t)w->cols, job->n, b, be,
                                        job->acc[i], rows);
            }
        } else {
            kops.i2s_gemm(w, s->xq, (size_t)w->cols, job->n, lo, hi, job->acc[i], rows);
        }
        for (int t = 0; t < job->n; t++)
            kops.dequant(job->out[i] + t * rows + lo, job->acc[i] + t * rows + lo, hi - lo,
                         w->scale / s->xscale[t]);
    } else {
        for (int t = 0; t < job->n; t++) {
            float *o = job->out[i] + t * rows;
            kops.tq_dot_rows(w, s->xq + (size_t)t * w->cols, lo, hi, o);
            for (int r = lo; r < hi; r++)
                o[r] /= s->xscale[t];
        }
    }
}

static void bitlinear_task(void *ctx, int ith, int nth)
{
    struct bitlinear_job *job = ctx;
    if (job->n == 1) {
        /* the matrices of a group read one input, so they share a width and a piece size */
        int min_rows = decode_piece_rows(job->w[0]->row_bytes), lo, hi;
        while (claim_range(&job->next, job->total_rows, 16, min_rows, nth, &lo, &hi)) {
            for (int i = 0, base = 0; i < job->n_mats && base < hi; i++) {
                int len = job->r1[i] - job->r0[i], a = lo - base, b = hi - base;
                if (a < 0)
                    a = 0;
                if (b > len)
                    b = len;
                if (a < b)
                    bitlinear_rows(job, i, job->r0[i] + a, job->r0[i] + b);
                base += len;
            }
        }
        return;
    }
    for (int i = 0; i < job->n_mats; i++) {
        int lo, hi;
        split_range(job->r1[i] - job->r0[i], 16, ith, nth, &lo, &hi);
        if (lo < hi)
            bitlinear_rows(job, i, job->r0[i] + lo, job->r0[i] + hi);
    }
}

/* One matrix of a bitlinear call: rows [r0, r1) of w into out (row stride w->rows). */
struct mat_rows {
    const struct ternary_matrix *w;
    float *out;
    int r0, r1;
};

/* out = bitlinear(xq, w) over the rows given, for up to 3 matrices reading one input. */
static void bitlinear_parts(struct forward_state *s, int n, const struct mat_rows *m, int n_mats)
{
    struct bitlinear_job job = {.s = s, .n = n};
    for (int i = 0; i < n_mats; i++) {
        job.w[i] = m[i].w;
        job.out[i] = m[i].out;
        job.r0[i] = m[i].r0;
        job.r1[i] = m[i].r1;
        /* the integer sums go where their floats will: each is read once, just before
         * its float is stored over it (allocated memory takes the type last stored) */
        job.acc[i] = (int32_t *)(void *)m[i].out;
        job.total_rows += m[i].r1 - m[i].r0;
        job.n_mats++;
    }
    threadpool_run(s->pool, bitlinear_task, &job);
}

/* out_i = bitlinear(xq, w_i), every row, for the matrices given (NULL-terminated lists
 * of up to 3). */
static void bitlinear(struct forward_state *s, int n, const struct ternary_matrix *w0, float *o0,
                      const struct ternary_matrix *w1, float *o1,
                      const struct ternary_matrix *w2, float *o2)
{
    struct mat_rows m[3] = {{w0, o0, 0, w0 ? w0->rows : 0},
                            {w1, o1, 0, w1 ? w1->rows : 0},
                            {w2, o2, 0, w2 ? w2->rows : 0}};
    int n_mats = !w1 ? 1 : !w2 ? 2 : 3;
    bitlinear_parts(s, n, m, n_mats);
}

static void rope(float *vec, int n_heads, int head_dim, const float *cos_t, const float *sin_t)
{
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *v = vec + h * head_dim;
        for (int i = 0; i < half; i++) {
            float a = v[i], b = v[i + half];
            v[i] = a * cos_t[i] - b * sin_t[i];
            v[i + half] = a * sin_t[i] + b * cos_t[i];
        }
    }
}

int forward_embed(const struct bitnet_model *m, struct forward_state *s, const int32_t *tokens,
                  int n, struct errbuf *e)
{
    if (n < 1 || n > s->n_batch)
        return err_set(e, "batch of %d rows (this state takes 1..%d)", n, s->n_batch);
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || (uint32_t)tokens[t] >= m->hp.n_vocab)
            return err_set(e, "token id %d is outside the vocabulary (0..%u)", tokens[t],
                           m->hp.n_vocab - 1);
    for (int t = 0; t < n; t++)
        dense_row_to_f32(&m->tok_embd, tokens[t], s->x + (size_t)t * m->hp.n_embd);
    return 0;
}

int forward_set_rows(const struct bitnet_model *m, struct forward_state *s, const int *slots,
                     const int *pos, int n, struct errbuf *e)
{
    if (n < 1 || n > s->n_batch)
        return err_set(e, "batch of %d rows (this state takes 1..%d)", n, s->n_batch);
    for (int t = 0; t < n; t++) {
        if (slots[t] < 0 || slots[t] >= s->n_slots)
            return err_set(e, "sequence slot %d out of range (0..%d)", slots[t], s->n_slots - 1);
        if (pos[t] < 0 || pos[t] >= s->n_ctx)
            return err_set(e, "position %d is outside the context (%d tokens)", pos[t], s->n_ctx);
    }
    s->n_rows = n;
    memmove(s->row_slot, slots, (size_t)n * sizeof *slots);
    memmove(s->row_pos, pos, (size_t)n * sizeof *pos);
    int hd = (int)m->hp.head_dim;
    for (int t = 0; t < n; t++) {
        float *c = s->rope_cos + (size_t)t * hd / 2, *sn = s->rope_sin + (size_t)t * hd / 2;
        for (int i = 0; i < hd / 2; i++) {
            double theta = pos[t] * pow((double)m->hp.rope_base, -2.0 * i / hd);
            c[i] = (float)cos(theta);
            sn[i] = (float)sin(theta);
        }
    }
    return 0;
}

/* Row t's K and V into the cache of layer il at the row's position. */
static void kv_store(struct forward_state *s, const struct bitnet_hparams *hp, uint32_t il, int t)
{
    int hd = (int)hp->head_dim, p = s->row_pos[t];
    size_t first = (size_t)t * s->kv_stride + (size_t)s->kvh0 * hd;
    const float *kt = s->k + first, *vt = s->v + first;
    for (int kvh = s->kvh0; kvh < s->kvh0 + s->n_kv; kvh++, kt += hd, vt += hd) {
        size_t head = kv_head_index(s, s->row_slot[t], il, kvh);
        size_t off = head * (size_t)s->n_ctx_pad * hd;
        if (s->kv_type == KV_TYPE_Q8) {
            int8_t kq[hd];
            int8_t *keys = (int8_t *)s->key_cache + off;
            s->key_scale[head * s->n_ctx_pad + p] = attn_q8_quantize(kt, hd, kq);
            for (int i = 0; i < hd; i++)
                keys[attn_q8_key_at(p, i, hd)] = kq[i];
            int8_t vq[hd];
            int8_t *values = (int8_t *)s->value_cache + off;
            s->value_scale[head * s->n_ctx_pad + p] = attn_q8_quantize(vt, hd, vq);
            for (int i = 0; i < hd; i++)
                values[attn_q8_value_at(p, i, hd)] = vq[i];
            continue;
        }
        size_t k_at = off + (size_t)(p / ATTN_TILE) * hd * ATTN_TILE + p % ATTN_TILE;
        size_t v_at = off + (size_t)p * hd;
        for (int i = 0; i < hd; i++) {
            if (s->kv_type == KV_TYPE_F16) {
                ((uint16_t *)s->key_cache)[k_at + (size_t)i * ATTN_TILE] = f32_to_f16(kt[i]);
                ((uint16_t *)s->value_cache)[v_at + i] = f32_to_f16(vt[i]);
            } else {
                ((float *)s->key_cache)[k_at + (size_t)i * ATTN_TILE] = kt[i];
                ((float *)s->value_cache)[v_at + i] = vt[i];
            }
        }
    }
}

/* RoPE and the cache stores of a layer's rows. */
struct rope_job {
    const struct bitnet_hparams *hp;
    struct forward_state *s;
    uint32_t il;
};

/* RoPE on the rows' queries and keys, and their keys and values into the cache. */
static void rope_store_task(void *ctx, int ith, int nth)
{
    const struct rope_job *job = ctx;
    const struct bitnet_hparams *hp = job->hp;
    struct forward_state *s = job->s;
    int hd = (int)hp->head_dim, lo, hi;
    /* the state's own heads: its KV heads and their query heads */
    size_t q0 = (size_t)s->kvh0 * s->group * hd, k0 = (size_t)s->kvh0 * hd;
    split_range(s->n_rows, 1, ith, nth, &lo, &hi);
    for (int t = lo; t < hi; t++) {
        const float *c = s->rope_cos + (size_t)t * hd / 2, *sn = s->rope_sin + (size_t)t * hd / 2;
        rope(s->q + (size_t)t * hp->n_embd + q0, s->n_kv * s->group, hd, c, sn);
        rope(s->k + (size_t)t * s->kv_stride + k0, s->n_kv, hd, c, sn);
        kv_store(s, hp, job->il, t);
    }
}

/* RoPE and the cache stores of the rows, on the pool for a prompt. */
static void rope_store(const struct bitnet_hparams *hp, struct forward_state *s, uint32_t il)
{
    struct rope_job rj = {.hp = hp, .s = s, .il = il};
    if (s->n_rows == 1)
        rope_store_task(&rj, 0, 1);
    else
        threadpool_run(s->pool, rope_store_task, &rj);
}

static void gather(const struct forward_state *s, float *buf, int width, int lo, int hi)
{
    s->tp.gather(s->tp.gather_ctx, buf, s->n_rows, width, lo, hi);
}

/* forward_layer for a tensor-parallel rank: the same steps on its rows of each matrix,
 * with the pieces gathered wherever the next step reads the whole vector (a norm, or a
 * product over every column). The squared-ReLU gate is elementwise, so each rank applies
 * it to its own columns before they are gathered. */
static void forward_layer_part(const struct bitnet_model *m, struct forward_state *s, uint32_t il)
{
    int n = s->n_rows;
    const struct bitnet_hparams *hp = &m->hp;
    const struct bitnet_layer *L = &m->layers[il];
    const struct forward_tp *tp = &s->tp;
    int embd = (int)hp->n_embd, ff = (int)hp->n_ff;
    float eps = hp->norm_eps;

    double t = timing_start(s);
    norm_and_quantize(s, s->x, PREP_NONE, NULL, L->attn_norm, embd, n, eps);
    timing_lap(s, FP_NORMS, &t);
    struct mat_rows qkv[3] = {{&L->wq, s->q, tp->q0, tp->q1},
                              {&L->wk, s->k, tp->k0, tp->k1},
                              {&L->wv, s->v, tp->k0, tp->k1}};
    bitlinear_parts(s, n, qkv, 3);
    timing_lap(s, FP_QKV, &t);
    rope_store(hp, s, il);
    forward_attention(hp, s, il);
    gather(s, s->attn_out, embd, tp->q0, tp->q1);
    timing_lap(s, FP_ATTENTION, &t);
    norm_and_quantize(s, s->attn_out, PREP_NONE, NULL, L->attn_sub_norm, embd, n, eps);
    timing_lap(s, FP_NORMS, &t);
    struct mat_rows o = {&L->wo, s->attn_out, tp->e0, tp->e1};
    bitlinear_parts(s, n, &o, 1);
    gather(s, s->attn_out, embd, tp->e0, tp->e1);
    timing_lap(s, FP_O, &t);

    norm_and_quantize(s, s->x, PREP_ADD, s->attn_out, L->ffn_norm, embd, n, eps);
    timing_lap(s, FP_NORMS, &t);
    struct mat_rows gate_up[2] = {{&L->wgate, s->hb, tp->f0, tp->f1},
                                  {&L->wup, s->xb, tp->f0, tp->f1}};
    bitlinear_parts(s, n, gate_up, 2);
    for (int r = 0; r < n; r++)
        kops.relu2_mul(s->hb + (size_t)r * ff + tp->f0, s->xb + (size_t)r * ff + tp->f0,
                       tp->f1 - tp->f0);
    gather(s, s->hb, ff, tp->f0, tp->f1);
    timing_lap(s, FP_GATE_UP, &t);
    norm_and_quantize(s, s->hb, PREP_NONE, NULL, L->ffn_sub_norm, ff, n, eps);
    timing_lap(s, FP_NORMS, &t);
    struct mat_rows down = {&L->wdown, s->attn_out, tp->e0, tp->e1};
    bitlinear_parts(s, n, &down, 1);
    gather(s, s->attn_out, embd, tp->e0, tp->e1);
    kops.add_rows(s->x, s->attn_out, n * embd);
    timing_lap(s, FP_DOWN, &t);
}

void forward_layer(const struct bitnet_model *m, struct forward_state *s, uint32_t il)
{
    if (s->tp_on) {
        forward_layer_part(m, s, il);
        return;
    }
    int n = s->n_rows;
    const struct bitnet_hparams *hp = &m->hp;
    const struct bitnet_layer *L = &m->layers[il];
    int embd = (int)hp->n_embd, ff = (int)hp->n_ff;
    float eps = hp->norm_eps;

    /* attention block: Q, K and V share one quantized input */
    double t = timing_start(s);
    norm_and_quantize(s, s->x, PREP_NONE, NULL, L->attn_norm, embd, n, eps);
    timing_lap(s, FP_NORMS, &t);
    bitlinear(s, n, &L->wq, s->q, &L->wk, s->k, &L->wv, s->v);
    timing_lap(s, FP_QKV, &t);
    rope_store(hp, s, il);
    forward_attention(hp, s, il);
    timing_lap(s, FP_ATTENTION, &t);
    norm_and_quantize(s, s->attn_out, PREP_NONE, NULL, L->attn_sub_norm, embd, n, eps);
    timing_lap(s, FP_NORMS, &t);
    bitlinear(s, n, &L->wo, s->attn_out, NULL, NULL, NULL, NULL);
    timing_lap(s, FP_O, &t);

    /* feed-forward block, after the attention's residual: squared-ReLU gate times up,
     * gate and up share the input */
    norm_and_quantize(s, s->x, PREP_ADD, s->attn_out, L->ffn_norm, embd, n, eps);
    timing_lap(s, FP_NORMS, &t);
    /* up goes to xb, whose normed input is no longer needed once quantized */
    bitlinear(s, n, &L->wgate, s->hb, &L->wup, s->xb, NULL, NULL);
    timing_lap(s, FP_GATE_UP, &t);
    norm_and_quantize(s, s->hb, PREP_GATE, s->xb, L->ffn_sub_norm, ff, n, eps);
    timing_lap(s, FP_NORMS, &t);
    bitlinear(s, n, &L->wdown, s->attn_out, NULL, NULL, NULL, NULL);
    kops.add_rows(s->x, s->attn_out, n * embd);
    timing_lap(s, FP_DOWN, &t);
}

/* Rows of the output head multiplied against every requested row while they sit in L2:
 * the head is read from memory once per call however many rows want logits, and each
 * logit is the kernel's own single-row result (the kernel runs once per row over each
 * block of weights), so a logit never depends on what else shared the call. */
#define HEAD_BLOCK_ROWS 64

struct output_job {
    const struct bitnet_model *m;
    struct forward_state *s;
    int n;            /* rows wanting logits: their normed x at xb[i], int8 at head_xq[i] */
    float *logits;    /* [n][n_vocab] */
    _Atomic int next; /* decode's claims (claim_range) */
};

/* Rows [lo, hi) of the head for every row of the job. */
static void output_rows(const struct output_job *job, int lo, int hi)
{
    const struct bitnet_model *m = job->m;
    const struct forward_state *s = job->s;
    size_t V = m->hp.n_vocab, embd = m->hp.n_embd;
    const struct q8_matrix *q = m->output_q8.q ? &m->output_q8 : NULL;
    int block = job->n == 1 ? hi - lo : HEAD_BLOCK_ROWS;
    for (int b = lo; b < hi; b += block) {
        int be = b + block < hi ? b + block : hi;
        if (!q) {
            /* every row in one call, which may convert each weight once for several */
            if (job->n == 1)
                kops.dense_dot_rows(&m->output, s->xb, b, be, job->logits);
            else
                kops.dense_dot_rows_multi(&m->output, s->xb, embd, job->n, b, be, job->logits, V);
            continue;
        }
        /* int8 head: HEAD_ACC_ROWS vectors at once share each weight load; head_acc
         * rows [b, be) of every vector are this thread's alone */
        for (int i0 = 0; i0 < job->n; i0 += HEAD_ACC_ROWS) {
            int ni = job->n - i0 < HEAD_ACC_ROWS ? job->n - i0 : HEAD_ACC_ROWS;
            /* one vector: the single-vector kernel, which streams its rows as the CPU
             * likes (kernels/row_walk.h); the several-vector one walks fours in order */
            if (ni == 1)
                kops.q8_dot_rows(q, s->head_xq + (size_t)i0 * embd, b, be, s->head_acc);
            else
                kops.q8_dot_rows_multi(q, s->head_xq + (size_t)i0 * embd, embd, ni, b, be,
                                       s->head_acc, V);
            for (int i = i0; i < i0 + ni; i++) {
                const int32_t *acc = s->head_acc + (size_t)(i - i0) * V;
                float *logits = job->logits + (size_t)i * V;
                for (int r = b; r < be; r++)
                    logits[r] = (float)acc[r] * q->scale[r] / s->xscale[i];
            }
        }
    }
}

static void output_task(void *ctx, int ith, int nth)
{
    struct output_job *job = ctx;
    const struct bitnet_model *m = job->m;
    const struct q8_matrix *q = m->output_q8.q ? &m->output_q8 : NULL;
    /* a tensor-parallel rank's rows of the head, or all */
    int r0 = job->s->tp_on ? job->s->tp.v0 : 0;
    int rows = job->s->tp_on ? job->s->tp.v1 - r0 : q ? q->rows : m->output.rows, lo, hi;
    if (job->n == 1) {
        /* in pieces, as bitlinear_task does for decode */
        int min_rows = decode_piece_rows(q ? (size_t)q->cols : m->output.row_bytes);
        while (claim_range(&job->next, rows, 16, min_rows, nth, &lo, &hi))
            output_rows(job, r0 + lo, r0 + hi);
        return;
    }
    split_range(rows, 16, ith, nth, &lo, &hi);
    output_rows(job, r0 + lo, r0 + hi);
}

void forward_output_rows(const struct bitnet_model *m, struct forward_state *s, const int *rows,
                         int n, float *logits)
{
    int embd = (int)m->hp.n_embd;
    double t = timing_start(s);
    for (int i = 0; i < n; i++) {
        float *xb = s->xb + (size_t)i * embd;
        kops.rmsnorm(xb, s->x + (size_t)rows[i] * embd, m->output_norm, embd, m->hp.norm_eps);
        if (m->output_q8.q)
            s->xscale[i] = kops.quantize_act(xb, embd, s->head_xq + (size_t)i * embd);
    }
    struct output_job job = {.m = m, .s = s, .n = n, .logits = logits};
    threadpool_run(s->pool, output_task, &job);
    if (s->tp_on)
        s->tp.gather(s->tp.gather_ctx, logits, n, (int)m->hp.n_vocab, s->tp.v0, s->tp.v1);
    timing_lap(s, FP_HEAD, &t);
}

void forward_output(const struct bitnet_model *m, struct forward_state *s, int t)
{
    forward_output_rows(m, s, &t, 1, s->logits);
}

int forward_batch(const struct bitnet_model *m, struct forward_state *s, const int32_t *tokens,
                  int n, int pos0, struct errbuf *e)
{
    if (n < 1 || n > s->n_batch)
        return err_set(e, "batch of %d positions (this state takes 1..%d)", n, s->n_batch);
    if (pos0 < 0 || pos0 + n > s->n_ctx)
        return err_set(e, "positions %d..%d are outside the context (%d tokens)", pos0,
                       pos0 + n - 1, s->n_ctx);
    for (int t = 0; t < n; t++) {
        s->row_slot[t] = 0;
        s->row_pos[t] = pos0 + t;
    }
    /* the tables are copied in place; forward_set_rows validates and builds RoPE */
    if (forward_set_rows(m, s, s->row_slot, s->row_pos, n, e) < 0 ||
        forward_embed(m, s, tokens, n, e) < 0)
        return -1;
    for (uint32_t il = s->layer_begin; il < s->layer_end; il++)
        forward_layer(m, s, il);
    return 0;
}

const float *forward_token(const struct bitnet_model *m, struct forward_state *s, int32_t token,
                           int pos, struct errbuf *e)
{
    if (forward_batch(m, s, &token, 1, pos, e) < 0)
        return NULL;
    forward_output(m, s, 0);
    return s->logits;
}

#include "model/bitnet_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/f16.h"
#include "kernels/ternary_formats.h"
#include "model/ggml_types.h"

static int get_hp_u32(const struct gguf_file *f, const char *suffix, uint32_t *out,
                      struct errbuf *e)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", BITNET_ARCH, suffix);
    return gguf_get_u32(f, key, out, e);
}

static int get_hp_f32(const struct gguf_file *f, const char *suffix, float *out, struct errbuf *e)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", BITNET_ARCH, suffix);
    return gguf_get_f32(f, key, out, e);
}

static int check_arch(const struct gguf_file *f, struct errbuf *e)
{
    struct strview arch;
    if (gguf_get_str(f, "general.architecture", &arch, e) < 0)
        return -1;
    if (!strview_eq(arch, BITNET_ARCH))
        return err_set(e, "architecture '%.*s' is not supported (this engine runs '%s')",
                       (int)(arch.len > 64 ? 64 : arch.len), arch.ptr, BITNET_ARCH);
    return 0;
}

static int read_hparams(const struct gguf_file *f, struct bitnet_hparams *hp, struct errbuf *e)
{
    memset(hp, 0, sizeof *hp);
    if (get_hp_u32(f, "embedding_length", &hp->n_embd, e) < 0 ||
        get_hp_u32(f, "block_count", &hp->n_layer, e) < 0 ||
        get_hp_u32(f, "attention.head_count", &hp->n_head, e) < 0 ||
        get_hp_u32(f, "feed_forward_length", &hp->n_ff, e) < 0 ||
        get_hp_u32(f, "context_length", &hp->n_ctx_train, e) < 0)
        return -1;
    struct errbuf ignore;
    if (get_hp_u32(f, "attention.head_count_kv", &hp->n_head_kv, &ignore) < 0)
        hp->n_head_kv = hp->n_head;
    if (get_hp_f32(f, "rope.freq_base", &hp->rope_base, &ignore) < 0)
        hp->rope_base = 10000.0f;
    if (get_hp_f32(f, "attention.layer_norm_rms_epsilon", &hp->norm_eps, &ignore) < 0)
        hp->norm_eps = 1e-5f;

    if (hp->n_embd == 0 || hp->n_layer == 0 || hp->n_head == 0 || hp->n_head_kv == 0 ||
        hp->n_ff == 0)
        return err_set(e, "hyperparameters must be non-zero (embd %u, layers %u, heads %u, "
                          "kv heads %u, ffn %u)",
                       hp->n_embd, hp->n_layer, hp->n_head, hp->n_head_kv, hp->n_ff);
    if (hp->n_embd > 65536 || hp->n_ff > 262144 || hp->n_layer > 1024 || hp->n_head > 1024)
        return err_set(e, "hyperparameters out of range (embd %u, ffn %u, layers %u, heads %u)",
                       hp->n_embd, hp->n_ff, hp->n_layer, hp->n_head);
    if (hp->n_embd % hp->n_head != 0)
        return err_set(e, "embedding length %u is not a multiple of the head count %u",
                       hp->n_embd, hp->n_head);
    hp->head_dim = hp->n_embd / hp->n_head;
    if (hp->head_dim % 2 != 0)
        return err_set(e, "head dimension %u is odd (RoPE needs pairs)", hp->head_dim);
    if (hp->n_head % hp->n_head_kv != 0)
        return err_set(e, "head count %u is not a multiple of the KV head count %u", hp->n_head,
                       hp->n_head_kv);
    if (!(hp->norm_eps > 0.0f) || !(hp->rope_base > 0.0f))
        return err_set(e, "RMSNorm epsilon and RoPE base must be positive");
    return 0;
}

/* Finds a tensor and checks its shape: ne0 x ne1 (ne1 = 1 for vectors). */
static const struct gguf_tensor *want_tensor(const struct gguf_file *f, const char *name,
                                             uint64_t ne0, uint64_t ne1, struct errbuf *e)
{
    const struct gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t) {
        err_set(e, "tensor '%s' is missing", name);
        return NULL;
    }
    uint64_t rest = 1;
    for (uint32_t d = 2; d < t->n_dims; d++)
        rest *= t->ne[d];
    if (t->ne[0] != ne0 || t->ne[1] != ne1 || rest != 1) {
        err_set(e, "tensor '%s' has shape [%llu, %llu], expected [%llu, %llu]", name,
                (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                (unsigned long long)ne0, (unsigned long long)ne1);
        return NULL;
    }
    return t;
}

static int bind_norm(const struct gguf_file *f, const char *name, uint64_t n, const float **out,
                     struct errbuf *e)
{
    const struct gguf_tensor *t = want_tensor(f, name, n, 1, e);
    if (!t)
        return -1;
    if (t->type != GGML_TYPE_F32)
        return err_set(e, "tensor '%s' is %s, expected F32", name, ggml_type_name(t->type));
    *out = (const float *)t->data;
    return 0;
}

static int bind_ternary(const struct gguf_file *f, const char *name, uint64_t cols, uint64_t rows,
                        struct ternary_matrix *w, struct errbuf *e)
{
    const struct gguf_tensor *t = want_tensor(f, name, cols, rows, e);
    if (!t)
        return -1;
    if (!ggml_type_is_ternary(t->type))
        return err_set(e, "tensor '%s' is %s, expected a ternary type (I2_S, TQ1_0, TQ2_0)", name,
                       ggml_type_name(t->type) ? ggml_type_name(t->type) : "unknown");
    w->type = t->type;
    w->rows = (int)rows;
    w->cols = (int)cols;
    w->data = t->data;
    if (t->type == GGML_TYPE_I2_S) {
        w->row_bytes = cols / 4;
        memcpy(&w->scale, t->data + rows * cols / 4, sizeof w->scale);
    } else {
        w->row_bytes = ggml_tensor_nbytes(t->type, cols, cols);
        w->scale = 1.0f;
    }
    return 0;
}

static int bind_dense(const struct gguf_file *f, const char *name, uint64_t cols, uint64_t rows,
                      struct dense_matrix *m, struct errbuf *e)
{
    const struct gguf_tensor *t = want_tensor(f, name, cols, rows, e);
    if (!t)
        return -1;
    if (t->type != GGML_TYPE_F32 && t->type != GGML_TYPE_F16 && t->type != GGML_TYPE_BF16 &&
        t->type != GGML_TYPE_Q8_0)
        return err_set(e, "tensor '%s' is %s, expected F32, F16, BF16 or Q8_0", name,
                       ggml_type_name(t->type) ? ggml_type_name(t->type) : "unknown");
    m->type = t->type;
    m->rows = (int)rows;
    m->cols = (int)cols;
    m->data = t->data;
    m->row_bytes = ggml_tensor_nbytes(t->type, cols, cols);
    return 0;
}

static int bind_layer(const struct gguf_file *f, const struct bitnet_hparams *hp, uint32_t il,
                      struct bitnet_layer *L, struct errbuf *e)
{
    char n[96];
    uint64_t embd = hp->n_embd, kv = (uint64_t)hp->n_head_kv * hp->head_dim, ff = hp->n_ff;
#define NAME(s) (snprintf(n, sizeof n, "blk.%u." s, il), n)
    if (bind_norm(f, NAME("attn_norm.weight"), embd, &L->attn_norm, e) < 0 ||
        bind_norm(f, NAME("attn_sub_norm.weight"), embd, &L->attn_sub_norm, e) < 0 ||
        bind_norm(f, NAME("ffn_norm.weight"), embd, &L->ffn_norm, e) < 0 ||
        bind_norm(f, NAME("ffn_sub_norm.weight"), ff, &L->ffn_sub_norm, e) < 0 ||
        bind_ternary(f, NAME("attn_q.weight"), embd, embd, &L->wq, e) < 0 ||
        bind_ternary(f, NAME("attn_k.weight"), embd, kv, &L->wk, e) < 0 ||
        bind_ternary(f, NAME("attn_v.weight"), embd, kv, &L->wv, e) < 0 ||
        bind_ternary(f, NAME("attn_output.weight"), embd, embd, &L->wo, e) < 0 ||
        bind_ternary(f, NAME("ffn_gate.weight"), embd, ff, &L->wgate, e) < 0 ||
        bind_ternary(f, NAME("ffn_up.weight"), embd, ff, &L->wup, e) < 0 ||
        bind_ternary(f, NAME("ffn_down.weight"), ff, embd, &L->wdown, e) < 0)
        return -1;
#undef NAME
    return 0;
}

int bitnet_model_load(struct bitnet_model *m, const char *path, struct errbuf *e)
{
    memset(m, 0, sizeof *m);
    if (gguf_open(&m->file, path, e) < 0)
        return -1;
    const struct gguf_file *f = &m->file;
    struct bitnet_hparams *hp = &m->hp;
    if (check_arch(f, e) < 0 || read_hparams(f, hp, e) < 0)
        goto fail;

    const struct gguf_tensor *embd = gguf_find_tensor(f, "token_embd.weight");
    if (!embd) {
        err_set(e, "tensor 'token_embd.weight' is missing");
        goto fail;
    }
    if (embd->ne[1] == 0 || embd->ne[1] > (1u << 24)) {
        err_set(e, "tensor 'token_embd.weight' has an implausible vocabulary of %llu rows",
                (unsigned long long)embd->ne[1]);
        goto fail;
    }
    hp->n_vocab = (uint32_t)embd->ne[1];
    uint32_t vocab_key;
    struct errbuf ignore;
    if (get_hp_u32(f, "vocab_size", &vocab_key, &ignore) == 0 && vocab_key != hp->n_vocab) {
        err_set(e, "%s.vocab_size is %u but token_embd.weight has %u rows", BITNET_ARCH, vocab_key,
                hp->n_vocab);
        goto fail;
    }
    if (bind_dense(f, "token_embd.weight", hp->n_embd, hp->n_vocab, &m->tok_embd, e) < 0 ||
        bind_norm(f, "output_norm.weight", hp->n_embd, &m->output_norm, e) < 0)
        goto fail;
    if (gguf_find_tensor(f, "output.weight")) {
        if (bind_dense(f, "output.weight", hp->n_embd, hp->n_vocab, &m->output, e) < 0)
            goto fail;
    } else {
        m->output = m->tok_embd;
        m->tied_output = true;
    }

    m->layers = calloc(hp->n_layer, sizeof *m->layers);
    if (!m->layers) {
        err_set(e, "out of memory");
        goto fail;
    }
    for (uint32_t il = 0; il < hp->n_layer; il++)
        if (bind_layer(f, hp, il, &m->layers[il], e) < 0)
            goto fail;
    return 0;

fail:
    err_prefix(e, "%s", path);
    bitnet_model_free(m);
    return -1;
}

struct q8_build {
    const struct dense_matrix *src;
    int r0, r1; /* the rows converted */
    int8_t *q;
    float *scale;
    int32_t *row_sum;
};

/* Drops the pages wholly inside [p, p + len) from this process: they are clean pages
 * of a read-only file mapping, so a later access simply maps them again from the page
 * cache. Keeps the source of a converted copy from counting twice in resident memory. */
static void release_pages(const uint8_t *p, size_t len)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)p + page - 1) & ~(page - 1), hi = ((uintptr_t)p + len) & ~(page - 1);
    if (hi > lo)
        madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

static void q8_build_task(void *ctx, int ith, int nth)
{
    const struct q8_build *b = ctx;
    int lo, hi;
    split_range(b->r1 - b->r0, 256, ith, nth, &lo, &hi);
    lo += b->r0;
    hi += b->r0;
    /* in chunks, so the F16 source never sits in memory beside the whole int8 copy */
    for (int r = lo; r < hi; r += 1024) {
        int r1 = r + 1024 < hi ? r + 1024 : hi;
        kops.dense_rows_to_q8(b->src, r, r1, b->q, b->scale, b->row_sum);
        release_pages(b->src->data + (size_t)r * b->src->row_bytes,
                      (size_t)(r1 - r) * b->src->row_bytes);
    }
}

int bitnet_model_build_q8_head(struct bitnet_model *m, struct threadpool *pool, struct errbuf *e)
{
    return bitnet_model_build_q8_head_rows(m, pool, 0, m->output.rows, e);
}

int bitnet_model_build_q8_head_rows(struct bitnet_model *m, struct threadpool *pool, int r0, int r1,
                                    struct errbuf *e)
{
    const struct dense_matrix *src = &m->output;
    size_t rows = (size_t)src->rows, cols = (size_t)src->cols;
    if (r0 < 0 || r1 > src->rows || r0 >= r1)
        return err_set(e, "int8 output head: rows [%d, %d) of %d", r0, r1, src->rows);
    size_t q_bytes = rows * cols, s_bytes = rows * sizeof(float), r_bytes = rows * sizeof(int32_t);
    uint8_t *mem = malloc(q_bytes + s_bytes + r_bytes);
    if (!mem)
        return err_set(e, "out of memory for the int8 output head (%zu MiB)", q_bytes >> 20);
    /* a block this large is mapped fresh (glibc's mmap threshold): the pages of rows not
     * converted are never touched, so they take no memory */
    struct q8_build b = {.src = src, .r0 = r0, .r1 = r1, .q = (int8_t *)mem, .scale = (float *)(mem + q_bytes),
                         .row_sum = (int32_t *)(mem + q_bytes + s_bytes)};
    threadpool_run(pool, q8_build_task, &b);
    free(m->output_q8_mem);
    m->output_q8_mem = mem;
    m->output_q8 = (struct q8_matrix){.rows = (int)rows, .cols = (int)cols, .q = b.q,
                                      .scale = b.scale, .row_sum = b.row_sum};
    return 0;
}

/* ---- TQ1_0 / TQ2_0 to I2_S ---- */

/* The scale every block of w has, as F16 bits, ignoring blocks whose scale is zero (their
 * values are all zero whatever their codes); false when two blocks differ. */
static bool one_block_scale(const struct ternary_matrix *w, uint16_t *d)
{
    size_t block_bytes = w->type == GGML_TYPE_TQ2_0 ? TQ2_0_BYTES : TQ1_0_BYTES;
    size_t blocks = (size_t)w->rows * (size_t)(w->cols / QK_TQ);
    bool found = false;
    for (size_t b = 0; b < blocks; b++) {
        uint16_t bits = tq_block_scale_bits(w->data + b * block_bytes, block_bytes);
        if ((bits & 0x7fff) == 0)
            continue;
        if (found && bits != *d)
            return false;
        *d = bits;
        found = true;
    }
    if (!found)
        *d = 0;
    return true;
}

struct repack_job {
    const struct ternary_matrix *src;
    uint8_t *dst;   /* rows of cols / 4 I2_S code bytes */
    float scale;
};

/* Rows [r0, r1) of the job's source into I2_S codes. A TQ2_0 byte holds the codes of
 * block positions m, 32+m, 64+m, 96+m (from its low bits up) and an I2_S byte the same
 * four from its high bits down: the copy reverses the 2-bit fields. TQ1_0's base-3 bytes
 * are decoded to values and packed again. A block whose scale is zero becomes zeros. */
static void repack_rows(const struct repack_job *job, int r0, int r1)
{
    const struct ternary_matrix *w = job->src;
    size_t block_bytes = w->type == GGML_TYPE_TQ2_0 ? TQ2_0_BYTES : TQ1_0_BYTES;
    int blocks = w->cols / QK_TQ;
    int8_t vals[QK_TQ];
    uint8_t packed[QK_TQ / 4 + 32]; /* i2s_pack's codes, then its scale and padding */
    uint8_t reversed[256];          /* a TQ2_0 byte's 2-bit fields in I2_S order */
    for (int c = 0; c < 256; c++)
        reversed[c] = (uint8_t)((c & 3) << 6 | (c >> 2 & 3) << 4 | (c >> 4 & 3) << 2 | c >> 6);
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = w->data + (size_t)r * w->row_bytes;
        uint8_t *out = job->dst + (size_t)r * (size_t)(w->cols / 4);
        for (int b = 0; b < blocks; b++, out += QK_TQ / 4) {
            const uint8_t *blk = row + (size_t)b * block_bytes;
            if ((tq_block_scale_bits(blk, block_bytes) & 0x7fff) == 0) {
                memset(out, 0x55, QK_TQ / 4); /* every code 1: the value 0 */
                continue;
            }
            if (w->type == GGML_TYPE_TQ2_0) {
                for (int i = 0; i < QK_TQ / 4; i++)
                    out[i] = reversed[blk[i]];
            } else {
                tq1_unpack_block(blk, vals);
                i2s_pack(vals, QK_TQ, job->scale, packed);
                memcpy(out, packed, QK_TQ / 4);
            }
        }
    }
}

static void repack_task(void *ctx, int ith, int nth)
{
    const struct repack_job *job = ctx;
    int lo, hi;
    split_range(job->src->rows, 1, ith, nth, &lo, &hi);
    repack_rows(job, lo, hi);
    release_pages(job->src->data + (size_t)lo * job->src->row_bytes,
                  (size_t)(hi - lo) * job->src->row_bytes);
}

int bitnet_model_repack(struct bitnet_model *m, uint32_t l0, uint32_t l1, struct threadpool *pool,
                        int *kept, struct errbuf *e)
{
    *kept = 0;
    if (l1 > m->hp.n_layer)
        l1 = m->hp.n_layer;
    if (l0 >= l1)
        return 0;
    struct todo {
        struct ternary_matrix *w;
        uint16_t scale; /* F16 bits */
    } *todo = malloc(sizeof *todo * BITNET_LAYER_MATRICES * (l1 - l0));
    if (!todo)
        return err_set(e, "out of memory");
    size_t bytes = 0;
    int n = 0;
    for (uint32_t il = l0; il < l1; il++) {
        struct ternary_matrix *ws[BITNET_LAYER_MATRICES];
        bitnet_layer_matrices(&m->layers[il], ws);
        for (int i = 0; i < BITNET_LAYER_MATRICES; i++) {
            if (ws[i]->type == GGML_TYPE_I2_S)
                continue;
            if (!one_block_scale(ws[i], &todo[n].scale)) {
                (*kept)++;
                continue;
            }
            todo[n++].w = ws[i];
            bytes += (size_t)ws[i]->rows * (size_t)(ws[i]->cols / 4);
        }
    }
    if (n && m->repacked_mem) {
        free(todo);
        return err_set(e, "repacking: this model was repacked already");
    }
    /* in huge pages where the system allows them: a fault per 4 KiB page of a copy this
     * large took most of the load */
    size_t huge = (size_t)2 << 20, alloc = (bytes + huge - 1) / huge * huge;
    uint8_t *mem = n ? aligned_alloc(huge, alloc) : NULL;
    if (mem)
        madvise(mem, alloc, MADV_HUGEPAGE);
    if (n && !mem) {
        free(todo);
        return err_set(e, "out of memory for the I2_S copies of TQ weights (%zu MiB)", bytes >> 20);
    }
    uint8_t *at = mem;
    for (int i = 0; i < n; i++) {
        struct ternary_matrix *w = todo[i].w;
        struct repack_job job = {.src = w, .dst = at, .scale = f16_to_f32(todo[i].scale)};
        threadpool_run(pool, repack_task, &job);
        *w = (struct ternary_matrix){.type = GGML_TYPE_I2_S, .rows = w->rows, .cols = w->cols,
                                     .data = at, .row_bytes = (size_t)w->cols / 4,
                                     .scale = job.scale};
        at += (size_t)w->rows * w->row_bytes;
    }
    free(todo);
    if (mem)
        m->repacked_mem = mem;
    return 0;
}

void bitnet_model_free(struct bitnet_model *m)
{
    free(m->output_q8_mem);
    free(m->repacked_mem);
    free(m->layers);
    gguf_close(&m->file);
    memset(m, 0, sizeof *m);
}

uint64_t bitnet_model_ternary_bytes(const struct bitnet_model *m)
{
    uint64_t total = 0;
    for (uint32_t il = 0; il < m->hp.n_layer; il++) {
        struct ternary_matrix *ws[BITNET_LAYER_MATRICES];
        bitnet_layer_matrices(&m->layers[il], ws);
        for (int i = 0; i < BITNET_LAYER_MATRICES; i++)
            total += (uint64_t)ws[i]->rows * ws[i]->row_bytes;
    }
    return total;
}

uint64_t bitnet_model_head_bytes(const struct bitnet_model *m)
{
    if (m->output_q8.q)
        return (uint64_t)m->output_q8.rows * (m->output_q8.cols + 2 * sizeof(float));
    return (uint64_t)m->output.rows * m->output.row_bytes;
}

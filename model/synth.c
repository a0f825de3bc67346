#include "model/synth.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/f16.h"
#include "kernels/ternary_formats.h"
#include "model/bitnet_model.h"
#include "model/ggml_types.h"
#include "model/gguf_write.h"
#include "model/output_file.h"
#include "model/tokenizer.h"

int synth_preset(struct synth_params *p, const char *shape, struct errbuf *e)
{
    memset(p, 0, sizeof *p);
    p->rope_base = 500000.0f;
    p->norm_eps = 1e-5f;
    p->weight_type = GGML_TYPE_I2_S;
    p->embd_type = GGML_TYPE_F16;
    if (strcmp(shape, "2b4t") == 0) {
        p->n_embd = 2560, p->n_layer = 30, p->n_head = 20, p->n_head_kv = 5, p->n_ff = 6912;
        p->n_ctx = 4096;
    } else if (strcmp(shape, "tiny") == 0) {
        p->n_embd = 256, p->n_layer = 4, p->n_head = 4, p->n_head_kv = 1, p->n_ff = 512;
        p->n_ctx = 2048;
    } else {
        return err_set(e, "unknown shape '%s' (known: tiny, 2b4t)", shape);
    }
    return 0;
}

/* splitmix64, so that a seed gives the same model on every machine */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float rng_uniform(uint64_t *s, float lo, float hi)
{
    return lo + (hi - lo) * (float)((rng_next(s) >> 40) * (1.0 / 16777216.0));
}

/* Ternary values with the mix trained BitNet weights show: about half zeros. */
static void random_ternary(uint64_t *s, int8_t *v, size_t n)
{
    static const int8_t from2bits[4] = {-1, 0, 0, 1};
    for (size_t i = 0; i < n; i += 32) {
        uint64_t r = rng_next(s);
        for (size_t j = 0; j < 32 && i + j < n; j++, r >>= 2)
            v[i + j] = from2bits[r & 3];
    }
}

/* A scale that keeps a bitlinear's output near unit size, rounded to a value that F16
 * holds exactly, so the same weights written as I2_S or TQ*_0 compute the same thing. */
static float weight_scale(uint64_t *s, uint32_t cols)
{
    float base = sqrtf(2.0f / (float)cols) * rng_uniform(s, 0.8f, 1.25f);
    return f16_to_f32(f32_to_f16(base));
}

struct synth_writer {
    const struct synth_params *p;
    struct gguf_writer *w;
    FILE *fp;
    uint64_t rng;
    uint64_t done, total;
    synth_progress_fn progress;
    void *progress_ctx;
    struct errbuf *e;
};

static int emit(struct synth_writer *sw, int idx, const void *data, uint64_t len)
{
    if (gguf_w_data(sw->w, sw->fp, idx, data, len, sw->e) < 0)
        return -1;
    sw->done += len;
    if (sw->progress)
        sw->progress(sw->progress_ctx, sw->done, sw->total);
    return 0;
}

static int write_ternary(struct synth_writer *sw, int idx, uint32_t cols, uint32_t rows)
{
    size_t n = (size_t)cols * rows;
    uint64_t nbytes = gguf_w_tensor_nbytes(sw->w, idx);
    int8_t *vals = malloc(n);
    uint8_t *packed = calloc(1, nbytes);
    if (!vals || !packed) {
        free(vals);
        free(packed);
        return err_set(sw->e, "out of memory for a %ux%u tensor", rows, cols);
    }
    float scale = weight_scale(&sw->rng, cols);
    random_ternary(&sw->rng, vals, n);
    uint32_t type = sw->p->weight_type;
    if (type == GGML_TYPE_I2_S) {
        i2s_pack(vals, n, scale, packed);
    } else {
        size_t bb = type == GGML_TYPE_TQ2_0 ? TQ2_0_BYTES : TQ1_0_BYTES;
        uint16_t d = f32_to_f16(scale);
        for (size_t b = 0; b < n / QK_TQ; b++) {
            if (type == GGML_TYPE_TQ2_0)
                tq2_pack_block(vals + b * QK_TQ, d, packed + b * bb);
            else
                tq1_pack_block(vals + b * QK_TQ, d, packed + b * bb);
        }
    }
    int rc = emit(sw, idx, packed, nbytes);
    free(vals);
    free(packed);
    return rc;
}

static int write_norm(struct synth_writer *sw, int idx, uint32_t n)
{
    float *v = malloc(n * sizeof *v);
    if (!v)
        return err_set(sw->e, "out of memory");
    for (uint32_t i = 0; i < n; i++)
        v[i] = rng_uniform(&sw->rng, 0.8f, 1.2f);
    int rc = emit(sw, idx, v, (uint64_t)n * sizeof *v);
    free(v);
    return rc;
}

/* One embedding row in the requested dense type. */
static void encode_dense_row(uint32_t type, const float *x, uint32_t n, uint8_t *out)
{
    switch (type) {
    case GGML_TYPE_F32:
        memcpy(out, x, n * sizeof(float));
        break;
    case GGML_TYPE_BF16:
        for (uint32_t i = 0; i < n; i++) {
            uint32_t bits;
            memcpy(&bits, &x[i], sizeof bits);
            uint16_t h = (uint16_t)((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
            out[2 * i] = (uint8_t)h, out[2 * i + 1] = (uint8_t)(h >> 8);
        }
        break;
    case GGML_TYPE_Q8_0:
        for (uint32_t b = 0; b < n / QK8_0; b++) {
            const float *xb = x + b * QK8_0;
            uint8_t *o = out + b * Q8_0_BYTES;
            float amax = 0.0f;
            for (int i = 0; i < QK8_0; i++)
                amax = fmaxf(amax, fabsf(xb[i]));
            float d = amax / 127.0f;
            uint16_t dh = f32_to_f16(d);
            float id = d > 0.0f ? 1.0f / d : 0.0f;
            o[0] = (uint8_t)dh, o[1] = (uint8_t)(dh >> 8);
            for (int i = 0; i < QK8_0; i++)
                o[2 + i] = (uint8_t)(int8_t)lrintf(xb[i] * id);
        }
        break;
    default: /* F16 */
        for (uint32_t i = 0; i < n; i++) {
            uint16_t h = f32_to_f16(x[i]);
            out[2 * i] = (uint8_t)h, out[2 * i + 1] = (uint8_t)(h >> 8);
        }
        break;
    }
}

static int write_dense(struct synth_writer *sw, int idx, uint32_t cols, uint32_t rows)
{
    uint64_t row_bytes = ggml_tensor_nbytes(sw->p->embd_type, cols, cols);
    uint32_t chunk_rows = 4096;
    float *x = malloc(cols * sizeof *x);
    uint8_t *buf = malloc(row_bytes * chunk_rows);
    if (!x || !buf) {
        free(x);
        free(buf);
        return err_set(sw->e, "out of memory");
    }
    int rc = 0;
    for (uint32_t r0 = 0; r0 < rows && rc == 0; r0 += chunk_rows) {
        uint32_t nr = rows - r0 < chunk_rows ? rows - r0 : chunk_rows;
        for (uint32_t r = 0; r < nr; r++) {
            for (uint32_t i = 0; i < cols; i++)
                x[i] = rng_uniform(&sw->rng, -0.1f, 0.1f);
            encode_dense_row(sw->p->embd_type, x, cols, buf + r * row_bytes);
        }
        rc = emit(sw, idx, buf, row_bytes * nr);
    }
    free(x);
    free(buf);
    return rc;
}

static void write_metadata(struct gguf_writer *w, const struct synth_params *p,
                           const struct tok_source *tok)
{
    char key[128];
#define HP(suffix) (snprintf(key, sizeof key, "%s.%s", BITNET_ARCH, suffix), key)
    gguf_w_str(w, "general.architecture", BITNET_ARCH);
    gguf_w_str(w, "general.name", p->name ? p->name : "bitnet-b1.58 synthetic");
    gguf_w_u32(w, "general.alignment", 32);
    gguf_w_u32(w, "general.quantization_version", 2);
    gguf_w_u32(w, HP("vocab_size"), tok->n_tokens);
    gguf_w_u32(w, HP("context_length"), p->n_ctx);
    gguf_w_u32(w, HP("embedding_length"), p->n_embd);
    gguf_w_u32(w, HP("block_count"), p->n_layer);
    gguf_w_u32(w, HP("feed_forward_length"), p->n_ff);
    gguf_w_u32(w, HP("attention.head_count"), p->n_head);
    gguf_w_u32(w, HP("attention.head_count_kv"), p->n_head_kv);
    gguf_w_u32(w, HP("rope.dimension_count"), p->n_embd / p->n_head);
    gguf_w_f32(w, HP("rope.freq_base"), p->rope_base);
    gguf_w_f32(w, HP("attention.layer_norm_rms_epsilon"), p->norm_eps);
#undef HP
    gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_w_str(w, "tokenizer.ggml.pre", "llama-bpe");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", tok->tokens, tok->n_tokens);
    if (tok->types)
        gguf_w_arr_i32(w, "tokenizer.ggml.token_type", tok->types, tok->n_tokens);
    gguf_w_arr_str(w, "tokenizer.ggml.merges", tok->merges, tok->n_merges);
    if (tok->bos_id >= 0)
        gguf_w_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)tok->bos_id);
    if (tok->eos_id >= 0)
        gguf_w_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)tok->eos_id);
    if (tok->eot_id >= 0)
        gguf_w_u32(w, "tokenizer.ggml.eot_token_id", (uint32_t)tok->eot_id);
    gguf_w_bool(w, "tokenizer.ggml.add_bos_token", tok->add_bos);
}

static int check_params(const struct synth_params *p, struct errbuf *e)
{
    if (!p->n_embd || !p->n_layer || !p->n_head || !p->n_head_kv || !p->n_ff || !p->n_ctx)
        return err_set(e, "every dimension must be positive");
    if (p->n_embd % p->n_head || (p->n_embd / p->n_head) % 2)
        return err_set(e, "--embd %u must be a multiple of --heads %u with an even head size",
                       p->n_embd, p->n_head);
    if (p->n_head % p->n_head_kv)
        return err_set(e, "--heads %u must be a multiple of --kv-heads %u", p->n_head,
                       p->n_head_kv);
    uint32_t blk = ggml_type_block_len(p->weight_type);
    if (!ggml_type_is_ternary(p->weight_type))
        return err_set(e, "weight type must be I2_S, TQ2_0 or TQ1_0");
    if (p->n_embd % blk || p->n_ff % blk)
        return err_set(e, "--embd %u and --ffn %u must be multiples of %u for %s", p->n_embd,
                       p->n_ff, blk, ggml_type_name(p->weight_type));
    if (p->n_embd % ggml_type_block_len(p->embd_type))
        return err_set(e, "--embd %u must be a multiple of %u for a %s embedding", p->n_embd,
                       ggml_type_block_len(p->embd_type), ggml_type_name(p->embd_type));
    return 0;
}

static int declare_tensors(struct gguf_writer *w, const struct synth_params *p, uint32_t n_vocab,
                           struct errbuf *e)
{
    uint64_t embd = p->n_embd, kv = (uint64_t)p->n_head_kv * (p->n_embd / p->n_head), ff = p->n_ff;
    uint64_t dims[2];
    char name[96];
#define T(type, d0, d1, fmt, ...)                                                          \
    do {                                                                                  \
        dims[0] = (d0), dims[1] = (d1);                                                   \
        snprintf(name, sizeof name, fmt, __VA_ARGS__);                                    \
        if (gguf_w_tensor(w, name, (type), (d1) == 1 ? 1 : 2, dims, e) < 0)               \
            return -1;                                                                    \
    } while (0)
    T(p->embd_type, embd, n_vocab, "%s", "token_embd.weight");
    for (uint32_t l = 0; l < p->n_layer; l++) {
        T(GGML_TYPE_F32, embd, 1, "blk.%u.attn_norm.weight", l);
        T(p->weight_type, embd, embd, "blk.%u.attn_q.weight", l);
        T(p->weight_type, embd, kv, "blk.%u.attn_k.weight", l);
        T(p->weight_type, embd, kv, "blk.%u.attn_v.weight", l);
        T(GGML_TYPE_F32, embd, 1, "blk.%u.attn_sub_norm.weight", l);
        T(p->weight_type, embd, embd, "blk.%u.attn_output.weight", l);
        T(GGML_TYPE_F32, embd, 1, "blk.%u.ffn_norm.weight", l);
        T(p->weight_type, embd, ff, "blk.%u.ffn_gate.weight", l);
        T(p->weight_type, embd, ff, "blk.%u.ffn_up.weight", l);
        T(GGML_TYPE_F32, ff, 1, "blk.%u.ffn_sub_norm.weight", l);
        T(p->weight_type, ff, embd, "blk.%u.ffn_down.weight", l);
    }
    T(GGML_TYPE_F32, embd, 1, "%s", "output_norm.weight");
    if (p->untied)
        T(p->embd_type, embd, n_vocab, "%s", "output.weight");
#undef T
    return 0;
}

/* Tensors are written in declaration order; this mirrors declare_tensors. */
static int write_tensors(struct synth_writer *sw, uint32_t n_vocab)
{
    const struct synth_params *p = sw->p;
    uint32_t kv = p->n_head_kv * (p->n_embd / p->n_head);
    int idx = 0;
    if (write_dense(sw, idx++, p->n_embd, n_vocab) < 0)
        return -1;
    for (uint32_t l = 0; l < p->n_layer; l++) {
        if (write_norm(sw, idx++, p->n_embd) < 0 ||
            write_ternary(sw, idx++, p->n_embd, p->n_embd) < 0 ||
            write_ternary(sw, idx++, p->n_embd, kv) < 0 ||
            write_ternary(sw, idx++, p->n_embd, kv) < 0 ||
            write_norm(sw, idx++, p->n_embd) < 0 ||
            write_ternary(sw, idx++, p->n_embd, p->n_embd) < 0 ||
            write_norm(sw, idx++, p->n_embd) < 0 ||
            write_ternary(sw, idx++, p->n_embd, p->n_ff) < 0 ||
            write_ternary(sw, idx++, p->n_embd, p->n_ff) < 0 ||
            write_norm(sw, idx++, p->n_ff) < 0 ||
            write_ternary(sw, idx++, p->n_ff, p->n_embd) < 0)
            return -1;
    }
    if (write_norm(sw, idx++, p->n_embd) < 0)
        return -1;
    if (p->untied && write_dense(sw, idx++, p->n_embd, n_vocab) < 0)
        return -1;
    return 0;
}

int bitnet_synth(const struct synth_params *p, const char *out_path, synth_progress_fn progress,
                 void *progress_ctx, struct errbuf *e)
{
    if (check_params(p, e) < 0)
        return -1;
    struct tok_source_owned tok;
    if (tok_source_from_hf_json(&tok, p->tokenizer_json, e) < 0)
        return -1;

    struct gguf_writer *w = gguf_writer_new();
    struct output_file of = {0};
    int rc = -1;
    if (!w) {
        err_set(e, "out of memory");
        goto out;
    }
    write_metadata(w, p, &tok.src);
    if (declare_tensors(w, p, tok.src.n_tokens, e) < 0)
        goto out;
    if (output_open(&of, out_path, 0666, 0, e) < 0)
        goto out;
    struct synth_writer sw = {.p = p, .w = w, .fp = of.fp, .rng = p->seed ^ 0x5eedb17e7ull,
                              .progress = progress, .progress_ctx = progress_ctx, .e = e};
    int n_tensors = 2 + 11 * (int)p->n_layer + (p->untied ? 1 : 0);
    for (int i = 0; i < n_tensors; i++)
        sw.total += gguf_w_tensor_nbytes(w, i);
    if (gguf_w_begin(w, of.fp, e) < 0 || write_tensors(&sw, tok.src.n_tokens) < 0 ||
        gguf_w_end(w, of.fp, e) < 0 || output_commit(&of, e) < 0)
        goto out;
    rc = 0;
out:
    output_abort(&of);
    gguf_writer_free(w);
    tok_source_owned_free(&tok);
    return rc;
}

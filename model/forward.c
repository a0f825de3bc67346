/* Reference forward pass: plain loops, float32 activations, exact integer dot products
 * through the kernel table. Read it beside spec section 4. */
#include "model/forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "model/ggml_types.h"

static int max_i(int a, int b) { return a > b ? a : b; }

int forward_state_init(struct forward_state *s, const struct bitnet_hparams *hp, int n_ctx,
                       struct errbuf *e)
{
    memset(s, 0, sizeof *s);
    if (n_ctx <= 0)
        return err_set(e, "context length must be positive (got %d)", n_ctx);
    size_t kv_dim = (size_t)hp->n_head_kv * hp->head_dim;
    size_t wide = (size_t)max_i((int)hp->n_embd, (int)hp->n_ff);
    size_t cache = (size_t)hp->n_layer * (size_t)n_ctx * kv_dim;
    s->n_ctx = n_ctx;
    s->x = calloc(hp->n_embd, sizeof(float));
    s->xb = calloc(wide, sizeof(float));
    s->xq = calloc(wide, 1);
    s->acc = calloc(wide, sizeof(int32_t));
    s->q = calloc(hp->n_embd, sizeof(float));
    s->k = calloc(kv_dim, sizeof(float));
    s->v = calloc(kv_dim, sizeof(float));
    s->att = calloc((size_t)n_ctx, sizeof(float));
    s->attn_out = calloc(hp->n_embd, sizeof(float));
    s->hb = calloc(hp->n_ff, sizeof(float));
    s->hb2 = calloc(hp->n_ff, sizeof(float));
    s->rope_cos = calloc(hp->head_dim / 2, sizeof(float));
    s->rope_sin = calloc(hp->head_dim / 2, sizeof(float));
    s->key_cache = calloc(cache, sizeof(float));
    s->value_cache = calloc(cache, sizeof(float));
    s->logits = calloc(hp->n_vocab, sizeof(float));
    if (!s->x || !s->xb || !s->xq || !s->acc || !s->q || !s->k || !s->v || !s->att ||
        !s->attn_out || !s->hb || !s->hb2 || !s->rope_cos || !s->rope_sin || !s->key_cache ||
        !s->value_cache || !s->logits) {
        forward_state_free(s);
        return err_set(e, "out of memory for a %d-token context (KV cache %zu MiB)", n_ctx,
                       cache * 2 * sizeof(float) >> 20);
    }
    return 0;
}

void forward_state_free(struct forward_state *s)
{
    free(s->x);
    free(s->xb);
    free(s->xq);
    free(s->acc);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->att);
    free(s->attn_out);
    free(s->hb);
    free(s->hb2);
    free(s->rope_cos);
    free(s->rope_sin);
    free(s->key_cache);
    free(s->value_cache);
    free(s->logits);
    memset(s, 0, sizeof *s);
}

static void rmsnorm(float *out, const float *x, const float *weight, int n, float eps)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++)
        out[i] = x[i] * scale * weight[i];
}

/* out = (xq . W) / s * weight_scale, for an activation already quantized with scale s. */
static void bitlinear_q(const struct ternary_matrix *w, const int8_t *xq, float s, int32_t *acc,
                        float *out)
{
    if (w->type == GGML_TYPE_I2_S) {
        kops.i2s_dot_rows(w, xq, 0, w->rows, acc);
        float k = w->scale / s;
        for (int r = 0; r < w->rows; r++)
            out[r] = (float)acc[r] * k;
    } else {
        kops.tq_dot_rows(w, xq, 0, w->rows, out);
        for (int r = 0; r < w->rows; r++)
            out[r] /= s;
    }
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

static void softmax(float *x, int n)
{
    float max = x[0];
    for (int i = 1; i < n; i++)
        max = x[i] > max ? x[i] : max;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++)
        x[i] *= inv;
}

void forward_embed(const struct bitnet_model *m, int32_t token, float *x)
{
    dense_row_to_f32(&m->tok_embd, token, x);
}

void forward_begin_position(const struct bitnet_model *m, struct forward_state *s, int pos)
{
    int hd = (int)m->hp.head_dim;
    for (int i = 0; i < hd / 2; i++) {
        double theta = pos * pow((double)m->hp.rope_base, -2.0 * i / hd);
        s->rope_cos[i] = (float)cos(theta);
        s->rope_sin[i] = (float)sin(theta);
    }
}

static void attention(const struct bitnet_hparams *hp, struct forward_state *s, uint32_t il,
                      int pos)
{
    int hd = (int)hp->head_dim;
    int kv_dim = (int)(hp->n_head_kv * hp->head_dim);
    int group = (int)(hp->n_head / hp->n_head_kv);
    const float *kc = s->key_cache + (size_t)il * s->n_ctx * kv_dim;
    const float *vc = s->value_cache + (size_t)il * s->n_ctx * kv_dim;
    float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < (int)hp->n_head; h++) {
        const float *q = s->q + h * hd;
        int kvh = h / group;
        for (int t = 0; t <= pos; t++) {
            const float *k = kc + (size_t)t * kv_dim + kvh * hd;
            float dot = 0.0f;
            for (int i = 0; i < hd; i++)
                dot += q[i] * k[i];
            s->att[t] = dot * scale;
        }
        softmax(s->att, pos + 1);
        float *o = s->attn_out + h * hd;
        memset(o, 0, (size_t)hd * sizeof(float));
        for (int t = 0; t <= pos; t++) {
            const float *v = vc + (size_t)t * kv_dim + kvh * hd;
            float a = s->att[t];
            for (int i = 0; i < hd; i++)
                o[i] += a * v[i];
        }
    }
}

void forward_layer(const struct bitnet_model *m, struct forward_state *s, uint32_t il, int pos)
{
    const struct bitnet_hparams *hp = &m->hp;
    const struct bitnet_layer *L = &m->layers[il];
    int embd = (int)hp->n_embd, ff = (int)hp->n_ff;
    int kv_dim = (int)(hp->n_head_kv * hp->head_dim);
    float eps = hp->norm_eps;

    /* attention block: Q, K and V share one quantized input */
    rmsnorm(s->xb, s->x, L->attn_norm, embd, eps);
    float sa = quantize_act_i8(s->xb, embd, s->xq);
    bitlinear_q(&L->wq, s->xq, sa, s->acc, s->q);
    bitlinear_q(&L->wk, s->xq, sa, s->acc, s->k);
    bitlinear_q(&L->wv, s->xq, sa, s->acc, s->v);
    rope(s->q, (int)hp->n_head, (int)hp->head_dim, s->rope_cos, s->rope_sin);
    rope(s->k, (int)hp->n_head_kv, (int)hp->head_dim, s->rope_cos, s->rope_sin);
    size_t off = ((size_t)il * s->n_ctx + (size_t)pos) * kv_dim;
    memcpy(s->key_cache + off, s->k, (size_t)kv_dim * sizeof(float));
    memcpy(s->value_cache + off, s->v, (size_t)kv_dim * sizeof(float));
    attention(hp, s, il, pos);
    rmsnorm(s->xb, s->attn_out, L->attn_sub_norm, embd, eps);
    float so = quantize_act_i8(s->xb, embd, s->xq);
    bitlinear_q(&L->wo, s->xq, so, s->acc, s->attn_out);
    for (int i = 0; i < embd; i++)
        s->x[i] += s->attn_out[i];

    /* feed-forward block: squared-ReLU gate times up, gate and up share the input */
    rmsnorm(s->xb, s->x, L->ffn_norm, embd, eps);
    float sf = quantize_act_i8(s->xb, embd, s->xq);
    bitlinear_q(&L->wgate, s->xq, sf, s->acc, s->hb);
    bitlinear_q(&L->wup, s->xq, sf, s->acc, s->hb2);
    for (int i = 0; i < ff; i++) {
        float g = s->hb[i] > 0.0f ? s->hb[i] : 0.0f;
        s->hb[i] = g * g * s->hb2[i];
    }
    rmsnorm(s->xb, s->hb, L->ffn_sub_norm, ff, eps);
    float sd = quantize_act_i8(s->xb, ff, s->xq);
    bitlinear_q(&L->wdown, s->xq, sd, s->acc, s->attn_out);
    for (int i = 0; i < embd; i++)
        s->x[i] += s->attn_out[i];
}

void forward_output(const struct bitnet_model *m, struct forward_state *s)
{
    rmsnorm(s->xb, s->x, m->output_norm, (int)m->hp.n_embd, m->hp.norm_eps);
    kops.dense_dot_rows(&m->output, s->xb, 0, m->output.rows, s->logits);
}

int forward_advance(const struct bitnet_model *m, struct forward_state *s, int32_t token, int pos,
                    struct errbuf *e)
{
    if (token < 0 || (uint32_t)token >= m->hp.n_vocab)
        return err_set(e, "token id %d is outside the vocabulary (0..%u)", token,
                       m->hp.n_vocab - 1);
    if (pos < 0 || pos >= s->n_ctx)
        return err_set(e, "position %d is outside the context (%d tokens)", pos, s->n_ctx);
    forward_embed(m, token, s->x);
    forward_begin_position(m, s, pos);
    for (uint32_t il = 0; il < m->hp.n_layer; il++)
        forward_layer(m, s, il, pos);
    return 0;
}

const float *forward_token(const struct bitnet_model *m, struct forward_state *s, int32_t token,
                           int pos, struct errbuf *e)
{
    if (forward_advance(m, s, token, pos, e) < 0)
        return NULL;
    forward_output(m, s);
    return s->logits;
}

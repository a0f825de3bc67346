#include "tests/ref_forward64.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"

static double half_to_double(uint16_t h)
{
    int sign = h >> 15, exp = (h >> 10) & 31, man = h & 1023;
    double v = exp == 0 ? ldexp(man, -24) : ldexp(1024 + man, exp - 25);
    return sign ? -v : v;
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* One value of a tensor at flat index i, following spec section 3 literally. */
static double value_at(const struct gguf_tensor *t, uint64_t i)
{
    const uint8_t *d = t->data;
    uint64_t n = t->ne[0] * t->ne[1];
    switch (t->type) {
    case 0: { float f; memcpy(&f, d + 4 * i, 4); return f; }
    case 1: return half_to_double(rd16(d + 2 * i));
    case 30: { uint32_t b = (uint32_t)rd16(d + 2 * i) << 16; float f; memcpy(&f, &b, 4); return f; }
    case 8: { const uint8_t *blk = d + (i / 32) * 34; return half_to_double(rd16(blk)) * (int8_t)blk[2 + i % 32]; }
    case 36: {
        uint64_t b = i / 128, j = i % 128;
        int code = (d[b * 32 + j % 32] >> (6 - 2 * (j / 32))) & 3;
        float scale;
        memcpy(&scale, d + n / 4, 4);
        return (code - 1) * (double)scale;
    }
    case 35: {
        const uint8_t *blk = d + (i / 256) * 66;
        int k = (int)(i % 256), h = k / 128, l = (k % 128) / 32, m = k % 32;
        return (((blk[32 * h + m] >> (2 * l)) & 3) - 1) * half_to_double(rd16(blk + 64));
    }
    case 34: {
        const uint8_t *blk = d + (i / 256) * 54;
        int k = (int)(i % 256), byte, nn;
        if (k < 160) byte = blk[k % 32], nn = k / 32;
        else if (k < 240) byte = blk[32 + (k - 160) % 16], nn = (k - 160) / 16;
        else byte = blk[48 + (k - 240) % 4], nn = (k - 240) / 4;
        int pw = 1;
        for (int q = 0; q < nn; q++) pw *= 3;
        int trit = (((uint8_t)(byte * pw)) * 3) >> 8;
        return (trit - 1) * half_to_double(rd16(blk + 52));
    }
    }
    return NAN;
}

/* Ternary tensors yield their values without the scale and the scale apart, because
 * the activation quantization sits between them. */
struct mat { int rows, cols; double *w; double *row_scale_per_block; int block; };

static double *load_dense(const struct gguf_file *f, const char *name, uint64_t *count)
{
    const struct gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t)
        return NULL;
    uint64_t n = t->ne[0] * t->ne[1];
    double *v = malloc(n * sizeof *v);
    for (uint64_t i = 0; i < n; i++)
        v[i] = value_at(t, i);
    if (count)
        *count = n;
    return v;
}

static uint32_t u32_key(const struct gguf_file *f, const char *key, uint32_t dflt)
{
    uint32_t v;
    struct errbuf e;
    return gguf_get_u32(f, key, &v, &e) == 0 ? v : dflt;
}

static double f32_key(const struct gguf_file *f, const char *key, double dflt)
{
    float v;
    struct errbuf e;
    return gguf_get_f32(f, key, &v, &e) == 0 ? v : dflt;
}

static void rmsnorm(double *out, const double *x, const double *w, int n, double eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    double s = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++)
        out[i] = x[i] * s * w[i];
}

/* y = W x with x quantized to int8 per token; W holds the scaled ternary values, and
 * since each value is trit * scale the product equals (xq . trit) * scale / s. */
static void bitlinear(double *y, const double *x, const double *W, int rows, int cols)
{
    double amax = 0;
    for (int i = 0; i < cols; i++)
        amax = fmax(amax, fabs(x[i]));
    if (amax < 1e-5)
        amax = 1e-5;
    double s = 127.0 / amax;
    double *xq = malloc(cols * sizeof *xq);
    for (int i = 0; i < cols; i++) {
        double q = nearbyint(x[i] * s);
        xq[i] = q > 127 ? 127 : q < -128 ? -128 : q;
    }
    for (int r = 0; r < rows; r++) {
        double acc = 0;
        for (int c = 0; c < cols; c++)
            acc += W[(size_t)r * cols + c] * xq[c];
        y[r] = acc / s;
    }
    free(xq);
}

double *ref64_logits(const char *path, const int32_t *ids, int n, int *vocab_out)
{
    struct gguf_file f;
    struct errbuf e;
    if (gguf_open(&f, path, &e) < 0) {
        fprintf(stderr, "%s\n", e.msg);
        return NULL;
    }
    int D = (int)u32_key(&f, "bitnet-b1.58.embedding_length", 0);
    int L = (int)u32_key(&f, "bitnet-b1.58.block_count", 0);
    int H = (int)u32_key(&f, "bitnet-b1.58.attention.head_count", 0);
    int KVH = (int)u32_key(&f, "bitnet-b1.58.attention.head_count_kv", (uint32_t)H);
    int FF = (int)u32_key(&f, "bitnet-b1.58.feed_forward_length", 0);
    double base = f32_key(&f, "bitnet-b1.58.rope.freq_base", 10000);
    double eps = f32_key(&f, "bitnet-b1.58.attention.layer_norm_rms_epsilon", 1e-5);
    int HD = D / H, KV = KVH * HD;
    uint64_t n_embd_vals;
    double *embd = load_dense(&f, "token_embd.weight", &n_embd_vals);
    int V = (int)(n_embd_vals / (uint64_t)D);
    double *out_w = load_dense(&f, "output.weight", NULL);
    if (!out_w)
        out_w = embd;
    double *out_norm = load_dense(&f, "output_norm.weight", NULL);

    double *kc = calloc((size_t)L * n * KV, sizeof(double));
    double *vc = calloc((size_t)L * n * KV, sizeof(double));
    double *logits = malloc((size_t)n * V * sizeof(double));
    double *x = malloc(D * sizeof(double)), *xb = malloc((D > FF ? D : FF) * sizeof(double));
    double *q = malloc(D * sizeof(double)), *k = malloc(KV * sizeof(double));
    double *v = malloc(KV * sizeof(double)), *o = malloc(D * sizeof(double));
    double *g = malloc(FF * sizeof(double)), *u = malloc(FF * sizeof(double));
    double *att = malloc(n * sizeof(double)), *tmp = malloc(D * sizeof(double));

    for (int pos = 0; pos < n; pos++) {
        memcpy(x, embd + (size_t)ids[pos] * D, D * sizeof(double));
        for (int l = 0; l < L; l++) {
            char name[96];
#define W(s) (snprintf(name, sizeof name, "blk.%d." s, l), load_dense(&f, name, NULL))
            double *an = W("attn_norm.weight"), *asn = W("attn_sub_norm.weight");
            double *fn = W("ffn_norm.weight"), *fsn = W("ffn_sub_norm.weight");
            double *wq = W("attn_q.weight"), *wk = W("attn_k.weight"), *wv = W("attn_v.weight");
            double *wo = W("attn_output.weight"), *wg = W("ffn_gate.weight");
            double *wu = W("ffn_up.weight"), *wd = W("ffn_down.weight");
#undef W
            rmsnorm(xb, x, an, D, eps);
            bitlinear(q, xb, wq, D, D);
            bitlinear(k, xb, wk, KV, D);
            bitlinear(v, xb, wv, KV, D);
            for (int h = 0; h < H + KVH; h++) {
                double *vec = h < H ? q + h * HD : k + (h - H) * HD;
                for (int i = 0; i < HD / 2; i++) {
                    double th = pos * pow(base, -2.0 * i / HD), c = cos(th), s = sin(th);
                    double a = vec[i], b = vec[i + HD / 2];
                    vec[i] = a * c - b * s;
                    vec[i + HD / 2] = a * s + b * c;
                }
            }
            memcpy(kc + ((size_t)l * n + pos) * KV, k, KV * sizeof(double));
            memcpy(vc + ((size_t)l * n + pos) * KV, v, KV * sizeof(double));
            for (int h = 0; h < H; h++) {
                int kh = h / (H / KVH);
                double mx = -INFINITY, sum = 0;
                for (int t = 0; t <= pos; t++) {
                    double dot = 0;
                    for (int i = 0; i < HD; i++)
                        dot += q[h * HD + i] * kc[((size_t)l * n + t) * KV + kh * HD + i];
                    att[t] = dot / sqrt((double)HD);
                    mx = fmax(mx, att[t]);
                }
                for (int t = 0; t <= pos; t++)
                    sum += (att[t] = exp(att[t] - mx));
                for (int i = 0; i < HD; i++) {
                    double acc = 0;
                    for (int t = 0; t <= pos; t++)
                        acc += att[t] / sum * vc[((size_t)l * n + t) * KV + kh * HD + i];
                    o[h * HD + i] = acc;
                }
            }
            rmsnorm(xb, o, asn, D, eps);
            bitlinear(tmp, xb, wo, D, D);
            for (int i = 0; i < D; i++)
                x[i] += tmp[i];
            rmsnorm(xb, x, fn, D, eps);
            bitlinear(g, xb, wg, FF, D);
            bitlinear(u, xb, wu, FF, D);
            for (int i = 0; i < FF; i++)
                g[i] = (g[i] > 0 ? g[i] * g[i] : 0) * u[i];
            rmsnorm(xb, g, fsn, FF, eps);
            bitlinear(tmp, xb, wd, D, FF);
            for (int i = 0; i < D; i++)
                x[i] += tmp[i];
            free(an), free(asn), free(fn), free(fsn), free(wq), free(wk), free(wv);
            free(wo), free(wg), free(wu), free(wd);
        }
        rmsnorm(xb, x, out_norm, D, eps);
        for (int r = 0; r < V; r++) {
            double acc = 0;
            for (int i = 0; i < D; i++)
                acc += out_w[(size_t)r * D + i] * xb[i];
            logits[(size_t)pos * V + r] = acc;
        }
    }
    if (out_w != embd)
        free(out_w);
    free(embd), free(out_norm), free(kc), free(vc), free(x), free(xb), free(q), free(k);
    free(v), free(o), free(g), free(u), free(att), free(tmp);
    gguf_close(&f);
    *vocab_out = V;
    return logits;
}

#include "ctl/bench_breakdown.h"

#include <string.h>

static double matrix_bytes(const struct ternary_matrix *w)
{
    return (double)w->rows * (double)w->row_bytes;
}

void breakdown_set_weights(struct decode_breakdown *b, const struct bitnet_model *m)
{
    memset(b->bytes, 0, sizeof b->bytes);
    for (uint32_t il = 0; il < m->hp.n_layer; il++) {
        const struct bitnet_layer *L = &m->layers[il];
        b->bytes[FP_QKV] += matrix_bytes(&L->wq) + matrix_bytes(&L->wk) + matrix_bytes(&L->wv);
        b->bytes[FP_O] += matrix_bytes(&L->wo);
        b->bytes[FP_GATE_UP] += matrix_bytes(&L->wgate) + matrix_bytes(&L->wup);
        b->bytes[FP_DOWN] += matrix_bytes(&L->wdown);
    }
    b->bytes[FP_HEAD] = (double)bitnet_model_head_bytes(m);
}

/* Mean ms per token of part p, and of what no part holds (sampling, the embedding, the
 * calls between parts). */
static double part_ms(const struct decode_breakdown *b, int p)
{
    return b->tokens ? b->timing.seconds[p] * 1e3 / (double)b->tokens : 0.0;
}

static double other_ms(const struct decode_breakdown *b)
{
    double parts = 0.0;
    for (int p = 0; p < FP_PARTS; p++)
        parts += b->timing.seconds[p];
    return b->tokens ? (b->decode_s - parts) * 1e3 / (double)b->tokens : 0.0;
}

void breakdown_print(const struct decode_breakdown *b, FILE *out)
{
    double total = b->tokens ? b->decode_s * 1e3 / (double)b->tokens : 0.0;
    fprintf(out, "decode by part   mean over %ld tokens; GB/s = bytes the part reads / its time\n",
            b->tokens);
    for (int p = 0; p < FP_PARTS; p++) {
        double ms = part_ms(b, p);
        double bytes = p == FP_ATTENTION && b->tokens ? b->kv_bytes / (double)b->tokens : b->bytes[p];
        fprintf(out, "  %-12s %7.2f ms %5.1f%%", forward_part_names[p], ms,
                total > 0 ? 100.0 * ms / total : 0.0);
        if (bytes > 0 && ms > 0)
            fprintf(out, "  %6.1f GB/s of %.0f MB%s", bytes / (ms * 1e-3) / 1e9, bytes / 1e6,
                    p == FP_ATTENTION ? " (KV cache)" : "");
        fputc('\n', out);
    }
    fprintf(out, "  %-12s %7.2f ms %5.1f%%  (sampling, embedding, between parts)\n", "other",
            other_ms(b), total > 0 ? 100.0 * other_ms(b) / total : 0.0);
}

void breakdown_json(const struct decode_breakdown *b, json_object *j)
{
    static const char *const keys[FP_PARTS] = {"norms_ms", "qkv_ms", "attention_ms", "o_ms",
                                                "gate_up_ms", "down_ms", "head_ms"};
    json_object *o = json_object_new_object();
    for (int p = 0; p < FP_PARTS; p++)
        json_object_object_add(o, keys[p], json_object_new_double(part_ms(b, p)));
    json_object_object_add(o, "other_ms", json_object_new_double(other_ms(b)));
    json_object_object_add(o, "tokens", json_object_new_int64(b->tokens));
    json_object_object_add(j, "breakdown", o);
}

/* Writes a bitnet-b1.58 GGUF with random ternary weights and a real tokenizer, so the
 * engine can be run and measured at any shape without downloadable weights. */
#ifndef BITNET_SYNTH_H
#define BITNET_SYNTH_H

#include <stdbool.h>
#include <stdint.h>

#include "model/errbuf.h"

struct synth_params {
    uint32_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx;
    float rope_base, norm_eps;
    uint64_t seed;
    uint32_t weight_type;   /* GGML_TYPE_I2_S (default), TQ2_0 or TQ1_0 */
    uint32_t embd_type;     /* GGML_TYPE_F16 (default), F32, BF16 or Q8_0 */
    bool untied;            /* also write output.weight */
    const char *tokenizer_json;
    const char *name;
};

/* Fills p with a named preset ("tiny", "2b4t"); -1 for an unknown name. */
int synth_preset(struct synth_params *p, const char *shape, struct errbuf *e);

typedef void (*synth_progress_fn)(void *ctx, uint64_t done_bytes, uint64_t total_bytes);

/* Writes out_path atomically (a temporary file renamed into place on success). */
int bitnet_synth(const struct synth_params *p, const char *out_path, synth_progress_fn progress,
                 void *progress_ctx, struct errbuf *e);

#endif

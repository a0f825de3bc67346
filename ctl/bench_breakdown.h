/* bitnetctl bench --breakdown: where decode's time goes, part by part of the forward pass
 * (model/forward.h, struct forward_timing), with the bytes each part reads per token and
 * so the rate it streams them at. */
#ifndef BITNET_CTL_BENCH_BREAKDOWN_H
#define BITNET_CTL_BENCH_BREAKDOWN_H

#include <json-c/json.h>
#include <stdio.h>

#include "model/bitnet_model.h"
#include "model/forward.h"

struct decode_breakdown {
    struct forward_timing timing; /* the decode steps' parts, summed */
    double decode_s;              /* the same steps' whole time */
    long tokens;                  /* decode steps timed */
    double bytes[FP_PARTS];       /* bytes a part reads per token (0: not counted) */
    double kv_bytes;              /* KV cache bytes the steps read, summed */
};

/* The weights each part reads per token, from the model as the forward pass uses it. */
void breakdown_set_weights(struct decode_breakdown *b, const struct bitnet_model *m);

void breakdown_print(const struct decode_breakdown *b, FILE *out);
/* Adds "breakdown": {"<part>_ms": mean ms per token, ..., "other_ms": ...} to j. */
void breakdown_json(const struct decode_breakdown *b, json_object *j);

#endif

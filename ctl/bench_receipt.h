/* A benchmark receipt: one bench run as JSON with everything that makes it comparable
 * with another (when, which build, which host and CPU, which model, where it ran, with
 * which parameters) and every repeat of every figure. The layout is documented in
 * docs/bench-history.md; bench_store.h keeps receipts, cmd_bench_history.c reads them. */
#ifndef BITNET_CTL_BENCH_RECEIPT_H
#define BITNET_CTL_BENCH_RECEIPT_H

#include <json-c/json.h>
#include <stdbool.h>

#include "model/bitnet_model.h"
#include "model/errbuf.h"

#define BENCH_RECEIPT_VERSION 1

/* What a figure means for comparisons. */
struct bench_figure_info {
    const char *name;
    const char *unit;
    bool higher_is_better;
    /* a ratio to the machine's own measured bandwidth: comparable across hosts, where an
     * absolute figure is only comparable on one host */
    bool cross_host;
    /* bench check looks at it (the probed bandwidth is the machine's, not the engine's) */
    bool checked;
};

/* The known figures, in the order reports list them; NULL for an unknown name. */
const struct bench_figure_info *bench_figure_find(const char *name);
extern const struct bench_figure_info bench_figures[];
extern const int bench_n_figures;

/* A new receipt of the given mode ("in-process" or "daemon") with the time, the build and
 * this host (name, CPU model and features, cores, NUMA nodes, OS kernel) filled in. */
json_object *bench_receipt_new(const char *mode);

/* The model's identity (model_id_of_gguf's sha256), file, shape and tensor types. */
int bench_receipt_set_model(json_object *r, const struct bitnet_model *m, const char *path,
                            struct errbuf *e);

/* Records how the read bandwidth was probed (threads, bytes, passes per measurement). */
void bench_receipt_set_probe(json_object *r, int threads, size_t bytes, int passes);

/* Adds n repeats of figure name (copied). */
void bench_receipt_add_figure(json_object *r, const char *name, const double *v, int n);

/* Sets "config", the key runs must share to be compared as the same configuration (mode,
 * kernel set, placement and parameters), from "kernel_set", "placement" and "params";
 * call once everything else is in. */
void bench_receipt_finish(json_object *r);

/* A short label of where a run ran: "threads 2", "2 workers x 1 threads, 8 streams". */
void bench_receipt_placement_label(json_object *r, char *out, size_t cap);

/* Lookups that tolerate a missing key (fallback / 0 / NULL). */
const char *bench_json_str(json_object *o, const char *path, const char *fallback);
double bench_json_num(json_object *o, const char *path, double fallback);
/* o at a dotted path ("host.name"); NULL when absent. */
json_object *bench_json_at(json_object *o, const char *path);

#endif

/* Which worker runs which layers, on which NUMA node and CPUs. Planned before anything
 * starts, so that a model that cannot fit is refused with the numbers instead of
 * failing halfway through loading.
 *
 * Stages are contiguous layer ranges; the first also holds the token embedding, the
 * last the output projection. Ranges are chosen to minimise the slowest stage, a stage's
 * time taken as (weight + KV bytes) / cores, since decoding streams both once per
 * token. */
#ifndef BITNET_PLACEMENT_H
#define BITNET_PLACEMENT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "daemon/topology.h"
#include "model/errbuf.h"

#define PLACEMENT_MAX_WORKERS 64
#define PLACEMENT_MAX_LAYERS 1024
#define PLACEMENT_MAX_TP 8

struct placement_request {
    int n_layer;
    const uint64_t *layer_bytes;  /* [n_layer] ternary weights and norms of each layer */
    uint64_t embd_bytes;          /* token embedding, held by the first stage */
    uint64_t embd_row_bytes;      /* one row of it: all that a decode step reads (0: the
                                   * whole table is counted, as before it was known) */
    uint64_t output_bytes;        /* output projection, held by the last stage */
    bool output_tied;             /* output is the embedding: counted once when the
                                   * first stage is also the last */
    uint64_t kv_bytes_per_layer;  /* KV cache of one layer at the configured context */
    int n_workers;                /* 0: one per usable NUMA node, at most n_layer */
    const char *layer_map;        /* NULL, or "0-14,15-29": worker i gets range i */
    int threads;                  /* per worker; 0: every CPU of its share */
    bool share_node_cpus;         /* workers on one node each run on all of its CPUs
                                   * (their steps take turns) instead of splitting them */
};

struct placement_worker {
    int node;           /* NUMA node OS index */
    int n_pus;
    int *pus;           /* CPU OS indexes to bind to, ascending; as many as threads */
    int threads;
    double cores;       /* cores it runs on, as the balance counts them: whole cores,
                         * or its part of a core shared with other workers */
    int l0, l1;         /* layers [l0, l1) */
    bool has_embedding;
    bool has_output;
    uint64_t weight_bytes;
    uint64_t kv_bytes;
    double streamed_bytes;  /* what one decode step reads here (placement.c) */
    /* tensor parallelism: ranks computing this stage together (1: none), each on its
     * share of pus (consecutive, in rank order) and its node */
    int tp;
    int tp_nodes[PLACEMENT_MAX_TP];
};

struct placement {
    int n_workers;
    int n_layer;
    struct placement_worker *w;
};

int placement_plan(struct placement *p, const struct topology *t,
                   const struct placement_request *req, struct errbuf *e);
void placement_free(struct placement *p);

/* Makes every k consecutive workers of a plan one tensor-parallel stage of k ranks
 * (daemon/placement_tp.c): their layers, CPUs and nodes together. -1 and e when the
 * workers do not divide into groups of k. */
int placement_group_tensor_parallel(struct placement *p, int k, struct errbuf *e);

/* The balance objective of worker i: the bytes a decode step streams through it (its
 * layers, one embedding row, the head, an eighth of its KV cache) per core. */
double placement_stage_cost(const struct placement_worker *w);

/* A table: worker, node, cpus, threads, layers, MiB of weights and KV, embedding/output. */
void placement_describe(const struct placement *p, FILE *f);

/* {"n_layer":N, "workers":[{"worker":0, "node":0, "cpus":"0-3", "cpu_list":[0,1,2,3],
 *   "threads":4, "layers":[0,15], "embedding":true, "output":false,
 *   "weight_bytes":..., "kv_bytes":...}, ...]}; the caller owns the result
 * (json_object_put). NULL when out of memory. */
struct json_object *placement_to_json(const struct placement *p);

#endif

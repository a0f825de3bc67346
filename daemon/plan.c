#include "daemon/plan.h"

#include <stdlib.h>
#include <string.h>

/* Layer index of a "blk.N.xxx" tensor name, or -1. */
static long block_of(struct strview name)
{
    if (name.len < 6 || memcmp(name.ptr, "blk.", 4) != 0)
        return -1;
    long v = 0;
    size_t i = 4;
    for (; i < name.len && name.ptr[i] >= '0' && name.ptr[i] <= '9' && v < 1000000; i++)
        v = v * 10 + (name.ptr[i] - '0');
    if (i == 4 || i >= name.len || name.ptr[i] != '.')
        return -1;
    return v;
}

/* Ranks per stage when the user said nothing about the plan's shape (no --workers,
 * --layer-map or --tensor-parallel): on several NUMA nodes a worker per node, grouped
 * into stages of as many ranks as the model allows (its KV heads, PLACEMENT_MAX_TP) while
 * the stages are still enough to hold it: tensor parallelism alone when the model fits
 * one node, a pipeline of such stages when it does not. 1 on one node. */
static int auto_ranks(const struct bitnet_hparams *hp, const struct topology *t,
                      uint64_t model_bytes)
{
    int n = topology_n_usable(t);
    /* the planner gives every worker a layer before they are grouped */
    if (n < 2 || (uint32_t)n > hp->n_layer)
        return 1;
    uint64_t smallest = UINT64_MAX;
    for (int i = 0; i < t->n_nodes; i++)
        if (topology_node_usable(&t->nodes[i]) && t->nodes[i].memory < smallest)
            smallest = t->nodes[i].memory;
    uint64_t need = t->memory_known && smallest ? (model_bytes + smallest - 1) / smallest : 1;
    int best = 1;
    for (int k = 2; k <= n && k <= PLACEMENT_MAX_TP && (uint32_t)k <= hp->n_head_kv; k++)
        if (n % k == 0 && (uint64_t)(n / k) >= need)
            best = k;
    return best;
}

int plan_for_model(const struct bitnet_model *m, const struct daemon_config *cfg, int n_ctx,
                   const struct topology *t, struct placement *p, struct errbuf *e)
{
    const struct bitnet_hparams *hp = &m->hp;
    /* a rank holds whole KV heads (model/forward.h, struct forward_tp) */
    if (cfg->tensor_parallel > 1 && (uint32_t)cfg->tensor_parallel > hp->n_head_kv)
        return err_set(e, "--tensor-parallel %d: the model has %u KV heads, and each rank "
                          "needs at least one", cfg->tensor_parallel, hp->n_head_kv);
    uint64_t *layer_bytes = calloc(hp->n_layer ? hp->n_layer : 1, sizeof *layer_bytes);
    if (!layer_bytes)
        return err_set(e, "placement: out of memory");
    uint64_t embd = 0, embd_row = 0, output = 0;
    for (uint64_t i = 0; i < m->file.n_tensors; i++) {
        const struct gguf_tensor *tn = &m->file.tensors[i];
        long l = block_of(tn->name);
        if (l >= 0 && l < (long)hp->n_layer)
            layer_bytes[l] += tn->nbytes;
        else if (strview_eq(tn->name, "token_embd.weight")) {
            embd += tn->nbytes;
            embd_row = tn->ne[1] ? tn->nbytes / tn->ne[1] : tn->nbytes;
        }
        else if (strview_eq(tn->name, "output.weight") || strview_eq(tn->name, "output_norm.weight"))
            output += tn->nbytes;
    }
    /* a tied head is the embedding again: the last stage holds it too */
    if (m->tied_output)
        output += embd;
    uint64_t kv_per_layer = (uint64_t)kv_bytes_per_position(hp, cfg->kv_type) *
                            (uint64_t)n_ctx * (uint64_t)cfg->max_sequences;
    int ranks = cfg->tensor_parallel, workers = cfg->workers;
    if (!ranks && !workers && !cfg->layer_map && !cfg->remote_workers) {
        uint64_t total = embd + output + kv_per_layer * hp->n_layer;
        for (uint32_t l = 0; l < hp->n_layer; l++)
            total += layer_bytes[l];
        ranks = auto_ranks(hp, t, total);
        if (ranks > 1)
            workers = topology_n_usable(t);
    }
    struct placement_request req = {
        .n_layer = (int)hp->n_layer,
        .layer_bytes = layer_bytes,
        .embd_bytes = embd,
        .embd_row_bytes = embd_row,
        .output_bytes = output,
        .output_tied = m->tied_output,
        .kv_bytes_per_layer = kv_per_layer,
        .n_workers = workers,
        .layer_map = cfg->layer_map,
        .threads = cfg->threads_per_worker,
        /* one step is in flight at a time, so workers of one node never compute at once:
         * each may as well use every core while its turn lasts */
        .share_node_cpus = !cfg->split_cpus && ranks <= 1,
    };
    /* tensor-parallel ranks compute at once: each needs CPUs of its own */
    int rc = placement_plan(p, t, &req, e);
    if (rc == 0 && (rc = placement_group_tensor_parallel(p, ranks, e)) < 0)
        placement_free(p);
    free(layer_bytes);
    return rc;
}

void plan_summary(const struct placement *p, const bool *remote, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = 0;
    for (int w = 0; w < p->n_workers && len < cap; w++) {
        const struct placement_worker *pw = &p->w[w];
        char cpus[64];
        if (format_cpu_ranges(cpus, sizeof cpus, pw->pus, pw->n_pus) >= (int)sizeof cpus)
            memcpy(cpus + sizeof cpus - 4, "...", 4);
        int n = remote && remote[w]
                    ? snprintf(out + len, cap - len, "%sw%d layers %d-%d remote", w ? ", " : "",
                               w, pw->l0, pw->l1 - 1)
                    : snprintf(out + len, cap - len, "%sw%d layers %d-%d node %d cpus %s",
                               w ? ", " : "", w, pw->l0, pw->l1 - 1, pw->node, cpus);
        if (n < 0)
            break;
        len += (size_t)n;
    }
}

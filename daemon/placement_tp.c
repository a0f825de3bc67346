/* Tensor-parallel stages from a pipeline plan: the planner places one worker per share
 * of the machine (a node, or part of one with --split-cpus) and balances layers among
 * them; a group of k consecutive ones then becomes one stage whose k ranks each hold a
 * part of every layer of the group's range, on the CPUs and node that worker had. */
#include <stdlib.h>
#include <string.h>

#include "daemon/placement.h"

int placement_group_tensor_parallel(struct placement *p, int k, struct errbuf *e)
{
    if (k <= 1) {
        for (int w = 0; w < p->n_workers; w++) {
            p->w[w].tp = 1;
            p->w[w].tp_nodes[0] = p->w[w].node;
        }
        return 0;
    }
    if (k > PLACEMENT_MAX_TP)
        return err_set(e, "--tensor-parallel %d: at most %d ranks a stage", k, PLACEMENT_MAX_TP);
    if (p->n_workers % k != 0)
        return err_set(e, "--tensor-parallel %d: %d workers do not make stages of %d (give "
                          "--workers as a multiple of it)", k, p->n_workers, k);
    int n_stages = p->n_workers / k;
    for (int st = 0; st < n_stages; st++) {
        struct placement_worker *first = &p->w[st * k], *last = &p->w[st * k + k - 1];
        int n_pus = 0;
        for (int r = 0; r < k; r++)
            n_pus += first[r].n_pus;
        int *pus = malloc((size_t)(n_pus ? n_pus : 1) * sizeof *pus);
        if (!pus)
            return err_set(e, "placement: out of memory");
        struct placement_worker g = *first;
        g.pus = pus;
        g.n_pus = 0;
        g.threads = 0;
        g.cores = 0;
        g.weight_bytes = g.kv_bytes = 0;
        g.streamed_bytes = 0;
        g.l1 = last->l1;
        g.has_output = last->has_output;
        g.tp = k;
        for (int r = 0; r < k; r++) {
            const struct placement_worker *w = &first[r];
            memcpy(pus + g.n_pus, w->pus, (size_t)w->n_pus * sizeof *pus);
            g.n_pus += w->n_pus;
            g.threads += w->threads;
            g.cores += w->cores;
            g.weight_bytes += w->weight_bytes;
            g.kv_bytes += w->kv_bytes;
            g.streamed_bytes += w->streamed_bytes;
            g.tp_nodes[r] = w->node;
        }
        for (int r = 0; r < k; r++)
            free(first[r].pus);
        p->w[st] = g;
    }
    p->n_workers = n_stages;
    return 0;
}

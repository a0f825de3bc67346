/* bitnetctl placement --model FILE [--topology SRC] [bitnetd's placement flags] [--json]:
 * the plan bitnetd would make for a model on a machine, without starting anything. The
 * flags are bitnetd's own (parsed by its config parser), so the plan is the one the
 * daemon would make with them. Adds what the planner does not know: the bytes each NUMA
 * node holds and the bytes that cross each link per generated token. */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/commands.h"
#include "daemon/config.h"
#include "daemon/placement.h"
#include "daemon/plan.h"
#include "daemon/topology.h"
#include "model/bitnet_model.h"
#include "proto/wire.h"

/* Bytes on each link for one decode token: the daemon sends a token id (with its slot
 * and position), stages pass one hidden state on, the last stage returns the argmax
 * (greedy) or a whole row of f32 logits (sampling needs them all). */
static json_object *links_json(const struct placement *p, const struct bitnet_hparams *hp,
                               int act_type)
{
    json_object *links = json_object_new_array();
    size_t hidden = (size_t)hp->n_embd * wire_elem_size((Bitnet__ElemType)act_type);
    for (int i = 0; i <= p->n_workers; i++) {
        json_object *l = json_object_new_object();
        char from[16], to[16];
        snprintf(from, sizeof from, i == 0 ? "daemon" : "w%d", i - 1);
        snprintf(to, sizeof to, i == p->n_workers ? "daemon" : "w%d", i);
        json_object_object_add(l, "from", json_object_new_string(from));
        json_object_object_add(l, "to", json_object_new_string(to));
        if (i == 0) {
            json_object_object_add(l, "bytes_per_token", json_object_new_int64(12));
        } else if (i < p->n_workers) {
            json_object_object_add(l, "bytes_per_token", json_object_new_int64((int64_t)hidden));
            json_object_object_add(l, "crosses_nodes",
                                   json_object_new_boolean(p->w[i - 1].node != p->w[i].node));
        } else {
            json_object_object_add(l, "bytes_per_token_greedy", json_object_new_int64(12));
            json_object_object_add(l, "bytes_per_token_sampled",
                                   json_object_new_int64((int64_t)hp->n_vocab * 4 + 8));
        }
        json_object_array_add(links, l);
    }
    /* a tensor-parallel stage's ranks exchange, per layer, the pieces of 3 vectors of
     * n_embd and one of n_ff (docs/tensor-parallel.md), and the last stage's the logits:
     * each rank receives every piece but its own */
    for (int w = 0; w < p->n_workers; w++) {
        const struct placement_worker *pw = &p->w[w];
        if (pw->tp <= 1)
            continue;
        int64_t per_layer = (3 * (int64_t)hp->n_embd + hp->n_ff) * 4;
        int64_t bytes = per_layer * (pw->l1 - pw->l0) * (pw->tp - 1);
        if (pw->has_output)
            bytes += (int64_t)hp->n_vocab * 4 * (pw->tp - 1);
        bool cross = false;
        for (int r = 1; r < pw->tp; r++)
            cross |= pw->tp_nodes[r] != pw->tp_nodes[0];
        char who[24];
        snprintf(who, sizeof who, "w%d ranks", w);
        json_object *l = json_object_new_object();
        json_object_object_add(l, "from", json_object_new_string(who));
        json_object_object_add(l, "to", json_object_new_string(who));
        json_object_object_add(l, "tensor_parallel", json_object_new_int(pw->tp));
        json_object_object_add(l, "bytes_per_token", json_object_new_int64(bytes));
        json_object_object_add(l, "crosses_nodes", json_object_new_boolean(cross));
        json_object_array_add(links, l);
    }
    return links;
}

/* One process's share: a worker, or one rank of a tensor-parallel stage (a Kth of its
 * bytes and threads, on its own node). */
struct share {
    int node, threads;
    uint64_t weights, kv;
};

/* Weights and KV cache each node holds, over the workers and ranks placed on it. */
static json_object *nodes_json(const struct placement *p)
{
    int n = 0;
    for (int w = 0; w < p->n_workers; w++)
        n += p->w[w].tp > 1 ? p->w[w].tp : 1;
    struct share *sh = calloc((size_t)(n ? n : 1), sizeof *sh);
    json_object *nodes = json_object_new_array();
    if (!sh)
        return nodes;
    n = 0;
    for (int w = 0; w < p->n_workers; w++) {
        const struct placement_worker *pw = &p->w[w];
        int k = pw->tp > 1 ? pw->tp : 1;
        for (int r = 0; r < k; r++)
            sh[n++] = (struct share){k > 1 ? pw->tp_nodes[r] : pw->node, pw->threads / k,
                                     pw->weight_bytes / (uint64_t)k, pw->kv_bytes / (uint64_t)k};
    }
    for (int i = 0; i < n; i++) {
        bool seen = false;
        for (int j = 0; j < i; j++)
            seen |= sh[j].node == sh[i].node;
        if (seen)
            continue;
        uint64_t weights = 0, kv = 0;
        int threads = 0;
        for (int j = i; j < n; j++)
            if (sh[j].node == sh[i].node) {
                weights += sh[j].weights;
                kv += sh[j].kv;
                threads += sh[j].threads;
            }
        json_object *o = json_object_new_object();
        json_object_object_add(o, "node", json_object_new_int(sh[i].node));
        json_object_object_add(o, "weight_bytes", json_object_new_int64((int64_t)weights));
        json_object_object_add(o, "kv_bytes", json_object_new_int64((int64_t)kv));
        json_object_object_add(o, "threads", json_object_new_int(threads));
        json_object_array_add(nodes, o);
    }
    free(sh);
    return nodes;
}

static void print_text(const struct placement *p, json_object *nodes, json_object *links)
{
    placement_describe(p, stdout);
    printf("\n%-6s %12s %10s %8s\n", "node", "weights MiB", "KV MiB", "threads");
    for (size_t i = 0; i < json_object_array_length(nodes); i++) {
        json_object *n = json_object_array_get_idx(nodes, i), *v;
        json_object_object_get_ex(n, "node", &v);
        int node = json_object_get_int(v);
        json_object_object_get_ex(n, "weight_bytes", &v);
        double wb = (double)json_object_get_int64(v) / (1 << 20);
        json_object_object_get_ex(n, "kv_bytes", &v);
        double kb = (double)json_object_get_int64(v) / (1 << 20);
        json_object_object_get_ex(n, "threads", &v);
        printf("%-6d %12.1f %10.1f %8d\n", node, wb, kb, json_object_get_int(v));
    }
    printf("\nper generated token:\n");
    for (size_t i = 0; i < json_object_array_length(links); i++) {
        json_object *l = json_object_array_get_idx(links, i), *from, *to, *b, *x;
        json_object_object_get_ex(l, "from", &from);
        json_object_object_get_ex(l, "to", &to);
        if (strcmp(json_object_get_string(from), json_object_get_string(to)) == 0)
            printf("  %-16s ", json_object_get_string(from));
        else
            printf("  %-6s -> %-6s ", json_object_get_string(from), json_object_get_string(to));
        if (json_object_object_get_ex(l, "bytes_per_token", &b))
            printf("%lld bytes%s\n", (long long)json_object_get_int64(b),
                   json_object_object_get_ex(l, "crosses_nodes", &x) && json_object_get_boolean(x)
                       ? " (between nodes)" : "");
        else {
            json_object_object_get_ex(l, "bytes_per_token_greedy", &b);
            json_object_object_get_ex(l, "bytes_per_token_sampled", &x);
            printf("%lld bytes greedy, %lld sampled\n", (long long)json_object_get_int64(b),
                   (long long)json_object_get_int64(x));
        }
    }
}

int cmd_placement_offline(int argc, char **argv)
{
    /* --json is ours; every other flag goes to bitnetd's parser */
    bool json = false;
    char **args = calloc((size_t)argc + 1, sizeof *args);
    if (!args)
        return 1;
    int n = 0;
    args[n++] = "bitnetctl placement";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else
            args[n++] = argv[i];
    }
    struct daemon_config cfg;
    struct errbuf e = {{0}};
    int rc = config_load(&cfg, n, args, &e);
    free(args);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "bitnetctl placement: %s\n", e.msg);
        config_free(&cfg);
        return rc < 0 ? 2 : 0;
    }
    struct bitnet_model m;
    struct topology t = {0};
    struct placement p = {0};
    rc = 1;
    if (bitnet_model_load(&m, cfg.model, &e) < 0) {
        fprintf(stderr, "bitnetctl placement: %s\n", e.msg);
        config_free(&cfg);
        return 1;
    }
    int n_ctx = cfg.ctx;
    if (m.hp.n_ctx_train && (uint32_t)n_ctx > m.hp.n_ctx_train)
        n_ctx = (int)m.hp.n_ctx_train;
    if (topology_load(&t, cfg.topology, &e) < 0 || plan_for_model(&m, &cfg, n_ctx, &t, &p, &e) < 0) {
        fprintf(stderr, "bitnetctl placement: %s\n", e.msg);
        goto out;
    }
    json_object *nodes = nodes_json(&p), *links = links_json(&p, &m.hp, cfg.act_type);
    if (json) {
        json_object *root = placement_to_json(&p);
        json_object_object_add(root, "nodes", nodes);
        json_object_object_add(root, "links", links);
        json_object_object_add(root, "n_ctx", json_object_new_int(n_ctx));
        puts(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY |
                                                      JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(root);
    } else {
        print_text(&p, nodes, links);
        json_object_put(nodes);
        json_object_put(links);
    }
    rc = 0;
out:
    placement_free(&p);
    topology_free(&t);
    bitnet_model_free(&m);
    config_free(&cfg);
    return rc;
}

#include "daemon/placement.h"

#include <ctype.h>
#include <json-c/json.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GIB (1024.0 * 1024.0 * 1024.0)
#define MIB (1024.0 * 1024.0)

/* ---- layer map ---- */

/* "layer 10 is" or "layers 10-12 are", for the layers [a, b) no range covers. */
static const char *gap_text(char *buf, size_t cap, int a, int b)
{
    if (b - a > 1)
        snprintf(buf, cap, "layers %d-%d are", a, b - 1);
    else
        snprintf(buf, cap, "layer %d is", a);
    return buf;
}

/* Parses "0-14,15-29" into ranges [l0[i], l1[i]) that must cover 0..n_layer-1 in order. */
static int parse_layer_map(const char *map, int n_layer, int *l0, int *l1, int *n_out,
                           struct errbuf *e)
{
    const char *s = map;
    int n = 0, next = 0;
    while (isspace((unsigned char)*s))
        s++;
    if (!*s)
        return err_set(e, "placement: layer map is empty");
    for (;;) {
        while (isspace((unsigned char)*s))
            s++;
        const char *tok = s;
        if (!isdigit((unsigned char)*s))
            return err_set(e, "placement: layer map \"%s\": expected a layer range such as "
                              "0-14 at \"%s\"", map, tok);
        long a = strtol(s, (char **)&s, 10), b = a;
        if (*s == '-') {
            s++;
            if (!isdigit((unsigned char)*s))
                return err_set(e, "placement: layer map \"%s\": expected a layer number after "
                                  "the '-' in \"%s\"", map, tok);
            b = strtol(s, (char **)&s, 10);
        }
        while (isspace((unsigned char)*s))
            s++;
        if (*s && *s != ',')
            return err_set(e, "placement: layer map \"%s\": unexpected \"%s\"", map, s);
        int len = (int)(s - tok);
        if (n >= PLACEMENT_MAX_WORKERS)
            return err_set(e, "placement: layer map \"%s\": more than %d ranges", map,
                           PLACEMENT_MAX_WORKERS);
        if (b < a)
            return err_set(e, "placement: layer map \"%s\": range %d (%.*s) ends before it "
                              "starts", map, n, len, tok);
        if (a >= n_layer || b >= n_layer)
            return err_set(e, "placement: layer map \"%s\": range %d (%.*s) goes past the "
                              "last layer, %d", map, n, len, tok, n_layer - 1);
        if (a > next) {
            char gap[48];
            return err_set(e, "placement: layer map \"%s\": %s in no range (range %d "
                              "starts at %ld)", map, gap_text(gap, sizeof gap, next, (int)a),
                           n, a);
        }
        if (a < next)
            return err_set(e, "placement: layer map \"%s\": range %d (%.*s) starts at layer "
                              "%ld, which range %d already holds", map, n, len, tok, a, n - 1);
        l0[n] = (int)a;
        l1[n] = (int)b + 1;
        next = (int)b + 1;
        n++;
        if (!*s)
            break;
        s++;
    }
    if (next < n_layer) {
        char gap[48];
        return err_set(e, "placement: layer map \"%s\": %s in no range (the model has %d)",
                       map, gap_text(gap, sizeof gap, next, n_layer), n_layer);
    }
    *n_out = n;
    return 0;
}

/* ---- CPUs ---- */

struct share {
    int n_pus;
    int *pus;
    double cores;
};

/* Worker j of m on a node gets a contiguous run of its cores (whole cores, so that
 * hyperthread siblings stay in one worker); with fewer cores than workers, a run of
 * PUs. Of that share, `threads` PUs are kept, one per core before any second sibling,
 * so that fewer threads than PUs still spread over the cores. */
static int cpu_share(const struct topo_node *tn, int j, int m, int threads, int worker,
                     struct share *sh, struct errbuf *e)
{
    int n = tn->n_pus;
    int *core_rank = malloc((size_t)n * sizeof *core_rank); /* rank of each PU's core */
    int *take = malloc((size_t)n * sizeof *take);
    if (!core_rank || !take) {
        free(core_rank), free(take);
        return err_set(e, "placement: out of memory");
    }
    int n_cores = 0;
    for (int a = 0; a < n; a++) {
        core_rank[a] = -1;
        for (int b = 0; b < a && core_rank[a] < 0; b++)
            if (tn->pu_core[b] == tn->pu_core[a])
                core_rank[a] = core_rank[b];
        if (core_rank[a] < 0)
            core_rank[a] = n_cores++;
    }
    int cnt = 0;
    if (n_cores >= m) {
        int c0 = (int)((long)j * n_cores / m), c1 = (int)((long)(j + 1) * n_cores / m);
        for (int a = 0; a < n; a++)
            if (core_rank[a] >= c0 && core_rank[a] < c1)
                take[cnt++] = a;
    } else if (n >= m) {
        int p0 = (int)((long)j * n / m), p1 = (int)((long)(j + 1) * n / m);
        for (int a = p0; a < p1; a++)
            take[cnt++] = a;
    } else {
        free(core_rank), free(take);
        return err_set(e, "placement: node %d has %d CPUs for %d workers", tn->os_index, n, m);
    }
    if (threads > cnt) {
        free(core_rank), free(take);
        return err_set(e, "placement: %d threads per worker requested but worker %d has %d "
                          "CPUs on node %d", threads, worker, cnt, tn->os_index);
    }
    int want = threads ? threads : cnt;
    int *chosen = calloc((size_t)cnt, sizeof *chosen);
    sh->pus = malloc((size_t)want * sizeof *sh->pus);
    if (!chosen || !sh->pus) {
        free(core_rank), free(take), free(chosen), free(sh->pus);
        sh->pus = NULL;
        return err_set(e, "placement: out of memory");
    }
    /* round r takes the r-th PU of every core in the share */
    int got = 0;
    for (int r = 0; got < want; r++) {
        for (int x = 0; x < cnt && got < want; x++) {
            if (chosen[x])
                continue;
            int sib = 0;
            for (int y = 0; y < x; y++)
                sib += core_rank[take[y]] == core_rank[take[x]];
            if (sib == r) {
                chosen[x] = 1;
                got++;
            }
        }
    }
    /* Compute counted in cores: a core the worker runs on counts whole even with one of
     * its PUs chosen, since a sibling adds little; when workers split a core's PUs, each
     * gets its part of it. */
    bool whole_cores = n_cores >= m;
    sh->n_pus = 0;
    sh->cores = 0;
    for (int x = 0; x < cnt; x++) {
        if (!chosen[x])
            continue;
        int a = take[x], per_core = 0, earlier = 0;
        for (int b = 0; b < n; b++)
            per_core += core_rank[b] == core_rank[a];
        for (int y = 0; y < x; y++)
            earlier += chosen[y] && core_rank[take[y]] == core_rank[a];
        sh->pus[sh->n_pus++] = tn->pus[a]; /* take[] is ascending, so pus stay sorted */
        if (!whole_cores)
            sh->cores += 1.0 / per_core;
        else if (earlier == 0)
            sh->cores += 1.0;
    }
    free(core_rank), free(take), free(chosen);
    return 0;
}

/* Nodes for k workers. Fewer workers than usable nodes: the ones with most cores (then
 * most memory), in OS index order. More workers than usable nodes: round-robin over all
 * of them, so consecutive stages alternate nodes and the workers on one node split its
 * CPUs between them (cpu_share). */
static int choose_nodes(const struct topology *t, int k, int *node_of, struct errbuf *e)
{
    int *usable = malloc((size_t)t->n_nodes * sizeof *usable);
    bool *pick = calloc((size_t)t->n_nodes, sizeof *pick);
    if (!usable || !pick) {
        free(usable), free(pick);
        return err_set(e, "placement: out of memory");
    }
    int n_usable = 0;
    for (int i = 0; i < t->n_nodes; i++)
        if (topology_node_usable(&t->nodes[i]))
            usable[n_usable++] = i;
    if (k >= n_usable) {
        for (int w = 0; w < k; w++)
            node_of[w] = usable[w % n_usable];
    } else {
        for (int w = 0; w < k; w++) {
            int best = -1;
            for (int u = 0; u < n_usable; u++) {
                if (pick[u])
                    continue;
                const struct topo_node *a = &t->nodes[usable[u]];
                const struct topo_node *b = best >= 0 ? &t->nodes[usable[best]] : NULL;
                if (!b || a->n_cores > b->n_cores ||
                    (a->n_cores == b->n_cores && a->memory > b->memory))
                    best = u;
            }
            pick[best] = true;
        }
        int w = 0;
        for (int u = 0; u < n_usable; u++)
            if (pick[u])
                node_of[w++] = usable[u];
    }
    free(usable), free(pick);
    return 0;
}

/* ---- balance ---- */

struct stage_model {
    int n_layer, k;
    const uint64_t *prefix;   /* [n_layer + 1] cumulative layer bytes */
    uint64_t kv, embd, embd_row, output;
    bool tied;
    const double *cores;      /* [k] */
    const uint64_t *mem_cap;  /* [k] memory a stage may use; 0 = unconstrained */
};

static uint64_t stage_weights(const struct stage_model *m, int i, int a, int b)
{
    uint64_t w = m->prefix[b] - m->prefix[a];
    if (i == 0)
        w += m->embd;
    if (i == m->k - 1 && !(m->k == 1 && m->tied))
        w += m->output;
    return w;
}

/* The bytes a decode step streams through stage i: its layers, one row of the embedding
 * (not the table: a token reads its own row), the whole head, and the KV cache as far as
 * the sequences have filled it, counted at an eighth of its capacity: a cache is read up
 * to its current length, on average half of where the sequence ends, and most requests
 * end well before the context does. (A quarter, as counted before, put 27 of 2B-4T's 30
 * layers beside the F16 head's 656 MB at --ctx 1024 x 8 sequences, making the head's
 * stage the slower one by 30%: bench/scaling.sh, 8 streams, 64 vs 83 tok/s with the
 * split an eighth gives.) Stages with the same streamed bytes per core take the same
 * time per token, which is what a pipeline's throughput waits for. */
static double streamed_bytes(const struct stage_model *m, int i, int a, int b)
{
    uint64_t w = stage_weights(m, i, a, b);
    if (i == 0 && m->embd_row && m->embd_row < m->embd)
        w -= m->embd - m->embd_row;
    return (double)w + (double)m->kv * (double)(b - a) / 8.0;
}

static double stage_cost(const struct stage_model *m, int i, int a, int b)
{
    /* memory holds all of it: the whole table, a full cache */
    uint64_t resident = stage_weights(m, i, a, b) + m->kv * (uint64_t)(b - a);
    if (m->mem_cap[i] && resident > m->mem_cap[i])
        return INFINITY;
    return streamed_bytes(m, i, a, b) / m->cores[i];
}

/* Exact DP over split points: best[i][j] is the smallest possible slowest stage when
 * stages 0..i-1 cover layers [0, j). A second pass, limited to stages no slower than
 * that optimum, minimises the sum of squared costs, so that the stages that are not the
 * bottleneck are balanced too rather than left at whatever split came first.
 * Returns the optimum (INFINITY when memory caps rule out every split); split[i] is
 * where stage i starts, split[k] = n_layer. */
static double balance(const struct stage_model *m, int *split, struct errbuf *e)
{
    int n = m->n_layer, k = m->k;
    size_t cells = (size_t)(k + 1) * (size_t)(n + 1);
    double *best = malloc(cells * sizeof *best);
    double *sq = malloc(cells * sizeof *sq);
    int *from = malloc(cells * sizeof *from);
    if (!best || !sq || !from) {
        free(best), free(sq), free(from);
        err_set(e, "placement: out of memory");
        return NAN;
    }
#define AT(arr, i, j) arr[(size_t)(i) * (size_t)(n + 1) + (size_t)(j)]
    for (size_t c = 0; c < cells; c++)
        best[c] = sq[c] = INFINITY;
    AT(best, 0, 0) = 0;
    for (int i = 1; i <= k; i++)
        for (int j = i; j <= n - (k - i); j++)
            for (int a = i - 1; a < j; a++) {
                if (AT(best, i - 1, a) == INFINITY)
                    continue;
                double c = fmax(AT(best, i - 1, a), stage_cost(m, i - 1, a, j));
                if (c < AT(best, i, j))
                    AT(best, i, j) = c;
            }
    double opt = AT(best, k, n);
    if (opt < INFINITY) {
        double limit = opt * (1 + 1e-12);
        AT(sq, 0, 0) = 0;
        for (int i = 1; i <= k; i++)
            for (int j = i; j <= n - (k - i); j++)
                for (int a = i - 1; a < j; a++) {
                    if (AT(sq, i - 1, a) == INFINITY)
                        continue;
                    double c = stage_cost(m, i - 1, a, j);
                    if (c > limit)
                        continue;
                    double s = AT(sq, i - 1, a) + c * c;
                    if (s < AT(sq, i, j)) {
                        AT(sq, i, j) = s;
                        AT(from, i, j) = a;
                    }
                }
        split[k] = n;
        for (int i = k, j = n; i > 0; i--) {
            j = AT(from, i, j);
            split[i - 1] = j;
        }
    }
#undef AT
    free(best), free(sq), free(from);
    return opt;
}

/* ---- memory check ---- */

static int check_memory(const struct placement *p, const struct topology *t,
                        struct errbuf *e)
{
    for (int w = 0; w < p->n_workers; w++) {
        int node = p->w[w].node;
        bool first = true;
        for (int v = 0; v < w; v++)
            first &= p->w[v].node != node;
        if (!first)
            continue;
        uint64_t weights = 0, kv = 0;
        int sharing = 0;
        char who[256] = "";
        size_t len = 0;
        for (int v = w; v < p->n_workers; v++) {
            if (p->w[v].node != node)
                continue;
            weights += p->w[v].weight_bytes;
            kv += p->w[v].kv_bytes;
            if (len < sizeof who)
                len += (size_t)snprintf(who + len, sizeof who - len, "%s%d", sharing ? ", " : "",
                                        v);
            sharing++;
        }
        uint64_t have = topology_node(t, node)->memory;
        if (weights + kv > have)
            return err_set(e, "placement: worker%s %s on node %d need%s %.1f GiB (weights "
                              "%.1f GiB + KV %.1f GiB) but the node has %.1f GiB",
                           sharing > 1 ? "s" : "", who, node, sharing > 1 ? "" : "s",
                           (double)(weights + kv) / GIB, (double)weights / GIB,
                           (double)kv / GIB, (double)have / GIB);
    }
    return 0;
}

/* ---- plan ---- */

int placement_plan(struct placement *p, const struct topology *t,
                   const struct placement_request *req, struct errbuf *e)
{
    memset(p, 0, sizeof *p);
    int n = req->n_layer;
    if (n < 1 || n > PLACEMENT_MAX_LAYERS || !req->layer_bytes)
        return err_set(e, "placement: %d layers (expected 1 to %d)", n, PLACEMENT_MAX_LAYERS);
    if (req->n_workers < 0 || req->n_workers > PLACEMENT_MAX_WORKERS)
        return err_set(e, "placement: %d workers (expected 0 for auto, or 1 to %d)",
                       req->n_workers, PLACEMENT_MAX_WORKERS);
    if (req->threads < 0)
        return err_set(e, "placement: %d threads per worker", req->threads);
    int n_usable = topology_n_usable(t);
    if (n_usable == 0)
        return err_set(e, "placement: no NUMA node has both CPUs and memory");

    int map_l0[PLACEMENT_MAX_WORKERS], map_l1[PLACEMENT_MAX_WORKERS], k = 0;
    if (req->layer_map) {
        if (parse_layer_map(req->layer_map, n, map_l0, map_l1, &k, e) < 0)
            return -1;
        if (req->n_workers && req->n_workers != k)
            return err_set(e, "placement: %d workers requested but layer map \"%s\" has %d "
                              "ranges", req->n_workers, req->layer_map, k);
    } else {
        k = req->n_workers ? req->n_workers : (n_usable < n ? n_usable : n);
        if (k > n)
            return err_set(e, "placement: %d workers for %d layers: every worker needs at "
                              "least one layer", k, n);
    }

    int node_of[PLACEMENT_MAX_WORKERS];
    if (choose_nodes(t, k, node_of, e) < 0)
        return -1;

    p->w = calloc((size_t)k, sizeof *p->w);
    uint64_t *prefix = malloc((size_t)(n + 1) * sizeof *prefix);
    if (!p->w || !prefix) {
        free(prefix);
        placement_free(p);
        return err_set(e, "placement: out of memory");
    }
    p->n_workers = k;
    p->n_layer = n;
    double cores[PLACEMENT_MAX_WORKERS];
    uint64_t mem_cap[PLACEMENT_MAX_WORKERS];
    int rc = 0;
    for (int w = 0; w < k && rc == 0; w++) {
        int m = 0, j = 0;
        for (int v = 0; v < k; v++) {
            if (node_of[v] != node_of[w])
                continue;
            j += v < w;
            m++;
        }
        if (req->share_node_cpus)
            j = 0, m = 1;
        const struct topo_node *tn = &t->nodes[node_of[w]];
        struct share sh = {0};
        rc = cpu_share(tn, j, m, req->threads, w, &sh, e);
        if (rc == 0) {
            p->w[w].node = tn->os_index;
            p->w[w].pus = sh.pus;
            p->w[w].n_pus = sh.n_pus;
            p->w[w].threads = sh.n_pus;
            p->w[w].cores = sh.cores;
            cores[w] = sh.cores;
            /* a node shared by several workers is checked on the sum afterwards */
            mem_cap[w] = tn->memory;
        }
    }
    if (rc < 0) {
        free(prefix);
        placement_free(p);
        return -1;
    }

    prefix[0] = 0;
    for (int l = 0; l < n; l++)
        prefix[l + 1] = prefix[l] + req->layer_bytes[l];
    struct stage_model sm = {
        .n_layer = n, .k = k, .prefix = prefix, .kv = req->kv_bytes_per_layer,
        .embd = req->embd_bytes, .embd_row = req->embd_row_bytes, .output = req->output_bytes,
        .tied = req->output_tied,
        .cores = cores, .mem_cap = mem_cap,
    };
    int split[PLACEMENT_MAX_WORKERS + 1];
    if (req->layer_map) {
        for (int w = 0; w < k; w++)
            split[w] = map_l0[w];
        split[k] = n;
    } else {
        double opt = balance(&sm, split, e);
        if (isnan(opt))
            rc = -1;
        else if (opt == INFINITY) {
            /* nothing fits: plan without the caps so the refusal can name the numbers
             * of the best-balanced plan */
            memset(mem_cap, 0, sizeof mem_cap);
            if (isnan(balance(&sm, split, e)))
                rc = -1;
        }
    }
    for (int w = 0; w < k && rc == 0; w++) {
        struct placement_worker *pw = &p->w[w];
        pw->l0 = split[w];
        pw->l1 = split[w + 1];
        pw->has_embedding = w == 0;
        pw->has_output = w == k - 1;
        pw->weight_bytes = stage_weights(&sm, w, pw->l0, pw->l1);
        pw->kv_bytes = req->kv_bytes_per_layer * (uint64_t)(pw->l1 - pw->l0);
        pw->streamed_bytes = streamed_bytes(&sm, w, pw->l0, pw->l1);
    }
    free(prefix);
    if (rc == 0)
        rc = check_memory(p, t, e);
    if (rc < 0)
        placement_free(p);
    return rc;
}

void placement_free(struct placement *p)
{
    for (int w = 0; w < p->n_workers && p->w; w++)
        free(p->w[w].pus);
    free(p->w);
    memset(p, 0, sizeof *p);
}

double placement_stage_cost(const struct placement_worker *w)
{
    return w->streamed_bytes / w->cores;
}

void placement_describe(const struct placement *p, FILE *f)
{
    fprintf(f, "%-6s %-8s %-16s %-7s %-9s %11s %9s %-9s %-6s %s\n", "worker", "node", "cpus",
            "threads", "layers", "weights MiB", "KV MiB", "embedding", "output", "ranks");
    for (int w = 0; w < p->n_workers; w++) {
        const struct placement_worker *pw = &p->w[w];
        char cpus[256], layers[32];
        if (format_cpu_ranges(cpus, sizeof cpus, pw->pus, pw->n_pus) >= (int)sizeof cpus)
            memcpy(cpus + sizeof cpus - 4, "...", 4);
        snprintf(layers, sizeof layers, "%d-%d", pw->l0, pw->l1 - 1);
        /* a tensor-parallel stage's ranks may sit on several nodes */
        char nodes[64] = "";
        size_t len = 0;
        for (int r = 0; r < (pw->tp > 1 ? pw->tp : 1) && len < sizeof nodes; r++) {
            int node = pw->tp > 1 ? pw->tp_nodes[r] : pw->node;
            bool again = false;
            for (int q = 0; q < r; q++)
                again |= pw->tp_nodes[q] == node;
            if (!again)
                len += (size_t)snprintf(nodes + len, sizeof nodes - len, "%s%d", len ? "," : "", node);
        }
        fprintf(f, "%-6d %-8s %-16s %-7d %-9s %11.1f %9.1f %-9s %-6s %d\n", w, nodes, cpus,
                pw->threads, layers, (double)pw->weight_bytes / MIB,
                (double)pw->kv_bytes / MIB, pw->has_embedding ? "yes" : "-",
                pw->has_output ? "yes" : "-", pw->tp > 1 ? pw->tp : 1);
    }
}

/* json-c returns NULL only when out of memory; one check at the end would miss a
 * dropped member, so each add is checked. */
static bool add(struct json_object *o, const char *key, struct json_object *v)
{
    if (!v)
        return false;
    if (json_object_object_add(o, key, v) < 0) {
        json_object_put(v);
        return false;
    }
    return true;
}

static bool append(struct json_object *a, struct json_object *v)
{
    if (!v)
        return false;
    if (json_object_array_add(a, v) < 0) {
        json_object_put(v);
        return false;
    }
    return true;
}

static struct json_object *worker_json(const struct placement_worker *pw, int w)
{
    struct json_object *o = json_object_new_object();
    struct json_object *list = json_object_new_array();
    struct json_object *layers = json_object_new_array();
    char cpus[4096];
    bool ok = o && list && layers;
    for (int i = 0; ok && i < pw->n_pus; i++)
        ok = append(list, json_object_new_int(pw->pus[i]));
    ok = ok && append(layers, json_object_new_int(pw->l0)) &&
         append(layers, json_object_new_int(pw->l1));
    if (format_cpu_ranges(cpus, sizeof cpus, pw->pus, pw->n_pus) >= (int)sizeof cpus)
        cpus[0] = 0; /* cpu_list has them all */
    ok = ok && add(o, "worker", json_object_new_int(w)) &&
         add(o, "node", json_object_new_int(pw->node)) &&
         add(o, "cpus", json_object_new_string(cpus));
    if (ok) {
        ok = add(o, "cpu_list", list);
        list = NULL;
    }
    ok = ok && add(o, "threads", json_object_new_int(pw->threads));
    ok = ok && add(o, "tensor_parallel", json_object_new_int(pw->tp > 1 ? pw->tp : 1));
    struct json_object *tp_nodes = json_object_new_array();
    for (int r = 0; ok && tp_nodes && r < (pw->tp > 1 ? pw->tp : 1); r++)
        ok = append(tp_nodes, json_object_new_int(pw->tp > 1 ? pw->tp_nodes[r] : pw->node));
    ok = ok && add(o, "rank_nodes", tp_nodes);
    if (ok) {
        ok = add(o, "layers", layers);
        layers = NULL;
    }
    ok = ok && add(o, "embedding", json_object_new_boolean(pw->has_embedding)) &&
         add(o, "output", json_object_new_boolean(pw->has_output)) &&
         add(o, "weight_bytes", json_object_new_int64((int64_t)pw->weight_bytes)) &&
         add(o, "kv_bytes", json_object_new_int64((int64_t)pw->kv_bytes));
    json_object_put(list);
    json_object_put(layers);
    if (!ok) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

struct json_object *placement_to_json(const struct placement *p)
{
    struct json_object *root = json_object_new_object();
    struct json_object *workers = json_object_new_array();
    bool ok = root && workers && add(root, "n_layer", json_object_new_int(p->n_layer));
    for (int w = 0; ok && w < p->n_workers; w++)
        ok = append(workers, worker_json(&p->w[w], w));
    if (ok) {
        ok = add(root, "workers", workers);
        workers = NULL;
    }
    json_object_put(workers);
    if (!ok) {
        json_object_put(root);
        return NULL;
    }
    return root;
}

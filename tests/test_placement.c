/* Topology discovery, the placement plan and the worker's binding helpers. Plans run on
 * hwloc synthetic and XML topologies, so multi-node machines are exercised anywhere;
 * binding runs on this machine and only ever asks for node 0 and PU 0. */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <math.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/placement.h"
#include "daemon/topology.h"
#include "kernels/threadpool.h"
#include "tests/check.h"
#include "tests/util.h"
#include "worker/numa_bind.h"

#define MB 1000000ull
#define N_LAYER 30

/* 2B-4T-like: 30 layers of ~17.3 MB (a few pages apart, so that ties are rare), a
 * 656 MB F16 embedding tied to the output. */
static uint64_t layer_bytes[N_LAYER];
static const uint64_t EMBD = 656 * MB;

static void init_layers(void)
{
    for (int l = 0; l < N_LAYER; l++)
        layer_bytes[l] = 17300000ull + (uint64_t)(l % 3) * 4096;
}

static struct placement_request req_2b4t(void)
{
    struct placement_request r = {
        .n_layer = N_LAYER, .layer_bytes = layer_bytes, .embd_bytes = EMBD,
        .output_bytes = EMBD, .output_tied = true, .kv_bytes_per_layer = 0,
    };
    return r;
}

static int load(struct topology *t, const char *src)
{
    struct errbuf e = {{0}};
    int rc = topology_load(t, src, &e);
    CHECK(rc == 0, "topology_load(%s): %s", src ? src : "NULL", e.msg);
    return rc;
}

/* Writes an hwloc XML machine: one package per node, nodes[i] cores of pus_per_core PUs
 * and mem[i] bytes. At most 32 PUs, so every cpuset is one hex word. */
static int write_xml(const char *path, int n, const int *cores, int pus_per_core,
                     const uint64_t *mem)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    unsigned all = 0, pu = 0;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < cores[i] * pus_per_core; c++)
            all |= 1u << pu++;
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<!DOCTYPE topology SYSTEM \"hwloc2.dtd\">\n<topology version=\"2.0\">\n"
               "<object type=\"Machine\" os_index=\"0\" cpuset=\"0x%x\" complete_cpuset=\"0x%x\""
               " allowed_cpuset=\"0x%x\" nodeset=\"0x%x\" complete_nodeset=\"0x%x\""
               " allowed_nodeset=\"0x%x\">\n",
            all, all, all, (1u << n) - 1, (1u << n) - 1, (1u << n) - 1);
    pu = 0;
    int core_id = 0;
    for (int i = 0; i < n; i++) {
        unsigned set = 0;
        for (int c = 0; c < cores[i] * pus_per_core; c++)
            set |= 1u << (pu + (unsigned)c);
        fprintf(f, "<object type=\"Package\" os_index=\"%d\" cpuset=\"0x%x\" complete_cpuset="
                   "\"0x%x\" nodeset=\"0x%x\" complete_nodeset=\"0x%x\">\n",
                i, set, set, 1u << i, 1u << i);
        fprintf(f, "<object type=\"NUMANode\" os_index=\"%d\" cpuset=\"0x%x\" complete_cpuset="
                   "\"0x%x\" nodeset=\"0x%x\" complete_nodeset=\"0x%x\" local_memory=\"%llu\"/>\n",
                i, set, set, 1u << i, 1u << i, (unsigned long long)mem[i]);
        for (int c = 0; c < cores[i]; c++) {
            unsigned cs = 0;
            for (int k = 0; k < pus_per_core; k++)
                cs |= 1u << (pu + (unsigned)k);
            fprintf(f, "<object type=\"Core\" os_index=\"%d\" cpuset=\"0x%x\" complete_cpuset="
                       "\"0x%x\" nodeset=\"0x%x\" complete_nodeset=\"0x%x\">\n",
                    core_id++, cs, cs, 1u << i, 1u << i);
            for (int k = 0; k < pus_per_core; k++, pu++)
                fprintf(f, "<object type=\"PU\" os_index=\"%u\" cpuset=\"0x%x\" complete_cpuset="
                           "\"0x%x\" nodeset=\"0x%x\" complete_nodeset=\"0x%x\"/>\n",
                        pu, 1u << pu, 1u << pu, 1u << i, 1u << i);
            fprintf(f, "</object>\n");
        }
        fprintf(f, "</object>\n");
    }
    fprintf(f, "</object>\n</topology>\n");
    return fclose(f);
}

/* Every layer in exactly one worker, in order; flags on the first and last stage. */
static void check_cover(const struct placement *p, int n_layer)
{
    CHECK(p->n_workers > 0, "no workers");
    if (p->n_workers <= 0)
        return;
    CHECK(p->w[0].l0 == 0, "first range starts at %d", p->w[0].l0);
    CHECK(p->w[p->n_workers - 1].l1 == n_layer, "last range ends at %d",
          p->w[p->n_workers - 1].l1);
    for (int w = 0; w < p->n_workers; w++) {
        CHECK(p->w[w].l1 > p->w[w].l0, "worker %d has range [%d, %d)", w, p->w[w].l0,
              p->w[w].l1);
        if (w > 0)
            CHECK(p->w[w].l0 == p->w[w - 1].l1, "worker %d starts at %d, worker %d ends at %d",
                  w, p->w[w].l0, w - 1, p->w[w - 1].l1);
        CHECK(p->w[w].has_embedding == (w == 0), "worker %d embedding flag", w);
        CHECK(p->w[w].has_output == (w == p->n_workers - 1), "worker %d output flag", w);
        CHECK(p->w[w].threads == p->w[w].n_pus, "worker %d threads %d, pus %d", w,
              p->w[w].threads, p->w[w].n_pus);
    }
}

static double plan_max_cost(const struct placement *p)
{
    double m = 0;
    for (int w = 0; w < p->n_workers; w++)
        m = fmax(m, placement_stage_cost(&p->w[w]));
    return m;
}

/* Cost of stage i of k holding [a, b), by the definition the plan documents. */
static double brute_cost(const struct placement_request *r, const struct placement *p, int i,
                         int a, int b)
{
    double bytes = 0;
    for (int l = a; l < b; l++)
        bytes += (double)r->layer_bytes[l] + (double)r->kv_bytes_per_layer / 8;
    if (i == 0)
        bytes += (double)(r->embd_row_bytes ? r->embd_row_bytes : r->embd_bytes);
    if (i == p->n_workers - 1 && !(p->n_workers == 1 && r->output_tied))
        bytes += r->output_bytes;
    return (double)bytes / p->w[i].cores;
}

/* The smallest slowest stage over every way to split the layers among the plan's
 * workers (2 or 3 of them), each worker keeping its cores. */
static double brute_optimum(const struct placement_request *r, const struct placement *p)
{
    int n = r->n_layer;
    double best = INFINITY;
    if (p->n_workers == 2) {
        for (int s = 1; s < n; s++)
            best = fmin(best, fmax(brute_cost(r, p, 0, 0, s), brute_cost(r, p, 1, s, n)));
    } else if (p->n_workers == 3) {
        for (int s = 1; s < n; s++)
            for (int u = s + 1; u < n; u++)
                best = fmin(best, fmax(fmax(brute_cost(r, p, 0, 0, s), brute_cost(r, p, 1, s, u)),
                                       brute_cost(r, p, 2, u, n)));
    }
    return best;
}

static void check_pus(const struct placement_worker *w, int first, int count, const char *what)
{
    bool ok = w->n_pus == count;
    for (int i = 0; ok && i < count; i++)
        ok = w->pus[i] == first + i;
    char got[128];
    format_cpu_ranges(got, sizeof got, w->pus, w->n_pus);
    CHECK(ok, "%s: cpus %s, expected %d-%d", what, got, first, first + count - 1);
}

static void test_topology(void)
{
    struct topology t;
    if (load(&t, "synthetic:pack:2 [numa(memory=8GB)] core:4 pu:1") == 0) {
        CHECK(t.n_nodes == 2, "%d nodes", t.n_nodes);
        CHECK(t.n_pus == 8, "%d PUs", t.n_pus);
        for (int i = 0; i < t.n_nodes && i < 2; i++) {
            const struct topo_node *n = &t.nodes[i];
            CHECK(n->os_index == i, "node %d os_index %d", i, n->os_index);
            CHECK(n->n_pus == 4 && n->n_cores == 4, "node %d: %d PUs %d cores", i, n->n_pus,
                  n->n_cores);
            CHECK(n->n_pus == 4 && n->pus[0] == 4 * i && n->pus[3] == 4 * i + 3,
                  "node %d PUs", i);
            CHECK(n->memory == 8000000000ull, "node %d memory %llu", i,
                  (unsigned long long)n->memory);
            CHECK(n->package == i, "node %d package %d", i, n->package);
            CHECK(topology_node_usable(n), "node %d unusable", i);
        }
        topology_free(&t);
    }

    /* far memory off the machine: reported, with no CPUs; hyperthreads grouped by core */
    if (load(&t, "synthetic:[numa(memory=1GB)] pack:2 [numa(memory=2GB)] core:2 pu:2") == 0) {
        CHECK(t.n_nodes == 3, "%d nodes", t.n_nodes);
        if (t.n_nodes == 3) {
            CHECK(t.nodes[2].n_pus == 0 && t.nodes[2].memory == 1000000000ull,
                  "far node: %d PUs, %llu bytes", t.nodes[2].n_pus,
                  (unsigned long long)t.nodes[2].memory);
            CHECK(t.nodes[2].package == -1, "far node package %d", t.nodes[2].package);
            CHECK(!topology_node_usable(&t.nodes[2]), "far node usable");
            CHECK(t.nodes[0].n_pus == 4 && t.nodes[0].n_cores == 2, "node 0: %d PUs %d cores",
                  t.nodes[0].n_pus, t.nodes[0].n_cores);
            CHECK(topology_n_usable(&t) == 2, "%d usable", topology_n_usable(&t));
        }
        topology_free(&t);
    }

    struct errbuf e = {{0}};
    CHECK(topology_load(&t, "synthetic:pack:2 bogus:3", &e) < 0, "bad synthetic accepted");
    CHECK(strstr(e.msg, "topology: synthetic description") != NULL, "message: %s", e.msg);
    CHECK(topology_load(&t, "nonsense", &e) < 0, "bad source accepted");
    CHECK(strstr(e.msg, "expected synthetic:") != NULL, "message: %s", e.msg);
    CHECK(topology_load(&t, "xml:/nonexistent/topo.xml", &e) < 0, "missing xml accepted");
    printf("refused: %s\n", e.msg);

    char buf[64];
    int pus[] = {0, 1, 2, 3, 8, 10, 11};
    format_cpu_ranges(buf, sizeof buf, pus, 7);
    CHECK(strcmp(buf, "0-3,8,10-11") == 0, "ranges %s", buf);
}

static void test_two_nodes(void)
{
    struct topology t;
    if (load(&t, "synthetic:pack:2 [numa(memory=8GB)] core:4 pu:1") < 0)
        return;
    struct errbuf e = {{0}};
    struct placement p;

    /* auto: one worker per node, each on its node's PUs */
    struct placement_request r = req_2b4t();
    int rc = placement_plan(&p, &t, &r, &e);
    CHECK(rc == 0, "plan: %s", e.msg);
    if (rc == 0) {
        CHECK(p.n_workers == 2, "%d workers", p.n_workers);
        check_cover(&p, N_LAYER);
        if (p.n_workers == 2) {
            CHECK(p.w[0].node == 0 && p.w[1].node == 1, "nodes %d %d", p.w[0].node, p.w[1].node);
            check_pus(&p.w[0], 0, 4, "worker 0");
            check_pus(&p.w[1], 4, 4, "worker 1");
            CHECK(p.w[0].threads == 4 && p.w[1].threads == 4, "threads");
            /* balanced: the bytes/core of the two stages differ by at most a layer's worth */
            double c0 = placement_stage_cost(&p.w[0]), c1 = placement_stage_cost(&p.w[1]);
            CHECK(fabs(c0 - c1) <= 17400000.0 / 4, "costs %.0f %.0f", c0, c1);
            double bf = brute_optimum(&r, &p);
            CHECK(fabs(plan_max_cost(&p) - bf) <= 1e-9 * bf, "plan %.3f, brute force %.3f",
                  plan_max_cost(&p), bf);
            CHECK(p.w[0].weight_bytes == EMBD + 15 * 17300000ull + 15 * 4096ull,
                  "stage 0 weights %llu", (unsigned long long)p.w[0].weight_bytes);
            printf("2B-4T on 2 x 4 cores:\n");
            placement_describe(&p, stdout);
        }
        placement_free(&p);
    }

    /* a decode step reads one row of the embedding but the whole head: counting the row,
     * the first stage takes the layers the head costs the last one (2B-4T: a 656 MB head
     * against 17.3 MB layers puts nearly all of them first); the whole table still counts
     * as memory */
    r = req_2b4t();
    r.embd_row_bytes = 2560 * 2;
    rc = placement_plan(&p, &t, &r, &e);
    CHECK(rc == 0, "plan: %s", e.msg);
    if (rc == 0) {
        check_cover(&p, N_LAYER);
        CHECK(p.n_workers == 2 && p.w[0].l1 == N_LAYER - 1,
              "streamed bytes: stage 0 ends at %d (want %d: the head alone outweighs the "
              "other layers)", p.w[0].l1, N_LAYER - 1);
        double bf = brute_optimum(&r, &p);
        CHECK(fabs(plan_max_cost(&p) - bf) <= 1e-9 * bf, "plan %.3f, brute force %.3f",
              plan_max_cost(&p), bf);
        uint64_t want = EMBD;
        for (int l = 0; l < N_LAYER - 1; l++)
            want += layer_bytes[l];
        CHECK(p.w[0].weight_bytes == want, "stage 0 holds the whole table: %llu, want %llu",
              (unsigned long long)p.w[0].weight_bytes, (unsigned long long)want);
        placement_free(&p);
    }

    /* KV cache counts in the balance and in the memory fit */
    r.kv_bytes_per_layer = 21 * MB;
    r.embd_bytes = 900 * MB; /* a heavier first stage moves layers to the second */
    r.embd_row_bytes = 0;    /* (as when all of it is read) */
    r.output_bytes = 0;
    r.output_tied = false;
    rc = placement_plan(&p, &t, &r, &e);
    CHECK(rc == 0, "plan: %s", e.msg);
    if (rc == 0) {
        check_cover(&p, N_LAYER);
        CHECK(p.n_workers == 2 && p.w[0].l1 < 15, "stage 0 ends at %d", p.w[0].l1);
        double bf = brute_optimum(&r, &p);
        CHECK(fabs(plan_max_cost(&p) - bf) <= 1e-9 * bf, "plan %.3f, brute force %.3f",
              plan_max_cost(&p), bf);
        CHECK(p.w[1].kv_bytes == (uint64_t)(p.w[1].l1 - p.w[1].l0) * 21 * MB, "KV bytes");
        placement_free(&p);
    }

    /* manual map */
    r = req_2b4t();
    r.layer_map = "0-9,10-29";
    rc = placement_plan(&p, &t, &r, &e);
    CHECK(rc == 0, "plan: %s", e.msg);
    if (rc == 0) {
        CHECK(p.n_workers == 2 && p.w[0].l0 == 0 && p.w[0].l1 == 10 && p.w[1].l0 == 10 &&
              p.w[1].l1 == 30, "map not honoured");
        check_cover(&p, N_LAYER);
        placement_free(&p);
    }
    struct {
        const char *map, *needle;
    } bad[] = {
        {"0-9,11-29", "layer 10 is in no range"},
        {"0-40", "goes past the last layer, 29"},
        {"x", "expected a layer range"},
        {"0-9,9-29", "already holds"},
        {"0-9,10-28", "layer 29 is in no range"},
        {"0-9,10-27", "layers 28-29 are in no range"},
        {"0-4,8-29", "layers 5-7 are in no range"},
        {"0-9,", "expected a layer range"},
        {"", "empty"},
        {"0-9,10-29,", "expected a layer range"},
        {"9-0,10-29", "ends before it starts"},
        {"0-9;10-29", "unexpected"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r.layer_map = bad[i].map;
        e.msg[0] = 0;
        rc = placement_plan(&p, &t, &r, &e);
        CHECK(rc < 0, "map \"%s\" accepted", bad[i].map);
        if (rc == 0)
            placement_free(&p);
        CHECK(strstr(e.msg, bad[i].needle) != NULL, "map \"%s\": %s", bad[i].map, e.msg);
        if (i < 3)
            printf("refused: %s\n", e.msg);
    }
    r.layer_map = "0-9,10-29";
    r.n_workers = 3;
    CHECK(placement_plan(&p, &t, &r, &e) < 0 && strstr(e.msg, "has 2 ranges"),
          "map/worker count mismatch: %s", e.msg);

    /* 3 workers on 2 nodes: round-robin, node 0's cores split between workers 0 and 2 */
    r = req_2b4t();
    r.n_workers = 3;
    rc = placement_plan(&p, &t, &r, &e);
    CHECK(rc == 0, "plan: %s", e.msg);
    if (rc == 0) {
        CHECK(p.n_workers == 3, "%d workers", p.n_workers);
        check_cover(&p, N_LAYER);
        if (p.n_workers == 3) {
            CHECK(p.w[0].node == 0 && p.w[1].node == 1 && p.w[2].node == 0, "nodes %d %d %d",
                  p.w[0].node, p.w[1].node, p.w[2].node);
            check_pus(&p.w[0], 0, 2, "worker 0 of 3");
            check_pus(&p.w[1], 4, 4, "worker 1 of 3");
            check_pus(&p.w[2], 2, 2, "worker 2 of 3");
            CHECK(p.w[0].cores == 2 && p.w[1].cores == 4, "cores %g %g", p.w[0].cores,
                  p.w[1].cores);
            double bf = brute_optimum(&r, &p);
            CHECK(fabs(plan_max_cost(&p) - bf) <= 1e-9 * bf, "plan %.3f, brute force %.3f",
                  plan_max_cost(&p), bf);
            printf("3 workers on 2 nodes:\n");
            placement_describe(&p, stdout);
        }
        placement_free(&p);
    }

    /* 1 worker: everything, the tied embedding counted once */
    r = req_2b4t();
    r.n_workers = 1;
    rc = placement_plan(&p, &t, &r, &e);
    CHECK(rc == 0, "plan: %s", e.msg);
    if (rc == 0) {
        CHECK(p.n_workers == 1 && p.w[0].l0 == 0 && p.w[0].l1 == N_LAYER, "1 worker");
        check_cover(&p, N_LAYER);
        uint64_t sum = EMBD;
        for (int l = 0; l < N_LAYER; l++)
            sum += layer_bytes[l];
        CHECK(p.w[0].weight_bytes == sum, "weights %llu, expected %llu",
              (unsigned long long)p.w[0].weight_bytes, (unsigned long long)sum);
        placement_free(&p);
    }

    /* more workers than layers, bad thread count */
    r = req_2b4t();
    r.n_layer = 3;
    r.n_workers = 4;
    CHECK(placement_plan(&p, &t, &r, &e) < 0 && strstr(e.msg, "at least one layer"),
          "4 workers on 3 layers: %s", e.msg);
    r.n_workers = 0; /* auto is capped at n_layer */
    r.n_layer = 1;
    rc = placement_plan(&p, &t, &r, &e);
    CHECK(rc == 0 && p.n_workers == 1, "auto with 1 layer: %s", e.msg);
    if (rc == 0)
        placement_free(&p);
    r = req_2b4t();
    r.threads = 5;
    CHECK(placement_plan(&p, &t, &r, &e) < 0 && strstr(e.msg, "5 threads"), "5 threads: %s",
          e.msg);

    /* JSON */
    r = req_2b4t();
    rc = placement_plan(&p, &t, &r, &e);
    if (rc == 0) {
        struct json_object *j = placement_to_json(&p);
        CHECK(j != NULL, "json");
        if (j) {
            const char *s = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN);
            struct json_object *ws = NULL, *w1 = NULL, *v = NULL;
            CHECK(json_object_object_get_ex(j, "workers", &ws) &&
                      json_object_array_length(ws) == 2,
                  "json workers: %s", s);
            w1 = ws ? json_object_array_get_idx(ws, 1) : NULL;
            CHECK(w1 && json_object_object_get_ex(w1, "cpus", &v) &&
                      strcmp(json_object_get_string(v), "4-7") == 0,
                  "json cpus: %s", s);
            CHECK(w1 && json_object_object_get_ex(w1, "output", &v) && json_object_get_boolean(v),
                  "json output flag: %s", s);
            CHECK(w1 && json_object_object_get_ex(w1, "weight_bytes", &v) &&
                      (uint64_t)json_object_get_int64(v) == p.w[1].weight_bytes,
                  "json weight bytes: %s", s);
            json_object_put(j);
        }
        /* the table, read back */
        char path[] = "/tmp/test_placement_XXXXXX";
        int fd = mkstemp(path);
        FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
        CHECK(f != NULL, "temp file");
        if (f) {
            placement_describe(&p, f);
            fclose(f);
            size_t len;
            char *text = slurp(path, &len);
            CHECK(text && strstr(text, "0-3") && strstr(text, "4-7") && strstr(text, "0-14") &&
                      strstr(text, "15-29"),
                  "table:\n%s", text ? text : "(unreadable)");
            free(text);
            unlink(path);
        }
        placement_free(&p);
    }
    topology_free(&t);
}

static void test_hyperthreads(void)
{
    struct topology t;
    if (load(&t, "synthetic:pack:2 [numa(memory=8GB)] core:4 pu:2") < 0)
        return;
    struct errbuf e = {{0}};
    struct placement p;
    struct placement_request r = req_2b4t();
    r.threads = 4; /* one per core before any sibling */
    int rc = placement_plan(&p, &t, &r, &e);
    CHECK(rc == 0, "plan: %s", e.msg);
    if (rc == 0) {
        bool ok = p.n_workers == 2;
        for (int w = 0; ok && w < 2; w++) {
            ok = p.w[w].n_pus == 4 && p.w[w].threads == 4 && p.w[w].cores == 4;
            for (int i = 0; ok && i < 4; i++)
                ok = p.w[w].pus[i] == 8 * w + 2 * i;
        }
        char got[64];
        format_cpu_ranges(got, sizeof got, p.w[0].pus, p.w[0].n_pus);
        CHECK(ok, "4 threads on 4 cores x 2 PUs: worker 0 on %s", got);
        placement_free(&p);
    }
    r.threads = 0; /* all 8 PUs, 4 cores */
    r.n_workers = 4; /* two per node: each gets 2 whole cores */
    rc = placement_plan(&p, &t, &r, &e);
    CHECK(rc == 0, "plan: %s", e.msg);
    if (rc == 0) {
        check_cover(&p, N_LAYER);
        CHECK(p.n_workers == 4, "%d workers", p.n_workers);
        if (p.n_workers == 4) {
            check_pus(&p.w[0], 0, 4, "worker 0 of 4");
            check_pus(&p.w[1], 8, 4, "worker 1 of 4");
            check_pus(&p.w[2], 4, 4, "worker 2 of 4");
            CHECK(p.w[0].cores == 2, "cores %g", p.w[0].cores);
        }
        placement_free(&p);
    }
    topology_free(&t);

    /* more workers than cores: they split a core's PUs and count half a core each */
    if (load(&t, "synthetic:pack:1 [numa(memory=8GB)] core:1 pu:2") < 0)
        return;
    r = req_2b4t();
    r.n_workers = 2;
    rc = placement_plan(&p, &t, &r, &e);
    CHECK(rc == 0, "plan: %s", e.msg);
    if (rc == 0) {
        check_cover(&p, N_LAYER);
        CHECK(p.n_workers == 2 && p.w[0].n_pus == 1 && p.w[0].pus[0] == 0 &&
                  p.w[1].pus[0] == 1 && p.w[0].cores == 0.5 && p.w[1].cores == 0.5,
              "two workers on one core");
        placement_free(&p);
    }
    r.n_workers = 3;
    CHECK(placement_plan(&p, &t, &r, &e) < 0 && strstr(e.msg, "node 0 has 2 CPUs for 3 workers"),
          "3 workers on 2 PUs: %s", e.msg);
    /* sharing: every worker of the node runs on all of it, and the layers balance by
     * bytes alone */
    r.share_node_cpus = true;
    rc = placement_plan(&p, &t, &r, &e);
    CHECK(rc == 0, "plan: %s", e.msg);
    if (rc == 0) {
        check_cover(&p, N_LAYER);
        bool all = p.n_workers == 3;
        for (int w = 0; all && w < 3; w++)
            all = p.w[w].n_pus == 2 && p.w[w].pus[0] == 0 && p.w[w].pus[1] == 1 &&
                  p.w[w].threads == 2 && p.w[w].cores == 1;
        CHECK(all, "three workers sharing one core's two PUs");
        placement_free(&p);
    }
    topology_free(&t);
}

static void test_unequal(void)
{
    char path[] = "/tmp/test_placement_topo_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    if (fd < 0)
        return;
    close(fd);
    int cores[] = {8, 2};
    uint64_t mem[] = {16000000000ull, 16000000000ull};
    CHECK(write_xml(path, 2, cores, 1, mem) == 0, "write xml");
    char src[128];
    snprintf(src, sizeof src, "xml:%s", path);
    struct topology t;
    if (load(&t, src) == 0) {
        CHECK(t.n_nodes == 2 && t.nodes[0].n_cores == 8 && t.nodes[1].n_cores == 2,
              "xml nodes");
        struct errbuf e = {{0}};
        struct placement p;
        struct placement_request r = req_2b4t();
        int rc = placement_plan(&p, &t, &r, &e);
        CHECK(rc == 0, "plan: %s", e.msg);
        if (rc == 0) {
            check_cover(&p, N_LAYER);
            CHECK(p.n_workers == 2, "%d workers", p.n_workers);
            if (p.n_workers == 2) {
                int n0 = p.w[0].l1 - p.w[0].l0, n1 = p.w[1].l1 - p.w[1].l0;
                CHECK(n0 > n1, "node0 (8 cores) %d layers, node1 (2 cores) %d", n0, n1);
                check_pus(&p.w[0], 0, 8, "8-core worker");
                check_pus(&p.w[1], 8, 2, "2-core worker");
                double bf = brute_optimum(&r, &p);
                CHECK(fabs(plan_max_cost(&p) - bf) <= 1e-9 * bf, "plan %.3f, brute force %.3f",
                      plan_max_cost(&p), bf);
                printf("8 + 2 cores:\n");
                placement_describe(&p, stdout);
            }
            placement_free(&p);
        }
        /* one worker goes to the bigger node */
        r.n_workers = 1;
        rc = placement_plan(&p, &t, &r, &e);
        CHECK(rc == 0 && p.w[0].node == 0, "1 worker on node %d: %s", rc == 0 ? p.w[0].node : -1,
              e.msg);
        if (rc == 0)
            placement_free(&p);
        topology_free(&t);
    }

    /* a node without memory is reported but unused */
    uint64_t mem2[] = {16000000000ull, 0};
    CHECK(write_xml(path, 2, cores, 1, mem2) == 0, "write xml");
    if (load(&t, src) == 0) {
        CHECK(t.n_nodes == 2 && !topology_node_usable(&t.nodes[1]), "memoryless node usable");
        struct errbuf e = {{0}};
        struct placement p;
        struct placement_request r = req_2b4t();
        int rc = placement_plan(&p, &t, &r, &e);
        CHECK(rc == 0 && p.n_workers == 1 && p.w[0].node == 0, "plan without node 1: %s", e.msg);
        if (rc == 0)
            placement_free(&p);
        topology_free(&t);
    }
    unlink(path);
}

static void test_no_fit(void)
{
    struct topology t;
    if (load(&t, "synthetic:pack:2 [numa(memory=1GB)] core:4 pu:1") < 0)
        return;
    struct errbuf e = {{0}};
    struct placement p;
    struct placement_request r = req_2b4t();
    r.kv_bytes_per_layer = 21 * MB;
    int rc = placement_plan(&p, &t, &r, &e);
    CHECK(rc < 0, "a model bigger than the machine was placed");
    if (rc == 0)
        placement_free(&p);
    CHECK(strstr(e.msg, "placement: worker") && strstr(e.msg, "needs") &&
              strstr(e.msg, "GiB (weights") && strstr(e.msg, "+ KV") &&
              strstr(e.msg, "but the node has 0.9 GiB"),
          "message: %s", e.msg);
    printf("refused: %s\n", e.msg);

    /* it fits without the KV cache, even though an even split of bytes/core would too */
    r.kv_bytes_per_layer = 0;
    rc = placement_plan(&p, &t, &r, &e);
    CHECK(rc == 0, "plan without KV: %s", e.msg);
    if (rc == 0)
        placement_free(&p);

    /* a manual map that overloads node 0 */
    r.layer_map = "0-27,28-29";
    rc = placement_plan(&p, &t, &r, &e);
    CHECK(rc < 0 && strstr(e.msg, "worker 0 on node 0 needs"), "overloaded map: %s", e.msg);
    if (rc == 0)
        placement_free(&p);

    /* shared node: the sum of its workers counts */
    r.layer_map = NULL;
    r.n_workers = 3;
    rc = placement_plan(&p, &t, &r, &e);
    CHECK(rc < 0 && strstr(e.msg, "workers 0, 2 on node 0 need"), "shared node: %s", e.msg);
    if (rc == 0)
        placement_free(&p);
    printf("refused: %s\n", e.msg);
    topology_free(&t);
}

static void test_this_machine(void)
{
    struct topology t;
    if (load(&t, NULL) < 0)
        return;
    int usable = topology_n_usable(&t);
    CHECK(usable >= 1, "no usable node here");
    CHECK(t.n_pus == cpus_available(), "topology has %d PUs, process may use %d", t.n_pus,
          cpus_available());
    struct errbuf e = {{0}};
    struct placement p;
    struct placement_request r = req_2b4t();
    int rc = placement_plan(&p, &t, &r, &e);
    CHECK(rc == 0, "plan here: %s", e.msg);
    if (rc == 0) {
        CHECK(p.n_workers == usable, "%d workers on %d nodes", p.n_workers, usable);
        if (t.n_nodes == 1)
            CHECK(p.n_workers == 1 && p.w[0].n_pus == t.n_pus, "one node: %d workers",
                  p.n_workers);
        check_cover(&p, N_LAYER);
        printf("this machine:\n");
        placement_describe(&p, stdout);
        placement_free(&p);
    }
    topology_free(&t);
}

static void test_bind_cpus(void)
{
    cpu_set_t before, after;
    CHECK(sched_getaffinity(0, sizeof before, &before) == 0, "sched_getaffinity");
    struct errbuf e = {{0}};
    int pu0 = 0;
    int rc = bind_cpus(&pu0, 1, &e);
    CHECK(rc == 0, "bind_cpus(0): %s", e.msg);
    CHECK(sched_getaffinity(0, sizeof after, &after) == 0, "sched_getaffinity");
    CHECK(CPU_COUNT(&after) == 1 && CPU_ISSET(0, &after), "affinity has %d CPUs",
          CPU_COUNT(&after));
    CHECK(bind_cpus(&pu0, 0, &e) < 0, "empty CPU list accepted");
    int bogus = 100000;
    CHECK(bind_cpus(&bogus, 1, &e) < 0, "CPU 100000 accepted");
    printf("refused: %s\n", e.msg);
    sched_setaffinity(0, sizeof before, &before);
}

static void test_bind_anon(void)
{
    size_t len = 64u << 20;
    unsigned char *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                              -1, 0);
    CHECK(buf != MAP_FAILED, "mmap");
    if (buf == MAP_FAILED)
        return;
    struct errbuf e = {{0}};
    int first = 0;
    double frac = -1;
    CHECK(pages_on_node(buf, len, &first, &frac, 0, &e) == 0, "query: %s", e.msg);
    CHECK(first == -ENOENT && frac == 0, "untouched buffer: first page %d, %.2f on node 0",
          first, frac);
    int rc = bind_memory(buf, len, 0, &e);
    CHECK(rc == 0, "bind_memory anon: %s", e.msg);
    memset(buf, 1, len);
    rc = pages_on_node(buf, len, &first, &frac, 0, &e);
    CHECK(rc == 0, "pages_on_node: %s", e.msg);
    CHECK(first == 0 && frac == 1.0, "anon: first page on %d, %.4f on node 0", first, frac);
    /* an unaligned range binds the pages inside it; a sliver of a page binds nothing */
    CHECK(bind_memory(buf + 100, len - 200, 0, &e) == 0, "unaligned: %s", e.msg);
    CHECK(bind_memory(buf + 100, 200, 0, &e) == 0, "sliver: %s", e.msg);
    CHECK(pages_on_node(buf + 100, 200, &first, &frac, 0, &e) == 0 && frac == 1.0,
          "sliver query: %s", e.msg);
    CHECK(bind_memory(buf, len, 99, &e) < 0 && strstr(e.msg, "99"), "node 99: %s", e.msg);
    printf("refused: %s\n", e.msg);
    munmap(buf, len);
}

/* Any model file will do: tiny.gguf, or one of its shape synthesized without ../shared. */
static void test_bind_file(void)
{
    const char *path = tiny_model_path("test_placement");
    CHECK(path, "no model file to map");
    if (!path)
        return;
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
    if (fd < 0)
        return;
    struct stat st;
    CHECK(fstat(fd, &st) == 0 && st.st_size > (1 << 20), "%s size", path);
    size_t len = (size_t)st.st_size;
    const unsigned char *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    CHECK(map != MAP_FAILED, "mmap %s", path);
    if (map == MAP_FAILED)
        return;
    /* a range inside the file, like one stage's tensors: neither end page-aligned */
    const unsigned char *lo = map + 12345;
    size_t rlen = len - 12345 - 4321;
    struct errbuf e = {{0}};
    int rc = bind_memory((void *)lo, rlen, 0, &e);
    CHECK(rc == 0, "bind_memory file: %s", e.msg);
    long pg = sysconf(_SC_PAGESIZE);
    unsigned sum = 0;
    for (size_t off = 0; off < rlen; off += (size_t)pg)
        sum += lo[off];
    int first = -1;
    double frac = -1;
    rc = pages_on_node(lo, rlen, &first, &frac, 0, &e);
    CHECK(rc == 0, "pages_on_node file: %s", e.msg);
    CHECK(first == 0 && frac == 1.0, "file: first page on %d, %.4f on node 0 (sum %u)", first,
          frac, sum);
    /* binding again once everything is mapped migrates nothing and succeeds */
    CHECK(bind_memory((void *)lo, rlen, 0, &e) == 0, "rebind file: %s", e.msg);
    munmap((void *)map, len);
}

int main(void)
{
    init_layers();
    test_topology();
    test_two_nodes();
    test_hyperthreads();
    test_unequal();
    test_no_fit();
    test_this_machine();
    test_bind_cpus();
    test_bind_anon();
    test_bind_file();
    return check_done("test_placement");
}

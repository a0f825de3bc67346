#include "daemon/topology.h"

#include <errno.h>
#include <hwloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static int cmp_node(const void *a, const void *b)
{
    return cmp_int(&((const struct topo_node *)a)->os_index,
                   &((const struct topo_node *)b)->os_index);
}

/* The normal object a NUMA node hangs off: in hwloc 2.x memory is attached beside the
 * CPUs it is local to, possibly below a memory-side cache. */
static hwloc_obj_t attach_point(hwloc_obj_t node)
{
    hwloc_obj_t a = node->parent;
    while (a && hwloc_obj_type_is_memory(a->type))
        a = a->parent;
    return a;
}

/* One node per PU: the nearest ancestor with memory decides, and among several nodes
 * there (DRAM beside HBM or NVM) ordinary DRAM wins, so a CPU is never counted twice
 * and far memory ends up with no CPUs of its own. */
static int owner_node(hwloc_obj_t pu, hwloc_obj_t *numa, hwloc_obj_t *attach, int n)
{
    for (hwloc_obj_t a = pu->parent; a; a = a->parent) {
        int best = -1;
        for (int i = 0; i < n; i++) {
            if (attach[i] != a)
                continue;
            if (best < 0) {
                best = i;
                continue;
            }
            bool plain_i = !numa[i]->subtype, plain_b = !numa[best]->subtype;
            if ((plain_i && !plain_b) ||
                (plain_i == plain_b && numa[i]->os_index < numa[best]->os_index))
                best = i;
        }
        if (best >= 0)
            return best;
    }
    return -1;
}

static int package_of(hwloc_topology_t topo, hwloc_obj_t attach)
{
    if (!attach)
        return -1;
    hwloc_obj_t p = attach->type == HWLOC_OBJ_PACKAGE
                        ? attach
                        : hwloc_get_ancestor_obj_by_type(topo, HWLOC_OBJ_PACKAGE, attach);
    if (!p)
        return -1;
    return p->os_index == HWLOC_UNKNOWN_INDEX ? (int)p->logical_index : (int)p->os_index;
}

struct pu_info {
    int os_index, owner, core;
};

static int cmp_pu(const void *a, const void *b)
{
    return cmp_int(&((const struct pu_info *)a)->os_index, &((const struct pu_info *)b)->os_index);
}

static int copy_out(struct topology *t, hwloc_topology_t topo, struct errbuf *e)
{
    int n = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE);
    int n_pu = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PU);
    int n_core = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE);
    if (n <= 0)
        return err_set(e, "topology: no NUMA node found");
    if (n_pu < 0 || n_core < 0)
        return err_set(e, "topology: PUs or cores spread over several levels");

    hwloc_obj_t *numa = calloc((size_t)n, sizeof *numa);
    hwloc_obj_t *attach = calloc((size_t)n, sizeof *attach);
    struct pu_info *pus = calloc((size_t)n_pu + 1, sizeof *pus);
    t->nodes = calloc((size_t)n, sizeof *t->nodes);
    int rc = 0;
    if (!numa || !attach || !pus || !t->nodes) {
        rc = err_set(e, "topology: out of memory");
        goto out;
    }
    t->n_nodes = n;
    for (int i = 0; i < n; i++) {
        numa[i] = hwloc_get_obj_by_type(topo, HWLOC_OBJ_NUMANODE, (unsigned)i);
        attach[i] = attach_point(numa[i]);
        struct topo_node *tn = &t->nodes[i];
        tn->os_index = (int)numa[i]->os_index;
        tn->package = package_of(topo, attach[i]);
        tn->memory = numa[i]->attr ? numa[i]->attr->numanode.local_memory : 0;
        if (numa[i]->subtype)
            snprintf(tn->kind, sizeof tn->kind, "%s", numa[i]->subtype);
    }
    for (int p = 0; p < n_pu; p++) {
        hwloc_obj_t pu = hwloc_get_obj_by_type(topo, HWLOC_OBJ_PU, (unsigned)p);
        hwloc_obj_t core = hwloc_get_ancestor_obj_by_type(topo, HWLOC_OBJ_CORE, pu);
        pus[p].os_index = (int)pu->os_index;
        pus[p].owner = owner_node(pu, numa, attach, n);
        /* without core objects every PU stands for a core of its own */
        pus[p].core = core ? (int)core->logical_index : n_core + p;
        if (pus[p].owner >= 0)
            t->nodes[pus[p].owner].n_pus++;
    }
    for (int i = 0; i < n; i++) {
        struct topo_node *tn = &t->nodes[i];
        if (tn->n_pus == 0)
            continue;
        tn->pus = malloc((size_t)tn->n_pus * sizeof *tn->pus);
        tn->pu_core = malloc((size_t)tn->n_pus * sizeof *tn->pu_core);
        if (!tn->pus || !tn->pu_core) {
            rc = err_set(e, "topology: out of memory");
            goto out;
        }
        tn->n_pus = 0;
    }
    /* ascending OS index, so that cpusets print as ranges; hwloc's logical order can
     * interleave hyperthread siblings differently */
    qsort(pus, (size_t)n_pu, sizeof *pus, cmp_pu);
    for (int p = 0; p < n_pu; p++) {
        if (pus[p].owner < 0)
            continue;
        struct topo_node *tn = &t->nodes[pus[p].owner];
        tn->pus[tn->n_pus] = pus[p].os_index;
        tn->pu_core[tn->n_pus] = pus[p].core;
        tn->n_pus++;
        t->n_pus++;
    }
    for (int i = 0; i < n; i++) {
        struct topo_node *tn = &t->nodes[i];
        for (int a = 0; a < tn->n_pus; a++) {
            bool seen = false;
            for (int b = 0; b < a && !seen; b++)
                seen = tn->pu_core[b] == tn->pu_core[a];
            tn->n_cores += !seen;
        }
    }
    qsort(t->nodes, (size_t)n, sizeof *t->nodes, cmp_node);
out:
    free(numa);
    free(attach);
    free(pus);
    return rc;
}

int topology_load(struct topology *t, const char *source, struct errbuf *e)
{
    memset(t, 0, sizeof *t);
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) < 0)
        return err_set(e, "topology: hwloc_topology_init: %s", strerror(errno));
    int rc = 0;
    if (!source) {
        /* default flags: hwloc drops CPUs and nodes outside our cgroup cpuset */
    } else if (strncmp(source, "synthetic:", 10) == 0) {
        if (hwloc_topology_set_synthetic(topo, source + 10) < 0)
            rc = err_set(e, "topology: synthetic description \"%s\" rejected by hwloc",
                         source + 10);
    } else if (strncmp(source, "xml:", 4) == 0) {
        if (hwloc_topology_set_xml(topo, source + 4) < 0)
            rc = err_set(e, "topology: %s: %s", source + 4, strerror(errno));
    } else {
        rc = err_set(e, "topology: source \"%s\": expected synthetic:<description> or "
                        "xml:<path>", source);
    }
    if (rc == 0 && hwloc_topology_load(topo) < 0)
        rc = err_set(e, "topology: loading %s: %s", source ? source : "this machine",
                     strerror(errno));
    if (rc == 0)
        rc = copy_out(t, topo, e);
    t->memory_known = !source || strncmp(source, "synthetic:", 10) != 0 ||
                      strstr(source, "memory") != NULL;
    for (int i = 0; rc == 0 && !t->memory_known && i < t->n_nodes; i++)
        t->nodes[i].memory = UINT64_MAX;
    hwloc_topology_destroy(topo);
    if (rc < 0)
        topology_free(t);
    return rc;
}

void topology_free(struct topology *t)
{
    for (int i = 0; i < t->n_nodes && t->nodes; i++) {
        free(t->nodes[i].pus);
        free(t->nodes[i].pu_core);
    }
    free(t->nodes);
    memset(t, 0, sizeof *t);
}

bool topology_node_usable(const struct topo_node *n)
{
    return n->n_pus > 0 && n->memory > 0;
}

int topology_n_usable(const struct topology *t)
{
    int k = 0;
    for (int i = 0; i < t->n_nodes; i++)
        k += topology_node_usable(&t->nodes[i]);
    return k;
}

const struct topo_node *topology_node(const struct topology *t, int os_index)
{
    for (int i = 0; i < t->n_nodes; i++)
        if (t->nodes[i].os_index == os_index)
            return &t->nodes[i];
    return NULL;
}

int format_cpu_ranges(char *out, size_t cap, const int *pus, int n)
{
    size_t len = 0;
    if (cap)
        out[0] = 0;
    for (int i = 0; i < n;) {
        int j = i;
        while (j + 1 < n && pus[j + 1] == pus[j] + 1)
            j++;
        char piece[32];
        int k = j > i ? snprintf(piece, sizeof piece, "%s%d-%d", i ? "," : "", pus[i], pus[j])
                      : snprintf(piece, sizeof piece, "%s%d", i ? "," : "", pus[i]);
        if (len + (size_t)k < cap)
            memcpy(out + len, piece, (size_t)k + 1);
        else if (len < cap)
            out[len] = 0;
        len += (size_t)k;
        i = j + 1;
    }
    return (int)len;
}

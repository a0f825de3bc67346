/* The NUMA nodes a placement can use: which CPUs are local to each and how much memory
 * it has. Read from this machine, an hwloc synthetic description or an hwloc XML export,
 * then copied into plain arrays so that planning needs no hwloc handle. */
#ifndef BITNET_TOPOLOGY_H
#define BITNET_TOPOLOGY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/errbuf.h"

struct topo_node {
    int os_index;
    int package;     /* OS index of the package it belongs to; -1 when it hangs off the
                      * machine (CXL or other far memory) */
    int n_pus;
    int *pus;        /* PU OS indexes, ascending */
    int *pu_core;    /* for each PU, a core number unique across the topology, so that
                      * hyperthread siblings can be kept together */
    int n_cores;
    uint64_t memory; /* local memory, bytes */
    char kind[16];   /* hwloc subtype ("HBM", "NVM", ...), empty for ordinary DRAM */
};

struct topology {
    int n_nodes;
    struct topo_node *nodes; /* ascending OS index */
    int n_pus;               /* PUs over all nodes */
    /* false for a synthetic description that gives no memory: hwloc then invents 1 GiB a
     * node, which would refuse plans for a machine the user only sketched; memory is then
     * not checked: each node's memory reads as UINT64_MAX */
    bool memory_known;
};

/* source: NULL for this machine (only the CPUs and nodes this process is allowed),
 * "synthetic:<hwloc synthetic description>", e.g.
 *     "synthetic:pack:2 [numa(memory=8GB)] core:4 pu:1"
 * (hwloc reads "GB" as 10^9 bytes and "GiB" as 2^30), or "xml:<path>" for a file
 * written by `lstopo --of xml`. */
int topology_load(struct topology *t, const char *source, struct errbuf *e);
void topology_free(struct topology *t);

/* A node is usable for placement when it has both CPUs and memory. */
bool topology_node_usable(const struct topo_node *n);
int topology_n_usable(const struct topology *t);

/* The node with that OS index, or NULL. */
const struct topo_node *topology_node(const struct topology *t, int os_index);

/* Writes a PU list as ranges ("0-3,8,10-11"); returns the length it needed, like
 * snprintf. */
int format_cpu_ranges(char *out, size_t cap, const int *pus, int n);

#endif

/* What a worker does at start to live on its NUMA node: run only on the node's CPUs and
 * keep its weights and KV cache in the node's memory.
 *
 * Order matters. Call bind_cpus first, while the process has one thread (later threads
 * inherit the mask, and the thread pool pins its threads to the CPUs the mask allows);
 * then bind_memory on each range, once its mapping exists.
 *
 * File-backed ranges (the read-only MAP_PRIVATE mapping of the GGUF): Linux ignores a
 * range's memory policy when it allocates page-cache pages (mbind(2): "an initial read
 * access will allocate pages according to the process policy"); a page read in later
 * lands where the *faulting thread's* policy says, which for a process pinned by
 * bind_cpus under the default policy is its local node. What the range's policy does govern is
 * migration: bind_memory maps every page of the range already in the page cache (read
 * by an earlier run, or by another process) and migrates it to the node. So the
 * sequence bind_cpus, mmap, bind_memory, touch the pages, pages_on_node puts everything
 * on the node on a machine with free memory there; a page that stayed elsewhere (the
 * node was full, or another process maps it too: MPOL_MF_MOVE leaves pages mapped by
 * others alone) shows up in pages_on_node, and calling bind_memory again after the
 * touch migrates it if it can be moved at all. */
#ifndef BITNET_NUMA_BIND_H
#define BITNET_NUMA_BIND_H

#include <stddef.h>

#include "model/errbuf.h"

/* The CPU OS indexes of a NUMA node (malloc'd into *pus, *n of them); -1 with e when the
 * node does not exist here or has no CPUs. */
int node_cpus(int node_os_index, int **pus, int *n, struct errbuf *e);

/* Binds every thread of this process to the given CPU OS indexes. */
int bind_cpus(const int *pus, int n, struct errbuf *e);

/* Binds the whole pages inside [addr, addr + len) to the node (hwloc_set_area_membind
 * with BIND | MIGRATE | STRICT, or mbind(MPOL_BIND, MPOL_MF_MOVE | MPOL_MF_STRICT) when
 * hwloc cannot) and migrates the pages already there. The range must be readable: pages
 * resident in the page cache but not yet mapped are read once so that migration sees
 * them. Fails when some page could not be moved; the policy is set even then, and
 * pages_on_node tells how much is where. */
int bind_memory(void *addr, size_t len, int node_os_index, struct errbuf *e);

/* Where the pages of [addr, addr + len) live (the whole pages inside it, or the pages it
 * touches when it holds no whole page), by move_pages(2) in query mode.
 * *node_of_first_page gets the first page's node, or a negative errno for a page not
 * present (-ENOENT: never touched; -EFAULT: e.g. the shared zero page). *fraction_on_node
 * gets the share of pages on `node`, counting absent pages as elsewhere. Either output
 * may be NULL. */
int pages_on_node(const void *addr, size_t len, int *node_of_first_page,
                  double *fraction_on_node, int node, struct errbuf *e);

#endif

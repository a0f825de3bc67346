#include "worker/numa_bind.h"

#include <errno.h>
#include <hwloc.h>
#include <numa.h>
#include <numaif.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Pages per move_pages / mincore call: bounded so no buffer scales with the range. */
#define PAGE_BATCH 1024

/* Only CPUs and NUMA nodes are needed, which hwloc always keeps; dropping caches, cores
 * and I/O makes the load cheap enough to do per call. The x86 backend is left out too:
 * it reads CPUID by moving the calling thread to each CPU in turn, which a worker that
 * has just been pinned should not see. */
static int load_topology(hwloc_topology_t *topo)
{
    if (hwloc_topology_init(topo) < 0)
        return -1;
    hwloc_topology_set_all_types_filter(*topo, HWLOC_TYPE_FILTER_KEEP_NONE);
    hwloc_topology_set_components(*topo, HWLOC_TOPOLOGY_COMPONENTS_FLAG_BLACKLIST, "x86");
    if (hwloc_topology_load(*topo) < 0) {
        hwloc_topology_destroy(*topo);
        return -1;
    }
    return 0;
}

static void cpu_list(char *out, size_t cap, const int *pus, int n)
{
    size_t len = 0;
    out[0] = 0;
    for (int i = 0; i < n && len < cap; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s%d", i ? "," : "", pus[i]);
    if (len >= cap && cap > 4)
        memcpy(out + cap - 4, "...", 4);
}

int node_cpus(int node_os_index, int **pus, int *n, struct errbuf *e)
{
    *pus = NULL;
    *n = 0;
    if (numa_available() < 0 || node_os_index < 0 || node_os_index > numa_max_node())
        return err_set(e, "no NUMA node %d on this machine", node_os_index);
    struct bitmask *m = numa_allocate_cpumask();
    if (!m)
        return err_set(e, "out of memory");
    int rc = numa_node_to_cpus(node_os_index, m);
    int count = rc == 0 ? (int)numa_bitmask_weight(m) : 0;
    if (rc == 0 && count > 0 && (*pus = malloc((size_t)count * sizeof **pus))) {
        for (unsigned i = 0; i < m->size && *n < count; i++)
            if (numa_bitmask_isbitset(m, i))
                (*pus)[(*n)++] = (int)i;
    }
    numa_free_cpumask(m);
    if (*n == 0) {
        free(*pus);
        *pus = NULL;
        return err_set(e, "NUMA node %d has no CPUs here", node_os_index);
    }
    return 0;
}

int bind_cpus(const int *pus, int n, struct errbuf *e)
{
    char list[128];
    if (n <= 0)
        return err_set(e, "bind_cpus: no CPU given");
    for (int i = 0; i < n; i++)
        if (pus[i] < 0)
            return err_set(e, "bind_cpus: CPU %d", pus[i]);
    cpu_list(list, sizeof list, pus, n);

    hwloc_topology_t topo;
    int hw_errno = 0;
    if (load_topology(&topo) == 0) {
        hwloc_bitmap_t set = hwloc_bitmap_alloc();
        int rc = -1;
        if (set) {
            for (int i = 0; i < n; i++)
                hwloc_bitmap_set(set, (unsigned)pus[i]);
            rc = hwloc_set_cpubind(topo, set, HWLOC_CPUBIND_PROCESS);
            hw_errno = errno;
            hwloc_bitmap_free(set);
        }
        hwloc_topology_destroy(topo);
        if (rc == 0)
            return 0;
    }
    /* The fallback binds the calling thread only, which at worker start is the whole
     * process. */
    cpu_set_t mask;
    CPU_ZERO(&mask);
    for (int i = 0; i < n; i++) {
        if (pus[i] >= CPU_SETSIZE)
            return err_set(e, "bind_cpus: CPUs %s: CPU %d beyond what sched_setaffinity takes",
                           list, pus[i]);
        CPU_SET(pus[i], &mask);
    }
    if (sched_setaffinity(0, sizeof mask, &mask) < 0)
        return err_set(e, "bind_cpus: CPUs %s: %s (hwloc: %s)", list, strerror(errno),
                       hw_errno ? strerror(hw_errno) : "no topology");
    return 0;
}

static size_t page_size(void)
{
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

/* Migration walks page tables, so a page that is in the page cache but not mapped here
 * would be skipped. Reading one byte of each resident page maps it; pages not resident
 * are left alone (reading an untouched anonymous page would map the zero page, and
 * would cost a later huge page). */
static void map_resident(uintptr_t start, uintptr_t end, size_t pg)
{
    unsigned char vec[PAGE_BATCH];
    for (uintptr_t a = start; a < end; a += (uintptr_t)PAGE_BATCH * pg) {
        size_t len = end - a < PAGE_BATCH * pg ? end - a : PAGE_BATCH * pg;
        if (mincore((void *)a, len, vec) < 0)
            return; /* only an optimisation; the binding itself reports real errors */
        for (size_t i = 0; i < len / pg; i++)
            if (vec[i] & 1)
                (void)*(volatile const unsigned char *)(a + i * pg);
    }
}

static int mbind_node(void *addr, size_t len, int node, unsigned flags)
{
    unsigned long mask[(1024 + 63) / 64] = {0};
    if (node >= 1024) {
        errno = EINVAL;
        return -1;
    }
    mask[node / 64] |= 1UL << (node % 64);
    /* the kernel reads maxnode - 1 bits */
    return (int)mbind(addr, len, MPOL_BIND, mask, sizeof mask * 8 + 1, flags);
}

int bind_memory(void *addr, size_t len, int node, struct errbuf *e)
{
    size_t pg = page_size();
    uintptr_t start = ((uintptr_t)addr + pg - 1) & ~(uintptr_t)(pg - 1);
    uintptr_t end = ((uintptr_t)addr + len) & ~(uintptr_t)(pg - 1);
    if (!addr || start >= end)
        return 0; /* no whole page: nothing this range owns alone */
    if (node < 0)
        return err_set(e, "bind_memory: node %d", node);
    size_t blen = end - start;
    map_resident(start, end, pg);

    hwloc_topology_t topo;
    bool have_topo = load_topology(&topo) == 0;
    int hw_rc = -1, hw_errno = ENOSYS;
    if (have_topo) {
        if (!hwloc_get_numanode_obj_by_os_index(topo, (unsigned)node)) {
            hwloc_topology_destroy(topo);
            return err_set(e, "bind_memory: no NUMA node %d on this machine", node);
        }
        const struct hwloc_topology_support *s = hwloc_topology_get_support(topo);
        if (s->membind->set_area_membind && s->membind->bind_membind &&
            s->membind->migrate_membind) {
            hwloc_bitmap_t set = hwloc_bitmap_alloc();
            if (set) {
                hwloc_bitmap_only(set, (unsigned)node);
                int flags = HWLOC_MEMBIND_MIGRATE | HWLOC_MEMBIND_BYNODESET;
                hw_rc = hwloc_set_area_membind(topo, (void *)start, blen, set,
                                               HWLOC_MEMBIND_BIND, flags | HWLOC_MEMBIND_STRICT);
                hw_errno = errno;
                if (hw_rc < 0 && hw_errno == EIO)
                    /* STRICT refuses when a page would not move; set the policy and move
                     * what can be moved anyway, then report */
                    hwloc_set_area_membind(topo, (void *)start, blen, set, HWLOC_MEMBIND_BIND,
                                           flags);
                hwloc_bitmap_free(set);
            }
        }
        hwloc_topology_destroy(topo);
    }
    if (hw_rc == 0)
        return 0;
    if (hw_errno == EIO)
        return err_set(e, "bind_memory: node %d: some of the %zu pages at %p could not be "
                          "moved (mapped by another process, or the node is full)",
                       node, blen / pg, (void *)start);

    if (mbind_node((void *)start, blen, node, MPOL_MF_MOVE | MPOL_MF_STRICT) == 0)
        return 0;
    int mb_errno = errno;
    if (mb_errno == EIO) {
        mbind_node((void *)start, blen, node, MPOL_MF_MOVE);
        return err_set(e, "bind_memory: node %d: some of the %zu pages at %p could not be "
                          "moved (mapped by another process, or the node is full)",
                       node, blen / pg, (void *)start);
    }
    return err_set(e, "bind_memory: node %d: mbind: %s (hwloc: %s)", node, strerror(mb_errno),
                   strerror(hw_errno));
}

int pages_on_node(const void *addr, size_t len, int *node_of_first_page,
                  double *fraction_on_node, int node, struct errbuf *e)
{
    size_t pg = page_size();
    uintptr_t start = ((uintptr_t)addr + pg - 1) & ~(uintptr_t)(pg - 1);
    uintptr_t end = ((uintptr_t)addr + len) & ~(uintptr_t)(pg - 1);
    if (start >= end) {
        start = (uintptr_t)addr & ~(uintptr_t)(pg - 1);
        end = ((uintptr_t)addr + len + pg - 1) & ~(uintptr_t)(pg - 1);
    }
    if (!addr || start >= end)
        return err_set(e, "pages_on_node: empty range");
    size_t total = (end - start) / pg, on = 0;
    void *pages[PAGE_BATCH];
    int status[PAGE_BATCH];
    for (size_t done = 0; done < total;) {
        size_t cnt = total - done < PAGE_BATCH ? total - done : PAGE_BATCH;
        for (size_t i = 0; i < cnt; i++)
            pages[i] = (void *)(start + (done + i) * pg);
        /* nodes == NULL: only report where each page is */
        if (numa_move_pages(0, cnt, pages, NULL, status, 0) < 0)
            return err_set(e, "pages_on_node: move_pages: %s", strerror(errno));
        if (done == 0 && node_of_first_page)
            *node_of_first_page = status[0];
        for (size_t i = 0; i < cnt; i++)
            on += status[i] == node;
        done += cnt;
    }
    if (fraction_on_node)
        *fraction_on_node = (double)on / (double)total;
    return 0;
}

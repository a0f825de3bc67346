/* A STREAM-like read probe: how many bytes per second this machine's threads can pull
 * from memory (not cache). The roofline every decode figure is compared against. */
#ifndef BITNET_READ_BANDWIDTH_H
#define BITNET_READ_BANDWIDTH_H

#include <stddef.h>

#include "model/errbuf.h"

/* Reads a buffer of `bytes` (rounded to whole pages; use several times the last-level
 * cache) with n_threads pinned threads, `passes` times; returns the median GB/s
 * (1e9 bytes per second) through *gbps. Done in a child process (the server below, for
 * one measurement), so the probe's buffer never counts in the caller's peak resident
 * memory. */
int read_bandwidth_probe_isolated(size_t bytes, int n_threads, int passes, double *gbps,
                                  struct errbuf *e);

/* A probe kept ready in a child process, for measurements interleaved with other work
 * on the same CPUs: its buffer never counts in the caller's resident memory, and each
 * measurement costs only its reads (its threads sleep in between). */
struct read_probe_server {
    int pid;
    int to_child, from_child;
};

int read_probe_server_start(struct read_probe_server *s, size_t bytes, int n_threads,
                            struct errbuf *e);
/* The median GB/s of `passes` reads of the buffer, measured now. */
int read_probe_server_measure(struct read_probe_server *s, int passes, double *gbps,
                              struct errbuf *e);
void read_probe_server_stop(struct read_probe_server *s);

#endif

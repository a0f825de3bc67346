/* One-line logs on stderr, each prefixed with the worker id ("w1: ..."), so that the
 * interleaved output of a daemon and all its workers stays readable. */
#ifndef BITNET_WORKER_LOG_H
#define BITNET_WORKER_LOG_H

#include <stdbool.h>
#include <stdint.h>

void worker_log(const char *id, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* For events a peer can cause at will (garbage frames): logs the first few, then only
 * every power of two, so a flood cannot fill the disk while the counters stay exact. */
struct log_limit {
    uint64_t seen;
};

/* Counts one event; true if it should be logged. */
bool log_limit_pass(struct log_limit *l);

#endif

/* One bitnetctl bench run, in-process (cmd_bench.c) or through a daemon (bench_daemon.c),
 * as bench and bench sweep both use it, and its recording in the history. */
#ifndef BITNET_CTL_BENCH_RUN_H
#define BITNET_CTL_BENCH_RUN_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "ctl/session.h"
#include "model/errbuf.h"
#include "proto/bitnet.pb-c.h"

/* The read probe both benches take their bandwidth from: by default a buffer well past
 * any last-level cache (--probe-mib), read a few times per measurement. */
#define BENCH_PROBE_MIB 1024
#define BENCH_PROBE_PASSES 3

struct bench_opts {
    const char *model;     /* in-process on this file; NULL: through the daemon */
    const char *run_dir;   /* the daemon's run directory (NULL: its default) */
    long prompt_tokens, gen_tokens, repeat, depth;
    long streams;          /* daemon: concurrent generations */
    long probe_mib;        /* the read probe's buffer */
    bool json, breakdown;
    bool quiet;            /* no text report (bench sweep prints its own lines) */
    bool record;           /* store the receipt (not with --no-record) */
    const char *db;        /* --db PATH; NULL: bench_store_default_path */
    struct session_opts so;
};

/* Runs the benchmark; *result gets what --json prints, *receipt the receipt to store
 * (both new references). Prints the text report unless o->json or o->quiet. Returns 0, or
 * -1 with the error printed. */
int bench_inprocess(const struct bench_opts *o, json_object **result, json_object **receipt);
int bench_daemon(const struct bench_opts *o, json_object **result, json_object **receipt);

/* One request to the daemon at run_dir and its single reply, which must be of kind
 * `expect`; NULL with e set on failure. msg is the body (any Bitnet__ message). */
Bitnet__Envelope *bench_daemon_ask(const char *run_dir, Bitnet__Envelope__BodyCase body, void *msg,
                                   Bitnet__Envelope__BodyCase expect, struct errbuf *e);

/* A bitnetd that bench sweep starts for itself, in a run directory of its own. */
struct bench_daemon_proc {
    int pid;
    char run_dir[128];
    char log[192];
};
/* Starts bitnetd (beside this bitnetctl) on model with `workers` workers of
 * threads_per_worker threads (0: its default), the KV cache and head of so, and a context
 * of ctx positions, and waits until it is ready. On failure the daemon is stopped and e
 * says why (with its log's tail). */
int bench_daemon_start(struct bench_daemon_proc *d, const char *model, int workers,
                       int threads_per_worker, const struct session_opts *so, int ctx,
                       struct errbuf *e);
/* The signal (SIGINT, SIGTERM, SIGHUP) that arrived while a daemon of
 * bench_daemon_start ran, or 0. Such a signal kills that daemon at once; the caller stops
 * and exits 128 + the signal. */
int bench_daemon_interrupted(void);
/* Shuts it down (SIGKILL to its process group if it does not exit within 20 s) and
 * removes its run directory. */
void bench_daemon_stop(struct bench_daemon_proc *d);

/* Stores receipt in o->db (or the default database); prints where to stderr unless quiet.
 * Returns 0, or -1 with the error printed. */
int bench_record(const struct bench_opts *o, json_object *receipt, int64_t *run_id);

/* The database path o names, or the default; -1 with the error printed. */
int bench_db_path(const char *db, char *out, size_t cap);

#endif

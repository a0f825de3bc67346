/* bitnetd's state, in one struct passed to every part: the model it serves, the plan,
 * the sockets, the workers, the jobs and the clients. Like Redis's server.h, this is
 * the map of the daemon; each part lives in its own file:
 *
 *   main.c        start, run, stop
 *   config.c      flags and the INI file
 *   plan.c        layer sizes -> placement
 *   ipc.c         run directory, sockets, their files
 *   event_loop.c  the poll loop the parts register their sockets and timers with
 *   signals.c     SIGCHLD, SIGTERM (drain, stop), SIGINT, SIGHUP (reload) through a signalfd
 *   supervisor.c  fork/exec, kill, reap the local worker processes
 *   workers.c     worker registry: Hello, LoadShard, heartbeats, faults, status
 *   scheduler.c   jobs on KV slots, one Forward per step, sampling, replay
 *   jobs.c        a job's tokens, text and stop strings
 *   clients.c     client requests and replies
 *   notify.c      sd_notify: readiness, status, watchdog for a service manager
 *   reload.c      SIGHUP: the config file and the worker key allow-list read again */
#ifndef BITNET_DAEMON_DAEMON_H
#define BITNET_DAEMON_DAEMON_H

#include <stdbool.h>
#include <stdint.h>

#include "daemon/clients.h"
#include "daemon/config.h"
#include "daemon/event_loop.h"
#include "daemon/ipc.h"
#include "daemon/notify.h"
#include "daemon/placement.h"
#include "daemon/scheduler.h"
#include "daemon/topology.h"
#include "daemon/workers.h"
#include "model/bitnet_model.h"
#include "model/clock.h"
#include "model/tensor_digest.h"
#include "model/tokenizer.h"
#include "proto/wire.h"
#include "worker/model_id.h"

struct http_server;

#define BITNETD_VERSION "bitnetd 0.1.0"

enum daemon_phase {
    PHASE_STARTING,   /* workers not all ready yet, ever */
    PHASE_RUNNING,
    PHASE_STOPPING,   /* Shutdown or a signal: leave the loop */
};

struct daemon {
    struct daemon_config cfg;
    /* the command line cfg came from, parsed again with the config file on SIGHUP; NULL
     * when the daemon was not started from one (tests) */
    int argc;
    char **argv;
    char model_path[4096];          /* absolute, as workers are told */
    struct bitnet_model model;
    bool have_model;
    struct tokenizer *tok;
    char model_sha256[MODEL_ID_HEX_LEN + 1];
    /* every tensor's sha256, for remote workers to check their own copies against; empty
     * without remote workers (local ones map this very file) */
    struct tensor_digests digests;
    int n_ctx;
    bool synthetic_topology;        /* plan from a description, not this machine */
    struct topology topo;
    struct placement plan;
    char worker_bin[4096];

    int sig_fd;
    struct event_loop el;
    struct ipc ipc;
    struct wire_rx ctl_rx, workers_rx, results_rx;

    struct workers workers;
    struct scheduler sched;
    struct clients clients;
    struct notifier notify;

    enum daemon_phase phase;
    double t_start_ms;

    struct http_server *http;       /* the HTTP API (--http), or NULL */
};

/* "bitnetd: ..." on stderr. */
void dlog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Loads the model, plans, opens the sockets and starts the workers. On failure e says
 * why; daemon_close is still to be called. */
int daemon_open(struct daemon *d, const struct daemon_config *cfg, struct errbuf *e);
/* Connects the parts' notices (the scheduler's job news, the workers' pipeline changes)
 * to their receivers; after workers_init and scheduler_init. */
void daemon_connect_parts(struct daemon *d);
/* Serves until daemon_stop: 0, or -1 when the event loop itself failed. */
int daemon_run(struct daemon *d);
/* Cancels jobs, stops workers, closes and unlinks the sockets, frees everything. */
void daemon_close(struct daemon *d);

void daemon_stop(struct daemon *d, const char *why);
/* SIGTERM: stop taking jobs, let the running ones end within --drain-timeout, then stop.
 * A second SIGTERM (or SIGINT) stops at once. */
void daemon_stop_drained(struct daemon *d, const char *why);

/* Fills r (its strings point into d). */
void daemon_status(const struct daemon *d, Bitnet__DaemonStatusReply *r);

#endif

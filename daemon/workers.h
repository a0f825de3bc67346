/* The worker registry: one entry per pipeline stage of the placement, followed through
 * its life: started, Hello, LoadShard, READY with heartbeats, and DEAD (killed, reaped,
 * started again after a backoff). It answers WorkersRequest by asking every live worker
 * for a fresh StatusReply. */
#ifndef BITNET_DAEMON_WORKERS_H
#define BITNET_DAEMON_WORKERS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "daemon/placement.h"
#include "proto/wire.h"

struct daemon;

enum worker_state {
    WORKER_STOPPED,    /* no process; started again at restart_at_ms */
    WORKER_CONNECTING, /* process started, no Hello yet */
    WORKER_LOADING,    /* Hello accepted, LoadShard sent */
    WORKER_READY,
    WORKER_DEAD,       /* declared dead and killed; waiting to reap it */
};

struct worker {
    char id[16];                  /* "w0": its DEALER identity and --id */
    int stage;
    const struct placement_worker *pw;
    char data_endpoint[160];      /* ipc://RUN/wN.data */
    enum worker_state state;
    pid_t pid;                    /* 0 when no process */
    int exit_status;              /* of the last process, for logs */
    char host[128];
    char software[128];
    double t_state_ms;            /* when it entered its state */
    double t_heartbeat_ms;        /* last message of any kind from it */
    double restart_at_ms;
    int backoff_ms;               /* grows while it dies before getting READY */
    unsigned starts;
    uint64_t bytes_loaded;
    double load_seconds;
    int resident_node;
    Bitnet__Envelope *status;     /* its last StatusReply, or NULL */
};

#define WORKERS_MAX_QUERIES 16
#define WORKERS_REQUEST_ID0 (UINT64_C(1) << 48)

/* A WorkersRequest waiting for the workers' StatusReplies. */
struct workers_query {
    struct wire_identity client;
    uint64_t request_id;          /* the client's */
    uint64_t status_id;           /* of the StatusRequests sent to workers */
    double deadline_ms;
    bool waiting[PLACEMENT_MAX_WORKERS];
};

struct workers {
    int n;
    struct worker *w;             /* [n], stage order */
    bool pipeline_ready;          /* every stage READY */
    bool ever_ready;
    double lost_at_ms;            /* when the pipeline last stopped being ready */
    uint64_t next_request_id;     /* of our requests to workers; from WORKERS_REQUEST_ID0
                                   * on, so that an Error's request id never reads as a
                                   * step id */
    struct workers_query queries[WORKERS_MAX_QUERIES];
    int n_queries;
};

int workers_init(struct daemon *d, struct errbuf *e);
void workers_free(struct daemon *d);

/* Starts every worker process. */
int workers_start_all(struct daemon *d, struct errbuf *e);
/* The worker-control socket is readable. */
void workers_on_control(struct daemon *d);
/* A child process ended (from the supervisor's reaping). */
void workers_on_exit(struct daemon *d, pid_t pid, int status);
/* Timeouts, restarts and query deadlines; returns ms until it next needs a call. */
double workers_cron(struct daemon *d, double now_ms);

/* KvOp DROP to every READY stage (KV slots need no clearing, but the stages keep count
 * of each slot's positions). Returns how many stages it went to; *request_id is the
 * id their Acks will carry. */
int workers_kv_drop(struct daemon *d, uint32_t slot, uint64_t *request_id);
/* Answers a client's WorkersRequest, after asking the workers for their status. */
void workers_query(struct daemon *d, const struct wire_identity *client, uint64_t request_id);

int workers_n_ready(const struct daemon *d);
const char *worker_state_name(enum worker_state s);

#endif

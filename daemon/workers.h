/* The worker registry: one entry per pipeline stage of the placement, followed through
 * its life: started, Hello, LoadShard, READY with heartbeats, and DEAD (killed, reaped,
 * started again after a backoff). It answers WorkersRequest by asking every live worker
 * for a fresh StatusReply.
 *
 * A remote stage (--remote-workers) has no process here: it waits in CONNECTING for a
 * worker that joins over CURVE with its id, and goes back there when that worker is lost.
 * While one stays gone longer than --worker-timeout, jobs fail with workers_outage's
 * reason. */
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
    WORKER_WAITING,    /* Hello accepted; LoadShard waits until the next stage (remote,
                        * not joined yet) has told where its data endpoint is */
};

struct worker {
    char id[16];                  /* "w0": its --id, and a remote one's DEALER identity */
    /* a local one's DEALER identity: "w0." and 24 random hex digits, new for every process
     * started (supervisor_spawn), so that no other process can know it in advance */
    char route[48];
    int stage;
    const struct placement_worker *pw;
    char data_endpoint[160];      /* ipc://RUN/wN.data; a remote one's from its Hello */
    bool remote;                  /* started by hand elsewhere; joins over CURVE */
    bool joined;                  /* a remote one: has been accepted at least once */
    /* a local stage after a remote one: its data socket is tcp (a CURVE server with the
     * daemon's key pair), bound at data_bind, so that the remote stage can reach it */
    bool tcp_data;
    char data_bind[160];
    bool outage_logged;           /* its absence past --worker-timeout was logged */
    char data_key[41];            /* CURVE server key of data_endpoint; "" on ipc */
    char addr[64];                /* a remote one's IP address, for logs and errors */
    char told_next[160];          /* next_endpoint and key of its last LoadShard */
    char told_next_key[41];
    uint64_t load_request_id;     /* of that LoadShard: older replies are stale */
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
    uint64_t n_foreign;           /* messages under its id from other processes, ignored */
    /* sums of its StageTimings since it became ready (averaged for --timing); hops are
     * summed only where both ends share this host's clock */
    struct {
        uint64_t steps, hop_in_n, hop_out_n;
        double queue_us, compute_us, send_us, hop_in_us, hop_out_us, step_us;
    } tsum;
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
    /* told when pipeline_ready changes (daemon.c connects it) */
    void (*on_pipeline_changed)(void *ctx, bool ready);
    void *on_pipeline_ctx;
    bool ever_ready;
    double lost_at_ms;            /* when the pipeline last stopped being ready */
    uint64_t next_request_id;     /* of our requests to workers; from WORKERS_REQUEST_ID0
                                   * on, so that an Error's request id never reads as a
                                   * step id */
    struct workers_query queries[WORKERS_MAX_QUERIES];
    int n_queries;
    char last_loss[400];          /* why the last worker was lost, for the jobs it cost */
};

int workers_init(struct daemon *d, struct errbuf *e);
void workers_free(struct daemon *d);

/* Starts every worker process. */
int workers_start_all(struct daemon *d, struct errbuf *e);
/* A worker-control socket (the ipc one, or the tcp one of remote workers) is readable. */
void workers_on_control(struct daemon *d, void *sock);
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
/* Adds a step's timings (as the last stage returned them) to the stages' sums. sent_us
 * and got_us: when the daemon sent the step and received its result (CLOCK_MONOTONIC). */
void workers_add_timings(struct daemon *d, Bitnet__StageTiming *const *t, size_t n,
                         uint64_t sent_us, uint64_t got_us);
/* True when a remote stage has been gone longer than --worker-timeout: why says which,
 * from where and for how long ("worker w1 (host b, 198.18.7.2) lost: no heartbeat for
 * 30.0 s"). Jobs cannot run until it joins again. */
bool workers_outage(const struct daemon *d, char *why, size_t cap);
const char *worker_state_name(enum worker_state s);

#endif

/* bitnet-worker: one pipeline stage of bitnetd (docs/runtime.md, the worker side).
 *
 * Everything the process knows lives in one struct worker, passed explicitly: the
 * sockets, the receive counters, the loaded shard and the timers of the poll loop. */
#ifndef BITNET_WORKER_WORKER_H
#define BITNET_WORKER_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/keys.h"
#include "proto/wire.h"
#include "proto/zap.h"
#include "worker/busy_beat.h"
#include "worker/log.h"
#include "worker/shard.h"

#define WORKER_SOFTWARE_VERSION "bitnet-worker 0.1.0"

/* Hello is sent again at this interval (--hello-retry-ms) until a HelloReply arrives:
 * the first one may have gone to a daemon that was not listening yet, or that has since
 * restarted. */
#define WORKER_HELLO_RETRY_MS 1000
/* How long a step's output may wait for the next stage before the step is failed:
 * longer would stall the heartbeats of the poll loop. (Control messages never wait.) */
#define WORKER_SEND_TIMEOUT_MS 1000

struct worker_opts {
    const char *id;
    /* ZeroMQ routing id on the control socket: the id (also when NULL), unless bitnetd
     * handed this process one of its own (BITNET_ROUTING_ID, a fresh random one per start) */
    const char *routing_id;
    const char *control;  /* the daemon's worker-control endpoint (we connect) */
    const char *data;     /* our Forward endpoint (we bind) */
    size_t max_bytes;     /* largest frame accepted, and largest result sent */
    int heartbeat_ms;
    int hello_retry_ms;
    /* a remote worker (tcp): CURVE keys, and what to tell peers */
    const char *server_key; /* file with the daemon's public key (its .pub) */
    const char *key;        /* file with our key pair (bitnetctl keygen's .key) */
    const char *advertise;  /* host put in our data endpoint when bound to a wildcard */
    const char *model;      /* our copy of the model, instead of the daemon's path */
    /* a worker started by hand (on another host) places itself: these replace what its
     * LoadShard says (0 / -1: as LoadShard says) */
    int threads;
    int numa_node;
    const char *tp_follower; /* "FD:RANK": run as a tensor-parallel rank (tp_follower.h) */
};

struct worker {
    struct worker_opts opts;
    int sigfd;            /* SIGTERM/SIGINT as a pollable fd */

    void *zctx;
    void *control;        /* DEALER, routing id = worker id */
    void *monitor;        /* PAIR receiving the control socket's connection events */
    void *data_in;        /* PULL, bound on opts.data */
    void *data_out;       /* PUSH to the shard's next_endpoint; NULL until loaded */
    /* a CURVE data_out: its ZAP refusals, seen on a monitor, and where and as whom to
     * connect again (worker_connect_next's arguments) once next_retry_ms has come */
    void *next_monitor;   /* PAIR; NULL unless data_out is CURVE */
    unsigned next_monitors; /* made so far: each one's inproc name is new */
    char next_endpoint[512];
    char next_server_key[CURVE_Z85_LEN + 1];
    uint64_t next_retry_ms; /* 0: no new connection due */
    struct log_limit next_noise;
    char data_endpoint[512]; /* announced in Hello: where peers can connect */
    char ipc_path[512];      /* our bound ipc file, unlinked on exit; "" for tcp */
    char hostname[256];
    /* CURVE, when control or data is tcp: "" otherwise */
    char curve_pub[CURVE_Z85_LEN + 1], curve_sec[CURVE_Z85_LEN + 1];
    char server_pub[CURVE_Z85_LEN + 1];
    uint64_t next_handshake_log_ms; /* failed handshakes are logged at most this often */
    /* tcp data only: the ZAP handler admitting the senders LoadShard names (NULL on ipc),
     * and the rate limit of its refusal lines, which only its thread touches */
    struct zap *data_zap;
    struct log_limit zap_noise;

    struct wire_rx control_rx, data_rx;
    struct log_limit control_noise, data_noise;

    struct shard_origin origin;
    struct shard shard;
    struct busy_beat beat;     /* heartbeats during a step (busy_beat.h) */

    uint64_t requests_served;  /* Forward steps computed and passed on */
    uint64_t started_ms;
    uint64_t next_heartbeat_ms;
    uint64_t next_hello_ms;    /* 0: no Hello due (accepted, or not connected) */
    bool hello_accepted;
    bool hello_sent;           /* a Hello went out on the current connection, unanswered */
    uint64_t next_request_id;
    double cpu_mark, wall_mark; /* for Heartbeat.cpu_busy */

    bool stop;
    int exit_code;
};

/* Sets up sockets (w->opts and w->sigfd filled by the caller); -1 with e on failure,
 * after which worker_close still cleans up what was made. */
int worker_open(struct worker *w, struct errbuf *e);
/* Serves until SIGTERM/SIGINT or a refusal by the daemon; returns the exit code. */
int worker_run(struct worker *w);
void worker_close(struct worker *w);

/* Reports a failure to the daemon on the control socket: Error{code, message} with the
 * request id it answers (for a Forward: its step_id), and a log line. */
void worker_report(struct worker *w, uint64_t request_id, Bitnet__ErrorCode code,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Heartbeat on the control socket, now; dropped when the daemon is not connected. */
void worker_heartbeat(struct worker *w);

/* Connects data_out to the shard's next stage (serve.c); -1 with e. */
int worker_connect_next(struct worker *w, const char *endpoint, const char *server_key,
                        struct errbuf *e);
void worker_disconnect_next(struct worker *w);

/* The control conversation (control.c): Hello (sent when due), and every envelope that
 * arrives on the control socket. */
void control_send_hello(struct worker *w);
void control_handle(struct worker *w, const Bitnet__Envelope *env);

/* Runs one Forward through the stage and sends its output on (stage.c). t_recv_us is
 * when it was received, for StageTiming.queue_us. Failures go to worker_report. */
void stage_forward(struct worker *w, const Bitnet__Forward *fw, uint64_t t_recv_us);

/* KvOp on the stage's sequence bookkeeping (stage.c); -1 with code and e on refusal. */
int stage_kv_op(struct shard *s, const Bitnet__KvOp *op, Bitnet__ErrorCode *code,
                struct errbuf *e);

#endif

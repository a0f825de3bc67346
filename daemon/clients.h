/* The client-control ROUTER: bitnetctl's requests in, replies and GenerateChunk streams
 * out, each carrying the request's id. */
#ifndef BITNET_DAEMON_CLIENTS_H
#define BITNET_DAEMON_CLIENTS_H

#include <stdbool.h>
#include <stdint.h>

#include "daemon/jobs.h"
#include "proto/wire.h"

struct daemon;

#define CLIENTS_MAX_WAITERS 32

/* A Drain (or Shutdown with drain_first, or the daemon's own drain on SIGTERM) waiting
 * for the jobs to end. */
struct drain_waiter {
    struct wire_identity client;
    uint64_t request_id;
    double deadline_ms;   /* 0: none */
    bool shutdown;
    bool internal;        /* the daemon's own: no client to answer */
};

struct clients {
    struct drain_waiter waiters[CLIENTS_MAX_WAITERS];
    int n_waiters;
    bool draining;
    double next_probe_ms;   /* when the clients of running jobs are next probed */
};

/* How often a job's client is probed: one that went away has its job cancelled within
 * about this long, streaming or not. */
#define CLIENTS_PROBE_MS 1000

/* The client socket is readable. */
void clients_on_request(struct daemon *d);

/* Sends env to a client. WIRE_OK, or the wire_rc that says why not (a client that went
 * away is WIRE_UNREACHABLE). */
int clients_send(struct daemon *d, const struct wire_identity *to, Bitnet__Envelope *env);
void clients_send_error(struct daemon *d, const struct wire_identity *to, uint64_t request_id,
                        Bitnet__ErrorCode code, const char *message);

/* A job's next GenerateChunk: the text and ids it may send now; done with the reason and
 * stats when it ends. Returns -1 if the client is gone (the job should be cancelled). */
int clients_send_chunk(struct daemon *d, struct job *j, Bitnet__StopReason reason,
                       const char *error);
int clients_send_eval(struct daemon *d, struct job *j);

/* Drains, then stops the daemon: when no job is left, or after timeout_ms with the jobs
 * still running cancelled (SIGTERM). */
void clients_drain_then_stop(struct daemon *d, uint32_t timeout_ms);
/* A drain that ends in a stop is under way (Shutdown with drain_first, SIGTERM). */
bool clients_stop_pending(const struct daemon *d);

/* No job is left: answers Drain requests (and carries out a drained Shutdown). */
void clients_on_idle(struct daemon *d);
/* Drain deadlines and client probes; returns ms until it next needs a call. */
double clients_cron(struct daemon *d, double now_ms);

#endif

/* Heartbeats while a step computes. The poll loop sends heartbeats between steps; a long
 * step (a prompt chunk of hundreds of tokens, a slow CPU) would leave the daemon without
 * one for longer than --heartbeat-timeout, and it would kill a worker that is only busy,
 * then replay the step into the same fate. During a step this thread borrows the control
 * socket (the loop does not touch it then: ZeroMQ sockets pass between threads only with
 * such a hand-over) and sends a heartbeat naming the step every heartbeat interval. A
 * stopped or dead process sends none, which is what the daemon watches for. */
#ifndef BITNET_WORKER_BUSY_BEAT_H
#define BITNET_WORKER_BUSY_BEAT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "model/errbuf.h"

struct busy_beat {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool started, stop;
    bool busy;              /* the socket is lent to the thread */
    uint64_t step_id;       /* the step computing */
    void *sock;             /* the worker's control DEALER */
    const char *sender;     /* the worker id */
    int interval_ms;
    uint64_t sent;          /* heartbeats sent while busy, for tests and logs */
};

int busy_beat_start(struct busy_beat *b, void *sock, const char *sender, int interval_ms,
                    struct errbuf *e);
/* Lends the control socket to the thread until busy_beat_end; the caller must not use it
 * meanwhile. */
void busy_beat_begin(struct busy_beat *b, uint64_t step_id);
/* Takes the socket back; returns once the thread is no longer using it. */
void busy_beat_end(struct busy_beat *b);
void busy_beat_stop(struct busy_beat *b);

#endif

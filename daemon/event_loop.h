/* The event loop, in the manner of Redis's ae.c: the parts of the daemon register their
 * sockets (ZeroMQ sockets or plain file descriptors) and their timers, and the loop
 * polls them and calls back; it knows no part by name. Handlers run in the order they
 * were registered, so a part that must see its news before another (worker news before
 * results) registers first. */
#ifndef BITNET_DAEMON_EVENT_LOOP_H
#define BITNET_DAEMON_EVENT_LOOP_H

#include <stdbool.h>

#include "model/errbuf.h"

#define EL_MAX_SOURCES 16
#define EL_MAX_TIMERS 8
/* The longest poll: a timer that asks for more is still looked at this often. */
#define EL_MAX_WAIT_MS 1000

/* A socket or descriptor is readable: the handler reads what it can. */
typedef void (*el_ready_fn)(void *ctx, void *sock);
/* A timer ran at now_ms; it returns how many ms until it wants to run again. */
typedef double (*el_timer_fn)(void *ctx, double now_ms);

struct event_loop {
    int n_sources;
    struct {
        void *sock; /* ZeroMQ socket, or NULL for fd */
        int fd;
        el_ready_fn fn;
        void *ctx;
    } src[EL_MAX_SOURCES];
    int n_timers;
    struct {
        el_timer_fn fn;
        void *ctx;
        double next_ms;
    } timer[EL_MAX_TIMERS];
    bool stop;
};

void el_init(struct event_loop *l);
/* fn(ctx, sock) when the ZeroMQ socket sock has a message. */
int el_add_socket(struct event_loop *l, void *sock, el_ready_fn fn, void *ctx, struct errbuf *e);
/* fn(ctx, NULL) when the descriptor fd is readable. */
int el_add_fd(struct event_loop *l, int fd, el_ready_fn fn, void *ctx, struct errbuf *e);
/* fn runs at once, then whenever the delay it returned has passed. */
int el_add_timer(struct event_loop *l, el_timer_fn fn, void *ctx, struct errbuf *e);
/* The loop returns after the handler or timer now running. */
void el_stop(struct event_loop *l);
/* Runs until el_stop: 0, or -1 with e when polling itself failed. */
int el_run(struct event_loop *l, struct errbuf *e);

#endif

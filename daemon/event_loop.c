#include "daemon/event_loop.h"

#include <math.h>
#include <string.h>
#include <zmq.h>

#include "model/clock.h"

void el_init(struct event_loop *l)
{
    memset(l, 0, sizeof *l);
}

static int add_source(struct event_loop *l, void *sock, int fd, el_ready_fn fn, void *ctx,
                      struct errbuf *e)
{
    if (l->n_sources == EL_MAX_SOURCES)
        return err_set(e, "event loop: more than %d sources", EL_MAX_SOURCES);
    l->src[l->n_sources].sock = sock;
    l->src[l->n_sources].fd = fd;
    l->src[l->n_sources].fn = fn;
    l->src[l->n_sources].ctx = ctx;
    l->n_sources++;
    return 0;
}

int el_add_socket(struct event_loop *l, void *sock, el_ready_fn fn, void *ctx, struct errbuf *e)
{
    return add_source(l, sock, -1, fn, ctx, e);
}

int el_add_fd(struct event_loop *l, int fd, el_ready_fn fn, void *ctx, struct errbuf *e)
{
    return add_source(l, NULL, fd, fn, ctx, e);
}

int el_add_timer(struct event_loop *l, el_timer_fn fn, void *ctx, struct errbuf *e)
{
    if (l->n_timers == EL_MAX_TIMERS)
        return err_set(e, "event loop: more than %d timers", EL_MAX_TIMERS);
    l->timer[l->n_timers].fn = fn;
    l->timer[l->n_timers].ctx = ctx;
    l->timer[l->n_timers].next_ms = 0;
    l->n_timers++;
    return 0;
}

void el_stop(struct event_loop *l)
{
    l->stop = true;
}

/* Runs the timers that are due; returns the time of the earliest next one. */
static double run_timers(struct event_loop *l)
{
    double now = clock_ms(), next = now + EL_MAX_WAIT_MS;
    for (int i = 0; i < l->n_timers && !l->stop; i++) {
        if (now >= l->timer[i].next_ms)
            l->timer[i].next_ms = now + l->timer[i].fn(l->timer[i].ctx, now);
        if (l->timer[i].next_ms < next)
            next = l->timer[i].next_ms;
    }
    return next;
}

int el_run(struct event_loop *l, struct errbuf *e)
{
    zmq_pollitem_t items[EL_MAX_SOURCES];
    while (!l->stop) {
        double next = run_timers(l);
        if (l->stop)
            break;
        double wait = ceil(next - clock_ms());
        long timeout = wait < 0 ? 0 : wait > EL_MAX_WAIT_MS ? EL_MAX_WAIT_MS : (long)wait;
        for (int i = 0; i < l->n_sources; i++)
            items[i] = (zmq_pollitem_t){l->src[i].sock, l->src[i].sock ? 0 : l->src[i].fd,
                                        ZMQ_POLLIN, 0};
        if (zmq_poll(items, l->n_sources, timeout) < 0) {
            if (zmq_errno() == EINTR)
                continue;
            return err_set(e, "zmq_poll: %s", zmq_strerror(zmq_errno()));
        }
        for (int i = 0; i < l->n_sources && !l->stop; i++)
            if (items[i].revents & ZMQ_POLLIN)
                l->src[i].fn(l->src[i].ctx, l->src[i].sock);
    }
    return 0;
}

#include "daemon/loop.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <zmq.h>

#include "daemon/daemon.h"
#include "daemon/supervisor.h"
#include "proto/zap.h"

int loop_signals_open(int *sig_fd, struct errbuf *e)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
        return err_set(e, "sigprocmask: %s", strerror(errno));
    /* a client or worker that vanishes mid-send must be an error return, not our death */
    signal(SIGPIPE, SIG_IGN);
    *sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (*sig_fd < 0)
        return err_set(e, "signalfd: %s", strerror(errno));
    return 0;
}

static void on_signals(struct daemon *d)
{
    bool child = false;
    struct signalfd_siginfo si;
    while (read(d->sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        switch (si.ssi_signo) {
        case SIGCHLD:
            child = true; /* several exits may share one SIGCHLD: reap them all below */
            break;
        case SIGTERM:
            daemon_stop(d, "SIGTERM");
            break;
        case SIGINT:
            daemon_stop(d, "SIGINT");
            break;
        default:
            dlog("signal %u (%s) ignored", si.ssi_signo, strsignal((int)si.ssi_signo));
            break;
        }
    }
    if (child)
        supervisor_reap(d);
}

/* The timers of every part; returns ms until the earliest one wants to run again. */
static double cron(struct daemon *d, double now)
{
    double next = workers_cron(d, now);
    double t = scheduler_cron(d, now);
    if (t < next)
        next = t;
    t = clients_cron(d, now);
    return t < next ? t : next;
}

int loop_run(struct daemon *d)
{
    double next_cron = 0;
    while (d->phase != PHASE_STOPPING) {
        double now = clock_ms();
        if (now >= next_cron)
            next_cron = now + cron(d, now);
        if (d->phase == PHASE_STOPPING)
            break;
        double wait = ceil(next_cron - clock_ms());
        long timeout = wait < 0 ? 0 : wait > 1000 ? 1000 : (long)wait;
        /* the last three exist with --listen only (remote workers) */
        zmq_pollitem_t items[] = {
            {NULL, d->sig_fd, ZMQ_POLLIN, 0},
            {d->ipc.workers, 0, ZMQ_POLLIN, 0},
            {d->ipc.results, 0, ZMQ_POLLIN, 0},
            {d->ipc.ctl, 0, ZMQ_POLLIN, 0},
            {d->ipc.workers_tcp, 0, ZMQ_POLLIN, 0},
            {d->ipc.results_tcp, 0, ZMQ_POLLIN, 0},
            {d->ipc.zap ? zap_socket(d->ipc.zap) : NULL, 0, ZMQ_POLLIN, 0},
        };
        bool tcp = d->ipc.zap != NULL;
        if (zmq_poll(items, tcp ? 7 : 4, timeout) < 0) {
            if (zmq_errno() == EINTR)
                continue;
            dlog("zmq_poll: %s", zmq_strerror(zmq_errno()));
            return -1;
        }
        /* worker news first: a step must not go to a pipeline that just broke */
        if (items[0].revents & ZMQ_POLLIN)
            on_signals(d);
        if (items[1].revents & ZMQ_POLLIN)
            workers_on_control(d, d->ipc.workers);
        if (tcp && (items[4].revents & ZMQ_POLLIN))
            workers_on_control(d, d->ipc.workers_tcp);
        if (items[2].revents & ZMQ_POLLIN)
            scheduler_on_results(d, d->ipc.results);
        if (tcp && (items[5].revents & ZMQ_POLLIN))
            scheduler_on_results(d, d->ipc.results_tcp);
        if (items[3].revents & ZMQ_POLLIN)
            clients_on_request(d);
        /* served here rather than on a thread of its own: its log lines and counts then
         * need no locking, and a handshake waits at most one loop turn */
        if (tcp && (items[6].revents & ZMQ_POLLIN)) {
            struct errbuf e = {{0}};
            if (zap_serve(d->ipc.zap, &e) < 0)
                dlog("%s", e.msg);
        }
    }
    return 0;
}

#include "daemon/signals.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "daemon/reload.h"
#include "daemon/supervisor.h"

int signals_open(int *sig_fd, struct errbuf *e)
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

void signals_on_ready(void *ctx, void *unused)
{
    (void)unused;
    struct daemon *d = ctx;
    bool child = false;
    struct signalfd_siginfo si;
    while (read(d->sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        switch (si.ssi_signo) {
        case SIGCHLD:
            child = true; /* several exits may share one SIGCHLD: reap them all below */
            break;
        case SIGTERM:
            /* a service manager's stop: the jobs running get --drain-timeout to end */
            daemon_stop_drained(d, "SIGTERM");
            break;
        case SIGINT:
            daemon_stop(d, "SIGINT");
            break;
        case SIGHUP:
            reload_config(d);
            break;
        default:
            dlog("signal %u (%s) ignored", si.ssi_signo, strsignal((int)si.ssi_signo));
            break;
        }
    }
    if (child)
        supervisor_reap(d);
}

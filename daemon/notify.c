#include "daemon/notify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "daemon/daemon.h"

/* A manager that is gone (or a socket that refuses) would otherwise fill the log at every
 * watchdog ping: the first failure is logged, and a later success says it recovered. */
static void sent(struct notifier *n, int rc, const char *what)
{
    if (rc < 0 && !n->failure_logged) {
        const char *sock = getenv("NOTIFY_SOCKET");
        dlog("sd_notify %s to %s: %s (further failures not logged)", what,
             sock ? sock : "(no NOTIFY_SOCKET)", strerror(-rc));
        n->failure_logged = true;
    } else if (rc > 0 && n->failure_logged) {
        dlog("sd_notify %s: the service manager takes notifications again", what);
        n->failure_logged = false;
    }
}

void notify_open(struct notifier *n, double now_ms)
{
    memset(n, 0, sizeof *n);
    uint64_t usec = 0;
    /* > 0 only when WATCHDOG_USEC is set and WATCHDOG_PID, if set, is this process */
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        /* half the interval, as sd_watchdog_enabled(3) advises: one late loop turn must
         * not cost the daemon its life */
        n->watchdog_ping_ms = (double)usec / 2000.0;
        n->next_ping_ms = now_ms;
        dlog("service manager watchdog: %.0f ms; pinging every %.0f ms", (double)usec / 1000.0,
             n->watchdog_ping_ms);
    }
}

/* Names of the stages that are not READY, "w1, w2", cut to fit. */
static void down_stages(const struct daemon *d, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; i < d->workers.n && len < cap; i++) {
        const struct worker *w = &d->workers.w[i];
        if (w->state == WORKER_READY)
            continue;
        int k = snprintf(buf + len, cap - len, "%s%s %s", len ? ", " : "", w->id,
                         worker_state_name(w->state));
        if (k < 0)
            break;
        len += (size_t)k;
    }
}

static void describe(const struct daemon *d, char *buf, size_t cap)
{
    int ready = workers_n_ready(d), n = d->workers.n;
    int jobs = scheduler_n_running(d) + scheduler_n_queued(d);
    char down[160];
    down_stages(d, down, sizeof down);
    if (!d->workers.ever_ready) {
        snprintf(buf, cap, "loading: %d of %d workers ready (%s)", ready, n, down);
    } else if (ready < n) {
        snprintf(buf, cap, "degraded: %d of %d workers ready (%s)%s", ready, n, down,
                 d->clients.draining ? "; draining" : "");
    } else if (d->clients.draining) {
        snprintf(buf, cap, "draining: %d job%s left", jobs, jobs == 1 ? "" : "s");
    } else {
        snprintf(buf, cap, "ready: %d worker%s", n, n == 1 ? "" : "s");
    }
}

void notify_update(struct daemon *d)
{
    struct notifier *n = &d->notify;
    if (d->phase == PHASE_STOPPING)
        return; /* notify_stopping said it all */
    char status[NOTIFY_STATUS_MAX];
    describe(d, status, sizeof status);
    bool ready_now = !n->ready_sent && d->workers.ever_ready;
    if (!ready_now && strcmp(status, n->status) == 0)
        return;
    memcpy(n->status, status, sizeof status);
    if (ready_now) {
        n->ready_sent = true;
        sent(n, sd_notifyf(0, "READY=1\nSTATUS=%s", status), "READY=1");
    } else {
        sent(n, sd_notifyf(0, "STATUS=%s", status), "STATUS");
    }
}

void notify_stopping(struct daemon *d, const char *why)
{
    struct notifier *n = &d->notify;
    if (n->stopping_sent)
        return;
    n->stopping_sent = true;
    snprintf(n->status, sizeof n->status, "stopping: %s", why);
    sent(n, sd_notifyf(0, "STOPPING=1\nSTATUS=%s", n->status), "STOPPING=1");
}

void notify_reloading(struct daemon *d)
{
    /* before READY=1 the manager still waits for the start: a reload is no news to it */
    if (!d->notify.ready_sent)
        return;
    sent(&d->notify, sd_notify(0, "RELOADING=1\nSTATUS=reloading the configuration"),
         "RELOADING=1");
}

void notify_reloaded(struct daemon *d)
{
    struct notifier *n = &d->notify;
    n->status[0] = 0; /* the next notify_update sends the status again */
    if (n->ready_sent)
        sent(n, sd_notify(0, "READY=1"), "READY=1");
    notify_update(d);
}

double notify_cron(struct daemon *d, double now_ms)
{
    struct notifier *n = &d->notify;
    /* what the pipeline's own notices do not bring at once (a worker loaded, a drain) */
    notify_update(d);
    if (n->watchdog_ping_ms <= 0)
        return NOTIFY_STATUS_POLL_MS;
    if (now_ms >= n->next_ping_ms) {
        sent(n, sd_notify(0, "WATCHDOG=1"), "WATCHDOG=1");
        /* from now, not from the missed time: a late turn must not bunch pings up */
        n->next_ping_ms = now_ms + n->watchdog_ping_ms;
    }
    double wait = n->next_ping_ms - now_ms;
    return wait < NOTIFY_STATUS_POLL_MS ? wait : NOTIFY_STATUS_POLL_MS;
}

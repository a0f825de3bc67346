/* Telling a service manager (systemd, Type=notify) how bitnetd is doing, through
 * libsystemd's sd_notify: READY=1 once every stage has loaded, STATUS= lines while loading,
 * draining or degraded, WATCHDOG=1 from the event loop's timers when the manager asks for
 * it (WATCHDOG_USEC), RELOADING=1 around a SIGHUP and STOPPING=1 on the way out. Without
 * NOTIFY_SOCKET in the environment every call does nothing. */
#ifndef BITNET_DAEMON_NOTIFY_H
#define BITNET_DAEMON_NOTIFY_H

#include <stdbool.h>

struct daemon;

#define NOTIFY_STATUS_MAX 256
/* How often the status is looked at for changes no notice brings (a worker loaded, a
 * drain began): STATUS= lags by at most this. */
#define NOTIFY_STATUS_POLL_MS 200

struct notifier {
    /* the manager's watchdog: WATCHDOG=1 every half interval, 0 when not asked */
    double watchdog_ping_ms;
    double next_ping_ms;
    bool ready_sent, stopping_sent;
    char status[NOTIFY_STATUS_MAX];   /* the last STATUS= sent: only changes are sent */
    bool failure_logged;              /* a failing socket is logged once, not every ping */
};

/* Reads what the manager asked for (sd_watchdog_enabled) and says so in the log. */
void notify_open(struct notifier *n, double now_ms);

/* STATUS= for the daemon as it is now ("loading: 1 of 2 workers ready", "degraded: ...",
 * "draining: ..."), sent only when it changed; READY=1 with it the first time the pipeline
 * is whole. Called when the pipeline becomes whole or breaks, and from notify_cron. */
void notify_update(struct daemon *d);

/* STOPPING=1 with why as the status; once. */
void notify_stopping(struct daemon *d, const char *why);

/* RELOADING=1 before a SIGHUP's reload, once READY=1 was sent; notify_reloaded after it
 * (READY=1 again then, since the manager waits for it after RELOADING=1). */
void notify_reloading(struct daemon *d);
void notify_reloaded(struct daemon *d);

/* The event loop's timer: the status, and the watchdog's ping when due; returns ms until
 * it next needs a call. */
double notify_cron(struct daemon *d, double now_ms);

#endif

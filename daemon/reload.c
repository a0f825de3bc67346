#include "daemon/reload.h"

#include <stdio.h>
#include <string.h>

#include "daemon/config.h"
#include "daemon/daemon.h"
#include "daemon/notify.h"
#include "proto/zap.h"

/* Settings read where they are used, at every use: changing the field changes the
 * behaviour. Everything else was consumed at start (the plan, the sockets, the workers'
 * command lines) and needs a restart. */
static bool take_live(struct daemon_config *cur, const struct daemon_config *fresh,
                      const char *name)
{
    if (strcmp(name, "max-jobs-per-client") == 0)
        cur->max_jobs_per_client = fresh->max_jobs_per_client;
    else if (strcmp(name, "worker-timeout") == 0)
        cur->worker_timeout_s = fresh->worker_timeout_s;
    else if (strcmp(name, "drain-timeout") == 0)
        cur->drain_timeout_s = fresh->drain_timeout_s;
    else
        return false;
    return true;
}

static void reload_settings(struct daemon *d)
{
    if (!d->argv) {
        dlog("SIGHUP: no command line to read the settings from; settings unchanged");
        return;
    }
    struct daemon_config fresh;
    struct errbuf e = {{0}};
    int rc = config_load(&fresh, d->argc, d->argv, &e);
    if (rc != 0) {
        dlog("SIGHUP: %s; settings unchanged", rc < 0 ? e.msg : "--help or --version given");
        config_free(&fresh);
        return;
    }
    const char *changed[64];
    size_t n = config_changed(&d->cfg, &fresh, changed, sizeof changed / sizeof changed[0]);
    if (n > sizeof changed / sizeof changed[0])
        n = sizeof changed / sizeof changed[0];
    char kept[512] = "", taken[256] = "";
    size_t kept_len = 0, taken_len = 0;
    for (size_t i = 0; i < n; i++) {
        bool live = take_live(&d->cfg, &fresh, changed[i]);
        char *buf = live ? taken : kept;
        size_t cap = live ? sizeof taken : sizeof kept, *len = live ? &taken_len : &kept_len;
        if (*len >= cap)
            continue;
        int k = snprintf(buf + *len, cap - *len, "%s%s", *len ? ", " : "", changed[i]);
        if (k > 0)
            *len += (size_t)k;
    }
    const char *from = d->cfg.config_file ? d->cfg.config_file : "the command line";
    if (taken_len)
        dlog("SIGHUP: %s: now in effect: %s", from, taken);
    if (kept_len)
        dlog("SIGHUP: %s: changed but cannot change while bitnetd runs (restart to apply); "
             "kept as they were: %s", from, kept);
    if (!n)
        dlog("SIGHUP: %s: no setting changed", from);
    config_free(&fresh);
}

static void reload_allow_list(struct daemon *d)
{
    if (!d->ipc.zap)
        return; /* no --listen: no remote workers, no list */
    size_t before = zap_n_keys(d->ipc.zap);
    struct errbuf e = {{0}};
    if (zap_reload(d->ipc.zap, d->cfg.allow_keys, &e) < 0) {
        dlog("SIGHUP: --allow-keys %s: %s; the %zu key%s listed before stay admitted",
             d->cfg.allow_keys, e.msg, before, before == 1 ? "" : "s");
        return;
    }
    size_t after = zap_n_keys(d->ipc.zap);
    dlog("SIGHUP: allow-list %s read again: %zu key%s (%zu before); workers already joined "
         "stay", d->cfg.allow_keys, after, after == 1 ? "" : "s", before);
}

void reload_config(struct daemon *d)
{
    notify_reloading(d);
    reload_settings(d);
    reload_allow_list(d);
    notify_reloaded(d);
}

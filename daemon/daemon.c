#include "daemon/daemon.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/signals.h"
#include "daemon/http_server.h"
#include "daemon/plan.h"
#include "daemon/supervisor.h"
#include "model/vocab_gguf.h"
#include "proto/zap.h"

void dlog(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "bitnetd: %s\n", line);
}

static int load_model(struct daemon *d, struct errbuf *e)
{
    const char *path = d->cfg.model;
    /* workers may run elsewhere in the file system's eyes (another cwd): absolute path */
    if (!realpath(path, d->model_path))
        return err_set(e, "%s: %s", path, strerror(errno));
    if (bitnet_model_load(&d->model, d->model_path, e) < 0)
        return -1;
    d->have_model = true;
    d->tok = tokenizer_from_gguf(&d->model.file, e);
    if (!d->tok)
        return err_prefix(e, "%s", path);
    if (tokenizer_n_vocab(d->tok) != d->model.hp.n_vocab)
        return err_set(e, "%s: tokenizer has %u tokens but the embedding has %u rows", path,
                       tokenizer_n_vocab(d->tok), d->model.hp.n_vocab);
    if (model_id_of_gguf(&d->model.file, d->model_sha256, e) < 0)
        return -1;
    d->n_ctx = d->cfg.ctx;
    if (d->model.hp.n_ctx_train && (uint32_t)d->n_ctx > d->model.hp.n_ctx_train)
        d->n_ctx = (int)d->model.hp.n_ctx_train;
    return 0;
}

/* Every refusal is logged with what an operator needs to fix it: the address it came
 * from and the key to add if the worker is wanted. (Runs on the loop's thread: the
 * handler is served from the loop.) */
static void on_zap_decision(void *arg, const struct zap_decision *z)
{
    struct daemon *d = arg;
    if (z->allowed)
        return;
    if (*z->key)
        dlog("refused a CURVE connection from %s: key %s is not in %s (%s)", z->address,
             z->key, d->cfg.allow_keys, z->text);
    else
        dlog("refused a %s connection from %s: %s", *z->mechanism ? z->mechanism : "malformed",
             z->address, z->text);
}

/* Steps in flight at most. Overlapping steps only pays when each stage has CPUs of its
 * own: stages that take turns on shared cores would contend for them instead (and on a
 * described topology the workers run unpinned on whatever this machine has). */
static int pipeline_depth(const struct daemon *d)
{
    if (d->cfg.pipeline_depth > 0)
        return d->cfg.pipeline_depth;
    if (d->synthetic_topology)
        return 1;
    const struct placement *p = &d->plan;
    for (int a = 0; a < p->n_workers; a++)
        for (int b = a + 1; b < p->n_workers; b++) {
            if (d->workers.w[a].remote || d->workers.w[b].remote)
                continue;
            for (int i = 0; i < p->w[a].n_pus; i++)
                for (int k = 0; k < p->w[b].n_pus; k++)
                    if (p->w[a].pus[i] == p->w[b].pus[k])
                        return 1;
        }
    return p->n_workers < SCHED_MAX_DEPTH ? p->n_workers : SCHED_MAX_DEPTH;
}

/* A remote worker maps its own copy of the model: it is sent every tensor's digest to
 * check that copy's weights, not only its header. Local workers map our file, so a
 * daemon without remote workers hashes nothing. */
static int hash_for_remote_workers(struct daemon *d, struct errbuf *e)
{
    bool any = false;
    for (int i = 0; i < d->workers.n; i++)
        any |= d->workers.w[i].remote;
    if (!any)
        return 0;
    if (tensor_digests_get(&d->model.file, d->model_sha256, &d->digests, e) < 0)
        return -1;
    if (d->digests.seconds > 0)
        dlog("weights of %s hashed for remote workers' copies in %.2f s (%.0f MB/s)%s%s",
             d->model_path, d->digests.seconds, d->model.file.size / 1e6 / d->digests.seconds,
             d->digests.cache_path[0] ? "; kept in " : "; no cache directory (set HOME or "
             "XDG_CACHE_HOME)", d->digests.cache_path);
    else
        dlog("weights' digests of %s read from %s", d->model_path, d->digests.cache_path);
    return 0;
}

/* ---- what the event loop calls: each part's handler for its sockets and its timer ---- */

static void on_worker_control(void *ctx, void *sock) { workers_on_control(ctx, sock); }
static void on_results(void *ctx, void *sock) { scheduler_on_results(ctx, sock); }
static void on_client(void *ctx, void *sock)
{
    (void)sock;
    clients_on_request(ctx);
}

/* served on the loop rather than on a thread of its own: its log lines and counts then
 * need no locking, and a handshake waits at most one loop turn */
static void on_zap(void *ctx, void *sock)
{
    (void)sock;
    struct daemon *d = ctx;
    struct errbuf e = {{0}};
    if (zap_serve(d->ipc.zap, &e) < 0)
        dlog("%s", e.msg);
}

static double workers_timer(void *ctx, double now) { return workers_cron(ctx, now); }

/* ---- the parts' notices, passed on: scheduler and workers call nothing above them ---- */

static int job_chunk(void *ctx, struct job *j, Bitnet__StopReason reason, const char *error)
{
    return clients_send_chunk(ctx, j, reason, error);
}
static int job_eval_done(void *ctx, struct job *j) { return clients_send_eval(ctx, j); }
static void job_failed(void *ctx, struct job *j, Bitnet__ErrorCode code, const char *msg)
{
    clients_send_error(ctx, &j->client, j->request_id, code, msg);
}
static void jobs_idle(void *ctx) { clients_on_idle(ctx); }

/* The pipeline became ready (every stage READY) or stopped being so (ctx: the daemon). */
static void pipeline_changed(void *ctx, bool ready)
{
    struct daemon *d = ctx;
    struct workers *ws = &d->workers;
    if (!ready) {
        ws->lost_at_ms = clock_ms();
        scheduler_pipeline_lost(d);
        notify_update(d); /* degraded */
        return;
    }
    if (!ws->ever_ready) {
        ws->ever_ready = true;
        if (d->phase == PHASE_STARTING)
            d->phase = PHASE_RUNNING;
        char summary[1024];
        bool remote[PLACEMENT_MAX_WORKERS] = {false};
        for (int i = 0; i < ws->n && i < PLACEMENT_MAX_WORKERS; i++)
            remote[i] = ws->w[i].remote;
        plan_summary(&d->plan, remote, summary, sizeof summary);
        fprintf(stderr, "bitnetd: ready (%d worker%s, placement %s) in %.2f s\n", ws->n,
                ws->n > 1 ? "s" : "", summary, (clock_ms() - d->t_start_ms) / 1e3);
    } else {
        dlog("pipeline ready again, %.0f ms after it broke", clock_ms() - ws->lost_at_ms);
    }
    notify_update(d); /* READY=1 the first time */
    scheduler_kick(d);
}

void daemon_connect_parts(struct daemon *d)
{
    d->sched.ev = (struct scheduler_events){job_chunk, job_eval_done, job_failed, jobs_idle, d};
    d->workers.on_pipeline_changed = pipeline_changed;
    d->workers.on_pipeline_ctx = d;
}
static double scheduler_timer(void *ctx, double now) { return scheduler_cron(ctx, now); }
static double clients_timer(void *ctx, double now) { return clients_cron(ctx, now); }
static double notify_timer(void *ctx, double now) { return notify_cron(ctx, now); }

/* Worker news first: a step must not go to a pipeline that just broke. The tcp sockets
 * exist with --listen only (remote workers). */
static int register_events(struct daemon *d, struct errbuf *e)
{
    struct event_loop *l = &d->el;
    if (el_add_fd(l, d->sig_fd, signals_on_ready, d, e) < 0 ||
        el_add_socket(l, d->ipc.workers, on_worker_control, d, e) < 0 ||
        (d->ipc.workers_tcp && el_add_socket(l, d->ipc.workers_tcp, on_worker_control, d, e) < 0) ||
        el_add_socket(l, d->ipc.results, on_results, d, e) < 0 ||
        (d->ipc.results_tcp && el_add_socket(l, d->ipc.results_tcp, on_results, d, e) < 0) ||
        el_add_socket(l, d->ipc.ctl, on_client, d, e) < 0 ||
        (d->ipc.zap && el_add_socket(l, zap_socket(d->ipc.zap), on_zap, d, e) < 0))
        return -1;
    /* the HTTP API serves from threads of its own, as a client of the ctl socket */
    return el_add_timer(l, workers_timer, d, e) < 0 || el_add_timer(l, scheduler_timer, d, e) < 0 ||
                   el_add_timer(l, clients_timer, d, e) < 0 || el_add_timer(l, notify_timer, d, e) < 0 ||
                   daemon_http_start(d, e) < 0
               ? -1
               : 0;
}

int daemon_open(struct daemon *d, const struct daemon_config *cfg, struct errbuf *e)
{
    memset(d, 0, sizeof *d);
    d->cfg = *cfg;
    d->sig_fd = -1;
    d->ipc.lock_fd = -1;
    d->t_start_ms = clock_ms();
    d->phase = PHASE_STARTING;
    notify_open(&d->notify, d->t_start_ms);
    /* first: ZeroMQ's threads must inherit the blocked signals */
    el_init(&d->el);
    if (signals_open(&d->sig_fd, e) < 0)
        return -1;
    if (load_model(d, e) < 0)
        return -1;
    d->synthetic_topology = cfg->topology != NULL;
    if (topology_load(&d->topo, cfg->topology, e) < 0)
        return -1;
    if (plan_for_model(&d->model, cfg, d->n_ctx, &d->topo, &d->plan, e) < 0)
        return err_prefix(e, "%s", cfg->model);
    fprintf(stderr, "bitnetd: model %s (sha256 %.16s..., %u layers, ctx %d), placement%s:\n",
            d->model_path, d->model_sha256, d->model.hp.n_layer, d->n_ctx,
            d->synthetic_topology ? " on a described topology (workers not pinned)" : "");
    placement_describe(&d->plan, stderr);
    if (supervisor_resolve_bin(d, e) < 0)
        return -1;
    wire_rx_init(&d->ctl_rx, 0);
    wire_rx_init(&d->workers_rx, 0);
    wire_rx_init(&d->results_rx, 0);
    struct ipc_tcp tcp = {cfg->listen, cfg->advertise, cfg->curve_key, cfg->allow_keys};
    if (ipc_open(&d->ipc, cfg->run_dir, &tcp, e) < 0)
        return -1;
    if (d->ipc.zap) {
        zap_set_observer(d->ipc.zap, on_zap_decision, d);
        size_t n = zap_n_keys(d->ipc.zap);
        dlog("remote workers: control on %s, results on %s (as told to workers), daemon key %s, "
             "%zu allowed key%s in %s", d->ipc.tcp_workers_ep, d->ipc.tcp_results_ep,
             d->ipc.curve_pub, n, n == 1 ? "" : "s", cfg->allow_keys);
        if (n == 0)
            dlog("warning: %s lists no key: every remote worker will be refused", cfg->allow_keys);
    }
    if (workers_init(d, e) < 0 || scheduler_init(d, pipeline_depth(d), e) < 0)
        return -1;
    daemon_connect_parts(d);
    if (d->sched.depth > 1)
        dlog("pipeline depth %d: the running jobs go through in %d micro-batches",
             d->sched.depth, d->sched.depth);
    if (hash_for_remote_workers(d, e) < 0 || register_events(d, e) < 0)
        return -1;
    if (workers_start_all(d, e) < 0)
        return -1;
    notify_update(d); /* "loading: 0 of N workers ready" */
    return 0;
}

int daemon_run(struct daemon *d)
{
    struct errbuf e = {{0}};
    if (el_run(&d->el, &e) < 0) {
        dlog("%s", e.msg);
        return -1;
    }
    return 0;
}

void daemon_close(struct daemon *d)
{
    notify_stopping(d, "closing");
    d->phase = PHASE_STOPPING;
    daemon_http_stop(d); /* first: its threads wait on the loop, which runs no more */
    if (d->ipc.ctl)
        scheduler_cancel_all(d, "bitnetd is shutting down");
    supervisor_stop_all(d, 2000);
    const char *extra[PLACEMENT_MAX_WORKERS];
    int n_extra = 0;
    for (int i = 0; i < d->workers.n && n_extra < PLACEMENT_MAX_WORKERS; i++)
        extra[n_extra++] = d->workers.w[i].data_endpoint;
    ipc_close(&d->ipc, extra, n_extra);
    scheduler_free(d);
    workers_free(d);
    placement_free(&d->plan);
    topology_free(&d->topo);
    tokenizer_free(d->tok);
    d->tok = NULL;
    tensor_digests_free(&d->digests);
    if (d->have_model)
        bitnet_model_free(&d->model);
    d->have_model = false;
    if (d->sig_fd >= 0)
        close(d->sig_fd);
    d->sig_fd = -1;
}

void daemon_stop(struct daemon *d, const char *why)
{
    if (d->phase == PHASE_STOPPING)
        return;
    dlog("stopping: %s", why);
    notify_stopping(d, why);
    d->phase = PHASE_STOPPING;
    el_stop(&d->el);
}

void daemon_stop_drained(struct daemon *d, const char *why)
{
    if (d->phase == PHASE_STOPPING)
        return;
    int jobs = scheduler_n_running(d) + scheduler_n_queued(d);
    if (clients_stop_pending(d) || d->cfg.drain_timeout_s == 0 || jobs == 0) {
        daemon_stop(d, why);
        return;
    }
    dlog("%s: draining: %d job%s may run for up to %d s (--drain-timeout), then bitnetd stops; "
         "no new jobs meanwhile", why, jobs, jobs == 1 ? "" : "s", d->cfg.drain_timeout_s);
    notify_stopping(d, why);
    clients_drain_then_stop(d, (uint32_t)d->cfg.drain_timeout_s * 1000u);
}

void daemon_status(const struct daemon *d, Bitnet__DaemonStatusReply *r)
{
    bitnet__daemon_status_reply__init(r);
    if (d->phase == PHASE_STOPPING)
        r->state = BITNET__DAEMON_STATE__DAEMON_STATE_STOPPING;
    else if (d->clients.draining)
        r->state = BITNET__DAEMON_STATE__DAEMON_STATE_DRAINING;
    else if (d->phase == PHASE_STARTING)
        r->state = BITNET__DAEMON_STATE__DAEMON_STATE_STARTING;
    else
        r->state = BITNET__DAEMON_STATE__DAEMON_STATE_READY;
    r->software_version = BITNETD_VERSION;
    r->protocol_version = BITNET_PROTOCOL_VERSION;
    r->uptime_seconds = (clock_ms() - d->t_start_ms) / 1e3;
    r->model_path = (char *)d->model_path;
    r->model_sha256 = (char *)d->model_sha256;
    r->n_workers = (uint32_t)d->workers.n;
    r->n_workers_ready = (uint32_t)workers_n_ready(d);
    r->jobs_running = (uint32_t)scheduler_n_running(d);
    r->jobs_queued = (uint32_t)scheduler_n_queued(d);
    r->jobs_done = d->sched.jobs_done;
    r->tokens_generated = d->sched.tokens_generated;
    if (d->ipc.zap) {
        struct zap_stats zs;
        zap_get_stats(d->ipc.zap, &zs);
        r->keys_refused = zs.refused;
    }
    const struct wire_rx *rx[] = {&d->ctl_rx, &d->workers_rx, &d->results_rx};
    for (size_t i = 0; i < 3; i++) {
        r->malformed_rejected += rx[i]->counts.malformed;
        r->oversized_rejected += rx[i]->counts.oversized;
        r->wrong_version_rejected += rx[i]->counts.wrong_version;
    }
}

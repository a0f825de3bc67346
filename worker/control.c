/* The worker's side of the control conversation with the daemon: Hello, LoadShard,
 * KvOp, StatusRequest, heartbeats and error reports, all on the control DEALER. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "model/clock.h"
#include "worker/numa_bind.h"
#include "worker/worker.h"

static int send_control(struct worker *w, Bitnet__Envelope *env)
{
    struct errbuf e;
    int rc = wire_send(w->control, env, 0, &e);
    /* AGAIN: no daemon connected (IMMEDIATE) or it stopped reading. The message is
     * dropped rather than waited for, which would stall the loop; the daemon will ask
     * again or mark us dead, which is what it should do. Heartbeats and Hellos go
     * unmentioned: while the daemon is away there would be one such line per interval. */
    if (rc == WIRE_AGAIN && env->body_case != BITNET__ENVELOPE__BODY_HEARTBEAT &&
        env->body_case != BITNET__ENVELOPE__BODY_HELLO)
        worker_log(w->opts.id, "control: %s dropped: the daemon is not connected or not "
                               "reading", wire_body_name(env->body_case));
    else if (rc != WIRE_OK && rc != WIRE_AGAIN)
        worker_log(w->opts.id, "control: sending %s: %s", wire_body_name(env->body_case), e.msg);
    return rc;
}

void worker_report(struct worker *w, uint64_t request_id, Bitnet__ErrorCode code, const char *fmt,
                   ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    worker_log(w->opts.id, "%s", msg);
    Bitnet__Envelope env;
    Bitnet__Error err = BITNET__ERROR__INIT;
    wire_envelope_init(&env, request_id);
    err.code = code;
    err.message = msg;
    env.body_case = BITNET__ENVELOPE__BODY_ERROR;
    env.error = &err;
    send_control(w, &env);
}

void control_send_hello(struct worker *w)
{
    Bitnet__Envelope env;
    Bitnet__Hello h = BITNET__HELLO__INIT;
    wire_envelope_init(&env, w->next_request_id++);
    h.role = BITNET__ROLE__ROLE_WORKER;
    h.software_version = WORKER_SOFTWARE_VERSION;
    h.protocol_version = BITNET_PROTOCOL_VERSION;
    h.worker_id = (char *)w->opts.id;
    h.hostname = w->hostname;
    h.pid = (uint32_t)getpid();
    h.data_endpoint = w->data_endpoint;
    /* the daemon checks it against the key its allow-list admitted the connection with */
    if (strncmp(w->opts.control, "tcp://", 6) == 0)
        h.curve_public_key = w->curve_pub;
    env.body_case = BITNET__ENVELOPE__BODY_HELLO;
    env.hello = &h;
    w->hello_sent = send_control(w, &env) == WIRE_OK;
}

/* ---------------------------------------------------------------------------------------
 * Heartbeat */

static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, resident = 0;
    if (!f)
        return 0;
    int n = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    return n == 2 && page > 0 ? resident * (uint64_t)page : 0;
}

/* Share of the worker's CPUs spent in this process since the last heartbeat. */
static float cpu_busy(struct worker *w)
{
    struct timespec cpu;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
    double c = (double)cpu.tv_sec + (double)cpu.tv_nsec * 1e-9, t = clock_seconds();
    double dc = c - w->cpu_mark, dt = t - w->wall_mark;
    w->cpu_mark = c;
    w->wall_mark = t;
    int n = w->shard.loaded && w->shard.n_cpus ? w->shard.n_cpus : w->origin.n_cpus;
    if (dt <= 0 || n <= 0)
        return 0;
    double busy = dc / (dt * n);
    return (float)(busy < 0 ? 0 : busy > 1 ? 1 : busy);
}

void worker_heartbeat(struct worker *w)
{
    Bitnet__Envelope env;
    Bitnet__Heartbeat hb = BITNET__HEARTBEAT__INIT;
    wire_envelope_init(&env, 0);
    hb.role = BITNET__ROLE__ROLE_WORKER;
    hb.sender = (char *)w->opts.id;
    hb.monotonic_ms = clock_whole_ms();
    hb.active_sequences = shard_active_sequences(&w->shard);
    hb.queued_batches = 0; /* one step at a time: nothing waits inside the worker */
    hb.cpu_busy = cpu_busy(w);
    hb.rss_bytes = rss_bytes();
    hb.kv_bytes_used = shard_kv_bytes_used(&w->shard);
    env.body_case = BITNET__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    send_control(w, &env);
}

/* A load can touch gigabytes; heartbeats keep flowing meanwhile, as the daemon expects. */
static void load_tick(void *ctx)
{
    struct worker *w = ctx;
    uint64_t now = clock_whole_ms();
    if (now >= w->next_heartbeat_ms) {
        worker_heartbeat(w);
        w->next_heartbeat_ms = now + (uint64_t)w->opts.heartbeat_ms;
    }
}

/* ---------------------------------------------------------------------------------------
 * Requests */

static void describe_stage(const struct shard *s, char *out, size_t cap)
{
    int n;
    if (s->layer_begin < s->layer_end)
        n = snprintf(out, cap, "layers %u-%u", s->layer_begin, s->layer_end - 1);
    else
        n = snprintf(out, cap, "no layers");
    if (n > 0 && (size_t)n < cap)
        snprintf(out + n, cap - (size_t)n, "%s%s", s->has_embedding ? " +embedding" : "",
                 s->has_output ? " +output" : "");
}

/* Who may send to our tcp data socket from now on: LoadShard's list replaces the old one.
 * A bad list leaves nobody admitted: better no pipeline than an open one. */
static int set_data_senders(struct worker *w, const Bitnet__LoadShard *req, struct errbuf *e)
{
    if (!w->data_zap)
        return 0; /* ipc: the file system's permissions guard it */
    const char *const *keys = (const char *const *)req->data_sender_keys;
    if (zap_set_keys(w->data_zap, keys, req->n_data_sender_keys, e) < 0) {
        struct errbuf ignored;
        zap_set_keys(w->data_zap, NULL, 0, &ignored);
        return err_prefix(e, "data_sender_keys");
    }
    if (req->n_data_sender_keys == 0)
        worker_log(w->opts.id, "data: LoadShard names no sender: every connection to %s will "
                   "be refused (is the daemon older than this worker?)", w->data_endpoint);
    else
        worker_log(w->opts.id, "data: admitting sender key %s%s", keys[0],
                   req->n_data_sender_keys > 1 ? " and more" : "");
    return 0;
}

static void on_load_shard(struct worker *w, uint64_t request_id, const Bitnet__LoadShard *req)
{
    struct errbuf e;
    struct shard *s = &w->shard;
    /* the old shard goes first: the new one may need its memory and its CPUs */
    shard_unload(s, &w->origin, w->opts.id);
    worker_disconnect_next(w);
    struct shard_hooks hooks = {.log_id = w->opts.id, .tick = load_tick, .tick_ctx = w};
    /* on another host the daemon's path may not exist: our own copy, whose sha256
     * shard_load still checks against the one asked for */
    Bitnet__LoadShard mine = *req;
    if (w->opts.model)
        mine.model_path = (char *)w->opts.model;
    /* started by hand with a place of its own: that place, not the daemon's guess */
    int *node_pus = NULL, n_node_pus = 0, rc = 0;
    uint32_t cpus[1024];
    if (w->opts.numa_node >= 0) {
        rc = node_cpus(w->opts.numa_node, &node_pus, &n_node_pus, &e);
        for (int i = 0; rc == 0 && i < n_node_pus && i < 1024; i++)
            cpus[i] = (uint32_t)node_pus[i];
        mine.numa_node = w->opts.numa_node;
        mine.cpus = cpus;
        mine.n_cpus = (size_t)(n_node_pus < 1024 ? n_node_pus : 1024);
        mine.threads = (uint32_t)mine.n_cpus;
        free(node_pus);
    }
    if (w->opts.threads > 0)
        mine.threads = (uint32_t)w->opts.threads;
    /* the senders first: the previous stage may connect while we load */
    if (rc == 0)
        rc = set_data_senders(w, req, &e);
    if (rc == 0)
        rc = shard_load(s, &w->origin, &mine, &hooks, &e);
    if (rc == 0 && worker_connect_next(w, req->next_endpoint, req->next_server_key, &e) < 0) {
        shard_unload(s, &w->origin, w->opts.id);
        worker_disconnect_next(w);
        rc = -1;
    }
    Bitnet__Envelope env;
    Bitnet__LoadShardReply r = BITNET__LOAD_SHARD_REPLY__INIT;
    wire_envelope_init(&env, request_id);
    r.ok = rc == 0;
    r.resident_node = -1;
    if (rc == 0) {
        char what[96];
        describe_stage(s, what, sizeof what);
        r.bytes_loaded = s->bytes_loaded;
        r.load_seconds = s->load_seconds;
        r.resident_node = s->resident_node;
        r.model_sha256 = s->sha256;
        char node[32] = "no node";
        if (s->numa_node >= 0)
            snprintf(node, sizeof node, "node %d", s->numa_node);
        worker_log(w->opts.id, "loaded %s on %s in %.2f s (%.1f MiB, %d threads, %d slots x %d "
                               "positions) -> %s",
                   what, node, s->load_seconds, (double)s->bytes_loaded / 1048576.0, s->threads,
                   s->n_slots, s->kv_ctx, req->next_endpoint);
    } else {
        err_prefix(&e, "load_shard");
        r.error = e.msg;
        worker_log(w->opts.id, "%s", e.msg);
    }
    env.body_case = BITNET__ENVELOPE__BODY_LOAD_SHARD_REPLY;
    env.load_shard_reply = &r;
    send_control(w, &env);
}

static void on_status(struct worker *w, uint64_t request_id)
{
    const struct shard *s = &w->shard;
    Bitnet__Envelope env;
    Bitnet__StatusReply r = BITNET__STATUS_REPLY__INIT;
    wire_envelope_init(&env, request_id);
    r.worker_id = (char *)w->opts.id;
    r.loaded = s->loaded;
    r.numa_node = -1;
    uint32_t *cpus = NULL;
    if (s->loaded) {
        r.layer_begin = s->layer_begin;
        r.layer_end = s->layer_end;
        r.numa_node = s->numa_node;
        r.threads = (uint32_t)s->threads;
        r.tensor_parallel = (uint32_t)s->tp_size;
        r.bytes_loaded = s->bytes_loaded;
        r.model_sha256 = (char *)s->sha256;
        if (s->n_cpus && (cpus = malloc((size_t)s->n_cpus * sizeof *cpus))) {
            for (int i = 0; i < s->n_cpus; i++)
                cpus[i] = (uint32_t)s->cpus[i];
            r.n_cpus = (size_t)s->n_cpus;
            r.cpus = cpus;
        }
    }
    r.requests_served = w->requests_served;
    const struct wire_counters *c = &w->control_rx.counts, *d = &w->data_rx.counts;
    r.malformed_rejected = c->malformed + d->malformed;
    r.oversized_rejected = c->oversized + d->oversized;
    r.wrong_version_rejected = c->wrong_version + d->wrong_version;
    if (w->data_zap) {
        struct zap_stats zs;
        zap_get_stats(w->data_zap, &zs);
        r.keys_refused = zs.refused;
    }
    r.uptime_seconds = (double)(clock_whole_ms() - w->started_ms) / 1000.0;
    r.software_version = WORKER_SOFTWARE_VERSION;
    env.body_case = BITNET__ENVELOPE__BODY_STATUS_REPLY;
    env.status_reply = &r;
    send_control(w, &env);
    free(cpus);
}

static void on_kv_op(struct worker *w, uint64_t request_id, const Bitnet__KvOp *op)
{
    struct errbuf e;
    Bitnet__ErrorCode code = BITNET__ERROR_CODE__ERROR_CODE_BAD_REQUEST;
    if (stage_kv_op(&w->shard, op, &code, &e) < 0) {
        worker_report(w, request_id, code, "%s", e.msg);
        return;
    }
    Bitnet__Envelope env;
    Bitnet__Ack ack = BITNET__ACK__INIT;
    wire_envelope_init(&env, request_id);
    env.body_case = BITNET__ENVELOPE__BODY_ACK;
    env.ack = &ack;
    send_control(w, &env);
}

void control_handle(struct worker *w, const Bitnet__Envelope *env)
{
    switch (env->body_case) {
    case BITNET__ENVELOPE__BODY_HELLO_REPLY: {
        const Bitnet__HelloReply *r = env->hello_reply;
        if (r->accepted) {
            if (!w->hello_accepted)
                worker_log(w->opts.id, "accepted by %s", r->software_version && *r->software_version
                                                             ? r->software_version
                                                             : "the daemon");
            w->hello_accepted = true;
            w->hello_sent = false;
            w->next_hello_ms = 0;
        } else {
            /* a refusal is a deployment error (version, unknown id) that retrying
             * cannot fix */
            worker_log(w->opts.id, "refused by the daemon: %s",
                       r->reason && *r->reason ? r->reason : "no reason given");
            w->stop = true;
            w->exit_code = 1;
        }
        return;
    }
    case BITNET__ENVELOPE__BODY_LOAD_SHARD:
        on_load_shard(w, env->request_id, env->load_shard);
        return;
    case BITNET__ENVELOPE__BODY_KV_OP:
        on_kv_op(w, env->request_id, env->kv_op);
        return;
    case BITNET__ENVELOPE__BODY_STATUS_REQUEST:
        on_status(w, env->request_id);
        return;
    case BITNET__ENVELOPE__BODY_ERROR:
        if (env->error->code == BITNET__ERROR_CODE__ERROR_CODE_UNAUTHORIZED) {
            /* the daemon does not count us as joined (it declared us lost while we were
             * cut off, or it restarted): joining again is the way back */
            if (w->hello_accepted)
                worker_log(w->opts.id, "the daemon says: %s; saying Hello again",
                           env->error->message ? env->error->message : "not joined");
            w->hello_accepted = false;
            if (!w->next_hello_ms)
                w->next_hello_ms = clock_whole_ms();
            return;
        }
        worker_log(w->opts.id, "daemon reports error %d on request %llu: %s",
                   (int)env->error->code, (unsigned long long)env->request_id,
                   env->error->message ? env->error->message : "");
        return;
    case BITNET__ENVELOPE__BODY_ACK:
    case BITNET__ENVELOPE__BODY_HEARTBEAT:
        return;
    default:
        worker_report(w, env->request_id, BITNET__ERROR_CODE__ERROR_CODE_BAD_REQUEST,
                      "control: a worker does not take %s messages",
                      wire_body_name(env->body_case));
        return;
    }
}

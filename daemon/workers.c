#include "daemon/workers.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "daemon/daemon.h"
#include "daemon/supervisor.h"
#include "kernels/threadpool.h"

/* A worker that never says Hello, or never finishes loading, is stuck; these are far
 * above what a healthy one needs (loading maps and touches the weights: seconds). */
#define HELLO_TIMEOUT_MS 30000.0
#define LOAD_TIMEOUT_MS 600000.0
/* How long a WorkersRequest waits for StatusReplies before answering with what it has
 * (a stopped worker never answers). */
#define QUERY_TIMEOUT_MS 300.0
/* Restart delays for a worker that keeps dying before it is READY (a bad binary, a model
 * it cannot load): doubling, so that it cannot spin. One that was READY restarts at once. */
#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 10000
#define READY_STABLE_MS 5000.0

const char *worker_state_name(enum worker_state s)
{
    switch (s) {
    case WORKER_STOPPED: return "stopped";
    case WORKER_CONNECTING: return "connecting";
    case WORKER_LOADING: return "loading";
    case WORKER_READY: return "ready";
    case WORKER_DEAD: return "dead";
    case WORKER_WAITING: return "waiting";
    }
    return "?";
}

static Bitnet__WorkerState proto_state(enum worker_state s)
{
    switch (s) {
    case WORKER_CONNECTING: return BITNET__WORKER_STATE__WORKER_STATE_CONNECTING;
    case WORKER_LOADING: return BITNET__WORKER_STATE__WORKER_STATE_LOADING;
    case WORKER_READY: return BITNET__WORKER_STATE__WORKER_STATE_READY;
    case WORKER_WAITING: return BITNET__WORKER_STATE__WORKER_STATE_WAITING;
    default: return BITNET__WORKER_STATE__WORKER_STATE_DEAD;
    }
}

/* Marks the stages --remote-workers names ("w1,w2"). */
static int mark_remote(struct daemon *d, struct errbuf *e)
{
    struct workers *ws = &d->workers;
    const char *p = d->cfg.remote_workers;
    while (p && *p) {
        p += strspn(p, " ,");
        size_t len = strcspn(p, " ,");
        if (!len)
            break;
        char *end;
        long i = p[0] == 'w' ? strtol(p + 1, &end, 10) : -1;
        if (p[0] != 'w' || end == p + 1 || end != p + len || i < 0 || i >= ws->n)
            return err_set(e, "--remote-workers: '%.*s' is not a stage of this placement "
                              "(w0..w%d)", (int)len, p, ws->n - 1);
        if (ws->w[i].remote)
            return err_set(e, "--remote-workers: w%ld named twice", i);
        ws->w[i].remote = true;
        p += len;
    }
    return 0;
}

/* A local stage after a remote one takes its data on tcp, on the --listen interface at
 * port PORT + 2 + its stage (PORT: control, PORT + 1: results), under the host name the
 * remote workers are told for results. */
static int tcp_data_endpoint(struct daemon *d, struct worker *w, struct errbuf *e)
{
    const char *listen = d->cfg.listen + 6, *colon = strrchr(listen, ':');
    long port = strtol(colon + 1, NULL, 10) + 2 + w->stage;
    if (port > 65535)
        return err_set(e, "w%d: data port %ld is beyond 65535 (--listen a lower port)", w->stage,
                       port);
    const char *adv = d->ipc.tcp_results_ep + 6, *adv_colon = strrchr(adv, ':');
    if ((size_t)snprintf(w->data_bind, sizeof w->data_bind, "tcp://%.*s:%ld",
                         (int)(colon - listen), listen, port) >= sizeof w->data_bind ||
        (size_t)snprintf(w->data_endpoint, sizeof w->data_endpoint, "tcp://%.*s:%ld",
                         (int)(adv_colon - adv), adv, port) >= sizeof w->data_endpoint)
        return err_set(e, "w%d: data endpoint too long", w->stage);
    snprintf(w->data_key, sizeof w->data_key, "%s", d->ipc.curve_pub);
    w->tcp_data = true;
    return 0;
}

int workers_init(struct daemon *d, struct errbuf *e)
{
    struct workers *ws = &d->workers;
    ws->n = d->plan.n_workers;
    ws->w = calloc((size_t)ws->n, sizeof *ws->w);
    if (!ws->w)
        return err_set(e, "out of memory for %d workers", ws->n);
    if (mark_remote(d, e) < 0)
        return -1;
    for (int i = 0; i < ws->n; i++) {
        struct worker *w = &ws->w[i];
        char name[32];
        snprintf(w->id, sizeof w->id, "w%d", i);
        snprintf(name, sizeof name, "w%d.data", i);
        /* a remote stage's endpoint is whatever its worker announces when it joins */
        if (!w->remote &&
            ipc_endpoint(&d->ipc, name, w->data_endpoint, sizeof w->data_endpoint, e) < 0)
            return -1;
        w->stage = i;
        w->pw = &d->plan.w[i];
        w->state = WORKER_STOPPED;
        w->resident_node = -1;
        if (i > 0 && !w->remote && ws->w[i - 1].remote && tcp_data_endpoint(d, w, e) < 0)
            return -1;
    }
    ws->next_request_id = WORKERS_REQUEST_ID0;
    /* connected once: ZeroMQ reconnects by itself when stage 0 restarts at the same
     * endpoint. A remote stage 0 is connected to when it joins. */
    return ws->w[0].remote ? 0 : ipc_connect_feed(&d->ipc, ws->w[0].data_endpoint, "", e);
}

void workers_free(struct daemon *d)
{
    for (int i = 0; i < d->workers.n; i++)
        wire_free(d->workers.w[i].status);
    free(d->workers.w);
    d->workers.w = NULL;
    d->workers.n = 0;
}

int workers_n_ready(const struct daemon *d)
{
    int n = 0;
    for (int i = 0; i < d->workers.n; i++)
        n += d->workers.w[i].state == WORKER_READY;
    return n;
}

static void set_state(struct daemon *d, struct worker *w, enum worker_state s)
{
    w->state = s;
    if (s == WORKER_READY) {
        w->outage_logged = false;
        memset(&w->tsum, 0, sizeof w->tsum);
    }
    w->t_state_ms = clock_ms();
    bool ready = workers_n_ready(d) == d->workers.n;
    if (ready != d->workers.pipeline_ready) {
        d->workers.pipeline_ready = ready;
        d->workers.on_pipeline_changed(d->workers.on_pipeline_ctx, ready);
    }
}

static int start_worker(struct daemon *d, struct worker *w, struct errbuf *e)
{
    if (supervisor_spawn(d, w, e) < 0)
        return -1;
    w->starts++;
    w->t_heartbeat_ms = clock_ms();
    set_state(d, w, WORKER_CONNECTING);
    dlog("worker %s: started (pid %d%s)", w->id, (int)w->pid, w->starts > 1 ? ", restart" : "");
    return 0;
}

int workers_start_all(struct daemon *d, struct errbuf *e)
{
    for (int i = 0; i < d->workers.n; i++) {
        struct worker *w = &d->workers.w[i];
        if (!w->remote) {
            if (start_worker(d, w, e) < 0)
                return -1;
            continue;
        }
        w->t_heartbeat_ms = clock_ms();
        set_state(d, w, WORKER_CONNECTING);
        dlog("worker %s: remote, layers %d-%d; waiting for it to join on %s (bitnet-worker "
             "--id %s --control tcp://HOST:PORT --server-key DAEMON.pub --key %s.key --data "
             "tcp://ADDR:PORT)", w->id, w->pw->l0, w->pw->l1 - 1, d->ipc.tcp_workers_ep, w->id,
             w->id);
    }
    return 0;
}

/* "host b, 198.18.7.2", or what of it is known. */
static void describe_host(const struct worker *w, char *out, size_t cap)
{
    if (*w->host && *w->addr)
        snprintf(out, cap, "host %s, %s", w->host, w->addr);
    else if (*w->host || *w->addr)
        snprintf(out, cap, "host %s", *w->host ? w->host : w->addr);
    else
        snprintf(out, cap, "remote");
}

/* The first remote stage gone past --worker-timeout, with why; NULL if none. */
static struct worker *outage_of(const struct daemon *d, char *why, size_t cap)
{
    double now = clock_ms(), limit = d->cfg.worker_timeout_s * 1000.0;
    for (int i = 0; i < d->workers.n; i++) {
        struct worker *w = &d->workers.w[i];
        /* t_heartbeat_ms: any message, so a worker loading for long is not gone */
        if (!w->remote || w->state == WORKER_READY || now - w->t_heartbeat_ms < limit)
            continue;
        char host[200];
        describe_host(w, host, sizeof host);
        if (w->joined)
            snprintf(why, cap, "worker %s (%s) lost: no heartbeat for %.1f s", w->id, host,
                     (now - w->t_heartbeat_ms) / 1e3);
        else
            snprintf(why, cap, "worker %s (remote) has not joined: nothing connected for it in "
                     "%.1f s", w->id, (now - w->t_heartbeat_ms) / 1e3);
        return w;
    }
    return NULL;
}

bool workers_outage(const struct daemon *d, char *why, size_t cap)
{
    return outage_of(d, why, cap) != NULL;
}

/* Declares w dead: killed now if it still runs, started again once reaped (after the
 * backoff). The pipeline, if it was ready, is not any more. */
static void worker_lost(struct daemon *d, struct worker *w, const char *why)
{
    if (w->state == WORKER_STOPPED || w->state == WORKER_DEAD)
        return;
    if (w->remote) {
        /* nothing to kill or start here: the stage waits for a worker to join again */
        if (w->state == WORKER_CONNECTING)
            return;
        char host[200];
        describe_host(w, host, sizeof host);
        snprintf(d->workers.last_loss, sizeof d->workers.last_loss,
                 "worker %s (%s) lost while %s: %s", w->id, host, worker_state_name(w->state),
                 why);
        dlog("worker %s (%s) lost while %s: %s; waiting for it to join again (jobs fail "
             "after %d s without it)", w->id, host, worker_state_name(w->state), why,
             d->cfg.worker_timeout_s);
        set_state(d, w, WORKER_CONNECTING);
        return;
    }
    snprintf(d->workers.last_loss, sizeof d->workers.last_loss, "worker %s lost while %s: %s",
             w->id, worker_state_name(w->state), why);
    /* one that served a while comes back at once; one that dies soon after getting ready
     * (on the first step it is given, say) backs off as one that never got there */
    if (w->state == WORKER_READY && clock_ms() - w->t_state_ms > READY_STABLE_MS)
        w->backoff_ms = 0;
    else
        w->backoff_ms = w->backoff_ms ? w->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (w->backoff_ms > BACKOFF_MAX_MS)
        w->backoff_ms = BACKOFF_MAX_MS;
    dlog("worker %s lost while %s: %s", w->id, worker_state_name(w->state), why);
    if (w->pid > 0) {
        dlog("worker %s: SIGKILL to process %d", w->id, (int)w->pid);
        kill(w->pid, SIGKILL);
        set_state(d, w, WORKER_DEAD);
    } else {
        w->restart_at_ms = clock_ms() + w->backoff_ms;
        set_state(d, w, WORKER_STOPPED);
    }
}

static struct worker *by_pid(struct daemon *d, pid_t pid)
{
    for (int i = 0; i < d->workers.n; i++)
        if (d->workers.w[i].pid == pid)
            return &d->workers.w[i];
    return NULL;
}

static void *sock_of(const struct daemon *d, const struct worker *w)
{
    return w->remote ? d->ipc.workers_tcp : d->ipc.workers;
}

/* The routing id bitnetd addresses w by on its socket: the id a remote worker chose, the
 * one handed to a local process at its start. */
static const char *route_of(const struct worker *w)
{
    return w->remote ? w->id : w->route;
}

static struct worker *by_identity(struct daemon *d, void *sock, const struct wire_identity *id)
{
    for (int i = 0; i < d->workers.n; i++) {
        struct worker *w = &d->workers.w[i];
        const char *route = route_of(w);
        if (sock == sock_of(d, w) && route[0] && strlen(route) == id->len &&
            memcmp(route, id->bytes, id->len) == 0)
            return w;
    }
    return NULL;
}

void workers_on_exit(struct daemon *d, pid_t pid, int status)
{
    struct worker *w = by_pid(d, pid);
    if (!w)
        return;
    w->pid = 0;
    w->exit_status = status;
    char how[96];
    if (WIFSIGNALED(status))
        snprintf(how, sizeof how, "process %d killed by signal %d (%s)", (int)pid,
                 WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(how, sizeof how, "process %d exited with status %d", (int)pid,
                 WEXITSTATUS(status));
    if (d->phase == PHASE_STOPPING)
        return;
    if (w->state == WORKER_DEAD) {
        /* the kill was ours */
        w->restart_at_ms = clock_ms() + w->backoff_ms;
        set_state(d, w, WORKER_STOPPED);
    } else {
        worker_lost(d, w, how);
    }
    /* a worker that was READY comes back at once rather than at the next cron tick */
    if (w->state == WORKER_STOPPED && w->backoff_ms == 0) {
        struct errbuf e = {{0}};
        if (start_worker(d, w, &e) < 0) {
            dlog("worker %s: %s; trying again in %d ms", w->id, e.msg, BACKOFF_MAX_MS);
            w->restart_at_ms = clock_ms() + BACKOFF_MAX_MS;
        }
    }
}

/* The control socket a worker's stage talks on: remote stages only ever on the tcp one. */
static int send_to(struct daemon *d, struct worker *w, Bitnet__Envelope *env)
{
    struct errbuf e = {{0}};
    struct wire_identity id = {0};
    id.len = strlen(route_of(w));
    memcpy(id.bytes, route_of(w), id.len);
    int rc = wire_send_to(sock_of(d, w), &id, env, 0, &e);
    if (rc != WIRE_OK)
        dlog("worker %s: sending %s: %s", w->id, wire_body_name(env->body_case),
             rc == WIRE_AGAIN ? "its queue is full" : e.msg);
    return rc;
}

/* Where w's output goes: the next stage's data endpoint, or the daemon's results socket
 * (its tcp one for a remote last stage). False while the next stage is remote and has
 * not joined: its endpoint is not known yet. */
static bool next_target(const struct daemon *d, const struct worker *w, const char **ep,
                        const char **key)
{
    if (w->stage + 1 == d->workers.n) {
        *ep = w->remote ? d->ipc.tcp_results_ep : d->ipc.results_ep;
        *key = w->remote ? d->ipc.curve_pub : "";
        return true;
    }
    const struct worker *n = &d->workers.w[w->stage + 1];
    *ep = n->data_endpoint;
    *key = n->data_key;
    return **ep != 0;
}

/* The CURVE public key that pushes Forward into w: the previous stage's own when that one
 * is remote; else the daemon's, which both its stage-0 feed and its local workers (started
 * with --key of the daemon's key file) send as. "" while a remote previous stage has not
 * joined yet. Only a w with a tcp data socket asks: an ipc one has no allow-list. */
static const char *sender_key(const struct daemon *d, const struct worker *w)
{
    const struct worker *p = w->stage > 0 ? &d->workers.w[w->stage - 1] : NULL;
    return p && p->remote ? p->data_key : d->ipc.curve_pub;
}

static int send_load_shard(struct daemon *d, struct worker *w, const char *next_ep,
                           const char *next_key)
{
    const struct placement_worker *pw = w->pw;
    Bitnet__LoadShard ls = BITNET__LOAD_SHARD__INIT;
    uint32_t cpus[1024];
    ls.model_path = d->model_path;
    ls.model_sha256 = d->model_sha256;
    ls.layer_begin = (uint32_t)pw->l0;
    ls.layer_end = (uint32_t)pw->l1;
    ls.has_embedding = pw->has_embedding;
    ls.has_output = pw->has_output;
    if (w->remote) {
        /* the plan's CPUs and nodes are this machine's: another host runs its stage on
         * every CPU it has (threads 0), unbound */
        ls.threads = 0;
        ls.numa_node = -1;
    } else if (d->synthetic_topology) {
        /* A described topology's CPU and node numbers belong to another machine: here
         * they may not exist, or name the wrong cores. Such a plan only decides layer
         * ranges and thread counts (clipped to the CPUs this machine has); the workers
         * run unpinned, and their memory unbound. */
        int have = cpus_available();
        ls.threads = (uint32_t)(pw->threads < have ? pw->threads : have);
        ls.numa_node = -1;
    } else {
        int n = pw->n_pus < 1024 ? pw->n_pus : 1024;
        for (int i = 0; i < n; i++)
            cpus[i] = (uint32_t)pw->pus[i];
        ls.n_cpus = (size_t)n;
        ls.cpus = cpus;
        ls.threads = (uint32_t)pw->threads;
        ls.numa_node = pw->node;
    }
    if (pw->tp > 1) {
        ls.tensor_parallel = (uint32_t)pw->tp;
        if (ls.n_cpus) {
            ls.n_tp_numa_nodes = (size_t)pw->tp;
            ls.tp_numa_nodes = (int32_t *)pw->tp_nodes;
        }
    }
    ls.kv_ctx = (uint32_t)d->n_ctx;
    ls.kv_type = d->cfg.kv_type == KV_TYPE_Q8    ? BITNET__ELEM_TYPE__ELEM_TYPE_Q8
                 : d->cfg.kv_type == KV_TYPE_F16 ? BITNET__ELEM_TYPE__ELEM_TYPE_F16
                                                 : BITNET__ELEM_TYPE__ELEM_TYPE_F32;
    ls.lm_head_q8 = d->cfg.lm_head_q8;
    ls.act_type = (Bitnet__ElemType)d->cfg.act_type;
    ls.next_endpoint = (char *)next_ep;
    ls.next_server_key = (char *)next_key;
    /* a remote stage's tcp data socket admits only this key (its ZAP allow-list) */
    char *senders[1] = {(char *)sender_key(d, w)};
    if (w->remote || w->tcp_data) {
        ls.n_data_sender_keys = 1;
        ls.data_sender_keys = senders;
    }
    if (w->remote) {
        ls.tensor_digests.data = d->digests.sha;
        ls.tensor_digests.len = d->digests.n * TENSOR_DIGEST_LEN;
    }
    ls.max_sequences = (uint32_t)d->cfg.max_sequences;
    Bitnet__Envelope env;
    wire_envelope_init(&env, ++d->workers.next_request_id);
    env.body_case = BITNET__ENVELOPE__BODY_LOAD_SHARD;
    env.load_shard = &ls;
    w->load_request_id = env.request_id;
    snprintf(w->told_next, sizeof w->told_next, "%s", next_ep);
    snprintf(w->told_next_key, sizeof w->told_next_key, "%s", next_key);
    return send_to(d, w, &env);
}

/* Sends w its LoadShard, or parks it in WAITING until its next stage has joined (to know
 * where to send) and, for a remote w after a remote stage, its previous stage has (to know
 * whom to admit). */
static void load_or_wait(struct daemon *d, struct worker *w)
{
    const char *ep, *key;
    bool have_next = next_target(d, w, &ep, &key);
    if (!have_next || ((w->remote || w->tcp_data) && !*sender_key(d, w))) {
        if (w->state != WORKER_WAITING)
            dlog("worker %s: waiting for w%d to join before loading (%s is not known yet)",
                 w->id, have_next ? w->stage - 1 : w->stage + 1,
                 have_next ? "the key it sends with" : "its data endpoint");
        set_state(d, w, WORKER_WAITING);
        return;
    }
    if (send_load_shard(d, w, ep, key) != WIRE_OK) {
        worker_lost(d, w, "could not send LoadShard");
        return;
    }
    set_state(d, w, WORKER_LOADING);
}

/* A neighbour of a remote stage that (re)joined: LoadShard is the one message that says
 * where to send and whom to admit, so a waiting neighbour loads now, and a loaded one
 * again when what it was told has changed (why says so in the log). */
static void reload_neighbour(struct daemon *d, struct worker *n, bool changed, const char *why)
{
    if (n->state == WORKER_WAITING) {
        load_or_wait(d, n);
    } else if ((n->state == WORKER_LOADING || n->state == WORKER_READY) && changed) {
        dlog("worker %s: %s", n->id, why);
        load_or_wait(d, n);
    }
}

/* A remote stage joined at w->data_endpoint: whoever sends to it must send there. */
static void data_endpoint_known(struct daemon *d, struct worker *w)
{
    if (w->stage == 0) {
        struct errbuf e = {{0}};
        if (ipc_connect_feed(&d->ipc, w->data_endpoint, w->data_key, &e) < 0)
            dlog("worker %s: %s", w->id, e.msg);
        return;
    }
    struct worker *p = &d->workers.w[w->stage - 1];
    /* reloading costs a load, so only when a remote stage came back somewhere else */
    char what[400];
    snprintf(what, sizeof what, "its next stage %s is now at %s; loading it again to send there",
             w->id, w->data_endpoint);
    reload_neighbour(d, p, strcmp(p->told_next, w->data_endpoint) != 0 ||
                               strcmp(p->told_next_key, w->data_key) != 0, what);
}

/* Remote stage w joined with a key that may be new: the stage after it admits senders by
 * key, so it has to be told. Only LoadShard tells, which costs a load; a stage that comes
 * back with the key it had changes nothing. (The stage after a remote one is remote.) */
static void sender_key_known(struct daemon *d, struct worker *w, const char *old_key)
{
    if (w->stage + 1 == d->workers.n)
        return;
    char what[200];
    snprintf(what, sizeof what, "its previous stage %s now sends with key %s; loading it again "
             "to admit that key", w->id, w->data_key);
    reload_neighbour(d, &d->workers.w[w->stage + 1], strcmp(old_key, w->data_key) != 0, what);
}

static void send_status_request(struct daemon *d, struct worker *w, uint64_t request_id,
                                bool *sent)
{
    Bitnet__StatusRequest sr = BITNET__STATUS_REQUEST__INIT;
    Bitnet__Envelope env;
    wire_envelope_init(&env, request_id);
    env.body_case = BITNET__ENVELOPE__BODY_STATUS_REQUEST;
    env.status_request = &sr;
    bool ok = send_to(d, w, &env) == WIRE_OK;
    if (sent)
        *sent = ok;
}

static void reply_hello(void *sock, const struct wire_identity *id, uint64_t request_id,
                        const char *refusal)
{
    Bitnet__HelloReply hr = BITNET__HELLO_REPLY__INIT;
    hr.accepted = refusal == NULL;
    hr.reason = (char *)(refusal ? refusal : "");
    hr.software_version = BITNETD_VERSION;
    hr.protocol_version = BITNET_PROTOCOL_VERSION;
    Bitnet__Envelope env;
    wire_envelope_init(&env, request_id);
    env.body_case = BITNET__ENVELOPE__BODY_HELLO_REPLY;
    env.hello_reply = &hr;
    struct errbuf e = {{0}};
    if (wire_send_to(sock, id, &env, 0, &e) != WIRE_OK)
        dlog("worker socket: HelloReply: %s", e.msg);
    if (refusal)
        dlog("worker %.*s: Hello refused: %s", (int)id->len, (const char *)id->bytes, refusal);
}

/* What disqualifies a Hello for remote stage w, in why ("" when nothing). */
static void remote_hello_problem(const struct worker *w, const struct wire_identity *id,
                                 const Bitnet__Hello *h, char *why, size_t cap)
{
    const char *key = h->curve_public_key ? h->curve_public_key : "";
    const char *ep = h->data_endpoint ? h->data_endpoint : "";
    why[0] = 0;
    if (!id->user_id[0])
        snprintf(why, cap, "worker %s is remote: it joins over CURVE on the --listen endpoint, "
                 "not on this socket", w->id);
    else if (strcmp(key, id->user_id) != 0)
        /* the allow-list admitted the connection's key; the Hello must be that worker's */
        snprintf(why, cap, "Hello says key '%.40s' but the connection was admitted with %.40s",
                 key, id->user_id);
    else if (strncmp(ep, "tcp://", 6) != 0)
        snprintf(why, cap, "remote worker %s must take its data on tcp:// (--data "
                 "tcp://ADDR:PORT), not '%.150s'", w->id, ep);
    else if (strlen(ep) >= sizeof w->data_endpoint)
        snprintf(why, cap, "data endpoint %.100s...: longer than %zu characters", ep,
                 sizeof w->data_endpoint - 1);
}

/* The process at the other end of a local connection, from the kernel (SO_PEERCRED):
 * unlike a routing id or a pid written in a message, no other process can claim it.
 * -1 when unknown. */
static pid_t conn_pid(const struct wire_identity *id)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (id->conn_fd < 0 || getsockopt(id->conn_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return -1;
    return cred.pid;
}

static bool named_local(const struct daemon *d, const char *worker_id)
{
    for (int i = 0; i < d->workers.n; i++)
        if (!d->workers.w[i].remote && strcmp(d->workers.w[i].id, worker_id) == 0)
            return true;
    return false;
}

static void on_hello(struct daemon *d, void *sock, struct worker *w,
                     const struct wire_identity *id, const Bitnet__Envelope *env)
{
    const Bitnet__Hello *h = env->hello;
    char why[400];
    const char *hid = h->worker_id ? h->worker_id : "";
    if (h->role != BITNET__ROLE__ROLE_WORKER) {
        snprintf(why, sizeof why, "this socket is for workers (Hello role %d)", (int)h->role);
    } else if (h->protocol_version != BITNET_PROTOCOL_VERSION) {
        snprintf(why, sizeof why, "protocol version mismatch: worker speaks protocol %u, "
                 "bitnetd speaks %d", h->protocol_version, BITNET_PROTOCOL_VERSION);
    } else if (!w && named_local(d, hid)) {
        snprintf(why, sizeof why, "worker %.16s is started by bitnetd, and only that process "
                 "knows the routing id it must connect under", hid);
    } else if (!w) {
        snprintf(why, sizeof why, "unknown worker id '%.64s' (this placement has w0..w%d)",
                 hid, d->workers.n - 1);
    } else if (strcmp(hid, w->id) != 0) {
        snprintf(why, sizeof why, "Hello names worker '%.64s' but the connection is '%s'", hid,
                 w->id);
    } else if (w->remote) {
        remote_hello_problem(w, id, h, why, sizeof why);
    } else if (id->user_id[0]) {
        snprintf(why, sizeof why, "worker %s is a local stage that bitnetd starts itself; it "
                 "cannot join over tcp (list it in --remote-workers to run it elsewhere)", w->id);
    } else if (w->pid <= 0 || conn_pid(id) != w->pid) {
        /* another process using the worker's id (any process of this user can connect) */
        snprintf(why, sizeof why, "the connection is process %d's, not the %s process bitnetd "
                 "started (pid %d)", (int)conn_pid(id), w->id, (int)w->pid);
    } else if ((int)h->pid == (int)w->pid && (w->state == WORKER_LOADING ||
                                               w->state == WORKER_READY ||
                                               w->state == WORKER_WAITING)) {
        /* the process already accepted, saying Hello again before our answer reached it
         * (its retry timer, or a connection event): yes again, and nothing changes */
        reply_hello(sock, id, env->request_id, NULL);
        return;
    } else if (w->state != WORKER_CONNECTING || (int)h->pid != (int)w->pid) {
        /* e.g. a late Hello from a process already killed: the worker bitnetd started
         * must run the worker program itself (exec), so its pid is the one forked */
        snprintf(why, sizeof why, "pid %u is not the %s process bitnetd expects (pid %d, %s)",
                 h->pid, w->id, (int)w->pid, worker_state_name(w->state));
    } else if (h->data_endpoint && *h->data_endpoint &&
               strcmp(h->data_endpoint, w->data_endpoint) != 0) {
        snprintf(why, sizeof why, "data endpoint %.150s is not the one it was given, %s",
                 h->data_endpoint, w->data_endpoint);
    } else {
        why[0] = 0;
    }
    reply_hello(sock, id, env->request_id, *why ? why : NULL);
    if (*why)
        return;
    /* a remote stage that says Hello again was restarted (or replaced) over there: what
     * its predecessor loaded is gone */
    if (w->remote && (w->state == WORKER_LOADING || w->state == WORKER_READY))
        worker_lost(d, w, "it said Hello again (restarted)");
    snprintf(w->host, sizeof w->host, "%s", h->hostname ? h->hostname : "");
    snprintf(w->software, sizeof w->software, "%s", h->software_version ? h->software_version : "");
    w->t_heartbeat_ms = clock_ms();
    char old_key[sizeof w->data_key];
    snprintf(old_key, sizeof old_key, "%s", w->data_key);
    if (w->remote) {
        snprintf(w->data_endpoint, sizeof w->data_endpoint, "%s", h->data_endpoint);
        snprintf(w->data_key, sizeof w->data_key, "%s", h->curve_public_key);
        snprintf(w->addr, sizeof w->addr, "%s", id->peer_address);
        char host[200];
        describe_host(w, host, sizeof host);
        dlog("worker %s: joined from %s (key %s), data at %s", w->id, host, w->data_key,
             w->data_endpoint);
        w->joined = true;
    }
    /* the next stage first: told the new key before this one can send with it */
    if (w->remote)
        sender_key_known(d, w, old_key);
    load_or_wait(d, w);
    if (w->remote)
        data_endpoint_known(d, w);
}

static void on_loaded(struct daemon *d, struct worker *w, uint64_t request_id,
                      const Bitnet__LoadShardReply *r)
{
    if (request_id != w->load_request_id) {
        /* a LoadShard sent again since (its next stage moved): this reply is for the old */
        dlog("worker %s: reply to an earlier LoadShard, ignored", w->id);
        return;
    }
    if (w->state != WORKER_LOADING) {
        dlog("worker %s: LoadShardReply while %s, ignored", w->id, worker_state_name(w->state));
        return;
    }
    char why[600];
    if (!r->ok) {
        snprintf(why, sizeof why, "LoadShard failed: %s", r->error ? r->error : "(no reason)");
        worker_lost(d, w, why);
        return;
    }
    if (r->model_sha256 && *r->model_sha256 && strcmp(r->model_sha256, d->model_sha256) != 0) {
        snprintf(why, sizeof why, "loaded model %.64s, not %s", r->model_sha256, d->model_sha256);
        worker_lost(d, w, why);
        return;
    }
    w->bytes_loaded = r->bytes_loaded;
    w->load_seconds = r->load_seconds;
    w->resident_node = r->resident_node;
    w->t_heartbeat_ms = clock_ms();
    dlog("worker %s: ready, layers %d-%d, %.1f MiB in %.2f s, weights on node %d", w->id,
         w->pw->l0, w->pw->l1 - 1, (double)r->bytes_loaded / (1 << 20), r->load_seconds,
         r->resident_node);
    send_status_request(d, w, ++d->workers.next_request_id, NULL);
    set_state(d, w, WORKER_READY);
}

/* ---- stage timings ---- */

static void stage_stats(const struct worker *w, Bitnet__StageTimingStats *t)
{
    bitnet__stage_timing_stats__init(t);
    uint64_t n = w->tsum.steps;
    t->steps = n;
    if (!n)
        return;
    t->queue_us = w->tsum.queue_us / (double)n;
    t->compute_us = w->tsum.compute_us / (double)n;
    t->send_us = w->tsum.send_us / (double)n;
    t->hop_in_us = w->tsum.hop_in_n ? w->tsum.hop_in_us / (double)w->tsum.hop_in_n : -1;
    t->hop_out_us = w->tsum.hop_out_n ? w->tsum.hop_out_us / (double)w->tsum.hop_out_n : -1;
    t->step_us = w->tsum.step_us / (double)n;
}

void workers_add_timings(struct daemon *d, Bitnet__StageTiming *const *t, size_t n,
                         uint64_t sent_us, uint64_t got_us)
{
    struct workers *ws = &d->workers;
    if (n != (size_t)ws->n)
        return; /* a step from before the pipeline changed */
    for (size_t i = 0; i < n; i++) {
        struct worker *w = &ws->w[i];
        if (!t[i]->worker_id || strcmp(t[i]->worker_id, w->id) != 0)
            return;
        w->tsum.steps++;
        w->tsum.queue_us += (double)t[i]->queue_us;
        w->tsum.compute_us += (double)t[i]->compute_us;
        w->tsum.send_us += (double)t[i]->send_us;
        /* the hop's two ends read one clock only when both are on this host */
        bool prev_local = i == 0 || !ws->w[i - 1].remote;
        uint64_t from = i == 0 ? sent_us : t[i - 1]->sent_mono_us;
        if (!w->remote && prev_local && t[i]->recv_mono_us >= from && from) {
            w->tsum.hop_in_us += (double)(t[i]->recv_mono_us - from);
            w->tsum.hop_in_n++;
        }
        if (i + 1 == n) {
            w->tsum.step_us += (double)(got_us - sent_us);
            if (!w->remote && got_us >= t[i]->sent_mono_us && t[i]->sent_mono_us) {
                w->tsum.hop_out_us += (double)(got_us - t[i]->sent_mono_us);
                w->tsum.hop_out_n++;
            }
        }
    }
}

/* ---- WorkersRequest ---- */

static void answer_query(struct daemon *d, int qi)
{
    struct workers *ws = &d->workers;
    struct workers_query q = ws->queries[qi];
    ws->queries[qi] = ws->queries[--ws->n_queries];
    Bitnet__WorkerInfo *info = calloc((size_t)ws->n, sizeof *info);
    Bitnet__StageTimingStats *ts = calloc((size_t)ws->n, sizeof *ts);
    Bitnet__WorkerInfo **ptrs = calloc((size_t)ws->n, sizeof *ptrs);
    if (!info || !ptrs || !ts) {
        free(info), free(ptrs), free(ts);
        clients_send_error(d, &q.client, q.request_id, BITNET__ERROR_CODE__ERROR_CODE_OUT_OF_MEMORY,
                           "workers: out of memory");
        return;
    }
    double now = clock_ms();
    for (int i = 0; i < ws->n; i++) {
        const struct worker *w = &ws->w[i];
        bitnet__worker_info__init(&info[i]);
        info[i].state = proto_state(w->state);
        info[i].endpoint = (char *)w->data_endpoint;
        info[i].host = (char *)w->host;
        info[i].last_heartbeat_ms_ago =
            w->t_heartbeat_ms > 0 ? (uint64_t)(now - w->t_heartbeat_ms) : 0;
        info[i].status = w->status ? w->status->status_reply : NULL;
        stage_stats(w, &ts[i]);
        info[i].timing = &ts[i];
        info[i].starts = w->starts;
        ptrs[i] = &info[i];
    }
    Bitnet__WorkersReply wr = BITNET__WORKERS_REPLY__INIT;
    wr.n_workers = (size_t)ws->n;
    wr.workers = ptrs;
    Bitnet__Envelope env;
    wire_envelope_init(&env, q.request_id);
    env.body_case = BITNET__ENVELOPE__BODY_WORKERS_REPLY;
    env.workers_reply = &wr;
    clients_send(d, &q.client, &env);
    free(ts);
    free(info);
    free(ptrs);
}

void workers_query(struct daemon *d, const struct wire_identity *client, uint64_t request_id)
{
    struct workers *ws = &d->workers;
    if (ws->n_queries == WORKERS_MAX_QUERIES) {
        /* too many at once: answer the oldest with what is known */
        answer_query(d, 0);
    }
    struct workers_query *q = &ws->queries[ws->n_queries++];
    memset(q, 0, sizeof *q);
    q->client = *client;
    q->request_id = request_id;
    q->status_id = ++ws->next_request_id;
    q->deadline_ms = clock_ms() + QUERY_TIMEOUT_MS;
    bool any = false;
    for (int i = 0; i < ws->n; i++) {
        struct worker *w = &ws->w[i];
        if (w->state == WORKER_LOADING || w->state == WORKER_READY) {
            send_status_request(d, w, q->status_id, &q->waiting[i]);
            any |= q->waiting[i];
        }
    }
    if (!any)
        answer_query(d, ws->n_queries - 1);
}

static void on_status(struct daemon *d, struct worker *w, Bitnet__Envelope *env)
{
    wire_free(w->status);
    w->status = env;
    struct workers *ws = &d->workers;
    for (int qi = 0; qi < ws->n_queries; qi++) {
        struct workers_query *q = &ws->queries[qi];
        if (q->status_id != env->request_id)
            continue;
        q->waiting[w->stage] = false;
        bool left = false;
        for (int i = 0; i < ws->n; i++)
            left |= q->waiting[i];
        if (!left)
            answer_query(d, qi--);
    }
}

/* ---- control socket ---- */

/* Handles one envelope from a worker. Returns true when it kept env (a StatusReply). */
static bool on_message(struct daemon *d, void *sock, struct worker *w,
                       const struct wire_identity *id, Bitnet__Envelope *env)
{
    if (env->body_case == BITNET__ENVELOPE__BODY_HELLO) {
        on_hello(d, sock, w, id, env);
        return false;
    }
    /* a stage's messages count only on its own socket, and a remote one's only with the
     * key it joined with (a restarted worker with a new key says Hello first) */
    if (w && (sock != sock_of(d, w) ||
              (w->remote && w->joined && strcmp(id->user_id, w->data_key) != 0)))
        w = NULL;
    if (!w) {
        struct errbuf e = {{0}};
        wire_send_error(sock, id, env->request_id,
                        BITNET__ERROR_CODE__ERROR_CODE_UNAUTHORIZED,
                        "unknown peer: send Hello with a worker id of this placement", 0, &e);
        return false;
    }
    if (w->remote && w->state == WORKER_CONNECTING) {
        /* a remote worker declared lost that is still there (a network outage ended): it
         * believes it is joined, so tell it to say Hello again */
        struct errbuf e = {{0}};
        char msg[96];
        snprintf(msg, sizeof msg, "not joined: %s was declared lost; send Hello again", w->id);
        wire_send_error(sock, id, 0, BITNET__ERROR_CODE__ERROR_CODE_UNAUTHORIZED, msg, 0, &e);
        return false;
    }
    /* what a killed process sent before it died may still be queued: ignore it */
    if (w->state == WORKER_STOPPED || w->state == WORKER_DEAD || w->state == WORKER_CONNECTING)
        return false;
    /* and a local one's only from the process bitnetd started: a routing id is whatever
     * the peer says, so another process could otherwise send an Error or a bad
     * LoadShardReply under the id and have the real worker killed */
    if (!w->remote && (w->pid <= 0 || conn_pid(id) != w->pid)) {
        /* logged at the 1st, 2nd, 4th, 8th... so that a flood cannot fill the log */
        uint64_t n = ++w->n_foreign;
        if ((n & (n - 1)) == 0)
            dlog("worker %s: %s from process %d, not the worker's (pid %d): ignored (%llu so "
                 "far)", w->id, wire_body_name(env->body_case), (int)conn_pid(id), (int)w->pid,
                 (unsigned long long)n);
        return false;
    }
    w->t_heartbeat_ms = clock_ms();
    switch (env->body_case) {
    case BITNET__ENVELOPE__BODY_HEARTBEAT:
        if (env->heartbeat->busy_step_id)
            scheduler_step_progress(d, env->heartbeat->busy_step_id);
        return false;
    case BITNET__ENVELOPE__BODY_ACK:
        scheduler_on_control_answer(d, env->request_id);
        return false;
    case BITNET__ENVELOPE__BODY_LOAD_SHARD_REPLY:
        on_loaded(d, w, env->request_id, env->load_shard_reply);
        return false;
    case BITNET__ENVELOPE__BODY_STATUS_REPLY:
        on_status(d, w, env);
        return true;
    case BITNET__ENVELOPE__BODY_ERROR: {
        const char *msg = env->error->message ? env->error->message : "";
        dlog("worker %s: error (request %llu): %s", w->id, (unsigned long long)env->request_id,
             msg);
        char why[600];
        snprintf(why, sizeof why, "worker %s: %s", w->id, msg);
        scheduler_step_failed(d, env->request_id, why);
        scheduler_on_control_answer(d, env->request_id);
        return false;
    }
    default:
        dlog("worker %s: unexpected %s, ignored", w->id, wire_body_name(env->body_case));
        return false;
    }
}

void workers_on_control(struct daemon *d, void *sock)
{
    /* bounded, so a chatty worker cannot starve the other sockets */
    for (int k = 0; k < 256; k++) {
        struct wire_identity id;
        Bitnet__Envelope *env = NULL;
        struct errbuf e = {{0}};
        int rc = wire_recv_from(sock, &d->workers_rx, &id, &env, 0, &e);
        if (rc == WIRE_AGAIN)
            return;
        if (rc == WIRE_ERROR) {
            dlog("worker socket: %s", e.msg);
            return;
        }
        if (wire_rc_is_reject(rc)) {
            dlog("worker socket: refused a message from %.*s: %s", (int)id.len,
                 (const char *)id.bytes, e.msg);
            if (id.len)
                wire_send_error(sock, &id, 0, wire_rc_error_code(rc), e.msg, 0, &e);
            continue;
        }
        if (!on_message(d, sock, by_identity(d, sock, &id), &id, env))
            wire_free(env);
    }
}

int workers_kv_drop(struct daemon *d, uint32_t slot, uint64_t *request_id)
{
    Bitnet__KvOp op = BITNET__KV_OP__INIT;
    op.kind = BITNET__KV_OP_KIND__KV_OP_KIND_DROP;
    op.seq_id = slot;
    Bitnet__Envelope env;
    wire_envelope_init(&env, ++d->workers.next_request_id);
    env.body_case = BITNET__ENVELOPE__BODY_KV_OP;
    env.kv_op = &op;
    int sent = 0;
    for (int i = 0; i < d->workers.n; i++)
        if (d->workers.w[i].state == WORKER_READY)
            sent += send_to(d, &d->workers.w[i], &env) == WIRE_OK;
    *request_id = env.request_id;
    return sent;
}

/* A remote stage gone past --worker-timeout: the jobs waiting for it fail now, with a
 * reason naming it (new ones are refused by clients.c meanwhile). */
static void check_outage(struct daemon *d)
{
    char why[400];
    struct worker *w = outage_of(d, why, sizeof why);
    if (!w)
        return;
    if (!w->outage_logged) {
        dlog("%s: new jobs are refused until it joins again", why);
        w->outage_logged = true;
    }
    int n = scheduler_n_running(d) + scheduler_n_queued(d);
    if (n) {
        dlog("%s: failing %d job%s", why, n, n > 1 ? "s" : "");
        scheduler_fail_all(d, why);
    }
}

double workers_cron(struct daemon *d, double now)
{
    double next = 100;
    for (int i = 0; i < d->workers.n; i++) {
        struct worker *w = &d->workers.w[i];
        char why[128];
        /* a remote worker waiting for its next stage sits in its idle loop, heartbeats
         * flowing; silence there is the only sign of a lost host. (Not while loading:
         * parts of a load may outlast the heartbeat timeout, as for a local worker; a
         * remote one that dies then fails the jobs after --worker-timeout all the same.) */
        if (w->remote && w->state == WORKER_WAITING &&
            now - w->t_heartbeat_ms > d->cfg.heartbeat_timeout_ms) {
            snprintf(why, sizeof why, "no heartbeat for %.1f s", (now - w->t_heartbeat_ms) / 1000);
            worker_lost(d, w, why);
        }
        switch (w->state) {
        case WORKER_CONNECTING:
            /* a remote stage waits as long as it takes: there is nothing to restart */
            if (!w->remote && now - w->t_state_ms > HELLO_TIMEOUT_MS)
                worker_lost(d, w, "no Hello within 30 s");
            break;
        case WORKER_WAITING:
            break;
        case WORKER_LOADING:
            if (now - w->t_state_ms > LOAD_TIMEOUT_MS)
                worker_lost(d, w, "LoadShard not answered within 600 s");
            break;
        case WORKER_READY:
            if (now - w->t_heartbeat_ms > d->cfg.heartbeat_timeout_ms) {
                snprintf(why, sizeof why, "no heartbeat for %.1f s",
                         (now - w->t_heartbeat_ms) / 1000);
                worker_lost(d, w, why);
            }
            break;
        case WORKER_STOPPED:
            if (d->phase == PHASE_STOPPING)
                break;
            if (now >= w->restart_at_ms) {
                struct errbuf e = {{0}};
                if (start_worker(d, w, &e) < 0) {
                    dlog("worker %s: %s; trying again in %d ms", w->id, e.msg, BACKOFF_MAX_MS);
                    w->restart_at_ms = now + BACKOFF_MAX_MS;
                }
            } else if (w->restart_at_ms - now < next) {
                next = w->restart_at_ms - now;
            }
            break;
        case WORKER_DEAD:
            break;
        }
    }
    for (int qi = 0; qi < d->workers.n_queries; qi++)
        if (now >= d->workers.queries[qi].deadline_ms)
            answer_query(d, qi--);
    check_outage(d);
    return next;
}

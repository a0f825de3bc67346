#include "daemon/clients.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/daemon.h"
#include "daemon/plan.h"

int clients_send(struct daemon *d, const struct wire_identity *to, Bitnet__Envelope *env)
{
    struct errbuf e = {{0}};
    int rc = wire_send_to(d->ipc.ctl, to, env, 0, &e);
    if (rc == WIRE_AGAIN)
        dlog("client: %s dropped: the client reads too slowly", wire_body_name(env->body_case));
    else if (rc != WIRE_OK && rc != WIRE_UNREACHABLE)
        dlog("client: sending %s: %s", wire_body_name(env->body_case), e.msg);
    return rc;
}

void clients_send_error(struct daemon *d, const struct wire_identity *to, uint64_t request_id,
                        Bitnet__ErrorCode code, const char *message)
{
    Bitnet__Error err = BITNET__ERROR__INIT;
    err.code = code;
    err.message = (char *)message;
    Bitnet__Envelope env;
    wire_envelope_init(&env, request_id);
    env.body_case = BITNET__ENVELOPE__BODY_ERROR;
    env.error = &err;
    clients_send(d, to, &env);
}

/* WIRE_OK, or clients_send's reason why not. */
static int send_ack(struct daemon *d, const struct wire_identity *to, uint64_t request_id,
                    const char *detail)
{
    Bitnet__Ack ack = BITNET__ACK__INIT;
    ack.detail = (char *)detail;
    Bitnet__Envelope env;
    wire_envelope_init(&env, request_id);
    env.body_case = BITNET__ENVELOPE__BODY_ACK;
    env.ack = &ack;
    return clients_send(d, to, &env);
}

/* ---- job output ---- */

int clients_send_chunk(struct daemon *d, struct job *j, Bitnet__StopReason reason,
                       const char *error)
{
    bool done = reason != BITNET__STOP_REASON__STOP_REASON_NONE;
    Bitnet__GenerateChunk ch = BITNET__GENERATE_CHUNK__INIT;
    Bitnet__GenerateStats st = BITNET__GENERATE_STATS__INIT;
    size_t n_text = job_sendable_text(j, done);
    ch.job_id = j->id;
    ch.text.data = (uint8_t *)j->text;
    ch.text.len = n_text;
    if (j->return_ids) {
        ch.n_token_ids = j->n_unsent_ids;
        ch.token_ids = j->tokens + j->n_tokens - j->n_unsent_ids;
    }
    ch.done = done;
    ch.stop_reason = reason;
    if (reason == BITNET__STOP_REASON__STOP_REASON_ERROR)
        ch.error = (char *)(error ? error : "failed");
    if (done) {
        double now = clock_ms();
        double started = j->t_started > 0 ? j->t_started : now;
        double first = j->t_first_token > 0 ? j->t_first_token : now;
        st.n_prompt_tokens = (uint32_t)j->n_prompt;
        st.n_generated = (uint32_t)job_n_generated(j);
        st.queue_ms = started - j->t_received;
        st.prompt_ms = first - started;
        st.ttft_ms = first - j->t_received;
        st.decode_ms = now - first;
        ch.stats = &st;
    }
    Bitnet__Envelope env;
    wire_envelope_init(&env, j->request_id);
    env.body_case = BITNET__ENVELOPE__BODY_GENERATE_CHUNK;
    env.generate_chunk = &ch;
    int rc = clients_send(d, &j->client, &env);
    job_consume_output(j, n_text);
    return rc == WIRE_OK ? 0 : -1;
}

int clients_send_eval(struct daemon *d, struct job *j)
{
    Bitnet__EvalReply er = BITNET__EVAL_REPLY__INIT;
    er.n_positions = (uint32_t)j->n_tokens;
    er.n_vocab = (uint32_t)j->n_vocab;
    er.logits.data = (uint8_t *)j->logits;
    er.logits.len = j->n_tokens * j->n_vocab * sizeof(float);
    Bitnet__Envelope env;
    wire_envelope_init(&env, j->request_id);
    env.body_case = BITNET__ENVELOPE__BODY_EVAL_REPLY;
    env.eval_reply = &er;
    return clients_send(d, &j->client, &env) == WIRE_OK ? 0 : -1;
}

/* ---- requests ---- */

static void on_status(struct daemon *d, const struct wire_identity *from, uint64_t rid)
{
    Bitnet__DaemonStatusReply r;
    daemon_status(d, &r);
    Bitnet__Envelope env;
    wire_envelope_init(&env, rid);
    env.body_case = BITNET__ENVELOPE__BODY_DAEMON_STATUS_REPLY;
    env.daemon_status_reply = &r;
    clients_send(d, from, &env);
}

static void send_placement(struct daemon *d, const struct wire_identity *from, uint64_t rid,
                           const struct placement *p)
{
    struct json_object *j = placement_to_json(p);
    if (!j) {
        clients_send_error(d, from, rid, BITNET__ERROR_CODE__ERROR_CODE_OUT_OF_MEMORY,
                           "placement: out of memory");
        return;
    }
    Bitnet__PlacementReply pr = BITNET__PLACEMENT_REPLY__INIT;
    pr.table_json = (char *)json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN);
    Bitnet__Envelope env;
    wire_envelope_init(&env, rid);
    env.body_case = BITNET__ENVELOPE__BODY_PLACEMENT_REPLY;
    env.placement_reply = &pr;
    clients_send(d, from, &env);
    json_object_put(j);
}

static void on_placement(struct daemon *d, const struct wire_identity *from, uint64_t rid,
                         const Bitnet__PlacementRequest *req)
{
    const char *path = req->model_path;
    if (!path || !*path || strcmp(path, d->model_path) == 0 || strcmp(path, d->cfg.model) == 0) {
        send_placement(d, from, rid, &d->plan);
        return;
    }
    if (!req->dry_run) {
        clients_send_error(d, from, rid, BITNET__ERROR_CODE__ERROR_CODE_BAD_REQUEST,
                           "placement: bitnetd cannot switch models while running; ask with "
                           "dry_run for a plan of another model");
        return;
    }
    /* a plan for another model: its tensor table is all that is read */
    struct bitnet_model m;
    struct placement p;
    struct errbuf e = {{0}};
    if (bitnet_model_load(&m, path, &e) < 0) {
        clients_send_error(d, from, rid, BITNET__ERROR_CODE__ERROR_CODE_BAD_REQUEST, e.msg);
        return;
    }
    int n_ctx = d->cfg.ctx;
    if (m.hp.n_ctx_train && (uint32_t)n_ctx > m.hp.n_ctx_train)
        n_ctx = (int)m.hp.n_ctx_train;
    if (plan_for_model(&m, &d->cfg, n_ctx, &d->topo, &p, &e) < 0)
        clients_send_error(d, from, rid, BITNET__ERROR_CODE__ERROR_CODE_BAD_REQUEST, e.msg);
    else {
        send_placement(d, from, rid, &p);
        placement_free(&p);
    }
    bitnet_model_free(&m);
}

static struct job_limits limits(const struct daemon *d)
{
    size_t row = (size_t)d->model.hp.n_vocab * sizeof(float);
    struct job_limits l = {
        .tok = d->tok,
        .n_vocab = d->model.hp.n_vocab,
        .n_ctx = d->n_ctx,
        /* the reply must pass the client's receive limit, with room for the envelope */
        .max_eval_positions = (WIRE_DEFAULT_MAX_BYTES - 4096) / row,
    };
    return l;
}

/* Whether new jobs may start; else the client is told why. */
static bool accepting(struct daemon *d, const struct wire_identity *from, uint64_t rid)
{
    if (d->phase == PHASE_STOPPING) {
        clients_send_error(d, from, rid, BITNET__ERROR_CODE__ERROR_CODE_DRAINING,
                           "bitnetd is shutting down");
        return false;
    }
    if (d->clients.draining) {
        clients_send_error(d, from, rid, BITNET__ERROR_CODE__ERROR_CODE_DRAINING,
                           "bitnetd is draining: no new jobs");
        return false;
    }
    if (!d->workers.ever_ready) {
        char msg[128];
        snprintf(msg, sizeof msg, "bitnetd is starting: %d of %d workers ready",
                 workers_n_ready(d), d->workers.n);
        clients_send_error(d, from, rid, BITNET__ERROR_CODE__ERROR_CODE_NOT_LOADED, msg);
        return false;
    }
    /* a job would only wait for a stage that has not come back within its time */
    char why[400];
    if (workers_outage(d, why, sizeof why)) {
        clients_send_error(d, from, rid, BITNET__ERROR_CODE__ERROR_CODE_TIMEOUT, why);
        return false;
    }
    return true;
}

static void start_job(struct daemon *d, const struct wire_identity *from, uint64_t rid,
                      struct job *j, struct errbuf *e)
{
    if (!j) {
        clients_send_error(d, from, rid, BITNET__ERROR_CODE__ERROR_CODE_BAD_REQUEST, e->msg);
        return;
    }
    int mine = 0;
    for (const struct job *o = d->sched.jobs; o; o = o->next)
        mine += wire_identity_equal(&o->client, from);
    if (mine >= d->cfg.max_jobs_per_client) {
        char msg[128];
        snprintf(msg, sizeof msg, "this client has %d jobs already (--max-jobs-per-client %d)",
                 mine, d->cfg.max_jobs_per_client);
        clients_send_error(d, from, rid, BITNET__ERROR_CODE__ERROR_CODE_BUSY, msg);
        job_free(j);
        return;
    }
    j->client = *from;
    j->request_id = rid;
    j->t_received = clock_ms();
    if (scheduler_submit(d, j, e) < 0) {
        clients_send_error(d, from, rid, BITNET__ERROR_CODE__ERROR_CODE_BUSY, e->msg);
        job_free(j);
    }
}

static void on_cancel(struct daemon *d, const struct wire_identity *from, uint64_t rid,
                      const Bitnet__Cancel *c)
{
    uint64_t job_id = c->job_id;
    struct job *j = NULL;
    if (job_id == 0 && c->request_id) {
        for (j = d->sched.jobs; j; j = j->next)
            if (j->request_id == c->request_id && wire_identity_equal(&j->client, from))
                break;
        if (j)
            job_id = j->id;
    } else {
        j = scheduler_find(d, job_id);
    }
    if (!j) {
        char msg[96];
        snprintf(msg, sizeof msg, "no job %llu (finished, or never existed)",
                 (unsigned long long)job_id);
        clients_send_error(d, from, rid, BITNET__ERROR_CODE__ERROR_CODE_UNKNOWN_JOB, msg);
        return;
    }
    scheduler_finish(d, j, BITNET__STOP_REASON__STOP_REASON_CANCELLED, NULL);
    char msg[64];
    snprintf(msg, sizeof msg, "job %llu cancelled", (unsigned long long)job_id);
    send_ack(d, from, rid, msg);
    scheduler_kick(d); /* its slot may let a queued job start */
}

/* from NULL: the daemon's own drain, which answers nobody. */
static void add_waiter(struct daemon *d, const struct wire_identity *from, uint64_t rid,
                       uint32_t timeout_ms, bool shutdown)
{
    struct clients *c = &d->clients;
    c->draining = true;
    if (c->n_waiters == CLIENTS_MAX_WAITERS) {
        if (!from) {
            /* no room to wait: the stop asked for must still happen */
            daemon_stop(d, "SIGTERM (too many drains waiting to wait for this one)");
            return;
        }
        clients_send_error(d, from, rid, BITNET__ERROR_CODE__ERROR_CODE_BUSY,
                           "too many drain requests waiting");
        return;
    }
    struct drain_waiter *w = &c->waiters[c->n_waiters++];
    memset(w, 0, sizeof *w);
    w->internal = !from;
    if (from)
        w->client = *from;
    w->request_id = rid;
    w->deadline_ms = timeout_ms ? clock_ms() + timeout_ms : 0;
    w->shutdown = shutdown;
    if (!d->sched.jobs)
        clients_on_idle(d);
}

void clients_drain_then_stop(struct daemon *d, uint32_t timeout_ms)
{
    add_waiter(d, NULL, 0, timeout_ms, true);
}

bool clients_stop_pending(const struct daemon *d)
{
    for (int i = 0; i < d->clients.n_waiters; i++)
        if (d->clients.waiters[i].shutdown)
            return true;
    return false;
}

/* Resume: new jobs are taken again; the Drains still waiting learn that theirs ended. */
static void on_resume(struct daemon *d, const struct wire_identity *from, uint64_t rid)
{
    struct clients *c = &d->clients;
    if (clients_stop_pending(d)) {
        clients_send_error(d, from, rid, BITNET__ERROR_CODE__ERROR_CODE_DRAINING,
                           "bitnetd is draining to stop (Shutdown or SIGTERM): that cannot be "
                           "resumed");
        return;
    }
    if (!c->draining) {
        send_ack(d, from, rid, "not draining: bitnetd takes jobs");
        return;
    }
    int jobs = d->sched.n_running + d->sched.n_queued;
    c->draining = false;
    while (c->n_waiters > 0) {
        struct drain_waiter w = c->waiters[--c->n_waiters];
        send_ack(d, &w.client, w.request_id, "drain ended by a resume before the jobs did");
    }
    dlog("drain ended by a client's Resume (%d job%s still running): taking jobs again", jobs,
         jobs == 1 ? "" : "s");
    send_ack(d, from, rid, "resumed: bitnetd takes jobs again");
}

static void on_hello(struct daemon *d, const struct wire_identity *from, uint64_t rid,
                     const Bitnet__Hello *h)
{
    char why[160] = "";
    if (h->role != BITNET__ROLE__ROLE_CLIENT)
        snprintf(why, sizeof why, "this socket is for clients (Hello role %d)", (int)h->role);
    else if (h->protocol_version != BITNET_PROTOCOL_VERSION)
        snprintf(why, sizeof why, "protocol version mismatch: client speaks protocol %u, "
                 "bitnetd speaks %d", h->protocol_version, BITNET_PROTOCOL_VERSION);
    Bitnet__HelloReply hr = BITNET__HELLO_REPLY__INIT;
    hr.accepted = !*why;
    hr.reason = why;
    hr.software_version = BITNETD_VERSION;
    hr.protocol_version = BITNET_PROTOCOL_VERSION;
    Bitnet__Envelope env;
    wire_envelope_init(&env, rid);
    env.body_case = BITNET__ENVELOPE__BODY_HELLO_REPLY;
    env.hello_reply = &hr;
    clients_send(d, from, &env);
}

static void on_request(struct daemon *d, const struct wire_identity *from,
                       const Bitnet__Envelope *env)
{
    uint64_t rid = env->request_id;
    struct errbuf e = {{0}};
    switch (env->body_case) {
    case BITNET__ENVELOPE__BODY_HELLO:
        on_hello(d, from, rid, env->hello);
        break;
    case BITNET__ENVELOPE__BODY_STATUS_REQUEST:
        on_status(d, from, rid);
        break;
    case BITNET__ENVELOPE__BODY_WORKERS_REQUEST:
        workers_query(d, from, rid);
        break;
    case BITNET__ENVELOPE__BODY_PLACEMENT_REQUEST:
        on_placement(d, from, rid, env->placement_request);
        break;
    case BITNET__ENVELOPE__BODY_GENERATE_REQUEST: {
        if (!accepting(d, from, rid))
            break;
        struct job_limits l = limits(d);
        start_job(d, from, rid, job_new_generate(env->generate_request, &l, &e), &e);
        break;
    }
    case BITNET__ENVELOPE__BODY_EVAL_REQUEST: {
        if (!accepting(d, from, rid))
            break;
        struct job_limits l = limits(d);
        start_job(d, from, rid, job_new_eval(env->eval_request, &l, &e), &e);
        break;
    }
    case BITNET__ENVELOPE__BODY_CANCEL:
        on_cancel(d, from, rid, env->cancel);
        break;
    case BITNET__ENVELOPE__BODY_DRAIN:
        add_waiter(d, from, rid, env->drain->timeout_ms, false);
        break;
    case BITNET__ENVELOPE__BODY_RESUME:
        on_resume(d, from, rid);
        break;
    case BITNET__ENVELOPE__BODY_SHUTDOWN:
        if (env->shutdown->drain_first) {
            add_waiter(d, from, rid, env->shutdown->timeout_ms, true);
        } else {
            send_ack(d, from, rid, "shutting down");
            daemon_stop(d, "Shutdown requested");
        }
        break;
    default: {
        char msg[96];
        snprintf(msg, sizeof msg, "'%s' is not a request bitnetd takes from clients",
                 wire_body_name(env->body_case));
        clients_send_error(d, from, rid, BITNET__ERROR_CODE__ERROR_CODE_BAD_REQUEST, msg);
        break;
    }
    }
}

void clients_on_request(struct daemon *d)
{
    for (int k = 0; k < 64 && d->phase != PHASE_STOPPING; k++) {
        struct wire_identity from;
        Bitnet__Envelope *env = NULL;
        struct errbuf e = {{0}};
        int rc = wire_recv_from(d->ipc.ctl, &d->ctl_rx, &from, &env, 0, &e);
        if (rc == WIRE_AGAIN)
            return;
        if (rc == WIRE_ERROR) {
            dlog("client socket: %s", e.msg);
            return;
        }
        if (wire_rc_is_reject(rc)) {
            /* the request id is unknown (the frame was not decoded): 0 */
            if (from.len)
                clients_send_error(d, &from, 0, wire_rc_error_code(rc), e.msg);
            continue;
        }
        on_request(d, &from, env);
        wire_free(env);
    }
}

/* ---- drain ---- */

static void answer_waiter(struct daemon *d, int i, const char *detail)
{
    struct clients *c = &d->clients;
    struct drain_waiter w = c->waiters[i];
    c->waiters[i] = c->waiters[--c->n_waiters];
    if (w.internal)
        dlog("SIGTERM: %s", detail);
    else
        send_ack(d, &w.client, w.request_id, detail);
    if (w.shutdown)
        daemon_stop(d, w.internal ? "SIGTERM (drained)" : "Shutdown requested (drained)");
}

void clients_on_idle(struct daemon *d)
{
    while (d->clients.n_waiters > 0)
        answer_waiter(d, 0, d->clients.waiters[0].shutdown ? "drained; shutting down" : "drained");
}

/* Each job's client gets a message with request id 0, which clients skip: with the
 * socket's ROUTER_MANDATORY, a client that has closed its connection makes the send fail,
 * and its job is cancelled. Without this a non-streaming job, or one in a long prompt,
 * would run to its end for no one and hold its slot. */
static void probe_clients(struct daemon *d)
{
    uint64_t gone[64];
    int n_gone = 0;
    for (struct job *j = d->sched.jobs; j && n_gone < 64; j = j->next)
        if (send_ack(d, &j->client, 0, "alive?") == WIRE_UNREACHABLE)
            gone[n_gone++] = j->id;
    for (int i = 0; i < n_gone; i++) {
        struct job *j = scheduler_find(d, gone[i]);
        if (!j)
            continue;
        dlog("job %llu: its client went away; cancelled after %zu of its tokens",
             (unsigned long long)j->id, job_n_generated(j));
        scheduler_finish(d, j, BITNET__STOP_REASON__STOP_REASON_CANCELLED, NULL);
    }
    if (n_gone)
        scheduler_kick(d);
}

double clients_cron(struct daemon *d, double now)
{
    struct clients *c = &d->clients;
    if (now >= c->next_probe_ms) {
        probe_clients(d);
        c->next_probe_ms = now + CLIENTS_PROBE_MS;
    }
    for (int i = 0; i < c->n_waiters; i++) {
        if (!c->waiters[i].deadline_ms || now < c->waiters[i].deadline_ms)
            continue;
        char detail[96];
        if (c->waiters[i].shutdown) {
            snprintf(detail, sizeof detail, "drain deadline reached: %d jobs cancelled; shutting down",
                     d->sched.n_running + d->sched.n_queued);
            answer_waiter(d, i--, detail);
        } else {
            snprintf(detail, sizeof detail, "drain deadline reached with %d jobs still running",
                     d->sched.n_running + d->sched.n_queued);
            answer_waiter(d, i--, detail);
        }
    }
    return 100;
}

/* bitnet-worker as a black box: real worker processes on ipc:// endpoints, this test
 * playing the daemon with its own ZeroMQ sockets (docs/runtime.md). Chains of 1, 2 and 3
 * workers must return exactly the logits of the in-process engine (F32 hidden states
 * between stages are exact), for one sequence and for two interleaved in one Forward;
 * bad requests and bad frames are refused and counted while the worker stays up;
 * heartbeats keep their interval; a restarted daemon gets a new Hello; SIGTERM is a
 * clean exit that removes the worker's ipc file. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "kernels/kernels.h"
#include "model/clock.h"
#include "model/forward.h"
#include "model/gguf.h"
#include "model/sample.h"
#include "model/tokenizer.h"
#include "model/vocab_gguf.h"
#include "proto/wire.h"
#include "tests/check.h"
#include "tests/util.h"

/* tiny.gguf and its two sequences are just a convenient model and input here: without
 * ../shared, a model of its shape (tiny_model_path) and two texts of about the same length
 * tokenized by that model's tokenizer */
#define SEQ1 SHARED_DATA("xval/tiny-seq1.ids")
#define SEQ2 SHARED_DATA("xval/tiny-seq2.ids")
#define TEXT1 "The capital of France is Paris, a city on the Seine known for its museums."
#define TEXT2 "Once upon a time, in a small village, there lived an old baker who rose " \
              "before dawn every day."
static const char *model_file; /* set by main */
/* TEST_WORKER_BIN runs the test against another build, e.g. one with sanitizers */
#define WORKER_BIN (getenv("TEST_WORKER_BIN") ? getenv("TEST_WORKER_BIN") : "build/bitnet-worker")
#define KV_CTX 64
#define N_SLOTS 3
#define MAX_KIDS 8
#define HEARTBEAT_MS 100

/* ---------------------------------------------------------------------------------------
 * The in-process reference */

struct ref {
    int32_t *ids;
    int n;
    float *logits; /* n x V: position p after reading ids[0..p] */
};

static int read_ids(const char *path, struct ref *r)
{
    size_t len;
    char *text = slurp(path, &len);
    if (!text)
        return -1;
    r->ids = malloc(len * sizeof *r->ids);
    r->n = 0;
    for (char *p = text; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p)
            break;
        r->ids[r->n++] = (int32_t)v;
        p = end + (*end == ',');
    }
    free(text);
    return r->n > 0 ? 0 : -1;
}

/* The ids of text with BOS, by the model's own tokenizer. */
static int tokenize_ids(const struct bitnet_model *m, const char *text, struct ref *r)
{
    struct errbuf e;
    struct tokenizer *t = tokenizer_from_gguf(&m->file, &e);
    size_t n = 0;
    if (!t || tokenizer_encode(t, text, strlen(text), true, false, &r->ids, &n, &e) != 0) {
        fprintf(stderr, "tokenizing \"%s\": %s\n", text, e.msg);
        tokenizer_free(t);
        return -1;
    }
    tokenizer_free(t);
    r->n = (int)n;
    return r->n > 0 ? 0 : -1;
}

/* The ids from path, or if path is NULL those of text; then their logits. */
static int make_ref(const struct bitnet_model *m, const char *path, const char *text,
                    struct ref *r)
{
    struct errbuf e;
    struct forward_state s;
    struct forward_config cfg = {.n_ctx = KV_CTX, .n_batch = 1};
    if ((path ? read_ids(path, r) : tokenize_ids(m, text, r)) < 0 ||
        forward_state_init(&s, m, &cfg, &e) < 0)
        return -1;
    size_t V = m->hp.n_vocab;
    r->logits = malloc((size_t)r->n * V * sizeof(float));
    for (int p = 0; p < r->n; p++) {
        const float *l = forward_token(m, &s, r->ids[p], p, &e);
        if (!l) {
            forward_state_free(&s);
            return -1;
        }
        memcpy(r->logits + (size_t)p * V, l, V * sizeof(float));
    }
    forward_state_free(&s);
    return 0;
}

static void free_ref(struct ref *r)
{
    free(r->ids);
    free(r->logits);
}

/* sha256 of the GGUF header and tensor table, by coreutils rather than our code */
static int model_sha256(char out[65])
{
    struct gguf_file f;
    struct errbuf e;
    if (gguf_open(&f, model_file, &e) < 0)
        return -1;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "head -c %llu %s | sha256sum",
             (unsigned long long)f.data_offset, model_file);
    gguf_close(&f);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    int ok = fscanf(p, "%64s", out) == 1;
    pclose(p);
    return ok && strlen(out) == 64 ? 0 : -1;
}

/* ---------------------------------------------------------------------------------------
 * The fake daemon */

struct kid {
    char id[16];
    pid_t pid;
    char data_ep[300];
    char data_path[300];
    bool hello_seen;
    int hellos;  /* Hellos received from it, repeats included */
    bool refuse; /* answer its Hello with accepted=false */
    int heartbeats;
    uint64_t last_hb_ms; /* the worker's clock */
    bool hb_monotonic;
};

struct coord {
    void *zctx, *ctl, *results;
    char dir[256];
    char ctl_ep[300], res_ep[300];
    struct kid kids[MAX_KIDS];
    int n_kids;
    struct wire_rx rx;
    int strays; /* control messages nobody asked for */
    char sha[65];
    uint64_t next_req;
};

static struct kid *kid_by_id(struct coord *c, const char *id, size_t len)
{
    for (int i = 0; i < c->n_kids; i++)
        if (strlen(c->kids[i].id) == len && memcmp(c->kids[i].id, id, len) == 0)
            return &c->kids[i];
    return NULL;
}

static void *bind_sock(struct coord *c, int type, const char *ep)
{
    void *s = zmq_socket(c->zctx, type);
    int zero = 0, one = 1;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (type == ZMQ_ROUTER)
        zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    unlink(ep + 6);
    if (zmq_bind(s, ep) != 0) {
        fprintf(stderr, "bind %s: %s\n", ep, zmq_strerror(zmq_errno()));
        zmq_close(s);
        return NULL;
    }
    return s;
}

static void *push_to(struct coord *c, const char *ep)
{
    void *s = zmq_socket(c->zctx, ZMQ_PUSH);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_connect(s, ep);
    return s;
}

static pid_t spawn(const char *const argv[])
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* no stray workers even if this test dies without cleaning up */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static struct kid *start_worker(struct coord *c, const char *id)
{
    struct kid *k = &c->kids[c->n_kids++];
    memset(k, 0, sizeof *k);
    snprintf(k->id, sizeof k->id, "%s", id);
    snprintf(k->data_path, sizeof k->data_path, "%s/%s.data", c->dir, id);
    snprintf(k->data_ep, sizeof k->data_ep, "ipc://%s/%s.data", c->dir, id);
    k->hb_monotonic = true;
    char hb[16];
    snprintf(hb, sizeof hb, "%d", HEARTBEAT_MS);
    const char *argv[] = {WORKER_BIN, "--id", k->id, "--control", c->ctl_ep, "--data",
                          k->data_ep, "--heartbeat-ms", hb, NULL};
    k->pid = spawn(argv);
    return k;
}

/* Exit status of pid within ms, or -1 (still running; then it is left alone). */
static int wait_exit(pid_t pid, int ms)
{
    for (int waited = 0; waited <= ms; waited += 10) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
        usleep(10000);
    }
    return -1;
}

static void kill_all(struct coord *c)
{
    for (int i = 0; i < c->n_kids; i++) {
        if (c->kids[i].pid > 0) {
            kill(c->kids[i].pid, SIGKILL);
            waitpid(c->kids[i].pid, NULL, 0);
            c->kids[i].pid = 0;
        }
    }
}

static void note_heartbeat(struct coord *c, const struct wire_identity *from,
                           const Bitnet__Heartbeat *hb)
{
    struct kid *k = kid_by_id(c, (const char *)from->bytes, from->len);
    if (!k)
        return;
    if (hb->role != BITNET__ROLE__ROLE_WORKER || !hb->sender || strcmp(hb->sender, k->id) != 0 ||
        (k->heartbeats && hb->monotonic_ms < k->last_hb_ms))
        k->hb_monotonic = false;
    k->heartbeats++;
    k->last_hb_ms = hb->monotonic_ms;
}

static void hello_reply(struct coord *c, const char *id, uint64_t req, bool accepted,
                        const char *reason);

/* The next control message from worker `id` (any worker if NULL) with body `want`,
 * within ms. Heartbeats are tallied, repeated Hellos are skipped, anything else that is
 * not what was asked for is counted as a stray and printed. */
static Bitnet__Envelope *expect(struct coord *c, const char *id, Bitnet__Envelope__BodyCase want,
                                int ms, struct wire_identity *from_out)
{
    uint64_t deadline = clock_whole_ms() + (uint64_t)ms;
    for (;;) {
        uint64_t now = clock_whole_ms();
        if (now >= deadline)
            return NULL;
        Bitnet__Envelope *env = NULL;
        struct wire_identity from;
        struct errbuf e;
        int rc = wire_recv_from(c->ctl, &c->rx, &from, &env, (int)(deadline - now), &e);
        if (rc == WIRE_AGAIN)
            continue;
        if (rc != WIRE_OK) {
            fprintf(stderr, "control receive: %s\n", e.msg);
            c->strays++;
            continue;
        }
        bool from_ok = !id || (from.len == strlen(id) && memcmp(from.bytes, id, from.len) == 0);
        if (env->body_case == BITNET__ENVELOPE__BODY_HEARTBEAT &&
            want != BITNET__ENVELOPE__BODY_HEARTBEAT) {
            note_heartbeat(c, &from, env->heartbeat);
        } else if (from_ok && env->body_case == want) {
            if (from_out)
                *from_out = from;
            return env;
        } else if (env->body_case == BITNET__ENVELOPE__BODY_HELLO) {
            /* a repeated Hello (retry, reconnect) of a worker already accepted is answered
             * as a daemon would; a first one is left for collect_hellos (it is resent) */
            struct kid *k = kid_by_id(c, (const char *)from.bytes, from.len);
            if (k)
                k->hellos++;
            if (k && k->hello_seen && !k->refuse)
                hello_reply(c, k->id, env->request_id, true, NULL);
        } else {
            fprintf(stderr, "stray %s from %.*s%s%s\n", wire_body_name(env->body_case),
                    (int)from.len, (const char *)from.bytes,
                    env->body_case == BITNET__ENVELOPE__BODY_ERROR ? ": " : "",
                    env->body_case == BITNET__ENVELOPE__BODY_ERROR ? env->error->message : "");
            c->strays++;
        }
        wire_free(env);
    }
}

static int send_to(struct coord *c, const char *id, Bitnet__Envelope *env)
{
    struct wire_identity to = {0};
    to.len = strlen(id);
    memcpy(to.bytes, id, to.len);
    struct errbuf e;
    int rc = wire_send_to(c->ctl, &to, env, 1000, &e);
    if (rc != WIRE_OK)
        fprintf(stderr, "send to %s: %s\n", id, e.msg);
    return rc;
}

static void hello_reply(struct coord *c, const char *id, uint64_t req, bool accepted,
                        const char *reason)
{
    Bitnet__Envelope env;
    Bitnet__HelloReply r = BITNET__HELLO_REPLY__INIT;
    wire_envelope_init(&env, req);
    r.accepted = accepted;
    r.reason = (char *)reason;
    r.software_version = "test_worker";
    r.protocol_version = BITNET_PROTOCOL_VERSION;
    env.body_case = BITNET__ENVELOPE__BODY_HELLO_REPLY;
    env.hello_reply = &r;
    send_to(c, id, &env);
}

/* Waits for a Hello from every worker not yet seen and accepts it; false if some
 * worker never said Hello. */
static bool collect_hellos(struct coord *c, int ms)
{
    uint64_t deadline = clock_whole_ms() + (uint64_t)ms;
    for (;;) {
        int missing = 0;
        for (int i = 0; i < c->n_kids; i++)
            missing += c->kids[i].pid > 0 && !c->kids[i].hello_seen;
        if (!missing || clock_whole_ms() >= deadline)
            break;
        struct wire_identity from;
        int left = (int)(deadline - clock_whole_ms());
        Bitnet__Envelope *env = expect(c, NULL, BITNET__ENVELOPE__BODY_HELLO, left, &from);
        if (!env)
            break;
        struct kid *k = kid_by_id(c, (const char *)from.bytes, from.len);
        const Bitnet__Hello *h = env->hello;
        if (!k)
            CHECK(0, "hello from unknown identity %.*s", (int)from.len, (char *)from.bytes);
        if (k)
            k->hellos++;
        if (k && !k->hello_seen) {
            CHECK(h->role == BITNET__ROLE__ROLE_WORKER && h->worker_id &&
                      strcmp(h->worker_id, k->id) == 0,
                  "%s: hello role %d id %s", k->id, (int)h->role, h->worker_id);
            CHECK(h->protocol_version == BITNET_PROTOCOL_VERSION &&
                      env->version == BITNET_PROTOCOL_VERSION,
                  "%s: hello protocol %u", k->id, h->protocol_version);
            CHECK(h->data_endpoint && strcmp(h->data_endpoint, k->data_ep) == 0,
                  "%s: hello data endpoint %s, want %s", k->id, h->data_endpoint, k->data_ep);
            CHECK(h->pid == (uint32_t)k->pid, "%s: hello pid %u, want %d", k->id, h->pid,
                  (int)k->pid);
            CHECK(h->software_version && strstr(h->software_version, "bitnet-worker"),
                  "%s: software version %s", k->id, h->software_version);
            k->hello_seen = true;
            hello_reply(c, k->id, env->request_id, !k->refuse,
                        k->refuse ? "unknown worker id" : NULL);
        }
        wire_free(env);
    }
    bool all = true;
    for (int i = 0; i < c->n_kids; i++) {
        CHECK(c->kids[i].pid <= 0 || c->kids[i].hello_seen, "no hello from %s", c->kids[i].id);
        all &= c->kids[i].pid <= 0 || c->kids[i].hello_seen;
    }
    return all;
}

struct stage {
    const char *id;
    uint32_t l0, l1;
    bool emb, out;
    uint32_t threads;
    int numa_node;
    uint32_t cpu; /* UINT32_MAX: no pinning */
    Bitnet__ElemType act;
};

/* LoadShard to one worker; returns the reply (caller frees) or NULL. */
static Bitnet__Envelope *load_shard(struct coord *c, const struct stage *st, const char *sha,
                                    const char *next)
{
    Bitnet__Envelope env;
    Bitnet__LoadShard l = BITNET__LOAD_SHARD__INIT;
    uint64_t req = ++c->next_req;
    wire_envelope_init(&env, req);
    l.model_path = (char *)model_file;
    l.model_sha256 = (char *)sha;
    l.layer_begin = st->l0;
    l.layer_end = st->l1;
    l.has_embedding = st->emb;
    l.has_output = st->out;
    l.threads = st->threads;
    l.numa_node = st->numa_node;
    uint32_t cpus[1] = {st->cpu};
    if (st->cpu != UINT32_MAX) {
        l.n_cpus = 1;
        l.cpus = cpus;
    }
    l.kv_ctx = KV_CTX;
    l.kv_type = BITNET__ELEM_TYPE__ELEM_TYPE_F32;
    l.act_type = st->act ? st->act : BITNET__ELEM_TYPE__ELEM_TYPE_F32;
    l.next_endpoint = (char *)next;
    l.max_sequences = N_SLOTS;
    env.body_case = BITNET__ENVELOPE__BODY_LOAD_SHARD;
    env.load_shard = &l;
    if (send_to(c, st->id, &env) != WIRE_OK)
        return NULL;
    Bitnet__Envelope *r = expect(c, st->id, BITNET__ENVELOPE__BODY_LOAD_SHARD_REPLY, 10000, NULL);
    CHECK(r != NULL, "%s: no LoadShardReply", st->id);
    if (r)
        CHECK(r->request_id == req, "%s: LoadShardReply for request %llu, want %llu", st->id,
              (unsigned long long)r->request_id, (unsigned long long)req);
    return r;
}

/* Loads a chain; each stage sends to the next one's data endpoint, the last to results. */
static bool load_chain(struct coord *c, const struct stage *st, int n)
{
    bool all = true;
    for (int i = 0; i < n; i++) {
        const char *next =
            i + 1 < n ? kid_by_id(c, st[i + 1].id, strlen(st[i + 1].id))->data_ep : c->res_ep;
        Bitnet__Envelope *r = load_shard(c, &st[i], c->sha, next);
        bool ok = r && r->load_shard_reply->ok;
        CHECK(ok, "%s: load failed: %s", st[i].id, r ? r->load_shard_reply->error : "no reply");
        if (ok) {
            const Bitnet__LoadShardReply *lr = r->load_shard_reply;
            CHECK(lr->model_sha256 && strcmp(lr->model_sha256, c->sha) == 0,
                  "%s: reply sha %s", st[i].id, lr->model_sha256);
            CHECK(lr->bytes_loaded > 0 && lr->load_seconds >= 0, "%s: %llu bytes in %g s",
                  st[i].id, (unsigned long long)lr->bytes_loaded, lr->load_seconds);
            CHECK(lr->resident_node == (st[i].numa_node >= 0 ? st[i].numa_node : -1),
                  "%s: resident node %d", st[i].id, lr->resident_node);
        }
        all &= ok;
        wire_free(r);
    }
    return all;
}

/* ---------------------------------------------------------------------------------------
 * Steps */

struct row {
    uint32_t slot, pos;
    int32_t tok;
    bool want;
};

static int send_forward(void *push, uint64_t step, const struct row *rows, int n, uint32_t top_k)
{
    uint32_t slots[64], pos[64];
    int32_t toks[64];
    protobuf_c_boolean want[64];
    for (int t = 0; t < n; t++) {
        slots[t] = rows[t].slot;
        pos[t] = rows[t].pos;
        toks[t] = rows[t].tok;
        want[t] = rows[t].want;
    }
    Bitnet__Envelope env;
    Bitnet__Forward f = BITNET__FORWARD__INIT;
    wire_envelope_init(&env, 0);
    f.step_id = step;
    f.n_rows = (uint32_t)n;
    f.n_seq_ids = f.n_positions = f.n_token_ids = f.n_want_logits = (size_t)n;
    f.seq_ids = slots;
    f.positions = pos;
    f.token_ids = toks;
    f.want_logits = want;
    f.top_k = top_k;
    env.body_case = BITNET__ENVELOPE__BODY_FORWARD;
    env.forward = &f;
    struct errbuf e;
    int rc = wire_send(push, &env, 1000, &e);
    if (rc != WIRE_OK)
        fprintf(stderr, "send forward: %s\n", e.msg);
    return rc;
}

static Bitnet__Envelope *expect_result(struct coord *c, uint64_t step, int ms)
{
    uint64_t deadline = clock_whole_ms() + (uint64_t)ms;
    while (clock_whole_ms() < deadline) {
        Bitnet__Envelope *env = NULL;
        struct errbuf e;
        int rc = wire_recv(c->results, &c->rx, &env, (int)(deadline - clock_whole_ms()), &e);
        if (rc == WIRE_AGAIN)
            continue;
        if (rc != WIRE_OK) {
            fprintf(stderr, "results: %s\n", e.msg);
            return NULL;
        }
        if (env->body_case == BITNET__ENVELOPE__BODY_FORWARD_RESULT &&
            env->forward_result->step_id == step)
            return env;
        fprintf(stderr, "results: unexpected %s (step %llu)\n", wire_body_name(env->body_case),
                env->body_case == BITNET__ENVELOPE__BODY_FORWARD_RESULT
                    ? (unsigned long long)env->forward_result->step_id
                    : 0ULL);
        wire_free(env);
    }
    return NULL;
}

struct chain_run {
    struct coord *c;
    void *push;
    const char *name;
    const struct ref *slot_ref[N_SLOTS]; /* which sequence each slot holds */
    uint32_t V;
    int n_stages;
    uint64_t step;
    int rows_checked, rows_bad, steps_lost;
};

/* Sends one step, waits for its result and compares every returned row with the
 * reference bit for bit. */
static void run_step(struct chain_run *r, const struct row *rows, int n, uint32_t top_k)
{
    uint64_t step = ++r->step;
    if (send_forward(r->push, step, rows, n, top_k) != WIRE_OK) {
        r->steps_lost++;
        return;
    }
    Bitnet__Envelope *env = expect_result(r->c, step, 5000);
    if (!env) {
        fprintf(stderr, "%s: no result for step %llu\n", r->name, (unsigned long long)step);
        r->steps_lost++;
        return;
    }
    const Bitnet__ForwardResult *fr = env->forward_result;
    int n_want = 0;
    for (int t = 0; t < n; t++)
        n_want += rows[t].want;
    bool shape = fr->n_rows == (uint32_t)n_want && fr->n_vocab == r->V &&
                 fr->n_timings == (size_t)r->n_stages && fr->top_k == top_k &&
                 fr->logits.len == (top_k ? 0 : (size_t)n_want * r->V * sizeof(float));
    if (!shape) {
        fprintf(stderr, "%s: step %llu: result of %u rows, %u vocab, %zu timings, top_k %u\n",
                r->name, (unsigned long long)step, fr->n_rows, fr->n_vocab, fr->n_timings,
                fr->top_k);
        r->rows_bad += n_want;
        wire_free(env);
        return;
    }
    int i = 0;
    for (int t = 0; t < n; t++) {
        if (!rows[t].want)
            continue;
        const struct ref *ref = r->slot_ref[rows[t].slot];
        const float *want = ref->logits + (size_t)rows[t].pos * r->V;
        bool ok = fr->seq_ids[i] == rows[t].slot && fr->positions[i] == rows[t].pos &&
                  fr->argmax[i] == argmax_f32(want, r->V);
        if (top_k) {
            for (uint32_t j = 0; j < top_k; j++) {
                int32_t id = fr->top_ids[(size_t)i * top_k + j];
                ok &= id >= 0 && (uint32_t)id < r->V &&
                      memcmp(&fr->top_logits[(size_t)i * top_k + j], &want[id], sizeof(float)) == 0;
                /* best first: nothing outside the list beats the j-th entry */
                if (j + 1 < top_k)
                    ok &= fr->top_logits[(size_t)i * top_k + j] >=
                          fr->top_logits[(size_t)i * top_k + j + 1];
            }
            float kth = fr->top_logits[(size_t)i * top_k + top_k - 1];
            int above = 0;
            for (uint32_t v = 0; v < r->V; v++)
                above += want[v] > kth;
            ok &= above < (int)top_k;
        } else {
            ok &= memcmp(fr->logits.data + (size_t)i * r->V * sizeof(float), want,
                         r->V * sizeof(float)) == 0;
        }
        if (!ok)
            fprintf(stderr, "%s: step %llu row %d (slot %u pos %u) differs\n", r->name,
                    (unsigned long long)step, t, rows[t].slot, rows[t].pos);
        r->rows_bad += !ok;
        r->rows_checked++;
        i++;
    }
    for (size_t s = 0; s < fr->n_timings; s++)
        if (!fr->timings[s]->worker_id || !*fr->timings[s]->worker_id)
            r->rows_bad++;
    wire_free(env);
}

/* seq in `slot`: a prompt chunk of `chunk` rows (all wanted), then one row per step. */
static void drive_one(struct chain_run *r, const struct ref *seq, uint32_t slot, int chunk)
{
    struct row rows[64];
    r->slot_ref[slot] = seq;
    for (int t = 0; t < chunk; t++)
        rows[t] = (struct row){slot, (uint32_t)t, seq->ids[t], true};
    run_step(r, rows, chunk, 0);
    for (int p = chunk; p < seq->n; p++) {
        rows[0] = (struct row){slot, (uint32_t)p, seq->ids[p], true};
        run_step(r, rows, 1, 0);
    }
}

/* a in slot 2 and b in slot 0, in the same steps: a prompt chunk of both, rows
 * interleaved and only some wanted, then one row of each per step, order alternating. */
static void drive_two(struct chain_run *r, const struct ref *a, const struct ref *b)
{
    struct row rows[64];
    int n = 0, pa = 0, pb = 0;
    r->slot_ref[2] = a;
    r->slot_ref[0] = b;
    while (pa < 5 || pb < 4) {
        if (pa < 5) {
            rows[n] = (struct row){2, (uint32_t)pa, a->ids[pa], pa % 2 == 0};
            n++, pa++;
        }
        if (pb < 4) {
            rows[n] = (struct row){0, (uint32_t)pb, b->ids[pb], pb == 3};
            n++, pb++;
        }
    }
    run_step(r, rows, n, 0);
    for (int s = 0; pa < a->n || pb < b->n; s++) {
        n = 0;
        struct row ra = {2, (uint32_t)pa, pa < a->n ? a->ids[pa] : 0, true};
        struct row rb = {0, (uint32_t)pb, pb < b->n ? b->ids[pb] : 0, true};
        if (s % 2 == 0) {
            if (pa < a->n)
                rows[n++] = ra;
            if (pb < b->n)
                rows[n++] = rb;
        } else {
            if (pb < b->n)
                rows[n++] = rb;
            if (pa < a->n)
                rows[n++] = ra;
        }
        pa += pa < a->n;
        pb += pb < b->n;
        run_step(r, rows, n, 0);
    }
}

static void check_chain(struct coord *c, const char *name, const struct stage *st, int n,
                        const struct ref *s1, const struct ref *s2, uint32_t V, uint64_t step0)
{
    struct kid *first = kid_by_id(c, st[0].id, strlen(st[0].id));
    struct chain_run r = {.c = c, .name = name, .V = V, .n_stages = n, .step = step0};
    r.push = push_to(c, first->data_ep);
    /* the output head dominates the time of this test: the 1-worker chain runs both
     * the single sequence and the interleaved pair, the 2-worker chain the single one, the
     * 3-worker chain (with its layerless output stage) the pair */
    int want_rows = 0;
    if (n != 3) {
        drive_one(&r, s1, 0, 8);
        want_rows += s1->n;
    }
    if (n != 2) {
        drive_two(&r, s1, s2);
        want_rows += s1->n + s2->n - 5;
    }
    CHECK(r.steps_lost == 0 && r.rows_bad == 0 && r.rows_checked == want_rows,
          "%s: %d rows checked, %d differ, %d steps without a result", name, r.rows_checked,
          r.rows_bad, r.steps_lost);
    zmq_close(r.push);
}

/* ---------------------------------------------------------------------------------------
 * Refusals */

/* Sends raw frames (or an envelope) to push and expects an Error of `code` from worker id
 * for request `step`. */
static void expect_error(struct coord *c, const char *id, uint64_t step, Bitnet__ErrorCode code,
                         const char *needle, const char *what)
{
    Bitnet__Envelope *env = expect(c, id, BITNET__ENVELOPE__BODY_ERROR, 3000, NULL);
    CHECK(env != NULL, "%s: no Error from %s", what, id);
    if (!env)
        return;
    CHECK(env->request_id == step && env->error->code == code &&
              (!needle || strstr(env->error->message, needle)),
          "%s: Error for request %llu code %d: %s", what, (unsigned long long)env->request_id,
          (int)env->error->code, env->error->message);
    wire_free(env);
}

static void forward_error(struct coord *c, void *push, const char *id, uint64_t step,
                          const struct row *rows, int n, Bitnet__ErrorCode code,
                          const char *needle, const char *what)
{
    send_forward(push, step, rows, n, 0);
    expect_error(c, id, step, code, needle, what);
}

static Bitnet__StatusReply *status_of(struct coord *c, const char *id, Bitnet__Envelope **hold)
{
    Bitnet__Envelope env;
    Bitnet__StatusRequest sr = BITNET__STATUS_REQUEST__INIT;
    uint64_t req = ++c->next_req;
    wire_envelope_init(&env, req);
    env.body_case = BITNET__ENVELOPE__BODY_STATUS_REQUEST;
    env.status_request = &sr;
    send_to(c, id, &env);
    *hold = expect(c, id, BITNET__ENVELOPE__BODY_STATUS_REPLY, 3000, NULL);
    CHECK(*hold && (*hold)->request_id == req, "%s: no StatusReply for request %llu", id,
          (unsigned long long)req);
    return *hold ? (*hold)->status_reply : NULL;
}

static void kv_op(struct coord *c, const char *id, Bitnet__KvOpKind kind, uint32_t seq,
                  uint32_t n_pos, Bitnet__Envelope__BodyCase want, const char *what)
{
    Bitnet__Envelope env;
    Bitnet__KvOp op = BITNET__KV_OP__INIT;
    uint64_t req = ++c->next_req;
    wire_envelope_init(&env, req);
    op.kind = kind;
    op.seq_id = seq;
    op.n_positions = n_pos;
    env.body_case = BITNET__ENVELOPE__BODY_KV_OP;
    env.kv_op = &op;
    send_to(c, id, &env);
    Bitnet__Envelope *r = expect(c, id, want, 3000, NULL);
    CHECK(r && r->request_id == req, "%s: no %s", what, wire_body_name(want));
    wire_free(r);
}

/* Forward refusals on the 1-worker chain's worker, which must stay up and serve. */
static void test_refusals(struct coord *c, const char *id, const struct ref *s1, uint32_t V)
{
    struct kid *k = kid_by_id(c, id, strlen(id));
    void *push = push_to(c, k->data_ep);
    struct row bad_slot = {N_SLOTS, 0, s1->ids[0], true};
    struct row far = {1, KV_CTX, s1->ids[0], true};
    struct row bad_tok = {1, 0, (int32_t)V, true};
    struct row gap = {1, 5, s1->ids[5], true};
    forward_error(c, push, id, 900, &bad_slot, 1, BITNET__ERROR_CODE__ERROR_CODE_UNKNOWN_SEQUENCE,
                  "slot", "slot out of range");
    forward_error(c, push, id, 901, &far, 1, BITNET__ERROR_CODE__ERROR_CODE_KV_FULL, "context",
                  "position beyond kv_ctx");
    forward_error(c, push, id, 902, &bad_tok, 1, BITNET__ERROR_CODE__ERROR_CODE_BAD_REQUEST,
                  "vocabulary", "token out of range");
    forward_error(c, push, id, 903, &gap, 1, BITNET__ERROR_CODE__ERROR_CODE_BAD_REQUEST,
                  "cache holds", "position past the cached ones");
    struct row skip[2] = {{1, 0, s1->ids[0], true}, {1, 2, s1->ids[2], true}};
    forward_error(c, push, id, 904, skip, 2, BITNET__ERROR_CODE__ERROR_CODE_BAD_REQUEST,
                  "follow", "positions of a slot not consecutive in a step");

    /* hidden states to the first stage */
    {
        Bitnet__Envelope env;
        Bitnet__Forward f = BITNET__FORWARD__INIT;
        uint32_t slot = 1, pos = 0;
        protobuf_c_boolean want = 1;
        float hidden[256] = {0};
        struct errbuf e;
        wire_envelope_init(&env, 0);
        f.step_id = 905;
        f.n_seq_ids = f.n_positions = f.n_want_logits = 1;
        f.seq_ids = &slot;
        f.positions = &pos;
        f.want_logits = &want;
        CHECK(wire_forward_set_hidden(&f, hidden, 1, 256, BITNET__ELEM_TYPE__ELEM_TYPE_F32, &e) == 0,
              "%s", e.msg);
        env.body_case = BITNET__ENVELOPE__BODY_FORWARD;
        env.forward = &f;
        wire_send(push, &env, 1000, &e);
        free(f.hidden.data);
        expect_error(c, id, 905, BITNET__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "token ids",
                     "hidden states to the first stage");
    }

    /* KvOp: after DROP the slot holds nothing, so position 1 is a gap */
    struct chain_run r = {.c = c, .push = push, .name = "after refusals", .V = V, .n_stages = 1,
                          .step = 910};
    struct row two[2] = {{1, 0, s1->ids[0], true}, {1, 1, s1->ids[1], true}};
    r.slot_ref[1] = s1;
    run_step(&r, two, 2, 0);
    kv_op(c, id, BITNET__KV_OP_KIND__KV_OP_KIND_TRUNCATE, 1, 1, BITNET__ENVELOPE__BODY_ACK,
          "truncate");
    struct row p2 = {1, 2, s1->ids[2], true};
    forward_error(c, push, id, 920, &p2, 1, BITNET__ERROR_CODE__ERROR_CODE_BAD_REQUEST,
                  "cache holds", "position 2 after truncating to 1");
    struct row p1 = {1, 1, s1->ids[1], true};
    r.step = 920;
    run_step(&r, &p1, 1, 0);
    kv_op(c, id, BITNET__KV_OP_KIND__KV_OP_KIND_DROP, 1, 0, BITNET__ENVELOPE__BODY_ACK, "drop");
    forward_error(c, push, id, 930, &p2, 1, BITNET__ERROR_CODE__ERROR_CODE_BAD_REQUEST,
                  "cache holds", "position after drop");
    kv_op(c, id, BITNET__KV_OP_KIND__KV_OP_KIND_DROP, 99, 0, BITNET__ENVELOPE__BODY_ERROR,
          "drop of slot 99");
    kv_op(c, id, BITNET__KV_OP_KIND__KV_OP_KIND_DROP_ALL, 0, 0, BITNET__ENVELOPE__BODY_ACK,
          "drop all");

    /* top_k instead of full rows, and the worker still computes right after all that */
    struct row tk[3] = {{1, 0, s1->ids[0], false}, {1, 1, s1->ids[1], true},
                        {1, 2, s1->ids[2], true}};
    r.step = 940;
    run_step(&r, tk, 3, 5);
    CHECK(r.rows_checked == 5 && r.rows_bad == 0 && r.steps_lost == 0,
          "steps around refusals: %d rows checked, %d bad, %d lost", r.rows_checked, r.rows_bad,
          r.steps_lost);

    /* garbage, another protocol version and a non-Forward body on the data socket */
    Bitnet__Envelope *hold;
    Bitnet__StatusReply *before = status_of(c, id, &hold);
    uint64_t mal0 = before ? before->malformed_rejected : 0;
    uint64_t ver0 = before ? before->wrong_version_rejected : 0;
    uint64_t served0 = before ? before->requests_served : 0;
    wire_free(hold);
    zmq_send(push, "\xff\xfe garbage", 10, 0);
    {
        Bitnet__Envelope env;
        Bitnet__Forward f = BITNET__FORWARD__INIT;
        uint32_t slot = 1, pos = 0;
        int32_t tok = s1->ids[0];
        protobuf_c_boolean want = 1;
        wire_envelope_init(&env, 0);
        env.version = BITNET_PROTOCOL_VERSION + 1;
        f.step_id = 950;
        f.n_rows = 1;
        f.n_seq_ids = f.n_positions = f.n_want_logits = f.n_token_ids = 1;
        f.seq_ids = &slot;
        f.positions = &pos;
        f.token_ids = &tok;
        f.want_logits = &want;
        env.body_case = BITNET__ENVELOPE__BODY_FORWARD;
        env.forward = &f;
        struct errbuf e;
        wire_send(push, &env, 1000, &e);
        Bitnet__StatusRequest sr = BITNET__STATUS_REQUEST__INIT;
        wire_envelope_init(&env, 0);
        env.body_case = BITNET__ENVELOPE__BODY_STATUS_REQUEST;
        env.status_request = &sr;
        wire_send(push, &env, 1000, &e);
    }
    /* and garbage on the control socket, which is answered */
    {
        zmq_send(c->ctl, id, strlen(id), ZMQ_SNDMORE);
        zmq_send(c->ctl, "\x08\x01\x1a\xff", 4, 0);
        expect_error(c, id, 0, BITNET__ERROR_CODE__ERROR_CODE_MALFORMED, NULL,
                     "garbage on the control socket");
    }
    /* still serving: a step after the junk */
    struct row one = {1, 0, s1->ids[0], true};
    r.step = 960;
    run_step(&r, &one, 1, 0);
    CHECK(r.rows_checked == 6 && r.rows_bad == 0 && r.steps_lost == 0,
          "a step after junk frames: %d rows, %d bad, %d lost", r.rows_checked, r.rows_bad,
          r.steps_lost);
    Bitnet__StatusReply *after = status_of(c, id, &hold);
    if (after) {
        CHECK(after->malformed_rejected == mal0 + 3 && after->wrong_version_rejected == ver0 + 1,
              "rejections counted: malformed %llu -> %llu, wrong version %llu -> %llu",
              (unsigned long long)mal0, (unsigned long long)after->malformed_rejected,
              (unsigned long long)ver0, (unsigned long long)after->wrong_version_rejected);
        CHECK(after->requests_served == served0 + 1, "requests served %llu -> %llu",
              (unsigned long long)served0, (unsigned long long)after->requests_served);
        CHECK(after->loaded && after->layer_begin == 0 && after->layer_end == 4 &&
                  strcmp(after->worker_id, id) == 0 && strcmp(after->model_sha256, c->sha) == 0 &&
                  after->uptime_seconds > 0 && after->threads == 2,
              "status: loaded %d layers %u-%u id %s threads %u", after->loaded,
              after->layer_begin, after->layer_end, after->worker_id, after->threads);
    }
    wire_free(hold);
    zmq_close(push);
}

/* A middle stage refuses what it cannot run, on the control socket, too. */
static void test_middle_refusals(struct coord *c, const char *id)
{
    struct kid *k = kid_by_id(c, id, strlen(id));
    void *push = push_to(c, k->data_ep);
    struct row toks = {0, 0, 1, true};
    forward_error(c, push, id, 970, &toks, 1, BITNET__ERROR_CODE__ERROR_CODE_BAD_REQUEST,
                  "hidden states", "token ids to a middle stage");
    Bitnet__Envelope env;
    Bitnet__Forward f = BITNET__FORWARD__INIT;
    uint32_t slot = 0, pos = 0;
    protobuf_c_boolean want = 1;
    float hidden[100] = {0};
    struct errbuf e;
    wire_envelope_init(&env, 0);
    f.step_id = 971;
    f.n_seq_ids = f.n_positions = f.n_want_logits = 1;
    f.seq_ids = &slot;
    f.positions = &pos;
    f.want_logits = &want;
    wire_forward_set_hidden(&f, hidden, 1, 100, BITNET__ELEM_TYPE__ELEM_TYPE_BF16, &e);
    env.body_case = BITNET__ENVELOPE__BODY_FORWARD;
    env.forward = &f;
    wire_send(push, &env, 1000, &e);
    free(f.hidden.data);
    expect_error(c, id, 971, BITNET__ERROR_CODE__ERROR_CODE_BAD_REQUEST, "wide",
                 "hidden rows of the wrong width");
    zmq_close(push);
}

/* LoadShard again on a loaded worker, now sending BF16 hidden states: the chain keeps
 * working, and its logits move by about what BF16 rounding of the hidden state costs. */
static void test_reload_bf16(struct coord *c, const struct stage *two, const struct ref *s1,
                             uint32_t V)
{
    struct stage first = two[0];
    first.act = BITNET__ELEM_TYPE__ELEM_TYPE_BF16;
    Bitnet__Envelope *r = load_shard(c, &first, c->sha, kid_by_id(c, two[1].id, 3)->data_ep);
    CHECK(r && r->load_shard_reply->ok, "reload with bf16: %s",
          r ? r->load_shard_reply->error : "no reply");
    wire_free(r);
    void *push = push_to(c, kid_by_id(c, two[0].id, 3)->data_ep);
    struct row rows[8];
    for (int t = 0; t < 8; t++)
        rows[t] = (struct row){1, (uint32_t)t, s1->ids[t], true};
    send_forward(push, 500, rows, 8, 0);
    Bitnet__Envelope *env = expect_result(c, 500, 5000);
    CHECK(env && env->forward_result->n_rows == 8 && env->forward_result->n_vocab == V,
          "bf16 chain: no result of 8 rows");
    if (env && env->forward_result->n_rows == 8) {
        const float *got = (const float *)env->forward_result->logits.data;
        double max_diff = 0;
        size_t exact = 0;
        for (size_t i = 0; i < (size_t)8 * V; i++) {
            double d = fabs((double)got[i] - s1->logits[i]);
            max_diff = d > max_diff ? d : max_diff;
            exact += got[i] == s1->logits[i];
        }
        CHECK(max_diff < 0.5 && exact < (size_t)8 * V, "bf16 hidden states: logits differ by "
              "up to %g, %zu of %zu equal", max_diff, exact, (size_t)8 * V);
        fprintf(stderr, "bf16 hidden states: max logit difference %g\n", max_diff);
    }
    wire_free(env);
    zmq_close(push);
}

/* Heartbeats of worker id over a quiet second. */
static void test_heartbeats(struct coord *c, const char *id)
{
    struct kid *k = kid_by_id(c, id, strlen(id));
    int before = k->heartbeats;
    expect(c, "nobody", BITNET__ENVELOPE__BODY_ACK, 1000, NULL);
    int n = k->heartbeats - before;
    CHECK(n >= 1000 / HEARTBEAT_MS - 3 && n <= 1000 / HEARTBEAT_MS + 2,
          "%s: %d heartbeats in 1 s at %d ms", id, n, HEARTBEAT_MS);
    for (int i = 0; i < c->n_kids; i++)
        CHECK(c->kids[i].pid <= 0 || (c->kids[i].hb_monotonic && c->kids[i].heartbeats > 0),
              "%s: %d heartbeats, well-formed and monotonic: %d", c->kids[i].id,
              c->kids[i].heartbeats, c->kids[i].hb_monotonic);
}

/* The daemon goes away and a new one binds the same endpoint: every worker says Hello
 * again, keeps its shard, and the 1-worker chain still computes. */
static void test_daemon_restart(struct coord *c, const char *id, const struct ref *s1, uint32_t V)
{
    zmq_close(c->ctl);
    usleep(300000);
    c->ctl = bind_sock(c, ZMQ_ROUTER, c->ctl_ep);
    for (int i = 0; i < c->n_kids; i++)
        c->kids[i].hello_seen = false;
    collect_hellos(c, 5000);
    struct kid *k = kid_by_id(c, id, strlen(id));
    struct chain_run r = {.c = c, .name = "after restart", .V = V, .n_stages = 1, .step = 1000};
    r.push = push_to(c, k->data_ep);
    r.slot_ref[0] = s1;
    struct row rows[3] = {{0, 0, s1->ids[0], false}, {0, 1, s1->ids[1], false},
                          {0, 2, s1->ids[2], true}};
    run_step(&r, rows, 3, 0);
    CHECK(r.rows_checked == 1 && r.rows_bad == 0 && r.steps_lost == 0,
          "a step after the daemon restart");
    zmq_close(r.push);
}

static void test_options(void)
{
    CHECK(run_cmd("%s --id w1 2>/dev/null", WORKER_BIN) == 2, "missing --control refused");
    CHECK(run_cmd("%s --id w1 --control ipc://x --data ipc://y --heartbeat-ms 0 2>/dev/null",
                  WORKER_BIN) == 2,
          "--heartbeat-ms 0 refused");
    CHECK(run_cmd("%s --id w1 --control ipc://x --data ipc://y --hello-retry-ms 60001 "
                  "2>/dev/null", WORKER_BIN) == 2,
          "--hello-retry-ms 60001 refused");
    CHECK(run_cmd("%s --id 'a b' --control ipc://x --data ipc://y 2>/dev/null", WORKER_BIN) == 2,
          "id with a space refused");
    CHECK(run_cmd("%s --id w1 --control ipc://x --data ipc://y --max-bytes 12x 2>/dev/null",
                  WORKER_BIN) == 2,
          "--max-bytes 12x refused");
    CHECK(run_cmd("%s --frobnicate 2>/dev/null", WORKER_BIN) == 2, "unknown option refused");
    CHECK(run_cmd("%s --help >/dev/null", WORKER_BIN) == 0, "--help");
}

/* ---------------------------------------------------------------------------------------
 * Main */

static bool setup(struct coord *c)
{
    memset(c, 0, sizeof *c);
    wire_rx_init(&c->rx, 0);
    mkdir("build", 0755);
    mkdir("build/test-tmp", 0755);
    char tmpl[] = "build/test-tmp/test_worker.XXXXXX";
    if (!mkdtemp(tmpl) || !realpath(tmpl, c->dir))
        return false;
    snprintf(c->ctl_ep, sizeof c->ctl_ep, "ipc://%s/workers.sock", c->dir);
    snprintf(c->res_ep, sizeof c->res_ep, "ipc://%s/results.sock", c->dir);
    c->zctx = zmq_ctx_new();
    c->ctl = bind_sock(c, ZMQ_ROUTER, c->ctl_ep);
    c->results = bind_sock(c, ZMQ_PULL, c->res_ep);
    return c->ctl && c->results;
}

static void teardown(struct coord *c)
{
    kill_all(c);
    if (c->ctl)
        zmq_close(c->ctl);
    if (c->results)
        zmq_close(c->results);
    if (c->zctx)
        zmq_ctx_term(c->zctx);
    if (c->dir[0])
        run_cmd("rm -rf '%s'", c->dir);
}

int main(void)
{
    bool shared = !shared_data_missing();
    model_file = tiny_model_path("test_worker");
    /* a hung worker must not hang CI; the children die with us (PDEATHSIG) */
    alarm(60);
    kernels_init();
    test_options();

    struct bitnet_model m;
    struct errbuf e;
    CHECK(model_file, "no model");
    if (!model_file)
        return check_done("test_worker");
    if (bitnet_model_load(&m, model_file, &e) < 0) {
        CHECK(0, "%s", e.msg);
        return check_done("test_worker");
    }
    uint32_t V = m.hp.n_vocab;
    struct ref s1 = {0}, s2 = {0};
    CHECK(make_ref(&m, shared ? SEQ1 : NULL, TEXT1, &s1) == 0 &&
              make_ref(&m, shared ? SEQ2 : NULL, TEXT2, &s2) == 0,
          "references");
    if (!shared)
        printf("sequences of %d and %d tokens from the texts \"%s\" and \"%s\"\n", s1.n, s2.n,
               TEXT1, TEXT2);
    struct coord c;
    if (!setup(&c) || model_sha256(c.sha) < 0 || s1.n < 12 || s2.n < 12) {
        CHECK(0, "setup (%s)", c.dir);
        goto out;
    }

    const struct stage one[] = {{"w1", 0, 4, true, true, 2, 0, UINT32_MAX, 0}};
    const struct stage two[] = {{"w2a", 0, 2, true, false, 1, -1, 0, 0},
                                {"w2b", 2, 4, false, true, 1, -1, UINT32_MAX, 0}};
    const struct stage three[] = {{"w3a", 0, 1, true, false, 1, -1, UINT32_MAX, 0},
                                  {"w3b", 1, 4, false, false, 1, -1, UINT32_MAX, 0},
                                  {"w3c", 4, 4, false, true, 1, -1, UINT32_MAX, 0}};
    const char *ids[] = {"w1", "w2a", "w2b", "w3a", "w3b", "w3c"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        start_worker(&c, ids[i]);
    /* one more that the daemon refuses: it must exit non-zero */
    struct kid *refused = start_worker(&c, "wx");
    refused->refuse = true;
    if (!collect_hellos(&c, 5000))
        goto out; /* nothing else can work; teardown kills whatever did start */
    int st = wait_exit(refused->pid, 3000);
    CHECK(st == 1, "refused worker: exit status %d", st);
    if (st >= 0)
        refused->pid = 0;
    /* one Hello each: a worker whose first was answered promptly says no more (a second,
     * sent when its connection event came after the first, made bitnetd refuse it) */
    expect(&c, NULL, BITNET__ENVELOPE__BODY_ACK, 300, NULL);
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        const struct kid *k = kid_by_id(&c, ids[i], strlen(ids[i]));
        CHECK(k && k->hellos == 1, "%s: %d Hellos on a clean start", ids[i], k ? k->hellos : -1);
    }

    /* before any shard: Forward is NOT_LOADED; a wrong sha256 or layer range is refused */
    {
        void *push = push_to(&c, kid_by_id(&c, "w1", 2)->data_ep);
        struct row r0 = {0, 0, s1.ids[0], true};
        forward_error(&c, push, "w1", 7, &r0, 1, BITNET__ERROR_CODE__ERROR_CODE_NOT_LOADED,
                      "no shard", "forward before load");
        zmq_close(push);
        char wrong[65];
        memcpy(wrong, c.sha, 65);
        wrong[0] = wrong[0] == '0' ? '1' : '0';
        Bitnet__Envelope *r = load_shard(&c, &one[0], wrong, c.res_ep);
        CHECK(r && !r->load_shard_reply->ok && strstr(r->load_shard_reply->error, "sha256"),
              "wrong sha256 refused: %s", r ? r->load_shard_reply->error : "no reply");
        wire_free(r);
        struct stage past = one[0];
        past.l1 = 9;
        r = load_shard(&c, &past, c.sha, c.res_ep);
        CHECK(r && !r->load_shard_reply->ok && strstr(r->load_shard_reply->error, "layers"),
              "layers past the model refused: %s", r ? r->load_shard_reply->error : "no reply");
        wire_free(r);
    }

    bool one_ok = load_chain(&c, one, 1);
    if (one_ok)
        check_chain(&c, "1 worker", one, 1, &s1, &s2, V, 0);
    if (load_chain(&c, two, 2)) {
        check_chain(&c, "2 workers", two, 2, &s1, &s2, V, 100);
        test_middle_refusals(&c, "w2b");
        test_reload_bf16(&c, two, &s1, V);
    }
    if (load_chain(&c, three, 3))
        check_chain(&c, "3 workers", three, 3, &s1, &s2, V, 200);
    if (one_ok) {
        test_refusals(&c, "w1", &s1, V);
        test_heartbeats(&c, "w1");
        test_daemon_restart(&c, "w1", &s1, V);
    }

    /* SIGTERM: exit 0, ipc file gone */
    for (int i = 0; i < c.n_kids; i++) {
        struct kid *k = &c.kids[i];
        if (k->pid <= 0)
            continue;
        kill(k->pid, SIGTERM);
        int st = wait_exit(k->pid, 3000);
        CHECK(st == 0, "%s: exit status %d after SIGTERM", k->id, st);
        if (st >= 0)
            k->pid = 0;
        CHECK(access(k->data_path, F_OK) != 0 && errno == ENOENT, "%s: %s left behind", k->id,
              k->data_path);
    }
    CHECK(c.strays == 0, "%d unexpected control messages", c.strays);

out:
    teardown(&c);
    free_ref(&s1);
    free_ref(&s2);
    bitnet_model_free(&m);
    return check_done("test_worker");
}

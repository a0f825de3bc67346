/* bitnetd end to end: starts build/bitnetd (with build/bitnet-worker) on a synthesized
 * model through 1, 2 and 3 workers and checks, against the in-process engine:
 * greedy generation token for token; eval logits bit for bit; four concurrent jobs each
 * equal to its own single-stream result (continuous batching); Cancel; a client of
 * another protocol version refused; status, workers and placement replies; a worker
 * SIGKILLed mid-generation restarted with the generation unchanged; a SIGSTOPped worker
 * detected within 2 s and replaced; Shutdown exiting 0 without leaving socket files; and
 * configuration errors refused with a message.
 *
 * Every process this test starts runs in the daemon's process group, which is killed on
 * every way out (atexit), so a failing check leaves nothing behind. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "kernels/kernels.h"
#include "model/clock.h"
#include "model/forward.h"
#include "model/sample.h"
#include "model/tokenizer.h"
#include "model/vocab_gguf.h"
#include "proto/wire.h"
#include "tests/check.h"
#include "tests/util.h"

#define TDIR "build/test-tmp/daemon"
#define MODEL TDIR "/m.gguf"
#define BITNETD "build/bitnetd"
/* --worker-bin for workers that repeat their Hello every millisecond */
#define HELLO_REPEATER TDIR "/hello-repeater.sh"
#define MAX_GEN 256

static const char *const prompts[] = {
    "The capital of France is",
    "Once upon a time, in a land far away,",
    "def fibonacci(n):",
    "Zebras and giraffes",
    "1, 2, 3, 4,",
};
#define N_PROMPTS (int)(sizeof prompts / sizeof prompts[0])

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---------------------------------------------------------------------------------------
 * The daemon process (its group is the cleanup handle) */

static pid_t daemon_pid; /* the one global: atexit must find the process group */

static void kill_daemon_group(void)
{
    if (daemon_pid > 0) {
        kill(-daemon_pid, SIGKILL);
        waitpid(daemon_pid, NULL, 0);
        daemon_pid = 0;
    }
}

static void on_fatal_signal(int sig)
{
    if (daemon_pid > 0)
        kill(-daemon_pid, SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Starts bitnetd with the given arguments after the model; its output goes to log. */
static pid_t start_daemon(const char *log, const char *const *args)
{
    const char *argv[32] = {BITNETD};
    int n = 1;
    for (; args[n - 1] && n < 31; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(BITNETD, (char *const *)argv);
        _exit(127);
    }
    if (pid > 0)
        setpgid(pid, pid);
    return pid;
}

/* Waits for pid's exit; its status, or -1 after timeout_ms. */
static int wait_exit(pid_t pid, int timeout_ms)
{
    double end = clock_ms() + timeout_ms;
    do {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        sleep_ms(20);
    } while (clock_ms() < end);
    return -1;
}

static void show_log(const char *log)
{
    size_t len;
    char *text = slurp(log, &len);
    if (!text)
        return;
    const char *start = len > 4000 ? text + len - 4000 : text;
    fprintf(stderr, "---- %s (end) ----\n%s---- end of %s ----\n", log, start, log);
    free(text);
}

/* pid of the worker with that id among the children of the daemon, or -1. */
static pid_t worker_pid(pid_t parent, const char *id)
{
    DIR *dir = opendir("/proc");
    if (!dir)
        return -1;
    pid_t found = -1;
    struct dirent *de;
    while (found < 0 && (de = readdir(dir))) {
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        char path[300], buf[4096];
        snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        char *rp = strrchr(buf, ')');
        char state;
        int ppid;
        if (!rp || sscanf(rp + 2, "%c %d", &state, &ppid) != 2 || ppid != parent || state == 'Z')
            continue;
        snprintf(path, sizeof path, "/proc/%s/cmdline", de->d_name);
        f = fopen(path, "r");
        if (!f)
            continue;
        n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        for (size_t i = 0; i + 1 < n; i++)
            if (memcmp(buf + i, "--id", 5) == 0 && i + 5 < n && strcmp(buf + i + 5, id) == 0)
                found = atoi(de->d_name);
    }
    closedir(dir);
    return found;
}

/* ---------------------------------------------------------------------------------------
 * A minimal client */

struct client {
    void *ctx, *sock;
    uint64_t next_id;
    struct wire_rx rx;
};

static int client_open(struct client *c, const char *run_dir)
{
    memset(c, 0, sizeof *c);
    char ep[300];
    snprintf(ep, sizeof ep, "ipc://%s/ctl.sock", run_dir);
    c->ctx = zmq_ctx_new();
    c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger);
    c->next_id = 1;
    wire_rx_init(&c->rx, 0);
    return zmq_connect(c->sock, ep);
}

static void client_close(struct client *c)
{
    if (c->sock)
        zmq_close(c->sock);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    memset(c, 0, sizeof *c);
}

static uint64_t client_send(struct client *c, Bitnet__Envelope *env)
{
    struct errbuf e;
    env->request_id = c->next_id++;
    if (wire_send(c->sock, env, 2000, &e) != WIRE_OK) {
        fprintf(stderr, "client send: %s\n", e.msg);
        return 0;
    }
    return env->request_id;
}

/* The next envelope answering id (0: any), or NULL after timeout_ms. */
static Bitnet__Envelope *client_recv(struct client *c, uint64_t id, int timeout_ms)
{
    double end = clock_ms() + timeout_ms;
    for (;;) {
        int left = (int)(end - clock_ms());
        if (left <= 0)
            return NULL;
        Bitnet__Envelope *env = NULL;
        struct errbuf e;
        int rc = wire_recv(c->sock, &c->rx, &env, left, &e);
        if (rc == WIRE_AGAIN)
            return NULL;
        if (rc != WIRE_OK) {
            fprintf(stderr, "client recv: %s\n", e.msg);
            continue;
        }
        if (!id || env->request_id == id)
            return env;
        wire_free(env);
    }
}

static Bitnet__Envelope *request(struct client *c, Bitnet__Envelope__BodyCase body, void *msg,
                                 int timeout_ms)
{
    Bitnet__Envelope env;
    wire_envelope_init(&env, 0);
    env.body_case = body;
    env.hello = msg; /* the bodies share one union */
    uint64_t id = client_send(c, &env);
    return id ? client_recv(c, id, timeout_ms) : NULL;
}

static Bitnet__Envelope *status(struct client *c)
{
    Bitnet__StatusRequest sr = BITNET__STATUS_REQUEST__INIT;
    return request(c, BITNET__ENVELOPE__BODY_STATUS_REQUEST, &sr, 1000);
}

static uint64_t send_generate_opts(struct client *c, const char *prompt, int n_predict,
                                   bool stream, const char *stop)
{
    Bitnet__GenerateRequest g = BITNET__GENERATE_REQUEST__INIT;
    Bitnet__SamplingParams sp = BITNET__SAMPLING_PARAMS__INIT;
    sp.temp = 0;
    sp.top_p = 1;
    sp.repeat_penalty = 1;
    g.input_case = BITNET__GENERATE_REQUEST__INPUT_PROMPT;
    g.prompt = (char *)prompt;
    g.add_bos = true;
    g.n_predict = n_predict;
    g.sampling = &sp;
    g.stream = stream;
    g.return_ids = true;
    char *stops[1] = {(char *)stop};
    if (stop) {
        g.n_stop = 1;
        g.stop = stops;
    }
    Bitnet__Envelope env;
    wire_envelope_init(&env, 0);
    env.body_case = BITNET__ENVELOPE__BODY_GENERATE_REQUEST;
    env.generate_request = &g;
    return client_send(c, &env);
}

static uint64_t send_generate(struct client *c, const char *prompt, int n_predict)
{
    return send_generate_opts(c, prompt, n_predict, true, NULL);
}

/* A generation as the client saw it. */
struct gen {
    uint64_t request_id, job_id;
    int32_t ids[MAX_GEN];
    int n;
    bool done;
    int stop_reason;
    double t_last_chunk;
    int n_chunks;
    char text[4096];
    size_t n_text;
    char error[256];
};

/* Adds a GenerateChunk or Error to g; true when it ended the job. */
static bool gen_take(struct gen *g, const Bitnet__Envelope *env)
{
    g->t_last_chunk = clock_ms();
    if (env->body_case == BITNET__ENVELOPE__BODY_ERROR) {
        snprintf(g->error, sizeof g->error, "%s", env->error->message);
        g->done = true;
        return true;
    }
    if (env->body_case != BITNET__ENVELOPE__BODY_GENERATE_CHUNK)
        return false;
    const Bitnet__GenerateChunk *ch = env->generate_chunk;
    g->job_id = ch->job_id;
    g->n_chunks++;
    if (ch->text.len && ch->text.len < sizeof g->text - g->n_text) { /* data NULL when empty */
        memcpy(g->text + g->n_text, ch->text.data, ch->text.len);
        g->n_text += ch->text.len;
    }
    for (size_t i = 0; i < ch->n_token_ids && g->n < MAX_GEN; i++)
        g->ids[g->n++] = ch->token_ids[i];
    if (ch->done) {
        g->done = true;
        g->stop_reason = (int)ch->stop_reason;
        if (ch->error)
            snprintf(g->error, sizeof g->error, "%s", ch->error);
    }
    return ch->done;
}

/* Collects the chunks of every g until all are done or timeout_ms passes. */
static void gen_collect(struct client *c, struct gen *g, int n, int timeout_ms)
{
    double end = clock_ms() + timeout_ms;
    int left = 0;
    for (int i = 0; i < n; i++)
        left += !g[i].done;
    while (left > 0 && clock_ms() < end) {
        Bitnet__Envelope *env = client_recv(c, 0, (int)(end - clock_ms()));
        if (!env)
            break;
        for (int i = 0; i < n; i++)
            if (g[i].request_id == env->request_id && !g[i].done && gen_take(&g[i], env))
                left--;
        wire_free(env);
    }
}

static bool same_ids(const int32_t *a, int na, const int32_t *b, int nb)
{
    return na == nb && memcmp(a, b, (size_t)na * sizeof *a) == 0;
}

/* ---------------------------------------------------------------------------------------
 * The in-process engine, for reference */

struct ref {
    struct bitnet_model m;
    struct tokenizer *tok;
    int32_t ids[N_PROMPTS][MAX_GEN];
    int n_ids[N_PROMPTS];
    int n_predict[N_PROMPTS];
};

static int encode(const struct ref *r, const char *text, int32_t **ids, size_t *n)
{
    struct errbuf e;
    if (tokenizer_encode(r->tok, text, strlen(text), true, true, ids, n, &e) < 0) {
        fprintf(stderr, "encode: %s\n", e.msg);
        return -1;
    }
    return 0;
}

/* Greedy generation as bitnetctl generate does it: stops at EOG or n_predict. */
static int ref_generate(struct ref *r, const char *prompt, int n_predict, int32_t *out)
{
    int32_t *ids;
    size_t n;
    if (encode(r, prompt, &ids, &n) < 0)
        return -1;
    struct forward_state s;
    struct errbuf e;
    struct forward_config cfg = {.n_ctx = 512, .n_batch = 64};
    if (forward_state_init(&s, &r->m, &cfg, &e) < 0) {
        fprintf(stderr, "%s\n", e.msg);
        free(ids);
        return -1;
    }
    int got = 0;
    for (size_t done = 0; done < n;) {
        int k = n - done < 64 ? (int)(n - done) : 64;
        if (forward_batch(&r->m, &s, ids + done, k, (int)done, &e) < 0) {
            fprintf(stderr, "%s\n", e.msg);
            got = -1;
            break;
        }
        done += (size_t)k;
        if (done == n)
            forward_output(&r->m, &s, k - 1);
    }
    const float *logits = s.logits;
    for (int pos = (int)n; got >= 0 && got < n_predict;) {
        int32_t id = argmax_f32(logits, r->m.hp.n_vocab);
        if (tokenizer_is_eog(r->tok, id))
            break;
        out[got++] = id;
        if (got == n_predict)
            break;
        if (!(logits = forward_token(&r->m, &s, id, pos++, &e))) {
            fprintf(stderr, "%s\n", e.msg);
            got = -1;
        }
    }
    forward_state_free(&s);
    free(ids);
    return got;
}

/* Logits after every prefix of ids, one position at a time. */
static float *ref_eval(struct ref *r, const int32_t *ids, int n)
{
    struct forward_state s;
    struct errbuf e;
    struct forward_config cfg = {.n_ctx = 512, .n_batch = 1};
    if (forward_state_init(&s, &r->m, &cfg, &e) < 0)
        return NULL;
    size_t V = r->m.hp.n_vocab;
    float *out = malloc((size_t)n * V * sizeof *out);
    for (int p = 0; out && p < n; p++) {
        const float *l = forward_token(&r->m, &s, ids[p], p, &e);
        if (!l) {
            free(out);
            out = NULL;
            break;
        }
        memcpy(out + (size_t)p * V, l, V * sizeof *out);
    }
    forward_state_free(&s);
    return out;
}

/* ---------------------------------------------------------------------------------------
 * Checks against a running daemon */

/* Polls status until every worker is ready; the status envelope's numbers are checked. */
static bool wait_ready(struct client *c, int n_workers, int timeout_ms)
{
    double end = clock_ms() + timeout_ms;
    while (clock_ms() < end) {
        Bitnet__Envelope *r = status(c);
        bool ok = r && r->body_case == BITNET__ENVELOPE__BODY_DAEMON_STATUS_REPLY &&
                  r->daemon_status_reply->n_workers == (uint32_t)n_workers &&
                  r->daemon_status_reply->n_workers_ready == (uint32_t)n_workers &&
                  r->daemon_status_reply->state == BITNET__DAEMON_STATE__DAEMON_STATE_READY;
        wire_free(r);
        if (ok)
            return true;
        sleep_ms(50);
    }
    return false;
}

static void check_greedy(struct client *c, struct ref *r, int pi, const char *what)
{
    struct gen g = {0};
    g.request_id = send_generate(c, prompts[pi], r->n_predict[pi]);
    gen_collect(c, &g, 1, 30000);
    CHECK(g.done && g.stop_reason == BITNET__STOP_REASON__STOP_REASON_LENGTH,
          "%s: prompt %d: done %d, stop reason %d, error '%s'", what, pi, g.done, g.stop_reason,
          g.error);
    CHECK(same_ids(g.ids, g.n, r->ids[pi], r->n_ids[pi]),
          "%s: prompt %d: %d ids differ from the in-process engine's %d", what, pi, g.n,
          r->n_ids[pi]);
}

static void check_status_workers_placement(struct client *c, int n_workers, int n_layer,
                                           const char *what)
{
    Bitnet__Envelope *r = status(c);
    CHECK(r && r->body_case == BITNET__ENVELOPE__BODY_DAEMON_STATUS_REPLY, "%s: status reply",
          what);
    if (r && r->body_case == BITNET__ENVELOPE__BODY_DAEMON_STATUS_REPLY) {
        const Bitnet__DaemonStatusReply *s = r->daemon_status_reply;
        CHECK(s->n_workers == (uint32_t)n_workers && s->n_workers_ready == (uint32_t)n_workers,
              "%s: status says %u of %u workers ready", what, s->n_workers_ready, s->n_workers);
        CHECK(s->protocol_version == BITNET_PROTOCOL_VERSION && strlen(s->model_sha256) == 64,
              "%s: status protocol %u, sha '%s'", what, s->protocol_version, s->model_sha256);
        CHECK(s->jobs_done > 0 && s->tokens_generated > 0, "%s: status counts %llu jobs", what,
              (unsigned long long)s->jobs_done);
    }
    wire_free(r);

    Bitnet__WorkersRequest wq = BITNET__WORKERS_REQUEST__INIT;
    r = request(c, BITNET__ENVELOPE__BODY_WORKERS_REQUEST, &wq, 2000);
    CHECK(r && r->body_case == BITNET__ENVELOPE__BODY_WORKERS_REPLY, "%s: workers reply", what);
    if (r && r->body_case == BITNET__ENVELOPE__BODY_WORKERS_REPLY) {
        const Bitnet__WorkersReply *w = r->workers_reply;
        CHECK(w->n_workers == (size_t)n_workers, "%s: %zu workers listed", what, w->n_workers);
        uint32_t next = 0;
        for (size_t i = 0; i < w->n_workers; i++) {
            const Bitnet__WorkerInfo *wi = w->workers[i];
            CHECK(wi->state == BITNET__WORKER_STATE__WORKER_STATE_READY, "%s: worker %zu state %d",
                  what, i, (int)wi->state);
            CHECK(wi->status && wi->status->loaded && wi->status->layer_begin == next &&
                      wi->status->layer_end > next,
                  "%s: worker %zu status: layers [%u, %u), expected to start at %u", what, i,
                  wi->status ? wi->status->layer_begin : 0, wi->status ? wi->status->layer_end : 0,
                  next);
            if (wi->status)
                next = wi->status->layer_end;
            CHECK(wi->last_heartbeat_ms_ago < 1000, "%s: worker %zu heartbeat %llu ms ago", what,
                  i, (unsigned long long)wi->last_heartbeat_ms_ago);
        }
        CHECK(next == (uint32_t)n_layer, "%s: workers cover layers up to %u of %d", what, next,
              n_layer);
    }
    wire_free(r);

    Bitnet__PlacementRequest pq = BITNET__PLACEMENT_REQUEST__INIT;
    r = request(c, BITNET__ENVELOPE__BODY_PLACEMENT_REQUEST, &pq, 2000);
    CHECK(r && r->body_case == BITNET__ENVELOPE__BODY_PLACEMENT_REPLY, "%s: placement reply",
          what);
    if (r && r->body_case == BITNET__ENVELOPE__BODY_PLACEMENT_REPLY) {
        json_object *j = json_tokener_parse(r->placement_reply->table_json);
        json_object *nl, *ws;
        CHECK(j && json_object_object_get_ex(j, "n_layer", &nl) &&
                  json_object_get_int(nl) == n_layer && json_object_object_get_ex(j, "workers", &ws) &&
                  (int)json_object_array_length(ws) == n_workers,
              "%s: placement JSON %s", what, r->placement_reply->table_json);
        json_object_put(j);
    }
    wire_free(r);
}

/* Shutdown: acked, exit 0, no socket or lock file left. */
static void check_shutdown(struct client *c, pid_t pid, const char *run_dir, const char *log,
                           const char *what)
{
    Bitnet__Shutdown sd = BITNET__SHUTDOWN__INIT;
    Bitnet__Envelope *r = request(c, BITNET__ENVELOPE__BODY_SHUTDOWN, &sd, 3000);
    CHECK(r && r->body_case == BITNET__ENVELOPE__BODY_ACK, "%s: Shutdown acked", what);
    wire_free(r);
    int st = wait_exit(pid, 8000);
    CHECK(st == 0, "%s: bitnetd exit status %d after Shutdown", what, st);
    if (st != 0)
        show_log(log);
    if (st >= 0)
        daemon_pid = 0;
    DIR *dir = opendir(run_dir);
    int left = 0;
    if (dir) {
        struct dirent *de;
        while ((de = readdir(dir)))
            if (de->d_name[0] != '.') {
                fprintf(stderr, "%s: left in %s: %s\n", what, run_dir, de->d_name);
                left++;
            }
        closedir(dir);
    }
    CHECK(left == 0, "%s: %d files left in the run directory", what, left);
}

/* A start without incident: no worker refused, lost or restarted on the way to ready
 * (the daemon once refused a worker's second Hello, sent before the first one's answer
 * reached it; the worker exited and was started again). */
static void check_clean_start(const char *log, const char *what)
{
    size_t len;
    char *text = slurp(log, &len);
    CHECK(text, "%s: cannot read %s", what, log);
    if (!text)
        return;
    const char *bad[] = {"refused", " lost ", "restart"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(!strstr(text, bad[i]), "%s: the log says '%s' on a clean start", what, bad[i]);
    free(text);
}

static pid_t launch(const char *run_dir, const char *log, const char *const *extra, int n_workers,
                    struct client *c, const char *what)
{
    run_cmd("rm -rf '%s'", run_dir);
    const char *args[24] = {"--model", MODEL, "--run-dir", run_dir};
    int n = 4;
    for (int i = 0; extra[i] && n < 22; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    double t0 = clock_ms();
    pid_t pid = start_daemon(log, args);
    daemon_pid = pid;
    char sock[300];
    snprintf(sock, sizeof sock, "%s/ctl.sock", run_dir);
    struct stat st;
    while (stat(sock, &st) != 0 && clock_ms() - t0 < 10000 && waitpid(pid, NULL, WNOHANG) == 0)
        sleep_ms(10);
    client_open(c, run_dir);
    bool ready = wait_ready(c, n_workers, 20000);
    CHECK(ready, "%s: not ready within 20 s", what);
    if (!ready)
        show_log(log);
    else
        printf("%s: ready in %.0f ms\n", what, clock_ms() - t0);
    return ready ? pid : -1;
}

/* ---------------------------------------------------------------------------------------
 * The two-worker checks: eval, batching, cancel, versions, faults */

static void check_eval(struct client *c, struct ref *r)
{
    int32_t *ids;
    size_t n;
    if (encode(r, prompts[1], &ids, &n) < 0)
        return;
    float *want = ref_eval(r, ids, (int)n);
    Bitnet__EvalRequest er = BITNET__EVAL_REQUEST__INIT;
    er.n_token_ids = n;
    er.token_ids = ids;
    Bitnet__Envelope *rep = request(c, BITNET__ENVELOPE__BODY_EVAL_REQUEST, &er, 30000);
    CHECK(rep && rep->body_case == BITNET__ENVELOPE__BODY_EVAL_REPLY, "eval: reply %s",
          rep ? wire_body_name(rep->body_case) : "none");
    if (rep && rep->body_case == BITNET__ENVELOPE__BODY_EVAL_REPLY && want) {
        const Bitnet__EvalReply *e = rep->eval_reply;
        size_t V = r->m.hp.n_vocab;
        CHECK(e->n_positions == n && e->n_vocab == V, "eval: %u x %u", e->n_positions, e->n_vocab);
        CHECK(e->logits.len == n * V * sizeof(float) &&
                  memcmp(e->logits.data, want, n * V * sizeof(float)) == 0,
              "eval: logits of %zu positions through 2 workers differ from forward_token's", n);
    }
    wire_free(rep);
    free(want);
    free(ids);
}

static void check_concurrent(struct client *c, struct ref *r)
{
    struct gen g[4] = {{0}};
    double t0 = clock_ms();
    for (int i = 0; i < 4; i++)
        g[i].request_id = send_generate(c, prompts[i], r->n_predict[i]);
    gen_collect(c, g, 4, 60000);
    int total = 0;
    for (int i = 0; i < 4; i++) {
        CHECK(g[i].done && g[i].stop_reason == BITNET__STOP_REASON__STOP_REASON_LENGTH,
              "concurrent %d: done %d, stop %d, '%s'", i, g[i].done, g[i].stop_reason, g[i].error);
        CHECK(same_ids(g[i].ids, g[i].n, r->ids[i], r->n_ids[i]),
              "concurrent %d: %d ids differ from its single-stream result", i, g[i].n);
        total += g[i].n;
    }
    printf("4 concurrent jobs: %d tokens in %.0f ms (%.1f tok/s)\n", total, clock_ms() - t0,
           total * 1e3 / (clock_ms() - t0));
}

/* Cancels one job while another runs beside it: the other must not notice. */
static void check_cancel(struct client *c, struct ref *r)
{
    struct gen g = {0}, other = {0};
    g.request_id = send_generate(c, prompts[0], 200);
    other.request_id = send_generate(c, prompts[3], r->n_predict[3]);
    Bitnet__Envelope *env = client_recv(c, g.request_id, 10000);
    CHECK(env && env->body_case == BITNET__ENVELOPE__BODY_GENERATE_CHUNK, "cancel: first chunk");
    if (env)
        gen_take(&g, env);
    wire_free(env);
    Bitnet__Cancel cm = BITNET__CANCEL__INIT;
    cm.job_id = g.job_id;
    Bitnet__Envelope ce;
    wire_envelope_init(&ce, 0);
    ce.body_case = BITNET__ENVELOPE__BODY_CANCEL;
    ce.cancel = &cm;
    uint64_t cid = client_send(c, &ce);
    bool acked = false;
    double end = clock_ms() + 10000;
    while ((!acked || !g.done) && clock_ms() < end) {
        env = client_recv(c, 0, 1000);
        if (!env)
            continue;
        if (env->request_id == cid)
            acked = env->body_case == BITNET__ENVELOPE__BODY_ACK;
        else if (env->request_id == g.request_id)
            gen_take(&g, env);
        else if (env->request_id == other.request_id)
            gen_take(&other, env);
        wire_free(env);
    }
    gen_collect(c, &other, 1, 20000);
    CHECK(other.done && same_ids(other.ids, other.n, r->ids[3], r->n_ids[3]),
          "cancel: the job running beside the cancelled one changed (stop %d, '%s')",
          other.stop_reason, other.error);
    CHECK(acked, "cancel: no Ack");
    CHECK(g.done && g.stop_reason == BITNET__STOP_REASON__STOP_REASON_CANCELLED && g.n < 200,
          "cancel: stream ended %d with stop reason %d after %d tokens", g.done, g.stop_reason,
          g.n);
    /* cancelling it again: it is gone */
    cm.job_id = g.job_id;
    env = request(c, BITNET__ENVELOPE__BODY_CANCEL, &cm, 2000);
    CHECK(env && env->body_case == BITNET__ENVELOPE__BODY_ERROR &&
              env->error->code == BITNET__ERROR_CODE__ERROR_CODE_UNKNOWN_JOB,
          "cancel of a finished job: %s", env ? wire_body_name(env->body_case) : "no reply");
    wire_free(env);
}

/* running + queued jobs, or -1 without an answer */
static int jobs_in_daemon(struct client *c)
{
    Bitnet__Envelope *r = status(c);
    int n = -1;
    if (r && r->body_case == BITNET__ENVELOPE__BODY_DAEMON_STATUS_REPLY)
        n = (int)(r->daemon_status_reply->jobs_running + r->daemon_status_reply->jobs_queued);
    wire_free(r);
    return n;
}

/* Clients that leave without a word: their jobs end and free their slots within seconds,
 * streaming or not (a non-streaming job would otherwise run to the end of the context for
 * no one). One connection may hold only --max-jobs-per-client (8) jobs. */
static void check_abandoned(struct client *c, struct ref *r, const char *run_dir)
{
    struct client many, quiet[4];
    client_open(&many, run_dir);
    uint64_t rid[9];
    for (int i = 0; i < 9; i++)
        rid[i] = send_generate_opts(&many, prompts[i % N_PROMPTS], 1000000, false, NULL);
    Bitnet__Envelope *env = client_recv(&many, rid[8], 5000);
    CHECK(env && env->body_case == BITNET__ENVELOPE__BODY_ERROR &&
              env->error->code == BITNET__ERROR_CODE__ERROR_CODE_BUSY &&
              strstr(env->error->message, "has 8 jobs already"),
          "9th job of one client: %s %s", env ? wire_body_name(env->body_case) : "no reply",
          env && env->body_case == BITNET__ENVELOPE__BODY_ERROR ? env->error->message : "");
    wire_free(env);
    for (int i = 0; i < 4; i++) {
        client_open(&quiet[i], run_dir);
        send_generate_opts(&quiet[i], prompts[i], 1000000, true, NULL);
    }
    sleep_ms(300);
    int n = jobs_in_daemon(c);
    CHECK(n == 12, "8 + 4 abandoned jobs: the daemon has %d", n);
    client_close(&many);
    for (int i = 0; i < 4; i++)
        client_close(&quiet[i]);
    double t0 = clock_ms();
    while ((n = jobs_in_daemon(c)) != 0 && clock_ms() - t0 < 5000)
        sleep_ms(50);
    CHECK(n == 0, "abandoned jobs: %d still in the daemon 5 s after their clients left", n);
    printf("abandoned jobs: freed %.0f ms after their clients left\n", clock_ms() - t0);
    check_greedy(c, r, 1, "after abandoned clients");
}

static void check_version(struct client *c)
{
    Bitnet__StatusRequest sr = BITNET__STATUS_REQUEST__INIT;
    Bitnet__Envelope env;
    wire_envelope_init(&env, 77);
    env.version = 2;
    env.body_case = BITNET__ENVELOPE__BODY_STATUS_REQUEST;
    env.status_request = &sr;
    uint8_t *buf;
    size_t len;
    struct errbuf e;
    CHECK(wire_encode(&env, &buf, &len, &e) == 0, "encode v2: %s", e.msg);
    zmq_send(c->sock, buf, len, 0);
    free(buf);
    Bitnet__Envelope *r = client_recv(c, 0, 3000);
    CHECK(r && r->body_case == BITNET__ENVELOPE__BODY_ERROR &&
              r->error->code == BITNET__ERROR_CODE__ERROR_CODE_VERSION &&
              strstr(r->error->message, "protocol 2") && strstr(r->error->message, "speaks 1"),
          "version 2 client: %s '%s'", r ? wire_body_name(r->body_case) : "no reply",
          r && r->body_case == BITNET__ENVELOPE__BODY_ERROR ? r->error->message : "");
    wire_free(r);
    r = status(c);
    CHECK(r && r->body_case == BITNET__ENVELOPE__BODY_DAEMON_STATUS_REPLY &&
              r->daemon_status_reply->wrong_version_rejected == 1,
          "status counts the wrong-version message");
    wire_free(r);
}

/* A stop string taken from the middle of the reference output ends the job there; the
 * request does not stream, so everything comes in one chunk. */
static void check_stop_string(struct client *c, struct ref *r)
{
    int pi = 1;
    char *full = tokenizer_decode(r->tok, r->ids[pi], (size_t)r->n_ids[pi], false);
    char *piece = tokenizer_decode(r->tok, r->ids[pi] + 6, 2, false);
    char *at = full && piece && *piece ? strstr(full, piece) : NULL;
    CHECK(at, "stop string: no usable piece in the reference text");
    if (at) {
        struct gen g = {0};
        g.request_id = send_generate_opts(c, prompts[pi], r->n_predict[pi], false, piece);
        gen_collect(c, &g, 1, 30000);
        size_t want = (size_t)(at - full);
        CHECK(g.done && g.stop_reason == BITNET__STOP_REASON__STOP_REASON_STOP_STRING &&
                  g.n_chunks == 1 && g.n_text == want && memcmp(g.text, full, want) == 0,
              "stop string '%s': stop %d, %d chunks, text '%.*s', want '%.*s'", piece,
              g.stop_reason, g.n_chunks, (int)g.n_text, g.text, (int)want, full);
        CHECK(g.n > 0 && g.n <= 8 && same_ids(g.ids, g.n, r->ids[pi], g.n),
              "stop string: %d ids", g.n);
    }
    free(full);
    free(piece);
}

/* Drain: acked only after the running job ended; new jobs are refused meanwhile. */
static void check_drain(struct client *c, struct ref *r)
{
    struct gen g = {0};
    g.request_id = send_generate(c, prompts[2], r->n_predict[2]);
    Bitnet__Envelope *env = client_recv(c, g.request_id, 10000);
    if (env)
        gen_take(&g, env);
    wire_free(env);
    Bitnet__Drain dr = BITNET__DRAIN__INIT;
    Bitnet__Envelope de;
    wire_envelope_init(&de, 0);
    de.body_case = BITNET__ENVELOPE__BODY_DRAIN;
    de.drain = &dr;
    uint64_t did = client_send(c, &de);
    struct gen refused = {0};
    refused.request_id = send_generate(c, prompts[3], 4);
    bool acked = false, acked_after_done = false;
    double end = clock_ms() + 20000;
    while ((!acked || !g.done || !refused.done) && clock_ms() < end) {
        env = client_recv(c, 0, 1000);
        if (!env)
            continue;
        if (env->request_id == did && env->body_case == BITNET__ENVELOPE__BODY_ACK) {
            acked = true;
            acked_after_done = g.done;
        } else if (env->request_id == g.request_id) {
            gen_take(&g, env);
        } else if (env->request_id == refused.request_id) {
            gen_take(&refused, env);
        }
        wire_free(env);
    }
    CHECK(acked && acked_after_done, "drain: acked %d, after the job ended %d", acked,
          acked_after_done);
    CHECK(g.done && same_ids(g.ids, g.n, r->ids[2], r->n_ids[2]),
          "drain: the running job did not finish unchanged");
    CHECK(refused.done && refused.n == 0 && strstr(refused.error, "draining"),
          "drain: a new job was not refused ('%s')", refused.error);
    Bitnet__Envelope *s = status(c);
    CHECK(s && s->body_case == BITNET__ENVELOPE__BODY_DAEMON_STATUS_REPLY &&
              s->daemon_status_reply->state == BITNET__DAEMON_STATE__DAEMON_STATE_DRAINING,
          "drain: status does not say draining");
    wire_free(s);
}

/* Another process of the same user connects to the workers' socket under w1's routing id
 * and sends Errors for every step id a long generation may use, and a Hello claiming w1's
 * pid: none of it may count (the daemon admits w1's messages only from w1's process), so
 * the job ends as if undisturbed and w1 is never restarted. */
static void check_impostor(struct client *c, struct ref *r, pid_t dpid, const char *run_dir)
{
    int pi = 4;
    pid_t real = worker_pid(dpid, "w1");
    struct gen g = {0};
    g.request_id = send_generate(c, prompts[pi], r->n_predict[pi]);
    void *ctx = zmq_ctx_new(), *imp = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(imp, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(imp, ZMQ_ROUTING_ID, "w1", 2);
    char ep[300];
    snprintf(ep, sizeof ep, "ipc://%s/workers.sock", run_dir);
    zmq_connect(imp, ep);
    Bitnet__Hello h = BITNET__HELLO__INIT;
    h.role = BITNET__ROLE__ROLE_WORKER;
    h.protocol_version = BITNET_PROTOCOL_VERSION;
    h.worker_id = "w1";
    h.pid = (uint32_t)real;
    Bitnet__Envelope env;
    wire_envelope_init(&env, 1);
    env.body_case = BITNET__ENVELOPE__BODY_HELLO;
    env.hello = &h;
    struct errbuf e;
    wire_send(imp, &env, 1000, &e);
    Bitnet__Error err = BITNET__ERROR__INIT;
    err.code = BITNET__ERROR_CODE__ERROR_CODE_INTERNAL;
    err.message = "impostor";
    /* held past the heartbeat timeout (1.5 s) even when the job ends sooner: a route
     * handed over to the impostor would starve w1 of messages and get it declared lost */
    double t_start = clock_ms(), end = t_start + 30000;
    uint64_t next_id = 1;
    while ((!g.done || clock_ms() < t_start + 4000) && clock_ms() < end) {
        for (int k = 0; k < 50 && next_id < 5000; k++) {
            wire_envelope_init(&env, next_id++);
            env.body_case = BITNET__ENVELOPE__BODY_ERROR;
            env.error = &err;
            wire_send(imp, &env, 100, &e);
        }
        Bitnet__Envelope *got = g.done ? NULL : client_recv(c, g.request_id, 20);
        if (got)
            gen_take(&g, got);
        wire_free(got);
        if (g.done)
            sleep_ms(20);
    }
    /* its Hello was answered with a refusal that says why */
    bool told = false;
    for (int k = 0; k < 10000 && !told; k++) {
        Bitnet__Envelope *ans = NULL;
        struct wire_rx rx = {0};
        if (wire_recv(imp, &rx, &ans, 0, &e) != WIRE_OK)
            break;
        told = ans->request_id == 1 && ans->body_case == BITNET__ENVELOPE__BODY_HELLO_REPLY &&
               !ans->hello_reply->accepted && ans->hello_reply->reason &&
               strstr(ans->hello_reply->reason, "routing id");
        wire_free(ans);
    }
    CHECK(told, "impostor: its Hello was not refused with a reason naming the routing id");
    zmq_close(imp);
    zmq_ctx_term(ctx);
    CHECK(next_id > 200, "impostor: only %llu messages sent", (unsigned long long)next_id);
    CHECK(g.done && g.stop_reason == BITNET__STOP_REASON__STOP_REASON_LENGTH &&
              same_ids(g.ids, g.n, r->ids[pi], r->n_ids[pi]),
          "impostor: the job ended with stop %d '%s' after %d tokens (want %d undisturbed)",
          g.stop_reason, g.error, g.n, r->n_ids[pi]);
    CHECK(worker_pid(dpid, "w1") == real, "impostor: w1 was restarted (pid %d, was %d)",
          (int)worker_pid(dpid, "w1"), (int)real);
    check_greedy(c, r, 2, "after an impostor");
}

/* Kills w1 after a few tokens of a long greedy generation; the tokens must not change. */
static void check_sigkill(struct client *c, struct ref *r, pid_t dpid)
{
    int pi = 4;
    struct gen g = {0};
    g.request_id = send_generate(c, prompts[pi], r->n_predict[pi]);
    double end = clock_ms() + 20000;
    while (g.n < 8 && !g.done && clock_ms() < end) {
        Bitnet__Envelope *env = client_recv(c, g.request_id, 2000);
        if (env)
            gen_take(&g, env);
        wire_free(env);
    }
    pid_t victim = worker_pid(dpid, "w1");
    CHECK(victim > 0 && !g.done, "sigkill: worker w1 pid %d, job done already %d", victim, g.done);
    if (victim <= 0)
        return;
    int before = g.n;
    double t_kill = clock_ms();
    kill(victim, SIGKILL);
    double t_resumed = 0;
    end = clock_ms() + 30000;
    while (!g.done && clock_ms() < end) {
        Bitnet__Envelope *env = client_recv(c, g.request_id, 2000);
        if (env) {
            gen_take(&g, env);
            if (!t_resumed && g.n > before)
                t_resumed = clock_ms();
        }
        wire_free(env);
    }
    pid_t again = worker_pid(dpid, "w1");
    CHECK(again > 0 && again != victim, "sigkill: w1 not restarted (pid %d, was %d)", again,
          victim);
    CHECK(g.done && g.stop_reason == BITNET__STOP_REASON__STOP_REASON_LENGTH,
          "sigkill: stop %d, '%s'", g.stop_reason, g.error);
    CHECK(same_ids(g.ids, g.n, r->ids[pi], r->n_ids[pi]),
          "sigkill: %d ids (killed after %d) differ from the undisturbed generation's %d", g.n,
          before, r->n_ids[pi]);
    if (t_resumed)
        printf("sigkill of w1 after %d tokens: next token %.0f ms later\n", before,
               t_resumed - t_kill);
}

static void check_sigstop(struct client *c, struct ref *r, pid_t dpid)
{
    pid_t victim = worker_pid(dpid, "w0");
    CHECK(victim > 0, "sigstop: no w0");
    if (victim <= 0)
        return;
    double t0 = clock_ms();
    kill(victim, SIGSTOP);
    /* before the timeout: the silence shows in w0's heartbeat age, not in w1's */
    sleep_ms(600);
    Bitnet__WorkersRequest wq = BITNET__WORKERS_REQUEST__INIT;
    Bitnet__Envelope *w = request(c, BITNET__ENVELOPE__BODY_WORKERS_REQUEST, &wq, 2000);
    bool wr_ok = w && w->body_case == BITNET__ENVELOPE__BODY_WORKERS_REPLY &&
                 w->workers_reply->n_workers == 2;
    CHECK(wr_ok && w->workers_reply->workers[0]->last_heartbeat_ms_ago >= 500 &&
              w->workers_reply->workers[1]->last_heartbeat_ms_ago < 500,
          "sigstop: WorkersReply heartbeat ages %llu and %llu ms",
          wr_ok ? (unsigned long long)w->workers_reply->workers[0]->last_heartbeat_ms_ago : 0ull,
          wr_ok ? (unsigned long long)w->workers_reply->workers[1]->last_heartbeat_ms_ago : 0ull);
    wire_free(w);
    double seen = 0;
    while (!seen && clock_ms() - t0 < 4000) {
        Bitnet__Envelope *s = status(c);
        if (s && s->body_case == BITNET__ENVELOPE__BODY_DAEMON_STATUS_REPLY &&
            s->daemon_status_reply->n_workers_ready < 2)
            seen = clock_ms() - t0;
        wire_free(s);
        if (!seen)
            sleep_ms(20);
    }
    CHECK(seen > 0 && seen <= 2000, "sigstop: detected after %.0f ms (0: not within 4 s)", seen);
    printf("sigstop of w0 detected after %.0f ms\n", seen);
    kill(victim, SIGCONT); /* harmless: the daemon killed it */
    CHECK(wait_ready(c, 2, 15000), "sigstop: not ready again within 15 s");
    printf("sigstop: ready again %.0f ms after the stop\n", clock_ms() - t0);
    pid_t again = worker_pid(dpid, "w0");
    CHECK(again > 0 && again != victim, "sigstop: w0 is pid %d, was %d", again, victim);
    check_greedy(c, r, 0, "after sigstop");
}

/* ---------------------------------------------------------------------------------------
 * Configuration errors */

static void check_config_errors(void)
{
    struct {
        const char *args[8];
        int status;
        const char *needle;
    } cases[] = {
        {{"--model", MODEL, "--ctx", "abc", NULL}, 2, "--ctx: 'abc' is not a number"},
        {{"--model", MODEL, "--workers", "0", NULL}, 2, "--workers"},
        {{"--model", MODEL, "--bogus", NULL}, 2, "unknown option"},
        {{"--ctx", "64", NULL}, 2, "no model"},
        {{"--model", TDIR "/missing.gguf", "--run-dir", TDIR "/run-bad", NULL}, 1, "missing.gguf"},
        {{"--model", MODEL, "--config", TDIR "/bad.ini", NULL}, 2, "bad.ini:2: [daemon] kv_type"},
        {{"--model", MODEL, "--layer-map", "0-2,4-5", "--run-dir", TDIR "/run-bad", NULL}, 1,
         "layer 3 is in no range"},
        {{"--model", MODEL, "--worker-bin", TDIR "/nope", "--run-dir", TDIR "/run-bad", NULL}, 1,
         "nope"},
    };
    FILE *f = fopen(TDIR "/bad.ini", "w");
    if (f) {
        fputs("[daemon]\nkv_type = f64\n", f);
        fclose(f);
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *log = TDIR "/config-error.log";
        pid_t pid = start_daemon(log, cases[i].args);
        daemon_pid = pid;
        int st = wait_exit(pid, 10000);
        if (st >= 0)
            daemon_pid = 0;
        size_t len = 0;
        char *out = slurp(log, &len);
        CHECK(st == cases[i].status && out && strstr(out, cases[i].needle),
              "config case %zu: status %d (want %d), output '%s' lacks '%s'", i, st,
              cases[i].status, out ? out : "", cases[i].needle);
        free(out);
        kill_daemon_group();
    }
}

/* ---------------------------------------------------------------------------------------
 * Main */

int main(void)
{
    atexit(kill_daemon_group);
    signal(SIGINT, on_fatal_signal);
    signal(SIGTERM, on_fatal_signal);
    signal(SIGSEGV, on_fatal_signal);
    signal(SIGABRT, on_fatal_signal);
    signal(SIGPIPE, SIG_IGN);
    double t_start = clock_ms();
    run_cmd("mkdir -p " TDIR);
    struct stat st;
    if (stat(MODEL, &st) != 0 &&
        run_cmd("build/bitnetctl model synth --out " MODEL " --embd 256 --layers 6 --heads 4 "
                "--kv-heads 2 --ffn 512 --seed 3 >/dev/null") != 0) {
        fprintf(stderr, "cannot synthesize %s\n", MODEL);
        return 1;
    }
    if (access(BITNETD, X_OK) != 0 || access("build/bitnet-worker", X_OK) != 0) {
        fprintf(stderr, "build " BITNETD " and build/bitnet-worker first\n");
        return 1;
    }

    struct ref r;
    struct errbuf e;
    kernels_init();
    if (bitnet_model_load(&r.m, MODEL, &e) < 0 || !(r.tok = tokenizer_from_gguf(&r.m.file, &e))) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    int n_layer = (int)r.m.hp.n_layer;
    for (int i = 0; i < N_PROMPTS; i++) {
        r.n_predict[i] = i == 4 ? 160 : 12;
        r.n_ids[i] = ref_generate(&r, prompts[i], r.n_predict[i], r.ids[i]);
        CHECK(r.n_ids[i] == r.n_predict[i], "reference %d: %d tokens", i, r.n_ids[i]);
    }
    printf("references computed in %.0f ms\n", clock_ms() - t_start);

    check_config_errors();
    FILE *ini = fopen(TDIR "/ok.ini", "w");
    if (ini) {
        fputs("# bitnetd settings\n[daemon]\nworkers = 3\nctx = 512\nkv_type = f32\n"
              "prefill_chunk = 16\nheartbeat_timeout = 1500\n", ini);
        fclose(ini);
    }

    struct {
        const char *what;
        int n_workers;
        const char *args[8];
        bool full;
    } configs[] = {
        /* the file asks for 3 workers, the flag overrides it */
        {"1 worker (INI file + flag)", 1, {"--config", TDIR "/ok.ini", "--workers", "1", NULL},
         false},
        {"2 workers", 2, {"--workers", "2", NULL}, true},
        /* a core each: two steps in flight, the jobs in two micro-batches */
        {"2 workers, split cpus, 2 steps in flight", 2, {"--workers", "2", "--split-cpus", NULL},
         true},
        {"2 workers, synthetic 2 nodes", 2,
         {"--workers", "2", "--topology", "synthetic:pack:2 [numa(memory=8GB)] core:2 pu:1",
          "--prefill-chunk", "4", NULL}, false},
        {"3 workers, synthetic 3 nodes", 3,
         {"--workers", "3", "--topology", "synthetic:pack:3 [numa(memory=8GB)] core:1 pu:1",
          NULL}, false},
        /* workers that say Hello again every millisecond until answered: the daemon
         * must take the repeats of a worker it has accepted, not refuse it */
        {"2 workers repeating Hello", 2, {"--workers", "2", "--worker-bin", HELLO_REPEATER, NULL},
         false},
    };
    FILE *sh = fopen(HELLO_REPEATER, "w");
    char worker_bin[PATH_MAX];
    if (sh && realpath("build/bitnet-worker", worker_bin)) {
        fprintf(sh, "#!/bin/sh\nexec '%s' --hello-retry-ms 1 \"$@\"\n", worker_bin);
        fclose(sh);
        chmod(HELLO_REPEATER, 0755);
    } else {
        CHECK(0, "cannot write %s", HELLO_REPEATER);
        if (sh)
            fclose(sh);
    }
    for (size_t k = 0; k < sizeof configs / sizeof configs[0]; k++) {
        char run_dir[128], log[128];
        snprintf(run_dir, sizeof run_dir, TDIR "/run-%zu", k);
        snprintf(log, sizeof log, TDIR "/bitnetd-%zu.log", k);
        const char *what = configs[k].what;
        struct client c;
        double t0 = clock_ms();
        pid_t pid = launch(run_dir, log, configs[k].args, configs[k].n_workers, &c, what);
        if (pid > 0) {
            check_clean_start(log, what);
            double tg = clock_ms();
            check_greedy(&c, &r, 0, what);
            printf("%s: greedy 12 tokens in %.0f ms (%.1f tok/s incl. prompt)\n", what,
                   clock_ms() - tg, 12e3 / (clock_ms() - tg));
            if (configs[k].full) {
                check_eval(&c, &r);
                check_stop_string(&c, &r);
                check_concurrent(&c, &r);
                check_cancel(&c, &r);
                check_abandoned(&c, &r, run_dir);
                check_impostor(&c, &r, pid, run_dir);
                check_version(&c);
                check_sigkill(&c, &r, pid);
                check_sigstop(&c, &r, pid);
            } else if (configs[k].n_workers == 3) {
                check_concurrent(&c, &r);
            }
            check_status_workers_placement(&c, configs[k].n_workers, n_layer, what);
            if (configs[k].n_workers == 3)
                check_drain(&c, &r);
            check_shutdown(&c, pid, run_dir, log, what);
        }
        client_close(&c);
        kill_daemon_group();
        printf("%s: %.1f s\n", what, (clock_ms() - t0) / 1e3);
    }

    tokenizer_free(r.tok);
    bitnet_model_free(&r.m);
    printf("total %.1f s\n", (clock_ms() - t_start) / 1e3);
    return check_done("test_daemon");
}

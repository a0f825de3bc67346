/* bitnetctl commands that talk to a running bitnetd: status, workers, placement, cancel,
 * drain, resume, shutdown, and generate / eval when no --model is given. */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/args.h"
#include "ctl/commands.h"
#include "ctl/daemon_client.h"
#include "proto/sampling_wire.h"

/* Options every daemon command takes. */
struct daemon_opts {
    const char *run_dir;
    bool json;
    bool timing;    /* workers --timing; refused by the other commands */
};

static int parse_daemon_opts(int argc, char **argv, struct daemon_opts *o, int want_args,
                             const char *usage)
{
    static const struct option opts[] = {
        {"run-dir", required_argument, 0, 'r'}, {"json", no_argument, 0, 'j'},
        {"timing", no_argument, 0, 't'}, {0, 0, 0, 0},
    };
    memset(o, 0, sizeof *o);
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'r')
            o->run_dir = optarg;
        else if (c == 'j')
            o->json = true;
        else if (c == 't' && strstr(usage, "--timing"))
            o->timing = true;
        else
            return -1;
    }
    if (argc - optind != want_args) {
        fprintf(stderr, "usage: bitnetctl %s\n", usage);
        return -1;
    }
    return 0;
}

/* Sends one request whose body is msg and waits for its single reply (10 s), which must
 * be of the kind `expect` (any kind when expect is NOT_SET). NULL, message printed, on
 * any failure. */
static Bitnet__Envelope *request(const struct daemon_opts *o, Bitnet__Envelope__BodyCase body,
                                 void *msg, Bitnet__Envelope__BodyCase expect, const char *what)
{
    Bitnet__Envelope env;
    wire_envelope_init(&env, 0);
    env.body_case = body;
    env.hello = msg; /* every body shares the union's storage */
    struct daemon_client c;
    struct errbuf e = {{0}};
    if (daemon_connect(&c, o->run_dir, &e) < 0) {
        fprintf(stderr, "bitnetctl %s: %s\n", what, e.msg);
        return NULL;
    }
    Bitnet__Envelope *reply = NULL;
    uint64_t id = daemon_send(&c, &env, &e);
    int rc = id ? daemon_recv(&c, id, 10000, &reply, &e) : -1;
    if (rc == 1)
        err_set(&e, "no answer from %s within 10 s", c.endpoint);
    if (rc == 0 && expect != BITNET__ENVELOPE__BODY__NOT_SET && reply->body_case != expect) {
        err_set(&e, "unexpected reply '%s'", wire_body_name(reply->body_case));
        wire_free(reply);
        rc = -1;
    }
    if (rc != 0)
        fprintf(stderr, "bitnetctl %s: %s\n", what, e.msg);
    daemon_disconnect(&c);
    return rc == 0 ? reply : NULL;
}

static const char *daemon_state_name(Bitnet__DaemonState s)
{
    switch (s) {
    case BITNET__DAEMON_STATE__DAEMON_STATE_STARTING: return "starting";
    case BITNET__DAEMON_STATE__DAEMON_STATE_READY: return "ready";
    case BITNET__DAEMON_STATE__DAEMON_STATE_DRAINING: return "draining";
    case BITNET__DAEMON_STATE__DAEMON_STATE_STOPPING: return "stopping";
    default: return "unknown";
    }
}


/* A daemon that has been ready but has a stage down now: it cannot serve until that
 * stage is back (or, for a remote one, fails jobs after --worker-timeout). Exit status
 * STATUS_EXIT_DEGRADED says so to scripts and health checks. */
#define STATUS_EXIT_DEGRADED 3

static bool status_degraded(const Bitnet__DaemonStatusReply *s)
{
    bool was_ready = s->state == BITNET__DAEMON_STATE__DAEMON_STATE_READY ||
                     s->state == BITNET__DAEMON_STATE__DAEMON_STATE_DRAINING;
    return was_ready && s->n_workers_ready < s->n_workers;
}

int cmd_status(int argc, char **argv)
{
    struct daemon_opts o;
    if (parse_daemon_opts(argc, argv, &o, 0, "status [--run-dir DIR] [--json]") < 0)
        return 2;
    Bitnet__StatusRequest req = BITNET__STATUS_REQUEST__INIT;
    Bitnet__Envelope *r = request(&o, BITNET__ENVELOPE__BODY_STATUS_REQUEST, &req,
                                  BITNET__ENVELOPE__BODY_DAEMON_STATUS_REPLY, "status");
    if (!r)
        return 1;
    const Bitnet__DaemonStatusReply *s = r->daemon_status_reply;
    bool degraded = status_degraded(s);
    /* "degraded" replaces "ready" (what a health check greps for); a draining daemon
     * says both */
    char state[64];
    snprintf(state, sizeof state, "%s%s",
             degraded && s->state == BITNET__DAEMON_STATE__DAEMON_STATE_READY
                 ? "degraded" : daemon_state_name(s->state),
             degraded && s->state != BITNET__DAEMON_STATE__DAEMON_STATE_READY ? ", degraded" : "");
    if (o.json) {
        json_object *j = json_object_new_object();
        json_object_object_add(j, "state", json_object_new_string(state));
        json_object_object_add(j, "degraded", json_object_new_boolean(degraded));
        json_object_object_add(j, "software_version", json_object_new_string(s->software_version));
        json_object_object_add(j, "protocol_version", json_object_new_int((int)s->protocol_version));
        json_object_object_add(j, "uptime_s", json_object_new_double(s->uptime_seconds));
        json_object_object_add(j, "model", json_object_new_string(s->model_path));
        json_object_object_add(j, "model_sha256", json_object_new_string(s->model_sha256));
        json_object_object_add(j, "workers", json_object_new_int((int)s->n_workers));
        json_object_object_add(j, "workers_ready", json_object_new_int((int)s->n_workers_ready));
        json_object_object_add(j, "jobs_running", json_object_new_int((int)s->jobs_running));
        json_object_object_add(j, "jobs_queued", json_object_new_int((int)s->jobs_queued));
        json_object_object_add(j, "jobs_done", json_object_new_int64((int64_t)s->jobs_done));
        json_object_object_add(j, "tokens_generated", json_object_new_int64((int64_t)s->tokens_generated));
        json_object_object_add(j, "malformed_rejected", json_object_new_int64((int64_t)s->malformed_rejected));
        json_object_object_add(j, "oversized_rejected", json_object_new_int64((int64_t)s->oversized_rejected));
        json_object_object_add(j, "wrong_version_rejected", json_object_new_int64((int64_t)s->wrong_version_rejected));
        json_object_object_add(j, "keys_refused", json_object_new_int64((int64_t)s->keys_refused));
        puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(j);
    } else {
        printf("state            %s\n", state);
        printf("version          %s (protocol %u)\n", s->software_version, s->protocol_version);
        printf("uptime           %.1f s\n", s->uptime_seconds);
        printf("model            %s\n", s->model_path);
        printf("model sha256     %s\n", s->model_sha256);
        printf("workers          %u ready of %u\n", s->n_workers_ready, s->n_workers);
        printf("jobs             %u running, %u queued, %llu done\n", s->jobs_running,
               s->jobs_queued, (unsigned long long)s->jobs_done);
        printf("tokens generated %llu\n", (unsigned long long)s->tokens_generated);
        printf("rejected         %llu malformed, %llu oversized, %llu wrong version\n",
               (unsigned long long)s->malformed_rejected, (unsigned long long)s->oversized_rejected,
               (unsigned long long)s->wrong_version_rejected);
        printf("keys refused     %llu\n", (unsigned long long)s->keys_refused);
        if (degraded)
            printf("health           degraded: %u of %u workers down (bitnetctl workers "
                   "says which)\n", s->n_workers - s->n_workers_ready, s->n_workers);
    }
    wire_free(r);
    return degraded ? STATUS_EXIT_DEGRADED : 0;
}

static json_object *timing_json(const Bitnet__StageTimingStats *t)
{
    json_object *j = json_object_new_object();
    json_object_object_add(j, "steps", json_object_new_int64((int64_t)t->steps));
    const char *names[] = {"queue_us", "compute_us", "send_us", "hop_in_us", "hop_out_us",
                           "step_us"};
    double v[] = {t->queue_us, t->compute_us, t->send_us, t->hop_in_us, t->hop_out_us,
                  t->step_us};
    for (int i = 0; i < 6; i++)
        json_object_object_add(j, names[i], json_object_new_double(v[i]));
    return j;
}

/* A hop between hosts has no comparable clocks: shown as "-". */
static void print_us(double us)
{
    if (us < 0)
        printf(" %10s", "-");
    else
        printf(" %10.1f", us / 1000.0);
}

/* Per stage: where its steps' time goes, in ms, averaged over the steps since it became
 * ready; the hops are the transfers into each stage (and out of the last). */
static void print_timing(const Bitnet__WorkersReply *w)
{
    printf("%-8s %8s %10s %10s %10s %10s %10s %10s\n", "worker", "steps", "hop in", "queue",
           "compute", "send", "hop out", "step");
    for (size_t i = 0; i < w->n_workers; i++) {
        const Bitnet__WorkerInfo *wi = w->workers[i];
        const Bitnet__StageTimingStats *t = wi->timing;
        const char *id = wi->status ? wi->status->worker_id : "?";
        if (!t || !t->steps) {
            printf("%-8s %8s\n", id, "0");
            continue;
        }
        bool last = i + 1 == w->n_workers;
        printf("%-8s %8llu", id, (unsigned long long)t->steps);
        print_us(t->hop_in_us);
        print_us(t->queue_us);
        print_us(t->compute_us);
        print_us(t->send_us);
        if (last) {
            print_us(t->hop_out_us);
            print_us(t->step_us);
        }
        putchar('\n');
    }
    printf("(ms per step, averaged since each stage became ready; hop in: from the previous "
           "stage's hand-off until this stage took the step, which includes any time it was "
           "still busy with an earlier one)\n");
}

int cmd_workers(int argc, char **argv)
{
    struct daemon_opts o;
    if (parse_daemon_opts(argc, argv, &o, 0, "workers [--run-dir DIR] [--json] [--timing]") < 0)
        return 2;
    Bitnet__WorkersRequest req = BITNET__WORKERS_REQUEST__INIT;
    Bitnet__Envelope *r = request(&o, BITNET__ENVELOPE__BODY_WORKERS_REQUEST, &req,
                                  BITNET__ENVELOPE__BODY_WORKERS_REPLY, "workers");
    if (!r)
        return 1;
    const Bitnet__WorkersReply *w = r->workers_reply;
    if (o.timing && !o.json) {
        print_timing(w);
        wire_free(r);
        return 0;
    }
    json_object *arr = o.json ? json_object_new_array() : NULL;
    if (!o.json)
        printf("%-10s %-10s %-8s %-7s %-6s %-10s %-10s %-8s %s\n", "worker", "state", "layers",
               "node", "threads", "heartbeat", "requests", "refused", "endpoint");
    for (size_t i = 0; i < w->n_workers; i++) {
        const Bitnet__WorkerInfo *wi = w->workers[i];
        const Bitnet__StatusReply *st = wi->status;
        if (o.json) {
            json_object *j = json_object_new_object();
            json_object_object_add(j, "id", json_object_new_string(st ? st->worker_id : ""));
            json_object_object_add(j, "state", json_object_new_string(wire_worker_state_name(wi->state)));
            json_object_object_add(j, "endpoint", json_object_new_string(wi->endpoint));
            json_object_object_add(j, "host", json_object_new_string(wi->host));
            json_object_object_add(j, "heartbeat_ms_ago", json_object_new_int64((int64_t)wi->last_heartbeat_ms_ago));
            if (st) {
                json_object_object_add(j, "layer_begin", json_object_new_int((int)st->layer_begin));
                json_object_object_add(j, "layer_end", json_object_new_int((int)st->layer_end));
                json_object_object_add(j, "numa_node", json_object_new_int(st->numa_node));
                json_object_object_add(j, "threads", json_object_new_int((int)st->threads));
                json_object_object_add(j, "requests_served", json_object_new_int64((int64_t)st->requests_served));
                json_object_object_add(j, "malformed_rejected", json_object_new_int64((int64_t)st->malformed_rejected));
                json_object_object_add(j, "keys_refused", json_object_new_int64((int64_t)st->keys_refused));
            }
            if (wi->timing)
                json_object_object_add(j, "timing", timing_json(wi->timing));
            json_object_array_add(arr, j);
        } else {
            char layers[32] = "-";
            if (st)
                snprintf(layers, sizeof layers, "%u-%u", st->layer_begin,
                         st->layer_end ? st->layer_end - 1 : 0);
            printf("%-10s %-10s %-8s %-7d %-6u %7llums %-10llu %-8llu %s\n",
                   st ? st->worker_id : "?", wire_worker_state_name(wi->state), layers,
                   st ? st->numa_node : -1, st ? st->threads : 0,
                   (unsigned long long)wi->last_heartbeat_ms_ago,
                   st ? (unsigned long long)st->requests_served : 0ull,
                   st ? (unsigned long long)st->keys_refused : 0ull, wi->endpoint);
        }
    }
    if (o.json) {
        puts(json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(arr);
    }
    wire_free(r);
    return 0;
}

int cmd_placement(int argc, char **argv)
{
    /* with a model named, the plan is computed here, no daemon asked */
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--model") == 0 || strncmp(argv[i], "--model=", 8) == 0)
            return cmd_placement_offline(argc, argv);
    struct daemon_opts o;
    if (parse_daemon_opts(argc, argv, &o, 0, "placement [--run-dir DIR] [--json]") < 0)
        return 2;
    Bitnet__PlacementRequest req = BITNET__PLACEMENT_REQUEST__INIT;
    Bitnet__Envelope *r = request(&o, BITNET__ENVELOPE__BODY_PLACEMENT_REQUEST, &req,
                                  BITNET__ENVELOPE__BODY_PLACEMENT_REPLY, "placement");
    if (!r)
        return 1;
    int rc = 0;
    if (o.json) {
        puts(r->placement_reply->table_json);
    } else {
        json_object *j = json_tokener_parse(r->placement_reply->table_json);
        if (!j) {
            fprintf(stderr, "bitnetctl placement: the daemon sent unreadable JSON\n");
            rc = 1;
        } else {
            /* the table's columns belong to the planner: print whatever it sent */
            puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
            json_object_put(j);
        }
    }
    wire_free(r);
    return rc;
}

static int simple_request(int argc, char **argv, const char *what, const char *usage,
                          Bitnet__Envelope__BodyCase body, void *msg)
{
    struct daemon_opts o;
    if (parse_daemon_opts(argc, argv, &o, body == BITNET__ENVELOPE__BODY_CANCEL ? 1 : 0, usage) < 0)
        return 2;
    if (body == BITNET__ENVELOPE__BODY_CANCEL) {
        uint64_t id;
        if (arg_u64("ID", argv[optind], &id) < 0)
            return 2;
        ((Bitnet__Cancel *)msg)->job_id = id;
    }
    Bitnet__Envelope *r = request(&o, body, msg, BITNET__ENVELOPE__BODY__NOT_SET, what);
    if (!r)
        return 1;
    if (r->body_case == BITNET__ENVELOPE__BODY_ACK && r->ack->detail && *r->ack->detail)
        printf("%s\n", r->ack->detail);
    wire_free(r);
    return 0;
}

int cmd_cancel(int argc, char **argv)
{
    Bitnet__Cancel m = BITNET__CANCEL__INIT;
    return simple_request(argc, argv, "cancel", "cancel ID [--run-dir DIR]",
                          BITNET__ENVELOPE__BODY_CANCEL, &m);
}

int cmd_drain(int argc, char **argv)
{
    Bitnet__Drain m = BITNET__DRAIN__INIT;
    return simple_request(argc, argv, "drain", "drain [--run-dir DIR]", BITNET__ENVELOPE__BODY_DRAIN,
                          &m);
}

int cmd_resume(int argc, char **argv)
{
    Bitnet__Resume m = BITNET__RESUME__INIT;
    return simple_request(argc, argv, "resume", "resume [--run-dir DIR]",
                          BITNET__ENVELOPE__BODY_RESUME, &m);
}

int cmd_shutdown(int argc, char **argv)
{
    Bitnet__Shutdown m = BITNET__SHUTDOWN__INIT;
    return simple_request(argc, argv, "shutdown", "shutdown [--run-dir DIR]",
                          BITNET__ENVELOPE__BODY_SHUTDOWN, &m);
}

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

int daemon_generate(const struct daemon_generate_args *a)
{
    struct daemon_client c;
    struct errbuf e = {{0}};
    if (daemon_connect(&c, a->run_dir, &e) < 0) {
        fprintf(stderr, "bitnetctl generate: %s\n", e.msg);
        return 1;
    }
    Bitnet__GenerateRequest req = BITNET__GENERATE_REQUEST__INIT;
    Bitnet__SamplingParams sp = BITNET__SAMPLING_PARAMS__INIT;
    if (a->chat) {
        req.input_case = BITNET__GENERATE_REQUEST__INPUT_CHAT;
        req.chat = (char *)a->chat;
        req.system = (char *)(a->system ? a->system : "");
    } else {
        req.input_case = BITNET__GENERATE_REQUEST__INPUT_PROMPT;
        req.prompt = (char *)a->prompt;
        req.add_bos = true;
    }
    req.n_predict = a->n_predict;
    sampling_to_wire(&a->sp, &sp);
    req.sampling = &sp;
    req.stream = true;
    req.return_ids = a->ids_out;
    Bitnet__Envelope env;
    wire_envelope_init(&env, 0);
    env.body_case = BITNET__ENVELOPE__BODY_GENERATE_REQUEST;
    env.generate_request = &req;
    uint64_t id = daemon_send(&c, &env, &e);
    if (!id) {
        fprintf(stderr, "bitnetctl generate: %s\n", e.msg);
        daemon_disconnect(&c);
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_sigint}, old;
    sigaction(SIGINT, &sa, &old);
    int rc = 0, idle_ms = 0;
    bool cancel_sent = false, first_id = true;
    uint64_t job = 0;
    for (;;) {
        if (interrupted && job && !cancel_sent) {
            /* Ctrl-C cancels the job in the daemon and still waits for its last chunk */
            Bitnet__Cancel cm = BITNET__CANCEL__INIT;
            cm.job_id = job;
            Bitnet__Envelope ce;
            wire_envelope_init(&ce, 0);
            ce.body_case = BITNET__ENVELOPE__BODY_CANCEL;
            ce.cancel = &cm;
            daemon_send(&c, &ce, &e);
            cancel_sent = true;
        }
        Bitnet__Envelope *r = NULL;
        int got = daemon_recv(&c, id, 100, &r, &e);
        if (got == 1) {
            idle_ms += 100;
            if (idle_ms >= a->timeout_ms) {
                fprintf(stderr, "\nbitnetctl generate: no output from the daemon for %d s\n",
                        a->timeout_ms / 1000);
                rc = 1;
                break;
            }
            continue;
        }
        idle_ms = 0;
        if (got < 0) {
            fprintf(stderr, "\nbitnetctl generate: %s\n", e.msg);
            rc = 1;
            break;
        }
        if (r->body_case != BITNET__ENVELOPE__BODY_GENERATE_CHUNK) {
            wire_free(r);
            continue;
        }
        const Bitnet__GenerateChunk *ch = r->generate_chunk;
        job = ch->job_id;
        if (a->ids_out) {
            for (size_t i = 0; i < ch->n_token_ids; i++, first_id = false)
                printf(first_id ? "%d" : " %d", ch->token_ids[i]);
        } else if (ch->text.len) {
            fwrite(ch->text.data, 1, ch->text.len, stdout);
        }
        fflush(stdout);
        if (ch->done) {
            putchar('\n');
            const Bitnet__GenerateStats *st = ch->stats;
            /* a failed job's figures would read as a result; its error says it all */
            if (st && ch->stop_reason != BITNET__STOP_REASON__STOP_REASON_ERROR)
                fprintf(stderr,
                        "job %llu: prompt %u tokens in %.2fs (%.2f tok/s) | generated %u tokens "
                        "in %.2fs (%.2f tok/s) | first token after %.3fs\n",
                        (unsigned long long)job, st->n_prompt_tokens, st->prompt_ms / 1e3,
                        st->prompt_ms > 0 ? st->n_prompt_tokens * 1e3 / st->prompt_ms : 0.0,
                        st->n_generated, st->decode_ms / 1e3,
                        st->decode_ms > 0 ? st->n_generated * 1e3 / st->decode_ms : 0.0,
                        st->ttft_ms / 1e3);
            if (ch->stop_reason == BITNET__STOP_REASON__STOP_REASON_ERROR) {
                fprintf(stderr, "bitnetctl generate: %s\n", ch->error ? ch->error : "failed");
                rc = 1;
            } else if (ch->stop_reason == BITNET__STOP_REASON__STOP_REASON_CANCELLED) {
                fprintf(stderr, "job %llu cancelled\n", (unsigned long long)job);
                rc = interrupted ? 130 : 1;
            }
            wire_free(r);
            break;
        }
        wire_free(r);
    }
    sigaction(SIGINT, &old, NULL);
    daemon_disconnect(&c);
    return rc;
}

int daemon_eval(const char *run_dir, const int32_t *ids, size_t n, const char *out_name,
                struct output_file *out)
{
    struct daemon_client c;
    struct errbuf e = {{0}};
    if (daemon_connect(&c, run_dir, &e) < 0) {
        fprintf(stderr, "bitnetctl eval: %s\n", e.msg);
        output_abort(out);
        return 1;
    }
    Bitnet__EvalRequest req = BITNET__EVAL_REQUEST__INIT;
    req.n_token_ids = n;
    req.token_ids = (int32_t *)ids;
    Bitnet__Envelope env, *r = NULL;
    wire_envelope_init(&env, 0);
    env.body_case = BITNET__ENVELOPE__BODY_EVAL_REQUEST;
    env.eval_request = &req;
    uint64_t id = daemon_send(&c, &env, &e);
    int rc = id ? daemon_recv(&c, id, 120000, &r, &e) : -1;
    if (rc == 1)
        err_set(&e, "no answer within 120 s");
    if (rc == 0 && r->body_case != BITNET__ENVELOPE__BODY_EVAL_REPLY) {
        err_set(&e, "unexpected reply '%s'", wire_body_name(r->body_case));
        rc = -1;
    }
    if (rc == 0 && r->eval_reply->n_positions != n) {
        err_set(&e, "%u positions of logits for %zu ids", r->eval_reply->n_positions, n);
        rc = -1;
    }
    if (rc == 0 && fwrite(r->eval_reply->logits.data, 1, r->eval_reply->logits.len, out->fp) !=
                       r->eval_reply->logits.len) {
        err_set(&e, "%s: write failed: %s", out->path, strerror(errno));
        rc = -1;
    }
    if (rc == 0 && output_commit(out, &e) < 0)
        rc = -1;
    output_abort(out);
    if (rc != 0)
        fprintf(stderr, "bitnetctl eval: %s\n", e.msg);
    else
        fprintf(stderr, "eval: %zu positions x %u logits -> %s (through the daemon)\n", n,
                r->eval_reply->n_vocab, out_name);
    if (r)
        wire_free(r);
    daemon_disconnect(&c);
    return rc == 0 ? 0 : 1;
}

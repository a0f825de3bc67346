#include "daemon/http_generate.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "daemon/http_link.h"
#include "model/clock.h"
#include "proto/sampling_wire.h"

/* How long an idle keep-alive connection may hold its thread, restored after a generation
 * (which has no such limit: a queued job may wait long for its first token). */
#define HTTP_IDLE_TIMEOUT_S 60
/* Bytes of SSE text handed to libmicrohttpd per read. */
#define HTTP_STREAM_BLOCK 4096

enum wait_rc { WAIT_MSG, WAIT_GONE, WAIT_STOPPING, WAIT_SILENT, WAIT_FAILED };

struct http_generation {
    struct http_server *srv;
    struct MHD_Connection *conn;
    int client_fd;
    struct http_link link;
    uint64_t rid;               /* of the GenerateRequest */
    uint64_t job_id;            /* the daemon's, from the first chunk; 0 before */
    bool done;                  /* the daemon sent the last chunk (or an Error) */
    bool client_gone;
    struct openai_request req;
    char id[40];
    struct openai_response_head head;

    char carry[4];              /* the start of a UTF-8 character cut between chunks */
    size_t n_carry;
    char *text;                 /* non-streaming: the whole text so far */
    size_t n_text;

    char *pending;              /* streaming: SSE bytes not handed out yet */
    size_t n_pending, off_pending;
    bool first_event_sent, stream_over;

    double t_arrival_ms, t_first_ms, t_done_ms;
    unsigned n_prompt, n_generated;
    Bitnet__StopReason stop_reason;
    char error[256];            /* the daemon's error for a job that failed */
};

enum MHD_Result http_respond_json(struct MHD_Connection *conn, int status, char *json_taken)
{
    if (!json_taken)
        return MHD_NO;
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(json_taken), json_taken,
                                                             MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(json_taken);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result rc = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return rc;
}

enum MHD_Result http_respond_error(struct MHD_Connection *conn, const struct openai_error *err)
{
    return http_respond_json(conn, err->status, openai_error_json(err));
}

/* A client that closed its end (or reset it) is gone; a half-closed one too, which no
 * HTTP client does while it waits for its answer. */
static bool client_closed(int fd)
{
    if (fd < 0)
        return false;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/* The next message for our request, watching the client and the server meanwhile. */
static enum wait_rc wait_message(struct http_generation *g, Bitnet__Envelope **out,
                                 struct errbuf *e)
{
    double last_news = clock_ms();
    for (;;) {
        if (atomic_load(&g->srv->stopping))
            return WAIT_STOPPING;
        if (client_closed(g->client_fd))
            return WAIT_GONE;
        bool alive = false;
        int rc = http_link_recv(&g->link, g->rid, 100, out, &alive, e);
        if (rc == 0)
            return WAIT_MSG;
        if (rc < 0)
            return WAIT_FAILED;
        if (alive)
            last_news = clock_ms();
        else if (clock_ms() - last_news > HTTP_DAEMON_SILENCE_MS)
            return WAIT_SILENT;
    }
}

static const char *finish_reason(Bitnet__StopReason r)
{
    switch (r) {
    case BITNET__STOP_REASON__STOP_REASON_LENGTH:
    case BITNET__STOP_REASON__STOP_REASON_CONTEXT_FULL:
        return "length";
    default:
        return "stop";
    }
}

/* The daemon's refusal, as the HTTP client should see it. */
static void error_from_daemon(const Bitnet__Error *de, struct openai_error *err)
{
    const char *msg = de->message ? de->message : "bitnetd refused the request";
    switch (de->code) {
    case BITNET__ERROR_CODE__ERROR_CODE_BAD_REQUEST:
        /* jobs.c's words for a prompt that leaves no room to generate */
        openai_fail(err, 400, "invalid_request_error",
                    strstr(msg, "does not fit the context") ? "context_length_exceeded"
                                                            : "invalid_value",
                    strstr(msg, "prompt") ? "prompt" : NULL, "%s", msg);
        break;
    case BITNET__ERROR_CODE__ERROR_CODE_BUSY:
        openai_fail(err, 429, "rate_limit_error", "rate_limit_exceeded", NULL, "%s", msg);
        break;
    case BITNET__ERROR_CODE__ERROR_CODE_DRAINING:
    case BITNET__ERROR_CODE__ERROR_CODE_NOT_LOADED:
    case BITNET__ERROR_CODE__ERROR_CODE_TIMEOUT:
        openai_fail(err, 503, "server_error", "service_unavailable", NULL, "%s", msg);
        break;
    default:
        openai_fail(err, 500, "server_error", NULL, NULL, "%s", msg);
        break;
    }
}

/* Takes a chunk's text (made valid UTF-8, a cut character kept for the next one) and, on
 * the last chunk, the job's figures. The clean text is malloc'd into *text. */
static int take_chunk(struct http_generation *g, const Bitnet__GenerateChunk *ch, char **text,
                      size_t *n_text)
{
    g->job_id = ch->job_id;
    if (g->t_first_ms == 0)
        g->t_first_ms = clock_ms();
    size_t n_in = g->n_carry + ch->text.len;
    char *joined = malloc(n_in + 1);
    if (!joined)
        return -1;
    memcpy(joined, g->carry, g->n_carry);
    if (ch->text.len)
        memcpy(joined + g->n_carry, ch->text.data, ch->text.len);
    size_t tail;
    *text = openai_utf8_clean(joined, n_in, ch->done, n_text, &tail);
    if (*text) {
        memcpy(g->carry, joined + n_in - tail, tail);
        g->n_carry = tail;
    }
    free(joined);
    if (!*text)
        return -1;
    if (ch->done) {
        g->done = true;
        g->t_done_ms = clock_ms();
        g->stop_reason = ch->stop_reason;
        if (ch->stats) {
            g->n_prompt = ch->stats->n_prompt_tokens;
            g->n_generated = ch->stats->n_generated;
        }
        if (ch->error)
            snprintf(g->error, sizeof g->error, "%s", ch->error);
    }
    return 0;
}

static void count_generation(struct http_generation *g)
{
    double ttft = g->t_first_ms > 0 ? (g->t_first_ms - g->t_arrival_ms) / 1e3 : -1;
    double tpot = g->n_generated >= 2 && g->t_done_ms > g->t_first_ms
                      ? (g->t_done_ms - g->t_first_ms) / 1e3 / (g->n_generated - 1)
                      : -1;
    http_metrics_count_generation(&g->srv->metrics, g->n_prompt, g->n_generated,
                                  g->n_generated ? ttft : -1, tpot);
}

/* A failed or cancelled job's end, for the client. */
static void job_error(const struct http_generation *g, struct openai_error *err)
{
    if (g->stop_reason == BITNET__STOP_REASON__STOP_REASON_CANCELLED)
        openai_fail(err, 503, "server_error", "cancelled", NULL,
                    "the generation was cancelled in bitnetd (shutting down, or bitnetctl "
                    "cancel)");
    else
        openai_fail(err, 500, "server_error", NULL, NULL, "generation failed: %s",
                    g->error[0] ? g->error : "unknown error");
}

static bool job_failed(const struct http_generation *g)
{
    return g->stop_reason == BITNET__STOP_REASON__STOP_REASON_ERROR ||
           g->stop_reason == BITNET__STOP_REASON__STOP_REASON_CANCELLED;
}

static int wait_failure(struct http_generation *g, enum wait_rc rc, const char *why,
                        struct openai_error *err)
{
    switch (rc) {
    case WAIT_GONE:
        g->client_gone = true;
        return openai_fail(err, 499, "invalid_request_error", "client_closed", NULL,
                           "the client closed the connection");
    case WAIT_STOPPING:
        return openai_fail(err, 503, "server_error", "service_unavailable", NULL,
                           "bitnetd is shutting down");
    case WAIT_SILENT:
        return openai_fail(err, 504, "server_error", "timeout", NULL,
                           "bitnetd sent nothing for %d s", HTTP_DAEMON_SILENCE_MS / 1000);
    default:
        return openai_fail(err, 500, "server_error", NULL, NULL, "%s", why);
    }
}

/* ---- streaming ---- */

static int append_pending(struct http_generation *g, char *event, size_t n)
{
    if (!event)
        return -1;
    char *p = realloc(g->pending, g->n_pending + n);
    if (!p) {
        free(event);
        return -1;
    }
    memcpy(p + g->n_pending, event, n);
    g->pending = p;
    g->n_pending += n;
    free(event);
    return 0;
}

static int append_text_event(struct http_generation *g, const char *text, size_t n)
{
    size_t n_ev = 0;
    char *ev = openai_chunk_event(&g->head, text, n, !g->first_event_sent, NULL, NULL, &n_ev);
    g->first_event_sent = true;
    return append_pending(g, ev, n_ev);
}

/* The job's end: the finish reason with usage and [DONE], or the error. */
static int append_end(struct http_generation *g)
{
    if (job_failed(g)) {
        struct openai_error err;
        job_error(g, &err);
        char *json = openai_error_json(&err);
        char *ev = NULL;
        int n = json ? asprintf(&ev, "data: %s\n\n", json) : -1;
        free(json);
        return n < 0 ? -1 : append_pending(g, ev, (size_t)n);
    }
    struct openai_usage u = {g->n_prompt, g->n_generated};
    size_t n_ev = 0;
    char *ev = openai_chunk_event(&g->head, "", 0, !g->first_event_sent,
                                  finish_reason(g->stop_reason), &u, &n_ev);
    g->first_event_sent = true;
    if (append_pending(g, ev, n_ev) < 0)
        return -1;
    static const char done[] = "data: [DONE]\n\n";
    char *d = strdup(done);
    return d ? append_pending(g, d, sizeof done - 1) : -1;
}

/* Adds the SSE bytes of one message from the daemon. */
static int stream_message(struct http_generation *g, Bitnet__Envelope *env)
{
    if (env->body_case == BITNET__ENVELOPE__BODY_ERROR) {
        g->done = true;
        g->stop_reason = BITNET__STOP_REASON__STOP_REASON_ERROR;
        snprintf(g->error, sizeof g->error, "%s",
                 env->error->message ? env->error->message : "error");
        return append_end(g);
    }
    if (env->body_case != BITNET__ENVELOPE__BODY_GENERATE_CHUNK)
        return 0;
    char *text;
    size_t n;
    if (take_chunk(g, env->generate_chunk, &text, &n) < 0)
        return -1;
    /* a token whose bytes are held back (half a character, the start of a stop string)
     * adds nothing: its text comes with a later one */
    int rc = n ? append_text_event(g, text, n) : 0;
    free(text);
    if (rc == 0 && g->done) {
        count_generation(g);
        rc = append_end(g);
    }
    return rc;
}

static ssize_t read_events(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct http_generation *g = cls;
    while (g->off_pending == g->n_pending) {
        g->n_pending = g->off_pending = 0;
        if (g->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        Bitnet__Envelope *env = NULL;
        struct errbuf e = {{0}};
        enum wait_rc rc = wait_message(g, &env, &e);
        if (rc != WAIT_MSG) {
            struct openai_error err;
            wait_failure(g, rc, e.msg, &err);
            if (rc != WAIT_GONE)
                fprintf(stderr, "bitnetd: http: stream of job %llu cut: %s\n",
                        (unsigned long long)g->job_id, err.message);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        int ok = stream_message(g, env);
        wire_free(env);
        if (ok < 0)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = g->n_pending - g->off_pending;
    if (n > max)
        n = max;
    memcpy(buf, g->pending + g->off_pending, n);
    g->off_pending += n;
    return (ssize_t)n;
}

static enum MHD_Result respond_stream(struct http_generation *g, Bitnet__Envelope *first)
{
    if (stream_message(g, first) < 0)
        return MHD_NO;
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, HTTP_STREAM_BLOCK,
                                                               read_events, g, NULL);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    enum MHD_Result rc = MHD_queue_response(g->conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return rc;
}

/* ---- whole responses ---- */

static int append_text(struct http_generation *g, const char *s, size_t n)
{
    char *t = realloc(g->text, g->n_text + n + 1);
    if (!t)
        return -1;
    memcpy(t + g->n_text, s, n);
    g->text = t;
    g->n_text += n;
    t[g->n_text] = 0;
    return 0;
}

/* Reads chunks until the last one. 0, or -1 with err. */
static int collect(struct http_generation *g, Bitnet__Envelope *env, struct openai_error *err)
{
    for (;;) {
        if (env->body_case == BITNET__ENVELOPE__BODY_ERROR) {
            error_from_daemon(env->error, err);
            wire_free(env);
            g->done = true;
            return -1;
        }
        if (env->body_case == BITNET__ENVELOPE__BODY_GENERATE_CHUNK) {
            char *text;
            size_t n;
            int rc = take_chunk(g, env->generate_chunk, &text, &n);
            if (rc == 0) {
                rc = append_text(g, text, n);
                free(text);
            }
            if (rc < 0) {
                wire_free(env);
                return openai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
            }
        }
        wire_free(env);
        if (g->done)
            return 0;
        struct errbuf e = {{0}};
        enum wait_rc rc = wait_message(g, &env, &e);
        if (rc != WAIT_MSG)
            return wait_failure(g, rc, e.msg, err);
    }
}

static enum MHD_Result respond_whole(struct http_generation *g, Bitnet__Envelope *first,
                                     int *status)
{
    struct openai_error err;
    if (collect(g, first, &err) < 0) {
        *status = err.status;
        return g->client_gone ? MHD_NO : http_respond_error(g->conn, &err);
    }
    count_generation(g);
    if (job_failed(g)) {
        job_error(g, &err);
        *status = err.status;
        return http_respond_error(g->conn, &err);
    }
    struct openai_usage u = {g->n_prompt, g->n_generated};
    *status = 200;
    return http_respond_json(g->conn, 200,
                             openai_response_json(&g->head, g->text ? g->text : "", g->n_text,
                                                  finish_reason(g->stop_reason), &u));
}

/* ---- the request ---- */

static uint64_t send_job(struct http_generation *g, struct errbuf *e)
{
    Bitnet__GenerateRequest gr = BITNET__GENERATE_REQUEST__INIT;
    Bitnet__SamplingParams sp = BITNET__SAMPLING_PARAMS__INIT;
    const struct openai_request *r = &g->req;
    gr.input_case = BITNET__GENERATE_REQUEST__INPUT_PROMPT;
    gr.prompt = r->prompt;
    gr.add_bos = r->add_bos;
    gr.n_predict = r->max_tokens;
    sampling_to_wire(&r->sp, &sp);
    gr.sampling = &sp;
    /* always a stream from the daemon: the job's id comes with its first token, so that
     * a client leaving a non-streaming request can be cancelled too */
    gr.stream = true;
    gr.n_stop = r->n_stop;
    gr.stop = (char **)r->stop;
    Bitnet__Envelope env;
    wire_envelope_init(&env, 0);
    env.body_case = BITNET__ENVELOPE__BODY_GENERATE_REQUEST;
    env.generate_request = &gr;
    return http_link_send(&g->link, &env, e);
}

enum MHD_Result http_generate(struct http_server *s, struct MHD_Connection *conn,
                              struct openai_request *req, double t_arrival_ms, int *status,
                              struct http_generation **out)
{
    *out = NULL;
    struct openai_error err;
    if (http_metrics_in_flight(&s->metrics, 1) > s->max_in_flight) {
        http_metrics_in_flight(&s->metrics, -1);
        openai_request_free(req);
        openai_fail(&err, 429, "rate_limit_error", "rate_limit_exceeded", NULL,
                    "%d generation requests are being served already (--max-sequences + "
                    "--http-queue); try again later", s->max_in_flight);
        *status = 429;
        return http_respond_error(conn, &err);
    }
    struct http_generation *g = calloc(1, sizeof *g);
    if (!g) {
        http_metrics_in_flight(&s->metrics, -1);
        openai_request_free(req);
        openai_fail(&err, 500, "server_error", NULL, NULL, "out of memory");
        *status = 500;
        return http_respond_error(conn, &err);
    }
    *out = g;
    g->srv = s;
    g->conn = conn;
    g->req = *req;
    memset(req, 0, sizeof *req);
    g->t_arrival_ms = t_arrival_ms;
    uint64_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
        rnd = (uint64_t)(clock_ms() * 1e3);
    snprintf(g->id, sizeof g->id, "%s-%016llx", g->req.chat ? "chatcmpl" : "cmpl",
             (unsigned long long)rnd);
    g->head = (struct openai_response_head){g->req.chat, g->id, (long long)time(NULL), s->model_id};
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    g->client_fd = ci ? ci->connect_fd : -1;
    /* no idle limit while the job runs: a queued one may wait long for its first token */
    MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, 0);

    struct errbuf e = {{0}};
    Bitnet__Envelope *first = NULL;
    enum wait_rc rc = WAIT_FAILED;
    if (http_link_open(&g->link, s->zmq_ctx, s->ctl_endpoint, &e) == 0 &&
        (g->rid = send_job(g, &e)) != 0)
        rc = wait_message(g, &first, &e);
    if (rc != WAIT_MSG) {
        wait_failure(g, rc, e.msg, &err);
        *status = err.status;
        if (rc == WAIT_FAILED)
            fprintf(stderr, "bitnetd: http: %s\n", e.msg);
        return g->client_gone ? MHD_NO : http_respond_error(conn, &err);
    }
    if (first->body_case == BITNET__ENVELOPE__BODY_ERROR) {
        error_from_daemon(first->error, &err);
        wire_free(first);
        g->done = true;
        *status = err.status;
        return http_respond_error(conn, &err);
    }
    if (!g->req.stream)
        return respond_whole(g, first, status);
    *status = 200;
    enum MHD_Result mr = respond_stream(g, first);
    wire_free(first);
    return mr;
}

void http_generation_end(struct http_generation *g)
{
    if (!g)
        return;
    if (g->link.sock && !g->done) {
        /* the client left (or the server stops) mid-job: free its sequence now rather
         * than at the daemon's next probe of a closed link. Before its first chunk the
         * job is named by our request's id. */
        if (g->rid) {
            Bitnet__Cancel c = BITNET__CANCEL__INIT;
            c.job_id = g->job_id;
            c.request_id = g->job_id ? 0 : g->rid;
            Bitnet__Envelope env;
            wire_envelope_init(&env, 0);
            env.body_case = BITNET__ENVELOPE__BODY_CANCEL;
            env.cancel = &c;
            struct errbuf e = {{0}};
            if (!http_link_send(&g->link, &env, &e))
                fprintf(stderr, "bitnetd: http: cancelling job %llu (request %llu): %s\n",
                        (unsigned long long)g->job_id, (unsigned long long)g->rid, e.msg);
        }
        if (!atomic_load(&g->srv->stopping))
            http_metrics_count_disconnect(&g->srv->metrics);
    }
    http_link_close(&g->link);
    if (g->conn && !atomic_load(&g->srv->stopping))
        MHD_set_connection_option(g->conn, MHD_CONNECTION_OPTION_TIMEOUT, HTTP_IDLE_TIMEOUT_S);
    http_metrics_in_flight(&g->srv->metrics, -1);
    openai_request_free(&g->req);
    free(g->text);
    free(g->pending);
    free(g);
}

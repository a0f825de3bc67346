#include "daemon/http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <zmq.h>

#include "daemon/daemon.h"
#include "daemon/http_generate.h"
#include "daemon/http_link.h"
#include "daemon/http_openai.h"
#include "model/clock.h"

/* Status and workers answers: the loop answers at once, workers within their timeout. */
#define HTTP_ASK_TIMEOUT_MS 3000

/* One HTTP request, from its headers to its completion. */
struct http_request {
    enum http_route route;
    bool post;
    char *body;
    size_t n_body;
    bool too_big;
    double t_arrival_ms;
    int status;                 /* sent, for the metrics; 0 before */
    struct http_generation *gen;
};

static enum http_route route_of(const char *url)
{
    static const struct { const char *path; enum http_route r; } routes[] = {
        {"/v1/completions", ROUTE_COMPLETIONS}, {"/v1/chat/completions", ROUTE_CHAT},
        {"/v1/models", ROUTE_MODELS},           {"/health", ROUTE_HEALTH},
        {"/metrics", ROUTE_METRICS},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (strcmp(url, routes[i].path) == 0)
            return routes[i].r;
    return ROUTE_OTHER;
}

static enum MHD_Result fail(struct http_request *q, struct MHD_Connection *conn, int status,
                            const char *type, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static enum MHD_Result fail(struct http_request *q, struct MHD_Connection *conn, int status,
                            const char *type, const char *code, const char *fmt, ...)
{
    struct openai_error err = {status, type, code, NULL, ""};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.message, sizeof err.message, fmt, ap);
    va_end(ap);
    q->status = status;
    return http_respond_error(conn, &err);
}

static enum MHD_Result respond_text(struct http_request *q, struct MHD_Connection *conn,
                                    int status, const char *type, char *text_taken)
{
    if (!text_taken)
        return MHD_NO;
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text_taken), text_taken,
                                                             MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text_taken);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    q->status = status;
    enum MHD_Result rc = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return rc;
}

/* ---- what the daemon says about itself ---- */

/* Asks the daemon for a StatusRequest's or WorkersRequest's answer (body: which); NULL
 * with e when it does not answer. */
static Bitnet__Envelope *ask(struct http_server *s, Bitnet__Envelope__BodyCase which,
                             struct errbuf *e)
{
    struct http_link link;
    if (http_link_open(&link, s->zmq_ctx, s->ctl_endpoint, e) < 0)
        return NULL;
    Bitnet__StatusRequest sr = BITNET__STATUS_REQUEST__INIT;
    Bitnet__WorkersRequest wr = BITNET__WORKERS_REQUEST__INIT;
    Bitnet__Envelope env, *out = NULL;
    wire_envelope_init(&env, 0);
    env.body_case = which;
    if (which == BITNET__ENVELOPE__BODY_STATUS_REQUEST)
        env.status_request = &sr;
    else
        env.workers_request = &wr;
    if (http_link_ask(&link, &env, HTTP_ASK_TIMEOUT_MS, &out, e) == 0 &&
        out->body_case == BITNET__ENVELOPE__BODY_ERROR) {
        err_set(e, "%s", out->error->message ? out->error->message : "error");
        wire_free(out);
        out = NULL;
    }
    http_link_close(&link);
    return out;
}

static enum MHD_Result serve_health(struct http_server *s, struct http_request *q,
                                    struct MHD_Connection *conn)
{
    struct errbuf e = {{0}};
    Bitnet__Envelope *env = ask(s, BITNET__ENVELOPE__BODY_STATUS_REQUEST, &e);
    char reason[600] = "";
    if (!env)
        snprintf(reason, sizeof reason, "bitnetd does not answer: %s", e.msg);
    else if (env->body_case != BITNET__ENVELOPE__BODY_DAEMON_STATUS_REPLY)
        snprintf(reason, sizeof reason, "bitnetd answered %s", wire_body_name(env->body_case));
    else {
        const Bitnet__DaemonStatusReply *r = env->daemon_status_reply;
        switch (r->state) {
        case BITNET__DAEMON_STATE__DAEMON_STATE_READY:
            if (r->n_workers_ready < r->n_workers)
                snprintf(reason, sizeof reason, "%u of %u workers ready", r->n_workers_ready,
                         r->n_workers);
            break;
        case BITNET__DAEMON_STATE__DAEMON_STATE_STARTING:
            snprintf(reason, sizeof reason, "starting: %u of %u workers ready",
                     r->n_workers_ready, r->n_workers);
            break;
        case BITNET__DAEMON_STATE__DAEMON_STATE_DRAINING:
            snprintf(reason, sizeof reason, "draining: no new jobs");
            break;
        default:
            snprintf(reason, sizeof reason, "stopping");
            break;
        }
    }
    wire_free(env);
    struct json_object *o = json_object_new_object();
    if (o) {
        json_object_object_add(o, "status", json_object_new_string(*reason ? "unavailable" : "ok"));
        if (*reason)
            json_object_object_add(o, "reason", json_object_new_string(reason));
    }
    const char *text = o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN) : NULL;
    char *body = text ? strdup(text) : NULL;
    json_object_put(o);
    return respond_text(q, conn, *reason ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_OK,
                        "application/json", body);
}

static enum MHD_Result serve_metrics(struct http_server *s, struct http_request *q,
                                     struct MHD_Connection *conn)
{
    struct errbuf e = {{0}};
    Bitnet__Envelope *st = ask(s, BITNET__ENVELOPE__BODY_STATUS_REQUEST, &e);
    Bitnet__Envelope *wk = st ? ask(s, BITNET__ENVELOPE__BODY_WORKERS_REQUEST, &e) : NULL;
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    if (fp) {
        http_metrics_render(&s->metrics,
                            st && st->body_case == BITNET__ENVELOPE__BODY_DAEMON_STATUS_REPLY
                                ? st->daemon_status_reply : NULL,
                            wk && wk->body_case == BITNET__ENVELOPE__BODY_WORKERS_REPLY
                                ? wk->workers_reply : NULL,
                            fp);
        if (fclose(fp) != 0) {
            free(text);
            text = NULL;
        }
    }
    wire_free(st);
    wire_free(wk);
    return respond_text(q, conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", text);
}

/* ---- requests ---- */

static bool method_allowed(enum http_route r, bool post)
{
    return (r == ROUTE_COMPLETIONS || r == ROUTE_CHAT) == post;
}

/* Headers are in, no body yet: what can be refused without reading it is refused. */
static enum MHD_Result first_call(struct http_server *s, struct MHD_Connection *conn,
                                  struct http_request *q, const char *url, const char *method)
{
    if (q->route != ROUTE_HEALTH && s->have_keys &&
        !http_keys_admit(&s->keys, MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                                MHD_HTTP_HEADER_AUTHORIZATION)))
        return fail(q, conn, MHD_HTTP_UNAUTHORIZED, "invalid_request_error", "invalid_api_key",
                    "a valid API key is required: Authorization: Bearer KEY (--api-keys)");
    if (q->route == ROUTE_OTHER)
        return fail(q, conn, MHD_HTTP_NOT_FOUND, "invalid_request_error", "not_found",
                    "no endpoint %.64s here (see docs/http-api.md)", url);
    bool head_or_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;
    q->post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    if (!method_allowed(q->route, q->post) || (!q->post && !head_or_get))
        return fail(q, conn, MHD_HTTP_METHOD_NOT_ALLOWED, "invalid_request_error",
                    "method_not_allowed", "%s takes %s", http_route_path(q->route),
                    q->route == ROUTE_COMPLETIONS || q->route == ROUTE_CHAT ? "POST" : "GET");
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > s->max_body)
        return fail(q, conn, MHD_HTTP_CONTENT_TOO_LARGE, "invalid_request_error",
                    "request_too_large", "the request body has %s bytes, more than the %zu "
                    "allowed (--http-max-body)", cl, s->max_body);
    return MHD_YES;
}

static enum MHD_Result take_body(struct http_server *s, struct http_request *q,
                                 const char *data, size_t *size)
{
    if (!q->too_big && q->n_body + *size <= s->max_body) {
        char *b = realloc(q->body, q->n_body + *size + 1);
        if (!b)
            return MHD_NO;
        memcpy(b + q->n_body, data, *size);
        q->body = b;
        q->n_body += *size;
        b[q->n_body] = 0;
    } else {
        /* a chunked body gives no length up front: read and drop the rest, then 413 */
        q->too_big = true;
    }
    *size = 0;
    return MHD_YES;
}

static enum MHD_Result serve(struct http_server *s, struct MHD_Connection *conn,
                             struct http_request *q)
{
    switch (q->route) {
    case ROUTE_HEALTH:
        return serve_health(s, q, conn);
    case ROUTE_METRICS:
        return serve_metrics(s, q, conn);
    case ROUTE_MODELS:
        return respond_text(q, conn, MHD_HTTP_OK, "application/json",
                            openai_models_json(s->model_id, s->created));
    default:
        break;
    }
    if (q->too_big)
        return fail(q, conn, MHD_HTTP_CONTENT_TOO_LARGE, "invalid_request_error",
                    "request_too_large", "the request body is larger than the %zu bytes "
                    "allowed (--http-max-body)", s->max_body);
    uint64_t seed;
    if (getrandom(&seed, sizeof seed, 0) != sizeof seed)
        seed = (uint64_t)(clock_ms() * 1e6);
    struct openai_request req;
    struct openai_error err;
    if (openai_parse_request(q->body, q->n_body, q->route == ROUTE_CHAT, seed, &req, &err) < 0) {
        openai_request_free(&req);
        q->status = err.status;
        return http_respond_error(conn, &err);
    }
    return http_generate(s, conn, &req, q->t_arrival_ms, &q->status, &q->gen);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls)
{
    (void)version;
    struct http_server *s = cls;
    struct http_request *q = *con_cls;
    if (!q) {
        if (!(q = calloc(1, sizeof *q)))
            return MHD_NO;
        *con_cls = q;
        q->route = route_of(url);
        q->t_arrival_ms = clock_ms();
        return first_call(s, conn, q, url, method);
    }
    if (q->status) { /* refused on its headers; the body is not looked at */
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size)
        return take_body(s, q, upload_data, upload_size);
    return serve(s, conn, q);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode why)
{
    (void)conn, (void)why;
    struct http_server *s = cls;
    struct http_request *q = *con_cls;
    if (!q)
        return;
    /* a status of 0 means no answer was queued at all (a client that left) */
    http_metrics_count_request(&s->metrics, q->route, q->status ? q->status : 499);
    http_generation_end(q->gen);
    free(q->body);
    free(q);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n')
        line[--n] = 0;
    fprintf(stderr, "bitnetd: http: %s\n", line);
}

/* ---- start and stop ---- */

/* "PORT" is loopback's; "ADDR:PORT", "[V6ADDR]:PORT". */
static int resolve_listen(const char *spec, struct sockaddr_storage *sa, socklen_t *len,
                          struct errbuf *e)
{
    char host[256] = "127.0.0.1";
    const char *port = spec;
    const char *colon = strrchr(spec, ':');
    if (colon) {
        size_t n = (size_t)(colon - spec);
        const char *h = spec;
        if (n >= 2 && spec[0] == '[' && spec[n - 1] == ']')
            h++, n -= 2;
        if (n == 0 || n >= sizeof host)
            return err_set(e, "--http '%s': expected [ADDR:]PORT", spec);
        memcpy(host, h, n);
        host[n] = 0;
        port = colon + 1;
    }
    char *end;
    long p = strtol(port, &end, 10);
    if (!*port || *end || p < 0 || p > 65535)
        return err_set(e, "--http '%s': the port must be a number 0..65535", spec);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0)
        return err_set(e, "--http '%s': %s: %s", spec, host, gai_strerror(rc));
    memcpy(sa, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

static void describe_bound(struct http_server *s)
{
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_LISTEN_FD);
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    char host[INET6_ADDRSTRLEN] = "?", port[16] = "?";
    if (di && getsockname(di->listen_fd, (struct sockaddr *)&sa, &len) == 0)
        getnameinfo((struct sockaddr *)&sa, len, host, sizeof host, port, sizeof port,
                    NI_NUMERICHOST | NI_NUMERICSERV);
    snprintf(s->bound, sizeof s->bound, sa.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

static void model_id_of(const char *path, char *out, size_t cap)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && strcmp(base + n - 5, ".gguf") == 0)
        n -= 5;
    snprintf(out, cap, "%.*s", (int)n, base);
}

/* Each connection costs about four descriptors: its TCP socket, its link's socket and
 * mailbox, and the daemon's end of the link. Running out of them inside libzmq is not a
 * refusal but an abort, so the connections are capped by what the process may open
 * (raised to its hard limit first, as far as 65536). */
static unsigned connection_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 64;
    rlim_t want = rl.rlim_max < 65536 ? rl.rlim_max : 65536;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            getrlimit(RLIMIT_NOFILE, &rl);
    }
    /* the daemon's own sockets, workers and files first */
    rlim_t spare = rl.rlim_cur > 256 ? rl.rlim_cur - 256 : 0;
    rlim_t n = spare / 4;
    if (n < 8)
        n = 8;
    return n < HTTP_MAX_CONNECTIONS ? (unsigned)n : HTTP_MAX_CONNECTIONS;
}

struct http_server *http_server_start(const struct http_settings *cfg, struct errbuf *e)
{
    struct http_server *s = calloc(1, sizeof *s);
    if (!s) {
        err_set(e, "http: out of memory");
        return NULL;
    }
    atomic_init(&s->stopping, false);
    if (http_metrics_init(&s->metrics) < 0) {
        free(s);
        err_set(e, "http: mutex: %s", strerror(errno));
        return NULL;
    }
    s->max_body = cfg->max_body;
    s->max_in_flight = cfg->max_in_flight;
    s->created = (long long)time(NULL);
    model_id_of(cfg->model_path, s->model_id, sizeof s->model_id);
    if (snprintf(s->ctl_endpoint, sizeof s->ctl_endpoint, "%s", cfg->ctl_endpoint) >=
        (int)sizeof s->ctl_endpoint) {
        err_set(e, "http: control endpoint too long");
        goto fail;
    }
    if (cfg->api_keys) {
        if (http_keys_load(&s->keys, cfg->api_keys, e) < 0)
            goto fail;
        s->have_keys = true;
    }
    struct sockaddr_storage sa;
    socklen_t sa_len;
    if (resolve_listen(cfg->listen, &sa, &sa_len, e) < 0)
        goto fail;
    if (!(s->zmq_ctx = zmq_ctx_new())) {
        err_set(e, "http: zmq context: %s", zmq_strerror(errno));
        goto fail;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG |
                     (sa.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    s->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s,
                              MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,
                              MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                              MHD_OPTION_CONNECTION_LIMIT, connection_limit(),
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_IDLE_TIMEOUT_S,
                              MHD_OPTION_THREAD_STACK_SIZE, (size_t)(512 << 10),
                              MHD_OPTION_END);
    if (!s->mhd) {
        err_set(e, "--http %s: libmicrohttpd could not listen there (see its message above)",
                cfg->listen);
        goto fail;
    }
    describe_bound(s);
    return s;
fail:
    http_server_stop(s);
    return NULL;
}

void http_server_stop(struct http_server *s)
{
    if (!s)
        return;
    atomic_store(&s->stopping, true);
    if (s->mhd)
        MHD_stop_daemon(s->mhd);
    if (s->zmq_ctx)
        zmq_ctx_term(s->zmq_ctx);
    http_keys_free(&s->keys);
    http_metrics_free(&s->metrics);
    free(s);
}

int daemon_http_start(struct daemon *d, struct errbuf *e)
{
    if (!d->cfg.http)
        return 0;
    struct http_settings hs = {
        .listen = d->cfg.http,
        .api_keys = d->cfg.api_keys,
        .ctl_endpoint = d->ipc.ctl_ep,
        .model_path = d->model_path,
        .max_body = (size_t)d->cfg.http_max_body,
        .max_in_flight = d->cfg.max_sequences + d->cfg.http_queue,
    };
    if (!(d->http = http_server_start(&hs, e)))
        return -1;
    dlog("http: OpenAI API on http://%s/v1 (model \"%s\"%s)", d->http->bound, d->http->model_id,
         d->http->have_keys ? ", API keys required" : "");
    return 0;
}

void daemon_http_stop(struct daemon *d)
{
    http_server_stop(d->http);
    d->http = NULL;
}

/* bitnetd's OpenAI-compatible HTTP API (docs/http-api.md), on libmicrohttpd with a thread
 * per connection. It is a client of its own daemon: every request talks to the event
 * loop over the client-control socket as bitnetctl does (daemon/http_link.h), so the
 * scheduler stays single-threaded and knows nothing of HTTP, and a dropped connection
 * becomes a Cancel. The threads share only this struct: the settings (read-only once
 * started), the metrics (under their lock) and the stopping flag. */
#ifndef BITNET_DAEMON_HTTP_SERVER_H
#define BITNET_DAEMON_HTTP_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "daemon/http_keys.h"
#include "daemon/http_metrics.h"
#include "model/errbuf.h"

struct daemon;

/* A daemon that stays silent this long (it sends a job's client a probe every second)
 * is taken for wedged, and the request fails. */
#define HTTP_DAEMON_SILENCE_MS 30000
/* How long an idle keep-alive connection may hold its thread (not while a generation
 * runs: a queued job may wait long for its first token). */
#define HTTP_IDLE_TIMEOUT_S 60
/* Connections served at once (a thread each); more wait in the listen queue. */
#define HTTP_MAX_CONNECTIONS 512

struct http_settings {
    const char *listen;         /* "PORT" or "ADDR:PORT" (IPv6: "[ADDR]:PORT") */
    const char *api_keys;       /* NULL: no keys asked */
    const char *ctl_endpoint;   /* the daemon's client-control socket */
    const char *model_path;     /* its basename without .gguf is the model's id */
    size_t max_body;
    int max_in_flight;          /* generation requests at once; more get 429 */
};

struct http_server {
    struct MHD_Daemon *mhd;
    void *zmq_ctx;              /* the links' context; each link is one thread's */
    char ctl_endpoint[512];
    char model_id[256];
    long long created;          /* Unix seconds at start, /v1/models' "created" */
    size_t max_body;
    int max_in_flight;
    bool have_keys;
    struct http_keys keys;
    struct http_metrics metrics;
    atomic_bool stopping;       /* waits in connection threads give up */
    char bound[160];            /* "ADDR:PORT" as bound, for the log */
};

/* Binds and starts serving. NULL with e filled on failure. */
struct http_server *http_server_start(const struct http_settings *cfg, struct errbuf *e);
/* Ends every connection (running generations are cancelled), joins the threads, frees. */
void http_server_stop(struct http_server *s);

/* bitnetd's glue: starts the server when --http is set (d->http stays NULL otherwise), and
 * stops it. */
int daemon_http_start(struct daemon *d, struct errbuf *e);
void daemon_http_stop(struct daemon *d);

#endif

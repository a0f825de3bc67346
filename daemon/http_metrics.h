/* What the HTTP API counts for GET /metrics: requests by endpoint and status, tokens,
 * and histograms of time to first token and time per output token. Connection threads
 * update it, the /metrics thread reads it: a mutex guards it. The daemon's own figures
 * (queue, running sequences, workers) are asked from the daemon at each scrape and
 * rendered here too, in the Prometheus text format (version 0.0.4). */
#ifndef BITNET_DAEMON_HTTP_METRICS_H
#define BITNET_DAEMON_HTTP_METRICS_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#include "proto/bitnet.pb-c.h"

enum http_route {
    ROUTE_COMPLETIONS,
    ROUTE_CHAT,
    ROUTE_MODELS,
    ROUTE_HEALTH,
    ROUTE_METRICS,
    ROUTE_OTHER,        /* anything else (404s) */
    ROUTE_COUNT
};

#define HTTP_METRICS_N_STATUS 12
#define HTTP_METRICS_TTFT_BUCKETS 12
#define HTTP_METRICS_TPOT_BUCKETS 11

struct http_histogram {
    const double *bounds;       /* upper bounds in seconds, ascending; +Inf implied */
    int n_bounds;
    uint64_t counts[16];        /* per bound (not cumulative), then +Inf */
    double sum;
    uint64_t n;
};

struct http_metrics {
    pthread_mutex_t lock;
    uint64_t requests[ROUTE_COUNT][HTTP_METRICS_N_STATUS];
    uint64_t prompt_tokens, generated_tokens;
    uint64_t cancelled_by_disconnect;
    int64_t in_flight;          /* generation requests being served */
    struct http_histogram ttft, tpot;
};

int http_metrics_init(struct http_metrics *m);
void http_metrics_free(struct http_metrics *m);

const char *http_route_path(enum http_route r);
void http_metrics_count_request(struct http_metrics *m, enum http_route r, int status);
/* A finished generation: its tokens, its time to first token, its mean time per output
 * token (< 0: fewer than two tokens, nothing to observe). */
void http_metrics_count_generation(struct http_metrics *m, unsigned prompt_tokens,
                                   unsigned generated, double ttft_s, double tpot_s);
void http_metrics_count_disconnect(struct http_metrics *m);
/* Changes the generation requests in flight by delta; returns the new count. */
int64_t http_metrics_in_flight(struct http_metrics *m, int delta);

/* Writes every metric. status and workers may be NULL (the daemon did not answer): their
 * metrics are then left out and bitnetd_up is 0. */
void http_metrics_render(struct http_metrics *m, const Bitnet__DaemonStatusReply *status,
                         const Bitnet__WorkersReply *workers, FILE *out);

#endif

#include "daemon/http_metrics.h"

#include <string.h>

#include "proto/wire.h"

/* Seconds. Time to first token spans a queued job's wait; a token of a tiny model takes
 * a millisecond, of 2B-4T tens of them. */
static const double ttft_bounds[HTTP_METRICS_TTFT_BUCKETS] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
static const double tpot_bounds[HTTP_METRICS_TPOT_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};

/* The statuses counted each on its own; anything else counts as 0 ("other"). */
static const int status_codes[HTTP_METRICS_N_STATUS] = {
    200, 400, 401, 404, 405, 413, 429, 500, 503, 504, 499, 0};

int http_metrics_init(struct http_metrics *m)
{
    memset(m, 0, sizeof *m);
    m->ttft.bounds = ttft_bounds;
    m->ttft.n_bounds = HTTP_METRICS_TTFT_BUCKETS;
    m->tpot.bounds = tpot_bounds;
    m->tpot.n_bounds = HTTP_METRICS_TPOT_BUCKETS;
    return pthread_mutex_init(&m->lock, NULL) == 0 ? 0 : -1;
}

void http_metrics_free(struct http_metrics *m)
{
    pthread_mutex_destroy(&m->lock);
}

const char *http_route_path(enum http_route r)
{
    static const char *const paths[ROUTE_COUNT] = {
        "/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics", "other"};
    return r < ROUTE_COUNT ? paths[r] : "other";
}

void http_metrics_count_request(struct http_metrics *m, enum http_route r, int status)
{
    int k = HTTP_METRICS_N_STATUS - 1;
    for (int i = 0; i < HTTP_METRICS_N_STATUS - 1; i++)
        if (status_codes[i] == status)
            k = i;
    if (r >= ROUTE_COUNT)
        r = ROUTE_OTHER;
    pthread_mutex_lock(&m->lock);
    m->requests[r][k]++;
    pthread_mutex_unlock(&m->lock);
}

static void observe(struct http_histogram *h, double x)
{
    int k = 0;
    while (k < h->n_bounds && x > h->bounds[k])
        k++;
    h->counts[k]++;
    h->sum += x;
    h->n++;
}

void http_metrics_count_generation(struct http_metrics *m, unsigned prompt_tokens,
                                   unsigned generated, double ttft_s, double tpot_s)
{
    pthread_mutex_lock(&m->lock);
    m->prompt_tokens += prompt_tokens;
    m->generated_tokens += generated;
    if (ttft_s >= 0)
        observe(&m->ttft, ttft_s);
    if (tpot_s >= 0)
        observe(&m->tpot, tpot_s);
    pthread_mutex_unlock(&m->lock);
}

void http_metrics_count_disconnect(struct http_metrics *m)
{
    pthread_mutex_lock(&m->lock);
    m->cancelled_by_disconnect++;
    pthread_mutex_unlock(&m->lock);
}

int64_t http_metrics_in_flight(struct http_metrics *m, int delta)
{
    pthread_mutex_lock(&m->lock);
    int64_t n = m->in_flight += delta;
    pthread_mutex_unlock(&m->lock);
    return n;
}

static void render_histogram(FILE *out, const char *name, const char *help,
                             const struct http_histogram *h)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int k = 0; k < h->n_bounds; k++) {
        cum += h->counts[k];
        fprintf(out, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[k], (unsigned long long)cum);
    }
    cum += h->counts[h->n_bounds];
    fprintf(out, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name,
            (unsigned long long)cum, name, h->sum, name, (unsigned long long)h->n);
}


static void render_daemon(FILE *out, const Bitnet__DaemonStatusReply *st)
{
    fprintf(out, "# HELP bitnetd_queue_depth Generation jobs waiting for a sequence slot.\n"
                 "# TYPE bitnetd_queue_depth gauge\nbitnetd_queue_depth %u\n", st->jobs_queued);
    fprintf(out, "# HELP bitnetd_running_sequences Jobs holding a KV sequence slot.\n"
                 "# TYPE bitnetd_running_sequences gauge\nbitnetd_running_sequences %u\n",
            st->jobs_running);
    fprintf(out, "# HELP bitnetd_jobs_done_total Jobs ended (all clients).\n"
                 "# TYPE bitnetd_jobs_done_total counter\nbitnetd_jobs_done_total %llu\n",
            (unsigned long long)st->jobs_done);
    fprintf(out, "# HELP bitnetd_workers_ready Pipeline stages ready, of bitnetd_workers.\n"
                 "# TYPE bitnetd_workers_ready gauge\nbitnetd_workers_ready %u\n"
                 "# HELP bitnetd_workers Pipeline stages.\n"
                 "# TYPE bitnetd_workers gauge\nbitnetd_workers %u\n",
            st->n_workers_ready, st->n_workers);
}

static void render_workers(FILE *out, const Bitnet__WorkersReply *wr)
{
    static const Bitnet__WorkerState states[] = {
        BITNET__WORKER_STATE__WORKER_STATE_CONNECTING, BITNET__WORKER_STATE__WORKER_STATE_LOADING,
        BITNET__WORKER_STATE__WORKER_STATE_READY, BITNET__WORKER_STATE__WORKER_STATE_DRAINING,
        BITNET__WORKER_STATE__WORKER_STATE_DEAD, BITNET__WORKER_STATE__WORKER_STATE_WAITING};
    fprintf(out, "# HELP bitnetd_worker_state 1 for the state each worker is in.\n"
                 "# TYPE bitnetd_worker_state gauge\n");
    for (size_t i = 0; i < wr->n_workers; i++)
        for (size_t s = 0; s < sizeof states / sizeof states[0]; s++)
            fprintf(out, "bitnetd_worker_state{worker=\"w%zu\",state=\"%s\"} %d\n", i,
                    wire_worker_state_name(states[s]), wr->workers[i]->state == states[s]);
    fprintf(out, "# HELP bitnetd_worker_restarts_total Times a worker's process was started "
                 "again.\n# TYPE bitnetd_worker_restarts_total counter\n");
    for (size_t i = 0; i < wr->n_workers; i++) {
        uint32_t starts = wr->workers[i]->starts;
        fprintf(out, "bitnetd_worker_restarts_total{worker=\"w%zu\"} %u\n", i,
                starts > 0 ? starts - 1 : 0);
    }
    /* the stage timings every step carries (bitnetctl workers --timing), averaged since the
     * worker became ready */
    fprintf(out, "# HELP bitnetd_worker_steps_total Steps a worker computed since it became "
                 "ready.\n# TYPE bitnetd_worker_steps_total counter\n");
    for (size_t i = 0; i < wr->n_workers; i++) {
        const Bitnet__StageTimingStats *t = wr->workers[i]->timing;
        fprintf(out, "bitnetd_worker_steps_total{worker=\"w%zu\"} %llu\n", i,
                t ? (unsigned long long)t->steps : 0ull);
    }
    fprintf(out, "# HELP bitnetd_worker_step_compute_seconds Mean compute time of a worker's "
                 "step since it became ready.\n# TYPE bitnetd_worker_step_compute_seconds gauge\n");
    for (size_t i = 0; i < wr->n_workers; i++) {
        const Bitnet__StageTimingStats *t = wr->workers[i]->timing;
        fprintf(out, "bitnetd_worker_step_compute_seconds{worker=\"w%zu\"} %.6f\n", i,
                t && t->steps ? t->compute_us / 1e6 : 0.0);
    }
}

void http_metrics_render(struct http_metrics *m, const Bitnet__DaemonStatusReply *status,
                         const Bitnet__WorkersReply *workers, FILE *out)
{
    fprintf(out, "# HELP bitnetd_up 1 when bitnetd answered this scrape's status request.\n"
                 "# TYPE bitnetd_up gauge\nbitnetd_up %d\n", status != NULL);
    if (status)
        render_daemon(out, status);
    if (workers)
        render_workers(out, workers);
    pthread_mutex_lock(&m->lock);
    fprintf(out, "# HELP bitnetd_http_requests_total HTTP requests answered, by endpoint and "
                 "status.\n# TYPE bitnetd_http_requests_total counter\n");
    for (int r = 0; r < ROUTE_COUNT; r++)
        for (int k = 0; k < HTTP_METRICS_N_STATUS; k++)
            if (m->requests[r][k]) {
                char status[16] = "other";
                if (status_codes[k])
                    snprintf(status, sizeof status, "%d", status_codes[k]);
                fprintf(out, "bitnetd_http_requests_total{endpoint=\"%s\",status=\"%s\"} %llu\n",
                        http_route_path((enum http_route)r), status,
                        (unsigned long long)m->requests[r][k]);
            }
    fprintf(out, "# HELP bitnetd_http_requests_in_flight Generation requests being served.\n"
                 "# TYPE bitnetd_http_requests_in_flight gauge\n"
                 "bitnetd_http_requests_in_flight %lld\n", (long long)m->in_flight);
    fprintf(out, "# HELP bitnetd_http_prompt_tokens_total Prompt tokens of HTTP generations.\n"
                 "# TYPE bitnetd_http_prompt_tokens_total counter\n"
                 "bitnetd_http_prompt_tokens_total %llu\n", (unsigned long long)m->prompt_tokens);
    fprintf(out, "# HELP bitnetd_http_generated_tokens_total Tokens generated for HTTP "
                 "requests.\n# TYPE bitnetd_http_generated_tokens_total counter\n"
                 "bitnetd_http_generated_tokens_total %llu\n",
            (unsigned long long)m->generated_tokens);
    fprintf(out, "# HELP bitnetd_http_disconnects_total Generations cancelled because their "
                 "client disconnected.\n# TYPE bitnetd_http_disconnects_total counter\n"
                 "bitnetd_http_disconnects_total %llu\n",
            (unsigned long long)m->cancelled_by_disconnect);
    render_histogram(out, "bitnetd_http_time_to_first_token_seconds",
                     "From the request's arrival to its first generated token.", &m->ttft);
    render_histogram(out, "bitnetd_http_time_per_output_token_seconds",
                     "Mean time between a request's generated tokens after the first.", &m->tpot);
    pthread_mutex_unlock(&m->lock);
}

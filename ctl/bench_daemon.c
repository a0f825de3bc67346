/* bitnetctl bench without --model: generation speed through a running bitnetd. Each
 * repeat sends --streams greedy generations at once, each on a connection of its own,
 * and times them from the first request to the last reply: the aggregate rate is what a
 * placement is worth to many clients; the daemon's own per-job figures (decode rate, time
 * to first token, prompt rate) are kept for every stream. The read bandwidth is probed
 * before every repeat, as the in-process bench does before its decode chunks, so that
 * tokens/s per GB/s compares placements across machines. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/read_bandwidth.h"
#include "bench/timing.h"
#include "ctl/bench_receipt.h"
#include "ctl/bench_run.h"
#include "ctl/daemon_client.h"
#include "kernels/kernels.h"
#include "kernels/threadpool.h"
#include "model/clock.h"
#include "proto/sampling_wire.h"

/* A generation on a random model may end early at an end-of-text token; the figures use
 * the counts the daemon reports, so that only costs tokens. Long enough for a big model's
 * slowest step on a shared host. */
#define BENCH_DAEMON_TIMEOUT_MS 300000

Bitnet__Envelope *bench_daemon_ask(const char *run_dir, Bitnet__Envelope__BodyCase body, void *msg,
                             Bitnet__Envelope__BodyCase expect, struct errbuf *e)
{
    Bitnet__Envelope env;
    wire_envelope_init(&env, 0);
    env.body_case = body;
    env.hello = msg; /* every body shares the union's storage */
    struct daemon_client c;
    if (daemon_connect(&c, run_dir, e) < 0)
        return NULL;
    Bitnet__Envelope *reply = NULL;
    uint64_t id = daemon_send(&c, &env, e);
    int rc = id ? daemon_recv(&c, id, 10000, &reply, e) : -1;
    if (rc == 1)
        err_set(e, "%s: no answer within 10 s", c.endpoint);
    if (rc == 0 && reply->body_case != expect) {
        err_set(e, "%s: unexpected reply '%s'", c.endpoint, wire_body_name(reply->body_case));
        wire_free(reply);
        rc = -1;
    }
    daemon_disconnect(&c);
    return rc == 0 ? reply : NULL;
}

/* The placement as the daemon's workers report it: a stage per worker, in order. */
static json_object *placement_json(const Bitnet__WorkersReply *w, int *threads_max, int *threads_sum)
{
    json_object *pl = json_object_new_object(), *stages = json_object_new_array();
    int ranks = 1, *ranks_max = &ranks;
    *threads_max = *threads_sum = 0;
    for (size_t i = 0; i < w->n_workers; i++) {
        const Bitnet__WorkerInfo *wi = w->workers[i];
        const Bitnet__StatusReply *st = wi->status;
        json_object *s = json_object_new_object();
        json_object_object_add(s, "id", json_object_new_string(st ? st->worker_id : ""));
        json_object_object_add(s, "host", json_object_new_string(wi->host ? wi->host : ""));
        if (st) {
            json_object_object_add(s, "layer_begin", json_object_new_int((int)st->layer_begin));
            json_object_object_add(s, "layer_end", json_object_new_int((int)st->layer_end));
            int ranks = st->tensor_parallel > 1 ? (int)st->tensor_parallel : 1;
            json_object_object_add(s, "threads", json_object_new_int((int)st->threads));
            json_object_object_add(s, "numa_node", json_object_new_int(st->numa_node));
            json_object_object_add(s, "tensor_parallel", json_object_new_int(ranks));
            if ((int)st->threads > *threads_max)
                *threads_max = (int)st->threads;
            if (ranks > *ranks_max)
                *ranks_max = ranks;
            *threads_sum += (int)st->threads * ranks;
        }
        json_object_array_add(stages, s);
    }
    json_object_object_add(pl, "workers", json_object_new_int((int)w->n_workers));
    json_object_object_add(pl, "threads", json_object_new_int(*threads_max));
    json_object_object_add(pl, "tensor_parallel", json_object_new_int(ranks));
    json_object_object_add(pl, "stages", stages);
    return pl;
}

/* The model's identity, shape and tensor types from its file when this host can read it
 * (the daemon's own path); else only the id the daemon reports. */
static int model_json(json_object *receipt, const Bitnet__DaemonStatusReply *s, struct errbuf *e)
{
    struct bitnet_model m;
    struct errbuf le = {{0}};
    if (bitnet_model_load(&m, s->model_path, &le) == 0) {
        int rc = bench_receipt_set_model(receipt, &m, s->model_path, e);
        bitnet_model_free(&m);
        if (rc < 0)
            return -1;
        /* the daemon hashed the file it loaded; a file replaced since is another model */
        if (strcmp(bench_json_str(receipt, "model.id", ""), s->model_sha256) != 0)
            return err_set(e, "%s: its sha256 is not the one the daemon loaded (%s): replaced "
                              "since the daemon started?", s->model_path, s->model_sha256);
        return 0;
    }
    json_object *j = json_object_new_object();
    json_object_object_add(j, "id", json_object_new_string(s->model_sha256));
    json_object_object_add(j, "path", json_object_new_string(s->model_path));
    json_object_object_add(j, "note", json_object_new_string(le.msg));
    json_object_object_add(receipt, "model", j);
    return 0;
}

struct stream_result {
    double generated, decode_tps, ttft_s, prompt_tps;
};

/* Runs n_streams generations at once; *wall_s from the first send to the last reply. */
static int one_round(const struct bench_opts *o, const char *prompt, int n_streams, int n_predict,
                     struct stream_result *res, double *wall_s, struct errbuf *e)
{
    struct daemon_client *c = calloc((size_t)n_streams, sizeof *c);
    uint64_t *ids = calloc((size_t)n_streams, sizeof *ids);
    int connected = 0, rc = 0;
    if (!c || !ids) {
        free(c);
        free(ids);
        return err_set(e, "out of memory");
    }
    for (; connected < n_streams; connected++)
        if (daemon_connect(&c[connected], o->run_dir, e) < 0) {
            rc = -1;
            break;
        }
    Bitnet__GenerateRequest req = BITNET__GENERATE_REQUEST__INIT;
    Bitnet__SamplingParams sp = BITNET__SAMPLING_PARAMS__INIT;
    struct sampler_params greedy;
    sampler_params_default(&greedy);
    greedy.temp = 0.0f; /* greedy: the same work every run */
    sampling_to_wire(&greedy, &sp);
    req.input_case = BITNET__GENERATE_REQUEST__INPUT_PROMPT;
    req.prompt = (char *)prompt;
    req.add_bos = true;
    req.n_predict = n_predict;
    req.sampling = &sp;
    req.stream = false;
    Bitnet__Envelope env;
    wire_envelope_init(&env, 0);
    env.body_case = BITNET__ENVELOPE__BODY_GENERATE_REQUEST;
    env.generate_request = &req;
    double t0 = clock_seconds();
    for (int i = 0; rc == 0 && i < n_streams; i++)
        if (!(ids[i] = daemon_send(&c[i], &env, e)))
            rc = -1;
    /* replies wait in their sockets, so collecting them in order loses no time */
    for (int i = 0; rc == 0 && i < n_streams; i++) {
        for (;;) {
            Bitnet__Envelope *r = NULL;
            int got = daemon_recv(&c[i], ids[i], BENCH_DAEMON_TIMEOUT_MS, &r, e);
            if (got == 1) {
                rc = err_set(e, "%s: stream %d: no reply within %d s", c[i].endpoint, i + 1,
                             BENCH_DAEMON_TIMEOUT_MS / 1000);
                break;
            }
            if (got < 0) {
                rc = -1;
                break;
            }
            const Bitnet__GenerateChunk *ch =
                r->body_case == BITNET__ENVELOPE__BODY_GENERATE_CHUNK ? r->generate_chunk : NULL;
            if (!ch) {
                rc = err_set(e, "%s: unexpected reply '%s'", c[i].endpoint, wire_body_name(r->body_case));
            } else if (ch->done && ch->stop_reason == BITNET__STOP_REASON__STOP_REASON_ERROR) {
                rc = err_set(e, "%s: stream %d failed: %s", c[i].endpoint, i + 1, ch->error);
            } else if (ch->done) {
                const Bitnet__GenerateStats *st = ch->stats;
                if (!st || st->n_generated == 0) {
                    rc = err_set(e, "%s: stream %d generated nothing", c[i].endpoint, i + 1);
                } else {
                    res[i].generated = st->n_generated;
                    res[i].decode_tps = st->decode_ms > 0 ? st->n_generated / (st->decode_ms / 1000.0) : 0;
                    res[i].ttft_s = st->ttft_ms / 1000.0;
                    res[i].prompt_tps = st->prompt_ms > 0 ? st->n_prompt_tokens / (st->prompt_ms / 1000.0) : 0;
                }
            }
            bool done = !ch || ch->done || rc < 0;
            wire_free(r);
            if (done)
                break;
        }
    }
    *wall_s = clock_seconds() - t0;
    for (int i = 0; i < connected; i++)
        daemon_disconnect(&c[i]);
    free(c);
    free(ids);
    return rc;
}

static double middle(const double *v, int n)
{
    double *copy = malloc((size_t)n * sizeof *copy);
    if (!copy || n == 0) {
        free(copy);
        return 0.0;
    }
    memcpy(copy, v, (size_t)n * sizeof *copy);
    bench_sort(copy, n);
    double m = n % 2 ? copy[n / 2] : 0.5 * (copy[n / 2 - 1] + copy[n / 2]);
    free(copy);
    return m;
}

int bench_daemon(const struct bench_opts *o, json_object **result, json_object **receipt_out)
{
    struct errbuf e = {{0}};
    Bitnet__StatusRequest sreq = BITNET__STATUS_REQUEST__INIT;
    Bitnet__Envelope *sr = bench_daemon_ask(o->run_dir, BITNET__ENVELOPE__BODY_STATUS_REQUEST, &sreq,
                               BITNET__ENVELOPE__BODY_DAEMON_STATUS_REPLY, &e);
    if (!sr) {
        fprintf(stderr, "bitnetctl bench: %s\n", e.msg);
        return -1;
    }
    const Bitnet__DaemonStatusReply *status = sr->daemon_status_reply;
    if (status->state != BITNET__DAEMON_STATE__DAEMON_STATE_READY) {
        fprintf(stderr, "bitnetctl bench: the daemon is not ready (%u of %u workers ready)\n",
                status->n_workers_ready, status->n_workers);
        wire_free(sr);
        return -1;
    }
    Bitnet__WorkersRequest wreq = BITNET__WORKERS_REQUEST__INIT;
    Bitnet__Envelope *wr = bench_daemon_ask(o->run_dir, BITNET__ENVELOPE__BODY_WORKERS_REQUEST, &wreq,
                               BITNET__ENVELOPE__BODY_WORKERS_REPLY, &e);
    if (!wr) {
        fprintf(stderr, "bitnetctl bench: %s\n", e.msg);
        wire_free(sr);
        return -1;
    }
    /* local workers pick their kernels as this process would, from the same CPU and
     * BITNET_KERNEL; remote ones are named in the placement's hosts */
    kernels_init();
    json_object *receipt = bench_receipt_new("daemon");
    int threads = 0, threads_sum = 0;
    json_object_object_add(receipt, "placement", placement_json(wr->workers_reply, &threads, &threads_sum));
    int rc = model_json(receipt, status, &e);
    json_object_object_add(receipt, "daemon_version", json_object_new_string(status->software_version));
    wire_free(wr);
    wire_free(sr);
    if (rc < 0) {
        fprintf(stderr, "bitnetctl bench: %s\n", e.msg);
        json_object_put(receipt);
        return -1;
    }
    /* " the" is one token of the Llama-3 vocabulary: the prompt is as long as asked */
    size_t plen = (size_t)o->prompt_tokens * 4 + 1;
    char *prompt = malloc(plen);
    int n = (int)o->repeat, s = (int)o->streams;
    double *agg = calloc((size_t)n, sizeof *agg);
    double *dec = calloc((size_t)n * s, sizeof *dec), *ttft = calloc((size_t)n * s, sizeof *ttft);
    double *pp = calloc((size_t)n * s, sizeof *pp);
    struct stream_result *res = calloc((size_t)s, sizeof *res);
    double *gbps = calloc((size_t)n, sizeof *gbps), *per_gbps = calloc((size_t)n, sizeof *per_gbps);
    /* as many probe threads as the stages run, at most what this process may use */
    int probe_threads = threads_sum > 0 && threads_sum < cpus_available() ? threads_sum : cpus_available();
    struct read_probe_server probe = {0};
    bool probing = false;
    if (!prompt || !agg || !dec || !ttft || !pp || !res || !gbps || !per_gbps) {
        fprintf(stderr, "bitnetctl bench: out of memory\n");
        rc = -1;
    } else {
        for (long i = 0; i < o->prompt_tokens; i++)
            memcpy(prompt + 4 * i, " the", 4);
        prompt[plen - 1] = '\0';
        /* a short job first: first-touch page faults are not the placement's speed */
        double wall;
        rc = one_round(o, "Warm up", 1, 4, res, &wall, &e);
        if (rc == 0 && read_probe_server_start(&probe, (size_t)o->probe_mib << 20, probe_threads, &e) < 0)
            rc = -1;
        probing = rc == 0;
    }
    for (int r = 0; rc == 0 && r < n; r++) {
        double wall;
        memset(res, 0, (size_t)s * sizeof *res);
        if (read_probe_server_measure(&probe, BENCH_PROBE_PASSES, &gbps[r], &e) < 0 ||
            one_round(o, prompt, s, (int)o->gen_tokens, res, &wall, &e) < 0) {
            rc = -1;
            break;
        }
        double total = 0;
        for (int i = 0; i < s; i++) {
            total += res[i].generated;
            dec[r * s + i] = res[i].decode_tps;
            ttft[r * s + i] = res[i].ttft_s;
            pp[r * s + i] = res[i].prompt_tps;
        }
        agg[r] = total / wall;
        per_gbps[r] = gbps[r] > 0 ? agg[r] / gbps[r] : 0.0;
        if (!o->json && !o->quiet)
            fprintf(stderr, "run %d/%d: %d streams, %.0f tokens in %.2fs: %.2f tok/s (read probe %.1f GB/s)\n",
                    r + 1, n, s, total, wall, agg[r], gbps[r]);
    }
    if (rc < 0 && e.msg[0])
        fprintf(stderr, "bitnetctl bench: %s\n", e.msg);
    if (rc == 0) {
        bench_receipt_add_figure(receipt, "generated_tps", agg, n);
        bench_receipt_add_figure(receipt, "stream_generated_tps", dec, n * s);
        bench_receipt_add_figure(receipt, "ttft_s", ttft, n * s);
        bench_receipt_add_figure(receipt, "prompt_tps", pp, n * s);
        bench_receipt_set_probe(receipt, probe_threads, (size_t)o->probe_mib << 20, BENCH_PROBE_PASSES);
        bench_receipt_add_figure(receipt, "read_gbps", gbps, n);
        bench_receipt_add_figure(receipt, "generated_tps_per_gbps", per_gbps, n);
        json_object *params = json_object_new_object();
        json_object_object_add(params, "prompt_tokens", json_object_new_int((int)o->prompt_tokens));
        json_object_object_add(params, "gen_tokens", json_object_new_int((int)o->gen_tokens));
        json_object_object_add(params, "repeat", json_object_new_int(n));
        json_object_object_add(params, "streams", json_object_new_int(s));
        json_object_object_add(params, "probe_mib", json_object_new_int((int)o->probe_mib));
        json_object_object_add(receipt, "params", params);
        json_object *j = json_object_new_object();
        json_object_object_add(j, "model", json_object_new_string(bench_json_str(receipt, "model.path", "")));
        json_object_object_add(j, "model_id", json_object_new_string(bench_json_str(receipt, "model.id", "")));
        json_object_object_add(j, "kernel", json_object_new_string(kops.name));
        json_object_object_add(j, "workers", json_object_new_int((int)bench_json_num(receipt, "placement.workers", 0)));
        json_object_object_add(j, "threads", json_object_new_int(threads));
        json_object_object_add(j, "streams", json_object_new_int(s));
        json_object_object_add(j, "prompt_tokens", json_object_new_int((int)o->prompt_tokens));
        json_object_object_add(j, "gen_tokens", json_object_new_int((int)o->gen_tokens));
        json_object_object_add(j, "repeat", json_object_new_int(n));
        json_object_object_add(j, "generated_tps", json_object_new_double(middle(agg, n)));
        json_object_object_add(j, "stream_generated_tps", json_object_new_double(middle(dec, n * s)));
        json_object_object_add(j, "ttft_s", json_object_new_double(middle(ttft, n * s)));
        json_object_object_add(j, "prompt_tps", json_object_new_double(middle(pp, n * s)));
        json_object_object_add(j, "read_gbps", json_object_new_double(middle(gbps, n)));
        json_object_object_add(j, "generated_tps_per_gbps", json_object_new_double(middle(per_gbps, n)));
        json_object_object_add(j, "placement", json_object_get(bench_json_at(receipt, "placement")));
        json_object_object_add(j, "repeats", json_object_get(bench_json_at(receipt, "figures")));
        json_object_object_add(receipt, "result", json_object_get(j));
        bench_receipt_finish(receipt);
        if (!o->json && !o->quiet) {
            char label[256];
            bench_receipt_placement_label(receipt, label, sizeof label);
            printf("model            %s\n", bench_json_str(receipt, "model.path", ""));
            printf("placement        %s (kernel %s)\n", label, kops.name);
            printf("generated        %.2f tok/s, all streams together\n", middle(agg, n));
            printf("  per stream     %.2f tok/s decode\n", middle(dec, n * s));
            printf("time to first    %.3f s\n", middle(ttft, n * s));
            printf("prompt           %.1f tok/s (%ld tokens)\n", middle(pp, n * s), o->prompt_tokens);
            printf("read bandwidth   %.1f GB/s (%d threads, before each run): %.3f tok/s per GB/s\n",
                   middle(gbps, n), probe_threads, middle(per_gbps, n));
            printf("(medians of %d runs of %d streams x %ld tokens)\n", n, s, o->gen_tokens);
        }
        *result = j;
        *receipt_out = receipt;
    } else {
        json_object_put(receipt);
    }
    if (probing)
        read_probe_server_stop(&probe);
    free(gbps);
    free(per_gbps);
    free(prompt);
    free(agg);
    free(dec);
    free(ttft);
    free(pp);
    free(res);
    return rc;
}

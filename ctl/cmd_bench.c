/* bitnetctl bench --model FILE: prompt and decode speed, load time, memory, and the
 * ratio of decode's weight traffic to the machine's measured read bandwidth. Without
 * --model the same figures through a running bitnetd (bench_daemon.c). Every run is
 * recorded in the benchmark history (bench_store.h) unless --no-record. */
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench/read_bandwidth.h"
#include "bench/timing.h"
#include "ctl/args.h"
#include "ctl/bench_breakdown.h"
#include "ctl/bench_receipt.h"
#include "ctl/bench_run.h"
#include "ctl/bench_store.h"
#include "ctl/commands.h"
#include "ctl/session.h"
#include "kernels/cpu_features.h"
#include "model/clock.h"
#include "model/sample.h"

struct bench_run {
    double load_s, prompt_tps, gen_tps, ttft_s;
    double depth0_tps; /* with --depth: decode at the start of the context, interleaved */
};

static double median(double *v, int n)
{
    bench_sort(v, n);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Bytes decode must read per token apart from the KV cache: every ternary matrix and
 * the output projection in the form the forward pass uses. */
static double weight_bytes_per_token(const struct bitnet_model *m)
{
    return (double)bitnet_model_ternary_bytes(m) + (double)bitnet_model_head_bytes(m);
}

/* Decode is timed in chunks of this many tokens, each right after a read-bandwidth
 * measurement: this host's bandwidth moves by a third within a minute, so a ratio of two
 * figures taken at different times says more about the host than about the engine. */
#define DECODE_CHUNK 16

/* Each decode chunk's read bandwidth just before it, its roofline ratio, and the ratio
 * counting the KV cache's bytes too (all that decode reads: how near the memory bound
 * it runs, where the roofline ratio counts only the weights the issue names). */
struct chunk_log {
    double *gbps, *ratio, *mem_ratio;
    int n, cap;
};

/* One load, prompt and decode; with bd, the decode steps (not the depth-0 ones) are
 * timed part by part into it. */
static int one_run(const struct bench_opts *o, uint64_t seed, struct bench_run *r,
                   double *bytes_per_token, char *kernel, size_t kernel_cap,
                   struct read_probe_server *probe, struct chunk_log *log,
                   struct decode_breakdown *bd, json_object *receipt)
{
    struct session s;
    int n_ctx = (int)(o->depth + o->prompt_tokens + o->gen_tokens + 1);
    if (session_open(&s, o->model, &o->so, n_ctx) < 0)
        return -1;
    if (!bench_json_at(receipt, "model")) {
        struct errbuf me = {{0}};
        if (bench_receipt_set_model(receipt, &s.model, o->model, &me) < 0) {
            fprintf(stderr, "bitnetctl bench: %s\n", me.msg);
            session_close(&s);
            return -1;
        }
    }
    r->load_s = s.load_seconds;
    *bytes_per_token = weight_bytes_per_token(&s.model);
    if (bd)
        breakdown_set_weights(bd, &s.model);
    snprintf(kernel, kernel_cap, "%s", kops.name);
    /* random ordinary tokens: speed does not depend on which */
    size_t n_pre = (size_t)(o->depth + o->prompt_tokens);
    int32_t *toks = malloc((n_pre + 1) * sizeof *toks);
    if (!toks) {
        session_close(&s);
        return -1;
    }
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n_pre; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        toks[i] = (int32_t)(x % 128000);
    }
    int rc = 0;
    if (o->depth > 0 && !session_feed(&s, toks, (size_t)o->depth, 0))
        rc = -1;
    double t0 = clock_seconds();
    const float *logits = rc == 0 ? session_feed(&s, toks + o->depth, (size_t)o->prompt_tokens,
                                                 (int)o->depth)
                                  : NULL;
    double t_prompt = clock_seconds() - t0;
    if (!logits)
        rc = -1;
    int32_t next = rc == 0 ? argmax_f32(logits, s.model.hp.n_vocab) : 0;
    r->ttft_s = clock_seconds() - t0;
    r->prompt_tps = (double)o->prompt_tokens / t_prompt;
    /* With a depth, every step at the end of the context is paired with one at its
     * start (position i, overwriting the cache there, which costs nothing in speed):
     * the host's speed changes by more than the depth does between two runs here, but
     * not between two neighbouring tokens. */
    int pos = (int)n_pre;
    double t_deep = 0.0, t_shallow = 0.0, gbps = 0.0, chunk_start = 0.0, chunk_kv = 0.0;
    /* a step at position p reads the cache of positions 0..p in every layer */
    double kv_position = (double)kv_bytes_per_position(&s.model.hp, o->so.kv_type) *
                         (double)s.model.hp.n_layer;
    struct errbuf e;
    for (long i = 0; rc == 0 && i < o->gen_tokens; i++) {
        if (i % DECODE_CHUNK == 0) {
            if (read_probe_server_measure(probe, BENCH_PROBE_PASSES, &gbps, &e) < 0) {
                fprintf(stderr, "bitnetctl bench: %s\n", e.msg);
                rc = -1;
                break;
            }
            chunk_start = t_deep;
            chunk_kv = 0.0;
        }
        double kv_step = kv_position * (pos + 1);
        chunk_kv += kv_step;
        s.st.timing = bd ? &bd->timing : NULL;
        double t1 = clock_seconds();
        logits = session_feed(&s, &next, 1, pos++);
        double dt = clock_seconds() - t1;
        s.st.timing = NULL;
        t_deep += dt;
        if (bd) {
            bd->decode_s += dt;
            bd->tokens++;
            bd->kv_bytes += kv_step;
        }
        if (!logits) {
            rc = -1;
            break;
        }
        if ((i + 1) % DECODE_CHUNK == 0 || i + 1 == o->gen_tokens) {
            long k = i % DECODE_CHUNK + 1;
            if (log->n < log->cap) {
                log->gbps[log->n] = gbps;
                double t = t_deep - chunk_start;
                log->ratio[log->n] = (double)k / t * *bytes_per_token / (gbps * 1e9);
                log->mem_ratio[log->n] = (k * *bytes_per_token + chunk_kv) / t / (gbps * 1e9);
                log->n++;
            }
        }
        next = argmax_f32(logits, s.model.hp.n_vocab);
        if (o->depth > 0) {
            t1 = clock_seconds();
            if (!session_feed(&s, &next, 1, (int)i))
                rc = -1;
            t_shallow += clock_seconds() - t1;
        }
    }
    r->gen_tps = (double)o->gen_tokens / t_deep;
    r->depth0_tps = o->depth > 0 ? (double)o->gen_tokens / t_shallow : r->gen_tps;
    free(toks);
    session_close(&s);
    return rc;
}

static int parse_bench(int argc, char **argv, struct bench_opts *o)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},      {"prompt-tokens", required_argument, 0, 'p'},
        {"gen-tokens", required_argument, 0, 'g'}, {"repeat", required_argument, 0, 'r'},
        {"depth", required_argument, 0, 'd'},      {"json", no_argument, 0, 'j'},
        {"breakdown", no_argument, 0, 'B'},        {"db", required_argument, 0, 'D'},
        {"no-record", no_argument, 0, 'N'},        {"run-dir", required_argument, 0, 'R'},
        {"streams", required_argument, 0, 'S'},    {"probe-mib", required_argument, 0, 'P'},
        SESSION_LONG_OPTS, {0, 0, 0, 0},
    };
    memset(o, 0, sizeof *o);
    o->prompt_tokens = 512;
    o->gen_tokens = 128;
    o->repeat = 3;
    o->streams = 1;
    o->probe_mib = BENCH_PROBE_MIB;
    o->record = true;
    session_opts_default(&o->so);
    int c, r;
    bool streams_given = false;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if ((r = session_opts_parse(&o->so, c, optarg)) != 0) {
            if (r < 0)
                return -1;
            continue;
        }
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'p': if (arg_int("--prompt-tokens", optarg, 1, 1 << 20, &o->prompt_tokens) < 0) return -1; break;
        case 'g': if (arg_int("--gen-tokens", optarg, 1, 1 << 20, &o->gen_tokens) < 0) return -1; break;
        case 'r': if (arg_int("--repeat", optarg, 1, 1000, &o->repeat) < 0) return -1; break;
        case 'd': if (arg_int("--depth", optarg, 0, 1 << 20, &o->depth) < 0) return -1; break;
        case 'j': o->json = true; break;
        case 'B': o->breakdown = true; break;
        case 'D': o->db = optarg; break;
        case 'N': o->record = false; break;
        case 'P': if (arg_int("--probe-mib", optarg, 16, 1 << 20, &o->probe_mib) < 0) return -1; break;
        case 'R': o->run_dir = optarg; break;
        case 'S': if (arg_int("--streams", optarg, 1, 256, &o->streams) < 0) return -1; streams_given = true; break;
        default: return -1;
        }
    }
    const char *usage =
        "usage: bitnetctl bench --model FILE [--prompt-tokens 512] [--gen-tokens 128] "
        "[--threads N] [--repeat R] [--depth D] [--lm-head f16|q8] [--kv-type f32|f16|q8] "
        "[--breakdown] [--probe-mib 1024] [--json] [--db PATH | --no-record]\n"
        "       bitnetctl bench [--run-dir DIR] [--streams S] [--prompt-tokens N] [--gen-tokens N] "
        "[--repeat R] [--probe-mib 1024] [--json] [--db PATH | --no-record]   (through a running bitnetd)\n"
        "       bitnetctl bench history|show|compare|check|plot|sweep ... (bitnetctl --help)\n";
    if (optind != argc) {
        fprintf(stderr, "bitnetctl bench: unexpected argument '%s'\n%s", argv[optind], usage);
        return -1;
    }
    if (o->model && (o->run_dir || streams_given)) {
        fprintf(stderr, "bitnetctl bench: --run-dir and --streams are for a daemon run (no --model)\n%s", usage);
        return -1;
    }
    struct session_opts defaults;
    session_opts_default(&defaults);
    if (!o->model && (o->so.threads != defaults.threads || o->so.n_batch != defaults.n_batch ||
                      o->so.lm_head_q8 != defaults.lm_head_q8 || o->so.kv_type != defaults.kv_type)) {
        fprintf(stderr, "bitnetctl bench: --threads, --batch, --lm-head and --kv-type are the daemon's "
                        "settings when benching through it (bitnetd options), or need --model\n%s", usage);
        return -1;
    }
    if (!o->model && (o->depth || o->breakdown)) {
        fprintf(stderr, "bitnetctl bench: --depth and --breakdown need --model (in-process)\n%s", usage);
        return -1;
    }
    return 0;
}

/* The mean of v[lo, hi): one repeat's probed bandwidth, from its chunks. */
static double mean_of(const double *v, int lo, int hi)
{
    double sum = 0;
    for (int i = lo; i < hi; i++)
        sum += v[i];
    return hi > lo ? sum / (hi - lo) : 0.0;
}

int bench_inprocess(const struct bench_opts *o, json_object **result, json_object **receipt_out)
{
    int threads = o->so.threads > 0 ? o->so.threads : cpus_available();
    struct cpu_features f;
    cpu_features_detect(&f);
    struct errbuf e = {{0}};
    if (!o->json && !o->quiet)
        fprintf(stderr, "bench: read bandwidth measured with %d threads before every %d decoded "
                        "tokens\n", threads, DECODE_CHUNK);
    struct read_probe_server probe = {0};
    if (read_probe_server_start(&probe, (size_t)o->probe_mib << 20, threads, &e) < 0) {
        fprintf(stderr, "bitnetctl bench: %s\n", e.msg);
        return -1;
    }
    int n = (int)o->repeat;
    struct chunk_log log = {.cap = n * (int)((o->gen_tokens + DECODE_CHUNK - 1) / DECODE_CHUNK)};
    log.gbps = calloc((size_t)log.cap, sizeof(double));
    log.ratio = calloc((size_t)log.cap, sizeof(double));
    log.mem_ratio = calloc((size_t)log.cap, sizeof(double));
    double *load = calloc((size_t)n, sizeof(double)), *pp = calloc((size_t)n, sizeof(double));
    double *tg = calloc((size_t)n, sizeof(double)), *ttft = calloc((size_t)n, sizeof(double));
    double *tg0 = calloc((size_t)n, sizeof(double)), *tpg = calloc((size_t)n, sizeof(double));
    double bytes_per_token = 0;
    char kernel[32] = "";
    struct decode_breakdown bd = {0};
    json_object *receipt = bench_receipt_new("in-process");
    int rc = load && pp && tg && ttft && tg0 && tpg && log.gbps && log.ratio && log.mem_ratio ? 0 : -1;
    if (rc < 0)
        fprintf(stderr, "bitnetctl bench: out of memory\n");
    for (int i = 0; rc == 0 && i < n; i++) {
        struct bench_run r;
        int chunk0 = log.n;
        if (one_run(o, (uint64_t)i + 1, &r, &bytes_per_token, kernel, sizeof kernel, &probe,
                    &log, o->breakdown ? &bd : NULL, receipt) < 0) {
            rc = -1;
            break;
        }
        load[i] = r.load_s, pp[i] = r.prompt_tps, tg[i] = r.gen_tps, ttft[i] = r.ttft_s;
        tg0[i] = r.depth0_tps;
        /* against the bandwidth probed during this repeat: a figure other hosts can match */
        double gbps = mean_of(log.gbps, chunk0, log.n);
        tpg[i] = gbps > 0 ? r.gen_tps / gbps : 0.0;
        if (!o->json && !o->quiet)
            fprintf(stderr, "run %d/%d: load %.2fs, prompt %.1f tok/s, generated %.2f tok/s\n", i + 1,
                    n, r.load_s, r.prompt_tps, r.gen_tps);
        if (!o->json && !o->quiet && o->depth > 0)
            fprintf(stderr, "run %d/%d: generated at depth 0, interleaved: %.2f tok/s\n", i + 1,
                    n, r.depth0_tps);
    }
    if (rc == 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        double peak_rss = (double)ru.ru_maxrss * 1024.0;
        /* every repeat as it came, before median() sorts the arrays */
        bench_receipt_add_figure(receipt, "generated_tps", tg, n);
        bench_receipt_add_figure(receipt, "prompt_tps", pp, n);
        bench_receipt_add_figure(receipt, "ttft_s", ttft, n);
        bench_receipt_add_figure(receipt, "load_s", load, n);
        if (o->depth > 0)
            bench_receipt_add_figure(receipt, "depth0_tps", tg0, n);
        bench_receipt_add_figure(receipt, "generated_tps_per_gbps", tpg, n);
        bench_receipt_set_probe(receipt, threads, (size_t)o->probe_mib << 20, BENCH_PROBE_PASSES);
        bench_receipt_add_figure(receipt, "read_gbps", log.gbps, log.n);
        bench_receipt_add_figure(receipt, "roofline_ratio", log.ratio, log.n);
        bench_receipt_add_figure(receipt, "memory_ratio", log.mem_ratio, log.n);
        bench_receipt_add_figure(receipt, "peak_rss_bytes", &peak_rss, 1);
        json_object *repeats = json_object_get(bench_json_at(receipt, "figures"));
        double gen = median(tg, n), prompt = median(pp, n), gen0 = median(tg0, n);
        double read_gbps = median(log.gbps, log.n), ratio = median(log.ratio, log.n);
        double ratio_lo = log.ratio[0], ratio_hi = log.ratio[log.n - 1]; /* sorted by median */
        double mem_ratio = median(log.mem_ratio, log.n);
        json_object *j = json_object_new_object();
        json_object_object_add(j, "model", json_object_new_string(o->model));
        json_object_object_add(j, "cpu", json_object_new_string(f.brand));
        json_object_object_add(j, "kernel", json_object_new_string(kernel));
        json_object_object_add(j, "threads", json_object_new_int(threads));
        json_object_object_add(j, "lm_head", json_object_new_string(o->so.lm_head_q8 ? "q8" : "native"));
        json_object_object_add(j, "kv_type", json_object_new_string(kv_type_name(o->so.kv_type)));
        json_object_object_add(j, "prompt_tokens", json_object_new_int((int)o->prompt_tokens));
        json_object_object_add(j, "gen_tokens", json_object_new_int((int)o->gen_tokens));
        json_object_object_add(j, "depth", json_object_new_int((int)o->depth));
        json_object_object_add(j, "repeat", json_object_new_int(n));
        json_object_object_add(j, "prompt_tps", json_object_new_double(prompt));
        json_object_object_add(j, "generated_tps", json_object_new_double(gen));
        json_object_object_add(j, "ttft_s", json_object_new_double(median(ttft, n)));
        json_object_object_add(j, "load_s", json_object_new_double(median(load, n)));
        json_object_object_add(j, "peak_rss_bytes", json_object_new_int64((int64_t)peak_rss));
        json_object_object_add(j, "read_gbps", json_object_new_double(read_gbps));
        json_object_object_add(j, "weight_bytes_per_token", json_object_new_int64((int64_t)bytes_per_token));
        json_object_object_add(j, "roofline_ratio", json_object_new_double(ratio));
        json_object_object_add(j, "roofline_ratio_min", json_object_new_double(ratio_lo));
        json_object_object_add(j, "roofline_ratio_max", json_object_new_double(ratio_hi));
        json_object_object_add(j, "roofline_chunks", json_object_new_int(log.n));
        json_object_object_add(j, "memory_ratio", json_object_new_double(mem_ratio));
        json_object_object_add(j, "generated_tps_per_gbps", json_object_new_double(median(tpg, n)));
        if (o->depth > 0) {
            json_object_object_add(j, "depth0_tps", json_object_new_double(gen0));
            json_object_object_add(j, "depth_ratio", json_object_new_double(gen / gen0));
        }
        if (o->breakdown)
            breakdown_json(&bd, j);
        json_object_object_add(j, "repeats", repeats);
        if (!o->json && !o->quiet) {
            printf("model            %s\n", o->model);
            printf("cpu / kernel     %s / %s, %d threads, lm-head %s, kv %s\n", f.brand, kernel,
                   threads, o->so.lm_head_q8 ? "q8" : "native", kv_type_name(o->so.kv_type));
            printf("prompt           %.1f tok/s (%ld tokens, depth %ld)\n", prompt, o->prompt_tokens, o->depth);
            printf("generated        %.2f tok/s (%ld tokens)\n", gen, o->gen_tokens);
            if (o->depth > 0)
                printf("  at depth 0     %.2f tok/s, interleaved with the above: ratio %.3f\n",
                       gen0, gen / gen0);
            printf("time to first    %.3f s\n", median(ttft, n));
            printf("load             %.3f s\n", median(load, n));
            printf("peak RSS         %.0f MiB\n", peak_rss / 1048576.0);
            printf("read bandwidth   %.1f GB/s\n", read_gbps);
            printf("roofline ratio   %.3f (%.2f GB of weights per token -> %.1f tok/s bound)\n",
                   ratio, bytes_per_token / 1e9, read_gbps * 1e9 / bytes_per_token);
            printf("                 median of %d chunks of %d tokens, each against the read "
                   "bandwidth just before it; range %.3f - %.3f\n", log.n, DECODE_CHUNK,
                   ratio_lo, ratio_hi);
            printf("memory ratio     %.3f (the weights and the KV cache read per token)\n",
                   mem_ratio);
            if (o->breakdown)
                breakdown_print(&bd, stdout);
            printf("(medians of %d runs)\n", n);
        }
        /* what makes the run comparable: where it ran and with what */
        json_object_object_add(receipt, "kernel_set", json_object_new_string(kernel));
        json_object *pl = json_object_new_object();
        json_object_object_add(pl, "workers", json_object_new_int(0));
        json_object_object_add(pl, "threads", json_object_new_int(threads));
        json_object_object_add(receipt, "placement", pl);
        json_object *params = json_object_new_object();
        json_object_object_add(params, "prompt_tokens", json_object_new_int((int)o->prompt_tokens));
        json_object_object_add(params, "gen_tokens", json_object_new_int((int)o->gen_tokens));
        json_object_object_add(params, "repeat", json_object_new_int(n));
        json_object_object_add(params, "depth", json_object_new_int((int)o->depth));
        json_object_object_add(params, "kv_type", json_object_new_string(kv_type_name(o->so.kv_type)));
        json_object_object_add(params, "lm_head", json_object_new_string(o->so.lm_head_q8 ? "q8" : "native"));
        json_object_object_add(params, "batch", json_object_new_int(o->so.n_batch));
        json_object_object_add(params, "breakdown", json_object_new_boolean(o->breakdown));
        json_object_object_add(params, "probe_mib", json_object_new_int((int)o->probe_mib));
        json_object_object_add(receipt, "params", params);
        json_object_object_add(receipt, "result", json_object_get(j));
        bench_receipt_finish(receipt);
        *result = j;
        *receipt_out = receipt;
    } else {
        json_object_put(receipt);
    }
    free(load);
    free(pp);
    free(tg);
    free(ttft);
    free(tg0);
    free(tpg);
    free(log.gbps);
    free(log.ratio);
    free(log.mem_ratio);
    read_probe_server_stop(&probe);
    return rc;
}

int bench_db_path(const char *db, char *out, size_t cap)
{
    struct errbuf e = {{0}};
    if (db) {
        if (snprintf(out, cap, "%s", db) >= (int)cap) {
            fprintf(stderr, "bitnetctl bench: %s: path too long\n", db);
            return -1;
        }
        return 0;
    }
    if (bench_store_default_path(out, cap, &e) < 0) {
        fprintf(stderr, "bitnetctl bench: %s\n", e.msg);
        return -1;
    }
    return 0;
}

int bench_record(const struct bench_opts *o, json_object *receipt, int64_t *run_id)
{
    char path[4096];
    if (bench_db_path(o->db, path, sizeof path) < 0)
        return -1;
    struct bench_store st;
    struct errbuf e = {{0}};
    if (bench_store_open(&st, path, &e) < 0 || bench_store_insert(&st, receipt, run_id, &e) < 0) {
        fprintf(stderr, "bitnetctl bench: %s\n", e.msg);
        bench_store_close(&st);
        return -1;
    }
    bench_store_close(&st);
    if (!o->quiet)
        fprintf(stderr, "bench: recorded as run %lld in %s\n", (long long)*run_id, path);
    return 0;
}

int cmd_bench(int argc, char **argv)
{
    struct bench_opts o;
    if (parse_bench(argc, argv, &o) < 0)
        return 2;
    json_object *result = NULL, *receipt = NULL;
    int rc = o.model ? bench_inprocess(&o, &result, &receipt) : bench_daemon(&o, &result, &receipt);
    if (rc < 0)
        return 1;
    int64_t run_id = 0;
    /* a run that cannot be recorded still prints its figures, but fails: it was asked for */
    if (o.record && bench_record(&o, receipt, &run_id) < 0)
        rc = -1;
    if (run_id)
        json_object_object_add(result, "run_id", json_object_new_int64(run_id));
    if (o.json)
        puts(json_object_to_json_string_ext(result, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(result);
    json_object_put(receipt);
    return rc < 0 ? 1 : 0;
}

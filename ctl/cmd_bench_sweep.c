/* bitnetctl bench sweep: one bench run per combination of the swept settings (threads;
 * workers and streams through a daemon it starts for each placement), every run stored
 * under one sweep id, and a chart of tokens/s against the swept setting. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/args.h"
#include "ctl/bench_chart.h"
#include "ctl/bench_compare.h"
#include "ctl/bench_receipt.h"
#include "ctl/bench_run.h"
#include "ctl/bench_store.h"
#include "ctl/commands.h"

#define SWEEP_MAX_VALUES 32

struct int_list {
    long v[SWEEP_MAX_VALUES];
    int n;
};

/* "1,2,4" */
static int parse_list(const char *opt, const char *s, long max, struct int_list *out)
{
    out->n = 0;
    char buf[256];
    if (strlen(s) >= sizeof buf) {
        fprintf(stderr, "bitnetctl bench sweep: %s: list too long\n", opt);
        return -1;
    }
    strcpy(buf, s);
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (out->n == SWEEP_MAX_VALUES) {
            fprintf(stderr, "bitnetctl bench sweep: %s: at most %d values\n", opt, SWEEP_MAX_VALUES);
            return -1;
        }
        if (arg_int(opt, t, 1, max, &out->v[out->n]) < 0)
            return -1;
        out->n++;
    }
    if (out->n == 0) {
        fprintf(stderr, "bitnetctl bench sweep: %s: expected values like 1,2\n", opt);
        return -1;
    }
    return 0;
}

/* Appends " name=1,2,4" to buf, cut short rather than overflowing. */
static void append_list(char *buf, size_t cap, const char *name, const struct int_list *l)
{
    size_t len = strlen(buf);
    for (int i = 0; i < l->n && len + 1 < cap; i++) {
        if (i == 0)
            snprintf(buf + len, cap - len, " %s=%ld", name, l->v[i]);
        else
            snprintf(buf + len, cap - len, ",%ld", l->v[i]);
        len = strlen(buf);
    }
}

struct sweep_opts {
    struct bench_opts bench;
    struct int_list threads, workers, streams;
    bool through_daemon;   /* --workers given */
    const char *out;
};

static int parse_sweep(int argc, char **argv, struct sweep_opts *o)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},      {"prompt-tokens", required_argument, 0, 'p'},
        {"gen-tokens", required_argument, 0, 'g'}, {"repeat", required_argument, 0, 'r'},
        {"json", no_argument, 0, 'j'},             {"db", required_argument, 0, 'D'},
        {"workers", required_argument, 0, 'W'},    {"streams", required_argument, 0, 'S'},
        {"out", required_argument, 0, 'o'},        {"probe-mib", required_argument, 0, 'P'},
        SESSION_LONG_OPTS, {0, 0, 0, 0},
    };
    const char *usage = "usage: bitnetctl bench sweep --model FILE --threads 1,2 [--workers 1,2 [--streams 1,8]] "
                        "[--prompt-tokens N] [--gen-tokens N] [--repeat R] [--kv-type T] [--lm-head H] "
                        "[--probe-mib 1024] [--out FILE.svg] [--db PATH] [--json]\n";
    memset(o, 0, sizeof *o);
    struct bench_opts *b = &o->bench;
    b->prompt_tokens = 64;
    b->gen_tokens = 32;
    b->repeat = 3;
    b->probe_mib = BENCH_PROBE_MIB;
    b->record = true;
    b->quiet = true;
    session_opts_default(&b->so);
    o->threads.n = o->workers.n = o->streams.n = 0;
    int c, r;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == SESSION_OPT_THREADS) {
            if (parse_list("--threads", optarg, 4096, &o->threads) < 0)
                return -1;
            continue;
        }
        if ((r = session_opts_parse(&b->so, c, optarg)) != 0) {
            if (r < 0)
                return -1;
            continue;
        }
        switch (c) {
        case 'm': b->model = optarg; break;
        case 'p': if (arg_int("--prompt-tokens", optarg, 1, 1 << 20, &b->prompt_tokens) < 0) return -1; break;
        case 'g': if (arg_int("--gen-tokens", optarg, 1, 1 << 20, &b->gen_tokens) < 0) return -1; break;
        case 'r': if (arg_int("--repeat", optarg, 1, 1000, &b->repeat) < 0) return -1; break;
        case 'j': b->json = true; break;
        case 'D': b->db = optarg; break;
        case 'W': if (parse_list("--workers", optarg, 64, &o->workers) < 0) return -1; break;
        case 'S': if (parse_list("--streams", optarg, 256, &o->streams) < 0) return -1; break;
        case 'o': o->out = optarg; break;
        case 'P': if (arg_int("--probe-mib", optarg, 16, 1 << 20, &b->probe_mib) < 0) return -1; break;
        default: fputs(usage, stderr); return -1;
        }
    }
    if (optind != argc || !b->model || o->threads.n == 0) {
        fprintf(stderr, "bitnetctl bench sweep: %s\n%s",
                optind != argc ? "unexpected argument" : !b->model ? "--model FILE is required"
                                                                   : "--threads 1,2,... is required",
                usage);
        return -1;
    }
    o->through_daemon = o->workers.n > 0;
    if (o->streams.n && !o->through_daemon) {
        fprintf(stderr, "bitnetctl bench sweep: --streams needs --workers (streams go through a daemon)\n%s", usage);
        return -1;
    }
    if (!o->streams.n) {
        o->streams.v[0] = 1;
        o->streams.n = 1;
    }
    if (!o->through_daemon) {
        o->workers.v[0] = 0;
        o->workers.n = 1;
    }
    return 0;
}

/* The setting on the chart's x axis: the first of threads, workers, streams given more
 * than one value (threads when none is). */
static const char *swept_setting(const struct sweep_opts *o)
{
    if (o->threads.n > 1)
        return "threads";
    if (o->workers.n > 1)
        return "workers";
    if (o->streams.n > 1)
        return "streams";
    return "threads";
}

/* One combination: bench it and store the receipt under the sweep. */
static int sweep_point(const struct sweep_opts *o, struct bench_store *st, int64_t sweep_id,
                       const char *setting, long threads, long workers, long streams,
                       json_object *summary)
{
    struct bench_opts b = o->bench;
    b.so.threads = (int)threads;
    b.streams = streams;
    json_object *result = NULL, *receipt = NULL;
    int rc = o->through_daemon ? bench_daemon(&b, &result, &receipt) : bench_inprocess(&b, &result, &receipt);
    if (rc < 0)
        return -1;
    long value = strcmp(setting, "threads") == 0 ? threads : strcmp(setting, "workers") == 0 ? workers : streams;
    char series[128];
    if (!o->through_daemon)
        snprintf(series, sizeof series, "in-process");
    else if (strcmp(setting, "threads") == 0)
        snprintf(series, sizeof series, "%ld workers, %ld streams", workers, streams);
    else if (strcmp(setting, "workers") == 0)
        snprintf(series, sizeof series, "%ld threads/worker, %ld streams", threads, streams);
    else
        snprintf(series, sizeof series, "%ld workers x %ld threads", workers, threads);
    json_object *sw = json_object_new_object();
    json_object_object_add(sw, "id", json_object_new_int64(sweep_id));
    json_object_object_add(sw, "setting", json_object_new_string(setting));
    json_object_object_add(sw, "value", json_object_new_int64(value));
    json_object_object_add(sw, "series", json_object_new_string(series));
    json_object *set = json_object_new_object();
    json_object_object_add(set, "threads", json_object_new_int64(threads));
    if (o->through_daemon) {
        json_object_object_add(set, "workers", json_object_new_int64(workers));
        json_object_object_add(set, "streams", json_object_new_int64(streams));
    }
    json_object_object_add(sw, "settings", set);
    json_object_object_add(receipt, "sweep", sw);
    if (o->through_daemon) {
        /* the daemon does not report these; the sweep started it with them */
        json_object *params = bench_json_at(receipt, "params");
        json_object_object_add(params, "kv_type", json_object_new_string(kv_type_name(b.so.kv_type)));
        json_object_object_add(params, "lm_head", json_object_new_string(b.so.lm_head_q8 ? "q8" : "native"));
        bench_receipt_finish(receipt);
    }
    struct errbuf e = {{0}};
    int64_t run_id;
    if (bench_store_insert(st, receipt, &run_id, &e) < 0) {
        fprintf(stderr, "bitnetctl bench sweep: %s\n", e.msg);
        json_object_put(result);
        json_object_put(receipt);
        return -1;
    }
    struct figure_stats s = {0};
    bench_figure_stats(receipt, "generated_tps", &s);
    if (!b.json)
        printf("run %-5lld %s %-4ld %-32s generated %8.2f tok/s (%.2f - %.2f)\n",
               (long long)run_id, setting, value, series, s.median, s.min, s.max);
    json_object *row = json_object_new_object();
    json_object_object_add(row, "run_id", json_object_new_int64(run_id));
    json_object_object_add(row, "settings", json_object_get(set));
    json_object_object_add(row, "generated_tps", bench_figure_stats_json(&s));
    json_object_array_add(summary, row);
    json_object_put(result);
    json_object_put(receipt);
    return 0;
}

static int write_sweep_chart(const struct sweep_opts *o, struct bench_store *st, int64_t sweep_id,
                             const char *setting, const char *path)
{
    struct bench_query q = {.sweep_id = sweep_id};
    json_object *runs;
    struct errbuf e = {{0}};
    if (bench_store_list(st, &q, &runs, &e) < 0) {
        fprintf(stderr, "bitnetctl bench sweep: %s\n", e.msg);
        return -1;
    }
    struct plot_series *series;
    int n;
    if (bench_history_series(runs, "generated_tps", true, &series, &n) < 0) {
        fprintf(stderr, "bitnetctl bench sweep: out of memory\n");
        json_object_put(runs);
        return -1;
    }
    char title[256], xlabel[64];
    snprintf(title, sizeof title, "sweep %lld: generated tokens/s by %s (%s)", (long long)sweep_id, setting,
             o->through_daemon ? "through bitnetd" : "in-process");
    snprintf(xlabel, sizeof xlabel, "%s%s", setting,
             strcmp(setting, "threads") == 0 ? (o->through_daemon ? " per worker" : "") : "");
    struct plot_axes axes = {.title = title, .x_label = xlabel,
                             .y_label = o->through_daemon ? "generated tok/s (all streams)" : "generated tok/s",
                             .x_is_time = false};
    int rc = bench_write_chart(path, &axes, series, n);
    bench_series_free(series, n);
    json_object_put(runs);
    return rc;
}

int cmd_bench_sweep(int argc, char **argv)
{
    struct sweep_opts o;
    if (parse_sweep(argc, argv, &o) < 0)
        return 2;
    char path[4096];
    struct bench_store st;
    struct errbuf e = {{0}};
    if (bench_db_path(o.bench.db, path, sizeof path) < 0)
        return 1;
    if (bench_store_open(&st, path, &e) < 0) {
        fprintf(stderr, "bitnetctl bench sweep: %s\n", e.msg);
        return 1;
    }
    const char *setting = swept_setting(&o);
    char settings[1024];
    snprintf(settings, sizeof settings, "%s model=%s", o.through_daemon ? "daemon" : "in-process", o.bench.model);
    append_list(settings, sizeof settings, "threads", &o.threads);
    if (o.through_daemon) {
        append_list(settings, sizeof settings, "workers", &o.workers);
        append_list(settings, sizeof settings, "streams", &o.streams);
    }
    int64_t sweep_id;
    if (bench_store_new_sweep(&st, settings, &sweep_id, &e) < 0) {
        fprintf(stderr, "bitnetctl bench sweep: %s\n", e.msg);
        bench_store_close(&st);
        return 1;
    }
    if (!o.bench.json)
        printf("sweep %lld in %s: generated tok/s by %s\n", (long long)sweep_id, path, setting);
    json_object *summary = json_object_new_array();
    int rc = 0;
    /* the daemon needs room for the prompt, the reply and the BOS of every stream */
    int ctx = (int)(o.bench.prompt_tokens + o.bench.gen_tokens + 8);
    for (int wi = 0; rc == 0 && wi < o.workers.n; wi++)
        for (int ti = 0; rc == 0 && ti < o.threads.n && !bench_daemon_interrupted(); ti++) {
            struct bench_daemon_proc d = {0};
            if (o.through_daemon) {
                if (bench_daemon_start(&d, o.bench.model, (int)o.workers.v[wi], (int)o.threads.v[ti], &o.bench.so,
                                       ctx, &e) < 0) {
                    fprintf(stderr, "bitnetctl bench sweep: %s\n", e.msg);
                    rc = -1;
                    break;
                }
                o.bench.run_dir = d.run_dir;
            }
            for (int si = 0; rc == 0 && si < o.streams.n && !bench_daemon_interrupted(); si++)
                rc = sweep_point(&o, &st, sweep_id, setting, o.threads.v[ti], o.workers.v[wi],
                                 o.streams.v[si], summary);
            if (o.through_daemon)
                bench_daemon_stop(&d);
        }
    char chart[4096];
    if (o.out)
        snprintf(chart, sizeof chart, "%s", o.out);
    else
        snprintf(chart, sizeof chart, "bench-sweep-%lld.svg", (long long)sweep_id);
    /* the runs made so far are stored either way; the chart shows what there is */
    if (json_object_array_length(summary) > 0 && write_sweep_chart(&o, &st, sweep_id, setting, chart) < 0)
        rc = -1;
    bench_store_close(&st);
    if (o.bench.json) {
        json_object *j = json_object_new_object();
        json_object_object_add(j, "sweep_id", json_object_new_int64(sweep_id));
        json_object_object_add(j, "setting", json_object_new_string(setting));
        json_object_object_add(j, "chart", json_object_new_string(chart));
        json_object_object_add(j, "runs", json_object_get(summary));
        json_object_object_add(j, "complete", json_object_new_boolean(rc == 0));
        puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(j);
    } else if (json_object_array_length(summary) > 0) {
        printf("chart: %s\n", chart);
    }
    json_object_put(summary);
    int sig = bench_daemon_interrupted();
    if (sig) {
        fprintf(stderr, "bitnetctl bench sweep: stopped by signal %d; the runs that finished are "
                        "stored under sweep %lld\n", sig, (long long)sweep_id);
        return 128 + sig;
    }
    return rc < 0 ? 1 : 0;
}

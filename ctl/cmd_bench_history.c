/* bitnetctl bench history | show | compare | check | plot | import: reading the benchmark
 * history (bench_store.h). Every command takes --db PATH and --json. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/args.h"
#include "ctl/bench_chart.h"
#include "ctl/bench_compare.h"
#include "ctl/bench_plot.h"
#include "ctl/bench_receipt.h"
#include "ctl/bench_run.h"
#include "ctl/bench_store.h"
#include "ctl/commands.h"

enum {
    OPT_DB = 1 << 0, OPT_JSON = 1 << 1, OPT_MODEL = 1 << 2, OPT_HOST = 1 << 3,
    OPT_LAST = 1 << 4, OPT_BASELINE = 1 << 5, OPT_MAX_REG = 1 << 6, OPT_METRIC = 1 << 7,
    OPT_OUT = 1 << 8, OPT_SWEEP = 1 << 9,
};

struct history_opts {
    const char *db, *model, *host, *baseline, *metric, *out;
    bool json;
    long last, sweep;
    double max_regression;   /* a fraction */
    bool max_regression_given;
    char **args;             /* the positional arguments */
    int n_args;
};

/* "5%" or "0.05" */
static int parse_fraction(const char *opt, const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    bool percent = *end == '%';
    if (percent)
        end++;
    if (errno || end == s || *end || !isfinite(v) || v < 0) {
        fprintf(stderr, "bitnetctl bench: %s: expected a percentage like 5%% or a fraction like "
                        "0.05, got '%s'\n", opt, s);
        return -1;
    }
    *out = percent ? v / 100.0 : v;
    return 0;
}

static int parse_history_opts(int argc, char **argv, unsigned allowed, int min_args, int max_args,
                              const char *usage, struct history_opts *o)
{
    static const struct option opts[] = {
        {"db", required_argument, 0, OPT_DB},          {"json", no_argument, 0, OPT_JSON},
        {"model", required_argument, 0, OPT_MODEL},    {"host", required_argument, 0, OPT_HOST},
        {"last", required_argument, 0, OPT_LAST},      {"baseline", required_argument, 0, OPT_BASELINE},
        {"max-regression", required_argument, 0, OPT_MAX_REG},
        {"metric", required_argument, 0, OPT_METRIC},  {"out", required_argument, 0, OPT_OUT},
        {"sweep", required_argument, 0, OPT_SWEEP},    {0, 0, 0, 0},
    };
    memset(o, 0, sizeof *o);
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == '?' || !(allowed & (unsigned)c)) {
            for (const struct option *op = opts; c != '?' && op->name; op++)
                if (op->val == c)
                    fprintf(stderr, "bitnetctl bench %s: --%s does not apply\n", argv[0], op->name);
            fprintf(stderr, "usage: bitnetctl bench %s\n", usage);
            return -1;
        }
        switch (c) {
        case OPT_DB: o->db = optarg; break;
        case OPT_JSON: o->json = true; break;
        case OPT_MODEL: o->model = optarg; break;
        case OPT_HOST: o->host = optarg; break;
        case OPT_LAST: if (arg_int("--last", optarg, 1, 1000000, &o->last) < 0) return -1; break;
        case OPT_BASELINE: o->baseline = optarg; break;
        case OPT_MAX_REG:
            if (parse_fraction("--max-regression", optarg, &o->max_regression) < 0)
                return -1;
            o->max_regression_given = true;
            break;
        case OPT_METRIC: o->metric = optarg; break;
        case OPT_OUT: o->out = optarg; break;
        case OPT_SWEEP: if (arg_int("--sweep", optarg, 1, 1L << 40, &o->sweep) < 0) return -1; break;
        }
    }
    o->args = argv + optind;
    o->n_args = argc - optind;
    if (o->n_args < min_args || o->n_args > max_args) {
        fprintf(stderr, "usage: bitnetctl bench %s\n", usage);
        return -1;
    }
    return 0;
}

static int open_store(const struct history_opts *o, struct bench_store *st)
{
    char path[4096];
    struct errbuf e = {{0}};
    if (bench_db_path(o->db, path, sizeof path) < 0)
        return -1;
    if (bench_store_open(st, path, &e) < 0) {
        fprintf(stderr, "bitnetctl bench: %s\n", e.msg);
        return -1;
    }
    return 0;
}

static void print_json(json_object *j)
{
    puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
}

/* A run's summary as history lists it: identity, placement, and each figure's median
 * and range. */
static json_object *run_summary(json_object *r)
{
    json_object *j = json_object_new_object();
    char label[256];
    bench_receipt_placement_label(r, label, sizeof label);
    json_object_object_add(j, "run_id", json_object_new_int64((int64_t)bench_json_num(r, "run_id", 0)));
    json_object_object_add(j, "time", json_object_new_string(bench_json_str(r, "time", "")));
    json_object_object_add(j, "host", json_object_new_string(bench_json_str(r, "host.name", "")));
    json_object_object_add(j, "model_id", json_object_new_string(bench_json_str(r, "model.id", "")));
    json_object_object_add(j, "mode", json_object_new_string(bench_json_str(r, "mode", "")));
    json_object_object_add(j, "placement", json_object_new_string(label));
    json_object_object_add(j, "kernel_set", json_object_new_string(bench_json_str(r, "kernel_set", "")));
    json_object_object_add(j, "build_commit", json_object_new_string(bench_json_str(r, "build.commit", "")));
    json_object_object_add(j, "config", json_object_new_string(bench_json_str(r, "config", "")));
    json_object *sweep = bench_json_at(r, "sweep.id");
    if (sweep)
        json_object_object_add(j, "sweep_id", json_object_get(sweep));
    json_object *figs = json_object_new_object();
    for (int i = 0; i < bench_n_figures; i++) {
        struct figure_stats s;
        if (bench_figure_stats(r, bench_figures[i].name, &s) == 0)
            json_object_object_add(figs, bench_figures[i].name, bench_figure_stats_json(&s));
    }
    json_object_object_add(j, "figures", figs);
    return j;
}

static int cmd_history(int argc, char **argv)
{
    struct history_opts o;
    if (parse_history_opts(argc, argv, OPT_DB | OPT_JSON | OPT_MODEL | OPT_HOST | OPT_LAST | OPT_SWEEP,
                           0, 0, "history [--model ID] [--host H] [--last N] [--sweep ID] [--db PATH] [--json]",
                           &o) < 0)
        return 2;
    struct bench_store st;
    if (open_store(&o, &st) < 0)
        return 1;
    struct bench_query q = {.model = o.model, .host = o.host, .last = (int)o.last, .sweep_id = o.sweep};
    json_object *runs;
    struct errbuf e = {{0}};
    if (bench_store_list(&st, &q, &runs, &e) < 0) {
        fprintf(stderr, "bitnetctl bench history: %s\n", e.msg);
        bench_store_close(&st);
        return 1;
    }
    bench_store_close(&st);
    size_t n = json_object_array_length(runs);
    if (o.json) {
        json_object *arr = json_object_new_array();
        for (size_t i = 0; i < n; i++)
            json_object_array_add(arr, run_summary(json_object_array_get_idx(runs, i)));
        print_json(arr);
        json_object_put(arr);
    } else {
        printf("%-5s %-20s %-12s %-12s %-36s %-8s %-18s %s\n", "run", "time (UTC)", "host", "model",
               "placement", "kernel", "commit", "generated tok/s (min - max)");
        for (size_t i = 0; i < n; i++) {
            json_object *r = json_object_array_get_idx(runs, i);
            char label[256];
            bench_receipt_placement_label(r, label, sizeof label);
            struct figure_stats s = {0};
            bool have = bench_figure_stats(r, "generated_tps", &s) == 0;
            printf("%-5lld %-20s %-12.12s %-12.12s %-36s %-8s %-18.18s ", (long long)bench_json_num(r, "run_id", 0),
                   bench_json_str(r, "time", ""), bench_json_str(r, "host.name", ""),
                   bench_json_str(r, "model.id", ""), label, bench_json_str(r, "kernel_set", ""),
                   bench_json_str(r, "build.commit", ""));
            if (have)
                printf("%.2f (%.2f - %.2f, %d)\n", s.median, s.min, s.max, s.n);
            else
                printf("-\n");
        }
        if (n == 0)
            printf("(no runs recorded%s)\n", o.model || o.host || o.sweep ? " that match" : "");
    }
    json_object_put(runs);
    return 0;
}

/* RUN as a number: a run id. */
static int parse_run(const char *cmd, const char *s, int64_t *id)
{
    long v;
    char what[64];
    snprintf(what, sizeof what, "bench %s: RUN", cmd);
    if (arg_int(what, s, 1, 1L << 62, &v) < 0)
        return -1;
    *id = v;
    return 0;
}

/* Loads run id; prints why not. */
static json_object *load_run(struct bench_store *st, const char *cmd, int64_t id)
{
    json_object *r = NULL;
    struct errbuf e = {{0}};
    int rc = bench_store_get(st, id, &r, &e);
    if (rc < 0)
        fprintf(stderr, "bitnetctl bench %s: %s\n", cmd, e.msg);
    else if (rc == 1)
        fprintf(stderr, "bitnetctl bench %s: %s: no run %lld\n", cmd, st->path, (long long)id);
    return rc == 0 ? r : NULL;
}

/* Every figure of a receipt with its statistics and repeats, known or not. */
static void print_figures(json_object *r)
{
    json_object *figs = bench_json_at(r, "figures");
    /* an imported receipt may hold anything here */
    if (!figs || !json_object_is_type(figs, json_type_object))
        return;
    json_object_object_foreach(figs, name, values) {
        struct figure_stats s;
        if (bench_figure_stats(r, name, &s) != 0)
            continue;
        const struct bench_figure_info *fi = bench_figure_find(name);
        char named[64];
        snprintf(named, sizeof named, "%s%s%s%s", name, fi && fi->unit[0] ? " (" : "",
                 fi ? fi->unit : "", fi && fi->unit[0] ? ")" : "");
        printf("%-40s %12.4g %12.4g %12.4g %4d  %s\n", named, s.median, s.min, s.max, s.n,
               json_object_to_json_string_ext(values, JSON_C_TO_STRING_PLAIN));
    }
}

static int cmd_show(int argc, char **argv)
{
    struct history_opts o;
    int64_t id;
    if (parse_history_opts(argc, argv, OPT_DB | OPT_JSON, 1, 1, "show RUN [--db PATH] [--json]", &o) < 0 ||
        parse_run("show", o.args[0], &id) < 0)
        return 2;
    struct bench_store st;
    if (open_store(&o, &st) < 0)
        return 1;
    json_object *r = load_run(&st, "show", id);
    bench_store_close(&st);
    if (!r)
        return 1;
    if (o.json) {
        print_json(r);
    } else {
        char label[256];
        bench_receipt_placement_label(r, label, sizeof label);
        printf("run              %lld (%s)\n", (long long)id, bench_json_str(r, "time", ""));
        printf("build            %s (%s)\n", bench_json_str(r, "build.commit", ""), bench_json_str(r, "build.cflags", ""));
        printf("host             %s: %s, %d of %d cpus, %d NUMA nodes, %s\n", bench_json_str(r, "host.name", ""),
               bench_json_str(r, "host.cpu", ""), (int)bench_json_num(r, "host.cpus_available", 0),
               (int)bench_json_num(r, "host.cpus_online", 0), (int)bench_json_num(r, "host.numa_nodes", 0),
               bench_json_str(r, "host.os", ""));
        json_object *feat = bench_json_at(r, "host.cpu_features");
        printf("cpu features     %s\n", feat ? json_object_to_json_string_ext(feat, JSON_C_TO_STRING_PLAIN) : "");
        printf("model            %s (%s)\n", bench_json_str(r, "model.id", ""), bench_json_str(r, "model.path", ""));
        json_object *shape = bench_json_at(r, "model.shape"), *types = bench_json_at(r, "model.tensor_types");
        if (shape)
            printf("shape            %s\n", json_object_to_json_string_ext(shape, JSON_C_TO_STRING_PLAIN));
        if (types)
            printf("tensor types     %s\n", json_object_to_json_string_ext(types, JSON_C_TO_STRING_PLAIN));
        printf("mode / placement %s, %s, kernel %s\n", bench_json_str(r, "mode", ""), label,
               bench_json_str(r, "kernel_set", ""));
        json_object *params = bench_json_at(r, "params");
        if (params)
            printf("parameters       %s\n", json_object_to_json_string_ext(params, JSON_C_TO_STRING_PLAIN));
        if (bench_json_at(r, "sweep"))
            printf("sweep            %lld (%s = %g)\n", (long long)bench_json_num(r, "sweep.id", 0),
                   bench_json_str(r, "sweep.setting", ""), bench_json_num(r, "sweep.value", 0));
        printf("%-40s %12s %12s %12s %4s  %s\n", "figure", "median", "min", "max", "n", "repeats");
        print_figures(r);
    }
    json_object_put(r);
    return 0;
}

/* The header a comparison prints: which runs, and whether their figures are comparable. */
static void print_cmp_header(json_object *a, json_object *b, bool same_host)
{
    printf("A: run %lld, %s, %s, %s\n", (long long)bench_json_num(a, "run_id", 0), bench_json_str(a, "time", ""),
           bench_json_str(a, "host.name", ""), bench_json_str(a, "build.commit", ""));
    printf("B: run %lld, %s, %s, %s\n", (long long)bench_json_num(b, "run_id", 0), bench_json_str(b, "time", ""),
           bench_json_str(b, "host.name", ""), bench_json_str(b, "build.commit", ""));
    if (!same_host)
        printf("hosts differ: only the ratios to each host's measured bandwidth are compared; "
               "absolute figures are shown but not judged\n");
    if (strcmp(bench_json_str(a, "model.id", ""), bench_json_str(b, "model.id", "")) != 0)
        printf("note: different models\n");
    if (strcmp(bench_json_str(a, "config", ""), bench_json_str(b, "config", "")) != 0)
        printf("note: different configurations:\n  A: %s\n  B: %s\n", bench_json_str(a, "config", ""),
               bench_json_str(b, "config", ""));
}

static void print_cmp_row(const struct figure_cmp *c, const char *verdict)
{
    printf("%-24s %11.4g [%9.4g - %9.4g] %11.4g [%9.4g - %9.4g] %7.3f %+7.1f%%  %s\n", c->info->name,
           c->a.median, c->a.min, c->a.max, c->b.median, c->b.min, c->b.max, c->ratio,
           100.0 * c->change, verdict);
}

static const char *cmp_verdict(const struct figure_cmp *c)
{
    if (!c->comparable)
        return "not comparable (different hosts)";
    if (!c->beyond_noise)
        return "within noise";
    return c->change >= 0 ? "better" : "worse";
}

/* check passes its threshold (each figure then says whether it is a regression);
 * compare passes a negative one. */
static json_object *cmp_json(json_object *a, json_object *b, const struct figure_cmp *cmp, int n, bool same_host,
                             double max_regression)
{
    json_object *j = json_object_new_object();
    json_object_object_add(j, "a", json_object_new_int64((int64_t)bench_json_num(a, "run_id", 0)));
    json_object_object_add(j, "b", json_object_new_int64((int64_t)bench_json_num(b, "run_id", 0)));
    json_object_object_add(j, "same_host", json_object_new_boolean(same_host));
    json_object_object_add(j, "same_model", json_object_new_boolean(
        strcmp(bench_json_str(a, "model.id", ""), bench_json_str(b, "model.id", "")) == 0));
    json_object_object_add(j, "same_config", json_object_new_boolean(
        strcmp(bench_json_str(a, "config", ""), bench_json_str(b, "config", "")) == 0));
    json_object *arr = json_object_new_array();
    for (int i = 0; i < n; i++) {
        json_object *f = bench_figure_cmp_json(&cmp[i]);
        json_object_object_add(f, "verdict", json_object_new_string(cmp_verdict(&cmp[i])));
        if (max_regression >= 0)
            json_object_object_add(f, "regression", json_object_new_boolean(bench_is_regression(&cmp[i], max_regression)));
        json_object_array_add(arr, f);
    }
    json_object_object_add(j, "figures", arr);
    return j;
}

static int cmd_compare(int argc, char **argv)
{
    struct history_opts o;
    int64_t ida, idb;
    if (parse_history_opts(argc, argv, OPT_DB | OPT_JSON, 2, 2, "compare RUN_A RUN_B [--db PATH] [--json]", &o) < 0 ||
        parse_run("compare", o.args[0], &ida) < 0 || parse_run("compare", o.args[1], &idb) < 0)
        return 2;
    struct bench_store st;
    if (open_store(&o, &st) < 0)
        return 1;
    json_object *a = load_run(&st, "compare", ida), *b = a ? load_run(&st, "compare", idb) : NULL;
    bench_store_close(&st);
    if (!a || !b) {
        json_object_put(a);
        return 1;
    }
    struct figure_cmp cmp[32];
    bool same_host;
    int n = bench_compare(a, b, cmp, 32, &same_host);
    if (o.json) {
        json_object *j = cmp_json(a, b, cmp, n, same_host, -1.0);
        print_json(j);
        json_object_put(j);
    } else {
        print_cmp_header(a, b, same_host);
        printf("%-24s %11s %23s %11s %23s %7s %8s  %s\n", "figure", "A median", "A range", "B median",
               "B range", "B/A", "change", "verdict (ranges of repeats apart?)");
        for (int i = 0; i < n; i++)
            print_cmp_row(&cmp[i], cmp_verdict(&cmp[i]));
    }
    json_object_put(a);
    json_object_put(b);
    return 0;
}

/* The run `baseline` names for run r: an id, "previous" (the newest earlier run of the
 * same model and configuration on the same host) or "best" (of those runs, any time, the
 * one with the highest median generated tokens/s). 1 when there is none. */
static int find_baseline(struct bench_store *st, const char *baseline, json_object *r, json_object **out)
{
    struct errbuf e = {{0}};
    int64_t rid = (int64_t)bench_json_num(r, "run_id", 0);
    bool previous = strcmp(baseline, "previous") == 0, best = strcmp(baseline, "best") == 0;
    if (!previous && !best) {
        int64_t id;
        if (parse_run("check --baseline", baseline, &id) < 0)
            return -2;
        *out = load_run(st, "check", id);
        return *out ? 0 : -1;
    }
    struct bench_query q = {.model = bench_json_str(r, "model.id", ""), .host = bench_json_str(r, "host.name", ""),
                            .config = bench_json_str(r, "config", ""), .before_id = previous ? rid : 0,
                            .last = previous ? 1 : 0};
    json_object *runs;
    if (bench_store_list(st, &q, &runs, &e) < 0) {
        fprintf(stderr, "bitnetctl bench check: %s\n", e.msg);
        return -1;
    }
    json_object *pick = NULL;
    double best_tps = -1;
    size_t n = json_object_array_length(runs);
    for (size_t i = 0; i < n; i++) {
        json_object *c = json_object_array_get_idx(runs, i);
        if ((int64_t)bench_json_num(c, "run_id", 0) == rid)
            continue;
        struct figure_stats s;
        double tps = bench_figure_stats(c, "generated_tps", &s) == 0 ? s.median : 0.0;
        if (previous || tps > best_tps) {
            pick = c;
            best_tps = tps;
        }
    }
    *out = pick ? json_object_get(pick) : NULL;
    json_object_put(runs);
    return pick ? 0 : 1;
}

static int cmd_check(int argc, char **argv)
{
    struct history_opts o;
    const char *usage = "check --baseline RUN|best|previous --max-regression 5% [RUN] [--db PATH] [--json]";
    if (parse_history_opts(argc, argv, OPT_DB | OPT_JSON | OPT_BASELINE | OPT_MAX_REG, 0, 1, usage, &o) < 0)
        return 2;
    if (!o.baseline || !o.max_regression_given) {
        fprintf(stderr, "bitnetctl bench check: --baseline and --max-regression are required\nusage: bitnetctl bench %s\n", usage);
        return 2;
    }
    int64_t id = 0;
    if (o.n_args == 1 && parse_run("check", o.args[0], &id) < 0)
        return 2;
    struct bench_store st;
    if (open_store(&o, &st) < 0)
        return 1;
    struct errbuf e = {{0}};
    if (id == 0) {
        if (bench_store_latest(&st, &id, &e) < 0) {
            fprintf(stderr, "bitnetctl bench check: %s\n", e.msg);
            bench_store_close(&st);
            return 2;
        }
        if (id == 0) {
            fprintf(stderr, "bitnetctl bench check: %s: no runs recorded\n", st.path);
            bench_store_close(&st);
            return 2;
        }
    }
    json_object *r = load_run(&st, "check", id), *base = NULL;
    int found = r ? find_baseline(&st, o.baseline, r, &base) : -1;
    bench_store_close(&st);
    if (found != 0) {
        if (found == 1)
            fprintf(stderr, "bitnetctl bench check: run %lld: no %s run to compare with (same model, host "
                            "and configuration: %s)\n", (long long)id, o.baseline, bench_json_str(r, "config", ""));
        json_object_put(r);
        return 2;
    }
    struct figure_cmp cmp[32];
    bool same_host;
    int n = bench_compare(base, r, cmp, 32, &same_host), regressions = 0;
    for (int i = 0; i < n; i++)
        regressions += bench_is_regression(&cmp[i], o.max_regression);
    if (o.json) {
        json_object *j = cmp_json(base, r, cmp, n, same_host, o.max_regression);
        json_object *names = json_object_new_array();
        for (int i = 0; i < n; i++)
            if (bench_is_regression(&cmp[i], o.max_regression))
                json_object_array_add(names, json_object_new_string(cmp[i].info->name));
        json_object_object_add(j, "max_regression", json_object_new_double(o.max_regression));
        json_object_object_add(j, "regressions", names);
        json_object_object_add(j, "pass", json_object_new_boolean(regressions == 0));
        print_json(j);
        json_object_put(j);
    } else {
        print_cmp_header(base, r, same_host);
        for (int i = 0; i < n; i++) {
            const char *v = !cmp[i].info->checked ? "not checked (the host's, not the engine's)"
                            : bench_is_regression(&cmp[i], o.max_regression) ? "REGRESSION"
                                                                            : cmp_verdict(&cmp[i]);
            print_cmp_row(&cmp[i], v);
        }
    }
    for (int i = 0; i < n; i++)
        if (bench_is_regression(&cmp[i], o.max_regression))
            fprintf(stderr, "bench check: %s regressed by %.1f%% (%.4g -> %.4g %s, beyond the runs' spread), "
                            "more than the %.1f%% allowed: run %lld against run %lld\n", cmp[i].info->name,
                    -100.0 * cmp[i].change, cmp[i].a.median, cmp[i].b.median, cmp[i].info->unit,
                    100.0 * o.max_regression, (long long)id, (long long)bench_json_num(base, "run_id", 0));
    if (regressions == 0 && !o.json)
        printf("bench check: run %lld passes against run %lld (no figure worse by more than %.1f%% beyond noise)\n",
               (long long)id, (long long)bench_json_num(base, "run_id", 0), 100.0 * o.max_regression);
    json_object_put(r);
    json_object_put(base);
    return regressions ? 1 : 0;
}

/* What bench plot --json prints: the chart's file and the data it shows. */
static void print_plot_json(const char *out, const char *metric, const struct plot_series *series, int n)
{
    json_object *j = json_object_new_object(), *arr = json_object_new_array();
    json_object_object_add(j, "chart", json_object_new_string(out));
    json_object_object_add(j, "metric", json_object_new_string(metric));
    for (int i = 0; i < n; i++) {
        json_object *s = json_object_new_object(), *pts = json_object_new_array();
        json_object_object_add(s, "label", json_object_new_string(series[i].label));
        for (int k = 0; k < series[i].n; k++) {
            const struct plot_point *p = &series[i].points[k];
            json_object *pj = json_object_new_object();
            json_object_object_add(pj, "run_id", json_object_new_int64(p->run_id));
            json_object_object_add(pj, "x", json_object_new_double(p->x));
            json_object_object_add(pj, "median", json_object_new_double(p->y));
            json_object_object_add(pj, "min", json_object_new_double(p->lo));
            json_object_object_add(pj, "max", json_object_new_double(p->hi));
            json_object_array_add(pts, pj);
        }
        json_object_object_add(s, "points", pts);
        json_object_array_add(arr, s);
    }
    json_object_object_add(j, "series", arr);
    print_json(j);
    json_object_put(j);
}

static int cmd_plot(int argc, char **argv)
{
    struct history_opts o;
    const char *usage = "plot --metric NAME [--model ID] [--host H] [--last N] [--sweep ID] --out FILE.svg [--db PATH] [--json]";
    if (parse_history_opts(argc, argv, OPT_DB | OPT_JSON | OPT_MODEL | OPT_HOST | OPT_LAST | OPT_METRIC | OPT_OUT | OPT_SWEEP,
                           0, 0, usage, &o) < 0)
        return 2;
    if (!o.out) {
        fprintf(stderr, "bitnetctl bench plot: --out FILE.svg is required\nusage: bitnetctl bench %s\n", usage);
        return 2;
    }
    const char *metric = o.metric ? o.metric : "generated_tps";
    const struct bench_figure_info *fi = bench_figure_find(metric);
    if (!fi) {
        fprintf(stderr, "bitnetctl bench plot: --metric %s: no such figure; known:", metric);
        for (int i = 0; i < bench_n_figures; i++)
            fprintf(stderr, " %s", bench_figures[i].name);
        fputc('\n', stderr);
        return 2;
    }
    struct bench_store st;
    if (open_store(&o, &st) < 0)
        return 1;
    struct bench_query q = {.model = o.model, .host = o.host, .last = (int)o.last, .sweep_id = o.sweep};
    json_object *runs;
    struct errbuf e = {{0}};
    int rc = bench_store_list(&st, &q, &runs, &e);
    bench_store_close(&st);
    if (rc < 0) {
        fprintf(stderr, "bitnetctl bench plot: %s\n", e.msg);
        return 1;
    }
    struct plot_series *series;
    int n_series;
    if (bench_history_series(runs, metric, false, &series, &n_series) < 0) {
        fprintf(stderr, "bitnetctl bench plot: out of memory\n");
        json_object_put(runs);
        return 1;
    }
    int points = 0;
    for (int i = 0; i < n_series; i++)
        points += series[i].n;
    char title[256], ylabel[128];
    snprintf(title, sizeof title, "%s over time%s%.16s", metric, o.model ? ", model " : "", o.model ? o.model : "");
    snprintf(ylabel, sizeof ylabel, "%s%s%s%s", metric, fi->unit[0] ? " (" : "", fi->unit, fi->unit[0] ? ")" : "");
    struct plot_axes axes = {.title = title, .x_label = "run time (UTC, month-day hour:minute)",
                             .y_label = ylabel, .x_is_time = true};
    rc = points == 0 ? -1 : bench_write_chart(o.out, &axes, series, n_series);
    if (points == 0)
        fprintf(stderr, "bitnetctl bench plot: no recorded run has %s%s\n", metric, o.model || o.host ? " among those that match" : "");
    else if (rc == 0 && o.json)
        print_plot_json(o.out, metric, series, n_series);
    else if (rc == 0)
        fprintf(stderr, "bench plot: %d runs in %d series written to %s\n", points, n_series, o.out);
    bench_series_free(series, n_series);
    json_object_put(runs);
    return rc < 0 ? 1 : 0;
}

/* A sweep id belongs to the database that made it: an imported receipt keeps it as
 * sweep.source_id, not as a reference to whatever sweep has that id here. */
static void import_sweep_id(json_object *r)
{
    json_object *sweep = bench_json_at(r, "sweep"), *id;
    if (sweep && json_object_is_type(sweep, json_type_object) && json_object_object_get_ex(sweep, "id", &id)) {
        json_object_object_add(sweep, "source_id", json_object_get(id));
        json_object_object_del(sweep, "id");
    }
}

/* Receipts from JSON (one object, or an array of them, as bench show --json prints):
 * moves history between machines, and lets tests craft histories. */
static int cmd_import(int argc, char **argv)
{
    struct history_opts o;
    if (parse_history_opts(argc, argv, OPT_DB | OPT_JSON, 1, 1, "import FILE.json [--db PATH] [--json]", &o) < 0)
        return 2;
    size_t len;
    char *text = read_text_file(o.args[0], &len);
    if (!text) {
        fprintf(stderr, "bitnetctl bench import: %s: %s\n", o.args[0], strerror(errno));
        return 1;
    }
    struct json_tokener *tok = json_tokener_new();
    json_object *doc = tok ? json_tokener_parse_ex(tok, text, (int)len) : NULL;
    /* one document and nothing after it but white space */
    size_t end = tok ? json_tokener_get_parse_end(tok) : 0;
    bool whole = tok && json_tokener_get_error(tok) == json_tokener_success && end <= len &&
                 text[end + strspn(text + end, " \t\r\n")] == '\0';
    if (tok)
        json_tokener_free(tok);
    free(text);
    if (!doc || !whole || (!json_object_is_type(doc, json_type_object) && !json_object_is_type(doc, json_type_array))) {
        fprintf(stderr, "bitnetctl bench import: %s: not a JSON receipt or array of receipts\n", o.args[0]);
        json_object_put(doc);
        return 1;
    }
    struct bench_store st;
    if (open_store(&o, &st) < 0) {
        json_object_put(doc);
        return 1;
    }
    bool one = json_object_is_type(doc, json_type_object);
    size_t n = one ? 1 : json_object_array_length(doc);
    json_object *ids = json_object_new_array();
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        json_object *r = one ? doc : json_object_array_get_idx(doc, i);
        struct errbuf e = {{0}};
        int64_t id;
        if (!json_object_is_type(r, json_type_object) || !bench_json_at(r, "figures") ||
            !bench_json_at(r, "time_unix")) {
            fprintf(stderr, "bitnetctl bench import: %s: receipt %zu lacks figures or time_unix\n", o.args[0], i);
            rc = -1;
            break;
        }
        import_sweep_id(r);
        if (bench_store_insert(&st, r, &id, &e) < 0) {
            fprintf(stderr, "bitnetctl bench import: %s: receipt %zu: %s\n", o.args[0], i, e.msg);
            rc = -1;
            break;
        }
        json_object_array_add(ids, json_object_new_int64(id));
    }
    bench_store_close(&st);
    if (o.json)
        print_json(ids);
    else
        fprintf(stderr, "bench import: %zu receipts stored\n", json_object_array_length(ids));
    json_object_put(ids);
    json_object_put(doc);
    return rc < 0 ? 1 : 0;
}

int cmd_bench_history(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {
        {"history", cmd_history}, {"show", cmd_show},   {"compare", cmd_compare},
        {"check", cmd_check},     {"plot", cmd_plot},   {"import", cmd_import},
        {"sweep", cmd_bench_sweep},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(argv[0], cmds[i].name) == 0)
            return cmds[i].fn(argc, argv);
    fprintf(stderr, "bitnetctl bench: unknown subcommand '%s'\n", argv[0]);
    return 2;
}

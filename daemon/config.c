#include "daemon/config.h"

#include <errno.h>
#include <getopt.h>
#include <ini.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "daemon/placement.h"
#include "model/input_file.h"
#include "proto/bitnet.pb-c.h"

/* A config is a page of settings; a larger file is the wrong one. */
#define CONFIG_MAX_BYTES (1 << 20)

/* One table describes every setting, so that a flag and its INI key can never parse
 * differently. */
enum opt_kind { OPT_STR, OPT_INT, OPT_WORKERS, OPT_KV_TYPE, OPT_LM_HEAD, OPT_ACT_TYPE, OPT_BOOL };

struct opt {
    const char *name; /* flag name; the INI key is the same with '_' for '-' */
    enum opt_kind kind;
    size_t off;
    long min, max;
    bool flag_only;   /* --config itself, --help */
};

#define OFF(f) offsetof(struct daemon_config, f)
static const struct opt opts[] = {
    {"model", OPT_STR, OFF(model), 0, 0, false},
    {"config", OPT_STR, OFF(config_file), 0, 0, true},
    {"workers", OPT_WORKERS, OFF(workers), 1, PLACEMENT_MAX_WORKERS, false},
    {"layer-map", OPT_STR, OFF(layer_map), 0, 0, false},
    {"threads-per-worker", OPT_INT, OFF(threads_per_worker), 1, 1024, false},
    {"split-cpus", OPT_BOOL, OFF(split_cpus), 0, 0, false},
    {"run-dir", OPT_STR, OFF(run_dir), 0, 0, false},
    {"max-sequences", OPT_INT, OFF(max_sequences), 1, 256, false},
    {"max-jobs-per-client", OPT_INT, OFF(max_jobs_per_client), 1, 4096, false},
    {"ctx", OPT_INT, OFF(ctx), 1, 1 << 20, false},
    {"kv-type", OPT_KV_TYPE, OFF(kv_type), 0, 0, false},
    {"lm-head", OPT_LM_HEAD, OFF(lm_head_q8), 0, 0, false},
    {"act-type", OPT_ACT_TYPE, OFF(act_type), 0, 0, false},
    {"prefill-chunk", OPT_INT, OFF(prefill_chunk), 1, 512, false},
    {"pipeline-depth", OPT_INT, OFF(pipeline_depth), 0, 8, false},
    {"tensor-parallel", OPT_INT, OFF(tensor_parallel), 1, 8, false},
    {"worker-bin", OPT_STR, OFF(worker_bin), 0, 0, false},
    {"topology", OPT_STR, OFF(topology), 0, 0, false},
    {"heartbeat-timeout", OPT_INT, OFF(heartbeat_timeout_ms), 200, 3600 * 1000, false},
    {"listen", OPT_STR, OFF(listen), 0, 0, false},
    {"advertise", OPT_STR, OFF(advertise), 0, 0, false},
    {"curve-key", OPT_STR, OFF(curve_key), 0, 0, false},
    {"allow-keys", OPT_STR, OFF(allow_keys), 0, 0, false},
    {"remote-workers", OPT_STR, OFF(remote_workers), 0, 0, false},
    {"worker-timeout", OPT_INT, OFF(worker_timeout_s), 1, 86400, false},
    {"drain-timeout", OPT_INT, OFF(drain_timeout_s), 0, 86400, false},
    {"foreground", OPT_BOOL, OFF(foreground), 0, 0, false},
    {"http", OPT_STR, OFF(http), 0, 0, false},
    {"api-keys", OPT_STR, OFF(api_keys), 0, 0, false},
    {"http-max-body", OPT_INT, OFF(http_max_body), 1024, 64 << 20, false},
    {"http-queue", OPT_INT, OFF(http_queue), 0, 4096, false},
    {"help", OPT_BOOL, 0, 0, 0, true},
    {"version", OPT_BOOL, 0, 0, 0, true},
};
#undef OFF
#define N_OPTS (sizeof opts / sizeof opts[0])

void config_usage(FILE *f)
{
    fprintf(f,
            "usage: bitnetd --model FILE [options]\n"
            "  --config FILE            INI file, section [daemon], keys as below with '_'\n"
            "  --workers N|auto         pipeline stages (auto: one per NUMA node)\n"
            "  --layer-map 0-14,15-29   layer range of each worker\n"
            "  --threads-per-worker N   (default: every CPU of the worker's share)\n"
            "  --split-cpus             workers on one NUMA node split its CPUs (default:\n"
            "                           each runs on all of them, taking turns)\n"
            "  --run-dir DIR            sockets (default $XDG_RUNTIME_DIR/bitnetd or\n"
            "                           /tmp/bitnetd-$UID)\n"
            "  --max-sequences N        jobs running at once (8)\n"
            "  --max-jobs-per-client N  jobs one client connection may have running or queued (8)\n"
            "  --ctx N                  positions per sequence (2048, at most the model's)\n"
            "  --kv-type f32|f16|q8     KV cache element type (f32; q8: int8 with a scale\n"
            "                           per position and KV head, about a quarter of f32)\n"
            "  --lm-head f16|q8         output projection as stored, or an int8 copy (f16)\n"
            "  --act-type f32|bf16|f16  hidden states between workers (f32: exact)\n"
            "  --prefill-chunk N        prompt rows per step (64)\n"
            "  --pipeline-depth N       steps in flight (0 = auto: one per stage when the\n"
            "                           stages have CPUs of their own, else 1)\n"
            "  --tensor-parallel K      each stage computed by K processes, each holding\n"
            "                           1/K of every matrix on its own CPUs (and node);\n"
            "                           --workers counts them (docs/tensor-parallel.md)\n"
            "  --worker-bin PATH        (default: bitnet-worker beside bitnetd)\n"
            "  --topology SRC           synthetic:<hwloc synthetic> or xml:<file>\n"
            "  --heartbeat-timeout MS   a silent worker is dead after this (1500)\n"
            "remote workers (started by hand on other hosts, joined over CURVE):\n"
            "  --listen tcp://ADDR:PORT worker control on PORT, results on PORT+1\n"
            "  --advertise HOST         host remote workers send results to (default: ADDR,\n"
            "                           or this host's name when ADDR is a wildcard)\n"
            "  --curve-key FILE         this daemon's key pair (bitnetctl keygen's .key)\n"
            "  --allow-keys FILE|DIR    worker public keys admitted (a list, or *.pub files)\n"
            "  --remote-workers w1,...  stages not started here; they join on --listen\n"
            "  --worker-timeout S       a remote worker gone this long fails its jobs (30)\n"
            "  --drain-timeout S        on SIGTERM, running jobs get this long to end before\n"
            "                           they are cancelled (30; 0: at once); a second\n"
            "                           SIGTERM, or SIGINT, stops at once\n"
            "  --foreground             accepted; bitnetd always stays in the foreground\n"
            "  --version                print the version and exit\n"
            "OpenAI-compatible HTTP API (docs/http-api.md):\n"
            "  --http [ADDR:]PORT       serve it there (ADDR default 127.0.0.1; PORT 0: any)\n"
            "  --api-keys FILE          bearer tokens, one a line; others get 401 (but /health)\n"
            "  --http-max-body BYTES    larger request bodies get 413 (1048576)\n"
            "  --http-queue N           HTTP generations that may wait beyond --max-sequences\n"
            "                           running ones; more get 429 (64)\n"
            "SIGHUP reads the --config file and the --allow-keys list again; settings that\n"
            "cannot change while running are kept, and the log names them.\n");
}

static int opt_index(const char *name)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (strcmp(opts[i].name, name) == 0)
            return (int)i;
    return -1;
}

static void set_defaults(struct daemon_config *c)
{
    memset(c, 0, sizeof *c);
    c->max_sequences = 8;
    c->max_jobs_per_client = 8;
    c->ctx = 2048;
    c->act_type = BITNET__ELEM_TYPE__ELEM_TYPE_F32;
    c->prefill_chunk = 64;
    c->heartbeat_timeout_ms = 1500;
    c->worker_timeout_s = 30;
    c->drain_timeout_s = 30;
    c->foreground = true;
    c->http_max_body = 1 << 20;
    c->http_queue = 64;
}

/* Parses one value into its field. `who` names it in errors ("--ctx" or "f.ini:3: ctx"). */
static int set_opt(struct daemon_config *c, const struct opt *o, const char *val,
                   const char *who, struct errbuf *e)
{
    void *field = (char *)c + o->off;
    switch (o->kind) {
    case OPT_STR: {
        if (!*val)
            return err_set(e, "%s: empty value", who);
        char *copy = strdup(val);
        if (!copy)
            return err_set(e, "%s: out of memory", who);
        free(*(char **)field);
        *(char **)field = copy;
        return 0;
    }
    case OPT_WORKERS:
        if (strcasecmp(val, "auto") == 0) {
            *(int *)field = 0;
            return 0;
        }
        __attribute__((fallthrough)); /* a number */
    case OPT_INT: {
        char *end;
        errno = 0;
        long v = strtol(val, &end, 10);
        if (end == val || *end || errno)
            return err_set(e, "%s: '%s' is not a number%s", who, val,
                           o->kind == OPT_WORKERS ? " or 'auto'" : "");
        if (v < o->min || v > o->max)
            return err_set(e, "%s: %ld is outside %ld..%ld", who, v, o->min, o->max);
        *(int *)field = (int)v;
        return 0;
    }
    case OPT_KV_TYPE:
        if (kv_type_parse(val, (enum kv_type *)field) < 0)
            return err_set(e, "%s: '%s' is not " KV_TYPE_NAMES, who, val);
        return 0;
    case OPT_LM_HEAD:
        if (strcasecmp(val, "f16") == 0 || strcasecmp(val, "native") == 0)
            *(bool *)field = false;
        else if (strcasecmp(val, "q8") == 0)
            *(bool *)field = true;
        else
            return err_set(e, "%s: '%s' is not f16 (as stored) or q8", who, val);
        return 0;
    case OPT_ACT_TYPE:
        if (strcasecmp(val, "f32") == 0)
            *(int *)field = BITNET__ELEM_TYPE__ELEM_TYPE_F32;
        else if (strcasecmp(val, "bf16") == 0)
            *(int *)field = BITNET__ELEM_TYPE__ELEM_TYPE_BF16;
        else if (strcasecmp(val, "f16") == 0)
            *(int *)field = BITNET__ELEM_TYPE__ELEM_TYPE_F16;
        else
            return err_set(e, "%s: '%s' is not f32, bf16 or f16", who, val);
        return 0;
    case OPT_BOOL:
        if (!val || strcasecmp(val, "true") == 0 || strcasecmp(val, "yes") == 0 ||
            strcmp(val, "1") == 0)
            *(bool *)field = true;
        else if (strcasecmp(val, "false") == 0 || strcasecmp(val, "no") == 0 ||
                 strcmp(val, "0") == 0)
            *(bool *)field = false;
        else
            return err_set(e, "%s: '%s' is not true or false", who, val);
        return 0;
    }
    return err_set(e, "%s: internal error: unknown option kind", who);
}

struct ini_ctx {
    struct daemon_config *cfg;
    struct errbuf *e;
    bool failed; /* inih returns only the line; the handler leaves the reason in e */
};

static int on_ini_line(void *user, const char *section, const char *name, const char *value)
{
    struct ini_ctx *x = user;
    /* other sections may belong to other programs sharing the file */
    if (strcmp(section, "daemon") != 0)
        return 1;
    char flag[64];
    size_t n = strlen(name);
    if (n >= sizeof flag)
        n = sizeof flag - 1;
    for (size_t i = 0; i < n; i++)
        flag[i] = name[i] == '_' ? '-' : name[i];
    flag[n] = 0;
    for (size_t i = 0; i < N_OPTS; i++) {
        if (opts[i].flag_only || strcmp(opts[i].name, flag) != 0)
            continue;
        char who[128];
        snprintf(who, sizeof who, "[daemon] %.64s", name);
        if (set_opt(x->cfg, &opts[i], value, who, x->e) < 0) {
            x->failed = true;
            return 0;
        }
        return 1;
    }
    err_set(x->e, "[daemon] has no setting '%.64s'", name);
    x->failed = true;
    return 0;
}

static int load_ini(struct daemon_config *c, const char *path, struct errbuf *e)
{
    struct ini_ctx x = {c, e, false};
    FILE *fp = input_fopen(path, CONFIG_MAX_BYTES, e);
    if (!fp)
        return -1;
    int rc = ini_parse_file(fp, on_ini_line, &x);
    fclose(fp);
    if (rc == -2)
        return err_set(e, "%s: out of memory", path);
    if (rc != 0) {
        if (x.failed)
            return err_prefix(e, "%s:%d", path, rc);
        return err_set(e, "%s:%d: not an INI line (expected [section] or key = value)", path, rc);
    }
    return 0;
}

/* The tcp settings come as a group; a part given alone is a mistake worth naming. */
static int check_remote(const struct daemon_config *c, struct errbuf *e)
{
    /* a stage's ranks share memory on one host (worker/tp_group.h) */
    if (c->remote_workers && c->tensor_parallel > 1)
        return err_set(e, "--tensor-parallel with --remote-workers: the ranks of a stage run "
                          "on one host; across hosts use a pipeline (not yet both)");
    if (!c->listen) {
        const char *alone = c->remote_workers ? "--remote-workers" : c->curve_key ? "--curve-key"
                            : c->allow_keys ? "--allow-keys" : c->advertise ? "--advertise" : NULL;
        if (alone)
            return err_set(e, "%s needs --listen tcp://ADDR:PORT (remote workers join there)",
                           alone);
        return 0;
    }
    if (strncmp(c->listen, "tcp://", 6) != 0)
        return err_set(e, "--listen: '%s' is not a tcp://ADDR:PORT endpoint (local workers "
                          "always use ipc://)", c->listen);
    const char *colon = strrchr(c->listen + 6, ':');
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    if (!colon || colon == c->listen + 6 || !colon[1] || *end || port < 1 || port > 65534)
        return err_set(e, "--listen: '%s': expected tcp://ADDR:PORT with PORT 1..65534 "
                          "(results use PORT+1)", c->listen);
    /* without keys the tcp endpoints would be open to anyone who can reach them */
    if (!c->curve_key)
        return err_set(e, "--listen needs --curve-key FILE (this daemon's key pair: bitnetctl "
                          "keygen --out PREFIX writes PREFIX.key)");
    if (!c->allow_keys)
        return err_set(e, "--listen needs --allow-keys FILE|DIR (the workers' public keys)");
    return 0;
}

int config_load(struct daemon_config *cfg, int argc, char **argv, struct errbuf *e)
{
    set_defaults(cfg);
    struct option lopts[N_OPTS + 1];
    memset(lopts, 0, sizeof lopts);
    for (size_t i = 0; i < N_OPTS; i++) {
        lopts[i].name = opts[i].name;
        lopts[i].has_arg = opts[i].kind == OPT_BOOL ? no_argument : required_argument;
        lopts[i].val = 1000 + (int)i;
    }
    /* pass 1 finds --config, so that flags in pass 2 override the file wherever they
     * stand on the command line */
    int c, idx, i_config = opt_index("config"), i_help = opt_index("help");
    int i_version = opt_index("version");
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", lopts, &idx)) != -1) {
        if (c == 1000 + i_config && set_opt(cfg, &opts[i_config], optarg, "--config", e) < 0)
            return -1;
        if (c == 1000 + i_help) {
            config_usage(stdout);
            return 1;
        }
        if (c == 1000 + i_version)
            return 2;
    }
    if (cfg->config_file && load_ini(cfg, cfg->config_file, e) < 0)
        return -1;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", lopts, &idx)) != -1) {
        if (c == '?' || c == ':') {
            const char *bad = argv[optind - 1];
            if (optopt >= 1000)
                return err_set(e, "%s needs a value", bad);
            return err_set(e, "unknown option '%s' (see --help)", bad);
        }
        const struct opt *o = &opts[c - 1000];
        if (o->flag_only)
            continue;
        char who[80];
        snprintf(who, sizeof who, "--%s", o->name);
        if (set_opt(cfg, o, o->kind == OPT_BOOL ? NULL : optarg, who, e) < 0)
            return -1;
    }
    if (optind < argc)
        return err_set(e, "unexpected argument '%s' (see --help)", argv[optind]);
    if (!cfg->model)
        return err_set(e, "no model: give --model FILE (or model = FILE in [daemon] of --config)");
    if (cfg->api_keys && !cfg->http)
        return err_set(e, "--api-keys needs --http [ADDR:]PORT (the keys guard the HTTP API)");
    return check_remote(cfg, e);
}

void config_free(struct daemon_config *cfg)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (opts[i].kind == OPT_STR) {
            char **p = (char **)((char *)cfg + opts[i].off);
            free(*p);
            *p = NULL;
        }
}

size_t config_changed(const struct daemon_config *a, const struct daemon_config *b,
                      const char **names, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < N_OPTS; i++) {
        const struct opt *o = &opts[i];
        if (o->flag_only)
            continue;
        const void *fa = (const char *)a + o->off, *fb = (const char *)b + o->off;
        bool differ;
        switch (o->kind) {
        case OPT_STR: {
            const char *sa = *(char *const *)fa, *sb = *(char *const *)fb;
            differ = (sa == NULL) != (sb == NULL) || (sa && strcmp(sa, sb) != 0);
            break;
        }
        case OPT_KV_TYPE:
            differ = *(const enum kv_type *)fa != *(const enum kv_type *)fb;
            break;
        case OPT_LM_HEAD:
        case OPT_BOOL:
            differ = *(const bool *)fa != *(const bool *)fb;
            break;
        default:
            differ = *(const int *)fa != *(const int *)fb;
            break;
        }
        if (differ && n++ < cap)
            names[n - 1] = o->name;
    }
    return n;
}

/* bitnetctl model synth | inspect */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctl/args.h"
#include "ctl/commands.h"
#include "ctl/session.h"
#include "ctl/tokenizer_path.h"
#include "model/bitnet_model.h"
#include "model/clock.h"
#include "model/ggml_types.h"
#include "model/gguf.h"
#include "model/synth.h"

struct progress_bar {
    bool tty;
    int last_shown;   /* percent, or tenths when not a terminal */
    double t0;
};

static void show_progress(void *ctx, uint64_t done, uint64_t total)
{
    struct progress_bar *pb = ctx;
    int pct = total ? (int)(done * 100 / total) : 100;
    if (pb->tty) {
        if (pct == pb->last_shown)
            return;
        int fill = pct / 4;
        fprintf(stderr, "\rwriting [%.*s%*s] %3d%%  %.0f / %.0f MB  %.1fs", fill,
                "#########################", 25 - fill, "", pct, done / 1e6, total / 1e6,
                clock_seconds() - pb->t0);
        if (done == total)
            fputc('\n', stderr);
    } else {
        if (pct / 10 == pb->last_shown / 10 && done != total)
            return;
        fprintf(stderr, "writing: %d%% (%.0f / %.0f MB)\n", pct, done / 1e6, total / 1e6);
    }
    pb->last_shown = pct;
}

static int parse_type(const char *opt, const char *s, bool ternary, uint32_t *out)
{
    static const struct { const char *name; uint32_t type; bool ternary; } names[] = {
        {"i2_s", GGML_TYPE_I2_S, true},   {"tq2_0", GGML_TYPE_TQ2_0, true},
        {"tq1_0", GGML_TYPE_TQ1_0, true}, {"f16", GGML_TYPE_F16, false},
        {"f32", GGML_TYPE_F32, false},    {"bf16", GGML_TYPE_BF16, false},
        {"q8_0", GGML_TYPE_Q8_0, false},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].ternary == ternary && strcasecmp(s, names[i].name) == 0) {
            *out = names[i].type;
            return 0;
        }
    fprintf(stderr, "bitnetctl: %s: unknown type '%s' (%s)\n", opt, s,
            ternary ? "i2_s, tq2_0, tq1_0" : "f16, f32, bf16, q8_0");
    return -1;
}

/* The directories above path, as `mkdir -p` makes them: a model is usually written under
 * a build or cache directory that does not exist yet. */
static int make_parent_dirs(const char *path, struct errbuf *e)
{
    char dir[4096];
    if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir)
        return err_set(e, "%s: path too long", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = 0;
    for (char *p = dir + 1; ; p++) {
        bool end = *p == 0;
        if (*p == '/' || end) {
            *p = 0;
            struct stat st;
            if (mkdir(dir, 0777) != 0 && errno != EEXIST)
                return err_set(e, "%s: cannot create directory: %s", dir, strerror(errno));
            if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
                return err_set(e, "%s: not a directory", dir);
            if (end)
                return 0;
            *p = '/';
        }
    }
}

int cmd_model_synth(int argc, char **argv)
{
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'},     {"shape", required_argument, 0, 's'},
        {"embd", required_argument, 0, 'E'},    {"layers", required_argument, 0, 'L'},
        {"heads", required_argument, 0, 'H'},   {"kv-heads", required_argument, 0, 'K'},
        {"ffn", required_argument, 0, 'F'},     {"ctx", required_argument, 0, 'C'},
        {"seed", required_argument, 0, 'S'},    {"tokenizer", required_argument, 0, 'T'},
        {"weight-type", required_argument, 0, 'W'}, {"embd-type", required_argument, 0, 'B'},
        {"untied", no_argument, 0, 'U'},        {0, 0, 0, 0},
    };
    const char *out = NULL, *shape = "tiny";
    long dims[6] = {-1, -1, -1, -1, -1, -1}; /* embd layers heads kv ffn ctx */
    struct synth_params p;
    uint64_t seed = 1;
    const char *tok = getenv("BITNET_TOKENIZER_JSON");
    uint32_t wtype = GGML_TYPE_I2_S, etype = GGML_TYPE_F16;
    bool untied = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        const char *idx = strchr("ELHKFC", c);
        if (idx) {
            if (arg_int(opts[2 + (idx - "ELHKFC")].name, optarg, 1, 1 << 20, &dims[idx - "ELHKFC"]) < 0)
                return 2;
            continue;
        }
        switch (c) {
        case 'o': out = optarg; break;
        case 's': shape = optarg; break;
        case 'S': if (arg_u64("--seed", optarg, &seed) < 0) return 2; break;
        case 'T': tok = optarg; break;
        case 'W': if (parse_type("--weight-type", optarg, true, &wtype) < 0) return 2; break;
        case 'B': if (parse_type("--embd-type", optarg, false, &etype) < 0) return 2; break;
        case 'U': untied = true; break;
        default: return 2;
        }
    }
    if (!out || optind != argc) {
        fprintf(stderr, "bitnetctl model synth: %s\n", out ? "unexpected argument" : "--out FILE is required");
        return 2;
    }
    struct errbuf e = {{0}};
    if (synth_preset(&p, shape, &e) < 0) {
        fprintf(stderr, "bitnetctl model synth: --shape: %s\n", e.msg);
        return 2;
    }
    uint32_t *fields[6] = {&p.n_embd, &p.n_layer, &p.n_head, &p.n_head_kv, &p.n_ff, &p.n_ctx};
    for (int i = 0; i < 6; i++)
        if (dims[i] > 0)
            *fields[i] = (uint32_t)dims[i];
    p.seed = seed;
    p.weight_type = wtype;
    p.embd_type = etype;
    p.untied = untied;
    char found_tok[4096];
    if (!(tok && *tok)) {
        if (default_tokenizer_json(found_tok, sizeof found_tok, &e) < 0) {
            fprintf(stderr, "bitnetctl model synth: %s\n", e.msg);
            return 1;
        }
        tok = found_tok;
    }
    p.tokenizer_json = tok;
    char name[128];
    snprintf(name, sizeof name, "bitnet-b1.58 synthetic %s seed %llu", shape,
             (unsigned long long)seed);
    p.name = name;

    struct progress_bar pb = {.tty = isatty(2), .last_shown = -1, .t0 = clock_seconds()};
    if (make_parent_dirs(out, &e) < 0 || bitnet_synth(&p, out, show_progress, &pb, &e) < 0) {
        fprintf(stderr, "bitnetctl model synth: %s\n", e.msg);
        return 1;
    }
    fprintf(stderr, "wrote %s: %u layers, embd %u, heads %u/%u, ffn %u, %s weights, %.1fs "
            "(tokenizer %s)\n", out, p.n_layer, p.n_embd, p.n_head, p.n_head_kv, p.n_ff,
            ggml_type_name(p.weight_type), clock_seconds() - pb.t0, tok);
    return 0;
}

static void tensor_dims(const struct gguf_tensor *t, char *buf, size_t cap)
{
    size_t n = 0;
    n += (size_t)snprintf(buf + n, cap - n, "[");
    for (uint32_t d = 0; d < t->n_dims && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%llu", d ? ", " : "",
                              (unsigned long long)t->ne[d]);
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
}

static void print_inspect_text(const struct gguf_file *f, const struct bitnet_model *m)
{
    const struct bitnet_hparams *hp = &m->hp;
    struct strview name = {"", 0};
    struct errbuf ignore;
    gguf_get_str(f, "general.name", &name, &ignore);
    printf("file:          %s\n", f->path);
    printf("size:          %llu bytes (%.2f GB)\n", (unsigned long long)f->size, f->size / 1e9);
    printf("format:        GGUF v%u, %llu tensors, %llu metadata keys, alignment %llu\n",
           f->version, (unsigned long long)f->n_tensors, (unsigned long long)f->n_kv,
           (unsigned long long)f->alignment);
    printf("architecture:  %s\n", BITNET_ARCH);
    printf("name:          %.*s\n", (int)name.len, name.ptr);
    printf("layers:        %u\n", hp->n_layer);
    printf("embedding:     %u\n", hp->n_embd);
    printf("heads:         %u (kv %u, head dim %u)\n", hp->n_head, hp->n_head_kv, hp->head_dim);
    printf("ffn:           %u\n", hp->n_ff);
    printf("vocabulary:    %u\n", hp->n_vocab);
    printf("context:       %u\n", hp->n_ctx_train);
    printf("rope base:     %g\n", hp->rope_base);
    printf("rms eps:       %g\n", hp->norm_eps);
    printf("output:        %s\n", m->tied_output ? "tied to token_embd.weight" : "output.weight");
    printf("ternary bytes: %llu\n", (unsigned long long)bitnet_model_ternary_bytes(m));
    printf("\n%-32s %-6s %-16s %12s %12s\n", "tensor", "type", "dims", "bytes", "offset");
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const struct gguf_tensor *t = &f->tensors[i];
        char dims[64];
        tensor_dims(t, dims, sizeof dims);
        printf("%-32.*s %-6s %-16s %12llu %12llu\n", (int)t->name.len, t->name.ptr,
               ggml_type_name(t->type), dims, (unsigned long long)t->nbytes,
               (unsigned long long)t->offset);
    }
}

static void print_inspect_json(const struct gguf_file *f, const struct bitnet_model *m)
{
    const struct bitnet_hparams *hp = &m->hp;
    json_object *o = json_object_new_object();
    json_object_object_add(o, "path", json_object_new_string(f->path));
    json_object_object_add(o, "file_bytes", json_object_new_int64((int64_t)f->size));
    json_object_object_add(o, "gguf_version", json_object_new_int((int)f->version));
    json_object_object_add(o, "n_tensors", json_object_new_int64((int64_t)f->n_tensors));
    json_object_object_add(o, "n_kv", json_object_new_int64((int64_t)f->n_kv));
    json_object_object_add(o, "architecture", json_object_new_string(BITNET_ARCH));
    json_object *h = json_object_new_object();
    json_object_object_add(h, "n_layer", json_object_new_int((int)hp->n_layer));
    json_object_object_add(h, "n_embd", json_object_new_int((int)hp->n_embd));
    json_object_object_add(h, "n_head", json_object_new_int((int)hp->n_head));
    json_object_object_add(h, "n_head_kv", json_object_new_int((int)hp->n_head_kv));
    json_object_object_add(h, "head_dim", json_object_new_int((int)hp->head_dim));
    json_object_object_add(h, "n_ff", json_object_new_int((int)hp->n_ff));
    json_object_object_add(h, "n_vocab", json_object_new_int((int)hp->n_vocab));
    json_object_object_add(h, "n_ctx_train", json_object_new_int((int)hp->n_ctx_train));
    json_object_object_add(h, "rope_base", json_object_new_double(hp->rope_base));
    json_object_object_add(h, "norm_eps", json_object_new_double(hp->norm_eps));
    json_object_object_add(o, "hparams", h);
    json_object_object_add(o, "tied_output", json_object_new_boolean(m->tied_output));
    json_object_object_add(o, "ternary_bytes",
                           json_object_new_int64((int64_t)bitnet_model_ternary_bytes(m)));
    json_object *arr = json_object_new_array();
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const struct gguf_tensor *t = &f->tensors[i];
        json_object *jt = json_object_new_object();
        json_object_object_add(jt, "name", json_object_new_string_len(t->name.ptr, (int)t->name.len));
        json_object_object_add(jt, "type", json_object_new_string(ggml_type_name(t->type)));
        json_object *dims = json_object_new_array();
        for (uint32_t d = 0; d < t->n_dims; d++)
            json_object_array_add(dims, json_object_new_int64((int64_t)t->ne[d]));
        json_object_object_add(jt, "dims", dims);
        json_object_object_add(jt, "bytes", json_object_new_int64((int64_t)t->nbytes));
        json_object_object_add(jt, "offset", json_object_new_int64((int64_t)t->offset));
        json_object_array_add(arr, jt);
    }
    json_object_object_add(o, "tensors", arr);
    puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
}

int cmd_model_inspect(int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, 0, 'j'}, {0, 0, 0, 0}};
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c != 'j')
            return 2;
        json = true;
    }
    if (optind != argc - 1) {
        fprintf(stderr, "usage: bitnetctl model inspect FILE [--json]\n");
        return 2;
    }
    struct bitnet_model m;
    struct errbuf e = {{0}};
    if (bitnet_model_load(&m, argv[optind], &e) < 0) {
        fprintf(stderr, "bitnetctl: %s\n", e.msg);
        return 1;
    }
    if (json)
        print_inspect_json(&m.file, &m);
    else
        print_inspect_text(&m.file, &m);
    bitnet_model_free(&m);
    return 0;
}

/* Building receipts: what a bench run records about itself besides its figures. */
#include "ctl/bench_receipt.h"

#include <numa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "ctl/build_info.h"
#include "kernels/cpu_features.h"
#include "kernels/threadpool.h"
#include "model/ggml_types.h"
#include "worker/model_id.h"

const struct bench_figure_info bench_figures[] = {
    {"generated_tps", "tok/s", true, false, true},
    {"prompt_tps", "tok/s", true, false, true},
    {"ttft_s", "s", false, false, true},
    {"load_s", "s", false, false, true},
    {"depth0_tps", "tok/s", true, false, true},
    {"stream_generated_tps", "tok/s", true, false, true},
    {"generated_tps_per_gbps", "tok/s per GB/s", true, true, true},
    {"roofline_ratio", "", true, true, true},
    {"memory_ratio", "", true, true, true},
    {"read_gbps", "GB/s", true, false, false},
    {"peak_rss_bytes", "bytes", false, false, true},
};
const int bench_n_figures = (int)(sizeof bench_figures / sizeof bench_figures[0]);

const struct bench_figure_info *bench_figure_find(const char *name)
{
    for (int i = 0; i < bench_n_figures; i++)
        if (strcmp(bench_figures[i].name, name) == 0)
            return &bench_figures[i];
    return NULL;
}

json_object *bench_json_at(json_object *o, const char *path)
{
    char key[128];
    while (o && *path) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        if (n >= sizeof key)
            return NULL;
        memcpy(key, path, n);
        key[n] = '\0';
        json_object *next;
        if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &next))
            return NULL;
        o = next;
        path += n + (dot ? 1 : 0);
    }
    return o;
}

const char *bench_json_str(json_object *o, const char *path, const char *fallback)
{
    json_object *v = bench_json_at(o, path);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : fallback;
}

double bench_json_num(json_object *o, const char *path, double fallback)
{
    json_object *v = bench_json_at(o, path);
    return v && (json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int))
               ? json_object_get_double(v)
               : fallback;
}

static json_object *host_json(void)
{
    json_object *h = json_object_new_object();
    char name[256] = "unknown";
    if (gethostname(name, sizeof name) < 0)
        snprintf(name, sizeof name, "unknown");
    name[sizeof name - 1] = '\0';
    json_object_object_add(h, "name", json_object_new_string(name));
    struct cpu_features f;
    cpu_features_detect(&f);
    json_object_object_add(h, "cpu", json_object_new_string(f.brand));
    json_object *feat = json_object_new_array();
    const struct {
        bool on;
        const char *name;
    } flags[] = {
        {f.avx2, "avx2"},         {f.fma, "fma"},           {f.f16c, "f16c"},
        {f.avx512f, "avx512f"},   {f.avx512bw, "avx512bw"}, {f.avx512vl, "avx512vl"},
        {f.avx512vnni, "avx512vnni"}, {f.avx512_bf16, "avx512_bf16"}, {f.avxvnni, "avxvnni"},
        {f.amx_tile, "amx_tile"}, {f.amx_int8, "amx_int8"},
    };
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (flags[i].on)
            json_object_array_add(feat, json_object_new_string(flags[i].name));
    json_object_object_add(h, "cpu_features", feat);
    json_object_object_add(h, "cpus_online", json_object_new_int((int)sysconf(_SC_NPROCESSORS_ONLN)));
    json_object_object_add(h, "cpus_available", json_object_new_int(cpus_available()));
    json_object_object_add(h, "numa_nodes",
                           json_object_new_int(numa_available() < 0 ? 1 : numa_num_configured_nodes()));
    struct utsname u;
    if (uname(&u) == 0) {
        char os[sizeof u.sysname + sizeof u.release + 2];
        snprintf(os, sizeof os, "%s %s", u.sysname, u.release);
        json_object_object_add(h, "os", json_object_new_string(os));
    }
    return h;
}

json_object *bench_receipt_new(const char *mode)
{
    json_object *r = json_object_new_object();
    json_object_object_add(r, "receipt_version", json_object_new_int(BENCH_RECEIPT_VERSION));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char when[32];
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_object_object_add(r, "time", json_object_new_string(when));
    json_object_object_add(r, "time_unix", json_object_new_double((double)ts.tv_sec + ts.tv_nsec * 1e-9));
    json_object_object_add(r, "mode", json_object_new_string(mode));
    json_object *b = json_object_new_object();
    json_object_object_add(b, "commit", json_object_new_string(build_commit()));
    json_object_object_add(b, "cflags", json_object_new_string(build_cflags()));
    json_object_object_add(r, "build", b);
    json_object_object_add(r, "host", host_json());
    json_object_object_add(r, "kernel_set", json_object_new_string(kops.name ? kops.name : "unknown"));
    json_object_object_add(r, "figures", json_object_new_object());
    return r;
}

int bench_receipt_set_model(json_object *r, const struct bitnet_model *m, const char *path,
                            struct errbuf *e)
{
    char id[MODEL_ID_HEX_LEN + 1];
    if (model_id_of_gguf(&m->file, id, e) < 0)
        return err_prefix(e, "%s", path);
    json_object *j = json_object_new_object();
    json_object_object_add(j, "id", json_object_new_string(id));
    json_object_object_add(j, "path", json_object_new_string(path));
    json_object *shape = json_object_new_object();
    const struct bitnet_hparams *hp = &m->hp;
    const struct {
        const char *name;
        uint32_t v;
    } dims[] = {
        {"n_embd", hp->n_embd}, {"n_layer", hp->n_layer}, {"n_head", hp->n_head},
        {"n_head_kv", hp->n_head_kv}, {"n_ff", hp->n_ff}, {"n_vocab", hp->n_vocab},
        {"n_ctx_train", hp->n_ctx_train},
    };
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        json_object_object_add(shape, dims[i].name, json_object_new_int64(dims[i].v));
    json_object_object_add(j, "shape", shape);
    /* tensors by type: what the kernels read differs between I2_S, TQ2_0, ... */
    json_object *types = json_object_new_object();
    for (uint64_t i = 0; i < m->file.n_tensors; i++) {
        const char *tn = ggml_type_name(m->file.tensors[i].type);
        json_object *count;
        if (json_object_object_get_ex(types, tn, &count))
            json_object_int_inc(count, 1);
        else
            json_object_object_add(types, tn, json_object_new_int(1));
    }
    json_object_object_add(j, "tensor_types", types);
    json_object_object_add(j, "tied_output", json_object_new_boolean(m->tied_output));
    json_object_object_add(r, "model", j);
    return 0;
}

void bench_receipt_set_probe(json_object *r, int threads, size_t bytes, int passes)
{
    json_object *p = json_object_new_object();
    json_object_object_add(p, "threads", json_object_new_int(threads));
    json_object_object_add(p, "bytes", json_object_new_int64((int64_t)bytes));
    json_object_object_add(p, "passes", json_object_new_int(passes));
    json_object_object_add(r, "probe", p);
}

void bench_receipt_add_figure(json_object *r, const char *name, const double *v, int n)
{
    json_object *figures = bench_json_at(r, "figures");
    if (!figures) {
        figures = json_object_new_object();
        json_object_object_add(r, "figures", figures);
    }
    json_object *arr = json_object_new_array_ext(n);
    for (int i = 0; i < n; i++)
        json_object_array_add(arr, json_object_new_double(v[i]));
    json_object_object_add(figures, name, arr);
}

/* Appends key=value of every member of o in its order (nested objects and arrays as
 * their compact JSON), so the key changes whenever a parameter or the placement does. */
static void append_members(char *out, size_t cap, json_object *o)
{
    if (!o || !json_object_is_type(o, json_type_object))
        return;
    json_object_object_foreach(o, k, v) {
        size_t len = strlen(out);
        if (len + 1 >= cap)
            return;
        snprintf(out + len, cap - len, " %s=%s", k,
                 json_object_is_type(v, json_type_string)
                     ? json_object_get_string(v)
                     : json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
    }
}

void bench_receipt_finish(json_object *r)
{
    char key[2048];
    snprintf(key, sizeof key, "mode=%s kernel=%s", bench_json_str(r, "mode", "?"),
             bench_json_str(r, "kernel_set", "?"));
    append_members(key, sizeof key, bench_json_at(r, "params"));
    /* the placement's stages, not the worker ids or hosts they were given */
    json_object *pl = bench_json_at(r, "placement");
    json_object *stages = bench_json_at(pl, "stages");
    size_t len = strlen(key);
    snprintf(key + len, sizeof key - len, " workers=%d threads=%d", (int)bench_json_num(pl, "workers", 0),
             (int)bench_json_num(pl, "threads", 0));
    /* tensor-parallel stages are another placement (absent before they existed: 1) */
    int ranks = (int)bench_json_num(pl, "tensor_parallel", 1);
    len = strlen(key);
    if (ranks > 1)
        snprintf(key + len, sizeof key - len, " ranks=%d", ranks);
    size_t n = stages && json_object_is_type(stages, json_type_array) ? json_object_array_length(stages) : 0;
    for (size_t i = 0; i < n; i++) {
        json_object *s = json_object_array_get_idx(stages, i);
        len = strlen(key);
        snprintf(key + len, sizeof key - len, "%s%d-%d/%dt", i ? "," : " layers=",
                 (int)bench_json_num(s, "layer_begin", 0), (int)bench_json_num(s, "layer_end", 0),
                 (int)bench_json_num(s, "threads", 0));
    }
    json_object_object_add(r, "config", json_object_new_string(key));
}

void bench_receipt_placement_label(json_object *r, char *out, size_t cap)
{
    json_object *pl = bench_json_at(r, "placement");
    int threads = (int)bench_json_num(pl, "threads", 0);
    int ranks = (int)bench_json_num(pl, "tensor_parallel", 1);
    if (strcmp(bench_json_str(r, "mode", ""), "daemon") == 0 && ranks > 1)
        snprintf(out, cap, "%d stages x %d ranks x %d threads, %d streams",
                 (int)bench_json_num(pl, "workers", 0), ranks, threads,
                 (int)bench_json_num(r, "params.streams", 1));
    else if (strcmp(bench_json_str(r, "mode", ""), "daemon") == 0)
        snprintf(out, cap, "%d workers x %d threads, %d streams", (int)bench_json_num(pl, "workers", 0),
                 threads, (int)bench_json_num(r, "params.streams", 1));
    else
        snprintf(out, cap, "threads %d", threads);
}

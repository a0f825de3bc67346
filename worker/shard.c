#include "worker/shard.h"

#include <errno.h>
#include <limits.h>
#include <numa.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/clock.h"
#include "model/tensor_digest.h"
#include "proto/wire.h"
#include "worker/log.h"
#include "worker/numa_bind.h"

/* Heartbeat hook cadence while touching weight pages. */
#define TOUCH_TICK_BYTES ((size_t)32 << 20)

int shard_origin_capture(struct shard_origin *o, struct errbuf *e)
{
    memset(o, 0, sizeof *o);
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return err_set(e, "sched_getaffinity: cannot read the process's CPUs");
    int n = CPU_COUNT(&set);
    o->cpus = malloc((size_t)(n > 0 ? n : 1) * sizeof *o->cpus);
    if (!o->cpus)
        return err_set(e, "out of memory");
    for (int c = 0; c < CPU_SETSIZE && o->n_cpus < n; c++)
        if (CPU_ISSET(c, &set))
            o->cpus[o->n_cpus++] = c;
    return 0;
}

void shard_origin_free(struct shard_origin *o)
{
    free(o->cpus);
    memset(o, 0, sizeof *o);
}

/* ---------------------------------------------------------------------------------------
 * Checking the request against the model and the machine */

static int check_request(const struct shard *s, const Bitnet__LoadShard *req,
                         const struct bitnet_hparams *hp, struct errbuf *e)
{
    if (req->layer_end > hp->n_layer)
        return err_set(e, "layers [%u, %u) are beyond the model's %u layers", req->layer_begin,
                       req->layer_end, hp->n_layer);
    if (req->layer_begin > req->layer_end)
        return err_set(e, "layer range [%u, %u) is reversed", req->layer_begin, req->layer_end);
    /* the embedding feeds layer 0 and the output reads the last layer: any other
     * combination would compute something that is not the model */
    if (req->has_embedding && req->layer_begin != 0)
        return err_set(e, "an embedding stage must start at layer 0, not %u", req->layer_begin);
    if (req->has_output && req->layer_end != hp->n_layer)
        return err_set(e, "an output stage must end at layer %u, not %u", hp->n_layer,
                       req->layer_end);
    if (req->layer_begin == req->layer_end && !req->has_embedding && !req->has_output)
        return err_set(e, "stage has no layers, embedding or output");
    if (req->kv_type != BITNET__ELEM_TYPE__ELEM_TYPE_F32 &&
        req->kv_type != BITNET__ELEM_TYPE__ELEM_TYPE_F16 &&
        req->kv_type != BITNET__ELEM_TYPE__ELEM_TYPE_Q8)
        return err_set(e, "kv_type %s is not supported (" KV_TYPE_NAMES ")",
                       wire_elem_name(req->kv_type));
    if (s->n_slots < 1 || s->n_slots > SHARD_MAX_SEQUENCES)
        return err_set(e, "max_sequences %u out of range (1..%d)", req->max_sequences,
                       SHARD_MAX_SEQUENCES);
    if (s->kv_ctx < 1 || s->kv_ctx > SHARD_MAX_CTX)
        return err_set(e, "kv_ctx %u out of range (1..%d)", req->kv_ctx, SHARD_MAX_CTX);
    if (req->threads > 1024)
        return err_set(e, "threads %u out of range (0..1024)", req->threads);
    if (!req->next_endpoint || !*req->next_endpoint)
        return err_set(e, "no next_endpoint");
    return 0;
}

static int check_numa_node(int node, struct errbuf *e)
{
    if (node < 0)
        return 0;
    if (numa_available() < 0)
        return err_set(e, "numa node %d: this machine has no NUMA support", node);
    if (node > numa_max_node() || !numa_bitmask_isbitset(numa_nodes_ptr, (unsigned)node))
        return err_set(e, "numa node %d does not exist (highest is %d)", node, numa_max_node());
    return 0;
}

/* The KV cache forward_state_init is about to allocate, refused up front when it cannot
 * fit in the machine's memory: calloc on Linux would likely say yes and the first
 * long sequence would then meet the OOM killer. */
static int check_kv_size(const struct shard *s, const struct bitnet_hparams *hp,
                         size_t *per_position, struct errbuf *e)
{
    size_t n_local = s->runs_layers ? s->layer_end - s->layer_begin : 0;
    size_t pos_bytes, total;
    if (__builtin_mul_overflow(n_local, kv_bytes_per_position(hp, s->kv_type), &pos_bytes) ||
        __builtin_mul_overflow(pos_bytes, (size_t)s->kv_ctx, &total) ||
        __builtin_mul_overflow(total, (size_t)s->n_slots, &total))
        return err_set(e, "KV cache of %d sequences x %d positions overflows", s->n_slots,
                       s->kv_ctx);
    *per_position = pos_bytes;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0 && total / (size_t)page >= (size_t)pages)
        return err_set(e, "KV cache of %d sequences x %d positions needs %zu MiB, more than "
                          "the machine's %zu MiB", s->n_slots, s->kv_ctx, total >> 20,
                       ((size_t)pages * (size_t)page) >> 20);
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * The stage's own tensors: what it binds, touches and counts as loaded */

struct span {
    uintptr_t begin, end;
};

static int span_cmp(const void *a, const void *b)
{
    const struct span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static bool tensor_is_ours(const struct shard *s, const struct gguf_tensor *t)
{
    char name[128];
    size_t n = t->name.len < sizeof name - 1 ? t->name.len : sizeof name - 1;
    memcpy(name, t->name.ptr, n);
    name[n] = 0;
    unsigned il;
    int used = 0;
    if (sscanf(name, "blk.%u.%n", &il, &used) == 1 && used > 0)
        return il >= s->layer_begin && il < s->layer_end;
    if (strcmp(name, "token_embd.weight") == 0)
        return s->has_embedding || (s->has_output && s->model.tied_output);
    if (strcmp(name, "output_norm.weight") == 0 || strcmp(name, "output.weight") == 0)
        return s->has_output;
    return false;
}

static void add_span(struct span *sp, size_t *n, uint64_t *bytes, const void *data, size_t len)
{
    if (!len)
        return;
    sp[*n].begin = (uintptr_t)data;
    sp[*n].end = (uintptr_t)data + len;
    *bytes += len;
    (*n)++;
}

/* A tensor-parallel rank's bytes: its rows of each matrix (as the forward pass reads
 * them: forward_layer_part), the norms whole, the embedding on rank 0 alone (which embeds
 * for all), and its rows of the head. */
static size_t part_spans(const struct shard *s, struct span *sp, uint64_t *bytes)
{
    const struct bitnet_model *m = &s->model;
    const struct forward_tp *tp = &s->tp_part;
    size_t n = 0, embd = m->hp.n_embd;
    for (uint32_t il = s->layer_begin; il < s->layer_end; il++) {
        const struct bitnet_layer *L = &m->layers[il];
        const struct {
            const struct ternary_matrix *w;
            size_t r0, r1;
        } mats[] = {
            {&L->wq, (size_t)tp->q0, (size_t)tp->q1},
            {&L->wk, (size_t)tp->k0, (size_t)tp->k1},
            {&L->wv, (size_t)tp->k0, (size_t)tp->k1},
            {&L->wo, (size_t)tp->e0, (size_t)tp->e1},
            {&L->wgate, (size_t)tp->f0, (size_t)tp->f1},
            {&L->wup, (size_t)tp->f0, (size_t)tp->f1},
            {&L->wdown, (size_t)tp->e0, (size_t)tp->e1},
        };
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++)
            add_span(sp, &n, bytes, mats[i].w->data + mats[i].r0 * mats[i].w->row_bytes,
                     (mats[i].r1 - mats[i].r0) * mats[i].w->row_bytes);
        add_span(sp, &n, bytes, L->attn_norm, embd * sizeof(float));
        add_span(sp, &n, bytes, L->attn_sub_norm, embd * sizeof(float));
        add_span(sp, &n, bytes, L->ffn_norm, embd * sizeof(float));
        add_span(sp, &n, bytes, L->ffn_sub_norm, m->hp.n_ff * sizeof(float));
    }
    if (s->has_embedding && s->tp_rank == 0)
        add_span(sp, &n, bytes, m->tok_embd.data, (size_t)m->tok_embd.rows * m->tok_embd.row_bytes);
    if (s->has_output) {
        add_span(sp, &n, bytes, m->output_norm, embd * sizeof(float));
        add_span(sp, &n, bytes, m->output.data + (size_t)tp->v0 * m->output.row_bytes,
                 (size_t)(tp->v1 - tp->v0) * m->output.row_bytes);
    }
    return n;
}

/* Byte ranges of the stage's tensors (or of a tensor-parallel rank's part of them),
 * sorted and merged where they (nearly) touch, so that a 30-layer shard is bound in a
 * handful of calls rather than hundreds. */
static int collect_spans(const struct shard *s, struct span **out, size_t *n_out,
                         uint64_t *bytes, struct errbuf *e)
{
    const struct gguf_file *f = &s->model.file;
    /* a part has 11 spans a layer and 3 more */
    size_t cap = s->tp ? 11 * (size_t)(s->layer_end - s->layer_begin) + 3 : f->n_tensors;
    struct span *sp = malloc((cap ? cap : 1) * sizeof *sp);
    if (!sp)
        return err_set(e, "out of memory for %zu tensor ranges", cap);
    size_t n = 0;
    *bytes = 0;
    if (s->tp)
        n = part_spans(s, sp, bytes);
    for (uint64_t i = 0; !s->tp && i < f->n_tensors; i++) {
        const struct gguf_tensor *t = &f->tensors[i];
        if (!t->nbytes || !tensor_is_ours(s, t))
            continue;
        add_span(sp, &n, bytes, t->data, t->nbytes);
    }
    qsort(sp, n, sizeof *sp, span_cmp);
    size_t page = (size_t)sysconf(_SC_PAGESIZE), m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m && sp[i].begin <= sp[m - 1].end + page) {
            if (sp[i].end > sp[m - 1].end)
                sp[m - 1].end = sp[i].end;
        } else {
            sp[m++] = sp[i];
        }
    }
    *out = sp;
    *n_out = m;
    return 0;
}

/* Reads one byte per page, so every page of the stage is resident (and, after
 * bind_memory, placed) before the first request rather than during it. */
static void touch_spans(const struct span *sp, size_t n, const struct shard_hooks *hooks)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), since_tick = 0;
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < n; i++) {
        for (uintptr_t p = sp[i].begin; p < sp[i].end; p += page) {
            sink ^= *(const volatile uint8_t *)p;
            since_tick += page;
            if (since_tick >= TOUCH_TICK_BYTES && hooks->tick) {
                hooks->tick(hooks->tick_ctx);
                since_tick = 0;
            }
        }
    }
    (void)sink;
}

/* bind_memory, touch, and where the pages ended up. A page that could not be moved is
 * not a reason to refuse the shard (it still computes the same thing, only slower), so
 * that is a log line and resident_node -1, not a failure. */
static void place_weights(struct shard *s, const struct span *sp, size_t n,
                          const struct shard_hooks *hooks)
{
    struct errbuf e;
    s->resident_node = -1;
    if (s->numa_node < 0) {
        touch_spans(sp, n, hooks);
        return;
    }
    int failed = 0;
    for (size_t i = 0; i < n; i++)
        if (bind_memory((void *)sp[i].begin, sp[i].end - sp[i].begin, s->numa_node, &e) < 0 &&
            !failed++)
            worker_log(hooks->log_id, "binding weights to node %d: %s", s->numa_node, e.msg);
    touch_spans(sp, n, hooks);
    double on = 0, total = 0;
    for (size_t i = 0; i < n; i++) {
        double frac = 0, len = (double)(sp[i].end - sp[i].begin);
        if (pages_on_node((void *)sp[i].begin, sp[i].end - sp[i].begin, NULL, &frac,
                          s->numa_node, &e) < 0) {
            worker_log(hooks->log_id, "page placement query: %s", e.msg);
            return;
        }
        on += frac * len;
        total += len;
    }
    double share = total > 0 ? on / total : 1.0;
    if (share >= 0.999)
        s->resident_node = s->numa_node;
    else
        worker_log(hooks->log_id, "only %.1f%% of the weight pages are on node %d",
                   100.0 * share, s->numa_node);
}

/* ---------------------------------------------------------------------------------------
 * Tensor parallelism */

static int check_tp_request(const struct shard *s, const Bitnet__LoadShard *req, struct errbuf *e)
{
    if (s->tp_size > TP_MAX_RANKS)
        return err_set(e, "tensor_parallel %u: at most %d ranks", req->tensor_parallel,
                       TP_MAX_RANKS);
    if (s->tp_size > 1 && req->layer_begin == req->layer_end)
        return err_set(e, "tensor_parallel %u on a stage without layers", req->tensor_parallel);
    if (req->n_cpus && req->n_cpus < (size_t)s->tp_size)
        return err_set(e, "tensor_parallel %u over %zu cpus: each rank needs one",
                       req->tensor_parallel, req->n_cpus);
    if (req->n_tp_numa_nodes && req->n_tp_numa_nodes != (size_t)s->tp_size)
        return err_set(e, "tensor_parallel %u with %zu tp_numa_nodes", req->tensor_parallel,
                       req->n_tp_numa_nodes);
    return 0;
}

/* This rank's consecutive share of the listed CPUs: [lo, hi). */
static void cpu_share(const struct shard *s, size_t n, size_t *lo, size_t *hi)
{
    *lo = n * (size_t)s->tp_rank / (size_t)s->tp_size;
    *hi = n * (size_t)(s->tp_rank + 1) / (size_t)s->tp_size;
}

/* The leader: the region, and the followers started on it, loading while it loads. */
static int start_group(struct shard *s, const Bitnet__LoadShard *req, const char *log_id,
                       struct errbuf *e)
{
    const struct bitnet_hparams *hp = &s->model.hp;
    size_t len = bitnet__load_shard__get_packed_size(req);
    uint8_t *packed = malloc(len ? len : 1);
    s->tp = calloc(1, sizeof *s->tp);
    if (!packed || !s->tp) {
        free(packed);
        return err_set(e, "out of memory");
    }
    bitnet__load_shard__pack(req, packed);
    int width = (int)(hp->n_ff > hp->n_embd ? hp->n_ff : hp->n_embd);
    int rc = tp_group_create(s->tp, s->tp_size, SHARD_MAX_ROWS, (int)hp->n_embd, width,
                             (int)hp->n_vocab, packed, len, log_id, e);
    free(packed);
    s->tp_owned = true;
    /* the program by its name, so that the followers show in ps as bitnet-worker */
    char self[PATH_MAX];
    ssize_t n = rc == 0 ? readlink("/proc/self/exe", self, sizeof self - 1) : -1;
    if (rc == 0 && n <= 0)
        rc = err_set(e, "/proc/self/exe: %s", strerror(errno));
    if (rc == 0) {
        self[n] = 0;
        rc = tp_group_spawn(s->tp, self, e);
    }
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * Load and unload */

static int alloc_tables(struct shard *s, struct errbuf *e)
{
    s->next_pos = calloc((size_t)s->n_slots, sizeof *s->next_pos);
    s->scratch_pos = calloc((size_t)s->n_slots, sizeof *s->scratch_pos);
    s->row_slot = calloc(SHARD_MAX_ROWS, sizeof *s->row_slot);
    s->row_pos = calloc(SHARD_MAX_ROWS, sizeof *s->row_pos);
    if (!s->next_pos || !s->scratch_pos || !s->row_slot || !s->row_pos)
        return err_set(e, "out of memory for %d sequence slots", s->n_slots);
    return 0;
}

static int make_pool(struct shard *s, const struct shard_origin *origin, struct errbuf *e)
{
    int n = (int)s->threads;
    if (n == 0)
        n = s->n_cpus > 0 ? s->n_cpus : (origin->n_cpus > 0 ? origin->n_cpus : cpus_available());
    s->threads = n;
    /* pinning one thread per listed CPU only makes sense when CPUs were listed; an
     * unpinned worker leaves placement to the scheduler */
    s->pool = threadpool_new(n, s->n_cpus > 0, e);
    return s->pool ? 0 : err_prefix(e, "thread pool");
}

static int make_state(struct shard *s, struct errbuf *e)
{
    struct forward_config cfg = {
        .n_ctx = s->kv_ctx,
        .n_batch = SHARD_MAX_ROWS,
        .pool = s->pool,
        .kv_type = s->kv_type,
        .n_slots = s->n_slots,
        .layer_begin = s->layer_begin,
        .layer_end = s->layer_end,
        .tp = s->tp ? &s->tp_part : NULL,
    };
    if (!s->runs_layers) {
        cfg.n_ctx = 1;
        cfg.n_slots = 1;
        cfg.layer_begin = 0;
        cfg.layer_end = 1;
    }
    if (forward_state_init(&s->state, &s->model, &cfg, e) < 0)
        return err_prefix(e, "forward state");
    return 0;
}

/* Undoes whatever part of a load happened; every member is either set or still zero. */
static void release(struct shard *s, const struct shard_origin *origin, const char *log_id)
{
    forward_state_free(&s->state);
    if (s->tp_owned && s->tp) {
        tp_group_destroy(s->tp);
        free(s->tp);
    }
    /* first the pool (it restores the caller's own affinity), then the process mask */
    threadpool_free(s->pool);
    bitnet_model_free(&s->model);
    if (s->n_cpus && origin->n_cpus) {
        struct errbuf e;
        if (bind_cpus(origin->cpus, origin->n_cpus, &e) < 0)
            worker_log(log_id, "giving back the CPUs of the previous shard: %s", e.msg);
    }
    free(s->cpus);
    free(s->next_pos);
    free(s->scratch_pos);
    free(s->row_slot);
    free(s->row_pos);
    memset(s, 0, sizeof *s);
}

/* This copy's weights against the coordinator's digests: the header hash says the files
 * declare the same model, this that they hold the same bytes. The first load of a file
 * hashes it all (about a second for 2B-4T); later loads read the cached digests. */
static int check_weights(struct shard *s, const Bitnet__LoadShard *req,
                         const struct shard_hooks *hooks, struct errbuf *e)
{
    struct tensor_digests dg;
    if (tensor_digests_get(&s->model.file, s->sha256, &dg, e) < 0)
        return -1;
    int rc = tensor_digests_compare(&s->model.file, &dg, req->tensor_digests.data,
                                    req->tensor_digests.len, e);
    if (rc == 0 && dg.seconds > 0)
        worker_log(hooks->log_id, "weights of %s checked against the coordinator's digests in "
                   "%.2f s%s%s", req->model_path, dg.seconds,
                   dg.cache_path[0] ? "; digests kept in " : "", dg.cache_path);
    tensor_digests_free(&dg);
    return rc;
}

int shard_load(struct shard *s, const struct shard_origin *origin, const Bitnet__LoadShard *req,
               const struct shard_hooks *hooks, struct errbuf *e)
{
    double t0 = clock_seconds();
    memset(s, 0, sizeof *s);
    s->layer_begin = req->layer_begin;
    s->layer_end = req->layer_end;
    s->has_embedding = req->has_embedding;
    s->has_output = req->has_output;
    s->runs_layers = req->layer_begin < req->layer_end;
    s->kv_type = req->kv_type == BITNET__ELEM_TYPE__ELEM_TYPE_Q8    ? KV_TYPE_Q8
                 : req->kv_type == BITNET__ELEM_TYPE__ELEM_TYPE_F16 ? KV_TYPE_F16
                                                                    : KV_TYPE_F32;
    s->act_type = req->act_type;
    s->numa_node = req->numa_node;
    s->resident_node = -1;
    s->threads = (int)req->threads;
    s->tp_size = req->tensor_parallel > 1 ? (int)req->tensor_parallel : 1;
    s->tp_rank = hooks->follower_of ? hooks->follower_of->rank : 0;
    if (check_tp_request(s, req, e) < 0)
        goto fail;
    if (s->tp_size > 1) {
        /* the rank's own place: its node, its share of the CPUs and of the threads */
        if (req->n_tp_numa_nodes)
            s->numa_node = req->tp_numa_nodes[s->tp_rank];
        if (req->threads)
            s->threads = (int)req->threads / s->tp_size > 0 ? (int)req->threads / s->tp_size : 1;
    }
    s->n_slots = req->max_sequences ? (req->max_sequences > SHARD_MAX_SEQUENCES
                                           ? SHARD_MAX_SEQUENCES + 1
                                           : (int)req->max_sequences)
                                    : SHARD_DEFAULT_SEQUENCES;

    if (check_numa_node(req->numa_node, e) < 0)
        goto fail;
    if (req->n_cpus > CPU_SETSIZE) {
        err_set(e, "%zu cpus listed, more than the %d this build can bind", req->n_cpus,
                CPU_SETSIZE);
        goto fail;
    }
    if (req->n_cpus) {
        s->cpus = malloc(req->n_cpus * sizeof *s->cpus);
        if (!s->cpus) {
            err_set(e, "out of memory");
            goto fail;
        }
        size_t lo, hi;
        cpu_share(s, req->n_cpus, &lo, &hi);
        for (size_t i = lo; i < hi; i++) {
            if (req->cpus[i] >= CPU_SETSIZE) {
                err_set(e, "cpu %u is beyond what this build can bind (%d)", req->cpus[i],
                        CPU_SETSIZE);
                goto fail;
            }
            s->cpus[s->n_cpus++] = (int)req->cpus[i];
        }
        /* before the model is mapped and the pool started: page-cache pages fault in on
         * the node of the faulting thread, and the pool's threads pin within this mask */
        if (bind_cpus(s->cpus, s->n_cpus, e) < 0)
            goto fail;
    }

    if (bitnet_model_load(&s->model, req->model_path, e) < 0)
        goto fail;
    if (model_id_of_gguf(&s->model.file, s->sha256, e) < 0)
        goto fail;
    if (strcmp(s->sha256, req->model_sha256) != 0) {
        err_set(e, "%s: sha256 %s is not the requested %s", req->model_path, s->sha256,
                req->model_sha256);
        goto fail;
    }
    /* before any repack releases the mapped pages: the bytes checked are the file's */
    if (req->tensor_digests.len && check_weights(s, req, hooks, e) < 0)
        goto fail;
    const struct bitnet_hparams *hp = &s->model.hp;
    uint32_t ctx = req->kv_ctx ? req->kv_ctx
                               : (hp->n_ctx_train ? hp->n_ctx_train : SHARD_DEFAULT_CTX);
    s->kv_ctx = ctx > SHARD_MAX_CTX ? SHARD_MAX_CTX + 1 : (int)ctx;
    if (check_request(s, req, hp, e) < 0 ||
        check_kv_size(s, hp, &s->kv_bytes_per_position, e) < 0)
        goto fail;
    if (s->tp_size > 1) {
        if (forward_tp_split(hp, s->tp_rank, s->tp_size, &s->tp_part, e) < 0)
            goto fail;
        if (hooks->follower_of)
            s->tp = hooks->follower_of;
        else if (start_group(s, req, hooks->log_id, e) < 0)
            goto fail;
        s->tp_part.gather = tp_group_gather;
        s->tp_part.gather_ctx = s->tp;
    }

    struct span *spans = NULL;
    size_t n_spans = 0;
    if (collect_spans(s, &spans, &n_spans, &s->bytes_loaded, e) < 0)
        goto fail;
    place_weights(s, spans, n_spans, hooks);
    free(spans);

    if (make_pool(s, origin, e) < 0 || make_state(s, e) < 0)
        goto fail;
    /* on the pool's threads, pinned to the node: the copies are first touched there */
    int kept;
    if (bitnet_model_repack(&s->model, s->layer_begin, s->layer_end, s->pool, &kept, e) < 0)
        goto fail;
    if (kept)
        worker_log(hooks->log_id, "%d TQ matrices have blocks of different scales and run on "
                   "the scalar kernel (slow)", kept);
    if (s->has_output && req->lm_head_q8 &&
        bitnet_model_build_q8_head_rows(&s->model, s->pool, s->tp ? s->tp_part.v0 : 0,
                                        s->tp ? s->tp_part.v1 : s->model.output.rows, e) < 0) {
        err_prefix(e, "int8 output head");
        goto fail;
    }
    if (alloc_tables(s, e) < 0)
        goto fail;
    if (s->tp_owned) {
        /* heartbeats go on while the followers finish */
        s->tp->tick = hooks->tick;
        s->tp->tick_ctx = hooks->tick_ctx;
        int rc = tp_group_wait_loaded(s->tp, e);
        s->tp->tick = NULL;
        if (rc < 0)
            goto fail;
    }
    s->load_seconds = clock_seconds() - t0;
    s->loaded = true;
    return 0;

fail:
    release(s, origin, hooks->log_id);
    return -1;
}

void shard_unload(struct shard *s, const struct shard_origin *origin, const char *log_id)
{
    if (s->loaded)
        release(s, origin, log_id);
}

uint32_t shard_active_sequences(const struct shard *s)
{
    uint32_t n = 0;
    for (int i = 0; s->loaded && i < s->n_slots; i++)
        n += s->next_pos[i] > 0;
    return n;
}

uint64_t shard_kv_bytes_used(const struct shard *s)
{
    uint64_t n = 0;
    for (int i = 0; s->loaded && i < s->n_slots; i++)
        n += (uint64_t)s->next_pos[i] * s->kv_bytes_per_position;
    return n;
}

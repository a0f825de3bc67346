/* Writes the seed corpora of the fuzz targets into DIR/<target>/ (make fuzz-seeds):
 * well-formed inputs that reach deep into each target, from which the fuzzers mutate.
 * Envelopes are made with wire_encode and models with the project's own synth, so the
 * seeds follow the code; the worker's LoadShard seeds carry the sha256 of the tiny model,
 * and go stale (only that: the load is refused) when the synthesized bytes change. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "daemon/workers.h"
#include "model/bitnet_model.h"
#include "model/gguf_write.h"
#include "model/tensor_digest.h"
#include "model/tokenizer.h"
#include "model/vocab_gguf.h"
#include "proto/wire.h"
#include "tests/fuzz/fuzz_common.h"
#include "worker/model_id.h"

static const char *out_dir;

struct buf {
    uint8_t *p;
    size_t n, cap;
};

static void add(struct buf *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            fuzz_die("out of memory");
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void put(const char *target, const char *name, const void *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", out_dir, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        fuzz_die("%s: %s", path, strerror(errno));
    snprintf(path, sizeof path, "%s/%s/%s", out_dir, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0)
        fuzz_die("%s: cannot write", path);
    if (n > 64 * 1024)
        fuzz_die("%s: %zu bytes, seeds stay under 64 KiB", path, n);
}

static void put_buf(const char *target, const char *name, struct buf *b)
{
    put(target, name, b->p, b->n);
    free(b->p);
    *b = (struct buf){0};
}

static void encode(const Bitnet__Envelope *env, struct buf *b)
{
    uint8_t *p;
    size_t n;
    struct errbuf e;
    if (wire_encode(env, &p, &n, &e) < 0)
        fuzz_die("seed envelope: %s", e.msg);
    add(b, p, n);
    free(p);
}

/* One record of a handler target: [channel][length, 2 bytes LE][envelope]. */
static void record(struct buf *b, uint8_t channel, Bitnet__Envelope env)
{
    struct buf one = {0};
    encode(&env, &one);
    uint8_t head[3] = {channel, (uint8_t)one.n, (uint8_t)(one.n >> 8)};
    if (one.n > 0xffff)
        fuzz_die("record of %zu bytes", one.n);
    add(b, head, 3);
    add(b, one.p, one.n);
    free(one.p);
}

static void raw_record(struct buf *b, uint8_t channel, const void *p, size_t n)
{
    uint8_t head[3] = {channel, (uint8_t)n, (uint8_t)(n >> 8)};
    add(b, head, 3);
    add(b, p, n);
}

/* An envelope with one body. The bodies are members of one union (the oneof), so
 * setting any member pointer sets the body. */
static Bitnet__Envelope env_of(uint64_t rid, Bitnet__Envelope__BodyCase c, void *body)
{
    Bitnet__Envelope env;
    wire_envelope_init(&env, rid);
    env.body_case = c;
    env.error = body;
    return env;
}
#define ENV(rid, CASE, body) env_of(rid, BITNET__ENVELOPE__BODY_##CASE, body)

/* ---- envelopes shared by several targets ---- */

static Bitnet__Hello hello_worker(const char *id)
{
    Bitnet__Hello h = BITNET__HELLO__INIT;
    h.role = BITNET__ROLE__ROLE_WORKER;
    h.software_version = "bitnet-worker 0.1.0";
    h.protocol_version = BITNET_PROTOCOL_VERSION;
    h.worker_id = (char *)id;
    h.hostname = "fuzz";
    h.pid = 0; /* fuzz_daemon puts its own pid in */
    return h;
}

static Bitnet__LoadShardReply loaded(void)
{
    Bitnet__LoadShardReply r = BITNET__LOAD_SHARD_REPLY__INIT;
    r.ok = true;
    r.bytes_loaded = 100000;
    r.load_seconds = 0.01;
    r.resident_node = 0;
    return r;
}

/* ---- gguf ---- */

static void read_file(const char *path, struct buf *b)
{
    FILE *f = fopen(path, "rb");
    uint8_t chunk[65536];
    size_t n;
    if (!f)
        fuzz_die("%s: %s", path, strerror(errno));
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        add(b, chunk, n);
    fclose(f);
}

static void seeds_gguf(void)
{
    /* whole models of 13 tokens and one layer: every tensor the loader binds */
    static const struct fuzz_model_opts shapes[] = {
        {8, 1, "q8_0", "i2_s"},
        {8, 1, "f32", "i2_s"},
    };
    static const char *const names[] = {"model-i2s-q8", "model-i2s-f32"};
    for (int i = 0; i < 2; i++) {
        struct buf b = {0};
        read_file(fuzz_tiny_model(&shapes[i]), &b);
        put_buf("gguf", names[i], &b);
    }
    /* the real 517-token vocabulary, cut after the header: the tensors run past the end */
    struct buf b = {0};
    read_file(fuzz_tiny_model(NULL), &b);
    struct gguf_file f;
    struct errbuf e;
    if (gguf_open_mem(&f, b.p, b.n, "tiny", &e) < 0)
        fuzz_die("%s", e.msg);
    size_t header = (size_t)f.data_offset;
    gguf_close(&f);
    put("gguf", "vocab-517-header-only", b.p, header < 60000 ? header : 60000);
    free(b.p);
    b = (struct buf){0};

    /* every value type, nested arrays, an alignment key and three small tensors */
    struct gguf_writer *w = gguf_writer_new();
    static const struct strview words[] = {{"alpha", 5}, {"", 0}, {"\xc3\xa9t\xc3\xa9", 5}};
    static const int32_t ints[] = {-1, 0, 7, 2147483647};
    static const float floats[] = {0.5f, -2.0f, 1e30f};
    gguf_w_str(w, "general.architecture", "bitnet-b1.58");
    gguf_w_u32(w, "general.alignment", 64);
    gguf_w_u32(w, "u32", 42);
    gguf_w_i32(w, "i32", -42);
    gguf_w_u64(w, "u64", 1ull << 40);
    gguf_w_f32(w, "f32", 3.25f);
    gguf_w_bool(w, "bool", true);
    gguf_w_arr_str(w, "arr.str", words, 3);
    gguf_w_arr_i32(w, "arr.i32", ints, 4);
    gguf_w_arr_f32(w, "arr.f32", floats, 3);
    /* ARRAY of 2 ARRAYs of U8: type 9, then (type 0, n, bytes) twice */
    static const uint8_t nested[] = {0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 2,
                                     0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3};
    uint8_t arr[12 + sizeof nested] = {9, 0, 0, 0, 2};
    memcpy(arr + 12, nested, sizeof nested);
    gguf_w_raw(w, "arr.nested", 9, arr, sizeof arr);
    static const uint8_t u16[] = {0x34, 0x12}, i8[] = {0x80};
    static const uint8_t f64[] = {0, 0, 0, 0, 0, 0, 0xf0, 0x3f};
    gguf_w_raw(w, "u16", 2, u16, 2);
    gguf_w_raw(w, "i8", 1, i8, 1);
    gguf_w_raw(w, "f64", 12, f64, 8);
    uint64_t ne_a[1] = {4}, ne_b[2] = {32, 2}, ne_c[2] = {128, 1};
    int ta = gguf_w_tensor(w, "a", 0, 1, ne_a, &e), tb = gguf_w_tensor(w, "b", 1, 2, ne_b, &e),
        tc = gguf_w_tensor(w, "c", 8, 2, ne_c, &e);
    if (ta < 0 || tb < 0 || tc < 0)
        fuzz_die("%s", e.msg);
    char path[256];
    snprintf(path, sizeof path, "%s/kv-types", fuzz_tmpdir());
    FILE *fp = fopen(path, "wb");
    uint8_t zeros[256] = {0};
    if (!fp || gguf_w_begin(w, fp, &e) < 0 ||
        gguf_w_data(w, fp, ta, zeros, gguf_w_tensor_nbytes(w, ta), &e) < 0 ||
        gguf_w_data(w, fp, tb, zeros, gguf_w_tensor_nbytes(w, tb), &e) < 0 ||
        gguf_w_data(w, fp, tc, zeros, gguf_w_tensor_nbytes(w, tc), &e) < 0 ||
        gguf_w_end(w, fp, &e) < 0 || fclose(fp) != 0)
        fuzz_die("kv-types: %s", e.msg);
    gguf_writer_free(w);
    read_file(path, &b);
    put_buf("gguf", "kv-types", &b);
    static const uint8_t header_only[] = {'G', 'G', 'U', 'F', 3, 0, 0, 0, 0, 0, 0, 0,
                                          0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    put("gguf", "empty-v3", header_only, sizeof header_only);
}

/* ---- tokenizer ---- */

static void seeds_tokenizer(void)
{
    static const struct {
        const char *name;
        uint8_t mode;
        const char *text;
    } texts[] = {
        {"text-plain", 0, "Hello world! It's 2024: 3.14159 apples, don't you think?\n\n  x"},
        {"text-unicode", 0, "caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80 \xd0\x9f\xd1\x80"
                            "\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 \t\r\n"},
        {"text-special", 2, "<|begin_of_text|>System: hi<|eot_id|>User: <|eot_id"},
        {"text-special-bos", 6, "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"},
        {"text-invalid", 0, "ab\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80z"},
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        struct buf b = {0};
        add(&b, &texts[i].mode, 1);
        add(&b, texts[i].text, strlen(texts[i].text));
        put_buf("tokenizer", texts[i].name, &b);
    }
    /* ids: ordinary ones, specials, and bytes of one character split over tokens (the
     * GPT-2 alphabet puts bytes 0xe2 0x82 0xac at ids 94, 224 and 253 in Llama-3) */
    static const int32_t ids[] = {9906, 1917, 0, 128000, 128009, 94, 224, 253, 128255, 13};
    for (uint8_t mode = 1; mode <= 3; mode += 2) {
        struct buf b = {0};
        add(&b, &mode, 1);
        add(&b, ids, sizeof ids);
        put_buf("tokenizer", mode == 1 ? "ids" : "ids-render-special", &b);
    }
}

/* ---- wire: one envelope of each kind ---- */

static void seeds_wire(void)
{
    struct buf b = {0};
    Bitnet__Hello h = hello_worker("w0");
    h.data_endpoint = "ipc:///run/w0.data";
#define PUT(name, env)                                                                     \
    do {                                                                                   \
        Bitnet__Envelope env2_ = env;                                                      \
        encode(&env2_, &b);                                                                \
        put_buf("wire", name, &b);                                                         \
    } while (0)
    PUT("hello", ENV(1, HELLO, &h));
    Bitnet__HelloReply hr = BITNET__HELLO_REPLY__INIT;
    hr.accepted = true;
    hr.software_version = "bitnetd 0.1.0";
    hr.protocol_version = 1;
    PUT("hello-reply", ENV(1, HELLO_REPLY, &hr));
    Bitnet__Error er = BITNET__ERROR__INIT;
    er.code = BITNET__ERROR_CODE__ERROR_CODE_BAD_REQUEST;
    er.message = "what: detail";
    PUT("error", ENV(7, ERROR, &er));
    Bitnet__Ack ack = BITNET__ACK__INIT;
    ack.detail = "ok";
    PUT("ack", ENV(7, ACK, &ack));
    Bitnet__LoadShard ls = BITNET__LOAD_SHARD__INIT;
    uint32_t cpus[] = {0, 1};
    char *keys[] = {"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"};
    ls.model_path = "/m.gguf";
    ls.model_sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    ls.layer_end = 2;
    ls.has_embedding = ls.has_output = true;
    ls.threads = 2;
    ls.numa_node = 0;
    ls.n_cpus = 2;
    ls.cpus = cpus;
    ls.kv_ctx = 64;
    ls.kv_type = BITNET__ELEM_TYPE__ELEM_TYPE_Q8;
    ls.act_type = BITNET__ELEM_TYPE__ELEM_TYPE_BF16;
    ls.next_endpoint = "tcp://h:5601";
    ls.next_server_key = keys[0];
    ls.max_sequences = 4;
    ls.n_data_sender_keys = 1;
    ls.data_sender_keys = keys;
    ls.tensor_digests.len = 64;
    ls.tensor_digests.data = (uint8_t *)ls.model_sha256;
    PUT("load-shard", ENV(2, LOAD_SHARD, &ls));
    Bitnet__LoadShardReply lr = loaded();
    PUT("load-shard-reply", ENV(2, LOAD_SHARD_REPLY, &lr));
    Bitnet__Forward fw = BITNET__FORWARD__INIT;
    uint32_t seq[3] = {0, 0, 1}, pos[3] = {0, 1, 0};
    int32_t tok[3] = {1, 2, 3};
    protobuf_c_boolean want[3] = {0, 1, 1};
    Bitnet__StageTiming st = BITNET__STAGE_TIMING__INIT, *stp = &st;
    st.worker_id = "w0";
    st.layer_end = 1;
    st.compute_us = 10;
    fw.step_id = 1;
    fw.n_rows = 3;
    fw.n_seq_ids = fw.n_positions = fw.n_token_ids = fw.n_want_logits = 3;
    fw.seq_ids = seq, fw.positions = pos, fw.token_ids = tok, fw.want_logits = want;
    fw.top_k = 4;
    PUT("forward-ids", ENV(0, FORWARD, &fw));
    uint16_t half[3 * 4] = {0x3c00, 0xbc00, 0x0001, 0x7bff};
    fw.n_token_ids = 0;
    fw.token_ids = NULL;
    fw.hidden_type = BITNET__ELEM_TYPE__ELEM_TYPE_F16;
    fw.n_embd = 4;
    fw.hidden.data = (uint8_t *)half;
    fw.hidden.len = sizeof half;
    fw.n_timings = 1;
    fw.timings = &stp;
    PUT("forward-hidden", ENV(0, FORWARD, &fw));
    Bitnet__ForwardResult fr = BITNET__FORWARD_RESULT__INIT;
    int32_t am[2] = {5, 1}, top[4] = {5, 2, 1, 0};
    float tl[4] = {3, 2, 1.5f, 0}, logits[2 * 6] = {0, 1, 2, 3, 4, 5, 5, 4, 3, 2, 1, 0};
    fr.step_id = 1;
    fr.n_rows = 2;
    fr.n_seq_ids = fr.n_positions = fr.n_argmax = 2;
    fr.seq_ids = seq + 1, fr.positions = pos + 1, fr.argmax = am;
    fr.n_vocab = 6;
    fr.top_k = 2;
    fr.n_top_ids = fr.n_top_logits = 4;
    fr.top_ids = top, fr.top_logits = tl;
    PUT("forward-result-topk", ENV(0, FORWARD_RESULT, &fr));
    fr.top_k = 0;
    fr.n_top_ids = fr.n_top_logits = 0;
    fr.logits.data = (uint8_t *)logits;
    fr.logits.len = sizeof logits;
    PUT("forward-result-logits", ENV(0, FORWARD_RESULT, &fr));
    Bitnet__KvOp kv = BITNET__KV_OP__INIT;
    kv.kind = BITNET__KV_OP_KIND__KV_OP_KIND_TRUNCATE;
    kv.seq_id = 1;
    kv.n_positions = 3;
    PUT("kv-op", ENV(3, KV_OP, &kv));
    Bitnet__Heartbeat hb = BITNET__HEARTBEAT__INIT;
    hb.role = BITNET__ROLE__ROLE_WORKER;
    hb.sender = "w0";
    hb.monotonic_ms = 12345;
    hb.cpu_busy = 0.5f;
    hb.busy_step_id = 1;
    PUT("heartbeat", ENV(0, HEARTBEAT, &hb));
    Bitnet__StatusRequest sr = BITNET__STATUS_REQUEST__INIT;
    PUT("status-request", ENV(4, STATUS_REQUEST, &sr));
    Bitnet__StatusReply srp = BITNET__STATUS_REPLY__INIT;
    srp.worker_id = "w0";
    srp.loaded = true;
    srp.layer_end = 2;
    srp.n_cpus = 2;
    srp.cpus = cpus;
    srp.model_sha256 = ls.model_sha256;
    PUT("status-reply", ENV(4, STATUS_REPLY, &srp));
    Bitnet__SamplingParams sp = BITNET__SAMPLING_PARAMS__INIT;
    sp.temp = 0.8f;
    sp.top_k = 40;
    sp.top_p = 0.95f;
    sp.repeat_penalty = 1.1f;
    sp.repeat_last_n = 64;
    sp.seed = 1;
    Bitnet__GenerateRequest gr = BITNET__GENERATE_REQUEST__INIT;
    char *stops[] = {"\n\n", "User:"};
    gr.input_case = BITNET__GENERATE_REQUEST__INPUT_CHAT;
    gr.chat = "What is BitNet?";
    gr.system = "Be brief.";
    gr.n_predict = 16;
    gr.sampling = &sp;
    gr.stream = gr.return_ids = true;
    gr.n_stop = 2;
    gr.stop = stops;
    PUT("generate-request", ENV(5, GENERATE_REQUEST, &gr));
    Bitnet__GenerateChunk gc = BITNET__GENERATE_CHUNK__INIT;
    Bitnet__GenerateStats gs = BITNET__GENERATE_STATS__INIT;
    gc.job_id = 1;
    gc.text.data = (uint8_t *)"Hi";
    gc.text.len = 2;
    gc.n_token_ids = 2;
    gc.token_ids = tok;
    gc.done = true;
    gc.stop_reason = BITNET__STOP_REASON__STOP_REASON_LENGTH;
    gc.stats = &gs;
    PUT("generate-chunk", ENV(5, GENERATE_CHUNK, &gc));
    Bitnet__Cancel ca = BITNET__CANCEL__INIT;
    ca.job_id = 1;
    PUT("cancel", ENV(6, CANCEL, &ca));
    Bitnet__Drain dr = BITNET__DRAIN__INIT;
    dr.timeout_ms = 1000;
    PUT("drain", ENV(7, DRAIN, &dr));
    Bitnet__Shutdown sh = BITNET__SHUTDOWN__INIT;
    sh.drain_first = true;
    PUT("shutdown", ENV(8, SHUTDOWN, &sh));
    Bitnet__WorkersRequest wq = BITNET__WORKERS_REQUEST__INIT;
    PUT("workers-request", ENV(9, WORKERS_REQUEST, &wq));
    Bitnet__WorkerInfo wi = BITNET__WORKER_INFO__INIT, *wip = &wi;
    wi.state = BITNET__WORKER_STATE__WORKER_STATE_READY;
    wi.endpoint = "ipc:///run/w0.data";
    wi.status = &srp;
    Bitnet__WorkersReply wr = BITNET__WORKERS_REPLY__INIT;
    wr.n_workers = 1;
    wr.workers = &wip;
    PUT("workers-reply", ENV(9, WORKERS_REPLY, &wr));
    Bitnet__PlacementRequest pq = BITNET__PLACEMENT_REQUEST__INIT;
    pq.dry_run = true;
    PUT("placement-request", ENV(10, PLACEMENT_REQUEST, &pq));
    Bitnet__PlacementReply pr = BITNET__PLACEMENT_REPLY__INIT;
    pr.table_json = "{\"workers\":[]}";
    PUT("placement-reply", ENV(10, PLACEMENT_REPLY, &pr));
    Bitnet__DaemonStatusReply ds = BITNET__DAEMON_STATUS_REPLY__INIT;
    ds.state = BITNET__DAEMON_STATE__DAEMON_STATE_READY;
    ds.n_workers = 2;
    PUT("daemon-status-reply", ENV(11, DAEMON_STATUS_REPLY, &ds));
    Bitnet__EvalRequest ev = BITNET__EVAL_REQUEST__INIT;
    ev.n_token_ids = 3;
    ev.token_ids = tok;
    PUT("eval-request", ENV(12, EVAL_REQUEST, &ev));
    Bitnet__EvalReply ep = BITNET__EVAL_REPLY__INIT;
    ep.n_positions = 2;
    ep.n_vocab = 6;
    ep.logits.data = (uint8_t *)logits;
    ep.logits.len = sizeof logits;
    PUT("eval-reply", ENV(12, EVAL_REPLY, &ep));
#undef PUT
}

/* ---- worker: a stage of the tiny model ---- */

static Bitnet__Forward forward_ids(uint64_t step, uint32_t n, uint32_t *seq, uint32_t *pos,
                                   int32_t *tok, protobuf_c_boolean *want, uint32_t top_k)
{
    Bitnet__Forward fw = BITNET__FORWARD__INIT;
    fw.step_id = step;
    fw.n_rows = n;
    fw.n_seq_ids = fw.n_positions = fw.n_token_ids = fw.n_want_logits = n;
    fw.seq_ids = seq, fw.positions = pos, fw.token_ids = tok, fw.want_logits = want;
    fw.top_k = top_k;
    return fw;
}

static void seeds_worker(void)
{
    const char *model = fuzz_tiny_model(NULL);
    struct bitnet_model m;
    struct errbuf e;
    char sha[MODEL_ID_HEX_LEN + 1];
    if (bitnet_model_load(&m, model, &e) < 0 || model_id_of_gguf(&m.file, sha, &e) < 0)
        fuzz_die("%s", e.msg);
    struct tensor_digests dg;
    if (tensor_digests_get(&m.file, sha, &dg, &e) < 0)
        fuzz_die("%s", e.msg);
    uint32_t n_embd = m.hp.n_embd;

    uint32_t seq[4] = {0, 0, 0, 1}, pos[4] = {0, 1, 2, 0};
    int32_t tok[4] = {9, 300, 516, 40};
    protobuf_c_boolean want[4] = {0, 0, 1, 1};
    struct buf b = {0};
    Bitnet__Forward fw = forward_ids(1, 4, seq, pos, tok, want, 0);
    record(&b, 1, ENV(0, FORWARD, &fw));
    uint32_t pos2[1] = {3};
    Bitnet__Forward next = forward_ids(2, 1, seq, pos2, tok, want + 3, 5);
    record(&b, 1, ENV(0, FORWARD, &next));
    put_buf("worker", "forward-logits-then-topk", &b);

    Bitnet__KvOp kv = BITNET__KV_OP__INIT;
    kv.kind = BITNET__KV_OP_KIND__KV_OP_KIND_TRUNCATE;
    kv.n_positions = 1;
    Bitnet__StatusRequest sr = BITNET__STATUS_REQUEST__INIT;
    Bitnet__HelloReply hr = BITNET__HELLO_REPLY__INIT;
    hr.accepted = true;
    Bitnet__Error unauth = BITNET__ERROR__INIT;
    unauth.code = BITNET__ERROR_CODE__ERROR_CODE_UNAUTHORIZED;
    unauth.message = "not joined";
    record(&b, 0, ENV(1, HELLO_REPLY, &hr));
    record(&b, 1, ENV(0, FORWARD, &fw));
    record(&b, 0, ENV(2, KV_OP, &kv));
    Bitnet__Forward again = forward_ids(3, 1, seq, pos + 1, tok, want + 3, 1);
    record(&b, 1, ENV(0, FORWARD, &again));
    record(&b, 0, ENV(3, STATUS_REQUEST, &sr));
    record(&b, 0, ENV(4, ERROR, &unauth));
    put_buf("worker", "control-kv-status", &b);

    /* the model in two stages: layer 0 with the embedding sends hidden states on; layer
     * 1 with the output takes them */
    Bitnet__LoadShard ls = BITNET__LOAD_SHARD__INIT;
    ls.model_path = "/ignored: the harness loads its own model";
    ls.model_sha256 = sha;
    ls.layer_begin = 0;
    ls.layer_end = 1;
    ls.has_embedding = true;
    ls.threads = 1;
    ls.numa_node = -1;
    ls.kv_ctx = 32;
    ls.kv_type = BITNET__ELEM_TYPE__ELEM_TYPE_F16;
    ls.act_type = BITNET__ELEM_TYPE__ELEM_TYPE_BF16;
    ls.next_endpoint = "inproc://fuzz-next";
    ls.max_sequences = 2;
    record(&b, 0, ENV(5, LOAD_SHARD, &ls));
    record(&b, 1, ENV(0, FORWARD, &fw));
    put_buf("worker", "load-first-stage", &b);

    ls.layer_begin = 1;
    ls.layer_end = FUZZ_TINY_LAYERS;
    ls.has_embedding = false;
    ls.has_output = true;
    ls.lm_head_q8 = true;
    ls.kv_type = BITNET__ELEM_TYPE__ELEM_TYPE_Q8;
    record(&b, 0, ENV(5, LOAD_SHARD, &ls));
    float *rows = calloc(2 * (size_t)n_embd, sizeof *rows);
    for (uint32_t i = 0; i < 2 * n_embd; i++)
        rows[i] = (float)((int)(i % 7) - 3) * 0.25f;
    Bitnet__Forward hid = forward_ids(1, 2, seq, pos, NULL, want + 2, 3);
    hid.n_token_ids = 0;
    if (wire_forward_set_hidden(&hid, rows, 2, n_embd, BITNET__ELEM_TYPE__ELEM_TYPE_F32, &e) < 0)
        fuzz_die("%s", e.msg);
    record(&b, 1, ENV(0, FORWARD, &hid));
    free(hid.hidden.data);
    free(rows);
    put_buf("worker", "load-last-stage", &b);

    /* a remote worker's load: the tensor digests of its copy are checked */
    ls.layer_begin = 0;
    ls.has_embedding = true;
    ls.lm_head_q8 = false;
    ls.tensor_digests.data = dg.sha;
    ls.tensor_digests.len = dg.n * TENSOR_DIGEST_LEN;
    record(&b, 0, ENV(6, LOAD_SHARD, &ls));
    record(&b, 1, ENV(0, FORWARD, &fw));
    put_buf("worker", "load-with-digests", &b);
    tensor_digests_free(&dg);
    bitnet_model_free(&m);
}

/* ---- daemon: conversations with bitnetd ---- */

/* The key pairs of the CURVE example in the ZeroMQ reference (zmq_curve(7)): the
 * daemon's and the remote worker's in fuzz_daemon, a key file and lists in fuzz_keys. */
static const char SERVER_PUB[] = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
static const char SERVER_SEC[] = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6";
static const char CLIENT_PUB[] = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";

static void seeds_daemon(void)
{
    const char *model = fuzz_tiny_model(NULL);
    struct bitnet_model m;
    struct errbuf e;
    if (bitnet_model_load(&m, model, &e) < 0)
        fuzz_die("%s", e.msg);
    struct tokenizer *tok = tokenizer_from_gguf(&m.file, &e);
    if (!tok)
        fuzz_die("%s", e.msg);
    const char *prompt = "Hello there";
    int32_t *ids;
    size_t n_prompt;
    if (tokenizer_encode(tok, prompt, strlen(prompt), false, true, &ids, &n_prompt, &e) < 0 ||
        n_prompt > 8)
        fuzz_die("prompt: %s", e.msg);
    uint32_t n_vocab = m.hp.n_vocab;
    uint8_t mode;
    struct buf b = {0};

    /* start-up: local w0 says Hello and waits for remote w1 (over tcp, with its CURVE key
     * and data endpoint); w1's Hello makes the daemon send LoadShard to w1 (the first
     * request id after WORKERS_REQUEST_ID0), then to w0 (the second); both load, each
     * answered with a StatusRequest; then a greedy job of 2 tokens */
    mode = 0;
    add(&b, &mode, 1);
    Bitnet__Hello h0 = hello_worker("w0"), h1 = hello_worker("w1");
    h1.curve_public_key = (char *)CLIENT_PUB;
    h1.data_endpoint = "tcp://127.0.0.1:9";
    Bitnet__LoadShardReply lr = loaded();
    record(&b, 1, ENV(1, HELLO, &h0));
    record(&b, 2, ENV(1, HELLO, &h1));
    record(&b, 2, ENV(WORKERS_REQUEST_ID0 + 1, LOAD_SHARD_REPLY, &lr));
    record(&b, 1, ENV(WORKERS_REQUEST_ID0 + 2, LOAD_SHARD_REPLY, &lr));
    Bitnet__SamplingParams greedy = BITNET__SAMPLING_PARAMS__INIT;
    greedy.repeat_penalty = 1.0f; /* temp 0 and no penalty: the workers' argmax will do */
    Bitnet__GenerateRequest gr = BITNET__GENERATE_REQUEST__INIT;
    gr.input_case = BITNET__GENERATE_REQUEST__INPUT_PROMPT;
    gr.prompt = (char *)prompt;
    gr.n_predict = 2;
    gr.sampling = &greedy;
    gr.stream = gr.return_ids = true;
    record(&b, 0, ENV(100, GENERATE_REQUEST, &gr));
    /* step 1: the prompt, its last row's argmax; step 2: the one new token */
    uint32_t slot[1] = {0}, last[1] = {(uint32_t)n_prompt - 1};
    int32_t am[1] = {300};
    Bitnet__ForwardResult fr = BITNET__FORWARD_RESULT__INIT;
    fr.step_id = 1;
    fr.n_rows = 1;
    fr.n_seq_ids = fr.n_positions = fr.n_argmax = 1;
    fr.seq_ids = slot, fr.positions = last, fr.argmax = am;
    fr.n_vocab = n_vocab;
    record(&b, 3, ENV(0, FORWARD_RESULT, &fr));
    uint32_t after[1] = {(uint32_t)n_prompt};
    fr.step_id = 2;
    fr.positions = after;
    record(&b, 3, ENV(0, FORWARD_RESULT, &fr));
    put_buf("daemon", "start-and-generate", &b);

    /* ready: an eval of 3 positions (full logits rows), status and workers queries */
    mode = 1;
    add(&b, &mode, 1);
    int32_t ev_ids[3] = {1, 2, 3};
    Bitnet__EvalRequest ev = BITNET__EVAL_REQUEST__INIT;
    ev.n_token_ids = 3;
    ev.token_ids = ev_ids;
    record(&b, 0, ENV(101, EVAL_REQUEST, &ev));
    uint32_t slots3[3] = {0, 0, 0}, pos3[3] = {0, 1, 2};
    int32_t am3[3] = {1, 2, 3};
    float *logits = calloc(3 * (size_t)n_vocab, sizeof *logits);
    fr.step_id = 1;
    fr.n_rows = 3;
    fr.n_seq_ids = fr.n_positions = fr.n_argmax = 3;
    fr.seq_ids = slots3, fr.positions = pos3, fr.argmax = am3;
    fr.logits.data = (uint8_t *)logits;
    fr.logits.len = 3 * (size_t)n_vocab * sizeof *logits;
    record(&b, 3, ENV(0, FORWARD_RESULT, &fr));
    free(logits);
    Bitnet__StatusRequest sr = BITNET__STATUS_REQUEST__INIT;
    Bitnet__WorkersRequest wq = BITNET__WORKERS_REQUEST__INIT;
    record(&b, 0, ENV(102, STATUS_REQUEST, &sr));
    record(&b, 0, ENV(103, WORKERS_REQUEST, &wq));
    /* the eval's end dropped its KV slot (the first request id), the query asked the
     * workers for their status (the second) */
    Bitnet__Ack drop_ack = BITNET__ACK__INIT;
    record(&b, 1, ENV(WORKERS_REQUEST_ID0 + 1, ACK, &drop_ack));
    record(&b, 2, ENV(WORKERS_REQUEST_ID0 + 1, ACK, &drop_ack));
    Bitnet__StatusReply st = BITNET__STATUS_REPLY__INIT;
    st.worker_id = "w0";
    st.loaded = true;
    record(&b, 1, ENV(WORKERS_REQUEST_ID0 + 2, STATUS_REPLY, &st));
    st.worker_id = "w1";
    record(&b, 2, ENV(WORKERS_REQUEST_ID0 + 2, STATUS_REPLY, &st));
    put_buf("daemon", "ready-eval-status", &b);

    /* ready: a streaming sampled job with stop strings, a worker's busy heartbeat and
     * Error for its step, a cancel, drain and shutdown */
    add(&b, &mode, 1);
    Bitnet__SamplingParams sp = BITNET__SAMPLING_PARAMS__INIT;
    sp.temp = 0.7f;
    sp.top_k = 5;
    sp.top_p = 0.9f;
    sp.repeat_penalty = 1.1f;
    sp.repeat_last_n = 8;
    sp.seed = 3;
    char *stops[] = {"in"};
    gr.input_case = BITNET__GENERATE_REQUEST__INPUT_CHAT;
    gr.chat = "Hi";
    gr.system = "Be brief";
    gr.n_predict = 0;
    gr.sampling = &sp;
    gr.n_stop = 1;
    gr.stop = stops;
    record(&b, 0, ENV(104, GENERATE_REQUEST, &gr));
    Bitnet__Heartbeat hb = BITNET__HEARTBEAT__INIT;
    hb.role = BITNET__ROLE__ROLE_WORKER;
    hb.sender = "w1";
    hb.busy_step_id = 1;
    record(&b, 2, ENV(0, HEARTBEAT, &hb));
    Bitnet__Error er = BITNET__ERROR__INIT;
    er.code = BITNET__ERROR_CODE__ERROR_CODE_INTERNAL;
    er.message = "forward step 1: failed";
    record(&b, 1, ENV(1, ERROR, &er));
    Bitnet__Cancel ca = BITNET__CANCEL__INIT;
    ca.job_id = 1;
    record(&b, 0, ENV(105, CANCEL, &ca));
    Bitnet__Ack ack = BITNET__ACK__INIT;
    record(&b, 1, ENV(WORKERS_REQUEST_ID0 + 1, ACK, &ack));
    uint8_t later = 200; /* the timers 20 s on: step and drain timeouts */
    raw_record(&b, 4, &later, 1);
    Bitnet__Drain dr = BITNET__DRAIN__INIT;
    dr.timeout_ms = 50;
    record(&b, 0, ENV(106, DRAIN, &dr));
    Bitnet__Shutdown sh = BITNET__SHUTDOWN__INIT;
    record(&b, 0, ENV(107, SHUTDOWN, &sh));
    put_buf("daemon", "ready-sample-cancel-drain", &b);

    /* starting: what a client and strangers may say; a Hello of a client, a refused one */
    mode = 0;
    add(&b, &mode, 1);
    Bitnet__Hello hc = BITNET__HELLO__INIT;
    hc.role = BITNET__ROLE__ROLE_CLIENT;
    hc.protocol_version = BITNET_PROTOCOL_VERSION;
    record(&b, 0, ENV(1, HELLO, &hc));
    record(&b, 0, ENV(2, GENERATE_REQUEST, &gr));
    Bitnet__PlacementRequest pq = BITNET__PLACEMENT_REQUEST__INIT;
    record(&b, 0, ENV(3, PLACEMENT_REQUEST, &pq));
    record(&b, 1, ENV(4, HELLO, &hc));
    record(&b, 2, ENV(5, HELLO, &h0));
    record(&b, 5, ENV(6, HELLO, &h1)); /* remote w1 on the local socket */
    record(&b, 6, ENV(7, HELLO, &h0)); /* local w0 over tcp */
    h1.curve_public_key = (char *)SERVER_PUB;
    record(&b, 2, ENV(8, HELLO, &h1)); /* a key other than its connection's */
    raw_record(&b, 0, "\x08\x02\x12\x01", 4); /* protocol version 2 */
    put_buf("daemon", "starting-strangers", &b);

    free(ids);
    tokenizer_free(tok);
    bitnet_model_free(&m);
}

/* ---- config, keys, zap ---- */


static void put_text(const char *target, const char *name, uint8_t mode, const char *text)
{
    struct buf b = {0};
    if (mode != 0xff)
        add(&b, &mode, 1);
    add(&b, text, strlen(text));
    put_buf(target, name, &b);
}

static void seeds_config(void)
{
    put_text("config", "all-settings", 0xff,
             "; bitnetd settings\n[daemon]\nmodel = /srv/m.gguf\nworkers = 2\n"
             "layer_map = 0-2,3-7\nthreads_per_worker = 2\nsplit_cpus = true\n"
             "run_dir = /tmp/bitnetd-fuzz\nmax_sequences = 4\nmax_jobs_per_client = 3\n"
             "ctx = 512\nkv_type = q8\nlm_head = q8\nact_type = bf16\nprefill_chunk = 32\n"
             "pipeline_depth = 2\nworker_bin = /usr/bin/bitnet-worker\n"
             "heartbeat_timeout = 1000\nforeground = yes\n[other]\nkey = value\n");
    put_text("config", "remote", 0xff,
             "[daemon]\nmodel=m.gguf\nworkers=auto\nlisten = tcp://0.0.0.0:5600\n"
             "advertise = host-a\ncurve_key = keys/daemon.key\nallow_keys = keys/allowed\n"
             "remote_workers = w1\nworker_timeout = 30\n");
    put_text("config", "errors", 0xff,
             "[daemon]\nmodel = m.gguf\nctx = 9999999999\nworkers = three\n"
             "no equals sign here\n");
}

static void seeds_keys(void)
{
    char text[512];
    snprintf(text, sizeof text, "%s w1\n", CLIENT_PUB);
    put_text("keys", "pub", 0, text);
    snprintf(text, sizeof text,
             "# CURVE key pair written by bitnetctl keygen: keep this file private\n"
             "public-key = %s\nsecret-key = %s\n", SERVER_PUB, SERVER_SEC);
    put_text("keys", "key", 1, text);
    snprintf(text, sizeof text, "# workers\n\n%s w1\n  %s\tw2 extra\n", CLIENT_PUB, SERVER_PUB);
    put_text("keys", "allow-list", 2, text);
    put_text("keys", "allow-dir", 3, text);
    snprintf(text, sizeof text, "%s\n%s\n", CLIENT_PUB, SERVER_PUB);
    put_text("keys", "memory-list", 4, text);
}

static void zap_request(const char *name, const char *version, const char *mechanism,
                        const void *cred, size_t cred_len, int n_frames)
{
    struct buf b = {0};
    const char *frames[6] = {version, "req-1", "bitnetd", "127.0.0.1", "", mechanism};
    for (int i = 0; i < 6 && i < n_frames; i++)
        raw_record(&b, 0, frames[i], strlen(frames[i]));
    if (n_frames > 6)
        raw_record(&b, 0, cred, cred_len);
    put_buf("zap", name, &b);
}

static void seeds_zap(void)
{
    uint8_t listed[32], other[32];
    memset(other, 7, sizeof other);
    zmq_z85_decode(listed, SERVER_PUB);
    zap_request("curve-listed", "1.0", "CURVE", listed, 32, 7);
    zap_request("curve-unlisted", "1.0", "CURVE", other, 32, 7);
    zap_request("null", "1.0", "NULL", NULL, 0, 6);
    zap_request("plain", "1.0", "PLAIN", "user", 4, 7);
    zap_request("bad-version", "2.0", "CURVE", listed, 32, 7);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds DIR   (writes DIR/<target>/<seed>)\n");
        return 2;
    }
    out_dir = argv[1];
    char cache[128];
    snprintf(cache, sizeof cache, "%s/cache", fuzz_tmpdir());
    setenv("XDG_CACHE_HOME", cache, 1);
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST)
        fuzz_die("%s: %s", out_dir, strerror(errno));
    seeds_gguf();
    seeds_tokenizer();
    seeds_wire();
    seeds_worker();
    seeds_daemon();
    seeds_config();
    seeds_keys();
    seeds_zap();
    return 0;
}

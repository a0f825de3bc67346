/* Wire protocol: every envelope body through encode/decode and through real ZeroMQ sockets
 * (ipc and tcp), refusal and counting of hostile input (wrong version, truncation, random
 * bytes, oversize, memory amplification, 5000 fuzzed mutations), hidden-state packing,
 * CURVE and the ZAP allow-list. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "kernels/f16.h"
#include "model/clock.h"
#include "proto/keys.h"
#include "proto/wire.h"
#include "proto/zap.h"
#include "tests/check.h"
#include "tests/util.h"

#define STR(s) ((char *)(s))

/* ---------------------------------------------------------------------------------------
 * One sample envelope per body, every field away from its default where it has one */

enum { N_HIDDEN_ROWS = 3, N_EMBD = 8, N_VOCAB = 5, TOP_K = 2 };

struct samples {
    Bitnet__Error error;
    Bitnet__Ack ack;
    Bitnet__StatusRequest status_request;
    Bitnet__Hello hello;
    Bitnet__HelloReply hello_reply;
    Bitnet__LoadShard load_shard;
    uint32_t cpus[4];
    Bitnet__LoadShardReply load_shard_reply;
    Bitnet__Forward forward_tokens, forward_hidden;
    uint32_t seq[N_HIDDEN_ROWS], pos[N_HIDDEN_ROWS];
    int32_t toks[N_HIDDEN_ROWS];
    protobuf_c_boolean want[N_HIDDEN_ROWS];
    float hidden_f32[N_HIDDEN_ROWS * N_EMBD];
    uint8_t hidden_bf16[N_HIDDEN_ROWS * N_EMBD * 2];
    Bitnet__StageTiming timing[2];
    Bitnet__StageTiming *timings[2];
    Bitnet__ForwardResult result_full, result_topk;
    float logits[2 * N_VOCAB];
    uint8_t logits_bytes[2 * N_VOCAB * 4];
    int32_t argmax[2], top_ids[2 * TOP_K];
    float top_logits[2 * TOP_K];
    Bitnet__KvOp kv_op;
    Bitnet__Heartbeat heartbeat;
    Bitnet__StatusReply status_reply;
    Bitnet__GenerateRequest gen_prompt, gen_chat;
    Bitnet__SamplingParams sampling;
    char *stops[2];
    Bitnet__GenerateChunk chunk_mid, chunk_done;
    Bitnet__GenerateStats stats;
    int32_t chunk_ids[3];
    Bitnet__Cancel cancel;
    Bitnet__Drain drain;
    Bitnet__Shutdown shutdown;
    Bitnet__Resume resume;
    Bitnet__WorkersRequest workers_request;
    Bitnet__WorkersReply workers_reply;
    Bitnet__WorkerInfo wi[2];
    Bitnet__WorkerInfo *wip[2];
    Bitnet__PlacementRequest placement_request;
    Bitnet__PlacementReply placement_reply;
    Bitnet__DaemonStatusReply daemon_status;
    Bitnet__EvalRequest eval_request;
    Bitnet__EvalReply eval_reply;
    Bitnet__Envelope env[40];
    size_t n;
};

static Bitnet__Envelope *add(struct samples *s, Bitnet__Envelope__BodyCase c, void *body)
{
    Bitnet__Envelope *env = &s->env[s->n];
    wire_envelope_init(env, 1000 + s->n);
    s->n++;
    env->body_case = c;
    env->hello = body; /* all bodies share the union's pointer slot */
    return env;
}

static void make_samples(struct samples *s)
{
    memset(s, 0, sizeof *s);
    struct errbuf e;

    bitnet__error__init(&s->error);
    s->error.code = BITNET__ERROR_CODE__ERROR_CODE_KV_FULL;
    s->error.message = STR("kv: position 4096 beyond context 4096");
    add(s, BITNET__ENVELOPE__BODY_ERROR, &s->error);

    bitnet__ack__init(&s->ack);
    s->ack.detail = STR("job 7 cancelled");
    add(s, BITNET__ENVELOPE__BODY_ACK, &s->ack);

    bitnet__status_request__init(&s->status_request);
    add(s, BITNET__ENVELOPE__BODY_STATUS_REQUEST, &s->status_request);

    bitnet__hello__init(&s->hello);
    s->hello.role = BITNET__ROLE__ROLE_WORKER;
    s->hello.software_version = STR("bitnetd 0.1.0 (test)");
    s->hello.protocol_version = BITNET_PROTOCOL_VERSION;
    s->hello.worker_id = STR("host-a/node1");
    s->hello.curve_public_key = STR("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7");
    s->hello.hostname = STR("host-a");
    s->hello.pid = 4242;
    add(s, BITNET__ENVELOPE__BODY_HELLO, &s->hello);

    bitnet__hello_reply__init(&s->hello_reply);
    s->hello_reply.accepted = 1;
    s->hello_reply.reason = STR("welcome");
    s->hello_reply.software_version = STR("bitnetd 0.1.0");
    s->hello_reply.protocol_version = BITNET_PROTOCOL_VERSION;
    add(s, BITNET__ENVELOPE__BODY_HELLO_REPLY, &s->hello_reply);

    bitnet__load_shard__init(&s->load_shard);
    s->load_shard.model_path = STR("/models/2b4t.gguf");
    s->load_shard.model_sha256 =
        STR("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    s->load_shard.layer_begin = 10;
    s->load_shard.layer_end = 20;
    s->load_shard.has_embedding = 0;
    s->load_shard.has_output = 1;
    s->load_shard.threads = 4;
    s->load_shard.numa_node = 1;
    for (int i = 0; i < 4; i++)
        s->cpus[i] = 8 + (uint32_t)i;
    s->load_shard.n_cpus = 4;
    s->load_shard.cpus = s->cpus;
    s->load_shard.kv_ctx = 4096;
    s->load_shard.kv_type = BITNET__ELEM_TYPE__ELEM_TYPE_F16;
    s->load_shard.act_type = BITNET__ELEM_TYPE__ELEM_TYPE_BF16;
    s->load_shard.next_endpoint = STR("tcp://10.0.0.2:5600");
    s->load_shard.next_server_key = STR("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7");
    s->load_shard.max_sequences = 16;
    add(s, BITNET__ENVELOPE__BODY_LOAD_SHARD, &s->load_shard);

    bitnet__load_shard_reply__init(&s->load_shard_reply);
    s->load_shard_reply.ok = 1;
    s->load_shard_reply.error = STR("");
    s->load_shard_reply.bytes_loaded = 123456789012ull;
    s->load_shard_reply.load_seconds = 1.25;
    s->load_shard_reply.resident_node = 1;
    s->load_shard_reply.model_sha256 = s->load_shard.model_sha256;
    add(s, BITNET__ENVELOPE__BODY_LOAD_SHARD_REPLY, &s->load_shard_reply);

    for (int i = 0; i < N_HIDDEN_ROWS; i++) {
        s->seq[i] = (uint32_t)i * 3;
        s->pos[i] = 100 + (uint32_t)i;
        s->toks[i] = 128000 + i;
        s->want[i] = i == N_HIDDEN_ROWS - 1;
    }
    for (int i = 0; i < N_HIDDEN_ROWS * N_EMBD; i++)
        s->hidden_f32[i] = sinf((float)i) * 3.0f;
    for (int i = 0; i < 2; i++) {
        bitnet__stage_timing__init(&s->timing[i]);
        s->timing[i].worker_id = i ? STR("host-b/node0") : STR("host-a/node1");
        s->timing[i].layer_begin = (uint32_t)i * 15;
        s->timing[i].layer_end = (uint32_t)i * 15 + 15;
        s->timing[i].queue_us = 12 + (uint64_t)i;
        s->timing[i].compute_us = 3400;
        s->timing[i].send_us = 56;
        s->timings[i] = &s->timing[i];
    }

    bitnet__forward__init(&s->forward_tokens);
    s->forward_tokens.step_id = 77;
    s->forward_tokens.n_rows = N_HIDDEN_ROWS;
    s->forward_tokens.n_seq_ids = s->forward_tokens.n_positions = N_HIDDEN_ROWS;
    s->forward_tokens.seq_ids = s->seq;
    s->forward_tokens.positions = s->pos;
    s->forward_tokens.n_token_ids = N_HIDDEN_ROWS;
    s->forward_tokens.token_ids = s->toks;
    s->forward_tokens.n_want_logits = N_HIDDEN_ROWS;
    s->forward_tokens.want_logits = s->want;
    s->forward_tokens.top_k = TOP_K;
    add(s, BITNET__ENVELOPE__BODY_FORWARD, &s->forward_tokens);

    s->forward_hidden = s->forward_tokens;
    s->forward_hidden.n_token_ids = 0;
    s->forward_hidden.token_ids = NULL;
    s->forward_hidden.hidden_type = BITNET__ELEM_TYPE__ELEM_TYPE_BF16;
    s->forward_hidden.n_embd = N_EMBD;
    wire_pack_rows(s->hidden_f32, N_HIDDEN_ROWS, N_EMBD, BITNET__ELEM_TYPE__ELEM_TYPE_BF16,
                   s->hidden_bf16, sizeof s->hidden_bf16, &e);
    s->forward_hidden.hidden.data = s->hidden_bf16;
    s->forward_hidden.hidden.len = sizeof s->hidden_bf16;
    s->forward_hidden.n_timings = 2;
    s->forward_hidden.timings = s->timings;
    add(s, BITNET__ENVELOPE__BODY_FORWARD, &s->forward_hidden);

    for (int i = 0; i < 2 * N_VOCAB; i++)
        s->logits[i] = (float)i - 4.5f;
    wire_pack_rows(s->logits, 2, N_VOCAB, BITNET__ELEM_TYPE__ELEM_TYPE_F32, s->logits_bytes,
                   sizeof s->logits_bytes, &e);
    s->argmax[0] = 4;
    s->argmax[1] = 4;
    s->top_ids[0] = 4;
    s->top_ids[1] = 3;
    s->top_ids[2] = 4;
    s->top_ids[3] = 3;
    s->top_logits[0] = -0.5f;
    s->top_logits[1] = -1.5f;
    s->top_logits[2] = 4.5f;
    s->top_logits[3] = 3.5f;
    bitnet__forward_result__init(&s->result_full);
    s->result_full.step_id = 77;
    s->result_full.n_rows = 2;
    s->result_full.n_seq_ids = s->result_full.n_positions = 2;
    s->result_full.seq_ids = s->seq;
    s->result_full.positions = s->pos;
    s->result_full.n_vocab = N_VOCAB;
    s->result_full.logits.data = s->logits_bytes;
    s->result_full.logits.len = sizeof s->logits_bytes;
    s->result_full.n_argmax = 2;
    s->result_full.argmax = s->argmax;
    s->result_full.n_timings = 2;
    s->result_full.timings = s->timings;
    add(s, BITNET__ENVELOPE__BODY_FORWARD_RESULT, &s->result_full);

    s->result_topk = s->result_full;
    s->result_topk.logits.data = NULL;
    s->result_topk.logits.len = 0;
    s->result_topk.top_k = TOP_K;
    s->result_topk.n_top_ids = s->result_topk.n_top_logits = 2 * TOP_K;
    s->result_topk.top_ids = s->top_ids;
    s->result_topk.top_logits = s->top_logits;
    add(s, BITNET__ENVELOPE__BODY_FORWARD_RESULT, &s->result_topk);

    bitnet__kv_op__init(&s->kv_op);
    s->kv_op.kind = BITNET__KV_OP_KIND__KV_OP_KIND_TRUNCATE;
    s->kv_op.seq_id = 3;
    s->kv_op.n_positions = 17;
    add(s, BITNET__ENVELOPE__BODY_KV_OP, &s->kv_op);

    bitnet__heartbeat__init(&s->heartbeat);
    s->heartbeat.role = BITNET__ROLE__ROLE_WORKER;
    s->heartbeat.sender = STR("host-a/node1");
    s->heartbeat.monotonic_ms = 987654321;
    s->heartbeat.active_sequences = 5;
    s->heartbeat.queued_batches = 2;
    s->heartbeat.cpu_busy = 0.75f;
    s->heartbeat.rss_bytes = 1u << 30;
    s->heartbeat.kv_bytes_used = 1u << 20;
    add(s, BITNET__ENVELOPE__BODY_HEARTBEAT, &s->heartbeat);

    bitnet__status_reply__init(&s->status_reply);
    s->status_reply.worker_id = STR("host-a/node1");
    s->status_reply.loaded = 1;
    s->status_reply.layer_begin = 10;
    s->status_reply.layer_end = 20;
    s->status_reply.numa_node = 1;
    s->status_reply.n_cpus = 4;
    s->status_reply.cpus = s->cpus;
    s->status_reply.threads = 4;
    s->status_reply.bytes_loaded = 600000000;
    s->status_reply.requests_served = 31337;
    s->status_reply.malformed_rejected = 3;
    s->status_reply.oversized_rejected = 2;
    s->status_reply.wrong_version_rejected = 1;
    s->status_reply.uptime_seconds = 3600.5;
    s->status_reply.software_version = STR("bitnetd 0.1.0");
    s->status_reply.model_sha256 = s->load_shard.model_sha256;
    add(s, BITNET__ENVELOPE__BODY_STATUS_REPLY, &s->status_reply);

    bitnet__sampling_params__init(&s->sampling);
    s->sampling.temp = 0.8f;
    s->sampling.top_k = 40;
    s->sampling.top_p = 0.95f;
    s->sampling.min_p = 0.05f;
    s->sampling.repeat_penalty = 1.1f;
    s->sampling.repeat_last_n = 64;
    s->sampling.seed = 0xfeedfacecafebeefull;
    s->stops[0] = STR("\n\n");
    s->stops[1] = STR("User:");
    bitnet__generate_request__init(&s->gen_prompt);
    s->gen_prompt.input_case = BITNET__GENERATE_REQUEST__INPUT_PROMPT;
    s->gen_prompt.prompt = STR("Once upon a time");
    s->gen_prompt.n_predict = 64;
    s->gen_prompt.sampling = &s->sampling;
    s->gen_prompt.stream = 1;
    s->gen_prompt.return_ids = 1;
    s->gen_prompt.n_stop = 2;
    s->gen_prompt.stop = s->stops;
    s->gen_prompt.add_bos = 1;
    add(s, BITNET__ENVELOPE__BODY_GENERATE_REQUEST, &s->gen_prompt);

    bitnet__generate_request__init(&s->gen_chat);
    s->gen_chat.input_case = BITNET__GENERATE_REQUEST__INPUT_CHAT;
    s->gen_chat.chat = STR("What is BitNet? \xc3\xa9\xe2\x82\xac");
    s->gen_chat.system = STR("Be brief.");
    s->gen_chat.n_predict = -1;
    add(s, BITNET__ENVELOPE__BODY_GENERATE_REQUEST, &s->gen_chat);

    s->chunk_ids[0] = 9906;
    s->chunk_ids[1] = 1917;
    s->chunk_ids[2] = 0;
    bitnet__generate_chunk__init(&s->chunk_mid);
    s->chunk_mid.job_id = 7;
    s->chunk_mid.text.data = (uint8_t *)"Hello \xe2\x82"; /* ends inside a character */
    s->chunk_mid.text.len = 8;
    s->chunk_mid.n_token_ids = 3;
    s->chunk_mid.token_ids = s->chunk_ids;
    add(s, BITNET__ENVELOPE__BODY_GENERATE_CHUNK, &s->chunk_mid);

    bitnet__generate_stats__init(&s->stats);
    s->stats.n_prompt_tokens = 12;
    s->stats.n_generated = 64;
    s->stats.queue_ms = 0.5;
    s->stats.prompt_ms = 40.25;
    s->stats.ttft_ms = 41;
    s->stats.decode_ms = 900.125;
    bitnet__generate_chunk__init(&s->chunk_done);
    s->chunk_done.job_id = 7;
    s->chunk_done.done = 1;
    s->chunk_done.stop_reason = BITNET__STOP_REASON__STOP_REASON_LENGTH;
    s->chunk_done.stats = &s->stats;
    add(s, BITNET__ENVELOPE__BODY_GENERATE_CHUNK, &s->chunk_done);

    bitnet__cancel__init(&s->cancel);
    s->cancel.job_id = 7;
    add(s, BITNET__ENVELOPE__BODY_CANCEL, &s->cancel);

    bitnet__drain__init(&s->drain);
    s->drain.timeout_ms = 30000;
    add(s, BITNET__ENVELOPE__BODY_DRAIN, &s->drain);

    bitnet__shutdown__init(&s->shutdown);
    s->shutdown.drain_first = 1;
    s->shutdown.timeout_ms = 5000;
    add(s, BITNET__ENVELOPE__BODY_SHUTDOWN, &s->shutdown);

    bitnet__resume__init(&s->resume);
    add(s, BITNET__ENVELOPE__BODY_RESUME, &s->resume);

    bitnet__workers_request__init(&s->workers_request);
    add(s, BITNET__ENVELOPE__BODY_WORKERS_REQUEST, &s->workers_request);

    for (int i = 0; i < 2; i++) {
        bitnet__worker_info__init(&s->wi[i]);
        s->wi[i].state =
            i ? BITNET__WORKER_STATE__WORKER_STATE_DEAD : BITNET__WORKER_STATE__WORKER_STATE_READY;
        s->wi[i].endpoint = i ? STR("tcp://10.0.0.3:5600") : STR("ipc:///run/bitnetd/w0");
        s->wi[i].host = i ? STR("host-b") : STR("host-a");
        s->wi[i].last_heartbeat_ms_ago = i ? 60000 : 250;
        s->wi[i].status = i ? NULL : &s->status_reply;
        s->wip[i] = &s->wi[i];
    }
    bitnet__workers_reply__init(&s->workers_reply);
    s->workers_reply.n_workers = 2;
    s->workers_reply.workers = s->wip;
    add(s, BITNET__ENVELOPE__BODY_WORKERS_REPLY, &s->workers_reply);

    bitnet__placement_request__init(&s->placement_request);
    s->placement_request.model_path = STR("/models/2b4t.gguf");
    s->placement_request.dry_run = 1;
    add(s, BITNET__ENVELOPE__BODY_PLACEMENT_REQUEST, &s->placement_request);

    bitnet__placement_reply__init(&s->placement_reply);
    s->placement_reply.table_json = STR("{\"stages\":[{\"node\":0,\"layers\":[0,15]},"
                                        "{\"node\":1,\"layers\":[15,30]}]}");
    add(s, BITNET__ENVELOPE__BODY_PLACEMENT_REPLY, &s->placement_reply);

    bitnet__daemon_status_reply__init(&s->daemon_status);
    s->daemon_status.state = BITNET__DAEMON_STATE__DAEMON_STATE_READY;
    s->daemon_status.software_version = STR("bitnetd 0.1.0");
    s->daemon_status.protocol_version = BITNET_PROTOCOL_VERSION;
    s->daemon_status.uptime_seconds = 12.5;
    s->daemon_status.model_path = STR("/models/2b4t.gguf");
    s->daemon_status.model_sha256 = s->load_shard.model_sha256;
    s->daemon_status.n_workers = 2;
    s->daemon_status.n_workers_ready = 1;
    s->daemon_status.jobs_running = 3;
    s->daemon_status.jobs_queued = 4;
    s->daemon_status.jobs_done = 99;
    s->daemon_status.tokens_generated = 12345;
    s->daemon_status.malformed_rejected = 6;
    s->daemon_status.oversized_rejected = 7;
    s->daemon_status.wrong_version_rejected = 8;
    add(s, BITNET__ENVELOPE__BODY_DAEMON_STATUS_REPLY, &s->daemon_status);

    bitnet__eval_request__init(&s->eval_request);
    s->eval_request.n_token_ids = 3;
    s->eval_request.token_ids = s->chunk_ids;
    add(s, BITNET__ENVELOPE__BODY_EVAL_REQUEST, &s->eval_request);

    bitnet__eval_reply__init(&s->eval_reply);
    s->eval_reply.n_positions = 2;
    s->eval_reply.n_vocab = N_VOCAB;
    s->eval_reply.logits.data = s->logits_bytes;
    s->eval_reply.logits.len = sizeof s->logits_bytes;
    add(s, BITNET__ENVELOPE__BODY_EVAL_REPLY, &s->eval_reply);
}

/* The sample envelope whose body is `body`. */
static const Bitnet__Envelope *env_of(const struct samples *s, const void *body)
{
    for (size_t i = 0; i < s->n; i++)
        if ((const void *)s->env[i].hello == body)
            return &s->env[i];
    abort();
}

/* Byte-identical re-encoding is a field-by-field comparison that cannot forget a field. */
static int same(const Bitnet__Envelope *a, const Bitnet__Envelope *b)
{
    struct errbuf e;
    uint8_t *pa = NULL, *pb = NULL;
    size_t na, nb;
    int ok = wire_encode(a, &pa, &na, &e) == 0 && wire_encode(b, &pb, &nb, &e) == 0 && na == nb &&
             memcmp(pa, pb, na) == 0;
    free(pa);
    free(pb);
    return ok;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

/* ---------------------------------------------------------------------------------------
 * Encode / decode */

static void test_every_body_covered(const struct samples *s)
{
    const ProtobufCMessageDescriptor *d = &bitnet__envelope__descriptor;
    int bodies = 0;
    for (unsigned i = 0; i < d->n_fields; i++) {
        if (!(d->fields[i].flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
            continue;
        bodies++;
        int found = 0;
        for (size_t j = 0; j < s->n; j++)
            found |= s->env[j].body_case == (Bitnet__Envelope__BodyCase)d->fields[i].id;
        CHECK(found, "body %s has no sample", d->fields[i].name);
    }
    CHECK(bodies == 25, "%d bodies", bodies);
    CHECK(!strcmp(wire_body_name(BITNET__ENVELOPE__BODY_FORWARD), "forward"), "name");
    CHECK(!strcmp(wire_body_name(BITNET__ENVELOPE__BODY__NOT_SET), "none"), "name");
    CHECK(!strcmp(wire_body_name((Bitnet__Envelope__BodyCase)1), "none"), "version is no body");
}

static void test_round_trip(const struct samples *s)
{
    struct wire_rx rx;
    wire_rx_init(&rx, 0);
    for (size_t i = 0; i < s->n; i++) {
        struct errbuf e = {""};
        uint8_t *buf;
        size_t len;
        const char *name = wire_body_name(s->env[i].body_case);
        CHECK(wire_encode(&s->env[i], &buf, &len, &e) == 0, "encode %s: %s", name, e.msg);
        Bitnet__Envelope *d = NULL;
        int rc = wire_decode(buf, len, &rx, &d, &e);
        CHECK(rc == WIRE_OK, "decode %s: %d %s", name, rc, e.msg);
        if (d) {
            CHECK(d->version == BITNET_PROTOCOL_VERSION, "%s version %u", name, d->version);
            CHECK(d->request_id == s->env[i].request_id, "%s request id", name);
            CHECK(d->body_case == s->env[i].body_case, "%s body", name);
            CHECK(same(d, &s->env[i]), "%s differs after the round trip", name);
        }
        wire_free(d);
        free(buf);
    }
    CHECK(rx.counts.accepted == s->n && rx.counts.malformed == 0, "counts %llu",
          (unsigned long long)rx.counts.accepted);

    /* a few fields read back through the decoded structs, not only through re-encoding */
    struct errbuf e;
    uint8_t *buf;
    size_t len;
    Bitnet__Envelope *d = NULL;
    wire_encode(env_of(s, &s->forward_hidden), &buf, &len, &e);
    if (wire_decode(buf, len, NULL, &d, &e) == WIRE_OK) {
        float back[N_HIDDEN_ROWS * N_EMBD];
        CHECK(wire_forward_get_hidden(d->forward, back, N_HIDDEN_ROWS * N_EMBD, &e) == 0, "%s",
              e.msg);
        float worst = 0;
        for (int i = 0; i < N_HIDDEN_ROWS * N_EMBD; i++)
            worst = fmaxf(worst, fabsf(back[i] - s->hidden_f32[i]));
        CHECK(worst <= 3.0f / 256, "bf16 hidden off by %g", (double)worst);
        CHECK(d->forward->n_timings == 2 &&
                  !strcmp(d->forward->timings[1]->worker_id, "host-b/node0"),
              "timings");
        CHECK(d->forward->want_logits[2] && !d->forward->want_logits[0], "want_logits");
        CHECK(wire_forward_get_hidden(d->forward, back, 5, &e) == -1 && strstr(e.msg, "do not fit"),
              "small destination refused: %s", e.msg);
    }
    wire_free(d);
    free(buf);
    d = NULL;
    wire_encode(env_of(s, &s->gen_prompt), &buf, &len, &e);
    if (wire_decode(buf, len, NULL, &d, &e) == WIRE_OK) {
        Bitnet__GenerateRequest *g = d->generate_request;
        CHECK(g->input_case == BITNET__GENERATE_REQUEST__INPUT_PROMPT &&
                  !strcmp(g->prompt, "Once upon a time"),
              "prompt");
        CHECK(g->sampling && g->sampling->seed == 0xfeedfacecafebeefull &&
                  g->sampling->top_k == 40 && g->sampling->temp == 0.8f,
              "sampling");
        CHECK(g->n_stop == 2 && !strcmp(g->stop[1], "User:"), "stop strings");
    }
    wire_free(d);
    free(buf);
}

static void test_version(const struct samples *s)
{
    struct wire_rx rx;
    wire_rx_init(&rx, 0);
    struct errbuf e = {""};
    Bitnet__Envelope env = *env_of(s, &s->hello), *d = (void *)1;
    env.version = 2;
    uint8_t *buf;
    size_t len;
    CHECK(wire_encode(&env, &buf, &len, &e) == 0, "%s", e.msg);
    CHECK(wire_decode(buf, len, &rx, &d, &e) == WIRE_BAD_VERSION && d == NULL, "v2 accepted");
    CHECK(strstr(e.msg, "peer speaks protocol 2, this build speaks 1") != NULL, "message: %s",
          e.msg);
    CHECK(rx.counts.wrong_version == 1 && rx.counts.accepted == 0, "wrong version counted");
    CHECK(wire_rc_error_code(WIRE_BAD_VERSION) == BITNET__ERROR_CODE__ERROR_CODE_VERSION,
          "error code");
    free(buf);

    /* a newer peer's body this build cannot parse is still refused as "wrong version" */
    uint8_t odd[] = {0x08, 0x07, 0x62, 0x03, 0xff, 0xff, 0xff}; /* version 7, field 12 junk */
    CHECK(wire_decode(odd, sizeof odd, &rx, &d, &e) == WIRE_BAD_VERSION &&
              strstr(e.msg, "peer speaks protocol 7"),
          "v7: %s", e.msg);

    /* no version at all */
    uint8_t nover[] = {0x10, 0x05, 0x22, 0x00}; /* request_id 5, empty ack */
    CHECK(wire_decode(nover, sizeof nover, &rx, &d, &e) == WIRE_MALFORMED &&
              strstr(e.msg, "no protocol version"),
          "no version: %s", e.msg);
    CHECK(wire_decode("", 0, &rx, &d, &e) == WIRE_MALFORMED, "empty frame");
    /* no body, and a body from the future */
    uint8_t nobody[] = {0x08, 0x01, 0x10, 0x05};
    CHECK(wire_decode(nobody, sizeof nobody, &rx, &d, &e) == WIRE_NO_BODY &&
              strstr(e.msg, "no body"),
          "no body: %s", e.msg);
    uint8_t future[] = {0x08, 0x01, 0x9a, 0x06, 0x01, 0x00}; /* field 99, 1 byte */
    CHECK(wire_decode(future, sizeof future, &rx, &d, &e) == WIRE_NO_BODY, "unknown body");
    CHECK(rx.counts.wrong_version == 2 && rx.counts.malformed == 4, "counts %llu %llu",
          (unsigned long long)rx.counts.wrong_version, (unsigned long long)rx.counts.malformed);

    /* encode refuses what decode would refuse, so bugs show at the sender */
    Bitnet__Envelope empty;
    wire_envelope_init(&empty, 1);
    CHECK(wire_encode(&empty, &buf, &len, &e) == -1 && buf == NULL, "encoded without body");
}

static void test_validation(const struct samples *s)
{
    struct errbuf e = {""};
    uint8_t *buf;
    size_t len;
    Bitnet__Envelope env = *env_of(s, &s->forward_hidden);
    Bitnet__Forward fw = s->forward_hidden;
    env.forward = &fw;

    fw.n_seq_ids = 2;
    CHECK(wire_encode(&env, &buf, &len, &e) == -1 && strstr(e.msg, "seq_ids has 2 entries"),
          "seq_ids: %s", e.msg);
    fw = s->forward_hidden;
    fw.hidden.len -= 2;
    CHECK(wire_encode(&env, &buf, &len, &e) == -1 && strstr(e.msg, "hidden has 46 bytes"),
          "hidden: %s", e.msg);
    fw = s->forward_hidden;
    fw.hidden_type = 9;
    CHECK(wire_encode(&env, &buf, &len, &e) == -1, "type 9 accepted");
    fw = s->forward_hidden;
    fw.n_token_ids = N_HIDDEN_ROWS;
    fw.token_ids = (int32_t *)s->toks;
    CHECK(wire_encode(&env, &buf, &len, &e) == -1 && strstr(e.msg, "both"), "both: %s", e.msg);

    /* the receiver checks the same things even when the sender skipped them */
    fw = s->forward_hidden;
    fw.n_positions = 1;
    size_t n = bitnet__envelope__get_packed_size(&env);
    buf = malloc(n);
    bitnet__envelope__pack(&env, buf);
    struct wire_rx rx;
    wire_rx_init(&rx, 0);
    Bitnet__Envelope *d = NULL;
    CHECK(wire_decode(buf, n, &rx, &d, &e) == WIRE_MALFORMED && d == NULL &&
              strstr(e.msg, "malformed message: forward: positions"),
          "unvalidated forward: %s", e.msg);
    CHECK(rx.counts.malformed == 1, "counted");
    free(buf);

    Bitnet__ForwardResult r = s->result_topk;
    env = *env_of(s, &s->result_topk);
    env.forward_result = &r;
    r.n_top_ids = 3;
    CHECK(wire_encode(&env, &buf, &len, &e) == -1 && strstr(e.msg, "top_ids"), "%s", e.msg);
    r = s->result_topk;
    r.argmax = (int32_t[]){4, 5};
    CHECK(wire_encode(&env, &buf, &len, &e) == -1 && strstr(e.msg, "outside the vocabulary"), "%s",
          e.msg);

    Bitnet__LoadShard ls = s->load_shard;
    env = *env_of(s, &s->load_shard);
    env.load_shard = &ls;
    ls.model_sha256 = STR("abc");
    CHECK(wire_encode(&env, &buf, &len, &e) == -1 && strstr(e.msg, "model_sha256"), "sha");
    ls = s->load_shard;
    ls.layer_begin = 21;
    CHECK(wire_encode(&env, &buf, &len, &e) == -1 && strstr(e.msg, "reversed"), "range");
    ls = s->load_shard;
    ls.kv_type = BITNET__ELEM_TYPE__ELEM_TYPE_UNSPECIFIED;
    CHECK(wire_encode(&env, &buf, &len, &e) == -1 && strstr(e.msg, "kv_type"), "kv type");
    /* Q8 is a cache element only: a KV type, never the rows of hidden states */
    ls = s->load_shard;
    ls.kv_type = BITNET__ELEM_TYPE__ELEM_TYPE_Q8;
    CHECK(wire_encode(&env, &buf, &len, &e) == 0, "kv type q8: %s", e.msg);
    free(buf);
    ls.act_type = BITNET__ELEM_TYPE__ELEM_TYPE_Q8;
    CHECK(wire_encode(&env, &buf, &len, &e) == -1 && strstr(e.msg, "act_type q8 is not f32, bf16 or f16"),
          "act type q8: %s", e.msg);
    /* NULL strings in a hand-built struct go out as "", not as a crash */
    ls = s->load_shard;
    ls.next_endpoint = NULL;
    ls.next_server_key = NULL;
    CHECK(wire_encode(&env, &buf, &len, &e) == 0, "null strings: %s", e.msg);
    free(buf);
    ls.model_path = NULL;
    CHECK(wire_encode(&env, &buf, &len, &e) == -1 && strstr(e.msg, "model_path"), "no path");
    ls = s->load_shard;
    ls.cpus = NULL;
    CHECK(wire_encode(&env, &buf, &len, &e) == -1 && strstr(e.msg, "NULL"), "null: %s", e.msg);
    r = s->result_topk;
    r.top_ids = NULL;
    env = *env_of(s, &s->result_topk);
    env.forward_result = &r;
    CHECK(wire_encode(&env, &buf, &len, &e) == -1 && strstr(e.msg, "NULL"), "null: %s", e.msg);

    Bitnet__Hello h = s->hello;
    env = *env_of(s, &s->hello);
    env.hello = &h;
    h.role = BITNET__ROLE__ROLE_UNSPECIFIED;
    CHECK(wire_encode(&env, &buf, &len, &e) == -1 && strstr(e.msg, "role"), "role");
    h = s->hello;
    h.curve_public_key = STR("short");
    CHECK(wire_encode(&env, &buf, &len, &e) == -1 && strstr(e.msg, "Z85"), "key");

    Bitnet__GenerateRequest g = s->gen_prompt;
    Bitnet__SamplingParams sp = s->sampling;
    g.sampling = &sp;
    env = *env_of(s, &s->gen_prompt);
    env.generate_request = &g;
    sp.temp = NAN;
    CHECK(wire_encode(&env, &buf, &len, &e) == -1 && strstr(e.msg, "temp"), "nan temp");
    g.sampling = NULL;
    g.input_case = BITNET__GENERATE_REQUEST__INPUT__NOT_SET;
    CHECK(wire_encode(&env, &buf, &len, &e) == -1 && strstr(e.msg, "prompt"), "no input");

    Bitnet__GenerateChunk c = s->chunk_done;
    env = *env_of(s, &s->chunk_done);
    env.generate_chunk = &c;
    c.stop_reason = BITNET__STOP_REASON__STOP_REASON_NONE;
    CHECK(wire_encode(&env, &buf, &len, &e) == -1 && strstr(e.msg, "done"), "done w/o reason");

    Bitnet__KvOp kv = s->kv_op;
    env = *env_of(s, &s->kv_op);
    env.kv_op = &kv;
    kv.kind = 42;
    CHECK(wire_encode(&env, &buf, &len, &e) == -1 && strstr(e.msg, "kind 42"), "kv kind");
}

static void test_hostile_bytes(const struct samples *s)
{
    struct wire_rx rx;
    wire_rx_init(&rx, 0);
    struct errbuf e;
    uint64_t tries = 0, accepted = 0;

    /* every strict prefix of every sample: a cut frame must never pass as a shorter one */
    for (size_t i = 0; i < s->n; i++) {
        uint8_t *buf;
        size_t len;
        wire_encode(&s->env[i], &buf, &len, &e);
        int all_refused = 1;
        for (size_t cut = 0; cut < len; cut++) {
            uint8_t *copy = malloc(cut ? cut : 1); /* exact size, so valgrind sees overreads */
            memcpy(copy, buf, cut);
            Bitnet__Envelope *d = NULL;
            int rc = wire_decode(copy, cut, &rx, &d, &e);
            tries++;
            all_refused &= rc != WIRE_OK;
            if (rc == WIRE_OK)
                accepted++;
            wire_free(d);
            free(copy);
        }
        CHECK(all_refused, "a truncated %s was accepted", wire_body_name(s->env[i].body_case));
        free(buf);
    }

    /* random bytes */
    int random_refused = 1;
    for (int i = 0; i < 1000; i++) {
        size_t len = rng() % 300;
        uint8_t *buf = malloc(len ? len : 1);
        for (size_t j = 0; j < len; j++)
            buf[j] = (uint8_t)rng();
        if (i % 2 && len > 2) { /* half of them start like a real envelope */
            buf[0] = 0x08;
            buf[1] = 0x01;
        }
        Bitnet__Envelope *d = NULL;
        int rc = wire_decode(buf, len, &rx, &d, &e);
        tries++;
        random_refused &= rc != WIRE_OK;
        accepted += rc == WIRE_OK;
        wire_free(d);
        free(buf);
    }
    CHECK(random_refused, "random bytes accepted");

    /* oversize is refused before any parsing: garbage that big is TOO_BIG, not MALFORMED */
    struct wire_rx small;
    wire_rx_init(&small, 1024);
    uint8_t *big = malloc(2000);
    memset(big, 0xff, 2000);
    Bitnet__Envelope *d = NULL;
    CHECK(wire_decode(big, 2000, &small, &d, &e) == WIRE_TOO_BIG &&
              strstr(e.msg, "2000 bytes exceeds the 1024-byte limit"),
          "oversize: %s", e.msg);
    CHECK(wire_decode(big, 1024, &small, &d, &e) == WIRE_MALFORMED, "at the limit is parsed");
    CHECK(small.counts.oversized == 1 && small.counts.malformed == 1, "oversize counted");
    free(big);

    /* a small frame of many empty sub-messages must not expand ~50x in memory */
    size_t nw = 100000;
    Bitnet__WorkerInfo *wi = calloc(nw, sizeof *wi);
    Bitnet__WorkerInfo **wp = calloc(nw, sizeof *wp);
    for (size_t i = 0; i < nw; i++) {
        bitnet__worker_info__init(&wi[i]);
        wp[i] = &wi[i];
    }
    Bitnet__WorkersReply wr = BITNET__WORKERS_REPLY__INIT;
    wr.n_workers = nw;
    wr.workers = wp;
    Bitnet__Envelope env;
    wire_envelope_init(&env, 1);
    env.body_case = BITNET__ENVELOPE__BODY_WORKERS_REPLY;
    env.workers_reply = &wr;
    uint8_t *buf;
    size_t len;
    CHECK(wire_encode(&env, &buf, &len, &e) == 0, "%s", e.msg);
    CHECK(wire_decode(buf, len, &small, &d, &e) == WIRE_TOO_BIG, "over max_bytes");
    CHECK(wire_decode(buf, len, &rx, &d, &e) == WIRE_TOO_BIG &&
              strstr(e.msg, "would need more than"),
          "amplification: %s", e.msg);
    tries++;
    free(buf);
    wr.n_workers = 100; /* a realistic list still decodes */
    wire_encode(&env, &buf, &len, &e);
    CHECK(wire_decode(buf, len, &rx, &d, &e) == WIRE_OK && d->workers_reply->n_workers == 100,
          "100 workers: %s", e.msg);
    tries++;
    accepted++;
    wire_free(d);
    free(buf);
    free(wi);
    free(wp);

    /* fuzz: mutated valid encodings; anything accepted must be valid enough to re-encode */
    int reencode_ok = 1, odd_rc = 0;
    uint64_t fuzz_accepted = 0;
    for (int it = 0; it < 5000; it++) {
        const Bitnet__Envelope *src = &s->env[rng() % s->n];
        uint8_t *enc;
        size_t n;
        wire_encode(src, &enc, &n, &e);
        size_t cap = n + 16;
        uint8_t *m = malloc(cap);
        memcpy(m, enc, n);
        free(enc);
        int muts = 1 + (int)(rng() % 4);
        for (int k = 0; k < muts; k++) {
            size_t at = n ? rng() % n : 0;
            switch (rng() % 6) {
            case 0:
                if (n)
                    m[at] ^= (uint8_t)(1u << (rng() % 8));
                break;
            case 1:
                if (n)
                    m[at] = (uint8_t)rng();
                break;
            case 2:
                n = n ? rng() % n : 0;
                break;
            case 3:
                if (n < cap) {
                    memmove(m + at + 1, m + at, n - at);
                    m[at] = (uint8_t)rng();
                    n++;
                }
                break;
            case 4:
                if (n) {
                    memmove(m + at, m + at + 1, n - at - 1);
                    n--;
                }
                break;
            default: /* length prefixes are where parsers die: make one huge */
                if (n)
                    m[at] = 0xff;
                break;
            }
        }
        uint8_t *exact = malloc(n ? n : 1);
        memcpy(exact, m, n);
        free(m);
        d = NULL;
        int rc = wire_decode(exact, n, &rx, &d, &e);
        tries++;
        if (rc == WIRE_OK) {
            accepted++;
            fuzz_accepted++;
            uint8_t *re;
            size_t rn;
            if (wire_encode(d, &re, &rn, &e) == 0)
                free(re);
            else
                reencode_ok = 0;
        } else if (!wire_rc_is_reject(rc)) {
            odd_rc = rc;
        }
        wire_free(d);
        free(exact);
    }
    CHECK(reencode_ok, "an accepted fuzz case failed to re-encode: %s", e.msg);
    CHECK(odd_rc == 0, "fuzz returned %d, neither OK nor a reject", odd_rc);
    uint64_t total =
        rx.counts.accepted + rx.counts.malformed + rx.counts.oversized + rx.counts.wrong_version;
    CHECK(total == tries && rx.counts.accepted == accepted, "counts %llu of %llu",
          (unsigned long long)total, (unsigned long long)tries);
    printf("hostile: %llu frames, %llu accepted (%llu fuzzed), %llu malformed, %llu oversized, "
           "%llu wrong version\n",
           (unsigned long long)tries, (unsigned long long)accepted,
           (unsigned long long)fuzz_accepted, (unsigned long long)rx.counts.malformed,
           (unsigned long long)rx.counts.oversized, (unsigned long long)rx.counts.wrong_version);
}

/* ---------------------------------------------------------------------------------------
 * Row packing */

static void test_packing(void)
{
    struct errbuf e = {""};
    enum { R = 7, C = 33, N = R * C };
    float src[N], back[N];
    uint8_t buf[N * 4];
    for (int i = 0; i < N; i++) {
        /* the normal range of f16, where its precision is the full 11 bits */
        float mag = ldexpf(1.0f + (float)(rng() % 1000) / 1000.0f, (int)(rng() % 29) - 14);
        src[i] = rng() % 2 ? mag : -mag;
    }
    src[0] = 0.0f;
    src[1] = -0.0f;
    src[2] = INFINITY;
    src[3] = 1e-40f; /* subnormal */
    src[4] = NAN;

    CHECK(wire_pack_rows(src, R, C, BITNET__ELEM_TYPE__ELEM_TYPE_F32, buf, N * 4, &e) == 0, "%s",
          e.msg);
    CHECK(wire_unpack_rows(buf, N * 4, R, C, BITNET__ELEM_TYPE__ELEM_TYPE_F32, back, &e) == 0, "%s",
          e.msg);
    CHECK(memcmp(src, back, sizeof src) == 0, "f32 not exact");
    uint32_t bits;
    memcpy(&bits, buf + 4 * 5, 4);
    CHECK(buf[4 * 5] == (uint8_t)bits, "little-endian on the wire");

    static const Bitnet__ElemType halves[2] = {BITNET__ELEM_TYPE__ELEM_TYPE_BF16,
                                               BITNET__ELEM_TYPE__ELEM_TYPE_F16};
    for (int h = 0; h < 2; h++) {
        Bitnet__ElemType t = halves[h];
        /* round to nearest is off by at most half an ulp: 2^-8 (bf16) or 2^-11 (f16) of
         * the value */
        float tol = h == 0 ? 1.0f / 256 : 1.0f / 2048;
        CHECK(wire_pack_rows(src, R, C, t, buf, N * 2, &e) == 0, "%s", e.msg);
        CHECK(wire_unpack_rows(buf, N * 2, R, C, t, back, &e) == 0, "%s", e.msg);
        int bad = 0;
        for (int i = 5; i < N; i++)
            if (fabsf(back[i] - src[i]) > fabsf(src[i]) * tol)
                bad++;
        CHECK(bad == 0, "%s: %d values beyond half an ulp", wire_elem_name(t), bad);
        CHECK(back[0] == 0 && !signbit(back[0]) && back[1] == 0 && signbit(back[1]), "%s zeros",
              wire_elem_name(t));
        CHECK(isinf(back[2]) && isnan(back[4]), "%s inf/nan", wire_elem_name(t));
    }

    /* bf16 ties go to even */
    CHECK(wire_f32_to_bf16(1.0f + 1.0f / 256) == 0x3f80, "tie rounds down to even");
    CHECK(wire_f32_to_bf16(1.0f + 3.0f / 256) == 0x3f82, "tie rounds up to even");
    CHECK(wire_f32_to_bf16(1.0f + 1.0f / 256 + 1.0f / 65536) == 0x3f81, "above tie rounds up");
    CHECK(wire_f32_to_bf16(3.4e38f) == 0x7f80, "overflow to infinity");
    CHECK(isnan(bf16_to_f32(wire_f32_to_bf16(NAN))), "nan stays nan");
    CHECK(f32_to_f16(1e6f) == 0x7c00, "f16 overflow to infinity");

    /* shape disagreements are refused, never truncated or padded */
    CHECK(wire_unpack_rows(buf, N * 2 - 1, R, C, BITNET__ELEM_TYPE__ELEM_TYPE_F16, back, &e) ==
                  -1 &&
              strstr(e.msg, "461 bytes received, 7 x 33 f16 needs 462"),
          "short input: %s", e.msg);
    CHECK(wire_unpack_rows(buf, N * 2, R, C, BITNET__ELEM_TYPE__ELEM_TYPE_F32, back, &e) == -1,
          "f16 bytes read as f32");
    CHECK(wire_pack_rows(src, R, C, BITNET__ELEM_TYPE__ELEM_TYPE_BF16, buf, N * 4, &e) == -1 &&
              strstr(e.msg, "needs 462"),
          "big buffer: %s", e.msg);
    CHECK(wire_pack_rows(src, R, C, BITNET__ELEM_TYPE__ELEM_TYPE_UNSPECIFIED, buf, N * 4, &e) == -1,
          "unspecified type");
    size_t nb;
    CHECK(wire_rows_bytes(BITNET__ELEM_TYPE__ELEM_TYPE_F32, SIZE_MAX / 2, 3, &nb, &e) == -1 &&
              strstr(e.msg, "overflow"),
          "overflow");

    /* the Forward helpers, including reuse of a decoded Forward by the next stage */
    Bitnet__Forward fw = BITNET__FORWARD__INIT;
    CHECK(wire_forward_set_hidden(&fw, src + 5, 2, 16, BITNET__ELEM_TYPE__ELEM_TYPE_F16, &e) == 0,
          "%s", e.msg);
    CHECK(fw.hidden.len == 64 && fw.n_rows == 2 && fw.n_embd == 16, "set hidden");
    CHECK(wire_forward_set_hidden(&fw, src + 5, 3, 16, BITNET__ELEM_TYPE__ELEM_TYPE_F32, &e) == 0,
          "%s", e.msg);
    CHECK(wire_forward_get_hidden(&fw, back, N, &e) == 0 && !memcmp(back, src + 5, 48 * 4),
          "get hidden: %s", e.msg);
    free(fw.hidden.data);
}

/* ---------------------------------------------------------------------------------------
 * ZeroMQ */

static void *new_sock(void *ctx, int type)
{
    void *s = zmq_socket(ctx, type);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    return s;
}

static void ipc_endpoint(char *ep, size_t cap, const char *name)
{
    snprintf(ep, cap, "ipc:///tmp/bitnet-test-wire-%d-%s", (int)getpid(), name);
}

/* libzmq 4.3 leaves an ipc socket's file behind on close and unbind; the binder removes it. */
static void close_ipc(void *sock, const char *ep)
{
    zmq_close(sock);
    CHECK(unlink(ep + strlen("ipc://")) == 0, "%s: %s", ep, strerror(errno));
}

static void last_endpoint(void *sock, char *ep, size_t cap)
{
    ep[0] = 0;
    zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, ep, &cap);
}

static void test_push_pull(void *ctx, const struct samples *s)
{
    char ep[128];
    ipc_endpoint(ep, sizeof ep, "pp");
    void *pull = new_sock(ctx, ZMQ_PULL), *push = new_sock(ctx, ZMQ_PUSH);
    CHECK(zmq_bind(pull, ep) == 0, "bind %s: %s", ep, zmq_strerror(errno));
    CHECK(zmq_connect(push, ep) == 0, "connect");
    struct wire_rx rx;
    wire_rx_init(&rx, 0);
    struct errbuf e = {""};
    Bitnet__Envelope *d = (void *)1;

    CHECK(wire_recv(pull, &rx, &d, 0, &e) == WIRE_AGAIN && d == NULL, "empty socket, no wait");
    double t0 = clock_ms();
    CHECK(wire_recv(pull, &rx, &d, 60, &e) == WIRE_AGAIN, "empty socket, 60 ms");
    double waited = clock_ms() - t0;
    CHECK(waited >= 50 && waited < 1000, "waited %.1f ms", waited);

    for (size_t i = 0; i < s->n; i++)
        CHECK(wire_send(push, &s->env[i], 1000, &e) == WIRE_OK, "send %zu: %s", i, e.msg);
    int ok = 1;
    for (size_t i = 0; i < s->n; i++) {
        /* the poll-loop way: wait on zmq_poll, then take without blocking */
        zmq_pollitem_t it = {pull, 0, ZMQ_POLLIN, 0};
        CHECK(zmq_poll(&it, 1, 1000) == 1, "poll");
        int rc = wire_recv(pull, &rx, &d, 0, &e);
        ok &= rc == WIRE_OK && same(d, &s->env[i]);
        wire_free(d);
    }
    CHECK(ok, "push/pull round trip: %s", e.msg);

    /* a frame of the wrong shape is drained and counted; the next one is fine */
    zmq_send(push, "a", 1, ZMQ_SNDMORE);
    zmq_send(push, "b", 1, 0);
    wire_send(push, &s->env[0], 1000, &e);
    CHECK(wire_recv(pull, &rx, &d, 1000, &e) == WIRE_MALFORMED && strstr(e.msg, "frame"),
          "two frames: %s", e.msg);
    CHECK(wire_recv(pull, &rx, &d, 1000, &e) == WIRE_OK && same(d, &s->env[0]), "after");
    wire_free(d);

    /* version and size refusals through the socket */
    Bitnet__Envelope v2 = s->env[0];
    v2.version = 2;
    wire_send(push, &v2, 1000, &e);
    CHECK(wire_recv(pull, &rx, &d, 1000, &e) == WIRE_BAD_VERSION &&
              strstr(e.msg, "peer speaks protocol 2, this build speaks 1"),
          "v2: %s", e.msg);
    rx.max_bytes = 64;
    wire_send(push, env_of(s, &s->forward_hidden), 1000, &e);
    wire_send(push, &s->env[0], 1000, &e);
    CHECK(wire_recv(pull, &rx, &d, 1000, &e) == WIRE_TOO_BIG, "big forward: %s", e.msg);
    CHECK(wire_recv(pull, &rx, &d, -1, &e) == WIRE_OK, "small after big (blocking): %s", e.msg);
    wire_free(d);
    CHECK(rx.counts.accepted == s->n + 2 && rx.counts.malformed == 1 && rx.counts.oversized == 1 &&
              rx.counts.wrong_version == 1,
          "socket counts");

    zmq_close(push);
    close_ipc(pull, ep);

    /* a PUSH with nobody to push to: the timeout applies to sending too */
    void *lonely = new_sock(ctx, ZMQ_PUSH);
    CHECK(wire_send(lonely, &s->env[0], 30, &e) == WIRE_AGAIN, "send without peer");
    CHECK(wire_send(lonely, &s->env[0], 0, &e) == WIRE_AGAIN, "send without peer, no wait");
    zmq_close(lonely);
}

/* DEALER -> ROUTER -> DEALER, every sample each way. */
static void exchange_all(void *router, void *dealer, const struct samples *s, const char *what)
{
    struct wire_rx rx;
    wire_rx_init(&rx, 0);
    struct errbuf e = {""};
    int ok = 1;
    for (size_t i = 0; i < s->n; i++) {
        Bitnet__Envelope *d = NULL, *back = NULL;
        struct wire_identity id;
        int rc = wire_send(dealer, &s->env[i], 2000, &e);
        if (rc == WIRE_OK)
            rc = wire_recv_from(router, &rx, &id, &d, 2000, &e);
        ok &= rc == WIRE_OK && id.len > 0 && same(d, &s->env[i]);
        if (rc == WIRE_OK) {
            rc = wire_send_to(router, &id, d, 2000, &e);
            if (rc == WIRE_OK)
                rc = wire_recv(dealer, &rx, &back, 2000, &e);
            ok &= rc == WIRE_OK && same(back, &s->env[i]);
        }
        wire_free(d);
        wire_free(back);
        if (!ok) {
            CHECK(0, "%s: sample %zu: rc %d %s", what, i, rc, e.msg);
            return;
        }
    }
    CHECK(ok && rx.counts.accepted == 2 * s->n, "%s: all samples both ways", what);
}

static void test_dealer_router(void *ctx, const struct samples *s)
{
    char ep[128];
    ipc_endpoint(ep, sizeof ep, "dr");
    void *router = new_sock(ctx, ZMQ_ROUTER), *dealer = new_sock(ctx, ZMQ_DEALER);
    int one = 1;
    zmq_setsockopt(router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    CHECK(zmq_bind(router, ep) == 0, "bind");
    zmq_setsockopt(dealer, ZMQ_ROUTING_ID, "worker-7", 8);
    CHECK(zmq_connect(dealer, ep) == 0, "connect");
    exchange_all(router, dealer, s, "ipc dealer/router");

    struct wire_rx rx;
    wire_rx_init(&rx, 0);
    struct errbuf e = {""};
    struct wire_identity id;
    Bitnet__Envelope *d = NULL;

    /* garbage from a known peer: the router learns who, answers with an Error */
    zmq_send(dealer, "\x08\x01\x62\x05", 4, 0);
    CHECK(wire_recv_from(router, &rx, &id, &d, 1000, &e) == WIRE_MALFORMED && d == NULL,
          "garbage: %s", e.msg);
    CHECK(id.len == 8 && !memcmp(id.bytes, "worker-7", 8), "identity kept for the reply");
    CHECK(wire_send_error(router, &id, 0, BITNET__ERROR_CODE__ERROR_CODE_MALFORMED, e.msg, 1000,
                          &e) == WIRE_OK,
          "send error: %s", e.msg);
    CHECK(wire_recv(dealer, &rx, &d, 1000, &e) == WIRE_OK &&
              d->body_case == BITNET__ENVELOPE__BODY_ERROR &&
              d->error->code == BITNET__ERROR_CODE__ERROR_CODE_MALFORMED &&
              strstr(d->error->message, "malformed message"),
          "error reply");
    wire_free(d);
    d = NULL;

    /* a two-frame message behind the identity */
    zmq_send(dealer, "x", 1, ZMQ_SNDMORE);
    zmq_send(dealer, "y", 1, 0);
    CHECK(wire_recv_from(router, &rx, &id, &d, 1000, &e) == WIRE_MALFORMED, "3 frames");
    CHECK(rx.counts.malformed == 2, "router counts");

    /* ROUTER_MANDATORY turns a vanished peer into an answer instead of a silent drop */
    struct wire_identity ghost = {5, "ghost", "", "", -1};
    CHECK(wire_send_to(router, &ghost, &s->env[0], 100, &e) == WIRE_UNREACHABLE &&
              strstr(e.msg, "not connected"),
          "ghost: %s", e.msg);
    struct wire_identity none = {0, "", "", "", -1};
    CHECK(wire_send_to(router, &none, &s->env[0], 100, &e) == WIRE_ERROR, "empty identity");
    /* and the socket still works after all that */
    CHECK(wire_send(dealer, &s->env[2], 1000, &e) == WIRE_OK &&
              wire_recv_from(router, &rx, &id, &d, 1000, &e) == WIRE_OK,
          "still usable");
    wire_free(d);

    zmq_close(dealer);
    close_ipc(router, ep);

    /* tcp on an ephemeral port, with a realistically large hidden state (64 x 2560 bf16) */
    router = new_sock(ctx, ZMQ_ROUTER);
    dealer = new_sock(ctx, ZMQ_DEALER);
    CHECK(zmq_bind(router, "tcp://127.0.0.1:*") == 0, "bind tcp");
    last_endpoint(router, ep, sizeof ep);
    CHECK(strncmp(ep, "tcp://127.0.0.1:", 16) == 0, "endpoint %s", ep);
    CHECK(zmq_connect(dealer, ep) == 0, "connect tcp");
    exchange_all(router, dealer, s, "tcp dealer/router");

    enum { ROWS = 64, EMBD = 2560 };
    float *h = malloc(sizeof(float) * ROWS * EMBD), *hb = malloc(sizeof(float) * ROWS * EMBD);
    uint32_t seq[ROWS], pos[ROWS];
    protobuf_c_boolean want[ROWS];
    for (int i = 0; i < ROWS * EMBD; i++)
        h[i] = (float)(i % 977) / 97.0f - 5.0f;
    for (int i = 0; i < ROWS; i++) {
        seq[i] = 0;
        pos[i] = (uint32_t)i;
        want[i] = i == ROWS - 1;
    }
    Bitnet__Forward fw = BITNET__FORWARD__INIT;
    fw.n_seq_ids = fw.n_positions = fw.n_want_logits = ROWS;
    fw.seq_ids = seq;
    fw.positions = pos;
    fw.want_logits = want;
    wire_forward_set_hidden(&fw, h, ROWS, EMBD, BITNET__ELEM_TYPE__ELEM_TYPE_BF16, &e);
    Bitnet__Envelope env;
    wire_envelope_init(&env, 99);
    env.body_case = BITNET__ENVELOPE__BODY_FORWARD;
    env.forward = &fw;
    CHECK(wire_send(dealer, &env, 2000, &e) == WIRE_OK, "send big: %s", e.msg);
    CHECK(wire_recv_from(router, &rx, &id, &d, 2000, &e) == WIRE_OK &&
              wire_forward_get_hidden(d->forward, hb, ROWS * EMBD, &e) == 0,
          "recv big: %s", e.msg);
    int close_enough = 1;
    for (int i = 0; i < ROWS * EMBD; i++)
        close_enough &= fabsf(hb[i] - h[i]) <= fabsf(h[i]) / 256;
    CHECK(close_enough, "327 KB bf16 hidden state over tcp");
    wire_free(d);
    free(fw.hidden.data);
    free(h);
    free(hb);
    zmq_close(dealer);
    zmq_close(router);
}

/* ---------------------------------------------------------------------------------------
 * CURVE and ZAP */

struct keys {
    char pub[41], sec[41];
};

static void keypair(struct keys *k)
{
    zmq_curve_keypair(k->pub, k->sec);
}

static void *curve_server(void *ctx, const struct keys *k, char *ep, size_t cap)
{
    void *s = new_sock(ctx, ZMQ_ROUTER);
    int one = 1;
    zmq_setsockopt(s, ZMQ_CURVE_SERVER, &one, sizeof one);
    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, k->sec, 40);
    CHECK(zmq_bind(s, "tcp://127.0.0.1:*") == 0, "bind curve: %s", zmq_strerror(errno));
    last_endpoint(s, ep, cap);
    return s;
}

static void *curve_client(void *ctx, const struct keys *me, const char *server_pub, const char *ep)
{
    void *s = new_sock(ctx, ZMQ_DEALER);
    zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server_pub, 40);
    zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, me->pub, 40);
    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, me->sec, 40);
    zmq_connect(s, ep);
    return s;
}

/* Client says Hello, server answers; 1 if both arrived. With pump set, the server side
 * also serves a poll-driven ZAP handler while it waits. */
static int hello_exchange(void *server, void *client, const struct samples *s, int timeout_ms,
                          struct zap *pump, struct wire_identity *id)
{
    struct wire_rx rx;
    wire_rx_init(&rx, 0);
    struct errbuf e;
    Bitnet__Envelope *d = NULL;
    /* a DEALER with no completed handshake cannot take the message: that is a refusal too */
    if (wire_send(client, env_of(s, &s->hello), timeout_ms, &e) != WIRE_OK)
        return 0;
    int rc = WIRE_AGAIN;
    double end = clock_ms() + timeout_ms;
    while (rc == WIRE_AGAIN && clock_ms() < end) {
        if (pump) {
            zmq_pollitem_t it[2] = {{zap_socket(pump), 0, ZMQ_POLLIN, 0},
                                    {server, 0, ZMQ_POLLIN, 0}};
            zmq_poll(it, 2, 20);
            if (it[0].revents)
                zap_serve(pump, &e);
            if (it[1].revents)
                rc = wire_recv_from(server, &rx, id, &d, 0, &e);
        } else {
            rc = wire_recv_from(server, &rx, id, &d, timeout_ms, &e);
        }
    }
    if (rc != WIRE_OK)
        return 0;
    wire_free(d);
    d = NULL;
    if (wire_send_to(server, id, env_of(s, &s->hello_reply), 1000, &e) != WIRE_OK)
        return 0;
    rc = wire_recv(client, &rx, &d, 1000, &e);
    int ok = rc == WIRE_OK && d->body_case == BITNET__ENVELOPE__BODY_HELLO_REPLY;
    wire_free(d);
    return ok;
}

static void write_keys(const char *path, const char *body)
{
    FILE *fp = fopen(path, "w");
    fputs(body, fp);
    fclose(fp);
}

static void test_curve(const struct samples *s)
{
    void *ctx = zmq_ctx_new();
    struct keys server, client, other;
    keypair(&server);
    keypair(&client);
    keypair(&other);
    char ep[128];
    struct wire_identity id;
    void *srv = curve_server(ctx, &server, ep, sizeof ep);
    void *good = curve_client(ctx, &client, server.pub, ep);
    CHECK(hello_exchange(srv, good, s, 2000, NULL, &id), "CURVE client with the server key");
    CHECK(id.user_id[0] == 0, "no ZAP, no user id (%s)", id.user_id);
    void *wrong = curve_client(ctx, &client, other.pub, ep);
    CHECK(!hello_exchange(srv, wrong, s, 300, NULL, &id), "client with a wrong server key");
    zmq_close(wrong);
    zmq_close(good);
    zmq_close(srv);
    zmq_ctx_term(ctx);
}

static void test_zap(const struct samples *s)
{
    struct keys server, listed, unlisted, late;
    keypair(&server);
    keypair(&listed);
    keypair(&unlisted);
    keypair(&late);
    char path[] = "/tmp/bitnet-test-wire-keys-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    close(fd);
    char body[512];
    snprintf(body, sizeof body, "# workers allowed to join\n\n  %s   host-a/node1\n", listed.pub);
    write_keys(path, body);
    struct errbuf e = {""};
    char ep[128];
    struct wire_identity id;

    /* threaded handler */
    void *ctx = zmq_ctx_new();
    struct zap *z = zap_start(ctx, path, &e);
    CHECK(z != NULL, "zap_start: %s", e.msg);
    if (!z) {
        zmq_ctx_term(ctx);
        unlink(path);
        return;
    }
    struct zap *twice = zap_start(ctx, path, &e);
    CHECK(twice == NULL && strstr(e.msg, "inproc://zeromq.zap.01"), "second handler: %s", e.msg);
    void *srv = curve_server(ctx, &server, ep, sizeof ep);
    void *a = curve_client(ctx, &listed, server.pub, ep);
    CHECK(hello_exchange(srv, a, s, 2000, NULL, &id), "listed client admitted");
    CHECK(!strcmp(id.user_id, listed.pub), "User-Id is the client key: '%s'", id.user_id);
    void *b = curve_client(ctx, &unlisted, server.pub, ep);
    CHECK(!hello_exchange(srv, b, s, 300, NULL, &id), "unlisted client refused");
    struct zap_stats st;
    if (z) {
        zap_get_stats(z, &st);
        CHECK(st.allowed == 1 && st.refused >= 1 && !st.failed, "zap stats %llu/%llu",
              (unsigned long long)st.allowed, (unsigned long long)st.refused);
        /* reload: a newly listed key gets in, a bad file leaves the list alone */
        snprintf(body, sizeof body, "%s\n%s\n", listed.pub, late.pub);
        write_keys(path, body);
        CHECK(zap_reload(z, path, &e) == 0, "reload: %s", e.msg);
        void *c = curve_client(ctx, &late, server.pub, ep);
        CHECK(hello_exchange(srv, c, s, 2000, NULL, &id), "client listed after reload");
        zmq_close(c);
        write_keys(path, "not-a-key\n");
        CHECK(zap_reload(z, path, &e) == -1 && strstr(e.msg, ":1: not a Z85"), "bad reload: %s",
              e.msg);
    }
    /* with a handler bound, NULL-mechanism sockets that ask for ZAP (by naming a domain)
     * are let through; PLAIN, which bitnetd never uses, is not */
    struct zap_stats before, after;
    zap_get_stats(z, &before);
    void *plain = new_sock(ctx, ZMQ_ROUTER), *pc = new_sock(ctx, ZMQ_DEALER);
    zmq_setsockopt(plain, ZMQ_ZAP_DOMAIN, "bitnet", 6);
    zmq_bind(plain, "tcp://127.0.0.1:*");
    last_endpoint(plain, ep, sizeof ep);
    zmq_connect(pc, ep);
    CHECK(hello_exchange(plain, pc, s, 2000, NULL, &id), "NULL mechanism with a ZAP domain");
    zmq_close(pc);
    zmq_close(plain);
    plain = new_sock(ctx, ZMQ_ROUTER);
    pc = new_sock(ctx, ZMQ_DEALER);
    int one = 1;
    zmq_setsockopt(plain, ZMQ_PLAIN_SERVER, &one, sizeof one);
    zmq_bind(plain, "tcp://127.0.0.1:*");
    last_endpoint(plain, ep, sizeof ep);
    zmq_setsockopt(pc, ZMQ_PLAIN_USERNAME, "admin", 5);
    zmq_setsockopt(pc, ZMQ_PLAIN_PASSWORD, "secret", 6);
    zmq_connect(pc, ep);
    CHECK(!hello_exchange(plain, pc, s, 300, NULL, &id), "PLAIN refused");
    zap_get_stats(z, &after);
    CHECK(after.allowed == before.allowed + 1 && after.refused > before.refused,
          "NULL asked ZAP and was allowed, PLAIN was refused by it");
    zmq_close(pc);
    zmq_close(plain);

    zmq_close(b);
    zmq_close(a);
    zmq_close(srv);
    zap_close(z);
    zmq_ctx_term(ctx);

    /* poll-driven handler, served from the same loop that waits for the message */
    snprintf(body, sizeof body, "%s\n", listed.pub);
    write_keys(path, body);
    ctx = zmq_ctx_new();
    z = zap_open(ctx, path, &e);
    CHECK(z != NULL, "zap_open: %s", e.msg);
    if (!z) {
        zmq_ctx_term(ctx);
        unlink(path);
        return;
    }
    srv = curve_server(ctx, &server, ep, sizeof ep);
    a = curve_client(ctx, &listed, server.pub, ep);
    CHECK(hello_exchange(srv, a, s, 2000, z, &id), "listed client, poll-driven ZAP");
    b = curve_client(ctx, &unlisted, server.pub, ep);
    CHECK(!hello_exchange(srv, b, s, 300, z, &id), "unlisted client, poll-driven ZAP");
    if (z) {
        zap_get_stats(z, &st);
        CHECK(st.allowed == 1 && st.refused >= 1 && st.bad_requests == 0, "poll zap stats");
        /* a request that is not RFC 27 gets a 500, and the handler keeps going */
        void *req = new_sock(ctx, ZMQ_REQ);
        zmq_connect(req, "inproc://zeromq.zap.01");
        zmq_send(req, "2.0", 3, ZMQ_SNDMORE);
        zmq_send(req, "r1", 2, 0);
        zmq_pollitem_t it = {zap_socket(z), 0, ZMQ_POLLIN, 0};
        zmq_poll(&it, 1, 1000);
        CHECK(zap_serve(z, &e) == 0, "serve: %s", e.msg);
        char frames[6][16];
        int nf = 0, more = 1;
        while (more && nf < 6) {
            int n = zmq_recv(req, frames[nf], sizeof frames[nf] - 1, 0);
            frames[nf][n < 0 ? 0 : n > 15 ? 15 : n] = 0;
            size_t sz = sizeof more;
            zmq_getsockopt(req, ZMQ_RCVMORE, &more, &sz);
            nf++;
        }
        CHECK(nf == 6 && !strcmp(frames[1], "r1") && !strcmp(frames[2], "500"),
              "malformed ZAP request answered %s", nf > 2 ? frames[2] : "?");
        zap_get_stats(z, &st);
        CHECK(st.bad_requests == 1, "bad request counted");
        zmq_close(req);
    }
    zmq_close(b);
    zmq_close(a);
    zmq_close(srv);
    zap_close(z);
    zmq_ctx_term(ctx);

    /* key files that must not load */
    ctx = zmq_ctx_new();
    snprintf(body, sizeof body, "%s\n%.39s\n", listed.pub, listed.pub);
    write_keys(path, body);
    CHECK(zap_open(ctx, path, &e) == NULL && strstr(e.msg, ":2: not a Z85 CURVE public key (39"),
          "short key: %s", e.msg);
    unlink(path);
    CHECK(zap_open(ctx, path, &e) == NULL && strstr(e.msg, "No such file"), "missing: %s", e.msg);
    zmq_ctx_term(ctx);
}

/* bitnetctl keygen's files (proto/keys.h): written, read back, and every way they can be
 * wrong named with the file. */
static void test_key_files(void)
{
    char dir[] = "/tmp/bitnet-test-keys-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char prefix[128], key[160], pub_path[160], pub[41], pub2[41], sec[41], got[41];
    snprintf(prefix, sizeof prefix, "%s/w1", dir);
    snprintf(key, sizeof key, "%s.key", prefix);
    snprintf(pub_path, sizeof pub_path, "%s.pub", prefix);
    struct errbuf e = {""};
    CHECK(curve_write_pair(prefix, false, pub, &e) == 0, "write: %s", e.msg);
    struct stat st;
    CHECK(stat(key, &st) == 0 && (st.st_mode & 0777) == 0600, "key mode %o", st.st_mode & 0777);
    CHECK(curve_read_public(pub_path, got, &e) == 0 && !strcmp(got, pub), "read .pub: %s", e.msg);
    CHECK(curve_read_secret(key, got, sec, &e) == 0 && !strcmp(got, pub), "read .key: %s", e.msg);
    char derived[41];
    CHECK(zmq_curve_public(derived, sec) == 0 && !strcmp(derived, pub), "secret matches public");
    CHECK(curve_write_pair(prefix, false, pub2, &e) == -1 && strstr(e.msg, "w1.key: File exists"),
          "no overwrite without force: %s", e.msg);
    CHECK(curve_read_public(pub_path, got, &e) == 0 && !strcmp(got, pub), "old pair kept");
    CHECK(curve_write_pair(prefix, true, pub2, &e) == 0 && strcmp(pub, pub2) != 0,
          "overwrite with force: %s", e.msg);
    CHECK(curve_read_secret(key, got, sec, &e) == 0 && !strcmp(got, pub2), "new pair read");

    /* each file where the other belongs */
    CHECK(curve_read_public(key, got, &e) == -1 && strstr(e.msg, "w1.key: holds a secret key"),
          ".key as public: %s", e.msg);
    CHECK(curve_read_secret(pub_path, got, sec, &e) == -1 &&
              strstr(e.msg, "w1.pub:1: expected 'public-key = KEY' or 'secret-key = KEY'"),
          ".pub as secret: %s", e.msg);
    chmod(key, 0640);
    CHECK(curve_read_secret(key, got, sec, &e) == -1 && strstr(e.msg, "(mode 0640); chmod 600"),
          "readable secret: %s", e.msg);
    chmod(key, 0600);
    char path[160], body[400];
    struct keys a, b;
    keypair(&a);
    keypair(&b);
    snprintf(path, sizeof path, "%s/mixed.key", dir);
    snprintf(body, sizeof body, "public-key = %s\nsecret-key = %s\n", b.pub, a.sec);
    write_keys(path, body);
    chmod(path, 0600);
    CHECK(curve_read_secret(path, got, sec, &e) == -1 && strstr(e.msg, "does not belong"),
          "public of another pair: %s", e.msg);
    snprintf(body, sizeof body, "secret-key = %.39s\n", a.sec);
    write_keys(path, body);
    CHECK(curve_read_secret(path, got, sec, &e) == -1 &&
              strstr(e.msg, "mixed.key:1: secret-key is not a Z85 CURVE key (39 characters"),
          "short secret: %s", e.msg);
    snprintf(path, sizeof path, "%s/empty.pub", dir);
    write_keys(path, "# nothing here\n\n");
    CHECK(curve_read_public(path, got, &e) == -1 && strstr(e.msg, "empty.pub: no public key"),
          "empty: %s", e.msg);
    snprintf(path, sizeof path, "%s/none.pub", dir);
    CHECK(curve_read_public(path, got, &e) == -1 && strstr(e.msg, "none.pub: No such file"),
          "missing: %s", e.msg);
    CHECK(curve_write_pair("/nonexistent-dir/x", false, pub, &e) == -1 &&
              strstr(e.msg, "/nonexistent-dir/x.key: cannot create a file in /nonexistent-dir: "
                            "No such file"),
          "unwritable: %s", e.msg);

    /* comments, and the key's name after it, as in keygen's .pub */
    snprintf(path, sizeof path, "%s/named.pub", dir);
    snprintf(body, sizeof body, "# worker on host b\n\n  %s  host-b/w1\n", a.pub);
    write_keys(path, body);
    CHECK(curve_read_public(path, got, &e) == 0 && !strcmp(got, a.pub), "named: %s", e.msg);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0, "rm");
}

struct observed {
    int allowed, refused;
    char refused_key[41], refused_address[64];
};

static void observe(void *arg, const struct zap_decision *d)
{
    struct observed *o = arg;
    if (d->allowed) {
        o->allowed++;
    } else {
        o->refused++;
        snprintf(o->refused_key, sizeof o->refused_key, "%s", d->key);
        snprintf(o->refused_address, sizeof o->refused_address, "%s", d->address);
    }
}

/* An allow-list directory (bitnetd --allow-keys DIR): its *.pub files count, nothing else;
 * and the observer hears of each decision with the address and key. */
static void test_zap_dir(const struct samples *s)
{
    char dir[] = "/tmp/bitnet-test-allow-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    struct keys server, a, b, out;
    keypair(&server);
    keypair(&a);
    keypair(&b);
    keypair(&out);
    char path[160], body[200];
    struct { const char *name; const struct keys *k; } files[] = {
        {"a.pub", &a}, {"b.pub", &b}, {".hidden.pub", &out}, {"out.pub.bak", &out},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
        snprintf(body, sizeof body, "%s %s\n", files[i].k->pub, files[i].name);
        write_keys(path, body);
    }
    snprintf(path, sizeof path, "%s/notes.txt", dir);
    write_keys(path, "not keys at all\n");
    struct errbuf e = {""};
    void *ctx = zmq_ctx_new();
    struct zap *z = zap_open(ctx, dir, &e);
    CHECK(z && zap_n_keys(z) == 2, "directory: %zu keys (%s)", z ? zap_n_keys(z) : 0,
          z ? "" : e.msg);
    if (z) {
        struct observed o = {0};
        zap_set_observer(z, observe, &o);
        char ep[128];
        struct wire_identity id;
        void *srv = curve_server(ctx, &server, ep, sizeof ep);
        void *ca = curve_client(ctx, &b, server.pub, ep);
        CHECK(hello_exchange(srv, ca, s, 2000, z, &id), "key of a .pub in the directory");
        CHECK(!strcmp(id.peer_address, "127.0.0.1"), "peer address '%s'", id.peer_address);
        void *co = curve_client(ctx, &out, server.pub, ep);
        CHECK(!hello_exchange(srv, co, s, 300, z, &id), "key of a hidden/non-.pub file refused");
        CHECK(o.allowed == 1 && o.refused >= 1 && !strcmp(o.refused_key, out.pub) &&
                  !strcmp(o.refused_address, "127.0.0.1"),
              "observer: %d allowed, %d refused, key %s from %s", o.allowed, o.refused,
              o.refused_key, o.refused_address);
        zmq_close(co);
        zmq_close(ca);
        zmq_close(srv);
        zap_close(z);
    }
    snprintf(path, sizeof path, "%s/c.pub", dir);
    write_keys(path, "garbage\n");
    CHECK(zap_open(ctx, dir, &e) == NULL && strstr(e.msg, "/c.pub:1: not a Z85"),
          "bad file in the directory: %s", e.msg);
    zmq_ctx_term(ctx);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0, "rm");
}

int main(void)
{
    static struct samples s;
    make_samples(&s);
    test_every_body_covered(&s);
    test_round_trip(&s);
    test_version(&s);
    test_validation(&s);
    test_hostile_bytes(&s);
    test_packing();

    void *ctx = zmq_ctx_new();
    test_push_pull(ctx, &s);
    test_dealer_router(ctx, &s);
    zmq_ctx_term(ctx);
    test_curve(&s);
    test_zap(&s);
    test_key_files();
    test_zap_dir(&s);
    return check_done("test_wire");
}

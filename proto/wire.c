#include "proto/wire.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "kernels/f16.h"

/* ---------------------------------------------------------------------------------------
 * Small helpers */

Bitnet__ErrorCode wire_rc_error_code(int rc)
{
    switch (rc) {
    case WIRE_MALFORMED:
    case WIRE_NO_BODY:
        return BITNET__ERROR_CODE__ERROR_CODE_MALFORMED;
    case WIRE_TOO_BIG:
        return BITNET__ERROR_CODE__ERROR_CODE_TOO_BIG;
    case WIRE_BAD_VERSION:
        return BITNET__ERROR_CODE__ERROR_CODE_VERSION;
    default:
        return BITNET__ERROR_CODE__ERROR_CODE_INTERNAL;
    }
}

void wire_rx_init(struct wire_rx *rx, size_t max_bytes)
{
    memset(rx, 0, sizeof *rx);
    rx->max_bytes = max_bytes;
}

void wire_envelope_init(Bitnet__Envelope *env, uint64_t request_id)
{
    bitnet__envelope__init(env);
    env->version = BITNET_PROTOCOL_VERSION;
    env->request_id = request_id;
}

const char *wire_body_name(Bitnet__Envelope__BodyCase c)
{
    const ProtobufCFieldDescriptor *f =
        c == BITNET__ENVELOPE__BODY__NOT_SET
            ? NULL
            : protobuf_c_message_descriptor_get_field(&bitnet__envelope__descriptor, (unsigned)c);
    /* only oneof members are bodies; version/request_id share the number space */
    if (!f || !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
        return "none";
    return f->name;
}

/* err_set for functions that return an enum wire_rc rather than -1 */
static int reject(struct errbuf *e, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int reject(struct errbuf *e, int rc, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static void count(struct wire_rx *rx, int rc)
{
    if (!rx)
        return;
    switch (rc) {
    case WIRE_OK:
        rx->counts.accepted++;
        break;
    case WIRE_TOO_BIG:
        rx->counts.oversized++;
        break;
    case WIRE_BAD_VERSION:
        rx->counts.wrong_version++;
        break;
    default:
        rx->counts.malformed++;
        break;
    }
}

/* ---------------------------------------------------------------------------------------
 * Validation */

static int enum_known(const ProtobufCEnumDescriptor *d, int v)
{
    return protobuf_c_enum_descriptor_get_value(d, v) != NULL;
}

/* Set and not *_UNSPECIFIED: for fields the receiver cannot act on without. */
static int enum_set(const ProtobufCEnumDescriptor *d, int v)
{
    return v != 0 && enum_known(d, v);
}

/* proto3 strings may be NULL in a struct built by hand (protobuf-c packs them as ""), so
 * validation, which also runs before encoding, must not trust them. */
static int str_empty(const char *s)
{
    return !s || !*s;
}

static int is_z85_key(const char *s)
{
    static const char z85[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                              ".-:+=^!/*?&<>()[]{}@%$#";
    size_t n = strlen(s);
    return n == 40 && strspn(s, z85) == n;
}

static int is_sha256_hex(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return n == 64 && strspn(s, "0123456789abcdef") == n;
}

static int check_count(const char *msg, const char *field, size_t have, uint64_t want,
                       const char *want_what, struct errbuf *e)
{
    if (have != want)
        return err_set(e, "%s: %s has %zu entries, %s is %llu", msg, field, have, want_what,
                       (unsigned long long)want);
    return 0;
}

static int validate_forward(const Bitnet__Forward *f, struct errbuf *e)
{
    if (f->n_rows == 0)
        return err_set(e, "forward: no rows");
    if (check_count("forward", "seq_ids", f->n_seq_ids, f->n_rows, "n_rows", e) ||
        check_count("forward", "positions", f->n_positions, f->n_rows, "n_rows", e) ||
        check_count("forward", "want_logits", f->n_want_logits, f->n_rows, "n_rows", e))
        return -1;
    if (f->n_token_ids) {
        if (check_count("forward", "token_ids", f->n_token_ids, f->n_rows, "n_rows", e))
            return -1;
        if (f->hidden.len)
            return err_set(e, "forward: carries both token ids and hidden states");
        return 0;
    }
    if (!enum_set(&bitnet__elem_type__descriptor, (int)f->hidden_type))
        return err_set(e, "forward: hidden_type %d is not an element type", (int)f->hidden_type);
    if (f->n_embd == 0)
        return err_set(e, "forward: n_embd is 0");
    size_t need = 0;
    if (wire_rows_bytes(f->hidden_type, f->n_rows, f->n_embd, &need, e))
        return err_prefix(e, "forward");
    if (f->hidden.len != need)
        return err_set(e, "forward: hidden has %zu bytes, %u x %u %s needs %zu", f->hidden.len,
                       f->n_rows, f->n_embd, wire_elem_name(f->hidden_type), need);
    return 0;
}

static int validate_forward_result(const Bitnet__ForwardResult *r, struct errbuf *e)
{
    if (check_count("forward_result", "seq_ids", r->n_seq_ids, r->n_rows, "n_rows", e) ||
        check_count("forward_result", "positions", r->n_positions, r->n_rows, "n_rows", e) ||
        check_count("forward_result", "argmax", r->n_argmax, r->n_rows, "n_rows", e))
        return -1;
    if (r->logits.len) {
        size_t need = 0;
        if (r->n_vocab == 0)
            return err_set(e, "forward_result: logits without n_vocab");
        if (wire_rows_bytes(BITNET__ELEM_TYPE__ELEM_TYPE_F32, r->n_rows, r->n_vocab, &need, e))
            return err_prefix(e, "forward_result");
        if (r->logits.len != need)
            return err_set(e, "forward_result: logits has %zu bytes, %u x %u f32 needs %zu",
                           r->logits.len, r->n_rows, r->n_vocab, need);
    }
    uint64_t nk = (uint64_t)r->n_rows * r->top_k;
    if (check_count("forward_result", "top_ids", r->n_top_ids, nk, "n_rows x top_k", e) ||
        check_count("forward_result", "top_logits", r->n_top_logits, nk, "n_rows x top_k", e))
        return -1;
    if (r->n_vocab) {
        for (size_t i = 0; i < r->n_argmax; i++)
            if (r->argmax[i] < 0 || (uint32_t)r->argmax[i] >= r->n_vocab)
                return err_set(e, "forward_result: argmax %d outside the vocabulary of %u",
                               r->argmax[i], r->n_vocab);
        for (size_t i = 0; i < r->n_top_ids; i++)
            if (r->top_ids[i] < 0 || (uint32_t)r->top_ids[i] >= r->n_vocab)
                return err_set(e, "forward_result: top id %d outside the vocabulary of %u",
                               r->top_ids[i], r->n_vocab);
    }
    return 0;
}

static int validate_load_shard(const Bitnet__LoadShard *l, struct errbuf *e)
{
    if (str_empty(l->model_path))
        return err_set(e, "load_shard: no model_path");
    if (!is_sha256_hex(l->model_sha256))
        return err_set(e, "load_shard: model_sha256 is not 64 lowercase hex digits");
    if (l->layer_begin > l->layer_end)
        return err_set(e, "load_shard: layer range [%u, %u) is reversed", l->layer_begin,
                       l->layer_end);
    if (l->layer_begin == l->layer_end && !l->has_embedding && !l->has_output)
        return err_set(e, "load_shard: stage has no layers, embedding or output");
    if (l->numa_node < -1)
        return err_set(e, "load_shard: numa_node %d (use -1 for none)", l->numa_node);
    if (!enum_set(&bitnet__elem_type__descriptor, (int)l->kv_type))
        return err_set(e, "load_shard: kv_type %d is not an element type", (int)l->kv_type);
    if (!enum_set(&bitnet__elem_type__descriptor, (int)l->act_type))
        return err_set(e, "load_shard: act_type %d is not an element type", (int)l->act_type);
    if (!wire_elem_size(l->act_type))
        return err_set(e, "load_shard: act_type %s is not f32, bf16 or f16",
                       wire_elem_name(l->act_type));
    if (!str_empty(l->next_server_key) && !is_z85_key(l->next_server_key))
        return err_set(e, "load_shard: next_server_key is not a Z85 CURVE key");
    return 0;
}

static int validate_generate_request(const Bitnet__GenerateRequest *g, struct errbuf *e)
{
    if (g->input_case == BITNET__GENERATE_REQUEST__INPUT__NOT_SET)
        return err_set(e, "generate_request: neither prompt nor chat");
    const Bitnet__SamplingParams *s = g->sampling;
    if (s) {
        if (!isfinite(s->temp) || s->temp < 0)
            return err_set(e, "generate_request: temp %g", (double)s->temp);
        if (!isfinite(s->top_p) || !isfinite(s->min_p) || !isfinite(s->repeat_penalty))
            return err_set(e, "generate_request: sampling parameter is not finite");
        if (s->repeat_penalty <= 0)
            return err_set(e, "generate_request: repeat_penalty %g", (double)s->repeat_penalty);
        if (s->repeat_last_n < 0)
            return err_set(e, "generate_request: repeat_last_n %d", s->repeat_last_n);
    }
    return 0;
}

static int validate_generate_chunk(const Bitnet__GenerateChunk *c, struct errbuf *e)
{
    if (!enum_known(&bitnet__stop_reason__descriptor, (int)c->stop_reason))
        return err_set(e, "generate_chunk: stop_reason %d unknown", (int)c->stop_reason);
    if (c->done != (c->stop_reason != BITNET__STOP_REASON__STOP_REASON_NONE))
        return err_set(e, "generate_chunk: done=%d disagrees with stop_reason %d", (int)c->done,
                       (int)c->stop_reason);
    return 0;
}

int wire_validate(const Bitnet__Envelope *env, struct errbuf *e)
{
    /* every body is a pointer in one union, so one NULL test covers all cases */
    if (env->body_case == BITNET__ENVELOPE__BODY__NOT_SET || !env->hello)
        return err_set(e, "envelope: no body");
    switch (env->body_case) {
    case BITNET__ENVELOPE__BODY_HELLO:
        if (!enum_set(&bitnet__role__descriptor, (int)env->hello->role))
            return err_set(e, "hello: role %d unknown", (int)env->hello->role);
        if (!str_empty(env->hello->curve_public_key) && !is_z85_key(env->hello->curve_public_key))
            return err_set(e, "hello: curve_public_key is not a Z85 CURVE key");
        return 0;
    case BITNET__ENVELOPE__BODY_LOAD_SHARD:
        return validate_load_shard(env->load_shard, e);
    case BITNET__ENVELOPE__BODY_FORWARD:
        return validate_forward(env->forward, e);
    case BITNET__ENVELOPE__BODY_FORWARD_RESULT:
        return validate_forward_result(env->forward_result, e);
    case BITNET__ENVELOPE__BODY_KV_OP:
        if (!enum_set(&bitnet__kv_op_kind__descriptor, (int)env->kv_op->kind))
            return err_set(e, "kv_op: kind %d unknown", (int)env->kv_op->kind);
        return 0;
    case BITNET__ENVELOPE__BODY_HEARTBEAT:
        if (!enum_set(&bitnet__role__descriptor, (int)env->heartbeat->role))
            return err_set(e, "heartbeat: role %d unknown", (int)env->heartbeat->role);
        return 0;
    case BITNET__ENVELOPE__BODY_GENERATE_REQUEST:
        return validate_generate_request(env->generate_request, e);
    case BITNET__ENVELOPE__BODY_GENERATE_CHUNK:
        return validate_generate_chunk(env->generate_chunk, e);
    case BITNET__ENVELOPE__BODY_WORKERS_REPLY:
        for (size_t i = 0; i < env->workers_reply->n_workers; i++)
            if (!enum_known(&bitnet__worker_state__descriptor,
                            (int)env->workers_reply->workers[i]->state))
                return err_set(e, "workers_reply: worker %zu has unknown state %d", i,
                               (int)env->workers_reply->workers[i]->state);
        return 0;
    case BITNET__ENVELOPE__BODY_EVAL_REPLY: {
        const Bitnet__EvalReply *r = env->eval_reply;
        if ((uint64_t)r->n_positions * r->n_vocab * sizeof(float) != r->logits.len)
            return err_set(e, "eval_reply: %zu bytes of logits for %u x %u", r->logits.len,
                           r->n_positions, r->n_vocab);
        return 0;
    }
    case BITNET__ENVELOPE__BODY_DAEMON_STATUS_REPLY:
        if (!enum_known(&bitnet__daemon_state__descriptor, (int)env->daemon_status_reply->state))
            return err_set(e, "daemon_status_reply: state %d unknown",
                           (int)env->daemon_status_reply->state);
        return 0;
    default:
        /* Error codes stay open (a newer peer's code still carries its text); the other
         * bodies have nothing whose inconsistency could hurt a reader */
        return 0;
    }
}

/* ---------------------------------------------------------------------------------------
 * Encode / decode */

int wire_encode(const Bitnet__Envelope *env, uint8_t **out, size_t *out_len, struct errbuf *e)
{
    *out = NULL;
    *out_len = 0;
    Bitnet__Envelope tmp = *env;
    if (!tmp.version)
        tmp.version = BITNET_PROTOCOL_VERSION;
    /* first, because validation indexes the arrays this vouches for */
    if (!protobuf_c_message_check(&tmp.base))
        return err_set(e, "encode: %s: an array or sub-message pointer is NULL",
                       wire_body_name(tmp.body_case));
    if (wire_validate(&tmp, e))
        return err_prefix(e, "encode");
    size_t n = bitnet__envelope__get_packed_size(&tmp);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return err_set(e, "encode: out of memory for %zu bytes", n);
    size_t got = bitnet__envelope__pack(&tmp, buf);
    if (got != n) {
        free(buf);
        return err_set(e, "encode: packed %zu bytes, expected %zu", got, n);
    }
    *out = buf;
    *out_len = n;
    return 0;
}

static int read_varint(const uint8_t *p, size_t len, size_t *i, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*i >= len)
            return -1;
        uint8_t b = p[(*i)++];
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* Finds Envelope.version by walking the top-level fields without interpreting them, so the
 * version verdict does not depend on this build understanding the rest. */
static int scan_version(const uint8_t *p, size_t len, uint64_t *version, int *found)
{
    size_t i = 0;
    *found = 0;
    while (i < len) {
        uint64_t tag, v;
        if (read_varint(p, len, &i, &tag) || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
            return -1;
        switch (tag & 7) {
        case 0:
            if (read_varint(p, len, &i, &v))
                return -1;
            if ((tag >> 3) == 1) {
                *version = v;
                *found = 1;
            }
            break;
        case 1:
            if (len - i < 8)
                return -1;
            i += 8;
            break;
        case 2:
            if (read_varint(p, len, &i, &v) || v > len - i)
                return -1;
            i += (size_t)v;
            break;
        case 5:
            if (len - i < 4)
                return -1;
            i += 4;
            break;
        default: /* groups are not proto3; anything else is not protobuf */
            return -1;
        }
        if ((tag >> 3) == 1 && (tag & 7) != 0)
            return -1;
    }
    return 0;
}

/* protobuf-c takes field number 0 written as a long varint (0x85 0x00) for an unknown field,
 * and would pack it again as the one-byte tag it refuses: an envelope accepted here that no
 * receiver could read once relayed (a worker's StatusReply inside bitnetd's WorkersReply).
 * Field 0 is not protobuf at any depth. */
static int has_field_zero(const ProtobufCMessage *m)
{
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0)
            return 1;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *field = (const char *)m + f->offset;
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
            ProtobufCMessage *const *sub = *(ProtobufCMessage *const *const *)field;
            for (size_t k = 0; k < n; k++)
                if (has_field_zero(sub[k]))
                    return 1;
            continue;
        }
        /* the members of a oneof share their storage: only the one set may be read */
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)((const char *)m + f->quantifier_offset) != f->id)
            continue;
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)field;
        if (sub && has_field_zero(sub))
            return 1;
    }
    return 0;
}

/* protobuf-c allocates per element and per sub-message, so a frame of empty sub-messages
 * can ask for ~50x its size. Legitimate envelopes expand at most ~4x (packed varints to
 * 32-bit elements); the budget refuses the rest before it reaches the heap. */
struct budget {
    size_t left;
    int exceeded;
};

static void *budget_alloc(void *data, size_t size)
{
    struct budget *b = data;
    if (size > b->left) {
        b->exceeded = 1;
        return NULL;
    }
    b->left -= size;
    return malloc(size ? size : 1);
}

static void budget_free(void *data, void *p)
{
    (void)data;
    free(p);
}

static size_t decode_budget(size_t len)
{
    return len * 8 + ((size_t)1 << 20);
}

static int decode(const uint8_t *p, size_t len, size_t max, Bitnet__Envelope **out,
                  struct errbuf *e)
{
    if (len > max)
        return reject(e, WIRE_TOO_BIG, "message of %zu bytes exceeds the %zu-byte limit", len, max);
    uint64_t version = 0;
    int found;
    if (scan_version(p, len, &version, &found))
        return reject(e, WIRE_MALFORMED, "malformed message: not a protobuf envelope (%zu bytes)",
                      len);
    if (!found || version == 0)
        return reject(e, WIRE_MALFORMED,
                      "malformed message: no protocol version (this build speaks %d)",
                      BITNET_PROTOCOL_VERSION);
    if (version != BITNET_PROTOCOL_VERSION)
        return reject(e, WIRE_BAD_VERSION,
                      "protocol version mismatch: peer speaks protocol %llu, this build speaks %d",
                      (unsigned long long)version, BITNET_PROTOCOL_VERSION);

    struct budget b = {decode_budget(len), 0};
    ProtobufCAllocator alloc = {budget_alloc, budget_free, &b};
    Bitnet__Envelope *env = bitnet__envelope__unpack(&alloc, len, p);
    if (!env) {
        if (b.exceeded)
            return reject(e, WIRE_TOO_BIG,
                          "message of %zu bytes would need more than %zu bytes to decode", len,
                          decode_budget(len));
        return reject(e, WIRE_MALFORMED, "malformed message: protobuf unpack failed (%zu bytes)",
                      len);
    }
    if (has_field_zero(&env->base)) {
        wire_free(env);
        return reject(e, WIRE_MALFORMED, "malformed message: field number 0 (%zu bytes)", len);
    }
    if (env->body_case == BITNET__ENVELOPE__BODY__NOT_SET) {
        wire_free(env);
        return reject(e, WIRE_NO_BODY, "malformed message: envelope has no body this build knows");
    }
    if (wire_validate(env, e)) {
        wire_free(env);
        err_prefix(e, "malformed message");
        return WIRE_MALFORMED;
    }
    *out = env;
    return WIRE_OK;
}

int wire_decode(const void *buf, size_t len, struct wire_rx *rx, Bitnet__Envelope **out,
                struct errbuf *e)
{
    *out = NULL;
    size_t max = rx && rx->max_bytes ? rx->max_bytes : WIRE_DEFAULT_MAX_BYTES;
    int rc = decode(buf, len, max, out, e);
    count(rx, rc);
    return rc;
}

void wire_free(Bitnet__Envelope *env)
{
    if (env)
        bitnet__envelope__free_unpacked(env, NULL);
}

/* ---------------------------------------------------------------------------------------
 * ZeroMQ */

static int zmq_fail(const char *what, struct errbuf *e)
{
    int err = zmq_errno();
    if (err == EAGAIN || err == EINTR)
        return WIRE_AGAIN;
    if (err == EHOSTUNREACH) {
        err_set(e, "%s: peer is not connected", what);
        return WIRE_UNREACHABLE;
    }
    err_set(e, "%s: %s", what, zmq_strerror(err));
    return WIRE_ERROR;
}

/* Turns a timeout into "go ahead with ZMQ_DONTWAIT" (WIRE_OK) or "not ready" (WIRE_AGAIN);
 * a blocking call (-1) goes straight to the blocking operation. */
static int wait_ready(void *sock, short events, int timeout_ms, const char *what, struct errbuf *e)
{
    if (timeout_ms <= 0)
        return WIRE_OK;
    zmq_pollitem_t it = {sock, 0, events, 0};
    int n = zmq_poll(&it, 1, timeout_ms);
    if (n < 0)
        return zmq_fail(what, e);
    return n > 0 ? WIRE_OK : WIRE_AGAIN;
}

static void free_packed(void *data, void *hint)
{
    (void)hint;
    free(data);
}

/* Discards the remaining frames of a multipart message, so the next receive starts at a
 * message boundary. ZeroMQ delivers multipart messages atomically, so this never waits. */
static void drain_more(void *sock)
{
    int more = 1;
    size_t sz = sizeof more;
    while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        int rc = zmq_msg_recv(&m, sock, ZMQ_DONTWAIT);
        zmq_msg_close(&m);
        if (rc < 0)
            break;
    }
}

static int send_envelope(void *sock, const struct wire_identity *id, const Bitnet__Envelope *env,
                         int timeout_ms, struct errbuf *e)
{
    uint8_t *buf;
    size_t len;
    if (wire_encode(env, &buf, &len, e))
        return WIRE_ERROR;
    int rc = wait_ready(sock, ZMQ_POLLOUT, timeout_ms, "send", e);
    if (rc != WIRE_OK) {
        free(buf);
        return rc;
    }
    /* handing the buffer to ZeroMQ saves a copy of what may be megabytes of hidden state */
    zmq_msg_t m;
    if (zmq_msg_init_data(&m, buf, len, free_packed, NULL) != 0) {
        free(buf);
        return zmq_fail("send", e);
    }
    int flags = timeout_ms < 0 ? 0 : ZMQ_DONTWAIT;
    if (id && zmq_send(sock, id->bytes, id->len, flags | ZMQ_SNDMORE) < 0) {
        zmq_msg_close(&m);
        return zmq_fail("send identity", e);
    }
    /* once the identity frame is queued the rest of the message cannot block, and must not
     * be abandoned: a half-sent multipart message would glue itself to the next send */
    if (id)
        flags = ZMQ_DONTWAIT;
    for (;;) {
        if (zmq_msg_send(&m, sock, flags) >= 0)
            return WIRE_OK;
        if (id && zmq_errno() == EINTR)
            continue;
        rc = zmq_fail("send", e);
        zmq_msg_close(&m);
        if (id && rc == WIRE_AGAIN)
            return reject(e, WIRE_ERROR, "send: message half sent");
        return rc;
    }
}

int wire_send(void *sock, const Bitnet__Envelope *env, int timeout_ms, struct errbuf *e)
{
    return send_envelope(sock, NULL, env, timeout_ms, e);
}

int wire_send_to(void *sock, const struct wire_identity *id, const Bitnet__Envelope *env,
                 int timeout_ms, struct errbuf *e)
{
    if (!id || id->len == 0 || id->len > sizeof id->bytes)
        return reject(e, WIRE_ERROR, "send: no peer identity");
    return send_envelope(sock, id, env, timeout_ms, e);
}

static int recv_frame(void *sock, zmq_msg_t *m, int flags, const char *what, struct errbuf *e)
{
    zmq_msg_init(m);
    if (zmq_msg_recv(m, sock, flags) >= 0)
        return WIRE_OK;
    zmq_msg_close(m);
    return zmq_fail(what, e);
}

static int recv_envelope(void *sock, struct wire_rx *rx, struct wire_identity *id,
                         Bitnet__Envelope **out, int timeout_ms, struct errbuf *e)
{
    *out = NULL;
    int rc = wait_ready(sock, ZMQ_POLLIN, timeout_ms, "receive", e);
    if (rc != WIRE_OK)
        return rc;
    int flags = timeout_ms < 0 ? 0 : ZMQ_DONTWAIT;
    zmq_msg_t m;
    if (id) {
        memset(id, 0, sizeof *id);
        if ((rc = recv_frame(sock, &m, flags, "receive", e)) != WIRE_OK)
            return rc;
        size_t n = zmq_msg_size(&m);
        int more = zmq_msg_more(&m);
        if (n <= sizeof id->bytes) {
            memcpy(id->bytes, zmq_msg_data(&m), n);
            id->len = n;
        }
        zmq_msg_close(&m);
        if (!more || n == 0 || n > sizeof id->bytes) {
            drain_more(sock);
            count(rx, WIRE_MALFORMED);
            return reject(e, WIRE_MALFORMED,
                          "malformed message: no identity frame (not a ROUTER socket?)");
        }
        flags = ZMQ_DONTWAIT; /* the rest of a multipart message is already here */
    }
    if ((rc = recv_frame(sock, &m, flags, "receive", e)) != WIRE_OK) {
        if (id && rc == WIRE_AGAIN)
            return reject(e, WIRE_ERROR, "receive: message cut after its identity frame");
        return rc;
    }
    if (zmq_msg_more(&m)) {
        zmq_msg_close(&m);
        drain_more(sock);
        count(rx, WIRE_MALFORMED);
        return reject(e, WIRE_MALFORMED, "malformed message: more than one frame");
    }
    if (id) {
        const char *user = zmq_msg_gets(&m, "User-Id");
        if (user)
            snprintf(id->user_id, sizeof id->user_id, "%s", user);
        const char *addr = zmq_msg_gets(&m, "Peer-Address");
        if (addr)
            snprintf(id->peer_address, sizeof id->peer_address, "%s", addr);
        id->conn_fd = zmq_msg_get(&m, ZMQ_SRCFD);
    }
    rc = wire_decode(zmq_msg_data(&m), zmq_msg_size(&m), rx, out, e);
    zmq_msg_close(&m);
    return rc;
}

bool wire_identity_equal(const struct wire_identity *a, const struct wire_identity *b)
{
    return a->len == b->len && memcmp(a->bytes, b->bytes, a->len) == 0;
}

int wire_recv(void *sock, struct wire_rx *rx, Bitnet__Envelope **out, int timeout_ms,
              struct errbuf *e)
{
    return recv_envelope(sock, rx, NULL, out, timeout_ms, e);
}

int wire_recv_from(void *sock, struct wire_rx *rx, struct wire_identity *id, Bitnet__Envelope **out,
                   int timeout_ms, struct errbuf *e)
{
    return recv_envelope(sock, rx, id, out, timeout_ms, e);
}

int wire_send_error(void *sock, const struct wire_identity *id, uint64_t request_id,
                    Bitnet__ErrorCode code, const char *message, int timeout_ms, struct errbuf *e)
{
    Bitnet__Envelope env;
    Bitnet__Error err = BITNET__ERROR__INIT;
    wire_envelope_init(&env, request_id);
    err.code = code;
    err.message = (char *)(message ? message : "");
    env.body_case = BITNET__ENVELOPE__BODY_ERROR;
    env.error = &err;
    return id ? wire_send_to(sock, id, &env, timeout_ms, e) : wire_send(sock, &env, timeout_ms, e);
}

/* ---------------------------------------------------------------------------------------
 * Row packing */

size_t wire_elem_size(Bitnet__ElemType t)
{
    switch (t) {
    case BITNET__ELEM_TYPE__ELEM_TYPE_F32:
        return 4;
    case BITNET__ELEM_TYPE__ELEM_TYPE_BF16:
    case BITNET__ELEM_TYPE__ELEM_TYPE_F16:
        return 2;
    default:
        return 0;
    }
}

const char *wire_worker_state_name(Bitnet__WorkerState s)
{
    switch (s) {
    case BITNET__WORKER_STATE__WORKER_STATE_CONNECTING: return "connecting";
    case BITNET__WORKER_STATE__WORKER_STATE_LOADING: return "loading";
    case BITNET__WORKER_STATE__WORKER_STATE_READY: return "ready";
    case BITNET__WORKER_STATE__WORKER_STATE_DRAINING: return "draining";
    case BITNET__WORKER_STATE__WORKER_STATE_DEAD: return "dead";
    case BITNET__WORKER_STATE__WORKER_STATE_WAITING: return "waiting";
    default: return "unknown";
    }
}

const char *wire_elem_name(Bitnet__ElemType t)
{
    switch (t) {
    case BITNET__ELEM_TYPE__ELEM_TYPE_F32:
        return "f32";
    case BITNET__ELEM_TYPE__ELEM_TYPE_BF16:
        return "bf16";
    case BITNET__ELEM_TYPE__ELEM_TYPE_F16:
        return "f16";
    case BITNET__ELEM_TYPE__ELEM_TYPE_Q8:
        return "q8";
    default:
        return "unknown";
    }
}

int wire_rows_bytes(Bitnet__ElemType t, size_t n_rows, size_t n_cols, size_t *out, struct errbuf *e)
{
    size_t es = wire_elem_size(t), n;
    if (!es)
        return err_set(e, "element type %d unknown", (int)t);
    if (__builtin_mul_overflow(n_rows, n_cols, &n) || __builtin_mul_overflow(n, es, &n))
        return err_set(e, "%zu x %zu %s rows overflow", n_rows, n_cols, wire_elem_name(t));
    *out = n;
    return 0;
}

uint16_t wire_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it a (quiet) NaN after truncation */
        return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fffu + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

static void put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static uint16_t get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

int wire_pack_rows(const float *src, size_t n_rows, size_t n_cols, Bitnet__ElemType t, void *dst,
                   size_t dst_len, struct errbuf *e)
{
    size_t need = 0;
    if (wire_rows_bytes(t, n_rows, n_cols, &need, e))
        return err_prefix(e, "pack rows");
    if (dst_len != need)
        return err_set(e, "pack rows: buffer has %zu bytes, %zu x %zu %s needs %zu", dst_len,
                       n_rows, n_cols, wire_elem_name(t), need);
    size_t n = n_rows * n_cols;
    uint8_t *d = dst;
    switch (t) {
    case BITNET__ELEM_TYPE__ELEM_TYPE_F32:
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(d, src, need);
#else
        for (size_t i = 0; i < n; i++) {
            uint32_t x;
            memcpy(&x, &src[i], 4);
            x = __builtin_bswap32(x);
            memcpy(d + 4 * i, &x, 4);
        }
#endif
        break;
    case BITNET__ELEM_TYPE__ELEM_TYPE_BF16:
        for (size_t i = 0; i < n; i++)
            put_le16(d + 2 * i, wire_f32_to_bf16(src[i]));
        break;
    default:
        for (size_t i = 0; i < n; i++)
            put_le16(d + 2 * i, f32_to_f16(src[i]));
        break;
    }
    return 0;
}

int wire_unpack_rows(const void *src, size_t src_len, size_t n_rows, size_t n_cols,
                     Bitnet__ElemType t, float *dst, struct errbuf *e)
{
    size_t need = 0;
    if (wire_rows_bytes(t, n_rows, n_cols, &need, e))
        return err_prefix(e, "unpack rows");
    if (src_len != need)
        return err_set(e, "unpack rows: %zu bytes received, %zu x %zu %s needs %zu", src_len,
                       n_rows, n_cols, wire_elem_name(t), need);
    size_t n = n_rows * n_cols;
    const uint8_t *s = src;
    switch (t) {
    case BITNET__ELEM_TYPE__ELEM_TYPE_F32:
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(dst, s, need);
#else
        for (size_t i = 0; i < n; i++) {
            uint32_t x;
            memcpy(&x, s + 4 * i, 4);
            x = __builtin_bswap32(x);
            memcpy(&dst[i], &x, 4);
        }
#endif
        break;
    case BITNET__ELEM_TYPE__ELEM_TYPE_BF16:
        for (size_t i = 0; i < n; i++)
            dst[i] = bf16_to_f32(get_le16(s + 2 * i));
        break;
    default:
        for (size_t i = 0; i < n; i++)
            dst[i] = f16_to_f32(get_le16(s + 2 * i));
        break;
    }
    return 0;
}

int wire_forward_set_hidden(Bitnet__Forward *fw, const float *rows, uint32_t n_rows,
                            uint32_t n_embd, Bitnet__ElemType t, struct errbuf *e)
{
    size_t need = 0;
    if (wire_rows_bytes(t, n_rows, n_embd, &need, e))
        return err_prefix(e, "forward hidden");
    uint8_t *buf = malloc(need ? need : 1);
    if (!buf)
        return err_set(e, "forward hidden: out of memory for %zu bytes", need);
    if (wire_pack_rows(rows, n_rows, n_embd, t, buf, need, e)) {
        free(buf);
        return -1;
    }
    free(fw->hidden.data);
    fw->hidden.data = buf;
    fw->hidden.len = need;
    fw->hidden_type = t;
    fw->n_rows = n_rows;
    fw->n_embd = n_embd;
    return 0;
}

int wire_forward_get_hidden(const Bitnet__Forward *fw, float *dst, size_t dst_floats,
                            struct errbuf *e)
{
    if ((uint64_t)fw->n_rows * fw->n_embd > dst_floats)
        return err_set(e, "forward hidden: %u x %u rows do not fit in %zu floats", fw->n_rows,
                       fw->n_embd, dst_floats);
    if (wire_unpack_rows(fw->hidden.data, fw->hidden.len, fw->n_rows, fw->n_embd, fw->hidden_type,
                         dst, e))
        return err_prefix(e, "forward hidden");
    return 0;
}

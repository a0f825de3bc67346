/* The one place where bitnetd's protobuf envelopes meet bytes and ZeroMQ sockets.
 *
 * Everything a peer sends is untrusted until wire_decode has said yes: size first (before
 * any unpacking), then the protocol version (read straight from the bytes, so a peer of
 * another version is named even if its body layout changed), then protobuf-c unpacking
 * under a memory budget, then structural validation (array lengths agree with row counts,
 * byte lengths with dims, enums are known). A consumer of an accepted envelope can index
 * its arrays by n_rows without re-checking.
 *
 * Return codes: functions that build or convert return 0 / -1 with "what: detail" in the
 * errbuf (model/errbuf.h). Functions that move envelopes return an enum wire_rc, because a
 * caller in a poll loop must tell "nothing yet" and "peer sent garbage" (carry on) from
 * "socket broken" (stop). */
#ifndef BITNET_PROTO_WIRE_H
#define BITNET_PROTO_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/errbuf.h"
#include "proto/bitnet.pb-c.h"

#define BITNET_PROTOCOL_VERSION 1

/* Default receive limit: a 2B-4T prompt batch of 2048 rows x 2560 f32 is 20 MiB, so 64 MiB
 * leaves room without letting one frame pin unbounded memory. */
#define WIRE_DEFAULT_MAX_BYTES ((size_t)64 << 20)

enum wire_rc {
    WIRE_OK = 0,
    WIRE_AGAIN = 1,        /* nothing moved: timeout, would block, or a signal; e untouched */
    WIRE_UNREACHABLE = 2,  /* ROUTER (with ZMQ_ROUTER_MANDATORY) has no such peer now */
    WIRE_ERROR = -1,       /* socket or process failure (ETERM, ENOMEM), or env would not encode */
    WIRE_MALFORMED = -2,   /* undecodable, failed validation, or wrong frame count */
    WIRE_TOO_BIG = -3,     /* over max_bytes, or would expand past the decode budget */
    WIRE_BAD_VERSION = -4, /* another protocol version */
    WIRE_NO_BODY = -5,     /* decoded, but carries no body this build knows */
};

/* True for the codes that mean "one bad message was dropped and counted": the socket is
 * fine and the caller should keep serving (perhaps after replying with an Error). */
static inline int wire_rc_is_reject(int rc)
{
    return rc <= WIRE_MALFORMED;
}

/* What to put in an Error reply for a rejected message. */
Bitnet__ErrorCode wire_rc_error_code(int rc);

/* Tallies of what a receiver accepted and refused. The caller owns them (one per socket or
 * per peer, as it likes) and reports them in StatusReply. */
struct wire_counters {
    uint64_t accepted;
    uint64_t malformed; /* includes no-body and wrong frame count */
    uint64_t oversized;
    uint64_t wrong_version;
};

/* Receive policy plus its counters, passed to every decode/receive. */
struct wire_rx {
    size_t max_bytes; /* frames longer than this are refused unread; 0 = default */
    struct wire_counters counts;
};

void wire_rx_init(struct wire_rx *rx, size_t max_bytes);

/* BITNET__ENVELOPE__INIT with the version set: an envelope ready for one body. */
void wire_envelope_init(Bitnet__Envelope *env, uint64_t request_id);

/* Name of a body case ("forward", "hello", ...), for logs; "none" when unset. */
const char *wire_body_name(Bitnet__Envelope__BodyCase c);

/* Structural checks shared by encode and decode (see the top of this file). */
int wire_validate(const Bitnet__Envelope *env, struct errbuf *e);

/* Packs env into a malloc'd buffer (caller frees). A version of 0 is sent as
 * BITNET_PROTOCOL_VERSION; an envelope without a body or failing wire_validate is refused,
 * so a sender's bug shows up at the sender. */
int wire_encode(const Bitnet__Envelope *env, uint8_t **out, size_t *out_len, struct errbuf *e);

/* Decodes and checks one frame. On WIRE_OK *out is an envelope to release with wire_free;
 * otherwise *out is NULL, e says why and the matching counter of rx (if rx is not NULL) was
 * incremented. rx NULL means the default limit and no counting. */
int wire_decode(const void *buf, size_t len, struct wire_rx *rx, Bitnet__Envelope **out,
                struct errbuf *e);

void wire_free(Bitnet__Envelope *env);

/* A ROUTER peer's routing id (ZeroMQ caps it at 255 bytes), kept inline so it can be
 * copied into tables without ownership questions. */
struct wire_identity {
    size_t len;
    unsigned char bytes[255];
    /* ZAP User-Id the connection was admitted with: under proto/zap.c the client's Z85
     * CURVE public key, to compare with Hello.curve_public_key. Empty without ZAP. */
    char user_id[64];
    /* the peer's IP address on tcp (libzmq's Peer-Address), for logs; "" on ipc */
    char peer_address[64];
    /* the descriptor of the connection the message came on (libzmq's ZMQ_SRCFD), -1 if
     * unknown: a routing id is whatever the peer says, the connection is not */
    int conn_fd;
};

/* Same routing id (the connection is not compared). */
bool wire_identity_equal(const struct wire_identity *a, const struct wire_identity *b);

/* Socket helpers. One envelope is one frame; ROUTER sockets add the identity frame in
 * front. timeout_ms: -1 blocks, 0 never waits (for use after zmq_poll said the socket is
 * ready), > 0 waits at most that long and then returns WIRE_AGAIN.
 *
 * Receive: a frame of the wrong shape (extra frames, missing identity) is drained, counted
 * as malformed and reported as WIRE_MALFORMED, so the stream never desynchronises. ZeroMQ
 * buffers a whole frame before we see it; on sockets reachable by untrusted peers also set
 * ZMQ_MAXMSGSIZE (e.g. to 2 x max_bytes) so that a huge frame drops the connection instead
 * of being buffered. */
int wire_send(void *sock, const Bitnet__Envelope *env, int timeout_ms, struct errbuf *e);
int wire_recv(void *sock, struct wire_rx *rx, Bitnet__Envelope **out, int timeout_ms,
              struct errbuf *e);
int wire_send_to(void *sock, const struct wire_identity *id, const Bitnet__Envelope *env,
                 int timeout_ms, struct errbuf *e);
/* On WIRE_OK and on rejects, *id holds the sender, so the caller can answer with an Error. */
int wire_recv_from(void *sock, struct wire_rx *rx, struct wire_identity *id, Bitnet__Envelope **out,
                   int timeout_ms, struct errbuf *e);

/* Sends an Error body answering request_id; id NULL for non-ROUTER sockets. */
int wire_send_error(void *sock, const struct wire_identity *id, uint64_t request_id,
                    Bitnet__ErrorCode code, const char *message, int timeout_ms, struct errbuf *e);

/* Row packing for hidden states (and f32 logits): row-major, little-endian. */

/* Bytes per element; 0 for UNSPECIFIED or an unknown value. */
size_t wire_elem_size(Bitnet__ElemType t);
const char *wire_elem_name(Bitnet__ElemType t);
/* A WorkerInfo state as bitnetctl and /metrics name it ("ready", ...). */
const char *wire_worker_state_name(Bitnet__WorkerState s);
/* n_rows x n_cols x element size, refusing unknown types and overflow. */
int wire_rows_bytes(Bitnet__ElemType t, size_t n_rows, size_t n_cols, size_t *out,
                    struct errbuf *e);
/* dst_len / src_len must equal wire_rows_bytes exactly: a mismatch means the two sides
 * disagree on the shape, which must never be papered over. */
int wire_pack_rows(const float *src, size_t n_rows, size_t n_cols, Bitnet__ElemType t, void *dst,
                   size_t dst_len, struct errbuf *e);
int wire_unpack_rows(const void *src, size_t src_len, size_t n_rows, size_t n_cols,
                     Bitnet__ElemType t, float *dst, struct errbuf *e);

/* Round to nearest even; NaN stays NaN. (bf16_to_f32 is in kernels/f16.h.) */
uint16_t wire_f32_to_bf16(float f);

/* Sets fw->hidden (a new malloc'd buffer; the old one is free()d, so it must have come
 * from malloc or wire_decode), hidden_type, n_rows and n_embd. Reusing a decoded Forward
 * this way is how a stage passes a step on; token_ids are left to the caller. */
int wire_forward_set_hidden(Bitnet__Forward *fw, const float *rows, uint32_t n_rows,
                            uint32_t n_embd, Bitnet__ElemType t, struct errbuf *e);
/* Unpacks fw->hidden into dst, which holds dst_floats floats (>= n_rows x n_embd). */
int wire_forward_get_hidden(const Bitnet__Forward *fw, float *dst, size_t dst_floats,
                            struct errbuf *e);

#endif

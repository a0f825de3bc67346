/* ZAP handler (ZeroMQ RFC 27) that admits CURVE clients by public key.
 *
 * CURVE alone proves a client knows the server's public key, which every worker must know;
 * it says nothing about who the client is. libzmq asks the ZAP handler of the socket's
 * context (a REP socket bound to inproc://zeromq.zap.01) about every new CURVE connection,
 * and this one answers yes only for keys listed in a file: one Z85 public key (40 chars)
 * per line; blank lines, lines starting with '#' and text after the key are ignored.
 *
 * Answers by mechanism: CURVE - listed keys only, User-Id = the client's Z85 key (see
 * struct wire_identity.user_id); NULL - allowed, because libzmq only consults ZAP for NULL
 * sockets given a ZMQ_ZAP_DOMAIN, i.e. unencrypted local sockets the owner chose; PLAIN and
 * GSSAPI - refused, bitnetd never uses them.
 *
 * Order matters: start the handler before any CURVE server socket of the context binds.
 * While no handler is bound, libzmq admits every client that knows the server key. Stop it
 * before zmq_ctx_term, which waits for its sockets. */
#ifndef BITNET_PROTO_ZAP_H
#define BITNET_PROTO_ZAP_H

#include <stdint.h>

#include "model/errbuf.h"

struct zap;

struct zap_stats {
    uint64_t allowed;
    uint64_t refused;
    uint64_t bad_requests; /* ZAP requests libzmq should never send; answered with 500 */
    int failed;            /* the serving thread stopped (its socket failed): see error */
    struct errbuf error;
};

/* Loads the key file and binds the handler in ctx, for a caller that serves it from its
 * own zmq_poll loop (zap_socket + zap_serve). */
struct zap *zap_open(void *ctx, const char *keys_path, struct errbuf *e);

/* As zap_open, plus a thread that serves requests until zap_close. */
struct zap *zap_start(void *ctx, const char *keys_path, struct errbuf *e);

/* The REP socket to poll for ZMQ_POLLIN (poll-driven use only). */
void *zap_socket(struct zap *z);

/* Answers every pending request without blocking; 0, or -1 if the socket failed. */
int zap_serve(struct zap *z, struct errbuf *e);

/* Replaces the allow-list from a file, e.g. on SIGHUP. Connections already admitted stay;
 * on error the old list is kept. */
int zap_reload(struct zap *z, const char *keys_path, struct errbuf *e);

void zap_get_stats(struct zap *z, struct zap_stats *out);

/* Stops the thread (if any), unbinds and frees. NULL is a no-op. */
void zap_close(struct zap *z);

#endif

/* ZAP handler (ZeroMQ RFC 27) that admits CURVE clients by public key.
 *
 * CURVE alone proves a client knows the server's public key, which every worker must know;
 * it says nothing about who the client is. libzmq asks the ZAP handler of the socket's
 * context (a REP socket bound to inproc://zeromq.zap.01) about every new CURVE connection,
 * and this one answers yes only for keys listed in a file, or in the *.pub files of a
 * directory: one Z85 public key (40 chars) per line; blank lines, lines starting with '#'
 * and text after the key are ignored (the format of bitnetctl keygen's .pub files). Or the
 * list is given in memory (zap_set_keys), as a worker's data socket gets it in LoadShard.
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

#include <stddef.h>
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

/* One decision, for an observer (logging, counting). Strings live during the call only. */
struct zap_decision {
    int allowed;
    const char *mechanism;  /* "CURVE", "NULL", ...; "" for a malformed request */
    const char *address;    /* the peer's IP address, as libzmq gives it */
    const char *key;        /* CURVE: the client's Z85 public key; else "" */
    const char *text;       /* the status text sent back */
};
typedef void (*zap_observer)(void *arg, const struct zap_decision *d);

/* Loads the key file (or directory) and binds the handler in ctx, for a caller that serves
 * it from its own zmq_poll loop (zap_socket + zap_serve). */
struct zap *zap_open(void *ctx, const char *keys_path, struct errbuf *e);

/* As zap_open, plus a thread that serves requests until zap_close. */
struct zap *zap_start(void *ctx, const char *keys_path, struct errbuf *e);

/* The REP socket to poll for ZMQ_POLLIN (poll-driven use only). */
void *zap_socket(struct zap *z);

/* Answers every pending request without blocking; 0, or -1 if the socket failed. */
int zap_serve(struct zap *z, struct errbuf *e);

/* As zap_start with no list yet: requests wait, unanswered, until the first zap_set_keys.
 * For a server that learns its list later (a worker's data socket, from LoadShard): libzmq
 * never reconnects a client that ZAP refused, so refusing the expected sender only because
 * its key has not arrived yet would cut it off for good. A handshake held past libzmq's
 * ZMQ_HANDSHAKE_IVL (30 s by default) is dropped, and the client connects again. */
struct zap *zap_start_pending(void *ctx, struct errbuf *e);

/* Replaces the allow-list from a file, e.g. on SIGHUP. Connections already admitted stay;
 * on error the old list is kept. */
int zap_reload(struct zap *z, const char *keys_path, struct errbuf *e);

/* Replaces the allow-list with n Z85 public keys (40 characters each); n == 0 refuses every
 * CURVE client. Ends the wait of zap_start_pending. Connections already admitted stay; on
 * error ("zap: key I '...': what") the old list is kept. */
int zap_set_keys(struct zap *z, const char *const *keys, size_t n, struct errbuf *e);

void zap_get_stats(struct zap *z, struct zap_stats *out);

/* Called after each answer, on the thread that serves (the caller's with zap_serve, the
 * handler's own with zap_start). Set it before the first request can arrive. */
void zap_set_observer(struct zap *z, zap_observer fn, void *arg);

/* Keys in the allow-list now. */
size_t zap_n_keys(struct zap *z);

/* Stops the thread (if any), unbinds and frees. NULL is a no-op. */
void zap_close(struct zap *z);

#endif

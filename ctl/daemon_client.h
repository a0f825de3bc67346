/* bitnetctl's side of the client socket: connect to a running bitnetd, send a request,
 * read the replies that carry its request id. */
#ifndef BITNET_CTL_DAEMON_CLIENT_H
#define BITNET_CTL_DAEMON_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "model/errbuf.h"
#include "proto/bitnet.pb-c.h"
#include "proto/wire.h"

struct daemon_client {
    void *ctx;
    void *sock;
    void *monitor;      /* the socket's connection events: a daemon that died closes it */
    bool connected;     /* a connection was made (so a disconnect means the daemon went) */
    struct wire_rx rx;
    uint64_t next_id;
    char endpoint[512];
};

/* Connects to the daemon whose run directory is run_dir (NULL: the default). Fails with a
 * clear message when no daemon socket exists there. */
int daemon_connect(struct daemon_client *c, const char *run_dir, struct errbuf *e);
void daemon_disconnect(struct daemon_client *c);

/* Sends env (its request_id is set here) and returns the id used, or 0 on failure. */
uint64_t daemon_send(struct daemon_client *c, Bitnet__Envelope *env, struct errbuf *e);

/* Waits up to timeout_ms for the next reply to request id; replies to other ids are
 * dropped. An Error reply is turned into -1 with its message in e, and so is the daemon
 * closing the connection (it exited or was killed), noticed within a fraction of a
 * second. Returns 0 with *out set (free with wire_free), 1 on timeout, -1 on error. */
int daemon_recv(struct daemon_client *c, uint64_t id, int timeout_ms, Bitnet__Envelope **out,
                struct errbuf *e);

#endif

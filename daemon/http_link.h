/* The HTTP API's connection to its own daemon: a DEALER on the client-control socket
 * (ctl.sock), speaking what bitnetctl speaks (docs/runtime.md, Client requests). Each
 * HTTP request opens its own link on the thread that serves it, since a ZeroMQ socket
 * belongs to one thread; the context is shared. One link per request also makes each
 * request its own client to the daemon: --max-jobs-per-client limits one link, and a
 * link that closes is a client that went away. */
#ifndef BITNET_DAEMON_HTTP_LINK_H
#define BITNET_DAEMON_HTTP_LINK_H

#include <stdbool.h>
#include <stdint.h>

#include "model/errbuf.h"
#include "proto/bitnet.pb-c.h"
#include "proto/wire.h"

struct http_link {
    void *sock;
    struct wire_rx rx;
    uint64_t next_id;
};

int http_link_open(struct http_link *l, void *zmq_ctx, const char *ctl_endpoint,
                   struct errbuf *e);
void http_link_close(struct http_link *l);

/* Sends env with a new request id; returns the id, or 0 with e filled. */
uint64_t http_link_send(struct http_link *l, Bitnet__Envelope *env, struct errbuf *e);
/* The next message for request id within timeout_ms (others, such as the daemon's
 * probes with id 0, are dropped but count as the daemon being alive: *alive is set).
 * 0 with *out (wire_free it), 1 on timeout, -1 with e. */
int http_link_recv(struct http_link *l, uint64_t id, int timeout_ms, Bitnet__Envelope **out,
                   bool *alive, struct errbuf *e);
/* Asks and waits for the reply: StatusRequest, WorkersRequest. */
int http_link_ask(struct http_link *l, Bitnet__Envelope *req, int timeout_ms,
                  Bitnet__Envelope **out, struct errbuf *e);

#endif

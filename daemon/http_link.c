#include "daemon/http_link.h"

#include <errno.h>
#include <string.h>
#include <zmq.h>

#include "model/clock.h"

int http_link_open(struct http_link *l, void *zmq_ctx, const char *ctl_endpoint,
                   struct errbuf *e)
{
    memset(l, 0, sizeof *l);
    l->sock = zmq_socket(zmq_ctx, ZMQ_DEALER);
    if (!l->sock)
        return err_set(e, "http: zmq socket: %s", zmq_strerror(errno));
    /* long enough for a Cancel sent just before closing to reach the daemon */
    int linger = 1000;
    zmq_setsockopt(l->sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(l->sock, ctl_endpoint) != 0) {
        int err = errno;
        http_link_close(l);
        return err_set(e, "http: connecting to %s: %s", ctl_endpoint, zmq_strerror(err));
    }
    wire_rx_init(&l->rx, WIRE_DEFAULT_MAX_BYTES);
    l->next_id = 1;
    return 0;
}

void http_link_close(struct http_link *l)
{
    if (l->sock)
        zmq_close(l->sock);
    l->sock = NULL;
}

uint64_t http_link_send(struct http_link *l, Bitnet__Envelope *env, struct errbuf *e)
{
    env->request_id = l->next_id++;
    if (wire_send(l->sock, env, 2000, e) != WIRE_OK) {
        err_prefix(e, "http: sending %s to bitnetd", wire_body_name(env->body_case));
        return 0;
    }
    return env->request_id;
}

int http_link_recv(struct http_link *l, uint64_t id, int timeout_ms, Bitnet__Envelope **out,
                   bool *alive, struct errbuf *e)
{
    double deadline = clock_ms() + timeout_ms;
    for (;;) {
        double left = deadline - clock_ms();
        if (left < 0)
            left = 0;
        Bitnet__Envelope *env = NULL;
        int rc = wire_recv(l->sock, &l->rx, &env, (int)left, e);
        if (rc == WIRE_AGAIN)
            return 1;
        if (rc != WIRE_OK)
            return err_prefix(e, "http: from bitnetd");
        if (alive)
            *alive = true;
        if (env->request_id == id) {
            *out = env;
            return 0;
        }
        wire_free(env);
        if (left <= 0)
            return 1;
    }
}

int http_link_ask(struct http_link *l, Bitnet__Envelope *req, int timeout_ms,
                  Bitnet__Envelope **out, struct errbuf *e)
{
    uint64_t id = http_link_send(l, req, e);
    if (!id)
        return -1;
    int rc = http_link_recv(l, id, timeout_ms, out, NULL, e);
    if (rc == 1)
        return err_set(e, "bitnetd did not answer %s within %d ms", wire_body_name(req->body_case),
                       timeout_ms);
    return rc;
}

#include "ctl/daemon_client.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "proto/endpoints.h"

int daemon_connect(struct daemon_client *c, const char *run_dir, struct errbuf *e)
{
    memset(c, 0, sizeof *c);
    char dir[400];
    if (!run_dir) {
        if (run_dir_default(dir, sizeof dir) < 0)
            return err_set(e, "run directory path too long");
        run_dir = dir;
    }
    if (run_dir_endpoint(c->endpoint, sizeof c->endpoint, run_dir, CTL_SOCKET_NAME) < 0)
        return err_set(e, "%s: path too long", run_dir);
    /* ZeroMQ connects lazily and would queue forever: check that the socket is there, in a
     * directory no one else could have planted, and that a daemon listens on it */
    const char *path = c->endpoint + strlen("ipc://");
    if (run_dir_probe_socket(path, e) < 0)
        return -1;
    c->ctx = zmq_ctx_new();
    c->sock = c->ctx ? zmq_socket(c->ctx, ZMQ_DEALER) : NULL;
    if (!c->sock) {
        daemon_disconnect(c);
        return err_set(e, "zmq: %s", zmq_strerror(errno));
    }
    int linger = 0;
    zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(c->sock, c->endpoint) != 0) {
        int err = errno;
        daemon_disconnect(c);
        return err_set(e, "%s: %s", path, zmq_strerror(err));
    }
    wire_rx_init(&c->rx, WIRE_DEFAULT_MAX_BYTES);
    c->next_id = 1;
    return 0;
}

void daemon_disconnect(struct daemon_client *c)
{
    if (c->sock)
        zmq_close(c->sock);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    c->sock = c->ctx = NULL;
}

uint64_t daemon_send(struct daemon_client *c, Bitnet__Envelope *env, struct errbuf *e)
{
    env->request_id = c->next_id++;
    if (wire_send(c->sock, env, 5000, e) != WIRE_OK) {
        err_prefix(e, "sending to %s", c->endpoint + strlen("ipc://"));
        return 0;
    }
    return env->request_id;
}

int daemon_recv(struct daemon_client *c, uint64_t id, int timeout_ms, Bitnet__Envelope **out,
                struct errbuf *e)
{
    for (;;) {
        Bitnet__Envelope *env = NULL;
        int rc = wire_recv(c->sock, &c->rx, &env, timeout_ms, e);
        if (rc == WIRE_AGAIN)
            return 1;
        if (rc != WIRE_OK)
            return -1;
        if (env->request_id != id) {
            wire_free(env);
            continue;
        }
        if (env->body_case == BITNET__ENVELOPE__BODY_ERROR) {
            err_set(e, "%s", env->error->message ? env->error->message : "error");
            wire_free(env);
            return -1;
        }
        *out = env;
        return 0;
    }
}

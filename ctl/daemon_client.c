#include "ctl/daemon_client.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "model/clock.h"
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
    char mon_ep[64];
    snprintf(mon_ep, sizeof mon_ep, "inproc://bitnetctl-monitor-%p", (void *)c);
    if (zmq_socket_monitor(c->sock, mon_ep, ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED) != 0 ||
        !(c->monitor = zmq_socket(c->ctx, ZMQ_PAIR)) || zmq_connect(c->monitor, mon_ep) != 0) {
        int err = errno;
        daemon_disconnect(c);
        return err_set(e, "zmq monitor: %s", zmq_strerror(err));
    }
    zmq_setsockopt(c->monitor, ZMQ_LINGER, &linger, sizeof linger);
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
    if (c->monitor)
        zmq_close(c->monitor);
    if (c->sock)
        zmq_close(c->sock);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    c->sock = c->ctx = c->monitor = NULL;
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

/* Reads the monitor's pending events; true once the daemon's end has closed. */
static bool daemon_gone(struct daemon_client *c)
{
    for (;;) {
        zmq_msg_t ev, addr;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, c->monitor, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&ev);
            return false;
        }
        /* an event is two frames: 16-bit event and 32-bit value, then the endpoint */
        uint16_t event = 0;
        if (zmq_msg_size(&ev) >= sizeof event)
            memcpy(&event, zmq_msg_data(&ev), sizeof event);
        zmq_msg_close(&ev);
        zmq_msg_init(&addr);
        zmq_msg_recv(&addr, c->monitor, ZMQ_DONTWAIT);
        zmq_msg_close(&addr);
        if (event == ZMQ_EVENT_CONNECTED)
            c->connected = true;
        else if (event == ZMQ_EVENT_DISCONNECTED && c->connected)
            return true;
    }
}

int daemon_recv(struct daemon_client *c, uint64_t id, int timeout_ms, Bitnet__Envelope **out,
                struct errbuf *e)
{
    /* in slices, so that a daemon that died is noticed while waiting for a long reply */
    const int slice_ms = 200;
    double deadline = clock_ms() + timeout_ms;
    for (;;) {
        if (daemon_gone(c))
            return err_set(e, "the daemon at %s closed the connection (it exited or was "
                              "killed)", c->endpoint + strlen("ipc://"));
        double left = timeout_ms < 0 ? slice_ms : deadline - clock_ms();
        if (left <= 0)
            return 1;
        Bitnet__Envelope *env = NULL;
        int rc = wire_recv(c->sock, &c->rx, &env, left < slice_ms ? (int)left : slice_ms, e);
        if (rc == WIRE_AGAIN)
            continue;
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

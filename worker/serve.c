/* The worker's sockets and its poll loop: the control DEALER (plus a monitor of its
 * connection), the data PULL, the signal fd, and the heartbeat and Hello timers. All
 * sending happens on this one thread, from the loop: a worker stuck in compute must
 * look dead to the daemon (docs/runtime.md, Heartbeats and faults). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <zmq.h>

#include "model/clock.h"
#include "worker/worker.h"

#define MONITOR_ENDPOINT "inproc://control-monitor"
/* Control messages handled per loop turn before timers get another look. */
#define CONTROL_BURST 64
/* Frames queued per data socket: a pipeline has one step in flight, so a short queue
 * bounds the memory a flood of large frames can pin. */
#define DATA_HWM 16
/* A handshake that keeps failing (wrong server key, daemon restarting) is retried every
 * reconnect interval; one log line per this long is enough to see it. */
#define HANDSHAKE_LOG_MS 5000
/* How long after a refusal by the next stage's ZAP handler we connect again: libzmq never
 * does after a refusal, but it may be passing (the next stage had not yet processed the
 * LoadShard that names our key). */
#define NEXT_RETRY_MS 1000

static int zerr(struct errbuf *e, const char *what, const char *endpoint)
{
    return err_set(e, "%s %s: %s", what, endpoint, zmq_strerror(zmq_errno()));
}

static int set_int(void *sock, int opt, int v)
{
    return zmq_setsockopt(sock, opt, &v, sizeof v);
}

/* Caps what a peer can make us buffer before wire_decode's own limit even sees it. */
static int set_max_msg(void *sock, size_t max_bytes)
{
    int64_t v = (int64_t)max_bytes * 2;
    return zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &v, sizeof v);
}

static bool is_tcp(const char *endpoint)
{
    return strncmp(endpoint, "tcp://", 6) == 0;
}

/* Our key pair as a CURVE client (the server's key given) or server (NULL). */
static int set_curve(void *sock, const struct worker *w, const char *server_key)
{
    if (server_key)
        return zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_key, CURVE_Z85_LEN) ||
               zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, w->curve_pub, CURVE_Z85_LEN) ||
               zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, w->curve_sec, CURVE_Z85_LEN);
    return set_int(sock, ZMQ_CURVE_SERVER, 1) ||
           zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, w->curve_sec, CURVE_Z85_LEN);
}

/* The key files, read before any socket exists so that a bad one stops us at once. */
static int load_keys(struct worker *w, struct errbuf *e)
{
    if (w->opts.key && curve_read_secret(w->opts.key, w->curve_pub, w->curve_sec, e) < 0)
        return err_prefix(e, "--key");
    if (w->opts.server_key && curve_read_public(w->opts.server_key, w->server_pub, e) < 0)
        return err_prefix(e, "--server-key");
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Opening */

static int open_control(struct worker *w, struct errbuf *e)
{
    w->control = zmq_socket(w->zctx, ZMQ_DEALER);
    if (!w->control)
        return zerr(e, "control socket for", w->opts.control);
    /* IMMEDIATE: while the daemon is away, sends fail at once instead of queueing stale
     * heartbeats for whoever binds the endpoint next */
    const char *route = w->opts.routing_id ? w->opts.routing_id : w->opts.id;
    if (zmq_setsockopt(w->control, ZMQ_ROUTING_ID, route, strlen(route)) ||
        set_int(w->control, ZMQ_IMMEDIATE, 1) || set_int(w->control, ZMQ_LINGER, 0) ||
        set_int(w->control, ZMQ_RECONNECT_IVL, 100) ||
        set_int(w->control, ZMQ_RECONNECT_IVL_MAX, 2000) || set_max_msg(w->control, w->opts.max_bytes))
        return zerr(e, "control socket options for", w->opts.control);
    if (is_tcp(w->opts.control) && set_curve(w->control, w, w->server_pub))
        return zerr(e, "CURVE for", w->opts.control);
    /* the monitor tells when a (new) daemon is there, so Hello goes out at once and again
     * after the daemon restarts; and, on tcp, when the daemon refuses our key, which
     * nothing else would tell us */
    if (zmq_socket_monitor(w->control, MONITOR_ENDPOINT,
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL))
        return zerr(e, "monitor of", w->opts.control);
    w->monitor = zmq_socket(w->zctx, ZMQ_PAIR);
    if (!w->monitor || set_int(w->monitor, ZMQ_LINGER, 0) ||
        zmq_connect(w->monitor, MONITOR_ENDPOINT))
        return zerr(e, "monitor of", w->opts.control);
    if (zmq_connect(w->control, w->opts.control))
        return zerr(e, "connect control to", w->opts.control);
    return 0;
}

/* What a peer must connect to: the bound address, with a wildcard host replaced by ours. */
static void announce_endpoint(struct worker *w)
{
    char last[sizeof w->data_endpoint];
    size_t len = sizeof last;
    if (zmq_getsockopt(w->data_in, ZMQ_LAST_ENDPOINT, last, &len) || len == 0) {
        snprintf(w->data_endpoint, sizeof w->data_endpoint, "%s", w->opts.data);
        return;
    }
    last[sizeof last - 1] = 0;
    static const char *wild[] = {"tcp://0.0.0.0:", "tcp://[::]:"};
    for (size_t i = 0; i < sizeof wild / sizeof wild[0]; i++) {
        size_t n = strlen(wild[i]);
        if (strncmp(last, wild[i], n) == 0) {
            snprintf(w->data_endpoint, sizeof w->data_endpoint, "tcp://%s:%s",
                     w->opts.advertise ? w->opts.advertise : w->hostname, last + n);
            return;
        }
    }
    /* ipc: the endpoint as given, so it matches what the daemon asked for byte for byte */
    snprintf(w->data_endpoint, sizeof w->data_endpoint, "%s",
             strncmp(last, "ipc://", 6) == 0 ? w->opts.data : last);
}

/* A refused sender is an attack or a deployment error (a previous stage with another key,
 * a coordinator that names no senders): the operator needs its address and key. Runs on
 * the ZAP thread; a flood of attempts is thinned by zap_noise, the count stays exact. */
static void on_data_zap(void *arg, const struct zap_decision *d)
{
    struct worker *w = arg;
    if (d->allowed || !log_limit_pass(&w->zap_noise))
        return;
    if (*d->key)
        worker_log(w->opts.id, "data: refused a CURVE connection from %s: key %s is not a "
                   "sender the daemon named in LoadShard (%s)", d->address, d->key, d->text);
    else
        worker_log(w->opts.id, "data: refused a %s connection from %s: %s",
                   *d->mechanism ? d->mechanism : "malformed", d->address, d->text);
}

static int open_data(struct worker *w, struct errbuf *e)
{
    w->data_in = zmq_socket(w->zctx, ZMQ_PULL);
    if (!w->data_in)
        return zerr(e, "data socket for", w->opts.data);
    if (set_int(w->data_in, ZMQ_LINGER, 0) || set_int(w->data_in, ZMQ_RCVHWM, DATA_HWM) ||
        set_max_msg(w->data_in, w->opts.max_bytes))
        return zerr(e, "data socket options for", w->opts.data);
    if (strncmp(w->opts.data, "ipc://", 6) == 0) {
        const char *path = w->opts.data + 6;
        if (strlen(path) >= sizeof w->ipc_path)
            return err_set(e, "data endpoint %s: path too long", w->opts.data);
        /* a file left by a crashed predecessor would make bind fail or, worse, succeed
         * on a socket nobody serves */
        if (unlink(path) != 0 && errno != ENOENT)
            return err_set(e, "removing stale %s: %s", path, strerror(errno));
        if (zmq_bind(w->data_in, w->opts.data))
            return zerr(e, "bind data", w->opts.data);
        snprintf(w->ipc_path, sizeof w->ipc_path, "%s", path);
    } else {
        /* hidden states cross the network here: encrypted, with our key as the server's,
         * and only from the senders LoadShard names. The handler is bound first (while
         * none is, libzmq admits every client that knows our key) and admits nobody until
         * the first LoadShard. */
        if (is_tcp(w->opts.data)) {
            if (!(w->data_zap = zap_start_pending(w->zctx, e)))
                return err_prefix(e, "data %s", w->opts.data);
            zap_set_observer(w->data_zap, on_data_zap, w);
            if (set_curve(w->data_in, w, NULL))
                return zerr(e, "CURVE for", w->opts.data);
        }
        if (zmq_bind(w->data_in, w->opts.data))
            return zerr(e, "bind data", w->opts.data);
    }
    announce_endpoint(w);
    return 0;
}

int worker_open(struct worker *w, struct errbuf *e)
{
    wire_rx_init(&w->control_rx, w->opts.max_bytes);
    wire_rx_init(&w->data_rx, w->opts.max_bytes);
    w->started_ms = clock_whole_ms();
    w->next_request_id = 1;
    if (gethostname(w->hostname, sizeof w->hostname) != 0)
        snprintf(w->hostname, sizeof w->hostname, "localhost");
    w->hostname[sizeof w->hostname - 1] = 0;
    if (load_keys(w, e) < 0 || shard_origin_capture(&w->origin, e) < 0)
        return -1;
    w->zctx = zmq_ctx_new();
    if (!w->zctx)
        return err_set(e, "zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
    if (open_data(w, e) < 0 || open_control(w, e) < 0)
        return -1;
    return busy_beat_start(&w->beat, w->control, w->opts.id, w->opts.heartbeat_ms, e);
}

/* Watches data_out for refusals by the next stage's ZAP handler (on_next_monitor). */
static int monitor_next(struct worker *w, const char *endpoint, const char *server_key,
                        struct errbuf *e)
{
    if (strlen(endpoint) >= sizeof w->next_endpoint)
        return err_set(e, "next stage %.64s...: endpoint too long", endpoint);
    snprintf(w->next_endpoint, sizeof w->next_endpoint, "%s", endpoint);
    snprintf(w->next_server_key, sizeof w->next_server_key, "%s", server_key);
    char mon[64];
    snprintf(mon, sizeof mon, "inproc://next-monitor-%u", w->next_monitors++);
    if (zmq_socket_monitor(w->data_out, mon, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) ||
        !(w->next_monitor = zmq_socket(w->zctx, ZMQ_PAIR)) ||
        set_int(w->next_monitor, ZMQ_LINGER, 0) || zmq_connect(w->next_monitor, mon))
        return zerr(e, "monitor of next stage", endpoint);
    return 0;
}

int worker_connect_next(struct worker *w, const char *endpoint, const char *server_key,
                        struct errbuf *e)
{
    worker_disconnect_next(w);
    w->data_out = zmq_socket(w->zctx, ZMQ_PUSH);
    if (!w->data_out)
        return zerr(e, "socket for next stage", endpoint);
    if (set_int(w->data_out, ZMQ_LINGER, 0) || set_int(w->data_out, ZMQ_SNDHWM, DATA_HWM))
        return zerr(e, "options of next stage", endpoint);
    if (server_key && *server_key) {
        /* we send as our key pair, which the next stage (or the daemon's results socket)
         * admits because the daemon names it: a remote worker's own, or for a local one
         * the daemon's, which bitnetd starts it with */
        if (!*w->curve_sec)
            return err_set(e, "next stage %s: CURVE needs a key pair of ours (--key FILE): "
                           "the next stage admits only the senders the daemon names",
                           endpoint);
        if (set_curve(w->data_out, w, server_key))
            return zerr(e, "CURVE for next stage", endpoint);
        if (monitor_next(w, endpoint, server_key, e) < 0)
            return -1;
    } else if (is_tcp(endpoint)) {
        /* never hidden states in clear text over a network */
        return err_set(e, "next stage %s: tcp without a CURVE server key", endpoint);
    }
    if (zmq_connect(w->data_out, endpoint))
        return zerr(e, "connect to next stage", endpoint);
    return 0;
}

void worker_disconnect_next(struct worker *w)
{
    if (w->data_out && w->next_monitor)
        zmq_socket_monitor(w->data_out, NULL, 0);
    if (w->next_monitor)
        zmq_close(w->next_monitor);
    if (w->data_out)
        zmq_close(w->data_out);
    w->data_out = w->next_monitor = NULL;
    w->next_retry_ms = 0;
}

void worker_close(struct worker *w)
{
    busy_beat_stop(&w->beat);
    shard_unload(&w->shard, &w->origin, w->opts.id);
    worker_disconnect_next(w);
    if (w->control)
        zmq_socket_monitor(w->control, NULL, 0);
    if (w->monitor)
        zmq_close(w->monitor);
    if (w->control)
        zmq_close(w->control);
    if (w->data_in)
        zmq_close(w->data_in);
    /* before zmq_ctx_term, which would wait for its socket */
    zap_close(w->data_zap);
    w->data_zap = NULL;
    if (w->zctx)
        zmq_ctx_term(w->zctx);
    /* libzmq leaves the file behind; the next worker of this id would find it stale */
    if (w->ipc_path[0])
        unlink(w->ipc_path);
    shard_origin_free(&w->origin);
    memset(w->curve_sec, 0, sizeof w->curve_sec);
    w->control = w->monitor = w->data_in = w->zctx = NULL;
    w->ipc_path[0] = 0;
}

/* ---------------------------------------------------------------------------------------
 * Loop */

/* The next event of a socket monitor, without waiting; -1 when there is none. */
static int read_event(void *monitor, uint16_t *event, uint32_t *value)
{
    zmq_msg_t ev, addr;
    zmq_msg_init(&ev);
    if (zmq_msg_recv(&ev, monitor, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&ev);
        return -1;
    }
    *event = 0;
    *value = 0;
    if (zmq_msg_size(&ev) >= 2)
        memcpy(event, zmq_msg_data(&ev), 2);
    if (zmq_msg_size(&ev) >= 6)
        memcpy(value, (const char *)zmq_msg_data(&ev) + 2, 4);
    bool more = zmq_msg_more(&ev);
    zmq_msg_close(&ev);
    if (more) {
        zmq_msg_init(&addr);
        zmq_msg_recv(&addr, monitor, ZMQ_DONTWAIT);
        zmq_msg_close(&addr);
    }
    return 0;
}

static void on_monitor(struct worker *w)
{
    uint16_t event;
    uint32_t value;
    while (read_event(w->monitor, &event, &value) == 0) {
        /* the first Hello may have raced ahead of this event, over the connection it
         * announces, and be accepted or on its way: only a connection that has carried
         * none needs one (a second made the daemon refuse the worker, which then exited) */
        if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            worker_log(w->opts.id, "connected to %s", w->opts.control);
            if (!w->hello_accepted && !w->hello_sent)
                w->next_hello_ms = clock_whole_ms();
        } else if (event == ZMQ_EVENT_DISCONNECTED) {
            worker_log(w->opts.id, "lost %s; reconnecting", w->opts.control);
            w->hello_accepted = false;
            w->hello_sent = false;
            /* the next handshake sends it at once; the timer is the fallback */
            w->next_hello_ms = clock_whole_ms() + (uint64_t)w->opts.hello_retry_ms;
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH && value == 400) {
            /* the daemon's ZAP handler said no: only an operator adding our key can change
             * that, so retrying would just hide the problem */
            worker_log(w->opts.id, "refused by the daemon at %s: our CURVE key %s is not on "
                       "its allow-list (--allow-keys); add this worker's .pub there and start "
                       "it again", w->opts.control, w->curve_pub);
            w->stop = true;
            w->exit_code = 1;
            return;
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ||
                   event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
                   event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
            uint64_t now = clock_whole_ms();
            if (now >= w->next_handshake_log_ms) {
                w->next_handshake_log_ms = now + HANDSHAKE_LOG_MS;
                char how[64];
                if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
                    snprintf(how, sizeof how, "authentication status %u", value);
                else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
                    snprintf(how, sizeof how, "protocol error 0x%x", value);
                else
                    snprintf(how, sizeof how, "%s", value ? strerror((int)value) : "closed");
                worker_log(w->opts.id, "handshake with %s failed (%s)%s; retrying",
                           w->opts.control, how,
                           is_tcp(w->opts.control) ? ": is --server-key the daemon's public key?"
                                                   : "");
            }
        }
    }
}

/* A socket failure (not a bad message) ends the worker: nothing more can arrive. */
static void fatal(struct worker *w, const char *what, const struct errbuf *e)
{
    worker_log(w->opts.id, "%s: %s", what, e->msg);
    w->stop = true;
    w->exit_code = 1;
}

/* The next stage's ZAP handler refused our key. Steps meanwhile fail on their send
 * timeout, as they would with the next stage gone. */
static void on_next_monitor(struct worker *w)
{
    uint16_t event;
    uint32_t value;
    while (w->next_monitor && read_event(w->next_monitor, &event, &value) == 0) {
        if (event != ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
            continue;
        if (log_limit_pass(&w->next_noise))
            worker_log(w->opts.id, "next stage %s refused our CURVE key %s (status %u): it "
                       "does not list us as its sender (yet); connecting again every %d ms",
                       w->next_endpoint, w->curve_pub, value, NEXT_RETRY_MS);
        if (!w->next_retry_ms)
            w->next_retry_ms = clock_whole_ms() + NEXT_RETRY_MS;
    }
}

/* A new socket, not zmq_disconnect + zmq_connect: libzmq has ended the refused
 * connection's session itself, and a fresh socket starts clean. */
static void reconnect_next(struct worker *w)
{
    char ep[sizeof w->next_endpoint], key[sizeof w->next_server_key];
    memcpy(ep, w->next_endpoint, sizeof ep);
    memcpy(key, w->next_server_key, sizeof key);
    struct errbuf e;
    if (worker_connect_next(w, ep, key, &e) < 0) {
        worker_disconnect_next(w);
        fatal(w, "connecting to the next stage again", &e);
    }
}

static void on_signal(struct worker *w)
{
    struct signalfd_siginfo si;
    if (read(w->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        worker_log(w->opts.id, "stopping on %s", si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
        w->stop = true;
        w->exit_code = 0;
    }
}

static void on_control(struct worker *w)
{
    for (int i = 0; i < CONTROL_BURST && !w->stop; i++) {
        Bitnet__Envelope *env = NULL;
        struct errbuf e;
        int rc = wire_recv(w->control, &w->control_rx, &env, 0, &e);
        if (rc == WIRE_AGAIN)
            return;
        if (rc == WIRE_OK) {
            control_handle(w, env);
            wire_free(env);
        } else if (wire_rc_is_reject(rc)) {
            if (log_limit_pass(&w->control_noise))
                worker_log(w->opts.id, "control: rejected a message: %s", e.msg);
            struct errbuf se;
            wire_send_error(w->control, NULL, 0, wire_rc_error_code(rc), e.msg, 0, &se);
        } else {
            fatal(w, "control socket", &e);
        }
    }
}

/* One step per turn, so heartbeats and control messages get their turn in between. */
static void on_data(struct worker *w)
{
    Bitnet__Envelope *env = NULL;
    struct errbuf e;
    int rc = wire_recv(w->data_in, &w->data_rx, &env, 0, &e);
    uint64_t t_recv = clock_us();
    if (rc == WIRE_AGAIN)
        return;
    if (rc == WIRE_OK && env->body_case == BITNET__ENVELOPE__BODY_FORWARD) {
        stage_forward(w, env->forward, t_recv);
        wire_free(env);
        worker_heartbeat(w);
        w->next_heartbeat_ms = clock_whole_ms() + (uint64_t)w->opts.heartbeat_ms;
        return;
    }
    if (rc == WIRE_OK) {
        /* well-formed, but nothing but Forward belongs on the data socket (it is the one
         * other hosts may reach): as good as malformed here */
        w->data_rx.counts.accepted--;
        w->data_rx.counts.malformed++;
        if (log_limit_pass(&w->data_noise))
            worker_log(w->opts.id, "data: rejected a %s message (only forward belongs here)",
                       wire_body_name(env->body_case));
        wire_free(env);
    } else if (wire_rc_is_reject(rc)) {
        if (log_limit_pass(&w->data_noise))
            worker_log(w->opts.id, "data: rejected a message: %s", e.msg);
    } else {
        fatal(w, "data socket", &e);
    }
}

static void on_timers(struct worker *w)
{
    uint64_t now = clock_whole_ms();
    if (w->next_retry_ms && now >= w->next_retry_ms)
        reconnect_next(w);
    if (w->next_hello_ms && now >= w->next_hello_ms) {
        control_send_hello(w);
        w->next_hello_ms = now + (uint64_t)w->opts.hello_retry_ms;
    }
    if (now >= w->next_heartbeat_ms) {
        /* a tensor-parallel rank that died between steps: the stage cannot compute, so it
         * ends now rather than at its next step, and bitnetd restarts it */
        struct errbuf e;
        if (w->shard.tp && !tp_group_alive(w->shard.tp, &e)) {
            worker_log(w->opts.id, "%s; ending this stage so that bitnetd restarts it", e.msg);
            exit(TP_EXIT_RANK_LOST);
        }
        worker_heartbeat(w);
        /* after a long stall, resume the rhythm rather than sending a burst */
        w->next_heartbeat_ms += (uint64_t)w->opts.heartbeat_ms;
        if (w->next_heartbeat_ms <= now)
            w->next_heartbeat_ms = now + (uint64_t)w->opts.heartbeat_ms;
    }
}

static long poll_timeout(const struct worker *w)
{
    uint64_t now = clock_whole_ms(), next = w->next_heartbeat_ms;
    if (w->next_hello_ms && w->next_hello_ms < next)
        next = w->next_hello_ms;
    if (w->next_retry_ms && w->next_retry_ms < next)
        next = w->next_retry_ms;
    return next > now ? (long)(next - now) : 0;
}

int worker_run(struct worker *w)
{
    worker_log(w->opts.id, "pid %d, data %s, control %s", (int)getpid(), w->data_endpoint,
               w->opts.control);
    if (*w->curve_pub && (is_tcp(w->opts.control) || is_tcp(w->opts.data)))
        worker_log(w->opts.id, "CURVE key %s (its .pub goes in the daemon's --allow-keys)",
                   w->curve_pub);
    else if (*w->curve_pub)
        worker_log(w->opts.id, "CURVE key %s, for a tcp next stage", w->curve_pub);
    w->next_heartbeat_ms = clock_whole_ms() + (uint64_t)w->opts.heartbeat_ms;
    /* also covered by the monitor; this is for a handshake that happened before it was
     * listening */
    w->next_hello_ms = clock_whole_ms();
    while (!w->stop) {
        on_timers(w);
        zmq_pollitem_t items[] = {
            {NULL, w->sigfd, ZMQ_POLLIN, 0},
            {w->monitor, 0, ZMQ_POLLIN, 0},
            {w->control, 0, ZMQ_POLLIN, 0},
            {w->data_in, 0, ZMQ_POLLIN, 0},
            {w->next_monitor, 0, ZMQ_POLLIN, 0},
        };
        /* the last one only while there is a CURVE data_out (else its fd 0 would count) */
        int n = zmq_poll(items, w->next_monitor ? 5 : 4, poll_timeout(w));
        if (n < 0) {
            if (zmq_errno() == EINTR)
                continue;
            struct errbuf e;
            err_set(&e, "%s", zmq_strerror(zmq_errno()));
            fatal(w, "poll", &e);
            break;
        }
        if (items[0].revents & ZMQ_POLLIN)
            on_signal(w);
        if (!w->stop && (items[1].revents & ZMQ_POLLIN))
            on_monitor(w);
        if (!w->stop && (items[2].revents & ZMQ_POLLIN))
            on_control(w);
        if (!w->stop && (items[3].revents & ZMQ_POLLIN))
            on_data(w);
        if (!w->stop && w->next_monitor && (items[4].revents & ZMQ_POLLIN))
            on_next_monitor(w);
    }
    return w->exit_code;
}

/* The ZAP allow-list given in memory (zap_start_pending, zap_set_keys), as a remote
 * worker's data socket gets it from LoadShard: held until the first list, then listed keys
 * only, an empty list refusing everyone, a bad list leaving the old one in place.
 *
 * With arguments it is the stranger of tests/t_remote.sh:
 *
 *   test_zap push ENDPOINT SERVER_KEY N_EMBD
 *
 * connects to a worker's tcp data socket as a CURVE client with a fresh key pair (knowing
 * the worker's public key, as anyone can), pushes one well-formed Forward (one row of
 * N_EMBD f32 values, sequence 0, position 0) and reports on stdout "key KEY", then
 * "refused STATUS" (exit 0), "admitted" (exit 3: the Forward went out) or "undecided"
 * (exit 1: no answer within 5 s). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "proto/wire.h"
#include "proto/zap.h"
#include "tests/check.h"

enum outcome { REFUSED, ADMITTED, UNDECIDED };

/* A PUSH client with its own key pair and a monitor of its handshake. */
struct pusher {
    char pub[41], sec[41];
    void *sock, *mon;
};

/* With p->pub and p->sec empty, a fresh key pair is made for it. */
static int pusher_open(struct pusher *p, void *ctx, const char *ep, const char *server_key,
                       int linger_ms)
{
    static unsigned n_monitors;
    char mon_ep[64];
    snprintf(mon_ep, sizeof mon_ep, "inproc://test-zap-monitor-%u", n_monitors++);
    if (!p->pub[0])
        zmq_curve_keypair(p->pub, p->sec);
    p->sock = zmq_socket(ctx, ZMQ_PUSH);
    p->mon = zmq_socket(ctx, ZMQ_PAIR);
    int zero = 0;
    if (!p->sock || !p->mon ||
        zmq_setsockopt(p->sock, ZMQ_LINGER, &linger_ms, sizeof linger_ms) ||
        zmq_setsockopt(p->mon, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_setsockopt(p->sock, ZMQ_CURVE_SERVERKEY, server_key, 40) ||
        zmq_setsockopt(p->sock, ZMQ_CURVE_PUBLICKEY, p->pub, 40) ||
        zmq_setsockopt(p->sock, ZMQ_CURVE_SECRETKEY, p->sec, 40) ||
        zmq_socket_monitor(p->sock, mon_ep,
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) ||
        zmq_connect(p->mon, mon_ep) || zmq_connect(p->sock, ep)) {
        fprintf(stderr, "test_zap: client for %s: %s\n", ep, zmq_strerror(zmq_errno()));
        return -1;
    }
    return 0;
}

/* How the handshake ended, waiting at most timeout_ms; *status is the ZAP status of a
 * refusal. */
static enum outcome pusher_wait(struct pusher *p, int timeout_ms, unsigned *status)
{
    zmq_setsockopt(p->mon, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    uint8_t ev[6];
    if (zmq_recv(p->mon, ev, sizeof ev, 0) != (int)sizeof ev)
        return UNDECIDED;
    char addr[256];
    zmq_recv(p->mon, addr, sizeof addr, 0); /* the endpoint: known already */
    uint16_t event;
    uint32_t value;
    memcpy(&event, ev, 2);
    memcpy(&value, ev + 2, 4);
    *status = value;
    return event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED ? ADMITTED : REFUSED;
}

static void pusher_close(struct pusher *p)
{
    if (p->sock)
        zmq_socket_monitor(p->sock, NULL, 0);
    if (p->mon)
        zmq_close(p->mon);
    if (p->sock)
        zmq_close(p->sock);
    p->sock = p->mon = NULL;
}

/* One Forward of a middle stage: one row of hidden states, as a previous stage sends. */
static int forward_frame(uint32_t n_embd, uint8_t **out, size_t *len)
{
    float *row = calloc(n_embd, sizeof *row);
    if (!row)
        return -1;
    for (uint32_t i = 0; i < n_embd; i++)
        row[i] = (float)(i % 7) - 3.0f; /* not all zero, so a stage would compute on it */
    Bitnet__Forward fw = BITNET__FORWARD__INIT;
    uint32_t seq = 0, pos = 0;
    protobuf_c_boolean want = 1;
    fw.step_id = 1;
    fw.n_seq_ids = fw.n_positions = fw.n_want_logits = 1;
    fw.seq_ids = &seq;
    fw.positions = &pos;
    fw.want_logits = &want;
    struct errbuf e;
    int rc = wire_forward_set_hidden(&fw, row, 1, n_embd, BITNET__ELEM_TYPE__ELEM_TYPE_F32, &e);
    Bitnet__Envelope env;
    wire_envelope_init(&env, 0);
    env.body_case = BITNET__ENVELOPE__BODY_FORWARD;
    env.forward = &fw;
    if (rc == 0)
        rc = wire_encode(&env, out, len, &e);
    if (rc)
        fprintf(stderr, "test_zap: Forward: %s\n", e.msg);
    free(fw.hidden.data);
    free(row);
    return rc ? -1 : 0;
}

static int push_as_stranger(const char *ep, const char *server_key, const char *n_embd_arg)
{
    char *end;
    unsigned long n_embd = strtoul(n_embd_arg, &end, 10);
    uint8_t *frame = NULL;
    size_t len = 0;
    if (*end || n_embd == 0 || n_embd > 65536 || strlen(server_key) != 40 ||
        forward_frame((uint32_t)n_embd, &frame, &len) < 0) {
        fprintf(stderr, "test_zap push: want ENDPOINT, a Z85 server key and N_EMBD\n");
        return 2;
    }
    void *ctx = zmq_ctx_new();
    struct pusher p = {0};
    int rc = 1;
    /* linger: an admitted Forward must really leave before we exit */
    if (pusher_open(&p, ctx, ep, server_key, 2000) == 0) {
        printf("key %s\n", p.pub);
        /* queued now, sent once (if ever) the handshake succeeds */
        zmq_send(p.sock, frame, len, ZMQ_DONTWAIT);
        unsigned status = 0;
        enum outcome o = pusher_wait(&p, 5000, &status);
        if (o == REFUSED)
            printf("refused %u\n", status);
        else
            printf("%s\n", o == ADMITTED ? "admitted" : "undecided");
        rc = o == REFUSED ? 0 : o == ADMITTED ? 3 : 1;
    }
    fflush(stdout);
    pusher_close(&p);
    zmq_ctx_term(ctx);
    free(frame);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * Self-test */

/* What the observer saw, on the handler's thread; it runs after the answer has gone out,
 * so the test waits for it. */
struct seen {
    pthread_mutex_t lock;
    unsigned refusals;
    char last_key[41];
};

static void observe(void *arg, const struct zap_decision *d)
{
    struct seen *s = arg;
    pthread_mutex_lock(&s->lock);
    if (!d->allowed) {
        s->refusals++;
        snprintf(s->last_key, sizeof s->last_key, "%s", d->key);
    }
    pthread_mutex_unlock(&s->lock);
}

static int seen_refusal(struct seen *s, unsigned n, const char *key)
{
    for (int i = 0; i < 100; i++) {
        pthread_mutex_lock(&s->lock);
        int ok = s->refusals == n && !strcmp(s->last_key, key);
        pthread_mutex_unlock(&s->lock);
        if (ok)
            return 1;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* Whether the server got exactly frame within timeout_ms. */
static int received(void *server, const uint8_t *frame, size_t len, int timeout_ms)
{
    zmq_setsockopt(server, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    uint8_t buf[512];
    int n = zmq_recv(server, buf, sizeof buf, 0);
    return n == (int)len && memcmp(buf, frame, len) == 0;
}

static void self_test(void)
{
    struct errbuf e = {""};
    void *ctx = zmq_ctx_new();
    CHECK(zap_open(ctx, NULL, &e) == NULL && strstr(e.msg, "no key file"),
          "a poll-driven handler without a list: %s", e.msg);
    struct zap *z = zap_start_pending(ctx, &e);
    CHECK(z != NULL, "zap_start_pending: %s", e.msg);
    if (!z) {
        zmq_ctx_term(ctx);
        return;
    }
    struct seen seen = {.refusals = 0};
    pthread_mutex_init(&seen.lock, NULL);
    zap_set_observer(z, observe, &seen);
    char spub[41], ssec[41], ep[128];
    zmq_curve_keypair(spub, ssec);
    void *server = zmq_socket(ctx, ZMQ_PULL);
    int one = 1, zero = 0;
    size_t ep_len = sizeof ep;
    zmq_setsockopt(server, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(server, ZMQ_CURVE_SERVER, &one, sizeof one);
    zmq_setsockopt(server, ZMQ_CURVE_SECRETKEY, ssec, 40);
    CHECK(zmq_bind(server, "tcp://127.0.0.1:*") == 0, "bind: %s", zmq_strerror(zmq_errno()));
    zmq_getsockopt(server, ZMQ_LAST_ENDPOINT, ep, &ep_len);
    uint8_t *frame = NULL;
    size_t len = 0;
    CHECK(forward_frame(8, &frame, &len) == 0 && len < 512, "Forward frame (%zu bytes)", len);
    unsigned status = 0;

    /* no list yet: the sender's handshake waits, and goes through once its key is listed */
    struct pusher a = {0}, b = {0};
    CHECK(pusher_open(&a, ctx, ep, spub, 0) == 0, "client a");
    zmq_send(a.sock, frame, len, ZMQ_DONTWAIT);
    CHECK(pusher_wait(&a, 300, &status) == UNDECIDED, "held: no decision before a list");
    CHECK(zap_n_keys(z) == 0, "no keys while held");
    const char *list[] = {a.pub};
    CHECK(zap_set_keys(z, list, 1, &e) == 0, "set a: %s", e.msg);
    CHECK(pusher_wait(&a, 2000, &status) == ADMITTED, "a admitted once listed");
    CHECK(received(server, frame, len, 2000), "a's Forward arrived");

    /* listed keys only */
    CHECK(pusher_open(&b, ctx, ep, spub, 0) == 0, "client b");
    zmq_send(b.sock, frame, len, ZMQ_DONTWAIT);
    CHECK(pusher_wait(&b, 2000, &status) == REFUSED && status == 400, "b refused (%u)", status);
    CHECK(!received(server, frame, len, 200), "nothing from b");
    CHECK(seen_refusal(&seen, 1, b.pub), "observer saw b's refusal");
    /* libzmq never tries again after a refusal, even once the key is listed: why a sender
     * must not be refused before its key can have arrived (zap_start_pending), and why a
     * refused worker makes a new connection itself (worker/serve.c, NEXT_RETRY_MS) */
    const char *both[] = {a.pub, b.pub};
    CHECK(zap_set_keys(z, both, 2, &e) == 0, "set a and b: %s", e.msg);
    CHECK(pusher_wait(&b, 500, &status) == UNDECIDED, "no new handshake of b");
    CHECK(zap_set_keys(z, list, 1, &e) == 0, "set a: %s", e.msg);
    pusher_close(&b);

    /* a bad list changes nothing */
    const char *bad[] = {a.pub, "not-a-key"};
    CHECK(zap_set_keys(z, bad, 2, &e) == -1 && strstr(e.msg, "key 2 'not-a-key': not a Z85"),
          "bad list: %s", e.msg);
    CHECK(zap_n_keys(z) == 1, "old list kept (%zu keys)", zap_n_keys(z));

    /* the empty list refuses everyone, even a key admitted before; connections already
     * admitted stay */
    CHECK(zap_set_keys(z, NULL, 0, &e) == 0 && zap_n_keys(z) == 0, "empty list: %s", e.msg);
    struct pusher a2 = {0};
    memcpy(a2.pub, a.pub, sizeof a.pub);
    memcpy(a2.sec, a.sec, sizeof a.sec);
    CHECK(pusher_open(&a2, ctx, ep, spub, 0) == 0, "client a2, with a's keys");
    zmq_send(a2.sock, frame, len, ZMQ_DONTWAIT);
    CHECK(pusher_wait(&a2, 2000, &status) == REFUSED, "a's key refused by the empty list");
    pusher_close(&a2);
    zmq_send(a.sock, frame, len, ZMQ_DONTWAIT);
    CHECK(received(server, frame, len, 2000), "a's old connection still delivers");

    struct zap_stats st;
    zap_get_stats(z, &st);
    CHECK(st.allowed == 1 && st.refused == 2 && !st.failed, "stats %llu allowed, %llu refused",
          (unsigned long long)st.allowed, (unsigned long long)st.refused);
    pusher_close(&a);
    zmq_close(server);
    zap_close(z);
    zmq_ctx_term(ctx);
    pthread_mutex_destroy(&seen.lock);
    free(frame);
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "push"))
        return push_as_stranger(argv[2], argv[3], argv[4]);
    if (argc != 1) {
        fprintf(stderr, "usage: test_zap [push ENDPOINT SERVER_KEY N_EMBD]\n");
        return 2;
    }
    self_test();
    return check_done("test_zap");
}

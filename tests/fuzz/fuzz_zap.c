/* The ZAP handler (proto/zap.c) answering arbitrary requests, as libzmq would send them
 * on inproc://zeromq.zap.01: each record of the input is one frame. The reply must be the
 * six frames of RFC 27 with the request's id, and it may say 200 only for the NULL
 * mechanism or for CURVE with the one key of the allow-list, whose Z85 is then the
 * User-Id. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "proto/keys.h"
#include "proto/zap.h"
#include "tests/fuzz/fuzz_common.h"

/* The server public key of the CURVE example in the ZeroMQ reference (zmq_curve(7)). */
static const char LISTED[] = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
static uint8_t listed[32];
static void *ctx, *client;
static struct zap *zap;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    struct errbuf e;
    char list[64];
    snprintf(list, sizeof list, "# fuzz\n%s fuzz\n", LISTED);
    ctx = zmq_ctx_new();
    if (!ctx || !curve_z85_decode(LISTED, CURVE_Z85_LEN, listed))
        fuzz_die("setup failed");
    zap = zap_open(ctx, fuzz_put_file(0, (const uint8_t *)list, strlen(list)), &e);
    if (!zap)
        fuzz_die("%s", e.msg);
    client = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0, wait = 10000;
    zmq_setsockopt(client, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(client, ZMQ_RCVTIMEO, &wait, sizeof wait);
    if (zmq_connect(client, "inproc://zeromq.zap.01") != 0)
        fuzz_die("connect: %s", zmq_strerror(zmq_errno()));
    return 0;
}

#define MAX_FRAMES 12

static void fail(const char *what)
{
    fprintf(stderr, "zap property violated: %s\n", what);
    abort();
}

static bool frame_is(const zmq_msg_t *m, const void *p, size_t n)
{
    return zmq_msg_size((zmq_msg_t *)m) == n && memcmp(zmq_msg_data((zmq_msg_t *)m), p, n) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_reader r = {data, size};
    const uint8_t *f[MAX_FRAMES];
    size_t len[MAX_FRAMES];
    int nf = 0;
    uint8_t ch;
    while (nf < MAX_FRAMES && fuzz_next_record(&r, &ch, &f[nf], &len[nf]) == 0)
        nf++;
    if (nf == 0)
        return 0;
    /* the REP socket's envelope delimiter, then the request */
    zmq_send(client, "", 0, ZMQ_SNDMORE);
    for (int i = 0; i < nf; i++)
        zmq_send(client, f[i], len[i], i + 1 < nf ? ZMQ_SNDMORE : 0);
    /* EINTR: libFuzzer's -timeout alarm */
    zmq_pollitem_t it = {zap_socket(zap), 0, ZMQ_POLLIN, 0};
    int ready;
    while ((ready = zmq_poll(&it, 1, 10000)) < 0 && zmq_errno() == EINTR)
        ;
    if (ready != 1)
        fail("request never arrived");
    struct errbuf e;
    if (zap_serve(zap, &e) < 0)
        fail(e.msg);

    zmq_msg_t rep[8];
    int n = 0, more = 1;
    while (more && n < 8) {
        zmq_msg_init(&rep[n]);
        int got;
        while ((got = zmq_msg_recv(&rep[n], client, 0)) < 0 && zmq_errno() == EINTR)
            ;
        if (got < 0)
            fail("no reply");
        more = zmq_msg_more(&rep[n]);
        n++;
    }
    if (more || n != 7 || zmq_msg_size(&rep[0]) != 0 || !frame_is(&rep[1], "1.0", 3))
        fail("reply is not a delimiter and six frames");
    if (nf >= 2 && !frame_is(&rep[2], f[1], len[1]))
        fail("reply does not carry the request id");
    bool ok = frame_is(&rep[3], "200", 3);
    if (!ok && !frame_is(&rep[3], "400", 3) && !frame_is(&rep[3], "500", 3))
        fail("status is not 200, 400 or 500");
    bool curve = nf == 7 && len[5] == 5 &&
                 memcmp(f[5], "CURVE", 5) == 0;
    bool null = nf >= 6 && len[5] == 4 && memcmp(f[5], "NULL", 4) == 0;
    bool listed_key = curve && len[6] == 32 && memcmp(f[6], listed, 32) == 0;
    if (ok && !null && !listed_key)
        fail("admitted what is neither NULL nor the listed key");
    if (ok && listed_key && !frame_is(&rep[5], LISTED, CURVE_Z85_LEN))
        fail("User-Id is not the listed key");
    for (int i = 0; i < n; i++)
        zmq_msg_close(&rep[i]);
    return 0;
}

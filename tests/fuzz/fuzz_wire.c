/* wire_decode on arbitrary frames: the size, version and budget checks, protobuf-c's
 * unpacking and wire_validate. What it accepts must hold its promises: validating again
 * passes, the envelope encodes, the encoding decodes to an envelope that encodes to the
 * same bytes, and a Forward's hidden rows unpack into n_rows x n_embd floats. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/wire.h"
#include "tests/fuzz/fuzz_common.h"

static void fail(const char *what, const struct errbuf *e)
{
    fprintf(stderr, "wire property violated: %s: %s\n", what, e ? e->msg : "");
    abort();
}

static void check_forward(const Bitnet__Forward *fw)
{
    struct errbuf e;
    if (fw->n_token_ids)
        return;
    size_t n = (size_t)fw->n_rows * fw->n_embd;
    /* validation bounded the bytes by the frame, so this stays small */
    float *rows = malloc((n ? n : 1) * sizeof *rows);
    if (!rows)
        return;
    if (wire_forward_get_hidden(fw, rows, n, &e) < 0)
        fail("accepted Forward does not unpack", &e);
    free(rows);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct wire_rx rx;
    /* a small limit, so that the size check is reachable too */
    wire_rx_init(&rx, 1 << 16);
    Bitnet__Envelope *env;
    struct errbuf e = {{0}};
    int rc = wire_decode(data, size, &rx, &env, &e);
    uint64_t counted = rx.counts.accepted + rx.counts.malformed + rx.counts.oversized +
                       rx.counts.wrong_version;
    if (counted != 1)
        fail("not counted once", NULL);
    (void)wire_rc_error_code(rc);
    if (rc != WIRE_OK) {
        if (env || !wire_rc_is_reject(rc))
            fail("refusal without a reject code", &e);
        return 0;
    }
    (void)wire_body_name(env->body_case);
    if (wire_validate(env, &e) < 0)
        fail("accepted, then invalid", &e);
    if (env->body_case == BITNET__ENVELOPE__BODY_FORWARD)
        check_forward(env->forward);

    uint8_t *b1, *b2;
    size_t n1, n2;
    if (wire_encode(env, &b1, &n1, &e) < 0)
        fail("accepted envelope does not encode", &e);
    Bitnet__Envelope *again;
    if (wire_decode(b1, n1, NULL, &again, &e) != WIRE_OK)
        fail("own encoding refused", &e);
    if (wire_encode(again, &b2, &n2, &e) < 0)
        fail("decoded encoding does not encode", &e);
    if (n1 != n2 || memcmp(b1, b2, n1) != 0)
        fail("encoding not stable", NULL);
    free(b1);
    free(b2);
    wire_free(again);
    wire_free(env);
    return 0;
}

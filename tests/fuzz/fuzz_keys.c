/* The key files: the first byte picks the reader, the rest is the file.
 *   0: curve_read_public (a .pub)       1: curve_read_secret (a .key, mode 0600)
 *   2: an allow-list file (zap_reload)  3: a directory holding it as a.pub (zap_reload)
 *   4: every line an in-memory key (zap_set_keys, as LoadShard's data_sender_keys)
 * One handler serves every input: libzmq frees an inproc endpoint only some time after its
 * socket is closed, so a handler cannot be bound again at once (bitnetd never does). The
 * file readers are zap_open's own (load_keys).
 * A key that comes out must be 40 valid Z85 characters; a secret's public key must be
 * the one derived from it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "proto/keys.h"
#include "proto/zap.h"
#include "tests/fuzz/fuzz_common.h"

static void *ctx;
static struct zap *zap;
static char dir[128], dir_file[160];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    ctx = zmq_ctx_new();
    snprintf(dir, sizeof dir, "%s/allow", fuzz_tmpdir());
    snprintf(dir_file, sizeof dir_file, "%s/a.pub", dir);
    struct errbuf e;
    if (!ctx || mkdir(dir, 0700) != 0)
        fuzz_die("setup failed");
    zap = zap_open(ctx, fuzz_put_file(1, (const uint8_t *)"", 0), &e);
    if (!zap)
        fuzz_die("%s", e.msg);
    return 0;
}

static void check_key(const char *k)
{
    if (strlen(k) != CURVE_Z85_LEN || !curve_z85_valid(k, CURVE_Z85_LEN)) {
        fprintf(stderr, "keys: a reader returned '%s', not a Z85 key\n", k);
        abort();
    }
}

static void allow_list(const char *path)
{
    struct errbuf e;
    size_t before = zap_n_keys(zap);
    if (zap_reload(zap, path, &e) < 0 && zap_n_keys(zap) != before)
        abort(); /* a list that fails to load leaves the old one */
}

static void memory_list(const uint8_t *data, size_t size)
{
    /* lines as C strings: a NUL ends a key early, as it would in a protobuf string */
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    const char *keys[64];
    size_t n = 0;
    for (char *line = strtok(text, "\n"); line && n < 64; line = strtok(NULL, "\n"))
        keys[n++] = line;
    struct errbuf e;
    if (zap_set_keys(zap, keys, n, &e) == 0 && zap_n_keys(zap) != n)
        abort(); /* every key listed is admitted */
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t mode = data[0] % 5;
    data++, size--;
    char pub[CURVE_Z85_LEN + 1], sec[CURVE_Z85_LEN + 1];
    struct errbuf e;
    const char *path = fuzz_put_file(0, data, size);
    switch (mode) {
    case 0:
        if (curve_read_public(path, pub, &e) == 0)
            check_key(pub);
        break;
    case 1:
        if (curve_read_secret(path, pub, sec, &e) == 0) {
            char derived[CURVE_Z85_LEN + 1];
            check_key(pub);
            check_key(sec);
            if (zmq_curve_public(derived, sec) != 0 || strcmp(derived, pub) != 0)
                abort();
        }
        break;
    case 2:
        allow_list(path);
        break;
    case 3:
        unlink(dir_file);
        if (rename(path, dir_file) != 0)
            fuzz_die("rename to %s failed", dir_file);
        allow_list(dir);
        break;
    case 4:
        memory_list(data, size);
        break;
    }
    return 0;
}

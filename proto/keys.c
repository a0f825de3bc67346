#include "proto/keys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "model/input_file.h"
#include "model/output_file.h"

/* A key file is a few lines; anything larger is the wrong file. */
#define KEY_FILE_MAX_BYTES (64 * 1024)

#define SPACE " \t\r\n"

bool curve_z85_decode(const char *s, size_t len, uint8_t key[32])
{
    if (len != CURVE_Z85_LEN)
        return false;
    char z85[CURVE_Z85_LEN + 1];
    memcpy(z85, s, CURVE_Z85_LEN);
    z85[CURVE_Z85_LEN] = 0;
    return zmq_z85_decode(key, z85) != NULL;
}

bool curve_z85_valid(const char *s, size_t len)
{
    uint8_t key[32];
    return curve_z85_decode(s, len, key);
}

bool curve_line_is_comment(const char *line)
{
    /* a key never starts with '#', though it is a Z85 digit: the first digit of 4 bytes
     * is at most 2^32 / 85^4 = 82, which is '%' */
    const char *p = line + strspn(line, SPACE);
    return !*p || *p == '#';
}

/* Which of the two readers is asking: they accept different lines. */
enum want { WANT_PUBLIC, WANT_SECRET };

struct found {
    char pub[CURVE_Z85_LEN + 1];
    char sec[CURVE_Z85_LEN + 1];
    mode_t mode;
};

/* A "label = KEY" line; returns 1 and the key's span when line has that label. */
static int labelled(const char *p, const char *label, const char **key, size_t *len)
{
    size_t n = strlen(label);
    if (strncmp(p, label, n) != 0)
        return 0;
    p += n;
    p += strspn(p, " \t");
    if (*p != '=')
        return 0;
    p++;
    p += strspn(p, " \t");
    *key = p;
    *len = strcspn(p, SPACE);
    return 1;
}

static int read_keys(const char *path, enum want want, struct found *f, struct errbuf *e)
{
    memset(f, 0, sizeof *f);
    FILE *fp = input_fopen(path, KEY_FILE_MAX_BYTES, e);
    if (!fp)
        return -1;
    struct stat st;
    if (fstat(fileno(fp), &st) != 0) {
        fclose(fp);
        return err_set(e, "%s: %s", path, strerror(errno));
    }
    f->mode = st.st_mode & 07777;
    char *line = NULL;
    size_t cap = 0;
    unsigned lineno = 0;
    int rc = 0;
    while (rc == 0 && getline(&line, &cap, fp) >= 0) {
        lineno++;
        if (curve_line_is_comment(line))
            continue;
        const char *p = line + strspn(line, SPACE);
        const char *key;
        size_t len;
        char *dst = NULL;
        const char *what = NULL;
        if (labelled(p, "public-key", &key, &len)) {
            dst = f->pub;
            what = "public-key";
        } else if (labelled(p, "secret-key", &key, &len)) {
            dst = f->sec;
            what = "secret-key";
        } else if (want == WANT_PUBLIC) {
            /* a .pub file: the key is the line's first word */
            key = p;
            len = strcspn(p, SPACE);
            dst = f->pub;
            what = "public key";
        } else {
            rc = err_set(e, "%s:%u: expected 'public-key = KEY' or 'secret-key = KEY' (is this "
                            "the .key file bitnetctl keygen wrote?)", path, lineno);
            break;
        }
        if (!curve_z85_valid(key, len)) {
            rc = err_set(e, "%s:%u: %s is not a Z85 CURVE key (%zu characters; a key has 40)",
                         path, lineno, what, len);
            break;
        }
        if (*dst) {
            rc = err_set(e, "%s:%u: a second %s", path, lineno, what);
            break;
        }
        memcpy(dst, key, CURVE_Z85_LEN);
        dst[CURVE_Z85_LEN] = 0;
    }
    if (rc == 0 && ferror(fp))
        rc = err_set(e, "%s: read error", path);
    free(line);
    fclose(fp);
    return rc;
}

int curve_read_public(const char *path, char pub[CURVE_Z85_LEN + 1], struct errbuf *e)
{
    struct found f;
    if (read_keys(path, WANT_PUBLIC, &f, e) < 0)
        return -1;
    /* a .key file has its public key in it, but taking it from there would teach people
     * to hand the secret around */
    if (*f.sec)
        return err_set(e, "%s: holds a secret key; give the .pub file instead", path);
    if (!*f.pub)
        return err_set(e, "%s: no public key in it (expected a 40-character Z85 key)", path);
    memcpy(pub, f.pub, CURVE_Z85_LEN + 1);
    return 0;
}

int curve_read_secret(const char *path, char pub[CURVE_Z85_LEN + 1],
                      char sec[CURVE_Z85_LEN + 1], struct errbuf *e)
{
    struct found f;
    if (read_keys(path, WANT_SECRET, &f, e) < 0)
        return -1;
    if (!*f.sec)
        return err_set(e, "%s: no 'secret-key = KEY' line (is this the .key file bitnetctl "
                          "keygen wrote?)", path);
    /* a secret others can read is no longer a secret: say so rather than use it. (After
     * the content check, so that a .pub given by mistake is named as such.) */
    if (f.mode & 077)
        return err_set(e, "%s: group or others may read this secret key (mode %04o); chmod "
                          "600 it", path, (unsigned)f.mode);
    char derived[CURVE_Z85_LEN + 1];
    if (zmq_curve_public(derived, f.sec) != 0)
        return err_set(e, "%s: cannot derive the public key: %s", path, zmq_strerror(zmq_errno()));
    if (*f.pub && strcmp(f.pub, derived) != 0)
        return err_set(e, "%s: its public-key does not belong to its secret-key", path);
    memcpy(pub, derived, CURVE_Z85_LEN + 1);
    memcpy(sec, f.sec, CURVE_Z85_LEN + 1);
    return 0;
}

/* Opens path for a new copy with exactly mode and writes text to it; committed by the
 * caller, so that both files of a pair are checked and written before either lands. */
static int stage_file(struct output_file *of, const char *path, const char *text, mode_t mode,
                      bool overwrite, struct errbuf *e)
{
    if (output_open(of, path, mode, OUTPUT_EXACT_MODE | (overwrite ? 0 : OUTPUT_NO_REPLACE),
                    e) < 0)
        return -1;
    if (fputs(text, of->fp) == EOF)
        return err_set(e, "%s: %s", path, strerror(errno));
    return 0;
}

int curve_write_pair(const char *prefix, bool overwrite, char pub[CURVE_Z85_LEN + 1],
                     struct errbuf *e)
{
    char sec[CURVE_Z85_LEN + 1];
    if (zmq_curve_keypair(pub, sec) != 0)
        return err_set(e, "zmq_curve_keypair: %s (is libzmq built with CURVE?)",
                       zmq_strerror(zmq_errno()));
    size_t n = strlen(prefix);
    char *key_path = malloc(n + 5), *pub_path = malloc(n + 5);
    char key_text[256], pub_text[4200];
    if (!key_path || !pub_path) {
        free(key_path);
        free(pub_path);
        return err_set(e, "%s: out of memory", prefix);
    }
    snprintf(key_path, n + 5, "%s.key", prefix);
    snprintf(pub_path, n + 5, "%s.pub", prefix);
    const char *base = strrchr(prefix, '/');
    base = base ? base + 1 : prefix;
    snprintf(key_text, sizeof key_text,
             "# CURVE key pair written by bitnetctl keygen: keep this file private\n"
             "public-key = %s\nsecret-key = %s\n", pub, sec);
    /* the name after the key tells allow-list entries apart; zap.c ignores it */
    snprintf(pub_text, sizeof pub_text, "%s %.4000s\n", pub, base);
    struct output_file key_out = {0}, pub_out = {0};
    int rc = stage_file(&key_out, key_path, key_text, 0600, overwrite, e);
    if (rc == 0)
        rc = stage_file(&pub_out, pub_path, pub_text, 0644, overwrite, e);
    if (rc == 0)
        rc = output_commit(&key_out, e);
    if (rc == 0 && output_commit(&pub_out, e) != 0) {
        /* half a new pair is worse than none: the next run would refuse to overwrite it */
        if (!overwrite)
            unlink(key_path);
        rc = -1;
    }
    output_abort(&key_out);
    output_abort(&pub_out);
    memset(sec, 0, sizeof sec);
    memset(key_text, 0, sizeof key_text);
    free(key_path);
    free(pub_path);
    return rc;
}

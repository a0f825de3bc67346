#include "daemon/http_keys.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "model/input_file.h"

/* A page of keys is plenty; a larger file is the wrong one. */
#define HTTP_KEYS_MAX_BYTES (1 << 20)
#define HTTP_KEYS_MAX_LINE 4096

static int add_key(struct http_keys *k, const char *tok, size_t n, struct errbuf *e)
{
    unsigned char (*d)[32] = realloc(k->digest, (k->n + 1) * sizeof *d);
    if (!d)
        return err_set(e, "out of memory");
    k->digest = d;
    SHA256((const unsigned char *)tok, n, k->digest[k->n++]);
    return 0;
}

int http_keys_load(struct http_keys *k, const char *path, struct errbuf *e)
{
    memset(k, 0, sizeof *k);
    FILE *fp = input_fopen(path, HTTP_KEYS_MAX_BYTES, e);
    if (!fp)
        return err_prefix(e, "--api-keys");
    struct stat st;
    if (fstat(fileno(fp), &st) == 0 && (st.st_mode & (S_IROTH | S_IWOTH))) {
        fclose(fp);
        return err_set(e, "--api-keys %s: others may read or write it (chmod o-rw)", path);
    }
    char line[HTTP_KEYS_MAX_LINE];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, fp)) {
        lineno++;
        size_t n = strlen(line);
        if (n == sizeof line - 1 && line[n - 1] != '\n') {
            rc = err_set(e, "--api-keys %s:%d: line longer than %d bytes", path, lineno,
                         HTTP_KEYS_MAX_LINE - 2);
            break;
        }
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        n = strlen(s);
        while (n && strchr(" \t\r\n", s[n - 1]))
            n--;
        if (n == 0 || *s == '#')
            continue;
        for (size_t i = 0; i < n && rc == 0; i++)
            if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
                rc = err_set(e, "--api-keys %s:%d: a key may not hold spaces or control "
                             "characters", path, lineno);
        if (rc == 0)
            rc = add_key(k, s, n, e);
    }
    if (rc == 0 && ferror(fp))
        rc = err_set(e, "--api-keys %s: %s", path, strerror(errno));
    fclose(fp);
    if (rc == 0 && k->n == 0)
        rc = err_set(e, "--api-keys %s: no key in it (every request would be refused)", path);
    if (rc < 0)
        http_keys_free(k);
    return rc;
}

void http_keys_free(struct http_keys *k)
{
    free(k->digest);
    k->digest = NULL;
    k->n = 0;
}

bool http_keys_admit(const struct http_keys *k, const char *authorization)
{
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return false;
    const char *tok = authorization + 7;
    while (*tok == ' ')
        tok++;
    unsigned char d[32];
    SHA256((const unsigned char *)tok, strlen(tok), d);
    bool ok = false;
    for (size_t i = 0; i < k->n; i++)
        ok |= CRYPTO_memcmp(d, k->digest[i], sizeof d) == 0;
    return ok;
}

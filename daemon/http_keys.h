/* --api-keys: the bearer tokens the HTTP API admits, read from a file (one a line, '#'
 * comments and blank lines skipped). Only their sha256 is kept, and a token is compared
 * by its sha256 in constant time, so neither its length nor its bytes show in timing. */
#ifndef BITNET_DAEMON_HTTP_KEYS_H
#define BITNET_DAEMON_HTTP_KEYS_H

#include <stdbool.h>
#include <stddef.h>

#include "model/errbuf.h"

struct http_keys {
    unsigned char (*digest)[32];
    size_t n;
};

/* Errors name the file and line. A file others may read or write is refused. */
int http_keys_load(struct http_keys *k, const char *path, struct errbuf *e);
void http_keys_free(struct http_keys *k);
/* Whether an Authorization header value ("Bearer TOKEN") holds a listed token. */
bool http_keys_admit(const struct http_keys *k, const char *authorization);

#endif

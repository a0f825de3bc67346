/* Errors travel as text in a caller-owned buffer ("path: what went wrong"), so that
 * the program that finally reports them can print one line with full context. */
#ifndef BITNET_ERRBUF_H
#define BITNET_ERRBUF_H

#include <stddef.h>

struct errbuf {
    char msg[512];
};

/* Formats into e->msg and returns -1, so callers can write `return err_set(e, ...)`. */
int err_set(struct errbuf *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to the message already in e, returns -1. */
int err_prefix(struct errbuf *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif

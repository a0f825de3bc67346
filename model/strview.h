/* A borrowed byte string: GGUF keeps strings length-prefixed, not NUL-terminated,
 * so everything that reads names or vocabulary straight from the mapping uses this. */
#ifndef BITNET_STRVIEW_H
#define BITNET_STRVIEW_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

struct strview {
    const char *ptr;
    size_t len;
};

static inline bool strview_eq(struct strview s, const char *cstr)
{
    size_t n = strlen(cstr);
    return s.len == n && memcmp(s.ptr, cstr, n) == 0;
}

#endif

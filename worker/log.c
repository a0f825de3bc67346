#include "worker/log.h"

#include <stdarg.h>
#include <stdio.h>

void worker_log(const char *id, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* one write per line, so lines of processes sharing the stream do not interleave */
    fprintf(stderr, "%s: %s\n", id, line);
}

bool log_limit_pass(struct log_limit *l)
{
    uint64_t n = ++l->seen;
    return n <= 8 || (n & (n - 1)) == 0;
}

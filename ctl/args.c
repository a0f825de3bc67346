#include "ctl/args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/input_file.h"

int arg_int(const char *opt, const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "bitnetctl: %s: '%s' is not a whole number in [%ld, %ld]\n", opt, s, min,
                max);
        return -1;
    }
    *out = v;
    return 0;
}

int arg_u64(const char *opt, const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-') {
        fprintf(stderr, "bitnetctl: %s: '%s' is not a non-negative whole number\n", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

int arg_float(const char *opt, const char *s, float min, float max, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < min || v > max) {
        fprintf(stderr, "bitnetctl: %s: '%s' is not a number in [%g, %g]\n", opt, s, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

int arg_ids(const char *opt, const char *s, int32_t **ids, size_t *n)
{
    size_t cap = 16, count = 0;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v)
        return -1;
    const char *p = s;
    for (;;) {
        while (*p == ',' || *p == ' ' || *p == '\t' || *p == '\n')
            p++;
        if (!*p)
            break;
        char *end;
        errno = 0;
        long id = strtol(p, &end, 10);
        if (errno || end == p || id < 0 || id > INT32_MAX ||
            (*end && *end != ',' && *end != ' ' && *end != '\t' && *end != '\n')) {
            fprintf(stderr, "bitnetctl: %s: bad token id at '%.20s'\n", opt, p);
            free(v);
            return -1;
        }
        if (count == cap) {
            int32_t *nv = realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) {
                free(v);
                return -1;
            }
            v = nv;
        }
        v[count++] = (int32_t)id;
        p = end;
    }
    if (count == 0) {
        fprintf(stderr, "bitnetctl: %s: no token ids given\n", opt);
        free(v);
        return -1;
    }
    *ids = v;
    *n = count;
    return 0;
}

char *read_text_file(const char *path, size_t *len)
{
    struct errbuf e;
    FILE *fp = input_fopen(path, 0, &e);
    if (!fp) {
        fprintf(stderr, "bitnetctl: %s\n", e.msg);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n - 1, fp);
        n += got;
        if (n < cap - 1)
            break;
        char *nb = realloc(buf, cap *= 2);
        if (!nb) {
            free(buf);
            buf = NULL;
        }
        buf = nb;
    }
    int failed = ferror(fp);
    fclose(fp);
    if (!buf || failed) {
        fprintf(stderr, "bitnetctl: %s: read failed\n", path);
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

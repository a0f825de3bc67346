/* Minimal test harness: CHECK records a failure with its location and keeps going, so
 * one run reports every broken assertion; check_done() prints the tally and exits. */
#ifndef BITNET_TESTS_CHECK_H
#define BITNET_TESTS_CHECK_H

#include <stdio.h>
#include <stdlib.h>

extern int check_failures;
extern int check_count;

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        check_count++;                                                       \
        if (!(cond)) {                                                       \
            check_failures++;                                                \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, \
                    #cond);                                                  \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
        }                                                                    \
    } while (0)

/* Path of a file under ../shared/data, relative to the project root tests run from. */
#define SHARED_DATA(rel) "../shared/data/" rel

static inline int check_done(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, check_count, check_failures);
    return check_failures ? 1 : 0;
}

#endif

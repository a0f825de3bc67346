/* Minimal test harness: CHECK records a failure with its location and keeps going, so
 * one run reports every broken assertion; check_done() prints the tally and exits. */
#ifndef BITNET_TESTS_CHECK_H
#define BITNET_TESTS_CHECK_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

extern int check_failures;
extern int check_count;
extern int check_skipped; /* checks not run: see check_not_run */

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

/* ../shared/data holds third-party test vectors beside the repository (CI has it; a plain
 * clone does not). True only when that directory does not exist at all: a directory that
 * is there but lacks a file or holds a broken one still makes the checks fail. */
bool shared_data_missing(void);

/* Records that a check was not run because ../shared/data is missing, with the line
 * "NOT RUN: <what> needs ../shared/data/<file> (...)" that tests/run.sh shows. */
void check_not_run(const char *what, const char *file);

/* Exit status: 1 if a check failed; 77 (tests/run.sh counts it as skipped) if no check
 * ran because every one needed ../shared/data; else 0. */
static inline int check_done(const char *name)
{
    if (check_skipped)
        printf("%s: %d checks, %d failed, %d not run\n", name, check_count, check_failures,
               check_skipped);
    else
        printf("%s: %d checks, %d failed\n", name, check_count, check_failures);
    if (check_failures)
        return 1;
    if (check_skipped && check_count == 0) {
        printf("SKIP: every check needs ../shared/data, which does not exist\n");
        return 77;
    }
    return 0;
}

#endif

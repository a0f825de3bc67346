/* Small helpers the test programs share. */
#ifndef BITNET_TESTS_UTIL_H
#define BITNET_TESTS_UTIL_H

#include <stddef.h>

/* Reads a whole file into a malloc'd buffer (NUL-terminated); NULL if unreadable. */
char *slurp(const char *path, size_t *len);

/* Space-separated names of the kernel sets this CPU can run ("scalar avx2 ..."), as
 * BITNET_KERNEL accepts them. */
void supported_kernels(char *out, size_t cap);

/* Runs a shell command and returns its exit status (-1 if it did not exit normally). */
int run_cmd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif

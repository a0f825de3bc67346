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

/* A model of tiny.gguf's shape for tests that need just some model: the third-party
 * ../shared/data/xval/tiny.gguf itself, or, when ../shared/data does not exist, one that
 * `bitnetctl model synth` writes to build/test-tmp/<name>-tiny.gguf (same shape, random
 * weights, the real Llama-3 tokenizer). NULL, said on stderr, if synthesis fails. */
const char *tiny_model_path(const char *name);

#endif

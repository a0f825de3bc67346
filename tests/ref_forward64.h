/* A second, independent forward pass for tests: float64 throughout, every tensor
 * decoded to doubles by its own code written from the spec, no kernels shared with the
 * engine. Slow and simple on purpose. */
#ifndef BITNET_TESTS_REF_FORWARD64_H
#define BITNET_TESTS_REF_FORWARD64_H

#include <stddef.h>
#include <stdint.h>

/* Teacher-forced logits for ids[0..n): returns malloc'd [n x vocab] doubles, or NULL
 * (message printed). *vocab receives the vocabulary size. */
double *ref64_logits(const char *gguf_path, const int32_t *ids, int n, int *vocab);

#endif

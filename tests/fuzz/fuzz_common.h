/* What the fuzz targets share: a scratch directory, inputs as files for readers that take
 * a path, a tiny model with a real (cut down) Llama-3 vocabulary, and the record format in
 * which the handler targets receive a sequence of messages. */
#ifndef BITNET_FUZZ_COMMON_H
#define BITNET_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* Stops the target with a message: a broken harness must not pass for a quiet fuzzer. */
void fuzz_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* A private directory under /tmp, removed with its contents at exit. */
const char *fuzz_tmpdir(void);

/* Writes data to a scratch file of mode 0600 (one per slot, reused) and returns its path,
 * for readers that take a path. */
const char *fuzz_put_file(int slot, const uint8_t *data, size_t size);

/* The tiny model: FUZZ_TINY_LAYERS layers of width 128 (I2_S; 256 for TQ packings), 2
 * heads and 1 KV head, a vocabulary of the first FUZZ_TINY_BASE tokens of the Llama-3
 * tokenizer (the bytes, then merge results in rank order, with the merges among them)
 * and 5 special tokens after them, made with model/synth.c. */
#define FUZZ_TINY_BASE 512
#define FUZZ_TINY_LAYERS 2
struct fuzz_model_opts {
    unsigned base_tokens;     /* tokens kept from the real vocabulary (256: the bytes) */
    unsigned layers;
    const char *embd_type;    /* "f16", "f32" or "q8_0" */
    const char *weight_type;  /* "i2_s", "tq2_0" or "tq1_0" */
};
/* Writes the model once per process (deterministic: same bytes every time) and returns
 * its path; opts NULL for the defaults above. */
const char *fuzz_tiny_model(const struct fuzz_model_opts *opts);

/* The handler targets' input: records of [channel byte][length, 2 bytes little-endian]
 * [payload]; a record cut short by the end of the input takes what is left. */
struct fuzz_reader {
    const uint8_t *p;
    size_t n;
};
/* 0 and the next record, or -1 at the end. */
int fuzz_next_record(struct fuzz_reader *r, uint8_t *channel, const uint8_t **payload,
                     size_t *len);

#endif

/* A model's identity: the sha256 of its GGUF header and tensor table, the bytes
 * [0, data_offset) of the file. Hashing the header rather than the whole file is what
 * lets every stage (and the daemon) agree on the model in milliseconds even for
 * gigabytes of weights: the header names every tensor with its type, shape and offset,
 * and the metadata carries the hyperparameters and tokenizer. */
#ifndef BITNET_WORKER_MODEL_ID_H
#define BITNET_WORKER_MODEL_ID_H

#include <stddef.h>

#include "model/errbuf.h"
#include "model/gguf.h"

#define MODEL_ID_HEX_LEN 64

/* hex gets 64 lowercase hex digits and a NUL. */
int model_id_sha256(const void *data, size_t len, char hex[MODEL_ID_HEX_LEN + 1],
                    struct errbuf *e);

/* The identity of an opened GGUF, from its mapping (so the hash is of exactly the
 * bytes that were parsed, not of a file that might have been replaced since). */
int model_id_of_gguf(const struct gguf_file *f, char hex[MODEL_ID_HEX_LEN + 1],
                     struct errbuf *e);

#endif

/* Builds the tokenizer from a GGUF's tokenizer.ggml.* metadata. */
#ifndef BITNET_VOCAB_GGUF_H
#define BITNET_VOCAB_GGUF_H

#include "model/errbuf.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

struct tokenizer *tokenizer_from_gguf(const struct gguf_file *f, struct errbuf *e);

#endif

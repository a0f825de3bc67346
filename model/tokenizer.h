/* Llama-3 byte-level BPE tokenizer, built from a vocabulary that was read out of a GGUF
 * (tokenizer.ggml.*) or a Hugging Face tokenizer.json. Pre-tokenization uses PCRE2 with
 * UTF and UCP so that \p{L} and \p{N} are the real Unicode classes. */
#ifndef BITNET_TOKENIZER_H
#define BITNET_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/errbuf.h"
#include "model/strview.h"

enum tok_type {
    TOK_NORMAL = 1,
    TOK_UNKNOWN = 2,
    TOK_CONTROL = 3,
    TOK_USER_DEFINED = 4,
    TOK_UNUSED = 5,
    TOK_BYTE = 6,
};

/* A vocabulary as a file states it. Token strings are in the byte-level alphabet
 * (space = "Ġ"); merges are "left right". Strings are borrowed, not copied. */
struct tok_source {
    uint32_t n_tokens;
    const struct strview *tokens;
    const int32_t *types;       /* n_tokens entries; NULL means all TOK_NORMAL */
    uint64_t n_merges;
    const struct strview *merges;
    int32_t bos_id;             /* -1 when absent */
    int32_t eos_id;
    int32_t eot_id;             /* <|eot_id|>, -1 when absent */
    bool add_bos;
};

struct tokenizer;

struct tokenizer *tokenizer_new(const struct tok_source *src, struct errbuf *e);
void tokenizer_free(struct tokenizer *t);

uint32_t tokenizer_n_vocab(const struct tokenizer *t);
int32_t tokenizer_bos(const struct tokenizer *t);
int32_t tokenizer_eos(const struct tokenizer *t);
bool tokenizer_add_bos(const struct tokenizer *t);
/* True for tokens that end a generation: EOS, <|eot_id|>, <|eom_id|> and the like. */
bool tokenizer_is_eog(const struct tokenizer *t, int32_t id);
/* Looks a token up by its exact vocabulary string; -1 when absent. */
int32_t tokenizer_find(const struct tokenizer *t, const char *piece);
/* The most bytes any one token decodes to (128 for Llama-3); a tok_stream_push buffer of
 * this + 8 bytes is always enough. */
size_t tokenizer_max_token_bytes(const struct tokenizer *t);

/* Encodes len bytes of text. With parse_special, control and user-defined tokens
 * written literally in the text become their ids; otherwise they are plain text.
 * *ids is malloc'd; the caller frees it. Invalid UTF-8 input is an error. */
int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, bool add_bos,
                     bool parse_special, int32_t **ids, size_t *n_ids, struct errbuf *e);

/* The raw bytes a token stands for (byte-level alphabet undone). Control tokens give
 * their literal text only when render_special is set, otherwise nothing. Returns the
 * byte count, which may exceed cap (then only cap bytes were written); -1 for a bad id. */
int tokenizer_token_bytes(const struct tokenizer *t, int32_t id, bool render_special, char *buf,
                          size_t cap);

/* Decodes a whole id sequence into a malloc'd NUL-terminated string; NULL for an id
 * outside the vocabulary (or no memory). */
char *tokenizer_decode(const struct tokenizer *t, const int32_t *ids, size_t n, bool render_special);

/* Streaming decoder: a UTF-8 character split across tokens is held back until it is
 * complete, so a terminal never sees half a character. */
struct tok_stream {
    char pending[8];
    size_t n_pending;
};
/* Appends the printable bytes that token id completes to out (cap >= 256 + 8 is always
 * enough for one token); returns how many were written. */
size_t tok_stream_push(const struct tokenizer *t, struct tok_stream *s, int32_t id, char *out,
                       size_t cap);
/* Emits whatever is still held (as U+FFFD for an incomplete character). */
size_t tok_stream_flush(struct tok_stream *s, char *out, size_t cap);

/* The GPT-2 byte-level alphabet that vocabulary strings are written in: the code point
 * standing for a byte, and back (-1 for a code point that stands for no byte). */
uint32_t tok_byte_to_codepoint(uint8_t b);
int tok_codepoint_to_byte(uint32_t cp);

/* A vocabulary loaded from a Hugging Face tokenizer.json, owning its strings. */
struct tok_source_owned {
    struct tok_source src;
    char *arena;                /* all strings live here */
    struct strview *tokens;
    int32_t *types;
    struct strview *merges;
};
int tok_source_from_hf_json(struct tok_source_owned *out, const char *path, struct errbuf *e);
void tok_source_owned_free(struct tok_source_owned *o);

#endif

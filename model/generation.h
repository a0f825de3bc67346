/* One generation policy for every front end (bitnetctl generate in-process, bitnetd's jobs
 * for bitnetctl and for the HTTP API): how a request's text becomes tokens, whether it fits
 * the context, and when a generation ends. Written once here, so that the same request
 * gives the same tokens whichever way it comes. */
#ifndef BITNET_GENERATION_H
#define BITNET_GENERATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/errbuf.h"
#include "model/tokenizer.h"

/* What a request's text is:
 * - a raw prompt: encoded as is, with BOS when the model's tokenizer asks for one;
 * - a chat turn with an optional system message: put in the model's chat template
 *   (model/chat.h), which writes BOS itself;
 * - text already in the template (a whole conversation the HTTP API rendered): encoded
 *   with its special tokens, nothing added. */
enum gen_input_kind { GEN_INPUT_PROMPT, GEN_INPUT_CHAT, GEN_INPUT_TEMPLATED };

struct gen_input {
    enum gen_input_kind kind;
    const char *text;   /* the prompt, the user's turn, or the templated text */
    const char *system; /* chat only; NULL or "" for none */
};

/* *ids (malloc'd, *n of them) = the request's tokens. -1 and e ("the prompt is empty",
 * "prompt: ...") when it cannot be encoded or gives no token. */
int gen_encode(const struct tokenizer *tok, const struct gen_input *in, int32_t **ids, size_t *n,
               struct errbuf *e);

/* Whether a prompt of n_prompt tokens leaves room for a token in a context of n_ctx. */
int gen_check_context(size_t n_prompt, int n_ctx, struct errbuf *e);

/* Why a generation ends after a token, or that it goes on. */
enum gen_end {
    GEN_GOES_ON,
    GEN_END_EOG,     /* the token ends generation (it is not kept) */
    GEN_END_LENGTH,  /* n_predict tokens were generated */
    GEN_END_CONTEXT, /* the token filled the context: it is the last */
};

/* After sampling token id as the n_generated-th (counting it, unless it ends generation)
 * with n_tokens tokens in the sequence (prompt + generated, counting it): what now.
 * n_predict <= 0 generates until the end of the context. */
enum gen_end gen_after_token(const struct tokenizer *tok, int32_t id, size_t n_generated,
                             long n_predict, size_t n_tokens, int n_ctx);

#endif

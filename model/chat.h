/* The chat template of BitNet b1.58 2B-4T (spec section 5). */
#ifndef BITNET_CHAT_H
#define BITNET_CHAT_H

#include <stddef.h>

enum chat_role { CHAT_SYSTEM, CHAT_USER, CHAT_ASSISTANT };

struct chat_turn {
    enum chat_role role;
    const char *text;
};

/* Returns a malloc'd prompt: BOS, an optional system turn, the user turn, and the
 * opening of the assistant's turn. Special tokens are written literally, so encode it
 * with parse_special and without add_bos. */
char *chat_prompt(const char *system, const char *user);

/* The same template over a whole conversation (the HTTP API's messages): BOS, every turn
 * in order, then the opening of the assistant's turn. An empty system turn is left out,
 * as chat_prompt leaves it out, so that [system, user] gives chat_prompt's text. */
char *chat_prompt_turns(const struct chat_turn *turns, size_t n_turns);

#endif

/* The chat template of BitNet b1.58 2B-4T (spec section 5). */
#ifndef BITNET_CHAT_H
#define BITNET_CHAT_H

/* Returns a malloc'd prompt: BOS, an optional system turn, the user turn, and the
 * opening of the assistant's turn. Special tokens are written literally, so encode it
 * with parse_special and without add_bos. */
char *chat_prompt(const char *system, const char *user);

#endif

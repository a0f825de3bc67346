/* What every in-process command needs: the model, its tokenizer, and a forward state. */
#ifndef BITNET_CTL_SESSION_H
#define BITNET_CTL_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/bitnet_model.h"
#include "model/forward.h"
#include "model/tokenizer.h"

struct session {
    struct bitnet_model model;
    struct tokenizer *tok;
    struct forward_state st;
    bool have_state;
};

/* Loads path; n_ctx > 0 also allocates a forward state of that many positions. Errors
 * are printed; returns -1 on failure. */
int session_open(struct session *s, const char *path, int n_ctx);
void session_close(struct session *s);
/* (Re)allocates the forward state for n_ctx positions; errors printed. */
int session_set_context(struct session *s, int n_ctx);

/* Runs tokens[0..n) at positions pos0.. through all layers; computes logits only for
 * the last one. Returns s->st.logits or NULL (error printed). */
const float *session_feed(struct session *s, const int32_t *tokens, size_t n, int pos0);

double now_seconds(void);

#endif

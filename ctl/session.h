/* What every in-process command needs: the model, its tokenizer, a thread pool and a
 * forward state, set up from the options all of them share. */
#ifndef BITNET_CTL_SESSION_H
#define BITNET_CTL_SESSION_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/threadpool.h"
#include "model/bitnet_model.h"
#include "model/forward.h"
#include "model/tokenizer.h"

struct session_opts {
    int threads;      /* 0: every CPU this process may use */
    int n_batch;      /* positions per forward call when feeding a prompt */
    bool lm_head_q8;  /* int8 copy of the output projection */
    enum kv_type kv_type; /* KV cache element (model/forward.h) */
};

/* Long options every in-process command accepts; splice into an option table. */
#define SESSION_OPT_THREADS 1001
#define SESSION_OPT_BATCH 1002
#define SESSION_OPT_LM_HEAD 1003
#define SESSION_OPT_KV_TYPE 1004
#define SESSION_LONG_OPTS                                        \
    {"threads", required_argument, 0, SESSION_OPT_THREADS},      \
    {"batch", required_argument, 0, SESSION_OPT_BATCH},          \
    {"lm-head", required_argument, 0, SESSION_OPT_LM_HEAD},      \
    {"kv-type", required_argument, 0, SESSION_OPT_KV_TYPE}

void session_opts_default(struct session_opts *o);
/* Handles one of the SESSION_LONG_OPTS; returns 1 if c was one (0 if not, -1 on a bad
 * value, message printed). */
int session_opts_parse(struct session_opts *o, int c, const char *arg);

struct session {
    struct session_opts opts;
    struct bitnet_model model;
    struct tokenizer *tok;
    struct threadpool *pool;
    struct forward_state st;
    bool have_state;
    double load_seconds;
};

/* Loads path; n_ctx > 0 also allocates a forward state of that many positions. Errors
 * are printed; returns -1 on failure. */
int session_open(struct session *s, const char *path, const struct session_opts *o, int n_ctx);
void session_close(struct session *s);
/* (Re)allocates the forward state for n_ctx positions; errors printed. */
int session_set_context(struct session *s, int n_ctx);

/* Runs tokens[0..n) at positions pos0.. in batches; computes logits only for the last
 * one. Returns s->st.logits or NULL (error printed). */
const float *session_feed(struct session *s, const int32_t *tokens, size_t n, int pos0);

#endif

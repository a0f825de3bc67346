#include "ctl/session.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kernels/kernels.h"
#include "model/vocab_gguf.h"

double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int session_open(struct session *s, const char *path, int n_ctx)
{
    memset(s, 0, sizeof *s);
    struct errbuf e = {{0}};
    if (kernels_init() < 0)
        return -1;
    if (bitnet_model_load(&s->model, path, &e) < 0) {
        fprintf(stderr, "bitnetctl: %s\n", e.msg);
        return -1;
    }
    s->tok = tokenizer_from_gguf(&s->model.file, &e);
    if (!s->tok) {
        fprintf(stderr, "bitnetctl: %s: %s\n", path, e.msg);
        session_close(s);
        return -1;
    }
    if (tokenizer_n_vocab(s->tok) != s->model.hp.n_vocab) {
        fprintf(stderr, "bitnetctl: %s: tokenizer has %u tokens but the embedding has %u rows\n",
                path, tokenizer_n_vocab(s->tok), s->model.hp.n_vocab);
        session_close(s);
        return -1;
    }
    if (n_ctx > 0 && session_set_context(s, n_ctx) < 0) {
        session_close(s);
        return -1;
    }
    return 0;
}

int session_set_context(struct session *s, int n_ctx)
{
    struct errbuf e = {{0}};
    if (s->have_state)
        forward_state_free(&s->st);
    s->have_state = false;
    if (forward_state_init(&s->st, &s->model.hp, n_ctx, &e) < 0) {
        fprintf(stderr, "bitnetctl: %s\n", e.msg);
        return -1;
    }
    s->have_state = true;
    return 0;
}

void session_close(struct session *s)
{
    if (s->have_state)
        forward_state_free(&s->st);
    tokenizer_free(s->tok);
    bitnet_model_free(&s->model);
    memset(s, 0, sizeof *s);
}

const float *session_feed(struct session *s, const int32_t *tokens, size_t n, int pos0)
{
    struct errbuf e = {{0}};
    for (size_t i = 0; i < n; i++) {
        if (forward_advance(&s->model, &s->st, tokens[i], pos0 + (int)i, &e) < 0) {
            fprintf(stderr, "bitnetctl: %s\n", e.msg);
            return NULL;
        }
    }
    forward_output(&s->model, &s->st);
    return s->st.logits;
}

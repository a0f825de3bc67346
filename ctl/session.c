#include "ctl/session.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "ctl/args.h"
#include "kernels/kernels.h"
#include "model/clock.h"
#include "model/vocab_gguf.h"

void session_opts_default(struct session_opts *o)
{
    o->threads = 0;
    o->n_batch = 512;
    o->lm_head_q8 = false;
    o->kv_type = KV_TYPE_F32;
}

int session_opts_parse(struct session_opts *o, int c, const char *arg)
{
    long v;
    switch (c) {
    case SESSION_OPT_THREADS:
        if (arg_int("--threads", arg, 1, 1024, &v) < 0)
            return -1;
        o->threads = (int)v;
        return 1;
    case SESSION_OPT_BATCH:
        if (arg_int("--batch", arg, 1, 8192, &v) < 0)
            return -1;
        o->n_batch = (int)v;
        return 1;
    case SESSION_OPT_LM_HEAD:
        if (strcasecmp(arg, "q8") == 0 || strcasecmp(arg, "q8_0") == 0) {
            o->lm_head_q8 = true;
        } else if (strcasecmp(arg, "f16") == 0 || strcasecmp(arg, "native") == 0) {
            o->lm_head_q8 = false;
        } else {
            fprintf(stderr, "bitnetctl: --lm-head: '%s' is not 'f16' (as stored) or 'q8'\n", arg);
            return -1;
        }
        return 1;
    case SESSION_OPT_KV_TYPE:
        if (kv_type_parse(arg, &o->kv_type) < 0) {
            fprintf(stderr, "bitnetctl: --kv-type: '%s' is not " KV_TYPE_NAMES "\n", arg);
            return -1;
        }
        return 1;
    default:
        return 0;
    }
}

int session_open(struct session *s, const char *path, const struct session_opts *o, int n_ctx)
{
    memset(s, 0, sizeof *s);
    s->opts = *o;
    struct errbuf e = {{0}};
    double t0 = clock_seconds();
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
    int threads = o->threads > 0 ? o->threads : cpus_available();
    s->pool = threadpool_new(threads, true, &e);
    if (!s->pool) {
        fprintf(stderr, "bitnetctl: %s\n", e.msg);
        session_close(s);
        return -1;
    }
    int kept;
    if (bitnet_model_repack(&s->model, 0, s->model.hp.n_layer, s->pool, &kept, &e) < 0) {
        fprintf(stderr, "bitnetctl: %s: %s\n", path, e.msg);
        session_close(s);
        return -1;
    }
    if (kept)
        fprintf(stderr, "bitnetctl: %s: %d TQ matrices have blocks of different scales and "
                        "run on the scalar kernel (slow)\n", path, kept);
    if (o->lm_head_q8 && bitnet_model_build_q8_head(&s->model, s->pool, &e) < 0) {
        fprintf(stderr, "bitnetctl: %s: %s\n", path, e.msg);
        session_close(s);
        return -1;
    }
    if (n_ctx > 0 && session_set_context(s, n_ctx) < 0) {
        session_close(s);
        return -1;
    }
    s->load_seconds = clock_seconds() - t0;
    return 0;
}

int session_set_context(struct session *s, int n_ctx)
{
    struct errbuf e = {{0}};
    if (s->have_state)
        forward_state_free(&s->st);
    s->have_state = false;
    struct forward_config cfg = {
        .n_ctx = n_ctx,
        .n_batch = s->opts.n_batch < n_ctx ? s->opts.n_batch : n_ctx,
        .pool = s->pool,
        .kv_type = s->opts.kv_type,
    };
    if (forward_state_init(&s->st, &s->model, &cfg, &e) < 0) {
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
    threadpool_free(s->pool);
    tokenizer_free(s->tok);
    bitnet_model_free(&s->model);
    memset(s, 0, sizeof *s);
}

const float *session_feed(struct session *s, const int32_t *tokens, size_t n, int pos0)
{
    struct errbuf e = {{0}};
    int last = 0;
    for (size_t done = 0; done < n;) {
        int chunk = (int)(n - done < (size_t)s->st.n_batch ? n - done : (size_t)s->st.n_batch);
        if (forward_batch(&s->model, &s->st, tokens + done, chunk, pos0 + (int)done, &e) < 0) {
            fprintf(stderr, "bitnetctl: %s\n", e.msg);
            return NULL;
        }
        done += (size_t)chunk;
        last = chunk - 1;
    }
    forward_output(&s->model, &s->st, last);
    return s->st.logits;
}

#include "daemon/jobs.h"

#include <stdlib.h>
#include <string.h>

#include "model/generation.h"
#include "proto/sampling_wire.h"

#define MAX_STOP_STRINGS 16
#define MAX_STOP_LEN 256

static struct job *job_alloc(void)
{
    struct job *j = calloc(1, sizeof *j);
    if (j)
        j->slot = -1;
    return j;
}

void job_free(struct job *j)
{
    if (!j)
        return;
    free(j->tokens);
    sampler_free(&j->smp);
    for (size_t i = 0; i < j->n_stop; i++)
        free(j->stop[i]);
    free(j->stop);
    free(j->text);
    free(j->logits);
    free(j);
}

static int copy_stops(struct job *j, const Bitnet__GenerateRequest *r, struct errbuf *e)
{
    if (r->n_stop > MAX_STOP_STRINGS)
        return err_set(e, "%zu stop strings (at most %d)", r->n_stop, MAX_STOP_STRINGS);
    if (!r->n_stop)
        return 0;
    j->stop = calloc(r->n_stop, sizeof *j->stop);
    if (!j->stop)
        return err_set(e, "out of memory");
    for (size_t i = 0; i < r->n_stop; i++) {
        size_t n = r->stop[i] ? strlen(r->stop[i]) : 0;
        if (n == 0)
            return err_set(e, "stop string %zu is empty", i);
        if (n > MAX_STOP_LEN)
            return err_set(e, "stop string %zu has %zu bytes (at most %d)", i, n, MAX_STOP_LEN);
        if (!(j->stop[i] = strdup(r->stop[i])))
            return err_set(e, "out of memory");
        j->n_stop = i + 1;
        if (n > j->max_stop_len)
            j->max_stop_len = n;
    }
    return 0;
}

/* The request's text as model/generation.h takes it. */
static int encode_prompt(const Bitnet__GenerateRequest *r, const struct tokenizer *tok,
                         struct job *j, struct errbuf *e)
{
    struct gen_input in = {GEN_INPUT_PROMPT, r->prompt, NULL};
    if (r->input_case == BITNET__GENERATE_REQUEST__INPUT_CHAT)
        in = (struct gen_input){GEN_INPUT_CHAT, r->chat, r->system};
    else if (!r->add_bos)
        in.kind = GEN_INPUT_TEMPLATED;
    size_t n = 0;
    if (gen_encode(tok, &in, &j->tokens, &n, e) < 0)
        return -1;
    j->n_tokens = j->cap_tokens = j->n_prompt = n;
    return 0;
}

struct job *job_new_generate(const Bitnet__GenerateRequest *r, const struct job_limits *lim,
                             struct errbuf *e)
{
    struct job *j = job_alloc();
    if (!j) {
        err_set(e, "out of memory");
        return NULL;
    }
    struct sampler_params sp;
    sampling_from_wire(r->sampling, &sp);
    if (encode_prompt(r, lim->tok, j, e) < 0 || copy_stops(j, r, e) < 0 ||
        sampler_init(&j->smp, &sp, lim->n_vocab, e) < 0 ||
        gen_check_context(j->n_prompt, lim->n_ctx, e) < 0)
        goto fail;
    for (size_t i = 0; i < j->n_prompt; i++)
        sampler_accept(&j->smp, j->tokens[i]);
    j->n_predict = r->n_predict;
    j->argmax_only = sp.temp <= 0 && (sp.repeat_penalty == 1.0f || sp.repeat_last_n == 0);
    j->stream = r->stream;
    j->return_ids = r->return_ids;
    j->n_vocab = lim->n_vocab;
    return j;
fail:
    job_free(j);
    return NULL;
}

struct job *job_new_eval(const Bitnet__EvalRequest *r, const struct job_limits *lim,
                         struct errbuf *e)
{
    if (r->n_token_ids == 0) {
        err_set(e, "eval: no token ids");
        return NULL;
    }
    if (r->n_token_ids > (size_t)lim->n_ctx) {
        err_set(e, "eval: %zu tokens do not fit the context of %d", r->n_token_ids, lim->n_ctx);
        return NULL;
    }
    if (r->n_token_ids > lim->max_eval_positions) {
        err_set(e, "eval: %zu positions of %u logits exceed the reply limit of %zu positions",
                r->n_token_ids, lim->n_vocab, lim->max_eval_positions);
        return NULL;
    }
    for (size_t i = 0; i < r->n_token_ids; i++)
        if (r->token_ids[i] < 0 || (uint32_t)r->token_ids[i] >= lim->n_vocab) {
            err_set(e, "eval: token %zu is %d, outside the vocabulary of %u", i,
                    r->token_ids[i], lim->n_vocab);
            return NULL;
        }
    struct job *j = job_alloc();
    size_t n = r->n_token_ids;
    if (!j || !(j->tokens = malloc(n * sizeof *j->tokens)) ||
        !(j->logits = malloc(n * lim->n_vocab * sizeof *j->logits))) {
        job_free(j);
        err_set(e, "eval: out of memory for %zu positions", n);
        return NULL;
    }
    memcpy(j->tokens, r->token_ids, n * sizeof *j->tokens);
    j->n_tokens = j->cap_tokens = j->n_prompt = n;
    j->eval = true;
    j->n_vocab = lim->n_vocab;
    return j;
}

static int text_append(struct job *j, const char *s, size_t n)
{
    if (n == 0) /* j->text may still be NULL: memcpy must not see it */
        return 0;
    if (j->n_text + n > j->cap_text) {
        size_t cap = j->cap_text ? j->cap_text : 256;
        while (cap < j->n_text + n)
            cap *= 2;
        char *t = realloc(j->text, cap);
        if (!t)
            return -1;
        j->text = t;
        j->cap_text = cap;
    }
    memcpy(j->text + j->n_text, s, n);
    j->n_text += n;
    return 0;
}

/* First occurrence of any stop string that ends in the new bytes [from_new, n_text);
 * SIZE_MAX when none. Earlier bytes were checked when they arrived. */
static size_t find_stop(const struct job *j, size_t from_new)
{
    size_t best = SIZE_MAX;
    for (size_t s = 0; s < j->n_stop; s++) {
        size_t len = strlen(j->stop[s]);
        size_t start = from_new + 1 > len ? from_new + 1 - len : 0;
        for (size_t at = start; at + len <= j->n_text && at < best; at++)
            if (memcmp(j->text + at, j->stop[s], len) == 0) {
                best = at;
                break;
            }
    }
    return best;
}

int job_push_token(struct job *j, const struct tokenizer *tok, int32_t id)
{
    if (j->n_tokens == j->cap_tokens) {
        size_t cap = j->cap_tokens ? 2 * j->cap_tokens : 64;
        int32_t *t = realloc(j->tokens, cap * sizeof *t);
        if (!t)
            return -1;
        j->tokens = t;
        j->cap_tokens = cap;
    }
    j->tokens[j->n_tokens++] = id;
    j->n_unsent_ids++;
    sampler_accept(&j->smp, id);
    char buf[512];
    size_t nb = tok_stream_push(tok, &j->ts, id, buf, sizeof buf);
    size_t before = j->n_text;
    if (text_append(j, buf, nb) < 0)
        return -1;
    if (j->n_stop && nb) {
        size_t at = find_stop(j, before);
        if (at != SIZE_MAX) {
            j->n_text = at;
            return 1;
        }
    }
    return 0;
}

int job_flush_text(struct job *j)
{
    char buf[16];
    size_t nb = tok_stream_flush(&j->ts, buf, sizeof buf);
    return text_append(j, buf, nb);
}

/* Longest tail of the text that is a proper prefix of some stop string. */
static size_t stop_prefix_tail(const struct job *j)
{
    size_t keep = 0;
    for (size_t s = 0; s < j->n_stop; s++) {
        size_t len = strlen(j->stop[s]);
        size_t max = len - 1 < j->n_text ? len - 1 : j->n_text;
        for (size_t k = max; k > keep; k--)
            if (memcmp(j->text + j->n_text - k, j->stop[s], k) == 0) {
                keep = k;
                break;
            }
    }
    return keep;
}

size_t job_sendable_text(const struct job *j, bool done)
{
    if (done)
        return j->n_text;
    if (!j->stream)
        return 0;
    return j->n_text - stop_prefix_tail(j);
}

void job_consume_output(struct job *j, size_t n_bytes)
{
    if (n_bytes > j->n_text)
        n_bytes = j->n_text;
    if (n_bytes) /* else nothing moves, and j->text may still be NULL */
        memmove(j->text, j->text + n_bytes, j->n_text - n_bytes);
    j->n_text -= n_bytes;
    j->n_unsent_ids = 0;
}

size_t job_n_generated(const struct job *j)
{
    return j->n_tokens - j->n_prompt;
}

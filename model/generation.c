#include "model/generation.h"

#include <stdlib.h>
#include <string.h>

#include "model/chat.h"

int gen_encode(const struct tokenizer *tok, const struct gen_input *in, int32_t **ids, size_t *n,
               struct errbuf *e)
{
    *ids = NULL;
    *n = 0;
    const char *text = in->text ? in->text : "";
    char *templated = NULL;
    bool add_bos = false;
    switch (in->kind) {
    case GEN_INPUT_PROMPT:
        add_bos = tokenizer_add_bos(tok);
        break;
    case GEN_INPUT_CHAT:
        templated = chat_prompt(in->system && *in->system ? in->system : NULL, text);
        if (!templated)
            return err_set(e, "out of memory");
        text = templated;
        break;
    case GEN_INPUT_TEMPLATED:
        break;
    default:
        return err_set(e, "prompt: input kind %d unknown", (int)in->kind);
    }
    int rc = tokenizer_encode(tok, text, strlen(text), add_bos, true, ids, n, e);
    free(templated);
    if (rc < 0)
        return err_prefix(e, "prompt");
    if (*n == 0) {
        free(*ids);
        *ids = NULL;
        return err_set(e, "the prompt is empty");
    }
    return 0;
}

int gen_check_context(size_t n_prompt, int n_ctx, struct errbuf *e)
{
    if (n_ctx < 1 || n_prompt >= (size_t)n_ctx)
        return err_set(e, "prompt of %zu tokens does not fit the context of %d", n_prompt, n_ctx);
    return 0;
}

enum gen_end gen_after_token(const struct tokenizer *tok, int32_t id, size_t n_generated,
                             long n_predict, size_t n_tokens, int n_ctx)
{
    if (tokenizer_is_eog(tok, id))
        return GEN_END_EOG;
    if (n_predict > 0 && n_generated >= (size_t)n_predict)
        return GEN_END_LENGTH;
    if (n_tokens >= (size_t)n_ctx)
        return GEN_END_CONTEXT;
    return GEN_GOES_ON;
}

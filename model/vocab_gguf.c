#include "model/vocab_gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct gguf_kv *string_array(const struct gguf_file *f, const char *key,
                                          struct errbuf *e)
{
    const struct gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) {
        err_set(e, "%s: missing", key);
        return NULL;
    }
    if (kv->type != GGUF_ARRAY || kv->arr_type != GGUF_STRING) {
        err_set(e, "%s: expected an array of strings", key);
        return NULL;
    }
    return kv;
}

/* Only byte-level BPE with the Llama-3 pre-tokenizer is implemented; refusing other
 * tokenizers by name is better than silently producing wrong ids. */
static int check_kind(const struct gguf_file *f, struct errbuf *e)
{
    struct strview model, pre;
    if (gguf_get_str(f, "tokenizer.ggml.model", &model, e) < 0)
        return -1;
    if (!strview_eq(model, "gpt2"))
        return err_set(e, "tokenizer.ggml.model '%.*s' is not supported (only 'gpt2' byte-level BPE)",
                       (int)(model.len > 64 ? 64 : model.len), model.ptr);
    struct errbuf ignore;
    if (gguf_get_str(f, "tokenizer.ggml.pre", &pre, &ignore) == 0 && !strview_eq(pre, "llama-bpe") &&
        !strview_eq(pre, "llama3") && !strview_eq(pre, "llama-v3"))
        return err_set(e, "tokenizer.ggml.pre '%.*s' is not supported (only 'llama-bpe')",
                       (int)(pre.len > 64 ? 64 : pre.len), pre.ptr);
    return 0;
}

static int32_t optional_id(const struct gguf_file *f, const char *key, uint32_t n_tokens,
                           int32_t fallback)
{
    uint32_t v;
    struct errbuf ignore;
    if (gguf_get_u32(f, key, &v, &ignore) < 0 || v >= n_tokens)
        return fallback;
    return (int32_t)v;
}

struct tokenizer *tokenizer_from_gguf(const struct gguf_file *f, struct errbuf *e)
{
    if (check_kind(f, e) < 0)
        return NULL;
    const struct gguf_kv *toks = string_array(f, "tokenizer.ggml.tokens", e);
    const struct gguf_kv *merges = toks ? string_array(f, "tokenizer.ggml.merges", e) : NULL;
    if (!toks || !merges)
        return NULL;
    if (toks->arr_n == 0 || toks->arr_n > (1u << 24)) {
        err_set(e, "tokenizer.ggml.tokens: implausible count %llu", (unsigned long long)toks->arr_n);
        return NULL;
    }

    struct tok_source src = {
        .n_tokens = (uint32_t)toks->arr_n,
        .tokens = toks->strs,
        .n_merges = merges->arr_n,
        .merges = merges->strs,
    };
    int32_t *types = NULL;
    uint64_t n_types = 0;
    if (gguf_find_kv(f, "tokenizer.ggml.token_type")) {
        if (gguf_get_arr_i32(f, "tokenizer.ggml.token_type", &types, &n_types, e) < 0)
            return NULL;
        if (n_types != toks->arr_n) {
            err_set(e, "tokenizer.ggml.token_type has %llu entries for %llu tokens",
                    (unsigned long long)n_types, (unsigned long long)toks->arr_n);
            free(types);
            return NULL;
        }
        src.types = types;
    }
    src.bos_id = optional_id(f, "tokenizer.ggml.bos_token_id", src.n_tokens, -1);
    src.eos_id = optional_id(f, "tokenizer.ggml.eos_token_id", src.n_tokens, -1);
    src.eot_id = optional_id(f, "tokenizer.ggml.eot_token_id", src.n_tokens, -1);
    for (uint32_t i = 0; src.eot_id < 0 && i < src.n_tokens; i++)
        if (strview_eq(src.tokens[i], "<|eot_id|>"))
            src.eot_id = (int32_t)i;
    bool add_bos = true;
    struct errbuf ignore;
    if (gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &add_bos, &ignore) < 0)
        add_bos = src.bos_id >= 0;
    src.add_bos = add_bos && src.bos_id >= 0;

    struct tokenizer *t = tokenizer_new(&src, e);
    free(types);
    return t;
}

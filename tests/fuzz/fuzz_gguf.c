/* The GGUF reader on arbitrary bytes, and what is built on a file it accepts: the typed
 * getters, the tokenizer from tokenizer.ggml.*, the model identity and the model loader.
 * A model the loader accepts, if small, runs one token through the forward pass: the
 * loader promises that every tensor it binds has the shape the pass reads. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "model/bitnet_model.h"
#include "model/forward.h"
#include "model/gguf.h"
#include "model/tokenizer.h"
#include "model/vocab_gguf.h"
#include "tests/fuzz/fuzz_common.h"
#include "worker/model_id.h"

/* Keeps reads from being optimised away, so ASan sees them. */
static volatile uint8_t sink;

static void touch(const void *p, size_t n)
{
    if (n) {
        sink ^= ((const uint8_t *)p)[0];
        sink ^= ((const uint8_t *)p)[n - 1];
    }
}

static size_t elem_size(uint32_t t)
{
    static const uint8_t sizes[GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < GGUF_VTYPE_COUNT ? sizes[t] : 0;
}

static void exercise_metadata(const struct gguf_file *f)
{
    struct errbuf e;
    char key[256];
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const struct gguf_kv *kv = &f->kv[i];
        touch(kv->key.ptr, kv->key.len);
        if (kv->type == GGUF_STRING)
            touch(kv->val.str.ptr, kv->val.str.len);
        if (kv->type == GGUF_ARRAY) {
            if (kv->arr_type == GGUF_STRING)
                for (uint64_t k = 0; k < kv->arr_n; k++)
                    touch(kv->strs[k].ptr, kv->strs[k].len);
            else if (elem_size(kv->arr_type))
                touch(kv->arr_data, (size_t)kv->arr_n * elem_size(kv->arr_type));
        }
        /* the getters look keys up by C string: only keys without a NUL can be asked for */
        if (kv->key.len >= sizeof key || memchr(kv->key.ptr, 0, kv->key.len))
            continue;
        memcpy(key, kv->key.ptr, kv->key.len);
        key[kv->key.len] = 0;
        if (gguf_find_kv(f, key) != kv)
            abort(); /* keys are unique (checked at open), so the first is this one */
        uint32_t u;
        float x;
        bool b;
        struct strview s;
        int32_t *arr = NULL;
        uint64_t n;
        gguf_get_u32(f, key, &u, &e);
        gguf_get_f32(f, key, &x, &e);
        gguf_get_bool(f, key, &b, &e);
        if (gguf_get_str(f, key, &s, &e) == 0)
            touch(s.ptr, s.len);
        if (gguf_get_arr_i32(f, key, &arr, &n, &e) == 0) {
            if (n != kv->arr_n)
                abort();
            free(arr);
        }
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const struct gguf_tensor *t = &f->tensors[i];
        touch(t->name.ptr, t->name.len);
        touch(t->data, (size_t)t->nbytes);
    }
}

static void exercise_tokenizer(const struct gguf_file *f)
{
    struct errbuf e;
    struct tokenizer *t = tokenizer_from_gguf(f, &e);
    if (!t)
        return;
    static const char text[] = "Hello, world! 123 <|eot_id|>\n\xc3\xa9t\xc3\xa9";
    int32_t *ids;
    size_t n;
    if (tokenizer_encode(t, text, sizeof text - 1, false, true, &ids, &n, &e) == 0) {
        free(tokenizer_decode(t, ids, n, true));
        free(ids);
    }
    uint32_t nv = tokenizer_n_vocab(t);
    int32_t some[4] = {0, (int32_t)(nv / 2), (int32_t)nv - 1, tokenizer_bos(t)};
    free(tokenizer_decode(t, some, some[3] >= 0 ? 4 : 3, true));
    tokenizer_free(t);
}

/* One token through a model small enough to run in a moment. */
static void exercise_forward(const struct bitnet_model *m)
{
    const struct bitnet_hparams *hp = &m->hp;
    uint64_t work = (uint64_t)hp->n_layer * hp->n_embd * (hp->n_embd + hp->n_ff) +
                    (uint64_t)hp->n_vocab * hp->n_embd;
    if (work > (1u << 22))
        return;
    struct forward_state s;
    struct forward_config cfg = {.n_ctx = 2, .n_batch = 1};
    struct errbuf e;
    if (forward_state_init(&s, m, &cfg, &e) == 0) {
        forward_token(m, &s, 0, 0, &e);
        forward_token(m, &s, (int32_t)hp->n_vocab - 1, 1, &e);
    }
    forward_state_free(&s);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    kernels_init(); /* the forward pass calls through the dispatch table it fills */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct gguf_file f;
    struct errbuf e;
    /* libFuzzer's copy of the input is an allocation of exactly size bytes */
    if (gguf_open_mem(&f, data, size, "fuzz", &e) < 0)
        return 0;
    exercise_metadata(&f);
    exercise_tokenizer(&f);
    char hex[MODEL_ID_HEX_LEN + 1];
    model_id_of_gguf(&f, hex, &e);
    gguf_close(&f);

    /* the loader takes a path; the same bytes as a file */
    struct bitnet_model m;
    if (bitnet_model_load(&m, fuzz_put_file(0, data, size), &e) < 0)
        return 0;
    bitnet_model_ternary_bytes(&m);
    bitnet_model_head_bytes(&m);
    int kept;
    if (bitnet_model_repack(&m, 0, m.hp.n_layer, NULL, &kept, &e) == 0)
        exercise_forward(&m);
    bitnet_model_free(&m);
    return 0;
}

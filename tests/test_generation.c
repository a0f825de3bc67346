/* The generation policy every front end shares (model/generation.h): how a request's text
 * becomes tokens, the context check and when a generation ends. bitnetctl generate and
 * bitnetd's jobs both call it, so these are the rules of both; t_daemon_ctl and t_http
 * check end to end that their texts agree. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/bitnet_model.h"
#include "model/chat.h"
#include "model/generation.h"
#include "model/vocab_gguf.h"
#include "tests/check.h"
#include "tests/util.h"

#define BOS 128000
#define EOT 128009 /* <|eot_id|>, an end of generation */

static void check_encode(const struct tokenizer *tok)
{
    struct errbuf e;
    int32_t *ids = NULL;
    size_t n = 0;
    /* a raw prompt: BOS (the Llama-3 tokenizer asks for it), then the text */
    struct gen_input prompt = {GEN_INPUT_PROMPT, "Hello world", NULL};
    CHECK(gen_encode(tok, &prompt, &ids, &n, &e) == 0, "%s", e.msg);
    CHECK(n == 3 && ids[0] == BOS && ids[1] == 9906 && ids[2] == 1917,
          "prompt: %zu ids, first %d", n, n ? ids[0] : -1);
    free(ids);
    /* a chat turn: exactly the template's tokens, with one BOS (the template's) */
    struct gen_input chat = {GEN_INPUT_CHAT, "Hi", "Be brief"};
    CHECK(gen_encode(tok, &chat, &ids, &n, &e) == 0, "%s", e.msg);
    char *text = chat_prompt("Be brief", "Hi");
    int32_t *want = NULL;
    size_t n_want = 0;
    CHECK(text && tokenizer_encode(tok, text, strlen(text), false, true, &want, &n_want, &e) == 0,
          "template");
    CHECK(n == n_want && n_want > 4 && memcmp(ids, want, n * sizeof *ids) == 0 && ids[0] == BOS &&
              ids[1] != BOS,
          "chat: %zu ids against the template's %zu", n, n_want);
    free(ids);
    /* text already in the template: nothing added, the special tokens parsed */
    struct gen_input templated = {GEN_INPUT_TEMPLATED, text, NULL};
    CHECK(gen_encode(tok, &templated, &ids, &n, &e) == 0, "%s", e.msg);
    CHECK(n == n_want && memcmp(ids, want, n * sizeof *ids) == 0,
          "templated: %zu ids against %zu", n, n_want);
    free(ids);
    free(want);
    free(text);
    /* an empty chat system message is no system turn */
    struct gen_input no_system = {GEN_INPUT_CHAT, "Hi", ""};
    int32_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    struct gen_input null_system = {GEN_INPUT_CHAT, "Hi", NULL};
    CHECK(gen_encode(tok, &no_system, &a, &na, &e) == 0 &&
              gen_encode(tok, &null_system, &b, &nb, &e) == 0 && na == nb &&
              memcmp(a, b, na * sizeof *a) == 0,
          "an empty system message changed the tokens");
    free(a);
    free(b);
    /* nothing to generate from */
    struct gen_input empty = {GEN_INPUT_TEMPLATED, "", NULL};
    ids = NULL;
    CHECK(gen_encode(tok, &empty, &ids, &n, &e) < 0 && strstr(e.msg, "the prompt is empty") &&
              ids == NULL,
          "an empty templated text was accepted (%zu ids)", n);
    struct gen_input bad = {(enum gen_input_kind)7, "x", NULL};
    CHECK(gen_encode(tok, &bad, &ids, &n, &e) < 0, "an unknown input kind was accepted");
}

static void check_context_and_end(const struct tokenizer *tok)
{
    struct errbuf e;
    CHECK(gen_check_context(99, 100, &e) == 0, "99 tokens in 100");
    CHECK(gen_check_context(100, 100, &e) < 0 &&
              strcmp(e.msg, "prompt of 100 tokens does not fit the context of 100") == 0,
          "100 tokens in 100: %s", e.msg);
    CHECK(gen_check_context(1, 0, &e) < 0, "a context of 0");
    /* the end of generation wins over everything, and is not counted */
    CHECK(gen_after_token(tok, EOT, 5, 5, 100, 100) == GEN_END_EOG, "eot");
    CHECK(gen_after_token(tok, 9906, 4, 5, 10, 100) == GEN_GOES_ON, "4 of 5");
    CHECK(gen_after_token(tok, 9906, 5, 5, 10, 100) == GEN_END_LENGTH, "5 of 5");
    /* the token that fills the context is the last */
    CHECK(gen_after_token(tok, 9906, 3, 50, 100, 100) == GEN_END_CONTEXT, "context full");
    CHECK(gen_after_token(tok, 9906, 3, 50, 99, 100) == GEN_GOES_ON, "one position left");
    /* n_predict 0 or less: to the end of the context */
    CHECK(gen_after_token(tok, 9906, 1000, 0, 1010, 2048) == GEN_GOES_ON, "unlimited");
    CHECK(gen_after_token(tok, 9906, 1000, -1, 2048, 2048) == GEN_END_CONTEXT,
          "unlimited, context full");
}

int main(void)
{
    const char *path = tiny_model_path("test_generation");
    struct bitnet_model m;
    struct errbuf e;
    if (!path || bitnet_model_load(&m, path, &e) < 0) {
        CHECK(0, "model: %s", path ? e.msg : "none");
        return check_done("test_generation");
    }
    struct tokenizer *tok = tokenizer_from_gguf(&m.file, &e);
    CHECK(tok, "tokenizer: %s", e.msg);
    if (tok) {
        check_encode(tok);
        check_context_and_end(tok);
        tokenizer_free(tok);
    }
    bitnet_model_free(&m);
    return check_done("test_generation");
}

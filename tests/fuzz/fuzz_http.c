/* The HTTP API's request bodies (daemon/http_openai.c): the input's first byte picks the
 * endpoint (even: /v1/completions, odd: /v1/chat/completions), the rest is the body, read
 * as bitnetd reads a POST. What it accepts is then answered as bitnetd would answer it:
 * the prompt's bytes go through the UTF-8 cleaning in two pieces (a character may be cut
 * between them) and into a whole response and a stream chunk; what it refuses gets its
 * error JSON. Every JSON text made must parse back, strictly and as valid UTF-8: a client
 * must never receive a body it cannot read. */
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/http_openai.h"
#include "tests/fuzz/fuzz_common.h"

static void must_parse(const char *what, const char *text, size_t n)
{
    struct json_tokener *tok = json_tokener_new_ex(32);
    if (!tok)
        fuzz_die("out of memory");
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    struct json_object *o = json_tokener_parse_ex(tok, text, (int)n);
    enum json_tokener_error err = json_tokener_get_error(tok);
    json_tokener_free(tok);
    if (!o || err != json_tokener_success)
        fuzz_die("%s is not valid JSON (%s): %.200s", what, json_tokener_error_desc(err), text);
    json_object_put(o);
}

/* The cleaned text of s cut at `cut`: both pieces, the carried tail put before the second. */
static char *clean_in_two(const char *s, size_t n, size_t cut, size_t *n_out)
{
    size_t n1, tail1, n2, tail2;
    char *a = openai_utf8_clean(s, cut, false, &n1, &tail1);
    if (!a)
        fuzz_die("out of memory");
    if (tail1 > 3 || tail1 > cut)
        fuzz_die("a carried tail of %zu bytes", tail1);
    size_t n_rest = tail1 + (n - cut);
    char *rest = malloc(n_rest + 1);
    if (!rest)
        fuzz_die("out of memory");
    memcpy(rest, s + cut - tail1, n_rest);
    char *b = openai_utf8_clean(rest, n_rest, true, &n2, &tail2);
    free(rest);
    if (!b || tail2 != 0)
        fuzz_die("the final piece kept a tail");
    char *out = malloc(n1 + n2 + 1);
    if (!out)
        fuzz_die("out of memory");
    memcpy(out, a, n1);
    memcpy(out + n1, b, n2);
    out[n1 + n2] = 0;
    *n_out = n1 + n2;
    free(a);
    free(b);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    bool chat = data[0] & 1;
    const char *body = (const char *)data + 1;
    size_t n_body = size - 1;
    struct openai_request r;
    struct openai_error err;
    if (openai_parse_request(body, n_body, chat, 42, &r, &err) < 0) {
        if (err.status < 400 || err.status > 599)
            fuzz_die("error status %d", err.status);
        char *json = openai_error_json(&err);
        if (!json)
            fuzz_die("out of memory");
        must_parse("an error", json, strlen(json));
        free(json);
        openai_request_free(&r);
        return 0;
    }
    if (!r.prompt || (r.max_tokens < 0) || r.n_stop > OPENAI_MAX_STOP)
        fuzz_die("an accepted request without a prompt or with bad limits");
    size_t n = strlen(r.prompt);
    size_t whole_n, tail;
    char *whole = openai_utf8_clean(r.prompt, n, true, &whole_n, &tail);
    size_t split_n;
    char *split = clean_in_two(r.prompt, n, n / 2, &split_n);
    /* cutting anywhere must not change what the client reads */
    if (!whole || whole_n != split_n || memcmp(whole, split, whole_n) != 0)
        fuzz_die("UTF-8 cleaning depends on where the text was cut");
    struct openai_response_head h = {chat, "cmpl-fuzz", 1, "m"};
    struct openai_usage u = {1, 2};
    char *resp = openai_response_json(&h, whole, whole_n, "stop", &u);
    size_t n_ev = 0;
    char *ev = openai_chunk_event(&h, whole, whole_n, true, NULL, NULL, &n_ev);
    if (!resp || !ev)
        fuzz_die("out of memory");
    must_parse("a response", resp, strlen(resp));
    if (n_ev < 8 || memcmp(ev, "data: ", 6) != 0 || memcmp(ev + n_ev - 2, "\n\n", 2) != 0 ||
        memchr(ev, '\n', n_ev - 2))
        fuzz_die("a malformed event: %.200s", ev);
    must_parse("a chunk", ev + 6, n_ev - 8);
    free(resp);
    free(ev);
    free(whole);
    free(split);
    openai_request_free(&r);
    return 0;
}

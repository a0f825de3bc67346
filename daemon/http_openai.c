#include "daemon/http_openai.h"

#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/chat.h"

/* Deeper than any request needs (messages -> message -> content -> part), shallow enough
 * that a body of nested brackets costs nothing. */
#define OPENAI_MAX_DEPTH 16
#define OPENAI_MAX_MESSAGES 1024

int openai_fail(struct openai_error *err, int status, const char *type, const char *code,
                const char *param, const char *fmt, ...)
{
    err->status = status;
    err->type = type;
    err->code = code;
    err->param = param;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

#define BAD(err, code, param, ...) \
    openai_fail(err, 400, "invalid_request_error", code, param, __VA_ARGS__)

void openai_request_free(struct openai_request *r)
{
    free(r->prompt);
    for (size_t i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    memset(r, 0, sizeof *r);
}

/* A field's value; NULL when absent or JSON null (both mean "the default"). */
static struct json_object *field(struct json_object *o, const char *key)
{
    struct json_object *v = NULL;
    return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static bool is_number(struct json_object *v)
{
    return json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double);
}

/* *out stays as it was when the field is absent. */
static int get_float(struct json_object *o, const char *key, double lo, double hi, float *out,
                     struct openai_error *err)
{
    struct json_object *v = field(o, key);
    if (!v)
        return 0;
    if (!is_number(v))
        return BAD(err, "invalid_type", key, "'%s' must be a number", key);
    double x = json_object_get_double(v);
    if (!isfinite(x) || x < lo || x > hi)
        return BAD(err, "invalid_value", key, "'%s' must be between %g and %g", key, lo, hi);
    *out = (float)x;
    return 0;
}

static int get_int(struct json_object *o, const char *key, long lo, long hi, int *out,
                   struct openai_error *err)
{
    struct json_object *v = field(o, key);
    if (!v)
        return 0;
    if (!json_object_is_type(v, json_type_int))
        return BAD(err, "invalid_type", key, "'%s' must be an integer", key);
    int64_t x = json_object_get_int64(v);
    if (x < lo || x > hi)
        return BAD(err, "invalid_value", key, "'%s' must be between %ld and %ld", key, lo, hi);
    *out = (int)x;
    return 0;
}

/* A string without NUL bytes (the daemon's strings are C strings): its text, or NULL with
 * err filled. */
static const char *string_value(struct json_object *v, const char *param, struct openai_error *err)
{
    if (!json_object_is_type(v, json_type_string)) {
        BAD(err, "invalid_type", param, "'%s' must be a string", param);
        return NULL;
    }
    const char *s = json_object_get_string(v);
    if (strlen(s) != (size_t)json_object_get_string_len(v)) {
        BAD(err, "invalid_value", param, "'%s' contains a NUL character", param);
        return NULL;
    }
    return s;
}

/* OpenAI parameters bitnetd does not implement: accepted at their neutral value (clients
 * send them by default), refused otherwise rather than silently ignored. */
static int check_unsupported(struct json_object *o, struct openai_error *err)
{
    struct json_object *v;
    if ((v = field(o, "n")) &&
        (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) != 1))
        return BAD(err, "unsupported_value", "n", "only n=1 is supported");
    if ((v = field(o, "best_of")) &&
        (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) != 1))
        return BAD(err, "unsupported_value", "best_of", "only best_of=1 is supported");
    if ((v = field(o, "echo")) && json_object_get_boolean(v))
        return BAD(err, "unsupported_value", "echo", "'echo' is not supported");
    if ((v = field(o, "logprobs")) && json_object_get_boolean(v))
        return BAD(err, "unsupported_value", "logprobs", "'logprobs' is not supported");
    if ((v = field(o, "suffix")) && !(json_object_is_type(v, json_type_string) &&
                                      json_object_get_string_len(v) == 0))
        return BAD(err, "unsupported_value", "suffix", "'suffix' is not supported");
    static const char *const penalties[] = {"presence_penalty", "frequency_penalty"};
    for (size_t i = 0; i < 2; i++)
        if ((v = field(o, penalties[i])) && (!is_number(v) || json_object_get_double(v) != 0))
            return BAD(err, "unsupported_value", penalties[i],
                       "'%s' is not supported (use repeat_penalty)", penalties[i]);
    static const char *const lists[] = {"tools", "functions", "logit_bias"};
    for (size_t i = 0; i < 3; i++)
        if ((v = field(o, lists[i])) &&
            !((json_object_is_type(v, json_type_array) && json_object_array_length(v) == 0) ||
              (json_object_is_type(v, json_type_object) && json_object_object_length(v) == 0)))
            return BAD(err, "unsupported_value", lists[i], "'%s' is not supported", lists[i]);
    if ((v = field(o, "stream")) && !json_object_is_type(v, json_type_boolean))
        return BAD(err, "invalid_type", "stream", "'stream' must be a boolean");
    if ((v = field(o, "model")) && !json_object_is_type(v, json_type_string))
        return BAD(err, "invalid_type", "model", "'model' must be a string");
    return 0;
}

static int add_stop(struct openai_request *r, struct json_object *v, struct openai_error *err)
{
    const char *s = string_value(v, "stop", err);
    if (!s)
        return -1;
    size_t n = strlen(s);
    if (n == 0 || n > OPENAI_MAX_STOP_LEN)
        return BAD(err, "invalid_value", "stop", "each stop string must have 1 to %d bytes",
                   OPENAI_MAX_STOP_LEN);
    if (r->n_stop == OPENAI_MAX_STOP)
        return BAD(err, "invalid_value", "stop", "at most %d stop strings", OPENAI_MAX_STOP);
    if (!(r->stop[r->n_stop] = strdup(s)))
        return openai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    r->n_stop++;
    return 0;
}

static int get_stop(struct json_object *o, struct openai_request *r, struct openai_error *err)
{
    struct json_object *v = field(o, "stop");
    if (!v)
        return 0;
    if (!json_object_is_type(v, json_type_array))
        return add_stop(r, v, err);
    size_t n = json_object_array_length(v);
    for (size_t i = 0; i < n; i++)
        if (add_stop(r, json_object_array_get_idx(v, i), err) < 0)
            return -1;
    return 0;
}

static int get_sampling(struct json_object *o, struct openai_request *r, uint64_t seed_if_absent,
                        struct openai_error *err)
{
    struct sampler_params *p = &r->sp;
    sampler_params_default(p);
    int top_k = p->top_k;
    if (get_float(o, "temperature", 0, 100, &p->temp, err) < 0 ||
        get_float(o, "top_p", 0, 1, &p->top_p, err) < 0 ||
        get_int(o, "top_k", -1, 1 << 24, &top_k, err) < 0 ||
        get_float(o, "min_p", 0, 1, &p->min_p, err) < 0 ||
        get_float(o, "repeat_penalty", 0.01, 100, &p->repeat_penalty, err) < 0 ||
        get_int(o, "repeat_last_n", 0, 1 << 16, &p->repeat_last_n, err) < 0)
        return -1;
    p->top_k = top_k < 0 ? 0 : top_k;
    p->seed = seed_if_absent;
    struct json_object *v = field(o, "seed");
    if (v) {
        if (!json_object_is_type(v, json_type_int))
            return BAD(err, "invalid_type", "seed", "'seed' must be an integer");
        if (json_object_get_int64(v) < 0)
            return BAD(err, "invalid_value", "seed", "'seed' must not be negative");
        p->seed = json_object_get_uint64(v);
    }
    return 0;
}

static int get_prompt(struct json_object *o, struct openai_request *r, struct openai_error *err)
{
    struct json_object *v = field(o, "prompt");
    if (!v)
        return BAD(err, "missing_field", "prompt", "'prompt' is required");
    /* a list holding one string is the same request; token ids and batches are not served */
    if (json_object_is_type(v, json_type_array)) {
        if (json_object_array_length(v) != 1 ||
            !json_object_is_type(json_object_array_get_idx(v, 0), json_type_string))
            return BAD(err, "unsupported_value", "prompt",
                       "'prompt' must be a string (or a list of one string)");
        v = json_object_array_get_idx(v, 0);
    }
    const char *s = string_value(v, "prompt", err);
    if (!s)
        return -1;
    if (!(r->prompt = strdup(s)))
        return openai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    r->add_bos = true;
    return 0;
}

/* A message's content: a string, or a list of {"type":"text","text":...} parts, joined. */
static char *message_text(struct json_object *c, size_t i, struct openai_error *err)
{
    if (!c)
        return strdup("");
    if (json_object_is_type(c, json_type_string)) {
        const char *s = string_value(c, "messages", err);
        return s ? strdup(s) : NULL;
    }
    if (!json_object_is_type(c, json_type_array)) {
        BAD(err, "invalid_type", "messages", "messages[%zu].content must be a string or a list "
            "of text parts", i);
        return NULL;
    }
    char *out = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&out, &len);
    if (!fp) {
        openai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
        return NULL;
    }
    size_t n = json_object_array_length(c);
    for (size_t k = 0; k < n; k++) {
        struct json_object *part = json_object_array_get_idx(c, k);
        struct json_object *type = part && json_object_is_type(part, json_type_object)
                                       ? field(part, "type") : NULL;
        struct json_object *text = type ? field(part, "text") : NULL;
        if (!type || !json_object_is_type(type, json_type_string) ||
            strcmp(json_object_get_string(type), "text") != 0 || !text) {
            BAD(err, "unsupported_value", "messages", "messages[%zu].content[%zu]: only "
                "{\"type\":\"text\",\"text\":...} parts are supported", i, k);
            fclose(fp);
            free(out);
            return NULL;
        }
        const char *s = string_value(text, "messages", err);
        if (!s) {
            fclose(fp);
            free(out);
            return NULL;
        }
        fputs(s, fp);
    }
    if (fclose(fp) != 0) {
        free(out);
        openai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
        return NULL;
    }
    return out;
}

static int get_messages(struct json_object *o, struct openai_request *r, struct openai_error *err)
{
    struct json_object *v = field(o, "messages");
    if (!v)
        return BAD(err, "missing_field", "messages", "'messages' is required");
    if (!json_object_is_type(v, json_type_array))
        return BAD(err, "invalid_type", "messages", "'messages' must be a list");
    size_t n = json_object_array_length(v);
    if (n == 0 || n > OPENAI_MAX_MESSAGES)
        return BAD(err, "invalid_value", "messages", "'messages' must hold 1 to %d messages",
                   OPENAI_MAX_MESSAGES);
    struct chat_turn *turns = calloc(n, sizeof *turns);
    if (!turns)
        return openai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    int rc = 0;
    size_t i;
    for (i = 0; i < n && rc == 0; i++) {
        struct json_object *m = json_object_array_get_idx(v, i);
        struct json_object *role = m && json_object_is_type(m, json_type_object)
                                       ? field(m, "role") : NULL;
        if (!role || !json_object_is_type(role, json_type_string)) {
            rc = BAD(err, "invalid_type", "messages", "messages[%zu] must be an object with a "
                     "string 'role'", i);
            break;
        }
        const char *name = json_object_get_string(role);
        if (strcmp(name, "system") == 0 || strcmp(name, "developer") == 0)
            turns[i].role = CHAT_SYSTEM;
        else if (strcmp(name, "user") == 0)
            turns[i].role = CHAT_USER;
        else if (strcmp(name, "assistant") == 0)
            turns[i].role = CHAT_ASSISTANT;
        else {
            rc = BAD(err, "unsupported_value", "messages", "messages[%zu].role '%.64s' is not "
                     "system, developer, user or assistant", i, name);
            break;
        }
        char *text = message_text(field(m, "content"), i, err);
        if (!text)
            rc = -1;
        turns[i].text = text;
    }
    if (rc == 0 && !(r->prompt = chat_prompt_turns(turns, n)))
        rc = openai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    for (size_t k = 0; k < n; k++)
        free((char *)turns[k].text);
    free(turns);
    /* chat_prompt_turns writes BOS itself, as bitnetctl generate --chat's template does */
    r->add_bos = false;
    return rc;
}

int openai_parse_request(const char *body, size_t len, bool chat, uint64_t seed_if_absent,
                         struct openai_request *r, struct openai_error *err)
{
    memset(r, 0, sizeof *r);
    r->chat = chat;
    if (len == 0)
        return BAD(err, "invalid_json", NULL, "the request body is empty: expected a JSON object");
    if (len > INT32_MAX)
        return openai_fail(err, 413, "invalid_request_error", "request_too_large", NULL,
                           "the request body is too large");
    struct json_tokener *tok = json_tokener_new_ex(OPENAI_MAX_DEPTH);
    if (!tok)
        return openai_fail(err, 500, "server_error", NULL, NULL, "out of memory");
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    struct json_object *o = json_tokener_parse_ex(tok, body, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    while (o && end < len && strchr(" \t\r\n", body[end]) && body[end])
        end++;
    if (!o || jerr != json_tokener_success || end != len) {
        json_object_put(o);
        return BAD(err, "invalid_json", NULL, "the request body is not valid JSON: %s",
                   jerr == json_tokener_continue ? "it ends before the value does"
                   : jerr != json_tokener_success ? json_tokener_error_desc(jerr)
                   : "text after the JSON value");
    }
    int rc;
    if (!json_object_is_type(o, json_type_object))
        rc = BAD(err, "invalid_type", NULL, "the request body must be a JSON object");
    else if ((rc = check_unsupported(o, err)) == 0 &&
             (rc = chat ? get_messages(o, r, err) : get_prompt(o, r, err)) == 0 &&
             (rc = get_sampling(o, r, seed_if_absent, err)) == 0 &&
             (rc = get_stop(o, r, err)) == 0) {
        r->max_tokens = chat ? 0 : OPENAI_COMPLETIONS_DEFAULT_MAX_TOKENS;
        const char *mt = chat && field(o, "max_completion_tokens") ? "max_completion_tokens"
                                                                   : "max_tokens";
        rc = get_int(o, mt, 1, 1 << 20, &r->max_tokens, err);
        struct json_object *s = field(o, "stream");
        r->stream = s && json_object_get_boolean(s);
    }
    json_object_put(o);
    return rc;
}

/* ---- responses ---- */

static char *to_text(struct json_object *o)
{
    if (!o)
        return NULL;
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
                                                          JSON_C_TO_STRING_NOSLASHESCAPE);
    char *copy = s ? strdup(s) : NULL;
    json_object_put(o);
    return copy;
}

char *openai_error_json(const struct openai_error *err)
{
    struct json_object *o = json_object_new_object(), *e = json_object_new_object();
    if (!o || !e) {
        json_object_put(o);
        json_object_put(e);
        return NULL;
    }
    json_object_object_add(e, "message", json_object_new_string(err->message));
    json_object_object_add(e, "type", json_object_new_string(err->type ? err->type : "server_error"));
    json_object_object_add(e, "param", err->param ? json_object_new_string(err->param) : NULL);
    json_object_object_add(e, "code", err->code ? json_object_new_string(err->code) : NULL);
    json_object_object_add(o, "error", e);
    return to_text(o);
}

static struct json_object *usage_json(const struct openai_usage *u)
{
    struct json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    json_object_object_add(o, "prompt_tokens", json_object_new_int64(u->prompt_tokens));
    json_object_object_add(o, "completion_tokens", json_object_new_int64(u->completion_tokens));
    json_object_object_add(o, "total_tokens",
                           json_object_new_int64((int64_t)u->prompt_tokens + u->completion_tokens));
    return o;
}

/* The envelope of every response and chunk, choices still empty. */
static struct json_object *response_object(const struct openai_response_head *h, const char *object,
                                           struct json_object **choices)
{
    struct json_object *o = json_object_new_object();
    *choices = json_object_new_array();
    if (!o || !*choices) {
        json_object_put(o);
        json_object_put(*choices);
        return NULL;
    }
    json_object_object_add(o, "id", json_object_new_string(h->id));
    json_object_object_add(o, "object", json_object_new_string(object));
    json_object_object_add(o, "created", json_object_new_int64(h->created));
    json_object_object_add(o, "model", json_object_new_string(h->model));
    json_object_object_add(o, "choices", *choices);
    return o;
}

char *openai_response_json(const struct openai_response_head *h, const char *text, size_t n_text,
                           const char *finish_reason, const struct openai_usage *usage)
{
    struct json_object *choices;
    struct json_object *o = response_object(h, h->chat ? "chat.completion" : "text_completion",
                                            &choices);
    if (!o)
        return NULL;
    struct json_object *c = json_object_new_object();
    json_object_object_add(c, "index", json_object_new_int(0));
    if (h->chat) {
        struct json_object *m = json_object_new_object();
        json_object_object_add(m, "role", json_object_new_string("assistant"));
        json_object_object_add(m, "content", json_object_new_string_len(text, (int)n_text));
        json_object_object_add(c, "message", m);
    } else {
        json_object_object_add(c, "text", json_object_new_string_len(text, (int)n_text));
    }
    json_object_object_add(c, "logprobs", NULL);
    json_object_object_add(c, "finish_reason",
                           json_object_new_string(finish_reason ? finish_reason : "stop"));
    json_object_array_add(choices, c);
    if (usage)
        json_object_object_add(o, "usage", usage_json(usage));
    return to_text(o);
}

char *openai_chunk_event(const struct openai_response_head *h, const char *text, size_t n_text,
                         bool first, const char *finish_reason, const struct openai_usage *usage,
                         size_t *n_out)
{
    struct json_object *choices;
    struct json_object *o = response_object(h, h->chat ? "chat.completion.chunk"
                                                       : "text_completion", &choices);
    if (!o)
        return NULL;
    struct json_object *c = json_object_new_object();
    json_object_object_add(c, "index", json_object_new_int(0));
    if (h->chat) {
        /* the last chunk's delta is empty: it only carries the finish reason */
        struct json_object *delta = json_object_new_object();
        if (first)
            json_object_object_add(delta, "role", json_object_new_string("assistant"));
        if (n_text || !finish_reason)
            json_object_object_add(delta, "content", json_object_new_string_len(text, (int)n_text));
        json_object_object_add(c, "delta", delta);
    } else {
        json_object_object_add(c, "text", json_object_new_string_len(text, (int)n_text));
    }
    json_object_object_add(c, "logprobs", NULL);
    json_object_object_add(c, "finish_reason",
                           finish_reason ? json_object_new_string(finish_reason) : NULL);
    json_object_array_add(choices, c);
    if (usage)
        json_object_object_add(o, "usage", usage_json(usage));
    char *json = to_text(o);
    if (!json)
        return NULL;
    char *ev = NULL;
    int n = asprintf(&ev, "data: %s\n\n", json);
    free(json);
    if (n < 0)
        return NULL;
    *n_out = (size_t)n;
    return ev;
}

char *openai_models_json(const char *model, long long created)
{
    struct json_object *o = json_object_new_object(), *list = json_object_new_array(),
                       *m = json_object_new_object();
    if (!o || !list || !m) {
        json_object_put(o);
        json_object_put(list);
        json_object_put(m);
        return NULL;
    }
    json_object_object_add(m, "id", json_object_new_string(model));
    json_object_object_add(m, "object", json_object_new_string("model"));
    json_object_object_add(m, "created", json_object_new_int64(created));
    json_object_object_add(m, "owned_by", json_object_new_string("bitnetd"));
    json_object_array_add(list, m);
    json_object_object_add(o, "object", json_object_new_string("list"));
    json_object_object_add(o, "data", list);
    return to_text(o);
}

/* ---- UTF-8 ---- */

char *openai_utf8_clean(const char *s, size_t n, bool final, size_t *n_out, size_t *n_tail)
{
    static const char replacement[] = "\xEF\xBF\xBD";
    /* every input byte becomes at most one U+FFFD (3 bytes) */
    char *out = malloc(3 * n + 1);
    if (!out)
        return NULL;
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0, i = 0;
    *n_tail = 0;
    while (i < n) {
        unsigned char b = u[i];
        if (b < 0x80) {
            out[o++] = (char)b;
            i++;
            continue;
        }
        int need;
        unsigned char lo = 0x80, hi = 0xBF;
        if (b >= 0xC2 && b <= 0xDF)
            need = 1;
        else if (b >= 0xE0 && b <= 0xEF) {
            need = 2;
            if (b == 0xE0)
                lo = 0xA0;
            if (b == 0xED)
                hi = 0x9F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            need = 3;
            if (b == 0xF0)
                lo = 0x90;
            if (b == 0xF4)
                hi = 0x8F;
        } else {
            memcpy(out + o, replacement, 3), o += 3;
            i++;
            continue;
        }
        size_t j = i + 1;
        bool bad = false;
        for (int k = 0; k < need; k++, j++) {
            if (j >= n) {
                if (!final) { /* may complete with the next piece */
                    *n_tail = n - i;
                    out[o] = 0;
                    *n_out = o;
                    return out;
                }
                bad = true;
                break;
            }
            if (u[j] < lo || u[j] > hi) {
                bad = true;
                break;
            }
            lo = 0x80, hi = 0xBF;
        }
        if (bad) { /* the bytes so far are one ill-formed subsequence; u[j] starts anew */
            memcpy(out + o, replacement, 3), o += 3;
            i = j;
            continue;
        }
        memcpy(out + o, s + i, j - i);
        o += j - i;
        i = j;
    }
    out[o] = 0;
    *n_out = o;
    return out;
}

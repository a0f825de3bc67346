/* The OpenAI request and response bodies of bitnetd's HTTP API (docs/http-api.md): a
 * completions or chat completions request read into what a GenerateRequest needs, and the
 * JSON that goes back (whole responses, server-sent event chunks, errors). No I/O here:
 * the server (http_server.c) and the generation (http_generate.c) call these. */
#ifndef BITNET_DAEMON_HTTP_OPENAI_H
#define BITNET_DAEMON_HTTP_OPENAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/sample.h"

/* The daemon takes 16 stop strings of up to 256 bytes (daemon/jobs.c); OpenAI takes 4. */
#define OPENAI_MAX_STOP 16
#define OPENAI_MAX_STOP_LEN 256
/* Completions stop after this many tokens when max_tokens is absent, as OpenAI's do. */
#define OPENAI_COMPLETIONS_DEFAULT_MAX_TOKENS 16

/* An error as the client sees it: {"error":{"message","type","param","code"}}. */
struct openai_error {
    int status;             /* HTTP status */
    const char *type;       /* "invalid_request_error", "server_error", ... */
    const char *code;       /* machine-readable, or NULL */
    const char *param;      /* the offending request field, or NULL */
    char message[512];
};

/* Fills err and returns -1, so that a parser can `return openai_fail(...)`. */
int openai_fail(struct openai_error *err, int status, const char *type, const char *code,
                const char *param, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

struct openai_request {
    bool chat;
    char *prompt;           /* the text the daemon tokenizes: for chat the rendered template */
    bool add_bos;           /* completions: as bitnetctl generate --prompt asks */
    int max_tokens;         /* 0: until EOS or the end of the context */
    struct sampler_params sp;
    char *stop[OPENAI_MAX_STOP];
    size_t n_stop;
    bool stream;
};

/* Reads a request body. seed_if_absent is used when the body gives no seed (a fresh random
 * one, as bitnetctl picks). Returns 0, or -1 with err (a 4xx) saying what is wrong; r is to
 * be released with openai_request_free either way. */
int openai_parse_request(const char *body, size_t len, bool chat, uint64_t seed_if_absent,
                         struct openai_request *r, struct openai_error *err);
void openai_request_free(struct openai_request *r);

/* A response's fixed parts, the same in every chunk of a stream. */
struct openai_response_head {
    bool chat;
    const char *id;         /* "cmpl-..." or "chatcmpl-..." */
    long long created;      /* Unix seconds */
    const char *model;
};

struct openai_usage {
    unsigned prompt_tokens, completion_tokens;
};

/* malloc'd JSON texts (NULL when out of memory). finish_reason NULL: still running (a
 * chunk's JSON null). usage NULL: left out. */
char *openai_error_json(const struct openai_error *err);
char *openai_response_json(const struct openai_response_head *h, const char *text, size_t n_text,
                           const char *finish_reason, const struct openai_usage *usage);
/* One server-sent event: "data: {chunk}\n\n". first: a chat stream's first chunk also
 * carries the assistant role. */
char *openai_chunk_event(const struct openai_response_head *h, const char *text, size_t n_text,
                         bool first, const char *finish_reason, const struct openai_usage *usage,
                         size_t *n_out);
/* {"object":"list","data":[{"id":model,...}]} */
char *openai_models_json(const char *model, long long created);

/* Valid UTF-8 for JSON: each maximal ill-formed subsequence becomes U+FFFD, as the WHATWG
 * decoder (and so every browser and Node) reads bytes. A character cut at the end of s is
 * not complete yet: its bytes stay out of *out and their count is *n_tail, to be put
 * before the next piece (final: no next piece, they become U+FFFD). Returns a malloc'd
 * string of *n_out bytes, or NULL. */
char *openai_utf8_clean(const char *s, size_t n, bool final, size_t *n_out, size_t *n_tail);

#endif

/* Reads a Hugging Face tokenizer.json (BPE model) into a tok_source. The JSON tree is
 * dropped before returning, so every string is copied into one arena the source owns. */
#include "model/tokenizer.h"

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/input_file.h"

/* Far above any real vocabulary; it stops a stray huge id from becoming a huge array. */
#define MAX_TOKEN_ID (1 << 24)

/* json_tokener_parse_ex takes an int length. */
#define MAX_JSON_BYTES ((size_t)INT_MAX - 1)

static char *read_file(const char *path, size_t *len, struct errbuf *e)
{
    FILE *f = input_fopen(path, 0, e);
    if (!f)
        return NULL;
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    const char *fail = buf ? NULL : "out of memory";
    while (!fail) {
        if (n == cap) {
            char *p = cap <= MAX_JSON_BYTES / 2 ? realloc(buf, cap * 2) : NULL;
            if (!p) {
                fail = cap <= MAX_JSON_BYTES / 2 ? "out of memory"
                                                 : "too large for a tokenizer.json";
                break;
            }
            buf = p;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            fail = ferror(f) ? "read error" : NULL;
        if (got == 0)
            break;
    }
    fclose(f);
    if (fail) {
        err_set(e, "%s: %s", path, fail);
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static struct json_object *parse_json(const char *path, struct errbuf *e)
{
    size_t len;
    char *text = read_file(path, &len, e);
    if (!text)
        return NULL;
    struct json_tokener *tok = json_tokener_new();
    struct json_object *root = NULL;
    if (!tok) {
        err_set(e, "%s: out of memory", path);
    } else {
        root = json_tokener_parse_ex(tok, text, (int)len);
        enum json_tokener_error jerr = json_tokener_get_error(tok);
        if (!root || jerr != json_tokener_success) {
            /* A truncated file leaves the tokener waiting for more input. */
            const char *why = jerr == json_tokener_continue ? "unexpected end of file"
                                                            : json_tokener_error_desc(jerr);
            err_set(e, "%s: not valid JSON (%s near byte %zu)", path, why,
                    json_tokener_get_parse_end(tok));
            json_object_put(root);
            root = NULL;
        } else if (json_tokener_get_parse_end(tok) < len) {
            size_t at = json_tokener_get_parse_end(tok);
            while (at < len && strchr(" \t\r\n", text[at]))
                at++;
            if (at < len) {
                err_set(e, "%s: not valid JSON (trailing data at byte %zu)", path, at);
                json_object_put(root);
                root = NULL;
            }
        }
        json_tokener_free(tok);
    }
    free(text);
    return root;
}

/* Everything gathered from the JSON before copying: strings still point into the tree. */
struct gather {
    uint32_t n_tokens;
    struct strview *tokens;
    int32_t *types;
    size_t text_bytes;
};

static int get_id(struct json_object *v, const char *what, const char *path, int64_t *id,
                  struct errbuf *e)
{
    if (!json_object_is_type(v, json_type_int))
        return err_set(e, "%s: %s: id is not an integer", path, what);
    *id = json_object_get_int64(v);
    if (*id < 0 || *id >= MAX_TOKEN_ID)
        return err_set(e, "%s: %s: id %lld out of range", path, what, (long long)*id);
    return 0;
}

static int max_ids(struct json_object *vocab, struct json_object *added, const char *path,
                   int64_t *max_id, struct errbuf *e)
{
    *max_id = -1;
    struct json_object_iterator it = json_object_iter_begin(vocab);
    struct json_object_iterator end = json_object_iter_end(vocab);
    for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
        int64_t id;
        if (get_id(json_object_iter_peek_value(&it), json_object_iter_peek_name(&it), path, &id,
                   e))
            return err_prefix(e, "model.vocab");
        if (id > *max_id)
            *max_id = id;
    }
    size_t n_added = added ? json_object_array_length(added) : 0;
    for (size_t i = 0; i < n_added; i++) {
        struct json_object *a = json_object_array_get_idx(added, i), *v;
        if (!json_object_is_type(a, json_type_object) || !json_object_object_get_ex(a, "id", &v))
            return err_set(e, "%s: added_tokens[%zu] has no id", path, i);
        int64_t id;
        if (get_id(v, "added_tokens", path, &id, e))
            return -1;
        if (id > *max_id)
            *max_id = id;
    }
    if (*max_id < 0)
        return err_set(e, "%s: model.vocab is empty", path);
    return 0;
}

static int gather_tokens(struct gather *g, struct json_object *vocab, struct json_object *added,
                         const char *path, struct errbuf *e)
{
    struct json_object_iterator it = json_object_iter_begin(vocab);
    struct json_object_iterator end = json_object_iter_end(vocab);
    for (; !json_object_iter_equal(&it, &end); json_object_iter_next(&it)) {
        const char *name = json_object_iter_peek_name(&it);
        int64_t id = json_object_get_int64(json_object_iter_peek_value(&it));
        if (g->tokens[id].ptr)
            return err_set(e, "%s: model.vocab: id %lld used twice", path, (long long)id);
        g->tokens[id] = (struct strview){name, strlen(name)};
        g->types[id] = TOK_NORMAL;
    }
    size_t n_added = added ? json_object_array_length(added) : 0;
    for (size_t i = 0; i < n_added; i++) {
        struct json_object *a = json_object_array_get_idx(added, i), *v;
        int64_t id = json_object_get_int64(json_object_object_get_ex(a, "id", &v) ? v : NULL);
        if (!json_object_object_get_ex(a, "content", &v) ||
            !json_object_is_type(v, json_type_string))
            return err_set(e, "%s: added_tokens[%zu] has no content", path, i);
        /* An added token may restate a vocab entry; it then only sets the type. */
        g->tokens[id] = (struct strview){json_object_get_string(v),
                                         (size_t)json_object_get_string_len(v)};
        struct json_object *sp;
        bool special = json_object_object_get_ex(a, "special", &sp) && json_object_get_boolean(sp);
        g->types[id] = special ? TOK_CONTROL : TOK_USER_DEFINED;
    }
    return 0;
}

/* Checks the merges and adds up their bytes ("left right" plus a NUL each). */
static int measure_merges(struct json_object *merges, const char *path, size_t *bytes,
                          struct errbuf *e)
{
    size_t n = merges ? json_object_array_length(merges) : 0;
    for (size_t i = 0; i < n; i++) {
        struct json_object *m = json_object_array_get_idx(merges, i);
        if (json_object_is_type(m, json_type_string)) {
            *bytes += (size_t)json_object_get_string_len(m) + 1;
        } else if (json_object_is_type(m, json_type_array) && json_object_array_length(m) == 2 &&
                   json_object_is_type(json_object_array_get_idx(m, 0), json_type_string) &&
                   json_object_is_type(json_object_array_get_idx(m, 1), json_type_string)) {
            *bytes += (size_t)json_object_get_string_len(json_object_array_get_idx(m, 0)) +
                      (size_t)json_object_get_string_len(json_object_array_get_idx(m, 1)) + 2;
        } else {
            return err_set(e, "%s: model.merges[%zu] is neither \"left right\" nor [left, right]",
                           path, i);
        }
    }
    return 0;
}

static char *arena_put(char *at, const char *s, size_t n, struct strview *out)
{
    if (n)
        memcpy(at, s, n);
    at[n] = 0;
    *out = (struct strview){at, n};
    return at + n + 1;
}

static int32_t find_content(const struct tok_source_owned *o, const char *s)
{
    for (uint32_t i = 0; i < o->src.n_tokens; i++)
        if (strview_eq(o->tokens[i], s))
            return (int32_t)i;
    return -1;
}

static int fill(struct tok_source_owned *o, struct json_object *root, const char *path,
                struct errbuf *e)
{
    struct json_object *model, *vocab, *merges = NULL, *added = NULL, *type;
    if (!json_object_is_type(root, json_type_object) ||
        !json_object_object_get_ex(root, "model", &model) ||
        !json_object_is_type(model, json_type_object))
        return err_set(e, "%s: no \"model\" object", path);
    if (json_object_object_get_ex(model, "type", &type) &&
        json_object_is_type(type, json_type_string) &&
        strcmp(json_object_get_string(type), "BPE") != 0)
        return err_set(e, "%s: model.type is \"%s\", not BPE", path, json_object_get_string(type));
    if (!json_object_object_get_ex(model, "vocab", &vocab) ||
        !json_object_is_type(vocab, json_type_object))
        return err_set(e, "%s: no model.vocab object", path);
    if (json_object_object_get_ex(model, "merges", &merges) && merges &&
        !json_object_is_type(merges, json_type_array))
        return err_set(e, "%s: model.merges is not an array", path);
    if (json_object_object_get_ex(root, "added_tokens", &added) && added &&
        !json_object_is_type(added, json_type_array))
        return err_set(e, "%s: added_tokens is not an array", path);

    int64_t max_id;
    if (max_ids(vocab, added, path, &max_id, e))
        return -1;
    struct gather g = {.n_tokens = (uint32_t)max_id + 1};
    g.tokens = calloc(g.n_tokens, sizeof *g.tokens);
    g.types = malloc(g.n_tokens * sizeof *g.types);
    o->tokens = g.tokens;
    o->types = g.types;
    if (!g.tokens || !g.types)
        return err_set(e, "%s: out of memory", path);
    for (uint32_t i = 0; i < g.n_tokens; i++)
        g.types[i] = TOK_UNUSED;
    if (gather_tokens(&g, vocab, added, path, e))
        return -1;

    size_t bytes = 0, n_merges = merges ? json_object_array_length(merges) : 0;
    if (measure_merges(merges, path, &bytes, e))
        return -1;
    for (uint32_t i = 0; i < g.n_tokens; i++)
        bytes += g.tokens[i].ptr ? g.tokens[i].len + 1 : sizeof "[PAD16777216]";
    o->arena = malloc(bytes ? bytes : 1);
    o->merges = malloc((n_merges ? n_merges : 1) * sizeof *o->merges);
    if (!o->arena || !o->merges)
        return err_set(e, "%s: out of memory", path);

    char *at = o->arena;
    for (uint32_t i = 0; i < g.n_tokens; i++) {
        if (g.tokens[i].ptr) {
            at = arena_put(at, g.tokens[i].ptr, g.tokens[i].len, &g.tokens[i]);
        } else {
            int n = snprintf(at, sizeof "[PAD16777216]", "[PAD%u]", i);
            g.tokens[i] = (struct strview){at, (size_t)n};
            at += n + 1;
        }
    }
    for (size_t i = 0; i < n_merges; i++) {
        struct json_object *m = json_object_array_get_idx(merges, i);
        if (json_object_is_type(m, json_type_string)) {
            at = arena_put(at, json_object_get_string(m), (size_t)json_object_get_string_len(m),
                           &o->merges[i]);
        } else {
            struct json_object *l = json_object_array_get_idx(m, 0);
            struct json_object *r = json_object_array_get_idx(m, 1);
            size_t nl = (size_t)json_object_get_string_len(l);
            size_t nr = (size_t)json_object_get_string_len(r);
            char *start = at;
            memcpy(at, json_object_get_string(l), nl);
            at[nl] = ' ';
            memcpy(at + nl + 1, json_object_get_string(r), nr);
            at[nl + 1 + nr] = 0;
            o->merges[i] = (struct strview){start, nl + 1 + nr};
            at += nl + nr + 2;
        }
    }

    o->src = (struct tok_source){
        .n_tokens = g.n_tokens,
        .tokens = o->tokens,
        .types = o->types,
        .n_merges = n_merges,
        .merges = o->merges,
    };
    o->src.bos_id = find_content(o, "<|begin_of_text|>");
    o->src.eos_id = find_content(o, "<|end_of_text|>");
    o->src.eot_id = find_content(o, "<|eot_id|>");
    o->src.add_bos = o->src.bos_id >= 0;
    return 0;
}

int tok_source_from_hf_json(struct tok_source_owned *out, const char *path, struct errbuf *e)
{
    memset(out, 0, sizeof *out);
    struct json_object *root = parse_json(path, e);
    if (!root)
        return -1;
    int rc = fill(out, root, path, e);
    json_object_put(root);
    if (rc)
        tok_source_owned_free(out);
    return rc;
}

void tok_source_owned_free(struct tok_source_owned *o)
{
    if (!o)
        return;
    free(o->arena);
    free(o->tokens);
    free(o->types);
    free(o->merges);
    memset(o, 0, sizeof *o);
}

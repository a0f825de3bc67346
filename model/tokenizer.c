/* Llama-3 byte-level BPE, behaving like llama.cpp's "llama-bpe" tokenizer: special
 * tokens are split out first, the rest is cut into pieces by the Llama-3 regex, each
 * piece is written in the GPT-2 byte alphabet and merged by rank. */
#include "model/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

static const char LLAMA3_PATTERN[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* Only generation-ending control tokens are recognised by text, so that a vocabulary
 * whose header forgot eot_id still stops at the end of a turn. */
static const char *const EOG_TEXTS[] = {"<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"};
#define MAX_EOG 8

struct vocab_slot {
    uint32_t hash;
    int32_t id; /* -1: empty */
};

/* Merges are keyed by the ids of their halves, so that BPE works on integers and a
 * merge's result is known without building the joined string. */
struct merge_slot {
    int32_t left; /* -1: empty */
    int32_t right;
    int32_t result;
    uint32_t rank;
};

struct tokenizer {
    uint32_t n_tokens;
    char *text;          /* every token's vocabulary string, back to back */
    uint32_t *text_off;  /* n_tokens + 1 */
    char *bytes;         /* every token's decoded bytes (literal text for specials) */
    uint32_t *bytes_off; /* n_tokens + 1 */
    uint8_t *types;
    size_t max_bytes;

    struct vocab_slot *vocab;
    uint32_t vocab_mask;
    struct merge_slot *merges;
    uint32_t merge_mask;
    unsigned merge_bits;

    /* The token for each single byte, or -1 when the vocabulary lacks it. */
    int32_t byte_tok[256];

    /* Tokens matched literally under parse_special, grouped by first byte and longest
     * first within a group, so the first hit at a position is the longest. */
    int32_t *special;
    uint32_t special_start[257];

    int32_t bos, eos, eot;
    bool add_bos;
    int32_t eog[MAX_EOG];
    int n_eog;

    pcre2_code *re;
};

/* ---- UTF-8 ---- */

/* Length of the valid character at s, or 0 when s starts no valid one (overlong forms,
 * surrogates and code points past U+10FFFF included). */
static size_t utf8_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
    uint8_t c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t need;
    uint32_t v;
    if (c >= 0xc2 && c <= 0xdf) {
        need = 1;
        v = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        v = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        v = c & 0x07;
    } else {
        return 0;
    }
    if (n <= need)
        return 0;
    for (size_t k = 1; k <= need; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return 0;
        v = v << 6 | (s[k] & 0x3f);
    }
    if (need == 2 && (v < 0x800 || (v >= 0xd800 && v <= 0xdfff)))
        return 0;
    if (need == 3 && (v < 0x10000 || v > 0x10ffff))
        return 0;
    *cp = v;
    return need + 1;
}

/* Offset of the first invalid byte, or n when all of s is valid UTF-8. */
static size_t utf8_check(const char *s, size_t n)
{
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = utf8_decode(u + i, n - i, &cp);
        if (!k)
            return i;
        i += k;
    }
    return n;
}

static size_t utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* ---- hash tables ---- */

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv(uint64_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= FNV_PRIME;
    }
    return h;
}

static uint32_t fold(uint64_t h)
{
    return (uint32_t)(h ^ h >> 32);
}

static struct strview tok_text(const struct tokenizer *t, int32_t id)
{
    return (struct strview){t->text + t->text_off[id], t->text_off[id + 1] - t->text_off[id]};
}

static struct strview tok_bytes(const struct tokenizer *t, int32_t id)
{
    return (struct strview){t->bytes + t->bytes_off[id], t->bytes_off[id + 1] - t->bytes_off[id]};
}

/* Finds the token spelled a followed by b (b may be empty), without joining them. */
static int32_t vocab_find2(const struct tokenizer *t, const char *a, size_t na, const char *b,
                           size_t nb)
{
    uint32_t h = fold(fnv(fnv(FNV_OFFSET, a, na), b, nb));
    for (uint32_t i = h & t->vocab_mask;; i = (i + 1) & t->vocab_mask) {
        const struct vocab_slot *s = &t->vocab[i];
        if (s->id < 0)
            return -1;
        if (s->hash != h)
            continue;
        struct strview v = tok_text(t, s->id);
        if (v.len == na + nb && (na == 0 || memcmp(v.ptr, a, na) == 0) &&
            (nb == 0 || memcmp(v.ptr + na, b, nb) == 0))
            return s->id;
    }
}

/* A later duplicate replaces an earlier one, as llama.cpp's token_to_id map does. */
static void vocab_insert(struct tokenizer *t, int32_t id)
{
    struct strview v = tok_text(t, id);
    uint32_t h = fold(fnv(FNV_OFFSET, v.ptr, v.len));
    for (uint32_t i = h & t->vocab_mask;; i = (i + 1) & t->vocab_mask) {
        struct vocab_slot *s = &t->vocab[i];
        if (s->id < 0) {
            s->hash = h;
            s->id = id;
            return;
        }
        if (s->hash == h) {
            struct strview o = tok_text(t, s->id);
            if (o.len == v.len && (v.len == 0 || memcmp(o.ptr, v.ptr, v.len) == 0)) {
                s->id = id;
                return;
            }
        }
    }
}

static uint32_t pair_hash(int32_t l, int32_t r, unsigned bits)
{
    uint64_t x = ((uint64_t)(uint32_t)l << 32 | (uint32_t)r) * 0x9e3779b97f4a7c15ull;
    return (uint32_t)(x >> (64 - bits));
}

static const struct merge_slot *merge_find(const struct tokenizer *t, int32_t l, int32_t r)
{
    for (uint32_t i = pair_hash(l, r, t->merge_bits);; i = (i + 1) & t->merge_mask) {
        const struct merge_slot *s = &t->merges[i];
        if (s->left < 0)
            return NULL;
        if (s->left == l && s->right == r)
            return s;
    }
}

/* The first occurrence of a pair keeps its rank: later duplicates could never win. */
static void merge_insert(struct tokenizer *t, int32_t l, int32_t r, int32_t result, uint32_t rank)
{
    for (uint32_t i = pair_hash(l, r, t->merge_bits);; i = (i + 1) & t->merge_mask) {
        struct merge_slot *s = &t->merges[i];
        if (s->left < 0) {
            *s = (struct merge_slot){l, r, result, rank};
            return;
        }
        if (s->left == l && s->right == r)
            return;
    }
}

/* Smallest power of two >= n * 3 / 2, at least 16: keeps linear probes short. */
static unsigned table_bits(uint64_t n)
{
    unsigned bits = 4;
    while (((uint64_t)1 << bits) < n + n / 2)
        bits++;
    return bits;
}

/* ---- construction ---- */

static bool type_is_special(int type)
{
    return type == TOK_CONTROL || type == TOK_USER_DEFINED;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Writes the bytes a token spelled v stands for; returns how many (never more than v.len). */
static size_t decode_token_text(struct strview v, int type, char *out)
{
    if (type == TOK_CONTROL || type == TOK_USER_DEFINED || type == TOK_UNKNOWN ||
        type == TOK_UNUSED) {
        if (v.len)
            memcpy(out, v.ptr, v.len);
        return v.len;
    }
    if (type == TOK_BYTE && v.len == 6 && memcmp(v.ptr, "<0x", 3) == 0 && v.ptr[5] == '>') {
        int hi = hex_digit(v.ptr[3]), lo = hex_digit(v.ptr[4]);
        if (hi >= 0 && lo >= 0) {
            out[0] = (char)(hi << 4 | lo);
            return 1;
        }
    }
    const uint8_t *u = (const uint8_t *)v.ptr;
    size_t n = 0;
    for (size_t i = 0; i < v.len;) {
        uint32_t cp;
        size_t k = utf8_decode(u + i, v.len - i, &cp);
        int b = k ? tok_codepoint_to_byte(cp) : -1;
        if (b >= 0) {
            out[n++] = (char)b;
        } else {
            /* Not in the byte alphabet: pass it through rather than lose it. */
            size_t m = k ? k : 1;
            memcpy(out + n, v.ptr + i, m);
            n += m;
            k = m;
        }
        i += k;
    }
    return n;
}

static int build_text(struct tokenizer *t, const struct tok_source *src, struct errbuf *e)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < src->n_tokens; i++) {
        if (!src->tokens[i].ptr && src->tokens[i].len)
            return err_set(e, "tokenizer: token %u has no text", i);
        total += src->tokens[i].len;
    }
    if (total >= UINT32_MAX)
        return err_set(e, "tokenizer: vocabulary text too large (%llu bytes)",
                       (unsigned long long)total);
    t->text = malloc(total + 1);
    t->bytes = malloc(total + 1);
    t->text_off = malloc(((size_t)src->n_tokens + 1) * sizeof *t->text_off);
    t->bytes_off = malloc(((size_t)src->n_tokens + 1) * sizeof *t->bytes_off);
    t->types = malloc(src->n_tokens);
    if (!t->text || !t->bytes || !t->text_off || !t->bytes_off || !t->types)
        return err_set(e, "tokenizer: out of memory");
    uint32_t off = 0, boff = 0;
    for (uint32_t i = 0; i < src->n_tokens; i++) {
        struct strview v = src->tokens[i];
        int type = src->types ? src->types[i] : TOK_NORMAL;
        t->types[i] = (type >= 0 && type <= 255) ? (uint8_t)type : TOK_NORMAL;
        t->text_off[i] = off;
        if (v.len)
            memcpy(t->text + off, v.ptr, v.len);
        off += (uint32_t)v.len;
        t->bytes_off[i] = boff;
        size_t nb = decode_token_text(v, t->types[i], t->bytes + boff);
        boff += (uint32_t)nb;
        if (nb > t->max_bytes)
            t->max_bytes = nb;
    }
    t->text_off[src->n_tokens] = off;
    t->bytes_off[src->n_tokens] = boff;
    return 0;
}

static int build_vocab(struct tokenizer *t, struct errbuf *e)
{
    unsigned bits = table_bits((uint64_t)t->n_tokens * 4 / 3 + 1);
    t->vocab_mask = (1u << bits) - 1;
    t->vocab = malloc(((size_t)t->vocab_mask + 1) * sizeof *t->vocab);
    if (!t->vocab)
        return err_set(e, "tokenizer: out of memory");
    memset(t->vocab, 0xff, ((size_t)t->vocab_mask + 1) * sizeof *t->vocab);
    for (uint32_t i = 0; i < t->n_tokens; i++)
        vocab_insert(t, (int32_t)i);
    for (unsigned b = 0; b < 256; b++) {
        char buf[4];
        size_t n = utf8_encode(tok_byte_to_codepoint((uint8_t)b), buf);
        t->byte_tok[b] = vocab_find2(t, buf, n, "", 0);
    }
    return 0;
}

static int build_merges(struct tokenizer *t, const struct tok_source *src, struct errbuf *e)
{
    if (src->n_merges > UINT32_MAX / 2)
        return err_set(e, "tokenizer: too many merges (%llu)", (unsigned long long)src->n_merges);
    if (src->n_merges && !src->merges)
        return err_set(e, "tokenizer: merges missing");
    t->merge_bits = table_bits(src->n_merges);
    t->merge_mask = (1u << t->merge_bits) - 1;
    t->merges = malloc(((size_t)t->merge_mask + 1) * sizeof *t->merges);
    if (!t->merges)
        return err_set(e, "tokenizer: out of memory");
    memset(t->merges, 0xff, ((size_t)t->merge_mask + 1) * sizeof *t->merges);
    for (uint64_t r = 0; r < src->n_merges; r++) {
        struct strview m = src->merges[r];
        if (!m.ptr && m.len)
            return err_set(e, "tokenizer: merge %llu has no text", (unsigned long long)r);
        /* Searching from the second byte lets a left half that is itself a space
         * through, as llama.cpp does. */
        const char *sp = m.len > 1 ? memchr(m.ptr + 1, ' ', m.len - 1) : NULL;
        if (!sp)
            return err_set(e, "tokenizer: merge %llu (\"%.*s\") is not \"left right\"",
                           (unsigned long long)r, (int)(m.len > 64 ? 64 : m.len),
                           m.ptr ? m.ptr : "");
        size_t nl = (size_t)(sp - m.ptr), nr = m.len - nl - 1;
        int32_t l = vocab_find2(t, m.ptr, nl, "", 0);
        int32_t rr = vocab_find2(t, sp + 1, nr, "", 0);
        if (l < 0 || rr < 0)
            continue; /* halves that are no tokens can never meet in a piece */
        int32_t res = vocab_find2(t, m.ptr, nl, sp + 1, nr);
        if (res < 0)
            continue; /* a merge into nothing would only lose text */
        merge_insert(t, l, rr, res, (uint32_t)r);
    }
    return 0;
}

static int cmp_special(const void *pa, const void *pb, void *ctx)
{
    const struct tokenizer *t = ctx;
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    struct strview va = tok_text(t, a), vb = tok_text(t, b);
    uint8_t fa = (uint8_t)va.ptr[0], fb = (uint8_t)vb.ptr[0];
    if (fa != fb)
        return fa < fb ? -1 : 1;
    if (va.len != vb.len)
        return va.len > vb.len ? -1 : 1;
    return a < b ? -1 : a > b;
}

static int build_specials(struct tokenizer *t, struct errbuf *e)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < t->n_tokens; i++) {
        struct strview v = tok_text(t, (int32_t)i);
        /* Text that is not valid UTF-8 could split the input inside a character,
         * which the regex must never see. */
        if (type_is_special(t->types[i]) && v.len && utf8_check(v.ptr, v.len) == v.len)
            n++;
    }
    t->special = malloc((n ? n : 1) * sizeof *t->special);
    if (!t->special)
        return err_set(e, "tokenizer: out of memory");
    n = 0;
    for (uint32_t i = 0; i < t->n_tokens; i++) {
        struct strview v = tok_text(t, (int32_t)i);
        if (type_is_special(t->types[i]) && v.len && utf8_check(v.ptr, v.len) == v.len)
            t->special[n++] = (int32_t)i;
    }
    qsort_r(t->special, n, sizeof *t->special, cmp_special, t);
    uint32_t j = 0;
    for (unsigned b = 0; b < 256; b++) {
        t->special_start[b] = j;
        while (j < n && (uint8_t)t->text[t->text_off[t->special[j]]] == b)
            j++;
    }
    t->special_start[256] = n;
    return 0;
}

static void build_eog(struct tokenizer *t)
{
    if (t->eos >= 0)
        t->eog[t->n_eog++] = t->eos;
    if (t->eot >= 0 && t->eot != t->eos)
        t->eog[t->n_eog++] = t->eot;
    for (size_t k = 0; k < sizeof EOG_TEXTS / sizeof EOG_TEXTS[0]; k++) {
        int32_t id = vocab_find2(t, EOG_TEXTS[k], strlen(EOG_TEXTS[k]), "", 0);
        if (id < 0 || t->types[id] != TOK_CONTROL)
            continue;
        bool seen = false;
        for (int i = 0; i < t->n_eog; i++)
            seen |= t->eog[i] == id;
        if (!seen && t->n_eog < MAX_EOG)
            t->eog[t->n_eog++] = id;
    }
}

static int build_regex(struct tokenizer *t, struct errbuf *e)
{
    int code;
    PCRE2_SIZE at;
    t->re = pcre2_compile((PCRE2_SPTR)LLAMA3_PATTERN, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                          &code, &at, NULL);
    if (!t->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return err_set(e, "tokenizer: regex at %zu: %s", (size_t)at, (const char *)msg);
    }
    /* JIT is an optional speed-up: without it the interpreter gives the same pieces. */
    (void)pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE);
    return 0;
}

static bool id_ok_or_absent(int32_t id, uint32_t n)
{
    return id == -1 || (id >= 0 && (uint32_t)id < n);
}

struct tokenizer *tokenizer_new(const struct tok_source *src, struct errbuf *e)
{
    if (!src || !src->n_tokens || !src->tokens) {
        err_set(e, "tokenizer: empty vocabulary");
        return NULL;
    }
    if (src->n_tokens > INT32_MAX - 1) {
        err_set(e, "tokenizer: %u tokens is too many", src->n_tokens);
        return NULL;
    }
    if (!id_ok_or_absent(src->bos_id, src->n_tokens) ||
        !id_ok_or_absent(src->eos_id, src->n_tokens) ||
        !id_ok_or_absent(src->eot_id, src->n_tokens)) {
        err_set(e, "tokenizer: bos/eos/eot id (%d/%d/%d) outside the %u-token vocabulary",
                src->bos_id, src->eos_id, src->eot_id, src->n_tokens);
        return NULL;
    }
    struct tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        err_set(e, "tokenizer: out of memory");
        return NULL;
    }
    t->n_tokens = src->n_tokens;
    t->bos = src->bos_id;
    t->eos = src->eos_id;
    t->eot = src->eot_id;
    t->add_bos = src->add_bos && src->bos_id >= 0;
    if (build_text(t, src, e) || build_vocab(t, e) || build_merges(t, src, e) ||
        build_specials(t, e) || build_regex(t, e)) {
        tokenizer_free(t);
        return NULL;
    }
    build_eog(t);
    return t;
}

void tokenizer_free(struct tokenizer *t)
{
    if (!t)
        return;
    free(t->text);
    free(t->text_off);
    free(t->bytes);
    free(t->bytes_off);
    free(t->types);
    free(t->vocab);
    free(t->merges);
    free(t->special);
    pcre2_code_free(t->re);
    free(t);
}

/* ---- queries ---- */

uint32_t tokenizer_n_vocab(const struct tokenizer *t)
{
    return t->n_tokens;
}

int32_t tokenizer_bos(const struct tokenizer *t)
{
    return t->bos;
}

int32_t tokenizer_eos(const struct tokenizer *t)
{
    return t->eos;
}

bool tokenizer_add_bos(const struct tokenizer *t)
{
    return t->add_bos;
}

size_t tokenizer_max_token_bytes(const struct tokenizer *t)
{
    return t->max_bytes;
}

bool tokenizer_is_eog(const struct tokenizer *t, int32_t id)
{
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id)
            return true;
    return false;
}

int32_t tokenizer_find(const struct tokenizer *t, const char *piece)
{
    return piece ? vocab_find2(t, piece, strlen(piece), "", 0) : -1;
}

/* ---- encoding ---- */

struct sym {
    int32_t id; /* -1: byte without a token; -2: merged into its left neighbour */
    int32_t prev, next;
};

struct cand {
    uint32_t rank;
    int32_t left, right;
    int32_t lid, rid; /* the ids when queued: a mismatch later means it went stale */
};

struct enc {
    const struct tokenizer *t;
    int32_t *ids;
    size_t n_ids, cap_ids;
    struct sym *syms;
    struct cand *heap;
    size_t cap_syms, n_heap;
    char *mapped;
    pcre2_match_data *md;
    struct errbuf *e;
};

static int push_id(struct enc *x, int32_t id)
{
    if (x->n_ids == x->cap_ids) {
        size_t cap = x->cap_ids ? x->cap_ids * 2 : 64;
        int32_t *p = realloc(x->ids, cap * sizeof *p);
        if (!p)
            return err_set(x->e, "tokenizer: out of memory");
        x->ids = p;
        x->cap_ids = cap;
    }
    x->ids[x->n_ids++] = id;
    return 0;
}

static int reserve_piece(struct enc *x, size_t n)
{
    if (n <= x->cap_syms)
        return 0;
    if (n > SIZE_MAX / (3 * sizeof(struct cand)) || n > INT32_MAX)
        return err_set(x->e, "tokenizer: piece of %zu bytes is too long", n);
    size_t cap = x->cap_syms ? x->cap_syms : 64;
    while (cap < n)
        cap *= 2;
    struct sym *s = realloc(x->syms, cap * sizeof *s);
    if (s)
        x->syms = s;
    struct cand *h = realloc(x->heap, 3 * cap * sizeof *h);
    if (h)
        x->heap = h;
    char *m = realloc(x->mapped, 2 * cap);
    if (m)
        x->mapped = m;
    if (!s || !h || !m)
        return err_set(x->e, "tokenizer: out of memory");
    x->cap_syms = cap;
    return 0;
}

/* Lower rank first; among equal ranks the leftmost pair, as HF and llama.cpp do. */
static bool cand_before(const struct cand *a, const struct cand *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->left < b->left;
}

static void heap_push(struct enc *x, struct cand c)
{
    size_t i = x->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_before(&c, &x->heap[p]))
            break;
        x->heap[i] = x->heap[p];
        i = p;
    }
    x->heap[i] = c;
}

static struct cand heap_pop(struct enc *x)
{
    struct cand top = x->heap[0];
    struct cand last = x->heap[--x->n_heap];
    size_t i = 0, n = x->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && cand_before(&x->heap[c + 1], &x->heap[c]))
            c++;
        if (!cand_before(&x->heap[c], &last))
            break;
        x->heap[i] = x->heap[c];
        i = c;
    }
    if (n)
        x->heap[i] = last;
    return top;
}

static void queue_pair(struct enc *x, int32_t l, int32_t r)
{
    if (l < 0 || r < 0)
        return;
    int32_t lid = x->syms[l].id, rid = x->syms[r].id;
    if (lid < 0 || rid < 0)
        return;
    const struct merge_slot *m = merge_find(x->t, lid, rid);
    if (m)
        heap_push(x, (struct cand){m->rank, l, r, lid, rid});
}

static int bpe_piece(struct enc *x, const char *p, size_t n)
{
    const struct tokenizer *t = x->t;
    if (n == 0)
        return 0;
    if (reserve_piece(x, n))
        return -1;
    size_t nm = 0;
    for (size_t i = 0; i < n; i++)
        nm += utf8_encode(tok_byte_to_codepoint((uint8_t)p[i]), x->mapped + nm);
    /* llama-bpe ignores merges when the whole piece is a token. */
    int32_t whole = vocab_find2(t, x->mapped, nm, "", 0);
    if (whole >= 0)
        return push_id(x, whole);

    struct sym *s = x->syms;
    for (size_t i = 0; i < n; i++)
        s[i] = (struct sym){t->byte_tok[(uint8_t)p[i]], (int32_t)i - 1,
                            i + 1 < n ? (int32_t)i + 1 : -1};
    x->n_heap = 0;
    for (size_t i = 0; i + 1 < n; i++)
        queue_pair(x, (int32_t)i, (int32_t)i + 1);
    while (x->n_heap) {
        struct cand c = heap_pop(x);
        struct sym *l = &s[c.left], *r = &s[c.right];
        if (l->id != c.lid || l->next != c.right || r->id != c.rid)
            continue;
        l->id = merge_find(t, c.lid, c.rid)->result;
        l->next = r->next;
        if (r->next >= 0)
            s[r->next].prev = c.left;
        r->id = -2;
        queue_pair(x, l->prev, c.left);
        queue_pair(x, c.left, l->next);
    }
    for (int32_t i = 0; i >= 0; i = s[i].next)
        if (s[i].id >= 0 && push_id(x, s[i].id))
            return -1;
    return 0;
}

static int pcre_fail(struct enc *x, int rc)
{
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof msg);
    return err_set(x->e, "tokenizer: regex match failed: %s", (const char *)msg);
}

/* Pre-tokenizes one stretch of plain text; it is matched on its own so that the
 * lookahead in \s+(?!\S) stops at a special token, as in llama.cpp. */
static int encode_fragment(struct enc *x, const char *s, size_t n)
{
    size_t off = 0;
    while (off < n) {
        int rc = pcre2_match(x->t->re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, x->md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(x->t->re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                             x->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH)
            return bpe_piece(x, s + off, n - off);
        if (rc < 0)
            return pcre_fail(x, rc);
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(x->md);
        size_t a = ov[0], b = ov[1];
        /* Text the pattern skips stays a piece of its own (HF's "Isolated" split). */
        if (a > off && bpe_piece(x, s + off, a - off))
            return -1;
        if (b <= a) {
            if (a >= n)
                break;
            uint32_t cp;
            b = a + utf8_decode((const uint8_t *)s + a, n - a, &cp);
        }
        if (bpe_piece(x, s + a, b - a))
            return -1;
        off = b;
    }
    return 0;
}

static int32_t special_at(const struct tokenizer *t, const char *s, size_t n, size_t *len)
{
    uint8_t f = (uint8_t)s[0];
    for (uint32_t j = t->special_start[f]; j < t->special_start[f + 1]; j++) {
        struct strview v = tok_text(t, t->special[j]);
        if (v.len <= n && memcmp(v.ptr, s, v.len) == 0) {
            *len = v.len;
            return t->special[j];
        }
    }
    return -1;
}

static int encode_text(struct enc *x, const char *text, size_t len, bool parse_special)
{
    if (!parse_special)
        return encode_fragment(x, text, len);
    size_t start = 0;
    for (size_t i = 0; i < len;) {
        size_t n;
        int32_t id = special_at(x->t, text + i, len - i, &n);
        if (id < 0) {
            i++;
            continue;
        }
        if (encode_fragment(x, text + start, i - start) || push_id(x, id))
            return -1;
        i += n;
        start = i;
    }
    return encode_fragment(x, text + start, len - start);
}

int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, bool add_bos,
                     bool parse_special, int32_t **ids, size_t *n_ids, struct errbuf *e)
{
    *ids = NULL;
    *n_ids = 0;
    if (!text && len)
        return err_set(e, "text: NULL with length %zu", len);
    size_t bad = utf8_check(text, len);
    if (bad < len)
        return err_set(e, "text: invalid UTF-8 at byte %zu", bad);
    if (add_bos && t->bos < 0)
        return err_set(e, "tokenizer: BOS requested but the vocabulary has none");
    struct enc x = {.t = t, .e = e};
    x.md = pcre2_match_data_create_from_pattern(t->re, NULL);
    int rc = -1;
    if (!x.md)
        err_set(e, "tokenizer: out of memory");
    else if ((!add_bos || !push_id(&x, t->bos)) &&
             (len == 0 || !encode_text(&x, text, len, parse_special)))
        rc = 0;
    pcre2_match_data_free(x.md);
    free(x.syms);
    free(x.heap);
    free(x.mapped);
    if (rc == 0 && !x.ids) {
        /* Empty text still gives a pointer, so callers need no special case. */
        x.ids = malloc(sizeof *x.ids);
        if (!x.ids)
            rc = err_set(e, "tokenizer: out of memory");
    }
    if (rc) {
        free(x.ids);
        return -1;
    }
    *ids = x.ids;
    *n_ids = x.n_ids;
    return 0;
}

/* ---- decoding ---- */

/* What id prints as; empty for a control token unless render_special. */
static bool token_piece(const struct tokenizer *t, int32_t id, bool render_special,
                        struct strview *out)
{
    if (id < 0 || (uint32_t)id >= t->n_tokens)
        return false;
    int type = t->types[id];
    if (!render_special &&
        (type == TOK_CONTROL || type == TOK_UNKNOWN || type == TOK_UNUSED)) {
        *out = (struct strview){t->bytes, 0};
        return true;
    }
    *out = tok_bytes(t, id);
    return true;
}

int tokenizer_token_bytes(const struct tokenizer *t, int32_t id, bool render_special, char *buf,
                          size_t cap)
{
    struct strview v;
    if (!token_piece(t, id, render_special, &v))
        return -1;
    if (v.len)
        memcpy(buf, v.ptr, v.len < cap ? v.len : cap);
    return (int)v.len;
}

char *tokenizer_decode(const struct tokenizer *t, const int32_t *ids, size_t n, bool render_special)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        struct strview v;
        if (!token_piece(t, ids[i], render_special, &v))
            return NULL;
        if (v.len > SIZE_MAX - 1 - total)
            return NULL;
        total += v.len;
    }
    char *out = malloc(total + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        struct strview v;
        token_piece(t, ids[i], render_special, &v);
        if (v.len)
            memcpy(out + o, v.ptr, v.len);
        o += v.len;
    }
    out[o] = 0;
    return out;
}

/* How many trailing bytes of a followed by b begin a character not finished yet. */
static size_t incomplete_tail(const char *a, size_t na, const char *b, size_t nb)
{
    size_t n = na + nb;
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        size_t i = n - k;
        uint8_t c = (uint8_t)(i < na ? a[i] : b[i - na]);
        if ((c & 0xc0) == 0x80)
            continue;
        size_t want = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 1;
        if (c >= 0xf5)
            want = 1;
        return want > k ? k : 0;
    }
    return 0;
}

size_t tok_stream_push(const struct tokenizer *t, struct tok_stream *s, int32_t id, char *out,
                       size_t cap)
{
    struct strview v;
    if (!token_piece(t, id, false, &v) || !v.len)
        return 0;
    size_t hold = incomplete_tail(s->pending, s->n_pending, v.ptr, v.len);
    size_t emit = s->n_pending + v.len - hold;
    size_t o = 0;
    for (size_t i = 0; i < emit && o < cap; i++)
        out[o++] = i < s->n_pending ? s->pending[i] : v.ptr[i - s->n_pending];
    char keep[sizeof s->pending];
    for (size_t i = 0; i < hold; i++) {
        size_t j = emit + i;
        keep[i] = j < s->n_pending ? s->pending[j] : v.ptr[j - s->n_pending];
    }
    memcpy(s->pending, keep, hold);
    s->n_pending = hold;
    return o;
}

size_t tok_stream_flush(struct tok_stream *s, char *out, size_t cap)
{
    if (!s->n_pending)
        return 0;
    s->n_pending = 0;
    if (cap < 3)
        return 0;
    memcpy(out, "\xef\xbf\xbd", 3);
    return 3;
}

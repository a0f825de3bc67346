/* Tokenizer tests: llama.cpp's llama-bpe vectors against the real Llama-3 tokenizer.json,
 * plus special tokens, streaming, errors and a hand-made vocabulary for merge order. */
#include "model/clock.h"
#include "model/tokenizer.h"
#include "model/gguf.h"
#include "model/vocab_gguf.h"
#include "tests/check.h"
#include "tests/util.h"

#include <stdint.h>
#include <string.h>
#include <unistd.h>

#ifndef BITNET_DEFAULT_TOKENIZER
#error "BITNET_DEFAULT_TOKENIZER must name the Llama-3 tokenizer.json"
#endif

/* Encodes without BOS and compares with the expected ids; returns the ids for reuse. */
static bool encode_is(const struct tokenizer *t, const char *s, size_t len, bool special,
                      const int32_t *want, size_t n_want)
{
    struct errbuf e = {{0}};
    int32_t *ids;
    size_t n;
    if (tokenizer_encode(t, s, len, false, special, &ids, &n, &e)) {
        fprintf(stderr, "encode failed: %s\n", e.msg);
        return false;
    }
    bool ok = n == n_want && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
    if (!ok) {
        fprintf(stderr, "got     :");
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\nexpected:");
        for (size_t i = 0; i < n_want; i++)
            fprintf(stderr, " %d", want[i]);
        fputc('\n', stderr);
    }
    free(ids);
    return ok;
}

/* Compares piece by piece, since a NUL in the text would end tokenizer_decode's string. */
static bool roundtrips(const struct tokenizer *t, const char *s, size_t len)
{
    struct errbuf e = {{0}};
    int32_t *ids;
    size_t n;
    if (tokenizer_encode(t, s, len, false, false, &ids, &n, &e))
        return false;
    size_t at = 0;
    bool ok = true;
    char piece[300];
    for (size_t i = 0; i < n && ok; i++) {
        int k = tokenizer_token_bytes(t, ids[i], false, piece, sizeof piece);
        ok = k > 0 && (size_t)k <= len - at && memcmp(piece, s + at, (size_t)k) == 0;
        at += ok ? (size_t)k : 0;
    }
    ok &= at == len;
    if (ok && !memchr(s, 0, len)) {
        char *back = tokenizer_decode(t, ids, n, false);
        ok = back && strlen(back) == len && memcmp(back, s, len) == 0;
        free(back);
    }
    free(ids);
    return ok;
}

/* The .inp file is "string\n__ggml_vocab_test__\n" repeated: the separator includes
 * the newline that ends each string, so a string can itself be empty or newlines. */
static void test_vectors(const struct tokenizer *t, const char *through)
{
    if (shared_data_missing()) {
        char what[300];
        snprintf(what, sizeof what, "llama.cpp's llama-bpe tokenizer vectors through %s",
                 through);
        check_not_run(what, "tokenizer/llama-bpe.{inp,out}");
        return;
    }
    size_t ni, no;
    char *inp = slurp(SHARED_DATA("tokenizer/llama-bpe.inp"), &ni);
    char *out = slurp(SHARED_DATA("tokenizer/llama-bpe.out"), &no);
    CHECK(inp && out, "cannot read the llama-bpe vectors");
    if (!inp || !out) {
        free(inp);
        free(out);
        return;
    }
    static const char sep[] = "\n__ggml_vocab_test__\n";
    const size_t nsep = sizeof sep - 1;
    size_t lines = 0;
    for (size_t i = 0; i < no; i++)
        lines += out[i] == '\n';
    char *ip = inp, *op = out;
    int n_strings = 0, n_ok = 0, n_rt = 0;
    while (ip < inp + ni) {
        char *end = memmem(ip, (size_t)(inp + ni - ip), sep, nsep);
        CHECK(end, "string %d has no separator after it", n_strings + 1);
        if (!end)
            break;
        size_t len = (size_t)(end - ip);
        char *eol = strchr(op, '\n');
        CHECK(eol, "llama-bpe.out has fewer lines than strings (%d)", n_strings + 1);
        if (!eol)
            break;
        *eol = 0;
        int32_t want[4096];
        size_t n_want = 0;
        for (char *p = op, *q; n_want < 4096; p = q) {
            long v = strtol(p, &q, 10);
            if (q == p)
                break;
            want[n_want++] = (int32_t)v;
        }
        n_strings++;
        bool ok = encode_is(t, ip, len, false, want, n_want);
        CHECK(ok, "vector %d (\"%.*s\") encodes wrongly", n_strings, (int)(len > 60 ? 60 : len),
              ip);
        n_ok += ok;
        char *back = tokenizer_decode(t, want, n_want, false);
        bool rt = back && strlen(back) == len && memcmp(back, ip, len) == 0;
        CHECK(rt, "vector %d does not decode back byte for byte", n_strings);
        n_rt += rt;
        free(back);
        ip = end + nsep;
        op = eol + 1;
    }
    CHECK((size_t)n_strings == lines, "%d strings but %zu expected lines", n_strings, lines);
    CHECK(n_strings == 46, "%d strings", n_strings);
    printf("llama-bpe vectors: %d strings, %d encode exactly, %d decode back\n", n_strings, n_ok,
           n_rt);
    free(inp);
    free(out);
}

static void test_bos_and_special(const struct tokenizer *t)
{
    struct errbuf e = {{0}};
    int32_t *ids;
    size_t n;
    CHECK(tokenizer_bos(t) == 128000 && tokenizer_eos(t) == 128001, "bos/eos");
    CHECK(tokenizer_add_bos(t), "Llama-3 adds BOS");
    CHECK(tokenizer_encode(t, "Hello world", 11, true, false, &ids, &n, &e) == 0, "%s", e.msg);
    CHECK(n == 3 && ids[0] == 128000 && ids[1] == 9906 && ids[2] == 1917, "BOS + Hello world");
    free(ids);
    CHECK(tokenizer_encode(t, "", 0, true, false, &ids, &n, &e) == 0 && n == 1 && ids[0] == 128000,
          "BOS alone for empty text");
    free(ids);
    CHECK(tokenizer_encode(t, "", 0, false, false, &ids, &n, &e) == 0 && n == 0, "empty text");
    free(ids);

    const char *prompt = "User: hi<|eot_id|>Assistant:";
    CHECK(tokenizer_encode(t, prompt, strlen(prompt), true, true, &ids, &n, &e) == 0, "%s", e.msg);
    size_t at = n;
    for (size_t i = 0; i < n; i++)
        if (ids[i] == 128009)
            at = i;
    CHECK(at < n, "parse_special makes <|eot_id|> one token");
    char *back = tokenizer_decode(t, ids, n, true);
    CHECK(back && strcmp(back, "<|begin_of_text|>User: hi<|eot_id|>Assistant:") == 0,
          "render_special decode: %s", back ? back : "(null)");
    free(back);
    back = tokenizer_decode(t, ids, n, false);
    CHECK(back && strcmp(back, "User: hi" "Assistant:") == 0, "plain decode hides control tokens");
    free(back);
    free(ids);

    CHECK(tokenizer_encode(t, prompt, strlen(prompt), false, false, &ids, &n, &e) == 0, "%s",
          e.msg);
    bool has = false;
    for (size_t i = 0; i < n; i++)
        has |= ids[i] >= 128000;
    CHECK(!has && n > 3, "without parse_special <|eot_id|> is plain text");
    back = tokenizer_decode(t, ids, n, false);
    CHECK(back && strcmp(back, prompt) == 0, "plain special text decodes back");
    free(back);
    free(ids);

    /* Two specials back to back and one at each end. */
    const char *edge = "<|begin_of_text|><|start_header_id|>x<|end_header_id|>";
    CHECK(tokenizer_encode(t, edge, strlen(edge), false, true, &ids, &n, &e) == 0, "%s", e.msg);
    CHECK(n == 4 && ids[0] == 128000 && ids[1] == 128006 && ids[2] == 87 && ids[3] == 128007,
          "adjacent specials (n=%zu)", n);
    free(ids);
    /* A broken special is plain text even with parse_special. */
    const char *broken = "<|eot_id|";
    CHECK(tokenizer_encode(t, broken, strlen(broken), false, true, &ids, &n, &e) == 0, "%s", e.msg);
    has = false;
    for (size_t i = 0; i < n; i++)
        has |= ids[i] >= 128000;
    CHECK(!has, "a partial special is text");
    free(ids);

    CHECK(tokenizer_is_eog(t, 128001) && tokenizer_is_eog(t, 128009),
          "eos and eot end a generation");
    /* Llama-3.0 has no <|eom_id|>: 128008 is a reserved token there. */
    CHECK(!tokenizer_is_eog(t, 128000) && !tokenizer_is_eog(t, 128008) &&
              !tokenizer_is_eog(t, 9906) && !tokenizer_is_eog(t, -1),
          "bos, reserved and text tokens do not");
}

static void test_find_and_bytes(const struct tokenizer *t)
{
    CHECK(tokenizer_n_vocab(t) == 128256, "n_vocab %u", tokenizer_n_vocab(t));
    CHECK(tokenizer_find(t, "Hello") == 9906, "find Hello");
    CHECK(tokenizer_find(t, "\xc4\xa0world") == 1917, "find Ġworld");
    CHECK(tokenizer_find(t, "<|eot_id|>") == 128009, "find <|eot_id|>");
    CHECK(tokenizer_find(t, "no such token, surely") == -1, "find absent");
    CHECK(tokenizer_find(t, "") == -1, "find empty");
    CHECK(tokenizer_max_token_bytes(t) == 128, "max token bytes %zu", tokenizer_max_token_bytes(t));

    char buf[300];
    CHECK(tokenizer_token_bytes(t, 220, false, buf, sizeof buf) == 1 && buf[0] == ' ',
          "Ġ is a space");
    CHECK(tokenizer_token_bytes(t, 198, false, buf, sizeof buf) == 1 && buf[0] == '\n',
          "Ċ is a newline");
    CHECK(tokenizer_token_bytes(t, 128009, false, buf, sizeof buf) == 0, "control hidden");
    CHECK(tokenizer_token_bytes(t, 128009, true, buf, sizeof buf) == 10 &&
              memcmp(buf, "<|eot_id|>", 10) == 0, "control rendered");
    CHECK(tokenizer_token_bytes(t, 128256, false, buf, sizeof buf) == -1, "id past the end");
    CHECK(tokenizer_token_bytes(t, -5, false, buf, sizeof buf) == -1, "negative id");
    memset(buf, 'z', sizeof buf);
    CHECK(tokenizer_token_bytes(t, 1917, false, buf, 3) == 6 && memcmp(buf, " wo", 3) == 0 &&
              buf[3] == 'z', "truncated copy reports the full length");
    int32_t bad[] = {9906, 999999};
    CHECK(tokenizer_decode(t, bad, 2, false) == NULL, "decode of a bad id");

    /* Every byte value has a token and comes back through the byte map. */
    int mapped = 0;
    for (unsigned b = 0; b < 256; b++) {
        uint32_t cp = tok_byte_to_codepoint((uint8_t)b);
        mapped += tok_codepoint_to_byte(cp) == (int)b;
    }
    CHECK(mapped == 256, "byte map is a bijection (%d)", mapped);
    CHECK(tok_byte_to_codepoint(' ') == 0x120 && tok_byte_to_codepoint('\n') == 0x10a &&
              tok_byte_to_codepoint(0xad) == 0x143 && tok_byte_to_codepoint('A') == 'A',
          "GPT-2 code points");
    CHECK(tok_codepoint_to_byte(0x144) == -1 && tok_codepoint_to_byte(0xad) == -1, "unmapped");
}

static void test_invalid_utf8(const struct tokenizer *t)
{
    static const struct {
        const char *s;
        size_t len, at;
    } bad[] = {
        {"abc\xff", 4, 3},          {"\xc0\x80", 2, 0},         {"ok \xe2\x82", 5, 3},
        {"\xed\xa0\x80 x", 5, 0},   {"x\xf4\x90\x80\x80", 5, 1}, {"\x80", 1, 0},
        {"Hello world, this is fine until here\xc3(", 38, 36},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct errbuf e = {{0}};
        int32_t *ids = (int32_t *)&e;
        size_t n = 7;
        int rc = tokenizer_encode(t, bad[i].s, bad[i].len, false, true, &ids, &n, &e);
        char want[64];
        snprintf(want, sizeof want, "invalid UTF-8 at byte %zu", bad[i].at);
        CHECK(rc == -1 && ids == NULL && n == 0 && strstr(e.msg, want), "case %zu: %s", i, e.msg);
    }
    /* A NUL byte is valid UTF-8 and must survive. */
    CHECK(roundtrips(t, "a\0b", 3), "embedded NUL");
}

static bool complete_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
        if (!k || i + k > n)
            return false;
        for (size_t j = 1; j < k; j++)
            if (((unsigned char)s[i + j] & 0xc0) != 0x80)
                return false;
        i += k;
    }
    return true;
}

static void test_stream(const struct tokenizer *t)
{
    /* The llama and the flag are written as several byte tokens each. */
    const char *text = "Llamas \xf0\x9f\xa6\x99 and flags \xf0\x9f\x87\xab\xf0\x9f\x87\xb7 "
                       "\xe2\x80\x94 caf\xc3\xa9!";
    struct errbuf e = {{0}};
    int32_t *ids;
    size_t n;
    CHECK(tokenizer_encode(t, text, strlen(text), false, false, &ids, &n, &e) == 0, "%s", e.msg);
    int split = 0;
    char piece[300];
    for (size_t i = 0; i < n; i++) {
        int k = tokenizer_token_bytes(t, ids[i], false, piece, sizeof piece);
        split += k > 0 && !complete_utf8(piece, (size_t)k);
    }
    CHECK(split >= 2, "the test text should split characters across tokens (%d)", split);

    struct tok_stream s = {{0}, 0};
    char out[4096];
    size_t o = 0;
    bool whole = true;
    for (size_t i = 0; i < n; i++) {
        size_t k = tok_stream_push(t, &s, ids[i], out + o, 264);
        whole &= complete_utf8(out + o, k);
        o += k;
    }
    o += tok_stream_flush(&s, out + o, 8);
    CHECK(whole, "a push never emits part of a character");
    char *full = tokenizer_decode(t, ids, n, false);
    CHECK(full && o == strlen(full) && memcmp(out, full, o) == 0, "stream equals full decode");
    CHECK(full && strcmp(full, text) == 0, "full decode equals text");
    free(full);
    free(ids);

    /* An unfinished character at the end becomes U+FFFD. */
    int32_t first = tokenizer_find(t, "\xc3\xb0\xc5\x81"); /* bytes F0 9F */
    CHECK(first >= 0, "token for F0 9F");
    s = (struct tok_stream){{0}, 0};
    CHECK(tok_stream_push(t, &s, first, out, 264) == 0 && s.n_pending == 2, "held back");
    CHECK(tok_stream_flush(&s, out, 8) == 3 && memcmp(out, "\xef\xbf\xbd", 3) == 0 &&
              s.n_pending == 0, "flushed as U+FFFD");
    CHECK(tok_stream_flush(&s, out, 8) == 0, "nothing left");
}

/* Random valid UTF-8 from a mix of ranges that exercise the regex classes. */
static void test_random_roundtrip(const struct tokenizer *t)
{
    static const uint32_t ranges[][2] = {
        {0x20, 0x7e}, {0x09, 0x0d}, {0xa0, 0x17f}, {0x370, 0x3ff}, {0x400, 0x4ff}, {0x600, 0x6ff},
        {0x900, 0x97f}, {0x3040, 0x30ff}, {0x4e00, 0x4fff}, {0xac00, 0xad00}, {0x1f300, 0x1f6ff},
        {0x2000, 0x206f}, {0x0, 0x7f},
    };
    uint64_t rng = 42;
    int ok = 0, runs = 300;
    char buf[2048];
    for (int r = 0; r < runs; r++) {
        size_t len = 0;
        int chars = 1 + r % 200;
        for (int c = 0; c < chars; c++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            const uint32_t *g = ranges[(rng >> 33) % (sizeof ranges / sizeof ranges[0])];
            uint32_t cp = g[0] + (uint32_t)((rng >> 13) % (g[1] - g[0] + 1));
            if (cp < 0x80) {
                buf[len++] = (char)cp;
            } else if (cp < 0x800) {
                buf[len++] = (char)(0xc0 | cp >> 6);
                buf[len++] = (char)(0x80 | (cp & 0x3f));
            } else if (cp < 0x10000) {
                buf[len++] = (char)(0xe0 | cp >> 12);
                buf[len++] = (char)(0x80 | (cp >> 6 & 0x3f));
                buf[len++] = (char)(0x80 | (cp & 0x3f));
            } else {
                buf[len++] = (char)(0xf0 | cp >> 18);
                buf[len++] = (char)(0x80 | (cp >> 12 & 0x3f));
                buf[len++] = (char)(0x80 | (cp >> 6 & 0x3f));
                buf[len++] = (char)(0x80 | (cp & 0x3f));
            }
        }
        ok += roundtrips(t, buf, len);
    }
    CHECK(ok == runs, "random strings round-trip: %d of %d", ok, runs);

    /* Long runs stress the regex backtracking and the merge queue. */
    size_t big = 200000;
    char *s = malloc(big);
    memset(s, ' ', big);
    CHECK(roundtrips(t, s, big), "200k spaces");
    memset(s, '!', big);
    CHECK(roundtrips(t, s, big), "200k punctuation");
    for (size_t i = 0; i < big; i++)
        s[i] = "abcdefghij"[(i * 7 + i / 3) % 10];
    double t0 = clock_ms();
    CHECK(roundtrips(t, s, big), "200k-letter word");
    printf("200k-letter word: %.1f ms\n", clock_ms() - t0);
    free(s);
}

/* A hand-made vocabulary: the 256 byte tokens, a few merges, a user-defined token. */
static void test_small_vocab(void)
{
    struct strview tokens[263];
    int32_t types[263];
    char store[256][4];
    for (unsigned b = 0; b < 256; b++) {
        uint32_t cp = tok_byte_to_codepoint((uint8_t)b);
        size_t n = 0;
        if (cp < 0x80) {
            store[b][n++] = (char)cp;
        } else {
            store[b][n++] = (char)(0xc0 | cp >> 6);
            store[b][n++] = (char)(0x80 | (cp & 0x3f));
        }
        tokens[b] = (struct strview){store[b], n};
        types[b] = TOK_NORMAL;
    }
    tokens[256] = (struct strview){"aa", 2};
    tokens[257] = (struct strview){"ab", 2};
    tokens[258] = (struct strview){"aab", 3};
    tokens[259] = (struct strview){"<sep>", 5};
    tokens[260] = (struct strview){"<s>", 3};
    tokens[261] = (struct strview){"<sep>x", 6};
    tokens[262] = (struct strview){"<|eom_id|>", 10};
    for (int i = 256; i < 263; i++)
        types[i] = TOK_CONTROL;
    types[256] = types[257] = types[258] = TOK_NORMAL;
    types[259] = TOK_USER_DEFINED;
    struct strview merges[] = {{"a a", 3}, {"a b", 3}, {"aa b", 4}, {"a a", 3}};
    struct tok_source src = {.n_tokens = 263, .tokens = tokens, .types = types, .n_merges = 4,
                             .merges = merges, .bos_id = 260, .eos_id = -1, .eot_id = -1,
                             .add_bos = true};
    struct errbuf e = {{0}};
    struct tokenizer *t = tokenizer_new(&src, &e);
    CHECK(t, "small vocab: %s", e.msg);
    if (!t)
        return;
    /* "aaab": a a merges leftmost first (rank 0) -> aa a b; then a b (rank 1) -> aa ab. */
    CHECK(encode_is(t, "aaab", 4, false, (int32_t[]){256, 257}, 2), "aaab");
    /* "aab" is a token itself, so merges are skipped. */
    CHECK(encode_is(t, "aab", 3, false, (int32_t[]){258}, 1), "whole piece");
    CHECK(encode_is(t, "aaaa", 4, false, (int32_t[]){256, 256}, 2), "aaaa");
    CHECK(encode_is(t, "a<sep>b", 7, true, (int32_t[]){'a', 259, 'b'}, 3), "user-defined");
    /* The longest special wins where two start at the same place. */
    CHECK(encode_is(t, "<sep>x<s>", 9, true, (int32_t[]){261, 260}, 2), "longest special");
    CHECK(!tokenizer_is_eog(t, 260) && tokenizer_is_eog(t, 262), "<|eom_id|> found by its text");
    char buf[16];
    CHECK(tokenizer_token_bytes(t, 259, false, buf, sizeof buf) == 5, "user-defined always shows");
    tokenizer_free(t);

    struct strview bad_merge[] = {{"ab", 2}};
    src.merges = bad_merge;
    src.n_merges = 1;
    t = tokenizer_new(&src, &e);
    CHECK(!t && strstr(e.msg, "merge 0"), "merge without a space: %s", e.msg);
    src.n_merges = 0;
    src.bos_id = 263;
    t = tokenizer_new(&src, &e);
    CHECK(!t && strstr(e.msg, "bos"), "bos out of range: %s", e.msg);
    src.bos_id = -1;
    src.types = NULL;
    t = tokenizer_new(&src, &e);
    CHECK(t && !tokenizer_add_bos(t), "no types, no bos: %s", e.msg);
    int32_t *ids;
    size_t n;
    CHECK(t && tokenizer_encode(t, "x", 1, true, false, &ids, &n, &e) == -1 && strstr(e.msg, "BOS"),
          "BOS asked of a vocab without one");
    tokenizer_free(t);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_bad_json(void)
{
    static const struct {
        const char *json, *msg;
    } cases[] = {
        {"this is not json", "not valid JSON"},
        {"{\"model\": {\"vocab\": {\"a\": 0}", "not valid JSON"},
        {"{\"model\": {\"vocab\": {\"a\": 0}}} trailing", "not valid JSON"},
        {"[1, 2]", "no \"model\""},
        {"{\"model\": {\"merges\": []}}", "no model.vocab"},
        {"{\"model\": {\"vocab\": []}}", "no model.vocab"},
        {"{\"model\": {\"vocab\": {}}}", "empty"},
        {"{\"model\": {\"vocab\": {\"a\": \"x\"}}}", "not an integer"},
        {"{\"model\": {\"vocab\": {\"a\": -1}}}", "out of range"},
        {"{\"model\": {\"vocab\": {\"a\": 99999999999}}}", "out of range"},
        {"{\"model\": {\"vocab\": {\"a\": 0, \"b\": 0}}}", "used twice"},
        {"{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [3]}}", "merges[0]"},
        {"{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [[\"a\"]]}}", "merges[0]"},
        {"{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}", "not BPE"},
        {"{\"model\": {\"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"content\": \"x\"}]}", "no id"},
        {"{\"model\": {\"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": 1}]}", "no content"},
        {"", "not valid JSON"},
    };
    char path[] = "/tmp/test_tokenizer_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    if (fd < 0)
        return;
    close(fd);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_file(path, cases[i].json);
        struct tok_source_owned o;
        struct errbuf e = {{0}};
        int rc = tok_source_from_hf_json(&o, path, &e);
        CHECK(rc == -1 && strstr(e.msg, cases[i].msg) && strstr(e.msg, path),
              "bad json %zu: got \"%s\"", i, e.msg);
        CHECK(o.arena == NULL && o.tokens == NULL, "bad json %zu leaves nothing behind", i);
        if (rc == 0)
            tok_source_owned_free(&o);
    }

    /* Both merge forms, a gap filled with a placeholder, added tokens' types. */
    write_file(path, "{\"added_tokens\": ["
                     "{\"id\": 4, \"content\": \"<|eot_id|>\", \"special\": true},"
                     "{\"id\": 5, \"content\": \"<u>\", \"special\": false}],"
                     "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2},"
                     "\"merges\": [\"a b\", [\"ab\", \"b\"]]}}");
    struct tok_source_owned o;
    struct errbuf e = {{0}};
    CHECK(tok_source_from_hf_json(&o, path, &e) == 0, "small json: %s", e.msg);
    if (o.arena) {
        CHECK(o.src.n_tokens == 6, "n_tokens %u", o.src.n_tokens);
        CHECK(strview_eq(o.src.tokens[3], "[PAD3]") && o.src.types[3] == TOK_UNUSED, "gap");
        CHECK(o.src.types[0] == TOK_NORMAL && o.src.types[4] == TOK_CONTROL &&
                  o.src.types[5] == TOK_USER_DEFINED, "types");
        CHECK(o.src.n_merges == 2 && strview_eq(o.src.merges[0], "a b") &&
                  strview_eq(o.src.merges[1], "ab b"), "merge forms");
        CHECK(o.src.eot_id == 4 && o.src.bos_id == -1 && o.src.eos_id == -1 && !o.src.add_bos,
              "special ids");
        tok_source_owned_free(&o);
    }
    unlink(path);

    struct tok_source_owned m;
    CHECK(tok_source_from_hf_json(&m, "/nonexistent/tokenizer.json", &e) == -1 &&
              strstr(e.msg, "/nonexistent/tokenizer.json") && strstr(e.msg, "No such file"),
          "missing file: %s", e.msg);
    CHECK(tok_source_from_hf_json(&m, "/tmp", &e) == -1, "a directory: %s", e.msg);
}

static void test_gguf_vectors(const char *path)
{
    struct gguf_file f;
    struct errbuf e = {{0}};
    char through[300];
    snprintf(through, sizeof through, "the tokenizer of %s", path);
    CHECK(gguf_open(&f, path, &e) == 0, "%s", e.msg);
    struct tokenizer *t = tokenizer_from_gguf(&f, &e);
    CHECK(t, "%s: %s", path, e.msg);
    if (t) {
        CHECK(tokenizer_bos(t) == 128000 && tokenizer_eos(t) == 128001 && tokenizer_add_bos(t),
              "%s: special ids", path);
        CHECK(tokenizer_is_eog(t, 128009), "%s: <|eot_id|> ends a turn", path);
        int before = check_failures, skipped = check_skipped;
        test_vectors(t, through);
        printf("%s: llama-bpe vectors %s\n", path,
               check_skipped > skipped ? "not run" :
               check_failures == before ? "all match" : "FAIL");
        tokenizer_free(t);
    }
    gguf_close(&f);
}

int main(void)
{
    struct tok_source_owned o;
    struct errbuf e = {{0}};
    double t0 = clock_ms();
    int rc = tok_source_from_hf_json(&o, BITNET_DEFAULT_TOKENIZER, &e);
    double t1 = clock_ms();
    CHECK(rc == 0, "loading %s: %s (run `make deps`)", BITNET_DEFAULT_TOKENIZER, e.msg);
    if (rc == 0) {
        CHECK(o.src.n_tokens == 128256 && o.src.n_merges == 280147, "sizes %u %llu",
              o.src.n_tokens, (unsigned long long)o.src.n_merges);
        CHECK(o.src.bos_id == 128000 && o.src.eos_id == 128001 && o.src.eot_id == 128009 &&
                  o.src.add_bos, "special ids from tokenizer.json");
        CHECK(o.src.types[9906] == TOK_NORMAL && o.src.types[128009] == TOK_CONTROL, "types");
        double t2 = clock_ms();
        struct tokenizer *t = tokenizer_new(&o.src, &e);
        double t3 = clock_ms();
        CHECK(t, "tokenizer_new: %s", e.msg);
        printf("tokenizer.json parse: %.1f ms, tokenizer_new: %.1f ms\n", t1 - t0, t3 - t2);
        if (t) {
            test_vectors(t, "tokenizer.json");
            test_bos_and_special(t);
            test_find_and_bytes(t);
            test_invalid_utf8(t);
            test_stream(t);
            test_random_roundtrip(t);
            tokenizer_free(t);
        }
        tok_source_owned_free(&o);
    }
    test_small_vocab();
    test_bad_json();
    /* the same vectors through a tokenizer read from GGUF metadata: a third-party
     * file, and one written by our own synth */
    if (shared_data_missing())
        check_not_run("the tokenizer of a third-party GGUF (tiny.gguf's special ids and the "
                      "llama-bpe vectors through it)", "xval/tiny.gguf");
    else
        test_gguf_vectors(SHARED_DATA("xval/tiny.gguf"));
    if (run_cmd("mkdir -p build/test-tmp && build/bitnetctl model synth --out "
                "build/test-tmp/tok.gguf --embd 128 --layers 1 --heads 2 --kv-heads 1 "
                "--ffn 128 2>/dev/null") == 0)
        test_gguf_vectors("build/test-tmp/tok.gguf");
    else
        CHECK(0, "bitnetctl model synth failed");
    return check_done("test_tokenizer");
}

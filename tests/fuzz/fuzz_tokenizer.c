/* The Llama-3 tokenizer (the npm tokenizer.json) on arbitrary input. The first byte picks:
 *   even: the rest is text. Encoding must succeed exactly when it is valid UTF-8 (checked
 *         here independently), and decoding the ids must give the text back: with
 *         parse_special, specials rendered; without, the text cannot make a control token.
 *   odd:  the rest is little-endian int32 ids (folded to near the vocabulary). Decoding
 *         must fail exactly when an id is outside it; the streaming decoder must give what
 *         the whole decode gives whenever that is valid UTF-8; and each token's bytes must
 *         be its piece of the decode.
 * A violated property aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer.h"
#include "tests/fuzz/fuzz_common.h"

static struct tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    struct tok_source_owned src;
    struct errbuf e;
    if (tok_source_from_hf_json(&src, BITNET_DEFAULT_TOKENIZER, &e) < 0)
        fuzz_die("%s (run make deps)", e.msg);
    tok = tokenizer_new(&src.src, &e);
    if (!tok)
        fuzz_die("%s", e.msg);
    /* the tokenizer copies what it keeps */
    tok_source_owned_free(&src);
    return 0;
}

/* An oracle written apart from the tokenizer's: RFC 3629 (shortest forms only, no
 * surrogates, at most U+10FFFF). */
static bool valid_utf8(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || i + len > n)
            return false;
        uint32_t cp = len == 1 ? c : c & (0x7f >> len);
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

static void fail(const char *what, size_t n)
{
    fprintf(stderr, "tokenizer property violated: %s (input of %zu bytes)\n", what, n);
    abort();
}

/* Bytes the ids decode to (text may hold NULs, so strlen cannot tell). */
static size_t decoded_len(const int32_t *ids, size_t n, bool render_special)
{
    size_t len = 0;
    char one;
    for (size_t i = 0; i < n; i++)
        len += (size_t)tokenizer_token_bytes(tok, ids[i], render_special, &one, 1);
    return len;
}

/* Whether ids decode to exactly text. */
static bool decodes_to(const int32_t *ids, size_t n, bool render_special, const uint8_t *text,
                       size_t len)
{
    char *back = tokenizer_decode(tok, ids, n, render_special);
    bool same = back && decoded_len(ids, n, render_special) == len &&
                memcmp(back, text, len) == 0;
    free(back);
    return same;
}

static void check_text(const uint8_t *text, size_t n, bool parse_special, bool add_bos)
{
    struct errbuf e;
    int32_t *ids;
    size_t n_ids;
    int rc = tokenizer_encode(tok, (const char *)text, n, add_bos, parse_special, &ids, &n_ids, &e);
    if ((rc == 0) != valid_utf8(text, n))
        fail(rc == 0 ? "invalid UTF-8 encoded" : "valid UTF-8 refused", n);
    if (rc)
        return;
    size_t skip = add_bos ? 1 : 0;
    if (add_bos && (n_ids < 1 || ids[0] != tokenizer_bos(tok)))
        fail("add_bos without BOS first", n);
    if (!decodes_to(ids + skip, n_ids - skip, true, text, n))
        fail("decode(encode(text)) != text", n);
    /* without parse_special no control token can come out of text, so leaving them out
     * of the decode must change nothing */
    if (!parse_special && !decodes_to(ids + skip, n_ids - skip, false, text, n))
        fail("text made a control token without parse_special", n);
    free(ids);
}

static void check_ids(const uint8_t *data, size_t size, bool render_special)
{
    uint32_t nv = tokenizer_n_vocab(tok);
    size_t n = size / 4;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    bool all_valid = true;
    for (size_t i = 0; i < n; i++) {
        uint32_t raw;
        memcpy(&raw, data + 4 * i, 4);
        /* mostly ids of the vocabulary, with a few outside it on either side */
        int32_t id = (int32_t)(raw % (nv + 16)) - 8;
        if (raw >> 31)
            id = (int32_t)raw;
        ids[i] = id;
        all_valid &= id >= 0 && (uint32_t)id < nv;
    }
    char *text = tokenizer_decode(tok, ids, n, render_special);
    if ((text != NULL) != all_valid)
        fail(text ? "decoded an id outside the vocabulary" : "refused valid ids", size);
    if (!text) {
        free(ids);
        return;
    }
    size_t len = 0;
    char piece[512];
    for (size_t i = 0; i < n; i++) {
        int k = tokenizer_token_bytes(tok, ids[i], render_special, piece, sizeof piece);
        if (k < 0 || (size_t)k > sizeof piece || memcmp(text + len, piece, (size_t)k) != 0)
            fail("token bytes differ from its part of the decode", size);
        len += (size_t)k;
    }
    if (!render_special && valid_utf8((const uint8_t *)text, len)) {
        size_t cap = tokenizer_max_token_bytes(tok) + 8;
        char *out = malloc(len + cap), *buf = malloc(cap);
        struct tok_stream ts = {{0}, 0};
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
            size_t k = tok_stream_push(tok, &ts, ids[i], buf, cap);
            if (o + k > len)
                fail("stream gave more than the decode", size);
            memcpy(out + o, buf, k);
            o += k;
        }
        o += tok_stream_flush(&ts, out + o, cap);
        if (o != len || memcmp(out, text, len) != 0)
            fail("stream differs from the decode of valid UTF-8", size);
        free(out);
        free(buf);
    }
    free(text);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t mode = data[0];
    data++, size--;
    if (mode % 2 == 0)
        check_text(data, size, mode & 2, mode & 4);
    else
        check_ids(data, size, mode & 2);
    return 0;
}

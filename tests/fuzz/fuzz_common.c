#include "tests/fuzz/fuzz_common.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/ggml_types.h"
#include "model/synth.h"
#include "model/tokenizer.h"

void fuzz_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz harness: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static char tmpdir[64];

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void remove_tmpdir(void)
{
    if (tmpdir[0])
        nftw(tmpdir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fuzz_tmpdir(void)
{
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/bitnet-fuzz-XXXXXX");
        if (!mkdtemp(tmpdir))
            fuzz_die("mkdtemp: %s", strerror(errno));
        atexit(remove_tmpdir);
    }
    return tmpdir;
}

const char *fuzz_put_file(int slot, const uint8_t *data, size_t size)
{
    static char paths[4][96];
    if (slot < 0 || slot >= 4)
        fuzz_die("fuzz_put_file: slot %d", slot);
    snprintf(paths[slot], sizeof paths[slot], "%s/input%d", fuzz_tmpdir(), slot);
    /* a new file each time: readers may have kept the old one mapped */
    unlink(paths[slot]);
    int fd = open(paths[slot], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        fuzz_die("%s: %s", paths[slot], strerror(errno));
    for (size_t off = 0; off < size;) {
        ssize_t k = write(fd, data + off, size - off);
        if (k <= 0)
            fuzz_die("%s: write: %s", paths[slot], strerror(errno));
        off += (size_t)k;
    }
    close(fd);
    return paths[slot];
}

/* ---- the tiny model ---- */

static int32_t find_kept(const struct tok_source *s, unsigned n, const char *p, size_t len)
{
    for (unsigned i = 0; i < n; i++)
        if (s->tokens[i].len == len && memcmp(s->tokens[i].ptr, p, len) == 0)
            return (int32_t)i;
    return -1;
}

/* Ids [0, base) of the real vocabulary (bytes first, then merge results in rank order),
 * the merges among them, and the special tokens the chat template and EOG checks use. */
static void write_tiny_tokenizer(const char *path, unsigned base)
{
    struct tok_source_owned big;
    struct errbuf e;
    if (tok_source_from_hf_json(&big, BITNET_DEFAULT_TOKENIZER, &e) < 0)
        fuzz_die("%s (run make deps)", e.msg);
    const struct tok_source *s = &big.src;
    if (base < 1 || base > s->n_tokens)
        fuzz_die("tiny tokenizer: %u base tokens", base);
    struct json_object *vocab = json_object_new_object(), *merges = json_object_new_array();
    for (unsigned i = 0; i < base; i++)
        json_object_object_add(vocab, s->tokens[i].ptr, json_object_new_int((int32_t)i));
    char joined[512];
    for (uint64_t m = 0; m < s->n_merges && m < 4 * (uint64_t)base; m++) {
        struct strview v = s->merges[m];
        const char *sp = v.len > 1 ? memchr(v.ptr + 1, ' ', v.len - 1) : NULL;
        if (!sp || v.len >= sizeof joined)
            continue;
        size_t nl = (size_t)(sp - v.ptr), nr = v.len - nl - 1;
        memcpy(joined, v.ptr, nl);
        memcpy(joined + nl, sp + 1, nr);
        if (find_kept(s, base, v.ptr, nl) >= 0 && find_kept(s, base, sp + 1, nr) >= 0 &&
            find_kept(s, base, joined, nl + nr) >= 0)
            json_object_array_add(merges, json_object_new_string_len(v.ptr, (int)v.len));
    }
    static const char *const specials[] = {"<|begin_of_text|>", "<|end_of_text|>",
                                           "<|start_header_id|>", "<|end_header_id|>",
                                           "<|eot_id|>"};
    struct json_object *added = json_object_new_array();
    for (unsigned i = 0; i < sizeof specials / sizeof specials[0]; i++) {
        struct json_object *a = json_object_new_object();
        json_object_object_add(a, "id", json_object_new_int((int32_t)(base + i)));
        json_object_object_add(a, "content", json_object_new_string(specials[i]));
        json_object_object_add(a, "special", json_object_new_boolean(1));
        json_object_array_add(added, a);
    }
    struct json_object *model = json_object_new_object(), *root = json_object_new_object();
    json_object_object_add(model, "type", json_object_new_string("BPE"));
    json_object_object_add(model, "vocab", vocab);
    json_object_object_add(model, "merges", merges);
    json_object_object_add(root, "added_tokens", added);
    json_object_object_add(root, "model", model);
    if (json_object_to_file_ext(path, root, JSON_C_TO_STRING_PLAIN) != 0)
        fuzz_die("%s: %s", path, json_util_get_last_err());
    json_object_put(root);
    tok_source_owned_free(&big);
}

const char *fuzz_tiny_model(const struct fuzz_model_opts *opts)
{
    static const struct fuzz_model_opts defaults = {FUZZ_TINY_BASE, FUZZ_TINY_LAYERS, "f16",
                                                    "i2_s"};
    static char paths[8][128];
    static struct fuzz_model_opts made[8];
    static int n_made;
    if (!opts)
        opts = &defaults;
    for (int i = 0; i < n_made; i++)
        if (made[i].base_tokens == opts->base_tokens && made[i].layers == opts->layers &&
            strcmp(made[i].embd_type, opts->embd_type) == 0 &&
            strcmp(made[i].weight_type, opts->weight_type) == 0)
            return paths[i];
    if (n_made == 8)
        fuzz_die("fuzz_tiny_model: too many shapes");
    char json[128];
    snprintf(json, sizeof json, "%s/tokenizer-%u.json", fuzz_tmpdir(), opts->base_tokens);
    if (access(json, F_OK) != 0)
        write_tiny_tokenizer(json, opts->base_tokens);
    char *path = paths[n_made];
    snprintf(path, sizeof paths[0], "%s/model-%u-%u-%s-%s.gguf", fuzz_tmpdir(),
             opts->base_tokens, opts->layers, opts->embd_type, opts->weight_type);
    struct synth_params p;
    struct errbuf e;
    if (synth_preset(&p, "tiny", &e) < 0)
        fuzz_die("%s", e.msg);
    p.n_layer = opts->layers;
    p.n_head = 2;
    p.n_head_kv = 1;
    p.n_ctx = 256;
    p.seed = 1;
    p.embd_type = strcmp(opts->embd_type, "q8_0") == 0  ? GGML_TYPE_Q8_0
                  : strcmp(opts->embd_type, "f32") == 0 ? GGML_TYPE_F32
                                                        : GGML_TYPE_F16;
    p.weight_type = strcmp(opts->weight_type, "tq2_0") == 0   ? GGML_TYPE_TQ2_0
                    : strcmp(opts->weight_type, "tq1_0") == 0 ? GGML_TYPE_TQ1_0
                                                              : GGML_TYPE_I2_S;
    /* the smallest rows each packing allows: 128 values a block for I2_S, 256 for TQ */
    p.n_embd = p.n_ff = p.weight_type == GGML_TYPE_I2_S ? 128 : 256;
    p.tokenizer_json = json;
    p.name = "fuzz";
    if (bitnet_synth(&p, path, NULL, NULL, &e) < 0)
        fuzz_die("synth: %s", e.msg);
    made[n_made++] = *opts;
    return path;
}

/* ---- records ---- */

int fuzz_next_record(struct fuzz_reader *r, uint8_t *channel, const uint8_t **payload,
                     size_t *len)
{
    if (r->n == 0)
        return -1;
    *channel = r->p[0];
    size_t want = r->n >= 3 ? (size_t)r->p[1] | (size_t)r->p[2] << 8 : 0;
    size_t head = r->n >= 3 ? 3 : r->n;
    r->p += head;
    r->n -= head;
    *len = want < r->n ? want : r->n;
    *payload = r->p;
    r->p += *len;
    r->n -= *len;
    return 0;
}

#include "model/gguf_write.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "model/ggml_types.h"
#include "model/gguf.h"

enum wstate { W_COLLECTING, W_STREAMING, W_DONE };

struct wtensor {
    char *name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    uint32_t type;
    uint64_t offset;
    uint64_t nbytes;
    uint64_t written;
};

struct gguf_writer {
    /* Key/value records already encoded, in the order they were added. */
    uint8_t *meta;
    size_t meta_len, meta_cap;
    uint64_t n_kv;
    char **keys;
    size_t keys_cap;

    struct wtensor *t;
    size_t n_t, t_cap;

    uint64_t alignment;
    enum wstate state;
    size_t cur;          /* first tensor whose data is not yet complete */
    uint64_t data_pos;   /* bytes written into the data section, padding included */

    /* The setters return nothing, so their failures wait here for the next call
     * that can report one; the first failure is the one worth reading. */
    bool failed;
    char err[256];
};

static const uint8_t zeros[64];

static void defer_err(struct gguf_writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void defer_err(struct gguf_writer *w, const char *fmt, ...)
{
    if (w->failed)
        return;
    w->failed = true;
    va_list ap;
    va_start(ap, fmt);
    int n = snprintf(w->err, sizeof w->err, "gguf writer: ");
    vsnprintf(w->err + n, sizeof w->err - (size_t)n, fmt, ap);
    va_end(ap);
}

struct gguf_writer *gguf_writer_new(void)
{
    struct gguf_writer *w = calloc(1, sizeof *w);
    if (w)
        w->alignment = GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_writer_free(struct gguf_writer *w)
{
    if (!w)
        return;
    for (uint64_t i = 0; i < w->n_kv; i++)
        free(w->keys[i]);
    free(w->keys);
    for (size_t i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    free(w->t);
    free(w->meta);
    free(w);
}

static bool meta_put(struct gguf_writer *w, const void *p, size_t n)
{
    if (w->failed)
        return false;
    if (n > SIZE_MAX - w->meta_len) {
        defer_err(w, "metadata too large");
        return false;
    }
    if (w->meta_len + n > w->meta_cap) {
        size_t cap = w->meta_cap ? w->meta_cap : 256;
        while (cap < w->meta_len + n)
            cap = cap > SIZE_MAX / 2 ? w->meta_len + n : cap * 2;
        uint8_t *m = realloc(w->meta, cap);
        if (!m) {
            defer_err(w, "out of memory");
            return false;
        }
        w->meta = m;
        w->meta_cap = cap;
    }
    if (n)
        memcpy(w->meta + w->meta_len, p, n);
    w->meta_len += n;
    return true;
}

static void enc32(uint8_t *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

static void enc64(uint8_t *b, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

static bool meta_u32(struct gguf_writer *w, uint32_t v)
{
    uint8_t b[4];
    enc32(b, v);
    return meta_put(w, b, 4);
}

static bool meta_u64(struct gguf_writer *w, uint64_t v)
{
    uint8_t b[8];
    enc64(b, v);
    return meta_put(w, b, 8);
}

static bool meta_str(struct gguf_writer *w, const char *s, size_t len)
{
    return meta_u64(w, len) && meta_put(w, s, len);
}

/* Starts a key/value record. check_dup is off only for gguf_w_raw, which exists to
 * build malformed files (duplicate keys among them) for tests of the reader. */
static bool begin_kv(struct gguf_writer *w, const char *key, uint32_t vtype, bool check_dup)
{
    if (!w || w->failed)
        return false;
    if (!key) {
        defer_err(w, "NULL key");
        return false;
    }
    if (w->state != W_COLLECTING) {
        defer_err(w, "key '%s' added after gguf_w_begin", key);
        return false;
    }
    if (check_dup) {
        for (uint64_t i = 0; i < w->n_kv; i++) {
            if (strcmp(w->keys[i], key) == 0) {
                defer_err(w, "duplicate key '%s'", key);
                return false;
            }
        }
    }
    if (w->n_kv == w->keys_cap) {
        size_t cap = w->keys_cap ? w->keys_cap * 2 : 16;
        char **k = realloc(w->keys, cap * sizeof *k);
        if (!k) {
            defer_err(w, "out of memory");
            return false;
        }
        w->keys = k;
        w->keys_cap = cap;
    }
    char *copy = strdup(key);
    if (!copy) {
        defer_err(w, "out of memory");
        return false;
    }
    w->keys[w->n_kv++] = copy;
    return meta_str(w, key, strlen(key)) && meta_u32(w, vtype);
}

/* Keys that steer the layout must carry the type the reader expects. */
static bool layout_key_ok(struct gguf_writer *w, const char *key, uint32_t vtype)
{
    if (w && key && strcmp(key, "general.alignment") == 0 && vtype != GGUF_U32) {
        defer_err(w, "general.alignment must be written with gguf_w_u32");
        return false;
    }
    return true;
}

void gguf_w_str(struct gguf_writer *w, const char *key, const char *val)
{
    if (!layout_key_ok(w, key, GGUF_STRING) || !begin_kv(w, key, GGUF_STRING, true))
        return;
    if (!val) {
        defer_err(w, "key '%s': NULL string", key);
        return;
    }
    meta_str(w, val, strlen(val));
}

void gguf_w_u32(struct gguf_writer *w, const char *key, uint32_t val)
{
    if (!begin_kv(w, key, GGUF_U32, true))
        return;
    if (strcmp(key, "general.alignment") == 0) {
        if (val == 0 || (val & (val - 1)) != 0) {
            defer_err(w, "general.alignment %u is not a power of two", val);
            return;
        }
        w->alignment = val;
    }
    meta_u32(w, val);
}

void gguf_w_i32(struct gguf_writer *w, const char *key, int32_t val)
{
    if (layout_key_ok(w, key, GGUF_I32) && begin_kv(w, key, GGUF_I32, true))
        meta_u32(w, (uint32_t)val);
}

void gguf_w_u64(struct gguf_writer *w, const char *key, uint64_t val)
{
    if (layout_key_ok(w, key, GGUF_U64) && begin_kv(w, key, GGUF_U64, true))
        meta_u64(w, val);
}

void gguf_w_f32(struct gguf_writer *w, const char *key, float val)
{
    uint32_t bits;
    memcpy(&bits, &val, sizeof bits);
    if (layout_key_ok(w, key, GGUF_F32) && begin_kv(w, key, GGUF_F32, true))
        meta_u32(w, bits);
}

void gguf_w_bool(struct gguf_writer *w, const char *key, bool val)
{
    uint8_t b = val ? 1 : 0;
    if (layout_key_ok(w, key, GGUF_BOOL) && begin_kv(w, key, GGUF_BOOL, true))
        meta_put(w, &b, 1);
}

static bool arr_header(struct gguf_writer *w, const char *key, uint32_t elem, uint64_t n,
                       const void *items)
{
    if (!layout_key_ok(w, key, GGUF_ARRAY) || !begin_kv(w, key, GGUF_ARRAY, true))
        return false;
    if (n && !items) {
        defer_err(w, "key '%s': NULL items", key);
        return false;
    }
    return meta_u32(w, elem) && meta_u64(w, n);
}

void gguf_w_arr_str(struct gguf_writer *w, const char *key, const struct strview *items, uint64_t n)
{
    if (!arr_header(w, key, GGUF_STRING, n, items))
        return;
    for (uint64_t i = 0; i < n; i++) {
        if (items[i].len && !items[i].ptr) {
            defer_err(w, "key '%s': string %llu is NULL", key, (unsigned long long)i);
            return;
        }
        if (!meta_str(w, items[i].ptr, items[i].len))
            return;
    }
}

void gguf_w_arr_i32(struct gguf_writer *w, const char *key, const int32_t *items, uint64_t n)
{
    if (!arr_header(w, key, GGUF_I32, n, items))
        return;
    for (uint64_t i = 0; i < n; i++)
        if (!meta_u32(w, (uint32_t)items[i]))
            return;
}

void gguf_w_arr_f32(struct gguf_writer *w, const char *key, const float *items, uint64_t n)
{
    if (!arr_header(w, key, GGUF_F32, n, items))
        return;
    for (uint64_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &items[i], sizeof bits);
        if (!meta_u32(w, bits))
            return;
    }
}

/* Writes exactly what it is given: no check of the type, the payload or duplicate
 * keys, and general.alignment set this way does not change the layout. */
void gguf_w_raw(struct gguf_writer *w, const char *key, uint32_t vtype, const void *payload, uint64_t len)
{
    if (!begin_kv(w, key, vtype, false))
        return;
    if (len && !payload) {
        defer_err(w, "key '%s': NULL payload", key);
        return;
    }
    if (len > SIZE_MAX) {
        defer_err(w, "key '%s': payload too large", key);
        return;
    }
    meta_put(w, payload, (size_t)len);
}

int gguf_w_tensor(struct gguf_writer *w, const char *name, uint32_t ggml_type, uint32_t n_dims,
                  const uint64_t *ne, struct errbuf *e)
{
    if (!w)
        return err_set(e, "gguf writer: NULL writer");
    if (!name)
        return err_set(e, "gguf writer: NULL tensor name");
    if (w->state != W_COLLECTING)
        return err_set(e, "gguf writer: tensor '%s' declared after gguf_w_begin", name);
    if (!ggml_type_known(ggml_type))
        return err_set(e, "gguf writer: tensor '%s': unknown ggml type %u", name, ggml_type);
    if (n_dims == 0 || n_dims > GGUF_MAX_DIMS || !ne)
        return err_set(e, "gguf writer: tensor '%s': n_dims %u (must be 1 to %d)", name, n_dims,
                       GGUF_MAX_DIMS);
    uint64_t n_values = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] == 0)
            return err_set(e, "gguf writer: tensor '%s': dim %u is 0", name, d);
        if (__builtin_mul_overflow(n_values, ne[d], &n_values))
            return err_set(e, "gguf writer: tensor '%s': product of dims overflows", name);
    }
    uint64_t nbytes = ggml_tensor_nbytes(ggml_type, ne[0], n_values);
    if (nbytes == 0)
        return err_set(e, "gguf writer: tensor '%s': row length %llu does not fit %s (block length %u) or size overflows",
                       name, (unsigned long long)ne[0], ggml_type_name(ggml_type),
                       ggml_type_block_len(ggml_type));
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return err_set(e, "gguf writer: duplicate tensor name '%s'", name);
    if (w->n_t >= (size_t)INT32_MAX)
        return err_set(e, "gguf writer: too many tensors");
    if (w->n_t == w->t_cap) {
        size_t cap = w->t_cap ? w->t_cap * 2 : 16;
        struct wtensor *t = realloc(w->t, cap * sizeof *t);
        if (!t)
            return err_set(e, "gguf writer: out of memory");
        w->t = t;
        w->t_cap = cap;
    }
    struct wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name)
        return err_set(e, "gguf writer: out of memory");
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = d < n_dims ? ne[d] : 1;
    t->type = ggml_type;
    t->nbytes = nbytes;
    return (int)w->n_t++;
}

uint64_t gguf_w_tensor_nbytes(const struct gguf_writer *w, int idx)
{
    if (!w || idx < 0 || (size_t)idx >= w->n_t)
        return 0;
    return w->t[idx].nbytes;
}

static int put(struct gguf_writer *w, FILE *fp, const void *p, size_t n, struct errbuf *e)
{
    if (n && fwrite(p, 1, n, fp) != n) {
        defer_err(w, "write failed: %s", strerror(errno));
        return err_set(e, "%s", w->err);
    }
    return 0;
}

static int pad(struct gguf_writer *w, FILE *fp, uint64_t n, struct errbuf *e)
{
    while (n > 0) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        if (put(w, fp, zeros, k, e))
            return -1;
        n -= k;
    }
    return 0;
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

int gguf_w_begin(struct gguf_writer *w, FILE *fp, struct errbuf *e)
{
    if (!w || !fp)
        return err_set(e, "gguf writer: NULL writer or file");
    if (w->failed)
        return err_set(e, "%s", w->err);
    if (w->state != W_COLLECTING)
        return err_set(e, "gguf writer: gguf_w_begin called twice");
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        uint64_t end;
        w->t[i].offset = off;
        if (__builtin_add_overflow(off, w->t[i].nbytes, &end) || end > UINT64_MAX - w->alignment)
            return err_set(e, "gguf writer: data section size overflows");
        off = align_up(end, w->alignment);
    }
    w->state = W_STREAMING;

    uint8_t hdr[24];
    memcpy(hdr, "GGUF", 4);
    enc32(hdr + 4, 3);
    enc64(hdr + 8, w->n_t);
    enc64(hdr + 16, w->n_kv);
    if (put(w, fp, hdr, sizeof hdr, e) || put(w, fp, w->meta, w->meta_len, e))
        return -1;
    uint64_t pos = sizeof hdr + (uint64_t)w->meta_len;
    for (size_t i = 0; i < w->n_t; i++) {
        const struct wtensor *t = &w->t[i];
        uint8_t b[8];
        size_t len = strlen(t->name);
        enc64(b, len);
        if (put(w, fp, b, 8, e) || put(w, fp, t->name, len, e))
            return -1;
        enc32(b, t->n_dims);
        if (put(w, fp, b, 4, e))
            return -1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            enc64(b, t->ne[d]);
            if (put(w, fp, b, 8, e))
                return -1;
        }
        enc32(b, t->type);
        if (put(w, fp, b, 4, e))
            return -1;
        enc64(b, t->offset);
        if (put(w, fp, b, 8, e))
            return -1;
        pos += 8 + len + 4 + 8ull * t->n_dims + 4 + 8;
    }
    return pad(w, fp, align_up(pos, w->alignment) - pos, e);
}

int gguf_w_data(struct gguf_writer *w, FILE *fp, int idx, const void *data, uint64_t len,
                struct errbuf *e)
{
    if (!w || !fp)
        return err_set(e, "gguf writer: NULL writer or file");
    if (w->failed)
        return err_set(e, "%s", w->err);
    if (w->state == W_COLLECTING)
        return err_set(e, "gguf writer: gguf_w_data before gguf_w_begin");
    if (w->state == W_DONE)
        return err_set(e, "gguf writer: gguf_w_data after gguf_w_end");
    if (idx < 0 || (size_t)idx >= w->n_t)
        return err_set(e, "gguf writer: no tensor %d (%zu declared)", idx, w->n_t);
    struct wtensor *t = &w->t[idx];
    if ((size_t)idx < w->cur)
        return err_set(e, "gguf writer: tensor '%s' is already complete (%llu bytes)", t->name,
                       (unsigned long long)t->nbytes);
    if ((size_t)idx > w->cur)
        return err_set(e, "gguf writer: tensor '%s' written before '%s' is complete (%llu of %llu bytes); tensors go in declaration order",
                       t->name, w->t[w->cur].name, (unsigned long long)w->t[w->cur].written,
                       (unsigned long long)w->t[w->cur].nbytes);
    if (len > t->nbytes - t->written)
        return err_set(e, "gguf writer: tensor '%s': %llu more bytes after %llu exceed its size %llu",
                       t->name, (unsigned long long)len, (unsigned long long)t->written,
                       (unsigned long long)t->nbytes);
    if (len && !data)
        return err_set(e, "gguf writer: tensor '%s': NULL data", t->name);
    if (put(w, fp, data, (size_t)len, e))
        return -1;
    t->written += len;
    w->data_pos += len;
    if (t->written == t->nbytes) {
        w->cur++;
        /* Every tensor, the last included, ends on the alignment so that the file
         * size is a multiple of it, as other writers do. */
        uint64_t end = align_up(w->data_pos, w->alignment);
        if (pad(w, fp, end - w->data_pos, e))
            return -1;
        w->data_pos = end;
    }
    return 0;
}

int gguf_w_end(struct gguf_writer *w, FILE *fp, struct errbuf *e)
{
    if (!w || !fp)
        return err_set(e, "gguf writer: NULL writer or file");
    if (w->failed)
        return err_set(e, "%s", w->err);
    if (w->state == W_COLLECTING)
        return err_set(e, "gguf writer: gguf_w_end before gguf_w_begin");
    if (w->state == W_DONE)
        return err_set(e, "gguf writer: gguf_w_end called twice");
    if (w->cur < w->n_t) {
        const struct wtensor *t = &w->t[w->cur];
        return err_set(e, "gguf writer: tensor '%s' has %llu of %llu bytes written", t->name,
                       (unsigned long long)t->written, (unsigned long long)t->nbytes);
    }
    w->state = W_DONE;
    if (fflush(fp) != 0 || ferror(fp))
        return err_set(e, "gguf writer: write failed: %s", strerror(errno));
    return 0;
}

#include "model/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/ggml_types.h"
#include "model/input_file.h"

/* Real files nest arrays at most once or twice; the limit only stops a hostile file
 * from driving the recursion into the stack. */
#define MAX_ARRAY_DEPTH 8

/* No file this engine could read holds more values in one tensor; anything larger is
 * a corrupt or hostile shape, and the bound keeps every later size product in 64 bits. */
#define MAX_TENSOR_VALUES (UINT64_C(1) << 56)

#define HEADER_BYTES 24
/* Smallest possible records: a key/value is an empty key (8), a type (4) and a one-byte
 * value; a tensor is an empty name (8), n_dims (4), one dim (8), type (4), offset (8).
 * Counts are checked against these so a huge count fails before any loop or allocation. */
#define MIN_KV_BYTES 13
#define MIN_TENSOR_BYTES 32

struct reader {
    const uint8_t *p;
    size_t size;
    size_t pos;
    const char *path;
    struct errbuf *e;
    char ctx[160]; /* which record is being read, for messages */
};

static int fail(struct reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct reader *r, const char *fmt, ...)
{
    char msg[448];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return err_set(r->e, "%s: %s", r->path, msg);
}

/* Names come from the file, so they may hold control bytes or be very long; messages
 * show them escaped and cut short. */
static const char *show(struct strview s, char *buf, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (o + 8 >= cap) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
            buf[o++] = (char)c;
        } else {
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[c >> 4];
            buf[o++] = hex[c & 15];
        }
    }
    buf[o] = '\0';
    return buf;
}

static size_t remain(const struct reader *r)
{
    return r->size - r->pos;
}

static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static int need(struct reader *r, size_t n, const char *what)
{
    if (remain(r) < n)
        return fail(r, "truncated at byte %zu: %s %s needs %zu bytes, only %zu remain", r->pos,
                    r->ctx, what, n, remain(r));
    return 0;
}

static int rd_u32(struct reader *r, const char *what, uint32_t *out)
{
    if (need(r, 4, what))
        return -1;
    *out = le32(r->p + r->pos);
    r->pos += 4;
    return 0;
}

static int rd_u64(struct reader *r, const char *what, uint64_t *out)
{
    if (need(r, 8, what))
        return -1;
    *out = le64(r->p + r->pos);
    r->pos += 8;
    return 0;
}

static int rd_str(struct reader *r, const char *what, struct strview *out)
{
    uint64_t len;
    char lenwhat[64];
    snprintf(lenwhat, sizeof lenwhat, "%s length", what);
    if (rd_u64(r, lenwhat, &len))
        return -1;
    if (len > remain(r))
        return fail(r, "%s: %s string length %llu at byte %zu runs past end of file (only %zu bytes remain)",
                    r->ctx, what, (unsigned long long)len, r->pos - 8, remain(r));
    out->ptr = (const char *)r->p + r->pos;
    out->len = (size_t)len;
    r->pos += (size_t)len;
    return 0;
}

static const char *const vtype_names[GGUF_VTYPE_COUNT] = {
    "U8", "I8", "U16", "I16", "U32", "I32", "F32", "BOOL", "STRING", "ARRAY", "U64", "I64", "F64",
};

const char *gguf_vtype_name(uint32_t type)
{
    return type < GGUF_VTYPE_COUNT ? vtype_names[type] : "unknown";
}

/* Encoded size of a scalar; 0 for STRING and ARRAY, whose size is in the file. */
static size_t vtype_fixed_size(uint32_t t)
{
    switch (t) {
    case GGUF_U8: case GGUF_I8: case GGUF_BOOL: return 1;
    case GGUF_U16: case GGUF_I16: return 2;
    case GGUF_U32: case GGUF_I32: case GGUF_F32: return 4;
    case GGUF_U64: case GGUF_I64: case GGUF_F64: return 8;
    default: return 0;
    }
}

/* Fewest bytes one element can take, to bound an array's count before walking it. */
static size_t vtype_min_size(uint32_t t)
{
    if (t == GGUF_STRING)
        return 8;
    if (t == GGUF_ARRAY)
        return 12;
    return vtype_fixed_size(t);
}

static bool vtype_is_int(uint32_t t)
{
    switch (t) {
    case GGUF_U8: case GGUF_I8: case GGUF_U16: case GGUF_I16:
    case GGUF_U32: case GGUF_I32: case GGUF_U64: case GGUF_I64:
        return true;
    default:
        return false;
    }
}

static bool vtype_is_signed(uint32_t t)
{
    return t == GGUF_I8 || t == GGUF_I16 || t == GGUF_I32 || t == GGUF_I64;
}

/* Decodes one fixed-size scalar at p into the matching member of the kv union. */
static void decode_scalar(uint32_t t, const uint8_t *p, struct gguf_kv *kv)
{
    switch (t) {
    case GGUF_U8: case GGUF_BOOL: kv->val.u = p[0]; break;
    case GGUF_I8: kv->val.i = (int8_t)p[0]; break;
    case GGUF_U16: kv->val.u = le16(p); break;
    case GGUF_I16: kv->val.i = (int16_t)le16(p); break;
    case GGUF_U32: kv->val.u = le32(p); break;
    case GGUF_I32: kv->val.i = (int32_t)le32(p); break;
    case GGUF_U64: kv->val.u = le64(p); break;
    case GGUF_I64: kv->val.i = (int64_t)le64(p); break;
    case GGUF_F32: {
        uint32_t bits = le32(p);
        float v;
        memcpy(&v, &bits, sizeof v);
        kv->val.f = v;
        break;
    }
    case GGUF_F64: {
        uint64_t bits = le64(p);
        double v;
        memcpy(&v, &bits, sizeof v);
        kv->val.f = v;
        break;
    }
    default: break;
    }
}

static int skip_array(struct reader *r, unsigned depth, uint32_t *type_out, uint64_t *n_out);

/* Reads an array's element type and count and checks the count could fit. */
static int array_header(struct reader *r, unsigned depth, uint32_t *type, uint64_t *n)
{
    if (depth > MAX_ARRAY_DEPTH)
        return fail(r, "%s: arrays nested more than %d deep", r->ctx, MAX_ARRAY_DEPTH);
    if (rd_u32(r, "array element type", type) || rd_u64(r, "array count", n))
        return -1;
    if (*type >= GGUF_VTYPE_COUNT)
        return fail(r, "%s: array of unknown value type %u", r->ctx, *type);
    size_t min = vtype_min_size(*type);
    if (*n > remain(r) / min)
        return fail(r, "%s: array count %llu of %s runs past end of file (%zu bytes remain, each element takes at least %zu)",
                    r->ctx, (unsigned long long)*n, gguf_vtype_name(*type), remain(r), min);
    return 0;
}

/* Walks every element of an array (recursing into nested arrays), so that nothing
 * inside it is trusted later without having been bounds-checked here. */
static int skip_array(struct reader *r, unsigned depth, uint32_t *type_out, uint64_t *n_out)
{
    uint32_t type = 0;
    uint64_t n = 0;
    if (array_header(r, depth, &type, &n))
        return -1;
    size_t fixed = vtype_fixed_size(type);
    if (fixed) {
        r->pos += (size_t)n * fixed; /* n <= remain / fixed, checked above */
    } else if (type == GGUF_STRING) {
        for (uint64_t i = 0; i < n; i++) {
            struct strview s;
            if (rd_str(r, "array element", &s))
                return -1;
        }
    } else {
        for (uint64_t i = 0; i < n; i++)
            if (skip_array(r, depth + 1, NULL, NULL))
                return -1;
    }
    if (type_out)
        *type_out = type;
    if (n_out)
        *n_out = n;
    return 0;
}

static int read_value(struct reader *r, struct gguf_kv *kv)
{
    if (kv->type == GGUF_STRING)
        return rd_str(r, "value", &kv->val.str);
    if (kv->type == GGUF_ARRAY) {
        size_t start = r->pos;
        if (skip_array(r, 1, &kv->arr_type, &kv->arr_n))
            return -1;
        kv->arr_data = r->p + start + 12;
        if (kv->arr_type != GGUF_STRING)
            return 0;
        /* The walk above proved all arr_n strings are present, so this allocation is
         * no larger than twice the bytes they occupy. */
        kv->strs = malloc(kv->arr_n ? (size_t)kv->arr_n * sizeof *kv->strs : 1);
        if (!kv->strs)
            return fail(r, "%s: out of memory for %llu strings", r->ctx, (unsigned long long)kv->arr_n);
        size_t p = start + 12;
        for (uint64_t i = 0; i < kv->arr_n; i++) {
            size_t len = (size_t)le64(r->p + p);
            kv->strs[i].ptr = (const char *)r->p + p + 8;
            kv->strs[i].len = len;
            p += 8 + len;
        }
        return 0;
    }
    size_t size = vtype_fixed_size(kv->type);
    if (need(r, size, "value"))
        return -1;
    decode_scalar(kv->type, r->p + r->pos, kv);
    r->pos += size;
    return 0;
}

static int cmp_strview(const struct strview *a, const struct strview *b)
{
    size_t n = a->len < b->len ? a->len : b->len;
    int c = n ? memcmp(a->ptr, b->ptr, n) : 0;
    if (c)
        return c;
    return (a->len > b->len) - (a->len < b->len);
}

static int cmp_kv_ptr(const void *a, const void *b)
{
    const struct gguf_kv *x = *(const struct gguf_kv *const *)a;
    const struct gguf_kv *y = *(const struct gguf_kv *const *)b;
    return cmp_strview(&x->key, &y->key);
}

static int cmp_tensor_name(const void *a, const void *b)
{
    const struct gguf_tensor *x = *(const struct gguf_tensor *const *)a;
    const struct gguf_tensor *y = *(const struct gguf_tensor *const *)b;
    return cmp_strview(&x->name, &y->name);
}

static int cmp_tensor_offset(const void *a, const void *b)
{
    const struct gguf_tensor *x = *(const struct gguf_tensor *const *)a;
    const struct gguf_tensor *y = *(const struct gguf_tensor *const *)b;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

/* Grows an array by doubling as records are actually parsed, so memory follows what
 * the file really holds rather than the count it claims. */
static int grow(struct reader *r, void **arr, uint64_t *cap, uint64_t used, size_t elem)
{
    if (used < *cap)
        return 0;
    uint64_t ncap = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, (size_t)ncap * elem);
    if (!p)
        return fail(r, "out of memory");
    *arr = p;
    *cap = ncap;
    return 0;
}

static int check_duplicate_keys(struct reader *r, const struct gguf_kv *kv, uint64_t n)
{
    if (n < 2)
        return 0;
    const struct gguf_kv **idx = malloc((size_t)n * sizeof *idx);
    if (!idx)
        return fail(r, "out of memory");
    for (uint64_t i = 0; i < n; i++)
        idx[i] = &kv[i];
    qsort(idx, (size_t)n, sizeof *idx, cmp_kv_ptr);
    int rc = 0;
    for (uint64_t i = 1; i < n; i++) {
        if (cmp_strview(&idx[i - 1]->key, &idx[i]->key) == 0) {
            char nb[80];
            rc = fail(r, "duplicate key '%s'", show(idx[i]->key, nb, sizeof nb));
            break;
        }
    }
    free(idx);
    return rc;
}

static bool kv_to_u32(const struct gguf_kv *kv, uint32_t *out)
{
    if (!vtype_is_int(kv->type))
        return false;
    if (vtype_is_signed(kv->type) ? kv->val.i < 0 || kv->val.i > (int64_t)UINT32_MAX
                                  : kv->val.u > UINT32_MAX)
        return false;
    *out = vtype_is_signed(kv->type) ? (uint32_t)kv->val.i : (uint32_t)kv->val.u;
    return true;
}

static int read_alignment(struct reader *r, const struct gguf_file *f, uint64_t *align)
{
    *align = GGUF_DEFAULT_ALIGNMENT;
    const struct gguf_kv *kv = gguf_find_kv(f, "general.alignment");
    if (!kv)
        return 0;
    uint32_t v;
    if (!vtype_is_int(kv->type))
        return fail(r, "general.alignment has type %s, expected U32", gguf_vtype_name(kv->type));
    if (!kv_to_u32(kv, &v)) {
        if (vtype_is_signed(kv->type))
            return fail(r, "general.alignment %lld does not fit in U32", (long long)kv->val.i);
        return fail(r, "general.alignment %llu does not fit in U32", (unsigned long long)kv->val.u);
    }
    if (v == 0 || (v & (v - 1)) != 0)
        return fail(r, "general.alignment %u is not a power of two", v);
    *align = v;
    return 0;
}

static int read_tensor_record(struct reader *r, uint64_t i, struct gguf_tensor *t)
{
    char nb[80];
    snprintf(r->ctx, sizeof r->ctx, "tensor %llu", (unsigned long long)i);
    if (rd_str(r, "name", &t->name))
        return -1;
    snprintf(r->ctx, sizeof r->ctx, "tensor '%s'", show(t->name, nb, sizeof nb));
    if (rd_u32(r, "n_dims", &t->n_dims))
        return -1;
    if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS)
        return fail(r, "%s: n_dims %u (must be 1 to %d)", r->ctx, t->n_dims, GGUF_MAX_DIMS);
    uint64_t n_values = 1;
    bool overflow = false;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        if (rd_u64(r, "dim", &t->ne[d]))
            return -1;
        if (t->ne[d] == 0)
            return fail(r, "%s: dim %u is 0", r->ctx, d);
        if (t->ne[d] > MAX_TENSOR_VALUES)
            return fail(r, "%s: dim %u = %llu is too large", r->ctx, d, (unsigned long long)t->ne[d]);
        if (!overflow && __builtin_mul_overflow(n_values, t->ne[d], &n_values))
            overflow = true;
    }
    if (overflow || n_values > MAX_TENSOR_VALUES) {
        char dims[128];
        int o = 0;
        for (uint32_t d = 0; d < t->n_dims; d++)
            o += snprintf(dims + o, sizeof dims - (size_t)o, "%s%llu", d ? ", " : "",
                          (unsigned long long)t->ne[d]);
        if (overflow)
            return fail(r, "%s: product of dims [%s] overflows 64 bits", r->ctx, dims);
        return fail(r, "%s: dims [%s] give %llu values, too large", r->ctx, dims,
                    (unsigned long long)n_values);
    }
    if (rd_u32(r, "type", &t->type))
        return -1;
    if (!ggml_type_known(t->type))
        return fail(r, "%s: unknown ggml type %u", r->ctx, t->type);
    uint32_t bl = ggml_type_block_len(t->type);
    if (t->ne[0] % bl != 0)
        return fail(r, "%s: row length %llu is not a multiple of the %s block length %u", r->ctx,
                    (unsigned long long)t->ne[0], ggml_type_name(t->type), bl);
    t->nbytes = ggml_tensor_nbytes(t->type, t->ne[0], n_values);
    if (t->nbytes == 0)
        return fail(r, "%s: size of %llu %s values overflows", r->ctx, (unsigned long long)n_values,
                    ggml_type_name(t->type));
    if (rd_u64(r, "offset", &t->offset))
        return -1;
    return 0;
}

/* Places every tensor in the data section and checks it lies inside the file and
 * apart from every other tensor. */
static int place_tensors(struct reader *r, struct gguf_file *f)
{
    char nb[80], nb2[80];
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        struct gguf_tensor *t = &f->tensors[i];
        const char *name = show(t->name, nb, sizeof nb);
        if (t->offset % f->alignment != 0)
            return fail(r, "tensor '%s' offset %llu is not a multiple of the alignment %llu", name,
                        (unsigned long long)t->offset, (unsigned long long)f->alignment);
        if (f->data_offset > r->size || t->offset >= r->size - f->data_offset)
            return fail(r, "tensor '%s' offset %llu is past end of file (data section starts at byte %llu, file is %zu bytes)",
                        name, (unsigned long long)t->offset, (unsigned long long)f->data_offset, r->size);
        uint64_t start = f->data_offset + t->offset;
        if (t->nbytes > r->size - start)
            return fail(r, "tensor '%s' data [%llu, %llu) runs past end of file (%zu bytes)", name,
                        (unsigned long long)start, (unsigned long long)(start + t->nbytes), r->size);
        t->data = r->p + start;
    }
    if (f->n_tensors < 2)
        return 0;
    const struct gguf_tensor **idx = malloc((size_t)f->n_tensors * sizeof *idx);
    if (!idx)
        return fail(r, "out of memory");
    for (uint64_t i = 0; i < f->n_tensors; i++)
        idx[i] = &f->tensors[i];
    int rc = 0;
    qsort(idx, (size_t)f->n_tensors, sizeof *idx, cmp_tensor_name);
    for (uint64_t i = 1; i < f->n_tensors && !rc; i++)
        if (cmp_strview(&idx[i - 1]->name, &idx[i]->name) == 0)
            rc = fail(r, "duplicate tensor name '%s'", show(idx[i]->name, nb, sizeof nb));
    if (!rc) {
        qsort(idx, (size_t)f->n_tensors, sizeof *idx, cmp_tensor_offset);
        for (uint64_t i = 1; i < f->n_tensors && !rc; i++) {
            const struct gguf_tensor *a = idx[i - 1], *b = idx[i];
            if (a->offset + a->nbytes > b->offset)
                rc = fail(r, "tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap",
                          show(a->name, nb, sizeof nb), (unsigned long long)a->offset,
                          (unsigned long long)(a->offset + a->nbytes), show(b->name, nb2, sizeof nb2),
                          (unsigned long long)b->offset, (unsigned long long)(b->offset + b->nbytes));
        }
    }
    free(idx);
    return rc;
}

static int parse(struct reader *r, struct gguf_file *f)
{
    char nb[80];
    if (r->size == 0)
        return fail(r, "empty file (0 bytes; not a GGUF file)");
    if (r->size < 4)
        return fail(r, "truncated header: file is %zu bytes, a GGUF header needs %d", r->size,
                    HEADER_BYTES);
    if (memcmp(r->p, "GGUF", 4) != 0) {
        struct strview m = {(const char *)r->p, 4};
        return fail(r, "bad magic '%s' (not a GGUF file)", show(m, nb, sizeof nb));
    }
    if (r->size < 8)
        return fail(r, "truncated header: file is %zu bytes, a GGUF header needs %d", r->size,
                    HEADER_BYTES);
    f->version = le32(r->p + 4);
    if (f->version != 3) {
        uint32_t v = f->version;
        uint32_t swapped = v >> 24 | (v >> 8 & 0xff00) | (v << 8 & 0xff0000) | v << 24;
        return fail(r, "unsupported GGUF version %u (only version 3 is supported%s)", v,
                    swapped == 3 ? "; this looks like a big-endian file" : "");
    }
    if (r->size < HEADER_BYTES)
        return fail(r, "truncated header: file is %zu bytes, a GGUF header needs %d", r->size,
                    HEADER_BYTES);
    f->n_tensors = le64(r->p + 8);
    f->n_kv = le64(r->p + 16);
    r->pos = HEADER_BYTES;
    uint64_t rem = remain(r);
    if (f->n_tensors > rem / MIN_TENSOR_BYTES)
        return fail(r, "tensor count %llu cannot fit in the %llu bytes that remain",
                    (unsigned long long)f->n_tensors, (unsigned long long)rem);
    if (f->n_kv > rem / MIN_KV_BYTES)
        return fail(r, "kv count %llu cannot fit in the %llu bytes that remain",
                    (unsigned long long)f->n_kv, (unsigned long long)rem);
    if (f->n_kv * MIN_KV_BYTES > rem - f->n_tensors * MIN_TENSOR_BYTES)
        return fail(r, "kv count %llu and tensor count %llu cannot both fit in the %llu bytes that remain",
                    (unsigned long long)f->n_kv, (unsigned long long)f->n_tensors,
                    (unsigned long long)rem);

    uint64_t cap = 0;
    uint64_t n_kv = f->n_kv;
    f->n_kv = 0; /* counts only parsed records, so cleanup frees exactly those */
    for (uint64_t i = 0; i < n_kv; i++) {
        if (grow(r, (void **)&f->kv, &cap, f->n_kv, sizeof *f->kv))
            return -1;
        struct gguf_kv *kv = &f->kv[f->n_kv];
        memset(kv, 0, sizeof *kv);
        f->n_kv++;
        snprintf(r->ctx, sizeof r->ctx, "key %llu", (unsigned long long)i);
        if (rd_str(r, "key", &kv->key))
            return -1;
        snprintf(r->ctx, sizeof r->ctx, "key '%s'", show(kv->key, nb, sizeof nb));
        if (rd_u32(r, "value type", &kv->type))
            return -1;
        if (kv->type >= GGUF_VTYPE_COUNT)
            return fail(r, "%s: unknown value type %u", r->ctx, kv->type);
        if (read_value(r, kv))
            return -1;
    }
    if (check_duplicate_keys(r, f->kv, f->n_kv))
        return -1;
    if (read_alignment(r, f, &f->alignment))
        return -1;

    cap = 0;
    uint64_t n_tensors = f->n_tensors;
    f->n_tensors = 0;
    for (uint64_t i = 0; i < n_tensors; i++) {
        if (grow(r, (void **)&f->tensors, &cap, f->n_tensors, sizeof *f->tensors))
            return -1;
        struct gguf_tensor *t = &f->tensors[f->n_tensors];
        memset(t, 0, sizeof *t);
        f->n_tensors++;
        if (read_tensor_record(r, i, t))
            return -1;
    }
    /* pos <= size < 2^63 and alignment <= 2^31, so this cannot wrap. */
    f->data_offset = ((uint64_t)r->pos + f->alignment - 1) / f->alignment * f->alignment;
    return place_tensors(r, f);
}

static void free_parsed(struct gguf_file *f)
{
    for (uint64_t i = 0; i < f->n_kv && f->kv; i++)
        free(f->kv[i].strs);
    free(f->kv);
    free(f->tensors);
    free(f->path);
}

/* Parses size bytes at map into f; on failure leaves f zeroed and the bytes untouched. */
static int open_bytes(struct gguf_file *f, const uint8_t *map, size_t size, const char *path,
                      struct errbuf *e)
{
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path)
        return err_set(e, "%s: out of memory", path);
    struct reader r = {.p = map, .size = size, .pos = 0, .path = path, .e = e};
    if (parse(&r, f) != 0) {
        free_parsed(f);
        memset(f, 0, sizeof *f);
        return -1;
    }
    f->map = map;
    f->size = size;
    return 0;
}

int gguf_open_mem(struct gguf_file *f, const void *data, size_t size, const char *name,
                  struct errbuf *e)
{
    memset(f, 0, sizeof *f);
    if (!data && size)
        return err_set(e, "%s: NULL data", name);
    return open_bytes(f, data, size, name, e);
}

int gguf_open(struct gguf_file *f, const char *path, struct errbuf *e)
{
    memset(f, 0, sizeof *f);
    struct stat st;
    int fd = input_open(path, 0, &st, e);
    if (fd < 0)
        return -1;
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return err_set(e, "%s: file of %lld bytes is too large to map", path, (long long)st.st_size);
    }
    size_t size = (size_t)st.st_size;
    const uint8_t *map = NULL;
    if (size > 0) {
        void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int err = errno;
            close(fd);
            return err_set(e, "%s: cannot map %zu bytes: %s", path, size, strerror(err));
        }
        map = m;
    }
    close(fd); /* the mapping keeps the file alive */
    if (open_bytes(f, map, size, path, e) != 0) {
        if (map)
            munmap((void *)map, size);
        return -1;
    }
    f->mapped = map != NULL;
    return 0;
}

void gguf_close(struct gguf_file *f)
{
    if (!f)
        return;
    free_parsed(f);
    if (f->map && f->mapped)
        munmap((void *)f->map, f->size);
    memset(f, 0, sizeof *f);
}

const struct gguf_kv *gguf_find_kv(const struct gguf_file *f, const char *key)
{
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (strview_eq(f->kv[i].key, key))
            return &f->kv[i];
    return NULL;
}

const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f, const char *name)
{
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (strview_eq(f->tensors[i].name, name))
            return &f->tensors[i];
    return NULL;
}

static const struct gguf_kv *find_typed(const struct gguf_file *f, const char *key, struct errbuf *e)
{
    const struct gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv)
        err_set(e, "%s: missing", key);
    return kv;
}

int gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out, struct errbuf *e)
{
    const struct gguf_kv *kv = find_typed(f, key, e);
    if (!kv)
        return -1;
    if (!vtype_is_int(kv->type))
        return err_set(e, "%s: is %s, expected an integer", key, gguf_vtype_name(kv->type));
    if (!kv_to_u32(kv, out)) {
        if (vtype_is_signed(kv->type))
            return err_set(e, "%s: value %lld does not fit in U32", key, (long long)kv->val.i);
        return err_set(e, "%s: value %llu does not fit in U32", key, (unsigned long long)kv->val.u);
    }
    return 0;
}

int gguf_get_f32(const struct gguf_file *f, const char *key, float *out, struct errbuf *e)
{
    const struct gguf_kv *kv = find_typed(f, key, e);
    if (!kv)
        return -1;
    if (kv->type != GGUF_F32 && kv->type != GGUF_F64)
        return err_set(e, "%s: is %s, expected F32 or F64", key, gguf_vtype_name(kv->type));
    float v = (float)kv->val.f;
    if (isinf(v) && !isinf(kv->val.f))
        return err_set(e, "%s: value %g does not fit in F32", key, kv->val.f);
    *out = v;
    return 0;
}

int gguf_get_bool(const struct gguf_file *f, const char *key, bool *out, struct errbuf *e)
{
    const struct gguf_kv *kv = find_typed(f, key, e);
    if (!kv)
        return -1;
    if (kv->type != GGUF_BOOL)
        return err_set(e, "%s: is %s, expected BOOL", key, gguf_vtype_name(kv->type));
    *out = kv->val.u != 0;
    return 0;
}

int gguf_get_str(const struct gguf_file *f, const char *key, struct strview *out, struct errbuf *e)
{
    const struct gguf_kv *kv = find_typed(f, key, e);
    if (!kv)
        return -1;
    if (kv->type != GGUF_STRING)
        return err_set(e, "%s: is %s, expected STRING", key, gguf_vtype_name(kv->type));
    *out = kv->val.str;
    return 0;
}

int gguf_get_arr_i32(const struct gguf_file *f, const char *key, int32_t **out, uint64_t *n,
                     struct errbuf *e)
{
    const struct gguf_kv *kv = find_typed(f, key, e);
    if (!kv)
        return -1;
    if (kv->type != GGUF_ARRAY || !vtype_is_int(kv->arr_type))
        return err_set(e, "%s: is %s%s%s, expected an array of integers", key,
                       gguf_vtype_name(kv->type), kv->type == GGUF_ARRAY ? " of " : "",
                       kv->type == GGUF_ARRAY ? gguf_vtype_name(kv->arr_type) : "");
    size_t size = vtype_fixed_size(kv->arr_type);
    int32_t *v = malloc(kv->arr_n ? (size_t)kv->arr_n * sizeof *v : 1);
    if (!v)
        return err_set(e, "%s: out of memory for %llu values", key, (unsigned long long)kv->arr_n);
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        struct gguf_kv one = {.type = kv->arr_type};
        decode_scalar(kv->arr_type, kv->arr_data + i * size, &one);
        bool fits;
        if (vtype_is_signed(one.type))
            fits = one.val.i >= INT32_MIN && one.val.i <= INT32_MAX;
        else
            fits = one.val.u <= INT32_MAX;
        if (!fits) {
            free(v);
            if (vtype_is_signed(one.type))
                return err_set(e, "%s: element %llu = %lld does not fit in I32", key,
                               (unsigned long long)i, (long long)one.val.i);
            return err_set(e, "%s: element %llu = %llu does not fit in I32", key,
                           (unsigned long long)i, (unsigned long long)one.val.u);
        }
        v[i] = vtype_is_signed(one.type) ? (int32_t)one.val.i : (int32_t)one.val.u;
    }
    *out = v;
    *n = kv->arr_n;
    return 0;
}

/* GGUF reader and writer: a round trip through every value and tensor type, the real
 * third-party tiny.gguf, hand-broken files that must each fail with a message naming
 * the fault, and a truncation/mutation sweep that must never read outside the file. */
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/ggml_types.h"
#include "model/gguf.h"
#include "model/gguf_write.h"
#include "tests/check.h"

struct ctx {
    char dir[64];
    char path[128]; /* scratch file, rewritten by each case */
};

static void put32(uint8_t *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *b, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

static uint8_t *read_all(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *buf = malloc(len > 0 ? (size_t)len : 1);
    if (buf && fread(buf, 1, (size_t)len, fp) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    *n = (size_t)len;
    return buf;
}

static void write_all(const char *path, const void *buf, size_t n)
{
    FILE *fp = fopen(path, "wb");
    CHECK(fp != NULL, "cannot create %s", path);
    if (!fp)
        return;
    CHECK(fwrite(buf, 1, n, fp) == n, "short write to %s", path);
    fclose(fp);
}

static uint8_t pattern(int t, uint64_t i)
{
    return (uint8_t)(t * 37 + i * 13 + 5);
}

/* Writes a whole file from a writer whose metadata and tensors are declared, filling
 * tensor t with pattern(t, i), in two pieces each to exercise the streaming. */
static int finish_file(struct gguf_writer *w, int n_tensors, const char *path)
{
    struct errbuf e = {{0}};
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return -1;
    int rc = gguf_w_begin(w, fp, &e);
    for (int t = 0; t < n_tensors && rc == 0; t++) {
        uint64_t n = gguf_w_tensor_nbytes(w, t);
        uint8_t *buf = malloc(n);
        for (uint64_t i = 0; i < n; i++)
            buf[i] = pattern(t, i);
        rc = gguf_w_data(w, fp, t, buf, n / 2, &e);
        if (rc == 0)
            rc = gguf_w_data(w, fp, t, buf + n / 2, n - n / 2, &e);
        free(buf);
    }
    if (rc == 0)
        rc = gguf_w_end(w, fp, &e);
    if (rc != 0)
        fprintf(stderr, "finish_file: %s\n", e.msg);
    fclose(fp);
    return rc;
}

/* ---- 1. round trip ---- */

struct tdesc {
    const char *name;
    uint32_t type;
    uint32_t n_dims;
    uint64_t ne[4];
    uint64_t nbytes;
};

static const struct tdesc rt_tensors[] = {
    {"t.f32", GGML_TYPE_F32, 2, {4, 3, 1, 1}, 48},
    {"t.f16", GGML_TYPE_F16, 3, {8, 2, 2, 1}, 64},
    {"t.bf16", GGML_TYPE_BF16, 1, {6, 1, 1, 1}, 12},
    {"t.q8_0", GGML_TYPE_Q8_0, 2, {64, 2, 1, 1}, 4 * 34},
    {"t.tq1_0", GGML_TYPE_TQ1_0, 2, {256, 2, 1, 1}, 2 * 54},
    {"t.tq2_0", GGML_TYPE_TQ2_0, 1, {512, 1, 1, 1}, 2 * 66},
    {"t.i2_s", GGML_TYPE_I2_S, 4, {128, 3, 1, 2}, 768 / 4 + 32},
};
#define N_RT (int)(sizeof rt_tensors / sizeof rt_tensors[0])

static void round_trip(struct ctx *c, uint32_t alignment)
{
    struct errbuf e = {{0}};
    struct gguf_writer *w = gguf_writer_new();
    uint8_t b[16];

    gguf_w_str(w, "general.architecture", "bitnet-b1.58");
    if (alignment)
        gguf_w_u32(w, "general.alignment", alignment);
    b[0] = 200;
    gguf_w_raw(w, "v.u8", GGUF_U8, b, 1);
    b[0] = (uint8_t)-100;
    gguf_w_raw(w, "v.i8", GGUF_I8, b, 1);
    b[0] = 0x34, b[1] = 0xd2; /* 53812 */
    gguf_w_raw(w, "v.u16", GGUF_U16, b, 2);
    b[0] = 0x2e, b[1] = 0xfb; /* -1234 */
    gguf_w_raw(w, "v.i16", GGUF_I16, b, 2);
    gguf_w_u32(w, "v.u32", 4000000000u);
    gguf_w_i32(w, "v.i32", -123456);
    gguf_w_f32(w, "v.f32", 1e-5f);
    gguf_w_bool(w, "v.bool", true);
    gguf_w_bool(w, "v.false", false);
    gguf_w_str(w, "v.str", "h\xc3\xa9llo");
    gguf_w_str(w, "v.empty", "");
    gguf_w_u64(w, "v.u64", UINT64_C(0xfedcba9876543210));
    put64(b, (uint64_t)INT64_C(-5000000000));
    gguf_w_raw(w, "v.i64", GGUF_I64, b, 8);
    double d = 500000.25;
    memcpy(b, &d, 8);
    gguf_w_raw(w, "v.f64", GGUF_F64, b, 8);
    gguf_w_u64(w, "v.small_u64", 77);

    const int32_t ints[] = {0, -1, 2147483647, -2147483647 - 1, 42};
    gguf_w_arr_i32(w, "a.i32", ints, 5);
    const float floats[] = {0.5f, -2.0f, 1e30f};
    gguf_w_arr_f32(w, "a.f32", floats, 3);
    const struct strview strs[] = {{"Ġthe", 5}, {"", 0}, {"a\0b", 3}, {"<|begin_of_text|>", 17}};
    gguf_w_arr_str(w, "a.str", strs, 4);
    gguf_w_arr_i32(w, "a.empty", NULL, 0);
    /* U16 elements convert to int32; U64 elements beyond int32 must not. */
    uint8_t u16arr[12 + 6];
    put32(u16arr, GGUF_U16);
    put64(u16arr + 4, 3);
    put32(u16arr + 12, 0xffff0007u);
    u16arr[16] = 1, u16arr[17] = 0;
    gguf_w_raw(w, "a.u16", GGUF_ARRAY, u16arr, sizeof u16arr);
    uint8_t u64arr[12 + 16];
    put32(u64arr, GGUF_U64);
    put64(u64arr + 4, 2);
    put64(u64arr + 12, 1);
    put64(u64arr + 20, UINT64_C(1) << 40);
    gguf_w_raw(w, "a.u64", GGUF_ARRAY, u64arr, sizeof u64arr);
    /* An array of two arrays: [[1, 2], ["x"]]. */
    uint8_t nested[12 + (12 + 2) + (12 + 9)];
    size_t o = 0;
    put32(nested + o, GGUF_ARRAY), put64(nested + o + 4, 2), o += 12;
    put32(nested + o, GGUF_U8), put64(nested + o + 4, 2), o += 12;
    nested[o++] = 1, nested[o++] = 2;
    put32(nested + o, GGUF_STRING), put64(nested + o + 4, 1), o += 12;
    put64(nested + o, 1), o += 8;
    nested[o++] = 'x';
    CHECK(o == sizeof nested, "nested size %zu", o);
    gguf_w_raw(w, "a.nested", GGUF_ARRAY, nested, sizeof nested);

    for (int t = 0; t < N_RT; t++) {
        const struct tdesc *td = &rt_tensors[t];
        int idx = gguf_w_tensor(w, td->name, td->type, td->n_dims, td->ne, &e);
        CHECK(idx == t, "declare %s: %d %s", td->name, idx, e.msg);
        CHECK(gguf_w_tensor_nbytes(w, idx) == td->nbytes, "%s nbytes %llu", td->name,
              (unsigned long long)gguf_w_tensor_nbytes(w, idx));
    }
    CHECK(finish_file(w, N_RT, c->path) == 0, "write round-trip file");
    gguf_writer_free(w);

    struct gguf_file f;
    int rc = gguf_open(&f, c->path, &e);
    CHECK(rc == 0, "open round trip: %s", e.msg);
    if (rc != 0)
        return;
    uint32_t align = alignment ? alignment : 32;
    CHECK(f.version == 3, "version %u", f.version);
    CHECK(f.alignment == align, "alignment %llu", (unsigned long long)f.alignment);
    CHECK(f.data_offset % align == 0, "data offset %llu", (unsigned long long)f.data_offset);
    CHECK(f.size % align == 0, "file size %zu not padded to %u", f.size, align);
    CHECK(f.n_kv == (alignment ? 24u : 23u), "n_kv %llu", (unsigned long long)f.n_kv);
    CHECK(f.n_tensors == (uint64_t)N_RT, "n_tensors %llu", (unsigned long long)f.n_tensors);
    CHECK(strview_eq(f.kv[0].key, "general.architecture"), "keys keep their order");

    const struct gguf_kv *kv;
    struct strview sv;
    uint32_t u32;
    float f32;
    bool bl;
#define KV(key, vt) ((kv = gguf_find_kv(&f, key)) != NULL && kv->type == (vt))
    CHECK(KV("v.u8", GGUF_U8) && kv->val.u == 200, "u8");
    CHECK(KV("v.i8", GGUF_I8) && kv->val.i == -100, "i8");
    CHECK(KV("v.u16", GGUF_U16) && kv->val.u == 53812, "u16");
    CHECK(KV("v.i16", GGUF_I16) && kv->val.i == -1234, "i16");
    CHECK(KV("v.u32", GGUF_U32) && kv->val.u == 4000000000u, "u32");
    CHECK(KV("v.i32", GGUF_I32) && kv->val.i == -123456, "i32");
    CHECK(KV("v.f32", GGUF_F32) && kv->val.f == (double)1e-5f, "f32");
    CHECK(KV("v.bool", GGUF_BOOL) && kv->val.u == 1, "bool");
    CHECK(KV("v.str", GGUF_STRING) && strview_eq(kv->val.str, "h\xc3\xa9llo"), "str");
    CHECK(KV("v.empty", GGUF_STRING) && kv->val.str.len == 0, "empty str");
    CHECK(KV("v.u64", GGUF_U64) && kv->val.u == UINT64_C(0xfedcba9876543210), "u64");
    CHECK(KV("v.i64", GGUF_I64) && kv->val.i == INT64_C(-5000000000), "i64");
    CHECK(KV("v.f64", GGUF_F64) && kv->val.f == 500000.25, "f64");
    if (alignment)
        CHECK(KV("general.alignment", GGUF_U32) && kv->val.u == alignment, "alignment kv");
    else
        CHECK(gguf_find_kv(&f, "general.alignment") == NULL, "alignment written unasked");

    CHECK(gguf_get_str(&f, "general.architecture", &sv, &e) == 0 && strview_eq(sv, "bitnet-b1.58"),
          "get_str");
    CHECK(gguf_get_u32(&f, "v.u8", &u32, &e) == 0 && u32 == 200, "get_u32 from u8");
    CHECK(gguf_get_u32(&f, "v.u32", &u32, &e) == 0 && u32 == 4000000000u, "get_u32");
    CHECK(gguf_get_u32(&f, "v.small_u64", &u32, &e) == 0 && u32 == 77, "get_u32 from u64");
    CHECK(gguf_get_u32(&f, "v.u64", &u32, &e) == -1 && strstr(e.msg, "does not fit"), "%s", e.msg);
    CHECK(gguf_get_u32(&f, "v.i32", &u32, &e) == -1 && strstr(e.msg, "v.i32: value -123456"), "%s",
          e.msg);
    CHECK(gguf_get_u32(&f, "v.f32", &u32, &e) == -1 && strstr(e.msg, "expected an integer"), "%s",
          e.msg);
    CHECK(gguf_get_u32(&f, "nope", &u32, &e) == -1 && strcmp(e.msg, "nope: missing") == 0, "%s",
          e.msg);
    CHECK(gguf_get_f32(&f, "v.f32", &f32, &e) == 0 && f32 == 1e-5f, "get_f32");
    CHECK(gguf_get_f32(&f, "v.f64", &f32, &e) == 0 && f32 == 500000.25f, "get_f32 from f64");
    CHECK(gguf_get_f32(&f, "v.u32", &f32, &e) == -1 && strstr(e.msg, "is U32"), "%s", e.msg);
    CHECK(gguf_get_bool(&f, "v.bool", &bl, &e) == 0 && bl, "get_bool");
    CHECK(gguf_get_bool(&f, "v.false", &bl, &e) == 0 && !bl, "get_bool false");
    CHECK(gguf_get_bool(&f, "v.u8", &bl, &e) == -1 && strstr(e.msg, "expected BOOL"), "%s", e.msg);
    CHECK(gguf_get_str(&f, "v.u8", &sv, &e) == -1 && strstr(e.msg, "expected STRING"), "%s", e.msg);

    int32_t *iv = NULL;
    uint64_t n = 0;
    CHECK(gguf_get_arr_i32(&f, "a.i32", &iv, &n, &e) == 0 && n == 5 && iv &&
              memcmp(iv, ints, sizeof ints) == 0, "get_arr_i32");
    free(iv);
    iv = NULL;
    CHECK(gguf_get_arr_i32(&f, "a.u16", &iv, &n, &e) == 0 && n == 3 && iv && iv[0] == 7 &&
              iv[1] == 65535 && iv[2] == 1, "get_arr_i32 from u16");
    free(iv);
    iv = NULL;
    CHECK(gguf_get_arr_i32(&f, "a.empty", &iv, &n, &e) == 0 && n == 0, "empty array");
    free(iv);
    iv = NULL;
    CHECK(gguf_get_arr_i32(&f, "a.u64", &iv, &n, &e) == -1 && strstr(e.msg, "element 1") && !iv,
          "%s", e.msg);
    CHECK(gguf_get_arr_i32(&f, "a.f32", &iv, &n, &e) == -1 && strstr(e.msg, "ARRAY of F32"), "%s",
          e.msg);
    CHECK(KV("a.f32", GGUF_ARRAY) && kv->arr_type == GGUF_F32 && kv->arr_n == 3, "f32 array");
    if (kv && kv->arr_data) {
        float got[3];
        memcpy(got, kv->arr_data, sizeof got); /* little-endian host */
        CHECK(memcmp(got, floats, sizeof got) == 0, "f32 array values");
    }
    CHECK(KV("a.str", GGUF_ARRAY) && kv->arr_type == GGUF_STRING && kv->arr_n == 4 && kv->strs,
          "str array");
    if (kv && kv->strs && kv->arr_n == 4)
        for (int i = 0; i < 4; i++)
            CHECK(kv->strs[i].len == strs[i].len && memcmp(kv->strs[i].ptr, strs[i].ptr, strs[i].len) == 0,
                  "str array element %d", i);
    CHECK(KV("a.nested", GGUF_ARRAY) && kv->arr_type == GGUF_ARRAY && kv->arr_n == 2 &&
              memcmp(kv->arr_data, nested + 12, sizeof nested - 12) == 0,
          "nested array");
#undef KV

    for (int t = 0; t < N_RT; t++) {
        const struct tdesc *td = &rt_tensors[t];
        const struct gguf_tensor *ft = gguf_find_tensor(&f, td->name);
        CHECK(ft == &f.tensors[t], "tensor %s found in order", td->name);
        if (!ft)
            continue;
        CHECK(ft->type == td->type, "%s type %u", td->name, ft->type);
        CHECK(ft->n_dims == td->n_dims, "%s n_dims %u", td->name, ft->n_dims);
        for (int d = 0; d < 4; d++)
            CHECK(ft->ne[d] == td->ne[d], "%s ne[%d] %llu", td->name, d, (unsigned long long)ft->ne[d]);
        CHECK(ft->nbytes == td->nbytes, "%s nbytes %llu", td->name, (unsigned long long)ft->nbytes);
        CHECK(ft->offset % align == 0, "%s offset %llu", td->name, (unsigned long long)ft->offset);
        CHECK(ft->data == f.map + f.data_offset + ft->offset, "%s data pointer", td->name);
        uint64_t bad = 0;
        for (uint64_t i = 0; i < ft->nbytes; i++)
            bad += ft->data[i] != pattern(t, i);
        CHECK(bad == 0, "%s: %llu data bytes differ", td->name, (unsigned long long)bad);
    }
    CHECK(gguf_find_tensor(&f, "t.f3") == NULL, "prefix is not a match");
    gguf_close(&f);
    gguf_close(&f); /* closing twice is harmless */
}

static void test_types(void)
{
    CHECK(strcmp(ggml_type_name(GGML_TYPE_I2_S), "I2_S") == 0, "name I2_S");
    CHECK(strcmp(ggml_type_name(GGML_TYPE_BF16), "BF16") == 0, "name BF16");
    CHECK(ggml_type_name(2) == NULL && !ggml_type_known(99), "unknown types");
    CHECK(ggml_type_is_ternary(GGML_TYPE_TQ1_0) && !ggml_type_is_ternary(GGML_TYPE_Q8_0), "ternary");
    CHECK(ggml_type_block_len(GGML_TYPE_TQ2_0) == 256 && ggml_type_block_len(GGML_TYPE_F16) == 1,
          "block len");
    CHECK(ggml_tensor_nbytes(GGML_TYPE_I2_S, 2560, 2560ull * 6912) == 2560ull * 6912 / 4 + 32, "i2_s");
    CHECK(ggml_tensor_nbytes(GGML_TYPE_I2_S, 64, 128) == 0, "i2_s short row");
    CHECK(ggml_tensor_nbytes(GGML_TYPE_Q8_0, 33, 66) == 0, "q8_0 odd row");
    CHECK(ggml_tensor_nbytes(GGML_TYPE_Q8_0, 32, 96) == 3 * 34, "q8_0");
    CHECK(ggml_tensor_nbytes(GGML_TYPE_F32, 4, 10) == 0, "values not whole rows");
    CHECK(ggml_tensor_nbytes(GGML_TYPE_F32, 1, UINT64_C(1) << 62) == 0, "f32 overflow");
    CHECK(ggml_tensor_nbytes(GGML_TYPE_TQ1_0, 256, UINT64_C(1) << 63) == (UINT64_C(1) << 55) * 54,
          "tq1_0 large");
    CHECK(ggml_tensor_nbytes(GGML_TYPE_Q8_0, 32, UINT64_MAX / 32 * 32) == 0, "q8_0 overflow");
    CHECK(ggml_tensor_nbytes(GGML_TYPE_I2_S, 128, UINT64_MAX / 128 * 128) == UINT64_MAX / 128 * 128 / 4 + 32,
          "i2_s large");
    CHECK(ggml_tensor_nbytes(7, 32, 32) == 0, "unknown type size");
}

static void test_writer_misuse(struct ctx *c)
{
    struct errbuf e = {{0}};
    const uint64_t ne[2] = {32, 2};
    struct gguf_writer *w = gguf_writer_new();
    CHECK(gguf_w_tensor(w, "q", GGML_TYPE_Q8_0, 1, (const uint64_t[]){33}, &e) == -1 &&
              strstr(e.msg, "row length 33"), "%s", e.msg);
    CHECK(gguf_w_tensor(w, "q", 99, 1, ne, &e) == -1 && strstr(e.msg, "unknown ggml type 99"), "%s",
          e.msg);
    CHECK(gguf_w_tensor(w, "q", GGML_TYPE_F32, 5, ne, &e) == -1 && strstr(e.msg, "n_dims 5"), "%s",
          e.msg);
    CHECK(gguf_w_tensor(w, "a", GGML_TYPE_F32, 2, ne, &e) == 0, "%s", e.msg);
    CHECK(gguf_w_tensor(w, "a", GGML_TYPE_F32, 2, ne, &e) == -1 &&
              strstr(e.msg, "duplicate tensor name 'a'"), "%s", e.msg);
    CHECK(gguf_w_tensor(w, "b", GGML_TYPE_F16, 2, ne, &e) == 1, "%s", e.msg);
    FILE *fp = fopen(c->path, "wb");
    uint8_t buf[512] = {0};
    CHECK(gguf_w_data(w, fp, 0, buf, 8, &e) == -1 && strstr(e.msg, "before gguf_w_begin"), "%s", e.msg);
    CHECK(gguf_w_begin(w, fp, &e) == 0, "%s", e.msg);
    CHECK(gguf_w_tensor(w, "c", GGML_TYPE_F32, 2, ne, &e) == -1 && strstr(e.msg, "after gguf_w_begin"),
          "%s", e.msg);
    CHECK(gguf_w_begin(w, fp, &e) == -1 && strstr(e.msg, "twice"), "%s", e.msg);
    CHECK(gguf_w_data(w, fp, 1, buf, 8, &e) == -1 && strstr(e.msg, "declaration order"), "%s", e.msg);
    CHECK(gguf_w_data(w, fp, 0, buf, 300, &e) == -1 && strstr(e.msg, "exceed its size 256"), "%s",
          e.msg);
    CHECK(gguf_w_data(w, fp, 0, buf, 100, &e) == 0, "%s", e.msg);
    CHECK(gguf_w_end(w, fp, &e) == -1 && strstr(e.msg, "'a' has 100 of 256 bytes"), "%s", e.msg);
    CHECK(gguf_w_data(w, fp, 0, buf, 156, &e) == 0, "%s", e.msg);
    CHECK(gguf_w_data(w, fp, 0, buf, 1, &e) == -1 && strstr(e.msg, "already complete"), "%s", e.msg);
    CHECK(gguf_w_data(w, fp, 2, buf, 1, &e) == -1 && strstr(e.msg, "no tensor 2"), "%s", e.msg);
    CHECK(gguf_w_data(w, fp, 1, buf, 128, &e) == 0, "%s", e.msg);
    CHECK(gguf_w_end(w, fp, &e) == 0, "%s", e.msg);
    CHECK(gguf_w_end(w, fp, &e) == -1 && strstr(e.msg, "twice"), "%s", e.msg);
    fclose(fp);
    gguf_writer_free(w);

    w = gguf_writer_new();
    gguf_w_u32(w, "k", 1);
    gguf_w_u32(w, "k", 2);
    fp = fopen(c->path, "wb");
    CHECK(gguf_w_begin(w, fp, &e) == -1 && strstr(e.msg, "duplicate key 'k'"), "%s", e.msg);
    fclose(fp);
    gguf_writer_free(w);

    w = gguf_writer_new();
    gguf_w_u32(w, "general.alignment", 48);
    fp = fopen(c->path, "wb");
    CHECK(gguf_w_begin(w, fp, &e) == -1 && strstr(e.msg, "48 is not a power of two"), "%s", e.msg);
    fclose(fp);
    gguf_writer_free(w);

    w = gguf_writer_new();
    gguf_w_u64(w, "general.alignment", 64);
    fp = fopen(c->path, "wb");
    CHECK(gguf_w_begin(w, fp, &e) == -1 && strstr(e.msg, "gguf_w_u32"), "%s", e.msg);
    fclose(fp);
    gguf_writer_free(w);
}

/* ---- 2. the real third-party file ---- */

static void test_tiny(void)
{
    const char *path = SHARED_DATA("xval/tiny.gguf");
    if (shared_data_missing()) {
        check_not_run("reading a GGUF file written by a third-party writer (tiny.gguf's "
                      "metadata, tokens and tensor table)", "xval/tiny.gguf");
        return;
    }
    struct gguf_file f;
    struct errbuf e = {{0}};
    int rc = gguf_open(&f, path, &e);
    CHECK(rc == 0, "open %s: %s", path, e.msg);
    if (rc != 0)
        return;
    struct strview arch;
    CHECK(gguf_get_str(&f, "general.architecture", &arch, &e) == 0 && strview_eq(arch, "bitnet-b1.58"),
          "architecture: %s", e.msg);
    CHECK(f.n_tensors == 46, "tensor count %llu", (unsigned long long)f.n_tensors);
    CHECK(f.n_kv == 21, "kv count %llu", (unsigned long long)f.n_kv);
    CHECK(f.alignment == 32, "alignment %llu", (unsigned long long)f.alignment);
    const struct gguf_kv *tok = gguf_find_kv(&f, "tokenizer.ggml.tokens");
    CHECK(tok && tok->type == GGUF_ARRAY && tok->arr_type == GGUF_STRING && tok->arr_n == 128256 &&
              tok->strs,
          "tokenizer.ggml.tokens");
    if (tok && tok->strs && tok->arr_n == 128256) {
        CHECK(strview_eq(tok->strs[128000], "<|begin_of_text|>"), "token 128000");
        CHECK(strview_eq(tok->strs[0], "!"), "token 0");
    }
    const struct gguf_tensor *q = gguf_find_tensor(&f, "blk.0.attn_q.weight");
    CHECK(q && q->type == GGML_TYPE_I2_S && q->n_dims == 2 && q->ne[0] == 256 && q->ne[1] == 256 &&
              q->nbytes == 256 * 256 / 4 + 32,
          "blk.0.attn_q.weight");
    const struct gguf_tensor *emb = gguf_find_tensor(&f, "token_embd.weight");
    CHECK(emb && emb->type == GGML_TYPE_F16 && emb->ne[0] == 256 && emb->ne[1] == 128256,
          "token_embd.weight");
    CHECK(gguf_find_tensor(&f, "blk.3.ffn_down.weight") && !gguf_find_tensor(&f, "blk.4.ffn_down.weight"),
          "4 layers");
    uint32_t v;
    CHECK(gguf_get_u32(&f, "bitnet-b1.58.block_count", &v, &e) == 0 && v == 4, "block_count: %s", e.msg);
    gguf_close(&f);
}

/* ---- 3. hostile files ---- */

/* A small valid file: two keys, an i32 array, and tensors tensor.a F32 [8] and
 * tensor.b F32 [8, 2]; layout offsets are found by searching, not hard-coded. */
static void build_small(const char *path, const char *extra_key, uint32_t extra_vt, const void *extra,
                        uint64_t extra_len)
{
    struct errbuf e = {{0}};
    struct gguf_writer *w = gguf_writer_new();
    gguf_w_str(w, "general.architecture", "bitnet-b1.58");
    gguf_w_u32(w, "k.u32", 7);
    const int32_t ints[] = {1, 2, 3};
    gguf_w_arr_i32(w, "k.arr", ints, 3);
    if (extra_key)
        gguf_w_raw(w, extra_key, extra_vt, extra, extra_len);
    CHECK(gguf_w_tensor(w, "tensor.a", GGML_TYPE_F32, 1, (const uint64_t[]){8}, &e) == 0, "%s", e.msg);
    CHECK(gguf_w_tensor(w, "tensor.b", GGML_TYPE_F32, 2, (const uint64_t[]){8, 2}, &e) == 1, "%s", e.msg);
    CHECK(finish_file(w, 2, path) == 0, "build_small");
    gguf_writer_free(w);
}

static size_t find_bytes(const uint8_t *buf, size_t n, const char *s)
{
    void *p = memmem(buf, n, s, strlen(s));
    CHECK(p != NULL, "'%s' not in file", s);
    return p ? (size_t)((const uint8_t *)p - buf) : 0;
}

/* Position of field in tensor record `name`: 0 n_dims, 1.. dims, then type, offset. */
static size_t tensor_field(const uint8_t *buf, size_t n, const char *name, const char *field)
{
    size_t p = find_bytes(buf, n, name) + strlen(name);
    uint32_t n_dims = buf[p];
    if (strcmp(field, "n_dims") == 0)
        return p;
    if (strcmp(field, "dims") == 0)
        return p + 4;
    if (strcmp(field, "type") == 0)
        return p + 4 + 8 * n_dims;
    return p + 4 + 8 * n_dims + 4; /* offset */
}

static void expect_fail(struct ctx *c, const char *what, const char *needle)
{
    struct gguf_file f;
    struct errbuf e = {{0}};
    strcpy(e.msg, "(untouched)");
    int rc = gguf_open(&f, c->path, &e);
    CHECK(rc == -1, "%s: opened without error", what);
    CHECK(strstr(e.msg, needle) != NULL, "%s: message '%s' lacks '%s'", what, e.msg, needle);
    size_t pl = strlen(c->path);
    CHECK(strncmp(e.msg, c->path, pl) == 0 && strncmp(e.msg + pl, ": ", 2) == 0,
          "%s: message '%s' does not start with the path", what, e.msg);
    CHECK(f.map == NULL && f.kv == NULL && f.tensors == NULL && f.path == NULL, "%s: f not closed", what);
    gguf_close(&f);
    if (getenv("TEST_GGUF_VERBOSE"))
        printf("  %-28s %s\n", what, e.msg);
}

/* Writes base with the given patch applied and expects a failure naming needle. */
static void patched(struct ctx *c, const uint8_t *base, size_t n, size_t at, const void *bytes,
                    size_t len, const char *what, const char *needle)
{
    uint8_t *buf = malloc(n);
    memcpy(buf, base, n);
    CHECK(at + len <= n, "%s: patch outside file", what);
    if (at + len <= n)
        memcpy(buf + at, bytes, len);
    write_all(c->path, buf, n);
    free(buf);
    expect_fail(c, what, needle);
}

static void patch64(struct ctx *c, const uint8_t *base, size_t n, size_t at, uint64_t v,
                    const char *what, const char *needle)
{
    uint8_t b[8];
    put64(b, v);
    patched(c, base, n, at, b, 8, what, needle);
}

static void patch32(struct ctx *c, const uint8_t *base, size_t n, size_t at, uint32_t v,
                    const char *what, const char *needle)
{
    uint8_t b[4];
    put32(b, v);
    patched(c, base, n, at, b, 4, what, needle);
}

static void test_hostile(struct ctx *c)
{
    size_t n;
    build_small(c->path, NULL, 0, NULL, 0);
    uint8_t *base = read_all(c->path, &n);
    CHECK(base && n > 200, "small file");
    if (!base)
        return;
    {
        struct gguf_file f;
        struct errbuf e = {{0}};
        CHECK(gguf_open(&f, c->path, &e) == 0, "small file opens: %s", e.msg);
        gguf_close(&f);
    }

    patched(c, base, n, 0, "GGUX", 4, "bad magic", "bad magic 'GGUX' (not a GGUF file)");
    patched(c, base, n, 0, "\x00\x01GG", 4, "binary magic", "bad magic '\\x00\\x01GG'");
    write_all(c->path, base, 0);
    expect_fail(c, "empty file", "empty file");
    write_all(c->path, base, 2);
    expect_fail(c, "2-byte file", "truncated header");
    write_all(c->path, base, 10);
    expect_fail(c, "short header", "truncated header: file is 10 bytes");
    patch32(c, base, n, 4, 2, "version 2", "unsupported GGUF version 2");
    patch32(c, base, n, 4, 4, "version 4", "unsupported GGUF version 4");
    patch32(c, base, n, 4, 0x03000000, "big-endian", "big-endian");
    patch64(c, base, n, 24, 100000, "key length past end", "key 0: key string length 100000 at byte 24 runs past end");
    patch64(c, base, n, 16, UINT64_C(1) << 60, "kv count 2^60", "kv count 1152921504606846976 cannot fit");
    patch64(c, base, n, 8, UINT64_C(1) << 60, "tensor count 2^60",
            "tensor count 1152921504606846976 cannot fit");
    patch64(c, base, n, 16, 5, "one kv too many", "tensor 0: name string length");
    patch64(c, base, n, 8, 3, "one tensor too many", "tensor '': n_dims 0");
    size_t vt = find_bytes(base, n, "general.architecture") + strlen("general.architecture");
    patch32(c, base, n, vt, 13, "unknown value type", "key 'general.architecture': unknown value type 13");
    patch64(c, base, n, vt + 4, 1000, "value string past end", "value string length 1000");
    size_t arr = find_bytes(base, n, "k.arr") + strlen("k.arr");
    patch64(c, base, n, arr + 8, UINT64_C(1) << 40, "array count past end",
            "key 'k.arr': array count 1099511627776 of I32 runs past end");
    patch32(c, base, n, arr + 4, 77, "unknown array type", "array of unknown value type 77");
    size_t nd = tensor_field(base, n, "tensor.a", "n_dims");
    patch32(c, base, n, nd, 0, "n_dims 0", "tensor 'tensor.a': n_dims 0");
    patch32(c, base, n, nd, 9, "n_dims 9", "tensor 'tensor.a': n_dims 9");
    patch64(c, base, n, tensor_field(base, n, "tensor.a", "dims"), UINT64_C(1) << 62, "dim 2^62",
            "dim 0 = 4611686018427387904 is too large");
    patch64(c, base, n, tensor_field(base, n, "tensor.a", "dims"), 0, "dim 0", "dim 0 is 0");
    {
        uint8_t d2[16];
        put64(d2, UINT64_C(1) << 40);
        put64(d2 + 8, UINT64_C(1) << 40);
        patched(c, base, n, tensor_field(base, n, "tensor.b", "dims"), d2, 16, "dims overflow",
                "product of dims [1099511627776, 1099511627776] overflows");
        put64(d2, UINT64_C(1) << 30);
        put64(d2 + 8, UINT64_C(1) << 30);
        patched(c, base, n, tensor_field(base, n, "tensor.b", "dims"), d2, 16, "dims huge",
                "values, too large");
    }
    patch32(c, base, n, tensor_field(base, n, "tensor.a", "type"), 99, "ggml type 99",
            "tensor 'tensor.a': unknown ggml type 99");
    patch32(c, base, n, tensor_field(base, n, "tensor.a", "type"), GGML_TYPE_Q8_0, "row not a block",
            "row length 8 is not a multiple of the Q8_0 block length 32");
    size_t ob = tensor_field(base, n, "tensor.b", "offset");
    patch64(c, base, n, ob, UINT64_C(1) << 20, "offset past end",
            "tensor 'tensor.b' offset 1048576 is past end of file");
    patch64(c, base, n, ob, UINT64_MAX - 31, "offset near 2^64", "is past end of file");
    patch64(c, base, n, ob, 36, "offset unaligned", "tensor 'tensor.b' offset 36 is not a multiple of the alignment 32");
    patch64(c, base, n, ob, 0, "overlap", "overlap");
    patch64(c, base, n, tensor_field(base, n, "tensor.b", "dims") + 8, 200, "data past end",
            "tensor 'tensor.b' data [");
    patch64(c, base, n, tensor_field(base, n, "tensor.b", "dims") + 8, 200, "data past end 2",
            "runs past end of file");
    write_all(c->path, base, n - 40);
    expect_fail(c, "truncated data", "runs past end of file");
    patched(c, base, n, find_bytes(base, n, "tensor.b") + 7, "a", 1, "duplicate tensor",
            "duplicate tensor name 'tensor.a'");
    patched(c, base, n, find_bytes(base, n, "k.arr") + 2, "u32", 3, "duplicate key", "duplicate key 'k.u32'");
    free(base);

    uint8_t v[4];
    put32(v, 0);
    build_small(c->path, "general.alignment", GGUF_U32, v, 4);
    expect_fail(c, "alignment 0", "general.alignment 0 is not a power of two");
    put32(v, 3);
    build_small(c->path, "general.alignment", GGUF_U32, v, 4);
    expect_fail(c, "alignment 3", "general.alignment 3 is not a power of two");
    build_small(c->path, "general.alignment", GGUF_STRING, "\x01\0\0\0\0\0\0\0x", 9);
    expect_fail(c, "alignment string", "general.alignment has type STRING");
    put32(v, 64);
    build_small(c->path, "general.alignment", GGUF_U32, v, 4);
    expect_fail(c, "alignment 64 with 32 layout", "not a multiple of the alignment 64");

    /* Arrays nested beyond the depth limit. */
    uint8_t deep[12 * 12];
    for (int i = 0; i < 12; i++) {
        put32(deep + 12 * i, i == 11 ? GGUF_U8 : GGUF_ARRAY);
        put64(deep + 12 * i + 4, i == 11 ? 0 : 1);
    }
    build_small(c->path, "deep", GGUF_ARRAY, deep, sizeof deep);
    expect_fail(c, "deep nesting", "arrays nested more than");
    /* A string inside a string array that runs past the end. */
    uint8_t sarr[12 + 9 + 8];
    put32(sarr, GGUF_STRING);
    put64(sarr + 4, 2);
    put64(sarr + 12, 1);
    sarr[20] = 'x';
    put64(sarr + 21, UINT64_C(1) << 50);
    build_small(c->path, "bad.strs", GGUF_ARRAY, sarr, sizeof sarr);
    expect_fail(c, "string array element", "array element string length 1125899906842624");

    char missing[160];
    snprintf(missing, sizeof missing, "%s/missing.gguf", c->dir);
    struct gguf_file f;
    struct errbuf e = {{0}};
    CHECK(gguf_open(&f, missing, &e) == -1 && strstr(e.msg, "missing.gguf: No such file or directory"), "%s", e.msg);
    CHECK(gguf_open(&f, c->dir, &e) == -1 && strstr(e.msg, "is a directory, not a regular file"),
          "%s", e.msg);
}

/* ---- 4. truncation and mutation sweep ---- */

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Reads every byte the reader claims is in the file, so that a bad pointer shows up
 * under ASan or valgrind even when the reader itself never dereferences it. */
static unsigned touch(const struct gguf_file *f)
{
    unsigned sum = 0;
    struct errbuf e;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const struct gguf_kv *kv = &f->kv[i];
        for (size_t j = 0; j < kv->key.len; j++)
            sum += (unsigned char)kv->key.ptr[j];
        if (kv->type == GGUF_STRING)
            for (size_t j = 0; j < kv->val.str.len; j++)
                sum += (unsigned char)kv->val.str.ptr[j];
        if (kv->strs)
            for (uint64_t k = 0; k < kv->arr_n; k++)
                for (size_t j = 0; j < kv->strs[k].len; j++)
                    sum += (unsigned char)kv->strs[k].ptr[j];
        if (kv->type == GGUF_ARRAY) {
            int32_t *iv = NULL;
            uint64_t n;
            char key[64];
            snprintf(key, sizeof key, "%.*s", (int)(kv->key.len < 63 ? kv->key.len : 63), kv->key.ptr);
            if (gguf_get_arr_i32(f, key, &iv, &n, &e) == 0) {
                for (uint64_t k = 0; k < n; k++)
                    sum += (unsigned)iv[k];
                free(iv);
            }
        }
    }
    for (uint64_t i = 0; i < f->n_tensors; i++)
        for (uint64_t j = 0; j < f->tensors[i].nbytes; j++)
            sum += f->tensors[i].data[j];
    return sum;
}

/* Opens one candidate, from the file at path or (path NULL) from an allocation of
 * exactly len bytes, so that ASan and valgrind see any read past its end; an mmap is
 * rounded up to a page and would hide such a read. Returns 0, -1, or -2 for a broken
 * contract (another return value, or a failure without a message). */
static int open_one(const char *path, const uint8_t *bytes, size_t len, unsigned *sum)
{
    struct gguf_file f;
    struct errbuf e;
    memset(e.msg, 0, sizeof e.msg);
    uint8_t *copy = NULL;
    int rc;
    if (path) {
        rc = gguf_open(&f, path, &e);
    } else {
        copy = len ? malloc(len) : NULL;
        if (len)
            memcpy(copy, bytes, len);
        rc = gguf_open_mem(&f, copy, len, "fuzz.gguf", &e);
    }
    if (rc == 0)
        *sum += touch(&f);
    else if (rc != -1 || e.msg[0] == '\0')
        rc = -2;
    gguf_close(&f);
    free(copy);
    return rc;
}

static void test_fuzz(struct ctx *c)
{
    /* Every kind of record: scalars, strings, a string array, a nested array, and
     * tensors of several types, kept small so mutations land mostly in the metadata. */
    struct errbuf e = {{0}};
    struct gguf_writer *w = gguf_writer_new();
    gguf_w_str(w, "general.architecture", "bitnet-b1.58");
    gguf_w_u32(w, "u", 5);
    gguf_w_f32(w, "f", 0.5f);
    gguf_w_bool(w, "b", true);
    const struct strview toks[] = {{"a", 1}, {"bc", 2}, {"", 0}, {"def", 3}};
    gguf_w_arr_str(w, "toks", toks, 4);
    const int32_t ints[] = {1, -2, 3};
    gguf_w_arr_i32(w, "ints", ints, 3);
    uint8_t nested[12 + 12 + 2 + 12 + 9];
    size_t o = 0;
    put32(nested + o, GGUF_ARRAY), put64(nested + o + 4, 2), o += 12;
    put32(nested + o, GGUF_U8), put64(nested + o + 4, 2), o += 12;
    nested[o++] = 1, nested[o++] = 2;
    put32(nested + o, GGUF_STRING), put64(nested + o + 4, 1), o += 12;
    put64(nested + o, 1), o += 8;
    nested[o++] = 'x';
    gguf_w_raw(w, "nested", GGUF_ARRAY, nested, sizeof nested);
    gguf_w_tensor(w, "x", GGML_TYPE_F32, 2, (const uint64_t[]){4, 2}, &e);
    gguf_w_tensor(w, "y", GGML_TYPE_Q8_0, 1, (const uint64_t[]){32}, &e);
    gguf_w_tensor(w, "z", GGML_TYPE_I2_S, 1, (const uint64_t[]){128}, &e);
    CHECK(finish_file(w, 3, c->path) == 0, "fuzz base");
    gguf_writer_free(w);
    size_t n;
    uint8_t *base = read_all(c->path, &n);
    CHECK(base != NULL, "read fuzz base");
    if (!base)
        return;
    unsigned sum = 0;
    CHECK(open_one(NULL, base, n, &sum) == 0, "fuzz base opens from memory");

    int ok = 0, bad = 0;
    for (size_t len = 0; len <= n; len++) {
        write_all(c->path, base, len);
        int rf = open_one(c->path, NULL, 0, &sum);
        int rm = open_one(NULL, base, len, &sum);
        ok += rm == 0;
        bad += rf == -2 || rm == -2 || rf != rm;
    }
    CHECK(bad == 0, "%d truncations gave a bad return, an empty message, or file and memory disagree", bad);
    CHECK(ok == 1, "%d of %zu truncations opened (only the whole file should)", ok, n + 1);

    uint8_t *buf = malloc(n);
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    int iters = getenv("TEST_GGUF_FUZZ_ITERS") ? atoi(getenv("TEST_GGUF_FUZZ_ITERS")) : 20000;
    int fd = open(c->path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0, "open scratch");
    ok = 0;
    bad = 0;
    for (int it = 0; it < iters; it++) {
        memcpy(buf, base, n);
        int k = 1 + (int)(rng_next(&seed) % 4);
        for (int j = 0; j < k; j++) {
            uint64_t r = rng_next(&seed);
            size_t at = (size_t)(r % n);
            /* Half the changes are small nudges, which keep counts plausible and so
             * reach deeper into the file than random bytes would. */
            if ((r >> 32) & 1)
                buf[at] = (uint8_t)(r >> 40);
            else
                buf[at] = (uint8_t)(buf[at] + ((r >> 40) & 1 ? 1 : -1));
        }
        int rm = open_one(NULL, buf, n, &sum);
        ok += rm == 0;
        bad += rm == -2;
        /* Every tenth also goes through the file path, which must agree. */
        if (it % 10 == 0 && fd >= 0) {
            if (pwrite(fd, buf, n, 0) != (ssize_t)n)
                bad++;
            bad += open_one(c->path, NULL, 0, &sum) != rm;
        }
    }
    if (fd >= 0)
        close(fd);
    CHECK(bad == 0, "%d mutations gave a bad return, an empty message, or file and memory disagree", bad);
    printf("fuzz: %zu truncations, %d mutations (%d still opened), checksum %u\n", n + 1, iters, ok, sum);
    free(buf);
    free(base);
}

int main(void)
{
    struct ctx c;
    snprintf(c.dir, sizeof c.dir, "/tmp/test_gguf.XXXXXX");
    if (!mkdtemp(c.dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(c.path, sizeof c.path, "%s/x.gguf", c.dir);

    test_types();
    round_trip(&c, 0);
    round_trip(&c, 64);
    test_writer_misuse(&c);
    test_tiny();
    test_hostile(&c);
    if (!getenv("TEST_GGUF_NO_FUZZ"))
        test_fuzz(&c);

    unlink(c.path);
    rmdir(c.dir);
    return check_done("test_gguf");
}

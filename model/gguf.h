/* GGUF v3 reader: maps the file and checks every count, length and offset against the
 * file size before exposing anything, so that a hostile file yields an error message,
 * never a read outside the mapping. All pointers returned point into the mapping. */
#ifndef BITNET_GGUF_H
#define BITNET_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/errbuf.h"
#include "model/strview.h"

enum gguf_vtype {
    GGUF_U8 = 0,
    GGUF_I8 = 1,
    GGUF_U16 = 2,
    GGUF_I16 = 3,
    GGUF_U32 = 4,
    GGUF_I32 = 5,
    GGUF_F32 = 6,
    GGUF_BOOL = 7,
    GGUF_STRING = 8,
    GGUF_ARRAY = 9,
    GGUF_U64 = 10,
    GGUF_I64 = 11,
    GGUF_F64 = 12,
    GGUF_VTYPE_COUNT
};

#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32

struct gguf_kv {
    struct strview key;
    uint32_t type;              /* enum gguf_vtype */
    union {
        uint64_t u;             /* unsigned integers and bool */
        int64_t i;              /* signed integers */
        double f;               /* F32, F64 */
        struct strview str;     /* STRING */
    } val;
    /* ARRAY only: element type and count; elems points at the first element in the
     * file. For arrays of STRING, strs holds every element (validated at open). */
    uint32_t arr_type;
    uint64_t arr_n;
    const uint8_t *arr_data;
    struct strview *strs;
};

struct gguf_tensor {
    struct strview name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* innermost first; unused dims are 1 */
    uint32_t type;              /* enum ggml_type */
    uint64_t offset;            /* relative to the data section */
    uint64_t nbytes;
    const uint8_t *data;
};

struct gguf_file {
    char *path;
    const uint8_t *map;
    size_t size;
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset;
    uint64_t n_kv;
    struct gguf_kv *kv;
    uint64_t n_tensors;
    struct gguf_tensor *tensors;
    bool mapped;                /* map is gguf_open's own mmap, unmapped by gguf_close */
};

/* Opens and validates path. On failure fills e with "path: what is wrong", returns -1,
 * and leaves f closed (gguf_close on it is harmless). */
int gguf_open(struct gguf_file *f, const char *path, struct errbuf *e);
void gguf_close(struct gguf_file *f);

/* Same checks over size bytes the caller owns and keeps alive until gguf_close (which
 * leaves them alone); name stands for the path in messages. Tests use it to hold a file
 * in an allocation of exactly its size, where any read past the end is caught. */
int gguf_open_mem(struct gguf_file *f, const void *data, size_t size, const char *name,
                  struct errbuf *e);

const struct gguf_kv *gguf_find_kv(const struct gguf_file *f, const char *key);
const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f, const char *name);

/* Typed getters. Integers convert between widths when the value fits; a missing key
 * or a value of the wrong kind fills e ("key: ...") and returns -1. */
int gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out, struct errbuf *e);
int gguf_get_f32(const struct gguf_file *f, const char *key, float *out, struct errbuf *e);
int gguf_get_bool(const struct gguf_file *f, const char *key, bool *out, struct errbuf *e);
int gguf_get_str(const struct gguf_file *f, const char *key, struct strview *out, struct errbuf *e);

/* Array of integers as int32 (I8..I64/U8..U64 elements that fit). *out is malloc'd. */
int gguf_get_arr_i32(const struct gguf_file *f, const char *key, int32_t **out, uint64_t *n,
                     struct errbuf *e);

const char *gguf_vtype_name(uint32_t type);

#endif

/* GGUF v3 writer. Metadata and the tensor table are collected in memory; tensor data
 * is then streamed one tensor at a time, so a 1.2 GB model never sits in memory. */
#ifndef BITNET_GGUF_WRITE_H
#define BITNET_GGUF_WRITE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "model/errbuf.h"
#include "model/strview.h"

struct gguf_writer;

struct gguf_writer *gguf_writer_new(void);
void gguf_writer_free(struct gguf_writer *w);

/* Metadata setters; keys are written in the order they are added. */
void gguf_w_str(struct gguf_writer *w, const char *key, const char *val);
void gguf_w_u32(struct gguf_writer *w, const char *key, uint32_t val);
void gguf_w_i32(struct gguf_writer *w, const char *key, int32_t val);
void gguf_w_u64(struct gguf_writer *w, const char *key, uint64_t val);
void gguf_w_f32(struct gguf_writer *w, const char *key, float val);
void gguf_w_bool(struct gguf_writer *w, const char *key, bool val);
void gguf_w_arr_str(struct gguf_writer *w, const char *key, const struct strview *items, uint64_t n);
void gguf_w_arr_i32(struct gguf_writer *w, const char *key, const int32_t *items, uint64_t n);
void gguf_w_arr_f32(struct gguf_writer *w, const char *key, const float *items, uint64_t n);
/* Raw escape hatch for tests: any scalar or array type with its encoded payload. */
void gguf_w_raw(struct gguf_writer *w, const char *key, uint32_t vtype, const void *payload, uint64_t len);

/* Declares a tensor; returns its index or -1 (shape does not fit the type). */
int gguf_w_tensor(struct gguf_writer *w, const char *name, uint32_t ggml_type, uint32_t n_dims,
                  const uint64_t *ne, struct errbuf *e);
uint64_t gguf_w_tensor_nbytes(const struct gguf_writer *w, int idx);

/* Writes magic, header, metadata, tensor table and the padding up to the data section. */
int gguf_w_begin(struct gguf_writer *w, FILE *fp, struct errbuf *e);
/* Appends len bytes of tensor idx's data; tensors must be completed in declaration
 * order, and each one's total must equal its nbytes. Padding is added automatically. */
int gguf_w_data(struct gguf_writer *w, FILE *fp, int idx, const void *data, uint64_t len,
                struct errbuf *e);
/* Checks every declared tensor was written in full. */
int gguf_w_end(struct gguf_writer *w, FILE *fp, struct errbuf *e);

#endif

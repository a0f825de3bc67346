/* The forward pass of spec section 4 over KV caches, for a batch of rows: each row is
 * one position of one sequence (a slot), so a prompt is many rows of one slot and a
 * decode step of several streams is one row per slot (continuous batching). It is split
 * into embedding, one layer, and output so that a worker can run a range of layers.
 * Matrix products run on a thread pool through the kernel table. */
#ifndef BITNET_FORWARD_H
#define BITNET_FORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/threadpool.h"
#include "model/bitnet_model.h"
#include "model/errbuf.h"

/* Element type of the KV cache. F32 is exact and the default; F16 halves it; Q8 keeps
 * int8 with one float scale per (position, KV head) vector, about a quarter of F32
 * (kernels.h, struct attn_group_q8), for attention that reads far less at long context
 * at the cost of a small, measured error (tests/test_xval.c). */
enum kv_type { KV_TYPE_F32 = 0, KV_TYPE_F16, KV_TYPE_Q8 };
#define KV_TYPE_NAMES "f32, f16 or q8"

/* Up to this many rows (decode of several streams) a batch multiplies through the decode
 * kernel for several vectors, over blocks of this many weight rows, small enough to stay
 * in L2 while it revisits them; more rows take the GEMM. bench_kernels times the same. */
#define SMALL_BATCH 16
#define GEMV_BLOCK_ROWS 512

/* Case-insensitive "f32", "f16" or "q8"; -1 for anything else. */
int kv_type_parse(const char *name, enum kv_type *t);
const char *kv_type_name(enum kv_type t);
/* Bytes of cache one position of one sequence takes in one layer (keys and values of
 * every KV head, with the scales of Q8), not counting the padding to whole key tiles. */
size_t kv_bytes_per_position(const struct bitnet_hparams *hp, enum kv_type t);

/* Tensor parallelism: a state that computes one part of every layer, for a rank of a
 * group of states (one per NUMA node) that together compute the whole. Each rank holds
 * the KV heads [kvh0, kvh1) (their query heads, their K and V rows, their cache), the
 * rows [e0, e1) of the output projection and the down projection, [f0, f1) of gate and
 * up, and [v0, v1) of the output head. After each of those products the ranks exchange
 * their pieces (gather): every rank then holds the whole vector, bit for bit what one
 * state alone computes, since each value is computed whole by one rank and only copied
 * (docs/tensor-parallel.md). */
typedef void (*forward_gather_fn)(void *ctx, float *buf, int n_rows, int width, int lo, int hi);
struct forward_tp {
    int rank, size;
    int kvh0, kvh1;
    int q0, q1;       /* the rows of wq those KV heads' query heads take */
    int k0, k1;       /* the rows of wk and wv they take */
    int e0, e1;
    int f0, f1;
    int v0, v1;
    /* On return, columns [0, width) of rows 0..n_rows of buf (row stride width) hold
     * every rank's columns; the caller's own were [lo, hi). Every rank calls it with the
     * same n_rows and width, at the same point. */
    forward_gather_fn gather;
    void *gather_ctx;
};

/* rank's part of a group of size ranks (size <= the KV heads); -1 and e when the model
 * cannot be split so. gather is left NULL for the caller to set. */
int forward_tp_split(const struct bitnet_hparams *hp, int rank, int size, struct forward_tp *tp,
                     struct errbuf *e);

struct forward_config {
    int n_ctx;                /* positions the KV cache holds */
    int n_batch;              /* most positions one forward_batch call takes */
    struct threadpool *pool;  /* borrowed; NULL runs on the caller alone */
    enum kv_type kv_type;     /* Q8 needs a head dimension divisible by 4 */
    int n_slots;              /* sequences with a KV cache here (0 means 1) */
    uint32_t layer_begin;     /* the layers this state runs and caches: [begin, end); */
    uint32_t layer_end;       /* end 0 means every layer */
    int attn_segment;         /* positions of an attention segment (model/attention_rows.c),
                               * a multiple of ATTN_TILE; 0 means ATTN_SEGMENT */
    const struct forward_tp *tp; /* NULL: the whole model; else this rank's part (copied) */
};

/* Rows attending over more positions than this merge segments of it (whatever the
 * threads, so that a row's logits never depend on them): at 2 threads and 4096
 * positions, 4 segments of each KV head let the threads share the cache without reading
 * any of it twice; below 1024, attention is as one call. */
#define ATTN_SEGMENT 1024

/* Where the forward pass spends its time, for bitnetctl bench --breakdown: seconds added
 * up over the calls made while forward_state.timing points here. Norms count the
 * elementwise steps they carry (residual add, squared-ReLU gate), attention RoPE and the
 * cache stores, down the residual add after it, the head the final norm. */
enum forward_part { FP_NORMS, FP_QKV, FP_ATTENTION, FP_O, FP_GATE_UP, FP_DOWN, FP_HEAD, FP_PARTS };
struct forward_timing {
    double seconds[FP_PARTS];
};
extern const char *const forward_part_names[FP_PARTS];

struct forward_state {
    int n_ctx, n_batch, nth, n_slots;
    int n_ctx_pad;   /* n_ctx rounded up to whole key tiles (kernels.h) */
    int group;       /* query heads per KV head */
    bool tp_on;      /* a tensor-parallel rank: tp says which part */
    struct forward_tp tp;
    int kvh0, n_kv;  /* the KV heads this state computes and caches: all, or its part */
    int kv_stride;   /* floats from one row's K (or V) to the next: every KV head's */
    uint32_t layer_begin, layer_end;
    struct threadpool *pool;
    int n_rows;      /* rows set by forward_set_rows */
    int *row_slot;   /* [n_batch] */
    int *row_pos;    /* [n_batch] */
    /* [n_batch][...] rows, one per position of the batch */
    float *x;        /* residual stream [n_embd] */
    float *xb;       /* normed input of a bitlinear [max(n_embd, n_ff)] */
    int8_t *xq;      /* its int8 quantization */
    float *xscale;   /* its quantization scale, one per position */
    float *q, *k, *v;
    float *attn_out; /* [n_embd] */
    float *hb;       /* FFN gate, then gate^2 * up [n_ff] (up lands in xb) */
    float *rope_cos, *rope_sin; /* [head_dim / 2] per position */
    float *att;      /* attention weights, [nth][group][n_ctx_pad] */
    enum kv_type kv_type;
    void *key_cache;   /* [slot][layer - begin][kv head] of n_ctx_pad x head_dim, keys in
                        * tiles as kernels.h lays them out for the type: float, F16 or
                        * int8 */
    void *value_cache; /* same, values by position */
    float *key_scale;  /* Q8 only: [slot][layer - begin][kv head][n_ctx_pad] */
    float *value_scale;
    int8_t *att_q8;    /* Q8 only: quantized queries, [nth][group][head_dim] */
    int attn_seg;      /* positions per attention segment */
    int n_seg_max;     /* segments of a full context */
    int seg_rows;      /* rows with several segments one attention pass takes (0 if
                        * n_seg_max is 1) */
    int *seg_row;      /* [n_batch]: a row's place among them in its pass, or -1 */
    float *seg_out;    /* [seg_rows][n_seg_max][n_head][head_dim]: segments' outputs */
    float *seg_ms;     /* [seg_rows][n_seg_max][n_head][2]: their max and sum */
    float *logits;   /* [n_vocab] */
    int8_t *head_xq; /* quantized final hidden states [n_batch][n_embd] for a q8 head */
    int32_t *head_acc; /* integer row sums of the q8 head, [4][n_vocab] (forward.c) */
    struct forward_timing *timing; /* NULL, or where the parts' times are added */
};

int forward_state_init(struct forward_state *s, const struct bitnet_model *m,
                       const struct forward_config *cfg, struct errbuf *e);
void forward_state_free(struct forward_state *s);

/* Declares the batch: row t is position pos[t] of slot slots[t]. Rows of one slot must
 * come in increasing positions, and the slot's cache must hold every earlier position.
 * Prepares the per-row RoPE tables. -1 and e filled when a slot, position or the row
 * count is out of range. */
int forward_set_rows(const struct bitnet_model *m, struct forward_state *s, const int *slots,
                     const int *pos, int n, struct errbuf *e);
/* Rows x[0..n) = embeddings of tokens (the first stage's input). */
int forward_embed(const struct bitnet_model *m, struct forward_state *s, const int32_t *tokens,
                  int n, struct errbuf *e);
/* Where the cache of KV head kvh (one this state holds) of one layer of a slot starts: its elements at index *
 * n_ctx_pad * head_dim (their layout: kernels.h, struct attn_group and struct
 * attn_group_q8), its Q8 scales at index * n_ctx_pad. */
static inline size_t kv_head_index(const struct forward_state *s, int slot, uint32_t il, int kvh)
{
    size_t layer = (size_t)slot * (s->layer_end - s->layer_begin) + (il - s->layer_begin);
    return layer * (size_t)s->n_kv + (size_t)(kvh - s->kvh0);
}

/* attn_out of every row set = its attention over the cache of layer il (which holds the
 * rows' own keys and values already); model/attention_rows.c. */
void forward_attention(const struct bitnet_hparams *hp, struct forward_state *s, uint32_t il);

/* Runs layer il (within the state's range) on the rows set, writing their K and V. */
void forward_layer(const struct bitnet_model *m, struct forward_state *s, uint32_t il);
/* s->logits = output projection of the final-normed row x[t]. */
void forward_output(const struct bitnet_model *m, struct forward_state *s, int t);
/* logits[i * n_vocab ...] = the same for rows[i], i < n (n <= n_batch, rows distinct or
 * not), reading the head's weights once for all of them; each row's logits are bit for
 * bit what forward_output gives it. */
void forward_output_rows(const struct bitnet_model *m, struct forward_state *s, const int *rows,
                         int n, float *logits);

/* Embedding and every layer for tokens[0..n) at positions pos0.. of slot 0, without the
 * output projection. -1 and e filled if a token, the batch size or a position is out of
 * range. */
int forward_batch(const struct bitnet_model *m, struct forward_state *s, const int32_t *tokens,
                  int n, int pos0, struct errbuf *e);

/* One token through everything; returns s->logits, or NULL with e filled. */
const float *forward_token(const struct bitnet_model *m, struct forward_state *s, int32_t token,
                           int pos, struct errbuf *e);

#endif

/* The kernel dispatch table: every hot operation of the forward pass goes through kops,
 * the one global of the engine, filled once by kernels_init() from the CPU's features
 * (or BITNET_KERNEL=scalar|avx2|avx512|amx to force one). The scalar entries are the
 * reference that every optimized kernel must match bit for bit on integer results.
 *
 * Row ranges: every kernel computes rows [r0, r1) and writes them at their absolute
 * index (out[r], out[t * ldo + r]), so threads can share one output array. */
#ifndef BITNET_KERNELS_H
#define BITNET_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A ternary weight matrix as it sits in the file: `rows` rows of `cols` values. */
struct ternary_matrix {
    uint32_t type;      /* GGML_TYPE_I2_S, GGML_TYPE_TQ2_0 or GGML_TYPE_TQ1_0 */
    int rows;
    int cols;
    const uint8_t *data;
    size_t row_bytes;   /* bytes of one row's codes (I2_S: cols/4) */
    float scale;        /* I2_S: the per-tensor scale; 1 for the block-scaled types */
};

/* A dense matrix (embedding / output projection) in F32, F16, BF16 or Q8_0. */
struct dense_matrix {
    uint32_t type;
    int rows;
    int cols;
    const uint8_t *data;
    size_t row_bytes;
};

/* An int8 copy of a dense matrix made at load (--lm-head q8): one float scale per row,
 * value = q * scale[r]. row_sum[r] = sum of the row's q, for kernels that need an
 * unsigned operand and correct for the offset. */
struct q8_matrix {
    int rows;
    int cols;
    const int8_t *q;
    const float *scale;
    const int32_t *row_sum;
};

/* The KV cache of one KV head, as the attention kernels read it. Keys lie in tiles of
 * ATTN_TILE positions, element i of position p at
 *     k[(p / ATTN_TILE) * d * ATTN_TILE + i * ATTN_TILE + p % ATTN_TILE],
 * so that a kernel scores a tile of positions with contiguous loads and each score keeps
 * the reference's order of additions; values lie by position, v[p * d + i].
 *
 * What every kernel computes, for each of the g query heads, exactly as the scalar twin
 * does (bit-identical floats; -ffp-contract=off):
 *   s_p = (q . k_p, summed over i in order) * scale               for p < n
 *   e_p = attn_exp(s_p - max_p s_p)                                (kernels/attn_exp.h)
 *   sum = e_p added into ATTN_TILE lane sums (lane p % ATTN_TILE, p increasing), then
 *         lane[j] += lane[j + w] for w = ATTN_TILE/2, ..., 1
 *   out_i = sum over p in order of (e_p * (1 / sum)) * v_p,i
 * and, when max_sum is set, max and sum into it: the caller may run the positions of a
 * long cache as several calls over tile-aligned segments (k, v and n of each describing
 * its segment alone) and merge their outputs by softmax algebra (model/attention_rows.c).
 * The scores' order matters most: with large activations a score is a sum of large
 * terms, and a different order moves logits of the third-party check data past its
 * tolerance. */
#define ATTN_TILE 16

struct attn_group {
    const float *q;     /* [g][d]: the query heads that share this KV head */
    float *out;         /* [g][d] */
    const void *k;      /* key tiles, float or F16 (uint16_t) */
    const void *v;      /* values [n][d], same type */
    int g, d, n;        /* heads, head size, cached positions (n >= 1) */
    float scale;
    float *scratch;     /* [g][attn_tiles_len(n)] */
    float *max_sum;     /* NULL, or [g][2]: each head's max and sum as computed above */
};

/* n rounded up to whole tiles: the positions a key cache holds room for, and the floats
 * of scratch per head. */
static inline int attn_tiles_len(int n) { return (n + ATTN_TILE - 1) / ATTN_TILE * ATTN_TILE; }

/* The int8 KV cache (--kv-type q8). A vector x of d values (one position of one KV head,
 * or one query head) is stored as
 *     q_i = clamp(round-half-even(x_i * (127 / absmax)), -127, 127),  scale = absmax / 127
 * (absmax 0: scale 0 and every q_i 0), 127 / absmax and its product with x_i each
 * rounded to float, as attn_q8_quantize (kernels/attn_q8.h) does for the cache and for
 * queries alike; every q_i, k and v byte is thus within [-127, 127]. d must be a
 * multiple of 4. Keys lie in tiles of ATTN_TILE positions, each tile as
 * [d / 4][ATTN_TILE positions][4 consecutive elements]: element i of position p at
 *     k[(p / ATTN_TILE) * d * ATTN_TILE + (i / 4) * 4 * ATTN_TILE + (p % ATTN_TILE) * 4 + i % 4],
 * so that one 32-bit lane holds 4 elements of one position, the operand shape of
 * vpdpbusd and pmaddubsw. Values lie in pairs of positions, [n / 2][d][2]: element i of
 * position p at
 *     v[(p / 2) * 2 * d + 2 * i + p % 2],
 * so that one 32-bit lane holds one element of two positions, which vpdpwssd and pmaddwd
 * weigh in one step (for an odd n the last pair's second half may hold anything).
 *
 * What every kernel computes, for each of the g query heads, exactly as the scalar twin
 * does (bit-identical floats). Unlike struct attn_group's, this contract fuses multiply
 * and add where marked fma: one rounding, fmaf() in the twin and _mm512_fmadd_ps /
 * _mm256_fmadd_ps in SIMD, lane by lane the same whatever -ffp-contract says; every
 * other operation is rounded on its own (-ffp-contract=off).
 *   qs, qq_i  = the head quantized as above (qq written to q8)
 *   c         = qs * scale
 *   dot_p     = sum_i qq_i * k_p,i, an exact int32 (|dot_p| <= 127 * 127 * d)
 *   s_p       = (float)dot_p * (c * k_scale[p])                                for p < n
 *   max       = the largest s_p (a NaN score never becomes it)
 *   e_p       = attn_q8_exp(s_p - max): float, with fma (kernels/attn_q8.h)
 *   sum       = e_p added into lanes and folded as struct attn_group states
 *   u_p       = e_p * v_scale[p]                      (0 for p >= n)
 * then the values, in blocks B of ATTN_Q8_VBLOCK positions from 0 (the last one short):
 *   top_B     = the largest u_p of B (a NaN never becomes it), from 0
 *   x_p       = u_p * (32767 / top_B)
 *   w_p       = round-half-even(min(x_p, 32767)) as int16, 0 if x_p is NaN
 *   acc_B,i   = sum over p in B of w_p * v_p,i, an exact int32
 *   out_i     = fma((float)acc_B,i, top_B / 32767, out_i) over blocks in order, from 0
 *   out_i     = out_i * (1 / sum)
 * and, as struct attn_group's, max and sum into max_sum when it is set. A block whose
 * top_B is 0 adds nothing, and a kernel may skip it.
 * (float)dot_p is exact up to d = 1040, so a score is the exact dot product of the
 * dequantized vectors, times scale, but for the rounding of its three multiplies. The
 * weights of a block are rounded to 15 bits of its largest: each moves by at most 2^-16
 * of that, far less than the int8 values they weigh (2^-8 of their row's largest), and
 * the values then cost one integer multiply-add per pair of positions where float took
 * one per position (with the cache in L2 the value pass is what bounds the kernels; from
 * memory, the bandwidth). Normalization comes once per output element at the end rather
 * than once per position, and exp is a float one (within one ulp of expf). Keys, and
 * their scales, past n in the last tile may hold anything, NaN included: no kernel lets
 * them into the result. */
struct attn_group_q8 {
    const float *q;        /* [g][d] float query heads; the kernel quantizes them */
    float *out;            /* [g][d] */
    const int8_t *k;       /* key tiles, attn_tiles_len(n) positions */
    const int8_t *v;       /* values in pairs, [(n + 1) / 2][d][2] */
    const float *k_scale;  /* [attn_tiles_len(n)] */
    const float *v_scale;  /* [n] */
    int g, d, n;           /* heads, head size (a multiple of 4), positions (n >= 1) */
    float scale;
    float *scratch;        /* [g][attn_tiles_len(n)] */
    int8_t *q8;            /* [g][d]: room for the quantized queries */
    float *max_sum;        /* NULL, or [g][2]: each head's max and sum */
};

struct kernel_ops {
    const char *name;
    /* Decode. out[r] = sum_c W[r][c] * xq[c] (trits), exact. */
    void (*i2s_dot_rows)(const struct ternary_matrix *w, const int8_t *xq, int r0, int r1,
                         int32_t *out);
    /* The same for n_x activations (vector t at xq + t * ldx): out[t * ldo + r], exact.
     * For a few decoding streams: a set may unpack each weight once for all of them. */
    void (*i2s_dot_rows_multi)(const struct ternary_matrix *w, const int8_t *xq, size_t ldx,
                               int n_x, int r0, int r1, int32_t *out, size_t ldo);
    /* TQ1_0/TQ2_0, whose block scales make the row sums float:
     * out[r] = sum_blocks d_b * (integer dot of block b). */
    void (*tq_dot_rows)(const struct ternary_matrix *w, const int8_t *xq, int r0, int r1,
                        float *out);
    /* out[r] = dot(dense row r, x). */
    void (*dense_dot_rows)(const struct dense_matrix *m, const float *x, int r0, int r1,
                           float *out);
    /* The same for n_x vectors (vector t at xs + t * ldx): out[t * ldo + r], each
     * bit-identical to dense_dot_rows of that vector in the same set; a set may read
     * each weight once for several vectors. */
    void (*dense_dot_rows_multi)(const struct dense_matrix *m, const float *xs, size_t ldx,
                                 int n_x, int r0, int r1, float *out, size_t ldo);
    /* out[r] = sum_c q[r][c] * xq[c], exact. */
    void (*q8_dot_rows)(const struct q8_matrix *m, const int8_t *xq, int r0, int r1,
                        int32_t *out);
    /* The same for n_x activations (vector t at xq + t * ldx): out[t * ldo + r], exact.
     * The output head of a few decoding streams: a set may load each weight once for
     * several vectors. */
    void (*q8_dot_rows_multi)(const struct q8_matrix *m, const int8_t *xq, size_t ldx, int n_x,
                              int r0, int r1, int32_t *out, size_t ldo);
    /* Prefill: n_tok activations (token t at xq + t * ldx) against rows [r0, r1):
     * out[t * ldo + r] = sum_c W[r][c] * xq_t[c], exact. One weight row is unpacked
     * once and used for every token. */
    void (*i2s_gemm)(const struct ternary_matrix *w, const int8_t *xq, size_t ldx, int n_tok,
                     int r0, int r1, int32_t *out, size_t ldo);
    /* Attention of the query heads that share one KV head (see struct attn_group),
     * one entry per cache element type. */
    void (*attn_f32)(const struct attn_group *a);
    void (*attn_f16)(const struct attn_group *a);
    /* The same over the int8 cache (struct attn_group_q8). */
    void (*attn_q8)(const struct attn_group_q8 *a);
    /* out_i = (float)in_i * k, the conversion and the product each rounded; out may be
     * in itself (a matrix product's sums become its outputs in place). */
    void (*dequant)(float *out, const int32_t *in, int n, float k);
    /* x_i += y_i (the residual). */
    void (*add_rows)(float *x, const float *y, int n);
    /* x_i = (r * r) * y_i, r = x_i > 0 ? x_i : 0 (NaN gives 0): the squared-ReLU gate
     * times up. Both elementwise, so every set is bit-identical. */
    void (*relu2_mul)(float *x, const float *y, int n);
    /* out_i = (x_i * scale) * weight_i, each product rounded to float, with
     *     scale = (float)(1 / sqrt(ss / n + eps))   (in double)
     * and ss the sum of the squares (double, exact) added in RMS_LANES = 16 lanes, lane
     * j taking x_j, x_j+16, ... in order, then folded by halves: lane j + 8 into j, then
     * j + 4, j + 2, j + 1 (kernels/activation.h). Every set bit-identical. */
    void (*rmsnorm)(float *out, const float *x, const float *weight, int n, float eps);
    /* quantize_act_i8's result, bit for bit. */
    float (*quantize_act)(const float *x, int n, int8_t *xq);
    /* Rows [r0, r1) of a dense matrix to int8 with one scale per row (absmax / 127,
     * round half to even) and each row's sum of q. */
    void (*dense_rows_to_q8)(const struct dense_matrix *m, int r0, int r1, int8_t *q,
                             float *scale, int32_t *row_sum);
    /* How many runs of rows the decode kernels stream at once, and whether each row
     * prefetches its successor in its run (kernels/row_walk.h): properties of the CPU's
     * prefetchers, not of the set, so chosen by kernels_init. */
    int row_streams;
    bool row_prefetch;
};

extern struct kernel_ops kops;

/* Chooses kernels for this CPU; honours BITNET_KERNEL. Returns -1 (message printed,
 * scalar kernels left in place) if BITNET_KERNEL names a set this CPU cannot run. */
int kernels_init(void);

extern const struct kernel_ops kernels_scalar;

/* Space-separated names of the kernel sets this CPU can run, scalar first. */
const char *kernels_supported(void);

/* Per-token activation quantization of the spec: s = 127 / max|x| (max floored at
 * 1e-5; NaN elements never become the max), xq = clamp(round-half-even(x * s), -128,
 * 127), a NaN product giving 0. Returns s. The scalar set's quantize_act. */
float quantize_act_i8(const float *x, int n, int8_t *xq);

/* i2s_dot_rows_multi by kops.i2s_dot_rows once per vector: every set's default. */
void i2s_dot_rows_each(const struct ternary_matrix *w, const int8_t *xq, size_t ldx, int n_x,
                       int r0, int r1, int32_t *out, size_t ldo);

/* dense_dot_rows_multi by kops.dense_dot_rows once per vector: every set's default. */
void dense_dot_rows_each(const struct dense_matrix *m, const float *xs, size_t ldx, int n_x,
                         int r0, int r1, float *out, size_t ldo);

/* q8_dot_rows_multi by kops.q8_dot_rows once per vector: every set's default. */
void q8_dot_rows_each(const struct q8_matrix *m, const int8_t *xq, size_t ldx, int n_x, int r0,
                      int r1, int32_t *out, size_t ldo);

/* One dense row converted to float (embedding lookup). */
void dense_row_to_f32(const struct dense_matrix *m, int row, float *out);

#endif

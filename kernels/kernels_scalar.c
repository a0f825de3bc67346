/* The scalar twins: plain loops that state what each kernel computes. */
#include "kernels/kernels.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/f16.h"
#include "kernels/ternary_formats.h"
#include "model/ggml_types.h"

static void i2s_dot_rows_scalar(const struct ternary_matrix *w, const int8_t *xq, int r0, int r1,
                                int32_t *out)
{
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = w->data + (size_t)r * w->row_bytes;
        int32_t sum = 0;
        for (int b = 0; b < w->cols / 128; b++) {
            const uint8_t *q = row + b * 32;
            const int8_t *x = xq + b * 128;
            for (int p = 0; p < 32; p++) {
                sum += (((q[p] >> 6) & 3) - 1) * x[p];
                sum += (((q[p] >> 4) & 3) - 1) * x[32 + p];
                sum += (((q[p] >> 2) & 3) - 1) * x[64 + p];
                sum += ((q[p] & 3) - 1) * x[96 + p];
            }
        }
        out[r] = sum;
    }
}

static void tq_dot_rows_scalar(const struct ternary_matrix *w, const int8_t *xq, int r0, int r1,
                               float *out)
{
    size_t block_bytes = w->type == GGML_TYPE_TQ2_0 ? TQ2_0_BYTES : TQ1_0_BYTES;
    int8_t vals[QK_TQ];
    for (int r = r0; r < r1; r++) {
        const uint8_t *row = w->data + (size_t)r * w->row_bytes;
        float sum = 0.0f;
        for (int b = 0; b < w->cols / QK_TQ; b++) {
            const uint8_t *blk = row + b * block_bytes;
            if (w->type == GGML_TYPE_TQ2_0)
                tq2_unpack_block(blk, vals);
            else
                tq1_unpack_block(blk, vals);
            int32_t dot = 0;
            for (int i = 0; i < QK_TQ; i++)
                dot += vals[i] * xq[b * QK_TQ + i];
            sum += f16_to_f32(tq_block_scale_bits(blk, block_bytes)) * (float)dot;
        }
        out[r] = sum;
    }
}

void dense_row_to_f32(const struct dense_matrix *m, int row, float *out)
{
    const uint8_t *p = m->data + (size_t)row * m->row_bytes;
    switch (m->type) {
    case GGML_TYPE_F32:
        memcpy(out, p, (size_t)m->cols * sizeof(float));
        break;
    case GGML_TYPE_F16:
        for (int i = 0; i < m->cols; i++)
            out[i] = f16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
        break;
    case GGML_TYPE_BF16:
        for (int i = 0; i < m->cols; i++)
            out[i] = bf16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
        break;
    case GGML_TYPE_Q8_0:
        for (int b = 0; b < m->cols / QK8_0; b++) {
            const uint8_t *blk = p + b * Q8_0_BYTES;
            float d = f16_to_f32((uint16_t)(blk[0] | (blk[1] << 8)));
            for (int i = 0; i < QK8_0; i++)
                out[b * QK8_0 + i] = d * (float)(int8_t)blk[2 + i];
        }
        break;
    default:
        memset(out, 0, (size_t)m->cols * sizeof(float));
        break;
    }
}

static void dense_dot_rows_scalar(const struct dense_matrix *m, const float *x, int r0, int r1,
                                  float *out)
{
    float buf[m->cols];
    for (int r = r0; r < r1; r++) {
        dense_row_to_f32(m, r, buf);
        float sum = 0.0f;
        for (int i = 0; i < m->cols; i++)
            sum += buf[i] * x[i];
        out[r] = sum;
    }
}

static void q8_dot_rows_scalar(const struct q8_matrix *m, const int8_t *xq, int r0, int r1,
                               int32_t *out)
{
    for (int r = r0; r < r1; r++) {
        const int8_t *q = m->q + (size_t)r * m->cols;
        int32_t sum = 0;
        for (int c = 0; c < m->cols; c++)
            sum += q[c] * xq[c];
        out[r] = sum;
    }
}

static void i2s_gemm_scalar(const struct ternary_matrix *w, const int8_t *xq, size_t ldx,
                            int n_tok, int r0, int r1, int32_t *out, size_t ldo)
{
    int8_t *vals = malloc((size_t)w->cols);
    if (!vals) {
        /* no memory for the unpacked row: fall back to one row-dot per token */
        for (int t = 0; t < n_tok; t++)
            for (int r = r0; r < r1; r++)
                i2s_dot_rows_scalar(w, xq + t * ldx, r, r + 1, out + t * ldo);
        return;
    }
    for (int r = r0; r < r1; r++) {
        i2s_unpack(w->data + (size_t)r * w->row_bytes, (size_t)w->cols, vals);
        for (int t = 0; t < n_tok; t++) {
            const int8_t *x = xq + t * ldx;
            int32_t sum = 0;
            for (int c = 0; c < w->cols; c++)
                sum += vals[c] * x[c];
            out[t * ldo + r] = sum;
        }
    }
    free(vals);
}

static void dense_rows_to_q8_scalar(const struct dense_matrix *m, int r0, int r1, int8_t *q,
                                    float *scale, int32_t *row_sum)
{
    float row[m->cols];
    for (int r = r0; r < r1; r++) {
        dense_row_to_f32(m, r, row);
        float amax = 0.0f;
        for (int c = 0; c < m->cols; c++)
            amax = fmaxf(amax, fabsf(row[c]));
        float d = amax / 127.0f, inv = d > 0.0f ? 127.0f / amax : 0.0f;
        int8_t *qr = q + (size_t)r * m->cols;
        int32_t sum = 0;
        for (int c = 0; c < m->cols; c++) {
            qr[c] = (int8_t)rintf(row[c] * inv);
            sum += qr[c];
        }
        scale[r] = d;
        row_sum[r] = sum;
    }
}

const struct kernel_ops kernels_scalar = {
    .name = "scalar",
    .i2s_dot_rows = i2s_dot_rows_scalar,
    .tq_dot_rows = tq_dot_rows_scalar,
    .dense_dot_rows = dense_dot_rows_scalar,
    .q8_dot_rows = q8_dot_rows_scalar,
    .i2s_gemm = i2s_gemm_scalar,
    .attn_f32 = attn_f32_scalar,
    .attn_f16 = attn_f16_scalar,
    .attn_q8 = attn_q8_scalar,
    .dense_rows_to_q8 = dense_rows_to_q8_scalar,
    .dequant = dequant_scalar,
    .add_rows = add_rows_scalar,
    .relu2_mul = relu2_mul_scalar,
    .rmsnorm = rmsnorm_scalar,
    .quantize_act = quantize_act_i8,
};

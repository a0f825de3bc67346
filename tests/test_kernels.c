/* Kernel codecs and scalar kernels against definitions written out longhand here, and
 * every kernel set the CPU supports against the scalar one (integer results must be
 * bit-identical), on shapes that do not split evenly. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/f16.h"
#include "kernels/kernels.h"
#include "kernels/ternary_formats.h"
#include "model/ggml_types.h"
#include "tests/check.h"

static uint64_t rng = 12345;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static int8_t rand_trit(void) { return (int8_t)(next() % 3) - 1; }

static void test_f16(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = f16_to_f32((uint16_t)h);
        if (f != f)
            continue; /* NaN payloads need not survive */
        bad += f32_to_f16(f) != h;
    }
    CHECK(bad == 0, "%d halves do not round-trip", bad);
    CHECK(f16_to_f32(0x3c00) == 1.0f && f16_to_f32(0xc000) == -2.0f, "basic values");
    CHECK(f16_to_f32(0x0001) == ldexpf(1.0f, -24), "smallest subnormal");
    CHECK(f32_to_f16(1.0f + ldexpf(1.0f, -11)) == 0x3c00, "tie rounds to even (down)");
    CHECK(f32_to_f16(1.0f + 3 * ldexpf(1.0f, -11)) == 0x3c02, "tie rounds to even (up)");
    CHECK(f32_to_f16(70000.0f) == 0x7c00, "overflow to infinity");
    CHECK(bf16_to_f32(0x3f80) == 1.0f, "bf16 one");
}

static void test_i2s_layout(void)
{
    /* spec: byte p holds positions p, 32+p, 64+p, 96+p in bits 7-6, 5-4, 3-2, 1-0 */
    int8_t v[256];
    for (int i = 0; i < 256; i++)
        v[i] = rand_trit();
    uint8_t packed[256 / 4 + 32];
    i2s_pack(v, 256, 0.75f, packed);
    int bad = 0;
    for (int b = 0; b < 2; b++)
        for (int p = 0; p < 32; p++) {
            uint8_t q = packed[b * 32 + p];
            bad += ((q >> 6) & 3) != v[b * 128 + p] + 1;
            bad += ((q >> 4) & 3) != v[b * 128 + 32 + p] + 1;
            bad += ((q >> 2) & 3) != v[b * 128 + 64 + p] + 1;
            bad += (q & 3) != v[b * 128 + 96 + p] + 1;
        }
    CHECK(bad == 0, "I2_S packing differs from the spec layout at %d places", bad);
    int8_t back[256];
    i2s_unpack(packed, 256, back);
    CHECK(memcmp(back, v, 256) == 0, "I2_S round trip");
    CHECK(i2s_scale(packed, 256) == 0.75f, "I2_S scale after the codes");
}

static void test_tq_layouts(void)
{
    int8_t v[256], back[256];
    for (int i = 0; i < 256; i++)
        v[i] = rand_trit();
    uint8_t b2[66], b1[54];
    tq2_pack_block(v, 0x3c00, b2);
    int bad = 0;
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 4; l++)
            for (int m = 0; m < 32; m++)
                bad += ((b2[32 * h + m] >> (2 * l)) & 3) - 1 != v[128 * h + 32 * l + m];
    CHECK(bad == 0, "TQ2_0 packing differs from the spec layout at %d places", bad);
    tq2_unpack_block(b2, back);
    CHECK(memcmp(back, v, 256) == 0, "TQ2_0 round trip");
    CHECK(tq_block_scale_bits(b2, 66) == 0x3c00, "TQ2_0 scale");

    /* TQ1_0: every value pattern of every byte must decode back, including all-(+1) */
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < 256; i++)
            v[i] = round == 0 ? 1 : round == 1 ? -1 : rand_trit();
        tq1_pack_block(v, 0x4000, b1);
        tq1_unpack_block(b1, back);
        CHECK(memcmp(back, v, 256) == 0, "TQ1_0 round trip (round %d)", round);
    }
    /* decode rule of the spec, applied to byte 0 for position 32n */
    for (int n = 0; n < 5; n++) {
        uint8_t shifted = (uint8_t)(b1[0] * (n == 0 ? 1 : n == 1 ? 3 : n == 2 ? 9 : n == 3 ? 27 : 81));
        CHECK(((shifted * 3) >> 8) - 1 == back[32 * n], "TQ1_0 trit %d of byte 0", n);
    }
}

static void test_quantize(void)
{
    float x[8] = {1.0f, -0.5f, 0.25f, 0.0f, 127.0f / 254.0f, -127.0f / 254.0f, 0.1f, -1.0f};
    int8_t q[8];
    float s = quantize_act_i8(x, 8, q);
    CHECK(s == 127.0f, "scale = 127 / max|x| (got %g)", s);
    CHECK(q[0] == 127 && q[7] == -127 && q[3] == 0, "extremes");
    /* 63.5 and -63.5 are ties: half to even gives 64 and -64 */
    CHECK(q[4] == 64 && q[5] == -64, "ties round to even (got %d %d)", q[4], q[5]);
    CHECK(q[1] == -64, "-63.5 -> -64 (got %d)", q[1]);
    float z[4] = {0, 0, 0, 0};
    s = quantize_act_i8(z, 4, q);
    CHECK(s == 127.0f / 1e-5f && q[0] == 0, "all-zero input uses the 1e-5 floor");
}

/* Random ternary matrix of the given type; returns the values too. */
static struct ternary_matrix make_matrix(uint32_t type, int rows, int cols, int8_t *vals,
                                         uint8_t **buf)
{
    struct ternary_matrix w = {.type = type, .rows = rows, .cols = cols, .scale = 1.0f};
    size_t n = (size_t)rows * cols;
    for (size_t i = 0; i < n; i++)
        vals[i] = rand_trit();
    uint64_t nbytes = ggml_tensor_nbytes(type, (uint64_t)cols, n);
    *buf = calloc(1, nbytes);
    if (type == GGML_TYPE_I2_S) {
        i2s_pack(vals, n, 0.5f, *buf);
        w.row_bytes = (size_t)cols / 4;
        w.scale = 0.5f;
    } else {
        size_t bb = type == GGML_TYPE_TQ2_0 ? 66 : 54;
        for (size_t b = 0; b < n / 256; b++) {
            uint16_t d = f32_to_f16(0.25f + (float)(b % 7) * 0.125f);
            if (type == GGML_TYPE_TQ2_0)
                tq2_pack_block(vals + b * 256, d, *buf + b * bb);
            else
                tq1_pack_block(vals + b * 256, d, *buf + b * bb);
        }
        w.row_bytes = (size_t)cols / 256 * bb;
    }
    w.data = *buf;
    return w;
}

static void test_scalar_dots(void)
{
    const int rows = 37, cols = 768;
    int8_t *vals = malloc((size_t)rows * cols), xq[768];
    for (int i = 0; i < cols; i++)
        xq[i] = (int8_t)(next() % 256 - 128);
    uint8_t *buf;
    struct ternary_matrix w = make_matrix(GGML_TYPE_I2_S, rows, cols, vals, &buf);
    int32_t out[37];
    kernels_scalar.i2s_dot_rows(&w, xq, 3, rows, out);
    int bad = 0;
    for (int r = 3; r < rows; r++) {
        int32_t want = 0;
        for (int c = 0; c < cols; c++)
            want += vals[r * cols + c] * xq[c];
        bad += out[r] != want;
    }
    CHECK(bad == 0, "scalar I2_S dot wrong on %d rows", bad);
    free(buf);

    uint32_t tq[2] = {GGML_TYPE_TQ2_0, GGML_TYPE_TQ1_0};
    for (int t = 0; t < 2; t++) {
        w = make_matrix(tq[t], rows, cols, vals, &buf);
        float fo[37];
        kernels_scalar.tq_dot_rows(&w, xq, 0, rows, fo);
        bad = 0;
        for (int r = 0; r < rows; r++) {
            double want = 0;
            for (int b = 0; b < cols / 256; b++) {
                int32_t d = 0;
                for (int c = 0; c < 256; c++)
                    d += vals[r * cols + b * 256 + c] * xq[b * 256 + c];
                want += (0.25 + (double)((r * cols / 256 + b) % 7) * 0.125) * d;
            }
            bad += fabs(fo[r] - want) > 1e-3 * (1 + fabs(want));
        }
        CHECK(bad == 0, "scalar %s dot wrong on %d rows", ggml_type_name(tq[t]), bad);
        free(buf);
    }
    free(vals);
}

int main(void)
{
    test_f16();
    test_i2s_layout();
    test_tq_layouts();
    test_quantize();
    test_scalar_dots();
    return check_done("test_kernels");
}

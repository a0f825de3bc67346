/* bitnet_model_repack: TQ2_0 and TQ1_0 matrices become I2_S copies holding every value
 * and the one scale of their blocks; a block whose scale is zero becomes zeros whatever
 * its codes; a matrix whose blocks differ in scale, an I2_S one, and the layers outside
 * the range stay as they were; a second repack of the same model is refused. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/f16.h"
#include "kernels/ternary_formats.h"
#include "model/bitnet_model.h"
#include "model/errbuf.h"
#include "model/ggml_types.h"
#include "tests/check.h"

#define ROWS 5
#define COLS 512 /* two TQ blocks, four I2_S blocks a row */

static uint64_t rng = 0x2545f4914f6cdd1du;
static int8_t rand_trit(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (int8_t)(rng % 3) - 1;
}

enum scales { ONE_SCALE, SOME_ZERO, TWO_SCALES };

/* A TQ matrix of random values with block scales as asked; want[] gets the values the
 * copy must hold (zero in a block whose scale is zero). */
static struct ternary_matrix make_tq(uint32_t type, enum scales sc, uint16_t d, int8_t *want,
                                     uint8_t **buf)
{
    size_t bb = type == GGML_TYPE_TQ2_0 ? TQ2_0_BYTES : TQ1_0_BYTES, blocks = ROWS * COLS / QK_TQ;
    *buf = calloc(blocks, bb);
    int8_t vals[QK_TQ];
    for (size_t b = 0; b < blocks && *buf; b++) {
        for (int i = 0; i < QK_TQ; i++)
            vals[i] = rand_trit();
        uint16_t db = sc == SOME_ZERO && b % 3 == 1 ? (b % 2 ? 0x8000 : 0) /* -0 and +0 */
                      : sc == TWO_SCALES && b == blocks - 1 ? (uint16_t)(d + 1)
                                                            : d;
        if (type == GGML_TYPE_TQ2_0)
            tq2_pack_block(vals, db, *buf + b * bb);
        else
            tq1_pack_block(vals, db, *buf + b * bb);
        for (int i = 0; i < QK_TQ; i++)
            want[b * QK_TQ + i] = (db & 0x7fff) ? vals[i] : 0;
    }
    return (struct ternary_matrix){.type = type, .rows = ROWS, .cols = COLS, .data = *buf,
                                   .row_bytes = COLS / QK_TQ * bb, .scale = 1.0f};
}

/* Every value of an I2_S matrix, row by row, against want. */
static int wrong_values(const struct ternary_matrix *w, const int8_t *want)
{
    int8_t got[COLS];
    int bad = 0;
    for (int r = 0; r < w->rows; r++) {
        i2s_unpack(w->data + (size_t)r * w->row_bytes, COLS, got);
        for (int c = 0; c < COLS; c++)
            bad += got[c] != want[r * COLS + c];
    }
    return bad;
}

int main(void)
{
    struct {
        uint32_t type;
        enum scales sc;
        uint16_t d;
        bool repacked;
    } plan[BITNET_LAYER_MATRICES] = {
        {GGML_TYPE_TQ2_0, ONE_SCALE, 0x3400, true},   /* 0.25 */
        {GGML_TYPE_TQ1_0, ONE_SCALE, 0x2e66, true},   /* about 0.1 */
        {GGML_TYPE_TQ2_0, SOME_ZERO, 0x3c00, true},
        {GGML_TYPE_TQ1_0, TWO_SCALES, 0x3800, false},
        {GGML_TYPE_I2_S, ONE_SCALE, 0, false},
        {GGML_TYPE_TQ2_0, TWO_SCALES, 0x3800, false},
        {GGML_TYPE_TQ1_0, SOME_ZERO, 0x3a00, true},
    };
    struct bitnet_layer layers[2];
    memset(layers, 0, sizeof layers);
    struct bitnet_model m;
    memset(&m, 0, sizeof m);
    m.hp.n_layer = 2;
    m.layers = layers;
    static int8_t want[BITNET_LAYER_MATRICES][ROWS * COLS], other[ROWS * COLS];
    uint8_t *bufs[BITNET_LAYER_MATRICES + 1] = {0}; /* the last: layer 1's matrix */
    for (int il = 0; il < 2; il++) {
        struct ternary_matrix *ws[BITNET_LAYER_MATRICES];
        bitnet_layer_matrices(&layers[il], ws);
        for (int i = 0; i < BITNET_LAYER_MATRICES; i++) {
            if (il == 1) { /* the layer outside the range: all one TQ2_0 matrix */
                *ws[i] = i == 0 ? make_tq(GGML_TYPE_TQ2_0, ONE_SCALE, 0x3400, other,
                                          &bufs[BITNET_LAYER_MATRICES])
                                : layers[1].wq;
                continue;
            }
            if (plan[i].type == GGML_TYPE_I2_S) {
                bufs[i] = calloc(1, ROWS * COLS / 4 + 32);
                for (int k = 0; k < ROWS * COLS; k++)
                    want[i][k] = rand_trit();
                i2s_pack(want[i], ROWS * COLS, 0.5f, bufs[i]);
                *ws[i] = (struct ternary_matrix){.type = GGML_TYPE_I2_S, .rows = ROWS,
                                                 .cols = COLS, .data = bufs[i],
                                                 .row_bytes = COLS / 4, .scale = 0.5f};
            } else {
                *ws[i] = make_tq(plan[i].type, plan[i].sc, plan[i].d, want[i], &bufs[i]);
            }
        }
    }
    const uint8_t *i2s_data = layers[0].wgate.data;

    struct errbuf e = {{0}};
    int kept = -1;
    CHECK(bitnet_model_repack(&m, 0, 1, NULL, &kept, &e) == 0, "repack: %s", e.msg);
    CHECK(kept == 2, "%d matrices kept for their scales, want 2", kept);
    struct ternary_matrix *ws[BITNET_LAYER_MATRICES];
    bitnet_layer_matrices(&layers[0], ws);
    for (int i = 0; i < BITNET_LAYER_MATRICES; i++) {
        const struct ternary_matrix *w = ws[i];
        if (!plan[i].repacked) {
            CHECK(w->type == plan[i].type, "matrix %d: type %u changed", i, w->type);
            continue;
        }
        CHECK(w->type == GGML_TYPE_I2_S && w->row_bytes == COLS / 4 && w->rows == ROWS &&
                  w->cols == COLS,
              "matrix %d: not an I2_S copy (type %u, row bytes %zu)", i, w->type, w->row_bytes);
        CHECK(w->scale == f16_to_f32(plan[i].d), "matrix %d: scale %g, want %g", i, w->scale,
              f16_to_f32(plan[i].d));
        if (w->type == GGML_TYPE_I2_S) {
            int bad = wrong_values(w, want[i]);
            CHECK(bad == 0, "matrix %d: %d values differ", i, bad);
        }
    }
    CHECK(layers[0].wgate.data == i2s_data && wrong_values(&layers[0].wgate, want[4]) == 0,
          "the I2_S matrix was touched");
    CHECK(layers[1].wq.type == GGML_TYPE_TQ2_0 && layers[1].wdown.type == GGML_TYPE_TQ2_0,
          "a layer outside the range was repacked");
    CHECK(m.repacked_mem != NULL, "no copy kept by the model");

    /* a model repacked once refuses more (its copies live in one allocation) */
    CHECK(bitnet_model_repack(&m, 1, 2, NULL, &kept, &e) < 0 && strstr(e.msg, "already"),
          "second repack: %s", e.msg);
    CHECK(layers[1].wq.type == GGML_TYPE_TQ2_0, "refused repack changed layer 1");
    /* an empty range does nothing */
    CHECK(bitnet_model_repack(&m, 1, 1, NULL, &kept, &e) == 0 && kept == 0, "empty range");

    free(m.repacked_mem);
    for (int i = 0; i <= BITNET_LAYER_MATRICES; i++)
        free(bufs[i]);
    return check_done("test_repack");
}

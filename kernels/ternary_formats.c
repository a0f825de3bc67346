#include "kernels/ternary_formats.h"

#include <string.h>

/* I2_S stores code = value + 1 (0:-1, 1:0, 2:+1); byte p of a 128-value block carries
 * positions p, 32+p, 64+p, 96+p from the high bits down. */
void i2s_pack(const int8_t *vals, size_t n, float scale, uint8_t *out)
{
    for (size_t b = 0; b < n / 128; b++) {
        const int8_t *v = vals + b * 128;
        for (int p = 0; p < 32; p++) {
            out[b * 32 + p] = (uint8_t)(((v[p] + 1) << 6) | ((v[32 + p] + 1) << 4) |
                                        ((v[64 + p] + 1) << 2) | (v[96 + p] + 1));
        }
    }
    memset(out + n / 4, 0, 32);
    memcpy(out + n / 4, &scale, sizeof scale);
}

void i2s_unpack(const uint8_t *packed, size_t n, int8_t *vals)
{
    for (size_t b = 0; b < n / 128; b++) {
        int8_t *v = vals + b * 128;
        for (int p = 0; p < 32; p++) {
            uint8_t q = packed[b * 32 + p];
            v[p] = (int8_t)(((q >> 6) & 3) - 1);
            v[32 + p] = (int8_t)(((q >> 4) & 3) - 1);
            v[64 + p] = (int8_t)(((q >> 2) & 3) - 1);
            v[96 + p] = (int8_t)((q & 3) - 1);
        }
    }
}

float i2s_scale(const uint8_t *packed, size_t n)
{
    float s;
    memcpy(&s, packed + n / 4, sizeof s);
    return s;
}

uint16_t tq_block_scale_bits(const uint8_t *blk, size_t block_bytes)
{
    return (uint16_t)(blk[block_bytes - 2] | (blk[block_bytes - 1] << 8));
}

static void put_scale(uint8_t *blk, size_t block_bytes, uint16_t d)
{
    blk[block_bytes - 2] = (uint8_t)(d & 0xff);
    blk[block_bytes - 1] = (uint8_t)(d >> 8);
}

/* TQ2_0: half h (bytes 32h..32h+31), bit pair l of byte m holds position 128h + 32l + m. */
void tq2_pack_block(const int8_t *vals, uint16_t d_f16, uint8_t out[66])
{
    memset(out, 0, 64);
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 4; l++)
            for (int m = 0; m < 32; m++)
                out[32 * h + m] |= (uint8_t)((vals[128 * h + 32 * l + m] + 1) << (2 * l));
    put_scale(out, 66, d_f16);
}

void tq2_unpack_block(const uint8_t blk[66], int8_t vals[256])
{
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 4; l++)
            for (int m = 0; m < 32; m++)
                vals[128 * h + 32 * l + m] = (int8_t)(((blk[32 * h + m] >> (2 * l)) & 3) - 1);
}

/* TQ1_0 keeps k trits in a byte as a base-3 fraction scaled to 256, rounded up so that
 * multiplying by 3^n and keeping the top bits recovers trit n exactly. */
static uint8_t trits_to_byte(const int8_t *t, int k, int stride)
{
    unsigned q = 0;
    for (int i = 0; i < k; i++)
        q = q * 3 + (unsigned)(t[i * stride] + 1);
    for (int i = k; i < 5; i++)
        q *= 3;
    return (uint8_t)((q * 256 + 242) / 243);
}

static int8_t byte_trit(uint8_t b, int n)
{
    static const uint8_t pow3[5] = {1, 3, 9, 27, 81};
    uint8_t shifted = (uint8_t)(b * pow3[n]);
    return (int8_t)(((shifted * 3) >> 8) - 1);
}

void tq1_pack_block(const int8_t *vals, uint16_t d_f16, uint8_t out[54])
{
    for (int m = 0; m < 32; m++)
        out[m] = trits_to_byte(vals + m, 5, 32);
    for (int m = 0; m < 16; m++)
        out[32 + m] = trits_to_byte(vals + 160 + m, 5, 16);
    for (int j = 0; j < 4; j++)
        out[48 + j] = trits_to_byte(vals + 240 + j, 4, 4);
    put_scale(out, 54, d_f16);
}

void tq1_unpack_block(const uint8_t blk[54], int8_t vals[256])
{
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 32; m++)
            vals[32 * n + m] = byte_trit(blk[m], n);
    for (int n = 0; n < 5; n++)
        for (int m = 0; m < 16; m++)
            vals[160 + 16 * n + m] = byte_trit(blk[32 + m], n);
    for (int n = 0; n < 4; n++)
        for (int j = 0; j < 4; j++)
            vals[240 + 4 * n + j] = byte_trit(blk[48 + j], n);
}

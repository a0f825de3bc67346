/* The three ternary weight packings (spec section 3), as plain scalar codecs. These are
 * the definition every fast kernel is checked against; nothing here is optimized. */
#ifndef BITNET_TERNARY_FORMATS_H
#define BITNET_TERNARY_FORMATS_H

#include <stddef.h>
#include <stdint.h>

/* I2_S: n values (n % 128 == 0) -> n/4 code bytes, then the f32 scale and padding
 * (n/4 + 32 bytes in all). */
void i2s_pack(const int8_t *vals, size_t n, float scale, uint8_t *out);
void i2s_unpack(const uint8_t *packed, size_t n, int8_t *vals);
float i2s_scale(const uint8_t *packed, size_t n);

/* TQ2_0 / TQ1_0: one 256-value block at a time, with its own f16 scale (raw bits). */
void tq2_pack_block(const int8_t *vals, uint16_t d_f16, uint8_t out[66]);
void tq2_unpack_block(const uint8_t blk[66], int8_t vals[256]);
void tq1_pack_block(const int8_t *vals, uint16_t d_f16, uint8_t out[54]);
void tq1_unpack_block(const uint8_t blk[54], int8_t vals[256]);
uint16_t tq_block_scale_bits(const uint8_t *blk, size_t block_bytes);

#endif

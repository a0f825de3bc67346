/* Tensor element types that a BitNet GGUF may hold, and how many bytes a tensor of
 * each takes. Layouts are stated in ../shared/spec/bitnet-b1.58.md, section 3. */
#ifndef BITNET_GGML_TYPES_H
#define BITNET_GGML_TYPES_H

#include <stdbool.h>
#include <stdint.h>

enum ggml_type {
    GGML_TYPE_F32 = 0,
    GGML_TYPE_F16 = 1,
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_BF16 = 30,
    GGML_TYPE_TQ1_0 = 34,
    GGML_TYPE_TQ2_0 = 35,
    GGML_TYPE_I2_S = 36,
};

#define QK8_0 32        /* Q8_0: f16 scale + 32 int8 */
#define QK_TQ 256       /* TQ1_0 / TQ2_0 block length */
#define QK_I2S 128      /* I2_S block length (32 bytes) */
#define TQ1_0_BYTES 54
#define TQ2_0_BYTES 66
#define Q8_0_BYTES 34
#define I2S_TAIL_BYTES 32 /* f32 scale + padding after the packed codes */

/* Name for messages ("F16", "I2_S", ...), or NULL for a type this engine does not know. */
const char *ggml_type_name(uint32_t type);

/* True for the types this engine can read. */
bool ggml_type_known(uint32_t type);

/* True for the ternary weight types (I2_S, TQ1_0, TQ2_0). */
bool ggml_type_is_ternary(uint32_t type);

/* Values per block (the row length ne0 must be a multiple of it). */
uint32_t ggml_type_block_len(uint32_t type);

/* Bytes of a tensor of n_values values whose rows are ne0 long; 0 if the shape does
 * not fit the type (row not a multiple of the block) or the size overflows. */
uint64_t ggml_tensor_nbytes(uint32_t type, uint64_t ne0, uint64_t n_values);

#endif

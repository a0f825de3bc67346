#include "model/ggml_types.h"

#include <stddef.h>

struct type_info {
    uint32_t id;
    const char *name;
    uint32_t block_len;   /* values per block */
    uint32_t block_bytes; /* bytes per block; 0 for I2_S, whose size is per tensor */
};

static const struct type_info types[] = {
    {GGML_TYPE_F32, "F32", 1, 4},
    {GGML_TYPE_F16, "F16", 1, 2},
    {GGML_TYPE_Q8_0, "Q8_0", QK8_0, Q8_0_BYTES},
    {GGML_TYPE_BF16, "BF16", 1, 2},
    {GGML_TYPE_TQ1_0, "TQ1_0", QK_TQ, TQ1_0_BYTES},
    {GGML_TYPE_TQ2_0, "TQ2_0", QK_TQ, TQ2_0_BYTES},
    {GGML_TYPE_I2_S, "I2_S", QK_I2S, 0},
};

static const struct type_info *lookup(uint32_t type)
{
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (types[i].id == type)
            return &types[i];
    return NULL;
}

const char *ggml_type_name(uint32_t type)
{
    const struct type_info *t = lookup(type);
    return t ? t->name : NULL;
}

bool ggml_type_known(uint32_t type)
{
    return lookup(type) != NULL;
}

bool ggml_type_is_ternary(uint32_t type)
{
    return type == GGML_TYPE_I2_S || type == GGML_TYPE_TQ1_0 || type == GGML_TYPE_TQ2_0;
}

uint32_t ggml_type_block_len(uint32_t type)
{
    const struct type_info *t = lookup(type);
    return t ? t->block_len : 0;
}

uint64_t ggml_tensor_nbytes(uint32_t type, uint64_t ne0, uint64_t n_values)
{
    const struct type_info *t = lookup(type);
    /* An empty row or a value count that is not whole rows describes no real tensor,
     * and reporting 0 lets callers reject it with one test. */
    if (!t || ne0 == 0 || n_values == 0 || ne0 % t->block_len != 0 || n_values % ne0 != 0)
        return 0;
    uint64_t blocks = n_values / t->block_len;
    if (type == GGML_TYPE_I2_S) {
        /* The whole tensor shares one scale stored after the codes, so the size is not
         * a multiple of any per-block size. */
        uint64_t packed = n_values / 4;
        if (packed > UINT64_MAX - I2S_TAIL_BYTES)
            return 0;
        return packed + I2S_TAIL_BYTES;
    }
    uint64_t bytes;
    if (__builtin_mul_overflow(blocks, (uint64_t)t->block_bytes, &bytes))
        return 0;
    return bytes;
}

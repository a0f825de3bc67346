/* The GPT-2 byte-level alphabet: every byte gets a printable code point so that a
 * vocabulary of byte sequences can be stored as ordinary text. Bytes that are already
 * visible Latin-1 keep their value; the 68 others (controls, space, DEL, the C1 range,
 * NBSP and the soft hyphen) take U+0100 onwards in byte order. */
#include "model/tokenizer.h"

static bool byte_is_visible(unsigned b)
{
    return (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
}

uint32_t tok_byte_to_codepoint(uint8_t b)
{
    if (byte_is_visible(b))
        return b;
    if (b <= 0x20)
        return 0x100 + b;
    if (b >= 0x7f && b <= 0xa0)
        return 0x100 + 0x21 + (b - 0x7f);
    return 0x100 + 0x21 + 0x22; /* 0xad, the last of the 68 */
}

int tok_codepoint_to_byte(uint32_t cp)
{
    if (cp < 0x100)
        return byte_is_visible(cp) ? (int)cp : -1;
    if (cp <= 0x120)
        return (int)(cp - 0x100);
    if (cp <= 0x142)
        return (int)(cp - 0x121 + 0x7f);
    if (cp == 0x143)
        return 0xad;
    return -1;
}

#include "worker/model_id.h"

#include <openssl/evp.h>

int model_id_sha256(const void *data, size_t len, char hex[MODEL_ID_HEX_LEN + 1],
                    struct errbuf *e)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    hex[0] = 0;
    if (!EVP_Digest(data, len, md, &md_len, EVP_sha256(), NULL) || md_len != 32)
        return err_set(e, "sha256: libcrypto failed over %zu bytes", len);
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < md_len; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[2 * md_len] = 0;
    return 0;
}

int model_id_of_gguf(const struct gguf_file *f, char hex[MODEL_ID_HEX_LEN + 1], struct errbuf *e)
{
    hex[0] = 0;
    if (!f->map || f->data_offset > f->size)
        return err_set(e, "%s: no header to hash (data offset %llu, file of %zu bytes)",
                       f->path ? f->path : "model", (unsigned long long)f->data_offset, f->size);
    if (model_id_sha256(f->map, (size_t)f->data_offset, hex, e))
        return err_prefix(e, "%s", f->path ? f->path : "model");
    return 0;
}

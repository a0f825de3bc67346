/* The weights' own identity: a sha256 of every tensor's bytes. The model id (the hash of
 * the header and tensor table) says two files declare the same model; only these say the
 * weights are the same bytes, which matters when a worker on another host loads its own
 * copy. Hashing a 2B-4T file takes about a second, so the digests are computed once per
 * file and kept in a cache keyed by the file's identity (device, inode, size, mtime and
 * header hash); a changed file is hashed again. */
#ifndef BITNET_TENSOR_DIGEST_H
#define BITNET_TENSOR_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#include "model/errbuf.h"
#include "model/gguf.h"

#define TENSOR_DIGEST_LEN 32

struct tensor_digests {
    uint8_t *sha;        /* n x TENSOR_DIGEST_LEN, in tensor-table order */
    size_t n;
    double seconds;      /* time spent hashing; 0 when read from the cache */
    char cache_path[512];/* where they are cached, "" when no cache could be used */
};

/* The digests of f's tensors, read from the cache when it matches the file, else computed
 * (and cached where possible: $XDG_CACHE_HOME/bitnetd, else ~/.cache/bitnetd). header_id
 * is the model id (64 hex digits), part of the cache key. -1 with e. */
int tensor_digests_get(const struct gguf_file *f, const char *header_id,
                       struct tensor_digests *out, struct errbuf *e);

/* Compares the digests of f (ours) with theirs (n x 32 bytes from elsewhere): 0 when all
 * are equal; else -1 with e naming the first tensor whose bytes differ. */
int tensor_digests_compare(const struct gguf_file *f, const struct tensor_digests *ours,
                           const uint8_t *theirs, size_t theirs_len, struct errbuf *e);

void tensor_digests_free(struct tensor_digests *d);

#endif

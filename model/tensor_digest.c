#include "model/tensor_digest.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/clock.h"
#include "model/output_file.h"

#define CACHE_MAGIC "BNTD0001"

/* What the cache file starts with: the file it describes. */
struct cache_key {
    char magic[8];
    uint64_t dev, ino, size, mtime_ns, n_tensors;
    char header_id[64];
};

static int make_key(const struct gguf_file *f, const char *header_id, struct cache_key *k)
{
    struct stat st;
    if (!f->path || stat(f->path, &st) != 0 || (uint64_t)st.st_size != f->size)
        return -1;
    memset(k, 0, sizeof *k);
    memcpy(k->magic, CACHE_MAGIC, 8);
    k->dev = (uint64_t)st.st_dev;
    k->ino = (uint64_t)st.st_ino;
    k->size = (uint64_t)st.st_size;
    k->mtime_ns = (uint64_t)st.st_mtim.tv_sec * 1000000000ull + (uint64_t)st.st_mtim.tv_nsec;
    k->n_tensors = f->n_tensors;
    memcpy(k->header_id, header_id, strnlen(header_id, 64));
    return 0;
}

static void cache_path(const char *header_id, char *out, size_t cap)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n;
    if (xdg && *xdg == '/')
        n = snprintf(out, cap, "%s/bitnetd/%.64s.digests", xdg, header_id);
    else if (home && *home == '/')
        n = snprintf(out, cap, "%s/.cache/bitnetd/%.64s.digests", home, header_id);
    else
        n = -1;
    if (n < 0 || (size_t)n >= cap)
        out[0] = 0;
}

static int read_cache(const char *path, const struct cache_key *want, uint8_t *sha, size_t n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return -1;
    struct cache_key k;
    int ok = fread(&k, sizeof k, 1, fp) == 1 && memcmp(&k, want, sizeof k) == 0 &&
             fread(sha, TENSOR_DIGEST_LEN, n, fp) == n && fgetc(fp) == EOF;
    fclose(fp);
    return ok ? 0 : -1;
}

/* mkdir -p of the cache file's directory (two levels at most: .cache and bitnetd). */
static void make_dirs(const char *path)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        return;
    *slash = 0;
    char *parent = strrchr(dir, '/');
    if (parent && parent != dir) {
        *parent = 0;
        mkdir(dir, 0700);
        *parent = '/';
    }
    mkdir(dir, 0700);
}

static void write_cache(const char *path, const struct cache_key *k, const uint8_t *sha,
                        size_t n)
{
    make_dirs(path);
    struct output_file of;
    struct errbuf e;
    if (output_open(&of, path, 0600, OUTPUT_EXACT_MODE, &e) < 0)
        return;
    if (fwrite(k, sizeof *k, 1, of.fp) == 1 && fwrite(sha, TENSOR_DIGEST_LEN, n, of.fp) == n)
        output_commit(&of, &e);
    output_abort(&of);
}

static int hash_tensors(const struct gguf_file *f, uint8_t *sha, struct errbuf *e)
{
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const struct gguf_tensor *t = &f->tensors[i];
        unsigned int len = 0;
        if (!EVP_Digest(t->data, (size_t)t->nbytes, sha + i * TENSOR_DIGEST_LEN, &len,
                        EVP_sha256(), NULL) || len != TENSOR_DIGEST_LEN)
            return err_set(e, "%s: sha256 of tensor %.*s failed", f->path ? f->path : "model",
                           (int)t->name.len, t->name.ptr);
    }
    return 0;
}

int tensor_digests_get(const struct gguf_file *f, const char *header_id,
                       struct tensor_digests *out, struct errbuf *e)
{
    memset(out, 0, sizeof *out);
    out->n = (size_t)f->n_tensors;
    out->sha = malloc(out->n ? out->n * TENSOR_DIGEST_LEN : 1);
    if (!out->sha)
        return err_set(e, "%s: out of memory", f->path ? f->path : "model");
    struct cache_key k;
    bool keyed = make_key(f, header_id, &k) == 0;
    if (keyed)
        cache_path(header_id, out->cache_path, sizeof out->cache_path);
    if (keyed && out->cache_path[0] && read_cache(out->cache_path, &k, out->sha, out->n) == 0)
        return 0;
    double t0 = clock_seconds();
    if (hash_tensors(f, out->sha, e) < 0) {
        tensor_digests_free(out);
        return -1;
    }
    out->seconds = clock_seconds() - t0;
    if (keyed && out->cache_path[0])
        write_cache(out->cache_path, &k, out->sha, out->n);
    return 0;
}

int tensor_digests_compare(const struct gguf_file *f, const struct tensor_digests *ours,
                           const uint8_t *theirs, size_t theirs_len, struct errbuf *e)
{
    if (theirs_len != ours->n * TENSOR_DIGEST_LEN)
        return err_set(e, "%s: %zu tensors here, digests of %zu given", f->path,
                       ours->n, theirs_len / TENSOR_DIGEST_LEN);
    for (size_t i = 0; i < ours->n; i++) {
        const uint8_t *a = ours->sha + i * TENSOR_DIGEST_LEN, *b = theirs + i * TENSOR_DIGEST_LEN;
        if (memcmp(a, b, TENSOR_DIGEST_LEN) != 0)
            return err_set(e, "%s: tensor %.*s holds other bytes than the coordinator's copy "
                              "(sha256 %02x%02x%02x%02x... here, %02x%02x%02x%02x... there)",
                           f->path, (int)f->tensors[i].name.len, f->tensors[i].name.ptr, a[0],
                           a[1], a[2], a[3], b[0], b[1], b[2], b[3]);
    }
    return 0;
}

void tensor_digests_free(struct tensor_digests *d)
{
    free(d->sha);
    d->sha = NULL;
    d->n = 0;
}

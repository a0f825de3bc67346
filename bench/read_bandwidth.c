#include "bench/read_bandwidth.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/timing.h"
#include "kernels/cpu_features.h"
#include "kernels/threadpool.h"
#include "model/clock.h"

struct probe {
    const uint8_t *buf;
    size_t bytes;
    bool wide;
    uint64_t sink[64]; /* one slot per thread, so the loads cannot be optimized away */
};

/* Sums 64-byte lines as 64-bit words; wide enough that the loads, not the adds, limit. */
static uint64_t read_scalar(const uint8_t *p, size_t n)
{
    const uint64_t *w = (const uint64_t *)(const void *)p;
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (size_t i = 0; i < n / 8; i += 8) {
        a ^= w[i] + w[i + 4];
        b ^= w[i + 1] + w[i + 5];
        c ^= w[i + 2] + w[i + 6];
        d ^= w[i + 3] + w[i + 7];
    }
    return a ^ b ^ c ^ d;
}

#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("avx2"))) static uint64_t read_avx2(const uint8_t *p, size_t n)
{
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    for (size_t i = 0; i < n; i += 128) {
        a = _mm256_xor_si256(a, _mm256_load_si256((const __m256i *)(const void *)(p + i)));
        b = _mm256_xor_si256(b, _mm256_load_si256((const __m256i *)(const void *)(p + i + 32)));
        c = _mm256_xor_si256(c, _mm256_load_si256((const __m256i *)(const void *)(p + i + 64)));
        d = _mm256_xor_si256(d, _mm256_load_si256((const __m256i *)(const void *)(p + i + 96)));
    }
    a = _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(c, d));
    return (uint64_t)_mm256_extract_epi64(a, 0) ^ (uint64_t)_mm256_extract_epi64(a, 3);
}
#endif

static void probe_task(void *ctx, int ith, int nth)
{
    struct probe *pr = ctx;
    int lines = (int)(pr->bytes / 4096), lo, hi;
    split_range(lines, 1, ith, nth, &lo, &hi);
    const uint8_t *p = pr->buf + (size_t)lo * 4096;
    size_t n = (size_t)(hi - lo) * 4096;
    uint64_t v;
#if defined(__x86_64__)
    v = pr->wide ? read_avx2(p, n) : read_scalar(p, n);
#else
    v = read_scalar(p, n);
#endif
    pr->sink[ith % 64] ^= v;
}

/* A buffer touched page by page and a pinned pool to read it: what every measurement
 * needs, made once. */
struct probe_setup {
    uint8_t *buf;
    size_t bytes;
    struct threadpool *pool;
    struct probe pr;
};

static int probe_setup_open(struct probe_setup *ps, size_t bytes, int n_threads, struct errbuf *e)
{
    bytes = (bytes + 4095) / 4096 * 4096;
    if (bytes < 4096)
        return err_set(e, "read probe: bad parameters");
    ps->bytes = bytes;
    ps->buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ps->buf == MAP_FAILED)
        return err_set(e, "read probe: cannot map %zu MiB: %s", bytes >> 20, strerror(errno));
    ps->pool = threadpool_new(n_threads, true, e);
    if (!ps->pool) {
        munmap(ps->buf, bytes);
        return -1;
    }
    /* distinct non-zero pages, so no page is shared with the zero page */
    for (size_t i = 0; i < bytes; i += 64)
        ps->buf[i] = (uint8_t)(i >> 6);
    struct cpu_features f;
    cpu_features_detect(&f);
    ps->pr = (struct probe){.buf = ps->buf, .bytes = bytes, .wide = f.avx2};
    threadpool_run(ps->pool, probe_task, &ps->pr); /* warm-up: faults and TLB */
    return 0;
}

/* The median of `passes` timed reads of the whole buffer, in GB/s. */
static int probe_setup_measure(struct probe_setup *ps, int passes, double *gbps, struct errbuf *e)
{
    if (passes < 1 || passes > 1000)
        return err_set(e, "read probe: %d passes", passes);
    double *t = malloc((size_t)passes * sizeof *t);
    if (!t)
        return err_set(e, "out of memory");
    for (int i = 0; i < passes; i++) {
        double t0 = clock_seconds();
        threadpool_run(ps->pool, probe_task, &ps->pr);
        t[i] = clock_seconds() - t0;
    }
    *gbps = (double)ps->bytes / bench_middle(t, passes) / 1e9;
    free(t);
    return 0;
}

static void probe_setup_close(struct probe_setup *ps)
{
    threadpool_free(ps->pool);
    munmap(ps->buf, ps->bytes);
}

/* The child's side: a measurement for every pass count read from `in`, its GB/s (or -1)
 * written to `out`; ends at EOF or a count of 0. */
static void probe_server_loop(size_t bytes, int n_threads, int in, int out)
{
    struct probe_setup ps;
    struct errbuf e;
    bool ok = probe_setup_open(&ps, bytes, n_threads, &e) == 0;
    /* ready (1) or not (-1): the caller waits for it, so that touching the buffer never
     * competes with the work the caller measures */
    double v = ok ? 1.0 : -1.0;
    if (ok)
        threadpool_park(ps.pool);
    if (write(out, &v, sizeof v) != (ssize_t)sizeof v || !ok) {
        if (ok)
            probe_setup_close(&ps);
        return;
    }
    int passes;
    while (read(in, &passes, sizeof passes) == (ssize_t)sizeof passes && passes > 0) {
        if (probe_setup_measure(&ps, passes, &v, &e) < 0)
            v = -1.0;
        /* the caller's work runs next on the same CPUs: sleep rather than spin */
        threadpool_park(ps.pool);
        if (write(out, &v, sizeof v) != (ssize_t)sizeof v)
            break;
    }
    probe_setup_close(&ps);
}

int read_probe_server_start(struct read_probe_server *s, size_t bytes, int n_threads,
                            struct errbuf *e)
{
    int down[2], up[2];
    if (pipe(down) != 0)
        return err_set(e, "read probe: pipe: %s", strerror(errno));
    if (pipe(up) != 0) {
        int err = errno;
        close(down[0]), close(down[1]);
        return err_set(e, "read probe: pipe: %s", strerror(err));
    }
    pid_t pid = fork();
    if (pid < 0) {
        int err = errno;
        close(down[0]), close(down[1]), close(up[0]), close(up[1]);
        return err_set(e, "read probe: fork: %s", strerror(err));
    }
    if (pid == 0) {
        close(down[1]), close(up[0]);
        probe_server_loop(bytes, n_threads, down[0], up[1]);
        _exit(0);
    }
    close(down[0]), close(up[1]);
    s->pid = pid;
    s->to_child = down[1];
    s->from_child = up[0];
    double ready = -1.0;
    if (read(s->from_child, &ready, sizeof ready) != (ssize_t)sizeof ready || ready <= 0) {
        read_probe_server_stop(s);
        return err_set(e, "read probe: the probe process could not set up %zu MiB", bytes >> 20);
    }
    return 0;
}

int read_probe_server_measure(struct read_probe_server *s, int passes, double *gbps,
                              struct errbuf *e)
{
    double v = -1.0;
    if (write(s->to_child, &passes, sizeof passes) != (ssize_t)sizeof passes ||
        read(s->from_child, &v, sizeof v) != (ssize_t)sizeof v || v <= 0)
        return err_set(e, "read probe: the probe process failed");
    *gbps = v;
    return 0;
}

void read_probe_server_stop(struct read_probe_server *s)
{
    if (s->pid <= 0)
        return;
    close(s->to_child);
    close(s->from_child);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

int read_bandwidth_probe_isolated(size_t bytes, int n_threads, int passes, double *gbps,
                                  struct errbuf *e)
{
    struct read_probe_server s;
    if (read_probe_server_start(&s, bytes, n_threads, e) < 0)
        return -1;
    int rc = read_probe_server_measure(&s, passes, gbps, e);
    read_probe_server_stop(&s);
    return rc;
}

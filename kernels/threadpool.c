#include "kernels/threadpool.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Spin this many rounds before sleeping: long enough to bridge the gap between the
 * matrices of one token, short enough not to burn a core between requests. */
#define SPIN_ROUNDS 20000

struct worker {
    struct threadpool *pool;
    int ith;
    pthread_t thread;
};

struct threadpool {
    int n;
    struct worker *workers;  /* n - 1 of them; the caller is thread 0 */
    threadpool_fn fn;
    void *ctx;
    _Atomic uint32_t generation; /* bumped to start a job */
    _Atomic uint32_t pending;    /* workers still in the current job */
    _Atomic bool stop;
    _Atomic uint32_t sleepers;   /* threads in futex_wait: only then is a wake-up needed */
    _Atomic bool parked;         /* threadpool_park: sleep now instead of spinning */
    int cpus[CPU_SETSIZE];
    int n_cpus;
    bool pin;
    cpu_set_t caller_affinity; /* restored on free: the caller is pinned while the pool lives */
    bool caller_saved;
};

static void futex_wait(_Atomic uint32_t *addr, uint32_t val)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *addr)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Waits until *addr differs from val: spinning first (the next call of a forward pass
 * comes within microseconds), then asleep. A sleeper is counted before its last check of
 * *addr, so whoever changes *addr and then sees no sleeper can skip the wake-up. */
static void await_change(struct threadpool *p, _Atomic uint32_t *addr, uint32_t val)
{
    for (int i = 0; i < SPIN_ROUNDS && !atomic_load_explicit(&p->parked, memory_order_relaxed); i++) {
        if (atomic_load_explicit(addr, memory_order_acquire) != val)
            return;
        cpu_relax();
    }
    atomic_fetch_add(&p->sleepers, 1);
    while (atomic_load(addr) == val)
        futex_wait(addr, val);
    atomic_fetch_sub(&p->sleepers, 1);
}

static void pin_to(const struct threadpool *p, int ith)
{
    if (!p->pin || p->n_cpus == 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(p->cpus[ith % p->n_cpus], &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct threadpool *p = w->pool;
    pin_to(p, w->ith);
    uint32_t seen = 0;
    for (;;) {
        await_change(p, &p->generation, seen);
        seen = atomic_load_explicit(&p->generation, memory_order_acquire);
        if (atomic_load_explicit(&p->stop, memory_order_acquire))
            return NULL;
        p->fn(p->ctx, w->ith, p->n);
        if (atomic_fetch_sub(&p->pending, 1) == 1 && atomic_load(&p->sleepers))
            futex_wake_all(&p->pending);
    }
}

bool claim_range(_Atomic int *next, int n, int align, int min_take, int nth, int *lo, int *hi)
{
    if (align < 1)
        align = 1;
    if (nth < 1)
        nth = 1;
    int cur = atomic_load_explicit(next, memory_order_relaxed);
    for (;;) {
        if (cur >= n)
            return false;
        int left = n - cur, take = nth == 1 ? left : (int)((3ll * left) / (4ll * nth));
        if (take < min_take)
            take = min_take;
        take = (take + align - 1) / align * align;
        if (take < 1 || take > left)
            take = left;
        if (atomic_compare_exchange_weak_explicit(next, &cur, cur + take, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            *lo = cur;
            *hi = cur + take;
            return true;
        }
    }
}

int cpus_available(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return 1;
    int n = CPU_COUNT(&set);
    return n > 0 ? n : 1;
}

struct threadpool *threadpool_new(int n_threads, bool pin, struct errbuf *e)
{
    if (n_threads < 1 || n_threads > 1024) {
        err_set(e, "thread count %d out of range (1..1024)", n_threads);
        return NULL;
    }
    struct threadpool *p = calloc(1, sizeof *p);
    if (!p) {
        err_set(e, "out of memory");
        return NULL;
    }
    p->n = n_threads;
    p->pin = pin;
    if (pthread_getaffinity_np(pthread_self(), sizeof p->caller_affinity, &p->caller_affinity) == 0) {
        p->caller_saved = true;
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &p->caller_affinity))
                p->cpus[p->n_cpus++] = c;
    }
    p->workers = calloc((size_t)n_threads, sizeof *p->workers);
    if (!p->workers) {
        free(p);
        err_set(e, "out of memory");
        return NULL;
    }
    pin_to(p, 0);
    for (int i = 1; i < n_threads; i++) {
        p->workers[i].pool = p;
        p->workers[i].ith = i;
        int rc = pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]);
        if (rc != 0) {
            p->n = i; /* only the threads that exist get joined */
            threadpool_free(p);
            err_set(e, "cannot start thread %d: %s", i, strerror(rc));
            return NULL;
        }
    }
    return p;
}

void threadpool_free(struct threadpool *p)
{
    if (!p)
        return;
    atomic_store_explicit(&p->stop, true, memory_order_release);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_acq_rel);
    futex_wake_all(&p->generation);
    for (int i = 1; i < p->n; i++)
        pthread_join(p->workers[i].thread, NULL);
    if (p->pin && p->caller_saved)
        pthread_setaffinity_np(pthread_self(), sizeof p->caller_affinity, &p->caller_affinity);
    free(p->workers);
    free(p);
}

int threadpool_size(const struct threadpool *p)
{
    return p ? p->n : 1;
}

void threadpool_run(struct threadpool *p, threadpool_fn fn, void *ctx)
{
    if (!p || p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->parked, false, memory_order_relaxed);
    atomic_store_explicit(&p->pending, (uint32_t)(p->n - 1), memory_order_release);
    atomic_fetch_add(&p->generation, 1);
    if (atomic_load(&p->sleepers))
        futex_wake_all(&p->generation);
    fn(ctx, 0, p->n);
    uint32_t left;
    while ((left = atomic_load_explicit(&p->pending, memory_order_acquire)) != 0)
        await_change(p, &p->pending, left);
}

void threadpool_park(struct threadpool *p)
{
    if (p)
        atomic_store_explicit(&p->parked, true, memory_order_relaxed);
}

void split_range(int n, int align, int ith, int nth, int *lo, int *hi)
{
    if (align < 1)
        align = 1;
    int units = (n + align - 1) / align;
    int per = units / nth, extra = units % nth;
    int u0 = ith * per + (ith < extra ? ith : extra);
    int u1 = u0 + per + (ith < extra ? 1 : 0);
    *lo = u0 * align < n ? u0 * align : n;
    *hi = u1 * align < n ? u1 * align : n;
}

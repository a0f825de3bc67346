/* A persistent pool of pinned threads. threadpool_run() hands one function to every
 * thread (the caller is thread 0) and returns when all are done: one start and one
 * finish signal per call, spinning briefly before sleeping, so a forward pass can afford
 * a call per matrix. */
#ifndef BITNET_THREADPOOL_H
#define BITNET_THREADPOOL_H

#include <stdbool.h>

#include "model/errbuf.h"

struct threadpool;

typedef void (*threadpool_fn)(void *ctx, int ith, int nth);

/* n_threads counts the caller. With pin, thread i is bound to the i-th CPU the process
 * may run on. */
struct threadpool *threadpool_new(int n_threads, bool pin, struct errbuf *e);
void threadpool_free(struct threadpool *p);
int threadpool_size(const struct threadpool *p);

/* Runs fn(ctx, i, n) on every thread i in [0, n) and waits for all of them. A NULL
 * pool runs fn(ctx, 0, 1) on the caller. */
void threadpool_run(struct threadpool *p, threadpool_fn fn, void *ctx);

/* The pool's threads sleep at once instead of spinning until the next call: for a
 * process that shares its CPUs with another one (pipeline stages on one node) and has
 * finished its part for now. The next threadpool_run wakes them. */
void threadpool_park(struct threadpool *p);

/* Splits [0, n) into nth parts whose boundaries are multiples of align (except the
 * end); part ith is [*lo, *hi), possibly empty. */
void split_range(int n, int align, int ith, int nth, int *lo, int *hi);

/* Guided self-scheduling of [0, n) among nth threads sharing *next (0 at the start of
 * the call): each claim takes three quarters of what is left over nth (all of it for one
 * thread), rounded up to a multiple of align and at least min_take, so the threads' last
 * pieces are small and end together even when one of them runs slower, for a handful of
 * atomic operations per call. The first pieces are large because every piece starts its
 * memory streams cold: at one thread, halving what was left each time read the weights
 * 5% slower than one piece. Returns false when nothing is left; otherwise [*lo, *hi) is
 * the caller's. */
bool claim_range(_Atomic int *next, int n, int align, int min_take, int nth, int *lo, int *hi);

/* Number of CPUs this process may run on. */
int cpus_available(void);

#endif

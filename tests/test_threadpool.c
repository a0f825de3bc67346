/* The pool's contract: every thread index runs once per call, calls do not overlap, and
 * the two ways of sharing rows (split_range, claim_range) hand out each row exactly once,
 * on their alignment, whatever the thread count. Decode's results depend on the last: a
 * row claimed twice or never gives a wrong logit with no other symptom. */
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/threadpool.h"
#include "tests/check.h"

/* split_range: the parts of [0, n) in order, each boundary aligned. */
static void test_split(void)
{
    static const int ns[] = {0, 1, 15, 16, 17, 640, 2560, 6913};
    static const int aligns[] = {1, 16, 64};
    for (size_t a = 0; a < sizeof aligns / sizeof *aligns; a++)
        for (size_t i = 0; i < sizeof ns / sizeof *ns; i++)
            for (int nth = 1; nth <= 5; nth++) {
                int at = 0, bad = 0;
                for (int t = 0; t < nth; t++) {
                    int lo, hi;
                    split_range(ns[i], aligns[a], t, nth, &lo, &hi);
                    if (lo != at || hi < lo || (hi != ns[i] && hi % aligns[a] != 0))
                        bad++;
                    at = hi;
                }
                CHECK(bad == 0 && at == ns[i], "split_range n=%d align=%d nth=%d", ns[i],
                      aligns[a], nth);
            }
}

/* claim_range on one thread: contiguous pieces from 0 to n, aligned starts, none under
 * min_take but the last, never growing, and few of them. */
static void test_claim_serial(void)
{
    static const int ns[] = {0, 1, 15, 16, 17, 640, 2560, 6912, 128256};
    for (size_t i = 0; i < sizeof ns / sizeof *ns; i++)
        for (int nth = 1; nth <= 4; nth++) {
            int n = ns[i], min_take = 48, align = 16;
            _Atomic int next = 0;
            int lo, hi, at = 0, claims = 0, bad = 0, prev = n + 1;
            while (claim_range(&next, n, align, min_take, nth, &lo, &hi)) {
                int take = hi - lo;
                if (lo != at || take < 1 || lo % align != 0 ||
                    (hi != n && (take < min_take || take % align != 0)) ||
                    (hi != n && take > prev))
                    bad++;
                prev = take;
                at = hi;
                claims++;
            }
            CHECK(bad == 0 && at == n, "claim_range n=%d nth=%d: %d bad pieces, ended at %d", n,
                  nth, bad, at);
            /* each claim takes 1 / (2 nth) of what is left: about 2 nth ln(n) claims, not
             * the n / min_take of fixed pieces */
            int bound = 2 * nth * (int)(log((double)n + 1) + 2);
            CHECK(claims <= bound, "claim_range n=%d nth=%d: %d claims (bound %d)", n, nth,
                  claims, bound);
            CHECK(!claim_range(&next, n, align, min_take, nth, &lo, &hi),
                  "claim_range n=%d: a claim after the end", n);
        }
    /* odd arguments still cover the range: align and min_take below 1, min_take > n */
    _Atomic int next = 0;
    int lo, hi, at = 0;
    while (claim_range(&next, 37, 0, 0, 2, &lo, &hi)) {
        CHECK(lo == at && hi > lo, "claim_range align 0: [%d, %d) after %d", lo, hi, at);
        at = hi;
    }
    CHECK(at == 37, "claim_range align 0 ended at %d", at);
    next = 0;
    CHECK(claim_range(&next, 37, 16, 1000, 2, &lo, &hi) && lo == 0 && hi == 37,
          "claim_range min_take > n: [%d, %d)", lo, hi);
}

/* claim_range under a real pool: every row taken exactly once, over many calls. */
struct claim_job {
    int n, align, min_take;
    _Atomic int next;
    _Atomic int *hits;
    _Atomic int pieces;
};

static void claim_task(void *ctx, int ith, int nth)
{
    (void)ith;
    struct claim_job *j = ctx;
    int lo, hi;
    while (claim_range(&j->next, j->n, j->align, j->min_take, nth, &lo, &hi)) {
        atomic_fetch_add(&j->pieces, 1);
        for (int r = lo; r < hi; r++)
            atomic_fetch_add(&j->hits[r], 1);
    }
}

static void test_claim_pool(int threads)
{
    struct errbuf e;
    struct threadpool *p = threadpool_new(threads, false, &e);
    CHECK(p != NULL, "threadpool_new(%d): %s", threads, p ? "" : e.msg);
    if (!p)
        return;
    static const int ns[] = {1, 17, 640, 2560, 6912, 128256};
    _Atomic int *hits = calloc(128256, sizeof *hits);
    for (size_t i = 0; i < sizeof ns / sizeof *ns; i++) {
        int bad_calls = 0;
        for (int call = 0; call < 20; call++) {
            struct claim_job j = {.n = ns[i], .align = 16, .min_take = 16 + call % 3 * 16,
                                  .hits = hits};
            for (int r = 0; r < ns[i]; r++)
                atomic_store(&hits[r], 0);
            threadpool_run(p, claim_task, &j);
            int bad = 0;
            for (int r = 0; r < ns[i]; r++)
                bad += atomic_load(&hits[r]) != 1;
            bad_calls += bad != 0;
        }
        CHECK(bad_calls == 0, "%d threads, n=%d: %d of 20 calls took some row other than once",
              threads, ns[i], bad_calls);
    }
    free(hits);
    threadpool_free(p);
}

/* threadpool_run: each index once per call, and the caller returns only after all. */
struct count_job {
    _Atomic int calls[8];
    _Atomic int running;
    _Atomic int overlap;
};

static void count_task(void *ctx, int ith, int nth)
{
    struct count_job *j = ctx;
    if (nth > 8 || ith < 0 || ith >= nth) {
        atomic_fetch_add(&j->overlap, 1000);
        return;
    }
    atomic_fetch_add(&j->running, 1);
    atomic_fetch_add(&j->calls[ith], 1);
    atomic_fetch_sub(&j->running, 1);
}

static void test_run(int threads)
{
    struct errbuf e;
    struct threadpool *p = threadpool_new(threads, false, &e);
    CHECK(p != NULL && threadpool_size(p) == threads, "threadpool_new(%d)", threads);
    if (!p)
        return;
    struct count_job j;
    memset(&j, 0, sizeof j);
    for (int call = 0; call < 2000; call++) {
        if (call == 1000)
            threadpool_park(p); /* the threads sleep; the next call must still wake them */
        threadpool_run(p, count_task, &j);
        if (atomic_load(&j.running) != 0)
            atomic_fetch_add(&j.overlap, 1);
    }
    for (int t = 0; t < threads; t++)
        CHECK(atomic_load(&j.calls[t]) == 2000, "%d threads: index %d ran %d times of 2000",
              threads, t, atomic_load(&j.calls[t]));
    CHECK(atomic_load(&j.overlap) == 0, "%d threads: a call returned while threads ran",
          threads);
    threadpool_free(p);
    struct errbuf e2;
    CHECK(threadpool_new(0, false, &e2) == NULL, "a pool of 0 threads was made");
}

int main(void)
{
    test_split();
    test_claim_serial();
    for (int threads = 1; threads <= 4; threads++) {
        test_run(threads);
        test_claim_pool(threads);
    }
    return check_done("test_threadpool");
}

/* The cost of one tensor-parallel exchange between two processes on this host: the
 * shared-memory gather of worker/tp_group.c, with the shapes a 2B-4T decode step gathers
 * (2560 and 6912 floats, 4 of them a layer) and the head's logits (128256 floats), and a
 * prefill chunk's (64 rows of 6912). Two processes, each pinned to its own CPU when the
 * machine has two: the leader and a forked rank 1 attached to the same region.
 *
 * usage: bench_tp_exchange [repeats]   (default 5; each repeat times ITERS gathers of
 * every shape; prints each shape's median microseconds per gather) */
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/timing.h"
#include "model/clock.h"
#include "worker/tp_group.h"

#define ITERS 2000
#define MAX_REPEATS 31

static const struct {
    const char *what;
    int rows, width;
} shapes[] = {
    {"decode, 2560 floats (attention, o, down)", 1, 2560},
    {"decode, 6912 floats (gate x up)", 1, 6912},
    {"decode, 128256 floats (the head's logits)", 1, 128256},
    {"prefill, 64 rows x 6912 floats", 64, 6912},
};
#define N_SHAPES (int)(sizeof shapes / sizeof shapes[0])

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
}

/* Both ranks run the same sequence of gathers; rank 0 times them. */
static void run(struct tp_group *g, float *buf, int repeats, double us[N_SHAPES][MAX_REPEATS])
{
    for (int r = 0; r < repeats; r++)
        for (int k = 0; k < N_SHAPES; k++) {
            int w = shapes[k].width, half = w / 2 / 64 * 64;
            int lo = g->rank == 0 ? 0 : half, hi = g->rank == 0 ? half : w;
            int iters = shapes[k].width > 100000 ? ITERS / 10 : ITERS;
            double t0 = clock_seconds();
            for (int i = 0; i < iters; i++)
                tp_group_gather(g, buf, shapes[k].rows, w, lo, hi);
            us[k][r] = (clock_seconds() - t0) / iters * 1e6;
        }
}

int main(int argc, char **argv)
{
    int repeats = argc > 1 ? atoi(argv[1]) : 5;
    if (repeats < 1 || repeats > MAX_REPEATS) {
        fprintf(stderr, "bench_tp_exchange: repeats 1..%d\n", MAX_REPEATS);
        return 2;
    }
    struct errbuf e;
    struct tp_group g;
    char load[1] = {0};
    if (tp_group_create(&g, 2, 64, 2560, 6912, 128256, load, sizeof load, "bench", &e) < 0) {
        fprintf(stderr, "bench_tp_exchange: %s\n", e.msg);
        return 1;
    }
    float *buf = calloc((size_t)64 * 128256, sizeof(float));
    if (!buf)
        return 1;
    int two = sysconf(_SC_NPROCESSORS_ONLN) >= 2;
    pid_t child = fork();
    if (child == 0) {
        struct tp_group f;
        if (two)
            pin(1);
        if (tp_group_attach(&f, g.memfd, 1, "bench.r1", &e) < 0)
            _exit(1);
        double ignored[N_SHAPES][MAX_REPEATS];
        run(&f, buf, repeats, ignored);
        _exit(0);
    }
    g.followers[1] = child;
    if (two)
        pin(0);
    double us[N_SHAPES][MAX_REPEATS];
    run(&g, buf, repeats, us);
    int status;
    waitpid(child, &status, 0);
    g.followers[1] = 0;
    printf("tensor-parallel exchange between 2 processes over shared memory (%s), %d repeats\n",
           two ? "one CPU each" : "sharing one CPU", repeats);
    for (int k = 0; k < N_SHAPES; k++)
        printf("  %-44s %8.2f us per gather (median)\n", shapes[k].what, bench_middle(us[k], repeats));
    tp_group_destroy(&g);
    free(buf);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

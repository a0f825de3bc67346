/* The cost of one tensor-parallel exchange between two processes on this host: the
 * shared-memory gather of worker/tp_group.c, with the shapes a 2B-4T decode step gathers
 * (2560 and 6912 floats, 4 of them a layer) and the head's logits (128256 floats), and a
 * prefill chunk's (64 rows of 6912). Two processes, each pinned to its own CPU when the
 * machine has two: the leader and a forked rank 1 attached to the same region.
 *
 * Then the same exchanges as they would go between hosts, which bitnetd does not do yet:
 * each rank sends its piece to the other over ZeroMQ on tcp://127.0.0.1 with CURVE (as
 * the rest of the remote path) and receives the other's: the cost of the transport
 * alone, without a network's latency.
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

#include <zmq.h>

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

/* The tcp exchange: rank 0 is the CURVE server (PAIR bound), rank 1 the client. */
static void *tcp_pair(void *ctx, int rank, const char *pub, const char *sec, int port)
{
    void *s = zmq_socket(ctx, ZMQ_PAIR);
    char ep[64];
    int one = 1;
    if (rank == 0) {
        zmq_setsockopt(s, ZMQ_CURVE_SERVER, &one, sizeof one);
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, 40);
        snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
        if (zmq_bind(s, ep) != 0)
            return NULL;
    } else {
        char cpub[41], csec[41];
        zmq_curve_keypair(cpub, csec);
        zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, pub, 40);
        zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, cpub, 40);
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, csec, 40);
        snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
        if (zmq_connect(s, ep) != 0)
            return NULL;
    }
    return s;
}

static void run_tcp(void *s, int rank, float *buf, int repeats, double us[N_SHAPES][MAX_REPEATS])
{
    for (int r = 0; r < repeats; r++)
        for (int k = 0; k < N_SHAPES; k++) {
            int w = shapes[k].width, half = w / 2 / 64 * 64, n = shapes[k].rows;
            int lo = rank == 0 ? 0 : half, hi = rank == 0 ? half : w;
            int olo = rank == 0 ? half : 0, ohi = rank == 0 ? w : half;
            int iters = shapes[k].width > 100000 ? ITERS / 10 : ITERS;
            double t0 = clock_seconds();
            for (int i = 0; i < iters; i++)
                for (int row = 0; row < n; row++) {
                    float *b = buf + (size_t)row * w;
                    /* rank 0 sends first, so the two never both wait to receive */
                    if (rank == 0) {
                        zmq_send(s, b + lo, (size_t)(hi - lo) * sizeof(float), 0);
                        zmq_recv(s, b + olo, (size_t)(ohi - olo) * sizeof(float), 0);
                    } else {
                        zmq_recv(s, b + olo, (size_t)(ohi - olo) * sizeof(float), 0);
                        zmq_send(s, b + lo, (size_t)(hi - lo) * sizeof(float), 0);
                    }
                }
            us[k][r] = (clock_seconds() - t0) / iters * 1e6;
        }
}

static int bench_tcp(int repeats, float *buf, int two)
{
    char pub[41], sec[41];
    if (zmq_curve_keypair(pub, sec) != 0) {
        fprintf(stderr, "bench_tp_exchange: zmq_curve_keypair: %s\n", zmq_strerror(zmq_errno()));
        return 1;
    }
    int port = 20000 + (int)(getpid() % 20000);
    pid_t child = fork();
    if (child == 0) {
        if (two)
            pin(1);
        void *ctx = zmq_ctx_new(), *s = tcp_pair(ctx, 1, pub, sec, port);
        double ignored[N_SHAPES][MAX_REPEATS];
        if (s)
            run_tcp(s, 1, buf, repeats, ignored);
        zmq_close(s);
        zmq_ctx_term(ctx);
        _exit(s ? 0 : 1);
    }
    if (two)
        pin(0);
    void *ctx = zmq_ctx_new(), *s = tcp_pair(ctx, 0, pub, sec, port);
    if (!s) {
        fprintf(stderr, "bench_tp_exchange: tcp port %d: %s\n", port, zmq_strerror(zmq_errno()));
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        return 1;
    }
    double us[N_SHAPES][MAX_REPEATS];
    run_tcp(s, 0, buf, repeats, us);
    int status;
    waitpid(child, &status, 0);
    zmq_close(s);
    zmq_ctx_term(ctx);
    printf("the same exchanges over ZeroMQ, tcp://127.0.0.1 with CURVE (not a transport bitnetd "
           "uses yet)\n");
    for (int k = 0; k < N_SHAPES; k++)
        printf("  %-44s %8.2f us per exchange (median)\n", shapes[k].what,
               bench_middle(us[k], repeats));
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
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
    int rc = WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
    if (rc == 0)
        rc = bench_tcp(repeats, buf, two);
    free(buf);
    return rc;
}

/* bitnet-worker: one stage of the bitnetd pipeline (docs/runtime.md). */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "proto/endpoints.h"
#include "worker/tp_follower.h"
#include "worker/worker.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: bitnet-worker --id ID --control ENDPOINT --data ENDPOINT\n"
            "                     [--server-key FILE --key FILE] [--advertise HOST]\n"
            "                     [--model FILE] [--threads N] [--numa-node N]\n"
            "                     [--max-bytes N] [--heartbeat-ms MS]\n"
            "\n"
            "  --id ID            worker id (the daemon's name for this stage, e.g. w1)\n"
            "  --control ENDPOINT the daemon's worker-control socket, e.g. ipc:///run/bitnetd/workers.sock\n"
            "                     or, for a remote worker, tcp://HOST:5600 (bitnetd --listen)\n"
            "  --data ENDPOINT    where to bind this worker's Forward socket, e.g.\n"
            "                     ipc:///run/bitnetd/w1.data or tcp://*:5601\n"
            "  --server-key FILE  the daemon's public key (its .pub); needed with tcp control\n"
            "  --key FILE         this worker's key pair (bitnetctl keygen's .key); needed\n"
            "                     with tcp control or data\n"
            "  --advertise HOST   host peers connect to when --data binds a wildcard\n"
            "                     (default: this host's name)\n"
            "  --model FILE       this host's copy of the model (default: the daemon's path);\n"
            "                     its sha256 must be the daemon's\n"
            "  --threads N        threads to compute with (default: as the daemon says; for a\n"
            "                     remote worker, every CPU it may use)\n"
            "  --numa-node N      run on node N's CPUs with the weights in its memory\n"
            "                     (default: as the daemon says; a remote worker: unbound)\n"
            "  --max-bytes N      largest message accepted or sent (default %zu)\n"
            "  --heartbeat-ms MS  heartbeat interval (default 200)\n"
            "  --hello-retry-ms MS  how long a Hello waits for the daemon's answer before it\n"
            "                     is sent again (default %d)\n"
            "  --version          print the version and exit\n"
            "\n"
            "Exit status 1 when the daemon refuses this worker (its Hello, or on tcp its key).\n",
            WIRE_DEFAULT_MAX_BYTES, WORKER_HELLO_RETRY_MS);
}

static int parse_u64(const char *s, unsigned long long lo, unsigned long long hi,
                     unsigned long long *out)
{
    char *end;
    errno = 0;
    if (!s || !*s || *s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* An interval option in milliseconds, 1..60000, into *out; -1 (reported) when bad. */
static int parse_ms(const char *name, const char *s, int *out)
{
    unsigned long long v;
    if (parse_u64(s, 1, 60000, &v) < 0) {
        fprintf(stderr, "bitnet-worker: --%s '%s': expected 1..60000\n", name, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* The id is a ZeroMQ routing id and a log prefix: printable, no spaces, 1..255 bytes. */
static int valid_id(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 255)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (id[i] <= ' ' || id[i] > '~')
            return 0;
    return 1;
}

static int parse_args(int argc, char **argv, struct worker_opts *o)
{
    static const struct option longs[] = {
        {"id", required_argument, NULL, 'i'},
        {"control", required_argument, NULL, 'c'},
        {"data", required_argument, NULL, 'd'},
        {"max-bytes", required_argument, NULL, 'm'},
        {"heartbeat-ms", required_argument, NULL, 'b'},
        {"hello-retry-ms", required_argument, NULL, 'r'},
        {"server-key", required_argument, NULL, 's'},
        {"key", required_argument, NULL, 'k'},
        {"advertise", required_argument, NULL, 'a'},
        {"model", required_argument, NULL, 'M'},
        {"threads", required_argument, NULL, 't'},
        {"numa-node", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        /* internal: a tensor-parallel rank started by a worker (worker/tp_follower.c) */
        {"tp-follower", required_argument, NULL, 'F'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    unsigned long long v;
    o->max_bytes = WIRE_DEFAULT_MAX_BYTES;
    o->heartbeat_ms = 200;
    o->hello_retry_ms = WORKER_HELLO_RETRY_MS;
    o->numa_node = -1;
    opterr = 0;
    for (;;) {
        int c = getopt_long(argc, argv, "", longs, NULL);
        if (c == -1)
            break;
        switch (c) {
        case 'i':
            o->id = optarg;
            break;
        case 'c':
            o->control = optarg;
            break;
        case 'd':
            o->data = optarg;
            break;
        case 'm':
            if (parse_u64(optarg, 4096, (unsigned long long)1 << 40, &v) < 0) {
                fprintf(stderr, "bitnet-worker: --max-bytes '%s': expected a byte count from "
                                "4096 to 2^40\n", optarg);
                return 2;
            }
            o->max_bytes = (size_t)v;
            break;
        case 'b':
            if (parse_ms("heartbeat-ms", optarg, &o->heartbeat_ms) < 0)
                return 2;
            break;
        case 'r':
            if (parse_ms("hello-retry-ms", optarg, &o->hello_retry_ms) < 0)
                return 2;
            break;
        case 's':
            o->server_key = optarg;
            break;
        case 'k':
            o->key = optarg;
            break;
        case 'a':
            o->advertise = optarg;
            break;
        case 'M':
            o->model = optarg;
            break;
        case 't':
        case 'n':
            if (parse_u64(optarg, c == 't' ? 1 : 0, c == 't' ? 1024 : 4095, &v) < 0) {
                fprintf(stderr, "bitnet-worker: --%s '%s': expected %s\n",
                        c == 't' ? "threads" : "numa-node", optarg,
                        c == 't' ? "1 to 1024" : "a NUMA node number");
                return 2;
            }
            if (c == 't')
                o->threads = (int)v;
            else
                o->numa_node = (int)v;
            break;
        case 'h':
            usage(stdout);
            return -1;
        case 'F':
            o->tp_follower = optarg;
            break;
        case 'V':
            puts(WORKER_SOFTWARE_VERSION);
            return -1;
        default:
            if (optopt)
                fprintf(stderr, "bitnet-worker: option --%s needs a value\n",
                        argv[optind - 1] + (argv[optind - 1][1] == '-' ? 2 : 1));
            else
                fprintf(stderr, "bitnet-worker: unknown option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "bitnet-worker: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (o->tp_follower && o->id)
        return 0;
    const char *missing = !o->id ? "--id" : !o->control ? "--control" : !o->data ? "--data" : NULL;
    if (missing) {
        fprintf(stderr, "bitnet-worker: %s is required\n", missing);
        usage(stderr);
        return 2;
    }
    /* nothing crosses a network unencrypted: tcp needs the keys up front */
    bool tcp_control = strncmp(o->control, "tcp://", 6) == 0;
    bool tcp_data = strncmp(o->data, "tcp://", 6) == 0;
    if (tcp_control && !o->server_key) {
        fprintf(stderr, "bitnet-worker: --control %s: tcp needs --server-key FILE (the daemon's "
                        ".pub)\n", o->control);
        return 2;
    }
    if ((tcp_control || tcp_data) && !o->key) {
        fprintf(stderr, "bitnet-worker: --%s %s: tcp needs --key FILE (this worker's key pair, "
                        "from bitnetctl keygen)\n", tcp_control ? "control" : "data",
                tcp_control ? o->control : o->data);
        return 2;
    }
    if (!valid_id(o->id)) {
        fprintf(stderr, "bitnet-worker: --id '%s': 1 to 255 printable characters without "
                        "spaces\n", o->id);
        return 2;
    }
    /* from the environment, not argv: a command line is public (ps), an environment is
     * readable only by who could also trace the process */
    o->routing_id = getenv(ROUTING_ID_ENV);
    if (o->routing_id && !valid_id(o->routing_id)) {
        fprintf(stderr, "bitnet-worker: %s '%s': 1 to 255 printable characters without "
                        "spaces\n", ROUTING_ID_ENV, o->routing_id);
        return 2;
    }
    if (!o->routing_id)
        o->routing_id = o->id;
    return 0;
}

/* SIGTERM and SIGINT arrive through a file descriptor the poll loop watches. They are
 * blocked before any thread exists (ZeroMQ's, the pool's), so no thread takes them
 * asynchronously. */
static int signal_fd(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
        return -1;
    return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

int main(int argc, char **argv)
{
    struct worker w;
    memset(&w, 0, sizeof w);
    int rc = parse_args(argc, argv, &w.opts);
    if (rc)
        return rc < 0 ? 0 : rc;
    if (w.opts.tp_follower) {
        kernels_init();
        return tp_follower_main(w.opts.tp_follower, w.opts.id);
    }
    w.sigfd = signal_fd();
    if (w.sigfd < 0) {
        fprintf(stderr, "%s: signalfd: %s\n", w.opts.id, strerror(errno));
        return 1;
    }
    kernels_init();
    struct errbuf e;
    if (worker_open(&w, &e) < 0) {
        worker_log(w.opts.id, "%s", e.msg);
        worker_close(&w);
        close(w.sigfd);
        return 1;
    }
    rc = worker_run(&w);
    worker_close(&w);
    close(w.sigfd);
    worker_log(w.opts.id, "stopped");
    return rc;
}

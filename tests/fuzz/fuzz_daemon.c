/* bitnetd's message handlers, in process: a struct daemon set up as daemon_open does
 * (config, the tiny model and its tokenizer, a 2-stage placement, the run directory and
 * its sockets, the worker registry, the scheduler with 2 steps in flight), except that no
 * worker process is started. Stage w0 is local; w1 is remote (--remote-workers w1): the
 * daemon also listens on tcp://127.0.0.1 with CURVE behind its ZAP allow-list, which the
 * harness serves as the event loop does. The harness plays every peer over the daemon's
 * real sockets: a client, the workers, the last stage's results and stage 0's data socket
 * (the PULL the daemon's feed connects to).
 *
 * Input: a mode byte, then records (fuzz_common.h) of one frame each; the channel picks
 *   0 client -> clients_on_request
 *   1 w0 on the ipc worker socket, 2 w1 over tcp (CURVE, its key listed) -> workers_on_control
 *   3 results -> scheduler_on_results
 *   4 timers: scheduler_cron and clients_cron at now + the payload's first byte x 100 ms
 *   5 w1 on the ipc socket, 6 w0 over tcp: each where it does not belong
 * Each handler runs once the frame has arrived, as the event loop would run it. Mode bit 0
 * starts with both workers READY (w1 joined with its key), else they are CONNECTING, as
 * just started. Every frame the daemon sends to a peer must decode, and the scheduler's
 * counts must agree with its jobs and slots after every handler.
 *
 * What cannot run here, and why:
 *  - workers_cron: it starts a stopped local worker, which is fork and exec of
 *    bitnet-worker (and its other timers are only reached through it);
 *  - workers_on_exit and supervisor_*: they need child processes to reap and signal.
 * To stand for the started local worker process, w0's pid is this process's own: bitnetd
 * takes a local worker's messages only from the process whose pid it recorded at fork
 * (SO_PEERCRED of the connection), and the harness's connections are this process's. So
 * a Hello's pid 0 is replaced by this pid before it is sent, and the SIGKILL bitnetd sends
 * to a local worker it declares lost is recorded instead of delivered (kill() below); the
 * worker then stays DEAD, as it would until reaped. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <zmq.h>

#include "daemon/daemon.h"
#include "daemon/plan.h"
#include "kernels/kernels.h"
#include "model/vocab_gguf.h"
#include "proto/zap.h"
#include "tests/fuzz/fuzz_common.h"

/* The key pairs of the CURVE example in the ZeroMQ reference (zmq_curve(7)). */
#define DAEMON_PUB "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
#define DAEMON_SEC "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"
#define WORKER_PUB "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
#define WORKER_SEC "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs"
/* w1's data endpoint in the READY mode; nothing connects to it */
#define W1_DATA "tcp://127.0.0.1:9"

enum { CLIENT, W0, W1_TCP, RESULTS, TIMERS, W1_IPC, W0_TCP, N_CHANNELS, STAGE0 = TIMERS };

static struct daemon D;
static void *peers[N_CHANNELS]; /* [TIMERS] is stage 0's data PULL */
static const char *const names[N_CHANNELS] = {"client", "w0", "w1 (tcp)", "results",
                                              "stage 0", "w1 (ipc)", "w0 (tcp)"};
static unsigned long kills;
static bool trace; /* FUZZ_TRACE=1: what bitnetd sends to each peer, on stderr */

/* The one process-level effect of a handler that the harness keeps to itself. */
int kill(pid_t pid, int sig)
{
    if (pid == getpid() && sig == SIGKILL) {
        kills++;
        return 0;
    }
    return (int)syscall(SYS_kill, pid, sig);
}

static void load_model(void)
{
    struct errbuf e;
    if (!realpath(D.cfg.model, D.model_path) || bitnet_model_load(&D.model, D.model_path, &e) < 0)
        fuzz_die("model %s", D.cfg.model);
    D.have_model = true;
    D.tok = tokenizer_from_gguf(&D.model.file, &e);
    if (!D.tok || model_id_of_gguf(&D.model.file, D.model_sha256, &e) < 0 ||
        tensor_digests_get(&D.model.file, D.model_sha256, &D.digests, &e) < 0)
        fuzz_die("%s", e.msg);
    D.n_ctx = D.cfg.ctx < (int)D.model.hp.n_ctx_train ? D.cfg.ctx : (int)D.model.hp.n_ctx_train;
}

static void *peer(int type, const char *id, const char *endpoint, bool bind, bool curve)
{
    void *s = zmq_socket(D.ipc.ctx, type);
    int zero = 0;
    if (!s || zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        (id && zmq_setsockopt(s, ZMQ_ROUTING_ID, id, strlen(id)) != 0) ||
        (curve && (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, DAEMON_PUB, 40) != 0 ||
                   zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, WORKER_PUB, 40) != 0 ||
                   zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, WORKER_SEC, 40) != 0)) ||
        (bind ? zmq_bind(s, endpoint) : zmq_connect(s, endpoint)) != 0)
        fuzz_die("%s %s: %s", bind ? "bind" : "connect", endpoint, zmq_strerror(zmq_errno()));
    return s;
}

/* config_load and ipc_open on a free pair of tcp ports. */
static void open_sockets(void)
{
    char run_dir[128], listen[64];
    snprintf(run_dir, sizeof run_dir, "%s/run", fuzz_tmpdir());
    static const char key_file[] = "public-key = " DAEMON_PUB "\nsecret-key = " DAEMON_SEC "\n";
    static const char allow_file[] = WORKER_PUB " w1\n";
    const char *key = fuzz_put_file(2, (const uint8_t *)key_file, sizeof key_file - 1);
    const char *allow = fuzz_put_file(3, (const uint8_t *)allow_file, sizeof allow_file - 1);
    struct errbuf e;
    for (int attempt = 0; attempt < 50; attempt++) {
        int port = 20000 + (int)((getpid() * 7 + attempt * 211) % 20000) * 2;
        snprintf(listen, sizeof listen, "tcp://127.0.0.1:%d", port);
        char *args[] = {"bitnetd", "--model", (char *)fuzz_tiny_model(NULL), "--workers", "2",
                        "--topology", "synthetic:pack:1 [numa(memory=8GB)] core:2 pu:1",
                        "--run-dir", run_dir, "--max-sequences", "4", "--ctx", "64",
                        "--prefill-chunk", "8", "--pipeline-depth", "2", "--listen", listen,
                        "--curve-key", (char *)key, "--allow-keys", (char *)allow,
                        "--remote-workers", "w1", NULL};
        if (config_load(&D.cfg, (int)(sizeof args / sizeof args[0]) - 1, args, &e) != 0)
            fuzz_die("config: %s", e.msg);
        struct ipc_tcp tcp = {D.cfg.listen, NULL, D.cfg.curve_key, D.cfg.allow_keys};
        if (ipc_open(&D.ipc, D.cfg.run_dir, &tcp, &e) == 0)
            return;
        if (!strstr(e.msg, "bind tcp://"))
            fuzz_die("%s", e.msg);
        ipc_close(&D.ipc, NULL, 0);
        config_free(&D.cfg);
    }
    fuzz_die("no free tcp port pair found");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    kernels_init(); /* as main() does: the forward pass calls through its table */
    char cache[128];
    snprintf(cache, sizeof cache, "%s/cache", fuzz_tmpdir());
    setenv("XDG_CACHE_HOME", cache, 1); /* tensor digests are cached there */
    signal(SIGPIPE, SIG_IGN);
    open_sockets();
    D.sig_fd = -1;
    D.t_start_ms = clock_ms();
    load_model();
    D.synthetic_topology = true;
    struct errbuf e;
    if (topology_load(&D.topo, D.cfg.topology, &e) < 0 ||
        plan_for_model(&D.model, &D.cfg, D.n_ctx, &D.topo, &D.plan, &e) < 0 ||
        workers_init(&D, &e) < 0)
        fuzz_die("%s", e.msg);
    if (D.plan.n_workers != 2)
        fuzz_die("placement has %d workers, not 2", D.plan.n_workers);
    peers[CLIENT] = peer(ZMQ_DEALER, "fuzz-client", D.ipc.ctl_ep, false, false);
    peers[W0] = peer(ZMQ_DEALER, "w0", D.ipc.workers_ep, false, false);
    peers[W1_IPC] = peer(ZMQ_DEALER, "w1", D.ipc.workers_ep, false, false);
    peers[W1_TCP] = peer(ZMQ_DEALER, "w1", D.cfg.listen, false, true);
    peers[W0_TCP] = peer(ZMQ_DEALER, "w0", D.cfg.listen, false, true);
    peers[RESULTS] = peer(ZMQ_PUSH, NULL, D.ipc.results_ep, false, false);
    peers[STAGE0] = peer(ZMQ_PULL, NULL, D.workers.w[0].data_endpoint, true, false);
    workers_free(&D);
    trace = getenv("FUZZ_TRACE") != NULL;
    return 0;
}

static void check_sent(int i)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    while (zmq_msg_recv(&m, peers[i], ZMQ_DONTWAIT) >= 0) {
        Bitnet__Envelope *env;
        struct errbuf e;
        if (wire_decode(zmq_msg_data(&m), zmq_msg_size(&m), NULL, &env, &e) != WIRE_OK) {
            fprintf(stderr, "bitnetd sent %s a frame that does not decode: %s\n", names[i], e.msg);
            abort();
        }
        if (trace)
            fprintf(stderr, "fuzz: -> %s: %s (request %llu)\n", names[i],
                    wire_body_name(env->body_case), (unsigned long long)env->request_id);
        wire_free(env);
    }
    zmq_msg_close(&m);
}

static void drain_raw(void *sock)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    while (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) >= 0)
        ;
    zmq_msg_close(&m);
}

static void reset(bool ready)
{
    struct errbuf e;
    void *theirs[] = {D.ipc.ctl, D.ipc.workers, D.ipc.results, D.ipc.workers_tcp};
    for (size_t i = 0; i < sizeof theirs / sizeof theirs[0]; i++)
        drain_raw(theirs[i]);
    for (int i = 0; i < N_CHANNELS; i++)
        drain_raw(peers[i]);
    memset(&D.clients, 0, sizeof D.clients);
    memset(&D.workers, 0, sizeof D.workers);
    D.phase = PHASE_STARTING;
    wire_rx_init(&D.ctl_rx, 0);
    wire_rx_init(&D.workers_rx, 0);
    wire_rx_init(&D.results_rx, 0);
    if (workers_init(&D, &e) < 0 || scheduler_init(&D, D.cfg.pipeline_depth, &e) < 0)
        fuzz_die("%s", e.msg);
    daemon_connect_parts(&D);
    double now = clock_ms();
    struct worker *w0 = &D.workers.w[0], *w1 = &D.workers.w[1];
    w0->pid = getpid();
    /* the routing id bitnetd would have handed the process it started (supervisor.c) */
    snprintf(w0->route, sizeof w0->route, "w0");
    w0->starts = 1;
    for (int i = 0; i < 2; i++) {
        struct worker *w = &D.workers.w[i];
        w->state = ready ? WORKER_READY : WORKER_CONNECTING;
        w->t_state_ms = w->t_heartbeat_ms = now;
    }
    if (ready) {
        /* as its accepted Hello and LoadShard left it */
        w1->joined = true;
        snprintf(w1->data_endpoint, sizeof w1->data_endpoint, "%s", W1_DATA);
        snprintf(w1->data_key, sizeof w1->data_key, "%s", WORKER_PUB);
        snprintf(w1->addr, sizeof w1->addr, "127.0.0.1");
        snprintf(w0->told_next, sizeof w0->told_next, "%s", W1_DATA);
        snprintf(w0->told_next_key, sizeof w0->told_next_key, "%s", WORKER_PUB);
        D.workers.pipeline_ready = D.workers.ever_ready = true;
        D.phase = PHASE_RUNNING;
    }
}

/* What the scheduler's bookkeeping promises, after every handler: each job counted once,
 * as running (holding its slot, and the slot it) or queued, never fed past its tokens. */
static void check_scheduler(void)
{
    const struct scheduler *s = &D.sched;
    int running = 0, queued = 0;
    const char *broken = NULL;
    for (const struct job *j = s->jobs; j && !broken; j = j->next) {
        if (j->slot < 0) {
            queued++;
            continue;
        }
        running++;
        if (j->slot >= s->n_slots || s->slot_job[j->slot] != j)
            broken = "a running job's slot is not its own";
        else if (j->n_fed > j->n_tokens)
            broken = "a job fed past its tokens";
    }
    for (int i = 0; i < s->n_slots && !broken; i++)
        if (s->slot_job[i] && s->slot_job[i]->slot != i)
            broken = "a slot names a job that is not in it";
    if (!broken && (running != s->n_running || queued != s->n_queued))
        broken = "n_running or n_queued disagrees with the jobs";
    if (!broken && (s->n_flight < 0 || s->n_flight > s->depth))
        broken = "more steps in flight than the depth";
    if (broken) {
        fprintf(stderr, "scheduler invariant broken: %s (running %d/%d, queued %d/%d)\n",
                broken, running, s->n_running, queued, s->n_queued);
        abort();
    }
}

/* A Hello's pid 0 stands for the pid of the worker process, i.e. this one. */
static bool with_our_pid(const uint8_t *p, size_t n, uint8_t **out, size_t *out_n)
{
    Bitnet__Envelope *env;
    struct errbuf e;
    bool changed = false;
    if (wire_decode(p, n, NULL, &env, &e) != WIRE_OK)
        return false;
    if (env->body_case == BITNET__ENVELOPE__BODY_HELLO && env->hello->pid == 0) {
        env->hello->pid = (uint32_t)getpid();
        changed = wire_encode(env, out, out_n, &e) == 0;
    }
    wire_free(env);
    return changed;
}

/* Sends one frame and waits until it is at the daemon's socket, answering ZAP requests
 * meanwhile as the event loop does (a new tcp connection's handshake waits for them). */
static void deliver(void *to, void *at, const uint8_t *p, size_t n)
{
    if (zmq_send(to, p, n, 0) < 0)
        fuzz_die("send: %s", zmq_strerror(zmq_errno()));
    /* ipc and tcp go through libzmq's I/O thread: on a loaded machine that can take a while */
    for (int waited = 0; waited < 10000; waited += 100) {
        zmq_pollitem_t it[2] = {{at, 0, ZMQ_POLLIN, 0}, {zap_socket(D.ipc.zap), 0, ZMQ_POLLIN, 0}};
        /* EINTR: libFuzzer's -timeout alarm */
        if (zmq_poll(it, 2, 100) < 0 && zmq_errno() != EINTR)
            fuzz_die("poll: %s", zmq_strerror(zmq_errno()));
        struct errbuf e;
        if ((it[1].revents & ZMQ_POLLIN) && zap_serve(D.ipc.zap, &e) < 0)
            fuzz_die("%s", e.msg);
        if (it[0].revents & ZMQ_POLLIN)
            return;
    }
    fuzz_die("a frame sent to bitnetd did not arrive within 10 s");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    reset(data[0] & 1);
    struct fuzz_reader r = {data + 1, size - 1};
    uint8_t ch;
    const uint8_t *p;
    size_t n;
    while (fuzz_next_record(&r, &ch, &p, &n) == 0 && D.phase != PHASE_STOPPING) {
        ch %= N_CHANNELS;
        if (ch == CLIENT) {
            deliver(peers[CLIENT], D.ipc.ctl, p, n);
            clients_on_request(&D);
        } else if (ch == RESULTS) {
            deliver(peers[RESULTS], D.ipc.results, p, n);
            scheduler_on_results(&D, D.ipc.results);
        } else if (ch == TIMERS) {
            double now = clock_ms() + (n ? p[0] : 0) * 100.0;
            scheduler_cron(&D, now);
            clients_cron(&D, now);
        } else {
            void *at = ch == W0 || ch == W1_IPC ? D.ipc.workers : D.ipc.workers_tcp;
            uint8_t *own;
            size_t own_n;
            bool mine = with_our_pid(p, n, &own, &own_n);
            deliver(peers[ch], at, mine ? own : p, mine ? own_n : n);
            if (mine)
                free(own);
            workers_on_control(&D, at);
        }
        check_scheduler();
        for (int i = 0; i < N_CHANNELS; i++)
            if (i != RESULTS)
                check_sent(i);
    }
    /* jobs end as daemon_close ends them (their clients told), then everything is freed */
    D.phase = PHASE_STOPPING;
    scheduler_cancel_all(&D, "fuzz input done");
    scheduler_free(&D);
    workers_free(&D);
    return 0;
}

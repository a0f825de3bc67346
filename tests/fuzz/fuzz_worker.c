/* bitnet-worker's message handlers, in process: a struct worker opened as main.c opens it
 * (its own ZeroMQ context, control DEALER, data PULL, heartbeat thread), with the tiny
 * 2-layer model loaded as one stage holding every layer, the embedding and the output.
 *
 * The input is records (fuzz_common.h) of one envelope each: an even channel is the
 * control socket, whose envelopes go through wire_decode to control_handle (LoadShard,
 * KvOp, StatusRequest, HelloReply, Error...); an odd one is the data socket, whose
 * Forward runs through stage_forward (checks, embedding, both layers, the output head,
 * the result sent on). That is what serve.c's on_control and on_data do once zmq_poll
 * said a socket is readable; only the receiving is skipped.
 *
 * Harness limits, because the fuzzer runs in this very process: a LoadShard always loads
 * the tiny model (as --model does for a remote worker, whatever path it names), must send
 * its output to this harness (next_endpoint inproc://fuzz-next: ipc:// would connect to
 * any unix socket of the machine, and an endpoint nobody serves costs every step the 1 s
 * send timeout) and is skipped when it asks for more than 2 threads, a KV cache of more
 * than 4096 positions or tensor-parallel ranks (which would be this program started
 * again). After each input the stage is back as it started. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "kernels/kernels.h"
#include "model/bitnet_model.h"
#include "model/clock.h"
#include "tests/fuzz/fuzz_common.h"
#include "worker/model_id.h"
#include "worker/worker.h"

#define CTL_EP "inproc://fuzz-control"
#define NEXT_EP "inproc://fuzz-next"

static struct worker W;
static void *daemon_ctl, *next_stage; /* the harness's ends: the daemon's ROUTER, a PULL */
static char model_sha[MODEL_ID_HEX_LEN + 1];

static void drain(void *sock)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    while (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) >= 0)
        ;
    zmq_msg_close(&m);
}

static void load_standard_shard(void)
{
    Bitnet__LoadShard ls = BITNET__LOAD_SHARD__INIT;
    ls.model_path = (char *)W.opts.model;
    ls.model_sha256 = model_sha;
    ls.layer_begin = 0;
    ls.layer_end = FUZZ_TINY_LAYERS;
    ls.has_embedding = ls.has_output = true;
    ls.threads = 1;
    ls.numa_node = -1;
    ls.kv_ctx = 64;
    ls.kv_type = BITNET__ELEM_TYPE__ELEM_TYPE_F32;
    ls.act_type = BITNET__ELEM_TYPE__ELEM_TYPE_F32;
    ls.next_endpoint = NEXT_EP;
    ls.max_sequences = 4;
    Bitnet__Envelope env;
    wire_envelope_init(&env, 1);
    env.body_case = BITNET__ENVELOPE__BODY_LOAD_SHARD;
    env.load_shard = &ls;
    control_handle(&W, &env);
    if (!W.shard.loaded)
        fuzz_die("the standard shard did not load (see the worker's log above)");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    kernels_init(); /* as main() does: the forward pass calls through its table */
    char cache[128];
    snprintf(cache, sizeof cache, "%s/cache", fuzz_tmpdir());
    setenv("XDG_CACHE_HOME", cache, 1); /* tensor digests are cached there */
    const char *model = fuzz_tiny_model(NULL);
    struct bitnet_model m;
    struct errbuf e;
    if (bitnet_model_load(&m, model, &e) < 0 || model_id_of_gguf(&m.file, model_sha, &e) < 0)
        fuzz_die("%s", e.msg);
    bitnet_model_free(&m);

    W.opts = (struct worker_opts){
        .id = "w0",
        .control = CTL_EP,
        .data = "inproc://fuzz-data",
        .max_bytes = WIRE_DEFAULT_MAX_BYTES,
        .heartbeat_ms = 1000,
        .hello_retry_ms = 1000,
        .model = model,
        .threads = 0,     /* as main.c leaves them: LoadShard places the stage */
        .numa_node = -1,
    };
    W.sigfd = -1;
    if (worker_open(&W, &e) < 0)
        fuzz_die("worker_open: %s", e.msg);
    daemon_ctl = zmq_socket(W.zctx, ZMQ_ROUTER);
    next_stage = zmq_socket(W.zctx, ZMQ_PULL);
    int zero = 0;
    zmq_setsockopt(daemon_ctl, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(next_stage, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(daemon_ctl, CTL_EP) != 0 || zmq_bind(next_stage, NEXT_EP) != 0)
        fuzz_die("bind: %s", zmq_strerror(zmq_errno()));
    load_standard_shard();
    return 0;
}

/* The harness limits of the header comment; true when the LoadShard may be handled. */
static bool load_shard_allowed(const Bitnet__LoadShard *ls)
{
    uint64_t slots = ls->max_sequences ? ls->max_sequences : 1;
    uint64_t ctx = ls->kv_ctx ? ls->kv_ctx : 256;
    /* tensor parallelism starts processes of this program: here, the fuzzer itself
     * (its one-rank form, and every bad value of the field, are still handled) */
    bool starts_ranks = ls->tensor_parallel > 1 && ls->tensor_parallel <= TP_MAX_RANKS &&
                        ls->layer_begin < ls->layer_end;
    return ls->threads <= 2 && slots * ctx <= 4096 && ls->next_endpoint &&
           strcmp(ls->next_endpoint, NEXT_EP) == 0 && !starts_ranks;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_reader r = {data, size};
    uint8_t ch;
    const uint8_t *p;
    size_t n;
    bool reloaded = false;
    while (fuzz_next_record(&r, &ch, &p, &n) == 0) {
        Bitnet__Envelope *env;
        struct errbuf e;
        bool control = ch % 2 == 0;
        int rc = wire_decode(p, n, control ? &W.control_rx : &W.data_rx, &env, &e);
        if (rc != WIRE_OK) {
            if (control) /* as on_control answers a rejected message */
                wire_send_error(W.control, NULL, 0, wire_rc_error_code(rc), e.msg, 0, &e);
            continue;
        }
        if (!control) {
            if (env->body_case == BITNET__ENVELOPE__BODY_FORWARD)
                stage_forward(&W, env->forward, clock_us());
        } else if (env->body_case != BITNET__ENVELOPE__BODY_LOAD_SHARD ||
                   load_shard_allowed(env->load_shard)) {
            reloaded |= env->body_case == BITNET__ENVELOPE__BODY_LOAD_SHARD;
            control_handle(&W, env);
        }
        wire_free(env);
        /* a full queue to the next stage would make every later step wait a second */
        drain(next_stage);
    }
    drain(daemon_ctl);
    W.stop = false;
    if (reloaded) {
        load_standard_shard();
        drain(daemon_ctl);
    } else {
        Bitnet__KvOp all = BITNET__KV_OP__INIT;
        Bitnet__ErrorCode code;
        struct errbuf e;
        all.kind = BITNET__KV_OP_KIND__KV_OP_KIND_DROP_ALL;
        stage_kv_op(&W.shard, &all, &code, &e);
    }
    return 0;
}

/* The slice of a model one worker runs, as a LoadShard message describes it: the mapped
 * model, its sha256 identity, the CPU and memory binding, the thread pool and the
 * forward state holding the KV cache of the stage's layers for every sequence slot. */
#ifndef BITNET_WORKER_SHARD_H
#define BITNET_WORKER_SHARD_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/threadpool.h"
#include "model/bitnet_model.h"
#include "model/errbuf.h"
#include "model/forward.h"
#include "proto/bitnet.pb-c.h"
#include "worker/model_id.h"
#include "worker/tp_group.h"

/* Most rows one Forward may carry (docs/runtime.md: n_batch = 512). */
#define SHARD_MAX_ROWS 512
/* Defaults for LoadShard fields left at 0. */
#define SHARD_DEFAULT_SEQUENCES 1
#define SHARD_DEFAULT_CTX 4096
/* Bounds that keep every size product far from overflow and a typo from asking for a
 * terabyte of KV cache before the memory check even runs. */
#define SHARD_MAX_SEQUENCES 4096
#define SHARD_MAX_CTX (1 << 20)

struct shard {
    bool loaded;
    struct bitnet_model model;
    struct forward_state state;
    struct threadpool *pool;

    uint32_t layer_begin, layer_end;
    bool has_embedding, has_output;
    /* false for an embedding-only or output-only stage (layer_begin == layer_end):
     * forward_state cannot hold an empty layer range, so such a stage gets a minimal
     * one-layer state it never runs a layer through, and no KV cache worth the name */
    bool runs_layers;
    int n_slots, kv_ctx;
    enum kv_type kv_type;
    Bitnet__ElemType act_type;
    int numa_node;      /* -1: memory not bound */
    int resident_node;  /* where the weight pages are, -1 unknown or mixed */
    int *cpus;          /* as LoadShard listed them; n_cpus 0 = not pinned */
    int n_cpus;
    int threads;
    uint64_t bytes_loaded;
    double load_seconds;
    char sha256[MODEL_ID_HEX_LEN + 1];

    /* KV bookkeeping: next_pos[slot] is the number of leading positions of the slot
     * whose K/V this stage holds, so a row may take any position <= next_pos (a new
     * position or a rewrite) but never leave a gap the attention would read as data. */
    int *next_pos;     /* [n_slots] */
    int *scratch_pos;  /* [n_slots]: next_pos as a step would leave it, until it is accepted */
    int *row_slot;     /* [SHARD_MAX_ROWS] */
    int *row_pos;      /* [SHARD_MAX_ROWS] */
    size_t kv_bytes_per_position; /* of one slot, over this stage's layers */

    /* tensor parallelism (LoadShard.tensor_parallel): this process's rank of tp_size,
     * its part of every layer, and the group it gathers with; tp is NULL when the stage
     * is computed here alone. The leader (rank 0) owns the group and its followers. */
    int tp_rank, tp_size;
    struct forward_tp tp_part;
    struct tp_group *tp;
    bool tp_owned;
};

/* The CPUs the process could run on before any LoadShard, so that a later LoadShard
 * without a CPU list (or an unload) can undo an earlier binding. */
struct shard_origin {
    int *cpus;
    int n_cpus;
};

int shard_origin_capture(struct shard_origin *o, struct errbuf *e);
void shard_origin_free(struct shard_origin *o);

/* Called now and then during a long load (touching gigabytes of weights), so the caller
 * can keep sending heartbeats. */
struct shard_hooks {
    const char *log_id; /* prefix of log lines */
    void (*tick)(void *ctx);
    void *tick_ctx;
    /* a tensor-parallel follower loading its rank's part: the group it attached to
     * (NULL: the leader, which makes the group when the request asks for one) */
    struct tp_group *follower_of;
};

/* Loads the stage req describes into s (which must be unloaded: shard_unload first).
 * On failure s is left unloaded and e says why, with context. */
int shard_load(struct shard *s, const struct shard_origin *origin, const Bitnet__LoadShard *req,
               const struct shard_hooks *hooks, struct errbuf *e);

/* Frees everything and gives the process back the CPUs of origin. Harmless on an
 * unloaded shard. */
void shard_unload(struct shard *s, const struct shard_origin *origin, const char *log_id);

/* Sequences whose cache holds at least one position, and the bytes of KV in use. */
uint32_t shard_active_sequences(const struct shard *s);
uint64_t shard_kv_bytes_used(const struct shard *s);

#endif

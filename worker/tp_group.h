/* A tensor-parallel stage on one host: the worker bitnetd talks to (rank 0, the leader)
 * and the processes it starts for the other ranks (followers), sharing one memory
 * region (a memfd each follower inherits). Through it the leader hands every step to the
 * followers, and all ranks exchange the pieces of each vector their forward passes
 * gather (model/forward.h, struct forward_tp).
 *
 * The ranks meet at a barrier in the region: spinning briefly, since inside a step the
 * next meeting is a fraction of a millisecond away, then sleeping on a futex. Each
 * gather uses one of two buffers in turn, so one barrier per gather suffices: a rank
 * can only write a buffer again after every rank has passed the barrier that follows
 * its last reading.
 *
 * A follower that dies takes the stage with it: the leader notices within
 * TP_CHECK_MS, logs which rank died and how, and exits, so that bitnetd restarts the
 * stage and replays its jobs, as for any lost worker. Followers die with the leader
 * (PR_SET_PDEATHSIG). */
#ifndef BITNET_WORKER_TP_GROUP_H
#define BITNET_WORKER_TP_GROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "model/errbuf.h"

#define TP_MAX_RANKS 8
/* how often a waiting leader checks that its followers live */
#define TP_CHECK_MS 50
/* the exit status of a leader whose follower died */
#define TP_EXIT_RANK_LOST 75

struct tp_shared;

struct tp_group {
    int rank, size;
    struct tp_shared *sh;
    size_t map_bytes;
    int memfd;
    pid_t leader;                  /* a follower's parent, to notice it is gone */
    pid_t followers[TP_MAX_RANKS]; /* the leader's children, [1, size) */
    float *buf[2];                 /* the gather buffers, buf_floats each */
    size_t buf_floats;
    int turn;
    const char *log_id;
    /* the leader's hook while it waits long (followers loading): heartbeats */
    void (*tick)(void *ctx);
    void *tick_ctx;
};

/* The leader's side: a region for size ranks, steps of at most max_rows rows of n_embd
 * floats, gathers of up to max_rows vectors of row_width floats (and of rows as wide as
 * widest, a few at a time: the head's logits), and a LoadShard of load_len bytes
 * (packed, copied in), which each follower loads as its rank's part. */
int tp_group_create(struct tp_group *g, int size, int max_rows, int n_embd, int row_width,
                    int widest, const void *load, size_t load_len, const char *log_id,
                    struct errbuf *e);

/* Starts the followers: program (this worker's own executable) with
 * --tp-follower FD:RANK --id ID. */
int tp_group_spawn(struct tp_group *g, const char *program, struct errbuf *e);

/* Waits until every follower has loaded (all ranks at the barrier), then -1 with the
 * first follower's error if any failed. The leader calls it after its own load. */
int tp_group_wait_loaded(struct tp_group *g, struct errbuf *e);

/* Stops the followers (asked, then killed after a grace period) and frees the region. */
void tp_group_destroy(struct tp_group *g);

/* Whether every follower still lives; the leader's poll loop asks between steps. When
 * one died, says so in e. */
bool tp_group_alive(struct tp_group *g, struct errbuf *e);

/* The follower's side: the region inherited as fd, for rank. */
int tp_group_attach(struct tp_group *g, int fd, int rank, const char *log_id, struct errbuf *e);
/* The LoadShard the leader put there (borrowed from the region). */
const void *tp_group_load_request(const struct tp_group *g, size_t *len);
/* A follower reports its load (error NULL: loaded) and waits for the others. */
int tp_group_report_loaded(struct tp_group *g, const char *error);

/* One step, as the leader hands it out: rows of slots and positions, the hidden states
 * x (n_rows x n_embd) and which rows want logits. */
struct tp_step {
    int n_rows;
    const int *row_slot, *row_pos;
    const float *x;
    int n_logit_rows;
    const int *logit_rows;
};

/* Leader: publishes a step and releases the followers into it. */
int tp_group_post_step(struct tp_group *g, const struct tp_step *step, int n_embd);
/* Follower: waits for the next step (sleeping when idle); 0 and *step filled (pointing
 * into the region), 1 when the leader says stop, -1 when the leader is gone. */
int tp_group_next_step(struct tp_group *g, struct tp_step *step, int n_embd);

/* forward_gather_fn over the region (ctx: the group). */
void tp_group_gather(void *ctx, float *buf, int n_rows, int width, int lo, int hi);

#endif

/* Continuous batching: every job owns a KV slot; each step takes the pending tokens of
 * running jobs (one for a decoding job, up to a chunk of a prompt or a replay) into one
 * Forward, and the ForwardResult's logits rows decide each job's next token.
 *
 * Several steps are in flight at once, up to the pipeline's depth (one per stage when the
 * stages have CPUs of their own): the running jobs are split into that many micro-batches,
 * so that while the last stage computes one, the first computes the next. A job is in at
 * most one step at a time, so its tokens, its KV positions and its sampler see exactly
 * the order they would with one step in flight: the output does not change. A step whose
 * workers changed under it is abandoned, and its late results are recognised by their
 * step id and dropped. */
#ifndef BITNET_DAEMON_SCHEDULER_H
#define BITNET_DAEMON_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/jobs.h"

struct daemon;

/* The rows one job contributed to the step in flight. */
struct step_part {
    uint64_t job_id;
    uint32_t slot;
    uint32_t pos0;       /* position of its first row */
    uint32_t n_rows;
    uint32_t n_logits;   /* its rows with want_logits: all (eval), the last one, or none */
};

/* A Forward sent and not yet answered. */
struct step {
    bool in_flight;
    uint64_t id;
    double sent_ms;
    double alive_ms;            /* last sign that a stage computes it (sent, or a busy
                                 * heartbeat naming it) */
    struct step_part *parts;    /* [n_slots] */
    int n_parts;
    bool full;                  /* it asked for whole rows of logits (top_k = 0) */
    uint32_t top_k;             /* else the best this many of each row (1: the argmax) */
};

/* What the scheduler tells whoever serves the jobs' clients: a job's news goes out through
 * these callbacks (daemon.c connects them to clients.c), so the scheduler calls nothing
 * above it by name. */
struct scheduler_events {
    /* a job's new text, or its end (reason other than NONE); -1 when its client is gone */
    int (*job_chunk)(void *ctx, struct job *j, Bitnet__StopReason reason, const char *error);
    /* an eval's logits are all in */
    int (*job_eval_done)(void *ctx, struct job *j);
    /* an eval ended without its logits */
    void (*job_failed)(void *ctx, struct job *j, Bitnet__ErrorCode code, const char *msg);
    /* the last job is gone */
    void (*idle)(void *ctx);
    void *ctx;
};

/* Most steps in flight: deeper pipelines than this gain nothing on one host's stages. */
#define SCHED_MAX_DEPTH 8

struct scheduler {
    struct scheduler_events ev;
    int n_slots;
    struct job **slot_job;      /* [n_slots], NULL when no job holds it */
    /* A slot whose job ended is reused only once every stage has acknowledged its
     * KvOp DROP: the DROP travels on the control socket, the steps on the data path, and
     * without the acknowledgement a late DROP could wipe the bookkeeping of the slot's
     * next job. The DROP itself waits until no step in flight has rows of the slot. */
    bool *slot_drop_deferred;   /* [n_slots]: send its DROP when the step in flight ends */
    uint64_t *slot_drop_id;     /* [n_slots]: request id of its DROP awaiting acks, or 0 */
    int *slot_drop_acks;        /* [n_slots]: acknowledgements still missing */
    struct job *jobs;           /* queued and running, in arrival order */
    int n_running, n_queued;
    int max_queued;
    uint64_t next_job_id;

    int max_rows;               /* rows per Forward (the workers' batch) */
    int prefill_chunk;          /* prompt/replay rows per step, over all jobs */
    int max_logit_rows;         /* so that a ForwardResult fits the wire limit */

    uint64_t next_step_id;
    int depth;                  /* steps in flight at most (1..SCHED_MAX_DEPTH) */
    struct step flight[SCHED_MAX_DEPTH];
    int n_flight;               /* of them in flight */
    int step_failures;          /* consecutive timeouts, reset by any result */
    bool said_top_k;            /* the first step of sampled jobs on top-k rows was logged */
    /* the rows of the Forward being built, [max_rows] each */
    uint32_t *row_seq, *row_pos;
    int32_t *row_tok;
    protobuf_c_boolean *row_want;
    double retry_at_ms;         /* > 0: the feed socket was not connected; try then */

    /* totals for status */
    uint64_t jobs_done;
    uint64_t tokens_generated;
    uint64_t steps;
    uint64_t replays;
};

/* depth: steps in flight at most (scheduler_depth's answer, or --pipeline-depth). */
int scheduler_init(struct daemon *d, int depth, struct errbuf *e);
void scheduler_free(struct daemon *d);

/* Takes ownership of j: queues it and starts it as soon as a slot and the pipeline are
 * free. Returns -1 with e filled (ERROR_CODE_BUSY) when the queue is full; j is then
 * still the caller's. */
int scheduler_submit(struct daemon *d, struct job *j, struct errbuf *e);
struct job *scheduler_find(struct daemon *d, uint64_t job_id);

/* Ends a job: its last reply, its slot freed (KvOp DROP), its memory released. */
void scheduler_finish(struct daemon *d, struct job *j, Bitnet__StopReason reason,
                      const char *error);
void scheduler_cancel_all(struct daemon *d, const char *why);
/* Ends every job, queued or running, with stop reason ERROR and why. */
void scheduler_fail_all(struct daemon *d, const char *why);

/* Sends the next step if the pipeline is ready and nothing is in flight. */
void scheduler_kick(struct daemon *d);
/* A results socket (the ipc one, or the tcp one of a remote last stage) is readable. */
void scheduler_on_results(struct daemon *d, void *sock);
/* A worker left READY: drop the step in flight; every running job will replay its tokens
 * once all stages are back. */
void scheduler_pipeline_lost(struct daemon *d);
/* A worker's heartbeat says it is computing step_id: the step is slow, not lost. */
void scheduler_step_progress(struct daemon *d, uint64_t step_id);
/* A worker reported an Error about the step in flight. */
void scheduler_step_failed(struct daemon *d, uint64_t step_id, const char *why);
/* A stage answered a control request (Ack or Error): maybe a slot's DROP. */
void scheduler_on_control_answer(struct daemon *d, uint64_t request_id);
/* Timers: the feed retry and the step timeout. Returns ms until it next needs a call. */
double scheduler_cron(struct daemon *d, double now_ms);

int scheduler_n_running(const struct daemon *d);
int scheduler_n_queued(const struct daemon *d);

#endif

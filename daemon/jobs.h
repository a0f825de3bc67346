/* A job: one GenerateRequest or EvalRequest from its arrival to its last reply. It holds
 * the job's whole token sequence (prompt + generated), which is what lets a job be
 * replayed into rebuilt KV caches after a worker restart, and the text still to be sent,
 * held back while it might be the start of a stop string. */
#ifndef BITNET_DAEMON_JOBS_H
#define BITNET_DAEMON_JOBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/errbuf.h"
#include "model/sample.h"
#include "model/tokenizer.h"
#include "proto/bitnet.pb-c.h"
#include "proto/wire.h"

struct job {
    struct job *next;           /* the scheduler's list, in arrival order */
    uint64_t id;
    uint64_t request_id;        /* copied into every reply */
    struct wire_identity client;
    bool eval;                  /* EvalRequest: every position wants logits */
    int slot;                   /* KV slot, -1 while queued */

    int32_t *tokens;            /* prompt, then every generated token */
    size_t n_tokens, cap_tokens;
    size_t n_prompt;
    size_t n_fed;               /* tokens[0, n_fed) are in every stage's KV cache */

    /* generation */
    long n_predict;             /* <= 0: until EOS or the context is full */
    struct sampler smp;
    bool argmax_only;           /* greedy without penalty: the worker's argmax suffices */
    bool stream, return_ids;
    char **stop;                /* stop strings, n_stop of them */
    size_t n_stop, max_stop_len;
    struct tok_stream ts;
    char *text;                 /* decoded output not sent yet */
    size_t n_text, cap_text;
    size_t n_unsent_ids;        /* the last n generated ids are not sent yet */

    /* eval: n_prompt x n_vocab logits, filled position by position */
    float *logits;
    size_t n_vocab;

    /* CLOCK_MONOTONIC milliseconds */
    double t_received, t_started, t_first_token;

    /* steps of this job lost in a row to a worker that died (reset when one completes):
     * a job that kills its worker every time is failed rather than replayed forever */
    int step_losses;
};

struct job_limits {
    const struct tokenizer *tok;
    uint32_t n_vocab;
    int n_ctx;
    size_t max_eval_positions;  /* so that an EvalReply fits the wire limit */
};

/* Builds a job from a request (tokenizing its prompt); NULL with e filled when the request
 * cannot be served (the message is for the client). */
struct job *job_new_generate(const Bitnet__GenerateRequest *r, const struct job_limits *lim,
                             struct errbuf *e);
struct job *job_new_eval(const Bitnet__EvalRequest *r, const struct job_limits *lim,
                         struct errbuf *e);
void job_free(struct job *j);

/* Appends a generated token: records it for the sampler, decodes its text and looks for a
 * stop string. Returns 1 when a stop string completed (the text is cut before it), 0
 * otherwise, -1 when out of memory. */
int job_push_token(struct job *j, const struct tokenizer *tok, int32_t id);

/* How many leading bytes of j->text may be sent now: everything when the job is done
 * (after job_flush_text), else nothing for a non-streaming job, else all but the tail
 * that could still grow into a stop string. */
size_t job_sendable_text(const struct job *j, bool done);
/* Drops the first n bytes of j->text and forgets the unsent ids, after sending them. */
void job_consume_output(struct job *j, size_t n_bytes);
/* End of generation without a stop string: emits the characters tok_stream held back. */
int job_flush_text(struct job *j);

size_t job_n_generated(const struct job *j);

#endif

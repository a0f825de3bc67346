#include "model/generation.h"
#include "daemon/scheduler.h"

#include <stdlib.h>
#include <string.h>

#include "daemon/daemon.h"

/* The workers' batch: most rows one Forward may carry (docs/runtime.md). */
#define SCHED_MAX_ROWS 512
#define SCHED_MAX_QUEUED 1024
/* A step without a result or any stage saying it computes it (busy heartbeats) for this
 * long was lost without any worker dying (a dropped message); it is sent again, and after
 * this many tries in a row its jobs fail. A long step is not lost: its stage says so. */
#define STEP_TIMEOUT_MS 10000.0
#define STEP_MAX_TRIES 3
/* Workers lost in a row while a job's step was in flight before the job is failed. */
#define JOB_MAX_STEP_LOSSES 3
/* Sampled jobs whose top-k is at most this get the best logits of each row, not the row. */
#define SCHED_MAX_TOP_K 64
/* Retry interval while stage 0 is not connected (just restarted). */
#define FEED_RETRY_MS 5.0

int scheduler_init(struct daemon *d, int depth, struct errbuf *e)
{
    struct scheduler *s = &d->sched;
    memset(s, 0, sizeof *s);
    s->depth = depth < 1 ? 1 : depth > SCHED_MAX_DEPTH ? SCHED_MAX_DEPTH : depth;
    s->n_slots = d->cfg.max_sequences;
    s->max_queued = SCHED_MAX_QUEUED;
    s->max_rows = SCHED_MAX_ROWS;
    s->prefill_chunk = d->cfg.prefill_chunk;
    /* a ForwardResult of full f32 rows must stay under the wire limit, with room for the
     * rest of the message */
    size_t row_bytes = (size_t)d->model.hp.n_vocab * sizeof(float);
    size_t rows = (WIRE_DEFAULT_MAX_BYTES - ((size_t)1 << 20)) / row_bytes;
    s->max_logit_rows = rows < 1 ? 1 : rows > SCHED_MAX_ROWS ? SCHED_MAX_ROWS : (int)rows;
    s->next_job_id = 1;
    s->next_step_id = 1;
    s->slot_job = calloc((size_t)s->n_slots, sizeof *s->slot_job);
    bool parts_ok = true;
    for (int i = 0; i < SCHED_MAX_DEPTH; i++)
        parts_ok &= (s->flight[i].parts = calloc((size_t)s->n_slots, sizeof(struct step_part))) != 0;
    s->row_seq = malloc(SCHED_MAX_ROWS * sizeof *s->row_seq);
    s->row_pos = malloc(SCHED_MAX_ROWS * sizeof *s->row_pos);
    s->row_tok = malloc(SCHED_MAX_ROWS * sizeof *s->row_tok);
    s->row_want = malloc(SCHED_MAX_ROWS * sizeof *s->row_want);
    s->slot_drop_deferred = calloc((size_t)s->n_slots, sizeof *s->slot_drop_deferred);
    s->slot_drop_id = calloc((size_t)s->n_slots, sizeof *s->slot_drop_id);
    s->slot_drop_acks = calloc((size_t)s->n_slots, sizeof *s->slot_drop_acks);
    if (!s->slot_job || !parts_ok || !s->row_seq || !s->row_pos || !s->row_tok || !s->row_want ||
        !s->slot_drop_deferred || !s->slot_drop_id || !s->slot_drop_acks)
        return err_set(e, "scheduler: out of memory");
    return 0;
}

void scheduler_free(struct daemon *d)
{
    struct scheduler *s = &d->sched;
    while (s->jobs) {
        struct job *j = s->jobs;
        s->jobs = j->next;
        job_free(j);
    }
    free(s->slot_job);
    for (int i = 0; i < SCHED_MAX_DEPTH; i++)
        free(s->flight[i].parts);
    free(s->row_seq);
    free(s->row_pos);
    free(s->row_tok);
    free(s->row_want);
    free(s->slot_drop_deferred);
    free(s->slot_drop_id);
    free(s->slot_drop_acks);
    memset(s, 0, sizeof *s);
}

int scheduler_n_running(const struct daemon *d)
{
    return d->sched.n_running;
}

int scheduler_n_queued(const struct daemon *d)
{
    return d->sched.n_queued;
}

struct job *scheduler_find(struct daemon *d, uint64_t job_id)
{
    for (struct job *j = d->sched.jobs; j; j = j->next)
        if (j->id == job_id)
            return j;
    return NULL;
}

int scheduler_submit(struct daemon *d, struct job *j, struct errbuf *e)
{
    struct scheduler *s = &d->sched;
    if (s->n_queued >= s->max_queued)
        return err_set(e, "%d jobs already wait for a slot; try again later", s->n_queued);
    j->id = s->next_job_id++;
    j->slot = -1;
    j->next = NULL;
    struct job **tail = &s->jobs;
    while (*tail)
        tail = &(*tail)->next;
    *tail = j;
    s->n_queued++;
    scheduler_kick(d);
    return 0;
}

/* ---- slots ---- */

static bool slot_in_flight(const struct scheduler *s, int slot)
{
    for (int k = 0; k < SCHED_MAX_DEPTH; k++) {
        const struct step *st = &s->flight[k];
        for (int i = 0; st->in_flight && i < st->n_parts; i++)
            if (st->parts[i].slot == (uint32_t)slot)
                return true;
    }
    return false;
}

static struct step *step_by_id(struct scheduler *s, uint64_t id)
{
    for (int k = 0; k < SCHED_MAX_DEPTH; k++)
        if (s->flight[k].in_flight && s->flight[k].id == id)
            return &s->flight[k];
    return NULL;
}

static bool slot_free(const struct scheduler *s, int slot)
{
    return !s->slot_job[slot] && !s->slot_drop_deferred[slot] && !s->slot_drop_id[slot];
}

static void send_drop(struct daemon *d, int slot)
{
    struct scheduler *s = &d->sched;
    uint64_t id = 0;
    int n = workers_kv_drop(d, (uint32_t)slot, &id);
    s->slot_drop_id[slot] = n > 0 ? id : 0;
    s->slot_drop_acks[slot] = n;
}

/* A step is over (answered, failed or given up): the DROPs it held back, of slots that
 * no other step in flight has rows of. */
static void step_ended(struct daemon *d, struct step *st)
{
    struct scheduler *s = &d->sched;
    st->in_flight = false;
    st->n_parts = 0;
    s->n_flight--;
    for (int i = 0; i < s->n_slots; i++)
        if (s->slot_drop_deferred[i] && !slot_in_flight(s, i)) {
            s->slot_drop_deferred[i] = false;
            send_drop(d, i);
        }
}

void scheduler_on_control_answer(struct daemon *d, uint64_t request_id)
{
    struct scheduler *s = &d->sched;
    for (int i = 0; i < s->n_slots && request_id; i++)
        if (s->slot_drop_id[i] == request_id && --s->slot_drop_acks[i] <= 0) {
            s->slot_drop_id[i] = 0;
            scheduler_kick(d);
        }
}

/* Frees j's slot and memory. Its rows in a step in flight, if any, are skipped when the
 * result comes (parts name jobs by id). */
static void release(struct daemon *d, struct job *j)
{
    struct scheduler *s = &d->sched;
    if (j->slot >= 0) {
        s->slot_job[j->slot] = NULL;
        s->n_running--;
        if (slot_in_flight(s, j->slot))
            s->slot_drop_deferred[j->slot] = true;
        else
            send_drop(d, j->slot);
    } else {
        s->n_queued--;
    }
    for (struct job **p = &s->jobs; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            break;
        }
    s->jobs_done++;
    job_free(j);
    if (!s->jobs)
        s->ev.idle(s->ev.ctx);
}

void scheduler_finish(struct daemon *d, struct job *j, Bitnet__StopReason reason,
                      const char *error)
{
    const struct scheduler_events *ev = &d->sched.ev;
    if (j->eval) {
        if (reason == BITNET__STOP_REASON__STOP_REASON_CANCELLED)
            ev->job_failed(ev->ctx, j, BITNET__ERROR_CODE__ERROR_CODE_CANCELLED,
                           error ? error : "eval cancelled");
        else
            ev->job_failed(ev->ctx, j, BITNET__ERROR_CODE__ERROR_CODE_INTERNAL,
                           error ? error : "eval failed");
    } else {
        if (reason != BITNET__STOP_REASON__STOP_REASON_STOP_STRING)
            job_flush_text(j);
        ev->job_chunk(ev->ctx, j, reason, error);
    }
    release(d, j);
}

void scheduler_cancel_all(struct daemon *d, const char *why)
{
    while (d->sched.jobs)
        scheduler_finish(d, d->sched.jobs, BITNET__STOP_REASON__STOP_REASON_CANCELLED, why);
}

void scheduler_fail_all(struct daemon *d, const char *why)
{
    while (d->sched.jobs)
        scheduler_finish(d, d->sched.jobs, BITNET__STOP_REASON__STOP_REASON_ERROR, why);
}

/* ---- building a step ---- */

static void admit(struct daemon *d)
{
    struct scheduler *s = &d->sched;
    int free_slot = 0;
    for (struct job *j = s->jobs; j; j = j->next) {
        if (j->slot >= 0)
            continue;
        while (free_slot < s->n_slots && !slot_free(s, free_slot))
            free_slot++;
        if (free_slot == s->n_slots)
            return;
        j->slot = free_slot;
        s->slot_job[free_slot] = j;
        j->t_started = clock_ms();
        s->n_queued--;
        s->n_running++;
    }
}

/* What a job's next token needs of its row: 1 the argmax, k the k best logits, 0 all. */
static uint32_t logits_needed(const struct job *j)
{
    if (j->eval)
        return 0;
    if (j->argmax_only)
        return 1;
    if (sampler_top_k_suffices(&j->smp, SCHED_MAX_TOP_K))
        return (uint32_t)j->smp.params.top_k;
    return 0;
}

/* Adds rows [n_fed, n_fed + k) of j to step st. */
static void add_rows(struct scheduler *s, struct step *st, struct job *j, int k, int *n_rows,
                     int *n_logits)
{
    struct step_part *p = &st->parts[st->n_parts++];
    p->job_id = j->id;
    p->slot = (uint32_t)j->slot;
    p->pos0 = (uint32_t)j->n_fed;
    p->n_rows = (uint32_t)k;
    p->n_logits = 0;
    for (int i = 0; i < k; i++) {
        size_t pos = j->n_fed + (size_t)i;
        int r = (*n_rows)++;
        s->row_seq[r] = (uint32_t)j->slot;
        s->row_pos[r] = (uint32_t)pos;
        s->row_tok[r] = j->tokens[pos];
        /* a generation needs the logits after its last token only; an eval after every one */
        bool want = j->eval || pos + 1 == j->n_tokens;
        s->row_want[r] = want;
        if (want) {
            p->n_logits++;
            uint32_t need = logits_needed(j);
            if (need == 0)
                st->full = true;
            else if (need > st->top_k)
                st->top_k = need;
        }
    }
    *n_logits += (int)p->n_logits;
}

/* A job may join a step: it runs, and no step in flight has its rows. */
static bool ready_for_step(const struct scheduler *s, const struct job *j)
{
    return j->slot >= 0 && j->n_tokens > j->n_fed && !slot_in_flight(s, j->slot);
}

/* How many jobs one step takes: all of them with one step in flight; else the running
 * jobs split evenly over the pipeline's depth, so that every stage has a micro-batch. */
static int jobs_per_step(const struct scheduler *s)
{
    if (s->depth <= 1)
        return s->n_slots;
    return s->n_running <= s->depth ? 1 : (s->n_running + s->depth - 1) / s->depth;
}

/* Decoding jobs (one pending token each) first: they are what a user watches; then
 * prompts and replays share prefill_chunk rows in arrival order, which caps the step's
 * length. */
static int build_step(struct daemon *d, struct step *st)
{
    struct scheduler *s = &d->sched;
    int n = 0, n_logits = 0, prefill_left = s->prefill_chunk, jobs_left = jobs_per_step(s);
    st->n_parts = 0;
    st->full = false;
    st->top_k = 1;
    for (struct job *j = s->jobs; j && jobs_left > 0; j = j->next) {
        if (!ready_for_step(s, j) || j->n_tokens - j->n_fed != 1)
            continue;
        if (n == s->max_rows || n_logits == s->max_logit_rows)
            break;
        add_rows(s, st, j, 1, &n, &n_logits);
        jobs_left--;
    }
    for (struct job *j = s->jobs; j && prefill_left > 0 && n < s->max_rows && jobs_left > 0;
         j = j->next) {
        size_t pending = j->n_tokens - j->n_fed;
        if (!ready_for_step(s, j) || pending <= 1)
            continue;
        size_t k = pending;
        if (k > (size_t)prefill_left)
            k = (size_t)prefill_left;
        if (k > (size_t)(s->max_rows - n))
            k = (size_t)(s->max_rows - n);
        int logit_room = s->max_logit_rows - n_logits;
        if (j->eval && k > (size_t)logit_room)
            k = (size_t)logit_room;
        else if (!j->eval && k == pending && logit_room == 0)
            k = pending - 1;
        if (k == 0)
            continue;
        add_rows(s, st, j, (int)k, &n, &n_logits);
        prefill_left -= (int)k;
        jobs_left--;
    }
    return n;
}

/* Sends st (built); false when stage 0 cannot take it now. */
static bool send_step(struct daemon *d, struct step *st, int n_rows)
{
    struct scheduler *s = &d->sched;
    Bitnet__Forward fw = BITNET__FORWARD__INIT;
    fw.step_id = s->next_step_id;
    fw.n_rows = (uint32_t)n_rows;
    fw.n_seq_ids = fw.n_positions = fw.n_token_ids = fw.n_want_logits = (size_t)n_rows;
    fw.seq_ids = s->row_seq;
    fw.positions = s->row_pos;
    fw.token_ids = s->row_tok;
    fw.want_logits = s->row_want;
    /* greedy jobs need only the argmax and top-k samplers the k best: n_vocab floats a row
     * less (500 KB for a 128k vocabulary) */
    fw.top_k = st->full ? 0 : st->top_k;
    if (st->top_k > 1 && !st->full && !s->said_top_k) {
        dlog("sampled jobs get the best %u logits of each row: %zu bytes a row instead of %zu",
             st->top_k, (size_t)st->top_k * 8, (size_t)d->model.hp.n_vocab * 4);
        s->said_top_k = true;
    }
    Bitnet__Envelope env;
    wire_envelope_init(&env, 0);
    env.body_case = BITNET__ENVELOPE__BODY_FORWARD;
    env.forward = &fw;
    struct errbuf e = {{0}};
    /* stamped before the send: stage 0 may take the step before wire_send returns, and
     * the hop into it (workers --timing) is measured from here */
    double t_sent = clock_ms();
    int rc = wire_send(d->ipc.feed, &env, 0, &e);
    if (rc == WIRE_AGAIN) {
        /* IMMEDIATE: stage 0 is not connected yet (restarted moments ago) */
        s->retry_at_ms = clock_ms() + FEED_RETRY_MS;
        st->n_parts = 0;
        return false;
    }
    if (rc != WIRE_OK) {
        dlog("step %llu: %s", (unsigned long long)fw.step_id, e.msg);
        s->retry_at_ms = clock_ms() + 100;
        st->n_parts = 0;
        return false;
    }
    st->in_flight = true;
    st->id = s->next_step_id++;
    st->sent_ms = st->alive_ms = t_sent;
    s->n_flight++;
    s->steps++;
    return true;
}

void scheduler_kick(struct daemon *d)
{
    struct scheduler *s = &d->sched;
    admit(d);
    while (d->workers.pipeline_ready && s->n_flight < s->depth && s->retry_at_ms <= 0 &&
           d->phase != PHASE_STOPPING) {
        struct step *st = NULL;
        for (int k = 0; k < SCHED_MAX_DEPTH && !st; k++)
            if (!s->flight[k].in_flight)
                st = &s->flight[k];
        int n = build_step(d, st);
        if (n == 0 || !send_step(d, st, n))
            break;
    }
}

/* ---- consuming a result ---- */

/* Ends every job of a step in flight with an error. */
static void fail_step(struct daemon *d, struct step *st, const char *why)
{
    struct scheduler *s = &d->sched;
    uint64_t jobs[SCHED_MAX_ROWS];
    int n = 0;
    for (int i = 0; i < st->n_parts && n < SCHED_MAX_ROWS; i++)
        jobs[n++] = st->parts[i].job_id;
    dlog("step %llu failed: %s", (unsigned long long)st->id, why);
    step_ended(d, st);
    s->step_failures = 0;
    for (int i = 0; i < n; i++) {
        struct job *j = scheduler_find(d, jobs[i]);
        if (j)
            scheduler_finish(d, j, BITNET__STOP_REASON__STOP_REASON_ERROR, why);
    }
}

static void on_token(struct daemon *d, struct job *j, int32_t id)
{
    double now = clock_ms();
    if (j->t_first_token == 0)
        j->t_first_token = now;
    /* the rules bitnetctl generate follows too (model/generation.h) */
    enum gen_end end = gen_after_token(d->tok, id, job_n_generated(j) + 1, j->n_predict,
                                       j->n_tokens + 1, d->n_ctx);
    if (end == GEN_END_EOG) {
        scheduler_finish(d, j, BITNET__STOP_REASON__STOP_REASON_EOS, NULL);
        return;
    }
    int rc = job_push_token(j, d->tok, id);
    if (rc < 0) {
        scheduler_finish(d, j, BITNET__STOP_REASON__STOP_REASON_ERROR, "out of memory");
        return;
    }
    d->sched.tokens_generated++;
    if (rc == 1)
        scheduler_finish(d, j, BITNET__STOP_REASON__STOP_REASON_STOP_STRING, NULL);
    else if (end == GEN_END_LENGTH)
        scheduler_finish(d, j, BITNET__STOP_REASON__STOP_REASON_LENGTH, NULL);
    else if (end == GEN_END_CONTEXT)
        scheduler_finish(d, j, BITNET__STOP_REASON__STOP_REASON_CONTEXT_FULL, NULL);
    else if (j->stream && d->sched.ev.job_chunk(d->sched.ev.ctx, j,
                                                 BITNET__STOP_REASON__STOP_REASON_NONE, NULL) < 0) {
        dlog("job %llu: its client went away; freed after %zu of its tokens",
             (unsigned long long)j->id, job_n_generated(j));
        release(d, j); /* the client is gone: nobody to tell */
    }
}

/* Checks a result against the step it answers; NULL if it fits, else why not. */
static const char *check_result(const struct daemon *d, const struct step *s,
                                const Bitnet__ForwardResult *r, char *why, size_t cap)
{
    uint32_t want = 0;
    for (int i = 0; i < s->n_parts; i++)
        want += s->parts[i].n_logits;
    if (r->n_rows != want) {
        snprintf(why, cap, "result has %u rows, the step asked for %u", r->n_rows, want);
        return why;
    }
    if (want && r->n_vocab != d->model.hp.n_vocab) {
        snprintf(why, cap, "result rows of %u logits, the model has %u", r->n_vocab,
                 d->model.hp.n_vocab);
        return why;
    }
    if (r->n_argmax != want || r->n_seq_ids != want || r->n_positions != want) {
        snprintf(why, cap, "result has %zu argmax, %zu slots, %zu positions for %u rows",
                 r->n_argmax, r->n_seq_ids, r->n_positions, want);
        return why;
    }
    if (!s->full && s->top_k > 1 &&
        (r->top_k != s->top_k || r->n_top_ids != (size_t)want * s->top_k ||
         r->n_top_logits != (size_t)want * s->top_k)) {
        snprintf(why, cap, "result has top %u (%zu ids) for %u rows of top %u", r->top_k,
                 r->n_top_ids, want, s->top_k);
        return why;
    }
    if (s->full && r->logits.len != (size_t)want * d->model.hp.n_vocab * sizeof(float)) {
        snprintf(why, cap, "result has %zu bytes of logits for %u rows", r->logits.len, want);
        return why;
    }
    uint32_t row = 0;
    for (int i = 0; i < s->n_parts; i++) {
        const struct step_part *p = &s->parts[i];
        for (uint32_t k = 0; k < p->n_logits; k++, row++) {
            uint32_t pos = p->n_logits == p->n_rows ? p->pos0 + k : p->pos0 + p->n_rows - 1;
            if (r->seq_ids[row] != p->slot || r->positions[row] != pos) {
                snprintf(why, cap, "result row %u is slot %u position %u, the step's is slot "
                         "%u position %u", row, r->seq_ids[row], r->positions[row], p->slot, pos);
                return why;
            }
        }
    }
    return NULL;
}

static void consume_result(struct daemon *d, struct step *st, const Bitnet__ForwardResult *r)
{
    struct scheduler *s = &d->sched;
    char why[256];
    if (check_result(d, st, r, why, sizeof why)) {
        fail_step(d, st, why);
        return;
    }
    /* the parts outlive the step's end, which may let its slots' DROPs go */
    struct step done = *st;
    struct step_part parts[SCHED_MAX_ROWS];
    int n_parts = st->n_parts < SCHED_MAX_ROWS ? st->n_parts : SCHED_MAX_ROWS;
    memcpy(parts, st->parts, (size_t)n_parts * sizeof *parts);
    step_ended(d, st);
    s->step_failures = 0;
    workers_add_timings(d, r->timings, r->n_timings, (uint64_t)(done.sent_ms * 1000.0),
                        clock_us());
    size_t V = d->model.hp.n_vocab;
    const float *logits = (const float *)r->logits.data;
    uint32_t row = 0;
    for (int i = 0; i < n_parts; i++) {
        const struct step_part *p = &parts[i];
        struct job *j = scheduler_find(d, p->job_id);
        uint32_t first = row;
        row += p->n_logits;
        if (!j || j->slot != (int)p->slot || j->n_fed != p->pos0)
            continue; /* cancelled meanwhile */
        j->n_fed += p->n_rows;
        j->step_losses = 0;
        if (j->eval) {
            memcpy(j->logits + (size_t)p->pos0 * V, logits + (size_t)first * V,
                   (size_t)p->n_logits * V * sizeof(float));
            if (j->n_fed == j->n_tokens) {
                d->sched.ev.job_eval_done(d->sched.ev.ctx, j);
                release(d, j);
            }
        } else if (p->n_logits) {
            int32_t id;
            if (done.full)
                id = sampler_sample(&j->smp, logits + (size_t)first * V);
            else if (j->argmax_only)
                id = r->argmax[first];
            else
                id = sampler_sample_top(&j->smp, r->top_ids + (size_t)first * done.top_k,
                                        r->top_logits + (size_t)first * done.top_k);
            on_token(d, j, id);
        }
    }
}

void scheduler_on_results(struct daemon *d, void *sock)
{
    struct scheduler *s = &d->sched;
    for (int k = 0; k < 64; k++) {
        Bitnet__Envelope *env = NULL;
        struct errbuf e = {{0}};
        int rc = wire_recv(sock, &d->results_rx, &env, 0, &e);
        if (rc == WIRE_AGAIN)
            break;
        if (rc != WIRE_OK) {
            dlog("results socket: %s", e.msg);
            if (rc == WIRE_ERROR)
                break;
            continue;
        }
        if (env->body_case != BITNET__ENVELOPE__BODY_FORWARD_RESULT)
            dlog("results socket: unexpected %s, dropped", wire_body_name(env->body_case));
        else if (step_by_id(s, env->forward_result->step_id))
            consume_result(d, step_by_id(s, env->forward_result->step_id), env->forward_result);
        /* else: a step abandoned when a worker was lost; its jobs are replaying */
        wire_free(env);
    }
    scheduler_kick(d);
}

/* The jobs of a step that a worker's death cost: each is replayed, unless workers died on
 * its steps JOB_MAX_STEP_LOSSES times in a row, when the job itself is the likely cause
 * (or the machine cannot run it) and it fails with the last worker's reason. */
static void count_step_losses(struct daemon *d, const uint64_t *jobs, int n)
{
    for (int i = 0; i < n; i++) {
        struct job *j = scheduler_find(d, jobs[i]);
        if (!j || ++j->step_losses < JOB_MAX_STEP_LOSSES)
            continue;
        char why[600];
        snprintf(why, sizeof why, "its step was lost %d times in a row, each time with a "
                 "worker (last: %s)", j->step_losses, d->workers.last_loss);
        dlog("job %llu failed: %s", (unsigned long long)j->id, why);
        scheduler_finish(d, j, BITNET__STOP_REASON__STOP_REASON_ERROR, why);
    }
}

void scheduler_pipeline_lost(struct daemon *d)
{
    struct scheduler *s = &d->sched;
    uint64_t jobs[SCHED_MAX_ROWS];
    int n_jobs = 0;
    for (int k = 0; k < SCHED_MAX_DEPTH; k++) {
        struct step *st = &s->flight[k];
        if (!st->in_flight)
            continue;
        dlog("step %llu abandoned", (unsigned long long)st->id);
        for (int i = 0; i < st->n_parts && n_jobs < SCHED_MAX_ROWS; i++)
            jobs[n_jobs++] = st->parts[i].job_id;
        st->in_flight = false;
        st->n_parts = 0;
    }
    s->n_flight = 0;
    count_step_losses(d, jobs, n_jobs);
    s->retry_at_ms = 0;
    /* DROPs are bookkeeping: a restarted stage holds nothing, and a slot's stale count
     * in the others is overwritten from position 0 by its next job */
    for (int i = 0; i < s->n_slots; i++) {
        s->slot_drop_deferred[i] = false;
        s->slot_drop_id[i] = 0;
        s->slot_drop_acks[i] = 0;
    }
    int n = 0;
    /* a restarted stage has no KV at all: every job rebuilds its cache from position 0 */
    for (struct job *j = s->jobs; j; j = j->next)
        if (j->slot >= 0 && j->n_fed > 0) {
            j->n_fed = 0;
            n++;
        }
    if (n) {
        s->replays++;
        dlog("%d running job%s will replay %s tokens", n, n > 1 ? "s" : "", n > 1 ? "their" : "its");
    }
}

void scheduler_step_progress(struct daemon *d, uint64_t step_id)
{
    struct step *st = step_by_id(&d->sched, step_id);
    if (st)
        st->alive_ms = clock_ms();
}

void scheduler_step_failed(struct daemon *d, uint64_t step_id, const char *why)
{
    struct step *st = step_by_id(&d->sched, step_id);
    if (st) {
        fail_step(d, st, why);
        scheduler_kick(d);
    }
}

double scheduler_cron(struct daemon *d, double now)
{
    struct scheduler *s = &d->sched;
    if (s->retry_at_ms > 0 && now >= s->retry_at_ms) {
        s->retry_at_ms = 0;
        scheduler_kick(d);
    }
    for (int k = 0; k < SCHED_MAX_DEPTH; k++) {
        struct step *st = &s->flight[k];
        if (!st->in_flight || now - st->alive_ms <= STEP_TIMEOUT_MS)
            continue;
        if (++s->step_failures >= STEP_MAX_TRIES) {
            fail_step(d, st, "no result after 3 tries");
        } else {
            dlog("step %llu: no result after %.0f s; sending it again",
                 (unsigned long long)st->id, STEP_TIMEOUT_MS / 1000);
            step_ended(d, st);
        }
        scheduler_kick(d);
    }
    if (s->retry_at_ms > 0)
        return s->retry_at_ms - now > 0 ? s->retry_at_ms - now : 0;
    return 100;
}

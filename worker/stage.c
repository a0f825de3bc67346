/* One Forward through this worker's stage: check the rows against what the stage
 * holds, run embedding / layers / output, and send the step on (hidden states to the
 * next stage, or a ForwardResult to the daemon).
 *
 * A Forward that cannot be run is answered with an Error on the control socket (the
 * data path has no way back to the sender), request_id = the step's step_id, and the
 * step goes no further: the daemon sees the failure of the step instead of a result. */
#include <stdlib.h>
#include <string.h>

#include "model/clock.h"
#include "model/sample.h"
#include "worker/worker.h"

/* ---------------------------------------------------------------------------------------
 * Checks: everything the forward pass relies on, whatever the wire layer let through */

static int check_input(const struct shard *s, const Bitnet__Forward *fw, Bitnet__ErrorCode *code,
                       struct errbuf *e)
{
    const struct bitnet_hparams *hp = &s->model.hp;
    *code = BITNET__ERROR_CODE__ERROR_CODE_BAD_REQUEST;
    if (fw->n_rows > SHARD_MAX_ROWS)
        return err_set(e, "%u rows, a stage takes at most %d per Forward", fw->n_rows,
                       SHARD_MAX_ROWS);
    if (s->has_embedding) {
        if (fw->n_token_ids != fw->n_rows)
            return err_set(e, "the first stage needs token ids, got %s",
                           fw->hidden.len ? "hidden states" : "neither ids nor hidden states");
        for (uint32_t t = 0; t < fw->n_rows; t++)
            if (fw->token_ids[t] < 0 || (uint32_t)fw->token_ids[t] >= hp->n_vocab)
                return err_set(e, "row %u: token id %d is outside the vocabulary (0..%u)", t,
                               fw->token_ids[t], hp->n_vocab - 1);
        return 0;
    }
    if (fw->n_token_ids)
        return err_set(e, "token ids sent to a stage that starts at layer %u (it takes hidden "
                          "states)", s->layer_begin);
    if (fw->n_embd != hp->n_embd)
        return err_set(e, "hidden rows of %u, the model's are %u wide", fw->n_embd, hp->n_embd);
    size_t need = 0;
    if (wire_rows_bytes(fw->hidden_type, fw->n_rows, fw->n_embd, &need, e) < 0)
        return -1;
    if (fw->hidden.len != need)
        return err_set(e, "hidden has %zu bytes, %u rows need %zu", fw->hidden.len, fw->n_rows,
                       need);
    return 0;
}

/* Slots and positions, against the cache: into scratch_pos, committed by the caller only
 * when the whole step is accepted. */
static int check_rows(struct shard *s, const Bitnet__Forward *fw, Bitnet__ErrorCode *code,
                      struct errbuf *e)
{
    memcpy(s->scratch_pos, s->next_pos, (size_t)s->n_slots * sizeof *s->next_pos);
    for (uint32_t t = 0; t < fw->n_rows; t++) {
        uint32_t slot = fw->seq_ids[t], pos = fw->positions[t];
        if (slot >= (uint32_t)s->n_slots) {
            *code = BITNET__ERROR_CODE__ERROR_CODE_UNKNOWN_SEQUENCE;
            return err_set(e, "row %u: sequence slot %u, this stage has slots 0..%d", t, slot,
                           s->n_slots - 1);
        }
        if (pos >= (uint32_t)s->kv_ctx) {
            *code = BITNET__ERROR_CODE__ERROR_CODE_KV_FULL;
            return err_set(e, "row %u: position %u is beyond the KV context of %d", t, pos,
                           s->kv_ctx);
        }
        /* every earlier position of the slot must be cached, or attention would read
         * whatever a previous sequence left there; a position at or below the cached
         * length rewrites the sequence from there (replay, regeneration). Within one
         * step a slot's rows must rise one by one: the K/V of the whole step are written
         * before any row attends. */
        int have = s->scratch_pos[slot];
        bool seen = false;
        for (uint32_t u = 0; u < t && !seen; u++)
            seen = fw->seq_ids[u] == slot;
        if (seen ? pos != (uint32_t)have : pos > (uint32_t)have) {
            *code = BITNET__ERROR_CODE__ERROR_CODE_BAD_REQUEST;
            if (seen)
                return err_set(e, "row %u: position %u of slot %u after position %d in the same "
                                  "step (positions of a slot must follow one another)",
                               t, pos, slot, have - 1);
            if (have == 0)
                return err_set(e, "row %u: position %u of slot %u, but the cache holds none "
                                  "of it (a sequence starts at 0)", t, pos, slot);
            return err_set(e, "row %u: position %u of slot %u, but the cache holds only "
                              "positions 0..%d of it", t, pos, slot, have - 1);
        }
        s->scratch_pos[slot] = (int)pos + 1;
        s->row_slot[t] = (int)slot;
        s->row_pos[t] = (int)pos;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Output */

static void append_timing(const Bitnet__Forward *fw, Bitnet__StageTiming *mine,
                          Bitnet__StageTiming ***out, size_t *n_out, struct errbuf *e, int *rc)
{
    Bitnet__StageTiming **t = malloc((fw->n_timings + 1) * sizeof *t);
    if (!t) {
        *rc = err_set(e, "out of memory for %zu stage timings", fw->n_timings + 1);
        return;
    }
    for (size_t i = 0; i < fw->n_timings; i++)
        t[i] = fw->timings[i];
    t[fw->n_timings] = mine;
    *out = t;
    *n_out = fw->n_timings + 1;
}

/* Heap of the k best (logit, id) pairs, worst at the root; ties go to the lower id, as
 * argmax_f32 does, so top_ids[0] == argmax. */
static bool worse(float la, int32_t ia, float lb, int32_t ib)
{
    return la < lb || (la == lb && ia > ib);
}

static void sift_down(float *l, int32_t *id, uint32_t k, uint32_t i)
{
    for (;;) {
        uint32_t c = 2 * i + 1, w = i;
        if (c < k && worse(l[c], id[c], l[w], id[w]))
            w = c;
        if (c + 1 < k && worse(l[c + 1], id[c + 1], l[w], id[w]))
            w = c + 1;
        if (w == i)
            return;
        float tl = l[i];
        int32_t ti = id[i];
        l[i] = l[w];
        id[i] = id[w];
        l[w] = tl;
        id[w] = ti;
        i = w;
    }
}

/* The k best of x[0..n), best first, into ids/vals (k <= n). */
static void top_k(const float *x, uint32_t n, uint32_t k, int32_t *ids, float *vals)
{
    for (uint32_t i = 0; i < k; i++) {
        ids[i] = (int32_t)i;
        vals[i] = x[i];
    }
    for (uint32_t i = k / 2; i-- > 0;)
        sift_down(vals, ids, k, i);
    for (uint32_t i = k; i < n; i++) {
        if (!worse(vals[0], ids[0], x[i], (int32_t)i))
            continue;
        vals[0] = x[i];
        ids[0] = (int32_t)i;
        sift_down(vals, ids, k, 0);
    }
    /* heap sort: the worst goes to the end each round, leaving best first */
    for (uint32_t end = k; end-- > 1;) {
        float tl = vals[0];
        int32_t ti = ids[0];
        vals[0] = vals[end];
        ids[0] = ids[end];
        vals[end] = tl;
        ids[end] = ti;
        sift_down(vals, ids, end, 0);
    }
}

/* Last stage: logits (or top k) of the rows that want them, as a ForwardResult. */
static int send_result(struct worker *w, const Bitnet__Forward *fw, Bitnet__StageTiming *timing,
                       uint64_t t_done_us, Bitnet__ErrorCode *code, struct errbuf *e)
{
    struct shard *s = &w->shard;
    uint32_t V = s->model.hp.n_vocab, n = 0;
    for (uint32_t t = 0; t < fw->n_rows; t++)
        n += fw->want_logits[t] != 0;
    uint32_t k = fw->top_k < V ? fw->top_k : V;
    size_t per_row = k ? (size_t)k * (sizeof(int32_t) + sizeof(float)) : (size_t)V * sizeof(float);
    if ((size_t)n * per_row > w->opts.max_bytes) {
        *code = BITNET__ERROR_CODE__ERROR_CODE_TOO_BIG;
        return err_set(e, "%u rows of logits would be %zu bytes, over the %zu-byte message "
                          "limit: ask for fewer rows at once or for top_k", n,
                       (size_t)n * per_row, w->opts.max_bytes);
    }
    *code = BITNET__ERROR_CODE__ERROR_CODE_INTERNAL;
    Bitnet__ForwardResult r = BITNET__FORWARD_RESULT__INIT;
    r.step_id = fw->step_id;
    r.n_rows = n;
    r.n_vocab = V;
    r.top_k = k;
    r.n_seq_ids = r.n_positions = r.n_argmax = n;
    r.seq_ids = malloc((n ? n : 1) * sizeof *r.seq_ids);
    r.positions = malloc((n ? n : 1) * sizeof *r.positions);
    r.argmax = malloc((n ? n : 1) * sizeof *r.argmax);
    if (k) {
        r.n_top_ids = r.n_top_logits = (size_t)n * k;
        r.top_ids = malloc((r.n_top_ids ? r.n_top_ids : 1) * sizeof *r.top_ids);
        r.top_logits = malloc((r.n_top_ids ? r.n_top_ids : 1) * sizeof *r.top_logits);
    } else {
        r.logits.len = (size_t)n * V * sizeof(float);
        r.logits.data = malloc(r.logits.len ? r.logits.len : 1);
    }
    int rc = 0;
    if (!r.seq_ids || !r.positions || !r.argmax || (k && (!r.top_ids || !r.top_logits)) ||
        (!k && !r.logits.data)) {
        *code = BITNET__ERROR_CODE__ERROR_CODE_OUT_OF_MEMORY;
        rc = err_set(e, "out of memory for %u result rows", n);
        goto out;
    }
    /* every row's logits in one pass over the head: into the message itself when the
     * full rows go out (little-endian f32, the host order here), else into scratch */
    float *logits = k ? malloc((size_t)n * V * sizeof(float)) : (float *)r.logits.data;
    int *rows = malloc((n ? n : 1) * sizeof *rows);
    if (!logits || !rows) {
        if (k)
            free(logits);
        free(rows);
        *code = BITNET__ERROR_CODE__ERROR_CODE_OUT_OF_MEMORY;
        rc = err_set(e, "out of memory for %u result rows", n);
        goto out;
    }
    uint32_t i = 0;
    for (uint32_t t = 0; t < fw->n_rows; t++) {
        if (!fw->want_logits[t])
            continue;
        rows[i] = (int)t;
        r.seq_ids[i] = fw->seq_ids[t];
        r.positions[i] = fw->positions[t];
        i++;
    }
    if (n)
        forward_output_rows(&s->model, &s->state, rows, (int)n, logits);
    for (i = 0; i < n; i++) {
        const float *row = logits + (size_t)i * V;
        if (k) {
            top_k(row, V, k, r.top_ids + (size_t)i * k, r.top_logits + (size_t)i * k);
            r.argmax[i] = r.top_ids[(size_t)i * k];
        } else {
            r.argmax[i] = argmax_f32(row, V);
        }
    }
    if (k)
        free(logits);
    free(rows);
    uint64_t t_out = clock_us();
    timing->compute_us += t_out - t_done_us; /* the output head is compute too */
    append_timing(fw, timing, &r.timings, &r.n_timings, e, &rc);
    if (rc)
        goto out;
    Bitnet__Envelope env;
    wire_envelope_init(&env, 0);
    env.body_case = BITNET__ENVELOPE__BODY_FORWARD_RESULT;
    env.forward_result = &r;
    timing->send_us = clock_us() - t_out;
    timing->sent_mono_us = clock_us();
    int sent = wire_send(w->data_out, &env, WORKER_SEND_TIMEOUT_MS, e);
    if (sent != WIRE_OK) {
        *code = BITNET__ERROR_CODE__ERROR_CODE_TIMEOUT;
        rc = sent == WIRE_AGAIN ? err_set(e, "the daemon's result socket took nothing for %d ms",
                                          WORKER_SEND_TIMEOUT_MS)
                                : err_prefix(e, "sending the result");
    }
out:
    free(r.seq_ids);
    free(r.positions);
    free(r.argmax);
    free(r.top_ids);
    free(r.top_logits);
    free(r.logits.data);
    free(r.timings);
    return rc;
}

/* Not the last stage: the same rows, hidden states instead of token ids. */
static int send_hidden(struct worker *w, const Bitnet__Forward *fw, Bitnet__StageTiming *timing,
                       Bitnet__ErrorCode *code, struct errbuf *e)
{
    struct shard *s = &w->shard;
    uint64_t t0 = clock_us();
    *code = BITNET__ERROR_CODE__ERROR_CODE_INTERNAL;
    /* the incoming arrays are only borrowed: out owns its hidden rows and timing list */
    Bitnet__Forward out = BITNET__FORWARD__INIT;
    out.step_id = fw->step_id;
    out.n_seq_ids = fw->n_seq_ids;
    out.seq_ids = fw->seq_ids;
    out.n_positions = fw->n_positions;
    out.positions = fw->positions;
    out.n_want_logits = fw->n_want_logits;
    out.want_logits = fw->want_logits;
    out.top_k = fw->top_k;
    int rc = wire_forward_set_hidden(&out, s->state.x, fw->n_rows, s->model.hp.n_embd,
                                     s->act_type, e);
    if (rc == 0)
        append_timing(fw, timing, &out.timings, &out.n_timings, e, &rc);
    if (rc == 0) {
        Bitnet__Envelope env;
        wire_envelope_init(&env, 0);
        env.body_case = BITNET__ENVELOPE__BODY_FORWARD;
        env.forward = &out;
        timing->send_us = clock_us() - t0;
        timing->sent_mono_us = clock_us();
        int sent = wire_send(w->data_out, &env, WORKER_SEND_TIMEOUT_MS, e);
        if (sent != WIRE_OK) {
            *code = BITNET__ERROR_CODE__ERROR_CODE_TIMEOUT;
            rc = sent == WIRE_AGAIN ? err_set(e, "the next stage took nothing for %d ms",
                                              WORKER_SEND_TIMEOUT_MS)
                                    : err_prefix(e, "sending to the next stage");
        }
    }
    free(out.hidden.data);
    free(out.timings);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * The step */

/* A tensor-parallel stage: the other ranks get the step's rows and hidden states, and
 * which rows want logits (send_result asks the head for exactly those). */
static int post_to_ranks(struct shard *s, const Bitnet__Forward *fw, int n)
{
    int *rows = malloc((size_t)n * sizeof *rows), n_logit = 0;
    if (!rows)
        return -1;
    for (int t = 0; s->has_output && t < n; t++)
        if (fw->want_logits[t])
            rows[n_logit++] = t;
    struct tp_step st = {.n_rows = n, .row_slot = s->row_slot, .row_pos = s->row_pos,
                         .x = s->state.x, .n_logit_rows = n_logit, .logit_rows = rows};
    int rc = tp_group_post_step(s->tp, &st, (int)s->model.hp.n_embd);
    free(rows);
    return rc;
}

void stage_forward(struct worker *w, const Bitnet__Forward *fw, uint64_t t_recv_us)
{
    struct shard *s = &w->shard;
    struct errbuf e;
    Bitnet__ErrorCode code = BITNET__ERROR_CODE__ERROR_CODE_BAD_REQUEST;
    if (!s->loaded) {
        worker_report(w, fw->step_id, BITNET__ERROR_CODE__ERROR_CODE_NOT_LOADED,
                      "forward step %llu: no shard loaded", (unsigned long long)fw->step_id);
        return;
    }
    if (check_input(s, fw, &code, &e) < 0 || check_rows(s, fw, &code, &e) < 0) {
        worker_report(w, fw->step_id, code, "forward step %llu: %s",
                      (unsigned long long)fw->step_id, e.msg);
        return;
    }
    const struct bitnet_model *m = &s->model;
    int n = (int)fw->n_rows;
    uint64_t t_start = clock_us();
    int rc = 0;
    code = BITNET__ERROR_CODE__ERROR_CODE_INTERNAL;
    if (s->runs_layers)
        rc = forward_set_rows(m, &s->state, s->row_slot, s->row_pos, n, &e);
    if (rc == 0)
        rc = s->has_embedding
                 ? forward_embed(m, &s->state, fw->token_ids, n, &e)
                 : wire_forward_get_hidden(fw, s->state.x,
                                           (size_t)SHARD_MAX_ROWS * m->hp.n_embd, &e);
    if (rc < 0) {
        /* checked above, so this is a disagreement between those checks and the engine */
        worker_report(w, fw->step_id, code, "forward step %llu: %s",
                      (unsigned long long)fw->step_id, e.msg);
        return;
    }
    if (s->tp && post_to_ranks(s, fw, n) < 0) {
        worker_report(w, fw->step_id, code, "forward step %llu: out of memory",
                      (unsigned long long)fw->step_id);
        return;
    }
    /* from here on the cache changes: the slots hold what this step wrote */
    memcpy(s->next_pos, s->scratch_pos, (size_t)s->n_slots * sizeof *s->next_pos);
    busy_beat_begin(&w->beat, fw->step_id);
    /* fault injection for the tests of the daemon's crash-loop handling: a worker that
     * dies in every step, as one would on a job that trips a bug */
    const char *fault = getenv("BITNET_TEST_FAULT");
    if (fault && strcmp(fault, "abort-in-step") == 0)
        abort();
    for (uint32_t il = s->layer_begin; il < s->layer_end; il++)
        forward_layer(m, &s->state, il);
    uint64_t t_done = clock_us();

    Bitnet__StageTiming timing = BITNET__STAGE_TIMING__INIT;
    timing.worker_id = (char *)w->opts.id;
    timing.layer_begin = s->layer_begin;
    timing.layer_end = s->layer_end;
    timing.queue_us = t_start - t_recv_us;
    timing.recv_mono_us = t_recv_us;
    timing.compute_us = t_done - t_start;
    /* the head over many rows (an eval) is long too; sending uses the data socket only */
    rc = s->has_output ? send_result(w, fw, &timing, t_done, &code, &e)
                       : send_hidden(w, fw, &timing, &code, &e);
    busy_beat_end(&w->beat);
    /* our part of the step is done: the other stages of this node may use our CPUs */
    threadpool_park(s->pool);
    if (rc < 0) {
        worker_report(w, fw->step_id, code, "forward step %llu: %s",
                      (unsigned long long)fw->step_id, e.msg);
        return;
    }
    w->requests_served++;
}

int stage_kv_op(struct shard *s, const Bitnet__KvOp *op, Bitnet__ErrorCode *code,
                struct errbuf *e)
{
    if (!s->loaded) {
        *code = BITNET__ERROR_CODE__ERROR_CODE_NOT_LOADED;
        return err_set(e, "kv_op: no shard loaded");
    }
    switch (op->kind) {
    case BITNET__KV_OP_KIND__KV_OP_KIND_DROP_ALL:
        memset(s->next_pos, 0, (size_t)s->n_slots * sizeof *s->next_pos);
        return 0;
    case BITNET__KV_OP_KIND__KV_OP_KIND_DROP:
    case BITNET__KV_OP_KIND__KV_OP_KIND_TRUNCATE:
        if (op->seq_id >= (uint32_t)s->n_slots) {
            *code = BITNET__ERROR_CODE__ERROR_CODE_UNKNOWN_SEQUENCE;
            return err_set(e, "kv_op: sequence slot %u, this stage has slots 0..%d", op->seq_id,
                           s->n_slots - 1);
        }
        /* the K/V stay in memory; forgetting them is forbidding reads past the new end */
        if (op->kind == BITNET__KV_OP_KIND__KV_OP_KIND_DROP)
            s->next_pos[op->seq_id] = 0;
        else if (op->n_positions < (uint32_t)s->next_pos[op->seq_id])
            s->next_pos[op->seq_id] = (int)op->n_positions;
        return 0;
    default:
        *code = BITNET__ERROR_CODE__ERROR_CODE_BAD_REQUEST;
        return err_set(e, "kv_op: kind %d unknown", (int)op->kind);
    }
}

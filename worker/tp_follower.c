#include "worker/tp_follower.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/forward.h"
#include "worker/log.h"
#include "worker/shard.h"
#include "worker/tp_group.h"

static int parse_spec(const char *spec, int *fd, int *rank)
{
    char tail;
    return sscanf(spec, "%d:%d%c", fd, rank, &tail) == 2 && *fd >= 0 && *rank > 0 ? 0 : -1;
}

/* One step as the leader runs it (worker/stage.c): the same rows and hidden states
 * through the same layers, and the head over the same rows, so that every gather meets
 * its twin on the other ranks. */
static int run_step(struct shard *s, const struct tp_step *st, float **logits, size_t *cap,
                    struct errbuf *e)
{
    const struct bitnet_model *m = &s->model;
    size_t embd = m->hp.n_embd, V = m->hp.n_vocab;
    if (forward_set_rows(m, &s->state, st->row_slot, st->row_pos, st->n_rows, e) < 0)
        return -1;
    memcpy(s->state.x, st->x, (size_t)st->n_rows * embd * sizeof(float));
    for (uint32_t il = s->layer_begin; il < s->layer_end; il++)
        forward_layer(m, &s->state, il);
    if (st->n_logit_rows) {
        size_t need = (size_t)st->n_logit_rows * V;
        if (need > *cap) {
            free(*logits);
            *logits = malloc(need * sizeof(float));
            *cap = *logits ? need : 0;
            if (!*logits)
                return err_set(e, "out of memory for %d rows of logits", st->n_logit_rows);
        }
        forward_output_rows(m, &s->state, st->logit_rows, st->n_logit_rows, *logits);
    }
    threadpool_park(s->pool);
    return 0;
}

int tp_follower_main(const char *spec, const char *log_id)
{
    struct errbuf e;
    int fd, rank;
    if (parse_spec(spec, &fd, &rank) < 0) {
        fprintf(stderr, "bitnet-worker: --tp-follower '%s': expected FD:RANK\n", spec);
        return 2;
    }
    struct tp_group g;
    if (tp_group_attach(&g, fd, rank, log_id, &e) < 0) {
        worker_log(log_id, "%s", e.msg);
        return 1;
    }
    size_t len;
    const void *bytes = tp_group_load_request(&g, &len);
    Bitnet__LoadShard *req = bitnet__load_shard__unpack(NULL, len, bytes);
    struct shard s;
    struct shard_origin origin;
    memset(&s, 0, sizeof s);
    int rc = -1;
    if (!req)
        err_set(&e, "the leader's LoadShard does not decode");
    else if (shard_origin_capture(&origin, &e) == 0) {
        struct shard_hooks hooks = {.log_id = log_id, .follower_of = &g};
        rc = shard_load(&s, &origin, req, &hooks, &e);
        if (rc < 0)
            shard_origin_free(&origin);
    }
    if (req)
        bitnet__load_shard__free_unpacked(req, NULL);
    if (rc < 0) {
        worker_log(log_id, "load: %s", e.msg);
        tp_group_report_loaded(&g, e.msg);
        tp_group_destroy(&g);
        return 1;
    }
    tp_group_report_loaded(&g, NULL);
    float *logits = NULL;
    size_t cap = 0;
    int status = 0;
    for (;;) {
        struct tp_step st;
        int next = tp_group_next_step(&g, &st, (int)s.model.hp.n_embd);
        if (next != 0)
            break;
        if (run_step(&s, &st, &logits, &cap, &e) < 0) {
            /* the leader checked the step; a disagreement here ends the stage, whose
             * leader sees this rank gone and restarts it */
            worker_log(log_id, "step: %s", e.msg);
            status = 1;
            break;
        }
    }
    free(logits);
    shard_unload(&s, &origin, log_id);
    shard_origin_free(&origin);
    tp_group_destroy(&g);
    return status;
}

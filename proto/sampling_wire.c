#include "proto/sampling_wire.h"

#include <sys/random.h>
#include <time.h>

void sampling_to_wire(const struct sampler_params *p, Bitnet__SamplingParams *out)
{
    out->temp = p->temp;
    out->top_k = p->top_k;
    out->top_p = p->top_p;
    out->min_p = p->min_p;
    out->repeat_penalty = p->repeat_penalty;
    out->repeat_last_n = p->repeat_last_n;
    out->seed = p->seed;
}

void sampling_from_wire(const Bitnet__SamplingParams *w, struct sampler_params *p)
{
    sampler_params_default(p);
    if (!w) {
        if (getrandom(&p->seed, sizeof p->seed, 0) != sizeof p->seed)
            p->seed = (uint64_t)time(NULL);
        return;
    }
    p->temp = w->temp;
    p->top_k = w->top_k;
    p->top_p = w->top_p;
    p->min_p = w->min_p;
    p->repeat_penalty = w->repeat_penalty;
    p->repeat_last_n = w->repeat_last_n;
    p->seed = w->seed;
}

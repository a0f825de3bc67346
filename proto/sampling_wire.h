/* The one conversion between the sampler's settings (model/sample.h) and their wire form
 * (SamplingParams), used by every client that sends a generation (bitnetctl, its benchmark,
 * the HTTP API) and by the daemon that receives it. */
#ifndef BITNET_PROTO_SAMPLING_WIRE_H
#define BITNET_PROTO_SAMPLING_WIRE_H

#include "model/sample.h"
#include "proto/bitnet.pb-c.h"

/* out = p (out's other members untouched: initialize it first). */
void sampling_to_wire(const struct sampler_params *p, Bitnet__SamplingParams *out);

/* *p = w; a request without settings (w NULL) gets the defaults with a fresh random seed,
 * as bitnetctl picks one when --seed is not given. */
void sampling_from_wire(const Bitnet__SamplingParams *w, struct sampler_params *p);

#endif

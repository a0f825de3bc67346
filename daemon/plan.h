/* The placement of a model on this machine (or a described one): the per-layer byte
 * counts placement_plan balances, read from the GGUF's tensor table. */
#ifndef BITNET_DAEMON_PLAN_H
#define BITNET_DAEMON_PLAN_H

#include <stddef.h>

#include "daemon/config.h"
#include "daemon/placement.h"
#include "daemon/topology.h"
#include "model/bitnet_model.h"

int plan_for_model(const struct bitnet_model *m, const struct daemon_config *cfg, int n_ctx,
                   const struct topology *t, struct placement *p, struct errbuf *e);

/* "w0 layers 0-2 cpus 0, w1 layers 3-5 cpus 1" for the ready line. */
/* remote[i] (may be NULL) marks stages run on another host: their node and CPUs are
 * this machine's and mean nothing there. */
void plan_summary(const struct placement *p, const bool *remote, char *out, size_t cap);

#endif

/* The local worker processes: started with fork/exec, ended with signals, reaped when
 * SIGCHLD arrives on the signalfd the event loop polls (signals.c). Nothing here decides
 * when; workers.c does. */
#ifndef BITNET_DAEMON_SUPERVISOR_H
#define BITNET_DAEMON_SUPERVISOR_H

#include <sys/types.h>

#include "model/errbuf.h"

struct daemon;
struct worker;

/* The worker program: --worker-bin, else bitnet-worker beside /proc/self/exe. Checked
 * for being executable, so a missing binary stops bitnetd at start instead of making
 * every worker fail forever. */
int supervisor_resolve_bin(struct daemon *d, struct errbuf *e);

/* Starts `bitnet-worker --id ID --control ENDPOINT --data ENDPOINT` for w (plus `--key
 * FILE`, the daemon's own key pair, when it listens for remote workers); sets w->pid. */
int supervisor_spawn(struct daemon *d, struct worker *w, struct errbuf *e);

/* Reaps every child that ended, telling workers.c about each. */
void supervisor_reap(struct daemon *d);

/* At exit: SIGTERM to every worker, SIGKILL to those still there after grace_ms, and
 * every one reaped. */
void supervisor_stop_all(struct daemon *d, int grace_ms);

#endif

/* A tensor-parallel rank other than the leader: a process the stage's worker starts
 * (bitnet-worker --tp-follower FD:RANK), which loads its rank's part of the stage the
 * leader's LoadShard describes, then computes every step the leader hands it through the
 * shared region (tp_group.h). It talks to nobody but the other ranks. */
#ifndef BITNET_WORKER_TP_FOLLOWER_H
#define BITNET_WORKER_TP_FOLLOWER_H

/* Runs until the leader is gone; returns the process's exit status. */
int tp_follower_main(const char *spec, const char *log_id);

#endif

/* Where the daemon's local sockets live, so bitnetd and bitnetctl agree without being
 * told: $XDG_RUNTIME_DIR/bitnetd, else /tmp/bitnetd-$UID (docs/runtime.md). */
#ifndef BITNET_PROTO_ENDPOINTS_H
#define BITNET_PROTO_ENDPOINTS_H

#include <stddef.h>

/* The default run directory; returns -1 if it does not fit in cap. */
int run_dir_default(char *out, size_t cap);

/* "ipc://" + run_dir + "/" + name; returns -1 if it does not fit in cap. */
int run_dir_endpoint(char *out, size_t cap, const char *run_dir, const char *name);

#define CTL_SOCKET_NAME "ctl.sock"

#endif

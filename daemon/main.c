/* bitnetd: the coordinator. Reads its settings, starts the workers of the placement and
 * serves clients until Shutdown, SIGTERM (after a drain) or SIGINT; see docs/runtime.md
 * and docs/operations.md. */
#include <malloc.h>
#include <stdio.h>

#include "daemon/config.h"
#include "daemon/daemon.h"

/* Each job allocates a sampler's candidate table (12 bytes a vocabulary entry, 1.5 MB on
 * 2B-4T) and an eval its logits (MBs). glibc raises its mmap threshold past such blocks
 * once one is freed, after which they come from the heap and stay in the process when
 * freed: a soak saw the daemon's RSS wander by -8% to +17% over two minutes with nothing
 * leaked (malloc_trim gave it all back). A fixed threshold keeps them mmapped, returned to
 * the system when the job ends. */
#define DAEMON_MMAP_THRESHOLD (1 << 20)

int main(int argc, char **argv)
{
    mallopt(M_MMAP_THRESHOLD, DAEMON_MMAP_THRESHOLD);
    struct daemon_config cfg;
    struct errbuf e = {{0}};
    int rc = config_load(&cfg, argc, argv, &e);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "bitnetd: %s\n", e.msg);
        else if (rc == 2)
            puts(BITNETD_VERSION);
        config_free(&cfg);
        return rc < 0 ? 2 : 0;
    }
    struct daemon d;
    rc = daemon_open(&d, &cfg, &e);
    if (rc < 0) {
        fprintf(stderr, "bitnetd: %s\n", e.msg);
    } else {
        d.argc = argc;
        d.argv = argv;
        rc = daemon_run(&d);
    }
    daemon_close(&d);
    config_free(&cfg);
    if (rc == 0)
        fprintf(stderr, "bitnetd: stopped\n");
    return rc < 0 ? 1 : 0;
}

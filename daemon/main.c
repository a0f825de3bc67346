/* bitnetd: the coordinator. Reads its settings, starts the workers of the placement and
 * serves clients until Shutdown, SIGTERM or SIGINT; see docs/runtime.md. */
#include <stdio.h>

#include "daemon/config.h"
#include "daemon/daemon.h"
#include "daemon/loop.h"

int main(int argc, char **argv)
{
    struct daemon_config cfg;
    struct errbuf e = {{0}};
    int rc = config_load(&cfg, argc, argv, &e);
    if (rc != 0) {
        if (rc < 0)
            fprintf(stderr, "bitnetd: %s\n", e.msg);
        config_free(&cfg);
        return rc < 0 ? 2 : 0;
    }
    struct daemon d;
    rc = daemon_open(&d, &cfg, &e);
    if (rc < 0)
        fprintf(stderr, "bitnetd: %s\n", e.msg);
    else
        rc = loop_run(&d);
    daemon_close(&d);
    config_free(&cfg);
    if (rc == 0)
        fprintf(stderr, "bitnetd: stopped\n");
    return rc < 0 ? 1 : 0;
}

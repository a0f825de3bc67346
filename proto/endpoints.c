#include "proto/endpoints.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int run_dir_default(char *out, size_t cap)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    int n = xdg && *xdg ? snprintf(out, cap, "%s/bitnetd", xdg)
                        : snprintf(out, cap, "/tmp/bitnetd-%u", (unsigned)getuid());
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

int run_dir_endpoint(char *out, size_t cap, const char *run_dir, const char *name)
{
    int n = snprintf(out, cap, "ipc://%s/%s", run_dir, name);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

#include "ctl/tokenizer_path.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef BITNET_DEFAULT_TOKENIZER
#error "BITNET_DEFAULT_TOKENIZER must name the build tree's tokenizer.json (see the Makefile)"
#endif

/* Relative to the executable's directory, as make install lays the files out. */
#define INSTALLED_TOKENIZER "../share/bitnetd/tokenizer.json"

int default_tokenizer_json(char *out, size_t cap, struct errbuf *e)
{
    char exe[PATH_MAX], installed[PATH_MAX + sizeof INSTALLED_TOKENIZER] = "";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            slash[1] = 0;
            snprintf(installed, sizeof installed, "%s%s", exe, INSTALLED_TOKENIZER);
            char resolved[PATH_MAX];
            if (realpath(installed, resolved) && access(resolved, R_OK) == 0) {
                if (strlen(resolved) >= cap)
                    return err_set(e, "%s: path too long", resolved);
                memcpy(out, resolved, strlen(resolved) + 1);
                return 0;
            }
        }
    }
    if (access(BITNET_DEFAULT_TOKENIZER, R_OK) == 0) {
        if (strlen(BITNET_DEFAULT_TOKENIZER) >= cap)
            return err_set(e, "%s: path too long", BITNET_DEFAULT_TOKENIZER);
        memcpy(out, BITNET_DEFAULT_TOKENIZER, strlen(BITNET_DEFAULT_TOKENIZER) + 1);
        return 0;
    }
    return err_set(e, "no tokenizer.json: neither %s (installed) nor %s (the build tree's, "
                      "from make deps) is readable; give --tokenizer FILE",
                   *installed ? installed : "PREFIX/share/bitnetd/tokenizer.json",
                   BITNET_DEFAULT_TOKENIZER);
}

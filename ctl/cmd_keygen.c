/* bitnetctl keygen: a CURVE key pair for bitnetd or a remote bitnet-worker
 * (proto/keys.h has the file formats). */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "ctl/commands.h"
#include "proto/keys.h"

int cmd_keygen(int argc, char **argv)
{
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'}, {"force", no_argument, 0, 'f'},
        {"help", no_argument, 0, 'h'},      {0, 0, 0, 0},
    };
    const char *usage = "usage: bitnetctl keygen --out PREFIX [--force]\n"
                        "  writes PREFIX.key (the key pair, mode 0600: keep it private) and\n"
                        "  PREFIX.pub (the public key: give it to the peer, or put it in the\n"
                        "  daemon's --allow-keys list or directory); --force replaces them\n";
    const char *out = NULL;
    bool force = false;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'o') {
            out = optarg;
        } else if (c == 'f') {
            force = true;
        } else if (c == 'h') {
            fputs(usage, stdout);
            return 0;
        } else {
            fprintf(stderr, "bitnetctl keygen: bad option '%s'\n%s", argv[optind - 1], usage);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "bitnetctl keygen: unexpected argument '%s'\n%s", argv[optind], usage);
        return 2;
    }
    if (!out || !*out) {
        fprintf(stderr, "bitnetctl keygen: --out PREFIX is required\n%s", usage);
        return 2;
    }
    char pub[CURVE_Z85_LEN + 1];
    struct errbuf e = {{0}};
    if (curve_write_pair(out, force, pub, &e) < 0) {
        fprintf(stderr, "bitnetctl keygen: %s\n", e.msg);
        return 1;
    }
    printf("%s.key  key pair (mode 0600, keep it private)\n%s.pub  public key %s\n", out, out,
           pub);
    return 0;
}

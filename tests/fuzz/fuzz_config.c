/* bitnetd's settings: the input is the INI file of `bitnetd --config FILE`, read by inih
 * and config.c's handler (every [daemon] key, its value parsing, the --listen group
 * checks). Settings it accepts then go where bitnetd takes them next: the placement of
 * a tiny 8-layer model on a described 2-node machine (--workers, --layer-map,
 * --threads-per-worker, --split-cpus, --kv-type, --ctx, --max-sequences). */
#include <stdio.h>
#include <stdlib.h>

#include <json-c/json.h>

#include "daemon/config.h"
#include "daemon/plan.h"
#include "daemon/topology.h"
#include "model/bitnet_model.h"
#include "tests/fuzz/fuzz_common.h"

static struct bitnet_model model;
static struct topology topo;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    struct fuzz_model_opts o = {FUZZ_TINY_BASE, 8, "f16", "i2_s"};
    struct errbuf e;
    if (bitnet_model_load(&model, fuzz_tiny_model(&o), &e) < 0)
        fuzz_die("%s", e.msg);
    if (topology_load(&topo, "synthetic:pack:2 [numa(memory=8GB)] core:4 pu:2", &e) < 0)
        fuzz_die("%s", e.msg);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *argv[] = {"bitnetd", "--config", (char *)fuzz_put_file(0, data, size), NULL};
    struct daemon_config cfg;
    struct errbuf e;
    int rc = config_load(&cfg, 3, argv, &e);
    if (rc == 0) {
        struct placement p;
        int n_ctx = cfg.ctx < (int)model.hp.n_ctx_train ? cfg.ctx : (int)model.hp.n_ctx_train;
        if (plan_for_model(&model, &cfg, n_ctx, &topo, &p, &e) == 0) {
            char summary[512];
            plan_summary(&p, NULL, summary, sizeof summary);
            json_object_put(placement_to_json(&p));
            placement_free(&p);
        }
    }
    config_free(&cfg);
    return 0;
}

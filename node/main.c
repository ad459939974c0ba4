/* main.c - presenced: read the configuration, run one presence node. */
#include <nats/nats.h>
#include <stdio.h>
#include "logsink.h"
#include "node.h"

#define PRESENCED_VERSION "0.1.0"

int main(int argc, char **argv) {
    pd_config cfg;
    char err[512];
    pd_node node;

    node_log_to_stream(stderr);
    if (pd_config_load(&cfg, argc, argv, NULL, err, sizeof err) != PD_OK) {
        fprintf(stderr, "presenced: %s\n", err);
        fprintf(stderr, "Run 'presenced --help' for the list of settings.\n");
        return 2;
    }
    if (cfg.help) {
        pd_config_usage(stdout, "presenced");
        return 0;
    }
    if (cfg.version) {
        printf("presenced %s\n", PRESENCED_VERSION);
        return 0;
    }
    pd_log_set_level(cfg.log_level);
    pd_config_describe(&cfg, err, sizeof err);
    pd_log(PD_LOG_INFO, "presenced %s starting: %s", PRESENCED_VERSION, err);

    int rc = 1;
    if (pd_node_init(&node, &cfg, err, sizeof err) != PD_OK) {
        pd_log(PD_LOG_ERROR, "cannot start: %s", err);
    } else {
        pd_log(PD_LOG_INFO, "node %s ready", cfg.node_id);
        rc = pd_node_run(&node);
    }
    pd_node_close(&node);
    pd_log(PD_LOG_INFO, "stopped");
    return rc;
}

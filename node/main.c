/* main.c - presenced: read the configuration, run one presence node. */
#include <nats/nats.h>
#include <stdio.h>
#include "base/version.h"
#include "config_files.h"
#include "logsink.h"
#include "node.h"


static void to_stdout(void *ud, const char *text, size_t n) {
    (void)ud;
    fwrite(text, 1, n, stdout);
}

int main(int argc, char **argv) {
    pd_config cfg;
    char err[512];
    pd_node node;

    node_log_to_stream(stderr);
    if (pd_config_load(&cfg, argc, argv, NULL, err, sizeof err) != PD_OK ||
        (!cfg.help && !cfg.version &&
         pd_config_check_files(&cfg, argc, argv, err, sizeof err) != PD_OK)) {
        fprintf(stderr, "presenced: %s\n", err);
        fprintf(stderr, "Run 'presenced --help' for the list of settings.\n");
        return 2;
    }
    if (cfg.help) {
        pd_config_usage(&(pd_cli_out){to_stdout, NULL}, "presenced");
        return 0;
    }
    if (cfg.version) {
        printf("presenced %s\n", PD_VERSION);
        return 0;
    }
    pd_log_set_level(cfg.log_level);
    pd_config_describe(&cfg, err, sizeof err);
    pd_log(PD_LOG_INFO, "presenced %s starting: %s", PD_VERSION, err);

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

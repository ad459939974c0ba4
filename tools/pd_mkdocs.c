/* pd_mkdocs.c - writes the man pages and bash completions of presenced,
 * presencectl and presence-sim from their option tables (the same tables
 * their parsers read), into the folder given: presenced.8, presencectl.1,
 * presence-sim.1 and completions/<program>. Run by the build (CMake);
 * installed by `make install`. usage: pd-mkdocs OUTDIR */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include "base/config.h"
#include "base/version.h"
#include "cli_file.h"
#include "ctl_opts.h"
#include "sim.h"

static int write_with(const char *dir, const char *name, const pd_cli *cli, bool man) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, "pd-mkdocs: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    if (man) pd_cli_man(PD_CLI_FILE(f), cli, PD_VERSION);
    else pd_cli_bash(PD_CLI_FILE(f), cli);
    if (fclose(f) != 0) {
        fprintf(stderr, "pd-mkdocs: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    static pd_config_cli node;
    char comp[4096];
    if (argc != 2) {
        fprintf(stderr, "usage: pd-mkdocs OUTDIR\n");
        return 2;
    }
    snprintf(comp, sizeof comp, "%s/completions", argv[1]);
    if ((mkdir(argv[1], 0755) != 0 && errno != EEXIST) ||
        (mkdir(comp, 0755) != 0 && errno != EEXIST)) {
        fprintf(stderr, "pd-mkdocs: cannot create %s: %s\n", comp, strerror(errno));
        return 1;
    }
    pd_config_cli_build(&node);
    const pd_cli *sim_cli = sim_opts_cli();
    int rc = write_with(argv[1], "presenced.8", &node.cli, true) |
             write_with(argv[1], "presencectl.1", &ctl_cli, true) |
             write_with(argv[1], "presence-sim.1", sim_cli, true) |
             write_with(comp, "presenced", &node.cli, false) |
             write_with(comp, "presencectl", &ctl_cli, false) |
             write_with(comp, "presence-sim", sim_cli, false);
    return rc;
}

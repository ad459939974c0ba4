/* ctl_opts.h - presencectl's commands and options as one table (base/cli.h):
 * parsing, per-command --help, the man page presencectl.1 and the bash
 * completion all come from it. */
#ifndef PD_CTL_OPTS_H
#define PD_CTL_OPTS_H
#include "base/cli.h"

/* CHECKLIST: a new command? A row in ctl_cmds (ctl_opts.c) at its CTL_
 * index, its options' bits, its handler in presencectl.c and a case in
 * tests/it_ctl.c. */
enum {
    CTL_GET, CTL_DEVICES, CTL_ONLINE, CTL_CLUSTER, CTL_WATCH, CTL_CONNECT, CTL_DISCONNECT,
    CTL_ACTIVITY, CTL_IDLE, CTL_STATUS, CTL_CUSTOM, CTL_NCMDS
};

extern const pd_cli ctl_cli;

#endif

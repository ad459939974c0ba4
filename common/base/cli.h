/* cli.h - the one argument parser of presenced, presencectl and
 * presence-sim: a table of options (and, for presencectl, of commands) read
 * with glibc's getopt_long, and the help text, man page and bash completion
 * written from the same table, so that none of them can drift apart.
 *
 * Every program gets the same rules: --name VALUE and --name=VALUE, exact
 * names only (getopt_long's abbreviations are refused), a value that looks
 * like another option ("--a --b") is a missing value, "--" ends the options,
 * and each error names the option. */
#ifndef PD_CLI_H
#define PD_CLI_H
#include "base/status.h"
#include <stdbool.h>
#include <stddef.h>

#define PD_CLI_ALL 0u /* pd_cli_opt.cmds: the option is valid with every command */

/* CHECKLIST: a new field here is shown by pd_cli_usage, pd_cli_man and
 * pd_cli_bash; tests/test_cli.c checks all three. */
typedef struct pd_cli_opt {
    const char *name;  /* long name without "--" */
    char short_name;   /* e.g. 'h', or 0 */
    const char *arg;   /* metavariable of the value ("URL"), NULL: takes none */
    const char *env;   /* environment variable of the same setting, or NULL */
    const char *def;   /* default as shown in help, or NULL */
    const char *help;  /* one sentence */
    unsigned cmds;     /* bit (1u << command index) per command taking it; PD_CLI_ALL */
} pd_cli_opt;

typedef struct pd_cli_cmd {
    const char *name;
    const char *args;  /* synopsis of its operands ("USER..."), "" for none */
    const char *help;  /* one sentence */
    int min_args, max_args;
} pd_cli_cmd;

typedef struct pd_cli {
    const char *prog;        /* "presencectl" */
    const char *summary;     /* man NAME line: "command-line client of presenced" */
    const char *description; /* paragraph(s) for --help and the man page */
    const char *footer;      /* exit codes, environment... (help and man), or NULL */
    int man_section;         /* 1 or 8 */
    const pd_cli_opt *opts;
    size_t nopts;
    const pd_cli_cmd *cmds;  /* NULL: the program takes no command */
    size_t ncmds;
} pd_cli;

/* One option found in argv: its row in cli->opts and its value (NULL for
 * an option without one; a pointer into argv otherwise). */
typedef struct pd_cli_hit {
    size_t opt;
    const char *val;
} pd_cli_hit;

typedef struct pd_cli_args {
    pd_cli_hit *hits;   /* caller's array of at least argc entries */
    size_t nhits;
    int first_operand;  /* operands are argv[first_operand..argc) */
    bool dashdash;      /* a "--" ended the options */
} pd_cli_args;

/* Reads the options of argv[1..argc-1] with getopt_long and moves the
 * operands behind them (getopt's permutation: options may follow operands).
 * Every option is read even after an error, so the caller can still find
 * --help or --json in a bad command line. Returns PD_OK, or PD_ECONFIG with
 * the first error in err ("--limit: missing value"), errlen bytes, always
 * terminated. Not reentrant (getopt_long's globals). */
pd_status pd_cli_parse(const pd_cli *cli, int argc, char **argv, pd_cli_args *out, char *err,
                       size_t errlen);

/* True if the row opt (by name) appears in a. */
bool pd_cli_has(const pd_cli *cli, const pd_cli_args *a, const char *name);

/* The command row named name, or NULL. */
const pd_cli_cmd *pd_cli_find_cmd(const pd_cli *cli, const char *name);

/* PD_ECONFIG with "--emoji: not an option of 'get' (see presencectl get
 * --help)" if an option of a does not belong to cmd; PD_OK otherwise. */
pd_status pd_cli_check_scope(const pd_cli *cli, const pd_cli_args *a, const pd_cli_cmd *cmd,
                             char *err, size_t errlen);

/* Where the texts below go: write(ud, text, n) for each piece. common/
 * does no I/O; the program decides (the tools: tools/cli_file.h, to a FILE *). */
typedef struct pd_cli_out {
    void (*write)(void *ud, const char *text, size_t n);
    void *ud;
} pd_cli_out;

/* Formats into a local buffer (1 KiB; longer is cut) and hands the text
 * to out: common/ does no I/O of its own. */
__attribute__((format(printf, 2, 3)))
void pd_cli_printf(const pd_cli_out *out, const char *fmt, ...);

/* --help text: the synopsis, the description, the commands and every
 * option; with cmd, that command's synopsis and only the options it takes. */
void pd_cli_usage(const pd_cli_out *out, const pd_cli *cli, const pd_cli_cmd *cmd);

/* The man page (roff, man(7) macros) of cli; version goes in the footer. */
void pd_cli_man(const pd_cli_out *out, const pd_cli *cli, const char *version);

/* A bash completion script for cli->prog (commands, then the options each
 * command takes; FILE values complete as file names). */
void pd_cli_bash(const pd_cli_out *out, const pd_cli *cli);

#endif

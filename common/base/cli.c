/* cli.c - the shared argument parser (see cli.h): getopt_long driven by a
 * table, and the help text, man page and bash completion of that table.
 *
 * getopt_long does the reading (--a=v, --a v, "--", operands after
 * options); this file adds what it lacks: exact names (glibc accepts any
 * unambiguous prefix, so a typo of a new option could silently mean an old
 * one), a value that is itself an option refused as missing, messages that
 * name the option instead of printing to stderr, and per-command scopes. */
#define _GNU_SOURCE 1 /* getopt_long */
#include "base/cli.h"
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h> /* vsnprintf only */
#include <string.h>

#define CLI_OPTS_MAX 96
#define CLI_VAL_BASE 256 /* getopt_long's return value for row i is CLI_VAL_BASE + i */

void pd_cli_printf(const pd_cli_out *out, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    out->write(out->ud, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

__attribute__((format(printf, 3, 4)))
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    if (err == NULL || errlen == 0 || err[0] != '\0') return; /* keep the first */
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* The text of the option element just read, "--name" part only (n bytes). */
static const char *element_name(const char *el, size_t *n) {
    const char *eq = strchr(el, '=');
    *n = eq != NULL ? (size_t)(eq - el) : strlen(el);
    return el;
}

static void build(const pd_cli *cli, struct option *lo, char *shorts, size_t shorts_cap) {
    size_t k = 0;
    shorts[k++] = ':'; /* ':' for a missing value, '?' for the rest */
    for (size_t i = 0; i < cli->nopts; i++) {
        const pd_cli_opt *o = &cli->opts[i];
        lo[i] = (struct option){o->name, o->arg ? required_argument : no_argument, NULL,
                                CLI_VAL_BASE + (int)i};
        if (o->short_name && k + 3 < shorts_cap) {
            shorts[k++] = o->short_name;
            if (o->arg) shorts[k++] = ':';
        }
    }
    lo[cli->nopts] = (struct option){NULL, 0, NULL, 0};
    shorts[k] = '\0';
}

static int row_of_short(const pd_cli *cli, int ch) {
    for (size_t i = 0; i < cli->nopts; i++)
        if (cli->opts[i].short_name == ch) return (int)i;
    return -1;
}

/* One option returned by getopt_long as row i: checks the exact name and
 * the value, and records it. */
static void take(const pd_cli *cli, int argc, char **argv, size_t i, bool is_short,
                 pd_cli_args *out, char *err, size_t errlen) {
    const pd_cli_opt *o = &cli->opts[i];
    const char *val = o->arg ? optarg : NULL;
    if (!is_short) {
        /* The element: argv[optind-1], or the one before when the value
         * was the next element. getopt permutes only on its next call. */
        bool separate = val != NULL && optind >= 2 && val == argv[optind - 1] &&
                        strchr(argv[optind - 2], '=') == NULL;
        const char *el = argv[separate ? optind - 2 : optind - 1];
        size_t n;
        element_name(el, &n);
        if (n != strlen(o->name) + 2 || strncmp(el + 2, o->name, n - 2) != 0) {
            set_err(err, errlen, "%.*s: unknown option (did you mean --%s? see --help)",
                    (int)(n > 200 ? 200 : n), el, o->name);
            return;
        }
        if (separate && strncmp(val, "--", 2) == 0 && val[2] != '\0') {
            set_err(err, errlen, "--%s: missing value (give one that starts with -- as "
                    "--%s=VALUE)", o->name, o->name);
            optind--; /* the next option is read as one */
            return;
        }
    }
    (void)argc;
    out->hits[out->nhits++] = (pd_cli_hit){i, val};
}

static void unknown(const pd_cli *cli, char **argv, pd_cli_args *out, char *err,
                    size_t errlen) {
    const char *el = argv[optind - 1];
    if (optopt >= CLI_VAL_BASE) { /* a value given to an option that takes none */
        set_err(err, errlen, "--%s: takes no value", cli->opts[optopt - CLI_VAL_BASE].name);
    } else if (optopt != 0) {
        set_err(err, errlen, "-%c: unknown option (see --help)", optopt);
    } else {
        size_t n;
        element_name(el, &n);
        set_err(err, errlen, "%.*s: unknown option (see --help)", (int)(n > 200 ? 200 : n), el);
    }
    (void)out;
}

pd_status pd_cli_parse(const pd_cli *cli, int argc, char **argv, pd_cli_args *out, char *err,
                       size_t errlen) {
    struct option lo[CLI_OPTS_MAX + 1];
    char shorts[2 * CLI_OPTS_MAX + 2];
    if (err != NULL && errlen > 0) err[0] = '\0';
    out->nhits = 0;
    out->dashdash = false;
    out->first_operand = argc;
    if (cli->nopts > CLI_OPTS_MAX) {
        set_err(err, errlen, "internal error: too many options");
        return PD_ECONFIG;
    }
    build(cli, lo, shorts, sizeof shorts);
    optind = 0; /* glibc: 0 starts a fresh scan */
    opterr = 0;
    for (;;) {
        int li = -1;
        int ch = getopt_long(argc, argv, shorts, lo, &li);
        if (ch == -1) break;
        if (ch >= CLI_VAL_BASE) {
            take(cli, argc, argv, (size_t)(ch - CLI_VAL_BASE), false, out, err, errlen);
        } else if (ch == ':') {
            int row = optopt >= CLI_VAL_BASE ? optopt - CLI_VAL_BASE : row_of_short(cli, optopt);
            if (row >= 0) set_err(err, errlen, "--%s: missing value", cli->opts[row].name);
            else set_err(err, errlen, "missing value");
        } else if (ch == '?') {
            unknown(cli, argv, out, err, errlen);
        } else {
            int row = row_of_short(cli, ch);
            if (row >= 0) take(cli, argc, argv, (size_t)row, true, out, err, errlen);
        }
    }
    out->first_operand = optind;
    out->dashdash = optind > 1 && optind <= argc && strcmp(argv[optind - 1], "--") == 0;
    return err != NULL && errlen > 0 && err[0] != '\0' ? PD_ECONFIG : PD_OK;
}

bool pd_cli_has(const pd_cli *cli, const pd_cli_args *a, const char *name) {
    for (size_t i = 0; i < a->nhits; i++)
        if (strcmp(cli->opts[a->hits[i].opt].name, name) == 0) return true;
    return false;
}

const pd_cli_cmd *pd_cli_find_cmd(const pd_cli *cli, const char *name) {
    for (size_t i = 0; i < cli->ncmds; i++)
        if (strcmp(cli->cmds[i].name, name) == 0) return &cli->cmds[i];
    return NULL;
}

static bool in_scope(const pd_cli *cli, const pd_cli_opt *o, const pd_cli_cmd *cmd) {
    if (o->cmds == PD_CLI_ALL || cmd == NULL) return true;
    return (o->cmds & (1u << (unsigned)(cmd - cli->cmds))) != 0;
}

pd_status pd_cli_check_scope(const pd_cli *cli, const pd_cli_args *a, const pd_cli_cmd *cmd,
                             char *err, size_t errlen) {
    if (err != NULL && errlen > 0) err[0] = '\0';
    for (size_t i = 0; i < a->nhits; i++) {
        const pd_cli_opt *o = &cli->opts[a->hits[i].opt];
        if (in_scope(cli, o, cmd)) continue;
        set_err(err, errlen, "--%s: not an option of '%s' (see %s %s --help)", o->name,
                cmd->name, cli->prog, cmd->name);
        return PD_ECONFIG;
    }
    return PD_OK;
}

/* ---- help ------------------------------------------------------------------ */

static void opt_head(const pd_cli_opt *o, char *buf, size_t len) {
    if (o->short_name)
        snprintf(buf, len, "-%c, --%s%s%s", o->short_name, o->name, o->arg ? " " : "",
                 o->arg ? o->arg : "");
    else
        snprintf(buf, len, "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
}

static void usage_opt(const pd_cli_out *out, const pd_cli_opt *o) {
    char head[96];
    opt_head(o, head, sizeof head);
    pd_cli_printf(out, "  %-26s %s", head, o->help);
    if (o->env && o->def) pd_cli_printf(out, " (%s, default %s)", o->env, o->def);
    else if (o->env) pd_cli_printf(out, " (%s)", o->env);
    else if (o->def) pd_cli_printf(out, " (default %s)", o->def);
    pd_cli_printf(out, "\n");
}

void pd_cli_usage(const pd_cli_out *out, const pd_cli *cli, const pd_cli_cmd *cmd) {
    if (cmd != NULL) {
        pd_cli_printf(out, "usage: %s [options] %s%s%s\n\n%s\n\noptions of %s:\n", cli->prog,
                cmd->name, cmd->args[0] ? " " : "", cmd->args, cmd->help, cmd->name);
        for (size_t i = 0; i < cli->nopts; i++)
            if (cli->opts[i].cmds != PD_CLI_ALL && in_scope(cli, &cli->opts[i], cmd))
                usage_opt(out, &cli->opts[i]);
        pd_cli_printf(out, "\ncommon options:\n");
        for (size_t i = 0; i < cli->nopts; i++)
            if (cli->opts[i].cmds == PD_CLI_ALL) usage_opt(out, &cli->opts[i]);
        return;
    }
    pd_cli_printf(out, "usage: %s [options]%s\n\n%s\n", cli->prog, cli->ncmds ? " COMMAND [ARGS]" : "",
            cli->description);
    if (cli->ncmds) {
        pd_cli_printf(out, "\ncommands (%s COMMAND --help for one):\n", cli->prog);
        for (size_t i = 0; i < cli->ncmds; i++) {
            char head[96];
            snprintf(head, sizeof head, "%s %s", cli->cmds[i].name, cli->cmds[i].args);
            pd_cli_printf(out, "  %-26s %s\n", head, cli->cmds[i].help);
        }
    }
    pd_cli_printf(out, "\noptions:\n");
    for (size_t i = 0; i < cli->nopts; i++) usage_opt(out, &cli->opts[i]);
    if (cli->footer) pd_cli_printf(out, "\n%s", cli->footer);
}

/* ---- man page ----------------------------------------------------------------- */

/* Text for roff: backslashes doubled, a leading '.' or '\'' protected,
 * '-' as \- (so that options can be searched and copied). */
static void roff(const pd_cli_out *out, const char *s) {
    bool bol = true;
    for (; *s; s++) {
        if (bol && (*s == '.' || *s == '\'')) pd_cli_printf(out, "%s", "\\&");
        if (*s == '\\') pd_cli_printf(out, "%s", "\\e");
        else if (*s == '-') pd_cli_printf(out, "%s", "\\-");
        else pd_cli_printf(out, "%c", *s);
        bol = *s == '\n';
    }
}

static void man_opt(const pd_cli_out *out, const pd_cli *cli, const pd_cli_opt *o) {
    pd_cli_printf(out, "%s", ".TP\n");
    if (o->short_name) pd_cli_printf(out, "\\fB\\-%c\\fR, ", o->short_name);
    pd_cli_printf(out, "%s", "\\fB\\-\\-");
    roff(out, o->name);
    pd_cli_printf(out, "%s", "\\fR");
    if (o->arg) {
        pd_cli_printf(out, "%s", " \\fI");
        roff(out, o->arg);
        pd_cli_printf(out, "%s", "\\fR");
    }
    pd_cli_printf(out, "\n");
    roff(out, o->help);
    pd_cli_printf(out, "%s", ".\n");
    if (o->env || o->def) pd_cli_printf(out, "%s", ".br\n");
    if (o->env) {
        pd_cli_printf(out, "%s", "Environment: \\fB");
        roff(out, o->env);
        pd_cli_printf(out, "%s", "\\fR. ");
    }
    if (o->def) {
        pd_cli_printf(out, "%s", "Default: ");
        roff(out, o->def);
        pd_cli_printf(out, "%s", ".");
    }
    if (o->env || o->def) pd_cli_printf(out, "\n");
    if (o->cmds != PD_CLI_ALL && cli->ncmds) {
        pd_cli_printf(out, "%s", ".br\nCommands:");
        for (size_t i = 0; i < cli->ncmds; i++)
            if (o->cmds & (1u << i)) pd_cli_printf(out, " %s", cli->cmds[i].name);
        pd_cli_printf(out, "%s", ".\n");
    }
}

void pd_cli_man(const pd_cli_out *out, const pd_cli *cli, const char *version) {
    pd_cli_printf(out, ".\\\" Generated from the option table of %s; do not edit.\n", cli->prog);
    pd_cli_printf(out, "%s", ".TH ");
    for (const char *p = cli->prog; *p; p++) pd_cli_printf(out, "%c", *p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    pd_cli_printf(out, " %d \"\" \"presenced %s\" \"presenced\"\n.SH NAME\n", cli->man_section,
            version);
    roff(out, cli->prog);
    pd_cli_printf(out, "%s", " \\- ");
    roff(out, cli->summary);
    pd_cli_printf(out, "\n.SH SYNOPSIS\n\\fB%s\\fR [\\fIoptions\\fR]%s\n.SH DESCRIPTION\n", cli->prog,
            cli->ncmds ? " \\fICOMMAND\\fR [\\fIARGS\\fR]" : "");
    roff(out, cli->description);
    pd_cli_printf(out, "\n");
    if (cli->ncmds) {
        pd_cli_printf(out, "%s", ".SH COMMANDS\n");
        for (size_t i = 0; i < cli->ncmds; i++) {
            pd_cli_printf(out, ".TP\n\\fB%s\\fR ", cli->cmds[i].name);
            roff(out, cli->cmds[i].args);
            pd_cli_printf(out, "\n");
            roff(out, cli->cmds[i].help);
            pd_cli_printf(out, "%s", ".\n");
        }
    }
    pd_cli_printf(out, "%s", ".SH OPTIONS\n");
    for (size_t i = 0; i < cli->nopts; i++) man_opt(out, cli, &cli->opts[i]);
    if (cli->footer) {
        pd_cli_printf(out, "%s", ".SH NOTES\n.nf\n");
        roff(out, cli->footer);
        pd_cli_printf(out, "%s", ".fi\n");
    }
    pd_cli_printf(out, "%s", ".SH SEE ALSO\n\\fBpresenced\\fR(8), \\fBpresencectl\\fR(1)\n");
}

/* ---- bash completion ---------------------------------------------------------- */

static bool is_file_arg(const pd_cli_opt *o) {
    return o->arg != NULL && (strcmp(o->arg, "FILE") == 0 || strcmp(o->arg, "DIR") == 0);
}

static void bash_opts(const pd_cli_out *out, const pd_cli *cli, const pd_cli_cmd *cmd) {
    for (size_t i = 0; i < cli->nopts; i++)
        if (in_scope(cli, &cli->opts[i], cmd)) pd_cli_printf(out, " --%s", cli->opts[i].name);
}

void pd_cli_bash(const pd_cli_out *out, const pd_cli *cli) {
    char fn[64];
    size_t k = 0;
    for (const char *p = cli->prog; *p && k + 1 < sizeof fn; p++)
        fn[k++] = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ? *p : '_';
    fn[k] = '\0';
    pd_cli_printf(out, "# bash completion for %s; generated from its option table, do not edit.\n"
            "_%s() {\n    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}\n"
            "    case $prev in\n", cli->prog, fn);
    bool any = false;
    for (size_t i = 0; i < cli->nopts; i++)
        if (is_file_arg(&cli->opts[i])) {
            pd_cli_printf(out, "%s--%s", any ? "|" : "        ", cli->opts[i].name);
            any = true;
        }
    if (any) pd_cli_printf(out, "%s", ") COMPREPLY=($(compgen -f -- \"$cur\")); return;;\n");
    any = false;
    for (size_t i = 0; i < cli->nopts; i++)
        if (cli->opts[i].arg && !is_file_arg(&cli->opts[i])) {
            pd_cli_printf(out, "%s--%s", any ? "|" : "        ", cli->opts[i].name);
            any = true;
        }
    if (any) pd_cli_printf(out, "%s", ") return;;\n");
    pd_cli_printf(out, "%s", "    esac\n");
    if (cli->ncmds) {
        pd_cli_printf(out, "%s", "    local i cmd=\n    for ((i = 1; i < COMP_CWORD; i++)); do\n"
                        "        case ${COMP_WORDS[i]} in\n");
        for (size_t i = 0; i < cli->ncmds; i++)
            pd_cli_printf(out, "            %s) cmd=%s; break;;\n", cli->cmds[i].name,
                    cli->cmds[i].name);
        pd_cli_printf(out, "%s", "        esac\n    done\n    local opts\n    case $cmd in\n");
        for (size_t i = 0; i < cli->ncmds; i++) {
            pd_cli_printf(out, "        %s) opts=\"", cli->cmds[i].name);
            bash_opts(out, cli, &cli->cmds[i]);
            pd_cli_printf(out, "%s", "\";;\n");
        }
        pd_cli_printf(out, "%s", "        *) opts=\"");
        for (size_t i = 0; i < cli->nopts; i++)
            if (cli->opts[i].cmds == PD_CLI_ALL) pd_cli_printf(out, " --%s", cli->opts[i].name);
        pd_cli_printf(out, "%s", "\"\n           if [[ $cur != -* ]]; then\n"
                        "               COMPREPLY=($(compgen -W \"");
        for (size_t i = 0; i < cli->ncmds; i++)
            pd_cli_printf(out, "%s%s", i ? " " : "", cli->cmds[i].name);
        pd_cli_printf(out, "%s", "\" -- \"$cur\")); return\n           fi;;\n    esac\n");
    } else {
        pd_cli_printf(out, "%s", "    local opts=\"");
        bash_opts(out, cli, NULL);
        pd_cli_printf(out, "%s", "\"\n");
    }
    pd_cli_printf(out, "    COMPREPLY=($(compgen -W \"$opts\" -- \"$cur\"))\n}\n"
            "complete -F _%s %s\n", fn, cli->prog);
}

/* test_cli.c - the shared argument parser (common/base/cli.c): both value
 * forms, exact names, missing values, "--", operands after options, per
 * command scopes, and the help, man page and bash completion written from
 * the same table. */
#include "base/cli.h"
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { C_GET, C_SAY };
static const pd_cli_cmd cmds[] = {
    [C_GET] = {"get", "USER...", "look someone up", 1, 5},
    [C_SAY] = {"say", "TEXT", "say something", 1, 1},
};
static const pd_cli_opt opts[] = {
    {"server", 0, "URL", "X_URL", "nats://h", "where", PD_CLI_ALL},
    {"json", 0, NULL, NULL, NULL, "as JSON", PD_CLI_ALL},
    {"emoji", 0, "E", NULL, NULL, "an emoji", 1u << C_SAY},
    {"creds", 0, "FILE", NULL, NULL, "a file", PD_CLI_ALL},
    {"help", 'h', NULL, NULL, NULL, "help", PD_CLI_ALL},
};
static const pd_cli cli = {
    .prog = "tool", .summary = "a test tool", .description = "Tests the parser.",
    .footer = "Exit 0.\n", .man_section = 1, .opts = opts, .nopts = 5, .cmds = cmds, .ncmds = 2,
};

static char err[256];
static pd_cli_hit hits[16];

static char *copy[16]; /* argv as parsed (getopt permutes it) */

static pd_status parse(pd_cli_args *a, int argc, const char *const *argv) {
    for (int i = 0; i < argc; i++) copy[i] = (char *)argv[i];
    copy[argc] = NULL;
    *a = (pd_cli_args){.hits = hits};
    return pd_cli_parse(&cli, argc, copy, a, err, sizeof err);
}

Test(cli, both_value_forms_and_operands_anywhere) {
    pd_cli_args a;
    const char *argv[] = {"tool", "get", "--server=nats://a", "bob", "--json", "--server",
                          "nats://b", "ann"};
    cr_assert_eq(parse(&a, 8, argv), PD_OK, "%s", err);
    cr_assert_eq(a.nhits, 3u);
    cr_expect_str_eq(a.hits[0].val, "nats://a");
    cr_expect_eq(a.hits[1].opt, 1u);
    cr_expect_eq(a.hits[1].val, NULL);
    cr_expect_str_eq(a.hits[2].val, "nats://b");
    cr_assert_eq(8 - a.first_operand, 3);
    /* getopt moved the operands behind the options, in their order. */
    cr_expect_str_eq(copy[a.first_operand], "get");
    cr_expect_str_eq(copy[a.first_operand + 1], "bob");
    cr_expect_str_eq(copy[a.first_operand + 2], "ann");
}

Test(cli, dashdash_ends_the_options) {
    pd_cli_args a;
    const char *argv[] = {"tool", "say", "--", "--json"};
    cr_assert_eq(parse(&a, 4, argv), PD_OK, "%s", err);
    cr_expect_eq(a.nhits, 0u);
    cr_expect(a.dashdash);
    cr_expect_eq(a.first_operand, 2);
}

static const struct {
    const char *argv[4];
    int argc;
    const char *want;
} bad[] = {
    {{"tool", "--serv", "x"}, 3, "--serv: unknown option (did you mean --server?"},
    {{"tool", "--bogus=1"}, 2, "--bogus: unknown option"},
    {{"tool", "-x"}, 2, "-x: unknown option"},
    {{"tool", "--server"}, 2, "--server: missing value"},
    {{"tool", "--server", "--json"}, 3, "--server: missing value"},
    {{"tool", "--json=yes"}, 2, "--json: takes no value"},
};

Test(cli, errors_name_the_option) {
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pd_cli_args a;
        cr_expect_eq(parse(&a, bad[i].argc, bad[i].argv), PD_ECONFIG, "case %zu accepted", i);
        cr_expect(strstr(err, bad[i].want) == err, "case %zu: '%s' is not '%s'", i, err,
                  bad[i].want);
    }
    /* After an error the rest is still read: --help is found. */
    pd_cli_args a;
    const char *argv[] = {"tool", "--bogus", "-h"};
    cr_expect_eq(parse(&a, 3, argv), PD_ECONFIG);
    cr_expect(pd_cli_has(&cli, &a, "help"));
    /* "--server --json": the option after the missing value is still read. */
    const char *argv2[] = {"tool", "--server", "--json"};
    cr_expect_eq(parse(&a, 3, argv2), PD_ECONFIG);
    cr_expect(pd_cli_has(&cli, &a, "json"));
}

Test(cli, options_of_another_command_are_refused) {
    pd_cli_args a;
    const char *argv[] = {"tool", "get", "bob", "--emoji", "x"};
    cr_assert_eq(parse(&a, 5, argv), PD_OK, "%s", err);
    cr_expect_eq(pd_cli_check_scope(&cli, &a, &cmds[C_GET], err, sizeof err), PD_ECONFIG);
    cr_expect_str_eq(err, "--emoji: not an option of 'get' (see tool get --help)");
    cr_expect_eq(pd_cli_check_scope(&cli, &a, &cmds[C_SAY], err, sizeof err), PD_OK, "%s", err);
    cr_expect_eq(pd_cli_find_cmd(&cli, "say"), &cmds[C_SAY]);
    cr_expect_null(pd_cli_find_cmd(&cli, "sa"));
}

static void write_mem(void *ud, const char *text, size_t n) {
    fwrite(text, 1, n, ud);
}

static char *render(int what, const pd_cli_cmd *cmd) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert(f != NULL);
    pd_cli_out out = {write_mem, f};
    if (what == 0) pd_cli_usage(&out, &cli, cmd);
    else if (what == 1) pd_cli_man(&out, &cli, "9.9");
    else pd_cli_bash(&out, &cli);
    fclose(f);
    return buf;
}

Test(cli, help_man_and_completion_from_the_table) {
    char *all = render(0, NULL), *get = render(0, &cmds[C_GET]);
    cr_expect(strstr(all, "--emoji E") && strstr(all, "say TEXT") &&
              strstr(all, "(X_URL, default nats://h)"), "%s", all);
    cr_expect(strstr(get, "usage: tool [options] get USER...") && strstr(get, "--server URL") &&
              strstr(get, "--emoji") == NULL, "%s", get);
    char *man = render(1, NULL);
    cr_expect(strstr(man, ".TH TOOL 1") && strstr(man, "\\fB\\-\\-emoji\\fR \\fIE\\fR") &&
              strstr(man, "Commands: say.") && strstr(man, "Environment: \\fBX_URL\\fR"), "%s",
              man);
    char *bash = render(2, NULL);
    cr_expect(strstr(bash, "complete -F _tool tool") && strstr(bash, "--creds) COMPREPLY") &&
              strstr(bash, "say) opts=\" --server --json --emoji --creds --help\""), "%s", bash);
    cr_expect(strstr(bash, "get) opts=\" --server --json --creds --help\""), "%s", bash);
    free(all), free(get), free(man), free(bash);
}

/* test_config.c - settings: defaults, environment, flags, derived defaults,
 * every kind of bad value, help text and the start-log line.
 *
 * Tests pass their own envp so that the runner's environment cannot leak
 * in; Criterion runs each test in its own process, so the one test that
 * uses setenv cannot disturb the others. */
#include "base/config.h"
#include "base/log.h"
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MS_MAX_STR "4294967295000"

static char err[256];

static void to_file(void *ud, const char *text, size_t n) {
    fwrite(text, 1, n, ud);
}

/* Count a NULL-terminated argv and load. */
static pd_status load(pd_config *c, char **envp, char **argv) {
    int argc = 0;
    while (argv[argc] != NULL) argc++;
    memset(err, 0, sizeof err);
    return pd_config_load(c, argc, argv, envp, err, sizeof err);
}

/* Load with one variable kv (or none) plus a node id; like getenv, the
 * first of two entries for one variable wins, so kv may override it. */
static pd_status load_env1(pd_config *c, const char *kv) {
    char *envp[] = {(char *)kv, "PRESENCE_NODE_ID=n1", NULL};
    char *argv[] = {"presenced", NULL};
    return load(c, kv != NULL ? envp : envp + 1, argv);
}

Test(config, defaults_match_protocol_table) {
    pd_config c;
    memset(&c, 0x5a, sizeof c);
    pd_config_defaults(&c);
    cr_expect_eq(c.idle_timeout_ms, 300000);
    cr_expect_eq(c.offline_delay_ms, 30000);
    cr_expect_eq(c.sync_interval_ms, 5000);
    cr_expect_eq(c.node_timeout_ms, 15000);
    cr_expect_eq(c.suspicion_ms, 10000);
    cr_expect_eq(c.server_timeout_ms, 15000);
    cr_expect_eq(c.snapshot_interval_ms, 30000);
    cr_expect_eq(c.max_msg_bytes, 1048576);
    cr_expect_str_eq(c.nats_url, "nats://127.0.0.1:4222");
    cr_expect_str_eq(c.redis_url, "redis://127.0.0.1:6379");
    cr_expect_str_eq(c.subject_prefix, "presence");
    cr_expect_eq(c.log_level, PD_LOG_INFO);
    cr_expect_not(c.help);
    cr_expect_not(c.version);
    cr_expect(c.node_id[0] == '\0' || pd_id_valid(c.node_id, strlen(c.node_id)));
}

Test(config, empty_sources_give_defaults) {
    pd_config c, d;
    cr_assert_eq(load_env1(&c, NULL), PD_OK, "%s", err);
    pd_config_defaults(&d);
    cr_expect_eq(c.idle_timeout_ms, d.idle_timeout_ms);
    cr_expect_eq(c.node_timeout_ms, d.node_timeout_ms);
    cr_expect_eq(c.max_msg_bytes, d.max_msg_bytes);
    cr_expect_str_eq(c.nats_url, d.nats_url);
    cr_expect_str_eq(c.node_id, "n1");
    cr_expect_str_eq(err, "");
}

Test(config, every_env_var_parsed) {
    char *envp[] = {
        "PRESENCE_IDLE_TIMEOUT_MS=1001", "PRESENCE_OFFLINE_DELAY_MS=0",
        "PRESENCE_SYNC_INTERVAL_MS=1003", "PRESENCE_NODE_TIMEOUT_MS=1004",
        "PRESENCE_SERVER_TIMEOUT_MS=1005",
        "PRESENCE_SNAPSHOT_INTERVAL_MS=1006", "PRESENCE_NODE_ID=node-7",
        "PRESENCE_NATS_URL=nats://a:1,tls://b:2",
        "PRESENCE_REDIS_URL=redis://r:7", "PRESENCE_SUBJECT_PREFIX=acme.pres",
        "PRESENCE_LOG_LEVEL=debug", "PRESENCE_MAX_MSG_BYTES=64",
        "OTHER=ignored", NULL};
    char *argv[] = {"presenced", NULL};
    pd_config c;
    cr_assert_eq(load(&c, envp, argv), PD_OK, "%s", err);
    cr_expect_eq(c.idle_timeout_ms, 1001);
    cr_expect_eq(c.offline_delay_ms, 0);
    cr_expect_eq(c.sync_interval_ms, 1003);
    cr_expect_eq(c.node_timeout_ms, 1004);
    cr_expect_eq(c.server_timeout_ms, 1005);
    cr_expect_eq(c.snapshot_interval_ms, 1006);
    cr_expect_str_eq(c.node_id, "node-7");
    cr_expect_str_eq(c.nats_url, "nats://a:1,tls://b:2");
    cr_expect_str_eq(c.redis_url, "redis://r:7");
    cr_expect_str_eq(c.subject_prefix, "acme.pres");
    cr_expect_eq(c.log_level, PD_LOG_DEBUG);
    cr_expect_eq(c.max_msg_bytes, 64);
}

Test(config, every_flag_parsed) {
    char *envp[] = {NULL};
    char *argv[] = {"presenced", "--idle-timeout-ms", "2001",
        "--offline-delay-ms", "2002", "--sync-interval-ms", "2003",
        "--node-timeout-ms", "2004", "--server-timeout-ms", "2005",
        "--snapshot-interval-ms", "2006", "--node-id", "n-2",
        "--nats-url", "tls://x:4443", "--redis-url", "redis://y",
        "--subject-prefix", "p2", "--log-level", "error",
        "--max-msg-bytes", "67108864", NULL};
    pd_config c;
    cr_assert_eq(load(&c, envp, argv), PD_OK, "%s", err);
    cr_expect_eq(c.idle_timeout_ms, 2001);
    cr_expect_eq(c.offline_delay_ms, 2002);
    cr_expect_eq(c.sync_interval_ms, 2003);
    cr_expect_eq(c.node_timeout_ms, 2004);
    cr_expect_eq(c.server_timeout_ms, 2005);
    cr_expect_eq(c.snapshot_interval_ms, 2006);
    cr_expect_str_eq(c.node_id, "n-2");
    cr_expect_str_eq(c.nats_url, "tls://x:4443");
    cr_expect_str_eq(c.redis_url, "redis://y");
    cr_expect_str_eq(c.subject_prefix, "p2");
    cr_expect_eq(c.log_level, PD_LOG_ERROR);
    cr_expect_eq(c.max_msg_bytes, 67108864);
}

Test(config, flags_override_env) {
    char *envp[] = {"PRESENCE_NODE_ID=from-env", "PRESENCE_IDLE_TIMEOUT_MS=111",
                    "PRESENCE_OFFLINE_DELAY_MS=222", NULL};
    char *argv[] = {"presenced", "--node-id", "from-flag",
                    "--idle-timeout-ms", "333", NULL};
    pd_config c;
    cr_assert_eq(load(&c, envp, argv), PD_OK, "%s", err);
    cr_expect_str_eq(c.node_id, "from-flag");
    cr_expect_eq(c.idle_timeout_ms, 333);
    cr_expect_eq(c.offline_delay_ms, 222, "env still applies where no flag");
}

Test(config, flag_equals_form) {
    char *envp[] = {"PRESENCE_IDLE_TIMEOUT_MS=5", NULL};
    char *argv[] = {"presenced", "--idle-timeout-ms=444", "--node-id=eq.node",
                    "--nats-url=nats://h:1,nats://h:2", NULL};
    pd_config c;
    cr_assert_eq(load(&c, envp, argv), PD_OK, "%s", err);
    cr_expect_eq(c.idle_timeout_ms, 444);
    cr_expect_str_eq(c.node_id, "eq.node");
    cr_expect_str_eq(c.nats_url, "nats://h:1,nats://h:2");
}

Test(config, last_flag_wins_and_numbers_edge_values) {
    char *envp[] = {"PRESENCE_NODE_ID=n", "PRESENCE_LOG_LEVEL=WARN", NULL};
    char *argv[] = {"presenced", "--idle-timeout-ms", "1", "--idle-timeout-ms",
                    "007", "--snapshot-interval-ms", MS_MAX_STR, NULL};
    pd_config c;
    cr_assert_eq(load(&c, envp, argv), PD_OK, "%s", err);
    cr_expect_eq(c.idle_timeout_ms, 7);
    cr_expect_eq(c.snapshot_interval_ms, 4294967295000ULL);
    cr_expect_eq(c.log_level, PD_LOG_WARN, "level names are case-insensitive");
}

Test(config, exact_message_for_non_number) {
    pd_config c;
    cr_assert_eq(load_env1(&c, "PRESENCE_IDLE_TIMEOUT_MS=abc"), PD_ECONFIG);
    cr_expect_str_eq(err, "PRESENCE_IDLE_TIMEOUT_MS: 'abc' is not a whole "
                          "number of milliseconds");
}

struct bad_env { const char *kv; const char *name; };

static const struct bad_env bad_envs[] = {
    {"PRESENCE_IDLE_TIMEOUT_MS=abc", "PRESENCE_IDLE_TIMEOUT_MS"},
    {"PRESENCE_IDLE_TIMEOUT_MS=-5", "PRESENCE_IDLE_TIMEOUT_MS"},
    {"PRESENCE_IDLE_TIMEOUT_MS=+5", "PRESENCE_IDLE_TIMEOUT_MS"},
    {"PRESENCE_IDLE_TIMEOUT_MS=10ms", "PRESENCE_IDLE_TIMEOUT_MS"},
    {"PRESENCE_IDLE_TIMEOUT_MS= 10", "PRESENCE_IDLE_TIMEOUT_MS"},
    {"PRESENCE_IDLE_TIMEOUT_MS=10 ", "PRESENCE_IDLE_TIMEOUT_MS"},
    {"PRESENCE_IDLE_TIMEOUT_MS=1.5", "PRESENCE_IDLE_TIMEOUT_MS"},
    {"PRESENCE_IDLE_TIMEOUT_MS=", "PRESENCE_IDLE_TIMEOUT_MS"},
    {"PRESENCE_IDLE_TIMEOUT_MS=0", "PRESENCE_IDLE_TIMEOUT_MS"},
    {"PRESENCE_IDLE_TIMEOUT_MS=4294967295001", "PRESENCE_IDLE_TIMEOUT_MS"},
    {"PRESENCE_IDLE_TIMEOUT_MS=18446744073709551616", "PRESENCE_IDLE_TIMEOUT_MS"},
    {"PRESENCE_IDLE_TIMEOUT_MS=99999999999999999999999999", "PRESENCE_IDLE_TIMEOUT_MS"},
    {"PRESENCE_OFFLINE_DELAY_MS=-1", "PRESENCE_OFFLINE_DELAY_MS"},
    {"PRESENCE_SYNC_INTERVAL_MS=0", "PRESENCE_SYNC_INTERVAL_MS"},
    {"PRESENCE_NODE_TIMEOUT_MS=0", "PRESENCE_NODE_TIMEOUT_MS"},
    {"PRESENCE_SUSPICION_MS=-1", "PRESENCE_SUSPICION_MS"},
    {"PRESENCE_SUSPICION_MS=4294967295001", "PRESENCE_SUSPICION_MS"},
    {"PRESENCE_SERVER_TIMEOUT_MS=x", "PRESENCE_SERVER_TIMEOUT_MS"},
    {"PRESENCE_SNAPSHOT_INTERVAL_MS=0", "PRESENCE_SNAPSHOT_INTERVAL_MS"},
    {"PRESENCE_MAX_MSG_BYTES=63", "PRESENCE_MAX_MSG_BYTES"},
    {"PRESENCE_MAX_MSG_BYTES=67108865", "PRESENCE_MAX_MSG_BYTES"},
    {"PRESENCE_MAX_MSG_BYTES=1MB", "PRESENCE_MAX_MSG_BYTES"},
    {"PRESENCE_NODE_ID=a..b", "PRESENCE_NODE_ID"},
    {"PRESENCE_NODE_ID=.a", "PRESENCE_NODE_ID"},
    {"PRESENCE_NODE_ID=a b", "PRESENCE_NODE_ID"},
    {"PRESENCE_NODE_ID=a*", "PRESENCE_NODE_ID"},
    {"PRESENCE_NODE_ID=", "PRESENCE_NODE_ID"},
    {"PRESENCE_SUBJECT_PREFIX=presence.*", "PRESENCE_SUBJECT_PREFIX"},
    {"PRESENCE_SUBJECT_PREFIX=a.>", "PRESENCE_SUBJECT_PREFIX"},
    {"PRESENCE_SUBJECT_PREFIX=presence.", "PRESENCE_SUBJECT_PREFIX"},
    {"PRESENCE_SUBJECT_PREFIX=", "PRESENCE_SUBJECT_PREFIX"},
    {"PRESENCE_NATS_URL=http://x:4222", "PRESENCE_NATS_URL"},
    {"PRESENCE_NATS_URL=", "PRESENCE_NATS_URL"},
    {"PRESENCE_NATS_URL=nats://", "PRESENCE_NATS_URL"},
    {"PRESENCE_NATS_URL=nats://a,,nats://b", "PRESENCE_NATS_URL"},
    {"PRESENCE_NATS_URL=nats://a,", "PRESENCE_NATS_URL"},
    {"PRESENCE_NATS_URL=nats://a, nats://b", "PRESENCE_NATS_URL"},
    {"PRESENCE_NATS_URL=127.0.0.1:4222", "PRESENCE_NATS_URL"},
    {"PRESENCE_REDIS_URL=http://x", "PRESENCE_REDIS_URL"},
    {"PRESENCE_REDIS_URL=redis://", "PRESENCE_REDIS_URL"},
    {"PRESENCE_REDIS_URL=", "PRESENCE_REDIS_URL"},
    {"PRESENCE_LOG_LEVEL=verbose", "PRESENCE_LOG_LEVEL"},
    {"PRESENCE_LOG_LEVEL=", "PRESENCE_LOG_LEVEL"},
};

Test(config, bad_env_values_name_the_variable) {
    for (size_t i = 0; i < sizeof bad_envs / sizeof bad_envs[0]; i++) {
        pd_config c;
        pd_status s = load_env1(&c, bad_envs[i].kv);
        cr_expect_eq(s, PD_ECONFIG, "'%s' was accepted", bad_envs[i].kv);
        cr_expect(strncmp(err, bad_envs[i].name, strlen(bad_envs[i].name)) == 0,
                  "'%s' gave message '%s'", bad_envs[i].kv, err);
    }
}

Test(config, too_long_node_id_is_rejected) {
    char kv[256] = "PRESENCE_NODE_ID=";
    memset(kv + strlen(kv), 'a', 129);
    pd_config c;
    cr_assert_eq(load_env1(&c, kv), PD_ECONFIG);
    cr_expect(strstr(err, "PRESENCE_NODE_ID") != NULL, "%s", err);
}

struct bad_flags { const char *argv[4]; const char *needle; };

static const struct bad_flags bad_flag_cases[] = {
    {{"--idle-timeout-ms", "abc"}, "--idle-timeout-ms: 'abc' is not a whole"},
    {{"--idle-timeout-ms=-1"}, "--idle-timeout-ms"},
    {{"--max-msg-bytes", "10"}, "--max-msg-bytes: 10 is below the minimum 64"},
    {{"--node-id", "a..b"}, "--node-id: 'a..b' is not a valid id"},
    {{"--node-id="}, "--node-id"},
    {{"--nats-url", "redis://x"}, "--nats-url"},
    {{"--redis-url", "nats://x"}, "--redis-url"},
    {{"--log-level", "loud"}, "--log-level"},
    {{"--bogus", "1"}, "--bogus: unknown option"},
    {{"--bogus=1"}, "--bogus: unknown option"},
    {{"--idle-timeout-ms"}, "--idle-timeout-ms: missing value"},
    {{"--idle-timeout-ms", "--sync-interval-ms", "5"},
     "--idle-timeout-ms: missing value"},
    {{"stray"}, "'stray': unexpected argument"},
    {{"-x"}, "-x: unknown option"},
    {{"--idle-timeout", "5"}, "--idle-timeout: unknown option (did you mean --idle-timeout-ms?"},
    {{"--version=1"}, "--version: takes no value"},
    {{"--node-id", "n2", "extra"}, "'extra': unexpected argument"},
    {{"--"}, "'--': unexpected argument"},
    {{"--IDLE-TIMEOUT-MS", "5"}, "--IDLE-TIMEOUT-MS: unknown option"},
};

Test(config, bad_flags_name_the_flag) {
    for (size_t i = 0; i < sizeof bad_flag_cases / sizeof bad_flag_cases[0]; i++) {
        const struct bad_flags *b = &bad_flag_cases[i];
        char *envp[] = {"PRESENCE_NODE_ID=n1", NULL};
        char *argv[5] = {"presenced"};
        for (int k = 0; k < 4 && b->argv[k] != NULL; k++)
            argv[k + 1] = (char *)b->argv[k];
        pd_config c;
        cr_expect_eq(load(&c, envp, argv), PD_ECONFIG, "case %zu accepted", i);
        cr_expect(strstr(err, b->needle) != NULL, "case %zu: '%s' lacks '%s'",
                  i, err, b->needle);
    }
}

Test(config, bad_env_is_an_error_even_if_a_flag_overrides_it) {
    char *envp[] = {"PRESENCE_NODE_ID=n1", "PRESENCE_IDLE_TIMEOUT_MS=oops", NULL};
    char *argv[] = {"presenced", "--idle-timeout-ms", "10", NULL};
    pd_config c;
    cr_expect_eq(load(&c, envp, argv), PD_ECONFIG);
    cr_expect(strstr(err, "PRESENCE_IDLE_TIMEOUT_MS") != NULL, "%s", err);
}

Test(config, timeouts_default_to_three_sync_intervals) {
    pd_config c;
    cr_assert_eq(load_env1(&c, "PRESENCE_SYNC_INTERVAL_MS=1000"), PD_OK, "%s", err);
    cr_expect_eq(c.node_timeout_ms, 3000);
    cr_expect_eq(c.server_timeout_ms, 3000);

    char *envp[] = {"PRESENCE_NODE_ID=n1", "PRESENCE_SYNC_INTERVAL_MS=1000", NULL};
    char *argv[] = {"presenced", "--sync-interval-ms=2000", NULL};
    cr_assert_eq(load(&c, envp, argv), PD_OK, "%s", err);
    cr_expect_eq(c.node_timeout_ms, 6000, "derived from the final (flag) value");
    cr_expect_eq(c.server_timeout_ms, 6000);
    cr_expect_eq(c.suspicion_ms, 4000, "two sync intervals");
}

Test(config, suspicion_set_or_off) {
    pd_config c;
    cr_assert_eq(load_env1(&c, "PRESENCE_SUSPICION_MS=0"), PD_OK, "%s", err);
    cr_expect_eq(c.suspicion_ms, 0, "0: down at the node timeout");
    char *envp[] = {"PRESENCE_NODE_ID=n1", NULL};
    char *argv[] = {"presenced", "--suspicion-ms", "2500", "--sync-interval-ms", "100", NULL};
    cr_assert_eq(load(&c, envp, argv), PD_OK, "%s", err);
    cr_expect_eq(c.suspicion_ms, 2500, "explicit wins over the derived default");
}

Test(config, explicit_timeouts_win_over_derived) {
    char *envp[] = {"PRESENCE_NODE_ID=n1", "PRESENCE_NODE_TIMEOUT_MS=7000", NULL};
    char *argv[] = {"presenced", "--sync-interval-ms", "100",
                    "--server-timeout-ms", "9000", NULL};
    pd_config c;
    cr_assert_eq(load(&c, envp, argv), PD_OK, "%s", err);
    cr_expect_eq(c.node_timeout_ms, 7000);
    cr_expect_eq(c.server_timeout_ms, 9000);
    cr_expect_eq(c.sync_interval_ms, 100);
}

Test(config, derived_timeout_is_capped_at_the_maximum) {
    pd_config c;
    cr_assert_eq(load_env1(&c, "PRESENCE_SYNC_INTERVAL_MS=" MS_MAX_STR), PD_OK,
                 "%s", err);
    cr_expect_eq(c.node_timeout_ms, 4294967295000ULL);
    cr_expect_eq(c.server_timeout_ms, 4294967295000ULL);
    cr_expect_eq(c.suspicion_ms, 4294967295000ULL);
}

Test(config, node_id_defaults_to_a_valid_host_name) {
    char host[256] = "";
    cr_assert_eq(gethostname(host, sizeof host), 0);
    char *envp[] = {NULL};
    char *argv[] = {"presenced", NULL};
    pd_config c;
    pd_status s = load(&c, envp, argv);
    if (pd_id_valid(host, strlen(host))) {
        cr_assert_eq(s, PD_OK, "%s", err);
        cr_expect_str_eq(c.node_id, host);
    } else {
        cr_assert_eq(s, PD_ECONFIG);
        cr_expect(strstr(err, "set PRESENCE_NODE_ID") != NULL, "%s", err);
    }
}

Test(config, null_envp_reads_the_process_environment) {
    cr_assert_eq(setenv("PRESENCE_NODE_ID", "env-node", 1), 0);
    cr_assert_eq(setenv("PRESENCE_OFFLINE_DELAY_MS", "42", 1), 0);
    char *argv[] = {"presenced", NULL};
    pd_config c;
    cr_assert_eq(load(&c, NULL, argv), PD_OK, "%s", err);
    cr_expect_str_eq(c.node_id, "env-node");
    cr_expect_eq(c.offline_delay_ms, 42);
    cr_assert_eq(setenv("PRESENCE_OFFLINE_DELAY_MS", "x", 1), 0);
    cr_expect_eq(load(&c, NULL, argv), PD_ECONFIG);
}

Test(config, help_and_version_are_flags_not_errors) {
    char *envp[] = {"PRESENCE_IDLE_TIMEOUT_MS=bad", NULL};
    char *a1[] = {"presenced", "--help", NULL};
    char *a2[] = {"presenced", "--bogus", "-h", NULL};
    char *a3[] = {"presenced", "--node-id", "n", "--version", NULL};
    pd_config c;
    cr_expect_eq(load(&c, envp, a1), PD_OK);
    cr_expect(c.help);
    cr_expect_not(c.version);
    cr_expect_eq(load(&c, envp, a2), PD_OK);
    cr_expect(c.help);
    cr_expect_eq(load(&c, envp, a3), PD_OK);
    cr_expect(c.version);
    cr_expect_not(c.help);
}

Test(config, help_as_a_flag_value_is_not_help) {
    char *envp[] = {NULL};
    char *argv[] = {"presenced", "--node-id=-h", NULL};
    pd_config c;
    cr_assert_eq(load(&c, envp, argv), PD_OK, "%s", err);
    cr_expect_not(c.help);
    cr_expect_str_eq(c.node_id, "-h");
}

Test(config, small_or_null_error_buffer_is_safe) {
    char *envp[] = {"PRESENCE_NODE_ID=a..b", NULL};
    char *argv[] = {"presenced", NULL};
    char small[10];
    memset(small, 'X', sizeof small);
    pd_config c;
    cr_expect_eq(pd_config_load(&c, 1, argv, envp, small, sizeof small), PD_ECONFIG);
    cr_expect_str_eq(small, "PRESENCE_");
    cr_expect_eq(pd_config_load(&c, 1, argv, envp, NULL, 0), PD_ECONFIG);
}

static const char *const all_vars[] = {
    "PRESENCE_IDLE_TIMEOUT_MS", "PRESENCE_OFFLINE_DELAY_MS",
    "PRESENCE_SYNC_INTERVAL_MS", "PRESENCE_NODE_TIMEOUT_MS",
    "PRESENCE_SERVER_TIMEOUT_MS", "PRESENCE_SNAPSHOT_INTERVAL_MS",
    "PRESENCE_NODE_ID", "PRESENCE_NATS_URL", "PRESENCE_REDIS_URL",
    "PRESENCE_SUBJECT_PREFIX", "PRESENCE_LOG_LEVEL", "PRESENCE_MAX_MSG_BYTES",
};

Test(config, usage_lists_every_setting) {
    char *text = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&text, &n);
    cr_assert_not_null(f);
    pd_config_usage(&(pd_cli_out){to_file, f}, "presenced");
    fclose(f);
    cr_expect(strstr(text, "Usage: presenced") != NULL);
    cr_expect(strstr(text, "--help") != NULL);
    cr_expect(strstr(text, "--version") != NULL);
    for (size_t i = 0; i < sizeof all_vars / sizeof all_vars[0]; i++) {
        const char *line = strstr(text, all_vars[i]);
        cr_expect_not_null(line, "%s missing", all_vars[i]);
    }
    const char *rows[] = {
        "--idle-timeout-ms MS", "PRESENCE_IDLE_TIMEOUT_MS", "300000",
        "--node-timeout-ms MS", "3 x sync interval",
        "--nats-url URLS", "nats://127.0.0.1:4222",
        "--max-msg-bytes BYTES", "1048576", "--node-id ID", "host name",
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        cr_expect(strstr(text, rows[i]) != NULL, "'%s' missing", rows[i]);
    cr_expect(strstr(text, "PRESENCE_") != NULL);
    free(text);
}

Test(config, every_usage_flag_is_accepted) {
    /* Each "--x-y" in the help text must load, so the two cannot drift. */
    char *text = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&text, &n);
    pd_config_usage(&(pd_cli_out){to_file, f}, NULL);
    fclose(f);
    int seen = 0;
    for (char *p = strstr(text, "\n  --"); p != NULL; p = strstr(p + 1, "\n  --")) {
        char flag[64];
        if (sscanf(p + 3, "%63s", flag) != 1) continue;
        if (strcmp(flag, "--version") == 0) continue;
        char val[] = "64";
        char *argv[] = {"presenced", flag, val, NULL};
        char *envp[] = {NULL};
        pd_config c;
        pd_status s = load(&c, envp, argv);
        cr_expect(s == PD_OK || strstr(err, flag) == err,
                  "%s: unexpected '%s'", flag, err);
        cr_expect(strstr(err, "unknown option") == NULL, "%s unknown", flag);
        seen++;
    }
    cr_expect_eq(seen, 41, "%d flags in the help", seen);
    free(text);
}

Test(config, describe_is_one_line_without_secrets) {
    char *envp[] = {"PRESENCE_NODE_ID=n9",
                    "PRESENCE_NATS_URL=nats://u:secret@h1:4222,nats://h2:4222",
                    "PRESENCE_REDIS_URL=redis://:pw@r:6379/0", NULL};
    char *argv[] = {"presenced", NULL};
    pd_config c;
    cr_assert_eq(load(&c, envp, argv), PD_OK, "%s", err);
    char line[1024];
    pd_config_describe(&c, line, sizeof line);
    cr_expect(strstr(line, "node=n9 ") == line, "%s", line);
    cr_expect(strstr(line, "nats=nats://***@h1:4222,nats://h2:4222 ") != NULL, "%s", line);
    cr_expect(strstr(line, "redis=redis://***@r:6379/0 ") != NULL, "%s", line);
    cr_expect(strstr(line, "idle=300000ms") != NULL, "%s", line);
    cr_expect(strstr(line, "node_timeout=15000ms") != NULL, "%s", line);
    cr_expect(strstr(line, "log=info") != NULL, "%s", line);
    cr_expect(strstr(line, "secret") == NULL && strstr(line, "pw") == NULL);
    cr_expect(strchr(line, '\n') == NULL);
    char tiny[8];
    pd_config_describe(&c, tiny, sizeof tiny);
    cr_expect_str_eq(tiny, "node=n9");
}

/* ---- limits (PRESENCE_MAX_DEVICES_PER_USER, _USERS_PER_NODE, _QUERY_USERS,
 * PRESENCE_NOTIFY_MIN_INTERVAL_MS) ---------------------------------------- */

Test(config, limits_defaults) {
    pd_config c;
    pd_config_defaults(&c);
    cr_expect_eq(c.max_devices_per_user, 100);
    cr_expect_eq(c.max_users_per_node, 5000000);
    cr_expect_eq(c.max_query_users, 1000);
    cr_expect_eq(c.notify_min_interval_ms, 100);
    cr_expect_eq(c.max_batch, 1000);
    cr_expect_eq(c.sync_parts_timeout_ms, 30000);
}

Test(config, limits_from_env_and_flags) {
    pd_config c;
    char *envp[] = {"PRESENCE_MAX_DEVICES_PER_USER=3", "PRESENCE_MAX_USERS_PER_NODE=10",
                    "PRESENCE_MAX_QUERY_USERS=5", "PRESENCE_NOTIFY_MIN_INTERVAL_MS=0",
                    "PRESENCE_MAX_BATCH=20", "PRESENCE_SYNC_PARTS_TIMEOUT_MS=500",
                    "PRESENCE_NODE_ID=n1", NULL};
    char *argv[] = {"presenced", "--max-query-users", "7", "--notify-min-interval-ms=250", NULL};
    cr_assert_eq(load(&c, envp, argv), PD_OK, "%s", err);
    cr_expect_eq(c.max_devices_per_user, 3);
    cr_expect_eq(c.max_users_per_node, 10);
    cr_expect_eq(c.max_query_users, 7, "the flag wins");
    cr_expect_eq(c.notify_min_interval_ms, 250);
    char line[2048];
    pd_config_describe(&c, line, sizeof line);
    cr_expect(strstr(line, "max_devices_per_user=3") != NULL, "%s", line);
    cr_expect(strstr(line, "notify_interval=250ms") != NULL, "%s", line);
    cr_expect(strstr(line, "activity_resolution=30000ms") != NULL, "%s", line);
    cr_expect(strstr(line, "user_retention=2592000000ms") != NULL, "%s", line);
    cr_expect_eq(c.max_batch, 20);
    cr_expect_eq(c.sync_parts_timeout_ms, 500);
    cr_expect(strstr(line, "max_batch=20 sync_parts_timeout=500ms") != NULL, "%s", line);
}

Test(config, limits_bounds_are_refused_by_name) {
    static const struct {
        const char *kv, *says;
    } bad[] = {
        {"PRESENCE_MAX_DEVICES_PER_USER=0", "below the minimum 1"},
        {"PRESENCE_MAX_DEVICES_PER_USER=1000001", "above the maximum 1000000"},
        {"PRESENCE_MAX_DEVICES_PER_USER=ten", "not a whole number"},
        {"PRESENCE_MAX_USERS_PER_NODE=0", "below the minimum 1"},
        {"PRESENCE_MAX_USERS_PER_NODE=-5", "not a whole number"},
        {"PRESENCE_MAX_QUERY_USERS=0", "below the minimum 1"},
        {"PRESENCE_MAX_QUERY_USERS=1001", "above the maximum 1000"},
        {"PRESENCE_NOTIFY_MIN_INTERVAL_MS=60001", "above the maximum 60000"},
        {"PRESENCE_NOTIFY_MIN_INTERVAL_MS=1.5", "not a whole number"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pd_config c;
        cr_expect_eq(load_env1(&c, bad[i].kv), PD_ECONFIG, "%s accepted", bad[i].kv);
        size_t name_n = (size_t)(strchr(bad[i].kv, '=') - bad[i].kv);
        cr_expect(strncmp(err, bad[i].kv, name_n) == 0, "%s: message '%s'", bad[i].kv, err);
        cr_expect(strstr(err, bad[i].says) != NULL, "%s: message '%s'", bad[i].kv, err);
    }
    pd_config c;
    cr_expect_eq(load_env1(&c, "PRESENCE_MAX_QUERY_USERS=1000"), PD_OK, "%s", err);
    cr_expect_eq(load_env1(&c, "PRESENCE_NOTIFY_MIN_INTERVAL_MS=0"), PD_OK, "%s", err);
    cr_expect_eq(c.notify_min_interval_ms, 0);
}

Test(config, limits_in_help) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert_not_null(f);
    pd_config_usage(&(pd_cli_out){to_file, f}, "presenced");
    fclose(f);
    static const char *const want[] = {
        "--max-devices-per-user N", "PRESENCE_MAX_DEVICES_PER_USER", "--max-users-per-node N",
        "--max-query-users N", "--notify-min-interval-ms MS", "PRESENCE_NOTIFY_MIN_INTERVAL_MS",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_expect(strstr(buf, want[i]) != NULL, "help lacks %s", want[i]);
    free(buf);
}

/* ---- credentials: NATS and Redis (issue 7) ---------------------------------------- */

/* A readable temp file; the path goes to buf. */
static void temp_file(char *buf, size_t cap, const char *content) {
    snprintf(buf, cap, "/tmp/pd-cfg-XXXXXX");
    int fd = mkstemp(buf);
    cr_assert(fd >= 0);
    cr_assert(write(fd, content, strlen(content)) == (ssize_t)strlen(content));
    close(fd);
}

/* Loads envp (NULL-terminated, node id added) and argv extras; returns the status. */
static pd_status load_auth(pd_config *c, const char *const *env, const char *const *args) {
    char *envp[16], *argv[16];
    int k = 0, a = 0;
    envp[k++] = "PRESENCE_NODE_ID=n1";
    for (; env && *env && k < 15; env++) envp[k++] = (char *)*env;
    envp[k] = NULL;
    argv[a++] = "presenced";
    for (; args && *args && a < 15; args++) argv[a++] = (char *)*args;
    argv[a] = NULL;
    return load(c, envp, argv);
}

Test(config_auth, every_credential_setting_parsed) {
    char seed[64], creds[64], ca[64], cert[64], key[64];
    temp_file(seed, sizeof seed, "SUAAA\n");
    temp_file(creds, sizeof creds, "jwt\n");
    temp_file(ca, sizeof ca, "ca\n");
    temp_file(cert, sizeof cert, "cert\n");
    temp_file(key, sizeof key, "key\n");
    char e_ca[128], e_cert[128], e_key[128], e_seed[128];
    snprintf(e_ca, sizeof e_ca, "PRESENCE_NATS_TLS_CA=%s", ca);
    snprintf(e_cert, sizeof e_cert, "PRESENCE_NATS_TLS_CERT=%s", cert);
    snprintf(e_key, sizeof e_key, "PRESENCE_NATS_TLS_KEY=%s", key);
    snprintf(e_seed, sizeof e_seed, "PRESENCE_NATS_NKEY_SEED_FILE=%s", seed);
    const char *env[] = {"PRESENCE_NATS_USER=node-n1", "PRESENCE_NATS_PASSWORD=s3cr3t!",
                         e_ca, e_cert, e_key, "PRESENCE_REDIS_USER=presence",
                         "PRESENCE_REDIS_PASSWORD=rpw", NULL};
    pd_config c;
    cr_assert_eq(load_auth(&c, env, NULL), PD_OK, "%s", err);
    cr_expect_str_eq(c.nats_user, "node-n1");
    cr_expect_str_eq(c.nats_password, "s3cr3t!");
    cr_expect_str_eq(c.nats_tls_ca, ca);
    cr_expect_str_eq(c.nats_tls_cert, cert);
    cr_expect_str_eq(c.nats_tls_key, key);
    cr_expect_str_eq(c.redis_user, "presence");
    cr_expect_str_eq(c.redis_password, "rpw");
    cr_expect_str_eq(c.nats_token, "");
    /* The other identities, one at a time, as flags. */
    const char *a1[] = {"--nats-nkey-seed-file", seed, NULL};
    cr_assert_eq(load_auth(&c, NULL, a1), PD_OK, "%s", err);
    cr_expect_str_eq(c.nats_nkey_seed_file, seed);
    const char *a2[] = {"--nats-creds-file", creds, NULL};
    cr_assert_eq(load_auth(&c, NULL, a2), PD_OK, "%s", err);
    cr_expect_str_eq(c.nats_creds_file, creds);
    const char *a3[] = {"--nats-token=tok", NULL};
    cr_assert_eq(load_auth(&c, NULL, a3), PD_OK, "%s", err);
    cr_expect_str_eq(c.nats_token, "tok");
    const char *e4[] = {e_seed, NULL};
    cr_assert_eq(load_auth(&c, e4, NULL), PD_OK, "%s", err);
    cr_expect_str_eq(c.nats_nkey_seed_file, seed);
    unlink(seed), unlink(creds), unlink(ca), unlink(cert), unlink(key);
}

/* Readability of the file settings: node/config_files.c, tests/test_config_files.c.
 * Here only their form: a path with a control character is refused by name. */
Test(config_auth, file_settings_checked_for_form_only) {
    pd_config c;
    const char *e1[] = {"PRESENCE_NATS_CREDS_FILE=/nonexistent/x.creds", NULL};
    cr_expect_eq(load_auth(&c, e1, NULL), PD_OK, "%s", err);
    cr_expect_str_eq(c.nats_creds_file, "/nonexistent/x.creds");
    const char *a2[] = {"--nats-tls-ca", "/tmp/with space", NULL};
    cr_expect_eq(load_auth(&c, NULL, a2), PD_OK, "%s", err);
    const char *a3[] = {"--nats-tls-ca", "/tmp/x\ty", NULL};
    cr_expect_eq(load_auth(&c, NULL, a3), PD_ECONFIG);
    cr_expect(strstr(err, "--nats-tls-ca: the path has control characters") == err, "%s", err);
}

static const struct {
    const char *env[3];
    const char *first, *other;
} conflicts[] = {
    {{"PRESENCE_NATS_TOKEN=t", "PRESENCE_NATS_USER=u"}, "PRESENCE_NATS_TOKEN", "PRESENCE_NATS_USER"},
    {{"PRESENCE_NATS_USER=u"}, "PRESENCE_NATS_USER", "PRESENCE_NATS_PASSWORD"},
    {{"PRESENCE_NATS_PASSWORD=p"}, "PRESENCE_NATS_PASSWORD", "PRESENCE_NATS_USER"},
    {{"PRESENCE_NATS_NKEY_SEED_FILE=@", "PRESENCE_NATS_CREDS_FILE=@"},
     "PRESENCE_NATS_NKEY_SEED_FILE", "PRESENCE_NATS_CREDS_FILE"},
    {{"PRESENCE_NATS_CREDS_FILE=@", "PRESENCE_NATS_TOKEN=t"},
     "PRESENCE_NATS_CREDS_FILE", "PRESENCE_NATS_TOKEN"},
    {{"PRESENCE_NATS_TLS_CERT=@"}, "PRESENCE_NATS_TLS_CERT", "PRESENCE_NATS_TLS_KEY"},
    {{"PRESENCE_NATS_TLS_KEY=@"}, "PRESENCE_NATS_TLS_KEY", "PRESENCE_NATS_TLS_CERT"},
    {{"PRESENCE_REDIS_USER=u"}, "PRESENCE_REDIS_USER", "PRESENCE_REDIS_PASSWORD"},
    {{"PRESENCE_REDIS_PASSWORD=p", "PRESENCE_REDIS_URL=redis://a:b@h:1"},
     "PRESENCE_REDIS_PASSWORD", "PRESENCE_REDIS_URL"},
};

Test(config_auth, conflicting_combinations_name_both_settings) {
    char file[64];
    temp_file(file, sizeof file, "x\n");
    for (size_t i = 0; i < sizeof conflicts / sizeof conflicts[0]; i++) {
        char kv[3][160];
        const char *env[4] = {NULL};
        for (int j = 0; j < 3 && conflicts[i].env[j]; j++) {
            const char *v = conflicts[i].env[j];
            size_t n = strlen(v);
            /* "@" stands for a real readable file. */
            if (v[n - 1] == '@') snprintf(kv[j], sizeof kv[j], "%.*s%s", (int)(n - 1), v, file);
            else snprintf(kv[j], sizeof kv[j], "%s", v);
            env[j] = kv[j];
        }
        pd_config c;
        cr_expect_eq(load_auth(&c, env, NULL), PD_ECONFIG, "case %zu loaded", i);
        cr_expect(strstr(err, conflicts[i].first) == err, "case %zu: %s", i, err);
        cr_expect(strstr(err, conflicts[i].other) != NULL, "case %zu: %s", i, err);
        /* The same check for tools that fill the settings themselves. */
        cr_expect_eq(pd_config_check_auth(&c, err, sizeof err), PD_ECONFIG, "case %zu", i);
    }
    unlink(file);
}

Test(config_auth, conflict_given_by_flag_names_the_flag) {
    pd_config c;
    const char *env[] = {"PRESENCE_NATS_USER=u", "PRESENCE_NATS_PASSWORD=p", NULL};
    const char *args[] = {"--nats-token", "t", NULL};
    cr_expect_eq(load_auth(&c, env, args), PD_ECONFIG);
    cr_expect(strstr(err, "--nats-token: ") == err, "%s", err);
    cr_expect(strstr(err, "PRESENCE_NATS_USER") != NULL, "%s", err);
    const char *a2[] = {"--redis-user", "u", NULL};
    cr_expect_eq(load_auth(&c, NULL, a2), PD_ECONFIG);
    cr_expect(strstr(err, "--redis-user: needs its password, PRESENCE_REDIS_PASSWORD") == err,
              "%s", err);
}

Test(config_auth, a_bad_secret_is_never_echoed) {
    pd_config c;
    const char *env[] = {"PRESENCE_NATS_USER=u", "PRESENCE_NATS_PASSWORD=hunter2 x", NULL};
    cr_expect_eq(load_auth(&c, env, NULL), PD_ECONFIG);
    cr_expect(strstr(err, "PRESENCE_NATS_PASSWORD:") == err, "%s", err);
    cr_expect(strstr(err, "hunter2") == NULL, "%s", err);
    const char *e2[] = {"PRESENCE_NATS_TOKEN=tok\ttab", NULL};
    cr_expect_eq(load_auth(&c, e2, NULL), PD_ECONFIG);
    cr_expect(strstr(err, "tok") == NULL || strstr(err, "TOKEN") != NULL, "%s", err);
    cr_expect(strstr(err, "tab") == NULL, "%s", err);
}

Test(config_auth, redis_url_forms) {
    pd_redis_target t;
    cr_assert_eq(pd_redis_url_parse("redis://presence:pa%40ss@r.local:7000/0", &t), 0);
    cr_expect_str_eq(t.user, "presence");
    cr_expect_str_eq(t.password, "pa@ss");
    cr_expect_str_eq(t.host, "r.local");
    cr_expect_eq(t.port, 7000);
    cr_assert_eq(pd_redis_url_parse("redis://:only@h", &t), 0);
    cr_expect_str_eq(t.user, "");
    cr_expect_str_eq(t.password, "only");
    cr_expect_eq(t.port, 6379);
    cr_assert_eq(pd_redis_url_parse("redis://h:1", &t), 0);
    cr_expect_str_eq(t.password, "");
    const char *bad[] = {"redis://", "redis://h:0", "redis://h:65536", "redis://h:12x",
                         "redis://pw@h", "redis://u:p%4@h", "redis://u:p%00@h", "redis://:p@",
                         "http://h", "redis://h:", "redis://h:6379/2", "redis://h/1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_expect_eq(pd_redis_url_parse(bad[i], &t), -1, "%s accepted", bad[i]);
    pd_config c;
    const char *e1[] = {"PRESENCE_REDIS_URL=redis://h:1", NULL};
    cr_expect_eq(load_auth(&c, e1, NULL), PD_OK, "%s", err);
    const char *e2[] = {"PRESENCE_REDIS_URL=redis://h:99999", NULL};
    cr_expect_eq(load_auth(&c, e2, NULL), PD_ECONFIG);
    cr_expect(strstr(err, "PRESENCE_REDIS_URL:") == err, "%s", err);
}

Test(config_auth, redis_target_takes_user_and_password_settings) {
    pd_config c;
    pd_redis_target t;
    const char *env[] = {"PRESENCE_REDIS_URL=redis://h:5", "PRESENCE_REDIS_USER=presence",
                         "PRESENCE_REDIS_PASSWORD=pw", NULL};
    cr_assert_eq(load_auth(&c, env, NULL), PD_OK, "%s", err);
    cr_assert_eq(pd_config_redis_target(&c, &t), 0);
    cr_expect_str_eq(t.host, "h");
    cr_expect_eq(t.port, 5);
    cr_expect_str_eq(t.user, "presence");
    cr_expect_str_eq(t.password, "pw");
    const char *e2[] = {"PRESENCE_REDIS_URL=redis://u:p@h:5", NULL};
    cr_assert_eq(load_auth(&c, e2, NULL), PD_OK, "%s", err);
    cr_assert_eq(pd_config_redis_target(&c, &t), 0);
    cr_expect_str_eq(t.user, "u");
    cr_expect_str_eq(t.password, "p");
}

Test(config_auth, describe_and_help_show_no_secret) {
    pd_config c;
    const char *env[] = {"PRESENCE_NATS_USER=nodeuser", "PRESENCE_NATS_PASSWORD=natspw",
                         "PRESENCE_REDIS_PASSWORD=redispw", NULL};
    cr_assert_eq(load_auth(&c, env, NULL), PD_OK, "%s", err);
    char line[2048];
    pd_config_describe(&c, line, sizeof line);
    cr_expect(strstr(line, "nats_auth=user") != NULL, "%s", line);
    cr_expect(strstr(line, "nats_tls=off") != NULL, "%s", line);
    cr_expect(strstr(line, "redis_auth=on") != NULL, "%s", line);
    cr_expect(strstr(line, "natspw") == NULL && strstr(line, "redispw") == NULL, "%s", line);
    const char *e2[] = {"PRESENCE_NATS_TOKEN=tokpw", "PRESENCE_NATS_URL=tls://h:1", NULL};
    cr_assert_eq(load_auth(&c, e2, NULL), PD_OK, "%s", err);
    pd_config_describe(&c, line, sizeof line);
    cr_expect(strstr(line, "nats_auth=token nats_tls=on redis_auth=off") != NULL, "%s", line);
    cr_expect(strstr(line, "tokpw") == NULL, "%s", line);
    char *text = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&text, &n);
    pd_config_usage(&(pd_cli_out){to_file, f}, NULL);
    fclose(f);
    const char *rows[] = {"--nats-password SECRET", "--nats-creds-file FILE",
                          "--nats-tls-ca FILE", "--redis-user NAME", "PRESENCE_REDIS_PASSWORD"};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        cr_expect(strstr(text, rows[i]) != NULL, "'%s' missing", rows[i]);
    free(text);
}

Test(config_auth, tools_load_by_prefix_and_set_by_name) {
    pd_config c;
    char *envp[] = {"PRESENCE_NATS_USER=w", "PRESENCE_NATS_PASSWORD=p",
                    "PRESENCE_NODE_ID=..bad", "PRESENCE_IDLE_TIMEOUT_MS=x", NULL};
    /* Only PRESENCE_NATS_*: the bad node id and timeout are not read. */
    cr_assert_eq(pd_config_load_env_prefix(&c, "PRESENCE_NATS_", envp, err, sizeof err), PD_OK,
                 "%s", err);
    cr_expect_str_eq(c.nats_user, "w");
    cr_expect_eq(c.idle_timeout_ms, 300000);
    cr_expect_eq(pd_config_check_auth(&c, err, sizeof err), PD_OK, "%s", err);
    cr_expect_eq(pd_config_set(&c, "--nats-token", "t", err, sizeof err), PD_OK, "%s", err);
    cr_expect_eq(pd_config_check_auth(&c, err, sizeof err), PD_ECONFIG);
    cr_expect(strstr(err, "PRESENCE_NATS_TOKEN") == err, "%s", err);
    cr_expect_eq(pd_config_set(&c, "PRESENCE_NATS_TLS_CA", "/nonexistent", err, sizeof err),
                 PD_OK, "%s", err); /* readability: pd_config_check_files */
    cr_expect_eq(pd_config_set(&c, "--no-such", "1", err, sizeof err), PD_ECONFIG);
}

Test(config, clock_settings) {
    pd_config c;
    cr_assert_eq(load_env1(&c, "PRESENCE_NODE_ID=n1"), PD_OK);
    cr_expect_eq(c.max_clock_skew_ms, 60000);
    cr_expect_eq(c.test_clock_offset_ms, 0);
    cr_assert_eq(load_env1(&c, "PRESENCE_MAX_CLOCK_SKEW_MS=5000"), PD_OK);
    cr_expect_eq(c.max_clock_skew_ms, 5000);
    /* Below a second, ordinary NTP error would cut nodes off. */
    cr_expect_neq(load_env1(&c, "PRESENCE_MAX_CLOCK_SKEW_MS=999"), PD_OK);
    cr_assert_eq(load_env1(&c, "PRESENCE_TEST_CLOCK_OFFSET_MS=2524608000000"), PD_OK);
    cr_expect_eq(c.test_clock_offset_ms, 2524608000000ull);
}

/* it_ctl.c - presencectl against a real node: every command, --json output
 * parsed (by Python's json module), and the exit codes of its errors (bad
 * usage, bad id, refused by the node, nobody answering, NATS unreachable);
 * the command line rules shared with presenced (--flag=value, exact names,
 * per-command options and --help, --version, errors once and in JSON). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/version.h"
#include "harness.h"

#ifndef PRESENCECTL_BIN
#error "PRESENCECTL_BIN must name the presencectl binary under test"
#endif

static h_nats ns;
static h_node node;

static void setup(void) {
    h_nats_start(&ns);
    h_node_start(&node, &ns, "c1", NULL);
}

static void teardown(void) {
    h_node_stop_clean(&node);
    h_nats_stop(&ns);
}

TestSuite(ctl, .init = setup, .fini = teardown, .timeout = 60);

/* Runs presencectl with args against our NATS; returns its exit code and
 * its stdout in out. With json_expr, the output is piped through Python
 * and json_expr (applied to the parsed value `d`) printed instead. */
static int run(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    cr_assert(p != NULL);
    size_t got = fread(out, 1, cap - 1, p);
    out[got] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The node for events comes from PRESENCE_NODE_ID: --node is an option of
 * the event commands only. any_rc: parse the JSON whatever the exit code
 * (errors are JSON too). */
static int ctl_at(char *out, size_t cap, const char *args, const char *json_expr, bool any_rc) {
    char cmd[8192], path[300];
    snprintf(path, sizeof path, "%s/ctl.out", ns.dir);
    snprintf(cmd, sizeof cmd, "PRESENCE_NODE_ID=c1 %s --server %s %s %s >%s 2>&1",
             PRESENCECTL_BIN, ns.url, json_expr ? "--json" : "", args, path);
    int rc = run(cmd, out, cap);
    snprintf(cmd, sizeof cmd, "cat %s", path);
    if (json_expr && (rc == 0 || any_rc))
        snprintf(cmd, sizeof cmd,
                 "/usr/bin/python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).readline());"
                 " print(%s)' %s", json_expr, path);
    int rc2 = run(cmd, out, cap);
    cr_assert((rc != 0 && !any_rc) || rc2 == 0, "output not parsed: %s", out);
    return rc;
}

static int ctl(char *out, size_t cap, const char *args, const char *json_expr) {
    return ctl_at(out, cap, args, json_expr, false);
}

Test(ctl, events_and_queries) {
    char out[8192];
    cr_assert_eq(ctl(out, sizeof out, "--as web-1 connect k1 zoe web", NULL), 0, "%s", out);
    cr_assert_str_eq(out, "ok\n");
    cr_assert_eq(ctl(out, sizeof out, "get zoe", NULL), 0);
    cr_assert(strstr(out, "zoe") && strstr(out, "online"), "%s", out);
    cr_assert_eq(ctl(out, sizeof out, "get zoe", "d[\"users\"][0][\"status\"]"), 0);
    cr_assert_str_eq(out, "online\n");
    cr_assert_eq(ctl(out, sizeof out, "--as web-1 idle k1", NULL), 0);
    cr_assert_eq(ctl(out, sizeof out, "get zoe", "d[\"users\"][0][\"status\"]"), 0);
    cr_assert_str_eq(out, "away\n");
    cr_assert_eq(ctl(out, sizeof out, "--as web-1 activity k1", NULL), 0);
    cr_assert_eq(ctl(out, sizeof out, "status zoe busy", NULL), 0);
    cr_assert_eq(ctl(out, sizeof out, "custom zoe 'on a call' --emoji :phone: --expires 10m",
                     NULL), 0);
    cr_assert_eq(ctl(out, sizeof out, "get zoe",
                     "d[\"users\"][0][\"status\"], d[\"users\"][0][\"text\"], d[\"users\"][0][\"emoji\"], "
                     "d[\"users\"][0][\"expires_at\"] > 0"), 0);
    cr_assert_str_eq(out, "busy on a call :phone: True\n");
    cr_assert_eq(ctl(out, sizeof out, "devices zoe", "d[\"devices\"][0][\"conn\"], "
                     "d[\"devices\"][0][\"server\"], d[\"devices\"][0][\"state\"]"), 0);
    cr_assert_str_eq(out, "k1 web-1 active\n");
    cr_assert_eq(ctl(out, sizeof out, "devices zoe", NULL), 0);
    cr_assert(strstr(out, "k1") && strstr(out, "web-1"), "%s", out);
    cr_assert_eq(ctl(out, sizeof out, "online", "d[\"users\"]"), 0);
    cr_assert_str_eq(out, "['zoe']\n");
    cr_assert_eq(ctl(out, sizeof out, "cluster", "d[\"node\"], d[\"nodes\"][0][\"alive\"]"), 0);
    cr_assert_str_eq(out, "c1 True\n");
    cr_assert_eq(ctl(out, sizeof out, "cluster", NULL), 0);
    cr_assert(strstr(out, "NODE") && strstr(out, "c1"), "%s", out);
    cr_assert_eq(ctl(out, sizeof out, "--as web-1 disconnect k1", NULL), 0);
    cr_assert_eq(ctl(out, sizeof out, "get zoe", "d[\"users\"][0][\"devices\"]"), 0);
    cr_assert_str_eq(out, "0\n");
}

Test(ctl, watch_prints_each_notification) {
    char cmd[1024], out[4096] = "";
    snprintf(cmd, sizeof cmd, "%s --server %s watch all --count 2 --json", PRESENCECTL_BIN,
             ns.url);
    FILE *p = popen(cmd, "r");
    cr_assert(p != NULL);
    h_sleep_ms(300); /* let the watcher subscribe */
    char tmp[512];
    cr_assert_eq(ctl(tmp, sizeof tmp, "--as s connect k2 yan web", NULL), 0, "%s", tmp);
    cr_assert_eq(ctl(tmp, sizeof tmp, "status yan busy", NULL), 0, "%s", tmp);
    size_t got = fread(out, 1, sizeof out - 1, p);
    out[got] = '\0';
    cr_assert_eq(pclose(p), 0);
    cr_assert(strstr(out, "\"status\":\"online\"") && strstr(out, "\"status\":\"busy\""), "%s",
              out);
}

Test(ctl, error_exit_codes) {
    char out[4096];
    cr_assert_eq(ctl(out, sizeof out, "frobnicate", NULL), 2, "unknown command: %s", out);
    cr_assert_eq(ctl(out, sizeof out, "get 'bad id'", NULL), 2, "bad id: %s", out);
    cr_assert(strstr(out, "bad user id"), "%s", out);
    cr_assert_eq(ctl(out, sizeof out, "status zoe sleepy", NULL), 2, "%s", out);
    cr_assert_eq(ctl(out, sizeof out, "--limit 0 online", NULL), 2, "%s", out);
    /* Refused by the node: the code and message are printed, exit 1. */
    cr_assert_eq(ctl(out, sizeof out, "--as s disconnect nope", NULL), 1, "%s", out);
    cr_assert(strstr(out, "unknown_conn"), "%s", out);
    /* Nobody answers on another prefix. */
    cr_assert_eq(ctl(out, sizeof out, "--prefix nobody --timeout 300 get zoe", NULL), 1, "%s",
                 out);
    cr_assert(strstr(out, "no node answered"), "%s", out);
    /* NATS unreachable. */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s --server nats://127.0.0.1:1 --timeout 300 get zoe 2>&1",
             PRESENCECTL_BIN);
    FILE *p = popen(cmd, "r");
    size_t got = fread(out, 1, sizeof out - 1, p);
    out[got] = '\0';
    int st = pclose(p);
    cr_assert_eq(WEXITSTATUS(st), 3, "%s", out);
    cr_assert(strstr(out, "cannot reach NATS"), "%s", out);
}

static int count_of(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

Test(ctl, version_help_and_flag_forms) {
    char out[8192];
    cr_assert_eq(ctl(out, sizeof out, "--version", NULL), 0, "%s", out);
    cr_assert(strncmp(out, "presencectl ", 12) == 0, "%s", out);
    cr_assert_eq(ctl(out, sizeof out, "--version", "d[\"version\"]"), 0, "%s", out);
    cr_assert_str_eq(out, PD_VERSION "\n");
    /* Per-command help: the command's own options, not the others'. */
    cr_assert_eq(ctl(out, sizeof out, "get --help", NULL), 0, "%s", out);
    cr_assert(strstr(out, "get USER...") && strstr(out, "--viewer"), "%s", out);
    cr_assert(strstr(out, "--emoji") == NULL && strstr(out, "--limit") == NULL, "%s", out);
    cr_assert_eq(ctl(out, sizeof out, "--help", NULL), 0, "%s", out);
    cr_assert(strstr(out, "custom USER TEXT") && strstr(out, "--emoji"), "%s", out);
    /* --flag=value and --flag value; an option after the operands; "--". */
    cr_assert_eq(ctl(out, sizeof out, "--as=web-9 connect k9 ivy web", NULL), 0, "%s", out);
    cr_assert_eq(ctl(out, sizeof out, "custom ivy --emoji=:x: -- --dashes--", NULL), 0, "%s",
                 out);
    cr_assert_eq(ctl(out, sizeof out, "get ivy --timeout=2s", "d[\"users\"][0][\"text\"]"), 0);
    cr_assert_str_eq(out, "--dashes--\n");
}

Test(ctl, refusals_name_the_option_once) {
    char out[8192];
    /* An option of another command. */
    cr_assert_eq(ctl(out, sizeof out, "get alice --emoji x", NULL), 2, "%s", out);
    cr_assert(strstr(out, "--emoji: not an option of 'get'"), "%s", out);
    cr_assert_eq(ctl(out, sizeof out, "--node c1 watch all", NULL), 2, "%s", out);
    cr_assert_eq(ctl(out, sizeof out, "get alice --diff", NULL), 2, "%s", out);
    cr_assert(strstr(out, "--diff: not an option of 'get'"), "%s", out);
    /* Not a NATS URL; an abbreviation; a missing value; --version=1. */
    cr_assert_eq(ctl(out, sizeof out, "--server http://x:1 get alice", NULL), 2, "%s", out);
    cr_assert(strstr(out, "--server: 'http://x:1' is not a nats://"), "%s", out);
    cr_assert_eq(ctl(out, sizeof out, "--serv nats://x:1 get alice", NULL), 2, "%s", out);
    cr_assert(strstr(out, "did you mean --server"), "%s", out);
    cr_assert_eq(ctl(out, sizeof out, "online --limit", NULL), 2, "%s", out);
    cr_assert(strstr(out, "--limit: missing value"), "%s", out);
    /* Limits are named. */
    cr_assert_eq(ctl(out, sizeof out, "--limit 5000 online", NULL), 2, "%s", out);
    cr_assert(strstr(out, "above the maximum 1000"), "%s", out);
    /* One message per error, and no second "bad arguments" line. */
    cr_assert_eq(ctl(out, sizeof out, "get 'bad id'", NULL), 2, "%s", out);
    cr_assert_eq(count_of(out, "presencectl:"), 1, "%s", out);
    cr_assert_eq(ctl(out, sizeof out, "status zoe sleepy", NULL), 2, "%s", out);
    cr_assert_eq(count_of(out, "presencectl:"), 1, "%s", out);
    cr_assert_eq(ctl(out, sizeof out, "devices", NULL), 2, "%s", out);
    cr_assert(strstr(out, "devices takes 1 argument (USER), not 0"), "%s", out);
    /* The limit of get is named: 1000 users. */
    char many[8192] = "get";
    for (int i = 0; i < 1001; i++) snprintf(many + strlen(many), sizeof many - strlen(many), " u");
    cr_assert_eq(ctl(out, sizeof out, many, NULL), 2, "%s", out);
    cr_assert(strstr(out, "get takes 1 to 1000 arguments (USER...), not 1001"), "%s", out);
}

Test(ctl, json_errors_are_one_document) {
    char out[8192];
    cr_assert_eq(ctl_at(out, sizeof out, "frobnicate", "d[\"ok\"], d[\"code\"]", true), 2);
    cr_assert_str_eq(out, "False usage\n");
    cr_assert_eq(ctl_at(out, sizeof out, "--limit 5000 online", "d[\"message\"]", true), 2);
    cr_assert(strstr(out, "1000"), "%s", out);
    cr_assert_eq(ctl_at(out, sizeof out, "--as s disconnect nope", "d[\"ok\"], d[\"code\"]",
                        true), 1);
    cr_assert_str_eq(out, "False unknown_conn\n");
    cr_assert_eq(ctl_at(out, sizeof out, "--prefix nobody --timeout 300ms get zoe", "d[\"code\"]",
                        true), 1);
    cr_assert_str_eq(out, "no_answer\n");
    cr_assert_eq(ctl_at(out, sizeof out, "--prefix nobody --timeout 300ms cluster --diff",
                        "d[\"ok\"], d[\"code\"]", true), 1);
    cr_assert_str_eq(out, "False no_answer\n");
}

Test(ctl, online_is_one_document_over_pages) {
    char out[8192], args[128];
    for (int i = 0; i < 5; i++) {
        snprintf(args, sizeof args, "--as s connect p%d user%d web", i, i);
        cr_assert_eq(ctl(out, sizeof out, args, NULL), 0, "%s", out);
    }
    /* Pages of 2: three replies, one document (Python reads the whole output). */
    cr_assert_eq(ctl(out, sizeof out, "online --limit 2", "sorted(d[\"users\"]), d[\"count\"]"),
                 0);
    cr_assert_str_eq(out, "['user0', 'user1', 'user2', 'user3', 'user4'] 5\n");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s --server %s --json online --limit 2 | wc -l", PRESENCECTL_BIN,
             ns.url);
    run(cmd, out, sizeof out);
    cr_assert_str_eq(out, "1\n");
}

Test(ctl, watch_keeps_the_emoji_and_cluster_heartbeat_is_a_time) {
    char cmd[1024], out[4096] = "", tmp[512];
    snprintf(cmd, sizeof cmd, "%s --server %s watch ada --count 2", PRESENCECTL_BIN, ns.url);
    FILE *p = popen(cmd, "r");
    cr_assert(p != NULL);
    h_sleep_ms(300); /* let the watcher subscribe */
    cr_assert_eq(ctl(tmp, sizeof tmp, "--as s connect k3 ada web", NULL), 0, "%s", tmp);
    cr_assert_eq(ctl(tmp, sizeof tmp, "custom ada lunch --emoji 🍜", NULL), 0, "%s", tmp);
    size_t got = fread(out, 1, sizeof out - 1, p);
    out[got] = '\0';
    cr_assert_eq(pclose(p), 0);
    cr_assert(strstr(out, "custom=\"🍜 lunch\""), "%s", out);
    cr_assert_eq(ctl(out, sizeof out, "cluster",
                     "__import__(\"datetime\").datetime.strptime(d[\"nodes\"][0]"
                     "[\"last_heartbeat\"], \"%Y-%m-%dT%H:%M:%S.%fZ\").year > 2000"), 0, "%s",
                 out);
    cr_assert_str_eq(out, "True\n");
}

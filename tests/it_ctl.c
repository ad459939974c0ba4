/* it_ctl.c - presencectl against a real node: every command, --json output
 * parsed (by Python's json module), and the exit codes of its errors (bad
 * usage, bad id, refused by the node, nobody answering, NATS unreachable). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static int ctl(char *out, size_t cap, const char *args, const char *json_expr) {
    char cmd[2048], path[300];
    snprintf(path, sizeof path, "%s/ctl.out", ns.dir);
    snprintf(cmd, sizeof cmd, "%s --server %s --node c1 %s %s >%s 2>&1", PRESENCECTL_BIN,
             ns.url, json_expr ? "--json" : "", args, path);
    int rc = run(cmd, out, cap);
    snprintf(cmd, sizeof cmd, "cat %s", path);
    if (json_expr && rc == 0)
        snprintf(cmd, sizeof cmd,
                 "/usr/bin/python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).readline());"
                 " print(%s)' %s", json_expr, path);
    int rc2 = run(cmd, out, cap);
    cr_assert(rc != 0 || rc2 == 0, "output not parsed: %s", out);
    return rc;
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

/* it_sim.c - presence-sim against a real nats-server and presenced: the
 * simulator's oracle (its --json summary) must match the node's state.
 *
 * Each test starts its own nats-server and node n1, runs the simulator
 * binary (PRESENCE_SIM_BIN) with its stdout on a pipe, and compares the
 * summary's device counts with P.query.cluster (all devices) and
 * P.query.get (per user, asked as the user so that invisible users show
 * their devices). The node's server timeout is long except in the crash
 * test: once the simulator exits its servers fall silent, and a short
 * timeout would empty the node before it is compared. */
#define _GNU_SOURCE /* pipe2 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "harness.h"

#ifndef PRESENCE_SIM_BIN
#error "PRESENCE_SIM_BIN must name the presence-sim binary under test"
#endif

#define SIM_OUT_MAX (1 << 20)

static h_nats ns;
static h_node node;
static natsConnection *nc;
static pid_t sim_pid;
static char sim_out[SIM_OUT_MAX]; /* one simulator run per test process */

typedef struct {
    pid_t pid;
    int out_fd;
    int status;          /* exit status, -1 if it did not exit normally */
    char *out;           /* everything it printed on stdout (sim_out) */
} sim_proc;

static void start(const char *server_timeout_ms) {
    static char timeout_env[64];
    snprintf(timeout_env, sizeof timeout_env, "PRESENCE_SERVER_TIMEOUT_MS=%s", server_timeout_ms);
    const char *env[] = {"PRESENCE_OFFLINE_DELAY_MS=0", timeout_env, NULL};
    h_nats_start(&ns);
    h_node_start(&node, &ns, "n1", env);
    nc = h_connect(&ns);
}

static void teardown(void) {
    if (sim_pid > 0) {
        kill(sim_pid, SIGKILL);
        waitpid(sim_pid, NULL, 0);
    }
    if (nc) natsConnection_Destroy(nc);
    if (node.pid > 0) h_node_stop_clean(&node);
    if (ns.pid > 0) h_nats_stop(&ns);
}

TestSuite(sim, .fini = teardown, .timeout = 60);

/* Starts presence-sim with args (NULL-terminated) against ns, node n1. */
static void sim_start(sim_proc *p, const char *const *args) {
    char *argv[48];
    int k = 0, fds[2];
    char log[300];
    argv[k++] = PRESENCE_SIM_BIN;
    argv[k++] = "--nodes";
    argv[k++] = "n1";
    for (const char *const *a = args; *a && k < 46; a++) argv[k++] = (char *)*a;
    argv[k] = NULL;
    snprintf(log, sizeof log, "%s/sim.log", ns.dir);
    cr_assert(pipe2(fds, O_CLOEXEC) == 0, "pipe: %s", strerror(errno));
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    char url[300];
    snprintf(url, sizeof url, "PRESENCE_NATS_URL=%s", ns.url);
    const char *env[] = {url, NULL};
    char **envp = h_env_build(env);
    p->pid = h_spawn(argv, envp, fds[1], fd);
    h_env_free(envp);
    if (fd >= 0) close(fd);
    close(fds[1]);
    p->out_fd = fds[0];
    sim_pid = p->pid;
}

/* Reads the simulator's stdout to the end and waits for its exit. */
static void sim_wait(sim_proc *p) {
    size_t n = 0;
    ssize_t got;
    p->out = sim_out;
    while (n < SIM_OUT_MAX - 1 && (got = read(p->out_fd, p->out + n, SIM_OUT_MAX - 1 - n)) != 0) {
        if (got < 0 && errno == EINTR) continue;
        cr_assert(got > 0, "read: %s", strerror(errno));
        n += (size_t)got;
    }
    p->out[n] = '\0';
    close(p->out_fd);
    int st;
    cr_assert(waitpid(p->pid, &st, 0) == p->pid);
    sim_pid = 0;
    p->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void sim_run(sim_proc *p, const char *const *args) {
    sim_start(p, args);
    sim_wait(p);
}

/* The integer after "key": in the one-line summary, or -1. Keys are
 * distinct enough here: "devices" never matches "crashed_devices". */
static int64_t js_int(const char *js, const char *key) {
    char pat[160];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(js, pat);
    return p ? strtoll(p + strlen(pat), NULL, 10) : -1;
}

/* The simulator's verdict: exit 0, no error of any code, all answered. */
static void expect_clean(const sim_proc *p) {
    cr_assert_eq(p->status, 0, "presence-sim exit %d (see %s/sim.log): %s", p->status, ns.dir,
                 p->out);
    cr_assert(strstr(p->out, "\"errors\":{}") != NULL, "errors: %s", p->out);
    cr_assert_eq(js_int(p->out, "unanswered"), 0);
}

/* "devices" of the first node entry of P.query.cluster (the answering
 * node itself), or -1. */
static int64_t node_devices(void) {
    natsMsg *m = h_request(nc, "presence.query.cluster", NULL, 0);
    if (m == NULL) return -1;
    mp_reader r;
    uint32_t n, k, fields;
    pd_str key;
    int64_t dev = -1;
    mpr_init(&r, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    if (!mpr_map(&r, &n)) n = 0;
    for (uint32_t i = 0; i < n && pd_read_key(&r, &key); i++) {
        if (!pd_str_eqc(key, "nodes")) {
            mpr_skip(&r);
            continue;
        }
        if (!mpr_array(&r, &k) || k < 1 || !mpr_map(&r, &fields)) break;
        for (uint32_t j = 0; j < fields && pd_read_key(&r, &key); j++) {
            if (pd_str_eqc(key, "devices")) mpr_int(&r, &dev);
            else mpr_skip(&r);
        }
        break;
    }
    natsMsg_Destroy(m);
    return dev;
}

/* Every user's device count on the node equals the oracle's. */
static void expect_users_match(const sim_proc *p, int users) {
    for (int i = 0; i < users; i++) {
        char user[32];
        pd_view v;
        snprintf(user, sizeof user, "u%d", i);
        int64_t want = js_int(p->out, user); /* absent from user_devices: 0 */
        cr_assert(h_get(nc, user, user, &v, NULL, 0), "get %s", user);
        cr_assert_eq((int64_t)v.devices, want < 0 ? 0 : want, "%s: node %u devices, oracle %lld",
                     user, v.devices, (long long)want);
    }
}

Test(sim, steady_load_matches_the_oracle) {
    start("60000");
    sim_proc p;
    const char *const args[] = {"--users", "300", "--servers", "4", "--events", "4000",
                                "--rate", "0", "--heartbeat-ms", "200", "--seed", "42",
                                "--json", "--dump-users", NULL};
    sim_run(&p, args);
    expect_clean(&p);
    cr_assert_geq(js_int(p.out, "sent"), 4000);
    cr_assert_eq(js_int(p.out, "ok"), js_int(p.out, "sent"));
    int64_t devices = js_int(p.out, "devices");
    cr_assert_gt(devices, 0, "%s", p.out);
    cr_assert_eq(node_devices(), devices);
    expect_users_match(&p, 300);
}

Test(sim, crashed_server_times_out_on_the_node) {
    start("2000");
    sim_proc p;
    const char *const args[] = {"--users", "300", "--servers", "4", "--duration", "3.5",
                                "--rate", "1500", "--heartbeat-ms", "100", "--crash-at", "0.5",
                                "--crash-server", "1", "--seed", "7", "--json", "--dump-users",
                                NULL};
    sim_run(&p, args);
    expect_clean(&p);
    int64_t devices = js_int(p.out, "devices");
    cr_assert_gt(js_int(p.out, "crashed_devices"), 0, "%s", p.out);
    /* The crash was 3 s before the end and the timeout is 2 s: the node has
     * dropped the crashed server's devices, while the live servers' last
     * heartbeats are at most 100 ms old (they time out 2 s after the run:
     * compare at once). */
    cr_assert(H_POLL(node_devices() == devices, 1000), "node %lld devices, oracle %lld",
              (long long)node_devices(), (long long)devices);
    /* A sample only: all 300 gets could outlast the live servers' timeout
     * on a loaded machine. */
    expect_users_match(&p, 50);
}

Test(sim, resync_is_answered_and_idempotent) {
    start("60000");
    sim_proc p;
    pd_reply rep;
    const char *const args[] = {"--users", "200", "--servers", "4", "--duration", "3",
                                "--rate", "1000", "--heartbeat-ms", "200", "--seed", "3",
                                "--json", "--dump-users", NULL};
    sim_start(&p, args);
    /* Devices on the node: the simulator has subscribed to the resyncs
     * (it does before its first event). */
    cr_assert(H_POLL(node_devices() > 0, 10000), "the simulator did not start (see %s/sim.log)",
              ns.dir);
    /* A device the simulator does not have, on one of its servers: the
     * sync of that server must remove it. */
    pd_event ghost = h_ev_connect("sim-0", "ghost", "ghost-user", "web");
    cr_assert(h_event(nc, "n1", &ghost, &rep) && rep.ok);
    natsConnection_Publish(nc, "presence.resync.n1", NULL, 0);
    natsConnection_Flush(nc);
    h_sleep_ms(500);
    natsConnection_Publish(nc, "presence.resync.n1", NULL, 0);
    natsConnection_Flush(nc);
    sim_wait(&p);
    expect_clean(&p);
    cr_assert_eq(js_int(p.out, "resync_requests"), 2, "%s", p.out);
    /* One sync per server at start, then one per server per resync. */
    cr_assert_eq(js_int(p.out, "sync"), 4 + 2 * 4, "%s", p.out);
    pd_view v;
    cr_assert(h_get(nc, "ghost-user", NULL, &v, NULL, 0));
    cr_assert_eq(v.devices, 0, "the sync removed the device its server does not list");
    cr_assert_eq(node_devices(), js_int(p.out, "devices"));
    expect_users_match(&p, 200);
}

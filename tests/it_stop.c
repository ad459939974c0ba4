/* it_stop.c - a node stops promptly on SIGTERM in every state, and a clean
 * stop is quiet: started while NATS is down (it used to sit ~24 s in
 * JetStream requests before its loop ran), after NATS went away, and in
 * the ordinary case; none of them logs a NATS warning or error for our own
 * close. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include "harness.h"

TestSuite(stop, .timeout = 60);

static void no_nats_noise(const char *log) {
    cr_expect_not(h_log_contains(log, "disconnected from NATS"), "see %s", log);
    cr_expect_not(h_log_contains(log, "NATS connection closed"), "see %s", log);
}

/* SIGTERM; the exit status, or -1 if it took longer than ms. */
static int term_within(pid_t pid, unsigned ms) {
    int st = 0;
    kill(pid, SIGTERM);
    if (!H_POLL(waitpid(pid, &st, WNOHANG) == pid, ms)) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        return -1;
    }
    return st;
}

Test(stop, sigterm_while_nats_was_never_up) {
    char log[] = "/tmp/pd-stop-XXXXXX";
    int fd = mkstemp(log);
    cr_assert(fd >= 0);
    char nats[64], redis[64];
    snprintf(nats, sizeof nats, "PRESENCE_NATS_URL=nats://127.0.0.1:%d", h_free_port());
    snprintf(redis, sizeof redis, "PRESENCE_REDIS_URL=redis://127.0.0.1:%d", h_free_port());
    const char *env[] = {"PRESENCE_NODE_ID=s1", nats, redis, NULL};
    char **envp = h_env_build(env);
    char *argv[] = {(char *)h_presenced_bin(), NULL};
    pid_t pid = h_spawn(argv, envp, fd, fd);
    h_env_free(envp);
    cr_assert(H_POLL(h_log_contains(log, "node s1 ready"), 10000), "not started: see %s", log);
    cr_assert(h_log_contains(log, "NATS not connected at start"), "see %s", log);
    /* Before, the loop ran (and saw SIGTERM) only after ~23 s of JetStream
     * requests timing out; 8 s leaves room for a loaded machine. */
    int st = term_within(pid, 8000);
    cr_assert_neq(st, -1, "SIGTERM took over 8 s without NATS: see %s", log);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d: see %s", st, log);
    no_nats_noise(log);
    close(fd);
    unlink(log);
}

/* A JetStream that cannot elect a leader (a lone server of a 3-server
 * cluster): each stream request waits for its timeout, ~13 s in all,
 * before the loop runs. SIGTERM then ends the node at once (default action:
 * it has announced nothing yet). */
Test(stop, sigterm_while_jetstream_has_no_leader) {
    char dir[] = "/tmp/pd-stop-js-XXXXXX", conf[400], log[400];
    cr_assert(mkdtemp(dir) != NULL);
    snprintf(conf, sizeof conf, "%s/nats.conf", dir);
    FILE *f = fopen(conf, "w");
    cr_assert(f != NULL);
    fprintf(f, "server_name: lone\njetstream { store_dir: \"%s/js\" }\ncluster { name: c; listen: 127.0.0.1:%d; "
            "routes: [nats-route://127.0.0.1:%d, nats-route://127.0.0.1:%d] }\n", dir,
            h_free_port(), h_free_port(), h_free_port());
    fclose(f);
    h_nats ns;
    h_nats_start_conf(&ns, dir, conf, NULL, "nats");
    snprintf(log, sizeof log, "%s/node.log", dir);
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    char nats[128], redis[64];
    snprintf(nats, sizeof nats, "PRESENCE_NATS_URL=%s", ns.url);
    snprintf(redis, sizeof redis, "PRESENCE_REDIS_URL=redis://127.0.0.1:%d", h_free_port());
    const char *env[] = {"PRESENCE_NODE_ID=s4", nats, redis, NULL};
    char **envp = h_env_build(env);
    char *argv[] = {(char *)h_presenced_bin(), NULL};
    pid_t pid = h_spawn(argv, envp, fd, fd);
    h_env_free(envp);
    cr_assert(H_POLL(h_log_contains(log, "no snapshot of s4"), 10000), "see %s", log);
    int st = term_within(pid, 3000);
    cr_assert_neq(st, -1, "SIGTERM waited for JetStream: see %s", log);
    cr_assert((WIFEXITED(st) && WEXITSTATUS(st) == 0) ||
              (WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM), "status %d: see %s", st, log);
    cr_assert_not(h_log_contains(log, "node s4 ready"), "it was not starting: see %s", log);
    close(fd);
    h_nats_stop(&ns);
    char rm[600];
    snprintf(rm, sizeof rm, "rm -rf '%s'", dir); /* kept when an assertion failed */
    cr_expect_eq(system(rm), 0);
}

Test(stop, sigterm_after_nats_went_away_and_when_all_is_well) {
    h_nats ns;
    h_node a, b;
    h_nats_start(&ns);
    h_node_start(&a, &ns, "s2", NULL);
    h_node_start(&b, &ns, "s3", NULL);
    /* All well: a clean, quiet stop (h_node_stop kills after 10 s: an
     * exit status of 0 says SIGTERM was enough). */
    int st = h_node_stop(&a, SIGTERM);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d: %s", st, a.log);
    no_nats_noise(a.log);
    /* NATS gone: the node warns (that is news), and still stops at once. */
    h_nats_kill(&ns, SIGKILL);
    cr_assert(H_POLL(h_log_contains(b.log, "disconnected from NATS"), 5000), "%s", b.log);
    st = h_node_stop(&b, SIGTERM);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d: %s", st, b.log);
    cr_expect_not(h_log_contains(b.log, "NATS connection closed"), "see %s", b.log);
    h_nats_stop(&ns);
}

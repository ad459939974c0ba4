/* harness.c - processes (nats-server, redis-server, presenced, presence-sim),
 * client and watchers for the integration tests. */
#define _GNU_SOURCE /* execvpe, pipe2 */
#include "harness.h"
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef PRESENCED_BIN
#error "PRESENCED_BIN must name the presenced binary under test"
#endif

extern char **environ;

#define H_MAX_PROCS 32
static pid_t procs[H_MAX_PROCS];
static int nprocs;
static bool atexit_done;

uint64_t h_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int64_t h_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void h_sleep_ms(unsigned ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void stop_pid(pid_t pid, int sig) {
    int st;
    if (pid <= 0) return;
    kill(pid, sig);
    uint64_t deadline = h_now_ms() + 5000;
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (h_now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            break;
        }
        h_sleep_ms(2);
    }
}

static void stop_all(void) {
    for (int i = nprocs - 1; i >= 0; i--) {
        if (procs[i] > 0) {
            kill(procs[i], SIGCONT);
            stop_pid(procs[i], SIGKILL);
        }
    }
    nprocs = 0;
}

static void track(pid_t pid) {
    if (!atexit_done) {
        atexit(stop_all);
        atexit_done = true;
    }
    if (nprocs < H_MAX_PROCS) procs[nprocs++] = pid;
}

static void untrack(pid_t pid) {
    for (int i = 0; i < nprocs; i++) {
        if (procs[i] == pid) procs[i] = 0;
    }
}

/* The environment for a child: ours, with each NAME=VALUE of env replacing
 * or adding its name (the last of a name wins). Built before fork(): a child of a threaded process
 * (nats.c's threads) may only call async-signal-safe functions, and
 * setenv() in the child could wait for ever on a malloc lock that another
 * thread held at the fork. Free with h_env_free. */
char **h_env_build(const char *const *env) {
    size_t n = 0, k = 0, extra = 0;
    while (environ[n]) n++;
    while (env && env[extra]) extra++;
    char **out = calloc(n + extra + 1, sizeof *out);
    cr_assert(out != NULL);
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t len = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        bool replaced = false;
        for (size_t j = 0; j < extra && !replaced; j++)
            replaced = strncmp(env[j], environ[i], len + 1) == 0;
        if (!replaced) out[k++] = strdup(environ[i]);
    }
    for (size_t j = 0; j < extra; j++) {
        const char *eq = strchr(env[j], '=');
        if (eq == NULL) continue;
        size_t len = (size_t)(eq - env[j]) + 1;
        bool later = false; /* a later entry of the same name wins */
        for (size_t l = j + 1; l < extra && !later; l++) later = strncmp(env[l], env[j], len) == 0;
        if (!later) out[k++] = strdup(env[j]);
    }
    return out;
}

void h_env_free(char **envp) {
    for (size_t i = 0; envp && envp[i]; i++) free(envp[i]);
    free(envp);
}

/* Forks and execs argv (a path, or a name looked up in PATH) with envp;
 * the child's stdout goes to out_fd and its stderr to err_fd (-1: keep).
 * The child gets SIGKILL if this process dies first, so a crashed test
 * leaves no server behind. Only async-signal-safe calls after the fork. */
pid_t h_spawn(char *const argv[], char **envp, int out_fd, int err_fd) {
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        if (out_fd >= 0) dup2(out_fd, 1);
        if (err_fd >= 0) dup2(err_fd, 2);
        execvpe(argv[0], argv, envp);
        _exit(127);
    }
    track(pid);
    return pid;
}

/* Forks and execs argv with env appended to ours; stdout/stderr to logpath. */
static pid_t spawn(char *const argv[], const char *const *env, const char *logpath) {
    char **envp = h_env_build(env);
    int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    pid_t pid = h_spawn(argv, envp, fd, fd);
    if (fd >= 0) close(fd);
    h_env_free(envp);
    return pid;
}

static bool read_port(const char *dir, char *url, size_t cap) {
    DIR *d = opendir(dir);
    struct dirent *e;
    bool found = false;
    if (d == NULL) return false;
    while (!found && (e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n < 6 || strcmp(e->d_name + n - 6, ".ports") != 0) continue;
        char path[600], buf[1024] = "";
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL) continue;
        size_t got = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[got] = '\0';
        char *p = strstr(buf, "nats://");
        if (p == NULL) continue;
        size_t k = strcspn(p, "\"");
        if (k >= cap) continue;
        memcpy(url, p, k);
        url[k] = '\0';
        found = true;
    }
    closedir(d);
    return found;
}

/* nats-server on port with its store in ns->dir. */
/* nats-server on port with its store in ns->dir; false if it exited
 * first (its port taken meanwhile: another test on the machine). */
static bool nats_try(h_nats *ns, const char *port) {
    char store[300], log[300];
    snprintf(store, sizeof store, "%s/js", ns->dir);
    snprintf(log, sizeof log, "%s/nats.log", ns->dir);
    char *argv[] = {"nats-server", "-a", "127.0.0.1", "-p", (char *)port, "-js", "-sd", store,
                    "--ports_file_dir", ns->dir, NULL};
    ns->pid = spawn(argv, NULL, log);
    bool ok = H_POLL(read_port(ns->dir, ns->url, sizeof ns->url) ||
                     waitpid(ns->pid, NULL, WNOHANG) == ns->pid, 10000);
    if (ok && read_port(ns->dir, ns->url, sizeof ns->url)) return true;
    untrack(ns->pid);
    ns->pid = 0;
    return false;
}

static void nats_spawn(h_nats *ns, const char *port) {
    cr_assert(nats_try(ns, port), "nats-server did not start on %s (see %s/nats.log)", port,
              ns->dir);
}

void h_nats_start(h_nats *ns) {
    memset(ns, 0, sizeof *ns);
    snprintf(ns->dir, sizeof ns->dir, "/tmp/pd-it-XXXXXX");
    cr_assert(mkdtemp(ns->dir) != NULL, "mkdtemp: %s", strerror(errno));
    char port[16];
    for (int tries = 0; tries < 3; tries++) {
        snprintf(port, sizeof port, "%d", h_free_port());
        if (nats_try(ns, port)) return;
    }
    cr_assert_fail("nats-server did not start (see %s/nats.log)", ns->dir);
}

void h_nats_stop(h_nats *ns) {
    stop_pid(ns->pid, SIGTERM);
    untrack(ns->pid);
    ns->pid = 0;
}

void h_nats_kill(h_nats *ns, int sig) {
    stop_pid(ns->pid, sig);
    untrack(ns->pid);
    ns->pid = 0;
}

void h_nats_restart(h_nats *ns) {
    const char *colon = strrchr(ns->url, ':');
    char port[16];
    cr_assert(colon != NULL && ns->pid == 0, "nats-server is running or has no port");
    snprintf(port, sizeof port, "%s", colon + 1);
    /* The old ports file would pass for the new server's. */
    DIR *d = opendir(ns->dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n < 6 || strcmp(e->d_name + n - 6, ".ports") != 0) continue;
        char path[600];
        snprintf(path, sizeof path, "%s/%s", ns->dir, e->d_name);
        unlink(path);
    }
    if (d) closedir(d);
    nats_spawn(ns, port);
}

natsConnection *h_connect(const h_nats *ns) {
    natsConnection *nc = NULL;
    natsOptions *o = NULL;
    natsOptions_Create(&o);
    natsOptions_SetURL(o, ns->url);
    natsOptions_SetMaxReconnect(o, -1);
    natsOptions_SetSendAsap(o, true);
    natsStatus s = natsConnection_Connect(&nc, o);
    natsOptions_Destroy(o);
    cr_assert(s == NATS_OK, "connect to %s: %s", ns->url, natsStatus_GetText(s));
    return nc;
}

natsMsg *h_request_ms(natsConnection *nc, const char *subject, const void *data, size_t len,
                      int64_t timeout_ms) {
    natsMsg *reply = NULL;
    natsStatus s = natsConnection_Request(&reply, nc, subject, data, (int)len, timeout_ms);
    return s == NATS_OK ? reply : NULL;
}

natsMsg *h_request(natsConnection *nc, const char *subject, const void *data, size_t len) {
    return h_request_ms(nc, subject, data, len, 5000);
}

bool h_log_contains_from(const char *path, long from, const char *needle) {
    FILE *f = fopen(path, "r");
    char line[4096];
    bool found = false;
    if (f == NULL) return false;
    if (from > 0 && fseek(f, from, SEEK_SET) != 0) {
        fclose(f);
        return false;
    }
    while (!found && fgets(line, sizeof line, f)) found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

bool h_log_contains(const char *path, const char *needle) {
    return h_log_contains_from(path, 0, needle);
}

long h_log_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

static bool node_answers(natsConnection *nc, const char *id) {
    natsMsg *m = h_request(nc, "presence.query.cluster", NULL, 0);
    if (m == NULL) return false;
    pd_str want = pd_str_c(id);
    const char *d = natsMsg_GetData(m);
    int n = natsMsg_GetDataLength(m);
    bool ok = false;
    /* The node id appears verbatim in the reply's "node" field. */
    for (int i = 0; i + (int)want.n <= n && !ok; i++) ok = memcmp(d + i, want.p, want.n) == 0;
    natsMsg_Destroy(m);
    return ok;
}

/* Spawns nd (id and log set) and waits until it answers and has logged,
 * from byte `from` of its log on, that it caught up. */
static void node_spawn(h_node *nd, const h_nats *ns, const char *const *env, long from) {
    static char envbuf[16][256];
    const char *all[24];
    int k = 0;
    snprintf(envbuf[0], sizeof envbuf[0], "PRESENCE_NATS_URL=%s", ns->url);
    snprintf(envbuf[1], sizeof envbuf[1], "PRESENCE_NODE_ID=%s", nd->id);
    snprintf(envbuf[2], sizeof envbuf[2], "PRESENCE_LOG_LEVEL=debug");
    /* Short cluster timing by default; a test's own env comes later and wins. */
    snprintf(envbuf[3], sizeof envbuf[3], "PRESENCE_SYNC_INTERVAL_MS=100");
    /* No Redis unless a test starts one: never a system Redis on 6379,
     * whose old snapshots would leak from one test run into the next. */
    snprintf(envbuf[4], sizeof envbuf[4], "PRESENCE_REDIS_URL=redis://127.0.0.1:1");
    all[k++] = envbuf[4];
    all[k++] = envbuf[0];
    all[k++] = envbuf[1];
    all[k++] = envbuf[2];
    all[k++] = envbuf[3];
    for (const char *const *e = env; e && *e && k < 23; e++) all[k++] = *e;
    all[k] = NULL;
    /* make test-tsan runs these tests against a TSan build of the node. */
    const char *bin = getenv("PD_PRESENCED_BIN");
    char *argv[] = {(char *)(bin && *bin ? bin : PRESENCED_BIN), NULL};
    nd->pid = spawn(argv, all, nd->log);
    natsConnection *nc = h_connect(ns);
    bool ok = H_POLL((node_answers(nc, nd->id) &&
                      h_log_contains_from(nd->log, from, "announcing changes")) ||
                     !h_node_running(nd), 10000);
    natsConnection_Destroy(nc);
    cr_assert(ok && h_node_running(nd), "presenced %s did not start (see %s)", nd->id, nd->log);
}

void h_node_start(h_node *nd, const h_nats *ns, const char *id, const char *const *env) {
    memset(nd, 0, sizeof *nd);
    snprintf(nd->id, sizeof nd->id, "%s", id);
    snprintf(nd->log, sizeof nd->log, "%s/%s.log", ns->dir, id);
    node_spawn(nd, ns, env, 0);
}

void h_node_restart(h_node *nd, const h_nats *ns, const char *const *env) {
    cr_assert(nd->id[0] && !h_node_running(nd), "presenced %s is running", nd->id);
    node_spawn(nd, ns, env, h_log_size(nd->log));
}

bool h_node_running(h_node *nd) {
    int st;
    if (nd->pid <= 0) return false;
    if (waitpid(nd->pid, &st, WNOHANG) == nd->pid) {
        untrack(nd->pid);
        nd->pid = 0;
        return false;
    }
    return true;
}

const char *h_presenced_bin(void) {
    const char *bin = getenv("PD_PRESENCED_BIN");
    return bin && *bin ? bin : PRESENCED_BIN;
}

int h_node_stop(h_node *nd, int sig) {
    int st = -1;
    if (nd->pid <= 0) return -1;
    kill(nd->pid, sig);
    kill(nd->pid, SIGCONT);
    uint64_t deadline = h_now_ms() + 10000;
    while (waitpid(nd->pid, &st, WNOHANG) == 0) {
        if (h_now_ms() > deadline) {
            kill(nd->pid, SIGKILL);
            waitpid(nd->pid, &st, 0);
            break;
        }
        h_sleep_ms(2);
    }
    untrack(nd->pid);
    nd->pid = 0;
    return st;
}

void h_node_pause(h_node *nd) {
    int st = 0;
    cr_assert(nd->pid > 0, "presenced %s is not running", nd->id);
    kill(nd->pid, SIGSTOP);
    bool ok = H_POLL(waitpid(nd->pid, &st, WUNTRACED | WNOHANG) == nd->pid && WIFSTOPPED(st),
                     5000);
    cr_assert(ok, "presenced %s did not stop", nd->id);
}

void h_node_resume(h_node *nd) {
    if (nd->pid > 0) kill(nd->pid, SIGCONT);
}

void h_node_stop_clean(h_node *nd) {
    int st = h_node_stop(nd, SIGTERM);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "presenced %s did not exit cleanly (status %d): see %s", nd->id, st, nd->log);
}

/* ---- events ---------------------------------------------------------------- */

static pd_str S(const char *s) { return s ? pd_str_c(s) : (pd_str){NULL, 0}; }

pd_event h_ev_connect(const char *server, const char *conn, const char *user, const char *device) {
    pd_event ev = {.type = PD_EV_CONNECT};
    ev.server = S(server);
    ev.conn = S(conn);
    ev.user = S(user);
    ev.device = S(device);
    return ev;
}

pd_event h_ev_conn(pd_event_type t, const char *server, const char *conn) {
    pd_event ev = {.type = t};
    ev.server = S(server);
    ev.conn = S(conn);
    return ev;
}

pd_event h_ev_status(const char *user, pd_chosen st) {
    pd_event ev = {.type = PD_EV_STATUS, .status = st};
    ev.user = S(user);
    return ev;
}

pd_event h_ev_custom(const char *user, const char *text, const char *emoji, int64_t expires_at) {
    pd_event ev = {.type = PD_EV_CUSTOM, .expires_at = expires_at};
    ev.user = S(user);
    ev.text = S(text);
    ev.emoji = S(emoji);
    return ev;
}

pd_event h_ev_server(pd_event_type t, const char *server) {
    pd_event ev = {.type = t};
    ev.server = S(server);
    return ev;
}

bool h_raw_request(natsConnection *nc, const char *subject, const void *data, size_t len,
                   pd_reply *rep) {
    natsMsg *m = h_request(nc, subject, data, len);
    if (m == NULL) return false;
    pd_status s = pd_reply_decode(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), rep);
    natsMsg_Destroy(m);
    return s == PD_OK;
}

bool h_event(natsConnection *nc, const char *node, const pd_event *ev, pd_reply *rep) {
    msgpack_sbuffer sb;
    char subj[200];
    msgpack_sbuffer_init(&sb);
    pd_event_encode(&sb, ev, NULL, 0);
    snprintf(subj, sizeof subj, "presence.events.%s", node);
    bool ok = h_raw_request(nc, subj, sb.data, sb.size, rep);
    msgpack_sbuffer_destroy(&sb);
    return ok;
}

void h_event_pub(natsConnection *nc, const char *node, const pd_event *ev) {
    msgpack_sbuffer sb;
    char subj[200];
    msgpack_sbuffer_init(&sb);
    pd_event_encode(&sb, ev, NULL, 0);
    snprintf(subj, sizeof subj, "presence.events.%s", node);
    natsConnection_Publish(nc, subj, sb.data, (int)sb.size);
    natsConnection_Flush(nc);
    msgpack_sbuffer_destroy(&sb);
}

bool h_get(natsConnection *nc, const char *user, const char *viewer, pd_view *out,
           char *text_buf, size_t text_cap) {
    return h_get_fresh(nc, user, viewer, out, text_buf, text_cap, NULL);
}

bool h_get_fresh(natsConnection *nc, const char *user, const char *viewer, pd_view *out,
                 char *text_buf, size_t text_cap, uint64_t *as_of) {
    pd_reply_fresh f = {0};
    msgpack_sbuffer sb;
    pd_query q = {.type = PD_Q_GET, .viewer = S(viewer)};
    pd_str u = pd_str_c(user);
    msgpack_sbuffer_init(&sb);
    pd_query_encode(&sb, &q, &u, 1);
    natsMsg *m = h_request(nc, "presence.query.get", sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    if (m == NULL) return false;
    mp_reader r;
    uint32_t k;
    pd_err err;
    bool ok = false;
    if (pd_reply_top_decode(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), "users", &r,
                            &k, NULL, &f, &err) == PD_OK &&
        k == 1 && pd_view_decode(&r, out, &err) == PD_OK) {
        ok = true;
        if (as_of) *as_of = f.as_of;
        if (text_buf) {
            size_t c = out->text.n < text_cap - 1 ? out->text.n : text_cap - 1;
            memcpy(text_buf, out->text.p, c);
            text_buf[c] = '\0';
        }
        out->user = (pd_str){NULL, 0}; /* the message is gone after this */
        out->text = out->emoji = (pd_str){NULL, 0};
    }
    natsMsg_Destroy(m);
    return ok;
}

static char query_node[PD_ID_MAX + 1]; /* h_query_node: "" = the queue group */

void h_query_node(const char *node) {
    snprintf(query_node, sizeof query_node, "%s", node ? node : "");
}

/* The subject of a query of kind: the queue group's, or one node's. */
static const char *query_subject(const char *kind, char *buf, size_t cap) {
    if (query_node[0]) snprintf(buf, cap, "presence.query.%s.%s", kind, query_node);
    else snprintf(buf, cap, "presence.query.%s", kind);
    return buf;
}

bool h_get_many(natsConnection *nc, const char *const *users, int n, pd_view *out,
                char (*text)[H_TEXT_CAP], int64_t timeout_ms) {
    char subj[PD_ID_MAX + 32];
    msgpack_sbuffer sb;
    pd_query q = {.type = PD_Q_GET};
    pd_str *ids = calloc((size_t)n + 1, sizeof *ids);
    cr_assert(ids != NULL);
    for (int i = 0; i < n; i++) ids[i] = pd_str_c(users[i]);
    msgpack_sbuffer_init(&sb);
    pd_query_encode(&sb, &q, ids, (uint32_t)n);
    free(ids);
    natsMsg *m = h_request_ms(nc, query_subject("get", subj, sizeof subj), sb.data, sb.size,
                              timeout_ms);
    msgpack_sbuffer_destroy(&sb);
    if (m == NULL) return false;
    mp_reader r;
    uint32_t k;
    pd_err err;
    bool ok = false;
    if (pd_reply_top_decode(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), "users", &r,
                            &k, NULL, NULL, &err) == PD_OK &&
        k == (uint32_t)n) {
        ok = true;
        for (int i = 0; i < n && ok; i++) {
            ok = pd_view_decode(&r, &out[i], &err) == PD_OK &&
                 pd_str_eqc(out[i].user, users[i]);
            if (ok && text) {
                size_t c = out[i].text.n < H_TEXT_CAP - 1 ? out[i].text.n : H_TEXT_CAP - 1;
                memcpy(text[i], out[i].text.p, c);
                text[i][c] = '\0';
            }
            out[i].user = out[i].text = out[i].emoji = (pd_str){NULL, 0};
        }
    }
    natsMsg_Destroy(m);
    return ok;
}

/* ---- cluster query ------------------------------------------------------------- */

static bool read_id(mp_reader *r, char *buf) {
    pd_str s;
    if (!mpr_str(r, &s) || s.n > PD_ID_MAX) return false;
    memcpy(buf, s.p, s.n);
    buf[s.n] = '\0';
    return true;
}

static bool read_vc(mp_reader *r, h_cluster_node *e) {
    uint32_t n;
    if (!mpr_map(r, &n)) return false;
    for (uint32_t i = 0; i < n; i++) {
        char id[PD_ID_MAX + 1];
        int64_t v;
        if (!read_id(r, id) || !mpr_int(r, &v)) return false;
        if (e->nvc == H_CLUSTER_MAX) continue;
        memcpy(e->vc[e->nvc].node, id, sizeof id);
        e->vc[e->nvc++].seq = (uint64_t)v;
    }
    return true;
}

static bool read_cluster_node(mp_reader *r, h_cluster_node *e) {
    uint32_t n;
    memset(e, 0, sizeof *e);
    if (!mpr_map(r, &n)) return false;
    for (uint32_t i = 0; i < n; i++) {
        pd_str k;
        bool ok = pd_read_key(r, &k);
        if (!ok) return false;
        if (pd_str_eqc(k, "node")) ok = read_id(r, e->node);
        else if (pd_str_eqc(k, "alive")) ok = mpr_bool(r, &e->alive);
        else if (pd_str_eqc(k, "vc")) ok = read_vc(r, e);
        else if (pd_str_eqc(k, "devices")) ok = mpr_int(r, &e->devices);
        else if (pd_str_eqc(k, "users")) ok = mpr_int(r, &e->users);
        else if (pd_str_eqc(k, "last_heartbeat")) ok = mpr_int(r, &e->last_heartbeat);
        else ok = mpr_skip(r);
        if (!ok) return false;
    }
    return e->node[0] != '\0';
}

static bool read_cluster(mp_reader *r, h_cluster *out) {
    uint32_t n, k;
    memset(out, 0, sizeof *out);
    if (!mpr_map(r, &n)) return false;
    for (uint32_t i = 0; i < n; i++) {
        pd_str key;
        if (!pd_read_key(r, &key)) return false;
        if (pd_str_eqc(key, "node")) {
            if (!read_id(r, out->node)) return false;
        } else if (pd_str_eqc(key, "nodes")) {
            if (!mpr_array(r, &k)) return false;
            for (uint32_t j = 0; j < k; j++) {
                h_cluster_node e;
                if (!read_cluster_node(r, &e)) return false;
                if (out->n < H_CLUSTER_MAX) out->nodes[out->n++] = e;
            }
        } else if (!mpr_skip(r)) {
            return false;
        }
    }
    return out->node[0] != '\0' && mpr_remaining(r) == 0;
}

bool h_cluster_get(natsConnection *nc, h_cluster *out, int64_t timeout_ms) {
    char subj[PD_ID_MAX + 32];
    natsMsg *m = h_request_ms(nc, query_subject("cluster", subj, sizeof subj), "\x80", 1,
                              timeout_ms);
    mp_reader r;
    if (m == NULL) return false;
    mpr_init(&r, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    bool ok = read_cluster(&r, out);
    natsMsg_Destroy(m);
    return ok;
}

const h_cluster_node *h_cluster_find(const h_cluster *c, const char *node) {
    for (int i = 0; i < c->n; i++) {
        if (strcmp(c->nodes[i].node, node) == 0) return &c->nodes[i];
    }
    return NULL;
}

int64_t h_cluster_vc(const h_cluster_node *e, const char *origin) {
    for (int i = 0; e && i < e->nvc; i++) {
        if (strcmp(e->vc[i].node, origin) == 0) return (int64_t)e->vc[i].seq;
    }
    return -1;
}

/* ---- watcher --------------------------------------------------------------- */

#define H_WATCH_MAX 4096

typedef struct {
    char user[129];
    int status;
    int64_t ts;
    char text[257];
} h_note;

struct h_watch {
    natsConnection *nc;
    natsSubscription *sub;
    pthread_mutex_t mu;
    h_note notes[H_WATCH_MAX];
    int n;
};

static void on_note(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
    h_watch *w = closure;
    pd_view v;
    pd_err err;
    (void)nc;
    (void)sub;
    if (pd_notification_decode(natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg), &v,
                               &err) == PD_OK) {
        pthread_mutex_lock(&w->mu);
        if (w->n < H_WATCH_MAX) {
            h_note *o = &w->notes[w->n++];
            snprintf(o->user, sizeof o->user, "%.*s", (int)v.user.n, v.user.p);
            snprintf(o->text, sizeof o->text, "%.*s", (int)v.text.n, v.text.p);
            o->status = (int)v.status;
            o->ts = v.ts;
        }
        pthread_mutex_unlock(&w->mu);
    }
    natsMsg_Destroy(msg);
}

h_watch *h_watch_start(const h_nats *ns, const char *subject) {
    h_watch *w = calloc(1, sizeof *w);
    cr_assert(w != NULL);
    pthread_mutex_init(&w->mu, NULL);
    w->nc = h_connect(ns);
    natsStatus s = natsConnection_Subscribe(&w->sub, w->nc, subject ? subject : "presence.user.>",
                                            on_note, w);
    cr_assert(s == NATS_OK);
    natsConnection_Flush(w->nc);
    return w;
}

int h_watch_count(h_watch *w, const char *user) {
    int c = 0;
    pthread_mutex_lock(&w->mu);
    for (int i = 0; i < w->n; i++) {
        if (user == NULL || strcmp(w->notes[i].user, user) == 0) c++;
    }
    pthread_mutex_unlock(&w->mu);
    return c;
}

int h_watch_count_status(h_watch *w, const char *user, int status) {
    int c = 0;
    pthread_mutex_lock(&w->mu);
    for (int i = 0; i < w->n; i++) {
        if (strcmp(w->notes[i].user, user) == 0 && w->notes[i].status == status) c++;
    }
    pthread_mutex_unlock(&w->mu);
    return c;
}

static const h_note *last_note(h_watch *w, const char *user) {
    for (int i = w->n - 1; i >= 0; i--) {
        if (strcmp(w->notes[i].user, user) == 0) return &w->notes[i];
    }
    return NULL;
}

int h_watch_last_status(h_watch *w, const char *user) {
    pthread_mutex_lock(&w->mu);
    const h_note *o = last_note(w, user);
    int st = o ? o->status : -1;
    pthread_mutex_unlock(&w->mu);
    return st;
}

void h_watch_last_text(h_watch *w, const char *user, char *buf, size_t cap) {
    pthread_mutex_lock(&w->mu);
    const h_note *o = last_note(w, user);
    snprintf(buf, cap, "%s", o ? o->text : "");
    pthread_mutex_unlock(&w->mu);
}

bool h_watch_ts_monotonic(h_watch *w) {
    bool ok = true;
    pthread_mutex_lock(&w->mu);
    for (int i = 0; i < w->n && ok; i++) {
        for (int j = i + 1; j < w->n; j++) {
            if (strcmp(w->notes[i].user, w->notes[j].user) == 0) {
                ok = w->notes[j].ts > w->notes[i].ts;
                break;
            }
        }
    }
    pthread_mutex_unlock(&w->mu);
    return ok;
}

void h_watch_stop(h_watch *w) {
    if (w == NULL) return;
    /* Closed first: nats.c 3.4 can still be delivering to a subscription
     * destroyed meanwhile (nats-io/nats.c#637). */
    natsConnection_Close(w->nc);
    natsSubscription_Destroy(w->sub);
    natsConnection_Destroy(w->nc);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

/* ---- redis-server ---------------------------------------------------------------- */

/* The kernel's ephemeral range (outgoing connections take ports from it). */
static void ephemeral_range(int *lo, int *hi) {
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    *lo = 32768;
    *hi = 60999;
    if (f) {
        if (fscanf(f, "%d %d", lo, hi) != 2) *lo = 32768, *hi = 60999;
        fclose(f);
    }
}

/* A loopback port nobody listens on now, outside the kernel's ephemeral
 * range: a port from the kernel's pick for port 0 can be taken by an
 * outgoing connection before a server (re)binds it (a restarted server
 * keeps its port). Random, so that tests running side by side differ. */
int h_free_port(void) {
    static unsigned seed;
    int lo, hi, base = 20000;
    ephemeral_range(&lo, &hi);
    if (seed == 0) seed = (unsigned)getpid() ^ (unsigned)h_now_ms();
    /* Below the range if there is room, else above it. */
    bool below = lo - base > 2000;
    int from = below ? base : hi + 1, to = below ? lo - 1 : 65535;
    for (int tries = 0; tries < 200; tries++) {
        int port = from + (int)(rand_r(&seed) % (unsigned)(to - from + 1));
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        cr_assert(fd >= 0, "socket: %s", strerror(errno));
        bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok) return port;
    }
    cr_assert_fail("no free port in %d-%d", from, to);
    return 0;
}

static redisContext *redis_connect(const h_redis *rs) {
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", rs->port, tv);
    if (c && c->err == 0 && redisSetTimeout(c, tv) == REDIS_OK) return c;
    if (c) redisFree(c);
    return NULL;
}

static bool redis_pong(const h_redis *rs) {
    redisContext *c = redis_connect(rs);
    redisReply *r = c ? redisCommand(c, "PING") : NULL;
    bool ok = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
    freeReplyObject(r);
    if (c) redisFree(c);
    return ok;
}

/* True if redis-server answers on rs->port; else it is gone (a port taken
 * since h_free_port checked it, by a test running beside this one). */
static bool redis_try(h_redis *rs) {
    char port[16], log[300];
    snprintf(port, sizeof port, "%d", rs->port);
    snprintf(log, sizeof log, "%s/redis.log", rs->dir);
    char *argv[] = {"redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", rs->dir, "--logfile", "", NULL};
    rs->pid = spawn(argv, NULL, log);
    bool ok = H_POLL(redis_pong(rs) || waitpid(rs->pid, NULL, WNOHANG) == rs->pid, 10000);
    if (ok && redis_pong(rs)) return true;
    untrack(rs->pid);
    rs->pid = 0;
    return false;
}

static void redis_spawn(h_redis *rs) {
    cr_assert(redis_try(rs), "redis-server did not start on port %d (see %s/redis.log)",
              rs->port, rs->dir);
}

void h_redis_start(h_redis *rs, const char *dir) {
    memset(rs, 0, sizeof *rs);
    snprintf(rs->dir, sizeof rs->dir, "%s", dir);
    /* As h_nats_start: a new port when the one drawn was taken meanwhile. */
    for (int tries = 0; tries < 3; tries++) {
        rs->port = h_free_port();
        snprintf(rs->url, sizeof rs->url, "redis://127.0.0.1:%d", rs->port);
        snprintf(rs->env, sizeof rs->env, "PRESENCE_REDIS_URL=%s", rs->url);
        if (redis_try(rs)) return;
    }
    cr_assert_fail("redis-server did not start (see %s/redis.log)", rs->dir);
}

void h_redis_stop(h_redis *rs, int sig) {
    stop_pid(rs->pid, sig);
    untrack(rs->pid);
    rs->pid = 0;
}

void h_redis_restart(h_redis *rs) {
    cr_assert(rs->port > 0 && rs->pid == 0, "redis-server is running or never ran");
    redis_spawn(rs);
}

long long h_redis_strlen(const h_redis *rs, const char *key) {
    redisContext *c = redis_connect(rs);
    redisReply *r = c ? redisCommand(c, "STRLEN %s", key) : NULL;
    long long n = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    if (c) redisFree(c);
    return n;
}

uint8_t *h_redis_get(const h_redis *rs, const char *key, size_t *len) {
    redisContext *c = redis_connect(rs);
    redisReply *r = c ? redisCommand(c, "GET %s", key) : NULL;
    uint8_t *v = NULL;
    *len = 0;
    if (r && r->type == REDIS_REPLY_STRING && (v = malloc(r->len ? r->len : 1)) != NULL) {
        memcpy(v, r->str, r->len);
        *len = r->len;
    }
    freeReplyObject(r);
    if (c) redisFree(c);
    return v;
}

bool h_redis_set(const h_redis *rs, const char *key, const void *buf, size_t len) {
    redisContext *c = redis_connect(rs);
    redisReply *r = c ? redisCommand(c, "SET %s %b", key, buf, len) : NULL;
    bool ok = r && r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    if (c) redisFree(c);
    return ok;
}

/* ---- presence-sim ------------------------------------------------------------------ */

void h_sim_start(h_sim *s, const char *bin, const h_nats *ns, const char *const *args) {
    char *argv[64];
    int k = 0, fds[2];
    char log[300];
    memset(s, 0, sizeof *s);
    argv[k++] = (char *)bin;
    argv[k++] = "--nats";
    argv[k++] = (char *)ns->url;
    for (const char *const *a = args; *a && k < 63; a++) argv[k++] = (char *)*a;
    argv[k] = NULL;
    snprintf(log, sizeof log, "%s/sim.log", ns->dir);
    cr_assert(pipe2(fds, O_CLOEXEC) == 0, "pipe: %s", strerror(errno));
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    char **envp = h_env_build(NULL);
    s->pid = h_spawn(argv, envp, fds[1], fd);
    h_env_free(envp);
    if (fd >= 0) close(fd);
    close(fds[1]);
    s->out_fd = fds[0];
}

void h_sim_stop(h_sim *s) {
    size_t n = 0, cap = 1 << 16;
    int signals = 1;
    uint64_t t0 = h_now_ms();
    cr_assert(s->pid > 0, "presence-sim is not running");
    s->out = malloc(cap);
    cr_assert(s->out != NULL);
    kill(s->pid, SIGINT);
    for (;;) {
        struct pollfd p = {.fd = s->out_fd, .events = POLLIN};
        uint64_t t = h_now_ms() - t0;
        if (t > 10000 && signals == 1) kill(s->pid, SIGINT), signals++;
        if (t > 20000) kill(s->pid, SIGKILL);
        if (poll(&p, 1, 200) <= 0) continue;
        if (n + 4096 > cap) {
            char *o = realloc(s->out, cap *= 2);
            cr_assert(o != NULL);
            s->out = o;
        }
        ssize_t got = read(s->out_fd, s->out + n, cap - n - 1);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        n += (size_t)got;
    }
    s->out[n] = '\0';
    close(s->out_fd);
    int st;
    cr_assert(waitpid(s->pid, &st, 0) == s->pid);
    untrack(s->pid);
    s->pid = 0;
    s->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void h_sim_free(h_sim *s) {
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        untrack(s->pid);
        close(s->out_fd);
    }
    free(s->out);
    memset(s, 0, sizeof *s);
}

int64_t h_json_int(const char *js, const char *key) {
    char pat[160];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = js ? strstr(js, pat) : NULL;
    return p ? strtoll(p + strlen(pat), NULL, 10) : -1;
}

bool h_cluster_all_alive(natsConnection *nc, const char *const *ids, int n, int asks) {
    for (int a = 0; a < asks; a++) {
        h_cluster c;
        if (!h_cluster_get(nc, &c, 2000)) return false;
        for (int i = 0; i < n; i++) {
            const h_cluster_node *e = h_cluster_find(&c, ids[i]);
            if (e == NULL || !e->alive) return false;
        }
    }
    return true;
}

/* ---- secured servers (it_security.c) ------------------------------------------- */

void h_nats_start_conf(h_nats *ns, const char *dir, const char *conf, const char *const *env,
                       const char *scheme) {
    char port[16], log[300];
    memset(ns, 0, sizeof *ns);
    snprintf(ns->dir, sizeof ns->dir, "%s", dir);
    snprintf(port, sizeof port, "%d", h_free_port());
    snprintf(ns->url, sizeof ns->url, "%s://127.0.0.1:%s", scheme, port);
    snprintf(log, sizeof log, "%s/nats.log", dir);
    long from = h_log_size(log);
    char *argv[] = {"nats-server", "-c", (char *)conf, "-a", "127.0.0.1", "-p", port, NULL};
    ns->pid = spawn(argv, env, log);
    bool ok = H_POLL(h_log_contains_from(log, from, "Server is ready") ||
                     waitpid(ns->pid, NULL, WNOHANG) == ns->pid, 10000);
    cr_assert(ok && h_log_contains_from(log, from, "Server is ready"),
              "nats-server -c %s did not start (see %s)", conf, log);
}

void h_node_start_nc(h_node *nd, const h_nats *ns, const char *id, const char *const *env,
                     natsConnection *nc) {
    char e[5][300];
    const char *all[32];
    int k = 0;
    if (nd->pid == 0 && strcmp(nd->id, id) != 0) memset(nd, 0, sizeof *nd);
    cr_assert(!h_node_running(nd), "presenced %s is running", id);
    snprintf(nd->id, sizeof nd->id, "%s", id);
    snprintf(nd->log, sizeof nd->log, "%s/%s.log", ns->dir, id);
    long from = h_log_size(nd->log);
    snprintf(e[0], sizeof e[0], "PRESENCE_REDIS_URL=redis://127.0.0.1:1");
    snprintf(e[1], sizeof e[1], "PRESENCE_NATS_URL=%s", ns->url);
    snprintf(e[2], sizeof e[2], "PRESENCE_NODE_ID=%s", id);
    snprintf(e[3], sizeof e[3], "PRESENCE_LOG_LEVEL=debug");
    snprintf(e[4], sizeof e[4], "PRESENCE_SYNC_INTERVAL_MS=100");
    for (int i = 0; i < 5; i++) all[k++] = e[i];
    for (const char *const *x = env; x && *x && k < 31; x++) all[k++] = *x;
    all[k] = NULL;
    const char *bin = getenv("PD_PRESENCED_BIN");
    char *argv[] = {(char *)(bin && *bin ? bin : PRESENCED_BIN), NULL};
    nd->pid = spawn(argv, all, nd->log);
    bool ok = H_POLL((node_answers(nc, id) &&
                      h_log_contains_from(nd->log, from, "announcing changes")) ||
                     !h_node_running(nd), 10000);
    cr_assert(ok && h_node_running(nd), "presenced %s did not start (see %s)", id, nd->log);
}

static bool redis_any_reply(const h_redis *rs) {
    redisContext *c = redis_connect(rs);
    redisReply *r = c ? redisCommand(c, "PING") : NULL;
    bool ok = r != NULL;
    freeReplyObject(r);
    if (c) redisFree(c);
    return ok;
}

void h_redis_start_args(h_redis *rs, const char *dir, const char *const *args) {
    char port[16], log[300];
    char *argv[40];
    int k = 0;
    memset(rs, 0, sizeof *rs);
    snprintf(rs->dir, sizeof rs->dir, "%s", dir);
    rs->port = h_free_port();
    snprintf(rs->url, sizeof rs->url, "redis://127.0.0.1:%d", rs->port);
    snprintf(rs->env, sizeof rs->env, "PRESENCE_REDIS_URL=%s", rs->url);
    snprintf(port, sizeof port, "%d", rs->port);
    snprintf(log, sizeof log, "%s/redis.log", dir);
    const char *base[] = {"redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", dir, "--logfile", ""};
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++) argv[k++] = (char *)base[i];
    for (const char *const *a = args; a && *a && k < 39; a++) argv[k++] = (char *)*a;
    argv[k] = NULL;
    rs->pid = spawn(argv, NULL, log);
    bool ok = H_POLL(redis_any_reply(rs) || waitpid(rs->pid, NULL, WNOHANG) == rs->pid, 10000);
    cr_assert(ok && redis_any_reply(rs), "redis-server did not start on port %d (see %s)",
              rs->port, log);
}

/* ---- the metrics endpoint -------------------------------------------------------- */

int h_metrics_port(const char *log) {
    static const char needle[] = "metrics on http://127.0.0.1:";
    FILE *f = fopen(log, "r");
    char line[1024];
    int port = 0;
    while (f && fgets(line, sizeof line, f)) {
        char *p = strstr(line, needle);
        if (p) port = atoi(p + strlen(needle));
    }
    if (f) fclose(f);
    return port;
}

int h_http_get(int port, const char *path, char *buf, size_t cap) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    cr_assert(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "connect to metrics");
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: x\r\n\r\n", path);
    cr_assert(write(fd, req, (size_t)n) == n);
    size_t got = 0;
    ssize_t k;
    while (got < cap - 1 && (k = read(fd, buf + got, cap - 1 - got)) > 0) got += (size_t)k;
    buf[got] = '\0';
    close(fd);
    int status = 0;
    sscanf(buf, "HTTP/1.%*d %d", &status);
    char *body = strstr(buf, "\r\n\r\n");
    if (body) memmove(buf, body + 4, strlen(body + 4) + 1);
    return status;
}

bool h_metric_sample(const char *text, const char *name, double *v) {
    size_t n = strlen(name);
    for (const char *p = text; (p = strstr(p, name)) != NULL; p += n) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ') return sscanf(p + n, " %lf", v) == 1;
    }
    return false;
}

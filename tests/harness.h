/* harness.h - integration-test harness: real nats-server, redis-server,
 * presenced and presence-sim processes on free loopback ports, a NATS
 * client, and polling helpers.
 *
 * The node binary is the one built beside the tests, or $PD_PRESENCED_BIN.
 * Every test starts its own servers (Criterion runs tests in parallel
 * processes, so nothing may share a fixed port): nats-server listens on a
 * random port (-p -1) and reports it through --ports_file_dir, redis-server
 * on a port the kernel just reported free; presenced gets the URLs in its
 * environment. Everything started is stopped (SIGTERM,
 * then SIGKILL) by h_stop_all(), also registered with atexit(). */
#ifndef PD_HARNESS_H
#define PD_HARNESS_H
#include <nats/nats.h>
#include <stdbool.h>
#include <stdint.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include "wire/codec.h"

typedef struct {
    pid_t pid;
    char url[64];
    char dir[256];
} h_nats;

typedef struct {
    pid_t pid;
    char id[64];
    char log[300];
} h_node;

/* Starts nats-server (JetStream on) in a fresh temp dir; aborts the test on
 * failure. */
void h_nats_start(h_nats *ns);
void h_nats_stop(h_nats *ns);
/* Stops it with sig (SIGKILL: a crash) and waits for the exit; then
 * h_nats_restart starts it again on the same port and store, where the
 * clients reconnect by themselves. */
void h_nats_kill(h_nats *ns, int sig);
void h_nats_restart(h_nats *ns);

/* redis-server on a free loopback port, saving nothing (--save "",
 * --appendonly no: a restart comes back empty), its log in dir. env is
 * "PRESENCE_REDIS_URL=<url>" for the nodes' environment (later entries win
 * over the harness's default, which points nowhere). */
typedef struct {
    pid_t pid;
    int port;
    char url[64];
    char env[96];
    char dir[256];
} h_redis;

void h_redis_start(h_redis *rs, const char *dir);
/* Stops it with sig and waits for the exit. */
void h_redis_stop(h_redis *rs, int sig);
/* Starts it again on the same port (empty). */
void h_redis_restart(h_redis *rs);
/* STRLEN of key: -1 if Redis does not answer. */
long long h_redis_strlen(const h_redis *rs, const char *key);
/* The value of key (malloc'd, *len bytes), or NULL if absent or no answer. */
uint8_t *h_redis_get(const h_redis *rs, const char *key, size_t *len);
bool h_redis_set(const h_redis *rs, const char *key, const void *buf, size_t len);

/* Starts presenced with id against ns; env is a NULL-terminated list of
 * extra "KEY=VALUE" settings (may be NULL; the sync interval defaults to
 * 100 ms here). Waits until it answers P.query.cluster and has caught up
 * with the cluster. Aborts the test if it does not within 10 s. */
void h_node_start(h_node *nd, const h_nats *ns, const char *id, const char *const *env);
/* Starts again a node that ran before (killed or stopped), with the same
 * id and log, and waits as h_node_start does, for lines of the new life. */
void h_node_restart(h_node *nd, const h_nats *ns, const char *const *env);
/* Sends sig (and SIGCONT, so that a paused node gets it) and waits for the
 * exit; returns the exit status (waitpid form), -1 if it was not running. */
int h_node_stop(h_node *nd, int sig);
/* SIGSTOP, waiting until the node is stopped / SIGCONT. A paused node keeps
 * its NATS connection: the server still routes queries to it, and they go
 * unanswered until it resumes. */
void h_node_pause(h_node *nd);
void h_node_resume(h_node *nd);
bool h_node_running(h_node *nd);
/* SIGTERM, and expects exit status 0 (a sanitizer report fails it). */
void h_node_stop_clean(h_node *nd);

/* True if a line of the file at path contains needle. */
bool h_log_contains(const char *path, const char *needle);
/* The same, for lines from byte offset `from` on (h_log_size before). */
bool h_log_contains_from(const char *path, long from, const char *needle);
long h_log_size(const char *path);

/* presence-sim (bin) in the background against ns, its stdout on a pipe
 * and its stderr in <ns->dir>/sim.log. Stopping it: SIGINT ends the load,
 * it waits --drain for the last replies, prints its summary and exits. */
typedef struct {
    pid_t pid;
    int out_fd;
    int status;     /* exit status, -1 if it did not exit normally */
    char *out;      /* its stdout (the --json summary), malloc'd */
} h_sim;

void h_sim_start(h_sim *s, const char *bin, const h_nats *ns, const char *const *args);
/* SIGINT, then reads everything it prints and waits for the exit (a second
 * SIGINT after 10 s cuts a long drain, SIGKILL after 20 s). */
void h_sim_stop(h_sim *s);
void h_sim_free(h_sim *s);
/* The integer after "key": in a one-line JSON summary, or -1. */
int64_t h_json_int(const char *js, const char *key);

/* Connects a client; aborts on failure. */
natsConnection *h_connect(const h_nats *ns);

/* Request/reply with a 5 s timeout; returns the reply (caller destroys) or
 * NULL on timeout. */
natsMsg *h_request(natsConnection *nc, const char *subject, const void *data, size_t len);

/* The same with a timeout in ms. */
natsMsg *h_request_ms(natsConnection *nc, const char *subject, const void *data, size_t len,
                      int64_t timeout_ms);

/* Sends an event as a request to presence.events.<node> and decodes the
 * reply. Returns false if no reply came. */
bool h_event(natsConnection *nc, const char *node, const pd_event *ev, pd_reply *rep);
/* Publishes an event without a reply and flushes. */
void h_event_pub(natsConnection *nc, const char *node, const pd_event *ev);
/* Sends raw bytes as a request to subject and decodes the ok/error reply. */
bool h_raw_request(natsConnection *nc, const char *subject, const void *data, size_t len,
                   pd_reply *rep);

/* Shorthands to build events (strings are C strings, kept by reference). */
pd_event h_ev_connect(const char *server, const char *conn, const char *user, const char *device);
pd_event h_ev_conn(pd_event_type t, const char *server, const char *conn);
pd_event h_ev_status(const char *user, pd_chosen st);
pd_event h_ev_custom(const char *user, const char *text, const char *emoji, int64_t expires_at);
pd_event h_ev_server(pd_event_type t, const char *server);

/* Public view of one user through P.query.get (viewer may be NULL). */
bool h_get(natsConnection *nc, const char *user, const char *viewer, pd_view *out,
           char *text_buf, size_t text_cap);
/* The same, with the reply's `as_of` in *as_of. */
bool h_get_fresh(natsConnection *nc, const char *user, const char *viewer, pd_view *out,
                 char *text_buf, size_t text_cap, uint64_t *as_of);

/* Public views of n users through one P.query.get answered within
 * timeout_ms (false on timeout or a malformed reply). The string fields of
 * out[] are cleared; text, if not NULL, gets each user's custom text. */
#define H_TEXT_CAP 260
bool h_get_many(natsConnection *nc, const char *const *users, int n, pd_view *out,
                char (*text)[H_TEXT_CAP], int64_t timeout_ms);

/* A decoded P.query.cluster reply (at most H_CLUSTER_MAX nodes and vector
 * clock entries are kept). */
#define H_CLUSTER_MAX 8
typedef struct {
    char node[PD_ID_MAX + 1];
    bool alive;
    int nvc;
    struct {
        char node[PD_ID_MAX + 1];
        uint64_t seq;
    } vc[H_CLUSTER_MAX];
    int64_t devices, users, last_heartbeat;
} h_cluster_node;

typedef struct {
    char node[PD_ID_MAX + 1];   /* the answering node */
    int n;
    h_cluster_node nodes[H_CLUSTER_MAX];
} h_cluster;

/* Asks P.query.cluster; false on timeout or a malformed reply. */
bool h_cluster_get(natsConnection *nc, h_cluster *out, int64_t timeout_ms);
/* h_get_many and h_cluster_get ask node alone (P.query.<kind>.<node>) until
 * called again with NULL (the queue group, the default). */
void h_query_node(const char *node);
/* The entry of node in c, or NULL. */
const h_cluster_node *h_cluster_find(const h_cluster *c, const char *node);
/* True if `asks` cluster replies in a row (whichever node answers) list
 * every one of ids[0..n-1] as alive. */
bool h_cluster_all_alive(natsConnection *nc, const char *const *ids, int n, int asks);
/* The count of origin in an entry's vector clock, or -1 if absent. */
int64_t h_cluster_vc(const h_cluster_node *e, const char *origin);

/* Collects notifications from presence.user.> on its own connection. */
typedef struct h_watch h_watch;
h_watch *h_watch_start(const h_nats *ns, const char *subject);
/* Notifications seen so far for user (all users if NULL). */
int h_watch_count(h_watch *w, const char *user);
/* Notifications seen so far for user with this status (pd_public). */
int h_watch_count_status(h_watch *w, const char *user, int status);
/* The status of the last notification for user, or -1. */
int h_watch_last_status(h_watch *w, const char *user);
/* Copies the text of the last notification for user into buf. */
void h_watch_last_text(h_watch *w, const char *user, char *buf, size_t cap);
/* True if ts grew strictly for every user's notifications. */
bool h_watch_ts_monotonic(h_watch *w);
void h_watch_stop(h_watch *w);

uint64_t h_now_ms(void);
/* Wall-clock time in ms since the epoch (for expires_at and the like). */
int64_t h_wall_ms(void);
void h_sleep_ms(unsigned ms);

/* Polls cond every 5 ms until it holds or timeout_ms passes; evaluates to
 * whether it held. */
#define H_POLL(cond, timeout_ms)                                              \
    ({                                                                        \
        uint64_t h_deadline_ = h_now_ms() + (timeout_ms);                     \
        bool h_ok_;                                                           \
        while (!(h_ok_ = (cond)) && h_now_ms() < h_deadline_) h_sleep_ms(5);  \
        h_ok_;                                                                \
    })

/* ---- processes ---- */

/* A loopback port nobody listens on now, outside the kernel's ephemeral
 * range (see tests/freeport.py). */
int h_free_port(void);
/* Our environment with env's NAME=VALUE entries (NULL-terminated) replacing
 * or adding theirs, built before a fork; free with h_env_free. */
char **h_env_build(const char *const *env);
void h_env_free(char **envp);
/* Forks and execs argv (a path, or a name found in PATH) with envp; the
 * child's stdout goes to out_fd and its stderr to err_fd (-1: ours). The
 * child is killed if the test process dies, and with the test's other
 * processes at exit. */
pid_t h_spawn(char *const argv[], char **envp, int out_fd, int err_fd);
/* The presenced binary under test ($PD_PRESENCED_BIN or the one built). */
const char *h_presenced_bin(void);

/* ---- secured servers (it_security.c) ---- */

/* Starts nats-server with the configuration file conf (which sets no
 * listen address or port: the harness picks a free loopback port), its log
 * in dir/nats.log, and env ("KEY=VALUE", NULL-terminated) added to its
 * environment: nats-server reads the $NAME references of the file from
 * there. ns->url becomes scheme://127.0.0.1:PORT (scheme "nats" or "tls").
 * Aborts the test if the server does not start. */
void h_nats_start_conf(h_nats *ns, const char *dir, const char *conf, const char *const *env,
                       const char *scheme);

/* h_node_start (or, for a node that ran before, h_node_restart) for servers
 * that refuse anonymous clients: readiness is asked through nc, a
 * connection allowed to query, and env carries the node's credentials. */
void h_node_start_nc(h_node *nd, const h_nats *ns, const char *id, const char *const *env,
                     natsConnection *nc);

/* redis-server like h_redis_start, with extra arguments (e.g. "--aclfile",
 * path; NULL-terminated). Ready when it answers PING with anything, an
 * authentication error included. */
void h_redis_start_args(h_redis *rs, const char *dir, const char *const *args);

/* ---- the metrics endpoint (PRESENCE_METRICS_ADDR=127.0.0.1:0) ---- */

/* The port a node's log says its metrics are served on, 0 if not yet. */
int h_metrics_port(const char *log);
/* GET path from 127.0.0.1:port over a plain socket: the status code, and
 * the body in buf (NUL-terminated, cut at cap). */
int h_http_get(int port, const char *path, char *buf, size_t cap);
/* The value of the sample `name` (labels included, exactly as printed) in
 * a metrics text; false if absent. */
bool h_metric_sample(const char *text, const char *name, double *v);

#endif

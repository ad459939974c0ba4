/* main.c - presence-dash: a read-only web dashboard of a presence cluster
 * (docs/dashboard.md). It listens to the cluster on NATS (heartbeats
 * P.hb.*, notifications P.user.>), asks P.query.cluster every 2 s and
 * P.query.get / P.query.devices for a user lookup, and serves one page
 * (the files of dash/web) with live data as Server-Sent Events.
 *
 * Threads: nats.c's handlers only push messages into an inbox (node/inbox.h)
 * and wake the loop (the main thread), which alone owns the nodes table and
 * makes the `nodes` and `note` frames. A poller thread asks for the cluster
 * view, so a slow node never delays the feed. libmicrohttpd runs a thread
 * per connection: an open page blocks in dash_hub_next (dash_hub.h), the
 * only state shared with the loop. A user lookup sends its own requests.
 *
 * Exit codes: 0 stopped by SIGINT/SIGTERM, 2 bad settings, 3 NATS or the
 * HTTP address unusable. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <getopt.h>
#include <microhttpd.h>
#include <nats/nats.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "base/clock.h"
#include "base/config.h"
#include "base/log.h"
#include "dash_hub.h"
#include "dash_json.h"
#include "inbox.h"
#include "natsauth.h"
#include "wire/codec.h"

#ifndef PD_DASH_WEB_DEFAULT
#define PD_DASH_WEB_DEFAULT "/usr/local/share/presence-dash/web"
#endif
#define KIND_HB 0
#define KIND_NOTE 1
#define REQUEST_TIMEOUT_MS 1500
#define CLUSTER_EVERY_MS 2000
#define NODES_EVERY_MS 1000
#define SSE_KEEPALIVE_MS 15000

typedef struct {
    pd_config cfg;                  /* PRESENCE_* (NATS, prefix, timeouts) */
    char addr[64];                  /* PRESENCE_DASH_ADDR */
    char web[PD_CONFIG_PATH_MAX];   /* PRESENCE_DASH_WEB */
    natsConnection *nc;
    natsSubscription *sub_hb, *sub_note;
    pd_inbox inbox;
    pthread_mutex_t mu;             /* wake-up of the loop */
    pthread_cond_t cv;              /* the loop's */
    pthread_cond_t stop_cv;         /* the poller's */
    bool wake, stop;
    dash_hub *hub;
    dash_nodes *nodes;
    pd_ratelimit bad_log;           /* the loop's */
    struct MHD_Daemon *httpd;
} dash;

static void usage(FILE *out) {
    fprintf(out,
        "usage: presence-dash [--addr HOST:PORT] [--web DIR] [--server URL]\n"
        "A read-only web dashboard of a presence cluster (docs/dashboard.md).\n\n"
        "  --addr HOST:PORT  PRESENCE_DASH_ADDR: where to serve the page (default\n"
        "                    127.0.0.1:8080; port 0: any free port, printed at start)\n"
        "  --web DIR         PRESENCE_DASH_WEB: the page's files (default %s)\n"
        "  --server URL      PRESENCE_NATS_URL: NATS server(s), comma-separated\n\n"
        "It reads the node's settings PRESENCE_SUBJECT_PREFIX, PRESENCE_NODE_TIMEOUT_MS\n"
        "and PRESENCE_SERVER_TIMEOUT_MS (default 3 x PRESENCE_SYNC_INTERVAL_MS), and the\n"
        "NATS credentials and TLS\n"
        "settings PRESENCE_NATS_* (see presenced --help); it needs only the\n"
        "'dashboard' role of deploy/nats-accounts.conf.\n", PD_DASH_WEB_DEFAULT);
}

static void wake(dash *d) {
    pthread_mutex_lock(&d->mu);
    d->wake = true;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

static void on_hb(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *ud) {
    dash *d = ud;
    if (pd_inbox_push(&d->inbox, m, KIND_HB)) wake(d);
}

static void on_note(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *ud) {
    dash *d = ud;
    if (pd_inbox_push(&d->inbox, m, KIND_NOTE)) wake(d);
}

/* ---- NATS ---------------------------------------------------------------------- */

static int nats_start(dash *d) {
    natsOptions *o = NULL;
    char urlbuf[PD_CONFIG_URL_MAX], subj[PD_ID_MAX + 16], err[512];
    const char *urls[32];
    size_t n = pd_url_split(d->cfg.nats_url, urlbuf, sizeof urlbuf, urls, 32);
    natsStatus s = NATS_ERR;
    if (n == 0) {
        fprintf(stderr, "presence-dash: bad NATS URL list '%s'\n", d->cfg.nats_url);
        return 2;
    }
    natsOptions_Create(&o);
    natsOptions_SetServers(o, urls, (int)n);
    natsOptions_SetName(o, "presence-dash");
    natsOptions_SetSendAsap(o, true);
    natsOptions_SetMaxReconnect(o, -1);     /* a dashboard outlives restarts */
    natsOptions_SetRetryOnFailedConnect(o, true, NULL, NULL);
    natsOptions_SetMaxPendingMsgs(o, 100000);
    if (pd_natsauth_apply(o, &d->cfg, err, sizeof err) != PD_OK) {
        fprintf(stderr, "presence-dash: %s\n", err);
        natsOptions_Destroy(o);
        return 2;
    }
    s = natsConnection_Connect(&d->nc, o);
    natsOptions_Destroy(o);
    if (s == NATS_NOT_YET_CONNECTED) s = NATS_OK; /* it keeps trying in the background */
    if (s == NATS_OK) {
        snprintf(subj, sizeof subj, "%s.hb.*", d->cfg.subject_prefix);
        s = natsConnection_Subscribe(&d->sub_hb, d->nc, subj, on_hb, d);
    }
    if (s == NATS_OK) {
        snprintf(subj, sizeof subj, "%s.user.>", d->cfg.subject_prefix);
        s = natsConnection_Subscribe(&d->sub_note, d->nc, subj, on_note, d);
    }
    if (s != NATS_OK) {
        fprintf(stderr, "presence-dash: NATS at %s: %s\n", d->cfg.nats_url, natsStatus_GetText(s));
        return 3;
    }
    return 0;
}

/* A request on PREFIX.suffix; the reply (caller destroys) or NULL. */
static natsMsg *ask(dash *d, const char *suffix, const pd_query *q, const pd_str *users,
                    uint32_t n) {
    char subj[PD_ID_MAX + 32];
    msgpack_sbuffer sb;
    natsMsg *reply = NULL;
    msgpack_sbuffer_init(&sb);
    pd_query_encode(&sb, q, users, n);
    snprintf(subj, sizeof subj, "%s.%s", d->cfg.subject_prefix, suffix);
    if (natsConnection_Request(&reply, d->nc, subj, sb.data, (int)sb.size, REQUEST_TIMEOUT_MS) !=
        NATS_OK)
        reply = NULL;
    msgpack_sbuffer_destroy(&sb);
    return reply;
}

/* ---- the loop and the cluster poller ------------------------------------------ */

static void publish_json(dash *d, dash_frame_kind kind, const char *event, json_t *doc) {
    size_t len = 0;
    char *frame = doc ? dash_sse_frame(event, doc, &len) : NULL;
    json_decref(doc);
    if (frame) dash_hub_publish(d->hub, kind, frame, len);
}

/* A bad message is dropped and logged, at most 5 lines a second. */
static void bad_message(dash *d, natsMsg *m, const pd_err *err) {
    uint32_t suppressed = 0;
    if (!pd_ratelimit_allow(&d->bad_log, pd_mono_ms(), &suppressed)) return;
    if (suppressed) fprintf(stderr, "presence-dash: (%u more bad messages)\n", suppressed);
    fprintf(stderr, "presence-dash: bad message on %s dropped: %s: %s\n", natsMsg_GetSubject(m),
            pd_status_str(err->code), err->msg);
}

static void handle(dash *d, natsMsg *m, int kind, uint64_t now) {
    pd_err err = {PD_OK, ""};
    const char *data = natsMsg_GetData(m);
    size_t len = (size_t)natsMsg_GetDataLength(m);
    if (kind == KIND_HB) {
        if (dash_nodes_heartbeat(d->nodes, data, len, now, &err) != PD_OK) bad_message(d, m, &err);
        return;
    }
    json_t *note = dash_note_json(data, len, now, &err);
    if (note == NULL) bad_message(d, m, &err);
    else publish_json(d, DASH_FRAME_NOTE, "note", note);
}

static bool take_signal(const sigset_t *set) {
    struct timespec zero = {0, 0};
    return sigtimedwait(set, NULL, &zero) > 0;
}

static void loop(dash *d, const sigset_t *signals) {
    uint64_t next_nodes = 0, change = UINT64_MAX;
    while (!take_signal(signals)) {
        uint64_t now = pd_now_ms();
        pd_inbox_item *items;
        uint32_t n;
        pd_inbox_take(&d->inbox, &items, &n);
        for (uint32_t i = 0; i < n; i++) {
            handle(d, items[i].msg, items[i].kind, now);
            natsMsg_Destroy(items[i].msg);
        }
        pd_inbox_release(items);
        if (now >= next_nodes || now >= change) {
            publish_json(d, DASH_FRAME_NODES, "nodes", dash_nodes_json(d->nodes, now));
            next_nodes = now + NODES_EVERY_MS;
        }
        change = dash_nodes_next_change(d->nodes, now); /* heartbeats move it */
        /* Wait for a message, a node turning late or down, or 200 ms at most:
         * signals are looked at 5 times a second. */
        uint64_t due = change > now && change - now < 200 ? change - now : 200;
        struct timespec dl;
        clock_gettime(CLOCK_MONOTONIC, &dl);
        dl.tv_nsec += (long)due * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&d->mu);
        while (!d->wake && pthread_cond_timedwait(&d->cv, &d->mu, &dl) == 0) {}
        d->wake = false;
        pthread_mutex_unlock(&d->mu);
    }
}

static void *cluster_poller(void *ud) {
    dash *d = ud;
    pthread_mutex_lock(&d->mu);
    while (!d->stop) {
        pthread_mutex_unlock(&d->mu);
        pd_query q = {.type = PD_Q_CLUSTER};
        natsMsg *m = ask(d, "query.cluster", &q, NULL, 0);
        pd_err err = {PD_OK, ""};
        json_t *reply = m ? dash_mp_json(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m),
                                         &err) : NULL;
        const char *why = m == NULL ? "no node answered P.query.cluster" : reply ? NULL : err.msg;
        publish_json(d, DASH_FRAME_CLUSTER, "cluster",
                     json_pack("{s:I, s:o, s:s?}", "at", (json_int_t)pd_now_ms(), "reply",
                               reply ? reply : json_null(), "error", why));
        natsMsg_Destroy(m);
        struct timespec dl;
        clock_gettime(CLOCK_MONOTONIC, &dl);
        dl.tv_sec += CLUSTER_EVERY_MS / 1000;
        pthread_mutex_lock(&d->mu);
        while (!d->stop && pthread_cond_timedwait(&d->stop_cv, &d->mu, &dl) == 0) {}
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

/* ---- HTTP ---------------------------------------------------------------------- */

typedef struct {
    dash *d;
    char *buf;                      /* the frame being sent */
    size_t len, off;
    uint64_t pos;                   /* the next frame of the hub */
} sse_client;

static ssize_t sse_read(void *cls, uint64_t at, char *out, size_t max) {
    sse_client *c = cls;
    while (c->off >= c->len) {
        bool stopped = false;
        free(c->buf);
        c->off = 0;
        c->buf = dash_hub_next(c->d->hub, &c->pos, &c->len, SSE_KEEPALIVE_MS, &stopped);
        if (stopped) return MHD_CONTENT_READER_END_OF_STREAM;
        if (c->buf == NULL) { /* quiet: a comment keeps proxies and the socket check going */
            c->buf = strdup(": keep-alive\n\n");
            c->len = c->buf ? strlen(c->buf) : 0;
        }
        if (c->buf == NULL) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = c->len - c->off < max ? c->len - c->off : max;
    memcpy(out, c->buf + c->off, n);
    c->off += n;
    return (ssize_t)n;
}

static void sse_free(void *cls) {
    sse_client *c = cls;
    free(c->buf);
    free(c);
}

static struct MHD_Response *sse_response(dash *d) {
    sse_client *c = calloc(1, sizeof *c);
    if (c == NULL) return NULL;
    c->d = d;
    c->buf = dash_hub_join(d->hub, &c->pos, &c->len);
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, sse_read, c, sse_free);
    if (r == NULL) sse_free(c);
    else MHD_add_response_header(r, "Content-Type", "text/event-stream; charset=utf-8");
    return r;
}

static struct MHD_Response *json_response(json_t *doc) {
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text == NULL) return NULL;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) free(text);
    else MHD_add_response_header(r, "Content-Type", "application/json");
    return r;
}

/* Asks every node alive in the latest nodes frame for the user (own view,
 * devices) on its own subjects P.query.<kind>.<node>, and compares. */
static json_t *agreement(dash *d, const pd_query *own, const pd_query *dev) {
    char *state = dash_hub_state(d->hub);
    json_t *doc = state ? json_loads(state, 0, NULL) : NULL, *node;
    const char *ids[DASH_NODES_MAX];
    pd_str get[DASH_NODES_MAX] = {{0}}, devs[DASH_NODES_MAX] = {{0}};
    natsMsg *msgs[2 * DASH_NODES_MAX] = {0};
    size_t n = 0, i;
    free(state);
    json_array_foreach(json_object_get(doc, "nodes"), i, node) {
        const char *id = json_string_value(json_object_get(node, "node"));
        if (n == DASH_NODES_MAX || id == NULL || !json_is_true(json_object_get(node, "alive")))
            continue;
        char sg[PD_ID_MAX + 16], sd[PD_ID_MAX + 16];
        snprintf(sg, sizeof sg, "query.get.%s", id);
        snprintf(sd, sizeof sd, "query.devices.%s", id);
        ids[n] = id;
        msgs[2 * n] = ask(d, sg, own, &own->viewer, 1);
        msgs[2 * n + 1] = ask(d, sd, dev, NULL, 0);
        for (int k = 0; k < 2; k++) {
            natsMsg *m = msgs[2 * n + k];
            if (m) (k ? devs : get)[n] = (pd_str){natsMsg_GetData(m),
                                                  (uint32_t)natsMsg_GetDataLength(m)};
        }
        n++;
    }
    json_t *out = dash_agreement_json(ids, get, devs, n);
    for (i = 0; i < 2 * n; i++) natsMsg_Destroy(msgs[i]);
    json_decref(doc);
    return out;
}

/* GET /api/user?user=ID: the public view, the own view, the devices, and
 * whether the nodes agree. */
static struct MHD_Response *user_response(dash *d, const char *user, unsigned *status) {
    if (user == NULL || !pd_id_valid(user, strlen(user))) {
        *status = MHD_HTTP_BAD_REQUEST;
        return json_response(json_pack("{s:s}", "error", "?user= must be a valid user id "
                                       "(1-128 bytes of [A-Za-z0-9._:@=+-])"));
    }
    pd_str u = pd_str_c(user);
    pd_query pub = {.type = PD_Q_GET}, own = {.type = PD_Q_GET, .viewer = u},
             dev = {.type = PD_Q_DEVICES, .user = u};
    natsMsg *m[3] = {ask(d, "query.get", &pub, &u, 1), ask(d, "query.get", &own, &u, 1),
                     ask(d, "query.devices", &dev, NULL, 0)};
#define M(i) (m[i] ? natsMsg_GetData(m[i]) : NULL), (m[i] ? (size_t)natsMsg_GetDataLength(m[i]) : 0)
    json_t *doc = dash_user_json(user, M(0), M(1), M(2));
#undef M
    for (int i = 0; i < 3; i++) natsMsg_Destroy(m[i]);
    if (doc) json_object_set_new(doc, "agreement", agreement(d, &own, &dev));
    return json_response(doc);
}

/* A file of the web folder: a plain name with a known extension only. */
static struct MHD_Response *file_response(dash *d, const char *url, unsigned *status) {
    static const char *const types[][2] = {
        {".html", "text/html; charset=utf-8"}, {".css", "text/css; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"}, {".svg", "image/svg+xml"},
        {".png", "image/png"}, {".ico", "image/x-icon"}};
    const char *name = strcmp(url, "/") == 0 ? "index.html" : url + 1;
    const char *type = NULL, *dot = strrchr(name, '.');
    size_t plain = strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-");
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(dot, types[i][0]) == 0) type = types[i][1];
    char path[PD_CONFIG_PATH_MAX + 80];
    int fd = -1;
    struct stat st;
    if (type != NULL && plain == (size_t)(dot - name) && plain > 0 && strlen(name) < 64) {
        snprintf(path, sizeof path, "%s/%s", d->web, name);
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0) close(fd);
        *status = MHD_HTTP_NOT_FOUND;
        static const char nf[] = "not found\n";
        return MHD_create_response_from_buffer(sizeof nf - 1, (void *)nf, MHD_RESPMEM_PERSISTENT);
    }
    struct MHD_Response *r = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
    if (r == NULL) close(fd);
    else MHD_add_response_header(r, "Content-Type", type);
    return r;
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_len, void **con_cls) {
    dash *d = cls;
    unsigned status = MHD_HTTP_OK;
    struct MHD_Response *r;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        static const char msg[] = "presence-dash is read-only: GET only\n";
        r = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
    } else if (strcmp(url, "/events") == 0) {
        r = sse_response(d);
    } else if (strcmp(url, "/api/state") == 0) {
        char *s = dash_hub_state(d->hub);
        r = s ? MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE) : NULL;
        if (r) MHD_add_response_header(r, "Content-Type", "application/json");
        else free(s);
    } else if (strcmp(url, "/api/user") == 0) {
        r = user_response(d, MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "user"),
                          &status);
    } else {
        r = file_response(d, url, &status);
    }
    if (r == NULL) return MHD_NO;
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static int http_start(dash *d) {
    struct sockaddr_in sa = {.sin_family = AF_INET};
    char host[64];
    const char *colon = strrchr(d->addr, ':');
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    size_t hl = colon ? (size_t)(colon - d->addr) : 0;
    if (colon == NULL || hl >= sizeof host || end == colon + 1 || *end || port < 0 || port > 65535) {
        fprintf(stderr, "presence-dash: PRESENCE_DASH_ADDR: '%s' is not HOST:PORT (IPv4)\n", d->addr);
        return 2;
    }
    memcpy(host, d->addr, hl);
    host[hl] = '\0';
    if (strcmp(host, "localhost") == 0) snprintf(host, sizeof host, "127.0.0.1");
    if (inet_pton(AF_INET, host[0] ? host : "0.0.0.0", &sa.sin_addr) != 1) {
        fprintf(stderr, "presence-dash: PRESENCE_DASH_ADDR: '%s' is not an IPv4 address\n", host);
        return 2;
    }
    sa.sin_port = htons((uint16_t)port);
    d->httpd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION,
                                (uint16_t)port, NULL, NULL, answer, d, MHD_OPTION_SOCK_ADDR,
                                (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT, 64u,
                                MHD_OPTION_CONNECTION_TIMEOUT, 60u, MHD_OPTION_END);
    if (d->httpd == NULL) {
        fprintf(stderr, "presence-dash: cannot listen on %s\n", d->addr);
        return 3;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d->httpd, MHD_DAEMON_INFO_BIND_PORT);
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof ip);
    printf("presence-dash: serving http://%s:%u/ (NATS %s)\n", ip,
           info ? info->port : (unsigned)port, d->cfg.nats_url);
    fflush(stdout);
    return 0;
}

/* ---- settings and main ---------------------------------------------------------- */

static int settings(dash *d, int argc, char **argv) {
    static const struct option opts[] = {{"addr", required_argument, NULL, 'a'},
                                         {"web", required_argument, NULL, 'w'},
                                         {"server", required_argument, NULL, 's'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    char err[512];
    const char *env;
    if (pd_config_load_env_prefix(&d->cfg, "PRESENCE_", NULL, err, sizeof err) != PD_OK) {
        fprintf(stderr, "presence-dash: %s\n", err);
        return 2;
    }
    env = getenv("PRESENCE_NODE_TIMEOUT_MS"); /* as presenced: 3 x the sync interval */
    if (env == NULL || *env == '\0') d->cfg.node_timeout_ms = 3 * d->cfg.sync_interval_ms;
    env = getenv("PRESENCE_SERVER_TIMEOUT_MS");
    if (env == NULL || *env == '\0') d->cfg.server_timeout_ms = 3 * d->cfg.sync_interval_ms;
    env = getenv("PRESENCE_DASH_ADDR");
    snprintf(d->addr, sizeof d->addr, "%s", env && *env ? env : "127.0.0.1:8080");
    env = getenv("PRESENCE_DASH_WEB");
    snprintf(d->web, sizeof d->web, "%s", env && *env ? env : PD_DASH_WEB_DEFAULT);
    for (int c; (c = getopt_long(argc, argv, "h", opts, NULL)) != -1;) {
        if (c == 'a') snprintf(d->addr, sizeof d->addr, "%s", optarg);
        else if (c == 'w') snprintf(d->web, sizeof d->web, "%s", optarg);
        else if (c == 's') snprintf(d->cfg.nats_url, sizeof d->cfg.nats_url, "%s", optarg);
        else if (c == 'h') { usage(stdout); exit(0); }
        else { usage(stderr); return 2; }
    }
    if (optind < argc) {
        fprintf(stderr, "presence-dash: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (pd_config_check_auth(&d->cfg, err, sizeof err) != PD_OK) {
        fprintf(stderr, "presence-dash: %s\n", err);
        return 2;
    }
    char index[PD_CONFIG_PATH_MAX + 16];
    snprintf(index, sizeof index, "%s/index.html", d->web);
    if (access(index, R_OK) != 0) {
        fprintf(stderr, "presence-dash: PRESENCE_DASH_WEB: no readable %s\n", index);
        return 2;
    }
    return 0;
}

int main(int argc, char **argv) {
    static dash d;
    sigset_t signals;
    pthread_t poller;
    pthread_condattr_t ca;
    int rc;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, NULL); /* every thread inherits it */
    signal(SIGPIPE, SIG_IGN);
    if ((rc = settings(&d, argc, argv)) != 0) return rc;
    d.bad_log = (pd_ratelimit)PD_RATELIMIT_INIT(5, 1000);
    pthread_mutex_init(&d.mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&d.cv, &ca);
    pthread_cond_init(&d.stop_cv, &ca);
    pthread_condattr_destroy(&ca);
    d.hub = dash_hub_new();
    d.nodes = dash_nodes_new(d.cfg.node_timeout_ms, d.cfg.server_timeout_ms);
    if (d.hub == NULL || d.nodes == NULL || pd_inbox_init(&d.inbox) != PD_OK) {
        fprintf(stderr, "presence-dash: out of memory\n");
        return 3;
    }
    pd_inbox_limit(&d.inbox, 100000, 64u << 20, 0);
    rc = nats_start(&d);
    if (rc == 0) rc = http_start(&d);
    if (rc == 0 && pthread_create(&poller, NULL, cluster_poller, &d) != 0) rc = 3;
    if (rc == 0) {
        loop(&d, &signals);
        pthread_mutex_lock(&d.mu);
        d.stop = true;
        pthread_cond_broadcast(&d.stop_cv);
        pthread_mutex_unlock(&d.mu);
        pthread_join(poller, NULL);
        fprintf(stderr, "presence-dash: stopping\n");
    }
    dash_hub_stop(d.hub);
    if (d.httpd) MHD_stop_daemon(d.httpd);
    pd_inbox_close(&d.inbox);
    if (d.nc) natsConnection_Close(d.nc);
    natsSubscription_Destroy(d.sub_hb); /* after the close: nats.c#637 */
    natsSubscription_Destroy(d.sub_note);
    natsConnection_Destroy(d.nc);
    pd_inbox_free(&d.inbox);
    dash_nodes_free(d.nodes);
    dash_hub_free(d.hub);
    nats_CloseAndWait(2000); /* its threads done before exit: see presencectl.c */
    return rc;
}

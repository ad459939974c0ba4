/* bench_pd.c - measurements through presenced: sync latency (pd-lat), a
 * fast device loader (load) and the wait for a converged cluster
 * (converge).
 *
 * pd-lat connects `users` users (one device each, spread over the nodes),
 * then sends paced `status` events that flip each user between busy and
 * auto, so that every event changes the user's public status and makes
 * exactly one notification. Event i goes to user i % users, whose next
 * event is `users` events later: a notification names its user, and the
 * user names the one event in flight. One event in trace_every carries a
 * trace id; every node that applies it reports its apply time on
 * P.trace.<node> (schemas/cluster.md, "Tracing"), so "every node applied"
 * is the last of those times. Both are measured from the send time, on
 * CLOCK_REALTIME, shared by every process of the machine. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "bench.h"
#include "wire/codec.h"

#define BARRIER_EVERY 20000   /* load: events between two round trips per node */

/* ---- small helpers ------------------------------------------------------------------- */

static void pub_event(natsConnection *nc, msgpack_sbuffer *sb, const char *prefix,
                      const char *node, const pd_event *ev) {
    char subj[256];
    msgpack_sbuffer_clear(sb);
    pd_event_encode(sb, ev, NULL, 0);
    snprintf(subj, sizeof subj, "%s.events.%s", prefix, node);
    natsConnection_Publish(nc, subj, sb->data, (int)sb->size);
}

/* A status-auto request through node for user: its reply means the node
 * has handled everything this connection sent it before. */
static bool barrier(natsConnection *nc, const char *prefix, const char *node, const char *user) {
    char subj[256];
    msgpack_sbuffer sb;
    natsMsg *reply = NULL;
    pd_event ev = {.type = PD_EV_STATUS, .status = PD_CHOSEN_AUTO, .user = pd_str_c(user)};
    msgpack_sbuffer_init(&sb);
    pd_event_encode(&sb, &ev, NULL, 0);
    snprintf(subj, sizeof subj, "%s.events.%s", prefix, node);
    natsStatus s = natsConnection_Request(&reply, nc, subj, sb.data, (int)sb.size, 60000);
    msgpack_sbuffer_destroy(&sb);
    natsMsg_Destroy(reply);
    if (s != NATS_OK) fprintf(stderr, "pd-bench: node %s did not answer: %s\n", node,
                              natsStatus_GetText(s));
    return s == NATS_OK;
}

static bool barrier_all(natsConnection *nc, const bench_opts *o, const char *user) {
    for (uint32_t j = 0; j < o->nnodes; j++) {
        if (!barrier(nc, o->prefix, o->nodes[j], user)) return false;
    }
    return true;
}

/* "<prefix><digits>" -> the number, or -1. */
static int64_t id_number(pd_str s, const char *prefix) {
    size_t k = strlen(prefix);
    int64_t v = 0;
    if (s.n <= k || s.n > k + 12 || memcmp(s.p, prefix, k) != 0) return -1;
    for (size_t i = k; i < s.n; i++) {
        if (s.p[i] < '0' || s.p[i] > '9') return -1;
        v = v * 10 + (s.p[i] - '0');
    }
    return v;
}

/* ---- pd-lat ------------------------------------------------------------------------------ */

typedef struct {
    const bench_opts *o;
    uint64_t n;               /* measured events */
    uint32_t users;
    char tag[32];             /* user ids are <tag><i>: fresh users every run */
    char barrier_user[48];
    int64_t *pending;         /* per user: the event in flight, -1 = none */
    uint8_t *expect;          /* per event: the public status it must produce */
    uint64_t *send, *note;    /* per event: sent, notified (realtime ns) */
    uint64_t *applied;        /* per event and node: apply time from P.trace */
    uint8_t *online;          /* setup: per user, online seen */
    uint64_t online_n, notes, traces, stray; /* atomics */
    bool measuring;
} lat_ctx;

static void on_note(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *ud) {
    lat_ctx *c = ud;
    uint64_t now = bench_now_ns();
    pd_view v;
    pd_err err;
    (void)nc;
    (void)sub;
    if (pd_notification_decode(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), &v, &err) ==
        PD_OK) {
        int64_t u = id_number(v.user, c->tag);
        if (u >= 0 && (uint64_t)u < c->users) {
            if (!__atomic_load_n(&c->measuring, __ATOMIC_ACQUIRE)) {
                if (v.status == PD_PUB_ONLINE && !c->online[u]) {
                    c->online[u] = 1;
                    __atomic_add_fetch(&c->online_n, 1, __ATOMIC_RELEASE);
                }
            } else {
                int64_t i = __atomic_load_n(&c->pending[u], __ATOMIC_ACQUIRE);
                if (i >= 0 && c->note[i] == 0 && v.status == c->expect[i]) {
                    c->note[i] = now;
                    __atomic_add_fetch(&c->notes, 1, __ATOMIC_RELEASE);
                } else {
                    __atomic_add_fetch(&c->stray, 1, __ATOMIC_RELAXED);
                }
            }
        }
    }
    natsMsg_Destroy(m);
}

/* P.trace.<node>: {"v", "node", "at", "trace": [ids]}. */
static void on_trace(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *ud) {
    lat_ctx *c = ud;
    mp_reader r;
    uint32_t nk, nids = 0;
    int64_t at = 0, node = -1;
    pd_str ids = {0};
    (void)nc;
    (void)sub;
    mpr_init(&r, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    if (mpr_map(&r, &nk)) {
        for (uint32_t i = 0; i < nk; i++) {
            pd_str k, s;
            if (!pd_read_key(&r, &k)) break;
            if (pd_str_eqc(k, "at")) mpr_int(&r, &at);
            else if (pd_str_eqc(k, "trace")) mpr_raw(&r, &ids);
            else if (pd_str_eqc(k, "node") && mpr_str(&r, &s)) {
                for (uint32_t j = 0; j < c->o->nnodes; j++)
                    if (pd_str_eqc(s, c->o->nodes[j])) node = j;
            } else mpr_skip(&r);
        }
    }
    mp_reader ir;
    mpr_init(&ir, ids.p, ids.n);
    if (node >= 0 && at > 0 && ids.n && mpr_array(&ir, &nids)) {
        for (uint32_t i = 0; i < nids; i++) {
            int64_t id;
            if (!mpr_int(&ir, &id)) break;
            if (id < 1 || (uint64_t)id > c->n) continue;
            uint64_t *slot = &c->applied[(uint64_t)(id - 1) * c->o->nnodes + (uint64_t)node];
            if (*slot == 0) {
                *slot = (uint64_t)at;
                __atomic_add_fetch(&c->traces, 1, __ATOMIC_RELEASE);
            }
        }
    }
    natsMsg_Destroy(m);
}

/* Connects every user's one device, round-robin over the nodes, and waits
 * until the watcher saw each of them online. */
static bool lat_setup(lat_ctx *c, natsConnection *pub) {
    const bench_opts *o = c->o;
    msgpack_sbuffer sb;
    char conn[64], user[64], server[64];
    bool ok = true;
    msgpack_sbuffer_init(&sb);
    for (uint32_t u = 0; u < c->users && ok; u++) {
        uint32_t j = u % o->nnodes;
        snprintf(conn, sizeof conn, "%sc%u", c->tag, u);
        snprintf(user, sizeof user, "%s%u", c->tag, u);
        snprintf(server, sizeof server, "bs-%s", o->nodes[j]);
        pd_event ev = {.type = PD_EV_CONNECT, .server = pd_str_c(server), .conn = pd_str_c(conn),
                       .user = pd_str_c(user), .device = pd_str_c("web")};
        pub_event(pub, &sb, o->prefix, o->nodes[j], &ev);
        if ((u + 1) % BARRIER_EVERY == 0) ok = barrier_all(pub, o, c->barrier_user);
    }
    msgpack_sbuffer_destroy(&sb);
    if (!ok || !barrier_all(pub, o, c->barrier_user)) return false;
    uint64_t deadline = bench_mono_ns() + 60000000000u;
    while (__atomic_load_n(&c->online_n, __ATOMIC_ACQUIRE) < c->users) {
        if (bench_mono_ns() > deadline) {
            fprintf(stderr, "pd-bench: only %llu of %u users came online\n",
                    (unsigned long long)c->online_n, c->users);
            return false;
        }
        bench_sleep_ms(10);
    }
    bench_sleep_ms(300); /* the last deltas and heartbeats settle */
    return true;
}

static void lat_send(lat_ctx *c, natsConnection *pub, double rate) {
    const bench_opts *o = c->o;
    msgpack_sbuffer sb;
    char user[64];
    msgpack_sbuffer_init(&sb);
    uint64_t t0 = bench_mono_ns() + 1000000, next_progress = t0 + 1000000000u;
    for (uint64_t i = 0; i < c->n; i++) {
        uint32_t u = (uint32_t)(i % c->users), j = (uint32_t)(i % o->nnodes);
        bool busy = (i / c->users) % 2 == 0;
        snprintf(user, sizeof user, "%s%u", c->tag, u);
        pd_event ev = {.type = PD_EV_STATUS, .user = pd_str_c(user),
                       .status = busy ? PD_CHOSEN_BUSY : PD_CHOSEN_AUTO};
        if (o->trace_every && i % o->trace_every == 0) {
            ev.has_trace = true;
            ev.trace = i + 1;
        }
        c->expect[i] = busy ? PD_PUB_BUSY : PD_PUB_ONLINE;
        __atomic_store_n(&c->pending[u], (int64_t)i, __ATOMIC_RELEASE);
        uint64_t due = t0 + (uint64_t)((double)i * 1e9 / rate);
        if (due > bench_mono_ns()) bench_sleep_until(due);
        c->send[i] = bench_now_ns();
        pub_event(pub, &sb, o->prefix, o->nodes[j], &ev);
        if (bench_mono_ns() >= next_progress) {
            bench_progress("  %llu/%llu events sent, %llu notified, %llu trace reports",
                           (unsigned long long)i + 1, (unsigned long long)c->n,
                           (unsigned long long)__atomic_load_n(&c->notes, __ATOMIC_ACQUIRE),
                           (unsigned long long)__atomic_load_n(&c->traces, __ATOMIC_ACQUIRE));
            next_progress += 1000000000u;
        }
    }
    natsConnection_FlushTimeout(pub, 5000);
    msgpack_sbuffer_destroy(&sb);
}

static void lat_report(lat_ctx *c, uint64_t ntraced, double secs) {
    const bench_opts *o = c->o;
    uint64_t *nl = calloc(c->n + 1, sizeof *nl), *al = calloc(c->n + 1, sizeof *al);
    uint64_t *ol = calloc(c->n + 1, sizeof *ol);
    uint64_t nn = 0, na = 0, no = 0;
    for (uint64_t i = 0; nl && al && ol && i < c->n; i++) {
        if (c->note[i]) nl[nn++] = c->note[i] > c->send[i] ? c->note[i] - c->send[i] : 0;
        if (!o->trace_every || i % o->trace_every != 0) continue;
        const uint64_t *a = &c->applied[i * o->nnodes];
        uint64_t last = 0;
        bool all = true;
        for (uint32_t j = 0; j < o->nnodes; j++) {
            if (a[j] == 0) all = false;
            else if (a[j] > last) last = a[j];
        }
        uint64_t origin = a[i % o->nnodes];
        if (origin) ol[no++] = origin > c->send[i] ? origin - c->send[i] : 0;
        if (all) al[na++] = last > c->send[i] ? last - c->send[i] : 0;
        else if (getenv("BENCH_DEBUG"))
            fprintf(stderr, "trace %llu: %llu %llu %llu\n", (unsigned long long)i + 1,
                    (unsigned long long)a[0], (unsigned long long)a[1], (unsigned long long)a[2]);
    }
    bench_lat ln, la, lo;
    bench_lat_compute(nl, nn, &ln);
    bench_lat_compute(al, na, &la);
    bench_lat_compute(ol, no, &lo);
    printf("{\"kind\":\"pd_lat\",\"rate\":%.0f,\"achieved_rate\":%.0f,\"nodes\":%u,\"users\":%u,"
           "\"sent\":%llu,\"traced\":%llu,\"lost_notify\":%llu,\"lost_trace\":%llu,"
           "\"stray_notify\":%llu,",
           o->rate, (double)c->n / secs, o->nnodes, c->users, (unsigned long long)c->n,
           (unsigned long long)ntraced, (unsigned long long)(c->n - nn),
           (unsigned long long)(ntraced - na), (unsigned long long)c->stray);
    bench_lat_json(stdout, "notify", &ln);
    putchar(',');
    bench_lat_json(stdout, "applied_all", &la);
    putchar(',');
    bench_lat_json(stdout, "applied_origin", &lo);
    puts("}");
    bench_progress("  every node applied: p50 %.1f us p99 %.1f us (%llu traced); "
                   "notification: p50 %.1f us p99 %.1f us", la.p50, la.p99,
                   (unsigned long long)na, ln.p50, ln.p99);
    free(nl);
    free(al);
    free(ol);
}

int bench_pd_lat(const bench_opts *o) {
    lat_ctx c = {.o = o, .users = o->users ? o->users : 10000};
    natsConnection *pub = NULL, *wc = NULL, *tc = NULL;
    natsSubscription *ws = NULL, *ts = NULL;
    char subj[256];
    int rc = 1;
    c.n = (uint64_t)(o->rate * o->secs);
    uint64_t ntraced = o->trace_every ? (c.n + o->trace_every - 1) / o->trace_every : 0;
    c.pending = malloc(sizeof *c.pending * c.users);
    c.online = calloc(c.users, 1);
    c.expect = calloc(c.n + 1, 1);
    c.send = calloc(c.n + 1, sizeof *c.send);
    c.note = calloc(c.n + 1, sizeof *c.note);
    c.applied = calloc((c.n + 1) * o->nnodes, sizeof *c.applied);
    if (!c.pending || !c.online || !c.expect || !c.send || !c.note || !c.applied || c.n == 0)
        goto done;
    for (uint32_t u = 0; u < c.users; u++) c.pending[u] = -1;
    snprintf(c.tag, sizeof c.tag, "b%ldu", (long)getpid());
    snprintf(c.barrier_user, sizeof c.barrier_user, "%sbarrier", c.tag);
    pub = bench_connect(o->url, o->asap, "pd-bench-server");
    wc = bench_connect(o->url, true, "pd-bench-watcher");
    tc = bench_connect(o->url, true, "pd-bench-trace");
    if (!pub || !wc || !tc) goto done;
    snprintf(subj, sizeof subj, "%s.user.>", o->prefix);
    if (natsConnection_Subscribe(&ws, wc, subj, on_note, &c) != NATS_OK) goto done;
    snprintf(subj, sizeof subj, "%s.trace.*", o->prefix);
    if (natsConnection_Subscribe(&ts, tc, subj, on_trace, &c) != NATS_OK) goto done;
    natsSubscription_SetPendingLimits(ws, -1, -1);
    natsSubscription_SetPendingLimits(ts, -1, -1);
    natsConnection_Flush(wc);
    natsConnection_Flush(tc);
    bench_progress("pd-lat: connecting %u users over %u node(s)", c.users, o->nnodes);
    if (!lat_setup(&c, pub)) goto done;
    bench_progress("pd-lat: %.0f events/s for %.1f s, one in %u traced", o->rate, o->secs,
                   o->trace_every);
    __atomic_store_n(&c.measuring, true, __ATOMIC_RELEASE);
    uint64_t t0 = bench_mono_ns();
    lat_send(&c, pub, o->rate);
    double secs = (double)(bench_mono_ns() - t0) / 1e9;
    uint64_t deadline = bench_mono_ns() + 5000000000u;
    while ((__atomic_load_n(&c.notes, __ATOMIC_ACQUIRE) < c.n ||
            __atomic_load_n(&c.traces, __ATOMIC_ACQUIRE) < ntraced * o->nnodes) &&
           bench_mono_ns() < deadline)
        bench_sleep_ms(5);
    natsSubscription_Unsubscribe(ws);
    natsSubscription_Unsubscribe(ts);
    bench_sleep_ms(20); /* callbacks in progress end */
    lat_report(&c, ntraced, secs);
    rc = c.notes * 100 >= c.n * 99 ? 0 : 1;
done:
    natsSubscription_Destroy(ws);
    natsSubscription_Destroy(ts);
    bench_close(pub);
    bench_close(wc);
    bench_close(tc);
    nats_CloseAndWait(2000);
    free(c.pending);
    free(c.online);
    free(c.expect);
    free(c.send);
    free(c.note);
    free(c.applied);
    return rc;
}

/* ---- load ------------------------------------------------------------------------------------ */

int bench_load(const bench_opts *o) {
    static const char *const labels[] = {"web", "mobile", "desktop"};
    uint64_t d = o->count;
    uint32_t users = o->users ? o->users : (uint32_t)d;
    char conn[32], user[32], server[64], buser[32];
    msgpack_sbuffer sb;
    bool ok = true;
    natsConnection *nc = bench_connect(o->url, o->asap, "pd-bench-loader");
    if (nc == NULL) return 1;
    msgpack_sbuffer_init(&sb);
    snprintf(buser, sizeof buser, "lu0");
    bench_progress("load: %llu devices of %u users over %u node(s)", (unsigned long long)d,
                   users, o->nnodes);
    uint64_t t0 = bench_mono_ns(), next_progress = t0 + 1000000000u;
    for (uint64_t i = 0; i < d && ok; i++) {
        uint32_t j = (uint32_t)(i % o->nnodes);
        snprintf(conn, sizeof conn, "lc%llu", (unsigned long long)i);
        snprintf(user, sizeof user, "lu%llu", (unsigned long long)(i % users));
        snprintf(server, sizeof server, "ls-%s", o->nodes[j]);
        pd_event ev = {.type = PD_EV_CONNECT, .server = pd_str_c(server), .conn = pd_str_c(conn),
                       .user = pd_str_c(user),
                       .device = pd_str_c(labels[(i / users) % 3])};
        pub_event(nc, &sb, o->prefix, o->nodes[j], &ev);
        if ((i + 1) % BARRIER_EVERY == 0) ok = barrier_all(nc, o, buser);
        if (bench_mono_ns() >= next_progress) {
            bench_progress("  %llu/%llu devices", (unsigned long long)i + 1,
                           (unsigned long long)d);
            next_progress += 1000000000u;
        }
    }
    if (ok) ok = barrier_all(nc, o, buser);
    double secs = (double)(bench_mono_ns() - t0) / 1e9;
    msgpack_sbuffer_destroy(&sb);
    bench_close(nc);
    nats_CloseAndWait(2000);
    printf("{\"kind\":\"load\",\"ok\":%s,\"devices\":%llu,\"users\":%u,\"nodes\":%u,"
           "\"secs\":%.3f,\"events_per_s\":%.0f}\n",
           ok ? "true" : "false", (unsigned long long)d, users, o->nnodes, secs,
           (double)d / secs);
    bench_progress("  %llu devices in %.2f s (%.0f/s)", (unsigned long long)d, secs,
                   (double)d / secs);
    return ok ? 0 : 1;
}

/* ---- churn ---------------------------------------------------------------------------------- */

/* --count distinct users (ids tagged with --mode, so that each run's are
 * new) each connect one device and leave at once: what anonymous or guest
 * ids do to a node over months, in seconds. The retention forgets them. */
int bench_churn(const bench_opts *o) {
    uint64_t d = o->count;
    const char *tag = o->mode ? o->mode : "c";
    char conn[48], server[64], buser[32];
    msgpack_sbuffer sb;
    bool ok = true;
    natsConnection *nc = bench_connect(o->url, o->asap, "pd-bench-churn");
    if (nc == NULL) return 1;
    msgpack_sbuffer_init(&sb);
    snprintf(buser, sizeof buser, "churn-barrier");
    bench_progress("churn: %llu distinct users over %u node(s)", (unsigned long long)d, o->nnodes);
    uint64_t t0 = bench_mono_ns(), next_progress = t0 + 1000000000u;
    for (uint64_t i = 0; i < d && ok; i++) {
        uint32_t j = (uint32_t)(i % o->nnodes);
        snprintf(conn, sizeof conn, "g.%s.%llu", tag, (unsigned long long)i);
        snprintf(server, sizeof server, "cs-%s", o->nodes[j]);
        pd_event ev = {.type = PD_EV_CONNECT, .server = pd_str_c(server), .conn = pd_str_c(conn),
                       .user = pd_str_c(conn), .device = pd_str_c("web")};
        pub_event(nc, &sb, o->prefix, o->nodes[j], &ev);
        ev = (pd_event){.type = PD_EV_DISCONNECT, .server = pd_str_c(server),
                        .conn = pd_str_c(conn)};
        pub_event(nc, &sb, o->prefix, o->nodes[j], &ev);
        if ((i + 1) % (BARRIER_EVERY / 2) == 0) ok = barrier_all(nc, o, buser);
        if (bench_mono_ns() >= next_progress) {
            bench_progress("  %llu/%llu users", (unsigned long long)i + 1, (unsigned long long)d);
            next_progress += 1000000000u;
        }
    }
    if (ok) ok = barrier_all(nc, o, buser);
    double secs = (double)(bench_mono_ns() - t0) / 1e9;
    msgpack_sbuffer_destroy(&sb);
    bench_close(nc);
    nats_CloseAndWait(2000);
    printf("{\"kind\":\"churn\",\"ok\":%s,\"users\":%llu,\"nodes\":%u,\"secs\":%.3f,"
           "\"users_per_s\":%.0f}\n",
           ok ? "true" : "false", (unsigned long long)d, o->nnodes, secs, (double)d / secs);
    return ok ? 0 : 1;
}

/* ---- converge ------------------------------------------------------------------------------- */

typedef struct {
    char node[PD_ID_MAX + 1];
    bool alive;
    int64_t devices, users;
    uint32_t nvc;
    char vc_node[BENCH_NODES_MAX][PD_ID_MAX + 1];
    int64_t vc_seq[BENCH_NODES_MAX];
} cl_node;

static bool read_cl_node(mp_reader *r, cl_node *e) {
    uint32_t n, m;
    pd_str k, s;
    memset(e, 0, sizeof *e);
    if (!mpr_map(r, &n)) return false;
    for (uint32_t i = 0; i < n; i++) {
        if (!pd_read_key(r, &k)) return false;
        if (pd_str_eqc(k, "node") && mpr_str(r, &s) && s.n <= PD_ID_MAX) {
            memcpy(e->node, s.p, s.n);
        } else if (pd_str_eqc(k, "alive")) {
            if (!mpr_bool(r, &e->alive)) return false;
        } else if (pd_str_eqc(k, "devices")) {
            if (!mpr_int(r, &e->devices)) return false;
        } else if (pd_str_eqc(k, "users")) {
            if (!mpr_int(r, &e->users)) return false;
        } else if (pd_str_eqc(k, "vc")) {
            if (!mpr_map(r, &m)) return false;
            for (uint32_t j = 0; j < m; j++) {
                int64_t seq;
                if (!mpr_str(r, &s) || !mpr_int(r, &seq)) return false;
                if (e->nvc == BENCH_NODES_MAX || s.n > PD_ID_MAX) continue;
                memcpy(e->vc_node[e->nvc], s.p, s.n);
                e->vc_node[e->nvc][s.n] = '\0';
                e->vc_seq[e->nvc++] = seq;
            }
        } else if (!mpr_skip(r)) {
            return false;
        }
    }
    return true;
}

/* Asks P.query.cluster; fills up to max nodes, returns how many (-1: none). */
static int cluster_get(natsConnection *nc, const char *prefix, cl_node *out, int max) {
    char subj[256];
    natsMsg *m = NULL;
    mp_reader r;
    uint32_t n, k;
    pd_str key;
    int got = -1;
    snprintf(subj, sizeof subj, "%s.query.cluster", prefix);
    if (natsConnection_Request(&m, nc, subj, "\x80", 1, 2000) != NATS_OK) return -1;
    mpr_init(&r, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    if (mpr_map(&r, &n)) {
        for (uint32_t i = 0; i < n; i++) {
            if (!pd_read_key(&r, &key)) break;
            if (!pd_str_eqc(key, "nodes")) {
                mpr_skip(&r);
                continue;
            }
            if (!mpr_array(&r, &k)) break;
            got = 0;
            for (uint32_t j = 0; j < k; j++) {
                cl_node e;
                if (!read_cl_node(&r, &e)) break;
                if (got < max) out[got++] = e;
            }
        }
    }
    natsMsg_Destroy(m);
    return got;
}

static int64_t vc_of(const cl_node *e, const char *origin) {
    for (uint32_t i = 0; i < e->nvc; i++)
        if (strcmp(e->vc_node[i], origin) == 0) return e->vc_seq[i];
    return -1;
}

/* Every expected node alive with `want` devices, and all vector clocks equal. */
static bool converged(const cl_node *v, int n, const bench_opts *o, int64_t want) {
    if (n < (int)o->nnodes) return false;
    for (int i = 0; i < n; i++) {
        bool expected = false;
        for (uint32_t j = 0; j < o->nnodes; j++) expected |= strcmp(v[i].node, o->nodes[j]) == 0;
        if (!expected) continue;
        if (!v[i].alive || (want >= 0 && v[i].devices != want)) return false;
        for (uint32_t j = 0; j < o->nnodes; j++) {
            if (vc_of(&v[i], o->nodes[j]) != vc_of(&v[0], o->nodes[j])) return false;
        }
    }
    return true;
}

int bench_converge(const bench_opts *o) {
    cl_node v[BENCH_NODES_MAX * 2];
    int n = -1;
    bool ok = false;
    int64_t want = o->count ? (int64_t)o->count : -1;
    natsConnection *nc = bench_connect(o->url, true, "pd-bench-converge");
    if (nc == NULL) return 1;
    uint64_t t0 = bench_mono_ns(), deadline = t0 + (uint64_t)(o->timeout * 1e9);
    while (!ok && bench_mono_ns() < deadline) {
        n = cluster_get(nc, o->prefix, v, (int)(sizeof v / sizeof v[0]));
        ok = converged(v, n, o, want);
        if (!ok) bench_sleep_ms(20);
    }
    double ms = (double)(bench_mono_ns() - t0) / 1e6;
    printf("{\"kind\":\"converge\",\"ok\":%s,\"ms\":%.0f,\"want_devices\":%lld,\"nodes\":[",
           ok ? "true" : "false", ms, (long long)want);
    for (int i = 0; i < n; i++)
        printf("%s{\"node\":\"%s\",\"alive\":%s,\"devices\":%lld,\"users\":%lld}", i ? "," : "",
               v[i].node, v[i].alive ? "true" : "false", (long long)v[i].devices,
               (long long)v[i].users);
    puts("]}");
    if (!ok) {
        bench_progress("converge: not converged after %.0f ms:", ms);
        for (int i = 0; i < n; i++)
            bench_progress("  %s alive=%d devices=%lld", v[i].node, v[i].alive,
                           (long long)v[i].devices);
    }
    bench_close(nc);
    nats_CloseAndWait(2000);
    return ok ? 0 : 1;
}

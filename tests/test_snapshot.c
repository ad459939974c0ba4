/* test_snapshot.c - snapshots (common/sync/snapshot.c) and the persistence side
 * of replication (common/sync/repl.c: pd_repl_snapshot_info, pd_repl_restore,
 * pd_repl_replay_delta, pd_repl_restore_done), with no Redis and no NATS.
 *
 * The world: replicas of two nodes, n1 (whose snapshot is taken and which
 * "restarts" as new pd_repl objects with growing incarnations) and n2 (a
 * peer), joined by an in-order message queue. Every delta anyone sends is
 * also appended to `stream`, which plays JetStream's PRESENCE_DELTAS: the
 * replay of a restart walks it. Socket servers a0 and a1 are attached to
 * n1, b0 to n2; the world remembers their live connections so that every
 * random event it sends is valid.
 *
 * A restarted n1 is compared with the replica it replaces, at the same
 * time: every user's public and own view (status, custom status, device
 * count) and device list (last_active aside: see collect_dev), and the
 * device total. last_seen and ts are left
 * out: the snapshot does not carry when a user was last seen or last
 * announced (schemas/snapshot.md), so they are not part of what a restart
 * restores. The offline delay is 0 so that no user is in a grace period,
 * which is not carried either. */
#include "base/log.h"
#include "prop_fixtures.h"
#include "sync/repl.h"
#include "sync/snapshot.h"

#define NR 4          /* replicas: 0 n1, 1 n2, 2 and 3 later lives of n1 */
#define NUSERS 24
#define MAXCONN 512
#define NSERVERS 3

static const char *const RID[NR] = {"n1", "n2", "n1", "n1"};
static const char *const SERVER[NSERVERS] = {"a0", "a1", "b0"};
static const int SERVER_ROLE[NSERVERS] = {0, 0, 1}; /* 0: n1, 1: n2 */
static const pd_model_cfg MCFG = {
    .idle_timeout_ms = 3600000, .offline_delay_ms = 0, .server_timeout_ms = 3600000};

typedef enum { M_DELTA, M_HB, M_REQ, M_PART } mkind;

typedef struct {
    mkind kind;
    int from, to;
    uint8_t *buf;
    size_t len;
} msg;

typedef struct world world;

typedef struct {
    world *w;
    int i;
} endpoint;

typedef struct {
    int requester;
} reply_to;

typedef struct {
    char id[16];
    int user, server;
    bool live;
} sconn;

struct world {
    pd_repl *r[NR];
    endpoint ep[NR];
    bool live[NR];
    int n1;                 /* the replica that is n1 now */
    msg *q;
    size_t nq, qhead, qcap;
    msg *stream;            /* every delta sent, in order (JetStream) */
    size_t ns, scap;
    bool deaf[NR];          /* deltas sent to it are lost */
    sconn c[MAXCONN];
    int nc;
    uint64_t now;
    rng rnd;
};

/* ---- the network ------------------------------------------------------------------ */

static void push(msg **v, size_t *n, size_t *cap, msg m) {
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 256;
        *v = realloc(*v, *cap * sizeof **v);
        REQUIRE(*v != NULL, "out of memory");
    }
    (*v)[(*n)++] = m;
}

static msg copy_msg(mkind kind, int from, int to, const void *buf, size_t len) {
    msg m = {kind, from, to, malloc(len ? len : 1), len};
    REQUIRE(m.buf != NULL, "out of memory");
    memcpy(m.buf, buf, len);
    return m;
}

static void send_to_peers(world *w, mkind kind, int from, const void *buf, size_t len) {
    for (int j = 0; j < NR; j++) {
        if (kind == M_DELTA && w->deaf[j]) continue;
        if (w->live[j] && j != from && strcmp(RID[j], RID[from]) != 0)
            push(&w->q, &w->nq, &w->qcap, copy_msg(kind, from, j, buf, len));
    }
}

static void io_delta(void *ud, const void *buf, size_t len) {
    endpoint *e = ud;
    push(&e->w->stream, &e->w->ns, &e->w->scap, copy_msg(M_DELTA, e->i, -1, buf, len));
    send_to_peers(e->w, M_DELTA, e->i, buf, len);
}

static void io_hb(void *ud, const void *buf, size_t len) {
    endpoint *e = ud;
    send_to_peers(e->w, M_HB, e->i, buf, len);
}

static void io_req(void *ud, pd_str target, const void *buf, size_t len) {
    endpoint *e = ud;
    for (int j = NR - 1; j >= 0; j--) {
        if (e->w->live[j] && pd_str_eqc(target, RID[j])) {
            push(&e->w->q, &e->w->nq, &e->w->qcap, copy_msg(M_REQ, e->i, j, buf, len));
            return;
        }
    }
}

static void io_part(void *ud, void *reply_ctx, const void *buf, size_t len) {
    endpoint *e = ud;
    const reply_to *rt = reply_ctx;
    push(&e->w->q, &e->w->nq, &e->w->qcap, copy_msg(M_PART, e->i, rt->requester, buf, len));
}

static const pd_repl_io IO = {.send_delta = io_delta, .send_heartbeat = io_hb,
                              .send_sync_request = io_req, .send_sync_part = io_part};

/* Delivers everything queued, in order, to the replicas still live. */
static void pump(world *w) {
    while (w->qhead < w->nq) {
        msg m = w->q[w->qhead++]; /* a copy: delivering may grow the queue */
        pd_repl *to = w->live[m.to] ? w->r[m.to] : NULL;
        pd_err err;
        reply_to rt = {m.from};
        pd_status s = PD_OK;
        if (to && m.kind == M_DELTA) s = pd_repl_on_delta(to, m.buf, m.len, w->now, &err);
        if (to && m.kind == M_HB) s = pd_repl_on_heartbeat(to, m.buf, m.len, w->now, &err);
        if (to && m.kind == M_REQ) s = pd_repl_on_sync_request(to, m.buf, m.len, &rt, &err);
        if (to && m.kind == M_PART) s = pd_repl_on_sync_part(to, m.buf, m.len, w->now, &err);
        REQUIRE(s == PD_OK, "message %d from %d to %d refused: %s", m.kind, m.from, m.to, err.msg);
        free(m.buf);
    }
    w->nq = w->qhead = 0;
}

static pd_repl *replica(world *w, int i, uint64_t inc) {
    pd_repl_cfg cfg = {.sync_interval_ms = 100, .node_timeout_ms = 300, .inc = inc,
                       .max_msg_bytes = 4096};
    w->ep[i] = (endpoint){w, i};
    pd_repl_io io = IO;
    io.ud = &w->ep[i];
    w->r[i] = pd_repl_new(&cfg, &MCFG, pd_str_c(RID[i]), &io, w->now);
    REQUIRE(w->r[i] != NULL, "pd_repl_new");
    return w->r[i];
}

static void world_init(world *w, uint64_t seed) {
    memset(w, 0, sizeof *w);
    pd_log_set_level(PD_LOG_ERROR); /* node up/down lines are noise here */
    w->rnd.s = seed;
    w->now = 1700000000000ULL;
    replica(w, 0, 1);
    replica(w, 1, 1);
    w->live[0] = w->live[1] = true;
    w->n1 = 0;
}

static void world_free(world *w) {
    for (int i = 0; i < NR; i++) pd_repl_free(w->r[i]);
    for (size_t i = w->qhead; i < w->nq; i++) free(w->q[i].buf);
    for (size_t i = 0; i < w->ns; i++) free(w->stream[i].buf);
    free(w->q);
    free(w->stream);
}

/* Time passes for the live replicas, in steps of `step` ms. */
static void advance(world *w, uint64_t ms, uint64_t step) {
    for (uint64_t t = 0; t < ms; t += step) {
        w->now += step;
        for (int i = 0; i < NR; i++)
            if (w->live[i]) pd_repl_tick(w->r[i], w->now);
        pump(w);
    }
}

/* ---- socket-server events -------------------------------------------------------- */

static char user_buf[NUSERS][8];

static const char *user_id(int u) {
    snprintf(user_buf[u], sizeof user_buf[u], "u%d", u);
    return user_buf[u];
}

static pd_repl *node_of_server(world *w, int k) {
    return SERVER_ROLE[k] == 0 ? w->r[w->n1] : w->r[1];
}

static void event(world *w, pd_repl *r, const pd_event *ev) {
    pd_apply_result res;
    pd_err err = {PD_OK, ""};
    pd_status s = pd_repl_local(r, ev, w->now, &res, &err);
    REQUIRE(s == PD_OK, "%s refused: %s", pd_event_type_name(ev->type), err.msg);
    pd_repl_flush(r);
    pump(w);
}

static void ev_connect(world *w, int k, int user) {
    REQUIRE(w->nc < MAXCONN, "too many connections");
    sconn *c = &w->c[w->nc];
    snprintf(c->id, sizeof c->id, "c%d", w->nc++);
    c->user = user;
    c->server = k;
    c->live = true;
    pd_event ev = {.type = PD_EV_CONNECT, .server = pd_str_c(SERVER[k]), .conn = pd_str_c(c->id),
                   .user = pd_str_c(user_id(user)),
                   .device = pd_str_c(rng_below(&w->rnd, 2) ? "web" : "mobile")};
    event(w, node_of_server(w, k), &ev);
}

/* A random live connection, or -1. */
static int pick_live(world *w) {
    int live = 0;
    for (int i = 0; i < w->nc; i++) live += w->c[i].live;
    if (live == 0) return -1;
    int pick = (int)rng_below(&w->rnd, (uint32_t)live);
    for (int i = 0; i < w->nc; i++)
        if (w->c[i].live && pick-- == 0) return i;
    return -1;
}

static void ev_conn(world *w, pd_event_type t, int i) {
    sconn *c = &w->c[i];
    pd_event ev = {.type = t, .server = pd_str_c(SERVER[c->server]), .conn = pd_str_c(c->id)};
    if (t == PD_EV_DISCONNECT) c->live = false;
    event(w, node_of_server(w, c->server), &ev);
}

static void ev_register(world *w, bool custom) {
    static const pd_chosen modes[] = {PD_CHOSEN_AUTO, PD_CHOSEN_AWAY, PD_CHOSEN_BUSY,
                                      PD_CHOSEN_INVISIBLE};
    static const char *const texts[] = {"", "lunch", "in a meeting", "focus"};
    int u = (int)rng_below(&w->rnd, NUSERS);
    pd_event ev = {.type = custom ? PD_EV_CUSTOM : PD_EV_STATUS, .user = pd_str_c(user_id(u))};
    if (custom) {
        ev.text = pd_str_c(texts[rng_below(&w->rnd, 4)]);
        if (ev.text.n && rng_pct(&w->rnd, 50)) ev.emoji = pd_str_c(":x:");
        if (ev.text.n && rng_pct(&w->rnd, 50)) ev.expires_at = (int64_t)w->now + 86400000;
    } else {
        ev.status = modes[rng_below(&w->rnd, 4)];
    }
    event(w, rng_pct(&w->rnd, 50) ? w->r[w->n1] : w->r[1], &ev);
}

/* One random event, valid for the connections the servers hold; the live
 * replicas' timers run first (heartbeats every 100 ms keep them alive to
 * each other). */
static void random_event(world *w) {
    uint32_t x = rng_below(&w->rnd, 100);
    int i = pick_live(w);
    w->now += 1 + rng_below(&w->rnd, 5);
    for (int k = 0; k < NR; k++)
        if (w->live[k]) pd_repl_tick(w->r[k], w->now);
    pump(w);
    if (x < 35 || i < 0)
        ev_connect(w, (int)rng_below(&w->rnd, NSERVERS), (int)rng_below(&w->rnd, NUSERS));
    else if (x < 55) ev_conn(w, PD_EV_DISCONNECT, i);
    else if (x < 65) ev_conn(w, PD_EV_ACTIVITY, i);
    else if (x < 75) ev_conn(w, PD_EV_IDLE, i);
    else ev_register(w, x >= 87);
}

static void random_events(world *w, int n) {
    for (int k = 0; k < n; k++) random_event(w);
}

/* ---- snapshots, restarts, comparisons --------------------------------------------- */

/* A snapshot of replica i; between steps of one bucket, up to `fuzz`
 * random events change the model being written. */
static void take_snapshot(world *w, int i, int fuzz, uint8_t **buf, size_t *len) {
    pd_snap_info info;
    pd_repl_snapshot_info(w->r[i], &info, w->now);
    pd_model *m = pd_repl_model(w->r[i]);
    pd_snap *s = pd_snap_begin(m, &info);
    REQUIRE(s != NULL, "pd_snap_begin");
    while (!pd_snap_step(s, m, 1)) {
        if (fuzz) random_events(w, (int)rng_below(&w->rnd, (uint32_t)fuzz + 1));
    }
    REQUIRE(pd_snap_finish(s, buf, len) == PD_OK, "pd_snap_finish");
}

static void replay(world *w, pd_repl *r, size_t from) {
    for (size_t k = from; k < w->ns; k++) {
        pd_err err;
        pd_status s = pd_repl_replay_delta(r, w->stream[k].buf, w->stream[k].len, w->now, &err);
        REQUIRE(s == PD_OK, "replay of delta %zu refused: %s", k, err.msg);
    }
}

/* n1 starts again as replica i: the snapshot (if any), the stream from
 * `from`, `passes` times, then its devices go out as its new incarnation. */
static pd_repl *restart_n1(world *w, int i, const uint8_t *snap, size_t len, size_t from,
                           int passes) {
    w->live[w->n1] = false;
    pd_repl *r = replica(w, i, (uint64_t)i + 1);
    if (snap) {
        pd_snap_info info;
        pd_err err = {PD_OK, ""};
        pd_status s = pd_repl_restore(r, snap, len, w->now, &info, &err);
        REQUIRE(s == PD_OK, "restore refused: %s", err.msg);
    }
    for (int p = 0; p < passes; p++) replay(w, r, from);
    w->live[i] = true;
    w->n1 = i;
    pd_repl_restore_done(r, w->now);
    pump(w);
    return r;
}

typedef struct {
    char v[64][96];
    int n;
} dev_list;

/* last_active is left out: activity that keeps a device active makes no op
 * (only a change of state does), so peers and the stream never carry it,
 * and a restart knows it only as of the snapshot or of the device's last
 * change of state. */
static void collect_dev(void *ud, const pd_device_view *d) {
    dev_list *l = ud;
    if (l->n == 64) return;
    snprintf(l->v[l->n++], sizeof l->v[0], "%.*s|%.*s|%.*s|%.*s|%s|%lld", (int)d->server.n,
             d->server.p, (int)d->conn.n, d->conn.p, (int)d->node.n, d->node.p, (int)d->device.n,
             d->device.p, d->state == PD_DEV_IDLE ? "idle" : "active", (long long)d->connected_at);
}

static int cmp_str(const void *a, const void *b) { return strcmp(a, b); }

/* ver: compared too (both replicas live: a dead one missed the peers' VER
 * ops about its own drop, which its next life rightly holds). */
static void views_equal(const pd_view *a, const pd_view *b, const char *user, const char *what,
                        const char *who, bool ver) {
    REQUIRE(a->status == b->status, "%s: %s's %s status %d, expected %d", who, user, what,
            b->status, a->status);
    REQUIRE(a->devices == b->devices, "%s: %s's %s devices %u, expected %u", who, user, what,
            b->devices, a->devices);
    REQUIRE(pd_str_eq(a->text, b->text) && pd_str_eq(a->emoji, b->emoji) &&
                a->expires_at == b->expires_at,
            "%s: %s's %s custom status '%.*s' differs from '%.*s'", who, user, what,
            (int)b->text.n, b->text.p, (int)a->text.n, a->text.p);
    REQUIRE(!ver || a->ver == b->ver, "%s: %s's %s ver %llu, expected %llu", who, user, what,
            (unsigned long long)b->ver, (unsigned long long)a->ver);
}

/* Replica y shows exactly what replica x shows (see the top of the file). */
static void expect_same(world *w, int x, int y, const char *who) {
    pd_model *mx = pd_repl_model(w->r[x]), *my = pd_repl_model(w->r[y]);
    pd_model_stats sx, sy;
    static dev_list dx, dy;
    pd_repl_tick(w->r[x], w->now);
    pd_repl_tick(w->r[y], w->now);
    bool ver = w->live[x] && w->live[y];
    for (int u = 0; u < NUSERS; u++) {
        pd_str id = pd_str_c(user_id(u));
        dx.n = dy.n = 0;
        pd_model_devices_of(mx, id, collect_dev, &dx);
        pd_model_devices_of(my, id, collect_dev, &dy);
        REQUIRE(dx.n == dy.n, "%s: %s has %d devices, expected %d", who, user_id(u), dy.n, dx.n);
        pd_view vx, vy;
        pd_model_view(mx, id, (pd_str){NULL, 0}, &vx);
        pd_model_view(my, id, (pd_str){NULL, 0}, &vy);
        views_equal(&vx, &vy, user_id(u), "public", who, ver);
        pd_model_view(mx, id, id, &vx);
        pd_model_view(my, id, id, &vy);
        views_equal(&vx, &vy, user_id(u), "own", who, ver);
        qsort(dx.v, (size_t)dx.n, sizeof dx.v[0], cmp_str);
        qsort(dy.v, (size_t)dy.n, sizeof dy.v[0], cmp_str);
        for (int k = 0; k < dx.n; k++)
            REQUIRE(strcmp(dx.v[k], dy.v[k]) == 0, "%s: %s's device %s, expected %s", who,
                    user_id(u), dy.v[k], dx.v[k]);
    }
    pd_model_stats_get(mx, &sx);
    pd_model_stats_get(my, &sy);
    REQUIRE(sx.devices == sy.devices, "%s: %llu devices, expected %llu", who,
            (unsigned long long)sy.devices, (unsigned long long)sx.devices);
}

/* ---- fuzzy snapshot, replay, restart ---------------------------------------------- */

#define FUZZY_CASES 150

Test(snapshot, fuzzy_snapshot_and_double_replay_equal_the_original) {
    announce_seed("snapshot/fuzzy", FUZZY_CASES);
    for (uint64_t c = 0; c < FUZZY_CASES; c++) {
        static world w;
        uint8_t *snap;
        size_t len;
        char who[64];
        world_init(&w, case_seed("snapshot/fuzzy", c));
        random_events(&w, 100 + (int)rng_below(&w.rnd, 150));
        /* Replay starts somewhere before the snapshot does: too early is
         * harmless (schemas/snapshot.md). */
        size_t from = rng_below(&w.rnd, (uint32_t)w.ns + 1), before = w.ns;
        take_snapshot(&w, 0, 3, &snap, &len);
        REQUIRE(w.ns > before + 10, "case %llu: the model hardly changed during the build",
                (unsigned long long)c);
        random_events(&w, (int)rng_below(&w.rnd, 40));
        /* The first n1 dies: the restart must rebuild exactly its state. */
        restart_n1(&w, 2, snap, len, from, 2);
        snprintf(who, sizeof who, "case %llu (PD_SEED=%llu)", (unsigned long long)c,
                 (unsigned long long)base_seed());
        expect_same(&w, 0, 2, who);
        /* The peer and the new life agree, ver included, once the peer's
         * ops about the old life's drop are delivered. */
        advance(&w, 200, 50);
        expect_same(&w, 1, 2, who);
        free(snap);
        world_free(&w);
    }
}

Test(snapshot, the_peer_sees_the_restarted_node_as_before) {
    static world w;
    uint8_t *snap;
    size_t len;
    world_init(&w, case_seed("snapshot/peer", 0));
    random_events(&w, 200);
    take_snapshot(&w, 0, 2, &snap, &len);
    random_events(&w, 30);
    pd_model_stats before;
    pd_model_stats_get(pd_repl_model(w.r[1]), &before);
    cr_assert_gt(before.devices, 0);
    restart_n1(&w, 2, snap, len, 0, 1);
    advance(&w, 1000, 50);
    /* n2 dropped n1's first incarnation and took the second's devices:
     * the same ones. */
    expect_same(&w, 2, 1, "n2 after n1's restart");
    pd_model_stats after;
    pd_model_stats_get(pd_repl_model(w.r[1]), &after);
    cr_assert_eq(after.devices, before.devices);
    free(snap);
    world_free(&w);
}

/* n1 restarts from a snapshot, lives on without writing another (Redis was
 * down), and restarts again from the same snapshot: its second life's
 * deltas, a newer incarnation than the snapshot's, must be replayed too. */
Test(snapshot, replay_spans_incarnations_after_the_snapshot) {
    for (uint64_t c = 0; c < 40; c++) {
        static world w;
        uint8_t *snap;
        size_t len;
        char who[64];
        world_init(&w, case_seed("snapshot/incarnations", c));
        random_events(&w, 150);
        take_snapshot(&w, 0, 2, &snap, &len);
        random_events(&w, 50);
        restart_n1(&w, 2, snap, len, 0, 1);
        random_events(&w, 100);
        expect_same(&w, 1, 2, "n2 and n1's second life");
        restart_n1(&w, 3, snap, len, 0, 2);
        snprintf(who, sizeof who, "case %llu (PD_SEED=%llu)", (unsigned long long)c,
                 (unsigned long long)base_seed());
        expect_same(&w, 2, 3, who);
        free(snap);
        world_free(&w);
    }
}

/* No snapshot at all (Redis never reachable): the stream alone rebuilds
 * n1, across its incarnations. */
Test(snapshot, stream_alone_rebuilds_every_incarnation) {
    for (uint64_t c = 0; c < 40; c++) {
        static world w;
        char who[64];
        world_init(&w, case_seed("snapshot/stream-only", c));
        random_events(&w, 150);
        restart_n1(&w, 2, NULL, 0, 0, 1);
        expect_same(&w, 0, 2, "first restart");
        random_events(&w, 100);
        restart_n1(&w, 3, NULL, 0, 0, 2);
        snprintf(who, sizeof who, "case %llu (PD_SEED=%llu)", (unsigned long long)c,
                 (unsigned long long)base_seed());
        expect_same(&w, 2, 3, who);
        world_free(&w);
    }
}

/* A peer known only from the snapshot that never speaks again is down
 * after the node timeout like any silent peer: its devices leave. */
Test(snapshot, restored_peer_that_stays_silent_goes_down) {
    static world w;
    uint8_t *snap;
    size_t len;
    world_init(&w, case_seed("snapshot/silent-peer", 0));
    for (int u = 0; u < 6; u++) ev_connect(&w, u % NSERVERS, u);
    take_snapshot(&w, 0, 0, &snap, &len);
    uint64_t own = pd_model_owner_devices(pd_repl_model(w.r[0]), pd_str_c("n1"));
    cr_assert_eq(own, 4);
    w.live[1] = false; /* n2 dies with n1 and does not come back */
    restart_n1(&w, 2, snap, len, 0, 1);
    pd_model *m = pd_repl_model(w.r[2]);
    cr_assert_eq(pd_model_owner_devices(m, pd_str_c("n2")), 2, "n2's devices restored");
    advance(&w, 1000, 50); /* node timeout 300 ms, no heartbeat from n2 */
    cr_assert_eq(pd_model_owner_devices(m, pd_str_c("n2")), 0, "n2's devices are ghosts");
    cr_assert_eq(pd_model_owner_devices(m, pd_str_c("n1")), own, "n1 lost its own devices");
    free(snap);
    world_free(&w);
}

Test(snapshot, restored_peer_that_speaks_keeps_its_devices) {
    static world w;
    uint8_t *snap;
    size_t len;
    world_init(&w, case_seed("snapshot/live-peer", 0));
    for (int u = 0; u < 6; u++) ev_connect(&w, u % NSERVERS, u);
    advance(&w, 500, 50);
    take_snapshot(&w, 0, 0, &snap, &len);
    restart_n1(&w, 2, snap, len, 0, 1);
    advance(&w, 1000, 50);
    cr_assert_eq(pd_model_owner_devices(pd_repl_model(w.r[2]), pd_str_c("n2")), 2);
    expect_same(&w, 1, 2, "n1 after the restart, next to n2");
    free(snap);
    world_free(&w);
}

/* A peer that asks for n1's partition while n1 is still replaying must not
 * get devices that the rest of the replay takes away: they would stay on
 * the peer for good (the replay's own ops are not sent, and the final ADDs
 * remove nothing). */
Test(snapshot, partition_served_during_the_replay_holds_no_ghost) {
    static world w;
    uint8_t *snap;
    size_t len;
    world_init(&w, case_seed("snapshot/served", 0));
    for (int k = 0; k < 10; k++) ev_connect(&w, 0, k);
    advance(&w, 200, 50);
    take_snapshot(&w, 0, 0, &snap, &len);
    size_t mark = w.ns;
    for (int k = 0; k < 5; k++) ev_conn(&w, PD_EV_DISCONNECT, k);
    cr_assert_eq(pd_model_owner_devices(pd_repl_model(w.r[1]), pd_str_c("n1")), 5);

    /* n1 restarts from the snapshot and replays up to the disconnects. */
    w.live[0] = false;
    pd_repl *r = replica(&w, 2, 3);
    pd_snap_info info;
    pd_err err = {PD_OK, ""};
    cr_assert_eq(pd_repl_restore(r, snap, len, w.now, &info, &err), PD_OK, "%s", err.msg);
    w.live[2] = true;
    w.n1 = 2;
    /* Meanwhile a connect reaches n1, its delta is lost on the way to n2,
     * and n2, behind n1's heartbeat, asks n1 for its partition. */
    w.deaf[1] = true;
    ev_connect(&w, 1, 20);
    w.deaf[1] = false;
    advance(&w, 300, 50);
    pd_repl_stats st;
    pd_repl_stats_get(r, &st);
    cr_assert_gt(st.syncs_served, 0, "n2 did not ask n1 for its partition");
    /* The rest of the replay removes five devices; then n1 is done. */
    for (size_t k = mark; k < w.ns; k++) {
        if (strcmp(RID[w.stream[k].from], "n1") != 0 || w.stream[k].from == 2) continue;
        cr_assert_eq(pd_repl_replay_delta(r, w.stream[k].buf, w.stream[k].len, w.now, &err),
                     PD_OK, "%s", err.msg);
    }
    pd_repl_restore_done(r, w.now);
    pump(&w);
    advance(&w, 500, 50);
    cr_assert_eq(pd_model_owner_devices(pd_repl_model(r), pd_str_c("n1")), 6);
    cr_assert_eq(pd_model_owner_devices(pd_repl_model(w.r[1]), pd_str_c("n1")), 6,
                 "n2 holds %llu of n1's devices, n1 has 6",
                 (unsigned long long)pd_model_owner_devices(pd_repl_model(w.r[1]),
                                                            pd_str_c("n1")));
    expect_same(&w, 2, 1, "n2 after n1's restart");
    free(snap);
    world_free(&w);
}

/* ---- refused snapshots -------------------------------------------------------------- */

/* A snapshot of n1 with devices of n1 and n2 and some registers. */
static void sample_snapshot(world *w, uint8_t **snap, size_t *len) {
    world_init(w, case_seed("snapshot/sample", 0));
    random_events(w, 120);
    take_snapshot(w, 0, 0, snap, len);
}

static void rehash(uint8_t *p, size_t len) {
    uint64_t h = pd_snap_checksum(p[7], p + PD_SNAP_HEADER, len - PD_SNAP_HEADER);
    for (int i = 0; i < 8; i++) p[16 + i] = (uint8_t)(h >> (56 - 8 * i));
}

/* pd_repl_nodes calls fn for the node itself and each known peer. */
static void count_node(void *ud, const pd_node_view *nv) {
    (void)nv;
    (*(int *)ud)++;
}

/* The snapshot is refused by pd_snap_open with a message containing why,
 * and pd_repl_restore into a fresh replica changes nothing. */
static void expect_refused(const uint8_t *p, size_t len, const char *why) {
    pd_snap_info info;
    pd_snap_reader rd;
    pd_err err = {PD_OK, ""};
    pd_status s = pd_snap_open(p, len, &info, &rd, &err);
    cr_assert_neq(s, PD_OK, "accepted; expected: %s", why);
    cr_assert(strstr(err.msg, why) != NULL, "refused with '%s'; expected '%s'", err.msg, why);

    pd_repl_cfg cfg = {.sync_interval_ms = 100, .node_timeout_ms = 300, .inc = 9,
                       .max_msg_bytes = 4096};
    pd_repl *r = pd_repl_new(&cfg, &MCFG, pd_str_c("n1"), &(pd_repl_io){0}, 1000);
    pd_model *m = pd_repl_model(r);
    uint64_t hlc = pd_model_hlc(m);
    err = (pd_err){PD_OK, ""};
    cr_assert_neq(pd_repl_restore(r, p, len, 1000, &info, &err), PD_OK);
    cr_assert(strstr(err.msg, why) != NULL, "restore refused with '%s'", err.msg);
    pd_model_stats st;
    pd_model_stats_get(m, &st);
    cr_assert_eq(st.devices, 0, "a refused snapshot left %llu devices",
                 (unsigned long long)st.devices);
    cr_assert_eq(st.users, 0, "a refused snapshot left %llu users", (unsigned long long)st.users);
    cr_assert_eq(pd_model_hlc(m), hlc, "a refused snapshot moved the clock");
    cr_assert(pd_model_pristine(m), "a refused snapshot left servers, timers or counts");
    int nodes = 0;
    pd_repl_nodes(r, 1000, count_node, &nodes);
    cr_assert_eq(nodes, 1, "a refused snapshot added peers");
    pd_repl_free(r);
}

static uint8_t *dup_bytes(const uint8_t *p, size_t len) {
    uint8_t *c = malloc(len);
    cr_assert(c != NULL);
    memcpy(c, p, len);
    return c;
}

Test(snapshot, sample_is_accepted) {
    static world w;
    uint8_t *snap;
    size_t len;
    pd_snap_info info;
    pd_snap_reader rd;
    pd_err err = {PD_OK, ""};
    sample_snapshot(&w, &snap, &len);
    cr_assert_eq(pd_snap_open(snap, len, &info, &rd, &err), PD_OK, "%s", err.msg);
    cr_assert(pd_str_eqc(info.node, "n1"));
    cr_assert_eq(info.inc, 1);
    cr_assert_eq(info.stream_seq, 0, "stream_seq is 0: replay from the start");
    cr_assert_gt(rd.ndevs, 0);
    cr_assert_gt(rd.nregs, 0);
    cr_assert_eq(info.nvc, 1);
    cr_assert(pd_str_eqc(info.vc[0].node, "n2"));
    int nodes = 0;
    pd_repl *r = restart_n1(&w, 2, snap, len, w.ns, 1);
    pd_repl_nodes(r, w.now, count_node, &nodes);
    cr_assert_eq(nodes, 2, "n1 and n2");
    expect_same(&w, 0, 2, "sample");
    free(snap);
    world_free(&w);
}

/* The final snapshot of a node that said it was leaving says so ("left",
 * written only then); any other reads as not. */
Test(snapshot, left_is_written_by_the_final_snapshot_only) {
    static world w;
    pd_snap_info info;
    pd_snap_reader rd;
    pd_err err = {PD_OK, ""};
    uint8_t *buf = NULL;
    size_t len;
    world_init(&w, case_seed("snapshot/left", 0));
    random_events(&w, 20);
    for (int left = 0; left <= 1; left++) {
        pd_repl_snapshot_info(w.r[0], &info, w.now);
        cr_expect(!info.left, "pd_repl_snapshot_info: not a final one");
        info.left = left;
        pd_snap *sn = pd_snap_begin(pd_repl_model(w.r[0]), &info);
        cr_assert_not_null(sn);
        while (!pd_snap_step(sn, pd_repl_model(w.r[0]), 64)) {}
        cr_assert_eq(pd_snap_finish(sn, &buf, &len), PD_OK);
        memset(&info, 0xff, sizeof info);
        cr_assert_eq(pd_snap_open(buf, len, &info, &rd, &err), PD_OK, "%s", err.msg);
        cr_expect_eq(info.left, left, "left %d", left);
        free(buf);
    }
    world_free(&w);
}

Test(snapshot, flipped_byte_is_refused) {
    static world w;
    uint8_t *snap;
    size_t len;
    sample_snapshot(&w, &snap, &len);
    /* Anywhere in the body, the checksum; in the magic, not a snapshot. */
    size_t at[] = {PD_SNAP_HEADER, PD_SNAP_HEADER + 7, len / 2, len - 1};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        uint8_t *c = dup_bytes(snap, len);
        c[at[i]] ^= 0x20;
        expect_refused(c, len, "checksum mismatch");
        free(c);
    }
    uint8_t *c = dup_bytes(snap, len);
    c[2] ^= 1;
    expect_refused(c, len, "not a presenced snapshot");
    memcpy(c, snap, len);
    c[20] ^= 1; /* the checksum itself */
    expect_refused(c, len, "checksum mismatch");
    free(c);
    free(snap);
    world_free(&w);
}

Test(snapshot, truncated_snapshot_is_refused) {
    static world w;
    uint8_t *snap;
    size_t len;
    sample_snapshot(&w, &snap, &len);
    expect_refused(snap, len - 1, "snapshot truncated");
    expect_refused(snap, len / 2, "snapshot truncated");
    expect_refused(snap, PD_SNAP_HEADER, "snapshot truncated");
    expect_refused(snap, PD_SNAP_HEADER - 1, "not a presenced snapshot");
    expect_refused(snap, 0, "not a presenced snapshot");
    /* Bytes appended are as wrong as bytes missing. */
    uint8_t *c = malloc(len + 3);
    memcpy(c, snap, len);
    memset(c + len, 0, 3);
    expect_refused(c, len + 3, "snapshot truncated");
    /* A truncated body whose header was rewritten to match: the body
     * itself must still be whole. */
    size_t cut = len - 10;
    memcpy(c, snap, cut);
    for (int i = 0; i < 8; i++)
        c[8 + i] = (uint8_t)((uint64_t)(cut - PD_SNAP_HEADER) >> (56 - 8 * i));
    rehash(c, cut);
    expect_refused(c, cut, "bad snapshot body");
    free(c);
    free(snap);
    world_free(&w);
}

Test(snapshot, other_version_is_refused) {
    static world w;
    uint8_t *snap;
    size_t len;
    sample_snapshot(&w, &snap, &len);
    uint8_t *c = dup_bytes(snap, len);
    c[7] = PD_SNAP_VERSION + 1;
    expect_refused(c, len, "snapshot version 4, this node reads 1 to 3");
    c[7] = 0;
    expect_refused(c, len, "snapshot version 0, this node reads 1 to 3");
    /* The body's own "v", with a checksum that matches it. */
    memcpy(c, snap, len);
    cr_assert_eq(c[PD_SNAP_HEADER + 1], 0xa1, "the body starts with the key \"v\"");
    cr_assert_eq(c[PD_SNAP_HEADER + 2], 'v');
    cr_assert_eq(c[PD_SNAP_HEADER + 3], PD_SNAP_VERSION);
    c[PD_SNAP_HEADER + 3] = PD_SNAP_VERSION + 1;
    rehash(c, len);
    expect_refused(c, len, "body version is not the header's");
    free(c);
    free(snap);
    world_free(&w);
}

/* A snapshot written before version 2 (its checksum is pd_hash over the
 * body, its "v" 1) still loads, into the same state; its checksum is
 * checked as version 1's, and a version-2 sum in it is a mismatch. */
Test(snapshot, version_1_snapshot_still_loads) {
    static world w;
    uint8_t *snap;
    size_t len;
    sample_snapshot(&w, &snap, &len);
    cr_assert_eq(snap[7], 3, "written as version 3");
    cr_assert_eq(snap[PD_SNAP_HEADER + 3], 3, "with \"v\": 3 in the body");
    uint8_t *old = dup_bytes(snap, len);
    old[7] = 1;
    expect_refused(old, len, "checksum mismatch");
    old[PD_SNAP_HEADER + 3] = 1;
    rehash(old, len);
    cr_assert_eq(pd_snap_checksum(1, old + PD_SNAP_HEADER, len - PD_SNAP_HEADER),
                 pd_hash(old + PD_SNAP_HEADER, len - PD_SNAP_HEADER), "version 1: pd_hash");
    pd_repl *r = restart_n1(&w, 2, old, len, w.ns, 1);
    (void)r;
    expect_same(&w, 0, 2, "restored from a version-1 snapshot");
    free(old);
    free(snap);
    world_free(&w);
}

/* The whole body is checked before anything is applied: a bad last entry
 * (under a valid checksum) leaves the replica untouched. */
Test(snapshot, bad_last_device_refuses_the_whole_snapshot) {
    static world w;
    uint8_t *snap;
    size_t len;
    sample_snapshot(&w, &snap, &len);
    /* The last device entry: [owner, op], owner "n1" or "n2". */
    uint8_t *c = dup_bytes(snap, len);
    size_t last = 0;
    for (size_t i = PD_SNAP_HEADER; i + 4 <= len; i++) {
        if (c[i] == 0x92 && c[i + 1] == 0xa2 && c[i + 2] == 'n' &&
            (c[i + 3] == '1' || c[i + 3] == '2'))
            last = i;
    }
    cr_assert_gt(last, 0, "no device entry found");
    c[last + 3] = '*'; /* not an id character */
    rehash(c, len);
    expect_refused(c, len, "bad snapshot body");
    free(c);
    free(snap);
    world_free(&w);
}

Test(snapshot, snapshot_of_another_node_is_refused) {
    static world w;
    uint8_t *snap;
    size_t len;
    pd_snap_info info;
    pd_err err = {PD_OK, ""};
    sample_snapshot(&w, &snap, &len);
    pd_repl_cfg cfg = {.sync_interval_ms = 100, .node_timeout_ms = 300, .inc = 9,
                       .max_msg_bytes = 4096};
    pd_repl *r = pd_repl_new(&cfg, &MCFG, pd_str_c("n2"), &(pd_repl_io){0}, w.now);
    cr_assert_neq(pd_repl_restore(r, snap, len, w.now, &info, &err), PD_OK);
    cr_assert(strstr(err.msg, "snapshot of node n1, not of n2") != NULL, "%s", err.msg);
    pd_model_stats st;
    pd_model_stats_get(pd_repl_model(r), &st);
    cr_assert_eq(st.devices + st.users, 0);
    int nodes = 0;
    pd_repl_nodes(r, w.now, count_node, &nodes);
    cr_assert_eq(nodes, 1, "the refused snapshot added peers");
    pd_repl_free(r);
    free(snap);
    world_free(&w);
}

/* A snapshot whose clock is more than PRESENCE_MAX_CLOCK_SKEW_MS ahead (a
 * node that ran with its clock in the future, a forged one with a good
 * checksum) is refused whole: taken, it would cut the node off after its
 * first op (issue #11, finding 1). */
Test(snapshot, snapshot_from_the_future_is_refused) {
    static world w;
    uint8_t *snap;
    size_t len;
    pd_snap_info info;
    pd_err err = {PD_OK, ""};
    sample_snapshot(&w, &snap, &len);
    uint64_t past = w.now - 2 * PD_MAX_CLOCK_SKEW_DEFAULT_MS;
    pd_repl_cfg cfg = {.sync_interval_ms = 100, .node_timeout_ms = 300, .inc = past,
                       .max_msg_bytes = 4096};
    pd_repl *r = pd_repl_new(&cfg, &MCFG, pd_str_c("n1"), &(pd_repl_io){0}, past);
    uint64_t hlc = pd_model_hlc(pd_repl_model(r));
    cr_assert_eq(pd_repl_restore(r, snap, len, past, &info, &err), PD_EBADVALUE);
    cr_assert(strstr(err.msg, "snapshot clock is more than") != NULL, "%s", err.msg);
    cr_assert_eq(pd_model_hlc(pd_repl_model(r)), hlc, "the refused snapshot moved the clock");
    pd_model_stats st;
    pd_model_stats_get(pd_repl_model(r), &st);
    cr_assert_eq(st.devices + st.users, 0);
    pd_repl_free(r);
    /* The same snapshot restores at its own time. */
    r = pd_repl_new(&cfg, &MCFG, pd_str_c("n1"), &(pd_repl_io){0}, w.now);
    cr_assert_eq(pd_repl_restore(r, snap, len, w.now, &info, &err), PD_OK, "%s", err.msg);
    pd_repl_free(r);
    free(snap);
    world_free(&w);
}

/* A snapshot of format `version` holding one register op, checksummed. */
static size_t small_snapshot(uint8_t version, const pd_op *reg, uint8_t *out, size_t cap) {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 7);
    pd_pack_kv_u64(&pk, "v", version);
    pd_pack_kv_str(&pk, "node", pd_str_c("n1"));
    pd_pack_kv_u64(&pk, "inc", 1);
    pd_pack_kv_u64(&pk, "seq", 0);
    pd_pack_cstr(&pk, "vc");
    pd_vc_encode(&pk, NULL, 0);
    pd_pack_cstr(&pk, "devices");
    msgpack_pack_array(&pk, 0);
    pd_pack_cstr(&pk, "registers");
    msgpack_pack_array(&pk, 1);
    pd_op_encode(&pk, reg);
    size_t len = PD_SNAP_HEADER + sb.size;
    cr_assert_leq(len, cap);
    memcpy(out, "PDSNAP", 6);
    out[6] = 0;
    out[7] = version;
    for (int i = 0; i < 8; i++) out[8 + i] = (uint8_t)(sb.size >> (56 - 8 * i));
    memcpy(out + PD_SNAP_HEADER, sb.data, sb.size);
    rehash(out, len);
    msgpack_sbuffer_destroy(&sb);
    return len;
}

/* Format 1 (before VER ops) still loads; a VER op restores its floor. */
Test(snapshot, ver_ops_restore_their_floor) {
    static uint8_t buf[512];
    const pd_op seen = {.kind = PD_OP_SEEN, .user = pd_str_c("alice"), .at = 900,
                        .hlc = 900ULL << 16, .writer = pd_str_c("n2")};
    const pd_op ver = {.kind = PD_OP_VER, .user = pd_str_c("alice"), .hlc = 950ULL << 16 | 3,
                       .writer = pd_str_c("n2")};
    pd_snap_info info;
    pd_snap_reader rd;
    pd_err err = {PD_OK, ""};
    size_t len = small_snapshot(1, &seen, buf, sizeof buf);
    cr_assert_eq(pd_snap_open(buf, len, &info, &rd, &err), PD_OK, "%s", err.msg);
    cr_expect_eq(info.version, 1);
    len = small_snapshot(3, &ver, buf, sizeof buf);
    pd_repl_cfg cfg = {.sync_interval_ms = 100, .node_timeout_ms = 300, .inc = 9,
                       .max_msg_bytes = 4096};
    pd_repl *r = pd_repl_new(&cfg, &MCFG, pd_str_c("n1"), &(pd_repl_io){0}, 1000);
    cr_assert_eq(pd_repl_restore(r, buf, len, 1000, &info, &err), PD_OK, "%s", err.msg);
    pd_view v;
    pd_model_view(pd_repl_model(r), pd_str_c("alice"), (pd_str){NULL, 0}, &v);
    cr_expect_eq(v.ver, ver.hlc, "the floor restored");
    pd_repl_free(r);
}

/* ---- restoring in one pass (a start) and in two (a model holding something) ---- */

/* A snapshot of n1 (format PD_SNAP_VERSION) whose body body() packs. */
static size_t craft(void (*body)(msgpack_packer *pk, int variant), int variant, uint8_t **out) {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    body(&pk, variant);
    size_t len = PD_SNAP_HEADER + sb.size;
    uint8_t *p = malloc(len);
    cr_assert(p != NULL);
    memcpy(p, "PDSNAP", 6);
    p[6] = 0;
    p[7] = PD_SNAP_VERSION;
    for (int i = 0; i < 8; i++) p[8 + i] = (uint8_t)(sb.size >> (56 - 8 * i));
    memcpy(p + PD_SNAP_HEADER, sb.data, sb.size);
    rehash(p, len);
    msgpack_sbuffer_destroy(&sb);
    *out = p;
    return len;
}

static void pack_head(msgpack_packer *pk, uint32_t fields) {
    msgpack_pack_map(pk, fields);
    pd_pack_kv_u64(pk, "v", PD_SNAP_VERSION);
    pd_pack_kv_str(pk, "node", pd_str_c("n1"));
    pd_pack_kv_u64(pk, "inc", 1);
    pd_pack_kv_u64(pk, "seq", 0);
    pd_pack_cstr(pk, "vc");
    pd_vc_encode(pk, NULL, 0);
}

#define PAIRS 60

/* PAIRS connections of server a0, each claimed by n1 and then, newer, by
 * n2: restoring n2's entry removes n1's, which makes a REMOVE op of n1
 * (60 of them fill more than half of a 4096-byte delta). variant 1: a
 * bad register op after them. */
static void body_displacing(msgpack_packer *pk, int variant) {
    char conn[16];
    pack_head(pk, 7);
    pd_pack_cstr(pk, "devices");
    msgpack_pack_array(pk, 2 * PAIRS);
    for (int i = 0; i < PAIRS; i++) {
        snprintf(conn, sizeof conn, "c%d", i);
        for (int k = 0; k < 2; k++) {
            pd_op add = {.kind = PD_OP_ADD, .server = pd_str_c("a0"), .conn = pd_str_c(conn),
                         .user = pd_str_c(k ? "bob" : "alice"), .label = pd_str_c("web"),
                         .state = PD_DEV_ACTIVE, .connected_at = 500, .last_active = 500,
                         .hlc = (uint64_t)(500 + k) << 16};
            msgpack_pack_array(pk, 2);
            pd_pack_str(pk, pd_str_c(k ? "n2" : "n1"));
            pd_op_encode(pk, &add);
        }
    }
    pd_pack_cstr(pk, "registers");
    msgpack_pack_array(pk, variant ? 1 : 0);
    if (variant) { /* an op of a kind a register entry may not be */
        pd_op rm = {.kind = PD_OP_REMOVE, .server = pd_str_c("a0"), .conn = pd_str_c("c0"),
                    .hlc = 600ULL << 16};
        pd_op_encode(pk, &rm);
    }
}

typedef struct {
    int deltas;
} counter;

static void count_delta(void *ud, const void *buf, size_t len) {
    (void)buf, (void)len;
    ((counter *)ud)->deltas++;
}

/* A start restores in one pass, applying entries as it reads them: a
 * refusal found at the end empties the model again (pd_model_pristine),
 * and the ops the entries made before it (REMOVEs of n1's displaced
 * devices, more than a delta's worth) never leave, then or later. */
Test(snapshot, one_pass_refusal_undoes_everything_and_sends_nothing) {
    uint8_t *bad, *good;
    size_t bad_len = craft(body_displacing, 1, &bad), good_len = craft(body_displacing, 0, &good);
    counter sent = {0};
    pd_repl_io io = {.send_delta = count_delta, .ud = &sent};
    pd_repl_cfg cfg = {.sync_interval_ms = 100, .node_timeout_ms = 300, .inc = 9,
                       .max_msg_bytes = 4096};
    pd_repl *r = pd_repl_new(&cfg, &MCFG, pd_str_c("n1"), &io, 1000);
    pd_model *m = pd_repl_model(r);
    pd_snap_info info;
    pd_err err = {PD_OK, ""};
    cr_assert(pd_model_pristine(m), "a new replica's model is pristine");
    cr_assert_eq(pd_repl_restore(r, bad, bad_len, 1000, &info, &err), PD_EBADVALUE);
    cr_assert(strstr(err.msg, "a register entry is not a register op") != NULL, "%s", err.msg);
    cr_assert(pd_model_pristine(m), "the refused snapshot left something in the model");
    pd_repl_flush(r);
    cr_assert_eq(sent.deltas, 0, "the refused snapshot's ops left in %d deltas", sent.deltas);
    /* The same without the bad entry: n2's claims win, n1's REMOVEs go. */
    cr_assert_eq(pd_repl_restore(r, good, good_len, 1000, &info, &err), PD_OK, "%s", err.msg);
    pd_model_stats st;
    pd_model_stats_get(m, &st);
    cr_assert_eq(st.devices, PAIRS);
    cr_assert_eq(pd_model_owner_devices(m, pd_str_c("n2")), PAIRS);
    pd_repl_flush(r);
    cr_assert_gt(sent.deltas, 0, "the accepted snapshot's REMOVEs were sent");
    pd_repl_free(r);
    free(bad);
    free(good);
}

/* A model that holds something already (no start) is not emptied on a
 * refusal: the snapshot is validated whole before anything applies. */
Test(snapshot, refusal_into_a_model_in_use_changes_nothing) {
    uint8_t *bad;
    size_t bad_len = craft(body_displacing, 1, &bad);
    pd_repl_cfg cfg = {.sync_interval_ms = 100, .node_timeout_ms = 300, .inc = 9,
                       .max_msg_bytes = 4096};
    pd_repl *r = pd_repl_new(&cfg, &MCFG, pd_str_c("n1"), &(pd_repl_io){0}, 1000);
    pd_model *m = pd_repl_model(r);
    pd_event ev = {.type = PD_EV_CONNECT, .server = pd_str_c("a0"), .conn = pd_str_c("c0"),
                   .user = pd_str_c("carol"), .device = pd_str_c("web")};
    pd_apply_result res;
    pd_err err = {PD_OK, ""};
    cr_assert_eq(pd_model_apply(m, &ev, 1000, &res, &err), PD_OK, "%s", err.msg);
    cr_assert(!pd_model_pristine(m));
    uint64_t hlc = pd_model_hlc(m);
    pd_snap_info info;
    cr_assert_eq(pd_repl_restore(r, bad, bad_len, 1000, &info, &err), PD_EBADVALUE);
    pd_model_stats st;
    pd_model_stats_get(m, &st);
    cr_assert_eq(st.devices, 1, "%llu devices", (unsigned long long)st.devices);
    cr_assert_eq(st.users, 1);
    cr_assert_eq(pd_model_hlc(m), hlc, "the refused snapshot moved the clock");
    cr_assert_eq(pd_model_devices_of(m, pd_str_c("carol"), NULL, NULL), 1);
    pd_repl_free(r);
    free(bad);
}

/* variant 0: registers before devices (no writer does it; it reads
 * alike); 1: "devices" twice, which a reader that applies as it reads
 * would apply twice: refused. */
static void body_order(msgpack_packer *pk, int variant) {
    const pd_op chosen = {.kind = PD_OP_CHOSEN, .user = pd_str_c("alice"),
                          .chosen = PD_CHOSEN_BUSY, .hlc = 700ULL << 16,
                          .writer = pd_str_c("n2")};
    const pd_op add = {.kind = PD_OP_ADD, .server = pd_str_c("a0"), .conn = pd_str_c("c1"),
                       .user = pd_str_c("alice"), .label = pd_str_c("web"),
                       .state = PD_DEV_ACTIVE, .connected_at = 500, .last_active = 500,
                       .hlc = 500ULL << 16};
    pack_head(pk, variant ? 8 : 7);
    pd_pack_cstr(pk, "registers");
    msgpack_pack_array(pk, 1);
    pd_op_encode(pk, &chosen);
    for (int k = 0; k < (variant ? 2 : 1); k++) {
        pd_pack_cstr(pk, "devices");
        msgpack_pack_array(pk, 1);
        msgpack_pack_array(pk, 2);
        pd_pack_str(pk, pd_str_c("n1"));
        pd_op_encode(pk, &add);
    }
}

/* pd_snap_peek (a restart's replay starts before the snapshot is applied:
 * node/persist.c): the header's checks and the fields before the entries,
 * the same as pd_snap_open's; a corrupt or truncated snapshot refused; a
 * body whose stream_seq does not come before its arrays is PD_EMISSING
 * (the node then applies it before the replay, as before). */
Test(snapshot, peek_reads_the_fields_before_the_entries) {
    static world w;
    uint8_t *snap, *p;
    size_t len;
    pd_snap_info a, b;
    pd_snap_reader rd;
    pd_err err = {PD_OK, ""};
    sample_snapshot(&w, &snap, &len);
    cr_assert_eq(pd_snap_peek(snap, len, &a, &err), PD_OK, "%s", err.msg);
    cr_assert_eq(pd_snap_open(snap, len, &b, &rd, &err), PD_OK, "%s", err.msg);
    cr_expect(pd_str_eq(a.node, b.node));
    cr_expect_eq(a.inc, b.inc);
    cr_expect_eq(a.seq, b.seq);
    cr_expect_eq(a.hlc, b.hlc);
    cr_expect_eq(a.stream_seq, b.stream_seq);
    cr_expect_eq(a.taken_at, b.taken_at);
    cr_expect_eq(a.left, b.left);
    snap[len / 2] ^= 0x01;
    cr_expect_neq(pd_snap_peek(snap, len, &a, &err), PD_OK, "a flipped byte passed the peek");
    cr_expect(strstr(err.msg, "checksum") != NULL, "%s", err.msg);
    snap[len / 2] ^= 0x01;
    cr_expect_neq(pd_snap_peek(snap, len / 2, &a, &err), PD_OK, "a truncated one passed");
    free(snap);
    world_free(&w);
    len = craft(body_order, 0, &p);
    cr_expect_eq(pd_snap_peek(p, len, &a, &err), PD_EMISSING, "%s", err.msg);
    free(p);
}

Test(snapshot, field_order_is_free_but_a_field_twice_is_refused) {
    uint8_t *p;
    size_t len = craft(body_order, 0, &p);
    pd_repl_cfg cfg = {.sync_interval_ms = 100, .node_timeout_ms = 300, .inc = 9,
                       .max_msg_bytes = 4096};
    pd_repl *r = pd_repl_new(&cfg, &MCFG, pd_str_c("n1"), &(pd_repl_io){0}, 1000);
    pd_snap_info info;
    pd_err err = {PD_OK, ""};
    cr_assert_eq(pd_repl_restore(r, p, len, 1000, &info, &err), PD_OK, "%s", err.msg);
    pd_view v;
    pd_model_view(pd_repl_model(r), pd_str_c("alice"), (pd_str){NULL, 0}, &v);
    cr_expect_eq(v.status, PD_PUB_BUSY, "the register applied (status %d)", (int)v.status);
    cr_expect_eq(v.devices, 1);
    pd_repl_free(r);
    free(p);
    len = craft(body_order, 1, &p);
    expect_refused(p, len, "a field appears twice");
    free(p);
}

#define OWNERS 1040 /* more than PD_MODEL_NODES_MAX (1024, model/presence_int.h) */

/* OWNERS devices, each of its own owner p<i>, then a bad register op. */
static void body_many_owners(msgpack_packer *pk, int variant) {
    char conn[16], owner[16];
    (void)variant;
    pack_head(pk, 7);
    pd_pack_cstr(pk, "devices");
    msgpack_pack_array(pk, OWNERS);
    for (int i = 0; i < OWNERS; i++) {
        snprintf(conn, sizeof conn, "c%d", i);
        snprintf(owner, sizeof owner, "p%d", i);
        pd_op add = {.kind = PD_OP_ADD, .server = pd_str_c("a0"), .conn = pd_str_c(conn),
                     .user = pd_str_c("alice"), .label = pd_str_c("web"),
                     .state = PD_DEV_ACTIVE, .connected_at = 500, .last_active = 500,
                     .hlc = 500ULL << 16};
        msgpack_pack_array(pk, 2);
        pd_pack_str(pk, pd_str_c(owner));
        pd_op_encode(pk, &add);
    }
    pd_pack_cstr(pk, "registers");
    msgpack_pack_array(pk, 1);
    pd_op rm = {.kind = PD_OP_REMOVE, .server = pd_str_c("a0"), .conn = pd_str_c("c0"),
                .hlc = 600ULL << 16};
    pd_op_encode(pk, &rm);
}

/* The model interns every owner it meets, at most PD_MODEL_NODES_MAX of
 * them, for good. A refused snapshot restored in one pass had its owners
 * interned while its entries were applied, and the clear that undid them
 * kept those: a bad snapshot naming enough owners left the table full, and
 * every op of a node met later was refused (out of memory) for the life
 * of the process. Refused, it must change nothing, names included. */
Test(snapshot, one_pass_refusal_forgets_the_owners_it_named) {
    uint8_t *bad;
    size_t bad_len = craft(body_many_owners, 0, &bad);
    pd_repl *r = pd_repl_new(&(pd_repl_cfg){.sync_interval_ms = 100, .node_timeout_ms = 300,
                                            .inc = 9, .max_msg_bytes = 4096},
                             &MCFG, pd_str_c("n1"), &(pd_repl_io){0}, 1000);
    pd_model *m = pd_repl_model(r);
    pd_snap_info info;
    pd_err err = {PD_OK, ""};
    cr_assert_eq(pd_repl_restore(r, bad, bad_len, 1000, &info, &err), PD_EBADVALUE);
    cr_assert(pd_model_pristine(m));
    /* A peer met afterwards is an owner like any other. */
    pd_op add = {.kind = PD_OP_ADD, .server = pd_str_c("a1"), .conn = pd_str_c("c1"),
                 .user = pd_str_c("bob"), .label = pd_str_c("web"), .state = PD_DEV_ACTIVE,
                 .connected_at = 900, .last_active = 900, .hlc = 900ULL << 16};
    cr_expect_eq(pd_model_apply_op(m, pd_str_c("n7"), &add, 1000), PD_OK);
    cr_expect_eq(pd_model_owner_devices(m, pd_str_c("n7")), 1u);
    pd_repl_free(r);
    free(bad);
}

/* An own device from the future, then a bad register op. */
static void body_own_ahead(msgpack_packer *pk, int variant) {
    (void)variant;
    pack_head(pk, 7);
    pd_pack_cstr(pk, "devices");
    msgpack_pack_array(pk, 1);
    pd_op add = {.kind = PD_OP_ADD, .server = pd_str_c("a0"), .conn = pd_str_c("c0"),
                 .user = pd_str_c("alice"), .label = pd_str_c("web"), .state = PD_DEV_ACTIVE,
                 .connected_at = 500, .last_active = 500, .hlc = 900000000ULL << 16};
    msgpack_pack_array(pk, 2);
    pd_pack_str(pk, pd_str_c("n1"));
    pd_op_encode(pk, &add);
    pd_pack_cstr(pk, "registers");
    msgpack_pack_array(pk, 1);
    pd_op rm = {.kind = PD_OP_REMOVE, .server = pd_str_c("a0"), .conn = pd_str_c("c0"),
                .hlc = 600ULL << 16};
    pd_op_encode(pk, &rm);
}

/* A refused snapshot changes nothing, its counts included: an entry of it
 * skipped as ahead of the clock is not counted as refused, as a running
 * node (which validates the whole snapshot first) does not count it. */
Test(snapshot, one_pass_refusal_counts_none_of_its_entries) {
    uint8_t *bad;
    size_t bad_len = craft(body_own_ahead, 0, &bad);
    pd_repl_stats st;
    for (int running = 0; running < 2; running++) {
        pd_repl *r = pd_repl_new(&(pd_repl_cfg){.sync_interval_ms = 100, .node_timeout_ms = 300,
                                                .inc = 9, .max_msg_bytes = 4096},
                                 &MCFG, pd_str_c("n1"), &(pd_repl_io){0}, 1000);
        pd_snap_info info;
        pd_err err = {PD_OK, ""};
        if (running) { /* a model holding something restores in two passes */
            pd_op add = {.kind = PD_OP_ADD, .server = pd_str_c("a1"), .conn = pd_str_c("c1"),
                         .user = pd_str_c("bob"), .label = pd_str_c("web"),
                         .state = PD_DEV_ACTIVE, .connected_at = 900, .last_active = 900,
                         .hlc = 900ULL << 16};
            cr_assert_eq(pd_model_apply_op(pd_repl_model(r), pd_str_c("n7"), &add, 1000), PD_OK);
        }
        cr_assert_eq(pd_repl_restore(r, bad, bad_len, 1000, &info, &err), PD_EBADVALUE);
        pd_repl_stats_get(r, &st);
        cr_expect_eq(st.refused[PD_REFUSE_CLOCK_AHEAD], 0u, "%s node: %llu counted",
                     running ? "a running" : "a starting",
                     (unsigned long long)st.refused[PD_REFUSE_CLOCK_AHEAD]);
        pd_repl_free(r);
    }
    free(bad);
}

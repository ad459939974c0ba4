/* repl_world.h - the world of test_repl.c around the simulated network
 * (repl_sim.h): four socket servers, each attached to one replica, and the
 * connections they hold (the truth the replicas must end up with); the
 * random operations of the property test; and the comparison of the
 * replicas' views and device lists with each other and with the truth.
 *
 * Included by test_repl.c only; the helpers are static inline so that the
 * header stands alone, as the other fixtures do. */
#ifndef PD_TESTS_REPL_WORLD_H
#define PD_TESTS_REPL_WORLD_H

#include "repl_sim.h"
#include "sync/snapshot.h"
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NSERV 4
#define NUSER 5
#define MAXCONN 256

static const char *const SERVER[NSERV] = {"s0", "s1", "s2", "s3"};
static const char *const USER[NUSER] = {"u0", "u1", "u2", "u3", "u4"};
static const char *const LABEL[] = {"web", "mobile"};
static const char *const TEXT[] = {"", "lunch", "in a meeting"};

static const pd_repl_cfg RCFG = {
    .sync_interval_ms = 1000, .node_timeout_ms = 5000, .inc = 1, .max_msg_bytes = 4096};
static const pd_model_cfg MCFG = {
    .idle_timeout_ms = 2500, .offline_delay_ms = 1500, .server_timeout_ms = 3000};
/* Timers that do not fire during the fixed scenarios, but the offline delay. */
static const pd_model_cfg MCFG_QUIET = {
    .idle_timeout_ms = 1u << 30, .offline_delay_ms = 1500, .server_timeout_ms = 1u << 30};

/* ---- the world: the simulated cluster and what the socket servers hold -------------------- */

typedef struct {
    char id[16];
    int user, label;
    bool live;
} sconn;

typedef struct {
    int at;                 /* the replica it is attached to */
    sconn c[MAXCONN];
    int n, next;
} server;

typedef struct {
    sim s;
    server srv[NSERV];
    uint64_t seed;
    int step;
    pd_model *oracle;       /* notification test: one model fed every event */
    heard *onotes;
    size_t nonotes, onotes_cap;
} world;

static inline void oracle_note(void *ud, const pd_view *v) {
    world *w = ud;
    if (w->nonotes == w->onotes_cap) {
        w->onotes_cap = w->onotes_cap ? w->onotes_cap * 2 : 64;
        w->onotes = realloc(w->onotes, w->onotes_cap * sizeof *w->onotes);
        REQUIRE(w->onotes != NULL, "out of memory");
    }
    heard *h = &w->onotes[w->nonotes++];
    h->by = -1;
    snprintf(h->user, sizeof h->user, "%.*s", (int)v->user.n, v->user.p);
    h->status = v->status;
    snprintf(h->text, sizeof h->text, "%.*s", (int)v->text.n, v->text.p ? v->text.p : "");
}

static inline void world_init(world *w, uint64_t seed, const pd_model_cfg *mcfg, bool with_oracle) {
    memset(w, 0, sizeof *w);
    w->seed = seed;
    sim_init(&w->s, seed, &RCFG, mcfg, 1000000);
    for (int k = 0; k < NSERV; k++) w->srv[k].at = k % NREP;
    if (with_oracle) {
        w->oracle = pd_model_new(mcfg, pd_str_c("oracle"), oracle_note, w);
        REQUIRE(w->oracle != NULL, "no oracle");
    }
}

static inline void world_free(world *w) {
    sim_free(&w->s);
    pd_model_free(w->oracle);
    free(w->onotes);
}

/* Applies a socket server's event at replica i (and at the oracle). */
static inline void world_event(world *w, int i, const pd_event *ev) {
    pd_apply_result res;
    pd_err err = {PD_OK, ""};
    if (w->s.trace)
        fprintf(stderr, "t=%llu step %d: %s at %s server=%.*s conn=%.*s user=%.*s\n",
                (unsigned long long)w->s.now, w->step, pd_event_type_name(ev->type), NODE[i],
                (int)ev->server.n, ev->server.p, (int)ev->conn.n, ev->conn.p, (int)ev->user.n,
                ev->user.p);
    pd_status st = pd_repl_local(w->s.r[i], ev, w->s.now, &res, &err);
    REQUIRE(st == PD_OK, "case seed %llu, step %d: %s at %s refused: %s",
            (unsigned long long)w->seed, w->step, pd_event_type_name(ev->type), NODE[i], err.msg);
    if (w->oracle) {
        st = pd_model_apply(w->oracle, ev, w->s.now, &res, &err);
        REQUIRE(st == PD_OK, "the oracle refused %s: %s", pd_event_type_name(ev->type), err.msg);
    }
}

static inline pd_event conn_event(pd_event_type t, int k, const sconn *c) {
    return (pd_event){.type = t, .server = pd_str_c(SERVER[k]), .conn = pd_str_c(c->id),
                      .user = pd_str_c(USER[c->user]), .device = pd_str_c(LABEL[c->label])};
}

/* Server k connects conn for USER[user] (device LABEL[0]) through its node. */
static inline void connect_at(world *w, int k, const char *conn, int user) {
    server *sv = &w->srv[k];
    sconn *c = &sv->c[sv->n++];
    snprintf(c->id, sizeof c->id, "%s", conn);
    c->user = user;
    c->label = 0;
    c->live = true;
    pd_event ev = conn_event(PD_EV_CONNECT, k, c);
    world_event(w, sv->at, &ev);
}

/* The server's complete list of live conns, sent as a sync to replica i. */
static inline void send_sync(world *w, int k, int i) {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    server *sv = &w->srv[k];
    uint32_t n = 0;
    for (int j = 0; j < sv->n; j++) n += sv->c[j].live;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, n);
    for (int j = 0; j < sv->n; j++) {
        if (!sv->c[j].live) continue;
        msgpack_pack_map(&pk, 3);
        pd_pack_kv_str(&pk, "conn", pd_str_c(sv->c[j].id));
        pd_pack_kv_str(&pk, "user", pd_str_c(USER[sv->c[j].user]));
        pd_pack_kv_str(&pk, "device", pd_str_c(LABEL[sv->c[j].label]));
    }
    pd_event ev = {.type = PD_EV_SYNC, .server = pd_str_c(SERVER[k]),
                   .conns = {sb.data, (uint32_t)sb.size}, .nconns = n};
    world_event(w, i, &ev);
    msgpack_sbuffer_destroy(&sb);
}

static inline void server_heartbeats(world *w) {
    for (int k = 0; k < NSERV; k++) {
        pd_event ev = {.type = PD_EV_HEARTBEAT, .server = pd_str_c(SERVER[k])};
        world_event(w, w->srv[k].at, &ev);
    }
}

/* A random live conn (its server in *k), or NULL. */
static inline sconn *pick_live(world *w, rng *r, int *k) {
    int total = 0;
    for (int s = 0; s < NSERV; s++)
        for (int j = 0; j < w->srv[s].n; j++) total += w->srv[s].c[j].live;
    if (total == 0) return NULL;
    int pick = (int)rng_below(r, (uint32_t)total);
    for (int s = 0; s < NSERV; s++) {
        for (int j = 0; j < w->srv[s].n; j++) {
            if (w->srv[s].c[j].live && pick-- == 0) {
                *k = s;
                return &w->srv[s].c[j];
            }
        }
    }
    return NULL;
}

/* ---- operations ------------------------------------------------------------------------------ */

typedef enum {
    OP_CONNECT, OP_DISCONNECT, OP_ACTIVITY, OP_IDLE, OP_STATUS, OP_CUSTOM, OP_MOVE, OP_RESYNC,
    OP_SHUTDOWN, OP_PARTITION, OP_COUNT
} op_kind;

static const uint32_t OP_WEIGHT[OP_COUNT] = {26, 12, 12, 10, 10, 10, 8, 3, 2, 1};

static inline op_kind pick_op(rng *r, bool allow_partition) {
    uint32_t total = 0, x;
    for (int i = 0; i < OP_COUNT; i++) total += OP_WEIGHT[i];
    do {
        x = rng_below(r, total);
        int i = 0;
        while (x >= OP_WEIGHT[i]) x -= OP_WEIGHT[i++];
        x = (uint32_t)i;
    } while (x == OP_PARTITION && !allow_partition);
    return (op_kind)x;
}

static inline void op_connect(world *w, rng *r) {
    int k = (int)rng_below(r, NSERV);
    server *sv = &w->srv[k];
    sconn *c = NULL;
    /* Now and then a conn id comes back after its disconnect. */
    if (rng_pct(r, 15)) {
        for (int j = 0; j < sv->n && c == NULL; j++)
            if (!sv->c[j].live) c = &sv->c[j];
    }
    if (c == NULL) {
        if (sv->n == MAXCONN) return;
        c = &sv->c[sv->n++];
        snprintf(c->id, sizeof c->id, "c%d", sv->next++);
    }
    c->user = (int)rng_below(r, NUSER);
    c->label = (int)rng_below(r, 2);
    c->live = true;
    pd_event ev = conn_event(PD_EV_CONNECT, k, c);
    world_event(w, sv->at, &ev);
}

static inline void op_conn_event(world *w, rng *r, pd_event_type t) {
    int k;
    sconn *c = pick_live(w, r, &k);
    if (c == NULL) return;
    if (t == PD_EV_DISCONNECT) c->live = false;
    pd_event ev = conn_event(t, k, c);
    world_event(w, w->srv[k].at, &ev);
}

static inline void op_status(world *w, rng *r) {
    pd_event ev = {.type = PD_EV_STATUS, .user = pd_str_c(USER[rng_below(r, NUSER)]),
                   .status = (pd_chosen)rng_below(r, 4)};
    world_event(w, (int)rng_below(r, NREP), &ev);
}

static inline void op_custom(world *w, rng *r) {
    const char *text = TEXT[rng_below(r, 3)];
    pd_event ev = {.type = PD_EV_CUSTOM, .user = pd_str_c(USER[rng_below(r, NUSER)]),
                   .text = pd_str_c(text), .emoji = pd_str_c(*text && rng_pct(r, 50) ? "x" : ""),
                   .expires_at = *text && rng_pct(r, 40)
                                     ? (int64_t)(w->s.now + 200 + rng_below(r, 2800)) : 0};
    world_event(w, (int)rng_below(r, NREP), &ev);
}

static inline void op_move(world *w, rng *r) {
    int k = (int)rng_below(r, NSERV);
    int to = (w->srv[k].at + 1 + (int)rng_below(r, NREP - 1)) % NREP;
    w->srv[k].at = to;
    send_sync(w, k, to);
}

static inline void op_shutdown(world *w, rng *r) {
    int k = (int)rng_below(r, NSERV);
    for (int j = 0; j < w->srv[k].n; j++) w->srv[k].c[j].live = false;
    pd_event ev = {.type = PD_EV_SHUTDOWN, .server = pd_str_c(SERVER[k])};
    world_event(w, w->srv[k].at, &ev);
}

/* One node is cut off from the others for longer than node_timeout: each
 * side sees the other down and drops its devices; then the network heals. */
static inline void op_partition(world *w, rng *r) {
    sim *s = &w->s;
    int i = (int)rng_below(r, NREP);
    uint64_t until = s->now + s->cfg.node_timeout_ms + 500 + rng_below(r, 1500);
    if (s->trace) fprintf(stderr, "t=%llu step %d: %s cut off\n", (unsigned long long)s->now,
                          w->step, NODE[i]);
    s->cut[i] = true;
    while (s->now < until) {
        s->now += 500;
        server_heartbeats(w);
        sim_tick_all(s);
        sim_deliver_some(s, s->nq, true);
    }
    s->cut[i] = false;
}

static inline void do_op(world *w, rng *r, op_kind op) {
    switch (op) {
    case OP_CONNECT: op_connect(w, r); break;
    case OP_DISCONNECT: op_conn_event(w, r, PD_EV_DISCONNECT); break;
    case OP_ACTIVITY: op_conn_event(w, r, PD_EV_ACTIVITY); break;
    case OP_IDLE: op_conn_event(w, r, PD_EV_IDLE); break;
    case OP_STATUS: op_status(w, r); break;
    case OP_CUSTOM: op_custom(w, r); break;
    case OP_MOVE: op_move(w, r); break;
    case OP_PARTITION: op_partition(w, r); break;
    case OP_RESYNC: {
        int k = (int)rng_below(r, NSERV);
        send_sync(w, k, w->srv[k].at);
        break;
    }
    default: op_shutdown(w, r); break;
    }
}

/* ---- comparing replicas ------------------------------------------------------------------------ */

static inline int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

typedef struct {
    char *v[MAXCONN * NSERV];
    int n;
    char buf[MAXCONN * NSERV][96];
} strset;

static inline void add_device(void *ud, const pd_device_view *d) {
    strset *s = ud;
    REQUIRE(s->n < MAXCONN * NSERV, "too many devices");
    snprintf(s->buf[s->n], sizeof s->buf[0], "%.*s/%.*s/%.*s/%.*s/%d", (int)d->server.n,
             d->server.p, (int)d->conn.n, d->conn.p, (int)d->node.n, d->node.p, (int)d->device.n,
             d->device.p, d->state);
    s->v[s->n] = s->buf[s->n];
    s->n++;
}

/* A user's devices on replica i, sorted, joined in out. */
static inline void devices_of(const world *w, int i, int u, char *out, size_t cap) {
    static strset set;
    set.n = 0;
    pd_model_devices_of(pd_repl_model(w->s.r[i]), pd_str_c(USER[u]), add_device, &set);
    qsort(set.v, (size_t)set.n, sizeof set.v[0], cmp_str);
    size_t o = 0;
    out[0] = '\0';
    for (int k = 0; k < set.n && o < cap; k++) o += (size_t)snprintf(out + o, cap - o, "%s ", set.v[k]);
}

/* What anyone but user sees of user on replica i. */
static inline pd_view public_view(const world *w, int i, const char *user) {
    pd_view v;
    pd_model_view(pd_repl_model(w->s.r[i]), pd_str_c(user), pd_str_c(""), &v);
    return v;
}

/* A snapshot of replica i as the node writes one (pd_snap_*). */
typedef struct {
    uint8_t *buf;
    size_t len;
} snapbuf;

static inline void take_snapshot(sim *s, int i, snapbuf *sb) {
    pd_snap_info info;
    free(sb->buf);
    sb->buf = NULL;
    pd_repl_snapshot_info(s->r[i], &info, s->now);
    pd_snap *sn = pd_snap_begin(pd_repl_model(s->r[i]), &info);
    REQUIRE(sn != NULL, "pd_snap_begin");
    while (!pd_snap_step(sn, pd_repl_model(s->r[i]), 64)) {}
    REQUIRE(pd_snap_finish(sn, &sb->buf, &sb->len) == PD_OK, "pd_snap_finish");
}

static inline void view_of(const world *w, int i, int u, bool self, char *out, size_t cap) {
    pd_view v;
    pd_model_view(pd_repl_model(w->s.r[i]), pd_str_c(USER[u]),
                  self ? pd_str_c(USER[u]) : pd_str_c(""), &v);
    snprintf(out, cap, "status=%d text='%.*s' emoji='%.*s' expires_at=%lld devices=%u ver=%llu",
             v.status, (int)v.text.n, v.text.p ? v.text.p : "", (int)v.emoji.n,
             v.emoji.p ? v.emoji.p : "", (long long)v.expires_at, v.devices,
             (unsigned long long)v.ver);
}

/* What the socket servers hold for user u, as "server/conn/label", sorted. */
static inline void truth_of(const world *w, int u, char *out, size_t cap) {
    static strset set;
    set.n = 0;
    for (int k = 0; k < NSERV; k++) {
        for (int j = 0; j < w->srv[k].n; j++) {
            const sconn *c = &w->srv[k].c[j];
            if (!c->live || c->user != u) continue;
            snprintf(set.buf[set.n], sizeof set.buf[0], "%s/%s/%s", SERVER[k], c->id,
                     LABEL[c->label]);
            set.v[set.n] = set.buf[set.n];
            set.n++;
        }
    }
    qsort(set.v, (size_t)set.n, sizeof set.v[0], cmp_str);
    size_t o = 0;
    out[0] = '\0';
    for (int k = 0; k < set.n && o < cap; k++) o += (size_t)snprintf(out + o, cap - o, "%s ", set.v[k]);
}

/* "server/conn/node/label/state ..." as "server/conn/label ...". */
static inline void strip_owner(const char *in, char *out, size_t cap) {
    size_t o = 0;
    int field = 0;
    for (; *in && o + 1 < cap; in++) {
        if (*in == ' ') field = 0;
        else if (*in == '/') field++;
        if (field == 2 || field == 4) continue;
        out[o++] = *in;
    }
    out[o] = '\0';
}

static inline void compare_replicas(const world *w, bool check_truth) {
    char a[4096], b[4096];
    for (int u = 0; u < NUSER; u++) {
        for (int self = 0; self <= 1; self++) {
            view_of(w, 0, u, self, a, sizeof a);
            for (int i = 1; i < NREP; i++) {
                view_of(w, i, u, self, b, sizeof b);
                REQUIRE(strcmp(a, b) == 0,
                        "case seed %llu: %s view of %s differs:\n  n0: %s\n  %s: %s\n(a random case? "
                        "replay: PD_CASE=%llu PD_TRACE=1 test_repl --filter repl/converges_part1)",
                        (unsigned long long)w->seed, self ? "self" : "public", USER[u], a,
                        NODE[i], b, (unsigned long long)w->seed);
            }
        }
        devices_of(w, 0, u, a, sizeof a);
        for (int i = 1; i < NREP; i++) {
            devices_of(w, i, u, b, sizeof b);
            REQUIRE(strcmp(a, b) == 0,
                    "case seed %llu: devices of %s differ:\n  n0: %s\n  %s: %s\n(a random case? "
                    "replay: PD_CASE=%llu PD_TRACE=1 test_repl --filter repl/converges_part1)",
                    (unsigned long long)w->seed, USER[u], a, NODE[i], b,
                    (unsigned long long)w->seed);
        }
        if (!check_truth) continue;
        char got[4096], want[4096];
        strip_owner(a, got, sizeof got);
        truth_of(w, u, want, sizeof want);
        REQUIRE(strcmp(got, want) == 0,
                "case seed %llu: devices of %s are not what the servers hold:\n  replicas: %s\n"
                "  servers:  %s\n(a random case? replay: PD_CASE=%llu PD_TRACE=1 test_repl "
                "--filter repl/converges_part1)",
                (unsigned long long)w->seed, USER[u], a, want, (unsigned long long)w->seed);
    }
}

#endif /* PD_TESTS_REPL_WORLD_H */

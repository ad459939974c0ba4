/* test_repl.c - replication between nodes (repl.h) over a simulated,
 * lossy, reordering network (repl_sim.h).
 *
 * The property test: random operations on 3 replicas, delivered in random
 * order with duplicates and drops repaired by anti-entropy, end in identical
 * states. Each case (seeded; the run prints PD_SEED, and PD_CASE=<case seed>
 * replays one case, PD_TRACE=1 shows its messages) is a short scenario:
 * - four socket servers s0..s3, each attached to one replica, send events
 *   for five users to it: connect, disconnect, activity, idle, status,
 *   custom (some expiring), a resync, a shutdown, and now and then the
 *   server moves to another replica (a sync event there for the conns the
 *   old one had); servers heartbeat to their replica, so the old one times
 *   the server out as it would in production;
 * - after each burst every replica flushes and ticks, and some pending
 *   messages are delivered: deltas are dropped and duplicated, heartbeats
 *   too, now and then a sync request or reply part; deltas of different
 *   origins interleave arbitrarily (and, in a quarter of the cases, the
 *   deltas of one origin too);
 * - repair: no more faults; time advances one sync interval at a time,
 *   every replica ticks and everything is delivered, until timers have run
 *   out and only heartbeats still flow.
 * Then every user's public and self view (status, text, emoji, expires_at,
 * devices) and device list (conn, server, owner node, label, state) must be
 * the same on the three replicas, and the devices must be exactly the
 * connections the socket servers hold.
 *
 * Deterministic tests: a node that restarts (same id, higher incarnation)
 * loses its old devices on the peers at once; a node that goes silent loses
 * them after node_timeout; and in steady state each change of a user's
 * public view is announced exactly once by the whole cluster (checked
 * against a single model fed the same events). */
#include "alloc.h"
#include "repl_sim.h"
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NSERV 4
#define NUSER 5
#define MAXCONN 48

static const char *const SERVER[NSERV] = {"s0", "s1", "s2", "s3"};
static const char *const USER[NUSER] = {"u0", "u1", "u2", "u3", "u4"};
static const char *const LABEL[] = {"web", "mobile"};
static const char *const TEXT[] = {"", "lunch", "in a meeting"};

static const pd_repl_cfg RCFG = {
    .sync_interval_ms = 1000, .node_timeout_ms = 5000, .inc = 1, .max_msg_bytes = 4096};
static const pd_model_cfg MCFG = {
    .idle_timeout_ms = 2500, .offline_delay_ms = 1500, .server_timeout_ms = 3000};

/* ---- the world: the simulated cluster and what the socket servers hold -------------------- */

typedef struct {
    char id[12];
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

static void oracle_note(void *ud, const pd_view *v) {
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

static void world_init(world *w, uint64_t seed, const pd_model_cfg *mcfg, bool with_oracle) {
    memset(w, 0, sizeof *w);
    w->seed = seed;
    sim_init(&w->s, seed, &RCFG, mcfg, 1000000);
    for (int k = 0; k < NSERV; k++) w->srv[k].at = k % NREP;
    if (with_oracle) {
        w->oracle = pd_model_new(mcfg, pd_str_c("oracle"), oracle_note, w);
        REQUIRE(w->oracle != NULL, "no oracle");
    }
}

static void world_free(world *w) {
    sim_free(&w->s);
    pd_model_free(w->oracle);
    free(w->onotes);
}

/* Applies a socket server's event at replica i (and at the oracle). */
static void world_event(world *w, int i, const pd_event *ev) {
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

static pd_event conn_event(pd_event_type t, int k, const sconn *c) {
    return (pd_event){.type = t, .server = pd_str_c(SERVER[k]), .conn = pd_str_c(c->id),
                      .user = pd_str_c(USER[c->user]), .device = pd_str_c(LABEL[c->label])};
}

/* The server's complete list of live conns, sent as a sync to replica i. */
static void send_sync(world *w, int k, int i) {
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

static void server_heartbeats(world *w) {
    for (int k = 0; k < NSERV; k++) {
        pd_event ev = {.type = PD_EV_HEARTBEAT, .server = pd_str_c(SERVER[k])};
        world_event(w, w->srv[k].at, &ev);
    }
}

/* A random live conn (its server in *k), or NULL. */
static sconn *pick_live(world *w, rng *r, int *k) {
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

static op_kind pick_op(rng *r, bool allow_partition) {
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

static void op_connect(world *w, rng *r) {
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

static void op_conn_event(world *w, rng *r, pd_event_type t) {
    int k;
    sconn *c = pick_live(w, r, &k);
    if (c == NULL) return;
    if (t == PD_EV_DISCONNECT) c->live = false;
    pd_event ev = conn_event(t, k, c);
    world_event(w, w->srv[k].at, &ev);
}

static void op_status(world *w, rng *r) {
    pd_event ev = {.type = PD_EV_STATUS, .user = pd_str_c(USER[rng_below(r, NUSER)]),
                   .status = (pd_chosen)rng_below(r, 4)};
    world_event(w, (int)rng_below(r, NREP), &ev);
}

static void op_custom(world *w, rng *r, bool expiring) {
    const char *text = TEXT[rng_below(r, 3)];
    pd_event ev = {.type = PD_EV_CUSTOM, .user = pd_str_c(USER[rng_below(r, NUSER)]),
                   .text = pd_str_c(text), .emoji = pd_str_c(*text && rng_pct(r, 50) ? "x" : ""),
                   .expires_at = *text && expiring && rng_pct(r, 40)
                                     ? (int64_t)(w->s.now + 200 + rng_below(r, 2800)) : 0};
    world_event(w, (int)rng_below(r, NREP), &ev);
}

static void op_move(world *w, rng *r) {
    int k = (int)rng_below(r, NSERV);
    int to = (w->srv[k].at + 1 + (int)rng_below(r, NREP - 1)) % NREP;
    w->srv[k].at = to;
    send_sync(w, k, to);
}

static void op_shutdown(world *w, rng *r) {
    int k = (int)rng_below(r, NSERV);
    for (int j = 0; j < w->srv[k].n; j++) w->srv[k].c[j].live = false;
    pd_event ev = {.type = PD_EV_SHUTDOWN, .server = pd_str_c(SERVER[k])};
    world_event(w, w->srv[k].at, &ev);
}

static void server_heartbeats(world *w);

/* One node is cut off from the others for longer than node_timeout: each
 * side sees the other down and drops its devices; then the network heals. */
static void op_partition(world *w, rng *r) {
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

static void do_op(world *w, rng *r, op_kind op, bool expiring) {
    switch (op) {
    case OP_CONNECT: op_connect(w, r); break;
    case OP_DISCONNECT: op_conn_event(w, r, PD_EV_DISCONNECT); break;
    case OP_ACTIVITY: op_conn_event(w, r, PD_EV_ACTIVITY); break;
    case OP_IDLE: op_conn_event(w, r, PD_EV_IDLE); break;
    case OP_STATUS: op_status(w, r); break;
    case OP_CUSTOM: op_custom(w, r, expiring); break;
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

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

typedef struct {
    char *v[MAXCONN * NSERV];
    int n;
    char buf[MAXCONN * NSERV][96];
} strset;

static void add_device(void *ud, const pd_device_view *d) {
    strset *s = ud;
    REQUIRE(s->n < MAXCONN * NSERV, "too many devices");
    snprintf(s->buf[s->n], sizeof s->buf[0], "%.*s/%.*s/%.*s/%.*s/%d", (int)d->server.n,
             d->server.p, (int)d->conn.n, d->conn.p, (int)d->node.n, d->node.p, (int)d->device.n,
             d->device.p, d->state);
    s->v[s->n] = s->buf[s->n];
    s->n++;
}

/* A user's devices on replica i, sorted, joined in out. */
static void devices_of(const world *w, int i, int u, char *out, size_t cap) {
    static strset set;
    set.n = 0;
    pd_model_devices_of(pd_repl_model(w->s.r[i]), pd_str_c(USER[u]), add_device, &set);
    qsort(set.v, (size_t)set.n, sizeof set.v[0], cmp_str);
    size_t o = 0;
    out[0] = '\0';
    for (int k = 0; k < set.n && o < cap; k++) o += (size_t)snprintf(out + o, cap - o, "%s ", set.v[k]);
}

static void view_of(const world *w, int i, int u, bool self, char *out, size_t cap) {
    pd_view v;
    pd_model_view(pd_repl_model(w->s.r[i]), pd_str_c(USER[u]),
                  self ? pd_str_c(USER[u]) : pd_str_c(""), &v);
    snprintf(out, cap, "status=%d text='%.*s' emoji='%.*s' expires_at=%lld devices=%u", v.status,
             (int)v.text.n, v.text.p ? v.text.p : "", (int)v.emoji.n, v.emoji.p ? v.emoji.p : "",
             (long long)v.expires_at, v.devices);
}

/* What the socket servers hold for user u, as "server/conn/label", sorted. */
static void truth_of(const world *w, int u, char *out, size_t cap) {
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
static void strip_owner(const char *in, char *out, size_t cap) {
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

static void compare_replicas(const world *w, bool check_truth) {
    char a[4096], b[4096];
    for (int u = 0; u < NUSER; u++) {
        for (int self = 0; self <= 1; self++) {
            view_of(w, 0, u, self, a, sizeof a);
            for (int i = 1; i < NREP; i++) {
                view_of(w, i, u, self, b, sizeof b);
                REQUIRE(strcmp(a, b) == 0,
                        "case seed %llu: %s view of %s differs:\n  n0: %s\n  %s: %s\n(replay: "
                        "PD_CASE=%llu PD_TRACE=1)",
                        (unsigned long long)w->seed, self ? "self" : "public", USER[u], a,
                        NODE[i], b, (unsigned long long)w->seed);
            }
        }
        devices_of(w, 0, u, a, sizeof a);
        for (int i = 1; i < NREP; i++) {
            devices_of(w, i, u, b, sizeof b);
            REQUIRE(strcmp(a, b) == 0,
                    "case seed %llu: devices of %s differ:\n  n0: %s\n  %s: %s\n(replay: "
                    "PD_CASE=%llu PD_TRACE=1)",
                    (unsigned long long)w->seed, USER[u], a, NODE[i], b,
                    (unsigned long long)w->seed);
        }
        if (!check_truth) continue;
        char got[4096], want[4096];
        strip_owner(a, got, sizeof got);
        truth_of(w, u, want, sizeof want);
        REQUIRE(strcmp(got, want) == 0,
                "case seed %llu: devices of %s are not what the servers hold:\n  replicas: %s\n"
                "  servers:  %s\n(replay: PD_CASE=%llu PD_TRACE=1)",
                (unsigned long long)w->seed, USER[u], a, want, (unsigned long long)w->seed);
    }
}

/* ---- the property test ---------------------------------------------------------------------------- */

/* Repair: no more faults; heartbeats every sync interval until every timer
 * that the scenario armed has run (sync timeouts, server timeouts, the
 * offline delay, custom expiries) and only heartbeats still flow. */
static void repair(world *w) {
    sim *s = &w->s;
    const int min_rounds = 9;
    sim_deliver_all(s);
    for (int round = 0;; round++) {
        REQUIRE(round < 60, "case seed %llu: no quiet after 60 rounds",
                (unsigned long long)w->seed);
        s->now += s->cfg.sync_interval_ms;
        server_heartbeats(w);
        sim_tick_all(s);
        size_t other = sim_deliver_all(s);
        if (round >= min_rounds && other == 0) break;
    }
}

/* What the cases exercised, summed over a test's cases (printed once). */
typedef struct {
    uint64_t delivered, dropped, duplicated, gaps, dups, syncs_requested, syncs_done, downs;
} totals;

static void add_totals(totals *t, const world *w) {
    t->delivered += w->s.delivered;
    t->dropped += w->s.dropped;
    t->duplicated += w->s.duplicated;
    for (int i = 0; i < NREP; i++) {
        pd_repl_stats st;
        pd_repl_stats_get(w->s.r[i], &st);
        t->gaps += st.gaps;
        t->dups += st.deltas_dup;
        t->syncs_requested += st.syncs_requested;
        t->syncs_done += st.syncs_done;
        t->downs += st.nodes_down;
    }
}

static void run_case(uint64_t seed, totals *t) {
    world w;
    rng r = {seed};
    world_init(&w, seed, &MCFG, false);
    sim *s = &w.s;
    static const uint32_t drops[] = {0, 5, 15, 30}, dups[] = {0, 10, 25};
    s->drop_delta = drops[rng_below(&r, 4)];
    s->dup_delta = dups[rng_below(&r, 3)];
    s->drop_hb = rng_pct(&r, 50) ? 5 : 0;
    s->dup_hb = rng_pct(&r, 50) ? 10 : 0;
    s->drop_sync = rng_pct(&r, 30) ? 3 : 0;
    s->fifo_deltas = rng_pct(&r, 75);
    if (s->trace)
        fprintf(stderr, "case %llu: drop %u%% dup %u%% of deltas, fifo %d\n",
                (unsigned long long)seed, s->drop_delta, s->dup_delta, s->fifo_deltas);
    sim_warm_up(s);
    server_heartbeats(&w);
    int nops = 10 + (int)rng_below(&r, 21);
    for (w.step = 0; w.step < nops; w.step++) {
        s->now += 1 + rng_below(&r, 120);
        do_op(&w, &r, pick_op(&r, rng_pct(&r, 25)), true);
        /* Servers heartbeat all along, so a node a server left times it
         * out (the only way it drops entries that lost to a claim it never
         * heard of). */
        server_heartbeats(&w);
        if (w.step + 1 < nops && rng_pct(&r, 40)) continue; /* the burst goes on */
        sim_flush_all(s);
        sim_tick_all(s);
        size_t n = rng_pct(&r, 30) ? s->nq : rng_below(&r, (uint32_t)s->nq + 1);
        sim_deliver_some(s, n, true);
    }
    repair(&w);
    compare_replicas(&w, true);
    add_totals(t, &w);
    world_free(&w);
}

static void run_cases(const char *name, uint64_t first, uint64_t count) {
    size_t live = pd_alloc_live_bytes();
    totals t = {0};
    const char *one = getenv("PD_CASE");
    if (one && *one) {
        if (first == 0) run_case(strtoull(one, NULL, 0), &t);
        return;
    }
    announce_seed(name, count);
    for (uint64_t i = first; i < first + count; i++) run_case(case_seed("repl", i), &t);
    cr_expect_eq(pd_alloc_live_bytes(), live, "the replicas leaked %zd bytes",
                 (ssize_t)(pd_alloc_live_bytes() - live));
    fprintf(stderr,
            "%s: %llu messages delivered, %llu dropped, %llu duplicated; %llu gaps, %llu "
            "duplicate deltas, %llu/%llu state transfers done/asked, %llu nodes seen down\n",
            name, (unsigned long long)t.delivered, (unsigned long long)t.dropped,
            (unsigned long long)t.duplicated, (unsigned long long)t.gaps,
            (unsigned long long)t.dups, (unsigned long long)t.syncs_done,
            (unsigned long long)t.syncs_requested, (unsigned long long)t.downs);
    /* The faults must have happened, or the cases proved little. */
    cr_expect(t.dropped > 0 && t.duplicated > 0 && t.gaps > 0 && t.syncs_done > 0,
              "the cases exercised no repair");
}

/* 4 x 2500 cases of 10-30 operations each. */
Test(repl, converges_part1, .timeout = 240) { run_cases("repl/part1", 0, 2500); }
Test(repl, converges_part2, .timeout = 240) { run_cases("repl/part2", 2500, 2500); }
Test(repl, converges_part3, .timeout = 240) { run_cases("repl/part3", 5000, 2500); }
Test(repl, converges_part4, .timeout = 240) { run_cases("repl/part4", 7500, 2500); }

/* ---- a node restarts, a node goes silent --------------------------------------------------------- */

/* Timers that do not fire during these tests, but the offline delay. */
static const pd_model_cfg MCFG_QUIET = {
    .idle_timeout_ms = 1u << 30, .offline_delay_ms = 1500, .server_timeout_ms = 1u << 30};

static uint64_t owned_by(const world *w, int i, int owner) {
    return pd_model_owner_devices(pd_repl_model(w->s.r[i]), pd_str_c(NODE[owner]));
}

static pd_view public_view(const world *w, int i, const char *user) {
    pd_view v;
    pd_model_view(pd_repl_model(w->s.r[i]), pd_str_c(user), pd_str_c(""), &v);
    return v;
}

static void connect_at(world *w, int k, const char *conn, int user) {
    server *sv = &w->srv[k];
    sconn *c = &sv->c[sv->n++];
    snprintf(c->id, sizeof c->id, "%s", conn);
    c->user = user;
    c->label = 0;
    c->live = true;
    pd_event ev = conn_event(PD_EV_CONNECT, k, c);
    world_event(w, sv->at, &ev);
}

/* n2 (attached to s2) has u0 and u1 on it, n0 (s0) has u2; all delivered. */
static void three_nodes_with_devices(world *w) {
    world_init(w, case_seed("repl-fixed", 0), &MCFG_QUIET, false);
    sim_warm_up(&w->s);
    connect_at(w, 2, "c0", 0);
    connect_at(w, 2, "c1", 1);
    connect_at(w, 0, "c0", 2);
    sim_flush_all(&w->s);
    sim_deliver_all(&w->s);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(owned_by(w, i, 2), 2u, "%s holds n2's devices", NODE[i]);
        cr_assert_eq(public_view(w, i, "u0").status, PD_PUB_ONLINE);
    }
}

static size_t notes_of(const world *w, const char *user, pd_public status) {
    size_t n = 0;
    for (size_t k = 0; k < w->s.nnotes; k++)
        n += strcmp(w->s.notes[k].user, user) == 0 && w->s.notes[k].status == status;
    return n;
}

Test(repl, restarted_node_loses_its_old_devices_at_once) {
    world w;
    three_nodes_with_devices(&w);
    sim *s = &w.s;
    uint64_t restarted_at = s->now;
    sim_restart(s, 2);
    cr_assert_eq(owned_by(&w, 0, 2), 2u, "nothing heard from the new n2 yet");
    /* The new incarnation warms up for one interval, then heartbeats. */
    s->now += s->cfg.sync_interval_ms;
    sim_tick_all(s);
    sim_deliver_all(s);
    cr_assert(pd_repl_ready(s->r[2]));
    cr_assert_lt(s->now - restarted_at, s->cfg.node_timeout_ms, "well before any timeout");
    for (int i = 0; i < 2; i++) {
        pd_repl_stats st;
        pd_repl_stats_get(s->r[i], &st);
        cr_expect_eq(owned_by(&w, i, 2), 0u, "%s dropped the old n2's devices", NODE[i]);
        cr_expect_eq(st.nodes_down, 0u, "%s did not wait for n2 to time out", NODE[i]);
        pd_view v = public_view(&w, i, "u0");
        cr_expect_eq(v.devices, 0u);
        cr_expect_eq(v.status, PD_PUB_ONLINE, "%s: the offline delay applies", NODE[i]);
    }
    /* The new n2 caught up with the others' partitions. */
    cr_expect_eq(owned_by(&w, 2, 0), 1u, "the new n2 has n0's device");
    cr_expect_eq(public_view(&w, 2, "u2").status, PD_PUB_ONLINE);
    /* s2 sends its sync to the new n2 within the offline delay: u0 and u1
     * come back, owned by the new n2 everywhere, and never went offline. */
    s->now += 100;
    send_sync(&w, 2, 2);
    sim_flush_all(s);
    sim_deliver_all(s);
    for (int i = 0; i < NREP; i++) {
        cr_expect_eq(owned_by(&w, i, 2), 2u, "%s has the new n2's devices", NODE[i]);
        cr_expect_eq(public_view(&w, i, "u0").devices, 1u);
    }
    for (int round = 0; round < 4; round++) {
        s->now += s->cfg.sync_interval_ms;
        sim_tick_all(s);
        sim_deliver_all(s);
    }
    cr_expect_eq(notes_of(&w, "u0", PD_PUB_OFFLINE) + notes_of(&w, "u1", PD_PUB_OFFLINE), 0u,
                 "a restart within the offline delay is never announced as offline");
    compare_replicas(&w, true);
    world_free(&w);
}

Test(repl, restarted_node_that_does_not_come_back_goes_offline) {
    world w;
    three_nodes_with_devices(&w);
    sim *s = &w.s;
    sim_restart(s, 2);
    for (int round = 0; round < 4; round++) {
        s->now += s->cfg.sync_interval_ms;
        sim_tick_all(s);
        sim_deliver_all(s);
    }
    for (int i = 0; i < NREP; i++) {
        cr_expect_eq(public_view(&w, i, "u0").status, PD_PUB_OFFLINE, "%s", NODE[i]);
        cr_expect_eq(public_view(&w, i, "u2").status, PD_PUB_ONLINE, "%s", NODE[i]);
    }
    cr_expect_eq(notes_of(&w, "u0", PD_PUB_OFFLINE), 1u, "u0's offline announced once");
    cr_expect_eq(notes_of(&w, "u1", PD_PUB_OFFLINE), 1u, "u1's offline announced once");
    world_free(&w);
}

Test(repl, silent_node_loses_its_devices_after_node_timeout) {
    world w;
    three_nodes_with_devices(&w);
    sim *s = &w.s;
    /* n2's last heartbeat reached the others at warm-up's end; make that
     * exact: one more round, then n2 goes silent. */
    s->now += s->cfg.sync_interval_ms;
    sim_tick_all(s);
    sim_deliver_all(s);
    uint64_t last_heard = s->now;
    s->cut[2] = s->frozen[2] = true;
    while (s->now + 100 <= last_heard + s->cfg.node_timeout_ms) {
        s->now += 100;
        sim_tick_all(s);
        sim_deliver_all(s);
        for (int i = 0; i < 2; i++)
            cr_assert_eq(owned_by(&w, i, 2), 2u, "%s: n2 is not down at +%llu ms", NODE[i],
                         (unsigned long long)(s->now - last_heard));
    }
    s->now = last_heard + s->cfg.node_timeout_ms + 1;
    sim_tick_all(s);
    sim_deliver_all(s);
    for (int i = 0; i < 2; i++) {
        pd_repl_stats st;
        pd_repl_stats_get(s->r[i], &st);
        cr_expect_eq(owned_by(&w, i, 2), 0u, "%s dropped n2's devices", NODE[i]);
        cr_expect_eq(st.nodes_down, 1u);
        cr_expect_eq(public_view(&w, i, "u0").status, PD_PUB_ONLINE, "offline delay first");
    }
    s->now += MCFG_QUIET.offline_delay_ms;
    sim_tick_all(s);
    sim_deliver_all(s);
    for (int i = 0; i < 2; i++) {
        cr_expect_eq(public_view(&w, i, "u0").status, PD_PUB_OFFLINE, "%s", NODE[i]);
        cr_expect_eq(public_view(&w, i, "u1").status, PD_PUB_OFFLINE, "%s", NODE[i]);
        cr_expect_eq(public_view(&w, i, "u2").status, PD_PUB_ONLINE, "%s", NODE[i]);
    }
    /* Announced by one of the two live nodes; while a node leaves a watcher
     * may see one repeat, never a gap. */
    for (int u = 0; u < 2; u++) {
        size_t n = notes_of(&w, USER[u], PD_PUB_OFFLINE);
        cr_expect(n >= 1 && n <= 2, "%s's offline announced %zu times", USER[u], n);
    }
    world_free(&w);
}

/* ---- notifications: each change announced once by the whole cluster ------------------------------- */

static int cmp_heard(const void *a, const void *b) {
    const heard *x = a, *y = b;
    int c = strcmp(x->user, y->user);
    if (c == 0) c = (int)x->status - (int)y->status;
    return c ? c : strcmp(x->text, y->text);
}

/* The cluster's notifications since *seen must be the oracle's since
 * *oseen: the same changes, each once. */
static void expect_same_notes(world *w, size_t *seen, size_t *oseen, const char *phase) {
    size_t n = w->s.nnotes - *seen, on = w->nonotes - *oseen;
    heard *a = w->s.notes + *seen, *b = w->onotes + *oseen;
    if (n > 1) qsort(a, n, sizeof *a, cmp_heard);
    if (on > 1) qsort(b, on, sizeof *b, cmp_heard);
    bool same = n == on;
    for (size_t k = 0; same && k < n; k++) same = cmp_heard(&a[k], &b[k]) == 0;
    if (!same) {
        for (size_t k = 0; k < n; k++)
            fprintf(stderr, "  cluster (%s): %s %d '%s'\n", NODE[a[k].by], a[k].user, a[k].status,
                    a[k].text);
        for (size_t k = 0; k < on; k++)
            fprintf(stderr, "  oracle: %s %d '%s'\n", b[k].user, b[k].status, b[k].text);
    }
    REQUIRE(same, "seed %llu, step %d (%s): the cluster announced %zu changes, one node would "
            "announce %zu (listed above)", (unsigned long long)w->seed, w->step, phase, n, on);
    *seen = w->s.nnotes;
    *oseen = w->nonotes;
}

static void run_notification_scenario(uint64_t seed, int steps, size_t *total) {
    world w;
    rng r = {seed};
    size_t seen = 0, oseen = 0;
    /* No idle timeout: a moved device's idle timer restarts on its new
     * owner, which one model cannot mirror. The offline delay and custom
     * expiries do run, on every replica at the same simulated time. */
    world_init(&w, seed, &MCFG_QUIET, true);
    sim *s = &w.s;
    sim_warm_up(s);
    seen = s->nnotes;
    for (w.step = 0; w.step < steps; w.step++) {
        s->now += 1 + rng_below(&r, 400);
        pd_model_tick(w.oracle, s->now);
        sim_tick_all(s);
        sim_deliver_all(s);
        expect_same_notes(&w, &seen, &oseen, "timers");
        do_op(&w, &r, pick_op(&r, false), true);
        sim_flush_all(s);
        sim_deliver_all(s);
        expect_same_notes(&w, &seen, &oseen, "event");
    }
    compare_replicas(&w, true);
    *total += w.nonotes;
    world_free(&w);
}

Test(repl, steady_state_announces_each_change_exactly_once) {
    size_t total = 0;
    announce_seed("repl/notifications", 4);
    for (uint64_t i = 0; i < 4; i++) run_notification_scenario(case_seed("repl-notes", i), 300, &total);
    cr_expect_gt(total, 200u, "the scenarios changed views often enough (%zu)", total);
}

/* model_fixtures.h - helpers shared by the presence model tests
 * (test_presence.c, test_presence_scale.c): the notification recorder,
 * event builders, check_model() (invariants of the internals), the step
 * type of the scenario table and visible().
 *
 * Each tests/test_*.c is built alone as its own executable, so the helpers
 * are static inline (unused ones do not warn) and the header is included
 * once per binary. */
#ifndef PD_TESTS_MODEL_FIXTURES_H
#define PD_TESTS_MODEL_FIXTURES_H


#include "base/alloc.h"
#include "model/presence_int.h"
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- notification recorder ------------------------------------------------- */

typedef struct {
    char user[PD_ID_MAX + 1];
    pd_public status;
    char text[PD_TEXT_MAX + 1];
    char emoji[PD_EMOJI_MAX + 1];
    int64_t expires_at, last_seen, ts;
} note;

typedef struct {
    note *v;
    int n, cap;
    long total;       /* all notifications, also when not kept */
    bool keep;        /* store and check each one (small tests) */
    int bad_ts;       /* ts not above the user's previous one */
    int repeats;      /* same content as the user's previous one */
} recorder;

static inline void copy_str(char *dst, size_t cap, pd_str s) {
    size_t n = s.n < cap - 1 ? s.n : cap - 1;
    if (n) memcpy(dst, s.p, n);
    dst[n] = '\0';
}

static inline const note *last_note(const recorder *r, const char *user) {
    for (int i = r->n - 1; i >= 0; i--)
        if (strcmp(r->v[i].user, user) == 0) return &r->v[i];
    return NULL;
}

static inline void on_change(void *ud, const pd_view *v) {
    recorder *r = ud;
    r->total++;
    if (!r->keep) return;
    note x;
    copy_str(x.user, sizeof x.user, v->user);
    copy_str(x.text, sizeof x.text, v->text);
    copy_str(x.emoji, sizeof x.emoji, v->emoji);
    x.status = v->status;
    x.expires_at = v->expires_at;
    x.last_seen = v->last_seen;
    x.ts = v->ts;
    const note *p = last_note(r, x.user);
    if (p && x.ts <= p->ts) r->bad_ts++;
    bool same = p ? p->status == x.status && strcmp(p->text, x.text) == 0 &&
                        strcmp(p->emoji, x.emoji) == 0 && p->expires_at == x.expires_at
                  : x.status == PD_PUB_OFFLINE && x.text[0] == '\0';
    if (same) r->repeats++;
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 64;
        r->v = realloc(r->v, sizeof *r->v * (size_t)r->cap);
        cr_assert_not_null(r->v);
    }
    r->v[r->n++] = x;
}

/* ---- model helpers ------------------------------------------------------------ */

static const pd_model_cfg CFG = {
    .idle_timeout_ms = 1000, .offline_delay_ms = 500, .server_timeout_ms = 3000};

static inline pd_model *model_new(const pd_model_cfg *cfg, recorder *r) {
    memset(r, 0, sizeof *r);
    r->keep = true;
    pd_model *m = pd_model_new(cfg, PD_STR_LIT("node-a"), on_change, r);
    cr_assert_not_null(m);
    return m;
}

/* Frees m and checks it gave back everything allocated since `base`. */
static inline void model_free(pd_model *m, recorder *r, size_t base) {
    pd_model_free(m);
    cr_expect_eq(pd_alloc_live_bytes(), base, "model leaked %zd bytes",
                 (ssize_t)(pd_alloc_live_bytes() - base));
    cr_expect_eq(r->bad_ts, 0, "a notification's ts did not grow");
    cr_expect_eq(r->repeats, 0, "a notification repeated the previous one");
    free(r->v);
}

static inline pd_str S(const char *s) { return s ? pd_str_c(s) : (pd_str){NULL, 0}; }

static inline pd_event ev_connect(const char *srv, const char *conn, const char *user) {
    return (pd_event){.type = PD_EV_CONNECT, .server = S(srv), .conn = S(conn),
                      .user = S(user), .device = PD_STR_LIT("web")};
}
static inline pd_event ev_conn(pd_event_type t, const char *srv, const char *conn) {
    return (pd_event){.type = t, .server = S(srv), .conn = S(conn)};
}
static inline pd_event ev_status(const char *user, pd_chosen c) {
    return (pd_event){.type = PD_EV_STATUS, .user = S(user), .status = c};
}
static inline pd_event ev_custom(const char *user, const char *text, const char *emoji,
                                 int64_t exp) {
    return (pd_event){.type = PD_EV_CUSTOM, .user = S(user), .text = S(text),
                      .emoji = S(emoji ? emoji : ""), .expires_at = exp};
}
static inline pd_event ev_server(pd_event_type t, const char *srv) {
    return (pd_event){.type = t, .server = S(srv)};
}

/* A sync event; spec is space-separated "conn:user" entries (device "web").
 * The event points into sb and spec, which must outlive it. */
static inline pd_event ev_sync(msgpack_sbuffer *sb, const char *srv, const char *spec) {
    uint32_t n = 0;
    for (const char *p = spec; *p; p++) n += *p == ':';
    msgpack_sbuffer_init(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, n);
    for (const char *p = spec; *p;) {
        while (*p == ' ') p++;
        if (!*p) break;
        const char *colon = strchr(p, ':'), *end = colon + strcspn(colon, " ");
        msgpack_pack_map(&pk, 3);
        pd_pack_kv_str(&pk, "conn", (pd_str){p, (uint32_t)(colon - p)});
        pd_pack_kv_str(&pk, "user", (pd_str){colon + 1, (uint32_t)(end - colon - 1)});
        pd_pack_kv_str(&pk, "device", PD_STR_LIT("web"));
        p = end;
    }
    return (pd_event){.type = PD_EV_SYNC, .server = S(srv), .conns = {sb->data, (uint32_t)sb->size},
                      .nconns = n};
}

static inline pd_status apply(pd_model *m, const pd_event *ev, uint64_t now) {
    pd_apply_result res;
    pd_err err = {0};
    pd_status st = pd_model_apply(m, ev, now, &res, &err);
    if (st != PD_OK) cr_expect_eq(err.code, st, "err carries the status");
    return st;
}

static inline void apply_ok(pd_model *m, pd_event ev, uint64_t now) {
    cr_assert_eq(apply(m, &ev, now), PD_OK);
}

static inline pd_view view_of(const pd_model *m, const char *user, const char *viewer) {
    pd_view v;
    pd_model_view(m, S(user), S(viewer), &v);
    return v;
}

static inline pd_public pub(const pd_model *m, const char *user) {
    return view_of(m, user, NULL).status;
}

static inline pd_model_stats stats(const pd_model *m) {
    pd_model_stats st;
    pd_model_stats_get(m, &st);
    return st;
}

/* ---- invariants (internals) ---------------------------------------------------- */

typedef struct {
    uint64_t users, devices, timers, idleq;
    uint64_t by_status[PD_PUB_INVISIBLE + 1];
} walk;

static const char *ctx = ""; /* names the case in check_model failures */

static const pd_model *walked; /* the model check_model walks */

static inline void check_user(void *ud, void *e) {
    walk *w = ud;
    const pd_model *m = walked;
    pd_user *u = (pd_user *)e;
    uint32_t nd = 0, na = 0;
    for (pd_device *d = pd__dev_at(m, u->devs); d; d = pd__dev_at(m, d->unext)) {
        cr_assert_eq(pd__dev_user(m, d), u);
        nd++;
        na += d->state == PD_DEV_ACTIVE;
        cr_assert_eq(pd__idle_armed(d), d->state == PD_DEV_ACTIVE,
                     "%s: an active device is in the idle queue, an idle one not", ctx);
    }
    int idn = u->id_n;
    cr_assert_eq(u->ndev, nd, "%s: %.*s counts its devices", ctx, idn, u->id);
    cr_assert_eq(u->nactive, na, "%s: %.*s counts its active devices", ctx, idn, u->id);
    bool grace = (u->flags & UF_GRACE) != 0, back = (u->flags & UF_BACK) != 0;
    cr_assert_eq(pd_timer_armed(&u->grace), grace || back, "%s: grace flag and timer agree", ctx);
    if (grace) cr_assert_eq(nd, 0u, "%s: no grace while a device is connected", ctx);
    if (back) cr_assert_gt(nd, 0u, "%s: a return's ver waits only while a device is connected", ctx);
    cr_assert_eq(u->flags & UF_DIRTY, 0, "%s: nothing left dirty after an operation", ctx);
    if (pd__user_custom(u)) {
        cr_assert_eq(pd__user_custom(u)->user, u);
        cr_assert_eq(pd_timer_armed(&pd__user_custom(u)->expiry), pd__user_custom(u)->expires_at != 0,
                     "%s: a custom status with expires_at has its timer", ctx);
        w->timers += pd__user_custom(u)->expires_at != 0;
    }
    bool shown = pd__user_custom(u) && u->chosen != PD_CHOSEN_INVISIBLE;
    cr_assert(u->pub_status == (uint8_t)pd__user_status(u, false) &&
              u->pub_custom == (shown ? u->custom_gen : 0u),
              "%s: %.*s has an unannounced change", ctx, idn, u->id);
    w->users++;
    w->by_status[u->pub_status]++;
    w->devices += nd;
    w->idleq += na;
    w->timers += grace + back;
}

static inline void check_server(void *ud, pd_hnode *e) {
    walk *w = ud;
    const pd_model *m = walked;
    pd_server *s = (pd_server *)e;
    uint32_t n = 0;
    for (pd_device *d = pd__dev_at(m, s->devs), *prev = NULL; d;
         prev = d, d = pd__dev_at(m, d->snext), n++) {
        cr_assert_eq(pd__dev_server(m, d), s);
        cr_assert_eq(pd__dev_at(m, d->sprev), prev);
    }
    cr_assert_eq(s->ndev, n);
    cr_assert_eq(pd_timer_armed(&s->timeout), s->watched != 0,
                 "%s: a server that sent a heartbeat is watched by a timer", ctx);
    w->timers += s->watched != 0;
}

static inline void check_model(const pd_model *m) {
    walk w = {0};
    uint64_t c = 0;
    walked = m;
    do c = pd_ihtab_scan(&m->users, c, check_user, &w); while (c);
    do c = pd_htab_scan(&m->servers, c, check_server, &w); while (c);
    cr_assert_eq(w.users, m->users.n);
    for (int st = 0; st <= PD_PUB_INVISIBLE; st++)
        cr_assert_eq(w.by_status[st], m->by_status[st], "%s: users by status %s", ctx,
                     pd_public_name((pd_public)st));
    cr_assert_eq(w.devices, m->ndevices);
    cr_assert_eq(m->devices.n, m->ndevices);
    cr_assert_eq(w.timers, (uint64_t)pd_theap_count(&m->timers), "%s: every timer has an owner", ctx);
    uint64_t queued = 0;
    for (const pd_device *d = pd__dev_at(m, m->idle_head), *prev = NULL; d;
         prev = d, d = pd__dev_at(m, d->inext), queued++) {
        cr_assert_eq(pd__dev_at(m, d->iprev), prev, "%s: idle queue links", ctx);
        cr_assert(pd__idle_armed(d));
        if (prev) cr_assert_leq(pd__dev_touched(prev), pd__dev_touched(d), "%s: idle queue order", ctx);
        if (d->inext == 0) cr_assert_eq(m->idle_tail, pd__dev_ix(m, d));
    }
    if (m->idle_head == 0) cr_assert_eq(m->idle_tail, 0u);
    cr_assert_eq(queued, (uint64_t)m->nidle);
    cr_assert_eq(w.idleq, queued, "%s: every queued device is active", ctx);
    for (uint32_t i = 0; i < m->timers.n; i++) {
        cr_assert_eq(m->timers.h[i]->idx, i + 1);
        if (i) cr_assert_leq(m->timers.h[(i - 1) / 2]->due, m->timers.h[i]->due);
    }
    cr_assert_eq(m->ndirty, 0u);
}

/* ---- steps: one event or tick, as in the scenario table ------------------------ */

typedef enum {
    OP_END, OP_CONNECT, OP_DISCONNECT, OP_ACTIVITY, OP_IDLE, OP_STATUS, OP_CUSTOM,
    OP_SYNC, OP_HEARTBEAT, OP_SHUTDOWN, OP_TICK
} op_kind;

typedef struct {
    uint64_t t;
    op_kind op;
    const char *srv, *conn, *user, *text, *sync;
    pd_chosen chosen;
    int64_t expires_at;
    bool has_seq, dup;
    int64_t seq;
    pd_status rc;            /* expected result of apply */
    pd_public want;          /* public status of the scenario's user */
    int notes;               /* notifications of that user so far */
    bool chk_self, chk_seen;
    pd_public self;          /* status the user sees of itself */
    int64_t seen;            /* public last_seen */
    const char *want_text;   /* public custom text (NULL: not checked) */
} step;

#define CONNECT(s, c, u) .op = OP_CONNECT, .srv = (s), .conn = (c), .user = (u)
#define DISCONNECT(s, c) .op = OP_DISCONNECT, .srv = (s), .conn = (c)
#define ACTIVITY(s, c)   .op = OP_ACTIVITY, .srv = (s), .conn = (c)
#define IDLE(s, c)       .op = OP_IDLE, .srv = (s), .conn = (c)
#define STATUS(u, c)     .op = OP_STATUS, .user = (u), .chosen = PD_CHOSEN_##c
#define CUSTOM(u, x, e)  .op = OP_CUSTOM, .user = (u), .text = (x), .expires_at = (e)
#define SYNC(s, spec)    .op = OP_SYNC, .srv = (s), .sync = (spec)
#define HEARTBEAT(s)     .op = OP_HEARTBEAT, .srv = (s)
#define SHUTDOWN(s)      .op = OP_SHUTDOWN, .srv = (s)
#define TICK             .op = OP_TICK

static inline pd_event step_event(const step *s, msgpack_sbuffer *sb) {
    pd_event ev;
    switch (s->op) {
    case OP_CONNECT: ev = ev_connect(s->srv, s->conn, s->user); break;
    case OP_DISCONNECT: ev = ev_conn(PD_EV_DISCONNECT, s->srv, s->conn); break;
    case OP_ACTIVITY: ev = ev_conn(PD_EV_ACTIVITY, s->srv, s->conn); break;
    case OP_IDLE: ev = ev_conn(PD_EV_IDLE, s->srv, s->conn); break;
    case OP_STATUS: ev = ev_status(s->user, s->chosen); break;
    case OP_CUSTOM: ev = ev_custom(s->user, s->text, NULL, s->expires_at); break;
    case OP_SYNC: ev = ev_sync(sb, s->srv, s->sync); break;
    case OP_HEARTBEAT: ev = ev_server(PD_EV_HEARTBEAT, s->srv); break;
    default: ev = ev_server(PD_EV_SHUTDOWN, s->srv); break;
    }
    ev.has_seq = s->has_seq;
    ev.seq = s->seq;
    return ev;
}

/* What others can see of these users, and the model's counters but `users`
 * (a failed operation may leave an empty user behind), as one string: equal
 * strings before and after an operation mean it changed nothing. */
static const char *const VIS_USERS[] = {"u", "v", "w", "u0", "u1", "u2", "u3", "u4", "u5",
                                        "newbie", "moved", "n1", "n2"};
#define N_VIS_USERS (sizeof VIS_USERS / sizeof VIS_USERS[0])

static inline void visible(const pd_model *m, const recorder *r, char *out, size_t cap) {
    pd_model_stats st = stats(m);
    size_t o = (size_t)snprintf(out, cap, "n=%ld d=%llu s=%llu t=%llu c=%llu;", r->total,
                                (unsigned long long)st.devices, (unsigned long long)st.servers,
                                (unsigned long long)st.timers, (unsigned long long)st.changes);
    for (size_t i = 0; i < N_VIS_USERS && o < cap; i++) {
        pd_view v = view_of(m, VIS_USERS[i], VIS_USERS[i]);
        o += (size_t)snprintf(out + o, cap - o, "%s:%d/%d/%u/%.*s/%lld;", VIS_USERS[i],
                              pub(m, VIS_USERS[i]), v.status,
                              pd_model_devices_of(m, S(VIS_USERS[i]), NULL, NULL), (int)v.text.n,
                              v.text.p ? v.text.p : "", (long long)v.expires_at);
    }
}

#endif /* PD_TESTS_MODEL_FIXTURES_H */

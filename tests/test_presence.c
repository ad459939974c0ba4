/* test_presence.c - the presence model (presence.h) against PROTOCOL.md
 * sections 2 and 3.
 *
 * Design: the rules are exercised as a table of scenarios (SCENARIOS below),
 * each a list of steps - an event or a tick at an explicit time, then the
 * public status of one watched user and how many notifications that user
 * has had so far - run by one driver, run_scenario(). Cases that do not fit
 * a table (viewers, error paths, paging, allocation failure, memory and tick
 * cost) are individual tests.
 *
 * Every notification goes through a recorder that checks the section 3
 * promises as they happen: ts strictly grows per user, and a notification
 * always differs from the previous one for that user (so each change is
 * announced once, never repeated). After each scenario step, check_model()
 * walks the model's internals (presence_int.h) and verifies the links,
 * counters and timers agree with each other, and that nothing is left
 * unannounced. Every test frees its model and checks pd_alloc_live_bytes()
 * is back where it started, so a leak fails the test even without LSan. */
#include "alloc.h"
#include "presence_int.h"
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

static void copy_str(char *dst, size_t cap, pd_str s) {
    size_t n = s.n < cap - 1 ? s.n : cap - 1;
    if (n) memcpy(dst, s.p, n);
    dst[n] = '\0';
}

static const note *last_note(const recorder *r, const char *user) {
    for (int i = r->n - 1; i >= 0; i--)
        if (strcmp(r->v[i].user, user) == 0) return &r->v[i];
    return NULL;
}

static void on_change(void *ud, const pd_view *v) {
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

static int notes_for(const recorder *r, const char *user) {
    int c = 0;
    for (int i = 0; i < r->n; i++) c += strcmp(r->v[i].user, user) == 0;
    return c;
}

/* ---- model helpers ------------------------------------------------------------ */

static const pd_model_cfg CFG = {
    .idle_timeout_ms = 1000, .offline_delay_ms = 500, .server_timeout_ms = 3000};

static pd_model *model_new(const pd_model_cfg *cfg, recorder *r) {
    memset(r, 0, sizeof *r);
    r->keep = true;
    pd_model *m = pd_model_new(cfg, PD_STR_LIT("node-a"), on_change, r);
    cr_assert_not_null(m);
    return m;
}

/* Frees m and checks it gave back everything allocated since `base`. */
static void model_free(pd_model *m, recorder *r, size_t base) {
    pd_model_free(m);
    cr_expect_eq(pd_alloc_live_bytes(), base, "model leaked %zd bytes",
                 (ssize_t)(pd_alloc_live_bytes() - base));
    cr_expect_eq(r->bad_ts, 0, "a notification's ts did not grow");
    cr_expect_eq(r->repeats, 0, "a notification repeated the previous one");
    free(r->v);
}

static pd_str S(const char *s) { return s ? pd_str_c(s) : (pd_str){NULL, 0}; }

static pd_event ev_connect(const char *srv, const char *conn, const char *user) {
    return (pd_event){.type = PD_EV_CONNECT, .server = S(srv), .conn = S(conn),
                      .user = S(user), .device = PD_STR_LIT("web")};
}
static pd_event ev_conn(pd_event_type t, const char *srv, const char *conn) {
    return (pd_event){.type = t, .server = S(srv), .conn = S(conn)};
}
static pd_event ev_status(const char *user, pd_chosen c) {
    return (pd_event){.type = PD_EV_STATUS, .user = S(user), .status = c};
}
static pd_event ev_custom(const char *user, const char *text, const char *emoji, int64_t exp) {
    return (pd_event){.type = PD_EV_CUSTOM, .user = S(user), .text = S(text),
                      .emoji = S(emoji ? emoji : ""), .expires_at = exp};
}
static pd_event ev_server(pd_event_type t, const char *srv) {
    return (pd_event){.type = t, .server = S(srv)};
}

/* A sync event; spec is space-separated "conn:user" entries (device "web").
 * The event points into sb and spec, which must outlive it. */
static pd_event ev_sync(msgpack_sbuffer *sb, const char *srv, const char *spec) {
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

static pd_status apply(pd_model *m, const pd_event *ev, uint64_t now) {
    pd_apply_result res;
    pd_err err = {0};
    pd_status st = pd_model_apply(m, ev, now, &res, &err);
    if (st != PD_OK) cr_expect_eq(err.code, st, "err carries the status");
    return st;
}

static void apply_ok(pd_model *m, pd_event ev, uint64_t now) {
    cr_assert_eq(apply(m, &ev, now), PD_OK);
}

static pd_view view_of(const pd_model *m, const char *user, const char *viewer) {
    pd_view v;
    pd_model_view(m, S(user), S(viewer), &v);
    return v;
}

static pd_public pub(const pd_model *m, const char *user) { return view_of(m, user, NULL).status; }

static pd_model_stats stats(const pd_model *m) {
    pd_model_stats st;
    pd_model_stats_get(m, &st);
    return st;
}

/* ---- invariants (internals) ---------------------------------------------------- */

typedef struct {
    uint64_t users, devices, timers;
} walk;

static const char *ctx = ""; /* names the case in check_model failures */

static void check_user(void *ud, pd_hnode *e) {
    walk *w = ud;
    pd_user *u = (pd_user *)e;
    uint32_t nd = 0, na = 0;
    for (pd_device *d = u->devs; d; d = d->unext) {
        cr_assert_eq(d->user, u);
        nd++;
        na += d->state == PD_DEV_ACTIVE;
        cr_assert_eq(pd_timer_armed(&d->idle), d->state == PD_DEV_ACTIVE,
                     "%s: an active device has an idle timer, an idle one none", ctx);
    }
    int idn = u->id_n;
    cr_assert_eq(u->ndev, nd, "%s: %.*s counts its devices", ctx, idn, u->id);
    cr_assert_eq(u->nactive, na, "%s: %.*s counts its active devices", ctx, idn, u->id);
    bool grace = (u->flags & UF_GRACE) != 0;
    cr_assert_eq(pd_timer_armed(&u->grace), grace, "%s: grace flag and timer agree", ctx);
    if (grace) cr_assert_eq(nd, 0u, "%s: no grace while a device is connected", ctx);
    cr_assert_eq(u->flags & UF_DIRTY, 0, "%s: nothing left dirty after an operation", ctx);
    if (u->custom) {
        cr_assert_eq(u->custom->user, u);
        cr_assert_eq(pd_timer_armed(&u->custom->expiry), u->custom->expires_at != 0,
                     "%s: a custom status with expires_at has its timer", ctx);
        w->timers += u->custom->expires_at != 0;
    }
    bool shown = u->custom && u->chosen != PD_CHOSEN_INVISIBLE;
    cr_assert(u->pub_status == (uint8_t)pd__user_status(u, false) &&
              u->pub_custom == (shown ? u->custom_gen : 0u),
              "%s: %.*s has an unannounced change", ctx, idn, u->id);
    w->users++;
    w->devices += nd;
    w->timers += na + grace;
}

static void check_server(void *ud, pd_hnode *e) {
    walk *w = ud;
    pd_server *s = (pd_server *)e;
    uint32_t n = 0;
    for (pd_device *d = s->devs, *prev = NULL; d; prev = d, d = d->snext, n++) {
        cr_assert_eq(d->server, s);
        cr_assert_eq(d->sprev, prev);
    }
    cr_assert_eq(s->ndev, n);
    cr_assert_eq(pd_timer_armed(&s->timeout), s->watched != 0,
                 "%s: a server that sent a heartbeat is watched by a timer", ctx);
    w->timers += s->watched != 0;
}

static void check_model(const pd_model *m) {
    walk w = {0};
    uint64_t c = 0;
    do c = pd_htab_scan(&m->users, c, check_user, &w); while (c);
    do c = pd_htab_scan(&m->servers, c, check_server, &w); while (c);
    cr_assert_eq(w.users, m->users.n);
    cr_assert_eq(w.devices, m->ndevices);
    cr_assert_eq(m->devices.n, m->ndevices);
    cr_assert_eq(w.timers, (uint64_t)pd_theap_count(&m->timers), "%s: every timer has an owner", ctx);
    for (uint32_t i = 0; i < m->timers.n; i++) {
        cr_assert_eq(m->timers.h[i]->idx, i + 1);
        if (i) cr_assert_leq(m->timers.h[(i - 1) / 2]->due, m->timers.h[i]->due);
    }
    cr_assert_eq(m->ndirty, 0u);
}

/* ---- the scenario table --------------------------------------------------------- */

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
#define SEQ(n)           .has_seq = true, .seq = (n)
#define DUP              .dup = true
#define RC(x)            .rc = (x)
#define SELF(x)          .chk_self = true, .self = PD_PUB_##x
#define SEEN(x)          .chk_seen = true, .seen = (x)
#define TEXT(x)          .want_text = (x)
#define STEP(time, ev, st, n, ...) {.t = (time), ev, .want = PD_PUB_##st, .notes = (n), __VA_ARGS__}

#define MAX_STEPS 12
typedef struct {
    const char *name;        /* the watched user is always "u" */
    step steps[MAX_STEPS];
} scenario;

static const scenario SCENARIOS[] = {
    {"connect goes online", {
        STEP(0, CONNECT("s1", "c1", "u"), ONLINE, 1, SEEN(0), SELF(ONLINE)),
    }},
    {"idle event then activity", {
        STEP(0, CONNECT("s1", "c1", "u"), ONLINE, 1),
        STEP(100, IDLE("s1", "c1"), AWAY, 2),
        STEP(200, ACTIVITY("s1", "c1"), ONLINE, 3, SEEN(200)),
        STEP(250, IDLE("s1", "c1"), AWAY, 4),
        STEP(260, IDLE("s1", "c1"), AWAY, 4),
    }},
    {"idle timeout through tick", {
        STEP(0, CONNECT("s1", "c1", "u"), ONLINE, 1),
        STEP(999, TICK, ONLINE, 1),
        STEP(1000, TICK, AWAY, 2),
        STEP(1500, ACTIVITY("s1", "c1"), ONLINE, 3),
        STEP(2499, TICK, ONLINE, 3),
        STEP(2500, TICK, AWAY, 4),
    }},
    {"activity pushes the idle timeout back", {
        STEP(0, CONNECT("s1", "c1", "u"), ONLINE, 1),
        STEP(600, ACTIVITY("s1", "c1"), ONLINE, 1),
        STEP(1000, TICK, ONLINE, 1),
        STEP(1599, TICK, ONLINE, 1),
        STEP(1600, TICK, AWAY, 2),
    }},
    {"devices aggregate: one active is enough", {
        STEP(0, CONNECT("s1", "c1", "u"), ONLINE, 1),
        STEP(0, CONNECT("s2", "c2", "u"), ONLINE, 1),
        STEP(100, IDLE("s1", "c1"), ONLINE, 1),
        STEP(200, IDLE("s2", "c2"), AWAY, 2),
        STEP(300, ACTIVITY("s1", "c1"), ONLINE, 3),
        STEP(1299, TICK, ONLINE, 3),
        STEP(1300, TICK, AWAY, 4),
    }},
    {"devices aggregate: timeouts one by one", {
        STEP(0, CONNECT("s1", "c1", "u"), ONLINE, 1),
        STEP(0, CONNECT("s1", "c2", "u"), ONLINE, 1),
        STEP(500, ACTIVITY("s1", "c2"), ONLINE, 1),
        STEP(1000, TICK, ONLINE, 1),
        STEP(1500, TICK, AWAY, 2),
        STEP(1600, DISCONNECT("s1", "c1"), AWAY, 2),
        STEP(1700, ACTIVITY("s1", "c2"), ONLINE, 3),
    }},
    {"chosen busy and away override devices", {
        STEP(0, CONNECT("s1", "c1", "u"), ONLINE, 1),
        STEP(10, STATUS("u", BUSY), BUSY, 2),
        STEP(20, IDLE("s1", "c1"), BUSY, 2),
        STEP(30, ACTIVITY("s1", "c1"), BUSY, 2),
        STEP(40, STATUS("u", AWAY), AWAY, 3),
        STEP(50, STATUS("u", BUSY), BUSY, 4),
        STEP(60, STATUS("u", AUTO), ONLINE, 5),
        STEP(70, IDLE("s1", "c1"), AWAY, 6),
        STEP(80, STATUS("u", AWAY), AWAY, 6),
        STEP(90, STATUS("u", AUTO), AWAY, 6),
        STEP(100, ACTIVITY("s1", "c1"), ONLINE, 7),
    }},
    {"chosen status of an offline user", {
        STEP(0, STATUS("u", BUSY), OFFLINE, 0),
        STEP(10, CONNECT("s1", "c1", "u"), BUSY, 1),
        STEP(20, DISCONNECT("s1", "c1"), BUSY, 1),
        STEP(520, TICK, OFFLINE, 2, SEEN(20)),
    }},
    {"invisible: others see offline, idle is not announced", {
        STEP(0, CONNECT("s1", "c1", "u"), ONLINE, 1, SELF(ONLINE)),
        STEP(10, STATUS("u", INVISIBLE), OFFLINE, 2, SELF(INVISIBLE), SEEN(0)),
        STEP(20, IDLE("s1", "c1"), OFFLINE, 2, SELF(INVISIBLE)),
        STEP(30, ACTIVITY("s1", "c1"), OFFLINE, 2, SEEN(0)),
        STEP(1030, TICK, OFFLINE, 2),
        STEP(1040, DISCONNECT("s1", "c1"), OFFLINE, 2, SELF(INVISIBLE)),
        STEP(1540, TICK, OFFLINE, 2, SELF(INVISIBLE)),
        STEP(1550, STATUS("u", AUTO), OFFLINE, 2, SELF(OFFLINE), SEEN(1040)),
    }},
    {"invisible then auto shows the current state", {
        STEP(0, CONNECT("s1", "c1", "u"), ONLINE, 1),
        STEP(10, STATUS("u", INVISIBLE), OFFLINE, 2),
        STEP(20, IDLE("s1", "c1"), OFFLINE, 2),
        STEP(30, STATUS("u", AUTO), AWAY, 3),
    }},
    {"offline only after the delay, last_seen = disconnect", {
        STEP(0, CONNECT("s1", "c1", "u"), ONLINE, 1),
        STEP(100, DISCONNECT("s1", "c1"), ONLINE, 1, SEEN(100)),
        STEP(599, TICK, ONLINE, 1),
        STEP(600, TICK, OFFLINE, 2, SEEN(100)),
        STEP(5000, TICK, OFFLINE, 2, SEEN(100)),
    }},
    {"an idle user is held away during the delay", {
        STEP(0, CONNECT("s1", "c1", "u"), ONLINE, 1),
        STEP(10, IDLE("s1", "c1"), AWAY, 2),
        STEP(20, DISCONNECT("s1", "c1"), AWAY, 2),
        STEP(519, TICK, AWAY, 2),
        STEP(520, TICK, OFFLINE, 3, SEEN(20)),
    }},
    {"reconnect within the delay: no offline ever", {
        STEP(0, CONNECT("s1", "c1", "u"), ONLINE, 1),
        STEP(100, DISCONNECT("s1", "c1"), ONLINE, 1),
        STEP(400, CONNECT("s2", "c2", "u"), ONLINE, 1),
        STEP(600, TICK, ONLINE, 1),
        STEP(1399, TICK, ONLINE, 1),
        STEP(1400, TICK, AWAY, 2),
    }},
    {"reconnect after the delay", {
        STEP(0, CONNECT("s1", "c1", "u"), ONLINE, 1),
        STEP(100, DISCONNECT("s1", "c1"), ONLINE, 1),
        STEP(600, TICK, OFFLINE, 2),
        STEP(700, CONNECT("s1", "c1", "u"), ONLINE, 3, SEEN(700)),
    }},
    {"repeated connect of one conn is idempotent", {
        STEP(0, CONNECT("s1", "c1", "u"), ONLINE, 1),
        STEP(10, CONNECT("s1", "c1", "u"), ONLINE, 1),
        STEP(20, CONNECT("s1", "c1", "u"), ONLINE, 1),
        STEP(30, DISCONNECT("s1", "c1"), ONLINE, 1),
        STEP(530, TICK, OFFLINE, 2),
    }},
    {"custom status set, replaced, cleared", {
        STEP(0, CONNECT("s1", "c1", "u"), ONLINE, 1, TEXT("")),
        STEP(10, CUSTOM("u", "lunch", 0), ONLINE, 2, TEXT("lunch")),
        STEP(20, CUSTOM("u", "meeting", 0), ONLINE, 3, TEXT("meeting")),
        STEP(30, CUSTOM("u", "", 0), ONLINE, 4, TEXT("")),
        STEP(40, CUSTOM("u", "", 0), ONLINE, 4, TEXT("")),
        STEP(50, CUSTOM("u", "back", 0), ONLINE, 5, TEXT("back")),
    }},
    {"custom status of an unknown user, then expiry", {
        STEP(0, CUSTOM("u", "brb", 1000), OFFLINE, 1, TEXT("brb")),
        STEP(999, TICK, OFFLINE, 1, TEXT("brb")),
        STEP(1000, TICK, OFFLINE, 2, TEXT("")),
    }},
    {"custom status expiry while online", {
        STEP(0, CONNECT("s1", "c1", "u"), ONLINE, 1),
        STEP(10, CUSTOM("u", "5 min", 300), ONLINE, 2, TEXT("5 min")),
        STEP(20, CUSTOM("u", "10 min", 600), ONLINE, 3, TEXT("10 min")),
        STEP(300, TICK, ONLINE, 3, TEXT("10 min")),
        STEP(600, TICK, ONLINE, 4, TEXT("")),
    }},
    {"custom status hidden while invisible", {
        STEP(0, CONNECT("s1", "c1", "u"), ONLINE, 1),
        STEP(10, STATUS("u", INVISIBLE), OFFLINE, 2),
        STEP(20, CUSTOM("u", "secret", 0), OFFLINE, 2, TEXT("")),
        STEP(30, STATUS("u", AUTO), ONLINE, 3, TEXT("secret")),
    }},
    {"custom expiry while invisible is not announced", {
        STEP(0, CONNECT("s1", "c1", "u"), ONLINE, 1),
        STEP(5, CUSTOM("u", "x", 100), ONLINE, 2, TEXT("x")),
        STEP(10, STATUS("u", INVISIBLE), OFFLINE, 3, TEXT("")),
        STEP(100, TICK, OFFLINE, 3),
        STEP(110, STATUS("u", AUTO), ONLINE, 4, TEXT("")),
    }},
    {"server silent after a heartbeat times out", {
        STEP(0, CONNECT("s1", "c1", "u"), ONLINE, 1),
        STEP(0, HEARTBEAT("s1"), ONLINE, 1),
        STEP(1000, TICK, AWAY, 2),
        STEP(2500, HEARTBEAT("s1"), AWAY, 2),
        STEP(3000, TICK, AWAY, 2),
        STEP(5499, TICK, AWAY, 2),
        STEP(5500, TICK, AWAY, 2),
        STEP(5999, TICK, AWAY, 2),
        STEP(6000, TICK, OFFLINE, 3, SEEN(5500)),
    }},
    {"a server that never sent a heartbeat is not timed out", {
        STEP(0, CONNECT("s1", "c1", "u"), ONLINE, 1),
        STEP(1000, TICK, AWAY, 2),
        STEP(1000000, TICK, AWAY, 2),
    }},
    {"shutdown disconnects all of the server's conns", {
        STEP(0, CONNECT("s1", "c1", "u"), ONLINE, 1),
        STEP(0, CONNECT("s1", "c2", "u"), ONLINE, 1),
        STEP(0, CONNECT("s2", "c3", "u"), ONLINE, 1),
        STEP(100, SHUTDOWN("s1"), ONLINE, 1),
        STEP(700, TICK, ONLINE, 1),
        STEP(800, SHUTDOWN("s2"), ONLINE, 1),
        STEP(1299, TICK, ONLINE, 1),
        STEP(1300, TICK, OFFLINE, 2, SEEN(800)),
    }},
    {"sync replaces conns without a flap", {
        STEP(0, CONNECT("s1", "c1", "u"), ONLINE, 1),
        STEP(10, SYNC("s1", "c2:u"), ONLINE, 1),
        STEP(20, DISCONNECT("s1", "c1"), ONLINE, 1, RC(PD_EUNKNOWNCONN)),
        STEP(30, SYNC("s1", ""), ONLINE, 1),
        STEP(529, TICK, ONLINE, 1),
        STEP(530, TICK, OFFLINE, 2, SEEN(30)),
    }},
    {"duplicate seq is ignored, sync resets seq", {
        STEP(0, CONNECT("s1", "c1", "u"), ONLINE, 1, SEQ(1)),
        STEP(10, IDLE("s1", "c1"), ONLINE, 1, SEQ(1), DUP),
        STEP(20, IDLE("s1", "c1"), ONLINE, 1, SEQ(0), DUP),
        STEP(30, IDLE("s1", "c1"), AWAY, 2, SEQ(2)),
        STEP(40, ACTIVITY("s1", "c1"), AWAY, 2, SEQ(2), DUP),
        STEP(50, SYNC("s1", "c1:u"), AWAY, 2),
        STEP(60, ACTIVITY("s1", "c1"), ONLINE, 3, SEQ(1)),
        STEP(70, IDLE("s1", "c1"), ONLINE, 3, SEQ(1), DUP),
        STEP(80, SYNC("s1", "c1:u"), ONLINE, 3, SEQ(0)),  /* never a duplicate; sets seq */
        STEP(90, IDLE("s1", "c1"), ONLINE, 3, SEQ(0), DUP),
        STEP(100, SHUTDOWN("s1"), ONLINE, 3),             /* forgets the server and its seq */
        STEP(110, CONNECT("s1", "c1", "u"), ONLINE, 3, SEQ(1)),
    }},
};

static pd_event step_event(const step *s, msgpack_sbuffer *sb) {
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

static void run_scenario(const scenario *sc) {
    size_t base = pd_alloc_live_bytes();
    recorder r;
    pd_model *m = model_new(&CFG, &r);
    char at[128];
    ctx = at;
    for (int i = 0; i < MAX_STEPS && sc->steps[i].op != OP_END; i++) {
        const step *s = &sc->steps[i];
        snprintf(at, sizeof at, "[%s] step %d (t=%llu)", sc->name, i, (unsigned long long)s->t);
        if (s->op == OP_TICK) {
            pd_model_tick(m, s->t);
        } else {
            msgpack_sbuffer sb = {0};
            pd_event ev = step_event(s, &sb);
            pd_apply_result res = PD_APPLIED;
            pd_err err = {0};
            uint64_t changes = stats(m).changes;
            pd_status st = pd_model_apply(m, &ev, s->t, &res, &err);
            if (s->op == OP_SYNC) msgpack_sbuffer_destroy(&sb);
            cr_assert_eq(st, s->rc, "%s: %s, want %s", at, pd_status_str(st), pd_status_str(s->rc));
            if (st != PD_OK) cr_assert_eq(err.code, st, "%s: err", at);
            cr_assert_eq(res, s->dup ? PD_DUPLICATE : PD_APPLIED, "%s: duplicate?", at);
            if (st != PD_OK || s->dup) cr_assert_eq(stats(m).changes, changes, "%s: changed", at);
        }
        check_model(m);
        pd_view v = view_of(m, "u", NULL);
        cr_assert_eq(v.status, s->want, "%s: %s, want %s", at, pd_public_name(v.status),
                     pd_public_name(s->want));
        int notes = notes_for(&r, "u");
        cr_assert_eq(notes, s->notes, "%s: %d notifications, want %d", at, notes, s->notes);
        pd_public self = view_of(m, "u", "u").status;
        if (s->chk_self) cr_assert_eq(self, s->self, "%s: self view %s", at, pd_public_name(self));
        if (s->chk_seen) cr_assert_eq(v.last_seen, s->seen, "%s: last_seen %lld", at,
                                      (long long)v.last_seen);
        if (s->want_text) cr_assert(pd_str_eqc(v.text, s->want_text), "%s: text '%.*s'", at,
                                    (int)v.text.n, v.text.p);
        /* The last notification of the user is what others see now. */
        const note *last = last_note(&r, "u");
        if (last) cr_assert_eq(last->status, v.status, "%s: notified status is stale", at);
    }
    model_free(m, &r, base);
}

Test(presence, scenarios) {
    for (size_t i = 0; i < sizeof SCENARIOS / sizeof SCENARIOS[0]; i++) run_scenario(&SCENARIOS[i]);
    cr_log_info("%zu scenarios run", sizeof SCENARIOS / sizeof SCENARIOS[0]);
}

/* ---- individual rules ------------------------------------------------------------- */

Test(presence, invisible_views_depend_on_the_viewer) {
    size_t base = pd_alloc_live_bytes();
    recorder r;
    pd_model *m = model_new(&CFG, &r);
    apply_ok(m, ev_connect("s1", "c1", "u"), 0);
    apply_ok(m, ev_custom("u", "hidden", ":)", 0), 5);
    apply_ok(m, ev_status("u", PD_CHOSEN_INVISIBLE), 10);
    apply_ok(m, ev_conn(PD_EV_ACTIVITY, "s1", "c1"), 20);
    /* No viewer and another viewer: offline, no custom status, no devices,
     * last_seen frozen when the user went invisible. */
    for (int i = 0; i < 2; i++) {
        pd_view v = view_of(m, "u", i ? "someone-else" : NULL);
        cr_expect_eq(v.status, PD_PUB_OFFLINE);
        cr_expect(v.text.n == 0 && v.emoji.n == 0 && v.devices == 0 && v.last_seen == 0);
    }
    pd_view v = view_of(m, "u", "u");
    cr_expect_eq(v.status, PD_PUB_INVISIBLE, "the user sees itself invisible");
    cr_expect(pd_str_eqc(v.text, "hidden") && pd_str_eqc(v.emoji, ":)"));
    cr_expect(v.devices == 1 && v.last_seen == 20);
    /* The notification for going invisible is the public, offline view. */
    cr_assert_eq(notes_for(&r, "u"), 3);
    cr_expect_eq(last_note(&r, "u")->status, PD_PUB_OFFLINE);
    cr_expect_str_empty(last_note(&r, "u")->text);
    /* Unknown users: offline, last_seen 0, and reported unknown. */
    pd_view w;
    cr_expect_not(pd_model_view(m, PD_STR_LIT("nobody"), PD_STR_LIT("nobody"), &w));
    cr_expect_eq(w.status, PD_PUB_OFFLINE);
    cr_expect_eq(w.last_seen, 0);
    cr_expect(pd_str_eqc(w.user, "nobody"));
    cr_expect(pd_model_view(m, PD_STR_LIT("u"), (pd_str){NULL, 0}, &w));
    model_free(m, &r, base);
}

Test(presence, status_and_custom_create_unknown_users) {
    size_t base = pd_alloc_live_bytes();
    recorder r;
    pd_model *m = model_new(&CFG, &r);
    cr_expect_eq(stats(m).users, 0u);
    apply_ok(m, ev_status("a", PD_CHOSEN_BUSY), 0);
    apply_ok(m, ev_custom("b", "hi", NULL, 0), 0);
    cr_expect(stats(m).users == 2 && stats(m).devices == 0);
    pd_view v;
    cr_expect(pd_model_view(m, PD_STR_LIT("a"), (pd_str){NULL, 0}, &v));
    cr_expect_eq(v.status, PD_PUB_OFFLINE, "busy without a device is offline");
    cr_expect(pd_model_view(m, PD_STR_LIT("b"), (pd_str){NULL, 0}, &v) && pd_str_eqc(v.text, "hi"));
    cr_expect_eq(notes_for(&r, "a"), 0, "nothing visible changed for a");
    cr_expect_eq(notes_for(&r, "b"), 1, "b's custom status is visible");
    /* The chosen status is kept for the first connect. */
    apply_ok(m, ev_connect("s1", "c1", "a"), 10);
    cr_expect_eq(pub(m, "a"), PD_PUB_BUSY);
    model_free(m, &r, base);
}

/* What others can see of these users, and the model's counters but `users`
 * (a failed operation may leave an empty user behind), as one string: equal
 * strings before and after an operation mean it changed nothing. */
static const char *const VIS_USERS[] = {"u", "v", "w", "u0", "u1", "u2", "u3", "u4", "u5",
                                        "newbie", "moved", "n1", "n2"};
#define N_VIS_USERS (sizeof VIS_USERS / sizeof VIS_USERS[0])

static void visible(const pd_model *m, const recorder *r, char *out, size_t cap) {
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

/* Applies ev, expects `want` (a duplicate if dup) and no visible change. */
static void expect_no_change(pd_model *m, const recorder *r, pd_event ev, uint64_t now,
                             pd_status want, bool dup) {
    char before[1024], after[1024];
    visible(m, r, before, sizeof before);
    pd_apply_result res = PD_APPLIED;
    pd_err err = {0};
    cr_expect_eq(pd_model_apply(m, &ev, now, &res, &err), want, "%s", pd_event_type_name(ev.type));
    if (want != PD_OK) {
        cr_expect_eq(err.code, want);
        cr_expect_neq(err.msg[0], '\0', "the error explains itself");
    }
    cr_expect_eq(res, dup ? PD_DUPLICATE : PD_APPLIED);
    visible(m, r, after, sizeof after);
    cr_expect_str_eq(after, before, "%s changed state", pd_event_type_name(ev.type));
}

static void setup_three(pd_model *m) {
    apply_ok(m, ev_connect("s1", "c1", "u"), 0);
    apply_ok(m, ev_connect("s1", "c2", "v"), 0);
    apply_ok(m, ev_custom("v", "keep", NULL, 0), 0);
    apply_ok(m, ev_status("w", PD_CHOSEN_BUSY), 0);
}

Test(presence, unknown_conn_changes_nothing) {
    size_t base = pd_alloc_live_bytes();
    recorder r;
    pd_model *m = model_new(&CFG, &r);
    setup_three(m);
    expect_no_change(m, &r, ev_conn(PD_EV_DISCONNECT, "s1", "nope"), 50, PD_EUNKNOWNCONN, false);
    expect_no_change(m, &r, ev_conn(PD_EV_DISCONNECT, "s9", "c1"), 50, PD_EUNKNOWNCONN, false);
    expect_no_change(m, &r, ev_conn(PD_EV_ACTIVITY, "s1", "nope"), 50, PD_EUNKNOWNCONN, false);
    expect_no_change(m, &r, ev_conn(PD_EV_IDLE, "s9", "c2"), 50, PD_EUNKNOWNCONN, false);
    check_model(m);
    model_free(m, &r, base);
}

Test(presence, custom_in_the_past_changes_nothing) {
    size_t base = pd_alloc_live_bytes();
    recorder r;
    pd_model *m = model_new(&CFG, &r);
    setup_three(m);
    expect_no_change(m, &r, ev_custom("v", "too late", NULL, 999), 1000, PD_EBADVALUE, false);
    /* expires_at == now is expired too, and a rejected event creates no user. */
    expect_no_change(m, &r, ev_custom("newbie", "late", NULL, 1000), 1000, PD_EBADVALUE, false);
    cr_expect_not(pd_model_view(m, PD_STR_LIT("newbie"), (pd_str){NULL, 0}, &(pd_view){0}));
    cr_expect(pd_str_eqc(view_of(m, "v", NULL).text, "keep"));
    model_free(m, &r, base);
}

static pd_event with_seq(pd_event ev, int64_t seq) {
    ev.has_seq = true;
    ev.seq = seq;
    return ev;
}

/* How sync and shutdown reset the count is in the scenario table. */
Test(presence, seq_duplicates_change_nothing) {
    size_t base = pd_alloc_live_bytes();
    recorder r;
    pd_model *m = model_new(&CFG, &r);
    apply_ok(m, with_seq(ev_connect("s1", "c1", "u"), 10), 0);
    const pd_event_type types[] = {PD_EV_CONNECT, PD_EV_DISCONNECT, PD_EV_IDLE, PD_EV_ACTIVITY,
                                   PD_EV_HEARTBEAT, PD_EV_SHUTDOWN};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        pd_event d = types[i] == PD_EV_CONNECT ? ev_connect("s1", "c2", "v")
                                               : ev_conn(types[i], "s1", "c1");
        expect_no_change(m, &r, with_seq(d, i % 2 ? 10 : 3), 100, PD_OK, true);
    }
    /* Events without seq are never duplicates; a higher seq applies. */
    apply_ok(m, ev_conn(PD_EV_IDLE, "s1", "c1"), 200);
    cr_expect_eq(pub(m, "u"), PD_PUB_AWAY);
    apply_ok(m, with_seq(ev_conn(PD_EV_ACTIVITY, "s1", "c1"), 11), 300);
    cr_expect_eq(pub(m, "u"), PD_PUB_ONLINE);
    model_free(m, &r, base);
}

/* The devices of user as "conn@connected_at " entries. */
typedef struct {
    char s[256];
    size_t n;
} dev_list;

static void add_dev(void *ud, const pd_device_view *d) {
    dev_list *l = ud;
    cr_expect(pd_str_eqc(d->node, "node-a") && pd_str_eqc(d->device, "web"));
    l->n += (size_t)snprintf(l->s + l->n, sizeof l->s - l->n, "%.*s@%lld ", (int)d->conn.n,
                             d->conn.p, (long long)d->connected_at);
}

static const char *devs(const pd_model *m, const char *user, dev_list *l) {
    l->n = 0;
    l->s[0] = '\0';
    pd_model_devices_of(m, S(user), add_dev, l);
    return l->s;
}

Test(presence, sync_adds_missing_and_removes_absent) {
    size_t base = pd_alloc_live_bytes();
    recorder r;
    pd_model *m = model_new(&CFG, &r);
    apply_ok(m, ev_connect("s1", "c1", "a"), 0);
    apply_ok(m, ev_connect("s1", "c2", "b"), 0);
    apply_ok(m, ev_connect("s2", "c1", "a"), 0); /* same conn id, other server */
    msgpack_sbuffer sb;
    pd_event sy = ev_sync(&sb, "s1", "c2:b c3:c c4:c");
    apply_ok(m, sy, 100);
    msgpack_sbuffer_destroy(&sb);
    check_model(m);
    dev_list l;
    cr_expect_str_eq(devs(m, "a", &l), "c1@0 ", "a keeps only its conn on s2");
    cr_expect_str_eq(devs(m, "b", &l), "c2@0 ", "a conn already known is left as it is");
    const char *c = devs(m, "c", &l);
    cr_expect(strlen(c) == 14 && strstr(c, "c3@100 ") && strstr(c, "c4@100 "), "c: %s", c);
    cr_expect_eq(stats(m).devices, 4u);
    cr_expect_eq(pub(m, "a"), PD_PUB_ONLINE);
    cr_expect_eq(notes_for(&r, "a"), 1, "a never left");
    cr_expect_eq(notes_for(&r, "c"), 1, "two new devices, one change");
    model_free(m, &r, base);
}

Test(presence, sync_and_connect_move_a_conn_to_another_user) {
    size_t base = pd_alloc_live_bytes();
    recorder r;
    pd_model *m = model_new(&CFG, &r);
    apply_ok(m, ev_connect("s1", "c1", "u"), 0);
    msgpack_sbuffer sb;
    pd_event sy = ev_sync(&sb, "s1", "c1:v");
    apply_ok(m, sy, 10);
    msgpack_sbuffer_destroy(&sb);
    dev_list l;
    cr_expect_str_eq(devs(m, "u", &l), "");
    cr_expect_str_eq(devs(m, "v", &l), "c1@10 ");
    cr_expect_eq(pub(m, "u"), PD_PUB_ONLINE, "held for the offline delay");
    cr_expect_eq(pub(m, "v"), PD_PUB_ONLINE);
    /* A connect can move the conn back. */
    apply_ok(m, ev_connect("s1", "c1", "u"), 20);
    cr_expect_str_eq(devs(m, "u", &l), "c1@20 ");
    cr_expect_str_eq(devs(m, "v", &l), "");
    cr_expect_eq(stats(m).devices, 1u);
    check_model(m);
    pd_model_tick(m, 1000);
    cr_expect_eq(pub(m, "u"), PD_PUB_ONLINE, "u came back in time: never offline");
    cr_expect_eq(pub(m, "v"), PD_PUB_OFFLINE);
    cr_expect_eq(notes_for(&r, "u"), 1);
    cr_expect_eq(notes_for(&r, "v"), 2);
    model_free(m, &r, base);
}

/* Also: what a notification carries. */
Test(presence, ts_grows_strictly_within_one_ms) {
    size_t base = pd_alloc_live_bytes();
    recorder r;
    pd_model *m = model_new(&CFG, &r);
    apply_ok(m, ev_connect("s1", "c1", "u"), 5);
    apply_ok(m, ev_status("u", PD_CHOSEN_BUSY), 5);
    apply_ok(m, ev_status("u", PD_CHOSEN_AUTO), 5);
    apply_ok(m, ev_status("u", PD_CHOSEN_BUSY), 6);
    apply_ok(m, ev_connect("s1", "c2", "other"), 6);
    apply_ok(m, ev_status("u", PD_CHOSEN_AUTO), 100);
    apply_ok(m, ev_custom("u", "on holiday", "🌴", 50000), 100);
    cr_assert_eq(r.n, 7);
    const int64_t want[7] = {5, 6, 7, 8, 6, 100, 101};
    for (int i = 0; i < 7; i++) cr_expect_eq(r.v[i].ts, want[i], "notification %d", i);
    cr_expect_eq(view_of(m, "u", NULL).ts, 101, "a view carries the ts of the last notification");
    /* A notification carries the public view. */
    const note *n = &r.v[6];
    cr_expect(n->status == PD_PUB_ONLINE && n->last_seen == 5 && n->expires_at == 50000);
    cr_expect_str_eq(n->text, "on holiday");
    cr_expect_str_eq(n->emoji, "🌴");
    model_free(m, &r, base);
}

Test(presence, one_notification_per_change_in_bulk) {
    enum { N = 200 };
    size_t base = pd_alloc_live_bytes();
    recorder r;
    pd_model *m = model_new(&CFG, &r);
    char ids[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof ids[i], "user%d", i);
        apply_ok(m, ev_connect("s1", ids[i], ids[i]), 0);
        apply_ok(m, ev_connect("s2", ids[i], ids[i]), 0); /* a second device */
    }
    cr_expect_eq(r.total, N, "one notification per user for two devices");
    /* More than the 64 initial dirty slots in one tick and one shutdown. */
    pd_model_tick(m, 1000);
    cr_expect_eq(r.total, 2 * N, "all went away at once, each announced once");
    apply_ok(m, ev_server(PD_EV_SHUTDOWN, "s1"), 1100);
    apply_ok(m, ev_server(PD_EV_SHUTDOWN, "s2"), 1100);
    cr_expect_eq(r.total, 2 * N, "held away during the delay");
    pd_model_tick(m, 1600);
    cr_expect_eq(r.total, 3 * N);
    for (int i = 0; i < N; i++) cr_expect_eq(notes_for(&r, ids[i]), 3);
    check_model(m);
    model_free(m, &r, base);
}

Test(presence, next_due_is_the_earliest_timer) {
    size_t base = pd_alloc_live_bytes();
    recorder r;
    pd_model *m = model_new(&CFG, &r);
    cr_expect_eq(pd_model_next_due(m), UINT64_MAX, "no timers");
    apply_ok(m, ev_custom("u", "x", NULL, 700), 0);
    cr_expect_eq(pd_model_next_due(m), 700u);
    apply_ok(m, ev_connect("s1", "c1", "u"), 100);
    cr_expect_eq(pd_model_next_due(m), 700u);
    apply_ok(m, ev_connect("s1", "c2", "v"), 200);
    apply_ok(m, ev_conn(PD_EV_DISCONNECT, "s1", "c2"), 250);
    cr_expect_eq(pd_model_next_due(m), 700u, "grace of v ends at 750");
    pd_model_tick(m, 700);
    cr_expect_eq(pd_model_next_due(m), 750u);
    pd_model_tick(m, 750);
    cr_expect_eq(pd_model_next_due(m), 1100u, "idle of c1");
    pd_model_tick(m, 1100);
    cr_expect_eq(pd_model_next_due(m), UINT64_MAX);
    model_free(m, &r, base);
}

/* ---- paging through online users ---------------------------------------------------- */

enum { SCAN_USERS = 5000, SCAN_EXTRA = 5000 };

typedef struct {
    uint16_t *hits;     /* per user index */
    uint32_t page;      /* users in the current page */
    uint32_t bad;       /* ids not of the form p<index> */
} scan_rec;

static void on_online(void *ud, pd_str user) {
    scan_rec *s = ud;
    char buf[16];
    s->page++;
    if (user.n < 2 || user.n >= sizeof buf || user.p[0] != 'p') { s->bad++; return; }
    copy_str(buf, sizeof buf, user);
    long i = strtol(buf + 1, NULL, 10);
    if (i < 0 || i >= SCAN_USERS + SCAN_EXTRA) { s->bad++; return; }
    s->hits[i]++;
}

/* Users p0..p4999: even ones online (active, idle, busy, held in the offline
 * delay), odd ones offline (never connected, gone, invisible). */
static void scan_setup(pd_model *m) {
    char id[16];
    for (int i = 0; i < SCAN_USERS; i++) {
        snprintf(id, sizeof id, "p%d", i);
        if (i % 2 == 0) {
            apply_ok(m, ev_connect("s1", id, id), 0);
            if (i % 6 == 2) apply_ok(m, ev_conn(PD_EV_IDLE, "s1", id), 0);
            if (i % 10 == 4) apply_ok(m, ev_status(id, PD_CHOSEN_BUSY), 0);
        } else if (i % 6 == 1) {
            apply_ok(m, ev_custom(id, "offline", NULL, 0), 0);
        } else if (i % 6 == 3) {
            apply_ok(m, ev_connect("s2", id, id), 0);
            apply_ok(m, ev_status(id, PD_CHOSEN_INVISIBLE), 0);
        } else {
            apply_ok(m, ev_connect("s2", id, id), 0);
            apply_ok(m, ev_conn(PD_EV_DISCONNECT, "s2", id), 0);
        }
    }
    /* Some online ones leave later: they are still in their offline delay
     * when that of the odd ones has passed. */
    for (int i = 6; i < SCAN_USERS; i += 14) {
        snprintf(id, sizeof id, "p%d", i);
        apply_ok(m, ev_conn(PD_EV_DISCONNECT, "s1", id), 100);
    }
    pd_model_tick(m, 500);
}

/* Pages with `limit` until done; calls midway(m) once after `after` pages. */
static uint32_t scan_all(pd_model *m, uint32_t limit, scan_rec *s, uint32_t after,
                         void (*midway)(pd_model *)) {
    uint64_t cursor = 0;
    uint32_t pages = 0;
    do {
        s->page = 0;
        cursor = pd_model_scan_online(m, cursor, limit, on_online, s);
        cr_assert_leq(s->page, limit, "a page of %u users for limit %u", s->page, limit);
        cr_assert_lt(++pages, 1000000u, "the scan does not end");
        if (pages == after && midway) midway(m);
    } while (cursor != 0);
    return pages;
}

static void add_online_users(pd_model *m) {
    char id[16];
    for (int i = SCAN_USERS; i < SCAN_USERS + SCAN_EXTRA; i++) {
        snprintf(id, sizeof id, "p%d", i);
        apply_ok(m, ev_connect("s3", id, id), 1);
    }
}

Test(presence, scan_online_pages_return_each_online_user_once) {
    size_t base = pd_alloc_live_bytes();
    recorder r;
    pd_model *m = model_new(&CFG, &r);
    r.keep = false;
    scan_setup(m);
    cr_assert_eq(pd_model_scan_online(m, 0, 0, on_online, NULL), 0u, "limit 0: nothing");
    const uint32_t limits[] = {1, 7, 1000, 7};
    scan_rec s = {.hits = calloc(SCAN_USERS + SCAN_EXTRA, sizeof(uint16_t))};
    cr_assert_not_null(s.hits);
    for (size_t k = 0; k < 4; k++) {
        /* The last run doubles the users (and grows the table) midway. */
        uint64_t buckets = m->users.mask + 1;
        memset(s.hits, 0, (SCAN_USERS + SCAN_EXTRA) * sizeof(uint16_t));
        uint32_t pages = scan_all(m, limits[k], &s, k == 3 ? 100 : 0, add_online_users);
        if (k == 3) cr_expect_gt(m->users.mask + 1, buckets, "the table grew during the scan");
        cr_expect_eq(s.bad, 0u);
        for (int i = 0; i < SCAN_USERS; i++)
            cr_assert_eq(s.hits[i], i % 2 == 0 ? 1 : 0, "limit %u: p%d returned %u times",
                         limits[k], i, s.hits[i]);
        for (int i = SCAN_USERS; i < SCAN_USERS + SCAN_EXTRA; i++)
            cr_assert_leq(s.hits[i], 1, "a user that came midway is returned at most once");
        cr_expect_geq(pages, (SCAN_USERS / 2 + limits[k] - 1) / limits[k]);
        cr_log_info("online scan, limit %u: %u pages", limits[k], pages);
    }
    free(s.hits);
    model_free(m, &r, base);
}

/* ---- allocation failure --------------------------------------------------------------- */

typedef struct {
    const char *name;
    step ev;         /* the operation, as in the scenario table */
    bool atomic;     /* on error, nothing visible may have changed */
    bool allocates;  /* with a full model, some failure must reach the caller */
} alloc_op;

static const alloc_op ALLOC_OPS[] = {
    {"connect, new user and server", {CONNECT("s9", "cx", "newbie")}, true, true},
    {"connect, known user", {CONNECT("s1", "cx", "u1")}, true, true},
    {"connect moving a conn", {CONNECT("s1", "c2", "newbie")}, true, true},
    {"custom, new user", {CUSTOM("newbie", "hi", 1000000)}, true, true},
    {"custom, known user", {CUSTOM("u3", "hi", 1000000)}, true, true},
    {"status, new user", {STATUS("newbie", BUSY)}, true, true},
    {"heartbeat", {HEARTBEAT("s1")}, true, true},
    {"heartbeat, new server", {HEARTBEAT("s9")}, true, true},
    {"disconnect", {DISCONNECT("s1", "c4")}, true, false},
    {"shutdown", {SHUTDOWN("s1")}, true, false},
    {"sync", {SYNC("s1", "c0:u0 c1:moved cn1:n1 cn2:n2 cn3:u5")}, false, true},
};

/* nusers users on s1 (conn c<i>, user u<i>), u0 with a custom status: with
 * 64 users the timer heap and the user and device tables are full, so the
 * next operation must grow them. */
static void alloc_base(pd_model *m, int nusers) {
    char conn[16], user[16];
    for (int i = 0; i < nusers; i++) {
        snprintf(conn, sizeof conn, "c%d", i);
        snprintf(user, sizeof user, "u%d", i);
        apply_ok(m, ev_connect("s1", conn, user), 0);
    }
    apply_ok(m, ev_custom("u0", "base", NULL, 0), 0);
}

static void alloc_case(const alloc_op *op, int nusers, long n, bool *failed) {
    char where[96];
    snprintf(where, sizeof where, "%s, %d users, fail after %ld", op->name, nusers, n);
    ctx = where;
    size_t base = pd_alloc_live_bytes();
    recorder r;
    pd_model *m = model_new(&CFG, &r);
    alloc_base(m, nusers);
    char before[2048], after[2048];
    visible(m, &r, before, sizeof before);
    msgpack_sbuffer sb = {0};
    pd_event ev = step_event(&op->ev, &sb);
    pd_apply_result res;
    pd_err err = {0};
    pd_alloc_fail_after(n);
    pd_status st = pd_model_apply(m, &ev, 100, &res, &err);
    pd_alloc_fail_after(-1);
    if (sb.data) msgpack_sbuffer_destroy(&sb);
    cr_assert(st == PD_OK || st == PD_ENOMEM, "[%s] status %s", where, pd_status_str(st));
    if (st != PD_OK) {
        *failed = true;
        cr_assert_eq(err.code, PD_ENOMEM);
        visible(m, &r, after, sizeof after);
        if (op->atomic)
            cr_assert_str_eq(after, before, "[%s] an error changed state", where);
    }
    check_model(m);
    /* Queries work, and every timer is still there: far in the future all
     * devices are idle, every custom status expired and watched servers are
     * gone with their devices. */
    scan_rec s = {.hits = calloc(SCAN_USERS, sizeof(uint16_t))};
    scan_all(m, 5, &s, 0, NULL);
    free(s.hits);
    pd_model_tick(m, 100000000);
    check_model(m);
    for (size_t i = 0; i < N_VIS_USERS; i++) {
        pd_view v = view_of(m, VIS_USERS[i], NULL);
        cr_assert_neq(v.status, PD_PUB_ONLINE, "[%s] %s never went idle", where, VIS_USERS[i]);
        cr_assert(v.text.n == 0 || v.expires_at == 0, "[%s] %s: custom never expired", where,
                  VIS_USERS[i]);
    }
    model_free(m, &r, base);
}

Test(presence, allocation_failure_leaves_a_consistent_model) {
    for (size_t k = 0; k < sizeof ALLOC_OPS / sizeof ALLOC_OPS[0]; k++) {
        for (int nusers = 60; nusers <= 64; nusers += 4) {
            bool failed = false;
            for (long n = 0; n < 24; n++) alloc_case(&ALLOC_OPS[k], nusers, n, &failed);
            if (nusers == 64 && ALLOC_OPS[k].allocates)
                cr_expect(failed, "[%s] some injected failure reached the caller", ALLOC_OPS[k].name);
        }
    }
}

/* ---- memory and tick cost --------------------------------------------------------------- */

/* Creates nusers users (status events, no device) then ndev devices spread
 * over them, and reports bytes per user and per device; with several devices
 * per user, "device+user" is a device with its share of a user. */
static void memory_report(uint32_t nusers, uint32_t ndev) {
    recorder r;
    size_t base = pd_alloc_live_bytes();
    pd_model *m = model_new(&CFG, &r);
    r.keep = false;
    char user[16], conn[16], srv[8];
    size_t empty = pd_alloc_live_bytes();
    for (uint32_t i = 0; i < nusers; i++) {
        snprintf(user, sizeof user, "user%06u", i);
        apply_ok(m, ev_status(user, PD_CHOSEN_AUTO), 0);
    }
    size_t with_users = pd_alloc_live_bytes();
    for (uint32_t i = 0; i < ndev; i++) {
        snprintf(user, sizeof user, "user%06u", i % nusers);
        snprintf(conn, sizeof conn, "conn%07u", i);
        snprintf(srv, sizeof srv, "srv%u", i % 16);
        apply_ok(m, ev_connect(srv, conn, user), 0);
    }
    size_t full = pd_alloc_live_bytes();
    cr_assert_eq(stats(m).users, nusers);
    cr_assert_eq(stats(m).devices, ndev);
    double per_user = (double)(with_users - empty) / nusers;
    double per_dev = (double)(full - with_users) / ndev;
    char line[200];
    snprintf(line, sizeof line, "model memory: %u users x %u device%s: %.0f bytes/device+user "
             "(%.0f bytes/user, %.0f bytes/device)", nusers, ndev / nusers,
             ndev == nusers ? "" : "s", (double)(full - empty) / ndev, per_user, per_dev);
    printf("%s\n", line);
    fflush(stdout);
    cr_log_info("%s", line);
    /* The aim is < 200 bytes each; only a gross regression fails here. */
    cr_expect_lt(per_user, 1000.0);
    cr_expect_lt(per_dev, 1000.0);
    model_free(m, &r, base);
}

Test(presence, memory_100k_users_one_device_each) { memory_report(100000, 100000); }
Test(presence, memory_100k_devices_over_10k_users) { memory_report(10000, 100000); }

Test(presence, tick_with_nothing_due_touches_no_timer) {
    enum { N = 100000 };
    const uint64_t far = 1000000000ULL;
    size_t base = pd_alloc_live_bytes();
    recorder r;
    pd_model_cfg cfg = {.idle_timeout_ms = far, .offline_delay_ms = 500, .server_timeout_ms = far};
    pd_model *m = model_new(&cfg, &r);
    r.keep = false;
    char id[16];
    for (uint32_t i = 0; i < N; i++) {
        snprintf(id, sizeof id, "t%06u", i);
        /* Connected in decreasing time order: the heap has to sift. */
        apply_ok(m, ev_connect("s1", id, id), 1000 + (uint64_t)(N - 1 - i));
    }
    pd_model_stats before = stats(m);
    cr_assert_eq(before.timers, (uint64_t)N);
    cr_expect_eq(pd_model_next_due(m), far + 1000, "the earliest due time");
    /* Snapshot the heap: a tick that popped or re-armed any timer would
     * change its array. */
    size_t bytes = sizeof(pd_timer *) * m->timers.n;
    pd_timer **copy = malloc(bytes);
    cr_assert_not_null(copy);
    memcpy(copy, m->timers.h, bytes);
    long notes = r.total;
    for (uint64_t t = 2000; t < far; t += far / 8) pd_model_tick(m, t);
    pd_model_tick(m, far + 999);
    pd_model_stats after = stats(m);
    cr_expect_eq(after.timers, before.timers);
    cr_expect_eq(after.changes, before.changes);
    cr_expect_eq(r.total, notes);
    cr_expect_eq(memcmp(copy, m->timers.h, bytes), 0, "no timer was touched");
    cr_expect_eq(pd_model_next_due(m), far + 1000);
    /* At the earliest due time exactly one device goes idle. */
    pd_model_tick(m, far + 1000);
    cr_expect_eq(stats(m).timers, before.timers - 1);
    cr_expect_eq(r.total, notes + 1);
    cr_expect_eq(pd_model_next_due(m), far + 1001);
    free(copy);
    model_free(m, &r, base);
}

/* test_presence.c - the presence model (presence.h) against docs/protocol.md
 * sections 2 and 3.
 *
 * Design: the rules are exercised as a table of scenarios (SCENARIOS below),
 * each a list of steps - an event or a tick at an explicit time, then the
 * public status of one watched user and how many notifications that user
 * has had so far - run by one driver, run_scenario(). Cases that do not fit
 * a table (viewers, error paths) are individual tests. Paging, allocation
 * failure, memory and tick cost are in test_presence_scale.c; the helpers
 * both use are in model_fixtures.h.
 *
 * Every notification goes through a recorder that checks the section 3
 * promises as they happen: ts strictly grows per user, and a notification
 * always differs from the previous one for that user (so each change is
 * announced once, never repeated). After each scenario step, check_model()
 * walks the model's internals (presence_int.h) and verifies the links,
 * counters and timers agree with each other, and that nothing is left
 * unannounced. Every test frees its model and checks pd_alloc_live_bytes()
 * is back where it started, so a leak fails the test even without LSan. */
#include "model_fixtures.h"
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- notification count ---------------------------------------------------------- */

static int notes_for(const recorder *r, const char *user) {
    int c = 0;
    for (int i = 0; i < r->n; i++) c += strcmp(r->v[i].user, user) == 0;
    return c;
}

/* ---- the scenario table --------------------------------------------------------- */

/* The step type and its event macros (CONNECT, ...) are in model_fixtures.h. */
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

Test(presence, users_are_counted_by_public_status) {
    size_t base = pd_alloc_live_bytes();
    recorder r;
    pd_model *m = model_new(&CFG, &r);
    apply_ok(m, ev_connect("s1", "c1", "a"), 0);
    apply_ok(m, ev_connect("s1", "c2", "b"), 0);
    apply_ok(m, ev_status("b", PD_CHOSEN_BUSY), 1);
    apply_ok(m, ev_connect("s1", "c3", "c"), 2);
    apply_ok(m, ev_conn(PD_EV_IDLE, "s1", "c3"), 3);
    apply_ok(m, ev_status("d", PD_CHOSEN_AWAY), 4); /* no device: offline */
    apply_ok(m, ev_connect("s1", "c5", "e"), 5);
    apply_ok(m, ev_status("e", PD_CHOSEN_INVISIBLE), 6); /* offline to the others */
    pd_model_stats st = stats(m);
    cr_expect_eq(st.by_status[PD_PUB_ONLINE], 1u);
    cr_expect_eq(st.by_status[PD_PUB_BUSY], 1u);
    cr_expect_eq(st.by_status[PD_PUB_AWAY], 1u);
    cr_expect_eq(st.by_status[PD_PUB_OFFLINE], 2u);
    cr_expect_eq(st.by_status[PD_PUB_INVISIBLE], 0u);
    check_model(m);
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

/* The idle timers of this node's devices are one queue ordered by last
 * activity (presence_idle.c): an activity moves its device to the end,
 * a clock that went back puts it where its time belongs, and each goes
 * idle exactly a timeout after its last activity. */
Test(presence, devices_go_idle_a_timeout_after_their_last_activity) {
    size_t base = pd_alloc_live_bytes();
    recorder r;
    pd_model *m = model_new(&CFG, &r);
    apply_ok(m, ev_connect("s1", "c1", "u1"), 100);
    apply_ok(m, ev_connect("s1", "c2", "u2"), 300);
    apply_ok(m, ev_connect("s1", "c3", "u3"), 200); /* the clock went back */
    apply_ok(m, ev_connect("s1", "c4", "u4"), 250);
    apply_ok(m, ev_conn(PD_EV_ACTIVITY, "s1", "c1"), 400);
    apply_ok(m, ev_conn(PD_EV_ACTIVITY, "s1", "c4"), 350);
    check_model(m); /* the queue's order among the rest */
    cr_expect_eq(pd_model_next_due(m), 1200u, "c3, active last at 200");
    pd_model_tick(m, 1199);
    cr_expect_eq(pub(m, "u3"), PD_PUB_ONLINE);
    pd_model_tick(m, 1200);
    cr_expect_eq(pub(m, "u3"), PD_PUB_AWAY);
    cr_expect_eq(pd_model_next_due(m), 1300u, "then c2");
    apply_ok(m, ev_conn(PD_EV_ACTIVITY, "s1", "c3"), 1250); /* back in, at the end */
    pd_model_tick(m, 1349);
    cr_expect_eq(pub(m, "u2"), PD_PUB_AWAY);
    cr_expect_eq(pub(m, "u4"), PD_PUB_ONLINE);
    cr_expect_eq(pub(m, "u1"), PD_PUB_ONLINE);
    pd_model_tick(m, 1350);
    cr_expect_eq(pub(m, "u4"), PD_PUB_AWAY);
    check_model(m);
    /* One tick long after takes the rest in order. */
    pd_model_tick(m, 5000);
    cr_expect_eq(pub(m, "u1"), PD_PUB_AWAY);
    cr_expect_eq(pub(m, "u3"), PD_PUB_AWAY);
    cr_expect_eq(stats(m).timers, 0u);
    cr_expect_eq(pd_model_next_due(m), UINT64_MAX);
    check_model(m);
    model_free(m, &r, base);
}

/* A cleared model forgets the idle queue and the servers' indexes with
 * the records, and works as a new one. */
Test(presence, a_cleared_model_has_an_empty_idle_queue) {
    size_t base = pd_alloc_live_bytes();
    recorder r;
    pd_model *m = model_new(&CFG, &r);
    apply_ok(m, ev_connect("s1", "c1", "u1"), 100);
    apply_ok(m, ev_connect("s2", "c2", "u2"), 200);
    pd_model_clear(m);
    cr_expect(pd_model_pristine(m));
    cr_expect_eq(pd_model_next_due(m), UINT64_MAX, "no idle timer left");
    apply_ok(m, ev_connect("s2", "c3", "u3"), 300);
    cr_expect_eq(pd_model_next_due(m), 1300u);
    check_model(m);
    pd_model_tick(m, 1300);
    cr_expect_eq(pub(m, "u3"), PD_PUB_AWAY);
    check_model(m);
    model_free(m, &r, base);
}

/* A custom status value and the time its last value expired share one
 * field of the user (UF_EXPIRED): the expiry takes the value's place, and
 * a new value, or a clear, forgets the expiry. */
Test(presence, an_expired_custom_status_leaves_its_time_until_the_next_value) {
    size_t base = pd_alloc_live_bytes();
    recorder r;
    pd_model *m = model_new(&CFG, &r);
    apply_ok(m, ev_custom("u", "x", NULL, 700), 0);
    pd_user *u = pd__user_find(m, S("u"));
    cr_assert_not_null(u);
    cr_assert_not_null(pd__user_custom(u));
    cr_expect_eq(pd__user_expired_at(u), 0);
    pd_model_tick(m, 700);
    cr_expect_null(pd__user_custom(u), "expired");
    cr_expect_eq(pd__user_expired_at(u), 700, "its time is kept");
    cr_expect_geq(pd__user_ver(m, u), (uint64_t)700 << 16, "as a ver term");
    cr_expect_eq(view_of(m, "u", NULL).text.n, 0u);
    apply_ok(m, ev_custom("u", "y", NULL, 0), 800);
    cr_assert_not_null(pd__user_custom(u));
    cr_expect_eq(pd__user_expired_at(u), 0, "a new value forgets the expiry");
    pd_view v = view_of(m, "u", NULL);
    cr_expect(v.text.n == 1 && v.text.p[0] == 'y');
    apply_ok(m, ev_custom("u", "z", NULL, 1500), 900);
    apply_ok(m, ev_custom("u", "", NULL, 0), 1000); /* cleared before it expires */
    cr_expect_null(pd__user_custom(u));
    cr_expect_eq(pd__user_expired_at(u), 0, "a clear is no expiry");
    pd_model_tick(m, 1600);
    cr_expect_eq(pd__user_expired_at(u), 0);
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

/* A device's last activity is kept as 32 bits of ms after last_active,
 * which moves in steps of the activity resolution: a resolution beyond
 * those 32 bits (about 49.7 days; the configuration takes up to 136 years)
 * must not lose the last activity of a device connected that long. It was
 * clamped, so a device active a moment ago counted as active 2^32 ms
 * after the start of the step: idle at the next tick, then active again
 * at its next activity, and so on. */
Test(presence, a_resolution_beyond_32_bits_keeps_the_last_activity) {
    size_t base = pd_alloc_live_bytes();
    recorder r;
    pd_model_cfg cfg = CFG;
    const uint64_t day = 86400000u;
    cfg.activity_resolution_ms = 100 * day;
    const uint64_t s0 = 17900 * day;                  /* a step starts (2019) */
    pd_model *m = model_new(&cfg, &r);
    apply_ok(m, ev_connect("s1", "c1", "u"), s0 - 10);
    apply_ok(m, ev_conn(PD_EV_ACTIVITY, "s1", "c1"), s0 + 5); /* last_active: s0 */
    /* Kept active every few minutes for 60 days. */
    for (uint64_t t = s0 + 5; t < s0 + 60 * day; t += 60000) {
        apply_ok(m, ev_conn(PD_EV_ACTIVITY, "s1", "c1"), t);
        pd_model_tick(m, t + 1);
        bool online = pub(m, "u") == PD_PUB_ONLINE;
        cr_expect(online, "away %llu ms after the step began", (unsigned long long)(t + 1 - s0));
        if (!online) break;
    }
    check_model(m);
    model_free(m, &r, base);
}

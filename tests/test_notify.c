/* test_notify.c - the notifier (notify/notify.h): nothing before it is
 * ready, the warm-up's changes announced when it starts, one announcer per
 * user among the announcing nodes, the take-over of only the users that
 * became ours (within the window), pause, the gate in front of the publish
 * callback, flushing for a stop, out of memory, no leaks, and a replica
 * driving its notifier (clock, tick, next_due). The gate's own rules are
 * in test_notify_gate.c. */
#include "notify/notify.h"
#include "sync/repl.h"
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include "base/alloc.h"

#define MAX_PUB 4096
static char published[MAX_PUB][PD_ID_MAX + 1];
static int npub;

static void on_publish(void *ud, const pd_view *v) {
    int *calls = ud;
    (*calls)++;
    cr_assert_lt(npub, MAX_PUB);
    snprintf(published[npub++], PD_ID_MAX + 1, "%.*s", (int)v->user.n, v->user.p);
}

static int count_for(const char *user) {
    int k = 0;
    for (int i = 0; i < npub; i++) k += strcmp(published[i], user) == 0;
    return k;
}

static const pd_notify_cfg NCFG = {
    .min_interval_ms = 0, .sync_interval_ms = 100, .node_timeout_ms = 1000};

static pd_notifier *notifier(const pd_notify_cfg *cfg, const char *self, int *calls) {
    pd_notifier *nf = pd_notifier_new(cfg, pd_str_c(self), on_publish, calls);
    cr_assert_not_null(nf);
    return nf;
}

/* A model whose changes go to the notifier, as the replica wires it. */
typedef struct {
    pd_notifier *nf;
    uint64_t now;
} wiring;

static void forward(void *ud, const pd_view *v) {
    wiring *w = ud;
    pd_notifier_change(w->nf, v, w->now);
}

static const pd_model_cfg MCFG = {
    .idle_timeout_ms = 60000, .offline_delay_ms = 500, .server_timeout_ms = 60000};

static void connect_user(pd_model *m, wiring *w, int i, uint64_t now) {
    char conn[32], user[32];
    snprintf(conn, sizeof conn, "c%d", i);
    snprintf(user, sizeof user, "u%d", i);
    pd_event ev = {.type = PD_EV_CONNECT, .server = PD_STR_LIT("s1"), .conn = pd_str_c(conn),
                   .user = pd_str_c(user), .device = PD_STR_LIT("web")};
    pd_apply_result res;
    pd_err err;
    w->now = now;
    cr_assert_eq(pd_model_apply(m, &ev, now, &res, &err), PD_OK, "%s", err.msg);
}

static pd_view view(const char *user, pd_public st) {
    return (pd_view){.user = pd_str_c(user), .status = st, .ts = 1};
}

Test(notify, nothing_before_start_then_the_warm_up_once) {
    size_t base = pd_alloc_live_bytes();
    int calls = 0;
    npub = 0;
    wiring w = {notifier(&NCFG, "a", &calls), 0};
    pd_model *m = pd_model_new(&MCFG, PD_STR_LIT("a"), forward, &w);
    cr_assert_not_null(m);
    for (int i = 0; i < 5; i++) connect_user(m, &w, i, 1000 + (uint64_t)i);
    cr_expect_eq(calls, 0, "announced while warming up");
    cr_expect_not(pd_notifier_announcing(w.nf));
    pd_notifier_start(w.nf, m, 1000, 1300);
    cr_expect(pd_notifier_announcing(w.nf));
    cr_expect_eq(calls, 5, "the warm-up's changes: %d announced", calls);
    for (int i = 0; i < 5; i++) {
        char u[8];
        snprintf(u, sizeof u, "u%d", i);
        cr_expect_eq(count_for(u), 1, "%s", u);
    }
    connect_user(m, &w, 5, 1400);
    cr_expect_eq(calls, 6);
    cr_expect_eq(count_for("u5"), 1);
    pd_notify_stats st;
    pd_notifier_stats_get(w.nf, &st);
    cr_expect_eq(st.announced, 6);
    cr_expect_eq(st.gate.sent, 6);
    pd_model_free(m);
    pd_notifier_free(w.nf);
    cr_expect_eq(pd_alloc_live_bytes(), base, "leaked %zd bytes",
                 (ssize_t)(pd_alloc_live_bytes() - base));
}

Test(notify, a_warm_up_too_long_ago_is_not_announced) {
    int calls = 0;
    npub = 0;
    wiring w = {notifier(&NCFG, "a", &calls), 0};
    pd_model *m = pd_model_new(&MCFG, PD_STR_LIT("a"), forward, &w);
    connect_user(m, &w, 0, 1000);
    connect_user(m, &w, 1, 5000);
    /* Since 5500 less a node timeout (1000): u1 (5000), not u0 (1000). */
    pd_notifier_start(w.nf, m, 5500, 6000);
    cr_expect_eq(calls, 1);
    cr_expect_eq(count_for("u1"), 1);
    pd_model_free(m);
    pd_notifier_free(w.nf);
}

/* Every user has exactly one announcer among the announcing nodes, and
 * the users spread over them. */
Test(notify, one_announcer_per_user) {
    const char *ids[] = {"n1", "n2", "n3"};
    pd_notifier *nf[3];
    int calls = 0;
    for (int i = 0; i < 3; i++) {
        nf[i] = notifier(&NCFG, ids[i], &calls);
        for (int j = 0; j < 3; j++) {
            if (j == i) continue;
            cr_assert_eq(pd_notifier_add_peer(nf[i], pd_str_c(ids[j])), PD_OK);
            pd_notifier_set_peer(nf[i], pd_str_c(ids[j]), true);
        }
    }
    int share[3] = {0};
    for (int u = 0; u < 600; u++) {
        char user[16];
        snprintf(user, sizeof user, "user-%d", u);
        int k = 0;
        for (int i = 0; i < 3; i++) {
            bool mine = pd_notifier_is_announcer(nf[i], pd_str_c(user));
            k += mine;
            share[i] += mine;
        }
        cr_assert_eq(k, 1, "%s has %d announcers", user, k);
    }
    for (int i = 0; i < 3; i++) cr_expect_gt(share[i], 100, "%s announces %d", ids[i], share[i]);
    /* n3 not ready: n1 and n2 share everything. */
    for (int i = 0; i < 2; i++) pd_notifier_set_peer(nf[i], PD_STR_LIT("n3"), false);
    for (int u = 0; u < 600; u++) {
        char user[16];
        snprintf(user, sizeof user, "user-%d", u);
        bool a = pd_notifier_is_announcer(nf[0], pd_str_c(user));
        bool b = pd_notifier_is_announcer(nf[1], pd_str_c(user));
        cr_assert(a != b, "%s: n1 %d, n2 %d", user, a, b);
    }
    for (int i = 0; i < 3; i++) pd_notifier_free(nf[i]);
}

/* A peer goes: the recent changes of the users it announced, and only
 * those, are announced again here; older ones are not. */
Test(notify, take_over_announces_only_the_new_users_recent_changes) {
    int calls = 0;
    npub = 0;
    wiring w = {notifier(&NCFG, "a", &calls), 0};
    pd_model *m = pd_model_new(&MCFG, PD_STR_LIT("a"), forward, &w);
    cr_assert_eq(pd_notifier_add_peer(w.nf, PD_STR_LIT("b")), PD_OK);
    pd_notifier_set_peer(w.nf, PD_STR_LIT("b"), true);
    pd_notifier_start(w.nf, m, 900, 900);
    enum { N = 100 };
    bool was_b[N];
    int nb = 0;
    for (int i = 0; i < N; i++) {
        connect_user(m, &w, i, 1000);
        char user[8];
        snprintf(user, sizeof user, "u%d", i);
        was_b[i] = !pd_notifier_is_announcer(w.nf, pd_str_c(user));
        nb += was_b[i];
    }
    cr_assert_eq(calls, N - nb, "announced %d of a's %d", calls, N - nb);
    cr_assert_gt(nb, 10);
    npub = 0;
    calls = 0;
    /* b found gone 1800 ms after the changes: b may have owed them for a
     * node timeout before it was last heard (the window is 2 node
     * timeouts + 2 sync intervals = 2200 ms; chaos seed 5, u696). */
    pd_notifier_set_peer(w.nf, PD_STR_LIT("b"), false);
    pd_notifier_take_over(w.nf, m, 2800);
    cr_expect_eq(calls, nb, "took over %d, b had %d", calls, nb);
    for (int i = 0; i < N; i++) {
        char user[8];
        snprintf(user, sizeof user, "u%d", i);
        cr_expect_eq(count_for(user), was_b[i] ? 1 : 0, "%s", user);
    }
    /* b back and gone again, long after the changes: nothing is repeated. */
    calls = 0;
    pd_notifier_set_peer(w.nf, PD_STR_LIT("b"), true);
    pd_notifier_take_over(w.nf, m, 3300);
    pd_notifier_set_peer(w.nf, PD_STR_LIT("b"), false);
    pd_notifier_take_over(w.nf, m, 3300);
    cr_expect_eq(calls, 0, "%d repeated out of the window", calls);
    pd_model_free(m);
    pd_notifier_free(w.nf);
}

Test(notify, paused_announces_nothing) {
    int calls = 0;
    pd_notifier *nf = notifier(&NCFG, "a", &calls);
    pd_model *m = pd_model_new(&MCFG, PD_STR_LIT("a"), NULL, NULL);
    pd_notifier_start(nf, m, 0, 0);
    pd_view v = view("u", PD_PUB_ONLINE);
    pd_notifier_change(nf, &v, 10);
    cr_expect_eq(calls, 1);
    pd_notifier_pause(nf);
    cr_expect_not(pd_notifier_announcing(nf));
    pd_notifier_change(nf, &v, 20);
    cr_expect_eq(calls, 1, "announced while paused");
    pd_model_free(m);
    pd_notifier_free(nf);
}

/* The gate sits between the choice and the publish callback; a flush for
 * a stop sends what it holds and bypasses it from then on. */
Test(notify, coalesced_then_flushed_for_a_stop) {
    size_t base = pd_alloc_live_bytes();
    int calls = 0;
    npub = 0;
    pd_notify_cfg cfg = NCFG;
    cfg.min_interval_ms = 100;
    pd_notifier *nf = notifier(&cfg, "a", &calls);
    pd_model *m = pd_model_new(&MCFG, PD_STR_LIT("a"), NULL, NULL);
    pd_notifier_start(nf, m, 0, 0);
    pd_view on = view("u", PD_PUB_ONLINE), away = view("u", PD_PUB_AWAY);
    pd_notifier_change(nf, &on, 1000);
    pd_notifier_change(nf, &away, 1010);
    cr_expect_eq(calls, 1, "the leading edge only");
    cr_expect_eq(pd_notifier_next_due(nf), 1100);
    pd_notifier_tick(nf, 1100);
    cr_expect_eq(calls, 2, "the trailing edge at the interval's end");
    pd_notifier_change(nf, &on, 1150);
    cr_expect_eq(calls, 2, "held");
    pd_notifier_flush(nf);
    cr_expect_eq(calls, 3, "flushed");
    cr_expect_eq(pd_notifier_next_due(nf), UINT64_MAX);
    pd_notifier_change(nf, &away, 1160);
    cr_expect_eq(calls, 4, "stopping: at once");
    pd_notify_stats st;
    pd_notifier_stats_get(nf, &st);
    cr_expect_eq(st.announced, 4);
    cr_expect_eq(npub, 4);
    pd_model_free(m);
    pd_notifier_free(nf);
    cr_expect_eq(pd_alloc_live_bytes(), base, "leaked %zd bytes",
                 (ssize_t)(pd_alloc_live_bytes() - base));
}

Test(notify, out_of_memory_changes_nothing) {
    int calls = 0;
    pd_alloc_fail_after(0);
    cr_expect_null(pd_notifier_new(&NCFG, PD_STR_LIT("a"), on_publish, &calls));
    pd_alloc_fail_after(-1);
    pd_notifier *nf = notifier(&NCFG, "a", &calls);
    pd_alloc_fail_after(0);
    cr_expect_eq(pd_notifier_add_peer(nf, PD_STR_LIT("b")), PD_ENOMEM);
    pd_alloc_fail_after(-1);
    /* b was never added: taken as not announcing, a announces everyone. */
    pd_notifier_set_peer(nf, PD_STR_LIT("b"), true);
    for (int u = 0; u < 50; u++) {
        char user[16];
        snprintf(user, sizeof user, "user-%d", u);
        cr_expect(pd_notifier_is_announcer(nf, pd_str_c(user)), "%s", user);
    }
    char longid[PD_ID_MAX + 2];
    memset(longid, 'x', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    cr_expect_eq(pd_notifier_add_peer(nf, pd_str_c(longid)), PD_EBADVALUE);
    cr_expect_null(pd_notifier_new(&NCFG, pd_str_c(longid), on_publish, &calls));
    pd_notifier_free(nf);
}

/* After a gap in hearing a peer: every user this node announces that is
 * not offline is announced again (the other side may have taken it for
 * gone), and so is every user that changed since the peer was last heard;
 * a user offline since before is not, nor a user another node announces. */
Test(notify, heal_announces_the_online_and_the_recent_again) {
    int calls = 0;
    npub = 0;
    wiring w = {notifier(&NCFG, "a", &calls), 0};
    pd_model *m = pd_model_new(&MCFG, PD_STR_LIT("a"), forward, &w);
    cr_assert_not_null(m);
    pd_notifier_start(w.nf, m, 0, 0);
    for (int i = 0; i < 40; i++) connect_user(m, &w, i, 1000); /* online since long ago */
    /* u0..u9 leave long before the gap: offline from 1000 + the offline delay on */
    for (int i = 0; i < 10; i++) {
        char conn[32];
        snprintf(conn, sizeof conn, "c%d", i);
        pd_event ev = {.type = PD_EV_DISCONNECT, .server = PD_STR_LIT("s1"),
                       .conn = pd_str_c(conn)};
        pd_apply_result res;
        pd_err err;
        w.now = 1100;
        cr_assert_eq(pd_model_apply(m, &ev, 1100, &res, &err), PD_OK);
    }
    w.now = 2000;
    pd_model_tick(m, 2000);
    /* u10 leaves during the gap (heard last at 5000, heal at 9000) */
    pd_event ev = {.type = PD_EV_DISCONNECT, .server = PD_STR_LIT("s1"), .conn = PD_STR_LIT("c10")};
    pd_apply_result res;
    pd_err err;
    w.now = 6000;
    cr_assert_eq(pd_model_apply(m, &ev, 6000, &res, &err), PD_OK);
    w.now = 7000;
    pd_model_tick(m, 7000);
    cr_assert_eq(pd_notifier_add_peer(w.nf, PD_STR_LIT("b")), PD_OK);
    pd_notifier_set_peer(w.nf, PD_STR_LIT("b"), true);
    npub = 0;
    pd_notifier_heal(w.nf, m, 5000, 9000);
    for (int i = 0; i < 40; i++) {
        char user[32];
        snprintf(user, sizeof user, "u%d", i);
        bool ours = pd_notifier_is_announcer(w.nf, pd_str_c(user));
        int want = ours && i >= 10 ? 1 : 0; /* online now, or u10: changed in the gap */
        cr_expect_eq(count_for(user), want, "%s (ours: %d) announced %d times", user, ours,
                     count_for(user));
    }
    int ours = 0;
    for (int i = 10; i < 40; i++) {
        char user[32];
        snprintf(user, sizeof user, "u%d", i);
        ours += pd_notifier_is_announcer(w.nf, pd_str_c(user));
    }
    cr_expect(ours > 5 && ours < 25, "the hash should split 30 users roughly in two: %d", ours);
    pd_model_free(m);
    pd_notifier_free(w.nf);
}

/* A heal of a large model is done in slices: the first call announces a
 * bounded part, each step the next part, and at the end every user not
 * offline was announced again exactly once; pausing ends a heal. */
#define HEAL_USERS 20000
static int heal_count[HEAL_USERS];

/* i of the view's user, u<i>. */
static int user_index(const pd_view *v) {
    int i = -1;
    char buf[32];
    snprintf(buf, sizeof buf, "%.*s", (int)v->user.n, v->user.p);
    cr_assert_eq(sscanf(buf, "u%d", &i), 1);
    cr_assert(i >= 0 && i < HEAL_USERS);
    return i;
}

static void count_publish(void *ud, const pd_view *v) {
    int *calls = ud;
    heal_count[user_index(v)]++;
    (*calls)++;
}

/* A notifier "a" publishing to fn (calls), started, and a model of
 * HEAL_USERS users u<i> connected at 1000 through it. */
static pd_model *heal_world(pd_notify_publish_fn fn, int *calls, wiring *w) {
    pd_notifier *nf = pd_notifier_new(&NCFG, pd_str_c("a"), fn, calls);
    cr_assert_not_null(nf);
    *w = (wiring){nf, 0};
    pd_model *m = pd_model_new(&MCFG, PD_STR_LIT("a"), forward, w);
    cr_assert_not_null(m);
    pd_notifier_start(nf, m, 0, 0);
    for (int i = 0; i < HEAL_USERS; i++) connect_user(m, w, i, 1000);
    return m;
}

/* The walk under way (heal, repeat, closing walk) runs to its end at now. */
static void walk_to_end(pd_notifier *nf, const pd_model *m, uint64_t now) {
    while (pd_notifier_healing(nf)) pd_notifier_heal_step(nf, m, now);
}

/* heal_world's node, long after its users connected (and after the window
 * of its start, whose closing walk said them all), starts again: returns
 * the time of that start. */
static uint64_t restart_long_after(pd_notifier *nf, const pd_model *m) {
    uint64_t start = 1000 + 4 * NCFG.node_timeout_ms;
    cr_assert_not(pd_notifier_floors_open(nf, start - 1));
    pd_notifier_heal_step(nf, m, start - 1);
    walk_to_end(nf, m, start - 1);
    pd_notifier_pause(nf);
    pd_notifier_start(nf, m, start, start);
    return start;
}

/* Steps from t, 100 ms a step, while the window of floors is open: returns
 * the first time it is closed (its closing walk not begun yet). */
static uint64_t until_window_ends(pd_notifier *nf, const pd_model *m, uint64_t t) {
    for (; pd_notifier_floors_open(nf, t); t += 100) pd_notifier_heal_step(nf, m, t);
    return t;
}

/* Every u<i> of heal_world was announced at least once since heal_count
 * was zeroed. */
static void expect_each_once_at_least(void) {
    for (int i = 0; i < HEAL_USERS; i++)
        cr_assert_geq(heal_count[i], 1, "u%d never announced", i);
}

/* Every u<i> of heal_world was announced once since heal_count was zeroed. */
static void expect_each_once(const char *when) {
    for (int i = 0; i < HEAL_USERS; i++)
        cr_assert_eq(heal_count[i], 1, "u%d announced %d times %s", i, heal_count[i], when);
}

Test(notify, heal_walks_the_model_in_slices) {
    int calls = 0;
    wiring w;
    pd_model *m = heal_world(count_publish, &calls, &w);
    pd_notifier *nf = w.nf;
    memset(heal_count, 0, sizeof heal_count);
    calls = 0;
    pd_notifier_heal(nf, m, 5000, 9000);
    cr_assert(pd_notifier_healing(nf), "a heal of %d users done in one turn", HEAL_USERS);
    cr_expect_gt(calls, 0, "the first slice comes at once");
    int steps = 0, most = calls;
    while (pd_notifier_healing(nf)) {
        int before = calls;
        pd_notifier_heal_step(nf, m, 9000 + (uint64_t)steps);
        if (calls - before > most) most = calls - before;
        cr_assert_lt(++steps, HEAL_USERS, "the heal never ends");
    }
    cr_expect_gt(steps, 4, "only %d slices", steps);
    cr_expect_leq(most, 8 * PD_HEAL_BUCKETS, "a slice announced %d users", most);
    expect_each_once("by the heal");
    /* Pausing (a stall) stops a heal under way; the next start makes it
     * whole, from the first slice. */
    pd_notifier_heal(nf, m, 5000, 9500);
    cr_assert(pd_notifier_healing(nf));
    pd_notifier_pause(nf);
    cr_expect_not(pd_notifier_healing(nf));
    calls = 0;
    pd_notifier_heal_step(nf, m, 9600);
    cr_expect_eq(calls, 0);
    memset(heal_count, 0, sizeof heal_count);
    pd_notifier_start(nf, m, 9700, 9700); /* its own window holds no change */
    cr_expect(pd_notifier_healing(nf), "the held heal runs");
    walk_to_end(nf, m, 9800);
    expect_each_once("after the start");
    pd_model_free(m);
    pd_notifier_free(nf);
}

/* A heal asked while paused (due while a stalled node catches up) is made
 * by the next start, which its own window would not cover. */
Test(notify, a_heal_asked_while_paused_is_made_at_the_start) {
    int calls = 0;
    wiring w;
    pd_model *m = heal_world(count_publish, &calls, &w);
    pd_notifier *nf = w.nf;
    memset(heal_count, 0, sizeof heal_count);
    calls = 0;
    pd_notifier_pause(nf);
    pd_notifier_heal(nf, m, 5000, 9000);
    cr_expect_not(pd_notifier_healing(nf));
    cr_expect_eq(calls, 0, "nothing while paused");
    pd_notifier_start(nf, m, 20000, 20000);
    walk_to_end(nf, m, 20100);
    expect_each_once("after the start");
    /* Made once: the next start, after another pause, has nothing held. */
    pd_notifier_pause(nf);
    calls = 0;
    pd_notifier_start(nf, m, 30000, 30000);
    cr_expect_not(pd_notifier_healing(nf));
    cr_expect_eq(calls, 0);
    pd_model_free(m);
    pd_notifier_free(nf);
}

/* pd_notifier_rejoin, with a peer back (b) that now announces about half
 * of our users: without prev_too only ours are repeated; with it, b's too,
 * as we said them: a change of b's users after the rejoin began (it walks
 * in slices) was not ours to say, and is not repeated. */
static pd_public rejoin_last[HEAL_USERS];

static void rejoin_publish(void *ud, const pd_view *v) {
    count_publish(ud, v);
    rejoin_last[user_index(v)] = v->status;
}

static void disconnect_user(pd_model *m, wiring *w, int i, uint64_t now) {
    char conn[32];
    snprintf(conn, sizeof conn, "c%d", i);
    pd_event ev = {.type = PD_EV_DISCONNECT, .server = PD_STR_LIT("s1"), .conn = pd_str_c(conn)};
    pd_apply_result res;
    pd_err err;
    w->now = now;
    cr_assert_eq(pd_model_apply(m, &ev, now, &res, &err), PD_OK, "%s", err.msg);
}

Test(notify, rejoin_repeats_what_we_said_of_the_users_a_peer_back_announces) {
    int calls = 0;
    wiring w;
    pd_model *m = heal_world(rejoin_publish, &calls, &w);
    pd_notifier *nf = w.nf;
    cr_assert_eq(pd_notifier_add_peer(nf, PD_STR_LIT("b")), PD_OK);
    pd_notifier_set_peer(nf, PD_STR_LIT("b"), true);
    bool ours[HEAL_USERS];
    int nours = 0;
    for (int i = 0; i < HEAL_USERS; i++) {
        char user[32];
        snprintf(user, sizeof user, "u%d", i);
        ours[i] = pd_notifier_is_announcer(nf, pd_str_c(user));
        nours += ours[i];
    }
    cr_assert(nours > HEAL_USERS / 4 && nours < 3 * HEAL_USERS / 4, "%d of ours", nours);
    /* Without prev_too: ours only. */
    memset(heal_count, 0, sizeof heal_count);
    pd_notifier_rejoin(nf, m, 500, false, 5000);
    for (int k = 0; pd_notifier_healing(nf); k++) {
        cr_assert_lt(k, HEAL_USERS, "the walk never ends");
        pd_notifier_heal_step(nf, m, 5000);
    }
    for (int i = 0; i < HEAL_USERS; i++)
        cr_assert_eq(heal_count[i], ours[i] ? 1 : 0, "u%d (ours: %d) repeated %d times", i,
                     ours[i], heal_count[i]);
    /* With it: b's too, but not b's users that left after the walk began. */
    memset(heal_count, 0, sizeof heal_count);
    memset(rejoin_last, 0, sizeof rejoin_last);
    pd_notifier_rejoin(nf, m, 500, true, 6000);
    cr_assert(pd_notifier_healing(nf), "a walk of %d users in one slice", HEAL_USERS);
    for (int i = 0; i < HEAL_USERS; i++)
        if (!ours[i] && heal_count[i] == 0) disconnect_user(m, &w, i, 6001);
    pd_model_tick(m, 6600); /* the offline delay ends: offline in our view */
    for (int k = 0; pd_notifier_healing(nf); k++) {
        cr_assert_lt(k, HEAL_USERS, "the walk never ends");
        pd_notifier_heal_step(nf, m, 6600);
    }
    int left = 0;
    for (int i = 0; i < HEAL_USERS; i++) {
        char user[32];
        snprintf(user, sizeof user, "u%d", i);
        pd_view v;
        pd_model_view(m, pd_str_c(user), (pd_str){NULL, 0}, &v);
        if (v.status == PD_PUB_OFFLINE) {
            left++;
            cr_assert_eq(heal_count[i], 0, "u%d, b's, left after the walk began: repeated", i);
        } else {
            cr_assert_eq(heal_count[i], 1, "u%d (ours: %d) repeated %d times", i, ours[i],
                         heal_count[i]);
            cr_assert_eq(rejoin_last[i], PD_PUB_ONLINE);
        }
    }
    cr_expect_gt(left, 0, "no user of b's left during the walk");
    pd_model_free(m);
    pd_notifier_free(nf);
}

/* The replica drives its notifier: changes reach io.publish through the
 * gate, pd_repl_next_due includes the held view's deadline and
 * pd_repl_tick sends it; nothing before the replica is ready. */
static void repl_publish(void *ud, const pd_view *v) { on_publish(ud, v); }

static void repl_event(pd_repl *r, pd_event ev, uint64_t now) {
    pd_apply_result res;
    pd_err err;
    cr_assert_eq(pd_repl_local(r, &ev, now, &res, &err), PD_OK, "%s", err.msg);
}

Test(notify, the_replica_drives_the_gate) {
    int calls = 0;
    npub = 0;
    pd_repl_cfg cfg = {.sync_interval_ms = 100, .node_timeout_ms = 300, .inc = 1,
                       .max_msg_bytes = 4096, .notify_min_interval_ms = 100};
    pd_repl_io io = {.publish = repl_publish, .ud = &calls};
    pd_repl *r = pd_repl_new(&cfg, &MCFG, PD_STR_LIT("n1"), &io, 1000);
    cr_assert_not_null(r);
    pd_repl_tick(r, 1000); /* the first heartbeat: the warm-up counts from it */
    pd_event on = {.type = PD_EV_CONNECT, .server = PD_STR_LIT("s1"), .conn = PD_STR_LIT("c1"),
                   .user = PD_STR_LIT("u1"), .device = PD_STR_LIT("web")};
    pd_event away = {.type = PD_EV_STATUS, .user = PD_STR_LIT("u1"), .status = PD_CHOSEN_AWAY};
    pd_event busy = {.type = PD_EV_STATUS, .user = PD_STR_LIT("u1"), .status = PD_CHOSEN_BUSY};
    repl_event(r, on, 1010);
    cr_expect_eq(calls, 0, "published while warming up");
    pd_repl_tick(r, 1200); /* two sync intervals: ready, the warm-up announced */
    cr_assert(pd_repl_ready(r));
    cr_expect_eq(calls, 1);
    repl_event(r, away, 1210);
    cr_expect_eq(calls, 1, "held: within the interval of the warm-up's notification");
    cr_expect_leq(pd_repl_next_due(r), 1300, "the held view's deadline");
    pd_repl_tick(r, 1300);
    cr_expect_eq(calls, 2, "sent at the interval's end");
    repl_event(r, busy, 1310);
    cr_expect_eq(calls, 2, "held again");
    pd_notifier_flush(pd_repl_notifier(r));
    cr_expect_eq(calls, 3, "flushed for a stop");
    pd_repl_stats st;
    pd_repl_stats_get(r, &st);
    cr_expect_eq(st.notifications, 3, "announced");
    cr_expect_eq(count_for("u1"), 3);
    pd_repl_free(r);
}

/* After the start of a life that got devices of the life before back (a
 * snapshot, the stream), a write that changes no status (a second
 * device) is announced, at its higher ver,
 * within the window in which floors are (the node may have said a
 * restored device's user below an `offline` the others announced while
 * it was down: chaos seed 9); after a fresh start, or after the window,
 * it is silent, as in steady state. */
static int second_device_said(bool restored, uint64_t at) {
    int calls = 0;
    npub = 0;
    pd_repl_cfg cfg = {.sync_interval_ms = 100, .node_timeout_ms = 300, .inc = 1,
                       .max_msg_bytes = 4096};
    pd_repl_io io = {.publish = repl_publish, .ud = &calls};
    pd_repl *r = pd_repl_new(&cfg, &MCFG, PD_STR_LIT("n1"), &io, 1000);
    cr_assert_not_null(r);
    if (restored) pd_notifier_devices_back(pd_repl_notifier(r)); /* as pd_repl_restore_done */
    pd_repl_tick(r, 1000);
    pd_event ev = {.type = PD_EV_CONNECT, .server = PD_STR_LIT("s1"), .conn = PD_STR_LIT("c1"),
                   .user = PD_STR_LIT("u1"), .device = PD_STR_LIT("web")};
    repl_event(r, ev, 1010);
    pd_repl_tick(r, 1200);
    cr_assert(pd_repl_ready(r));
    pd_notifier_flush(pd_repl_notifier(r));
    cr_assert_eq(calls, 1, "the warm-up's change");
    pd_view before;
    pd_model_view(pd_repl_model(r), PD_STR_LIT("u1"), (pd_str){NULL, 0}, &before);
    for (uint64_t t = 1300; t < at; t += 100) pd_repl_tick(r, t);
    /* asked in any window (the closing walk), said only after a restart */
    cr_assert_eq(pd_notifier_wants_same(pd_repl_notifier(r), at), at < 2000);
    int base = calls; /* the window's closing walk may have said u1 again */
    ev.conn = PD_STR_LIT("c2");
    ev.device = PD_STR_LIT("ios");
    repl_event(r, ev, at);
    pd_notifier_flush(pd_repl_notifier(r));
    pd_view after;
    pd_model_view(pd_repl_model(r), PD_STR_LIT("u1"), (pd_str){NULL, 0}, &after);
    cr_expect_eq(after.status, before.status);
    cr_expect_gt(after.ver, before.ver, "at a higher ver");
    pd_repl_free(r);
    return calls - base;
}

Test(notify, a_write_that_changes_no_status_is_said_only_after_a_restart) {
    cr_expect_eq(second_device_said(true, 1300), 1, "restored, within the window: said");
    cr_expect_eq(second_device_said(true, 3000), 0, "restored, after the window: silent");
    cr_expect_eq(second_device_said(false, 1300), 0, "a fresh start: silent");
}

/* A user written in a window is said again when it ends though its ver
 * shows an older time (chaos seed 16, u360: the end of an offline delay
 * takes last_seen + the delay, and the node announcing the user learned
 * of a departure on a side that had been cut off only after that). */
Test(notify, the_end_of_a_window_says_again_a_user_written_in_it_whatever_its_ver) {
    int calls = 0;
    wiring w;
    pd_model *m = heal_world(count_publish, &calls, &w); /* u<i> connected at 1000 */
    pd_notifier *nf = w.nf;
    uint64_t start = restart_long_after(nf, m);
    cr_assert(pd_notifier_wants_same(nf, start + 10), "the model is not asked for writes");
    pd_view v;
    cr_assert(pd_model_view(m, PD_STR_LIT("u2"), (pd_str){NULL, 0}, &v));
    cr_assert_lt((v.ver >> 16) + 2 * NCFG.node_timeout_ms, start, "a ver of long before");
    pd_notifier_same(nf, &v, start + 10); /* written now, its ver unchanged */
    memset(heal_count, 0, sizeof heal_count);
    calls = 0;
    uint64_t t = until_window_ends(nf, m, start + 100);
    cr_expect_not(pd_notifier_wants_same(nf, t), "asked for writes out of a window");
    cr_expect_eq(calls, 0, "nothing before the window ends");
    pd_notifier_heal_step(nf, m, t);
    walk_to_end(nf, m, t);
    cr_expect_eq(calls, 1, "u2 alone: %d", calls);
    cr_expect_eq(heal_count[2], 1);
    /* The next window starts afresh. */
    pd_notifier_pause(nf);
    pd_notifier_start(nf, m, t + 10, t + 10);
    calls = 0;
    uint64_t t2 = until_window_ends(nf, m, t + 20);
    pd_notifier_heal_step(nf, m, t2);
    walk_to_end(nf, m, t2);
    cr_expect_eq(calls, 0, "u2 said again without a write: %d", calls);
    pd_model_free(m);
    pd_notifier_free(nf);
}

/* A window that opens while the closing walk of the one before goes on (a
 * take-over) keeps the writes made in it: the walk, done after the new
 * window ended, leaves them to the new window's own closing walk (users
 * its cursor had passed would never be said again otherwise). */
Test(notify, a_window_opened_during_a_closing_walk_keeps_its_writes) {
    int calls = 0;
    wiring w;
    pd_model *m = heal_world(count_publish, &calls, &w); /* u<i> connected at 1000 */
    pd_notifier *nf = w.nf;
    uint64_t start = restart_long_after(nf, m);
    uint64_t t = until_window_ends(nf, m, start + 100);
    pd_notifier_heal_step(nf, m, t); /* the closing walk: its first slice */
    cr_assert(pd_notifier_healing(nf), "a closing walk of %d users in one slice", HEAL_USERS);
    pd_notifier_take_over(nf, m, t); /* a new window */
    for (int i = 0; i < HEAL_USERS; i++) { /* every user written in it */
        char user[16];
        pd_view v;
        snprintf(user, sizeof user, "u%d", i);
        cr_assert(pd_model_view(m, pd_str_c(user), (pd_str){NULL, 0}, &v));
        pd_notifier_same(nf, &v, t + 1);
    }
    memset(heal_count, 0, sizeof heal_count);
    uint64_t late = t + 2 * NCFG.node_timeout_ms + 2 * NCFG.sync_interval_ms + 100;
    walk_to_end(nf, m, late); /* the first walk, done after the new window ended */
    pd_notifier_heal_step(nf, m, late); /* the new window's closing walk */
    walk_to_end(nf, m, late);
    expect_each_once_at_least();
    pd_model_free(m);
    pd_notifier_free(nf);
}

/* In a window, a ver floor is said as the user shows under it here, but
 * not `offline`: floors are written for returns, so the node has not got
 * the devices yet (it_persist under TSan: a node that missed a device's
 * delta learned its user from the floor alone and said it `offline`). */
Test(notify, a_floor_is_said_in_a_window_but_not_offline) {
    int calls = 0;
    npub = 0;
    pd_notifier *nf = notifier(&NCFG, "a", &calls);
    pd_model *m = pd_model_new(&MCFG, PD_STR_LIT("a"), NULL, NULL);
    cr_assert_not_null(m);
    pd_notifier_start(nf, m, 1000, 1000);
    cr_assert(pd_notifier_floors_open(nf, 1100));
    pd_view on = view("u1", PD_PUB_ONLINE), off = view("u2", PD_PUB_OFFLINE);
    pd_notifier_floor(nf, &on, 1100);
    pd_notifier_floor(nf, &off, 1100);
    pd_notifier_tick(nf, 1100);
    cr_expect_eq(count_for("u1"), 1, "the online floor");
    cr_expect_eq(count_for("u2"), 0, "the offline floor");
    pd_model_free(m);
    pd_notifier_free(nf);
}

/* A change of a user this node said in the window after a start that got
 * devices back is said though another node announces the user now (chaos
 * seed 5, u24: a restored device the others had dropped was said `away`
 * at the ver of their `offline`; its removal by the resync changed
 * nothing at the announcer). Returns how often the user's change was said:
 * restored, at t; said (or not) by this node first. */
static int change_after_take_over_said(bool restored, bool said_first, uint64_t t) {
    int calls = 0;
    npub = 0;
    pd_notifier *nf = notifier(&NCFG, "a", &calls);
    pd_model *m = pd_model_new(&MCFG, PD_STR_LIT("a"), NULL, NULL);
    cr_assert_not_null(m);
    cr_assert_eq(pd_notifier_add_peer(nf, PD_STR_LIT("b")), PD_OK);
    /* a user b announces once b is ready */
    char user[16];
    pd_notifier_set_peer(nf, PD_STR_LIT("b"), true);
    for (int k = 0;; k++) {
        cr_assert_lt(k, 1000);
        snprintf(user, sizeof user, "u%d", k);
        if (!pd_notifier_is_announcer(nf, pd_str_c(user))) break;
    }
    pd_notifier_set_peer(nf, PD_STR_LIT("b"), false);
    if (restored) pd_notifier_devices_back(nf);
    pd_notifier_start(nf, m, 1000, 1000);
    pd_view v = view(user, PD_PUB_AWAY);
    if (said_first) pd_notifier_change(nf, &v, 1010); /* ours then: said */
    cr_assert_eq(count_for(user), said_first ? 1 : 0);
    pd_notifier_set_peer(nf, PD_STR_LIT("b"), true); /* b ready: its user */
    v = view(user, PD_PUB_OFFLINE);
    v.ts = 2;
    pd_notifier_change(nf, &v, t);
    pd_notifier_tick(nf, t);
    int n = count_for(user) - (said_first ? 1 : 0);
    pd_model_free(m);
    pd_notifier_free(nf);
    return n;
}

Test(notify, a_user_said_after_a_restart_is_said_again_when_it_changes_elsewhere) {
    cr_expect_eq(change_after_take_over_said(true, true, 1500), 1,
                 "restored, said, changed within the window: said");
    cr_expect_eq(change_after_take_over_said(true, false, 1500), 0, "never said here: silent");
    cr_expect_eq(change_after_take_over_said(true, true, 1000 + 2 * 1000 + 2 * 100), 0,
                 "after the window: silent");
    cr_expect_eq(change_after_take_over_said(false, true, 1500), 0, "a fresh start: silent");
}

/* When the window that a start (a heal, a take-over) opens ends, the
 * users this node announces whose ver shows a write in it, or shortly
 * before, are said again, once, as of now; older changes are not, and
 * nothing more without a new window (chaos seed 14: a node back as a new
 * life said a user online below an `offline` another node announced
 * meanwhile, and a later write that changed no status raised its ver
 * unsaid). */
Test(notify, the_end_of_a_window_says_again_what_changed_in_it) {
    int calls = 0;
    wiring w;
    pd_model *m = heal_world(count_publish, &calls, &w); /* u<i> connected at 1000 */
    pd_notifier *nf = w.nf;
    uint64_t start = restart_long_after(nf, m); /* connected long before */
    for (int i = 0; i < 5; i++) { /* a second device: the same state, a higher ver */
        char conn[32], user[32];
        snprintf(conn, sizeof conn, "d%d", i);
        snprintf(user, sizeof user, "u%d", i);
        pd_event ev = {.type = PD_EV_CONNECT, .server = PD_STR_LIT("s1"), .conn = pd_str_c(conn),
                       .user = pd_str_c(user), .device = PD_STR_LIT("ios")};
        pd_apply_result res;
        pd_err err;
        w.now = start + 10;
        cr_assert_eq(pd_model_apply(m, &ev, start + 10, &res, &err), PD_OK, "%s", err.msg);
    }
    memset(heal_count, 0, sizeof heal_count);
    calls = 0;
    uint64_t t = until_window_ends(nf, m, start + 100);
    cr_expect_eq(calls, 0, "nothing before the window ends");
    pd_notifier_heal_step(nf, m, t);
    walk_to_end(nf, m, t);
    cr_expect_eq(calls, 5, "the five users written in the window, said: %d", calls);
    for (int i = 0; i < 5; i++) cr_expect_eq(heal_count[i], 1, "u%d", i);
    pd_notify_stats st;
    pd_notifier_stats_get(nf, &st);
    cr_expect_eq(st.closes, 2u, "heal_world's start, then this one");
    calls = 0;
    for (int k = 0; k < 50; k++) pd_notifier_heal_step(nf, m, t + 100 * (uint64_t)k);
    cr_expect_eq(calls, 0, "once");
    pd_model_free(m);
    pd_notifier_free(nf);
}

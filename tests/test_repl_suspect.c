/* test_repl_suspect.c - suspicion before a peer is declared down
 * (PRESENCE_SUSPICION_MS, docs/failure-modes.md "Defined behaviour during
 * a split"), over the simulated network of repl_sim.h: a peer silent past
 * the node timeout is suspected and keeps its devices; heard again in time
 * it is cleared with no notification at all; silent past the suspicion
 * too, it is down as before. And a peer that took us for down while we
 * never took it so (a one-way break) makes us announce our users again. */
#include <criterion/criterion.h>
#include "repl_world.h"

#define SUSPICION_MS 2000

/* Three replicas with a suspicion period; u0 on n2, u2 on n0; all quiet. */
static void setup(world *w, uint64_t seed) {
    world_init(w, seed, &MCFG_QUIET, false);
    sim *s = &w->s;
    s->cfg.suspicion_ms = SUSPICION_MS;
    for (int i = 0; i < NREP; i++) {
        pd_repl_free(s->r[i]);
        s->r[i] = sim_new_replica(s, i);
    }
    sim_warm_up(s);
    connect_at(w, 2, "c0", 0);
    connect_at(w, 0, "c1", 2);
    sim_flush_all(s);
    sim_deliver_all(s);
    sim_round(s, s->cfg.sync_interval_ms);
    sim_round(s, s->cfg.sync_interval_ms);
}

static uint64_t owned_by(const world *w, int i, int owner) {
    return pd_model_owner_devices(pd_repl_model(w->s.r[i]), pd_str_c(NODE[owner]));
}

Test(repl_suspect, a_peer_heard_again_in_time_is_cleared_with_no_notification) {
    world w;
    setup(&w, 21);
    sim *s = &w.s;
    size_t notes0 = s->nnotes;
    uint64_t last = s->now;
    s->cut[2] = s->frozen[2] = true;
    /* Past the node timeout, and within the suspicion. */
    while (s->now < last + s->cfg.node_timeout_ms + SUSPICION_MS - 200) sim_round(s, 100);
    for (int i = 0; i < 2; i++) {
        pd_repl_stats st;
        pd_repl_stats_get(s->r[i], &st);
        cr_expect_eq(st.suspicions, 1u, "%s suspects n2", NODE[i]);
        cr_expect_eq(st.nodes_down, 0u, "%s: n2 is not down yet", NODE[i]);
        cr_expect_eq(owned_by(&w, i, 2), 1u, "%s keeps n2's device meanwhile", NODE[i]);
    }
    s->cut[2] = s->frozen[2] = false;
    sim_round(s, 0); /* n2 runs again: its heartbeat is due at once */
    sim_round(s, s->cfg.sync_interval_ms);
    for (int i = 0; i < 2; i++) {
        pd_repl_stats st;
        pd_repl_stats_get(s->r[i], &st);
        cr_expect_eq(st.suspicions_cleared, 1u, "%s cleared its suspicion", NODE[i]);
        cr_expect_eq(st.nodes_down, 0u);
    }
    /* Long after: still nothing announced about anyone. */
    for (int k = 0; k < 6; k++) sim_round(s, s->cfg.sync_interval_ms);
    cr_expect_eq(s->nnotes, notes0, "a suspicion cleared in time announces nothing");
    world_free(&w);
}

Test(repl_suspect, a_peer_silent_past_the_suspicion_is_down) {
    world w;
    setup(&w, 22);
    sim *s = &w.s;
    uint64_t last = s->now;
    s->cut[2] = s->frozen[2] = true;
    while (s->now + 100 <= last + s->cfg.node_timeout_ms + SUSPICION_MS) {
        sim_round(s, 100);
        cr_assert_eq(owned_by(&w, 0, 2), 1u, "n2 down before the suspicion ended (+%llu ms)",
                     (unsigned long long)(s->now - last));
    }
    s->now = last + s->cfg.node_timeout_ms + SUSPICION_MS + 1;
    sim_tick_all(s);
    sim_deliver_all(s);
    for (int i = 0; i < 2; i++) {
        pd_repl_stats st;
        pd_repl_stats_get(s->r[i], &st);
        cr_expect_eq(st.nodes_down, 1u, "%s declared n2 down", NODE[i]);
        cr_expect_eq(owned_by(&w, i, 2), 0u, "%s dropped n2's device", NODE[i]);
    }
    world_free(&w);
}

/* n0 and n1 stop hearing n2 (n2 still hears them): they declare n2 down
 * and announce its users offline. n2 never took them for down; when they
 * hear it again, their heartbeats show fewer of n2's deltas than before,
 * so n2 announces its users again too (the users it is the announcer of
 * would otherwise keep `offline` as their last word). */
Test(repl_suspect, a_peer_that_dropped_our_devices_makes_us_announce_again) {
    world w;
    setup(&w, 23);
    sim *s = &w.s;
    /* A user whose announcer, all three alive, is n2, with a device on n2. */
    char user[16] = "";
    for (int k = 0; k < 100 && !user[0]; k++) {
        char cand[16];
        snprintf(cand, sizeof cand, "v%d", k);
        if (pd_notifier_is_announcer(pd_repl_notifier(s->r[2]), pd_str_c(cand)))
            memcpy(user, cand, sizeof cand);
    }
    cr_assert(user[0], "no user announced by n2");
    pd_event ev = {.type = PD_EV_CONNECT, .server = pd_str_c("s2"), .conn = pd_str_c("cv"),
                   .user = pd_str_c(user), .device = pd_str_c("web")};
    world_event(&w, 2, &ev);
    sim_flush_all(s);
    sim_deliver_all(s);
    sim_round(s, s->cfg.sync_interval_ms);
    uint64_t last = s->now;
    size_t notes0 = s->nnotes;
    while (s->now < last + s->cfg.node_timeout_ms + SUSPICION_MS + MCFG_QUIET.offline_delay_ms +
                        2 * s->cfg.sync_interval_ms) {
        s->now += 100;
        sim_tick_all(s);
        sim_drop_matching(s, 2, -1, -1); /* nothing from n2 reaches anyone */
        sim_deliver_all(s);
    }
    pd_repl_stats st;
    pd_repl_stats_get(s->r[0], &st);
    cr_assert_eq(st.nodes_down, 1u, "n0 took n2 for down");
    pd_repl_stats_get(s->r[2], &st);
    cr_assert_eq(st.nodes_down, 0u, "n2 never took the others for down");
    for (int k = 0; k < 8; k++) sim_round(s, s->cfg.sync_interval_ms);
    const heard *lastn = NULL;
    size_t offline = 0;
    for (size_t k = notes0; k < s->nnotes; k++) {
        if (strcmp(s->notes[k].user, user) != 0) continue;
        lastn = &s->notes[k];
        offline += lastn->status == PD_PUB_OFFLINE;
    }
    cr_assert_not_null(lastn, "%s was not announced during the break", user);
    cr_expect_gt(offline, 0u, "%s was announced offline during the break", user);
    cr_expect_eq(lastn->status, PD_PUB_ONLINE, "the last word on %s is online", user);
    cr_expect_eq(lastn->by, 2, "by n2, its announcer, which never took anyone for down");
    cr_expect_eq(owned_by(&w, 0, 2), 2u, "n0 has n2's devices again");
    world_free(&w);
}

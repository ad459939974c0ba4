/* test_repl_fresh.c - how fresh a replica's view is (pd_repl_freshness,
 * docs/protocol.md section 4, "Freshness"), over the simulated network of
 * repl_sim.h: as_of follows the last heartbeat that found this node caught
 * up with each live peer and stops at a silent one; a peer silent for more
 * than two sync intervals is listed stale, and so is every user with a
 * device on it; a heartbeat clears both; a peer behind whose deltas are
 * missing holds as_of back until the transfer is in. */
#include <criterion/criterion.h>
#include "repl_world.h"
#include "model/query_answer.h"

typedef struct {
    uint64_t as_of;
    pd_str stale[PD_VC_MAX];
    uint32_t nstale;
} fresh;

static fresh fresh_of(const world *w, int i) {
    fresh f;
    f.nstale = pd_repl_freshness(w->s.r[i], w->s.now, f.stale, PD_VC_MAX, &f.as_of);
    return f;
}

static bool user_stale(const world *w, int i, const char *user) {
    fresh f = fresh_of(w, i);
    pd_freshness fr = {f.as_of, f.stale, f.nstale};
    return pd_query_user_stale(pd_repl_model(w->s.r[i]), pd_str_c(user), &fr);
}

Test(repl_fresh, as_of_stops_at_a_silent_peer_and_stale_marks_its_users) {
    world w;
    world_init(&w, 7, &MCFG_QUIET, false);
    sim *s = &w.s;
    sim_warm_up(s);
    connect_at(&w, 2, "c0", 0); /* u0 on n2 */
    connect_at(&w, 0, "c1", 2); /* u2 on n0 */
    sim_flush_all(s);
    sim_deliver_all(s);
    sim_round(s, s->cfg.sync_interval_ms);
    uint64_t last_hb = s->now;
    fresh f = fresh_of(&w, 0);
    cr_expect_eq(f.as_of, last_hb, "caught up with both peers as of their last heartbeats");
    cr_expect_eq(f.nstale, 0u);
    cr_expect(!user_stale(&w, 0, "u0") && !user_stale(&w, 0, "u2"));

    s->cut[2] = s->frozen[2] = true; /* n2 stops */
    while (s->now + 100 <= last_hb + 2 * s->cfg.sync_interval_ms) {
        sim_round(s, 100);
        f = fresh_of(&w, 0);
        cr_assert_eq(f.as_of, last_hb, "as_of stays at n2's last heartbeat (+%llu ms)",
                     (unsigned long long)(s->now - last_hb));
        cr_assert_eq(f.nstale, 0u, "not stale within two sync intervals");
    }
    sim_round(s, 200);
    f = fresh_of(&w, 0);
    cr_expect_eq(f.as_of, last_hb);
    cr_assert_eq(f.nstale, 1u, "n2 is stale");
    cr_expect(pd_str_eqc(f.stale[0], "n2"));
    cr_expect(user_stale(&w, 0, "u0"), "u0's device is on n2");
    cr_expect(!user_stale(&w, 0, "u2"), "u2's is not");
    cr_expect(!user_stale(&w, 0, "nobody"));
    f = fresh_of(&w, 2);
    cr_expect_eq(f.as_of, last_hb, "the stopped node's own view is as old");

    s->cut[2] = s->frozen[2] = false; /* n2 runs again, before the node timeout */
    sim_round(s, s->cfg.sync_interval_ms);
    sim_round(s, s->cfg.sync_interval_ms);
    f = fresh_of(&w, 0);
    cr_expect_gt(f.as_of, last_hb, "as_of moves again");
    cr_expect_eq(f.nstale, 0u);
    cr_expect(!user_stale(&w, 0, "u0"));
    world_free(&w);
}

Test(repl_fresh, a_heartbeat_showing_more_holds_as_of_until_the_deltas_are_in) {
    world w;
    world_init(&w, 8, &MCFG_QUIET, false);
    sim *s = &w.s;
    sim_warm_up(s);
    sim_round(s, s->cfg.sync_interval_ms);
    uint64_t before = s->now;
    /* n2 sends a delta, then a heartbeat; n0 gets the heartbeat only */
    connect_at(&w, 2, "c0", 0);
    sim_flush_all(s);
    sim_drop_matching(s, 2, 0, M_DELTA);
    s->now += s->cfg.sync_interval_ms;
    pd_repl_tick(s->r[2], s->now);
    pd_repl_tick(s->r[1], s->now);
    sim_deliver_matching(s, 2, 0, M_HB, 8);
    fresh f = fresh_of(&w, 0);
    cr_expect_leq(f.as_of, before, "n2's heartbeat showed a delta n0 lacks");
    /* the claim's grace, the transfer: caught up as of that heartbeat */
    for (int i = 0; i < 4; i++) sim_round(s, s->cfg.sync_interval_ms / 2);
    f = fresh_of(&w, 0);
    cr_expect_gt(f.as_of, before, "caught up again");
    cr_expect_eq(pd_model_owner_devices(pd_repl_model(s->r[0]), pd_str_c("n2")), 1u);
    world_free(&w);
}

Test(repl_fresh, alone_as_of_is_now) {
    world w;
    world_init(&w, 9, &MCFG_QUIET, false);
    fresh f = fresh_of(&w, 0);
    cr_expect_eq(f.as_of, w.s.now, "no peer last_hb yet: nothing to wait for");
    cr_expect_eq(f.nstale, 0u);
    world_free(&w);
}

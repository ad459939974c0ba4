/* test_repl_restart.c - the property test of test_repl.c with node
 * restarts (issue 13: every node gives the same answers once the cluster is
 * quiet, and the devices are what the socket servers hold).
 *
 * Each case (seeded; the run prints PD_SEED, and PD_CASE=<case seed>
 * PD_TRACE=1 test_repl_restart replays one, whatever test name the failure
 * message suggests) runs test_repl's random operations on 3 replicas over
 * the lossy simulated network, with transfers served in slices in half the
 * cases, suspicion in half, the user retention in a quarter, and now and
 * then a restart: the node is killed (cut off, not ticked) while the others
 * go on, stays down up to twice the node timeout, then restarts from its
 * last periodic snapshot (taken every simulated second, so often from
 * before a server moved away from it) and replays the stream while
 * heartbeats and transfers come in, its live deltas held until the replay
 * ends (in a quarter of the cases the stream cannot be replayed, as when
 * JetStream is down: what it wrote after its snapshot is lost with its
 * old life, but for what the peers hold); its servers resync after that. Then repair, and every user's views
 * and devices must be the same on the three replicas and equal the truth.
 *
 * It found (1 case in about 10,000) a node restored from a snapshot older
 * than a server's move re-announcing that server's old devices for good:
 * the server never speaks to it again, and a server restored from a
 * snapshot had no timeout (pd_model_restore_servers). Restarts without
 * the stream found a lost register write passed on to no one and ghost
 * devices of a snapshot taken during a transfer (each in PD_SEED 1..10,
 * 30,000 cases, at least once; see the regression tests at the end). */
#include "base/alloc.h"
#include "repl_world.h"
#include <criterion/criterion.h>
#include <inttypes.h>

static void server_heartbeats_except(world *w, int i) {
    for (int k = 0; k < NSERV; k++) {
        if (w->srv[k].at == i) continue;
        pd_event ev = {.type = PD_EV_HEARTBEAT, .server = pd_str_c(SERVER[k])};
        world_event(w, w->srv[k].at, &ev);
    }
}

static void repair(world *w) {
    sim *s = &w->s;
    sim_deliver_all(s);
    for (int round = 0;; round++) {
        REQUIRE(round < 60, "case seed %llu: no quiet after 60 rounds",
                (unsigned long long)w->seed);
        s->now += s->cfg.sync_interval_ms;
        server_heartbeats(w);
        sim_tick_all(s);
        size_t other = sim_deliver_all(s);
        if (round >= 9 && other == 0) break;
    }
}

/* Node i is killed, stays down for a while (its servers wait), restarts from
 * its last snapshot, and its servers resync once the restore is done.
 * no_stream: the stream cannot be replayed (JetStream down: "peers will
 * fill in"), so what it wrote after its snapshot is lost with its old life
 * but for what the peers hold and pass on. */
static void op_restart(world *w, rng *r, snapbuf *snaps, bool no_stream) {
    sim *s = &w->s;
    int i = (int)rng_below(r, NREP);
    uint64_t down = 200 + rng_below(r, 2 * s->cfg.node_timeout_ms);
    if (s->trace) fprintf(stderr, "t=%llu step %d: %s killed for %llu ms\n",
                          (unsigned long long)s->now, w->step, NODE[i], (unsigned long long)down);
    s->cut[i] = true;
    s->frozen[i] = true;
    uint64_t until = s->now + down;
    while (s->now < until) {
        s->now += 250;
        server_heartbeats_except(w, i);
        sim_tick_all(s);
        sim_deliver_some(s, s->nq, true);
    }
    s->cut[i] = false;
    s->frozen[i] = false;
    pd_snap_info info;
    pd_err err = {PD_OK, ""};
    sim_restart(s, i);
    pd_repl_restore_begin(s->r[i]);
    if (snaps[i].buf)
        REQUIRE(pd_repl_restore(s->r[i], snaps[i].buf, snaps[i].len, s->now, &info, &err) == PD_OK,
                "%s", err.msg);
    /* The replay runs while heartbeats and transfers come in; live deltas
     * wait for its end (node__persist_hold). */
    size_t nrep = no_stream ? 0 : s->nstream, at = 0;
    message *held = NULL;
    size_t nheld = 0;
    int wait = (int)rng_below(r, 6);
    for (int k = 0; k <= wait; k++) {
        size_t upto = k == wait ? nrep : at + rng_below(r, (uint32_t)(nrep - at + 1));
        for (; at < upto; at++)
            REQUIRE(pd_repl_replay_delta(s->r[i], s->stream[at].buf, s->stream[at].len, s->now,
                                         &err) == PD_OK, "%s", err.msg);
        if (k == wait) break;
        s->now += 100 + rng_below(r, 300);
        server_heartbeats_except(w, i);
        sim_tick_all(s);
        for (size_t n = rng_below(r, (uint32_t)s->nq + 1); n > 0 && s->nq > 0; n--) {
            size_t q = sim_eligible(s, rng_below(&s->rnd, (uint32_t)s->nq));
            if (s->q[q].to == i && s->q[q].kind == M_DELTA) {
                held = realloc(held, (nheld + 1) * sizeof *held);
                held[nheld++] = s->q[q];
                memmove(&s->q[q], &s->q[q + 1], (s->nq - q - 1) * sizeof *s->q);
                s->nq--;
            } else {
                sim_deliver(s, q, true);
            }
        }
    }
    pd_repl_restore_done(s->r[i], s->now);
    for (size_t k = 0; k < nheld; k++) {
        pd_repl_on_delta(s->r[i], held[k].buf, held[k].len, s->now, &err);
        free(held[k].buf);
    }
    free(held);
    for (int k = 0; k < NSERV; k++)
        if (w->srv[k].at == i) send_sync(w, k, i);
}

static uint64_t restarts;
/* What the restarts did with their devices (schemas/cluster.md
 * "Incarnations"), summed over the replicas alive at each case's end. */
static pd_repl_stats carried;

static void run_case(uint64_t seed) {
    world w;
    rng r = {seed};
    snapbuf snaps[NREP] = {{0}};
    pd_model_cfg mcfg = MCFG;
    /* From the seed, not r: the cases stay those found before it. */
    if ((seed >> 7) % 4 == 3) mcfg.user_retention_ms = 100000;
    bool no_stream = (seed >> 11) % 4 == 3;
    world_init(&w, seed, &mcfg, false);
    sim *s = &w.s;
    static const uint32_t drops[] = {0, 5, 15}, dups[] = {0, 10};
    s->drop_delta = drops[rng_below(&r, 3)];
    s->dup_delta = dups[rng_below(&r, 2)];
    s->drop_hb = rng_pct(&r, 50) ? 5 : 0;
    s->drop_sync = rng_pct(&r, 30) ? 3 : 0;
    s->fifo_deltas = rng_pct(&r, 75);
    s->record_stream = true;
    s->sliced = rng_pct(&r, 50);
    if (rng_pct(&r, 50)) s->cfg.suspicion_ms = 1000;
    for (int i = 0; i < NREP; i++) {
        pd_repl_free(s->r[i]);
        s->r[i] = sim_new_replica(s, i);
    }
    sim_warm_up(s);
    server_heartbeats(&w);
    int nops = 15 + (int)rng_below(&r, 30);
    uint64_t next_snap = s->now + 1000;
    for (w.step = 0; w.step < nops; w.step++) {
        s->now += 1 + rng_below(&r, 400);
        if (s->now >= next_snap) {
            for (int i = 0; i < NREP; i++) take_snapshot(s, i, &snaps[i]);
            next_snap = s->now + 1000;
        }
        if (rng_pct(&r, 8)) {
            op_restart(&w, &r, snaps, no_stream);
            restarts++;
        } else do_op(&w, &r, pick_op(&r, rng_pct(&r, 25)));
        server_heartbeats(&w);
        if (w.step + 1 < nops && rng_pct(&r, 40)) continue;
        sim_flush_all(s);
        sim_tick_all(s);
        size_t n = rng_pct(&r, 30) ? s->nq : rng_below(&r, (uint32_t)s->nq + 1);
        sim_deliver_some(s, n, true);
    }
    repair(&w);
    compare_replicas(&w, true);
    for (int i = 0; i < NREP; i++) {
        pd_repl_stats st;
        pd_repl_stats_get(s->r[i], &st);
        carried.restart_kept += st.restart_kept;
        carried.restart_refetched += st.restart_refetched;
        carried.restart_republished += st.restart_republished;
        carried.restart_unrepublished += st.restart_unrepublished;
    }
    for (int i = 0; i < NREP; i++) free(snaps[i].buf);
    world_free(&w);
}

static void run_cases(const char *name, uint64_t first, uint64_t count) {
    size_t live = pd_alloc_live_bytes();
    const char *one = getenv("PD_CASE");
    if (one && *one) {
        if (first == 0) run_case(strtoull(one, NULL, 0));
        return;
    }
    announce_seed(name, count);
    restarts = 0;
    memset(&carried, 0, sizeof carried);
    for (uint64_t k = first; k < first + count; k++) run_case(case_seed("repl-restart", k));
    cr_expect_eq(pd_alloc_live_bytes(), live, "the replicas leaked %zd bytes",
                 (ssize_t)(pd_alloc_live_bytes() - live));
    fprintf(stderr, "%s: %" PRIu64 " restarts: %" PRIu64 " sent their devices again, %" PRIu64
            " not; peers kept a restarted node's devices %" PRIu64 " times, fetched its "
            "partition after its \"restored\" %" PRIu64 " times\n", name, restarts,
            carried.restart_republished, carried.restart_unrepublished, carried.restart_kept,
            carried.restart_refetched);
    cr_expect_gt(restarts, count / 2, "the cases restarted few nodes");
    cr_expect_gt(carried.restart_kept, 0, "no restart kept its devices on the peers");
}

/* 2 x 1500 cases of 15-45 operations each. */
Test(repl_restart, converges_part1, .timeout = 240) { run_cases("repl_restart/part1", 0, 1500); }
Test(repl_restart, converges_part2, .timeout = 240) { run_cases("repl_restart/part2", 1500, 1500); }

/* Regression (the case that found it): s3 moves from n0 to n1, which then
 * sees c1 of u4 disconnect; n0 restarts from a snapshot of before the move
 * and announces s3's old c1 as its new incarnation's. s3 never speaks to
 * n0 again: without a deadline for the restored server, n0 and n2 kept c1
 * for good, n1 (which holds s3) did not. */
Test(repl_restart, server_moved_away_before_the_restart) { run_case(2349358534442133063ULL); }

/* Regression (the cases that found them, restarts without the stream):
 * n2 sets u1's custom status, n1 alone hears it, n2 is killed with it and
 * comes back without it; n1's snapshot, taken after n1 had heard the new
 * n2 (but before it passed that write on), names the new life, and n1 is
 * killed too. Restored, n1 counted that life as one it had passed to: the
 * write stayed on n1 only, for good. */
Test(repl_restart, restored_node_passes_on_to_the_lives_its_snapshot_names) {
    run_case(9283933610969028658ULL);
}

/* n1's snapshot is taken while it fetches n2's partition: it holds part of
 * it, and left n2 out of its vector clock. n1 and then n2 restart; the
 * restored n1 took the new n2 for a peer first heard, with nothing to
 * drop, and kept two devices of n2's old life for good. */
Test(repl_restart, partition_under_transfer_at_the_snapshot_leaves_with_a_new_life) {
    run_case(7133180438115589080ULL);
}

/* test_repl_watch.c - what a watcher last heard is the truth (issue 14),
 * over the simulated network of repl_sim.h: a watcher next to each
 * replica hears what that replica publishes, and what the others publish
 * while neither side is cut off, and keeps each user's notification with
 * the largest ver (the later ts on a tie), as docs/protocol.md section 3
 * tells watchers. After a split and its heal, and once the cluster is
 * quiet, every watcher's last notification of every user must show the
 * status the replicas show (tests/chaos/watch.py checks the same of a
 * real cluster). */
#include <criterion/criterion.h>
#include "repl_world.h"

#define SUSPICION_MS 2000

static const pd_model_cfg MCFG_WATCH = {
    .idle_timeout_ms = 1u << 30, .offline_delay_ms = 3000, .server_timeout_ms = 1u << 30};

static void setup(world *w, uint64_t seed) {
    world_init(w, seed, &MCFG_WATCH, false);
    sim *s = &w->s;
    s->cfg.suspicion_ms = SUSPICION_MS;
    for (int i = 0; i < NREP; i++) {
        pd_repl_free(s->r[i]);
        s->r[i] = sim_new_replica(s, i);
    }
    sim_warm_up(s);
}

/* A user id with prefix whose announcer, all three alive, is NODE[a]. */
static void user_announced_by(world *w, int a, const char *prefix, char out[16]) {
    for (int k = 0; k < 1000; k++) {
        snprintf(out, 16, "%s%d", prefix, k);
        if (pd_notifier_is_announcer(pd_repl_notifier(w->s.r[a]), pd_str_c(out))) return;
    }
    cr_assert_fail("no user announced by %s", NODE[a]);
}

/* setup, and a user whom NODE[a] announces (user_announced_by). */
static void setup_with_user(world *w, uint64_t seed, int a, const char *prefix, char user[16]) {
    setup(w, seed);
    user_announced_by(w, a, prefix, user);
}

static void conn_event_at(world *w, int i, pd_event_type t, const char *conn, const char *user) {
    char sid[8];
    snprintf(sid, sizeof sid, "s%d", i);
    pd_event ev = {.type = t, .server = pd_str_c(sid), .conn = pd_str_c(conn),
                   .user = pd_str_c(user), .device = pd_str_c("web")};
    world_event(w, i, &ev);
}

/* ms pass in steps of 100 ms, messages delivered as they go (lost where
 * cut off). */
static void run_for(sim *s, uint64_t ms) {
    for (uint64_t end = s->now + ms; s->now < end;) sim_round(s, 100);
}

/* Every watcher's last notification of user shows what the replicas show
 * (offline for one never announced), and the replicas agree. */
static void expect_watchers_agree(const world *w, const char *user) {
    const sim *s = &w->s;
    pd_view v[NREP];
    for (int i = 0; i < NREP; i++)
        pd_model_view(pd_repl_model(s->r[i]), pd_str_c(user), (pd_str){NULL, 0}, &v[i]);
    for (int i = 1; i < NREP; i++) {
        cr_expect_eq(v[i].status, v[0].status, "%s: %s and n0 show different statuses", user,
                     NODE[i]);
        cr_expect_eq(v[i].ver, v[0].ver, "%s: %s and n0 give different vers", user, NODE[i]);
    }
    if (getenv("PD_NOTES")) {
        for (size_t k = 0; k < s->nnotes; k++)
            if (strcmp(s->notes[k].user, user) == 0)
                fprintf(stderr, "%s: by %s %s ver %llu ts %lld cut %u\n", user, NODE[s->notes[k].by],
                        pd_public_name(s->notes[k].status), (unsigned long long)s->notes[k].ver,
                        (long long)s->notes[k].ts, s->notes[k].cut);
    }
    for (int k = 0; k < NREP; k++) {
        const heard *h = sim_watcher_last(s, k, user, 0);
        pd_public got = h ? h->status : PD_PUB_OFFLINE;
        cr_expect_eq(got, v[0].status,
                     "%s: the watcher next to %s last heard %s (ver %llu, by %s), the replicas "
                     "show %s (ver %llu)", user, NODE[k], pd_public_name(got),
                     (unsigned long long)(h ? h->ver : 0), h ? NODE[h->by] : "-",
                     pd_public_name(v[0].status), (unsigned long long)v[0].ver);
    }
}

/* ms pass in steps of 100 ms; only heartbeats and deltas are delivered
 * (state transfers, asked and served, wait: a slow transfer). */
static void run_slow_transfers(sim *s, uint64_t ms) {
    for (uint64_t end = s->now + ms; s->now < end;) {
        s->now += 100;
        sim_tick_all(s);
        while (sim_deliver_matching(s, -1, -1, M_HB, 1000) + sim_deliver_matching(s, -1, -1, M_DELTA, 1000) > 0) {}
    }
}

/* No replica took another for down (and none suspected one, if asked). */
static void expect_nobody_down(const sim *s, bool nor_suspected) {
    for (int i = 0; i < NREP; i++) {
        pd_repl_stats st;
        pd_repl_stats_get(s->r[i], &st);
        if (nor_suspected) cr_assert_eq(st.suspicions, 0u, "%s suspected nobody", NODE[i]);
        cr_assert_eq(st.nodes_down, 0u, "%s took nobody for down", NODE[i]);
    }
}

/* Replica i and its NATS server are cut off from the others for the node
 * timeout, the suspicion and extra_ms: each side takes the other for
 * down; i keeps running. */
static void split_off(sim *s, int i, uint64_t extra_ms) {
    s->cut[i] = true;
    run_for(s, s->cfg.node_timeout_ms + SUSPICION_MS + extra_ms);
}

/* Replica i is killed and its NATS server cut off, for the node timeout,
 * the suspicion and extra_ms: the others take it for down. */
static void down_for(sim *s, int i, uint64_t extra_ms) {
    s->cut[i] = s->frozen[i] = true;
    run_for(s, s->cfg.node_timeout_ms + SUSPICION_MS + extra_ms);
}

/* n2 is cut off for longer than the node timeout, the suspicion and the
 * offline delay: each side takes the other's devices for gone and
 * announces their users offline to its watchers, at the ver of the
 * delay's end on its side, while the other side keeps them online (at a
 * lower ver: nothing changed there). After the heal the state that
 * survived must outrank that offline on every watcher, however long the
 * state transfers take (slow_ms of heartbeats and deltas only) and
 * whichever link comes back first (n0-n2 late_ms after n1-n2). One user
 * per (owner, announcer) pair. */
static void split_and_heal(uint64_t seed, uint64_t late_ms, uint64_t slow_ms) {
    world w;
    setup(&w, seed);
    sim *s = &w.s;
    char users[2][NREP][16];
    const int owners[2] = {0, 2};
    for (int o = 0; o < 2; o++) {
        for (int a = 0; a < NREP; a++) {
            char prefix[8], conn[16];
            snprintf(prefix, sizeof prefix, "o%da%d_", owners[o], a);
            user_announced_by(&w, a, prefix, users[o][a]);
            snprintf(conn, sizeof conn, "c%d%d", o, a);
            conn_event_at(&w, owners[o], PD_EV_CONNECT, conn, users[o][a]);
        }
    }
    run_for(s, 3 * s->cfg.sync_interval_ms);
    split_off(s, 2, MCFG_WATCH.offline_delay_ms + 3 * s->cfg.sync_interval_ms);
    for (int i = 0; i < NREP; i++) {
        pd_repl_stats st;
        pd_repl_stats_get(s->r[i], &st);
        cr_assert_geq(st.nodes_down, 1u, "%s took the other side for down", NODE[i]);
    }
    s->cut[2] = false;
    /* n0 and n2 hear each other late_ms after n1 and n2 do */
    for (uint64_t end = s->now + late_ms; s->now < end;) {
        s->now += 100;
        sim_tick_all(s);
        for (size_t n = 1; n > 0;) {
            sim_drop_matching(s, 0, 2, -1);
            sim_drop_matching(s, 2, 0, -1);
            n = sim_deliver_matching(s, -1, -1, -1, 1);
        }
    }
    run_slow_transfers(s, slow_ms);
    run_for(s, 20 * s->cfg.sync_interval_ms);
    for (int o = 0; o < 2; o++)
        for (int a = 0; a < NREP; a++) expect_watchers_agree(&w, users[o][a]);
    world_free(&w);
}

Test(repl_watch, a_split_ends_on_the_state_that_survived_it) { split_and_heal(41, 0, 0); }

Test(repl_watch, a_split_ends_on_the_state_that_survived_it_after_slow_transfers) {
    split_and_heal(42, 0, 4 * RCFG.sync_interval_ms);
}

/* n2 hears n1 again first: n2 has n0's devices back only later, and
 * writes their return floors then. */
Test(repl_watch, a_split_healed_one_link_at_a_time_ends_on_the_state_that_survived_it) {
    split_and_heal(45, 3 * RCFG.sync_interval_ms, 0);
    split_and_heal(46, 3 * RCFG.sync_interval_ms, 3 * RCFG.sync_interval_ms);
}

/* During a split, a user comes and goes on the cut-off side (n2), whose
 * watchers hear it online; the heal comes within the offline delay there.
 * The other side never announced that user since before the split, and
 * after the heal it announces it (n2 does not): it must say offline again,
 * at a ver above that online, although its own view of the user did not
 * change (the heal counts every write since the split, wherever made). */
static void comes_and_goes_during_a_split(uint64_t seed, int announcer, bool known) {
    world w;
    setup(&w, seed);
    sim *s = &w.s;
    char user[16];
    user_announced_by(&w, announcer, known ? "g" : "h", user);
    if (known) { /* online and offline before the split, told to all */
        conn_event_at(&w, 2, PD_EV_CONNECT, "cg0", user);
        run_for(s, 3 * s->cfg.sync_interval_ms);
        conn_event_at(&w, 2, PD_EV_DISCONNECT, "cg0", user);
        run_for(s, MCFG_WATCH.offline_delay_ms + 3 * s->cfg.sync_interval_ms);
    }
    split_off(s, 2, 3 * s->cfg.sync_interval_ms);
    conn_event_at(&w, 2, PD_EV_CONNECT, "cg1", user);
    run_for(s, 2 * s->cfg.sync_interval_ms);
    conn_event_at(&w, 2, PD_EV_DISCONNECT, "cg1", user);
    run_for(s, 100); /* n2's delay ends after it has stopped announcing the user */
    s->cut[2] = false;
    run_slow_transfers(s, 2 * s->cfg.sync_interval_ms);
    run_for(s, 20 * s->cfg.sync_interval_ms);
    expect_watchers_agree(&w, user);
    world_free(&w);
}

Test(repl_watch, a_user_that_came_and_went_on_the_other_side_ends_offline) {
    comes_and_goes_during_a_split(43, 0, true);
    comes_and_goes_during_a_split(44, 1, true);
}

/* The same for a user the other side never held before: the transfer
 * brings it offline, so its view never changed there. */
Test(repl_watch, a_user_never_seen_here_that_came_and_went_there_ends_offline) {
    comes_and_goes_during_a_split(47, 0, false);
    comes_and_goes_during_a_split(48, 1, false);
}

/* n2 restarts; meanwhile a user it will announce comes and goes on n0
 * (announced online by n0 or n1). n2 learns of the user only from their
 * state transfers, once the device has left but while the offline delay
 * still runs on n0 and n1: n2 must keep the user in the delay too, and
 * announce its offline when it ends (n0 and n1, no longer its announcers,
 * change it silently then). */
Test(repl_watch, a_user_that_left_while_its_announcer_restarted_ends_offline) {
    world w;
    char user[16];
    setup_with_user(&w, 49, 2, "r", user);
    sim *s = &w.s;
    sim_restart(s, 2);
    run_for(s, 100);
    conn_event_at(&w, 0, PD_EV_CONNECT, "cr0", user);
    run_for(s, 500);
    conn_event_at(&w, 0, PD_EV_DISCONNECT, "cr0", user);
    run_for(s, 100);
    cr_assert_not(pd_repl_ready(s->r[2]), "n2 still warms up");
    run_for(s, 20 * s->cfg.sync_interval_ms);
    expect_watchers_agree(&w, user);
    world_free(&w);
}

/* Each side writes: a connect of a user of its own at replica i. */
static void write_at(world *w, int i, const char *conn) {
    char user[16];
    snprintf(user, sizeof user, "x%s", conn);
    conn_event_at(w, i, PD_EV_CONNECT, conn, user);
}

/* A link that flaps (n2 cut off twice, each time for less than the node
 * timeout, both sides writing all along, so that each sees the other's
 * lost deltas): a user's offline announced by n0 during the first break
 * is lost to n2's watcher, and so is the heal n0 makes after it (n2 is
 * cut off again by then). The heal after the second break must go back
 * as far as that one did, though the offline is older than a node timeout
 * and the suspicion by then. */
Test(repl_watch, a_flapping_link_ends_on_what_the_first_break_hid) {
    world w;
    setup(&w, 51);
    sim *s = &w.s;
    char user[16], conn[16];
    user_announced_by(&w, 0, "f", user);
    conn_event_at(&w, 0, PD_EV_CONNECT, "cf", user);
    write_at(&w, 2, "pre"); /* each follows the other's deltas */
    run_for(s, 2 * s->cfg.sync_interval_ms);
    conn_event_at(&w, 0, PD_EV_DISCONNECT, "cf", user); /* offline 0.5 s into the break */
    run_for(s, MCFG_WATCH.offline_delay_ms - 500);
    int k = 0;
    uint64_t phases[4] = {s->cfg.node_timeout_ms - 1000, s->cfg.sync_interval_ms + 500,
                          s->cfg.node_timeout_ms - 1000, 10 * s->cfg.sync_interval_ms};
    for (int ph = 0; ph < 4; ph++) {
        s->cut[2] = ph % 2 == 0;
        for (uint64_t end = s->now + phases[ph]; s->now < end;) {
            snprintf(conn, sizeof conn, "%d", k++);
            write_at(&w, k % 2 ? 0 : 2, conn);
            sim_round(s, 250);
        }
    }
    expect_nobody_down(s, false);
    expect_watchers_agree(&w, user);
    world_free(&w);
}

/* A cut shorter than the node timeout (nobody suspected, nobody down)
 * during which only the cut-off side (n2) writes: its announcements of
 * that time are lost to the other side's watchers, and nothing there
 * repeats them (n0 and n1 see the gap in n2's deltas, but announce n2's
 * users only if they are theirs, and n2 sees no gap in theirs: they sent
 * nothing). n2, hearing them again after a silence of more than two
 * heartbeats, says them again (issue 14, watch.py's (10)). */
Test(repl_watch, a_cut_shorter_than_the_node_timeout_ends_on_what_it_hid) {
    world w;
    setup(&w, 52);
    sim *s = &w.s;
    char on[16], off[16];
    user_announced_by(&w, 2, "son", on);
    user_announced_by(&w, 2, "soff", off);
    conn_event_at(&w, 2, PD_EV_CONNECT, "coff", off);
    run_for(s, 2 * s->cfg.sync_interval_ms + MCFG_WATCH.offline_delay_ms);
    s->cut[2] = true;
    run_for(s, s->cfg.sync_interval_ms);
    conn_event_at(&w, 2, PD_EV_CONNECT, "con", on);        /* online at once */
    conn_event_at(&w, 2, PD_EV_DISCONNECT, "coff", off);   /* offline after the delay */
    run_for(s, s->cfg.node_timeout_ms - 2 * s->cfg.sync_interval_ms);
    s->cut[2] = false;
    /* The route is back, but for a moment the others' interest in n2's
     * notifications has not reached n2's NATS server: what n2 publishes
     * as it first hears them again is lost to their watchers (chaos seed
     * 16), so the repeat must come later. */
    pd_repl_stats st2 = {0};
    for (int k = 0, after = 0; k < 50 && after < 3; k++) { /* 300 ms from the first heard */
        size_t from = s->nnotes;
        sim_round(s, 100);
        pd_repl_stats_get(s->r[2], &st2);
        for (size_t j = from; j < s->nnotes; j++)
            if (s->notes[j].by == 2) s->notes[j].cut |= 1u << 2;
        if (st2.silences) after++;
    }
    cr_assert_geq(st2.silences, 1u, "n2 heard the others again after the silence");
    run_for(s, MCFG_WATCH.offline_delay_ms + 10 * s->cfg.sync_interval_ms);
    expect_nobody_down(s, true);
    expect_watchers_agree(&w, on);
    expect_watchers_agree(&w, off);
    world_free(&w);
}

/* The same, with the link breaking again as soon as it was back: n0's
 * repeat after the first silence is lost too (its notifications dropped
 * as a route that broke again would drop them). The repeat after the
 * second silence must go back as far as the first one did, though the
 * change it lost is older than that silence (chaos seed 11: a node back
 * from down while its link flapped). */
Test(repl_watch, a_repeat_lost_in_the_next_break_is_made_again) {
    world w;
    setup(&w, 53);
    sim *s = &w.s;
    char on[16];
    user_announced_by(&w, 0, "ron", on);
    run_for(s, 2 * s->cfg.sync_interval_ms);
    s->cut[2] = true;
    run_for(s, s->cfg.sync_interval_ms);
    conn_event_at(&w, 0, PD_EV_CONNECT, "con", on);
    run_for(s, 2 * s->cfg.sync_interval_ms);
    s->cut[2] = false;
    size_t from = s->nnotes;
    pd_repl_stats st = {0};
    for (int k = 0; k < 50 && st.silences == 0; k++) {
        sim_round(s, 100);
        pd_repl_stats_get(s->r[0], &st);
    }
    cr_assert_eq(st.silences, 1u, "n0 heard n2 again after the silence");
    s->cut[2] = true;
    for (size_t k = from; k < s->nnotes; k++)
        if (s->notes[k].by == 0) s->notes[k].cut |= 1u << 2; /* lost in the next break */
    run_for(s, 3 * s->cfg.sync_interval_ms);
    s->cut[2] = false;
    run_for(s, 10 * s->cfg.sync_interval_ms);
    expect_nobody_down(s, false);
    expect_watchers_agree(&w, on);
    world_free(&w);
}

/* A link that keeps flapping right after a change (n2 cut off for three
 * sync intervals, back for three, ten times): each silence makes n0
 * repeat what it said since shortly before the silence, and one repeat
 * goes back as far as the last (the test above), but no further: the
 * change is said at most three times, not once per cycle (it_partition's
 * flap, under load: a notification per user per cycle). */
Test(repl_watch, a_link_that_keeps_flapping_repeats_a_change_at_most_twice) {
    world w;
    setup(&w, 53);
    sim *s = &w.s;
    uint64_t si = s->cfg.sync_interval_ms;
    char on[16];
    user_announced_by(&w, 0, "fon", on);
    run_for(s, 2 * si);
    size_t from = s->nnotes;
    conn_event_at(&w, 0, PD_EV_CONNECT, "cfon", on);
    pd_repl_stats st = {0};
    for (int c = 0; c < 10; c++) {
        s->cut[2] = true;
        run_for(s, 3 * si);
        s->cut[2] = false;
        run_for(s, 3 * si);
    }
    run_for(s, 10 * si);
    pd_repl_stats_get(s->r[0], &st);
    cr_assert_geq(st.silences, 5u, "n0 heard n2 again after each cut (%llu)",
                  (unsigned long long)st.silences);
    int said = 0;
    for (size_t k = from; k < s->nnotes; k++)
        said += s->notes[k].by == 0 && strcmp(s->notes[k].user, on) == 0;
    cr_assert_geq(said, 2, "the change was said, then repeated after the first silence");
    cr_assert_leq(said, 3, "the change was said %d times in ten flaps", said);
    expect_nobody_down(s, false);
    expect_watchers_agree(&w, on);
    world_free(&w);
}


/* Replica i, killed after taking snap, runs again from it (the snapshot
 * is freed). */
static void back_from_snapshot(sim *s, int i, snapbuf *snap) {
    pd_err err = {PD_OK, ""};
    pd_snap_info info;
    s->cut[i] = s->frozen[i] = false;
    sim_restart(s, i);
    pd_repl_restore_begin(s->r[i]);
    cr_assert_eq(pd_repl_restore(s->r[i], snap->buf, snap->len, s->now, &info, &err), PD_OK, "%s",
                 err.msg);
    pd_repl_restore_done(s->r[i], s->now);
    free(snap->buf);
    snap->buf = NULL;
}

/* n2 is killed for longer than the node timeout, the suspicion and the
 * offline delay: n0 and n1 drop its devices and announce its user
 * `offline` (at the ver of the delay's end). n2 comes back from the
 * snapshot it took before, with the user's device: it announces the user
 * `online` once ready, at its own ver, which is below that `offline`.
 * n0 and n1, whose delay had ended, raise the user's floor above their
 * `offline` when the device is back to them; on n2 that floor changes no
 * status, and it must still be announced (pd_notifier_floor), or every
 * watcher stays on the `offline`. */
Test(repl_watch, a_node_back_from_its_snapshot_announces_the_floor_above_the_offline) {
    world w;
    char user[16];
    setup_with_user(&w, 53, 2, "k", user);
    sim *s = &w.s;
    conn_event_at(&w, 2, PD_EV_CONNECT, "ck", user);
    run_for(s, 3 * s->cfg.sync_interval_ms);
    snapbuf snap = {0};
    take_snapshot(s, 2, &snap);
    down_for(s, 2, MCFG_WATCH.offline_delay_ms + 3 * s->cfg.sync_interval_ms);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(public_view(&w, i, user).status, PD_PUB_OFFLINE,
                     "%s took n2's user for gone", NODE[i]);
    back_from_snapshot(s, 2, &snap);
    /* n2 catches up and announces before its devices reach the others:
     * what it sends them, but heartbeats and requests, waits. */
    for (int k = 0; k < 100 && !pd_notifier_announcing(pd_repl_notifier(s->r[2])); k++) {
        s->now += 100;
        sim_tick_all(s);
        for (size_t n = 1; n > 0;) {
            n = sim_deliver_matching(s, -1, 2, -1, 1000) + sim_deliver_matching(s, 0, 1, -1, 1000) +
                sim_deliver_matching(s, 1, 0, -1, 1000) + sim_deliver_matching(s, 2, -1, M_HB, 1000) +
                sim_deliver_matching(s, 2, -1, M_REQ, 1000);
        }
    }
    cr_assert(pd_notifier_announcing(pd_repl_notifier(s->r[2])), "n2 announces");
    run_for(s, 20 * s->cfg.sync_interval_ms);
    cr_assert_eq(public_view(&w, 2, user).status, PD_PUB_ONLINE);
    expect_watchers_agree(&w, user);
    pd_notify_stats ns;
    pd_notifier_stats_get(pd_repl_notifier(s->r[2]), &ns);
    cr_expect_geq(ns.floors, 1u, "n2 announced a floor");
    world_free(&w);
}

/* n2, cut off from the others, announces a user of its own `online` to
 * its side alone; the user leaves, n2 takes a snapshot and is killed
 * before the offline delay ends, and comes back from that snapshot after
 * it ended. The others never held the user (they get it from n2's new
 * life already offline), and n2 restores it offline, changed before its
 * start: nobody said `offline`, and n2's watcher stayed on `online`
 * (chaos seed 11). A node back from its snapshot says again the users
 * whose offline delay ended after the snapshot was taken. */
static void offline_due_while_dead(int announcer) {
    world w;
    setup(&w, 57);
    sim *s = &w.s;
    char user[16];
    user_announced_by(&w, announcer, "g", user);
    run_for(s, 2 * s->cfg.sync_interval_ms);
    s->cut[2] = true;
    conn_event_at(&w, 2, PD_EV_CONNECT, "cg", user);
    run_for(s, 3 * s->cfg.sync_interval_ms);
    conn_event_at(&w, 2, PD_EV_DISCONNECT, "cg", user);
    run_for(s, 2 * s->cfg.sync_interval_ms);
    snapbuf snap = {0};
    take_snapshot(s, 2, &snap);
    down_for(s, 2, MCFG_WATCH.offline_delay_ms);
    back_from_snapshot(s, 2, &snap);
    run_for(s, 20 * s->cfg.sync_interval_ms);
    cr_assert_eq(public_view(&w, 2, user).status, PD_PUB_OFFLINE);
    expect_watchers_agree(&w, user);
    world_free(&w);
}

Test(repl_watch, an_offline_due_while_its_announcer_was_dead_is_said_when_it_is_back) {
    offline_due_while_dead(2);
}

/* The same for a user that n0 announces when all three are alive: the
 * user comes and goes on n2 late in a split, and n2, which takes the
 * others for down before the offline delay ends, says it `online` to its
 * side as their announcer; it is killed before the delay ends. Back from
 * its snapshot, n2 is no longer the user's announcer, and n0 gets the
 * user from n2's new life already offline: nothing changed there (chaos
 * seed 11, u772). A node back from its snapshot says those `offline`
 * users whoever announces them now. */
Test(repl_watch, an_offline_due_while_a_split_off_announcer_was_dead_is_said_when_it_is_back) {
    world w;
    char user[16];
    setup_with_user(&w, 58, 0, "g", user);
    sim *s = &w.s;
    run_for(s, 2 * s->cfg.sync_interval_ms);
    s->cut[2] = true;
    uint64_t down_at = s->now + s->cfg.node_timeout_ms + SUSPICION_MS;
    run_for(s, down_at - s->now - MCFG_WATCH.offline_delay_ms + 2 * s->cfg.sync_interval_ms);
    conn_event_at(&w, 2, PD_EV_CONNECT, "cg", user);
    run_for(s, 100);
    conn_event_at(&w, 2, PD_EV_DISCONNECT, "cg", user);
    run_for(s, down_at + 200 - s->now);
    cr_assert(pd_notifier_is_announcer(pd_repl_notifier(s->r[2]), pd_str_c(user)),
              "n2 took the others for down");
    const heard *h = sim_watcher_last(s, 2, user, 0);
    cr_assert(h != NULL && h->status == PD_PUB_ONLINE, "n2 said the user online to its side");
    snapbuf snap = {0};
    take_snapshot(s, 2, &snap);
    s->frozen[2] = true;
    run_for(s, MCFG_WATCH.offline_delay_ms);
    back_from_snapshot(s, 2, &snap);
    run_for(s, 20 * s->cfg.sync_interval_ms);
    cr_assert_eq(public_view(&w, 2, user).status, PD_PUB_OFFLINE);
    cr_assert_not(pd_notifier_is_announcer(pd_repl_notifier(s->r[2]), pd_str_c(user)));
    expect_watchers_agree(&w, user);
    world_free(&w);
}

/* n1 is killed and its NATS server cut off from the others for longer than
 * the node timeout; meanwhile a user announced by n0 connects there. The
 * watcher next to n1 hears nothing of it, and no heal repeats it (n1
 * comes back as a new life). When n1 is back, n0 announces again what it
 * announced while n1 was gone (pd_notifier_rejoin). */
Test(repl_watch, a_change_made_while_a_node_and_its_server_were_away_reaches_its_watchers) {
    world w;
    char user[16];
    setup_with_user(&w, 55, 0, "j", user);
    sim *s = &w.s;
    down_for(s, 1, s->cfg.sync_interval_ms);
    conn_event_at(&w, 0, PD_EV_CONNECT, "cj", user);
    run_for(s, 2 * s->cfg.sync_interval_ms);
    cr_assert_null(sim_watcher_last(s, 1, user, 0), "n1's watcher was cut off");
    s->cut[1] = s->frozen[1] = false;
    sim_restart(s, 1);
    run_for(s, 20 * s->cfg.sync_interval_ms);
    cr_assert_eq(public_view(&w, 1, user).status, PD_PUB_ONLINE);
    expect_watchers_agree(&w, user);
    world_free(&w);
}

/* Users that n1 announces when it is there (n0 or n2 while it is gone),
 * whose devices on n0 left just before n1 was killed and cut off: the
 * offline delay ends while n1 is away, and n0 or n2 announces `offline`,
 * which n1's watcher never hears. n1 comes back from its snapshot, with
 * the delay over (offline at once, changed when the delay ended, more
 * than a node timeout before its start): its start says again only what
 * changed since its warm-up began (less a node timeout), and n0 and n2
 * repeated only users they announce with n1 back. The node that announced
 * a change while n1 was gone repeats it (chaos seed 11: users that went
 * offline during a split in which n2 was killed, announced by n2 once
 * back). */
Test(repl_watch, a_change_announced_for_a_node_while_it_was_away_reaches_its_watchers) {
    world w;
    setup(&w, 56);
    sim *s = &w.s;
    char users[8][16], conn[16];
    for (int k = 0; k < 8; k++) {
        char prefix[8];
        snprintf(prefix, sizeof prefix, "k%d_", k);
        user_announced_by(&w, 1, prefix, users[k]);
        snprintf(conn, sizeof conn, "ck%d", k);
        conn_event_at(&w, 0, PD_EV_CONNECT, conn, users[k]);
    }
    run_for(s, 3 * s->cfg.sync_interval_ms);
    for (int k = 0; k < 8; k++) {
        snprintf(conn, sizeof conn, "ck%d", k);
        conn_event_at(&w, 0, PD_EV_DISCONNECT, conn, users[k]);
    }
    run_for(s, s->cfg.sync_interval_ms);
    snapbuf snap = {0};
    take_snapshot(s, 1, &snap);
    down_for(s, 1, MCFG_WATCH.offline_delay_ms + s->cfg.node_timeout_ms);
    for (int k = 0; k < 8; k++) {
        cr_assert_eq(public_view(&w, 0, users[k]).status, PD_PUB_OFFLINE);
        const heard *h = sim_watcher_last(s, 1, users[k], 0);
        cr_assert(h != NULL && h->status == PD_PUB_ONLINE, "n1's watcher heard only online");
    }
    back_from_snapshot(s, 1, &snap);
    run_for(s, 20 * s->cfg.sync_interval_ms);
    for (int k = 0; k < 8; k++) {
        cr_assert(pd_notifier_is_announcer(pd_repl_notifier(s->r[1]), pd_str_c(users[k])));
        expect_watchers_agree(&w, users[k]);
    }
    world_free(&w);
}

/* The same, with the change made while n1, back and warming up, is cut off
 * again for a moment (its new life was heard already): the changes are
 * said again once n1 is ready, not when it is first heard. */
Test(repl_watch, a_change_made_while_a_node_back_from_down_warmed_up_reaches_its_watchers) {
    world w;
    char user[16];
    setup_with_user(&w, 57, 0, "q", user);
    sim *s = &w.s;
    down_for(s, 1, s->cfg.sync_interval_ms);
    s->cut[1] = s->frozen[1] = false;
    sim_restart(s, 1);
    sim_round(s, 100);
    sim_round(s, 100);
    cr_assert_not(pd_repl_ready(s->r[1]), "n1 still warms up");
    s->cut[1] = true;
    conn_event_at(&w, 0, PD_EV_CONNECT, "cq", user);
    run_for(s, s->cfg.sync_interval_ms);
    cr_assert_null(sim_watcher_last(s, 1, user, 0), "n1's watcher was cut off");
    s->cut[1] = false;
    run_for(s, 20 * s->cfg.sync_interval_ms);
    cr_assert_eq(public_view(&w, 1, user).status, PD_PUB_ONLINE);
    expect_watchers_agree(&w, user);
    world_free(&w);
}

/* n0 is cut off for longer than the node timeout and the suspicion, and a
 * user it announces connects there: said `online` to n0's side alone.
 * n0's process then stops (SIGSTOP) and its link comes back meanwhile: it
 * reads the others' heartbeats as they come, so it heard n2 lately when
 * it runs again. n2 is killed and cut off before that; n0, back, heals
 * with n1 (the user said to n1's side), and n2 comes back as a new life:
 * n0's rejoin repeats what it announced since it last heard n2, which is
 * after the user's change, and n2's watcher never heard it (chaos seed 6,
 * u371). A rejoin goes back as far as a heal made while the node was
 * gone. */
Test(repl_watch, a_change_a_heal_said_while_a_node_was_gone_reaches_its_watchers) {
    world w;
    char user[16];
    setup_with_user(&w, 61, 0, "r", user);
    sim *s = &w.s;
    run_for(s, 2 * s->cfg.sync_interval_ms);
    split_off(s, 0, 2 * s->cfg.sync_interval_ms);
    conn_event_at(&w, 0, PD_EV_CONNECT, "cr", user);
    run_for(s, 2 * s->cfg.sync_interval_ms);
    s->frozen[0] = true;
    s->cut[0] = false;
    run_for(s, 2 * s->cfg.sync_interval_ms);  /* n0 reads n2's heartbeats, stopped */
    s->cut[2] = s->frozen[2] = true;         /* n2 killed */
    run_for(s, s->cfg.sync_interval_ms);
    s->frozen[0] = false;                    /* n0 runs again, heals with n1 */
    run_for(s, s->cfg.node_timeout_ms + SUSPICION_MS + 6 * s->cfg.sync_interval_ms);
    cr_assert_eq(public_view(&w, 1, user).status, PD_PUB_ONLINE);
    s->cut[2] = s->frozen[2] = false;
    sim_restart(s, 2);                       /* back as a new life */
    run_for(s, 20 * s->cfg.sync_interval_ms);
    cr_assert_eq(public_view(&w, 2, user).status, PD_PUB_ONLINE);
    expect_watchers_agree(&w, user);
    world_free(&w);
}

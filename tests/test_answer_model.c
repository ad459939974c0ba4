/* test_answer_model.c - the model's side of issue #13: the fields every
 * node reports come from replicated data (last_seen as a register, the
 * coarsened last_active, meta, the frozen last_seen of invisible), so two
 * models fed the same ops in different orders answer alike; and the
 * retention: users with nothing but a last_seen, and servers with nothing
 * but a seq, are forgotten, deterministically, and memory goes back. */
#include <criterion/criterion.h>
#include <string.h>
#include "base/alloc.h"
#include "model/presence_int.h"
#include "model/query_answer.h"
#include "wire/codec_repl.h"
#include "model_fixtures.h"

/* ---- an op log: what one model sends, to replay into another ---------------- */

typedef struct {
    msgpack_sbuffer sb;
    size_t at[4096];
    uint32_t n;
} op_log;

static void log_op(void *ud, const pd_op *op) {
    op_log *l = ud;
    msgpack_packer pk;
    cr_assert_lt(l->n, 4096u);
    l->at[l->n++] = l->sb.size;
    msgpack_packer_init(&pk, &l->sb, msgpack_sbuffer_write);
    pd_op_encode(&pk, op);
}

/* Applies op i of the log to m as origin's. */
static void replay_one(const op_log *l, uint32_t i, pd_model *m, const char *origin, uint64_t now) {
    mp_reader r;
    pd_op op;
    size_t end = i + 1 < l->n ? l->at[i + 1] : l->sb.size;
    mpr_init(&r, l->sb.data + l->at[i], end - l->at[i]);
    cr_assert(pd_op_read(&r, &op), "op %u: %s", i, r.why);
    cr_assert_eq(pd_model_apply_op(m, pd_str_c(origin), &op, now), PD_OK);
}

/* The get (public and self views) and devices answers of user, packed. */
static void answers(const pd_model *m, const char *user, msgpack_sbuffer *out) {
    msgpack_packer pk;
    pd_str u = pd_str_c(user);
    pd_query g = {.type = PD_Q_GET, .nusers = 1}, gs = g, d = {.type = PD_Q_DEVICES, .user = u};
    msgpack_sbuffer q;
    pd_err err = {0};
    msgpack_sbuffer_init(&q);
    pd_query_encode(&q, &g, &u, 1);
    cr_assert_eq(pd_query_decode(PD_Q_GET, q.data, q.size, &g, &err), PD_OK, "%s", err.msg);
    msgpack_sbuffer_clear(out);
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    cr_assert_eq(pd_query_answer(m, &g, NULL, &pk, &err), PD_OK);
    gs = g;
    gs.viewer = u;
    cr_assert_eq(pd_query_answer(m, &gs, NULL, &pk, &err), PD_OK);
    cr_assert_eq(pd_query_answer(m, &d, NULL, &pk, &err), PD_OK);
    msgpack_sbuffer_destroy(&q);
}

static void expect_same_answers(const pd_model *a, const pd_model *b, const char *user) {
    msgpack_sbuffer x, y;
    msgpack_sbuffer_init(&x);
    msgpack_sbuffer_init(&y);
    answers(a, user, &x);
    answers(b, user, &y);
    bool same = x.size == y.size && memcmp(x.data, y.data, x.size) == 0;
    if (!same) {
        for (size_t i = 0; i < x.size; i++) fprintf(stderr, "%c", x.data[i] >= 32 && x.data[i] < 127 ? x.data[i] : '.');
        fprintf(stderr, "\n");
        for (size_t i = 0; i < y.size; i++) fprintf(stderr, "%c", y.data[i] >= 32 && y.data[i] < 127 ? y.data[i] : '.');
        fprintf(stderr, "\n");
    }
    cr_expect(same, "%s: answers differ", user);
    msgpack_sbuffer_destroy(&x);
    msgpack_sbuffer_destroy(&y);
}

/* ---- identical answers ------------------------------------------------------------- */

Test(answer_model, replicas_fed_in_any_order_answer_alike) {
    pd_model_cfg cfg = CFG;
    cfg.activity_resolution_ms = 100;
    recorder ra, rb, rc;
    size_t base = pd_alloc_live_bytes();
    pd_model *a = model_new(&cfg, &ra);
    pd_model *b = pd_model_new(&cfg, PD_STR_LIT("node-b"), NULL, NULL);
    pd_model *c = pd_model_new(&cfg, PD_STR_LIT("node-c"), NULL, NULL);
    memset(&rb, 0, sizeof rb);
    memset(&rc, 0, sizeof rc);
    op_log *l = calloc(1, sizeof *l);
    msgpack_sbuffer_init(&l->sb);
    pd_model_set_op_hook(a, log_op, l);
    pd_event ev = ev_connect("ws", "c1", "alice");
    static const char meta[] = "\x81\xa3" "app\xa3" "web";
    ev.meta = (pd_str){meta, sizeof meta - 1};
    apply_ok(a, ev, 1000);
    apply_ok(a, ev_connect("ws", "c2", "alice"), 1010);
    apply_ok(a, ev_connect("ws", "c3", "bob"), 1020);
    uint32_t before = l->n;
    apply_ok(a, ev_conn(PD_EV_ACTIVITY, "ws", "c1"), 1050); /* same step: no op */
    cr_expect_eq(l->n, before, "activity within the step sends nothing");
    apply_ok(a, ev_conn(PD_EV_ACTIVITY, "ws", "c1"), 1234);
    cr_expect_eq(l->n, before + 1, "a new step sends one STATE");
    apply_ok(a, ev_status("bob", PD_CHOSEN_INVISIBLE), 1300);
    apply_ok(a, ev_conn(PD_EV_DISCONNECT, "ws", "c2"), 1400);
    apply_ok(a, ev_conn(PD_EV_DISCONNECT, "ws", "c3"), 1500);
    pd_model_tick(a, 20000); /* idle timeouts: STATE ops */
    /* b gets the ops in order, late; c the device ops in order (an origin's
     * stream is ordered) but the registers last, in reverse. Both must
     * answer as a does. */
    for (uint32_t i = 0; i < l->n; i++) replay_one(l, i, b, "node-a", 25000 + i);
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t k = 0; k < l->n; k++) {
            uint32_t i = pass ? l->n - 1 - k : k;
            uint8_t kind = (uint8_t)l->sb.data[l->at[i] + 1];
            bool reg = kind == PD_OP_CHOSEN || kind == PD_OP_CUSTOM || kind == PD_OP_SEEN;
            if (reg == (pass == 1)) replay_one(l, i, c, "node-a", 29000 + i);
        }
    }
    pd_model_tick(b, 40000);
    pd_model_tick(c, 40000);
    expect_same_answers(a, b, "alice");
    expect_same_answers(a, b, "bob");
    expect_same_answers(a, c, "bob");
    pd_view v = view_of(b, "bob", "bob");
    cr_expect_eq(v.last_seen, 1500, "bob left at 1500 on a's clock, whenever b learnt it");
    cr_expect_eq(view_of(b, "bob", NULL).last_seen, 1020, "frozen when invisible, at a's value");
    cr_expect_eq(view_of(b, "alice", NULL).last_seen, 1400, "the REMOVE's time");
    pd_model_free(b);
    pd_model_free(c);
    msgpack_sbuffer_destroy(&l->sb);
    free(l);
    model_free(a, &ra, base);
}

Test(answer_model, a_dead_owner_s_users_get_one_last_seen_everywhere) {
    pd_model_cfg cfg = CFG;
    recorder r;
    size_t base = pd_alloc_live_bytes();
    pd_model *a = model_new(&cfg, &r);
    pd_model *b = pd_model_new(&cfg, PD_STR_LIT("node-b"), NULL, NULL);
    pd_model *c = pd_model_new(&cfg, PD_STR_LIT("node-c"), NULL, NULL);
    op_log *la = calloc(1, sizeof *la), *lb = calloc(1, sizeof *lb), *lc = calloc(1, sizeof *lc);
    msgpack_sbuffer_init(&la->sb);
    msgpack_sbuffer_init(&lb->sb);
    msgpack_sbuffer_init(&lc->sb);
    pd_model_set_op_hook(a, log_op, la);
    pd_model_set_op_hook(b, log_op, lb);
    pd_model_set_op_hook(c, log_op, lc);
    apply_ok(a, ev_connect("ws", "c1", "carol"), 1000);
    for (uint32_t i = 0; i < la->n; i++) {
        replay_one(la, i, b, "node-a", 1001);
        replay_one(la, i, c, "node-a", 1002);
    }
    /* a dies; b and c notice at different times, and tell each other. */
    pd_model_drop_owner(b, PD_STR_LIT("node-a"), 4000);
    pd_model_drop_owner(c, PD_STR_LIT("node-a"), 4100);
    /* Each writes one VER (the change no write names) and one SEEN. */
    cr_assert_eq(lb->n, 2u, "b writes a VER and a SEEN");
    cr_assert_eq(lc->n, 2u, "c writes a VER and a SEEN");
    for (uint32_t i = 0; i < 2; i++) {
        replay_one(lb, i, c, "node-b", 4200);
        replay_one(lc, i, b, "node-c", 4300);
    }
    pd_model_tick(b, 10000);
    pd_model_tick(c, 10000);
    cr_expect_eq(view_of(b, "carol", NULL).last_seen, 4100, "the latest wins");
    expect_same_answers(b, c, "carol");
    pd_model_free(b);
    pd_model_free(c);
    op_log *logs[] = {la, lb, lc};
    for (int i = 0; i < 3; i++) {
        msgpack_sbuffer_destroy(&logs[i]->sb);
        free(logs[i]);
    }
    model_free(a, &r, base);
}

/* ---- retention -------------------------------------------------------------------- */

Test(answer_model, users_with_nothing_left_are_forgotten_after_the_retention) {
    pd_model_cfg cfg = CFG; /* offline delay 500 */
    cfg.user_retention_ms = 2000;
    recorder r;
    size_t base = pd_alloc_live_bytes();
    pd_model *m = model_new(&cfg, &r);
    apply_ok(m, ev_connect("ws", "c1", "plain"), 1000);
    apply_ok(m, ev_connect("ws", "c2", "custom"), 1000);
    apply_ok(m, ev_connect("ws", "c3", "busy"), 1000);
    apply_ok(m, ev_connect("ws", "c4", "back"), 1000);
    apply_ok(m, ev_custom("custom", "away on holiday", "", 0), 1100);
    apply_ok(m, ev_status("busy", PD_CHOSEN_BUSY), 1100);
    for (int i = 1; i <= 4; i++) {
        char conn[8];
        snprintf(conn, sizeof conn, "c%d", i);
        apply_ok(m, ev_conn(PD_EV_DISCONNECT, "ws", conn), 1200);
    }
    pd_model_tick(m, 1800); /* past the offline delay */
    cr_expect_eq(stats(m).users, 4u);
    apply_ok(m, ev_connect("ws", "c5", "back"), 3000); /* comes back in time */
    apply_ok(m, ev_conn(PD_EV_DISCONNECT, "ws", "c5"), 3100);
    pd_model_tick(m, 3199);
    cr_expect_eq(stats(m).users, 4u, "not before last_seen + retention");
    pd_model_tick(m, 3200);
    pd_view v;
    cr_expect_not(pd_model_view(m, S("plain"), S(NULL), &v), "plain is forgotten");
    cr_expect_eq(v.last_seen, 0);
    cr_expect(pd_model_view(m, S("custom"), S(NULL), &v), "a custom status keeps the user");
    cr_expect(pd_model_view(m, S("busy"), S(NULL), &v), "a chosen status keeps the user");
    cr_expect(pd_model_view(m, S("back"), S(NULL), &v), "back: its retention runs from 3100");
    pd_model_tick(m, 3700); /* its offline delay ends; then its retention runs */
    pd_model_tick(m, 5099);
    cr_expect(pd_model_view(m, S("back"), S(NULL), &v));
    pd_model_tick(m, 5100);
    cr_expect_not(pd_model_view(m, S("back"), S(NULL), &v));
    /* Clearing what kept them starts their retention from that write
     * (later than their last_seen at 1200): the write must outlive its
     * way to every node, as forgetting drops it. */
    apply_ok(m, ev_custom("custom", "", "", 0), 6000);
    apply_ok(m, ev_status("busy", PD_CHOSEN_AUTO), 6000);
    pd_model_tick(m, 6000);
    cr_expect_eq(stats(m).users, 2u, "not at once, though last seen at 1200");
    pd_model_tick(m, 7999);
    cr_expect_eq(stats(m).users, 2u, "not before the write + retention");
    pd_model_tick(m, 8000);
    cr_expect_eq(stats(m).users, 0u);
    cr_expect_eq(stats(m).forgotten_users, 4u);
    cr_expect_eq(stats(m).timers, 0u);
    model_free(m, &r, base);
}

/* A VER op can reach a node before anything else of its user: node-b
 * raised the floor of "fred", whose devices node-a learns later, in
 * another origin's partition. Known by that floor alone (no last_seen),
 * fred was forgotten at the next tick, floor and all, so node-a's ver
 * stayed below the other nodes' for good (chaos seed 8). The floor is a
 * write like the others: the retention counts from it. */
Test(answer_model, a_user_known_by_its_ver_floor_alone_is_kept_for_the_retention) {
    pd_model_cfg cfg = CFG;
    cfg.user_retention_ms = 2000;
    recorder r;
    size_t base = pd_alloc_live_bytes();
    pd_model *m = model_new(&cfg, &r);
    pd_op op = {.kind = PD_OP_VER, .user = S("fred"), .hlc = ((uint64_t)1000 << 16) | 1,
                .writer = S("node-b")};
    cr_assert_eq(pd_model_apply_op(m, S("node-b"), &op, 1000), PD_OK);
    pd_model_tick(m, 1001);
    pd_view v;
    cr_assert(pd_model_view(m, S("fred"), S(NULL), &v), "fred is kept with its floor");
    cr_expect_eq(v.ver, op.hlc);
    pd_model_tick(m, 2999);
    cr_expect(pd_model_view(m, S("fred"), S(NULL), &v), "not before the floor + retention");
    pd_model_tick(m, 3000);
    cr_expect_not(pd_model_view(m, S("fred"), S(NULL), &v), "forgotten after it");
    cr_expect_eq(stats(m).forgotten_users, 1u);
    model_free(m, &r, base);
}

Test(answer_model, a_silent_server_is_forgotten_with_its_seq) {
    pd_model_cfg cfg = CFG;
    cfg.user_retention_ms = 2000;
    recorder r;
    size_t base = pd_alloc_live_bytes();
    pd_model *m = model_new(&cfg, &r);
    pd_event ev = ev_connect("ws", "c1", "dan");
    ev.has_seq = true;
    ev.seq = 7;
    apply_ok(m, ev, 1000);
    ev = ev_conn(PD_EV_DISCONNECT, "ws", "c1");
    ev.has_seq = true;
    ev.seq = 8;
    apply_ok(m, ev, 1100);
    pd_model_tick(m, 3000);
    cr_expect_eq(stats(m).servers, 1u, "its seq is kept within the retention");
    pd_model_tick(m, 3100);
    cr_expect_eq(stats(m).servers, 0u);
    cr_expect_eq(stats(m).forgotten_servers, 1u);
    /* The server restarts counting: seq 1 is new, not a duplicate. */
    ev = ev_connect("ws", "c1", "dan");
    ev.has_seq = true;
    ev.seq = 1;
    pd_apply_result res;
    pd_err err = {0};
    cr_assert_eq(pd_model_apply(m, &ev, 4000, &res, &err), PD_OK);
    cr_expect_eq(res, PD_APPLIED);
    model_free(m, &r, base);
}

Test(answer_model, forgetting_frees_the_memory) {
    pd_model_cfg cfg = CFG;
    cfg.user_retention_ms = 1000;
    cfg.offline_delay_ms = 0;
    recorder r;
    size_t base = pd_alloc_live_bytes();
    pd_model *m = model_new(&cfg, &r);
    r.keep = false;
    size_t empty = pd_alloc_live_bytes();
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 5000; i++) {
            char user[16];
            snprintf(user, sizeof user, "g%d.%d", round, i);
            apply_ok(m, ev_connect("ws", user, user), 1000 + (uint64_t)round * 10000);
            apply_ok(m, ev_conn(PD_EV_DISCONNECT, "ws", user), 1000 + (uint64_t)round * 10000);
        }
        cr_expect_eq(stats(m).users, 5000u);
        pd_model_tick(m, 3000 + (uint64_t)round * 10000);
        cr_expect_eq(stats(m).users, 0u);
        /* The tables shrank back; the timer heap's array and the dirty
         * list keep their largest size (a fixed amount). */
        cr_expect_lt(pd_alloc_live_bytes() - empty, 200000u, "round %d: %zu bytes left", round,
                     pd_alloc_live_bytes() - empty);
    }
    model_free(m, &r, base);
}

/* A server that left no devices before its first heartbeat: the retention
 * timer it had must not stand in for its timeout once it is watched. */
Test(answer_model, a_watched_server_still_times_out_after_a_retention_timer) {
    pd_model_cfg cfg = CFG; /* server timeout 3000 */
    cfg.user_retention_ms = 100000;
    recorder r;
    size_t base = pd_alloc_live_bytes();
    pd_model *m = model_new(&cfg, &r);
    pd_event ev = ev_connect("ws", "c1", "eve");
    ev.has_seq = true;
    ev.seq = 1;
    apply_ok(m, ev, 1000);
    ev = ev_conn(PD_EV_DISCONNECT, "ws", "c1");
    ev.has_seq = true;
    ev.seq = 2;
    apply_ok(m, ev, 1100); /* no devices, a seq: the retention timer runs */
    ev = ev_server(PD_EV_HEARTBEAT, "ws");
    ev.has_seq = true;
    ev.seq = 3;
    apply_ok(m, ev, 1200);
    ev = ev_connect("ws", "c2", "eve");
    ev.has_seq = true;
    ev.seq = 4;
    apply_ok(m, ev, 1300);
    cr_expect_eq(stats(m).devices, 1u);
    pd_model_tick(m, 1300 + 3000 + 1); /* silent for the server timeout */
    cr_expect_eq(stats(m).devices, 0u, "the crashed server's devices leave");
    model_free(m, &r, base);
}

/* test_ver.c - `ver` of notifications and get entries
 * (schemas/notifications.md): it grows with every change of a user's
 * public state, timer-driven ones included (idle timeout, offline delay,
 * custom status expiry), and two nodes that applied the same writes give
 * the same ver, whichever of them wrote them.
 *
 * Two models, "a" and "b", exchange their ops through the wire encoding
 * after each step (in order, as deltas would), and tick at the same times. */
#include <criterion/criterion.h>
#include <string.h>
#include "model/presence.h"
#include "wire/codec_repl.h"

#define S(x) pd_str_c(x)

typedef struct {
    msgpack_sbuffer out;     /* encoded ops not yet delivered */
    uint64_t last_ver[4];    /* per user index: ver of the last notification */
    int notes[4];
    bool decreased;
} side;

static side sa, sb;
static pd_model *ma, *mb;
static const char *const USERS[] = {"alice", "bob", "carol", "dan"};

static int user_index(pd_str u) {
    for (int i = 0; i < 4; i++) if (pd_str_eqc(u, USERS[i])) return i;
    return -1;
}

static void on_change(void *ud, const pd_view *v) {
    side *s = ud;
    int i = user_index(v->user);
    if (i < 0) return;
    if (v->ver <= s->last_ver[i]) s->decreased = true;
    s->last_ver[i] = v->ver;
    s->notes[i]++;
}

static void on_op(void *ud, const pd_op *op) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, &((side *)ud)->out, msgpack_sbuffer_write);
    pd_op_encode(&pk, op);
}

static const pd_model_cfg CFG = {.idle_timeout_ms = 1000, .offline_delay_ms = 500,
                                 .server_timeout_ms = 100000};

static void setup(void) {
    memset(&sa, 0, sizeof sa);
    memset(&sb, 0, sizeof sb);
    msgpack_sbuffer_init(&sa.out);
    msgpack_sbuffer_init(&sb.out);
    ma = pd_model_new(&CFG, S("a"), on_change, &sa);
    mb = pd_model_new(&CFG, S("b"), on_change, &sb);
    pd_model_set_op_hook(ma, on_op, &sa);
    pd_model_set_op_hook(mb, on_op, &sb);
}

static void teardown(void) {
    pd_model_free(ma);
    pd_model_free(mb);
    msgpack_sbuffer_destroy(&sa.out);
    msgpack_sbuffer_destroy(&sb.out);
}

TestSuite(ver, .init = setup, .fini = teardown);

/* Delivers what `from` wrote to `to` (origin = from's id). */
static void deliver(side *from, pd_model *to, const char *origin, uint64_t now) {
    mp_reader r;
    pd_op op;
    msgpack_sbuffer copy;
    if (from->out.size == 0) return;
    msgpack_sbuffer_init(&copy);
    msgpack_sbuffer_write(&copy, from->out.data, from->out.size);
    msgpack_sbuffer_clear(&from->out);
    mpr_init(&r, copy.data, copy.size);
    while (mpr_remaining(&r) > 0) {
        cr_assert(pd_op_read(&r, &op));
        cr_assert_eq(pd_model_apply_op(to, S(origin), &op, now), PD_OK);
    }
    msgpack_sbuffer_destroy(&copy);
}

static void exchange(uint64_t now) {
    deliver(&sa, mb, "a", now);
    deliver(&sb, ma, "b", now);
}

static void apply_on(pd_model *m, pd_event ev, uint64_t now) {
    pd_apply_result res;
    pd_err err = {0};
    cr_assert_eq(pd_model_apply(m, &ev, now, &res, &err), PD_OK, "%s", err.msg);
    exchange(now);
}

static void tick(uint64_t now) {
    pd_model_tick(ma, now);
    pd_model_tick(mb, now);
    exchange(now);
}

static uint64_t ver_on(pd_model *m, const char *user) {
    pd_view v;
    pd_model_view(m, S(user), S(""), &v);
    return v.ver;
}

static pd_event connect_ev(const char *conn, const char *user) {
    return (pd_event){.type = PD_EV_CONNECT, .server = S("s1"), .conn = S(conn), .user = S(user),
                      .device = S("web")};
}

static pd_event conn_ev(pd_event_type t, const char *conn) {
    return (pd_event){.type = t, .server = S("s1"), .conn = S(conn)};
}

/* Same ver for every user on both models. */
static void expect_same(const char *at) {
    for (int i = 0; i < 4; i++)
        cr_expect_eq(ver_on(ma, USERS[i]), ver_on(mb, USERS[i]), "%s: %s a=%llu b=%llu", at,
                     USERS[i], (unsigned long long)ver_on(ma, USERS[i]),
                     (unsigned long long)ver_on(mb, USERS[i]));
}

Test(ver, grows_with_every_change_and_agrees_across_nodes) {
    uint64_t t = 1000000;
    cr_expect_eq(ver_on(ma, "alice"), 0, "never seen: 0");
    apply_on(ma, connect_ev("c1", "alice"), t);
    expect_same("connect");
    uint64_t v1 = ver_on(ma, "alice");
    cr_expect_gt(v1, 0);
    pd_event st = {.type = PD_EV_STATUS, .user = S("alice"), .status = PD_CHOSEN_BUSY};
    apply_on(mb, st, t += 10); /* written on the other node */
    expect_same("status on b");
    cr_expect_gt(ver_on(ma, "alice"), v1);
    apply_on(ma, conn_ev(PD_EV_IDLE, "c1"), t += 10);
    expect_same("idle");
    pd_event cu = {.type = PD_EV_CUSTOM, .user = S("alice"), .text = S("lunch"),
                   .expires_at = (int64_t)(t + 300)};
    apply_on(mb, cu, t += 10);
    expect_same("custom");
    uint64_t before_expiry = ver_on(ma, "alice");
    tick(t += 400); /* the custom status expires on both */
    expect_same("custom expiry");
    cr_expect_gt(ver_on(ma, "alice"), before_expiry, "an expiry is a new state");
    apply_on(ma, conn_ev(PD_EV_ACTIVITY, "c1"), t += 10);
    tick(t += 1100); /* the idle timeout on a, a STATE to b */
    expect_same("idle timeout");
    uint64_t before_gone = ver_on(mb, "alice");
    apply_on(ma, conn_ev(PD_EV_DISCONNECT, "c1"), t += 10);
    expect_same("disconnect");
    cr_expect_gt(ver_on(mb, "alice"), before_gone);
    uint64_t in_grace = ver_on(ma, "alice");
    /* The two nodes' offline delays end at different times: same ver. */
    pd_model_tick(ma, t + 500);
    pd_model_tick(mb, t + 530);
    exchange(t + 530);
    expect_same("offline delay over");
    cr_expect_gt(ver_on(ma, "alice"), in_grace);
    cr_expect_not(sa.decreased, "a notification's ver did not grow on a");
    cr_expect_not(sb.decreased, "a notification's ver did not grow on b");
    cr_expect_geq(sa.notes[0], 5);
}

Test(ver, server_move_removals_agree) {
    uint64_t t = 2000000;
    apply_on(ma, connect_ev("c1", "bob"), t);
    apply_on(ma, connect_ev("c2", "carol"), t += 5);
    /* s1 moves to b with a list of c1 only: carol's c2 leaves everywhere. */
    pd_sync_conn c = {S("c1"), S("bob"), S("web")};
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    pd_event sy = {.type = PD_EV_SYNC, .server = S("s1")};
    pd_event_encode(&buf, &sy, &c, 1);
    pd_event dec;
    pd_err err;
    cr_assert_eq(pd_event_decode(buf.data, buf.size, &dec, &err), PD_OK);
    apply_on(mb, dec, t += 5);
    exchange(t);
    pd_view v;
    pd_model_view(ma, S("carol"), S(""), &v);
    cr_expect_eq(v.devices, 0, "the ghost left a");
    pd_model_view(mb, S("carol"), S(""), &v);
    cr_expect_eq(v.devices, 0, "and b");
    expect_same("after the move");
    msgpack_sbuffer_destroy(&buf);
}

/* REMOVE and STATE from nodes before `ver` (4 or 5 and 6 elements) still
 * read, with ver = 0; the current forms carry it (REMOVE with ver writes
 * its `at` too, 0 when not said). */
Test(ver, remove_and_state_read_with_and_without_ver) {
    static const uint8_t old_remove[] = {0x94, 0x01, 0xa1, 's', 0xa1, 'c', 0x07};
    static const uint8_t old_state[] = {0x96, 0x02, 0xa1, 's', 0xa1, 'c', 0x07, 0x01, 0x05};
    static const uint8_t new_remove[] = {0x96, 0x01, 0xa1, 's', 0xa1, 'c', 0x07, 0x00, 0x09};
    static const uint8_t new_state[] = {0x97, 0x02, 0xa1, 's', 0xa1, 'c', 0x07, 0x01, 0x05, 0x0b};
    static const uint8_t bad_remove[] = {0x93, 0x01, 0xa1, 's', 0xa1, 'c'};
    mp_reader r;
    pd_op op;
    mpr_init(&r, old_remove, sizeof old_remove);
    cr_assert(pd_op_read(&r, &op));
    cr_expect_eq(op.kind, PD_OP_REMOVE);
    cr_expect_eq(op.hlc, 7);
    cr_expect_eq(op.ver, 0);
    mpr_init(&r, old_state, sizeof old_state);
    cr_assert(pd_op_read(&r, &op));
    cr_expect_eq(op.kind, PD_OP_STATE);
    cr_expect_eq(op.ver, 0);
    cr_expect_eq(op.last_active, 5);
    mpr_init(&r, new_remove, sizeof new_remove);
    cr_assert(pd_op_read(&r, &op));
    cr_expect_eq(op.at, 0);
    cr_expect_eq(op.ver, 9);
    mpr_init(&r, new_state, sizeof new_state);
    cr_assert(pd_op_read(&r, &op));
    cr_expect_eq(op.ver, 11);
    mpr_init(&r, bad_remove, sizeof bad_remove);
    cr_expect_not(pd_op_read(&r, &op), "three elements: bad op arity");
}


/* b ticks at `at`, its delay ends: alice is `offline` there, and b
 * announced that state; returns its ver. */
static uint64_t alice_offline_on_b(uint64_t at) {
    pd_model_tick(mb, at);
    pd_view v;
    pd_model_view(mb, S("alice"), S(""), &v);
    cr_assert_eq(v.status, PD_PUB_OFFLINE);
    cr_assert_eq(sb.last_ver[0], v.ver, "b announced the offline state");
    return v.ver;
}

/* The end of the offline delay and a return just before it, on two nodes.
 * b's delay ends first and b announces `offline`; a's reconnect, claimed
 * just before a's own delay ends, reaches b after that. The return must
 * outrank the `offline` b sent (a watcher keeping the largest ver would
 * end on `offline` otherwise), with the same ver on both nodes, and
 * without running ahead of the clock: the writes after it still raise it. */
Test(ver, a_return_just_before_the_delay_ends_outranks_the_offline) {
    uint64_t t = 3000000;
    apply_on(ma, connect_ev("c1", "alice"), t);
    apply_on(ma, conn_ev(PD_EV_DISCONNECT, "c1"), t += 10);
    uint64_t gone = t;
    expect_same("disconnect");
    uint64_t off = alice_offline_on_b(gone + 500); /* b's delay ends */
    pd_view v;
    /* a: the user is back 10 ms before a's delay would end; b hears it late */
    pd_apply_result res;
    pd_err err = {0};
    pd_event c2 = connect_ev("c2", "alice");
    cr_assert_eq(pd_model_apply(ma, &c2, gone + 490, &res, &err), PD_OK);
    cr_expect_lt(ver_on(ma, "alice"), (gone + 491) << 16, "a's ver does not run ahead of its clock");
    deliver(&sa, mb, "a", gone + 520);
    pd_model_view(mb, S("alice"), S(""), &v);
    cr_expect_eq(v.status, PD_PUB_ONLINE);
    cr_expect_gt(sb.last_ver[0], off, "b announces the return above its offline");
    cr_expect_not(sb.decreased, "every notification of b outranks the one before");
    pd_model_tick(ma, gone + 520); /* a's delay would have ended: the same ver */
    exchange(gone + 520);
    expect_same("return after b's offline");
    /* A write after the return raises the ver on both. */
    uint64_t back = ver_on(mb, "alice");
    pd_event st = {.type = PD_EV_STATUS, .user = S("alice"), .status = PD_CHOSEN_BUSY};
    apply_on(ma, st, gone + 600);
    expect_same("status after the return");
    cr_expect_gt(ver_on(mb, "alice"), back);
    cr_expect_not(sa.decreased);
    cr_expect_not(sb.decreased);
}

/* A return early in the delay: no node ended it, nothing is announced, and
 * the ver stays below the clock until the delay would have ended. */
Test(ver, an_early_return_keeps_the_ver_below_the_clock) {
    uint64_t t = 4000000;
    apply_on(ma, connect_ev("c1", "bob"), t);
    apply_on(ma, conn_ev(PD_EV_DISCONNECT, "c1"), t += 10);
    int notes = sb.notes[1];
    apply_on(ma, connect_ev("c2", "bob"), t += 20);
    cr_expect_eq(sb.notes[1], notes, "a reconnect within the delay is not announced");
    cr_expect_lt(ver_on(ma, "bob"), (t + 1) << 16);
    expect_same("early return");
    pd_event st = {.type = PD_EV_STATUS, .user = S("bob"), .status = PD_CHOSEN_AWAY};
    uint64_t before = ver_on(mb, "bob");
    apply_on(mb, st, t += 20);
    cr_expect_gt(ver_on(ma, "bob"), before, "a write after the return raises the ver");
    expect_same("status");
    tick(t += 1000);
    expect_same("after the delay");
    cr_expect_not(sa.decreased);
    cr_expect_not(sb.decreased);
}

/* b takes a for down and decides alice's last_seen at its own time; a
 * third node that took a for down later decided a later one, which wins,
 * and reaches b within the delay. b's delay ends at that last_seen + the
 * delay, when its offline's ver says, not at its own drop + the delay: an
 * offline numbered ahead of b's clock would outrank a return made before
 * the clock got there (a watcher keeping the largest ver would end on
 * that offline). */
Test(ver, a_later_last_seen_moves_the_end_of_the_delay) {
    uint64_t t = 5000000;
    apply_on(ma, connect_ev("c1", "carol"), t);
    apply_on(ma, connect_ev("c2", "dan"), t);
    uint64_t drop = t + 1000;
    pd_model_drop_owner(mb, S("a"), drop);
    msgpack_sbuffer_clear(&sb.out);
    int notes = sb.notes[2];
    pd_op seen = {.kind = PD_OP_SEEN, .at = (int64_t)drop + 200, .hlc = (drop + 200) << 16,
                  .writer = S("c")};
    seen.user = S("carol");
    cr_assert_eq(pd_model_apply_op(mb, S("c"), &seen, drop + 100), PD_OK);
    seen.user = S("dan");
    cr_assert_eq(pd_model_apply_op(mb, S("c"), &seen, drop + 100), PD_OK);
    pd_model_tick(mb, drop + 500);
    pd_view v;
    pd_model_view(mb, S("carol"), S(""), &v);
    cr_expect_eq(v.status, PD_PUB_ONLINE, "the delay runs on to last_seen + the delay");
    cr_expect_eq(sb.notes[2], notes, "nothing announced yet");
    /* carol is back (a device on d) before that: never offline. */
    pd_op add = {.kind = PD_OP_ADD, .server = S("s2"), .conn = S("c9"), .user = S("carol"),
                 .label = S("web"), .state = PD_DEV_ACTIVE, .connected_at = (int64_t)drop + 600,
                 .last_active = (int64_t)drop + 600, .hlc = (drop + 600) << 16};
    cr_assert_eq(pd_model_apply_op(mb, S("d"), &add, drop + 600), PD_OK);
    pd_model_tick(mb, drop + 700);
    pd_model_view(mb, S("carol"), S(""), &v);
    cr_expect_eq(v.status, PD_PUB_ONLINE);
    cr_expect_eq(sb.notes[2], notes, "a return within the delay is not announced");
    cr_expect_not(sb.decreased, "every notification of b outranks the one before");
    /* dan is not: offline then, at a ver not ahead of b's clock. */
    pd_model_view(mb, S("dan"), S(""), &v);
    cr_expect_eq(v.status, PD_PUB_OFFLINE, "the delay ends at last_seen + the delay");
    cr_expect_eq(sb.last_ver[3], (drop + 700) << 16, "its offline's ver");
}

/* b took a for down and said alice `offline` when its delay ended; then
 * (a split healing) it learns a later last_seen of hers, written on the
 * other side before that end, and her device there: the return must
 * outrank the `offline` b said, though the delay counted from the new
 * last_seen has not ended (chaos seed 15, 60 s, u789: said `busy` below
 * the `offline`; watch.py (22)). */
Test(ver, a_return_after_a_later_last_seen_outranks_the_offline_said) {
    uint64_t t = 6000000;
    apply_on(ma, connect_ev("c1", "alice"), t);
    expect_same("connect");
    uint64_t drop = t + 1000;
    pd_model_drop_owner(mb, S("a"), drop);
    uint64_t off = alice_offline_on_b(drop + 500); /* b's delay ends */
    pd_view v;
    /* the other side: alice was seen at drop + 400 (before b's end), and a
     * device of hers on d comes with the heal, at drop + 600 */
    pd_op seen = {.kind = PD_OP_SEEN, .user = S("alice"), .at = (int64_t)drop + 400,
                  .hlc = (drop + 400) << 16, .writer = S("c")};
    cr_assert_eq(pd_model_apply_op(mb, S("c"), &seen, drop + 600), PD_OK);
    pd_op add = {.kind = PD_OP_ADD, .server = S("s2"), .conn = S("c9"), .user = S("alice"),
                 .label = S("web"), .state = PD_DEV_ACTIVE, .connected_at = (int64_t)drop + 300,
                 .last_active = (int64_t)drop + 300, .hlc = (drop + 300) << 16};
    cr_assert_eq(pd_model_apply_op(mb, S("d"), &add, drop + 600), PD_OK);
    pd_model_view(mb, S("alice"), S(""), &v);
    cr_expect_eq(v.status, PD_PUB_ONLINE);
    cr_expect_gt(v.ver, off, "the return (%llu) outranks the offline b said (%llu)",
                 (unsigned long long)v.ver, (unsigned long long)off);
    cr_expect_not(sb.decreased, "every notification of b outranks the one before");
}

/* test_notify_gate.c - the notification coalescing gate (notify_gate.h):
 * leading edge at once, trailing edge with the latest view, a bounded
 * count for a flapping user, order and ts kept, off at 0, bounded memory,
 * flush, and no leaks (the gate allocates through alloc.h). */
#include "notify/notify_gate.h"
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include "base/alloc.h"

typedef struct {
    char user[PD_ID_MAX + 1];
    char text[PD_TEXT_MAX + 1];
    char emoji[PD_EMOJI_MAX + 1];
    pd_public status;
    int64_t ts;
} sent_view;

#define MAX_SENT 4096
static sent_view sent[MAX_SENT];
static int nsent;

static void copy(char *dst, size_t cap, pd_str s) {
    size_t n = s.n < cap - 1 ? s.n : cap - 1;
    if (n) memcpy(dst, s.p, n);
    dst[n] = '\0';
}

static void on_send(void *ud, const pd_view *v) {
    int *calls = ud;
    (*calls)++;
    cr_assert_lt(nsent, MAX_SENT);
    sent_view *s = &sent[nsent++];
    copy(s->user, sizeof s->user, v->user);
    copy(s->text, sizeof s->text, v->text);
    copy(s->emoji, sizeof s->emoji, v->emoji);
    s->status = v->status;
    s->ts = v->ts;
}

/* A view built in a scratch buffer that is scribbled over after the
 * offer, so that a gate keeping a pointer instead of a copy is caught. */
static char scratch_user[64], scratch_text[64];
static pd_view view(const char *user, pd_public st, const char *text, int64_t ts) {
    snprintf(scratch_user, sizeof scratch_user, "%s", user);
    snprintf(scratch_text, sizeof scratch_text, "%s", text);
    return (pd_view){.user = pd_str_c(scratch_user), .status = st,
                     .text = pd_str_c(scratch_text), .emoji = PD_STR_LIT(":x:"), .ts = ts};
}

static void offer(pd_gate *g, const char *user, pd_public st, const char *text, uint64_t now) {
    pd_view v = view(user, st, text, (int64_t)now);
    pd_gate_offer(g, &v, now);
    memset(scratch_user, '#', sizeof scratch_user - 1);
    memset(scratch_text, '#', sizeof scratch_text - 1);
}

static int count_for(const char *user) {
    int k = 0;
    for (int i = 0; i < nsent; i++) k += strcmp(sent[i].user, user) == 0;
    return k;
}

static const sent_view *last_for(const char *user) {
    for (int i = nsent - 1; i >= 0; i--)
        if (strcmp(sent[i].user, user) == 0) return &sent[i];
    return NULL;
}

static size_t base;
static int calls;

static void setup(void) {
    nsent = 0;
    calls = 0;
    base = pd_alloc_live_bytes();
}

TestSuite(gate, .init = setup);

static void gate_free(pd_gate *g) {
    pd_gate_free(g);
    cr_expect_eq(pd_alloc_live_bytes(), base, "the gate leaked %zd bytes",
                 (ssize_t)(pd_alloc_live_bytes() - base));
}

Test(gate, first_change_goes_at_once) {
    pd_gate *g = pd_gate_new(100, 1000, on_send, &calls);
    cr_assert_not_null(g);
    offer(g, "amy", PD_PUB_ONLINE, "", 1000);
    cr_assert_eq(nsent, 1);
    cr_expect_str_eq(sent[0].user, "amy");
    cr_expect_eq(sent[0].status, PD_PUB_ONLINE);
    cr_expect_str_eq(sent[0].emoji, ":x:");
    /* Another user is not held back by amy's interval. */
    offer(g, "bo", PD_PUB_AWAY, "", 1010);
    cr_assert_eq(nsent, 2);
    cr_expect_eq(count_for("amy"), 1);
    cr_expect_eq(count_for("bo"), 1);
    cr_expect_eq(calls, 2);
    gate_free(g);
}

Test(gate, changes_within_interval_are_coalesced_into_the_latest) {
    pd_gate *g = pd_gate_new(100, 1000, on_send, &calls);
    offer(g, "amy", PD_PUB_ONLINE, "", 1000);
    offer(g, "amy", PD_PUB_AWAY, "a", 1010);
    offer(g, "amy", PD_PUB_BUSY, "b", 1020);
    offer(g, "amy", PD_PUB_ONLINE, "lunch", 1030);
    cr_assert_eq(nsent, 1, "held until the interval ends");
    cr_expect_eq(pd_gate_next_due(g), 1100);
    pd_gate_tick(g, 1099);
    cr_assert_eq(nsent, 1);
    pd_gate_tick(g, 1100);
    cr_assert_eq(nsent, 2);
    cr_expect_eq(sent[1].status, PD_PUB_ONLINE);
    cr_expect_str_eq(sent[1].text, "lunch", "the held copy, not the caller's buffer");
    cr_expect_str_eq(sent[1].user, "amy");
    cr_expect_eq(sent[1].ts, 1030, "the view keeps the ts of its change");
    pd_gate_stats st;
    pd_gate_stats_get(g, &st);
    cr_expect_eq(st.offered, 4);
    cr_expect_eq(st.sent, 2);
    cr_expect_eq(st.coalesced, 2);
    cr_expect_eq(st.pending, 0);
    /* The trailing send starts a new interval: a change right after waits. */
    offer(g, "amy", PD_PUB_AWAY, "", 1150);
    cr_assert_eq(nsent, 2);
    pd_gate_tick(g, 1200);
    cr_assert_eq(nsent, 3);
    cr_expect_eq(sent[2].status, PD_PUB_AWAY);
    /* Quiet for an interval: the user is forgotten and the next goes at once. */
    pd_gate_tick(g, 1300);
    pd_gate_stats_get(g, &st);
    cr_expect_eq(st.entries, 0);
    cr_expect_eq(pd_gate_next_due(g), UINT64_MAX);
    offer(g, "amy", PD_PUB_ONLINE, "", 1301);
    cr_expect_eq(nsent, 4);
    gate_free(g);
}

Test(gate, flapping_user_is_bounded_and_ends_right) {
    pd_gate *g = pd_gate_new(100, 1000, on_send, &calls);
    uint64_t t = 5000;
    /* 200 changes in one second, a tick every ms as a loop would. */
    for (int i = 0; i < 200; i++, t += 5) {
        offer(g, "flap", i % 2 ? PD_PUB_AWAY : PD_PUB_ONLINE, "", t);
        for (uint64_t k = t; k < t + 5; k++) pd_gate_tick(g, k);
    }
    pd_gate_tick(g, t + 100);
    cr_expect_leq(nsent, 11, "%d notifications for 200 changes in 1 s", nsent);
    cr_expect_geq(nsent, 9, "one per interval while it changes");
    cr_expect_eq(last_for("flap")->status, PD_PUB_AWAY, "the last one is the final state");
    int64_t prev = -1;
    for (int i = 0; i < nsent; i++) {
        cr_expect_gt(sent[i].ts, prev, "ts grows");
        prev = sent[i].ts;
    }
    gate_free(g);
}

Test(gate, trailing_sends_keep_the_order_of_their_intervals) {
    pd_gate *g = pd_gate_new(100, 1000, on_send, &calls);
    offer(g, "a", PD_PUB_ONLINE, "", 1000);
    offer(g, "b", PD_PUB_ONLINE, "", 1001);
    offer(g, "c", PD_PUB_ONLINE, "", 1001);
    offer(g, "c", PD_PUB_AWAY, "", 1050);
    offer(g, "b", PD_PUB_AWAY, "", 1051);
    offer(g, "a", PD_PUB_AWAY, "", 1052);
    pd_gate_tick(g, 1101);
    cr_assert_eq(nsent, 6);
    cr_expect_str_eq(sent[3].user, "a");
    cr_expect_str_eq(sent[4].user, "b");
    cr_expect_str_eq(sent[5].user, "c");
    gate_free(g);
}

Test(gate, offer_after_the_interval_before_the_tick_goes_at_once) {
    pd_gate *g = pd_gate_new(100, 1000, on_send, &calls);
    offer(g, "amy", PD_PUB_ONLINE, "", 1000);
    offer(g, "amy", PD_PUB_AWAY, "", 1050);
    /* The loop was late: the interval ended at 1100, no tick yet. */
    offer(g, "amy", PD_PUB_BUSY, "", 1200);
    cr_assert_eq(nsent, 2);
    cr_expect_eq(sent[1].status, PD_PUB_BUSY, "the latest, not the stale held one");
    pd_gate_tick(g, 1300);
    cr_expect_eq(nsent, 2);
    gate_free(g);
}

Test(gate, zero_interval_is_off) {
    pd_gate *g = pd_gate_new(0, 1000, on_send, &calls);
    for (int i = 0; i < 50; i++) offer(g, "amy", i % 2 ? PD_PUB_AWAY : PD_PUB_ONLINE, "", 1000);
    cr_expect_eq(nsent, 50);
    cr_expect_eq(pd_gate_next_due(g), UINT64_MAX);
    gate_free(g);
}

Test(gate, full_table_sends_uncoalesced) {
    pd_gate *g = pd_gate_new(100, 2, on_send, &calls);
    offer(g, "a", PD_PUB_ONLINE, "", 1000);
    offer(g, "b", PD_PUB_ONLINE, "", 1000);
    offer(g, "c", PD_PUB_ONLINE, "", 1000);
    offer(g, "c", PD_PUB_AWAY, "", 1001);
    cr_expect_eq(nsent, 4, "c has no entry: each of its changes goes at once");
    pd_gate_stats st;
    pd_gate_stats_get(g, &st);
    cr_expect_eq(st.entries, 2);
    cr_expect_eq(st.overflow, 2);
    offer(g, "a", PD_PUB_AWAY, "", 1002);
    cr_expect_eq(nsent, 4, "a still coalesces");
    gate_free(g);
}

Test(gate, flush_sends_what_is_held) {
    pd_gate *g = pd_gate_new(1000, 100, on_send, &calls);
    offer(g, "a", PD_PUB_ONLINE, "", 1000);
    offer(g, "a", PD_PUB_AWAY, "gone", 1001);
    offer(g, "b", PD_PUB_ONLINE, "", 1002);
    pd_gate_flush(g);
    cr_assert_eq(nsent, 3);
    cr_expect_str_eq(sent[2].text, "gone");
    pd_gate_flush(g);
    cr_expect_eq(nsent, 3, "nothing twice");
    /* Held views are freed with the gate, not leaked. */
    offer(g, "b", PD_PUB_AWAY, "x", 1003);
    gate_free(g);
}

Test(gate, clock_running_back_does_not_stall) {
    pd_gate *g = pd_gate_new(100, 100, on_send, &calls);
    offer(g, "a", PD_PUB_ONLINE, "", 100000);
    offer(g, "a", PD_PUB_AWAY, "", 100010);
    /* The wall clock steps back a minute: the gate keeps its own time. */
    offer(g, "b", PD_PUB_ONLINE, "", 40000);
    pd_gate_tick(g, 40100);
    cr_expect_eq(nsent, 2);
    pd_gate_tick(g, 100100);
    cr_expect_eq(nsent, 3);
    cr_expect_eq(sent[2].status, PD_PUB_AWAY);
    gate_free(g);
}

Test(gate, out_of_memory_never_loses_the_last_state) {
    pd_gate *g = pd_gate_new(100, 100, on_send, &calls);
    offer(g, "a", PD_PUB_ONLINE, "", 1000);
    pd_alloc_fail_after(0);
    offer(g, "a", PD_PUB_AWAY, "t", 1010);  /* cannot hold: sent at once */
    offer(g, "n", PD_PUB_ONLINE, "", 1010); /* cannot remember: sent at once */
    pd_alloc_fail_after(-1);
    cr_assert_eq(nsent, 3);
    cr_expect_eq(sent[1].status, PD_PUB_AWAY);
    gate_free(g);
}

/* A flip and a flip back within the interval: the watcher's view did not
 * change, so nothing more is sent, now or at a flush. */
Test(gate, flip_and_flip_back_sends_nothing_more) {
    pd_gate *g = pd_gate_new(100, 1000, on_send, &calls);
    offer(g, "amy", PD_PUB_BUSY, "x", 1000);
    offer(g, "amy", PD_PUB_ONLINE, "x", 1010);
    offer(g, "amy", PD_PUB_BUSY, "x", 1020);
    pd_gate_tick(g, 1100);
    cr_expect_eq(nsent, 1, "%d notifications for a state that came back", nsent);
    /* The interval ended quiet: the next change goes at once. */
    offer(g, "amy", PD_PUB_AWAY, "x", 1150);
    cr_expect_eq(nsent, 2);
    offer(g, "amy", PD_PUB_ONLINE, "x", 1160);
    offer(g, "amy", PD_PUB_AWAY, "x", 1170);
    pd_gate_flush(g);
    cr_expect_eq(nsent, 2, "flush sent a view equal to the last one");
    /* A different custom status is a change. */
    offer(g, "amy", PD_PUB_AWAY, "y", 1180);
    pd_gate_tick(g, 1250);
    cr_expect_eq(nsent, 3);
    cr_expect_str_eq(last_for("amy")->text, "y");
    gate_free(g);
}

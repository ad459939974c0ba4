/* it_notify.c - change notifications (docs/protocol.md section 3) from a real
 * presenced, counted by a watcher on presence.user.>: exactly one per
 * change, none for what others cannot see, none for a reconnect inside the
 * offline delay, and ts strictly growing per user.
 *
 * Counting "no more than one" needs a barrier: the node handles events in
 * order and publishes on one connection, so once a later notification for
 * a sentinel user has arrived, every earlier one has too. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include "harness.h"

static h_nats ns;
static h_node node;
static natsConnection *nc;
static h_watch *w;
static int barrier_n;

/* Coalescing off: the barrier counts on notifications leaving in the
 * order of their changes (it_limits.c tests the coalescing). */
static const char *const env[] = {"PRESENCE_OFFLINE_DELAY_MS=300",
                                   "PRESENCE_IDLE_TIMEOUT_MS=60000",
                                   "PRESENCE_NOTIFY_MIN_INTERVAL_MS=0", NULL};

static void setup(void) {
    h_nats_start(&ns);
    h_node_start(&node, &ns, "w1", env);
    nc = h_connect(&ns);
    w = h_watch_start(&ns, NULL);
}

static void teardown(void) {
    h_watch_stop(w);
    natsConnection_Destroy(nc);
    h_node_stop_clean(&node);
    h_nats_stop(&ns);
}

TestSuite(notify, .init = setup, .fini = teardown, .timeout = 60);

static void send_ok(pd_event ev) {
    pd_reply rep;
    cr_assert(h_event(nc, "w1", &ev, &rep) && rep.ok, "event refused: %s", rep.message);
}

/* Makes the (online) sentinel change status and waits for its notification:
 * the sentinel has had barrier_n notifications after it. */
static void barrier(void) {
    barrier_n++;
    send_ok(h_ev_status("sentinel", barrier_n % 2 ? PD_CHOSEN_BUSY : PD_CHOSEN_AWAY));
    cr_assert(H_POLL(h_watch_count(w, "sentinel") >= barrier_n, 5000), "barrier %d", barrier_n);
}

static void setup_sentinel(void) {
    send_ok(h_ev_connect("s0", "sentinel-c", "sentinel", "web"));
    cr_assert(H_POLL(h_watch_count(w, "sentinel") == 1, 5000));
    barrier_n = 1;
}

#define EXPECT_COUNT(user, n)                                                          \
    do {                                                                               \
        barrier();                                                                     \
        cr_assert_eq(h_watch_count(w, user), (n), "notifications for %s", user);        \
    } while (0)

Test(notify, one_per_change) {
    setup_sentinel();
    send_ok(h_ev_connect("s1", "c1", "amy", "web"));
    EXPECT_COUNT("amy", 1);
    cr_assert_eq(h_watch_last_status(w, "amy"), PD_PUB_ONLINE);
    send_ok(h_ev_conn(PD_EV_ACTIVITY, "s1", "c1"));
    EXPECT_COUNT("amy", 1); /* activity of an online user changes nothing visible */
    send_ok(h_ev_conn(PD_EV_IDLE, "s1", "c1"));
    EXPECT_COUNT("amy", 2);
    cr_assert_eq(h_watch_last_status(w, "amy"), PD_PUB_AWAY);
    send_ok(h_ev_connect("s1", "c2", "amy", "mobile"));
    EXPECT_COUNT("amy", 3);
    cr_assert_eq(h_watch_last_status(w, "amy"), PD_PUB_ONLINE);
    send_ok(h_ev_status("amy", PD_CHOSEN_BUSY));
    EXPECT_COUNT("amy", 4);
    cr_assert_eq(h_watch_last_status(w, "amy"), PD_PUB_BUSY);
    send_ok(h_ev_custom("amy", "focus", NULL, 0));
    EXPECT_COUNT("amy", 5);
    char text[300];
    h_watch_last_text(w, "amy", text, sizeof text);
    cr_assert_str_eq(text, "focus");
    send_ok(h_ev_custom("amy", "", NULL, 0));
    EXPECT_COUNT("amy", 6);
    cr_assert(h_watch_ts_monotonic(w));
}

Test(notify, reconnect_within_delay_is_silent) {
    setup_sentinel();
    send_ok(h_ev_connect("s1", "c1", "bo", "web"));
    EXPECT_COUNT("bo", 1);
    send_ok(h_ev_conn(PD_EV_DISCONNECT, "s1", "c1"));
    send_ok(h_ev_connect("s1", "c1b", "bo", "web"));
    h_sleep_ms(400); /* past the 300 ms delay: an offline would have been sent */
    EXPECT_COUNT("bo", 1);
    send_ok(h_ev_conn(PD_EV_DISCONNECT, "s1", "c1b"));
    cr_assert(H_POLL(h_watch_last_status(w, "bo") == PD_PUB_OFFLINE, 3000));
    EXPECT_COUNT("bo", 2);
}

Test(notify, invisible_changes_are_not_announced) {
    setup_sentinel();
    send_ok(h_ev_connect("s1", "c1", "cy", "web"));
    send_ok(h_ev_status("cy", PD_CHOSEN_INVISIBLE));
    EXPECT_COUNT("cy", 2); /* online, then offline as others see it */
    cr_assert_eq(h_watch_last_status(w, "cy"), PD_PUB_OFFLINE);
    send_ok(h_ev_conn(PD_EV_IDLE, "s1", "c1"));
    send_ok(h_ev_connect("s1", "c2", "cy", "mobile"));
    send_ok(h_ev_custom("cy", "secret", NULL, 0));
    EXPECT_COUNT("cy", 2);
    send_ok(h_ev_status("cy", PD_CHOSEN_AUTO));
    EXPECT_COUNT("cy", 3);
    char text[300];
    h_watch_last_text(w, "cy", text, sizeof text);
    cr_assert_str_eq(text, "secret", "the custom status shows again with the user");
}

Test(notify, two_hundred_users_one_each) {
    enum { N = 200 };
    char conn[32], user[32];
    setup_sentinel();
    for (int i = 0; i < N; i++) {
        snprintf(conn, sizeof conn, "c%d", i);
        snprintf(user, sizeof user, "u%03d", i);
        pd_event ev = h_ev_connect(i % 2 ? "s1" : "s2", conn, user, "web");
        h_event_pub(nc, "w1", &ev);
    }
    barrier();
    for (int i = 0; i < N; i++) {
        snprintf(user, sizeof user, "u%03d", i);
        cr_assert_eq(h_watch_count(w, user), 1, "user %s", user);
    }
    /* The whole server goes: every user goes offline after the delay, once. */
    send_ok(h_ev_server(PD_EV_SHUTDOWN, "s2"));
    send_ok(h_ev_server(PD_EV_SHUTDOWN, "s1"));
    cr_assert(H_POLL(h_watch_count(w, NULL) >= 2 * N + barrier_n, 5000));
    barrier();
    for (int i = 0; i < N; i++) {
        snprintf(user, sizeof user, "u%03d", i);
        cr_assert_eq(h_watch_count(w, user), 2, "user %s", user);
        cr_assert_eq(h_watch_last_status(w, user), PD_PUB_OFFLINE);
    }
    cr_assert(h_watch_ts_monotonic(w));
}

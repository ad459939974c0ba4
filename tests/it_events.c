/* it_events.c - every event type of docs/protocol.md section 1 through a real
 * nats-server and a real presenced, checked through queries. */
#include <criterion/criterion.h>
#include <string.h>
#include "harness.h"

static h_nats ns;
static h_node node;
static natsConnection *nc;

static const char *const fast_env[] = {
    "PRESENCE_IDLE_TIMEOUT_MS=300", "PRESENCE_OFFLINE_DELAY_MS=200",
    "PRESENCE_SERVER_TIMEOUT_MS=300", NULL,
};

static void setup(void) {
    h_nats_start(&ns);
    h_node_start(&node, &ns, "n1", fast_env);
    nc = h_connect(&ns);
}

static void teardown(void) {
    natsConnection_Destroy(nc);
    h_node_stop_clean(&node);
    h_nats_stop(&ns);
}

TestSuite(events, .init = setup, .fini = teardown, .timeout = 60);

static void send_ok(pd_event ev) {
    pd_reply rep;
    cr_assert(h_event(nc, "n1", &ev, &rep), "no reply to %s", pd_event_type_name(ev.type));
    cr_assert(rep.ok, "%s refused: %s %s", pd_event_type_name(ev.type), rep.code, rep.message);
}

static int status_of(const char *user) {
    pd_view v;
    cr_assert(h_get(nc, user, NULL, &v, NULL, 0));
    return (int)v.status;
}

static int devices_of(const char *user) {
    pd_view v;
    cr_assert(h_get(nc, user, NULL, &v, NULL, 0));
    return (int)v.devices;
}

Test(events, connect_then_disconnect_goes_offline_after_delay) {
    send_ok(h_ev_connect("s1", "c1", "alice", "web"));
    cr_assert_eq(status_of("alice"), PD_PUB_ONLINE);
    cr_assert_eq(devices_of("alice"), 1);
    send_ok(h_ev_conn(PD_EV_DISCONNECT, "s1", "c1"));
    cr_assert_eq(devices_of("alice"), 0);
    cr_assert_eq(status_of("alice"), PD_PUB_ONLINE, "kept during the offline delay");
    cr_assert(H_POLL(status_of("alice") == PD_PUB_OFFLINE, 3000));
    pd_view v;
    cr_assert(h_get(nc, "alice", NULL, &v, NULL, 0));
    cr_assert_gt(v.last_seen, 0);
}

Test(events, idle_then_activity) {
    send_ok(h_ev_connect("s1", "c1", "bob", "mobile"));
    send_ok(h_ev_conn(PD_EV_IDLE, "s1", "c1"));
    cr_assert_eq(status_of("bob"), PD_PUB_AWAY);
    send_ok(h_ev_conn(PD_EV_ACTIVITY, "s1", "c1"));
    cr_assert_eq(status_of("bob"), PD_PUB_ONLINE);
    /* No activity: idle after PRESENCE_IDLE_TIMEOUT_MS. */
    cr_assert(H_POLL(status_of("bob") == PD_PUB_AWAY, 3000));
}

Test(events, status_and_custom) {
    char text[300];
    pd_view v;
    send_ok(h_ev_connect("s1", "c1", "carol", "desktop"));
    send_ok(h_ev_status("carol", PD_CHOSEN_BUSY));
    cr_assert_eq(status_of("carol"), PD_PUB_BUSY);
    send_ok(h_ev_status("carol", PD_CHOSEN_INVISIBLE));
    cr_assert_eq(status_of("carol"), PD_PUB_OFFLINE);
    cr_assert(h_get(nc, "carol", "carol", &v, NULL, 0));
    cr_assert_eq(v.status, PD_PUB_INVISIBLE, "the user sees herself invisible");
    send_ok(h_ev_status("carol", PD_CHOSEN_AUTO));
    cr_assert_eq(status_of("carol"), PD_PUB_ONLINE);
    send_ok(h_ev_custom("carol", "in a meeting", ":calendar:", h_wall_ms() + 400));
    cr_assert(h_get(nc, "carol", NULL, &v, text, sizeof text));
    cr_assert_str_eq(text, "in a meeting");
    cr_assert(H_POLL(h_get(nc, "carol", NULL, &v, text, sizeof text) && text[0] == '\0', 3000),
              "custom status expires by itself");
}

Test(events, sync_adds_and_removes) {
    send_ok(h_ev_connect("s1", "old", "dave", "web"));
    pd_event ev = h_ev_server(PD_EV_SYNC, "s1");
    pd_sync_conn conns[2] = {
        {pd_str_c("k1"), pd_str_c("erin"), pd_str_c("web")},
        {pd_str_c("k2"), pd_str_c("erin"), pd_str_c("mobile")},
    };
    msgpack_sbuffer sb;
    pd_reply rep;
    msgpack_sbuffer_init(&sb);
    pd_event_encode(&sb, &ev, conns, 2);
    cr_assert(h_raw_request(nc, "presence.events.n1", sb.data, sb.size, &rep) && rep.ok);
    msgpack_sbuffer_destroy(&sb);
    cr_assert_eq(devices_of("erin"), 2);
    cr_assert_eq(devices_of("dave"), 0, "a conn the server no longer lists is removed");
}

Test(events, heartbeat_then_silence_disconnects_server) {
    send_ok(h_ev_server(PD_EV_HEARTBEAT, "s9"));
    send_ok(h_ev_connect("s9", "c1", "frank", "web"));
    cr_assert_eq(devices_of("frank"), 1);
    cr_assert(H_POLL(devices_of("frank") == 0, 3000), "server timeout disconnects");
    cr_assert(H_POLL(status_of("frank") == PD_PUB_OFFLINE, 3000));
}

Test(events, shutdown_disconnects_all) {
    send_ok(h_ev_connect("s2", "c1", "gina", "web"));
    send_ok(h_ev_connect("s2", "c2", "hank", "web"));
    send_ok(h_ev_server(PD_EV_SHUTDOWN, "s2"));
    cr_assert_eq(devices_of("gina"), 0);
    cr_assert_eq(devices_of("hank"), 0);
}

Test(events, seq_duplicates_are_ignored) {
    pd_event ev = h_ev_connect("s3", "c1", "ivan", "web");
    ev.has_seq = true;
    ev.seq = 5;
    send_ok(ev);
    pd_event dis = h_ev_conn(PD_EV_DISCONNECT, "s3", "c1");
    dis.has_seq = true;
    dis.seq = 5; /* not above the last: a duplicate */
    send_ok(dis);
    cr_assert_eq(devices_of("ivan"), 1);
    dis.seq = 6;
    send_ok(dis);
    cr_assert_eq(devices_of("ivan"), 0);
}

/* it_limits.c - the limits of a real presenced (docs/protocol.md section
 * 8, "Limits"): devices per user, users per node, message size, query
 * size, each refused with too_large and a message naming its setting,
 * changing nothing, counted in presenced_limit_rejections_total; and the
 * coalescing of notifications of a flapping user
 * (PRESENCE_NOTIFY_MIN_INTERVAL_MS): few, in ts order,
 * the last one the final state. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "harness.h"

#define INTERVAL_MS 100

static h_nats ns;
static h_node node;
static natsConnection *nc;
static int port;

static const char *const env[] = {
    "PRESENCE_METRICS_ADDR=127.0.0.1:0",  "PRESENCE_MAX_DEVICES_PER_USER=2",
    "PRESENCE_MAX_USERS_PER_NODE=4",      "PRESENCE_MAX_MSG_BYTES=512",
    "PRESENCE_MAX_QUERY_USERS=5",         "PRESENCE_NOTIFY_MIN_INTERVAL_MS=100",
    "PRESENCE_IDLE_TIMEOUT_MS=60000",     NULL};

static bool read_port(void) { return (port = h_metrics_port(node.log)) > 0; }

static void setup(void) {
    h_nats_start(&ns);
    h_node_start(&node, &ns, "l1", env);
    nc = h_connect(&ns);
    cr_assert(H_POLL(read_port(), 5000), "no metrics port in %s", node.log);
}

static void teardown(void) {
    natsConnection_Destroy(nc);
    h_node_stop_clean(&node);
    h_nats_stop(&ns);
}

TestSuite(limits, .init = setup, .fini = teardown, .timeout = 60);

static char text[1 << 16];

/* Fetches the metrics text into `text`. */
static void scrape(void) {
    cr_assert_eq(h_http_get(port, "/metrics", text, sizeof text), 200);
}

/* The value of `name` (labels included, as printed) in the last scrape,
 * -1 if absent. */
static double sample(const char *name) {
    double v;
    return h_metric_sample(text, name, &v) ? v : -1;
}

static double metric(const char *name) {
    scrape();
    return sample(name);
}

/* One scrape, rendered after the node applied `status` events in all, in
 * which nothing is held any more: the final notification has left. */
static bool all_sent_after(double status_events) {
    scrape();
    return sample("presenced_events_total{type=\"status\"}") == status_events &&
           sample("presenced_notifications_held") == 0;
}

#define REJECTIONS(limit) metric("presenced_limit_rejections_total{limit=\"" limit "\"}")

static void send_ok(pd_event ev) {
    pd_reply rep;
    cr_assert(h_event(nc, "l1", &ev, &rep), "no reply");
    cr_assert(rep.ok, "event refused: %s: %s", rep.code, rep.message);
}

/* Sends ev as a request and expects too_large with `setting` named. */
static void send_too_large(pd_event ev, const char *setting) {
    pd_reply rep;
    cr_assert(h_event(nc, "l1", &ev, &rep), "no reply");
    cr_assert_not(rep.ok, "accepted beyond %s", setting);
    cr_expect_str_eq(rep.code, "too_large");
    cr_expect(strstr(rep.message, setting) != NULL, "message '%s' names %s", rep.message,
              setting);
}

static uint32_t devices_of(const char *user) {
    pd_view v;
    cr_assert(h_get(nc, user, NULL, &v, NULL, 0), "get %s", user);
    return v.devices;
}

Test(limits, devices_per_user) {
    send_ok(h_ev_connect("s1", "c1", "amy", "web"));
    send_ok(h_ev_connect("s2", "c2", "amy", "mobile"));
    send_too_large(h_ev_connect("s1", "c3", "amy", "desktop"), "PRESENCE_MAX_DEVICES_PER_USER");
    /* A plain publish is refused the same way, only counted. */
    pd_event pub = h_ev_connect("s1", "c4", "amy", "web");
    h_event_pub(nc, "l1", &pub);
    send_ok(h_ev_conn(PD_EV_ACTIVITY, "s1", "c1")); /* handled after the publish */
    cr_expect_eq(devices_of("amy"), 2);
    cr_assert(H_POLL(REJECTIONS("devices_per_user") == 2, 3000), "rejections: %g",
              REJECTIONS("devices_per_user"));
    cr_expect_eq(metric("presenced_errors_total{code=\"too_large\"}"), 2);
    cr_expect_eq(metric("presenced_devices"), 2);
    /* A replacement under the same conn, and a connect after a disconnect, pass. */
    send_ok(h_ev_connect("s1", "c1", "amy", "tablet"));
    send_ok(h_ev_conn(PD_EV_DISCONNECT, "s2", "c2"));
    send_ok(h_ev_connect("s1", "c3", "amy", "desktop"));
    cr_expect_eq(devices_of("amy"), 2);
}

/* Four users with live devices at most; status and custom are not limited. */
Test(limits, users_per_node) {
    send_ok(h_ev_connect("s1", "c1", "u1", "web"));
    send_ok(h_ev_connect("s1", "c2", "u2", "web"));
    send_ok(h_ev_connect("s1", "c3", "u3", "web"));
    send_ok(h_ev_connect("s1", "c4", "u4", "web"));
    send_ok(h_ev_status("u5", PD_CHOSEN_AWAY));
    send_too_large(h_ev_connect("s1", "c5", "u5", "web"), "PRESENCE_MAX_USERS_PER_NODE");
    pd_view v;
    cr_assert(h_get(nc, "u5", "u5", &v, NULL, 0));
    cr_expect_eq(v.devices, 0);
    send_ok(h_ev_connect("s1", "c6", "u3", "web")); /* a live user's second device */
    send_ok(h_ev_conn(PD_EV_DISCONNECT, "s1", "c1"));
    send_ok(h_ev_connect("s1", "c5", "u5", "web")); /* u1 has no device left */
    cr_assert(H_POLL(REJECTIONS("users_per_node") == 1, 3000), "rejections: %g",
              REJECTIONS("users_per_node"));
    cr_expect_eq(metric("presenced_users"), 5);
}

Test(limits, message_size) {
    /* A connect whose meta makes it larger than the 512 bytes allowed. */
    char big[600];
    memset(big, 'x', sizeof big);
    msgpack_sbuffer meta;
    msgpack_sbuffer_init(&meta);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &meta, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    pd_pack_kv_str(&pk, "k", (pd_str){big, sizeof big});
    pd_event ev = h_ev_connect("s1", "c1", "mo", "web");
    ev.meta = (pd_str){meta.data, (uint32_t)meta.size};
    send_too_large(ev, "PRESENCE_MAX_MSG_BYTES");
    msgpack_sbuffer_destroy(&meta);
    cr_expect_eq(devices_of("mo"), 0);
    /* A query too: refused before it is decoded (this is not MessagePack). */
    pd_reply rep;
    cr_assert(h_raw_request(nc, "presence.query.get", big, sizeof big, &rep));
    cr_assert_not(rep.ok);
    cr_expect_str_eq(rep.code, "too_large");
    cr_expect(strstr(rep.message, "PRESENCE_MAX_MSG_BYTES") != NULL, "%s", rep.message);
    /* At the limit exactly: decoded (and refused for what it is). */
    cr_assert(h_raw_request(nc, "presence.events.l1", big, 512, &rep));
    cr_assert_not(rep.ok);
    cr_expect_str_neq(rep.code, "too_large", "512 bytes are allowed: %s", rep.message);
    cr_assert(H_POLL(REJECTIONS("msg_bytes") == 2, 3000), "rejections: %g",
              REJECTIONS("msg_bytes"));
}

/* Sends a get of n users (u0, u1, ...) and returns the reply. */
static natsMsg *get_n(int n) {
    static char names[8][16];
    pd_str users[8];
    for (int i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "u%d", i);
        users[i] = pd_str_c(names[i]);
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_query q = {.type = PD_Q_GET};
    pd_query_encode(&sb, &q, users, (uint32_t)n);
    natsMsg *m = h_request(nc, "presence.query.get", sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    cr_assert_not_null(m, "no reply to get");
    return m;
}

/* The length of the "users" array of a reply, -1 if it has none. */
static int64_t reply_users(natsMsg *m) {
    mp_reader r;
    uint32_t n, k;
    pd_str key;
    mpr_init(&r, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    if (!mpr_map(&r, &n)) return -1;
    for (uint32_t i = 0; i < n && pd_read_key(&r, &key); i++) {
        if (pd_str_eqc(key, "users")) return mpr_array(&r, &k) ? (int64_t)k : -1;
        if (!mpr_skip(&r)) return -1;
    }
    return -1;
}

static void expect_too_large(natsMsg *m, const char *what) {
    pd_reply rep;
    cr_assert_eq(pd_reply_decode(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), &rep),
                 PD_OK, "%s: not an ok/error reply", what);
    cr_assert_not(rep.ok, "%s accepted", what);
    cr_expect_str_eq(rep.code, "too_large", "%s", what);
    cr_expect(strstr(rep.message, "PRESENCE_MAX_QUERY_USERS") != NULL, "%s: %s", what,
              rep.message);
    natsMsg_Destroy(m);
}

Test(limits, query_size) {
    natsMsg *m = get_n(5);
    cr_expect_eq(reply_users(m), 5, "a get of five is answered");
    natsMsg_Destroy(m);
    expect_too_large(get_n(6), "a get of six");
    /* online: an explicit limit above the setting is refused... */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_query q = {.type = PD_Q_ONLINE, .limit = 6};
    pd_query_encode(&sb, &q, NULL, 0);
    m = h_request(nc, "presence.query.online", sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    cr_assert_not_null(m);
    expect_too_large(m, "online with limit 6");
    /* ...an absent one means the largest page allowed. */
    for (int i = 0; i < 4; i++) {
        char conn[16], user[16];
        snprintf(conn, sizeof conn, "c%d", i);
        snprintf(user, sizeof user, "u%d", i);
        send_ok(h_ev_connect("s1", conn, user, "web"));
    }
    m = h_request(nc, "presence.query.online", "\x80", 1);
    cr_assert_not_null(m);
    int64_t page = reply_users(m);
    natsMsg_Destroy(m);
    cr_expect(page >= 0 && page <= 5, "online page of %lld users", (long long)page);
    cr_assert(H_POLL(REJECTIONS("query_users") == 2, 3000), "rejections: %g",
              REJECTIONS("query_users"));
}

Test(limits, flapping_user_is_coalesced) {
    h_watch *w = h_watch_start(&ns, NULL);
    send_ok(h_ev_connect("s1", "c1", "flap", "web"));
    cr_assert(H_POLL(h_watch_count(w, "flap") == 1, 5000), "connect not announced");
    /* 150 changes as fast as they go (well within a second on any machine
     * that passes the rest), ending busy. */
    enum { CHANGES = 150 };
    uint64_t t0 = h_now_ms();
    for (int i = 0; i < CHANGES; i++) {
        pd_event ev = h_ev_status("flap", i % 2 ? PD_CHOSEN_AUTO : PD_CHOSEN_BUSY);
        h_event_pub(nc, "l1", &ev);
    }
    pd_event last = h_ev_status("flap", PD_CHOSEN_BUSY);
    send_ok(last); /* every change applied */
    uint64_t took = h_now_ms() - t0;
    /* Once nothing is held after the last change, the last notification
     * (it has left the node: it arrives) is the final state. */
    cr_assert(H_POLL(all_sent_after(CHANGES + 1), 5000), "a notification is still held");
    cr_assert(H_POLL(h_watch_last_status(w, "flap") == PD_PUB_BUSY, 5000),
              "final state not announced: last %d", h_watch_last_status(w, "flap"));
    cr_expect_gt(sample("presenced_notifications_coalesced_total"), 0);
    int got = h_watch_count(w, "flap");
    /* The connect, then at most one per interval while the changes came,
     * and one trailing (+1 for the interval the burst started in). */
    int bound = 1 + (int)(took / INTERVAL_MS) + 2;
    cr_expect_leq(got, bound, "%d notifications for %d changes in %llu ms", got, CHANGES,
                  (unsigned long long)took);
    cr_expect_lt(got, CHANGES / 4, "%d notifications for %d changes", got, CHANGES);
    cr_expect_geq(got, 2);
    cr_expect(h_watch_ts_monotonic(w));
    pd_view v;
    cr_assert(h_get(nc, "flap", NULL, &v, NULL, 0));
    cr_expect_eq(v.status, PD_PUB_BUSY);
    h_watch_stop(w);
}

/* it_queries.c - the queries of docs/protocol.md section 4 through a real
 * nats-server and presenced: get (public and self view), devices, online
 * (paged) and cluster. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include "harness.h"

static h_nats ns;
static h_node node;
static natsConnection *nc;

static void setup(void) {
    h_nats_start(&ns);
    h_node_start(&node, &ns, "q1", NULL);
    nc = h_connect(&ns);
}

static void teardown(void) {
    natsConnection_Destroy(nc);
    h_node_stop_clean(&node);
    h_nats_stop(&ns);
}

TestSuite(queries, .init = setup, .fini = teardown, .timeout = 60);

static void send_ok(pd_event ev) {
    pd_reply rep;
    cr_assert(h_event(nc, "q1", &ev, &rep) && rep.ok, "event refused: %s", rep.message);
}

/* Sends a query and returns the reply positioned in a reader over it. */
static natsMsg *query(const char *what, const pd_query *q, const pd_str *users, uint32_t n,
                      mp_reader *r) {
    msgpack_sbuffer sb;
    char subj[64];
    msgpack_sbuffer_init(&sb);
    pd_query_encode(&sb, q, users, n);
    snprintf(subj, sizeof subj, "presence.query.%s", what);
    natsMsg *m = h_request(nc, subj, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    cr_assert(m != NULL, "no reply to %s", what);
    mpr_init(r, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    return m;
}

static void expect_key(mp_reader *r, const char *key) {
    pd_str k;
    cr_assert(pd_read_key(r, &k), "reply is not a map of string keys");
    cr_assert(pd_str_eqc(k, key), "expected key %s, got %.*s", key, (int)k.n, k.p);
}

Test(queries, get_many_users_public_and_self) {
    send_ok(h_ev_connect("s1", "c1", "ann", "web"));
    send_ok(h_ev_connect("s1", "c2", "ann", "mobile"));
    send_ok(h_ev_connect("s1", "c3", "ben", "web"));
    send_ok(h_ev_status("ben", PD_CHOSEN_INVISIBLE));
    send_ok(h_ev_custom("ann", "lunch", ":pizza:", 0));

    pd_str users[3] = {pd_str_c("ann"), pd_str_c("ben"), pd_str_c("nobody")};
    pd_query q = {.type = PD_Q_GET};
    mp_reader r;
    uint32_t n;
    pd_view v;
    pd_err err;
    natsMsg *m = query("get", &q, users, 3, &r);
    cr_assert(mpr_map(&r, &n) && n == 2, "users and as_of");
    expect_key(&r, "users");
    cr_assert(mpr_array(&r, &n) && n == 3);
    cr_assert_eq(pd_view_decode(&r, &v, &err), PD_OK);
    cr_assert(pd_str_eqc(v.user, "ann") && v.status == PD_PUB_ONLINE && v.devices == 2);
    cr_assert(pd_str_eqc(v.text, "lunch") && pd_str_eqc(v.emoji, ":pizza:"));
    cr_assert_eq(pd_view_decode(&r, &v, &err), PD_OK);
    cr_assert(pd_str_eqc(v.user, "ben") && v.status == PD_PUB_OFFLINE && v.devices == 0,
              "an invisible user looks offline to others, devices hidden");
    cr_assert_eq(pd_view_decode(&r, &v, &err), PD_OK);
    cr_assert(pd_str_eqc(v.user, "nobody") && v.status == PD_PUB_OFFLINE && v.last_seen == 0);
    int64_t as_of;
    expect_key(&r, "as_of");
    cr_assert(mpr_int(&r, &as_of) && as_of > 1600000000000LL, "as_of is a wall-clock time");
    cr_assert(!v.stale, "alone, nothing is stale");
    natsMsg_Destroy(m);

    q.viewer = pd_str_c("ben");
    m = query("get", &q, &users[1], 1, &r);
    cr_assert(mpr_map(&r, &n) && n == 2);
    expect_key(&r, "users");
    cr_assert(mpr_array(&r, &n) && n == 1);
    cr_assert_eq(pd_view_decode(&r, &v, &err), PD_OK);
    cr_assert(v.status == PD_PUB_INVISIBLE && v.devices == 1, "the user sees himself");
    natsMsg_Destroy(m);
}

Test(queries, devices_lists_every_field) {
    pd_event ev = h_ev_connect("s7", "c1", "cat", "desktop");
    send_ok(ev);
    send_ok(h_ev_conn(PD_EV_IDLE, "s7", "c1"));
    send_ok(h_ev_connect("s8", "c2", "cat", "mobile"));
    pd_query q = {.type = PD_Q_DEVICES, .user = pd_str_c("cat")};
    mp_reader r;
    uint32_t n;
    pd_str s;
    pd_err err;
    natsMsg *m = query("devices", &q, NULL, 0, &r);
    cr_assert(mpr_map(&r, &n) && n == 3, "user, devices and as_of (no stale: alone)");
    expect_key(&r, "user");
    cr_assert(mpr_str(&r, &s) && pd_str_eqc(s, "cat"));
    expect_key(&r, "devices");
    cr_assert(mpr_array(&r, &n) && n == 2);
    int idle = 0, active = 0;
    for (uint32_t i = 0; i < 2; i++) {
        pd_device_view d;
        cr_assert_eq(pd_device_view_decode(&r, &d, &err), PD_OK);
        cr_assert(pd_str_eqc(d.node, "q1"));
        cr_assert_gt(d.connected_at, 0);
        cr_assert_geq(d.last_active, d.connected_at);
        if (pd_str_eqc(d.conn, "c1")) {
            cr_assert(pd_str_eqc(d.server, "s7") && pd_str_eqc(d.device, "desktop"));
            cr_assert_eq(d.state, PD_DEV_IDLE);
            idle++;
        } else {
            cr_assert(pd_str_eqc(d.conn, "c2") && pd_str_eqc(d.server, "s8"));
            cr_assert(pd_str_eqc(d.device, "mobile") && d.state == PD_DEV_ACTIVE);
            active++;
        }
    }
    cr_assert(idle == 1 && active == 1);
    int64_t as_of;
    expect_key(&r, "as_of");
    cr_assert(mpr_int(&r, &as_of) && as_of > 1600000000000LL);
    cr_assert_eq(mpr_remaining(&r), 0);
    natsMsg_Destroy(m);
}

/* Pages through online with the given limit; returns how many users were
 * seen, checking each page's size and that all are in the online set. */
static int page_online(uint32_t limit, int total, bool *seen) {
    char cursor[64] = "";
    int count = 0, pages = 0;
    do {
        pd_query q = {.type = PD_Q_ONLINE, .limit = limit, .cursor = pd_str_c(cursor)};
        mp_reader r;
        uint32_t n, k;
        pd_str key, u;
        natsMsg *m = query("online", &q, NULL, 0, &r);
        cr_assert(mpr_map(&r, &n) && (n == 1 || n == 2));
        expect_key(&r, "users");
        cr_assert(mpr_array(&r, &k));
        cr_assert_leq(k, limit, "page of %u over limit %u", k, limit);
        for (uint32_t i = 0; i < k; i++) {
            int idx;
            cr_assert(mpr_str(&r, &u));
            cr_assert(sscanf(u.p, "on%d", &idx) == 1 && idx >= 0 && idx < total,
                      "offline or unknown user %.*s listed", (int)u.n, u.p);
            cr_assert(!seen[idx], "user listed twice");
            seen[idx] = true;
            count++;
        }
        cursor[0] = '\0';
        if (n == 2) {
            cr_assert(pd_read_key(&r, &key) && pd_str_eqc(key, "cursor"));
            cr_assert(mpr_str(&r, &u) && u.n > 0 && u.n < sizeof cursor);
            memcpy(cursor, u.p, u.n);
            cursor[u.n] = '\0';
        }
        natsMsg_Destroy(m);
        cr_assert_lt(++pages, 10000);
    } while (cursor[0]);
    return count;
}

Test(queries, online_pages_through_everyone_once) {
    enum { N = 300 };
    char conn[32], user[32];
    static bool seen[N];
    for (int i = 0; i < N; i++) {
        snprintf(conn, sizeof conn, "c%d", i);
        snprintf(user, sizeof user, "on%d", i);
        pd_event ev = h_ev_connect("s1", conn, user, "web");
        h_event_pub(nc, "q1", &ev);
        /* Offline users that must never be listed: invisible ones. */
        snprintf(conn, sizeof conn, "x%d", i);
        snprintf(user, sizeof user, "hidden%d", i);
        ev = h_ev_connect("s1", conn, user, "web");
        h_event_pub(nc, "q1", &ev);
        ev = h_ev_status(user, PD_CHOSEN_INVISIBLE);
        h_event_pub(nc, "q1", &ev);
    }
    send_ok(h_ev_server(PD_EV_HEARTBEAT, "s1")); /* in order after the above */
    const uint32_t limits[] = {1, 7, 1000};
    for (size_t l = 0; l < sizeof limits / sizeof limits[0]; l++) {
        memset(seen, 0, sizeof seen);
        cr_assert_eq(page_online(limits[l], N, seen), N, "limit %u", limits[l]);
    }
}

Test(queries, cluster_lists_this_node) {
    send_ok(h_ev_connect("s1", "c1", "dan", "web"));
    pd_query q = {.type = PD_Q_CLUSTER};
    mp_reader r;
    uint32_t n, k, vcn;
    pd_str s, key;
    natsMsg *m = query("cluster", &q, NULL, 0, &r);
    cr_assert(mpr_map(&r, &n) && n == 2);
    expect_key(&r, "node");
    cr_assert(mpr_str(&r, &s) && pd_str_eqc(s, "q1"));
    expect_key(&r, "nodes");
    cr_assert(mpr_array(&r, &k) && k == 1);
    cr_assert(mpr_map(&r, &n) && n == 6);
    bool alive = false;
    int64_t devices = -1, users = -1, hb = -1;
    for (uint32_t i = 0; i < n; i++) {
        cr_assert(pd_read_key(&r, &key));
        if (pd_str_eqc(key, "node")) cr_assert(mpr_str(&r, &s) && pd_str_eqc(s, "q1"));
        else if (pd_str_eqc(key, "alive")) cr_assert(mpr_bool(&r, &alive));
        else if (pd_str_eqc(key, "devices")) cr_assert(mpr_int(&r, &devices));
        else if (pd_str_eqc(key, "users")) cr_assert(mpr_int(&r, &users));
        else if (pd_str_eqc(key, "last_heartbeat")) cr_assert(mpr_int(&r, &hb));
        else if (pd_str_eqc(key, "vc")) {
            int64_t c;
            cr_assert(mpr_map(&r, &vcn) && vcn == 1);
            cr_assert(mpr_str(&r, &s) && pd_str_eqc(s, "q1"));
            cr_assert(mpr_int(&r, &c) && c >= 1);
        } else cr_assert_fail("unexpected key %.*s", (int)key.n, key.p);
    }
    cr_assert(alive && devices == 1 && users == 1 && hb == 0);
    natsMsg_Destroy(m);
}

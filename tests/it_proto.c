/* it_proto.c - the contract additions for socket servers at real sizes
 * (schemas/events.md: batch, sync in parts, server moves, sync limits),
 * through a real nats-server and real presenced nodes.
 *
 * - batch: the good events of a batch apply in order, the bad ones are
 *   listed in a partial reply; an over-long batch is refused whole.
 * - a sync of 100k connections in parts: nothing is removed before its last
 *   part, then exactly the unlisted connection leaves.
 * - an unfinished sync in parts is dropped after its timeout, logged.
 * - a server moving from n1 to n2 with a smaller list leaves no ghost on
 *   either node.
 * - a sync that would push a user over PRESENCE_MAX_DEVICES_PER_USER is
 *   applied but for the excess connections, which the reply lists. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "harness.h"

#define SYNC_MS 100
#define STR_(x) #x
#define STR(x) STR_(x)

static h_nats ns;
static h_node nodes[2];
static natsConnection *nc;

static const char *const env[] = {
    "PRESENCE_SYNC_INTERVAL_MS=" STR(SYNC_MS), "PRESENCE_NODE_TIMEOUT_MS=600",
    "PRESENCE_OFFLINE_DELAY_MS=200", "PRESENCE_IDLE_TIMEOUT_MS=60000",
    "PRESENCE_SYNC_PARTS_TIMEOUT_MS=400", "PRESENCE_MAX_DEVICES_PER_USER=3",
    "PRESENCE_MAX_BATCH=100", NULL,
};

/* The 100k sync: the default parts timeout (30 s), as a loaded machine
 * may take longer than 400 ms between two parts. */
static const char *const env_big[] = {
    "PRESENCE_SYNC_INTERVAL_MS=" STR(SYNC_MS), "PRESENCE_OFFLINE_DELAY_MS=200",
    "PRESENCE_IDLE_TIMEOUT_MS=60000", NULL,
};

static void setup(void) {
    memset(nodes, 0, sizeof nodes);
    h_nats_start(&ns);
    nc = h_connect(&ns);
}

static void teardown(void) {
    natsConnection_Destroy(nc);
    for (int i = 1; i >= 0; i--) {
        if (h_node_running(&nodes[i])) h_node_stop_clean(&nodes[i]);
    }
    h_nats_stop(&ns);
}

TestSuite(proto, .init = setup, .fini = teardown, .timeout = 120);

/* ---- helpers -------------------------------------------------------------------- */

/* Sends raw bytes to presence.events.<node>; the reply message is kept in
 * *keep (the caller destroys it) so that rep->failed stays readable. */
static void request(const char *node, const void *buf, size_t len, pd_reply *rep,
                    natsMsg **keep) {
    char subj[64];
    snprintf(subj, sizeof subj, "presence.events.%s", node);
    natsMsg *m = h_request_ms(nc, subj, buf, len, 20000);
    cr_assert(m != NULL, "no reply from %s", node);
    cr_assert_eq(pd_reply_decode(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), rep),
                 PD_OK, "malformed reply");
    *keep = m;
}

static void send_ok(const char *node, pd_event ev) {
    pd_reply rep;
    cr_assert(h_event(nc, node, &ev, &rep), "no reply to %s", pd_event_type_name(ev.type));
    cr_assert(rep.ok, "%s refused: %s %s", pd_event_type_name(ev.type), rep.code, rep.message);
}

static int devices_of(const char *user) {
    pd_view v;
    cr_assert(h_get(nc, user, NULL, &v, NULL, 0));
    return (int)v.devices;
}

/* The devices node `who` reports for itself in a cluster answer from it,
 * or for `who` as seen from whichever node answers (-1: not found). */
static int64_t cluster_devices(const char *who) {
    h_cluster c;
    if (!h_cluster_get(nc, &c, 2000)) return -1;
    const h_cluster_node *e = h_cluster_find(&c, who);
    return e ? e->devices : -1;
}

/* Encodes one sync part: conns c<from>..c<to-1> of users u<i % users>. */
static void encode_part(msgpack_sbuffer *sb, const char *server, const char *sync_id, uint32_t part,
                        uint32_t parts, uint32_t from, uint32_t to, uint32_t users) {
    uint32_t n = to - from;
    pd_sync_conn *v = calloc(n, sizeof *v);
    char (*conn)[16] = calloc(n, sizeof *conn), (*user)[16] = calloc(n, sizeof *user);
    cr_assert(v && conn && user);
    for (uint32_t k = 0; k < n; k++) {
        snprintf(conn[k], sizeof conn[k], "c%u", from + k);
        snprintf(user[k], sizeof user[k], "u%u", (from + k) % users);
        v[k] = (pd_sync_conn){pd_str_c(conn[k]), pd_str_c(user[k]), pd_str_c("web")};
    }
    pd_event ev = {.type = PD_EV_SYNC, .server = pd_str_c(server)};
    if (sync_id) {
        ev.sync_id = pd_str_c(sync_id);
        ev.part = part;
        ev.parts = parts;
    }
    msgpack_sbuffer_clear(sb);
    pd_event_encode(sb, &ev, v, n);
    free(v);
    free(conn);
    free(user);
}

/* ---- batch ---------------------------------------------------------------------- */

Test(proto, batch_applies_good_events_and_lists_bad_ones) {
    h_node_start(&nodes[0], &ns, "n1", env);
    msgpack_sbuffer one, all;
    msgpack_sbuffer_init(&one);
    msgpack_sbuffer_init(&all);
    pd_event evs[] = {
        h_ev_connect("s1", "c1", "alice", "web"),
        h_ev_connect("s1", "c2", "a*b", "web"),        /* bad_id */
        h_ev_conn(PD_EV_ACTIVITY, "s1", "nope"),         /* unknown_conn */
        h_ev_status("alice", PD_CHOSEN_BUSY),
        h_ev_connect("s1", "c3", "bob", "mobile"),
        h_ev_conn(PD_EV_DISCONNECT, "s1", "c3"),         /* applies after c3's connect */
    };
    enum { N = sizeof evs / sizeof evs[0] };
    size_t off[N + 1];
    char *raw = NULL;
    size_t rawlen = 0;
    for (int i = 0; i < N; i++) {
        msgpack_sbuffer_clear(&one);
        pd_event_encode(&one, &evs[i], NULL, 0);
        raw = realloc(raw, rawlen + one.size);
        memcpy(raw + rawlen, one.data, one.size);
        off[i] = rawlen;
        rawlen += one.size;
    }
    off[N] = rawlen;
    pd_str ev_raw[N];
    for (int i = 0; i < N; i++) ev_raw[i] = (pd_str){raw + off[i], (uint32_t)(off[i + 1] - off[i])};
    pd_batch_encode(&all, ev_raw, N);

    pd_reply rep;
    natsMsg *m;
    request("n1", all.data, all.size, &rep, &m);
    cr_assert_not(rep.ok);
    cr_assert_str_eq(rep.code, "partial");
    cr_assert_eq(rep.nfailed, 2, "%s", rep.message);
    mp_reader it;
    pd_failure f;
    pd_reply_failed_iter(&it, &rep);
    cr_assert(pd_reply_next_failed(&it, &f));
    cr_assert_eq(f.i, 1);
    cr_assert_eq(f.code, PD_EBADID);
    cr_assert(pd_reply_next_failed(&it, &f));
    cr_assert_eq(f.i, 2);
    cr_assert_eq(f.code, PD_EUNKNOWNCONN);
    cr_assert(f.message.n > 0);
    cr_assert_not(pd_reply_next_failed(&it, &f));
    natsMsg_Destroy(m);

    pd_view v;
    cr_assert(h_get(nc, "alice", NULL, &v, NULL, 0));
    cr_assert_eq(v.devices, 1);
    cr_assert_eq(v.status, PD_PUB_BUSY, "the status after the bad events applied");
    cr_assert_eq(devices_of("bob"), 0, "bob's disconnect applied after his connect");

    /* All good: {"ok": true}. */
    ev_raw[0] = ev_raw[3];
    msgpack_sbuffer_clear(&all);
    pd_batch_encode(&all, ev_raw, 1);
    request("n1", all.data, all.size, &rep, &m);
    cr_assert(rep.ok, "%s %s", rep.code, rep.message);
    natsMsg_Destroy(m);

    /* Longer than PRESENCE_MAX_BATCH (100): refused whole, nothing applied. */
    pd_str many[101];
    pd_event cust = h_ev_custom("carol", "hi", NULL, 0);
    msgpack_sbuffer_clear(&one);
    pd_event_encode(&one, &cust, NULL, 0);
    for (int i = 0; i < 101; i++) many[i] = (pd_str){one.data, (uint32_t)one.size};
    msgpack_sbuffer_clear(&all);
    pd_batch_encode(&all, many, 101);
    request("n1", all.data, all.size, &rep, &m);
    cr_assert_not(rep.ok);
    cr_assert_str_eq(rep.code, "too_large", "%s", rep.message);
    natsMsg_Destroy(m);
    char text[64] = "";
    cr_assert(h_get(nc, "carol", NULL, &v, text, sizeof text));
    cr_assert_str_eq(text, "", "nothing of a refused batch applied");

    free(raw);
    msgpack_sbuffer_destroy(&one);
    msgpack_sbuffer_destroy(&all);
}

/* ---- sync in parts ------------------------------------------------------------- */

#define BIG 100000
#define PARTS 20

Test(proto, sync_of_100k_connections_in_parts) {
    h_node_start(&nodes[0], &ns, "n1", env_big);
    send_ok("n1", h_ev_connect("big", "stale", "zed", "web"));
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_reply rep;
    natsMsg *m;
    for (uint32_t p = 1; p <= PARTS; p++) {
        encode_part(&sb, "big", "r1", p, PARTS, (p - 1) * (BIG / PARTS), p * (BIG / PARTS),
                    BIG);
        cr_assert_lt(sb.size, 1048576u, "part %u fits a message", p);
        request("n1", sb.data, sb.size, &rep, &m);
        cr_assert(rep.ok, "part %u: %s %s", p, rep.code, rep.message);
        natsMsg_Destroy(m);
        if (p == PARTS - 1) {
            cr_assert_eq(devices_of("zed"), 1, "nothing leaves before the last part");
            cr_assert_eq(cluster_devices("n1"), BIG - BIG / PARTS + 1);
        }
    }
    cr_assert_eq(devices_of("zed"), 0, "the unlisted connection left");
    cr_assert_eq(cluster_devices("n1"), BIG);
    cr_assert_eq(devices_of("u0"), 1);
    cr_assert_eq(devices_of("u99999"), 1);

    /* A part out of order is refused and changes nothing. */
    encode_part(&sb, "big", "r2", 3, 4, 0, 10, BIG);
    request("n1", sb.data, sb.size, &rep, &m);
    cr_assert_not(rep.ok);
    cr_assert_str_eq(rep.code, "bad_value", "%s", rep.message);
    natsMsg_Destroy(m);
    cr_assert_eq(cluster_devices("n1"), BIG);
    msgpack_sbuffer_destroy(&sb);
}

Test(proto, unfinished_sync_is_dropped_after_its_timeout) {
    h_node_start(&nodes[0], &ns, "n1", env);
    send_ok("n1", h_ev_connect("s1", "old", "olga", "web"));
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_reply rep;
    natsMsg *m;
    encode_part(&sb, "s1", "r1", 1, 2, 0, 2, 2);
    request("n1", sb.data, sb.size, &rep, &m);
    cr_assert(rep.ok, "%s %s", rep.code, rep.message);
    natsMsg_Destroy(m);
    cr_assert(H_POLL(h_log_contains(nodes[0].log, "sync 'r1' of server 's1' dropped"), 5000));
    encode_part(&sb, "s1", "r1", 2, 2, 2, 4, 4);
    request("n1", sb.data, sb.size, &rep, &m);
    cr_assert_not(rep.ok, "the sync is gone: its last part has nothing to finish");
    cr_assert_str_eq(rep.code, "bad_value");
    natsMsg_Destroy(m);
    cr_assert_eq(devices_of("olga"), 1, "an unfinished sync removes nothing");
    cr_assert_eq(devices_of("u0"), 1, "what its first part added stays");
    msgpack_sbuffer_destroy(&sb);
}

/* ---- server moves ----------------------------------------------------------------- */

Test(proto, server_moving_to_another_node_leaves_no_ghost) {
    static const char *const ids[] = {"n1", "n2"};
    h_node_start(&nodes[0], &ns, "n1", env);
    h_node_start(&nodes[1], &ns, "n2", env);
    cr_assert(H_POLL(h_cluster_all_alive(nc, ids, 2, 4), 10000));
    char conn[8], user[8];
    for (int i = 1; i <= 6; i++) {
        snprintf(conn, sizeof conn, "c%d", i);
        snprintf(user, sizeof user, "m%d", i);
        send_ok("n1", h_ev_connect("mv", conn, user, "web"));
    }
    cr_assert(H_POLL(cluster_devices("n2") == 6 && cluster_devices("n1") == 6, 5000));

    /* The load balancer moved mv to n2, where it syncs c1..c3 (users m1..m3). */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_sync_conn v[3];
    char cs[3][8], us[3][8];
    for (int i = 0; i < 3; i++) {
        snprintf(cs[i], sizeof cs[i], "c%d", i + 1);
        snprintf(us[i], sizeof us[i], "m%d", i + 1);
        v[i] = (pd_sync_conn){pd_str_c(cs[i]), pd_str_c(us[i]), pd_str_c("web")};
    }
    pd_event ev = {.type = PD_EV_SYNC, .server = pd_str_c("mv")};
    pd_event_encode(&sb, &ev, v, 3);
    pd_reply rep;
    natsMsg *m;
    request("n2", sb.data, sb.size, &rep, &m);
    cr_assert(rep.ok, "%s %s", rep.code, rep.message);
    natsMsg_Destroy(m);
    msgpack_sbuffer_destroy(&sb);

    /* Both nodes' own counts (each answers for itself from its model). */
    uint64_t t0 = h_now_ms();
    bool n1_ok = false, n2_ok = false;
    while (!(n1_ok && n2_ok) && h_now_ms() < t0 + 5000) {
        h_cluster c;
        if (h_cluster_get(nc, &c, 2000)) {
            const h_cluster_node *e = h_cluster_find(&c, c.node);
            if (e && e->devices == 3) *(strcmp(c.node, "n1") == 0 ? &n1_ok : &n2_ok) = true;
        }
        h_sleep_ms(5);
    }
    cr_assert(n1_ok && n2_ok, "both nodes hold exactly the 3 listed connections");
    uint64_t took = h_now_ms() - t0;
    cr_log_info("ghosts gone everywhere after %llu ms", (unsigned long long)took);
    for (int k = 0; k < 10; k++) { /* the queue group: answers from both nodes */
        cr_assert_eq(devices_of("m4"), 0);
        cr_assert_eq(devices_of("m6"), 0);
        cr_assert_eq(devices_of("m1"), 1);
    }
    /* The listed ones are n2's now: disconnecting through n2 works. */
    send_ok("n2", h_ev_conn(PD_EV_DISCONNECT, "mv", "c1"));
}

/* ---- limits ------------------------------------------------------------------------ */

Test(proto, sync_over_the_device_limit_is_partial) {
    h_node_start(&nodes[0], &ns, "n1", env);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    /* c0..c4 of u0 (5 devices, the limit is 3) and c5 of u5. */
    pd_sync_conn v[6];
    char cs[6][8];
    for (int i = 0; i < 6; i++) {
        snprintf(cs[i], sizeof cs[i], "c%d", i);
        v[i] = (pd_sync_conn){pd_str_c(cs[i]), pd_str_c(i < 5 ? "u0" : "u5"), pd_str_c("web")};
    }
    pd_event ev = {.type = PD_EV_SYNC, .server = pd_str_c("s1")};
    pd_event_encode(&sb, &ev, v, 6);
    pd_reply rep;
    natsMsg *m;
    request("n1", sb.data, sb.size, &rep, &m);
    cr_assert_not(rep.ok);
    cr_assert_str_eq(rep.code, "partial", "%s", rep.message);
    cr_assert_eq(rep.nfailed, 2);
    mp_reader it;
    pd_failure f;
    pd_reply_failed_iter(&it, &rep);
    for (int k = 3; k <= 4; k++) {
        cr_assert(pd_reply_next_failed(&it, &f));
        cr_assert(pd_str_eqc(f.conn, cs[k]), "refused %.*s", (int)f.conn.n, f.conn.p);
        cr_assert_eq(f.code, PD_ETOOLARGE);
        cr_assert(f.message.n > 0);
    }
    natsMsg_Destroy(m);
    cr_assert_eq(devices_of("u0"), 3);
    cr_assert_eq(devices_of("u5"), 1, "the rest applied");
    msgpack_sbuffer_destroy(&sb);
}

/* ---- ver: a race-free watch --------------------------------------------------- */

/* The public status of status event i of the cycle below. */
static const pd_chosen CYCLE[] = {PD_CHOSEN_BUSY, PD_CHOSEN_AWAY, PD_CHOSEN_AUTO};
static const pd_public CYCLE_PUB[] = {PD_PUB_BUSY, PD_PUB_AWAY, PD_PUB_ONLINE};
#define CHANGES 1000

static int cycle_index(int status) {
    for (int k = 0; k < 3; k++) if ((int)CYCLE_PUB[k] == status) return k;
    return -1;
}

/* A watcher subscribes while the user changes status 1000 times, then asks
 * get; keeping only notifications with a ver above the get's gives every
 * later state once, in order, ending at the truth. */
Test(proto, watch_started_mid_burst_is_gap_free_and_duplicate_free) {
    static const char *const ids[] = {"n1", "n2"};
    static const char *const env_watch[] = {
        "PRESENCE_SYNC_INTERVAL_MS=" STR(SYNC_MS), "PRESENCE_NOTIFY_MIN_INTERVAL_MS=0",
        "PRESENCE_IDLE_TIMEOUT_MS=600000", NULL,
    };
    h_node_start(&nodes[0], &ns, "n1", env_watch);
    h_node_start(&nodes[1], &ns, "n2", env_watch);
    cr_assert(H_POLL(h_cluster_all_alive(nc, ids, 2, 4), 10000));
    send_ok("n1", h_ev_connect("s1", "c1", "w", "web"));
    natsConnection *wc = h_connect(&ns);
    natsSubscription *sub = NULL;
    pd_view got = {0};
    for (int i = 0; i < CHANGES; i++) {
        pd_event ev = h_ev_status("w", CYCLE[i % 3]);
        if (i == CHANGES / 3) { /* the watch starts in the middle */
            cr_assert_eq(natsConnection_SubscribeSync(&sub, wc, "presence.user.w"), NATS_OK);
            cr_assert_eq(natsConnection_Flush(wc), NATS_OK);
            /* The get must be as fresh as the subscription (the recipe of
             * schemas/notifications.md): a node that lags the announcer
             * would show a state older than notifications published
             * before the subscription was in place (a gap). */
            uint64_t subscribed = (uint64_t)h_wall_ms(), as_of = 0;
            cr_assert(H_POLL(h_get_fresh(nc, "w", NULL, &got, NULL, 0, &as_of) &&
                             as_of >= subscribed, 10000),
                      "no get as fresh as the subscription (as_of %llu)", (unsigned long long)as_of);
        }
        h_event_pub(nc, "n1", &ev);
    }
    int want_last = (int)CYCLE_PUB[(CHANGES - 1) % 3];
    int expect = cycle_index((int)got.status);
    cr_assert_geq(expect, 0, "the get shows a state of the cycle: %d", (int)got.status);
    uint64_t last_ver = got.ver;
    int kept = 0, last_status = (int)got.status;
    natsMsg *m = NULL;
    while (natsSubscription_NextMsg(&m, sub, 5000) == NATS_OK) {
        pd_view v;
        pd_err err;
        cr_assert_eq(pd_notification_decode(natsMsg_GetData(m),
                                            (size_t)natsMsg_GetDataLength(m), &v, &err), PD_OK);
        if (v.ver > got.ver) {
            cr_assert_gt(v.ver, last_ver, "a duplicate or an older state after %d", kept);
            expect = (expect + 1) % 3;
            cr_assert_eq((int)v.status, (int)CYCLE_PUB[expect], "a gap after %d kept", kept);
            last_ver = v.ver;
            last_status = (int)v.status;
            kept++;
        }
        natsMsg_Destroy(m);
        if (last_status == want_last && kept > 0) {
            pd_view now;
            cr_assert(h_get(nc, "w", NULL, &now, NULL, 0));
            if (now.ver == last_ver) break; /* the truth: nothing newer is coming */
        }
    }
    cr_log_info("get at ver %llu, then %d notifications kept", (unsigned long long)got.ver, kept);
    cr_assert_eq(last_status, want_last, "ends at the truth");
    cr_assert_gt(kept, 0);
    natsConnection_Close(wc); /* before the subscription (nats.c#637) */
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(wc);
}

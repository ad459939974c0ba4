/* it_slow.c - a node that falls behind (docs/failure-modes.md, node_slow.c)
 * with a real nats-server: its inbox is bounded to 16 messages here, so a
 * flood overruns it. The node must notice (log, metric), and repair what it
 * dropped: lost events through its socket servers' resync, lost deltas
 * through its peers' state transfers. It never silently diverges: the
 * tests end with the exact state. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include "harness.h"

#define FLOOD 3000

static h_nats ns;
static h_node nodes[2];
static natsConnection *nc;
static natsSubscription *resync_sub;
static int resyncs;

static void on_resync(natsConnection *c, natsSubscription *sub, natsMsg *m, void *ud) {
    (void)c;
    (void)sub;
    (void)ud;
    __atomic_add_fetch(&resyncs, 1, __ATOMIC_RELAXED);
    natsMsg_Destroy(m);
}

static int resyncs_seen(void) { return __atomic_load_n(&resyncs, __ATOMIC_RELAXED); }

static void setup(void) {
    memset(nodes, 0, sizeof nodes);
    resyncs = 0;
    resync_sub = NULL;
    h_nats_start(&ns);
    nc = h_connect(&ns);
}

static void teardown(void) {
    natsConnection_Destroy(nc); /* closes before the subscription goes (nats.c#637) */
    natsSubscription_Destroy(resync_sub);
    for (int i = 1; i >= 0; i--)
        if (h_node_running(&nodes[i])) h_node_stop_clean(&nodes[i]);
    h_nats_stop(&ns);
}

TestSuite(slow, .init = setup, .fini = teardown, .timeout = 90);

static void conn_name(int i, char *conn, char *user) {
    snprintf(conn, 16, "c%d", i);
    snprintf(user, 16, "u%d", i);
}

/* Devices in n1's reply to P.query.cluster for node id (its own count for
 * n1, the heartbeat's for a peer). */
static int64_t devices_of(const char *id) {
    h_cluster c;
    if (!h_cluster_get(nc, &c, 2000)) return -1;
    const h_cluster_node *e = h_cluster_find(&c, id);
    return e ? e->devices : -1;
}

/* Events published (no reply) far faster than an ASan build handles them:
 * connects of FLOOD users through server "flood", then activity on them
 * until the node reports dropped events. */
Test(slow, dropped_events_are_reported_and_repaired_by_resync) {
    static const char *const env[] = {"PRESENCE_INBOX_MAX_MSGS=16", NULL};
    char conn[16], user[16];
    cr_assert_eq(natsConnection_Subscribe(&resync_sub, nc, "presence.resync.n1", on_resync, NULL),
                 NATS_OK);
    h_node_start(&nodes[0], &ns, "n1", env);
    long from = h_log_size(nodes[0].log);
    int before = resyncs_seen();
    for (int i = 0; i < FLOOD; i++) {
        conn_name(i, conn, user);
        pd_event ev = h_ev_connect("flood", conn, user, "web");
        h_event_pub(nc, "n1", &ev);
    }
    natsConnection_Flush(nc);
    uint64_t until = h_now_ms() + 20000;
    while (!h_log_contains_from(nodes[0].log, from, "falling behind: dropped events=") &&
           h_now_ms() < until) {
        for (int i = 0; i < FLOOD; i++) {
            conn_name(i, conn, user);
            pd_event ev = h_ev_conn(PD_EV_ACTIVITY, "flood", conn);
            h_event_pub(nc, "n1", &ev);
        }
        natsConnection_Flush(nc);
    }
    cr_assert(h_log_contains_from(nodes[0].log, from, "falling behind: dropped events="),
              "n1 did not report dropping events (see %s)", nodes[0].log);
    cr_assert(H_POLL(resyncs_seen() > before, 10000), "n1 did not ask its socket servers to resync");
    cr_assert(h_log_contains_from(nodes[0].log, from, "events were dropped: asked socket servers"),
              "see %s", nodes[0].log);

    /* The socket server answers with its complete list. */
    pd_sync_conn *list = calloc(FLOOD, sizeof *list);
    static char names[FLOOD][2][16];
    cr_assert_not_null(list);
    for (int i = 0; i < FLOOD; i++) {
        conn_name(i, names[i][0], names[i][1]);
        list[i] = (pd_sync_conn){pd_str_c(names[i][0]), pd_str_c(names[i][1]), pd_str_c("web")};
    }
    pd_event sync = {.type = PD_EV_SYNC, .server = pd_str_c("flood")};
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_event_encode(&sb, &sync, list, FLOOD);
    pd_reply rep;
    bool ok = H_POLL(h_raw_request(nc, "presence.events.n1", sb.data, sb.size, &rep) && rep.ok,
                     10000);
    msgpack_sbuffer_destroy(&sb);
    free(list);
    cr_assert(ok, "the sync was not accepted");
    cr_assert(H_POLL(devices_of("n1") == FLOOD, 10000), "n1 holds %lld devices after the sync",
              (long long)devices_of("n1"));
}

/* n2 (inbox bound 16) is paused while n1 sends a delta per event; when it
 * resumes, the backlog arrives at once and overruns its inbox. Its peers'
 * state transfer must give it back every device. */
Test(slow, dropped_deltas_are_reported_and_repaired_by_state_transfer) {
    static const char *const env2[] = {"PRESENCE_INBOX_MAX_MSGS=16", NULL};
    char conn[16], user[16];
    h_node_start(&nodes[0], &ns, "n1", NULL);
    h_node_start(&nodes[1], &ns, "n2", env2);
    long from = h_log_size(nodes[1].log);
    int sent = 0;
    uint64_t until = h_now_ms() + 30000;
    while (!h_log_contains_from(nodes[1].log, from, "deltas=") && h_now_ms() < until) {
        h_node_pause(&nodes[1]);
        for (int k = 0; k < 500; k++, sent++) {
            pd_reply rep;
            conn_name(sent, conn, user);
            pd_event ev = h_ev_connect("s1", conn, user, "web");
            /* One request at a time: one delta each. */
            cr_assert(h_event(nc, "n1", &ev, &rep) && rep.ok, "connect %d refused", sent);
        }
        h_node_resume(&nodes[1]);
        H_POLL(h_log_contains_from(nodes[1].log, from, "deltas="), 2000);
    }
    cr_assert(h_log_contains_from(nodes[1].log, from, "deltas="),
              "n2 did not report dropping deltas (see %s)", nodes[1].log);
    cr_assert(H_POLL(devices_of("n1") == sent && devices_of("n2") == sent, 20000),
              "n1 has %lld devices, n2 %lld, %d were connected (see %s)",
              (long long)devices_of("n1"), (long long)devices_of("n2"), sent, nodes[1].log);
    /* And every one of them, as n2 answers it. */
    pd_view v;
    conn_name(sent - 1, conn, user);
    cr_assert(h_get(nc, user, NULL, &v, NULL, 0) && v.devices == 1);
}

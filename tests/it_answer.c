/* it_answer.c - one answer from every node (issue #13): three nodes, a
 * burst of connects, disconnects, statuses, custom statuses, meta and
 * activity sent through all three, a node restart, and then every query
 * asked of every node through its own subject P.query.<kind>.<node> must
 * give byte-identical answers (get, public and self views, `ver` included;
 * devices; every online page), and the cluster reply's users and devices
 * must agree. presencectl cluster --diff must then say so (exit 0). The
 * same after a node that missed deltas caught up by state transfer (the
 * stream purged, so that the peers are its only source), and after a node
 * declared down (paused past the node timeout) came back.
 *
 * Also: a devices answer larger than the NATS max payload is refused with
 * too_large (a nats-server with a small max_payload), and a per-node
 * subject of no query kind is refused with bad_value. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include "harness.h"
#include "base/clock.h"

#ifndef PRESENCECTL_BIN
#error "PRESENCECTL_BIN must name the presencectl binary under test"
#endif

#define NNODES 3
#define NUSERS 60
#define SYNC_MS 100

static const char *const ids[NNODES] = {"n1", "n2", "n3"};
static h_nats ns;
static h_redis rs;
static h_node nodes[NNODES];
static natsConnection *nc;
static const char *env[16];

static void setup(void) {
    memset(nodes, 0, sizeof nodes);
    h_nats_start(&ns);
    h_redis_start(&rs, ns.dir);
    nc = h_connect(&ns);
    int k = 0;
    env[k++] = "PRESENCE_SYNC_INTERVAL_MS=100";
    env[k++] = "PRESENCE_NODE_TIMEOUT_MS=600";
    env[k++] = "PRESENCE_SNAPSHOT_INTERVAL_MS=300";
    env[k++] = "PRESENCE_OFFLINE_DELAY_MS=300";
    env[k++] = "PRESENCE_SERVER_TIMEOUT_MS=60000";
    env[k++] = "PRESENCE_IDLE_TIMEOUT_MS=60000";
    /* Short steps, so that the burst's activity moves last_active. */
    env[k++] = "PRESENCE_ACTIVITY_RESOLUTION_MS=50";
    env[k++] = "PRESENCE_NOTIFY_MIN_INTERVAL_MS=0";
    env[k++] = rs.env;
    env[k] = NULL;
}

static void teardown(void) {
    natsConnection_Destroy(nc);
    for (int i = NNODES - 1; i >= 0; i--) {
        if (h_node_running(&nodes[i])) h_node_stop_clean(&nodes[i]);
    }
    h_redis_stop(&rs, SIGTERM);
    h_nats_stop(&ns);
}

TestSuite(answer, .init = setup, .fini = teardown, .timeout = 90);

static void send_ok(int node, pd_event ev) {
    pd_reply rep;
    cr_assert(h_event(nc, ids[node], &ev, &rep), "no reply from %s", ids[node]);
    cr_assert(rep.ok, "%s refused by %s: %s %s", pd_event_type_name(ev.type), ids[node],
              rep.code, rep.message);
}

/* The reply of node to a query of kind (payload q), malloc'd; NULL if none. */
static char *ask(int node, const char *kind, const msgpack_sbuffer *q, size_t *len) {
    char subj[128];
    snprintf(subj, sizeof subj, "presence.query.%s.%s", kind, ids[node]);
    natsMsg *m = h_request_ms(nc, subj, q ? q->data : NULL, q ? q->size : 0, 3000);
    if (m == NULL) return NULL;
    *len = (size_t)natsMsg_GetDataLength(m);
    char *out = malloc(*len + 1);
    memcpy(out, natsMsg_GetData(m), *len);
    natsMsg_Destroy(m);
    return out;
}

static char users[NUSERS][16];

/* A reply without its freshness (as_of, stale: each node's own, by
 * nature), re-encoded (malloc'd; the input is freed). Everything else,
 * get's `ver` included, must be the same bytes from every node. */
static char *comparable(char *r, size_t *len, bool get) {
    mp_reader rd;
    uint32_t k;
    pd_err err;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    if (r == NULL) return NULL;
    msgpack_sbuffer_init(&sb);
    if (!get) {
        pd_reply_strip_fresh(r, *len, &sb);
    } else if (pd_reply_top_decode(r, *len, "users", &rd, &k, NULL, NULL, &err) == PD_OK) {
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        pd_get_reply_begin(&pk, k, NULL);
        for (uint32_t i = 0; i < k; i++) {
            pd_view v;
            if (pd_view_decode(&rd, &v, &err) != PD_OK) {
                msgpack_sbuffer_destroy(&sb);
                return r;
            }
            v.stale = false;
            pd_get_reply_user(&pk, &v);
        }
        pd_get_reply_end(&pk, NULL);
    } else {
        msgpack_sbuffer_destroy(&sb);
        return r;
    }
    char *out = malloc(sb.size ? sb.size : 1);
    memcpy(out, sb.data, sb.size);
    *len = sb.size;
    msgpack_sbuffer_destroy(&sb);
    free(r);
    return out;
}

/* Asks every node the query; false (with why) unless all replies are the
 * same bytes. */
static bool same_everywhere(const char *kind, const msgpack_sbuffer *q, char *why, size_t cap) {
    size_t n0 = 0;
    bool get = strcmp(kind, "get") == 0;
    bool fresh = get || strcmp(kind, "devices") == 0;
    char *first = ask(0, kind, q, &n0);
    if (fresh) first = comparable(first, &n0, get);
    bool same = first != NULL;
    if (!same) snprintf(why, cap, "%s: no answer from %s", kind, ids[0]);
    for (int i = 1; same && i < NNODES; i++) {
        size_t n = 0;
        char *r = ask(i, kind, q, &n);
        if (fresh) r = comparable(r, &n, get);
        same = r != NULL && n == n0 && memcmp(r, first, n) == 0;
        if (!same) snprintf(why, cap, "%s: %s and %s differ", kind, ids[0], ids[i]);
        free(r);
    }
    free(first);
    return same;
}

static void query_get(msgpack_sbuffer *sb, const char *viewer) {
    pd_str u[NUSERS];
    pd_query q = {.type = PD_Q_GET};
    if (viewer) q.viewer = pd_str_c(viewer);
    for (int i = 0; i < NUSERS; i++) u[i] = pd_str_c(users[i]);
    msgpack_sbuffer_clear(sb);
    pd_query_encode(sb, &q, u, NUSERS);
}

/* Every online page (limit 7) from node; the pages concatenated. */
static bool online_pages_same(char *why, size_t cap) {
    char cursor[PD_CURSOR_MAX + 1] = "";
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    bool same = true;
    for (int page = 0; same && page < 100; page++) {
        pd_query q = {.type = PD_Q_ONLINE, .limit = 7, .cursor = pd_str_c(cursor)};
        msgpack_sbuffer_clear(&sb);
        pd_query_encode(&sb, &q, NULL, 0);
        same = same_everywhere("online", &sb, why, cap);
        if (!same) break;
        size_t n = 0;
        char *r = ask(0, "online", &sb, &n);
        mp_reader rd;
        uint32_t m, k;
        pd_str key, s;
        cursor[0] = '\0';
        mpr_init(&rd, r, n);
        if (r && mpr_map(&rd, &m) && pd_read_key(&rd, &key) && mpr_array(&rd, &k)) {
            for (uint32_t j = 0; j < k; j++) mpr_skip(&rd);
            if (m == 2 && pd_read_key(&rd, &key) && mpr_str(&rd, &s) && s.n <= PD_CURSOR_MAX) {
                memcpy(cursor, s.p, s.n);
                cursor[s.n] = '\0';
            }
        }
        free(r);
        if (cursor[0] == '\0') break;
    }
    msgpack_sbuffer_destroy(&sb);
    return same;
}

/* Each node's own cluster entry: users and devices agree. */
static bool cluster_counts_same(char *why, size_t cap) {
    int64_t users0 = -1, devices0 = -1;
    for (int i = 0; i < NNODES; i++) {
        size_t n = 0;
        char *r = ask(i, "cluster", NULL, &n);
        mp_reader rd;
        uint32_t m, k, e;
        pd_str key;
        int64_t u = -2, d = -2;
        mpr_init(&rd, r, n);
        bool ok = r && mpr_map(&rd, &m);
        for (uint32_t j = 0; ok && j < m; j++) {
            ok = pd_read_key(&rd, &key);
            if (ok && pd_str_eqc(key, "nodes") && mpr_array(&rd, &k) && k > 0 &&
                mpr_map(&rd, &e)) {
                for (uint32_t f = 0; ok && f < e; f++) {
                    ok = pd_read_key(&rd, &key);
                    if (ok && pd_str_eqc(key, "users")) ok = mpr_int(&rd, &u);
                    else if (ok && pd_str_eqc(key, "devices")) ok = mpr_int(&rd, &d);
                    else if (ok) ok = mpr_skip(&rd);
                }
                break;
            } else if (ok) ok = mpr_skip(&rd);
        }
        free(r);
        if (i == 0) users0 = u, devices0 = d;
        if (u < 0 || u != users0 || d != devices0) {
            snprintf(why, cap, "cluster: %s has %lld users %lld devices, %s %lld %lld", ids[i],
                     (long long)u, (long long)d, ids[0], (long long)users0, (long long)devices0);
            return false;
        }
    }
    return true;
}

/* Every query of every node the same. */
static bool all_same(char *why, size_t cap) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    bool same = true;
    query_get(&sb, NULL);
    same = same_everywhere("get", &sb, why, cap);
    for (int i = 0; same && i < NUSERS; i += 7) { /* self views, invisible included */
        query_get(&sb, users[i]);
        same = same_everywhere("get", &sb, why, cap);
    }
    for (int i = 0; same && i < NUSERS; i++) {
        pd_query q = {.type = PD_Q_DEVICES, .user = pd_str_c(users[i])};
        msgpack_sbuffer_clear(&sb);
        pd_query_encode(&sb, &q, NULL, 0);
        same = same_everywhere("devices", &sb, why, cap);
        if (!same) snprintf(why + strlen(why), cap - strlen(why), " (user %s)", users[i]);
    }
    msgpack_sbuffer_destroy(&sb);
    return same && online_pages_same(why, cap) && cluster_counts_same(why, cap);
}

/* The burst: through all three nodes, each user's events through several. */
static void burst(void) {
    static const char meta[] = "\x82\xa3" "app\xa3" "web\xa7" "version\xa5" "5.2.0";
    char conn[32], server[32];
    for (int i = 0; i < NUSERS; i++) {
        int a = i % NNODES, b = (i + 1) % NNODES;
        snprintf(users[i], sizeof users[i], "u%02d", i);
        snprintf(server, sizeof server, "ws-%s", ids[a]);
        snprintf(conn, sizeof conn, "c%02da", i);
        pd_event ev = h_ev_connect(server, conn, users[i], "web");
        if (i % 2 == 0) ev.meta = (pd_str){meta, sizeof meta - 1};
        send_ok(a, ev);
        if (i % 3 == 0) { /* a second device, on another node */
            snprintf(server, sizeof server, "ws-%s", ids[b]);
            snprintf(conn, sizeof conn, "c%02db", i);
            send_ok(b, h_ev_connect(server, conn, users[i], "mobile"));
        }
    }
    for (int round = 0; round < 3; round++) {
        h_sleep_ms(60); /* past a step of the activity resolution */
        for (int i = 0; i < NUSERS; i += 2) {
            int a = i % NNODES;
            snprintf(server, sizeof server, "ws-%s", ids[a]);
            snprintf(conn, sizeof conn, "c%02da", i);
            send_ok(a, h_ev_conn(round == 1 && i % 4 == 0 ? PD_EV_IDLE : PD_EV_ACTIVITY, server,
                                 conn));
        }
    }
    for (int i = 0; i < NUSERS; i++) {
        int a = i % NNODES, other = (i + 2) % NNODES;
        static const pd_chosen ch[] = {PD_CHOSEN_AUTO, PD_CHOSEN_AWAY, PD_CHOSEN_BUSY,
                                       PD_CHOSEN_INVISIBLE};
        if (i % 5 == 1) send_ok(other, h_ev_status(users[i], ch[i % 4]));
        if (i % 7 == 2) send_ok(other, h_ev_custom(users[i], "lunch", "\xf0\x9f\x8d\x94", 0));
        if (i % 11 == 3) send_ok((other + 1) % NNODES, h_ev_custom(users[i], "", "", 0));
        if (i % 4 == 1) { /* offline: the last_seen comes from the owner */
            snprintf(server, sizeof server, "ws-%s", ids[a]);
            snprintf(conn, sizeof conn, "c%02da", i);
            send_ok(a, h_ev_conn(PD_EV_DISCONNECT, server, conn));
        }
    }
}

Test(answer, every_node_answers_the_same_after_a_burst_and_a_restart) {
    for (int i = 0; i < NNODES; i++) h_node_start(&nodes[i], &ns, ids[i], env);
    cr_assert(H_POLL(h_cluster_all_alive(nc, ids, NNODES, 6), 5000), "nodes do not see each other");
    burst();
    char why[256] = "";
    cr_assert(H_POLL(all_same(why, sizeof why), 10000), "before the restart: %s", why);

    /* n2 killed and restarted: its devices come back from its snapshot and
     * stream, the peers' drop of its old life decides some last_seen. */
    h_sleep_ms(400); /* a snapshot that holds the burst */
    int st = h_node_stop(&nodes[1], SIGKILL);
    cr_assert(WIFSIGNALED(st), "n2 status %d", st);
    h_sleep_ms(800); /* past the node timeout: the peers drop its devices */
    h_node_restart(&nodes[1], &ns, env);
    cr_assert(H_POLL(h_cluster_all_alive(nc, ids, NNODES, 6), 5000), "n2 is not back");
    /* A few changes after the restart, through the restarted node too. */
    send_ok(1, h_ev_custom(users[4], "back", "", 0));
    send_ok(1, h_ev_connect("ws-n2", "c-late", users[5], "web"));
    send_ok(0, h_ev_status(users[6], PD_CHOSEN_BUSY));
    cr_assert(H_POLL(all_same(why, sizeof why), 15000), "after the restart: %s", why);
    /* Still the same one sync interval later (not a passing agreement). */
    h_sleep_ms(2 * SYNC_MS);
    cr_assert(all_same(why, sizeof why), "later: %s", why);

    /* The answers are the burst's, not empty agreement: spot checks. */
    pd_view v;
    char text[H_TEXT_CAP];
    cr_assert(h_get(nc, users[4], NULL, &v, text, sizeof text));
    cr_expect_str_eq(text, "back");
    cr_assert(h_get(nc, users[1], NULL, &v, text, sizeof text));
    cr_expect(v.status == PD_PUB_OFFLINE && v.last_seen > 0, "u01 offline with a last_seen");
    cr_assert(h_get(nc, users[5], NULL, &v, text, sizeof text));
    cr_expect(v.status == PD_PUB_ONLINE && v.devices >= 1, "u05 online");

    /* presencectl agrees: no difference, exit 0. */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s --server %s cluster --diff > %s/diff.out 2>&1", PRESENCECTL_BIN,
             ns.url, ns.dir);
    int rc = system(cmd);
    cr_expect(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "cluster --diff: exit %d (see %s/diff.out)",
              WEXITSTATUS(rc), ns.dir);
    snprintf(cmd, sizeof cmd, "%s/diff.out", ns.dir);
    cr_expect(h_log_contains(cmd, "no difference"), "see %s", cmd);

    /* presencectl --node N get: answered by that node (its subject). */
    snprintf(cmd, sizeof cmd, "%s --server %s --node n3 --json get u04 > %s/get.out 2>&1",
             PRESENCECTL_BIN, ns.url, ns.dir);
    rc = system(cmd);
    cr_expect(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "--node n3 get: exit %d", WEXITSTATUS(rc));
    snprintf(cmd, sizeof cmd, "%s/get.out", ns.dir);
    cr_expect(h_log_contains(cmd, "\"text\":\"back\""), "see %s", cmd);
    /* A node that does not exist: nobody answers that subject. */
    snprintf(cmd, sizeof cmd, "%s --server %s --node n9 --timeout 300 get u04 >/dev/null 2>&1",
             PRESENCECTL_BIN, ns.url);
    rc = system(cmd);
    cr_expect(WIFEXITED(rc) && WEXITSTATUS(rc) == 1, "--node n9: exit %d", WEXITSTATUS(rc));
}

/* Changes sent only through the nodes other than `down`: statuses,
 * custom statuses, new devices, and disconnects of devices those nodes
 * own. */
static void changes_without(int down, int round) {
    char conn[32], server[32];
    int live[2], k = 0;
    for (int i = 0; i < NNODES; i++) if (i != down) live[k++] = i;
    for (int i = 0; i < NUSERS; i++) {
        int via = live[(i + round) % 2];
        if (i % 6 == round % 6)
            send_ok(via, h_ev_status(users[i], round % 2 ? PD_CHOSEN_AWAY : PD_CHOSEN_AUTO));
        if (i % 6 == (round + 3) % 6) send_ok(via, h_ev_custom(users[i], "away a bit", "", 0));
        if (i % 5 == round % 5) {
            snprintf(server, sizeof server, "ws-%s", ids[via]);
            snprintf(conn, sizeof conn, "c%02dr%d", i, round);
            send_ok(via, h_ev_connect(server, conn, users[i], "tablet"));
        }
        int owner = i % NNODES;
        if (owner != down && i % 4 == 0 && round == 0) {
            snprintf(server, sizeof server, "ws-%s", ids[owner]);
            snprintf(conn, sizeof conn, "c%02da", i);
            send_ok(owner, h_ev_conn(PD_EV_DISCONNECT, server, conn));
        }
    }
}

/* `presencectl cluster --diff` exits 0 and says "no difference". */
static void expect_no_diff(const char *when) {
    char cmd[512], out[300];
    snprintf(out, sizeof out, "%s/diff-%s.out", ns.dir, when);
    snprintf(cmd, sizeof cmd, "%s --server %s cluster --diff > %s 2>&1", PRESENCECTL_BIN, ns.url,
             out);
    int rc = system(cmd);
    cr_expect(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "%s: cluster --diff exit %d (see %s)", when,
              WEXITSTATUS(rc), out);
    cr_expect(h_log_contains(out, "no difference"), "%s: see %s", when, out);
}

Test(answer, a_node_that_missed_deltas_answers_the_same_after_a_transfer) {
    env[9] = "PRESENCE_METRICS_ADDR=127.0.0.1:0";
    env[10] = NULL;
    for (int i = 0; i < NNODES; i++) h_node_start(&nodes[i], &ns, ids[i], env);
    cr_assert(H_POLL(h_cluster_all_alive(nc, ids, NNODES, 6), 5000), "nodes do not see each other");
    burst();
    char why[256] = "";
    cr_assert(H_POLL(all_same(why, sizeof why), 10000), "after the burst: %s", why);
    h_sleep_ms(400); /* a snapshot of n3 that holds the burst */
    int st = h_node_stop(&nodes[2], SIGKILL);
    cr_assert(WIFSIGNALED(st), "n3 status %d", st);
    /* n3 misses these, and the stream is purged: its snapshot is older,
     * so only its peers' state transfers can bring them. */
    changes_without(2, 0);
    changes_without(2, 1);
    natsMsg *m = NULL;
    cr_assert_eq(natsConnection_RequestString(&m, nc, "$JS.API.STREAM.PURGE.PRESENCE_DELTAS", "{}",
                                              3000),
                 NATS_OK, "purging the stream");
    cr_assert(strstr(natsMsg_GetData(m), "\"success\":true") != NULL, "purge: %s",
              natsMsg_GetData(m));
    natsMsg_Destroy(m);
    h_node_restart(&nodes[2], &ns, env);
    cr_assert(H_POLL(h_cluster_all_alive(nc, ids, NNODES, 6), 5000), "n3 is not back");
    cr_assert(H_POLL(all_same(why, sizeof why), 15000), "after n3's transfers: %s", why);
    h_sleep_ms(2 * SYNC_MS);
    cr_assert(all_same(why, sizeof why), "later: %s", why);
    /* It did come by state transfer. */
    static char body[65536];
    double done = 0;
    int port = h_metrics_port(nodes[2].log);
    cr_assert(port > 0 && h_http_get(port, "/metrics", body, sizeof body) == 200);
    cr_assert(h_metric_sample(body, "presenced_catchups_total", &done));
    cr_expect_geq(done, 1, "n3 completed %.0f state transfers", done);
    /* The changes n3 missed are in its answers. */
    pd_view v;
    char text[H_TEXT_CAP];
    h_query_node("n3");
    cr_assert(h_get(nc, users[3], NULL, &v, text, sizeof text));
    h_query_node(NULL);
    cr_expect_str_eq(text, "away a bit");
    expect_no_diff("transfer");
}

Test(answer, a_node_declared_down_and_back_answers_the_same) {
    for (int i = 0; i < NNODES; i++) h_node_start(&nodes[i], &ns, ids[i], env);
    cr_assert(H_POLL(h_cluster_all_alive(nc, ids, NNODES, 6), 5000), "nodes do not see each other");
    burst();
    char why[256] = "";
    cr_assert(H_POLL(all_same(why, sizeof why), 10000), "after the burst: %s", why);
    /* n3 frozen past the node timeout (600 ms) and the offline delay
     * (300 ms): n1 and n2 drop its devices, its users go offline there,
     * then it comes back in the same life with its devices. */
    long from = h_log_size(nodes[0].log);
    h_node_pause(&nodes[2]);
    changes_without(2, 0);
    cr_assert(H_POLL(h_log_contains_from(nodes[0].log, from, "node n3 is down"), 5000),
              "n1 did not declare n3 down");
    h_sleep_ms(400); /* past the offline delay of n3's users on n1 and n2 */
    h_node_resume(&nodes[2]);
    cr_assert(H_POLL(h_cluster_all_alive(nc, ids, NNODES, 6), 5000), "n3 is not back");
    cr_assert(H_POLL(all_same(why, sizeof why), 15000), "after n3 came back: %s", why);
    h_sleep_ms(2 * SYNC_MS);
    cr_assert(all_same(why, sizeof why), "later: %s", why);
    /* n3's devices are back everywhere: u02's only device is n3's. */
    pd_view v;
    char text[H_TEXT_CAP];
    cr_assert(h_get(nc, users[2], NULL, &v, text, sizeof text));
    cr_expect(v.devices >= 1, "u02 has %u devices", v.devices);
    expect_no_diff("down-and-back");
}

/* ---- cluster --diff on nodes that differ ------------------------------------------------- */

/* Two stand-in nodes, fa and fb, answered by this test (the diff's logic is
 * what is tested here; real nodes do not disagree on purpose): fa says
 * alice is online with one device, fb that she is offline. */
static void fake_reply(natsConnection *c, natsSubscription *sub, natsMsg *m, void *ud) {
    (void)sub;
    (void)ud;
    const char *subj = natsMsg_GetSubject(m);
    bool fb = strstr(subj, ".fb") != NULL;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (strstr(subj, "query.cluster") != NULL) {
        msgpack_pack_map(&pk, 2);
        pd_pack_kv_str(&pk, "node", pd_str_c(fb ? "fb" : "fa"));
        pd_pack_cstr(&pk, "nodes");
        msgpack_pack_array(&pk, 2);
        for (int i = 0; i < 2; i++) {
            bool b = fb ? i == 0 : i == 1;
            msgpack_pack_map(&pk, 4);
            pd_pack_kv_str(&pk, "node", pd_str_c(b ? "fb" : "fa"));
            pd_pack_cstr(&pk, "alive");
            msgpack_pack_true(&pk);
            pd_pack_kv_int(&pk, "users", 1);
            pd_pack_kv_int(&pk, "devices", b ? 0 : 1);
        }
    } else if (strstr(subj, "query.online") != NULL) {
        pd_online_reply_begin(&pk, fb ? 0 : 1, false);
        if (!fb) pd_online_reply_user(&pk, pd_str_c("alice"));
        pd_online_reply_end(&pk, (pd_str){NULL, 0});
    } else if (strstr(subj, "query.get") != NULL) {
        pd_view v = {.user = pd_str_c("alice"), .status = fb ? PD_PUB_OFFLINE : PD_PUB_ONLINE,
                     .text = pd_str_c(""), .emoji = pd_str_c(""), .last_seen = 5,
                     .devices = fb ? 0 : 1};
        pd_reply_fresh f = {fb ? 2000 : 1000, false};
        pd_get_reply_begin(&pk, 1, &f);
        pd_get_reply_user(&pk, &v);
        pd_get_reply_end(&pk, &f);
    } else {
        /* as_of and stale differ between nodes by nature: never a difference */
        pd_reply_fresh f = {fb ? 2000 : 1000, fb};
        pd_devices_reply_begin(&pk, pd_str_c("alice"), 0, &f);
        pd_devices_reply_end(&pk, &f);
    }
    natsConnection_Publish(c, natsMsg_GetReply(m), sb.data, (int)sb.size);
    msgpack_sbuffer_destroy(&sb);
    natsMsg_Destroy(m);
}

Test(answer, cluster_diff_lists_what_differs) {
    natsSubscription *subs[3] = {NULL};
    cr_assert_eq(natsConnection_Subscribe(&subs[0], nc, "presence.query.cluster", fake_reply, NULL),
                 NATS_OK);
    cr_assert_eq(natsConnection_Subscribe(&subs[1], nc, "presence.query.*.fa", fake_reply, NULL),
                 NATS_OK);
    cr_assert_eq(natsConnection_Subscribe(&subs[2], nc, "presence.query.*.fb", fake_reply, NULL),
                 NATS_OK);
    natsConnection_Flush(nc);
    char cmd[512], out[300];
    snprintf(out, sizeof out, "%s/diff.out", ns.dir);
    snprintf(cmd, sizeof cmd, "%s --server %s cluster --diff > %s 2>&1", PRESENCECTL_BIN, ns.url,
             out);
    int rc = system(cmd);
    cr_expect(WIFEXITED(rc) && WEXITSTATUS(rc) == 1, "exit %d (see %s)", WEXITSTATUS(rc), out);
    cr_expect(h_log_contains(out, "the nodes differ"), "see %s", out);
    cr_expect(h_log_contains(out, "user alice"), "alice listed (see %s)", out);
    cr_expect(h_log_contains(out, "1 differ"), "see %s", out);
    snprintf(cmd, sizeof cmd, "%s --server %s --json cluster --diff > %s 2>&1", PRESENCECTL_BIN,
             ns.url, out);
    rc = system(cmd);
    cr_expect(WIFEXITED(rc) && WEXITSTATUS(rc) == 1, "--json: exit %d", WEXITSTATUS(rc));
    cr_expect(h_log_contains(out, "\"differ\":[\"alice\"],\"same\":false"), "see %s", out);
    for (int i = 0; i < 3; i++) natsSubscription_Unsubscribe(subs[i]);
    natsConnection_Flush(nc);
    for (int i = 0; i < 3; i++) natsSubscription_Destroy(subs[i]);
}

/* ---- freshness: as_of and stale (issue 14) ---------------------------------------------------- */

typedef struct {
    bool ok, stale[2], dev_stale;
    uint64_t as_of, dev_as_of;
    uint32_t devices;
} fresh_answer;

/* n1's get of {sa, sb} and devices of sa, with their freshness. */
static fresh_answer ask_fresh(const char *sa, const char *sb) {
    fresh_answer fa = {0};
    pd_str two[2] = {pd_str_c(sa), pd_str_c(sb)};
    pd_query g = {.type = PD_Q_GET}, d = {.type = PD_Q_DEVICES, .user = two[0]};
    msgpack_sbuffer q;
    size_t n = 0;
    mp_reader items;
    uint32_t k = 0;
    pd_reply_fresh f;
    pd_err err;
    msgpack_sbuffer_init(&q);
    pd_query_encode(&q, &g, two, 2);
    char *r = ask(0, "get", &q, &n);
    fa.ok = r && pd_reply_top_decode(r, n, "users", &items, &k, NULL, &f, &err) == PD_OK && k == 2;
    for (uint32_t i = 0; fa.ok && i < 2; i++) {
        pd_view v;
        fa.ok = pd_view_decode(&items, &v, &err) == PD_OK;
        fa.stale[i] = v.stale;
    }
    fa.as_of = f.as_of;
    free(r);
    msgpack_sbuffer_clear(&q);
    pd_query_encode(&q, &d, NULL, 0);
    r = ask(0, "devices", &q, &n);
    fa.ok = fa.ok && r &&
            pd_reply_top_decode(r, n, "devices", &items, &fa.devices, NULL, &f, &err) == PD_OK;
    fa.dev_as_of = f.as_of;
    fa.dev_stale = f.stale;
    free(r);
    msgpack_sbuffer_destroy(&q);
    return fa;
}

/* n3 stopped (SIGSTOP) for longer than one sync interval but less than the
 * node timeout: n1 keeps n3's devices, says their users are stale and
 * others not, and its as_of stops at n3's last heartbeat; once n3 runs
 * again, both clear. */
Test(answer, a_stopped_peer_makes_its_users_stale_until_it_runs_again) {
    const char *env2[16];
    int k = 0;
    for (; env[k]; k++)
        env2[k] = strncmp(env[k], "PRESENCE_NODE_TIMEOUT_MS=", 25) == 0
                      ? "PRESENCE_NODE_TIMEOUT_MS=30000" : env[k];
    env2[k] = NULL;
    for (int i = 0; i < NNODES; i++) h_node_start(&nodes[i], &ns, ids[i], env2);
    cr_assert(H_POLL(h_cluster_all_alive(nc, ids, NNODES, 6), 5000), "nodes do not see each other");
    send_ok(2, h_ev_connect("ws-n3", "ca", "on-n3", "web"));
    send_ok(0, h_ev_connect("ws-n1", "cb", "on-n1", "web"));
    fresh_answer fa = {0};
    cr_assert(H_POLL((fa = ask_fresh("on-n3", "on-n1")).ok && fa.devices == 1, 5000),
              "n1 does not hold on-n3's device");
    uint64_t t0 = pd_now_ms();
    cr_expect(!fa.stale[0] && !fa.stale[1] && !fa.dev_stale, "nothing is stale while all run");
    cr_expect(fa.as_of > t0 - 60000 && fa.as_of <= t0 + 1000, "as_of %llu is about now (%llu)",
              (unsigned long long)fa.as_of, (unsigned long long)t0);

    h_node_pause(&nodes[2]);
    cr_assert(H_POLL((fa = ask_fresh("on-n3", "on-n1")).ok && fa.stale[0], 10000),
              "on-n3 never stale");
    cr_expect(!fa.stale[1], "on-n1's devices are all on a node heard from");
    cr_expect(fa.dev_stale && fa.devices == 1, "devices: still listed, and stale");
    uint64_t frozen = fa.as_of;
    /* Nothing comes from n3 while it is stopped: as_of cannot move. */
    h_sleep_ms(4 * SYNC_MS);
    fa = ask_fresh("on-n3", "on-n1");
    cr_assert(fa.ok && fa.stale[0]);
    cr_expect_eq(fa.as_of, frozen, "as_of moved while n3 was stopped");
    cr_expect_eq(fa.dev_as_of, frozen);

    h_node_resume(&nodes[2]);
    cr_assert(H_POLL((fa = ask_fresh("on-n3", "on-n1")).ok && !fa.stale[0] && !fa.dev_stale &&
                         fa.as_of > frozen, 10000),
              "still stale after n3 ran again (as_of %llu, frozen at %llu)",
              (unsigned long long)fa.as_of, (unsigned long long)frozen);
    cr_expect_eq(fa.devices, 1u, "on-n3 kept its device throughout");
}

/* ---- refusals --------------------------------------------------------------------------------- */

Test(answer, devices_larger_than_the_max_payload_refused_and_bad_kind) {
    /* A nats-server that carries at most 16 KiB: 30 devices with a 1 KiB
     * meta do not fit in one devices reply. */
    char conf[400], text[300];
    h_nats small;
    snprintf(conf, sizeof conf, "%s/small.conf", ns.dir);
    FILE *f = fopen(conf, "w");
    cr_assert(f != NULL);
    fprintf(f, "max_payload: 16384\njetstream { store_dir: \"%s/js-small\" }\n", ns.dir);
    fclose(f);
    h_nats_start_conf(&small, ns.dir, conf, NULL, "nats");
    const char *const small_env[] = {"PRESENCE_MAX_MSG_BYTES=16384", rs.env, NULL};
    h_node_start(&nodes[0], &small, "n1", small_env);
    natsConnection *c = h_connect(&small);
    static char meta[1000];
    meta[0] = (char)0x81;
    meta[1] = (char)0xa1;
    meta[2] = 'k';
    meta[3] = (char)0xda; /* str16 of 994 bytes */
    meta[4] = (char)(994 >> 8);
    meta[5] = (char)(994 & 0xff);
    memset(meta + 6, 'x', 994);
    for (int i = 0; i < 30; i++) {
        char conn[16];
        pd_reply rep;
        snprintf(conn, sizeof conn, "c%d", i);
        pd_event ev = h_ev_connect("ws", conn, "bob", "web");
        ev.meta = (pd_str){meta, sizeof meta};
        cr_assert(h_event(c, "n1", &ev, &rep) && rep.ok, "connect %d: %s", i, rep.message);
    }
    pd_query q = {.type = PD_Q_DEVICES, .user = pd_str_c("bob")};
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_query_encode(&sb, &q, NULL, 0);
    pd_reply rep;
    cr_assert(h_raw_request(c, "presence.query.devices.n1", sb.data, sb.size, &rep),
              "no answer: the reply was lost instead of refused");
    cr_expect(!rep.ok && strcmp(rep.code, "too_large") == 0, "%s: %s", rep.code, rep.message);
    cr_expect(strstr(rep.message, "max payload") != NULL, "%s", rep.message);
    /* get still answers (small), and the user is there. */
    cr_assert(h_get(c, "bob", NULL, &(pd_view){0}, text, sizeof text));
    /* A per-node subject of no query kind. */
    cr_assert(h_raw_request(c, "presence.query.nope.n1", "\x80", 1, &rep));
    cr_expect(!rep.ok && strcmp(rep.code, "bad_value") == 0, "%s: %s", rep.code, rep.message);
    msgpack_sbuffer_destroy(&sb);
    natsConnection_Destroy(c);
    h_node_stop_clean(&nodes[0]);
    h_nats_stop(&small);
}

/* ---- forgetting ---------------------------------------------------------------------------- */

/* Node i's own entry of its cluster reply: users (and devices). */
static int64_t node_users(int i, int64_t *devices) {
    size_t n = 0;
    char *r = ask(i, "cluster", NULL, &n);
    mp_reader rd;
    uint32_t m, k, e;
    pd_str key;
    int64_t u = -1;
    mpr_init(&rd, r, n);
    bool ok = r && mpr_map(&rd, &m);
    for (uint32_t j = 0; ok && j < m; j++) {
        ok = pd_read_key(&rd, &key);
        if (ok && pd_str_eqc(key, "nodes") && mpr_array(&rd, &k) && k > 0 && mpr_map(&rd, &e)) {
            for (uint32_t f = 0; ok && f < e; f++) {
                ok = pd_read_key(&rd, &key);
                if (ok && pd_str_eqc(key, "users")) ok = mpr_int(&rd, &u);
                else if (ok && pd_str_eqc(key, "devices")) ok = mpr_int(&rd, devices);
                else if (ok) ok = mpr_skip(&rd);
            }
            break;
        } else if (ok) ok = mpr_skip(&rd);
    }
    free(r);
    return u;
}

static bool users_everywhere(int64_t want) {
    for (int i = 0; i < NNODES; i++) {
        int64_t d = -1;
        if (node_users(i, &d) != want || d != 0) return false;
    }
    return true;
}

#define CHURN 10000

Test(answer, offline_users_are_forgotten_everywhere_and_stay_forgotten, .timeout = 120) {
    env[1] = "PRESENCE_NODE_TIMEOUT_MS=3000"; /* the churn loads the machine */
    env[9] = "PRESENCE_USER_RETENTION_MS=2000";
    env[10] = "PRESENCE_METRICS_ADDR=127.0.0.1:0";
    env[11] = NULL;
    for (int i = 0; i < NNODES; i++) h_node_start(&nodes[i], &ns, ids[i], env);
    cr_assert(H_POLL(h_cluster_all_alive(nc, ids, NNODES, 6), 5000), "nodes do not see each other");
    /* Two users who keep something of their own, through a third node. */
    send_ok(0, h_ev_connect("ws-n1", "keep-1", "keep.custom", "web"));
    send_ok(1, h_ev_connect("ws-n2", "keep-2", "keep.busy", "web"));
    send_ok(2, h_ev_custom("keep.custom", "on leave", "", 0));
    send_ok(2, h_ev_status("keep.busy", PD_CHOSEN_BUSY));
    send_ok(0, h_ev_conn(PD_EV_DISCONNECT, "ws-n1", "keep-1"));
    send_ok(1, h_ev_conn(PD_EV_DISCONNECT, "ws-n2", "keep-2"));
    /* 10k guests connect and leave, through the three nodes. */
    char user[32], server[32];
    for (int k = 0; k < CHURN; k++) {
        int i = k % NNODES;
        snprintf(user, sizeof user, "guest.%d", k);
        snprintf(server, sizeof server, "ws-%s", ids[i]);
        pd_event ev = h_ev_connect(server, user, user, "web");
        h_event_pub(nc, ids[i], &ev);
        ev = h_ev_conn(PD_EV_DISCONNECT, server, user);
        h_event_pub(nc, ids[i], &ev);
    }
    /* A request after them: each node has applied its share. */
    for (int i = 0; i < NNODES; i++) send_ok(i, h_ev_status("marker", PD_CHOSEN_BUSY));
    int64_t d = -1;
    /* After the retention: only the two keepers and the marker, everywhere. */
    cr_assert(H_POLL(users_everywhere(3), 15000), "n1 %lld n2 %lld n3 %lld users",
              (long long)node_users(0, &d), (long long)node_users(1, &d),
              (long long)node_users(2, &d));
    pd_view v;
    char text[H_TEXT_CAP];
    cr_assert(h_get(nc, "keep.custom", NULL, &v, text, sizeof text));
    cr_expect_str_eq(text, "on leave");
    cr_assert(h_get(nc, "keep.busy", "keep.busy", &v, text, sizeof text));
    cr_expect(v.last_seen > 0, "a kept user keeps its last_seen");
    cr_assert(h_get(nc, "guest.7", NULL, &v, text, sizeof text));
    cr_expect(v.status == PD_PUB_OFFLINE && v.last_seen == 0, "a forgotten guest: never seen");
    /* Each node forgot the guests (not: never had them). A node may miss
     * another's delta under this load and get its partition by transfer,
     * without the guests already forgotten there: at least its own. */
    for (int i = 0; i < NNODES; i++) {
        static char body[65536];
        double forgotten = 0;
        int port = h_metrics_port(nodes[i].log);
        cr_assert(port > 0 && h_http_get(port, "/metrics", body, sizeof body) == 200);
        cr_expect(h_metric_sample(body, "presenced_users_forgotten_total", &forgotten));
        cr_expect_geq(forgotten, CHURN / NNODES, "%s forgot %.0f users", ids[i], forgotten);
    }

    /* A restart (its snapshot and stream still hold the guests' ops) does
     * not bring them back: within a few ticks of its restore it holds what
     * the others hold, and keeps holding it. */
    h_sleep_ms(400); /* a snapshot after the forgetting */
    int st = h_node_stop(&nodes[1], SIGKILL);
    cr_assert(WIFSIGNALED(st));
    long from = h_log_size(nodes[1].log);
    h_node_restart(&nodes[1], &ns, env);
    cr_assert(H_POLL(h_log_contains_from(nodes[1].log, from, "restore done"), 10000));
    cr_assert(H_POLL(users_everywhere(3), 5000), "after the restart: n2 %lld users",
              (long long)node_users(1, &d));
    for (int k = 0; k < 5; k++) {
        h_sleep_ms(2 * SYNC_MS);
        cr_expect(users_everywhere(3), "the guests came back: n1 %lld n2 %lld n3 %lld",
                  (long long)node_users(0, &d), (long long)node_users(1, &d),
                  (long long)node_users(2, &d));
    }
    cr_assert(h_get(nc, "keep.custom", NULL, &v, text, sizeof text));
    cr_expect_str_eq(text, "on leave");
}

/* it_metrics.c - the Prometheus endpoint (PRESENCE_METRICS_ADDR) of a real
 * presenced: every metric is present, parses as Prometheus text, follows
 * the conventions (seconds, _total, histograms, process_*), and moves with
 * the traffic; the probes /healthz and /readyz answer for the loop and for
 * readiness (NATS gone: not ready, still alive). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "base/version.h"
#include "harness.h"
#include <signal.h>

static h_nats ns;
static h_node node;
static natsConnection *nc;
static int port;

static const char *const env[] = {"PRESENCE_METRICS_ADDR=127.0.0.1:0", NULL};

static bool read_port(void) { return (port = h_metrics_port(node.log)) > 0; }

static void setup(void) {
    h_nats_start(&ns);
    h_node_start(&node, &ns, "x1", env);
    nc = h_connect(&ns);
    cr_assert(H_POLL(read_port(), 5000), "no metrics port in %s", node.log);
}

static void teardown(void) {
    natsConnection_Destroy(nc);
    h_node_stop_clean(&node);
    h_nats_stop(&ns);
}

TestSuite(metrics, .init = setup, .fini = teardown, .timeout = 60);

static int http_get(const char *path, char *buf, size_t cap) {
    return h_http_get(port, path, buf, cap);
}

static bool sample(const char *text, const char *name, double *v) {
    return h_metric_sample(text, name, v);
}

/* Every non-comment line is "name{labels} number" or "name number". */
static void check_format(const char *text) {
    char line[512];
    for (const char *p = text; *p;) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        cr_assert_lt(len, sizeof line);
        memcpy(line, p, len);
        line[len] = '\0';
        p += len + (e != NULL);
        if (line[0] == '#' || line[0] == '\0') continue;
        char name[256];
        double v;
        cr_assert(sscanf(line, "%255s %lf", name, &v) == 2, "bad line: %s", line);
        cr_assert(strncmp(name, "presenced_", 10) == 0 || strncmp(name, "process_", 8) == 0,
                  "bad name: %s", name);
        /* Times in seconds: no family in milliseconds any more. */
        size_t base = strcspn(name, "{");
        cr_assert(base < 3 || strncmp(name + base - 3, "_ms", 3) != 0, "a time in ms: %s", name);
        /* Every sample belongs to a declared family. */
        char fam[256];
        snprintf(fam, sizeof fam, "%.*s", (int)base, name);
        char *suffix = strstr(fam, "_bucket");
        if (suffix == NULL) suffix = strstr(fam, "_count");
        if (suffix == NULL && strstr(fam, "_seconds_sum")) suffix = strstr(fam, "_sum");
        char decl[300];
        snprintf(decl, sizeof decl, "# TYPE %.*s ", suffix ? (int)(suffix - fam) : (int)strlen(fam),
                 fam);
        cr_assert(strstr(text, decl) != NULL, "no %s for %s", decl, name);
    }
}

/* The sample's value; -1 if absent (asserted absent only where said). */
static double metric(const char *name) {
    static char text[1 << 17];
    double v = -1;
    cr_assert_eq(http_get("/metrics", text, sizeof text), 200);
    if (!sample(text, name, &v)) return -1;
    return v;
}

Test(metrics, every_metric_present_and_well_formed) {
    static char text[1 << 17];
    cr_assert_eq(http_get("/metrics", text, sizeof text), 200);
    check_format(text);
    static const char *const names[] = {
        "presenced_events_total{type=\"connect\"}", "presenced_events_total{type=\"shutdown\"}",
        "presenced_duplicate_events_total", "presenced_errors_total{code=\"bad_msgpack\"}",
        "presenced_errors_total{code=\"internal\"}", "presenced_queries_total{query=\"get\"}",
        "presenced_devices", "presenced_users", "presenced_servers",
        "presenced_notifications_total", "presenced_deltas_sent_total",
        "presenced_deltas_applied_total", "presenced_catchups_total",
        "presenced_catchups_requested_total", "presenced_nodes_down_total", "presenced_ready",
        "presenced_nats_reconnects_total", "presenced_publish_errors_total",
        "presenced_uptime_seconds", "presenced_snapshots_total",
        "presenced_snapshot_duration_seconds", "presenced_redis_up",
        "presenced_replayed_deltas_total",
        "presenced_event_handling_seconds_count", "presenced_event_handling_seconds_sum",
        "presenced_event_handling_seconds_bucket{le=\"0.001\"}",
        "presenced_event_handling_seconds_bucket{le=\"+Inf\"}",
        "presenced_query_answering_seconds_count", "presenced_notification_latency_seconds_count",
        "presenced_sync_apply_latency_seconds_count", "presenced_build_info{version=\"" PD_VERSION "\"}",
        "process_cpu_seconds_total", "process_resident_memory_bytes",
        "process_virtual_memory_bytes", "process_start_time_seconds", "process_open_fds",
        "process_max_fds", "presenced_inbox_messages", "presenced_inbox_bytes",
        "presenced_users_by_status{status=\"online\"}",
        "presenced_users_by_status{status=\"away\"}",
        "presenced_users_by_status{status=\"busy\"}",
        "presenced_users_by_status{status=\"offline\"}",
        "presenced_restarts_total{devices=\"republished\"}",
        "presenced_restarts_total{devices=\"kept\"}", "presenced_peer_restarts_kept_total",
        "presenced_peer_restarts_refetched_total",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        double v;
        cr_assert(sample(text, names[i], &v), "missing %s", names[i]);
    }
    /* Per-peer families: declared even with no peer yet. */
    cr_assert(strstr(text, "# TYPE presenced_replication_lag_deltas gauge"));
    cr_assert(strstr(text, "# TYPE presenced_peer_heartbeat_age_seconds gauge"));
    cr_assert(strstr(text, "# TYPE presenced_event_handling_seconds histogram"));
    cr_assert(strstr(text, "# TYPE presenced_snapshot_age_seconds gauge"));
    double v;
    cr_assert_eq(sample(text, "presenced_build_info{version=\"" PD_VERSION "\"}", &v) ? v : 0, 1);
    cr_assert(sample(text, "process_start_time_seconds", &v) && v > 1.6e9 && v < 1e10, "%f", v);
    cr_assert(sample(text, "process_resident_memory_bytes", &v) && v > 1e5, "%f", v);
    cr_assert_eq(http_get("/nothing", text, sizeof text), 404);
    cr_assert_eq(http_get("/", text, sizeof text), 200);
    cr_assert(strstr(text, "/healthz") && strstr(text, "/readyz"), "%s", text);
}

Test(metrics, healthz_and_readyz) {
    static char text[4096];
    cr_assert(H_POLL(http_get("/readyz", text, sizeof text) == 200, 5000), "%s", text);
    cr_assert_str_eq(text, "ok\n");
    cr_assert_eq(http_get("/healthz", text, sizeof text), 200, "%s", text);
    /* NATS gone: alive, but not ready, and says why. */
    h_nats_kill(&ns, SIGKILL);
    cr_assert(H_POLL(http_get("/readyz", text, sizeof text) == 503, 5000), "%s", text);
    cr_assert(strstr(text, "not ready: NATS"), "%s", text);
    cr_assert_eq(http_get("/healthz", text, sizeof text), 200, "%s", text);
    h_nats_restart(&ns);
    cr_assert(H_POLL(http_get("/readyz", text, sizeof text) == 200, 15000), "%s", text);
}

Test(metrics, values_move) {
    pd_reply rep;
    pd_event ev = h_ev_connect("s1", "c1", "mia", "web");
    cr_assert(h_event(nc, "x1", &ev, &rep) && rep.ok);
    cr_assert(h_raw_request(nc, "presence.events.x1", "\xc1", 1, &rep) && !rep.ok);
    pd_view v;
    cr_assert(h_get(nc, "mia", NULL, &v, NULL, 0));
    /* The text is refreshed at most every 250 ms: the query may be counted
     * in a later refresh than the event. */
    cr_assert(H_POLL(metric("presenced_events_total{type=\"connect\"}") == 1 &&
                         metric("presenced_queries_total{query=\"get\"}") >= 1,
                     3000));
    cr_assert_eq(metric("presenced_devices"), 1);
    cr_assert_eq(metric("presenced_errors_total{code=\"bad_msgpack\"}"), 1);
    cr_assert_geq(metric("presenced_queries_total{query=\"get\"}"), 1);
    cr_assert_geq(metric("presenced_notifications_total"), 1);
    cr_assert_geq(metric("presenced_deltas_sent_total"), 1);
    cr_assert_eq(metric("presenced_ready"), 1);
    /* Latencies: one sample each for the event and the query at least;
     * +Inf counts them all. */
    cr_assert_geq(metric("presenced_event_handling_seconds_count"), 1);
    cr_assert_eq(metric("presenced_event_handling_seconds_bucket{le=\"+Inf\"}"),
                 metric("presenced_event_handling_seconds_count"));
    cr_assert_gt(metric("presenced_event_handling_seconds_sum"), 0);
    cr_assert_geq(metric("presenced_query_answering_seconds_count"), 1);
    cr_assert_geq(metric("presenced_notification_latency_seconds_count"), 1);
    cr_assert_eq(metric("presenced_users_by_status{status=\"online\"}"), 1);
    cr_assert_eq(metric("presenced_snapshot_age_seconds"), -1, "no Redis: no snapshot, no sample");
}

/* A second node's change reaches this one in a delta: the apply latency
 * is observed, and the peer's heartbeat age is in seconds. */
Test(metrics, sync_apply_latency_from_a_peer) {
    h_node peer;
    h_node_start(&peer, &ns, "x2", NULL);
    const char *ids[] = {"x1", "x2"};
    cr_assert(h_cluster_all_alive(nc, ids, 2, 50));
    pd_reply rep;
    pd_event ev = h_ev_connect("s2", "c9", "kai", "web");
    cr_assert(h_event(nc, "x2", &ev, &rep) && rep.ok);
    cr_assert(H_POLL(metric("presenced_sync_apply_latency_seconds_count") >= 1, 5000));
    double age = metric("presenced_peer_heartbeat_age_seconds{peer=\"x2\"}");
    cr_assert(age >= 0 && age < 30, "%f", age);
    h_node_stop_clean(&peer);
}

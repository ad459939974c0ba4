/* it_metrics.c - the Prometheus endpoint (PRESENCE_METRICS_ADDR) of a real
 * presenced: every metric is present, parses as Prometheus text, and moves
 * with the traffic. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "harness.h"

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
        cr_assert(strncmp(name, "presenced_", 10) == 0, "bad name: %s", name);
    }
}

static double metric(const char *name) {
    static char text[1 << 16];
    double v = -1;
    cr_assert_eq(http_get("/metrics", text, sizeof text), 200);
    cr_assert(sample(text, name, &v), "metric %s missing", name);
    return v;
}

Test(metrics, every_metric_present_and_well_formed) {
    static char text[1 << 16];
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
        "presenced_uptime_ms", "presenced_snapshots_total", "presenced_snapshot_age_ms",
        "presenced_snapshot_duration_ms", "presenced_redis_up", "presenced_replayed_deltas_total",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        double v;
        cr_assert(sample(text, names[i], &v), "missing %s", names[i]);
    }
    /* Per-peer families: declared even with no peer yet. */
    cr_assert(strstr(text, "# TYPE presenced_replication_lag_deltas gauge"));
    cr_assert(strstr(text, "# TYPE presenced_peer_heartbeat_age_ms gauge"));
    cr_assert_eq(http_get("/nothing", text, sizeof text), 404);
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
}

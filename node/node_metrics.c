/* node_metrics.c - renders the node's counters in Prometheus text format
 * for the metrics endpoint (see metrics.h). Runs on the loop thread, at
 * most every NODE_METRICS_EVERY_MS. Conventions: times in seconds (names
 * end in _seconds), counters in _total, latencies as histograms, and the
 * standard process_* family of the Prometheus client libraries.
 *
 * CHECKLIST: a new metric? A line in docs/operating.md's table and its name
 * in tests/it_metrics.c. */
#include <dirent.h>
#include <inttypes.h>
#include <sys/resource.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/clock.h"
#include "base/version.h"
#include "node.h"

#define NODE_METRICS_EVERY_MS 250

typedef struct {
    char *p;
    size_t n, cap;
    bool failed;
} textbuf;

__attribute__((format(printf, 2, 3)))
static void out(textbuf *b, const char *fmt, ...) {
    va_list ap;
    if (b->failed) return;
    for (;;) {
        va_start(ap, fmt);
        int k = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) { b->failed = true; return; }
        if (b->p && b->n + (size_t)k < b->cap) { b->n += (size_t)k; return; }
        size_t cap = b->cap ? b->cap * 2 : 8192;
        while (cap < b->n + (size_t)k + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) { b->failed = true; return; }
        b->p = p;
        b->cap = cap;
    }
}

static void family(textbuf *b, const char *name, const char *type, const char *help) {
    out(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(textbuf *b, const char *name, const char *help, uint64_t v) {
    family(b, name, "counter", help);
    out(b, "%s %" PRIu64 "\n", name, v);
}

static void gauge(textbuf *b, const char *name, const char *help, int64_t v) {
    family(b, name, "gauge", help);
    out(b, "%s %" PRId64 "\n", name, v);
}

static void gauge_f(textbuf *b, const char *name, const char *type, const char *help, double v) {
    family(b, name, type, help);
    out(b, "%s %.6f\n", name, v);
}

static void histogram(textbuf *b, const char *name, const char *help, const pd_hist *h) {
    family(b, name, "histogram", help);
    for (int i = 0; i < PD_HIST_BUCKETS; i++)
        out(b, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, pd_hist_bounds[i],
            pd_hist_cumulative(h, i));
    out(b, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n%s_sum %.6f\n%s_count %" PRIu64 "\n", name,
        h->count, name, (double)h->sum_us / 1e6, name, h->count);
}

static void render_latency(pd_node *n, textbuf *b) {
    histogram(b, "presenced_event_handling_seconds",
              "time to decode, check and apply one connection event", &n->stats.event_latency);
    histogram(b, "presenced_query_answering_seconds", "time to answer one query",
              &n->stats.query_latency);
    histogram(b, "presenced_notification_latency_seconds",
              "from a change (its ts) until its notification is published, coalescing included",
              &n->stats.notify_latency);
    histogram(b, "presenced_sync_apply_latency_seconds",
              "from a peer sending a delta (its clock) until this node applied it",
              &n->stats.apply_latency);
}

/* The process_* family of the Prometheus client libraries, from /proc. */
static void render_process(textbuf *b) {
    char buf[1024];
    double ticks = (double)sysconf(_SC_CLK_TCK), page = (double)sysconf(_SC_PAGESIZE);
    FILE *f = fopen("/proc/self/stat", "r");
    size_t got = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[got] = '\0';
    const char *p = strrchr(buf, ')'); /* after the command name, which may hold spaces */
    unsigned long long utime, stime, start, vsize, rss;
    if (p != NULL && ticks > 0 &&
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d "
               "%*d %*d %llu %llu %llu", &utime, &stime, &start, &vsize, &rss) == 5) {
        double btime = 0;
        FILE *s = fopen("/proc/stat", "r");
        char line[256];
        while (s && fgets(line, sizeof line, s))
            if (sscanf(line, "btime %lf", &btime) == 1) break;
        if (s) fclose(s);
        gauge_f(b, "process_cpu_seconds_total", "counter", "user and system CPU time spent",
                (double)(utime + stime) / ticks);
        gauge_f(b, "process_start_time_seconds", "gauge", "start time since the epoch",
                btime + (double)start / ticks);
        gauge_f(b, "process_virtual_memory_bytes", "gauge", "virtual memory size", (double)vsize);
        gauge_f(b, "process_resident_memory_bytes", "gauge", "resident memory size",
                (double)rss * page);
    }
    int64_t fds = 0;
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) fds += e->d_name[0] != '.';
    if (d) {
        closedir(d);
        gauge(b, "process_open_fds", "open file descriptors", fds - 1); /* less opendir's */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        gauge(b, "process_max_fds", "the limit of open file descriptors", (int64_t)rl.rlim_cur);
}

/* What waits, and what the node is: inbox depth, users by status, version. */
static void render_state(pd_node *n, textbuf *b, const pd_model_stats *ms) {
    uint64_t msgs, bytes;
    pd_inbox_depth(&n->inbox, &msgs, &bytes);
    gauge(b, "presenced_inbox_messages", "messages waiting for the loop (PRESENCE_INBOX_MAX_MSGS)",
          (int64_t)msgs);
    gauge(b, "presenced_inbox_bytes", "payload bytes waiting for the loop (PRESENCE_INBOX_MAX_BYTES)",
          (int64_t)bytes);
    family(b, "presenced_users_by_status", "gauge",
           "users this node holds state for, by the public status others see");
    static const pd_public shown[] = {PD_PUB_ONLINE, PD_PUB_AWAY, PD_PUB_BUSY, PD_PUB_OFFLINE};
    for (size_t i = 0; i < sizeof shown / sizeof shown[0]; i++)
        out(b, "presenced_users_by_status{status=\"%s\"} %" PRIu64 "\n",
            pd_public_name(shown[i]), ms->by_status[shown[i]]);
    family(b, "presenced_build_info", "gauge", "always 1; the version in a label");
    out(b, "presenced_build_info{version=\"%s\"} 1\n", PD_VERSION);
}

/* The answering node's entry comes first: its vector clock says what this
 * node has applied of each peer, kept here for the peers' rows. */
typedef struct {
    textbuf *b;
    bool have_self;
    int pass;
    uint32_t self_n;
    pd_str self_nodes[PD_VC_MAX];
    uint64_t self_applied[PD_VC_MAX];
} peer_ctx;

static uint64_t vc_of(const pd_node_view *nv, pd_str node) {
    for (uint32_t i = 0; i < nv->vc_n; i++) {
        if (pd_str_eq(nv->vc_nodes[i], node)) return nv->vc_counts[i];
    }
    return 0;
}

static void peer_metric(void *ud, const pd_node_view *nv) {
    peer_ctx *c = ud;
    if (!c->have_self) {
        c->have_self = true;
        c->self_n = nv->vc_n < PD_VC_MAX ? nv->vc_n : PD_VC_MAX;
        for (uint32_t i = 0; i < c->self_n; i++) {
            c->self_nodes[i] = nv->vc_nodes[i];
            c->self_applied[i] = nv->vc_counts[i];
        }
        return;
    }
    uint64_t theirs = vc_of(nv, nv->node), ours = 0;
    for (uint32_t i = 0; i < c->self_n; i++) {
        if (pd_str_eq(c->self_nodes[i], nv->node)) ours = c->self_applied[i];
    }
    const char *p = nv->node.p;
    int n = (int)nv->node.n;
    if (c->pass == 0) out(c->b, "presenced_peer_alive{peer=\"%.*s\"} %d\n", n, p, nv->alive);
    if (c->pass == 1)
        out(c->b, "presenced_replication_lag_deltas{peer=\"%.*s\"} %" PRIu64 "\n", n, p,
            theirs > ours ? theirs - ours : 0);
    if (c->pass == 2 && nv->last_heartbeat >= 0) /* -1: known only from others' clocks */
        out(c->b, "presenced_peer_heartbeat_age_seconds{peer=\"%.*s\"} %.3f\n", n, p,
            (double)nv->last_heartbeat / 1000.0);
}

static void render_peers(pd_node *n, textbuf *b) {
    static const char *const names[][2] = {
        {"presenced_peer_alive", "1 if the peer is up in this node's view"},
        {"presenced_replication_lag_deltas", "deltas the peer has sent that this node has not applied (as of its last heartbeat)"},
        {"presenced_peer_heartbeat_age_seconds", "time since the peer's last heartbeat"},
    };
    for (int pass = 0; pass < 3; pass++) {
        peer_ctx *c = calloc(1, sizeof *c);
        if (c == NULL) return;
        c->b = b;
        c->pass = pass;
        family(b, names[pass][0], "gauge", names[pass][1]);
        pd_repl_nodes(n->repl, n->now, peer_metric, c);
        free(c);
    }
}

/* Limits (docs/protocol.md section 8, "Limits"): refusals by limit, and
 * notification coalescing. */
static void render_limits(pd_node *n, textbuf *b, const pd_model_stats *ms) {
    family(b, "presenced_limit_rejections_total", "counter",
           "events and queries refused with too_large by a limit, by limit");
    const struct { const char *name; uint64_t v; } rows[] = {
        {"devices_per_user", ms->refused_devices},
        {"users_per_node", ms->refused_users},
        {"msg_bytes", n->stats.refused_msg_bytes},
        {"query_users", n->stats.refused_query_users},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        out(b, "presenced_limit_rejections_total{limit=\"%s\"} %" PRIu64 "\n", rows[i].name,
            rows[i].v);
    counter(b, "presenced_users_forgotten_total",
            "offline users with nothing else forgotten after PRESENCE_USER_RETENTION_MS",
            ms->forgotten_users);
    counter(b, "presenced_servers_forgotten_total",
            "silent socket servers forgotten with their seq after PRESENCE_USER_RETENTION_MS",
            ms->forgotten_servers);
    pd_notify_stats ns;
    pd_notifier_stats_get(pd_repl_notifier(n->repl), &ns);
    const pd_gate_stats gs = ns.gate;
    counter(b, "presenced_notifications_floors_total",
            "states announced again, unchanged, because a ver floor or a write raised them "
            "after a heal or a restart (schemas/notifications.md, \"ver\")", ns.floors);
    counter(b, "presenced_notifications_coalesced_total",
            "changes not announced because a later one of the same user replaced them "
            "(PRESENCE_NOTIFY_MIN_INTERVAL_MS)", gs.coalesced);
    gauge(b, "presenced_notifications_held", "users with a notification held for the end "
          "of their interval", (int64_t)gs.pending);
    counter(b, "presenced_notifications_uncoalesced_total",
            "notifications sent at once because the coalescing table was full", gs.overflow);
}

/* Uptime, snapshots (Redis) and the replay (JetStream). */
static void render_persist(pd_node *n, textbuf *b) {
    gauge_f(b, "presenced_uptime_seconds", "gauge", "time since start",
            (double)(n->now - n->started_at) / 1000.0);
    pd_persist_stats ps;
    node__persist_stats(n, &ps);
    counter(b, "presenced_snapshots_total", "snapshots written to Redis", ps.snapshots);
    counter(b, "presenced_snapshot_failures_total", "snapshots that could not be written",
            ps.snapshot_failures);
    family(b, "presenced_snapshot_age_seconds", "gauge",
           "time since the last snapshot was written (no sample before the first)");
    if (ps.last_snapshot_at)
        out(b, "presenced_snapshot_age_seconds %.3f\n",
            (double)(n->now - ps.last_snapshot_at) / 1000.0);
    gauge_f(b, "presenced_snapshot_duration_seconds", "gauge",
            "time the last snapshot took, build and write", (double)ps.last_snapshot_ms / 1000.0);
    gauge(b, "presenced_snapshot_bytes", "size of the last snapshot", (int64_t)ps.last_snapshot_bytes);
    gauge(b, "presenced_redis_up", "1 while the Redis connection for snapshots is up", ps.redis_up);
    gauge(b, "presenced_replaying", "1 while replaying the delta stream at start", ps.replaying);
    counter(b, "presenced_replayed_deltas_total", "deltas replayed from JetStream at start",
            ps.replayed_deltas);
}

static void render(pd_node *n, textbuf *b) {
    pd_model_stats ms;
    pd_repl_stats rs;
    pd_model_stats_get(n->model, &ms);
    pd_repl_stats_get(n->repl, &rs);
    family(b, "presenced_events_total", "counter", "connection events applied, by type");
    for (int t = 0; t < PD_EV_COUNT; t++)
        out(b, "presenced_events_total{type=\"%s\"} %" PRIu64 "\n", pd_event_type_name(t),
            n->stats.events[t]);
    counter(b, "presenced_duplicate_events_total", "events ignored as seq duplicates",
            n->stats.duplicates);
    family(b, "presenced_errors_total", "counter", "bad messages, by error code");
    static const pd_status codes[] = {PD_EBADMSGPACK, PD_EBADTYPE, PD_EMISSING, PD_EBADID,
                                      PD_ETOOLARGE, PD_EBADVALUE, PD_EUNKNOWNCONN, PD_EINTERNAL};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        uint64_t v = n->stats.errors[codes[i]];
        if (codes[i] == PD_EINTERNAL)
            v += n->stats.errors[PD_ENOMEM] + n->stats.errors[PD_EIO] + n->stats.errors[PD_ECONFIG];
        out(b, "presenced_errors_total{code=\"%s\"} %" PRIu64 "\n", pd_status_code(codes[i]), v);
    }
    family(b, "presenced_queries_total", "counter", "queries answered, by kind");
    static const char *const qn[] = {"get", "devices", "online", "cluster"};
    for (int q = 0; q < PD_Q_COUNT; q++)
        out(b, "presenced_queries_total{query=\"%s\"} %" PRIu64 "\n", qn[q], n->stats.queries[q]);
    gauge(b, "presenced_devices", "live devices in this node's view", (int64_t)ms.devices);
    gauge(b, "presenced_users", "users this node holds state for", (int64_t)ms.users);
    gauge(b, "presenced_servers", "socket servers known", (int64_t)ms.servers);
    gauge(b, "presenced_timers", "armed timers", (int64_t)ms.timers);
    counter(b, "presenced_notifications_total", "notifications published by this node",
            n->stats.notifications);
    render_limits(n, b, &ms);
    counter(b, "presenced_deltas_sent_total", "deltas sent", rs.deltas_sent);
    counter(b, "presenced_deltas_applied_total", "deltas applied from peers", rs.deltas_applied);
    counter(b, "presenced_deltas_duplicate_total", "deltas received twice", rs.deltas_dup);
    counter(b, "presenced_delta_gaps_total", "gaps detected in a peer's deltas", rs.gaps);
    counter(b, "presenced_catchups_requested_total", "state transfers asked for",
            rs.syncs_requested);
    counter(b, "presenced_catchups_total", "state transfers completed", rs.syncs_done);
    counter(b, "presenced_catchups_served_total", "state transfers served to peers",
            rs.syncs_served);
    counter(b, "presenced_nodes_down_total", "peers declared down", rs.nodes_down);
    counter(b, "presenced_announcers_muted_total",
            "peers that said ready but were not heard announcing: left out of the announcers",
            rs.announcers_muted);
    counter(b, "presenced_peer_suspicions_total",
            "peers suspected (silent past the node timeout)", rs.suspicions);
    counter(b, "presenced_peer_suspicions_cleared_total",
            "suspected peers heard again before being declared down", rs.suspicions_cleared);
    counter(b, "presenced_peer_silences_total",
            "live peers heard again after a silence of more than two heartbeats: what this node "
            "announced since was said again", rs.silences);
    family(b, "presenced_restarts_total", "counter",
           "restarts of this node from a snapshot, by what went to the peers: its devices "
           "again (republished) or not, the peers having kept them (kept)");
    out(b, "presenced_restarts_total{devices=\"republished\"} %" PRIu64 "\n",
        rs.restart_republished);
    out(b, "presenced_restarts_total{devices=\"kept\"} %" PRIu64 "\n", rs.restart_unrepublished);
    counter(b, "presenced_peer_restarts_kept_total",
            "restarted peers whose devices this node kept and found equal to what they restored",
            rs.restart_kept);
    counter(b, "presenced_peer_restarts_refetched_total",
            "restarted peers whose partition this node fetched after they said what they "
            "restored (it held other devices)", rs.restart_refetched);
    gauge(b, "presenced_ready", "1 once caught up and announcing", pd_repl_ready(n->repl));
    family(b, "presenced_refused_total", "counter",
           "messages from other nodes dropped unapplied, by reason (docs/failure-modes.md)");
    for (int k = 0; k < PD_REFUSE_COUNT; k++)
        out(b, "presenced_refused_total{reason=\"%s\"} %" PRIu64 "\n",
            pd_refuse_name((pd_refuse)k), rs.refused[k]);
    counter(b, "presenced_contradictions_total",
            "a peer claimed fewer of its deltas than we applied: partition fetched again",
            rs.contradictions);
    counter(b, "presenced_peers_forgotten_total", "peers down long enough to leave the table",
            rs.peers_forgotten);
    gauge(b, "presenced_clock_ahead",
          "1 while this node's wall clock is ahead of every peer's by more than the bound",
          rs.clock_ahead);
    render_peers(n, b);
    counter(b, "presenced_nats_reconnects_total", "reconnections to NATS",
            __atomic_load_n(&n->nats_reconnects, __ATOMIC_RELAXED));
    counter(b, "presenced_publish_errors_total", "publishes that failed", n->stats.publish_errors);
    const uint64_t *dr = n->slow.dropped;
    const struct { const char *kind; uint64_t v; } drops[] = {
        {"events", dr[SUB_EVENTS]},
        {"queries", dr[SUB_Q_GET] + dr[SUB_Q_DEVICES] + dr[SUB_Q_ONLINE] + dr[SUB_Q_CLUSTER] +
                        dr[SUB_Q_NODE]},
        {"deltas", dr[SUB_DELTA]},
        {"heartbeats", dr[SUB_HB]},
        {"state_transfer", dr[SUB_SYNC_REQ] + dr[SUB_SYNC_REPLY]},
    };
    family(b, "presenced_dropped_messages_total", "counter",
           "messages dropped while falling behind (inbox bounds, NATS pending limits); "
           "each kind is repaired (docs/failure-modes.md)");
    for (size_t k = 0; k < sizeof drops / sizeof drops[0]; k++)
        out(b, "presenced_dropped_messages_total{kind=\"%s\"} %" PRIu64 "\n", drops[k].kind,
            drops[k].v);
    counter(b, "presenced_resyncs_for_drops_total",
            "resyncs asked of the socket servers because events were dropped", n->slow.resyncs);
    render_latency(n, b);
    render_state(n, b, &ms);
    render_process(b);
    render_persist(n, b);
}

void node__update_metrics(pd_node *n, bool force) {
    if (n->metrics.d == NULL) return;
    if (!force && n->now < n->metrics_at + NODE_METRICS_EVERY_MS) return;
    n->metrics_at = n->now;
    const char *not_ready = NULL;
    if (!node__conn_up(n->nc))
        not_ready = "NATS is not connected";
    else if (!node__conn_up(n->pub))
        not_ready = "NATS is not connected (publishing connection)";
    else if (!pd_repl_ready(n->repl))
        not_ready = "catching up (restoring or listening to the peers)";
    pd_metrics_set_health(&n->metrics, pd_mono_ms(), not_ready);
    textbuf b = {0};
    render(n, &b);
    if (b.failed) {
        free(b.p);
        return;
    }
    pd_metrics_set(&n->metrics, b.p, b.n);
}

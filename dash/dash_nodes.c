/* dash_nodes.c - the nodes table of presence-dash (see dash_json.h): what
 * each node's latest heartbeat said, when it came, and a ring of rate
 * samples for the charts.
 *
 * Lag behind a peer: the peer's own `seq` (deltas it has sent, from its
 * latest heartbeat) minus the `seq` this node's vector clock holds for
 * the peer, when both name the same incarnation. The two heartbeats are up
 * to one sync interval apart, so a busy cluster shows a small lag that
 * comes and goes; only DASH_LAG_WARN or more, or a vector clock that does
 * not know the peer's incarnation, colours the card. */
#include <stdlib.h>
#include <string.h>
#include "dash_json.h"
#include "wire/codec_repl.h"

typedef struct {
    uint64_t t;                 /* when the second heartbeat of the pair came */
    double events, notes;       /* per second over the pair */
} sample;

typedef struct {
    char id[PD_ID_MAX + 1];
    uint64_t inc, seq;
} vc_ent;

typedef struct {
    char id[PD_ID_MAX + 1];
    uint32_t devices;
    int64_t last_msg;           /* node clock */
    bool watched;
} server_ent;

typedef struct {
    char id[PD_ID_MAX + 1];
    uint64_t inc, seq, devices, users, events, notes, snapshot_at;
    server_ent *servers;        /* the socket servers its latest heartbeat listed */
    uint32_t nservers;
    uint64_t last_hb;           /* when its latest heartbeat came (ms, our clock) */
    uint64_t wall;              /* the node's clock then (its `wall`; else last_hb) */
    bool ready, leaving;
    vc_ent *vc;
    uint32_t nvc;
    sample ring[DASH_SERIES_MAX];
    uint32_t head, count;       /* ring: next slot, samples held */
} node_ent;

struct dash_nodes {
    uint64_t node_timeout_ms, server_timeout_ms;
    node_ent *nodes[DASH_NODES_MAX];
    uint32_t n;
};

dash_nodes *dash_nodes_new(uint64_t node_timeout_ms, uint64_t server_timeout_ms) {
    dash_nodes *t = calloc(1, sizeof *t);
    if (t) {
        t->node_timeout_ms = node_timeout_ms;
        t->server_timeout_ms = server_timeout_ms;
    }
    return t;
}

static void ent_free(node_ent *e) {
    free(e->vc);
    free(e->servers);
    free(e);
}

void dash_nodes_free(dash_nodes *t) {
    if (t == NULL) return;
    for (uint32_t i = 0; i < t->n; i++) ent_free(t->nodes[i]);
    free(t);
}

static node_ent *find(const dash_nodes *t, pd_str id) {
    for (uint32_t i = 0; i < t->n; i++)
        if (pd_str_eqc(id, t->nodes[i]->id)) return t->nodes[i];
    return NULL;
}

static bool alive(const dash_nodes *t, const node_ent *e, uint64_t now) {
    return !e->leaving && now - e->last_hb <= t->node_timeout_ms;
}

/* How long before now (our clock) the node's clock read `at`: measured on
 * the node's clock up to its latest heartbeat, then on ours, so that
 * clocks that disagree do not skew it. Never negative. */
static uint64_t node_age(const node_ent *e, uint64_t at, uint64_t now) {
    uint64_t before = e->wall > at ? e->wall - at : 0;
    return before + (now > e->last_hb ? now - e->last_hb : 0);
}

/* Makes room: forgets the node down for the longest time; false if all are up. */
static bool evict_down(dash_nodes *t, uint64_t now) {
    uint32_t victim = t->n;
    for (uint32_t i = 0; i < t->n; i++)
        if (!alive(t, t->nodes[i], now) &&
            (victim == t->n || t->nodes[i]->last_hb < t->nodes[victim]->last_hb))
            victim = i;
    if (victim == t->n) return false;
    ent_free(t->nodes[victim]);
    t->nodes[victim] = t->nodes[--t->n];
    return true;
}

/* A rate sample from two heartbeats of one incarnation, if they allow one. */
static void add_sample(node_ent *e, const pd_heartbeat *hb, uint64_t now) {
    if (now <= e->last_hb || hb->events < e->events || hb->notifications < e->notes) return;
    double dt = (double)(now - e->last_hb) / 1000.0;
    e->ring[e->head] = (sample){now, (double)(hb->events - e->events) / dt,
                                (double)(hb->notifications - e->notes) / dt};
    e->head = (e->head + 1) % DASH_SERIES_MAX;
    if (e->count < DASH_SERIES_MAX) e->count++;
}

pd_status dash_nodes_heartbeat(dash_nodes *t, const void *buf, size_t len, uint64_t now_ms,
                               pd_err *err) {
    pd_status s = PD_ENOMEM;
    pd_heartbeat *hb = malloc(sizeof *hb);
    vc_ent *vc = NULL;
    server_ent *srv = NULL;
    if (hb == NULL || (s = pd_heartbeat_decode(buf, len, hb, err)) != PD_OK) goto done;
    node_ent *e = find(t, hb->node);
    if (e != NULL && hb->inc < e->inc) goto done; /* a late message of an older run */
    if (e == NULL && t->n == DASH_NODES_MAX && !evict_down(t, now_ms)) {
        s = PD_ETOOLARGE;
        pd_err_set(err, s, "more than %d nodes alive: '%.*s' is not shown", DASH_NODES_MAX,
                   (int)hb->node.n, hb->node.p);
        goto done;
    }
    s = PD_ENOMEM;
    if (hb->nvc && (vc = calloc(hb->nvc, sizeof *vc)) == NULL) goto done;
    if (hb->nservers && (srv = calloc(hb->nservers, sizeof *srv)) == NULL) goto done;
    if (e == NULL) {
        if ((e = calloc(1, sizeof *e)) == NULL) goto done;
        memcpy(e->id, hb->node.p, hb->node.n);
        t->nodes[t->n++] = e;
    }
    for (uint32_t i = 0; i < hb->nservers; i++) {
        memcpy(srv[i].id, hb->servers[i].id.p, hb->servers[i].id.n);
        srv[i].devices = hb->servers[i].devices;
        srv[i].last_msg = hb->servers[i].last_msg;
        srv[i].watched = hb->servers[i].watched;
    }
    free(e->servers);
    e->servers = srv;
    srv = NULL;
    e->nservers = hb->nservers;
    for (uint32_t i = 0; i < hb->nvc; i++) {
        memcpy(vc[i].id, hb->vc[i].node.p, hb->vc[i].node.n);
        vc[i].inc = hb->vc[i].inc;
        vc[i].seq = hb->vc[i].seq;
    }
    if (hb->inc == e->inc) add_sample(e, hb, now_ms);
    else e->count = e->head = 0; /* a new run: its counters start again */
    free(e->vc);
    e->vc = vc;
    vc = NULL;
    e->nvc = hb->nvc;
    e->inc = hb->inc;
    e->seq = hb->seq;
    e->devices = hb->devices;
    e->users = hb->users;
    e->events = hb->events;
    e->notes = hb->notifications;
    e->snapshot_at = hb->snapshot_at;
    e->ready = hb->ready;
    e->leaving = hb->leaving;
    e->last_hb = now_ms;
    e->wall = hb->wall ? hb->wall : now_ms;
    s = PD_OK;
done:
    free(vc);
    free(srv);
    free(hb);
    return s;
}

uint64_t dash_nodes_next_change(const dash_nodes *t, uint64_t now_ms) {
    uint64_t next = UINT64_MAX;
    for (uint32_t i = 0; i < t->n; i++) {
        const node_ent *e = t->nodes[i];
        uint64_t late = e->last_hb + t->node_timeout_ms / 2 + 1;
        uint64_t down = e->last_hb + t->node_timeout_ms + 1;
        if (e->leaving) continue;
        if (late > now_ms && late < next) next = late;
        if (down > now_ms && down < next) next = down;
    }
    return next;
}

/* ---- the table as JSON ---------------------------------------------------------- */

/* [{"peer", "behind"}]: behind is null when e's clock lacks the peer's run. */
static json_t *lag_json(const dash_nodes *t, const node_ent *e, uint64_t now, bool *warn) {
    json_t *a = json_array();
    for (uint32_t i = 0; a && i < t->n; i++) {
        const node_ent *p = t->nodes[i];
        if (p == e || !alive(t, p, now)) continue;
        json_t *behind = json_null();
        for (uint32_t k = 0; k < e->nvc; k++) {
            if (strcmp(e->vc[k].id, p->id) != 0) continue;
            if (e->vc[k].inc > p->inc) behind = json_integer(0); /* we missed a heartbeat */
            else if (e->vc[k].inc == p->inc)
                behind = json_integer(p->seq > e->vc[k].seq ? (json_int_t)(p->seq - e->vc[k].seq)
                                                            : 0);
        }
        if (json_is_null(behind) || json_integer_value(behind) >= DASH_LAG_WARN) *warn = true;
        json_array_append_new(a, json_pack("{s:s, s:o}", "peer", p->id, "behind", behind));
    }
    return a;
}

/* {"t": [...], "events": [...], "notifications": [...]}: the window's samples,
 * oldest first, rates rounded to 0.1/s. */
static json_t *series_json(const node_ent *e, uint64_t now) {
    json_t *ts = json_array(), *ev = json_array(), *nt = json_array();
    for (uint32_t i = 0; i < e->count; i++) {
        const sample *s = &e->ring[(e->head + DASH_SERIES_MAX - e->count + i) % DASH_SERIES_MAX];
        if (s->t + DASH_WINDOW_MS < now) continue;
        json_array_append_new(ts, json_integer((json_int_t)s->t));
        json_array_append_new(ev, json_real((double)(long long)(s->events * 10 + 0.5) / 10));
        json_array_append_new(nt, json_real((double)(long long)(s->notes * 10 + 0.5) / 10));
    }
    return json_pack("{s:o, s:o, s:o}", "t", ts, "events", ev, "notifications", nt);
}

static json_t *node_json(const dash_nodes *t, const node_ent *e, uint64_t now) {
    uint64_t age = now > e->last_hb ? now - e->last_hb : 0;
    bool up = alive(t, e, now), warn = false;
    const char *state = e->leaving ? "down" : !up ? "down" : !e->ready ? "warming"
                      : age > t->node_timeout_ms / 2 ? "late" : "up";
    const char *why = e->leaving ? "it said it is leaving"
                    : !up ? "no heartbeat within the node timeout" : "";
    json_t *lag = lag_json(t, e, now, &warn);
    const sample *last = e->count ? &e->ring[(e->head + DASH_SERIES_MAX - 1) % DASH_SERIES_MAX]
                                  : NULL;
    json_t *snap = e->snapshot_at == 0 ? json_null()
                 : json_integer((json_int_t)node_age(e, e->snapshot_at, now));
    warn = up && (warn || strcmp(state, "up") != 0);
    return json_pack("{s:s, s:s, s:s, s:b, s:b, s:b, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
                     "s:o, s:o, s:f, s:f, s:o}",
                     "node", e->id, "state", state, "why", why, "alive", up, "ready", e->ready,
                     "leaving", e->leaving, "warn", warn, "inc", (json_int_t)e->inc,
                     "seq", (json_int_t)e->seq, "devices", (json_int_t)e->devices,
                     "users", (json_int_t)e->users, "events", (json_int_t)e->events,
                     "notifications", (json_int_t)e->notes, "hb_age_ms", (json_int_t)age,
                     "snapshot_age_ms", snap, "lag", lag,
                     "events_per_s", last && up ? last->events : 0.0,
                     "notifications_per_s", last && up ? last->notes : 0.0,
                     "series", series_json(e, now));
}

static int by_id(const void *a, const void *b) {
    return strcmp((*(node_ent *const *)a)->id, (*(node_ent *const *)b)->id);
}

/* The socket servers of every node, nodes in id order: a server is alive
 * while its node is and, if it sends heartbeats, it spoke within the
 * server timeout (its node closes it after that, and it leaves the list). */
static json_t *servers_json(const dash_nodes *t, node_ent *const *sorted, uint64_t now) {
    json_t *a = json_array();
    for (uint32_t i = 0; a && i < t->n; i++) {
        const node_ent *e = sorted[i];
        bool up = alive(t, e, now);
        for (uint32_t k = 0; k < e->nservers; k++) {
            const server_ent *s = &e->servers[k];
            uint64_t age = node_age(e, s->last_msg > 0 ? (uint64_t)s->last_msg : 0, now);
            bool on = up && (!s->watched || age <= t->server_timeout_ms);
            json_array_append_new(a, json_pack("{s:s, s:s, s:b, s:I, s:I, s:b}", "server", s->id,
                                               "node", e->id, "alive", on, "connections",
                                               (json_int_t)s->devices, "last_heard_ms",
                                               (json_int_t)age, "heartbeats", s->watched));
        }
    }
    return a;
}

json_t *dash_nodes_json(const dash_nodes *t, uint64_t now_ms) {
    node_ent *sorted[DASH_NODES_MAX];
    memcpy(sorted, t->nodes, t->n * sizeof sorted[0]);
    qsort(sorted, t->n, sizeof sorted[0], by_id);
    json_t *a = json_array();
    for (uint32_t i = 0; a && i < t->n; i++)
        json_array_append_new(a, node_json(t, sorted[i], now_ms));
    return json_pack("{s:I, s:I, s:I, s:I, s:o, s:o}", "now", (json_int_t)now_ms,
                     "node_timeout_ms", (json_int_t)t->node_timeout_ms, "server_timeout_ms",
                     (json_int_t)t->server_timeout_ms, "window_ms", (json_int_t)DASH_WINDOW_MS,
                     "nodes", a, "servers", servers_json(t, sorted, now_ms));
}

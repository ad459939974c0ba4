/* bench_flood.c - events answered during a query flood (issue #11, finding
 * 10): the reply time of `status` events sent one at a time as requests
 * (round robin over the nodes), first alone for secs/2, then for secs/2
 * while another connection sends 1000-user `get` queries at `rate` per
 * second (their replies go to a subject nobody reads). The result is the
 * p50/p99 of each half and their ratios, flood over alone; the goal is a
 * p99 within 3x. Both halves send the same events at the same pace. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "bench.h"
#include "wire/codec.h"

#define FLOOD_IDS 1000
#define EVENT_GAP_MS 20        /* between two measured events */
#define EVENT_TIMEOUT_MS 5000

typedef struct {
    natsConnection *nc;
    const char *prefix;
    double rate;
    volatile bool run;
    uint64_t sent;
} flood_ctx;

static void *flood(void *arg) {
    flood_ctx *c = arg;
    static char names[FLOOD_IDS][24];
    static pd_str ids[FLOOD_IDS];
    char subj[256];
    msgpack_sbuffer sb;
    pd_query q = {.type = PD_Q_GET};
    for (int i = 0; i < FLOOD_IDS; i++) {
        snprintf(names[i], sizeof names[i], "flood-%d", i);
        ids[i] = pd_str_c(names[i]);
    }
    msgpack_sbuffer_init(&sb);
    pd_query_encode(&sb, &q, ids, FLOOD_IDS);
    snprintf(subj, sizeof subj, "%s.query.get", c->prefix);
    uint64_t gap = (uint64_t)(1e9 / c->rate), next = bench_mono_ns();
    while (c->run) {
        natsConnection_PublishRequest(c->nc, subj, "_bench.flood.nobody", sb.data, (int)sb.size);
        c->sent++;
        next += gap;
        bench_sleep_until(next);
    }
    msgpack_sbuffer_destroy(&sb);
    return NULL;
}

/* Sends events for secs seconds; their reply times (ns) go to out. */
static uint64_t measure(natsConnection *nc, const bench_opts *o, double secs, uint64_t *out,
                        uint64_t cap, uint64_t *timeouts) {
    char subj[256];
    msgpack_sbuffer sb;
    uint64_t n = 0, end = bench_mono_ns() + (uint64_t)(secs * 1e9);
    msgpack_sbuffer_init(&sb);
    for (uint64_t k = 0; bench_mono_ns() < end && n < cap; k++) {
        pd_event ev = {.type = PD_EV_STATUS, .user = pd_str_c("bench-flood-user"),
                       .status = k % 2 ? PD_CHOSEN_BUSY : PD_CHOSEN_AUTO};
        msgpack_sbuffer_clear(&sb);
        pd_event_encode(&sb, &ev, NULL, 0);
        snprintf(subj, sizeof subj, "%s.events.%s", o->prefix, o->nodes[k % o->nnodes]);
        natsMsg *reply = NULL;
        uint64_t t0 = bench_mono_ns();
        natsStatus s = natsConnection_Request(&reply, nc, subj, sb.data, (int)sb.size,
                                              EVENT_TIMEOUT_MS);
        if (s == NATS_OK) out[n++] = bench_mono_ns() - t0;
        else (*timeouts)++;
        natsMsg_Destroy(reply);
        bench_sleep_ms(EVENT_GAP_MS);
    }
    msgpack_sbuffer_destroy(&sb);
    return n;
}

int bench_flood(const bench_opts *o) {
    static uint64_t base_ns[100000], flood_ns[100000];
    uint64_t timeouts_base = 0, timeouts_flood = 0;
    bench_lat base, fl;
    natsConnection *nc = bench_connect(o->url, true, "pd-bench-flood-events");
    flood_ctx c = {bench_connect(o->url, true, "pd-bench-flood-queries"), o->prefix,
                   o->rate > 1 ? o->rate : 3000, true, 0};
    pthread_t t;
    if (nc == NULL || c.nc == NULL || o->nnodes == 0) {
        bench_close(nc);
        bench_close(c.nc);
        return 1;
    }
    double half = o->secs > 1 ? o->secs / 2 : 1;
    bench_progress("flood: %.0f s of events alone", half);
    uint64_t nb = measure(nc, o, half, base_ns, 100000, &timeouts_base);
    bench_progress("flood: %.0f s of events during %.0f gets/s of %d users", half, c.rate,
                   FLOOD_IDS);
    if (pthread_create(&t, NULL, flood, &c) != 0) return 1;
    bench_sleep_ms(500); /* the flood is under way */
    uint64_t nf = measure(nc, o, half, flood_ns, 100000, &timeouts_flood);
    c.run = false;
    pthread_join(t, NULL);
    bench_lat_compute(base_ns, nb, &base);
    bench_lat_compute(flood_ns, nf, &fl);
    printf("{\"kind\":\"flood\",\"flood_rate\":%.0f,\"queries_sent\":%llu,"
           "\"timeouts_alone\":%llu,\"timeouts_flood\":%llu,",
           c.rate, (unsigned long long)c.sent, (unsigned long long)timeouts_base,
           (unsigned long long)timeouts_flood);
    bench_lat_json(stdout, "alone", &base);
    printf(",");
    bench_lat_json(stdout, "flood", &fl);
    printf(",\"p50_ratio\":%.2f,\"p99_ratio\":%.2f}\n", base.p50 > 0 ? fl.p50 / base.p50 : 0,
           base.p99 > 0 ? fl.p99 / base.p99 : 0);
    bench_close(nc);
    bench_close(c.nc);
    return 0;
}

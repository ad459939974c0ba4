/* bench.h - pd-bench, the measuring half of the benchmark harness: each
 * subcommand runs one measurement against servers that bench/bench.sh
 * started, prints progress on stderr and one JSON object on stdout.
 *
 *   nats-lat   raw NATS latency, one hop or through a relay process
 *   nats-rate  raw NATS one-hop message rate, unpaced
 *   relay      the relay process of nats-lat (started by nats-lat itself)
 *   pd-lat     presenced: event publish -> every node applied (trace) and
 *              -> the watcher's notification
 *   load       connects D devices of U users as fast as the nodes take them
 *   converge   waits until every node holds D devices and the same clocks
 *   stub-node  a node's NATS work without its model: the same-pattern baseline
 *   stub-converge  waits until every stub node received the others' deltas
 *   notes      counts the notifications published for secs seconds
 *   model      the model alone, no network: heap and RSS per device, snapshot,
 *              restore and republish times (bench_model.c)
 *
 * Times that cross processes are CLOCK_REALTIME nanoseconds: the nodes
 * report their apply time on that clock (P.trace.<node>, schemas/cluster.md). */
#ifndef PD_BENCH_H
#define PD_BENCH_H
#include <nats/nats.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define BENCH_NODES_MAX 8

/* Options of every subcommand; each reads the ones it needs. */
typedef struct {
    const char *url;          /* NATS */
    const char *prefix;       /* presence subject prefix */
    const char *mode;         /* nats-lat: onehop | relay */
    const char *nodes_arg;    /* n1,n2,n3 */
    const char *nodes[BENCH_NODES_MAX];
    char nodes_buf[256];
    uint32_t nnodes;
    double rate;              /* messages or events per second (0: unpaced) */
    double secs;              /* how long to send */
    uint64_t count;           /* nats-rate, load: how many */
    uint32_t size;            /* payload bytes (0: a presence event's size) */
    uint32_t subs;            /* relay: subscribers behind it */
    uint32_t users, devices;  /* pd-lat, load */
    uint32_t trace_every;     /* pd-lat: trace one event in this many (0: none) */
    uint32_t batch;           /* batch-rate: events per batch */
    bool asap;                /* nats.c SendAsap */
    double timeout;           /* converge, waits: seconds */
    bool replay;              /* model: also the stream-only restart */
    const char *self;         /* argv[0], to start the relay */
} bench_opts;

/* ---- bench_util.c ---------------------------------------------------------- */

uint64_t bench_now_ns(void);         /* CLOCK_REALTIME */
uint64_t bench_mono_ns(void);        /* CLOCK_MONOTONIC */
void bench_sleep_until(uint64_t mono_ns);
void bench_sleep_ms(unsigned ms);

/* Connects with SendAsap as asked, unlimited reconnects off; NULL (and a
 * line on stderr) on failure. */
natsConnection *bench_connect(const char *url, bool asap, const char *name);
/* Closes and destroys; NULL is fine. */
void bench_close(natsConnection *nc);

/* Latency summary in microseconds from n samples in ns (sorted in place). */
typedef struct {
    uint64_t n;
    double p50, p99, p999, max, mean;
} bench_lat;
void bench_lat_compute(uint64_t *ns, uint64_t n, bench_lat *out);
/* "name":{"n":..,"p50_us":..,...} */
void bench_lat_json(FILE *f, const char *name, const bench_lat *l);

/* Progress lines go to stderr, prefixed with the subcommand. */
void bench_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The encoded size of the status event pd-lat sends (traced), so that the
 * baselines carry presence-sized messages. */
uint32_t bench_event_size(void);

/* ---- subcommands ---------------------------------------------------------------- */

int bench_nats_lat(const bench_opts *o);
int bench_nats_rate(const bench_opts *o);
int bench_relay(const bench_opts *o);
int bench_model(const bench_opts *o);
int bench_pd_lat(const bench_opts *o);
/* Event reply p50/p99 alone and during a query flood (bench_flood.c). */
int bench_flood(const bench_opts *o);
int bench_load(const bench_opts *o);
int bench_churn(const bench_opts *o);
/* Events per second in `batch` requests (bench_batch.c). */
int bench_batch_rate(const bench_opts *o);
int bench_converge(const bench_opts *o);
/* Notifications on <prefix>.user.> for secs seconds (bench_notes.c). */
int bench_notes(const bench_opts *o);
/* The same-pattern stub node of issue 15 (bench_stub.c): runs until SIGTERM. */
int bench_stub_node(const bench_opts *o);
/* Waits until every stub received every delta the other stubs sent. */
int bench_stub_converge(const bench_opts *o);

#endif

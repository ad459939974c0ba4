/* bench_util.c - clocks, pacing, connections, latency percentiles and the
 * presence-sized payload shared by pd-bench's subcommands. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "bench.h"
#include "wire/codec.h"

static uint64_t clock_ns(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t bench_now_ns(void) { return clock_ns(CLOCK_REALTIME); }
uint64_t bench_mono_ns(void) { return clock_ns(CLOCK_MONOTONIC); }

void bench_sleep_until(uint64_t mono_ns) {
    struct timespec ts = {(time_t)(mono_ns / 1000000000u), (long)(mono_ns % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) continue;
}

void bench_sleep_ms(unsigned ms) { bench_sleep_until(bench_mono_ns() + (uint64_t)ms * 1000000u); }

natsConnection *bench_connect(const char *url, bool asap, const char *name) {
    natsOptions *o = NULL;
    natsConnection *nc = NULL;
    natsStatus s = natsOptions_Create(&o);
    if (s == NATS_OK) s = natsOptions_SetURL(o, url);
    if (s == NATS_OK) s = natsOptions_SetName(o, name);
    if (s == NATS_OK) s = natsOptions_SetSendAsap(o, asap);
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, 0);
    /* Large buffers: a flood must not block on a small write buffer. */
    if (s == NATS_OK) s = natsOptions_SetIOBufSize(o, 1 << 20);
    if (s == NATS_OK) s = natsConnection_Connect(&nc, o);
    natsOptions_Destroy(o);
    if (s != NATS_OK) {
        fprintf(stderr, "pd-bench: cannot connect to %s: %s\n", url, natsStatus_GetText(s));
        return NULL;
    }
    return nc;
}

void bench_close(natsConnection *nc) {
    if (nc == NULL) return;
    natsConnection_Close(nc);
    natsConnection_Destroy(nc);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest rank: the smallest sample with at least q of the samples at or
 * below it. */
static double rank(const uint64_t *v, uint64_t n, double q) {
    uint64_t k = (uint64_t)((double)n * q + 0.999999);
    if (k < 1) k = 1;
    if (k > n) k = n;
    return (double)v[k - 1] / 1000.0;
}

void bench_lat_compute(uint64_t *ns, uint64_t n, bench_lat *out) {
    memset(out, 0, sizeof *out);
    out->n = n;
    if (n == 0) return;
    qsort(ns, n, sizeof *ns, cmp_u64);
    double sum = 0;
    for (uint64_t i = 0; i < n; i++) sum += (double)ns[i];
    out->mean = sum / (double)n / 1000.0;
    out->p50 = rank(ns, n, 0.50);
    out->p99 = rank(ns, n, 0.99);
    out->p999 = rank(ns, n, 0.999);
    out->max = (double)ns[n - 1] / 1000.0;
}

void bench_lat_json(FILE *f, const char *name, const bench_lat *l) {
    fprintf(f,
            "\"%s\":{\"n\":%llu,\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,"
            "\"max_us\":%.1f,\"mean_us\":%.1f}",
            name, (unsigned long long)l->n, l->p50, l->p99, l->p999, l->max, l->mean);
}

void bench_progress(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("pd-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

uint32_t bench_event_size(void) {
    msgpack_sbuffer sb;
    pd_event ev = {.type = PD_EV_STATUS, .status = PD_CHOSEN_BUSY};
    ev.user = pd_str_c("bu12345");
    ev.has_trace = true;
    ev.trace = 1234567;
    msgpack_sbuffer_init(&sb);
    pd_event_encode(&sb, &ev, NULL, 0);
    uint32_t n = (uint32_t)sb.size;
    msgpack_sbuffer_destroy(&sb);
    return n;
}

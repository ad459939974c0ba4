/* bench_nats.c - the raw NATS baselines: what presenced's numbers are
 * divided by.
 *
 * nats-lat sends paced messages of a presence event's size, each carrying
 * its number and send time, either straight to one subscriber (one hop) or
 * to a relay process that republishes each one from its message callback,
 * to `subs` subscribers on their own connections (the other "nodes"). A
 * message's relay latency is the time until the last subscriber got it,
 * which is what "every node applied" is compared with; the first
 * subscriber's own latency is kept too. nats-rate sends as fast as nats.c
 * takes them and counts what one subscriber receives per second. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include "bench.h"

#define LAT_SUBS_MAX BENCH_NODES_MAX
#define PROBE_ID UINT64_MAX

typedef struct {
    uint64_t *recv;           /* per message: receive time, 0 = not yet */
    uint64_t n;
    uint64_t got;             /* atomics */
    bool probe_seen;
    uint64_t first_ns, last_ns; /* nats-rate: mono times of first and last */
} sub_state;

static void put_header(uint8_t *buf, uint64_t id, uint64_t ts) {
    memcpy(buf, &id, 8);
    memcpy(buf + 8, &ts, 8);
}

static void on_lat_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *ud) {
    sub_state *s = ud;
    uint64_t now = bench_now_ns(), id;
    (void)nc;
    (void)sub;
    if (natsMsg_GetDataLength(m) >= 16) {
        memcpy(&id, natsMsg_GetData(m), 8);
        if (id == PROBE_ID) {
            __atomic_store_n(&s->probe_seen, true, __ATOMIC_RELEASE);
        } else if (id < s->n && s->recv[id] == 0) {
            s->recv[id] = now;
            __atomic_add_fetch(&s->got, 1, __ATOMIC_RELEASE);
        }
    }
    natsMsg_Destroy(m);
}

/* ---- the relay process ------------------------------------------------------ */

static volatile sig_atomic_t relay_stop;
static void on_term(int sig) { (void)sig; relay_stop = 1; }

typedef struct {
    natsConnection *nc;
    char out[128];
} relay_ctx;

static void on_relay_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *ud) {
    relay_ctx *r = ud;
    (void)sub;
    natsConnection_Publish(nc, r->out, natsMsg_GetData(m), natsMsg_GetDataLength(m));
    natsMsg_Destroy(m);
}

int bench_relay(const bench_opts *o) {
    relay_ctx r = {0};
    char in[128];
    natsSubscription *sub = NULL;
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    snprintf(in, sizeof in, "%s.in", o->prefix);
    snprintf(r.out, sizeof r.out, "%s.out", o->prefix);
    r.nc = bench_connect(o->url, o->asap, "pd-bench-relay");
    if (r.nc == NULL) return 1;
    natsStatus s = natsConnection_Subscribe(&sub, r.nc, in, on_relay_msg, &r);
    if (s == NATS_OK) natsSubscription_SetPendingLimits(sub, -1, -1);
    if (s == NATS_OK) s = natsConnection_Flush(r.nc);
    while (s == NATS_OK && !relay_stop) bench_sleep_ms(20);
    natsSubscription_Destroy(sub);
    bench_close(r.nc);
    nats_CloseAndWait(2000);
    return s == NATS_OK ? 0 : 1;
}

static pid_t start_relay(const bench_opts *o) {
    pid_t pid = fork();
    if (pid != 0) return pid;
    /* The relay must not outlive the measurement, whatever happens to it. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    execl(o->self, o->self, "relay", "--url", o->url, "--prefix", o->prefix, "--asap",
          o->asap ? "1" : "0", (char *)NULL);
    _exit(127);
}

static void stop_relay(pid_t pid) {
    int st;
    if (pid <= 0) return;
    kill(pid, SIGTERM);
    waitpid(pid, &st, 0);
}

/* ---- nats-lat ------------------------------------------------------------------ */

/* Sends probes until the first subscriber sees one: the relay is up. */
static bool wait_path(natsConnection *pub, const char *subj, sub_state *s0, uint32_t size) {
    uint8_t buf[4096] = {0};
    put_header(buf, PROBE_ID, 0);
    for (int i = 0; i < 500; i++) {
        natsConnection_Publish(pub, subj, buf, (int)size);
        natsConnection_Flush(pub);
        if (__atomic_load_n(&s0->probe_seen, __ATOMIC_ACQUIRE)) return true;
        bench_sleep_ms(10);
    }
    return false;
}

/* Paced sends: message i leaves at t0 + i / rate (or at once, if late). */
static void paced_send(natsConnection *pub, const char *subj, uint64_t *send, uint64_t n,
                       double rate, uint32_t size, sub_state *s0) {
    uint8_t buf[4096] = {0};
    uint64_t t0 = bench_mono_ns() + 1000000, next_progress = t0 + 1000000000u;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t due = t0 + (uint64_t)((double)i * 1e9 / rate);
        if (due > bench_mono_ns()) bench_sleep_until(due);
        send[i] = bench_now_ns();
        put_header(buf, i, send[i]);
        natsConnection_Publish(pub, subj, buf, (int)size);
        if (bench_mono_ns() >= next_progress) {
            bench_progress("  %llu/%llu sent, %llu received",
                           (unsigned long long)i + 1, (unsigned long long)n,
                           (unsigned long long)__atomic_load_n(&s0->got, __ATOMIC_ACQUIRE));
            next_progress += 1000000000u;
        }
    }
    natsConnection_FlushTimeout(pub, 5000);
}

static void wait_all(sub_state *st, uint32_t k, uint64_t n, unsigned timeout_ms) {
    uint64_t deadline = bench_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        bool all = true;
        for (uint32_t j = 0; j < k; j++)
            all &= __atomic_load_n(&st[j].got, __ATOMIC_ACQUIRE) >= n;
        if (all || bench_mono_ns() > deadline) return;
        bench_sleep_ms(5);
    }
}

/* Latency of each message to the last subscriber (all) and to the first;
 * prints the JSON line and returns how many messages some subscriber
 * lacks. all and first are scratch arrays of n. */
static uint64_t lat_report(const bench_opts *o, bool relay, uint32_t size, const sub_state *st,
                           uint32_t k, const uint64_t *send, uint64_t n, uint64_t *all,
                           uint64_t *first) {
    uint64_t lost = 0, m = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t last = 0;
        bool ok = true;
        for (uint32_t j = 0; j < k; j++) {
            if (st[j].recv[i] == 0) ok = false;
            else if (st[j].recv[i] > last) last = st[j].recv[i];
        }
        if (!ok) {
            lost++;
            continue;
        }
        all[m] = last > send[i] ? last - send[i] : 0;
        first[m++] = st[0].recv[i] > send[i] ? st[0].recv[i] - send[i] : 0;
    }
    bench_lat la, lf;
    bench_lat_compute(all, m, &la);
    bench_lat_compute(first, m, &lf);
    printf("{\"kind\":\"nats_lat\",\"mode\":\"%s\",\"asap\":%s,\"rate\":%.0f,\"size\":%u,"
           "\"subs\":%u,\"sent\":%llu,\"lost\":%llu,",
           relay ? "relay" : "onehop", o->asap ? "true" : "false", o->rate, size, k,
           (unsigned long long)n, (unsigned long long)lost);
    bench_lat_json(stdout, "all", &la);
    putchar(',');
    bench_lat_json(stdout, "first", &lf);
    puts("}");
    bench_progress("  p50 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f us, lost %llu", la.p50,
                   la.p99, la.p999, la.max, (unsigned long long)lost);
    return lost;
}

int bench_nats_lat(const bench_opts *o) {
    bool relay = o->mode && strcmp(o->mode, "relay") == 0;
    uint32_t k = relay ? (o->subs ? o->subs : 2) : 1;
    uint32_t size = o->size ? o->size : bench_event_size();
    uint64_t n = (uint64_t)(o->rate * o->secs);
    char in[128], out[128];
    natsConnection *pub = NULL, *sc[LAT_SUBS_MAX] = {0};
    natsSubscription *subs[LAT_SUBS_MAX] = {0};
    sub_state st[LAT_SUBS_MAX];
    uint64_t *send = calloc(n ? n : 1, sizeof *send);
    uint64_t *all = calloc(n ? n : 1, sizeof *all), *first = calloc(n ? n : 1, sizeof *first);
    pid_t rpid = -1;
    int rc = 1;
    if (size < 16) size = 16;
    if (size > 4096) size = 4096;
    if (k > LAT_SUBS_MAX) k = LAT_SUBS_MAX;
    memset(st, 0, sizeof st);
    snprintf(in, sizeof in, "%s.in", o->prefix);
    snprintf(out, sizeof out, "%s.out", o->prefix);
    if (send == NULL || all == NULL || first == NULL || n == 0) goto done;
    bench_progress("nats-lat %s, SendAsap %s, %.0f msg/s, %u bytes, %llu messages",
                   relay ? "relay" : "one hop", o->asap ? "on" : "off", o->rate, size,
                   (unsigned long long)n);
    for (uint32_t j = 0; j < k; j++) {
        st[j].n = n;
        st[j].recv = calloc(n, sizeof *st[j].recv);
        sc[j] = bench_connect(o->url, o->asap, "pd-bench-sub");
        if (st[j].recv == NULL || sc[j] == NULL) goto done;
        if (natsConnection_Subscribe(&subs[j], sc[j], relay ? out : in, on_lat_msg, &st[j]) !=
            NATS_OK)
            goto done;
        natsSubscription_SetPendingLimits(subs[j], -1, -1);
        natsConnection_Flush(sc[j]);
    }
    if (relay && (rpid = start_relay(o)) < 0) goto done;
    if ((pub = bench_connect(o->url, o->asap, "pd-bench-pub")) == NULL) goto done;
    if (!wait_path(pub, in, &st[0], size)) {
        fprintf(stderr, "pd-bench: no message came through the %s\n", relay ? "relay" : "server");
        goto done;
    }
    bench_sleep_ms(50); /* the other subscribers' probes, if any, drain */
    paced_send(pub, in, send, n, o->rate, size, &st[0]);
    wait_all(st, k, n, 3000);
    uint64_t lost = lat_report(o, relay, size, st, k, send, n, all, first);
    rc = lost * 100 > n ? 1 : 0; /* more than 1 % lost: something is wrong */
done:
    stop_relay(rpid);
    for (uint32_t j = 0; j < k; j++) natsSubscription_Destroy(subs[j]);
    for (uint32_t j = 0; j < k; j++) bench_close(sc[j]);
    bench_close(pub);
    for (uint32_t j = 0; j < k; j++) free(st[j].recv);
    free(send);
    free(all);
    free(first);
    nats_CloseAndWait(2000);
    return rc;
}

/* ---- nats-rate ------------------------------------------------------------------- */

static void on_rate_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *ud) {
    sub_state *s = ud;
    (void)nc;
    (void)sub;
    uint64_t got = __atomic_add_fetch(&s->got, 1, __ATOMIC_RELEASE);
    if (got == s->n) __atomic_store_n(&s->last_ns, bench_mono_ns(), __ATOMIC_RELEASE);
    natsMsg_Destroy(m);
}

int bench_nats_rate(const bench_opts *o) {
    uint32_t size = o->size ? o->size : bench_event_size();
    uint64_t n = o->count ? o->count : 1000000;
    char subj[128];
    uint8_t buf[4096] = {0};
    sub_state s = {.n = n};
    natsSubscription *sub = NULL;
    int rc = 1;
    if (size > sizeof buf) size = sizeof buf;
    snprintf(subj, sizeof subj, "%s.rate", o->prefix);
    natsConnection *sc = bench_connect(o->url, o->asap, "pd-bench-sub");
    natsConnection *pub = bench_connect(o->url, o->asap, "pd-bench-pub");
    if (sc == NULL || pub == NULL ||
        natsConnection_Subscribe(&sub, sc, subj, on_rate_msg, &s) != NATS_OK)
        goto done;
    natsSubscription_SetPendingLimits(sub, -1, -1);
    natsConnection_Flush(sc);
    bench_progress("nats-rate: one hop, SendAsap %s, %u bytes, %llu messages unpaced",
                   o->asap ? "on" : "off", size, (unsigned long long)n);
    uint64_t t0 = bench_mono_ns();
    for (uint64_t i = 0; i < n; i++) {
        put_header(buf, i, 0);
        natsConnection_Publish(pub, subj, buf, (int)size);
    }
    natsConnection_FlushTimeout(pub, 10000);
    uint64_t sent_ns = bench_mono_ns() - t0;
    uint64_t deadline = bench_mono_ns() + 10000000000u;
    while (__atomic_load_n(&s.got, __ATOMIC_ACQUIRE) < n && bench_mono_ns() < deadline)
        bench_sleep_ms(2);
    uint64_t got = __atomic_load_n(&s.got, __ATOMIC_ACQUIRE);
    uint64_t end = got >= n ? __atomic_load_n(&s.last_ns, __ATOMIC_ACQUIRE) : bench_mono_ns();
    double secs = (double)(end - t0) / 1e9;
    double rate = (double)got / secs;
    printf("{\"kind\":\"nats_rate\",\"asap\":%s,\"size\":%u,\"sent\":%llu,\"received\":%llu,"
           "\"secs\":%.3f,\"publish_secs\":%.3f,\"msgs_per_s\":%.0f}\n",
           o->asap ? "true" : "false", size, (unsigned long long)n, (unsigned long long)got,
           secs, (double)sent_ns / 1e9, rate);
    bench_progress("  %.0f msg/s received (%llu of %llu)", rate, (unsigned long long)got,
                   (unsigned long long)n);
    rc = got == n ? 0 : 1;
done:
    natsSubscription_Destroy(sub);
    bench_close(sc);
    bench_close(pub);
    nats_CloseAndWait(2000);
    return rc;
}

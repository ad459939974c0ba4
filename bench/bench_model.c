/* bench_model.c - pd-bench model: the model alone, no network (issue 15).
 *
 * Loads --count devices of --users users into one node's replica exactly
 * as `pd-bench load` sends them (connects from server ls-n1, conns lc<i>,
 * users lu<i % users>, labels web/mobile/desktop), then takes a snapshot
 * of it, restores that snapshot into a fresh replica (the restart's
 * apply) and dumps the restored partition as the new incarnation's deltas
 * (the restart's republish, into a sink). Prints the model's heap bytes
 * per device (glibc mallinfo2) and RSS per device after the load, and the
 * time of each step. With --replay 1, it keeps every delta the two lives
 * sent (the stream JetStream would hold) and replays them into a third
 * life with no snapshot (the stream-only restart's apply). Deterministic,
 * so `valgrind --tool=callgrind --toggle-collect=pd_repl_restore` (or
 * pd_repl_replay_delta) counts the instructions repeatably
 * (bench/README.md, "Memory and restart"). */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bench.h"
#include "sync/repl.h"

static long rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kb = strtol(line + 6, NULL, 10);
    if (f) fclose(f);
    return kb;
}

static size_t heap_bytes(void) {
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

/* Where a replica's deltas go: counted, and kept in order (the stream
 * JetStream would hold) when `keep` is set. */
typedef struct {
    uint64_t bytes, msgs;
    bool keep;
    uint8_t **buf;
    size_t *len, n, cap;
} sink;

static void send_sink(void *ud, const void *buf, size_t len) {
    sink *sk = ud;
    sk->bytes += len;
    sk->msgs++;
    if (!sk->keep) return;
    if (sk->n == sk->cap) {
        sk->cap = sk->cap ? sk->cap * 2 : 1024;
        sk->buf = realloc(sk->buf, sk->cap * sizeof *sk->buf);
        sk->len = realloc(sk->len, sk->cap * sizeof *sk->len);
        if (sk->buf == NULL || sk->len == NULL) abort();
    }
    uint8_t *c = malloc(len);
    if (c == NULL) abort();
    memcpy(c, buf, len);
    sk->buf[sk->n] = c;
    sk->len[sk->n++] = len;
}

static void sink_free(sink *sk) {
    for (size_t i = 0; i < sk->n; i++) free(sk->buf[i]);
    free(sk->buf);
    free(sk->len);
}

static void send_req(void *ud, pd_str t, const void *b, size_t l) { (void)ud, (void)t, (void)b, (void)l; }
static void send_part(void *ud, void *c, const void *b, size_t l) { (void)ud, (void)c, (void)b, (void)l; }
static void publish(void *ud, const pd_view *v) { (void)ud, (void)v; }

static pd_repl *new_repl(sink *sk, uint64_t inc, uint64_t now) {
    static pd_repl_io io;
    io = (pd_repl_io){send_sink, send_sink, send_req, send_part, publish, sk, NULL, NULL,
                      NULL, NULL, NULL};
    pd_repl_cfg cfg = {.sync_interval_ms = 200, .node_timeout_ms = 10000, .inc = inc,
                       .max_msg_bytes = 1 << 20};
    pd_model_cfg mcfg = {.idle_timeout_ms = 300000, .offline_delay_ms = 30000,
                         .server_timeout_ms = 60000};
    return pd_repl_new(&cfg, &mcfg, pd_str_c("n1"), &io, now);
}

/* The stream-only restart: a third life of n1 with no snapshot replays
 * every delta of the first two (the load's, then the republish), in
 * order, and republishes what it rebuilt. Returns the replay's status. */
static pd_status replay_stream(const sink *s1, const sink *s2, uint64_t inc, uint64_t now,
                               double *replay_s, double *dump_s, uint64_t *devices) {
    sink sk = {0};
    pd_repl *r = new_repl(&sk, inc, now);
    pd_err err = {PD_OK, ""};
    pd_status st = PD_OK;
    if (r == NULL) return PD_ENOMEM;
    pd_repl_restore_begin(r);
    uint64_t t0 = bench_mono_ns();
    for (int k = 0; k < 2 && st == PD_OK; k++) {
        const sink *s = k ? s2 : s1;
        for (size_t i = 0; i < s->n && st == PD_OK; i++)
            st = pd_repl_replay_delta(r, s->buf[i], s->len[i], now, &err);
    }
    *replay_s = (double)(bench_mono_ns() - t0) / 1e9;
    pd_model_stats ms;
    pd_model_stats_get(pd_repl_model(r), &ms);
    *devices = ms.devices;
    t0 = bench_mono_ns();
    pd_repl_restore_done(r, now);
    *dump_s = (double)(bench_mono_ns() - t0) / 1e9;
    if (st != PD_OK) fprintf(stderr, "model: replay refused: %s\n", err.msg);
    pd_repl_free(r);
    return st;
}
static double secs_since(uint64_t t0) { return (double)(bench_mono_ns() - t0) / 1e9; }

int bench_model(const bench_opts *o) {
    static const char *const labels[] = {"web", "mobile", "desktop"};
    uint64_t d = o->count ? o->count : 1000000, now = 1700000000000ull;
    uint32_t users = o->users ? o->users : (uint32_t)d;
    char conn[32], user[32];
    sink sk = {.keep = o->replay};
    long rss0 = rss_kb();
    size_t heap0 = heap_bytes();
    pd_repl *r = new_repl(&sk, now, now);
    if (r == NULL) return 1;
    pd_model *m = pd_repl_model(r);
    uint64_t t0 = bench_mono_ns();
    for (uint64_t i = 0; i < d; i++) {
        snprintf(conn, sizeof conn, "lc%llu", (unsigned long long)i);
        snprintf(user, sizeof user, "lu%llu", (unsigned long long)(i % users));
        pd_event ev = {.type = PD_EV_CONNECT, .server = PD_STR_LIT("ls-n1"),
                       .conn = pd_str_c(conn), .user = pd_str_c(user),
                       .device = pd_str_c(labels[(i / users) % 3])};
        pd_apply_result res;
        pd_err err;
        if (pd_model_apply(m, &ev, now + i / 1000, &res, &err) != PD_OK) {
            fprintf(stderr, "model: connect %llu refused: %s\n", (unsigned long long)i, err.msg);
            return 1;
        }
    }
    double load_s = secs_since(t0);
    pd_repl_flush(r);
    long rss1 = rss_kb();
    size_t heap1 = heap_bytes();
    now += d / 1000 + 1000;
    pd_snap_info info;
    pd_repl_snapshot_info(r, &info, now);
    t0 = bench_mono_ns();
    pd_snap *s = pd_snap_begin(m, &info);
    while (s && !pd_snap_step(s, m, 4096)) {}
    uint8_t *buf = NULL;
    size_t len = 0;
    if (s == NULL || pd_snap_finish(s, &buf, &len) != PD_OK) return 1;
    double snap_s = secs_since(t0);
    pd_repl_free(r);

    sink sk2 = {.keep = o->replay};
    pd_repl *r2 = new_repl(&sk2, now + 1, now + 1);
    pd_err err = {PD_OK, ""};
    pd_snap_info info2;
    pd_repl_restore_begin(r2);
    t0 = bench_mono_ns();
    pd_status st = pd_repl_restore(r2, buf, len, now + 1, &info2, &err);
    double restore_s = secs_since(t0);
    pd_model_stats ms;
    pd_model_stats_get(pd_repl_model(r2), &ms);
    t0 = bench_mono_ns();
    pd_repl_restore_done(r2, now + 1);
    double dump_s = secs_since(t0);
    double replay_s = 0, replay_dump_s = 0;
    uint64_t replayed = 0;
    if (o->replay && st == PD_OK)
        st = replay_stream(&sk, &sk2, now + 2, now + 2, &replay_s, &replay_dump_s, &replayed);
    printf("{\"kind\":\"model\",\"ok\":%s,\"devices\":%llu,\"users\":%u,"
           "\"heap_per_device\":%.1f,\"rss_per_device\":%.1f,\"load_s\":%.3f,"
           "\"snapshot_bytes\":%zu,\"snapshot_s\":%.3f,\"restored_devices\":%llu,"
           "\"restore_s\":%.3f,\"dump_s\":%.3f,\"dump_bytes\":%llu",
           st == PD_OK && ms.devices == d && (!o->replay || replayed == d) ? "true" : "false",
           (unsigned long long)d, users,
           (double)(heap1 - heap0) / (double)d, (double)(rss1 - rss0) * 1024.0 / (double)d,
           load_s, len, snap_s, (unsigned long long)ms.devices, restore_s, dump_s,
           (unsigned long long)sk2.bytes);
    if (o->replay)
        printf(",\"stream_deltas\":%zu,\"stream_bytes\":%llu,\"replayed_devices\":%llu,"
               "\"replay_s\":%.3f,\"replay_dump_s\":%.3f",
               sk.n + sk2.n, (unsigned long long)(sk.bytes + sk2.bytes),
               (unsigned long long)replayed, replay_s, replay_dump_s);
    printf("}\n");
    if (st != PD_OK) fprintf(stderr, "model: restore refused: %s\n", err.msg);
    pd_repl_free(r2);
    sink_free(&sk);
    sink_free(&sk2);
    free(buf);
    return st == PD_OK ? 0 : 1;
}

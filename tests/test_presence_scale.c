/* test_presence_scale.c - the presence model (presence.h) at scale and
 * under failure: paging through online users (each returned once, also
 * while the table grows), injected allocation failures at every point of
 * each operation (the model stays consistent; atomic operations change
 * nothing), bytes per user and device with 100k of them, and a tick with
 * nothing due touching no timer among 100k.
 *
 * As in test_presence.c, every notification goes through the recorder and
 * every test frees its model and checks pd_alloc_live_bytes() is back where
 * it started (model_fixtures.h). */
#include "model_fixtures.h"
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- paging through online users ---------------------------------------------------- */

enum { SCAN_USERS = 5000, SCAN_EXTRA = 5000 };

typedef struct {
    uint16_t *hits;     /* per user index */
    uint32_t page;      /* users in the current page */
    uint32_t bad;       /* ids not of the form p<index> */
} scan_rec;

static void on_online(void *ud, pd_str user) {
    scan_rec *s = ud;
    char buf[16];
    s->page++;
    if (user.n < 2 || user.n >= sizeof buf || user.p[0] != 'p') { s->bad++; return; }
    copy_str(buf, sizeof buf, user);
    long i = strtol(buf + 1, NULL, 10);
    if (i < 0 || i >= SCAN_USERS + SCAN_EXTRA) { s->bad++; return; }
    s->hits[i]++;
}

/* Users p0..p4999: even ones online (active, idle, busy, held in the offline
 * delay), odd ones offline (never connected, gone, invisible). */
static void scan_setup(pd_model *m) {
    char id[16];
    for (int i = 0; i < SCAN_USERS; i++) {
        snprintf(id, sizeof id, "p%d", i);
        if (i % 2 == 0) {
            apply_ok(m, ev_connect("s1", id, id), 0);
            if (i % 6 == 2) apply_ok(m, ev_conn(PD_EV_IDLE, "s1", id), 0);
            if (i % 10 == 4) apply_ok(m, ev_status(id, PD_CHOSEN_BUSY), 0);
        } else if (i % 6 == 1) {
            apply_ok(m, ev_custom(id, "offline", NULL, 0), 0);
        } else if (i % 6 == 3) {
            apply_ok(m, ev_connect("s2", id, id), 0);
            apply_ok(m, ev_status(id, PD_CHOSEN_INVISIBLE), 0);
        } else {
            apply_ok(m, ev_connect("s2", id, id), 0);
            apply_ok(m, ev_conn(PD_EV_DISCONNECT, "s2", id), 0);
        }
    }
    /* Some online ones leave later: they are still in their offline delay
     * when that of the odd ones has passed. */
    for (int i = 6; i < SCAN_USERS; i += 14) {
        snprintf(id, sizeof id, "p%d", i);
        apply_ok(m, ev_conn(PD_EV_DISCONNECT, "s1", id), 100);
    }
    pd_model_tick(m, 500);
}

/* Pages with `limit` until done; calls midway(m) once after `after` pages. */
static uint32_t scan_all(pd_model *m, uint32_t limit, scan_rec *s, uint32_t after,
                         void (*midway)(pd_model *)) {
    uint64_t cursor = 0;
    uint32_t pages = 0;
    do {
        s->page = 0;
        cursor = pd_model_scan_online(m, cursor, limit, on_online, s);
        cr_assert_leq(s->page, limit, "a page of %u users for limit %u", s->page, limit);
        cr_assert_lt(++pages, 1000000u, "the scan does not end");
        if (pages == after && midway) midway(m);
    } while (cursor != 0);
    return pages;
}

static void add_online_users(pd_model *m) {
    char id[16];
    for (int i = SCAN_USERS; i < SCAN_USERS + SCAN_EXTRA; i++) {
        snprintf(id, sizeof id, "p%d", i);
        apply_ok(m, ev_connect("s3", id, id), 1);
    }
}

Test(presence, scan_online_pages_return_each_online_user_once) {
    size_t base = pd_alloc_live_bytes();
    recorder r;
    pd_model *m = model_new(&CFG, &r);
    r.keep = false;
    scan_setup(m);
    cr_assert_eq(pd_model_scan_online(m, 0, 0, on_online, NULL), 0u, "limit 0: nothing");
    const uint32_t limits[] = {1, 7, 1000, 7};
    scan_rec s = {.hits = calloc(SCAN_USERS + SCAN_EXTRA, sizeof(uint16_t))};
    cr_assert_not_null(s.hits);
    for (size_t k = 0; k < 4; k++) {
        /* The last run doubles the users (and grows the table) midway. */
        uint64_t buckets = m->users.mask + 1;
        memset(s.hits, 0, (SCAN_USERS + SCAN_EXTRA) * sizeof(uint16_t));
        uint32_t pages = scan_all(m, limits[k], &s, k == 3 ? 100 : 0, add_online_users);
        if (k == 3) cr_expect_gt(m->users.mask + 1, buckets, "the table grew during the scan");
        cr_expect_eq(s.bad, 0u);
        for (int i = 0; i < SCAN_USERS; i++)
            cr_assert_eq(s.hits[i], i % 2 == 0 ? 1 : 0, "limit %u: p%d returned %u times",
                         limits[k], i, s.hits[i]);
        for (int i = SCAN_USERS; i < SCAN_USERS + SCAN_EXTRA; i++)
            cr_assert_leq(s.hits[i], 1, "a user that came midway is returned at most once");
        cr_expect_geq(pages, (SCAN_USERS / 2 + limits[k] - 1) / limits[k]);
        cr_log_info("online scan, limit %u: %u pages", limits[k], pages);
    }
    free(s.hits);
    model_free(m, &r, base);
}

/* ---- allocation failure --------------------------------------------------------------- */

typedef struct {
    const char *name;
    step ev;         /* the operation, as in the scenario table */
    bool atomic;     /* on error, nothing visible may have changed */
    bool allocates;  /* with a full model, some failure must reach the caller */
} alloc_op;

static const alloc_op ALLOC_OPS[] = {
    {"connect, new user and server", {CONNECT("s9", "cx", "newbie")}, true, true},
    {"connect, known user", {CONNECT("s1", "cx", "u1")}, true, true},
    {"connect moving a conn", {CONNECT("s1", "c2", "newbie")}, true, true},
    {"custom, new user", {CUSTOM("newbie", "hi", 1000000)}, true, true},
    {"custom, known user", {CUSTOM("u3", "hi", 1000000)}, true, true},
    {"status, new user", {STATUS("newbie", BUSY)}, true, true},
    {"heartbeat", {HEARTBEAT("s1")}, true, true},
    {"heartbeat, new server", {HEARTBEAT("s9")}, true, true},
    {"disconnect", {DISCONNECT("s1", "c4")}, true, false},
    {"shutdown", {SHUTDOWN("s1")}, true, false},
    {"sync", {SYNC("s1", "c0:u0 c1:moved cn1:n1 cn2:n2 cn3:u5")}, false, true},
};

/* nusers users on s1 (conn c<i>, user u<i>), u0 with a custom status: with
 * 64 users the timer heap and the user and device tables are full, so the
 * next operation must grow them. */
static void alloc_base(pd_model *m, int nusers) {
    char conn[16], user[16];
    for (int i = 0; i < nusers; i++) {
        snprintf(conn, sizeof conn, "c%d", i);
        snprintf(user, sizeof user, "u%d", i);
        apply_ok(m, ev_connect("s1", conn, user), 0);
    }
    apply_ok(m, ev_custom("u0", "base", NULL, 0), 0);
}

static void alloc_case(const alloc_op *op, int nusers, long n, bool *failed) {
    char where[96];
    snprintf(where, sizeof where, "%s, %d users, fail after %ld", op->name, nusers, n);
    ctx = where;
    size_t base = pd_alloc_live_bytes();
    recorder r;
    pd_model *m = model_new(&CFG, &r);
    alloc_base(m, nusers);
    char before[2048], after[2048];
    visible(m, &r, before, sizeof before);
    msgpack_sbuffer sb = {0};
    pd_event ev = step_event(&op->ev, &sb);
    pd_apply_result res;
    pd_err err = {0};
    pd_alloc_fail_after(n);
    pd_status st = pd_model_apply(m, &ev, 100, &res, &err);
    pd_alloc_fail_after(-1);
    if (sb.data) msgpack_sbuffer_destroy(&sb);
    cr_assert(st == PD_OK || st == PD_ENOMEM, "[%s] status %s", where, pd_status_str(st));
    if (st != PD_OK) {
        *failed = true;
        cr_assert_eq(err.code, PD_ENOMEM);
        visible(m, &r, after, sizeof after);
        if (op->atomic)
            cr_assert_str_eq(after, before, "[%s] an error changed state", where);
    }
    check_model(m);
    /* Queries work, and every timer is still there: far in the future all
     * devices are idle, every custom status expired and watched servers are
     * gone with their devices. */
    scan_rec s = {.hits = calloc(SCAN_USERS, sizeof(uint16_t))};
    scan_all(m, 5, &s, 0, NULL);
    free(s.hits);
    pd_model_tick(m, 100000000);
    check_model(m);
    for (size_t i = 0; i < N_VIS_USERS; i++) {
        pd_view v = view_of(m, VIS_USERS[i], NULL);
        cr_assert_neq(v.status, PD_PUB_ONLINE, "[%s] %s never went idle", where, VIS_USERS[i]);
        cr_assert(v.text.n == 0 || v.expires_at == 0, "[%s] %s: custom never expired", where,
                  VIS_USERS[i]);
    }
    model_free(m, &r, base);
}

Test(presence, allocation_failure_leaves_a_consistent_model) {
    for (size_t k = 0; k < sizeof ALLOC_OPS / sizeof ALLOC_OPS[0]; k++) {
        for (int nusers = 60; nusers <= 64; nusers += 4) {
            bool failed = false;
            for (long n = 0; n < 24; n++) alloc_case(&ALLOC_OPS[k], nusers, n, &failed);
            if (nusers == 64 && ALLOC_OPS[k].allocates)
                cr_expect(failed, "[%s] some injected failure reached the caller", ALLOC_OPS[k].name);
        }
    }
}

/* ---- memory and tick cost --------------------------------------------------------------- */

/* Creates nusers users (status events, no device) then ndev devices spread
 * over them, and reports bytes per user and per device; with several devices
 * per user, "device+user" is a device with its share of a user. */
static void memory_report(uint32_t nusers, uint32_t ndev) {
    recorder r;
    size_t base = pd_alloc_live_bytes();
    pd_model *m = model_new(&CFG, &r);
    r.keep = false;
    char user[16], conn[16], srv[8];
    size_t empty = pd_alloc_live_bytes();
    for (uint32_t i = 0; i < nusers; i++) {
        snprintf(user, sizeof user, "user%06u", i);
        apply_ok(m, ev_status(user, PD_CHOSEN_AUTO), 0);
    }
    size_t with_users = pd_alloc_live_bytes();
    for (uint32_t i = 0; i < ndev; i++) {
        snprintf(user, sizeof user, "user%06u", i % nusers);
        snprintf(conn, sizeof conn, "conn%07u", i);
        snprintf(srv, sizeof srv, "srv%u", i % 16);
        apply_ok(m, ev_connect(srv, conn, user), 0);
    }
    size_t full = pd_alloc_live_bytes();
    cr_assert_eq(stats(m).users, nusers);
    cr_assert_eq(stats(m).devices, ndev);
    double per_user = (double)(with_users - empty) / nusers;
    double per_dev = (double)(full - with_users) / ndev;
    char line[200];
    snprintf(line, sizeof line, "model memory: %u users x %u device%s: %.0f bytes/device+user "
             "(%.0f bytes/user, %.0f bytes/device)", nusers, ndev / nusers,
             ndev == nusers ? "" : "s", (double)(full - empty) / ndev, per_user, per_dev);
    printf("%s\n", line);
    fflush(stdout);
    cr_log_info("%s", line);
    /* The aim is < 200 bytes each; only a gross regression fails here. */
    cr_expect_lt(per_user, 1000.0);
    cr_expect_lt(per_dev, 1000.0);
    model_free(m, &r, base);
}

Test(presence, memory_100k_users_one_device_each) { memory_report(100000, 100000); }
Test(presence, memory_100k_devices_over_10k_users) { memory_report(10000, 100000); }

Test(presence, tick_with_nothing_due_touches_no_timer) {
    enum { N = 100000 };
    const uint64_t far = 1000000000ULL;
    size_t base = pd_alloc_live_bytes();
    recorder r;
    pd_model_cfg cfg = {.idle_timeout_ms = far, .offline_delay_ms = 500, .server_timeout_ms = far};
    pd_model *m = model_new(&cfg, &r);
    r.keep = false;
    char id[16];
    for (uint32_t i = 0; i < N; i++) {
        snprintf(id, sizeof id, "t%06u", i);
        /* Connected in decreasing time order: each goes first in the idle
         * queue (a clock going back; found from the queue's head). */
        apply_ok(m, ev_connect("s1", id, id), 1000 + (uint64_t)(N - 1 - i));
    }
    pd_model_stats before = stats(m);
    cr_assert_eq(before.timers, (uint64_t)N);
    cr_expect_eq(pd_model_next_due(m), far + 1000, "the earliest due time");
    /* Snapshot the idle queue: a tick that took or moved any device would
     * change its order. */
    const pd_device **copy = malloc(sizeof *copy * N);
    cr_assert_not_null(copy);
    uint32_t n = 0;
    for (const pd_device *d = pd__dev_at(m, m->idle_head); d && n < N; d = pd__dev_at(m, d->inext))
        copy[n++] = d;
    cr_assert_eq(n, (uint32_t)N);
    long notes = r.total;
    for (uint64_t t = 2000; t < far; t += far / 8) pd_model_tick(m, t);
    pd_model_tick(m, far + 999);
    pd_model_stats after = stats(m);
    cr_expect_eq(after.timers, before.timers);
    cr_expect_eq(after.changes, before.changes);
    cr_expect_eq(r.total, notes);
    n = 0;
    for (const pd_device *d = pd__dev_at(m, m->idle_head); d && n < N; d = pd__dev_at(m, d->inext))
        n += copy[n] == d;
    cr_expect_eq(n, (uint32_t)N, "no device was moved in the idle queue");
    cr_expect_eq(m->timers.n, 0u, "nothing else was armed");
    cr_expect_eq(pd_model_next_due(m), far + 1000);
    /* At the earliest due time exactly one device goes idle. */
    pd_model_tick(m, far + 1000);
    cr_expect_eq(stats(m).timers, before.timers - 1);
    cr_expect_eq(r.total, notes + 1);
    cr_expect_eq(pd_model_next_due(m), far + 1001);
    free(copy);
    model_free(m, &r, base);
}

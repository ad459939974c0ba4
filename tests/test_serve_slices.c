/* test_serve_slices.c - a state transfer served in slices (issue #11,
 * finding 4): with io.reply_keep set, a request for a large partition
 * returns after one slice, pd_repl_tick sends the rest a slice at a time,
 * and the parts together hold every device with the seq the transfer
 * started at; a second request from the same peer for the same origin
 * replaces the first; a stranger's request is answered "unknown" at once. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sync/repl.h"

#define NOW 1700000000000ULL
#define DEVICES 5000

typedef struct {
    uint8_t **parts;
    size_t *lens;
    int n, cap;
} sent_parts;

static sent_parts sent;
static int kept_alive;

static void send_part(void *ud, void *reply_ctx, const void *buf, size_t len) {
    (void)ud;
    cr_assert(reply_ctx != NULL);
    if (sent.n == sent.cap) {
        sent.cap = sent.cap ? 2 * sent.cap : 64;
        sent.parts = realloc(sent.parts, sizeof *sent.parts * (size_t)sent.cap);
        sent.lens = realloc(sent.lens, sizeof *sent.lens * (size_t)sent.cap);
    }
    sent.parts[sent.n] = malloc(len);
    memcpy(sent.parts[sent.n], buf, len);
    sent.lens[sent.n++] = len;
}

static void *keep(void *ud, void *reply_ctx) {
    (void)ud;
    kept_alive++;
    return reply_ctx;
}

static void unkeep(void *ud, void *kept) {
    (void)ud;
    (void)kept;
    kept_alive--;
}

static void sent_clear(void) {
    for (int i = 0; i < sent.n; i++) free(sent.parts[i]);
    free(sent.parts);
    free(sent.lens);
    memset(&sent, 0, sizeof sent);
}

static pd_repl *node_with_devices(void) {
    static const pd_repl_cfg cfg = {.sync_interval_ms = 100, .node_timeout_ms = 300, .inc = NOW,
                                    .max_msg_bytes = 65536};
    static const pd_model_cfg mcfg = {.idle_timeout_ms = 600000, .offline_delay_ms = 1000,
                                      .server_timeout_ms = 600000};
    pd_repl_io io = {.send_sync_part = send_part, .reply_keep = keep, .reply_free = unkeep};
    pd_repl *r = pd_repl_new(&cfg, &mcfg, pd_str_c("n1"), &io, NOW);
    cr_assert(r != NULL);
    char conn[32], user[32];
    for (int k = 0; k < DEVICES; k++) {
        pd_apply_result res;
        pd_err err;
        snprintf(conn, sizeof conn, "c%d", k);
        snprintf(user, sizeof user, "u%d", k);
        pd_event ev = {.type = PD_EV_CONNECT, .server = pd_str_c("s1"), .conn = pd_str_c(conn),
                       .user = pd_str_c(user), .device = pd_str_c("web")};
        cr_assert_eq(pd_repl_local(r, &ev, NOW, &res, &err), PD_OK, "%s", err.msg);
    }
    pd_repl_flush(r);
    /* n2 is a live peer: its own heartbeat. */
    static pd_heartbeat hb;
    msgpack_sbuffer sb;
    pd_err err;
    hb = (pd_heartbeat){.node = pd_str_c("n2"), .inc = NOW, .ready = true, .nvc = 1,
                        .wall = NOW};
    hb.vc[0] = (pd_vc_entry){pd_str_c("n2"), NOW, 0};
    msgpack_sbuffer_init(&sb);
    pd_heartbeat_encode(&sb, &hb);
    cr_assert_eq(pd_repl_on_heartbeat(r, sb.data, sb.size, NOW, &err), PD_OK);
    msgpack_sbuffer_destroy(&sb);
    return r;
}

static void ask(pd_repl *r, const char *asker, uint64_t req) {
    static int reply_ctx;
    msgpack_sbuffer sb;
    pd_err err;
    pd_sync_req q = {pd_str_c(asker), pd_str_c("n1"), req};
    msgpack_sbuffer_init(&sb);
    pd_sync_req_encode(&sb, &q);
    cr_assert_eq(pd_repl_on_sync_request(r, sb.data, sb.size, &reply_ctx, &err), PD_OK);
    msgpack_sbuffer_destroy(&sb);
}

Test(serve_slices, a_large_partition_is_served_over_several_ticks) {
    pd_repl *r = node_with_devices();
    ask(r, "n2", 7);
    cr_assert_eq(pd_repl_serving(r), 1, "the transfer was served at once");
    for (int i = 0; i < sent.n; i++) {
        pd_sync_part sp;
        pd_err err;
        cr_assert_eq(pd_sync_part_decode(sent.parts[i], sent.lens[i], &sp, &err), PD_OK);
        cr_assert(!sp.last, "done after one slice");
    }
    int ticks = 0;
    while (pd_repl_serving(r) > 0) {
        cr_assert(++ticks < 10000, "the transfer never ends");
        pd_repl_tick(r, NOW + 1);
    }
    cr_assert_gt(ticks, 1, "one tick served it all: no slices");
    cr_assert_eq(kept_alive, 0, "a kept reply was not freed");
    /* Every device came, the last part says so, with the starting seq. */
    static bool seen[DEVICES];
    memset(seen, 0, sizeof seen);
    bool last = false;
    for (int i = 0; i < sent.n; i++) {
        pd_sync_part sp;
        pd_err err;
        pd_ops_iter it;
        pd_op op;
        cr_assert_eq(pd_sync_part_decode(sent.parts[i], sent.lens[i], &sp, &err), PD_OK);
        cr_assert_eq(sp.part, (uint32_t)i);
        cr_assert_eq(sp.req, 7);
        cr_assert(sp.known && sp.inc == NOW && sp.seq >= 1);
        last = sp.last;
        pd_ops_iter_init(&it, &sp.ops);
        while (pd_ops_next(&it, &op)) {
            if (op.kind != PD_OP_ADD) continue;
            int k = atoi(op.conn.p + 1);
            cr_assert(k >= 0 && k < DEVICES);
            seen[k] = true;
        }
    }
    cr_assert(last, "no last part");
    for (int k = 0; k < DEVICES; k++) cr_assert(seen[k], "device c%d missing", k);
    pd_repl_free(r);
    sent_clear();
}

Test(serve_slices, a_newer_request_replaces_the_one_in_flight) {
    pd_repl *r = node_with_devices();
    ask(r, "n2", 1);
    ask(r, "n2", 2);
    cr_assert_eq(pd_repl_serving(r), 1, "two transfers in flight for one requester and origin");
    cr_assert_eq(kept_alive, 1);
    while (pd_repl_serving(r) > 0) pd_repl_tick(r, NOW + 1);
    pd_sync_part sp;
    pd_err err;
    cr_assert_eq(pd_sync_part_decode(sent.parts[sent.n - 1], sent.lens[sent.n - 1], &sp, &err),
                 PD_OK);
    cr_assert(sp.last && sp.req == 2, "the last part is not the newer request's");
    pd_repl_free(r);
    sent_clear();
}

Test(serve_slices, a_stranger_is_answered_unknown_at_once) {
    pd_repl *r = node_with_devices();
    ask(r, "n9", 1);
    cr_assert_eq(pd_repl_serving(r), 0);
    cr_assert_eq(sent.n, 1);
    pd_sync_part sp;
    pd_err err;
    cr_assert_eq(pd_sync_part_decode(sent.parts[0], sent.lens[0], &sp, &err), PD_OK);
    cr_assert(sp.last && !sp.known && sp.ops.n == 0);
    pd_repl_stats st;
    pd_repl_stats_get(r, &st);
    cr_assert_eq(st.refused[PD_REFUSE_NOT_A_PEER], 1);
    pd_repl_free(r);
    sent_clear();
}

/* it_errors.c - every error code of docs/protocol.md section 7 as a request
 * reply from a real presenced, that bad input changes nothing, and that a
 * plain publish of bad input is counted, logged and dropped. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "harness.h"

static h_nats ns;
static h_node node;
static natsConnection *nc;

static const char *const env[] = {"PRESENCE_MAX_MSG_BYTES=4096", NULL};

static void setup(void) {
    h_nats_start(&ns);
    h_node_start(&node, &ns, "e1", env);
    nc = h_connect(&ns);
}

static void teardown(void) {
    natsConnection_Destroy(nc);
    h_node_stop_clean(&node);
    h_nats_stop(&ns);
}

TestSuite(errors, .init = setup, .fini = teardown, .timeout = 60);

/* A map of string pairs, packed: keys and values alternate; NULL ends. */
static void pack_pairs(msgpack_sbuffer *sb, const char *const *kv) {
    msgpack_packer pk;
    uint32_t n = 0;
    while (kv[2 * n]) n++;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, n);
    for (uint32_t i = 0; i < n; i++) {
        pd_pack_cstr(&pk, kv[2 * i]);
        pd_pack_cstr(&pk, kv[2 * i + 1]);
    }
}

static void expect_error(const char *subject, const void *data, size_t len, const char *code) {
    pd_reply rep;
    cr_assert(h_raw_request(nc, subject, data, len, &rep), "no reply on %s", subject);
    cr_assert(!rep.ok, "accepted, expected %s", code);
    cr_assert_str_eq(rep.code, code, "message: %s", rep.message);
    cr_assert_neq(rep.message[0], '\0', "an error carries a message");
}

static void expect_event_error(const char *const *kv, const char *code) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pack_pairs(&sb, kv);
    expect_error("presence.events.e1", sb.data, sb.size, code);
    msgpack_sbuffer_destroy(&sb);
}

static int devices_total(void) {
    natsMsg *m = h_request(nc, "presence.query.cluster", NULL, 0);
    cr_assert(m != NULL);
    /* Find "devices" in the single node entry. */
    mp_reader r;
    uint32_t n, k;
    pd_str key, s;
    int64_t devices = -1;
    mpr_init(&r, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    cr_assert(mpr_map(&r, &n) && pd_read_key(&r, &key) && mpr_str(&r, &s));
    cr_assert(pd_read_key(&r, &key) && mpr_array(&r, &k) && k == 1 && mpr_map(&r, &n));
    for (uint32_t i = 0; i < n; i++) {
        cr_assert(pd_read_key(&r, &key));
        if (pd_str_eqc(key, "devices")) cr_assert(mpr_int(&r, &devices));
        else cr_assert(mpr_skip(&r));
    }
    natsMsg_Destroy(m);
    return (int)devices;
}

Test(errors, bad_msgpack) {
    expect_error("presence.events.e1", "\xc1", 1, "bad_msgpack");
    expect_error("presence.events.e1", "\xdd\xff\xff\xff\xff", 5, "bad_msgpack");
    expect_error("presence.events.e1", "\x93\x01\x02\x03", 4, "bad_msgpack");
    expect_error("presence.query.get", "\x81\xa5users", 7, "bad_msgpack");
}

Test(errors, bad_type) {
    expect_event_error((const char *const[]){"type", "teleport", "user", "u", NULL}, "bad_type");
}

Test(errors, missing_field) {
    expect_event_error((const char *const[]){"server", "s1", NULL}, "missing_field");
    expect_event_error((const char *const[]){"type", "connect", "server", "s1", "conn", "c1",
                                             "device", "web", NULL}, "missing_field");
    expect_error("presence.query.devices", "\x80", 1, "missing_field");
}

Test(errors, bad_id) {
    expect_event_error((const char *const[]){"type", "connect", "server", "s1", "conn", "c1",
                                             "user", "a b", "device", "web", NULL}, "bad_id");
    expect_event_error((const char *const[]){"type", "status", "user", "x.>", "status", "busy",
                                             NULL}, "bad_id");
    expect_event_error((const char *const[]){"type", "heartbeat", "server", "", NULL}, "bad_id");
}

Test(errors, too_large) {
    char text[300];
    memset(text, 'x', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    expect_event_error((const char *const[]){"type", "custom", "user", "u", "text", text, NULL},
                       "too_large");
    /* Above PRESENCE_MAX_MSG_BYTES (4096 here). */
    char *big = calloc(1, 5000);
    big[0] = (char)0xc0;
    expect_error("presence.events.e1", big, 5000, "too_large");
    expect_error("presence.query.get", big, 5000, "too_large");
    free(big);
}

Test(errors, bad_value) {
    expect_event_error((const char *const[]){"type", "status", "user", "u", "status", "sleepy",
                                             NULL}, "bad_value");
    /* An expiry in the past. */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    pd_pack_kv_str(&pk, "type", pd_str_c("custom"));
    pd_pack_kv_str(&pk, "user", pd_str_c("u"));
    pd_pack_kv_str(&pk, "text", pd_str_c("late"));
    pd_pack_kv_int(&pk, "expires_at", 1000);
    expect_error("presence.events.e1", sb.data, sb.size, "bad_value");
    msgpack_sbuffer_destroy(&sb);
    expect_error("presence.query.online", "\x81\xa6" "cursor" "\xa3" "abc", 12, "bad_value");
}

Test(errors, unknown_conn) {
    expect_event_error((const char *const[]){"type", "disconnect", "server", "s1", "conn", "nope",
                                             NULL}, "unknown_conn");
    expect_event_error((const char *const[]){"type", "activity", "server", "s1", "conn", "nope",
                                             NULL}, "unknown_conn");
    expect_event_error((const char *const[]){"type", "idle", "server", "s1", "conn", "nope",
                                             NULL}, "unknown_conn");
}

Test(errors, bad_input_changes_nothing) {
    pd_reply rep;
    pd_event ev = h_ev_connect("s1", "c1", "keep", "web");
    cr_assert(h_event(nc, "e1", &ev, &rep) && rep.ok);
    cr_assert_eq(devices_total(), 1);
    /* A sync whose second entry is bad must not apply its first entry. */
    pd_sync_conn conns[2] = {
        {pd_str_c("c9"), pd_str_c("new"), pd_str_c("web")},
        {pd_str_c("c10"), pd_str_c("bad user"), pd_str_c("web")},
    };
    pd_event sync = h_ev_server(PD_EV_SYNC, "s1");
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_event_encode(&sb, &sync, conns, 2);
    expect_error("presence.events.e1", sb.data, sb.size, "bad_id");
    msgpack_sbuffer_destroy(&sb);
    cr_assert_eq(devices_total(), 1);
    pd_view v;
    cr_assert(h_get(nc, "keep", NULL, &v, NULL, 0) && v.status == PD_PUB_ONLINE);
    cr_assert(h_get(nc, "new", NULL, &v, NULL, 0) && v.status == PD_PUB_OFFLINE);
}

Test(errors, plain_publish_is_logged_and_dropped) {
    natsConnection_Publish(nc, "presence.events.e1", "\xc1", 1);
    natsConnection_Flush(nc);
    cr_assert(H_POLL(h_log_contains(node.log, "bad_msgpack"), 5000), "logged in %s", node.log);
    cr_assert_eq(devices_total(), 0);
}

/* internal: a node whose allocations fail (test-only setting) answers
 * `internal` and keeps serving. */
Test(errors_internal, out_of_memory_is_internal, .timeout = 60) {
    static const char *const failing[] = {"PRESENCE_TEST_FAIL_ALLOCS=1", NULL};
    h_nats ns2;
    h_node nd;
    h_nats_start(&ns2);
    h_node_start(&nd, &ns2, "oom", failing);
    natsConnection *c = h_connect(&ns2);
    pd_event ev = h_ev_connect("s1", "c1", "newuser", "web");
    pd_reply rep;
    cr_assert(h_event(c, "oom", &ev, &rep));
    cr_assert(!rep.ok);
    cr_assert_str_eq(rep.code, "internal");
    pd_view v;
    cr_assert(h_get(c, "newuser", NULL, &v, NULL, 0), "still answering");
    cr_assert_eq(v.status, PD_PUB_OFFLINE, "nothing half-applied");
    natsConnection_Destroy(c);
    h_node_stop_clean(&nd);
    h_nats_stop(&ns2);
}

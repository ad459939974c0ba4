/* test_dash_json.c - the JSON that presence-dash serves (dash/dash_json.h)
 * and its fan-out of frames (dash/dash_hub.h): built from the messages the
 * cluster really sends (encoded with the project's own encoders), and bad
 * input refused. */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include "dash_hub.h"
#include "dash_json.h"
#include "wire/codec.h"
#include "wire/codec_repl.h"
#include "model/presence.h"

static json_t *parse(const char *text) {
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    cr_assert_not_null(j, "not JSON (%s): %s", e.text, text);
    return j;
}

static json_t *mp(const void *buf, size_t len) {
    pd_err err = {PD_OK, ""};
    json_t *j = dash_mp_json(buf, len, &err);
    cr_assert_not_null(j, "refused: %s", err.msg);
    return j;
}

Test(dash_json, msgpack_becomes_json_with_escapes) {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    msgpack_pack_str_with_body(&pk, "text", 4);
    msgpack_pack_str_with_body(&pk, "a \"b\"\n</script>\\", 16);
    msgpack_pack_str_with_body(&pk, "n", 1);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_int64(&pk, -5);
    msgpack_pack_uint64(&pk, 1700000000000);
    msgpack_pack_true(&pk);
    msgpack_pack_nil(&pk);
    msgpack_pack_str_with_body(&pk, "f", 1);
    msgpack_pack_double(&pk, 1.5);
    msgpack_pack_str_with_body(&pk, "bad", 3);
    msgpack_pack_str_with_body(&pk, "x\xff" "y", 3);
    msgpack_pack_str_with_body(&pk, "emoji", 5);
    msgpack_pack_str_with_body(&pk, "\xf0\x9f\x8c\xb4", 4);
    json_t *j = mp(sb.data, sb.size);
    cr_expect_str_eq(json_string_value(json_object_get(j, "text")), "a \"b\"\n</script>\\");
    json_t *n = json_object_get(j, "n");
    cr_assert_eq(json_array_size(n), 4);
    cr_expect_eq(json_integer_value(json_array_get(n, 0)), -5);
    cr_expect_eq(json_integer_value(json_array_get(n, 1)), 1700000000000);
    cr_expect(json_is_true(json_array_get(n, 2)));
    cr_expect(json_is_null(json_array_get(n, 3)));
    cr_expect(json_is_null(json_object_get(j, "f")), "floats are not in the contract: null");
    cr_expect_str_eq(json_string_value(json_object_get(j, "bad")), "x\xef\xbf\xbdy");
    cr_expect_str_eq(json_string_value(json_object_get(j, "emoji")), "\xf0\x9f\x8c\xb4");
    /* and what is served parses back to the same document */
    size_t len;
    char *frame = dash_sse_frame("x", j, &len);
    cr_assert_not_null(frame);
    cr_expect_eq(strlen(frame), len);
    cr_expect(strncmp(frame, "event: x\ndata: ", 15) == 0);
    cr_expect_str_eq(frame + len - 2, "\n\n");
    frame[len - 2] = '\0';
    cr_expect_null(strchr(frame + 15, '\n'), "one data line: no raw newline in the JSON");
    json_t *back = parse(frame + 15);
    cr_expect(json_equal(back, j));
    json_decref(back);
    free(frame);
    json_decref(j);
    msgpack_sbuffer_destroy(&sb);
}

Test(dash_json, bad_msgpack_is_refused) {
    static const struct {
        const char *bytes;
        size_t n;
        pd_status want;
    } cases[] = {
        {"\x82\xa1" "a", 3, PD_EBADMSGPACK},                 /* truncated */
        {"\x81\x01\x02", 3, PD_EBADVALUE},                    /* integer key */
        {"\x80\x80", 2, PD_EBADMSGPACK},                      /* trailing bytes */
        {"\xdd\xff\xff\xff\xff", 5, PD_EBADMSGPACK},          /* huge declared array */
        {"\xc1", 1, PD_EBADMSGPACK},                          /* never used byte */
        {"", 0, PD_EBADMSGPACK},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pd_err err = {PD_OK, ""};
        cr_expect_null(dash_mp_json(cases[i].bytes, cases[i].n, &err), "case %zu accepted", i);
        cr_expect_eq(err.code, cases[i].want, "case %zu: %s", i, err.msg);
        cr_expect_neq(err.msg[0], '\0', "case %zu: no message", i);
    }
    /* 40 nested arrays: deeper than the reader allows */
    char deep[41];
    memset(deep, 0x91, 40);
    deep[40] = '\xc0';
    pd_err err = {PD_OK, ""};
    cr_expect_null(dash_mp_json(deep, sizeof deep, &err));
}

Test(dash_json, notification) {
    pd_view v = {.user = pd_str_c("alice"), .status = PD_PUB_BUSY, .text = pd_str_c("On \"holiday\""),
                 .emoji = pd_str_c("\xf0\x9f\x8c\xb4"), .expires_at = 1700604800000,
                 .last_seen = 1700000360000, .ts = 1700000360004};
    msgpack_sbuffer sb;
    pd_err err = {PD_OK, ""};
    msgpack_sbuffer_init(&sb);
    pd_notification_encode(&sb, &v);
    json_t *j = dash_note_json(sb.data, sb.size, 1700000360010, &err);
    cr_assert_not_null(j, "%s", err.msg);
    json_t *want = parse("{\"user\":\"alice\",\"status\":\"busy\",\"text\":\"On \\\"holiday\\\"\","
                         "\"emoji\":\"\xf0\x9f\x8c\xb4\",\"expires_at\":1700604800000,"
                         "\"last_seen\":1700000360000,\"ts\":1700000360004,\"at\":1700000360010}");
    cr_expect(json_equal(j, want), "got %s", json_dumps(j, JSON_COMPACT));
    json_decref(want);
    json_decref(j);
    /* a notification with a key missing is refused */
    err = (pd_err){PD_OK, ""};
    cr_expect_null(dash_note_json(sb.data, sb.size - 9, 0, &err));
    cr_expect_neq(err.code, PD_OK);
    cr_expect_null(dash_note_json("\x80", 1, 0, &err), "an empty map is no notification");
    msgpack_sbuffer_destroy(&sb);
}

static void get_reply(msgpack_sbuffer *sb, pd_public st, uint32_t devices) {
    msgpack_packer pk;
    pd_view v = {.user = pd_str_c("bob"), .status = st, .last_seen = 5, .devices = devices};
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    pd_reply_fresh f = {1700000000000ULL, false};
    v.stale = devices > 0;
    pd_get_reply_begin(&pk, 1, &f);
    pd_get_reply_user(&pk, &v);
    pd_get_reply_end(&pk, &f);
}

Test(dash_json, user_lookup_public_own_and_devices) {
    msgpack_sbuffer pub, own, dev;
    msgpack_packer pk;
    get_reply(&pub, PD_PUB_OFFLINE, 0);
    get_reply(&own, PD_PUB_INVISIBLE, 1);
    msgpack_sbuffer_init(&dev);
    msgpack_packer_init(&pk, &dev, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "user", 4);
    msgpack_pack_str_with_body(&pk, "bob", 3);
    msgpack_pack_str_with_body(&pk, "devices", 7);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "conn", 4);
    msgpack_pack_str_with_body(&pk, "c-1", 3);
    msgpack_pack_str_with_body(&pk, "node", 4);
    msgpack_pack_str_with_body(&pk, "n1", 2);
    msgpack_pack_str_with_body(&pk, "state", 5);
    msgpack_pack_str_with_body(&pk, "idle", 4);
    json_t *j = dash_user_json("bob", pub.data, pub.size, own.data, own.size, dev.data, dev.size);
    cr_assert_not_null(j);
    cr_expect_str_eq(json_string_value(json_object_get(j, "user")), "bob");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(j, "public"), "status")),
                     "offline");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(j, "own"), "status")),
                     "invisible");
    cr_expect_eq(json_integer_value(json_object_get(json_object_get(j, "own"), "devices")), 1);
    cr_expect(json_is_true(json_object_get(json_object_get(j, "own"), "stale")), "an entry's stale");
    cr_expect(json_is_null(json_object_get(j, "as_of")), "a devices reply without as_of");
    cr_expect(json_is_false(json_object_get(j, "stale")));
    json_t *d0 = json_array_get(json_object_get(j, "devices"), 0);
    cr_expect_str_eq(json_string_value(json_object_get(d0, "conn")), "c-1");
    cr_expect_str_eq(json_string_value(json_object_get(d0, "state")), "idle");
    cr_expect_eq(json_array_size(json_object_get(j, "errors")), 0);
    json_decref(j);

    /* a devices reply with its freshness */
    msgpack_sbuffer fresh;
    pd_reply_fresh f = {1700000000123ULL, true};
    msgpack_sbuffer_init(&fresh);
    msgpack_packer_init(&pk, &fresh, msgpack_sbuffer_write);
    pd_devices_reply_begin(&pk, pd_str_c("bob"), 0, &f);
    pd_devices_reply_end(&pk, &f);
    j = dash_user_json("bob", pub.data, pub.size, own.data, own.size, fresh.data, fresh.size);
    cr_assert_not_null(j);
    cr_expect_eq(json_integer_value(json_object_get(j, "as_of")), 1700000000123LL);
    cr_expect(json_is_true(json_object_get(j, "stale")));
    json_decref(j);
    msgpack_sbuffer_destroy(&fresh);

    /* no answer, a refusal and garbage: null fields, one error line each */
    msgpack_sbuffer refused;
    msgpack_sbuffer_init(&refused);
    pd_reply_error_encode(&refused, PD_EBADID, "bad id");
    j = dash_user_json("bob", NULL, 0, refused.data, refused.size, "\xc1", 1);
    cr_assert_not_null(j);
    cr_expect(json_is_null(json_object_get(j, "public")));
    cr_expect(json_is_null(json_object_get(j, "own")));
    cr_expect(json_is_null(json_object_get(j, "devices")));
    json_t *errors = json_object_get(j, "errors");
    cr_assert_eq(json_array_size(errors), 3);
    cr_expect(strstr(json_string_value(json_array_get(errors, 0)), "no node answered"));
    cr_expect(strstr(json_string_value(json_array_get(errors, 1)), "refused: bad_id"));
    cr_expect(strstr(json_string_value(json_array_get(errors, 2)), "bad reply"));
    json_decref(j);
    msgpack_sbuffer_destroy(&refused);
    msgpack_sbuffer_destroy(&pub);
    msgpack_sbuffer_destroy(&own);
    msgpack_sbuffer_destroy(&dev);
}

Test(dash_json, agreement_of_the_nodes) {
    const char *ids[3] = {"n1", "n2", "n3"};
    pd_str a = pd_str_c("\x81\xa1x\x01"), b = pd_str_c("\x81\xa1x\x02"), none = {0};
    /* a and b with each node's own freshness: the same answers */
    pd_str a5 = pd_str_c("\x82\xa1x\x01\xa5" "as_of\x05"),
           b6 = pd_str_c("\x83\xa1x\x02\xa5" "as_of\x06\xa5" "stale\xc3");
    struct {
        pd_str get[3], dev[3];
        const char *want;
    } cases[] = {
        {{a, a, a}, {b, b, b}, "{\"agree\":true,\"nodes\":[{\"node\":\"n1\",\"answer\":1},"
                               "{\"node\":\"n2\",\"answer\":1},{\"node\":\"n3\",\"answer\":1}]}"},
        {{a, b, a}, {b, b, b}, "{\"agree\":false,\"nodes\":[{\"node\":\"n1\",\"answer\":1},"
                               "{\"node\":\"n2\",\"answer\":2},{\"node\":\"n3\",\"answer\":1}]}"},
        {{a, a, a}, {b, a, b}, "{\"agree\":false,\"nodes\":[{\"node\":\"n1\",\"answer\":1},"
                               "{\"node\":\"n2\",\"answer\":2},{\"node\":\"n3\",\"answer\":1}]}"},
        {{a, a5, a}, {b6, b, b}, "{\"agree\":true,\"nodes\":[{\"node\":\"n1\",\"answer\":1},"
                                "{\"node\":\"n2\",\"answer\":1},{\"node\":\"n3\",\"answer\":1}]}"},
        {{a, none, a}, {b, b, b}, "{\"agree\":null,\"nodes\":[{\"node\":\"n1\",\"answer\":1},"
                                  "{\"node\":\"n2\",\"answer\":0},{\"node\":\"n3\",\"answer\":1}]}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *got = dash_agreement_json(ids, cases[i].get, cases[i].dev, 3);
        json_t *want = parse(cases[i].want);
        cr_expect(json_equal(got, want), "case %zu: %s", i, json_dumps(got, JSON_COMPACT));
        json_decref(got);
        json_decref(want);
    }
    json_t *empty = dash_agreement_json(ids, NULL, NULL, 0);
    cr_expect(json_is_null(json_object_get(empty, "agree")), "no node: no verdict");
    json_decref(empty);
}

/* ---- the nodes table ---- */

typedef struct {
    const char *id;
    uint64_t inc, seq, events, notes;
    bool leaving, ready;
    const char *peers[3];
    uint64_t peer_seq[3];
} hb_spec;

static void feed(dash_nodes *t, const hb_spec *s, uint64_t now) {
    pd_heartbeat *hb = calloc(1, sizeof *hb);
    msgpack_sbuffer sb;
    pd_err err = {PD_OK, ""};
    hb->node = pd_str_c(s->id);
    hb->inc = s->inc;
    hb->seq = s->seq;
    hb->ready = s->ready;
    hb->leaving = s->leaving;
    hb->devices = 7;
    hb->users = 3;
    hb->events = s->events;
    hb->notifications = s->notes;
    hb->snapshot_at = now - 1500;
    hb->vc[hb->nvc++] = (pd_vc_entry){pd_str_c(s->id), s->inc, s->seq};
    for (int i = 0; i < 3 && s->peers[i]; i++)
        hb->vc[hb->nvc++] = (pd_vc_entry){pd_str_c(s->peers[i]), 100, s->peer_seq[i]};
    msgpack_sbuffer_init(&sb);
    pd_heartbeat_encode(&sb, hb);
    cr_assert_eq(dash_nodes_heartbeat(t, sb.data, sb.size, now, &err), PD_OK, "%s", err.msg);
    msgpack_sbuffer_destroy(&sb);
    free(hb);
}

static json_t *node_of(json_t *doc, const char *id) {
    json_t *n;
    size_t i;
    json_array_foreach(json_object_get(doc, "nodes"), i, n)
        if (strcmp(json_string_value(json_object_get(n, "node")), id) == 0) return n;
    cr_assert_fail("no node %s", id);
    return NULL;
}

static json_int_t behind(json_t *node, const char *peer) {
    json_t *l;
    size_t i;
    json_array_foreach(json_object_get(node, "lag"), i, l)
        if (strcmp(json_string_value(json_object_get(l, "peer")), peer) == 0)
            return json_is_null(json_object_get(l, "behind"))
                       ? -1 : json_integer_value(json_object_get(l, "behind"));
    return -2;
}

#define STR(node, key) json_string_value(json_object_get(node, key))
#define INT(node, key) json_integer_value(json_object_get(node, key))

Test(dash_json, nodes_lag_rates_and_states) {
    dash_nodes *t = dash_nodes_new(3000, 3000);
    uint64_t t0 = 1700000000000;
    feed(t, &(hb_spec){"n2", 100, 50, 0, 0, false, true, {"n1"}, {40}}, t0);
    feed(t, &(hb_spec){"n1", 100, 40, 1000, 10, false, true, {"n2"}, {45}}, t0);
    feed(t, &(hb_spec){"n3", 100, 9, 0, 0, false, false, {"n1", "n2"}, {40, 50}}, t0);
    feed(t, &(hb_spec){"n1", 100, 42, 1200, 15, false, true, {"n2"}, {45}}, t0 + 1000);
    json_t *doc = dash_nodes_json(t, t0 + 1000);
    cr_expect_eq(INT(doc, "node_timeout_ms"), 3000);
    json_t *nodes = json_object_get(doc, "nodes");
    cr_assert_eq(json_array_size(nodes), 3);
    cr_expect_str_eq(STR(json_array_get(nodes, 0), "node"), "n1", "sorted by id");
    json_t *n1 = node_of(doc, "n1"), *n2 = node_of(doc, "n2"), *n3 = node_of(doc, "n3");
    cr_expect_str_eq(STR(n1, "state"), "up");
    cr_expect(json_is_true(json_object_get(n1, "alive")));
    cr_expect_eq(INT(n1, "devices"), 7);
    cr_expect_eq(INT(n1, "hb_age_ms"), 0);
    cr_expect_eq(INT(n1, "snapshot_age_ms"), 1500);
    cr_expect_eq(behind(n1, "n2"), 5, "n2 sent 50 deltas, n1 applied 45");
    cr_expect_eq(behind(n1, "n3"), -1, "n1's clock lacks n3: unknown");
    cr_expect(json_is_true(json_object_get(n1, "warn")), "an unknown peer colours the card");
    cr_expect_eq(behind(n2, "n1"), 2);
    cr_expect_eq(behind(n3, "n1"), 2);
    cr_expect_eq(behind(n3, "n2"), 0);
    cr_expect_str_eq(STR(n3, "state"), "warming");
    cr_expect_str_eq(STR(n2, "state"), "up");
    /* 200 events and 5 notifications in one second */
    cr_expect_float_eq(json_real_value(json_object_get(n1, "events_per_s")), 200.0, 0.01);
    cr_expect_float_eq(json_real_value(json_object_get(n1, "notifications_per_s")), 5.0, 0.01);
    json_t *series = json_object_get(n1, "series");
    cr_assert_eq(json_array_size(json_object_get(series, "t")), 1);
    cr_expect_eq(json_integer_value(json_array_get(json_object_get(series, "t"), 0)), t0 + 1000);
    cr_expect_eq(json_array_size(json_object_get(json_object_get(n2, "series"), "events")), 0);
    json_decref(doc);

    /* the loop's next frame: when n2 (last heard at t0) turns late */
    cr_expect_eq(dash_nodes_next_change(t, t0 + 1000), t0 + 1501);
    cr_expect_eq(dash_nodes_next_change(t, t0 + 2600), t0 + 3001, "then when n2 goes down");
    cr_expect_eq(dash_nodes_next_change(t, t0 + 9000), UINT64_MAX, "all down: nothing to come");
    /* late after half the timeout, down after it; leaving is down at once */
    feed(t, &(hb_spec){"n3", 100, 9, 0, 0, true, true, {"n1", "n2"}, {42, 50}}, t0 + 1000);
    doc = dash_nodes_json(t, t0 + 2600);
    cr_expect_str_eq(STR(node_of(doc, "n1"), "state"), "late");
    cr_expect_str_eq(STR(node_of(doc, "n2"), "state"), "late");
    cr_expect_str_eq(STR(node_of(doc, "n3"), "state"), "down");
    cr_expect(strstr(STR(node_of(doc, "n3"), "why"), "leaving"));
    cr_expect_eq(behind(node_of(doc, "n1"), "n3"), -2, "a down peer is not listed");
    json_decref(doc);
    doc = dash_nodes_json(t, t0 + 3001);
    cr_expect_str_eq(STR(node_of(doc, "n2"), "state"), "down", "silent past the timeout");
    cr_expect(json_is_false(json_object_get(node_of(doc, "n2"), "alive")));
    cr_expect(json_is_false(json_object_get(node_of(doc, "n2"), "warn")),
              "down is its own colour");
    json_decref(doc);

    /* an older incarnation is ignored; a newer one restarts the series */
    feed(t, &(hb_spec){"n1", 99, 1, 5, 0, false, true, {0}, {0}}, t0 + 3100);
    doc = dash_nodes_json(t, t0 + 3100);
    cr_expect_eq(INT(node_of(doc, "n1"), "inc"), 100);
    cr_expect_eq(INT(node_of(doc, "n1"), "seq"), 42);
    json_decref(doc);
    feed(t, &(hb_spec){"n1", 200, 1, 5, 0, false, true, {0}, {0}}, t0 + 3200);
    doc = dash_nodes_json(t, t0 + 3200);
    cr_expect_eq(INT(node_of(doc, "n1"), "inc"), 200);
    cr_expect_eq(json_array_size(json_object_get(json_object_get(node_of(doc, "n1"), "series"),
                                                 "t")), 0);
    json_decref(doc);
    /* samples older than the 5-minute window are not served */
    feed(t, &(hb_spec){"n1", 200, 2, 10, 0, false, true, {0}, {0}}, t0 + 4200);
    doc = dash_nodes_json(t, t0 + 4200 + DASH_WINDOW_MS + 1);
    cr_expect_eq(json_array_size(json_object_get(json_object_get(node_of(doc, "n1"), "series"),
                                                 "t")), 0);
    json_decref(doc);
    dash_nodes_free(t);
}

Test(dash_json, nodes_refuse_bad_heartbeats_and_too_many_nodes) {
    dash_nodes *t = dash_nodes_new(3000, 3000);
    pd_err err = {PD_OK, ""};
    cr_expect_neq(dash_nodes_heartbeat(t, "\x81\xa1v\x01", 4, 1, &err), PD_OK);
    cr_expect(strstr(err.msg, "missing"), "%s", err.msg);
    cr_expect_neq(dash_nodes_heartbeat(t, "\xc1", 1, 1, &err), PD_OK);
    for (int i = 0; i < DASH_NODES_MAX; i++) {
        char id[16];
        snprintf(id, sizeof id, "n%d", i);
        feed(t, &(hb_spec){id, 1, 1, 0, 0, false, true, {0}, {0}}, 100000);
    }
    pd_heartbeat *hb = calloc(1, sizeof *hb);
    msgpack_sbuffer sb;
    hb->node = pd_str_c("one-too-many");
    hb->inc = 1;
    msgpack_sbuffer_init(&sb);
    pd_heartbeat_encode(&sb, hb);
    cr_expect_eq(dash_nodes_heartbeat(t, sb.data, sb.size, 100000, &err), PD_ETOOLARGE,
                 "all 64 alive: no room");
    json_t *doc = dash_nodes_json(t, 100000);
    cr_expect_eq(json_array_size(json_object_get(doc, "nodes")), DASH_NODES_MAX);
    json_decref(doc);
    /* n5 keeps beating; the others go down: the newcomer takes a down one's place */
    feed(t, &(hb_spec){"n5", 1, 2, 0, 0, false, true, {0}, {0}}, 102000);
    cr_expect_eq(dash_nodes_heartbeat(t, sb.data, sb.size, 103500, &err), PD_OK, "%s", err.msg);
    doc = dash_nodes_json(t, 103500);
    cr_expect_eq(json_array_size(json_object_get(doc, "nodes")), DASH_NODES_MAX);
    cr_expect_str_eq(STR(node_of(doc, "n5"), "state"), "up", "an alive node is never forgotten");
    node_of(doc, "one-too-many");
    json_decref(doc);
    msgpack_sbuffer_destroy(&sb);
    free(hb);
    dash_nodes_free(t);
}

/* The socket servers: from a real model (events from two servers, one of
 * them with heartbeats) through the heartbeat to the dashboard's list. */
static void apply(pd_model *m, pd_event ev, uint64_t now) {
    pd_apply_result res;
    pd_err err = {PD_OK, ""};
    cr_assert_eq(pd_model_apply(m, &ev, now, &res, &err), PD_OK, "%s", err.msg);
}

Test(dash_json, socket_servers_from_the_model_to_the_page) {
    pd_model_cfg cfg = {.idle_timeout_ms = 60000, .offline_delay_ms = 1000,
                        .server_timeout_ms = 3000};
    pd_model *m = pd_model_new(&cfg, pd_str_c("n1"), NULL, NULL);
    uint64_t t0 = 1700000000000;
    cr_assert_not_null(m);
    pd_event c = {.type = PD_EV_CONNECT, .server = pd_str_c("ws-1"), .conn = pd_str_c("c1"),
                  .user = pd_str_c("alice"), .device = pd_str_c("web")};
    apply(m, c, t0);
    c.conn = pd_str_c("c2");
    apply(m, c, t0 + 10);
    c.server = pd_str_c("ws-2");
    c.conn = pd_str_c("c3");
    apply(m, c, t0 + 20);
    apply(m, (pd_event){.type = PD_EV_HEARTBEAT, .server = pd_str_c("ws-2"), .seq = 1}, t0 + 500);

    pd_heartbeat *hb = calloc(1, sizeof *hb);
    hb->node = pd_str_c("n1");
    hb->inc = 1;
    hb->ready = true;
    hb->nservers = pd_model_servers(m, hb->servers, PD_HB_SERVERS_MAX);
    cr_assert_eq(hb->nservers, 2, "the two servers that sent events");
    cr_expect_eq(pd_model_servers(m, hb->servers, 1), 1, "max is kept");
    hb->nservers = pd_model_servers(m, hb->servers, PD_HB_SERVERS_MAX);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_heartbeat_encode(&sb, hb);
    dash_nodes *t = dash_nodes_new(3000, 2000);
    pd_err err = {PD_OK, ""};
    cr_assert_eq(dash_nodes_heartbeat(t, sb.data, sb.size, t0 + 1000, &err), PD_OK, "%s", err.msg);
    json_t *doc = dash_nodes_json(t, t0 + 1000), *srv = json_object_get(doc, "servers");
    cr_assert_eq(json_array_size(srv), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *e = json_array_get(srv, i);
        bool ws1 = strcmp(STR(e, "server"), "ws-1") == 0;
        cr_expect_str_eq(STR(e, "node"), "n1");
        cr_expect_eq(INT(e, "connections"), ws1 ? 2 : 1);
        cr_expect_eq(INT(e, "last_heard_ms"), ws1 ? 990 : 500);
        cr_expect(json_is_true(json_object_get(e, "heartbeats")) == !ws1);
        cr_expect(json_is_true(json_object_get(e, "alive")));
    }
    json_decref(doc);
    /* 2.6 s later: ws-2, which sends heartbeats, is silent past the server
     * timeout; ws-1 never promised any and stays alive with its node */
    cr_assert_eq(dash_nodes_heartbeat(t, sb.data, sb.size, t0 + 2600, &err), PD_OK);
    doc = dash_nodes_json(t, t0 + 2600);
    srv = json_object_get(doc, "servers");
    for (size_t i = 0; i < 2; i++) {
        json_t *e = json_array_get(srv, i);
        bool ws1 = strcmp(STR(e, "server"), "ws-1") == 0;
        cr_expect(json_is_true(json_object_get(e, "alive")) == ws1, "%s", STR(e, "server"));
    }
    json_decref(doc);
    doc = dash_nodes_json(t, t0 + 2600 + 3001);
    json_t *e = json_array_get(json_object_get(doc, "servers"), 0);
    cr_expect(json_is_false(json_object_get(e, "alive")), "a down node's servers are down");
    json_decref(doc);
    dash_nodes_free(t);

    /* our clock 30 s behind the node's: ages are measured on the node's
     * clock up to its heartbeat (its `wall`), then on ours */
    hb->wall = t0 + 1000;
    hb->snapshot_at = t0 + 400;
    msgpack_sbuffer_clear(&sb);
    pd_heartbeat_encode(&sb, hb);
    t = dash_nodes_new(3000, 2000);
    cr_assert_eq(dash_nodes_heartbeat(t, sb.data, sb.size, t0 - 29000, &err), PD_OK, "%s", err.msg);
    doc = dash_nodes_json(t, t0 - 28900);
    cr_expect_eq(INT(node_of(doc, "n1"), "snapshot_age_ms"), 700);
    json_t *one;
    size_t k;
    json_array_foreach(json_object_get(doc, "servers"), k, one)
        cr_expect_eq(INT(one, "last_heard_ms"),
                     strcmp(STR(one, "server"), "ws-1") == 0 ? 1090 : 600);
    json_decref(doc);
    dash_nodes_free(t);
    msgpack_sbuffer_destroy(&sb);
    free(hb);
    pd_model_free(m);
}

/* ---- the hub ---- */

static void pub(dash_hub *h, dash_frame_kind k, const char *s) {
    dash_hub_publish(h, k, strdup(s), strlen(s));
}

Test(dash_hub, join_stream_and_stop) {
    dash_hub *h = dash_hub_new();
    uint64_t pos;
    size_t len;
    bool stopped;
    char *empty = dash_hub_state(h);
    cr_expect_str_eq(empty, "{}");
    free(empty);
    pub(h, DASH_FRAME_NODES, "event: nodes\ndata: {\"a\":1}\n\n");
    pub(h, DASH_FRAME_NOTE, "event: note\ndata: 1\n\n");
    pub(h, DASH_FRAME_NODES, "event: nodes\ndata: {\"a\":2}\n\n");
    pub(h, DASH_FRAME_CLUSTER, "event: cluster\ndata: 3\n\n");
    pub(h, DASH_FRAME_NOTE, "event: note\ndata: 2\n\n");
    char *first = dash_hub_join(h, &pos, &len);
    cr_expect_str_eq(first, "event: nodes\ndata: {\"a\":2}\n\nevent: cluster\ndata: 3\n\n"
                            "event: note\ndata: 1\n\nevent: note\ndata: 2\n\n");
    cr_expect_eq(len, strlen(first));
    free(first);
    char *st = dash_hub_state(h);
    cr_expect_str_eq(st, "{\"a\":2}");
    free(st);
    cr_expect_null(dash_hub_next(h, &pos, &len, 10, &stopped), "nothing new: times out");
    cr_expect_not(stopped);
    pub(h, DASH_FRAME_NOTE, "event: note\ndata: 3\n\n");
    char *f = dash_hub_next(h, &pos, &len, 10, &stopped);
    cr_expect_str_eq(f, "event: note\ndata: 3\n\n");
    free(f);
    /* a reader a whole ring behind skips to the oldest frame still held */
    uint64_t old = pos;
    for (int i = 0; i < DASH_HUB_RING + 5; i++) pub(h, DASH_FRAME_NOTE, "event: note\ndata: x\n\n");
    f = dash_hub_next(h, &old, &len, 10, &stopped);
    cr_expect_not_null(f);
    free(f);
    cr_expect_eq(old, pos + 5 + 1);
    /* the history keeps the last DASH_HUB_HISTORY notes */
    first = dash_hub_join(h, &pos, &len);
    size_t notes = 0;
    for (const char *p = first; (p = strstr(p, "event: note")) != NULL; p++) notes++;
    cr_expect_eq(notes, DASH_HUB_HISTORY);
    free(first);
    dash_hub_stop(h);
    cr_expect_null(dash_hub_next(h, &pos, &len, 5000, &stopped));
    cr_expect(stopped, "a stopped hub ends every stream at once");
    dash_hub_free(h);
}

/* test_codec.c - every message of the contract through codec.h: round
 * trips, and each error code with the exact input that produces it.
 * Hostile container sizes are in test_codec_hostile.c, random and mutated
 * input in test_codec_fuzz.c; the helpers they share are in codec_fixtures.h.
 *
 * Design: valid messages are made by the encoders (so encoder and decoder
 * are checked against each other and against literal hex where the wire
 * form matters); invalid ones are made by editing one key of a valid map
 * (map_set) so that each error test differs from a valid message in exactly
 * the field under test. Every decoded input is first copied into a heap
 * block of exactly its size, so that ASan aborts on a read one byte past
 * the end. */
#include "codec_fixtures.h"
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers used only here ------------------------------------------------------ */

static raw raw_str(const char *s) { return raw_strn(s, strlen(s)); }

static msg map_drop(msg m, const char *k) { return map_set(m, k, NULL); }

/* Number of keys of the map at the start of m. */
static uint32_t map_count(const void *p, size_t n) {
    mp_reader r;
    uint32_t c = 0;
    mpr_init(&r, p, n);
    cr_assert(mpr_map(&r, &c));
    return c;
}

/* Decodes m (and frees it); checks the status, the error's code, that the
 * message names `needle` and that it is printable UTF-8 (it goes into a
 * reply's `message` string). */
static void expect_event(msg m, pd_status want, const char *needle, const char *what) {
    pd_event ev;
    pd_err err = {PD_OK, ""};
    pd_status s = pd_event_decode(m.b, m.n, &ev, &err);
    cr_expect_eq(s, want, "%s: status %s want %s (%s)", what, pd_status_code(s),
                 pd_status_code(want), err.msg);
    if (want != PD_OK && s == want) {
        cr_expect_eq(err.code, want, "%s: err.code", what);
        cr_expect(err.msg[0] != '\0', "%s: empty message", what);
        cr_expect(pd_text_valid(err.msg, strlen(err.msg)), "%s: message not text", what);
        if (needle)
            cr_expect(strstr(err.msg, needle) != NULL, "%s: message '%s' lacks '%s'", what,
                      err.msg, needle);
    }
    msg_free(&m);
}

static void expect_query(pd_query_type t, msg m, pd_status want, const char *needle,
                         const char *what) {
    pd_query q;
    pd_err err = {PD_OK, ""};
    pd_status s = pd_query_decode(t, m.b, m.n, &q, &err);
    cr_expect_eq(s, want, "%s: status %s want %s (%s)", what, pd_status_code(s),
                 pd_status_code(want), err.msg);
    if (want != PD_OK && s == want) {
        cr_expect_eq(err.code, want, "%s: err.code", what);
        if (needle)
            cr_expect(strstr(err.msg, needle) != NULL, "%s: message '%s' lacks '%s'", what,
                      err.msg, needle);
    }
    msg_free(&m);
}

static bool str_is(pd_str s, const char *c) { return pd_str_eqc(s, c); }

/* ---- round trips: events ------------------------------------------------------------ */

/* The fields each type carries are equal; the others were left out. */
static void expect_same_event(const pd_event *got, const pd_event *want) {
    const char *t = pd_event_type_name(want->type);
    cr_assert_eq(got->type, want->type, "%s", t);
    switch (want->type) {
    case PD_EV_CONNECT:
        cr_expect(pd_str_eq(got->device, want->device), "%s device", t);
        cr_expect(pd_str_eq(got->user, want->user), "%s user", t);
        cr_expect_eq(got->meta.n, want->meta.n, "%s meta", t);
        cr_expect(want->meta.n == 0 || memcmp(got->meta.p, want->meta.p, want->meta.n) == 0);
        /* fall through */
    case PD_EV_DISCONNECT: case PD_EV_ACTIVITY: case PD_EV_IDLE:
        cr_expect(pd_str_eq(got->server, want->server), "%s server", t);
        cr_expect(pd_str_eq(got->conn, want->conn), "%s conn", t);
        break;
    case PD_EV_STATUS:
        cr_expect(pd_str_eq(got->user, want->user), "%s user", t);
        cr_expect_eq(got->status, want->status, "%s status", t);
        break;
    case PD_EV_CUSTOM:
        cr_expect(pd_str_eq(got->user, want->user), "%s user", t);
        cr_expect(pd_str_eq(got->text, want->text), "%s text", t);
        cr_expect(pd_str_eq(got->emoji, want->emoji), "%s emoji", t);
        cr_expect_eq(got->expires_at, want->expires_at, "%s expires_at", t);
        break;
    case PD_EV_SYNC: case PD_EV_HEARTBEAT: case PD_EV_SHUTDOWN:
        cr_expect(pd_str_eq(got->server, want->server), "%s server", t);
        break;
    default:
        break;
    }
    if (want->type != PD_EV_CONNECT && want->type != PD_EV_STATUS && want->type != PD_EV_CUSTOM)
        cr_expect_eq(got->user.n, 0, "%s: user written though unused", t);
    if (want->type != PD_EV_CUSTOM) cr_expect_eq(got->text.n, 0, "%s: text written", t);
    if (want->type != PD_EV_CONNECT) cr_expect_eq(got->device.n, 0, "%s: device written", t);
    cr_expect_eq(got->has_ts, want->has_ts, "%s has_ts", t);
    cr_expect_eq(got->has_seq, want->has_seq, "%s has_seq", t);
    if (want->has_ts) cr_expect_eq(got->ts, want->ts, "%s ts", t);
    if (want->has_seq) cr_expect_eq(got->seq, want->seq, "%s seq", t);
}

static void roundtrip(const pd_event *want) {
    msg m = encode_event(want);
    pd_event got;
    pd_err err = {PD_OK, ""};
    cr_assert_eq(pd_event_decode(m.b, m.n, &got, &err), PD_OK, "%s: %s",
                 pd_event_type_name(want->type), err.msg);
    expect_same_event(&got, want);
    msg_free(&m);
}

Test(codec_event, roundtrip_every_type_without_ts_seq) {
    for (int t = 0; t < PD_EV_COUNT; t++) {
        pd_event ev = base_event((pd_event_type)t);
        roundtrip(&ev);
    }
}

Test(codec_event, roundtrip_every_type_with_ts_seq) {
    static const int64_t seqs[] = {0, 1, 42, PD_SEQ_MAX};
    for (int t = 0; t < PD_EV_COUNT; t++) {
        for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
            pd_event ev = base_event((pd_event_type)t);
            ev.has_ts = ev.has_seq = true;
            ev.ts = 1700000000123LL + (int64_t)i;
            ev.seq = seqs[i];
            roundtrip(&ev);
        }
        pd_event only_ts = base_event((pd_event_type)t);
        only_ts.has_ts = true;
        only_ts.ts = 0;
        roundtrip(&only_ts);
    }
}

Test(codec_event, connect_with_meta) {
    raw meta = raw_hex("83 a3 61 70 70 a3 69 6f 73 a1 76 cd 01 2c a4 74 61 67 73 92 a1 61 c0");
    pd_event ev = base_event(PD_EV_CONNECT);
    ev.device = pd_str_c("mobile");
    ev.meta = (pd_str){(const char *)meta.b, (uint32_t)meta.n};
    roundtrip(&ev);
    msg m = encode_event(&ev);
    cr_expect_eq(map_count(m.b, m.n), 6, "type server conn user device meta");
    msg_free(&m);
}

Test(codec_event, connect_wire_form_is_exact) {
    pd_event ev = base_event(PD_EV_CONNECT);
    msg m = encode_event(&ev);
    raw want = raw_hex("85 a4 74 79 70 65 a7 63 6f 6e 6e 65 63 74 a6 73 65 72 76 65 72"
                       " a5 73 72 76 2d 31 a4 63 6f 6e 6e a6 63 6f 6e 6e 2d 31"
                       " a4 75 73 65 72 a5 61 6c 69 63 65 a6 64 65 76 69 63 65 a3 77 65 62");
    cr_expect_eq(m.n, want.n);
    cr_expect(m.n == want.n && memcmp(m.b, want.b, want.n) == 0);
    msg_free(&m);
}

Test(codec_event, status_each_value) {
    for (int c = PD_CHOSEN_AUTO; c <= PD_CHOSEN_INVISIBLE; c++) {
        pd_event ev = base_event(PD_EV_STATUS);
        ev.status = (pd_chosen)c;
        roundtrip(&ev);
    }
}

Test(codec_event, custom_with_emoji_and_expiry) {
    pd_event ev = base_event(PD_EV_CUSTOM);
    ev.text = pd_str_c("on holiday \xe2\x98\x80");  /* U+2600 */
    ev.emoji = pd_str_c("\xf0\x9f\x8c\xb4");         /* U+1F334 */
    ev.expires_at = 1893456000000LL;
    roundtrip(&ev);
    msg m = encode_event(&ev);
    cr_expect_eq(map_count(m.b, m.n), 5, "type user text emoji expires_at");
    msg_free(&m);
}

Test(codec_event, custom_without_emoji_or_expiry) {
    pd_event ev = base_event(PD_EV_CUSTOM);
    roundtrip(&ev);
    msg m = encode_event(&ev);
    cr_expect_eq(map_count(m.b, m.n), 3, "absent emoji and expires_at are left out");
    msg_free(&m);
    ev.text = pd_str_c("");
    roundtrip(&ev); /* "" is a valid text: it clears the custom status */
}

Test(codec_event, sync_conns_iterated_back) {
    pd_event ev = base_event(PD_EV_SYNC);
    msg m = encode_event(&ev);
    pd_event got;
    pd_err err;
    cr_assert_eq(pd_event_decode(m.b, m.n, &got, &err), PD_OK, "%s", err.msg);
    cr_expect_eq(got.nconns, 3);
    pd_sync_iter it;
    pd_sync_conn c;
    uint32_t i = 0;
    pd_sync_iter_init(&it, &got);
    while (pd_sync_iter_next(&it, &c)) {
        cr_assert_lt(i, 3);
        cr_expect(pd_str_eq(c.conn, sync3[i].conn), "entry %u conn", i);
        cr_expect(pd_str_eq(c.user, sync3[i].user), "entry %u user", i);
        cr_expect(pd_str_eq(c.device, sync3[i].device), "entry %u device", i);
        i++;
    }
    cr_expect_eq(i, 3);
    cr_expect_not(pd_sync_iter_next(&it, &c), "the iterator stays finished");

    /* Re-encoding from the raw conns (sync == NULL) gives the same bytes. */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_event_encode(&sb, &got, NULL, 0);
    cr_expect_eq(sb.size, m.n);
    cr_expect(sb.size == m.n && memcmp(sb.data, m.b, m.n) == 0);
    msgpack_sbuffer_destroy(&sb);
    msg_free(&m);
}

Test(codec_event, sync_empty) {
    pd_event ev = base_event(PD_EV_SYNC);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_event_encode(&sb, &ev, sync3, 0);
    msg m = msg_sb(&sb);
    msgpack_sbuffer_destroy(&sb);
    pd_event got;
    pd_err err;
    cr_assert_eq(pd_event_decode(m.b, m.n, &got, &err), PD_OK, "%s", err.msg);
    cr_expect_eq(got.nconns, 0);
    pd_sync_iter it;
    pd_sync_conn c;
    pd_sync_iter_init(&it, &got);
    cr_expect_not(pd_sync_iter_next(&it, &c));
    msg_free(&m);
}

Test(codec_event, encoder_leaves_out_fields_of_other_types) {
    pd_event ev = base_event(PD_EV_DISCONNECT);
    ev.emoji = pd_str_c("x");
    ev.expires_at = 5;
    ev.meta = pd_str_c("\x80");
    msg m = encode_event(&ev);
    cr_expect_eq(map_count(m.b, m.n), 3, "type server conn");
    msg_free(&m);
    roundtrip(&ev);
}

/* ---- round trips: replies and notifications ------------------------------------------ */

Test(codec_reply, ok_roundtrip) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_reply_ok_encode(&sb);
    raw want = raw_hex("81 a2 6f 6b c3");
    cr_expect(sb.size == want.n && memcmp(sb.data, want.b, want.n) == 0);
    pd_reply r;
    cr_expect_eq(pd_reply_decode(sb.data, sb.size, &r), PD_OK);
    cr_expect(r.ok);
    cr_expect_str_eq(r.code, "");
    msgpack_sbuffer_destroy(&sb);
}

Test(codec_reply, error_roundtrip_each_code) {
    static const struct { pd_status s; const char *code; } codes[] = {
        {PD_EBADMSGPACK, "bad_msgpack"}, {PD_EBADTYPE, "bad_type"},
        {PD_EMISSING, "missing_field"},  {PD_EBADID, "bad_id"},
        {PD_ETOOLARGE, "too_large"},     {PD_EBADVALUE, "bad_value"},
        {PD_EUNKNOWNCONN, "unknown_conn"}, {PD_EINTERNAL, "internal"},
        {PD_ENOMEM, "internal"},         {PD_EIO, "internal"},
    };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        pd_reply_error_encode(&sb, codes[i].s, "field 'user' is not a valid id");
        cr_expect_eq(map_count(sb.data, sb.size), 3);
        pd_reply r;
        cr_assert_eq(pd_reply_decode(sb.data, sb.size, &r), PD_OK);
        cr_expect_not(r.ok);
        cr_expect_str_eq(r.code, codes[i].code);
        cr_expect_str_eq(r.message, "field 'user' is not a valid id");
        msgpack_sbuffer_destroy(&sb);
    }
}

Test(codec_reply, error_without_message_uses_status_text) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_reply_error_encode(&sb, PD_EUNKNOWNCONN, NULL);
    pd_reply r;
    cr_assert_eq(pd_reply_decode(sb.data, sb.size, &r), PD_OK);
    cr_expect_str_eq(r.code, "unknown_conn");
    cr_expect_str_eq(r.message, pd_status_str(PD_EUNKNOWNCONN));
    msgpack_sbuffer_destroy(&sb);
}

Test(codec_reply, malformed_replies_refused) {
    static const char *const bad[] = {
        "", "c1", "80", "91 c3", "81 a2 6f 6b 01", "81 a2 6f 6b c3 c0",
        "82 a2 6f 6b c2 a5 65 72 72 6f 72 05", "81 01 c3", "df ff ff ff ff", "81 a2 6f 6b",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        msg m = msg_hex(bad[i]);
        pd_reply r;
        cr_expect_eq(pd_reply_decode(m.b, m.n, &r), PD_EBADMSGPACK, "'%s'", bad[i]);
        msg_free(&m);
    }
}

Test(codec_reply, unknown_keys_ignored_long_fields_truncated) {
    char longmsg[400];
    memset(longmsg, 'm', sizeof longmsg - 1);
    longmsg[sizeof longmsg - 1] = '\0';
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_reply_error_encode(&sb, PD_EBADVALUE, longmsg);
    msg m = msg_sb(&sb);
    raw extra = raw_hex("92 01 81 a1 6b c0");
    m = map_set(m, "retry_after", &extra);
    pd_reply r;
    cr_assert_eq(pd_reply_decode(m.b, m.n, &r), PD_OK);
    cr_expect_str_eq(r.code, "bad_value");
    cr_expect_eq(strlen(r.message), sizeof r.message - 1);
    msg_free(&m);
    msgpack_sbuffer_destroy(&sb);
}

static const char *const view_keys[] = {
    "user", "status", "text", "emoji", "expires_at", "last_seen", "ver",
};

/* Checks that the map at r has exactly the view keys plus `last`. */
static void expect_view_keys(const void *p, size_t n, const char *last) {
    mp_reader r;
    uint32_t c;
    unsigned seen = 0;
    mpr_init(&r, p, n);
    cr_assert(mpr_map(&r, &c));
    cr_expect_eq(c, 8);
    for (uint32_t i = 0; i < c; i++) {
        pd_str k;
        cr_assert(mpr_str(&r, &k) && mpr_skip(&r));
        for (unsigned j = 0; j < 7; j++) if (pd_str_eqc(k, view_keys[j])) seen |= 1u << j;
        if (pd_str_eqc(k, last)) seen |= 1u << 7;
    }
    cr_expect_eq(seen, 0xff, "keys seen %#x", seen);
}

Test(codec_notification, roundtrip_all_fields) {
    pd_view v = {
        .user = S("alice"), .status = PD_PUB_BUSY, .text = S("in a meeting"),
        .emoji = S("\xf0\x9f\x93\x85"), .expires_at = 1893456000000LL,
        .last_seen = 1700000000000LL, .ts = 1700000000456LL,
        .ver = UINT64_C(1700000000456) << 16 | 3,
    };
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_notification_encode(&sb, &v);
    msg m = msg_sb(&sb);
    expect_view_keys(m.b, m.n, "ts");
    pd_view got;
    pd_err err;
    cr_assert_eq(pd_notification_decode(m.b, m.n, &got, &err), PD_OK, "%s", err.msg);
    cr_expect(str_is(got.user, "alice"));
    cr_expect_eq(got.status, PD_PUB_BUSY);
    cr_expect(pd_str_eq(got.text, v.text));
    cr_expect(pd_str_eq(got.emoji, v.emoji));
    cr_expect_eq(got.expires_at, v.expires_at);
    cr_expect_eq(got.last_seen, v.last_seen);
    cr_expect_eq(got.ts, v.ts);
    cr_expect_eq(got.ver, v.ver);
    msg_free(&m);
    msgpack_sbuffer_destroy(&sb);
}

Test(codec_notification, every_status_and_empty_custom) {
    for (int s = PD_PUB_OFFLINE; s <= PD_PUB_INVISIBLE; s++) {
        pd_view v = {.user = S("u1"), .status = (pd_public)s, .text = S(""), .emoji = S(""),
                     .last_seen = 5, .ts = 6};
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        pd_notification_encode(&sb, &v);
        /* No custom status: text and emoji are still present, as "". */
        expect_view_keys(sb.data, sb.size, "ts");
        pd_view got;
        pd_err err;
        cr_assert_eq(pd_notification_decode(sb.data, sb.size, &got, &err), PD_OK);
        cr_expect_eq(got.status, (pd_public)s);
        cr_expect_eq(got.text.n, 0);
        cr_expect_eq(got.emoji.n, 0);
        cr_expect_eq(got.expires_at, 0);
        msgpack_sbuffer_destroy(&sb);
    }
}

Test(codec_notification, malformed_refused) {
    static const char *const bad[] = {
        "", "90", "c1", "80",                                 /* no user */
        "81 a4 75 73 65 72 a1 61 c0",                         /* trailing */
        "82 a4 75 73 65 72 a1 61 a6 73 74 61 74 75 73 a6 73 6c 65 65 70 79", /* sleepy */
        "82 a4 75 73 65 72 a1 61 a2 74 73 a1 31",             /* ts "1" */
        "df ff ff ff ff",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        msg m = msg_hex(bad[i]);
        pd_view v;
        pd_err err;
        cr_expect_eq(pd_notification_decode(m.b, m.n, &v, &err), PD_EBADVALUE, "'%s'", bad[i]);
        msg_free(&m);
    }
}

/* ---- round trips: queries and their replies -------------------------------------------- */

Test(codec_query, get_with_users_and_viewer) {
    msg m = get_msg();
    pd_query q;
    pd_err err;
    cr_assert_eq(pd_query_decode(PD_Q_GET, m.b, m.n, &q, &err), PD_OK, "%s", err.msg);
    cr_expect_eq(q.nusers, 3);
    cr_expect(str_is(q.viewer, "bob"));
    mp_reader it;
    pd_str u;
    uint32_t i = 0;
    pd_query_users_iter(&q, &it);
    while (pd_query_next_user(&it, &u)) {
        cr_assert_lt(i, 3);
        cr_expect(pd_str_eq(u, users3[i]), "user %u", i);
        i++;
    }
    cr_expect_eq(i, 3);
    msg_free(&m);

    pd_query nv = {.type = PD_Q_GET};
    m = query_msg(&nv, users3, 1);
    cr_assert_eq(pd_query_decode(PD_Q_GET, m.b, m.n, &q, &err), PD_OK, "%s", err.msg);
    cr_expect_eq(q.viewer.n, 0, "absent viewer: public view");
    cr_expect_eq(q.nusers, 1);
    msg_free(&m);
}

Test(codec_query, get_with_no_users_is_valid) {
    pd_query q = {.type = PD_Q_GET};
    expect_query(PD_Q_GET, query_msg(&q, NULL, 0), PD_OK, NULL, "users []");
}

Test(codec_query, devices_online_cluster) {
    pd_query q = {.type = PD_Q_DEVICES, .user = S("alice")}, got;
    pd_err err;
    msg m = query_msg(&q, NULL, 0);
    cr_assert_eq(pd_query_decode(PD_Q_DEVICES, m.b, m.n, &got, &err), PD_OK, "%s", err.msg);
    cr_expect(str_is(got.user, "alice"));
    msg_free(&m);

    q = (pd_query){.type = PD_Q_ONLINE, .cursor = S("1234567"), .limit = 50};
    m = query_msg(&q, NULL, 0);
    cr_assert_eq(pd_query_decode(PD_Q_ONLINE, m.b, m.n, &got, &err), PD_OK, "%s", err.msg);
    cr_expect(str_is(got.cursor, "1234567"));
    cr_expect_eq(got.limit, 50);
    msg_free(&m);

    q = (pd_query){.type = PD_Q_ONLINE, .limit = 1};
    m = query_msg(&q, NULL, 0);
    cr_assert_eq(pd_query_decode(PD_Q_ONLINE, m.b, m.n, &got, &err), PD_OK, "%s", err.msg);
    cr_expect_eq(got.cursor.n, 0, "no cursor: first page");
    cr_expect_eq(got.limit, 1);
    msg_free(&m);

    q = (pd_query){.type = PD_Q_CLUSTER};
    m = query_msg(&q, NULL, 0);
    cr_expect_eq(m.n, 1);
    cr_expect_eq(m.b[0], 0x80);
    cr_expect_eq(pd_query_decode(PD_Q_CLUSTER, m.b, m.n, &got, &err), PD_OK);
    msg_free(&m);
}

Test(codec_query, empty_payload_reads_as_empty_map) {
    for (int t = 0; t < PD_Q_COUNT; t++) {
        pd_query a, b;
        pd_err ea = {PD_OK, ""}, eb = {PD_OK, ""};
        uint8_t empty_map = 0x80;
        pd_status sa = pd_query_decode((pd_query_type)t, NULL, 0, &a, &ea);
        pd_status sb = pd_query_decode((pd_query_type)t, &empty_map, 1, &b, &eb);
        cr_expect_eq(sa, sb, "type %d", t);
        cr_expect_str_eq(ea.msg, eb.msg);
        if (t == PD_Q_ONLINE) {
            cr_expect_eq(sa, PD_OK);
            cr_expect_eq(a.limit, PD_QUERY_LIMIT_MAX, "default limit");
            cr_expect_eq(a.cursor.n, 0);
        }
    }
    pd_query q;
    pd_err err;
    cr_expect_eq(pd_query_decode(PD_Q_CLUSTER, "", 0, &q, &err), PD_OK);
    cr_expect_eq(pd_query_decode(PD_Q_GET, "", 0, &q, &err), PD_EMISSING);
    cr_expect_eq(pd_query_decode(PD_Q_DEVICES, "", 0, &q, &err), PD_EMISSING);
}

/* Reads key k (a string) from r. */
static void expect_key(mp_reader *r, const char *k) {
    pd_str key;
    cr_assert(mpr_str(r, &key), "key %s: %s", k, r->why);
    cr_assert(pd_str_eqc(key, k), "key '%.*s' where '%s' expected", (int)key.n, key.p, k);
}

static void expect_str_val(mp_reader *r, const char *want) {
    pd_str v;
    cr_assert(mpr_str(r, &v), "%s", r->why);
    cr_expect(pd_str_eqc(v, want), "'%.*s' want '%s'", (int)v.n, v.p, want);
}

static void expect_int_val(mp_reader *r, int64_t want) {
    int64_t v;
    cr_assert(mpr_int(r, &v), "%s", r->why);
    cr_expect_eq(v, want);
}

Test(codec_query, get_reply_decoded_with_view_decode) {
    pd_view views[2] = {
        {.user = S("alice"), .status = PD_PUB_ONLINE, .text = S("hi"), .emoji = S(":)"),
         .expires_at = 99, .last_seen = 1700000000000LL, .devices = 3},
        {.user = S("ghost"), .status = PD_PUB_OFFLINE, .text = S(""), .emoji = S("")},
    };
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pd_get_reply_begin(&pk, 2, NULL);
    for (int i = 0; i < 2; i++) pd_get_reply_user(&pk, &views[i]);
    pd_get_reply_end(&pk, NULL);
    msg m = msg_sb(&sb);
    mp_reader r;
    uint32_t n;
    mpr_init(&r, m.b, m.n);
    cr_assert(mpr_map(&r, &n));
    cr_expect_eq(n, 1);
    expect_key(&r, "users");
    cr_assert(mpr_array(&r, &n));
    cr_assert_eq(n, 2);
    for (int i = 0; i < 2; i++) {
        pd_view v;
        pd_err err;
        const uint8_t *start = r.p;
        cr_assert_eq(pd_view_decode(&r, &v, &err), PD_OK, "%s", err.msg);
        expect_view_keys(start, (size_t)(r.p - start), "devices");
        cr_expect(pd_str_eq(v.user, views[i].user));
        cr_expect_eq(v.status, views[i].status);
        cr_expect(pd_str_eq(v.text, views[i].text));
        cr_expect(pd_str_eq(v.emoji, views[i].emoji));
        cr_expect_eq(v.expires_at, views[i].expires_at);
        cr_expect_eq(v.last_seen, views[i].last_seen);
        cr_expect_eq(v.devices, views[i].devices);
        cr_expect_eq(v.ts, 0, "get replies carry no ts");
    }
    cr_expect_eq(mpr_remaining(&r), 0);
    msg_free(&m);
    msgpack_sbuffer_destroy(&sb);
}

/* Freshness (issue 14): `as_of` after the list, `stale` only when true,
 * last in its map; the literal bytes are those of schemas/queries.md. */
Test(codec_query, get_reply_with_as_of_and_stale) {
    pd_view views[2] = {
        {.user = S("al"), .status = PD_PUB_ONLINE, .text = S(""), .emoji = S(""),
         .last_seen = 5, .devices = 1, .ver = 7, .stale = true},
        {.user = S("bo"), .status = PD_PUB_OFFLINE, .text = S(""), .emoji = S(""),
         .stale = true}, /* the writer packs what it is given */
    };
    pd_reply_fresh f = {1700000000000ULL, true}; /* a get reply has no top-level stale */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pd_get_reply_begin(&pk, 1, &f);
    pd_get_reply_user(&pk, &views[0]);
    pd_get_reply_end(&pk, &f);
    raw want = raw_hex("82 a5 75 73 65 72 73 91 89 a4 75 73 65 72 a2 61 6c a6 73 74 61 74 75 73"
                       " a6 6f 6e 6c 69 6e 65 a4 74 65 78 74 a0 a5 65 6d 6f 6a 69 a0 aa 65 78 70"
                       " 69 72 65 73 5f 61 74 00 a9 6c 61 73 74 5f 73 65 65 6e 05 a7 64 65 76 69"
                       " 63 65 73 01 a3 76 65 72 07 a5 73 74 61 6c 65 c3 a5 61 73 5f 6f 66 cf 00"
                       " 00 01 8b cf e5 68 00");
    cr_assert_eq(sb.size, want.n);
    cr_expect_eq(memcmp(sb.data, want.b, want.n), 0, "bytes differ from schemas/queries.md");

    mp_reader items;
    uint32_t n = 0;
    pd_reply_fresh got;
    pd_err err;
    cr_assert_eq(pd_reply_top_decode(sb.data, sb.size, "users", &items, &n, NULL, &got, &err),
                 PD_OK, "%s", err.msg);
    cr_expect_eq(n, 1);
    cr_expect_eq(got.as_of, 1700000000000ULL);
    cr_expect(!got.stale);
    pd_view v;
    cr_assert_eq(pd_view_decode(&items, &v, &err), PD_OK, "%s", err.msg);
    cr_expect(v.stale && v.devices == 1 && v.ver == 7);

    /* stale false: the key is left out; notifications never carry it */
    msgpack_sbuffer_clear(&sb);
    views[0].stale = false;
    pd_get_reply_user(&pk, &views[0]);
    cr_expect_eq(map_count(sb.data, sb.size), 8);
    msgpack_sbuffer_clear(&sb);
    pd_notification_encode(&sb, &views[1]);
    cr_expect_eq(map_count(sb.data, sb.size), 8, "no stale in a notification");
    cr_assert_eq(pd_notification_decode(sb.data, sb.size, &v, &err), PD_OK);
    cr_expect(!v.stale);
    msgpack_sbuffer_destroy(&sb);
}

Test(codec_query, devices_reply_with_as_of_and_stale) {
    pd_reply_fresh f = {42, true};
    pd_device_view d = {.conn = S("c"), .server = S("s"), .node = S("n"), .device = S("web"),
                        .state = PD_DEV_ACTIVE, .connected_at = 1, .last_active = 2};
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pd_devices_reply_begin(&pk, pd_str_c("al"), 1, &f);
    pd_devices_reply_device(&pk, &d);
    pd_devices_reply_end(&pk, &f);
    cr_expect_eq(map_count(sb.data, sb.size), 4);
    mp_reader items;
    uint32_t n = 0;
    pd_str user = {0};
    pd_reply_fresh got;
    pd_err err;
    cr_assert_eq(pd_reply_top_decode(sb.data, sb.size, "devices", &items, &n, &user, &got, &err),
                 PD_OK, "%s", err.msg);
    cr_expect(n == 1 && pd_str_eqc(user, "al") && got.as_of == 42 && got.stale);
    pd_device_view dv;
    cr_assert_eq(pd_device_view_decode(&items, &dv, &err), PD_OK, "%s", err.msg);
    cr_expect(pd_str_eqc(dv.conn, "c"));

    /* stripped of its freshness, it is the reply written without any */
    msgpack_sbuffer plain, stripped;
    msgpack_sbuffer_init(&plain);
    msgpack_sbuffer_init(&stripped);
    msgpack_packer_init(&pk, &plain, msgpack_sbuffer_write);
    pd_devices_reply_begin(&pk, pd_str_c("al"), 1, NULL);
    pd_devices_reply_device(&pk, &d);
    pd_devices_reply_end(&pk, NULL);
    pd_reply_strip_fresh(sb.data, sb.size, &stripped);
    cr_expect(stripped.size == plain.size && memcmp(stripped.data, plain.data, plain.size) == 0);
    f.stale = false;
    f.as_of = 43;
    msgpack_sbuffer_clear(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pd_devices_reply_begin(&pk, pd_str_c("al"), 1, &f);
    pd_devices_reply_device(&pk, &d);
    pd_devices_reply_end(&pk, &f);
    cr_expect_eq(map_count(sb.data, sb.size), 3, "stale only when true");
    msgpack_sbuffer_destroy(&plain);
    msgpack_sbuffer_destroy(&stripped);
    msgpack_sbuffer_destroy(&sb);
}

Test(codec_query, strip_fresh_of_a_get_reply) {
    pd_view v = {.user = S("al"), .status = PD_PUB_ONLINE, .text = S(""), .emoji = S(""),
                 .devices = 1, .stale = true};
    pd_reply_fresh f = {99, false};
    msgpack_sbuffer a, b, out;
    msgpack_packer pk;
    msgpack_sbuffer_init(&a);
    msgpack_sbuffer_init(&b);
    msgpack_sbuffer_init(&out);
    msgpack_packer_init(&pk, &a, msgpack_sbuffer_write);
    pd_get_reply_begin(&pk, 1, &f);
    pd_get_reply_user(&pk, &v);
    pd_get_reply_end(&pk, &f);
    v.stale = false;
    msgpack_packer_init(&pk, &b, msgpack_sbuffer_write);
    pd_get_reply_begin(&pk, 1, NULL);
    pd_get_reply_user(&pk, &v);
    pd_get_reply_end(&pk, NULL);
    pd_reply_strip_fresh(a.data, a.size, &out);
    cr_expect(out.size == b.size && memcmp(out.data, b.data, b.size) == 0);
    /* not a reply: copied as it is, bytes and all */
    msgpack_sbuffer_clear(&out);
    pd_reply_strip_fresh("\x81\xc0\x01", 3, &out);
    cr_expect(out.size == 3 && memcmp(out.data, "\x81\xc0\x01", 3) == 0);
    msgpack_sbuffer_destroy(&a);
    msgpack_sbuffer_destroy(&b);
    msgpack_sbuffer_destroy(&out);
}

Test(codec_query, reply_top_refused_cases) {
    static const struct { const char *hex, *why; pd_status want; } cases[] = {
        {"91 90", "not a map", PD_EBADVALUE},
        {"81 a5 61 73 5f 6f 66 01", "no users", PD_EMISSING},
        {"82 a5 75 73 65 72 73 90 a5 61 73 5f 6f 66 ff", "negative as_of", PD_EBADVALUE},
        {"82 a5 75 73 65 72 73 90 a5 61 73 5f 6f 66 a1 31", "as_of a string", PD_EBADVALUE},
        {"82 a5 75 73 65 72 73 90 a5 73 74 61 6c 65 01", "stale not a bool", PD_EBADVALUE},
        {"81 a5 75 73 65 72 73 90 c0", "trailing bytes", PD_EBADVALUE},
        {"81 a5 75 73 65 72 73 c0", "users not an array", PD_EMISSING},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        msg m = msg_hex(cases[i].hex);
        mp_reader items;
        uint32_t n;
        pd_reply_fresh f = {7, true};
        pd_err err = {PD_OK, ""};
        pd_status s = pd_reply_top_decode(m.b, m.n, "users", &items, &n, NULL, &f, &err);
        cr_expect_neq(s, PD_OK, "%s: accepted", cases[i].why);
        cr_expect(f.as_of == 7 && f.stale, "%s: a refused reply changed f", cases[i].why);
        msg_free(&m);
    }
    /* unknown keys, before and after the list, are skipped */
    msg m = msg_hex("83 a3 6e 65 77 81 a1 78 90 a5 75 73 65 72 73 90 a5 6c 61 74 65 72 c3");
    mp_reader items;
    uint32_t n = 9;
    pd_err err;
    cr_expect_eq(pd_reply_top_decode(m.b, m.n, "users", &items, &n, NULL, NULL, &err), PD_OK,
                 "%s", err.msg);
    cr_expect_eq(n, 0);
    msg_free(&m);
}

/* The examples of schemas/queries.md, written by the encoders. */
Test(codec_query, schema_examples_of_get_and_devices_replies) {
    pd_view views[2] = {
        {.user = S("alice"), .status = PD_PUB_BUSY, .text = S("On holiday"),
         .emoji = S("\xf0\x9f\x8c\xb4"), .expires_at = 1700604800000LL,
         .last_seen = 1700000360000LL, .devices = 2, .ver = 111411223593091073ULL, .stale = true},
        {.user = S("bob"), .status = PD_PUB_OFFLINE, .text = S(""), .emoji = S("")},
    };
    raw meta = raw_hex("82 a3 61 70 70 a3 77 65 62 a7 76 65 72 73 69 6f 6e a5 35 2e 32 2e 30");
    pd_device_view devs[2] = {
        {.conn = S("c-42"), .server = S("ws-1"), .node = S("node-a"), .device = S("web"),
         .state = PD_DEV_ACTIVE, .connected_at = 1700000000000LL, .last_active = 1700000300000LL,
         .meta = {(const char *)meta.b, (uint32_t)meta.n}},
        {.conn = S("m-7"), .server = S("ws-2"), .node = S("node-a"), .device = S("mobile"),
         .state = PD_DEV_IDLE, .connected_at = 1699990000000LL, .last_active = 1699990500000LL},
    };
    pd_reply_fresh get_f = {1700000400000ULL, false}, dev_f = {1700000400000ULL, true};
    raw want_get = raw_hex(
        "82 a5 75 73 65 72 73 92 89 a4 75 73 65 72 a5 61 6c 69 63 65 a6 73 74 61 74 75 73 a4 62 75 73 79 "
        "a4 74 65 78 74 aa 4f 6e 20 68 6f 6c 69 64 61 79 a5 65 6d 6f 6a 69 a4 f0 9f 8c b4 aa 65 78 70 69 "
        "72 65 73 5f 61 74 cf 00 00 01 8b f3 f1 ec 00 a9 6c 61 73 74 5f 73 65 65 6e cf 00 00 01 8b cf ea "
        "e6 40 a7 64 65 76 69 63 65 73 02 a3 76 65 72 cf 01 8b cf ea e6 42 00 01 a5 73 74 61 6c 65 c3 88 "
        "a4 75 73 65 72 a3 62 6f 62 a6 73 74 61 74 75 73 a7 6f 66 66 6c 69 6e 65 a4 74 65 78 74 a0 a5 65 "
        "6d 6f 6a 69 a0 aa 65 78 70 69 72 65 73 5f 61 74 00 a9 6c 61 73 74 5f 73 65 65 6e 00 a7 64 65 76 "
        "69 63 65 73 00 a3 76 65 72 00 a5 61 73 5f 6f 66 cf 00 00 01 8b cf eb 82 80");
    raw want_dev = raw_hex(
        "84 a4 75 73 65 72 a5 61 6c 69 63 65 a7 64 65 76 69 63 65 73 92 88 a4 63 6f 6e 6e a4 63 2d 34 32 "
        "a6 73 65 72 76 65 72 a4 77 73 2d 31 a4 6e 6f 64 65 a6 6e 6f 64 65 2d 61 a6 64 65 76 69 63 65 a3 "
        "77 65 62 a5 73 74 61 74 65 a6 61 63 74 69 76 65 ac 63 6f 6e 6e 65 63 74 65 64 5f 61 74 cf 00 00 "
        "01 8b cf e5 68 00 ab 6c 61 73 74 5f 61 63 74 69 76 65 cf 00 00 01 8b cf e9 fb e0 a4 6d 65 74 61 "
        "82 a3 61 70 70 a3 77 65 62 a7 76 65 72 73 69 6f 6e a5 35 2e 32 2e 30 87 a4 63 6f 6e 6e a3 6d 2d "
        "37 a6 73 65 72 76 65 72 a4 77 73 2d 32 a4 6e 6f 64 65 a6 6e 6f 64 65 2d 61 a6 64 65 76 69 63 65 "
        "a6 6d 6f 62 69 6c 65 a5 73 74 61 74 65 a4 69 64 6c 65 ac 63 6f 6e 6e 65 63 74 65 64 5f 61 74 cf "
        "00 00 01 8b cf 4c d1 80 ab 6c 61 73 74 5f 61 63 74 69 76 65 cf 00 00 01 8b cf 54 72 a0 a5 61 73 "
        "5f 6f 66 cf 00 00 01 8b cf eb 82 80 a5 73 74 61 6c 65 c3");
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pd_get_reply_begin(&pk, 2, &get_f);
    for (int i = 0; i < 2; i++) pd_get_reply_user(&pk, &views[i]);
    pd_get_reply_end(&pk, &get_f);
    cr_expect(sb.size == want_get.n && memcmp(sb.data, want_get.b, sb.size) == 0,
              "the get example of schemas/queries.md");
    msgpack_sbuffer_clear(&sb);
    pd_devices_reply_begin(&pk, pd_str_c("alice"), 2, &dev_f);
    for (int i = 0; i < 2; i++) pd_devices_reply_device(&pk, &devs[i]);
    pd_devices_reply_end(&pk, &dev_f);
    cr_expect(sb.size == want_dev.n && memcmp(sb.data, want_dev.b, sb.size) == 0,
              "the devices example of schemas/queries.md");
    msgpack_sbuffer_destroy(&sb);
}

Test(codec_query, devices_reply_with_and_without_meta) {
    raw meta = raw_hex("81 a3 61 70 70 a3 69 6f 73");
    pd_device_view devs[2] = {
        {.conn = S("c1"), .server = S("srv-1"), .node = S("node-a"), .device = S("web"),
         .state = PD_DEV_ACTIVE, .connected_at = 1000, .last_active = 2000},
        {.conn = S("c2"), .server = S("srv-2"), .node = S("node-b"), .device = S("mobile"),
         .state = PD_DEV_IDLE, .connected_at = 3000, .last_active = 4000,
         .meta = {(const char *)meta.b, (uint32_t)meta.n}},
    };
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pd_devices_reply_begin(&pk, pd_str_c("alice"), 2, NULL);
    for (int i = 0; i < 2; i++) pd_devices_reply_device(&pk, &devs[i]);
    pd_devices_reply_end(&pk, NULL);
    msg m = msg_sb(&sb);
    mp_reader r;
    uint32_t n;
    mpr_init(&r, m.b, m.n);
    cr_assert(mpr_map(&r, &n));
    cr_expect_eq(n, 2);
    expect_key(&r, "user");
    expect_str_val(&r, "alice");
    expect_key(&r, "devices");
    cr_assert(mpr_array(&r, &n));
    cr_assert_eq(n, 2);
    for (int i = 0; i < 2; i++) {
        pd_device_view d;
        pd_err err;
        cr_expect_eq(map_count(r.p, mpr_remaining(&r)), i == 0 ? 7 : 8, "meta only when set");
        cr_assert_eq(pd_device_view_decode(&r, &d, &err), PD_OK, "%s", err.msg);
        cr_expect(pd_str_eq(d.conn, devs[i].conn));
        cr_expect(pd_str_eq(d.server, devs[i].server));
        cr_expect(pd_str_eq(d.node, devs[i].node));
        cr_expect(pd_str_eq(d.device, devs[i].device));
        cr_expect_eq(d.state, devs[i].state);
        cr_expect_eq(d.connected_at, devs[i].connected_at);
        cr_expect_eq(d.last_active, devs[i].last_active);
        cr_expect_eq(d.meta.n, devs[i].meta.n);
        cr_expect(d.meta.n == 0 || memcmp(d.meta.p, meta.b, meta.n) == 0);
    }
    cr_expect_eq(mpr_remaining(&r), 0);
    msg_free(&m);
    msgpack_sbuffer_destroy(&sb);
}

static msg online_reply(const char *cursor) {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pd_online_reply_begin(&pk, 3, cursor != NULL);
    for (int i = 0; i < 3; i++) pd_online_reply_user(&pk, users3[i]);
    pd_online_reply_end(&pk, cursor ? pd_str_c(cursor) : (pd_str){NULL, 0});
    msg m = msg_sb(&sb);
    msgpack_sbuffer_destroy(&sb);
    return m;
}

Test(codec_query, online_reply_pages) {
    for (int last = 0; last < 2; last++) {
        msg m = online_reply(last ? NULL : "8191");
        mp_reader r;
        uint32_t n;
        mpr_init(&r, m.b, m.n);
        cr_assert(mpr_map(&r, &n));
        cr_expect_eq(n, last ? 1 : 2, "cursor key only when there is a next page");
        expect_key(&r, "users");
        cr_assert(mpr_array(&r, &n));
        cr_assert_eq(n, 3);
        for (int i = 0; i < 3; i++) {
            pd_str u;
            cr_assert(mpr_str(&r, &u));
            cr_expect(pd_str_eq(u, users3[i]));
        }
        if (!last) {
            expect_key(&r, "cursor");
            expect_str_val(&r, "8191");
        }
        cr_expect_eq(mpr_remaining(&r), 0);
        msg_free(&m);
    }
}

Test(codec_query, cluster_reply) {
    pd_str vc_nodes[2] = {S("node-a"), S("node-b")};
    uint64_t vc_counts[2] = {17, 4};
    pd_node_view nodes[2] = {
        {.node = S("node-a"), .alive = true, .vc_nodes = vc_nodes, .vc_counts = vc_counts,
         .vc_n = 2, .devices = 10, .users = 7, .last_heartbeat = 1700000000000LL},
        {.node = S("node-b"), .alive = false, .vc_n = 0, .last_heartbeat = 5},
    };
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pd_cluster_reply_begin(&pk, pd_str_c("node-a"), 2);
    for (int i = 0; i < 2; i++) pd_cluster_reply_node(&pk, &nodes[i]);
    msg m = msg_sb(&sb);
    mp_reader r;
    uint32_t n;
    bool alive;
    mpr_init(&r, m.b, m.n);
    cr_assert(mpr_map(&r, &n));
    cr_expect_eq(n, 2);
    expect_key(&r, "node");
    expect_str_val(&r, "node-a");
    expect_key(&r, "nodes");
    cr_assert(mpr_array(&r, &n));
    cr_assert_eq(n, 2);
    for (int i = 0; i < 2; i++) {
        cr_assert(mpr_map(&r, &n));
        cr_expect_eq(n, 6);
        expect_key(&r, "node");
        expect_str_val(&r, i == 0 ? "node-a" : "node-b");
        expect_key(&r, "alive");
        cr_assert(mpr_bool(&r, &alive));
        cr_expect_eq(alive, nodes[i].alive);
        expect_key(&r, "vc");
        cr_assert(mpr_map(&r, &n));
        cr_expect_eq(n, nodes[i].vc_n);
        for (uint32_t j = 0; j < n; j++) {
            expect_str_val(&r, j == 0 ? "node-a" : "node-b");
            expect_int_val(&r, (int64_t)vc_counts[j]);
        }
        expect_key(&r, "devices");
        expect_int_val(&r, (int64_t)nodes[i].devices);
        expect_key(&r, "users");
        expect_int_val(&r, (int64_t)nodes[i].users);
        expect_key(&r, "last_heartbeat");
        expect_int_val(&r, nodes[i].last_heartbeat);
    }
    cr_expect_eq(mpr_remaining(&r), 0);
    msg_free(&m);
    msgpack_sbuffer_destroy(&sb);
}

/* ---- error codes: events ---------------------------------------------------------------- */

Test(codec_errors, bad_msgpack) {
    static const struct { const char *hex, *why; } bad[] = {
        {"", "not valid MessagePack"},
        {"c1", "not valid MessagePack"},
        {"68 65 6c 6c 6f", "not valid MessagePack"},       /* "hello" as bytes */
        {"93 01 02 03", "must be a MessagePack map"},
        {"a3 61 62 63", "must be a MessagePack map"},
        {"c0", "must be a MessagePack map"},
        {"81 01 02", "map keys must be strings"},
        {"81 c4 01 6b 02", "map keys must be strings"},
        {"81 a1 78 c1", "invalid msgpack byte"},
        {"82 a1 78 01", "declared length exceeds message"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_event(msg_hex(bad[i].hex), PD_EBADMSGPACK, bad[i].why, bad[i].hex);

    msg m = event_msg(PD_EV_CONNECT);
    raw t = {.n = m.n + 1};
    memcpy(t.b, m.b, m.n);
    t.b[m.n] = 0xc0;
    expect_event(msg_bytes(t.b, t.n), PD_EBADMSGPACK, "trailing bytes", "trailing nil");
    msg_free(&m);
}

Test(codec_errors, every_truncation_is_bad_msgpack) {
    raw meta = raw_hex("82 a1 61 92 01 c3 a1 62 cb 3f f0 00 00 00 00 00 00");
    pd_event ev = base_event(PD_EV_CONNECT);
    ev.meta = (pd_str){(const char *)meta.b, (uint32_t)meta.n};
    ev.has_ts = ev.has_seq = true;
    ev.ts = 1700000000000LL;
    ev.seq = 300;
    msg full[2] = {encode_event(&ev), event_msg(PD_EV_SYNC)};
    for (int k = 0; k < 2; k++) {
        for (size_t cut = 0; cut < full[k].n; cut++) {
            char what[64];
            snprintf(what, sizeof what, "msg %d cut at %zu", k, cut);
            expect_event(msg_bytes(full[k].b, cut), PD_EBADMSGPACK, NULL, what);
        }
        msg_free(&full[k]);
    }
}

Test(codec_errors, bad_type) {
    static const char *const types[] = {"teleport", "", "CONNECT", "connect ", "Sync"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        raw v = raw_str(types[i]);
        expect_event(map_set(event_msg(PD_EV_CONNECT), "type", &v), PD_EBADTYPE,
                     "unknown event type", types[i]);
    }
    raw v = raw_str("teleport");
    expect_event(map_set(event_msg(PD_EV_HEARTBEAT), "type", &v), PD_EBADTYPE, "'teleport'",
                 "the type is named");
}

Test(codec_errors, bad_type_message_stays_printable_utf8) {
    /* The unknown type is echoed into the reply's message, which must stay
     * valid UTF-8 whatever the sender put in the type. */
    static const pd_str types[] = {
        S("\xff\xfe"), S("a\nb"), S("a\x00z"),
        S("0123456789012345678901234567890\xc3\xa9"),  /* é across the echo limit */
        S("\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac"
          "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac"),
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        raw v = raw_strn(types[i].p, types[i].n);
        expect_event(map_set(event_msg(PD_EV_CONNECT), "type", &v), PD_EBADTYPE,
                     "unknown event type", "odd type");
    }
}

Test(codec_errors, missing_field_named_per_type) {
    static const char *const req[PD_EV_COUNT][4] = {
        [PD_EV_CONNECT] = {"server", "conn", "user", "device"},
        [PD_EV_DISCONNECT] = {"server", "conn"},
        [PD_EV_ACTIVITY] = {"server", "conn"},
        [PD_EV_IDLE] = {"server", "conn"},
        [PD_EV_STATUS] = {"user", "status"},
        [PD_EV_CUSTOM] = {"user", "text"},
        [PD_EV_SYNC] = {"server", "conns"},
        [PD_EV_HEARTBEAT] = {"server"},
        [PD_EV_SHUTDOWN] = {"server"},
    };
    for (int t = 0; t < PD_EV_COUNT; t++) {
        expect_event(map_drop(event_msg((pd_event_type)t), "type"), PD_EMISSING,
                     "missing field 'type'", "no type");
        for (int f = 0; f < 4 && req[t][f]; f++) {
            char needle[64];
            snprintf(needle, sizeof needle, "%s event lacks field '%s'",
                     pd_event_type_name((pd_event_type)t), req[t][f]);
            expect_event(map_drop(event_msg((pd_event_type)t), req[t][f]), PD_EMISSING,
                         needle, needle);
        }
    }
    expect_event(msg_hex("80"), PD_EMISSING, "missing field 'type'", "{}");
}

Test(codec_errors, sync_entry_errors) {
    /* {"user": "u", "device": "web"} and friends */
    expect_event(sync_with_entry("82 a4 75 73 65 72 a1 75 a6 64 65 76 69 63 65 a3 77 65 62"),
                 PD_EMISSING, "a sync entry lacks field 'conn'", "no conn");
    expect_event(sync_with_entry("82 a4 63 6f 6e 6e a1 63 a6 64 65 76 69 63 65 a3 77 65 62"),
                 PD_EMISSING, "a sync entry lacks field 'user'", "no user");
    expect_event(sync_with_entry("82 a4 63 6f 6e 6e a1 63 a4 75 73 65 72 a1 75"),
                 PD_EMISSING, "a sync entry lacks field 'device'", "no device");
    expect_event(sync_with_entry("83 a4 63 6f 6e 6e a1 2a a4 75 73 65 72 a1 75"
                                 " a6 64 65 76 69 63 65 a3 77 65 62"),
                 PD_EBADID, "field 'conn'", "conn '*'");
    expect_event(sync_with_entry("83 a4 63 6f 6e 6e a1 63 a4 75 73 65 72 a0"
                                 " a6 64 65 76 69 63 65 a3 77 65 62"),
                 PD_EBADID, "field 'user'", "user ''");
    expect_event(sync_with_entry("83 a4 63 6f 6e 6e a1 63 a4 75 73 65 72 a1 75"
                                 " a6 64 65 76 69 63 65 a0"),
                 PD_EBADVALUE, "'device' must not be empty", "device ''");
    expect_event(sync_with_entry("a1 63"), PD_EBADVALUE, "'conns' must be an array of maps",
                 "entry is a string");
    raw notarr = raw_str("c1");
    expect_event(map_set(event_msg(PD_EV_SYNC), "conns", &notarr), PD_EBADVALUE,
                 "'conns' must be an array", "conns is a string");
    /* Unknown keys inside an entry are ignored. */
    expect_event(sync_with_entry("84 a4 63 6f 6e 6e a1 63 a4 75 73 65 72 a1 75"
                                 " a6 64 65 76 69 63 65 a3 77 65 62 a2 69 70 92 c0 c3"),
                 PD_OK, NULL, "extra key");
}

static const char *const bad_ids[] = {
    "", "a*b", "*", "a>b", ">", "a b", " a", ".a", "a.", "a..b", "..", ".",
    "a/b", "a\\b", "a,b", "a#b", "\xc3\xa9", "a\tb", "a$b", "a!b",
};

/* Id fields of events, with the type that carries each. */
static const struct { pd_event_type t; const char *field; } id_fields[] = {
    {PD_EV_CONNECT, "server"}, {PD_EV_CONNECT, "conn"}, {PD_EV_CONNECT, "user"},
    {PD_EV_STATUS, "user"}, {PD_EV_CUSTOM, "user"}, {PD_EV_HEARTBEAT, "server"},
    {PD_EV_DISCONNECT, "conn"},
};

Test(codec_errors, bad_id) {
    char long_id[PD_ID_MAX + 2];
    memset(long_id, 'a', sizeof long_id);
    for (size_t f = 0; f < sizeof id_fields / sizeof id_fields[0]; f++) {
        char needle[48];
        snprintf(needle, sizeof needle, "field '%s' is not a valid id", id_fields[f].field);
        for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
            raw v = raw_str(bad_ids[i]);
            expect_event(map_set(event_msg(id_fields[f].t), id_fields[f].field, &v), PD_EBADID,
                         needle, bad_ids[i]);
        }
        raw v = raw_strn(long_id, PD_ID_MAX + 1);
        expect_event(map_set(event_msg(id_fields[f].t), id_fields[f].field, &v), PD_EBADID,
                     needle, "129 bytes");
    }
}

Test(codec_errors, good_ids_pass) {
    char max_id[PD_ID_MAX];
    memset(max_id, 'z', sizeof max_id);
    max_id[10] = '.';
    const char *good[] = {
        "a", "0", "-", "_", ":", "@", "=", "+", "a.b", "a.b.c",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@=+-",
        "user@example.org", "tenant=acme:user+1",
    };
    for (size_t f = 0; f < sizeof id_fields / sizeof id_fields[0]; f++) {
        for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
            raw v = raw_str(good[i]);
            expect_event(map_set(event_msg(id_fields[f].t), id_fields[f].field, &v), PD_OK, NULL,
                         good[i]);
        }
        raw v = raw_strn(max_id, PD_ID_MAX);
        expect_event(map_set(event_msg(id_fields[f].t), id_fields[f].field, &v), PD_OK, NULL,
                     "128 bytes");
    }
}

Test(codec_errors, fields_checked_even_when_the_type_does_not_use_them) {
    raw bad = raw_str("a*b");
    expect_event(map_set(event_msg(PD_EV_HEARTBEAT), "user", &bad), PD_EBADID,
                 "field 'user'", "heartbeat with a bad user");
    raw sleepy = raw_str("sleepy");
    expect_event(map_set(event_msg(PD_EV_DISCONNECT), "status", &sleepy), PD_EBADVALUE,
                 "field 'status'", "disconnect with a bad status");
}

Test(codec_errors, too_large_and_the_limits_themselves) {
    static const struct { pd_event_type t; const char *field; size_t max; } lim[] = {
        {PD_EV_CUSTOM, "text", PD_TEXT_MAX},
        {PD_EV_CUSTOM, "emoji", PD_EMOJI_MAX},
        {PD_EV_CONNECT, "device", PD_DEVICE_MAX},
    };
    cr_expect_eq(PD_TEXT_MAX, 256);
    cr_expect_eq(PD_EMOJI_MAX, 64);
    cr_expect_eq(PD_DEVICE_MAX, 32);
    cr_expect_eq(PD_META_MAX, 1024);
    for (size_t i = 0; i < sizeof lim / sizeof lim[0]; i++) {
        raw ok = raw_rep('x', lim[i].max), over = raw_rep('x', lim[i].max + 1);
        char needle[64];
        snprintf(needle, sizeof needle, "field '%s' is %zu bytes, the limit is %zu",
                 lim[i].field, lim[i].max + 1, lim[i].max);
        expect_event(map_set(event_msg(lim[i].t), lim[i].field, &ok), PD_OK, NULL, "at limit");
        expect_event(map_set(event_msg(lim[i].t), lim[i].field, &over), PD_ETOOLARGE, needle,
                     needle);
    }
    /* Limits count bytes, not characters: 128 x U+00E9 is 256 bytes. */
    char e2[258];
    for (int i = 0; i < 129; i++) memcpy(e2 + 2 * i, "\xc3\xa9", 2);
    raw ok = raw_strn(e2, 256), over = raw_strn(e2, 258);
    expect_event(map_set(event_msg(PD_EV_CUSTOM), "text", &ok), PD_OK, NULL, "256 bytes of é");
    expect_event(map_set(event_msg(PD_EV_CUSTOM), "text", &over), PD_ETOOLARGE, NULL, "258 B");
    /* meta: at most 1024 bytes encoded. */
    raw m1024 = meta_of_size(PD_META_MAX), m1025 = meta_of_size(PD_META_MAX + 1);
    expect_event(map_set(event_msg(PD_EV_CONNECT), "meta", &m1024), PD_OK, NULL, "meta 1024");
    expect_event(map_set(event_msg(PD_EV_CONNECT), "meta", &m1025), PD_ETOOLARGE,
                 "field 'meta' is 1025 bytes encoded, the limit is 1024", "meta 1025");
    /* A sync entry's device has the same limit. */
    expect_event(sync_with_entry("83 a4 63 6f 6e 6e a1 63 a4 75 73 65 72 a1 75 a6 64 65 76 69"
                                 " 63 65 d9 21 78 78 78 78 78 78 78 78 78 78 78 78 78 78 78 78"
                                 " 78 78 78 78 78 78 78 78 78 78 78 78 78 78 78 78 78"),
                 PD_ETOOLARGE, "field 'device' is 33 bytes", "sync device 33");
}

Test(codec_errors, too_deep_meta_is_too_large) {
    raw deep = {.n = 0};
    for (int i = 0; i <= MPR_MAX_DEPTH; i++) {
        memcpy(deep.b + deep.n, "\x81\xa1k", 3);
        deep.n += 3;
    }
    deep.b[deep.n++] = 0x01;
    expect_event(map_set(event_msg(PD_EV_CONNECT), "meta", &deep), PD_ETOOLARGE,
                 "nesting too deep", "meta 33 deep");
    expect_event(map_set(event_msg(PD_EV_CONNECT), "future", &deep), PD_ETOOLARGE,
                 "nesting too deep", "unknown key 33 deep");
}

Test(codec_errors, bad_value) {
    static const struct { pd_event_type t; const char *field, *hex, *why; } bad[] = {
        {PD_EV_STATUS, "status", "a6 73 6c 65 65 70 79", "one of auto, away, busy, invisible"},
        {PD_EV_STATUS, "status", "a4 41 75 74 6f", "one of auto"},          /* "Auto" */
        {PD_EV_STATUS, "status", "01", "field 'status' must be a string"},
        {PD_EV_STATUS, "status", "c0", "field 'status' must be a string"},
        {PD_EV_CUSTOM, "text", "a1 ff", "'text' must be UTF-8 without control characters"},
        {PD_EV_CUSTOM, "text", "a2 c0 af", "'text' must be UTF-8"},           /* overlong */
        {PD_EV_CUSTOM, "text", "a3 ed a0 80", "'text' must be UTF-8"},        /* surrogate */
        {PD_EV_CUSTOM, "text", "a4 f4 90 80 80", "'text' must be UTF-8"},     /* > U+10FFFF */
        {PD_EV_CUSTOM, "text", "a1 c3", "'text' must be UTF-8"},              /* cut short */
        {PD_EV_CUSTOM, "text", "a3 61 0a 62", "without control characters"},  /* newline */
        {PD_EV_CUSTOM, "text", "a1 7f", "without control characters"},        /* DEL */
        {PD_EV_CUSTOM, "text", "a3 61 00 62", "without control characters"},  /* NUL */
        {PD_EV_CUSTOM, "text", "c4 01 61", "field 'text' must be a string"},  /* bin */
        {PD_EV_CUSTOM, "emoji", "a1 fe", "'emoji' must be UTF-8"},
        {PD_EV_CUSTOM, "expires_at", "ff", "'expires_at' must not be negative"},
        {PD_EV_CUSTOM, "expires_at", "d3 80 00 00 00 00 00 00 00", "must not be negative"},
        {PD_EV_CUSTOM, "expires_at", "a1 31", "'expires_at' must be an integer"},
        {PD_EV_CUSTOM, "expires_at", "cb 41 d9 00 00 00 00 00 00", "must be an integer"},
        {PD_EV_CONNECT, "device", "a0", "'device' must not be empty"},
        {PD_EV_CONNECT, "device", "c0", "'device' must not be empty"},
        {PD_EV_CONNECT, "device", "a3 77 0d 62", "'device' must be UTF-8 without control"},
        {PD_EV_CONNECT, "meta", "a1 78", "field 'meta' must be a map"},
        {PD_EV_CONNECT, "meta", "91 01", "field 'meta' must be a map"},
        {PD_EV_CONNECT, "ts", "ad 31 37 30 30 30 30 30 30 30 30 30 30 30", "'ts' must be an int"},
        {PD_EV_CONNECT, "ts", "ff", "'ts' must not be negative"},
        {PD_EV_CONNECT, "ts", "cf 80 00 00 00 00 00 00 00", "'ts' must be an integer"},
        {PD_EV_CONNECT, "seq", "d0 ff", "'seq' must not be negative"},
        {PD_EV_CONNECT, "seq", "ca 3f 80 00 00", "'seq' must be an integer"},
        {PD_EV_CONNECT, "seq", "c3", "'seq' must be an integer"},
        {PD_EV_CONNECT, "type", "01", "field 'type' must be a string"},
        {PD_EV_CONNECT, "user", "cd 01 00", "field 'user' must be a string"},
        {PD_EV_CONNECT, "server", "c0", "field 'server' must be a string"},
        {PD_EV_SYNC, "conns", "80", "field 'conns' must be an array"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        raw v = raw_hex(bad[i].hex);
        char what[80];
        snprintf(what, sizeof what, "%s = %s", bad[i].field, bad[i].hex);
        expect_event(map_set(event_msg(bad[i].t), bad[i].field, &v), PD_EBADVALUE, bad[i].why,
                     what);
    }
}

Test(codec_errors, unknown_keys_ignored) {
    static const char *const extra[] = {
        "c0", "01", "a5 66 75 74 75 72", "92 01 81 a1 61 92 c3 c2", "c4 02 00 01",
        "d6 ff 00 00 00 01", "cb 40 09 21 fb 54 44 2d 18", "80", "90",
        "cf ff ff ff ff ff ff ff ff",
    };
    for (int t = 0; t < PD_EV_COUNT; t++) {
        for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
            raw v = raw_hex(extra[i]);
            msg m = map_set(event_msg((pd_event_type)t), "x-future-field", &v);
            pd_event ev, want = base_event((pd_event_type)t);
            pd_err err;
            cr_assert_eq(pd_event_decode(m.b, m.n, &ev, &err), PD_OK, "%s: %s", extra[i], err.msg);
            expect_same_event(&ev, &want);
            msg_free(&m);
        }
    }
}

Test(codec_errors, nil_accepted_for_optional_fields) {
    static const struct { pd_event_type t; const char *field; } opt[] = {
        {PD_EV_CONNECT, "meta"}, {PD_EV_CUSTOM, "emoji"}, {PD_EV_CUSTOM, "expires_at"},
        {PD_EV_CONNECT, "ts"}, {PD_EV_CONNECT, "seq"}, {PD_EV_SYNC, "ts"}, {PD_EV_SYNC, "seq"},
    };
    raw nil = raw_hex("c0");
    for (size_t i = 0; i < sizeof opt / sizeof opt[0]; i++) {
        msg m = map_set(event_msg(opt[i].t), opt[i].field, &nil);
        pd_event ev;
        pd_err err;
        cr_assert_eq(pd_event_decode(m.b, m.n, &ev, &err), PD_OK, "%s nil: %s", opt[i].field,
                     err.msg);
        cr_expect_eq(ev.meta.n, 0);
        cr_expect_eq(ev.emoji.n, 0);
        cr_expect_eq(ev.expires_at, 0);
        cr_expect_not(ev.has_ts, "ts nil reads as absent");
        cr_expect_not(ev.has_seq, "seq nil reads as absent");
        msg_free(&m);
    }
    /* text nil is the empty text: it clears the custom status. */
    msg m = map_set(event_msg(PD_EV_CUSTOM), "text", &nil);
    pd_event ev;
    pd_err err;
    cr_assert_eq(pd_event_decode(m.b, m.n, &ev, &err), PD_OK, "%s", err.msg);
    cr_expect_eq(ev.text.n, 0);
    msg_free(&m);
}

/* ---- error codes: queries ----------------------------------------------------------------- */

Test(codec_query_errors, bad_msgpack) {
    static const char *const bad[] = {
        "c1", "90", "a1 61", "c0", "80 c0", "81 01 02", "81 a5 75 73 65 72 73",
        "df ff ff ff ff", "81 a5 75 73 65 72 73 dd ff ff ff ff",
    };
    for (int t = 0; t < PD_Q_COUNT; t++) {
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
            expect_query((pd_query_type)t, msg_hex(bad[i]), PD_EBADMSGPACK, NULL, bad[i]);
    }
    msg m = get_msg();
    for (size_t cut = 1; cut < m.n; cut++)
        expect_query(PD_Q_GET, msg_bytes(m.b, cut), PD_EBADMSGPACK, NULL, "truncated get");
    msg_free(&m);
}

Test(codec_query_errors, missing_field) {
    raw nil = raw_hex("c0");
    expect_query(PD_Q_GET, map_drop(get_msg(), "users"), PD_EMISSING,
                 "request lacks field 'users'", "get without users");
    expect_query(PD_Q_DEVICES, msg_hex("80"), PD_EMISSING, "request lacks field 'user'", "{}");
    pd_query q = {.type = PD_Q_DEVICES, .user = S("alice")};
    expect_query(PD_Q_DEVICES, map_set(query_msg(&q, NULL, 0), "user", &nil), PD_EMISSING,
                 "lacks field 'user'", "user nil");
    /* A key of another query does not count. */
    expect_query(PD_Q_DEVICES, map_drop(get_msg(), "viewer"), PD_EMISSING, NULL, "users only");
}

Test(codec_query_errors, bad_id) {
    pd_query dq = {.type = PD_Q_DEVICES, .user = S("alice")};
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
        raw v = raw_str(bad_ids[i]);
        expect_query(PD_Q_GET, map_set(get_msg(), "viewer", &v), PD_EBADID,
                     "field 'viewer' is not a valid id", bad_ids[i]);
        expect_query(PD_Q_DEVICES, map_set(query_msg(&dq, NULL, 0), "user", &v), PD_EBADID,
                     "field 'user' is not a valid id", bad_ids[i]);
        pd_str users[3] = {S("alice"), pd_str_c(bad_ids[i]), S("bob")};
        pd_query gq = {.type = PD_Q_GET};
        expect_query(PD_Q_GET, query_msg(&gq, users, 3), PD_EBADID,
                     "field 'users' is not a valid id", bad_ids[i]);
    }
}

Test(codec_query_errors, too_large) {
    cr_expect_eq(PD_QUERY_USERS_MAX, 1000);
    cr_expect_eq(PD_QUERY_LIMIT_MAX, 1000);
    cr_expect_eq(PD_CURSOR_MAX, 64);
    expect_query(PD_Q_GET, get_n_users(1000), PD_OK, NULL, "1000 users");
    expect_query(PD_Q_GET, get_n_users(1001), PD_ETOOLARGE,
                 "field 'users' has 1001 ids, the limit is 1000", "1001 users");
    pd_query q = {.type = PD_Q_ONLINE, .limit = 1000};
    expect_query(PD_Q_ONLINE, query_msg(&q, NULL, 0), PD_OK, NULL, "limit 1000");
    q.limit = 1001;
    expect_query(PD_Q_ONLINE, query_msg(&q, NULL, 0), PD_ETOOLARGE,
                 "field 'limit' is above 1000", "limit 1001");
    raw c64 = raw_rep('9', 64), c65 = raw_rep('9', 65);
    q.limit = 10;
    expect_query(PD_Q_ONLINE, map_set(query_msg(&q, NULL, 0), "cursor", &c64), PD_OK, NULL,
                 "cursor 64");
    expect_query(PD_Q_ONLINE, map_set(query_msg(&q, NULL, 0), "cursor", &c65), PD_ETOOLARGE,
                 "field 'cursor' is longer than 64 bytes", "cursor 65");
}

Test(codec_query_errors, bad_value) {
    static const struct { pd_query_type t; const char *field, *hex, *why; } bad[] = {
        {PD_Q_ONLINE, "limit", "00", "field 'limit' must be at least 1"},
        {PD_Q_ONLINE, "limit", "ff", "field 'limit' must be at least 1"},
        {PD_Q_ONLINE, "limit", "a2 31 30", "field 'limit' must be an integer"},
        {PD_Q_ONLINE, "limit", "cb 40 24 00 00 00 00 00 00", "must be an integer"},
        {PD_Q_ONLINE, "cursor", "01", "field 'cursor' must be a string"},
        {PD_Q_GET, "users", "a5 61 6c 69 63 65", "field 'users' must be an array of ids"},
        {PD_Q_GET, "users", "92 a1 61 01", "field 'users' must be an array of ids"},
        {PD_Q_GET, "users", "91 c0", "field 'users' must be an array of ids"},
        {PD_Q_GET, "viewer", "01", "field 'viewer' must be a string"},
        {PD_Q_DEVICES, "user", "91 a1 61", "field 'user' must be a string"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        raw v = raw_hex(bad[i].hex);
        msg base = bad[i].t == PD_Q_GET ? get_msg() : msg_hex("80");
        expect_query(bad[i].t, map_set(base, bad[i].field, &v), PD_EBADVALUE, bad[i].why,
                     bad[i].hex);
    }
}

Test(codec_query_errors, unknown_keys_and_nil_optionals) {
    raw nil = raw_hex("c0"), fut = raw_hex("92 c3 81 a1 61 c4 00");
    for (int t = 0; t < PD_Q_COUNT; t++) {
        msg base = t == PD_Q_GET ? get_msg() : t == PD_Q_DEVICES ? msg_hex("81 a4 75 73 65 72 a1 75")
                                                                : msg_hex("80");
        expect_query((pd_query_type)t, map_set(base, "x-future", &fut), PD_OK, NULL, "future");
    }
    pd_query q;
    pd_err err;
    msg m = map_set(get_msg(), "viewer", &nil);
    cr_expect_eq(pd_query_decode(PD_Q_GET, m.b, m.n, &q, &err), PD_OK, "%s", err.msg);
    cr_expect_eq(q.viewer.n, 0);
    msg_free(&m);
    m = map_set(map_set(msg_hex("80"), "cursor", &nil), "limit", &nil);
    cr_expect_eq(pd_query_decode(PD_Q_ONLINE, m.b, m.n, &q, &err), PD_OK, "%s", err.msg);
    cr_expect_eq(q.cursor.n, 0);
    cr_expect_eq(q.limit, PD_QUERY_LIMIT_MAX);
    msg_free(&m);
    /* Keys of other queries are ignored, not validated. */
    raw bad = raw_str("**");
    expect_query(PD_Q_CLUSTER, map_set(msg_hex("80"), "user", &bad), PD_OK, NULL, "cluster");
}

Test(codec_event, seq_above_2_53_is_bad_value) {
    static const int64_t seqs[] = {PD_SEQ_MAX + 1, INT64_MAX};
    for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
        pd_event ev = base_event(PD_EV_ACTIVITY), got;
        pd_err err = {PD_OK, ""};
        ev.has_seq = true;
        ev.seq = seqs[i];
        msg m = encode_event(&ev);
        cr_expect_eq(pd_event_decode(m.b, m.n, &got, &err), PD_EBADVALUE, "seq %lld",
                     (long long)seqs[i]);
        cr_expect_str_eq(err.msg, "seq is above 2^53");
        msg_free(&m);
    }
}

Test(codec_reply, duplicate_reply_roundtrip) {
    msgpack_sbuffer sb;
    pd_reply rep;
    static const uint8_t want[] = {0x82, 0xa2, 'o', 'k', 0xc3, 0xa9, 'd', 'u', 'p', 'l', 'i',
                                   'c', 'a', 't', 'e', 0xc3};
    msgpack_sbuffer_init(&sb);
    pd_reply_duplicate_encode(&sb);
    cr_assert_eq(sb.size, sizeof want);
    cr_expect_eq(memcmp(sb.data, want, sizeof want), 0);
    cr_assert_eq(pd_reply_decode(sb.data, sb.size, &rep), PD_OK);
    cr_expect(rep.ok && rep.duplicate);
    msgpack_sbuffer_destroy(&sb);
}

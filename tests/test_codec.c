/* test_codec.c - every message of the contract through codec.h: round
 * trips, each error code with the exact input that produces it, hostile
 * container sizes, and random and mutated input.
 *
 * Design: valid messages are made by the encoders (so encoder and decoder
 * are checked against each other and against literal hex where the wire
 * form matters); invalid ones are made by editing one key of a valid map
 * (map_set) so that each error test differs from a valid message in exactly
 * the field under test. Every decoded input is first copied into a heap
 * block of exactly its size, so that ASan aborts on a read one byte past
 * the end. Under ASan the binary also refuses any allocation above 256 MiB
 * and counts allocations through the sanitizer's malloc hook, which is how
 * "decoding allocates nothing" is checked for real, including allocations
 * that would be freed before decode returns. */
#include "alloc.h"
#include "codec.h"
#include <criterion/criterion.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif

#ifdef TEST_ASAN
/* ASan's own interface (gcc ships no allocator_interface.h); the reserved
 * names are the sanitizer's, not ours. */
int __sanitizer_install_malloc_and_free_hooks(void (*m)(const volatile void *, size_t),
                                              void (*f)(const volatile void *));
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "max_allocation_size_mb=256"; }

static volatile size_t hook_allocs;
static void on_malloc(const volatile void *p, size_t size) {
    (void)p;
    (void)size;
    hook_allocs++;
}
static void on_free(const volatile void *p) { (void)p; }
#endif

/* Starts counting allocations (under ASan) and proves the counter works,
 * so that "nothing allocated" cannot pass because nothing was counted. */
static void count_allocations(void) {
#ifdef TEST_ASAN
    __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
    size_t before = hook_allocs;
    void *volatile p = malloc(16);
    free(p);
    cr_assert_gt(hook_allocs, before, "the malloc hook does not count");
#endif
}

/* ---- helpers: inputs, raw values, map editing ----------------------------------- */

#define S(lit) {(lit), sizeof(lit) - 1}

/* A message on the heap, exactly as long as its bytes. */
typedef struct {
    uint8_t *b;
    size_t n;
} msg;

static msg msg_bytes(const void *p, size_t n) {
    msg m = {malloc(n ? n : 1), n};
    cr_assert_not_null(m.b);
    if (n) memcpy(m.b, p, n);
    return m;
}

static msg msg_sb(const msgpack_sbuffer *sb) { return msg_bytes(sb->data, sb->size); }

static void msg_free(msg *m) {
    free(m->b);
    m->b = NULL;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* One encoded value (or any bytes), built on the stack. */
typedef struct {
    uint8_t b[8192];
    size_t n;
} raw;

static int raw_write(void *data, const char *buf, size_t len) {
    raw *r = data;
    cr_assert(r->n + len <= sizeof r->b);
    memcpy(r->b + r->n, buf, len);
    r->n += len;
    return 0;
}

static msgpack_packer raw_packer(raw *r) {
    msgpack_packer pk;
    r->n = 0;
    msgpack_packer_init(&pk, r, raw_write);
    return pk;
}

static raw raw_strn(const char *p, size_t n) {
    raw r;
    msgpack_packer pk = raw_packer(&r);
    msgpack_pack_str_with_body(&pk, p, n);
    return r;
}

static raw raw_str(const char *s) { return raw_strn(s, strlen(s)); }

/* A string of n copies of c. */
static raw raw_rep(char c, size_t n) {
    char buf[4096];
    cr_assert(n <= sizeof buf);
    memset(buf, c, n);
    return raw_strn(buf, n);
}

static raw raw_hex(const char *hex) {
    raw r = {.n = 0};
    for (const char *s = hex; *s; s++) {
        if (*s == ' ') continue;
        cr_assert(hexval(s[0]) >= 0 && hexval(s[1]) >= 0, "bad hex in test: %s", hex);
        r.b[r.n++] = (uint8_t)(hexval(s[0]) << 4 | hexval(s[1]));
        s++;
    }
    return r;
}

static msg msg_hex(const char *hex) {
    raw r = raw_hex(hex);
    return msg_bytes(r.b, r.n);
}

/* Rewrites the map in m: key k set to the encoded value v (replaced in
 * place, or appended), or dropped when v is NULL. Frees m. */
static msg map_set(msg m, const char *k, const raw *v) {
    mp_reader r;
    uint32_t n;
    pd_str keys[64], vals[64];
    mpr_init(&r, m.b, m.n);
    cr_assert(mpr_map(&r, &n) && n <= 64, "map_set needs a map: %s", r.why);
    for (uint32_t i = 0; i < n; i++) {
        cr_assert(mpr_str(&r, &keys[i]) && mpr_raw(&r, &vals[i]), "%s", r.why);
    }
    raw out;
    msgpack_packer pk = raw_packer(&out);
    bool found = false;
    for (uint32_t i = 0; i < n; i++) found |= pd_str_eqc(keys[i], k);
    msgpack_pack_map(&pk, n - (found && !v) + (!found && v));
    for (uint32_t i = 0; i < n; i++) {
        bool hit = pd_str_eqc(keys[i], k);
        if (hit && !v) continue;
        pd_pack_str(&pk, keys[i]);
        if (hit) raw_write(&out, (const char *)v->b, v->n);
        else raw_write(&out, vals[i].p, vals[i].n);
    }
    if (!found && v) {
        pd_pack_cstr(&pk, k);
        raw_write(&out, (const char *)v->b, v->n);
    }
    msg_free(&m);
    return msg_bytes(out.b, out.n);
}

static msg map_drop(msg m, const char *k) { return map_set(m, k, NULL); }

/* Number of keys of the map at the start of m. */
static uint32_t map_count(const void *p, size_t n) {
    mp_reader r;
    uint32_t c = 0;
    mpr_init(&r, p, n);
    cr_assert(mpr_map(&r, &c));
    return c;
}

/* ---- helpers: valid events ------------------------------------------------------ */

static const pd_sync_conn sync3[3] = {
    {S("c1"), S("alice"), S("web")},
    {S("c2"), S("bob"), S("mobile")},
    {S("c3"), S("alice"), S("desktop")},
};

/* An event of type t with every field set to a valid value. */
static pd_event base_event(pd_event_type t) {
    pd_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = t;
    ev.server = pd_str_c("srv-1");
    ev.conn = pd_str_c("conn-1");
    ev.user = pd_str_c("alice");
    ev.device = pd_str_c("web");
    ev.status = PD_CHOSEN_BUSY;
    ev.text = pd_str_c("in a meeting");
    return ev;
}

static msg encode_event(const pd_event *ev) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_event_encode(&sb, ev, ev->type == PD_EV_SYNC ? sync3 : NULL, 3);
    msg m = msg_sb(&sb);
    msgpack_sbuffer_destroy(&sb);
    return m;
}

static msg event_msg(pd_event_type t) {
    pd_event ev = base_event(t);
    return encode_event(&ev);
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

static msg query_msg(const pd_query *q, const pd_str *users, uint32_t n) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_query_encode(&sb, q, users, n);
    msg m = msg_sb(&sb);
    msgpack_sbuffer_destroy(&sb);
    return m;
}

static const pd_str users3[3] = {S("alice"), S("bob"), S("carol@example.org")};

static msg get_msg(void) {
    pd_query q = {.type = PD_Q_GET, .viewer = S("bob")};
    return query_msg(&q, users3, 3);
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
    static const int64_t seqs[] = {0, 1, 42, INT64_MAX};
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
    "user", "status", "text", "emoji", "expires_at", "last_seen",
};

/* Checks that the map at r has exactly the view keys plus `last`. */
static void expect_view_keys(const void *p, size_t n, const char *last) {
    mp_reader r;
    uint32_t c;
    unsigned seen = 0;
    mpr_init(&r, p, n);
    cr_assert(mpr_map(&r, &c));
    cr_expect_eq(c, 7);
    for (uint32_t i = 0; i < c; i++) {
        pd_str k;
        cr_assert(mpr_str(&r, &k) && mpr_skip(&r));
        for (unsigned j = 0; j < 6; j++) if (pd_str_eqc(k, view_keys[j])) seen |= 1u << j;
        if (pd_str_eqc(k, last)) seen |= 1u << 6;
    }
    cr_expect_eq(seen, 0x7f, "keys seen %#x", seen);
}

Test(codec_notification, roundtrip_all_fields) {
    pd_view v = {
        .user = S("alice"), .status = PD_PUB_BUSY, .text = S("in a meeting"),
        .emoji = S("\xf0\x9f\x93\x85"), .expires_at = 1893456000000LL,
        .last_seen = 1700000000000LL, .ts = 1700000000456LL,
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
    pd_get_reply_begin(&pk, 2);
    for (int i = 0; i < 2; i++) pd_get_reply_user(&pk, &views[i]);
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
    pd_devices_reply_begin(&pk, pd_str_c("alice"), 2);
    for (int i = 0; i < 2; i++) pd_devices_reply_device(&pk, &devs[i]);
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

/* A sync event whose single entry is the given map. */
static msg sync_with_entry(const char *entry_hex) {
    raw conns = raw_hex(entry_hex);
    raw arr = raw_hex("91");
    memcpy(arr.b + 1, conns.b, conns.n);
    arr.n += conns.n;
    return map_set(event_msg(PD_EV_SYNC), "conns", &arr);
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

/* A map {"k": "<n bytes>"} encoded, n chosen so the total is `total`. */
static raw meta_of_size(size_t total) {
    size_t body = total - 6; /* 81, a1 6b, da nn nn */
    raw r;
    msgpack_packer pk = raw_packer(&r);
    char buf[2048];
    cr_assert(body >= 256 && body < sizeof buf);
    memset(buf, 'v', body);
    msgpack_pack_map(&pk, 1);
    pd_pack_cstr(&pk, "k");
    msgpack_pack_str_with_body(&pk, buf, body);
    cr_assert_eq(r.n, total);
    return r;
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

/* A get request for n distinct valid users. */
static msg get_n_users(uint32_t n) {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    char id[16];
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    pd_pack_cstr(&pk, "users");
    msgpack_pack_array(&pk, n);
    for (uint32_t i = 0; i < n; i++) {
        snprintf(id, sizeof id, "u%u", i);
        pd_pack_cstr(&pk, id);
    }
    msg m = msg_sb(&sb);
    msgpack_sbuffer_destroy(&sb);
    return m;
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

/* ---- huge declared sizes: refused, and nothing allocated ------------------------------------ */

static size_t heap_used(void) { return mallinfo2().uordblks; }

/* Runs every decoder on m, checks that none allocates and that all refuse.
 * At the top level every decoder must say bad_msgpack (the notification
 * decoder only ever reports bad_value); nested, the event decoder's code is
 * `want_event` and the others may also meet a wrong-kind field first. */
static void decode_all_no_alloc(const msg *m, pd_status want_event, bool top, const char *what) {
    pd_event ev;
    pd_query q;
    pd_view v;
    pd_reply rep;
    pd_err err = {PD_OK, ""};
    size_t live = pd_alloc_live_bytes(), heap = heap_used();
#ifdef TEST_ASAN
    size_t allocs = hook_allocs;
#endif
    pd_status se = pd_event_decode(m->b, m->n, &ev, &err);
    pd_status sq[PD_Q_COUNT];
    for (int t = 0; t < PD_Q_COUNT; t++)
        sq[t] = pd_query_decode((pd_query_type)t, m->b, m->n, &q, &err);
    pd_status sn = pd_notification_decode(m->b, m->n, &v, &err);
    pd_status sr = pd_reply_decode(m->b, m->n, &rep);
#ifdef TEST_ASAN
    cr_expect_eq(hook_allocs, allocs, "%s: decoding allocated %zu times", what,
                 (size_t)(hook_allocs - allocs));
#endif
    cr_expect_eq(pd_alloc_live_bytes(), live, "%s", what);
    cr_expect_eq(heap_used(), heap, "%s", what);
    cr_expect_eq(se, want_event, "%s: event %s (%s)", what, pd_status_code(se), err.msg);
    for (int t = 0; t < PD_Q_COUNT; t++) {
        cr_expect(sq[t] == PD_EBADMSGPACK || (!top && sq[t] == PD_EBADVALUE),
                  "%s: query %d gave %s", what, t, pd_status_code(sq[t]));
    }
    cr_expect_eq(sn, PD_EBADVALUE, "%s: notification", what);
    cr_expect_eq(sr, PD_EBADMSGPACK, "%s: reply", what);
}

static const char *const huge_heads[] = {
    "dd ff ff ff ff", "df ff ff ff ff", "db ff ff ff ff", "c6 ff ff ff ff", "dc ff ff",
    "de ff ff", "da ff ff", "c5 ff ff", "c9 ff ff ff ff 01", "dd 7f ff ff ff 01 02",
};

Test(codec_hostile, huge_declared_sizes_refused_without_allocating) {
    count_allocations();
    msg warm = msg_hex("c1");
    decode_all_no_alloc(&warm, PD_EBADMSGPACK, true, "warm-up");
    msg_free(&warm);
    for (size_t i = 0; i < sizeof huge_heads / sizeof huge_heads[0]; i++) {
        msg m = msg_hex(huge_heads[i]);
        decode_all_no_alloc(&m, PD_EBADMSGPACK, true, huge_heads[i]);
        msg_free(&m);
        /* The same header as the value of fields of a valid event. `meta`,
         * `conns` and unknown keys are walked whole first, so a lying
         * length is bad_msgpack; a string field holding a lying string is
         * bad_msgpack too. A string (or integer) field holding a container
         * or bin is refused by its kind, before its length is looked at:
         * bad_value. */
        raw h = raw_hex(huge_heads[i]);
        bool is_str = h.b[0] >= 0xd9 && h.b[0] <= 0xdb;
        static const struct { const char *field; pd_event_type t; bool needs_str; } at[] = {
            {"meta", PD_EV_CONNECT, false}, {"conns", PD_EV_SYNC, false},
            {"x-future", PD_EV_HEARTBEAT, false}, {"user", PD_EV_CONNECT, true},
            {"text", PD_EV_CUSTOM, true}, {"device", PD_EV_CONNECT, true},
        };
        for (size_t f = 0; f < sizeof at / sizeof at[0]; f++) {
            char what[64];
            snprintf(what, sizeof what, "%s in '%s'", huge_heads[i], at[f].field);
            m = map_set(event_msg(at[f].t), at[f].field, &h);
            decode_all_no_alloc(&m, !at[f].needs_str || is_str ? PD_EBADMSGPACK : PD_EBADVALUE,
                                false, what);
            msg_free(&m);
        }
        /* As a sync entry, and as a user of a get request. */
        m = sync_with_entry(huge_heads[i]);
        decode_all_no_alloc(&m, PD_EBADMSGPACK, false, "sync entry");
        msg_free(&m);
        raw arr = raw_hex("92 a1 61");
        memcpy(arr.b + arr.n, h.b, h.n);
        arr.n += h.n;
        pd_query q;
        pd_err err;
        m = map_set(get_msg(), "users", &arr);
        cr_expect_eq(pd_query_decode(PD_Q_GET, m.b, m.n, &q, &err), PD_EBADMSGPACK, "%s",
                     huge_heads[i]);
        msg_free(&m);
    }
    /* The top-level map header itself lies: a valid event follows it. */
    msg ev = event_msg(PD_EV_CONNECT);
    raw lie = raw_hex("df ff ff ff ff");
    memcpy(lie.b + lie.n, ev.b + 1, ev.n - 1);
    lie.n += ev.n - 1;
    msg m = msg_bytes(lie.b, lie.n);
    decode_all_no_alloc(&m, PD_EBADMSGPACK, true, "lying top-level map");
    msg_free(&m);
    msg_free(&ev);
}

Test(codec_hostile, valid_decode_allocates_nothing) {
    count_allocations();
    msg m = event_msg(PD_EV_SYNC), g = get_n_users(1000);
    pd_event ev;
    pd_query q;
    pd_err err;
    pd_sync_iter it;
    pd_sync_conn c;
    mp_reader ui;
    pd_str u;
    cr_assert_eq(pd_event_decode(m.b, m.n, &ev, &err), PD_OK); /* warm-up */
    size_t live = pd_alloc_live_bytes(), heap = heap_used();
#ifdef TEST_ASAN
    size_t allocs = hook_allocs;
#endif
    cr_assert_eq(pd_event_decode(m.b, m.n, &ev, &err), PD_OK);
    pd_sync_iter_init(&it, &ev);
    while (pd_sync_iter_next(&it, &c)) continue;
    cr_assert_eq(pd_query_decode(PD_Q_GET, g.b, g.n, &q, &err), PD_OK);
    pd_query_users_iter(&q, &ui);
    uint32_t n = 0;
    while (pd_query_next_user(&ui, &u)) n++;
#ifdef TEST_ASAN
    cr_expect_eq(hook_allocs, allocs);
#endif
    cr_expect_eq(pd_alloc_live_bytes(), live);
    cr_expect_eq(heap_used(), heap);
    cr_expect_eq(n, 1000);
    msg_free(&m);
    msg_free(&g);
}

/* ---- random and mutated input ------------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rnd(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint32_t rnd_below(uint32_t n) { return (uint32_t)(rnd() % n); }

static uint64_t seed_from_env(void) {
    const char *s = getenv("PD_FUZZ_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 0) : 0x70726573656e6365ULL;
    fprintf(stderr, "codec fuzz seed: %#llx (set PD_FUZZ_SEED to replay)\n",
            (unsigned long long)seed);
    return seed;
}

static bool within(pd_str s, const msg *m) {
    return s.n == 0 || ((const uint8_t *)s.p >= m->b && (const uint8_t *)s.p + s.n <= m->b + m->n);
}

/* Everything a successful event decode promises to the model. */
static void check_event_ok(const pd_event *ev, const msg *m) {
    cr_assert_lt((unsigned)ev->type, PD_EV_COUNT);
    const pd_str *ids[] = {&ev->server, &ev->conn, &ev->user};
    for (int i = 0; i < 3; i++) {
        cr_assert(within(*ids[i], m));
        cr_assert(ids[i]->n == 0 || pd_id_valid(ids[i]->p, ids[i]->n));
    }
    switch (ev->type) {
    case PD_EV_CONNECT: cr_assert(ev->user.n && ev->device.n); /* fall through */
    case PD_EV_DISCONNECT: case PD_EV_ACTIVITY: case PD_EV_IDLE: cr_assert(ev->conn.n);
    /* fall through */
    case PD_EV_SYNC: case PD_EV_HEARTBEAT: case PD_EV_SHUTDOWN: cr_assert(ev->server.n); break;
    default: cr_assert(ev->user.n); break;
    }
    cr_assert(within(ev->device, m) && ev->device.n <= PD_DEVICE_MAX);
    cr_assert(pd_text_valid(ev->device.p, ev->device.n));
    cr_assert(within(ev->text, m) && ev->text.n <= PD_TEXT_MAX);
    cr_assert(pd_text_valid(ev->text.p, ev->text.n));
    cr_assert(within(ev->emoji, m) && ev->emoji.n <= PD_EMOJI_MAX);
    cr_assert(within(ev->meta, m) && ev->meta.n <= PD_META_MAX);
    cr_assert(ev->meta.n == 0 || ((uint8_t)ev->meta.p[0] & 0xf0) == 0x80 ||
              (uint8_t)ev->meta.p[0] == 0xde || (uint8_t)ev->meta.p[0] == 0xdf);
    cr_assert(ev->expires_at >= 0 && (!ev->has_ts || ev->ts >= 0) && (!ev->has_seq || ev->seq >= 0));
    if (ev->type == PD_EV_SYNC) {
        pd_sync_iter it;
        pd_sync_conn c;
        uint32_t n = 0;
        cr_assert(within(ev->conns, m));
        pd_sync_iter_init(&it, ev);
        while (pd_sync_iter_next(&it, &c)) {
            n++;
            cr_assert(pd_id_valid(c.conn.p, c.conn.n) && pd_id_valid(c.user.p, c.user.n));
            cr_assert(c.device.n > 0 && c.device.n <= PD_DEVICE_MAX);
        }
        cr_assert_eq(n, ev->nconns);
    }
}

static void check_err(pd_status s, const pd_err *err, bool event) {
    cr_assert(s > PD_OK && s <= PD_EBADVALUE, "status %d out of range", s);
    cr_assert(event || s != PD_EBADTYPE);
    cr_assert_eq(err->code, s);
    size_t len = strnlen(err->msg, sizeof err->msg);
    cr_assert(len > 0 && len < sizeof err->msg);
    cr_assert(pd_text_valid(err->msg, len), "message not printable UTF-8: %s", err->msg);
}

static void check_query_ok(const pd_query *q, const msg *m) {
    mp_reader it;
    pd_str u;
    uint32_t n = 0;
    pd_query_users_iter(q, &it);
    while (pd_query_next_user(&it, &u)) {
        cr_assert(within(u, m) && pd_id_valid(u.p, u.n));
        n++;
    }
    cr_assert_eq(n, q->nusers);
    cr_assert(n <= PD_QUERY_USERS_MAX);
    cr_assert(q->viewer.n == 0 || pd_id_valid(q->viewer.p, q->viewer.n));
    cr_assert(q->type != PD_Q_DEVICES || pd_id_valid(q->user.p, q->user.n));
    cr_assert(q->limit >= 1 && q->limit <= PD_QUERY_LIMIT_MAX);
    cr_assert(within(q->cursor, m) && q->cursor.n <= PD_CURSOR_MAX);
}

/* Feeds bytes to every decoder; returns the event decoder's status. */
static pd_status feed(const uint8_t *p, size_t n) {
    msg m = msg_bytes(p, n);
    pd_event ev;
    pd_query q;
    pd_view v;
    pd_reply rep;
    pd_err err = {PD_OK, ""};
    pd_status se = pd_event_decode(m.b, m.n, &ev, &err);
    if (se == PD_OK) check_event_ok(&ev, &m);
    else check_err(se, &err, true);
    for (int t = 0; t < PD_Q_COUNT; t++) {
        err = (pd_err){PD_OK, ""};
        pd_status s = pd_query_decode((pd_query_type)t, m.b, m.n, &q, &err);
        if (s == PD_OK) check_query_ok(&q, &m);
        else check_err(s, &err, false);
    }
    pd_status s = pd_notification_decode(m.b, m.n, &v, &err);
    cr_assert(s == PD_OK || s == PD_EBADVALUE);
    if (s == PD_OK) cr_assert(v.user.n > 0 && within(v.user, &m));
    s = pd_reply_decode(m.b, m.n, &rep);
    cr_assert(s == PD_OK || s == PD_EBADMSGPACK);
    cr_assert(strnlen(rep.code, sizeof rep.code) < sizeof rep.code);
    cr_assert(strnlen(rep.message, sizeof rep.message) < sizeof rep.message);
    msg_free(&m);
    return se;
}

/* Keys and values that make random input look like our messages often
 * enough to get past the map header into field validation. */
static const pd_str soup_keys[] = {
    S("\xa4type"), S("\xa6server"), S("\xa4" "conn"), S("\xa4user"), S("\xa6" "device"),
    S("\xa4meta"), S("\xa6status"), S("\xa4text"), S("\xa5" "emoji"), S("\xaa" "expires_at"),
    S("\xa5" "conns"), S("\xa2ts"), S("\xa3seq"), S("\xa5users"), S("\xa6viewer"),
    S("\xa6" "cursor"), S("\xa5limit"), S("\xa2ok"), S("\xa5" "error"), S("\xa7message"),
    S("\xa6" "devices"), S("\xa9last_seen"), S("\x01"),
};

static const pd_str soup_vals[] = {
    S("\xa7" "connect"), S("\xaa" "disconnect"), S("\xa4sync"), S("\xa6" "custom"),
    S("\xa6status"), S("\xa9heartbeat"), S("\xa4idle"), S("\xa4" "busy"), S("\xa6online"),
    S("\xa2u1"), S("\xa3srv"), S("\xa3" "a*b"), S("\xa0"), S("\xa3web"), S("\xa2\xc3\x28"),
    S("\x05"), S("\xff"), S("\xcd\x03\xe8"), S("\xcd\x03\xe9"), S("\xcf\x80\0\0\0\0\0\0\0"),
    S("\xc0"), S("\xc3"), S("\x80"), S("\x81\xa1k\x01"), S("\x91\xa2u1"), S("\x92\xa2u1\xa1*"),
    S("\x91\x83\xa4" "conn\xa1" "c\xa4user\xa1u\xa6" "device\xa3web"), S("\xdd\xff\xff\xff\xff"),
    S("\xd9\x21xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
    S("\xd9\x41xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
};

static void soup_put(uint8_t *buf, size_t *n, size_t cap, pd_str t) {
    if (*n + t.n <= cap) {
        memcpy(buf + *n, t.p, t.n);
        *n += t.n;
    }
}

static size_t token_soup(uint8_t *buf, size_t cap) {
    size_t n = 0;
    uint32_t pairs = rnd_below(9);
    buf[n++] = rnd_below(16) ? (uint8_t)(0x80 | pairs) : (uint8_t)rnd();
    for (uint32_t i = 0; i < pairs; i++) {
        if (rnd_below(10) == 0) buf[n++] = (uint8_t)rnd();
        else soup_put(buf, &n, cap, soup_keys[rnd_below(sizeof soup_keys / sizeof soup_keys[0])]);
        if (rnd_below(10) == 0 && n < cap) buf[n++] = (uint8_t)rnd();
        else soup_put(buf, &n, cap, soup_vals[rnd_below(sizeof soup_vals / sizeof soup_vals[0])]);
        if (n + 2 > cap) break;
    }
    if (rnd_below(16) == 0 && n < cap) buf[n++] = (uint8_t)rnd();
    return n;
}

Test(codec_fuzz, random_bytes_all_decoders) {
    rng_state = seed_from_env();
    uint8_t buf[512];
    unsigned ok = 0;
    for (int i = 0; i < 100000; i++) {
        size_t n = rnd_below(513);
        for (size_t j = 0; j < n; j++) buf[j] = (uint8_t)rnd();
        if (feed(buf, n) == PD_OK) ok++;
    }
    unsigned soup_hist[PD_STATUS_COUNT] = {0};
    for (int i = 0; i < 50000; i++) {
        size_t n = token_soup(buf, sizeof buf);
        soup_hist[feed(buf, n)]++;
    }
    fprintf(stderr, "random: %u decoded; token soup: ok %u msgpack %u type %u missing %u "
            "id %u large %u value %u\n", ok, soup_hist[PD_OK], soup_hist[PD_EBADMSGPACK],
            soup_hist[PD_EBADTYPE], soup_hist[PD_EMISSING], soup_hist[PD_EBADID],
            soup_hist[PD_ETOOLARGE], soup_hist[PD_EBADVALUE]);
    /* The soup reaches past the map header into field validation. */
    cr_expect_gt(soup_hist[PD_EMISSING], 0);
    cr_expect_gt(soup_hist[PD_EBADVALUE], 0);
    cr_expect_gt(soup_hist[PD_EBADID], 0);
    cr_expect_gt(soup_hist[PD_ETOOLARGE], 0);
}

/* Valid messages of every kind, mutated. */
static size_t mutate(uint8_t *b, size_t n, size_t cap, const msg *corpus, size_t ncorpus) {
    static const uint8_t interesting[] = {
        0x00, 0x7f, 0x80, 0x8f, 0x90, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xcc, 0xcf, 0xd0, 0xd3,
        0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff, '.', '*', '>',
    };
    int ops = 1 + (int)rnd_below(4);
    for (int k = 0; k < ops; k++) {
        size_t at = n ? rnd_below((uint32_t)n) : 0;
        switch (rnd_below(8)) {
        case 0: if (n) b[at] = (uint8_t)rnd(); break;
        case 1: if (n) b[at] ^= (uint8_t)(1u << rnd_below(8)); break;
        case 2: if (n) b[at] = interesting[rnd_below(sizeof interesting)]; break;
        case 3: n = n ? rnd_below((uint32_t)n) : 0; break;                       /* truncate */
        case 4:                                                                  /* insert */
            if (n < cap) {
                memmove(b + at + 1, b + at, n - at);
                b[at] = rnd_below(2) ? (uint8_t)rnd() : interesting[rnd_below(sizeof interesting)];
                n++;
            }
            break;
        case 5:                                                                  /* delete */
            if (n) { memmove(b + at, b + at + 1, n - at - 1); n--; }
            break;
        case 6: {                                                   /* splice from another */
            const msg *o = &corpus[rnd_below((uint32_t)ncorpus)];
            size_t from = rnd_below((uint32_t)o->n), len = 1 + rnd_below(16);
            if (from + len > o->n) len = o->n - from;
            if (at + len > cap) len = cap - at;
            memcpy(b + at, o->b + from, len);
            if (at + len > n) n = at + len;
            break;
        }
        default:                                                     /* bump a length byte */
            if (n) b[at] = (uint8_t)(b[at] + (rnd_below(2) ? 1 : -1));
            break;
        }
    }
    return n;
}

Test(codec_fuzz, mutated_valid_messages) {
    rng_state = seed_from_env() ^ 0x6d7574617465ULL;
    raw meta = raw_hex("82 a3 61 70 70 a3 69 6f 73 a1 76 92 01 c3");
    msg corpus[PD_EV_COUNT + 9];
    size_t nc = 0;
    for (int t = 0; t < PD_EV_COUNT; t++) {
        pd_event ev = base_event((pd_event_type)t);
        ev.has_ts = ev.has_seq = true;
        ev.ts = 1700000000000LL;
        ev.seq = 7;
        ev.meta = (pd_str){(const char *)meta.b, (uint32_t)meta.n};
        ev.emoji = pd_str_c("\xf0\x9f\x8c\xb4");
        ev.expires_at = 1893456000000LL;
        corpus[nc++] = encode_event(&ev);
    }
    corpus[nc++] = get_msg();
    pd_query oq = {.type = PD_Q_ONLINE, .cursor = S("12"), .limit = 5};
    corpus[nc++] = query_msg(&oq, NULL, 0);
    corpus[nc++] = msg_hex("81 a4 75 73 65 72 a5 61 6c 69 63 65");
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_view v = {.user = S("alice"), .status = PD_PUB_AWAY, .text = S("x"), .emoji = S(""),
                 .last_seen = 1, .ts = 2};
    pd_notification_encode(&sb, &v);
    corpus[nc++] = msg_sb(&sb);
    msgpack_sbuffer_clear(&sb);
    pd_reply_error_encode(&sb, PD_EBADID, "field 'user' is not a valid id");
    corpus[nc++] = msg_sb(&sb);
    msgpack_sbuffer_destroy(&sb);
    corpus[nc++] = sync_with_entry("83 a4 63 6f 6e 6e a1 63 a4 75 73 65 72 a1 75"
                                   " a6 64 65 76 69 63 65 a3 77 65 62");
    /* Fields exactly at their limits: one bumped length byte crosses them. */
    raw text = raw_rep('t', PD_TEXT_MAX), emoji = raw_rep('e', PD_EMOJI_MAX);
    raw dev = raw_rep('d', PD_DEVICE_MAX), big = meta_of_size(PD_META_MAX);
    corpus[nc++] = map_set(map_set(event_msg(PD_EV_CUSTOM), "text", &text), "emoji", &emoji);
    corpus[nc++] = map_set(map_set(event_msg(PD_EV_CONNECT), "device", &dev), "meta", &big);
    oq.limit = PD_QUERY_LIMIT_MAX;
    corpus[nc++] = query_msg(&oq, NULL, 0);

    unsigned hist[PD_STATUS_COUNT] = {0};
    uint8_t buf[2048];
    for (int i = 0; i < 120000; i++) {
        const msg *src = &corpus[rnd_below((uint32_t)nc)];
        memcpy(buf, src->b, src->n);
        size_t n = mutate(buf, src->n, sizeof buf, corpus, nc);
        hist[feed(buf, n)]++;
    }
    fprintf(stderr, "mutations: ok %u msgpack %u type %u missing %u id %u large %u value %u\n",
            hist[PD_OK], hist[PD_EBADMSGPACK], hist[PD_EBADTYPE], hist[PD_EMISSING],
            hist[PD_EBADID], hist[PD_ETOOLARGE], hist[PD_EBADVALUE]);
    /* Mutations reach every layer of the event decoder, not just the header. */
    cr_expect_gt(hist[PD_OK], 0);
    cr_expect_gt(hist[PD_EBADMSGPACK], 0);
    cr_expect_gt(hist[PD_EBADTYPE], 0);
    cr_expect_gt(hist[PD_EMISSING], 0);
    cr_expect_gt(hist[PD_EBADID], 0);
    cr_expect_gt(hist[PD_EBADVALUE], 0);
    cr_expect_gt(hist[PD_ETOOLARGE], 0);
    for (size_t i = 0; i < nc; i++) msg_free(&corpus[i]);
}

/* test_codec_repl.c - the messages between nodes (codec_repl.h): deltas,
 * heartbeats, sync requests and sync parts.
 *
 * Design: every op kind and every message goes through its encoder and
 * back through its decoder, and the fields must come back equal. Then
 * malformed messages are built by hand (or by editing a valid one with
 * map_set from codec_fixtures.h) and each must be refused with the status
 * the codec promises: a bad id in an op, a wrong arity, an unknown op kind,
 * a missing or wrong `v`, a vector clock too long, huge declared lengths,
 * truncation at every byte. Messages live in heap blocks of exactly their
 * size, so under ASan any read past the end is caught. */
#include "codec_fixtures.h"
#include "wire/codec_repl.h"
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------------ */

static bool str_is(pd_str s, const char *c) { return pd_str_eqc(s, c); }

static pd_str str_or_empty(pd_str s) { return s.p ? s : (pd_str){"", 0}; }

static void expect_str(pd_str got, pd_str want, const char *what) {
    got = str_or_empty(got);
    want = str_or_empty(want);
    cr_expect(pd_str_eq(got, want), "%s: got '%.*s', want '%.*s'", what, (int)got.n, got.p,
              (int)want.n, want.p);
}

/* Every field the op kind carries, compared. */
static void expect_same_op(const pd_op *got, const pd_op *want) {
    cr_assert_eq(got->kind, want->kind);
    switch (want->kind) {
    case PD_OP_ADD:
        expect_str(got->meta, want->meta, "meta");
        expect_str(got->user, want->user, "user");
        expect_str(got->label, want->label, "label");
        cr_expect_eq(got->connected_at, want->connected_at);
        /* fall through: ADD also has everything STATE has */
    case PD_OP_STATE:
        cr_expect_eq(got->state, want->state);
        cr_expect_eq(got->last_active, want->last_active);
        /* fall through */
    case PD_OP_REMOVE:
        if (want->kind == PD_OP_REMOVE) cr_expect_eq(got->at, want->at);
        if (want->kind == PD_OP_REMOVE) expect_str(got->user, want->user, "user");
        if (want->kind != PD_OP_ADD) cr_expect_eq(got->ver, want->ver);
        expect_str(got->server, want->server, "server");
        expect_str(got->conn, want->conn, "conn");
        cr_expect_eq(got->hlc, want->hlc);
        break;
    case PD_OP_CUSTOM:
        expect_str(got->text, want->text, "text");
        expect_str(got->emoji, want->emoji, "emoji");
        cr_expect_eq(got->expires_at, want->expires_at);
        /* fall through */
    case PD_OP_SEEN:
    case PD_OP_VER:
    case PD_OP_CHOSEN:
        if (want->kind == PD_OP_CHOSEN) cr_expect_eq(got->chosen, want->chosen);
        if (want->kind != PD_OP_CUSTOM) cr_expect_eq(got->at, want->at);
        expect_str(got->user, want->user, "user");
        expect_str(got->writer, want->writer, "writer");
        cr_expect_eq(got->hlc, want->hlc);
        break;
    case PD_OP_SYNCED:
        expect_str(got->server, want->server, "server");
        expect_str(got->writer, want->writer, "writer");
        cr_expect_eq(got->hlc, want->hlc);
        break;
    }
}

/* One op of each kind, with values at the edges of their ranges. */
static const pd_op OPS[] = {
    {.kind = PD_OP_ADD, .server = S("srv-1"), .conn = S("c-1"), .user = S("alice@x.org"),
     .label = S("desktop"), .state = PD_DEV_IDLE, .connected_at = 1700000000000,
     .last_active = 1700000000123, .hlc = UINT64_C(1700000000123) << 16 | 7},
    {.kind = PD_OP_ADD, .server = S("s"), .conn = S("c"), .user = S("u"), .label = S("\xc3\xa9t\xc3\xa9"),
     .state = PD_DEV_ACTIVE, .connected_at = -5, .last_active = 0, .hlc = 0},
    {.kind = PD_OP_REMOVE, .server = S("srv-1"), .conn = S("c-1"), .hlc = UINT64_MAX >> 1},
    {.kind = PD_OP_REMOVE, .server = S("srv-1"), .conn = S("c-1"), .hlc = 5, .at = 1700000000999},
    {.kind = PD_OP_REMOVE, .server = S("srv-1"), .conn = S("c-1"), .hlc = 5, .at = 1700000000999,
     .ver = UINT64_C(1700000000999) << 16 | 2},
    {.kind = PD_OP_REMOVE, .server = S("srv-1"), .conn = S("c-1"), .hlc = 5, .ver = 6},
    {.kind = PD_OP_REMOVE, .server = S("srv-1"), .conn = S("c-1"), .hlc = 5, .at = 1700000000999,
     .ver = 7, .user = S("alice@x.org")},
    {.kind = PD_OP_STATE, .server = S("srv-2"), .conn = S("c:2"), .hlc = 44,
     .state = PD_DEV_IDLE, .last_active = 9, .ver = 45},
    {.kind = PD_OP_ADD, .server = S("s"), .conn = S("c"), .user = S("u"), .label = S("web"),
     .state = PD_DEV_ACTIVE, .connected_at = 1, .last_active = 2, .hlc = 3,
     .meta = {"\x81\xa3" "app\xa3" "web", 9}},
    {.kind = PD_OP_CHOSEN, .user = S("bob"), .chosen = PD_CHOSEN_INVISIBLE, .hlc = 3,
     .writer = S("node-b"), .at = 1700000000000},
    {.kind = PD_OP_SEEN, .user = S("dave"), .at = 1700000000001, .hlc = 11, .writer = S("node-a")},
    {.kind = PD_OP_VER, .user = S("dave"), .hlc = UINT64_C(1700000000002) << 16 | 5,
     .writer = S("node-b")},
    {.kind = PD_OP_STATE, .server = S("srv-2"), .conn = S("c:2"), .hlc = 42,
     .state = PD_DEV_ACTIVE, .last_active = INT64_MAX},
    {.kind = PD_OP_STATE, .server = S("srv-2"), .conn = S("c:2"), .hlc = 43,
     .state = PD_DEV_IDLE, .last_active = INT64_MIN},
    {.kind = PD_OP_SYNCED, .server = S("srv-3"), .hlc = UINT64_C(1700000000999) << 16,
     .writer = S("node-b")},
    {.kind = PD_OP_CHOSEN, .user = S("bob"), .chosen = PD_CHOSEN_AUTO, .hlc = 1,
     .writer = S("node-a")},
    {.kind = PD_OP_CHOSEN, .user = S("bob"), .chosen = PD_CHOSEN_INVISIBLE, .hlc = 2,
     .writer = S("node-b")},
    {.kind = PD_OP_CUSTOM, .user = S("carol"), .text = S("in a meeting"), .emoji = S("\xf0\x9f\x93\x85"),
     .expires_at = 1700000060000, .hlc = 9, .writer = S("node-c")},
    {.kind = PD_OP_CUSTOM, .user = S("carol"), .text = S(""), .emoji = S(""), .expires_at = 0,
     .hlc = 10, .writer = S("node-c")},
};
#define NOPS (sizeof OPS / sizeof OPS[0])

/* Encodes ops back to back, as the replica batches them. */
static void pack_ops(msgpack_sbuffer *sb, const pd_op *ops, uint32_t n) {
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    for (uint32_t i = 0; i < n; i++) pd_op_encode(&pk, &ops[i]);
}

static msg delta_msg(pd_str node, uint64_t inc, uint64_t seq, const pd_op *ops, uint32_t n) {
    msgpack_sbuffer o, sb;
    pack_ops(&o, ops, n);
    msgpack_sbuffer_init(&sb);
    pd_delta_encode(&sb, node, inc, seq, o.data, o.size, n);
    msg m = msg_sb(&sb);
    msgpack_sbuffer_destroy(&o);
    msgpack_sbuffer_destroy(&sb);
    return m;
}

/* A delta whose ops are the given raw bytes (nops of them, maybe malformed). */
static msg delta_raw_ops(const raw *ops, uint32_t nops) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_delta_encode(&sb, pd_str_c("node-a"), 1, 1, ops->b, ops->n, nops);
    msg m = msg_sb(&sb);
    msgpack_sbuffer_destroy(&sb);
    return m;
}

static void expect_ops(const pd_ops *got, const pd_op *want, uint32_t n) {
    pd_ops_iter it;
    pd_op op;
    uint32_t i = 0;
    uint64_t hlc_max = 0;
    cr_assert_eq(got->n, n);
    for (uint32_t k = 0; k < n; k++)
        if (want[k].hlc > hlc_max) hlc_max = want[k].hlc;
    /* repl__ops_ahead trusts it instead of reading the ops again. */
    cr_expect_eq(got->hlc_max, hlc_max, "hlc_max %llu, the ops' largest %llu",
                 (unsigned long long)got->hlc_max, (unsigned long long)hlc_max);
    pd_ops_iter_init(&it, got);
    while (pd_ops_next(&it, &op)) {
        cr_assert_lt(i, n, "more ops than encoded");
        expect_same_op(&op, &want[i++]);
    }
    cr_expect_eq(i, n, "the iterator returned %u of %u ops", i, n);
}

static pd_heartbeat *hb_new(uint32_t nvc) {
    pd_heartbeat *hb = calloc(1, sizeof *hb);
    static char names[PD_VC_MAX][16];
    cr_assert_not_null(hb);
    hb->node = pd_str_c("node-a");
    hb->inc = 1700000000000;
    hb->seq = 12;
    hb->hlc = UINT64_C(1700000000500) << 16;
    hb->devices = 3;
    hb->users = 2;
    for (uint32_t i = 0; i < nvc; i++) {
        snprintf(names[i], sizeof names[i], "node-%u", i);
        hb->vc[i] = (pd_vc_entry){pd_str_c(names[i]), 1000 + i, i * 3u};
    }
    hb->nvc = nvc;
    return hb;
}

static msg hb_msg(const pd_heartbeat *hb) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_heartbeat_encode(&sb, hb);
    msg m = msg_sb(&sb);
    msgpack_sbuffer_destroy(&sb);
    return m;
}

static msg req_msg(const char *node, const char *origin, uint64_t req) {
    msgpack_sbuffer sb;
    pd_sync_req q = {pd_str_c(node), pd_str_c(origin), req};
    msgpack_sbuffer_init(&sb);
    pd_sync_req_encode(&sb, &q);
    msg m = msg_sb(&sb);
    msgpack_sbuffer_destroy(&sb);
    return m;
}

static msg part_msg(const pd_sync_part *p, const pd_op *ops, uint32_t n) {
    msgpack_sbuffer o, sb;
    pack_ops(&o, ops, n);
    msgpack_sbuffer_init(&sb);
    pd_sync_part_encode(&sb, p, o.data, o.size, n);
    msg m = msg_sb(&sb);
    msgpack_sbuffer_destroy(&o);
    msgpack_sbuffer_destroy(&sb);
    return m;
}

typedef enum { K_DELTA, K_HB, K_REQ, K_PART } kind;

/* Decodes m as kind k; returns the status, err filled. */
static pd_status decode_as(kind k, const msg *m, pd_err *err) {
    static pd_heartbeat hb;
    pd_delta d;
    pd_sync_req q;
    pd_sync_part p;
    switch (k) {
    case K_DELTA: return pd_delta_decode(m->b, m->n, &d, err);
    case K_HB: return pd_heartbeat_decode(m->b, m->n, &hb, err);
    case K_REQ: return pd_sync_req_decode(m->b, m->n, &q, err);
    default: return pd_sync_part_decode(m->b, m->n, &p, err);
    }
}

/* Checks m is refused as kind k with status want; frees m. */
static void expect_refused(kind k, msg m, pd_status want, const char *what) {
    pd_err err = {PD_OK, ""};
    pd_status s = decode_as(k, &m, &err);
    cr_expect_eq(s, want, "%s: got %s (%s), want %s", what, pd_status_str(s), err.msg,
                 pd_status_str(want));
    cr_expect_eq(err.code, s, "%s: err carries the status", what);
    cr_expect_neq(err.msg[0], '\0', "%s: err says why", what);
    msg_free(&m);
}

/* A delta with one op given as raw bytes, refused with want. */
static void expect_bad_op(const char *hex, pd_status want, const char *what) {
    raw op = raw_hex(hex);
    expect_refused(K_DELTA, delta_raw_ops(&op, 1), want, what);
}

/* One op packed by hand from a format: 'i' int64, 'u' uint64, 's' string. */
static raw op_raw(const char *fmt, ...) {
    raw r;
    va_list ap;
    msgpack_packer pk = raw_packer(&r);
    msgpack_pack_array(&pk, (size_t)strlen(fmt));
    va_start(ap, fmt);
    for (const char *f = fmt; *f; f++) {
        if (*f == 'i') msgpack_pack_int64(&pk, va_arg(ap, int64_t));
        else if (*f == 'u') msgpack_pack_uint64(&pk, va_arg(ap, uint64_t));
        else pd_pack_cstr(&pk, va_arg(ap, const char *));
    }
    va_end(ap);
    return r;
}

static void expect_bad_op_raw(raw op, pd_status want, const char *what) {
    expect_refused(K_DELTA, delta_raw_ops(&op, 1), want, what);
}

/* ---- round trips ----------------------------------------------------------------------------- */

Test(codec_repl, delta_roundtrip_every_op_kind) {
    msg m = delta_msg(pd_str_c("node-a"), 1700000000000, 77, OPS, NOPS);
    pd_delta d;
    pd_err err = {PD_OK, ""};
    cr_assert_eq(pd_delta_decode(m.b, m.n, &d, &err), PD_OK, "%s", err.msg);
    cr_expect(str_is(d.node, "node-a"));
    cr_expect_eq(d.inc, 1700000000000u);
    cr_expect_eq(d.seq, 77u);
    expect_ops(&d.ops, OPS, NOPS);
    msg_free(&m);
}

/* A delta of node "n", incarnation inc, seq 1, no ops, as a map with
 * `extra` more fields for the caller to write. */
static void pack_empty_delta(msgpack_packer *pk, uint64_t inc, uint32_t extra) {
    msgpack_pack_map(pk, 5 + extra);
    pd_pack_cstr(pk, "v"), msgpack_pack_uint64(pk, 1);
    pd_pack_cstr(pk, "node"), pd_pack_cstr(pk, "n");
    pd_pack_cstr(pk, "inc"), msgpack_pack_uint64(pk, inc);
    pd_pack_cstr(pk, "seq"), msgpack_pack_uint64(pk, 1);
    pd_pack_cstr(pk, "ops"), msgpack_pack_array(pk, 0);
}

Test(codec_repl, delta_at_roundtrip_and_absent_is_zero) {
    msgpack_sbuffer o, sb;
    pack_ops(&o, OPS, NOPS);
    msgpack_sbuffer_init(&sb);
    uint64_t trace[] = {5};
    pd_delta_encode_at(&sb, pd_str_c("node-a"), 1, 2, o.data, o.size, NOPS, trace, 1,
                       1700000360004u);
    pd_delta d;
    pd_err err = {PD_OK, ""};
    cr_assert_eq(pd_delta_decode(sb.data, sb.size, &d, &err), PD_OK, "%s", err.msg);
    cr_expect_eq(d.at, 1700000360004u);
    cr_expect_eq(d.ntrace, 1u);
    expect_ops(&d.ops, OPS, NOPS);
    msgpack_sbuffer_clear(&sb);
    pd_delta_encode_at(&sb, pd_str_c("node-a"), 1, 2, o.data, o.size, NOPS, NULL, 0, 0);
    cr_assert_eq(pd_delta_decode(sb.data, sb.size, &d, &err), PD_OK, "%s", err.msg);
    cr_expect_eq(d.at, 0u);
    /* "at" must be a u64 like every other number here. */
    msgpack_sbuffer_clear(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pack_empty_delta(&pk, 1, 1);
    pd_pack_cstr(&pk, "at"), pd_pack_cstr(&pk, "soon");
    cr_expect_neq(pd_delta_decode(sb.data, sb.size, &d, &err), PD_OK);
    msgpack_sbuffer_destroy(&o);
    msgpack_sbuffer_destroy(&sb);
}

Test(codec_repl, delta_each_op_alone_and_empty) {
    for (uint32_t i = 0; i <= NOPS; i++) {
        uint32_t n = i < NOPS ? 1 : 0;
        msg m = delta_msg(pd_str_c("n"), 1, i + 1, n ? &OPS[i] : NULL, n);
        pd_delta d;
        pd_err err = {PD_OK, ""};
        cr_assert_eq(pd_delta_decode(m.b, m.n, &d, &err), PD_OK, "op %u: %s", i, err.msg);
        cr_expect_eq(d.seq, i + 1u);
        expect_ops(&d.ops, n ? &OPS[i] : NULL, n);
        msg_free(&m);
    }
}

Test(codec_repl, delta_many_ops) {
    enum { N = 500 };
    pd_op *ops = calloc(N, sizeof *ops);
    char (*conn)[16] = calloc(N, 16);
    cr_assert(ops && conn);
    for (uint32_t i = 0; i < N; i++) {
        snprintf(conn[i], 16, "c%u", i);
        ops[i] = OPS[i % NOPS];
        if (ops[i].kind <= PD_OP_STATE) ops[i].conn = pd_str_c(conn[i]);
        ops[i].hlc = i;
    }
    msg m = delta_msg(pd_str_c("node-a"), 2, 3, ops, N);
    pd_delta d;
    pd_err err = {PD_OK, ""};
    cr_assert_eq(pd_delta_decode(m.b, m.n, &d, &err), PD_OK, "%s", err.msg);
    expect_ops(&d.ops, ops, N);
    msg_free(&m);
    free(ops);
    free(conn);
}

/* A restart's fields (schemas/cluster.md "Incarnations"): "carries" and
 * "restored" on deltas come back as written, and are absent (0, false)
 * when not written; "restored" needs its three numbers. */
Test(codec_repl, delta_carries_and_restored_roundtrip) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_restored rs = {.inc = 1700000000000u, .devices = 1000000, .digest = INT64_MAX};
    pd_delta_carry c = {1700000000000u, &rs};
    pd_delta_encode_carry(&sb, pd_str_c("node-a"), 1700000009000u, 7, NULL, 0, 0, NULL, 0, 5, &c);
    pd_delta d;
    pd_err err = {PD_OK, ""};
    cr_assert_eq(pd_delta_decode(sb.data, sb.size, &d, &err), PD_OK, "%s", err.msg);
    cr_expect_eq(d.carries, 1700000000000u);
    cr_expect(d.has_restored);
    cr_expect_eq(d.restored.inc, 1700000000000u);
    cr_expect_eq(d.restored.devices, 1000000u);
    cr_expect_eq(d.restored.digest, (uint64_t)INT64_MAX);
    cr_expect_eq(d.ops.n, 0u);
    msgpack_sbuffer_clear(&sb);
    c.restored = NULL;
    pd_delta_encode_carry(&sb, pd_str_c("node-a"), 2, 1, NULL, 0, 0, NULL, 0, 0, &c);
    cr_assert_eq(pd_delta_decode(sb.data, sb.size, &d, &err), PD_OK, "%s", err.msg);
    cr_expect_eq(d.carries, 1700000000000u);
    cr_expect(!d.has_restored);
    msgpack_sbuffer_clear(&sb);
    pd_delta_encode_carry(&sb, pd_str_c("node-a"), 2, 1, NULL, 0, 0, NULL, 0, 0, NULL);
    cr_assert_eq(pd_delta_decode(sb.data, sb.size, &d, &err), PD_OK, "%s", err.msg);
    cr_expect_eq(d.carries, 0u);
    cr_expect(!d.has_restored);
    /* Bad "restored": not a map, a number missing, inc 0, a digest over
     * INT64_MAX: each refuses the delta. */
    for (int bad = 0; bad < 4; bad++) {
        msgpack_sbuffer_clear(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        pack_empty_delta(&pk, 2, 1);
        pd_pack_cstr(&pk, "restored");
        if (bad == 0) {
            msgpack_pack_array(&pk, 0);
        } else {
            msgpack_pack_map(&pk, bad == 1 ? 2 : 3);
            pd_pack_cstr(&pk, "inc"), msgpack_pack_uint64(&pk, bad == 2 ? 0 : 1);
            pd_pack_cstr(&pk, "devices"), msgpack_pack_uint64(&pk, 3);
            if (bad != 1) pd_pack_cstr(&pk, "digest"), msgpack_pack_uint64(&pk, bad == 3 ? UINT64_MAX : 9);
        }
        cr_expect_neq(pd_delta_decode(sb.data, sb.size, &d, &err), PD_OK, "bad restored %d", bad);
    }
    msgpack_sbuffer_destroy(&sb);
}

/* A heartbeat's "carries" and "kept" come back as written; absent, none. */
Test(codec_repl, heartbeat_carries_and_kept_roundtrip) {
    pd_heartbeat *want = hb_new(2), *got = calloc(1, sizeof *got);
    want->carries = 1700000000000u;
    want->nkept = 2;
    want->kept[0] = (pd_vc_entry){pd_str_c("n1"), 1700000000001u, 12};
    want->kept[1] = (pd_vc_entry){pd_str_c("n2"), 1700000000002u, 0};
    msg m = hb_msg(want);
    pd_err err = {PD_OK, ""};
    cr_assert_eq(pd_heartbeat_decode(m.b, m.n, got, &err), PD_OK, "%s", err.msg);
    cr_expect_eq(got->carries, 1700000000000u);
    cr_assert_eq(got->nkept, 2u);
    for (uint32_t i = 0; i < 2; i++) {
        expect_str(got->kept[i].node, want->kept[i].node, "kept node");
        cr_expect_eq(got->kept[i].inc, want->kept[i].inc);
        cr_expect_eq(got->kept[i].seq, want->kept[i].seq);
    }
    msg_free(&m);
    want->carries = 0;
    want->nkept = 0;
    m = hb_msg(want);
    cr_assert_eq(pd_heartbeat_decode(m.b, m.n, got, &err), PD_OK, "%s", err.msg);
    cr_expect_eq(got->carries, 0u);
    cr_expect_eq(got->nkept, 0u);
    msg_free(&m);
    free(want);
    free(got);
}

Test(codec_repl, heartbeat_roundtrip_with_vc) {
    uint32_t sizes[] = {0, 1, 3, PD_VC_MAX};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        for (int leaving = 0; leaving <= 1; leaving++) {
            pd_heartbeat *want = hb_new(sizes[k]), *got = calloc(1, sizeof *got);
            want->leaving = leaving;
            want->ready = (k + (uint32_t)leaving) % 2 == 0;
            msg m = hb_msg(want);
            pd_err err = {PD_OK, ""};
            cr_assert_eq(pd_heartbeat_decode(m.b, m.n, got, &err), PD_OK, "%s", err.msg);
            cr_expect(pd_str_eq(got->node, want->node));
            cr_expect_eq(got->inc, want->inc);
            cr_expect_eq(got->seq, want->seq);
            cr_expect_eq(got->hlc, want->hlc);
            cr_expect_eq(got->leaving, want->leaving);
            cr_expect_eq(got->ready, want->ready);
            cr_expect_eq(got->devices, want->devices);
            cr_expect_eq(got->users, want->users);
            cr_assert_eq(got->nvc, want->nvc);
            for (uint32_t i = 0; i < got->nvc; i++) {
                expect_str(got->vc[i].node, want->vc[i].node, "vc node");
                cr_expect_eq(got->vc[i].inc, want->vc[i].inc);
                cr_expect_eq(got->vc[i].seq, want->vc[i].seq);
            }
            msg_free(&m);
            free(want);
            free(got);
        }
    }
}

Test(codec_repl, sync_request_roundtrip) {
    uint64_t reqs[] = {0, 1, UINT64_MAX >> 1};
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        msg m = req_msg("node-b", "node-a", reqs[i]);
        pd_sync_req q;
        pd_err err = {PD_OK, ""};
        cr_assert_eq(pd_sync_req_decode(m.b, m.n, &q, &err), PD_OK, "%s", err.msg);
        cr_expect(str_is(q.node, "node-b"));
        cr_expect(str_is(q.origin, "node-a"));
        cr_expect_eq(q.req, reqs[i]);
        msg_free(&m);
    }
}

/* A node from before `ready` says nothing: it is taken as announcing. */
Test(codec_repl, heartbeat_without_ready_reads_as_ready) {
    pd_heartbeat *want = hb_new(2), *got = calloc(1, sizeof *got);
    want->ready = false;
    msg m = map_set(hb_msg(want), "ready", NULL);
    pd_err err = {PD_OK, ""};
    cr_assert_eq(pd_heartbeat_decode(m.b, m.n, got, &err), PD_OK, "%s", err.msg);
    cr_expect(got->ready);
    msg_free(&m);
    free(want);
    free(got);
}

/* The dashboard's counters: round-trip when set, absent (and read as 0)
 * when 0, so a heartbeat without them is byte for byte the older one. */
Test(codec_repl, heartbeat_dashboard_counters) {
    pd_heartbeat *want = hb_new(2), *got = calloc(1, sizeof *got);
    pd_err err = {PD_OK, ""};
    msg plain = hb_msg(want);
    want->events = 12345;
    want->notifications = 77;
    want->snapshot_at = 1700000000123;
    msg m = hb_msg(want);
    cr_assert_eq(pd_heartbeat_decode(m.b, m.n, got, &err), PD_OK, "%s", err.msg);
    cr_expect_eq(got->events, 12345);
    cr_expect_eq(got->notifications, 77);
    cr_expect_eq(got->snapshot_at, 1700000000123);
    cr_expect_eq(got->devices, want->devices);
    cr_assert_eq(got->nvc, 2);
    cr_assert_eq(pd_heartbeat_decode(plain.b, plain.n, got, &err), PD_OK, "%s", err.msg);
    cr_expect_eq(got->events, 0);
    cr_expect_eq(got->notifications, 0);
    cr_expect_eq(got->snapshot_at, 0);
    want->events = want->notifications = want->snapshot_at = 0;
    msg again = hb_msg(want);
    cr_expect_eq(again.n, plain.n, "zero counters add no keys");
    cr_expect(memcmp(again.b, plain.b, plain.n) == 0);
    msg_free(&m);
    msg_free(&plain);
    msg_free(&again);
    free(want);
    free(got);
}

/* The socket servers of a heartbeat: round-trip, and too many refused. */
Test(codec_repl, heartbeat_servers) {
    pd_heartbeat *want = hb_new(1), *got = calloc(1, sizeof *got);
    pd_err err = {PD_OK, ""};
    want->nservers = 2;
    want->servers[0] = (pd_server_view){pd_str_c("ws-1"), 3, 1700000000000, true};
    want->servers[1] = (pd_server_view){pd_str_c("ws-2"), 0, 1700000000500, false};
    msg m = hb_msg(want);
    cr_assert_eq(pd_heartbeat_decode(m.b, m.n, got, &err), PD_OK, "%s", err.msg);
    cr_assert_eq(got->nservers, 2);
    for (uint32_t i = 0; i < 2; i++) {
        expect_str(got->servers[i].id, want->servers[i].id, "server id");
        cr_expect_eq(got->servers[i].devices, want->servers[i].devices);
        cr_expect_eq(got->servers[i].last_msg, want->servers[i].last_msg);
        cr_expect_eq(got->servers[i].watched, want->servers[i].watched);
    }
    msg_free(&m);
    /* 65 entries, one too many; an entry of 3 elements; a bad server id */
    raw big;
    msgpack_packer pk = raw_packer(&big);
    msgpack_pack_array(&pk, PD_HB_SERVERS_MAX + 1);
    for (int i = 0; i <= PD_HB_SERVERS_MAX; i++) {
        msgpack_pack_array(&pk, 4);
        msgpack_pack_str_with_body(&pk, "ws", 2);
        msgpack_pack_uint32(&pk, 1);
        msgpack_pack_int64(&pk, 1);
        msgpack_pack_false(&pk);
    }
    m = map_set(hb_msg(want), "servers", &big);
    cr_expect_eq(pd_heartbeat_decode(m.b, m.n, got, &err), PD_ETOOLARGE, "%s", err.msg);
    msg_free(&m);
    raw three = raw_hex("91 93 a2 77 73 01 01");
    m = map_set(hb_msg(want), "servers", &three);
    cr_expect_eq(pd_heartbeat_decode(m.b, m.n, got, &err), PD_EBADVALUE, "%s", err.msg);
    msg_free(&m);
    raw badid = raw_hex("91 94 a3 61 2e 2e 01 01 c2");
    m = map_set(hb_msg(want), "servers", &badid);
    cr_expect_eq(pd_heartbeat_decode(m.b, m.n, got, &err), PD_EBADID, "%s", err.msg);
    msg_free(&m);
    m = map_set(hb_msg(want), "servers", NULL);
    cr_expect_eq(pd_heartbeat_decode(m.b, m.n, got, &err), PD_OK);
    cr_expect_eq(got->nservers, 0, "absent: none");
    msg_free(&m);
    free(want);
    free(got);
}

/* A node from before `req` sends none and echoes none: read as 0. */
Test(codec_repl, sync_messages_without_req_are_read_as_zero) {
    static const pd_sync_part sp = {.origin = S("node-a"), .known = true, .last = true,
                                    .inc = 1, .seq = 2, .req = 9};
    msgpack_sbuffer o, sb;
    pack_ops(&o, OPS, 1);
    msgpack_sbuffer_init(&sb);
    pd_sync_part_encode(&sb, &sp, o.data, o.size, 1);
    msg part = map_set(msg_sb(&sb), "req", NULL);
    msg req = map_set(req_msg("node-b", "node-a", 7), "req", NULL);
    pd_sync_part p;
    pd_sync_req q;
    pd_err err = {PD_OK, ""};
    cr_assert_eq(pd_sync_part_decode(part.b, part.n, &p, &err), PD_OK, "%s", err.msg);
    cr_expect_eq(p.req, 0u);
    cr_assert_eq(pd_sync_req_decode(req.b, req.n, &q, &err), PD_OK, "%s", err.msg);
    cr_expect_eq(q.req, 0u);
    raw neg = raw_hex("ff");
    expect_refused(K_REQ, map_set(req, "req", &neg), PD_EBADVALUE, "req -1");
    expect_refused(K_PART, map_set(part, "req", &neg), PD_EBADVALUE, "part req -1");
    msgpack_sbuffer_destroy(&o);
    msgpack_sbuffer_destroy(&sb);
}

Test(codec_repl, sync_part_roundtrip) {
    pd_sync_part want[] = {
        {.origin = S("node-a"), .known = true, .last = false, .inc = 5, .seq = 9, .part = 0,
         .req = 1},
        {.origin = S("node-a"), .known = true, .last = true, .inc = 5, .seq = 9, .part = 7,
         .req = UINT64_MAX >> 1},
        {.origin = S("node-z"), .known = false, .last = true, .inc = 0, .seq = 0,
         .part = UINT32_MAX, .req = 0},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        uint32_t n = want[i].known ? NOPS : 0;
        msg m = part_msg(&want[i], OPS, n);
        pd_sync_part got;
        pd_err err = {PD_OK, ""};
        cr_assert_eq(pd_sync_part_decode(m.b, m.n, &got, &err), PD_OK, "%s", err.msg);
        cr_expect(pd_str_eq(got.origin, want[i].origin));
        cr_expect_eq(got.known, want[i].known);
        cr_expect_eq(got.last, want[i].last);
        cr_expect_eq(got.inc, want[i].inc);
        cr_expect_eq(got.seq, want[i].seq);
        cr_expect_eq(got.part, want[i].part);
        cr_expect_eq(got.req, want[i].req);
        expect_ops(&got.ops, OPS, n);
        msg_free(&m);
    }
}

Test(codec_repl, unknown_keys_are_skipped) {
    raw extra = raw_hex("82 a1 78 01 a1 79 93 01 02 03"); /* {"x":1,"y":[1,2,3]} */
    msg m = map_set(delta_msg(pd_str_c("n"), 1, 1, OPS, 2), "future", &extra);
    pd_delta d;
    pd_err err = {PD_OK, ""};
    cr_assert_eq(pd_delta_decode(m.b, m.n, &d, &err), PD_OK, "%s", err.msg);
    expect_ops(&d.ops, OPS, 2);
    msg_free(&m);
}

/* ---- refusals: ops ----------------------------------------------------------------------------- */

Test(codec_repl, op_with_bad_id_refused) {
    const char *bad[] = {"a b", ".x", "x.", "a..b", "", "\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "bad id #%zu in", i);
        expect_bad_op_raw(op_raw("ussssuiiu", (uint64_t)0, bad[i], "c", "u", "web", (uint64_t)0,
                                 (int64_t)0, (int64_t)0, (uint64_t)1), PD_EBADID, what);
        expect_bad_op_raw(op_raw("ussu", (uint64_t)1, "s", bad[i], (uint64_t)1), PD_EBADID, what);
        expect_bad_op_raw(op_raw("ussuui", (uint64_t)2, bad[i], "c", (uint64_t)1, (uint64_t)0,
                                 (int64_t)0), PD_EBADID, what);
        expect_bad_op_raw(op_raw("usuus", (uint64_t)3, bad[i], (uint64_t)1, (uint64_t)1, "n"),
                          PD_EBADID, what);
        expect_bad_op_raw(op_raw("usuus", (uint64_t)3, "u", (uint64_t)1, (uint64_t)1, bad[i]),
                          PD_EBADID, what);
        expect_bad_op_raw(op_raw("usssius", (uint64_t)4, "u", "t", "", (int64_t)0, (uint64_t)1,
                                 bad[i]), PD_EBADID, what);
    }
    /* ...and a well-formed copy of each of those shapes is accepted. */
    raw good[] = {
        op_raw("ussssuiiu", (uint64_t)0, "s", "c", "u", "web", (uint64_t)0, (int64_t)0, (int64_t)0,
               (uint64_t)1),
        op_raw("ussu", (uint64_t)1, "s", "c", (uint64_t)1),
        op_raw("ussuui", (uint64_t)2, "s", "c", (uint64_t)1, (uint64_t)0, (int64_t)0),
        op_raw("usuus", (uint64_t)3, "u", (uint64_t)1, (uint64_t)1, "n"),
        op_raw("usssius", (uint64_t)4, "u", "t", "", (int64_t)0, (uint64_t)1, "n"),
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        msg m = delta_raw_ops(&good[i], 1);
        pd_err err = {PD_OK, ""};
        cr_expect_eq(decode_as(K_DELTA, &m, &err), PD_OK, "good shape %zu: %s", i, err.msg);
        msg_free(&m);
    }
}

Test(codec_repl, op_with_wrong_arity_refused) {
    /* Shortest and longest (with the optional last element) of each kind. */
    static const uint8_t arity[] = {9, 4, 6, 5, 7, 5, 4}, longest[] = {10, 6, 7, 6, 7, 5, 4};
    for (unsigned k = 0; k < 7; k++) {
        for (int delta = -1; delta <= 1; delta += 2) {
            raw r;
            msgpack_packer pk = raw_packer(&r);
            uint32_t n = (uint32_t)(delta < 0 ? arity[k] - 1 : longest[k] + 1);
            msgpack_pack_array(&pk, n);
            msgpack_pack_uint8(&pk, (uint8_t)k);
            for (uint32_t i = 1; i < n; i++) pd_pack_cstr(&pk, "x");
            char what[48];
            snprintf(what, sizeof what, "kind %u with %u elements", k, n);
            expect_bad_op_raw(r, PD_EBADVALUE, what);
        }
    }
    expect_bad_op("90", PD_EBADVALUE, "empty op array");
}

Test(codec_repl, op_with_unknown_kind_refused) {
    expect_bad_op("95 07 a1 73 a1 63 01 02", PD_EBADVALUE, "kind 7");
    expect_bad_op("94 7f a1 73 a1 63 01", PD_EBADVALUE, "kind 127");
    expect_bad_op("94 ff a1 73 a1 63 01", PD_EBADVALUE, "kind -1");
    expect_bad_op("94 a1 30 a1 73 a1 63 01", PD_EBADVALUE, "kind as a string");
    expect_bad_op("a3 61 64 64", PD_EBADVALUE, "op not an array");
}

Test(codec_repl, op_with_bad_values_refused) {
    expect_bad_op_raw(op_raw("ussssuiiu", (uint64_t)0, "s", "c", "u", "web", (uint64_t)2,
                             (int64_t)0, (int64_t)0, (uint64_t)1), PD_EBADVALUE, "state 2");
    expect_bad_op_raw(op_raw("ussssuiiu", (uint64_t)0, "s", "c", "u", "", (uint64_t)0,
                             (int64_t)0, (int64_t)0, (uint64_t)1), PD_EBADVALUE, "empty label");
    expect_bad_op_raw(op_raw("ussssuiiu", (uint64_t)0, "s", "c", "u",
                             "0123456789012345678901234567890123", (uint64_t)0, (int64_t)0,
                             (int64_t)0, (uint64_t)1), PD_EBADVALUE, "label too long");
    expect_bad_op_raw(op_raw("ussssuiii", (uint64_t)0, "s", "c", "u", "web", (uint64_t)0,
                             (int64_t)0, (int64_t)0, (int64_t)-1), PD_EBADVALUE, "negative claim");
    expect_bad_op_raw(op_raw("usuus", (uint64_t)3, "u", (uint64_t)4, (uint64_t)1, "n"),
                      PD_EBADVALUE, "chosen 4");
    expect_bad_op_raw(op_raw("ussui", (uint64_t)1, "s", "c", (uint64_t)1, (int64_t)0),
                      PD_EBADVALUE, "REMOVE at 0");
    expect_bad_op_raw(op_raw("usuusi", (uint64_t)3, "u", (uint64_t)3, (uint64_t)1, "n",
                             (int64_t)-1), PD_EBADVALUE, "CHOSEN frozen last_seen negative");
    expect_bad_op_raw(op_raw("usius", (uint64_t)5, "u", (int64_t)0, (uint64_t)1, "n"),
                      PD_EBADVALUE, "SEEN at 0");
    expect_bad_op_raw(op_raw("ussssuiius", (uint64_t)0, "s", "c", "u", "web", (uint64_t)0,
                             (int64_t)0, (int64_t)0, (uint64_t)1, "meta"),
                      PD_EBADVALUE, "ADD meta not a map");
    expect_bad_op_raw(op_raw("usssius", (uint64_t)4, "u", "t\x01", "", (int64_t)0, (uint64_t)1,
                             "n"), PD_EBADVALUE, "control character in text");
    expect_bad_op_raw(op_raw("usssius", (uint64_t)4, "u", "t", "\xff", (int64_t)0, (uint64_t)1,
                             "n"), PD_EBADVALUE, "bad UTF-8 in emoji");
    raw text = raw_rep('t', PD_TEXT_MAX + 1);
    raw r;
    msgpack_packer pk = raw_packer(&r);
    msgpack_pack_array(&pk, 7);
    msgpack_pack_uint8(&pk, 4);
    pd_pack_cstr(&pk, "u");
    raw_write(&r, (const char *)text.b, text.n);
    pd_pack_cstr(&pk, "");
    msgpack_pack_int64(&pk, 0);
    msgpack_pack_uint64(&pk, 1);
    pd_pack_cstr(&pk, "n");
    expect_bad_op_raw(r, PD_EBADVALUE, "text too long");
}

Test(codec_repl, one_bad_op_among_good_ones_refuses_the_delta) {
    msgpack_sbuffer o;
    pack_ops(&o, OPS, NOPS);
    raw ops = {.n = 0};
    memcpy(ops.b, o.data, o.size);
    ops.n = o.size;
    raw bad = op_raw("usuus", (uint64_t)3, "u", (uint64_t)9, (uint64_t)1, "n");
    memcpy(ops.b + ops.n, bad.b, bad.n);
    ops.n += bad.n;
    expect_refused(K_DELTA, delta_raw_ops(&ops, NOPS + 1), PD_EBADVALUE, "last op bad");
    /* An ops count larger than the ops present. */
    ops.n = o.size;
    expect_refused(K_DELTA, delta_raw_ops(&ops, NOPS + 1), PD_EBADMSGPACK, "ops count too high");
    msgpack_sbuffer_destroy(&o);
}

/* ---- refusals: message maps ---------------------------------------------------------------------- */

static msg valid_of(kind k) {
    static const pd_sync_part sp = {.origin = S("node-a"), .known = true, .last = true,
                                    .inc = 1, .seq = 2, .req = 3};
    pd_heartbeat *hb;
    msg m;
    switch (k) {
    case K_DELTA: return delta_msg(pd_str_c("node-a"), 1, 1, OPS, NOPS);
    case K_HB:
        hb = hb_new(3);
        m = hb_msg(hb);
        free(hb);
        return m;
    case K_REQ: return req_msg("node-b", "node-a", 3);
    default: return part_msg(&sp, OPS, NOPS);
    }
}

static const char *const KIND_NAME[] = {"delta", "heartbeat", "sync request", "sync part"};

Test(codec_repl, missing_or_wrong_version_refused) {
    for (kind k = K_DELTA; k <= K_PART; k++) {
        char what[64];
        raw v2 = raw_hex("02"), v0 = raw_hex("00"), vs = raw_hex("a1 31"), vneg = raw_hex("ff");
        snprintf(what, sizeof what, "%s without v", KIND_NAME[k]);
        expect_refused(k, map_set(valid_of(k), "v", NULL), PD_EMISSING, what);
        snprintf(what, sizeof what, "%s with v 2", KIND_NAME[k]);
        expect_refused(k, map_set(valid_of(k), "v", &v2), PD_EBADVALUE, what);
        snprintf(what, sizeof what, "%s with v 0", KIND_NAME[k]);
        expect_refused(k, map_set(valid_of(k), "v", &v0), PD_EBADVALUE, what);
        snprintf(what, sizeof what, "%s with v -1", KIND_NAME[k]);
        expect_refused(k, map_set(valid_of(k), "v", &vneg), PD_EBADVALUE, what);
        snprintf(what, sizeof what, "%s with v \"1\"", KIND_NAME[k]);
        expect_refused(k, map_set(valid_of(k), "v", &vs), PD_EBADVALUE, what);
    }
}

Test(codec_repl, missing_required_fields_refused) {
    static const char *const fields[][4] = {
        {"node", "inc", "seq", "ops"},
        {"node", "inc", "seq", "vc"},
        {"node", "origin", NULL, NULL},
        {"origin", "inc", "seq", "ops"},
    };
    for (kind k = K_DELTA; k <= K_PART; k++) {
        for (int i = 0; i < 4 && fields[k][i]; i++) {
            char what[64];
            snprintf(what, sizeof what, "%s without %s", KIND_NAME[k], fields[k][i]);
            expect_refused(k, map_set(valid_of(k), fields[k][i], NULL), PD_EMISSING, what);
        }
    }
}

Test(codec_repl, wrong_kinds_of_fields_refused) {
    raw neg = raw_hex("ff"), str = raw_hex("a1 31"), badid = raw_hex("a3 61 20 62");
    raw part_big = raw_hex("cf 00 00 00 01 00 00 00 00"), notbool = raw_hex("01");
    expect_refused(K_DELTA, map_set(valid_of(K_DELTA), "seq", &neg), PD_EBADVALUE, "seq -1");
    expect_refused(K_DELTA, map_set(valid_of(K_DELTA), "inc", &str), PD_EBADVALUE, "inc string");
    expect_refused(K_DELTA, map_set(valid_of(K_DELTA), "node", &badid), PD_EBADID, "node 'a b'");
    expect_refused(K_DELTA, map_set(valid_of(K_DELTA), "ops", &str), PD_EBADVALUE, "ops string");
    expect_refused(K_HB, map_set(valid_of(K_HB), "node", &badid), PD_EBADID, "hb node");
    expect_refused(K_HB, map_set(valid_of(K_HB), "leaving", &notbool), PD_EBADVALUE,
                   "leaving not a bool");
    expect_refused(K_HB, map_set(valid_of(K_HB), "hlc", &neg), PD_EBADVALUE, "hlc -1");
    expect_refused(K_REQ, map_set(valid_of(K_REQ), "origin", &badid), PD_EBADID, "origin");
    expect_refused(K_PART, map_set(valid_of(K_PART), "part", &part_big), PD_EBADVALUE,
                   "part above 2^32-1");
    expect_refused(K_PART, map_set(valid_of(K_PART), "known", &notbool), PD_EBADVALUE,
                   "known not a bool");
}

Test(codec_repl, bad_vector_clocks_refused) {
    /* One entry more than PD_VC_MAX, each entry present: too large. */
    raw r;
    msgpack_packer pk = raw_packer(&r);
    msgpack_pack_array(&pk, PD_VC_MAX + 1);
    for (uint32_t i = 0; i <= PD_VC_MAX; i++) {
        msgpack_pack_array(&pk, 3);
        pd_pack_cstr(&pk, "n");
        msgpack_pack_uint8(&pk, 1);
        msgpack_pack_uint8(&pk, 1);
    }
    expect_refused(K_HB, map_set(valid_of(K_HB), "vc", &r), PD_ETOOLARGE, "vc of 257");
    raw two = raw_hex("91 92 a1 6e 01"), bad = raw_hex("91 93 a3 61 20 62 01 01");
    raw neg = raw_hex("91 93 a1 6e ff 01"), flat = raw_hex("93 a1 6e 01 01");
    expect_refused(K_HB, map_set(valid_of(K_HB), "vc", &two), PD_EBADVALUE, "entry of 2");
    expect_refused(K_HB, map_set(valid_of(K_HB), "vc", &bad), PD_EBADID, "entry with bad id");
    expect_refused(K_HB, map_set(valid_of(K_HB), "vc", &neg), PD_EBADVALUE, "entry inc -1");
    expect_refused(K_HB, map_set(valid_of(K_HB), "vc", &flat), PD_EBADVALUE, "entry not an array");
}

Test(codec_repl, huge_declared_lengths_refused) {
    raw arr = raw_hex("dd ff ff ff ff 01"), str = raw_hex("db ff ff ff ff 61"),
        map = raw_hex("df ff ff ff ff 01"), bin = raw_hex("c6 ff ff ff ff 00");
    expect_refused(K_DELTA, map_set(valid_of(K_DELTA), "ops", &arr), PD_EBADMSGPACK, "ops");
    expect_refused(K_DELTA, map_set(valid_of(K_DELTA), "node", &str), PD_EBADMSGPACK, "node");
    expect_refused(K_DELTA, map_set(valid_of(K_DELTA), "extra", &map), PD_EBADMSGPACK, "extra");
    expect_refused(K_DELTA, map_set(valid_of(K_DELTA), "extra", &bin), PD_EBADMSGPACK, "bin");
    expect_refused(K_HB, map_set(valid_of(K_HB), "vc", &arr), PD_EBADMSGPACK, "vc");
    expect_refused(K_REQ, map_set(valid_of(K_REQ), "origin", &str), PD_EBADMSGPACK, "origin");
    expect_refused(K_PART, map_set(valid_of(K_PART), "ops", &arr), PD_EBADMSGPACK, "part ops");
    /* Inside an op: an op array, a string field, and the whole message. */
    expect_bad_op("dd ff ff ff ff 00", PD_EBADMSGPACK, "op of 2^32-1 elements");
    expect_bad_op("94 01 db ff ff ff ff 73 a1 63 01", PD_EBADMSGPACK, "server of 4 GiB");
    for (kind k = K_DELTA; k <= K_PART; k++) {
        expect_refused(k, msg_hex("df ff ff ff ff a1 76 01"), PD_EBADMSGPACK, "top map");
        expect_refused(k, msg_hex("dd ff ff ff ff"), PD_EBADMSGPACK, "top array");
    }
}

Test(codec_repl, not_a_map_trailing_bytes_and_empty_refused) {
    for (kind k = K_DELTA; k <= K_PART; k++) {
        expect_refused(k, msg_hex("93 01 02 03"), PD_EBADMSGPACK, "array");
        expect_refused(k, msg_hex(""), PD_EBADMSGPACK, "empty");
        expect_refused(k, msg_hex("c1"), PD_EBADMSGPACK, "never-used byte");
        msg m = valid_of(k);
        uint8_t *buf = malloc(m.n + 1);
        cr_assert_not_null(buf);
        memcpy(buf, m.b, m.n);
        buf[m.n] = 0xc0;
        msg t = msg_bytes(buf, m.n + 1);
        free(buf);
        expect_refused(k, t, PD_EBADMSGPACK, "trailing nil");
        msg_free(&m);
    }
}

/* Every strict prefix of every valid message is refused, and no decoder
 * reads past its end (ASan watches the exact-size copies). */
Test(codec_repl, every_truncation_refused) {
    for (kind k = K_DELTA; k <= K_PART; k++) {
        msg m = valid_of(k);
        for (size_t n = 0; n < m.n; n++) {
            msg t = msg_bytes(m.b, n);
            pd_err err = {PD_OK, ""};
            cr_expect_neq(decode_as(k, &t, &err), PD_OK, "%s cut at %zu of %zu accepted",
                          KIND_NAME[k], n, m.n);
            msg_free(&t);
        }
        pd_err err = {PD_OK, ""};
        cr_expect_eq(decode_as(k, &m, &err), PD_OK, "%s whole: %s", KIND_NAME[k], err.msg);
        msg_free(&m);
    }
}

/* Each message decoded as every other kind: refused or accepted, never a
 * crash; a delta and a sync part never pass for one another's required set. */
Test(codec_repl, cross_kind_decoding_is_safe) {
    for (kind k = K_DELTA; k <= K_PART; k++) {
        msg m = valid_of(k);
        for (kind as = K_DELTA; as <= K_PART; as++) {
            pd_err err = {PD_OK, ""};
            pd_status s = decode_as(as, &m, &err);
            if (as == k) cr_expect_eq(s, PD_OK, "%s as itself", KIND_NAME[k]);
            else cr_expect_eq(s, PD_EMISSING, "%s as %s: %s", KIND_NAME[k], KIND_NAME[as],
                              pd_status_str(s));
        }
        msg_free(&m);
    }
}

/* The VER op and a REMOVE with its user, byte for byte as in
 * schemas/cluster.md. */
Test(codec_repl, ver_and_remove_with_user_match_the_schema) {
    static const uint8_t remove_user[] = {
        0x97, 0x01, 0xa4, 'w', 's', '-', '1', 0xa3, 'c', '-', '7', 0xcf, 0x01, 0x8b, 0xcf, 0xea,
        0xe6, 0x40, 0x00, 0x00, 0xcf, 0x00, 0x00, 0x01, 0x8b, 0xcf, 0xeb, 0xd0, 0xa0, 0xcf, 0x01,
        0x8b, 0xcf, 0xeb, 0xd0, 0xa0, 0x00, 0x00, 0xa5, 'a', 'l', 'i', 'c', 'e'};
    static const uint8_t ver[] = {0x94, 0x07, 0xa5, 'a', 'l', 'i', 'c', 'e', 0xcf, 0x01, 0x8b,
                                  0xcf, 0xeb, 0xd8, 0x70, 0x00, 0x00, 0xa6, 'n', 'o', 'd', 'e',
                                  '-', 'b'};
    const pd_op ops[] = {
        {.kind = PD_OP_REMOVE, .server = S("ws-1"), .conn = S("c-7"),
         .hlc = UINT64_C(1700000360000) << 16, .at = 1700000420000,
         .ver = UINT64_C(1700000420000) << 16, .user = S("alice")},
        {.kind = PD_OP_VER, .user = S("alice"), .hlc = UINT64_C(1700000422000) << 16,
         .writer = S("node-b")},
    };
    const uint8_t *want[] = {remove_user, ver};
    const size_t want_n[] = {sizeof remove_user, sizeof ver};
    for (int i = 0; i < 2; i++) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        pd_op_encode(&pk, &ops[i]);
        cr_expect_eq(sb.size, want_n[i], "op %d: %zu bytes", i, sb.size);
        cr_expect(sb.size == want_n[i] && memcmp(sb.data, want[i], sb.size) == 0, "op %d bytes", i);
        mp_reader r;
        pd_op back;
        mpr_init(&r, sb.data, sb.size);
        cr_assert(pd_op_read(&r, &back), "op %d reads back", i);
        expect_same_op(&back, &ops[i]);
        msgpack_sbuffer_destroy(&sb);
    }
}

/* ---- ADD ops written directly (issue 15) ---------------------------------------------------- */

/* The ADD op as msgpack-c's packer writes it: the direct writer of
 * pd_op_encode must give the same bytes, at every encoding boundary. */
static void add_reference(msgpack_packer *pk, const pd_op *op) {
    msgpack_pack_array(pk, op->meta.n ? 10 : 9);
    msgpack_pack_uint8(pk, PD_OP_ADD);
    msgpack_pack_str_with_body(pk, op->server.p, op->server.n);
    msgpack_pack_str_with_body(pk, op->conn.p, op->conn.n);
    msgpack_pack_str_with_body(pk, op->user.p, op->user.n);
    msgpack_pack_str_with_body(pk, op->label.p, op->label.n);
    msgpack_pack_uint8(pk, (uint8_t)op->state);
    msgpack_pack_int64(pk, op->connected_at);
    msgpack_pack_int64(pk, op->last_active);
    msgpack_pack_uint64(pk, op->hlc);
    if (op->meta.n) msgpack_sbuffer_write(pk->data, op->meta.p, op->meta.n);
}

Test(codec_repl, add_written_directly_is_what_msgpack_writes) {
    static const int64_t ints[] = {
        INT64_MIN, -(1ll << 31) - 1, -(1ll << 31), -32769, -32768, -129, -128, -33, -32, -1,
        0, 1, 127, 128, 255, 256, 65535, 65536, (1ll << 32) - 1, 1ll << 32, 1700000000000,
        INT64_MAX};
    static const uint64_t uints[] = {0, 127, 128, 255, 256, 65535, 65536, (1ull << 32) - 1,
                                     1ull << 32, 111411500000000000ull,
                                     (uint64_t)INT64_MAX}; /* the reader caps at INT64_MAX */
    char id128[128], label32[32];
    memset(id128, 'i', sizeof id128);
    memset(label32, 'l', sizeof label32);
    pd_str ids[] = {{"s", 1}, {id128, 31}, {id128, 32}, {id128, 128}};
    pd_str labels[] = {{"web", 3}, {label32, 31}, {label32, 32}};
    static const uint8_t meta[] = {0x81, 0xa1, 'k', 0xa1, 'v'};
    msgpack_sbuffer want, got;
    msgpack_packer pw, pg;
    msgpack_sbuffer_init(&want);
    msgpack_sbuffer_init(&got);
    msgpack_packer_init(&pw, &want, msgpack_sbuffer_write);
    msgpack_packer_init(&pg, &got, msgpack_sbuffer_write);
    size_t n = sizeof ints / sizeof ints[0], k = 0;
    for (size_t i = 0; i < n * 2; i++) {
        pd_op op = {.kind = PD_OP_ADD, .server = ids[i % 4], .conn = ids[(i + 1) % 4],
                    .user = ids[(i + 2) % 4], .label = labels[i % 3],
                    .state = (pd_devstate)(i % 2), .connected_at = ints[i % n],
                    .last_active = ints[(i * 7 + 3) % n],
                    .hlc = uints[i % (sizeof uints / sizeof uints[0])]};
        if (i % 3 == 0) op.meta = (pd_str){(const char *)meta, sizeof meta};
        add_reference(&pw, &op);
        pd_op_encode(&pg, &op);
        k++;
    }
    cr_assert_eq(got.size, want.size, "%zu ops: %zu bytes, msgpack-c wrote %zu", k, got.size,
                 want.size);
    cr_expect(memcmp(got.data, want.data, want.size) == 0, "the same bytes");
    /* and they read back */
    mp_reader r;
    mpr_init(&r, got.data, got.size);
    for (size_t i = 0; i < k; i++) {
        pd_op op;
        cr_assert(pd_op_read(&r, &op), "op %zu: %s", i, r.why);
        cr_expect_eq(op.connected_at, ints[i % n]);
    }
    msgpack_sbuffer_destroy(&want);
    msgpack_sbuffer_destroy(&got);
}

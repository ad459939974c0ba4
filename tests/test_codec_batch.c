/* test_codec_batch.c - the codec of the socket-server additions
 * (schemas/events.md): batches, syncs in parts, partial replies. Valid
 * messages come from the encoders and are checked against the literal hex
 * of the schema pages; invalid ones are built with msgpack-c directly. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include "wire/codec.h"

#define S(x) pd_str_c(x)

static msgpack_sbuffer sb;
static void init(void) { msgpack_sbuffer_init(&sb); }
static void fini(void) { msgpack_sbuffer_destroy(&sb); }
TestSuite(codec_batch, .init = init, .fini = fini);

/* The bytes of sb as lowercase hex separated by spaces. */
static char *hex(const msgpack_sbuffer *b) {
    char *out = calloc(b->size * 3 + 1, 1);
    for (size_t i = 0; i < b->size; i++)
        sprintf(out + 3 * i, i + 1 < b->size ? "%02x " : "%02x", (unsigned char)b->data[i]);
    return out;
}

static void expect_hex(const char *want) {
    char *got = hex(&sb);
    cr_expect_str_eq(got, want);
    free(got);
}

/* A copy of sb on the heap of exactly its size (ASan catches overreads). */
static void *heap_copy(void) {
    void *p = malloc(sb.size ? sb.size : 1);
    memcpy(p, sb.data, sb.size);
    return p;
}

Test(codec_batch, batch_roundtrip_and_wire_form) {
    msgpack_sbuffer e1, e2;
    msgpack_sbuffer_init(&e1);
    msgpack_sbuffer_init(&e2);
    pd_event a = {.type = PD_EV_ACTIVITY, .server = S("ws-1"), .conn = S("c-42")};
    pd_event b = {.type = PD_EV_ACTIVITY, .server = S("ws-1"), .conn = S("c-99")};
    pd_event_encode(&e1, &a, NULL, 0);
    pd_event_encode(&e2, &b, NULL, 0);
    pd_str ev[2] = {{e1.data, (uint32_t)e1.size}, {e2.data, (uint32_t)e2.size}};
    pd_batch_encode(&sb, ev, 2);
    expect_hex("82 a4 74 79 70 65 a5 62 61 74 63 68 a6 65 76 65 6e 74 73 92 83 a4 74 79 70 65 "
               "a8 61 63 74 69 76 69 74 79 a6 73 65 72 76 65 72 a4 77 73 2d 31 a4 63 6f 6e 6e "
               "a4 63 2d 34 32 83 a4 74 79 70 65 a8 61 63 74 69 76 69 74 79 a6 73 65 72 76 65 "
               "72 a4 77 73 2d 31 a4 63 6f 6e 6e a4 63 2d 39 39");
    void *buf = heap_copy();
    cr_assert(pd_batch_is(buf, sb.size));
    pd_batch bt;
    pd_err err = {0};
    cr_assert_eq(pd_batch_decode(buf, sb.size, 1000, &bt, &err), PD_OK, "%s", err.msg);
    cr_assert_eq(bt.n, 2);
    mp_reader it;
    pd_str raw;
    pd_event got;
    pd_batch_iter_init(&it, &bt);
    cr_assert(pd_batch_next(&it, &raw));
    cr_assert_eq(pd_event_decode(raw.p, raw.n, &got, &err), PD_OK);
    cr_expect(pd_str_eqc(got.conn, "c-42"));
    cr_assert(pd_batch_next(&it, &raw));
    cr_assert_eq(pd_event_decode(raw.p, raw.n, &got, &err), PD_OK);
    cr_expect(pd_str_eqc(got.conn, "c-99"));
    cr_expect_not(pd_batch_next(&it, &raw));
    /* Not over the limit: 2 events with a limit of 1 is too_large. */
    cr_expect_eq(pd_batch_decode(buf, sb.size, 1, &bt, &err), PD_ETOOLARGE);
    cr_expect(strstr(err.msg, "PRESENCE_MAX_BATCH") != NULL, "%s", err.msg);
    /* An event is not a batch; a batch is not an event. */
    cr_expect_not(pd_batch_is(e1.data, e1.size));
    cr_expect_eq(pd_event_decode(buf, sb.size, &got, &err), PD_EBADTYPE);
    free(buf);
    msgpack_sbuffer_destroy(&e1);
    msgpack_sbuffer_destroy(&e2);
}

/* {"type": "batch", <key>: <value written by fn>} */
static void batch_with(const char *key, void (*fn)(msgpack_packer *)) {
    msgpack_packer pk;
    msgpack_sbuffer_clear(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, key ? 2 : 1);
    pd_pack_kv_str(&pk, "type", S("batch"));
    if (key) {
        pd_pack_cstr(&pk, key);
        fn(&pk);
    }
}

static void not_array(msgpack_packer *pk) { msgpack_pack_int(pk, 3); }
static void not_maps(msgpack_packer *pk) {
    msgpack_pack_array(pk, 2);
    msgpack_pack_map(pk, 0);
    msgpack_pack_int(pk, 1);
}
static void empty(msgpack_packer *pk) { msgpack_pack_array(pk, 0); }

static pd_status decode_batch(pd_err *err) {
    pd_batch bt;
    void *buf = heap_copy();
    pd_status s = pd_batch_decode(buf, sb.size, 1000, &bt, err);
    free(buf);
    return s;
}

Test(codec_batch, batch_errors) {
    pd_err err = {0};
    batch_with(NULL, NULL);
    cr_expect_eq(decode_batch(&err), PD_EMISSING);
    cr_expect(strstr(err.msg, "'events'") != NULL, "%s", err.msg);
    batch_with("events", not_array);
    cr_expect_eq(decode_batch(&err), PD_EBADVALUE, "%s", err.msg);
    batch_with("events", not_maps);
    cr_expect_eq(decode_batch(&err), PD_EBADVALUE);
    cr_expect(strstr(err.msg, "element 1") != NULL, "%s", err.msg);
    batch_with("events", empty);
    cr_expect_eq(decode_batch(&err), PD_OK, "an empty batch is valid: %s", err.msg);
    /* Truncated: every prefix of a valid batch is refused, never read past. */
    batch_with("events", not_maps);
    for (size_t n = 0; n + 1 < sb.size; n++) {
        pd_batch bt;
        void *buf = malloc(n ? n : 1);
        memcpy(buf, sb.data, n);
        cr_expect_neq(pd_batch_decode(buf, n, 1000, &bt, &err), PD_OK, "prefix %zu", n);
        free(buf);
    }
}

Test(codec_batch, sync_in_parts_roundtrip_and_wire_form) {
    pd_sync_conn c = {S("c-42"), S("alice"), S("web")};
    pd_event s = {.type = PD_EV_SYNC, .server = S("ws-1"), .sync_id = S("r-7"), .part = 1,
                  .parts = 3};
    pd_event_encode(&sb, &s, &c, 1);
    expect_hex("86 a4 74 79 70 65 a4 73 79 6e 63 a6 73 65 72 76 65 72 a4 77 73 2d 31 a5 63 6f "
               "6e 6e 73 91 83 a4 63 6f 6e 6e a4 63 2d 34 32 a4 75 73 65 72 a5 61 6c 69 63 65 "
               "a6 64 65 76 69 63 65 a3 77 65 62 a7 73 79 6e 63 5f 69 64 a3 72 2d 37 a4 70 61 "
               "72 74 01 a5 70 61 72 74 73 03");
    void *buf = heap_copy();
    pd_event got;
    pd_err err = {0};
    cr_assert_eq(pd_event_decode(buf, sb.size, &got, &err), PD_OK, "%s", err.msg);
    cr_expect(pd_str_eqc(got.sync_id, "r-7"));
    cr_expect_eq(got.part, 1);
    cr_expect_eq(got.parts, 3);
    free(buf);
    /* A whole sync decodes as part 1 of 1 without an id. */
    pd_event w = {.type = PD_EV_SYNC, .server = S("ws-1")};
    msgpack_sbuffer_clear(&sb);
    pd_event_encode(&sb, &w, &c, 1);
    buf = heap_copy();
    cr_assert_eq(pd_event_decode(buf, sb.size, &got, &err), PD_OK);
    cr_expect_eq(got.sync_id.n, 0);
    cr_expect_eq(got.part, 1);
    cr_expect_eq(got.parts, 1);
    free(buf);
}

/* A sync with the given part fields (-1: left out). */
static pd_status sync_parts(const char *id, int64_t part, int64_t parts, pd_err *err) {
    msgpack_packer pk;
    msgpack_sbuffer_clear(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3u + (id != NULL) + (part >= 0) + (parts >= 0));
    pd_pack_kv_str(&pk, "type", S("sync"));
    pd_pack_kv_str(&pk, "server", S("ws-1"));
    pd_pack_cstr(&pk, "conns");
    msgpack_pack_array(&pk, 0);
    if (id) pd_pack_kv_str(&pk, "sync_id", S(id));
    if (part >= 0) pd_pack_kv_int(&pk, "part", part);
    if (parts >= 0) pd_pack_kv_int(&pk, "parts", parts);
    pd_event ev;
    void *buf = heap_copy();
    pd_status s = pd_event_decode(buf, sb.size, &ev, err);
    free(buf);
    return s;
}

Test(codec_batch, sync_part_errors) {
    pd_err err = {0};
    cr_expect_eq(sync_parts("r", 1, 2, &err), PD_OK);
    cr_expect_eq(sync_parts("r", -1, 2, &err), PD_EMISSING);
    cr_expect(strstr(err.msg, "'part'") != NULL, "%s", err.msg);
    cr_expect_eq(sync_parts(NULL, 1, 2, &err), PD_EMISSING);
    cr_expect(strstr(err.msg, "'sync_id'") != NULL, "%s", err.msg);
    cr_expect_eq(sync_parts("r", 1, -1, &err), PD_EMISSING);
    cr_expect_eq(sync_parts("r", 3, 2, &err), PD_EBADVALUE);
    cr_expect(strstr(err.msg, "beyond") != NULL, "%s", err.msg);
    cr_expect_eq(sync_parts("r", 0, 2, &err), PD_EBADVALUE);
    cr_expect_eq(sync_parts("r", 1, 100001, &err), PD_EBADVALUE);
    cr_expect_eq(sync_parts("a*b", 1, 2, &err), PD_EBADID);
}

Test(codec_batch, partial_reply_roundtrip_and_wire_form) {
    pd_failure f[2] = {
        {.i = 1, .code = PD_EUNKNOWNCONN,
         .message = S("conn 'c-99' of server 'ws-1' is not connected")},
        {.i = -1, .conn = S("c-43"), .code = PD_ETOOLARGE, .message = S("too many")},
    };
    pd_reply_partial_encode(&sb, "1 of 2 events refused; the rest applied", f, 1);
    expect_hex("84 a2 6f 6b c2 a5 65 72 72 6f 72 a7 70 61 72 74 69 61 6c a7 6d 65 73 73 61 67 "
               "65 d9 27 31 20 6f 66 20 32 20 65 76 65 6e 74 73 20 72 65 66 75 73 65 64 3b 20 "
               "74 68 65 20 72 65 73 74 20 61 70 70 6c 69 65 64 a6 66 61 69 6c 65 64 91 83 a1 "
               "69 01 a5 65 72 72 6f 72 ac 75 6e 6b 6e 6f 77 6e 5f 63 6f 6e 6e a7 6d 65 73 73 "
               "61 67 65 d9 2d 63 6f 6e 6e 20 27 63 2d 39 39 27 20 6f 66 20 73 65 72 76 65 72 "
               "20 27 77 73 2d 31 27 20 69 73 20 6e 6f 74 20 63 6f 6e 6e 65 63 74 65 64");
    msgpack_sbuffer_clear(&sb);
    pd_reply_partial_encode(&sb, "two", f, 2);
    void *buf = heap_copy();
    pd_reply rep;
    cr_assert_eq(pd_reply_decode(buf, sb.size, &rep), PD_OK);
    cr_expect_not(rep.ok);
    cr_expect_str_eq(rep.code, "partial");
    cr_expect_str_eq(rep.message, "two");
    cr_assert_eq(rep.nfailed, 2);
    mp_reader it;
    pd_failure g;
    pd_reply_failed_iter(&it, &rep);
    cr_assert(pd_reply_next_failed(&it, &g));
    cr_expect_eq(g.i, 1);
    cr_expect_eq(g.conn.n, 0);
    cr_expect_eq(g.code, PD_EUNKNOWNCONN);
    cr_assert(pd_reply_next_failed(&it, &g));
    cr_expect_eq(g.i, -1);
    cr_expect(pd_str_eqc(g.conn, "c-43"));
    cr_expect_eq(g.code, PD_ETOOLARGE);
    cr_expect(pd_str_eqc(g.message, "too many"));
    cr_expect_not(pd_reply_next_failed(&it, &g));
    free(buf);
    cr_expect_eq(pd_status_from_code(S("partial")), PD_EPARTIAL);
    cr_expect_eq(pd_status_from_code(S("nonsense")), PD_EINTERNAL);
}

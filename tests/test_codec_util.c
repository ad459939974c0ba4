/* test_codec_util.c - the helpers every codec shares (wire/codec_util.h):
 * the value readers and the codes they refuse with, the array validated in
 * place, the reader's failure turned into pd_status + pd_err, the named
 * field-set check, and the vector clock both heartbeats and snapshots carry.
 * Inputs are packed with msgpack-c into a buffer the test owns. */
#include "wire/codec_repl.h"
#include "wire/codec_util.h"
#include <criterion/criterion.h>
#include <string.h>

typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} buf;

static void buf_init(buf *b) {
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
}

static void reader_on(mp_reader *r, const buf *b) { mpr_init(r, b->sb.data, b->sb.size); }

Test(codec_util, u64_and_max) {
    buf b;
    buf_init(&b);
    msgpack_pack_uint64(&b.pk, 7);
    msgpack_pack_int64(&b.pk, -1);
    mp_reader r;
    uint64_t v = 0;
    reader_on(&r, &b);
    cr_expect(pd_rd_u64(&r, &v));
    cr_expect_eq(v, 7);
    cr_expect_not(pd_rd_u64(&r, &v));
    cr_expect_eq(r.err, PD_EBADVALUE);
    cr_expect_str_eq(r.why, "negative number");

    reader_on(&r, &b);
    cr_expect_not(pd_rd_max(&r, 6, &v), "7 is above 6");
    cr_expect_eq(r.err, PD_EBADVALUE);
    reader_on(&r, &b);
    cr_expect(pd_rd_max(&r, 7, &v));
    msgpack_sbuffer_destroy(&b.sb);
}

Test(codec_util, id) {
    buf b;
    buf_init(&b);
    pd_pack_cstr(&b.pk, "node-a");
    pd_pack_cstr(&b.pk, "no spaces");
    msgpack_pack_int64(&b.pk, 1);
    mp_reader r;
    pd_str s;
    reader_on(&r, &b);
    cr_expect(pd_rd_id(&r, &s));
    cr_expect(pd_str_eqc(s, "node-a"));
    cr_expect_not(pd_rd_id(&r, &s));
    cr_expect_eq(r.err, PD_EBADID);
    /* Sticky: the next value is not read after a failure. */
    cr_expect_not(pd_rd_id(&r, &s));
    cr_expect_eq(r.err, PD_EBADID);
    msgpack_sbuffer_destroy(&b.sb);
}

static bool small_int(mp_reader *r, void *ud) {
    uint64_t v;
    (*(int *)ud)++;
    return pd_rd_max(r, 9, &v);
}

Test(codec_util, array_validated_in_place) {
    buf b;
    buf_init(&b);
    msgpack_pack_array(&b.pk, 3);
    for (int i = 1; i <= 3; i++) msgpack_pack_int64(&b.pk, i);
    msgpack_pack_array(&b.pk, 2);
    msgpack_pack_int64(&b.pk, 1);
    msgpack_pack_int64(&b.pk, 10);
    mp_reader r, at;
    pd_str raw;
    uint32_t n = 0;
    int calls = 0;
    reader_on(&r, &b);
    cr_assert(pd_rd_array(&r, &raw, &n, small_int, &calls, &at));
    cr_expect_eq(n, 3);
    cr_expect_eq(calls, 3);
    cr_expect_eq(raw.n, 4, "the array's own bytes");
    int64_t first;
    cr_expect(mpr_int(&at, &first) && first == 1, "at is on the first element");
    /* The second array's bad element fails the outer reader, with why. */
    cr_expect_not(pd_rd_array(&r, &raw, &n, small_int, &calls, NULL));
    cr_expect_eq(r.err, PD_EBADVALUE);
    cr_expect_str_eq(r.why, "value out of range");
    msgpack_sbuffer_destroy(&b.sb);
}

Test(codec_util, reader_failure_as_status) {
    mp_reader r;
    pd_err err = {PD_OK, ""};
    mpr_init(&r, "\xc1", 1);
    cr_expect_not(mpr_skip(&r));
    cr_expect_eq(pd_rd_err(&r, &err), PD_EBADMSGPACK);
    cr_expect_eq(err.code, PD_EBADMSGPACK);
    cr_expect_str_eq(err.msg, r.why);

    /* Of another kind: the field is named. */
    buf b;
    buf_init(&b);
    msgpack_pack_int64(&b.pk, 5);
    pd_str s;
    reader_on(&r, &b);
    cr_expect_not(mpr_str(&r, &s));
    cr_expect_eq(pd_rd_field_err(&r, &err, "user", "a string"), PD_EBADVALUE);
    cr_expect_str_eq(err.msg, "field 'user' must be a string");
    msgpack_sbuffer_destroy(&b.sb);
}

Test(codec_util, fields_missing_names_the_first) {
    static const char *const names[] = {"node", "inc", "seq", "ops"};
    pd_err err = {PD_OK, ""};
    cr_expect_eq(pd_fields_missing(0xf, 0xf, names, 4, NULL, &err), PD_OK);
    cr_expect_eq(pd_fields_missing(0x1 | 0x8, 0xf, names, 4, NULL, &err), PD_EMISSING);
    cr_expect_str_eq(err.msg, "missing field 'inc'");
    cr_expect_eq(pd_fields_missing(0x0, 0x8, names, 4, "snapshot", &err), PD_EMISSING);
    cr_expect_str_eq(err.msg, "snapshot lacks field 'ops'");
    cr_expect_eq(pd_fields_missing(0x0, 0x0, names, 4, NULL, &err), PD_OK, "nothing required");
}

/* A decoder reports which field is missing by name. */
Test(codec_util, delta_missing_field_is_named) {
    buf b;
    buf_init(&b);
    msgpack_pack_map(&b.pk, 4);
    pd_pack_kv_u64(&b.pk, "v", PD_REPL_VERSION);
    pd_pack_kv_str(&b.pk, "node", PD_STR_LIT("n1"));
    pd_pack_kv_u64(&b.pk, "inc", 1);
    pd_pack_cstr(&b.pk, "ops");
    msgpack_pack_array(&b.pk, 0);
    pd_delta d;
    pd_err err = {PD_OK, ""};
    cr_expect_eq(pd_delta_decode(b.sb.data, b.sb.size, &d, &err), PD_EMISSING);
    cr_expect_str_eq(err.msg, "missing field 'seq'");
    msgpack_sbuffer_destroy(&b.sb);
}

Test(codec_util, vector_clock_round_trip_and_limits) {
    pd_vc_entry vc[3] = {{PD_STR_LIT("a"), 1, 2}, {PD_STR_LIT("b"), 3, 4}, {PD_STR_LIT("c"), 5, 0}};
    static pd_vc_entry got[PD_VC_MAX];
    uint32_t n = 0;
    buf b;
    buf_init(&b);
    pd_vc_encode(&b.pk, vc, 3);
    mp_reader r;
    reader_on(&r, &b);
    cr_assert(pd_vc_read(&r, got, &n), "%s", r.why);
    cr_assert_eq(n, 3);
    for (uint32_t i = 0; i < n; i++) {
        cr_expect(pd_str_eq(got[i].node, vc[i].node));
        cr_expect_eq(got[i].inc, vc[i].inc);
        cr_expect_eq(got[i].seq, vc[i].seq);
    }
    cr_expect_eq(mpr_remaining(&r), 0);
    msgpack_sbuffer_destroy(&b.sb);

    static pd_vc_entry many[PD_VC_MAX + 1];
    for (uint32_t i = 0; i <= PD_VC_MAX; i++) many[i] = (pd_vc_entry){PD_STR_LIT("a"), 1, 1};
    buf_init(&b);
    pd_vc_encode(&b.pk, many, PD_VC_MAX + 1);
    reader_on(&r, &b);
    cr_expect_not(pd_vc_read(&r, got, &n));
    cr_expect_eq(r.err, PD_ETOOLARGE);
    msgpack_sbuffer_destroy(&b.sb);

    pd_vc_entry bad = {PD_STR_LIT("bad id"), 1, 1};
    buf_init(&b);
    pd_vc_encode(&b.pk, &bad, 1);
    reader_on(&r, &b);
    cr_expect_not(pd_vc_read(&r, got, &n));
    cr_expect_eq(r.err, PD_EBADID);
    msgpack_sbuffer_destroy(&b.sb);
}

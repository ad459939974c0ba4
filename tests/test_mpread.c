/* test_mpread.c - the bounds-checked MessagePack reader of mpread.h.
 *
 * Design: inputs are written as hex strings (spaces ignored) and copied into
 * a heap block of exactly their size, so that under ASan a read one byte
 * past the end aborts the test instead of silently reading a neighbour.
 * Each msgpack format is read once through its typed reader and once
 * through mpr_skip; then the hostile cases: every truncation of a message
 * that uses all formats, declared lengths far beyond the input (the
 * `dd ff ff ff ff` class that makes allocating readers ask for ~96 GiB),
 * the never-used byte 0xc1, nesting past MPR_MAX_DEPTH, and stickiness of
 * the first error. */
#include "wire/mpread.h"
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

/* An input on the heap, exactly as long as the message. */
typedef struct {
    uint8_t *b;
    size_t n;
} input;

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static input in_bytes(const void *p, size_t n) {
    input in = {malloc(n ? n : 1), n};
    cr_assert_not_null(in.b);
    if (n) memcpy(in.b, p, n);
    return in;
}

static input in_hex(const char *hex) {
    uint8_t tmp[4096];
    size_t n = 0;
    for (const char *s = hex; *s; s++) {
        if (*s == ' ') continue;
        int hi = hexval(s[0]), lo = hexval(s[1]);
        cr_assert(hi >= 0 && lo >= 0 && n < sizeof tmp, "bad hex in test: %s", hex);
        tmp[n++] = (uint8_t)(hi << 4 | lo);
        s++;
    }
    return in_bytes(tmp, n);
}

/* A reader over the input (the input must outlive it). */
static mp_reader rd(const input *in) {
    mp_reader r;
    mpr_init(&r, in->b, in->n);
    return r;
}

static void in_free(input *in) {
    free(in->b);
    in->b = NULL;
}

/* Reads one integer from hex and checks value and full consumption. */
static void expect_int(const char *hex, int64_t want) {
    input in = in_hex(hex);
    mp_reader r = rd(&in);
    int64_t v = 0x5a5a;
    cr_expect_eq(mpr_peek(&r), MPR_INT, "%s", hex);
    cr_expect(mpr_int(&r, &v), "%s: %s", hex, r.why);
    cr_expect_eq(v, want, "%s: got %lld want %lld", hex, (long long)v, (long long)want);
    cr_expect_eq(mpr_remaining(&r), 0, "%s", hex);
    /* mpr_skip agrees on the size. */
    r = rd(&in);
    cr_expect(mpr_skip(&r), "%s", hex);
    cr_expect_eq(mpr_remaining(&r), 0, "%s", hex);
    in_free(&in);
}

/* Checks that reading from hex fails with code and a `why` containing msg. */
static void expect_fail(const char *hex, bool (*read)(mp_reader *), pd_status code,
                        const char *msg) {
    input in = in_hex(hex);
    mp_reader r = rd(&in);
    cr_expect_not(read(&r), "%s unexpectedly read", hex);
    cr_expect_eq(r.err, code, "%s: err %d want %d (%s)", hex, r.err, code, r.why);
    cr_expect(strstr(r.why, msg) != NULL, "%s: why '%s' lacks '%s'", hex, r.why, msg);
    cr_expect_eq(mpr_remaining(&r), 0, "%s: a failed reader is at its end", hex);
    in_free(&in);
}

static bool rd_skip(mp_reader *r) { return mpr_skip(r); }
static bool rd_int(mp_reader *r) { int64_t v; return mpr_int(r, &v); }
static bool rd_str(mp_reader *r) { pd_str s; return mpr_str(r, &s); }
static bool rd_map(mp_reader *r) { uint32_t n; return mpr_map(r, &n); }
static bool rd_array(mp_reader *r) { uint32_t n; return mpr_array(r, &n); }
static bool rd_bool(mp_reader *r) { bool b; return mpr_bool(r, &b); }
static bool rd_nil(mp_reader *r) { return mpr_nil(r); }

/* ---- scalars ---------------------------------------------------------------- */

Test(mpread, positive_fixint) {
    expect_int("00", 0);
    expect_int("01", 1);
    expect_int("7f", 127);
}

Test(mpread, negative_fixint) {
    expect_int("ff", -1);
    expect_int("f0", -16);
    expect_int("e0", -32);
}

Test(mpread, signed_ints_each_width) {
    expect_int("d0 7f", 127);
    expect_int("d0 80", -128);
    expect_int("d0 ff", -1);
    expect_int("d1 7f ff", 32767);
    expect_int("d1 80 00", -32768);
    expect_int("d1 ff fe", -2);
    expect_int("d2 7f ff ff ff", INT32_MAX);
    expect_int("d2 80 00 00 00", INT32_MIN);
    expect_int("d2 ff ff ff fd", -3);
    expect_int("d3 7f ff ff ff ff ff ff ff", INT64_MAX);
    expect_int("d3 80 00 00 00 00 00 00 00", INT64_MIN);
    expect_int("d3 ff ff ff ff ff ff ff ff", -1);
    expect_int("d3 00 00 01 7f 00 00 00 00", 1644972474368LL);
}

Test(mpread, unsigned_ints_each_width) {
    expect_int("cc 00", 0);
    expect_int("cc ff", 255);
    expect_int("cd 01 00", 256);
    expect_int("cd ff ff", 65535);
    expect_int("ce 00 01 00 00", 65536);
    expect_int("ce ff ff ff ff", 4294967295LL);
    expect_int("cf 00 00 00 01 00 00 00 00", 4294967296LL);
    expect_int("cf 7f ff ff ff ff ff ff ff", INT64_MAX);
}

Test(mpread, uint64_above_int64_max_refused) {
    expect_fail("cf 80 00 00 00 00 00 00 00", rd_int, PD_EBADVALUE, "integer out of range");
    expect_fail("cf ff ff ff ff ff ff ff ff", rd_int, PD_EBADVALUE, "integer out of range");
    /* mpr_skip does not interpret the value, so it passes over it. */
    input in = in_hex("cf ff ff ff ff ff ff ff ff");
    mp_reader r = rd(&in);
    cr_expect(mpr_skip(&r));
    cr_expect_eq(mpr_remaining(&r), 0);
    in_free(&in);
}

Test(mpread, nil_and_bool) {
    input in = in_hex("c0 c2 c3");
    mp_reader r = rd(&in);
    bool b = true;
    cr_expect_eq(mpr_peek(&r), MPR_NIL);
    cr_expect(mpr_nil(&r));
    cr_expect_eq(mpr_peek(&r), MPR_BOOL);
    cr_expect(mpr_bool(&r, &b));
    cr_expect_not(b);
    cr_expect(mpr_bool(&r, &b));
    cr_expect(b);
    cr_expect_eq(mpr_peek(&r), MPR_END);
    in_free(&in);
}

Test(mpread, float_is_its_own_kind) {
    input in = in_hex("ca 3f c0 00 00 cb 3f f8 00 00 00 00 00 00 01");
    mp_reader r = rd(&in);
    cr_expect_eq(mpr_peek(&r), MPR_FLOAT);
    cr_expect(mpr_skip(&r));
    cr_expect_eq(mpr_remaining(&r), 10);
    cr_expect_eq(mpr_peek(&r), MPR_FLOAT);
    cr_expect(mpr_skip(&r));
    cr_expect_eq(mpr_remaining(&r), 1);
    in_free(&in);
    /* A float is not an integer, even 1.5 or 1.0. */
    expect_fail("ca 3f c0 00 00", rd_int, PD_EBADVALUE, "expected an integer");
    expect_fail("cb 3f f0 00 00 00 00 00 00", rd_int, PD_EBADVALUE, "expected an integer");
}

/* ---- strings ---------------------------------------------------------------- */

static void expect_str(const char *hex, const char *want) {
    input in = in_hex(hex);
    mp_reader r = rd(&in);
    pd_str s = {NULL, 99};
    cr_expect_eq(mpr_peek(&r), MPR_STR, "%s", hex);
    cr_assert(mpr_str(&r, &s), "%s: %s", hex, r.why);
    cr_expect_eq(s.n, strlen(want), "%s", hex);
    cr_expect(pd_str_eqc(s, want), "%s: '%.*s'", hex, (int)s.n, s.p);
    /* A slice of the input, not a copy. */
    cr_expect(s.p >= (const char *)in.b && s.p + s.n == (const char *)in.b + in.n, "%s", hex);
    cr_expect_eq(mpr_remaining(&r), 0, "%s", hex);
    in_free(&in);
}

Test(mpread, strings_each_format) {
    expect_str("a0", "");
    expect_str("a3 61 62 63", "abc");
    expect_str("bf 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61 61"
               " 61 61 61 61 61 61 61 61", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    expect_str("d9 00", "");
    expect_str("d9 03 61 62 63", "abc");
    expect_str("da 00 03 61 62 63", "abc");
    expect_str("db 00 00 00 03 61 62 63", "abc");
}

Test(mpread, str8_of_255_bytes) {
    uint8_t buf[2 + 255];
    buf[0] = 0xd9;
    buf[1] = 0xff;
    memset(buf + 2, 'x', 255);
    input in = in_bytes(buf, sizeof buf);
    mp_reader r = rd(&in);
    pd_str s;
    cr_assert(mpr_str(&r, &s));
    cr_expect_eq(s.n, 255);
    cr_expect_eq(s.p[254], 'x');
    in_free(&in);
}

Test(mpread, wrong_kind_is_bad_value) {
    expect_fail("01", rd_str, PD_EBADVALUE, "expected a string");
    expect_fail("a1 61", rd_int, PD_EBADVALUE, "expected an integer");
    expect_fail("90", rd_map, PD_EBADVALUE, "expected a map");
    expect_fail("80", rd_array, PD_EBADVALUE, "expected an array");
    expect_fail("c0", rd_bool, PD_EBADVALUE, "expected a boolean");
    expect_fail("c2", rd_nil, PD_EBADVALUE, "expected nil");
    expect_fail("c4 01 61", rd_str, PD_EBADVALUE, "expected a string");
}

/* ---- containers ----------------------------------------------------------- */

static void expect_container(const char *hex, bool map, uint32_t want) {
    input in = in_hex(hex);
    mp_reader r = rd(&in);
    uint32_t n = 12345;
    cr_expect_eq(mpr_peek(&r), map ? MPR_MAP : MPR_ARRAY, "%s", hex);
    cr_expect(map ? mpr_map(&r, &n) : mpr_array(&r, &n), "%s: %s", hex, r.why);
    cr_expect_eq(n, want, "%s: count %u", hex, n);
    for (uint32_t i = 0; i < (map ? 2 * n : n); i++) cr_expect(mpr_skip(&r), "%s", hex);
    cr_expect_eq(mpr_remaining(&r), 0, "%s", hex);
    r = rd(&in);
    cr_expect(mpr_skip(&r), "%s", hex);
    cr_expect_eq(mpr_remaining(&r), 0, "%s", hex);
    in_free(&in);
}

Test(mpread, arrays_each_format) {
    expect_container("90", false, 0);
    expect_container("92 01 a1 61", false, 2);
    expect_container("9f 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e", false, 15);
    expect_container("dc 00 00", false, 0);
    expect_container("dc 00 02 c0 c3", false, 2);
    expect_container("dd 00 00 00 00", false, 0);
    expect_container("dd 00 00 00 02 90 80", false, 2);
}

Test(mpread, maps_each_format) {
    expect_container("80", true, 0);
    expect_container("81 a1 6b 01", true, 1);
    expect_container("8f 00 00 01 01 02 02 03 03 04 04 05 05 06 06 07 07 08 08 09 09"
                     " 0a 0a 0b 0b 0c 0c 0d 0d 0e 0e", true, 15);
    expect_container("de 00 01 a1 6b 91 01", true, 1);
    expect_container("df 00 00 00 01 a1 6b 81 a1 6a c0", true, 1);
}

Test(mpread, nested_values_skipped_whole) {
    /* {"a": [1, {"b": nil}], "c": "d"} followed by 0x07 */
    input in = in_hex("82 a1 61 92 01 81 a1 62 c0 a1 63 a1 64 07");
    mp_reader r = rd(&in);
    pd_str raw;
    cr_assert(mpr_raw(&r, &raw));
    cr_expect_eq(raw.n, in.n - 1);
    cr_expect_eq((const uint8_t *)raw.p, in.b);
    int64_t v;
    cr_expect(mpr_int(&r, &v));
    cr_expect_eq(v, 7);
    in_free(&in);
}

/* ---- bin and ext ------------------------------------------------------------ */

static void expect_skip_kind(const char *hex, mpr_kind kind, size_t span) {
    input in = in_hex(hex);
    mp_reader r = rd(&in);
    pd_str raw;
    cr_expect_eq(mpr_peek(&r), kind, "%s", hex);
    cr_expect(mpr_raw(&r, &raw), "%s: %s", hex, r.why);
    cr_expect_eq(raw.n, span, "%s: span %u", hex, raw.n);
    cr_expect_eq(mpr_remaining(&r), in.n - span, "%s", hex);
    in_free(&in);
}

Test(mpread, bin_each_format) {
    expect_skip_kind("c4 00", MPR_BIN, 2);
    expect_skip_kind("c4 02 ab cd 01", MPR_BIN, 4);
    expect_skip_kind("c5 00 02 ab cd 01", MPR_BIN, 5);
    expect_skip_kind("c6 00 00 00 02 ab cd 01", MPR_BIN, 7);
}

Test(mpread, ext_each_format) {
    expect_skip_kind("d4 01 aa 01", MPR_EXT, 3);
    expect_skip_kind("d5 01 aa bb 01", MPR_EXT, 4);
    expect_skip_kind("d6 ff 00 00 00 00 01", MPR_EXT, 6); /* timestamp32 */
    expect_skip_kind("d7 01 00 00 00 00 00 00 00 00 01", MPR_EXT, 10);
    expect_skip_kind("d8 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01", MPR_EXT, 18);
    expect_skip_kind("c7 00 05 01", MPR_EXT, 3);
    expect_skip_kind("c7 02 05 aa bb 01", MPR_EXT, 5);
    expect_skip_kind("c8 00 02 05 aa bb 01", MPR_EXT, 6);
    expect_skip_kind("c9 00 00 00 02 05 aa bb 01", MPR_EXT, 8);
}

/* Every byte classifies as the msgpack spec says (independent table). */
Test(mpread, peek_classifies_every_first_byte) {
    for (int b = 0; b < 256; b++) {
        mpr_kind want;
        if (b <= 0x7f || b >= 0xe0 || (b >= 0xcc && b <= 0xd3)) want = MPR_INT;
        else if (b <= 0x8f || b == 0xde || b == 0xdf) want = MPR_MAP;
        else if (b <= 0x9f || b == 0xdc || b == 0xdd) want = MPR_ARRAY;
        else if (b <= 0xbf || (b >= 0xd9 && b <= 0xdb)) want = MPR_STR;
        else if (b == 0xc0) want = MPR_NIL;
        else if (b == 0xc2 || b == 0xc3) want = MPR_BOOL;
        else if (b >= 0xc4 && b <= 0xc6) want = MPR_BIN;
        else if ((b >= 0xc7 && b <= 0xc9) || (b >= 0xd4 && b <= 0xd8)) want = MPR_EXT;
        else if (b == 0xca || b == 0xcb) want = MPR_FLOAT;
        else want = MPR_INVALID;
        uint8_t byte = (uint8_t)b;
        mp_reader r;
        mpr_init(&r, &byte, 1);
        cr_expect_eq(mpr_peek(&r), want, "byte %02x: %d want %d", b, mpr_peek(&r), want);
    }
}

/* ---- hostile input ----------------------------------------------------------- */

/* One value using every format the reader knows. */
static const char *const every_format =
    "de 00 0c"
    " a3 69 6e 74 9f 00 7f ff e0 cc ff cd ff ff ce ff ff ff ff"
    "   cf 00 00 00 00 00 00 00 01 d0 80 d1 80 00 d2 80 00 00 00"
    "   d3 80 00 00 00 00 00 00 00 c0 c2 c3"
    " d9 03 73 74 72 dc 00 04 a0 d9 01 61 da 00 01 62 db 00 00 00 01 63"
    " a3 62 69 6e 93 c4 01 00 c5 00 01 00 c6 00 00 00 01 00"
    " a3 65 78 74 98 d4 01 00 d5 01 00 00 d6 01 00 00 00 00"
    "   d7 01 00 00 00 00 00 00 00 00"
    "   d8 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
    "   c7 01 01 00 c8 00 01 01 00 c9 00 00 00 01 01 00"
    " a3 66 6c 74 92 ca 00 00 00 00 cb 00 00 00 00 00 00 00 00"
    " a3 61 72 32 dd 00 00 00 02 90 91 90"
    " a3 6d 61 70 df 00 00 00 01 a0 de 00 01 a0 80"
    " a1 61 c0 a1 62 c2 a1 63 c3"
    " a1 64 81 a1 65 92 01 02"
    " a0 a0";

Test(mpread, every_truncation_fails_cleanly) {
    input full = in_hex(every_format);
    mp_reader r = rd(&full);
    cr_assert(mpr_skip(&r), "%s", r.why);
    cr_assert_eq(mpr_remaining(&r), 0);
    for (size_t cut = 0; cut < full.n; cut++) {
        /* Exactly `cut` bytes on the heap: ASan catches any over-read. */
        input part = in_bytes(full.b, cut);
        r = rd(&part);
        cr_expect_not(mpr_skip(&r), "prefix of %zu bytes accepted", cut);
        cr_expect_eq(r.err, PD_EBADMSGPACK, "prefix %zu: err %d (%s)", cut, r.err, r.why);
        cr_expect(r.p == r.end, "prefix %zu: reader not at its end after failure", cut);
        in_free(&part);
    }
    in_free(&full);
}

Test(mpread, every_truncation_fails_in_typed_walk) {
    /* {"type": "connect", "n": -5, "ok": true, "l": [nil]} */
    input full = in_hex("84 a4 74 79 70 65 a7 63 6f 6e 6e 65 63 74 a1 6e d0 fb"
                        " a2 6f 6b c3 a1 6c 91 c0");
    for (size_t cut = 0; cut <= full.n; cut++) {
        input part = in_bytes(full.b, cut);
        mp_reader r = rd(&part);
        uint32_t n = 0, an = 0;
        pd_str k, v;
        int64_t i = 0;
        bool b = false;
        bool ok = mpr_map(&r, &n) && mpr_str(&r, &k) && mpr_str(&r, &v) &&
                  mpr_str(&r, &k) && mpr_int(&r, &i) && mpr_str(&r, &k) &&
                  mpr_bool(&r, &b) && mpr_str(&r, &k) && mpr_array(&r, &an) && mpr_nil(&r);
        if (cut == full.n) {
            cr_expect(ok, "%s", r.why);
            cr_expect_eq(n, 4);
            cr_expect(pd_str_eqc(v, "connect"));
            cr_expect_eq(i, -5);
            cr_expect(b);
            cr_expect_eq(an, 1);
        } else {
            cr_expect_not(ok, "prefix of %zu bytes accepted", cut);
            cr_expect_eq(r.err, PD_EBADMSGPACK, "prefix %zu: %s", cut, r.why);
        }
        in_free(&part);
    }
    in_free(&full);
}

Test(mpread, huge_declared_lengths_refused) {
    expect_fail("dd ff ff ff ff", rd_skip, PD_EBADMSGPACK, "declared length exceeds message");
    expect_fail("dd ff ff ff ff", rd_array, PD_EBADMSGPACK, "declared length exceeds message");
    expect_fail("df ff ff ff ff", rd_skip, PD_EBADMSGPACK, "declared length exceeds message");
    expect_fail("df ff ff ff ff", rd_map, PD_EBADMSGPACK, "declared length exceeds message");
    expect_fail("dc ff ff", rd_skip, PD_EBADMSGPACK, "declared length exceeds message");
    expect_fail("dc ff ff", rd_array, PD_EBADMSGPACK, "declared length exceeds message");
    expect_fail("de ff ff", rd_map, PD_EBADMSGPACK, "declared length exceeds message");
    expect_fail("db ff ff ff ff", rd_skip, PD_EBADMSGPACK, "truncated message");
    expect_fail("db ff ff ff ff", rd_str, PD_EBADMSGPACK, "truncated message");
    expect_fail("da ff ff 61", rd_str, PD_EBADMSGPACK, "truncated message");
    expect_fail("c6 ff ff ff ff", rd_skip, PD_EBADMSGPACK, "truncated message");
    expect_fail("c9 ff ff ff ff 01", rd_skip, PD_EBADMSGPACK, "truncated message");
    /* The same headers inside an otherwise valid value. */
    expect_fail("92 01 dd ff ff ff ff", rd_skip, PD_EBADMSGPACK, "declared length exceeds");
    expect_fail("81 a1 6b df ff ff ff ff", rd_skip, PD_EBADMSGPACK, "declared length exceeds");
    expect_fail("81 a1 6b c6 ff ff ff ff 00", rd_skip, PD_EBADMSGPACK, "truncated message");
}

Test(mpread, count_one_above_what_remains_refused) {
    /* Each element takes at least one byte (a map entry two), so a count
     * the remaining bytes cannot hold is refused at the header. */
    expect_fail("92 01", rd_array, PD_EBADMSGPACK, "declared length exceeds message");
    expect_fail("dd 00 00 00 02 01", rd_array, PD_EBADMSGPACK, "declared length exceeds");
    expect_fail("82 a1 61 01", rd_map, PD_EBADMSGPACK, "declared length exceeds message");
    expect_fail("a4 61 62 63", rd_str, PD_EBADMSGPACK, "truncated message");
    expect_fail("c4 03 00 00", rd_skip, PD_EBADMSGPACK, "truncated message");
    expect_fail("d6 ff 00 00 00", rd_skip, PD_EBADMSGPACK, "truncated message");
    /* A count that fits the bytes but whose elements do not. */
    expect_fail("92 a5 61 62", rd_skip, PD_EBADMSGPACK, "truncated message");
}

Test(mpread, c1_refused_everywhere) {
    expect_fail("c1", rd_skip, PD_EBADMSGPACK, "invalid msgpack byte");
    expect_fail("c1", rd_int, PD_EBADMSGPACK, "invalid msgpack byte");
    expect_fail("c1", rd_str, PD_EBADMSGPACK, "invalid msgpack byte");
    expect_fail("c1", rd_map, PD_EBADMSGPACK, "invalid msgpack byte");
    expect_fail("91 c1", rd_skip, PD_EBADMSGPACK, "invalid msgpack byte");
    expect_fail("81 a1 6b c1", rd_skip, PD_EBADMSGPACK, "invalid msgpack byte");
    uint8_t b = 0xc1;
    mp_reader r;
    mpr_init(&r, &b, 1);
    cr_expect_eq(mpr_peek(&r), MPR_INVALID);
}

Test(mpread, empty_input) {
    mp_reader r;
    mpr_init(&r, NULL, 0);
    cr_expect_eq(mpr_peek(&r), MPR_END);
    cr_expect_eq(mpr_remaining(&r), 0);
    cr_expect_not(mpr_skip(&r));
    cr_expect_eq(r.err, PD_EBADMSGPACK);
    cr_expect_str_eq(r.why, "truncated message");
}

/* n nested one-element arrays around 0x01, or maps {"k": ...} if map. */
static input nested(int n, bool map) {
    size_t len = (size_t)n * (map ? 3 : 1) + 1;
    uint8_t *b = malloc(len);
    cr_assert_not_null(b);
    for (int i = 0; i < n; i++) {
        if (map) memcpy(b + 3 * i, "\x81\xa1k", 3);
        else b[i] = 0x91;
    }
    b[len - 1] = 0x01;
    return (input){b, len};
}

Test(mpread, nesting_limit) {
    for (int map = 0; map < 2; map++) {
        input ok = nested(MPR_MAX_DEPTH, map);
        mp_reader r = rd(&ok);
        cr_expect(mpr_skip(&r), "%d levels refused: %s", MPR_MAX_DEPTH, r.why);
        cr_expect_eq(mpr_remaining(&r), 0);
        in_free(&ok);

        input deep = nested(MPR_MAX_DEPTH + 1, map);
        r = rd(&deep);
        cr_expect_not(mpr_skip(&r), "%d levels accepted", MPR_MAX_DEPTH + 1);
        cr_expect_eq(r.err, PD_ETOOLARGE);
        cr_expect_str_eq(r.why, "nesting too deep");
        in_free(&deep);
    }
}

Test(mpread, very_deep_input_refused_without_recursion) {
    /* 1 MiB of 0x91: a recursive reader would exhaust the stack. */
    input deep = nested(1 << 20, false);
    mp_reader r = rd(&deep);
    pd_str raw;
    cr_expect_not(mpr_raw(&r, &raw));
    cr_expect_eq(r.err, PD_ETOOLARGE);
    in_free(&deep);
}

Test(mpread, errors_are_sticky) {
    input in = in_hex("c1 01 a1 61 80");
    mp_reader r = rd(&in);
    int64_t v = 77;
    cr_expect_not(mpr_skip(&r));
    cr_expect_eq(r.err, PD_EBADMSGPACK);
    char why[sizeof r.why];
    memcpy(why, r.why, sizeof why);
    /* Valid data follows, but the reader refuses all further work. */
    cr_expect_eq(mpr_peek(&r), MPR_INVALID);
    cr_expect_eq(mpr_remaining(&r), 0);
    cr_expect_not(mpr_int(&r, &v));
    cr_expect_eq(v, 77, "a failed read must not write its output");
    cr_expect_not(mpr_skip(&r));
    /* A later, different failure does not replace the first one. */
    cr_expect_not(mpr_fail(&r, PD_EBADVALUE, "second"));
    cr_expect_eq(r.err, PD_EBADMSGPACK);
    cr_expect_str_eq(r.why, why);
    in_free(&in);
}

Test(mpread, wrong_kind_error_is_sticky_too) {
    input in = in_hex("01 02");
    mp_reader r = rd(&in);
    pd_str s;
    int64_t v;
    cr_expect_not(mpr_str(&r, &s));
    cr_expect_eq(r.err, PD_EBADVALUE);
    cr_expect_not(mpr_int(&r, &v));
    cr_expect_eq(r.err, PD_EBADVALUE);
    cr_expect_str_eq(r.why, "expected a string");
    in_free(&in);
}

Test(mpread, fail_returns_false_and_records_first) {
    mp_reader r;
    mpr_init(&r, "\x01", 1);
    cr_expect_not(mpr_fail(&r, PD_EBADID, "first"));
    cr_expect_eq(r.err, PD_EBADID);
    cr_expect_str_eq(r.why, "first");
    cr_expect_eq(mpr_remaining(&r), 0);
}

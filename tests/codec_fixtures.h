/* codec_fixtures.h - helpers shared by the codec tests (test_codec.c,
 * test_codec_hostile.c, test_codec_fuzz.c): messages copied to a heap block
 * of exactly their size, raw msgpack values, map editing (map_set) and
 * valid events and queries made by the encoders.
 *
 * Each tests/test_*.c is built alone as its own executable, so the helpers
 * are static inline (unused ones do not warn) and the header is included
 * once per binary; that is also why it may define __asan_default_options:
 * under ASan every codec test binary refuses any allocation above 256 MiB. */
#ifndef PD_TESTS_CODEC_FIXTURES_H
#define PD_TESTS_CODEC_FIXTURES_H

#include "wire/codec.h"
#include <criterion/criterion.h>
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
/* ASan's own interface; the reserved name is the sanitizer's, not ours. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "max_allocation_size_mb=256"; }
#endif

/* ---- helpers: inputs, raw values, map editing ----------------------------------- */

#define S(lit) {(lit), sizeof(lit) - 1}

/* A message on the heap, exactly as long as its bytes. */
typedef struct {
    uint8_t *b;
    size_t n;
} msg;

static inline msg msg_bytes(const void *p, size_t n) {
    msg m = {malloc(n ? n : 1), n};
    cr_assert_not_null(m.b);
    if (n) memcpy(m.b, p, n);
    return m;
}

static inline msg msg_sb(const msgpack_sbuffer *sb) { return msg_bytes(sb->data, sb->size); }

static inline void msg_free(msg *m) {
    free(m->b);
    m->b = NULL;
}

static inline int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* One encoded value (or any bytes), built on the stack. */
typedef struct {
    uint8_t b[8192];
    size_t n;
} raw;

static inline int raw_write(void *data, const char *buf, size_t len) {
    raw *r = data;
    cr_assert(r->n + len <= sizeof r->b);
    memcpy(r->b + r->n, buf, len);
    r->n += len;
    return 0;
}

static inline msgpack_packer raw_packer(raw *r) {
    msgpack_packer pk;
    r->n = 0;
    msgpack_packer_init(&pk, r, raw_write);
    return pk;
}

static inline raw raw_strn(const char *p, size_t n) {
    raw r;
    msgpack_packer pk = raw_packer(&r);
    msgpack_pack_str_with_body(&pk, p, n);
    return r;
}

/* A string of n copies of c. */
static inline raw raw_rep(char c, size_t n) {
    char buf[4096];
    cr_assert(n <= sizeof buf);
    memset(buf, c, n);
    return raw_strn(buf, n);
}

static inline raw raw_hex(const char *hex) {
    raw r = {.n = 0};
    for (const char *s = hex; *s; s++) {
        if (*s == ' ') continue;
        cr_assert(hexval(s[0]) >= 0 && hexval(s[1]) >= 0, "bad hex in test: %s", hex);
        r.b[r.n++] = (uint8_t)(hexval(s[0]) << 4 | hexval(s[1]));
        s++;
    }
    return r;
}

static inline msg msg_hex(const char *hex) {
    raw r = raw_hex(hex);
    return msg_bytes(r.b, r.n);
}

/* Rewrites the map in m: key k set to the encoded value v (replaced in
 * place, or appended), or dropped when v is NULL. Frees m. */
static inline msg map_set(msg m, const char *k, const raw *v) {
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

/* ---- helpers: valid events ------------------------------------------------------ */

static const pd_sync_conn sync3[3] = {
    {S("c1"), S("alice"), S("web")},
    {S("c2"), S("bob"), S("mobile")},
    {S("c3"), S("alice"), S("desktop")},
};

/* An event of type t with every field set to a valid value. */
static inline pd_event base_event(pd_event_type t) {
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

static inline msg encode_event(const pd_event *ev) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_event_encode(&sb, ev, ev->type == PD_EV_SYNC ? sync3 : NULL, 3);
    msg m = msg_sb(&sb);
    msgpack_sbuffer_destroy(&sb);
    return m;
}

static inline msg event_msg(pd_event_type t) {
    pd_event ev = base_event(t);
    return encode_event(&ev);
}

static inline msg query_msg(const pd_query *q, const pd_str *users, uint32_t n) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_query_encode(&sb, q, users, n);
    msg m = msg_sb(&sb);
    msgpack_sbuffer_destroy(&sb);
    return m;
}

static const pd_str users3[3] = {S("alice"), S("bob"), S("carol@example.org")};

static inline msg get_msg(void) {
    pd_query q = {.type = PD_Q_GET, .viewer = S("bob")};
    return query_msg(&q, users3, 3);
}

/* A sync event whose single entry is the given map. */
static inline msg sync_with_entry(const char *entry_hex) {
    raw conns = raw_hex(entry_hex);
    raw arr = raw_hex("91");
    memcpy(arr.b + 1, conns.b, conns.n);
    arr.n += conns.n;
    return map_set(event_msg(PD_EV_SYNC), "conns", &arr);
}

/* A map {"k": "<n bytes>"} encoded, n chosen so the total is `total`. */
static inline raw meta_of_size(size_t total) {
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

/* A get request for n distinct valid users. */
static inline msg get_n_users(uint32_t n) {
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

#endif /* PD_TESTS_CODEC_FIXTURES_H */

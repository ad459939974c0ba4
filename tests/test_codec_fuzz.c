/* test_codec_fuzz.c - random and mutated input through every decoder of
 * codec.h: random bytes, a "token soup" of our keys and values, and
 * mutations of valid messages of every kind. Whatever a decoder accepts
 * must keep its promises (ids valid, strings inside the input and within
 * their limits); whatever it refuses must carry a valid code and a
 * printable message. The seed is printed; PD_FUZZ_SEED replays it. */
#include "codec_fixtures.h"
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

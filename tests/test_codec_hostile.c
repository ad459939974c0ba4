/* test_codec_hostile.c - hostile container sizes through codec.h: headers
 * declaring huge strings, arrays and maps ("dd ff ff ff ff" and its class),
 * at the top level and nested in fields, are refused by every decoder
 * without allocating; and decoding a valid message allocates nothing.
 *
 * Under ASan the binary counts allocations through the sanitizer's malloc
 * hook, which is how "decoding allocates nothing" is checked for real,
 * including allocations that would be freed before decode returns; it also
 * refuses any allocation above 256 MiB (codec_fixtures.h). */
#include "base/alloc.h"
#include "codec_fixtures.h"
#include <criterion/criterion.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef TEST_ASAN
/* ASan's own interface (gcc ships no allocator_interface.h); the reserved
 * names are the sanitizer's, not ours. */
int __sanitizer_install_malloc_and_free_hooks(void (*m)(const volatile void *, size_t),
                                              void (*f)(const volatile void *));

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

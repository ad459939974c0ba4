/* it_malformed.c - a node keeps answering, unchanged, after a flood of
 * 10,000 malformed messages on its event and query subjects. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include "harness.h"

static h_nats ns;
static h_node node;
static natsConnection *nc;

static void setup(void) {
    h_nats_start(&ns);
    h_node_start(&node, &ns, "m1", NULL);
    nc = h_connect(&ns);
}

static void teardown(void) {
    natsConnection_Destroy(nc);
    h_node_stop_clean(&node);
    h_nats_stop(&ns);
}

TestSuite(malformed, .init = setup, .fini = teardown, .timeout = 120);

/* Bad messages of several kinds: random bytes, huge declared sizes, deep
 * nesting, valid maps with wrong field types, truncated valid events. */
static size_t make_bad(unsigned i, unsigned *seed, uint8_t *buf, size_t cap) {
    static const char *const crafted[] = {
        "\xdd\xff\xff\xff\xff", "\xdf\xff\xff\xff\xff", "\xdb\xff\xff\xff\xff",
        "\xc6\xff\xff\xff\xff", "\x81\xa4type\xa7" "connect",
        "\x82\xa4type\xa6status\xa4user\x01",
        "\x83\xa4type\xa7" "connect\xa6server\xc0\xa4" "conn\x90", "\xc1", "",
    };
    size_t n;
    switch (i % 4) {
    case 0:
        n = (size_t)(rand_r(seed) % 64);
        for (size_t k = 0; k < n; k++) buf[k] = (uint8_t)rand_r(seed);
        return n;
    case 1: {
        const char *c = crafted[(i / 4) % (sizeof crafted / sizeof crafted[0])];
        n = strlen(c) ? strlen(c) : 0;
        if ((i / 4) % (sizeof crafted / sizeof crafted[0]) < 4) n = 5;
        memcpy(buf, c, n);
        return n;
    }
    case 2:
        /* 40 nested arrays then nothing. */
        memset(buf, 0x91, 40);
        return 40;
    default: {
        pd_event ev = {.type = PD_EV_CONNECT};
        ev.server = pd_str_c("s1");
        ev.conn = pd_str_c("c1");
        ev.user = pd_str_c("mallory");
        ev.device = pd_str_c("web");
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        pd_event_encode(&sb, &ev, NULL, 0);
        n = sb.size - 1 - (size_t)(rand_r(seed) % 8); /* always truncated */
        memcpy(buf, sb.data, n < cap ? n : cap);
        msgpack_sbuffer_destroy(&sb);
        return n;
    }
    }
}

Test(malformed, ten_thousand_bad_messages) {
    unsigned seed = 12345;
    uint8_t buf[256];
    pd_reply rep;
    pd_event ok = {.type = PD_EV_CONNECT};
    ok.server = pd_str_c("s1");
    ok.conn = pd_str_c("good");
    ok.user = pd_str_c("alice");
    ok.device = pd_str_c("web");
    cr_assert(h_event(nc, "m1", &ok, &rep) && rep.ok);

    static const char *const subjects[] = {
        "presence.events.m1", "presence.query.get", "presence.query.devices",
        "presence.query.online", "presence.query.cluster",
    };
    for (unsigned i = 0; i < 10000; i++) {
        size_t n = make_bad(i, &seed, buf, sizeof buf);
        const char *subj = subjects[i % 5 == 4 ? 0 : i % 5];
        natsConnection_Publish(nc, subj, buf, (int)n);
    }
    natsConnection_Flush(nc);

    /* Still answering, and the flood changed nothing. */
    pd_view v;
    cr_assert(h_get(nc, "alice", NULL, &v, NULL, 0), "node stopped answering");
    cr_assert_eq(v.status, PD_PUB_ONLINE);
    cr_assert_eq(v.devices, 1);
    cr_assert(h_get(nc, "mallory", NULL, &v, NULL, 0));
    cr_assert_eq(v.status, PD_PUB_OFFLINE, "no truncated connect was applied");
    cr_assert(h_node_running(&node));
    /* A bad request right after the flood still gets a proper error. */
    cr_assert(h_raw_request(nc, "presence.events.m1", "\xc1", 1, &rep));
    cr_assert(!rep.ok);
    cr_assert_str_eq(rep.code, "bad_msgpack");
}

/* fuzz_query.c - libFuzzer target: the query path (docs/protocol.md section 4):
 * decoding each query kind (common/wire/codec_query.c), answering it from a
 * populated node's model as node/node_query.c does, and encoding the reply.
 *
 * Input: one request payload; it is decoded as each of the four kinds
 * (get, devices, online, cluster: the kind comes from the subject).
 * Invariants checked:
 * - a refusal carries a valid status and message;
 * - an accepted request keeps its promises (ids valid, inside the input,
 *   limits held) and round-trips: decode -> encode -> decode -> encode
 *   gives the same bytes twice;
 * - answering never changes the model (digest), and the reply decodes
 *   into what was asked: one view per requested user in order, never
 *   `invisible` to anyone but the user, as many devices as the model
 *   has; online pages hold at most `limit` users, each online, none twice
 *   over the whole scan, all of them when the scan starts at the front;
 *   the cluster reply lists every node the replica reports. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fuzz_common.h"
#include "model/query_answer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static pd_repl *R;          /* the node answering, built once */
static uint64_t online_total;

static void setup(void) {
    char conn[16], user[16];
    if (R) return;
    R = fz_repl_new(FZ_SELF, NULL, FZ_NOW);
    fz_populate(R, FZ_NOW);
    fz_prime(R, FZ_NOW + 20);
    for (int i = 0; i < 60; i++) {
        pd_apply_result res;
        pd_err err = {0};
        snprintf(conn, sizeof conn, "q%d", i);
        snprintf(user, sizeof user, "u%d", i % 45);
        pd_event ev = {.type = PD_EV_CONNECT, .server = PD_STR_LIT("s4"), .conn = pd_str_c(conn),
                       .user = pd_str_c(user), .device = PD_STR_LIT("mobile")};
        FZ_CHECK(pd_repl_local(R, &ev, FZ_NOW + 30, &res, &err) == PD_OK, "setup: %s", err.msg);
        if (i % 7 == 0) {
            pd_event st = {.type = PD_EV_STATUS, .user = pd_str_c(user),
                           .status = (pd_chosen)(i % 4)};
            FZ_CHECK(pd_repl_local(R, &st, FZ_NOW + 31, &res, &err) == PD_OK, "setup: %s",
                     err.msg);
        }
    }
    pd_repl_flush(R);
    fz_check_model(pd_repl_model(R));
}

/* ---- request checks and round trip ---------------------------------------------------- */

static uint32_t collect_users(const pd_query *q, pd_str *users, const uint8_t *data,
                              size_t size) {
    mp_reader it;
    pd_str u;
    uint32_t n = 0;
    pd_query_users_iter(q, &it);
    while (n <= PD_QUERY_USERS_MAX && pd_query_next_user(&it, &u)) {
        FZ_CHECK(pd_id_valid(u.p, u.n) && fz_within(u, data, size), "get: bad user id");
        users[n++] = u;
    }
    FZ_CHECK(n == q->nusers, "get: %u users walked of %u", n, q->nusers);
    return n;
}

static void check_request(const pd_query *q, pd_str *users, const uint8_t *data, size_t size) {
    switch (q->type) {
    case PD_Q_GET:
        FZ_CHECK(q->nusers <= PD_QUERY_USERS_MAX, "get: %u users", q->nusers);
        FZ_CHECK(q->viewer.n == 0 || (pd_id_valid(q->viewer.p, q->viewer.n) &&
                                      fz_within(q->viewer, data, size)), "get: viewer");
        collect_users(q, users, data, size);
        break;
    case PD_Q_DEVICES:
        FZ_CHECK(pd_id_valid(q->user.p, q->user.n) && fz_within(q->user, data, size),
                 "devices: user");
        break;
    case PD_Q_ONLINE:
        FZ_CHECK(q->limit >= 1 && q->limit <= PD_QUERY_LIMIT_MAX, "online: limit %u", q->limit);
        FZ_CHECK(q->cursor.n <= PD_CURSOR_MAX && fz_within(q->cursor, data, size),
                 "online: cursor");
        break;
    default:
        break;
    }
}

static void encode_request(msgpack_sbuffer *sb, const pd_query *q, pd_str *scratch) {
    mp_reader it;
    uint32_t n = 0;
    if (q->type == PD_Q_GET) {
        pd_query_users_iter(q, &it);
        while (n < PD_QUERY_USERS_MAX && pd_query_next_user(&it, &scratch[n])) n++;
    }
    pd_query_encode(sb, q, scratch, n);
}

static void round_trip(const pd_query *q) {
    static pd_str a_users[PD_QUERY_USERS_MAX], b_users[PD_QUERY_USERS_MAX];
    msgpack_sbuffer a, b;
    pd_query back;
    pd_err err = {0};
    msgpack_sbuffer_init(&a);
    msgpack_sbuffer_init(&b);
    encode_request(&a, q, a_users);
    pd_status s = pd_query_decode(q->type, a.data, a.size, &back, &err);
    FZ_CHECK(s == PD_OK, "re-encoded query %d refused: %s", (int)q->type, err.msg);
    encode_request(&b, &back, b_users);
    fz_check_same("query", &a, &b);
    msgpack_sbuffer_destroy(&a);
    msgpack_sbuffer_destroy(&b);
}

/* ---- answers (common/model/query_answer.c, as the node) --------------------------------- */

typedef struct {
    pd_str users[PD_QUERY_LIMIT_MAX + 64];
    uint32_t n;
} page;

static void collect_user(void *ud, pd_str user) {
    page *p = ud;
    FZ_CHECK(p->n < sizeof p->users / sizeof p->users[0], "online: page overflows");
    p->users[p->n++] = user;
}

/* Counts the nodes the replica lists, each with a valid id. */
static void count_node(void *ud, const pd_node_view *nv) {
    FZ_CHECK(pd_id_valid(nv->node.p, nv->node.n), "cluster: node id");
    (*(uint32_t *)ud)++;
}

static uint64_t now_q(void) { return FZ_NOW + 40; }

/* ---- reply checks -------------------------------------------------------------------- */

static bool key_is(mp_reader *r, const char *k) {
    pd_str s;
    return pd_read_key(r, &s) && pd_str_eqc(s, k);
}

static void check_get(const pd_query *q, const msgpack_sbuffer *sb, const pd_str *users,
                      const pd_freshness *fr) {
    const pd_model *m = pd_repl_model(R);
    mp_reader r;
    uint32_t n, k;
    pd_err err = {0};
    mpr_init(&r, sb->data, sb->size);
    FZ_CHECK(mpr_map(&r, &k) && k == 2 && key_is(&r, "users") && mpr_array(&r, &n),
             "get reply header");
    FZ_CHECK(n == q->nusers, "get reply: %u views for %u users", n, q->nusers);
    for (uint32_t i = 0; i < n; i++) {
        pd_view v;
        FZ_CHECK(pd_view_decode(&r, &v, &err) == PD_OK, "get reply view: %s", err.msg);
        FZ_CHECK(pd_str_eq(v.user, users[i]), "get reply: view %u is of another user", i);
        FZ_CHECK(v.status != PD_PUB_INVISIBLE || pd_str_eq(q->viewer, v.user),
                 "get reply: invisible shown to someone else");
        /* An invisible user's devices are hidden from everyone else. */
        pd_view self;
        pd_model_view(m, v.user, v.user, &self);
        bool hidden = self.status == PD_PUB_INVISIBLE && !pd_str_eq(q->viewer, v.user);
        FZ_CHECK(v.devices == (hidden ? 0 : pd_model_devices_of(m, v.user, NULL, NULL)),
                 "get reply: device count");
        FZ_CHECK(v.stale == (v.devices > 0 && pd_query_user_stale(m, v.user, fr)),
                 "get reply: stale");
    }
    int64_t as_of;
    FZ_CHECK(key_is(&r, "as_of") && mpr_int(&r, &as_of) && (uint64_t)as_of == fr->as_of,
             "get reply: as_of");
    FZ_CHECK(mpr_remaining(&r) == 0, "get reply: trailing bytes");
}

static void check_devices(const pd_query *q, const msgpack_sbuffer *sb, const pd_freshness *fr) {
    mp_reader r;
    uint32_t n, k;
    pd_str u;
    pd_err err = {0};
    bool stale = pd_query_user_stale(pd_repl_model(R), q->user, fr), st = false;
    int64_t as_of;
    mpr_init(&r, sb->data, sb->size);
    FZ_CHECK(mpr_map(&r, &k) && k == 3u + stale && key_is(&r, "user") && mpr_str(&r, &u) &&
                 pd_str_eq(u, q->user) && key_is(&r, "devices") && mpr_array(&r, &n),
             "devices reply header");
    FZ_CHECK(n == pd_model_devices_of(pd_repl_model(R), q->user, NULL, NULL),
             "devices reply: count");
    for (uint32_t i = 0; i < n; i++) {
        pd_device_view d;
        FZ_CHECK(pd_device_view_decode(&r, &d, &err) == PD_OK, "devices reply: %s", err.msg);
        FZ_CHECK(pd_id_valid(d.conn.p, d.conn.n) && pd_id_valid(d.server.p, d.server.n) &&
                     pd_id_valid(d.node.p, d.node.n), "devices reply: ids");
    }
    FZ_CHECK(key_is(&r, "as_of") && mpr_int(&r, &as_of) && (uint64_t)as_of == fr->as_of,
             "devices reply: as_of");
    if (stale) FZ_CHECK(key_is(&r, "stale") && mpr_bool(&r, &st) && st, "devices reply: stale");
    FZ_CHECK(mpr_remaining(&r) == 0, "devices reply: trailing bytes");
}

static bool is_online(pd_str user) {
    pd_view v;
    pd_model_view(pd_repl_model(R), user, (pd_str){NULL, 0}, &v);
    return v.status != PD_PUB_OFFLINE;
}

static int cmp_str(const void *a, const void *b) {
    const pd_str *x = a, *y = b;
    uint32_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->p, y->p, n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* Pages through the rest of the scan from cursor: no user twice, all online. */
static void check_scan(uint64_t cursor, uint32_t limit) {
    static pd_str seen[4096];
    static page pg;
    const pd_model *m = pd_repl_model(R);
    uint32_t nseen = 0, pages = 0;
    bool from_start = cursor == 0;
    do {
        pg.n = 0;
        cursor = pd_model_scan_online(m, cursor, limit, collect_user, &pg);
        FZ_CHECK(pg.n <= limit, "online: a page of %u users, limit %u", pg.n, limit);
        for (uint32_t i = 0; i < pg.n; i++) {
            FZ_CHECK(is_online(pg.users[i]), "online: an offline user listed");
            FZ_CHECK(nseen < sizeof seen / sizeof seen[0], "online: too many users");
            seen[nseen++] = pg.users[i];
        }
        FZ_CHECK(++pages < 100000, "online: the scan does not end");
    } while (cursor != 0);
    qsort(seen, nseen, sizeof seen[0], cmp_str);
    for (uint32_t i = 1; i < nseen; i++)
        FZ_CHECK(cmp_str(&seen[i - 1], &seen[i]) != 0, "online: a user listed twice");
    if (from_start) FZ_CHECK(nseen == online_total, "online: %u users listed of %llu", nseen,
                             (unsigned long long)online_total);
}

static void check_online(const pd_query *q, const msgpack_sbuffer *sb, uint64_t cursor) {
    mp_reader r;
    uint32_t n, k;
    pd_str u, c;
    mpr_init(&r, sb->data, sb->size);
    FZ_CHECK(mpr_map(&r, &k) && (k == 1 || k == 2) && key_is(&r, "users") && mpr_array(&r, &n),
             "online reply header");
    FZ_CHECK(n <= q->limit, "online reply: %u users, limit %u", n, q->limit);
    for (uint32_t i = 0; i < n; i++)
        FZ_CHECK(mpr_str(&r, &u) && is_online(u), "online reply: user %u", i);
    if (k == 2) {
        uint64_t next;
        FZ_CHECK(key_is(&r, "cursor") && mpr_str(&r, &c) && pd_query_cursor_parse(c, &next) && next,
                 "online reply: cursor");
    }
    FZ_CHECK(mpr_remaining(&r) == 0, "online reply: trailing bytes");
    check_scan(cursor, q->limit);
}

static void check_cluster(const msgpack_sbuffer *sb, uint32_t nodes) {
    mp_reader r;
    uint32_t n, k;
    pd_str self;
    mpr_init(&r, sb->data, sb->size);
    FZ_CHECK(mpr_map(&r, &k) && k == 2 && key_is(&r, "node") && mpr_str(&r, &self) &&
                 pd_str_eqc(self, FZ_SELF) && key_is(&r, "nodes") && mpr_array(&r, &n),
             "cluster reply header");
    FZ_CHECK(n == nodes && n >= 3, "cluster reply: %u nodes of %u", n, nodes);
    for (uint32_t i = 0; i < n; i++) FZ_CHECK(mpr_skip(&r), "cluster reply: node %u", i);
    FZ_CHECK(mpr_remaining(&r) == 0, "cluster reply: trailing bytes");
}

static void answer(const pd_query *q, const pd_str *users) {
    const pd_model *m = pd_repl_model(R);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    uint64_t before = fz_model_digest(m), cursor = 0;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    switch (q->type) {
    case PD_Q_GET:
    case PD_Q_DEVICES:
    case PD_Q_ONLINE: {
        pd_err err = {0};
        pd_str stale[PD_VC_MAX];
        pd_freshness fr = {0, stale, 0};
        fr.nstale = pd_repl_freshness(R, now_q(), stale, PD_VC_MAX, &fr.as_of);
        pd_status st = pd_query_answer(m, q, &fr, &pk, &err);
        if (q->type == PD_Q_ONLINE && !pd_query_cursor_parse(q->cursor, &cursor)) {
            FZ_CHECK(st == PD_EBADVALUE && sb.size == 0, "online: a bad cursor answered");
            break;
        }
        FZ_CHECK(st == PD_OK, "query %d refused: %s", (int)q->type, err.msg);
        if (q->type == PD_Q_GET) check_get(q, &sb, users, &fr);
        else if (q->type == PD_Q_DEVICES) check_devices(q, &sb, &fr);
        else check_online(q, &sb, cursor);
        break;
    }
    default: {
        uint32_t nodes = 0;
        pd_repl_nodes(R, now_q(), count_node, &nodes);
        pd_repl_answer_cluster(R, PD_STR_LIT(FZ_SELF), now_q(), &pk);
        check_cluster(&sb, nodes);
        break;
    }
    }
    FZ_CHECK(fz_model_digest(m) == before, "answering a query changed the model");
    msgpack_sbuffer_destroy(&sb);
}

static void count_online_users(void) {
    static page pg;
    uint64_t c = 0;
    online_total = 0;
    do {
        pg.n = 0;
        c = pd_model_scan_online(pd_repl_model(R), c, PD_QUERY_LIMIT_MAX, collect_user, &pg);
        online_total += pg.n;
    } while (c);
    FZ_CHECK(online_total > 10, "setup: only %llu users online",
             (unsigned long long)online_total);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static pd_str users[PD_QUERY_USERS_MAX + 1];
    fz_quiet();
    if (R == NULL) {
        setup();
        count_online_users();
    }
    for (int t = 0; t < PD_Q_COUNT; t++) {
        pd_query q;
        pd_err err = {0};
        pd_status s = pd_query_decode((pd_query_type)t, data, size, &q, &err);
        if (s != PD_OK) {
            fz_check_refusal(s, &err);
            continue;
        }
        FZ_CHECK(q.type == (pd_query_type)t, "query type changed");
        check_request(&q, users, data, size);
        round_trip(&q);
        answer(&q, users);
    }
    return 0;
}

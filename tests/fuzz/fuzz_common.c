/* fuzz_common.c - helpers shared by the libFuzzer targets (see
 * fuzz_common.h). The digest and the consistency check read the model's
 * internals (presence_int.h), as the unit tests' check_model() does. */
#include "fuzz_common.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/log.h"
#include "model/presence_int.h"

void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "\n%s:%d: invariant broken: %s\n  ", file, line, cond);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

void fz_quiet(void) {
    static bool done;
    if (done) return;
    done = true;
    pd_log_set_level(PD_LOG_ERROR + 1);
}

void fz_check_refusal(pd_status s, const pd_err *err) {
    FZ_CHECK(s > PD_OK && s < PD_STATUS_COUNT, "status %d out of range", (int)s);
    FZ_CHECK(err->code == s, "err.code %d, returned %d", (int)err->code, (int)s);
    size_t n = strnlen(err->msg, sizeof err->msg);
    FZ_CHECK(n > 0 && n < sizeof err->msg, "error message empty or unterminated");
    for (size_t i = 0; i < n; i++)
        FZ_CHECK((unsigned char)err->msg[i] >= 0x20, "control byte in error message");
}

bool fz_within(pd_str s, const void *base, size_t n) {
    const char *b = base;
    return s.n == 0 || (s.p >= b && s.p + s.n <= b + n);
}

/* ---- model digest ----------------------------------------------------------------- */

typedef struct {
    uint64_t h;
} mix;

static void mix_u64(mix *x, uint64_t v) {
    x->h ^= v + 0x9e3779b97f4a7c15ULL + (x->h << 6) + (x->h >> 2);
}

static void mix_bytes(mix *x, const void *p, size_t n) {
    mix_u64(x, n);
    mix_u64(x, pd_hash(p, n));
}

static void mix_timer(mix *x, const pd_timer *t) {
    mix_u64(x, pd_timer_armed(t));
    if (pd_timer_armed(t)) mix_u64(x, t->due);
}

/* Per-entry hashes are summed, so the digest ignores table order. */
static void digest_user(void *ud, void *e) {
    const pd_user *u = (const pd_user *)e;
    mix x = {1};
    mix_bytes(&x, u->id, u->id_n);
    mix_u64(&x, u->ndev);
    mix_u64(&x, u->nactive);
    mix_u64(&x, (uint64_t)u->seen);
    mix_u64(&x, (uint64_t)u->seen_frozen);
    mix_u64(&x, (uint64_t)u->notified_ts);
    mix_u64(&x, u->chosen_hlc);
    mix_u64(&x, u->custom_hlc);
    mix_u64(&x, u->chosen_by); /* interned ids' indexes: stable in one model */
    mix_u64(&x, u->custom_by);
    mix_u64(&x, u->custom_gen);
    mix_u64(&x, u->pub_custom);
    mix_u64(&x, u->chosen);
    mix_u64(&x, u->pub_status);
    mix_u64(&x, u->flags);
    mix_timer(&x, &u->grace);
    if (pd__user_custom(u)) {
        mix_u64(&x, (uint64_t)pd__user_custom(u)->expires_at);
        mix_bytes(&x, pd__user_custom(u)->buf, (size_t)pd__user_custom(u)->text_n + pd__user_custom(u)->emoji_n);
        mix_u64(&x, pd__user_custom(u)->text_n);
        mix_timer(&x, &pd__user_custom(u)->expiry);
    }
    *(uint64_t *)ud += x.h;
}

static const pd_model *digested; /* the model fz_model_digest reads */

static void digest_device(void *ud, void *e) {
    const pd_device *d = (const pd_device *)e;
    mix x = {2};
    mix_bytes(&x, pd__dev_server(digested, d)->id, pd__dev_server(digested, d)->id_n);
    mix_bytes(&x, d->buf, (size_t)d->conn_n + d->label_n);
    mix_u64(&x, d->conn_n);
    mix_bytes(&x, pd__dev_user(digested, d)->id, pd__dev_user(digested, d)->id_n);
    mix_u64(&x, d->node);
    mix_u64(&x, d->claim);
    mix_u64(&x, (uint64_t)d->connected_at);
    mix_u64(&x, (uint64_t)d->last_active);
    mix_u64(&x, (uint64_t)pd__dev_touched(d));
    mix_u64(&x, d->state);
    mix_u64(&x, pd__idle_armed(d));
    pd_str meta = pd__dev_meta(d);
    if (meta.n) mix_bytes(&x, meta.p, meta.n);
    *(uint64_t *)ud += x.h;
}

/* A server with no devices, no seq and no heartbeat watch is the same as
 * no entry (pd__drop_server_if_unused may forget it at any event, even a
 * refused one), so it does not count. */
static void digest_server(void *ud, pd_hnode *e) {
    const pd_server *s = (const pd_server *)e;
    mix x = {3};
    if (s->ndev == 0 && !s->watched && !s->has_seq) return;
    mix_bytes(&x, s->id, s->id_n);
    mix_u64(&x, s->ndev);
    /* Not last_msg: any message from a known server, even a refused one,
     * is a sign of life (pd_model_apply), so a refusal may move it. */
    mix_u64(&x, (uint64_t)s->last_seq);
    mix_u64(&x, s->has_seq);
    mix_u64(&x, s->watched);
    mix_timer(&x, &s->timeout);
    *(uint64_t *)ud += x.h;
}

static uint64_t digest_records(const pd_ihtab *t, pd_ihtab_visit fn) {
    uint64_t sum = 0, c = 0;
    do c = pd_ihtab_scan(t, c, fn, &sum); while (c);
    return sum;
}

static uint64_t digest_table(const pd_htab *t, pd_htab_visit fn) {
    uint64_t sum = 0, c = 0;
    do c = pd_htab_scan(t, c, fn, &sum); while (c);
    return sum;
}

uint64_t fz_model_digest(const pd_model *m) {
    digested = m;
    mix x = {0};
    mix_u64(&x, digest_records(&m->users, digest_user));
    mix_u64(&x, digest_records(&m->devices, digest_device));
    mix_u64(&x, digest_table(&m->servers, digest_server));
    mix_u64(&x, m->users.n);
    mix_u64(&x, m->devices.n);
    mix_u64(&x, m->ndevices);
    mix_u64(&x, pd_theap_count(&m->timers));
    mix_u64(&x, m->nidle);
    mix_u64(&x, pd_model_next_due(m));
    mix_u64(&x, m->hlc);
    mix_u64(&x, m->changes);
    return x.h;
}

/* ---- model consistency ------------------------------------------------------------- */

typedef struct {
    uint64_t users, devices, timers, idleq;
} walk;

static const pd_model *walked; /* the model fz_check_model walks */

static void check_user(void *ud, void *e) {
    walk *w = ud;
    const pd_model *m = walked;
    const pd_user *u = (const pd_user *)e;
    uint32_t nd = 0, na = 0;
    int idn = u->id_n;
    FZ_CHECK(pd_id_valid(u->id, u->id_n), "user id %.*s", idn, u->id);
    for (const pd_device *d = pd__dev_at(m, u->devs); d; d = pd__dev_at(m, d->unext)) {
        FZ_CHECK(pd__dev_user(m, d) == u, "device of %.*s points to another user", idn, u->id);
        nd++;
        na += d->state == PD_DEV_ACTIVE;
        FZ_CHECK(d->state == PD_DEV_ACTIVE || d->state == PD_DEV_IDLE, "device state %d",
                 d->state);
        /* This node's active devices wait in the idle queue, and only they:
         * one left out would never go idle. */
        FZ_CHECK(pd__idle_armed(d) == (pd__dev_node(m, d) == m->node &&
                                       d->state == PD_DEV_ACTIVE),
                 "a device of %.*s (%s, %s) is%s in the idle queue", idn, u->id,
                 pd__dev_node(m, d) == m->node ? "ours" : "another node's",
                 d->state == PD_DEV_ACTIVE ? "active" : "idle", pd__idle_armed(d) ? "" : " not");
        w->idleq += pd__idle_armed(d);
    }
    FZ_CHECK(u->ndev == nd, "%.*s counts %u devices, has %u", idn, u->id, u->ndev, nd);
    FZ_CHECK(u->nactive == na, "%.*s counts %u active, has %u", idn, u->id, u->nactive, na);
    bool grace = (u->flags & UF_GRACE) != 0;
    /* The grace timer serves the offline delay (UF_GRACE) and a return's
     * pending ver floor (UF_BACK, presence.c back_raise). */
    FZ_CHECK(pd_timer_armed(&u->grace) == (grace || (u->flags & UF_BACK) != 0),
             "%.*s: grace or back flag and timer", idn, u->id);
    if (u->flags & UF_BACK) FZ_CHECK(!grace, "%.*s: back and grace at once", idn, u->id);
    if (grace) FZ_CHECK(nd == 0, "%.*s: grace while a device is connected", idn, u->id);
    FZ_CHECK((u->flags & UF_DIRTY) == 0, "%.*s left dirty", idn, u->id);
    FZ_CHECK(u->chosen <= PD_CHOSEN_INVISIBLE, "%.*s: chosen %d", idn, u->id, u->chosen);
    if (pd__user_custom(u)) {
        FZ_CHECK(pd__user_custom(u)->user == u, "custom status of %.*s points elsewhere", idn, u->id);
        FZ_CHECK(pd__user_custom(u)->text_n <= PD_TEXT_MAX && pd__user_custom(u)->emoji_n <= PD_EMOJI_MAX,
                 "custom status of %.*s too long", idn, u->id);
        FZ_CHECK(pd_timer_armed(&pd__user_custom(u)->expiry) == (pd__user_custom(u)->expires_at != 0),
                 "custom status of %.*s: expiry timer", idn, u->id);
        w->timers += pd__user_custom(u)->expires_at != 0;
    }
    bool shown = pd__user_custom(u) && u->chosen != PD_CHOSEN_INVISIBLE;
    FZ_CHECK(u->pub_status == (uint8_t)pd__user_status(u, false) &&
                 u->pub_custom == (shown ? u->custom_gen : 0u),
             "%.*s has an unannounced change", idn, u->id);
    w->users++;
    w->devices += nd;
    w->timers += pd_timer_armed(&u->grace); /* grace or back */
}

static void check_server(void *ud, pd_hnode *e) {
    walk *w = ud;
    const pd_model *m = walked;
    const pd_server *s = (const pd_server *)e;
    uint32_t n = 0;
    for (const pd_device *d = pd__dev_at(m, s->devs), *prev = NULL; d;
         prev = d, d = pd__dev_at(m, d->snext), n++) {
        FZ_CHECK(pd__dev_server(m, d) == s, "device list of server %.*s", (int)s->id_n, s->id);
        FZ_CHECK(pd__dev_at(m, d->sprev) == prev, "device list of server %.*s", (int)s->id_n,
                 s->id);
    }
    FZ_CHECK(s->ndev == n, "server %.*s counts %u devices, has %u", (int)s->id_n, s->id,
             s->ndev, n);
    /* A server's timer is armed for one of three reasons: its heartbeat
     * timeout (watched), its deadline to speak after a restore (restored,
     * never watched: its first message ends it), or the retention of its
     * seq (neither, only with a retention). */
    bool armed = pd_timer_armed(&s->timeout);
    FZ_CHECK(!s->watched || armed, "server %.*s: watched without its timeout", (int)s->id_n,
             s->id);
    FZ_CHECK(!s->restored || (armed && !s->watched), "server %.*s: restored flag and timer",
             (int)s->id_n, s->id);
    FZ_CHECK(!armed || s->watched || s->restored || (m->cfg.user_retention_ms && s->has_seq),
             "server %.*s: a timer for no reason", (int)s->id_n, s->id);
    w->timers += armed;
}

void fz_check_model(const pd_model *m) {
    walk w = {0};
    uint64_t c = 0;
    walked = m;
    do c = pd_ihtab_scan(&m->users, c, check_user, &w); while (c);
    do c = pd_htab_scan(&m->servers, c, check_server, &w); while (c);
    FZ_CHECK(w.users == m->users.n, "users %llu vs table %zu", (unsigned long long)w.users,
             m->users.n);
    FZ_CHECK(w.devices == m->ndevices && m->devices.n == m->ndevices,
             "devices: users hold %llu, count %llu, table %zu",
             (unsigned long long)w.devices, (unsigned long long)m->ndevices, m->devices.n);
    FZ_CHECK(w.timers == pd_theap_count(&m->timers), "%llu timers owned, %u armed",
             (unsigned long long)w.timers, pd_theap_count(&m->timers));
    uint64_t queued = 0;
    for (const pd_device *d = pd__dev_at(m, m->idle_head), *prev = NULL; d;
         prev = d, d = pd__dev_at(m, d->inext), queued++) {
        FZ_CHECK(pd__dev_at(m, d->iprev) == prev && pd__idle_armed(d), "idle queue links");
        FZ_CHECK(prev == NULL || pd__dev_touched(prev) <= pd__dev_touched(d), "idle queue order");
        FZ_CHECK(d->inext != 0 || m->idle_tail == pd__dev_ix(m, d), "idle queue tail");
    }
    FZ_CHECK(m->idle_head != 0 || m->idle_tail == 0, "idle queue tail");
    FZ_CHECK(queued == m->nidle && queued == w.idleq, "%llu devices queued, %u counted, %llu marked",
             (unsigned long long)queued, m->nidle, (unsigned long long)w.idleq);
    for (uint32_t i = 0; i < m->timers.n; i++) {
        FZ_CHECK(m->timers.h[i]->idx == i + 1, "timer heap index");
        if (i) FZ_CHECK(m->timers.h[(i - 1) / 2]->due <= m->timers.h[i]->due, "heap order");
    }
    FZ_CHECK(m->ndirty == 0, "dirty users left after an operation");
}

/* ---- a small replica ------------------------------------------------------------------ */

static void io_delta(void *ud, const void *buf, size_t len) {
    fz_sent *s = ud;
    pd_delta d;
    pd_err err;
    pd_status st = pd_delta_decode(buf, len, &d, &err);
    FZ_CHECK(st == PD_OK, "a delta we sent does not decode: %s", err.msg);
    if (s) s->deltas++;
}

static void io_heartbeat(void *ud, const void *buf, size_t len) {
    fz_sent *s = ud;
    static pd_heartbeat hb;
    pd_err err;
    pd_status st = pd_heartbeat_decode(buf, len, &hb, &err);
    FZ_CHECK(st == PD_OK, "a heartbeat we sent does not decode: %s", err.msg);
    if (s) s->heartbeats++;
}

static void io_sync_request(void *ud, pd_str target, const void *buf, size_t len) {
    fz_sent *s = ud;
    pd_sync_req q;
    pd_err err;
    FZ_CHECK(pd_id_valid(target.p, target.n), "sync request to a bad id");
    pd_status st = pd_sync_req_decode(buf, len, &q, &err);
    FZ_CHECK(st == PD_OK, "a sync request we sent does not decode: %s", err.msg);
    if (s) s->sync_requests++;
}

static void io_sync_part(void *ud, void *reply_ctx, const void *buf, size_t len) {
    fz_sent *s = ud;
    pd_sync_part p;
    pd_err err;
    pd_status st = pd_sync_part_decode(buf, len, &p, &err);
    FZ_CHECK(st == PD_OK, "a sync part we sent does not decode: %s", err.msg);
    if (s) s->sync_parts++;
}

static void io_notify(void *ud, const pd_view *v) {
    fz_sent *s = ud;
    msgpack_sbuffer sb;
    pd_view back;
    pd_err err;
    FZ_CHECK(pd_id_valid(v->user.p, v->user.n), "notification for a bad user id");
    msgpack_sbuffer_init(&sb);
    pd_notification_encode(&sb, v);
    pd_status st = pd_notification_decode(sb.data, sb.size, &back, &err);
    FZ_CHECK(st == PD_OK, "a notification we sent does not decode: %s", err.msg);
    FZ_CHECK(pd_str_eq(back.user, v->user) && back.status == v->status, "notification");
    msgpack_sbuffer_destroy(&sb);
    if (s) s->notifications++;
}

pd_repl *fz_repl_new(const char *self, fz_sent *sent, uint64_t now) {
    return fz_repl_new_limited(self, sent, now, 0, 0);
}

pd_repl *fz_repl_new_limited(const char *self, fz_sent *sent, uint64_t now,
                             uint64_t max_devices_per_user, uint64_t max_users) {
    const pd_model_cfg mcfg = {.idle_timeout_ms = 1000, .offline_delay_ms = 500,
                               .server_timeout_ms = 3000,
                               .max_devices_per_user = max_devices_per_user,
                               .max_users = max_users};
    const pd_repl_cfg cfg = {.sync_interval_ms = 1000, .node_timeout_ms = 3000, .inc = 7,
                             .max_msg_bytes = 4096};
    /* No reply_keep: transfers are served at once, inside the handler. */
    const pd_repl_io io = {.send_delta = io_delta, .send_heartbeat = io_heartbeat,
                           .send_sync_request = io_sync_request, .send_sync_part = io_sync_part,
                           .publish = io_notify, .ud = sent};
    if (sent) memset(sent, 0, sizeof *sent);
    fz_quiet();
    pd_repl *r = pd_repl_new(&cfg, &mcfg, pd_str_c(self), &io, now);
    FZ_CHECK(r != NULL, "pd_repl_new failed");
    return r;
}

static void local(pd_repl *r, pd_event ev, uint64_t now) {
    pd_apply_result res;
    pd_err err = {0};
    pd_status s = pd_repl_local(r, &ev, now, &res, &err);
    FZ_CHECK(s == PD_OK, "populating: %s", err.msg);
}

#define S(x) PD_STR_LIT(x)

void fz_populate(pd_repl *r, uint64_t now) {
    static const char *const conns[] = {"c1", "c2", "c3", "c4", "c5"};
    static const char *const users[] = {"alice", "bob", "carol", "alice", "dave"};
    static const char *const servers[] = {"s1", "s1", "s2", "s2", "s3"};
    for (int i = 0; i < 5; i++) {
        local(r, (pd_event){.type = PD_EV_CONNECT, .server = pd_str_c(servers[i]),
                            .conn = pd_str_c(conns[i]), .user = pd_str_c(users[i]),
                            .device = S("web")}, now + (uint64_t)i);
    }
    local(r, (pd_event){.type = PD_EV_HEARTBEAT, .server = S("s1")}, now + 5);
    local(r, (pd_event){.type = PD_EV_IDLE, .server = S("s2"), .conn = S("c3")}, now + 6);
    local(r, (pd_event){.type = PD_EV_STATUS, .user = S("bob"), .status = PD_CHOSEN_BUSY},
          now + 7);
    local(r, (pd_event){.type = PD_EV_STATUS, .user = S("dave"),
                        .status = PD_CHOSEN_INVISIBLE}, now + 8);
    local(r, (pd_event){.type = PD_EV_CUSTOM, .user = S("alice"), .text = S("lunch"),
                        .emoji = S(":fork:"), .expires_at = (int64_t)now + 60000}, now + 9);
    local(r, (pd_event){.type = PD_EV_CUSTOM, .user = S("erin"), .text = S("away")}, now + 10);
    local(r, (pd_event){.type = PD_EV_DISCONNECT, .server = S("s3"), .conn = S("c5")}, now + 11);
    pd_repl_flush(r);
}

/* ---- re-encoding ---------------------------------------------------------------------- */

void fz_encode_event(msgpack_sbuffer *sb, const pd_event *ev) {
    pd_event_encode(sb, ev, NULL, 0);
}

void fz_encode_ops(msgpack_sbuffer *sb, const pd_ops *ops) {
    msgpack_packer pk;
    pd_ops_iter it;
    pd_op op;
    uint32_t n = 0;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    pd_ops_iter_init(&it, ops);
    while (pd_ops_next(&it, &op)) {
        pd_op_encode(&pk, &op);
        n++;
    }
    FZ_CHECK(n == ops->n, "ops: %u walked of %u declared", n, ops->n);
}

void fz_encode_delta(msgpack_sbuffer *sb, const pd_delta *d) {
    msgpack_sbuffer ops;
    uint64_t trace[PD_TRACE_MAX];
    msgpack_sbuffer_init(&ops);
    fz_encode_ops(&ops, &d->ops);
    uint32_t nt = pd_delta_trace_ids(d, trace, PD_TRACE_MAX);
    FZ_CHECK(nt == d->ntrace, "trace ids: %u copied of %u", nt, d->ntrace);
    pd_delta_carry c = {d->carries, d->has_restored ? &d->restored : NULL};
    pd_delta_encode_carry(sb, d->node, d->inc, d->seq, ops.data, ops.size, d->ops.n, trace, nt,
                          d->at, &c);
    msgpack_sbuffer_destroy(&ops);
}

void fz_encode_heartbeat(msgpack_sbuffer *sb, const pd_heartbeat *hb) {
    pd_heartbeat_encode(sb, hb);
}

void fz_encode_sync_req(msgpack_sbuffer *sb, const pd_sync_req *q) {
    pd_sync_req_encode(sb, q);
}

void fz_encode_sync_part(msgpack_sbuffer *sb, const pd_sync_part *p) {
    msgpack_sbuffer ops;
    msgpack_sbuffer_init(&ops);
    fz_encode_ops(&ops, &p->ops);
    pd_sync_part_encode(sb, p, ops.data, ops.size, p->ops.n);
    msgpack_sbuffer_destroy(&ops);
}

void fz_check_same(const char *what, const msgpack_sbuffer *a, const msgpack_sbuffer *b) {
    FZ_CHECK(a->size == b->size && (a->size == 0 || memcmp(a->data, b->data, a->size) == 0),
             "%s: re-encoding a decoded message changed it (%zu vs %zu bytes)", what,
             a->size, b->size);
}

/* ---- peers in known states -------------------------------------------------------------- */

static void must(pd_status s, const pd_err *err, const char *what) {
    FZ_CHECK(s == PD_OK, "priming (%s): %s", what, err->msg);
}

void fz_prime(pd_repl *r, uint64_t now) {
    msgpack_sbuffer ops, sb;
    msgpack_packer pk;
    pd_err err = {0};
    static pd_heartbeat hb;
    const pd_op add = {.kind = PD_OP_ADD, .server = S("s9"), .conn = S("c9"), .user = S("zed"),
                       .label = S("mobile"), .state = PD_DEV_ACTIVE,
                       .connected_at = (int64_t)now, .last_active = (int64_t)now,
                       .hlc = FZ_HLC};
    const pd_op chosen = {.kind = PD_OP_CHOSEN, .user = S("zed"), .chosen = PD_CHOSEN_AWAY,
                          .hlc = FZ_HLC + 1, .writer = S(FZ_PEER)};
    msgpack_sbuffer_init(&ops);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &ops, msgpack_sbuffer_write);
    pd_op_encode(&pk, &add);
    pd_op_encode(&pk, &chosen);
    /* Peers are admitted by their own heartbeats, before any delta. */
    memset(&hb, 0, sizeof hb);
    hb = (pd_heartbeat){.node = S(FZ_PEER), .inc = FZ_PEER_INC, .seq = 0, .hlc = FZ_HLC,
                        .ready = true, .nvc = 1};
    hb.vc[0] = (pd_vc_entry){S(FZ_PEER), FZ_PEER_INC, 0};
    pd_heartbeat_encode(&sb, &hb);
    must(pd_repl_on_heartbeat(r, sb.data, sb.size, now, &err), &err, "first heartbeat");
    hb = (pd_heartbeat){.node = S(FZ_SYNCING), .inc = FZ_SYNCING_INC, .seq = 0, .hlc = FZ_HLC,
                        .ready = true, .nvc = 1};
    hb.vc[0] = (pd_vc_entry){S(FZ_SYNCING), FZ_SYNCING_INC, 0};
    msgpack_sbuffer_clear(&sb);
    pd_heartbeat_encode(&sb, &hb);
    must(pd_repl_on_heartbeat(r, sb.data, sb.size, now, &err), &err, "syncing heartbeat");

    msgpack_sbuffer_clear(&sb);
    pd_delta_encode(&sb, S(FZ_PEER), FZ_PEER_INC, 1, ops.data, ops.size, 2);
    must(pd_repl_on_delta(r, sb.data, sb.size, now, &err), &err, "delta");

    hb = (pd_heartbeat){.node = S(FZ_PEER), .inc = FZ_PEER_INC, .seq = 1, .hlc = FZ_HLC + 2,
                        .ready = true, .devices = 1, .users = 1, .nvc = 1};
    hb.vc[0] = (pd_vc_entry){S(FZ_PEER), FZ_PEER_INC, 1};
    msgpack_sbuffer_clear(&sb);
    pd_heartbeat_encode(&sb, &hb);
    must(pd_repl_on_heartbeat(r, sb.data, sb.size, now, &err), &err, "heartbeat");

    msgpack_sbuffer_clear(&sb);
    pd_delta_encode(&sb, S(FZ_SYNCING), FZ_SYNCING_INC, 2, ops.data, 0, 0);
    must(pd_repl_on_delta(r, sb.data, sb.size, now, &err), &err, "gap");
    msgpack_sbuffer_destroy(&ops);
    msgpack_sbuffer_destroy(&sb);
}

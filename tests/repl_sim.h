/* repl_sim.h - a simulated network of three replicas (repl.h) for
 * test_repl.c.
 *
 * Each replica's pd_repl_io callbacks copy what it sends into one pool of
 * pending messages: deltas and heartbeats go to the two others, a sync
 * request to the node it names, and each part of a reply back to the node
 * that asked. Delivery picks a random pending message, except that it keeps
 * per-(sender, receiver) FIFO order for sync reply parts (NATS keeps one
 * publisher's order on a subject) and, when fifo_deltas is set, for deltas
 * too; deltas of different origins, heartbeats and requests interleave
 * freely. A lossy delivery may drop a message or deliver it and keep a copy
 * for later (a duplicate). Time is the simulation's `now`, passed to every
 * call. Nothing here knows the scenario; test_repl.c drives it.
 *
 * Set PD_TRACE=1 to print every message as it is delivered (and the
 * replicas' log lines, which are silenced otherwise). */
#ifndef PD_TESTS_REPL_SIM_H
#define PD_TESTS_REPL_SIM_H

#include "base/log.h"
#include "prop_fixtures.h"
#include "sync/repl.h"
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NREP 3

static const char *const NODE[NREP] = {"n0", "n1", "n2"};

typedef enum { M_DELTA, M_HB, M_REQ, M_PART } mkind;
static const char *const MKIND[] = {"delta", "hb", "sync-req", "sync-part"};

typedef struct {
    int from, to;
    mkind kind;
    uint8_t *buf;
    size_t len;
} message;

typedef struct sim sim;

typedef struct {
    sim *s;
    int i;
} endpoint;

/* The reply context handed to pd_repl_on_sync_request: who asked. */
typedef struct {
    int requester;
} reply_to;

/* One notification, as a watcher would see it. */
typedef struct {
    int by;
    char user[PD_ID_MAX + 1];
    pd_public status;
    char text[PD_TEXT_MAX + 1];
    uint64_t ver;
    int64_t ts;
    uint32_t cut;          /* the replicas cut off when it was published (bit i: NODE[i]) */
} heard;

struct sim {
    pd_repl *r[NREP];
    endpoint ep[NREP];
    uint64_t inc[NREP];
    pd_repl_cfg cfg;
    pd_model_cfg mcfg;
    uint64_t now;
    message *q;
    size_t nq, cap;
    rng rnd;
    /* faults of lossy deliveries, in percent */
    uint32_t drop_delta, dup_delta, drop_hb, dup_hb, drop_sync;
    bool fifo_deltas;
    bool sliced;           /* transfers served in slices from pd_repl_tick */
    bool cut[NREP];        /* cut off: what it sends and what is sent to it is lost */
    bool frozen[NREP];     /* not ticked (a stopped process) */
    bool trace;
    /* counters */
    uint64_t delivered, dropped, duplicated;
    heard *notes;          /* every notification of the cluster */
    size_t nnotes, notes_cap;
    /* The JetStream stream (record_stream): every delta sent by a node not
     * cut off, in order, for a restarted node to replay. */
    bool record_stream;
    message *stream;
    size_t nstream, stream_cap;
};

static inline int node_index(pd_str id) {
    for (int i = 0; i < NREP; i++)
        if (pd_str_eqc(id, NODE[i])) return i;
    return -1;
}

/* ---- sending ------------------------------------------------------------------------------ */

static inline void sim_push(sim *s, int from, int to, mkind kind, const void *buf, size_t len) {
    if (s->cut[from] || s->cut[to]) return;
    if (s->nq == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->q = realloc(s->q, s->cap * sizeof *s->q);
        REQUIRE(s->q != NULL, "out of memory");
    }
    uint8_t *copy = malloc(len ? len : 1);
    REQUIRE(copy != NULL, "out of memory");
    memcpy(copy, buf, len);
    s->q[s->nq++] = (message){from, to, kind, copy, len};
}

static inline void sim_record(sim *s, int from, const void *buf, size_t len) {
    if (!s->record_stream || s->cut[from]) return;
    if (s->nstream == s->stream_cap) {
        s->stream_cap = s->stream_cap ? s->stream_cap * 2 : 64;
        s->stream = realloc(s->stream, s->stream_cap * sizeof *s->stream);
        REQUIRE(s->stream != NULL, "out of memory");
    }
    uint8_t *copy = malloc(len ? len : 1);
    REQUIRE(copy != NULL, "out of memory");
    memcpy(copy, buf, len);
    s->stream[s->nstream++] = (message){from, -1, M_DELTA, copy, len};
}

static inline void io_send_delta(void *ud, const void *buf, size_t len) {
    endpoint *e = ud;
    sim_record(e->s, e->i, buf, len);
    for (int j = 0; j < NREP; j++)
        if (j != e->i) sim_push(e->s, e->i, j, M_DELTA, buf, len);
}

static inline void io_send_hb(void *ud, const void *buf, size_t len) {
    endpoint *e = ud;
    for (int j = 0; j < NREP; j++)
        if (j != e->i) sim_push(e->s, e->i, j, M_HB, buf, len);
}

static inline void io_send_req(void *ud, pd_str target, const void *buf, size_t len) {
    endpoint *e = ud;
    int to = node_index(target);
    REQUIRE(to >= 0 && to != e->i, "%s asked for a sync from '%.*s'", NODE[e->i], (int)target.n,
            target.p);
    sim_push(e->s, e->i, to, M_REQ, buf, len);
}

static inline void io_send_part(void *ud, void *reply_ctx, const void *buf, size_t len) {
    endpoint *e = ud;
    const reply_to *rt = reply_ctx;
    sim_push(e->s, e->i, rt->requester, M_PART, buf, len);
}

static inline void io_notify(void *ud, const pd_view *v) {
    endpoint *e = ud;
    sim *s = e->s;
    if (s->nnotes == s->notes_cap) {
        s->notes_cap = s->notes_cap ? s->notes_cap * 2 : 64;
        s->notes = realloc(s->notes, s->notes_cap * sizeof *s->notes);
        REQUIRE(s->notes != NULL, "out of memory");
    }
    heard *h = &s->notes[s->nnotes++];
    h->by = e->i;
    snprintf(h->user, sizeof h->user, "%.*s", (int)v->user.n, v->user.p);
    h->status = v->status;
    snprintf(h->text, sizeof h->text, "%.*s", (int)v->text.n, v->text.p ? v->text.p : "");
    h->ver = v->ver;
    h->ts = v->ts;
    h->cut = 0;
    for (int i = 0; i < NREP; i++) h->cut |= s->cut[i] ? 1u << i : 0u;
}

/* A watcher next to replica w hears what w publishes, and what the others
 * publish while neither side is cut off. */
static inline bool sim_watcher_hears(const heard *h, int w) {
    return h->by == w || !(h->cut & ((1u << h->by) | (1u << w)));
}

/* What the watcher next to replica w keeps of user after notes[from..]:
 * the notification with the largest ver, the later ts on a tie (as
 * docs/protocol.md section 3 tells watchers); NULL if it heard none. */
static inline const heard *sim_watcher_last(const sim *s, int w, const char *user, size_t from) {
    const heard *best = NULL;
    for (size_t k = from; k < s->nnotes; k++) {
        const heard *h = &s->notes[k];
        if (strcmp(h->user, user) != 0 || !sim_watcher_hears(h, w)) continue;
        if (best == NULL || h->ver > best->ver || (h->ver == best->ver && h->ts >= best->ts))
            best = h;
    }
    return best;
}

/* Transfers served in slices (sim.sliced): the kept reply context is a copy. */
static inline void *io_reply_keep(void *ud, void *reply_ctx) {
    (void)ud;
    reply_to *kept = malloc(sizeof *kept);
    if (kept) *kept = *(const reply_to *)reply_ctx;
    return kept;
}

static inline void io_reply_free(void *ud, void *kept) {
    (void)ud;
    free(kept);
}

static const pd_repl_io SIM_IO = {
    .send_delta = io_send_delta, .send_heartbeat = io_send_hb, .send_sync_request = io_send_req,
    .send_sync_part = io_send_part, .publish = io_notify,
};

/* ---- life cycle ---------------------------------------------------------------------------- */

static inline pd_repl *sim_new_replica(sim *s, int i) {
    pd_repl_io io = SIM_IO;
    pd_repl_cfg cfg = s->cfg;
    s->ep[i] = (endpoint){s, i};
    io.ud = &s->ep[i];
    if (s->sliced) {
        io.reply_keep = io_reply_keep;
        io.reply_free = io_reply_free;
    }
    cfg.inc = s->inc[i];
    pd_repl *r = pd_repl_new(&cfg, &s->mcfg, pd_str_c(NODE[i]), &io, s->now);
    REQUIRE(r != NULL, "pd_repl_new failed");
    return r;
}

static inline void sim_init(sim *s, uint64_t seed, const pd_repl_cfg *cfg,
                            const pd_model_cfg *mcfg, uint64_t now) {
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    s->mcfg = *mcfg;
    s->now = now;
    s->rnd.s = seed;
    s->fifo_deltas = true;
    const char *t = getenv("PD_TRACE");
    s->trace = t && *t && *t != '0';
    pd_log_set_level(s->trace ? PD_LOG_DEBUG : PD_LOG_ERROR); /* node up/down lines are noise */
    for (int i = 0; i < NREP; i++) {
        s->inc[i] = 1;
        s->r[i] = sim_new_replica(s, i);
    }
}

static inline void sim_free(sim *s) {
    for (int i = 0; i < NREP; i++) pd_repl_free(s->r[i]);
    for (size_t k = 0; k < s->nq; k++) free(s->q[k].buf);
    free(s->q);
    for (size_t k = 0; k < s->nstream; k++) free(s->stream[k].buf);
    free(s->stream);
    free(s->notes);
}

/* Node i restarts: a new replica with the same id and a higher incarnation
 * (its model starts empty; what was in flight stays in flight). */
static inline void sim_restart(sim *s, int i) {
    pd_repl_free(s->r[i]);
    s->inc[i]++;
    s->r[i] = sim_new_replica(s, i);
}

/* ---- delivery ----------------------------------------------------------------------------- */

static inline bool ordered(const sim *s, mkind k) {
    return k == M_PART || (k == M_DELTA && s->fifo_deltas);
}

/* The message to deliver if k was drawn: the oldest of its FIFO stream. */
static inline size_t sim_eligible(const sim *s, size_t k) {
    const message *m = &s->q[k];
    if (!ordered(s, m->kind)) return k;
    for (size_t j = 0; j < k; j++) {
        const message *o = &s->q[j];
        if (o->kind == m->kind && o->from == m->from && o->to == m->to) return j;
    }
    return k;
}

/* Prints ops as " ADD(s0/c1 u2 claim=...)" and so on. */
static inline void sim_trace_ops(const pd_ops *ops) {
    static const char *const K[] = {"ADD", "REMOVE", "STATE", "CHOSEN", "CUSTOM", "SEEN", "SYNCED",
                                    "VER"};
    pd_ops_iter it;
    pd_op op;
    pd_ops_iter_init(&it, ops);
    while (pd_ops_next(&it, &op)) {
        if (op.kind == PD_OP_SYNCED)
            fprintf(stderr, " SYNCED(%.*s hlc=%llu)", (int)op.server.n, op.server.p,
                    (unsigned long long)op.hlc);
        else if (op.kind <= PD_OP_STATE)
            fprintf(stderr, " %s(%.*s/%.*s %.*s st=%d hlc=%llu ver=%llu)", K[op.kind],
                    (int)op.server.n, op.server.p, (int)op.conn.n, op.conn.p, (int)op.user.n,
                    op.user.p ? op.user.p : "", op.state, (unsigned long long)op.hlc,
                    (unsigned long long)op.ver);
        else
            fprintf(stderr, " %s(%.*s by %.*s hlc=%llu)", K[op.kind], (int)op.user.n, op.user.p,
                    (int)op.writer.n, op.writer.p, (unsigned long long)op.hlc);
    }
}

static inline void sim_trace_msg(const sim *s, const message *m, const char *what) {
    if (!s->trace) return;
    fprintf(stderr, "  t=%llu %s %s %s->%s", (unsigned long long)s->now, what, MKIND[m->kind],
            NODE[m->from], NODE[m->to]);
    pd_err err;
    if (m->kind == M_DELTA) {
        pd_delta d;
        if (pd_delta_decode(m->buf, m->len, &d, &err) == PD_OK)
        {
            fprintf(stderr, " inc=%llu seq=%llu ops=%u", (unsigned long long)d.inc,
                    (unsigned long long)d.seq, d.ops.n);
            sim_trace_ops(&d.ops);
        }
    } else if (m->kind == M_PART) {
        pd_sync_part p;
        if (pd_sync_part_decode(m->buf, m->len, &p, &err) == PD_OK)
            fprintf(stderr, " origin=%.*s known=%d inc=%llu seq=%llu part=%u last=%d ops=%u",
                    (int)p.origin.n, p.origin.p, p.known, (unsigned long long)p.inc,
                    (unsigned long long)p.seq, p.part, p.last, p.ops.n);
        if (pd_sync_part_decode(m->buf, m->len, &p, &err) == PD_OK) sim_trace_ops(&p.ops);
    } else if (m->kind == M_REQ) {
        pd_sync_req q;
        if (pd_sync_req_decode(m->buf, m->len, &q, &err) == PD_OK)
            fprintf(stderr, " origin=%.*s", (int)q.origin.n, q.origin.p);
    }
    fputc('\n', stderr);
}

/* Hands message k to its receiver; lossy: it may be dropped or duplicated. */
static inline void sim_deliver(sim *s, size_t k, bool lossy) {
    message m = s->q[k];
    memmove(&s->q[k], &s->q[k + 1], (s->nq - k - 1) * sizeof *s->q);
    s->nq--;
    if (s->cut[m.from] || s->cut[m.to]) {
        free(m.buf);
        return;
    }
    uint32_t drop = m.kind == M_DELTA ? s->drop_delta : m.kind == M_HB ? s->drop_hb : s->drop_sync;
    uint32_t dup = m.kind == M_DELTA ? s->dup_delta : m.kind == M_HB ? s->dup_hb : 0;
    if (lossy && rng_pct(&s->rnd, drop)) {
        sim_trace_msg(s, &m, "DROP");
        s->dropped++;
        free(m.buf);
        return;
    }
    if (lossy && rng_pct(&s->rnd, dup)) {
        sim_push(s, m.from, m.to, m.kind, m.buf, m.len); /* again, later */
        s->duplicated++;
    }
    sim_trace_msg(s, &m, "deliver");
    pd_repl *r = s->r[m.to];
    pd_err err = {PD_OK, ""};
    pd_status st;
    reply_to rt = {m.from};
    switch (m.kind) {
    case M_DELTA: st = pd_repl_on_delta(r, m.buf, m.len, s->now, &err); break;
    case M_HB: st = pd_repl_on_heartbeat(r, m.buf, m.len, s->now, &err); break;
    case M_REQ: st = pd_repl_on_sync_request(r, m.buf, m.len, &rt, &err); break;
    default: st = pd_repl_on_sync_part(r, m.buf, m.len, s->now, &err); break;
    }
    REQUIRE(st == PD_OK, "%s %s->%s refused: %s", MKIND[m.kind], NODE[m.from], NODE[m.to],
            err.msg);
    s->delivered++;
    free(m.buf);
}

/* Delivers up to n random pending messages. */
static inline void sim_deliver_some(sim *s, size_t n, bool lossy) {
    while (n-- > 0 && s->nq > 0) sim_deliver(s, sim_eligible(s, rng_below(&s->rnd, (uint32_t)s->nq)), lossy);
}

/* Delivers until nothing is pending (what is delivered may send more);
 * returns how many messages other than heartbeats were delivered. */
static inline size_t sim_deliver_all(sim *s) {
    size_t other = 0;
    for (size_t guard = 0; s->nq > 0; guard++) {
        REQUIRE(guard < 100000, "the replicas never stop talking");
        size_t k = sim_eligible(s, rng_below(&s->rnd, (uint32_t)s->nq));
        other += s->q[k].kind != M_HB;
        sim_deliver(s, k, false);
    }
    return other;
}

/* -1 matches any sender, receiver or kind. */
static inline bool sim_match(const message *m, int from, int to, int kind) {
    return (from < 0 || m->from == from) && (to < 0 || m->to == to) &&
           (kind < 0 || (int)m->kind == kind);
}

/* Delivers, oldest first, up to n pending messages that match (and what
 * they send that matches too); returns how many. */
static inline size_t sim_deliver_matching(sim *s, int from, int to, int kind, size_t n) {
    size_t done = 0;
    for (size_t k = 0; k < s->nq && done < n;) {
        if (!sim_match(&s->q[k], from, to, kind)) {
            k++;
            continue;
        }
        sim_deliver(s, k, false);
        done++;
        k = 0;
    }
    return done;
}

/* Drops every pending message that matches. */
static inline void sim_drop_matching(sim *s, int from, int to, int kind) {
    for (size_t k = 0; k < s->nq;) {
        if (!sim_match(&s->q[k], from, to, kind)) {
            k++;
            continue;
        }
        free(s->q[k].buf);
        memmove(&s->q[k], &s->q[k + 1], (s->nq - k - 1) * sizeof *s->q);
        s->nq--;
        s->dropped++;
    }
}

static inline void sim_tick_all(sim *s) {
    for (int i = 0; i < NREP; i++)
        if (!s->frozen[i]) pd_repl_tick(s->r[i], s->now);
}

static inline void sim_flush_all(sim *s) {
    for (int i = 0; i < NREP; i++) pd_repl_flush(s->r[i]);
}

/* ms pass; every replica ticks, then everything in flight is delivered. */
static inline void sim_round(sim *s, uint64_t ms) {
    s->now += ms;
    sim_tick_all(s);
    sim_deliver_all(s);
}

/* Start: every replica ticks past its warm-up, heartbeats flow, and all
 * are ready and know each other as alive. */
static inline void sim_warm_up(sim *s) {
    sim_tick_all(s); /* the first heartbeats: the warm-up counts from them */
    sim_deliver_all(s);
    for (int round = 0; round < 2; round++) sim_round(s, s->cfg.sync_interval_ms);
    for (int i = 0; i < NREP; i++) REQUIRE(pd_repl_ready(s->r[i]), "%s is not ready", NODE[i]);
}

#endif /* PD_TESTS_REPL_SIM_H */

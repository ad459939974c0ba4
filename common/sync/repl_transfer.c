/* repl_transfer.c - state transfer of one origin's partition: serving it
 * to a peer that is behind (in slices between other work, to live peers
 * only, rate-limited) and receiving one (see repl.h). */
#include "sync/repl_int.h"

/* ---- state transfer: serving and receiving ---------------------------------------- */

typedef struct {
    pd_repl *r;
    void *reply_ctx;
    pd_sync_part hdr;
    msgpack_sbuffer ops;
    uint32_t nops;
} serve_ctx;

static void send_part(serve_ctx *c, bool last) {
    pd_repl *r = c->r;
    c->hdr.last = last;
    msgpack_sbuffer_clear(&r->out);
    pd_sync_part_encode(&r->out, &c->hdr, c->ops.data, c->ops.size, c->nops);
    if (r->io.send_sync_part) r->io.send_sync_part(r->io.ud, c->reply_ctx, r->out.data, r->out.size);
    c->hdr.part++;
    msgpack_sbuffer_clear(&c->ops);
    c->nops = 0;
}

static void serve_op(void *ud, const pd_op *op) {
    serve_ctx *c = ud;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &c->ops, msgpack_sbuffer_write);
    pd_op_encode(&pk, op);
    c->nops++;
    if (c->ops.size >= c->r->cfg.max_msg_bytes / 2) send_part(c, false);
}

/* A transfer served in slices: a few hash buckets per pd_repl_tick, its
 * parts sent as they fill. One per requester and origin (a newer request
 * replaces it). The dump may see changes made meanwhile or not; the
 * requester replays the deltas after hdr.seq, which repair either way. */
typedef struct serving {
    serve_ctx c;                /* c.reply_ctx is the kept handle */
    char asker[PD_ID_MAX + 1], origin[PD_ID_MAX + 1];
    pd_dump_cursor cur;
    uint64_t sent_at;           /* the last part, or the start */
} serving;

static void serving_free(pd_repl *r, uint32_t i) {
    serving *sv = r->serving[i];
    if (r->io.reply_free) r->io.reply_free(r->io.ud, sv->c.reply_ctx);
    msgpack_sbuffer_destroy(&sv->c.ops);
    pd_free(sv);
    r->serving[i] = r->serving[--r->nserving];
}

/* Starts serving q in slices; false if it cannot (then serve at once). */
static bool serve_later(pd_repl *r, const pd_sync_req *q, const pd_sync_part *hdr,
                        void *reply_ctx) {
    if (r->io.reply_keep == NULL) return false;
    for (uint32_t i = 0; i < r->nserving; i++) {
        serving *o = r->serving[i];
        if (pd_str_eqc(q->node, o->asker) && pd_str_eqc(q->origin, o->origin)) {
            serving_free(r, i);
            break;
        }
    }
    if (r->nserving == SERVING_MAX) return false;
    serving *sv = pd_calloc(1, sizeof *sv);
    void *kept = sv ? r->io.reply_keep(r->io.ud, reply_ctx) : NULL;
    if (kept == NULL) {
        pd_free(sv);
        return false;
    }
    memcpy(sv->asker, q->node.p, q->node.n);
    memcpy(sv->origin, q->origin.p, q->origin.n);
    sv->c = (serve_ctx){.r = r, .reply_ctx = kept, .hdr = *hdr};
    sv->c.hdr.origin = pd_str_c(sv->origin);
    sv->sent_at = r->now;
    msgpack_sbuffer_init(&sv->c.ops);
    r->serving[r->nserving++] = sv;
    return true;
}

/* One slice of each transfer being served. A peer's partition that is
 * replaced meanwhile (new incarnation, down, being fetched) is abandoned:
 * the requester times out and asks again. */
void repl__serve_step(pd_repl *r) {
    for (uint32_t i = 0; i < r->nserving;) {
        serving *sv = r->serving[i];
        pd_str origin = pd_str_c(sv->origin);
        bool own = pd_str_eqc(origin, r->self);
        const peer *p = own ? NULL : repl__peer_find(r, origin);
        if (!own && (p == NULL || p->inc != sv->c.hdr.inc || p->syncing || !p->alive)) {
            serving_free(r, i);
            continue;
        }
        uint32_t part = sv->c.hdr.part;
        if (pd_model_partition_dump_step(r->m, origin, pd_str_c(sv->asker), &sv->cur,
                                         SERVE_BUCKETS, serve_op, &sv->c)) {
            send_part(&sv->c, true);
            serving_free(r, i);
            continue;
        }
        if (sv->c.hdr.part != part) {
            sv->sent_at = r->now;
        } else if (r->now >= sv->sent_at + r->cfg.sync_interval_ms / 2) {
            send_part(&sv->c, false); /* what it has, maybe nothing: progress */
            sv->sent_at = r->now;
        }
        i++;
    }
}

uint32_t pd_repl_serving(const pd_repl *r) { return r->nserving; }

void pd_repl_serving_drop(pd_repl *r) {
    while (r->nserving) serving_free(r, r->nserving - 1);
}

/* A state transfer costs a whole partition: served only to a live peer,
 * at most SERVE_PER_INTERVAL per requester per sync interval. */
static bool may_serve(pd_repl *r, const pd_sync_req *q) {
    uint64_t now = r->now;
    peer *asker = repl__peer_find(r, q->node);
    if (asker == NULL || !asker->alive) {
        repl__refuse(r, PD_REFUSE_NOT_A_PEER, now, "state transfer asked by %.*s, not a live peer here",
               (int)q->node.n, q->node.p);
        return false;
    }
    if (now >= asker->served_window + r->cfg.sync_interval_ms || now < asker->served_window) {
        asker->served_window = now;
        asker->served_n = 0;
    }
    if (asker->served_n >= SERVE_PER_INTERVAL) {
        repl__refuse(r, PD_REFUSE_SYNC_RATE, now, "state transfer asked by %s: more than %d in one "
               "sync interval", asker->id, SERVE_PER_INTERVAL);
        return false;
    }
    asker->served_n++;
    return true;
}

pd_status pd_repl_on_sync_request(pd_repl *r, const void *buf, size_t len, void *reply_ctx,
                                  pd_err *err) {
    pd_sync_req q;
    pd_status s = pd_sync_req_decode(buf, len, &q, err);
    if (s != PD_OK) {
        r->stats.bad_messages++;
        return s;
    }
    serve_ctx c = {.r = r, .reply_ctx = reply_ctx};
    c.hdr.origin = q.origin;
    c.hdr.req = q.req;
    msgpack_sbuffer_init(&c.ops);
    if (!may_serve(r, &q)) {
        /* Answered "unknown", which costs nothing: a real peer that asked
         * before its first heartbeat got here asks again at the next one. */
        send_part(&c, true);
        msgpack_sbuffer_destroy(&c.ops);
        return PD_OK;
    }
    pd_repl_flush(r); /* our own seq must cover every op in the dump */
    if (pd_str_eqc(q.origin, r->self)) {
        /* Restoring: our partition is not what we will announce yet (see
         * restore_own_op); the requester ignores "unknown" and asks again. */
        c.hdr.known = !r->restoring;
        c.hdr.inc = r->cfg.inc;
        c.hdr.seq = r->seq;
    } else {
        const peer *p = repl__peer_find(r, q.origin);
        c.hdr.known = p && p->inc && !p->syncing;
        c.hdr.inc = c.hdr.known ? p->inc : 0;
        c.hdr.seq = c.hdr.known ? p->seq : 0;
    }
    r->stats.syncs_served++;
    if (c.hdr.known && serve_later(r, &q, &c.hdr, reply_ctx)) {
        msgpack_sbuffer_destroy(&c.ops);
        repl__serve_step(r); /* a small partition is done at once */
        return PD_OK;
    }
    /* The dump carries the registers the asker wrote too: registers passed
     * on to a new life of the asker (pass_on_registers) travel in our
     * deltas, which hdr.seq counts as done, but are no registers of
     * origin's; an asker that lost such a delta (a gap it repairs by this
     * transfer) would never get them otherwise. */
    if (c.hdr.known) {
        pd_dump_cursor cur = {0};
        while (!pd_model_partition_dump_step(r->m, q.origin, q.node, &cur, UINT32_MAX, serve_op,
                                             &c)) {}
    }
    send_part(&c, true);
    msgpack_sbuffer_destroy(&c.ops);
    return PD_OK;
}

pd_status pd_repl_on_sync_part(pd_repl *r, const void *buf, size_t len, uint64_t now,
                               pd_err *err) {
    r->now = now;
    pd_sync_part sp;
    pd_status s = pd_sync_part_decode(buf, len, &sp, err);
    if (s != PD_OK) {
        r->stats.bad_messages++;
        return s;
    }
    peer *p = repl__peer_find(r, sp.origin);
    /* Stale: a late reply to an earlier request (timed out) must not mix its
     * parts with the reply to the retry, which may be cut elsewhere. */
    if (p == NULL || !p->syncing || sp.part != p->sync_part || (sp.req && sp.req != p->sync_req))
        return PD_OK;
    p->sync_heard = now;
    if (sp.part == 0) {
        /* Unknown there, from an older incarnation, or behind what we have:
         * nothing to take from this answer. */
        p->sync_ignore = !sp.known || sp.inc < p->inc ||
                         (sp.inc == p->inc && sp.seq < p->seq && !p->force_sync) ||
                         repl__ms_ahead(r, sp.inc, now);
        if (!p->sync_ignore) {
            if (sp.inc > p->inc) repl__new_incarnation(r, p, sp.inc, 0, now);
            p->syncing = true; /* new_incarnation may have cleared it */
            pd_model_partition_begin(r->m, sp.origin);
        }
    }
    p->sync_part++;
    if (!p->sync_ignore && repl__ops_ahead(r, &sp.ops, now)) {
        /* Half applied: the next transfer starts the partition over. */
        repl__refuse(r, PD_REFUSE_CLOCK_AHEAD, now, "state transfer of %s: an op's clock is ahead "
               "of ours", p->id);
        repl__end_sync(r, p, now);
        return PD_OK;
    }
    if (!p->sync_ignore) repl__apply_ops(r, sp.origin, &sp.ops, now);
    if (!sp.last) return PD_OK;
    if (!p->sync_ignore) {
        pd_model_partition_end(r->m, sp.origin, now);
        p->seq = sp.seq;
        p->kept_inc = p->kept_seq = 0; /* replaced whole: nothing kept to compare */
        p->force_sync = false;
        r->stats.syncs_done++;
    }
    repl__end_sync(r, p, now);
    return PD_OK;
}


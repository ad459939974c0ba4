/* presence_sync.c - the sync event: a socket server's complete list of its
 * live connections, in one message or in parts, and what it means for the
 * other nodes (the server may have moved here).
 *
 * Design:
 * - A sync in parts (sync_id, part 1..parts) is one sync spread over
 *   several messages. Part 1 starts it (and supersedes any unfinished one
 *   of that server); each part adds or claims its entries and marks them
 *   MARK_SYNC; a part may repeat one already applied (a retry), but may not
 *   skip one. The last part removes what no part listed. A connect between
 *   parts is newer than the list and is marked too. An unfinished sync is
 *   dropped PRESENCE_SYNC_PARTS_TIMEOUT_MS after its last part, logged;
 *   what its parts added stays (those connections exist), nothing is
 *   removed. A sync without sync_id is the one-part case.
 * - Server moves: a complete sync makes this node the server's one node.
 *   Devices of that server owned by other nodes and not listed are ghosts
 *   of the server's earlier attachment: they leave here at once, and a
 *   SYNCED op (server, hlc of the completion, origin) tells every node to
 *   drop other owners' devices of the server with an older claim. Each
 *   owner removes its own such devices with a REMOVE of its partition, so
 *   state transfers and restarts agree; the others drop theirs locally at
 *   once. The listed devices were claimed here before the op (older claims
 *   but owned by the origin, so they stay), and a claim newer than the op
 *   (a connect after the move back) is never touched.
 * - Limits: an entry that would give its user more than
 *   max_devices_per_user devices is refused alone and listed in
 *   pd_model_refusals (the reply is partial); the rest applies. */
#include <string.h>
#include "base/alloc.h"
#include "base/log.h"
#include "model/presence_int.h"

#define SYNC_PARTS_TIMEOUT_DEFAULT_MS 30000u

void pd__sync_run_free(pd_model *m, pd_server *s) {
    if (s->run == NULL) return;
    pd_theap_disarm(&m->timers, &s->run->expiry);
    pd_free(s->run);
    s->run = NULL;
}

void pd__sync_run_expire(pd_model *m, pd_sync_run *run) {
    pd_server *s = run->server;
    pd_log(PD_LOG_WARN, "sync '%.*s' of server '%.*s' dropped: %u of its %u parts arrived "
           "and none for PRESENCE_SYNC_PARTS_TIMEOUT_MS; nothing removed",
           (int)run->id_n, run->id, (int)s->id_n, s->id, run->got, run->parts);
    pd__sync_run_free(m, s);
    pd__drop_server_if_unused(m, s);
}

static uint64_t parts_timeout(const pd_model *m) {
    return m->cfg.sync_parts_timeout_ms ? m->cfg.sync_parts_timeout_ms
                                        : SYNC_PARTS_TIMEOUT_DEFAULT_MS;
}

/* Checks that this part may apply now; starts the run on part 1. Nothing
 * changes on error. *first: the part starts the sync (marks are cleared). */
static pd_status run_admit(pd_model *m, pd_server *s, const pd_event *ev, bool *first,
                           pd_err *err) {
    pd_sync_run *run = s->run;
    bool same = run && ev->sync_id.n && pd_str_eq(ev->sync_id, (pd_str){run->id, run->id_n});
    *first = ev->part == 1;
    if (ev->part > 1 && (!same || ev->part > run->got + 1u)) {
        if (!same)
            pd_err_set(err, PD_EBADVALUE, "sync '%.*s' part %u: no such sync under way "
                       "(send it again from part 1)", (int)ev->sync_id.n, ev->sync_id.p, ev->part);
        else
            pd_err_set(err, PD_EBADVALUE, "sync '%.*s' part %u: part %u is missing",
                       (int)ev->sync_id.n, ev->sync_id.p, ev->part, run->got + 1u);
        return PD_EBADVALUE;
    }
    if (same && ev->parts != run->parts) {
        pd_err_set(err, PD_EBADVALUE, "sync '%.*s' has %u parts, not %u", (int)ev->sync_id.n,
                   ev->sync_id.p, run->parts, ev->parts);
        return PD_EBADVALUE;
    }
    if (!*first || ev->parts == 1) return PD_OK;
    if (run == NULL && (run = pd_calloc(1, sizeof *run)) == NULL) return PD_ENOMEM;
    pd_theap_disarm(&m->timers, &run->expiry);
    memset(run, 0, sizeof *run);
    run->expiry.kind = TK_SYNC;
    run->server = s;
    run->parts = ev->parts;
    run->id_n = (uint8_t)ev->sync_id.n;
    memcpy(run->id, ev->sync_id.p, ev->sync_id.n);
    s->run = run;
    return PD_OK;
}

static void refuse(pd_model *m, pd_str conn, const pd_err *e) {
    if (m->nrefusals == m->refusals_cap) {
        uint32_t cap = m->refusals_cap ? m->refusals_cap * 2 : 16;
        pd_refusal *v = pd_realloc(m->refusals, cap * sizeof *v);
        if (v == NULL) return; /* still refused, just not listed */
        m->refusals = v;
        m->refusals_cap = cap;
    }
    pd_refusal *r = &m->refusals[m->nrefusals++];
    r->conn = conn;
    r->code = e->code;
    memcpy(r->message, e->msg, sizeof r->message);
}

/* One entry: keep, claim or add its device, and mark it. */
static pd_status sync_entry(pd_model *m, pd_server *s, const pd_sync_conn *c, uint64_t now) {
    pd_status st = PD_OK;
    pd_device *d = pd__device_find(m, s, c->conn);
    /* The label too: a conn id the server reused may still name a stale
     * entry (its remove not applied yet), which must not lend its label. */
    const pd_user *du = d ? pd__dev_user(m, d) : NULL;
    bool same = d && du->id_n == c->user.n &&
                memcmp(du->id, c->user.p, c->user.n) == 0 && d->label_n == c->device.n &&
                memcmp(d->buf + d->conn_n, c->device.p, c->device.n) == 0;
    if (same && pd__dev_node(m, d) != m->node) {
        d = pd__claim_local(m, d, now, &st);
    } else if (same) {
        pd__renew_claim(m, d, now);
    } else {
        pd_err e = {PD_OK, ""};
        pd_user *u = pd__user_find(m, c->user);
        bool replaces_own = d && du == u; /* one leaves as one comes */
        if (!replaces_own && pd__limit_sync_entry(m, u, c->user, &e) != PD_OK) {
            refuse(m, c->conn, &e); /* unmarked: a stale entry of that conn leaves */
            return PD_OK;
        }
        pd_device *old = d;
        d = pd__local_add(m, s, c->conn, c->user, c->device, (pd_str){NULL, 0}, now, &st);
        if (d && old) pd__device_remove(m, old, now, 0);
    }
    if (st == PD_OK) d->mark |= MARK_SYNC;
    return st;
}

/* The last part: what no part listed leaves, ours and (a server that
 * moved here) other nodes', and the peers learn that the server synced. */
static void sync_complete(pd_model *m, pd_server *s, uint64_t now) {
    uint64_t h = pd__hlc_next(m, now);
    for (int pass = 0; pass < 2; pass++) { /* idle ones first: see pd__device_remove */
        for (pd_device *d = pd__dev_at(m, s->devs), *next; d; d = next) {
            next = pd__dev_at(m, d->snext);
            /* Another owner's device gets its version from that owner's
             * REMOVE (at h, or earlier if it had gone already), as on
             * every node. */
            if (!(d->mark & MARK_SYNC) && (pass || d->state == PD_DEV_IDLE))
                pd__device_remove(m, d, now, 0);
        }
    }
    pd__sync_run_free(m, s);
    pd_op op = {.kind = PD_OP_SYNCED, .server = {s->id, s->id_n}, .hlc = h,
                .writer = pd_str_c(m->node)};
    pd__emit(m, &op);
}

pd_status pd__ev_sync(pd_model *m, pd_server *s, const pd_event *ev_in, uint64_t now,
                      pd_err *err) {
    pd_sync_iter it;
    pd_sync_conn c;
    pd_status st;
    bool first;
    pd_event whole = *ev_in;
    const pd_event *ev = &whole;
    if (whole.sync_id.n == 0 || whole.part == 0 || whole.parts == 0) {
        whole.part = whole.parts = 1; /* not from the decoder: one whole sync */
        whole.sync_id = (pd_str){NULL, 0};
    }
    if ((st = run_admit(m, s, ev, &first, err)) != PD_OK) return st;
    if (first)
        for (pd_device *d = pd__dev_at(m, s->devs); d; d = pd__dev_at(m, d->snext))
            d->mark &= (uint8_t)~MARK_SYNC;
    pd_sync_iter_init(&it, ev);
    while (pd_sync_iter_next(&it, &c)) {
        if ((st = sync_entry(m, s, &c, now)) != PD_OK) return st;
    }
    /* A sync starts the server over: its seq may restart. */
    s->has_seq = 0;
    if (ev->part == ev->parts) {
        sync_complete(m, s, now);
        return PD_OK;
    }
    if (s->run->got < ev->part) s->run->got = ev->part;
    pd_theap_arm(&m->timers, &s->run->expiry, now + parts_timeout(m));
    return PD_OK;
}

/* ---- SYNCED ops from peers ------------------------------------------------------ */

void pd__apply_synced(pd_model *m, const char *origin, const pd_op *op, uint64_t now) {
    pd_server *s = NULL;
    m->now = now;
    for (pd_hnode *e = pd_htab_bucket(&m->servers, pd_hash(op->server.p, op->server.n)); e;
         e = e->next) {
        pd_server *x = (pd_server *)e;
        if (x->id_n == op->server.n && memcmp(x->id, op->server.p, op->server.n) == 0) s = x;
    }
    if (s == NULL) return;
    for (int pass = 0; pass < 2; pass++) { /* idle ones first: see pd__device_remove */
        for (pd_device *d = pd__dev_at(m, s->devs), *next; d; d = next) {
            next = pd__dev_at(m, d->snext);
            if (pd__dev_node(m, d) != origin && d->claim < op->hlc &&
                (pass || d->state == PD_DEV_IDLE)) {
                /* A REMOVE of ours goes to the peers, at h; another
                 * owner's device takes the version of that owner's. */
                m->write_at = op->hlc;
                pd__device_remove(m, d, now, 0);
                m->write_at = 0;
            }
        }
    }
    pd__drop_server_if_unused(m, s);
}

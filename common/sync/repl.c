/* repl.c - replication between nodes (see repl.h for the design): peers,
 * deltas in and out, heartbeats, time and life cycle. State transfer is in
 * repl_transfer.c, restarts in repl_restore.c (repl_int.h). */
#include "sync/repl_int.h"


/* ---- refusals and the clock bound ------------------------------------------ */


static const char *const refuse_names[PD_REFUSE_COUNT] = {
    "clock_ahead", "incarnation_ahead", "wrong_subject", "not_a_peer", "peer_table_full",
    "sync_rate",
};

const char *pd_refuse_name(pd_refuse why) {
    return why < PD_REFUSE_COUNT ? refuse_names[why] : "unknown";
}

uint64_t repl__skew(const pd_repl *r) {
    return r->cfg.max_clock_skew_ms ? r->cfg.max_clock_skew_ms : PD_MAX_CLOCK_SKEW_DEFAULT_MS;
}

/* A wall-clock reading (ms) too far ahead of ours to believe. */
bool repl__ms_ahead(const pd_repl *r, uint64_t ms, uint64_t now) {
    return ms > now && ms - now > repl__skew(r);
}

/* Counts and logs (rate-limited) a message dropped unapplied; PD_OK: it was
 * well-formed, only not believed. */
__attribute__((format(printf, 4, 5)))
pd_status repl__refuse(pd_repl *r, pd_refuse why, uint64_t now, const char *fmt, ...) {
    char msg[200];
    uint32_t suppressed = 0;
    va_list ap;
    r->stats.refused[why]++;
    if (!pd_ratelimit_allow(&r->refuse_log, now, &suppressed)) return PD_OK;
    if (suppressed) pd_log(PD_LOG_WARN, "%u similar refusals suppressed", suppressed);
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pd_log(PD_LOG_WARN, "refused (%s): %s", pd_refuse_name(why), msg);
    return PD_OK;
}

/* True if an op of the list carries an HLC beyond the bound. */
/* Whether any op is ahead: whether the largest is (pd_hlc_ahead grows
 * with the hlc), noted by the decoder, so that the ops are not read an
 * extra time (a third of a stream replay's work). */
bool repl__ops_ahead(const pd_repl *r, const pd_ops *ops, uint64_t now) {
    return pd_hlc_ahead(ops->hlc_max, now, repl__skew(r));
}

/* ---- peers ------------------------------------------------------------------ */

peer *repl__peer_find(const pd_repl *r, pd_str id) {
    for (uint32_t i = 0; i < r->npeers; i++) {
        if (pd_str_eq(peer_id(r->peers[i]), id)) return r->peers[i];
    }
    return NULL;
}

peer *repl__peer_get(pd_repl *r, pd_str id) {
    peer *p = repl__peer_find(r, id);
    if (p || r->npeers >= PD_VC_MAX - 1) return p;
    /* The notifier must know every peer before it can be announcing. */
    if (pd_notifier_add_peer(r->nf, id) != PD_OK) return NULL;
    peer **v = pd_realloc(r->peers, sizeof *v * (r->npeers + 1));
    if (v == NULL) return NULL;
    r->peers = v;
    p = pd_calloc(1, sizeof *p);
    if (p == NULL) return NULL;
    memcpy(p->id, id.p, id.n);
    p->id_n = id.n;
    r->peers[r->npeers++] = p;
    return p;
}

static void drop_pending(peer *p);

/* Forgets peer i whole (down for long: PROTOCOL "admission"). */
static void peer_remove(pd_repl *r, uint32_t i) {
    peer *p = r->peers[i];
    pd_log(PD_LOG_INFO, "node %s forgotten (silent for %llu ms)", p->id,
           (unsigned long long)(down_after(r) + r->cfg.node_timeout_ms));
    pd_notifier_remove_peer(r->nf, peer_id(p));
    uint32_t k = r->nforgotten++ % FORGOTTEN_MAX;
    memcpy(r->forgotten[k].id, p->id, sizeof p->id);
    r->forgotten[k].inc = p->inc;
    r->forgotten[k].last_hb = p->last_hb;
    drop_pending(p);
    pd_free(p->heal_need);
    pd_free(p->hb);
    pd_free(p);
    memmove(&r->peers[i], &r->peers[i + 1], sizeof *r->peers * (r->npeers - i - 1));
    r->npeers--;
    r->stats.peers_forgotten++;
}

static void drop_pending(peer *p) {
    for (uint32_t i = 0; i < p->npending; i++) pd_free(p->pending[i].buf);
    pd_free(p->pending);
    p->pending = NULL;
    p->npending = 0;
    p->overflow = false;
}

static void hold(peer *p, uint64_t seq, const void *buf, size_t len) {
    if (p->npending >= PENDING_MAX) {
        p->overflow = true;
        return;
    }
    held *v = pd_realloc(p->pending, sizeof *v * (p->npending + 1));
    uint8_t *copy = pd_malloc(len);
    if (v) p->pending = v;
    if (v == NULL || copy == NULL) {
        pd_free(copy);
        p->overflow = true;
        return;
    }
    memcpy(copy, buf, len);
    p->pending[p->npending++] = (held){seq, len, copy};
}

/* ---- notifications (notify/notify.h) ------------------------------------------------ */

static bool is_ready(const pd_repl *r) { return pd_notifier_announcing(r->nf); }

/* The notifier's publish callback: out through the replica's io. */
static void publish_notification(void *ud, const pd_view *v) {
    pd_repl *r = ud;
    r->published++;
    if (r->io.publish) r->io.publish(r->io.ud, v);
}

/* A change that a peer announces: it owes a notification, which its next
 * heartbeats' count should show (check_announcing). */
static void owe(pd_repl *r, pd_str user) {
    pd_str who;
    pd_notifier_announcer_of(r->nf, user, &who);
    if (pd_str_eqc(who, r->self)) return;
    peer *p = repl__peer_find(r, who);
    if (p == NULL || !p->ready) return;
    if (p->owed++ == 0) {
        p->owed_since = r->now;
        p->sum_at_owe = p->vc_sum;
    }
    /* What we had applied of the others when this change was made. */
    uint64_t sum = r->seq;
    for (uint32_t i = 0; i < r->npeers; i++)
        if (r->peers[i] != p) sum += r->peers[i]->seq;
    p->owed_total = sum;
}

/* The model's change callback: the notifier decides, at the time of the
 * call in progress. */
static void on_change(void *ud, const pd_view *v) {
    pd_repl *r = ud;
    pd_notifier_change(r->nf, v, r->now);
    if (is_ready(r)) owe(r, v->user);
}

/* The model's floor callback: no change of status, so nothing is owed
 * (a peer announces floors only around its heals: pd_notifier_floor). */
static void on_floor(void *ud, const pd_view *v) {
    pd_repl *r = ud;
    pd_notifier_floor(r->nf, v, r->now);
}

/* The model's callbacks for a write that changes no status: asked in
 * any window of floors (the closing walk says the users written in it
 * again), announced only in the window after a restart that got devices
 * back (pd_notifier_same). */
static bool want_same(void *ud) {
    pd_repl *r = ud;
    return pd_notifier_wants_same(r->nf, r->now);
}

static void on_same(void *ud, const pd_view *v) {
    pd_repl *r = ud;
    pd_notifier_same(r->nf, v, r->now);
}

/* p's part in the announcing set (alive and ready) changes. */
static void set_membership(pd_repl *r, peer *p, bool alive, bool ready) {
    p->alive = alive;
    p->ready = ready;
    pd_notifier_set_peer(r->nf, peer_id(p), alive && ready);
}

/* ---- ops and deltas out ---------------------------------------------------------- */

static void on_op(void *ud, const pd_op *op);

/* The dump of our own partition gives ADD and register ops: both leave
 * as ops of the new incarnation. */
void repl__on_op_dump(void *ud, const pd_op *op) { on_op(ud, op); }

static void on_op(void *ud, const pd_op *op) {
    pd_repl *r = ud;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &r->ops, msgpack_sbuffer_write);
    pd_op_encode(&pk, op);
    r->nops++;
    if (r->ops.size >= r->cfg.max_msg_bytes / 2 && !r->hold_ops) pd_repl_flush(r);
}

void pd_repl_flush(pd_repl *r) {
    /* A traced event that made no op still gets its (empty) delta, so
     * that every node reports it. */
    if (r->nops == 0 && r->ntrace == 0) return;
    /* A restart that carries its life before says so until its "restored"
     * delta: a peer that first hears this life from a delta decides too. */
    pd_delta_carry c = {r->carry != CARRY_NONE ? r->carry_inc : 0, NULL};
    msgpack_sbuffer_clear(&r->out);
    pd_delta_encode_carry(&r->out, S(r->self), r->cfg.inc, ++r->seq, r->ops.data, r->ops.size,
                          r->nops, r->trace, r->ntrace, r->batch_now, &c);
    msgpack_sbuffer_clear(&r->ops);
    r->nops = 0;
    r->ntrace = 0;
    r->stats.deltas_sent++;
    if (r->io.send_delta) r->io.send_delta(r->io.ud, r->out.data, r->out.size);
}

/* ---- state transfer -------------------------------------------------------------- */

static void request_sync(pd_repl *r, peer *origin, pd_str from, uint64_t now) {
    if (origin->syncing) return;
    origin->syncing = true;
    origin->sync_ignore = false;
    origin->sync_part = 0;
    origin->sync_heard = now;
    origin->sync_req = ++r->last_req;
    r->stats.syncs_requested++;
    pd_sync_req q = {S(r->self), peer_id(origin), origin->sync_req};
    msgpack_sbuffer_clear(&r->out);
    pd_sync_req_encode(&r->out, &q);
    if (r->io.send_sync_request) r->io.send_sync_request(r->io.ud, from, r->out.data, r->out.size);
}

void repl__apply_ops(pd_repl *r, pd_str origin, const pd_ops *ops, uint64_t now) {
    pd_ops_iter it;
    pd_op op;
    pd_ops_iter_init(&it, ops);
    while (pd_ops_next(&it, &op)) {
        if (pd_model_apply_op(r->m, origin, &op, now) != PD_OK)
            pd_log(PD_LOG_WARN, "could not apply an op from %.*s", (int)origin.n, origin.p);
    }
}

static int cmp_held(const void *a, const void *b) {
    uint64_t x = ((const held *)a)->seq, y = ((const held *)b)->seq;
    return x < y ? -1 : x > y;
}


/* After a transfer: the held-back deltas that follow it, in order. */
static void replay_pending(pd_repl *r, peer *p, uint64_t now) {
    held *v = p->pending;
    uint32_t n = p->npending;
    bool overflow = p->overflow;
    p->pending = NULL;
    p->npending = 0;
    p->overflow = false;
    if (n > 1) qsort(v, n, sizeof *v, cmp_held); /* v is NULL when n == 0 */
    for (uint32_t i = 0; i < n; i++) {
        pd_delta d;
        pd_err err;
        if (pd_delta_decode(v[i].buf, v[i].len, &d, &err) == PD_OK && d.inc == p->inc)
            repl__apply_delta(r, p, &d, now);
        pd_free(v[i].buf);
    }
    pd_free(v);
    if (overflow && !p->syncing && p->alive) request_sync(r, p, peer_id(p), now);
}

/* since, or further back: as far as the last heal went, if it was made at
 * or after `made_from` (its announcements may not have got through). */
static uint64_t back_to_heal(const pd_repl *r, uint64_t since, uint64_t made_from) {
    return r->healed_at && r->healed_at >= made_from && r->healed_since < since ? r->healed_since
                                                                                : since;
}

/* Re-announce, two sync intervals from now, what changed since `since`
 * and every user not offline (pd_notifier_heal): the other side may not
 * have heard us yet, and until it does it still announces from its side's
 * view (its timers for our users fire), now to everyone. */
static void schedule_heal(pd_repl *r, uint64_t since, uint64_t now) {
    /* A link that flaps breaks again before the last heal's announcements
     * got through: this one goes back as far as that one did. */
    uint64_t d = down_after(r);
    since = back_to_heal(r, since, now >= d ? now - d + 1 : 0);
    if (r->heal_at == 0 || since < r->heal_since) r->heal_since = since;
    r->heal_at = now + 2 * r->cfg.sync_interval_ms;
}

/* Announces again what we announced since `since` (pd_notifier_rejoin);
 * chained: it went back as far as an earlier repeat (repeat_after_silence). */
static void repeat(pd_repl *r, uint64_t since, bool prev_too, bool chained, uint64_t now) {
    pd_notifier_rejoin(r->nf, r->m, since, prev_too, now);
    r->repeat_at = now;
    r->repeat_since = since;
    r->repeat_chained = chained;
}

/* The same after a silence that began at silent_from, two sync intervals
 * from now (pd_repl_tick): a route back from a break carries our
 * heartbeats before the other side's interest in our notifications has
 * reached our NATS server (chaos seed 16: a repeat made at the first
 * heartbeat heard was lost). A repeat or heal made since shortly before
 * the silence was perhaps lost in it too (a link that flaps, a node back
 * while its link does): this one goes back as far as that one did, once.
 * A repeat that went back so is not followed further: while a link keeps
 * flapping, each silence would otherwise say the same changes again (in
 * it_partition's flap, whose blocks TCP rides out, every user changed
 * just before it got one notification per cycle); a change is said at
 * most three times so, and a longer loss is a heal's (a peer taken for
 * down). */
static void repeat_after_silence(pd_repl *r, uint64_t since, uint64_t silent_from, uint64_t now) {
    uint64_t si = r->cfg.sync_interval_ms;
    bool chained = false;
    if (r->repeat_at && !r->repeat_chained && r->repeat_at + si >= silent_from &&
        r->repeat_since < since) {
        since = r->repeat_since;
        chained = true;
    }
    since = back_to_heal(r, since, silent_from > si ? silent_from - si : 0);
    if (r->repeat_due == 0 || since < r->repeat_due_since) {
        r->repeat_due_since = since;
        r->repeat_due_chained = chained;
    }
    r->repeat_due = now + 2 * si;
}

/* A heal with p, once p has the devices it dropped back and we have its
 * floors (see heal_wait in repl_int.h); bounded by a state transfer's
 * timeout and a node timeout. What we applied of each origin now is what
 * p's heartbeats must show (out of memory: ours only). */
static void heal_after_floors(pd_repl *r, peer *p, uint64_t since, uint64_t now) {
    if (p->heal_wait == 0 || since < p->heal_from) p->heal_from = since;
    p->heal_wait = 1;
    p->heal_our_seq = r->seq;
    p->heal_by = now + sync_timeout(r) + r->cfg.node_timeout_ms;
    pd_free(p->heal_need);
    p->nheal_need = 0;
    p->heal_need = r->npeers ? pd_malloc(sizeof *p->heal_need * r->npeers) : NULL;
    for (uint32_t i = 0; p->heal_need && i < r->npeers; i++) {
        const peer *q = r->peers[i];
        if (q != p && q->alive && q->inc)
            p->heal_need[p->nheal_need++] = (struct heal_need){q, q->inc, q->seq};
    }
}

/* True if hb (p's) shows every delta we had applied when the heal began. */
static bool heal_shown(const pd_repl *r, const peer *p, const pd_heartbeat *hb) {
    for (int32_t i = -1; i < (int32_t)p->nheal_need; i++) {
        const peer *q = NULL;
        if (i >= 0) {
            for (uint32_t k = 0; k < r->npeers && q == NULL; k++)
                if (r->peers[k] == p->heal_need[i].q) q = r->peers[k];
            if (q == NULL) continue; /* forgotten since */
        }
        pd_str id = q ? peer_id(q) : S(r->self);
        uint64_t inc = q ? p->heal_need[i].inc : r->cfg.inc;
        uint64_t seq = q ? p->heal_need[i].seq : p->heal_our_seq;
        bool shown = false;
        for (uint32_t k = 0; k < hb->nvc && !shown; k++) {
            const pd_vc_entry *e = &hb->vc[k];
            shown = pd_str_eq(e->node, id) && (e->inc > inc || (e->inc == inc && e->seq >= seq));
        }
        if (!shown) return false;
    }
    return true;
}

/* Moves p's heal on: stage 2 done (or its bound passed), it is scheduled. */
static void heal_check(pd_repl *r, peer *p, uint64_t now) {
    if (p->heal_wait == 0) return;
    bool floors_in = p->heal_wait == 2 && !p->syncing && p->seq >= p->heal_its_seq;
    if (!floors_in && now < p->heal_by) return;
    p->heal_wait = 0;
    pd_free(p->heal_need);
    p->heal_need = NULL;
    p->nheal_need = 0;
    schedule_heal(r, p->heal_from, now);
}

void repl__end_sync(pd_repl *r, peer *p, uint64_t now) {
    p->syncing = false;
    p->synced_at = now;
    replay_pending(r, p, now);
    repl__fresh_check(p);
}

/* ---- deltas in -------------------------------------------------------------------- */

/* Registers are last-writer-wins, and travel in their writer's deltas and
 * state transfers only. A write that reached only some nodes before its
 * writer lost it (killed before its snapshot and the stream kept it, its
 * delta delivered live to some) is in no later dump of the writer's own:
 * the nodes holding it pass it on, as ops of theirs that name the writer,
 * when a life of the writer that we did not know is ready and follows
 * our deltas (its heartbeat names our incarnation:
 * it applies what we send from then on; before that it could refuse it
 * as from no live peer). A repeat changes nothing anywhere. The writer
 * sends each such write again as its own (own_write_back in
 * model/presence_repl.c), for the nodes that miss our delta and repair
 * that gap by a transfer of our partition, which does not carry it. */
static void pass_on_registers(pd_repl *r, peer *p) {
    if (pd_model_registers_dump_step(r->m, peer_id(p), p->kept_verified, &p->regs_at,
                                     PASS_ON_BUCKETS, repl__on_op_dump, r))
        p->regs_passing = false;
}

/* Forgets what origin p owned (down, or replaced by a new incarnation). */
static void forget_partition(pd_repl *r, peer *p, uint64_t now) {
    pd_model_drop_owner(r->m, peer_id(p), now);
    p->seq = 0;
    p->kept_inc = p->kept_seq = 0;
    p->syncing = false;
    p->claim_at = p->claim_seq = 0;
    drop_pending(p);
}

/* A new life that restored the one we hold whole (its deltas applied in
 * order, no transfer under way, not dropped as down) keeps its devices:
 * its "restored" delta says whether they are what it restored. */
void repl__new_incarnation(pd_repl *r, peer *p, uint64_t inc, uint64_t carries, uint64_t now) {
    if (p->inc != 0 && carries == p->inc && p->seq > 0 && !p->syncing) {
        pd_log(PD_LOG_INFO, "node %s restarted (incarnation %llu) from incarnation %llu: keeping "
               "its devices until it says what it restored", p->id, (unsigned long long)inc,
               (unsigned long long)carries);
        p->kept_inc = p->inc;
        p->kept_seq = p->seq;
        p->claim_at = p->claim_seq = 0;
        drop_pending(p);
    } else if (p->inc != 0) {
        pd_log(PD_LOG_INFO, "node %s restarted (incarnation %llu): dropping its old devices",
               p->id, (unsigned long long)inc);
        forget_partition(r, p, now);
    }
    p->inc = inc;
    p->seq = 0;
    p->hb_seq = 0;
    p->ann_known = false;
    p->owed = 0;
    p->claim_at = p->claim_seq = 0;
    p->contradicted = p->force_sync = false;
    p->shown_self_seq = 0;
    p->dropped_us = false;
    p->regs_owed = true; /* see pass_on_registers */
    p->kept_verified = false;
    p->regs_passing = false;
}

pd_status repl__apply_delta(pd_repl *r, peer *p, const pd_delta *d, uint64_t now) {
    if (d->seq <= p->seq) {
        r->stats.deltas_dup++;
        /* Its ops came first by a state transfer: applied by now too. */
        if (d->ntrace && r->io.traced) r->io.traced(r->io.ud, d);
        return PD_OK;
    }
    if (d->seq != p->seq + 1) {
        r->stats.gaps++;
        /* Lost deltas of an origin we were following: a route broke (NATS
         * keeps nothing it could not deliver), so notifications of that
         * time may be lost too. A late start (nothing applied yet) is not
         * a break. */
        if (p->seq > 0)
            schedule_heal(r, now > down_after(r) ? now - down_after(r) : 0, now);
        return PD_EINTERNAL; /* the caller holds it back and repairs */
    }
    repl__apply_ops(r, d->node, &d->ops, now);
    p->seq = d->seq;
    r->stats.deltas_applied++;
    if (d->has_restored) repl__check_restored(r, p, &d->restored, now);
    if (d->ntrace && r->io.traced) r->io.traced(r->io.ud, d);
    return PD_OK;
}

/* A restarted peer's "restored": its partition as it restored it (and
 * changed since, up to this delta), against our copy. Equal: what we kept
 * of its life before stays. Else (we kept more or less than it restored,
 * or dropped it): its partition is fetched from itself; while we replay
 * the stream, once live (nothing more of it applies until then). */
void repl__check_restored(pd_repl *r, peer *p, const pd_restored *rs, uint64_t now) {
    uint64_t n, digest;
    bool kept = p->kept_inc != 0;
    p->kept_inc = p->kept_seq = 0;
    pd_model_partition_digest(r->m, peer_id(p), &n, &digest);
    if (n == rs->devices && digest == rs->digest) {
        /* It holds the devices we hold of it: the last_seen they imply
         * need not be passed on to it (pass_on_registers). */
        p->kept_verified = rs->inc != 0;
        if (kept) {
            r->stats.restart_kept++;
            pd_log(PD_LOG_INFO, "node %s restored incarnation %llu: the %llu devices we kept are "
                   "what it holds", p->id, (unsigned long long)rs->inc, (unsigned long long)n);
        }
        return;
    }
    r->stats.restart_refetched++;
    pd_log(kept ? PD_LOG_WARN : PD_LOG_INFO, "node %s restored %llu devices of incarnation %llu, we "
           "hold %llu%s: fetching its partition", p->id, (unsigned long long)rs->devices,
           (unsigned long long)rs->inc, (unsigned long long)n,
           n == rs->devices ? " that differ" : "");
    if (r->replaying) {
        p->seq = 0; /* its next live delta is a gap: held, and the partition fetched */
        return;
    }
    p->force_sync = true;
    request_sync(r, p, peer_id(p), now);
}

void pd_repl_trace(pd_repl *r, uint64_t id) {
    r->trace[r->ntrace++] = id;
    if (r->ntrace == PD_TRACE_MAX) pd_repl_flush(r);
}

pd_status pd_repl_on_delta(pd_repl *r, const void *buf, size_t len, uint64_t now, pd_err *err) {
    return pd_repl_on_delta_from(r, (pd_str){NULL, 0}, buf, len, now, err);
}

/* A delta of the origin's own that we count as applied already, although
 * its own vector clock (its last heartbeat) said it had sent fewer: it sends
 * this one now, after that heartbeat, so what we applied under that number
 * came from someone else (forged deltas with its next numbers, finding 7 of
 * issue #11). The count is not trusted: its partition is fetched again from
 * itself, at once. A transfer that ended lately may really have brought it
 * first (from a peer that was quicker to hear it): not counted then. True:
 * the delta is done with. */
static bool count_contradicted(pd_repl *r, peer *p, const pd_delta *d, uint64_t now) {
    if (d->inc != p->inc || d->seq > p->seq || d->seq <= p->hb_seq) return false;
    if (p->synced_at && now < p->synced_at + 2 * r->cfg.sync_interval_ms) return false;
    r->stats.contradictions++;
    pd_log(PD_LOG_WARN, "node %s sends delta %llu now, after its vector clock said %llu, but we "
           "applied %llu: fetching its partition again", p->id, (unsigned long long)d->seq,
           (unsigned long long)p->hb_seq, (unsigned long long)p->seq);
    p->force_sync = true;
    request_sync(r, p, peer_id(p), now);
    return true;
}

/* Only a live peer's ops apply: an origin admitted by its own heartbeat
 * and not down. Anything else would add devices that no timeout removes
 * (only a live peer can fall silent). */
pd_status pd_repl_on_delta_from(pd_repl *r, pd_str from, const void *buf, size_t len,
                                uint64_t now, pd_err *err) {
    r->now = now;
    pd_delta d;
    pd_status s = pd_delta_decode(buf, len, &d, err);
    if (s != PD_OK) {
        r->stats.bad_messages++;
        return s;
    }
    if (from.p && !pd_str_eq(from, d.node))
        return repl__refuse(r, PD_REFUSE_WRONG_SUBJECT, now, "delta of %.*s on the subject of %.*s",
                      (int)d.node.n, d.node.p, (int)from.n, from.p);
    if (pd_str_eqc(d.node, r->self)) return PD_OK;
    if (repl__ms_ahead(r, d.inc, now))
        return repl__refuse(r, PD_REFUSE_INC_AHEAD, now, "delta of %.*s: incarnation %llu is ahead "
                      "of our clock", (int)d.node.n, d.node.p, (unsigned long long)d.inc);
    if (repl__ops_ahead(r, &d.ops, now))
        return repl__refuse(r, PD_REFUSE_CLOCK_AHEAD, now, "delta of %.*s: an op's clock is ahead "
                      "of ours", (int)d.node.n, d.node.p);
    peer *p = repl__peer_find(r, d.node);
    if (p == NULL || !p->alive)
        return repl__refuse(r, PD_REFUSE_NOT_A_PEER, now, "delta of %.*s, not a live peer here",
                      (int)d.node.n, d.node.p);
    p->last_heard = now;
    if (d.inc < p->inc) return PD_OK; /* from an incarnation already replaced */
    if (d.inc > p->inc) repl__new_incarnation(r, p, d.inc, d.carries, now);
    if (p->syncing) {
        hold(p, d.seq, buf, len);
        return PD_OK;
    }
    if (count_contradicted(r, p, &d, now)) return PD_OK;
    if (repl__apply_delta(r, p, &d, now) != PD_OK) {
        hold(p, d.seq, buf, len);
        request_sync(r, p, d.node, now);
    } else {
        repl__fresh_delta(p, now);
        if (r->io.applied != NULL) r->io.applied(r->io.ud, d.at, now);
    }
    return PD_OK;
}

/* ---- heartbeats ------------------------------------------------------------------- */

static void mark_down(pd_repl *r, peer *p, uint64_t now, const char *why) {
    p->suspected = false;
    set_membership(r, p, false, p->ready);
    r->stats.nodes_down++;
    pd_log(PD_LOG_WARN, "node %s is down (%s): its devices leave", p->id, why);
    forget_partition(r, p, now);
    pd_notifier_take_over(r->nf, r->m, now);
}

/* True if id was forgotten in its life inc (then *last_hb is when it was
 * last heard, and the record goes). */
static bool was_forgotten(pd_repl *r, pd_str id, uint64_t inc, uint64_t *last_hb) {
    uint32_t n = r->nforgotten < FORGOTTEN_MAX ? r->nforgotten : FORGOTTEN_MAX;
    for (uint32_t i = 0; i < n; i++) {
        if (r->forgotten[i].inc == inc && pd_str_eqc(id, r->forgotten[i].id)) {
            *last_hb = r->forgotten[i].last_hb;
            r->forgotten[i].inc = 0;
            return inc != 0;
        }
    }
    return false;
}

/* When any incarnation of id was last heard before it was forgotten (0:
 * never, or not remembered). */
static uint64_t forgotten_heard(const pd_repl *r, pd_str id) {
    uint32_t n = r->nforgotten < FORGOTTEN_MAX ? r->nforgotten : FORGOTTEN_MAX;
    uint64_t at = 0;
    for (uint32_t i = 0; i < n; i++)
        if (pd_str_eqc(id, r->forgotten[i].id) && r->forgotten[i].last_hb > at)
            at = r->forgotten[i].last_hb;
    return at;
}

static void keep_heartbeat(peer *p, const void *buf, size_t len) {
    uint8_t *copy = pd_malloc(len);
    if (copy == NULL) return;
    memcpy(copy, buf, len);
    pd_free(p->hb);
    p->hb = copy;
    p->hb_len = len;
}

/* The origin says it sent fewer deltas of this incarnation than we
 * applied: some were not its own (forged, or a restored old state). A
 * heartbeat can overtake a delta on its way, so the second such heartbeat
 * in a row decides: its partition is fetched again from itself, whatever
 * count we hold. True if that claim is done with. */
static bool contradicts(pd_repl *r, peer *q, const pd_vc_entry *e, pd_str from, uint64_t now) {
    if (e->inc != q->inc || e->seq >= q->seq) {
        q->contradicted = false;
        return false;
    }
    if (!q->contradicted) {
        q->contradicted = true;
        return true;
    }
    q->contradicted = false;
    r->stats.contradictions++;
    pd_log(PD_LOG_WARN, "node %s sent %llu deltas of this incarnation, we applied %llu: "
           "fetching its partition again", q->id, (unsigned long long)e->seq,
           (unsigned long long)q->seq);
    q->force_sync = true;
    request_sync(r, q, from, now);
    return true;
}

/* Anti-entropy: anything the sender has applied that we have not. */
static void catch_up_from(pd_repl *r, const pd_heartbeat *hb, uint64_t now) {
    for (uint32_t i = 0; i < hb->nvc; i++) {
        const pd_vc_entry *e = &hb->vc[i];
        if (pd_str_eqc(e->node, r->self) || e->inc == 0) continue;
        peer *q = repl__peer_find(r, e->node); /* never admitted from here */
        if (q == NULL || q->syncing || !q->alive) continue;
        bool is_sender = pd_str_eq(e->node, hb->node);
        /* An incarnation is believed only from the node itself. */
        if (!is_sender && e->inc != q->inc) continue;
        if (is_sender && contradicts(r, q, e, hb->node, now)) continue;
        if (e->inc < q->inc || (e->inc == q->inc && e->seq <= q->seq)) continue;
        if (e->inc > q->inc) {
            repl__new_incarnation(r, q, e->inc, hb->carries, now);
            request_sync(r, q, hb->node, now); /* nothing of it is on its way */
            continue;
        }
        if (q->claim_at == 0) q->claim_at = now;
        if (e->seq > q->claim_seq) {
            q->claim_seq = e->seq;
            snprintf(q->claim_from, sizeof q->claim_from, "%.*s", (int)hb->node.n, hb->node.p);
        }
    }
}

/* Half a sync interval, at most 200 ms: longer than a delta takes to
 * arrive, far shorter than the interval in which a lost one is repaired. */
static uint64_t claim_grace(const pd_repl *r) {
    uint64_t g = r->cfg.sync_interval_ms / 2;
    return g > 200 ? 200 : g;
}

/* Anti-entropy, second half: a claim that the deltas did not meet in time
 * means something was lost; fetch the partition. */
static void check_claims(pd_repl *r, uint64_t now) {
    for (uint32_t i = 0; i < r->npeers; i++) {
        peer *q = r->peers[i];
        if (q->claim_at == 0 || q->syncing) continue;
        if (q->seq >= q->claim_seq) {
            q->claim_at = 0;
            q->claim_seq = 0;
        } else if (now >= q->claim_at + claim_grace(r)) {
            q->claim_at = 0;
            q->claim_seq = 0;
            request_sync(r, q, pd_str_c(q->claim_from), now);
        }
    }
}

pd_status pd_repl_on_heartbeat(pd_repl *r, const void *buf, size_t len, uint64_t now,
                               pd_err *err) {
    return pd_repl_on_heartbeat_from(r, (pd_str){NULL, 0}, buf, len, now, err);
}

/* Why a heartbeat is not believed (its sender's clock), or NULL. */
static const char *hb_doubt(const pd_repl *r, const pd_heartbeat *hb, uint64_t now,
                            pd_refuse *why) {
    *why = PD_REFUSE_INC_AHEAD;
    if (repl__ms_ahead(r, hb->inc, now)) return "incarnation";
    *why = PD_REFUSE_CLOCK_AHEAD;
    if (pd_hlc_ahead(hb->hlc, now, repl__skew(r))) return "HLC";
    if (repl__ms_ahead(r, hb->wall, now)) return "wall clock";
    return NULL;
}

/* Our own clock: ahead of every live peer's by more than the bound means
 * ours is wrong (they refuse us); said once per change, and in metrics. */
static void check_own_clock(pd_repl *r) {
    uint32_t live = 0, behind = 0;
    for (uint32_t i = 0; i < r->npeers; i++) {
        if (!r->peers[i]->alive || !r->peers[i]->heard) continue;
        live++;
        behind += r->peers[i]->behind;
    }
    bool ahead = live > 0 && behind == live;
    if (ahead && !r->stats.clock_ahead)
        pd_log(PD_LOG_ERROR, "this node's wall clock is more than %llu ms ahead of every peer's: "
               "they refuse its messages until it is corrected (check NTP)",
               (unsigned long long)repl__skew(r));
    else if (!ahead && r->stats.clock_ahead)
        pd_log(PD_LOG_INFO, "this node's wall clock agrees with its peers' again");
    r->stats.clock_ahead = ahead;
}

/* `leaving` is believed at once (a clean stop is seen without waiting),
 * once per incarnation: if the node heartbeats again afterwards, it was
 * not leaving, and no later `leaving` of that incarnation is believed. Its
 * devices come back by state transfer within the offline delay, so the
 * one false `leaving` announces nobody offline. True: done with hb. */
static bool hb_leaving(pd_repl *r, peer *p, const pd_heartbeat *hb, uint64_t now) {
    if (hb->leaving) {
        if (p->alive && p->distrust_inc != p->inc) {
            p->left_inc = p->inc;
            mark_down(r, p, now, "it said it is leaving");
        }
        return true;
    }
    if (p->left_inc && p->left_inc == p->inc) {
        pd_log(PD_LOG_WARN, "node %s said it is leaving, then sent a heartbeat: its `leaving` "
               "is not believed for this incarnation", p->id);
        p->left_inc = 0;
        p->distrust_inc = p->inc;
    }
    return false;
}

/* True if hb's vector clock holds this incarnation of ours: its sender
 * hears us. */
static bool follows_us(const pd_repl *r, const pd_heartbeat *hb) {
    for (uint32_t k = 0; k < hb->nvc; k++) {
        if (pd_str_eqc(hb->vc[k].node, r->self)) return hb->vc[k].inc == r->cfg.inc;
    }
    return false;
}

/* The peer's heartbeat shows fewer of our deltas than its last one did:
 * it dropped our devices, so it took us for down, and announced our users
 * from its side meanwhile, while we never took it for down (our side heard
 * it, or only suspected it). Its watchers may have been told that our
 * users left: once it shows all our deltas again (its view has our devices
 * back, so it announces nothing wrong any more), we announce them again,
 * as after a heal. */
static void dropped_us(pd_repl *r, peer *p, const pd_heartbeat *hb, uint64_t now) {
    for (uint32_t k = 0; k < hb->nvc; k++) {
        const pd_vc_entry *e = &hb->vc[k];
        if (!pd_str_eqc(e->node, r->self) || e->inc != r->cfg.inc) continue;
        if (e->seq < p->shown_self_seq && !p->dropped_us) {
            pd_log(PD_LOG_INFO, "node %s dropped our devices (it took us for down): announcing "
                   "again once it has them back", p->id);
            p->dropped_us = true;
            p->dropped_seq = r->seq;
        } else if (p->dropped_us && e->seq >= p->dropped_seq) {
            p->dropped_us = false;
            heal_after_floors(r, p, now > down_after(r) ? now - down_after(r) : 0, now);
            p->heal_our_seq = p->dropped_seq;
        }
        p->shown_self_seq = e->seq;
        return;
    }
}

/* Saying `ready` is not enough to take users from the announcer hash: a
 * peer counts as announcing once its heartbeat also shows that it follows
 * this incarnation of ours. Every node agrees on that set: a node becomes
 * ready only once every live peer follows it (check_ready), so its first
 * `ready` heartbeat holds every peer it counts, and each of them counts it
 * from that heartbeat on, as it counts itself; a made-up node that only
 * says `ready` never counts. Once counted, it stays so while it says
 * `ready` and is alive. */
static bool earns_ready(const peer *p) { return p->follows; }

static void check_ready(pd_repl *r, uint64_t now);

/* Announcing falls back to the next node when the chosen one is not heard
 * announcing: a peer that says `ready` (even one that follows us) but owes
 * OWED_MIN changes or more, the first of them a node timeout ago, while the notification count of its heartbeats has not
 * moved since, publishes nothing: a made-up node, or one that cannot
 * publish. It leaves the announcer set here (muted_inc), and the users it
 * had are taken over with their changes of the last two node timeouts + 2
 * sync intervals announced again (pd_notifier_take_over), which covers what it
 * swallowed. Every node counts the same changes against it, so all leave
 * it out at about the same time. The bound is wide (a real node publishes
 * what it owes as soon as it applies the change, and its next heartbeat
 * says so); a peer whose vector clock still moves towards what we had
 * applied when we began to count is slow, not silent, and one warming up
 * (ready false) owes nothing. Should a real node still be left out, the
 * next heartbeat whose count moved brings it back. Decided before the
 * heartbeat's membership update, which applies it. */
static void check_announcing(pd_repl *r, peer *p, const pd_heartbeat *hb, uint64_t now) {
    p->vc_sum = 0;
    for (uint32_t k = 0; k < hb->nvc; k++)
        if (!pd_str_eq(hb->vc[k].node, hb->node)) p->vc_sum += hb->vc[k].seq;
    if (!hb->ready) { /* warming up (again): not counted, owes nothing */
        p->owed = 0;
        return;
    }
    if (!p->ann_known || hb->notifications != p->ann) {
        if (p->ann_known && p->muted_inc == p->inc) {
            pd_log(PD_LOG_INFO, "node %s is heard announcing again", p->id);
            p->muted_inc = 0;
        }
        p->ann = hb->notifications;
        p->ann_known = true;
        p->owed = 0;
        return;
    }
    /* Within the take-over's window (two node timeouts + 2 sync intervals) once
     * the heartbeat that shows it has come. */
    uint64_t bound = r->cfg.node_timeout_ms;
    if (!p->ready || p->muted_inc == p->inc || p->owed < OWED_MIN || now < p->owed_since + bound)
        return;
    /* Still applying what came before those changes (its vector clock
     * moves, and is below what we had): slow, not silent; it publishes
     * when it gets there. Frozen, or caught up, and still silent: out. */
    if (p->vc_sum != p->sum_at_owe && p->vc_sum < p->owed_total) return;
    pd_log(PD_LOG_WARN, "node %s says it is ready but published nothing of the %u changes it "
           "announces here since %llu ms: announcing its users from the other nodes",
           p->id, p->owed, (unsigned long long)(now - p->owed_since));
    r->stats.announcers_muted++;
    p->muted_inc = p->inc;
    p->owed = 0;
}

/* A node becomes a peer only by a valid heartbeat of its own, on its own
 * subject; ids inside vector clocks are never admitted. */
pd_status pd_repl_on_heartbeat_from(pd_repl *r, pd_str from, const void *buf, size_t len,
                                    uint64_t now, pd_err *err) {
    pd_refuse why;
    const char *doubt;
    r->now = now;
    pd_heartbeat *hb = pd_malloc(sizeof *hb);
    pd_status s = hb ? pd_heartbeat_decode(buf, len, hb, err) : PD_ENOMEM;
    if (s != PD_OK || pd_str_eqc(hb->node, r->self)) {
        if (s == PD_ENOMEM) pd_err_set(err, s, "out of memory");
        else if (s != PD_OK) r->stats.bad_messages++;
        pd_free(hb);
        return s;
    }
    if (from.p && !pd_str_eq(from, hb->node)) {
        s = repl__refuse(r, PD_REFUSE_WRONG_SUBJECT, now, "heartbeat of %.*s on the subject of %.*s",
                   (int)hb->node.n, hb->node.p, (int)from.n, from.p);
        pd_free(hb);
        return s;
    }
    if ((doubt = hb_doubt(r, hb, now, &why)) != NULL) {
        s = repl__refuse(r, why, now, "heartbeat of %.*s: its %s is more than %llu ms ahead of ours",
                   (int)hb->node.n, hb->node.p, doubt, (unsigned long long)repl__skew(r));
        pd_free(hb);
        return s;
    }
    peer *p = repl__peer_get(r, hb->node);
    if (p == NULL) {
        s = repl__refuse(r, PD_REFUSE_PEER_TABLE_FULL, now, "heartbeat of %.*s: no room for a peer",
                   (int)hb->node.n, hb->node.p);
        pd_free(hb);
        return s;
    }
    if (hb->inc < p->inc) {
        pd_free(hb);
        return PD_OK;
    }
    pd_model_hlc_observe(r->m, hb->hlc, now);
    /* Down here, or forgotten, in the same life: it went on announcing to
     * the watchers of its side while we did to ours, and they may have been
     * told different things (a split). A shorter break shows as lost
     * deltas (apply_delta). A new life announced nothing while it was
     * gone. A mere late heartbeat (a loaded machine) is no heal: watchers
     * would get repeats for nothing. */
    uint64_t heard_before = p->last_hb;
    bool healed = p->heard && hb->inc == p->inc && !p->alive;
    /* A silence of more than two heartbeats that we still took for
     * nothing (alive, the same life): see pd_notifier_rejoin. */
    bool silent = p->heard && hb->inc == p->inc && p->alive &&
                  now > p->last_hb + 2 * r->cfg.sync_interval_ms;
    if (!p->heard) healed = was_forgotten(r, hb->node, hb->inc, &heard_before);
    /* Back after we took it for down, as a new life: see rejoin_since. */
    if (!p->alive && !healed) {
        uint64_t gone = p->heard ? p->last_hb : forgotten_heard(r, hb->node);
        uint64_t si = r->cfg.sync_interval_ms, since = gone > si ? gone - si : 1;
        if (gone && (p->rejoin_since == 0 || since < p->rejoin_since)) p->rejoin_since = since;
    }
    if (hb->inc > p->inc) repl__new_incarnation(r, p, hb->inc, hb->carries, now);
    if (p->suspected) {
        /* Heard in time: nothing was changed for the suspicion, so nothing
         * is undone, nor announced but repeats (silent, below). */
        p->suspected = false;
        r->stats.suspicions_cleared++;
        pd_log(PD_LOG_INFO, "node %s heard again after %llu ms: no longer suspected", p->id,
               (unsigned long long)(now - p->last_hb));
    }
    p->last_hb = now;
    p->heard = true;
    p->behind = hb->wall && hb->wall + repl__skew(r) < now;
    p->follows = follows_us(r, hb);
    if (p->follows && hb->ready && p->regs_owed) {
        /* A scan of every user: in slices, one per tick (pd_repl_tick). */
        p->regs_owed = false;
        p->regs_passing = true;
        p->regs_at = 0;
    }
    for (uint32_t k = 0; k < hb->nvc; k++) {
        if (pd_str_eq(hb->vc[k].node, hb->node) && hb->vc[k].inc == p->inc)
            p->hb_seq = hb->vc[k].seq;
    }
    if (p->kept_inc && hb->inc == p->inc && !hb->carries && p->seq >= hb->seq) {
        /* It no longer says it carries a life, and sent no "restored" in
         * what we applied: what we kept is not vouched for. */
        pd_log(PD_LOG_WARN, "node %s ended its restart without saying what it restored: "
               "fetching its partition", p->id);
        p->kept_inc = p->kept_seq = 0;
        r->stats.restart_refetched++;
        p->force_sync = true;
        request_sync(r, p, peer_id(p), now);
    }
    p->kept_us_inc = p->kept_us_seq = 0;
    for (uint32_t k = 0; k < hb->nkept; k++) {
        if (pd_str_eqc(hb->kept[k].node, r->self)) {
            p->kept_us_inc = hb->kept[k].inc;
            p->kept_us_seq = hb->kept[k].seq;
        }
    }
    keep_heartbeat(p, buf, len);
    if (hb_leaving(r, p, hb, now)) {
        pd_free(hb);
        return PD_OK;
    }
    repl__fresh_heartbeat(p, hb->inc, hb->seq, now);
    check_announcing(r, p, hb, now);
    bool announcing = hb->ready && p->muted_inc != p->inc &&
                      ((p->alive && p->ready) || earns_ready(p));
    if (!p->alive || p->ready != announcing) {
        /* The set of announcing nodes changes: take over what is ours now. */
        if (!p->alive) pd_log(PD_LOG_INFO, "node %s is up", p->id);
        set_membership(r, p, true, announcing);
        pd_notifier_take_over(r->nf, r->m, now);
    }
    if (p->rejoin_since && p->ready) {
        /* Its watchers can hear us again now that it hears us, and the
         * changes of its warm-up are in the window too. p announces some
         * of our users again: what we said of them while it was gone goes
         * too (its start does not go back that far). So does what a heal
         * made while it was gone said again: the heal went back further
         * than p's absence as we measured it (a stall: we read p's
         * heartbeats late, chaos seed 6). */
        repeat(r, back_to_heal(r, p->rejoin_since, p->rejoin_since), true, false, now);
        p->rejoin_since = 0;
    }
    if (silent) {
        /* What we announced while the route may have been broken (from
         * one sync interval before it, for what was in flight). */
        uint64_t si = r->cfg.sync_interval_ms;
        r->stats.silences++;
        repeat_after_silence(r, heard_before > si ? heard_before - si : 1, heard_before, now);
    }
    if (healed) {
        pd_log(PD_LOG_INFO, "node %s heard again after %llu ms: announcing again what may "
               "differ", p->id, (unsigned long long)(now - heard_before));
        heal_after_floors(r, p, heard_before, now);
    }
    dropped_us(r, p, hb, now);
    if (p->heal_wait == 1 && heal_shown(r, p, hb)) {
        p->heal_wait = 2; /* it has the devices back: now its deltas up to this heartbeat */
        p->heal_its_seq = p->hb_seq;
    }
    heal_check(r, p, now);
    catch_up_from(r, hb, now);
    check_own_clock(r);
    pd_free(hb);
    repl__carry_step(r, now); /* the last peer to say what it kept of us may be this one */
    if (!is_ready(r)) check_ready(r, now); /* the last peer to follow us may be this one */
    return PD_OK;
}

static void send_heartbeat(pd_repl *r, bool leaving, uint64_t now) {
    pd_heartbeat *hb = pd_calloc(1, sizeof *hb);
    pd_model_stats st;
    r->last_hb_sent = now; /* even on failure: the next try is one interval away */
    if (r->listening_since == 0) r->listening_since = now;
    if (hb == NULL) return;
    pd_model_stats_get(r->m, &st);
    hb->node = S(r->self);
    hb->inc = r->cfg.inc;
    hb->seq = r->seq;
    hb->hlc = pd_model_hlc(r->m);
    hb->wall = now;
    hb->leaving = leaving;
    hb->ready = is_ready(r);
    hb->notifications = r->published; /* io.heartbeat_extra may say the same */
    hb->devices = st.devices;
    hb->users = st.users;
    hb->vc[hb->nvc++] = (pd_vc_entry){S(r->self), r->cfg.inc, r->seq};
    for (uint32_t i = 0; i < r->npeers && hb->nvc < PD_VC_MAX; i++) {
        const peer *p = r->peers[i];
        if (p->inc) hb->vc[hb->nvc++] = (pd_vc_entry){peer_id(p), p->inc, p->seq};
        if (p->kept_inc && hb->nkept < PD_VC_MAX)
            hb->kept[hb->nkept++] = (pd_vc_entry){peer_id(p), p->kept_inc, p->kept_seq};
    }
    if (r->carry != CARRY_NONE) hb->carries = r->carry_inc;
    if (r->io.heartbeat_extra) r->io.heartbeat_extra(r->io.ud, hb);
    msgpack_sbuffer_clear(&r->out);
    pd_heartbeat_encode(&r->out, hb);
    pd_free(hb);
    if (r->io.send_heartbeat) r->io.send_heartbeat(r->io.ud, r->out.data, r->out.size);
}

void pd_repl_leave(pd_repl *r, uint64_t now) {
    r->now = now;
    pd_repl_flush(r);
    send_heartbeat(r, true, now);
}

/* ---- time ------------------------------------------------------------------------- */

/* The warm-up ends two heartbeat periods after our first heartbeat (every
 * live peer has heard us and spoken since; or after the end of the restore
 * or of a stall, if later), once every live peer follows
 * us and our transfers are done; a peer that never follows us (or a
 * transfer that never ends) holds it back for a bounded time only. */
static uint64_t warm_end(const pd_repl *r) {
    uint64_t from = r->listening_since > r->started ? r->listening_since : r->started;
    if (r->warm_from > from) from = r->warm_from; /* the end of the restore, or a stall */
    return r->listening_since ? from + 2 * r->cfg.sync_interval_ms : UINT64_MAX;
}

static void check_ready(pd_repl *r, uint64_t now) {
    /* Not before our restored devices are out (repl__republish_step): the
     * peers need them, and the changes said again at the start (at 1M
     * devices as many notifications as users, lately) would slow them. */
    if (is_ready(r) || r->restoring || r->republishing || r->carry == CARRY_DECIDE ||
        now < warm_end(r))
        return;
    bool syncing = false, unheard = false;
    for (uint32_t i = 0; i < r->npeers; i++) {
        const peer *p = r->peers[i];
        syncing |= p->syncing;
        unheard |= p->alive && !p->follows;
    }
    uint64_t bound = warm_end(r) + 2 * r->cfg.sync_interval_ms + sync_timeout(r);
    if ((syncing || unheard) && now < bound) return;
    if (unheard)
        pd_log(PD_LOG_WARN, "a live peer does not follow this node yet; announcing anyway");
    pd_log(PD_LOG_INFO, "caught up with %u known node(s): announcing changes", r->npeers);
    /* Changes made while warming up were not announced yet. */
    pd_notifier_start(r->nf, r->m, r->started, now);
    send_heartbeat(r, false, now);
}

void pd_repl_begin(pd_repl *r, uint64_t now) {
    r->batch_now = now;
    /* A loop that did not run for a long while (SIGSTOP, swap) must not
     * take peers' silence for death, nor announce from a stale view: it
     * warms up again while the backlog comes in. */
    if (r->last_tick && now > r->last_tick + r->cfg.node_timeout_ms / 2 + r->cfg.sync_interval_ms) {
        pd_log(PD_LOG_WARN, "loop stalled for %llu ms: catching up before announcing",
               (unsigned long long)(now - r->last_tick));
        for (uint32_t i = 0; i < r->npeers; i++) {
            r->peers[i]->last_hb = now;
            r->peers[i]->suspected = false; /* the silence was ours */
        }
        pd_notifier_pause(r->nf);
        r->started = r->warm_from = now;
        r->listening_since = 0; /* from this turn's heartbeat */
    }
    r->last_tick = now;
    r->now = now;
}

void pd_repl_tick(pd_repl *r, uint64_t now) {
    pd_repl_begin(r, now);
    pd_model_tick(r->m, now);
    repl__serve_step(r);
    repl__carry_step(r, now);
    repl__republish_step(r, now);
    check_claims(r, now);
    check_ready(r, now);
    for (uint32_t i = 0; i < r->npeers; i++) {
        peer *p = r->peers[i];
        if (p->regs_passing) pass_on_registers(r, p);
        heal_check(r, p, now);
        if (p->alive && !p->suspected && now > p->last_hb + r->cfg.node_timeout_ms &&
            r->cfg.suspicion_ms) {
            p->suspected = true;
            r->stats.suspicions++;
            pd_log(PD_LOG_INFO, "node %s suspected (silent for %llu ms): down in %llu ms unless "
                   "heard", p->id, (unsigned long long)(now - p->last_hb),
                   (unsigned long long)(p->last_hb + down_after(r) - now));
        }
        if (p->alive && now > p->last_hb + down_after(r)) mark_down(r, p, now, "silent");
        if (p->syncing && now > p->sync_heard + sync_timeout(r)) {
            pd_log(PD_LOG_WARN, "state transfer of %s timed out; will retry", p->id);
            repl__end_sync(r, p, now);
        }
        /* A fetch that must happen (a count or a restart's state that we
         * do not trust: nothing newer would show a gap) whose transfer was
         * lost, timed out or answered "unknown": asked again, once a sync
         * interval. */
        if (p->force_sync && p->alive && !p->syncing &&
            now >= p->synced_at + r->cfg.sync_interval_ms)
            request_sync(r, p, peer_id(p), now);
    }
    /* Down for twice the node timeout: forgotten, so that made-up or
     * retired ids cannot fill the table (a real node comes back by its
     * next heartbeat). */
    for (uint32_t i = 0; i < r->npeers;) {
        peer *p = r->peers[i];
        if (!p->alive && !p->syncing && now > p->last_hb + down_after(r) + r->cfg.node_timeout_ms)
            peer_remove(r, i);
        else
            i++;
    }
    /* Heartbeats start at once, ready or not: peers must not take a node
     * that is catching up for dead; they leave it out of the announcers. */
    /* Our ops first: the heartbeat's count then covers them (a peer that
     * waits for our deltas up to it, heal_wait, has what we wrote so far). */
    pd_repl_flush(r);
    if (now >= r->last_hb_sent + r->cfg.sync_interval_ms) send_heartbeat(r, false, now);
    pd_notifier_heal_step(r->nf, r->m, now); /* the next slice of a heal under way */
    if (r->repeat_due && now >= r->repeat_due) {
        repeat(r, r->repeat_due_since, false, r->repeat_due_chained, now);
        r->repeat_due = 0;
    }
    if (r->heal_at && now >= r->heal_at) {
        pd_notifier_heal(r->nf, r->m, r->heal_since, now);
        r->healed_at = now;
        r->healed_since = r->heal_since;
        r->heal_at = 0;
    }
    pd_repl_flush(r);
    pd_notifier_tick(r->nf, now); /* held notifications leave after the delta */
}

uint64_t pd_repl_next_due(const pd_repl *r) {
    uint64_t due = pd_model_next_due(r->m);
    uint64_t gate = pd_notifier_next_due(r->nf);
    if (gate < due) due = gate;
    uint64_t hb = r->last_hb_sent + r->cfg.sync_interval_ms;
    /* The warm-up's end, unless a restore holds it back (then it is due
     * when the restore is done, not now, over and over). */
    if (!is_ready(r) && !r->restoring && warm_end(r) < hb) hb = warm_end(r);
    if (hb < due) due = hb;
    if (r->heal_at && r->heal_at < due) due = r->heal_at;
    if (r->repeat_due && r->repeat_due < due) due = r->repeat_due;
    if (r->carry == CARRY_DECIDE && r->carry_until < due) due = r->carry_until;
    /* The next slice (of a transfer served, a republish, a heal), at the next loop turn. */
    if (r->nserving || r->republishing || pd_notifier_healing(r->nf)) due = 0;
    for (uint32_t i = 0; i < r->npeers; i++) {
        const peer *p = r->peers[i];
        if (p->regs_passing) due = 0; /* its next slice, at the next loop turn */
        uint64_t t = !p->alive ? p->last_hb + down_after(r) + r->cfg.node_timeout_ms + 1
                   : p->suspected || r->cfg.suspicion_ms == 0 ? p->last_hb + down_after(r) + 1
                   : p->last_hb + r->cfg.node_timeout_ms + 1;
        if (t < due) due = t;

        if (p->syncing && p->sync_heard + sync_timeout(r) + 1 < due)
            due = p->sync_heard + sync_timeout(r) + 1;
        if (p->claim_at && p->claim_at + claim_grace(r) < due) due = p->claim_at + claim_grace(r);
    }
    return due;
}

/* ---- life cycle and views ------------------------------------------------------------- */

pd_repl *pd_repl_new(const pd_repl_cfg *cfg, const pd_model_cfg *mcfg, pd_str node,
                     const pd_repl_io *io, uint64_t now) {
    pd_repl *r = pd_calloc(1, sizeof *r);
    if (r == NULL || node.n > PD_ID_MAX) {
        pd_free(r);
        return NULL;
    }
    r->cfg = *cfg;
    if (r->cfg.max_msg_bytes < 4096) r->cfg.max_msg_bytes = 4096;
    r->io = *io;
    memcpy(r->self, node.p, node.n);
    r->started = r->warm_from = r->now = now;
    r->refuse_log = (pd_ratelimit)PD_RATELIMIT_INIT(10, 10000);
    msgpack_sbuffer_init(&r->ops);
    msgpack_sbuffer_init(&r->out);
    /* A node taken over was silent for up to the node timeout and the
     * suspicion: the re-announce window covers both. */
    pd_notify_cfg ncfg = {cfg->notify_min_interval_ms, cfg->notify_max_users,
                          cfg->sync_interval_ms, cfg->node_timeout_ms + cfg->suspicion_ms};
    r->nf = pd_notifier_new(&ncfg, node, publish_notification, r);
    r->m = r->nf ? pd_model_new(mcfg, node, on_change, r) : NULL;
    if (r->m) {
        pd_model_on_floor(r->m, on_floor);
        pd_model_on_same(r->m, want_same, on_same);
    }
    if (r->m == NULL) {
        pd_repl_free(r);
        return NULL;
    }
    pd_model_set_op_hook(r->m, on_op, r);
    return r;
}

void pd_repl_free(pd_repl *r) {
    if (r == NULL) return;
    pd_repl_serving_drop(r);
    for (uint32_t i = 0; i < r->npeers; i++) {
        drop_pending(r->peers[i]);
        pd_free(r->peers[i]->heal_need);
        pd_free(r->peers[i]->hb);
        pd_free(r->peers[i]);
    }
    pd_free(r->peers);
    pd_model_free(r->m);
    pd_notifier_free(r->nf);
    msgpack_sbuffer_destroy(&r->ops);
    msgpack_sbuffer_destroy(&r->out);
    pd_free(r);
}

pd_model *pd_repl_model(pd_repl *r) { return r->m; }
bool pd_repl_ready(const pd_repl *r) { return is_ready(r); }
pd_notifier *pd_repl_notifier(pd_repl *r) { return r->nf; }

void pd_repl_stats_get(const pd_repl *r, pd_repl_stats *st) {
    pd_notify_stats ns;
    pd_notifier_stats_get(r->nf, &ns);
    *st = r->stats;
    st->notifications = ns.announced;
}

pd_status pd_repl_local(pd_repl *r, const pd_event *ev, uint64_t now, pd_apply_result *res,
                        pd_err *err) {
    r->batch_now = now;
    r->now = now; /* the changes it makes are announced at now */
    return pd_model_apply(r->m, ev, now, res, err);
}

uint32_t pd_repl_nodes(const pd_repl *r, uint64_t now, pd_node_fn fn, void *ud) {
    pd_str names[PD_VC_MAX];
    uint64_t counts[PD_VC_MAX];
    pd_model_stats st;
    pd_model_stats_get(r->m, &st);
    uint32_t n = 0;
    names[n] = S(r->self);
    counts[n++] = r->seq;
    for (uint32_t i = 0; i < r->npeers && n < PD_VC_MAX; i++) {
        names[n] = peer_id(r->peers[i]);
        counts[n++] = r->peers[i]->seq;
    }
    pd_node_view self = {S(r->self), true, names, counts, n, st.devices, st.users, 0};
    fn(ud, &self);
    pd_heartbeat *hb = pd_malloc(sizeof *hb);
    for (uint32_t i = 0; i < r->npeers; i++) {
        const peer *p = r->peers[i];
        pd_err err;
        pd_node_view nv = {peer_id(p), p->alive, NULL, NULL, 0, 0, 0,
                           p->heard ? (int64_t)(now - p->last_hb) : -1};
        if (hb && p->hb && pd_heartbeat_decode(p->hb, p->hb_len, hb, &err) == PD_OK) {
            for (uint32_t k = 0; k < hb->nvc; k++) {
                names[k] = hb->vc[k].node;
                counts[k] = hb->vc[k].seq;
            }
            nv.vc_nodes = names;
            nv.vc_counts = counts;
            nv.vc_n = hb->nvc;
            nv.devices = hb->devices;
            nv.users = hb->users;
        }
        fn(ud, &nv);
    }
    pd_free(hb);
    return 1 + r->npeers;
}


/* repl_restore.c - a restart: what a snapshot records, restoring one,
 * replaying the stream after it, and sending the restored devices as the
 * new incarnation's (see repl.h and snapshot.h). */
#include "sync/repl_int.h"
#include <string.h>

/* ---- persistence: snapshot, restore, replay ------------------------------------ */

void pd_repl_snapshot_info(pd_repl *r, pd_snap_info *info, uint64_t now) {
    pd_repl_flush(r); /* our seq must cover every op the snapshot holds */
    info->node = S(r->self);
    info->inc = r->cfg.inc;
    info->seq = r->seq;
    info->hlc = pd_model_hlc(r->m);
    info->stream_seq = 0; /* not known here: replay from the start of the stream */
    info->taken_at = now;
    info->left = false; /* the final one says so (persist__final_snapshot) */
    info->nvc = 0;
    /* A peer in the middle of a transfer: its incarnation, with nothing
     * counted (seq 0). The model holds part of its partition: restored
     * without the peer, nothing would drop those devices when a new life
     * of it comes (a peer first heard has no devices to forget), and they
     * would stay for good; with it, that life drops them, or a transfer
     * of the same life replaces them. */
    for (uint32_t i = 0; i < r->npeers && info->nvc < PD_VC_MAX; i++) {
        const peer *p = r->peers[i];
        if (p->inc && p->alive)
            info->vc[info->nvc++] = (pd_vc_entry){peer_id(p), p->inc, p->syncing ? 0 : p->seq};
    }
}

/* A peer learned from the snapshot or the stream, not heard in this life:
 * watched from now on like any peer, so that one that never speaks again
 * is down after the node timeout and its devices leave (else they would
 * stay forever: only a live peer can fall silent). */
static void watch_restored(peer *p, uint64_t now) {
    if (p->heard || p->alive) return;
    p->alive = true;
    p->last_hb = now;
}

/* Our own devices from the snapshot and the stream go straight into the
 * model, without telling the peers (replayed ops are not sent). Until the
 * restore is done, a state transfer of our partition is refused (answered
 * "unknown"): it could hand out a device that a later replayed op takes
 * away without a word, which the peer would keep for good. And the node
 * is not ready (announces nothing) until then, so that a replay that
 * outlasts the warm-up is not announced change by change. Live events of
 * this life apply meanwhile as usual; a replayed op of an older life never
 * takes a newer entry of the same connection (the claim names the entry),
 * and new claims outrank the old ones (the HLC observes them). */
static void restore_own_op(pd_repl *r, const pd_op *op, uint64_t now) {
    r->restoring = true;
    if (pd_hlc_ahead(op->hlc, now, repl__skew(r))) {
        r->stats.refused[PD_REFUSE_CLOCK_AHEAD]++;
        return;
    }
    pd_model_hlc_observe(r->m, op->hlc, now);
    pd_model_apply_own_op(r->m, op, now);
}

void pd_repl_restore_begin(pd_repl *r) { r->restoring = true; }

/* A snapshot's node and clocks: of this node, not from the future (a node
 * that ran ahead, a forged snapshot: it would cut this node off after its
 * first op). */
static pd_status info_acceptable(const pd_repl *r, const pd_snap_info *info, uint64_t now,
                                 pd_err *err) {
    if (!pd_str_eqc(info->node, r->self)) {
        pd_err_set(err, PD_EBADVALUE, "snapshot of node %.*s, not of %s", (int)info->node.n,
                   info->node.p, r->self);
        return PD_EBADVALUE;
    }
    if (pd_hlc_ahead(info->hlc, now, repl__skew(r)) || repl__ms_ahead(r, info->inc, now)) {
        pd_err_set(err, PD_EBADVALUE, "snapshot clock is more than %llu ms ahead of ours",
                   (unsigned long long)repl__skew(r));
        return PD_EBADVALUE;
    }
    return PD_OK;
}

static pd_status check_info(pd_repl *r, const pd_snap_info *info, uint64_t now, pd_err *err) {
    pd_status s = info_acceptable(r, info, now, err);
    if (s != PD_OK && pd_str_eqc(info->node, r->self)) r->stats.refused[PD_REFUSE_CLOCK_AHEAD]++;
    return s;
}

pd_status pd_repl_snapshot_acceptable(const pd_repl *r, const pd_snap_info *info, uint64_t now,
                                      pd_err *err) {
    return info_acceptable(r, info, now, err);
}

typedef struct {
    pd_repl *r;
    uint64_t now;
} restore_ctx;

static void restore_device(void *ud, const pd_snap_device *d) {
    const restore_ctx *c = ud;
    pd_repl *r = c->r;
    if (pd_str_eqc(d->owner, r->self)) restore_own_op(r, &d->op, c->now);
    else if (!pd_hlc_ahead(d->op.hlc, c->now, repl__skew(r)))
        pd_model_apply_op(r->m, d->owner, &d->op, c->now);
}

/* Our own registers without a word (the dump at pd_repl_restore_done
 * sends them), the others' as any peer's op. */
static void restore_register(void *ud, const pd_op *op) {
    const restore_ctx *c = ud;
    if (pd_hlc_ahead(op->hlc, c->now, repl__skew(c->r))) return;
    if (pd_str_eqc(op->writer, c->r->self)) pd_model_apply_own_op(c->r->m, op, c->now);
    else pd_model_apply_op(c->r->m, op->writer, op, c->now);
}

/* Before the first device: the tables sized once (users: at most one per
 * device; those kept for their registers alone grow them). The node and
 * the clocks are checked once the body is whole, as in restore_twice, so
 * that a bad body is reported as such whatever else is wrong. */
static pd_status restore_begin(void *ud, const pd_snap_info *info, uint32_t ndevs, pd_err *err) {
    const restore_ctx *c = ud;
    (void)err;
    pd_model_hlc_observe(c->r->m, info->hlc, c->now);
    pd_model_reserve(c->r->m, ndevs, ndevs);
    return PD_OK;
}

/* The vector clock of an accepted snapshot: the peers and how much of
 * each it holds. */
static void restore_peers(pd_repl *r, const pd_snap_info *info, uint64_t now) {
    for (uint32_t i = 0; i < info->nvc; i++) {
        if (pd_str_eqc(info->vc[i].node, r->self)) continue; /* never a peer of itself */
        if (repl__ms_ahead(r, info->vc[i].inc, now)) continue;
        peer *p = repl__peer_get(r, info->vc[i].node);
        if (p == NULL) continue;
        p->inc = info->vc[i].inc;
        p->seq = info->vc[i].seq;
        /* Whether our old life passed its registers on to that life of the
         * peer (pass_on_registers) is not known: a life of ours killed
         * after the snapshot (which holds the peer's lost writes) but
         * before the pass did not. A repeat changes nothing. */
        p->regs_owed = true;
        watch_restored(p, now);
    }
    r->rest_inc = info->inc;
    r->rest_seq = info->seq;
    r->restoring = true;
    /* Before anything of this life went out: peers that hold that life
     * whole keep its devices at our first word (pd_repl_restore_done).
     * Not after a clean stop: the peers dropped them at its `leaving`, and
     * waiting for them to say so would only hold the republish back. */
    if (info->inc && !info->left && r->seq == 0 && r->last_hb_sent == 0 &&
        r->carry == CARRY_NONE) {
        r->carry = CARRY_CLAIM;
        r->carry_inc = info->inc;
    }
    /* What the life before decided after this may not have been said. */
    pd_notifier_restored(r->nf, info->taken_at);
}

/* Into an empty model (a start): one pass, each entry applied as soon as
 * it is validated; a refusal at any point (a bad entry, the node or the
 * clocks found wrong at the end) clears the model back to empty and drops
 * the ops it made (held meanwhile: none leaves) and the entries it counted
 * as ahead of the clock, so that a bad snapshot still changes nothing. Decoding the snapshot twice was half of a 1M
 * restore (issue 15). */
static pd_status restore_once(pd_repl *r, const void *buf, size_t len, uint64_t now,
                              pd_snap_info *info, bool checked, pd_err *err) {
    restore_ctx c = {r, now};
    const pd_snap_visitor v = {restore_begin, restore_device, restore_register, &c, checked};
    bool was_restoring = r->restoring;
    size_t ops_at = r->ops.size;
    uint32_t nops_at = r->nops;
    uint64_t ahead_at = r->stats.refused[PD_REFUSE_CLOCK_AHEAD];
    r->hold_ops = true;
    pd_status s = pd_snap_read(buf, len, info, &v, err);
    /* Own entries skipped as ahead (restore_own_op): uncounted if refused. */
    uint64_t entries_ahead = r->stats.refused[PD_REFUSE_CLOCK_AHEAD] - ahead_at;
    if (s == PD_OK) s = check_info(r, info, now, err);
    r->hold_ops = false;
    if (s != PD_OK) {
        pd_model_clear(r->m);
        r->ops.size = ops_at;
        r->nops = nops_at;
        r->stats.refused[PD_REFUSE_CLOCK_AHEAD] -= entries_ahead;
        r->restoring = was_restoring;
        return s;
    }
    pd_model_hlc_observe(r->m, info->hlc, now); /* if it came after the devices */
    if (r->ops.size >= r->cfg.max_msg_bytes / 2) pd_repl_flush(r);
    restore_peers(r, info, now);
    return PD_OK;
}

/* Into a model that holds something already: validated whole first, then
 * applied, so that a bad snapshot changes nothing without a rollback. */
static pd_status restore_twice(pd_repl *r, const void *buf, size_t len, uint64_t now,
                               pd_snap_info *info, pd_err *err) {
    pd_snap_reader rd;
    pd_snap_device d;
    pd_op op;
    pd_status s = pd_snap_open(buf, len, info, &rd, err);
    if (s != PD_OK || (s = check_info(r, info, now, err)) != PD_OK) return s;
    pd_model_hlc_observe(r->m, info->hlc, now);
    /* Users: at most one per device, plus those kept for their registers. */
    pd_model_reserve(r->m, (uint64_t)rd.ndevs + rd.nregs, rd.ndevs);
    restore_ctx c = {r, now};
    while (pd_snap_next_device(&rd, &d)) restore_device(&c, &d);
    while (pd_snap_next_register(&rd, &op)) restore_register(&c, &op);
    restore_peers(r, info, now);
    return PD_OK;
}

static pd_status restore(pd_repl *r, const void *buf, size_t len, uint64_t now,
                         pd_snap_info *info, bool checked, pd_err *err) {
    r->now = now;
    if (pd_model_pristine(r->m)) return restore_once(r, buf, len, now, info, checked, err);
    return restore_twice(r, buf, len, now, info, err);
}

pd_status pd_repl_restore(pd_repl *r, const void *buf, size_t len, uint64_t now,
                          pd_snap_info *info, pd_err *err) {
    return restore(r, buf, len, now, info, false, err);
}

pd_status pd_repl_restore_peeked(pd_repl *r, const void *buf, size_t len, uint64_t now,
                                 pd_snap_info *info, pd_err *err) {
    return restore(r, buf, len, now, info, true, err);
}

pd_status pd_repl_replay_delta(pd_repl *r, const void *buf, size_t len, uint64_t now,
                               pd_err *err) {
    r->now = now;
    pd_delta d;
    pd_ops_iter it;
    pd_op op;
    pd_status s = pd_delta_decode(buf, len, &d, err);
    if (s != PD_OK) return s;
    if (pd_str_eqc(d.node, r->self)) {
        /* Our own earlier lives: the snapshot's from where the snapshot
         * stopped, and every later one (a life that wrote no snapshot)
         * whole; older ones are in the snapshot, and this life has nothing
         * to replay. Without a snapshot, every life in the stream. */
        if (d.inc < r->rest_inc || d.inc >= r->cfg.inc) return PD_OK;
        if (d.inc > r->rest_inc) {
            r->rest_inc = d.inc;
            r->rest_seq = 0;
        }
        if (d.seq <= r->rest_seq) return PD_OK;
        r->rest_seq = d.seq;
        if (repl__ops_ahead(r, &d.ops, now)) {
            r->stats.refused[PD_REFUSE_CLOCK_AHEAD]++;
            return PD_OK;
        }
        pd_ops_iter_init(&it, &d.ops);
        while (pd_ops_next(&it, &op)) restore_own_op(r, &op, now);
        return PD_OK;
    }
    if (repl__ms_ahead(r, d.inc, now) || repl__ops_ahead(r, &d.ops, now)) {
        r->stats.refused[PD_REFUSE_CLOCK_AHEAD]++;
        return PD_OK;
    }
    peer *p = repl__peer_get(r, d.node);
    if (p == NULL || d.inc < p->inc) return PD_OK;
    if (d.inc > p->inc) repl__new_incarnation(r, p, d.inc, d.carries, now);
    watch_restored(p, now);
    /* A gap (the stream no longer has it): skipped here, repaired by state
     * transfer once the peer's heartbeat shows we are behind. */
    r->replaying = true;
    if (d.seq == p->seq + 1) repl__apply_delta(r, p, &d, now);
    r->replaying = false;
    return PD_OK;
}

static void start_republish(pd_repl *r, bool regs_only, uint64_t now);

void pd_repl_restore_done(pd_repl *r, uint64_t now) {
    r->restoring = false;
    r->now = now;
    if (now > r->warm_from) r->warm_from = now; /* see repl.h */
    /* Offline delays running when the snapshot was taken: back from
     * last_seen (a snapshot does not keep them). */
    pd_model_restore_delays(r->m, now);
    /* Servers that moved or went down meanwhile never speak to us again.
     * Devices of the life before came back (the snapshot, the stream): the
     * peers may have dropped some that the socket servers closed since. */
    if (pd_model_restore_servers(r->m, now) > 0) pd_notifier_devices_back(r->nf);
    /* The replay may have applied deltas that the peers' heartbeats did
     * not count yet, and their live copies come next: no contradiction. */
    for (uint32_t i = 0; i < r->npeers; i++) r->peers[i]->synced_at = r->now;
    /* Our heartbeats said we carry our life before: the peers that held
     * it keep its devices, and say so; the others dropped them. */
    if (r->carry == CARRY_CLAIM) {
        r->carry = CARRY_DECIDE;
        r->carry_until = now + 3 * r->cfg.sync_interval_ms;
        repl__carry_step(r, now);
        return;
    }
    start_republish(r, false, now);
}

/* Our devices, back from the snapshot and the stream, go out as our new
 * incarnation's: peers that dropped the old one's take these. In slices,
 * one per loop turn, so that the node answers, and applies events, from
 * now on (1M devices are 70 MB of deltas, half a second of work): a
 * device changed or gone meanwhile has its own delta, and the dump reads
 * the model as it is then, so every peer ends on what we hold whatever
 * the order (an ADD twice changes nothing). Our registers too: the
 * restore wrote them without a word, and some the peers may never have
 * had (a life before that died before its own dump, a floor the restore
 * decided). Peers that kept our devices get those alone (regs_only), but
 * the last_seen that our devices imply. */
static void start_republish(pd_repl *r, bool regs_only, uint64_t now) {
    if (regs_only) r->stats.restart_unrepublished++;
    else r->stats.restart_republished++;
    r->republishing = true;
    r->repub_regs_only = regs_only;
    memset(&r->repub_cur, 0, sizeof r->repub_cur);
    r->repub_started = now;
    repl__republish_step(r, now);
}

/* The "restored" delta: our devices' count and digest as the deltas sent
 * so far leave them (our pending ops go first), compared by each peer
 * with its copy (one walk of the device table on each node). The claim
 * ends with it. */
static void send_restored(pd_repl *r, uint64_t now) {
    pd_restored rs = {.inc = r->carry_inc};
    pd_repl_flush(r);
    pd_model_partition_digest(r->m, S(r->self), &rs.devices, &rs.digest);
    pd_delta_carry c = {r->carry_inc, &rs};
    msgpack_sbuffer_clear(&r->out);
    pd_delta_encode_carry(&r->out, S(r->self), r->cfg.inc, ++r->seq, NULL, 0, 0, NULL, 0, now,
                          &c);
    r->stats.deltas_sent++;
    if (r->io.send_delta) r->io.send_delta(r->io.ud, r->out.data, r->out.size);
    r->carry = CARRY_NONE;
    pd_log(PD_LOG_INFO, "told the peers what we restored of incarnation %llu: %llu devices",
           (unsigned long long)rs.inc, (unsigned long long)rs.devices);
}

/* Every live peer has heard this life (its heartbeat holds it) and said
 * in the same heartbeat whether it kept our life before as far as we
 * restored it. All did: our registers, then "restored". One did not, or
 * one stays silent until carry_until: the republish, then "restored". */
void repl__carry_step(pd_repl *r, uint64_t now) {
    if (r->carry != CARRY_DECIDE) return;
    bool all = true, unheard = false;
    for (uint32_t i = 0; i < r->npeers; i++) {
        const peer *p = r->peers[i];
        if (!p->alive) continue;
        if (!p->follows) unheard = true;
        else if (p->kept_us_inc != r->rest_inc || p->kept_us_seq != r->rest_seq) all = false;
    }
    if (all && unheard && now < r->carry_until) return;
    r->carry = CARRY_DUMP;
    if (all && !unheard) {
        pd_log(PD_LOG_INFO, "every live peer kept our life before as we restored it: sending "
               "our registers, not our devices");
        start_republish(r, true, now);
        return;
    }
    pd_log(PD_LOG_INFO, "%s: sending our restored devices again",
           all ? "a live peer did not say what it kept of our life before"
               : "a live peer did not keep our life before as we restored it");
    start_republish(r, false, now);
}

static void republish_op(void *ud, const pd_op *op) {
    pd_repl *r = ud;
    r->stats.restart_ops++;
    repl__on_op_dump(ud, op);
}

void repl__republish_step(pd_repl *r, uint64_t now) {
    if (!r->republishing) return;
    bool done = r->repub_regs_only
        ? pd_model_own_registers_step(r->m, &r->repub_cur.at, REPUBLISH_BUCKETS, republish_op, r)
        : pd_model_partition_dump_step(r->m, S(r->self), (pd_str){NULL, 0}, &r->repub_cur,
                                       REPUBLISH_BUCKETS, republish_op, r);
    pd_repl_flush(r);
    if (!done) return;
    r->republishing = false;
    if (r->carry == CARRY_DUMP) send_restored(r, now);
    pd_log(PD_LOG_INFO, "republish done: our %s (%llu ops) sent as incarnation %llu in %llu ms",
           r->repub_regs_only ? "registers" : "devices", (unsigned long long)r->stats.restart_ops,
           (unsigned long long)r->cfg.inc, (unsigned long long)(now - r->repub_started));
}

bool pd_repl_republishing(const pd_repl *r) { return r->republishing; }


/* repl_fresh.c - how fresh this node's view is (docs/protocol.md section 4,
 * "Freshness"): the `as_of` of get and devices replies and the peers whose
 * devices make a user `stale`.
 *
 * A peer's fresh_at is the arrival time of its last message after which
 * this node held everything the peer had sent: an in-order delta with
 * nothing held back (deltas of one origin arrive in order, so all before it
 * are applied), or a heartbeat whose own count of deltas sent (`seq`, same
 * incarnation) we had applied. A heartbeat showing more than we applied
 * counts once the missing deltas or the state transfer are in (behind_at).
 * as_of is the least fresh_at over live peers, or now when there are none:
 * everything the cluster had sent before as_of is in the answer. */
#include "sync/repl_int.h"

static bool caught_up(const peer *p) { return !p->syncing && p->npending == 0; }

void repl__fresh_check(peer *p) {
    if (p->behind_at == 0 || !caught_up(p) || p->seq < p->behind_seq) return;
    if (p->behind_at > p->fresh_at) p->fresh_at = p->behind_at;
    p->behind_at = 0;
}

void repl__fresh_heartbeat(peer *p, uint64_t inc, uint64_t seq, uint64_t now) {
    p->last_heard = now;
    if (inc == p->inc && seq <= p->seq && caught_up(p)) {
        p->fresh_at = now;
        p->behind_at = 0;
        return;
    }
    /* The earliest heartbeat not yet met stays: a later one cannot be met
     * before it. */
    if (p->behind_at == 0 || inc != p->inc) {
        p->behind_at = now;
        p->behind_seq = seq;
    }
}

void repl__fresh_delta(peer *p, uint64_t now) {
    p->last_heard = now;
    if (!caught_up(p)) return;
    p->fresh_at = now;
    repl__fresh_check(p);
}

/* Stale: nothing heard for more than one sync interval past the heartbeat
 * that was due, i.e. two intervals since its last message (one interval
 * alone would flag every peer for the moment its heartbeat is late by a
 * scheduler's jitter). */
uint32_t pd_repl_freshness(const pd_repl *r, uint64_t now, pd_str *stale, uint32_t cap,
                           uint64_t *as_of) {
    uint32_t n = 0;
    *as_of = now;
    for (uint32_t i = 0; i < r->npeers; i++) {
        const peer *p = r->peers[i];
        if (!p->alive) continue;
        if (p->fresh_at < *as_of) *as_of = p->fresh_at;
        if (now > p->last_heard + 2 * r->cfg.sync_interval_ms && n < cap) stale[n++] = peer_id(p);
    }
    return n;
}

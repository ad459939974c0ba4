/* notify.h - change notifications, from a change of the model to the view
 * handed out for publishing (docs/protocol.md section 3). One pd_notifier does
 * the three steps that decide what a node publishes:
 *
 * 1. Who announces: each user's changes are announced by one node, the
 *    highest rendezvous hash of (node, user) among this node and its peers
 *    that are alive and ready (ties: the larger id). A change of a user
 *    this node does not announce goes nowhere.
 * 2. Re-announcing: when the set of announcing nodes changes, the recent
 *    changes (within 2 node timeouts + 2 sync intervals) of users that are
 *    newly ours are announced again, in case their previous announcer went
 *    away before announcing them; when this node becomes ready, every
 *    change since its warm-up began (less a node timeout) is announced. A
 *    watcher may see one repeat, never a gap.
 * 3. Coalescing: what is announced goes through the per-user gate of
 *    notify_gate.h (PRESENCE_NOTIFY_MIN_INTERVAL_MS), then to the publish
 *    callback, the one way out.
 *
 * The replica (sync/repl.c) owns a notifier and drives it: it tells it the
 * membership (pd_notifier_add_peer, pd_notifier_set_peer), readiness
 * (pd_notifier_start, pd_notifier_pause), each change of the model
 * (pd_notifier_change) and the time (pd_notifier_tick, next_due). The
 * daemon only publishes what the callback hands it.
 *
 * Not thread-safe; one thread owns a notifier. */
#ifndef PD_NOTIFY_H
#define PD_NOTIFY_H
#include <stdbool.h>
#include <stdint.h>
#include "base/status.h"
#include "model/presence.h"
#include "notify/notify_gate.h"
#include "wire/codec.h"

/* Users in a coalescing interval at once, at most, when the configuration
 * says 0: beyond, notifications go out uncoalesced. ~60 bytes each, plus a
 * held view for those waiting. */
#define PD_NOTIFY_MAX_USERS_DEFAULT (1u << 18)

typedef struct {
    uint64_t min_interval_ms;  /* coalescing interval; 0: every view at once */
    uint32_t max_users;        /* users the gate tracks (0: the default above) */
    uint64_t sync_interval_ms; /* the replica's: they size the re-announce window */
    uint64_t node_timeout_ms;
} pd_notify_cfg;

/* A notification to publish now; v is borrowed for the call. */
typedef void (*pd_notify_publish_fn)(void *ud, const pd_view *v);

typedef struct {
    uint64_t announced;        /* views this node announced (before coalescing) */
    uint64_t floors;           /* ... of which unchanged states above a floor */
    uint64_t closes;           /* windows closed by a walk (see pd_notifier_heal_step) */
    pd_gate_stats gate;        /* what the coalescing gate did with them */
} pd_notify_stats;

typedef struct pd_notifier pd_notifier;

/* self: this node's id (at most PD_ID_MAX bytes). Starts not announcing
 * (pd_notifier_start). NULL if out of memory or self is too long. */
pd_notifier *pd_notifier_new(const pd_notify_cfg *cfg, pd_str self, pd_notify_publish_fn publish,
                             void *ud);
/* Frees it; held views are dropped (pd_notifier_flush first to send). */
void pd_notifier_free(pd_notifier *nf);

/* ---- membership and readiness ---- */

/* Makes room for a peer (not announcing yet); a known one is kept as is.
 * PD_ENOMEM leaves everything as it was. Call before the peer can ever be
 * announcing, so that pd_notifier_set_peer needs no memory. */
pd_status pd_notifier_add_peer(pd_notifier *nf, pd_str peer);
/* Forgets a peer that is not announcing (the replica forgot it: down for
 * long); an announcing or unknown one is left alone. */
void pd_notifier_remove_peer(pd_notifier *nf, pd_str peer);
/* The announcing set changes: peer is alive and ready (announcing) or not.
 * The set as it was is kept for the pd_notifier_take_over that follows.
 * An unknown peer (never added) is taken as not announcing. */
void pd_notifier_set_peer(pd_notifier *nf, pd_str peer, bool announcing);
/* After a pd_notifier_set_peer (and what the model did about it): the
 * changes of the last two node timeouts and two sync intervals of users
 * this node announces now and did not before are announced again (their
 * announcer may have owed one for a node timeout before it was found
 * gone). Nothing while this node is not announcing. */
void pd_notifier_take_over(pd_notifier *nf, const pd_model *m, uint64_t now);

/* What we announced since `since` may not have reached a peer's side:
 * it is announced again, as it was (a repeat). Used when a peer we had
 * taken for down is back as a new life (a restart, or a peer forgotten
 * and back) and ready: its NATS server may have been cut off from ours
 * all that time (a partition around a node that was down), and nothing
 * else repeats those changes, as a new life is no heal. With prev_too,
 * also users we announced under the set as it was before the last
 * pd_notifier_set_peer and no longer do: the peer back announces them
 * now, but its start repeats only the changes of its own warm-up. And
 * when a peer
 * still taken for alive is heard again after a silence of more than two
 * heartbeats (a cut shorter than the node timeout, or a suspicion heard
 * again in time): the route between the two NATS servers may have broken
 * and been rebuilt meanwhile, and NATS keeps nothing it could not
 * deliver. Nothing was undone for the silence, so nothing else changes.
 * A watcher that heard them gets a repeat. Walks the model in slices, as
 * pd_notifier_heal (and joins a walk under way). */
void pd_notifier_rejoin(pd_notifier *nf, const pd_model *m, uint64_t since, bool prev_too,
                        uint64_t now);

/* A gap in hearing peer ended (a partition healed, a route came back, a
 * peer declared down is heard again): while it lasted, the watchers on
 * each side heard only their side's announcers, so they may have been told
 * different things (one side took the other's devices for gone). Announces
 * again the current view of every user this node announces that changed
 * since `since` (the last time the peer was heard before the gap) or that
 * is not offline now (the other side may have announced it offline),
 * with ts = now: a statement about the present that supersedes what either
 * side said during the gap (a route may still deliver an old one late; a
 * watcher keeps the newest ts per user, as the contract says). A watcher
 * may see a repeat, never a gap. Nothing while this node is not
 * announcing. */
void pd_notifier_heal(pd_notifier *nf, const pd_model *m, uint64_t since, uint64_t now);
/* A heal walks the model in slices of PD_HEAL_BUCKETS hash buckets, one per
 * loop turn, so that a large model never stalls the loop: pd_notifier_heal
 * does the first slice, pd_notifier_heal_step the next one (call it while
 * pd_notifier_healing; m must be the same model). A heal or a repeat
 * (pd_notifier_rejoin) started while one is running starts the walk over
 * with the earlier `since` of the two, as a heal if either is. One asked
 * while paused, or under way when pausing, is held and made (started
 * over) by the next pd_notifier_start. When the window of floors ends
 * (pd_notifier_floors_open), a last walk says again, as of now, the users
 * this node announces that were written in it (any change, floor or write
 * the model reported) or whose ver shows a write since it opened (less a
 * node timeout): what a floor or a write that changed no status raised
 * in it unsaid (stats: closes). */
#define PD_HEAL_BUCKETS 256
void pd_notifier_heal_step(pd_notifier *nf, const pd_model *m, uint64_t now);
bool pd_notifier_healing(const pd_notifier *nf);

/* This node caught up: from now on it announces, starting with every
 * change since its warm-up began at warm_since (less a node timeout), then
 * a heal or repeat held while paused. */
void pd_notifier_start(pd_notifier *nf, const pd_model *m, uint64_t warm_since, uint64_t now);
/* This life began from a snapshot taken at taken_at (ms): the next
 * pd_notifier_start also says the users offline then whose ver shows a
 * write or an offline delay's end since (less a sync interval), which the
 * life before may have died before saying (cut off from the others, who
 * never held them). */
void pd_notifier_restored(pd_notifier *nf, uint64_t taken_at);
/* This life got devices of the life before back (its snapshot, the
 * stream): the next pd_notifier_start opens the window of
 * pd_notifier_same, in which, too, a change of a user this node announced
 * in it is announced after another node took the user over (a set of
 * PD_NOTIFY_SAID_BITS bits, two per user hash: 1 MB, allocated at the
 * first such start; out of memory, nothing is kept and nothing more
 * said). */
#define PD_NOTIFY_SAID_BITS (1u << 23)
/* The users written in a window (pd_notifier_same): a bit per user hash. */
#define PD_NOTIFY_WRITTEN_BITS (1u << 20)
void pd_notifier_devices_back(pd_notifier *nf);
/* Warming up again (the loop stalled): nothing is announced until
 * pd_notifier_start (a heal under way is held for it). */
void pd_notifier_pause(pd_notifier *nf);
bool pd_notifier_announcing(const pd_notifier *nf);

/* ---- changes and time ---- */

/* A change of a user's public view at now (the model's change callback):
 * announced if this node is ready and announces v->user (or said it in
 * the window of pd_notifier_devices_back). v is borrowed. */
void pd_notifier_change(pd_notifier *nf, const pd_view *v, uint64_t now);
/* A user's ver raised by a floor, its status unchanged (the model's floor
 * callback, pd_model_on_floor): announced like a change, but only while
 * pd_notifier_floors_open: within two node timeouts and two sync
 * intervals of this node's start, a heal or a take-over (see notify.c,
 * floors_open). */
void pd_notifier_floor(pd_notifier *nf, const pd_view *v, uint64_t now);
/* The same for a user written without a change of status
 * (pd_model_on_same), if its ver shows a write of the last quarter sync
 * interval, but only in that window after the start of a life that got
 * devices back (pd_notifier_devices_back). Both are counted in the stats'
 * floors. The model asks for these writes while pd_notifier_wants_same:
 * in any window of floors, whose closing walk says again every user
 * written in it (a bit per user hash, PD_NOTIFY_WRITTEN_BITS, allocated at
 * the first window's first write), whatever its ver shows. */
void pd_notifier_same(pd_notifier *nf, const pd_view *v, uint64_t now);
bool pd_notifier_wants_same(const pd_notifier *nf, uint64_t now);
bool pd_notifier_floors_open(const pd_notifier *nf, uint64_t now);
/* True if this node announces user's changes under the current set. */
bool pd_notifier_is_announcer(const pd_notifier *nf, pd_str user);
/* The node that announces user's changes under the current set (this node
 * or a peer): *who is valid until the next membership call. */
void pd_notifier_announcer_of(const pd_notifier *nf, pd_str user, pd_str *who);

/* Publishes the held views whose coalescing interval ended by now. */
void pd_notifier_tick(pd_notifier *nf, uint64_t now);
/* When pd_notifier_tick has something to do (UINT64_MAX: nothing). */
uint64_t pd_notifier_next_due(const pd_notifier *nf);
/* Stopping: publishes every held view now, and from then on every
 * announced view at once (uncoalesced). */
void pd_notifier_flush(pd_notifier *nf);

void pd_notifier_stats_get(const pd_notifier *nf, pd_notify_stats *st);

#endif

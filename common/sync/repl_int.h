/* repl_int.h - what the parts of the replica share: its state and the
 * calls between its files. Not part of the interface (sync/repl.h is).
 *
 *   repl.c           peers, deltas in and out, heartbeats, time, life cycle
 *   repl_transfer.c  state transfer: serving a partition (in slices) and
 *                    receiving one
 *   repl_restore.c   a restart: snapshot info, restore, replay of the stream
 *   repl_fresh.c     how fresh the view is: as_of and stale peers
 *   repl_answer.c    the cluster query's answer */
#ifndef PD_REPL_INT_H
#define PD_REPL_INT_H
#include "sync/repl.h"
#include "sync/snapshot.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/alloc.h"
#include "base/log.h"
#include "notify/notify.h"

#define FORGOTTEN_MAX 16    /* forgotten peers remembered for a heal */
#define PENDING_MAX 4096    /* deltas held back per origin during a transfer */
/* State transfers served in slices (io.reply_keep): hash buckets per
 * slice (a slice of each transfer per loop turn: 2.5M buckets of a 1M-device
 * model take some 600 turns), and transfers in progress at once. A transfer
 * sends a part at least every half sync interval, empty if the slices found
 * nothing of its origin, so that the requester hears it progress. */
#define SERVE_BUCKETS 4096
/* The registers passed on to a new life of a peer: user buckets a tick. */
#define PASS_ON_BUCKETS 256
/* The republish after a restore: hash buckets of our devices per loop turn
 * (about as many devices: some 8 ms of work on this 2-core machine). */
#define REPUBLISH_BUCKETS 16384
#define SERVING_MAX 16
/* State transfers served per requester per sync interval. */
#define SERVE_PER_INTERVAL 4
/* Changes a peer must owe, unannounced, before it is taken for silent. */
#define OWED_MIN 3

typedef struct {
    uint64_t seq;
    size_t len;
    uint8_t *buf;
} held;

/* What we had applied of one origin when a heal began (see heal_wait). */
struct heal_need {
    const void *q;              /* the peer: compared, never followed (it may be gone) */
    uint64_t inc, seq;
};

typedef struct {
    char id[PD_ID_MAX + 1];
    uint32_t id_n;
    uint64_t inc, seq;          /* applied from this origin */
    uint64_t last_hb;           /* when its last heartbeat came */
    /* Freshness (pd_repl_freshness): when its last message (heartbeat or
     * delta) came; the time of its last message after which we held all
     * it had sent (its `as_of` here); a heartbeat that showed more than we
     * held, waiting for the deltas or the transfer (behind_at 0: none). */
    uint64_t last_heard, fresh_at, behind_at, behind_seq;
    bool heard, alive, ready;   /* ready: caught up and announcing */
    bool suspected;             /* alive, silent past the node timeout */
    /* Our own delta count as its last heartbeat showed it (this life of
     * ours): a lower one later means it dropped our devices, taking us for
     * down while we did not take it so (a one-way or flapping link). */
    uint64_t shown_self_seq;
    /* Back as a new life after we took it for down: what we announced
     * since it was last heard (less a sync interval) is announced again
     * once it is ready (pd_notifier_rejoin); 0: nothing owed. */
    uint64_t rejoin_since;
    bool dropped_us;            /* ... and has not shown all of them again yet, */
    uint64_t dropped_seq;       /* ... that is, our count when we noticed */
    /* A heal with it waits (heal_wait 1) until its heartbeats show our
     * deltas up to heal_our_seq (it has our devices back, and wrote the
     * return floors of the users it had announced offline meanwhile:
     * presence.c, user_regained_device), then (2) until we applied its
     * own deltas up to heal_its_seq, the count that heartbeat gave (those
     * floors are in): only then is the surviving state re-announced, so
     * that its ver outranks that offline. Bounded: at heal_by it goes on
     * anyway. heal_from: what changed since then is re-announced. */
    uint8_t heal_wait;
    uint64_t heal_our_seq, heal_its_seq, heal_from, heal_by;
    /* ... and what we had applied of each other peer then (its floors for
     * their users come once it has their devices back too) */
    struct heal_need *heal_need;
    uint32_t nheal_need;
    bool follows;               /* its last heartbeat holds our current incarnation */
    bool regs_owed;             /* a life we did not know, or one our snapshot named:
                                 * pass on the registers it wrote once it follows
                                 * us (pass_on_registers) */
    bool regs_passing;          /* ... under way, PASS_ON_BUCKETS user buckets a tick */
    uint64_t regs_at;           /* ... its scan cursor in the user table */
    uint8_t *hb;                /* its last heartbeat, for the cluster view */
    size_t hb_len;
    /* A heartbeat said some node applied more of this origin than we have:
     * usually deltas still on their way, so we wait a little (claim_grace)
     * before asking for a transfer. */
    uint64_t claim_seq, claim_at;
    char claim_from[PD_ID_MAX + 1];
    bool syncing, sync_ignore;
    uint64_t sync_req;          /* our number for the transfer in progress */
    uint32_t sync_part;         /* next part expected */
    /* The request, then its last part: a transfer times out after a
     * sync_timeout without a part, however long the whole takes (a large
     * partition is served over many loop turns). */
    uint64_t sync_heard;
    held *pending;
    uint32_t npending;
    bool overflow;
    bool behind;                /* its wall clock is behind ours by more than the bound */
    /* Its own heartbeat showed less than we applied of it (same
     * incarnation): at the second such heartbeat in a row, re-fetch. */
    bool contradicted, force_sync;
    /* The deltas of this incarnation its own last heartbeat's vector clock
     * says it had sent, and when a transfer of it last ended: a delta of
     * its own that we hold as applied although it was sent after that
     * heartbeat is a count we were lied to about (on_delta). */
    uint64_t hb_seq, synced_at;
    /* Is it heard announcing? Its heartbeats carry how many notifications
     * it published (ann); changes it was the announcer of here since that
     * count last moved (owed, the first at owed_since). An incarnation
     * that owes several and whose count does not move leaves the
     * announcer set (muted_inc). */
    uint64_t ann, owed_since, muted_inc;
    uint32_t owed;
    bool ann_known;
    /* Progress: the deltas of other origins its last heartbeat says it
     * applied (vc_sum), that sum when it began to owe (sum_at_owe), and
     * ours (without its own) at its last owed change (owed_total). A peer
     * still catching up is slow, not silent. */
    uint64_t vc_sum, sum_at_owe, owed_total;
    /* The incarnation that said it is leaving; one that then heartbeats
     * again was not (a forged or replayed `leaving`): no `leaving` of that
     * incarnation is believed any more (distrust_inc). */
    uint64_t left_inc, distrust_inc;
    /* Its new life carries the one before (a restart: "carries"), whose
     * devices we kept, having applied kept_seq of its deltas: until that
     * life's "restored" delta says whether they are what it restored
     * (0: none kept). Shown in our heartbeats' "kept". */
    uint64_t kept_inc, kept_seq;
    /* This life's "restored" matched our copy of its devices: it holds
     * them, and the last_seen they imply is not passed on to it. */
    bool kept_verified;
    /* What its last heartbeat's "kept" said of our life before (0: nothing). */
    uint64_t kept_us_inc, kept_us_seq;
    uint64_t served_window;     /* state transfers served to it: window start */
    uint32_t served_n;          /* ... and how many in that window */
} peer;

struct pd_repl {
    pd_repl_cfg cfg;
    pd_repl_io io;
    pd_model *m;
    char self[PD_ID_MAX + 1];
    peer **peers;
    uint32_t npeers;
    uint64_t seq;               /* deltas sent by this incarnation */
    uint64_t last_req;          /* sync requests numbered so far */
    msgpack_sbuffer ops;        /* ops waiting for the next delta */
    uint32_t nops;
    bool hold_ops;              /* a restore in one pass: ops wait whatever their size */
    uint64_t trace[PD_TRACE_MAX]; /* trace ids of those ops (benchmarks) */
    uint32_t ntrace;
    uint64_t batch_now;         /* wall clock of the batch (pd_repl_begin): a delta's "at" */
    msgpack_sbuffer out;
    pd_notifier *nf;            /* announcer, re-announce, coalescing: ready = announcing */
    uint64_t now;               /* the time of the call in progress (for nf) */
    uint64_t started, last_hb_sent, last_tick;
    /* When this warm-up's first heartbeat went out (0: not yet): peers can
     * only follow us from then, so the warm-up is counted from it, not from
     * the start (which may be long before: connecting, a slow start). */
    uint64_t listening_since;
    /* The warm-up counts from here: the start, the end of the restore (a
     * long one must not eat it: peers' state transfers and the socket
     * servers' resync come after it), or the end of a stall. `started`
     * stays the start of what is re-announced when ready. */
    uint64_t warm_from;
    uint64_t rest_inc, rest_seq;  /* our previous life, being restored */
    /* A restart from a snapshot of our life before (carry_inc): our
     * heartbeats and deltas say we carry it until the "restored" delta is
     * out: claimed while restoring, then (CARRY_DECIDE) waiting until
     * carry_until for every live peer to say it kept that life, then
     * (CARRY_DUMP) republishing when one did not. */
    enum { CARRY_NONE, CARRY_CLAIM, CARRY_DECIDE, CARRY_DUMP } carry;
    uint64_t carry_inc, carry_until;
    bool restoring;             /* from the first restored op to pd_repl_restore_done */
    bool replaying;             /* in pd_repl_replay_delta */
    /* Our restored devices, sent as the new life's after the restore in
     * slices (repl__republish_step): where the walk is, since when. */
    bool republishing;
    bool repub_regs_only;       /* ... our registers alone: the peers kept our devices */
    pd_dump_cursor repub_cur;
    uint64_t repub_started;
    /* A gap in hearing a peer ended: re-announce at heal_at (0: none) what
     * changed since heal_since (see on_heartbeat). Peers forgotten lately,
     * so that one heard again in the same life still counts as a heal. */
    uint64_t heal_at, heal_since;
    uint64_t healed_at, healed_since; /* the last heal made, and its since */
    uint64_t repeat_at, repeat_since; /* the last repeat (repeat()), and its since */
    uint64_t repeat_due, repeat_due_since; /* one after a silence: when (0: none), since */
    /* The last repeat, or the one due, went back as far as an earlier
     * repeat (repeat_after_silence): the next does not go back further. */
    bool repeat_chained, repeat_due_chained;
    struct {
        char id[PD_ID_MAX + 1];
        uint64_t inc, last_hb;
    } forgotten[FORGOTTEN_MAX];
    uint32_t nforgotten;
    uint64_t published;         /* notifications handed to io.publish */
    pd_repl_stats stats;
    pd_ratelimit refuse_log;
    struct serving *serving[SERVING_MAX]; /* transfers served in slices */
    uint32_t nserving;
};


static inline pd_str S(const char *s) { return pd_str_c(s); }
static inline pd_str peer_id(const peer *p) { return (pd_str){p->id, p->id_n}; }
static inline uint64_t sync_timeout(const pd_repl *r) { return 3 * r->cfg.sync_interval_ms + 1000; }
/* The silence after which a peer is declared down: the node timeout, then
 * the suspicion period. */
static inline uint64_t down_after(const pd_repl *r) {
    return r->cfg.node_timeout_ms + r->cfg.suspicion_ms;
}

uint64_t repl__skew(const pd_repl *r);
bool repl__ms_ahead(const pd_repl *r, uint64_t ms, uint64_t now);
pd_status repl__refuse(pd_repl *r, pd_refuse why, uint64_t now, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
bool repl__ops_ahead(const pd_repl *r, const pd_ops *ops, uint64_t now);
peer *repl__peer_find(const pd_repl *r, pd_str id);
peer *repl__peer_get(pd_repl *r, pd_str id);
void repl__apply_ops(pd_repl *r, pd_str origin, const pd_ops *ops, uint64_t now);
void repl__end_sync(pd_repl *r, peer *p, uint64_t now);
/* A new life of p (inc): the old one's devices go, unless the new one
 * carries that life (carries) and we hold it whole (see kept_inc). */
void repl__new_incarnation(pd_repl *r, peer *p, uint64_t inc, uint64_t carries, uint64_t now);
/* A "restored" delta of p applied: its partition compared (repl.c). */
void repl__check_restored(pd_repl *r, peer *p, const pd_restored *rs, uint64_t now);
/* CARRY_DECIDE: decides once every live peer said (repl_restore.c). */
void repl__carry_step(pd_repl *r, uint64_t now);
pd_status repl__apply_delta(pd_repl *r, peer *p, const pd_delta *d, uint64_t now);
void repl__serve_step(pd_repl *r);
void repl__republish_step(pd_repl *r, uint64_t now);
/* Freshness: a heartbeat (claiming seq of inc) or an in-order delta from
 * p arrived at now; a transfer of p ended (repl_fresh.c). */
void repl__fresh_heartbeat(peer *p, uint64_t inc, uint64_t seq, uint64_t now);
void repl__fresh_delta(peer *p, uint64_t now);
void repl__fresh_check(peer *p);
/* A partition dump sent as this node's ops (the restore's end). */
void repl__on_op_dump(void *ud, const pd_op *op);

#endif

/* notify.c - change notifications (see notify.h): the announcer choice
 * over a small table of peers (this node's view of who is alive and
 * ready, now and before the last change), the re-announce scans of the
 * model, and the coalescing gate in front of the publish callback. */
#include "notify/notify.h"
#include <string.h>
#include "base/alloc.h"
#include "base/htab.h"
#include "base/ids.h"

typedef struct {
    char id[PD_ID_MAX + 1];
    uint32_t id_n;
    bool announcing;           /* alive and ready, as the replica last said */
    bool was_announcing;       /* the same before the last membership change */
} member;

struct pd_notifier {
    pd_notify_cfg cfg;
    char self[PD_ID_MAX + 1];
    uint32_t self_n;
    pd_notify_publish_fn publish;
    void *ud;
    member *peers;
    uint32_t npeers;
    bool announcing;           /* this node is ready */
    uint64_t restored_at;      /* pd_notifier_restored, until the next start (0: none) */
    bool devices_back;         /* pd_notifier_devices_back, until the next start */
    bool stopping;             /* flushed: the gate is bypassed */
    pd_gate *gate;
    uint64_t announced;
    bool healing;              /* a heal's walk is under way (in slices) */
    bool heal_full;            /* ... also of users not offline (a heal, not a repeat) */
    bool heal_prev;            /* ... also of users announced under the set as it was */
    uint64_t heal_prev_until;  /* ... as long as they changed before then */
    uint64_t heal_cur;         /* ... its cursor in the model's users */
    uint64_t heal_from;        /* ... and the changes it announces again from */
    bool heal_close;           /* ... the closing walk of a window (close_walk) */
    bool heal_held;            /* a walk asked, or cut short, while paused: made by the
                                * next start (hold); heal_from, _full, _prev hold it */
    bool closing;              /* a closing walk is due when the window ends */
    uint64_t close_from;       /* ... of the users whose ver shows a write since */
    uint64_t floors_until;     /* floors are announced until then (pd_notifier_floor) */
    uint64_t same_until;       /* ... and writes that change no status (pd_notifier_same) */
    uint64_t *said;            /* users announced in that window (said_in):
                                * their changes are said after another node took them over */
    uint64_t *written;         /* users written in a window (written_in): the closing
                                * walk says them again whatever their ver (cleared by it) */
    uint64_t floors;           /* ... how many were */
    uint64_t closes;           /* closing walks begun (close_walk) */
};

/* The gate's send function: out to the owner. */
static void publish(void *ud, const pd_view *v) {
    pd_notifier *nf = ud;
    nf->publish(nf->ud, v);
}

pd_notifier *pd_notifier_new(const pd_notify_cfg *cfg, pd_str self, pd_notify_publish_fn fn,
                             void *ud) {
    pd_notifier *nf = NULL;
    if (self.n > PD_ID_MAX) goto fail;
    nf = pd_calloc(1, sizeof *nf);
    if (nf == NULL) goto fail;
    nf->cfg = *cfg;
    if (nf->cfg.max_users == 0) nf->cfg.max_users = PD_NOTIFY_MAX_USERS_DEFAULT;
    memcpy(nf->self, self.p, self.n);
    nf->self_n = self.n;
    nf->publish = fn;
    nf->ud = ud;
    nf->gate = pd_gate_new(nf->cfg.min_interval_ms, nf->cfg.max_users, publish, nf);
    if (nf->gate == NULL) goto fail;
    return nf;
fail:
    pd_notifier_free(nf);
    return NULL;
}

void pd_notifier_free(pd_notifier *nf) {
    if (nf == NULL) return;
    pd_free(nf->said);
    pd_free(nf->written);
    pd_gate_free(nf->gate);
    pd_free(nf->peers);
    pd_free(nf);
}

/* ---- membership ----------------------------------------------------------------- */

static member *find_peer(const pd_notifier *nf, pd_str id) {
    for (uint32_t i = 0; i < nf->npeers; i++) {
        member *p = &nf->peers[i];
        if (p->id_n == id.n && memcmp(p->id, id.p, id.n) == 0) return p;
    }
    return NULL;
}

pd_status pd_notifier_add_peer(pd_notifier *nf, pd_str peer) {
    if (find_peer(nf, peer) != NULL) return PD_OK;
    if (peer.n > PD_ID_MAX) return PD_EBADVALUE;
    member *v = pd_realloc(nf->peers, sizeof *v * (nf->npeers + 1));
    if (v == NULL) return PD_ENOMEM;
    nf->peers = v;
    member *p = &v[nf->npeers++];
    memset(p, 0, sizeof *p);
    memcpy(p->id, peer.p, peer.n);
    p->id_n = peer.n;
    return PD_OK;
}

void pd_notifier_remove_peer(pd_notifier *nf, pd_str peer) {
    member *p = find_peer(nf, peer);
    if (p == NULL || p->announcing) return;
    size_t i = (size_t)(p - nf->peers);
    memmove(p, p + 1, sizeof *p * (nf->npeers - i - 1));
    nf->npeers--;
}

/* The set as it is becomes the set as it was. */
static void remember_membership(pd_notifier *nf) {
    for (uint32_t i = 0; i < nf->npeers; i++) nf->peers[i].was_announcing = nf->peers[i].announcing;
}

void pd_notifier_set_peer(pd_notifier *nf, pd_str peer, bool announcing) {
    remember_membership(nf);
    member *p = find_peer(nf, peer);
    if (p != NULL) p->announcing = announcing;
}

/* ---- the announcer ----------------------------------------------------------------- */

static uint64_t score(pd_str node, pd_str user) {
    char buf[2 * PD_ID_MAX + 1];
    memcpy(buf, node.p, node.n);
    buf[node.n] = '\n';
    memcpy(buf + node.n + 1, user.p, user.n);
    return pd_hash(buf, node.n + 1u + user.n);
}

/* True if this node announces user's changes; prev: under the set as it
 * was before the last membership change. */
static bool announcer(const pd_notifier *nf, pd_str user, bool prev) {
    uint64_t best = score((pd_str){nf->self, nf->self_n}, user);
    for (uint32_t i = 0; i < nf->npeers; i++) {
        const member *p = &nf->peers[i];
        if (!(prev ? p->was_announcing : p->announcing)) continue;
        uint64_t s = score((pd_str){p->id, p->id_n}, user);
        if (s > best || (s == best && strcmp(p->id, nf->self) > 0)) return false;
    }
    return true;
}

bool pd_notifier_is_announcer(const pd_notifier *nf, pd_str user) {
    return announcer(nf, user, false);
}

void pd_notifier_announcer_of(const pd_notifier *nf, pd_str user, pd_str *who) {
    pd_str best_id = {nf->self, nf->self_n};
    uint64_t best = score(best_id, user);
    for (uint32_t i = 0; i < nf->npeers; i++) {
        const member *p = &nf->peers[i];
        if (!p->announcing) continue;
        pd_str id = {p->id, p->id_n};
        uint64_t s = score(id, user);
        /* ties: the larger id, as announcer() */
        if (s > best || (s == best && strcmp(p->id, best_id.p) > 0)) {
            best = s;
            best_id = id;
        }
    }
    *who = best_id;
}

/* ---- out: the gate, then the publish callback --------------------------------------- */

/* user in a set of `bits` bits (a power of two) probed `probes` times (1
 * or 2, each from its half of the hash): true if it was in; mark puts it
 * in. A collision makes a user taken for in: `written` costs a repeat of
 * the announcer's own view; `said` (two probes, 8M bits: some 0.6 % of the
 * other users while a restarted node said 333k) a change this node says
 * that its announcer says too. */
static bool user_in(uint64_t *set, uint32_t bits, int probes, pd_str user, bool mark) {
    uint64_t h = pd_hash(user.p, user.n);
    bool was = true;
    for (int i = 0; i < probes; i++) {
        uint64_t k = (i == 0 ? h : (h >> 32) | (h << 32)) & (bits - 1);
        uint64_t *w = &set[k / 64], bit = 1ull << (k % 64);
        was = was && (*w & bit) != 0;
        if (mark) *w |= bit;
    }
    return was;
}

static bool written_in(uint64_t *set, pd_str user, bool mark) {
    return user_in(set, PD_NOTIFY_WRITTEN_BITS, 1, user, mark);
}

static bool said_in(uint64_t *set, pd_str user, bool mark) {
    return user_in(set, PD_NOTIFY_SAID_BITS, 2, user, mark);
}

/* A write of user in a window, whatever it changed (the model's change,
 * floor and same callbacks): its closing walk says the user again. The
 * ver alone does not tell: the end of an offline delay takes the time
 * last_seen + the delay, which a node learns late when the departure
 * was on a side cut off (chaos seed 16, u360: a node back as a new life
 * restored a visit of its cut, ended at once, and the node announcing
 * the user got an `offline` numbered before its window opened). */
static void written(pd_notifier *nf, pd_str user, uint64_t now) {
    if (now >= nf->floors_until) return;
    if (nf->written == NULL) {
        nf->written = pd_calloc(PD_NOTIFY_WRITTEN_BITS / 64, sizeof *nf->written);
        if (nf->written == NULL) return; /* the closing walk goes by ver alone */
    }
    written_in(nf->written, user, true);
}

static void announce(pd_notifier *nf, const pd_view *v, uint64_t now) {
    nf->announced++;
    if (nf->said && now < nf->same_until) said_in(nf->said, v->user, true);
    if (nf->stopping) nf->publish(nf->ud, v);
    else pd_gate_offer(nf->gate, v, now);
}

/* A change of a user this node said in the window after the start of a
 * life that got devices of the life before back, though another node
 * announces it now: what it said there may rest on a restored device the
 * others had dropped (the socket server closed it meanwhile), at the very
 * ver of the `offline` they hold (the device's own writes are older than
 * that ver), and when the resync removes the device the announcer, which
 * never had it, sees no change (chaos seed 5, u24: watchers kept the
 * `away`, the later ts on a tie of ver). The node that said it says the
 * change, as its announcer would: a repeat at most. */
static bool said_lately(const pd_notifier *nf, pd_str user, uint64_t now) {
    return nf->said && now < nf->same_until && said_in(nf->said, user, false);
}

void pd_notifier_change(pd_notifier *nf, const pd_view *v, uint64_t now) {
    written(nf, v->user, now);
    if (nf->announcing && (announcer(nf, v->user, false) || said_lately(nf, v->user, now)))
        announce(nf, v, now);
}

/* After a heal, a restart or a change of announcers, another node may have
 * announced an `offline` this node never had, and the floor above it (its
 * writer's, or the owner's when the delay ends there) can arrive after the
 * state was said again below it. For two node timeouts and two sync
 * intervals after each, a floor that changes no status is announced too;
 * after the start of a life that got devices of the life before back
 * (its snapshot, the stream), also a write that changes no status
 * (pd_notifier_same: it said a restored device's user
 * below such an `offline`, and the device's real return, a resync,
 * changed nothing here; chaos seed 9). In steady state neither is (a
 * reconnect within the delay is silent). */
static void floors_open(pd_notifier *nf, uint64_t now) {
    uint64_t until = now + 2 * nf->cfg.node_timeout_ms + 2 * nf->cfg.sync_interval_ms;
    if (until > nf->floors_until) nf->floors_until = until;
    /* When the window ends, its closing walk (close_walk) says again what
     * changed in it, and shortly before it (what led to it). */
    uint64_t back = nf->cfg.node_timeout_ms + nf->cfg.sync_interval_ms;
    uint64_t from = now > back ? now - back : 0;
    if (!nf->closing || from < nf->close_from) nf->close_from = from;
    nf->closing = true;
}

bool pd_notifier_floors_open(const pd_notifier *nf, uint64_t now) {
    return nf->announcing && now < nf->floors_until;
}

/* Not an `offline` one: a ver floor is written for a return (the user has
 * devices at its writer), so a node that shows the user offline under it
 * has not got the devices yet (it_persist under TSan: a node that missed
 * the delta of a device made just before its owner left learned the user
 * from the floor alone and said it `offline`, the device coming right
 * after). The closing walk says the user again if it stays so. */
void pd_notifier_floor(pd_notifier *nf, const pd_view *v, uint64_t now) {
    written(nf, v->user, now);
    if (v->status == PD_PUB_OFFLINE || !pd_notifier_floors_open(nf, now) ||
        !announcer(nf, v->user, false))
        return;
    nf->floors++;
    announce(nf, v, now);
}

bool pd_notifier_wants_same(const pd_notifier *nf, uint64_t now) {
    return now < nf->floors_until;
}

/* Said only in the window after the start of a life that got devices
 * back, and only a write numbered just now (this node's, or one made
 * elsewhere and delivered at once): the others (a register passed on, a
 * transfer's copy of what is held already) leave the ver as watchers
 * heard it, until the closing walk. */
void pd_notifier_same(pd_notifier *nf, const pd_view *v, uint64_t now) {
    written(nf, v->user, now);
    if (!nf->announcing || now >= nf->same_until ||
        (v->ver >> 16) + nf->cfg.sync_interval_ms / 4 < now || !announcer(nf, v->user, false))
        return;
    nf->floors++;
    announce(nf, v, now);
}

/* ---- re-announcing ------------------------------------------------------------------ */

typedef struct {
    pd_notifier *nf;
    int64_t since;
    bool only_new;      /* only users this node did not announce before */
    bool not_offline;   /* also users not offline now, whenever they changed */
    uint64_t now;
    bool prev_too;      /* also users this node announced before (and no longer) */
    int64_t prev_until; /* ... changed before then (said by this node) */
    int64_t offline_since; /* also offline users whose ver shows a time since (0: no) */
    bool by_ver;        /* also users whose ver shows a time since `since` (close_walk) */
} reannounce_ctx;

/* v said again with a ts of now at least. */
static void announce_now(pd_notifier *nf, const pd_view *v, uint64_t now) {
    pd_view fresh = *v;
    if (fresh.ts < (int64_t)now) fresh.ts = (int64_t)now;
    announce(nf, &fresh, now);
}

static void reannounce_one(void *ud, const pd_view *v) {
    reannounce_ctx *c = ud;
    /* After a heal, changed means a write since then anywhere (its ver):
     * the other side's changes (announced to its watchers) are in the
     * view now, though this node never announced them, nor perhaps ever
     * held the user before (ts 0: offline when a transfer brought it). */
    bool recent = (v->ts > 0 && v->ts >= c->since) ||
                  (c->not_offline && (v->status != PD_PUB_OFFLINE ||
                                      (int64_t)(v->ver >> 16) >= c->since)) ||
                  (c->by_ver && ((int64_t)(v->ver >> 16) >= c->since ||
                                 (c->nf->written && written_in(c->nf->written, v->user, false))));
    /* Back from a snapshot: an `offline` decided since it was taken
     * (pd_notifier_restored), unchanged in this life (ts 0). */
    bool restored = !recent && c->offline_since > 0 && v->status == PD_PUB_OFFLINE &&
                    (int64_t)(v->ver >> 16) >= c->offline_since;
    if (!recent && !restored) return;
    /* The life before may have been its announcer on its side of a split,
     * and said it online there alone (chaos seed 11): whoever announces
     * it now may have got it already offline, nothing changed, and said
     * nothing. The same state at the same ver: a repeat at most. */
    if (restored) { /* as of now: it had no ts of this life */
        announce_now(c->nf, v, c->now);
        return;
    }
    /* A user we no longer announce: only what we said of it, as it was. A
     * later change of our view was not ours to say, and our view of it may
     * lag its announcer's (chaos seed 16: a repeat of an `away` that was
     * never the truth, newer than the truth's last notification). */
    if (!announcer(c->nf, v->user, false) &&
        !(c->prev_too && v->ts <= c->prev_until && announcer(c->nf, v->user, true)))
        return;
    if (c->only_new && announcer(c->nf, v->user, true)) return;
    if (!c->not_offline && !c->by_ver) {
        announce(c->nf, v, c->now);
        return;
    }
    /* After a heal the view is said again as of now: what the other side
     * announced meanwhile (and a route may still deliver late) carries an
     * older ts, so a watcher keeping the newest ts per user ends here. */
    announce_now(c->nf, v, c->now);
}

/* Announces again the changes made at or after now - window, and the
 * offline users whose ver shows a time at or after offline_since (0: none). */
static void reannounce(pd_notifier *nf, const pd_model *m, uint64_t window, bool only_new,
                       uint64_t offline_since, uint64_t now) {
    reannounce_ctx c = {nf, (int64_t)(now > window ? now - window : 0), only_new, false,
                        now, false, 0, (int64_t)offline_since, false};
    pd_model_foreach_view(m, reannounce_one, &c);
}

/* The users newly ours: their changes of the last two node timeouts and
 * two sync intervals, said again. Their announcer went away (declared down
 * a node timeout after it was last heard, or left) or was left out, and
 * it may have owed a change for up to a node timeout before that (a slow
 * node is muted only then: repl.c, check_announcing), or said it just
 * before it was killed, the notification lost with the process (chaos
 * seed 5, u696: said a second late, then killed). */
void pd_notifier_take_over(pd_notifier *nf, const pd_model *m, uint64_t now) {
    if (!nf->announcing) return;
    floors_open(nf, now);
    reannounce(nf, m, 2 * nf->cfg.node_timeout_ms + 2 * nf->cfg.sync_interval_ms, true, 0, now);
}

/* Starts (or starts over) the walk of pd_notifier_heal_step: from the
 * earlier of the two `from`s, full if either is. */
static void walk_start(pd_notifier *nf, const pd_model *m, uint64_t from, bool full,
                       bool prev, uint64_t now) {
    floors_open(nf, now);
    bool was_prev = nf->healing && nf->heal_prev;
    if (nf->healing) {
        if (nf->heal_from < from) from = nf->heal_from;
        full = full || nf->heal_full;
        prev = prev || nf->heal_prev;
    }
    if (prev && !was_prev) nf->heal_prev_until = now;
    nf->healing = true;
    nf->heal_close = false; /* a closing walk cut short: floors_open re-armed it */
    nf->heal_full = full;
    nf->heal_prev = prev;
    nf->heal_cur = 0;
    nf->heal_from = from;
    pd_notifier_heal_step(nf, m, now);
}

/* A walk asked while paused (a stall: the node catches up first), or cut
 * short by the pause, is not dropped: the next start makes it, merged with
 * any other held (chaos seed 6: a heal due while a stopped node caught up
 * was lost, and what it had announced to its side alone with it). */
static void hold(pd_notifier *nf, uint64_t from, bool full, bool prev) {
    if (nf->heal_held) {
        if (nf->heal_from < from) from = nf->heal_from;
        full = full || nf->heal_full;
        prev = prev || nf->heal_prev;
    }
    nf->heal_held = true;
    nf->heal_from = from;
    nf->heal_full = full;
    nf->heal_prev = prev;
}

void pd_notifier_rejoin(pd_notifier *nf, const pd_model *m, uint64_t since, bool prev_too,
                        uint64_t now) {
    if (!nf->announcing) hold(nf, since, false, prev_too);
    else walk_start(nf, m, since, false, prev_too, now);
}

void pd_notifier_heal(pd_notifier *nf, const pd_model *m, uint64_t since, uint64_t now) {
    /* A change stamped a little before the last heartbeat may not have
     * reached the other side either: one sync interval of margin. */
    uint64_t from = since > nf->cfg.sync_interval_ms ? since - nf->cfg.sync_interval_ms : 0;
    if (!nf->announcing) hold(nf, from, true, false);
    else walk_start(nf, m, from, true, false, now);
}

/* The end of a window (floors_open: after a start, a heal, a rejoin, a
 * take-over): the users we announce that were written in it (`written`)
 * or whose ver shows a write since it opened (less a node timeout) are
 * said again, as of now. Within the
 * window, writes may have raised a ver without a notification (a floor
 * under the ver already shown here, a write that changed no status),
 * above an `offline` another node announced (chaos seed 14: the resync of
 * a node back as a new life, Redis and the stream lost); by its end the
 * floors and transfers are in. A repeat otherwise. */
static void close_walk(pd_notifier *nf, const pd_model *m, uint64_t now) {
    nf->closing = false;
    nf->healing = true;
    nf->heal_close = true;
    nf->heal_full = nf->heal_prev = false;
    nf->heal_cur = 0;
    nf->heal_from = nf->close_from;
    nf->closes++;
    pd_notifier_heal_step(nf, m, now);
}

void pd_notifier_heal_step(pd_notifier *nf, const pd_model *m, uint64_t now) {
    if (!nf->healing) {
        if (nf->closing && nf->announcing && now >= nf->floors_until) close_walk(nf, m, now);
        return;
    }
    if (!nf->announcing) { /* not reached: pd_notifier_pause holds it */
        pd_notifier_pause(nf);
        return;
    }
    /* Each slice says the views again as of its own now (a heal, a
     * closing walk) or as they were announced (a repeat). */
    reannounce_ctx c = {nf, (int64_t)nf->heal_from, false, nf->heal_full, now, nf->heal_prev,
                        (int64_t)nf->heal_prev_until, 0, nf->heal_close};
    if (pd_model_foreach_view_step(m, &nf->heal_cur, PD_HEAL_BUCKETS, reannounce_one, &c)) {
        nf->healing = false;
        /* Said: the next window's writes start afresh, unless one opened
         * while the walk went on (a take-over: `closing` again): its writes
         * behind the walk's cursor are its own closing walk's to say. */
        if (nf->heal_close && nf->written && !nf->closing)
            memset(nf->written, 0, PD_NOTIFY_WRITTEN_BITS / 8);
    }
}

bool pd_notifier_healing(const pd_notifier *nf) { return nf->healing; }

void pd_notifier_start(pd_notifier *nf, const pd_model *m, uint64_t warm_since, uint64_t now) {
    nf->announcing = true;
    remember_membership(nf);
    floors_open(nf, now);
    /* Changes made while warming up were not announced yet; back from a
     * snapshot, nor perhaps what the life before decided after it was taken
     * (less a sync interval): one walk for both (1M users at a restart). */
    uint64_t si = nf->cfg.sync_interval_ms, restored = nf->restored_at;
    uint64_t offline_since = restored ? (restored > si ? restored - si : 1) : 0;
    nf->restored_at = 0;
    if (nf->devices_back) {
        nf->same_until = nf->floors_until;
        if (nf->said == NULL) nf->said = pd_calloc(PD_NOTIFY_SAID_BITS / 64, sizeof *nf->said);
        else memset(nf->said, 0, PD_NOTIFY_SAID_BITS / 8);
    }
    nf->devices_back = false;
    reannounce(nf, m, now - warm_since + nf->cfg.node_timeout_ms, false, offline_since, now);
    if (nf->heal_held) {
        nf->heal_held = false;
        walk_start(nf, m, nf->heal_from, nf->heal_full, nf->heal_prev, now);
    }
}

void pd_notifier_restored(pd_notifier *nf, uint64_t taken_at) { nf->restored_at = taken_at; }

void pd_notifier_devices_back(pd_notifier *nf) { nf->devices_back = true; }

void pd_notifier_pause(pd_notifier *nf) {
    /* A walk under way is held as it is (its fields), but a closing walk,
     * which the next window's end makes again. */
    if (nf->healing && nf->heal_close) nf->closing = true;
    else if (nf->healing) nf->heal_held = true;
    nf->announcing = false;
    nf->healing = false;
}

bool pd_notifier_announcing(const pd_notifier *nf) { return nf->announcing; }

/* ---- time ------------------------------------------------------------------------- */

void pd_notifier_tick(pd_notifier *nf, uint64_t now) {
    if (!nf->stopping) pd_gate_tick(nf->gate, now);
}

uint64_t pd_notifier_next_due(const pd_notifier *nf) {
    return nf->stopping ? UINT64_MAX : pd_gate_next_due(nf->gate);
}

void pd_notifier_flush(pd_notifier *nf) {
    if (nf->stopping) return;
    pd_gate_flush(nf->gate);
    nf->stopping = true;
}

void pd_notifier_stats_get(const pd_notifier *nf, pd_notify_stats *st) {
    st->announced = nf->announced;
    st->floors = nf->floors;
    st->closes = nf->closes;
    pd_gate_stats_get(nf->gate, &st->gate);
}

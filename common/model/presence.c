/* presence.c - applying events and timers to the presence model.
 *
 * Design: three intrusive hash tables (users by id, devices by server+conn,
 * servers by id; the first two link their slab records by index), one
 * timer heap and the idle queue (presence_idle.c). Each operation first
 * validates everything it needs (so an error changes nothing), then mutates, marking
 * the users it touched dirty; at the end of the operation pd__flush()
 * compares each dirty user's public view with the one last announced and
 * reports real changes. Reconnects inside the offline delay therefore never
 * show up, and a sync that replaces a connection does not flap. */
#include "model/presence_int.h"
#include <stddef.h>
#include <string.h>
#include "base/alloc.h"

#define OWNER(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* Every record has a slab index, so every record fits a slab class. */
_Static_assert(offsetof(pd_device, buf) + 2 * UINT8_MAX + PD_META_MAX <= PD_SLAB_MAX,
               "a device with the largest conn, label and meta fits the slab");
_Static_assert(offsetof(pd_user, id) + UINT8_MAX <= PD_SLAB_MAX,
               "a user with the longest id fits the slab");

/* ---- hashing and lookup --------------------------------------------------- */

static uint64_t user_hash(const void *ud, const void *e) {
    const pd_user *u = e;
    (void)ud;
    return pd_hash(u->id, u->id_n);
}

static uint64_t server_hash(const pd_hnode *e) {
    return ((const pd_server *)e)->hash;
}

static uint64_t device_key_hash(const pd_server *s, pd_str conn) {
    /* Servers are interned, so their address identifies them. */
    return pd_hash(conn.p, conn.n) ^ (s->hash * 0x9e3779b97f4a7c15ULL);
}

/* ud: the model (the device's server). */
static uint64_t device_hash(const void *ud, const void *e) {
    const pd_device *d = e;
    return device_key_hash(pd__dev_server(ud, d), (pd_str){d->buf, d->conn_n});
}

static pd_user *user_find_h(const pd_model *m, pd_str id, uint64_t h) {
    for (pd_user *u = pd_ihtab_bucket(&m->users, h); u; u = pd_ihtab_next(&m->users, u)) {
        if (u->id_n == id.n && memcmp(u->id, id.p, id.n) == 0) return u;
    }
    return NULL;
}

pd_user *pd__user_find(const pd_model *m, pd_str id) {
    return user_find_h(m, id, pd_hash(id.p, id.n));
}

static pd_server *server_find(const pd_model *m, pd_str id) {
    for (pd_hnode *e = pd_htab_bucket(&m->servers, pd_hash(id.p, id.n)); e; e = e->next) {
        pd_server *s = (pd_server *)e;
        if (s->id_n == id.n && memcmp(s->id, id.p, id.n) == 0) return s;
    }
    return NULL;
}

pd_device *pd__device_find(const pd_model *m, const pd_server *s, pd_str conn) {
    if (s == NULL) return NULL;
    const pd_ihtab *t = &m->devices;
    for (pd_device *d = pd_ihtab_bucket(t, device_key_hash(s, conn)); d; d = pd_ihtab_next(t, d)) {
        if (d->server == s->ix && d->conn_n == conn.n && memcmp(d->buf, conn.p, conn.n) == 0)
            return d;
    }
    return NULL;
}

/* ---- users ---------------------------------------------------------------- */

pd_user *pd__user_get(pd_model *m, pd_str id) {
    uint64_t h = pd_hash(id.p, id.n);
    pd_user *u = user_find_h(m, id, h);
    if (u) return u;
    u = pd_slab_alloc(&m->user_slab, offsetof(pd_user, id) + id.n);
    if (u == NULL) return NULL;
    memcpy(u->id, id.p, id.n);
    u->id_n = (uint8_t)id.n;
    u->grace.kind = TK_GRACE;
    u->pub_status = PD_PUB_OFFLINE;
    m->by_status[PD_PUB_OFFLINE]++;
    pd_ihtab_insert(&m->users, u, h);
    return u;
}

void pd__mark_dirty(pd_model *m, pd_user *u) {
    if (u->flags & UF_DIRTY) return;
    if (m->ndirty == m->dirty_cap) {
        uint32_t cap = m->dirty_cap ? m->dirty_cap * 2 : 64;
        pd_user **d = pd_realloc(m->dirty, sizeof *d * cap);
        if (d == NULL) return; /* the change is announced with the next one */
        m->dirty = d;
        m->dirty_cap = cap;
    }
    u->flags |= UF_DIRTY;
    m->dirty[m->ndirty++] = u;
}

static uint16_t public_custom(const pd_user *u) {
    if (pd__user_custom(u) == NULL || u->chosen == PD_CHOSEN_INVISIBLE) return 0;
    return u->custom_gen;
}

/* ---- forgetting (PRESENCE_USER_RETENTION_MS) ------------------------------ */

/* Nothing left of u but its last_seen: no device (nor the offline delay),
 * chosen status auto, no custom status. All replicated, so every node
 * decides alike; each forgets at last_seen + retention by its own clock. */
static bool user_forgettable(const pd_user *u) {
    return u->ndev == 0 && !(u->flags & UF_GRACE) && u->chosen == PD_CHOSEN_AUTO &&
           pd__user_custom(u) == NULL;
}

/* From last_seen, or from the last write of the chosen or custom status
 * (or the custom status's expiry) if later: the write that made u
 * forgettable (back to auto, cleared) must outlive its way to every
 * node. Forgotten at once, it would be in no later state transfer of its
 * writer, and a node that missed its op (refused while it took the writer
 * for down) would keep the register it replaced for good. The ver floor
 * counts too: a VER op can reach a node before anything else of its user
 * (the devices it is about come in another origin's partition), and a
 * user known by nothing but that floor (no last_seen yet) would be
 * forgotten at the next tick, floor and all, on that node only; the
 * devices coming later would bring the user back without it, and that
 * node's ver would stay below the others' for good (chaos seed 8). */
static uint64_t retention_due(const pd_model *m, const pd_user *u) {
    uint64_t t = u->seen > 0 ? (uint64_t)u->seen : 0;
    uint64_t w = (u->chosen_hlc > u->custom_hlc ? u->chosen_hlc : u->custom_hlc) >> 16;
    if (w > t) t = w;
    if ((u->vmax >> 16) > t) t = u->vmax >> 16;
    int64_t expired_at = pd__user_expired_at(u);
    if (expired_at > 0 && (uint64_t)expired_at > t) t = (uint64_t)expired_at;
    return t + m->cfg.user_retention_ms;
}

/* After a change of u: a forgettable user waits for its retention on the
 * grace timer, free once the offline delay is over. */
static void retention_arm(pd_model *m, pd_user *u, uint64_t now) {
    if (m->cfg.user_retention_ms == 0 || (u->flags & (UF_GRACE | UF_BACK))) return;
    if (!user_forgettable(u)) {
        pd_theap_disarm(&m->timers, &u->grace);
        return;
    }
    uint64_t due = retention_due(m, u);
    /* Out of memory: forgotten at its next change instead. */
    pd_theap_arm(&m->timers, &u->grace, due > now ? due : now);
}

/* The retention timer fired: forget u if it is still forgettable. A user
 * changed in this very operation (dirty) waits for the flush to re-arm. */
static void user_expire(pd_model *m, pd_user *u, uint64_t now) {
    if (!user_forgettable(u) || m->cfg.user_retention_ms == 0 || (u->flags & UF_DIRTY)) return;
    if (retention_due(m, u) > now) {
        pd_theap_arm(&m->timers, &u->grace, retention_due(m, u));
        return;
    }
    pd_ihtab_remove(&m->users, u, pd_hash(u->id, u->id_n));
    m->forgotten_users++;
    pd_slab_free(&m->user_slab, u, pd__user_size(u));
}

void pd__flush(pd_model *m, uint64_t now) {
    int want_same = -1; /* pd_model_on_same's want, asked once */
    for (uint32_t i = 0; i < m->ndirty; i++) {
        pd_user *u = m->dirty[i];
        bool floor = (u->flags & UF_FLOOR) != 0;
        u->flags &= (uint8_t)~(UF_DIRTY | UF_LEFT_NOW | UF_FLOOR);
        retention_arm(m, u, now);
        pd_public st = pd__user_status(u, false);
        uint16_t cu = public_custom(u);
        pd_change_fn fn = m->on_change;
        bool same = false;
        if (st == u->pub_status && cu == u->pub_custom) {
            if (floor) {
                fn = m->on_floor; /* the same state, above a floor (see UF_FLOOR) */
            } else {
                if (want_same < 0) want_same = m->on_same != NULL && m->want_same(m->ud);
                fn = want_same ? m->on_same : NULL; /* the same state, written */
                same = true;
            }
            if (fn == NULL) continue;
        } else {
            m->by_status[u->pub_status]--;
            m->by_status[st]++;
            u->pub_status = (uint8_t)st;
            u->pub_custom = cu;
            m->changes++;
        }
        int64_t ts = (int64_t)now > u->notified_ts ? (int64_t)now : u->notified_ts + 1;
        /* A write reported to on_same is announced only in a window: the
         * user's ts (which repeats look at for what changed) stays. */
        if (!same) u->notified_ts = ts;
        if (fn) {
            pd_view v;
            pd__user_view(m, u, false, &v);
            v.ts = ts;
            fn(m->ud, &v);
        }
    }
    m->ndirty = 0;
}

/* ---- the offline delay and the ver of a return ------------------------------------ */

/* The ver of the offline state that ends the offline delay of u's last
 * full disconnect, as pd__user_ver gives it once u is offline: the larger
 * of the user's other terms and (last_seen + delay) << 16. */
static uint64_t offline_ver(const pd_model *m, const pd_user *u) {
    uint64_t v = ((uint64_t)(u->seen > 0 ? u->seen : 0) + m->cfg.offline_delay_ms) << 16;
    uint64_t base = pd__user_ver(m, u);
    return base > v ? base : v;
}

/* A return's ver becomes a floor of the user's ver, written by this node
 * and sent to the peers as a VER op (the highest floor wins everywhere).
 * Never ahead of now: receivers' clocks observe it. */
static void back_raise(pd_model *m, pd_user *u, uint64_t back) {
    if (!pd__newer(back, m->node, u->vmax, pd__writer_name(m, u->vmax_by))) return;
    /* Not pd__ver_floor: our own floor changes what we show, or the
     * offline it outranks was never said here (UF_FLOOR). */
    pd__ver_raise(m, u, back, m->node);
    pd__hlc_observe(m, back, m->now);
    pd_op op = {.kind = PD_OP_VER, .user = {u->id, u->id_n}, .hlc = back,
                .writer = pd_str_c(m->node)};
    pd__emit(m, &op);
}

/* The last device left: keep the former presence for the offline delay. */
static void user_lost_last_device(pd_model *m, pd_user *u, bool was_active, uint64_t now) {
    if (u->flags & UF_BACK) { /* left again before its delay's end: nothing to outrank */
        u->flags &= (uint8_t)~UF_BACK;
        pd_theap_disarm(&m->timers, &u->grace);
    }
    pd__mark_dirty(m, u);
    if (u->flags & UF_DIRTY) u->flags |= UF_LEFT_NOW; /* pd__flush clears it */
    u->flags &= (uint8_t)~UF_HELD_ACTIVE;
    if (was_active) u->flags |= UF_HELD_ACTIVE;
    if (m->cfg.offline_delay_ms == 0 ||
        pd_theap_arm(&m->timers, &u->grace, now + m->cfg.offline_delay_ms) != PD_OK) {
        u->flags &= (uint8_t)~UF_GRACE;
        return;
    }
    u->flags |= UF_GRACE;
}

typedef struct {
    pd_model *m;
    uint64_t now;
} restore_ctx;

static void restore_delay(void *ud, void *e) {
    restore_ctx *c = ud;
    pd_model *m = c->m;
    pd_user *u = (pd_user *)e;
    uint64_t due = (u->seen > 0 ? (uint64_t)u->seen : 0) + m->cfg.offline_delay_ms;
    if (u->ndev > 0 || (u->flags & UF_GRACE) || u->seen <= 0 || due <= c->now) return;
    if (pd_theap_arm(&m->timers, &u->grace, due) != PD_OK) return; /* offline at once */
    u->flags |= UF_GRACE | UF_HELD_ACTIVE;
    pd__mark_dirty(m, u);
}

void pd_model_restore_delays(pd_model *m, uint64_t now) {
    restore_ctx c = {m, now};
    uint64_t cur = 0;
    if (m->cfg.offline_delay_ms == 0) return;
    m->now = now;
    do cur = pd_ihtab_scan(&m->users, cur, restore_delay, &c); while (cur != 0);
    pd__flush(m, now);
}

/* A device of owner came back after a full disconnect (called with the
 * device counted, its claim not yet). A node whose offline delay ended
 * before the claim reached it announced `offline` with offline_ver(): the
 * state after the return must outrank it on every node, so such a node
 * raises the user's ver floor to that + 1 (a VER op, replicated). The
 * owner does the same when the delay would have ended (last_seen + the
 * delay, on its grace timer; at once if that is past), so that nodes
 * whose delay had not ended yet give the same ver. Never before: a floor
 * ahead of the clocks, observed by the HLC, would let a claim outrank the
 * newer claim of a server that moved. */
static void user_regained_device(pd_model *m, pd_user *u, const char *owner, uint64_t now) {
    bool replaced = (u->flags & UF_LEFT_NOW) != 0, ended = !(u->flags & UF_GRACE);
    u->flags &= (uint8_t)~(UF_GRACE | UF_LEFT_NOW);
    pd_theap_disarm(&m->timers, &u->grace);
    /* Replaced in one operation: nobody saw the user leave. */
    if (m->cfg.offline_delay_ms == 0 || u->seen <= 0 || replaced) return;
    uint64_t due = (uint64_t)u->seen + m->cfg.offline_delay_ms;
    if (due <= now) {
        if (ended || owner == m->node) back_raise(m, u, offline_ver(m, u) + 1);
    } else if (owner == m->node && !ended &&
               pd_theap_arm(&m->timers, &u->grace, due) == PD_OK) {
        u->back_ver = offline_ver(m, u) + 1; /* now: last_seen moves on with the return */
        u->flags |= UF_BACK;
    }
}

void pd__custom_clear(pd_model *m, pd_user *u) {
    pd_custom *c = pd__user_custom(u);
    if (c == NULL) return;
    pd_theap_disarm(&m->timers, &c->expiry);
    pd_free(c);
    pd__user_set_custom(u, NULL);
    u->custom_gen++;
}

/* ---- devices and servers ----------------------------------------------------- */

/* A free index of m->srv (index 0 is none), or 0 when out of memory.
 * Servers are few and seldom dropped: a scan finds a free one. */
static uint32_t server_ix(pd_model *m) {
    for (uint32_t i = 1; i < m->nsrv; i++)
        if (m->srv[i] == NULL) return i;
    if (m->nsrv == 0) m->nsrv = 1;
    if (m->nsrv >= m->srv_cap) {
        uint32_t cap = m->srv_cap ? m->srv_cap * 2 : 16;
        pd_server **v = pd_realloc(m->srv, sizeof *v * cap);
        if (v == NULL) return 0;
        m->srv = v;
        m->srv_cap = cap;
    }
    m->srv[m->nsrv] = NULL;
    return m->nsrv++;
}

pd_server *pd__server_get(pd_model *m, pd_str id) {
    pd_server *s = server_find(m, id);
    if (s) return s;
    uint32_t ix = server_ix(m);
    if (ix == 0) return NULL;
    s = pd_calloc(1, sizeof *s + id.n);
    if (s == NULL) return NULL;
    s->ix = ix;
    m->srv[ix] = s;
    memcpy(s->id, id.p, id.n);
    s->id_n = (uint8_t)id.n;
    s->hash = pd_hash(id.p, id.n);
    s->timeout.kind = TK_SERVER;
    pd_htab_insert(&m->servers, &s->h, s->hash);
    return s;
}

/* Forgets a server with no devices: its seq and heartbeat watch go too, so
 * that a restarted server can count from zero again. */
static void server_drop(pd_model *m, pd_server *s) {
    pd_theap_disarm(&m->timers, &s->timeout);
    pd_htab_remove(&m->servers, &s->h, server_hash(&s->h));
    m->srv[s->ix] = NULL;
    pd_free(s);
}

bool pd__seen(pd_model *m, pd_user *u, int64_t at, const char *by, uint64_t hlc) {
    if (at <= 0) return false;
    /* (at, writer), then the hlc: a total order, so that the register ends
     * the same whatever order equal times arrive in (two devices of one
     * owner removed at the same ms, restored in hash order). Interned: the
     * same writer is the same pointer. */
    const char *seen_by = pd__writer_name(m, u->seen_by);
    bool tie = at == u->seen && by && seen_by && by == seen_by;
    if (tie ? hlc <= u->seen_hlc : !pd__newer((uint64_t)at, by, (uint64_t)u->seen, seen_by))
        return false;
    u->seen = at;
    u->seen_by = pd__writer_of(by);
    u->seen_hlc = hlc;
    /* The delay ends when its offline's ver says, (last_seen + delay) << 16,
     * on every node: a last_seen decided later elsewhere (the node that
     * took the owner for down last, the owner's own REMOVE reaching a node
     * that had dropped the device) moves the end, so that the offline is
     * never numbered ahead of the clock of the node announcing it, and a
     * return after it gets a higher ver. Out of memory: it ends as armed. */
    uint64_t due = (uint64_t)at + m->cfg.offline_delay_ms;
    if ((u->flags & UF_GRACE) && pd_timer_armed(&u->grace) && due > u->grace.due)
        pd_theap_arm(&m->timers, &u->grace, due);
    /* A user without devices here whose delay still runs elsewhere (its
     * devices left after this node last held them, or before it ever did:
     * it learns that from a REMOVE of a device it had dropped, a state
     * transfer, a register passed on) is put in the delay too, as after a
     * restore (pd_model_restore_delays): it shows what the others show
     * until then, and its offline is announced then, at the same ver, by
     * whichever node announces the user. */
    if (u->ndev == 0 && !(u->flags & (UF_GRACE | UF_BACK)) && m->cfg.offline_delay_ms &&
        due > m->now && pd_theap_arm(&m->timers, &u->grace, due) == PD_OK) {
        u->flags |= UF_GRACE | UF_HELD_ACTIVE;
        /* Shown offline here already (the delay ended here, counted from
         * the last_seen before this one: a split healing): the presence
         * held again outranks that `offline` (chaos seed 15, 60 s: said
         * `busy` below it; watch.py (22)). */
        if (u->pub_status == PD_PUB_OFFLINE && u->notified_ts > 0)
            back_raise(m, u, pd__hlc_next(m, m->now));
        pd__mark_dirty(m, u);
    }
    return true;
}

/* now rounded down to PRESENCE_ACTIVITY_RESOLUTION_MS. */
/* At most UINT32_MAX: a device's last activity is kept as 32 bits after
 * last_active (pd__dev_set_touched), never more than a step apart. */
static int64_t coarse(const pd_model *m, uint64_t now) {
    uint64_t res = m->cfg.activity_resolution_ms;
    if (res > UINT32_MAX) res = UINT32_MAX;
    return (int64_t)(res ? now - now % res : now);
}

/* The replicated last_active moves in steps of the activity resolution:
 * an activity within the current step sends nothing. */
pd_status pd__device_set_active(pd_model *m, pd_device *d, uint64_t now) {
    pd_user *u = pd__dev_user(m, d);
    if ((int64_t)now > pd__dev_touched(d)) pd__dev_set_touched(d, (int64_t)now);
    int64_t la = coarse(m, now);
    bool raised = la > d->last_active;
    if (raised) {
        pd__dev_raise_active(d, la);
        pd__seen(m, u, la, pd__dev_node(m, d), d->claim);
    }
    pd__idle_arm(m, d); /* after last_active: a restored one may have moved it */
    if (d->state != PD_DEV_ACTIVE) {
        d->state = PD_DEV_ACTIVE;
        u->nactive++;
        pd__mark_dirty(m, u);
        raised = true;
    }
    if (raised) pd__emit_device(m, PD_OP_STATE, d);
    return PD_OK;
}

void pd__device_set_idle(pd_model *m, pd_device *d) {
    pd__idle_disarm(m, d);
    if (d->state == PD_DEV_IDLE) return;
    pd_user *u = pd__dev_user(m, d);
    d->state = PD_DEV_IDLE;
    u->nactive--;
    pd__mark_dirty(m, u);
    pd__emit_device(m, PD_OP_STATE, d);
}

/* A device owned by another node: state as its owner reports it. */
void pd__device_state(pd_model *m, pd_device *d, pd_devstate st, int64_t last_active) {
    pd_user *u = pd__dev_user(m, d);
    pd__dev_raise_active(d, last_active);
    pd__seen(m, u, last_active, pd__dev_node(m, d), d->claim);
    if (d->state == st) return;
    d->state = (uint8_t)st;
    if (st == PD_DEV_ACTIVE) u->nactive++;
    else u->nactive--;
    pd__mark_dirty(m, u);
}

void pd__device_remove(pd_model *m, pd_device *d, uint64_t now, int64_t seen_at) {
    pd_user *u = pd__dev_user(m, d);
    if (pd__dev_node(m, d) == m->node) {
        seen_at = (int64_t)now;
        pd__emit_remove(m, d, seen_at);
    }
    pd__seen(m, u, seen_at, pd__dev_node(m, d), d->claim);
    pd_server *s = pd__dev_server(m, d);
    bool was_active = u->nactive > 0;
    pd__idle_disarm(m, d);
    pd_ihtab_remove(&m->devices, d, device_hash(m, d));
    uint32_t di = pd__dev_ix(m, d);
    for (uint32_t *p = &u->devs; *p; p = &pd__dev_at(m, *p)->unext) {
        if (*p == di) { *p = d->unext; break; }
    }
    pd_device *sprev = pd__dev_at(m, d->sprev), *snext = pd__dev_at(m, d->snext);
    if (sprev) sprev->snext = d->snext;
    else s->devs = d->snext;
    if (snext) snext->sprev = d->sprev;
    s->ndev--;
    u->ndev--;
    if (d->state == PD_DEV_ACTIVE) u->nactive--;
    m->ndevices--;
    if (u->ndev == 0) {
        m->live_users--;
        user_lost_last_device(m, u, was_active, now);
    }
    pd__mark_dirty(m, u);
    pd_slab_free(&m->dev_slab, d, pd__device_size(d));
}

/* Creates a device; takes the validated slices of a connect, a sync entry
 * or an ADD op. A device of this node gets an idle timer and is announced
 * to the peers; one owned by another node follows what its owner says. */
pd_status pd__device_add(pd_model *m, pd_server *s, pd_str conn, pd_str user, pd_str label,
                         pd_str meta, const char *owner, uint64_t claim, uint64_t now) {
    bool local = owner == m->node;
    pd_user *u = pd__user_get(m, user);
    if (u == NULL) return PD_ENOMEM;
    size_t size = offsetof(pd_device, buf) + conn.n + label.n + meta.n;
    pd_device *d = pd_slab_alloc(&m->dev_slab, size);
    if (d == NULL) return PD_ENOMEM;
    d->conn_n = (uint8_t)conn.n;
    d->label_n = (uint8_t)label.n;
    d->meta_n = (uint16_t)meta.n;
    memcpy(d->buf, conn.p, conn.n);
    if (label.n) memcpy(d->buf + conn.n, label.p, label.n);
    if (meta.n) memcpy(d->buf + conn.n + label.n, meta.p, meta.n);
    d->user = pd__user_ix(m, u);
    d->server = s->ix;
    d->node = pd__node_index(owner);
    d->claim = claim;
    d->connected_at = (int64_t)now;
    d->state = PD_DEV_IDLE; /* counted below */
    uint32_t di = pd__dev_ix(m, d);
    d->unext = u->devs;
    u->devs = di;
    d->snext = s->devs;
    if (s->devs) pd__dev_at(m, s->devs)->sprev = di;
    s->devs = di;
    s->ndev++;
    if (u->ndev++ == 0) {
        m->live_users++;
        user_regained_device(m, u, owner, now);
    }
    m->ndevices++;
    pd_ihtab_insert(&m->devices, d, device_key_hash(s, conn));
    pd__mark_dirty(m, u);
    if (local) {
        /* A restored one: as recorded, its idle timer from now (the
         * restart's time, in order: the queue's tail). */
        int64_t la = m->restore_active > 0 ? m->restore_active : (int64_t)now;
        d->state = PD_DEV_ACTIVE;
        d->last_active = la;
        pd__dev_set_touched(d, (int64_t)now); /* touched_after 0 but for a restored one */
        pd__idle_arm(m, d);
        u->nactive++;
        pd__seen(m, u, la, m->node, claim);
        pd__emit_device(m, PD_OP_ADD, d);
    }
    return PD_OK;
}

pd_device *pd__local_add(pd_model *m, pd_server *s, pd_str conn, pd_str user, pd_str label,
                         pd_str meta, uint64_t now, pd_status *st) {
    *st = pd__device_add(m, s, conn, user, label, meta, m->node, pd__hlc_next(m, now), now);
    return *st == PD_OK ? pd__dev_at(m, s->devs) : NULL; /* added first in the server's list */
}

/* An event from a socket server about a device another node owns (the
 * server moved here without a sync): this node claims it first, so that
 * only the owner ever changes a device. */
pd_device *pd__claim_local(pd_model *m, pd_device *d, uint64_t now, pd_status *st) {
    *st = PD_OK;
    if (pd__dev_node(m, d) == m->node) return d;
    char conn[PD_ID_MAX], user[PD_ID_MAX], label[PD_DEVICE_MAX];
    const pd_user *du = pd__dev_user(m, d);
    pd_str c = {conn, d->conn_n}, u = {user, du->id_n}, l = {label, d->label_n};
    memcpy(conn, d->buf, d->conn_n);
    memcpy(user, du->id, du->id_n);
    memcpy(label, d->buf + d->conn_n, d->label_n);
    pd_device *old = d;
    pd_devstate state = (pd_devstate)d->state;
    /* Peers get one ADD, in the state the device ends in: an ADD saying
     * active then a STATE saying idle would flap its user on them. */
    pd__ops_mute(m);
    /* Add before removing: a failed add then leaves everything as it was. */
    d = pd__local_add(m, pd__dev_server(m, d), c, u, l, (pd_str){NULL, 0}, now, st);
    if (d && state == PD_DEV_IDLE) pd__device_set_idle(m, d);
    pd__ops_unmute(m);
    if (d) {
        pd__emit_device(m, PD_OP_ADD, d);
        pd__device_remove(m, old, now, 0);
    }
    return d;
}

/* A sync says the server is attached here now. Our own entry may be stale:
 * if the server went to another node and came back, that node's newer
 * claim may still be on its way, and would take the device from us (and
 * lose it when that node times the server out). A new claim outranks it. */
void pd__renew_claim(pd_model *m, pd_device *d, uint64_t now) {
    d->claim = pd__hlc_next(m, now);
    pd__emit_device(m, PD_OP_ADD, d);
}

/* Disconnects every device of s and forgets it (shutdown, timeout). */
static void server_close(pd_model *m, pd_server *s, uint64_t now) {
    for (int pass = 0; pass < 2; pass++) { /* idle ones first: see pd__device_remove */
        for (pd_device *d = pd__dev_at(m, s->devs), *next; d; d = next) {
            next = pd__dev_at(m, d->snext);
            if (pd__dev_node(m, d) == m->node && (pass || d->state == PD_DEV_IDLE))
                pd__device_remove(m, d, now, 0);
        }
    }
    s->watched = 0;
    s->has_seq = 0;
    pd_theap_disarm(&m->timers, &s->timeout);
    pd__sync_run_free(m, s);
    pd__drop_server_if_unused(m, s);
}

/* Forgets a server that has no devices, no seq and no heartbeat watch. */
void pd__drop_server_if_unused(pd_model *m, pd_server *s) {
    if (s->ndev == 0 && !s->watched && !s->has_seq && s->run == NULL) server_drop(m, s);
}

typedef struct {
    pd_model *m;
    uint64_t own;   /* servers holding devices of ours */
} restore_srv_ctx;

static void restore_server(void *ud, pd_hnode *e) {
    restore_srv_ctx *c = ud;
    pd_model *m = c->m;
    pd_server *s = (pd_server *)e; /* h is its first member */
    for (pd_device *d = pd__dev_at(m, s->devs); d; d = pd__dev_at(m, d->snext)) {
        if (pd__dev_node(m, d) != m->node) continue;
        c->own++;
        if (!s->watched && !s->restored &&
            pd_theap_arm(&m->timers, &s->timeout, m->now + m->cfg.server_timeout_ms) == PD_OK) {
            s->restored = 1;
            s->last_msg = (int64_t)m->now;
        }
        return;
    }
}

uint64_t pd_model_restore_servers(pd_model *m, uint64_t now) {
    restore_srv_ctx c = {m, 0};
    uint64_t cur = 0;
    m->now = now;
    do cur = pd_htab_scan(&m->servers, cur, restore_server, &c); while (cur != 0);
    return c.own;
}

/* ---- events ------------------------------------------------------------------- */

static pd_status ev_connect(pd_model *m, pd_server *s, const pd_event *ev, uint64_t now,
                            pd_err *err) {
    pd_device *d = pd__device_find(m, s, ev->conn);
    pd_status st = PD_OK;
    const pd_user *du = d ? pd__dev_user(m, d) : NULL;
    if (d && pd__dev_node(m, d) == m->node && du->id_n == ev->user.n &&
        memcmp(du->id, ev->user.p, ev->user.n) == 0 && d->label_n == ev->device.n &&
        memcmp(d->buf + d->conn_n, ev->device.p, ev->device.n) == 0) {
        return pd__device_set_active(m, d, now); /* a repeated connect: nothing new */
    }
    if ((st = pd__limit_connect(m, s, ev, err)) != PD_OK) return st;
    /* Add first: a failed add changes nothing, and a same-user reconnect
     * never passes through an empty device list. A REMOVE names the claim
     * it removes, so peers cannot mistake it for the new entry. */
    pd_device *old = d;
    d = pd__local_add(m, s, ev->conn, ev->user, ev->device, ev->meta, now, &st);
    if (d && s->run) d->mark |= MARK_SYNC; /* newer than the chunked sync: it stays */
    if (st == PD_OK && old) pd__device_remove(m, old, now, 0);
    return st;
}

/* Sets the custom status register's value (text "" clears it). */
pd_status pd__custom_set(pd_model *m, pd_user *u, pd_str text, pd_str emoji, int64_t expires_at) {
    pd_custom *c = NULL;
    if (text.n > 0) {
        c = pd_calloc(1, sizeof *c + text.n + emoji.n);
        if (c == NULL) return PD_ENOMEM;
        if (expires_at && pd_theap_arm(&m->timers, &c->expiry, (uint64_t)expires_at) != PD_OK) {
            pd_free(c);
            return PD_ENOMEM;
        }
    }
    pd__custom_clear(m, u);
    pd__user_set_expired_at(u, 0); /* a new value: its own expiry, if any, is to come */
    if (c) {
        memcpy(c->buf, text.p, text.n);
        if (emoji.n) memcpy(c->buf + text.n, emoji.p, emoji.n);
        c->text_n = (uint16_t)text.n;
        c->emoji_n = (uint8_t)emoji.n;
        c->expires_at = expires_at;
        c->expiry.kind = TK_CUSTOM;
        c->user = u;
        pd__user_set_custom(u, c);
        if (++u->custom_gen == 0) u->custom_gen = 1; /* 0 means "none" */
    }
    pd__mark_dirty(m, u);
    return PD_OK;
}

void pd__chosen_set(pd_model *m, pd_user *u, pd_chosen c, int64_t frozen) {
    if (c == PD_CHOSEN_INVISIBLE && frozen > 0) u->seen_frozen = frozen;
    else if (c == PD_CHOSEN_INVISIBLE && u->chosen != PD_CHOSEN_INVISIBLE) u->seen_frozen = u->seen;
    u->chosen = (uint8_t)c;
    pd__mark_dirty(m, u);
}

static pd_status ev_custom(pd_model *m, const pd_event *ev, uint64_t now, pd_err *err) {
    if (ev->text.n > 0 && ev->expires_at != 0 && (uint64_t)ev->expires_at <= now) {
        pd_err_set(err, PD_EBADVALUE, "expires_at %lld is in the past",
                   (long long)ev->expires_at);
        return PD_EBADVALUE;
    }
    (void)err;
    pd_user *u = pd__user_get(m, ev->user);
    if (u == NULL) return PD_ENOMEM;
    pd_status st = pd__custom_set(m, u, ev->text, ev->text.n ? ev->emoji : (pd_str){NULL, 0},
                                  ev->text.n ? ev->expires_at : 0);
    if (st != PD_OK) return st;
    u->custom_hlc = pd__hlc_next(m, now);
    u->custom_by = pd__writer_of(m->node);
    pd_op op = {.kind = PD_OP_CUSTOM, .user = ev->user, .text = ev->text,
                .emoji = ev->text.n ? ev->emoji : (pd_str){NULL, 0},
                .expires_at = ev->text.n ? ev->expires_at : 0, .hlc = u->custom_hlc,
                .writer = pd_str_c(m->node)};
    pd__emit(m, &op);
    return PD_OK;
}

static pd_status ev_status(pd_model *m, const pd_event *ev, uint64_t now, pd_err *err) {
    (void)err;
    pd_user *u = pd__user_get(m, ev->user);
    if (u == NULL) return PD_ENOMEM;
    pd__chosen_set(m, u, ev->status, 0);
    u->chosen_hlc = pd__hlc_next(m, now);
    u->chosen_by = pd__writer_of(m->node);
    /* The frozen last_seen goes with the register: peers that saw the
     * user's times in another order freeze the same value. */
    pd_op op = {.kind = PD_OP_CHOSEN, .user = ev->user, .chosen = ev->status,
                .hlc = u->chosen_hlc, .writer = pd_str_c(m->node),
                .at = ev->status == PD_CHOSEN_INVISIBLE ? u->seen_frozen : 0};
    pd__emit(m, &op);
    return PD_OK;
}

/* Looks up the device of a disconnect/activity/idle, or reports unknown_conn. */
static pd_device *conn_lookup(pd_model *m, pd_server *s, const pd_event *ev, pd_err *err) {
    pd_device *d = pd__device_find(m, s, ev->conn);
    if (d == NULL)
        pd_err_set(err, PD_EUNKNOWNCONN, "conn '%.*s' of server '%.*s' is not connected",
                   (int)ev->conn.n, ev->conn.p, (int)ev->server.n, ev->server.p);
    return d;
}

static pd_status apply_server_event(pd_model *m, pd_server *s, const pd_event *ev,
                                    uint64_t now, pd_err *err) {
    pd_device *d;
    pd_status st = PD_OK;
    switch (ev->type) {
    case PD_EV_CONNECT: return ev_connect(m, s, ev, now, err);
    case PD_EV_SYNC: return pd__ev_sync(m, s, ev, now, err);
    case PD_EV_DISCONNECT:
        if ((d = conn_lookup(m, s, ev, err)) == NULL) return PD_EUNKNOWNCONN;
        if ((d = pd__claim_local(m, d, now, &st)) != NULL) pd__device_remove(m, d, now, 0);
        return st;
    case PD_EV_ACTIVITY:
        if ((d = conn_lookup(m, s, ev, err)) == NULL) return PD_EUNKNOWNCONN;
        if ((d = pd__claim_local(m, d, now, &st)) == NULL) return st;
        return pd__device_set_active(m, d, now);
    case PD_EV_IDLE:
        if ((d = conn_lookup(m, s, ev, err)) == NULL) return PD_EUNKNOWNCONN;
        if ((d = pd__claim_local(m, d, now, &st)) == NULL) return st;
        pd__device_set_idle(m, d);
        return PD_OK;
    case PD_EV_HEARTBEAT:
        /* Armed here so that a watched server always has its timeout; the
         * first heartbeat also moves a retention timer (an unwatched
         * server's) to the timeout. */
        if ((!s->watched || !pd_timer_armed(&s->timeout)) &&
            pd_theap_arm(&m->timers, &s->timeout, now + m->cfg.server_timeout_ms) != PD_OK)
            return PD_ENOMEM;
        s->watched = 1;
        return PD_OK;
    default:
        return PD_OK;
    }
}

/* A server without devices or heartbeats keeps only its seq: forgotten
 * after the retention of silence (its timer, unused while unwatched). */
static void server_retention_arm(pd_model *m, pd_server *s, uint64_t now) {
    if (m->cfg.user_retention_ms == 0 || s->ndev > 0 || s->watched || !s->has_seq ||
        pd_timer_armed(&s->timeout))
        return;
    pd_theap_arm(&m->timers, &s->timeout, now + m->cfg.user_retention_ms);
}

/* Records that a server spoke: liveness, and its timeout once watched. */
static void server_alive(pd_model *m, pd_server *s, uint64_t now) {
    s->last_msg = (int64_t)now;
    if (s->restored) { /* it is there: its deadline after a restore ends */
        s->restored = 0;
        if (!s->watched) pd_theap_disarm(&m->timers, &s->timeout);
    }
    if (s->watched && !pd_timer_armed(&s->timeout))
        pd_theap_arm(&m->timers, &s->timeout, now + m->cfg.server_timeout_ms);
}

pd_status pd_model_apply(pd_model *m, const pd_event *ev, uint64_t now,
                         pd_apply_result *res, pd_err *err) {
    pd_status st = PD_OK;
    pd_server *s = ev->server.n ? server_find(m, ev->server) : NULL;
    *res = PD_APPLIED;
    m->nrefusals = 0;
    m->now = now;
    /* Any message from a known server is a sign of life, even a duplicate
     * or a refused one. */
    if (s) server_alive(m, s, now);
    if (s && ev->has_seq && s->has_seq && ev->seq <= s->last_seq && ev->type != PD_EV_SYNC) {
        *res = PD_DUPLICATE;
        return PD_OK;
    }
    /* A step no real counter makes: taken, it would turn every later event
     * of the server into a "duplicate". */
    if (s && ev->has_seq && s->has_seq && ev->type != PD_EV_SYNC &&
        ev->seq - s->last_seq > PD_SEQ_JUMP_MAX) {
        pd_err_set(err, PD_EBADVALUE, "seq jumps from %lld to %lld", (long long)s->last_seq,
                   (long long)ev->seq);
        return PD_EBADVALUE;
    }
    if (ev->type == PD_EV_SHUTDOWN) {
        if (s) server_close(m, s, now);
        pd__flush(m, now);
        return PD_OK;
    }
    if (ev->type == PD_EV_STATUS) st = ev_status(m, ev, now, err);
    else if (ev->type == PD_EV_CUSTOM) st = ev_custom(m, ev, now, err);
    if (ev->server.n && st == PD_OK) {
        bool created = s == NULL;
        if (created && (ev->type == PD_EV_DISCONNECT || ev->type == PD_EV_ACTIVITY ||
                        ev->type == PD_EV_IDLE)) {
            conn_lookup(m, NULL, ev, err);
            return PD_EUNKNOWNCONN;
        }
        if (created && (s = pd__server_get(m, ev->server)) == NULL) st = PD_ENOMEM;
        if (st == PD_OK) st = apply_server_event(m, s, ev, now, err);
        if (st == PD_OK) {
            server_alive(m, s, now);
            if (ev->has_seq) {
                s->last_seq = ev->seq;
                s->has_seq = 1;
            }
            server_retention_arm(m, s, now);
        } else if (s) {
            pd__drop_server_if_unused(m, s);
        }
    }
    if (st == PD_ENOMEM) pd_err_set(err, PD_ENOMEM, "out of memory");
    else if (st != PD_OK && err->code != st) pd_err_set(err, st, "%s", pd_status_str(st));
    if (st == PD_OK && m->nrefusals) *res = PD_PARTIAL;
    pd__flush(m, now);
    return st;
}

/* ---- timers ---------------------------------------------------------------------- */

static void fire(pd_model *m, pd_timer *t, uint64_t now) {
    switch (t->kind) {
    case TK_GRACE: { /* the offline delay, then the retention (see retention_arm) */
        pd_user *u = OWNER(t, pd_user, grace);
        if (u->flags & UF_BACK) { /* returned within the delay: its ver, now */
            u->flags &= (uint8_t)~UF_BACK;
            back_raise(m, u, u->back_ver);
            pd__mark_dirty(m, u);
            break;
        }
        if (!(u->flags & UF_GRACE)) {
            user_expire(m, u, now);
            break;
        }
        /* The offline delay ends at the same ver on every node, computed
         * from last_seen (pd__user_ver), not before last_seen + the delay
         * (pd__seen moves the timer), so not ahead of this clock. */
        u->flags &= (uint8_t)~UF_GRACE;
        pd__mark_dirty(m, u);
        break;
    }
    case TK_CUSTOM: {
        pd_user *u = OWNER(t, pd_custom, expiry)->user;
        int64_t at = pd__user_custom(u)->expires_at;
        pd__custom_clear(m, u); /* first: the expiry takes its place (pd__user_set_expired_at) */
        pd__expiry_ver(m, u, at);
        pd__mark_dirty(m, u);
        break;
    }
    case TK_SYNC:
        pd__sync_run_expire(m, OWNER(t, pd_sync_run, expiry));
        break;
    case TK_SERVER: {
        pd_server *s = OWNER(t, pd_server, timeout);
        if (s->restored) { /* silent since the restore: see pd_model_restore_servers */
            s->restored = 0;
            server_close(m, s, now);
            break;
        }
        if (!s->watched) { /* the retention of its seq (see server_retention_arm) */
            uint64_t due = (uint64_t)s->last_msg + m->cfg.user_retention_ms;
            if (s->ndev > 0 || m->cfg.user_retention_ms == 0) break;
            if (due > now) {
                pd_theap_arm(&m->timers, t, due);
                break;
            }
            s->has_seq = 0;
            m->forgotten_servers++;
            pd__drop_server_if_unused(m, s);
            break;
        }
        uint64_t due = (uint64_t)s->last_msg + m->cfg.server_timeout_ms;
        if (due > now) pd_theap_arm(&m->timers, t, due);
        else server_close(m, s, now);
        break;
    }
    default:
        break;
    }
}

/* Kept with the register's value (pd__register_ops sends it), not in the
 * floor: a node that expired a value another node had replaced in time
 * drops the term with the value, and agrees again. */
void pd__expiry_ver(pd_model *m, pd_user *u, int64_t expires_at) {
    pd__user_set_expired_at(u, expires_at); /* the value was cleared first */
    pd__hlc_observe(m, (uint64_t)expires_at << 16, m->now);
}

/* The heap's timers and the idle queue, in the order they are due. */
void pd_model_tick(pd_model *m, uint64_t now) {
    m->now = now;
    for (;;) {
        pd_device *d;
        pd_timer *t;
        if (pd__idle_next(m) <= pd_theap_next(&m->timers) && (d = pd__idle_pop_due(m, now)))
            pd__device_set_idle(m, d);
        else if ((t = pd_theap_pop_due(&m->timers, now)) != NULL)
            fire(m, t, now);
        else
            break;
    }
    pd__flush(m, now);
}

uint64_t pd_model_next_due(const pd_model *m) {
    uint64_t h = pd_theap_next(&m->timers), i = pd__idle_next(m);
    return i < h ? i : h;
}

uint32_t pd_model_refusals(const pd_model *m, const pd_refusal **out) {
    *out = m->refusals;
    return m->nrefusals;
}

/* ---- life cycle -------------------------------------------------------------------- */

void pd_model_on_floor(pd_model *m, pd_change_fn on_floor) { m->on_floor = on_floor; }

void pd_model_on_same(pd_model *m, pd_want_fn want, pd_change_fn on_same) {
    m->want_same = want;
    m->on_same = on_same;
}

pd_model *pd_model_new(const pd_model_cfg *cfg, pd_str node, pd_change_fn on_change, void *ud) {
    pd_model *m = pd_calloc(1, sizeof *m);
    if (m == NULL) return NULL;
    m->cfg = *cfg;
    m->on_change = on_change;
    m->ud = ud;
    pd_theap_init(&m->timers);
    pd_slab_init(&m->user_slab, PD_SLAB_POOLED);
    pd_slab_init(&m->dev_slab, PD_SLAB_POOLED);
    m->node = pd__intern(m, node);
    if (m->node == NULL || pd_ihtab_init(&m->users, &m->user_slab, user_hash, m) != PD_OK ||
        pd_ihtab_init(&m->devices, &m->dev_slab, device_hash, m) != PD_OK ||
        pd_htab_init(&m->servers, server_hash) != PD_OK) {
        pd_model_free(m);
        return NULL;
    }
    return m;
}

static void free_server(void *ud, pd_hnode *e) {
    (void)ud;
    pd_free(((pd_server *)e)->run);
    pd_free(e);
}

static void free_device(void *ud, void *e) {
    pd_model *m = ud;
    pd_slab_free(&m->dev_slab, e, pd__device_size((pd_device *)e));
}

static void free_user(void *ud, void *e) {
    pd_model *m = ud;
    pd_free(pd__user_custom(e));
    pd_slab_free(&m->user_slab, e, pd__user_size((pd_user *)e));
}

static void free_records(pd_model *m, pd_ihtab *t, pd_ihtab_visit fn) {
    if (t->b == NULL) return;
    uint64_t c = 0;
    do c = pd_ihtab_scan(t, c, fn, m); while (c != 0);
    pd_ihtab_free(t);
}

static void free_servers(pd_model *m) {
    pd_htab *t = &m->servers;
    if (t->b == NULL) return;
    uint64_t c = 0;
    do c = pd_htab_scan(t, c, free_server, m); while (c != 0);
    pd_htab_free(t);
}

void pd_model_free(pd_model *m) {
    if (m == NULL) return;
    pd_theap_free(&m->timers);
    free_records(m, &m->devices, free_device);
    free_records(m, &m->users, free_user);
    free_servers(m);
    pd_free(m->srv);
    pd_slab_destroy(&m->dev_slab);
    pd_slab_destroy(&m->user_slab);
    pd_free(m->dirty);
    pd_free(m->refusals);
    for (uint32_t i = 0; i < m->nnodes; i++) pd_free(m->nodes[i] - 2); /* see pd__intern */
    pd_free(m);
}

/* Frees every record and gives the table back its initial size (keeping
 * the buckets, zeroed, if even that cannot be had). */
static void clear_records(pd_model *m, pd_ihtab *t, pd_ihtab_visit fn) {
    uint64_t c = 0;
    pd_ihtab fresh;
    do c = pd_ihtab_scan(t, c, fn, m); while (c != 0);
    if (pd_ihtab_init(&fresh, t->slab, t->hash, t->hash_ud) == PD_OK) {
        pd_ihtab_free(t);
        *t = fresh;
    } else {
        memset(t->b, 0, (size_t)(t->mask + 1) * sizeof *t->b);
        t->n = 0;
    }
}

static void clear_servers(pd_model *m) {
    pd_htab *t = &m->servers;
    uint64_t c = 0;
    pd_htab fresh;
    do c = pd_htab_scan(t, c, free_server, m); while (c != 0);
    if (pd_htab_init(&fresh, t->hash) == PD_OK) {
        pd_htab_free(t);
        *t = fresh;
    } else {
        memset(t->b, 0, (size_t)(t->mask + 1) * sizeof *t->b);
        t->n = 0;
    }
}

void pd_model_clear(pd_model *m) {
    pd_theap_free(&m->timers);
    pd_theap_init(&m->timers);
    clear_records(m, &m->devices, free_device);
    clear_records(m, &m->users, free_user);
    clear_servers(m);
    m->nsrv = 0; /* the servers' indexes are free again (the array is kept) */
    m->idle_head = m->idle_tail = 0;
    m->nidle = 0;
    pd_slab_destroy(&m->dev_slab);
    pd_slab_destroy(&m->user_slab);
    pd_slab_init(&m->dev_slab, PD_SLAB_POOLED);
    pd_slab_init(&m->user_slab, PD_SLAB_POOLED);
    m->hlc = m->now = m->write_at = 0;
    m->ndirty = m->nrefusals = 0;
    m->ndevices = m->live_users = m->changes = 0;
    memset(m->by_status, 0, sizeof m->by_status);
    m->refused_devices = m->refused_users = 0;
    m->forgotten_users = m->forgotten_servers = 0;
    /* The other nodes' ids: no record names them any more, and those of a
     * refused snapshot would otherwise take places for good (at most
     * PD_MODEL_NODES_MAX ever). This node's stays (m->node). */
    for (uint32_t i = 1; i < m->nnodes; i++) pd_free(m->nodes[i] - 2); /* see pd__intern */
    m->nnodes = 1;
}

bool pd_model_pristine(const pd_model *m) {
    static const uint64_t none[PD_PUB_INVISIBLE + 1];
    return m->users.n == 0 && m->devices.n == 0 && m->servers.n == 0 &&
           pd_theap_count(&m->timers) == 0 && m->hlc == 0 && m->ndirty == 0 &&
           m->ndevices == 0 && m->live_users == 0 && m->changes == 0 &&
           memcmp(m->by_status, none, sizeof none) == 0 && m->refused_devices == 0 &&
           m->refused_users == 0 && m->forgotten_users == 0 && m->forgotten_servers == 0 &&
           m->nidle == 0 && m->nsrv == 0;
}

void pd_model_stats_get(const pd_model *m, pd_model_stats *st) {
    st->users = m->users.n;
    st->devices = m->ndevices;
    st->servers = m->servers.n;
    st->timers = pd_theap_count(&m->timers) + m->nidle;
    st->changes = m->changes;
    st->refused_devices = m->refused_devices;
    st->refused_users = m->refused_users;
    memcpy(st->by_status, m->by_status, sizeof st->by_status);
    st->forgotten_users = m->forgotten_users;
    st->forgotten_servers = m->forgotten_servers;
}

typedef struct {
    pd_server_view *out;
    uint32_t n, max;
} servers_ctx;

static void visit_server(void *ud, pd_hnode *e) {
    servers_ctx *c = ud;
    const pd_server *s = (const pd_server *)e; /* h is its first member */
    if (s->last_msg == 0 || c->n == c->max) return;
    c->out[c->n++] = (pd_server_view){{s->id, s->id_n}, s->ndev, s->last_msg, s->watched != 0};
}

uint32_t pd_model_servers(const pd_model *m, pd_server_view *out, uint32_t max) {
    servers_ctx c = {out, 0, max};
    uint64_t cur = 0;
    do cur = pd_htab_scan(&m->servers, cur, visit_server, &c); while (cur != 0 && c.n < max);
    return c.n;
}

void pd_model_reserve(pd_model *m, uint64_t users, uint64_t devices) {
    pd_ihtab_reserve(&m->users, users);
    pd_ihtab_reserve(&m->devices, devices);
}

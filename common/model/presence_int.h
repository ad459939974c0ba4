/* presence_int.h - internal structures of the presence model, shared by
 * presence.c (events, timers) and presence_view.c (views and queries).
 * Not part of the library's interface. */
#ifndef PD_PRESENCE_INT_H
#define PD_PRESENCE_INT_H
#include <stddef.h>
#include <string.h>
#include "base/htab.h"
#include "base/ihtab.h"
#include "base/slab.h"
#include "model/presence.h"
#include "base/timerheap.h"

enum { TK_GRACE = 1, TK_CUSTOM, TK_SERVER, TK_SYNC };

typedef struct pd_user pd_user;

typedef struct pd_custom {
    pd_timer expiry;
    pd_user *user;             /* owner, found when the expiry fires */
    int64_t expires_at;
    uint16_t text_n;
    uint8_t emoji_n;
    char buf[];                /* text then emoji */
} pd_custom;

typedef struct pd_device pd_device;

/* Users and devices are the bulk of a node's memory (a million devices:
 * issue 15): their records come from the model's slabs (base/slab.h) at
 * the size their ids need, and name the nodes they refer to by the index
 * of the interned id (pd__node_name) instead of a pointer.
 * CHECKLIST: a new field of pd_user or pd_device? Mind the size (a new
 * 8 bytes is 8 MB a million records); pd__user_size/pd__device_size give
 * the size a record is allocated and freed with. */
struct pd_user {
    uint32_t hnext;            /* the users table's chain (base/ihtab.h): first */
    uint32_t devs;             /* dev_slab index; singly linked through d->unext */
    union {                    /* never both: pd__user_custom, pd__user_expired_at */
        pd_custom *custom;     /* the custom status register's value, or NULL */
        int64_t expired_at;    /* UF_EXPIRED: the value expired then (no value now):
                                * a ver term until the register changes */
    } cx;
    pd_timer grace;            /* offline delay after the last device left (UF_GRACE),
                                * then the retention (see retention_arm) */
    int64_t seen;              /* last_seen: the highest time replicated for the user */
    int64_t seen_frozen;       /* `seen` when the user chose invisible (chosen register) */
    uint64_t seen_hlc;         /* HLC of the write of `seen` */
    int64_t notified_ts;       /* ts of the last notification */
    uint32_t ndev, nactive;
    uint64_t chosen_hlc;       /* version of the chosen-status register */
    uint64_t custom_hlc;       /* version of the custom-status register */
    uint64_t vmax;             /* the ver floor: largest version of a write to the
                                * user's devices or of a VER op */
    uint64_t back_ver;         /* UF_BACK: the ver floor the return takes when the
                                * delay would have ended (user_regained_device) */
    uint16_t vmax_by;          /* writer of vmax (pd__writer_of; the highest (vmax,
                                * writer) wins), whose partition carries it as a VER op */
    uint16_t seen_by;          /* writer of `seen` (a device's owner, or a SEEN op's) */
    uint16_t chosen_by;        /* writer node of each register; all pd__writer_of */
    uint16_t custom_by;        /* values (0: never written) */
    uint16_t custom_gen;       /* bumped on every custom status change (wraps; only
                                * compared with pub_custom within one operation) */
    uint16_t pub_custom;       /* custom_gen others last saw (0 = none) */
    uint8_t chosen;            /* pd_chosen */
    uint8_t pub_status;        /* pd_public others last saw */
    uint8_t flags;             /* UF_* */
    uint8_t id_n;
    char id[];
};

/* UF_BACK: a device of this node came back within the offline delay; the
 * grace timer runs on to raise the user's ver when the delay would have
 * ended (user_regained_device). UF_LEFT_NOW: the last device left in the
 * operation under way (cleared by pd__flush): a device added in the same
 * operation replaces it, and nobody saw the user leave. */
/* UF_FLOOR: another node's ver floor raised the user's ver in the
 * operation under way (cleared by pd__flush): announced even if no status
 * changed, so that a watcher keeping the largest ver ends above an
 * `offline` another node announced below that floor (schemas/
 * notifications.md, "ver"). */
enum { UF_GRACE = 1, UF_HELD_ACTIVE = 2, UF_DIRTY = 4, UF_NOTIFIED = 8, UF_BACK = 16,
       UF_LEFT_NOW = 32, UF_EXPIRED = 64, UF_FLOOR = 128 };

/* A user's custom status value and the time its last value expired share
 * their 8 bytes (UF_EXPIRED says which): a value that expired is gone, and
 * a new value forgets the expiry. */
static inline pd_custom *pd__user_custom(const pd_user *u) {
    return (u->flags & UF_EXPIRED) ? NULL : u->cx.custom;
}
static inline int64_t pd__user_expired_at(const pd_user *u) {
    return (u->flags & UF_EXPIRED) ? u->cx.expired_at : 0;
}
static inline void pd__user_set_custom(pd_user *u, pd_custom *c) {
    u->flags &= (uint8_t)~UF_EXPIRED;
    u->cx.custom = c;
}
/* Only while u has no custom value (cleared first). */
static inline void pd__user_set_expired_at(pd_user *u, int64_t at) {
    pd__user_set_custom(u, NULL);
    if (at == 0) return;
    u->flags |= UF_EXPIRED;
    u->cx.expired_at = at;
}

typedef struct pd_server pd_server;

/* A chunked sync under way (presence_sync.c): the parts received so far
 * marked their devices MARK_SYNC; the last part removes the rest. */
typedef struct pd_sync_run {
    pd_timer expiry;           /* PRESENCE_SYNC_PARTS_TIMEOUT_MS after the last part */
    pd_server *server;
    uint32_t parts, got;       /* parts 1..got applied */
    uint8_t id_n;
    char id[PD_ID_MAX];
} pd_sync_run;

struct pd_server {
    pd_hnode h;
    uint32_t ix;               /* in m->srv: what its devices hold */
    uint64_t hash;             /* pd_hash of id: part of every device's key hash */
    uint32_t devs;             /* dev_slab index; doubly linked through d->sprev/snext */
    pd_timer timeout;
    int64_t last_msg;          /* last event from this server */
    int64_t last_seq;
    uint32_t ndev;
    uint8_t has_seq, watched;  /* watched: sent a heartbeat */
    uint8_t restored;          /* our devices restored, silent since: see pd_model_restore_servers */
    uint8_t id_n;
    pd_sync_run *run;          /* a chunked sync under way, or NULL */
    char id[];
};

/* A device names its user and the devices next to it in its lists and its
 * hash chain by their slab indexes (4 bytes, not an 8-byte pointer; 0:
 * none): pd__dev_at, pd__dev_ix, pd__dev_user. */
struct pd_device {
    uint32_t hnext;            /* table keyed by (server, conn) (base/ihtab.h): first */
    uint32_t user;             /* user_slab index */
    uint32_t unext;            /* the user's devices */
    uint32_t sprev, snext;     /* the server's devices */
    uint32_t iprev, inext;     /* the idle queue (MARK_IDLEQ), this node's active devices */
    uint32_t touched_after;    /* this node's devices: the last activity, exact, in ms
                                * after last_active (pd__dev_touched) */
    uint32_t server;           /* its index in m->srv (pd__dev_server) */
    uint16_t node;             /* owner: index of its interned id (pd__dev_node) */
    uint16_t meta_n;           /* bytes of the encoded meta map (0: none) */
    uint64_t claim;            /* HLC of the owner's connect: newest claim wins */
    int64_t connected_at, last_active; /* replicated; last_active coarsened */
    uint8_t state;             /* pd_devstate */
    uint8_t mark;              /* MARK_* bits */
    uint8_t conn_n, label_n;
    char buf[];                /* conn, label, then meta */
};

/* MARK_SYNC and MARK_PARTITION are scratch bits of one operation;
 * MARK_IDLEQ says the device is in the idle queue (presence_idle.c). */
enum { MARK_SYNC = 1, MARK_PARTITION = 2, MARK_IDLEQ = 4 };

#define PD_MODEL_NODES_MAX 1024

struct pd_model {
    pd_model_cfg cfg;
    pd_ihtab users, devices;   /* records of user_slab, dev_slab */
    pd_htab servers;
    pd_server **srv;           /* servers by index (1..): devices name theirs so */
    uint32_t nsrv, srv_cap;
    pd_theap timers;
    uint32_t idle_head, idle_tail; /* the idle queue, by last activity (presence_idle.c) */
    uint32_t nidle;
    pd_change_fn on_change;
    pd_change_fn on_floor;     /* see pd_model_on_floor */
    pd_want_fn want_same;      /* see pd_model_on_same */
    pd_change_fn on_same;
    void *ud;
    const char *node;          /* this node's id, nodes[0] */
    char *nodes[PD_MODEL_NODES_MAX]; /* interned node ids (see pd__intern) */
    pd_slab user_slab, dev_slab;
    uint32_t nnodes;
    uint64_t hlc;              /* hybrid logical clock: ms << 16 | counter */
    uint64_t now;              /* time of the operation under way */
    /* Not 0: the own device being added is restored (pd_model_apply_own_op),
     * and this is its recorded last activity: its last_active and its
     * user's last_seen, which the peers hold, not the restart's time. */
    int64_t restore_active;
    uint64_t write_at;         /* not 0: the version of the REMOVEs (and STATEs) being
                                * made (a write elsewhere decided them, or an own op
                                * replayed: the same ver everywhere) */
    pd_op_fn on_op;
    void *op_ud;
    uint32_t ops_muted;        /* > 0: ops are not emitted (pd__ops_mute) */
    pd_user **dirty;
    uint32_t ndirty, dirty_cap;
    uint64_t ndevices;
    uint64_t live_users;       /* users with at least one live device */
    uint64_t changes;
    uint64_t by_status[PD_PUB_INVISIBLE + 1]; /* users by pub_status (never removed) */
    uint64_t refused_devices, refused_users; /* presence_limits.c */
    pd_refusal *refusals;      /* the last pd_model_apply's refused sync entries */
    uint32_t nrefusals, refusals_cap;
    uint64_t forgotten_users, forgotten_servers; /* PRESENCE_USER_RETENTION_MS */
};

/* Records by slab index (0: NULL) and back. */
static inline pd_device *pd__dev_at(const pd_model *m, uint32_t i) {
    return pd_slab_ptr(&m->dev_slab, i);
}
static inline uint32_t pd__dev_ix(const pd_model *m, const pd_device *d) {
    return pd_slab_idx(&m->dev_slab, d);
}
static inline pd_user *pd__dev_user(const pd_model *m, const pd_device *d) {
    return pd_slab_ptr(&m->user_slab, d->user);
}
static inline uint32_t pd__user_ix(const pd_model *m, const pd_user *u) {
    return pd_slab_idx(&m->user_slab, u);
}
static inline pd_server *pd__dev_server(const pd_model *m, const pd_device *d) {
    return m->srv[d->server];
}

/* Interned node ids: each carries its index in m->nodes in the two bytes
 * before it, so that records can hold the index and code the pointer. */
static inline uint16_t pd__node_index(const char *interned) {
    uint16_t i;
    memcpy(&i, interned - 2, sizeof i);
    return i;
}
static inline const char *pd__dev_node(const pd_model *m, const pd_device *d) {
    return m->nodes[d->node];
}
/* A user's register writer: 0 for none (NULL), else the index + 1. */
static inline uint16_t pd__writer_of(const char *interned) {
    return interned ? (uint16_t)(pd__node_index(interned) + 1u) : 0;
}
static inline const char *pd__writer_name(const pd_model *m, uint16_t w) {
    return w ? m->nodes[w - 1u] : NULL;
}
static inline size_t pd__user_size(const pd_user *u) {
    return offsetof(pd_user, id) + u->id_n;
}
static inline size_t pd__device_size(const pd_device *d) {
    return offsetof(pd_device, buf) + d->conn_n + d->label_n + d->meta_n;
}
/* A device's last activity: last_active moves to it in steps of the
 * activity resolution, so 32 bits of offset are plenty; a last_active
 * raised past it (an own STATE op restored) takes it along. */
static inline int64_t pd__dev_touched(const pd_device *d) {
    return d->last_active + (int64_t)d->touched_after;
}
static inline void pd__dev_set_touched(pd_device *d, int64_t t) {
    int64_t off = t - d->last_active;
    d->touched_after = off <= 0 ? 0 : off >= (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)off;
}
/* Raises last_active, keeping the last activity where it was. */
static inline void pd__dev_raise_active(pd_device *d, int64_t la) {
    if (la <= d->last_active) return;
    int64_t t = pd__dev_touched(d);
    d->last_active = la;
    pd__dev_set_touched(d, t);
}
static inline pd_str pd__dev_meta(const pd_device *d) {
    return (pd_str){d->meta_n ? d->buf + d->conn_n + d->label_n : NULL, d->meta_n};
}

pd_user *pd__user_find(const pd_model *m, pd_str id);
pd_user *pd__user_get(pd_model *m, pd_str id);
pd_server *pd__server_get(pd_model *m, pd_str id);
pd_device *pd__device_find(const pd_model *m, const pd_server *s, pd_str conn);
/* owner: interned node id; claim: its HLC; local devices get an idle timer. */
pd_status pd__device_add(pd_model *m, pd_server *s, pd_str conn, pd_str user, pd_str label,
                         pd_str meta, const char *owner, uint64_t claim, uint64_t now);
/* When a user's last device leaves, the presence it keeps for the offline
 * delay is online if a device was active at that moment. Callers removing
 * several devices in one operation remove the idle ones first, so that this
 * is "if any of them was active", whatever their list order; and peers,
 * which replay the REMOVE ops one by one, pass through no other status. */
/* seen_at: the user's last_seen candidate that comes with the removal (a
 * REMOVE op's time; 0: none). A device of this node is removed at now,
 * which the REMOVE op it emits carries. */
void pd__device_remove(pd_model *m, pd_device *d, uint64_t now, int64_t seen_at);
/* Raises u's last_seen register to (at, by) if that is newer (by: an
 * interned node id). A user in the offline delay then keeps it until
 * last_seen + the delay at least, when its offline's ver is numbered. */
bool pd__seen(pd_model *m, pd_user *u, int64_t at, const char *by, uint64_t hlc);
void pd__device_state(pd_model *m, pd_device *d, pd_devstate st, int64_t last_active);
/* This node's devices: in the idle queue while active. Cannot fail (the
 * status is kept for the callers that pass it on). */
pd_status pd__device_set_active(pd_model *m, pd_device *d, uint64_t now);
void pd__device_set_idle(pd_model *m, pd_device *d);
/* presence_idle.c: the idle queue. pd__idle_arm puts d (queued or not)
 * where its last activity belongs; pd__idle_next is when the head goes
 * idle (UINT64_MAX: none); pd__idle_pop_due takes the head out if that
 * is at or before now. */
void pd__idle_arm(pd_model *m, pd_device *d);
void pd__idle_disarm(pd_model *m, pd_device *d);
static inline bool pd__idle_armed(const pd_device *d) { return (d->mark & MARK_IDLEQ) != 0; }
uint64_t pd__idle_next(const pd_model *m);
pd_device *pd__idle_pop_due(pd_model *m, uint64_t now);
void pd__mark_dirty(pd_model *m, pd_user *u);
void pd__flush(pd_model *m, uint64_t now);
void pd__custom_clear(pd_model *m, pd_user *u);
pd_status pd__custom_set(pd_model *m, pd_user *u, pd_str text, pd_str emoji, int64_t expires_at);
/* frozen: the last_seen an invisible user shows (0: freeze the current one). */
void pd__chosen_set(pd_model *m, pd_user *u, pd_chosen c, int64_t frozen);
/* Ops made between pd__ops_mute and pd__ops_unmute (they nest) are not
 * emitted: the caller sends what they add up to itself (claim_local), or
 * they restore what the peers were told in an earlier life
 * (pd_model_apply_own_op). */
void pd__ops_mute(pd_model *m);
void pd__ops_unmute(pd_model *m);
void pd__emit(pd_model *m, const pd_op *op);
void pd__emit_device(pd_model *m, pd_op_kind kind, const pd_device *d);
/* REMOVE of this node's device d, removed at `at`. */
void pd__emit_remove(pd_model *m, const pd_device *d, int64_t at);
uint64_t pd__hlc_next(pd_model *m, uint64_t now);
void pd__hlc_observe(pd_model *m, uint64_t remote, uint64_t now);
/* True if (a_hlc, a_node) is a newer version than (b_hlc, b_node). */
bool pd__newer(uint64_t a_hlc, const char *a_node, uint64_t b_hlc, const char *b_node);
void pd__drop_server_if_unused(pd_model *m, pd_server *s);
/* Emits u's chosen and custom registers as ops: all of them, or (writer
 * not NULL) only those whose winning writer is writer (interned). */
void pd__register_ops(const pd_model *m, const pd_user *u, const char *writer, pd_op_fn fn,
                      void *ud);
/* The interned copy of a node id (NULL if out of memory or too many). */
const char *pd__intern(pd_model *m, pd_str node);
const char *pd__intern_find(const pd_model *m, pd_str node);
/* presence_limits.c: checks of the local entry point, made before an
 * event changes anything; too_large (counted, err filled) or PD_OK. */
pd_status pd__limit_connect(pd_model *m, const pd_server *s, const pd_event *ev, pd_err *err);
/* A sync entry would give its user one more device than
 * max_devices_per_user: too_large (counted, err filled) or PD_OK. */
pd_status pd__limit_sync_entry(pd_model *m, const pd_user *u, pd_str user, pd_err *err);
pd_public pd__user_status(const pd_user *u, bool self);
/* The user's ver (schemas/notifications.md): the one place it is computed.
 * CHECKLIST: a new replicated write to a user's public state raises one of
 * the terms here (its HLC), or adds its own; a change the state no longer
 * shows once it is over raises the floor (pd__ver_raise), which snapshots
 * and state transfers carry as VER ops. */
uint64_t pd__user_ver(const pd_model *m, const pd_user *u);
/* A write of `by` (interned) with version at: raises u's floor if
 * (at, by) is newer; true if it did. pd__ver_floor: the same for another
 * node's VER op, which may also be announced (UF_FLOOR). */
bool pd__ver_raise(const pd_model *m, pd_user *u, uint64_t at, const char *by);
bool pd__ver_floor(const pd_model *m, pd_user *u, uint64_t at, const char *by);
/* The custom status expired at expires_at (cleared by the caller): a ver
 * every node holding that register value gives it. */
void pd__expiry_ver(pd_model *m, pd_user *u, int64_t expires_at);
/* presence_sync.c: the sync event, whole or in parts, and server moves. */
pd_status pd__ev_sync(pd_model *m, pd_server *s, const pd_event *ev, uint64_t now, pd_err *err);
void pd__sync_run_free(pd_model *m, pd_server *s);
void pd__sync_run_expire(pd_model *m, pd_sync_run *run);
/* Applies a SYNCED op of origin (see presence_sync.c). */
void pd__apply_synced(pd_model *m, const char *origin, const pd_op *op, uint64_t now);
/* presence.c helpers used by presence_sync.c. */
pd_device *pd__local_add(pd_model *m, pd_server *s, pd_str conn, pd_str user, pd_str label,
                         pd_str meta, uint64_t now, pd_status *st);
pd_device *pd__claim_local(pd_model *m, pd_device *d, uint64_t now, pd_status *st);
void pd__renew_claim(pd_model *m, pd_device *d, uint64_t now);
void pd__user_view(const pd_model *m, const pd_user *u, bool self, pd_view *out);

#endif

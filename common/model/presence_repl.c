/* presence_repl.c - the model's side of replication: node ids, the hybrid
 * logical clock, ops out (this node's changes) and in (a peer's), and the
 * per-origin partitions used by state transfer.
 *
 * A device belongs to the partition of its owner, the node that received
 * its connect; only the owner changes it, so applying a peer's ops in the
 * peer's order reproduces its partition exactly. Two owners can claim one
 * connection when a socket server moves; the newest claim (HLC, then node
 * id) wins everywhere, and the loser drops its entry when it learns. The
 * chosen and custom status of a user are last-writer-wins registers with
 * the version (HLC, writer), which merge commutatively, associatively and
 * idempotently. */
#include <string.h>
#include "base/alloc.h"
#include "model/presence_int.h"

/* ---- node ids and the clock ------------------------------------------------ */

const char *pd__intern_find(const pd_model *m, pd_str node) {
    for (uint32_t i = 0; i < m->nnodes; i++) {
        if (strlen(m->nodes[i]) == node.n && memcmp(m->nodes[i], node.p, node.n) == 0)
            return m->nodes[i];
    }
    return NULL;
}

/* The copy starts with its index (pd__node_index), then the NUL-terminated
 * id; the pointer handed out is to the id. */
const char *pd__intern(pd_model *m, pd_str node) {
    const char *found = pd__intern_find(m, node);
    if (found || m->nnodes == PD_MODEL_NODES_MAX) return found;
    char *c = pd_malloc(node.n + 3u);
    if (c == NULL) return NULL;
    uint16_t idx = (uint16_t)m->nnodes;
    memcpy(c, &idx, sizeof idx);
    memcpy(c + 2, node.p, node.n);
    c[2 + node.n] = '\0';
    m->nodes[m->nnodes++] = c + 2;
    return c + 2;
}

/* Saturating: a clock at the top stays there rather than wrap to 0 (the
 * skew bound keeps it far from the top in the first place). */
uint64_t pd__hlc_next(pd_model *m, uint64_t now) {
    uint64_t v = now >= (UINT64_MAX >> 16) ? UINT64_MAX & ~(uint64_t)0xffff : now << 16;
    if (v <= m->hlc) v = m->hlc == UINT64_MAX ? UINT64_MAX : m->hlc + 1;
    m->hlc = v;
    return v;
}

bool pd_hlc_ahead(uint64_t hlc, uint64_t now, uint64_t skew_ms) {
    uint64_t ms = hlc >> 16;
    return ms > now && ms - now > skew_ms;
}

void pd__hlc_observe(pd_model *m, uint64_t remote, uint64_t now) {
    uint64_t skew = m->cfg.max_clock_skew_ms ? m->cfg.max_clock_skew_ms
                                             : PD_MAX_CLOCK_SKEW_DEFAULT_MS;
    if (pd_hlc_ahead(remote, now, skew)) return;
    if (remote > m->hlc) m->hlc = remote;
}

void pd_model_hlc_observe(pd_model *m, uint64_t hlc, uint64_t now) {
    pd__hlc_observe(m, hlc, now);
}
uint64_t pd_model_hlc(const pd_model *m) { return m->hlc; }

bool pd__newer(uint64_t a_hlc, const char *a_node, uint64_t b_hlc, const char *b_node) {
    if (a_hlc != b_hlc) return a_hlc > b_hlc;
    if (b_node == NULL) return a_node != NULL;
    if (a_node == NULL) return false;
    return strcmp(a_node, b_node) > 0;
}

/* ---- ops out ---------------------------------------------------------------- */

void pd_model_set_op_hook(pd_model *m, pd_op_fn fn, void *ud) {
    m->on_op = fn;
    m->op_ud = ud;
}

void pd__ops_mute(pd_model *m) { m->ops_muted++; }
void pd__ops_unmute(pd_model *m) { m->ops_muted--; }

void pd__emit(pd_model *m, const pd_op *op) {
    if (m->on_op && m->ops_muted == 0) m->on_op(m->op_ud, op);
}

static void device_op(const pd_model *m, const pd_device *d, pd_op_kind kind, pd_op *op) {
    const pd_user *u = pd__dev_user(m, d);
    memset(op, 0, sizeof *op);
    op->kind = kind;
    const pd_server *s = pd__dev_server(m, d);
    op->server = (pd_str){s->id, s->id_n};
    op->conn = (pd_str){d->buf, d->conn_n};
    op->user = (pd_str){u->id, u->id_n};
    op->label = (pd_str){d->buf + d->conn_n, d->label_n};
    op->state = (pd_devstate)d->state;
    op->connected_at = d->connected_at;
    op->last_active = d->last_active;
    op->hlc = d->claim;
    if (kind == PD_OP_ADD) op->meta = pd__dev_meta(d);
}

/* The version of a write of this node to one of its devices: ADD's is its
 * claim, REMOVE's and STATE's a new HLC (the op's `ver`), or, for a
 * REMOVE another write decided or an own op replayed, that write's
 * (write_at). It raises the user's ver, unless the peers are not told of
 * it (muted: a step claim_local sums up in one ADD). A REMOVE another
 * write decided carries this node's own floor for the user if higher:
 * the peers, which dropped the entry first, ignored its last STATEs. */
static uint64_t device_write_ver(pd_model *m, pd_op_kind kind, const pd_device *d) {
    uint64_t v = kind == PD_OP_ADD ? d->claim
               : m->write_at ? m->write_at : m->ops_muted ? 0 : pd__hlc_next(m, m->now);
    pd_user *u = pd__dev_user(m, d);
    if (kind == PD_OP_REMOVE && m->write_at && u->vmax > v &&
        u->vmax_by == pd__writer_of(m->node))
        v = u->vmax;
    if (v) pd__ver_raise(m, u, v, pd__dev_node(m, d));
    return v;
}

void pd__emit_device(pd_model *m, pd_op_kind kind, const pd_device *d) {
    pd_op op;
    if (pd__dev_node(m, d) != m->node) return;
    uint64_t v = device_write_ver(m, kind, d);
    if (m->on_op == NULL || m->ops_muted) return;
    device_op(m, d, kind, &op);
    if (kind != PD_OP_ADD) op.ver = v;
    m->on_op(m->op_ud, &op);
}

void pd__emit_remove(pd_model *m, const pd_device *d, int64_t at) {
    pd_op op;
    if (pd__dev_node(m, d) != m->node) return;
    uint64_t v = device_write_ver(m, PD_OP_REMOVE, d);
    if (m->on_op == NULL || m->ops_muted) return;
    device_op(m, d, PD_OP_REMOVE, &op);
    op.at = at;
    op.ver = v;
    m->on_op(m->op_ud, &op);
}

/* ---- ops in ----------------------------------------------------------------- */

/* An ADD whose entry was taken by a newer claim before it came: on the
 * nodes that applied it first, its user got the claim's version and
 * connected_at as last_seen, and kept them when displaced. So does this
 * node, creating the user if it has to (these registers only grow, so
 * the order of arrival does not matter). */
static pd_status claimed_before(pd_model *m, const char *origin, const pd_op *op) {
    pd_user *u = pd__user_get(m, op->user);
    if (u == NULL) return PD_ENOMEM;
    pd__ver_raise(m, u, op->hlc, origin);
    pd__seen(m, u, op->connected_at, origin, op->hlc);
    pd__mark_dirty(m, u);
    return PD_OK;
}

/* *out: the entry of origin with the op's claim afterwards (what owned()
 * finds), or NULL; saves the restore a second lookup per device. */
static pd_status apply_add(pd_model *m, const char *origin, const pd_op *op, uint64_t now,
                           pd_device **out) {
    *out = NULL;
    pd_server *s = pd__server_get(m, op->server);
    if (s == NULL) return PD_ENOMEM;
    pd_device *d = pd__device_find(m, s, op->conn);
    if (d && pd__dev_node(m, d) == origin && d->claim == op->hlc && pd_str_eq(op->user,
            (pd_str){pd__dev_user(m, d)->id, pd__dev_user(m, d)->id_n})) {
        pd__device_state(m, d, op->state, op->last_active); /* a repeat */
        d->mark &= (uint8_t)~MARK_PARTITION;
        *out = d;
        return PD_OK;
    }
    if (d && !pd__newer(op->hlc, origin, d->claim, pd__dev_node(m, d))) {
        if (pd__dev_node(m, d) == origin && d->claim == op->hlc) *out = d;
        pd__drop_server_if_unused(m, s);
        /* An older claim: the current owner keeps the entry. Its user
         * still takes the claim's version and time, as on the nodes that
         * applied this ADD before the newer claim displaced it. */
        return claimed_before(m, origin, op);
    }
    if (d) {
        /* Another node's newer claim (a server moved), or the owner reused
         * the conn. The old entry's user takes the version of its owner's
         * REMOVE (removed_before), which, if the entry was ours, we send
         * now at the claim that displaced it: nodes may see different
         * claims of the winner (a renewed one), but one REMOVE. */
        m->write_at = pd__dev_node(m, d) != origin ? op->hlc : 0;
        pd__device_remove(m, d, now, 0);
        m->write_at = 0;
    }
    pd_status st = pd__device_add(m, s, op->conn, op->user, op->label, op->meta, origin,
                                  op->hlc, now);
    if (st != PD_OK) {
        pd__drop_server_if_unused(m, s);
        return st;
    }
    d = pd__dev_at(m, s->devs);
    pd_user *u = pd__dev_user(m, d);
    pd__ver_raise(m, u, op->hlc, origin);
    d->connected_at = op->connected_at;
    pd__seen(m, u, op->connected_at, origin, op->hlc);
    pd__device_state(m, d, op->state, op->last_active);
    d->mark &= (uint8_t)~MARK_PARTITION;
    *out = d;
    return PD_OK;
}

static pd_device *owned(const pd_model *m, const char *origin, const pd_op *op) {
    pd_str sid = op->server;
    for (pd_hnode *e = pd_htab_bucket(&m->servers, pd_hash(sid.p, sid.n)); e; e = e->next) {
        pd_server *s = (pd_server *)e;
        if (s->id_n != sid.n || memcmp(s->id, sid.p, sid.n) != 0) continue;
        /* The claim names the entry: a REMOVE of an old claim must not
         * take the newer entry of the same connection. */
        pd_device *d = pd__device_find(m, s, op->conn);
        return d && pd__dev_node(m, d) == origin && d->claim == op->hlc ? d : NULL;
    }
    return NULL;
}

/* A write of this node's that it did not hold: a value of an earlier life
 * (lost with it: killed before its snapshot and the stream had it) that a
 * peer passed on (pass_on_registers in sync/repl.c) or a transfer brought
 * back. It leaves again as an op of this node's, so that it is in this
 * node's deltas and in every later dump of its partition: a node that
 * missed the delta passing it on (cut off from the passer then) repairs
 * that gap by a transfer of the passer's partition, which carries the
 * passer's registers, not this write; it gets it from ours instead. Not
 * while restoring (muted): the restore's dump of the partition sends it. */
static void own_write_back(pd_model *m, const char *writer, const pd_op *op) {
    if (writer == m->node) pd__emit(m, op);
}

static pd_status apply_register(pd_model *m, const pd_op *op, uint64_t now) {
    const char *writer = pd__intern(m, op->writer);
    if (writer == NULL) return PD_ENOMEM;
    pd_user *u = pd__user_get(m, op->user);
    if (u == NULL) return PD_ENOMEM;
    if (op->kind == PD_OP_SEEN || op->kind == PD_OP_VER) {
        bool taken = op->kind == PD_OP_SEEN ? pd__seen(m, u, op->at, writer, op->hlc)
                                            : pd__ver_floor(m, u, op->hlc, writer);
        pd__mark_dirty(m, u); /* its retention may move */
        if (taken) own_write_back(m, writer, op);
        return PD_OK;
    }
    if (op->kind == PD_OP_CHOSEN) {
        if (!pd__newer(op->hlc, writer, u->chosen_hlc, pd__writer_name(m, u->chosen_by)))
            return PD_OK;
        pd__chosen_set(m, u, op->chosen, op->at);
        u->chosen_hlc = op->hlc;
        u->chosen_by = pd__writer_of(writer);
        own_write_back(m, writer, op);
        return PD_OK;
    }
    if (!pd__newer(op->hlc, writer, u->custom_hlc, pd__writer_name(m, u->custom_by)))
        return PD_OK;
    /* An expiry already past clears it at once, as the writer's timer did. */
    bool expired = op->expires_at != 0 && (uint64_t)op->expires_at <= now;
    pd_status st = pd__custom_set(m, u, expired ? (pd_str){NULL, 0} : op->text, op->emoji,
                                  op->expires_at);
    if (st != PD_OK) return st;
    u->custom_hlc = op->hlc;
    u->custom_by = pd__writer_of(writer);
    if (expired) pd__expiry_ver(m, u, op->expires_at);
    own_write_back(m, writer, op); /* an expired one clears on arrival there too */
    return PD_OK;
}

/* A REMOVE of a device this node dropped already (a server's sync on
 * another node, a newer claim): its time and version still count for the
 * user, as on the nodes that removed the device by this op. */
static void removed_before(pd_model *m, const char *origin, const pd_op *op) {
    /* Created if unknown: the ADD may have been refused here (see
     * claimed_before), while the nodes that applied it keep the user. */
    pd_user *u = op->user.n ? pd__user_get(m, op->user) : NULL;
    if (u == NULL) return;
    if (op->ver) pd__ver_raise(m, u, op->ver, origin);
    pd__seen(m, u, op->at, origin, op->hlc);
    pd__mark_dirty(m, u);
}

pd_status pd_model_apply_op(pd_model *m, pd_str origin_id, const pd_op *op, uint64_t now) {
    const char *origin = pd__intern(m, origin_id);
    pd_status st = PD_OK;
    pd_device *d;
    if (origin == NULL) return PD_ENOMEM;
    m->now = now;
    pd__hlc_observe(m, op->hlc, now);
    pd__hlc_observe(m, op->ver, now);
    switch (op->kind) {
    case PD_OP_ADD:
        st = origin == m->node ? PD_OK : apply_add(m, origin, op, now, &d);
        break;
    case PD_OP_REMOVE:
        if (origin != m->node && (d = owned(m, origin, op)) != NULL) {
            pd_server *s = pd__dev_server(m, d);
            if (op->ver) pd__ver_raise(m, pd__dev_user(m, d), op->ver, origin);
            pd__device_remove(m, d, now, op->at);
            pd__drop_server_if_unused(m, s);
        } else if (origin != m->node) {
            removed_before(m, origin, op);
        }
        break;
    case PD_OP_STATE:
        if (origin != m->node && (d = owned(m, origin, op)) != NULL) {
            if (op->ver) pd__ver_raise(m, pd__dev_user(m, d), op->ver, origin);
            pd__device_state(m, d, op->state, op->last_active);
        }
        break;
    case PD_OP_SYNCED:
        if (origin != m->node) pd__apply_synced(m, origin, op, now);
        break;
    default:
        st = apply_register(m, op, now);
        break;
    }
    pd__flush(m, now);
    return st;
}

/* ---- partitions ------------------------------------------------------------- */

typedef struct {
    pd_model *m;
    const char *owner;
    const char *also;           /* dumps: the registers of this writer too */
    uint64_t now;
    uint64_t count;
    uint64_t digest;            /* pd_model_partition_digest */
    const pd_model *cm;
    pd_op_fn fn;
    void *ud;
} part_ctx;

static void mark_owned(void *ud, void *e) {
    part_ctx *c = ud;
    pd_device *d = (pd_device *)e;
    if (pd__dev_node(c->m, d) == c->owner) d->mark |= MARK_PARTITION;
}

static void scan_devices(const pd_model *m, pd_ihtab_visit fn, void *ud) {
    uint64_t cur = 0;
    do cur = pd_ihtab_scan(&m->devices, cur, fn, ud); while (cur != 0);
}

void pd_model_partition_begin(pd_model *m, pd_str origin) {
    part_ctx c = {.m = m, .owner = pd__intern_find(m, origin)};
    if (c.owner && c.owner != m->node) scan_devices(m, mark_owned, &c);
}

/* Collects the devices to remove first: removing while scanning the table
 * would unlink entries under the scan. */
typedef struct {
    pd_device **v;
    size_t n, cap;
    const pd_model *m;
    const char *owner;
    uint8_t need_mark;
} dev_list;

static void collect(void *ud, void *e) {
    dev_list *l = ud;
    pd_device *d = (pd_device *)e;
    if (pd__dev_node(l->m, d) != l->owner || (l->need_mark && !(d->mark & MARK_PARTITION)))
        return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        pd_device **v = pd_realloc(l->v, cap * sizeof *v);
        if (v == NULL) return;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = d;
}

/* A user whose last device left because its owner went down: nobody sent
 * its REMOVE, so this node writes the time as a SEEN register. Every node
 * that drops the owner writes one; the latest wins everywhere. */
static void decide_seen(pd_model *m, pd_user *u, uint64_t now) {
    uint64_t hlc = pd__hlc_next(m, now);
    pd__seen(m, u, (int64_t)now, m->node, hlc);
    if (pd__writer_name(m, u->seen_by) != m->node || u->seen != (int64_t)now) return;
    pd_op op = {.kind = PD_OP_SEEN, .user = {u->id, u->id_n}, .at = (int64_t)now, .hlc = hlc,
                .writer = pd_str_c(m->node)};
    pd__emit(m, &op);
}

/* A user who lost devices because their owner went down: no write names
 * that change, so this node writes one, a VER op at its own clock (once
 * per user and drop). Every node that drops the owner writes one, the
 * owner too gets them when it is back, and the highest wins everywhere. */
static void decide_ver(pd_model *m, pd_user *u, uint64_t h) {
    if (!pd__newer(h, m->node, u->vmax, pd__writer_name(m, u->vmax_by))) return;
    pd__ver_raise(m, u, h, m->node);
    pd_op op = {.kind = PD_OP_VER, .user = {u->id, u->id_n}, .hlc = h,
                .writer = pd_str_c(m->node)};
    pd__emit(m, &op);
}

/* decide: the owner is down (see decide_seen and decide_ver); otherwise a
 * state transfer said the devices are gone: their REMOVE times came with
 * it, and the versions of those removals with the VER ops of the owner's
 * partition (or a higher one from elsewhere), so none is made up here. */
static void remove_owned(pd_model *m, const char *owner, bool marked_only, bool decide,
                         uint64_t now) {
    dev_list l = {.m = m, .owner = owner, .need_mark = marked_only};
    if (owner == NULL || owner == m->node) return;
    scan_devices(m, collect, &l);
    m->now = now;
    uint64_t h = decide && l.n ? pd__hlc_next(m, now) : 0;
    for (int pass = 0; pass < 2; pass++) { /* idle ones first: see pd__device_remove */
        for (size_t i = 0; i < l.n; i++) {
            if (l.v[i] == NULL || (!pass && l.v[i]->state != PD_DEV_IDLE)) continue;
            pd_server *s = pd__dev_server(m, l.v[i]);
            pd_user *u = pd__dev_user(m, l.v[i]);
            if (decide) decide_ver(m, u, h);
            pd__device_remove(m, l.v[i], now, 0);
            if (decide && u->ndev == 0) decide_seen(m, u, now);
            pd__drop_server_if_unused(m, s);
            l.v[i] = NULL;
        }
    }
    pd_free(l.v);
    pd__flush(m, now);
}

void pd_model_partition_end(pd_model *m, pd_str origin, uint64_t now) {
    remove_owned(m, pd__intern_find(m, origin), true, false, now);
}

void pd_model_drop_owner(pd_model *m, pd_str owner, uint64_t now) {
    remove_owned(m, pd__intern_find(m, owner), false, true, now);
}

static void dump_device(void *ud, void *e) {
    part_ctx *c = ud;
    const pd_device *d = (const pd_device *)e;
    pd_op op;
    if (pd__dev_node(c->cm, d) != c->owner) return;
    device_op(c->cm, d, PD_OP_ADD, &op);
    c->fn(c->ud, &op);
}

/* The floor is a device's claim, which its ADD carries anyway. */
static bool ver_implied(const pd_model *m, const pd_user *u) {
    for (const pd_device *d = pd__dev_at(m, u->devs); d; d = pd__dev_at(m, d->unext)) {
        if (d->claim == u->vmax && pd__writer_of(pd__dev_node(m, d)) == u->vmax_by) return true;
    }
    return false;
}

void pd__register_ops(const pd_model *m, const pd_user *u, const char *writer, pd_op_fn fn,
                      void *ud) {
    pd_op op;
    const char *chosen_by = pd__writer_name(m, u->chosen_by);
    const char *seen_by = pd__writer_name(m, u->seen_by);
    const char *custom_by = pd__writer_name(m, u->custom_by);
    if (chosen_by && (writer == NULL || chosen_by == writer)) {
        memset(&op, 0, sizeof op);
        op.kind = PD_OP_CHOSEN;
        op.user = (pd_str){u->id, u->id_n};
        op.chosen = (pd_chosen)u->chosen;
        op.hlc = u->chosen_hlc;
        op.writer = pd_str_c(chosen_by);
        if (u->chosen == PD_CHOSEN_INVISIBLE) op.at = u->seen_frozen;
        fn(ud, &op);
    }
    if (seen_by && (writer == NULL || seen_by == writer)) {
        memset(&op, 0, sizeof op);
        op.kind = PD_OP_SEEN;
        op.user = (pd_str){u->id, u->id_n};
        op.at = u->seen;
        op.hlc = u->seen_hlc;
        op.writer = pd_str_c(seen_by);
        fn(ud, &op);
    }
    if (custom_by && (writer == NULL || custom_by == writer)) {
        memset(&op, 0, sizeof op);
        op.kind = PD_OP_CUSTOM;
        op.user = (pd_str){u->id, u->id_n};
        const pd_custom *c = pd__user_custom(u);
        if (c) {
            op.text = (pd_str){c->buf, c->text_n};
            op.emoji = (pd_str){c->buf + c->text_n, c->emoji_n};
            op.expires_at = c->expires_at;
        } else {
            op.expires_at = pd__user_expired_at(u); /* "" that expired then: cleared, at that ver */
        }
        op.hlc = u->custom_hlc;
        op.writer = pd_str_c(custom_by);
        fn(ud, &op);
    }
    const char *vmax_by = pd__writer_name(m, u->vmax_by);
    if (vmax_by && (writer == NULL || vmax_by == writer) && !ver_implied(m, u)) {
        memset(&op, 0, sizeof op);
        op.kind = PD_OP_VER;
        op.user = (pd_str){u->id, u->id_n};
        op.hlc = u->vmax;
        op.writer = pd_str_c(vmax_by);
        fn(ud, &op);
    }
}

static void dump_registers(void *ud, void *e) {
    part_ctx *c = ud;
    pd__register_ops(c->cm, (const pd_user *)e, c->owner, c->fn, c->ud);
    if (c->also) pd__register_ops(c->cm, (const pd_user *)e, c->also, c->fn, c->ud);
}

void pd_model_partition_dump(const pd_model *m, pd_str origin, pd_op_fn fn, void *ud) {
    part_ctx c = {.cm = m, .owner = pd__intern_find(m, origin), .fn = fn, .ud = ud};
    uint64_t cur = 0;
    if (c.owner == NULL) return;
    scan_devices(m, dump_device, &c);
    do cur = pd_ihtab_scan(&m->users, cur, dump_registers, &c); while (cur != 0);
}


/* The registers a writer wrote, for pd_model_own_registers_step and
 * pd_model_registers_dump_step: with skip_implied, a last_seen that one
 * of the writer's devices implies (a node that holds the device took it
 * from its ADD or STATE) is left out. */
typedef struct {
    const pd_model *m;
    const char *writer;
    bool skip_implied;
    const pd_user *u;
    pd_op_fn fn;
    void *ud;
} writer_regs_ctx;

static bool seen_implied(const writer_regs_ctx *c, const pd_op *op) {
    for (const pd_device *d = pd__dev_at(c->m, c->u->devs); d; d = pd__dev_at(c->m, d->unext)) {
        if (pd__dev_node(c->m, d) == c->writer && d->claim == op->hlc &&
            (d->last_active == op->at || d->connected_at == op->at))
            return true;
    }
    return false;
}

static void writer_register(void *ud, const pd_op *op) {
    writer_regs_ctx *c = ud;
    if (c->skip_implied && op->kind == PD_OP_SEEN && seen_implied(c, op)) return;
    c->fn(c->ud, op);
}

static void writer_registers(void *ud, void *e) {
    writer_regs_ctx *c = ud;
    c->u = (const pd_user *)e;
    pd__register_ops(c->m, c->u, c->writer, writer_register, c);
}

static bool writer_registers_step(writer_regs_ctx *c, uint64_t *at, uint32_t buckets) {
    for (uint32_t k = 0; k < buckets; k++) {
        *at = pd_ihtab_scan(&c->m->users, *at, writer_registers, c);
        if (*at == 0) return true;
    }
    return false;
}

bool pd_model_own_registers_step(const pd_model *m, uint64_t *at, uint32_t buckets,
                                 pd_op_fn fn, void *ud) {
    writer_regs_ctx c = {m, m->node, true, NULL, fn, ud};
    return writer_registers_step(&c, at, buckets);
}

bool pd_model_registers_dump_step(const pd_model *m, pd_str writer, bool skip_implied,
                                  uint64_t *at, uint32_t buckets, pd_op_fn fn, void *ud) {
    writer_regs_ctx c = {m, pd__intern_find(m, writer), skip_implied, NULL, fn, ud};
    if (c.writer == NULL || c.writer == m->node) return true;
    return writer_registers_step(&c, at, buckets);
}

bool pd_model_partition_dump_step(const pd_model *m, pd_str origin, pd_str asker,
                                  pd_dump_cursor *cur, uint32_t buckets, pd_op_fn fn, void *ud) {
    part_ctx c = {.cm = m, .owner = pd__intern_find(m, origin), .fn = fn, .ud = ud};
    if (c.owner == NULL) return true;
    c.also = asker.n ? pd__intern_find(m, asker) : NULL;
    if (c.also == c.owner || c.also == m->node) c.also = NULL;
    for (uint32_t k = 0; k < buckets && cur->phase < 2; k++) {
        const pd_ihtab *t = cur->phase == 0 ? &m->devices : &m->users;
        cur->at = pd_ihtab_scan(t, cur->at, cur->phase == 0 ? dump_device : dump_registers, &c);
        if (cur->at == 0) cur->phase++;
    }
    return cur->phase >= 2;
}

static void count_owned(void *ud, void *e) {
    part_ctx *c = ud;
    if (pd__dev_node(c->cm, (pd_device *)e) == c->owner) c->count++;
}

uint64_t pd_model_owner_devices(const pd_model *m, pd_str owner) {
    part_ctx c = {.cm = m, .owner = pd__intern_find(m, owner)};
    if (c.owner == NULL) return 0;
    scan_devices(m, count_owned, &c);
    return c.count;
}

/* A device's hash for pd_model_partition_digest: every field its ADD
 * carries but last_active, strings hashed alone (no two fields run
 * together) and numbers little endian, so that every node computes the
 * same value. last_active reaches the peers in steps of the activity
 * resolution, and the owner's may be up to a step ahead of their copy
 * (the state, which idleness changes, is compared). */
static void put_u64(uint8_t *b, uint64_t v) {
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
}

static void digest_device(void *ud, void *e) {
    part_ctx *c = ud;
    const pd_device *d = (const pd_device *)e;
    pd_op op;
    uint8_t b[8 * 8];
    if (pd__dev_node(c->cm, d) != c->owner) return;
    device_op(c->cm, d, PD_OP_ADD, &op);
    const pd_str s[5] = {op.server, op.conn, op.user, op.label, op.meta};
    for (int i = 0; i < 5; i++) put_u64(b + 8 * i, pd_hash(s[i].p, s[i].n));
    put_u64(b + 40, (uint64_t)op.state);
    put_u64(b + 48, (uint64_t)op.connected_at);
    put_u64(b + 56, op.hlc);
    c->count++;
    c->digest += pd_hash(b, sizeof b); /* a sum: the same in any order */
}

void pd_model_partition_digest(const pd_model *m, pd_str owner, uint64_t *devices,
                               uint64_t *digest) {
    part_ctx c = {.cm = m, .owner = pd__intern_find(m, owner)};
    if (c.owner != NULL) scan_devices(m, digest_device, &c);
    *devices = c.count;
    *digest = c.digest >> 1; /* 63 bits: protocol integers are at most INT64_MAX */
}

/* ---- restoring this node's own partition -------------------------------------- */

pd_status pd_model_apply_own_op(pd_model *m, const pd_op *op, uint64_t now) {
    pd_status st = PD_OK;
    pd_device *d;
    pd_user *u;
    pd__ops_mute(m); /* restoring: nothing to tell the peers yet */
    m->now = now;
    pd__hlc_observe(m, op->hlc, now);
    pd__hlc_observe(m, op->ver, now);
    switch (op->kind) {
    case PD_OP_ADD:
        /* Its last activity and its user's last_seen as recorded, which
         * the peers hold (they may keep our devices: sync/repl.c), not the
         * restart's time; its idle timer from now, as before. */
        m->restore_active = op->last_active > 0 && (uint64_t)op->last_active < now
                                ? op->last_active : 0;
        st = apply_add(m, m->node, op, now, &d);
        m->restore_active = 0;
        if (st == PD_OK && d != NULL) {
            if (op->state == PD_DEV_IDLE) pd__device_set_idle(m, d);
            else st = pd__device_set_active(m, d, (uint64_t)op->last_active);
        }
        break;
    case PD_OP_REMOVE:
        if ((d = owned(m, m->node, op)) != NULL) {
            pd_server *s = pd__dev_server(m, d);
            /* Removed then, not now, at its version: the REMOVE op said. */
            m->write_at = op->ver;
            pd__device_remove(m, d, op->at > 0 ? (uint64_t)op->at : now, 0);
            m->write_at = 0;
            pd__drop_server_if_unused(m, s);
        } else {
            removed_before(m, m->node, op);
        }
        break;
    case PD_OP_STATE:
        if ((d = owned(m, m->node, op)) != NULL) {
            pd__dev_raise_active(d, op->last_active);
            pd__seen(m, pd__dev_user(m, d), op->last_active, pd__dev_node(m, d), d->claim);
            m->write_at = op->ver;
            if (op->state == PD_DEV_IDLE) pd__device_set_idle(m, d);
            else st = pd__device_set_active(m, d, (uint64_t)op->last_active);
            m->write_at = 0;
            if (op->ver) pd__ver_raise(m, pd__dev_user(m, d), op->ver, m->node);
        }
        break;
    case PD_OP_SYNCED:
        pd__apply_synced(m, m->node, op, now);
        break;
    default:
        st = apply_register(m, op, now);
        /* As written: an invisible that froze no last_seen (the user had
         * none yet) freezes none now either, whatever the devices restored
         * before it set; the peers that applied it hold none. */
        if (st == PD_OK && op->kind == PD_OP_CHOSEN && op->chosen == PD_CHOSEN_INVISIBLE &&
            op->at == 0 && (u = pd__user_find(m, op->user)) != NULL && u->chosen_hlc == op->hlc)
            u->seen_frozen = 0;
        break;
    }
    pd__ops_unmute(m);
    pd__flush(m, now);
    return st;
}

/* presence_view.c - what viewers see: the public status rules of
 * docs/protocol.md section 2, views for notifications and `get`, the device list
 * and the paged scan of online users. */
#include "model/presence_int.h"
#include <string.h>

pd_public pd__user_status(const pd_user *u, bool self) {
    if (u->chosen == PD_CHOSEN_INVISIBLE) return self ? PD_PUB_INVISIBLE : PD_PUB_OFFLINE;
    bool live = u->ndev > 0 || (u->flags & UF_GRACE);
    if (!live) return PD_PUB_OFFLINE;
    if (u->chosen == PD_CHOSEN_BUSY) return PD_PUB_BUSY;
    if (u->chosen == PD_CHOSEN_AWAY) return PD_PUB_AWAY;
    bool active = u->ndev > 0 ? u->nactive > 0 : (u->flags & UF_HELD_ACTIVE) != 0;
    return active ? PD_PUB_ONLINE : PD_PUB_AWAY;
}

void pd__user_view(const pd_model *m, const pd_user *u, bool self, pd_view *out) {
    memset(out, 0, sizeof *out);
    out->user = (pd_str){u->id, u->id_n};
    out->status = pd__user_status(u, self);
    out->text = out->emoji = (pd_str){"", 0};
    bool hidden = !self && u->chosen == PD_CHOSEN_INVISIBLE;
    const pd_custom *c = pd__user_custom(u);
    if (c && !hidden) {
        out->text = (pd_str){c->buf, c->text_n};
        out->emoji = (pd_str){c->buf + c->text_n, c->emoji_n};
        out->expires_at = c->expires_at;
    }
    out->last_seen = hidden ? u->seen_frozen : u->seen;
    out->devices = hidden ? 0 : u->ndev;
    out->ts = u->notified_ts;
    out->ver = pd__user_ver(m, u);
}

/* Every term is replicated data, so that nodes holding the same state give
 * the same ver however they came by it (live ops, a snapshot, a state
 * transfer). Timer transitions are not stored: the end of the offline
 * delay is computed from last_seen, a register, for as long as the user
 * stays offline; a custom status expiry from the expired value, for as
 * long as the register holds it. */
uint64_t pd__user_ver(const pd_model *m, const pd_user *u) {
    uint64_t v = u->vmax;
    if (u->chosen_hlc > v) v = u->chosen_hlc;
    if (u->custom_hlc > v) v = u->custom_hlc;
    if (u->seen_hlc > v) v = u->seen_hlc; /* last_seen, a register of its own */
    uint64_t expired = (uint64_t)pd__user_expired_at(u) << 16;
    if (expired > v) v = expired;
    if (u->ndev == 0 && !(u->flags & UF_GRACE) && u->seen > 0) {
        uint64_t off = ((uint64_t)u->seen + m->cfg.offline_delay_ms) << 16;
        if (off > v) v = off;
    }
    return v;
}

bool pd__ver_raise(const pd_model *m, pd_user *u, uint64_t at, const char *by) {
    if (!pd__newer(at, by, u->vmax, pd__writer_name(m, u->vmax_by))) return false;
    u->vmax = at;
    u->vmax_by = pd__writer_of(by);
    return true;
}

/* Another node's floor (a VER op): pd__ver_raise, and marks the user for
 * announcing when that raises the ver others see (UF_FLOOR; the caller
 * marks it dirty). */
bool pd__ver_floor(const pd_model *m, pd_user *u, uint64_t at, const char *by) {
    uint64_t before = pd__user_ver(m, u);
    if (!pd__ver_raise(m, u, at, by)) return false;
    if (pd__user_ver(m, u) > before) u->flags |= UF_FLOOR;
    return true;
}

bool pd_model_view(const pd_model *m, pd_str user, pd_str viewer, pd_view *out) {
    const pd_user *u = pd__user_find(m, user);
    if (u == NULL) {
        memset(out, 0, sizeof *out);
        out->user = user;
        out->status = PD_PUB_OFFLINE;
        out->text = out->emoji = (pd_str){"", 0};
        return false;
    }
    pd__user_view(m, u, viewer.n > 0 && pd_str_eq(viewer, user), out);
    return true;
}

uint32_t pd_model_devices_of(const pd_model *m, pd_str user, pd_device_fn fn, void *ud) {
    const pd_user *u = pd__user_find(m, user);
    uint32_t n = 0;
    if (u == NULL) return 0;
    for (const pd_device *d = pd__dev_at(m, u->devs); d; d = pd__dev_at(m, d->unext), n++) {
        if (fn == NULL) continue;
        pd_device_view v = {
            .conn = {d->buf, d->conn_n},
            .server = {pd__dev_server(m, d)->id, pd__dev_server(m, d)->id_n},
            .node = pd_str_c(pd__dev_node(m, d)),
            .device = {d->buf + d->conn_n, d->label_n},
            .state = (pd_devstate)d->state,
            .connected_at = d->connected_at,
            .last_active = d->last_active,
        };
        v.meta = pd__dev_meta(d);
        fn(ud, &v);
    }
    return n;
}


/* The scan walks users in increasing order of pd_rev64(hash): bucket b holds
 * exactly the users whose reversed hash starts with the reversed bits of b,
 * so visiting buckets in reverse-binary order and each bucket sorted gives
 * one global order that does not depend on the table size. The cursor is
 * the smallest reversed hash still to return: a user present for the whole
 * scan is returned exactly once, even if the table grows in between. */
#define SCAN_BUCKET_MAX 64

typedef struct {
    uint64_t rh;
    const pd_user *u;
} scan_item;

/* Online users of bucket b with reversed hash >= p, sorted; at most cap
 * (the smallest ones, so the scan stays exact when a chain is longer). */
static uint32_t bucket_items(const pd_model *m, uint64_t b, uint64_t p, scan_item *out,
                             uint32_t cap) {
    uint32_t n = 0;
    for (const pd_user *u = pd_slab_ptr(&m->user_slab, m->users.b[b]); u;
         u = pd_ihtab_next(&m->users, u)) {
        uint64_t rh = pd_rev64(pd_hash(u->id, u->id_n));
        if (rh < p || pd__user_status(u, false) == PD_PUB_OFFLINE) continue;
        if (n == cap && rh >= out[n - 1].rh) continue;
        uint32_t i = n < cap ? n++ : n - 1;
        while (i > 0 && out[i - 1].rh > rh) {
            out[i] = out[i - 1];
            i--;
        }
        out[i] = (scan_item){rh, u};
    }
    return n;
}

uint64_t pd_model_scan_online(const pd_model *m, uint64_t cursor, uint32_t limit,
                              pd_user_fn fn, void *ud) {
    scan_item items[SCAN_BUCKET_MAX];
    uint64_t mask = m->users.mask;
    unsigned bits = (unsigned)__builtin_popcountll(mask);
    uint64_t span = bits ? 1ULL << (64 - bits) : 0; /* reversed-hash width of a bucket */
    uint64_t p = cursor, last = 0;
    uint32_t emitted = 0;
    /* Bound the work of one page: empty buckets are cheap but not free. */
    uint64_t budget = (uint64_t)limit * 64 + 1024;
    if (limit == 0) return cursor;
    /* A full page ends just after its last user, and only if another one
     * follows: so the cursor depends on the users, not on the table's
     * size, and every node that holds the same users pages alike. */
    for (;;) {
        uint64_t b = pd_rev64(p) & mask;
        uint32_t n = bucket_items(m, b, p, items, SCAN_BUCKET_MAX);
        for (uint32_t i = 0; i < n; i++) {
            if (emitted == limit) return last + 1; /* items[i].rh > last */
            fn(ud, (pd_str){items[i].u->id, items[i].u->id_n});
            last = items[i].rh;
            emitted++;
        }
        if (n == SCAN_BUCKET_MAX) { /* a longer chain: resume after the last one */
            if (items[n - 1].rh == UINT64_MAX) return 0;
            p = items[n - 1].rh + 1;
            continue;
        }
        uint64_t start = pd_rev64(b);
        if (span == 0 || start > UINT64_MAX - span) return 0; /* last bucket: done */
        p = start + span;
        if (--budget == 0) return emitted == limit ? last + 1 : p;
    }
}

typedef struct {
    const pd_model *m;
    pd_view_fn fn;
    void *ud;
} view_ctx;

static void visit_view(void *ud, void *e) {
    view_ctx *c = ud;
    const pd_user *u = (const pd_user *)e;
    pd_view v;
    pd__user_view(c->m, u, false, &v);
    c->fn(c->ud, &v);
}

void pd_model_foreach_view(const pd_model *m, pd_view_fn fn, void *ud) {
    view_ctx c = {m, fn, ud};
    uint64_t cur = 0;
    do cur = pd_ihtab_scan(&m->users, cur, visit_view, &c); while (cur != 0);
}

bool pd_model_foreach_view_step(const pd_model *m, uint64_t *cursor, uint32_t buckets,
                                pd_view_fn fn, void *ud) {
    view_ctx c = {m, fn, ud};
    uint64_t cur = *cursor;
    for (uint32_t i = 0; i < buckets; i++) {
        cur = pd_ihtab_scan(&m->users, cur, visit_view, &c);
        if (cur == 0) break;
    }
    *cursor = cur;
    return cur == 0;
}

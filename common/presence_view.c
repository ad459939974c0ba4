/* presence_view.c - what viewers see: the public status rules of
 * PROTOCOL.md section 2, views for notifications and `get`, the device list
 * and the paged scan of online users. */
#include "presence_int.h"
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

void pd__user_view(const pd_user *u, bool self, pd_view *out) {
    memset(out, 0, sizeof *out);
    out->user = (pd_str){u->id, u->id_n};
    out->status = pd__user_status(u, self);
    out->text = out->emoji = (pd_str){"", 0};
    bool hidden = !self && u->chosen == PD_CHOSEN_INVISIBLE;
    if (u->custom && !hidden) {
        out->text = (pd_str){u->custom->buf, u->custom->text_n};
        out->emoji = (pd_str){u->custom->buf + u->custom->text_n, u->custom->emoji_n};
        out->expires_at = u->custom->expires_at;
    }
    out->last_seen = hidden ? u->seen_frozen : u->seen;
    out->devices = hidden ? 0 : u->ndev;
    out->ts = u->notified_ts;
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
    pd__user_view(u, viewer.n > 0 && pd_str_eq(viewer, user), out);
    return true;
}

uint32_t pd_model_devices_of(const pd_model *m, pd_str user, pd_device_fn fn, void *ud) {
    const pd_user *u = pd__user_find(m, user);
    uint32_t n = 0;
    if (u == NULL) return 0;
    for (const pd_device *d = u->devs; d; d = d->unext, n++) {
        if (fn == NULL) continue;
        pd_device_view v = {
            .conn = {d->buf, d->conn_n},
            .server = {d->server->id, d->server->id_n},
            .node = pd_str_c(d->node),
            .device = {d->buf + d->conn_n, d->label_n},
            .state = (pd_devstate)d->state,
            .connected_at = d->connected_at,
            .last_active = d->last_active,
        };
        if (d->meta) v.meta = (pd_str){(const char *)d->meta + 2, (uint32_t)(d->meta[0] << 8 | d->meta[1])};
        fn(ud, &v);
    }
    return n;
}

typedef struct {
    pd_user_fn fn;
    void *ud;
    uint32_t count;
} scan_ctx;

static void count_online(void *ud, pd_hnode *e) {
    scan_ctx *c = ud;
    if (pd__user_status((pd_user *)e, false) != PD_PUB_OFFLINE) c->count++;
}

static void emit_online(void *ud, pd_hnode *e) {
    scan_ctx *c = ud;
    const pd_user *u = (pd_user *)e;
    if (pd__user_status(u, false) == PD_PUB_OFFLINE) return;
    c->fn(c->ud, (pd_str){u->id, u->id_n});
    c->count++;
}

uint64_t pd_model_scan_online(const pd_model *m, uint64_t cursor, uint32_t limit,
                              pd_user_fn fn, void *ud) {
    scan_ctx emitted = {fn, ud, 0};
    /* Bound the work of one page: at most 64 buckets per requested user. */
    uint64_t budget = (uint64_t)limit * 64 + 1024;
    do {
        scan_ctx probe = {NULL, NULL, 0};
        pd_htab_scan(&m->users, cursor, count_online, &probe);
        if (emitted.count > 0 && emitted.count + probe.count > limit) return cursor;
        cursor = pd_htab_scan(&m->users, cursor, emit_online, &emitted);
    } while (cursor != 0 && emitted.count < limit && --budget > 0);
    return cursor;
}

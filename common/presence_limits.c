/* presence_limits.c - the model's limits at its local entry point
 * (pd_model_apply): live devices per user and users per node.
 *
 * Each check runs before the event changes anything, so a refused event
 * leaves the model as it was; it fills err with too_large and a message
 * naming the setting, and counts the refusal (pd_model_stats). The counts
 * are those of this node's merged model: a user's devices on every node,
 * and the users with at least one live device on any node. Users count only
 * while they have a live device: the model keeps every user it has seen
 * (for last_seen), and a cap on those would, once reached, refuse every
 * new user for good. status and custom events are not limited by it (they
 * give no user a device). Ops from peers, state transfers and restores
 * never pass here: a limit never makes two nodes hold different state. */
#include "presence_int.h"
#include <stdlib.h>
#include <string.h>
#include "alloc.h"

static pd_status refuse_devices(pd_model *m, pd_err *err, pd_str user, uint64_t would) {
    m->refused_devices++;
    pd_err_set(err, PD_ETOOLARGE,
               "user '%.*s' would have %llu live devices; "
               "PRESENCE_MAX_DEVICES_PER_USER is %llu",
               (int)(user.n > 32 ? 32 : user.n), user.p, (unsigned long long)would,
               (unsigned long long)m->cfg.max_devices_per_user);
    return PD_ETOOLARGE;
}

static pd_status refuse_users(pd_model *m, pd_err *err, uint64_t would) {
    m->refused_users++;
    pd_err_set(err, PD_ETOOLARGE,
               "%llu users would have live devices; PRESENCE_MAX_USERS_PER_NODE is %llu",
               (unsigned long long)would, (unsigned long long)m->cfg.max_users);
    return PD_ETOOLARGE;
}

/* `more` users without a live device would get one. */
static pd_status limit_live(pd_model *m, pd_err *err, uint64_t more) {
    if (m->cfg.max_users == 0 || more == 0 || m->live_users + more <= m->cfg.max_users)
        return PD_OK;
    return refuse_users(m, err, m->live_users + more);
}

/* A connect adds one device to its user, unless it repeats a connect
 * (nothing new) or replaces a device of the same user under the same conn
 * (one leaves as one comes). */
pd_status pd__limit_connect(pd_model *m, const pd_server *s, const pd_event *ev, pd_err *err) {
    pd_user *u = pd__user_find(m, ev->user);
    pd_status st = limit_live(m, err, u == NULL || u->ndev == 0 ? 1 : 0);
    if (st != PD_OK || u == NULL || m->cfg.max_devices_per_user == 0) return st;
    const pd_device *d = pd__device_find(m, s, ev->conn);
    uint64_t would = (uint64_t)u->ndev + 1u - (d != NULL && d->user == u ? 1u : 0u);
    if (would <= m->cfg.max_devices_per_user) return PD_OK;
    if (would == u->ndev) return PD_OK; /* no more than now: never refuse a replacement */
    return refuse_devices(m, err, ev->user, would);
}

/* ---- sync ---------------------------------------------------------------------- */

typedef struct {
    pd_str user, conn;
} sync_key;

static int str_cmp(pd_str a, pd_str b) {
    int c = memcmp(a.p, b.p, a.n < b.n ? a.n : b.n);
    if (c != 0) return c;
    return (a.n > b.n) - (a.n < b.n);
}

static int key_cmp(const void *a, const void *b) {
    const sync_key *x = a, *y = b;
    int c = str_cmp(x->user, y->user);
    return c != 0 ? c : str_cmp(x->conn, y->conn);
}

static bool names_conn(const sync_key *k, size_t n, pd_str conn) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = str_cmp(k[mid].conn, conn);
        if (c == 0) return true;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return false;
}

/* Devices of u that a sync of s leaves besides its own entries: those on
 * other servers, and those on s that another node owns and the sync does
 * not name (it removes only this node's). k[0..n) are u's entries, sorted
 * by conn. A conn the sync gives to another user counts as kept: at worst
 * the check is stricter than the outcome by such reused ids. */
static uint64_t devices_kept(const pd_model *m, const pd_user *u, const pd_server *s,
                             const sync_key *k, size_t n) {
    uint64_t kept = 0;
    for (const pd_device *d = u->devs; d != NULL; d = d->unext) {
        if (d->server != s) kept++;
        else if (d->node != m->node && !names_conn(k, n, (pd_str){d->buf, d->conn_n})) kept++;
    }
    return kept;
}

/* A sync replaces this node's devices of the server with its list: each
 * user ends with its entries (distinct conns) plus the devices kept. */
pd_status pd__limit_sync(pd_model *m, const pd_server *s, const pd_event *ev, pd_err *err) {
    if ((m->cfg.max_devices_per_user == 0 && m->cfg.max_users == 0) || ev->nconns == 0)
        return PD_OK;
    sync_key *k = pd_malloc(sizeof *k * ev->nconns);
    if (k == NULL) {
        pd_err_set(err, PD_ENOMEM, "out of memory");
        return PD_ENOMEM;
    }
    pd_sync_iter it;
    pd_sync_conn c;
    size_t n = 0;
    pd_sync_iter_init(&it, ev);
    while (n < ev->nconns && pd_sync_iter_next(&it, &c)) k[n++] = (sync_key){c.user, c.conn};
    qsort(k, n, sizeof *k, key_cmp);
    pd_status st = PD_OK;
    uint64_t new_users = 0;
    for (size_t i = 0, j; i < n && st == PD_OK; i = j) {
        uint64_t entries = 1;
        for (j = i + 1; j < n && str_cmp(k[j].user, k[i].user) == 0; j++)
            if (str_cmp(k[j].conn, k[j - 1].conn) != 0) entries++;
        const pd_user *u = pd__user_find(m, k[i].user);
        uint64_t would = entries;
        if (u == NULL || u->ndev == 0) new_users++;
        if (u != NULL) would += devices_kept(m, u, s, k + i, j - i);
        if (m->cfg.max_devices_per_user && would > m->cfg.max_devices_per_user &&
            (u == NULL || would > u->ndev))
            st = refuse_devices(m, err, k[i].user, would);
    }
    if (st == PD_OK) st = limit_live(m, err, new_users);
    pd_free(k);
    return st;
}

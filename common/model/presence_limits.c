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
 * never pass here: a limit never makes two nodes hold different state.
 *
 * A whole sync is never refused: a sync is the server's list of the
 * connections it has, and refusing it whole because one user is over a
 * limit (lowered since, or reached by concurrent connects on two nodes)
 * would leave every user of that server wrong, on every retry of it. Its
 * entries that would push a user over max_devices_per_user are refused
 * one by one instead (pd__limit_sync_entry), listed in a partial reply. */
#include "model/presence_int.h"

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
    uint64_t would = (uint64_t)u->ndev + 1u - (d != NULL && pd__dev_user(m, d) == u ? 1u : 0u);
    if (would <= m->cfg.max_devices_per_user) return PD_OK;
    if (would == u->ndev) return PD_OK; /* no more than now: never refuse a replacement */
    return refuse_devices(m, err, ev->user, would);
}

/* A sync entry is refused one by one (the rest of the sync applies): a
 * sync reports connections that exist, but a user over
 * PRESENCE_MAX_DEVICES_PER_USER must not be made so silently. The user
 * limit (max_users) does not apply to syncs, as explained above. */
pd_status pd__limit_sync_entry(pd_model *m, const pd_user *u, pd_str user, pd_err *err) {
    if (u == NULL || m->cfg.max_devices_per_user == 0 ||
        (uint64_t)u->ndev + 1u <= m->cfg.max_devices_per_user)
        return PD_OK;
    return refuse_devices(m, err, user, (uint64_t)u->ndev + 1u);
}

/* node_query.c - queries of docs/protocol.md section 4, answered from this
 * node's view: get, devices, online (paged by an opaque cursor) and
 * cluster. PRESENCE_MAX_QUERY_USERS bounds the users of a get and the
 * limit of an online page (the codec enforces the protocol's 1000). */
#include "node.h"
#include "model/query_answer.h"
#include <string.h>

/* True if the request (a map already decoded once) names `limit`: an
 * absent limit means the node's largest page, an explicit one must fit. */
static bool names_limit(const void *buf, size_t len) {
    mp_reader r;
    uint32_t n = 0;
    pd_str k;
    mpr_init(&r, buf, len);
    if (len == 0 || !mpr_map(&r, &n)) return false;
    for (uint32_t i = 0; i < n && pd_read_key(&r, &k); i++) {
        if (pd_str_eqc(k, "limit") && mpr_peek(&r) != MPR_NIL) return true;
        if (!mpr_skip(&r)) return false;
    }
    return false;
}

/* PRESENCE_MAX_QUERY_USERS, on a decoded request. */
static pd_status check_query_size(pd_node *n, pd_query *q, const void *buf, size_t len,
                                  pd_err *err) {
    uint64_t max = n->cfg.max_query_users;
    if (q->type == PD_Q_GET && q->nusers > max) {
        pd_err_set(err, PD_ETOOLARGE, "field 'users' has %u ids; PRESENCE_MAX_QUERY_USERS is %llu",
                   q->nusers, (unsigned long long)max);
        return PD_ETOOLARGE;
    }
    if (q->type == PD_Q_ONLINE && q->limit > max) {
        if (!names_limit(buf, len)) {
            q->limit = (uint32_t)max;
            return PD_OK;
        }
        pd_err_set(err, PD_ETOOLARGE, "field 'limit' is %u; PRESENCE_MAX_QUERY_USERS is %llu",
                   q->limit, (unsigned long long)max);
        return PD_ETOOLARGE;
    }
    return PD_OK;
}

static const pd_query_type query_of[SUB_COUNT] = {
    [SUB_Q_GET] = PD_Q_GET,
    [SUB_Q_DEVICES] = PD_Q_DEVICES,
    [SUB_Q_ONLINE] = PD_Q_ONLINE,
    [SUB_Q_CLUSTER] = PD_Q_CLUSTER,
};

/* The kind of a per-node query, from its subject P.query.<kind>.<node>
 * (SUB_COUNT: none of the four). */
static node_sub_kind node_query_kind(const pd_node *n, const char *subject) {
    static const struct { const char *name; node_sub_kind kind; } kinds[] = {
        {"get", SUB_Q_GET}, {"devices", SUB_Q_DEVICES}, {"online", SUB_Q_ONLINE},
        {"cluster", SUB_Q_CLUSTER},
    };
    size_t pre = strlen(n->cfg.subject_prefix);
    if (subject == NULL || strncmp(subject, n->cfg.subject_prefix, pre) != 0 ||
        strncmp(subject + pre, ".query.", 7) != 0)
        return SUB_COUNT;
    const char *k = subject + pre + 7, *dot = strchr(k, '.');
    size_t kn = dot ? (size_t)(dot - k) : strlen(k);
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (strlen(kinds[i].name) == kn && memcmp(kinds[i].name, k, kn) == 0) return kinds[i].kind;
    }
    return SUB_COUNT;
}

void node__handle_query(pd_node *n, node_sub_kind kind, natsMsg *msg) {
    const char *reply = natsMsg_GetReply(msg);
    int len = natsMsg_GetDataLength(msg);
    pd_err err = {PD_OK, ""};
    pd_query q;
    pd_status s;
    msgpack_packer pk;

    if (kind == SUB_Q_NODE) kind = node_query_kind(n, natsMsg_GetSubject(msg));
    if (kind == SUB_COUNT) {
        pd_err_set(&err, PD_EBADVALUE, "no query on subject %s (get, devices, online, cluster)",
                   natsMsg_GetSubject(msg));
        node__bad_input(n, msg, &err);
        node__reply_error(n, msg, PD_EBADVALUE, err.msg);
        return;
    }
    if ((uint64_t)len > n->cfg.max_msg_bytes) {
        pd_err_set(&err, PD_ETOOLARGE, "request is %d bytes; PRESENCE_MAX_MSG_BYTES is %llu",
                   len, (unsigned long long)n->cfg.max_msg_bytes);
        s = PD_ETOOLARGE;
        n->stats.refused_msg_bytes++;
    } else {
        s = pd_query_decode(query_of[kind], natsMsg_GetData(msg), (size_t)len, &q, &err);
        if (s == PD_OK) s = check_query_size(n, &q, natsMsg_GetData(msg), (size_t)len, &err);
        /* Too many users or too large a page, by the protocol or the setting
         * (the other too_large of a query is a long cursor). */
        if (s == PD_ETOOLARGE && (kind == SUB_Q_GET || strstr(err.msg, "'limit'") != NULL))
            n->stats.refused_query_users++;
    }
    if (s == PD_OK && (reply == NULL || reply[0] == '\0')) return; /* nobody to answer */
    msgpack_sbuffer_clear(&n->out);
    msgpack_packer_init(&pk, &n->out, msgpack_sbuffer_write);
    if (s == PD_OK) {
        n->stats.queries[q.type]++;
        switch (q.type) {
        case PD_Q_CLUSTER:
            pd_repl_answer_cluster(n->repl, pd_str_c(n->cfg.node_id), n->now, &pk);
            break;
        default: {
            pd_str stale[PD_VC_MAX];
            pd_freshness fr = {0, stale, 0};
            fr.nstale = pd_repl_freshness(n->repl, n->now, stale, PD_VC_MAX, &fr.as_of);
            s = pd_query_answer(n->model, &q, &fr, &pk, &err);
            break;
        }
        }
    }
    /* A reply NATS would not carry is refused, not lost on the way. */
    int64_t max = n->nc ? natsConnection_GetMaxPayload(n->nc) : 0;
    if (s == PD_OK && max > 0 && n->out.size > (size_t)max) {
        static const char *const names[PD_Q_COUNT] = {"get", "devices", "online", "cluster"};
        pd_err_set(&err, PD_ETOOLARGE, "the %s reply is %zu bytes; the NATS max payload is %lld",
                   names[q.type], n->out.size, (long long)max);
        s = PD_ETOOLARGE;
    }
    if (s != PD_OK) {
        node__bad_input(n, msg, &err);
        node__reply_error(n, msg, s, err.msg);
        return;
    }
    node__publish(n, reply);
}

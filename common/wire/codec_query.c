/* codec_query.c - queries of docs/protocol.md section 4, their replies, and the
 * public view shared by notifications (section 3) and `get` replies. */
#include "wire/codec.h"
#include <string.h>

/* ---- requests --------------------------------------------------------------- */

/* Required fields, by query type. */
enum { QF_USERS = 1 << 0, QF_USER = 1 << 1 };
#define QF_COUNT 2
static const char *const query_fields[QF_COUNT] = {"users", "user"};
static const unsigned query_required[PD_Q_COUNT] = {
    [PD_Q_GET] = QF_USERS,
    [PD_Q_DEVICES] = QF_USER,
};

static pd_status read_query_id(mp_reader *r, pd_err *err, const char *field, pd_str *out) {
    if (mpr_peek(r) == MPR_NIL) { mpr_nil(r); out->n = 0; return PD_OK; }
    if (!mpr_str(r, out)) return pd_rd_field_err(r, err, field, "a string");
    if (!pd_id_valid(out->p, out->n)) {
        pd_err_set(err, PD_EBADID, "field '%s' is not a valid id", field);
        return PD_EBADID;
    }
    return PD_OK;
}

static pd_status read_users(mp_reader *r, pd_query *q, pd_err *err) {
    pd_str raw;
    mp_reader sub;
    uint32_t n;
    if (!mpr_raw(r, &raw)) return pd_rd_err(r, err);
    mpr_init(&sub, raw.p, raw.n);
    if (!mpr_array(&sub, &n)) {
        pd_err_set(err, PD_EBADVALUE, "field 'users' must be an array of ids");
        return PD_EBADVALUE;
    }
    if (n > PD_QUERY_USERS_MAX) {
        pd_err_set(err, PD_ETOOLARGE, "field 'users' has %u ids, the limit is %d", n,
                   PD_QUERY_USERS_MAX);
        return PD_ETOOLARGE;
    }
    for (uint32_t i = 0; i < n; i++) {
        pd_str u;
        if (mpr_peek(&sub) != MPR_STR) {
            pd_err_set(err, PD_EBADVALUE, "field 'users' must be an array of ids");
            return PD_EBADVALUE;
        }
        pd_status s = read_query_id(&sub, err, "users", &u);
        if (s != PD_OK) return s;
    }
    q->users = raw;
    q->nusers = n;
    return PD_OK;
}

static pd_status read_query_field(mp_reader *r, pd_str k, pd_query *q, unsigned *seen,
                                  pd_err *err) {
    if (q->type == PD_Q_GET && pd_str_eqc(k, "users")) {
        *seen |= QF_USERS;
        return read_users(r, q, err);
    }
    if (q->type == PD_Q_GET && pd_str_eqc(k, "viewer"))
        return read_query_id(r, err, "viewer", &q->viewer);
    if (q->type == PD_Q_DEVICES && pd_str_eqc(k, "user")) {
        pd_status s = read_query_id(r, err, "user", &q->user);
        /* nil is absent, also after a first value */
        if (s == PD_OK) *seen = q->user.n > 0 ? *seen | QF_USER : *seen & ~(unsigned)QF_USER;
        return s;
    }
    if (q->type == PD_Q_ONLINE && pd_str_eqc(k, "cursor")) {
        if (mpr_peek(r) == MPR_NIL) { mpr_nil(r); return PD_OK; }
        if (!mpr_str(r, &q->cursor)) return pd_rd_field_err(r, err, "cursor", "a string");
        if (q->cursor.n > PD_CURSOR_MAX) {
            pd_err_set(err, PD_ETOOLARGE, "field 'cursor' is longer than %d bytes", PD_CURSOR_MAX);
            return PD_ETOOLARGE;
        }
        return PD_OK;
    }
    if (q->type == PD_Q_ONLINE && pd_str_eqc(k, "limit")) {
        int64_t v;
        if (mpr_peek(r) == MPR_NIL) { mpr_nil(r); return PD_OK; }
        if (!mpr_int(r, &v)) return pd_rd_field_err(r, err, "limit", "an integer");
        if (v < 1) {
            pd_err_set(err, PD_EBADVALUE, "field 'limit' must be at least 1");
            return PD_EBADVALUE;
        }
        if (v > PD_QUERY_LIMIT_MAX) {
            pd_err_set(err, PD_ETOOLARGE, "field 'limit' is above %d", PD_QUERY_LIMIT_MAX);
            return PD_ETOOLARGE;
        }
        q->limit = (uint32_t)v;
        return PD_OK;
    }
    return mpr_skip(r) ? PD_OK : pd_rd_err(r, err);
}

pd_status pd_query_decode(pd_query_type type, const void *buf, size_t len, pd_query *q,
                          pd_err *err) {
    mp_reader r;
    uint32_t n = 0;
    unsigned seen = 0;
    memset(q, 0, sizeof *q);
    q->type = type;
    q->limit = PD_QUERY_LIMIT_MAX;
    mpr_init(&r, buf, len);
    if (len > 0) {
        if (mpr_peek(&r) != MPR_MAP) {
            pd_err_set(err, PD_EBADMSGPACK, "request must be a MessagePack map");
            return PD_EBADMSGPACK;
        }
        if (!mpr_map(&r, &n)) return pd_rd_err(&r, err);
    }
    for (uint32_t i = 0; i < n; i++) {
        pd_str k;
        if (!pd_read_key(&r, &k)) return pd_rd_err(&r, err);
        pd_status s = read_query_field(&r, k, q, &seen, err);
        if (s != PD_OK) return s;
    }
    if (mpr_remaining(&r) != 0) {
        pd_err_set(err, PD_EBADMSGPACK, "trailing bytes after the request");
        return PD_EBADMSGPACK;
    }
    unsigned required = (unsigned)type < PD_Q_COUNT ? query_required[type] : 0;
    return pd_fields_missing(seen, required, query_fields, QF_COUNT, "request", err);
}

void pd_query_users_iter(const pd_query *q, mp_reader *it) {
    uint32_t n;
    mpr_init(it, q->users.p, q->users.n);
    if (q->users.n) mpr_array(it, &n);
}

bool pd_query_next_user(mp_reader *it, pd_str *user) {
    if (mpr_remaining(it) == 0) return false;
    return mpr_str(it, user);
}

void pd_query_encode(msgpack_sbuffer *sb, const pd_query *q, const pd_str *users, uint32_t n) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    switch (q->type) {
    case PD_Q_GET:
        msgpack_pack_map(&pk, q->viewer.n ? 2 : 1);
        pd_pack_cstr(&pk, "users");
        msgpack_pack_array(&pk, n);
        for (uint32_t i = 0; i < n; i++) pd_pack_str(&pk, users[i]);
        if (q->viewer.n) pd_pack_kv_str(&pk, "viewer", q->viewer);
        break;
    case PD_Q_DEVICES:
        msgpack_pack_map(&pk, 1);
        pd_pack_kv_str(&pk, "user", q->user);
        break;
    case PD_Q_ONLINE:
        /* limit 0: left out, the node's largest page. */
        msgpack_pack_map(&pk, (q->limit > 0) + (q->cursor.n > 0));
        if (q->limit) pd_pack_kv_int(&pk, "limit", q->limit);
        if (q->cursor.n) pd_pack_kv_str(&pk, "cursor", q->cursor);
        break;
    default:
        msgpack_pack_map(&pk, 0);
        break;
    }
}

/* ---- views: notifications and get replies ------------------------------------ */

static void pack_view(msgpack_packer *pk, const pd_view *v, bool notification) {
    bool stale = !notification && v->stale;
    msgpack_pack_map(pk, 8 + stale);
    pd_pack_kv_str(pk, "user", v->user);
    pd_pack_kv_str(pk, "status", pd_str_c(pd_public_name(v->status)));
    pd_pack_kv_str(pk, "text", v->text);
    pd_pack_kv_str(pk, "emoji", v->emoji);
    pd_pack_kv_int(pk, "expires_at", v->expires_at);
    pd_pack_kv_int(pk, "last_seen", v->last_seen);
    if (notification) pd_pack_kv_int(pk, "ts", v->ts);
    else pd_pack_kv_int(pk, "devices", v->devices);
    pd_pack_cstr(pk, "ver");
    msgpack_pack_uint64(pk, v->ver);
    if (stale) {
        pd_pack_cstr(pk, "stale");
        msgpack_pack_true(pk);
    }
}

void pd_notification_encode(msgpack_sbuffer *sb, const pd_view *v) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    pack_view(&pk, v, true);
}

static pd_status bad_view(pd_err *err, const char *what) {
    pd_err_set(err, PD_EBADVALUE, "bad view: %s", what);
    return PD_EBADVALUE;
}

pd_status pd_view_decode(mp_reader *r, pd_view *v, pd_err *err) {
    uint32_t n;
    memset(v, 0, sizeof *v);
    if (!mpr_map(r, &n)) return bad_view(err, "not a map");
    for (uint32_t i = 0; i < n; i++) {
        pd_str k, s;
        int64_t x = 0;
        bool ok = pd_read_key(r, &k);
        if (!ok) return bad_view(err, "bad key");
        if (pd_str_eqc(k, "user")) ok = mpr_str(r, &v->user);
        else if (pd_str_eqc(k, "status")) ok = mpr_str(r, &s) && pd_public_parse(s, &v->status);
        else if (pd_str_eqc(k, "text")) ok = mpr_str(r, &v->text);
        else if (pd_str_eqc(k, "emoji")) ok = mpr_str(r, &v->emoji);
        else if (pd_str_eqc(k, "expires_at")) { ok = mpr_int(r, &x); v->expires_at = x; }
        else if (pd_str_eqc(k, "last_seen")) { ok = mpr_int(r, &x); v->last_seen = x; }
        else if (pd_str_eqc(k, "ts")) { ok = mpr_int(r, &x); v->ts = x; }
        else if (pd_str_eqc(k, "devices")) { ok = mpr_int(r, &x) && x >= 0; v->devices = (uint32_t)x; }
        else if (pd_str_eqc(k, "ver")) { ok = mpr_int(r, &x) && x >= 0; v->ver = (uint64_t)x; }
        else if (pd_str_eqc(k, "stale")) ok = mpr_bool(r, &v->stale);
        else ok = mpr_skip(r);
        if (!ok) return bad_view(err, "bad field");
    }
    if (v->user.n == 0) return bad_view(err, "no user");
    return PD_OK;
}

pd_status pd_notification_decode(const void *buf, size_t len, pd_view *v, pd_err *err) {
    mp_reader r;
    mpr_init(&r, buf, len);
    pd_status s = pd_view_decode(&r, v, err);
    if (s == PD_OK && mpr_remaining(&r) != 0) return bad_view(err, "trailing bytes");
    return s;
}

/* `as_of` (and a devices reply's `stale`) come after the list, so that a
 * reader that stops at the list it wants still finds it where it was. */
static void pack_fresh(msgpack_packer *pk, const pd_reply_fresh *f, bool with_stale) {
    if (f == NULL) return;
    pd_pack_cstr(pk, "as_of");
    msgpack_pack_uint64(pk, f->as_of);
    if (with_stale && f->stale) {
        pd_pack_cstr(pk, "stale");
        msgpack_pack_true(pk);
    }
}

void pd_get_reply_begin(msgpack_packer *pk, uint32_t n, const pd_reply_fresh *f) {
    msgpack_pack_map(pk, 1 + (f != NULL));
    pd_pack_cstr(pk, "users");
    msgpack_pack_array(pk, n);
}

void pd_get_reply_user(msgpack_packer *pk, const pd_view *v) { pack_view(pk, v, false); }

void pd_get_reply_end(msgpack_packer *pk, const pd_reply_fresh *f) { pack_fresh(pk, f, false); }

/* ---- devices ------------------------------------------------------------------ */

void pd_devices_reply_begin(msgpack_packer *pk, pd_str user, uint32_t n,
                            const pd_reply_fresh *f) {
    msgpack_pack_map(pk, 2 + (f != NULL) + (f != NULL && f->stale));
    pd_pack_kv_str(pk, "user", user);
    pd_pack_cstr(pk, "devices");
    msgpack_pack_array(pk, n);
}

void pd_devices_reply_device(msgpack_packer *pk, const pd_device_view *d) {
    msgpack_pack_map(pk, 7 + (d->meta.n > 0));
    pd_pack_kv_str(pk, "conn", d->conn);
    pd_pack_kv_str(pk, "server", d->server);
    pd_pack_kv_str(pk, "node", d->node);
    pd_pack_kv_str(pk, "device", d->device);
    pd_pack_kv_str(pk, "state", pd_str_c(pd_devstate_name(d->state)));
    pd_pack_kv_int(pk, "connected_at", d->connected_at);
    pd_pack_kv_int(pk, "last_active", d->last_active);
    if (d->meta.n) {
        pd_pack_cstr(pk, "meta");
        msgpack_sbuffer_write(pk->data, d->meta.p, d->meta.n);
    }
}

void pd_devices_reply_end(msgpack_packer *pk, const pd_reply_fresh *f) {
    pack_fresh(pk, f, true);
}

static bool is_fresh_key(pd_str k) { return pd_str_eqc(k, "as_of") || pd_str_eqc(k, "stale"); }

/* Copies the map at r without its freshness keys; a map value under
 * `users` (the get entries) likewise, one level down. */
static bool copy_map_stripped(mp_reader *r, msgpack_packer *pk, bool top) {
    mp_reader count = *r;
    uint32_t n, keep = 0;
    pd_str k, v;
    if (!mpr_map(&count, &n)) return false;
    for (uint32_t i = 0; i < n; i++) {
        if (!mpr_str(&count, &k) || !mpr_skip(&count)) return false;
        keep += !is_fresh_key(k);
    }
    mpr_map(r, &n);
    msgpack_pack_map(pk, keep);
    for (uint32_t i = 0; i < n; i++) {
        mpr_str(r, &k);
        if (is_fresh_key(k)) {
            mpr_skip(r);
            continue;
        }
        pd_pack_str(pk, k);
        if (top && pd_str_eqc(k, "users") && mpr_peek(r) == MPR_ARRAY) {
            uint32_t m;
            mpr_array(r, &m);
            msgpack_pack_array(pk, m);
            for (uint32_t j = 0; j < m; j++) {
                if (mpr_peek(r) == MPR_MAP) {
                    if (!copy_map_stripped(r, pk, false)) return false;
                } else if (mpr_raw(r, &v)) {
                    msgpack_sbuffer_write(pk->data, v.p, v.n);
                } else {
                    return false;
                }
            }
        } else if (mpr_raw(r, &v)) {
            msgpack_sbuffer_write(pk->data, v.p, v.n);
        } else {
            return false;
        }
    }
    return true;
}

void pd_reply_strip_fresh(const void *buf, size_t len, msgpack_sbuffer *out) {
    mp_reader r;
    msgpack_packer pk;
    msgpack_sbuffer tmp;
    msgpack_sbuffer_init(&tmp);
    msgpack_packer_init(&pk, &tmp, msgpack_sbuffer_write);
    mpr_init(&r, buf, len);
    bool ok = mpr_peek(&r) == MPR_MAP && copy_map_stripped(&r, &pk, true) &&
              mpr_remaining(&r) == 0;
    if (ok) msgpack_sbuffer_write(out, tmp.data, tmp.size);
    else if (len) msgpack_sbuffer_write(out, buf, len);
    msgpack_sbuffer_destroy(&tmp);
}

pd_status pd_reply_top_decode(const void *buf, size_t len, const char *list, mp_reader *items,
                              uint32_t *n, pd_str *user, pd_reply_fresh *f, pd_err *err) {
    mp_reader r;
    uint32_t nk;
    bool found = false;
    pd_reply_fresh fr = {0, false};
    mpr_init(&r, buf, len);
    if (!mpr_map(&r, &nk)) return bad_view(err, "reply not a map");
    for (uint32_t i = 0; i < nk; i++) {
        pd_str k;
        int64_t x = 0;
        bool ok = pd_read_key(&r, &k);
        if (!ok) return bad_view(err, "bad key");
        if (pd_str_eqc(k, list) && !found) {
            *items = r;
            ok = mpr_array(items, n);
            found = ok;
            ok = ok && mpr_skip(&r);
        } else if (pd_str_eqc(k, "as_of")) {
            ok = mpr_int(&r, &x) && x >= 0;
            fr.as_of = (uint64_t)x;
        } else if (pd_str_eqc(k, "stale")) {
            ok = mpr_bool(&r, &fr.stale);
        } else if (pd_str_eqc(k, "user") && user != NULL) {
            ok = mpr_str(&r, user);
        } else {
            ok = mpr_skip(&r);
        }
        if (!ok) return bad_view(err, "bad reply field");
    }
    if (mpr_remaining(&r) != 0) return bad_view(err, "trailing bytes");
    if (!found) {
        pd_err_set(err, PD_EMISSING, "reply has no '%s'", list);
        return PD_EMISSING;
    }
    if (f) *f = fr;
    return PD_OK;
}

pd_status pd_device_view_decode(mp_reader *r, pd_device_view *d, pd_err *err) {
    uint32_t n;
    memset(d, 0, sizeof *d);
    if (!mpr_map(r, &n)) return bad_view(err, "device not a map");
    for (uint32_t i = 0; i < n; i++) {
        pd_str k, s;
        bool ok = pd_read_key(r, &k);
        if (!ok) return bad_view(err, "bad key");
        if (pd_str_eqc(k, "conn")) ok = mpr_str(r, &d->conn);
        else if (pd_str_eqc(k, "server")) ok = mpr_str(r, &d->server);
        else if (pd_str_eqc(k, "node")) ok = mpr_str(r, &d->node);
        else if (pd_str_eqc(k, "device")) ok = mpr_str(r, &d->device);
        else if (pd_str_eqc(k, "state")) ok = mpr_str(r, &s) && pd_devstate_parse(s, &d->state);
        else if (pd_str_eqc(k, "connected_at")) ok = mpr_int(r, &d->connected_at);
        else if (pd_str_eqc(k, "last_active")) ok = mpr_int(r, &d->last_active);
        else if (pd_str_eqc(k, "meta")) ok = mpr_raw(r, &d->meta);
        else ok = mpr_skip(r);
        if (!ok) return bad_view(err, "bad device field");
    }
    return PD_OK;
}

/* ---- online and cluster ----------------------------------------------------------- */

void pd_online_reply_begin(msgpack_packer *pk, uint32_t n, bool has_cursor) {
    msgpack_pack_map(pk, has_cursor ? 2 : 1);
    pd_pack_cstr(pk, "users");
    msgpack_pack_array(pk, n);
}

void pd_online_reply_user(msgpack_packer *pk, pd_str user) { pd_pack_str(pk, user); }

void pd_online_reply_end(msgpack_packer *pk, pd_str cursor) {
    if (cursor.n) pd_pack_kv_str(pk, "cursor", cursor);
}

void pd_cluster_reply_begin(msgpack_packer *pk, pd_str self, uint32_t n) {
    msgpack_pack_map(pk, 2);
    pd_pack_kv_str(pk, "node", self);
    pd_pack_cstr(pk, "nodes");
    msgpack_pack_array(pk, n);
}

void pd_cluster_reply_node(msgpack_packer *pk, const pd_node_view *nv) {
    msgpack_pack_map(pk, 6);
    pd_pack_kv_str(pk, "node", nv->node);
    pd_pack_cstr(pk, "alive");
    if (nv->alive) msgpack_pack_true(pk); else msgpack_pack_false(pk);
    pd_pack_cstr(pk, "vc");
    msgpack_pack_map(pk, nv->vc_n);
    for (uint32_t i = 0; i < nv->vc_n; i++) {
        pd_pack_str(pk, nv->vc_nodes[i]);
        msgpack_pack_uint64(pk, nv->vc_counts[i]);
    }
    pd_pack_kv_int(pk, "devices", (int64_t)nv->devices);
    pd_pack_kv_int(pk, "users", (int64_t)nv->users);
    pd_pack_kv_int(pk, "last_heartbeat", nv->last_heartbeat);
}

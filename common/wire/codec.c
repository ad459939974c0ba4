/* codec.c - the events of docs/protocol.md section 1, plus the ok/error replies
 * of section 7. Queries and views: codec_query.c; the readers, packers and
 * error helpers every codec shares: codec_util.c. */
#include "wire/codec.h"
#include <stdio.h>
#include <string.h>

/* CHECKLIST: keep in the order of pd_event_type. */
static const char *const event_names[PD_EV_COUNT] = {
    "connect", "disconnect", "activity", "idle", "status",
    "custom", "sync", "heartbeat", "shutdown",
};

const char *pd_event_type_name(pd_event_type t) {
    return (unsigned)t < PD_EV_COUNT ? event_names[t] : "?";
}

/* ---- decoding helpers ----------------------------------------------------- */

static pd_status read_id(mp_reader *r, pd_err *err, const char *field, pd_str *out) {
    if (!mpr_str(r, out)) return pd_rd_field_err(r, err, field, "a string");
    if (!pd_id_valid(out->p, out->n)) {
        pd_err_set(err, PD_EBADID, "field '%s' is not a valid id (1-128 bytes of "
                   "[A-Za-z0-9._:@=+-], no leading, trailing or doubled '.')", field);
        return PD_EBADID;
    }
    return PD_OK;
}

/* A text field: string (nil reads as ""), valid UTF-8, at most max bytes. */
static pd_status read_text(mp_reader *r, pd_err *err, const char *field, size_t max,
                           pd_str *out) {
    if (mpr_peek(r) == MPR_NIL) {
        mpr_nil(r);
        *out = (pd_str){"", 0};
        return PD_OK;
    }
    if (!mpr_str(r, out)) return pd_rd_field_err(r, err, field, "a string");
    if (out->n > max) {
        pd_err_set(err, PD_ETOOLARGE, "field '%s' is %u bytes, the limit is %zu",
                   field, out->n, max);
        return PD_ETOOLARGE;
    }
    if (!pd_text_valid(out->p, out->n)) {
        pd_err_set(err, PD_EBADVALUE, "field '%s' must be UTF-8 without control characters", field);
        return PD_EBADVALUE;
    }
    return PD_OK;
}

static pd_status read_device(mp_reader *r, pd_err *err, pd_str *out) {
    pd_status s = read_text(r, err, "device", PD_DEVICE_MAX, out);
    if (s == PD_OK && out->n == 0) {
        pd_err_set(err, PD_EBADVALUE, "field 'device' must not be empty");
        return PD_EBADVALUE;
    }
    return s;
}

static pd_status read_nonneg(mp_reader *r, pd_err *err, const char *field, int64_t *out) {
    if (!mpr_int(r, out)) return pd_rd_field_err(r, err, field, "an integer");
    if (*out < 0) {
        pd_err_set(err, PD_EBADVALUE, "field '%s' must not be negative", field);
        return PD_EBADVALUE;
    }
    return PD_OK;
}

/* Required fields of one entry of sync `conns`. */
enum { SC_CONN = 1 << 0, SC_USER = 1 << 1, SC_DEVICE = 1 << 2 };
static const char *const sync_conn_fields[] = {"conn", "user", "device"};
#define SC_ALL (SC_CONN | SC_USER | SC_DEVICE)

/* One entry of sync `conns`: {conn, user, device}. */
static pd_status read_sync_conn(mp_reader *r, pd_err *err, pd_sync_conn *c) {
    uint32_t n;
    pd_status s;
    unsigned seen = 0;
    if (!mpr_map(r, &n)) return pd_rd_field_err(r, err, "conns", "an array of maps");
    for (uint32_t i = 0; i < n; i++) {
        pd_str k;
        if (!pd_read_key(r, &k)) return pd_rd_field_err(r, err, "conns", "an array of maps");
        if (pd_str_eqc(k, "conn")) {
            if ((s = read_id(r, err, "conn", &c->conn)) != PD_OK) return s;
            seen |= SC_CONN;
        } else if (pd_str_eqc(k, "user")) {
            if ((s = read_id(r, err, "user", &c->user)) != PD_OK) return s;
            seen |= SC_USER;
        } else if (pd_str_eqc(k, "device")) {
            if ((s = read_device(r, err, &c->device)) != PD_OK) return s;
            seen |= SC_DEVICE;
        } else if (!mpr_skip(r)) {
            return pd_rd_field_err(r, err, "conns", "an array of maps");
        }
    }
    return pd_fields_missing(seen, SC_ALL, sync_conn_fields, 3, "a sync entry", err);
}

/* ---- events --------------------------------------------------------------- */

enum {
    F_TYPE = 1 << 0, F_SERVER = 1 << 1, F_CONN = 1 << 2, F_USER = 1 << 3,
    F_DEVICE = 1 << 4, F_STATUS = 1 << 5, F_TEXT = 1 << 6, F_CONNS = 1 << 7,
};
#define F_COUNT 8           /* fields with a bit */

/* Required fields per type, in the order they are reported when missing. */
static const unsigned required[PD_EV_COUNT] = {
    [PD_EV_CONNECT] = F_SERVER | F_CONN | F_USER | F_DEVICE,
    [PD_EV_DISCONNECT] = F_SERVER | F_CONN,
    [PD_EV_ACTIVITY] = F_SERVER | F_CONN,
    [PD_EV_IDLE] = F_SERVER | F_CONN,
    [PD_EV_STATUS] = F_USER | F_STATUS,
    [PD_EV_CUSTOM] = F_USER | F_TEXT,
    [PD_EV_SYNC] = F_SERVER | F_CONNS,
    [PD_EV_HEARTBEAT] = F_SERVER,
    [PD_EV_SHUTDOWN] = F_SERVER,
};

/* CHECKLIST: in the order of the F_* bits. */
static const char *const field_names[F_COUNT] = {
    "type", "server", "conn", "user", "device", "status", "text", "conns",
};

static pd_status read_event_field(mp_reader *r, pd_str k, pd_event *ev, unsigned *seen,
                                  pd_str *type, pd_err *err) {
    pd_status s = PD_OK;
    if (pd_str_eqc(k, "type")) {
        if (!mpr_str(r, type)) return pd_rd_field_err(r, err, "type", "a string");
        *seen |= F_TYPE;
    } else if (pd_str_eqc(k, "server")) {
        s = read_id(r, err, "server", &ev->server);
        *seen |= F_SERVER;
    } else if (pd_str_eqc(k, "conn")) {
        s = read_id(r, err, "conn", &ev->conn);
        *seen |= F_CONN;
    } else if (pd_str_eqc(k, "user")) {
        s = read_id(r, err, "user", &ev->user);
        *seen |= F_USER;
    } else if (pd_str_eqc(k, "device")) {
        s = read_device(r, err, &ev->device);
        *seen |= F_DEVICE;
    } else if (pd_str_eqc(k, "meta")) {
        if (mpr_peek(r) == MPR_NIL)
            return mpr_nil(r) ? PD_OK : pd_rd_field_err(r, err, "meta", "a map");
        if (mpr_peek(r) != MPR_MAP) {
            mpr_skip(r);
            pd_err_set(err, r->err ? r->err : PD_EBADVALUE, "field 'meta' must be a map");
            return err->code;
        }
        if (!mpr_raw(r, &ev->meta)) return pd_rd_field_err(r, err, "meta", "a map");
        if (ev->meta.n > PD_META_MAX) {
            pd_err_set(err, PD_ETOOLARGE, "field 'meta' is %u bytes encoded, the limit is %d",
                       ev->meta.n, PD_META_MAX);
            return PD_ETOOLARGE;
        }
    } else if (pd_str_eqc(k, "status")) {
        pd_str v;
        if (!mpr_str(r, &v)) return pd_rd_field_err(r, err, "status", "a string");
        if (!pd_chosen_parse(v, &ev->status)) {
            pd_err_set(err, PD_EBADVALUE, "field 'status' must be one of auto, away, busy, invisible");
            return PD_EBADVALUE;
        }
        *seen |= F_STATUS;
    } else if (pd_str_eqc(k, "text")) {
        s = read_text(r, err, "text", PD_TEXT_MAX, &ev->text);
        *seen |= F_TEXT;
    } else if (pd_str_eqc(k, "emoji")) {
        s = read_text(r, err, "emoji", PD_EMOJI_MAX, &ev->emoji);
    } else if (pd_str_eqc(k, "expires_at")) {
        if (mpr_peek(r) == MPR_NIL) { mpr_nil(r); ev->expires_at = 0; return PD_OK; }
        s = read_nonneg(r, err, "expires_at", &ev->expires_at);
    } else if (pd_str_eqc(k, "conns")) {
        pd_str raw;
        mp_reader sub;
        uint32_t n;
        if (!mpr_raw(r, &raw)) return pd_rd_field_err(r, err, "conns", "an array");
        mpr_init(&sub, raw.p, raw.n);
        if (!mpr_array(&sub, &n)) return pd_rd_field_err(&sub, err, "conns", "an array");
        for (uint32_t i = 0; i < n; i++) {
            pd_sync_conn c;
            if ((s = read_sync_conn(&sub, err, &c)) != PD_OK) return s;
        }
        ev->conns = raw;
        ev->nconns = n;
        *seen |= F_CONNS;
    } else if (pd_str_eqc(k, "sync_id")) {
        if (mpr_peek(r) == MPR_NIL) return mpr_nil(r) ? PD_OK : pd_rd_field_err(r, err, "sync_id", "an id");
        s = read_id(r, err, "sync_id", &ev->sync_id);
    } else if (pd_str_eqc(k, "part") || pd_str_eqc(k, "parts")) {
        bool whole = k.n == 5;
        const char *name = whole ? "parts" : "part";
        int64_t v = 0;
        if (mpr_peek(r) == MPR_NIL) return mpr_nil(r) ? PD_OK : pd_rd_field_err(r, err, name, "an integer");
        if ((s = read_nonneg(r, err, name, &v)) != PD_OK) return s;
        if (v < 1 || v > PD_SYNC_PARTS_MAX) {
            pd_err_set(err, PD_EBADVALUE, "field '%s' must be 1..%d", name, PD_SYNC_PARTS_MAX);
            return PD_EBADVALUE;
        }
        if (whole) ev->parts = (uint32_t)v;
        else ev->part = (uint32_t)v;
    } else if (pd_str_eqc(k, "ts")) {
        /* nil means absent, as for every optional field */
        if (mpr_peek(r) == MPR_NIL) { mpr_nil(r); ev->has_ts = false; ev->ts = 0; return PD_OK; }
        s = read_nonneg(r, err, "ts", &ev->ts);
        ev->has_ts = true;
    } else if (pd_str_eqc(k, "seq")) {
        if (mpr_peek(r) == MPR_NIL) { mpr_nil(r); ev->has_seq = false; ev->seq = 0; return PD_OK; }
        s = read_nonneg(r, err, "seq", &ev->seq);
        ev->has_seq = true;
        /* Beyond 2^53 a counter is no counter (and JSON clients lose it). */
        if (s == PD_OK && ev->seq > PD_SEQ_MAX) {
            pd_err_set(err, PD_EBADVALUE, "seq is above 2^53");
            s = PD_EBADVALUE;
        }
    } else if (pd_str_eqc(k, "trace")) {
        /* Optional, for benchmarks: carried into the delta (cluster.md). */
        int64_t t = 0;
        if (mpr_peek(r) == MPR_NIL) { mpr_nil(r); ev->has_trace = false; return PD_OK; }
        s = read_nonneg(r, err, "trace", &t);
        ev->trace = (uint64_t)t;
        ev->has_trace = true;
    } else if (!mpr_skip(r)) {
        return pd_rd_err(r, err);
    }
    return s;
}

/* A chunked sync names all three of sync_id, part and parts, or none. */
static pd_status check_parts(pd_event *ev, pd_err *err) {
    bool any = ev->sync_id.n || ev->part || ev->parts;
    if (!any || ev->type != PD_EV_SYNC) {
        ev->sync_id = (pd_str){NULL, 0}; /* meaningless beyond a sync: ignored */
        ev->part = ev->parts = 1;
        return PD_OK;
    }
    const char *missing = !ev->sync_id.n ? "sync_id" : !ev->part ? "part" : !ev->parts ? "parts"
                                                                                      : NULL;
    if (missing) {
        pd_err_set(err, PD_EMISSING, "a chunked sync lacks field '%s'", missing);
        return PD_EMISSING;
    }
    if (ev->part > ev->parts) {
        pd_err_set(err, PD_EBADVALUE, "sync part %u is beyond its %u parts", ev->part, ev->parts);
        return PD_EBADVALUE;
    }
    return PD_OK;
}

pd_status pd_event_decode(const void *buf, size_t len, pd_event *ev, pd_err *err) {
    mp_reader r;
    uint32_t n;
    unsigned seen = 0;
    pd_str type = {0};
    pd_status s;

    memset(ev, 0, sizeof *ev);
    mpr_init(&r, buf, len);
    if (mpr_peek(&r) != MPR_MAP) {
        if (!mpr_skip(&r) || mpr_remaining(&r) != 0 || len == 0)
            pd_err_set(err, PD_EBADMSGPACK, "message is not valid MessagePack");
        else
            pd_err_set(err, PD_EBADMSGPACK, "message must be a MessagePack map");
        return PD_EBADMSGPACK;
    }
    if (!mpr_map(&r, &n)) return pd_rd_err(&r, err);
    for (uint32_t i = 0; i < n; i++) {
        pd_str k;
        if (!pd_read_key(&r, &k)) return pd_rd_err(&r, err);
        if ((s = read_event_field(&r, k, ev, &seen, &type, err)) != PD_OK) return s;
    }
    if (mpr_remaining(&r) != 0) {
        pd_err_set(err, PD_EBADMSGPACK, "trailing bytes after the message");
        return PD_EBADMSGPACK;
    }
    if ((s = pd_fields_missing(seen, F_TYPE, field_names, F_COUNT, NULL, err)) != PD_OK) return s;
    int t = -1;
    for (int i = 0; i < PD_EV_COUNT; i++) {
        if (pd_str_eqc(type, event_names[i])) t = i;
    }
    if (t < 0) {
        /* The message goes into a reply string: echo the type only when it
         * is short printable UTF-8, never a cut or raw byte sequence. */
        if (type.n <= 32 && pd_text_valid(type.p, type.n))
            pd_err_set(err, PD_EBADTYPE, "unknown event type '%.*s'", (int)type.n, type.p);
        else
            pd_err_set(err, PD_EBADTYPE, "unknown event type");
        return PD_EBADTYPE;
    }
    ev->type = (pd_event_type)t;
    char what[32];
    snprintf(what, sizeof what, "%s event", event_names[t]);
    pd_status st = pd_fields_missing(seen, required[t], field_names, F_COUNT, what, err);
    return st != PD_OK ? st : check_parts(ev, err);
}

void pd_sync_iter_init(pd_sync_iter *it, const pd_event *ev) {
    mpr_init(&it->r, ev->conns.p, ev->conns.n);
    it->left = 0;
    if (ev->conns.n && !mpr_array(&it->r, &it->left)) it->left = 0;
}

bool pd_sync_iter_next(pd_sync_iter *it, pd_sync_conn *out) {
    if (it->left == 0) return false;
    it->left--;
    pd_err err;
    memset(out, 0, sizeof *out);
    return read_sync_conn(&it->r, &err, out) == PD_OK;
}

static void pack_sync_conn(msgpack_packer *pk, const pd_sync_conn *c) {
    msgpack_pack_map(pk, 3);
    pd_pack_kv_str(pk, "conn", c->conn);
    pd_pack_kv_str(pk, "user", c->user);
    pd_pack_kv_str(pk, "device", c->device);
}

void pd_event_encode(msgpack_sbuffer *sb, const pd_event *ev, const pd_sync_conn *sync,
                     uint32_t n) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    unsigned f = required[ev->type];
    bool emoji = ev->type == PD_EV_CUSTOM && ev->emoji.n > 0;
    bool expires = ev->type == PD_EV_CUSTOM && ev->expires_at > 0;
    bool meta = ev->type == PD_EV_CONNECT && ev->meta.n > 0;
    bool chunked = ev->type == PD_EV_SYNC && ev->sync_id.n > 0;
    uint32_t count = 1 + (uint32_t)__builtin_popcount(f) + emoji + expires + meta +
                     3u * chunked + ev->has_ts + ev->has_seq + ev->has_trace;
    msgpack_pack_map(&pk, count);
    pd_pack_kv_str(&pk, "type", pd_str_c(event_names[ev->type]));
    if (f & F_SERVER) pd_pack_kv_str(&pk, "server", ev->server);
    if (f & F_CONN) pd_pack_kv_str(&pk, "conn", ev->conn);
    if (f & F_USER) pd_pack_kv_str(&pk, "user", ev->user);
    if (f & F_DEVICE) pd_pack_kv_str(&pk, "device", ev->device);
    if (meta) {
        pd_pack_cstr(&pk, "meta");
        msgpack_sbuffer_write(sb, ev->meta.p, ev->meta.n);
    }
    if (f & F_STATUS) pd_pack_kv_str(&pk, "status", pd_str_c(pd_chosen_name(ev->status)));
    if (f & F_TEXT) pd_pack_kv_str(&pk, "text", ev->text);
    if (emoji) pd_pack_kv_str(&pk, "emoji", ev->emoji);
    if (expires) pd_pack_kv_int(&pk, "expires_at", ev->expires_at);
    if (f & F_CONNS) {
        pd_pack_cstr(&pk, "conns");
        if (sync) {
            msgpack_pack_array(&pk, n);
            for (uint32_t i = 0; i < n; i++) pack_sync_conn(&pk, &sync[i]);
        } else if (ev->conns.n) {
            msgpack_sbuffer_write(sb, ev->conns.p, ev->conns.n);
        } else {
            msgpack_pack_array(&pk, 0);
        }
    }
    if (chunked) {
        pd_pack_kv_str(&pk, "sync_id", ev->sync_id);
        pd_pack_kv_int(&pk, "part", ev->part);
        pd_pack_kv_int(&pk, "parts", ev->parts);
    }
    if (ev->has_ts) pd_pack_kv_int(&pk, "ts", ev->ts);
    if (ev->has_seq) pd_pack_kv_int(&pk, "seq", ev->seq);
    if (ev->has_trace) pd_pack_kv_int(&pk, "trace", (int64_t)ev->trace);
}

/* ---- replies -------------------------------------------------------------- */

void pd_reply_ok_encode(msgpack_sbuffer *sb) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    pd_pack_cstr(&pk, "ok");
    msgpack_pack_true(&pk);
}

void pd_reply_duplicate_encode(msgpack_sbuffer *sb) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    pd_pack_cstr(&pk, "ok");
    msgpack_pack_true(&pk);
    pd_pack_cstr(&pk, "duplicate");
    msgpack_pack_true(&pk);
}

void pd_reply_error_encode(msgpack_sbuffer *sb, pd_status code, const char *msg) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    pd_pack_cstr(&pk, "ok");
    msgpack_pack_false(&pk);
    pd_pack_kv_str(&pk, "error", pd_str_c(pd_status_code(code)));
    pd_pack_kv_str(&pk, "message", pd_str_c(msg ? msg : pd_status_str(code)));
}

void pd_reply_partial_encode(msgpack_sbuffer *sb, const char *msg, const pd_failure *f,
                             uint32_t n) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    pd_pack_cstr(&pk, "ok");
    msgpack_pack_false(&pk);
    pd_pack_kv_str(&pk, "error", pd_str_c(pd_status_code(PD_EPARTIAL)));
    pd_pack_kv_str(&pk, "message", pd_str_c(msg ? msg : pd_status_str(PD_EPARTIAL)));
    pd_pack_cstr(&pk, "failed");
    msgpack_pack_array(&pk, n);
    for (uint32_t k = 0; k < n; k++) {
        msgpack_pack_map(&pk, 3);
        if (f[k].conn.n) pd_pack_kv_str(&pk, "conn", f[k].conn);
        else pd_pack_kv_int(&pk, "i", f[k].i);
        pd_pack_kv_str(&pk, "error", pd_str_c(pd_status_code(f[k].code)));
        pd_pack_kv_str(&pk, "message", f[k].message);
    }
}

pd_status pd_status_from_code(pd_str code) {
    for (int s = PD_EBADMSGPACK; s < PD_STATUS_COUNT; s++) {
        if (pd_str_eqc(code, pd_status_code((pd_status)s))) return (pd_status)s;
    }
    return PD_EINTERNAL;
}

void pd_reply_failed_iter(mp_reader *it, const pd_reply *rep) {
    uint32_t n;
    mpr_init(it, rep->failed.p, rep->failed.n);
    if (rep->failed.n) mpr_array(it, &n);
}

bool pd_reply_next_failed(mp_reader *it, pd_failure *f) {
    uint32_t n;
    memset(f, 0, sizeof *f);
    f->i = -1;
    if (mpr_remaining(it) == 0 || !mpr_map(it, &n)) return false;
    for (uint32_t k = 0; k < n; k++) {
        pd_str key, v;
        if (!pd_read_key(it, &key)) return false;
        if (pd_str_eqc(key, "i")) {
            if (!mpr_int(it, &f->i)) return false;
        } else if (pd_str_eqc(key, "conn") || pd_str_eqc(key, "error") ||
                   pd_str_eqc(key, "message")) {
            if (!mpr_str(it, &v)) return false;
            if (key.p[0] == 'c') f->conn = v;
            else if (key.p[0] == 'e') f->code = pd_status_from_code(v);
            else f->message = v;
        } else if (!mpr_skip(it)) {
            return false;
        }
    }
    return true;
}

/* ---- batches ---------------------------------------------------------------- */

bool pd_batch_is(const void *buf, size_t len) {
    mp_reader r;
    uint32_t n;
    mpr_init(&r, buf, len);
    if (!mpr_map(&r, &n)) return false;
    for (uint32_t i = 0; i < n; i++) {
        pd_str k, v;
        if (!pd_read_key(&r, &k)) return false;
        if (pd_str_eqc(k, "type")) return mpr_str(&r, &v) && pd_str_eqc(v, "batch");
        if (!mpr_skip(&r)) return false;
    }
    return false;
}

pd_status pd_batch_decode(const void *buf, size_t len, uint32_t max, pd_batch *b, pd_err *err) {
    mp_reader r, sub;
    uint32_t n, m;
    bool has_events = false;
    memset(b, 0, sizeof *b);
    mpr_init(&r, buf, len);
    if (!mpr_map(&r, &n)) {
        pd_err_set(err, PD_EBADMSGPACK, "message must be a MessagePack map");
        return PD_EBADMSGPACK;
    }
    for (uint32_t i = 0; i < n; i++) {
        pd_str k;
        if (!pd_read_key(&r, &k)) goto bad;
        if (!pd_str_eqc(k, "events")) {
            if (!mpr_skip(&r)) goto bad;
            continue;
        }
        if (!mpr_raw(&r, &b->events)) goto bad;
        mpr_init(&sub, b->events.p, b->events.n);
        if (!mpr_array(&sub, &m)) return pd_rd_field_err(&sub, err, "events", "an array of maps");
        if (m > max) {
            pd_err_set(err, PD_ETOOLARGE, "batch of %u events; PRESENCE_MAX_BATCH is %u", m, max);
            return PD_ETOOLARGE;
        }
        for (uint32_t e = 0; e < m; e++) {
            if (mpr_peek(&sub) != MPR_MAP || !mpr_skip(&sub)) {
                pd_err_set(err, PD_EBADVALUE, "field 'events' must be an array of maps "
                           "(element %u is not)", e);
                return PD_EBADVALUE;
            }
        }
        b->n = m;
        has_events = true;
    }
    if (mpr_remaining(&r) != 0) {
        pd_err_set(err, PD_EBADMSGPACK, "trailing bytes after the message");
        return PD_EBADMSGPACK;
    }
    if (!has_events) {
        pd_err_set(err, PD_EMISSING, "batch event lacks field 'events'");
        return PD_EMISSING;
    }
    return PD_OK;
bad:
    pd_err_set(err, r.err ? r.err : PD_EBADMSGPACK, "%s", r.why);
    return err->code;
}

void pd_batch_iter_init(mp_reader *it, const pd_batch *b) {
    uint32_t n;
    mpr_init(it, b->events.p, b->events.n);
    if (b->events.n) mpr_array(it, &n);
}

bool pd_batch_next(mp_reader *it, pd_str *raw) {
    return mpr_remaining(it) > 0 && mpr_raw(it, raw);
}

void pd_batch_encode(msgpack_sbuffer *sb, const pd_str *events, uint32_t n) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    pd_pack_kv_str(&pk, "type", pd_str_c("batch"));
    pd_pack_cstr(&pk, "events");
    msgpack_pack_array(&pk, n);
    for (uint32_t i = 0; i < n; i++) msgpack_sbuffer_write(sb, events[i].p, events[i].n);
}

static void copy_str(char *dst, size_t cap, pd_str s) {
    size_t n = s.n < cap - 1 ? s.n : cap - 1;
    memcpy(dst, s.p, n);
    dst[n] = '\0';
}

pd_status pd_reply_decode(const void *buf, size_t len, pd_reply *out) {
    mp_reader r;
    uint32_t n;
    bool has_ok = false;
    memset(out, 0, sizeof *out);
    mpr_init(&r, buf, len);
    if (!mpr_map(&r, &n)) return PD_EBADMSGPACK;
    for (uint32_t i = 0; i < n; i++) {
        pd_str k, v;
        if (!pd_read_key(&r, &k)) return PD_EBADMSGPACK;
        if (pd_str_eqc(k, "ok")) {
            if (!mpr_bool(&r, &out->ok)) return PD_EBADMSGPACK;
            has_ok = true;
        } else if (pd_str_eqc(k, "duplicate")) {
            if (!mpr_bool(&r, &out->duplicate)) return PD_EBADMSGPACK;
        } else if (pd_str_eqc(k, "error") || pd_str_eqc(k, "message")) {
            if (!mpr_str(&r, &v)) return PD_EBADMSGPACK;
            if (k.n == 5) copy_str(out->code, sizeof out->code, v);
            else copy_str(out->message, sizeof out->message, v);
        } else if (pd_str_eqc(k, "failed")) {
            mp_reader sub;
            if (!mpr_raw(&r, &out->failed)) return PD_EBADMSGPACK;
            mpr_init(&sub, out->failed.p, out->failed.n);
            if (!mpr_array(&sub, &out->nfailed)) return PD_EBADMSGPACK;
        } else if (!mpr_skip(&r)) {
            return PD_EBADMSGPACK;
        }
    }
    return has_ok && mpr_remaining(&r) == 0 ? PD_OK : PD_EBADMSGPACK;
}

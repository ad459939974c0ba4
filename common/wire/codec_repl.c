/* codec_repl.c - deltas, heartbeats and state transfer between nodes (see
 * codec_repl.h and schemas/cluster.md). Ops are compact arrays:
 *   ADD    [0, server, conn, user, label, state, connected_at, last_active, claim(, meta)]
 *   REMOVE [1, server, conn, claim(, at(, ver(, user))))]
 *   STATE  [2, server, conn, claim, state, last_active(, ver)]
 *   CHOSEN [3, user, chosen, hlc, writer(, frozen last_seen)]
 *   CUSTOM [4, user, text, emoji, expires_at, hlc, writer]
 *   SEEN   [5, user, at, hlc, writer]
 *   SYNCED [6, server, hlc, writer]
 *   VER    [7, user, ver, writer]
 * The elements in parentheses are optional: an op without them is the one
 * of earlier nodes. */
#include "wire/codec_repl.h"
#include <string.h>

static const uint8_t op_arity[] = {9, 4, 6, 5, 7, 5, 4, 4};
/* Arity with the optional elements, if the kind has some (REMOVE has three:
 * at, ver, then user; a REMOVE with ver writes at too, 0 when not said). */
static const uint8_t op_arity_opt[] = {10, 7, 7, 6, 7, 5, 4, 4};

static uint32_t arity_of(const pd_op *op) {
    if (op->kind == PD_OP_REMOVE)
        return op->user.n > 0 && op->ver > 0 ? 7u : op->ver > 0 ? 6u : op->at > 0 ? 5u : 4u;
    bool opt = (op->kind == PD_OP_ADD && op->meta.n > 0) ||
               (op->kind == PD_OP_STATE && op->ver > 0) ||
               (op->kind == PD_OP_CHOSEN && op->at > 0);
    return opt ? op_arity_opt[op->kind] : op_arity[op->kind];
}

/* ---- ops ---------------------------------------------------------------------- */

/* ADD ops written straight into the sbuffer behind pk (every packer of
 * ops here writes to one: see the meta below) when it has room for the
 * largest encoding: a restart republishes a million of them, and a
 * snapshot holds as many, where msgpack-c's packer makes a call and a
 * capacity check per field. The bytes are the ones msgpack-c writes (the
 * same smallest encodings; test_codec_repl compares them). */
static uint8_t *put_u(uint8_t *p, uint64_t v) {
    if (v < 128) { *p++ = (uint8_t)v; return p; }
    if (v >= (1ull << 32)) { /* times and HLCs: the common case */
        uint64_t be = v;
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_BIG_ENDIAN__
        be = __builtin_bswap64(v);
#endif
        *p++ = 0xcf;
        memcpy(p, &be, 8);
        return p + 8;
    }
    int n = v < (1ull << 8) ? 1 : v < (1ull << 16) ? 2 : 4;
    *p++ = n == 1 ? 0xcc : n == 2 ? 0xcd : 0xce;
    for (int i = n - 1; i >= 0; i--) *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

static uint8_t *put_i(uint8_t *p, int64_t v) {
    if (v >= -32) return v < 0 ? (*p++ = (uint8_t)v, p) : put_u(p, (uint64_t)v);
    int n = v >= -(1ll << 7) ? 1 : v >= -(1ll << 15) ? 2 : v >= -(1ll << 31) ? 4 : 8;
    *p++ = n == 1 ? 0xd0 : n == 2 ? 0xd1 : n == 4 ? 0xd2 : 0xd3;
    for (int i = n - 1; i >= 0; i--) *p++ = (uint8_t)((uint64_t)v >> (8 * i));
    return p;
}

static uint8_t *put_s(uint8_t *p, pd_str s) { /* ids and labels: under 256 bytes */
    if (s.n < 32) *p++ = (uint8_t)(0xa0 | s.n);
    else { *p++ = 0xd9; *p++ = (uint8_t)s.n; }
    if (s.n) memcpy(p, s.p, s.n);
    return p + s.n;
}

static bool encode_add_direct(msgpack_packer *pk, const pd_op *op, uint32_t arity) {
    msgpack_sbuffer *sb = pk->data;
    size_t need = 2 + 4 * 2 + 2 + 3 * 9 + (size_t)op->server.n + op->conn.n + op->user.n +
                  op->label.n + op->meta.n;
    if (op->server.n > 255 || op->conn.n > 255 || op->user.n > 255 || op->label.n > 255 ||
        sb->alloc - sb->size < need)
        return false;
    uint8_t *p = (uint8_t *)sb->data + sb->size;
    *p++ = (uint8_t)(0x90 | arity);
    *p++ = (uint8_t)PD_OP_ADD;
    p = put_s(p, op->server);
    p = put_s(p, op->conn);
    p = put_s(p, op->user);
    p = put_s(p, op->label);
    p = put_u(p, (uint8_t)op->state);
    p = put_i(p, op->connected_at);
    p = put_i(p, op->last_active);
    p = put_u(p, op->hlc);
    if (arity > op_arity[PD_OP_ADD]) {
        memcpy(p, op->meta.p, op->meta.n);
        p += op->meta.n;
    }
    sb->size = (size_t)(p - (uint8_t *)sb->data);
    return true;
}

void pd_op_encode(msgpack_packer *pk, const pd_op *op) {
    uint32_t arity = arity_of(op);
    if (op->kind == PD_OP_ADD && encode_add_direct(pk, op, arity)) return;
    msgpack_pack_array(pk, arity);
    msgpack_pack_uint8(pk, (uint8_t)op->kind);
    switch (op->kind) {
    case PD_OP_ADD:
        pd_pack_str(pk, op->server);
        pd_pack_str(pk, op->conn);
        pd_pack_str(pk, op->user);
        pd_pack_str(pk, op->label);
        msgpack_pack_uint8(pk, (uint8_t)op->state);
        msgpack_pack_int64(pk, op->connected_at);
        msgpack_pack_int64(pk, op->last_active);
        msgpack_pack_uint64(pk, op->hlc);
        if (arity > op_arity[op->kind]) msgpack_sbuffer_write(pk->data, op->meta.p, op->meta.n);
        break;
    case PD_OP_REMOVE:
        pd_pack_str(pk, op->server);
        pd_pack_str(pk, op->conn);
        msgpack_pack_uint64(pk, op->hlc);
        if (arity > op_arity[op->kind]) msgpack_pack_int64(pk, op->at);
        if (arity > op_arity[op->kind] + 1u) msgpack_pack_uint64(pk, op->ver);
        if (arity > op_arity[op->kind] + 2u) pd_pack_str(pk, op->user);
        break;
    case PD_OP_STATE:
        pd_pack_str(pk, op->server);
        pd_pack_str(pk, op->conn);
        msgpack_pack_uint64(pk, op->hlc);
        msgpack_pack_uint8(pk, (uint8_t)op->state);
        msgpack_pack_int64(pk, op->last_active);
        if (arity > op_arity[op->kind]) msgpack_pack_uint64(pk, op->ver);
        break;
    case PD_OP_CHOSEN:
        pd_pack_str(pk, op->user);
        msgpack_pack_uint8(pk, (uint8_t)op->chosen);
        msgpack_pack_uint64(pk, op->hlc);
        pd_pack_str(pk, op->writer);
        if (arity > op_arity[op->kind]) msgpack_pack_int64(pk, op->at);
        break;
    case PD_OP_CUSTOM:
        pd_pack_str(pk, op->user);
        pd_pack_str(pk, op->text);
        pd_pack_str(pk, op->emoji);
        msgpack_pack_int64(pk, op->expires_at);
        msgpack_pack_uint64(pk, op->hlc);
        pd_pack_str(pk, op->writer);
        break;
    case PD_OP_SEEN:
        pd_pack_str(pk, op->user);
        msgpack_pack_int64(pk, op->at);
        msgpack_pack_uint64(pk, op->hlc);
        pd_pack_str(pk, op->writer);
        break;
    case PD_OP_SYNCED:
        pd_pack_str(pk, op->server);
        msgpack_pack_uint64(pk, op->hlc);
        pd_pack_str(pk, op->writer);
        break;
    case PD_OP_VER:
        pd_pack_str(pk, op->user);
        msgpack_pack_uint64(pk, op->hlc);
        pd_pack_str(pk, op->writer);
        break;
    }
}

/* check false: the bytes were validated before (a snapshot read a second
 * time, see pd_op_read_checked): the lengths are still checked, the
 * characters not again. */
static bool rd_text(mp_reader *r, pd_str *s, uint32_t max, bool nonempty, bool check) {
    if (!mpr_str(r, s)) return false;
    if (s->n > max || (nonempty && s->n == 0) || (check && !pd_text_valid(s->p, s->n)))
        return mpr_fail(r, PD_EBADVALUE, "bad text in op");
    return true;
}

static bool rd_id(mp_reader *r, pd_str *s, bool check) {
    if (check) return pd_rd_id(r, s);
    if (!mpr_str(r, s)) return false;
    return (s->n > 0 && s->n <= PD_ID_MAX) || mpr_fail(r, PD_EBADID, "bad id");
}

static bool rd_small(mp_reader *r, unsigned max, unsigned *v) {
    uint64_t x = 0;
    if (!pd_rd_max(r, max, &x)) return false;
    *v = (unsigned)x;
    return true;
}

static bool rd_i64(mp_reader *r, int64_t *v) { return mpr_int(r, v); }

/* A time (ms since the epoch): positive. */
static bool rd_time(mp_reader *r, int64_t *v) {
    if (!mpr_int(r, v)) return false;
    return *v > 0 || mpr_fail(r, PD_EBADVALUE, "bad time in op");
}

/* A connect's meta: a map of at most PD_META_MAX encoded bytes, kept raw. */
static bool rd_meta(mp_reader *r, pd_str *meta) {
    if (mpr_peek(r) != MPR_MAP) return r->err ? false : mpr_fail(r, PD_EBADVALUE, "bad meta in op");
    if (!mpr_raw(r, meta)) return false;
    if (meta->n == 0 || meta->n > PD_META_MAX) return mpr_fail(r, PD_EBADVALUE, "bad meta in op");
    return true;
}

/* Reads and validates one op (check: see rd_text). */
static bool read_op(mp_reader *r, pd_op *op, bool check) {
    uint32_t n;
    unsigned kind = 0, small = 0;
    memset(op, 0, sizeof *op);
    if (!mpr_array(r, &n) || n < 1 || !rd_small(r, PD_OP_VER, &kind))
        return r->err ? false : mpr_fail(r, PD_EBADVALUE, "bad op");
    /* at without ver, or at and ver without user */
    bool remove_at = kind == PD_OP_REMOVE && (n == op_arity[kind] + 1u || n == op_arity[kind] + 2u);
    if (n != op_arity[kind] && n != op_arity_opt[kind] && !remove_at)
        return mpr_fail(r, PD_EBADVALUE, "bad op arity");
    bool opt = n > op_arity[kind];
    op->kind = (pd_op_kind)kind;
    switch (op->kind) {
    case PD_OP_ADD:
        if (!rd_id(r, &op->server, check) || !rd_id(r, &op->conn, check) ||
            !rd_id(r, &op->user, check) || !rd_text(r, &op->label, PD_DEVICE_MAX, true, check) || !rd_small(r, PD_DEV_IDLE, &small) ||
            !rd_i64(r, &op->connected_at) || !rd_i64(r, &op->last_active) ||
            !pd_rd_u64(r, &op->hlc))
            return false;
        op->state = (pd_devstate)small;
        return !opt || rd_meta(r, &op->meta);
    case PD_OP_REMOVE:
        if (!rd_id(r, &op->server, check) || !rd_id(r, &op->conn, check) ||
            !pd_rd_u64(r, &op->hlc))
            return false;
        if (n == 5u) return rd_time(r, &op->at);
        if (n >= 6u) /* with ver, at may be 0: not said */
            return rd_i64(r, &op->at) && (op->at >= 0 || mpr_fail(r, PD_EBADVALUE, "bad time in op")) &&
                   pd_rd_u64(r, &op->ver) && (n == 6u || rd_id(r, &op->user, check));
        return true;
    case PD_OP_STATE:
        if (!rd_id(r, &op->server, check) || !rd_id(r, &op->conn, check) || !pd_rd_u64(r, &op->hlc) ||
            !rd_small(r, PD_DEV_IDLE, &small) || !rd_i64(r, &op->last_active) ||
            (opt && !pd_rd_u64(r, &op->ver)))
            return false;
        op->state = (pd_devstate)small;
        return true;
    case PD_OP_CHOSEN:
        if (!rd_id(r, &op->user, check) || !rd_small(r, PD_CHOSEN_INVISIBLE, &small) ||
            !pd_rd_u64(r, &op->hlc) || !rd_id(r, &op->writer, check) || (opt && !rd_time(r, &op->at)))
            return false;
        op->chosen = (pd_chosen)small;
        return true;
    case PD_OP_CUSTOM:
        return rd_id(r, &op->user, check) && rd_text(r, &op->text, PD_TEXT_MAX, false, check) &&
               rd_text(r, &op->emoji, PD_EMOJI_MAX, false, check) && rd_i64(r, &op->expires_at) &&
               pd_rd_u64(r, &op->hlc) && rd_id(r, &op->writer, check);
    case PD_OP_SEEN:
        return rd_id(r, &op->user, check) && rd_time(r, &op->at) && pd_rd_u64(r, &op->hlc) &&
               rd_id(r, &op->writer, check);
    case PD_OP_SYNCED:
        return rd_id(r, &op->server, check) && pd_rd_u64(r, &op->hlc) &&
               rd_id(r, &op->writer, check);
    case PD_OP_VER:
        return rd_id(r, &op->user, check) && pd_rd_u64(r, &op->hlc) &&
               rd_id(r, &op->writer, check);
    }
    return false;
}

bool pd_op_read(mp_reader *r, pd_op *op) { return read_op(r, op, true); }

bool pd_op_read_checked(mp_reader *r, pd_op *op) { return read_op(r, op, false); }

static bool check_op(mp_reader *r, void *ud) {
    uint64_t *hlc_max = ud;
    pd_op op;
    if (!read_op(r, &op, true)) return false;
    if (op.hlc > *hlc_max) *hlc_max = op.hlc;
    return true;
}

/* Validates every op of an encoded array, noting the largest hlc. */
static bool read_ops(mp_reader *r, pd_ops *ops) {
    pd_str raw;
    uint32_t n;
    uint64_t hlc_max = 0;
    if (!pd_rd_array(r, &raw, &n, check_op, &hlc_max, NULL)) return false;
    ops->raw = raw;
    ops->n = n;
    ops->hlc_max = hlc_max;
    return true;
}

void pd_ops_iter_init(pd_ops_iter *it, const pd_ops *ops) {
    mpr_init(&it->r, ops->raw.p, ops->raw.n);
    it->left = 0;
    if (ops->raw.n) mpr_array(&it->r, &it->left);
}

/* The ops were validated when their message was decoded (read_ops): the
 * characters of their ids and texts are not checked again. */
bool pd_ops_next(pd_ops_iter *it, pd_op *op) {
    if (it->left == 0) return false;
    it->left--;
    return read_op(&it->r, op, false);
}

/* ---- message maps ------------------------------------------------------------------ */

/* Reads one field of a message into out, ORing its bit into *seen if it
 * is a required one; a key it does not know is skipped. */
typedef pd_status (*field_fn)(mp_reader *r, pd_str key, void *out, unsigned *seen, pd_err *err);

/* Walks a top-level map, handing each key to fn; checks `v`, trailing
 * bytes, and that every field of `required` was there (names[b] is the
 * field of bit b). */
static pd_status read_map(const void *buf, size_t len, field_fn fn, void *out, unsigned required,
                          const char *const names[], size_t nnames, pd_err *err) {
    mp_reader r;
    uint32_t n;
    unsigned seen = 0;
    bool has_v = false;
    pd_status s;
    mpr_init(&r, buf, len);
    if (mpr_peek(&r) != MPR_MAP) {
        pd_err_set(err, PD_EBADMSGPACK, "message must be a MessagePack map");
        return PD_EBADMSGPACK;
    }
    if (!mpr_map(&r, &n)) return pd_rd_err(&r, err);
    for (uint32_t i = 0; i < n; i++) {
        pd_str k;
        if (!pd_read_key(&r, &k)) return pd_rd_err(&r, err);
        if (pd_str_eqc(k, "v")) {
            int64_t v;
            if (!mpr_int(&r, &v)) return pd_rd_err(&r, err);
            if (v != PD_REPL_VERSION) {
                pd_err_set(err, PD_EBADVALUE, "unsupported version %lld", (long long)v);
                return PD_EBADVALUE;
            }
            has_v = true;
        } else if ((s = fn(&r, k, out, &seen, err)) != PD_OK) {
            return s;
        }
    }
    if (mpr_remaining(&r) != 0) {
        pd_err_set(err, PD_EBADMSGPACK, "trailing bytes after the message");
        return PD_EBADMSGPACK;
    }
    if (!has_v) {
        pd_err_set(err, PD_EMISSING, "missing field 'v'");
        return PD_EMISSING;
    }
    return pd_fields_missing(seen, required, names, nnames, NULL, err);
}

/* A field's reader's outcome as a field_fn's. */
static pd_status field_done(mp_reader *r, bool ok, pd_err *err) {
    return ok ? PD_OK : pd_rd_err(r, err);
}

/* ---- delta ------------------------------------------------------------------------------ */

static void pack_ids(msgpack_packer *pk, const char *k, const uint64_t *ids, uint32_t n) {
    pd_pack_cstr(pk, k);
    msgpack_pack_array(pk, n);
    for (uint32_t i = 0; i < n; i++) msgpack_pack_uint64(pk, ids[i]);
}

void pd_delta_encode_traced(msgpack_sbuffer *sb, pd_str node, uint64_t inc, uint64_t seq,
                            const void *ops_buf, size_t ops_len, uint32_t nops,
                            const uint64_t *trace, uint32_t ntrace) {
    pd_delta_encode_at(sb, node, inc, seq, ops_buf, ops_len, nops, trace, ntrace, 0);
}

void pd_delta_encode_at(msgpack_sbuffer *sb, pd_str node, uint64_t inc, uint64_t seq,
                        const void *ops_buf, size_t ops_len, uint32_t nops,
                        const uint64_t *trace, uint32_t ntrace, uint64_t at) {
    pd_delta_encode_carry(sb, node, inc, seq, ops_buf, ops_len, nops, trace, ntrace, at, NULL);
}

void pd_delta_encode_carry(msgpack_sbuffer *sb, pd_str node, uint64_t inc, uint64_t seq,
                           const void *ops_buf, size_t ops_len, uint32_t nops,
                           const uint64_t *trace, uint32_t ntrace, uint64_t at,
                           const pd_delta_carry *c) {
    msgpack_packer pk;
    uint64_t carries = c ? c->carries : 0;
    const pd_restored *rs = c ? c->restored : NULL;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5u + (ntrace ? 1u : 0u) + (at ? 1u : 0u) + (carries ? 1u : 0u) +
                              (rs ? 1u : 0u));
    pd_pack_kv_u64(&pk, "v", PD_REPL_VERSION);
    pd_pack_kv_str(&pk, "node", node);
    pd_pack_kv_u64(&pk, "inc", inc);
    pd_pack_kv_u64(&pk, "seq", seq);
    pd_pack_cstr(&pk, "ops");
    msgpack_pack_array(&pk, nops);
    if (ops_len) msgpack_sbuffer_write(sb, ops_buf, ops_len);
    if (ntrace) pack_ids(&pk, "trace", trace, ntrace);
    if (at) pd_pack_kv_u64(&pk, "at", at);
    if (carries) pd_pack_kv_u64(&pk, "carries", carries);
    if (rs) {
        pd_pack_cstr(&pk, "restored");
        msgpack_pack_map(&pk, 3);
        pd_pack_kv_u64(&pk, "inc", rs->inc);
        pd_pack_kv_u64(&pk, "devices", rs->devices);
        pd_pack_kv_u64(&pk, "digest", rs->digest);
    }
}

void pd_delta_encode(msgpack_sbuffer *sb, pd_str node, uint64_t inc, uint64_t seq,
                     const void *ops_buf, size_t ops_len, uint32_t nops) {
    pd_delta_encode_traced(sb, node, inc, seq, ops_buf, ops_len, nops, NULL, 0);
}

/* An array of at most PD_TRACE_MAX u64 ids, kept raw. */
static bool read_trace(mp_reader *r, pd_str *raw, uint32_t *n) {
    mp_reader sub;
    uint64_t id;
    if (!mpr_raw(r, raw)) return false;
    mpr_init(&sub, raw->p, raw->n);
    if (!mpr_array(&sub, n)) return mpr_fail(r, PD_EBADVALUE, "trace must be an array");
    if (*n > PD_TRACE_MAX) return mpr_fail(r, PD_ETOOLARGE, "too many trace ids");
    for (uint32_t i = 0; i < *n; i++) {
        if (!pd_rd_u64(&sub, &id)) return mpr_fail(r, PD_EBADVALUE, "bad trace id");
    }
    return true;
}

uint32_t pd_delta_trace_ids(const pd_delta *d, uint64_t *out, uint32_t cap) {
    mp_reader r;
    uint32_t n = 0, k = 0;
    if (d->ntrace == 0) return 0;
    mpr_init(&r, d->trace.p, d->trace.n);
    if (!mpr_array(&r, &n)) return 0;
    while (k < n && k < cap && pd_rd_u64(&r, &out[k])) k++;
    return k;
}

void pd_trace_report_encode(msgpack_sbuffer *sb, pd_str node, uint64_t at_ns,
                            const uint64_t *trace, uint32_t ntrace) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    pd_pack_kv_u64(&pk, "v", PD_REPL_VERSION);
    pd_pack_kv_str(&pk, "node", node);
    pd_pack_kv_u64(&pk, "at", at_ns);
    pack_ids(&pk, "trace", trace, ntrace);
}

/* A delta's "restored": {inc, devices, digest}, all three. */
enum { RF_INC = 1 << 0, RF_DEVICES = 1 << 1, RF_DIGEST = 1 << 2 };
static bool read_restored(mp_reader *r, pd_restored *rs) {
    uint32_t n;
    unsigned seen = 0;
    pd_str k;
    if (!mpr_map(r, &n)) return mpr_fail(r, PD_EBADVALUE, "restored must be a map");
    for (uint32_t i = 0; i < n; i++) {
        bool ok;
        if (!mpr_str(r, &k)) return false;
        if (pd_str_eqc(k, "inc")) { seen |= RF_INC; ok = pd_rd_u64(r, &rs->inc); }
        else if (pd_str_eqc(k, "devices")) { seen |= RF_DEVICES; ok = pd_rd_u64(r, &rs->devices); }
        else if (pd_str_eqc(k, "digest")) { seen |= RF_DIGEST; ok = pd_rd_u64(r, &rs->digest); }
        else ok = mpr_skip(r);
        if (!ok) return false;
    }
    if (seen != (RF_INC | RF_DEVICES | RF_DIGEST) || rs->inc == 0)
        return mpr_fail(r, PD_EBADVALUE, "restored needs inc, devices and digest");
    return true;
}

/* Required fields of a delta. */
enum { DF_NODE = 1 << 0, DF_INC = 1 << 1, DF_SEQ = 1 << 2, DF_OPS = 1 << 3 };
static const char *const delta_fields[] = {"node", "inc", "seq", "ops"};
#define DF_ALL (DF_NODE | DF_INC | DF_SEQ | DF_OPS)

static pd_status delta_field(mp_reader *r, pd_str k, void *out, unsigned *seen, pd_err *err) {
    pd_delta *d = out;
    bool ok;
    if (pd_str_eqc(k, "node")) { *seen |= DF_NODE; ok = pd_rd_id(r, &d->node); }
    else if (pd_str_eqc(k, "inc")) { *seen |= DF_INC; ok = pd_rd_u64(r, &d->inc); }
    else if (pd_str_eqc(k, "seq")) { *seen |= DF_SEQ; ok = pd_rd_u64(r, &d->seq); }
    else if (pd_str_eqc(k, "ops")) { *seen |= DF_OPS; ok = read_ops(r, &d->ops); }
    else if (pd_str_eqc(k, "trace")) ok = read_trace(r, &d->trace, &d->ntrace);
    else if (pd_str_eqc(k, "at")) ok = pd_rd_u64(r, &d->at);
    else if (pd_str_eqc(k, "carries")) ok = pd_rd_u64(r, &d->carries);
    else if (pd_str_eqc(k, "restored")) ok = d->has_restored = read_restored(r, &d->restored);
    else ok = mpr_skip(r);
    return field_done(r, ok, err);
}

pd_status pd_delta_decode(const void *buf, size_t len, pd_delta *d, pd_err *err) {
    memset(d, 0, sizeof *d);
    return read_map(buf, len, delta_field, d, DF_ALL, delta_fields, 4, err);
}

/* ---- heartbeat ------------------------------------------------------------------------------ */

void pd_heartbeat_encode(msgpack_sbuffer *sb, const pd_heartbeat *hb) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    /* The dashboard's keys only when set: older heartbeats stay byte for byte. */
    msgpack_pack_map(&pk, 11 + (hb->events != 0) + (hb->notifications != 0) +
                              (hb->snapshot_at != 0) + (hb->nservers != 0) +
                              (hb->carries != 0) + (hb->nkept != 0));
    pd_pack_kv_u64(&pk, "v", PD_REPL_VERSION);
    pd_pack_kv_str(&pk, "node", hb->node);
    pd_pack_kv_u64(&pk, "inc", hb->inc);
    pd_pack_kv_u64(&pk, "seq", hb->seq);
    pd_pack_kv_u64(&pk, "hlc", hb->hlc);
    pd_pack_kv_u64(&pk, "wall", hb->wall);
    if (hb->events) pd_pack_kv_u64(&pk, "events", hb->events);
    if (hb->notifications) pd_pack_kv_u64(&pk, "notifications", hb->notifications);
    if (hb->snapshot_at) pd_pack_kv_u64(&pk, "snapshot_at", hb->snapshot_at);
    if (hb->nservers) {
        pd_pack_cstr(&pk, "servers");
        msgpack_pack_array(&pk, hb->nservers);
        for (uint32_t i = 0; i < hb->nservers; i++) {
            msgpack_pack_array(&pk, 4);
            pd_pack_str(&pk, hb->servers[i].id);
            msgpack_pack_uint32(&pk, hb->servers[i].devices);
            msgpack_pack_int64(&pk, hb->servers[i].last_msg);
            if (hb->servers[i].watched) msgpack_pack_true(&pk);
            else msgpack_pack_false(&pk);
        }
    }
    pd_pack_kv_bool(&pk, "leaving", hb->leaving);
    pd_pack_kv_bool(&pk, "ready", hb->ready);
    pd_pack_kv_u64(&pk, "devices", hb->devices);
    pd_pack_kv_u64(&pk, "users", hb->users);
    pd_pack_cstr(&pk, "vc");
    pd_vc_encode(&pk, hb->vc, hb->nvc);
    if (hb->carries) pd_pack_kv_u64(&pk, "carries", hb->carries);
    if (hb->nkept) {
        pd_pack_cstr(&pk, "kept");
        pd_vc_encode(&pk, hb->kept, hb->nkept);
    }
}

/* ---- vector clocks ------------------------------------------------------------------------ */

void pd_vc_encode(msgpack_packer *pk, const pd_vc_entry *vc, uint32_t n) {
    msgpack_pack_array(pk, n);
    for (uint32_t i = 0; i < n; i++) {
        msgpack_pack_array(pk, 3);
        pd_pack_str(pk, vc[i].node);
        msgpack_pack_uint64(pk, vc[i].inc);
        msgpack_pack_uint64(pk, vc[i].seq);
    }
}

bool pd_vc_read(mp_reader *r, pd_vc_entry *vc, uint32_t *nvc) {
    uint32_t n, k;
    if (!mpr_array(r, &n)) return false;
    if (n > PD_VC_MAX) return mpr_fail(r, PD_ETOOLARGE, "vector clock too long");
    for (uint32_t i = 0; i < n; i++) {
        pd_vc_entry *e = &vc[i];
        if (!mpr_array(r, &k)) return false;
        if (k != 3) return mpr_fail(r, PD_EBADVALUE, "bad vector clock entry");
        if (!pd_rd_id(r, &e->node) || !pd_rd_u64(r, &e->inc) || !pd_rd_u64(r, &e->seq))
            return false;
    }
    *nvc = n;
    return true;
}

static bool read_servers(mp_reader *r, pd_heartbeat *hb) {
    uint32_t n, k;
    uint64_t devices = 0;
    if (!mpr_array(r, &n)) return false;
    if (n > PD_HB_SERVERS_MAX) return mpr_fail(r, PD_ETOOLARGE, "too many servers");
    for (uint32_t i = 0; i < n; i++) {
        pd_server_view *s = &hb->servers[i];
        if (!mpr_array(r, &k)) return false;
        if (k != 4) return mpr_fail(r, PD_EBADVALUE, "bad server entry");
        if (!pd_rd_id(r, &s->id) || !pd_rd_u64(r, &devices) || !mpr_int(r, &s->last_msg) ||
            !mpr_bool(r, &s->watched))
            return false;
        if (devices > UINT32_MAX) return mpr_fail(r, PD_EBADVALUE, "value out of range");
        s->devices = (uint32_t)devices;
    }
    hb->nservers = n;
    return true;
}

/* Required fields of a heartbeat. */
enum { HF_NODE = 1 << 0, HF_INC = 1 << 1, HF_SEQ = 1 << 2, HF_VC = 1 << 3 };
static const char *const hb_fields[] = {"node", "inc", "seq", "vc"};
#define HF_ALL (HF_NODE | HF_INC | HF_SEQ | HF_VC)

static pd_status hb_field(mp_reader *r, pd_str k, void *out, unsigned *seen, pd_err *err) {
    pd_heartbeat *hb = out;
    bool ok;
    if (pd_str_eqc(k, "node")) { *seen |= HF_NODE; ok = pd_rd_id(r, &hb->node); }
    else if (pd_str_eqc(k, "inc")) { *seen |= HF_INC; ok = pd_rd_u64(r, &hb->inc); }
    else if (pd_str_eqc(k, "seq")) { *seen |= HF_SEQ; ok = pd_rd_u64(r, &hb->seq); }
    else if (pd_str_eqc(k, "vc")) { *seen |= HF_VC; ok = pd_vc_read(r, hb->vc, &hb->nvc); }
    else if (pd_str_eqc(k, "hlc")) ok = pd_rd_u64(r, &hb->hlc);
    else if (pd_str_eqc(k, "wall")) ok = pd_rd_u64(r, &hb->wall);
    else if (pd_str_eqc(k, "leaving")) ok = mpr_bool(r, &hb->leaving);
    else if (pd_str_eqc(k, "ready")) ok = mpr_bool(r, &hb->ready);
    else if (pd_str_eqc(k, "devices")) ok = pd_rd_u64(r, &hb->devices);
    else if (pd_str_eqc(k, "users")) ok = pd_rd_u64(r, &hb->users);
    else if (pd_str_eqc(k, "events")) ok = pd_rd_u64(r, &hb->events);
    else if (pd_str_eqc(k, "notifications")) ok = pd_rd_u64(r, &hb->notifications);
    else if (pd_str_eqc(k, "snapshot_at")) ok = pd_rd_u64(r, &hb->snapshot_at);
    else if (pd_str_eqc(k, "servers")) ok = read_servers(r, hb);
    else if (pd_str_eqc(k, "carries")) ok = pd_rd_u64(r, &hb->carries);
    else if (pd_str_eqc(k, "kept")) ok = pd_vc_read(r, hb->kept, &hb->nkept);
    else ok = mpr_skip(r);
    return field_done(r, ok, err);
}

pd_status pd_heartbeat_decode(const void *buf, size_t len, pd_heartbeat *hb, pd_err *err) {
    memset(hb, 0, offsetof(pd_heartbeat, vc));
    hb->ready = true; /* a sender that does not say is announcing */
    return read_map(buf, len, hb_field, hb, HF_ALL, hb_fields, 4, err);
}

/* ---- state transfer ------------------------------------------------------------------------ */

void pd_sync_req_encode(msgpack_sbuffer *sb, const pd_sync_req *q) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    pd_pack_kv_u64(&pk, "v", PD_REPL_VERSION);
    pd_pack_kv_str(&pk, "node", q->node);
    pd_pack_kv_str(&pk, "origin", q->origin);
    pd_pack_kv_u64(&pk, "req", q->req);
}

/* Required fields of a sync request. */
enum { RF_NODE = 1 << 0, RF_ORIGIN = 1 << 1 };
static const char *const req_fields[] = {"node", "origin"};
#define RF_ALL (RF_NODE | RF_ORIGIN)

static pd_status req_field(mp_reader *r, pd_str k, void *out, unsigned *seen, pd_err *err) {
    pd_sync_req *q = out;
    bool ok;
    if (pd_str_eqc(k, "node")) { *seen |= RF_NODE; ok = pd_rd_id(r, &q->node); }
    else if (pd_str_eqc(k, "origin")) { *seen |= RF_ORIGIN; ok = pd_rd_id(r, &q->origin); }
    else if (pd_str_eqc(k, "req")) ok = pd_rd_u64(r, &q->req);
    else ok = mpr_skip(r);
    return field_done(r, ok, err);
}

pd_status pd_sync_req_decode(const void *buf, size_t len, pd_sync_req *q, pd_err *err) {
    memset(q, 0, sizeof *q);
    return read_map(buf, len, req_field, q, RF_ALL, req_fields, 2, err);
}

void pd_sync_part_encode(msgpack_sbuffer *sb, const pd_sync_part *p, const void *ops_buf,
                         size_t ops_len, uint32_t nops) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 9);
    pd_pack_kv_u64(&pk, "v", PD_REPL_VERSION);
    pd_pack_kv_str(&pk, "origin", p->origin);
    pd_pack_kv_bool(&pk, "known", p->known);
    pd_pack_kv_u64(&pk, "inc", p->inc);
    pd_pack_kv_u64(&pk, "seq", p->seq);
    pd_pack_kv_u64(&pk, "part", p->part);
    pd_pack_kv_bool(&pk, "last", p->last);
    pd_pack_kv_u64(&pk, "req", p->req);
    pd_pack_cstr(&pk, "ops");
    msgpack_pack_array(&pk, nops);
    if (ops_len) msgpack_sbuffer_write(sb, ops_buf, ops_len);
}

/* Required fields of a sync part. */
enum { PF_ORIGIN = 1 << 0, PF_INC = 1 << 1, PF_SEQ = 1 << 2, PF_OPS = 1 << 3 };
static const char *const part_fields[] = {"origin", "inc", "seq", "ops"};
#define PF_ALL (PF_ORIGIN | PF_INC | PF_SEQ | PF_OPS)

static pd_status part_field(mp_reader *r, pd_str k, void *out, unsigned *seen, pd_err *err) {
    pd_sync_part *p = out;
    uint64_t v = 0;
    bool ok;
    if (pd_str_eqc(k, "origin")) { *seen |= PF_ORIGIN; ok = pd_rd_id(r, &p->origin); }
    else if (pd_str_eqc(k, "inc")) { *seen |= PF_INC; ok = pd_rd_u64(r, &p->inc); }
    else if (pd_str_eqc(k, "seq")) { *seen |= PF_SEQ; ok = pd_rd_u64(r, &p->seq); }
    else if (pd_str_eqc(k, "ops")) { *seen |= PF_OPS; ok = read_ops(r, &p->ops); }
    else if (pd_str_eqc(k, "known")) ok = mpr_bool(r, &p->known);
    else if (pd_str_eqc(k, "last")) ok = mpr_bool(r, &p->last);
    else if (pd_str_eqc(k, "req")) ok = pd_rd_u64(r, &p->req);
    else if (pd_str_eqc(k, "part")) {
        ok = pd_rd_max(r, UINT32_MAX, &v);
        p->part = (uint32_t)v;
    } else ok = mpr_skip(r);
    return field_done(r, ok, err);
}

pd_status pd_sync_part_decode(const void *buf, size_t len, pd_sync_part *p, pd_err *err) {
    memset(p, 0, sizeof *p);
    return read_map(buf, len, part_field, p, PF_ALL, part_fields, 4, err);
}

/* snapshot.c - building (a slice at a time) and reading snapshots; see
 * snapshot.h for the layout and why a fuzzy snapshot is exact after replay.
 * Body: {"v", "node", "inc", "seq", "hlc", "stream_seq", "taken_at", "left"?,
 *        "vc": [[node, inc, seq]...], "devices": [[owner, ADD op]...],
 *        "registers": [CHOSEN, CUSTOM, SEEN or (version 3) VER op...]} */
#include "sync/snapshot.h"
#include <string.h>
#include "base/alloc.h"
#include "model/presence_int.h"

struct pd_snap {
    const pd_model *m;          /* the one being written (its interned ids) */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    int phase;                  /* 0 devices, 1 users, 2 done */
    uint64_t cursor;
    uint32_t count;
    size_t count_at;            /* offset of the open array's 32-bit count */
};

static void put_be(uint8_t *p, uint64_t v, int n) {
    for (int i = n - 1; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

static uint64_t get_be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

/* Eight bytes a step, little endian whatever the host: each step is a
 * bijection of the state, so any one changed word changes the sum. */
static uint64_t sum_words(const uint8_t *p, size_t n) {
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ n, w;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, p + i, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        w = __builtin_bswap64(w);
#endif
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }
    w = 0;
    for (unsigned k = 0; i < n; i++, k += 8) w |= (uint64_t)p[i] << k;
    h = (h ^ w) * 0xff51afd7ed558ccdULL;
    h ^= h >> 30; h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27; h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h;
}

uint64_t pd_snap_checksum(unsigned version, const void *body, size_t len) {
    return version == 1 ? pd_hash(body, len) : sum_words(body, len);
}

/* An array32 header whose count is written when the array is closed. */
static void open_array(pd_snap *s, const char *key) {
    static const uint8_t hdr[5] = {0xdd, 0, 0, 0, 0};
    pd_pack_cstr(&s->pk, key);
    s->count_at = s->sb.size + 1;
    msgpack_sbuffer_write(&s->sb, (const char *)hdr, sizeof hdr);
    s->count = 0;
}

static void close_array(pd_snap *s) {
    put_be((uint8_t *)s->sb.data + s->count_at, s->count, 4);
}

pd_snap *pd_snap_begin(const pd_model *m, const pd_snap_info *info) {
    (void)m;
    pd_snap *s = pd_calloc(1, sizeof *s);
    if (s == NULL) return NULL;
    msgpack_sbuffer_init(&s->sb);
    static const char room[PD_SNAP_HEADER] = {0};
    msgpack_sbuffer_write(&s->sb, room, sizeof room); /* header, written at the end */
    msgpack_packer_init(&s->pk, &s->sb, msgpack_sbuffer_write);
    msgpack_pack_map(&s->pk, 10 + (info->left ? 1 : 0));
    pd_pack_kv_u64(&s->pk, "v", PD_SNAP_VERSION);
    pd_pack_kv_str(&s->pk, "node", info->node);
    pd_pack_kv_u64(&s->pk, "inc", info->inc);
    pd_pack_kv_u64(&s->pk, "seq", info->seq);
    pd_pack_kv_u64(&s->pk, "hlc", info->hlc);
    pd_pack_kv_u64(&s->pk, "stream_seq", info->stream_seq);
    pd_pack_kv_u64(&s->pk, "taken_at", info->taken_at);
    if (info->left) pd_pack_kv_bool(&s->pk, "left", true);
    pd_pack_cstr(&s->pk, "vc");
    pd_vc_encode(&s->pk, info->vc, info->nvc);
    open_array(s, "devices");
    return s;
}

static void add_device(void *ud, void *e) {
    pd_snap *s = ud;
    const pd_device *d = (const pd_device *)e;
    const pd_user *u = pd__dev_user(s->m, d);
    pd_op op = {
        .kind = PD_OP_ADD,
        .server = {pd__dev_server(s->m, d)->id, pd__dev_server(s->m, d)->id_n},
        .conn = {d->buf, d->conn_n},
        .user = {u->id, u->id_n},
        .label = {d->buf + d->conn_n, d->label_n},
        .state = (pd_devstate)d->state,
        .connected_at = d->connected_at,
        .last_active = d->last_active,
        .hlc = d->claim,
    };
    op.meta = pd__dev_meta(d);
    msgpack_pack_array(&s->pk, 2);
    pd_pack_cstr(&s->pk, pd__dev_node(s->m, d));
    pd_op_encode(&s->pk, &op);
    s->count++;
}

static void add_register_op(void *ud, const pd_op *op) {
    pd_snap *s = ud;
    pd_op_encode(&s->pk, op);
    s->count++;
}

static void add_registers(void *ud, void *e) {
    pd__register_ops(((pd_snap *)ud)->m, (const pd_user *)e, NULL, add_register_op, ud);
}

bool pd_snap_step(pd_snap *s, const pd_model *m, uint32_t buckets) {
    s->m = m;
    while (buckets-- > 0 && s->phase < 2) {
        const pd_ihtab *t = s->phase == 0 ? &m->devices : &m->users;
        s->cursor = pd_ihtab_scan(t, s->cursor, s->phase == 0 ? add_device : add_registers, s);
        if (s->cursor != 0) continue;
        close_array(s);
        if (++s->phase == 1) open_array(s, "registers");
    }
    return s->phase == 2;
}

pd_status pd_snap_finish(pd_snap *s, uint8_t **out, size_t *len) {
    if (s->phase != 2) {
        pd_snap_abort(s);
        return PD_EINTERNAL;
    }
    uint8_t *p = (uint8_t *)s->sb.data;
    size_t body = s->sb.size - PD_SNAP_HEADER;
    memcpy(p, "PDSNAP", 6);
    p[6] = 0;
    p[7] = PD_SNAP_VERSION;
    put_be(p + 8, body, 8);
    put_be(p + 16, pd_snap_checksum(PD_SNAP_VERSION, p + PD_SNAP_HEADER, body), 8);
    *len = s->sb.size;
    *out = (uint8_t *)msgpack_sbuffer_release(&s->sb);
    pd_free(s);
    return PD_OK;
}

void pd_snap_abort(pd_snap *s) {
    if (s == NULL) return;
    msgpack_sbuffer_destroy(&s->sb);
    pd_free(s);
}

/* ---- reading -------------------------------------------------------------------- */

/* check false: the second pass, over entries pd_snap_open validated (see
 * pd_op_read_checked): a million devices' ids are not checked twice. */
static bool read_device(mp_reader *r, pd_snap_device *d, bool check) {
    uint32_t k;
    if (!mpr_array(r, &k) || k != 2 || !mpr_str(r, &d->owner) ||
        (check && !pd_id_valid(d->owner.p, d->owner.n)) ||
        !(check ? pd_op_read(r, &d->op) : pd_op_read_checked(r, &d->op)))
        return r->err ? false : mpr_fail(r, PD_EBADVALUE, "bad device entry");
    return d->op.kind == PD_OP_ADD || mpr_fail(r, PD_EBADVALUE, "a device entry is not an ADD");
}

/* VER ops came with version 3; an older writer never wrote one, so they
 * are read whatever the version. check false: the second pass, as for
 * read_device. */
static bool read_register(mp_reader *r, pd_op *op, bool check) {
    if (!(check ? pd_op_read(r, op) : pd_op_read_checked(r, op))) return false;
    return op->kind == PD_OP_CHOSEN || op->kind == PD_OP_CUSTOM || op->kind == PD_OP_SEEN ||
           op->kind == PD_OP_VER ||
           mpr_fail(r, PD_EBADVALUE, "a register entry is not a register op");
}

/* While the body is read: the visitor (NULL: validate only), whether the
 * registers were handed to it (they are only once the devices were, so
 * that it always gets the devices first), and its refusal (begin), which
 * says why itself. */
typedef struct {
    const pd_snap_visitor *v;
    bool regs_visited;
    pd_status refused;
    pd_err *refusal;
} read_ctx;

static bool check_device(mp_reader *r, void *ud) {
    const read_ctx *c = ud;
    pd_snap_device d;
    if (!read_device(r, &d, true)) return false;
    if (c->v) c->v->device(c->v->ud, &d);
    return true;
}

static bool check_register(mp_reader *r, void *ud) {
    const read_ctx *c = ud;
    pd_op op;
    if (!read_register(r, &op, true)) return false;
    if (c->v && c->regs_visited) c->v->reg(c->v->ud, &op);
    return true;
}

/* Required fields of the body. */
enum {
    SF_V = 1 << 0, SF_NODE = 1 << 1, SF_INC = 1 << 2, SF_SEQ = 1 << 3, SF_VC = 1 << 4,
    SF_DEVICES = 1 << 5, SF_REGISTERS = 1 << 6,
    /* optional, but once too (pd_snap_peek reads the first of each) */
    SF_HLC = 1 << 7, SF_STREAM = 1 << 8, SF_TAKEN = 1 << 9, SF_LEFT = 1 << 10,
};
static const char *const body_fields[] = {"v", "node", "inc", "seq", "vc", "devices", "registers"};
#define SF_ALL (SF_V | SF_NODE | SF_INC | SF_SEQ | SF_VC | SF_DEVICES | SF_REGISTERS)


/* A required field seen once more: refused (two "devices" arrays would be
 * applied both by a reader that applies as it reads, the last alone by
 * one that does not). */
static bool once(mp_reader *r, unsigned *seen, unsigned bit) {
    if (*seen & bit) return mpr_fail(r, PD_EBADVALUE, "a field appears twice");
    *seen |= bit;
    return true;
}

/* The devices array's declared count, as a hint: at most the bytes left
 * over 8 (an entry takes more), so that hostile input cannot make it
 * larger than the input. */
static uint32_t count_hint(const mp_reader *r) {
    mp_reader peek = *r;
    uint32_t n = 0;
    if (!mpr_array(&peek, &n)) return 0;
    size_t most = mpr_remaining(&peek) / 8;
    return n < most ? n : (uint32_t)most;
}

static pd_status body_field(mp_reader *r, pd_str k, pd_snap_info *info, pd_snap_reader *rd,
                            unsigned *seen, read_ctx *c, pd_err *err) {
    pd_str raw;
    uint64_t v = 0;
    bool ok;
    if (pd_str_eqc(k, "v")) {
        ok = once(r, seen, SF_V) && pd_rd_u64(r, &v) &&
             (v == info->version || mpr_fail(r, PD_EBADVALUE, "body version is not the header's"));
    } else if (pd_str_eqc(k, "node")) { /* an id: it may be echoed in a refusal */
        ok = once(r, seen, SF_NODE) && pd_rd_id(r, &info->node);
    } else if (pd_str_eqc(k, "inc")) ok = once(r, seen, SF_INC) && pd_rd_u64(r, &info->inc);
    else if (pd_str_eqc(k, "seq")) ok = once(r, seen, SF_SEQ) && pd_rd_u64(r, &info->seq);
    else if (pd_str_eqc(k, "vc")) ok = once(r, seen, SF_VC) && pd_vc_read(r, info->vc, &info->nvc);
    else if (pd_str_eqc(k, "devices")) {
        if (!once(r, seen, SF_DEVICES)) return pd_rd_err(r, err);
        if (c->v && (c->refused = c->v->begin(c->v->ud, info, count_hint(r), c->refusal)) != PD_OK)
            return c->refused;
        ok = pd_rd_array(r, &raw, &rd->ndevs, check_device, c, &rd->devs);
    } else if (pd_str_eqc(k, "registers")) {
        c->regs_visited = (*seen & SF_DEVICES) != 0;
        ok = once(r, seen, SF_REGISTERS) &&
             pd_rd_array(r, &raw, &rd->nregs, check_register, c, &rd->regs);
    } else if (pd_str_eqc(k, "hlc")) ok = once(r, seen, SF_HLC) && pd_rd_u64(r, &info->hlc);
    else if (pd_str_eqc(k, "stream_seq"))
        ok = once(r, seen, SF_STREAM) && pd_rd_u64(r, &info->stream_seq);
    else if (pd_str_eqc(k, "taken_at"))
        ok = once(r, seen, SF_TAKEN) && pd_rd_u64(r, &info->taken_at);
    else if (pd_str_eqc(k, "left")) ok = once(r, seen, SF_LEFT) && mpr_bool(r, &info->left);
    else ok = mpr_skip(r);
    return ok ? PD_OK : pd_rd_err(r, err);
}

/* The body after the header: a map of the fields above, nothing after. */
static pd_status read_body(mp_reader *r, pd_snap_info *info, pd_snap_reader *rd, read_ctx *c,
                           pd_err *err) {
    uint32_t n;
    unsigned seen = 0;
    pd_status s;
    if (!mpr_map(r, &n)) return pd_rd_err(r, err);
    for (uint32_t i = 0; i < n; i++) {
        pd_str k;
        if (!pd_read_key(r, &k)) return pd_rd_err(r, err);
        if ((s = body_field(r, k, info, rd, &seen, c, err)) != PD_OK) return s;
    }
    if (mpr_remaining(r) != 0) {
        pd_err_set(err, PD_EBADMSGPACK, "trailing bytes");
        return PD_EBADMSGPACK;
    }
    return pd_fields_missing(seen, SF_ALL, body_fields, 7, "snapshot", err);
}

/* Magic, version, length and (checksum true) the checksum. */
static pd_status check_header(const uint8_t *p, size_t len, pd_snap_info *info, bool checksum,
                              pd_err *err) {
    if (len < PD_SNAP_HEADER || memcmp(p, "PDSNAP", 6) != 0 || p[6] != 0) {
        pd_err_set(err, PD_EBADVALUE, "not a presenced snapshot");
        return PD_EBADVALUE;
    }
    if (p[7] < PD_SNAP_VERSION_MIN || p[7] > PD_SNAP_VERSION) {
        pd_err_set(err, PD_EBADVALUE, "snapshot version %u, this node reads %u to %u", p[7],
                   PD_SNAP_VERSION_MIN, PD_SNAP_VERSION);
        return PD_EBADVALUE;
    }
    info->version = p[7];
    uint64_t body = get_be(p + 8, 8);
    if (body != len - PD_SNAP_HEADER) {
        pd_err_set(err, PD_EBADVALUE, "snapshot truncated: %zu of %llu bytes",
                   len - PD_SNAP_HEADER, (unsigned long long)body);
        return PD_EBADVALUE;
    }
    if (checksum && get_be(p + 16, 8) != pd_snap_checksum(p[7], p + PD_SNAP_HEADER, (size_t)body)) {
        pd_err_set(err, PD_EBADVALUE, "snapshot checksum mismatch");
        return PD_EBADVALUE;
    }
    return PD_OK;
}

static pd_status read_snapshot(const void *buf, size_t len, pd_snap_info *info,
                               pd_snap_reader *rd, const pd_snap_visitor *v, bool checksum,
                               pd_err *err) {
    const uint8_t *p = buf;
    mp_reader r;
    memset(info, 0, offsetof(pd_snap_info, vc));
    memset(rd, 0, sizeof *rd);
    pd_status hs = check_header(p, len, info, checksum, err);
    if (hs != PD_OK) return hs;
    mpr_init(&r, p + PD_SNAP_HEADER, len - PD_SNAP_HEADER);
    pd_err why = {PD_OK, ""};
    read_ctx c = {v, false, PD_OK, err};
    pd_status s = read_body(&r, info, rd, &c, &why);
    if (s != PD_OK) {
        if (c.refused == PD_OK) pd_err_set(err, s, "bad snapshot body: %s", why.msg);
        return s;
    }
    /* Registers that came before the devices: handed now, the body whole. */
    if (v && !c.regs_visited) {
        pd_op op;
        while (pd_snap_next_register(rd, &op)) v->reg(v->ud, &op);
    }
    return PD_OK;
}

pd_status pd_snap_open(const void *buf, size_t len, pd_snap_info *info, pd_snap_reader *rd,
                       pd_err *err) {
    return read_snapshot(buf, len, info, rd, NULL, true, err);
}

pd_status pd_snap_read(const void *buf, size_t len, pd_snap_info *info,
                       const pd_snap_visitor *v, pd_err *err) {
    pd_snap_reader rd;
    return read_snapshot(buf, len, info, &rd, v, !(v && v->checksum_checked), err);
}

pd_status pd_snap_peek(const void *buf, size_t len, pd_snap_info *info, pd_err *err) {
    const uint8_t *p = buf;
    mp_reader r;
    pd_snap_reader rd;
    uint32_t n;
    pd_str k;
    unsigned seen = 0;
    memset(info, 0, offsetof(pd_snap_info, vc));
    memset(&rd, 0, sizeof rd); /* body_field fills it for the arrays alone: never reached */
    pd_status s = check_header(p, len, info, true, err);
    if (s != PD_OK) return s;
    mpr_init(&r, p + PD_SNAP_HEADER, len - PD_SNAP_HEADER);
    if (!mpr_map(&r, &n)) return pd_rd_err(&r, err);
    /* The fields a writer puts first, read as pd_snap_read reads them; the
     * first array ends the peek. */
    read_ctx c = {NULL, false, PD_OK, err};
    for (uint32_t i = 0; i < n && mpr_peek(&r) != MPR_END; i++) {
        if (!mpr_str(&r, &k)) return pd_rd_err(&r, err);
        if (mpr_peek(&r) == MPR_ARRAY) break;
        if ((s = body_field(&r, k, info, &rd, &seen, &c, err)) != PD_OK) return s;
    }
    const unsigned need = SF_NODE | SF_INC | SF_SEQ | SF_STREAM;
    if ((seen & need) != need) {
        pd_err_set(err, PD_EMISSING, "snapshot: node, inc, seq or stream_seq not before its arrays");
        return PD_EMISSING;
    }
    return PD_OK;
}

bool pd_snap_next_device(pd_snap_reader *rd, pd_snap_device *d) {
    if (rd->ndevs == 0) return false;
    rd->ndevs--;
    return read_device(&rd->devs, d, false);
}

bool pd_snap_next_register(pd_snap_reader *rd, pd_op *op) {
    if (rd->nregs == 0) return false;
    rd->nregs--;
    return read_register(&rd->regs, op, false);
}

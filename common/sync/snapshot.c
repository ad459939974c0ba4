/* snapshot.c - building (a slice at a time) and reading snapshots; see
 * snapshot.h for the layout and why a fuzzy snapshot is exact after replay.
 * Body: {"v", "node", "inc", "seq", "hlc", "stream_seq", "taken_at",
 *        "vc": [[node, inc, seq]...], "devices": [[owner, ADD op]...],
 *        "registers": [CHOSEN, CUSTOM or SEEN op...]} */
#include "sync/snapshot.h"
#include <string.h>
#include "base/alloc.h"
#include "model/presence_int.h"

struct pd_snap {
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

static void pack_u64(msgpack_packer *pk, const char *k, uint64_t v) {
    pd_pack_cstr(pk, k);
    msgpack_pack_uint64(pk, v);
}

pd_snap *pd_snap_begin(const pd_model *m, const pd_snap_info *info) {
    (void)m;
    pd_snap *s = pd_calloc(1, sizeof *s);
    if (s == NULL) return NULL;
    msgpack_sbuffer_init(&s->sb);
    static const char room[PD_SNAP_HEADER] = {0};
    msgpack_sbuffer_write(&s->sb, room, sizeof room); /* header, written at the end */
    msgpack_packer_init(&s->pk, &s->sb, msgpack_sbuffer_write);
    msgpack_pack_map(&s->pk, 10);
    pack_u64(&s->pk, "v", PD_SNAP_VERSION);
    pd_pack_kv_str(&s->pk, "node", info->node);
    pack_u64(&s->pk, "inc", info->inc);
    pack_u64(&s->pk, "seq", info->seq);
    pack_u64(&s->pk, "hlc", info->hlc);
    pack_u64(&s->pk, "stream_seq", info->stream_seq);
    pack_u64(&s->pk, "taken_at", info->taken_at);
    pd_pack_cstr(&s->pk, "vc");
    msgpack_pack_array(&s->pk, info->nvc);
    for (uint32_t i = 0; i < info->nvc; i++) {
        msgpack_pack_array(&s->pk, 3);
        pd_pack_str(&s->pk, info->vc[i].node);
        msgpack_pack_uint64(&s->pk, info->vc[i].inc);
        msgpack_pack_uint64(&s->pk, info->vc[i].seq);
    }
    open_array(s, "devices");
    return s;
}

static void add_device(void *ud, pd_hnode *e) {
    pd_snap *s = ud;
    const pd_device *d = (const pd_device *)e;
    pd_op op = {
        .kind = PD_OP_ADD,
        .server = {d->server->id, d->server->id_n},
        .conn = {d->buf, d->conn_n},
        .user = {d->user->id, d->user->id_n},
        .label = {d->buf + d->conn_n, d->label_n},
        .state = (pd_devstate)d->state,
        .connected_at = d->connected_at,
        .last_active = d->last_active,
        .hlc = d->claim,
    };
    if (d->meta)
        op.meta = (pd_str){(const char *)d->meta + 2, (uint32_t)(d->meta[0] << 8 | d->meta[1])};
    msgpack_pack_array(&s->pk, 2);
    pd_pack_cstr(&s->pk, d->node);
    pd_op_encode(&s->pk, &op);
    s->count++;
}

static void add_register_op(void *ud, const pd_op *op) {
    pd_snap *s = ud;
    pd_op_encode(&s->pk, op);
    s->count++;
}

static void add_registers(void *ud, pd_hnode *e) {
    pd__register_ops((const pd_user *)e, NULL, add_register_op, ud);
}

bool pd_snap_step(pd_snap *s, const pd_model *m, uint32_t buckets) {
    while (buckets-- > 0 && s->phase < 2) {
        const pd_htab *t = s->phase == 0 ? &m->devices : &m->users;
        s->cursor = pd_htab_scan(t, s->cursor, s->phase == 0 ? add_device : add_registers, s);
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
    put_be(p + 16, pd_hash(p + PD_SNAP_HEADER, body), 8);
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

static bool rd_u64(mp_reader *r, uint64_t *v) {
    int64_t x = 0;
    if (!mpr_int(r, &x)) return false;
    if (x < 0) return mpr_fail(r, PD_EBADVALUE, "negative number");
    *v = (uint64_t)x;
    return true;
}

static bool read_vc(mp_reader *r, pd_snap_info *info) {
    uint32_t n, k;
    if (!mpr_array(r, &n)) return false;
    if (n > PD_VC_MAX) return mpr_fail(r, PD_ETOOLARGE, "vector clock too long");
    for (uint32_t i = 0; i < n; i++) {
        pd_vc_entry *e = &info->vc[i];
        if (!mpr_array(r, &k) || k != 3 || !mpr_str(r, &e->node) ||
            !pd_id_valid(e->node.p, e->node.n) || !rd_u64(r, &e->inc) || !rd_u64(r, &e->seq))
            return r->err ? false : mpr_fail(r, PD_EBADVALUE, "bad vector clock entry");
    }
    info->nvc = n;
    return true;
}

static bool read_device(mp_reader *r, pd_snap_device *d) {
    uint32_t k;
    if (!mpr_array(r, &k) || k != 2 || !mpr_str(r, &d->owner) ||
        !pd_id_valid(d->owner.p, d->owner.n) || !pd_op_read(r, &d->op))
        return r->err ? false : mpr_fail(r, PD_EBADVALUE, "bad device entry");
    return d->op.kind == PD_OP_ADD || mpr_fail(r, PD_EBADVALUE, "a device entry is not an ADD");
}

static bool read_register(mp_reader *r, pd_op *op) {
    if (!pd_op_read(r, op)) return false;
    return op->kind == PD_OP_CHOSEN || op->kind == PD_OP_CUSTOM || op->kind == PD_OP_SEEN ||
           mpr_fail(r, PD_EBADVALUE, "a register entry is not a register op");
}

/* Validates an array of entries, leaving *at positioned on its first. */
static bool read_list(mp_reader *r, mp_reader *at, uint32_t *n, bool devices) {
    pd_str raw;
    mp_reader sub;
    if (!mpr_raw(r, &raw)) return false;
    mpr_init(&sub, raw.p, raw.n);
    if (!mpr_array(&sub, n)) return mpr_fail(r, sub.err, sub.why);
    *at = sub;
    for (uint32_t i = 0; i < *n; i++) {
        pd_snap_device d;
        bool ok = devices ? read_device(&sub, &d) : read_register(&sub, &d.op);
        if (!ok) return mpr_fail(r, sub.err, sub.why);
    }
    return true;
}

static bool body_field(mp_reader *r, pd_str k, pd_snap_info *info, pd_snap_reader *rd,
                       unsigned *seen) {
    if (pd_str_eqc(k, "v")) {
        uint64_t v = 0;
        *seen |= 1;
        return rd_u64(r, &v) && (v == PD_SNAP_VERSION || mpr_fail(r, PD_EBADVALUE, "bad version"));
    }
    if (pd_str_eqc(k, "node")) { /* an id: it may be echoed in a refusal */
        *seen |= 2;
        return mpr_str(r, &info->node) &&
               (pd_id_valid(info->node.p, info->node.n) || mpr_fail(r, PD_EBADID, "bad node id"));
    }
    if (pd_str_eqc(k, "inc")) { *seen |= 4; return rd_u64(r, &info->inc); }
    if (pd_str_eqc(k, "seq")) { *seen |= 8; return rd_u64(r, &info->seq); }
    if (pd_str_eqc(k, "vc")) { *seen |= 16; return read_vc(r, info); }
    if (pd_str_eqc(k, "devices")) { *seen |= 32; return read_list(r, &rd->devs, &rd->ndevs, true); }
    if (pd_str_eqc(k, "registers")) { *seen |= 64; return read_list(r, &rd->regs, &rd->nregs, false); }
    if (pd_str_eqc(k, "hlc")) return rd_u64(r, &info->hlc);
    if (pd_str_eqc(k, "stream_seq")) return rd_u64(r, &info->stream_seq);
    if (pd_str_eqc(k, "taken_at")) return rd_u64(r, &info->taken_at);
    return mpr_skip(r);
}

pd_status pd_snap_open(const void *buf, size_t len, pd_snap_info *info, pd_snap_reader *rd,
                       pd_err *err) {
    const uint8_t *p = buf;
    mp_reader r;
    uint32_t n;
    unsigned seen = 0;
    memset(info, 0, offsetof(pd_snap_info, vc));
    memset(rd, 0, sizeof *rd);
    if (len < PD_SNAP_HEADER || memcmp(p, "PDSNAP", 6) != 0 || p[6] != 0) {
        pd_err_set(err, PD_EBADVALUE, "not a presenced snapshot");
        return PD_EBADVALUE;
    }
    if (p[7] != PD_SNAP_VERSION) {
        pd_err_set(err, PD_EBADVALUE, "snapshot version %u, this node reads %u", p[7],
                   PD_SNAP_VERSION);
        return PD_EBADVALUE;
    }
    uint64_t body = get_be(p + 8, 8);
    if (body != len - PD_SNAP_HEADER) {
        pd_err_set(err, PD_EBADVALUE, "snapshot truncated: %zu of %llu bytes",
                   len - PD_SNAP_HEADER, (unsigned long long)body);
        return PD_EBADVALUE;
    }
    if (get_be(p + 16, 8) != pd_hash(p + PD_SNAP_HEADER, (size_t)body)) {
        pd_err_set(err, PD_EBADVALUE, "snapshot checksum mismatch");
        return PD_EBADVALUE;
    }
    mpr_init(&r, p + PD_SNAP_HEADER, (size_t)body);
    bool ok = mpr_map(&r, &n);
    for (uint32_t i = 0; ok && i < n; i++) {
        pd_str k;
        ok = pd_read_key(&r, &k) && body_field(&r, k, info, rd, &seen);
    }
    if (ok && mpr_remaining(&r) != 0) ok = mpr_fail(&r, PD_EBADMSGPACK, "trailing bytes");
    if (ok && seen != 127) ok = mpr_fail(&r, PD_EMISSING, "snapshot lacks a field");
    if (!ok) {
        pd_err_set(err, r.err ? r.err : PD_EBADVALUE, "bad snapshot body: %s", r.why);
        return err->code;
    }
    return PD_OK;
}

bool pd_snap_next_device(pd_snap_reader *rd, pd_snap_device *d) {
    if (rd->ndevs == 0) return false;
    rd->ndevs--;
    return read_device(&rd->devs, d);
}

bool pd_snap_next_register(pd_snap_reader *rd, pd_op *op) {
    if (rd->nregs == 0) return false;
    rd->nregs--;
    return read_register(&rd->regs, op);
}

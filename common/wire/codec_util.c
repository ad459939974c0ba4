/* codec_util.c - the readers, error helpers and packers every codec shares
 * (see codec_util.h for the style they set). */
#include "wire/codec_util.h"

/* ---- reading one value ------------------------------------------------------ */

bool pd_rd_u64(mp_reader *r, uint64_t *v) {
    int64_t x = 0;
    if (!mpr_int(r, &x)) return false;
    if (x < 0) return mpr_fail(r, PD_EBADVALUE, "negative number");
    *v = (uint64_t)x;
    return true;
}

bool pd_rd_max(mp_reader *r, uint64_t max, uint64_t *v) {
    uint64_t x = 0;
    if (!pd_rd_u64(r, &x)) return false;
    if (x > max) return mpr_fail(r, PD_EBADVALUE, "value out of range");
    *v = x;
    return true;
}

bool pd_rd_id(mp_reader *r, pd_str *s) {
    if (!mpr_str(r, s)) return false;
    return pd_id_valid(s->p, s->n) || mpr_fail(r, PD_EBADID, "bad id");
}

bool pd_read_key(mp_reader *r, pd_str *key) {
    if (mpr_peek(r) != MPR_STR && mpr_peek(r) != MPR_END && mpr_peek(r) != MPR_INVALID)
        return mpr_fail(r, PD_EBADMSGPACK, "map keys must be strings");
    return mpr_str(r, key);
}

/* One pass: each fn reads exactly one element, so the array ends where the
 * last one did (no mpr_skip over it first: a snapshot's devices array is
 * tens of megabytes). */
bool pd_rd_array(mp_reader *r, pd_str *raw, uint32_t *n, pd_rd_elem_fn fn, void *ud,
                 mp_reader *at) {
    const uint8_t *start = r->p;
    uint32_t count;
    if (!mpr_array(r, &count)) return false;
    const uint8_t *first = r->p;
    for (uint32_t i = 0; i < count; i++) {
        if (!fn(r, ud)) return r->err ? false : mpr_fail(r, PD_EBADVALUE, "bad element");
    }
    raw->p = (const char *)start;
    raw->n = (uint32_t)(r->p - start);
    *n = count;
    if (at != NULL) mpr_init(at, first, (size_t)(r->p - first));
    return true;
}

/* ---- into pd_status + pd_err ---------------------------------------------------- */

pd_status pd_rd_err(const mp_reader *r, pd_err *err) {
    pd_status s = r->err ? r->err : PD_EBADVALUE;
    pd_err_set(err, s, "%s", r->why[0] ? r->why : "bad field");
    return s;
}

pd_status pd_rd_field_err(const mp_reader *r, pd_err *err, const char *field, const char *kind) {
    if (r->err != PD_EBADVALUE) return pd_rd_err(r, err);
    pd_err_set(err, PD_EBADVALUE, "field '%s' must be %s", field, kind);
    return PD_EBADVALUE;
}

pd_status pd_fields_missing(unsigned seen, unsigned required, const char *const names[],
                            size_t nnames, const char *what, pd_err *err) {
    unsigned missing = required & ~seen;
    for (size_t b = 0; missing && b < nnames; b++) {
        if (!(missing & (1u << b))) continue;
        if (what) pd_err_set(err, PD_EMISSING, "%s lacks field '%s'", what, names[b]);
        else pd_err_set(err, PD_EMISSING, "missing field '%s'", names[b]);
        return PD_EMISSING;
    }
    return PD_OK;
}

/* ---- packing ---------------------------------------------------------------------- */

void pd_pack_str(msgpack_packer *pk, pd_str s) {
    msgpack_pack_str_with_body(pk, s.p ? s.p : "", s.n);
}

void pd_pack_cstr(msgpack_packer *pk, const char *s) { pd_pack_str(pk, pd_str_c(s)); }

void pd_pack_kv_str(msgpack_packer *pk, const char *k, pd_str v) {
    pd_pack_cstr(pk, k);
    pd_pack_str(pk, v);
}

void pd_pack_kv_int(msgpack_packer *pk, const char *k, int64_t v) {
    pd_pack_cstr(pk, k);
    msgpack_pack_int64(pk, v);
}

void pd_pack_kv_u64(msgpack_packer *pk, const char *k, uint64_t v) {
    pd_pack_cstr(pk, k);
    msgpack_pack_uint64(pk, v);
}

void pd_pack_kv_bool(msgpack_packer *pk, const char *k, bool v) {
    pd_pack_cstr(pk, k);
    if (v) msgpack_pack_true(pk);
    else msgpack_pack_false(pk);
}

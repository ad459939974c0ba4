/* mpread.c - bounds-checked MessagePack reading (see mpread.h). */
#include "wire/mpread.h"
#include <stdio.h>
#include <string.h>

void mpr_init(mp_reader *r, const void *buf, size_t len) {
    r->p = buf;
    r->end = r->p + len;
    r->err = PD_OK;
    r->why[0] = '\0';
    if (buf == NULL) r->p = r->end = NULL;
}

size_t mpr_remaining(const mp_reader *r) { return (size_t)(r->end - r->p); }

bool mpr_fail(mp_reader *r, pd_status s, const char *why) {
    if (r->err == PD_OK) {
        r->err = s;
        snprintf(r->why, sizeof r->why, "%s", why);
    }
    r->p = r->end;
    return false;
}

static uint64_t be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

mpr_kind mpr_peek(const mp_reader *r) {
    if (r->err != PD_OK) return MPR_INVALID;
    if (r->p >= r->end) return MPR_END;
    uint8_t b = *r->p;
    if (b <= 0x7f || b >= 0xe0) return MPR_INT;
    if (b <= 0x8f) return MPR_MAP;
    if (b <= 0x9f) return MPR_ARRAY;
    if (b <= 0xbf) return MPR_STR;
    switch (b) {
    case 0xc0: return MPR_NIL;
    case 0xc2: case 0xc3: return MPR_BOOL;
    case 0xc4: case 0xc5: case 0xc6: return MPR_BIN;
    case 0xc7: case 0xc8: case 0xc9:
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: return MPR_EXT;
    case 0xca: case 0xcb: return MPR_FLOAT;
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: return MPR_INT;
    case 0xd9: case 0xda: case 0xdb: return MPR_STR;
    case 0xdc: case 0xdd: return MPR_ARRAY;
    case 0xde: case 0xdf: return MPR_MAP;
    default: return MPR_INVALID; /* 0xc1 is never used */
    }
}

/* Consumes n header bytes after the type byte, or fails on truncation. */
static bool take(mp_reader *r, size_t n, const uint8_t **out) {
    if (mpr_remaining(r) < n) return mpr_fail(r, PD_EBADMSGPACK, "truncated message");
    *out = r->p;
    r->p += n;
    return true;
}

static bool want(mp_reader *r, mpr_kind k, const char *what) {
    mpr_kind got = mpr_peek(r);
    if (got == k) return true;
    if (got == MPR_END) return mpr_fail(r, PD_EBADMSGPACK, "truncated message");
    if (got == MPR_INVALID) return mpr_fail(r, PD_EBADMSGPACK, "invalid msgpack byte");
    char why[64];
    snprintf(why, sizeof why, "expected %s", what);
    return mpr_fail(r, PD_EBADVALUE, why);
}

/* Reads a container header; each element takes at least one byte, so a count
 * above the bytes that remain is a lie and is refused before use. */
static bool container(mp_reader *r, uint32_t *count, uint8_t fix_lo, uint8_t fix_hi,
                      uint8_t b16, uint8_t b32, unsigned per_item) {
    const uint8_t *h;
    uint8_t b = *r->p++;
    uint64_t n;
    if (b >= fix_lo && b <= fix_hi) n = b & 0x0f;
    else if (b == b16) { if (!take(r, 2, &h)) return false; n = be(h, 2); }
    else if (b == b32) { if (!take(r, 4, &h)) return false; n = be(h, 4); }
    else return mpr_fail(r, PD_EBADMSGPACK, "invalid container header");
    if (n * per_item > mpr_remaining(r))
        return mpr_fail(r, PD_EBADMSGPACK, "declared length exceeds message");
    *count = (uint32_t)n;
    return true;
}

bool mpr_map(mp_reader *r, uint32_t *count) {
    if (!want(r, MPR_MAP, "a map")) return false;
    return container(r, count, 0x80, 0x8f, 0xde, 0xdf, 2);
}

/* The fast paths below take the commonest encodings of the values this
 * project writes (fixarray, fixstr, fixint, uint 64), with the same checks
 * as the general path; anything else, or an error, goes the general way.
 * A snapshot restore reads several million values (issue 15). */

bool mpr_array(mp_reader *r, uint32_t *count) {
    if (r->err == PD_OK && r->p < r->end && (*r->p & 0xf0) == 0x90) {
        uint32_t n = *r->p & 0x0f;
        if (n <= (size_t)(r->end - r->p) - 1) {
            r->p++;
            *count = n;
            return true;
        }
    }
    if (!want(r, MPR_ARRAY, "an array")) return false;
    return container(r, count, 0x90, 0x9f, 0xdc, 0xdd, 1);
}

bool mpr_str(mp_reader *r, pd_str *out) {
    if (r->err == PD_OK && r->p < r->end && (*r->p & 0xe0) == 0xa0) {
        uint32_t n = *r->p & 0x1f;
        if (n <= (size_t)(r->end - r->p) - 1) {
            out->p = (const char *)r->p + 1;
            out->n = n;
            r->p += 1 + n;
            return true;
        }
    }
    if (!want(r, MPR_STR, "a string")) return false;
    const uint8_t *h;
    uint8_t b = *r->p++;
    uint64_t n;
    if (b >= 0xa0 && b <= 0xbf) n = b & 0x1f;
    else if (b == 0xd9) { if (!take(r, 1, &h)) return false; n = h[0]; }
    else if (b == 0xda) { if (!take(r, 2, &h)) return false; n = be(h, 2); }
    else { if (!take(r, 4, &h)) return false; n = be(h, 4); }
    if (!take(r, n, &h)) return false;
    out->p = (const char *)h;
    out->n = (uint32_t)n;
    return true;
}

bool mpr_int(mp_reader *r, int64_t *out) {
    if (r->err == PD_OK && r->p < r->end) {
        uint8_t b = *r->p;
        if (b <= 0x7f) {
            r->p++;
            *out = b;
            return true;
        }
        if (b == 0xcf && (size_t)(r->end - r->p) >= 9 && r->p[1] <= 0x7f) {
            uint64_t v;
            memcpy(&v, r->p + 1, 8);
            *out = (int64_t)__builtin_bswap64(v); /* big endian on the wire */
            r->p += 9;
            return true;
        }
    }
    if (!want(r, MPR_INT, "an integer")) return false;
    const uint8_t *h;
    uint8_t b = *r->p++;
    if (b <= 0x7f) { *out = b; return true; }
    if (b >= 0xe0) { *out = (int8_t)b; return true; }
    static const uint8_t width[] = {1, 2, 4, 8};
    bool is_signed = b >= 0xd0;
    int w = width[(b - (is_signed ? 0xd0 : 0xcc)) & 3];
    if (!take(r, (size_t)w, &h)) return false;
    uint64_t v = be(h, w);
    if (!is_signed) {
        if (v > (uint64_t)INT64_MAX) return mpr_fail(r, PD_EBADVALUE, "integer out of range");
        *out = (int64_t)v;
        return true;
    }
    /* Sign-extend the w-byte two's complement value. */
    if (w < 8 && (v >> (w * 8 - 1)) & 1) v |= ~0ULL << (w * 8);
    memcpy(out, &v, sizeof v);
    return true;
}

bool mpr_bool(mp_reader *r, bool *out) {
    if (!want(r, MPR_BOOL, "a boolean")) return false;
    *out = *r->p++ == 0xc3;
    return true;
}

bool mpr_nil(mp_reader *r) {
    if (!want(r, MPR_NIL, "nil")) return false;
    r->p++;
    return true;
}

/* Size of the payload after the type byte and its length field, for the
 * scalar kinds; containers return their element count in *items. */
static bool skip_one(mp_reader *r, uint64_t *items) {
    const uint8_t *h;
    uint64_t n = 0;
    *items = 0;
    mpr_kind kind = mpr_peek(r);
    if (kind == MPR_END) return mpr_fail(r, PD_EBADMSGPACK, "truncated message");
    if (kind == MPR_INVALID) return mpr_fail(r, PD_EBADMSGPACK, "invalid msgpack byte");
    uint8_t b = *r->p; /* only now known to exist */
    switch (kind) {
    case MPR_END: case MPR_INVALID: break;
    case MPR_MAP: case MPR_ARRAY: {
        uint32_t c;
        bool map = mpr_peek(r) == MPR_MAP;
        if (!(map ? mpr_map(r, &c) : mpr_array(r, &c))) return false;
        *items = map ? 2ULL * c : c;
        return true;
    }
    case MPR_STR: { pd_str s; return mpr_str(r, &s); }
    case MPR_INT: case MPR_NIL: case MPR_BOOL: r->p++;
        if (b >= 0xcc && b <= 0xd3) {
            static const uint8_t width[] = {1, 2, 4, 8};
            n = width[(b - (b >= 0xd0 ? 0xd0 : 0xcc)) & 3];
        }
        return take(r, n, &h);
    case MPR_FLOAT: r->p++; return take(r, b == 0xca ? 4 : 8, &h);
    case MPR_BIN: r->p++;
        if (!take(r, b == 0xc4 ? 1 : b == 0xc5 ? 2 : 4, &h)) return false;
        n = be(h, b == 0xc4 ? 1 : b == 0xc5 ? 2 : 4);
        return take(r, n, &h);
    case MPR_EXT: r->p++;
        if (b >= 0xd4 && b <= 0xd8) return take(r, 1 + (1u << (b - 0xd4)), &h);
        if (!take(r, b == 0xc7 ? 1 : b == 0xc8 ? 2 : 4, &h)) return false;
        n = be(h, b == 0xc7 ? 1 : b == 0xc8 ? 2 : 4);
        return take(r, n + 1, &h);
    }
    return mpr_fail(r, PD_EBADMSGPACK, "invalid msgpack byte");
}

bool mpr_skip(mp_reader *r) {
    /* Iterative: a stack of remaining element counts, one per open level. */
    uint64_t stack[MPR_MAX_DEPTH + 1];
    int depth = 0;
    stack[0] = 1;
    while (depth >= 0) {
        if (stack[depth] == 0) { depth--; continue; }
        stack[depth]--;
        uint64_t items;
        if (!skip_one(r, &items)) return false;
        if (items > 0) {
            if (depth == MPR_MAX_DEPTH) return mpr_fail(r, PD_ETOOLARGE, "nesting too deep");
            stack[++depth] = items;
        }
    }
    return true;
}

bool mpr_raw(mp_reader *r, pd_str *out) {
    const uint8_t *start = r->p;
    if (!mpr_skip(r)) return false;
    out->p = (const char *)start;
    out->n = (uint32_t)(r->p - start);
    return true;
}

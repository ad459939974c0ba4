/* encode.c - MessagePack of the events libpresence sends, and the reading
 * of the node's replies (with common/wire/mpread, which trusts no length). */
#include "internal.h"
#include <string.h>
#include "wire/mpread.h"

static void pk_str(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void pl_encode_batch(msgpack_sbuffer *sb, pl_event *evs, size_t n, uint64_t *seq)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    pk_str(&pk, "type", 4);
    pk_str(&pk, "batch", 5);
    pk_str(&pk, "events", 6);
    msgpack_pack_array(&pk, n);
    for (size_t i = 0; i < n; i++) {
        msgpack_pack_map(&pk, evs[i].nkeys + 1);
        msgpack_sbuffer_write(sb, evs[i].body, evs[i].len);
        pk_str(&pk, "seq", 3);
        msgpack_pack_uint64(&pk, ++*seq);
    }
}

void pl_encode_sync(msgpack_sbuffer *sb, const char *server, const char *sync_id, unsigned part,
                    unsigned parts, const presence_sync_writer *w, size_t from, size_t to)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, sync_id ? 6 : 3);
    pk_str(&pk, "type", 4);
    pk_str(&pk, "sync", 4);
    pk_str(&pk, "server", 6);
    pk_str(&pk, server, strlen(server));
    pk_str(&pk, "conns", 5);
    msgpack_pack_array(&pk, to - from);
    size_t b = from ? w->ends[from - 1] : 0, e = to ? w->ends[to - 1] : 0;
    if (e > b)
        msgpack_sbuffer_write(sb, w->entries.data + b, e - b);
    if (sync_id) {
        pk_str(&pk, "sync_id", 7);
        pk_str(&pk, sync_id, strlen(sync_id));
        pk_str(&pk, "part", 4);
        msgpack_pack_unsigned_int(&pk, part);
        pk_str(&pk, "parts", 5);
        msgpack_pack_unsigned_int(&pk, parts);
    }
}

static void copy_str(char *dst, size_t cap, pd_str s)
{
    size_t n = s.n < cap - 1 ? s.n : cap - 1;
    memcpy(dst, s.p, n);
    dst[n] = '\0';
}

static bool key_is(pd_str k, const char *name)
{
    return k.n == strlen(name) && memcmp(k.p, name, k.n) == 0;
}

/* One element of `failed`: {i, error, message} (or {conn, ...}: skipped). */
static bool read_failure(mp_reader *r, void (*fn)(void *, int64_t, const char *, const char *),
                         void *ctx)
{
    uint32_t n;
    if (!mpr_map(r, &n))
        return false;
    int64_t i = -1;
    char err[48] = "error", msg[256] = "";
    for (uint32_t k = 0; k < n; k++) {
        pd_str key, v;
        if (!mpr_str(r, &key))
            return false;
        if (key_is(key, "i") && mpr_peek(r) == MPR_INT) {
            if (!mpr_int(r, &i))
                return false;
        } else if (key_is(key, "error") && mpr_peek(r) == MPR_STR) {
            if (!mpr_str(r, &v))
                return false;
            copy_str(err, sizeof err, v);
        } else if (key_is(key, "message") && mpr_peek(r) == MPR_STR) {
            if (!mpr_str(r, &v))
                return false;
            copy_str(msg, sizeof msg, v);
        } else if (!mpr_skip(r)) {
            return false;
        }
    }
    if (i >= 0 && fn)
        fn(ctx, i, err, msg);
    return true;
}

bool pl_parse_reply(const void *data, size_t len, pl_reply *rep,
                    void (*fn)(void *ctx, int64_t i, const char *err, const char *msg), void *ctx)
{
    mp_reader r;
    uint32_t n;
    bool have_ok = false;
    memset(rep, 0, sizeof *rep);
    mpr_init(&r, data, len);
    if (!mpr_map(&r, &n))
        return false;
    for (uint32_t k = 0; k < n; k++) {
        pd_str key, v;
        if (!mpr_str(&r, &key))
            return false;
        if (key_is(key, "ok")) {
            if (!mpr_bool(&r, &rep->ok))
                return false;
            have_ok = true;
        } else if (key_is(key, "duplicate") && mpr_peek(&r) == MPR_BOOL) {
            if (!mpr_bool(&r, &rep->duplicate))
                return false;
        } else if (key_is(key, "error") && mpr_peek(&r) == MPR_STR) {
            if (!mpr_str(&r, &v))
                return false;
            copy_str(rep->error, sizeof rep->error, v);
            rep->partial = strcmp(rep->error, "partial") == 0;
        } else if (key_is(key, "message") && mpr_peek(&r) == MPR_STR) {
            if (!mpr_str(&r, &v))
                return false;
            copy_str(rep->message, sizeof rep->message, v);
        } else if (key_is(key, "failed") && mpr_peek(&r) == MPR_ARRAY) {
            uint32_t m;
            if (!mpr_array(&r, &m))
                return false;
            for (uint32_t j = 0; j < m; j++)
                if (!read_failure(&r, fn, ctx))
                    return false;
        } else if (!mpr_skip(&r)) {
            return false;
        }
    }
    return have_ok;
}

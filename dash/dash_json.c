/* dash_json.c - the JSON of presence-dash (see dash_json.h).
 *
 * Design: MessagePack from the network is read only with common/wire's
 * bounds-checked reader and decoders; jansson builds every JSON value.
 * The nodes table is a small array (DASH_NODES_MAX) of what each node's
 * latest heartbeat said plus a ring of rate samples: the growth of the
 * heartbeat's `events` and `notifications` counters divided by the time
 * between two heartbeats of one incarnation. It is owned by one thread
 * (presence-dash's loop); nothing here locks. */
#include "dash_json.h"
#include <stdlib.h>
#include <string.h>
#include "wire/codec.h"
#include "wire/codec_repl.h"
#include "wire/mpread.h"
#include "wire/ptypes.h"

/* ---- MessagePack to JSON ------------------------------------------------------ */

/* A string as JSON; bytes that are not UTF-8 become U+FFFD. */
static json_t *str_json(const char *p, size_t n) {
    json_t *j = json_stringn(p, n);
    if (j != NULL || n > 65536) return j;
    char *buf = malloc(n * 3 + 1);
    size_t o = 0;
    if (buf == NULL) return NULL;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)p[i];
        size_t len = c < 0x80 ? 1 : 0;
        for (size_t k = 2; len == 0 && k <= 4 && i + k <= n; k++) {
            json_t *t = json_stringn(p + i, k); /* one valid sequence of k bytes? */
            if (t) len = k;
            json_decref(t);
        }
        if (len == 0 || (len == 1 && c == 0)) {
            memcpy(buf + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(buf + o, p + i, len);
            o += len;
            i += len;
        }
    }
    j = json_stringn(buf, o);
    free(buf);
    return j;
}

static json_t *mp_value(mp_reader *r, int depth);

static json_t *mp_container(mp_reader *r, int depth, bool map) {
    uint32_t n;
    if (!(map ? mpr_map(r, &n) : mpr_array(r, &n))) return NULL;
    json_t *out = map ? json_object() : json_array();
    for (uint32_t i = 0; out != NULL && i < n; i++) {
        pd_str key;
        if (map && mpr_peek(r) != MPR_STR) {
            mpr_fail(r, PD_EBADVALUE, "map key is not a string");
            goto fail;
        }
        if (map && !mpr_str(r, &key)) goto fail;
        json_t *v = mp_value(r, depth + 1);
        if (v == NULL) goto fail;
        int rc = map ? json_object_setn_new(out, key.p, key.n, v) : json_array_append_new(out, v);
        if (rc != 0) {
            mpr_fail(r, PD_EBADVALUE, "map key is not UTF-8");
            goto fail;
        }
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

static json_t *mp_value(mp_reader *r, int depth) {
    bool b;
    int64_t i;
    pd_str s;
    if (depth > MPR_MAX_DEPTH) {
        mpr_fail(r, PD_EBADMSGPACK, "nested too deep");
        return NULL;
    }
    switch (mpr_peek(r)) {
    case MPR_NIL: return mpr_nil(r) ? json_null() : NULL;
    case MPR_BOOL: return mpr_bool(r, &b) ? json_boolean(b) : NULL;
    case MPR_INT: return mpr_int(r, &i) ? json_integer(i) : NULL;
    case MPR_STR: return mpr_str(r, &s) ? str_json(s.p, s.n) : NULL;
    case MPR_ARRAY: return mp_container(r, depth, false);
    case MPR_MAP: return mp_container(r, depth, true);
    case MPR_FLOAT:
    case MPR_BIN:
    case MPR_EXT: return mpr_skip(r) ? json_null() : NULL;
    default:
        mpr_fail(r, PD_EBADMSGPACK, "malformed or truncated MessagePack");
        return NULL;
    }
}

json_t *dash_mp_json(const void *buf, size_t len, pd_err *err) {
    mp_reader r;
    mpr_init(&r, buf, len);
    json_t *v = mp_value(&r, 0);
    if (v != NULL && mpr_remaining(&r) != 0) {
        json_decref(v);
        v = NULL;
        mpr_fail(&r, PD_EBADMSGPACK, "trailing bytes");
    }
    if (v == NULL) {
        if (r.err == PD_OK) mpr_fail(&r, PD_ENOMEM, "out of memory");
        pd_err_set(err, r.err, "%s", r.why);
    }
    return v;
}

/* ---- notifications, user lookups, frames ------------------------------------- */

json_t *dash_note_json(const void *buf, size_t len, uint64_t at_ms, pd_err *err) {
    pd_view v;
    if (pd_notification_decode(buf, len, &v, err) != PD_OK) return NULL;
    json_t *o = json_object();
    if (o == NULL) return NULL;
    json_object_set_new(o, "user", str_json(v.user.p, v.user.n));
    json_object_set_new(o, "status", json_string(pd_public_name(v.status)));
    json_object_set_new(o, "text", str_json(v.text.p, v.text.n));
    json_object_set_new(o, "emoji", str_json(v.emoji.p, v.emoji.n));
    json_object_set_new(o, "expires_at", json_integer(v.expires_at));
    json_object_set_new(o, "last_seen", json_integer(v.last_seen));
    json_object_set_new(o, "ts", json_integer(v.ts));
    json_object_set_new(o, "at", json_integer((json_int_t)at_ms));
    return o;
}

/* The reply as JSON, or NULL with a line in errors (what = which query). */
static json_t *reply_json(const void *buf, size_t len, const char *what, json_t *errors) {
    pd_err err = {PD_OK, ""};
    if (buf == NULL) {
        json_array_append_new(errors, json_sprintf("%s: no node answered", what));
        return NULL;
    }
    json_t *v = dash_mp_json(buf, len, &err);
    if (v == NULL) {
        json_array_append_new(errors, json_sprintf("%s: bad reply: %s", what, err.msg));
        return NULL;
    }
    json_t *ok = json_object_get(v, "ok");
    if (!json_is_object(v) || json_is_false(ok)) {
        const char *code = json_string_value(json_object_get(v, "error"));
        const char *msg = json_string_value(json_object_get(v, "message"));
        json_array_append_new(errors, json_sprintf("%s: refused: %s: %s", what,
                                                   code ? code : "?", msg ? msg : "?"));
        json_decref(v);
        return NULL;
    }
    return v;
}

/* The first entry of a get reply's users, or null. */
static json_t *first_user(const void *buf, size_t len, const char *what, json_t *errors) {
    json_t *v = reply_json(buf, len, what, errors);
    json_t *u = json_array_get(json_object_get(v, "users"), 0);
    json_t *out = json_is_object(u) ? json_incref(u) : json_null();
    if (v != NULL && !json_is_object(u))
        json_array_append_new(errors, json_sprintf("%s: reply without a user entry", what));
    json_decref(v);
    return out;
}

json_t *dash_user_json(const char *user, const void *pub, size_t pub_len, const void *own,
                       size_t own_len, const void *dev, size_t dev_len) {
    json_t *o = json_object(), *errors = json_array();
    if (o == NULL || errors == NULL) {
        json_decref(o);
        json_decref(errors);
        return NULL;
    }
    json_object_set_new(o, "user", str_json(user, strlen(user)));
    json_object_set_new(o, "public", first_user(pub, pub_len, "get (public view)", errors));
    json_object_set_new(o, "own", first_user(own, own_len, "get (own view)", errors));
    json_t *d = reply_json(dev, dev_len, "devices", errors);
    json_t *list = json_object_get(d, "devices");
    if (d != NULL && !json_is_array(list))
        json_array_append_new(errors, json_string("devices: reply without a device list"));
    json_object_set_new(o, "devices", json_is_array(list) ? json_incref(list) : json_null());
    /* How fresh the devices answer is (docs/protocol.md section 4): null
     * from a node that does not say. */
    json_t *as_of = json_object_get(d, "as_of");
    json_object_set_new(o, "as_of", json_is_integer(as_of) ? json_incref(as_of) : json_null());
    json_object_set_new(o, "stale", json_boolean(json_is_true(json_object_get(d, "stale"))));
    json_decref(d);
    json_object_set_new(o, "errors", errors);
    return o;
}

/* The same answer, freshness aside (`as_of` and `stale` are each node's
 * own by nature). */
static bool same(pd_str a, pd_str b) {
    msgpack_sbuffer x, y;
    if (a.p == NULL || b.p == NULL) return false;
    msgpack_sbuffer_init(&x);
    msgpack_sbuffer_init(&y);
    pd_reply_strip_fresh(a.p, a.n, &x);
    pd_reply_strip_fresh(b.p, b.n, &y);
    bool eq = x.size == y.size && (x.size == 0 || memcmp(x.data, y.data, x.size) == 0);
    msgpack_sbuffer_destroy(&x);
    msgpack_sbuffer_destroy(&y);
    return eq;
}

json_t *dash_agreement_json(const char *const *nodes, const pd_str *get, const pd_str *dev,
                            size_t n) {
    json_t *list = json_array();
    int groups = 0, *answer = calloc(n ? n : 1, sizeof *answer);
    bool missing = false;
    for (size_t i = 0; answer && i < n; i++) {
        if (get[i].p == NULL || dev[i].p == NULL) {
            missing = true;
            continue;
        }
        for (size_t k = 0; k < i && answer[i] == 0; k++)
            if (answer[k] && same(get[i], get[k]) && same(dev[i], dev[k])) answer[i] = answer[k];
        if (answer[i] == 0) answer[i] = ++groups;
    }
    for (size_t i = 0; list && answer && i < n; i++)
        json_array_append_new(list, json_pack("{s:s, s:i}", "node", nodes[i], "answer", answer[i]));
    json_t *agree = groups > 1 ? json_false() : groups == 1 && !missing ? json_true() : json_null();
    free(answer);
    return json_pack("{s:o, s:o}", "agree", agree, "nodes", list);
}

char *dash_sse_frame(const char *event, const json_t *data, size_t *len) {
    char *body = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
    if (body == NULL) return NULL;
    size_t n = strlen("event: \ndata: \n\n") + strlen(event) + strlen(body);
    char *out = malloc(n + 1);
    if (out != NULL) {
        snprintf(out, n + 1, "event: %s\ndata: %s\n\n", event, body);
        if (len) *len = n;
    }
    free(body);
    return out;
}

/* persist_redis.c - Redis for the snapshots: the address and AUTH, the
 * snapshot read at start, the async connection with its deadlines, the
 * snapshot built a slice per loop turn and written in 1 MiB APPENDs then
 * swapped in, and the final synchronous snapshot at a clean stop. */
#include <hiredis/adapters/libuv.h>
#include "persist_int.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/clock.h"
#include "node.h"

/* ---- Redis address ----------------------------------------------------------------- */

/* Host, port and credentials: PRESENCE_REDIS_URL, PRESENCE_REDIS_USER and
 * PRESENCE_REDIS_PASSWORD (config.c parses and checks them).
 * CHECKLIST: a new Redis command or key in this file? deploy/redis-users.acl
 * allows the snapshot user only the ones of schemas/snapshot.md (Access). */
int persist__parse_redis_url(const pd_config *cfg, pd_persist *ps) {
    if (pd_config_redis_target(cfg, &ps->redis) != 0) return -1;
    snprintf(ps->host, sizeof ps->host, "%s", ps->redis.host);
    ps->port = ps->redis.port;
    return 0;
}

/* The AUTH command for the credentials, "AUTH user pass" or "AUTH pass",
 * into argv; returns its length, 0 when there is no password. Sent first
 * on every connection (argv form: a password is never formatted). */
static int auth_argv(const pd_persist *ps, const char *argv[3]) {
    int argc = 0;
    if (ps->redis.password[0] == '\0') return 0;
    argv[argc++] = "AUTH";
    if (ps->redis.user[0] != '\0') argv[argc++] = ps->redis.user;
    argv[argc++] = ps->redis.password;
    return argc;
}

/* A refused AUTH (WRONGPASS, NOAUTH, ...) is logged once until AUTH works
 * again; the node keeps serving and retries as when Redis is down. */
static void auth_refused(pd_persist *ps, const char *why) {
    if (ps->auth_logged) return;
    ps->auth_logged = true;
    pd_log(PD_LOG_ERROR, "Redis %s:%d refused AUTH as %s%s%s: %s; snapshots paused, retrying",
           ps->host, ps->port, ps->redis.user[0] ? "user '" : "the default user",
           ps->redis.user, ps->redis.user[0] ? "'" : "", why);
}

/* AUTH on a blocking connection just made; true if done or not needed. */
static bool auth_sync(pd_persist *ps, redisContext *c) {
    const char *argv[3];
    int argc = auth_argv(ps, argv);
    if (argc == 0) return true;
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    bool ok = r != NULL && r->type == REDIS_REPLY_STATUS;
    if (!ok) auth_refused(ps, r && r->type == REDIS_REPLY_ERROR ? r->str : c->errstr);
    else ps->auth_logged = false;
    freeReplyObject(r);
    return ok;
}

uint8_t *persist__load_snapshot(pd_persist *ps, size_t *len) {
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout(ps->host, ps->port, tv);
    uint8_t *buf = NULL;
    *len = 0;
    if (c == NULL || c->err) {
        pd_log(PD_LOG_WARN, "Redis %s:%d unreachable at start (%s): no snapshot to restore",
               ps->host, ps->port, c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (!auth_sync(ps, c)) {
        redisFree(c);
        return NULL;
    }
    redisReply *r = redisCommand(c, "STRLEN %s", ps->key);
    long long total = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        pd_log(PD_LOG_WARN, "Redis: cannot read %s: %s", ps->key, r ? r->str : c->errstr);
    freeReplyObject(r);
    if (total > 0) buf = malloc((size_t)total);
    for (long long off = 0; buf && off < total; off += CHUNK) {
        /* GETRANGE in 1 MiB steps: never a long command for Redis. */
        r = redisCommand(c, "GETRANGE %s %lld %lld", ps->key, off, off + CHUNK - 1);
        if (r == NULL || r->type != REDIS_REPLY_STRING || off + (long long)r->len > total) {
            pd_log(PD_LOG_WARN, "Redis: snapshot read failed at byte %lld", off);
            freeReplyObject(r);
            free(buf);
            buf = NULL;
            break;
        }
        memcpy(buf + off, r->str, r->len);
        *len = (size_t)off + r->len;
        freeReplyObject(r);
    }
    redisFree(c);
    return buf;
}

/* ---- snapshots while running ------------------------------------------------------ */

static void redis_down(pd_node *n, const char *why) {
    pd_persist *ps = n->persist;
    ps->st.redis_up = false;
    if (!ps->redis_logged_down) {
        pd_log(PD_LOG_WARN, "Redis %s:%d: %s; snapshots paused, retrying", ps->host, ps->port, why);
        ps->redis_logged_down = true;
    }
    ps->next_connect = pd_mono_ms() + ps->backoff;
    ps->backoff = ps->backoff * 2 > 30000 ? 30000 : ps->backoff * 2;
}

/* Connected (and authenticated): snapshots may go. */
static void redis_ready(pd_node *n) {
    pd_persist *ps = n->persist;
    if (ps->redis_logged_down) pd_log(PD_LOG_INFO, "Redis %s:%d is back", ps->host, ps->port);
    ps->redis_logged_down = false;
    ps->st.redis_up = true;
    ps->backoff = 500;
}

static void on_connect(const redisAsyncContext *ac, int status) {
    pd_node *n = ac->data;
    pd_persist *ps = n->persist;
    ps->connecting = false;
    if (status != REDIS_OK) {
        ps->ac = NULL; /* hiredis frees the context after this callback */
        redis_down(n, ac->errstr);
        return;
    }
    if (ps->redis.password[0] == '\0') redis_ready(n); /* else once AUTH is accepted */
    else ps->auth_deadline = pd_mono_ms() + AUTH_TIMEOUT_MS;
}

static void on_auth(redisAsyncContext *ac, void *reply, void *priv) {
    pd_node *n = priv;
    pd_persist *ps = n->persist;
    redisReply *r = reply; /* borrowed; NULL when the connection went first */
    ps->auth_deadline = 0;
    if (r == NULL) return; /* on_disconnect handles that */
    if (r->type == REDIS_REPLY_STATUS) {
        ps->auth_logged = false;
        redis_ready(n);
        return;
    }
    auth_refused(ps, r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    ps->redis_logged_down = true; /* logged just now, more clearly */
    redis_down(n, "AUTH refused");
    redisAsyncDisconnect(ac); /* after this callback; on_disconnect clears ps->ac */
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
    pd_node *n = ac->data;
    pd_persist *ps = n->persist;
    ps->ac = NULL;
    if (ps->state == SNAP_WRITING) ps->failed = true;
    if (status != REDIS_OK) redis_down(n, "connection lost");
}

void persist__redis_connect(pd_node *n) {
    pd_persist *ps = n->persist;
    redisAsyncContext *ac = redisAsyncConnect(ps->host, ps->port);
    if (ac == NULL || ac->err) {
        redis_down(n, ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac);
        return;
    }
    ac->data = n;
    redisLibuvAttach(ac, &n->loop);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    const char *auth[3];
    int argc = auth_argv(ps, auth);
    /* Queued now, so it is the first command once connected. */
    if (argc > 0) redisAsyncCommandArgv(ac, on_auth, n, argc, auth, NULL);
    ps->ac = ac;
    ps->connecting = true;
    ps->connect_deadline = pd_mono_ms() + CONNECT_TIMEOUT_MS;
}

/* A connect that neither succeeded nor failed in time is given up. Not
 * only a slow network: hiredis' libuv adapter drops the error of a refused
 * non-blocking connect (uv_poll reports it as a status it ignores), and
 * then the connect callback never comes at all. */
void persist__connect_expired(pd_node *n) {
    pd_persist *ps = n->persist;
    redisAsyncContext *ac = ps->ac;
    ps->ac = NULL;
    ps->connecting = false;
    redisAsyncFree(ac); /* not connected: no callback runs */
    redis_down(n, "connect timed out or refused");
}

static void write_done(pd_node *n) {
    pd_persist *ps = n->persist;
    uint64_t now = pd_mono_ms();
    free(ps->buf);
    ps->buf = NULL;
    ps->state = SNAP_IDLE;
    ps->write_deadline = 0;
    if (ps->failed) {
        ps->st.snapshot_failures++;
        ps->next_snapshot = now + ps->backoff;
        return;
    }
    ps->st.snapshots++;
    ps->st.last_snapshot_at = pd_now_ms(); /* wall clock: the metric's age */
    ps->st.last_snapshot_ms = now - ps->started_at;
    ps->st.last_snapshot_bytes = ps->len;
    ps->next_snapshot = now + n->cfg.snapshot_interval_ms;
    pd_log(PD_LOG_DEBUG, "snapshot written: %zu bytes in %llu ms", ps->len,
           (unsigned long long)ps->st.last_snapshot_ms);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv) {
    pd_node *n = priv;
    pd_persist *ps = n->persist;
    redisReply *r = reply; /* borrowed: hiredis frees it after this returns */
    (void)ac;
    if (r == NULL || (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "ERR no such key", 15) != 0)) {
        if (!ps->failed) pd_log(PD_LOG_WARN, "Redis: snapshot write failed: %s",
                                r ? r->str : "no reply");
        ps->failed = true;
    }
    if (--ps->pending == 0) write_done(n);
}

static void command(pd_node *n, int argc, const char **argv, const size_t *lens) {
    pd_persist *ps = n->persist;
    if (ps->ac && redisAsyncCommandArgv(ps->ac, on_reply, n, argc, argv, lens) == REDIS_OK)
        ps->pending++;
    else
        ps->failed = true;
}

/* Temporary key in 1 MiB APPENDs, then both RENAMEs in one MULTI (O(1):
 * neither target exists), then UNLINK of the old value (freed lazily). */
static void write_snapshot(pd_node *n) {
    pd_persist *ps = n->persist;
    const char *unlink_tmp[] = {"UNLINK", ps->tmp, ps->old};
    command(n, 3, unlink_tmp, NULL);
    for (size_t off = 0; off < ps->len; off += CHUNK) {
        size_t k = ps->len - off < CHUNK ? ps->len - off : CHUNK;
        const char *argv[] = {"APPEND", ps->tmp, (const char *)ps->buf + off};
        size_t lens[] = {6, strlen(ps->tmp), k};
        command(n, 3, argv, lens);
    }
    const char *multi[] = {"MULTI"}, *exec[] = {"EXEC"};
    const char *mv_old[] = {"RENAME", ps->key, ps->old};
    const char *mv_new[] = {"RENAME", ps->tmp, ps->key};
    const char *unlink_old[] = {"UNLINK", ps->old};
    command(n, 1, multi, NULL);
    command(n, 3, mv_old, NULL);
    command(n, 3, mv_new, NULL);
    command(n, 1, exec, NULL);
    command(n, 2, unlink_old, NULL);
    if (ps->pending == 0) write_done(n);
}

/* A connection that stopped answering (an AUTH or a snapshot write without
 * a reply in time) is given up: hiredis' libuv adapter ignores an error
 * libuv reports on its poll, after which libuv polls no more, and the
 * commands in flight would wait forever, and snapshots with them (seen
 * after Redis restarts, tests/chaos/repro_redis_wedge.py). Freeing the
 * context answers them with no reply, which ends the write as failed. */
void persist__redis_expired(pd_node *n, const char *why) {
    pd_persist *ps = n->persist;
    redisAsyncContext *ac = ps->ac;
    ps->auth_deadline = ps->write_deadline = 0;
    ps->failed = true;
    ps->redis_logged_down = false; /* say it, even if the last outage was logged */
    redisAsyncFree(ac); /* on_reply(NULL) for each command, then on_disconnect */
    ps->ac = NULL;
    redis_down(n, why);
    if (ps->state == SNAP_WRITING) { /* no callback came: end it here */
        ps->pending = 0;
        write_done(n);
    }
}

static void on_idle(uv_idle_t *h) {
    pd_node *n = h->data;
    pd_persist *ps = n->persist;
    if (!pd_snap_step(ps->snap, n->model, SNAP_BUCKETS)) return;
    uv_idle_stop(h);
    pd_status s = pd_snap_finish(ps->snap, &ps->buf, &ps->len);
    ps->snap = NULL;
    if (s != PD_OK || ps->ac == NULL || !ps->st.redis_up) {
        ps->failed = true;
        write_done(n);
        return;
    }
    ps->state = SNAP_WRITING;
    ps->failed = false;
    ps->write_deadline = pd_mono_ms() + WRITE_TIMEOUT_MS(ps->len);
    write_snapshot(n);
}

void persist__start_snapshot(pd_node *n) {
    pd_persist *ps = n->persist;
    pd_snap_info *info = malloc(sizeof *info);
    if (info == NULL) return;
    pd_repl_snapshot_info(n->repl, info, n->now);
    uint64_t now = pd_mono_ms();
    if (ps->sample_at && now - ps->sample_at >= SAMPLE_MARGIN_MS) {
        ps->stream_seq_next = ps->sample;
        ps->sample_at = 0;
    }
    info->stream_seq = ps->stream_seq_next;
    ps->st.snapshot_stream_seq = info->stream_seq;
    if (ps->sample_at == 0) persist__request_info(n, now);
    ps->snap = pd_snap_begin(n->model, info);
    free(info);
    if (ps->snap == NULL) return;
    ps->state = SNAP_BUILDING;
    ps->started_at = pd_mono_ms();
    uv_idle_start(&n->snap_idle, on_idle);
}

void persist__final_snapshot(pd_node *n) {
    pd_persist *ps = n->persist;
    pd_snap_info *info = malloc(sizeof *info);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (info == NULL) return;
    pd_repl_snapshot_info(n->repl, info, pd_now_ms());
    info->stream_seq = persist__final_stream_seq(n);
    info->left = true; /* after our `leaving`: the peers dropped our devices */
    pd_snap *s = pd_snap_begin(n->model, info);
    free(info);
    if (s == NULL) return;
    while (!pd_snap_step(s, n->model, 1u << 20)) {}
    if (pd_snap_finish(s, &buf, &len) != PD_OK) return;
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout(ps->host, ps->port, tv);
    bool ok = c && !c->err;
    if (ok) {
        redisSetTimeout(c, tv);
        ok = auth_sync(ps, c);
    }
    if (ok) {
        /* A key of its own: a periodic write still in flight on the async
         * connection may be appending to ps->tmp. */
        char fin[sizeof ps->tmp];
        snprintf(fin, sizeof fin, "%s:final", ps->key);
        redisAppendCommand(c, "UNLINK %s %s", fin, ps->old);
        for (size_t off = 0; off < len; off += CHUNK)
            redisAppendCommand(c, "APPEND %s %b", fin, buf + off,
                               len - off < CHUNK ? len - off : CHUNK);
        redisAppendCommand(c, "MULTI");
        redisAppendCommand(c, "RENAME %s %s", ps->key, ps->old);
        redisAppendCommand(c, "RENAME %s %s", fin, ps->key);
        redisAppendCommand(c, "EXEC");
        redisAppendCommand(c, "UNLINK %s", ps->old);
        size_t cmds = 6 + (len + CHUNK - 1) / CHUNK;
        for (size_t i = 0; i < cmds; i++) {
            redisReply *r = NULL;
            if (redisGetReply(c, (void **)&r) != REDIS_OK) { ok = false; break; }
            freeReplyObject(r);
        }
    }
    pd_log(ok ? PD_LOG_INFO : PD_LOG_WARN, "final snapshot %s (%zu bytes)",
           ok ? "written" : "not written: Redis unreachable or refused AUTH", len);
    if (c) redisFree(c);
    free(buf);
}


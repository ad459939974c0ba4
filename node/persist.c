/* persist.c - snapshots in Redis and replay from JetStream (see persist.h). */
#include "persist.h"
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/clock.h"
#include "node.h"
#include "sync/snapshot.h"

#define STREAM_NAME "PRESENCE_DELTAS"
#define CHUNK (1u << 20)             /* bytes per Redis command */
#define SNAP_BUCKETS 512             /* hash buckets per loop turn */
#define REPLAY_DEADLINE_MS 60000
#define HELD_MAX 100000
#define CONNECT_TIMEOUT_MS 1000      /* a Redis connect taking longer is given up */
#define AUTH_TIMEOUT_MS 2000         /* so is an AUTH unanswered this long */
/* and a snapshot write: 2 s, and 125 ms more per MiB (8 MiB/s is far below
 * what a Redis on a private network takes) */
#define WRITE_TIMEOUT_MS(len) (2000 + (uint64_t)(len) / 8389)
#define INFO_SUBJECT "$JS.API.STREAM.INFO." STREAM_NAME
#define INFO_TIMEOUT_MS 5000         /* a stream info request unanswered this long is retried */
#define INFO_MAX_BYTES 65536         /* a longer stream info reply is not ours */
/* A stream sequence read at least this long before a snapshot starts is
 * the one it claims to include: deltas in flight at the reading (published,
 * stored, not yet applied here) have arrived by then. */
#define SAMPLE_MARGIN_MS 1000

typedef enum { SNAP_IDLE, SNAP_BUILDING, SNAP_WRITING } snap_state;

struct pd_persist {
    char key[PD_ID_MAX * 2 + 16], tmp[PD_ID_MAX * 2 + 24], old[PD_ID_MAX * 2 + 24];
    char host[256];
    int port;
    pd_redis_target redis;          /* host, port and AUTH credentials */
    bool auth_logged;               /* a refused AUTH was logged (once until it works) */
    /* replay */
    jsCtx *js;
    natsSubscription *replay;
    uint64_t replay_end, replay_deadline;
    natsMsg **held;
    uint32_t nheld;
    uint64_t reconnects_seen;       /* n->nats_reconnects last looked at */
    uint64_t restored_stream_seq;   /* from the snapshot restored at start */
    /* stream sequences: what the next snapshot claims to include, and the
     * last reading of the stream's end with the time it was asked for */
    natsSubscription *info_sub;
    char info_inbox[64];
    uint64_t stream_seq_next, sample, sample_at, info_asked_at;
    uint64_t first_seq, msgs;       /* the stream's state at start */
    /* snapshots */
    redisAsyncContext *ac;
    bool connecting, redis_logged_down;
    uint64_t next_connect, connect_deadline, backoff, next_snapshot;
    uint64_t auth_deadline, write_deadline; /* 0: not waiting */
    snap_state state;
    pd_snap *snap;
    uint8_t *buf;
    size_t len;
    uint32_t pending;               /* replies still to come */
    bool failed;
    uint64_t started_at;
    pd_persist_stats st;
};

/* ---- Redis address ----------------------------------------------------------------- */

/* Host, port and credentials: PRESENCE_REDIS_URL, PRESENCE_REDIS_USER and
 * PRESENCE_REDIS_PASSWORD (config.c parses and checks them).
 * CHECKLIST: a new Redis command or key in this file? deploy/redis-users.acl
 * allows the snapshot user only the ones of schemas/snapshot.md (Access). */
static int parse_redis_url(const pd_config *cfg, pd_persist *ps) {
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

/* ---- start: snapshot, stream, replay ------------------------------------------------- */

static uint8_t *load_snapshot(pd_persist *ps, size_t *len) {
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

static void restore(pd_node *n) {
    pd_persist *ps = n->persist;
    size_t len;
    uint8_t *buf = load_snapshot(ps, &len);
    if (buf == NULL) {
        pd_log(PD_LOG_INFO, "no snapshot of %s: starting from the stream and the peers",
               n->cfg.node_id);
        return;
    }
    pd_snap_info *info = malloc(sizeof *info);
    pd_err err = {PD_OK, ""};
    uint64_t t0 = pd_mono_ms();
    pd_status s = info ? pd_repl_restore(n->repl, buf, len, pd_now_ms(), info, &err) : PD_ENOMEM;
    if (s == PD_OK) {
        pd_model_stats ms;
        pd_model_stats_get(n->model, &ms);
        ps->st.restored_devices = ms.devices;
        ps->restored_stream_seq = info->stream_seq;
        pd_log(PD_LOG_INFO,
               "restored snapshot: %zu bytes, %llu devices, %llu users, stream sequence %llu, "
               "in %llu ms", len, (unsigned long long)ms.devices, (unsigned long long)ms.users,
               (unsigned long long)info->stream_seq, (unsigned long long)(pd_mono_ms() - t0));
    } else {
        pd_log(PD_LOG_WARN, "snapshot refused (%s): starting from the stream and the peers",
               err.msg);
    }
    free(info);
    free(buf);
}

static void on_replay(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
    pd_node *n = closure;
    (void)nc;
    (void)sub;
    if (pd_inbox_push(&n->inbox, msg, SUB_REPLAY)) uv_async_send(&n->wake);
}

static bool ensure_stream(pd_node *n) {
    pd_persist *ps = n->persist;
    jsStreamConfig cfg;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    char subj[PD_ID_MAX + 16];
    const char *subjects[1] = {subj};
    snprintf(subj, sizeof subj, "%s.delta.>", n->cfg.subject_prefix);
    jsStreamConfig_Init(&cfg);
    cfg.Name = STREAM_NAME;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    cfg.Retention = js_LimitsPolicy;
    cfg.MaxAge = (int64_t)n->cfg.stream_max_age_ms * 1000000;
    cfg.MaxBytes = (int64_t)n->cfg.stream_max_bytes;
    cfg.Replicas = (int64_t)n->cfg.stream_replicas;
    natsStatus s = NATS_ERR;
    /* A JetStream cluster that has just started elects its leader for a
     * few seconds: retry a little before doing without replay. */
    for (int attempt = 0; attempt < 4 && s != NATS_OK; attempt++) {
        if (attempt) nats_Sleep(1000);
        s = js_AddStream(&si, ps->js, &cfg, NULL, &jerr);
        if (s != NATS_OK && jerr == JSStreamNameExistErr)
            s = js_UpdateStream(&si, ps->js, &cfg, NULL, &jerr);
    }
    if (s != NATS_OK) {
        pd_log(PD_LOG_WARN, "JetStream: cannot create stream %s: %s (%d); no replay",
               STREAM_NAME, natsStatus_GetText(s), (int)jerr);
        return false;
    }
    ps->replay_end = si->State.LastSeq;
    ps->first_seq = si->State.FirstSeq;
    ps->msgs = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return true;
}

/* Replays the stream after the sequence the snapshot includes, up to the
 * end it has now. A snapshot that claims more than the stream holds is of
 * an older stream (deleted and made again): everything is replayed.
 * False if the replay could not start. */
static bool start_replay(pd_node *n) {
    pd_persist *ps = n->persist;
    jsSubOptions so;
    jsErrCode jerr = 0;
    char subj[PD_ID_MAX + 16];
    uint64_t after = ps->restored_stream_seq;
    if (after > ps->replay_end) {
        pd_log(PD_LOG_WARN, "snapshot includes stream sequence %llu but %s ends at %llu: "
               "replaying all of it", (unsigned long long)after, STREAM_NAME,
               (unsigned long long)ps->replay_end);
        after = 0;
        ps->restored_stream_seq = 0; /* a claim on the old stream says nothing */
    }
    ps->st.replay_from = after + 1;
    /* Nothing after the snapshot, or nothing kept at all (every message aged
     * out: the stream keeps its last sequence with no message, and an
     * ordered consumer would wait for one until the deadline). */
    if (after >= ps->replay_end || ps->msgs == 0 || ps->first_seq > ps->replay_end) return true;
    snprintf(subj, sizeof subj, "%s.delta.>", n->cfg.subject_prefix);
    jsSubOptions_Init(&so);
    so.Stream = STREAM_NAME;
    so.Ordered = true; /* push, flow-controlled, no acks: not nats.c 3.4's Fetch */
    if (after == 0) {
        so.Config.DeliverPolicy = js_DeliverAll;
    } else {
        /* Below the stream's first sequence (aged out), the server starts
         * at the first one it has. */
        so.Config.DeliverPolicy = js_DeliverByStartSequence;
        so.Config.OptStartSeq = after + 1;
    }
    natsStatus s = js_Subscribe(&ps->replay, ps->js, subj, on_replay, n, NULL, &so, &jerr);
    if (s != NATS_OK) {
        pd_log(PD_LOG_WARN, "JetStream: cannot replay %s: %s; peers will fill in", STREAM_NAME,
               natsStatus_GetText(s));
        ps->replay = NULL;
        return false;
    }
    ps->st.replaying = true;
    ps->replay_deadline = pd_mono_ms() + REPLAY_DEADLINE_MS;
    pd_log(PD_LOG_INFO, "replaying %s from sequence %llu up to %llu", STREAM_NAME,
           (unsigned long long)after + 1, (unsigned long long)ps->replay_end);
    return true;
}

static void publish_resync(pd_node *n) {
    char subj[PD_ID_MAX * 2 + 16];
    snprintf(subj, sizeof subj, "%s.resync.%s", n->cfg.subject_prefix, n->cfg.node_id);
    msgpack_sbuffer_clear(&n->out);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &n->out, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    pd_pack_kv_str(&pk, "node", pd_str_c(n->cfg.node_id));
    node__publish(n, subj);
}

void node__persist_resync(pd_node *n, const char *why) {
    if (n->persist && n->persist->st.replaying) return;
    publish_resync(n);
    pd_log(PD_LOG_INFO, "%s: asked socket servers to resync", why);
}

/* The replay reached the end the stream had at start (complete), or there
 * was none to do, or it gave up. A complete one makes the model include the
 * stream up to that end: the first snapshot of this life says so. */
static void finish_replay(pd_node *n, bool complete) {
    pd_persist *ps = n->persist;
    ps->stream_seq_next = complete ? ps->replay_end : ps->restored_stream_seq;
    if (ps->replay) {
        natsSubscription_Unsubscribe(ps->replay);
        natsSubscription_Destroy(ps->replay);
        ps->replay = NULL;
    }
    ps->st.replaying = false;
    pd_repl_restore_done(n->repl);
    n->now = pd_now_ms();
    for (uint32_t i = 0; i < ps->nheld; i++) {
        natsMsg *m = ps->held[i];
        pd_err err;
        pd_repl_on_delta(n->repl, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), n->now,
                         &err);
        natsMsg_Destroy(m);
    }
    free(ps->held);
    ps->held = NULL;
    ps->nheld = 0;
    publish_resync(n);
    pd_log(PD_LOG_INFO, "restore done (%llu deltas replayed); asked socket servers to resync",
           (unsigned long long)ps->st.replayed_deltas);
}

void node__persist_replay_msg(pd_node *n, void *msg) {
    pd_persist *ps = n->persist;
    jsMsgMetaData *meta = NULL;
    pd_err err;
    if (ps == NULL || !ps->st.replaying) return;
    pd_repl_replay_delta(n->repl, natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg),
                         n->now, &err);
    ps->st.replayed_deltas++;
    if (natsMsg_GetMetaData(&meta, msg) == NATS_OK) {
        bool done = meta->Sequence.Stream >= ps->replay_end;
        jsMsgMetaData_Destroy(meta);
        if (done) finish_replay(n, true);
    }
}

bool node__persist_hold(pd_node *n, void *msg) {
    pd_persist *ps = n->persist;
    if (ps == NULL || !ps->st.replaying || ps->nheld >= HELD_MAX) return false;
    natsMsg **v = realloc(ps->held, sizeof *v * (ps->nheld + 1));
    if (v == NULL) return false;
    ps->held = v;
    ps->held[ps->nheld++] = msg;
    return true;
}

/* ---- the stream's end, read at each snapshot ------------------------------------------ */

static void on_info(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
    pd_node *n = closure;
    (void)nc;
    (void)sub;
    if (pd_inbox_push(&n->inbox, msg, SUB_STREAM_INFO)) uv_async_send(&n->wake);
}

static void subscribe_info(pd_node *n) {
    pd_persist *ps = n->persist;
    natsInbox *inbox = NULL;
    if (natsInbox_Create(&inbox) != NATS_OK) return;
    snprintf(ps->info_inbox, sizeof ps->info_inbox, "%s", (const char *)inbox);
    natsInbox_Destroy(inbox);
    if (natsConnection_Subscribe(&ps->info_sub, n->nc, ps->info_inbox, on_info, n) != NATS_OK) {
        pd_log(PD_LOG_WARN, "JetStream: cannot subscribe for stream info: snapshots will claim "
               "the stream sequence of the restore");
        ps->info_sub = NULL;
    }
}

/* Asks for the stream's last sequence without waiting: the reply comes
 * through the inbox like any message (node__persist_stream_info). */
static void request_info(pd_node *n, uint64_t now) {
    pd_persist *ps = n->persist;
    if (ps->info_sub == NULL || (ps->info_asked_at && now - ps->info_asked_at < INFO_TIMEOUT_MS))
        return;
    if (natsConnection_PublishRequest(n->nc, INFO_SUBJECT, ps->info_inbox, NULL, 0) == NATS_OK)
        ps->info_asked_at = now;
}

/* Reads state.last_seq from a STREAM.INFO reply (JSON; an error reply has
 * no "state"). The "config" part before it has no "last_seq" key. */
static bool parse_last_seq(const char *data, int len, uint64_t *out) {
    char buf[INFO_MAX_BYTES];
    if (data == NULL || len <= 0 || len >= (int)sizeof buf) return false;
    memcpy(buf, data, (size_t)len);
    buf[len] = '\0';
    const char *state = strstr(buf, "\"state\":");
    const char *key = state ? strstr(state, "\"last_seq\":") : NULL;
    if (key == NULL) return false;
    key += strlen("\"last_seq\":");
    while (*key == ' ') key++;
    if (*key < '0' || *key > '9') return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(key, &end, 10);
    if (errno || (*end != ',' && *end != '}' && *end != ' ')) return false;
    *out = v;
    return true;
}

void node__persist_stream_info(pd_node *n, void *msg) {
    pd_persist *ps = n->persist;
    uint64_t seq;
    if (ps == NULL || ps->info_asked_at == 0) return; /* late or unasked */
    if (!parse_last_seq(natsMsg_GetData(msg), natsMsg_GetDataLength(msg), &seq)) {
        pd_log(PD_LOG_DEBUG, "JetStream: unexpected stream info reply");
        return;
    }
    ps->sample = seq;
    ps->sample_at = pd_mono_ms(); /* read by the server at the latest now */
    ps->info_asked_at = 0;
}

void node__persist_start(pd_node *n) {
    pd_persist *ps = calloc(1, sizeof *ps);
    n->persist = ps;
    if (ps == NULL) return;
    snprintf(ps->key, sizeof ps->key, "%s:snapshot:%s", n->cfg.redis_prefix, n->cfg.node_id);
    snprintf(ps->tmp, sizeof ps->tmp, "%s:tmp", ps->key);
    snprintf(ps->old, sizeof ps->old, "%s:old", ps->key);
    if (parse_redis_url(&n->cfg, ps) != 0)
        snprintf(ps->host, sizeof ps->host, "127.0.0.1"), ps->port = 6379;
    ps->backoff = 500;
    ps->next_snapshot = pd_mono_ms() + n->cfg.snapshot_interval_ms;
    uv_idle_init(&n->loop, &n->snap_idle);
    n->snap_idle.data = n;
    pd_repl_restore_begin(n->repl);
    restore(n);
    bool replay_ok = false;
    if (natsConnection_JetStream(&ps->js, n->nc, NULL) == NATS_OK && ensure_stream(n)) {
        replay_ok = start_replay(n);
        subscribe_info(n);
    }
    /* Nothing to replay after the snapshot is a complete replay; a stream
     * that could not be reached or read is not. */
    if (!ps->st.replaying) finish_replay(n, replay_ok);
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

static void redis_connect(pd_node *n) {
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
static void connect_expired(pd_node *n) {
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
static void redis_expired(pd_node *n, const char *why) {
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

static void start_snapshot(pd_node *n) {
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
    if (ps->sample_at == 0) request_info(n, now);
    ps->snap = pd_snap_begin(n->model, info);
    free(info);
    if (ps->snap == NULL) return;
    ps->state = SNAP_BUILDING;
    ps->started_at = pd_mono_ms();
    uv_idle_start(&n->snap_idle, on_idle);
}

void node__persist_tick(pd_node *n) {
    pd_persist *ps = n->persist;
    if (ps == NULL) return;
    uint64_t now = pd_mono_ms();
    if (ps->st.replaying && now >= ps->replay_deadline) {
        pd_log(PD_LOG_WARN, "replay did not reach the end in time; going on");
        finish_replay(n, false);
    }
    /* Back on NATS after an outage: what the socket servers sent to us
     * meanwhile went nowhere (no subscriber), and requests in flight when
     * the connection broke are lost. Their syncs repair both. During the
     * replay, the resync that ends it does. */
    uint64_t reconnects = __atomic_load_n(&n->nats_reconnects, __ATOMIC_RELAXED);
    if (reconnects != ps->reconnects_seen) {
        ps->reconnects_seen = reconnects;
        if (!ps->st.replaying) {
            publish_resync(n);
            pd_log(PD_LOG_INFO, "back on NATS: asked socket servers to resync");
        }
    }
    if (ps->connecting && now >= ps->connect_deadline) connect_expired(n);
    if (ps->ac && ps->auth_deadline && now >= ps->auth_deadline)
        redis_expired(n, "AUTH unanswered");
    else if (ps->ac && ps->state == SNAP_WRITING && ps->write_deadline && now >= ps->write_deadline)
        redis_expired(n, "snapshot write unanswered");
    if (ps->ac == NULL && !ps->connecting && now >= ps->next_connect) redis_connect(n);
    if (ps->state == SNAP_IDLE && ps->st.redis_up && !ps->st.replaying && now >= ps->next_snapshot)
        start_snapshot(n);
}

/* ---- stop ----------------------------------------------------------------------------- */

/* The sequence a last snapshot may claim: the stream's end now (stopping,
 * blocking is fine). A delta of a peer stored but not applied here yet is
 * skipped by the next replay and comes back from that peer's state
 * transfer, or its new incarnation, or goes with it when it is down for
 * good; our own are all in the snapshot. (Never called while replaying.) */
static uint64_t final_stream_seq(pd_node *n) {
    pd_persist *ps = n->persist;
    jsStreamInfo *si = NULL;
    jsOptions o;
    jsErrCode jerr = 0;
    uint64_t seq = ps->stream_seq_next;
    if (ps->js == NULL || ps->st.replaying || jsOptions_Init(&o) != NATS_OK) return seq;
    o.Wait = 1000;
    if (js_GetStreamInfo(&si, ps->js, STREAM_NAME, &o, &jerr) == NATS_OK) {
        seq = si->State.LastSeq;
        jsStreamInfo_Destroy(si);
    }
    return seq;
}

static void final_snapshot(pd_node *n) {
    pd_persist *ps = n->persist;
    pd_snap_info *info = malloc(sizeof *info);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (info == NULL) return;
    pd_repl_snapshot_info(n->repl, info, pd_now_ms());
    info->stream_seq = final_stream_seq(n);
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

void node__persist_stop(pd_node *n, bool final) {
    pd_persist *ps = n->persist;
    if (ps == NULL) return;
    /* Not while replaying: the model is half restored, and the snapshot
     * would be this life's, so the next start would skip the rest of the
     * earlier lives' deltas. The previous snapshot stays valid. */
    if (final && !ps->st.replaying) final_snapshot(n);
    if (ps->replay) {
        natsSubscription_Unsubscribe(ps->replay);
        natsSubscription_Destroy(ps->replay);
    }
    if (ps->info_sub) {
        natsSubscription_Unsubscribe(ps->info_sub);
        natsSubscription_Destroy(ps->info_sub);
    }
    for (uint32_t i = 0; i < ps->nheld; i++) natsMsg_Destroy(ps->held[i]);
    free(ps->held);
    pd_snap_abort(ps->snap);
    /* First: hiredis answers the writes still pending with NULL replies,
     * and the last one ends the write (write_done frees ps->buf). */
    if (ps->ac) redisAsyncFree(ps->ac);
    free(ps->buf);
    jsCtx_Destroy(ps->js);
    uv_idle_stop(&n->snap_idle); /* closed with the loop's other handles */
    n->persist = NULL;
    free(ps);
}

void node__persist_stats(const pd_node *n, pd_persist_stats *st) {
    if (n->persist) *st = n->persist->st;
    else memset(st, 0, sizeof *st);
}

/* client.c - the presence_client: queue, worker thread, batches, replies,
 * sync and failover.
 *
 * Design: callers append events to `q` under `mu`. The worker thread (one
 * per client) sends the queue as `batch` requests when it holds batch_max
 * events or its oldest is batch_delay_ms old, publishing with a reply
 * subject `<inbox>.<batch id>`; the batch waits in `inflight` until its
 * reply arrives on the inbox subscription (a nats.c thread), which hands
 * each event its result. `seq` is stamped when a batch is encoded, so a
 * batch sent again after a failover carries new numbers. A batch that gets
 * no answer within request_timeout_ms, or a "no responders", fails the
 * current node over to the next one: its unanswered events go back to the
 * front of the queue and the worker sends the full sync (in parts) to the
 * new node before anything else, which moves the server there. A message
 * on P.resync.<current node> asks for the same sync. */
#define _GNU_SOURCE
#include "internal.h"
#include <errno.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct pl_batch {
    struct pl_batch *next;
    uint64_t id;
    size_t node;
    int64_t sent_ms;
    pl_event *evs;
    size_t n;
} pl_batch;

struct presence_client {
    pthread_mutex_t mu;
    pthread_cond_t wake, idle;
    pthread_t worker;
    natsConnection *nc;
    natsSubscription *inbox_sub;
    natsSubscription **resync_subs; /* one per node, made when the client first uses it */
    char inbox[64];
    char *server, *prefix;
    char **nodes;
    size_t n_nodes, cur;
    presence_list_fn list;
    void *list_ud;
    unsigned batch_max, delay_ms, hb_ms, timeout_ms;
    size_t part_bytes;
    /* under mu */
    pl_event *q;
    size_t qn, qcap;
    int64_t q_first_ms;
    pl_batch *inflight;
    uint64_t next_batch, seq, sync_no;
    bool need_sync, syncing, failover, stop, flush_now;
    int64_t hb_due;
    presence_stats st;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void result(pl_event *e, const char *err, const char *msg, bool dup)
{
    if (e->done) {
        presence_result r = {.error = err, .message = msg, .duplicate = dup};
        e->done(e->ud, &r);
    }
    free(e->body);
    e->body = NULL;
}

/* ---- queue (mu held) ---- */

static bool q_reserve(presence_client *c, size_t extra)
{
    if (c->qn + extra <= c->qcap)
        return true;
    size_t cap = c->qcap ? c->qcap * 2 : 256;
    while (cap < c->qn + extra)
        cap *= 2;
    pl_event *q = realloc(c->q, cap * sizeof *q);
    if (!q)
        return false;
    c->q = q;
    c->qcap = cap;
    return true;
}

/* Puts evs back at the front of the queue, in order (a failed batch). */
static void q_unshift(presence_client *c, pl_event *evs, size_t n)
{
    if (!q_reserve(c, n)) {
        for (size_t i = 0; i < n; i++)
            result(&evs[i], "nomem", "out of memory resending after a failover", false);
        return;
    }
    memmove(c->q + n, c->q, c->qn * sizeof *c->q);
    memcpy(c->q, evs, n * sizeof *evs);
    if (c->qn == 0)
        c->q_first_ms = now_ms();
    c->qn += n;
}

/* ---- event building ---- */

typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    uint32_t nkeys;
} ev_build;

static void eb_init(ev_build *b, const char *type)
{
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
    b->nkeys = 0;
    msgpack_pack_str(&b->pk, 4);
    msgpack_pack_str_body(&b->pk, "type", 4);
    msgpack_pack_str(&b->pk, strlen(type));
    msgpack_pack_str_body(&b->pk, type, strlen(type));
    b->nkeys = 1;
}

static void eb_str(ev_build *b, const char *key, const char *val)
{
    msgpack_pack_str(&b->pk, strlen(key));
    msgpack_pack_str_body(&b->pk, key, strlen(key));
    msgpack_pack_str(&b->pk, strlen(val));
    msgpack_pack_str_body(&b->pk, val, strlen(val));
    b->nkeys++;
}

/* Queues the built event; wakes the worker when a batch is full. */
static presence_rc enqueue(presence_client *c, ev_build *b, presence_done_fn done, void *ud)
{
    presence_rc rc = PRESENCE_OK;
    pthread_mutex_lock(&c->mu);
    if (c->stop) {
        rc = PRESENCE_ECLOSED;
    } else if (!b->sb.data || !q_reserve(c, 1)) {
        rc = PRESENCE_ENOMEM;
    } else {
        if (c->qn == 0)
            c->q_first_ms = now_ms();
        c->q[c->qn].len = b->sb.size;
        c->q[c->qn].body = msgpack_sbuffer_release(&b->sb);
        c->q[c->qn].nkeys = b->nkeys;
        c->q[c->qn].done = done;
        c->q[c->qn].ud = ud;
        if (++c->qn >= c->batch_max)
            pthread_cond_signal(&c->wake);
    }
    pthread_mutex_unlock(&c->mu);
    msgpack_sbuffer_destroy(&b->sb);
    return rc;
}

static bool ok_id(const char *s)
{
    return s && *s;
}

static presence_rc conn_event(presence_client *c, const char *type, const char *conn,
                              presence_done_fn done, void *ud)
{
    if (!c || !ok_id(conn))
        return PRESENCE_EARG;
    ev_build b;
    eb_init(&b, type);
    eb_str(&b, "server", c->server);
    eb_str(&b, "conn", conn);
    return enqueue(c, &b, done, ud);
}

PL_API presence_rc presence_connect(presence_client *c, const char *conn, const char *user,
                                    const char *device, const void *meta, size_t meta_len,
                                    presence_done_fn done, void *ud)
{
    if (!c || !ok_id(conn) || !ok_id(user) || !ok_id(device) || (!meta && meta_len))
        return PRESENCE_EARG;
    ev_build b;
    eb_init(&b, "connect");
    eb_str(&b, "server", c->server);
    eb_str(&b, "conn", conn);
    eb_str(&b, "user", user);
    eb_str(&b, "device", device);
    if (meta && meta_len) {
        msgpack_pack_str(&b.pk, 4);
        msgpack_pack_str_body(&b.pk, "meta", 4);
        msgpack_sbuffer_write(&b.sb, meta, meta_len);
        b.nkeys++;
    }
    return enqueue(c, &b, done, ud);
}

PL_API presence_rc presence_disconnect(presence_client *c, const char *conn,
                                       presence_done_fn done, void *ud)
{
    return conn_event(c, "disconnect", conn, done, ud);
}

PL_API presence_rc presence_activity(presence_client *c, const char *conn, presence_done_fn done,
                                     void *ud)
{
    return conn_event(c, "activity", conn, done, ud);
}

PL_API presence_rc presence_idle(presence_client *c, const char *conn, presence_done_fn done,
                                 void *ud)
{
    return conn_event(c, "idle", conn, done, ud);
}

PL_API presence_rc presence_status(presence_client *c, const char *user, const char *status,
                                   presence_done_fn done, void *ud)
{
    if (!c || !ok_id(user) || !ok_id(status))
        return PRESENCE_EARG;
    ev_build b;
    eb_init(&b, "status");
    eb_str(&b, "server", c->server);
    eb_str(&b, "user", user);
    eb_str(&b, "status", status);
    return enqueue(c, &b, done, ud);
}

PL_API presence_rc presence_custom(presence_client *c, const char *user, const char *text,
                                   const char *emoji, uint64_t expires_at, presence_done_fn done,
                                   void *ud)
{
    if (!c || !ok_id(user) || !text)
        return PRESENCE_EARG;
    ev_build b;
    eb_init(&b, "custom");
    eb_str(&b, "server", c->server);
    eb_str(&b, "user", user);
    eb_str(&b, "text", text);
    if (emoji && *emoji)
        eb_str(&b, "emoji", emoji);
    if (expires_at) {
        msgpack_pack_str(&b.pk, 10);
        msgpack_pack_str_body(&b.pk, "expires_at", 10);
        msgpack_pack_uint64(&b.pk, expires_at);
        b.nkeys++;
    }
    return enqueue(c, &b, done, ud);
}

/* ---- replies (nats.c thread) ---- */

typedef struct {
    size_t n;
    char (*err)[48];
    char (*msg)[256];
} fail_tab;

static void on_failure(void *ctx, int64_t i, const char *err, const char *msg)
{
    fail_tab *t = ctx;
    if (i >= 0 && (size_t)i < t->n) {
        snprintf(t->err[i], sizeof t->err[i], "%s", err);
        snprintf(t->msg[i], sizeof t->msg[i], "%s", msg);
    }
}

/* Hands every event of b its result from the reply (data, len). */
static void finish_batch(pl_batch *b, const void *data, size_t len)
{
    pl_reply rep;
    fail_tab t = {.n = b->n, .err = calloc(b->n, 48), .msg = calloc(b->n, 256)};
    bool parsed = t.err && t.msg && pl_parse_reply(data, len, &rep, on_failure, &t);
    for (size_t i = 0; i < b->n; i++) {
        if (!parsed)
            result(&b->evs[i], "bad_reply", "the node's reply could not be read", false);
        else if (rep.ok)
            result(&b->evs[i], NULL, NULL, rep.duplicate);
        else if (!rep.partial)
            result(&b->evs[i], rep.error, rep.message, false);
        else if (t.err[i][0])
            result(&b->evs[i], t.err[i], t.msg[i], false);
        else
            result(&b->evs[i], NULL, NULL, false);
    }
    free(t.err);
    free(t.msg);
    free(b->evs);
    free(b);
}

static void on_reply(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    presence_client *c = closure;
    const char *subj = natsMsg_GetSubject(msg), *dot = strrchr(subj, '.');
    uint64_t id = dot ? strtoull(dot + 1, NULL, 10) : 0;
    bool nores = natsMsg_IsNoResponders(msg);
    pl_batch *found = NULL;
    pthread_mutex_lock(&c->mu);
    for (pl_batch **pp = &c->inflight; *pp; pp = &(*pp)->next) {
        if ((*pp)->id != id)
            continue;
        if (nores) {
            if ((*pp)->node == c->cur)
                c->failover = true;
            pthread_cond_signal(&c->wake);
        } else {
            found = *pp;
            *pp = found->next;
        }
        break;
    }
    pthread_mutex_unlock(&c->mu);
    if (found) {
        finish_batch(found, natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg));
        pthread_mutex_lock(&c->mu);
        pthread_cond_broadcast(&c->idle);
        pthread_mutex_unlock(&c->mu);
    }
    natsMsg_Destroy(msg);
}

static void on_resync(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    presence_client *c = closure;
    const char *subj = natsMsg_GetSubject(msg);
    pthread_mutex_lock(&c->mu);
    size_t pre = strlen(c->prefix) + strlen(".resync.");
    if (strlen(subj) > pre && strcmp(subj + pre, c->nodes[c->cur]) == 0) {
        c->need_sync = true;
        pthread_cond_signal(&c->wake);
    }
    pthread_mutex_unlock(&c->mu);
    natsMsg_Destroy(msg);
}

/* Listens on <prefix>.resync.<current node>, once per node: a socket
 * server's NATS role may allow its own node's subject only
 * (deploy/nats-accounts.conf), so no wildcard. A subscription is kept
 * until the client ends (no unsubscribe while a message may be in
 * delivery, nats.c#637); on_resync acts for the current node only. */
static natsStatus listen_resync(presence_client *c)
{
    if (c->resync_subs[c->cur])
        return NATS_OK;
    char subj[300];
    snprintf(subj, sizeof subj, "%s.resync.%s", c->prefix, c->nodes[c->cur]);
    return natsConnection_Subscribe(&c->resync_subs[c->cur], c->nc, subj, on_resync, c);
}

/* ---- worker (mu held unless said) ---- */

/* Moves to the next node: every unanswered batch goes back to the queue,
 * oldest first, and a full sync to the new node comes before them. */
static void fail_over(presence_client *c)
{
    pl_batch *b = c->inflight; /* newest first */
    c->inflight = NULL;
    while (b) {
        pl_batch *next = b->next;
        q_unshift(c, b->evs, b->n);
        free(b->evs);
        free(b);
        b = next;
    }
    c->cur = (c->cur + 1) % c->n_nodes;
    c->failover = false;
    c->need_sync = true;
    c->st.failovers++;
    /* Failing, the sync goes anyway; only the new node's later resync
     * requests would go unheard. */
    (void)listen_resync(c);
}

/* Takes up to batch_max queued events, publishes them as one batch. */
static void send_batch(presence_client *c)
{
    size_t n = 0, bytes = 0;
    while (n < c->qn && n < c->batch_max && bytes < c->part_bytes)
        bytes += c->q[n++].len + 16;
    pl_batch *b = calloc(1, sizeof *b);
    pl_event *evs = malloc(n * sizeof *evs);
    if (!b || !evs) {
        free(b);
        free(evs);
        return; /* retried at the next tick */
    }
    memcpy(evs, c->q, n * sizeof *evs);
    memmove(c->q, c->q + n, (c->qn - n) * sizeof *c->q);
    c->qn -= n;
    c->q_first_ms = now_ms();
    b->evs = evs;
    b->n = n;
    b->id = ++c->next_batch;
    b->node = c->cur;
    b->sent_ms = now_ms();
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pl_encode_batch(&sb, evs, n, &c->seq);
    b->next = c->inflight;
    c->inflight = b;
    c->st.batches_sent++;
    c->st.events_sent += n;
    char subj[160], reply[96];
    snprintf(subj, sizeof subj, "%s.events.%s", c->prefix, c->nodes[c->cur]);
    snprintf(reply, sizeof reply, "%s.%llu", c->inbox, (unsigned long long)b->id);
    pthread_mutex_unlock(&c->mu);
    /* A failed publish is left to the timeout, which fails over. */
    natsConnection_PublishRequest(c->nc, subj, reply, sb.data, (int)sb.size);
    msgpack_sbuffer_destroy(&sb);
    pthread_mutex_lock(&c->mu);
}

static void queue_heartbeat(presence_client *c)
{
    ev_build b;
    eb_init(&b, "heartbeat");
    eb_str(&b, "server", c->server);
    if (b.sb.data && q_reserve(c, 1)) {
        if (c->qn == 0)
            c->q_first_ms = now_ms();
        size_t len = b.sb.size; /* before release, which zeroes it */
        c->q[c->qn++] = (pl_event){.len = len, .body = msgpack_sbuffer_release(&b.sb),
                                   .nkeys = b.nkeys};
    }
    msgpack_sbuffer_destroy(&b.sb);
}

static bool timed_out(presence_client *c, int64_t now)
{
    for (pl_batch *b = c->inflight; b; b = b->next)
        if (b->node == c->cur && now - b->sent_ms >= (int64_t)c->timeout_ms)
            return true;
    return false;
}

static void wait_ms(presence_client *c, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    ts.tv_sec += ms / 1000 + ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&c->wake, &c->mu, &ts);
}

static bool pl_do_sync(presence_client *c, size_t node);

static void *worker(void *arg)
{
    presence_client *c = arg;
    pthread_mutex_lock(&c->mu);
    while (!c->stop) {
        int64_t now = now_ms();
        if (c->failover || timed_out(c, now)) {
            fail_over(c);
            continue;
        }
        if (c->need_sync) {
            size_t node = c->cur;
            c->need_sync = false;
            c->syncing = true;
            pthread_mutex_unlock(&c->mu);
            bool ok = pl_do_sync(c, node);
            pthread_mutex_lock(&c->mu);
            c->syncing = false;
            if (ok && now_ms() >= c->hb_due) { /* the first heartbeat follows the sync */
                queue_heartbeat(c);
                c->hb_due = now_ms() + c->hb_ms;
            }
            if (!ok && !c->stop) {
                if (c->cur == node)
                    fail_over(c);
                wait_ms(c, 100); /* a node that says "no responders" at once */
            }
            pthread_cond_broadcast(&c->idle);
            continue;
        }
        if (now >= c->hb_due) {
            queue_heartbeat(c);
            c->hb_due = now + c->hb_ms;
        }
        if (c->qn && (c->flush_now || c->qn >= c->batch_max ||
                      now - c->q_first_ms >= (int64_t)c->delay_ms)) {
            send_batch(c);
            continue;
        }
        int64_t next = c->hb_due;
        if (c->qn && c->q_first_ms + c->delay_ms < next)
            next = c->q_first_ms + c->delay_ms;
        if (c->inflight && now + 5 < next)
            next = now + 5;
        wait_ms(c, next > now ? next - now : 1);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* ---- sync (worker thread, mu not held) ---- */

PL_API presence_rc presence_sync_add(presence_sync_writer *w, const char *conn, const char *user,
                                     const char *device)
{
    if (!w || !ok_id(conn) || !ok_id(user) || !ok_id(device))
        return PRESENCE_EARG;
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 1024;
        size_t *e = realloc(w->ends, cap * sizeof *e);
        if (!e) {
            w->oom = true;
            return PRESENCE_ENOMEM;
        }
        w->ends = e;
        w->cap = cap;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, &w->entries, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    const char *kv[6] = {"conn", conn, "user", user, "device", device};
    for (int i = 0; i < 6; i++) {
        msgpack_pack_str(&pk, strlen(kv[i]));
        msgpack_pack_str_body(&pk, kv[i], strlen(kv[i]));
    }
    w->ends[w->n++] = w->entries.size;
    return PRESENCE_OK;
}

/* Sends one sync part as a request; false when the node did not answer. */
static bool send_part(presence_client *c, const char *subj, msgpack_sbuffer *sb)
{
    natsMsg *reply = NULL;
    natsStatus s = natsConnection_Request(&reply, c->nc, subj, sb->data, (int)sb->size,
                                          (int64_t)c->timeout_ms);
    bool ok = s == NATS_OK && natsMsg_GetDataLength(reply) > 0;
    natsMsg_Destroy(reply);
    return ok;
}

/* The full sync of the server to nodes[node], in parts of at most
 * part_bytes; true when every part was answered (a refusal is answered:
 * sending it again would not help). */
static bool pl_do_sync(presence_client *c, size_t node)
{
    presence_sync_writer w = {0};
    msgpack_sbuffer_init(&w.entries);
    if (c->list)
        c->list(c->list_ud, &w);
    size_t *cut = NULL, parts = 0;
    bool ok = !w.oom && (cut = malloc((w.n + 1) * sizeof *cut)) != NULL;
    if (ok) { /* cut[p] = first entry after part p */
        size_t from = 0;
        while (from < w.n || parts == 0) {
            size_t to = from, base = from ? w.ends[from - 1] : 0;
            while (to < w.n && (to == from || w.ends[to] - base < c->part_bytes))
                to++;
            cut[parts++] = to;
            from = to;
        }
    }
    char subj[160], id[64];
    snprintf(subj, sizeof subj, "%s.events.%s", c->prefix, c->nodes[node]);
    pthread_mutex_lock(&c->mu);
    unsigned long long no = ++c->sync_no;
    pthread_mutex_unlock(&c->mu);
    snprintf(id, sizeof id, "ls-%llx-%llu", (unsigned long long)now_ms(), no);
    for (size_t p = 0; ok && p < parts; p++) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        pl_encode_sync(&sb, c->server, parts > 1 ? id : NULL, (unsigned)p + 1, (unsigned)parts,
                       &w, p ? cut[p - 1] : 0, cut[p]);
        ok = sb.data && send_part(c, subj, &sb);
        msgpack_sbuffer_destroy(&sb);
        pthread_mutex_lock(&c->mu);
        c->st.sync_parts += ok;
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_lock(&c->mu);
    c->st.syncs_done += ok;
    pthread_mutex_unlock(&c->mu);
    free(cut);
    free(w.ends);
    msgpack_sbuffer_destroy(&w.entries);
    return ok;
}

/* ---- life cycle ---- */

static void free_fields(presence_client *c)
{
    for (size_t i = 0; c->nodes && i < c->n_nodes; i++)
        free(c->nodes[i]);
    free(c->nodes);
    free(c->resync_subs);
    free(c->server);
    free(c->prefix);
    free(c->q);
    free(c);
}

static presence_client *client_alloc(const presence_opts *o)
{
    presence_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->server = strdup(o->server_id);
    c->prefix = strdup(o->subject_prefix && *o->subject_prefix ? o->subject_prefix : "presence");
    c->nodes = calloc(o->n_nodes, sizeof *c->nodes);
    c->resync_subs = calloc(o->n_nodes, sizeof *c->resync_subs);
    c->n_nodes = o->n_nodes;
    bool ok = c->server && c->prefix && c->nodes && c->resync_subs;
    for (size_t i = 0; ok && i < o->n_nodes; i++)
        ok = ok_id(o->nodes[i]) && (c->nodes[i] = strdup(o->nodes[i])) != NULL;
    if (!ok) {
        free_fields(c);
        return NULL;
    }
    c->list = o->list_conns;
    c->list_ud = o->list_ud;
    c->batch_max = o->batch_max ? o->batch_max : 1000;
    c->delay_ms = o->batch_delay_ms ? o->batch_delay_ms : 2;
    c->hb_ms = o->heartbeat_ms ? o->heartbeat_ms : 1000;
    c->timeout_ms = o->request_timeout_ms ? o->request_timeout_ms : 2000;
    c->part_bytes = o->sync_part_bytes ? o->sync_part_bytes : 512 * 1024;
    c->need_sync = true;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->wake, NULL);
    pthread_cond_init(&c->idle, NULL);
    return c;
}

static natsStatus nats_setup(presence_client *c, const presence_opts *o)
{
    natsOptions *no = NULL;
    natsInbox *inbox = NULL;
    natsStatus s = natsOptions_Create(&no);
    if (s == NATS_OK)
        s = natsOptions_SetURL(no, o->nats_url);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(no, -1);
    if (s == NATS_OK)
        s = natsOptions_SetSendAsap(no, true);
    if (s == NATS_OK) /* a watch has one subscription per user: no thread each */
        s = natsOptions_UseGlobalMessageDelivery(no, true);
    if (s == NATS_OK)
        s = natsConnection_Connect(&c->nc, no);
    if (s == NATS_OK)
        s = natsInbox_Create(&inbox);
    if (s == NATS_OK) {
        char subj[80];
        snprintf(c->inbox, sizeof c->inbox, "%s", (const char *)inbox);
        snprintf(subj, sizeof subj, "%s.*", c->inbox);
        s = natsConnection_Subscribe(&c->inbox_sub, c->nc, subj, on_reply, c);
    }
    if (s == NATS_OK)
        s = natsSubscription_SetPendingLimits(c->inbox_sub, -1, -1);
    if (s == NATS_OK)
        s = listen_resync(c);
    if (s == NATS_OK)
        s = natsConnection_Flush(c->nc);
    natsInbox_Destroy(inbox);
    natsOptions_Destroy(no);
    return s;
}

static void nats_teardown(presence_client *c)
{
    if (c->inbox_sub && natsSubscription_Drain(c->inbox_sub) == NATS_OK)
        natsSubscription_WaitForDrainCompletion(c->inbox_sub, 2000);
    for (size_t i = 0; c->resync_subs && i < c->n_nodes; i++)
        if (c->resync_subs[i] && natsSubscription_Drain(c->resync_subs[i]) == NATS_OK)
            natsSubscription_WaitForDrainCompletion(c->resync_subs[i], 2000);
    if (c->nc)
        natsConnection_Close(c->nc);
    natsSubscription_Destroy(c->inbox_sub);
    for (size_t i = 0; c->resync_subs && i < c->n_nodes; i++)
        natsSubscription_Destroy(c->resync_subs[i]);
    natsConnection_Destroy(c->nc);
}

PL_API presence_client *presence_client_new(const presence_opts *o, char *err, size_t errlen)
{
    presence_client *c = NULL;
    const char *why = NULL;
    if (!o || !o->nats_url || !ok_id(o->server_id) || !o->nodes || o->n_nodes == 0)
        why = "nats_url, server_id and at least one node are required";
    else if (!(c = client_alloc(o)))
        why = "out of memory, or an empty node id";
    else {
        natsStatus s = nats_setup(c, o);
        if (s != NATS_OK) {
            why = natsStatus_GetText(s);
        } else if (pthread_create(&c->worker, NULL, worker, c) != 0) {
            why = "cannot start the worker thread";
        }
        if (why) {
            nats_teardown(c);
            free_fields(c);
            c = NULL;
        }
    }
    if (why && err && errlen)
        snprintf(err, errlen, "%s", why);
    return c;
}

static bool drained(presence_client *c)
{
    return c->qn == 0 && c->inflight == NULL && !c->need_sync && !c->syncing;
}

PL_API presence_rc presence_flush(presence_client *c, unsigned timeout_ms)
{
    if (!c)
        return PRESENCE_EARG;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_mutex_lock(&c->mu);
    c->flush_now = true;
    pthread_cond_signal(&c->wake);
    int rc = 0;
    while (!drained(c) && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&c->idle, &c->mu, &ts);
    bool done = drained(c);
    if (done) /* cleared here, not by the worker: a flush asked before the
               * worker queued anything (the first heartbeat) must hold */
        c->flush_now = false;
    pthread_mutex_unlock(&c->mu);
    return done ? PRESENCE_OK : PRESENCE_ETIMEOUT;
}

static void send_shutdown(presence_client *c)
{
    ev_build b;
    eb_init(&b, "shutdown");
    eb_str(&b, "server", c->server);
    char subj[160];
    pthread_mutex_lock(&c->mu);
    snprintf(subj, sizeof subj, "%s.events.%s", c->prefix, c->nodes[c->cur]);
    pthread_mutex_unlock(&c->mu);
    /* the map header goes in front of the body */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, b.nkeys);
    msgpack_sbuffer_write(&sb, b.sb.data, b.sb.size);
    send_part(c, subj, &sb);
    msgpack_sbuffer_destroy(&sb);
    msgpack_sbuffer_destroy(&b.sb);
}

PL_API void presence_client_free(presence_client *c, bool shutdown, unsigned timeout_ms)
{
    if (!c)
        return;
    presence_flush(c, timeout_ms);
    if (shutdown)
        send_shutdown(c);
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_signal(&c->wake);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->worker, NULL);
    nats_teardown(c);
    for (size_t i = 0; i < c->qn; i++)
        result(&c->q[i], "closed", "the client was freed before the event was sent", false);
    while (c->inflight) {
        pl_batch *b = c->inflight;
        c->inflight = b->next;
        for (size_t i = 0; i < b->n; i++)
            result(&b->evs[i], "closed", "the client was freed before the node answered", false);
        free(b->evs);
        free(b);
    }
    pthread_cond_destroy(&c->wake);
    pthread_cond_destroy(&c->idle);
    pthread_mutex_destroy(&c->mu);
    free_fields(c);
}

PL_API presence_rc presence_resync(presence_client *c)
{
    if (!c)
        return PRESENCE_EARG;
    pthread_mutex_lock(&c->mu);
    c->need_sync = true;
    pthread_cond_signal(&c->wake);
    pthread_mutex_unlock(&c->mu);
    return PRESENCE_OK;
}

PL_API size_t presence_current_node(presence_client *c)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->cur;
    pthread_mutex_unlock(&c->mu);
    return n;
}

PL_API void presence_get_stats(presence_client *c, presence_stats *out)
{
    pthread_mutex_lock(&c->mu);
    *out = c->st;
    pthread_mutex_unlock(&c->mu);
}

void *pl_conn(presence_client *c)
{
    return c->nc;
}

const char *pl_prefix(presence_client *c)
{
    return c->prefix;
}

unsigned pl_timeout_ms(presence_client *c)
{
    return c->timeout_ms;
}

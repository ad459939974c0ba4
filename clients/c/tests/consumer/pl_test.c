/* pl_test.c - checks of the INSTALLED libpresence against a real
 * nats-server and two presenced nodes (n1, n2) started by run.sh.
 * usage: pl_test NATS_URL N1_PID
 * Every check polls for the expected state with a deadline; none sleeps to
 * "let things settle". Exits 0 when every check passed. */
#define _POSIX_C_SOURCE 200809L
#include <msgpack.h>
#include <nats/nats.h>
#include <presence/presence.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

static int failures;
#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);               \
            fprintf(stderr, __VA_ARGS__);                                      \
            fprintf(stderr, "\n");                                             \
            failures++;                                                        \
        }                                                                      \
    } while (0)

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void nap(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Polls cond every 20 ms until true or ms pass. */
#define POLL(cond, ms)                                                         \
    ({                                                                         \
        long long end_ = now_ms() + (ms);                                      \
        bool ok_;                                                              \
        while (!(ok_ = (cond)) && now_ms() < end_) nap(20);                    \
        ok_;                                                                   \
    })

static natsConnection *nc;

/* get of one user from node: its `devices` (-1 when no answer), and its
 * `ver` and `status` when ver/status are not NULL. */
static int query_user(const char *node, const char *user, uint64_t *ver, char *status)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "users", 5);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_str_with_body(&pk, user, strlen(user));
    char subj[64];
    if (node)
        snprintf(subj, sizeof subj, "presence.query.get.%s", node);
    else
        snprintf(subj, sizeof subj, "presence.query.get");
    natsMsg *m = NULL;
    int devices = -1;
    natsStatus rs = natsConnection_Request(&m, nc, subj, sb.data, (int)sb.size, 2000);
    if (rs != NATS_OK && getenv("PL_DEBUG"))
        fprintf(stderr, "get %s from %s: %s\n", user, node, natsStatus_GetText(rs));
    if (rs == NATS_OK) {
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        /* the "users" list, whatever other keys the reply has (as_of) */
        msgpack_object *list = NULL;
        if (msgpack_unpack_next(&u, natsMsg_GetData(m), natsMsg_GetDataLength(m), NULL) ==
                MSGPACK_UNPACK_SUCCESS && u.data.type == MSGPACK_OBJECT_MAP)
            for (uint32_t i = 0; i < u.data.via.map.size; i++) {
                msgpack_object k = u.data.via.map.ptr[i].key;
                if (k.type == MSGPACK_OBJECT_STR && k.via.str.size == 5 &&
                    memcmp(k.via.str.ptr, "users", 5) == 0)
                    list = &u.data.via.map.ptr[i].val;
            }
        if (list && list->type == MSGPACK_OBJECT_ARRAY && list->via.array.size == 1) {
            msgpack_object e = list->via.array.ptr[0];
            for (uint32_t i = 0; e.type == MSGPACK_OBJECT_MAP && i < e.via.map.size; i++) {
                msgpack_object k = e.via.map.ptr[i].key;
                msgpack_object v = e.via.map.ptr[i].val;
                if (k.type == MSGPACK_OBJECT_STR && k.via.str.size == 7 &&
                    memcmp(k.via.str.ptr, "devices", 7) == 0)
                    devices = (int)v.via.u64;
                if (ver && k.type == MSGPACK_OBJECT_STR && k.via.str.size == 3 &&
                    memcmp(k.via.str.ptr, "ver", 3) == 0)
                    *ver = v.via.u64;
                if (status && k.type == MSGPACK_OBJECT_STR && k.via.str.size == 6 &&
                    memcmp(k.via.str.ptr, "status", 6) == 0 && v.type == MSGPACK_OBJECT_STR &&
                    v.via.str.size < 16) {
                    memcpy(status, v.via.str.ptr, v.via.str.size);
                    status[v.via.str.size] = '\0';
                }
            }
        }
        msgpack_unpacked_destroy(&u);
    }
    natsMsg_Destroy(m);
    msgpack_sbuffer_destroy(&sb);
    return devices;
}

static int devices_of(const char *node, const char *user)
{
    return query_user(node, user, NULL, NULL);
}

/* ---- results of events ---- */

typedef struct {
    atomic_int done, ok, failed, dup;
    char last_err[64];
} tally;

static void on_done(void *ud, const presence_result *r)
{
    tally *t = ud;
    if (r->error) {
        snprintf(t->last_err, sizeof t->last_err, "%s", r->error);
        atomic_fetch_add(&t->failed, 1);
    } else {
        atomic_fetch_add(&t->ok, 1);
    }
    if (r->duplicate)
        atomic_fetch_add(&t->dup, 1);
    atomic_fetch_add(&t->done, 1);
}

/* ---- the server's live connections, for syncs ---- */

typedef struct {
    int from, to;  /* conns c<from>..c<to-1>, user u<i/4> */
    const char *prefix;
} conn_set;

static void list_conns(void *ud, presence_sync_writer *w)
{
    conn_set *s = ud;
    char conn[32], user[32];
    for (int i = s->from; i < s->to; i++) {
        snprintf(conn, sizeof conn, "c%d", i);
        snprintf(user, sizeof user, "%s%d", s->prefix, i / 4);
        presence_sync_add(w, conn, user, "web");
    }
}

static presence_client *client(const char *server, const char *const *nodes, size_t n,
                               presence_list_fn list, void *ud, unsigned delay_ms)
{
    char err[200] = "";
    presence_opts o = {.nats_url = getenv("PL_URL"), .nodes = nodes, .n_nodes = n,
                       .server_id = server, .list_conns = list, .list_ud = ud,
                       .batch_delay_ms = delay_ms, .request_timeout_ms = 3000,
                       .sync_part_bytes = 128 * 1024,
                       .heartbeat_ms = delay_ms > 100 ? 600000 : 0};
    presence_client *c = presence_client_new(&o, err, sizeof err);
    CHECK(c != NULL, "presence_client_new: %s", err);
    if (!c)
        exit(1);
    return c;
}

static const char *const N1[] = {"n1"};
static const char *const N12[] = {"n1", "n2"};

/* connect/disconnect visible through get; the per-event results. */
static void check_basic(void)
{
    presence_client *c = client("pl-basic", N1, 1, NULL, NULL, 2);
    tally t = {0};
    CHECK(presence_connect(c, "k1", "alice", "web", NULL, 0, on_done, &t) == PRESENCE_OK, "connect");
    CHECK(presence_flush(c, 5000) == PRESENCE_OK, "flush");
    CHECK(t.ok == 1 && t.failed == 0, "connect result ok=%d failed=%d", t.ok, t.failed);
    CHECK(POLL(devices_of("n1", "alice") == 1, 5000), "alice has 1 device on n1");
    CHECK(POLL(devices_of("n2", "alice") == 1, 5000), "alice has 1 device on n2");
    presence_status(c, "alice", "busy", on_done, &t);
    presence_activity(c, "nope", on_done, &t); /* an unknown conn: refused alone */
    presence_disconnect(c, "k1", on_done, &t);
    CHECK(presence_flush(c, 5000) == PRESENCE_OK, "flush");
    CHECK(t.done == 4 && t.ok == 3 && t.failed == 1 && !strcmp(t.last_err, "unknown_conn"),
          "done=%d ok=%d failed=%d last=%s", t.done, t.ok, t.failed, t.last_err);
    CHECK(POLL(devices_of("n1", "alice") == 0, 5000), "alice has no device after disconnect");
    CHECK(presence_connect(c, "", "alice", "web", NULL, 0, NULL, NULL) == PRESENCE_EARG, "EARG");
    presence_client_free(c, true, 2000);
}

/* 1000 activities (one bad) go as one batch message. */
static void check_batch(void)
{
    conn_set s = {0, 1000, "b"};
    /* a delay far longer than queueing takes: the batch is cut at batch_max */
    presence_client *c = client("pl-batch", N1, 1, list_conns, &s, 60000);
    CHECK(presence_flush(c, 10000) == PRESENCE_OK, "initial sync");
    CHECK(POLL(devices_of("n1", "b0") == 4, 5000), "the initial sync connected b0's 4 devices");
    presence_stats before, after;
    presence_get_stats(c, &before);
    tally t = {0};
    char conn[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(conn, sizeof conn, i == 500 ? "zz%d" : "c%d", i);
        presence_activity(c, conn, on_done, &t);
    }
    CHECK(POLL(t.done == 1000, 10000), "1000 results (got %d)", t.done);
    presence_get_stats(c, &after);
    CHECK(after.batches_sent - before.batches_sent == 1 && after.events_sent - before.events_sent == 1000,
          "one message of 1000 events: %llu batches, %llu events",
          (unsigned long long)(after.batches_sent - before.batches_sent),
          (unsigned long long)(after.events_sent - before.events_sent));
    CHECK(t.ok == 999 && t.failed == 1 && !strcmp(t.last_err, "unknown_conn"),
          "partial reply: ok=%d failed=%d (%s)", t.ok, t.failed, t.last_err);
    presence_client_free(c, true, 2000);
}

/* A resync of 20k connections goes in parts; what the new list lacks ends. */
static void check_resync(void)
{
    conn_set s = {0, 20000, "r"};
    presence_client *c = client("pl-big", N1, 1, list_conns, &s, 2);
    CHECK(presence_flush(c, 20000) == PRESENCE_OK, "initial sync");
    CHECK(POLL(devices_of("n1", "r4999") == 4, 10000), "the last user of 20k conns is there");
    presence_stats st;
    presence_get_stats(c, &st);
    CHECK(st.syncs_done == 1 && st.sync_parts >= 2 && st.failovers == 0,
          "20k conns went in %llu parts (syncs %llu, failovers %llu)",
          (unsigned long long)st.sync_parts, (unsigned long long)st.syncs_done,
          (unsigned long long)st.failovers);
    s.from = 4; /* c0..c3 (user r0) are gone from the list */
    natsConnection_PublishString(nc, "presence.resync.n1", "");
    natsConnection_Flush(nc);
    presence_get_stats(c, &st);
    CHECK(POLL((presence_get_stats(c, &st), st.syncs_done == 2), 10000), "resync answered");
    CHECK(POLL(devices_of("n1", "r0") == 0, 10000), "r0 left with the resync");
    CHECK(devices_of("n1", "r1") == 4, "r1 stays");
    presence_client_free(c, true, 5000);
    CHECK(POLL(devices_of("n1", "r1") == 0, 10000), "shutdown ends the server's conns");
}


/* ---- watch ---- */

typedef struct {
    pthread_mutex_t mu;
    int initial, changes, out_of_order, fresh_initial, stale;
    uint64_t last_ver;
    char last_status[16];
} seen;

static void on_state(void *ud, const presence_state *st)
{
    seen *s = ud;
    pthread_mutex_lock(&s->mu);
    if (st->initial)
        s->initial++;
    /* the get's answer says how fresh it is; a change says nothing */
    if (st->initial ? st->as_of > 1600000000000ULL : st->as_of == 0)
        s->fresh_initial += st->initial;
    else
        s->out_of_order++;
    s->stale += st->stale;
    if (strcmp(st->user, "w1") != 0) { /* w-nobody: never seen, ver 0 */
        if (!st->initial || st->ver != 0 || strcmp(st->status, "offline") != 0)
            s->out_of_order++;
        pthread_mutex_unlock(&s->mu);
        return;
    }
    if (!st->initial)
        s->changes++;
    if (st->ver <= s->last_ver || (st->initial && s->changes))
        s->out_of_order++;
    s->last_ver = st->ver;
    snprintf(s->last_status, sizeof s->last_status, "%s", st->status);
    pthread_mutex_unlock(&s->mu);
}

typedef struct {
    presence_client *c;
    atomic_int sent;
} flipper;

static void *flip(void *arg)
{
    flipper *f = arg;
    for (int i = 0; i < 300; i++) {
        presence_status(f->c, "w1", i % 2 ? "busy" : "auto", NULL, NULL);
        atomic_fetch_add(&f->sent, 1);
        nap(2);
    }
    return NULL;
}

static bool watch_settled(seen *s, const char *want_status, uint64_t want_ver)
{
    pthread_mutex_lock(&s->mu);
    bool ok = !strcmp(s->last_status, want_status) && s->last_ver == want_ver;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

/* A watch that starts while w1 flips status ends at the truth, every
 * reported state newer than the one before (no duplicate), the initial one
 * first and once. */
static void check_watch(void)
{
    presence_client *c = client("pl-watch", N1, 1, NULL, NULL, 2);
    presence_connect(c, "k1", "w1", "web", NULL, 0, NULL, NULL);
    CHECK(presence_flush(c, 5000) == PRESENCE_OK, "flush");
    flipper f = {.c = c};
    pthread_t t;
    pthread_create(&t, NULL, flip, &f);
    CHECK(POLL(f.sent >= 100, 10000), "the flips started");
    seen s = {.mu = PTHREAD_MUTEX_INITIALIZER};
    const char *users[] = {"w1", "w-nobody"};
    char err[200] = "";
    presence_watch *w = presence_watch_new(c, users, 2, on_state, &s, err, sizeof err);
    CHECK(w != NULL, "presence_watch_new: %s", err);
    pthread_join(t, NULL);
    /* made after the watch's get was answered: it must come as a change */
    presence_custom(c, "w1", "done", NULL, 0, NULL, NULL);
    CHECK(presence_flush(c, 5000) == PRESENCE_OK, "flush");
    uint64_t ver = 0;
    char status[16] = "";
    bool settled = POLL((query_user(NULL, "w1", &ver, status) == 1 && !strcmp(status, "busy") &&
                         watch_settled(&s, "busy", ver)), 10000);
    pthread_mutex_lock(&s.mu);
    CHECK(settled, "watch ends at the truth: watch %s ver %llu, get %s ver %llu", s.last_status,
          (unsigned long long)s.last_ver, status, (unsigned long long)ver);
    CHECK(s.initial == 2 && s.out_of_order == 0 && s.changes >= 1,
          "initial %d (want 2), changes %d, out of order %d", s.initial, s.changes,
          s.out_of_order);
    CHECK(s.fresh_initial == 2 && s.stale == 0, "initial states with as_of: %d (want 2), "
          "stale %d (want 0: every node is heard)", s.fresh_initial, s.stale);
    pthread_mutex_unlock(&s.mu);
    presence_watch_free(w);
    presence_client_free(c, true, 2000);
}

/* n1 is killed: the client fails over to n2 with a full sync; a conn that
 * closed meanwhile is no ghost anywhere. */
static void check_failover(pid_t n1)
{
    conn_set s = {0, 8, "f"};
    presence_client *c = client("pl-fo", N12, 2, list_conns, &s, 2);
    CHECK(presence_flush(c, 10000) == PRESENCE_OK, "initial sync");
    CHECK(POLL(devices_of("n2", "f1") == 4, 5000), "f1 replicated to n2 (n1 %d, n2 %d)",
          devices_of("n1", "f1"), devices_of("n2", "f1"));
    kill(n1, SIGKILL);
    s.to = 4; /* user f1 (c4..c7) closed while the node was down */
    tally t = {0};
    for (int i = 4; i < 8; i++) {
        char conn[32];
        snprintf(conn, sizeof conn, "c%d", i);
        presence_disconnect(c, conn, on_done, &t);
    }
    presence_activity(c, "c0", on_done, &t);
    CHECK(POLL(t.done == 5, 15000), "the events were answered after failover (%d)", t.done);
    CHECK(presence_current_node(c) == 1, "events now go to n2");
    presence_stats st;
    presence_get_stats(c, &st);
    CHECK(st.failovers >= 1 && st.syncs_done >= 2, "failovers %llu syncs %llu",
          (unsigned long long)st.failovers, (unsigned long long)st.syncs_done);
    CHECK(POLL(devices_of("n2", "f1") == 0, 10000), "no ghost of f1 on n2");
    CHECK(POLL(devices_of("n2", "f0") == 4, 10000), "f0 kept its 4 devices on n2");
    presence_client_free(c, true, 2000);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: pl_test NATS_URL N1_PID\n");
        return 2;
    }
    setenv("PL_URL", argv[1], 1);
    /* nats-server was just started: wait until it listens */
    if (!POLL(natsConnection_ConnectTo(&nc, argv[1]) == NATS_OK, 20000)) {
        fprintf(stderr, "cannot connect to %s\n", argv[1]);
        return 1;
    }
    bool up = POLL(devices_of("n1", "x") == 0 && devices_of("n2", "x") == 0, 20000);
    CHECK(up, "the nodes answer");
    if (up) {
        check_basic();
        check_batch();
        check_resync();
        check_watch();
        check_failover((pid_t)atoi(argv[2]));
    }
    natsConnection_Destroy(nc);
    nats_CloseAndWait(2000);
    printf("pl_test: %d failure(s)\n", failures);
    return failures ? 1 : 0;
}

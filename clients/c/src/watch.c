/* watch.c - presence_watch: the race-free view of a list of users.
 *
 * Design (schemas/notifications.md#ver): subscribe to <prefix>.user.<u> for
 * every user and flush, so the subscriptions are in place; then ask `get`.
 * Notifications that arrive before the get's answer are kept aside (copied);
 * once the answer is in, each user's state is reported with initial = true
 * and its `ver` remembered, then the kept notifications and every later one
 * are reported only when their `ver` is above the remembered one. Users are
 * kept sorted for bsearch; `mu` serialises the callbacks of a watch. */
#include "internal.h"
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "wire/mpread.h"

typedef struct {
    char *user;
    uint64_t ver;
} pw_user;

typedef struct pw_note {
    struct pw_note *next;
    size_t len;
    char data[];
} pw_note;

struct presence_watch {
    pthread_mutex_t mu;
    presence_watch_fn fn;
    void *ud;
    pw_user *users;
    size_t n;
    natsSubscription **subs;
    bool ready;
    pw_note *held, **held_tail;
};

/* A decoded state (notification or get entry), strings copied. */
typedef struct {
    char user[132], status[16], text[260], emoji[68];
    int64_t expires_at, last_seen, ver;
    bool stale;
} pw_state;

static void cp(char *dst, size_t cap, pd_str s)
{
    size_t n = s.n < cap - 1 ? s.n : cap - 1;
    memcpy(dst, s.p, n);
    dst[n] = '\0';
}

/* Reads one state map; unknown keys are skipped. */
static bool read_state(mp_reader *r, pw_state *st)
{
    uint32_t n;
    memset(st, 0, sizeof *st);
    if (!mpr_map(r, &n))
        return false;
    for (uint32_t i = 0; i < n; i++) {
        pd_str k, v;
        if (!mpr_str(r, &k))
            return false;
        struct { const char *name; char *buf; size_t cap; } strs[] = {
            {"user", st->user, sizeof st->user}, {"status", st->status, sizeof st->status},
            {"text", st->text, sizeof st->text}, {"emoji", st->emoji, sizeof st->emoji}};
        struct { const char *name; int64_t *out; } ints[] = {
            {"expires_at", &st->expires_at}, {"last_seen", &st->last_seen}, {"ver", &st->ver}};
        bool done = false;
        for (size_t j = 0; !done && j < 4; j++)
            if (k.n == strlen(strs[j].name) && !memcmp(k.p, strs[j].name, k.n)) {
                if (!mpr_str(r, &v))
                    return false;
                cp(strs[j].buf, strs[j].cap, v);
                done = true;
            }
        for (size_t j = 0; !done && j < 3; j++)
            if (k.n == strlen(ints[j].name) && !memcmp(k.p, ints[j].name, k.n)) {
                if (!mpr_int(r, ints[j].out))
                    return false;
                done = true;
            }
        if (!done && k.n == 5 && !memcmp(k.p, "stale", 5)) {
            if (!mpr_bool(r, &st->stale))
                return false;
            done = true;
        }
        if (!done && !mpr_skip(r))
            return false;
    }
    return st->user[0] != '\0';
}

static int cmp_user(const void *a, const void *b)
{
    return strcmp(((const pw_user *)a)->user, ((const pw_user *)b)->user);
}

static pw_user *find(presence_watch *w, const char *user)
{
    pw_user key = {.user = (char *)user};
    return bsearch(&key, w->users, w->n, sizeof *w->users, cmp_user);
}

/* Reports st if newer than what was reported for its user (mu held). */
static void report(presence_watch *w, const pw_state *st, bool initial, uint64_t as_of)
{
    pw_user *u = find(w, st->user);
    if (!u || st->ver < 0 || (!initial && (uint64_t)st->ver <= u->ver))
        return;
    u->ver = (uint64_t)st->ver;
    presence_state ps = {.user = st->user, .status = st->status, .text = st->text,
                         .emoji = st->emoji, .expires_at = (uint64_t)st->expires_at,
                         .last_seen = (uint64_t)st->last_seen, .ver = (uint64_t)st->ver,
                         .initial = initial, .as_of = as_of, .stale = st->stale};
    w->fn(w->ud, &ps);
}

static void note_in(presence_watch *w, const void *data, size_t len)
{
    mp_reader r;
    pw_state st;
    mpr_init(&r, data, len);
    if (read_state(&r, &st))
        report(w, &st, false, 0);
}

static void on_note(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    presence_watch *w = closure;
    size_t len = (size_t)natsMsg_GetDataLength(msg);
    pthread_mutex_lock(&w->mu);
    if (w->ready) {
        note_in(w, natsMsg_GetData(msg), len);
    } else {
        pw_note *n = malloc(sizeof *n + len);
        if (n) { /* kept until the get's answer */
            n->next = NULL;
            n->len = len;
            memcpy(n->data, natsMsg_GetData(msg), len);
            *w->held_tail = n;
            w->held_tail = &n->next;
        }
    }
    pthread_mutex_unlock(&w->mu);
    natsMsg_Destroy(msg);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One get of every user: the reply in *m, its `as_of` (-1 when the reply
 * has none: a node older than the field) and its list positioned in *list
 * with ne entries. False on a failed request or a malformed reply. */
static bool ask_get(presence_watch *w, presence_client *c, natsMsg **m, int64_t *as_of,
                    mp_reader *list, uint32_t *ne, natsStatus *s)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "users", 5);
    msgpack_pack_array(&pk, w->n);
    for (size_t i = 0; i < w->n; i++)
        msgpack_pack_str_with_body(&pk, w->users[i].user, strlen(w->users[i].user));
    char subj[160];
    snprintf(subj, sizeof subj, "%s.query.get", pl_prefix(c));
    *m = NULL;
    *s = natsConnection_Request(m, pl_conn(c), subj, sb.data, (int)sb.size,
                                (int64_t)pl_timeout_ms(c));
    msgpack_sbuffer_destroy(&sb);
    if (*s != NATS_OK)
        return false;
    /* {"users": [...], "as_of"?, ...}: any other key is skipped (a client
     * accepts the fields of later versions) */
    mp_reader r;
    uint32_t nk = 0;
    bool found = false;
    pd_str k;
    *as_of = -1;
    mpr_init(&r, natsMsg_GetData(*m), (size_t)natsMsg_GetDataLength(*m));
    bool ok = mpr_map(&r, &nk);
    for (uint32_t i = 0; ok && i < nk; i++) {
        ok = mpr_str(&r, &k);
        if (ok && k.n == 5 && !memcmp(k.p, "users", 5) && !found) {
            *list = r;
            found = true;
            ok = mpr_skip(&r);
        } else if (ok && k.n == 5 && !memcmp(k.p, "as_of", 5)) {
            ok = mpr_int(&r, as_of) && *as_of >= 0;
        } else if (ok) {
            ok = mpr_skip(&r);
        }
    }
    return ok && found && mpr_array(list, ne);
}

/* Asks get for every user until the answer is as fresh as the
 * subscriptions (its `as_of` at least `since`, the time they were in
 * place: a node lagging the announcer would show states older than
 * notifications sent before, and the states between would be missed), or
 * takes the last answer after the request timeout. Runs without mu: the
 * notifications that arrive meanwhile are held (w->ready is false), so a
 * slow node delays nothing but this watch's start. */
static bool initial_ask(presence_watch *w, presence_client *c, int64_t since, natsMsg **m,
                        int64_t *as_of, mp_reader *list, uint32_t *ne, natsStatus *s)
{
    int64_t give_up = wall_ms() + (int64_t)pl_timeout_ms(c);
    bool ok;
    for (;;) {
        ok = ask_get(w, c, m, as_of, list, ne, s);
        if (!ok || *as_of < 0 || *as_of >= since || wall_ms() >= give_up)
            return ok;
        natsMsg_Destroy(*m);
        *m = NULL;
        nats_Sleep(20);
    }
}

/* Reports the answer of initial_ask (mu held). */
static bool initial_report(presence_watch *w, int64_t as_of, mp_reader *list, uint32_t ne)
{
    bool ok = true;
    for (uint32_t i = 0; ok && i < ne; i++) {
        pw_state st;
        ok = read_state(list, &st);
        if (ok)
            report(w, &st, true, as_of < 0 ? 0 : (uint64_t)as_of);
    }
    return ok;
}

static void watch_free_all(presence_watch *w)
{
    for (size_t i = 0; w->subs && i < w->n; i++)
        if (w->subs[i]) { /* drained: no callback runs once it completes */
            if (natsSubscription_Drain(w->subs[i]) == NATS_OK)
                natsSubscription_WaitForDrainCompletion(w->subs[i], 2000);
            else
                natsSubscription_Unsubscribe(w->subs[i]);
            natsSubscription_Destroy(w->subs[i]);
        }
    for (size_t i = 0; w->users && i < w->n; i++)
        free(w->users[i].user);
    while (w->held) {
        pw_note *n = w->held;
        w->held = n->next;
        free(n);
    }
    free(w->subs);
    free(w->users);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

static bool subscribe_all(presence_watch *w, presence_client *c, char *err, size_t errlen)
{
    natsStatus s = NATS_OK;
    for (size_t i = 0; s == NATS_OK && i < w->n; i++) {
        char subj[300];
        snprintf(subj, sizeof subj, "%s.user.%s", pl_prefix(c), w->users[i].user);
        s = natsConnection_Subscribe(&w->subs[i], pl_conn(c), subj, on_note, w);
        if (s == NATS_OK)
            s = natsSubscription_SetPendingLimits(w->subs[i], -1, -1);
    }
    if (s == NATS_OK)
        s = natsConnection_Flush(pl_conn(c));
    if (s != NATS_OK)
        snprintf(err, errlen, "subscribe: %s", natsStatus_GetText(s));
    return s == NATS_OK;
}

PL_API presence_watch *presence_watch_new(presence_client *c, const char *const *users, size_t n,
                                          presence_watch_fn fn, void *ud, char *err,
                                          size_t errlen)
{
    char dummy[8];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof dummy;
    }
    if (!c || !users || !fn || n == 0 || n > 1000) {
        snprintf(err, errlen, "a client, a callback and 1..1000 users are required");
        return NULL;
    }
    presence_watch *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    pthread_mutex_init(&w->mu, NULL);
    w->fn = fn;
    w->ud = ud;
    w->held_tail = &w->held;
    w->users = calloc(n, sizeof *w->users);
    w->subs = calloc(n, sizeof *w->subs);
    bool ok = w->users && w->subs;
    for (size_t i = 0; ok && i < n; i++) {
        ok = users[i] && users[i][0] && strlen(users[i]) <= 128 &&
             (w->users[i].user = strdup(users[i])) != NULL;
        w->n = i + 1;
    }
    if (!ok)
        snprintf(err, errlen, "an empty, too long or unallocatable user id");
    if (ok) {
        qsort(w->users, w->n, sizeof *w->users, cmp_user);
        ok = subscribe_all(w, c, err, errlen);
    }
    if (ok) {
        int64_t since = wall_ms(), as_of = -1;
        natsMsg *m = NULL;
        natsStatus s = NATS_OK;
        mp_reader list = {0};
        uint32_t ne = 0;
        ok = initial_ask(w, c, since, &m, &as_of, &list, &ne, &s);
        pthread_mutex_lock(&w->mu);
        ok = ok && initial_report(w, as_of, &list, ne);
        if (!ok)
            snprintf(err, errlen, "get: %s", s != NATS_OK ? natsStatus_GetText(s) : "bad reply");
        natsMsg_Destroy(m);
        while (ok && w->held) { /* what came before the answer, if newer */
            pw_note *h = w->held;
            w->held = h->next;
            note_in(w, h->data, h->len);
            free(h);
        }
        w->held_tail = &w->held;
        w->ready = ok;
        pthread_mutex_unlock(&w->mu);
    }
    if (!ok) {
        watch_free_all(w);
        w = NULL;
    }
    return w;
}

PL_API void presence_watch_free(presence_watch *w)
{
    if (w)
        watch_free_all(w);
}

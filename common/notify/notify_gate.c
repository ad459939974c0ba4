/* notify_gate.c - per-user coalescing of change notifications (see
 * notify_gate.h): a hash table of users in their interval, threaded on one
 * FIFO ordered by deadline, each with the view held for its trailing edge. */
#include "notify/notify_gate.h"
#include <string.h>
#include "base/alloc.h"
#include "base/htab.h"

/* A view waiting for the end of its user's interval; its strings point
 * into buf (text, then emoji) and the entry's id. */
typedef struct {
    pd_view v;
    char buf[];
} held;

typedef struct entry {
    pd_hnode h;
    struct entry *prev, *next; /* FIFO: deadlines in sending order */
    uint64_t due;              /* last send + interval */
    uint64_t sent_fp;          /* fingerprint of the view sent last */
    held *held;                /* NULL: nothing waiting */
    uint8_t id_n;
    char id[];
} entry;

struct pd_gate {
    uint64_t interval;
    uint32_t max;
    pd_gate_send_fn fn;
    void *ud;
    pd_htab users;
    entry *head, *tail;
    uint64_t last_now;         /* the clock never runs back here */
    pd_gate_stats st;
};

static uint64_t entry_hash(const pd_hnode *e) {
    const entry *x = (const entry *)e;
    return pd_hash(x->id, x->id_n);
}

pd_gate *pd_gate_new(uint64_t interval_ms, uint32_t max_users, pd_gate_send_fn fn, void *ud) {
    pd_gate *g = pd_calloc(1, sizeof *g);
    if (g == NULL) return NULL;
    g->interval = interval_ms;
    g->max = max_users;
    g->fn = fn;
    g->ud = ud;
    if (pd_htab_init(&g->users, entry_hash) != PD_OK) {
        pd_free(g);
        return NULL;
    }
    return g;
}

void pd_gate_free(pd_gate *g) {
    if (g == NULL) return;
    for (entry *e = g->head, *next; e != NULL; e = next) {
        next = e->next;
        pd_free(e->held);
        pd_free(e);
    }
    pd_htab_free(&g->users);
    pd_free(g);
}

static entry *find(const pd_gate *g, pd_str user) {
    for (pd_hnode *h = pd_htab_bucket(&g->users, pd_hash(user.p, user.n)); h; h = h->next) {
        entry *e = (entry *)h;
        if (e->id_n == user.n && memcmp(e->id, user.p, user.n) == 0) return e;
    }
    return NULL;
}

static void unlink_entry(pd_gate *g, entry *e) {
    if (e->prev) e->prev->next = e->next;
    else g->head = e->next;
    if (e->next) e->next->prev = e->prev;
    else g->tail = e->prev;
    e->prev = e->next = NULL;
}

static void append(pd_gate *g, entry *e) {
    e->prev = g->tail;
    e->next = NULL;
    if (g->tail) g->tail->next = e;
    else g->head = e;
    g->tail = e;
}

static void emit(pd_gate *g, const pd_view *v) {
    g->st.sent++;
    g->fn(g->ud, v);
}

static uint64_t mix(uint64_t h, uint64_t x) {
    return h ^ (x + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2));
}

/* What a watcher sees of a view, ts aside. ver counts: a watcher that
 * read an intermediate state through `get` (A, B, A held) needs the last A
 * to move past B (schemas/notifications.md, "ver"). */
static uint64_t fingerprint(const pd_view *v) {
    uint64_t h = pd_hash(v->text.p, v->text.n);
    h = mix(h, pd_hash(v->emoji.p, v->emoji.n));
    h = mix(h, (uint64_t)v->status);
    h = mix(h, (uint64_t)v->expires_at);
    h = mix(h, v->ver);
    return mix(h, (uint64_t)v->last_seen);
}

/* Sends v now and starts the user's interval at now. */
static void send_and_restart(pd_gate *g, entry *e, const pd_view *v, uint64_t now) {
    emit(g, v);
    e->sent_fp = fingerprint(v);
    e->due = now + g->interval;
    unlink_entry(g, e);
    append(g, e);
}

static void drop_held(pd_gate *g, entry *e) {
    if (e->held == NULL) return;
    pd_free(e->held);
    e->held = NULL;
    g->st.pending--;
}

/* Copies v into a new held view whose user is the entry's id. */
static held *hold(const entry *e, const pd_view *v) {
    held *h = pd_malloc(sizeof *h + v->text.n + v->emoji.n);
    if (h == NULL) return NULL;
    h->v = *v;
    h->v.user = (pd_str){e->id, e->id_n};
    if (v->text.n) memcpy(h->buf, v->text.p, v->text.n);
    if (v->emoji.n) memcpy(h->buf + v->text.n, v->emoji.p, v->emoji.n);
    h->v.text = (pd_str){h->buf, v->text.n};
    h->v.emoji = (pd_str){h->buf + v->text.n, v->emoji.n};
    return h;
}

/* A user with no interval running: send at once, and remember the user
 * for one interval (unless full: then nothing is remembered). */
static void offer_new(pd_gate *g, const pd_view *v, uint64_t now) {
    entry *e = NULL;
    if (g->users.n < g->max && v->user.n <= UINT8_MAX)
        e = pd_calloc(1, sizeof *e + v->user.n);
    if (e == NULL) {
        g->st.overflow++;
        emit(g, v);
        return;
    }
    memcpy(e->id, v->user.p, v->user.n);
    e->id_n = (uint8_t)v->user.n;
    pd_htab_insert(&g->users, &e->h, pd_hash(v->user.p, v->user.n));
    append(g, e);
    g->st.entries++;
    send_and_restart(g, e, v, now);
}

void pd_gate_offer(pd_gate *g, const pd_view *v, uint64_t now) {
    if (now < g->last_now) now = g->last_now;
    g->last_now = now;
    g->st.offered++;
    if (g->interval == 0) {
        emit(g, v);
        return;
    }
    entry *e = find(g, v->user);
    if (e == NULL) {
        offer_new(g, v, now);
        return;
    }
    if (e->held) g->st.coalesced++;
    if (e->due <= now) {
        /* The interval is over (its tick has not run yet): v is the latest;
         * back to what was sent last, it tells nothing. */
        drop_held(g, e);
        if (fingerprint(v) != e->sent_fp) send_and_restart(g, e, v, now);
        return;
    }
    held *h = hold(e, v);
    drop_held(g, e);
    if (h == NULL) {
        /* Cannot hold it: late is worse than early, send it now. */
        send_and_restart(g, e, v, now);
        return;
    }
    e->held = h;
    g->st.pending++;
}

void pd_gate_tick(pd_gate *g, uint64_t now) {
    if (now < g->last_now) now = g->last_now;
    g->last_now = now;
    /* Stop at the first entry that came back to the tail in this tick. */
    for (entry *e = g->head; e != NULL && e->due <= now; e = g->head) {
        if (e->held) {
            held *h = e->held;
            e->held = NULL;
            g->st.pending--;
            /* Back to what was sent last: nothing to tell; the interval
             * ends as a quiet one. */
            bool same = fingerprint(&h->v) == e->sent_fp;
            if (!same) send_and_restart(g, e, &h->v, now);
            else g->st.coalesced++;
            pd_free(h);
            if (!same) continue;
        }
        unlink_entry(g, e);
        pd_htab_remove(&g->users, &e->h, pd_hash(e->id, e->id_n));
        g->st.entries--;
        pd_free(e);
    }
}

uint64_t pd_gate_next_due(const pd_gate *g) {
    return g->head ? g->head->due : UINT64_MAX;
}

void pd_gate_flush(pd_gate *g) {
    for (entry *e = g->head; e != NULL; e = e->next) {
        if (e->held == NULL) continue;
        held *h = e->held;
        e->held = NULL;
        g->st.pending--;
        if (fingerprint(&h->v) != e->sent_fp) emit(g, &h->v);
        else g->st.coalesced++;
        pd_free(h);
    }
}

void pd_gate_stats_get(const pd_gate *g, pd_gate_stats *st) { *st = g->st; }

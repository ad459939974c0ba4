/* inbox.c - mutex-guarded message queue between nats.c threads and the loop,
 * and the bin of the messages the loop handled. */
#include "inbox.h"
#include <stdlib.h>
#include <string.h>

pd_status pd_inbox_init(pd_inbox *ib) {
    memset(ib, 0, sizeof *ib);
    return pthread_mutex_init(&ib->mu, NULL) == 0 ? PD_OK : PD_EINTERNAL;
}

void pd_inbox_limit(pd_inbox *ib, uint64_t max_msgs, uint64_t max_bytes, uint32_t exempt) {
    pthread_mutex_lock(&ib->mu);
    ib->max_msgs = max_msgs;
    ib->max_bytes = max_bytes;
    ib->exempt = exempt;
    pthread_mutex_unlock(&ib->mu);
}

void pd_inbox_depth(pd_inbox *ib, uint64_t *msgs, uint64_t *bytes) {
    pthread_mutex_lock(&ib->mu);
    *msgs = ib->n;
    *bytes = ib->bytes;
    pthread_mutex_unlock(&ib->mu);
}

void pd_inbox_dropped(pd_inbox *ib, uint64_t *out) {
    pthread_mutex_lock(&ib->mu);
    memcpy(out, ib->dropped, sizeof ib->dropped);
    pthread_mutex_unlock(&ib->mu);
}

void pd_inbox_free(pd_inbox *ib) {
    for (uint32_t i = 0; i < ib->n; i++) natsMsg_Destroy(ib->items[i].msg);
    free(ib->items);
    ib->items = NULL;
    ib->n = ib->cap = 0;
    pthread_mutex_destroy(&ib->mu);
}

void pd_inbox_close(pd_inbox *ib) {
    pd_inbox_item *items;
    uint32_t n;
    pthread_mutex_lock(&ib->mu);
    ib->closed = true;
    items = ib->items;
    n = ib->n;
    ib->items = NULL;
    ib->n = ib->cap = 0;
    pthread_mutex_unlock(&ib->mu);
    for (uint32_t i = 0; i < n; i++) natsMsg_Destroy(items[i].msg);
    free(items);
}

/* Called with the lock held: counts and destroys a message not queued. */
static bool drop(pd_inbox *ib, natsMsg *msg, int kind, bool count) {
    if (count) ib->dropped[kind]++;
    pthread_mutex_unlock(&ib->mu);
    natsMsg_Destroy(msg);
    return false;
}

bool pd_inbox_push(pd_inbox *ib, natsMsg *msg, int kind) {
    bool was_empty;
    uint64_t len = (uint64_t)natsMsg_GetDataLength(msg);
    if (kind < 0 || kind >= PD_INBOX_KINDS) kind = PD_INBOX_KINDS - 1;
    pthread_mutex_lock(&ib->mu);
    if (ib->closed) return drop(ib, msg, kind, false);
    bool bounded = !(ib->exempt & (1u << kind));
    if (bounded && ((ib->max_msgs && ib->bounded_n >= ib->max_msgs) ||
                    (ib->max_bytes && ib->bounded_bytes + len > ib->max_bytes)))
        return drop(ib, msg, kind, true);
    if (ib->n == ib->cap) {
        uint32_t cap = ib->cap ? ib->cap * 2 : 256;
        pd_inbox_item *it = realloc(ib->items, sizeof *it * cap);
        if (it == NULL) return drop(ib, msg, kind, true);
        ib->items = it;
        ib->cap = cap;
    }
    was_empty = ib->n == 0;
    ib->items[ib->n++] = (pd_inbox_item){msg, kind};
    ib->bytes += len;
    if (bounded) {
        ib->bounded_n++;
        ib->bounded_bytes += len;
    }
    ib->pushed++;
    pthread_mutex_unlock(&ib->mu);
    return was_empty;
}

void pd_inbox_take(pd_inbox *ib, pd_inbox_item **out, uint32_t *n) {
    pthread_mutex_lock(&ib->mu);
    *out = ib->items;
    *n = ib->n;
    ib->items = NULL;
    ib->n = ib->cap = 0;
    ib->bytes = ib->bounded_bytes = 0;
    ib->bounded_n = 0;
    pthread_mutex_unlock(&ib->mu);
}

void pd_inbox_release(pd_inbox_item *items) { free(items); }

void pd_msgbin_put(pd_msgbin *b, natsMsg *msg, uint64_t now_ms) {
    if (b->n == b->cap) {
        uint32_t cap = b->cap ? b->cap * 2 : 256;
        natsMsg **v = cap <= PD_MSGBIN_MAX ? realloc(b->v, sizeof *v * cap) : NULL;
        if (v == NULL) {
            natsMsg_Destroy(msg);
            return;
        }
        b->v = v;
        b->cap = cap;
    }
    if (b->n == 0) b->since = now_ms;
    b->v[b->n++] = msg;
}

void pd_msgbin_empty(pd_msgbin *b, uint64_t now_ms, bool all) {
    if (b->n == 0) return;
    if (!all && b->n < PD_MSGBIN_MAX / 2 && now_ms - b->since < PD_MSGBIN_MS) return;
    for (uint32_t i = 0; i < b->n; i++) natsMsg_Destroy(b->v[i]);
    b->n = 0;
}

void pd_msgbin_free(pd_msgbin *b) {
    pd_msgbin_empty(b, 0, true);
    free(b->v);
    b->v = NULL;
    b->cap = 0;
}

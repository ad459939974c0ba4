/* inbox.c - mutex-guarded message queue between nats.c threads and the loop. */
#include "inbox.h"
#include <stdlib.h>

pd_status pd_inbox_init(pd_inbox *ib) {
    ib->items = NULL;
    ib->n = ib->cap = 0;
    ib->pushed = ib->dropped = 0;
    ib->closed = false;
    return pthread_mutex_init(&ib->mu, NULL) == 0 ? PD_OK : PD_EINTERNAL;
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

bool pd_inbox_push(pd_inbox *ib, natsMsg *msg, int kind) {
    bool was_empty;
    pthread_mutex_lock(&ib->mu);
    if (ib->closed) {
        pthread_mutex_unlock(&ib->mu);
        natsMsg_Destroy(msg);
        return false;
    }
    if (ib->n == ib->cap) {
        uint32_t cap = ib->cap ? ib->cap * 2 : 256;
        pd_inbox_item *it = realloc(ib->items, sizeof *it * cap);
        if (it == NULL) {
            ib->dropped++;
            pthread_mutex_unlock(&ib->mu);
            natsMsg_Destroy(msg);
            return false;
        }
        ib->items = it;
        ib->cap = cap;
    }
    was_empty = ib->n == 0;
    ib->items[ib->n++] = (pd_inbox_item){msg, kind};
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
    pthread_mutex_unlock(&ib->mu);
}

void pd_inbox_release(pd_inbox_item *items) { free(items); }

/* timerheap.c - binary min-heap of pd_timer pointers (see timerheap.h). */
#include "base/timerheap.h"
#include "base/alloc.h"

void pd_theap_init(pd_theap *th) {
    th->h = NULL;
    th->n = th->cap = 0;
}

void pd_theap_free(pd_theap *th) {
    for (uint32_t i = 0; i < th->n; i++) th->h[i]->idx = 0;
    pd_free(th->h);
    pd_theap_init(th);
}

static void place(pd_theap *th, uint32_t i, pd_timer *t) {
    th->h[i] = t;
    t->idx = i + 1;
}

static void sift_up(pd_theap *th, uint32_t i) {
    pd_timer *t = th->h[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (th->h[parent]->due <= t->due) break;
        place(th, i, th->h[parent]);
        i = parent;
    }
    place(th, i, t);
}

static void sift_down(pd_theap *th, uint32_t i) {
    pd_timer *t = th->h[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= th->n) break;
        if (c + 1 < th->n && th->h[c + 1]->due < th->h[c]->due) c++;
        if (th->h[c]->due >= t->due) break;
        place(th, i, th->h[c]);
        i = c;
    }
    place(th, i, t);
}

pd_status pd_theap_arm(pd_theap *th, pd_timer *t, uint64_t due) {
    if (t->idx) {
        uint64_t old = t->due;
        t->due = due;
        if (due < old) sift_up(th, t->idx - 1);
        else sift_down(th, t->idx - 1);
        return PD_OK;
    }
    if (th->n == th->cap) {
        uint32_t cap = th->cap ? th->cap * 2 : 64;
        pd_timer **h = pd_realloc(th->h, sizeof *h * cap);
        if (h == NULL) return PD_ENOMEM;
        th->h = h;
        th->cap = cap;
    }
    t->due = due;
    place(th, th->n++, t);
    sift_up(th, th->n - 1);
    return PD_OK;
}

void pd_theap_disarm(pd_theap *th, pd_timer *t) {
    if (!t->idx) return;
    uint32_t i = t->idx - 1;
    t->idx = 0;
    th->n--;
    if (i == th->n) return;
    pd_timer *last = th->h[th->n];
    place(th, i, last);
    if (i > 0 && th->h[(i - 1) / 2]->due > last->due) sift_up(th, i);
    else sift_down(th, i);
}

pd_timer *pd_theap_pop_due(pd_theap *th, uint64_t now) {
    if (th->n == 0 || th->h[0]->due > now) return NULL;
    pd_timer *t = th->h[0];
    pd_theap_disarm(th, t);
    return t;
}

uint64_t pd_theap_next(const pd_theap *th) {
    return th->n ? th->h[0]->due : UINT64_MAX;
}

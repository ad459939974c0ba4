/* dash_hub.c - the fan-out of frames to the open pages (see dash_hub.h).
 *
 * Design: frame k lives in ring[k % DASH_HUB_RING] until frame
 * k + DASH_HUB_RING replaces it; `next` is the number of the next frame.
 * Readers copy under the lock and write to their socket without it. */
#include "dash_hub.h"
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    char *frame;
    size_t len;
} slot;

struct dash_hub {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    slot ring[DASH_HUB_RING];
    uint64_t next;
    slot nodes, cluster;
    slot history[DASH_HUB_HISTORY];
    uint32_t hist_head, hist_n;
    bool stopped;
};

dash_hub *dash_hub_new(void) {
    dash_hub *h = calloc(1, sizeof *h);
    pthread_condattr_t ca;
    if (h == NULL) return NULL;
    pthread_mutex_init(&h->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cv, &ca);
    pthread_condattr_destroy(&ca);
    return h;
}

void dash_hub_free(dash_hub *h) {
    if (h == NULL) return;
    for (size_t i = 0; i < DASH_HUB_RING; i++) free(h->ring[i].frame);
    for (size_t i = 0; i < DASH_HUB_HISTORY; i++) free(h->history[i].frame);
    free(h->nodes.frame);
    free(h->cluster.frame);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

static char *dup_bytes(const char *p, size_t n) {
    char *c = malloc(n + 1);
    if (c) {
        memcpy(c, p, n);
        c[n] = '\0';
    }
    return c;
}

void dash_hub_publish(dash_hub *h, dash_frame_kind kind, char *frame, size_t len) {
    char *keep = dup_bytes(frame, len);
    char *old_ring, *old_keep = NULL;
    pthread_mutex_lock(&h->mu);
    slot *r = &h->ring[h->next % DASH_HUB_RING];
    old_ring = r->frame;
    *r = (slot){frame, len};
    h->next++;
    if (keep != NULL) {
        slot *k = kind == DASH_FRAME_NODES ? &h->nodes : kind == DASH_FRAME_CLUSTER ? &h->cluster
                : &h->history[h->hist_head];
        old_keep = k->frame;
        *k = (slot){keep, len};
        if (kind == DASH_FRAME_NOTE) {
            h->hist_head = (h->hist_head + 1) % DASH_HUB_HISTORY;
            if (h->hist_n < DASH_HUB_HISTORY) h->hist_n++;
        }
    }
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    free(old_ring);
    free(old_keep);
}

static void append(char *out, size_t *o, const slot *s) {
    if (s->frame == NULL) return;
    memcpy(out + *o, s->frame, s->len);
    *o += s->len;
}

char *dash_hub_join(dash_hub *h, uint64_t *pos, size_t *len) {
    pthread_mutex_lock(&h->mu);
    size_t total = h->nodes.len + h->cluster.len, o = 0;
    for (uint32_t i = 0; i < h->hist_n; i++) total += h->history[i].len;
    char *out = malloc(total + 1);
    if (out != NULL) {
        append(out, &o, &h->nodes);
        append(out, &o, &h->cluster);
        uint32_t first = (h->hist_head + DASH_HUB_HISTORY - h->hist_n) % DASH_HUB_HISTORY;
        for (uint32_t i = 0; i < h->hist_n; i++)
            append(out, &o, &h->history[(first + i) % DASH_HUB_HISTORY]);
        out[o] = '\0';
        *len = o;
    }
    *pos = h->next;
    pthread_mutex_unlock(&h->mu);
    return out;
}

char *dash_hub_next(dash_hub *h, uint64_t *pos, size_t *len, uint64_t wait_ms, bool *stopped) {
    struct timespec dl;
    char *out = NULL;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += (time_t)(wait_ms / 1000);
    dl.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&h->mu);
    while (!h->stopped && *pos >= h->next) {
        if (pthread_cond_timedwait(&h->cv, &h->mu, &dl) == ETIMEDOUT) break;
    }
    *stopped = h->stopped;
    if (!h->stopped && *pos < h->next) {
        if (h->next - *pos > DASH_HUB_RING) *pos = h->next - DASH_HUB_RING; /* fell behind */
        const slot *s = &h->ring[*pos % DASH_HUB_RING];
        out = dup_bytes(s->frame, s->len);
        if (out != NULL) {
            *len = s->len;
            (*pos)++;
        }
    }
    pthread_mutex_unlock(&h->mu);
    return out;
}

char *dash_hub_state(dash_hub *h) {
    char *out = NULL;
    pthread_mutex_lock(&h->mu);
    const char *d = h->nodes.frame ? strstr(h->nodes.frame, "\ndata: ") : NULL;
    if (d != NULL) {
        d += strlen("\ndata: ");
        out = dup_bytes(d, strcspn(d, "\n"));
    }
    pthread_mutex_unlock(&h->mu);
    return out ? out : dup_bytes("{}", 2);
}

void dash_hub_stop(dash_hub *h) {
    pthread_mutex_lock(&h->mu);
    h->stopped = true;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

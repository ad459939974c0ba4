/* query_answer.c - get, devices and online answered from a model (see
 * query_answer.h). */
#include "model/query_answer.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const pd_freshness *fr;
    bool stale;
} stale_ctx;

static void check_owner(void *ud, const pd_device_view *d) {
    stale_ctx *c = ud;
    for (uint32_t i = 0; !c->stale && i < c->fr->nstale; i++)
        c->stale = pd_str_eq(d->node, c->fr->stale[i]);
}

bool pd_query_user_stale(const pd_model *m, pd_str user, const pd_freshness *fr) {
    stale_ctx c = {fr, false};
    if (fr == NULL || fr->nstale == 0) return false;
    pd_model_devices_of(m, user, check_owner, &c);
    return c.stale;
}

/* A user's entry is stale only when it shows devices: an invisible user's
 * public view says nothing of them, and neither may its `stale`. */
static void answer_get(const pd_model *m, const pd_query *q, const pd_freshness *fr,
                       msgpack_packer *pk) {
    mp_reader it;
    pd_str user;
    pd_reply_fresh f = {fr ? fr->as_of : 0, false};
    pd_get_reply_begin(pk, q->nusers, fr ? &f : NULL);
    pd_query_users_iter(q, &it);
    while (pd_query_next_user(&it, &user)) {
        pd_view v;
        pd_model_view(m, user, q->viewer, &v);
        v.stale = v.devices > 0 && pd_query_user_stale(m, user, fr);
        pd_get_reply_user(pk, &v);
    }
    pd_get_reply_end(pk, fr ? &f : NULL);
}

typedef struct {
    pd_device_view *v;
    uint32_t n;
} dev_list;

static void collect_device(void *ud, const pd_device_view *d) {
    dev_list *l = ud;
    l->v[l->n++] = *d;
}

static int str_cmp(pd_str a, pd_str b) {
    int c = memcmp(a.p, b.p, a.n < b.n ? a.n : b.n);
    return c ? c : (a.n > b.n) - (a.n < b.n);
}

static int device_cmp(const void *a, const void *b) {
    const pd_device_view *x = a, *y = b;
    int c = str_cmp(x->server, y->server);
    return c ? c : str_cmp(x->conn, y->conn);
}

/* Sorted by (server, conn): every node lists a user's devices in the same
 * order, whatever order it learnt them in. */
static pd_status answer_devices(const pd_model *m, const pd_query *q, const pd_freshness *fr,
                                msgpack_packer *pk, pd_err *err) {
    uint32_t count = pd_model_devices_of(m, q->user, NULL, NULL);
    dev_list l = {malloc(sizeof *l.v * (count ? count : 1)), 0};
    if (l.v == NULL) {
        pd_err_set(err, PD_ENOMEM, "out of memory");
        return PD_ENOMEM;
    }
    pd_model_devices_of(m, q->user, collect_device, &l);
    qsort(l.v, l.n, sizeof *l.v, device_cmp);
    pd_reply_fresh f = {fr ? fr->as_of : 0, false};
    for (uint32_t i = 0; fr && !f.stale && i < l.n; i++) {
        for (uint32_t k = 0; !f.stale && k < fr->nstale; k++)
            f.stale = pd_str_eq(l.v[i].node, fr->stale[k]);
    }
    pd_devices_reply_begin(pk, q->user, l.n, fr ? &f : NULL);
    for (uint32_t i = 0; i < l.n; i++) pd_devices_reply_device(pk, &l.v[i]);
    pd_devices_reply_end(pk, fr ? &f : NULL);
    free(l.v);
    return PD_OK;
}

typedef struct {
    pd_str users[PD_QUERY_LIMIT_MAX + 64];
    uint32_t n;
} online_page;

static void collect_user(void *ud, pd_str user) {
    online_page *p = ud;
    if (p->n < sizeof p->users / sizeof p->users[0]) p->users[p->n++] = user;
}

bool pd_query_cursor_parse(pd_str c, uint64_t *out) {
    char buf[PD_CURSOR_MAX + 1];
    char *end;
    *out = 0;
    if (c.n == 0) return true;
    if (c.n > 20) return false;
    memcpy(buf, c.p, c.n);
    buf[c.n] = '\0';
    if (buf[0] < '0' || buf[0] > '9') return false;
    unsigned long long v = strtoull(buf, &end, 10);
    if (*end != '\0') return false;
    *out = v;
    return true;
}

static pd_status answer_online(const pd_model *m, const pd_query *q, msgpack_packer *pk,
                               pd_err *err) {
    uint64_t cursor;
    char next_s[24];
    if (!pd_query_cursor_parse(q->cursor, &cursor)) {
        pd_err_set(err, PD_EBADVALUE, "field 'cursor' is not a cursor this service returned");
        return PD_EBADVALUE;
    }
    online_page *page = malloc(sizeof *page);
    if (page == NULL) {
        pd_err_set(err, PD_ENOMEM, "out of memory");
        return PD_ENOMEM;
    }
    page->n = 0;
    uint64_t next = pd_model_scan_online(m, cursor, q->limit, collect_user, page);
    pd_online_reply_begin(pk, page->n, next != 0);
    for (uint32_t i = 0; i < page->n; i++) pd_online_reply_user(pk, page->users[i]);
    snprintf(next_s, sizeof next_s, "%" PRIu64, next);
    pd_online_reply_end(pk, next ? pd_str_c(next_s) : (pd_str){NULL, 0});
    free(page);
    return PD_OK;
}

pd_status pd_query_answer(const pd_model *m, const pd_query *q, const pd_freshness *fr,
                          msgpack_packer *pk, pd_err *err) {
    switch (q->type) {
    case PD_Q_GET: answer_get(m, q, fr, pk); return PD_OK;
    case PD_Q_DEVICES: return answer_devices(m, q, fr, pk, err);
    case PD_Q_ONLINE: return answer_online(m, q, pk, err);
    default:
        pd_err_set(err, PD_EINTERNAL, "query %d is not answered from the model", (int)q->type);
        return PD_EINTERNAL;
    }
}

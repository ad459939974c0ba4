/* sim_net.c - presence-sim's NATS side: the connection, events sent as
 * requests without waiting, replies counted as they come, and resync
 * requests turned into flags for the main loop.
 *
 * Every event is published with natsConnection_PublishRequest and a reply
 * subject "<inbox>.<id>" of the sim's own inbox; one subscription on
 * "<inbox>.*" receives all replies. The id indexes a ring of pending
 * requests holding each one's event type: a slot is reused only after its
 * request was answered (the ring grows instead), so a reply always finds
 * its request and a late or repeated one is not counted twice. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include "base/alloc.h"
#include "base/config.h"
#include "config_files.h"
#include "natsauth.h"
#include "sim.h"

/* Counts one error reply; called with mu held. */
static void count_error(sim_replies *r, int type, const char *code, const char *msg) {
    uint32_t i;
    r->errors++;
    for (i = 0; i < r->ncodes && strcmp(r->codes[i].code, code) != 0; i++) continue;
    if (i == r->ncodes && r->ncodes < SIM_ERR_CODES) {
        snprintf(r->codes[i].code, sizeof r->codes[i].code, "%s", code);
        r->ncodes++;
    }
    if (i < r->ncodes) r->codes[i].n++;
    else r->other_codes++;
    if (r->nshown < SIM_ERR_SHOWN) {
        snprintf(r->shown[r->nshown++], sizeof r->shown[0], "%s: %s: %s",
                 type >= 0 ? pd_event_type_name((pd_event_type)type) : "?", code, msg);
    }
}

static void on_reply(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *ud) {
    sim *s = ud;
    sim_replies *r = &s->rep;
    const char *subj = natsMsg_GetSubject(m);
    const char *dot = strrchr(subj, '.');
    uint64_t id = dot ? strtoull(dot + 1, NULL, 10) : UINT64_MAX;
    bool noresp = natsMsg_IsNoResponders(m);
    pd_reply rep = {0};
    pd_status st = noresp ? PD_EBADMSGPACK
                          : pd_reply_decode(natsMsg_GetData(m),
                                            (size_t)natsMsg_GetDataLength(m), &rep);
    pthread_mutex_lock(&r->mu);
    uint8_t *slot = &r->pending[id & (r->cap - 1)];
    if (id < r->requests && id + r->cap >= r->requests && *slot != 0) {
        int type = *slot - 1;
        *slot = 0;
        r->answered++;
        if (st == PD_OK && rep.ok) r->ok++;
        else if (noresp) count_error(r, type, "no_responders", "no node listens on the subject");
        else if (st != PD_OK) count_error(r, type, "bad_reply", "the reply is not {ok, ...}");
        else count_error(r, type, rep.code, rep.message);
    }
    pthread_mutex_unlock(&r->mu);
    natsMsg_Destroy(m);
}

static void on_resync(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *ud) {
    sim_resync_ctx *c = ud;
    pthread_mutex_lock(&c->s->rep.mu);
    c->s->rep.resync_wanted |= 1u << c->node;
    c->s->rep.resyncs++;
    pthread_mutex_unlock(&c->s->rep.mu);
    natsMsg_Destroy(m);
}

/* Doubles the ring, keeping every id at its new place. Called with mu held. */
static bool ring_grow(sim_replies *r) {
    uint64_t cap = r->cap * 2;
    uint8_t *p = pd_calloc(cap, 1);
    if (p == NULL) return false;
    for (uint64_t id = r->requests - r->cap; id < r->requests; id++)
        p[id & (cap - 1)] = r->pending[id & (r->cap - 1)];
    pd_free(r->pending);
    r->pending = p;
    r->cap = cap;
    return true;
}

/* Hands out the next request id for an event of type; UINT64_MAX if the
 * ring cannot grow. */
static uint64_t request_begin(sim *s, pd_event_type type) {
    sim_replies *r = &s->rep;
    uint64_t id = UINT64_MAX;
    pthread_mutex_lock(&r->mu);
    if (r->pending[r->requests & (r->cap - 1)] == 0 || ring_grow(r)) {
        id = r->requests++;
        r->pending[id & (r->cap - 1)] = (uint8_t)(type + 1);
    }
    pthread_mutex_unlock(&r->mu);
    return id;
}

/* A request that never left: not awaited, not answered. */
static void request_cancel(sim *s, uint64_t id) {
    pthread_mutex_lock(&s->rep.mu);
    s->rep.pending[id & (s->rep.cap - 1)] = 0;
    s->rep.answered++;
    pthread_mutex_unlock(&s->rep.mu);
}

const char *sim_node_of(const sim *s, uint32_t server) {
    return s->opt.nodes[server % s->opt.nnodes];
}

bool sim_net_send(sim *s, uint32_t server, pd_event *ev, const pd_sync_conn *sync, uint32_t n) {
    char subj[300], reply[200];
    ev->server = pd_str_c(s->server_id[server]);
    ev->has_ts = true;
    ev->ts = (int64_t)s->wall_ms;
    ev->has_seq = true;
    ev->seq = ++s->seq[server];
    msgpack_sbuffer_clear(&s->sb);
    pd_event_encode(&s->sb, ev, sync, n);
    snprintf(subj, sizeof subj, "%s.events.%s", s->opt.prefix, sim_node_of(s, server));
    uint64_t id = request_begin(s, ev->type);
    if (id == UINT64_MAX) {
        s->publish_failures++;
        return false;
    }
    snprintf(reply, sizeof reply, "%s.%" PRIu64, s->inbox, id);
    natsStatus st = natsConnection_PublishRequest(s->nc, subj, reply, s->sb.data, (int)s->sb.size);
    if (st != NATS_OK) {
        request_cancel(s, id);
        s->publish_failures++;
        if (st == NATS_CONNECTION_CLOSED) s->conn_closed = true;
        return false;
    }
    s->sent[ev->type]++;
    s->sent_total++;
    return true;
}

uint64_t sim_net_inflight(sim *s) {
    pthread_mutex_lock(&s->rep.mu);
    uint64_t n = s->rep.requests - s->rep.answered;
    pthread_mutex_unlock(&s->rep.mu);
    return n;
}

uint32_t sim_net_take_resyncs(sim *s) {
    pthread_mutex_lock(&s->rep.mu);
    uint32_t w = s->rep.resync_wanted;
    s->rep.resync_wanted = 0;
    pthread_mutex_unlock(&s->rep.mu);
    return w;
}

static natsStatus subscribe(sim *s) {
    char subj[300];
    natsInbox *inbox = NULL;
    natsStatus st = natsInbox_Create(&inbox);
    if (st != NATS_OK) return st;
    snprintf(s->inbox, sizeof s->inbox, "%s", (const char *)inbox);
    natsInbox_Destroy(inbox);
    snprintf(subj, sizeof subj, "%s.*", s->inbox);
    if ((st = natsConnection_Subscribe(&s->reply_sub, s->nc, subj, on_reply, s)) != NATS_OK)
        return st;
    /* A storm may put far more than --max-inflight replies in flight. */
    natsSubscription_SetPendingLimits(s->reply_sub, -1, -1);
    for (uint32_t i = 0; i < s->opt.nnodes; i++) {
        s->resync_ctx[i] = (sim_resync_ctx){s, i};
        snprintf(subj, sizeof subj, "%s.resync.%s", s->opt.prefix, s->opt.nodes[i]);
        st = natsConnection_Subscribe(&s->resync_sub[i], s->nc, subj, on_resync,
                                      &s->resync_ctx[i]);
        if (st != NATS_OK) return st;
    }
    return natsConnection_Flush(s->nc);
}

/* Credentials and TLS from the PRESENCE_NATS_* variables, as presenced
 * reads them (the socket-server account of deploy/nats-accounts.conf).
 * On failure *what points at the message (a static buffer). */
static natsStatus apply_auth(sim *s, natsOptions *o, const char **what) {
    static char msg[600];
    char err[512];
    pd_config *c = pd_malloc(sizeof *c);
    natsStatus st = NATS_INVALID_ARG;
    if (c == NULL) return NATS_NO_MEMORY;
    if (pd_config_load_env_prefix(c, "PRESENCE_NATS_", NULL, err, sizeof err) == PD_OK) {
        /* --nats wins over PRESENCE_NATS_URL: TLS follows the URLs in use. */
        snprintf(c->nats_url, sizeof c->nats_url, "%s", s->opt.nats_url);
        if (pd_config_check_auth(c, err, sizeof err) == PD_OK &&
            pd_config_check_files(c, 0, NULL, err, sizeof err) == PD_OK &&
            pd_natsauth_apply(o, c, err, sizeof err) == PD_OK)
            st = NATS_OK;
    }
    pd_free(c);
    if (st != NATS_OK) {
        snprintf(msg, sizeof msg, "NATS credentials: %s", err);
        *what = msg;
    }
    return st;
}

natsStatus sim_net_start(sim *s, const char **what) {
    natsOptions *o = NULL;
    natsStatus st = NATS_NO_MEMORY;
    char urlbuf[1024];
    const char *urls[32];
    size_t nurls = pd_url_split(s->opt.nats_url, urlbuf, sizeof urlbuf, urls, 32);
    *what = "cannot start";
    s->rep.cap = 1u << 16;
    s->rep.pending = pd_calloc(s->rep.cap, 1);
    if (s->rep.pending == NULL) return st;
    pthread_mutex_init(&s->rep.mu, NULL);
    if ((st = natsOptions_Create(&o)) != NATS_OK) return st;
    natsOptions_SetServers(o, urls, (int)nurls);
    natsOptions_SetTimeout(o, 2000);
    natsOptions_SetName(o, "presence-sim");
    if ((st = apply_auth(s, o, what)) != NATS_OK) {
        natsOptions_Destroy(o);
        return st;
    }
    *what = "cannot reach NATS";
    st = natsConnection_Connect(&s->nc, o);
    natsOptions_Destroy(o);
    if (st != NATS_OK) return st;
    *what = "cannot subscribe";
    return subscribe(s);
}

void sim_net_stop(sim *s) {
    if (s->nc) natsConnection_Close(s->nc);
    natsSubscription_Destroy(s->reply_sub);
    for (uint32_t i = 0; i < s->opt.nnodes; i++) natsSubscription_Destroy(s->resync_sub[i]);
    natsConnection_Destroy(s->nc);
    s->nc = NULL;
    /* Waits for nats.c's threads, so no callback runs after this. */
    nats_CloseAndWait(2000);
    if (s->rep.pending) pthread_mutex_destroy(&s->rep.mu);
    pd_free(s->rep.pending);
    s->rep.pending = NULL;
}

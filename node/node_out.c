/* node_out.c - the loop's publishing connection, written once per batch.
 *
 * With one connection and SendAsap, every reply, notification, delta,
 * heartbeat and trace report the loop publishes is a send() of its own,
 * made under the connection's lock that nats.c's reading thread also needs
 * for every message it receives. Without SendAsap, nats.c's flusher thread
 * holds a publish up to 1 ms. nats.c 3.4 has no call that writes its
 * buffer without a PING round trip, but it has an event-loop mode: the
 * connection's socket is watched by the application's loop, and nats.c
 * only asks, through the callbacks below, to be told when the socket is
 * readable or writable (natsConnection_ProcessReadEvent/WriteEvent).
 *
 * So the node publishes on a second connection, n->pub, attached to its
 * libuv loop through these callbacks; the first one (n->nc) keeps nats.c's
 * own threads for everything it receives and for the requests that block
 * (JetStream). A publish from the loop thread asks to write; that request
 * is only noted (out.dirty) and node__out_flush(), called at the end of
 * each batch (and before the loop sleeps), writes the whole buffer in one
 * write(). A request from another thread (nats.c's PINGs, a reconnect) is
 * handed to the loop and served as nats.c expects. The socket is watched
 * for writing only when a write was partial (the kernel's buffer full).
 *
 * Attach and detach come from nats.c's threads too (a reconnect), so the
 * wanted state (socket, events) is kept under a mutex and applied by the
 * loop; the uv_poll handle of a socket is the loop's alone. */
#include "node.h"
#include <stdlib.h>

static bool on_loop_thread(const node_out *o) {
    return pthread_equal(pthread_self(), o->loop_thread) != 0;
}

static void free_poll(uv_handle_t *h) { free(h); }

static void on_poll(uv_poll_t *h, int status, int events) {
    node_out *o = h->data;
    natsConnection *nc = o->cur_nc;
    if (nc == NULL) return;
    /* An error (status < 0) surfaces in nats.c through the read. */
    if (status < 0 || (events & UV_READABLE)) natsConnection_ProcessReadEvent(nc);
    if (status == 0 && (events & UV_WRITABLE)) natsConnection_ProcessWriteEvent(nc);
}

/* Loop thread: makes the uv_poll handle match what nats.c asked for. A
 * handle watching nothing is closed at once: nats.c stops the polling
 * before it closes the socket, and a handle kept on a closed descriptor
 * would later unregister whatever socket reuses its number. */
static void apply(node_out *o) {
    pthread_mutex_lock(&o->mu);
    uint64_t gen = o->want_gen;
    int fd = o->want_fd, events = o->want_events;
    natsConnection *nc = o->want_nc;
    pthread_mutex_unlock(&o->mu);
    o->cur_nc = nc;
    if (o->poll != NULL && (gen != o->cur_gen || events == 0)) {
        uv_close((uv_handle_t *)o->poll, free_poll);
        o->poll = NULL;
    }
    o->cur_gen = gen;
    if (o->poll == NULL && fd >= 0 && events != 0) {
        o->poll = malloc(sizeof *o->poll);
        if (o->poll == NULL || uv_poll_init_socket(o->loop, o->poll, fd) != 0) {
            free(o->poll);
            o->poll = NULL;
            pd_log(PD_LOG_ERROR, "NATS (publishing): cannot watch the socket");
            return;
        }
        o->poll->data = o;
        o->cur_events = 0;
    }
    if (o->poll != NULL && events != o->cur_events) {
        uv_poll_start(o->poll, events, on_poll);
        o->cur_events = events;
    }
}

static void on_request(uv_async_t *h) { apply(h->data); }

/* From any thread: the loop applies it at once or on its next turn. */
static natsStatus want(node_out *o, int set, int clear) {
    pthread_mutex_lock(&o->mu);
    o->want_events = (o->want_events | set) & ~clear;
    pthread_mutex_unlock(&o->mu);
    if (on_loop_thread(o)) apply(o);
    else uv_async_send(&o->request);
    return NATS_OK;
}

static natsStatus ev_attach(void **ud, void *loop, natsConnection *nc, natsSock sock) {
    node_out *o = loop; /* natsOptions_SetEventLoop's "loop" is this struct */
    *ud = o;
    pthread_mutex_lock(&o->mu);
    o->want_gen++;
    o->want_fd = (int)sock;
    o->want_nc = nc;
    o->want_events = UV_READABLE;
    pthread_mutex_unlock(&o->mu);
    if (on_loop_thread(o)) apply(o);
    else uv_async_send(&o->request);
    return NATS_OK;
}

static natsStatus ev_read(void *ud, bool add) {
    return add ? want(ud, UV_READABLE, 0) : want(ud, 0, UV_READABLE);
}

static natsStatus ev_write(void *ud, bool add) {
    node_out *o = ud;
    if (add && on_loop_thread(o)) {
        o->dirty = true; /* node__out_flush writes it, this batch */
        return NATS_OK;
    }
    return add ? want(o, UV_WRITABLE, 0) : want(o, 0, UV_WRITABLE);
}

static natsStatus ev_detach(void *ud) {
    node_out *o = ud;
    pthread_mutex_lock(&o->mu);
    o->want_gen++;
    o->want_fd = -1;
    o->want_events = 0;
    pthread_mutex_unlock(&o->mu);
    if (on_loop_thread(o)) apply(o);
    else uv_async_send(&o->request);
    return NATS_OK;
}

pd_status node__out_init(pd_node *n) {
    node_out *o = &n->out_io;
    o->loop = &n->loop;
    o->loop_thread = pthread_self();
    o->want_fd = -1;
    if (pthread_mutex_init(&o->mu, NULL) != 0) return PD_EINTERNAL;
    o->mu_ready = true;
    if (uv_async_init(&n->loop, &o->request, on_request) != 0) return PD_EINTERNAL;
    o->request.data = o;
    return PD_OK;
}

natsStatus node__out_options(pd_node *n, natsOptions *opts) {
    return natsOptions_SetEventLoop(opts, &n->out_io, ev_attach, ev_read, ev_write, ev_detach);
}

void node__out_flush(pd_node *n) {
    node_out *o = &n->out_io;
    if (!o->dirty || n->pub == NULL) return;
    o->dirty = false;
    natsConnection_ProcessWriteEvent(n->pub);
    /* Partial (the socket's buffer is full): the poll writes the rest. */
    if (natsConnection_Buffered(n->pub) > 0) want(o, UV_WRITABLE, 0);
}

void node__out_drain(pd_node *n, int timeout_ms) {
    n->out_io.dirty = false;
    for (int i = 0; i < timeout_ms && n->pub && natsConnection_Buffered(n->pub) > 0; i++) {
        natsConnection_ProcessWriteEvent(n->pub);
        if (natsConnection_Buffered(n->pub) > 0) nats_Sleep(1);
    }
}

void node__out_free(pd_node *n) {
    node_out *o = &n->out_io;
    /* The poll handle (if any) is closed with the loop's other handles. */
    if (o->mu_ready) pthread_mutex_destroy(&o->mu);
    o->mu_ready = false;
}

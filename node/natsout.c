/* natsout.c - a NATS connection on a libuv loop: read by the loop, and
 * written once per batch.
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
 * The node has two such connections (node_nats.c). It publishes on one
 * (n->pub): a publish from the loop thread asks to write; that request is
 * only noted (dirty) and pd_natsout_flush(), called at the end of each
 * batch (and before the loop sleeps), writes the whole buffer in one
 * write(). It receives on the other (n->nc): the loop reads the socket
 * (several buffers a turn, pd_natsout_on_read) and then takes the
 * messages nats.c parsed from its synchronous subscriptions, so a message
 * reaches its handler on the thread that read it, where nats.c's own
 * threads would hand it over twice (reader, delivery thread) and the
 * inbox once more. The bench's stub node (bench/bench_stub.c) does the
 * same. A request from another thread (nats.c's PINGs, a reconnect) is
 * handed to the loop and served as nats.c expects. The socket is watched
 * for writing only when a write was partial (the kernel's buffer full).
 * Nothing on the loop may wait for a reply on these connections (a
 * flush, JetStream's API): the loop is what would read it.
 *
 * Attach and detach come from nats.c's threads too (a reconnect), so the
 * wanted state (socket, events) is kept under a mutex and applied by the
 * loop; the uv_poll handle of a socket is the loop's alone. */
#include "natsout.h"
#include <stdlib.h>
#include <sys/ioctl.h>
#include <string.h>
#include "base/log.h"

static bool on_loop_thread(const pd_natsout *o) {
    return pthread_equal(pthread_self(), o->loop_thread) != 0;
}

static void free_poll(uv_handle_t *h) { free(h); }

/* True while the socket watched by h holds bytes not read yet (h is
 * no longer o->poll once nats.c detached it: the read failed). */
static bool more_to_read(pd_natsout *o, uv_poll_t *h) {
    uv_os_fd_t fd;
    int avail = 0;
    if (o->poll != h || uv_is_closing((uv_handle_t *)h) || uv_fileno((uv_handle_t *)h, &fd) != 0)
        return false;
    return ioctl(fd, FIONREAD, &avail) == 0 && avail > 0;
}

/* nats.c reads one buffer a call; a receiving connection reads on while
 * the socket holds more, up to its budget: a message the server sent
 * behind a flood (of 10 kB queries) is then read as soon as the loop is
 * free to, instead of after the flood is handled. `done` buffers were
 * read already. */
static void read_more(pd_natsout *o, int done) {
    for (int i = done; i < o->max_reads && o->poll && o->cur_nc && more_to_read(o, o->poll); i++)
        natsConnection_ProcessReadEvent(o->cur_nc);
}

void pd_natsout_read(pd_natsout *o) { read_more(o, 0); }

uint64_t pd_natsout_take(natsSubscription *sub, void (*fn)(void *arg, natsMsg *msg), void *arg) {
    uint64_t queued = 0, taken = 0;
    if (sub == NULL || natsSubscription_QueuedMsgs(sub, &queued) != NATS_OK) return 0;
    while (taken < queued) {
        natsMsg *msg = NULL;
        natsStatus s = natsSubscription_NextMsg(&msg, sub, 0);
        /* A slow consumer is told once, before the messages that follow. */
        if (s == NATS_SLOW_CONSUMER) continue;
        if (s != NATS_OK) break;
        taken++;
        fn(arg, msg);
    }
    return taken;
}

static void on_poll(uv_poll_t *h, int status, int events) {
    pd_natsout *o = h->data;
    natsConnection *nc = o->cur_nc;
    bool readable = status < 0 || (events & UV_READABLE);
    if (nc == NULL) return;
    /* An error (status < 0) surfaces in nats.c through the read. */
    if (readable) {
        natsConnection_ProcessReadEvent(nc);
        read_more(o, 1);
    }
    if (status == 0 && (events & UV_WRITABLE)) natsConnection_ProcessWriteEvent(nc);
    if (readable && o->on_read) o->on_read(o->on_read_arg);
}

/* Loop thread: makes the uv_poll handle match what nats.c asked for. A
 * handle watching nothing is closed at once: nats.c stops the polling
 * before it closes the socket, and a handle kept on a closed descriptor
 * would later unregister whatever socket reuses its number. */
static void apply(pd_natsout *o) {
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

static void on_before_wait(uv_prepare_t *h) {
    pd_natsout *o = h->data;
    pd_natsout_flush(o, o->cur_nc);
}

/* From any thread: the loop applies it at once or on its next turn. */
static natsStatus want(pd_natsout *o, int set, int clear) {
    pthread_mutex_lock(&o->mu);
    o->want_events = (o->want_events | set) & ~clear;
    pthread_mutex_unlock(&o->mu);
    if (on_loop_thread(o)) apply(o);
    else uv_async_send(&o->request);
    return NATS_OK;
}

static natsStatus ev_attach(void **ud, void *loop, natsConnection *nc, natsSock sock) {
    pd_natsout *o = loop; /* natsOptions_SetEventLoop's "loop" is this struct */
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
    pd_natsout *o = ud;
    if (add && on_loop_thread(o)) {
        o->dirty = true; /* pd_natsout_flush writes it, this batch */
        return NATS_OK;
    }
    return add ? want(o, UV_WRITABLE, 0) : want(o, 0, UV_WRITABLE);
}

static natsStatus ev_detach(void *ud) {
    pd_natsout *o = ud;
    pthread_mutex_lock(&o->mu);
    o->want_gen++;
    o->want_fd = -1;
    o->want_events = 0;
    pthread_mutex_unlock(&o->mu);
    if (on_loop_thread(o)) apply(o);
    else uv_async_send(&o->request);
    return NATS_OK;
}

pd_status pd_natsout_init(pd_natsout *o, uv_loop_t *loop) {
    memset(o, 0, sizeof *o);
    o->loop = loop;
    o->loop_thread = pthread_self();
    o->want_fd = -1;
    if (pthread_mutex_init(&o->mu, NULL) != 0) return PD_EINTERNAL;
    o->mu_ready = true;
    if (uv_async_init(loop, &o->request, on_request) != 0) return PD_EINTERNAL;
    o->request.data = o;
    /* Before the loop waits, what any callback published leaves (a PONG
     * to the server's PING, a publish outside a batch). */
    uv_prepare_init(loop, &o->before_wait);
    o->before_wait.data = o;
    uv_prepare_start(&o->before_wait, on_before_wait);
    uv_unref((uv_handle_t *)&o->before_wait);
    return PD_OK;
}

void pd_natsout_close(pd_natsout *o) {
    if (o->loop == NULL) return;
    if (!uv_is_closing((uv_handle_t *)&o->request)) uv_close((uv_handle_t *)&o->request, NULL);
    if (!uv_is_closing((uv_handle_t *)&o->before_wait))
        uv_close((uv_handle_t *)&o->before_wait, NULL);
}

void pd_natsout_on_read(pd_natsout *o, void (*cb)(void *arg), void *arg, int max_reads) {
    o->on_read = cb;
    o->on_read_arg = arg;
    o->max_reads = max_reads > 1 ? max_reads : 1;
}

natsStatus pd_natsout_options(pd_natsout *o, natsOptions *opts) {
    return natsOptions_SetEventLoop(opts, o, ev_attach, ev_read, ev_write, ev_detach);
}

void pd_natsout_flush(pd_natsout *o, natsConnection *nc) {
    if (!o->dirty || nc == NULL) return;
    o->dirty = false;
    natsConnection_ProcessWriteEvent(nc);
    /* Partial (the socket's buffer is full): the poll writes the rest. */
    if (natsConnection_Buffered(nc) > 0) want(o, UV_WRITABLE, 0);
}

void pd_natsout_drain(pd_natsout *o, natsConnection *nc, int timeout_ms) {
    o->dirty = false;
    for (int i = 0; i < timeout_ms && nc && natsConnection_Buffered(nc) > 0; i++) {
        natsConnection_ProcessWriteEvent(nc);
        if (natsConnection_Buffered(nc) > 0) nats_Sleep(1);
    }
}

void pd_natsout_free(pd_natsout *o) {
    /* The handles (async, poll) close with the loop's others. */
    if (o->mu_ready) pthread_mutex_destroy(&o->mu);
    o->mu_ready = false;
}

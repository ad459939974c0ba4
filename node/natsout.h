/* natsout.h - a NATS connection whose socket the libuv loop reads and
 * writes, writing once per batch (natsout.c says why and how).
 *
 *   pd_natsout_init(&o, loop);            on the loop's thread, before connecting
 *   pd_natsout_options(&o, opts);         then natsConnection_Connect(&nc, opts)
 *   natsConnection_Publish(nc, ...)...    from the loop's thread: buffered
 *   pd_natsout_flush(&o, nc);             at the end of the batch: one write()
 *                                         (and by itself before the loop waits)
 *   pd_natsout_drain(&o, nc, ms); close   before natsConnection_Close
 *
 * Publishing from another thread works too (nats.c's own PINGs do): the
 * loop is asked to write as soon as it can. The loop reads the socket
 * too; pd_natsout_on_read names a function called after each read, which
 * takes what the read queued in the connection's synchronous
 * subscriptions (natsSubscription_NextMsg with a timeout of 0). */
#ifndef PD_NATSOUT_H
#define PD_NATSOUT_H
#include <nats/nats.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>
#include "base/status.h"

/* Fields after mu are the loop thread's. */
typedef struct {
    uv_loop_t *loop;
    pthread_t loop_thread;
    uv_async_t request;             /* nats.c's threads ask the loop to apply */
    uv_prepare_t before_wait;       /* flushes before the loop waits */
    pthread_mutex_t mu;             /* guards want_*: what nats.c asked for */
    bool mu_ready;
    uint64_t want_gen;              /* +1 at every attach and detach */
    int want_fd, want_events;
    natsConnection *want_nc;
    uint64_t cur_gen;
    int cur_events;
    natsConnection *cur_nc;
    uv_poll_t *poll;                /* the socket now watched, NULL if none */
    bool dirty;                     /* a publish waits for pd_natsout_flush */
    void (*on_read)(void *arg);     /* after each read of the socket */
    void *on_read_arg;
    int max_reads;                  /* nats.c buffers read a turn, at most */
} pd_natsout;

/* Call on the thread that runs the loop. */
pd_status pd_natsout_init(pd_natsout *o, uv_loop_t *loop);
/* Makes the connection created with these options use the loop. */
natsStatus pd_natsout_options(pd_natsout *o, natsOptions *opts);
/* The loop reads up to max_reads of nats.c's buffers (natsOptions_
 * SetIOBufSize, 32 kB by default) while the socket holds more, then calls
 * cb(arg). Without it, one buffer a turn. */
void pd_natsout_on_read(pd_natsout *o, void (*cb)(void *arg), void *arg, int max_reads);
/* On the loop, between the turns: reads what the socket holds now (up to
 * max_reads buffers), without calling the on_read function. */
void pd_natsout_read(pd_natsout *o);
/* On the loop, after a read: hands each message the reads queued in the
 * synchronous subscription sub to fn (which owns it), in order; returns
 * how many. */
uint64_t pd_natsout_take(natsSubscription *sub, void (*fn)(void *arg, natsMsg *msg), void *arg);
/* Writes what the loop thread published since the last call, in one
 * write() (the rest, if the socket's buffer is full, when it drains). */
void pd_natsout_flush(pd_natsout *o, natsConnection *nc);
/* Writes everything still buffered, waiting up to timeout_ms: before
 * natsConnection_Close, which would otherwise wait for a PONG that only the
 * loop's thread could read. */
void pd_natsout_drain(pd_natsout *o, natsConnection *nc, int timeout_ms);
/* Closes the handles on the loop (after the connection is closed); then
 * run the loop once more for their close callbacks. */
void pd_natsout_close(pd_natsout *o);
/* After the loop has closed its handles. */
void pd_natsout_free(pd_natsout *o);

#endif

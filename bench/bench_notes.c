/* bench_notes.c - notifications counted (the cost of a restart's repeats,
 * issue 14): subscribes to <prefix>.user.> for secs seconds and prints how
 * many notifications arrived, and how many the library dropped (then the
 * count is a floor). "notes: subscribed" on stderr tells bench/bench.sh
 * that the subscription is in place. */
#include <stdatomic.h>
#include "bench.h"

typedef struct {
    atomic_uint_fast64_t n, bytes;
} notes_ctx;

static void on_note(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *arg) {
    (void)nc, (void)sub;
    notes_ctx *c = arg;
    atomic_fetch_add(&c->n, 1);
    atomic_fetch_add(&c->bytes, (uint_fast64_t)natsMsg_GetDataLength(m));
    natsMsg_Destroy(m);
}

int bench_notes(const bench_opts *o) {
    char subj[256];
    notes_ctx c;
    natsSubscription *sub = NULL;
    int64_t dropped = 0;
    atomic_init(&c.n, 0);
    atomic_init(&c.bytes, 0);
    natsConnection *nc = bench_connect(o->url, true, "pd-bench-notes");
    if (nc == NULL) return 1;
    snprintf(subj, sizeof subj, "%s.user.>", o->prefix);
    natsStatus s = natsConnection_Subscribe(&sub, nc, subj, on_note, &c);
    /* No pending limit: a restart's repeats come in a burst. */
    if (s == NATS_OK) s = natsSubscription_SetPendingLimits(sub, -1, -1);
    if (s == NATS_OK) s = natsConnection_Flush(nc);
    if (s != NATS_OK) {
        fprintf(stderr, "pd-bench: notes: cannot subscribe to %s: %s\n", subj,
                natsStatus_GetText(s));
        natsSubscription_Destroy(sub);
        bench_close(nc);
        return 1;
    }
    bench_progress("notes: subscribed to %s for %.0f s", subj, o->secs);
    bench_sleep_until(bench_mono_ns() + (uint64_t)(o->secs * 1e9));
    natsSubscription_GetDropped(sub, &dropped);
    natsSubscription_Unsubscribe(sub);
    /* nats.c#637: close the connection before the subscription goes. */
    bench_close(nc);
    natsSubscription_Destroy(sub);
    printf("{\"notifications\":%llu,\"bytes\":%llu,\"dropped\":%lld,\"secs\":%.1f}\n",
           (unsigned long long)atomic_load(&c.n), (unsigned long long)atomic_load(&c.bytes),
           (long long)dropped, o->secs);
    return 0;
}

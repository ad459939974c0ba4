/* presence_idle.c - the idle timers of this node's devices (issue 15).
 *
 * Every device of this node goes idle PRESENCE_IDLE_TIMEOUT_MS after its
 * last activity, one timeout for all: so instead of a timer each in the
 * heap (16 bytes in the record and an 8-byte heap slot), the active ones
 * wait in one queue ordered by their last activity, linked through the
 * records. An activity moves its device to the tail, which is where the
 * latest activity belongs; only a clock that went back makes the insert
 * search for its place (place_after). The head is the next device
 * to go idle, at its last activity + the timeout: pd_model_tick takes
 * the queue's head and the heap's top in the order they are due. */
#include "model/presence_int.h"

static void unlink_dev(pd_model *m, pd_device *d) {
    pd_device *prev = pd__dev_at(m, d->iprev), *next = pd__dev_at(m, d->inext);
    if (prev) prev->inext = d->inext;
    else m->idle_head = d->inext;
    if (next) next->iprev = d->iprev;
    else m->idle_tail = d->iprev;
    d->iprev = d->inext = 0;
    d->mark &= (uint8_t)~MARK_IDLEQ;
    m->nidle--;
}

/* The device d goes after: the last one whose activity is not later than
 * t (NULL: d goes first). Searched from both ends at once, so that a clock
 * that went back costs the distance to the nearer end. */
static pd_device *place_after(const pd_model *m, int64_t t) {
    pd_device *back = pd__dev_at(m, m->idle_tail), *front = pd__dev_at(m, m->idle_head);
    if (back == NULL || pd__dev_touched(back) <= t) return back;
    for (;;) {
        if (pd__dev_touched(front) > t) return pd__dev_at(m, front->iprev);
        back = pd__dev_at(m, back->iprev); /* not NULL: front, before it, is not later */
        if (pd__dev_touched(back) <= t) return back;
        front = pd__dev_at(m, front->inext);
    }
}

void pd__idle_arm(pd_model *m, pd_device *d) {
    int64_t t = pd__dev_touched(d);
    if (d->mark & MARK_IDLEQ) {
        const pd_device *prev = pd__dev_at(m, d->iprev), *next = pd__dev_at(m, d->inext);
        if ((prev == NULL || pd__dev_touched(prev) <= t) &&
            (next == NULL || t <= pd__dev_touched(next)))
            return; /* where it belongs already (a restored device, armed when added) */
        unlink_dev(m, d);
    }
    pd_device *after = place_after(m, t);
    uint32_t di = pd__dev_ix(m, d);
    d->iprev = pd__dev_ix(m, after);
    d->inext = after ? after->inext : m->idle_head;
    pd_device *next = pd__dev_at(m, d->inext);
    if (next) next->iprev = di;
    else m->idle_tail = di;
    if (after) after->inext = di;
    else m->idle_head = di;
    d->mark |= MARK_IDLEQ;
    m->nidle++;
}

void pd__idle_disarm(pd_model *m, pd_device *d) {
    if (d->mark & MARK_IDLEQ) unlink_dev(m, d);
}

uint64_t pd__idle_next(const pd_model *m) {
    const pd_device *d = pd__dev_at(m, m->idle_head);
    return d ? (uint64_t)pd__dev_touched(d) + m->cfg.idle_timeout_ms : UINT64_MAX;
}

pd_device *pd__idle_pop_due(pd_model *m, uint64_t now) {
    pd_device *d = pd__dev_at(m, m->idle_head);
    if (d == NULL || pd__idle_next(m) > now) return NULL;
    unlink_dev(m, d);
    return d;
}

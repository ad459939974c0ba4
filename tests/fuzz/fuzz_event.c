/* fuzz_event.c - libFuzzer target: connection events (docs/protocol.md section
 * 1) from a socket server, decoded and applied to a node's model.
 *
 * Input: one message as it would arrive on P.events.<node>.
 * Invariants checked:
 * - a refused message carries a valid status and a printable message, and
 *   applying nothing leaves the model as it was (digest);
 * - an accepted one keeps the decoder's promises (valid ids, slices inside
 *   the input, sizes within limits, sync entries valid and counted), and
 *   decode -> encode -> decode -> encode gives the same bytes twice;
 * - applied to a populated model (through the replica, as the node does),
 *   without and with limits (devices per user, users per node) one step
 *   away, a refusal changes nothing, and after it and after timers fire the
 *   model's bookkeeping agrees with itself; every delta, heartbeat and
 *   notification the replica sends decodes. */
#include <stdlib.h>
#include <string.h>
#include "fuzz_common.h"
#include "model/presence.h"
#include "sync/repl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_accepted(const pd_event *ev, const uint8_t *data, size_t size) {
    const pd_str ids[] = {ev->server, ev->conn, ev->user};
    FZ_CHECK((unsigned)ev->type < PD_EV_COUNT, "type %d", (int)ev->type);
    for (int i = 0; i < 3; i++) {
        FZ_CHECK(fz_within(ids[i], data, size), "id %d outside the input", i);
        FZ_CHECK(ids[i].n == 0 || pd_id_valid(ids[i].p, ids[i].n), "id %d invalid", i);
    }
    switch (ev->type) {
    case PD_EV_CONNECT:
        FZ_CHECK(ev->user.n && ev->device.n, "connect without user or device");
        /* fall through */
    case PD_EV_DISCONNECT: case PD_EV_ACTIVITY: case PD_EV_IDLE:
        FZ_CHECK(ev->conn.n, "%s without conn", pd_event_type_name(ev->type));
        /* fall through */
    case PD_EV_SYNC: case PD_EV_HEARTBEAT: case PD_EV_SHUTDOWN:
        FZ_CHECK(ev->server.n, "%s without server", pd_event_type_name(ev->type));
        break;
    default:
        FZ_CHECK(ev->user.n, "%s without user", pd_event_type_name(ev->type));
        break;
    }
    FZ_CHECK(fz_within(ev->device, data, size) && ev->device.n <= PD_DEVICE_MAX, "device");
    FZ_CHECK(fz_within(ev->text, data, size) && ev->text.n <= PD_TEXT_MAX, "text");
    FZ_CHECK(pd_text_valid(ev->text.p, ev->text.n), "text not valid UTF-8");
    FZ_CHECK(fz_within(ev->emoji, data, size) && ev->emoji.n <= PD_EMOJI_MAX, "emoji");
    FZ_CHECK(fz_within(ev->meta, data, size) && ev->meta.n <= PD_META_MAX, "meta");
    FZ_CHECK(ev->status <= PD_CHOSEN_INVISIBLE, "status %d", (int)ev->status);
    FZ_CHECK(ev->expires_at >= 0, "negative expires_at");
    if (ev->type == PD_EV_SYNC) {
        pd_sync_iter it;
        pd_sync_conn c;
        uint32_t n = 0;
        FZ_CHECK(fz_within(ev->conns, data, size), "conns outside the input");
        pd_sync_iter_init(&it, ev);
        while (pd_sync_iter_next(&it, &c)) {
            n++;
            FZ_CHECK(pd_id_valid(c.conn.p, c.conn.n) && pd_id_valid(c.user.p, c.user.n),
                     "sync entry %u has a bad id", n);
            FZ_CHECK(c.device.n > 0 && c.device.n <= PD_DEVICE_MAX, "sync entry device");
        }
        FZ_CHECK(n == ev->nconns, "sync walked %u entries of %u", n, ev->nconns);
    }
}

static void round_trip(const pd_event *ev) {
    msgpack_sbuffer a, b;
    pd_event back;
    pd_err err = {0};
    msgpack_sbuffer_init(&a);
    msgpack_sbuffer_init(&b);
    fz_encode_event(&a, ev);
    pd_status s = pd_event_decode(a.data, a.size, &back, &err);
    FZ_CHECK(s == PD_OK, "re-encoded %s event refused: %s", pd_event_type_name(ev->type),
             err.msg);
    FZ_CHECK(back.type == ev->type, "type changed");
    fz_encode_event(&b, &back);
    fz_check_same("event", &a, &b);
    msgpack_sbuffer_destroy(&a);
    msgpack_sbuffer_destroy(&b);
}

/* limited: at most 2 live devices per user and 6 users; fz_populate()
 * leaves alice with 2 devices and 5 users, so limits are one step away. */
static void apply(const pd_event *ev, bool limited) {
    pd_repl *r = limited ? fz_repl_new_limited(FZ_SELF, NULL, FZ_NOW, 2, 6)
                         : fz_repl_new(FZ_SELF, NULL, FZ_NOW);
    pd_model *m = pd_repl_model(r);
    pd_apply_result res;
    pd_err err = {0};
    uint64_t now = FZ_NOW + 100;
    fz_populate(r, FZ_NOW);
    uint64_t before = fz_model_digest(m);
    pd_status s = pd_repl_local(r, ev, now, &res, &err);
    if (s != PD_OK) {
        fz_check_refusal(s, &err);
        FZ_CHECK(fz_model_digest(m) == before, "a refused %s event (%s) changed the model",
                 pd_event_type_name(ev->type), err.msg);
    }
    fz_check_model(m);
    pd_repl_flush(r);
    /* Once more: a duplicate or a repeat must be as safe. */
    s = pd_repl_local(r, ev, now + 1, &res, &err);
    fz_check_model(m);
    pd_repl_flush(r);
    /* Idle, offline delay, custom expiry, server timeout, node heartbeats. */
    for (size_t i = 0; i < sizeof FZ_TICKS / sizeof FZ_TICKS[0]; i++) {
        pd_repl_tick(r, now + FZ_TICKS[i]);
        fz_check_model(m);
    }
    pd_repl_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    pd_event ev;
    pd_err err = {0};
    fz_quiet();
    pd_status s = pd_event_decode(data, size, &ev, &err);
    if (s != PD_OK) {
        fz_check_refusal(s, &err);
        return 0;
    }
    check_accepted(&ev, data, size);
    round_trip(&ev);
    apply(&ev, false);
    apply(&ev, true);
    return 0;
}

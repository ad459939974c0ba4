/* fuzz_common.h - helpers shared by the libFuzzer targets of tests/fuzz/:
 * the invariant check that aborts with a message (libFuzzer then keeps the
 * input as a crash), a digest of a whole model (to prove that a refused
 * input changed nothing), the model's internal consistency check, a small
 * pre-populated replica, and byte-exact re-encoding of every message kind
 * (for decode -> encode -> decode round trips).
 *
 * Everything here is deterministic: fixed times, fixed ids, no randomness,
 * so that a crash input reproduces exactly. */
#ifndef PD_FUZZ_COMMON_H
#define PD_FUZZ_COMMON_H
#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "wire/codec.h"
#include "wire/codec_repl.h"
#include "model/presence.h"
#include "sync/repl.h"

/* Reports a broken invariant and aborts (a finding for libFuzzer). */
#define FZ_CHECK(cond, ...)                                                   \
    do {                                                                      \
        if (!(cond)) fz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);         \
    } while (0)

void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

/* Silences the library's log (once per process). */
void fz_quiet(void);

/* The time every target starts from (ms since the epoch). */
#define FZ_NOW 1700000000000ULL

/* A refused decode must carry its status and a printable message. */
void fz_check_refusal(pd_status s, const pd_err *err);

/* True if s lies inside [base, base + n) or is empty. */
bool fz_within(pd_str s, const void *base, size_t n);

/* An order-independent digest of everything a model holds (users, devices,
 * servers, registers, timers, clocks, counters), except when a socket
 * server last spoke: a refused event still proves that server alive. */
uint64_t fz_model_digest(const pd_model *m);
/* Aborts unless the model's internal bookkeeping agrees with itself. */
void fz_check_model(const pd_model *m);

/* What a replica sent through its pd_repl_io: every message must decode. */
typedef struct {
    uint64_t deltas, heartbeats, sync_requests, sync_parts, notifications;
} fz_sent;

/* Offsets (ms) at which targets tick a replica after the input: past the
 * offline delay (500), idle timeout (1000), sync interval (1000), server
 * and node timeouts (3000), the custom status expiry fz_populate() sets
 * (60000), and well after. */
static const uint64_t FZ_TICKS[] = {600, 1100, 2100, 3500, 7000, 61000, 130000};

/* A replica named `self` with checked io callbacks (sent may be NULL). */
pd_repl *fz_repl_new(const char *self, fz_sent *sent, uint64_t now);
/* The same with the model's limits (pd_model_cfg; 0 = none). */
pd_repl *fz_repl_new_limited(const char *self, fz_sent *sent, uint64_t now,
                             uint64_t max_devices_per_user, uint64_t max_users);
/* Connects a few devices of a few users, sets statuses and custom texts. */
void fz_populate(pd_repl *r, uint64_t now);

/* The peers fz_prime() sets up on a replica: FZ_PEER has sent delta 1 of
 * incarnation FZ_PEER_INC and a heartbeat (its delta 2 applies next);
 * FZ_SYNCING sent delta 2 of FZ_SYNCING_INC first (a gap), so the replica
 * asked it for a state transfer numbered 1 (its parts apply). The seed
 * corpora use these ids so that fuzzing starts on the apply paths. */
#define FZ_SELF "n1"
#define FZ_PEER "n2"
#define FZ_PEER_INC 3
#define FZ_SYNCING "n3"
#define FZ_SYNCING_INC 5
#define FZ_HLC ((FZ_NOW << 16) | 1)
void fz_prime(pd_repl *r, uint64_t now);

/* Encoders that write a decoded message back (ops re-encoded one by one). */
void fz_encode_event(msgpack_sbuffer *sb, const pd_event *ev);
void fz_encode_delta(msgpack_sbuffer *sb, const pd_delta *d);
void fz_encode_heartbeat(msgpack_sbuffer *sb, const pd_heartbeat *hb);
void fz_encode_sync_req(msgpack_sbuffer *sb, const pd_sync_req *q);
void fz_encode_sync_part(msgpack_sbuffer *sb, const pd_sync_part *p);
void fz_encode_ops(msgpack_sbuffer *sb, const pd_ops *ops);

/* Checks that a in and b out are the same bytes. */
void fz_check_same(const char *what, const msgpack_sbuffer *a, const msgpack_sbuffer *b);

#endif

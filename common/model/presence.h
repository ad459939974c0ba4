/* presence.h - the presence model of one node (docs/protocol.md section 2).
 *
 * Users, their devices (one per socket connection, keyed by server + conn),
 * the socket servers that own the connections, chosen and custom status,
 * idle detection, the offline delay and last_seen. The model is pure: it
 * takes decoded events and the current time, and reports every change of a
 * user's public view through a callback, once, after the operation that
 * caused it is complete (so an operation never shows a half-done state).
 * All timing runs from one timer heap; pd_model_tick() fires what is due.
 *
 * Ownership: the model owns everything it stores; views and strings handed
 * to callbacks and query results are borrowed until the next call that
 * changes the model. Not thread-safe: one thread owns a model. */
#ifndef PD_PRESENCE_H
#define PD_PRESENCE_H
#include <stdbool.h>
#include <stdint.h>
#include "wire/codec.h"
#include "wire/op.h"
#include "wire/codec_repl.h"
#include "base/status.h"

typedef struct pd_model pd_model;

typedef struct {
    uint64_t idle_timeout_ms;
    uint64_t offline_delay_ms;
    uint64_t server_timeout_ms;
    /* Limits of the local entry point (pd_model_apply) only; 0 = none.
     * Replicated state (ops, partitions, restores) is never refused, so
     * that nodes cannot diverge. See presence_limits.c. */
    uint64_t max_devices_per_user;  /* live devices of a user, all nodes */
    uint64_t max_users;             /* users with a live device, all nodes */
    /* A remote HLC more than this ahead of the wall clock is never merged
     * into ours (PRESENCE_MAX_CLOCK_SKEW_MS; 0 = PD_MAX_CLOCK_SKEW_DEFAULT_MS). */
    uint64_t max_clock_skew_ms;
    /* A device's last_active is replicated at this resolution: activity
     * within the same step changes nothing (0 = every activity; more than
     * UINT32_MAX ms, about 49.7 days, counts as that). */
    uint64_t activity_resolution_ms;
    /* A user with nothing but a last_seen older than this is forgotten
     * (0 = never). */
    uint64_t user_retention_ms;
    uint64_t sync_parts_timeout_ms; /* an unfinished chunked sync is dropped (0: 30 s) */
} pd_model_cfg;

#define PD_MAX_CLOCK_SKEW_DEFAULT_MS 60000

/* True if hlc (ms << 16 | counter) reads more than skew_ms ahead of the
 * wall clock now (ms since the epoch). Never overflows. */
bool pd_hlc_ahead(uint64_t hlc, uint64_t now, uint64_t skew_ms);

/* One sync entry refused by pd_model_apply (a partial sync). conn points
 * into the applied event's buffer; message is the model's. */
typedef struct {
    pd_str conn;
    pd_status code;
    char message[128];
} pd_refusal;

/* Called once per change of a user's public presence or custom status (the
 * view others see), after the operation is complete. v is borrowed. */
typedef void (*pd_change_fn)(void *ud, const pd_view *v);

/* node is this node's id (the owner of devices it creates). */
pd_model *pd_model_new(const pd_model_cfg *cfg, pd_str node, pd_change_fn on_change, void *ud);
/* Also called (with the same ud), after the operation, for each user whose
 * ver another node's floor (a VER op) raised while what
 * others see did not change: the state said again would end above an
 * `offline` another node may have announced below that floor. Optional;
 * the notifier announces these only around heals and restarts
 * (pd_notifier_floor). */
void pd_model_on_floor(pd_model *m, pd_change_fn on_floor);
/* Also called (with the same ud), after an operation that wrote a user
 * without changing what others see (nor raising a floor), if want(ud),
 * asked at most once per operation, says so: the same state, perhaps at a
 * higher ver (a node back from its snapshot announced a restored device's
 * user below the `offline` the others announced while it was down, and
 * the device's real return, a resync or reconnect, changes no status
 * here). The notifier wants them in the same windows as floors
 * (pd_notifier_same). Optional. */
typedef bool (*pd_want_fn)(void *ud);
void pd_model_on_same(pd_model *m, pd_want_fn want, pd_change_fn on_same);
void pd_model_free(pd_model *m);
/* Back to what pd_model_new made: every user, device, server and timer
 * freed, the clock and the counters at 0, nothing reported (no change, no
 * op), the other nodes' interned ids forgotten. The configuration, the
 * callbacks and this node's id stay.
 * Undoes a restore found bad halfway (sync/repl_restore.c). */
void pd_model_clear(pd_model *m);
/* True if m is as pd_model_new (or pd_model_clear) left it: a clear would
 * lose nothing. */
bool pd_model_pristine(const pd_model *m);
/* Sizes the tables for this many users and devices at once (restoring a
 * snapshot); a hint: out of memory leaves them growing one step at a time. */
void pd_model_reserve(pd_model *m, uint64_t users, uint64_t devices);

/* Outcome of applying an event. PD_PARTIAL: a sync applied but for the
 * entries listed by pd_model_refusals. */
typedef enum { PD_APPLIED, PD_DUPLICATE, PD_PARTIAL } pd_apply_result;

/* Applies one decoded event at time now. On error nothing changed and err
 * says why (unknown_conn, bad_value for a custom status already expired,
 * too_large for a limit of pd_model_cfg, internal for out of memory). */
pd_status pd_model_apply(pd_model *m, const pd_event *ev, uint64_t now,
                         pd_apply_result *res, pd_err *err);

/* The sync entries the last pd_model_apply refused (res PD_PARTIAL); valid
 * until the next call that changes the model. */
uint32_t pd_model_refusals(const pd_model *m, const pd_refusal **out);

/* Fires every timer due at or before now. */
void pd_model_tick(pd_model *m, uint64_t now);
/* When the next timer is due (UINT64_MAX when none). */
uint64_t pd_model_next_due(const pd_model *m);

/* ---- replication ----------------------------------------------------------- */

/* Called for every change of this node's own partition and every register
 * write made here, in order, so that it can be sent to the peers. */
void pd_model_set_op_hook(pd_model *m, pd_op_fn fn, void *ud);

/* Applies an op from origin's stream (the origin owns device ops). Ops that
 * lost to a newer version are ignored; applying one twice changes nothing.
 * Errors only on bad ids or memory. */
pd_status pd_model_apply_op(pd_model *m, pd_str origin, const pd_op *op, uint64_t now);

/* Restoring after a restart: an op of this node's own earlier life (from
 * its snapshot or its deltas kept in JetStream), applied to its own
 * partition without being sent again. */
pd_status pd_model_apply_own_op(pd_model *m, const pd_op *op, uint64_t now);
/* The end of a restore (snapshot, then stream): a snapshot keeps devices
 * and registers, not the offline delays running when it was taken. A user
 * with no device whose last_seen (the time its last device left, a
 * replicated register) is less than the offline delay before now is put
 * back in the delay until last_seen + the delay, as the peers still hold
 * it, so that its `offline` is announced when the delay ends (the peers
 * leave that to its announcer, maybe this node). Whether its last device
 * was active is not kept: it shows online meanwhile (or its chosen busy or
 * away). Users already in a delay (from the stream) are left as they are. */
void pd_model_restore_delays(pd_model *m, uint64_t now);

/* After a restore: each socket server of which this node restored devices
 * of its own, and which has not sent a heartbeat in this life, is closed
 * (its devices removed, as by a server timeout) unless it sends some event
 * within PRESENCE_SERVER_TIMEOUT_MS: a snapshot does not say which servers
 * were watched, and a server that moved to another node, or went down,
 * while this node was down never speaks to it again; its restored devices
 * would stay for good, announced by this node alone. A server still
 * attached answers the resync request and keeps them. Returns how many
 * servers hold devices of this node (0: none came back). */
uint64_t pd_model_restore_servers(pd_model *m, uint64_t now);

/* State transfer of one origin's partition: begin, apply its ADD and
 * register ops, end: devices of origin that were not re-added leave. */
void pd_model_partition_begin(pd_model *m, pd_str origin);
void pd_model_partition_end(pd_model *m, pd_str origin, uint64_t now);
/* Emits origin's partition as ops: ADD for each device it owns, and the
 * registers it wrote that still win. */
void pd_model_partition_dump(const pd_model *m, pd_str origin, pd_op_fn fn, void *ud);
/* Emits the registers writer wrote that still win here, and nothing else
 * (none for this node's own id). A node passes them on when a new life
 * of the writer follows it: a write that reached only some nodes before
 * its writer lost it (killed before its snapshot and the stream kept it)
 * is in no later dump of the writer's own, and would stay on those nodes
 * alone. In slices (as a state transfer is served): from *at (0 to start),
 * at most `buckets` hash buckets of users per call; true once done. With
 * skip_implied, a last_seen that one of the writer's devices held here
 * implies is left out (the writer holds those devices: its restart's
 * "restored" said so, sync/repl.c). */
bool pd_model_registers_dump_step(const pd_model *m, pd_str writer, bool skip_implied,
                                  uint64_t *at, uint32_t buckets, pd_op_fn fn, void *ud);
/* pd_model_partition_dump in slices of at most `buckets` hash buckets, between which the
 * model may change: start with a zeroed cursor; true when done. An entry
 * may come twice (the table grew), a change made meanwhile may or may not
 * be in it: the requester replays the deltas after the dump's seq. The
 * registers that `asker` (the node the dump is for; empty: none) wrote
 * come too: the ops that pass them on (pd_model_registers_dump_step) are
 * in deltas of this origin that the dump's seq counts as done, but not in
 * the origin's own registers. */
typedef struct {
    uint8_t phase;              /* 0: devices, 1: registers, 2: done */
    uint64_t at;                /* the hash table's scan cursor */
} pd_dump_cursor;
bool pd_model_partition_dump_step(const pd_model *m, pd_str origin, pd_str asker,
                                  pd_dump_cursor *cur, uint32_t buckets, pd_op_fn fn, void *ud);
/* The registers this node wrote, in slices of `buckets` user buckets from
 * *at (0 to start; true when done), but a last_seen that one of its
 * devices implies: what a restart sends when its peers kept its devices
 * (sync/repl.c), for the registers its restore wrote without a word. */
bool pd_model_own_registers_step(const pd_model *m, uint64_t *at, uint32_t buckets,
                                 pd_op_fn fn, void *ud);
/* Every device owned by owner leaves (node down, or a new incarnation); the
 * offline delay applies to their users as for a disconnect. */
void pd_model_drop_owner(pd_model *m, pd_str owner, uint64_t now);
uint64_t pd_model_owner_devices(const pd_model *m, pd_str owner);
/* The number of devices owner owns and their digest: a sum of one hash
 * per device over the fields its ADD carries but last_active (server,
 * conn, user, label, meta, state, connected_at, claim), 63 bits, the same
 * on every node that holds the same devices, whatever their order. A
 * restarted node's peers compare theirs with its own (schemas/cluster.md
 * "Incarnations"). Registers are not in it: other nodes pass a writer's
 * registers on, so when they reach whom depends on timing, not on the
 * writer's deltas. */
void pd_model_partition_digest(const pd_model *m, pd_str owner, uint64_t *devices,
                               uint64_t *digest);

/* The hybrid logical clock (ms << 16 | counter): observe a remote value
 * read at wall-clock time now. A value beyond now + the skew bound is not
 * merged (the caller refuses its message; this is the last line): no input
 * moves our clock more than the bound ahead of the wall clock. */
void pd_model_hlc_observe(pd_model *m, uint64_t hlc, uint64_t now);
uint64_t pd_model_hlc(const pd_model *m);

/* ---- queries -------------------------------------------------------------- */

/* The view of `user` for `viewer` (viewer.n == 0: the public view). A user
 * the model has never seen is reported offline with last_seen 0. Returns
 * false if unknown (the view is still filled). */
bool pd_model_view(const pd_model *m, pd_str user, pd_str viewer, pd_view *out);

/* Calls fn for each live device of user; returns how many. */
typedef void (*pd_device_fn)(void *ud, const pd_device_view *d);
uint32_t pd_model_devices_of(const pd_model *m, pd_str user, pd_device_fn fn, void *ud);

/* Pages through users whose public presence is not offline, in a fixed
 * order (by hash). cursor 0 starts; the return value is the cursor of the
 * next page, 0 when there is none. A page holds at most `limit` users (it
 * may hold fewer when a stretch of the table is empty); a user online for
 * the whole scan is returned exactly once, even if the table grows. */
typedef void (*pd_user_fn)(void *ud, pd_str user);
uint64_t pd_model_scan_online(const pd_model *m, uint64_t cursor, uint32_t limit,
                              pd_user_fn fn, void *ud);

/* Calls fn with the public view of every user the model holds (ts = its
 * last change here, 0 if it never changed here: a user a state transfer
 * brought, offline). */
typedef void (*pd_view_fn)(void *ud, const pd_view *v);
void pd_model_foreach_view(const pd_model *m, pd_view_fn fn, void *ud);
/* The same in slices of at most `buckets` hash buckets, between which the
 * model may change: start with *cursor = 0; true when done (then *cursor
 * is 0 again). A user present for the whole walk is visited at least once
 * (twice if the table grew meanwhile). */
bool pd_model_foreach_view_step(const pd_model *m, uint64_t *cursor, uint32_t buckets,
                                pd_view_fn fn, void *ud);

typedef struct {
    uint64_t users, devices, servers, timers;
    uint64_t changes;   /* local changes applied (events that changed state) */
    uint64_t refused_devices;  /* events refused by max_devices_per_user */
    uint64_t refused_users;    /* events refused by max_users */
    uint64_t by_status[PD_PUB_INVISIBLE + 1]; /* users by public status (pd_public) */
    uint64_t forgotten_users;  /* users forgotten after PRESENCE_USER_RETENTION_MS */
    uint64_t forgotten_servers; /* servers forgotten with their seq, likewise */
} pd_model_stats;
void pd_model_stats_get(const pd_model *m, pd_model_stats *st);

/* Fills out with at most max of the servers that have sent this node an
 * event and are still known (a server timed out or shut down is gone);
 * returns how many it wrote. The ids are borrowed from the model: valid
 * until it next changes. */
uint32_t pd_model_servers(const pd_model *m, pd_server_view *out, uint32_t max);

#endif

/* op.h - one change of replicated state, as the model emits and applies it
 * and as deltas, state transfers and snapshots carry it (encoded by
 * wire/codec_repl.c; layout in schemas/cluster.md). Its own header so that
 * the wire code does not depend on the model. */
#ifndef PD_OP_H
#define PD_OP_H
#include <stdint.h>
#include "base/ids.h"
#include "wire/ptypes.h"

/* One change of replicated state. Device ops belong to the partition of
 * their owner (the node that received the connect): only the owner emits
 * them. Register ops (chosen and custom status) may come from any node and
 * carry their version: a hybrid logical clock value and the writer's id;
 * the highest (hlc, writer) wins everywhere. SEEN is a register too, but
 * ordered by its value: the highest (at, writer) wins, so that last_seen is
 * the maximum of every time replicated for the user (device ops' times
 * count as writes by the device's owner). */
typedef enum {
    PD_OP_ADD, PD_OP_REMOVE, PD_OP_STATE, PD_OP_CHOSEN, PD_OP_CUSTOM,
    PD_OP_SEEN,                     /* a user's last_seen: the highest (at, writer) wins */
    /* server synced at hlc by the origin: every other node's device of that
     * server with an older claim leaves (a server that moved; see
     * common/model/presence_sync.c) */
    PD_OP_SYNCED,
    /* a floor of the user's `ver` (hlc), written by writer: the largest
     * version of a past change that the current state no longer names (a
     * removal, a state change, a node declared down, a custom status
     * expiry). The highest (hlc, writer) wins; snapshots and state
     * transfers carry it, so a rebuilt node numbers the user alike */
    PD_OP_VER,
} pd_op_kind;

typedef struct {
    pd_op_kind kind;
    pd_str server, conn;            /* device ops; server also SYNCED */
    pd_str user, label;             /* ADD; user also for register ops and REMOVE
                                     * (optional there: earlier nodes leave it out) */
    pd_devstate state;              /* ADD, STATE */
    int64_t connected_at, last_active;
    uint64_t hlc;                   /* ADD: the owner's claim; registers: version;
                                     * SYNCED: when the sync completed; VER: the floor */
    uint64_t ver;                   /* REMOVE, STATE: the HLC of this write (its user's
                                     * `ver`, notifications.md); 0 from earlier nodes */
    pd_str writer;                  /* registers: the node that wrote it */
    pd_chosen chosen;               /* CHOSEN */
    pd_str text, emoji;             /* CUSTOM ("" text: cleared) */
    int64_t expires_at;
    pd_str meta;                    /* ADD: the connect's meta map, raw (n 0: none) */
    int64_t at;                     /* REMOVE: when (0: not said); SEEN: the last_seen;
                                     * CHOSEN: the last_seen frozen by invisible (0: not said) */
} pd_op;

/* Receives ops in order (the model's op hook, a partition dump). */
typedef void (*pd_op_fn)(void *ud, const pd_op *op);

#endif

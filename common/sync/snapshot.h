/* snapshot.h - a node's snapshot (docs/protocol.md section 6): its whole view,
 * the vector clock it corresponds to, and a checksum; layout documented in
 * schemas/snapshot.md.
 *
 * The snapshot is fuzzy by design: it is built a slice at a time between
 * event batches (so writing one never stalls the node), while the model
 * keeps changing. That is safe because it records the vector clock as it
 * was when the build *started*, and every op is idempotent: replaying the
 * deltas after that clock onto the snapshot ends in the exact state, since
 * an op already reflected in the snapshot changes nothing the second time
 * (a claim, a register version and a REMOVE's claim all name their
 * version).
 *
 * Value: "PDSNAP" 0x00 VERSION | body length (u64, big endian) | checksum of
 * the body (pd_snap_checksum, u64 big endian) | body (MessagePack). */
#ifndef PD_SNAPSHOT_H
#define PD_SNAPSHOT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "wire/codec_repl.h"
#include "model/presence.h"

/* Written: version 3. Read: 1 to 3. Version 2 changed the checksum:
 * version 1's is pd_hash (FNV-1a, a byte a step), version 2's takes eight
 * bytes a step (pd_snap_checksum), a tenth of a 1M-device restore.
 * Version 3 adds VER ops (a user's ver floor) to "registers"; an older one
 * has none (read alike: no older writer wrote one), and its node learns
 * the floors from the stream and its peers' state transfers only. */
#define PD_SNAP_VERSION 3
#define PD_SNAP_VERSION_MIN 1
#define PD_SNAP_HEADER 24

/* The checksum of a body of the given format version (1 to 3). */
uint64_t pd_snap_checksum(unsigned version, const void *body, size_t len);

typedef struct {
    pd_str node;
    uint64_t inc, seq;          /* this node's incarnation and deltas sent */
    uint64_t hlc;
    uint64_t stream_seq;        /* JetStream sequence replay may start after */
    uint64_t taken_at;          /* ms since the epoch */
    bool left;                  /* the final one of a node that said it was leaving */
    uint32_t version;           /* the format it was written in (header and body agree) */
    uint32_t nvc;
    pd_vc_entry vc[PD_VC_MAX];  /* what it had applied of every origin */
} pd_snap_info;

typedef struct pd_snap pd_snap;

/* Starts a snapshot of m described by info (copied). NULL on ENOMEM. */
pd_snap *pd_snap_begin(const pd_model *m, const pd_snap_info *info);
/* Adds up to `buckets` hash buckets' worth of entries; true when done. */
bool pd_snap_step(pd_snap *s, const pd_model *m, uint32_t buckets);
/* The finished value (malloc'd by msgpack-c: the caller frees it with
 * free()); frees s. */
pd_status pd_snap_finish(pd_snap *s, uint8_t **out, size_t *len);
void pd_snap_abort(pd_snap *s);

/* One device of a snapshot: an ADD op and its owner. */
typedef struct {
    pd_str owner;
    pd_op op;
} pd_snap_device;

typedef struct {
    mp_reader devs, regs;
    uint32_t ndevs, nregs;
} pd_snap_reader;

/* Checks magic, version, length and checksum, and validates the whole
 * body; fills info and the readers. Never allocates. */
pd_status pd_snap_open(const void *buf, size_t len, pd_snap_info *info, pd_snap_reader *rd,
                       pd_err *err);
/* Reading a snapshot once (a restart into an empty model): each entry
 * goes to the visitor as soon as it is validated, the devices first, then
 * the registers, so a refusal (status not PD_OK) may come after some were
 * handed: the caller undoes them. begin comes before the first device,
 * with the fields read so far (a writer puts them all first; one that
 * does not gets them checked at the end by the caller) and the number of
 * devices (a hint, at most the input's bytes / 8); a status other than
 * PD_OK from it stops the read, with its err. */
typedef struct {
    pd_status (*begin)(void *ud, const pd_snap_info *info, uint32_t ndevs, pd_err *err);
    void (*device)(void *ud, const pd_snap_device *d);
    void (*reg)(void *ud, const pd_op *op);
    void *ud;
    bool checksum_checked;      /* the same bytes passed pd_snap_peek: not checked again */
} pd_snap_visitor;
/* pd_snap_open's checks, with the entries handed to v along the way. */
pd_status pd_snap_read(const void *buf, size_t len, pd_snap_info *info,
                       const pd_snap_visitor *v, pd_err *err);

/* The header's checks (magic, version, length, checksum) and the body's
 * scalar fields written before its first array (node, inc, seq, hlc,
 * stream_seq, taken_at, left), without reading the entries: where a
 * restart's replay of the stream starts, known before the snapshot is
 * applied (node/persist.c). PD_EMISSING when node, inc, seq or
 * stream_seq do not come before the first array (a writer other than
 * pd_snap_begin's); the entries are validated by pd_snap_read. */
pd_status pd_snap_peek(const void *buf, size_t len, pd_snap_info *info, pd_err *err);

/* The entries in order; rd comes from a pd_snap_open that succeeded (they
 * were validated there, and are not checked character by character again). */
bool pd_snap_next_device(pd_snap_reader *rd, pd_snap_device *d);
bool pd_snap_next_register(pd_snap_reader *rd, pd_op *op);

#endif

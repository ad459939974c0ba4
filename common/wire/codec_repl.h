/* codec_repl.h - the messages between presence nodes (docs/protocol.md section
 * 5): deltas, heartbeats and state transfer. Their layout is ours; it is
 * documented in schemas/cluster.md and versioned by `v`.
 *
 * Decoding validates everything (ids, kinds, sizes) before anything is
 * applied; op lists are walked afterwards with pd_ops_next().
 *
 * CHECKLIST: new field or op? Update encoder and decoder here,
 * schemas/cluster.md and tests/test_codec_repl.c. */
#ifndef PD_CODEC_REPL_H
#define PD_CODEC_REPL_H
#include "wire/codec.h"
#include "wire/op.h"

#define PD_REPL_VERSION 1
#define PD_VC_MAX 256           /* entries of a heartbeat's vector clock */
#define PD_TRACE_MAX 256        /* trace ids of one delta (benchmarks only) */
#define PD_HB_SERVERS_MAX 64    /* socket servers listed in one heartbeat */

/* A list of encoded ops inside a message, validated at decode time (only
 * a decoder makes one). */
typedef struct {
    pd_str raw;                 /* the encoded array */
    uint32_t n;
    uint64_t hlc_max;           /* the largest hlc of its ops (0: none) */
} pd_ops;

/* Walks ops; false at the end. Reads them as pd_op_read_checked does:
 * their decoder validated them. */
typedef struct {
    mp_reader r;
    uint32_t left;
} pd_ops_iter;
void pd_ops_iter_init(pd_ops_iter *it, const pd_ops *ops);
bool pd_ops_next(pd_ops_iter *it, pd_op *op);

/* Reads and validates one op (false: the reader holds why). */
bool pd_op_read(mp_reader *r, pd_op *op);
/* The same for bytes pd_op_read accepted before (a snapshot's second
 * pass): the structure and lengths are checked again, the characters of
 * ids and texts not. Never for bytes that were not validated. */
bool pd_op_read_checked(mp_reader *r, pd_op *op);

/* Appends one op to an open packer (the caller writes the array header). */
void pd_op_encode(msgpack_packer *pk, const pd_op *op);

/* What a restarted node's partition was when it said so (a delta's
 * "restored", schemas/cluster.md "Incarnations"): the earlier life whose
 * state it restored, and its devices' count and order-free digest
 * (pd_model_partition_digest) after the ops of the deltas up to this one. */
typedef struct {
    uint64_t inc, devices, digest;
} pd_restored;

/* P.delta.<node>: {"v", "node", "inc", "seq", "ops", "trace"?, "at"?,
 * "carries"?, "restored"?} */
typedef struct {
    pd_str node;
    uint64_t inc, seq;
    pd_ops ops;
    pd_str trace;               /* encoded array of u64 trace ids; n == 0 when absent */
    uint32_t ntrace;
    uint64_t at;                /* sender's wall clock when sent, ms; 0 when absent */
    uint64_t carries;           /* the earlier life it restored and vouches for (0: none) */
    bool has_restored;
    pd_restored restored;
} pd_delta;

/* A delta's optional fields after "at" (pd_delta_encode_carry). */
typedef struct {
    uint64_t carries;
    const pd_restored *restored; /* NULL: none */
} pd_delta_carry;

/* Writes a delta whose ops are already encoded back to back in ops_buf. */
void pd_delta_encode(msgpack_sbuffer *sb, pd_str node, uint64_t inc, uint64_t seq,
                     const void *ops_buf, size_t ops_len, uint32_t nops);
/* The same, with the trace ids of the traced events whose ops it carries
 * (ntrace == 0: exactly pd_delta_encode). */
void pd_delta_encode_traced(msgpack_sbuffer *sb, pd_str node, uint64_t inc, uint64_t seq,
                            const void *ops_buf, size_t ops_len, uint32_t nops,
                            const uint64_t *trace, uint32_t ntrace);
/* The same, with "at": the sender's wall clock (ms) as it sends the delta,
 * for the receivers' apply latency (presenced_sync_apply_seconds); at 0
 * writes no "at" (exactly pd_delta_encode_traced). */
void pd_delta_encode_at(msgpack_sbuffer *sb, pd_str node, uint64_t inc, uint64_t seq,
                        const void *ops_buf, size_t ops_len, uint32_t nops,
                        const uint64_t *trace, uint32_t ntrace, uint64_t at);
/* The same, with a restarted node's "carries" and "restored" (c NULL or
 * both unset: exactly pd_delta_encode_at). */
void pd_delta_encode_carry(msgpack_sbuffer *sb, pd_str node, uint64_t inc, uint64_t seq,
                           const void *ops_buf, size_t ops_len, uint32_t nops,
                           const uint64_t *trace, uint32_t ntrace, uint64_t at,
                           const pd_delta_carry *c);
pd_status pd_delta_decode(const void *buf, size_t len, pd_delta *d, pd_err *err);
/* Copies at most cap trace ids of a decoded delta into out; returns how many. */
uint32_t pd_delta_trace_ids(const pd_delta *d, uint64_t *out, uint32_t cap);

/* P.trace.<node>: {"v", "node", "at", "trace"}: the node applied the ops
 * of these traced events at `at` (ns since the epoch, its wall clock). */
void pd_trace_report_encode(msgpack_sbuffer *sb, pd_str node, uint64_t at_ns,
                            const uint64_t *trace, uint32_t ntrace);

/* One entry of a vector clock: what a node has applied of origin's stream. */
typedef struct {
    pd_str node;
    uint64_t inc, seq;
} pd_vc_entry;

/* A vector clock as heartbeats and snapshots carry it: [[node, inc, seq]...]. */
void pd_vc_encode(msgpack_packer *pk, const pd_vc_entry *vc, uint32_t n);
/* Reads one into vc (room for PD_VC_MAX entries); false: the reader holds
 * why (too long: PD_ETOOLARGE, a bad node id: PD_EBADID). */
bool pd_vc_read(mp_reader *r, pd_vc_entry *vc, uint32_t *nvc);
/* A socket server that has sent a node events, as its heartbeat lists it
 * (for dashboards). */
typedef struct {
    pd_str id;
    uint32_t devices;          /* its live devices in the node's view */
    int64_t last_msg;          /* when its last event came (ms, node clock) */
    bool watched;              /* it sends heartbeats, so it has a timeout */
} pd_server_view;

/* P.hb.<node>: {"v", "node", "inc", "seq", "hlc", "wall", "leaving",
 * "ready", "devices", "users", "vc": [[node, inc, seq], ...], and, only when
 * not 0, "events", "notifications", "snapshot_at", "servers" (dashboards),
 * "carries", "kept": [[node, inc, seq], ...] (a restart)} */
typedef struct {
    pd_str node;
    uint64_t inc, seq, hlc;
    uint64_t wall;              /* sender's wall clock, ms (absent: 0, unknown) */
    bool leaving;
    bool ready;                 /* caught up and announcing (absent: true) */
    uint64_t devices, users;
    /* Counters of this incarnation and the last snapshot's wall-clock time
     * (ms; 0 = none): encoded only when not 0, read by presence-dash. */
    uint64_t events, notifications, snapshot_at;
    /* The socket servers that send it events, at most PD_HB_SERVERS_MAX
     * (encoded only when there are some): [[id, devices, last_msg, watched]] */
    uint32_t nservers;
    pd_server_view servers[PD_HB_SERVERS_MAX];
    /* A restarted node: the earlier life it restored and vouches for (0:
     * none); a peer: the origins whose earlier life's devices it kept for
     * their current one, [node, that life, its deltas applied], until
     * that one's "restored" (schemas/cluster.md "Incarnations"). */
    uint64_t carries;
    uint32_t nkept;
    uint32_t nvc;
    pd_vc_entry vc[PD_VC_MAX];
    pd_vc_entry kept[PD_VC_MAX];
} pd_heartbeat;

void pd_heartbeat_encode(msgpack_sbuffer *sb, const pd_heartbeat *hb);
pd_status pd_heartbeat_decode(const void *buf, size_t len, pd_heartbeat *hb, pd_err *err);

/* P.sync.<node> request: {"v", "node" (who asks), "origin" (whose partition),
 * "req" (the asker's number for this request; 0 or absent: none)} */
typedef struct {
    pd_str node, origin;
    uint64_t req;
} pd_sync_req;

void pd_sync_req_encode(msgpack_sbuffer *sb, const pd_sync_req *q);
pd_status pd_sync_req_decode(const void *buf, size_t len, pd_sync_req *q, pd_err *err);

/* A reply, in parts: {"v", "origin", "known", "inc", "seq", "part", "last",
 * "req", "ops"}. known is false when the answering node has no such
 * partition; req echoes the request's (0 or absent: a node that predates it). */
typedef struct {
    pd_str origin;
    bool known, last;
    uint64_t inc, seq, req;
    uint32_t part;
    pd_ops ops;
} pd_sync_part;

void pd_sync_part_encode(msgpack_sbuffer *sb, const pd_sync_part *p, const void *ops_buf,
                         size_t ops_len, uint32_t nops);
pd_status pd_sync_part_decode(const void *buf, size_t len, pd_sync_part *p, pd_err *err);

#endif

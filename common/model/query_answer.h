/* query_answer.h - the answers to get, devices and online (docs/protocol.md
 * section 4) from a model, packed as their replies. The node
 * (node_query.c) and the query fuzzer both answer through it, so what is
 * fuzzed is what answers. The cluster query is answered from the replica
 * (pd_repl_answer_cluster, sync/repl_answer.c). */
#ifndef PD_QUERY_ANSWER_H
#define PD_QUERY_ANSWER_H
#include <msgpack.h>
#include "wire/codec.h"
#include "model/presence.h"

/* How fresh the model is (docs/protocol.md section 4, "Freshness"), from
 * the replica (pd_repl_freshness): the time up to which it is caught up
 * with every live peer, and the live peers not heard from lately, whose
 * devices make their users `stale`. stale[] is borrowed. */
typedef struct {
    uint64_t as_of;
    const pd_str *stale;
    uint32_t nstale;
} pd_freshness;

/* Packs the reply to q (get, devices or online) into pk; get and devices
 * replies carry fr's `as_of` and `stale` (fr NULL: neither, the replies'
 * shape before issue 14). An online cursor this service did not return is
 * refused with bad_value; out of memory with internal; nothing is packed
 * then. */
pd_status pd_query_answer(const pd_model *m, const pd_query *q, const pd_freshness *fr,
                          msgpack_packer *pk, pd_err *err);
/* True if some device of user is owned by a node in fr->stale. */
bool pd_query_user_stale(const pd_model *m, pd_str user, const pd_freshness *fr);
/* An online cursor: the decimal scan position; "" or absent = the start. */
bool pd_query_cursor_parse(pd_str c, uint64_t *out);

#endif

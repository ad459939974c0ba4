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

/* Packs the reply to q (get, devices or online) into pk. An online cursor
 * this service did not return is refused with bad_value; out of memory
 * with internal; nothing is packed then. */
pd_status pd_query_answer(const pd_model *m, const pd_query *q, msgpack_packer *pk,
                          pd_err *err);
/* An online cursor: the decimal scan position; "" or absent = the start. */
bool pd_query_cursor_parse(pd_str c, uint64_t *out);

#endif

/* query_answer.h - the answers to get, devices and online (PROTOCOL.md
 * section 4) from a model, packed as their replies. The node
 * (node_query.c) and the query fuzzer both answer through it, so what is
 * fuzzed is what answers. The cluster query is answered from the replica
 * (pd_query_answer_cluster). */
#ifndef PD_QUERY_ANSWER_H
#define PD_QUERY_ANSWER_H
#include <msgpack.h>
#include "codec.h"
#include "presence.h"
#include "repl.h"

/* Packs the reply to q (get, devices or online) into pk. An online cursor
 * this service did not return is refused with bad_value; out of memory
 * with internal; nothing is packed then. */
pd_status pd_query_answer(const pd_model *m, const pd_query *q, msgpack_packer *pk,
                          pd_err *err);
/* Packs the reply to a cluster query: this node (self) and its peers as
 * the replica sees them at now. */
void pd_query_answer_cluster(const pd_repl *r, pd_str self, uint64_t now, msgpack_packer *pk);
/* An online cursor: the decimal scan position; "" or absent = the start. */
bool pd_query_cursor_parse(pd_str c, uint64_t *out);

#endif

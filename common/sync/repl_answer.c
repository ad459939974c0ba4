/* repl_answer.c - the answer to P.query.cluster: this node and its peers
 * as the replica sees them, packed as the reply (schemas/queries.md). The
 * node and the query fuzzer both answer through it. */
#include "sync/repl.h"

typedef struct {
    msgpack_packer *pk;
    uint32_t n;
} cluster_ctx;

static void count_node(void *ud, const pd_node_view *nv) {
    (void)nv;
    ((cluster_ctx *)ud)->n++;
}

static void pack_node(void *ud, const pd_node_view *nv) {
    pd_cluster_reply_node(((cluster_ctx *)ud)->pk, nv);
}

void pd_repl_answer_cluster(const pd_repl *r, pd_str self, uint64_t now, msgpack_packer *pk) {
    cluster_ctx c = {pk, 0};
    pd_repl_nodes(r, now, count_node, &c); /* the count goes first */
    pd_cluster_reply_begin(pk, self, c.n);
    pd_repl_nodes(r, now, pack_node, &c);
}

/* dash_json.h - what presence-dash serves, as JSON: the cluster's
 * MessagePack messages (heartbeats, notifications, query replies) turned
 * into the documents of docs/dashboard.md, and the table of nodes the
 * heartbeats build up (alive, lag behind each peer, rates over 5 minutes).
 *
 * Pure logic: no NATS, no HTTP, no threads. Input comes from the network,
 * so every function validates it with the project's decoders (common/wire)
 * and refuses a bad message with a pd_err, changing nothing. JSON is built
 * with jansson, never by hand, so every string is escaped. The caller owns
 * every json_t and string returned.
 *
 * CHECKLIST: a field added to a document here goes into docs/dashboard.md
 * ("HTTP interface"), tests/test_dash_json.c and, if shown, dash/web/dash.js. */
#ifndef PD_DASH_JSON_H
#define PD_DASH_JSON_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include "wire/codec.h"

#define DASH_NODES_MAX 64           /* nodes tracked; beyond, the longest down is forgotten */
#define DASH_WINDOW_MS 300000u      /* the charts' window: 5 minutes */
#define DASH_SERIES_MAX 600         /* rate samples kept per node */
#define DASH_LAG_WARN 1000u         /* deltas behind a peer that colour a card */

/* Any MessagePack value as JSON: maps (string keys only), arrays, strings
 * (invalid UTF-8 bytes become U+FFFD), integers, booleans, nil. Floats,
 * binary and extension values become null. Returns NULL with err set
 * (bad_msgpack, bad_value for a non-string key) on bad input. */
json_t *dash_mp_json(const void *buf, size_t len, pd_err *err);

/* A notification of P.user.<user> (schemas/notifications.md) as
 * {"user", "status", "text", "emoji", "expires_at", "last_seen", "ts", "at"}
 * where `at` is when presence-dash got it (ms since the epoch). NULL with
 * err on a message the notification decoder refuses. */
json_t *dash_note_json(const void *buf, size_t len, uint64_t at_ms, pd_err *err);

/* The reply of a user lookup: {"user", "public", "own", "devices",
 * "as_of", "stale", "errors"}: public and own are the single entry of a
 * P.query.get reply without and with viewer = user (with its `stale` when
 * true), devices the list of a P.query.devices reply, as_of and stale that
 * reply's freshness (as_of null when it has none). A reply that is NULL (not answered), an error reply or malformed
 * leaves its field null and adds a line to errors. Never NULL except out
 * of memory. */
json_t *dash_user_json(const char *user, const void *pub, size_t pub_len, const void *own,
                       size_t own_len, const void *dev, size_t dev_len);

/* Whether the nodes agree on a user: {"agree", "nodes": [{"node",
 * "answer"}]}. For node i, get[i] and dev[i] are its replies (P.query.get
 * with viewer = the user, P.query.devices, asked of that node; NULL: no
 * answer). Nodes whose two replies are byte for byte the same, `as_of` and
 * `stale` aside, get the same answer number (1, 2, ...; 0: no answer); agree is true when every node
 * answered and all got 1, false when two answers differ, null otherwise. */
json_t *dash_agreement_json(const char *const *nodes, const pd_str *get, const pd_str *dev,
                            size_t n);

/* One Server-Sent Events frame "event: NAME\ndata: JSON\n\n" (compact
 * JSON, so a single data line). Returns a malloc'd string (length in *len)
 * or NULL. data is borrowed. */
char *dash_sse_frame(const char *event, const json_t *data, size_t *len);

/* ---- the nodes, as heartbeats describe them ---- */

typedef struct dash_nodes dash_nodes;

/* A node is down when no heartbeat came for node_timeout_ms, or at once
 * when one says `leaving`; a socket server that sends heartbeats is shown
 * down when it has not spoken for server_timeout_ms. */
dash_nodes *dash_nodes_new(uint64_t node_timeout_ms, uint64_t server_timeout_ms);
void dash_nodes_free(dash_nodes *t);

/* Takes in one P.hb.<node> message received at now_ms (wall clock). A
 * heartbeat of an older incarnation than the one known is ignored (PD_OK);
 * a new incarnation replaces the old one and restarts its rate series. A
 * bad message is refused with err, and so is a new node beyond
 * DASH_NODES_MAX while all of them are alive (else the one down for the
 * longest time is forgotten to make room). */
pd_status dash_nodes_heartbeat(dash_nodes *t, const void *buf, size_t len, uint64_t now_ms,
                               pd_err *err);

/* When, after now_ms, some node turns late or down if no heartbeat comes
 * (UINT64_MAX: never): the loop sends a nodes frame then, so a card turns
 * down at the node timeout, not up to a frame period later. */
uint64_t dash_nodes_next_change(const dash_nodes *t, uint64_t now_ms);

/* The table at now_ms, nodes sorted by id, and the socket servers their
 * heartbeats list (docs/dashboard.md, "nodes"). */
json_t *dash_nodes_json(const dash_nodes *t, uint64_t now_ms);

#endif

/* fuzz_gen.c - writes the seed corpora and dictionaries of the fuzz
 * targets from the project's real encoders, so that the seeds are exactly
 * what nodes and socket servers send:
 *
 *   fuzz_gen DIR     writes DIR/corpus/<target>/<name> and DIR/<target>.dict
 *
 * (run by hand after a codec change: `build-fuzz/tests/fuzz/fuzz_gen
 * tests/fuzz`, then commit). The ids follow fz_prime() and fz_populate() so
 * that seeds reach the apply paths: a delta that is next in order, a sync
 * part of the transfer in progress, known connections. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "fuzz_common.h"
#include "sync/snapshot.h"

static const char *out_dir;

static void mkdir_p(const char *path) {
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "fuzz_gen: mkdir %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

static void write_file(const char *target, const char *name, const void *p, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/corpus", out_dir);
    mkdir_p(path);
    snprintf(path, sizeof path, "%s/corpus/%s", out_dir, target);
    mkdir_p(path);
    snprintf(path, sizeof path, "%s/corpus/%s/%s", out_dir, target, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
        fprintf(stderr, "fuzz_gen: cannot write %s\n", path);
        exit(1);
    }
}

static void write_sb(const char *target, const char *name, msgpack_sbuffer *sb) {
    write_file(target, name, sb->data, sb->size);
    msgpack_sbuffer_clear(sb);
}

/* A dictionary: each word as a MessagePack string (fixstr). */
static void write_dict(const char *target, const char *const *words) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.dict", out_dir, target);
    FILE *f = fopen(path, "w");
    if (f == NULL) exit(1);
    fprintf(f, "# %s.dict - written by fuzz_gen: MessagePack keys and values.\n", target);
    for (int i = 0; words[i]; i++) {
        size_t n = strlen(words[i]);
        fprintf(f, "\"\\x%02x", 0xa0 | (unsigned)n);
        for (size_t k = 0; k < n; k++) fputc(words[i][k], f);
        fprintf(f, "\"\n");
    }
    fclose(f);
}

#define S(x) PD_STR_LIT(x)

/* ---- events ----------------------------------------------------------------------------- */

static void gen_events(void) {
    msgpack_sbuffer sb, meta, conns;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_sbuffer_init(&meta);
    msgpack_sbuffer_init(&conns);
    msgpack_packer_init(&pk, &meta, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    pd_pack_kv_str(&pk, "app", S("1.2"));
    pd_pack_kv_int(&pk, "build", 77);
    pd_sync_conn sync[] = {{S("c1"), S("alice"), S("web")}, {S("c8"), S("frank"), S("mobile")},
                           {S("c2"), S("bob"), S("desktop")}};
    struct { const char *name; pd_event ev; } evs[] = {
        {"connect", {.type = PD_EV_CONNECT, .server = S("s1"), .conn = S("c7"),
                     .user = S("alice"), .device = S("mobile")}},
        {"connect-meta-ts-seq", {.type = PD_EV_CONNECT, .server = S("s2"), .conn = S("c6"),
                                 .user = S("frank"), .device = S("web"),
                                 .meta = {meta.data, (uint32_t)meta.size}, .has_ts = true,
                                 .ts = (int64_t)FZ_NOW, .has_seq = true, .seq = 9,
                                 .has_trace = true, .trace = 42}},
        {"connect-existing", {.type = PD_EV_CONNECT, .server = S("s1"), .conn = S("c1"),
                              .user = S("bob"), .device = S("web")}},
        {"disconnect", {.type = PD_EV_DISCONNECT, .server = S("s1"), .conn = S("c1")}},
        {"disconnect-unknown", {.type = PD_EV_DISCONNECT, .server = S("s1"), .conn = S("zz")}},
        {"activity", {.type = PD_EV_ACTIVITY, .server = S("s2"), .conn = S("c3")}},
        {"idle", {.type = PD_EV_IDLE, .server = S("s1"), .conn = S("c2")}},
        {"status-busy", {.type = PD_EV_STATUS, .user = S("alice"), .status = PD_CHOSEN_BUSY}},
        {"status-auto", {.type = PD_EV_STATUS, .user = S("bob"), .status = PD_CHOSEN_AUTO}},
        {"status-invisible", {.type = PD_EV_STATUS, .user = S("carol"),
                              .status = PD_CHOSEN_INVISIBLE}},
        {"custom", {.type = PD_EV_CUSTOM, .user = S("bob"), .text = S("in a meeting"),
                    .emoji = S(":calendar:"), .expires_at = (int64_t)FZ_NOW + 1000}},
        {"custom-clear", {.type = PD_EV_CUSTOM, .user = S("alice"), .text = S("")}},
        {"heartbeat", {.type = PD_EV_HEARTBEAT, .server = S("s2")}},
        {"shutdown", {.type = PD_EV_SHUTDOWN, .server = S("s1"), .has_seq = true, .seq = 3}},
    };
    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++) {
        pd_event_encode(&sb, &evs[i].ev, NULL, 0);
        write_sb("fuzz_event", evs[i].name, &sb);
    }
    pd_event sync_ev = {.type = PD_EV_SYNC, .server = S("s1")};
    pd_event_encode(&sb, &sync_ev, sync, 3);
    write_sb("fuzz_event", "sync", &sb);
    pd_event_encode(&sb, &sync_ev, sync, 0);
    write_sb("fuzz_event", "sync-empty", &sb);
    static const char *const words[] = {
        "type", "server", "conn", "user", "device", "meta", "status", "text", "emoji",
        "expires_at", "conns", "ts", "seq", "trace", "connect", "disconnect", "activity",
        "idle", "custom", "sync", "heartbeat", "shutdown", "auto", "away", "busy",
        "invisible", "web", "s1", "s2", "c1", "c2", "alice", "bob", NULL};
    write_dict("fuzz_event", words);
    msgpack_sbuffer_destroy(&sb);
    msgpack_sbuffer_destroy(&meta);
    msgpack_sbuffer_destroy(&conns);
}

/* ---- between nodes ----------------------------------------------------------------------- */

static const pd_op OPS[] = {
    {.kind = PD_OP_ADD, .server = S("s8"), .conn = S("c8"), .user = S("alice"),
     .label = S("web"), .state = PD_DEV_ACTIVE, .connected_at = (int64_t)FZ_NOW,
     .last_active = (int64_t)FZ_NOW, .hlc = FZ_HLC + 5},
    {.kind = PD_OP_REMOVE, .server = S("s9"), .conn = S("c9"), .hlc = FZ_HLC},
    {.kind = PD_OP_STATE, .server = S("s9"), .conn = S("c9"), .hlc = FZ_HLC,
     .state = PD_DEV_IDLE, .last_active = (int64_t)FZ_NOW + 3},
    {.kind = PD_OP_CHOSEN, .user = S("bob"), .chosen = PD_CHOSEN_AWAY, .hlc = FZ_HLC + 900000,
     .writer = S(FZ_PEER)},
    {.kind = PD_OP_CUSTOM, .user = S("zed"), .text = S("brb"), .emoji = S(":coffee:"),
     .expires_at = (int64_t)FZ_NOW + 800, .hlc = FZ_HLC + 900000, .writer = S(FZ_PEER)},
    {.kind = PD_OP_SEEN, .user = S("zed"), .at = (int64_t)FZ_NOW + 7, .hlc = FZ_HLC + 900001,
     .writer = S(FZ_PEER)},
    {.kind = PD_OP_VER, .user = S("zed"), .hlc = FZ_HLC + 900002, .writer = S(FZ_PEER)},
    {.kind = PD_OP_REMOVE, .server = S("s8"), .conn = S("c8"), .hlc = FZ_HLC + 5,
     .at = (int64_t)FZ_NOW + 9, .ver = FZ_HLC + 900003, .user = S("alice")},
};
static const char *const OP_NAMES[] = {"add", "remove", "state", "chosen", "custom", "seen",
                                       "ver", "remove-user"};

static void ops_of(msgpack_sbuffer *ops, int first, int n) {
    msgpack_packer pk;
    msgpack_sbuffer_clear(ops);
    msgpack_packer_init(&pk, ops, msgpack_sbuffer_write);
    for (int i = first; i < first + n; i++) pd_op_encode(&pk, &OPS[i]);
}

static void gen_repl(void) {
    msgpack_sbuffer sb, ops;
    char name[64];
    static pd_heartbeat hb;
    msgpack_sbuffer_init(&sb);
    msgpack_sbuffer_init(&ops);
    enum { NOPS = (int)(sizeof OPS / sizeof OPS[0]) };
    for (int i = 0; i < NOPS; i++) {
        ops_of(&ops, i, 1);
        pd_delta_encode(&sb, S(FZ_PEER), FZ_PEER_INC, 2, ops.data, ops.size, 1);
        snprintf(name, sizeof name, "delta-%s", OP_NAMES[i]);
        write_sb("fuzz_delta", name, &sb);
    }
    uint64_t trace[] = {7, 8};
    ops_of(&ops, 0, NOPS);
    pd_delta_encode_traced(&sb, S(FZ_PEER), FZ_PEER_INC, 2, ops.data, ops.size, NOPS, trace, 2);
    write_sb("fuzz_delta", "delta-all-traced", &sb);
    pd_delta_encode(&sb, S(FZ_PEER), FZ_PEER_INC, 1, ops.data, ops.size, NOPS);
    write_sb("fuzz_delta", "delta-duplicate", &sb);
    pd_delta_encode(&sb, S(FZ_PEER), FZ_PEER_INC + 1, 1, ops.data, ops.size, NOPS);
    write_sb("fuzz_delta", "delta-new-incarnation", &sb);
    pd_delta_encode(&sb, S(FZ_PEER), FZ_PEER_INC, 4, ops.data, ops.size, NOPS);
    write_sb("fuzz_delta", "delta-gap", &sb);
    ops_of(&ops, 0, 1);
    pd_delta_encode(&sb, S(FZ_SELF), 6, 1, ops.data, ops.size, 1);
    write_sb("fuzz_delta", "delta-own-earlier-life", &sb);
    /* A restart the peers keep: its first delta carrying its life before,
     * and its "restored" (schemas/cluster.md "Incarnations"). */
    pd_delta_carry carry = {FZ_PEER_INC, NULL};
    pd_delta_encode_carry(&sb, S(FZ_PEER), FZ_PEER_INC + 1, 1, ops.data, ops.size, 1, NULL, 0,
                          FZ_NOW, &carry);
    write_sb("fuzz_delta", "delta-carries", &sb);
    pd_restored rs = {.inc = FZ_PEER_INC, .devices = 3, .digest = 12345};
    carry.restored = &rs;
    pd_delta_encode_carry(&sb, S(FZ_PEER), FZ_PEER_INC + 1, 2, NULL, 0, 0, NULL, 0, FZ_NOW,
                          &carry);
    write_sb("fuzz_delta", "delta-restored", &sb);

    hb = (pd_heartbeat){.node = S(FZ_PEER), .inc = FZ_PEER_INC, .seq = 2, .hlc = FZ_HLC + 9,
                        .ready = true, .devices = 3, .users = 2, .nvc = 3};
    hb.vc[0] = (pd_vc_entry){S(FZ_PEER), FZ_PEER_INC, 2};
    hb.vc[1] = (pd_vc_entry){S(FZ_SYNCING), FZ_SYNCING_INC, 4};
    hb.vc[2] = (pd_vc_entry){S(FZ_SELF), 7, 1};
    pd_heartbeat_encode(&sb, &hb);
    write_sb("fuzz_delta", "heartbeat-ahead", &sb);
    hb.leaving = true;
    pd_heartbeat_encode(&sb, &hb);
    write_sb("fuzz_delta", "heartbeat-leaving", &sb);
    hb.leaving = false;
    hb.inc = FZ_PEER_INC + 1;
    hb.vc[0].inc = FZ_PEER_INC + 1;
    hb.carries = FZ_PEER_INC;
    hb.nkept = 1;
    hb.kept[0] = (pd_vc_entry){S(FZ_SYNCING), FZ_SYNCING_INC, 4};
    pd_heartbeat_encode(&sb, &hb);
    write_sb("fuzz_delta", "heartbeat-carries-kept", &sb);
    hb = (pd_heartbeat){.node = S("n4"), .inc = 1, .seq = 0, .hlc = FZ_HLC, .ready = false,
                        .nvc = 1};
    hb.vc[0] = (pd_vc_entry){S("n4"), 1, 0};
    pd_heartbeat_encode(&sb, &hb);
    write_sb("fuzz_delta", "heartbeat-new-node", &sb);

    pd_sync_req q = {S(FZ_PEER), S(FZ_SELF), 4};
    pd_sync_req_encode(&sb, &q);
    write_sb("fuzz_delta", "sync-request-own", &sb);
    q.origin = S(FZ_PEER);
    pd_sync_req_encode(&sb, &q);
    write_sb("fuzz_delta", "sync-request-peer", &sb);
    q.origin = S("n9");
    pd_sync_req_encode(&sb, &q);
    write_sb("fuzz_delta", "sync-request-unknown", &sb);

    pd_sync_part p = {.origin = S(FZ_SYNCING), .known = true, .last = true,
                      .inc = FZ_SYNCING_INC, .seq = 3, .req = 1, .part = 0};
    ops_of(&ops, 0, 1);
    pd_sync_part_encode(&sb, &p, ops.data, ops.size, 1);
    write_sb("fuzz_delta", "sync-part-last", &sb);
    p.last = false;
    ops_of(&ops, 3, 2);
    pd_sync_part_encode(&sb, &p, ops.data, ops.size, 2);
    write_sb("fuzz_delta", "sync-part-first", &sb);
    p.known = false;
    p.last = true;
    pd_sync_part_encode(&sb, &p, ops.data, 0, 0);
    write_sb("fuzz_delta", "sync-part-unknown", &sb);

    static const char *const words[] = {
        "v", "node", "inc", "seq", "ops", "trace", "hlc", "leaving", "ready", "devices",
        "users", "vc", "origin", "req", "known", "last", "part", "at", "carries", "restored",
        "digest", "kept", FZ_SELF, FZ_PEER, FZ_SYNCING, "s9", "c9", "zed", NULL};
    write_dict("fuzz_delta", words);
    msgpack_sbuffer_destroy(&sb);
    msgpack_sbuffer_destroy(&ops);
}

/* ---- snapshots ---------------------------------------------------------------------------- */

static void write_snapshot(const char *name, pd_repl *r, uint64_t now) {
    static pd_snap_info info;
    uint8_t *out = NULL;
    size_t len = 0;
    char fname[64];
    pd_repl_snapshot_info(r, &info, now);
    pd_snap *s = pd_snap_begin(pd_repl_model(r), &info);
    while (!pd_snap_step(s, pd_repl_model(r), 8)) continue;
    if (pd_snap_finish(s, &out, &len) != PD_OK) exit(1);
    uint8_t *buf = malloc(len + 1);
    if (buf == NULL) exit(1);
    buf[0] = 0; /* mode: the whole value */
    memcpy(buf + 1, out, len);
    snprintf(fname, sizeof fname, "%s-raw", name);
    write_file("fuzz_snapshot", fname, buf, len + 1);
    buf[PD_SNAP_HEADER] = 1; /* mode: the body, header written by the target */
    snprintf(fname, sizeof fname, "%s-body", name);
    write_file("fuzz_snapshot", fname, buf + PD_SNAP_HEADER, len + 1 - PD_SNAP_HEADER);
    free(buf);
    free(out);
}

static void gen_snapshots(void) {
    pd_repl *r = fz_repl_new(FZ_SELF, NULL, FZ_NOW);
    write_snapshot("empty", r, FZ_NOW);
    fz_populate(r, FZ_NOW);
    write_snapshot("populated", r, FZ_NOW + 30);
    fz_prime(r, FZ_NOW + 40);
    write_snapshot("primed", r, FZ_NOW + 50);
    pd_repl_free(r);
    r = fz_repl_new(FZ_PEER, NULL, FZ_NOW);
    fz_populate(r, FZ_NOW);
    write_snapshot("other-node", r, FZ_NOW + 30);
    pd_repl_free(r);
    static const char *const words[] = {
        "v", "node", "inc", "seq", "hlc", "stream_seq", "taken_at", "left", "vc", "devices",
        "registers", FZ_SELF, FZ_PEER, NULL};
    write_dict("fuzz_snapshot", words);
    char path[512];
    snprintf(path, sizeof path, "%s/fuzz_snapshot.dict", out_dir);
    FILE *f = fopen(path, "a");
    if (f == NULL) exit(1);
    fprintf(f, "\"PDSNAP\\x00\\x%02x\"\n", PD_SNAP_VERSION); /* the header's magic */
    fclose(f);
}

/* ---- queries ------------------------------------------------------------------------------- */

static void gen_queries(void) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_str users[] = {S("alice"), S("bob"), S("dave"), S("u1"), S("nobody")};
    pd_query q = {.type = PD_Q_GET};
    pd_query_encode(&sb, &q, users, 5);
    write_sb("fuzz_query", "get", &sb);
    q.viewer = S("dave");
    pd_query_encode(&sb, &q, users, 3);
    write_sb("fuzz_query", "get-viewer", &sb);
    q = (pd_query){.type = PD_Q_DEVICES, .user = S("alice")};
    pd_query_encode(&sb, &q, NULL, 0);
    write_sb("fuzz_query", "devices", &sb);
    q = (pd_query){.type = PD_Q_ONLINE, .limit = 5};
    pd_query_encode(&sb, &q, NULL, 0);
    write_sb("fuzz_query", "online-limit", &sb);
    q.cursor = S("9223372036854775808");
    q.limit = 7;
    pd_query_encode(&sb, &q, NULL, 0);
    write_sb("fuzz_query", "online-cursor", &sb);
    q = (pd_query){.type = PD_Q_CLUSTER};
    pd_query_encode(&sb, &q, NULL, 0);
    write_sb("fuzz_query", "cluster", &sb);
    write_file("fuzz_query", "empty", "", 0);
    static const char *const words[] = {
        "users", "viewer", "user", "cursor", "limit", "alice", "bob", "dave", "u1", "u44",
        NULL};
    write_dict("fuzz_query", words);
    msgpack_sbuffer_destroy(&sb);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_gen DIR   (writes DIR/corpus/<target>/ and DIR/*.dict)\n");
        return 2;
    }
    out_dir = argv[1];
    fz_quiet();
    gen_events();
    gen_repl();
    gen_snapshots();
    gen_queries();
    return 0;
}

/* ctl_diff.c - `presencectl cluster --diff`: compares what each node
 * answers, through the per-node query subjects P.query.<kind>.<node>.
 *
 * Design: ask any node for the cluster (the node list), then every node
 * that is up for its own cluster entry (users, devices) and its online
 * users (all pages). The union of those users, sorted, is asked of every
 * node with `get` (in batches) and `devices` (one per user); each node's
 * answers are hashed in that order into its digest (FNV-1a 64; get
 * entries with their `ver`, which every node gives alike for the same
 * state: schemas/notifications.md, "ver"; without `as_of` and `stale`,
 * which say how fresh each node's own view is). Equal
 * digests and equal users/devices counts mean the nodes agree; otherwise
 * the users whose answers differ are listed, with each node's answer.
 * Exit 0 when the nodes agree, 1 when they differ or one does not answer.
 * An offline user known to one node only does not show in the online
 * lists: the per-node users count tells of it. */
#include "ctl_diff.h"
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include "ctl_json.h"
#include "wire/codec.h"

#define DIFF_NODES_MAX 64
#define DIFF_GET_BATCH 100

typedef struct {
    char id[PD_ID_MAX + 1];
    int64_t users, devices, online;
    uint64_t digest;
    bool answered;
} diff_node;

typedef struct {
    char *id;
    uint64_t h[DIFF_NODES_MAX];    /* hash of each node's answers about it */
} diff_user;

typedef struct {
    natsConnection *nc;
    const char *prefix;
    int64_t timeout_ms;
    bool json;                  /* errors as one JSON document on out */
    FILE *out;
    diff_node nodes[DIFF_NODES_MAX];
    uint32_t nnodes;
    diff_user *users;
    size_t nusers, cap;
} diff_ctx;

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

/* A request to P.<kind>.<node> (node NULL: the queue group). The reply,
 * when not an error reply, is the caller's to destroy. */
/* An error, once: {"ok":false,...} on out with --json, else on stderr. */
static void diff_fail(const diff_ctx *c, const char *code, const char *msg) {
    if (!c->json) {
        fprintf(stderr, "presencectl: %s\n", msg);
        return;
    }
    fputs("{\"ok\":false,\"code\":", c->out);
    ctl_json_cstr(c->out, code);
    fputs(",\"message\":", c->out);
    ctl_json_cstr(c->out, msg);
    fputs("}\n", c->out);
}

static natsMsg *ask(diff_ctx *c, const char *kind, const char *node, const void *data,
                    size_t len) {
    char msg[700];
    char subj[400];
    natsMsg *m = NULL;
    pd_reply rep;
    if (node) snprintf(subj, sizeof subj, "%s.query.%s.%s", c->prefix, kind, node);
    else snprintf(subj, sizeof subj, "%s.query.%s", c->prefix, kind);
    if (natsConnection_Request(&m, c->nc, subj, data, (int)len, c->timeout_ms) != NATS_OK) {
        snprintf(msg, sizeof msg, "no answer on %s", subj);
        diff_fail(c, "no_answer", msg);
        return NULL;
    }
    if (pd_reply_decode(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), &rep) == PD_OK &&
        !rep.ok) {
        snprintf(msg, sizeof msg, "%s refused: %s: %s", subj, rep.code, rep.message);
        diff_fail(c, rep.code, msg);
        natsMsg_Destroy(m);
        return NULL;
    }
    return m;
}

/* One entry of a cluster reply's `nodes`: id, alive, users, devices. */
static bool read_node(mp_reader *r, diff_node *out, bool *alive) {
    uint32_t n;
    pd_str k, s;
    memset(out, 0, sizeof *out);
    *alive = false;
    if (!mpr_map(r, &n)) return false;
    for (uint32_t i = 0; i < n; i++) {
        if (!pd_read_key(r, &k)) return false;
        bool ok = true;
        if (pd_str_eqc(k, "node")) {
            ok = mpr_str(r, &s) && s.n <= PD_ID_MAX;
            if (ok) memcpy(out->id, s.p, s.n);
        } else if (pd_str_eqc(k, "alive")) ok = mpr_bool(r, alive);
        else if (pd_str_eqc(k, "users")) ok = mpr_int(r, &out->users);
        else if (pd_str_eqc(k, "devices")) ok = mpr_int(r, &out->devices);
        else ok = mpr_skip(r);
        if (!ok) return false;
    }
    return true;
}

/* Calls fn for each entry of the reply's `nodes`; false if malformed. */
static bool each_node(natsMsg *m, void (*fn)(diff_ctx *, const diff_node *, bool),
                      diff_ctx *c) {
    mp_reader r;
    uint32_t n, k;
    pd_str key;
    mpr_init(&r, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    if (!mpr_map(&r, &n)) return false;
    for (uint32_t i = 0; i < n; i++) {
        if (!pd_read_key(&r, &key)) return false;
        if (!pd_str_eqc(key, "nodes")) {
            if (!mpr_skip(&r)) return false;
            continue;
        }
        if (!mpr_array(&r, &k)) return false;
        for (uint32_t j = 0; j < k; j++) {
            diff_node d;
            bool alive;
            if (!read_node(&r, &d, &alive)) return false;
            fn(c, &d, alive);
        }
    }
    return true;
}

static void add_node(diff_ctx *c, const diff_node *d, bool alive) {
    if (alive && c->nnodes < DIFF_NODES_MAX) c->nodes[c->nnodes++] = *d;
}

/* The node's own entry (the first) of its cluster reply. */
static void own_entry(diff_ctx *c, const diff_node *d, bool alive) {
    (void)alive;
    for (uint32_t i = 0; i < c->nnodes; i++) {
        if (strcmp(c->nodes[i].id, d->id) == 0 && !c->nodes[i].answered) {
            c->nodes[i].users = d->users;
            c->nodes[i].devices = d->devices;
            c->nodes[i].answered = true;
        }
    }
}

static bool add_user(diff_ctx *c, pd_str id) {
    if (c->nusers == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 1024;
        diff_user *v = realloc(c->users, cap * sizeof *v);
        if (v == NULL) return false;
        c->users = v;
        c->cap = cap;
    }
    diff_user *u = &c->users[c->nusers];
    memset(u, 0, sizeof *u);
    if ((u->id = malloc(id.n + 1u)) == NULL) return false;
    memcpy(u->id, id.p, id.n);
    u->id[id.n] = '\0';
    c->nusers++;
    return true;
}

/* Every page of node's online list, into c->users (duplicates for now). */
static bool collect_online(diff_ctx *c, diff_node *node) {
    char cursor[PD_CURSOR_MAX + 1] = "";
    do {
        pd_query q = {.type = PD_Q_ONLINE, .cursor = pd_str_c(cursor)};
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        pd_query_encode(&sb, &q, NULL, 0);
        natsMsg *m = ask(c, "online", node->id, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        if (m == NULL) return false;
        mp_reader r;
        uint32_t n, k = 0;
        pd_str key, s;
        bool ok = true;
        cursor[0] = '\0';
        mpr_init(&r, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
        ok = mpr_map(&r, &n);
        for (uint32_t i = 0; ok && i < n; i++) {
            ok = pd_read_key(&r, &key);
            if (ok && pd_str_eqc(key, "users")) {
                ok = mpr_array(&r, &k);
                for (uint32_t j = 0; ok && j < k; j++, node->online++)
                    ok = mpr_str(&r, &s) && add_user(c, s);
            } else if (ok && pd_str_eqc(key, "cursor")) {
                ok = mpr_str(&r, &s) && s.n <= PD_CURSOR_MAX;
                if (ok) memcpy(cursor, s.p, s.n), cursor[s.n] = '\0';
            } else if (ok) ok = mpr_skip(&r);
        }
        natsMsg_Destroy(m);
        if (!ok) return false;
    } while (cursor[0]);
    return true;
}

static int user_cmp(const void *a, const void *b) {
    return strcmp(((const diff_user *)a)->id, ((const diff_user *)b)->id);
}

static void sort_unique(diff_ctx *c) {
    size_t out = 0;
    if (c->nusers) qsort(c->users, c->nusers, sizeof *c->users, user_cmp);
    for (size_t i = 0; i < c->nusers; i++) {
        if (out && strcmp(c->users[out - 1].id, c->users[i].id) == 0) free(c->users[i].id);
        else c->users[out++] = c->users[i];
    }
    c->nusers = out;
}

/* get for users [from, from+n) on node ni: each entry's bytes hashed. */
static bool hash_get(diff_ctx *c, uint32_t ni, size_t from, size_t n) {
    pd_str ids[DIFF_GET_BATCH];
    pd_query q = {.type = PD_Q_GET};
    msgpack_sbuffer sb;
    for (size_t i = 0; i < n; i++) ids[i] = pd_str_c(c->users[from + i].id);
    msgpack_sbuffer_init(&sb);
    pd_query_encode(&sb, &q, ids, (uint32_t)n);
    natsMsg *m = ask(c, "get", c->nodes[ni].id, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    if (m == NULL) return false;
    mp_reader r;
    uint32_t k = 0;
    pd_err rerr;
    bool ok = pd_reply_top_decode(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), "users",
                                  &r, &k, NULL, NULL, &rerr) == PD_OK && k == n;
    /* Each entry re-encoded alone, ver included: nodes that hold the same
     * state give the same ver, however they came by it
     * (schemas/notifications.md, "ver"); `stale` left out. */
    msgpack_sbuffer one;
    msgpack_packer pk;
    msgpack_sbuffer_init(&one);
    msgpack_packer_init(&pk, &one, msgpack_sbuffer_write);
    for (uint32_t i = 0; ok && i < k; i++) {
        pd_view v;
        pd_err err;
        ok = pd_view_decode(&r, &v, &err) == PD_OK;
        if (!ok) break;
        v.stale = false;
        msgpack_sbuffer_clear(&one);
        pd_get_reply_user(&pk, &v);
        c->users[from + i].h[ni] = fnv(0xcbf29ce484222325ULL, one.data, one.size);
    }
    msgpack_sbuffer_destroy(&one);
    natsMsg_Destroy(m);
    return ok;
}

/* devices of user ui on node ni, folded into its hash. */
static bool hash_devices(diff_ctx *c, uint32_t ni, size_t ui) {
    pd_query q = {.type = PD_Q_DEVICES, .user = pd_str_c(c->users[ui].id)};
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pd_query_encode(&sb, &q, NULL, 0);
    natsMsg *m = ask(c, "devices", c->nodes[ni].id, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    if (m == NULL) return false;
    msgpack_sbuffer_init(&sb);
    pd_reply_strip_fresh(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), &sb);
    c->users[ui].h[ni] = fnv(c->users[ui].h[ni], sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    natsMsg_Destroy(m);
    return true;
}

/* Prints each node's answers about one user (get and devices, as JSON). */
static void show_user(diff_ctx *c, const diff_user *u, FILE *out) {
    fprintf(out, "user %s\n", u->id);
    for (uint32_t ni = 0; ni < c->nnodes; ni++) {
        pd_str id = pd_str_c(u->id);
        pd_query g = {.type = PD_Q_GET}, d = {.type = PD_Q_DEVICES, .user = id};
        const pd_query *qs[2] = {&g, &d};
        const char *kinds[2] = {"get", "devices"};
        for (int k = 0; k < 2; k++) {
            msgpack_sbuffer sb;
            msgpack_sbuffer_init(&sb);
            pd_query_encode(&sb, qs[k], &id, 1);
            natsMsg *m = ask(c, kinds[k], c->nodes[ni].id, sb.data, sb.size);
            msgpack_sbuffer_destroy(&sb);
            fprintf(out, "  %-16s %-8s ", c->nodes[ni].id, kinds[k]);
            if (m) ctl_json_print(out, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
            else fputs("(no answer)\n", out);
            natsMsg_Destroy(m);
        }
    }
}

static bool gather(diff_ctx *c) {
    natsMsg *m = ask(c, "cluster", NULL, NULL, 0);
    if (m == NULL) return false;
    bool ok = each_node(m, add_node, c);
    natsMsg_Destroy(m);
    for (uint32_t i = 0; ok && i < c->nnodes; i++) {
        if ((m = ask(c, "cluster", c->nodes[i].id, NULL, 0)) == NULL) return false;
        /* Only the first entry is the node's own state: the node marks it. */
        diff_ctx one = {.nnodes = 1};
        one.nodes[0] = c->nodes[i];
        ok = each_node(m, own_entry, &one);
        natsMsg_Destroy(m);
        c->nodes[i] = one.nodes[0];
        if (ok) ok = collect_online(c, &c->nodes[i]);
    }
    if (!ok) return false;
    sort_unique(c);
    for (uint32_t ni = 0; ni < c->nnodes; ni++) {
        for (size_t from = 0; from < c->nusers; from += DIFF_GET_BATCH) {
            size_t n = c->nusers - from < DIFF_GET_BATCH ? c->nusers - from : DIFF_GET_BATCH;
            if (!hash_get(c, ni, from, n)) return false;
        }
        for (size_t ui = 0; ui < c->nusers; ui++) {
            if (!hash_devices(c, ni, ui)) return false;
        }
        uint64_t h = 0xcbf29ce484222325ULL;
        for (size_t ui = 0; ui < c->nusers; ui++) {
            h = fnv(h, c->users[ui].id, strlen(c->users[ui].id) + 1);
            h = fnv(h, &c->users[ui].h[ni], sizeof c->users[ui].h[ni]);
        }
        c->nodes[ni].digest = h;
    }
    return true;
}

int ctl_cluster_diff(natsConnection *nc, const char *prefix, int64_t timeout_ms, bool json,
                     FILE *out) {
    diff_ctx *c = calloc(1, sizeof *c);
    int rc = 1;
    if (c == NULL) return 1;
    c->nc = nc;
    c->prefix = prefix;
    c->timeout_ms = timeout_ms;
    c->json = json;
    c->out = out;
    if (!gather(c)) goto done;
    if (c->nnodes == 0) {
        diff_fail(c, "no_answer", "no node is up to compare");
        goto done;
    }
    bool same = true;
    size_t ndiff = 0;
    for (uint32_t i = 1; i < c->nnodes; i++) {
        same &= c->nodes[i].digest == c->nodes[0].digest &&
                c->nodes[i].users == c->nodes[0].users &&
                c->nodes[i].devices == c->nodes[0].devices;
    }
    for (size_t ui = 0; ui < c->nusers; ui++) {
        for (uint32_t i = 1; i < c->nnodes; i++) {
            if (c->users[ui].h[i] != c->users[ui].h[0]) { ndiff++; break; }
        }
    }
    if (json) fputs("{\"nodes\":[", out);
    else fprintf(out, "%-16s %8s %8s %8s  %s\n", "NODE", "USERS", "DEVICES", "ONLINE", "DIGEST");
    for (uint32_t i = 0; i < c->nnodes; i++) {
        const diff_node *d = &c->nodes[i];
        fprintf(out, json ? "%s{\"node\":\"%s\",\"users\":%" PRId64 ",\"devices\":%" PRId64
                            ",\"online\":%" PRId64 ",\"digest\":\"%016" PRIx64 "\"}"
                          : "%s%-16s %8" PRId64 " %8" PRId64 " %8" PRId64 "  %016" PRIx64 "\n",
                json && i ? "," : "", d->id, d->users, d->devices, d->online, d->digest);
    }
    if (json) fputs("],\"differ\":[", out);
    else fprintf(out, "%zu users compared, %zu differ; %s\n", c->nusers, ndiff,
                 same ? "no difference" : "the nodes differ");
    for (size_t ui = 0, k = 0; ui < c->nusers; ui++) {
        bool d = false;
        for (uint32_t i = 1; i < c->nnodes; i++) d |= c->users[ui].h[i] != c->users[ui].h[0];
        if (!d) continue;
        if (json) fprintf(out, "%s\"%s\"", k++ ? "," : "", c->users[ui].id);
        else show_user(c, &c->users[ui], out);
    }
    if (json) fprintf(out, "],\"same\":%s}\n", same ? "true" : "false");
    rc = same ? 0 : 1;
done:
    for (size_t i = 0; i < c->nusers; i++) free(c->users[i].id);
    free(c->users);
    free(c);
    return rc;
}

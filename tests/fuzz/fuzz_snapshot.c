/* fuzz_snapshot.c - libFuzzer target: reading a snapshot from Redis
 * (common/sync/snapshot.c) and restoring it into a node (pd_repl_restore).
 *
 * Input: one mode byte, then the bytes. Mode bit 0 clear: the bytes are
 * the whole value as stored in Redis (header, checksum, body). Bit 0 set:
 * the bytes are the body only, and the target writes a valid header and
 * checksum in front, so that mutations reach the body's decoder instead of
 * stopping at the checksum.
 * Invariants checked:
 * - a refused snapshot carries a valid status and message and changes
 *   nothing in a populated model (digest), nor in a starting node's empty
 *   one (restored in one pass and undone: pd_model_pristine), and both
 *   give the same verdict;
 * - an accepted one keeps its promises (ids valid, lists as long as
 *   declared, device entries are ADD ops, registers CHOSEN or CUSTOM);
 * - restored into a starting node, then written out again, it reads back,
 *   and a second restore -> write cycle gives the same devices and
 *   registers (a fixpoint); the model agrees with itself throughout. */
#include <stdlib.h>
#include <string.h>
#include "fuzz_common.h"
#include "sync/snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void put_be(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

/* What a snapshot holds, each entry re-encoded, sorted: a canonical form. */
typedef struct {
    char **v;
    size_t *len;
    size_t n;
} entries;

static void entries_add(entries *e, const msgpack_sbuffer *sb) {
    e->v = realloc(e->v, (e->n + 1) * sizeof *e->v);
    e->len = realloc(e->len, (e->n + 1) * sizeof *e->len);
    FZ_CHECK(e->v && e->len, "out of memory");
    e->v[e->n] = malloc(sb->size ? sb->size : 1);
    FZ_CHECK(e->v[e->n], "out of memory");
    memcpy(e->v[e->n], sb->data, sb->size);
    e->len[e->n++] = sb->size;
}

static void entries_free(entries *e) {
    for (size_t i = 0; i < e->n; i++) free(e->v[i]);
    free(e->v);
    free(e->len);
}

static int cmp_entry(const entries *e, size_t a, size_t b) {
    size_t n = e->len[a] < e->len[b] ? e->len[a] : e->len[b];
    int c = memcmp(e->v[a], e->v[b], n);
    return c ? c : (e->len[a] > e->len[b]) - (e->len[a] < e->len[b]);
}

static void entries_sort(entries *e) { /* insertion sort: a few entries */
    for (size_t i = 1; i < e->n; i++) {
        for (size_t j = i; j > 0 && cmp_entry(e, j - 1, j) > 0; j--) {
            char *v = e->v[j];
            size_t l = e->len[j];
            e->v[j] = e->v[j - 1];
            e->len[j] = e->len[j - 1];
            e->v[j - 1] = v;
            e->len[j - 1] = l;
        }
    }
}

/* Validates an opened snapshot and collects its entries (out may be NULL). */
static void walk(const pd_snap_info *info, pd_snap_reader rd, entries *out) {
    pd_snap_device d;
    pd_op op;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    uint32_t ndevs = rd.ndevs, nregs = rd.nregs, n = 0;
    FZ_CHECK(pd_id_valid(info->node.p, info->node.n), "snapshot node is not an id");
    FZ_CHECK(info->nvc <= PD_VC_MAX, "vc of %u entries", info->nvc);
    for (uint32_t i = 0; i < info->nvc; i++)
        FZ_CHECK(pd_id_valid(info->vc[i].node.p, info->vc[i].node.n), "vc id");
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    while (pd_snap_next_device(&rd, &d)) {
        n++;
        FZ_CHECK(pd_id_valid(d.owner.p, d.owner.n), "device owner id");
        FZ_CHECK(d.op.kind == PD_OP_ADD, "device entry of kind %d", (int)d.op.kind);
        if (out == NULL) continue;
        msgpack_sbuffer_clear(&sb);
        pd_pack_str(&pk, d.owner);
        pd_op_encode(&pk, &d.op);
        entries_add(out, &sb);
    }
    FZ_CHECK(n == ndevs, "%u devices read of %u", n, ndevs);
    n = 0;
    while (pd_snap_next_register(&rd, &op)) {
        n++;
        FZ_CHECK(op.kind == PD_OP_CHOSEN || op.kind == PD_OP_CUSTOM || op.kind == PD_OP_SEEN ||
                     op.kind == PD_OP_VER,
                 "register of kind %d", (int)op.kind);
        if (out == NULL) continue;
        msgpack_sbuffer_clear(&sb);
        pd_op_encode(&pk, &op);
        entries_add(out, &sb);
    }
    FZ_CHECK(n == nregs, "%u registers read of %u", n, nregs);
    msgpack_sbuffer_destroy(&sb);
}

/* Writes r's snapshot (freed by the caller with free()). */
static uint8_t *take(pd_repl *r, uint64_t now, size_t *len) {
    static pd_snap_info info;
    uint8_t *out = NULL;
    pd_repl_snapshot_info(r, &info, now);
    pd_snap *s = pd_snap_begin(pd_repl_model(r), &info);
    FZ_CHECK(s != NULL, "pd_snap_begin failed");
    while (!pd_snap_step(s, pd_repl_model(r), 4)) continue;
    pd_status st = pd_snap_finish(s, &out, len);
    FZ_CHECK(st == PD_OK, "pd_snap_finish: %d", (int)st);
    return out;
}

/* A starting node restores buf (accepted before); returns its snapshot. */
static uint8_t *restore_and_take(const uint8_t *buf, size_t len, uint64_t now,
                                 size_t *out_len) {
    static pd_snap_info info;
    pd_err err = {0};
    pd_repl *r = fz_repl_new(FZ_SELF, NULL, now);
    pd_status s = pd_repl_restore(r, buf, len, now, &info, &err);
    FZ_CHECK(s == PD_OK, "restore refused an accepted snapshot: %s", err.msg);
    fz_check_model(pd_repl_model(r));
    pd_repl_restore_done(r, now);
    fz_check_model(pd_repl_model(r));
    uint8_t *out = take(r, now, out_len);
    pd_repl_free(r);
    return out;
}

static void open_entries(const uint8_t *buf, size_t len, entries *e) {
    static pd_snap_info info;
    pd_snap_reader rd;
    pd_err err = {0};
    pd_status s = pd_snap_open(buf, len, &info, &rd, &err);
    FZ_CHECK(s == PD_OK, "a snapshot we wrote does not open: %s", err.msg);
    walk(&info, rd, e);
    entries_sort(e);
}

static void fixpoint(const uint8_t *buf, size_t len) {
    size_t l1, l2;
    entries a = {0}, b = {0};
    uint8_t *s1 = restore_and_take(buf, len, FZ_NOW + 1000, &l1);
    uint8_t *s2 = restore_and_take(s1, l1, FZ_NOW + 1000, &l2);
    open_entries(s1, l1, &a);
    open_entries(s2, l2, &b);
    FZ_CHECK(a.n == b.n, "restore -> write changed the number of entries: %zu, then %zu",
             a.n, b.n);
    for (size_t i = 0; i < a.n; i++)
        FZ_CHECK(a.len[i] == b.len[i] && memcmp(a.v[i], b.v[i], a.len[i]) == 0,
                 "restore -> write is not a fixpoint (entry %zu)", i);
    entries_free(&a);
    entries_free(&b);
    free(s1);
    free(s2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static pd_snap_info info;
    pd_snap_reader rd;
    pd_err err = {0};
    uint8_t *buf;
    size_t len;
    fz_quiet();
    if (size == 0) return 0;
    if (data[0] & 1) {
        len = PD_SNAP_HEADER + size - 1;
        buf = malloc(len);
        FZ_CHECK(buf != NULL, "out of memory");
        memcpy(buf, "PDSNAP\0", 7);
        buf[7] = PD_SNAP_VERSION;
        put_be(buf + 8, size - 1);
        memcpy(buf + PD_SNAP_HEADER, data + 1, size - 1);
        put_be(buf + 16, pd_snap_checksum(PD_SNAP_VERSION, buf + PD_SNAP_HEADER, size - 1));
    } else {
        len = size - 1;
        buf = malloc(len ? len : 1);
        FZ_CHECK(buf != NULL, "out of memory");
        memcpy(buf, data + 1, len);
    }

    pd_status s = pd_snap_open(buf, len, &info, &rd, &err);
    if (s != PD_OK) fz_check_refusal(s, &err);
    else walk(&info, rd, NULL);

    /* The peek a restart makes before its replay: never accepts what the
     * header's checks refuse, and reads the fields pd_snap_open read. */
    static pd_snap_info peek;
    pd_err perr = {PD_OK, ""};
    pd_status ps = pd_snap_peek(buf, len, &peek, &perr);
    if (ps != PD_OK) fz_check_refusal(ps, &perr);
    if (s == PD_OK && ps == PD_OK) {
        FZ_CHECK(pd_str_eq(peek.node, info.node) && peek.inc == info.inc &&
                     peek.seq == info.seq && peek.stream_seq == info.stream_seq,
                 "the peek read other fields than pd_snap_open");
    }

    /* Into a running, populated node: a refusal changes nothing. */
    pd_repl *r = fz_repl_new(FZ_SELF, NULL, FZ_NOW);
    fz_populate(r, FZ_NOW);
    uint64_t before = fz_model_digest(pd_repl_model(r));
    pd_status rs = pd_repl_restore(r, buf, len, FZ_NOW + 100, &info, &err);
    if (rs != PD_OK) {
        fz_check_refusal(rs, &err);
        FZ_CHECK(fz_model_digest(pd_repl_model(r)) == before,
                 "a refused snapshot (%s) changed the model", err.msg);
    } else {
        FZ_CHECK(s == PD_OK, "restore accepted what pd_snap_open refused");
    }
    fz_check_model(pd_repl_model(r));
    FZ_CHECK(!pd_hlc_ahead(pd_model_hlc(pd_repl_model(r)), FZ_NOW + 100,
                           PD_MAX_CLOCK_SKEW_DEFAULT_MS),
             "a snapshot moved the HLC beyond the wall clock + bound");
    pd_repl_free(r);

    /* Into a starting node, which restores in one pass and undoes what it
     * applied on a refusal: the same verdict, and a refusal leaves the
     * model as it was (empty). */
    r = fz_repl_new(FZ_SELF, NULL, FZ_NOW);
    uint64_t empty = fz_model_digest(pd_repl_model(r));
    pd_status fs = pd_repl_restore(r, buf, len, FZ_NOW + 100, &info, &err);
    FZ_CHECK((fs == PD_OK) == (rs == PD_OK), "a starting node and a running one disagree: %d, %d",
             (int)fs, (int)rs);
    if (fs != PD_OK) {
        fz_check_refusal(fs, &err);
        FZ_CHECK(pd_model_pristine(pd_repl_model(r)) &&
                     fz_model_digest(pd_repl_model(r)) == empty,
                 "a refused snapshot (%s) left something in a starting node", err.msg);
    }
    fz_check_model(pd_repl_model(r));
    pd_repl_free(r);

    if (rs == PD_OK) fixpoint(buf, len);
    free(buf);
    return 0;
}

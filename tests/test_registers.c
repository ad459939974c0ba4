/* test_registers.c - the chosen and custom status registers of the model
 * (PD_OP_CHOSEN / PD_OP_CUSTOM through pd_model_apply_op) merge like
 * last-writer-wins registers: commutative, associative and idempotent, and
 * concurrent writes pick the same winner everywhere - the highest hlc, then
 * the greater writer id by strcmp.
 *
 * Design: each random case (seeded, see prop_fixtures.h) makes a small set
 * of register ops on three users, with hlc values from a narrow range and
 * writers whose ids compare in a known order, so that equal hlc with
 * different writers is common. Every user first gets a device (an ADD from
 * another node) so that the chosen status is visible. Then:
 * - commutative: the ops in every order (all permutations up to 5 ops,
 *   a sample beyond) applied to fresh models give the same views, and the
 *   views the winners predict;
 * - idempotent: random sequences with duplicates give the same views, and
 *   applying everything once more announces nothing;
 * - associative: the ops split over three models, merged by state transfer
 *   (pd_model_partition_dump of each writer) in either grouping, give the
 *   same views again.
 * Views are compared as the public and the self view of each user: status,
 * text, emoji, expires_at, devices and last_seen; and each model's last
 * notification for a user must match that user's final public view. */
#include "base/alloc.h"
#include "model/presence_int.h"
#include "prop_fixtures.h"
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#define NOW 1000u                /* the time every op is applied at */
#define MAX_OPS 7
#define NUSERS 3

static const char *const USERS[NUSERS] = {"u0", "u1", "u2"};
/* strcmp order: "a" < "n1" < "n10" < "n2" < "node-b" */
static const char *const WRITERS[] = {"n1", "n2", "n10", "a", "node-b"};
static const char *const TEXTS[] = {"", "lunch", "in a meeting", "\xf0\x9f\x8c\xb4 away"};
static const char *const EMOJIS[] = {"", "\xf0\x9f\x8d\x94"};
static const int64_t EXPIRES[] = {0, 0, 500, 5000}; /* 500 is already past at NOW */

/* ---- a case: ops and the views they should give ------------------------------------------ */

typedef struct {
    pd_op ops[MAX_OPS];
    int n;
} reg_case;

static bool same_version(const pd_op *a, const pd_op *b) {
    return a->kind == b->kind && pd_str_eq(a->user, b->user) && a->hlc == b->hlc &&
           pd_str_eq(a->writer, b->writer);
}

static void make_case(rng *r, reg_case *c) {
    c->n = 2 + (int)rng_below(r, MAX_OPS - 1);
    for (int i = 0; i < c->n; i++) {
        pd_op *op = &c->ops[i];
    again:
        memset(op, 0, sizeof *op);
        op->kind = rng_pct(r, 50) ? PD_OP_CHOSEN : PD_OP_CUSTOM;
        /* Mostly one user, so that ops compete. */
        op->user = pd_str_c(USERS[rng_pct(r, 70) ? 0 : rng_below(r, NUSERS)]);
        op->hlc = rng_below(r, 3);
        op->writer = pd_str_c(WRITERS[rng_below(r, 5)]);
        op->chosen = (pd_chosen)rng_below(r, 4);
        op->text = pd_str_c(TEXTS[rng_below(r, 4)]);
        op->emoji = op->text.n ? pd_str_c(EMOJIS[rng_below(r, 2)]) : pd_str_c("");
        op->expires_at = op->text.n ? EXPIRES[rng_below(r, 4)] : 0;
        /* One version names one value: never two ops with the same one. */
        for (int k = 0; k < i; k++)
            if (same_version(op, &c->ops[k])) goto again;
    }
}

/* The winner of (kind, user) in the case, or NULL if none wrote it. */
static const pd_op *winner(const reg_case *c, pd_op_kind kind, const char *user) {
    const pd_op *w = NULL;
    for (int i = 0; i < c->n; i++) {
        const pd_op *op = &c->ops[i];
        if (op->kind != kind || !pd_str_eqc(op->user, user)) continue;
        if (w == NULL || op->hlc > w->hlc ||
            (op->hlc == w->hlc && strcmp(op->writer.p, w->writer.p) > 0))
            w = op;
    }
    return w;
}

/* ---- models -------------------------------------------------------------------------------- */

typedef struct {
    pd_public status[NUSERS];
    char text[NUSERS][PD_TEXT_MAX + 1];
    bool notified[NUSERS];
    long notes;
} notes_seen;

static int user_index(pd_str u) {
    for (int i = 0; i < NUSERS; i++)
        if (pd_str_eqc(u, USERS[i])) return i;
    return -1;
}

static void on_note(void *ud, const pd_view *v) {
    notes_seen *ns = ud;
    int i = user_index(v->user);
    REQUIRE(i >= 0, "a notification for an unknown user");
    ns->status[i] = v->status;
    snprintf(ns->text[i], sizeof ns->text[i], "%.*s", (int)v->text.n, v->text.p);
    ns->notified[i] = true;
    ns->notes++;
}

static const pd_model_cfg MCFG = {
    .idle_timeout_ms = 1u << 30, .offline_delay_ms = 1000, .server_timeout_ms = 1u << 30};

/* A fresh model in which u0 has an active device, u1 an idle one, u2 none
 * (all owned by node "o"), so that chosen statuses show. */
static pd_model *fresh(notes_seen *ns) {
    memset(ns, 0, sizeof *ns);
    pd_model *m = pd_model_new(&MCFG, pd_str_c("self"), on_note, ns);
    REQUIRE(m != NULL, "no model");
    for (int i = 0; i < 2; i++) {
        char conn[8];
        snprintf(conn, sizeof conn, "c%d", i);
        pd_op add = {.kind = PD_OP_ADD, .server = pd_str_c("s"), .conn = pd_str_c(conn),
                     .user = pd_str_c(USERS[i]), .label = pd_str_c("web"),
                     .state = i ? PD_DEV_IDLE : PD_DEV_ACTIVE, .connected_at = 10,
                     .last_active = 20 + i, .hlc = 7};
        REQUIRE(pd_model_apply_op(m, pd_str_c("o"), &add, NOW) == PD_OK, "ADD refused");
    }
    return m;
}

static void apply_all(pd_model *m, const reg_case *c, const int *order, int n) {
    for (int i = 0; i < n; i++)
        REQUIRE(pd_model_apply_op(m, c->ops[order[i]].writer, &c->ops[order[i]], NOW) == PD_OK,
                "op %d refused", order[i]);
}

/* One user's views as a string: public then self. */
static void describe(const pd_model *m, int u, char *out, size_t cap) {
    size_t o = 0;
    for (int self = 0; self <= 1; self++) {
        pd_view v;
        pd_model_view(m, pd_str_c(USERS[u]), self ? pd_str_c(USERS[u]) : pd_str_c(""), &v);
        o += (size_t)snprintf(out + o, cap - o, "%s%d '%.*s' '%.*s' exp=%lld dev=%u seen=%lld",
                              self ? " | self " : "", v.status, (int)v.text.n, v.text.p,
                              (int)v.emoji.n, v.emoji.p, (long long)v.expires_at, v.devices,
                              (long long)v.last_seen);
    }
}

/* The views the winners predict for user u. */
static void predicted(const reg_case *c, int u, char *out, size_t cap) {
    const pd_op *ch = winner(c, PD_OP_CHOSEN, USERS[u]), *cu = winner(c, PD_OP_CUSTOM, USERS[u]);
    pd_chosen chosen = ch ? ch->chosen : PD_CHOSEN_AUTO;
    bool has_dev = u < 2, active = u == 0;
    bool custom = cu && cu->text.n && (cu->expires_at == 0 || cu->expires_at > (int64_t)NOW);
    int64_t seen = has_dev ? 20 + u : 0;
    size_t o = 0;
    for (int self = 0; self <= 1; self++) {
        bool hidden = !self && chosen == PD_CHOSEN_INVISIBLE;
        pd_public st;
        if (chosen == PD_CHOSEN_INVISIBLE) st = self ? PD_PUB_INVISIBLE : PD_PUB_OFFLINE;
        else if (!has_dev) st = PD_PUB_OFFLINE;
        else if (chosen == PD_CHOSEN_BUSY) st = PD_PUB_BUSY;
        else if (chosen == PD_CHOSEN_AWAY) st = PD_PUB_AWAY;
        else st = active ? PD_PUB_ONLINE : PD_PUB_AWAY;
        bool show = custom && !hidden;
        pd_str text = show ? cu->text : pd_str_c(""), emoji = show ? cu->emoji : pd_str_c("");
        o += (size_t)snprintf(out + o, cap - o, "%s%d '%.*s' '%.*s' exp=%lld dev=%u seen=%lld",
                              self ? " | self " : "", st, (int)text.n, text.p, (int)emoji.n,
                              emoji.p, (long long)(show ? cu->expires_at : 0),
                              hidden ? 0u : (unsigned)has_dev, (long long)seen);
    }
}

/* Checks m shows what the case predicts, and that its notifications
 * tracked every user's public view to the end. */
static void check_model_views(const pd_model *m, const notes_seen *ns, const reg_case *c,
                              uint64_t seed, const char *how) {
    for (int u = 0; u < NUSERS; u++) {
        char got[512], want[512];
        describe(m, u, got, sizeof got);
        predicted(c, u, want, sizeof want);
        REQUIRE(strcmp(got, want) == 0, "case seed %" PRIu64 " (%s), user %s:\n got %s\nwant %s",
                seed, how, USERS[u], got, want);
        pd_view v;
        pd_model_view(m, pd_str_c(USERS[u]), pd_str_c(""), &v);
        pd_public last = ns->notified[u] ? ns->status[u] : PD_PUB_OFFLINE;
        const char *last_text = ns->notified[u] ? ns->text[u] : "";
        REQUIRE(last == v.status && pd_str_eqc(v.text, last_text),
                  "case seed %" PRIu64 " (%s): %s was last announced as %d '%s', is %d '%.*s'",
                  seed, how, USERS[u], last, last_text, v.status, (int)v.text.n, v.text.p);
    }
}

/* ---- the three properties ------------------------------------------------------------------------ */

static bool next_permutation(int *v, int n) {
    int i = n - 2;
    while (i >= 0 && v[i] >= v[i + 1]) i--;
    if (i < 0) return false;
    int j = n - 1;
    while (v[j] <= v[i]) j--;
    int t = v[i];
    v[i] = v[j];
    v[j] = t;
    for (int a = i + 1, b = n - 1; a < b; a++, b--) {
        t = v[a];
        v[a] = v[b];
        v[b] = t;
    }
    return true;
}

static uint64_t run_orders(rng *r, const reg_case *c, uint64_t seed) {
    int order[MAX_OPS];
    uint64_t runs = 0;
    for (int i = 0; i < c->n; i++) order[i] = i;
    bool all = c->n <= 5;
    for (int k = 0; all ? k == 0 || next_permutation(order, c->n) : k < 60; k++) {
        if (!all) shuffle(r, order, c->n);
        notes_seen ns;
        pd_model *m = fresh(&ns);
        apply_all(m, c, order, c->n);
        check_model_views(m, &ns, c, seed, "one order");
        pd_model_free(m);
        runs++;
    }
    return runs;
}

static void run_duplicates(rng *r, const reg_case *c, uint64_t seed) {
    for (int k = 0; k < 8; k++) {
        int seq[MAX_OPS * 3], n = 0;
        for (int i = 0; i < c->n; i++) {
            int copies = 1 + (int)rng_below(r, 3);
            while (copies--) seq[n++] = i;
        }
        shuffle(r, seq, n);
        notes_seen ns;
        pd_model *m = fresh(&ns);
        apply_all(m, c, seq, n);
        check_model_views(m, &ns, c, seed, "with duplicates");
        /* Everything once more: nothing changes, so nothing is announced. */
        long before = ns.notes;
        shuffle(r, seq, n);
        apply_all(m, c, seq, n);
        REQUIRE(ns.notes == before, "case seed %" PRIu64 ": applying again announced", seed);
        check_model_views(m, &ns, c, seed, "applied twice");
        pd_model_free(m);
    }
}

typedef struct {
    pd_model *to;
    pd_str origin;
} merge_ctx;

static void merge_op(void *ud, const pd_op *op) {
    merge_ctx *mc = ud;
    REQUIRE(pd_model_apply_op(mc->to, mc->origin, op, NOW) == PD_OK, "merged op refused");
}

/* Merges the state of from into to: every writer's registers, as a state
 * transfer would send them. */
static void merge(const pd_model *from, pd_model *to) {
    for (size_t w = 0; w < sizeof WRITERS / sizeof WRITERS[0]; w++) {
        merge_ctx mc = {to, pd_str_c(WRITERS[w])};
        pd_model_partition_dump(from, mc.origin, merge_op, &mc);
    }
}

static void run_groupings(rng *r, const reg_case *c, uint64_t seed) {
    int group[3][MAX_OPS], n[3] = {0, 0, 0};
    for (int i = 0; i < c->n; i++) {
        int g = (int)rng_below(r, 3);
        group[g][n[g]++] = i;
    }
    notes_seen ns[7];
    pd_model *part[3];
    for (int g = 0; g < 3; g++) {
        part[g] = fresh(&ns[g]);
        apply_all(part[g], c, group[g], n[g]);
    }
    /* (A + B) + C */
    pd_model *ab = fresh(&ns[3]), *left = fresh(&ns[4]);
    merge(part[0], ab);
    merge(part[1], ab);
    merge(ab, left);
    merge(part[2], left);
    /* A + (B + C) */
    pd_model *bc = fresh(&ns[5]), *right = fresh(&ns[6]);
    merge(part[1], bc);
    merge(part[2], bc);
    merge(part[0], right);
    merge(bc, right);
    check_model_views(left, &ns[4], c, seed, "(A+B)+C");
    check_model_views(right, &ns[6], c, seed, "A+(B+C)");
    pd_model *all[] = {part[0], part[1], part[2], ab, left, bc, right};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) pd_model_free(all[i]);
}

static void run_cases(const char *name, uint64_t first, uint64_t count) {
    size_t live = pd_alloc_live_bytes();
    uint64_t orders = 0;
    announce_seed(name, count);
    for (uint64_t i = first; i < first + count; i++) {
        uint64_t seed = case_seed("registers", i);
        rng r = {seed};
        reg_case c;
        make_case(&r, &c);
        orders += run_orders(&r, &c, seed);
        run_duplicates(&r, &c, seed);
        run_groupings(&r, &c, seed);
    }
    cr_expect_eq(pd_alloc_live_bytes(), live, "models leaked");
    cr_expect_gt(orders, count, "more orders than cases were tried");
}

/* 2 x 2000 random cases, each in up to 120 orders, 8 sequences with
 * duplicates and 2 groupings. */
Test(registers, random_cases_first_half) { run_cases("registers/first_half", 0, 2000); }
Test(registers, random_cases_second_half) { run_cases("registers/second_half", 2000, 2000); }

/* ---- fixed cases: the tie-break spelled out ----------------------------------------------------- */

static pd_op chosen_op(const char *writer, uint64_t hlc, pd_chosen ch) {
    return (pd_op){.kind = PD_OP_CHOSEN, .user = pd_str_c("u0"), .chosen = ch, .hlc = hlc,
                   .writer = pd_str_c(writer)};
}

static pd_public public_after(const pd_op *ops, int n) {
    notes_seen ns;
    pd_model *m = fresh(&ns);
    for (int i = 0; i < n; i++) cr_assert_eq(pd_model_apply_op(m, ops[i].writer, &ops[i], NOW), PD_OK);
    pd_view v;
    pd_model_view(m, pd_str_c("u0"), pd_str_c(""), &v);
    pd_model_free(m);
    return v.status;
}

Test(registers, equal_hlc_greater_writer_wins_by_strcmp) {
    /* "n10" > "n1" and "n2" > "n10" by strcmp, whatever the numbers say. */
    pd_op a = chosen_op("n1", 5, PD_CHOSEN_BUSY), b = chosen_op("n10", 5, PD_CHOSEN_AWAY),
          c = chosen_op("n2", 5, PD_CHOSEN_INVISIBLE);
    pd_op ab[] = {a, b}, ba[] = {b, a}, abc[] = {a, c, b}, cba[] = {c, b, a};
    cr_expect_eq(public_after(ab, 2), PD_PUB_AWAY);
    cr_expect_eq(public_after(ba, 2), PD_PUB_AWAY);
    cr_expect_eq(public_after(abc, 3), PD_PUB_OFFLINE);
    cr_expect_eq(public_after(cba, 3), PD_PUB_OFFLINE);
}

Test(registers, higher_hlc_wins_over_greater_writer) {
    pd_op old = chosen_op("zzz", 5, PD_CHOSEN_BUSY), newer = chosen_op("a", 6, PD_CHOSEN_AWAY);
    pd_op x[] = {old, newer}, y[] = {newer, old};
    cr_expect_eq(public_after(x, 2), PD_PUB_AWAY);
    cr_expect_eq(public_after(y, 2), PD_PUB_AWAY);
}

Test(registers, a_lost_custom_write_does_not_clear_the_winner) {
    pd_op win = {.kind = PD_OP_CUSTOM, .user = pd_str_c("u0"), .text = pd_str_c("lunch"),
                 .emoji = pd_str_c(""), .hlc = 9, .writer = pd_str_c("n1")};
    pd_op clear = {.kind = PD_OP_CUSTOM, .user = pd_str_c("u0"), .text = pd_str_c(""),
                   .emoji = pd_str_c(""), .hlc = 9, .writer = pd_str_c("a")};
    notes_seen ns;
    pd_model *m = fresh(&ns);
    cr_assert_eq(pd_model_apply_op(m, win.writer, &win, NOW), PD_OK);
    long notes = ns.notes;
    cr_assert_eq(pd_model_apply_op(m, clear.writer, &clear, NOW), PD_OK);
    pd_view v;
    pd_model_view(m, pd_str_c("u0"), pd_str_c(""), &v);
    cr_expect(pd_str_eqc(v.text, "lunch"), "the older clear lost, text stays");
    cr_expect_eq(ns.notes, notes, "a losing write announces nothing");
    pd_model_free(m);
}

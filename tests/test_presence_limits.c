/* test_presence_limits.c - the model's limits at its local entry point
 * (presence_limits.c): live devices per user and users per node. A refused
 * event returns too_large with a message naming the setting, is counted,
 * and changes nothing (no notification, no op for the peers, same
 * counts); replacements and repeats are never refused; replicated ops are
 * never refused. */
#include "model_fixtures.h"

static const pd_model_cfg LIM = {.idle_timeout_ms = 1000, .offline_delay_ms = 500,
                                 .server_timeout_ms = 3000, .max_devices_per_user = 2,
                                 .max_users = 3};

static int ops;
static void count_op(void *ud, const pd_op *op) {
    (void)ud;
    (void)op;
    ops++;
}

static recorder rec;
static size_t base;
/* check_model() holds for models of local devices only. */
static bool all_local = true;

static pd_model *limited(void) {
    base = pd_alloc_live_bytes();
    pd_model *m = model_new(&LIM, &rec);
    ops = 0;
    pd_model_set_op_hook(m, count_op, NULL);
    return m;
}

/* Applies ev, expects too_large naming `setting`, and that nothing moved. */
static void refused(pd_model *m, pd_event ev, const char *setting) {
    pd_model_stats before = stats(m);
    long notes = rec.total;
    int ops_before = ops;
    pd_apply_result res;
    pd_err err = {0};
    cr_assert_eq(pd_model_apply(m, &ev, 100, &res, &err), PD_ETOOLARGE);
    cr_expect_eq(err.code, PD_ETOOLARGE);
    cr_expect(strstr(err.msg, setting) != NULL, "message '%s' names %s", err.msg, setting);
    pd_model_stats after = stats(m);
    cr_expect_eq(after.devices, before.devices);
    cr_expect_eq(after.users, before.users);
    cr_expect_eq(after.servers, before.servers, "no server left behind");
    cr_expect_eq(after.timers, before.timers);
    cr_expect_eq(rec.total, notes, "a refused event notified");
    cr_expect_eq(ops, ops_before, "a refused event sent an op");
    if (all_local) check_model(m);
}

Test(limits, devices_per_user) {
    pd_model *m = limited();
    apply_ok(m, ev_connect("s1", "c1", "amy"), 10);
    apply_ok(m, ev_connect("s2", "c2", "amy"), 10);
    refused(m, ev_connect("s3", "c3", "amy"), "PRESENCE_MAX_DEVICES_PER_USER");
    refused(m, ev_connect("s1", "c4", "amy"), "PRESENCE_MAX_DEVICES_PER_USER");
    cr_expect_eq(stats(m).refused_devices, 2);
    cr_expect_eq(view_of(m, "amy", "amy").devices, 2);
    /* At the limit: a repeated connect and a replacement under the same
     * conn (other label) are fine; so is another user. */
    apply_ok(m, ev_connect("s1", "c1", "amy"), 20);
    pd_event relabel = ev_connect("s1", "c1", "amy");
    relabel.device = PD_STR_LIT("mobile");
    apply_ok(m, relabel, 20);
    cr_expect_eq(view_of(m, "amy", "amy").devices, 2);
    apply_ok(m, ev_connect("s3", "c3", "bo"), 20);
    /* A device leaves: room for one again. */
    apply_ok(m, ev_conn(PD_EV_DISCONNECT, "s2", "c2"), 30);
    apply_ok(m, ev_connect("s3", "c5", "amy"), 30);
    cr_expect_eq(view_of(m, "amy", "amy").devices, 2);
    cr_expect_eq(stats(m).refused_devices, 2);
    model_free(m, &rec, base);
}

Test(limits, devices_of_other_nodes_count) {
    pd_model *m = limited();
    all_local = false;
    pd_op add = {.kind = PD_OP_ADD, .server = S("r1"), .conn = S("rc1"), .user = S("amy"),
                 .label = S("web"), .state = PD_DEV_ACTIVE, .connected_at = 5,
                 .last_active = 5, .hlc = 7};
    cr_assert_eq(pd_model_apply_op(m, S("node-b"), &add, 5), PD_OK);
    apply_ok(m, ev_connect("s1", "c1", "amy"), 10);
    refused(m, ev_connect("s1", "c2", "amy"), "PRESENCE_MAX_DEVICES_PER_USER");
    model_free(m, &rec, base);
}

Test(limits, replicated_ops_are_never_refused) {
    pd_model *m = limited();
    all_local = false;
    char conn[16], user[16];
    for (int i = 0; i < 5; i++) {
        snprintf(conn, sizeof conn, "rc%d", i);
        snprintf(user, sizeof user, "u%d", i % 4);
        pd_op add = {.kind = PD_OP_ADD, .server = S("r1"), .conn = S(conn), .user = S(user),
                     .label = S("web"), .state = PD_DEV_ACTIVE, .connected_at = 5,
                     .last_active = 5, .hlc = 7};
        cr_assert_eq(pd_model_apply_op(m, S("node-b"), &add, 5), PD_OK, "op %d", i);
    }
    pd_op add = {.kind = PD_OP_ADD, .server = S("r1"), .conn = S("rc9"), .user = S("u0"),
                 .label = S("web"), .state = PD_DEV_ACTIVE, .connected_at = 5,
                 .last_active = 5, .hlc = 7};
    cr_assert_eq(pd_model_apply_op(m, S("node-b"), &add, 5), PD_OK);
    cr_expect_eq(stats(m).users, 4, "above max_users through replication");
    cr_expect_eq(view_of(m, "u0", "u0").devices, 3, "above max_devices through replication");
    cr_expect_eq(stats(m).refused_devices + stats(m).refused_users, 0);
    /* Locally, the user above the limit gets nothing more, and no new user. */
    refused(m, ev_connect("s1", "c1", "u0"), "PRESENCE_MAX_DEVICES_PER_USER");
    refused(m, ev_connect("s1", "c1", "zed"), "PRESENCE_MAX_USERS_PER_NODE");
    model_free(m, &rec, base);
}

/* Users count while they have a live device: three here. */
Test(limits, users_per_node) {
    pd_model *m = limited();
    apply_ok(m, ev_connect("s1", "c1", "a"), 10);
    apply_ok(m, ev_connect("s1", "c2", "b"), 10);
    apply_ok(m, ev_connect("s1", "c3", "c"), 10);
    /* status and custom give nobody a device: never refused. */
    apply_ok(m, ev_status("d", PD_CHOSEN_BUSY), 10);
    apply_ok(m, ev_custom("e", "hi", NULL, 0), 10);
    refused(m, ev_connect("s1", "c4", "d"), "PRESENCE_MAX_USERS_PER_NODE");
    cr_expect_eq(stats(m).refused_users, 1);
    /* A live user's second device is no new user. */
    apply_ok(m, ev_connect("s1", "c5", "a"), 20);
    /* Once a user has no device left, another may come; the one that left
     * counts again when it comes back. */
    apply_ok(m, ev_conn(PD_EV_DISCONNECT, "s1", "c2"), 20);
    apply_ok(m, ev_connect("s1", "c4", "d"), 20);
    refused(m, ev_connect("s1", "c6", "b"), "PRESENCE_MAX_USERS_PER_NODE");
    cr_expect_eq(stats(m).refused_users, 2);
    model_free(m, &rec, base);
}

/* A sync reports the connections a server has: never refused whole for a
 * limit (that would leave every user of the server wrong), nor for the
 * user limit at all; an entry that would push its user over the device
 * limit is refused alone and listed (pd_model_refusals), the rest applies.
 * The limits still hold for the connects that follow. */
Test(limits, sync_refuses_only_the_entries_over_the_device_limit) {
    pd_model *m = limited();
    msgpack_sbuffer sb1, sb2;
    pd_apply_result res;
    pd_err err = {0};
    const pd_refusal *r;
    apply_ok(m, ev_connect("s2", "k1", "amy"), 10);
    pd_event ev = ev_sync(&sb1, "s1", "c1:amy c2:amy c3:bo c4:cy c5:dee");
    cr_assert_eq(pd_model_apply(m, &ev, 20, &res, &err), PD_OK);
    cr_expect_eq(res, PD_PARTIAL);
    cr_assert_eq(pd_model_refusals(m, &r), 1);
    cr_expect(pd_str_eqc(r[0].conn, "c2"), "refused %.*s", (int)r[0].conn.n, r[0].conn.p);
    cr_expect_eq(r[0].code, PD_ETOOLARGE);
    cr_expect(strstr(r[0].message, "PRESENCE_MAX_DEVICES_PER_USER") != NULL, "%s", r[0].message);
    cr_expect_eq(view_of(m, "amy", "amy").devices, 2, "k1 and c1, not c2");
    cr_expect_eq(view_of(m, "dee", "dee").devices, 1, "the user limit (3) does not refuse a sync");
    cr_expect_eq(stats(m).refused_devices, 1);
    cr_expect_eq(stats(m).refused_users, 0);
    refused(m, ev_connect("s1", "c6", "amy"), "PRESENCE_MAX_DEVICES_PER_USER");
    refused(m, ev_connect("s1", "c7", "eve"), "PRESENCE_MAX_USERS_PER_NODE");
    /* A later sync within the limits is whole again. */
    apply_ok(m, ev_sync(&sb2, "s1", "c1:amy c3:bo"), 30);
    cr_expect_eq(pd_model_refusals(m, &r), 0);
    cr_expect_eq(view_of(m, "amy", "amy").devices, 2);
    msgpack_sbuffer_destroy(&sb1);
    msgpack_sbuffer_destroy(&sb2);
    model_free(m, &rec, base);
}

Test(limits, no_limits_when_zero) {
    base = pd_alloc_live_bytes();
    pd_model *m = model_new(&CFG, &rec);
    char conn[16], user[16];
    for (int i = 0; i < 300; i++) {
        snprintf(conn, sizeof conn, "c%d", i);
        snprintf(user, sizeof user, "u%d", i % 100);
        apply_ok(m, ev_connect("s1", conn, i < 150 ? "one" : user), 10);
    }
    cr_expect_eq(view_of(m, "one", "one").devices, 150);
    model_free(m, &rec, base);
}

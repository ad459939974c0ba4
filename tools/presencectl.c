/* presencectl.c - a command-line client of the presence contract: queries
 * (get, devices, online, cluster), a watcher of notifications, and events
 * sent by hand (connect, disconnect, activity, idle, status, custom).
 *
 * Output is a human-readable table by default and MessagePack decoded to
 * JSON with --json. Exit codes: 0 ok, 1 the service refused or did not
 * answer, 2 bad usage, 3 NATS unreachable. */
#include <inttypes.h>
#include <nats/nats.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "base/alloc.h"
#include "base/clock.h"
#include "base/config.h"
#include "base/version.h"
#include "config_files.h"
#include "cli_file.h"
#include "ctl_diff.h"
#include "ctl_json.h"
#include "ctl_opts.h"
#include "natsauth.h"
#include "wire/codec.h"

#define EXIT_REFUSED 1
#define EXIT_USAGE 2
#define EXIT_NATS 3

typedef struct {
    const char *prefix;
    const char *node;     /* target node of events (--node or PRESENCE_NODE_ID) */
    bool node_flag;       /* --node given: queries go to that node only */
    bool diff;            /* cluster --diff */
    const char *server;   /* socket-server id for connect/disconnect/... */
    const char *viewer;
    bool json;
    int64_t timeout_ms;
    int64_t limit;
    int64_t count;        /* watch: stop after this many */
    const char *emoji;
    int64_t expires_in_ms;
    pd_config auth;       /* nats_url and the PRESENCE_NATS_* credentials and TLS files */
    natsConnection *nc;
} ctl;

/* Prints an error once: {"ok":false,"code":...,"message":...} on stdout
 * with --json, "presencectl: message" on stderr otherwise. Returns rc. */
__attribute__((format(printf, 4, 5)))
static int fail(const ctl *c, int rc, const char *code, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!c->json) {
        fprintf(stderr, "presencectl: %s\n", msg);
        return rc;
    }
    fputs("{\"ok\":false,\"code\":", stdout);
    ctl_json_cstr(stdout, code);
    fputs(",\"message\":", stdout);
    ctl_json_cstr(stdout, msg);
    fputs("}\n", stdout);
    return rc;
}

/* Parses "500ms", "30s", "10m", "2h" or plain milliseconds. */
static bool parse_duration(const char *s, int64_t *out) {
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || v < 0) return false;
    int64_t mul = 1;
    if (strcmp(end, "s") == 0) mul = 1000;
    else if (strcmp(end, "m") == 0) mul = 60000;
    else if (strcmp(end, "h") == 0) mul = 3600000;
    else if (*end != '\0' && strcmp(end, "ms") != 0) return false;
    *out = v * mul;
    return true;
}

static int connect_nats(ctl *c) {
    natsOptions *o = NULL;
    char urlbuf[1024];
    const char *urls[32];
    size_t nurls = pd_url_split(c->auth.nats_url, urlbuf, sizeof urlbuf, urls, 32);
    if (nurls == 0) return fail(c, EXIT_USAGE, "usage", "--server: no URL in '%s'",
                                c->auth.nats_url);
    natsOptions_Create(&o);
    natsOptions_SetServers(o, urls, (int)nurls);
    natsOptions_SetSendAsap(o, true);
    natsOptions_SetTimeout(o, c->timeout_ms);
    natsOptions_SetName(o, "presencectl");
    char err[512];
    if (pd_natsauth_apply(o, &c->auth, err, sizeof err) != PD_OK) {
        natsOptions_Destroy(o);
        return fail(c, EXIT_USAGE, "usage", "%s", err);
    }
    natsStatus s = natsConnection_Connect(&c->nc, o);
    natsOptions_Destroy(o);
    if (s != NATS_OK)
        return fail(c, EXIT_NATS, "nats_unreachable", "cannot reach NATS at %s: %s",
                    c->auth.nats_url, natsStatus_GetText(s));
    return 0;
}

/* Sends a request; on success *out holds the reply (caller destroys). */
static int request(ctl *c, const char *suffix, const void *data, size_t len, natsMsg **out) {
    char subj[300];
    snprintf(subj, sizeof subj, "%s.%s", c->prefix, suffix);
    natsStatus s = natsConnection_Request(out, c->nc, subj, data, (int)len, c->timeout_ms);
    if (s == NATS_NO_RESPONDERS || s == NATS_TIMEOUT)
        return fail(c, EXIT_REFUSED, "no_answer", "no node answered on %s (%s)", subj,
                    s == NATS_TIMEOUT ? "timeout" : "no responders");
    if (s != NATS_OK)
        return fail(c, EXIT_NATS, "nats_error", "request on %s failed: %s", subj,
                    natsStatus_GetText(s));
    return 0;
}

/* An error reply ({"ok": false, ...}) becomes a message and exit 1. */
static int check_error_reply(const ctl *c, natsMsg *m) {
    pd_reply rep;
    if (pd_reply_decode(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), &rep) == PD_OK &&
        !rep.ok)
        return fail(c, EXIT_REFUSED, rep.code, "refused: %s: %s", rep.code, rep.message);
    return 0;
}

static int send_event(ctl *c, const pd_event *ev) {
    msgpack_sbuffer sb;
    natsMsg *m = NULL;
    char suffix[200];
    if (c->node == NULL)
        return fail(c, EXIT_USAGE, "usage", "events need a node: --node ID or PRESENCE_NODE_ID");
    msgpack_sbuffer_init(&sb);
    pd_event_encode(&sb, ev, NULL, 0);
    snprintf(suffix, sizeof suffix, "events.%s", c->node);
    int rc = request(c, suffix, sb.data, sb.size, &m);
    msgpack_sbuffer_destroy(&sb);
    if (rc) return rc;
    rc = check_error_reply(c, m);
    if (rc == 0) printf(c->json ? "{\"ok\":true}\n" : "ok\n");
    natsMsg_Destroy(m);
    return rc;
}

static bool valid_id(const ctl *c, const char *what, const char *s) {
    if (pd_id_valid(s, strlen(s))) return true;
    fail(c, EXIT_USAGE, "usage", "bad %s id '%.200s' (1-128 bytes of [A-Za-z0-9._:@=+-], "
         "no leading, trailing or doubled '.')", what, s);
    return false;
}

static int cmd_event(ctl *c, const char *cmd, int argc, char **argv) {
    pd_event ev = {0};
    ev.server = pd_str_c(c->server);
    ev.has_ts = true;
    ev.ts = (int64_t)pd_now_ms();
    if (strcmp(cmd, "connect") == 0) {
        if (argc < 2 || argc > 3) return EXIT_USAGE;
        ev.type = PD_EV_CONNECT;
        ev.conn = pd_str_c(argv[0]);
        ev.user = pd_str_c(argv[1]);
        ev.device = pd_str_c(argc == 3 ? argv[2] : "cli");
        if (!valid_id(c, "conn", argv[0]) || !valid_id(c, "user", argv[1])) return EXIT_USAGE;
    } else if (strcmp(cmd, "status") == 0) {
        if (argc != 2) return EXIT_USAGE;
        ev.type = PD_EV_STATUS;
        ev.user = pd_str_c(argv[0]);
        if (!valid_id(c, "user", argv[0])) return EXIT_USAGE;
        if (!pd_chosen_parse(pd_str_c(argv[1]), &ev.status))
            return fail(c, EXIT_USAGE, "usage", "status: '%.200s' is not auto, away, busy or "
                        "invisible", argv[1]);
    } else if (strcmp(cmd, "custom") == 0) {
        if (argc != 2) return EXIT_USAGE;
        ev.type = PD_EV_CUSTOM;
        ev.user = pd_str_c(argv[0]);
        ev.text = pd_str_c(argv[1]);
        if (c->emoji) ev.emoji = pd_str_c(c->emoji);
        if (c->expires_in_ms) ev.expires_at = ev.ts + c->expires_in_ms;
        if (!valid_id(c, "user", argv[0])) return EXIT_USAGE;
    } else {
        if (argc != 1) return EXIT_USAGE;
        ev.type = strcmp(cmd, "disconnect") == 0 ? PD_EV_DISCONNECT
                : strcmp(cmd, "activity") == 0 ? PD_EV_ACTIVITY : PD_EV_IDLE;
        ev.conn = pd_str_c(argv[0]);
        if (!valid_id(c, "conn", argv[0])) return EXIT_USAGE;
    }
    return send_event(c, &ev);
}

static void fmt_time(int64_t ms, char *buf, size_t cap) {
    if (ms <= 0) {
        snprintf(buf, cap, "-");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The line under a get or devices table: how fresh the answer is
 * (docs/protocol.md section 4, "Freshness"). */
static void print_fresh(const pd_reply_fresh *f, const char *stale) {
    char at[32];
    int64_t now = (int64_t)pd_now_ms();
    if (f->as_of == 0) return; /* a node older than issue 14 */
    fmt_time((int64_t)f->as_of, at, sizeof at);
    printf("as of %s (%lld ms ago)%s%s\n", at,
           (long long)(now > (int64_t)f->as_of ? now - (int64_t)f->as_of : 0),
           stale ? stale : "", stale ? ": last known, from a node not heard from lately" : "");
}

static int query(ctl *c, pd_query_type type, const pd_query *q, const pd_str *users, uint32_t n,
                 natsMsg **out) {
    static const char *const names[] = {"query.get", "query.devices", "query.online",
                                        "query.cluster"};
    msgpack_sbuffer sb;
    char subj[200];
    /* --node: that node's own subject, outside the queue group. */
    if (c->node_flag) snprintf(subj, sizeof subj, "%s.%s", names[type], c->node);
    else snprintf(subj, sizeof subj, "%s", names[type]);
    msgpack_sbuffer_init(&sb);
    pd_query_encode(&sb, q, users, n);
    int rc = request(c, subj, sb.data, sb.size, out);
    msgpack_sbuffer_destroy(&sb);
    if (rc == 0 && (rc = check_error_reply(c, *out)) != 0) natsMsg_Destroy(*out);
    return rc;
}

static int print_json_reply(const ctl *c, natsMsg *m) {
    int rc = ctl_json_print(stdout, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    natsMsg_Destroy(m);
    return rc ? fail(c, EXIT_REFUSED, "bad_reply", "the reply is not valid MessagePack") : 0;
}

static int cmd_get(ctl *c, int argc, char **argv) {
    const char *viewer = c->viewer;
    pd_str users[PD_QUERY_USERS_MAX];
    pd_query q = {.type = PD_Q_GET};
    natsMsg *m;
    if (argc < 1 || argc > PD_QUERY_USERS_MAX) return EXIT_USAGE;
    for (int i = 0; i < argc; i++) {
        if (!valid_id(c, "user", argv[i])) return EXIT_USAGE;
        users[i] = pd_str_c(argv[i]);
    }
    if (viewer) {
        if (!valid_id(c, "viewer", viewer)) return EXIT_USAGE;
        q.viewer = pd_str_c(viewer);
    }
    int rc = query(c, PD_Q_GET, &q, users, (uint32_t)argc, &m);
    if (rc) return rc;
    if (c->json) return print_json_reply(c, m);
    mp_reader r;
    uint32_t k = 0;
    pd_err err;
    pd_reply_fresh f = {0, false};
    bool any_stale = false;
    printf("%-24s %-9s %-7s %-20s %-26s %s\n", "USER", "STATUS", "DEVICES", "LAST_SEEN",
           "CUSTOM", "EXPIRES");
    if (pd_reply_top_decode(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), "users", &r,
                            &k, NULL, &f, &err) == PD_OK) {
        for (uint32_t i = 0; i < k; i++) {
            pd_view v;
            char seen[32], exp[32], custom[400], status[16];
            if (pd_view_decode(&r, &v, &err) != PD_OK) break;
            fmt_time(v.last_seen, seen, sizeof seen);
            fmt_time(v.expires_at, exp, sizeof exp);
            snprintf(custom, sizeof custom, "%.*s%s%.*s", (int)v.emoji.n, v.emoji.p,
                     v.emoji.n ? " " : "", (int)v.text.n, v.text.p);
            /* stale: the last known state, marked so a reader does not take it as sure */
            snprintf(status, sizeof status, "%s%s", pd_public_name(v.status), v.stale ? "*" : "");
            any_stale |= v.stale;
            printf("%-24.*s %-9s %-7u %-20s %-26s %s\n", (int)v.user.n, v.user.p, status,
                   v.devices, seen, custom[0] ? custom : "-", exp);
        }
        print_fresh(&f, any_stale ? "; * stale" : NULL);
    }
    natsMsg_Destroy(m);
    return 0;
}

static int cmd_devices(ctl *c, int argc, char **argv) {
    pd_query q = {.type = PD_Q_DEVICES};
    natsMsg *m;
    if (argc != 1) return EXIT_USAGE;
    if (!valid_id(c, "user", argv[0])) return EXIT_USAGE;
    q.user = pd_str_c(argv[0]);
    int rc = query(c, PD_Q_DEVICES, &q, NULL, 0, &m);
    if (rc) return rc;
    if (c->json) return print_json_reply(c, m);
    mp_reader r;
    uint32_t k = 0;
    pd_err err;
    pd_reply_fresh f = {0, false};
    printf("%-20s %-16s %-12s %-10s %-7s %-20s %s\n", "CONN", "SERVER", "NODE", "DEVICE",
           "STATE", "CONNECTED_AT", "LAST_ACTIVE");
    if (pd_reply_top_decode(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), "devices", &r,
                            &k, NULL, &f, &err) == PD_OK) {
        for (uint32_t i = 0; i < k; i++) {
            pd_device_view d;
            char ca[32], la[32];
            if (pd_device_view_decode(&r, &d, &err) != PD_OK) break;
            fmt_time(d.connected_at, ca, sizeof ca);
            fmt_time(d.last_active, la, sizeof la);
            printf("%-20.*s %-16.*s %-12.*s %-10.*s %-7s %-20s %s\n", (int)d.conn.n, d.conn.p,
                   (int)d.server.n, d.server.p, (int)d.node.n, d.node.p, (int)d.device.n,
                   d.device.p, pd_devstate_name(d.state), ca, la);
        }
        print_fresh(&f, f.stale ? "; stale" : NULL);
    }
    natsMsg_Destroy(m);
    return 0;
}

/* A growing text buffer: the users of every page, as JSON strings. */
typedef struct {
    char *p;
    size_t n, cap;
} ctl_buf;

static bool buf_add(ctl_buf *b, pd_str s) {
    size_t need = b->n + 6 * (size_t)s.n + 4;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < need) cap *= 2;
        char *p = pd_realloc(b->p, cap);
        if (p == NULL) return false;
        b->p = p;
        b->cap = cap;
    }
    if (b->n) b->p[b->n++] = ',';
    b->n += ctl_json_escape(b->p + b->n, b->cap - b->n, s);
    return true;
}

/* Every page, then one document ({"users":[...]}) with --json. */
static int cmd_online(ctl *c) {
    char cursor[PD_CURSOR_MAX + 1] = "";
    int64_t total = 0;
    ctl_buf all = {0};
    int rc = 0;
    do {
        pd_query q = {.type = PD_Q_ONLINE, .limit = (uint32_t)c->limit, .cursor = pd_str_c(cursor)};
        natsMsg *m;
        if ((rc = query(c, PD_Q_ONLINE, &q, NULL, 0, &m)) != 0) break;
        mp_reader r;
        uint32_t n, k = 0;
        pd_str key, s;
        cursor[0] = '\0';
        mpr_init(&r, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
        if (mpr_map(&r, &n) && pd_read_key(&r, &key) && mpr_array(&r, &k)) {
            for (uint32_t i = 0; i < k && mpr_str(&r, &s); i++, total++) {
                if (!c->json) printf("%.*s\n", (int)s.n, s.p);
                else if (!buf_add(&all, s)) rc = fail(c, EXIT_REFUSED, "internal", "out of memory");
            }
            if (n == 2 && pd_read_key(&r, &key) && mpr_str(&r, &s) && s.n <= PD_CURSOR_MAX) {
                memcpy(cursor, s.p, s.n);
                cursor[s.n] = '\0';
            }
        }
        natsMsg_Destroy(m);
    } while (cursor[0] && rc == 0);
    if (rc == 0 && c->json)
        printf("{\"users\":[%.*s],\"count\":%" PRId64 "}\n", (int)all.n, all.p ? all.p : "",
               total);
    else if (rc == 0)
        fprintf(stderr, "%" PRId64 " online\n", total);
    pd_free(all.p);
    return rc;
}

static int cmd_cluster(ctl *c) {
    pd_query q = {.type = PD_Q_CLUSTER};
    natsMsg *m;
    if (c->diff) return ctl_cluster_diff(c->nc, c->prefix, c->timeout_ms, c->json, stdout);
    int rc = query(c, PD_Q_CLUSTER, &q, NULL, 0, &m);
    if (rc) return rc;
    if (c->json) return print_json_reply(c, m);
    rc = ctl_print_cluster(stdout, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    natsMsg_Destroy(m);
    return rc ? EXIT_REFUSED : 0;
}

static int cmd_watch(ctl *c, int argc, char **argv) {
    char subj[300];
    natsSubscription *sub = NULL;
    const char *who = argc > 0 ? argv[0] : "all";
    if (argc > 1) return EXIT_USAGE;
    if (strcmp(who, "all") == 0) snprintf(subj, sizeof subj, "%s.user.>", c->prefix);
    else if (valid_id(c, "user", who)) snprintf(subj, sizeof subj, "%s.user.%s", c->prefix, who);
    else return EXIT_USAGE;
    if (natsConnection_SubscribeSync(&sub, c->nc, subj) != NATS_OK)
        return fail(c, EXIT_NATS, "nats_error", "cannot subscribe to %s", subj);
    natsConnection_Flush(c->nc);
    fprintf(stderr, "watching %s\n", subj);
    for (int64_t seen = 0; c->count == 0 || seen < c->count;) {
        natsMsg *m = NULL;
        natsStatus s = natsSubscription_NextMsg(&m, sub, 1000);
        if (s == NATS_TIMEOUT) continue;
        if (s != NATS_OK) break;
        seen++;
        if (c->json) {
            ctl_json_print(stdout, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
        } else {
            pd_view v;
            pd_err err;
            char ts[32], seen_s[32];
            if (pd_notification_decode(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), &v,
                                       &err) == PD_OK) {
                fmt_time(v.ts, ts, sizeof ts);
                fmt_time(v.last_seen, seen_s, sizeof seen_s);
                printf("%s %-24.*s %-9s custom=\"%.*s%s%.*s\" last_seen=%s\n", ts,
                       (int)v.user.n, v.user.p, pd_public_name(v.status), (int)v.emoji.n,
                       v.emoji.p, v.emoji.n && v.text.n ? " " : "", (int)v.text.n, v.text.p,
                       seen_s);
            }
        }
        fflush(stdout);
        natsMsg_Destroy(m);
    }
    natsSubscription_Destroy(sub);
    return 0;
}

/* A PRESENCE_NATS_* setting given by an option: checked as presenced
 * checks it, the message naming the option. */
static int set_setting(ctl *c, const char *opt, const char *env, const char *v) {
    char err[512];
    if (pd_config_set(&c->auth, env, v, err, sizeof err) == PD_OK) return 0;
    size_t n = strlen(env);
    const char *why = strncmp(err, env, n) == 0 && err[n] == ':' ? err + n + 1 : err;
    return fail(c, EXIT_USAGE, "usage", "--%s:%s", opt, why);
}

static int set_number(const ctl *c, const char *opt, const char *v, int64_t lo, int64_t hi,
                      const char *why_hi, int64_t *out) {
    char *end;
    long long n = strtoll(v, &end, 10);
    if (end == v || *end != '\0')
        return fail(c, EXIT_USAGE, "usage", "--%s: '%.200s' is not a whole number", opt, v);
    if (n < lo) return fail(c, EXIT_USAGE, "usage", "--%s: %lld is below the minimum %" PRId64,
                            opt, n, lo);
    if (n > hi)
        return fail(c, EXIT_USAGE, "usage", "--%s: %lld is above the maximum %" PRId64 "%s",
                    opt, n, hi, why_hi);
    *out = n;
    return 0;
}

/* One option of the command line (its row o, its value v). */
static int apply_opt(ctl *c, const pd_cli_opt *o, const char *v) {
    const char *n = o->name;
    if (strcmp(n, "server") == 0) return set_setting(c, n, "PRESENCE_NATS_URL", v);
    if (o->env != NULL && strncmp(o->env, "PRESENCE_NATS_", 14) == 0)
        return set_setting(c, n, o->env, v);
    if (strcmp(n, "prefix") == 0) c->prefix = v;
    else if (strcmp(n, "node") == 0) c->node = v, c->node_flag = true;
    else if (strcmp(n, "diff") == 0) c->diff = true;
    else if (strcmp(n, "as") == 0) c->server = v;
    else if (strcmp(n, "viewer") == 0) c->viewer = v;
    else if (strcmp(n, "emoji") == 0) c->emoji = v;
    else if (strcmp(n, "limit") == 0)
        return set_number(c, n, v, 1, PD_QUERY_LIMIT_MAX, " (the largest page of online)",
                          &c->limit);
    else if (strcmp(n, "count") == 0)
        return set_number(c, n, v, 0, INT64_MAX, "", &c->count);
    else if (strcmp(n, "expires") == 0 || strcmp(n, "timeout") == 0) {
        int64_t *dst = n[0] == 'e' ? &c->expires_in_ms : &c->timeout_ms;
        if (!parse_duration(v, dst) || *dst <= 0 || *dst > INT32_MAX)
            return fail(c, EXIT_USAGE, "usage", "--%s: '%.200s' is not a duration above 0 "
                        "(500ms, 30s, 10m, 2h; at most 24 days)", n, v);
    }
    return 0;
}

/* Everything after the command line is read: ids, credentials, files. */
static int check_settings(ctl *c) {
    char err[512];
    if (!valid_id(c, "prefix", c->prefix) || !valid_id(c, "server (--as)", c->server) ||
        (c->node != NULL && !valid_id(c, "node", c->node)))
        return EXIT_USAGE;
    if (pd_config_check_auth(&c->auth, err, sizeof err) != PD_OK ||
        pd_config_check_files(&c->auth, 0, NULL, err, sizeof err) != PD_OK)
        return fail(c, EXIT_USAGE, "usage", "%s", err);
    return 0;
}

static int dispatch(ctl *c, int cmd, int argc, char **argv) {
    switch (cmd) {
    case CTL_GET: return cmd_get(c, argc, argv);
    case CTL_DEVICES: return cmd_devices(c, argc, argv);
    case CTL_ONLINE: return cmd_online(c);
    case CTL_CLUSTER: return cmd_cluster(c);
    case CTL_WATCH: return cmd_watch(c, argc, argv);
    default: return cmd_event(c, ctl_cli.cmds[cmd].name, argc, argv);
    }
}

/* --json anywhere before "--": known before the parser's first error. */
static bool wants_json(int argc, char **argv) {
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--json") == 0) return true;
    return false;
}

/* Reads the command line into c; *cmd is the command's row. Returns 0, -1
 * after printing help or the version, or an exit code after an error. */
static int parse(ctl *c, int argc, char **argv, pd_cli_args *a, int *cmd) {
    char err[512];
    pd_status ps = pd_cli_parse(&ctl_cli, argc, argv, a, err, sizeof err);
    int nops = argc - a->first_operand;
    char **ops = argv + a->first_operand;
    const pd_cli_cmd *cc = nops > 0 ? pd_cli_find_cmd(&ctl_cli, ops[0]) : NULL;
    if (pd_cli_has(&ctl_cli, a, "help")) {
        pd_cli_usage(PD_CLI_FILE(stdout), &ctl_cli, cc);
        return -1;
    }
    if (pd_cli_has(&ctl_cli, a, "version")) {
        if (c->json) printf("{\"program\":\"presencectl\",\"version\":\"%s\"}\n", PD_VERSION);
        else printf("presencectl %s\n", PD_VERSION);
        return -1;
    }
    if (ps != PD_OK) return fail(c, EXIT_USAGE, "usage", "%s", err);
    if (nops == 0) return fail(c, EXIT_USAGE, "usage", "no command given (see --help)");
    if (cc == NULL)
        return fail(c, EXIT_USAGE, "usage", "unknown command '%.200s' (see --help)", ops[0]);
    if (nops - 1 < cc->min_args || nops - 1 > cc->max_args) {
        char want[48];
        if (cc->min_args == cc->max_args)
            snprintf(want, sizeof want, "%d argument%s", cc->min_args, cc->min_args == 1 ? "" : "s");
        else
            snprintf(want, sizeof want, "%d to %d arguments", cc->min_args, cc->max_args);
        return fail(c, EXIT_USAGE, "usage", "%s takes %s%s%s%s, not %d (see presencectl %s "
                    "--help)", cc->name, want, cc->args[0] ? " (" : "", cc->args,
                    cc->args[0] ? ")" : "", nops - 1, cc->name);
    }
    if (pd_cli_check_scope(&ctl_cli, a, cc, err, sizeof err) != PD_OK)
        return fail(c, EXIT_USAGE, "usage", "%s", err);
    for (size_t i = 0; i < a->nhits; i++) {
        int rc = apply_opt(c, &ctl_cli.opts[a->hits[i].opt], a->hits[i].val);
        if (rc) return rc;
    }
    *cmd = (int)(cc - ctl_cli.cmds);
    return check_settings(c);
}

int main(int argc, char **argv) {
    const char *prefix = getenv("PRESENCE_SUBJECT_PREFIX");
    ctl c = {
        .prefix = prefix && *prefix ? prefix : "presence",
        .node = getenv("PRESENCE_NODE_ID"),
        .server = "presencectl",
        .json = wants_json(argc, argv),
        .timeout_ms = 2000,
        .limit = 0, /* online: the node's largest page unless --limit */
    };
    char err[512];
    int cmd = -1, rc;
    pd_cli_args a = {.hits = pd_calloc((size_t)argc + 1, sizeof *a.hits)};
    if (a.hits == NULL) return fail(&c, EXIT_USAGE, "internal", "out of memory");
    if (c.node != NULL && c.node[0] == '\0') c.node = NULL;
    if (pd_config_load_env_prefix(&c.auth, "PRESENCE_NATS_", NULL, err, sizeof err) != PD_OK)
        rc = fail(&c, EXIT_USAGE, "usage", "%s", err);
    else
        rc = parse(&c, argc, argv, &a, &cmd);
    if (rc == 0 && (rc = connect_nats(&c)) == 0) {
        int first = a.first_operand + 1;
        rc = dispatch(&c, cmd, argc - first, argv + first);
    }
    pd_free(a.hits);
    natsConnection_Destroy(c.nc);
    /* Waits for nats.c's own threads: with nats_Close() one of them could
     * still be releasing the library while exit ran the global
     * destructors (seen once in CI, ASan build: a crash at exit, whose
     * report then deadlocked against the leak check). */
    nats_CloseAndWait(2000);
    return rc < 0 ? 0 : rc;
}

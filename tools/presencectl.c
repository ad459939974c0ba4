/* presencectl.c - a command-line client of the presence contract: queries
 * (get, devices, online, cluster), a watcher of notifications, and events
 * sent by hand (connect, disconnect, activity, idle, status, custom).
 *
 * Output is a human-readable table by default and MessagePack decoded to
 * JSON with --json. Exit codes: 0 ok, 1 the service refused or did not
 * answer, 2 bad usage, 3 NATS unreachable. */
#include <inttypes.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "base/clock.h"
#include "wire/codec.h"
#include "base/config.h"
#include "ctl_diff.h"
#include "ctl_json.h"
#include "natsauth.h"

#define EXIT_REFUSED 1
#define EXIT_USAGE 2
#define EXIT_NATS 3

typedef struct {
    const char *nats_url;
    const char *prefix;
    const char *node;     /* target node of events (--node or PRESENCE_NODE_ID) */
    bool node_flag;       /* --node given: queries go to that node only */
    bool diff;            /* cluster --diff */
    const char *server;   /* socket-server id for connect/disconnect/... */
    bool json;
    int64_t timeout_ms;
    int64_t limit;
    int64_t count;        /* watch: stop after this many */
    const char *emoji;
    int64_t expires_in_ms;
    pd_config auth;       /* the PRESENCE_NATS_* credentials and TLS files */
    natsConnection *nc;
} ctl;

static void usage(FILE *out) {
    fprintf(out,
        "usage: presencectl [options] COMMAND [ARGS]\n"
        "\n"
        "queries (answered by any node; with --node ID by that node only):\n"
        "  get USER...                 public presence of users (--viewer USER for a self view)\n"
        "  devices USER                a user's live devices\n"
        "  online [--limit N]          users not offline, all pages\n"
        "  cluster                     the nodes a node knows\n"
        "  cluster --diff              every node's answers compared: a digest per node, then\n"
        "                              the users that differ (exit 1 when the nodes differ)\n"
        "  watch [USER|all]            print notifications as they come (--count N to stop)\n"
        "events (sent to --node, as socket server --as):\n"
        "  connect CONN USER [DEVICE]  a new connection (device defaults to 'cli')\n"
        "  disconnect CONN | activity CONN | idle CONN\n"
        "  status USER auto|away|busy|invisible\n"
        "  custom USER TEXT [--emoji E] [--expires 10m]   TEXT \"\" clears\n"
        "\n"
        "options:\n"
        "  --server URL     NATS server(s) (PRESENCE_NATS_URL, default nats://127.0.0.1:4222)\n"
        "  --prefix P       subject prefix (PRESENCE_SUBJECT_PREFIX, default presence)\n"
        "  --node ID        node that receives events (PRESENCE_NODE_ID), and that alone\n"
        "                   answers the queries (P.query.<kind>.<node>) when given here\n"
        "  --as SERVER      socket-server id of events (default presencectl)\n"
        "  --json           machine-readable output\n"
        "  --timeout MS     how long to wait for a reply (default 2000)\n"
        "\n"
        "NATS credentials and TLS (the node's settings; secrets only from the environment):\n"
        "  --user NAME      PRESENCE_NATS_USER, with PRESENCE_NATS_PASSWORD in the environment\n"
        "  --creds FILE     PRESENCE_NATS_CREDS_FILE: user JWT and NKey seed\n"
        "  --nkey FILE      PRESENCE_NATS_NKEY_SEED_FILE: a user NKey seed\n"
        "  --tls-ca FILE    PRESENCE_NATS_TLS_CA: CA that signed the server's certificate\n"
        "  --tls-cert FILE  PRESENCE_NATS_TLS_CERT, --tls-key FILE PRESENCE_NATS_TLS_KEY\n"
        "  (PRESENCE_NATS_TOKEN: a token instead)\n");
}

static const char *env_or(const char *name, const char *dflt) {
    const char *v = getenv(name);
    return v && *v ? v : dflt;
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
    size_t nurls = pd_url_split(c->nats_url, urlbuf, sizeof urlbuf, urls, 32);
    if (nurls == 0) {
        fprintf(stderr, "presencectl: bad NATS URL list '%s'\n", c->nats_url);
        return EXIT_USAGE;
    }
    natsOptions_Create(&o);
    natsOptions_SetServers(o, urls, (int)nurls);
    natsOptions_SetSendAsap(o, true);
    natsOptions_SetTimeout(o, c->timeout_ms);
    natsOptions_SetName(o, "presencectl");
    char err[512];
    if (pd_natsauth_apply(o, &c->auth, err, sizeof err) != PD_OK) {
        natsOptions_Destroy(o);
        fprintf(stderr, "presencectl: %s\n", err);
        return EXIT_USAGE;
    }
    natsStatus s = natsConnection_Connect(&c->nc, o);
    natsOptions_Destroy(o);
    if (s != NATS_OK) {
        fprintf(stderr, "presencectl: cannot reach NATS at %s: %s\n", c->nats_url,
                natsStatus_GetText(s));
        return EXIT_NATS;
    }
    return 0;
}

/* Sends a request; on success *out holds the reply (caller destroys). */
static int request(ctl *c, const char *suffix, const void *data, size_t len, natsMsg **out) {
    char subj[300];
    snprintf(subj, sizeof subj, "%s.%s", c->prefix, suffix);
    natsStatus s = natsConnection_Request(out, c->nc, subj, data, (int)len, c->timeout_ms);
    if (s == NATS_NO_RESPONDERS || s == NATS_TIMEOUT) {
        fprintf(stderr, "presencectl: no node answered on %s (%s)\n", subj,
                s == NATS_TIMEOUT ? "timeout" : "no responders");
        return EXIT_REFUSED;
    }
    if (s != NATS_OK) {
        fprintf(stderr, "presencectl: request on %s failed: %s\n", subj, natsStatus_GetText(s));
        return EXIT_NATS;
    }
    return 0;
}

/* An error reply ({"ok": false, ...}) becomes a message and exit 1. */
static int check_error_reply(natsMsg *m) {
    pd_reply rep;
    if (pd_reply_decode(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), &rep) == PD_OK &&
        !rep.ok) {
        fprintf(stderr, "presencectl: refused: %s: %s\n", rep.code, rep.message);
        return EXIT_REFUSED;
    }
    return 0;
}

static int send_event(ctl *c, const pd_event *ev) {
    msgpack_sbuffer sb;
    natsMsg *m = NULL;
    char suffix[200];
    if (c->node == NULL) {
        fprintf(stderr, "presencectl: events need a node: --node ID or PRESENCE_NODE_ID\n");
        return EXIT_USAGE;
    }
    msgpack_sbuffer_init(&sb);
    pd_event_encode(&sb, ev, NULL, 0);
    snprintf(suffix, sizeof suffix, "events.%s", c->node);
    int rc = request(c, suffix, sb.data, sb.size, &m);
    msgpack_sbuffer_destroy(&sb);
    if (rc) return rc;
    rc = check_error_reply(m);
    if (rc == 0) printf(c->json ? "{\"ok\":true}\n" : "ok\n");
    natsMsg_Destroy(m);
    return rc;
}

static bool valid_id(const char *what, const char *s) {
    if (pd_id_valid(s, strlen(s))) return true;
    fprintf(stderr, "presencectl: bad %s id '%s' (1-128 bytes of [A-Za-z0-9._:@=+-], "
                    "no leading, trailing or doubled '.')\n", what, s);
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
        if (!valid_id("conn", argv[0]) || !valid_id("user", argv[1])) return EXIT_USAGE;
    } else if (strcmp(cmd, "status") == 0) {
        if (argc != 2) return EXIT_USAGE;
        ev.type = PD_EV_STATUS;
        ev.user = pd_str_c(argv[0]);
        if (!valid_id("user", argv[0])) return EXIT_USAGE;
        if (!pd_chosen_parse(pd_str_c(argv[1]), &ev.status)) {
            fprintf(stderr, "presencectl: status must be auto, away, busy or invisible\n");
            return EXIT_USAGE;
        }
    } else if (strcmp(cmd, "custom") == 0) {
        if (argc != 2) return EXIT_USAGE;
        ev.type = PD_EV_CUSTOM;
        ev.user = pd_str_c(argv[0]);
        ev.text = pd_str_c(argv[1]);
        if (c->emoji) ev.emoji = pd_str_c(c->emoji);
        if (c->expires_in_ms) ev.expires_at = ev.ts + c->expires_in_ms;
        if (!valid_id("user", argv[0])) return EXIT_USAGE;
    } else {
        if (argc != 1) return EXIT_USAGE;
        ev.type = strcmp(cmd, "disconnect") == 0 ? PD_EV_DISCONNECT
                : strcmp(cmd, "activity") == 0 ? PD_EV_ACTIVITY : PD_EV_IDLE;
        ev.conn = pd_str_c(argv[0]);
        if (!valid_id("conn", argv[0])) return EXIT_USAGE;
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
    if (rc == 0 && (rc = check_error_reply(*out)) != 0) natsMsg_Destroy(*out);
    return rc;
}

static int print_json_reply(natsMsg *m) {
    int rc = ctl_json_print(stdout, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    natsMsg_Destroy(m);
    return rc ? EXIT_REFUSED : 0;
}

static int cmd_get(ctl *c, int argc, char **argv, const char *viewer) {
    pd_str users[PD_QUERY_USERS_MAX];
    pd_query q = {.type = PD_Q_GET};
    natsMsg *m;
    if (argc < 1 || argc > PD_QUERY_USERS_MAX) return EXIT_USAGE;
    for (int i = 0; i < argc; i++) {
        if (!valid_id("user", argv[i])) return EXIT_USAGE;
        users[i] = pd_str_c(argv[i]);
    }
    if (viewer) q.viewer = pd_str_c(viewer);
    int rc = query(c, PD_Q_GET, &q, users, (uint32_t)argc, &m);
    if (rc) return rc;
    if (c->json) return print_json_reply(m);
    mp_reader r;
    uint32_t n, k;
    pd_str key;
    pd_err err;
    mpr_init(&r, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    printf("%-24s %-9s %-7s %-20s %-26s %s\n", "USER", "STATUS", "DEVICES", "LAST_SEEN",
           "CUSTOM", "EXPIRES");
    if (mpr_map(&r, &n) && n >= 1 && pd_read_key(&r, &key) && mpr_array(&r, &k)) {
        for (uint32_t i = 0; i < k; i++) {
            pd_view v;
            char seen[32], exp[32], custom[400];
            if (pd_view_decode(&r, &v, &err) != PD_OK) break;
            fmt_time(v.last_seen, seen, sizeof seen);
            fmt_time(v.expires_at, exp, sizeof exp);
            snprintf(custom, sizeof custom, "%.*s%s%.*s", (int)v.emoji.n, v.emoji.p,
                     v.emoji.n ? " " : "", (int)v.text.n, v.text.p);
            printf("%-24.*s %-9s %-7u %-20s %-26s %s\n", (int)v.user.n, v.user.p,
                   pd_public_name(v.status), v.devices, seen, custom[0] ? custom : "-", exp);
        }
    }
    natsMsg_Destroy(m);
    return 0;
}

static int cmd_devices(ctl *c, int argc, char **argv) {
    pd_query q = {.type = PD_Q_DEVICES};
    natsMsg *m;
    if (argc != 1) return EXIT_USAGE;
    if (!valid_id("user", argv[0])) return EXIT_USAGE;
    q.user = pd_str_c(argv[0]);
    int rc = query(c, PD_Q_DEVICES, &q, NULL, 0, &m);
    if (rc) return rc;
    if (c->json) return print_json_reply(m);
    mp_reader r;
    uint32_t n, k = 0;
    pd_str key, s;
    pd_err err;
    mpr_init(&r, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    printf("%-20s %-16s %-12s %-10s %-7s %-20s %s\n", "CONN", "SERVER", "NODE", "DEVICE",
           "STATE", "CONNECTED_AT", "LAST_ACTIVE");
    if (mpr_map(&r, &n) && pd_read_key(&r, &key) && mpr_str(&r, &s) && pd_read_key(&r, &key) &&
        mpr_array(&r, &k)) {
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
    }
    natsMsg_Destroy(m);
    return 0;
}

static int cmd_online(ctl *c) {
    char cursor[PD_CURSOR_MAX + 1] = "";
    int64_t total = 0;
    do {
        pd_query q = {.type = PD_Q_ONLINE, .limit = (uint32_t)c->limit, .cursor = pd_str_c(cursor)};
        natsMsg *m;
        int rc = query(c, PD_Q_ONLINE, &q, NULL, 0, &m);
        if (rc) return rc;
        mp_reader r;
        uint32_t n, k = 0;
        pd_str key, s;
        cursor[0] = '\0';
        mpr_init(&r, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
        if (c->json) ctl_json_print(stdout, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
        if (mpr_map(&r, &n) && pd_read_key(&r, &key) && mpr_array(&r, &k)) {
            for (uint32_t i = 0; i < k && mpr_str(&r, &s); i++, total++) {
                if (!c->json) printf("%.*s\n", (int)s.n, s.p);
            }
            if (n == 2 && pd_read_key(&r, &key) && mpr_str(&r, &s) && s.n <= PD_CURSOR_MAX) {
                memcpy(cursor, s.p, s.n);
                cursor[s.n] = '\0';
            }
        }
        natsMsg_Destroy(m);
    } while (cursor[0]);
    if (!c->json) fprintf(stderr, "%" PRId64 " online\n", total);
    return 0;
}

static int cmd_cluster(ctl *c) {
    pd_query q = {.type = PD_Q_CLUSTER};
    natsMsg *m;
    if (c->diff) return ctl_cluster_diff(c->nc, c->prefix, c->timeout_ms, c->json, stdout);
    int rc = query(c, PD_Q_CLUSTER, &q, NULL, 0, &m);
    if (rc) return rc;
    if (c->json) return print_json_reply(m);
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
    else if (valid_id("user", who)) snprintf(subj, sizeof subj, "%s.user.%s", c->prefix, who);
    else return EXIT_USAGE;
    if (natsConnection_SubscribeSync(&sub, c->nc, subj) != NATS_OK) return EXIT_NATS;
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
                printf("%s %-24.*s %-9s custom=\"%.*s\" last_seen=%s\n", ts, (int)v.user.n,
                       v.user.p, pd_public_name(v.status), (int)v.text.n, v.text.p, seen_s);
            }
        }
        fflush(stdout);
        natsMsg_Destroy(m);
    }
    natsSubscription_Destroy(sub);
    return 0;
}

/* The setting behind a credentials flag, or NULL. */
static const char *auth_flag(const char *a) {
    static const char *const map[][2] = {
        {"--user", "PRESENCE_NATS_USER"},         {"--creds", "PRESENCE_NATS_CREDS_FILE"},
        {"--nkey", "PRESENCE_NATS_NKEY_SEED_FILE"}, {"--tls-ca", "PRESENCE_NATS_TLS_CA"},
        {"--tls-cert", "PRESENCE_NATS_TLS_CERT"}, {"--tls-key", "PRESENCE_NATS_TLS_KEY"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(a, map[i][0]) == 0) return map[i][1];
    return NULL;
}

/* Options may appear anywhere; they are removed from argv. */
static int parse_options(ctl *c, int *argc, char **argv, const char **viewer) {
    int out = 0;
    for (int i = 0; i < *argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < *argc ? argv[i + 1] : NULL;
        bool takes = true;
        if (strcmp(a, "--json") == 0) { c->json = true; takes = false; }
        else if (strcmp(a, "--diff") == 0) { c->diff = true; takes = false; }
        else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) { usage(stdout); exit(0); }
        else if (strncmp(a, "--", 2) != 0 || strcmp(a, "--") == 0) { argv[out++] = argv[i]; takes = false; }
        else if (v == NULL) { fprintf(stderr, "presencectl: %s needs a value\n", a); return EXIT_USAGE; }
        else if (strcmp(a, "--server") == 0) c->nats_url = v;
        else if (strcmp(a, "--prefix") == 0) c->prefix = v;
        else if (strcmp(a, "--node") == 0) { c->node = v; c->node_flag = true; }
        else if (strcmp(a, "--as") == 0) c->server = v;
        else if (strcmp(a, "--emoji") == 0) c->emoji = v;
        else if (strcmp(a, "--viewer") == 0) *viewer = v;
        else if (auth_flag(a) != NULL) {
            char err[512];
            if (pd_config_set(&c->auth, auth_flag(a), v, err, sizeof err) != PD_OK) {
                fprintf(stderr, "presencectl: %s\n", err);
                return EXIT_USAGE;
            }
        }
        else if (strcmp(a, "--expires") == 0) {
            if (!parse_duration(v, &c->expires_in_ms)) { fprintf(stderr, "presencectl: bad duration '%s'\n", v); return EXIT_USAGE; }
        } else if (strcmp(a, "--timeout") == 0) {
            if (!parse_duration(v, &c->timeout_ms) || c->timeout_ms == 0) { fprintf(stderr, "presencectl: bad timeout '%s'\n", v); return EXIT_USAGE; }
        } else if (strcmp(a, "--limit") == 0 || strcmp(a, "--count") == 0) {
            char *end;
            long long n = strtoll(v, &end, 10);
            bool lim = a[2] == 'l';
            if (*end || n < (lim ? 1 : 0) || (lim && n > PD_QUERY_LIMIT_MAX)) {
                fprintf(stderr, "presencectl: bad %s '%s'\n", a, v);
                return EXIT_USAGE;
            }
            *(lim ? &c->limit : &c->count) = n;
        } else { fprintf(stderr, "presencectl: unknown option %s\n", a); return EXIT_USAGE; }
        if (takes) i++;
    }
    *argc = out;
    return 0;
}

int main(int argc, char **argv) {
    ctl c = {
        .nats_url = env_or("PRESENCE_NATS_URL", "nats://127.0.0.1:4222"),
        .prefix = env_or("PRESENCE_SUBJECT_PREFIX", "presence"),
        .node = getenv("PRESENCE_NODE_ID"),
        .server = "presencectl",
        .timeout_ms = 2000,
        .limit = 0, /* online: the node's largest page unless --limit */
    };
    const char *viewer = NULL;
    int n = argc - 1;
    char **args = argv + 1;
    char err[512];
    if (pd_config_load_env_prefix(&c.auth, "PRESENCE_NATS_", NULL, err, sizeof err) != PD_OK) {
        fprintf(stderr, "presencectl: %s\n", err);
        return EXIT_USAGE;
    }
    int rc = parse_options(&c, &n, args, &viewer);
    if (rc) return rc;
    /* --server wins over PRESENCE_NATS_URL: TLS follows the URLs in use. */
    snprintf(c.auth.nats_url, sizeof c.auth.nats_url, "%s", c.nats_url);
    if (pd_config_check_auth(&c.auth, err, sizeof err) != PD_OK) {
        fprintf(stderr, "presencectl: %s\n", err);
        return EXIT_USAGE;
    }
    if (n < 1) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!valid_id("server", c.server) || (c.node && !valid_id("node", c.node))) return EXIT_USAGE;
    const char *cmd = args[0];
    static const char *const known[] = {"get", "devices", "online", "cluster", "watch", "connect",
                                        "disconnect", "activity", "idle", "status", "custom"};
    bool ok = false;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) ok |= strcmp(cmd, known[i]) == 0;
    if (!ok) {
        fprintf(stderr, "presencectl: unknown command '%s' (see --help)\n", cmd);
        return EXIT_USAGE;
    }
    if (c.diff && strcmp(cmd, "cluster") != 0) {
        fprintf(stderr, "presencectl: --diff goes with 'cluster' only\n");
        return EXIT_USAGE;
    }
    if ((rc = connect_nats(&c)) != 0) return rc;
    if (strcmp(cmd, "get") == 0) rc = cmd_get(&c, n - 1, args + 1, viewer);
    else if (strcmp(cmd, "devices") == 0) rc = cmd_devices(&c, n - 1, args + 1);
    else if (strcmp(cmd, "online") == 0) rc = n == 1 ? cmd_online(&c) : EXIT_USAGE;
    else if (strcmp(cmd, "cluster") == 0) rc = n == 1 ? cmd_cluster(&c) : EXIT_USAGE;
    else if (strcmp(cmd, "watch") == 0) rc = cmd_watch(&c, n - 1, args + 1);
    else rc = cmd_event(&c, cmd, n - 1, args + 1);
    if (rc == EXIT_USAGE) fprintf(stderr, "presencectl: bad arguments for '%s' (see --help)\n", cmd);
    natsConnection_Destroy(c.nc);
    nats_Close();
    return rc;
}

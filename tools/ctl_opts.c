/* ctl_opts.c - presencectl's table (see ctl_opts.h). An option's `cmds`
 * bits say which commands take it; any other command refuses it. */
#include "ctl_opts.h"
#include "wire/codec.h"

#define B(c) (1u << (c))
#define EVENTS (B(CTL_CONNECT) | B(CTL_DISCONNECT) | B(CTL_ACTIVITY) | B(CTL_IDLE) | \
                B(CTL_STATUS) | B(CTL_CUSTOM))
#define QUERIES (B(CTL_GET) | B(CTL_DEVICES) | B(CTL_ONLINE) | B(CTL_CLUSTER))
#define STR_(x) #x
#define STR(x) STR_(x)

static const pd_cli_cmd cmds[CTL_NCMDS] = {
    [CTL_GET] = {"get", "USER...", "public presence of users (up to " STR(PD_QUERY_USERS_MAX)
                 "; --viewer USER for a self view)", 1, PD_QUERY_USERS_MAX},
    [CTL_DEVICES] = {"devices", "USER", "a user's live devices", 1, 1},
    [CTL_ONLINE] = {"online", "", "users not offline, every page (--json: one document)", 0, 0},
    [CTL_CLUSTER] = {"cluster", "", "the nodes a node knows (--diff: every node's answers "
                     "compared)", 0, 0},
    [CTL_WATCH] = {"watch", "[USER|all]", "print notifications as they come (--json: one "
                   "object per line)", 0, 1},
    [CTL_CONNECT] = {"connect", "CONN USER [DEVICE]", "a new connection (device defaults to "
                     "cli)", 2, 3},
    [CTL_DISCONNECT] = {"disconnect", "CONN", "the connection is gone", 1, 1},
    [CTL_ACTIVITY] = {"activity", "CONN", "the user did something on the connection", 1, 1},
    [CTL_IDLE] = {"idle", "CONN", "the connection went idle", 1, 1},
    [CTL_STATUS] = {"status", "USER auto|away|busy|invisible", "the status the user chose", 2,
                    2},
    [CTL_CUSTOM] = {"custom", "USER TEXT", "a custom status text; \"\" clears it", 2, 2},
};

static const pd_cli_opt opts[] = {
    {"server", 0, "URLS", "PRESENCE_NATS_URL", "nats://127.0.0.1:4222",
     "NATS server(s), nats:// or tls://, comma-separated", PD_CLI_ALL},
    {"prefix", 0, "PREFIX", "PRESENCE_SUBJECT_PREFIX", "presence", "subject prefix",
     PD_CLI_ALL},
    {"json", 0, NULL, NULL, NULL, "machine-readable output, errors included: one JSON document",
     PD_CLI_ALL},
    {"timeout", 0, "DURATION", NULL, "2s", "how long to wait for a reply (500ms, 2s, 1m)",
     PD_CLI_ALL},
    {"node", 0, "ID", "PRESENCE_NODE_ID", NULL, "node that receives the event; given here for "
     "a query, the node that alone answers it (P.query.<kind>.<node>; the variable does not "
     "do that)", EVENTS | QUERIES},
    {"as", 0, "SERVER", NULL, "presencectl", "socket-server id the event comes from", EVENTS},
    {"diff", 0, NULL, NULL, NULL, "every node's answers compared: a digest per node, then the "
     "users that differ (exit 1 when the nodes differ)", B(CTL_CLUSTER)},
    {"viewer", 0, "USER", NULL, NULL, "ask as this user (a user sees itself when invisible)",
     B(CTL_GET)},
    {"limit", 0, "N", NULL, STR(PD_QUERY_LIMIT_MAX),
     "page size, 1 to " STR(PD_QUERY_LIMIT_MAX) " (the node may cap it lower)", B(CTL_ONLINE)},
    {"count", 0, "N", NULL, "0", "stop after N notifications, 0 = never", B(CTL_WATCH)},
    {"emoji", 0, "EMOJI", NULL, NULL, "emoji of the custom status", B(CTL_CUSTOM)},
    {"expires", 0, "DURATION", NULL, NULL, "the custom status ends after this (10m, 2h)",
     B(CTL_CUSTOM)},
    {"user", 0, "NAME", "PRESENCE_NATS_USER", NULL,
     "NATS user; the password only from PRESENCE_NATS_PASSWORD", PD_CLI_ALL},
    {"creds", 0, "FILE", "PRESENCE_NATS_CREDS_FILE", NULL, "NATS .creds file (JWT and NKey seed)",
     PD_CLI_ALL},
    {"nkey", 0, "FILE", "PRESENCE_NATS_NKEY_SEED_FILE", NULL, "file holding a user NKey seed",
     PD_CLI_ALL},
    {"tls-ca", 0, "FILE", "PRESENCE_NATS_TLS_CA", NULL, "CA that signed the NATS server's "
     "certificate; turns TLS on", PD_CLI_ALL},
    {"tls-cert", 0, "FILE", "PRESENCE_NATS_TLS_CERT", NULL, "client certificate (with --tls-key)",
     PD_CLI_ALL},
    {"tls-key", 0, "FILE", "PRESENCE_NATS_TLS_KEY", NULL, "key of the client certificate",
     PD_CLI_ALL},
    {"help", 'h', NULL, NULL, NULL, "this help; after a command, that command's", PD_CLI_ALL},
    {"version", 0, NULL, NULL, NULL, "print the version and exit", PD_CLI_ALL},
};

const pd_cli ctl_cli = {
    .prog = "presencectl",
    .summary = "command-line client of the presence service",
    .description = "presencectl asks the presence nodes over NATS (get, devices, online, "
                   "cluster: answered by any node, or by the one --node names), prints their "
                   "notifications (watch), and sends the events a socket server would (connect, disconnect, activity, "
                   "idle, status, custom) to one node. Options may come before or after the "
                   "command; \"--\" ends them. Output is a table, or JSON with --json.",
    .footer = "Exit status: 0 ok, 1 the service refused or did not answer, 2 bad usage,\n"
              "3 NATS unreachable. With --json an error is {\"ok\":false,\"code\":...,"
              "\"message\":...} on stdout.\n"
              "Secrets (PRESENCE_NATS_PASSWORD, PRESENCE_NATS_TOKEN) come from the "
              "environment only.\n",
    .man_section = 1,
    .opts = opts,
    .nopts = sizeof opts / sizeof opts[0],
    .cmds = cmds,
    .ncmds = CTL_NCMDS,
};

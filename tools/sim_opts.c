/* sim_opts.c - presence-sim's options: one table gives each option's name,
 * kind, field, bounds and help line, so parsing, checking and --help cannot
 * drift apart (CONTRIBUTING.md, "Table-driven configuration"). Defaults
 * come from the environment as in presencectl (PRESENCE_NATS_URL,
 * PRESENCE_SUBJECT_PREFIX, PRESENCE_NODE_ID).
 *
 * CHECKLIST: new option? A row in opts[], its default in set_defaults(),
 * any rule between options in check(), and the field in sim.h. */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "base/cli.h"
#include "cli_file.h"
#include "sim.h"

typedef enum { OPT_STR, OPT_U32, OPT_U64, OPT_DBL, OPT_TIME, OPT_FLAG, OPT_MIX } opt_kind;

typedef struct {
    const char *name;
    opt_kind kind;
    size_t off;
    double min, max;
    const char *arg;
    const char *help;
} opt_def;

#define F(field) offsetof(sim_opts, field)

static const opt_def opts[] = {
    {"nats", OPT_STR, F(nats_url), 0, 0, "URL",
     "NATS server(s) (PRESENCE_NATS_URL, default nats://127.0.0.1:4222)"},
    {"server", OPT_STR, F(nats_url), 0, 0, "URL", "same as --nats (presencectl's name)"},
    {"prefix", OPT_STR, F(prefix), 0, 0, "P",
     "subject prefix (PRESENCE_SUBJECT_PREFIX, default presence)"},
    {"nodes", OPT_STR, F(nodes_arg), 0, 0, "N1,N2",
     "nodes the servers attach to, round-robin (default PRESENCE_NODE_ID, else n1)"},
    {"servers", OPT_U32, F(servers), 1, SIM_SERVERS_MAX, "S",
     "socket servers <server-prefix>-0 .. -<S-1> (default 4)"},
    {"users", OPT_U32, F(users), 1, 10000000, "U",
     "users <user-prefix>0 .. <U-1> (default 1000)"},
    {"devices", OPT_U32, F(devices), 1, 16, "D",
     "devices per user at most, labelled web, mobile, desktop, web... (default 3)"},
    {"rate", OPT_DBL, F(rate), 0, 1e7, "N",
     "load events per second, 0 = flat out (default 1000)"},
    {"duration", OPT_TIME, F(duration_ms), 0, 0, "SECONDS",
     "stop the load after this long (also 500ms, 2m, 1h)"},
    {"events", OPT_U64, F(events), 1, 1e15, "N",
     "stop the load after N events (without --duration or --events: run until SIGINT)"},
    {"seed", OPT_U64, F(seed), 0, 1.8e19, "N", "random seed (default 1)"},
    {"heartbeat-ms", OPT_U32, F(heartbeat_ms), 0, 3600000, "MS",
     "heartbeat period of every server, 0 = none (default 1000)"},
    {"storm-at", OPT_TIME, F(storm_at_ms), 0, 0, "SECONDS",
     "reconnect storm: at this time disconnect, then reconnect, many devices at once"},
    {"storm-fraction", OPT_DBL, F(storm_fraction), 0, 1, "F",
     "share of the live devices the storm reconnects (default 0.5)"},
    {"crash-at", OPT_TIME, F(crash_at_ms), 0, 0, "SECONDS",
     "server crash: at this time one server stops sending anything, heartbeats too"},
    {"crash-server", OPT_U32, F(crash_server), 0, SIM_SERVERS_MAX - 1, "K",
     "index of the server that crashes (default 0)"},
    {"mix", OPT_MIX, 0, 0, 0, "KIND=W,...",
     "load mix weights, e.g. status=0,custom=20 (defaults: connect=30 disconnect=20\n"
     "                           activity=30 idle=10 status=5 custom=5)"},
    {"max-inflight", OPT_U32, F(max_inflight), 1, 10000000, "N",
     "pause the load while N requests await replies (default 10000)"},
    {"drain", OPT_TIME, F(drain_ms), 0, 0, "SECONDS",
     "how long to wait for the last replies (default 5)"},
    {"shutdown-at-end", OPT_FLAG, F(shutdown_at_end), 0, 0, NULL,
     "send shutdown for every server at the end (default: leave connections up)"},
    {"json", OPT_FLAG, F(json), 0, 0, NULL, "summary as one JSON object on stdout"},
    {"dump-users", OPT_FLAG, F(dump_users), 0, 0, NULL,
     "the summary adds each user's device count (JSON: user_devices)"},
    {"quiet", OPT_FLAG, F(quiet), 0, 0, NULL, "no progress lines on stderr"},
    {"server-prefix", OPT_STR, F(server_prefix), 0, 0, "ID",
     "server ids are ID-<k> (default sim)"},
    {"user-prefix", OPT_STR, F(user_prefix), 0, 0, "ID", "user ids are ID<i> (default u)"},
};
#define NOPTS (sizeof opts / sizeof opts[0])

static const char *const mix_names[SIM_MIX_COUNT] = {
    "connect", "disconnect", "activity", "idle", "status", "custom",
};

/* The shared parser's view of opts[] (base/cli.h), then --help and
 * --version. */
static pd_cli_opt cli_opts[NOPTS + 2];

const pd_cli *sim_opts_cli(void) {
    static pd_cli cli;
    for (size_t i = 0; i < NOPTS; i++)
        cli_opts[i] = (pd_cli_opt){.name = opts[i].name, .arg = opts[i].arg,
                                   .help = opts[i].help};
    cli_opts[NOPTS] = (pd_cli_opt){.name = "help", .short_name = 'h', .help = "this text"};
    cli_opts[NOPTS + 1] = (pd_cli_opt){.name = "version", .help = "print the version and exit"};
    cli = (pd_cli){
        .prog = "presence-sim",
        .summary = "simulated socket servers for load and oracle checks",
        .description =
            "Simulates socket servers speaking the presence contract: connects, disconnects,\n"
            "activity, idle, status and custom events at a target rate, heartbeats, answers\n"
            "to P.resync.<node>, and an oracle of the live connections to compare a node with.",
        .footer = "Exit codes: 0 every event answered ok, 1 errors or unanswered requests,\n"
                  "2 bad usage, 3 NATS unreachable.\n",
        .man_section = 1,
        .opts = cli_opts,
        .nopts = NOPTS + 2,
    };
    return &cli;
}

void sim_opts_usage(FILE *out) {
    pd_cli_usage(PD_CLI_FILE(out), sim_opts_cli(), NULL);
}

static const char *env_or(const char *name, const char *dflt) {
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

static void set_defaults(sim_opts *o) {
    memset(o, 0, sizeof *o);
    o->nats_url = env_or("PRESENCE_NATS_URL", "nats://127.0.0.1:4222");
    o->prefix = env_or("PRESENCE_SUBJECT_PREFIX", "presence");
    o->nodes_arg = env_or("PRESENCE_NODE_ID", "n1");
    o->server_prefix = "sim";
    o->user_prefix = "u";
    o->servers = 4;
    o->users = 1000;
    o->devices = 3;
    o->rate = 1000;
    o->duration_ms = -1;
    o->seed = 1;
    o->heartbeat_ms = 1000;
    o->storm_at_ms = -1;
    o->storm_fraction = 0.5;
    o->crash_at_ms = -1;
    o->max_inflight = 10000;
    o->drain_ms = 5000;
    static const uint32_t mix[SIM_MIX_COUNT] = {30, 20, 30, 10, 5, 5};
    memcpy(o->mix, mix, sizeof mix);
}

/* "1.5" seconds, or with a unit: "500ms", "30s", "10m", "2h". */
static bool parse_time(const char *s, int64_t *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v >= 0) || v > 1e9) return false;
    double mul = 1000;
    if (strcmp(end, "ms") == 0) mul = 1;
    else if (strcmp(end, "m") == 0) mul = 60000;
    else if (strcmp(end, "h") == 0) mul = 3600000;
    else if (*end != '\0' && strcmp(end, "s") != 0) return false;
    *out = (int64_t)llround(v * mul);
    return true;
}

static bool parse_mix(sim_opts *o, const char *v) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", v);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '='), *end;
        if (eq == NULL) return false;
        *eq = '\0';
        unsigned long w = strtoul(eq + 1, &end, 10);
        if (end == eq + 1 || *end || w > 1000000) return false;
        int k = -1;
        for (int i = 0; i < SIM_MIX_COUNT; i++) {
            if (strcmp(tok, mix_names[i]) == 0) k = i;
        }
        if (k < 0) return false;
        o->mix[k] = (uint32_t)w;
    }
    return true;
}

static bool set_value(sim_opts *o, const opt_def *d, const char *v) {
    char *p = (char *)o + d->off, *end;
    double x;
    switch (d->kind) {
    case OPT_STR: *(const char **)p = v; return *v != '\0';
    case OPT_TIME: return parse_time(v, (int64_t *)p);
    case OPT_MIX: return parse_mix(o, v);
    default: break;
    }
    errno = 0;
    x = strtod(v, &end);
    if (end == v || *end || errno || !(x >= d->min && x <= d->max)) return false;
    if (d->kind == OPT_DBL) {
        *(double *)p = x;
    } else {
        /* Integers: whole numbers only, read exactly (no double rounding). */
        unsigned long long n = strtoull(v, &end, 10);
        if (*end || v[0] == '-') return false;
        if (d->kind == OPT_U32) *(uint32_t *)p = (uint32_t)n;
        else *(uint64_t *)p = (uint64_t)n;
    }
    return true;
}

static bool split_nodes(sim_opts *o) {
    snprintf(o->nodes_buf, sizeof o->nodes_buf, "%s", o->nodes_arg);
    o->nnodes = 0;
    for (char *save = NULL, *tok = strtok_r(o->nodes_buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (o->nnodes == SIM_NODES_MAX || !pd_id_valid(tok, strlen(tok))) return false;
        o->nodes[o->nnodes++] = tok;
    }
    return o->nnodes > 0;
}

/* Rules between options; prints the first that fails. */
static int check(sim_opts *o) {
    char sid[200], uid[200];
    uint32_t wsum = 0;
    for (int i = 0; i < SIM_MIX_COUNT; i++) wsum += o->mix[i];
    const char *why = NULL;
    /* The longest ids of the run; shorter ones are then valid too. */
    snprintf(sid, sizeof sid, "%s-%u", o->server_prefix, o->servers - 1);
    snprintf(uid, sizeof uid, "%s%u", o->user_prefix, o->users - 1);
    if (!split_nodes(o)) why = "--nodes must be 1 to 32 valid node ids, comma-separated";
    else if (!pd_id_valid(sid, strlen(sid))) why = "--server-prefix does not make valid server ids";
    else if (!pd_id_valid(uid, strlen(uid))) why = "--user-prefix does not make valid user ids";
    else if (o->duration_ms == 0) why = "--duration must be above 0";
    else if (!pd_id_valid(o->prefix, strlen(o->prefix))) why = "--prefix is not a valid id";
    else if (o->crash_at_ms >= 0 && o->crash_server >= o->servers)
        why = "--crash-server must be below --servers";
    else if (wsum == 0) why = "--mix weights are all 0";
    if (why == NULL) return 0;
    fprintf(stderr, "presence-sim: %s\n", why);
    return SIM_EXIT_USAGE;
}

int sim_opts_parse(sim_opts *o, int argc, char **argv, bool *help, bool *version) {
    char err[256];
    const pd_cli *cli = sim_opts_cli();
    pd_cli_args a = {.hits = calloc((size_t)argc + 1, sizeof *a.hits)};
    int rc = SIM_EXIT_USAGE;
    set_defaults(o);
    *help = *version = false;
    if (a.hits == NULL) return SIM_EXIT_USAGE;
    pd_status ps = pd_cli_parse(cli, argc, argv, &a, err, sizeof err);
    *help = pd_cli_has(cli, &a, "help");
    *version = pd_cli_has(cli, &a, "version");
    if (*help || *version) {
        rc = 0;
    } else if (ps != PD_OK) {
        fprintf(stderr, "presence-sim: %s\n", err);
    } else if (a.first_operand < argc) {
        fprintf(stderr, "presence-sim: '%s': unexpected argument (see --help)\n",
                argv[a.first_operand]);
    } else {
        rc = 0;
        for (size_t i = 0; i < a.nhits && rc == 0; i++) {
            const opt_def *d = &opts[a.hits[i].opt];
            const char *v = a.hits[i].val;
            if (d->kind == OPT_FLAG) *(bool *)((char *)o + d->off) = true;
            else if (!set_value(o, d, v)) {
                fprintf(stderr, "presence-sim: --%s: bad value '%s' (see --help)\n", d->name, v);
                rc = SIM_EXIT_USAGE;
            }
        }
        if (rc == 0) rc = check(o);
    }
    free(a.hits);
    return rc;
}

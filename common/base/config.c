/* config.c - table-driven settings: environment, flags, checks, help text.
 *
 * Each setting is one row of `fields`: its variable name, the kind of value
 * (which picks the parser and the check), where it lives in pd_config, its
 * bounds, default and meaning. Everything else is derived from the row: the
 * flag (PRESENCE_IDLE_TIMEOUT_MS -> --idle-timeout-ms), the --help line and
 * the error messages. Loading is three passes over the same table: defaults,
 * environment, flags; then the defaults that depend on other settings (the
 * timeouts on the final sync interval, the node id on the host name) are
 * filled in for the settings that no source gave. */
#include "base/config.h"
#include "base/log.h"
#include "base/alloc.h"
#include "base/cli.h"
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum {
    CFG_MS,         /* uint64_t milliseconds */
    CFG_BYTES,      /* uint64_t bytes */
    CFG_COUNT,      /* uint64_t plain number */
    CFG_ID,         /* char[cap] satisfying pd_id_valid */
    CFG_NATS_URLS,  /* char[cap]: nats:// or tls:// URLs, comma-separated */
    CFG_REDIS_URL,  /* char[cap]: one redis:// URL */
    CFG_ADDR,       /* char[cap]: HOST:PORT to listen on (IPv4), "" = off */
    CFG_LEVEL,      /* int PD_LOG_* */
    CFG_TEXT,       /* char[cap]: printable text, "" = not set */
    CFG_SECRET,     /* like CFG_TEXT, but never echoed in a message */
    CFG_FILE        /* char[cap]: path of a file, "" = not set (read in node/) */
} cfg_kind;

typedef enum {
    DEF_FIXED,      /* def_u or def_s */
    DEF_SYNC_X3,    /* 3 x the sync interval, capped at max */
    DEF_SYNC_X2,    /* 2 x the sync interval, capped at max */
    DEF_HOSTNAME    /* gethostname(), which must be a valid id */
} cfg_def;

typedef struct {
    const char *env;
    cfg_kind kind;
    cfg_def def;
    size_t off;
    size_t cap;         /* string kinds: size of the char array */
    uint64_t min, max;  /* number kinds */
    uint64_t def_u;
    const char *def_s;
    const char *meaning;
} cfg_field;

/* About 136 years: far beyond any sane timeout, far below overflow when
 * tripled or added to a clock reading. */
#define MS_MAX ((uint64_t)UINT32_MAX * 1000u)
#define ENV_PREFIX "PRESENCE_"
#define FLAG_MAX 64

#define MS_FIELD(name, member, lo, dflt, what) \
    {.env = name, .kind = CFG_MS, .def = DEF_FIXED, \
     .off = offsetof(pd_config, member), .min = (lo), .max = MS_MAX, \
     .def_u = (dflt), .meaning = (what)}
#define STR_FIELD(name, k, d, member, dflt, what) \
    {.env = name, .kind = (k), .def = (d), \
     .off = offsetof(pd_config, member), \
     .cap = sizeof(((pd_config *)0)->member), .def_s = (dflt), \
     .meaning = (what)}

static const cfg_field fields[] = {
    MS_FIELD("PRESENCE_IDLE_TIMEOUT_MS", idle_timeout_ms, 1, 300000,
             "activity-free time before a device is idle"),
    MS_FIELD("PRESENCE_OFFLINE_DELAY_MS", offline_delay_ms, 0, 30000,
             "grace before a user whose last device left is offline"),
    MS_FIELD("PRESENCE_SYNC_INTERVAL_MS", sync_interval_ms, 1, 5000,
             "heartbeat / anti-entropy period between nodes"),
    {.env = "PRESENCE_NODE_TIMEOUT_MS", .kind = CFG_MS, .def = DEF_SYNC_X3,
     .off = offsetof(pd_config, node_timeout_ms), .min = 1, .max = MS_MAX,
     .meaning = "a silent node is suspected after this"},
    {.env = "PRESENCE_SUSPICION_MS", .kind = CFG_MS, .def = DEF_SYNC_X2,
     .off = offsetof(pd_config, suspicion_ms), .min = 0, .max = MS_MAX,
     .meaning = "a suspected node still silent this much longer is down; 0: at once"},
    {.env = "PRESENCE_SERVER_TIMEOUT_MS", .kind = CFG_MS, .def = DEF_SYNC_X3,
     .off = offsetof(pd_config, server_timeout_ms), .min = 1, .max = MS_MAX,
     .meaning = "a silent socket server is down after this"},
    MS_FIELD("PRESENCE_SNAPSHOT_INTERVAL_MS", snapshot_interval_ms, 1, 30000,
             "how often a node writes its snapshot"),
    STR_FIELD("PRESENCE_NODE_ID", CFG_ID, DEF_HOSTNAME, node_id, NULL,
              "this node's id"),
    STR_FIELD("PRESENCE_NATS_URL", CFG_NATS_URLS, DEF_FIXED, nats_url,
              "nats://127.0.0.1:4222", "NATS server(s), comma-separated"),
    STR_FIELD("PRESENCE_REDIS_URL", CFG_REDIS_URL, DEF_FIXED, redis_url,
              "redis://127.0.0.1:6379", "Redis: redis://[[USER]:PASSWORD@]HOST[:PORT]"),
    /* Credentials: NATS (one of user+password, token, NKey seed file, creds
     * file; TLS beside any) and Redis. See pd_config_check_auth. */
    STR_FIELD("PRESENCE_NATS_USER", CFG_TEXT, DEF_FIXED, nats_user, "",
              "NATS user name (with PRESENCE_NATS_PASSWORD)"),
    STR_FIELD("PRESENCE_NATS_PASSWORD", CFG_SECRET, DEF_FIXED, nats_password, "",
              "NATS password; prefer the environment to the flag (ps shows flags)"),
    STR_FIELD("PRESENCE_NATS_TOKEN", CFG_SECRET, DEF_FIXED, nats_token, "",
              "NATS authentication token"),
    STR_FIELD("PRESENCE_NATS_NKEY_SEED_FILE", CFG_FILE, DEF_FIXED, nats_nkey_seed_file, "",
              "file holding the NKey seed (SU...) of the NATS user"),
    STR_FIELD("PRESENCE_NATS_CREDS_FILE", CFG_FILE, DEF_FIXED, nats_creds_file, "",
              "NATS .creds file (user JWT and NKey seed)"),
    STR_FIELD("PRESENCE_NATS_TLS_CA", CFG_FILE, DEF_FIXED, nats_tls_ca, "",
              "CA certificate(s) to verify the NATS server; turns TLS on"),
    STR_FIELD("PRESENCE_NATS_TLS_CERT", CFG_FILE, DEF_FIXED, nats_tls_cert, "",
              "client certificate for NATS TLS (with PRESENCE_NATS_TLS_KEY)"),
    STR_FIELD("PRESENCE_NATS_TLS_KEY", CFG_FILE, DEF_FIXED, nats_tls_key, "",
              "private key of the client certificate"),
    STR_FIELD("PRESENCE_REDIS_USER", CFG_TEXT, DEF_FIXED, redis_user, "",
              "Redis ACL user (with PRESENCE_REDIS_PASSWORD)"),
    STR_FIELD("PRESENCE_REDIS_PASSWORD", CFG_SECRET, DEF_FIXED, redis_password, "",
              "Redis password, sent with AUTH after every connect"),
    STR_FIELD("PRESENCE_SUBJECT_PREFIX", CFG_ID, DEF_FIXED, subject_prefix,
              "presence", "first token(s) of every NATS subject"),
    {.env = "PRESENCE_LOG_LEVEL", .kind = CFG_LEVEL, .def = DEF_FIXED,
     .off = offsetof(pd_config, log_level), .def_u = PD_LOG_INFO,
     .meaning = "least severe log lines written: debug, info, warn, error"},
    {.env = "PRESENCE_MAX_MSG_BYTES", .kind = CFG_BYTES, .def = DEF_FIXED,
     .off = offsetof(pd_config, max_msg_bytes), .min = 64, .max = 67108864,
     .def_u = 1048576,
     .meaning = "larger messages are rejected with too_large"},
    /* Limits: each breach is refused with too_large and counted in
     * presenced_limit_rejections_total (docs/protocol.md section 8, "Limits"). */
    {.env = "PRESENCE_MAX_DEVICES_PER_USER", .kind = CFG_COUNT, .def = DEF_FIXED,
     .off = offsetof(pd_config, max_devices_per_user), .min = 1, .max = 1000000,
     .def_u = 100,
     .meaning = "live devices of one user (all nodes) a connect may reach"},
    {.env = "PRESENCE_MAX_USERS_PER_NODE", .kind = CFG_COUNT, .def = DEF_FIXED,
     .off = offsetof(pd_config, max_users_per_node), .min = 1, .max = 1000000000,
     .def_u = 5000000,
     .meaning = "users with live devices (cluster-wide view); a connect for one more is refused"},
    {.env = "PRESENCE_MAX_QUERY_USERS", .kind = CFG_COUNT, .def = DEF_FIXED,
     .off = offsetof(pd_config, max_query_users), .min = 1, .max = 1000, .def_u = 1000,
     .meaning = "users in one get request and largest online limit (1-1000)"},
    {.env = "PRESENCE_MAX_BATCH", .kind = CFG_COUNT, .def = DEF_FIXED,
     .off = offsetof(pd_config, max_batch), .min = 1, .max = 100000, .def_u = 1000,
     .meaning = "events in one batch message; a longer batch is refused with too_large"},
    MS_FIELD("PRESENCE_SYNC_PARTS_TIMEOUT_MS", sync_parts_timeout_ms, 1, 30000,
             "an unfinished sync in parts is dropped this long after its last part"),
    {.env = "PRESENCE_NOTIFY_MIN_INTERVAL_MS", .kind = CFG_MS, .def = DEF_FIXED,
     .off = offsetof(pd_config, notify_min_interval_ms), .min = 0, .max = 60000,
     .def_u = 100,
     .meaning = "per user, later changes within this of a notification are coalesced; 0: off"},
    MS_FIELD("PRESENCE_ACTIVITY_RESOLUTION_MS", activity_resolution_ms, 0, 30000,
             "step of a device's replicated last_active (activity within one sends nothing); 0: exact"),
    MS_FIELD("PRESENCE_USER_RETENTION_MS", user_retention_ms, 0, 2592000000ULL,
             "an offline user with no status of its own is forgotten after this; 0: never"),
    STR_FIELD("PRESENCE_REDIS_PREFIX", CFG_ID, DEF_FIXED, redis_prefix, "presence",
              "first part of Redis keys: PREFIX:snapshot:NODE"),
    MS_FIELD("PRESENCE_STREAM_MAX_AGE_MS", stream_max_age_ms, 1000, 600000,
             "JetStream keeps deltas this long (cover several snapshot intervals)"),
    {.env = "PRESENCE_STREAM_MAX_BYTES", .kind = CFG_BYTES, .def = DEF_FIXED,
     .off = offsetof(pd_config, stream_max_bytes), .min = 1048576,
     .max = (uint64_t)1 << 50, .def_u = (uint64_t)1 << 30,
     .meaning = "JetStream keeps at most this many bytes of deltas"},
    {.env = "PRESENCE_STREAM_REPLICAS", .kind = CFG_COUNT, .def = DEF_FIXED,
     .off = offsetof(pd_config, stream_replicas), .min = 1, .max = 5, .def_u = 1,
     .meaning = "copies JetStream keeps of the delta stream (1-5)"},
    /* Falling behind (docs/failure-modes.md): what waits for the loop. */
    {.env = "PRESENCE_INBOX_MAX_MSGS", .kind = CFG_COUNT, .def = DEF_FIXED,
     .off = offsetof(pd_config, inbox_max_msgs), .min = 16, .max = 100000000,
     .def_u = 1000000,
     .meaning = "messages waiting for the loop; beyond, new ones are dropped, counted and repaired"},
    {.env = "PRESENCE_INBOX_MAX_BYTES", .kind = CFG_BYTES, .def = DEF_FIXED,
     .off = offsetof(pd_config, inbox_max_bytes), .min = 65536,
     .max = (uint64_t)1 << 40, .def_u = (uint64_t)256 << 20,
     .meaning = "bytes of messages waiting for the loop (same)"},
    STR_FIELD("PRESENCE_METRICS_ADDR", CFG_ADDR, DEF_FIXED, metrics_addr, "",
              "HOST:PORT of the Prometheus /metrics endpoint; empty: off"),
    MS_FIELD("PRESENCE_MAX_CLOCK_SKEW_MS", max_clock_skew_ms, 1000, 60000,
             "a peer's clock (HLC, incarnation) further ahead of ours is refused"),
    {.env = "PRESENCE_TEST_CLOCK_OFFSET_MS", .kind = CFG_MS, .def = DEF_FIXED,
     .off = offsetof(pd_config, test_clock_offset_ms), .min = 0, .max = MS_MAX,
     .def_u = 0,
     .meaning = "testing only: this node's wall clock runs this far ahead (a "
                "node with a wrong clock)"},
    {.env = "PRESENCE_TEST_FAIL_ALLOCS", .kind = CFG_COUNT, .def = DEF_FIXED,
     .off = offsetof(pd_config, test_fail_allocs), .min = 0, .max = 1,
     .def_u = 0,
     .meaning = "testing only: 1 makes every model allocation after start "
                "fail, to exercise the internal error path"},
};
#define FIELD_COUNT (sizeof fields / sizeof fields[0])

__attribute__((format(printf, 3, 4)))
static pd_status fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return PD_ECONFIG;
}

static uint64_t *field_u64(pd_config *c, const cfg_field *f) {
    return (uint64_t *)(void *)((char *)c + f->off);
}

static char *field_str(pd_config *c, const cfg_field *f) {
    return (char *)c + f->off;
}

static int *field_int(pd_config *c, const cfg_field *f) {
    return (int *)(void *)((char *)c + f->off);
}

/* "PRESENCE_IDLE_TIMEOUT_MS" -> "--idle-timeout-ms". */
static void flag_name(const cfg_field *f, char *buf, size_t len) {
    const char *s = f->env + strlen(ENV_PREFIX);
    size_t n = 0;
    if (len < 3) return;
    buf[n++] = '-';
    buf[n++] = '-';
    for (; *s != '\0' && n + 1 < len; s++) {
        char ch = *s;
        if (ch == '_') ch = '-';
        else if (ch >= 'A' && ch <= 'Z') ch = (char)(ch - 'A' + 'a');
        buf[n++] = ch;
    }
    buf[n] = '\0';
}

/* The row whose flag, without "--", is the n bytes at name. */
static const cfg_field *field_by_flag(const char *name, size_t n) {
    char buf[FLAG_MAX];
    for (size_t i = 0; i < FIELD_COUNT; i++) {
        flag_name(&fields[i], buf, sizeof buf);
        if (strlen(buf + 2) == n && memcmp(buf + 2, name, n) == 0)
            return &fields[i];
    }
    return NULL;
}

/* 0 on success, -1 if s is not only decimal digits, -2 on overflow. */
static int parse_u64(const char *s, uint64_t *out) {
    size_t n = strlen(s);
    if (n == 0 || strspn(s, "0123456789") != n) return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10u) return -2;
        v = v * 10u + d;
    }
    *out = v;
    return 0;
}

static pd_status apply_number(pd_config *c, const cfg_field *f,
                              const char *src, const char *val,
                              char *err, size_t errlen) {
    const char *unit = f->kind == CFG_MS ? "milliseconds"
                     : f->kind == CFG_BYTES ? "bytes" : "(a count)";
    uint64_t v = 0;
    int rc = parse_u64(val, &v);
    if (rc == -1)
        return fail(err, errlen, "%s: '%.200s' is not a whole number of %s",
                    src, val, unit);
    if (rc == -2 || v > f->max)
        return fail(err, errlen, "%s: '%.200s' is above the maximum %" PRIu64
                    " %s", src, val, f->max, unit);
    if (v < f->min)
        return fail(err, errlen, "%s: %" PRIu64 " is below the minimum %"
                    PRIu64 " %s", src, v, f->min, unit);
    *field_u64(c, f) = v;
    return PD_OK;
}

/* True if the n bytes at p are `scheme` followed by at least one byte and
 * no whitespace or control characters. */
static bool url_ok(const char *p, size_t n, const char *scheme) {
    size_t k = strlen(scheme);
    if (n <= k || memcmp(p, scheme, k) != 0) return false;
    for (size_t i = k; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch <= 0x20 || ch == 0x7f) return false;
    }
    return true;
}

static pd_status check_nats_urls(const char *src, const char *val,
                                 char *err, size_t errlen) {
    const char *p = val;
    for (;;) {
        size_t n = strcspn(p, ",");
        if (n == 0)
            return fail(err, errlen, "%s: '%.200s' has an empty entry; give "
                        "comma-separated nats:// or tls:// URLs", src, val);
        if (!url_ok(p, n, "nats://") && !url_ok(p, n, "tls://"))
            return fail(err, errlen, "%s: '%.*s' is not a nats:// or tls:// "
                        "URL (no spaces)", src, (int)(n > 200 ? 200 : n), p);
        if (p[n] == '\0') return PD_OK;
        p += n + 1;
    }
}

/* HOST:PORT with HOST an IPv4 address, "localhost" or empty (all). */
static bool addr_ok(const char *val) {
    const char *colon = strrchr(val, ':');
    char host[32], *end;
    unsigned a, b, c, d;
    char extra;
    if (colon == NULL || colon[1] == '\0' || (size_t)(colon - val) >= sizeof host) return false;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 0 || port > 65535 || colon[1] == '-' || colon[1] == '+') return false;
    memcpy(host, val, (size_t)(colon - val));
    host[colon - val] = '\0';
    if (host[0] == '\0' || strcmp(host, "localhost") == 0) return true;
    return sscanf(host, "%3u.%3u.%3u.%3u%c", &a, &b, &c, &d, &extra) == 4 && a < 256 &&
           b < 256 && c < 256 && d < 256;
}

/* No spaces or control characters (user names, passwords, tokens). */
static bool text_ok(const char *val) {
    for (const unsigned char *p = (const unsigned char *)val; *p != '\0'; p++)
        if (*p <= 0x20 || *p == 0x7f) return false;
    return true;
}

static pd_status check_string(const cfg_field *f, const char *src,
                              const char *val, char *err, size_t errlen) {
    size_t n = strlen(val);
    if (n >= f->cap)
        return fail(err, errlen, "%s: value is too long (%zu bytes, at most "
                    "%zu)", src, n, f->cap - 1);
    switch (f->kind) {
    case CFG_ID:
        if (pd_id_valid(val, n)) return PD_OK;
        return fail(err, errlen, "%s: '%.200s' is not a valid id (1-128 of "
                    "A-Z a-z 0-9 . _ : @ = + -, no leading, trailing or "
                    "doubled '.')", src, val);
    case CFG_NATS_URLS:
        return check_nats_urls(src, val, err, errlen);
    case CFG_ADDR:
        if (addr_ok(val)) return PD_OK;
        return fail(err, errlen, "%s: '%.200s' is not HOST:PORT (an IPv4 address "
                    "or localhost, and a port 0-65535)", src, val);
    case CFG_REDIS_URL: {
        pd_redis_target t;
        if (url_ok(val, n, "redis://") && pd_redis_url_parse(val, &t) == 0) return PD_OK;
        return fail(err, errlen, "%s: '%.200s' is not a redis://[[USER]:PASSWORD@]HOST[:PORT] "
                    "URL", src, val);
    }
    case CFG_TEXT:
        if (text_ok(val)) return PD_OK;
        return fail(err, errlen, "%s: '%.200s' has spaces or control characters", src, val);
    case CFG_SECRET:
        if (text_ok(val)) return PD_OK;
        return fail(err, errlen, "%s: the value has spaces or control characters "
                    "(not shown: it is a secret)", src);
    case CFG_FILE: /* readable? node/config_files.c checks (common/ does no I/O) */
        for (const unsigned char *q = (const unsigned char *)val; *q != '\0'; q++)
            if (*q < 0x20 || *q == 0x7f)
                return fail(err, errlen, "%s: the path has control characters", src);
        return PD_OK;
    default:
        return fail(err, errlen, "%s: internal error: not a string", src);
    }
}

/* Parse val for f, check it and store it in c. src names the source
 * (variable or flag) in error messages. */
static pd_status field_apply(pd_config *c, const cfg_field *f,
                             const char *src, const char *val,
                             char *err, size_t errlen) {
    pd_status s;
    switch (f->kind) {
    case CFG_MS:
    case CFG_BYTES:
    case CFG_COUNT:
        return apply_number(c, f, src, val, err, errlen);
    case CFG_LEVEL:
        if (pd_log_level_parse(val, field_int(c, f)) == 0) return PD_OK;
        return fail(err, errlen, "%s: '%.200s' is not a log level (debug, "
                    "info, warn or error)", src, val);
    default:
        if ((s = check_string(f, src, val, err, errlen)) != PD_OK) return s;
        memcpy(field_str(c, f), val, strlen(val) + 1);
        return PD_OK;
    }
}

/* The host name as the default node id. strict: an unusable host name is
 * an error telling to set PRESENCE_NODE_ID; otherwise it leaves "". */
static pd_status default_node_id(pd_config *c, const cfg_field *f,
                                 bool strict, char *err, size_t errlen) {
    char host[256];
    char *dst = field_str(c, f);
    dst[0] = '\0';
    if (gethostname(host, sizeof host) != 0) {
        if (!strict) return PD_OK;
        return fail(err, errlen, "%s: not set and the host name cannot be "
                    "read (%s); set %s or --node-id", f->env,
                    strerror(errno), f->env);
    }
    host[sizeof host - 1] = '\0';
    size_t n = strlen(host);
    if (!pd_id_valid(host, n) || n >= f->cap) {
        if (!strict) return PD_OK;
        return fail(err, errlen, "%s: not set and the host name '%s' is not "
                    "a valid id; set %s or --node-id", f->env, host, f->env);
    }
    memcpy(dst, host, n + 1);
    return PD_OK;
}

/* Fill the defaults that depend on other settings, for every row whose
 * `given` entry is false (NULL: all rows). */
static pd_status apply_derived(pd_config *c, const bool *given, bool strict,
                               char *err, size_t errlen) {
    for (size_t i = 0; i < FIELD_COUNT; i++) {
        const cfg_field *f = &fields[i];
        if (given != NULL && given[i]) continue;
        if (f->def == DEF_SYNC_X3 || f->def == DEF_SYNC_X2) {
            uint64_t sync = c->sync_interval_ms, k = f->def == DEF_SYNC_X3 ? 3u : 2u;
            uint64_t v = sync > f->max / k ? f->max : sync * k;
            *field_u64(c, f) = v;
        } else if (f->def == DEF_HOSTNAME) {
            pd_status s = default_node_id(c, f, strict, err, errlen);
            if (s != PD_OK) return s;
        }
    }
    return PD_OK;
}

void pd_config_defaults(pd_config *c) {
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < FIELD_COUNT; i++) {
        const cfg_field *f = &fields[i];
        if (f->def != DEF_FIXED) continue;
        switch (f->kind) {
        case CFG_MS:
        case CFG_BYTES:
        case CFG_COUNT:
            *field_u64(c, f) = f->def_u;
            break;
        case CFG_LEVEL:
            *field_int(c, f) = (int)f->def_u;
            break;
        default:
            snprintf(field_str(c, f), f->cap, "%s", f->def_s);
            break;
        }
    }
    apply_derived(c, NULL, false, NULL, 0);
}

static const char *env_lookup(char **envp, const char *name) {
    if (envp == NULL) return getenv(name);
    size_t n = strlen(name);
    for (char **e = envp; *e != NULL; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=') return *e + n + 1;
    return NULL;
}

static pd_status load_env(pd_config *c, bool *given, char **envp,
                          char *err, size_t errlen) {
    for (size_t i = 0; i < FIELD_COUNT; i++) {
        const char *val = env_lookup(envp, fields[i].env);
        if (val == NULL) continue;
        pd_status s = field_apply(c, &fields[i], fields[i].env, val, err,
                                  errlen);
        if (s != PD_OK) return s;
        given[i] = true;
    }
    return PD_OK;
}

static const char *arg_name(cfg_kind k) {
    switch (k) {
    case CFG_MS: return "MS";
    case CFG_BYTES: return "BYTES";
    case CFG_COUNT: return "N";
    case CFG_ID: return "ID";
    case CFG_NATS_URLS: return "URLS";
    case CFG_REDIS_URL: return "URL";
    case CFG_ADDR: return "HOST:PORT";
    case CFG_LEVEL: return "LEVEL";
    case CFG_TEXT: return "NAME";
    case CFG_SECRET: return "SECRET";
    case CFG_FILE: return "FILE";
    }
    return "VALUE";
}

static void default_text(const cfg_field *f, char *buf, size_t len) {
    if (f->def == DEF_SYNC_X3) snprintf(buf, len, "3 x sync interval");
    else if (f->def == DEF_SYNC_X2) snprintf(buf, len, "2 x sync interval");
    else if (f->def == DEF_HOSTNAME) snprintf(buf, len, "host name");
    else if (f->kind == CFG_LEVEL)
        snprintf(buf, len, "%s", pd_log_level_name((int)f->def_u));
    else if (f->kind == CFG_MS || f->kind == CFG_BYTES || f->kind == CFG_COUNT)
        snprintf(buf, len, "%" PRIu64, f->def_u);
    else snprintf(buf, len, "%s", f->def_s[0] ? f->def_s : "(off)");
}

/* The settings as options of the shared parser (base/cli.h), in the order
 * of `fields`, then --help and --version. */
void pd_config_cli_build(pd_config_cli *t) {
    size_t k = 0;
    memset(t, 0, sizeof *t);
    for (size_t i = 0; i < FIELD_COUNT && k < PD_CONFIG_CLI_MAX - 2; i++, k++) {
        const cfg_field *f = &fields[i];
        char name[FLAG_MAX];
        flag_name(f, name, sizeof name);
        snprintf(t->names[k], sizeof t->names[k], "%s", name + 2);
        default_text(f, t->defs[k], sizeof t->defs[k]);
        t->opts[k] = (pd_cli_opt){.name = t->names[k], .arg = arg_name(f->kind), .env = f->env,
                                  .def = t->defs[k], .help = f->meaning};
    }
    t->opts[k++] = (pd_cli_opt){.name = "help", .short_name = 'h',
                                .help = "print this help and exit"};
    t->opts[k++] = (pd_cli_opt){.name = "version", .help = "print the version and exit"};
    t->cli = (pd_cli){
        .prog = "presenced",
        .summary = "a node of the distributed user-presence service",
        .description =
            "presenced keeps the presence of users (online, away, busy, offline, custom "
            "status) from the connection events of socket servers, answers queries and "
            "announces changes over NATS, replicates its state to the other nodes and "
            "snapshots it to Redis.\n"
            "Each setting is a flag or the environment variable beside it; flags win. "
            "An invalid value stops the node; it never falls back to the default.",
        .footer = "Exit status: 0 after a clean stop (SIGTERM, SIGINT), 1 if the node could "
                  "not start or failed, 2 for a bad setting.\n"
                  "Endpoints with PRESENCE_METRICS_ADDR: /metrics (Prometheus), "
                  "/healthz (alive), /readyz (caught up and ready).\n",
        .man_section = 8,
        .opts = t->opts,
        .nopts = k,
    };
}

/* Applies the flags found by the parser, in argv order (the last wins). */
static pd_status load_flags(pd_config *c, bool *given, const pd_config_cli *t,
                            const pd_cli_args *a, char *err, size_t errlen) {
    for (size_t i = 0; i < a->nhits; i++) {
        size_t row = a->hits[i].opt;
        if (row >= FIELD_COUNT) continue; /* --help, --version */
        char name[FLAG_MAX + 2];
        snprintf(name, sizeof name, "--%s", t->names[row]);
        pd_status s = field_apply(c, &fields[row], name, a->hits[i].val, err, errlen);
        if (s != PD_OK) return s;
        given[row] = true;
    }
    return PD_OK;
}

/* ---- credentials ------------------------------------------------------------ */

static const cfg_field *field_by_env(const char *env) {
    for (size_t i = 0; i < FIELD_COUNT; i++)
        if (strcmp(fields[i].env, env) == 0) return &fields[i];
    return NULL;
}

/* The name to show for the setting env: its flag if argv gives it, else
 * the variable. */
static const char *src_name(const char *env, int argc, char **argv, char *buf, size_t len) {
    const cfg_field *f = field_by_env(env);
    if (f == NULL) return env;
    flag_name(f, buf, len);
    size_t n = strlen(buf);
    for (int i = 1; i < argc; i++)
        if (strncmp(argv[i], buf, n) == 0 && (argv[i][n] == '\0' || argv[i][n] == '='))
            return buf;
    return env;
}

const char *pd_config_source_name(const char *env, int argc, char **argv, char *buf,
                                  size_t len) {
    return src_name(env, argc, argv, buf, len);
}

size_t pd_config_file_settings(const pd_config *c, pd_config_file *out, size_t max) {
    size_t n = 0;
    for (size_t i = 0; i < FIELD_COUNT && n < max; i++) {
        if (fields[i].kind != CFG_FILE) continue;
        out[n++] = (pd_config_file){fields[i].env, (const char *)c + fields[i].off};
    }
    return n;
}

/* "a: needs b" or "a and b: ..." with a given first, named as given. */
static pd_status auth_fail(int argc, char **argv, const char *a, const char *b,
                           const char *what, char *err, size_t errlen) {
    char fa[FLAG_MAX], fb[FLAG_MAX];
    return fail(err, errlen, "%s: %s %s", src_name(a, argc, argv, fa, sizeof fa), what,
                src_name(b, argc, argv, fb, sizeof fb));
}

static bool url_has_credentials(const char *url) {
    pd_redis_target t;
    return pd_redis_url_parse(url, &t) == 0 && (t.user[0] != '\0' || t.password[0] != '\0');
}

static pd_status check_auth(const pd_config *c, int argc, char **argv, char *err,
                            size_t errlen) {
    bool user = c->nats_user[0], pass = c->nats_password[0], token = c->nats_token[0];
    bool nkey = c->nats_nkey_seed_file[0], creds = c->nats_creds_file[0];
    bool cert = c->nats_tls_cert[0], key = c->nats_tls_key[0];
    bool ruser = c->redis_user[0], rpass = c->redis_password[0];
#define AUTH_FAIL(a, b, what) auth_fail(argc, argv, a, b, what, err, errlen)
    if (token && (user || pass))
        return AUTH_FAIL("PRESENCE_NATS_TOKEN",
                         user ? "PRESENCE_NATS_USER" : "PRESENCE_NATS_PASSWORD",
                         "a NATS token excludes a user and password; drop it or");
    if (user && !pass)
        return AUTH_FAIL("PRESENCE_NATS_USER", "PRESENCE_NATS_PASSWORD", "needs its password,");
    if (pass && !user)
        return AUTH_FAIL("PRESENCE_NATS_PASSWORD", "PRESENCE_NATS_USER", "needs its user,");
    if (nkey && creds)
        return AUTH_FAIL("PRESENCE_NATS_NKEY_SEED_FILE", "PRESENCE_NATS_CREDS_FILE",
                         "one NATS identity only: drop it or");
    if ((nkey || creds) && (user || token))
        return AUTH_FAIL(nkey ? "PRESENCE_NATS_NKEY_SEED_FILE" : "PRESENCE_NATS_CREDS_FILE",
                         user ? "PRESENCE_NATS_USER" : "PRESENCE_NATS_TOKEN",
                         "one NATS identity only: drop it or");
    if (cert && !key)
        return AUTH_FAIL("PRESENCE_NATS_TLS_CERT", "PRESENCE_NATS_TLS_KEY", "needs its key,");
    if (key && !cert)
        return AUTH_FAIL("PRESENCE_NATS_TLS_KEY", "PRESENCE_NATS_TLS_CERT",
                         "needs its certificate,");
    if (ruser && !rpass)
        return AUTH_FAIL("PRESENCE_REDIS_USER", "PRESENCE_REDIS_PASSWORD", "needs its password,");
    if ((ruser || rpass) && url_has_credentials(c->redis_url))
        return AUTH_FAIL(ruser ? "PRESENCE_REDIS_USER" : "PRESENCE_REDIS_PASSWORD",
                         "PRESENCE_REDIS_URL", "give Redis credentials once: drop it or the "
                         "user:password@ of");
#undef AUTH_FAIL
    return PD_OK;
}

pd_status pd_config_check_auth(const pd_config *c, char *err, size_t errlen) {
    return check_auth(c, 0, NULL, err, errlen);
}

pd_status pd_config_set(pd_config *c, const char *name, const char *val, char *err,
                        size_t errlen) {
    const cfg_field *f = strncmp(name, "--", 2) == 0 ? field_by_flag(name + 2, strlen(name + 2))
                                                     : field_by_env(name);
    if (f == NULL) return fail(err, errlen, "%.200s: unknown setting", name);
    return field_apply(c, f, name, val, err, errlen);
}

pd_status pd_config_load_env_prefix(pd_config *c, const char *prefix, char **envp, char *err,
                                    size_t errlen) {
    size_t n = strlen(prefix);
    if (err != NULL && errlen > 0) err[0] = '\0';
    pd_config_defaults(c);
    for (size_t i = 0; i < FIELD_COUNT; i++) {
        if (strncmp(fields[i].env, prefix, n) != 0) continue;
        const char *val = env_lookup(envp, fields[i].env);
        if (val == NULL) continue;
        pd_status s = field_apply(c, &fields[i], fields[i].env, val, err, errlen);
        if (s != PD_OK) return s;
    }
    return PD_OK;
}

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Copies the n bytes at p to dst (cap bytes) decoding %XX; -1 if it does
 * not fit, an escape is bad, or the result holds a NUL. */
static int unescape(const char *p, size_t n, char *dst, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '%') {
            if (i + 2 >= n) return -1;
            int a = hexval(p[i + 1]), b = hexval(p[i + 2]);
            if (a < 0 || b < 0 || (a == 0 && b == 0)) return -1;
            ch = (char)(a * 16 + b);
            i += 2;
        }
        if (o + 1 >= cap) return -1;
        dst[o++] = ch;
    }
    dst[o] = '\0';
    return 0;
}

int pd_redis_url_parse(const char *url, pd_redis_target *t) {
    const char *scheme = "redis://";
    memset(t, 0, sizeof *t);
    if (strncmp(url, scheme, strlen(scheme)) != 0) return -1;
    const char *p = url + strlen(scheme);
    size_t auth_len = strcspn(p, "/");
    const char *at = NULL;
    for (size_t i = 0; i < auth_len; i++)
        if (p[i] == '@') at = p + i; /* the last '@': a password may hold one escaped or not */
    if (at != NULL) {
        size_t an = (size_t)(at - p), un = strcspn(p, ":");
        /* "redis://x@host" is refused: a user or a password? Say ":x@". */
        if (un >= an) return -1;
        if (unescape(p, un, t->user, sizeof t->user) != 0 ||
            unescape(p + un + 1, an - un - 1, t->password, sizeof t->password) != 0)
            return -1;
        p = at + 1;
    }
    size_t hn = strcspn(p, ":/");
    if (hn == 0 || hn >= sizeof t->host) return -1;
    memcpy(t->host, p, hn);
    t->host[hn] = '\0';
    t->port = 6379;
    const char *rest = p + hn;
    if (*rest == ':') {
        const char *q = rest + 1;
        size_t dn = strspn(q, "0123456789");
        if (dn == 0 || dn > 5 || (q[dn] != '\0' && q[dn] != '/')) return -1;
        t->port = atoi(q);
        if (t->port < 1 || t->port > 65535) return -1;
        rest = q + dn;
    }
    /* Database 0 only: the node never sends SELECT (and the sample ACL
     * forbids it), so another number would be silently ignored. */
    if (*rest == '/' && strcmp(rest, "/") != 0 && strcmp(rest, "/0") != 0) return -1;
    return 0;
}

int pd_config_redis_target(const pd_config *c, pd_redis_target *t) {
    if (pd_redis_url_parse(c->redis_url, t) != 0) return -1;
    if (c->redis_password[0] != '\0') {
        snprintf(t->user, sizeof t->user, "%s", c->redis_user);
        snprintf(t->password, sizeof t->password, "%s", c->redis_password);
    }
    return 0;
}

pd_status pd_config_load(pd_config *c, int argc, char **argv, char **envp,
                         char *err, size_t errlen) {
    bool given[FIELD_COUNT] = {false};
    pd_config_cli *t = pd_calloc(1, sizeof *t);
    pd_cli_args a = {.hits = pd_calloc((size_t)argc + 1, sizeof *a.hits)};
    char perr[256];
    pd_status s = fail(err, errlen, "out of memory");
    pd_config_defaults(c);
    if (t == NULL || a.hits == NULL) goto done;
    if (err != NULL && errlen > 0) err[0] = '\0';
    pd_config_cli_build(t);
    pd_status ps = pd_cli_parse(&t->cli, argc, argv, &a, perr, sizeof perr);
    c->help = pd_cli_has(&t->cli, &a, "help");
    c->version = pd_cli_has(&t->cli, &a, "version");
    s = PD_OK;
    if (c->help || c->version) goto done;
    if (ps != PD_OK) {
        s = fail(err, errlen, "%s", perr);
    } else if (a.dashdash || a.first_operand < argc) {
        s = fail(err, errlen, "'%.200s': unexpected argument (settings are given as --name "
                 "VALUE; see --help)", a.first_operand < argc ? argv[a.first_operand] : "--");
    } else if ((s = load_env(c, given, envp, err, errlen)) == PD_OK &&
               (s = load_flags(c, given, t, &a, err, errlen)) == PD_OK &&
               (s = check_auth(c, argc, argv, err, errlen)) == PD_OK) {
        s = apply_derived(c, given, true, err, errlen);
    }
done:
    pd_free(a.hits);
    pd_free(t);
    return s;
}

void pd_config_usage(const pd_cli_out *out, const char *prog) {
    char flag[FLAG_MAX + 16], name[FLAG_MAX], def[64];
    pd_cli_printf(out, "Usage: %s [--setting VALUE | --setting=VALUE]...\n\n"
            "Each setting is a flag or the environment variable beside it; "
            "flags win.\nAn invalid value stops the node; it never falls "
            "back to the default.\n\n", prog != NULL ? prog : "presenced");
    pd_cli_printf(out, "  %-27s %-31s %-23s %s\n", "flag", "variable", "default",
            "meaning");
    for (size_t i = 0; i < FIELD_COUNT; i++) {
        const cfg_field *f = &fields[i];
        flag_name(f, name, sizeof name);
        snprintf(flag, sizeof flag, "%s %s", name, arg_name(f->kind));
        default_text(f, def, sizeof def);
        pd_cli_printf(out, "  %-27s %-31s %-23s %s\n", flag, f->env, def,
                f->meaning);
    }
    pd_cli_printf(out, "  %-27s %s\n  %-27s %s\n", "-h, --help",
            "print this help and exit", "--version",
            "print the version and exit");
}

/* Copy the URL list src to dst with any "user:password@" replaced by
 * "***@", so that the start log does not leak credentials. */
static void redact_urls(const char *src, char *dst, size_t len) {
    size_t o = 0;
    const char *p = src;
    while (*p != '\0' && o + 1 < len) {
        size_t n = strcspn(p, ",");
        const char *auth = strstr(p, "://");
        const char *at = NULL;
        if (auth != NULL && auth < p + n) {
            auth += 3;
            size_t an = strcspn(auth, ",/");
            for (size_t k = 0; k < an; k++)
                if (auth[k] == '@') at = auth + k;
        }
        if (at != NULL)
            o += (size_t)snprintf(dst + o, len - o, "%.*s***%.*s",
                                  (int)(auth - p), p,
                                  (int)(p + n - at), at);
        else
            o += (size_t)snprintf(dst + o, len - o, "%.*s", (int)n, p);
        if (o >= len) break;
        if (p[n] == '\0') break;
        o += (size_t)snprintf(dst + o, len - o, ",");
        p += n + 1;
    }
    if (o >= len) o = len - 1;
    dst[o] = '\0';
}

void pd_config_describe(const pd_config *c, char *buf, size_t len) {
    char nats[PD_CONFIG_URL_MAX], redis[PD_CONFIG_URL_MAX];
    if (buf == NULL || len == 0) return;
    redact_urls(c->nats_url, nats, sizeof nats);
    redact_urls(c->redis_url, redis, sizeof redis);
    /* Which credentials are in use, never what they are. */
    const char *nats_auth = c->nats_creds_file[0] ? "creds" : c->nats_nkey_seed_file[0] ? "nkey"
                          : c->nats_token[0] ? "token" : c->nats_user[0] ? "user" : "none";
    bool tls = c->nats_tls_ca[0] || c->nats_tls_cert[0] || strstr(c->nats_url, "tls://");
    pd_redis_target rt;
    bool redis_auth = pd_config_redis_target(c, &rt) == 0 && rt.password[0] != '\0';
    snprintf(buf, len, "node=%s nats=%s redis=%s prefix=%s idle=%" PRIu64
             "ms offline=%" PRIu64 "ms sync=%" PRIu64 "ms node_timeout=%"
             PRIu64 "ms suspicion=%" PRIu64 "ms server_timeout=%" PRIu64 "ms snapshot=%" PRIu64
             "ms max_msg=%" PRIu64 "B log=%s nats_auth=%s nats_tls=%s redis_auth=%s",
             c->node_id, nats, redis,
             c->subject_prefix, c->idle_timeout_ms, c->offline_delay_ms,
             c->sync_interval_ms, c->node_timeout_ms, c->suspicion_ms, c->server_timeout_ms,
             c->snapshot_interval_ms, c->max_msg_bytes,
             pd_log_level_name(c->log_level), nats_auth, tls ? "on" : "off",
             redis_auth ? "on" : "off");
    size_t used = strlen(buf); /* the limits, after the rest */
    if (used + 1 < len)
        snprintf(buf + used, len - used, " max_devices_per_user=%" PRIu64
                 " max_users=%" PRIu64 " max_query_users=%" PRIu64 " notify_interval=%" PRIu64
                 "ms activity_resolution=%" PRIu64 "ms user_retention=%" PRIu64
                 "ms max_batch=%" PRIu64 " sync_parts_timeout=%" PRIu64 "ms",
                 c->max_devices_per_user, c->max_users_per_node, c->max_query_users,
                 c->notify_min_interval_ms, c->activity_resolution_ms, c->user_retention_ms,
                 c->max_batch, c->sync_parts_timeout_ms);
}

size_t pd_url_split(const char *list, char *buf, size_t buflen, const char **urls, size_t max) {
    size_t n = 0, len = strlen(list);
    if (buflen == 0 || len >= buflen) return 0;
    memcpy(buf, list, len + 1);
    for (char *p = buf; n < max && *p;) {
        char *comma = strchr(p, ',');
        if (comma) *comma = '\0';
        if (*p) urls[n++] = p;
        if (comma == NULL) break;
        p = comma + 1;
    }
    return n;
}

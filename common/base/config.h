/* config.h - the settings of presenced (docs/protocol.md section 8).
 *
 * Every setting has an environment variable PRESENCE_X_Y and a flag --x-y
 * (also --x-y=VALUE); flags win over the environment, and both win over the
 * defaults. A value that does not parse or is out of range is an error that
 * names the setting: it is never replaced by the default. */
#ifndef PD_CONFIG_H
#define PD_CONFIG_H
#include "base/cli.h"
#include "base/ids.h"
#include "base/status.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define PD_CONFIG_URL_MAX 1024
#define PD_CONFIG_PATH_MAX 1024   /* file settings (NKey seed, creds, TLS) */
#define PD_CONFIG_SECRET_MAX 512  /* user names, passwords, tokens */

/* CHECKLIST: new setting? Add the field here, a row to `fields` in config.c
 * (which gives it its variable, flag, usage line and checks), a term to
 * pd_config_describe, docs/protocol.md section 8 and tests/test_config.c. */
typedef struct pd_config {
    uint64_t idle_timeout_ms;      /* PRESENCE_IDLE_TIMEOUT_MS */
    uint64_t offline_delay_ms;     /* PRESENCE_OFFLINE_DELAY_MS */
    uint64_t sync_interval_ms;     /* PRESENCE_SYNC_INTERVAL_MS */
    uint64_t node_timeout_ms;      /* PRESENCE_NODE_TIMEOUT_MS */
    uint64_t suspicion_ms;         /* PRESENCE_SUSPICION_MS: suspected, then down */
    uint64_t server_timeout_ms;    /* PRESENCE_SERVER_TIMEOUT_MS */
    uint64_t snapshot_interval_ms; /* PRESENCE_SNAPSHOT_INTERVAL_MS */
    uint64_t max_msg_bytes;        /* PRESENCE_MAX_MSG_BYTES */
    /* Limits (docs/protocol.md section 8, "Limits"): refused with
     * too_large, counted in a metric. */
    uint64_t max_devices_per_user; /* PRESENCE_MAX_DEVICES_PER_USER */
    uint64_t max_users_per_node;   /* PRESENCE_MAX_USERS_PER_NODE */
    uint64_t max_query_users;      /* PRESENCE_MAX_QUERY_USERS (get users, online limit) */
    uint64_t notify_min_interval_ms; /* PRESENCE_NOTIFY_MIN_INTERVAL_MS, 0 = off */
    uint64_t activity_resolution_ms; /* PRESENCE_ACTIVITY_RESOLUTION_MS, 0 = exact */
    uint64_t user_retention_ms;    /* PRESENCE_USER_RETENTION_MS, 0 = never forget */
    uint64_t max_batch;            /* PRESENCE_MAX_BATCH: events of one batch */
    uint64_t sync_parts_timeout_ms; /* PRESENCE_SYNC_PARTS_TIMEOUT_MS */
    uint64_t test_fail_allocs;     /* PRESENCE_TEST_FAIL_ALLOCS (tests only) */
    uint64_t test_clock_offset_ms; /* PRESENCE_TEST_CLOCK_OFFSET_MS (tests only) */
    uint64_t max_clock_skew_ms;    /* PRESENCE_MAX_CLOCK_SKEW_MS */
    char node_id[PD_ID_MAX + 1];   /* PRESENCE_NODE_ID */
    char nats_url[PD_CONFIG_URL_MAX];  /* PRESENCE_NATS_URL, comma-separated */
    char redis_url[PD_CONFIG_URL_MAX]; /* PRESENCE_REDIS_URL */
    char subject_prefix[PD_ID_MAX + 1]; /* PRESENCE_SUBJECT_PREFIX */
    char metrics_addr[64];         /* PRESENCE_METRICS_ADDR, "" = off */
    char redis_prefix[PD_ID_MAX + 1]; /* PRESENCE_REDIS_PREFIX */
    uint64_t stream_max_age_ms;    /* PRESENCE_STREAM_MAX_AGE_MS */
    uint64_t stream_max_bytes;     /* PRESENCE_STREAM_MAX_BYTES */
    uint64_t stream_replicas;      /* PRESENCE_STREAM_REPLICAS */
    uint64_t inbox_max_msgs;       /* PRESENCE_INBOX_MAX_MSGS */
    uint64_t inbox_max_bytes;      /* PRESENCE_INBOX_MAX_BYTES */
    /* NATS and Redis credentials ("" = not set); see pd_config_check_auth. */
    char nats_user[PD_CONFIG_SECRET_MAX];          /* PRESENCE_NATS_USER */
    char nats_password[PD_CONFIG_SECRET_MAX];      /* PRESENCE_NATS_PASSWORD (secret) */
    char nats_token[PD_CONFIG_SECRET_MAX];         /* PRESENCE_NATS_TOKEN (secret) */
    char nats_nkey_seed_file[PD_CONFIG_PATH_MAX];  /* PRESENCE_NATS_NKEY_SEED_FILE */
    char nats_creds_file[PD_CONFIG_PATH_MAX];      /* PRESENCE_NATS_CREDS_FILE */
    char nats_tls_ca[PD_CONFIG_PATH_MAX];          /* PRESENCE_NATS_TLS_CA */
    char nats_tls_cert[PD_CONFIG_PATH_MAX];        /* PRESENCE_NATS_TLS_CERT */
    char nats_tls_key[PD_CONFIG_PATH_MAX];         /* PRESENCE_NATS_TLS_KEY */
    char redis_user[PD_CONFIG_SECRET_MAX];         /* PRESENCE_REDIS_USER */
    char redis_password[PD_CONFIG_SECRET_MAX];     /* PRESENCE_REDIS_PASSWORD (secret) */
    int log_level;                 /* PRESENCE_LOG_LEVEL, a PD_LOG_* value */
    bool help;                     /* --help or -h was given */
    bool version;                  /* --version was given */
} pd_config;

/* Fill c with the defaults. The node and server timeouts are 3 x the default
 * sync interval; node_id is the host name if that is a valid id, else "". */
void pd_config_defaults(pd_config *c);

/* Fill c from defaults, then the environment, then the flags in
 * argv[1..argc-1]. envp is a NULL-terminated "KEY=VALUE" array, or NULL to
 * read the process environment with getenv. The node and server timeouts
 * default to 3 x the final sync interval unless set explicitly.
 *
 * Flags are read by the shared parser (base/cli.h): --name VALUE or
 * --name=VALUE, exact names only. File settings are checked for form only;
 * node/ checks that the files are readable (pd_config_check_files).
 *
 * If --help/-h or --version appears, the matching bool is set and PD_OK is
 * returned at once, without checking the other settings (c then holds the
 * defaults). On a bad value, an unknown flag or a flag without a value,
 * returns PD_ECONFIG and writes a message that starts with the variable or
 * flag name into err (errlen bytes, always NUL-terminated; err may be NULL).
 * c is only meaningful after PD_OK. */
pd_status pd_config_load(pd_config *c, int argc, char **argv, char **envp,
                         char *err, size_t errlen);

/* The settings as the option table of the shared parser (base/cli.h): one
 * row per setting (its flag, variable, default and meaning), then --help
 * and --version. For pd_config_load and the man page generator. */
#define PD_CONFIG_CLI_MAX 64
typedef struct pd_config_cli {
    pd_cli cli;
    pd_cli_opt opts[PD_CONFIG_CLI_MAX];
    char names[PD_CONFIG_CLI_MAX][64];
    char defs[PD_CONFIG_CLI_MAX][64];
} pd_config_cli;
void pd_config_cli_build(pd_config_cli *t);

/* A file setting (NKey seed, creds, TLS CA, certificate, key): its
 * variable and its value in a config ("" = not set). */
typedef struct pd_config_file {
    const char *env;
    const char *path;
} pd_config_file;

/* Fills out with the file settings of c (at most max); returns how many.
 * common/ does no file I/O: node/config_files.c checks that they are
 * readable (pd_config_check_files). */
size_t pd_config_file_settings(const pd_config *c, pd_config_file *out, size_t max);

/* The name under which the setting env was given: its flag ("--nats-tls-ca")
 * if argv (argc entries, may be 0/NULL) has it, else env. buf holds the flag. */
const char *pd_config_source_name(const char *env, int argc, char **argv, char *buf,
                                  size_t len);

/* Print the --help text: one line per setting with its flag, variable,
 * default and meaning, through out (common/ does no I/O). prog is argv[0]
 * (NULL means "presenced"). */
void pd_config_usage(const pd_cli_out *out, const char *prog);

/* One line for the start log: "node=n1 nats=... idle=300000ms ...".
 * User names and passwords in URLs are shown as "***". */
/* Splits a comma-separated URL list into at most max URLs (copied into
 * buf, which must hold the list); returns how many. nats.c takes a list
 * through natsOptions_SetServers, not natsOptions_SetURL. */
size_t pd_url_split(const char *list, char *buf, size_t buflen, const char **urls, size_t max);

void pd_config_describe(const pd_config *c, char *buf, size_t len);

/* ---- credentials (NATS and Redis) ---- */

/* Checks the combination of the credential settings, which each row alone
 * cannot: a NATS user needs its password and excludes a token, an NKey seed
 * file excludes a creds file and both exclude user and token, a TLS
 * certificate needs its key (and the other way round), a Redis user needs a
 * password, and credentials in PRESENCE_REDIS_URL exclude
 * PRESENCE_REDIS_USER/PASSWORD. pd_config_load runs it; tools that fill
 * the settings themselves call it. The message names the settings, never
 * a secret's value. */
pd_status pd_config_check_auth(const pd_config *c, char *err, size_t errlen);

/* Sets one setting by its variable (PRESENCE_NATS_TLS_CA) or flag
 * (--nats-tls-ca) name, with the same checks as loading. For tools that
 * take a few of the settings; the caller runs pd_config_check_auth after. */
pd_status pd_config_set(pd_config *c, const char *name, const char *val, char *err,
                        size_t errlen);

/* Fills c with the defaults, then the variables whose name starts with
 * prefix (e.g. "PRESENCE_NATS_"); envp as in pd_config_load. Does not run
 * pd_config_check_auth. For tools that need only the NATS settings. */
pd_status pd_config_load_env_prefix(pd_config *c, const char *prefix, char **envp, char *err,
                                    size_t errlen);

/* Where and how to reach Redis. */
typedef struct pd_redis_target {
    char host[256];
    int port;
    char user[PD_CONFIG_SECRET_MAX];     /* "" = the default user */
    char password[PD_CONFIG_SECRET_MAX]; /* "" = no AUTH */
} pd_redis_target;

/* Parses redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] (USER and PASSWORD may
 * be %XX-escaped; PORT defaults to 6379). Returns 0, or -1 if url is not
 * such a URL (t is then unspecified). */
int pd_redis_url_parse(const char *url, pd_redis_target *t);

/* The Redis target of a loaded config: the URL, with the credentials of
 * PRESENCE_REDIS_USER/PASSWORD when those are set. Returns 0 or -1 (a URL
 * pd_config_load would have refused). */
int pd_config_redis_target(const pd_config *c, pd_redis_target *t);

#endif

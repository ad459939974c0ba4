/* config.h - the settings of presenced (PROTOCOL.md section 8).
 *
 * Every setting has an environment variable PRESENCE_X_Y and a flag --x-y
 * (also --x-y=VALUE); flags win over the environment, and both win over the
 * defaults. A value that does not parse or is out of range is an error that
 * names the setting: it is never replaced by the default. */
#ifndef PD_CONFIG_H
#define PD_CONFIG_H
#include "ids.h"
#include "status.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define PD_CONFIG_URL_MAX 1024

/* CHECKLIST: new setting? Add the field here, a row to `fields` in config.c
 * (which gives it its variable, flag, usage line and checks), a term to
 * pd_config_describe, PROTOCOL.md section 8 and tests/test_config.c. */
typedef struct pd_config {
    uint64_t idle_timeout_ms;      /* PRESENCE_IDLE_TIMEOUT_MS */
    uint64_t offline_delay_ms;     /* PRESENCE_OFFLINE_DELAY_MS */
    uint64_t sync_interval_ms;     /* PRESENCE_SYNC_INTERVAL_MS */
    uint64_t node_timeout_ms;      /* PRESENCE_NODE_TIMEOUT_MS */
    uint64_t server_timeout_ms;    /* PRESENCE_SERVER_TIMEOUT_MS */
    uint64_t snapshot_interval_ms; /* PRESENCE_SNAPSHOT_INTERVAL_MS */
    uint64_t max_msg_bytes;        /* PRESENCE_MAX_MSG_BYTES */
    uint64_t test_fail_allocs;     /* PRESENCE_TEST_FAIL_ALLOCS (tests only) */
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
 * If --help/-h or --version appears, the matching bool is set and PD_OK is
 * returned at once, without checking the other settings (c then holds the
 * defaults). On a bad value, an unknown flag or a flag without a value,
 * returns PD_ECONFIG and writes a message that starts with the variable or
 * flag name into err (errlen bytes, always NUL-terminated; err may be NULL).
 * c is only meaningful after PD_OK. */
pd_status pd_config_load(pd_config *c, int argc, char **argv, char **envp,
                         char *err, size_t errlen);

/* Print the --help text: one line per setting with its flag, variable,
 * default and meaning. prog is argv[0] (NULL means "presenced"). */
void pd_config_usage(FILE *out, const char *prog);

/* One line for the start log: "node=n1 nats=... idle=300000ms ...".
 * User names and passwords in URLs are shown as "***". */
/* Splits a comma-separated URL list into at most max URLs (copied into
 * buf, which must hold the list); returns how many. nats.c takes a list
 * through natsOptions_SetServers, not natsOptions_SetURL. */
size_t pd_url_split(const char *list, char *buf, size_t buflen, const char **urls, size_t max);

void pd_config_describe(const pd_config *c, char *buf, size_t len);

#endif

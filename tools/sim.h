/* sim.h - the parts of presence-sim shared by its files: options
 * (sim_opts.c), the NATS side (sim_net.c), the report (sim_report.c) and
 * the run loop (presence_sim.c).
 *
 * Threads: the main thread owns the sim, the oracle and every send. nats.c
 * delivers replies and resync requests on its own threads; those callbacks
 * touch only sim_replies, under its mutex, and never send anything: a
 * resync request just raises a flag that the main loop answers. */
#ifndef PD_SIM_H
#define PD_SIM_H
#include <nats/nats.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "wire/codec.h"
#include "sim_oracle.h"

#define SIM_EXIT_FAILED 1
#define SIM_EXIT_USAGE 2
#define SIM_EXIT_NATS 3

#define SIM_NODES_MAX 32
#define SIM_SERVERS_MAX 4096
#define SIM_ERR_CODES 16  /* distinct error codes counted; more go to "other" */
#define SIM_ERR_SHOWN 5   /* first errors printed in full on stderr */

/* The load mix: one weight per kind of generated event. */
typedef enum {
    SIM_MIX_CONNECT, SIM_MIX_DISCONNECT, SIM_MIX_ACTIVITY, SIM_MIX_IDLE,
    SIM_MIX_STATUS, SIM_MIX_CUSTOM, SIM_MIX_COUNT
} sim_mix_kind;

typedef struct {
    const char *nats_url;
    const char *prefix;
    const char *nodes_arg;            /* "n1,n2": split into nodes[] */
    char nodes_buf[1024];
    const char *nodes[SIM_NODES_MAX];
    uint32_t nnodes;
    const char *server_prefix, *user_prefix;
    uint32_t servers, users, devices;
    double rate;                      /* load events per second, 0 = flat out */
    int64_t duration_ms;              /* -1 = no time limit */
    uint64_t events;                  /* 0 = no count limit */
    uint64_t seed;
    uint32_t heartbeat_ms;            /* 0 = no heartbeats */
    int64_t storm_at_ms;              /* -1 = no storm */
    double storm_fraction;
    int64_t crash_at_ms;              /* -1 = no crash */
    uint32_t crash_server;
    uint32_t mix[SIM_MIX_COUNT];
    uint32_t max_inflight;
    int64_t drain_ms;
    bool shutdown_at_end, json, dump_users, quiet;
} sim_opts;

/* Parses argv (argv[0] the program, then options only) with the shared
 * parser (base/cli.h) over defaults taken from the environment. Returns 0,
 * or SIM_EXIT_USAGE after printing why on stderr; --help and --version set
 * *help and *version (nothing else is checked then). */
int sim_opts_parse(sim_opts *o, int argc, char **argv, bool *help, bool *version);
void sim_opts_usage(FILE *out);
/* The option table as the shared parser's (for the man page). */
struct pd_cli;
const struct pd_cli *sim_opts_cli(void);

/* Reply bookkeeping, written by the reply callback under mu. */
typedef struct {
    char code[32];
    uint64_t n;
} sim_errcount;

typedef struct {
    pthread_mutex_t mu;
    uint8_t *pending;     /* ring by request id: event type + 1, 0 once answered */
    uint64_t cap;         /* slots of pending, a power of two */
    uint64_t requests;    /* ids handed out (main thread only, read under mu) */
    uint64_t answered, ok, errors;
    sim_errcount codes[SIM_ERR_CODES];
    uint32_t ncodes;
    uint64_t other_codes; /* errors whose code did not fit in codes[] */
    char shown[SIM_ERR_SHOWN][256];
    uint32_t nshown;
    uint32_t resync_wanted; /* bit i: node i asked for a resync */
    uint64_t resyncs;       /* resync requests received */
} sim_replies;

typedef struct sim sim;

/* The closure of one P.resync.<node> subscription. */
typedef struct {
    sim *s;
    uint32_t node;
} sim_resync_ctx;

struct sim {
    sim_opts opt;
    sim_oracle oracle;
    uint64_t rng;
    natsConnection *nc;
    natsSubscription *reply_sub;
    natsSubscription *resync_sub[SIM_NODES_MAX];
    sim_resync_ctx resync_ctx[SIM_NODES_MAX];
    char inbox[128];
    sim_replies rep;
    char (*server_id)[64];   /* per server: "<server-prefix>-<k>" */
    int64_t *seq;            /* per server: last seq sent */
    uint64_t *hb_next;       /* per server: monotonic ms of the next heartbeat */
    bool *crashed;
    uint64_t start_ms, now_ms, wall_ms; /* read once per loop turn */
    uint64_t load_end_ms;    /* monotonic ms when the load stopped */
    uint64_t load_sent;      /* paced events (the --events count) */
    uint64_t sent[PD_EV_COUNT];
    uint64_t sent_total;
    uint64_t publish_failures;
    uint32_t crashed_devices;
    bool stormed, crash_done, conn_closed;
    msgpack_sbuffer sb;
};

/* ---- sim_net.c ------------------------------------------------------------ */

/* Connects and subscribes (reply inbox, P.resync.<node> per node). On
 * failure *what names the step that failed. */
natsStatus sim_net_start(sim *s, const char **what);
void sim_net_stop(sim *s);
/* Sends ev from server (index; its seq and the run's ts are filled in) to
 * that server's node as a request; sync carries n conns. False if the
 * publish failed (counted; the connection may be gone). */
bool sim_net_send(sim *s, uint32_t server, pd_event *ev, const pd_sync_conn *sync, uint32_t n);
/* Requests sent and not answered yet. */
uint64_t sim_net_inflight(sim *s);
/* Takes the set of nodes (bits) that asked for a resync since last time. */
uint32_t sim_net_take_resyncs(sim *s);
/* The node a server is attached to (round-robin). */
const char *sim_node_of(const sim *s, uint32_t server);

/* ---- sim_report.c --------------------------------------------------------- */

void sim_report_progress(sim *s);
/* Prints the summary (text or JSON) on stdout; returns the exit code. */
int sim_report_summary(sim *s);

#endif

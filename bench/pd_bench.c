/* pd_bench.c - pd-bench: options and subcommand dispatch (see bench.h).
 * bench/bench.sh starts the servers and runs the subcommands in order. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "bench.h"

typedef enum { O_STR, O_DBL, O_U32, O_U64, O_BOOL } opt_kind;

typedef struct {
    const char *name;
    opt_kind kind;
    size_t off;
    const char *help;
} opt_def;

#define F(field) offsetof(bench_opts, field)

static const opt_def opts[] = {
    {"--url", O_STR, F(url), "NATS URL (default nats://127.0.0.1:4222)"},
    {"--prefix", O_STR, F(prefix), "presence subject prefix, or the subject base of nats-*"},
    {"--mode", O_STR, F(mode), "nats-lat: onehop or relay; churn: tag of the user ids"},
    {"--nodes", O_STR, F(nodes_arg), "node ids, comma-separated (default n1)"},
    {"--rate", O_DBL, F(rate), "messages or events per second"},
    {"--secs", O_DBL, F(secs), "seconds of paced sending; notes: of counting"},
    {"--count", O_U64, F(count),
     "nats-rate: messages; load, converge, model: devices; churn: users; batch-rate: events"},
    {"--size", O_U32, F(size), "payload bytes (default: a traced status event's size)"},
    {"--subs", O_U32, F(subs), "relay: subscribers behind the relay (default 2)"},
    {"--users", O_U32, F(users), "pd-lat: users (default 10000); load, model: users (default count)"},
    {"--trace-every", O_U32, F(trace_every), "pd-lat: trace one event in N (0: none)"},
    {"--batch", O_U32, F(batch), "batch-rate: events per batch (default 1000)"},
    {"--asap", O_BOOL, F(asap), "nats.c SendAsap: 1 or 0 (default 1)"},
    {"--timeout", O_DBL, F(timeout), "converge: seconds to wait (default 30)"},
    {"--replay", O_BOOL, F(replay), "model: 1 to also replay the deltas as a restart without snapshot"},
};
#define NOPTS (sizeof opts / sizeof opts[0])

static void usage(FILE *f) {
    fprintf(f, "usage: pd-bench nats-lat|nats-rate|relay|pd-lat|load|converge|flood|churn|batch-rate|stub-node|stub-converge|model|notes [options]\n\n"
               "One measurement per run: progress on stderr, one JSON object on stdout.\n"
               "bench/bench.sh starts the servers and runs these in order.\n\noptions:\n");
    for (size_t i = 0; i < NOPTS; i++) fprintf(f, "  %-14s %s\n", opts[i].name, opts[i].help);
}

static bool split_nodes(bench_opts *o) {
    snprintf(o->nodes_buf, sizeof o->nodes_buf, "%s", o->nodes_arg);
    o->nnodes = 0;
    for (char *save = NULL, *t = strtok_r(o->nodes_buf, ",", &save); t;
         t = strtok_r(NULL, ",", &save)) {
        if (o->nnodes == BENCH_NODES_MAX) return false;
        o->nodes[o->nnodes++] = t;
    }
    return o->nnodes > 0;
}

static bool set_opt(bench_opts *o, const opt_def *d, const char *v) {
    char *p = (char *)o + d->off, *end = NULL;
    switch (d->kind) {
    case O_STR: *(const char **)p = v; return true;
    case O_DBL: *(double *)p = strtod(v, &end); break;
    case O_U32: *(uint32_t *)p = (uint32_t)strtoul(v, &end, 10); break;
    case O_U64: *(uint64_t *)p = strtoull(v, &end, 10); break;
    case O_BOOL: *(bool *)p = strtoul(v, &end, 10) != 0; break;
    }
    return end && end != v && *end == '\0';
}

static int parse(bench_opts *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    o->url = "nats://127.0.0.1:4222";
    o->prefix = "presence";
    o->mode = "onehop";
    o->nodes_arg = "n1";
    o->rate = 1000;
    o->secs = 2;
    o->asap = true;
    o->timeout = 30;
    for (int i = 0; i < argc; i++) {
        const opt_def *d = NULL;
        for (size_t k = 0; k < NOPTS && !d; k++)
            if (strcmp(argv[i], opts[k].name) == 0) d = &opts[k];
        if (d == NULL || i + 1 >= argc || !set_opt(o, d, argv[i + 1])) {
            fprintf(stderr, "pd-bench: bad option %s (see --help)\n", argv[i]);
            return 2;
        }
        i++;
    }
    if (!split_nodes(o)) {
        fprintf(stderr, "pd-bench: --nodes must name 1 to %d nodes\n", BENCH_NODES_MAX);
        return 2;
    }
    if (o->rate <= 0) o->rate = 1;
    return 0;
}

int main(int argc, char **argv) {
    static const struct {
        const char *name;
        int (*run)(const bench_opts *o);
    } cmds[] = {
        {"nats-lat", bench_nats_lat}, {"nats-rate", bench_nats_rate}, {"relay", bench_relay},
        {"pd-lat", bench_pd_lat},     {"load", bench_load},           {"converge", bench_converge},
        {"flood", bench_flood},
        {"churn", bench_churn},       {"batch-rate", bench_batch_rate},
        {"stub-node", bench_stub_node}, {"stub-converge", bench_stub_converge},
        {"model", bench_model},       {"notes", bench_notes},
    };
    bench_opts o;
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    int rc = parse(&o, argc - 2, argv + 2);
    if (rc) return rc;
    o.self = "/proc/self/exe"; /* the relay is this same program */
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (strcmp(argv[1], cmds[i].name) == 0) return cmds[i].run(&o);
    }
    fprintf(stderr, "pd-bench: unknown subcommand %s\n", argv[1]);
    usage(stderr);
    return 2;
}

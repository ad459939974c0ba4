/* metrics.h - a Prometheus text endpoint served by libmicrohttpd.
 *
 * libmicrohttpd answers on its own thread, which must not touch the node's
 * state; so the loop thread renders the whole text now and then and hands
 * it over here (pd_metrics_set), and the HTTP thread serves the latest
 * copy. GET /metrics answers it.
 *
 * Probes, for orchestrators: /healthz is 200 while the loop turns (it
 * reported within PD_METRICS_STALL_MS), 503 if it stalled; /readyz is 200
 * when the node is ready (caught up, restored, connected to NATS), 503 with
 * the reason otherwise. / lists the paths; anything else is 404. */
#ifndef PD_METRICS_H
#define PD_METRICS_H
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include "base/status.h"

struct MHD_Daemon;

typedef struct {
    struct MHD_Daemon *d;
    pthread_mutex_t mu;
    char *text;        /* owned; replaced by pd_metrics_set */
    size_t len;
    int port;          /* the port bound (useful with port 0) */
    uint64_t beat_ms;  /* monotonic time of the loop's last report */
    char not_ready[96]; /* "" = ready, else why not */
} pd_metrics;

#define PD_METRICS_STALL_MS 10000

/* Listens on addr ("host:port", IPv4; port 0 picks a free one). */
pd_status pd_metrics_start(pd_metrics *m, const char *addr, char *err, size_t errlen);
/* Takes ownership of text (malloc'd, len bytes). */
void pd_metrics_set(pd_metrics *m, char *text, size_t len);
void pd_metrics_stop(pd_metrics *m);
/* The loop's report for the probes: it is alive at mono_ms, and ready
 * unless not_ready (copied) is non-NULL. */
void pd_metrics_set_health(pd_metrics *m, uint64_t mono_ms, const char *not_ready);

#endif

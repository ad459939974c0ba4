/* metrics.h - a Prometheus text endpoint served by libmicrohttpd.
 *
 * libmicrohttpd answers on its own thread, which must not touch the node's
 * state; so the loop thread renders the whole text now and then and hands
 * it over here (pd_metrics_set), and the HTTP thread serves the latest
 * copy. GET /metrics answers it; any other path is 404. */
#ifndef PD_METRICS_H
#define PD_METRICS_H
#include <pthread.h>
#include <stddef.h>
#include "base/status.h"

struct MHD_Daemon;

typedef struct {
    struct MHD_Daemon *d;
    pthread_mutex_t mu;
    char *text;        /* owned; replaced by pd_metrics_set */
    size_t len;
    int port;          /* the port bound (useful with port 0) */
} pd_metrics;

/* Listens on addr ("host:port", IPv4; port 0 picks a free one). */
pd_status pd_metrics_start(pd_metrics *m, const char *addr, char *err, size_t errlen);
/* Takes ownership of text (malloc'd, len bytes). */
void pd_metrics_set(pd_metrics *m, char *text, size_t len);
void pd_metrics_stop(pd_metrics *m);

#endif

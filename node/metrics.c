/* metrics.c - the HTTP side of the metrics endpoint (see metrics.h). */
#include "metrics.h"
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/clock.h"

static struct MHD_Response *text(const char *msg) {
    return MHD_create_response_from_buffer(strlen(msg), (void *)msg, MHD_RESPMEM_MUST_COPY);
}

/* /healthz and /readyz (see metrics.h). */
static struct MHD_Response *probe(pd_metrics *m, bool ready_probe, unsigned *status) {
    char msg[160];
    pthread_mutex_lock(&m->mu);
    uint64_t now = pd_mono_ms(), beat = m->beat_ms;
    bool stalled = beat == 0 || now > beat + PD_METRICS_STALL_MS;
    if (stalled)
        snprintf(msg, sizeof msg, "not alive: the loop has not turned for %llu ms\n",
                 (unsigned long long)(beat ? now - beat : 0));
    else if (ready_probe && m->not_ready[0])
        snprintf(msg, sizeof msg, "not ready: %s\n", m->not_ready);
    else
        snprintf(msg, sizeof msg, "ok\n");
    pthread_mutex_unlock(&m->mu);
    *status = strncmp(msg, "ok", 2) == 0 ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
    return text(msg);
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **state) {
    pd_metrics *m = cls;
    struct MHD_Response *r;
    unsigned status = MHD_HTTP_OK;
    (void)version;
    (void)upload;
    (void)upload_size;
    (void)state;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        static const char msg[] = "method not allowed\n";
        r = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
    } else if (strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0) {
        r = probe(m, url[1] == 'r', &status);
    } else if (strcmp(url, "/") == 0) {
        r = text("presenced: /metrics (Prometheus), /healthz (alive), /readyz (ready)\n");
    } else if (strcmp(url, "/metrics") != 0) {
        static const char msg[] = "not found: try /metrics, /healthz or /readyz\n";
        r = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
        status = MHD_HTTP_NOT_FOUND;
    } else {
        pthread_mutex_lock(&m->mu);
        r = MHD_create_response_from_buffer(m->len, m->text ? m->text : (char *)"",
                                            MHD_RESPMEM_MUST_COPY);
        pthread_mutex_unlock(&m->mu);
        if (r) MHD_add_response_header(r, "Content-Type", "text/plain; version=0.0.4");
    }
    if (r == NULL) return MHD_NO;
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static int parse_addr(const char *addr, struct sockaddr_in *sa) {
    char host[64];
    const char *colon = strrchr(addr, ':');
    char *end;
    if (colon == NULL || (size_t)(colon - addr) >= sizeof host) return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || colon[1] == '\0' || port < 0 || port > 65535) return -1;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (host[0] == '\0') strcpy(host, "0.0.0.0");
    if (strcmp(host, "localhost") == 0) strcpy(host, "127.0.0.1");
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

pd_status pd_metrics_start(pd_metrics *m, const char *addr, char *err, size_t errlen) {
    struct sockaddr_in sa;
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    if (parse_addr(addr, &sa) != 0) {
        snprintf(err, errlen, "PRESENCE_METRICS_ADDR: '%s' is not HOST:PORT (IPv4)", addr);
        return PD_ECONFIG;
    }
    m->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, ntohs(sa.sin_port), NULL, NULL,
                            answer, m, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
                            MHD_OPTION_END);
    if (m->d == NULL) {
        snprintf(err, errlen, "PRESENCE_METRICS_ADDR: cannot listen on %s", addr);
        return PD_EIO;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->d, MHD_DAEMON_INFO_BIND_PORT);
    m->port = info ? info->port : ntohs(sa.sin_port);
    return PD_OK;
}

void pd_metrics_set(pd_metrics *m, char *text, size_t len) {
    pthread_mutex_lock(&m->mu);
    free(m->text);
    m->text = text;
    m->len = len;
    pthread_mutex_unlock(&m->mu);
}

void pd_metrics_set_health(pd_metrics *m, uint64_t mono_ms, const char *not_ready) {
    if (m->d == NULL) return;
    pthread_mutex_lock(&m->mu);
    m->beat_ms = mono_ms;
    snprintf(m->not_ready, sizeof m->not_ready, "%s", not_ready ? not_ready : "");
    pthread_mutex_unlock(&m->mu);
}

void pd_metrics_stop(pd_metrics *m) {
    if (m->d) MHD_stop_daemon(m->d);
    m->d = NULL;
    free(m->text);
    m->text = NULL;
    pthread_mutex_destroy(&m->mu);
}

/* bench_batch.c - pd-bench batch-rate: how many events per second a
 * cluster takes in `batch` requests (issue 15's "batched events into the
 * cluster").
 *
 *   pd-bench batch-rate --nodes n1,n2,n3 [--count 1000000] [--batch 1000]
 *                       [--users 10000] [--mode tag]
 *
 * sends --count events in batches of --batch (at most PRESENCE_MAX_BATCH,
 * 1000 by default) as requests, round-robin over the nodes, with at most
 * BATCH_INFLIGHT batches awaiting a reply per node. Each device connects
 * and leaves in the same batch (connection g.<tag>.<i>, user u<i % users>,
 * its server bs-<node>), so every event is applied and replicated (an ADD
 * and a REMOVE op, the notifications of a user going online and offline)
 * and the cluster holds no more devices afterwards than before. Every reply
 * must be `ok`. Prints {"kind":"batch-rate","ok",...,"events_per_s"}; the
 * rate is events whose batch was answered, over the time from the first
 * send to the last reply. Convergence is `converge`'s to check. Works
 * against the stub nodes too (pd-bench stub-node answers batches). */
#include <stdlib.h>
#include <string.h>
#include "bench.h"
#include "wire/codec.h"

#define BATCH_INFLIGHT 4 /* per node */

int bench_batch_rate(const bench_opts *o) {
    uint64_t total = o->count ? o->count : 1000000;
    uint32_t per = o->batch ? o->batch : 1000, users = o->users ? o->users : 10000;
    const char *tag = o->mode ? o->mode : "b";
    if (per < 2) per = 2;
    per &= ~1u; /* connect and disconnect pairs */
    uint64_t nbatches = (total + per - 1) / per, sent = 0, answered = 0, bad = 0;
    uint32_t inflight = 0, maxin = BATCH_INFLIGHT * o->nnodes;
    char inbox[64], subj[256], conn[64], user[32], server[64];
    natsSubscription *sub = NULL;
    natsInbox *ib = NULL;
    msgpack_sbuffer one, all, ok;
    pd_str *raws = calloc(per, sizeof *raws);
    size_t *offs = calloc(per, sizeof *offs);
    natsConnection *nc = bench_connect(o->url, true, "pd-bench-batch");
    if (nc == NULL || raws == NULL || offs == NULL || natsInbox_Create(&ib) != NATS_OK) {
        free(raws);
        free(offs);
        bench_close(nc);
        return 1;
    }
    snprintf(inbox, sizeof inbox, "%s", (const char *)ib);
    natsInbox_Destroy(ib);
    if (natsConnection_SubscribeSync(&sub, nc, inbox) != NATS_OK ||
        natsSubscription_SetPendingLimits(sub, -1, -1) != NATS_OK) {
        fprintf(stderr, "pd-bench: batch-rate: cannot subscribe\n");
        bench_close(nc);
        return 1;
    }
    msgpack_sbuffer_init(&one);
    msgpack_sbuffer_init(&all);
    msgpack_sbuffer_init(&ok);
    pd_reply_ok_encode(&ok);
    bench_progress("batch-rate: %llu events in batches of %u over %u node(s)",
                   (unsigned long long)nbatches * per, per, o->nnodes);
    uint64_t t0 = bench_mono_ns(), i = 0;
    while (answered < nbatches) {
        while (sent < nbatches && inflight < maxin) {
            uint32_t j = (uint32_t)(sent % o->nnodes);
            msgpack_sbuffer_clear(&one);
            snprintf(server, sizeof server, "bs-%s", o->nodes[j]);
            for (uint32_t k = 0; k < per; k += 2, i++) {
                snprintf(conn, sizeof conn, "g.%s.%llu", tag, (unsigned long long)i);
                snprintf(user, sizeof user, "u%llu", (unsigned long long)(i % users));
                pd_event ev = {.type = PD_EV_CONNECT, .server = pd_str_c(server),
                               .conn = pd_str_c(conn), .user = pd_str_c(user),
                               .device = pd_str_c("web")};
                offs[k] = one.size;
                pd_event_encode(&one, &ev, NULL, 0);
                ev = (pd_event){.type = PD_EV_DISCONNECT, .server = pd_str_c(server),
                                .conn = pd_str_c(conn)};
                offs[k + 1] = one.size;
                pd_event_encode(&one, &ev, NULL, 0);
            }
            for (uint32_t k = 0; k < per; k++) {
                size_t end = k + 1 < per ? offs[k + 1] : one.size;
                raws[k] = (pd_str){one.data + offs[k], (uint32_t)(end - offs[k])};
            }
            msgpack_sbuffer_clear(&all);
            pd_batch_encode(&all, raws, per);
            snprintf(subj, sizeof subj, "%s.events.%s", o->prefix, o->nodes[j]);
            if (natsConnection_PublishRequest(nc, subj, inbox, all.data, (int)all.size) !=
                NATS_OK)
                break;
            sent++;
            inflight++;
        }
        natsMsg *m = NULL;
        if (natsSubscription_NextMsg(&m, sub, 30000) != NATS_OK) {
            fprintf(stderr, "pd-bench: batch-rate: no reply within 30 s (%llu of %llu)\n",
                    (unsigned long long)answered, (unsigned long long)nbatches);
            break;
        }
        if ((size_t)natsMsg_GetDataLength(m) != ok.size ||
            memcmp(natsMsg_GetData(m), ok.data, ok.size) != 0)
            bad++;
        natsMsg_Destroy(m);
        answered++;
        inflight--;
    }
    double secs = (double)(bench_mono_ns() - t0) / 1e9;
    bool good = answered == nbatches && bad == 0;
    printf("{\"kind\":\"batch-rate\",\"ok\":%s,\"events\":%llu,\"batch\":%u,\"nodes\":%u,"
           "\"not_ok\":%llu,\"secs\":%.3f,\"events_per_s\":%.0f}\n",
           good ? "true" : "false", (unsigned long long)(answered * per), per, o->nnodes,
           (unsigned long long)bad, secs, (double)(answered * per) / secs);
    bench_progress("  %llu events in %.2f s (%.0f/s), %llu replies not ok",
                   (unsigned long long)(answered * per), secs, (double)(answered * per) / secs,
                   (unsigned long long)bad);
    msgpack_sbuffer_destroy(&one);
    msgpack_sbuffer_destroy(&all);
    msgpack_sbuffer_destroy(&ok);
    free(raws);
    free(offs);
    natsSubscription_Destroy(sub);
    bench_close(nc);
    nats_CloseAndWait(2000);
    return good ? 0 : 1;
}

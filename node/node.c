/* node.c - life cycle and loop of a presence node: the inbox drain, the
 * timer that runs the model's timers, and signal handling. */
#include "node.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "base/alloc.h"
#include "base/clock.h"

/* At most this long between loop wake-ups with nothing due, ms. */
#define NODE_MAX_SLEEP_MS 1000
/* Fair inbox: queries run in slices this long, between which the inbox is
 * taken again, and one drain works at most this long before the timers
 * run (heartbeats must leave on time whatever the load), ns. */
#define NODE_QUERY_SLICE_NS 2000000ull
#define NODE_DRAIN_BUDGET_NS 20000000ull

static void arm_timer(pd_node *n);

uint64_t node__mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void dispatch(pd_node *n, pd_inbox_item *it) {
    if (it->kind == SUB_DELTA && node__persist_hold(n, it->msg)) return; /* kept for later */
    if (it->kind == SUB_REPLAY) {
        node__persist_replay_msg(n, it->msg);
    } else if (it->kind == SUB_STREAM_INFO) {
        node__persist_stream_info(n, it->msg);
    } else if (it->kind == SUB_EVENTS) {
        uint64_t t0 = node__mono_us();
        node__handle_event(n, it->msg);
        pd_hist_observe_us(&n->stats.event_latency, node__mono_us() - t0);
    } else if (it->kind >= SUB_DELTA) {
        node__handle_cluster(n, (node_sub_kind)it->kind, it->msg);
    } else {
        uint64_t t0 = node__mono_us();
        node__handle_query(n, (node_sub_kind)it->kind, it->msg);
        pd_hist_observe_us(&n->stats.query_latency, node__mono_us() - t0);
    }
    pd_msgbin_put(&n->trash, it->msg, uv_now(&n->loop));
}

void node__reply_after_flush(pd_node *n, const char *reply) {
    size_t slen = strlen(reply), need = n->later_len + 2 + slen + 4 + n->out.size;
    if (slen > UINT16_MAX || n->out.size > UINT32_MAX) return;
    if (need > n->later_cap) {
        size_t cap = n->later_cap ? n->later_cap : 4096;
        while (cap < need) cap *= 2;
        uint8_t *p = realloc(n->later, cap);
        if (p == NULL) { /* no room to wait: now, before the delta */
            node__publish(n, reply);
            return;
        }
        n->later = p;
        n->later_cap = cap;
    }
    uint8_t *p = n->later + n->later_len;
    uint16_t l16 = (uint16_t)slen;
    uint32_t l32 = (uint32_t)n->out.size;
    memcpy(p, &l16, 2);
    memcpy(p + 2, reply, slen);
    memcpy(p + 2 + slen, &l32, 4);
    memcpy(p + 6 + slen, n->out.data, n->out.size);
    n->later_len = need;
}

/* Sends the replies queued by node__reply_after_flush. */
static void send_later(pd_node *n) {
    char subj[UINT16_MAX + 1];
    for (size_t off = 0; off < n->later_len;) {
        uint16_t l16;
        uint32_t l32;
        memcpy(&l16, n->later + off, 2);
        memcpy(subj, n->later + off + 2, l16);
        subj[l16] = '\0';
        memcpy(&l32, n->later + off + 2 + l16, 4);
        node__publish_bytes(n, subj, n->later + off + 6 + l16, l32);
        off += 6 + (size_t)l16 + l32;
    }
    n->later_len = 0;
}

/* Every query subscription lies between the events and the deltas. */
static bool is_query(int kind) { return kind >= SUB_Q_GET && kind < SUB_DELTA; }

/* Queues a query for its turn; beyond PRESENCE_INBOX_MAX_MSGS waiting it is
 * dropped and counted (the requester times out and asks again). */
static void queue_query(pd_node *n, pd_inbox_item it) {
    if (n->queries.n - n->queries.head >= n->cfg.inbox_max_msgs) {
        n->queries.shed[it.kind]++;
        natsMsg_Destroy(it.msg);
        return;
    }
    if (n->queries.head > 0 && n->queries.n == n->queries.cap) {
        n->queries.n -= n->queries.head;
        memmove(n->queries.v, n->queries.v + n->queries.head, sizeof *n->queries.v * n->queries.n);
        n->queries.head = 0;
    }
    if (n->queries.n == n->queries.cap) {
        uint32_t cap = n->queries.cap ? n->queries.cap * 2 : 256;
        pd_inbox_item *v = realloc(n->queries.v, sizeof *v * cap);
        if (v == NULL) {
            n->queries.shed[it.kind]++;
            natsMsg_Destroy(it.msg);
            return;
        }
        n->queries.v = v;
        n->queries.cap = cap;
    }
    n->queries.v[n->queries.n++] = it;
}

/* One batch from the inbox, by class: messages between nodes first (a
 * heartbeat that waits declares a node dead), then events; queries wait
 * their turn in n->queries. False if the inbox was empty. */
static bool take_batch(pd_node *n) {
    pd_inbox_item *items;
    uint32_t count;
    pd_inbox_take(&n->inbox, &items, &count);
    if (count == 0) return false; /* then items is NULL */
    n->now = pd_now_ms();
    pd_repl_begin(n->repl, n->now);
    for (uint32_t i = 0; i < count; i++)
        if (items[i].kind >= SUB_DELTA) dispatch(n, &items[i]);
    for (uint32_t i = 0; i < count; i++)
        if (items[i].kind == SUB_EVENTS) dispatch(n, &items[i]);
    for (uint32_t i = 0; i < count; i++)
        if (is_query(items[i].kind)) queue_query(n, items[i]);
    pd_inbox_release(items);
    /* One delta per burst: a lone event leaves at once, a flood in large
     * batches. */
    pd_repl_flush(n->repl);
    send_later(n);
    pd_natsout_flush(&n->out_io, n->pub); /* the batch's delta, notifications, replies */
    return true;
}

/* Answers waiting queries for one slice; false if none waited. */
static bool run_queries(pd_node *n) {
    if (n->queries.head == n->queries.n) return false;
    uint64_t t0 = uv_hrtime();
    n->now = pd_now_ms();
    do {
        dispatch(n, &n->queries.v[n->queries.head++]);
    } while (n->queries.head < n->queries.n && uv_hrtime() - t0 < NODE_QUERY_SLICE_NS);
    if (n->queries.head == n->queries.n) n->queries.head = n->queries.n = 0;
    return true;
}

void node__queries_free(pd_node *n) {
    for (uint32_t i = n->queries.head; i < n->queries.n; i++) natsMsg_Destroy(n->queries.v[i].msg);
    free(n->queries.v);
    memset(&n->queries.v, 0, sizeof n->queries.v);
    n->queries.head = n->queries.n = n->queries.cap = 0;
}

/* Handles what is queued, then runs the timers: messages first, so a timer
 * never fires for what the queue already disproves. A query flood delays
 * an event by at most one query slice; a drain that outlasts its budget
 * lets the timers run and comes back at the next loop turn. */
void node__drain(pd_node *n) {
    uint64_t t0 = uv_hrtime();
    bool more = false;
    for (;;) {
        bool took = take_batch(n);
        bool ran = run_queries(n);
        if (!took && !ran) break;
        if (uv_hrtime() - t0 > NODE_DRAIN_BUDGET_NS) {
            more = true;
            break;
        }
        /* An event sent while a query slice ran is read now, not after the
         * whole budget: the loop is what reads the socket. */
        if (ran) node__nats_read(n);
    }
    /* Over budget, queries may wait, but not events and messages between
     * nodes: what arrived meanwhile is applied before the timers run, so
     * that no timer fires for what the queue disproves (a socket server's
     * heartbeat waiting behind the budget would let it time out). */
    if (more) {
        node__nats_read(n);
        take_batch(n);
    }
    n->now = pd_now_ms();
    pd_repl_tick(n->repl, n->now);
    node__persist_tick(n);
    node__slow_tick(n);
    node__update_metrics(n, false);
    pd_msgbin_empty(&n->trash, uv_now(&n->loop), false);
    arm_timer(n);
    if (more) uv_async_send(&n->wake);
}

static void on_wake(uv_async_t *h) { node__drain(h->data); }

static void on_timer(uv_timer_t *t) { node__drain(t->data); }

static void arm_timer(pd_node *n) {
    uint64_t due = pd_repl_next_due(n->repl);
    uint64_t now = pd_now_ms();
    /* At least 1 ms: libuv runs a timer re-armed at 0 from its own callback
     * again in the same pass, forever. */
    uint64_t wait = due <= now ? 1 : due - now;
    if (wait > NODE_MAX_SLEEP_MS) wait = NODE_MAX_SLEEP_MS;
    uv_timer_start(&n->timer, on_timer, wait, 0);
}

static void on_signal(uv_signal_t *s, int signum) {
    pd_node *n = s->data;
    pd_log(PD_LOG_INFO, "signal %d: stopping", signum);
    n->exit_code = 0;
    /* Held notifications leave before we do. */
    pd_notifier_flush(pd_repl_notifier(n->repl));
    /* Tell the peers at once rather than let them wait for the timeout. */
    pd_repl_leave(n->repl, pd_now_ms());
    pd_natsout_drain(&n->out_io, n->pub, 1000);
    uv_stop(&n->loop);
}

pd_status pd_node_init(pd_node *n, const pd_config *cfg, char *err, size_t errlen) {
    memset(n, 0, sizeof *n);
    n->cfg = *cfg;
    if (cfg->test_clock_offset_ms) {
        pd_log(PD_LOG_WARN, "PRESENCE_TEST_CLOCK_OFFSET_MS: this node's clock runs %llu ms ahead",
               (unsigned long long)cfg->test_clock_offset_ms);
        pd_clock_set_test_offset(cfg->test_clock_offset_ms);
    }
    n->started_at = pd_now_ms();
    n->bad_input_log = (pd_ratelimit){.per_window = 10, .window_ms = 10000};
    msgpack_sbuffer_init(&n->out);
    pd_model_cfg mc = {
        .idle_timeout_ms = cfg->idle_timeout_ms,
        .offline_delay_ms = cfg->offline_delay_ms,
        .server_timeout_ms = cfg->server_timeout_ms,
        .max_devices_per_user = cfg->max_devices_per_user,
        .max_users = cfg->max_users_per_node,
        .max_clock_skew_ms = cfg->max_clock_skew_ms,
        .activity_resolution_ms = cfg->activity_resolution_ms,
        .user_retention_ms = cfg->user_retention_ms,
        .sync_parts_timeout_ms = cfg->sync_parts_timeout_ms,
    };
    pd_repl_cfg rc = {
        .sync_interval_ms = cfg->sync_interval_ms,
        .node_timeout_ms = cfg->node_timeout_ms,
        .suspicion_ms = cfg->suspicion_ms,
        .inc = n->started_at,
        .max_msg_bytes = (size_t)cfg->max_msg_bytes,
        .max_clock_skew_ms = cfg->max_clock_skew_ms,
        .notify_min_interval_ms = cfg->notify_min_interval_ms,
    };
    pd_repl_io io = node__repl_io;
    io.ud = n;
    n->repl = pd_repl_new(&rc, &mc, pd_str_c(cfg->node_id), &io, n->started_at);
    n->model = n->repl ? pd_repl_model(n->repl) : NULL;
    if (n->model == NULL) {
        snprintf(err, errlen, "out of memory creating the model");
        return PD_ENOMEM;
    }
    if (pd_inbox_init(&n->inbox) != PD_OK || uv_loop_init(&n->loop) != 0) {
        snprintf(err, errlen, "cannot initialise the event loop");
        return PD_EINTERNAL;
    }
    node__slow_init(n);
    n->loop_ready = true;
    uv_async_init(&n->loop, &n->wake, on_wake);
    uv_timer_init(&n->loop, &n->timer);
    uv_signal_init(&n->loop, &n->sigterm);
    uv_signal_init(&n->loop, &n->sigint);
    n->wake.data = n->timer.data = n->sigterm.data = n->sigint.data = n;
    if (cfg->metrics_addr[0]) {
        pd_status s = pd_metrics_start(&n->metrics, cfg->metrics_addr, err, errlen);
        if (s != PD_OK) return s;
        n->now = pd_now_ms();
        node__update_metrics(n, true);
        const char *colon = strrchr(cfg->metrics_addr, ':');
        pd_log(PD_LOG_INFO, "metrics on http://%.*s:%d/metrics",
               (int)(colon - cfg->metrics_addr), cfg->metrics_addr, n->metrics.port);
    }
    pd_status s = node__nats_connect(n, err, errlen);
    if (s == PD_OK) node__persist_start(n);
    return s;
}

int pd_node_run(pd_node *n) {
    n->exit_code = 1;
    if (n->cfg.test_fail_allocs) {
        pd_log(PD_LOG_WARN, "PRESENCE_TEST_FAIL_ALLOCS: every model allocation will fail");
        pd_alloc_fail_after(0);
    }
    /* Only now: until the loop runs, SIGTERM and SIGINT keep their default
     * action, so a node still starting (connecting, restoring, waiting for
     * a JetStream that has no leader yet) ends at once instead of after
     * those waits. It has announced nothing yet. */
    uv_signal_start(&n->sigterm, on_signal, SIGTERM);
    uv_signal_start(&n->sigint, on_signal, SIGINT);
    arm_timer(n);
    uv_run(&n->loop, UV_RUN_DEFAULT);
    return n->exit_code;
}

static void close_handle(uv_handle_t *h, void *ud) {
    (void)ud;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

void pd_node_close(pd_node *n) {
    pd_metrics_stop(&n->metrics);
    /* A clean stop (SIGTERM) leaves a last snapshot behind. */
    node__persist_stop(n, n->exit_code == 0);
    node__queries_free(n); /* while nats.c can still free messages */
    pd_msgbin_free(&n->trash);
    if (n->repl) pd_repl_serving_drop(n->repl);
    node__nats_close(n);  /* no more pushes after this */
    if (n->loop_ready) {
        uv_walk(&n->loop, close_handle, NULL);
        uv_run(&n->loop, UV_RUN_DEFAULT);
        uv_loop_close(&n->loop);
    }
    pd_inbox_free(&n->inbox);
    pd_natsout_free(&n->in_io);
    pd_natsout_free(&n->out_io);
    pd_repl_free(n->repl);
    msgpack_sbuffer_destroy(&n->out);
    free(n->later);
}

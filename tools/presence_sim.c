/* presence_sim.c - presence-sim: simulated socket servers that speak the
 * presence contract (docs/protocol.md section 1) to one or more nodes, for load
 * tests and for checking that a node's state matches the truth.
 *
 * S servers <server-prefix>-<k> are attached round-robin to the given nodes;
 * U users own up to D devices each. The main loop paces a mix of connect,
 * disconnect, activity, idle, status and custom events at --rate, sends each
 * server's heartbeat, answers P.resync.<node> with a `sync` per server, and
 * can stage a reconnect storm and a server crash. Every event leaves as a
 * request whose reply is counted asynchronously (sim_net.c); the oracle
 * (sim_oracle.c) is updated as events leave, and only ever names live
 * connections, so a healthy node answers every request ok.
 *
 * One thread owns everything here; clocks are read once per loop turn
 * (CONTRIBUTING.md, "One loop thread owns the state"). Exit codes: 0 all
 * ok, 1 errors or unanswered requests, 2 bad usage, 3 NATS unreachable (or lost during the run). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "base/alloc.h"
#include "base/clock.h"
#include "base/version.h"
#include "sim.h"

#define SIM_BURST 256 /* most load events sent between two looks at the clock */

static volatile sig_atomic_t stop_requests;

static void on_signal(int sig) {
    (void)sig;
    stop_requests++;
}

static void sleep_ms(unsigned ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void user_id(const sim *s, uint32_t user, char *buf, size_t cap) {
    snprintf(buf, cap, "%s%u", s->opt.user_prefix, user);
}

/* A random server that has not crashed, or -1 if there is none. */
static int pick_server(sim *s) {
    uint32_t n = s->opt.servers, k = sim_rand_below(&s->rng, n);
    for (uint32_t i = 0; i < n; i++, k = (k + 1) % n) {
        if (!s->crashed[k]) return (int)k;
    }
    return -1;
}

/* disconnect, activity or idle of the live connection at index i. */
static bool send_conn_event(sim *s, pd_event_type type, uint32_t i) {
    char id[SIM_CONN_ID_MAX];
    sim_conn_id(&s->oracle.conns[i], id);
    pd_event ev = {.type = type, .conn = pd_str_c(id)};
    if (!sim_net_send(s, s->oracle.conns[i].server, &ev, NULL, 0)) return false;
    if (type == PD_EV_DISCONNECT) sim_oracle_remove(&s->oracle, i);
    return true;
}

/* A new connection of user in a free slot; the oracle learns it first and
 * forgets it again if the event could not be sent. */
static bool send_connect(sim *s, uint32_t user, uint32_t slot, uint32_t server) {
    char id[SIM_CONN_ID_MAX], uid[160];
    int32_t i = sim_oracle_add(&s->oracle, user, slot, (uint16_t)server);
    if (i < 0) return false;
    sim_conn_id(&s->oracle.conns[i], id);
    user_id(s, user, uid, sizeof uid);
    pd_event ev = {.type = PD_EV_CONNECT, .conn = pd_str_c(id), .user = pd_str_c(uid),
                   .device = pd_str_c(sim_slot_label(slot))};
    if (sim_net_send(s, server, &ev, NULL, 0)) return true;
    sim_oracle_remove(&s->oracle, (uint32_t)i);
    return false;
}

/* status or custom: no server field, but sent through the node of one of
 * the user's servers (or any live one), with that server's seq. */
static void send_user_event(sim *s, pd_event *ev, uint32_t user) {
    char uid[160];
    int32_t c = sim_oracle_conn_of(&s->oracle, user);
    int server = c >= 0 ? s->oracle.conns[c].server : pick_server(s);
    if (server < 0) return;
    user_id(s, user, uid, sizeof uid);
    ev->user = pd_str_c(uid);
    sim_net_send(s, (uint32_t)server, ev, NULL, 0);
}

static void send_status(sim *s, uint32_t user) {
    static const pd_chosen modes[] = {PD_CHOSEN_AUTO, PD_CHOSEN_AUTO, PD_CHOSEN_AWAY,
                                      PD_CHOSEN_BUSY, PD_CHOSEN_INVISIBLE};
    pd_event ev = {.type = PD_EV_STATUS};
    ev.status = modes[sim_rand_below(&s->rng, sizeof modes / sizeof modes[0])];
    send_user_event(s, &ev, user);
}

static void send_custom(sim *s, uint32_t user) {
    static const char *const texts[] = {"in a meeting", "lunch", "on vacation", "commuting",
                                        "focus time", "café ☕", "back at 3"};
    static const char *const emojis[] = {":calendar:", "🍕", "🌴", "🎧"};
    pd_event ev = {.type = PD_EV_CUSTOM, .text = PD_STR_LIT("")};
    if (sim_rand_below(&s->rng, 10) >= 3) { /* 70 %: set, else clear */
        ev.text = pd_str_c(texts[sim_rand_below(&s->rng, sizeof texts / sizeof texts[0])]);
        if (sim_rand_below(&s->rng, 2))
            ev.emoji = pd_str_c(emojis[sim_rand_below(&s->rng, sizeof emojis / sizeof emojis[0])]);
        /* Half expire, 10 s to 2 min ahead: far enough for any clock skew. */
        if (sim_rand_below(&s->rng, 2))
            ev.expires_at = (int64_t)s->wall_ms + 10000 + sim_rand_below(&s->rng, 110000);
    }
    send_user_event(s, &ev, user);
}

static sim_mix_kind pick_kind(sim *s) {
    uint32_t sum = 0, k;
    for (k = 0; k < SIM_MIX_COUNT; k++) sum += s->opt.mix[k];
    uint32_t x = sim_rand_below(&s->rng, sum);
    for (k = 0; k + 1 < SIM_MIX_COUNT && x >= s->opt.mix[k]; k++) x -= s->opt.mix[k];
    return (sim_mix_kind)k;
}

/* One load event, chosen by the mix and made valid by the oracle: a
 * connect for a user with every slot taken closes one of its devices
 * instead, and a connection event with nothing connected connects. */
static void gen_one(sim *s) {
    static const pd_event_type conn_type[] = {
        [SIM_MIX_DISCONNECT] = PD_EV_DISCONNECT, [SIM_MIX_ACTIVITY] = PD_EV_ACTIVITY,
        [SIM_MIX_IDLE] = PD_EV_IDLE};
    sim_oracle *o = &s->oracle;
    sim_mix_kind k = pick_kind(s);
    uint32_t user = sim_rand_below(&s->rng, s->opt.users);
    int slot, server;
    s->load_sent++;
    if (k <= SIM_MIX_IDLE && k != SIM_MIX_CONNECT && o->n == 0) k = SIM_MIX_CONNECT;
    switch (k) {
    case SIM_MIX_CONNECT:
        if ((slot = sim_oracle_free_slot(o, user)) < 0) {
            send_conn_event(s, PD_EV_DISCONNECT, (uint32_t)sim_oracle_conn_of(o, user));
        } else if ((server = pick_server(s)) >= 0) {
            send_connect(s, user, (uint32_t)slot, (uint32_t)server);
        }
        break;
    case SIM_MIX_DISCONNECT:
    case SIM_MIX_ACTIVITY:
    case SIM_MIX_IDLE:
        send_conn_event(s, conn_type[k], sim_rand_below(&s->rng, o->n));
        break;
    case SIM_MIX_STATUS: send_status(s, user); break;
    default: send_custom(s, user); break;
    }
}

/* sync of server k: its complete list of live connections. */
static void send_sync(sim *s, uint32_t k) {
    sim_oracle *o = &s->oracle;
    uint32_t n = o->server_n[k], j = 0;
    pd_sync_conn *list = pd_calloc(n ? n : 1, sizeof *list);
    char (*ids)[SIM_CONN_ID_MAX] = pd_calloc(n ? n : 1, sizeof *ids);
    char (*uids)[160] = pd_calloc(n ? n : 1, sizeof *uids);
    if (list && ids && uids) {
        for (uint32_t i = 0; i < o->n && j < n; i++) {
            const sim_conn *c = &o->conns[i];
            if (c->server != k) continue;
            sim_conn_id(c, ids[j]);
            user_id(s, c->user, uids[j], sizeof uids[j]);
            list[j] = (pd_sync_conn){pd_str_c(ids[j]), pd_str_c(uids[j]),
                                     pd_str_c(sim_slot_label(c->slot))};
            j++;
        }
        pd_event ev = {.type = PD_EV_SYNC};
        sim_net_send(s, k, &ev, list, j); /* a failure is counted there */
    } else {
        s->publish_failures++;
    }
    pd_free(list);
    pd_free(ids);
    pd_free(uids);
}

/* Every live server attached to a node that asked, sends its sync. */
static void answer_resyncs(sim *s) {
    uint32_t want = sim_net_take_resyncs(s);
    for (uint32_t k = 0; want && k < s->opt.servers; k++) {
        if (!s->crashed[k] && (want & (1u << (k % s->opt.nnodes)))) send_sync(s, k);
    }
}

static void send_heartbeats(sim *s) {
    if (s->opt.heartbeat_ms == 0) return;
    for (uint32_t k = 0; k < s->opt.servers; k++) {
        if (s->crashed[k] || s->now_ms < s->hb_next[k]) continue;
        pd_event ev = {.type = PD_EV_HEARTBEAT};
        sim_net_send(s, k, &ev, NULL, 0);
        s->hb_next[k] = s->now_ms + s->opt.heartbeat_ms;
    }
}

/* The storm: a share of the live devices disconnect, then all reconnect
 * with new connection ids on random live servers, back to back. */
static void storm(sim *s) {
    sim_oracle *o = &s->oracle;
    uint32_t n = (uint32_t)(o->n * s->opt.storm_fraction), m = 0;
    uint32_t *who = pd_calloc(n ? n : 1, 2 * sizeof *who);
    s->stormed = true;
    if (who == NULL) return;
    for (; m < n && o->n > 0; m++) {
        uint32_t i = sim_rand_below(&s->rng, o->n);
        who[2 * m] = o->conns[i].user;
        who[2 * m + 1] = o->conns[i].slot;
        if (!send_conn_event(s, PD_EV_DISCONNECT, i)) break;
    }
    for (uint32_t j = 0; j < m; j++) {
        int server = pick_server(s);
        if (server >= 0) send_connect(s, who[2 * j], who[2 * j + 1], (uint32_t)server);
    }
    pd_free(who);
    if (!s->opt.quiet) fprintf(stderr, "presence-sim: reconnect storm: %u devices\n", m);
}

/* The crash: the server falls silent; its clients lost their sockets. */
static void crash(sim *s) {
    uint32_t k = s->opt.crash_server;
    s->crash_done = true;
    s->crashed[k] = true;
    s->crashed_devices = sim_oracle_remove_server(&s->oracle, (uint16_t)k);
    if (!s->opt.quiet)
        fprintf(stderr, "presence-sim: %s crashed with %u devices\n", s->server_id[k],
                s->crashed_devices);
}

/* Once per loop turn, load or drain: clocks, resyncs, heartbeats, progress. */
static void housekeeping(sim *s, uint64_t *next_progress) {
    s->now_ms = pd_mono_ms();
    s->wall_ms = pd_now_ms();
    answer_resyncs(s);
    send_heartbeats(s);
    if (s->now_ms >= *next_progress) {
        if (!s->opt.quiet) sim_report_progress(s);
        *next_progress += 1000;
    }
}

static bool load_done(const sim *s) {
    if (stop_requests || s->conn_closed) return true;
    if (s->opt.duration_ms >= 0 && s->now_ms - s->start_ms >= (uint64_t)s->opt.duration_ms)
        return true;
    return s->opt.events && s->load_sent >= s->opt.events;
}

/* How many load events may go now: the pace, the count and the in-flight cap. */
static uint64_t load_budget(sim *s) {
    uint64_t budget = SIM_BURST;
    if (s->opt.rate > 0) {
        uint64_t due = (uint64_t)((double)(s->now_ms - s->start_ms) * s->opt.rate / 1000.0) + 1;
        budget = due > s->load_sent ? due - s->load_sent : 0;
        if (budget > SIM_BURST) budget = SIM_BURST;
    }
    if (s->opt.events && s->opt.events - s->load_sent < budget)
        budget = s->opt.events - s->load_sent;
    uint64_t inflight = sim_net_inflight(s);
    if (inflight >= s->opt.max_inflight) return 0;
    return budget < s->opt.max_inflight - inflight ? budget : s->opt.max_inflight - inflight;
}

static void run_load(sim *s, uint64_t *next_progress) {
    for (;;) {
        housekeeping(s, next_progress);
        if (load_done(s)) {
            s->load_end_ms = s->now_ms;
            break;
        }
        int64_t t = (int64_t)(s->now_ms - s->start_ms);
        if (s->opt.crash_at_ms >= 0 && !s->crash_done && t >= s->opt.crash_at_ms) crash(s);
        if (s->opt.storm_at_ms >= 0 && !s->stormed && t >= s->opt.storm_at_ms) storm(s);
        uint64_t budget = load_budget(s);
        for (uint64_t i = 0; i < budget && !s->conn_closed; i++) gen_one(s);
        if (budget < SIM_BURST) sleep_ms(1); /* caught up with the pace */
    }
}

/* After the load: shutdowns if asked, then wait for the last replies while
 * the servers stay alive (heartbeats, resyncs). A second signal cuts it. */
static void drain(sim *s, uint64_t *next_progress) {
    if (s->opt.shutdown_at_end) {
        for (uint32_t k = 0; k < s->opt.servers; k++) {
            if (s->crashed[k]) continue;
            pd_event ev = {.type = PD_EV_SHUTDOWN};
            if (sim_net_send(s, k, &ev, NULL, 0)) sim_oracle_remove_server(&s->oracle, (uint16_t)k);
        }
    }
    natsConnection_FlushTimeout(s->nc, 2000);
    uint64_t deadline = pd_mono_ms() + (uint64_t)s->opt.drain_ms;
    while (sim_net_inflight(s) > 0 && stop_requests < 2 && !s->conn_closed &&
           pd_mono_ms() < deadline) {
        housekeeping(s, next_progress);
        sleep_ms(2);
    }
}

/* Allocates the per-server state and the oracle; false if memory runs out. */
static bool sim_setup(sim *s) {
    uint32_t n = s->opt.servers;
    s->rng = s->opt.seed;
    msgpack_sbuffer_init(&s->sb);
    s->server_id = pd_calloc(n, sizeof *s->server_id);
    s->seq = pd_calloc(n, sizeof *s->seq);
    s->hb_next = pd_calloc(n, sizeof *s->hb_next);
    s->crashed = pd_calloc(n, sizeof *s->crashed);
    if (s->server_id == NULL || s->seq == NULL || s->hb_next == NULL || s->crashed == NULL ||
        sim_oracle_init(&s->oracle, s->opt.users, s->opt.devices, n) != PD_OK)
        return false;
    for (uint32_t k = 0; k < n; k++)
        snprintf(s->server_id[k], sizeof s->server_id[k], "%s-%u", s->opt.server_prefix, k);
    return true;
}

static void sim_teardown(sim *s) {
    sim_net_stop(s);
    sim_oracle_free(&s->oracle);
    pd_free(s->server_id);
    pd_free(s->seq);
    pd_free(s->hb_next);
    pd_free(s->crashed);
    msgpack_sbuffer_destroy(&s->sb);
}

int main(int argc, char **argv) {
    static sim s;
    bool help, version;
    int rc = sim_opts_parse(&s.opt, argc, argv, &help, &version);
    if (rc || help || version) {
        if (help) sim_opts_usage(stdout);
        else if (version) printf("presence-sim %s\n", PD_VERSION);
        return rc;
    }
    const char *what = NULL;
    natsStatus st = NATS_OK;
    if (!sim_setup(&s)) {
        fprintf(stderr, "presence-sim: out of memory for %u users\n", s.opt.users);
        rc = SIM_EXIT_FAILED;
    } else if ((st = sim_net_start(&s, &what)) != NATS_OK) {
        fprintf(stderr, "presence-sim: %s at %s: %s\n", what, s.opt.nats_url,
                natsStatus_GetText(st));
        rc = st == NATS_NO_MEMORY ? SIM_EXIT_FAILED : SIM_EXIT_NATS;
    } else {
        struct sigaction sa = {.sa_handler = on_signal};
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        s.start_ms = s.now_ms = pd_mono_ms();
        s.wall_ms = pd_now_ms();
        uint64_t next_progress = s.start_ms + 1000;
        /* A server that starts lists its (no) connections: whatever a
         * previous run left under the same ids goes, and seq starts over. */
        for (uint32_t k = 0; k < s.opt.servers; k++) send_sync(&s, k);
        run_load(&s, &next_progress);
        drain(&s, &next_progress);
        rc = sim_report_summary(&s);
        if (s.conn_closed) rc = SIM_EXIT_NATS;
    }
    sim_teardown(&s);
    return rc;
}

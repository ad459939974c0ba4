/* sim_report.c - what presence-sim tells: one progress line per second on
 * stderr, and the summary on stdout (text, or one JSON object with --json)
 * that decides the exit code.
 *
 * Counters written by the reply callback are copied under the mutex first,
 * so a report is one consistent snapshot. A request that could not even be
 * published counts as an error with code "publish_failed". */
#include <inttypes.h>
#include <string.h>
#include "sim.h"

typedef struct {
    uint64_t requests, answered, ok, errors, other_codes, resyncs;
    sim_errcount codes[SIM_ERR_CODES];
    uint32_t ncodes, nshown;
    char shown[SIM_ERR_SHOWN][256];
} snapshot;

static void take_snapshot(sim *s, snapshot *out) {
    pthread_mutex_lock(&s->rep.mu);
    out->requests = s->rep.requests;
    out->answered = s->rep.answered;
    out->ok = s->rep.ok;
    out->errors = s->rep.errors;
    out->other_codes = s->rep.other_codes;
    out->resyncs = s->rep.resyncs;
    out->ncodes = s->rep.ncodes;
    memcpy(out->codes, s->rep.codes, sizeof out->codes);
    out->nshown = s->rep.nshown;
    memcpy(out->shown, s->rep.shown, sizeof out->shown);
    pthread_mutex_unlock(&s->rep.mu);
}

void sim_report_progress(sim *s) {
    snapshot sn;
    take_snapshot(s, &sn);
    fprintf(stderr,
            "presence-sim: %6.1fs sent=%" PRIu64 " ok=%" PRIu64 " errors=%" PRIu64
            " inflight=%" PRIu64 " devices=%u users=%u\n",
            (double)(s->now_ms - s->start_ms) / 1000.0, s->sent_total, sn.ok,
            sn.errors + s->publish_failures, sn.requests - sn.answered, s->oracle.n,
            s->oracle.users_with_devices);
}

/* An error code as a JSON string body: codes are [a-z_], anything else
 * (a node speaking some other contract) is masked rather than escaped. */
static void put_code(FILE *f, const char *code) {
    for (const char *p = code; *p; p++) {
        char c = *p;
        bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
        fputc(safe ? c : '?', f);
    }
}

/* {"u1":2,...}: users with at least one device, for comparing with a node. */
static void put_user_devices(sim *s, FILE *f) {
    bool first = true;
    fputc('{', f);
    for (uint32_t u = 0; u < s->opt.users; u++) {
        if (s->oracle.ndev[u] == 0) continue;
        fprintf(f, "%s\"%s%u\":%u", first ? "" : ",", s->opt.user_prefix, u, s->oracle.ndev[u]);
        first = false;
    }
    fputc('}', f);
}

static void summary_json(sim *s, const snapshot *sn, uint64_t elapsed) {
    FILE *f = stdout;
    fprintf(f, "{\"sent\":%" PRIu64 ",\"by_type\":{", s->sent_total);
    for (int t = 0; t < PD_EV_COUNT; t++)
        fprintf(f, "%s\"%s\":%" PRIu64, t ? "," : "", pd_event_type_name((pd_event_type)t),
                s->sent[t]);
    fprintf(f, "},\"ok\":%" PRIu64 ",\"errors\":{", sn->ok);
    for (uint32_t i = 0; i < sn->ncodes; i++) {
        fprintf(f, "%s\"", i ? "," : "");
        put_code(f, sn->codes[i].code);
        fprintf(f, "\":%" PRIu64, sn->codes[i].n);
    }
    bool more = sn->ncodes > 0;
    if (sn->other_codes) fprintf(f, "%s\"other\":%" PRIu64, more ? "," : "", sn->other_codes);
    more |= sn->other_codes > 0;
    if (s->publish_failures)
        fprintf(f, "%s\"publish_failed\":%" PRIu64, more ? "," : "", s->publish_failures);
    fprintf(f,
            "},\"unanswered\":%" PRIu64 ",\"devices\":%u,\"users_with_devices\":%u"
            ",\"crashed_devices\":%u,\"resync_requests\":%" PRIu64 ",\"load_events\":%" PRIu64
            ",\"elapsed_ms\":%" PRIu64,
            sn->requests - sn->answered, s->oracle.n, s->oracle.users_with_devices,
            s->crashed_devices, sn->resyncs, s->load_sent, elapsed);
    if (s->opt.dump_users) {
        fputs(",\"user_devices\":", f);
        put_user_devices(s, f);
    }
    fputs("}\n", f);
}

static void summary_text(sim *s, const snapshot *sn, uint64_t elapsed) {
    FILE *f = stdout;
    uint64_t load = s->load_end_ms - s->start_ms;
    double secs = load ? (double)load / 1000.0 : 0.001;
    fprintf(f, "%" PRIu64 " load events in %.2f s (%.0f/s), %.2f s in all\n", s->load_sent,
            secs, (double)s->load_sent / secs, (double)elapsed / 1000.0);
    fprintf(f, "%-20s %" PRIu64 "\n", "sent", s->sent_total);
    for (int t = 0; t < PD_EV_COUNT; t++)
        fprintf(f, "  %-18s %" PRIu64 "\n", pd_event_type_name((pd_event_type)t), s->sent[t]);
    fprintf(f, "%-20s %" PRIu64 "\n", "ok", sn->ok);
    fprintf(f, "%-20s %" PRIu64 "\n", "errors", sn->errors + s->publish_failures);
    for (uint32_t i = 0; i < sn->ncodes; i++)
        fprintf(f, "  %-18s %" PRIu64 "\n", sn->codes[i].code, sn->codes[i].n);
    if (sn->other_codes) fprintf(f, "  %-18s %" PRIu64 "\n", "other", sn->other_codes);
    if (s->publish_failures)
        fprintf(f, "  %-18s %" PRIu64 "\n", "publish_failed", s->publish_failures);
    fprintf(f, "%-20s %" PRIu64 "\n", "unanswered", sn->requests - sn->answered);
    fprintf(f, "%-20s %u\n", "devices", s->oracle.n);
    fprintf(f, "%-20s %u\n", "users_with_devices", s->oracle.users_with_devices);
    if (s->crash_done) fprintf(f, "%-20s %u\n", "crashed_devices", s->crashed_devices);
    fprintf(f, "%-20s %" PRIu64 "\n", "resync_requests", sn->resyncs);
    if (s->opt.dump_users) {
        for (uint32_t u = 0; u < s->opt.users; u++) {
            if (s->oracle.ndev[u])
                fprintf(f, "  %s%u %u\n", s->opt.user_prefix, u, s->oracle.ndev[u]);
        }
    }
}

int sim_report_summary(sim *s) {
    snapshot sn;
    take_snapshot(s, &sn);
    uint64_t elapsed = s->now_ms - s->start_ms;
    for (uint32_t i = 0; i < sn.nshown; i++)
        fprintf(stderr, "presence-sim: error reply: %s\n", sn.shown[i]);
    if (s->opt.json) summary_json(s, &sn, elapsed);
    else summary_text(s, &sn, elapsed);
    fflush(stdout);
    bool clean = sn.errors == 0 && s->publish_failures == 0 && sn.requests == sn.answered;
    return clean ? 0 : SIM_EXIT_FAILED;
}

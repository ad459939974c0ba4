/* ctl_json.c - MessagePack to JSON, and the cluster table, for presencectl. */
#include "ctl_json.h"
#include <inttypes.h>
#include <string.h>
#include <time.h>
#include "base/clock.h"
#include "wire/codec.h"

size_t ctl_json_escape(char *dst, size_t cap, pd_str s) {
    size_t o = 0;
    if (cap < 3) return 0;
    dst[o++] = '"';
    for (uint32_t i = 0; i < s.n && o + 8 < cap; i++) {
        unsigned char ch = (unsigned char)s.p[i];
        if (ch == '"' || ch == '\\') {
            dst[o++] = '\\';
            dst[o++] = (char)ch;
        } else if (ch < 0x20) {
            o += (size_t)snprintf(dst + o, cap - o, "\\u%04x", ch);
        } else {
            dst[o++] = (char)ch;
        }
    }
    dst[o++] = '"';
    return o;
}

static void json_str(FILE *out, pd_str s) {
    fputc('"', out);
    for (uint32_t i = 0; i < s.n; i++) {
        unsigned char ch = (unsigned char)s.p[i];
        if (ch == '"' || ch == '\\') fprintf(out, "\\%c", ch);
        else if (ch < 0x20) fprintf(out, "\\u%04x", ch);
        else fputc(ch, out);
    }
    fputc('"', out);
}

void ctl_json_cstr(FILE *out, const char *s) {
    json_str(out, pd_str_c(s));
}

/* The wire's heartbeat age as the time it stands for. */
static void heartbeat_time(FILE *out, int64_t age_ms) {
    if (age_ms < 0) {
        fputs("null", out);
        return;
    }
    int64_t at = (int64_t)pd_now_ms() - age_ms;
    time_t t = (time_t)(at / 1000);
    struct tm tm;
    char buf[40];
    gmtime_r(&t, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(out, "\"%s.%03dZ\"", buf, (int)(at % 1000));
}

static int value(FILE *out, mp_reader *r, int depth) {
    uint32_t n;
    pd_str s;
    int64_t i;
    bool b;
    if (depth > MPR_MAX_DEPTH) return -1;
    switch (mpr_peek(r)) {
    case MPR_NIL: mpr_nil(r); fputs("null", out); return 0;
    case MPR_BOOL: mpr_bool(r, &b); fputs(b ? "true" : "false", out); return 0;
    case MPR_INT:
        if (!mpr_int(r, &i)) return -1;
        fprintf(out, "%" PRId64, i);
        return 0;
    case MPR_STR:
        if (!mpr_str(r, &s)) return -1;
        json_str(out, s);
        return 0;
    case MPR_ARRAY:
        if (!mpr_array(r, &n)) return -1;
        fputc('[', out);
        for (uint32_t k = 0; k < n; k++) {
            if (k) fputc(',', out);
            if (value(out, r, depth + 1)) return -1;
        }
        fputc(']', out);
        return 0;
    case MPR_MAP:
        if (!mpr_map(r, &n)) return -1;
        fputc('{', out);
        for (uint32_t k = 0; k < n; k++) {
            if (k) fputc(',', out);
            if (!pd_read_key(r, &s)) return -1;
            json_str(out, s);
            fputc(':', out);
            int64_t age;
            if (pd_str_eqc(s, "last_heartbeat") && mpr_peek(r) == MPR_INT) {
                if (!mpr_int(r, &age)) return -1;
                heartbeat_time(out, age);
            } else if (value(out, r, depth + 1)) {
                return -1;
            }
        }
        fputc('}', out);
        return 0;
    default:
        if (!mpr_skip(r)) return -1;
        fputs("null", out);
        return 0;
    }
}

int ctl_json_print(FILE *out, const void *buf, size_t len) {
    mp_reader r;
    mpr_init(&r, buf, len);
    int rc = value(out, &r, 0);
    fputc('\n', out);
    return rc;
}

typedef struct {
    pd_str node;
    bool alive;
    int64_t devices, users, hb;
    uint32_t nvc;
    pd_str vc_node[64];
    int64_t vc_seq[64];
} node_row;

static int64_t vc_get(const node_row *r, pd_str node) {
    for (uint32_t i = 0; i < r->nvc; i++) {
        if (pd_str_eq(r->vc_node[i], node)) return r->vc_seq[i];
    }
    return 0;
}

static int read_row(mp_reader *r, node_row *row) {
    uint32_t f;
    pd_str key;
    memset(row, 0, sizeof *row);
    if (!mpr_map(r, &f)) return -1;
    for (uint32_t x = 0; x < f; x++) {
        if (!pd_read_key(r, &key)) return -1;
        bool ok = true;
        if (pd_str_eqc(key, "node")) ok = mpr_str(r, &row->node);
        else if (pd_str_eqc(key, "alive")) ok = mpr_bool(r, &row->alive);
        else if (pd_str_eqc(key, "devices")) ok = mpr_int(r, &row->devices);
        else if (pd_str_eqc(key, "users")) ok = mpr_int(r, &row->users);
        else if (pd_str_eqc(key, "last_heartbeat")) ok = mpr_int(r, &row->hb);
        else if (pd_str_eqc(key, "vc")) {
            uint32_t vn;
            ok = mpr_map(r, &vn);
            for (uint32_t y = 0; ok && y < vn; y++) {
                pd_str vnode;
                int64_t cnt;
                ok = mpr_str(r, &vnode) && mpr_int(r, &cnt);
                if (ok && row->nvc < 64) {
                    row->vc_node[row->nvc] = vnode;
                    row->vc_seq[row->nvc++] = cnt;
                }
            }
        } else ok = mpr_skip(r);
        if (!ok) return -1;
    }
    return 0;
}

/* LAG: deltas a peer has sent (its own clock entry, as of its heartbeat)
 * that the answering node has not applied yet. */
int ctl_print_cluster(FILE *out, const void *buf, size_t len) {
    static node_row rows[256];
    mp_reader r;
    uint32_t n, k = 0;
    pd_str key, self = {0};
    mpr_init(&r, buf, len);
    if (!mpr_map(&r, &n)) return -1;
    for (uint32_t i = 0; i < n; i++) {
        if (!pd_read_key(&r, &key)) return -1;
        if (pd_str_eqc(key, "node")) {
            if (!mpr_str(&r, &self)) return -1;
        } else if (pd_str_eqc(key, "nodes")) {
            if (!mpr_array(&r, &k) || k > 256) return -1;
            for (uint32_t j = 0; j < k; j++) {
                if (read_row(&r, &rows[j]) != 0) return -1;
            }
        } else if (!mpr_skip(&r)) {
            return -1;
        }
    }
    fprintf(out, "%-16s %-6s %8s %8s %10s %6s  %s\n", "NODE", "ALIVE", "DEVICES", "USERS",
            "HB_AGE_MS", "LAG", "VECTOR CLOCK");
    for (uint32_t j = 0; j < k; j++) {
        const node_row *row = &rows[j];
        char vc[512] = "", lag[24] = "-";
        for (uint32_t y = 0; y < row->nvc; y++) {
            size_t used = strlen(vc);
            if (used < sizeof vc - 1)
                snprintf(vc + used, sizeof vc - used, "%s%.*s:%" PRId64, used ? " " : "",
                         (int)row->vc_node[y].n, row->vc_node[y].p, row->vc_seq[y]);
        }
        if (j > 0 && k > 0) {
            int64_t d = vc_get(row, row->node) - vc_get(&rows[0], row->node);
            snprintf(lag, sizeof lag, "%" PRId64, d > 0 ? d : 0);
        }
        fprintf(out, "%-16.*s %-6s %8" PRId64 " %8" PRId64 " %10" PRId64 " %6s  %s%s\n",
                (int)row->node.n, row->node.p, row->alive ? "yes" : "no", row->devices,
                row->users, row->hb, lag, vc, pd_str_eq(row->node, self) ? "  (answering)" : "");
    }
    return 0;
}

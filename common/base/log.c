/* log.c - line logging and the bad-input rate limiter.
 *
 * The level and the sink are atomics so that any thread may log while the
 * loop thread changes the level. Each line is built in a stack buffer,
 * cleaned of control characters, and handed whole to the program's sink;
 * nothing here writes anywhere (common/ does no I/O). */
#include "base/log.h"
#include "base/clock.h"
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static atomic_int log_level = PD_LOG_INFO;
static _Atomic(pd_log_sink_fn) log_sink; /* NULL: lines are dropped */
static void *_Atomic log_sink_ud;

static const char *const upper_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
static const char *const lower_names[] = {"debug", "info", "warn", "error"};
#define LEVEL_COUNT ((int)(sizeof lower_names / sizeof lower_names[0]))

static int clamp_level(int level) {
    if (level < PD_LOG_DEBUG) return PD_LOG_DEBUG;
    if (level > PD_LOG_ERROR) return PD_LOG_ERROR;
    return level;
}

void pd_log_set_level(int level) {
    atomic_store_explicit(&log_level, clamp_level(level), memory_order_relaxed);
}

int pd_log_get_level(void) {
    return atomic_load_explicit(&log_level, memory_order_relaxed);
}

bool pd_log_enabled(int level) {
    return level >= pd_log_get_level();
}

int pd_log_level_parse(const char *s, int *out) {
    if (s == NULL) return -1;
    for (int i = 0; i < LEVEL_COUNT; i++) {
        if (strcasecmp(s, lower_names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    return -1;
}

const char *pd_log_level_name(int level) {
    if (level < 0 || level >= LEVEL_COUNT) return "?";
    return lower_names[level];
}

void pd_log_set_sink(pd_log_sink_fn fn, void *ud) {
    atomic_store_explicit(&log_sink, NULL, memory_order_release);
    atomic_store_explicit(&log_sink_ud, ud, memory_order_release);
    atomic_store_explicit(&log_sink, fn, memory_order_release);
}

void pd_log_format_time(uint64_t wall_ms, char *buf, size_t len) {
    if (buf == NULL || len == 0) return;
    time_t secs = (time_t)(wall_ms / 1000u);
    struct tm tm;
    if (gmtime_r(&secs, &tm) == NULL) {
        snprintf(buf, len, "?");
        return;
    }
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (unsigned)(wall_ms % 1000u));
}

/* Replace bytes that could end or rewrite a terminal line. */
static void scrub(char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x20 || c == 0x7f) p[i] = '?';
    }
}

void pd_logv(int level, const char *fmt, va_list ap) {
    if (!pd_log_enabled(level)) return;
    pd_log_sink_fn sink = atomic_load_explicit(&log_sink, memory_order_acquire);
    if (sink == NULL) return;
    char line[PD_LOG_LINE_MAX];
    char ts[PD_LOG_TIME_LEN];
    pd_log_format_time(pd_now_ms(), ts, sizeof ts);
    int head = snprintf(line, sizeof line, "%s %s ", ts,
                        upper_names[clamp_level(level)]);
    if (head < 0 || (size_t)head >= sizeof line) return;
    /* Room for the message, leaving one byte for '\n' and one for NUL. */
    size_t room = sizeof line - (size_t)head - 1;
    int body = vsnprintf(line + head, room, fmt, ap);
    if (body < 0) body = 0;
    size_t n = (size_t)body;
    if (n >= room) {
        n = room - 1;
        memcpy(line + head + n - 3, "...", 3);
    }
    scrub(line + head, n);
    line[head + n] = '\n';
    n += (size_t)head + 1;
    sink(atomic_load_explicit(&log_sink_ud, memory_order_acquire), clamp_level(level), line, n);
}

void pd_log(int level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    pd_logv(level, fmt, ap);
    va_end(ap);
}

bool pd_ratelimit_allow(pd_ratelimit *rl, uint64_t now_ms,
                        uint32_t *suppressed_out) {
    uint32_t reported = 0;
    if (now_ms < rl->window_start_ms ||
        now_ms - rl->window_start_ms >= rl->window_ms) {
        reported = rl->suppressed;
        rl->window_start_ms = now_ms;
        rl->count = 0;
        rl->suppressed = 0;
    }
    if (suppressed_out != NULL) *suppressed_out = reported;
    if (rl->count < rl->per_window) {
        rl->count++;
        return true;
    }
    if (rl->suppressed < UINT32_MAX) rl->suppressed++;
    return false;
}

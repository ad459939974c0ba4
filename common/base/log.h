/* log.h - leveled, line-at-a-time logging and a rate limiter for bad input.
 *
 * Every line is "2026-11-27T21:18:57.123Z INFO message": UTC wall time with
 * milliseconds, the level, the message. A line is formatted into a local
 * buffer and handed whole to the sink the program set (pd_log_set_sink):
 * common/ does no I/O of its own, the program decides where lines go
 * (presenced: node/logsink.c, one write per line under the stream lock, so
 * lines from different threads never interleave). Without a sink, lines
 * are dropped. Control characters in a message are replaced by '?' so that
 * text copied from a client cannot forge extra log lines.
 *
 * Input from clients can be wrong at any rate; log it through a
 * pd_ratelimit so that a misbehaving sender cannot flood the log. */
#ifndef PD_LOG_H
#define PD_LOG_H
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* CHECKLIST: new level? Update the name tables in log.c, the
 * PRESENCE_LOG_LEVEL meaning in config.c and tests/test_log.c. */
enum {
    PD_LOG_DEBUG = 0,
    PD_LOG_INFO = 1,
    PD_LOG_WARN = 2,
    PD_LOG_ERROR = 3
};

/* Longest line written, newline included; longer messages end in "...". */
#define PD_LOG_LINE_MAX 2048
/* Size of a buffer for pd_log_format_time, NUL included. */
#define PD_LOG_TIME_LEN 32

/* Lines below `level` are dropped. Default PD_LOG_INFO. Thread-safe.
 * Out-of-range values are clamped to the nearest level. */
void pd_log_set_level(int level);
int pd_log_get_level(void);

/* True if a line at `level` would be written; lets callers skip costly
 * argument preparation. */
bool pd_log_enabled(int level);

/* Parse "debug", "info", "warn" or "error" (any case) into *out.
 * Returns 0 on success, -1 (and leaves *out alone) otherwise. */
int pd_log_level_parse(const char *s, int *out);

/* Lower-case name of a level ("info"); "?" for an unknown one. */
const char *pd_log_level_name(int level);

/* Where lines go: fn gets each whole line (ending in '\n', not
 * NUL-terminated, len bytes, borrowed for the call) from whichever thread
 * logs, so it must be thread-safe. NULL drops lines (the default). ud is
 * borrowed and must outlive logging. Set at start-up (and in tests). */
typedef void (*pd_log_sink_fn)(void *ud, int level, const char *line, size_t len);
void pd_log_set_sink(pd_log_sink_fn fn, void *ud);

/* Write one line at `level` if it is enabled. Never fails visibly. */
void pd_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void pd_logv(int level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* Format wall_ms (ms since the epoch) as "2026-11-27T21:18:57.123Z" into buf
 * (len >= PD_LOG_TIME_LEN avoids truncation). */
void pd_log_format_time(uint64_t wall_ms, char *buf, size_t len);

/* A fixed-window rate limiter: at most per_window events per window_ms.
 * Zero-initialise it and set per_window and window_ms (or use
 * PD_RATELIMIT_INIT). Not thread-safe: each thread or loop owns its own. */
typedef struct {
    uint64_t window_start_ms;
    uint32_t count;       /* events allowed in the current window */
    uint32_t suppressed;  /* events refused in the current window */
    uint32_t per_window;
    uint64_t window_ms;
} pd_ratelimit;

#define PD_RATELIMIT_INIT(per_window, window_ms) \
    {0, 0, 0, (per_window), (window_ms)}

/* True if the event at now_ms (any monotonic clock) may be logged. When this
 * call opens a new window, *suppressed_out receives how many events the
 * previous window refused (so the caller can log "N similar messages
 * suppressed"), otherwise 0. suppressed_out may be NULL. A clock that goes
 * back also opens a new window. per_window 0 refuses everything. */
bool pd_ratelimit_allow(pd_ratelimit *rl, uint64_t now_ms,
                        uint32_t *suppressed_out);

#endif
